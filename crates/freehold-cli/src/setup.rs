//! Turning the configuration into providers and a router.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use freehold_engine::local::{LocalProvider, LocalSettings};
use freehold_llm::catalog::Catalog;
use freehold_llm::config::{ProviderConfig, ResolvedProvider, unusable_provider};
use freehold_llm::presets::{PRESETS, ProviderKind};
use freehold_llm::retry::RetryPolicy;
use freehold_llm::router::{Router, RouterSettings};
use freehold_llm::text_tools::RecoveringProvider;
use freehold_llm::{HealthSettings, Provider};

use crate::config::{self, ConfigFile};

/// Where a provider's definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `[providers.NAME]` table.
    Config,
    /// A built-in preset nobody configured.
    Preset,
}

/// The loaded configuration, its providers and the router over them.
pub(crate) struct Setup {
    pub(crate) config: ConfigFile,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) providers: Vec<(ResolvedProvider, Origin)>,
    /// Providers that could not be built, with the reason.
    pub(crate) unusable: BTreeMap<String, String>,
    pub(crate) router: Router,
    /// Every provider as built, by name: what a reload may reuse.
    pub(crate) built: BuiltProviders,
}

/// Providers as built from their settings, by name.
pub(crate) type BuiltProviders = BTreeMap<String, BuiltProvider>;

/// One provider as built, with the settings it was built from.
#[derive(Clone)]
pub(crate) struct BuiltProvider {
    resolved: ResolvedProvider,
    health: HealthSettings,
    pub(crate) provider: Arc<dyn Provider>,
    /// Whether it could be built (an unusable one fails every request).
    pub(crate) usable: bool,
}

impl Setup {
    /// Loads the configuration and builds every provider, for any command
    /// but the gateway: replica pools are probed only if the configuration
    /// asks (`[router] probe_interval_secs`), so that nothing is sent to
    /// pools the command does not use.
    pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_with(explicit, &BuiltProviders::new(), None)
    }

    /// Loads the configuration for the gateway, reusing each provider of
    /// `previous` whose settings did not change: a reload keeps their
    /// connection pools, their replicas' health and in-flight counts, and
    /// the embedded engine's context slots, instead of starting them cold.
    /// Replica pools are probed every
    /// [`RouterSettings::GATEWAY_PROBE_INTERVAL`] unless configured.
    pub(crate) fn load_for_gateway(
        explicit: Option<&Path>,
        previous: &BuiltProviders,
    ) -> anyhow::Result<Self> {
        Self::load_with(
            explicit,
            previous,
            Some(RouterSettings::GATEWAY_PROBE_INTERVAL),
        )
    }

    fn load_with(
        explicit: Option<&Path>,
        previous: &BuiltProviders,
        default_probe_interval: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let loaded = config::load(explicit)?;
        let config = loaded.config;
        let mut providers = Vec::new();
        for (name, provider) in &config.providers {
            let resolved = provider.resolve(name).with_context(|| {
                let place = config::locate_table(&loaded.files, "providers", name)
                    .unwrap_or_else(|| describe(&loaded.files));
                format!("invalid configuration at {place}")
            })?;
            providers.push((resolved, Origin::Config));
        }
        for preset in PRESETS {
            if !config.providers.contains_key(preset.name) {
                let resolved = ProviderConfig::default()
                    .resolve(preset.name)
                    .with_context(|| format!("built-in preset {}", preset.name))?;
                providers.push((resolved, Origin::Preset));
            }
        }
        // Installed GGUF models run in process through the `local` provider,
        // there even when nobody configured it.
        let has_local = providers
            .iter()
            .any(|(resolved, _)| resolved.kind == ProviderKind::Local);
        if !has_local && !config.providers.contains_key(LOCAL) {
            let resolved = ProviderConfig {
                kind: Some(ProviderKind::Local),
                ..ProviderConfig::default()
            }
            .resolve(LOCAL)
            .context("the built-in local provider")?;
            providers.push((resolved, Origin::Preset));
        }
        // `[models."provider:model"] recover_text_tool_calls = …` switches
        // recovery per model.
        for (resolved, _) in &mut providers {
            let prefix = format!("{}:", resolved.name);
            for (key, entry) in &config.models {
                if let (Some(model), Some(on)) =
                    (key.strip_prefix(&prefix), entry.recover_text_tool_calls)
                {
                    resolved.recover_per_model.insert(model.to_owned(), on);
                }
            }
        }
        let mut catalog = Catalog::builtin().context("the built-in model catalog is invalid")?;
        for (key, entry) in &config.models {
            catalog.apply_override(key, entry).with_context(|| {
                let place = config::locate_table(&loaded.files, "models", key)
                    .unwrap_or_else(|| describe(&loaded.files));
                format!("invalid [models.\"{key}\"] at {place}")
            })?;
        }
        let health = config.router.health(default_probe_interval);
        let mut built = BuiltProviders::new();
        let mut unusable = BTreeMap::new();
        for (resolved, origin) in &providers {
            // Health settings matter only to a set of replicas: a single
            // endpoint (and the engine) keeps its connections and its
            // engine's slots when only `[router]` changed.
            let same_health =
                |old: &BuiltProvider| resolved.base_urls.len() <= 1 || old.health == health;
            if let Some(same) = previous
                .get(&resolved.name)
                .filter(|old| old.usable && old.resolved == *resolved && same_health(old))
            {
                built.insert(resolved.name.clone(), same.clone());
                continue;
            }
            // A provider that cannot be built (a `local` one in a build
            // without the engine, a key with characters HTTP forbids) stays
            // routable: requests to it fail saying why.
            let (provider, usable) = match build(resolved, &health) {
                // Configured, built, but unable to send: its key's variable
                // is not set (the environment cannot change under a running
                // gateway, so a reload that named a missing one is
                // refused). Presets nobody configured are not reported (most
                // are never routed, and a missing key is their normal
                // state), but are not usable either: configuring one later,
                // its key still unset, breaks nothing that worked.
                Ok(provider) if !provider.usable() => {
                    if *origin == Origin::Config {
                        let why = match resolved.missing_key() {
                            Some(variable) => {
                                format!("the environment variable {variable} is not set")
                            }
                            None => "it cannot send requests".to_owned(),
                        };
                        unusable.insert(resolved.name.clone(), why);
                    }
                    (provider, false)
                }
                Ok(provider) => (provider, true),
                Err(error) => {
                    unusable.insert(resolved.name.clone(), error.to_string());
                    (unusable_provider(&resolved.name, &error), false)
                }
            };
            built.insert(
                resolved.name.clone(),
                BuiltProvider {
                    resolved: resolved.clone(),
                    health: health.clone(),
                    provider,
                    usable,
                },
            );
        }
        let router = Router::new(
            built
                .iter()
                .map(|(name, built)| (name.clone(), Arc::clone(&built.provider)))
                .collect(),
            config.aliases.clone(),
            catalog,
        );
        router.validate().map_err(|error| {
            anyhow::anyhow!("invalid [aliases] in the configuration: {}", error.message)
        })?;
        Ok(Self {
            config,
            files: loaded.files,
            providers,
            unusable,
            router,
            built,
        })
    }
}

