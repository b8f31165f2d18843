//! `freehold sessions`: the transcripts kept under the data directory.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use freehold_agent::SessionStore;

/// Arguments of `freehold sessions`.
#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// List sessions of every directory, not only this one.
    #[arg(short, long)]
    all: bool,

    /// The most sessions to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
}

pub(crate) fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let dir = SessionStore::default_dir().context(
        "cannot tell where sessions are kept: set FREEHOLD_DATA_DIR, XDG_DATA_HOME or HOME",
    )?;
    let store = SessionStore::new(&dir);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    let sessions: Vec<_> = store
        .list()?
        .into_iter()
        .filter(|s| args.all || s.meta.cwd == cwd)
        .take(args.limit)
        .collect();
    if sessions.is_empty() {
        let place = if args.all {
            format!("in {}", dir.display())
        } else {
            format!("for {} (--all lists every directory's)", cwd.display())
        };
        println!("no sessions {place}");
        return Ok(ExitCode::SUCCESS);
    }
    for session in sessions {
        let place = if args.all {
            format!("  {}", session.meta.cwd.display())
        } else {
            String::new()
        };
        println!(
            "{}  {}  {:>3} msgs  {}{place}",
            session.meta.id, session.meta.model, session.messages, session.title
        );
    }
    println!("\ncontinue one with `freehold --resume ID` (or the latest here with `freehold -c`)");
    Ok(ExitCode::SUCCESS)
}
