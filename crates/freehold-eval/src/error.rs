//! What can go wrong loading tasks and writing reports.

use std::path::PathBuf;

/// An error of the evaluation runner.
///
/// Problems while *running* a task (the agent failing, a check timing out)
/// are not errors: they end up in that task's
/// [`TaskReport`](crate::TaskReport), so one bad task never stops a suite.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A `task.toml` is not valid TOML or has the wrong fields.
    #[error("{path}: {message}")]
    Parse {
        /// The `task.toml`.
        path: PathBuf,
        /// The parser's message (with the line and column).
        message: String,
    },
    /// A task is well-formed TOML but not a usable task.
    #[error("{path}: {message}")]
    Invalid {
        /// The task's `task.toml` or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A suite directory holds no task (or none the filter selects).
    #[error("no tasks in {dir}{}", describe_filter(.filter))]
    NoTasks {
        /// The suite directory.
        dir: PathBuf,
        /// The filter's patterns, empty when there was none.
        filter: Vec<String>,
    },
    /// A filter pattern selects no task: most likely a typo.
    #[error("no task in {dir} matches `{pattern}`")]
    UnmatchedFilter {
        /// The suite directory.
        dir: PathBuf,
        /// The pattern.
        pattern: String,
    },
    /// A report could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The report's path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn describe_filter(filter: &[String]) -> String {
    if filter.is_empty() {
        String::new()
    } else {
        format!(" matching {}", filter.join(", "))
    }
}

/// The result type of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
