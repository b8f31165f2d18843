//! The model a command runs when none is named: the embedded engine's
//! default (`freehold_engine::default_model`), announced on standard error
//! and pulled with a progress bar when needed.

use freehold_engine::default_model::{self, How, Purpose, Step};
use freehold_engine::hardware::Hardware;
use freehold_engine::store::{Progress, PullOptions};

use crate::models::{human_bytes, open_store, pull_bar, report_pull};

/// The name of the in-process provider.
const LOCAL: &str = "local";

/// The `provider:model` to use for `named` (from `--model`, else the
/// configuration's `default_model`): as given, a `.gguf` path as
/// `local:PATH`, and nothing, `local` or `local:` as the embedded engine's
/// default model for `purpose`.
pub(crate) async fn model_name(named: Option<&str>, purpose: Purpose) -> anyhow::Result<String> {
    match named.map(str::trim) {
        None | Some("") | Some(LOCAL) | Some("local:") => default(purpose).await,
        Some(path) if !path.contains(':') && path.ends_with(".gguf") => {
            Ok(format!("{LOCAL}:{path}"))
        }
        Some(name) => Ok(name.to_owned()),
    }
}

/// The embedded default, as `local:NAME`.
async fn default(purpose: Purpose) -> anyhow::Result<String> {
    let store = open_store()?;
    let hardware = tokio::task::spawn_blocking(Hardware::probe).await?;
    let options = PullOptions::from_env();
    let bar = pull_bar();
    let report = |step: Step| announce(&bar, step);
    let progress = |progress: Progress| report_pull(&bar, progress);
    let resolved =
        default_model::resolve(&store, &hardware, purpose, &options, &report, &progress).await;
    bar.finish_and_clear();
    let resolved = resolved?;
    match &resolved.how {
        How::Installed => {}
        How::Pulled { source } | How::FellBack { source, .. } => {
            let source = crate::models::short_source(&source.to_string());
            eprintln!("installed {} from {source}", resolved.name);
        }
    }
    Ok(format!("{LOCAL}:{}", resolved.name))
}

/// Says what the default is and why, on standard error (above the
/// progress bar, which hides itself when standard error is not a terminal).
fn announce(bar: &indicatif::ProgressBar, step: Step) {
    let line = match step {
        Step::UsingInstalled { name } => format!("using {LOCAL}:{name} (best installed)"),
        Step::Pulling { name, size } => format!(
            "no suitable model is installed; pulling the recommended {name} ({}) for this machine",
            human_bytes(size)
        ),
        Step::FallingBack {
            wanted,
            fallback,
            error,
        } => format!(
            "could not reach any source for {wanted}; falling back to {fallback}\n  ({})",
            error.replace('\n', "\n  ")
        ),
        _ => return,
    };
    bar.suspend(|| eprintln!("{line}"));
}
