//! `freehold bench grep`: runs the agent's `grep` tool once from the
//! command line, so that `bench/grep-vs-ripgrep` can time it against
//! ripgrep on the same tree.
//!
//! It prints only the number of matching lines (the tool's own output is
//! capped for the model), which the script checks against ripgrep's count
//! so that both are known to have done the same search.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use freehold_tools::{ToolContext, Toolbox};
use serde_json::json;

/// Arguments of `freehold bench grep`.
#[derive(Debug, Args)]
pub(crate) struct GrepBenchArgs {
    /// The regular expression (the tool's syntax, which is ripgrep's).
    #[arg(long, value_name = "REGEX")]
    pattern: String,
    /// The directory searched: the tool's project root.
    #[arg(long, value_name = "DIR")]
    path: PathBuf,
    /// Search case-insensitively.
    #[arg(short, long)]
    ignore_case: bool,
}

/// `freehold bench grep`.
pub(crate) async fn grep(args: GrepBenchArgs) -> anyhow::Result<ExitCode> {
    let tool = Toolbox::builtin()
        .get("grep")
        .context("the toolbox has no grep tool")?;
    let root = std::path::absolute(&args.path)
        .with_context(|| format!("bad path {}", args.path.display()))?;
    let context = ToolContext::new(root);
    let output = tool
        .run(
            json!({ "pattern": args.pattern, "ignore_case": args.ignore_case }),
            &context,
        )
        .await
        .map_err(|error| anyhow::anyhow!("grep failed: {error}"))?;
    println!("{}", matching_lines(&output.content));
    Ok(ExitCode::SUCCESS)
}

/// The number of matching lines in the tool's output: the `path:line:text`
/// lines shown, plus those its last line says were not shown.
fn matching_lines(content: &str) -> u64 {
    if content.starts_with("No matches for ") {
        return 0;
    }
    let mut lines: Vec<&str> = content.lines().collect();
    let not_shown = lines
        .last()
        .and_then(|last| last.strip_prefix('('))
        .and_then(|last| last.split_once(" more matching lines not shown"))
        .and_then(|(count, _)| count.parse::<u64>().ok());
    if not_shown.is_some() {
        lines.pop();
    }
    lines.len() as u64 + not_shown.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_shown_and_hidden_lines() {
        assert_eq!(matching_lines("No matches for \"x\" in src."), 0);
        assert_eq!(matching_lines("a.rs:1:fn a()\nb.rs:2:fn b()"), 2);
        assert_eq!(
            matching_lines(
                "a.rs:1:fn a()\nb.rs:2:fn b()\n(40 more matching lines not shown; narrow the pattern, path or glob)"
            ),
            42
        );
    }
}
