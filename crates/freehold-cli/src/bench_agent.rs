//! `freehold bench agent`: the agent loop's own overhead per model turn,
//! with a scripted model and the real tools in a throw-away project.
//!
//! The model is a [`ScriptedProvider`] that calls read, grep, edit and
//! shell (`true`) in turn, then answers. The tools and the provider are
//! wrapped in stopwatches, so for every turn
//!
//! ```text
//! overhead = turn wall time − time inside tools − time inside the provider
//! ```
//!
//! which leaves what the agent itself does: building the request, routing,
//! consuming the stream, permissions, bookkeeping and writing the JSONL
//! transcript. As a reference measured in the same run, the very requests
//! the agent sent are replayed to a fresh scripted provider without the
//! agent: the provider's own cost per call.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use freehold_agent::{Agent, AgentOptions, Frontend, PermissionMode, SessionStore};
use freehold_llm::router::Router;
use freehold_llm::scripted::{ScriptedAnswer, ScriptedProvider};
use freehold_llm::{Catalog, EventStream, Provider};
use freehold_protocol::{
    AgentEvent, AgentStop, Capabilities, ChatRequest, ChatResponse, LlmError, ModelInfo,
    ResponseBuilder, ToolSpec,
};
use freehold_tools::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, Toolbox};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Arguments of `freehold bench agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentBenchArgs {
    /// Model turns per task: all but the last call one tool each (read,
    /// grep, edit, shell `true`, in turn), the last answers.
    #[arg(long, value_name = "N", default_value_t = 41,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    turns: u32,
    /// Measured tasks (each in a fresh project and session), after one
    /// unmeasured warm-up task.
    #[arg(short, long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The tool turns cycle through these; each cycle works on its own file,
/// so no call repeats (the agent warns about repeated identical calls).
const CYCLE: u32 = 4;
/// Lines of each source file in the project.
const FILE_LINES: u32 = 40;

/// Nanoseconds spent inside the tools and inside the provider, shared by
/// the stopwatch wrappers and the front end.
#[derive(Debug, Clone, Default)]
struct Spent {
    tools: Arc<AtomicU64>,
    provider: Arc<AtomicU64>,
}

impl Spent {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.tools.load(Ordering::Relaxed),
            self.provider.load(Ordering::Relaxed),
        )
    }
}

/// Adds the time since `start` to `counter`.
fn charge(counter: &AtomicU64, start: Instant) {
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(nanos, Ordering::Relaxed);
}

/// A tool that adds the time of each run to a counter.
struct TimedTool {
    inner: Arc<dyn Tool>,
    spent: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Tool for TimedTool {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn spec(&self) -> ToolSpec {
        self.inner.spec()
    }

    fn kind(&self) -> ToolKind {
        self.inner.kind()
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        self.inner.subject(arguments)
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let start = Instant::now();
        let output = self.inner.run(arguments, context).await;
        charge(&self.spent, start);
        output
    }
}

/// The built-in tools, in their usual order, each behind a stopwatch.
fn timed_toolbox(spent: &Arc<AtomicU64>) -> Toolbox {
    let builtin = Toolbox::builtin();
    builtin
        .names()
        .into_iter()
        .filter_map(|name| builtin.get(name))
        .fold(Toolbox::empty(), |toolbox, inner| {
            toolbox.with(Arc::new(TimedTool {
                inner,
                spent: spent.clone(),
            }))
        })
}

/// A scripted provider whose `stream` calls add their time to a counter.
/// The stream it returns is an in-memory list, so consuming it is left to
/// the agent's side of the ledger.
#[derive(Debug)]
struct TimedProvider {
    inner: ScriptedProvider,
    spent: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Provider for TimedProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        self.inner.capabilities(model)
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let start = Instant::now();
        let stream = self.inner.stream(request).await;
        charge(&self.spent, start);
        stream
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let start = Instant::now();
        let response = self.inner.complete(request).await;
        charge(&self.spent, start);
        response
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        self.inner.list_models().await
    }
}

/// A front end that keeps no events, only the overhead of each turn: the
/// wall time from one `TurnStarted` to the next (or to `Finished`) minus
/// what the tools and the provider spent in between.
struct Stopwatch {
    spent: Spent,
    open: Option<(Instant, (u64, u64))>,
    overheads_ns: Vec<u64>,
    tool_calls: u32,
    tool_errors: Vec<String>,
}

impl Stopwatch {
    fn new(spent: Spent) -> Self {
        Self {
            spent,
            open: None,
            overheads_ns: Vec::new(),
            tool_calls: 0,
            tool_errors: Vec::new(),
        }
    }

    fn close_turn(&mut self) {
        let Some((start, (tools_before, provider_before))) = self.open.take() else {
            return;
        };
        let wall = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (tools, provider) = self.spent.snapshot();
        let inside = (tools - tools_before) + (provider - provider_before);
        self.overheads_ns.push(wall.saturating_sub(inside));
    }
}

#[async_trait::async_trait]
impl Frontend for Stopwatch {
    fn event(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::TurnStarted { .. } => {
                self.close_turn();
                self.open = Some((Instant::now(), self.spent.snapshot()));
            }
            AgentEvent::Finished(_) => self.close_turn(),
            AgentEvent::ToolResult {
                name,
                content,
                is_error,
                ..
            } => {
                self.tool_calls += 1;
                if *is_error {
                    self.tool_errors.push(format!("{name}: {content}"));
                }
            }
            _ => {}
        }
    }
}

/// The model's side of a task of `turns` turns.
fn script(turns: u32) -> Vec<ScriptedAnswer> {
    let mut answers: Vec<ScriptedAnswer> = (0..turns - 1)
        .map(|turn| {
            let file = turn / CYCLE;
            let path = format!("src/module_{file}.rs");
            match turn % CYCLE {
                0 => ScriptedAnswer::call("read", json!({ "path": path })),
                1 => ScriptedAnswer::call("grep", json!({ "pattern": format!("fn item_{file}_") })),
                2 => ScriptedAnswer::call(
                    "edit",
                    json!({
                        "path": path,
                        "old_string": format!("const STATE_{file}: u32 = 0;"),
                        "new_string": format!("const STATE_{file}: u32 = 1;"),
                    }),
                ),
                _ => ScriptedAnswer::call("shell", json!({ "command": format!("true {file}") })),
            }
        })
        .collect();
    answers.push(ScriptedAnswer::text(
        "Done: every module's state is now 1, and the checks pass.",
    ));
    answers
}

/// A small Rust project: one source file per cycle of the script, plus a
/// manifest and a README.
fn write_project(dir: &Path, turns: u32) -> anyhow::Result<()> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )?;
    std::fs::write(
        dir.join("README.md"),
        "# demo\n\nA project to benchmark the agent in.\n",
    )?;
    for file in 0..turns.div_ceil(CYCLE) {
        let mut text = format!("//! Module {file}.\n\nconst STATE_{file}: u32 = 0;\n\n");
        for item in 0..FILE_LINES / 2 {
            text.push_str(&format!(
                "pub fn item_{file}_{item}() -> u32 {{ STATE_{file} + {item} }}\n\n"
            ));
        }
        std::fs::write(src.join(format!("module_{file}.rs")), text)?;
    }
    Ok(())
}

/// What one task measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Rep {
    /// Model turns.
    turns: u32,
    /// Tool calls that ran.
    tool_calls: u32,
    /// From `Agent::start` to the end of `Agent::run`.
    wall_ns: u64,
    /// Inside the tools.
    tools_ns: u64,
    /// Inside the provider.
    provider_ns: u64,
    /// Overhead of each turn (wall − tools − provider).
    turn_overheads_ns: Vec<u64>,
    /// The JSONL transcript's size.
    transcript_bytes: u64,
    /// The reference: the agent's requests replayed to a fresh scripted
    /// provider, nanoseconds per call.
    reference_per_call_ns: u64,
}

impl Rep {
    /// The whole task's overhead (session start, environment note and
    /// everything between turns included) per turn.
    fn overhead_per_turn_ns(&self) -> u64 {
        self.wall_ns
            .saturating_sub(self.tools_ns + self.provider_ns)
            / u64::from(self.turns)
    }
}

/// Run one task in a fresh project and session, then the reference.
async fn task(turns: u32) -> anyhow::Result<Rep> {
    let base = tempfile::Builder::new()
        .prefix("freehold-bench-agent-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let project = base.path().join("project");
    write_project(&project, turns)?;
    let spent = Spent::default();
    let scripted = ScriptedProvider::new("scripted", script(turns));
    let router = router(TimedProvider {
        inner: scripted.clone(),
        spent: spent.provider.clone(),
    })?;
    let mut options = AgentOptions::new("scripted:bench", &project);
    options.permissions.mode = PermissionMode::BypassPermissions;
    options.max_turns = turns;
    // Large enough that the task never compacts (which would ask the
    // scripted model for a summary it does not have).
    options.context_window = 1 << 20;
    let store = SessionStore::new(base.path().join("sessions"));
    let mut frontend = Stopwatch::new(spent.clone());

    let start = Instant::now();
    let mut agent =
        Agent::start(router, options, &store)?.with_toolbox(timed_toolbox(&spent.tools));
    let summary = agent
        .run(
            "Set every module's state to 1 and check the build.",
            &mut frontend,
            CancellationToken::new(),
        )
        .await;
    let wall = start.elapsed();

    if summary.stop_reason != AgentStop::Completed || summary.turns != turns {
        anyhow::bail!(
            "the scripted task did not complete: {:?} after {} turns",
            summary.stop_reason,
            summary.turns
        );
    }
    if let Some(error) = frontend.tool_errors.first() {
        anyhow::bail!("a tool failed, so the task is not the intended one: {error}");
    }
    let (tools_ns, provider_ns) = spent.snapshot();
    Ok(Rep {
        turns,
        tool_calls: frontend.tool_calls,
        wall_ns: nanos(wall),
        tools_ns,
        provider_ns,
        turn_overheads_ns: frontend.overheads_ns,
        transcript_bytes: std::fs::metadata(agent.transcript())?.len(),
        reference_per_call_ns: replay(&scripted.requests(), turns).await?,
    })
}

fn router(provider: TimedProvider) -> anyhow::Result<Arc<Router>> {
    let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert("scripted".into(), Arc::new(provider));
    Ok(Arc::new(Router::new(
        providers,
        BTreeMap::new(),
        Catalog::builtin()?,
    )))
}

/// The reference: `requests` sent straight to a fresh scripted provider
/// with the same script, each answer consumed as the agent does; returns
/// the mean nanoseconds per call.
async fn replay(requests: &[ChatRequest], turns: u32) -> anyhow::Result<u64> {
    let provider = ScriptedProvider::new("scripted", script(turns));
    let start = Instant::now();
    for request in requests {
        let mut stream = provider.stream(request.clone()).await?;
        let mut builder = ResponseBuilder::default();
        while let Some(event) = stream.next().await {
            builder.push(&event?);
        }
        std::hint::black_box(builder.finish());
    }
    Ok(nanos(start.elapsed()) / u64::try_from(requests.len().max(1))?)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The `p`-th percentile (nearest rank) of `values`; 0 when empty.
fn percentile(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The summary over repetitions.
#[derive(Debug, serde::Serialize)]
struct Report {
    turns: u32,
    reps: u32,
    /// Median and p90 of the per-turn overhead over all measured turns.
    turn_overhead_median_ms: f64,
    turn_overhead_p90_ms: f64,
    /// Median over tasks of the whole task's overhead per turn.
    task_overhead_per_turn_ms: f64,
    /// Median over tasks of the wall time per turn, tools and provider
    /// included.
    wall_per_turn_ms: f64,
    /// Median over tasks of the share of wall time spent in tools.
    tools_share: f64,
    /// Median over tasks of the provider's time per call inside the agent.
    provider_per_call_ms: f64,
    /// Median over tasks of the reference: the provider called directly.
    reference_per_call_ms: f64,
    /// Per-turn overhead median / reference.
    ratio: f64,
    transcript_bytes: u64,
    tasks: Vec<Rep>,
}

fn report(turns: u32, tasks: Vec<Rep>) -> Report {
    let ms = |ns: u64| ns as f64 / 1e6;
    let median_of =
        |f: &dyn Fn(&Rep) -> u64| percentile(&tasks.iter().map(f).collect::<Vec<_>>(), 50.0);
    let all_turns: Vec<u64> = tasks
        .iter()
        .flat_map(|rep| rep.turn_overheads_ns.iter().copied())
        .collect();
    let turn_median = percentile(&all_turns, 50.0);
    let reference = median_of(&|rep| rep.reference_per_call_ns);
    // Shares in parts per million, so the median can stay in integers.
    let tools_share = median_of(&|rep| rep.tools_ns * 1_000_000 / rep.wall_ns.max(1));
    Report {
        turns,
        reps: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
        turn_overhead_median_ms: ms(turn_median),
        turn_overhead_p90_ms: ms(percentile(&all_turns, 90.0)),
        task_overhead_per_turn_ms: ms(median_of(&Rep::overhead_per_turn_ns)),
        wall_per_turn_ms: ms(median_of(&|rep| rep.wall_ns / u64::from(rep.turns))),
        tools_share: tools_share as f64 / 1e6,
        provider_per_call_ms: ms(median_of(&|rep| rep.provider_ns / u64::from(rep.turns))),
        reference_per_call_ms: ms(reference),
        ratio: turn_median as f64 / reference.max(1) as f64,
        transcript_bytes: median_of(&|rep| rep.transcript_bytes),
        tasks,
    }
}

fn text(report: &Report) -> String {
    let tool_calls = report.tasks.first().map_or(0, |rep| rep.tool_calls);
    format!(
        "agent: {reps} tasks of {turns} model turns ({tool_calls} tool calls: read, grep, edit, shell `true`, in turn; then the answer), after a warm-up task\n\
         overhead per turn (wall - tools - provider): median {median:.3} ms, p90 {p90:.3} ms ({samples} turns)\n\
         whole task incl. session start, per turn:    {task:.3} ms (median over tasks)\n\
         wall per turn, tools and provider included:  {wall:.3} ms (tools: {share:.0}% of the wall time)\n\
         provider per call inside the agent:          {provider:.3} ms\n\
         reference, the provider called directly:     {reference:.3} ms per call (same requests)\n\
         ratio overhead / reference:                  {ratio:.2}\n\
         transcript: {bytes} bytes ({per_turn} bytes per turn)\n",
        reps = report.reps,
        turns = report.turns,
        median = report.turn_overhead_median_ms,
        p90 = report.turn_overhead_p90_ms,
        samples = report
            .tasks
            .iter()
            .map(|rep| rep.turn_overheads_ns.len())
            .sum::<usize>(),
        task = report.task_overhead_per_turn_ms,
        wall = report.wall_per_turn_ms,
        share = report.tools_share * 100.0,
        provider = report.provider_per_call_ms,
        reference = report.reference_per_call_ms,
        ratio = report.ratio,
        bytes = report.transcript_bytes,
        per_turn = report.transcript_bytes / u64::from(report.turns),
    )
}

/// `freehold bench agent`.
pub(crate) async fn agent(args: AgentBenchArgs) -> anyhow::Result<ExitCode> {
    eprintln!("warm-up task");
    task(args.turns).await?;
    let mut tasks = Vec::new();
    for rep in 1..=args.reps {
        eprintln!("task {rep}/{}", args.reps);
        tasks.push(task(args.turns).await?);
    }
    let report = report(args.turns, tasks);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values = [5, 1, 4, 2, 3, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&values, 50.0), 5);
        assert_eq!(percentile(&values, 90.0), 9);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_short_task_runs_every_tool_once() {
        let rep = task(5).await.unwrap();
        assert_eq!(rep.turns, 5);
        assert_eq!(rep.tool_calls, 4);
        assert_eq!(rep.turn_overheads_ns.len(), 5);
        assert!(rep.tools_ns > 0 && rep.provider_ns > 0);
        assert!(rep.transcript_bytes > 0);
    }
}
