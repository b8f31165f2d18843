//! `freehold bench …`: throughput measurements.
//!
//! `bench engine` measures the embedded engine the way llama.cpp's
//! `llama-bench` does (see `freehold_engine::bench`); `bench/llama-bench`
//! in the repository runs both side by side. Results go to stdout (a table,
//! or one JSON object with `--json`), progress to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use freehold_engine::bench::{
    self, BenchOptions, BenchProgress, BenchReport, DEFAULT_PP, DEFAULT_REPS, DEFAULT_TG, MAX_REPS,
    MAX_TOKENS,
};
use freehold_engine::store::Store;

/// Arguments of `freehold bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Prompt processing (pp) and generation (tg) throughput of the
    /// embedded engine on a local GGUF model, measured like llama.cpp's
    /// llama-bench: random tokens, a warm-up run, then repetitions whose
    /// median, mean and standard deviation are reported.
    Engine(EngineArgs),
    /// The time to first token over the turns of a conversation, with the
    /// engine's prefix cache and without it, measured turn by turn in the
    /// same run.
    Conversation(crate::bench_conversation::ConversationArgs),
    /// The coding agent's own overhead per model turn, with a scripted
    /// model and the real tools in a temporary project: wall time minus
    /// the time inside tools and provider, against the provider called
    /// directly in the same run.
    Agent(crate::bench_agent::AgentBenchArgs),
    /// Run the agent's grep tool once over a directory and print the
    /// number of matching lines (bench/grep-vs-ripgrep times it against
    /// ripgrep).
    Grep(crate::bench_grep::GrepBenchArgs),
    /// What `freehold serve` adds to a request (latency, time to first
    /// byte, throughput, memory) in front of an in-process mock upstream,
    /// against direct calls to that upstream in the same run.
    Gateway(crate::bench_gateway::GatewayBenchArgs),
    /// A byte relay for `bench gateway`'s `relay` phase (run by it as a
    /// child process; not for direct use).
    #[command(hide = true)]
    Relay(crate::bench_gateway::RelayArgs),
}

/// Arguments of `freehold bench engine`.
#[derive(Debug, Args)]
struct EngineArgs {
    /// An installed model's name or a .gguf file; default: the smallest
    /// installed model.
    #[arg(short, long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// CPU threads for prompts and generation; default: one per physical
    /// core.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,
    /// Model layers to offload to the GPU (`llama-bench -ngl`); default:
    /// all of them when this binary has a GPU back end. 0 measures the CPU.
    #[arg(long, value_name = "N")]
    gpu_layers: Option<u32>,
    /// Prompt tokens decoded in one batch per repetition (0 skips the test).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PP,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_TOKENS)))]
    pp: u32,
    /// Tokens generated one at a time per repetition (0 skips the test).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TG,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_TOKENS)))]
    tg: u32,
    /// Measured repetitions of each test, after one warm-up run.
    #[arg(short, long, value_name = "N", default_value_t = DEFAULT_REPS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPS)))]
    reps: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.target {
        BenchTarget::Engine(args) => engine(args).await,
        BenchTarget::Conversation(args) => crate::bench_conversation::conversation(args).await,
        BenchTarget::Agent(args) => crate::bench_agent::agent(args).await,
        BenchTarget::Grep(args) => crate::bench_grep::grep(args).await,
        BenchTarget::Gateway(args) => crate::bench_gateway::gateway(args).await,
        BenchTarget::Relay(args) => crate::bench_gateway::relay(args).await,
    }
}

