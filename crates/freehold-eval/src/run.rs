//! Running tasks: copy, agent, check, report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use freehold_agent::{Agent, AgentOptions, Frontend, PermissionMode, SessionStore};
use freehold_llm::router::Router;
use freehold_protocol::{AgentEvent, AgentStop};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::check::{CheckRun, run_check};
use crate::report::{SuiteReport, TaskReport};
use crate::task::Task;
use crate::workspace::{Scratch, copy_tree, git_init};

/// How long a task may run by default (the agent; the check has its own
/// limit).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a check may run by default: compiling a Rust crate from
/// scratch on a slow machine takes minutes.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// The agent's turn limit for tasks that set none.
pub const DEFAULT_MAX_TURNS: u32 = 20;

/// How long a cancelled agent gets to stop before it is abandoned (a tool
/// that ignores the cancel must not hang the suite).
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// How tasks are run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The model, as `provider:model` or an alias the router knows.
    pub model: String,
    /// The model's context window in tokens.
    pub context_window: u32,
    /// The most tokens one answer may have (`None`: the agent's default).
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// Small-model scaffolding (see `AgentOptions::guided`).
    pub guided: bool,
    /// The agent's turn limit for tasks whose `task.toml` sets none.
    pub max_turns: u32,
    /// The agent's time limit per task; past it the agent is cancelled.
    pub timeout: Duration,
    /// The check's time limit; past it the check is killed and fails.
    pub check_timeout: Duration,
    /// Where the tasks' scratch directories go; `None`: the system's
    /// temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Where the agent's transcripts go; `None`: inside each task's scratch
    /// directory (so they go when it goes).
    pub session_dir: Option<PathBuf>,
    /// Keep the scratch directories (to inspect what the agent did).
    pub keep: bool,
    /// How many tasks run at once (at least 1).
    pub jobs: usize,
    /// Cancels the run: the running agents stop, no new task starts.
    pub cancel: CancellationToken,
}

impl RunSettings {
    /// Defaults for `model`: an 8,192-token window, [`DEFAULT_MAX_TURNS`],
    /// [`DEFAULT_TIMEOUT`], [`DEFAULT_CHECK_TIMEOUT`], one task at a time in
    /// the temporary directory, removed afterwards.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            context_window: 8192,
            max_output_tokens: None,
            temperature: None,
            guided: false,
            max_turns: DEFAULT_MAX_TURNS,
            timeout: DEFAULT_TIMEOUT,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            work_dir: None,
            session_dir: None,
            keep: false,
            jobs: 1,
            cancel: CancellationToken::new(),
        }
    }
}

/// Where a run is, for front ends that show it.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A task started.
    Started {
        /// Its place in the suite, from 0.
        index: usize,
        /// The suite's size.
        total: usize,
        /// The task.
        task: &'a Task,
    },
    /// A task finished.
    Finished {
        /// Its place in the suite, from 0.
        index: usize,
        /// The suite's size.
        total: usize,
        /// Its report.
        report: &'a TaskReport,
    },
}

/// Run `tasks` with `settings`, up to `settings.jobs` at a time, calling
/// `progress` as each starts and finishes. When `settings.cancel` fires,
/// the running tasks stop and the report holds those that ran.
pub async fn run_suite(
    tasks: &[Task],
    settings: &RunSettings,
    router: Arc<Router>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> SuiteReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let total = tasks.len();
    let jobs = settings.jobs.max(1);
    let mut reports: Vec<Option<TaskReport>> = vec![None; total];
    let mut running = JoinSet::new();
    // Which task each spawned future runs, to report a panic against it.
    let mut spawned = HashMap::new();
    let mut next = 0;
    loop {
        while next < total && running.len() < jobs && !settings.cancel.is_cancelled() {
            let (task, settings, router) = (tasks[next].clone(), settings.clone(), router.clone());
            progress(Progress::Started {
                index: next,
                total,
                task: &tasks[next],
            });
            let handle = running.spawn(async move { run_task(&task, &settings, router).await });
            spawned.insert(handle.id(), next);
            next += 1;
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let (id, report) = match joined {
            Ok((id, report)) => (id, Ok(report)),
            Err(error) => (error.id(), Err(error)),
        };
        let Some(index) = spawned.remove(&id) else {
            continue;
        };
        // A panic in one task must not lose the others' reports.
        let report = report.unwrap_or_else(|error| {
            let mut report = TaskReport::new(&tasks[index]);
            report.error = Some(format!("the runner failed: {error}"));
            report
        });
        progress(Progress::Finished {
            index,
            total,
            report: &report,
        });
        reports[index] = Some(report);
    }
    let wall_ms = millis(started.elapsed());
    let mut report = SuiteReport::new(
        settings.model.clone(),
        started_at,
        wall_ms,
        reports.into_iter().flatten().collect(),
    );
    report.cancelled = settings.cancel.is_cancelled();
    report
}

/// Run one task: copy its `repo/` into a fresh scratch directory, run the
/// agent there, write its answer, run the check, and remove the directory
/// (unless `settings.keep`). Never fails: what went wrong is in the report.
pub async fn run_task(task: &Task, settings: &RunSettings, router: Arc<Router>) -> TaskReport {
    let started = Instant::now();
    let mut report = TaskReport::new(task);
    let base = settings.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = match Scratch::create(&base, &task.name) {
        Ok(scratch) => scratch,
        Err(error) => {
            report.error = Some(format!(
                "cannot create a working directory in {}: {error}",
                base.display()
            ));
            report.wall_ms = millis(started.elapsed());
            return report;
        }
    };
    run_in(task, settings, router, &scratch, &mut report).await;
    report.wall_ms = millis(started.elapsed());
    if settings.keep {
        report.work_dir = Some(scratch.repo());
    } else {
        let root = scratch.root().to_path_buf();
        if let Err(error) = scratch.remove().await {
            tracing::warn!(%error, dir = %root.display(), "cannot remove a task's working directory");
        }
    }
    report
}

/// The steps of [`run_task`] inside its scratch directory.
async fn run_in(
    task: &Task,
    settings: &RunSettings,
    router: Arc<Router>,
    scratch: &Scratch,
    report: &mut TaskReport,
) {
    let repo = scratch.repo();
    if let Err(error) = copy_tree(&task.repo(), &repo).await {
        report.error = Some(format!("cannot copy {}: {error}", task.repo().display()));
        return;
    }
    match git_init(&repo).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!("git is not installed: the task's copy is no repository"),
        // Not fatal: the agent works without git, only less well.
        Err(error) => {
            tracing::warn!(%error, task = %task.name, "cannot make the copy a git repository")
        }
    }

    let agent_started = Instant::now();
    let answer = run_agent(task, settings, router, scratch, report).await;
    report.agent_ms = millis(agent_started.elapsed());
    if report.error.is_some() {
        return;
    }
    if let Err(error) = std::fs::write(scratch.answer(), &answer) {
        report.error = Some(format!("cannot write the answer file: {error}"));
        return;
    }
    report.answer = answer;
    if settings.cancel.is_cancelled() {
        report.error = Some("the run was cancelled".to_owned());
        return;
    }

    let check_started = Instant::now();
    let outcome = run_check(
        CheckRun {
            command: &task.check,
            cwd: &repo,
            task_dir: &task.dir,
            answer: &scratch.answer(),
            log: &scratch.check_log(),
            timeout: settings.check_timeout,
        },
        &settings.cancel,
    )
    .await;
    report.check_ms = millis(check_started.elapsed());
    match outcome {
        Ok(outcome) => {
            report.passed = outcome.passed();
            report.check_exit_code = outcome.exit_code;
            if outcome.timed_out {
                report.error = Some(format!(
                    "the check ran past {} s",
                    settings.check_timeout.as_secs()
                ));
            } else if outcome.cancelled {
                report.error = Some("the run was cancelled".to_owned());
            }
            report.check_output_tail = outcome.output_tail;
        }
        Err(error) => report.error = Some(format!("cannot run the check: {error}")),
    }
}

