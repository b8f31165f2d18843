//! What a run found: one [`TaskReport`] per task, a [`SuiteReport`] for
//! the run, written as JSON.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use freehold_protocol::{AgentStop, Usage};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::task::{Difficulty, Language, Task};

/// The outcome of one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// Its language.
    pub language: Language,
    /// Its difficulty.
    pub difficulty: Difficulty,
    /// Its kind.
    pub kind: String,
    /// Whether the check passed (exited 0).
    pub passed: bool,
    /// Why the agent stopped; `None` when it never ran.
    pub stop_reason: Option<AgentStop>,
    /// Whether the agent ran past the task's time limit (it was then
    /// cancelled, so `stop_reason` is `cancelled`).
    pub timed_out: bool,
    /// Model calls the agent made.
    pub turns: u32,
    /// Tokens, summed over the model calls.
    pub usage: Usage,
    /// Cost in USD; `None` when a price is unknown.
    pub cost_usd: Option<f64>,
    /// The whole task: copy, agent, check.
    pub wall_ms: u64,
    /// The agent alone.
    pub agent_ms: u64,
    /// The check alone.
    pub check_ms: u64,
    /// The check's exit code; `None` when it did not run or was killed.
    pub check_exit_code: Option<i32>,
    /// The end of the check's output (standard output and error).
    pub check_output_tail: String,
    /// The agent's final answer.
    pub answer: String,
    /// The agent's session id (its transcript's name).
    pub session_id: Option<String>,
    /// Where the task ran, when the directory was kept.
    pub work_dir: Option<PathBuf>,
    /// Why the runner could not run or check the task (a failed copy, a
    /// check that could not start or ran out of time); `None` when it
    /// could. The agent's own failures are in `stop_reason`.
    pub error: Option<String>,
}

impl TaskReport {
    /// A failed report for `task` with nothing run yet.
    pub(crate) fn new(task: &Task) -> Self {
        Self {
            name: task.name.clone(),
            language: task.language,
            difficulty: task.difficulty,
            kind: task.kind.clone(),
            passed: false,
            stop_reason: None,
            timed_out: false,
            turns: 0,
            usage: Usage::default(),
            // Nothing spent yet; the agent's summary replaces it.
            cost_usd: Some(0.0),
            wall_ms: 0,
            agent_ms: 0,
            check_ms: 0,
            check_exit_code: None,
            check_output_tail: String::new(),
            answer: String::new(),
            session_id: None,
            work_dir: None,
            error: None,
        }
    }
}

/// Sums over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteTotals {
    /// Tasks run.
    pub tasks: usize,
    /// Tasks passed.
    pub passed: usize,
    /// Tasks failed (including those with a runner error).
    pub failed: usize,
    /// Tasks the runner could not run or check.
    pub errors: usize,
    /// `passed / tasks`, 0 for no tasks.
    pub pass_rate: f64,
    /// Model calls.
    pub turns: u64,
    /// Tokens.
    pub usage: Usage,
    /// Cost in USD; `None` when any task's price is unknown.
    pub cost_usd: Option<f64>,
    /// The tasks' wall time, summed (more than the run's when tasks ran in
    /// parallel).
    pub wall_ms: u64,
}

impl SuiteTotals {
    /// The sums over `tasks`.
    pub fn of(tasks: &[TaskReport]) -> Self {
        let passed = tasks.iter().filter(|t| t.passed).count();
        let mut usage = Usage::default();
        for task in tasks {
            usage.add(&task.usage);
        }
        Self {
            tasks: tasks.len(),
            passed,
            failed: tasks.len() - passed,
            errors: tasks.iter().filter(|t| t.error.is_some()).count(),
            pass_rate: if tasks.is_empty() {
                0.0
            } else {
                passed as f64 / tasks.len() as f64
            },
            turns: tasks.iter().map(|t| u64::from(t.turns)).sum(),
            usage,
            cost_usd: tasks.iter().map(|t| t.cost_usd).sum(),
            wall_ms: tasks.iter().map(|t| t.wall_ms).sum(),
        }
    }
}

/// The report of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteReport {
    /// The model, as `provider:model`.
    pub model: String,
    /// When the run started, RFC 3339 in UTC.
    pub started_at: String,
    /// The run's wall time (less than the tasks' sum when they ran in
    /// parallel).
    pub wall_ms: u64,
    /// Whether the run was cancelled (running tasks stopped, the rest not
    /// started).
    pub cancelled: bool,
    /// One report per task, in the suite's order.
    pub tasks: Vec<TaskReport>,
    /// Sums over `tasks`.
    pub totals: SuiteTotals,
}

impl SuiteReport {
    /// A report of `tasks`, run on `model` from `started_at` for `wall_ms`.
    pub fn new(
        model: impl Into<String>,
        started_at: SystemTime,
        wall_ms: u64,
        tasks: Vec<TaskReport>,
    ) -> Self {
        Self {
            model: model.into(),
            started_at: rfc3339(started_at),
            wall_ms,
            cancelled: false,
            totals: SuiteTotals::of(&tasks),
            tasks,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with
        // non-string keys, no failing `Serialize` impls).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Write the report as JSON to `path` (replacing it).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut json = self.to_json();
        json.push('\n');
        std::fs::write(path, json).map_err(|source| EvalError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `time` as `2025-01-31T12:34:56Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    freehold_protocol::time::utc_rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(leap), "2000-02-29T01:02:03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(rfc3339(later), "2025-12-31T23:59:59Z");
    }
}
