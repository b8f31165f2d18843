//! `freehold eval`: run the coding agent on evaluation tasks (eval/tasks)
//! and check its work. The runner is freehold-eval; this only resolves the
//! model, prints a line per task and writes the report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use freehold_engine::default_model::Purpose;
use freehold_eval::{
    Filter, Progress, RunSettings, SuiteReport, TaskReport, load_suite, run_suite,
};
use freehold_llm::cost::CostDisplay;
use freehold_protocol::AgentStop;

use crate::local_model;
use crate::setup::Setup;

/// Every task passed.
const EXIT_ALL_PASSED: u8 = 0;
/// Some task failed.
const EXIT_SOME_FAILED: u8 = 1;
/// The run could not be done, or the runner could not run or check a task.
const EXIT_ERROR: u8 = 2;
/// Interrupted (Ctrl-C).
const EXIT_INTERRUPTED: u8 = 130;

/// Arguments of `freehold eval`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each task's repo/ is copied into a fresh temporary directory, the agent runs
there with permissions bypassed, then the task's check decides (eval/README.md).

Exit status:
  0    every task passed
  1    some task failed
  2    the run could not be done (configuration, a task that does not load,
       the report not written), or the runner could not run or check a task
       (see `error` in the report)
  130  interrupted; the report holds the tasks that finished")]
pub(crate) struct EvalArgs {
    /// A directory of tasks (like eval/tasks), or one task directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// The model, as `provider:model`, an alias from the configuration, a
    /// `.gguf` file, or `local` for the embedded engine's default. Default:
    /// `default_model` from the configuration, else `local`.
    #[arg(short, long, env = "FREEHOLD_MODEL")]
    model: Option<String>,

    /// Run only the tasks whose name contains NAME; repeat for more.
    #[arg(short, long = "filter", value_name = "NAME")]
    filter: Vec<String>,

    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE", default_value = "eval-report.json")]
    report: PathBuf,

    /// The agent's turn limit for tasks whose task.toml sets none.
    #[arg(long, value_name = "N", default_value_t = freehold_eval::DEFAULT_MAX_TURNS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_turns: u32,

    /// The agent's time limit per task, in seconds; past it the agent is
    /// cancelled and the check decides on what it did so far.
    #[arg(long, value_name = "SECS", default_value_t = freehold_eval::DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Keep each task's working directory (its path is printed and in the
    /// report).
    #[arg(long)]
    keep: bool,

    /// How many tasks run at once.
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
}

pub(crate) async fn run(args: EvalArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Errors exit with 2, not main's 1: 1 means "a task failed".
    match evaluate(args, config).await {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(error) => {
            eprintln!("error: {error:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

async fn evaluate(args: EvalArgs, config: Option<&Path>) -> anyhow::Result<u8> {
    let filter = Filter::any_of(args.filter.iter().cloned());
    let tasks = load_suite(&args.dir, &filter)?;
    let setup = Setup::load(config)?;
    let named = args
        .model
        .as_deref()
        .or(setup.config.default_model.as_deref());
    let model = local_model::model_name(named, Purpose::Chat).await?;
    let router = Arc::new(setup.router);

    let mut settings = RunSettings::new(model.clone());
    let tuning = crate::agent::tuning(&router, &model, &setup.config.agent).await;
    settings.context_window = tuning.context_window;
    settings.max_output_tokens = Some(tuning.max_output_tokens);
    settings.temperature = tuning.temperature;
    settings.guided = tuning.guided;
    settings.max_turns = args.max_turns;
    settings.timeout = Duration::from_secs(args.timeout);
    settings.keep = args.keep;
    settings.jobs = usize::try_from(args.jobs).unwrap_or(1);

    let cancel = settings.cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\n[interrupted: stopping; Ctrl-C again to quit at once]");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });

    eprintln!(
        "evaluating {} task{} with {model} (timeout {} s per task)",
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" },
        args.timeout
    );
    let width = tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let report = run_suite(&tasks, &settings, router, &mut |progress| {
        if let Progress::Finished {
            index,
            total,
            report,
        } = progress
        {
            print_task(index, total, width, report);
        }
    })
    .await;
    interrupt.abort();

    print_totals(&report);
    report.write_json(&args.report)?;
    eprintln!("report: {}", args.report.display());
    Ok(exit_code(&report))
}

fn exit_code(report: &SuiteReport) -> u8 {
    if report.cancelled {
        EXIT_INTERRUPTED
    } else if report.totals.errors > 0 {
        EXIT_ERROR
    } else if report.totals.passed < report.totals.tasks {
        EXIT_SOME_FAILED
    } else {
        EXIT_ALL_PASSED
    }
}

/// `[ 3/20] PASS 03-answer-default-port   2 turns     1834 in      41 out     3.2 s  $0.0012`,
/// then why a task did not finish normally, on a line of its own.
fn print_task(index: usize, total: usize, width: usize, report: &TaskReport) {
    let digits = total.to_string().len();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let mut line = format!(
        "[{:>digits$}/{total}] {verdict} {:<width$} {:>3} turn{} {:>8} in {:>7} out {:>7.1} s  {}",
        index + 1,
        report.name,
        report.turns,
        if report.turns == 1 { " " } else { "s" },
        report.usage.input_tokens,
        report.usage.output_tokens,
        report.wall_ms as f64 / 1000.0,
        CostDisplay(report.cost_usd),
    );
    let mut notes = Vec::new();
    if report.timed_out {
        notes.push("agent timed out".to_owned());
    } else {
        match &report.stop_reason {
            Some(AgentStop::MaxTurns) => notes.push("turn limit reached".to_owned()),
            Some(AgentStop::Cancelled) => notes.push("cancelled".to_owned()),
            Some(AgentStop::Error(message)) => notes.push(format!("agent error: {message}")),
            Some(AgentStop::Completed) | None => {}
        }
    }
    if let Some(error) = &report.error {
        notes.push(format!("error: {error}"));
    }
    if let Some(dir) = &report.work_dir {
        notes.push(format!("kept in {}", dir.display()));
    }
    for note in notes {
        line.push_str(&format!("\n      {note}"));
    }
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head`) must not stop the run or lose the report.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// `12/20 passed (60.0%) · 85 turns · 123456 in · 4567 out · 312.4 s · $0.12`
fn print_totals(report: &SuiteReport) {
    let totals = &report.totals;
    let mut line = format!(
        "{}/{} passed ({:.1}%) · {} turns · {} in · {} out · {:.1} s · {}",
        totals.passed,
        totals.tasks,
        totals.pass_rate * 100.0,
        totals.turns,
        totals.usage.input_tokens,
        totals.usage.output_tokens,
        report.wall_ms as f64 / 1000.0,
        CostDisplay(totals.cost_usd),
    );
    if totals.errors > 0 {
        line.push_str(&format!(" · {} runner error(s)", totals.errors));
    }
    if report.cancelled {
        line.push_str(" · interrupted");
    }
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
