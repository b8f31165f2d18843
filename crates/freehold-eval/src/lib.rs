//! The evaluation runner: runs the coding agent on the tasks in
//! `eval/tasks` (format: `eval/README.md`) and checks its work.
//!
//! For each [`Task`] [`run_task`] copies the task's `repo/` into a fresh
//! scratch directory (a git repository when git is installed), runs an
//! [`freehold_agent::Agent`] there with the task's prompt — permissions
//! bypassed, since the copy is thrown away — under a turn and time limit,
//! writes the agent's final answer to a file, and runs the task's check
//! with `bash -c` in the copy. The check's exit status decides: 0 is a
//! pass. [`run_suite`] runs many and sums them up in a [`SuiteReport`],
//! written as JSON with [`SuiteReport::write_json`].
//!
//! What this crate owns: the task format ([`Task::load`], [`load_suite`]),
//! the scratch directories, the check's environment and time limit, and
//! the reports. What it must not do: print (front ends get [`Progress`]
//! callbacks and render them), read the user's configuration (the caller
//! resolves the model and passes a [`freehold_llm::router::Router`]), or
//! touch the task directories (every run works on a copy).
//!
//! ```no_run
//! # async fn demo(router: std::sync::Arc<freehold_llm::router::Router>) -> Result<(), freehold_eval::EvalError> {
//! use freehold_eval::{Filter, Progress, RunSettings, load_suite, run_suite};
//!
//! let tasks = load_suite("eval/tasks", &Filter::all())?;
//! let settings = RunSettings::new("ollama:qwen2.5-coder:1.5b");
//! let mut lines = Vec::new();
//! let report = run_suite(&tasks, &settings, router, &mut |progress| {
//!     if let Progress::Finished { report, .. } = progress {
//!         lines.push(format!("{} {}", report.name, report.passed));
//!     }
//! })
//! .await;
//! report.write_json("eval-report.json")?;
//! # Ok(()) }
//! ```

mod check;
mod error;
mod report;
mod run;
mod task;
mod workspace;

pub use error::{EvalError, Result};
pub use report::{SuiteReport, SuiteTotals, TaskReport};
pub use run::{
    DEFAULT_CHECK_TIMEOUT, DEFAULT_MAX_TURNS, DEFAULT_TIMEOUT, Progress, RunSettings, run_suite,
    run_task,
};
pub use task::{Difficulty, Filter, Language, REPO_DIR, TASK_FILE, Task, load_suite};