/// Run the agent on the task in the scratch copy; returns its final answer.
/// Sets the report's agent fields, and its error when the agent could not
/// start.
async fn run_agent(
    task: &Task,
    settings: &RunSettings,
    router: Arc<Router>,
    scratch: &Scratch,
    report: &mut TaskReport,
) -> String {
    let mut options = AgentOptions::new(settings.model.clone(), scratch.repo());
    // The copy is thrown away, and nobody is there to approve anything.
    options.permissions.mode = PermissionMode::BypassPermissions;
    options.max_turns = task.max_turns.unwrap_or(settings.max_turns);
    options.context_window = settings.context_window;
    if let Some(max) = settings.max_output_tokens {
        options.max_output_tokens = max;
    }
    options.temperature = settings.temperature;
    options.guided = settings.guided;
    // The user's own AGENTS.md must not change the results.
    options.user_config_dir = None;
    options.checkpoint_dir = None;
    let store = SessionStore::new(
        settings
            .session_dir
            .clone()
            .unwrap_or_else(|| scratch.sessions()),
    );
    let mut agent = match Agent::start(router, options, &store) {
        Ok(agent) => agent,
        Err(error) => {
            report.error = Some(format!("cannot start the agent: {error}"));
            return String::new();
        }
    };
    report.session_id = Some(agent.session_id().to_owned());

    let cancel = settings.cancel.child_token();
    let mut frontend = Quiet { task: &task.name };
    // In a block, so the run (which borrows the agent) is dropped before
    // the agent's totals are read.
    let summary = {
        let run = agent.run(&task.prompt, &mut frontend, cancel.clone());
        tokio::pin!(run);
        tokio::select! {
            summary = &mut run => Some(summary),
            () = tokio::time::sleep(settings.timeout) => {
                report.timed_out = true;
                cancel.cancel();
                tokio::time::timeout(CANCEL_GRACE, &mut run).await.ok()
            }
        }
    };
    match summary {
        Some(summary) => {
            report.stop_reason = Some(summary.stop_reason);
            report.turns = summary.turns;
            report.usage = summary.usage;
            report.cost_usd = summary.cost_usd;
            summary.result
        }
        None => {
            // Abandoned: the session's totals are all there is.
            let totals = agent.totals();
            report.stop_reason = Some(AgentStop::Cancelled);
            report.turns = totals.model_calls;
            report.usage = totals.usage;
            report.cost_usd = totals.cost_usd;
            report.error = Some(format!(
                "the agent did not stop within {} s of its cancel",
                CANCEL_GRACE.as_secs()
            ));
            String::new()
        }
    }
}

/// The front end of an evaluated agent: nobody watches, so events only go
/// to the debug log, and it never needs to approve (the permission mode
/// bypasses asking).
struct Quiet<'a> {
    task: &'a str,
}

impl Frontend for Quiet<'_> {
    fn event(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::ToolCall { name, .. } => {
                tracing::debug!(task = self.task, tool = %name, "tool call");
            }
            AgentEvent::ToolResult {
                name,
                is_error: true,
                content,
                ..
            } => {
                tracing::debug!(task = self.task, tool = %name, %content, "tool failed");
            }
            _ => {}
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
