//! `freehold embed`: texts in, one vector each out.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use freehold_engine::default_model::Purpose;
use freehold_protocol::EmbedRequest;
use serde::Serialize;

use crate::local_model;
use crate::setup::Setup;

/// Arguments of `freehold embed`.
#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    /// The texts, each embedded on its own. Read from standard input, one
    /// text per line (blank lines skipped), when omitted.
    texts: Vec<String>,

    /// The model: `provider:model` (`local:NAME`, `ollama:nomic-embed-text`,
    /// `openai:text-embedding-3-small`), an alias, a `.gguf` file, or
    /// `local` for the embedded engine's default (an installed embedding
    /// model first). Default: `local`.
    #[arg(short, long, env = "FREEHOLD_EMBED_MODEL")]
    model: Option<String>,

    /// Print one JSON object (`model`, `embeddings`, `usage`) instead of one
    /// JSON array per line.
    #[arg(long)]
    json: bool,

    /// Do not print the summary line.
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) async fn run(args: EmbedArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let texts = if args.texts.is_empty() {
        read_lines()?
    } else {
        args.texts
    };
    if texts.is_empty() {
        bail!(
            "nothing to embed: pass texts as arguments (freehold embed \"…\" \"…\") or pipe them \
             on standard input, one per line"
        );
    }
    let setup = Setup::load(config)?;
    let model = local_model::model_name(args.model.as_deref(), Purpose::Embed).await?;
    let count = texts.len();
    let request = EmbedRequest::new(model.clone(), texts);
    let (target, response) = tokio::select! {
        routed = setup.router.embed_routed(request) => {
            routed.with_context(|| format!("cannot embed with {model}"))?
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("[cancelled]");
            return Ok(ExitCode::from(130));
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        let object = JsonOutput {
            model: target.to_string(),
            embeddings: &response.embeddings,
            usage: JsonUsage {
                input_tokens: response.usage.input_tokens,
            },
        };
        serde_json::to_writer(&mut out, &object)?;
        writeln!(out)?;
    } else {
        for vector in &response.embeddings {
            serde_json::to_writer(&mut out, vector)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    if !args.quiet {
        eprintln!(
            "[{target} · {count} text{} · {} dimensions · {} tokens]",
            if count == 1 { "" } else { "s" },
            response.dimension(),
            response.usage.input_tokens
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--json` prints. The vectors stay `f32`, so that each number is
/// written as the shortest text that reads back to the same `f32`.
#[derive(Serialize)]
struct JsonOutput<'a> {
    model: String,
    embeddings: &'a [Vec<f32>],
    usage: JsonUsage,
}

#[derive(Serialize)]
struct JsonUsage {
    input_tokens: u64,
}

/// The non-blank lines of standard input (none when it is a terminal).
fn read_lines() -> anyhow::Result<Vec<String>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut texts = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.context("cannot read texts from standard input")?;
        if !line.trim().is_empty() {
            texts.push(line);
        }
    }
    Ok(texts)
}
