//! Tasks: a directory with `task.toml`, `repo/`, and optionally `check/`
//! and `solution/` (the format is described in `eval/README.md`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// The file that makes a directory a task.
pub const TASK_FILE: &str = "task.toml";

/// The starting repository inside a task directory.
pub const REPO_DIR: &str = "repo";

/// How hard a task is, by the smallest model expected to do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// A 135M model with good tools might do it.
    Easy,
    /// A 0.5B–1.5B coding model.
    Medium,
    /// Needs a real coding model.
    Hard,
}

impl Difficulty {
    /// The name used in `task.toml` and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Easy => "easy",
            Self::Medium => "medium",
            Self::Hard => "hard",
        }
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The language a task's repository is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3, standard library only.
    Python,
    /// A Rust crate without dependencies.
    Rust,
    /// Bash scripts.
    Shell,
    /// Plain text files.
    Text,
}

impl Language {
    /// The name used in `task.toml` and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Rust => "rust",
            Self::Shell => "shell",
            Self::Text => "text",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `task.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    prompt: String,
    check: String,
    difficulty: Difficulty,
    language: Language,
    kind: String,
    #[serde(default)]
    max_turns: Option<u32>,
}

/// One evaluation task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The directory's name (`07-fix-off-by-one`).
    pub name: String,
    /// The task directory, absolute (checks find `check/` through it).
    pub dir: PathBuf,
    /// What the agent is asked.
    pub prompt: String,
    /// The shell command that decides: exit 0 is a pass.
    pub check: String,
    /// How hard it is.
    pub difficulty: Difficulty,
    /// The repository's language.
    pub language: Language,
    /// What sort of work it is (`fix-test`, `answer`, …).
    pub kind: String,
    /// The agent's turn limit for this task, when the task sets one.
    pub max_turns: Option<u32>,
}

impl Task {
    /// Load the task in `dir`.
    ///
    /// # Errors
    /// When `task.toml` is missing, unreadable, not valid TOML, has unknown
    /// or missing fields or values out of range, or `repo/` is missing.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        // Absolute, because the check runs elsewhere and finds `check/`
        // through FREEHOLD_EVAL_TASK_DIR.
        let dir = std::fs::canonicalize(dir).map_err(|source| EvalError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(TASK_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Read {
            path: path.clone(),
            source,
        })?;
        let file: TaskFile = toml::from_str(&text).map_err(|error| EvalError::Parse {
            path: path.clone(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let invalid = |message: &str| EvalError::Invalid {
            path: path.clone(),
            message: message.to_owned(),
        };
        if file.prompt.trim().is_empty() {
            return Err(invalid("`prompt` is empty"));
        }
        if file.check.trim().is_empty() {
            return Err(invalid("`check` is empty"));
        }
        if file.kind.trim().is_empty() {
            return Err(invalid("`kind` is empty"));
        }
        if file.max_turns == Some(0) {
            return Err(invalid("`max_turns` must be at least 1"));
        }
        if !dir.join(REPO_DIR).is_dir() {
            return Err(EvalError::Invalid {
                path: dir.clone(),
                message: format!("the task has no {REPO_DIR}/ directory"),
            });
        }
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            name,
            prompt: file.prompt,
            check: file.check,
            difficulty: file.difficulty,
            language: file.language,
            kind: file.kind,
            max_turns: file.max_turns,
            dir,
        })
    }

    /// The starting repository.
    pub fn repo(&self) -> PathBuf {
        self.dir.join(REPO_DIR)
    }
}

/// Which tasks of a suite to run: those whose name contains any of the
/// patterns (an exact name is a pattern too); all when there are none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    patterns: Vec<String>,
}

impl Filter {
    /// Every task.
    pub fn all() -> Self {
        Self::default()
    }

    /// Tasks whose name contains any of `patterns`.
    pub fn any_of(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// The patterns (empty: every task).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the task called `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| name.contains(p.as_str()))
    }
}

/// Load the tasks of a suite: every subdirectory of `dir` with a
/// `task.toml` that `filter` selects, sorted by name. When `dir` is itself
/// a task (it has a `task.toml`), that one task.
///
/// # Errors
/// When `dir` cannot be read, a selected task does not load, a filter
/// pattern matches nothing, or no task is left.
pub fn load_suite(dir: impl AsRef<Path>, filter: &Filter) -> Result<Vec<Task>> {
    let dir = dir.as_ref();
    if dir.join(TASK_FILE).is_file() {
        let task = Task::load(dir)?;
        return finish_selection(dir, filter, vec![task]);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| EvalError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.join(TASK_FILE).is_file() && filter.matches(&name) {
            dirs.push((name, path));
        }
    }
    dirs.sort();
    let tasks = dirs
        .into_iter()
        .map(|(_, path)| Task::load(path))
        .collect::<Result<Vec<_>>>()?;
    finish_selection(dir, filter, tasks)
}

/// Refuse an empty selection and patterns that select nothing.
fn finish_selection(dir: &Path, filter: &Filter, tasks: Vec<Task>) -> Result<Vec<Task>> {
    if tasks.is_empty() {
        return Err(EvalError::NoTasks {
            dir: dir.to_path_buf(),
            filter: filter.patterns.clone(),
        });
    }
    for pattern in &filter.patterns {
        if !tasks
            .iter()
            .any(|task| task.name.contains(pattern.as_str()))
        {
            return Err(EvalError::UnmatchedFilter {
                dir: dir.to_path_buf(),
                pattern: pattern.clone(),
            });
        }
    }
    Ok(tasks)
}
