//! What every tool call sees: the project directory, the files read so far,
//! the todo list and the cancel signal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The state tools share within one agent session. Cheap to clone: clones
/// share the tracker, the todo list and the cancel token.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The project directory: relative paths are resolved against it,
    /// `shell` runs in it, and file tools refuse paths outside it.
    pub root: PathBuf,
    /// Files read in this session (so `write` can refuse to overwrite a
    /// file the model has not seen).
    pub files: FileTracker,
    /// The plan the model keeps with the `todo` tool.
    pub todos: Arc<Mutex<Vec<TodoItem>>>,
    /// Cancelled when the user interrupts: running commands are killed and
    /// the call returns [`crate::ToolError::Cancelled`].
    pub cancel: CancellationToken,
    /// Default time limit for `shell`, in seconds (the model may ask for
    /// less or more, up to [`ToolContext::max_shell_timeout_secs`]).
    pub shell_timeout_secs: u64,
    /// The most a `shell` call may ask for, in seconds.
    pub max_shell_timeout_secs: u64,
}

impl ToolContext {
    /// A context for a project directory with default limits (shell: 120 s
    /// by default, 600 s at most).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: FileTracker::default(),
            todos: Arc::new(Mutex::new(Vec::new())),
            cancel: CancellationToken::new(),
            shell_timeout_secs: 120,
            max_shell_timeout_secs: 600,
        }
    }

    /// The current todo list.
    pub fn todo_list(&self) -> Vec<TodoItem> {
        self.todos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Which files the model has read in this session, and their modification
/// time when it read them.
#[derive(Debug, Clone, Default)]
pub struct FileTracker {
    read: Arc<Mutex<HashMap<PathBuf, Option<SystemTime>>>>,
}

impl FileTracker {
    /// Record that `path` (absolute) was read or written by the model now.
    pub fn mark_seen(&self, path: &Path) {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf(), modified);
    }

    /// Whether the model has read `path` (absolute) in this session.
    pub fn was_seen(&self, path: &Path) -> bool {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path)
    }

    /// Whether `path` changed on disk since the model last read or wrote
    /// it (another process or the user edited it).
    pub fn changed_since_seen(&self, path: &Path) -> bool {
        let seen = self
            .read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .copied();
        match seen {
            Some(Some(then)) => std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|now| now != then),
            _ => false,
        }
    }
}

/// One step of the model's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    /// What to do.
    pub content: String,
    /// Where it stands.
    pub status: TodoStatus,
}

/// Where a step of the plan stands. Reads the usual synonyms small models
/// use too (`done`, `in-progress`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TodoStatus {
    /// Not started.
    #[serde(alias = "todo")]
    Pending,
    /// Being worked on (at most one at a time).
    #[serde(alias = "in-progress", alias = "active")]
    InProgress,
    /// Finished.
    #[serde(alias = "done", alias = "complete")]
    Completed,
}
