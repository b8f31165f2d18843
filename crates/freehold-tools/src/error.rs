//! What a tool call can fail with.

/// Why a tool call failed. Every message is written for the model: it says
/// what was wrong and what to do instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments did not match the tool's schema.
    #[error("invalid arguments for {tool}: {message}")]
    InvalidArguments {
        /// The tool.
        tool: &'static str,
        /// What was wrong, e.g. "missing field `path`".
        message: String,
    },
    /// The call cannot be done as asked (file missing, binary, too large,
    /// edit matched twice, patch does not apply…).
    #[error("{0}")]
    Failed(String),
    /// A path points outside the project directory.
    #[error("{path} is outside the project directory {root}; use a path inside it")]
    OutsideProject {
        /// The path as given.
        path: String,
        /// The project root.
        root: String,
    },
    /// The call ran past its time limit.
    #[error("timed out after {seconds} s{detail}")]
    TimedOut {
        /// The limit.
        seconds: u64,
        /// Output gathered before the limit, if any (starts with a newline).
        detail: String,
    },
    /// The user or the agent cancelled the call.
    #[error("cancelled by the user")]
    Cancelled,
    /// An I/O error the model cannot fix by changing its arguments.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ToolError {
    /// Shorthand for [`ToolError::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}