async fn engine(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let options = BenchOptions {
        pp: args.pp,
        tg: args.tg,
        reps: args.reps,
        threads: args.threads.map(|t| t as usize),
        gpu_layers: args.gpu_layers,
    };
    bench::validate(&options)?;
    let path = resolve_model(args.model.as_deref())?;
    let report = tokio::task::spawn_blocking(move || {
        bench::run(&path, &options, &|progress| match progress {
            BenchProgress::Loading { path } => eprintln!("loading {}", path.display()),
            BenchProgress::Warmup { test } => eprintln!("{test}: warm-up"),
            BenchProgress::Repetition { test, rep, reps } => {
                eprintln!("{test}: repetition {rep}/{reps}");
            }
            _ => {}
        })
    })
    .await
    .context("the benchmark thread failed")??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The model file: a `.gguf` path, an installed model's name, or the
/// smallest installed model.
pub(crate) fn resolve_model(model: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(model) = model else {
        return smallest_installed();
    };
    let path = Path::new(model);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if model.ends_with(".gguf") || path.components().count() > 1 {
        anyhow::bail!("no model file at {}", path.display());
    }
    let store = open_store()?;
    match store.get(model)? {
        Some(installed) => Ok(installed.path),
        None => anyhow::bail!(
            "model `{model}` is not installed in {}; pull it with `freehold models pull {model}` \
             (`freehold models list --all` shows the catalog), or pass a .gguf file",
            store.dir().display()
        ),
    }
}

fn smallest_installed() -> anyhow::Result<PathBuf> {
    let store = open_store()?;
    let listing = store.list()?;
    match listing.models.iter().min_by_key(|model| model.size) {
        Some(model) => {
            eprintln!(
                "no --model given: using {}, the smallest installed model",
                model.name
            );
            Ok(model.path.clone())
        }
        None => anyhow::bail!(
            "no model is installed in {}; pull a small one with `freehold models pull smollm2-135m`, \
             or pass --model FILE.gguf",
            store.dir().display()
        ),
    }
}

fn open_store() -> anyhow::Result<Store> {
    Store::open_default()
        .context("cannot open the model store (FREEHOLD_MODELS_DIR overrides its place)")
}

/// The report as a table in llama-bench's layout, with the median added.
fn table(report: &BenchReport) -> String {
    let model = &report.model;
    let mut out = format!(
        "{} ({}); {}, {} threads, n_batch {}, n_ubatch {}, flash-attn {}, {} repetitions\n\n",
        model.file_name,
        model.path.display(),
        devices_line(report),
        report.threads,
        report.n_batch,
        report.n_ubatch,
        report.flash_attn,
        report.reps
    );
    let description_width = model.description.len().max(5);
    out.push_str(&format!(
        "| {:<description_width$} | {:>10} | {:>10} | {:>7} | {:>7} | {:>10} | {:>18} |\n",
        "model", "size", "params", "threads", "test", "median t/s", "mean t/s ± sd"
    ));
    out.push_str(&format!(
        "| {} | {}: | {}: | {}: | {}: | {}: | {}: |\n",
        "-".repeat(description_width),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(6),
        "-".repeat(6),
        "-".repeat(9),
        "-".repeat(17),
    ));
    for test in &report.tests {
        out.push_str(&format!(
            "| {:<description_width$} | {:>10} | {:>10} | {:>7} | {:>7} | {:>10.2} | {:>18} |\n",
            model.description,
            mib_or_gib(model.size),
            format!("{:.2} M", model.params as f64 / 1e6),
            report.threads,
            test.name,
            test.median_ts,
            format!("{:.2} ± {:.2}", test.mean_ts, test.stddev_ts),
        ));
    }
    out
}

/// Where the model ran: the CPU alone, or the devices llama.cpp found and
/// how many layers were asked for.
fn devices_line(report: &BenchReport) -> String {
    let gpus: Vec<&str> = report
        .devices
        .iter()
        .map(String::as_str)
        .filter(|d| !d.starts_with("CPU"))
        .collect();
    match (gpus.is_empty(), report.gpu_layers) {
        (true, _) | (false, Some(0)) => "CPU".to_owned(),
        (false, Some(layers)) => format!("{} ({layers} layers offloaded)", gpus.join(", ")),
        (false, None) => format!("{} (every layer offloaded)", gpus.join(", ")),
    }
}

/// Bytes as llama-bench shows them: MiB below a GiB, GiB above.
fn mib_or_gib(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    const GIB: f64 = 1024.0 * MIB;
    let bytes = bytes as f64;
    if bytes < GIB {
        format!("{:.2} MiB", bytes / MIB)
    } else {
        format!("{:.2} GiB", bytes / GIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freehold_engine::bench::{BenchModel, TestKind, TestResult};

    #[test]
    fn table_has_one_row_per_test() {
        let report = BenchReport {
            model: BenchModel {
                path: PathBuf::from("/m/SmolLM2.gguf"),
                file_name: "SmolLM2.gguf".into(),
                description: "llama 135M Q4_1".into(),
                size: 90_000_000,
                file_size: 98_000_000,
                params: 134_515_008,
            },
            threads: 2,
            devices: vec!["CPU (Intel Xeon)".into()],
            gpu_layers: None,
            n_batch: 2048,
            n_ubatch: 512,
            flash_attn: "auto".into(),
            reps: 2,
            tests: vec![TestResult {
                name: "pp512".into(),
                kind: TestKind::Pp,
                tokens: 512,
                samples_ns: vec![2_000_000_000, 2_000_000_000],
                samples_ts: vec![256.0, 256.0],
                median_ts: 256.0,
                mean_ts: 256.0,
                stddev_ts: 0.0,
            }],
        };
        let table = table(&report);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert_eq!(
            rows[2],
            "| llama 135M Q4_1 |  85.83 MiB |   134.52 M |       2 |   pp512 |     256.00 |      256.00 ± 0.00 |"
        );
        assert!(table.starts_with("SmolLM2.gguf (/m/SmolLM2.gguf); CPU, 2 threads"));
    }

    #[test]
    fn the_header_names_the_gpu_only_when_layers_go_there() {
        let mut report = BenchReport {
            model: BenchModel {
                path: PathBuf::from("/m/q.gguf"),
                file_name: "q.gguf".into(),
                description: "qwen2 1.5B F16".into(),
                size: 1,
                file_size: 1,
                params: 1,
            },
            threads: 16,
            devices: vec!["CPU (AMD EPYC)".into(), "CUDA0 (NVIDIA H200)".into()],
            gpu_layers: None,
            n_batch: 2048,
            n_ubatch: 512,
            flash_attn: "auto".into(),
            reps: 1,
            tests: Vec::new(),
        };
        assert_eq!(
            devices_line(&report),
            "CUDA0 (NVIDIA H200) (every layer offloaded)"
        );
        report.gpu_layers = Some(10);
        assert_eq!(
            devices_line(&report),
            "CUDA0 (NVIDIA H200) (10 layers offloaded)"
        );
        report.gpu_layers = Some(0);
        assert_eq!(devices_line(&report), "CPU");
        report.devices.truncate(1);
        report.gpu_layers = None;
        assert_eq!(devices_line(&report), "CPU");
    }

    #[test]
    fn sizes_read_like_llama_bench() {
        assert_eq!(mib_or_gib(1024 * 1024), "1.00 MiB");
        assert_eq!(mib_or_gib(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
