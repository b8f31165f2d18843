//! `freehold models …`: local GGUF models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use freehold_engine::gguf;
use freehold_engine::hardware::Hardware;

/// Arguments of `freehold models`.
#[derive(Debug, Args)]
pub(crate) struct ModelsArgs {
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// Show a GGUF file's metadata: architecture, parameters, quantization,
    /// context length, chat template and every key.
    Info {
        /// A GGUF file.
        model: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what this machine has for running models: memory, cores, CPU
    /// features, GPUs.
    Hardware,
}

pub(crate) async fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ModelsAction::Info { model, json } => info(&model, json),
        ModelsAction::Hardware => hardware(),
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
