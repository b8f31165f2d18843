//! `freehold bench conversation`: the time to first token over the turns of
//! a conversation, with the engine's prefix cache and without it, measured
//! in the same run (turn by turn, interleaved).
//!
//! An agent re-sends the whole conversation every turn; with the prefix
//! cache the time to first token of turn N should grow with the new tokens
//! only, not with the conversation's length.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use freehold_engine::local::{LocalProvider, LocalSettings};
use freehold_llm::Provider;
use freehold_protocol::{ChatRequest, ChatResponse, Message};

/// Arguments of `freehold bench conversation`.
#[derive(Debug, Args)]
pub(crate) struct ConversationArgs {
    /// An installed model's name or a .gguf file; default: the smallest
    /// installed model.
    #[arg(short, long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// Turns of the conversation.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(2..=64))]
    turns: u32,
    /// Tokens generated per turn.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=512))]
    answer_tokens: u32,
    /// CPU threads; default: one per physical core.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One turn, measured both ways.
#[derive(Debug, serde::Serialize)]
struct Turn {
    turn: u32,
    prompt_tokens: u64,
    cached_tokens: u64,
    evaluated_tokens: u64,
    ttft_cached_ms: f64,
    ttft_uncached_ms: f64,
}

/// A system prompt of a few hundred tokens, like an agent's.
const SYSTEM: &str = "You are a coding assistant working in the user's repository. \
Read files before you change them. Keep changes small and explain them briefly. \
Run the tests after each change and report what failed. Never invent file names: \
list the directory first. Prefer the standard library. Follow the project's style: \
names that explain themselves, small functions, comments that say why. When a task \
is ambiguous, state your assumption and go on. When you are done, summarise what \
changed, what you tested, and what you left alone.";

pub(crate) async fn conversation(args: ConversationArgs) -> anyhow::Result<ExitCode> {
    let path: PathBuf = crate::bench::resolve_model(args.model.as_deref())?;
    let model = path.to_string_lossy().into_owned();
    let provider = |slots| {
        LocalProvider::new(LocalSettings {
            threads: args.threads.map(|t| t as usize),
            slots: Some(slots),
            ..LocalSettings::default()
        })
    };
    let (cached, uncached) = (provider(1), provider(0));
    let mut messages = vec![Message::system(SYSTEM.repeat(3))];
    let mut turns = Vec::new();
    for turn in 1..=args.turns {
        messages.push(Message::user(format!(
            "Turn {turn}: look at module number {turn} and tell me in one sentence what it is likely to do."
        )));
        let mut request = ChatRequest::new(model.clone(), messages.clone());
        request.max_tokens = Some(args.answer_tokens);
        request.sampling.temperature = Some(0.0);
        let with = cached
            .complete(request.clone())
            .await
            .with_context(|| format!("turn {turn} with the prefix cache"))?;
        let without = uncached
            .complete(request)
            .await
            .with_context(|| format!("turn {turn} without the prefix cache"))?;
        let ttft = |response: &ChatResponse| {
            response
                .timings
                .map_or(0.0, |t| t.time_to_first_token().as_secs_f64() * 1e3)
        };
        let measured = Turn {
            turn,
            prompt_tokens: with.usage.input_tokens,
            cached_tokens: with.usage.cached_input_tokens,
            evaluated_tokens: with.usage.input_tokens - with.usage.cached_input_tokens,
            ttft_cached_ms: ttft(&with),
            ttft_uncached_ms: ttft(&without),
        };
        if !args.json {
            if turn == 1 {
                println!(
                    "{:>4}  {:>7}  {:>7}  {:>9}  {:>12}  {:>14}  {:>6}",
                    "turn",
                    "prompt",
                    "cached",
                    "evaluated",
                    "TTFT cached",
                    "TTFT uncached",
                    "ratio"
                );
            }
            println!(
                "{:>4}  {:>7}  {:>7}  {:>9}  {:>9.0} ms  {:>11.0} ms  {:>6.2}",
                measured.turn,
                measured.prompt_tokens,
                measured.cached_tokens,
                measured.evaluated_tokens,
                measured.ttft_cached_ms,
                measured.ttft_uncached_ms,
                measured.ttft_cached_ms / measured.ttft_uncached_ms.max(1e-9),
            );
        }
        turns.push(measured);
        messages.push(Message::assistant(with.message.text()));
    }
    if args.json {
        let report = serde_json::json!({
            "model": path.display().to_string(),
            "answer_tokens": args.answer_tokens,
            "turns": turns,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
