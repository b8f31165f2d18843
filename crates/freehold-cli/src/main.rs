//! `freehold`: one binary for owning your AI — a coding agent on the
//! embedded engine or any provider, chat, models and benchmarks.
//!
//! This crate only parses arguments, loads configuration and renders
//! results; what it calls lives in the library crates.

mod agent;
mod bench;
mod bench_agent;
mod bench_conversation;
mod bench_gateway;
mod bench_grep;
mod chat;
mod config;
mod cpu_affinity;
mod embed;
mod eval;
mod keys;
mod local_model;
mod models;
mod providers;
mod serve;
mod sessions;
mod setup;
mod undo;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Own your AI: a local-first coding agent, model engine and LLM gateway.
#[derive(Debug, Parser)]
#[command(name = "freehold", version, about, long_about = None)]
struct Cli {
    /// Configuration file to use instead of ~/.config/freehold/config.toml
    /// and .freehold/config.toml.
    #[arg(long, global = true, env = "FREEHOLD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log more (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(flatten)]
    agent: agent::AgentArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task with the coding agent and print the answer (the same
    /// as `freehold -p`).
    Run(agent::RunArgs),
    /// List the agent's sessions (continue one with --resume ID).
    Sessions(sessions::SessionsArgs),
    /// Run a suite of agent tasks (eval/tasks) and report pass rate,
    /// turns, tokens, time and cost.
    Eval(eval::EvalArgs),
    /// Restore the files to the checkpoint taken before the agent's last
    /// change.
    Undo(undo::UndoArgs),
    /// Ask a model once and stream its answer.
    Chat(chat::ChatArgs),
    /// Embed texts: one JSON array (the vector) per text.
    Embed(embed::EmbedArgs),
    /// List the configured providers, or check that they answer.
    Providers(providers::ProvidersArgs),
    /// Local GGUF models: metadata, and what this machine can run.
    Models(models::ModelsArgs),
    /// Measure throughput: `bench engine` runs the embedded engine like
    /// llama.cpp's llama-bench.
    Bench(bench::BenchArgs),
    /// Serve the OpenAI and Anthropic APIs over the configured providers,
    /// with keys, budgets and a usage ledger.
    Serve(serve::ServeArgs),
    /// The gateway's virtual keys: create, list, revoke.
    Keys(keys::KeysArgs),
    /// What the gateway's requests cost, by key, model, day or end user.
    Usage(usage::UsageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, matches!(cli.command, Some(Command::Serve(_))));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => agent::run(cli.agent, cli.config.as_deref()).await,
            Some(Command::Run(args)) => agent::run_task(args, cli.config.as_deref()).await,
            Some(Command::Sessions(args)) => sessions::run(args),
            Some(Command::Undo(args)) => undo::run(args).await,
            Some(Command::Eval(args)) => eval::run(args, cli.config.as_deref()).await,
            Some(Command::Chat(args)) => chat::run(args, cli.config.as_deref()).await,
            Some(Command::Embed(args)) => embed::run(args, cli.config.as_deref()).await,
            Some(Command::Providers(args)) => providers::run(args, cli.config.as_deref()).await,
            Some(Command::Models(args)) => models::run(args).await,
            Some(Command::Bench(args)) => bench::run(args).await,
            Some(Command::Serve(args)) => serve::run(args, cli.config.as_deref()).await,
            Some(Command::Keys(args)) => keys::run(args, cli.config.as_deref()).await,
            Some(Command::Usage(args)) => usage::run(args, cli.config.as_deref()).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, serving: bool) {
    // llama.cpp's own warnings (odd tokens in a model's vocabulary…) are for
    // developers, not users: shown from -v on. A gateway's privacy decisions
    // (a request kept local, redacted or blocked) are an audit trail its
    // operator expects to see without asking for it.
    let default = match (verbose, serving) {
        (0, false) => "warn,llama-cpp-2=error",
        (0, true) => "warn,llama-cpp-2=error,freehold_gateway::privacy=info",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: a log piped to a file or to
    // journald must not be full of escape codes.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
