//! The tools the coding agent calls: `read`, `write`, `edit`, `apply_patch`,
//! `glob`, `grep`, `shell` and `todo`; and the files a prompt names, which
//! the agent attaches to it ([`attach_mentioned_files`]).
//!
//! Each tool implements [`Tool`]: a name, a [`ToolSpec`] (a short description
//! small models can follow and a JSON Schema for its arguments), a
//! [`ToolKind`] that tells the agent how risky and how parallel-safe it is,
//! and [`Tool::run`], which takes the model's JSON arguments and a
//! [`ToolContext`] and returns a [`ToolOutput`] for the model.
//!
//! What this crate must not do: decide permissions (the agent asks the
//! front end before it runs a tool; [`Tool::subject`] only names what a rule
//! matches against) or print anything. Failures the model can act on (a
//! missing file, an edit that matches twice) are returned as
//! [`ToolError`]s whose messages say what went wrong and how to fix it; the
//! agent passes them to the model as error results.
//!
//! ```
//! use freehold_tools::{Toolbox, ToolKind};
//!
//! let toolbox = Toolbox::builtin();
//! let read = toolbox.get("read").unwrap();
//! assert_eq!(read.kind(), ToolKind::Read);
//! assert!(toolbox.specs().iter().any(|spec| spec.name == "shell"));
//! ```

mod apply_patch;
mod args;
mod context;
mod edit;
mod error;
mod files;
mod glob;
mod grep;
mod matching;
mod mentions;
mod patch;
mod paths;
mod read;
mod shell;
#[cfg(test)]
mod testing;
mod todo;
mod toolbox;
mod walk;
mod write;

pub use context::{FileTracker, TodoItem, TodoStatus, ToolContext};
pub use error::ToolError;
pub use mentions::{
    Attachment, MAX_ATTACHED_BYTES, MAX_ATTACHED_FILE_BYTES, MAX_ATTACHED_FILES,
    attach_mentioned_files, render_attachments,
};
pub use toolbox::Toolbox;

use async_trait::async_trait;
use freehold_protocol::ToolSpec;

/// What a tool does to the world: decides when the agent asks for
/// permission and whether calls may run concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    /// Only reads the project (read, glob, grep): allowed in every mode,
    /// runs concurrently with other reads.
    Read,
    /// Changes files (write, edit, apply_patch): asked for in `default`
    /// mode, refused in `plan` mode, runs alone; the agent snapshots the
    /// tree before the first one of a user turn.
    Edit,
    /// Runs a command (shell): asked for unless allowed by a rule or
    /// `bypassPermissions`, runs alone.
    Execute,
    /// Only changes the agent's own state (todo): always allowed.
    Plan,
}

/// What a tool returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    /// The text the model reads.
    pub content: String,
    /// A unified diff of what the tool changed, for front ends to show
    /// (edit, write, apply_patch); not sent to the model.
    pub diff: Option<String>,
    /// Files the tool created, changed or deleted, relative to the
    /// project root.
    pub changed_files: Vec<String>,
}

impl ToolOutput {
    /// An output that is only text for the model.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A tool the agent can call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by (`read`, `shell`…).
    fn name(&self) -> &'static str;

    /// The description and argument schema sent to the model. It must be
    /// byte-stable: the agent relies on it for the engine's prefix cache.
    fn spec(&self) -> ToolSpec;

    /// How risky it is (see [`ToolKind`]).
    fn kind(&self) -> ToolKind;

    /// What permission rules match against for these arguments: the
    /// command for `shell` (`shell(git status:*)`), the path for file
    /// tools. `None` when the arguments do not name one.
    fn subject(&self, arguments: &serde_json::Value) -> Option<String>;

    /// Run the tool.
    ///
    /// # Errors
    /// A [`ToolError`] whose message tells the model what was wrong and
    /// how to fix it (bad arguments, missing file, non-unique match,
    /// timeout, cancellation).
    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError>;
}
