//! What the agent's own operations can fail with. (Tool failures are not
//! errors of the agent: they go back to the model as error results.)

use std::path::PathBuf;

/// An error of the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A transcript could not be created, read or written.
    #[error("{context}: {source}")]
    Session {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `--resume ID` named no session.
    #[error(
        "no session `{id}` in {}; run `freehold sessions` to list them",
        dir.display()
    )]
    NoSuchSession {
        /// The id asked for.
        id: String,
        /// The sessions directory.
        dir: PathBuf,
    },
    /// A transcript line is not a record.
    #[error(
        "{}:{line}: not a Freehold transcript record ({message}); the file was changed by hand or by another program",
        path.display()
    )]
    CorruptTranscript {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The parse error.
        message: String,
    },
    /// The model or its provider failed.
    #[error(transparent)]
    Model(#[from] freehold_protocol::LlmError),
    /// `undo` in a session without checkpoints.
    #[error(
        "checkpoints are off for this session: the project is not a git repository and no checkpoint directory is set, or git is not installed"
    )]
    CheckpointsOff,
    /// A checkpoint could not be taken or restored.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}
