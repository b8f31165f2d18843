//! `freehold undo`: restore the project's files to the checkpoint taken
//! before the agent's last change.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use freehold_agent::checkpoint::{self, Checkpoints};

/// Arguments of `freehold undo`.
#[derive(Debug, Args)]
pub(crate) struct UndoArgs {
    /// List the checkpoints instead of restoring one.
    #[arg(short, long)]
    list: bool,
}

pub(crate) async fn run(args: UndoArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let data = freehold_agent::data_dir().context(
        "cannot tell where checkpoints are kept: set FREEHOLD_DATA_DIR, XDG_DATA_HOME or HOME",
    )?;
    let shadow = checkpoint::default_shadow_dir(&data, &cwd);
    let checkpoints = Checkpoints::open(&cwd, &shadow).await?;
    if args.list {
        let list = checkpoints.list().await?;
        if list.is_empty() {
            println!("no checkpoints for {}", cwd.display());
        }
        for checkpoint in list {
            println!(
                "{}  session {}  {}",
                &checkpoint.id[..checkpoint.id.len().min(12)],
                checkpoint.session_id,
                checkpoint.label
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = checkpoints.restore_last().await?;
    println!(
        "restored the checkpoint taken before \"{}\" (session {})",
        report.checkpoint.label, report.checkpoint.session_id
    );
    for path in &report.restored {
        println!("  restored {path}");
    }
    for path in &report.deleted {
        println!("  deleted  {path}");
    }
    if report.restored.is_empty() && report.deleted.is_empty() {
        println!("  (the files already matched it)");
    }
    Ok(ExitCode::SUCCESS)
}