/// The name of the in-process provider.
const LOCAL: &str = "local";

/// Builds a provider; `kind = "local"` ones run in process through the
/// engine (freehold-llm cannot depend on it, so they are built here).
fn build(
    resolved: &ResolvedProvider,
    health: &HealthSettings,
) -> Result<Arc<dyn Provider>, freehold_llm::config::ConfigError> {
    if resolved.kind == ProviderKind::Local {
        let engine = resolved.engine;
        let local: Arc<dyn Provider> = Arc::new(LocalProvider::new(LocalSettings {
            store: None,
            threads: engine.threads,
            context_cap: engine.max_context,
            slots: engine.cache_slots,
            gpu_layers: engine.gpu_layers,
        }));
        // The engine constrains calls that open the answer; a small model
        // that first explains itself and then prints a call in a fenced
        // block or in tags gets it recovered from the text (on by default
        // for local providers, `recover_text_tool_calls` switches it).
        let recovers =
            resolved.recover_text_tool_calls || resolved.recover_per_model.values().any(|on| *on);
        return Ok(if recovers {
            Arc::new(RecoveringProvider::with_policy(
                local,
                resolved.recover_text_tool_calls,
                resolved.recover_per_model.clone(),
            ))
        } else {
            local
        });
    }
    resolved.build(health)
}

/// A copy of a provider with short timeouts and no retries, for probing.
pub(crate) fn quick_probe(resolved: &ResolvedProvider) -> Option<Arc<dyn Provider>> {
    let mut quick = resolved.clone();
    quick.http.connect_timeout = Duration::from_millis(800);
    quick.http.idle_timeout = Duration::from_secs(3);
    quick.http.retry = RetryPolicy::none();
    quick.recover_text_tool_calls = false;
    build(&quick, &HealthSettings::default()).ok()
}

fn describe(files: &[PathBuf]) -> String {
    if files.is_empty() {
        "no configuration file".into()
    } else {
        files
            .iter()
            .map(|file| file.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reload_keeps_the_providers_whose_settings_did_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let write = |a: &str, b: &str| {
            std::fs::write(
                &file,
                format!(
                    "[providers.a]\nkind = \"openai\"\nbase_url = \"{a}\"\n\n\
                     [providers.b]\nkind = \"openai\"\nbase_url = \"{b}\"\n"
                ),
            )
            .unwrap();
        };
        write("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1");
        let first = Setup::load_for_gateway(Some(&file), &BuiltProviders::new()).unwrap();
        // `b` moves; `a` is the same.
        write("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1");
        let second = Setup::load_for_gateway(Some(&file), &first.built).unwrap();
        let same =
            |name: &str| Arc::ptr_eq(&first.built[name].provider, &second.built[name].provider);
        assert!(same("a"));
        assert!(!same("b"));
        assert!(same(LOCAL) || !first.built[LOCAL].usable);
    }

    /// Health settings (`[router]`) are a replica set's: a change to them
    /// rebuilds the sets, and keeps single endpoints with their connections.
    #[test]
    fn a_router_change_rebuilds_only_replica_sets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let write = |cooldown: u64| {
            std::fs::write(
                &file,
                format!(
                    "[router]\ncooldown_secs = {cooldown}\n\n\
                     [providers.single]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n\
                     [providers.pool]\nkind = \"openai\"\n\
                     base_urls = [\"http://127.0.0.1:9/v1\", \"http://127.0.0.1:10/v1\"]\n"
                ),
            )
            .unwrap();
        };
        write(30);
        let first = Setup::load_for_gateway(Some(&file), &BuiltProviders::new()).unwrap();
        write(60);
        let second = Setup::load_for_gateway(Some(&file), &first.built).unwrap();
        let same =
            |name: &str| Arc::ptr_eq(&first.built[name].provider, &second.built[name].provider);
        assert!(same("single"));
        assert!(!same("pool"));
    }
}
