//! `freehold providers [check]`.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::setup::{Origin, Setup, quick_probe};

/// Arguments of `freehold providers`.
#[derive(Debug, Args)]
pub(crate) struct ProvidersArgs {
    #[command(subcommand)]
    action: Option<ProvidersAction>,

    /// Also list built-in presets nobody configured.
    #[arg(long, global = true)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum ProvidersAction {
    /// Check each provider: is it reachable, and does its key work?
    Check,
}

pub(crate) async fn run(args: ProvidersArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let setup = Setup::load(config)?;
    match args.action {
        None => list(&setup, args.all),
        Some(ProvidersAction::Check) => check(&setup, args.all).await,
    }
}

/// Which providers a command shows: configured ones, plus presets that are
/// usable (a key set, or a local server) — or every preset with `--all`.
fn shown(setup: &Setup, all: bool) -> Vec<&(freehold_llm::config::ResolvedProvider, Origin)> {
    setup
        .providers
        .iter()
        .filter(|(resolved, origin)| {
            all || *origin == Origin::Config || resolved.local || resolved.missing_key().is_none()
        })
        .collect()
}

fn list(setup: &Setup, all: bool) -> anyhow::Result<ExitCode> {
    if setup.files.is_empty() {
        println!("configuration: none (built-in presets only)");
    } else {
        for file in &setup.files {
            println!("configuration: {}", file.display());
        }
    }
    println!();
    println!(
        "{:<18} {:<17} {:<8} {:<44} KEY",
        "NAME", "KIND", "SOURCE", "BASE URL"
    );
    for (resolved, origin) in shown(setup, all) {
        let key = match &resolved.api_key_env {
            None => "-".to_owned(),
            Some(variable) => {
                let set = freehold_llm::secret::ApiKey::from_env(variable).is_some();
                match (set, resolved.key_required) {
                    (true, _) => format!("{variable} (set)"),
                    (false, true) => format!("{variable} (not set)"),
                    (false, false) => format!("{variable} (optional, not set)"),
                }
            }
        };
        let urls = if resolved.base_urls.is_empty() {
            "(embedded)".to_owned()
        } else {
            resolved.base_urls.join(", ")
        };
        let origin = match origin {
            Origin::Config => "config",
            Origin::Preset => "preset",
        };
        // A missing key is said already, by "(not set)".
        let key = match setup.unusable.get(&resolved.name) {
            Some(reason) if resolved.missing_key().is_none() => {
                format!("{key}  UNUSABLE: {reason}")
            }
            _ => key,
        };
        println!(
            "{:<18} {:<17} {:<8} {:<44} {key}",
            resolved.name,
            resolved.kind.as_str(),
            origin,
            urls
        );
    }
    if !setup.config.aliases.is_empty() {
        println!();
        println!("aliases:");
        for (alias, target) in &setup.config.aliases {
            println!("  {alias} = {}", target.names().join(" → "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(setup: &Setup, all: bool) -> anyhow::Result<ExitCode> {
    let targets = shown(setup, all);
    let checks = targets.iter().map(|(resolved, origin)| async move {
        let outcome = match resolved.missing_key() {
            Some(variable) => Err(format!("key missing: set {variable}")),
            None => match quick_probe(resolved) {
                None => Err("cannot be built (see `freehold providers`)".to_owned()),
                Some(provider) => match provider.list_models().await {
                    Ok(models) => Ok(format!("ok, {} model(s)", models.len())),
                    Err(error) => Err(match error.kind {
                        freehold_protocol::ErrorKind::Authentication => {
                            format!("reachable, key rejected: {error}")
                        }
                        freehold_protocol::ErrorKind::Connection
                        | freehold_protocol::ErrorKind::Timeout => {
                            format!("unreachable: {}", error.message)
                        }
                        _ => format!("error: {error}"),
                    }),
                },
            },
        };
        (resolved.name.clone(), *origin, outcome)
    });
    let results = futures::future::join_all(checks).await;
    let mut failed_configured = false;
    for (name, origin, outcome) in results {
        match outcome {
            Ok(message) => println!("{name:<18} {message}"),
            Err(message) => {
                failed_configured |= origin == Origin::Config;
                println!("{name:<18} {message}");
            }
        }
    }
    Ok(if failed_configured {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
