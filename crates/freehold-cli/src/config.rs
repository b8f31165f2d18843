//! Loading the configuration file(s): layering, merging and errors that name
//! the file, the line and the key.
//!
//! Layers, later winning: the user's file ([`config_dir`]:
//! `$FREEHOLD_HOME`, else `$XDG_CONFIG_HOME/freehold`, else
//! `~/.config/freehold`), then the nearest `.freehold/config.toml`
//! from the working directory up; then `FREEHOLD_*` variables; then flags.
//! `--config FILE` or `FREEHOLD_CONFIG=FILE` replaces the two file layers
//! with that one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use freehold_llm::catalog::ModelOverride;
use freehold_llm::config::ProviderConfig;
use freehold_llm::router::{AliasTarget, RouterSettings};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The model used when `--model` is not given (`provider:model` or an alias).
    #[serde(default)]
    pub(crate) default_model: Option<String>,
    /// `[providers.NAME]` tables.
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, ProviderConfig>,
    /// `[aliases]`: a name for a model, or a fallback chain of models.
    #[serde(default)]
    pub(crate) aliases: BTreeMap<String, AliasTarget>,
    /// `[models."provider:model"]`: catalog overrides (context, prices).
    #[serde(default)]
    pub(crate) models: BTreeMap<String, ModelOverride>,
    /// `[router]`: health-check settings.
    #[serde(default)]
    pub(crate) router: RouterSettings,
    /// `[agent]`: the coding agent's defaults.
    #[serde(default)]
    pub(crate) agent: AgentConfig,
    /// `[gateway]`: `freehold serve`.
    #[serde(default)]
    pub(crate) gateway: freehold_gateway::settings::GatewaySettings,
}

/// The `[agent]` table: defaults for `freehold`, `freehold -p` and `run`;
/// flags override them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentConfig {
    /// `default`, `acceptEdits`, `plan` or `bypassPermissions`.
    pub(crate) permission_mode: Option<String>,
    /// Rules that allow calls without asking (`shell(git status:*)`).
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// Rules that refuse calls; they beat `allow`.
    #[serde(default)]
    pub(crate) deny: Vec<String>,
    /// The most model calls for one task.
    pub(crate) max_turns: Option<u32>,
    /// The context budget in tokens (default: the model's window, at most
    /// 16,384 for local models).
    pub(crate) context_window: Option<u32>,
    /// The most tokens one answer may have.
    pub(crate) max_output_tokens: Option<u32>,
    /// Sampling temperature (default 0.2 for local models, the provider's
    /// own otherwise).
    pub(crate) temperature: Option<f32>,
    /// Default time limit of a shell command, in seconds.
    pub(crate) shell_timeout_secs: Option<u64>,
    /// Scaffolding for small models: each task's first call must be a tool
    /// call, and an answer that shows code without changing a file is sent
    /// back once (default: on for local models, off otherwise).
    pub(crate) guided: Option<bool>,
}

/// The configuration with the files it came from.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) config: ConfigFile,
    pub(crate) files: Vec<PathBuf>,
}

/// Loads the configuration: `explicit` (from `--config` or
/// `FREEHOLD_CONFIG`) alone, or the user and project layers.
pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<Loaded> {
    let files = match explicit {
        Some(path) => {
            if !path.is_file() {
                bail!(
                    "configuration file {} does not exist (named by --config or FREEHOLD_CONFIG)",
                    path.display()
                );
            }
            vec![path.to_path_buf()]
        }
        None => default_layers(),
    };
    let mut merged = toml::Table::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read configuration file {}", file.display()))?;
        // Each layer is checked on its own first, so that an error names the
        // file and line it is in.
        parse(&text, file)?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("invalid TOML in {}", file.display()))?;
        merge(&mut merged, table);
    }
    let mut config: ConfigFile = toml::Value::Table(merged)
        .try_into()
        .context("the merged configuration layers are inconsistent")?;
    if let Some(model) = std::env::var("FREEHOLD_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty())
    {
        config.default_model = Some(model);
    }
    Ok(Loaded { config, files })
}

/// Parses one file, reporting errors as `FILE:LINE:COLUMN: key `a.b`: what was wrong`.
pub(crate) fn parse(text: &str, file: &Path) -> anyhow::Result<ConfigFile> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        let location = inner
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        let key = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" key `{path}`:")
        };
        anyhow::anyhow!(
            "invalid configuration at {}{location}:{key} {}",
            file.display(),
            inner.message().trim()
        )
    })
}

/// Where `[providers.NAME]` (or another `[SECTION.NAME]` table) is defined:
/// `FILE:LINE`, from the last layer that defines it, for errors found after
/// parsing (a provider without a base URL, say).
pub(crate) fn locate_table(files: &[PathBuf], section: &str, name: &str) -> Option<String> {
    let headers = [
        format!("[{section}.{name}]"),
        format!("[{section}.\"{name}\"]"),
        format!("[{section}.'{name}']"),
    ];
    files.iter().rev().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().position(|line| {
            let line = line.trim();
            headers
                .iter()
                .any(|header| line.starts_with(header.as_str()))
        })?;
        Some(format!("{}:{}", file.display(), line + 1))
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Merges `layer` into `base`: tables merge key by key, anything else is
/// replaced.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(layer_table)) => {
                merge(base_table, layer_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The user's configuration directory.
pub(crate) fn config_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("FREEHOLD_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home));
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("freehold"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config").join("freehold"))
}

fn default_layers() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(user) = config_dir().map(|dir| dir.join("config.toml"))
        && user.is_file()
    {
        files.push(user);
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Some(project) = cwd
            .ancestors()
            .map(|dir| dir.join(".freehold").join("config.toml"))
            .find(|path| path.is_file())
        && !files.contains(&project)
    {
        files.push(project);
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse(text, Path::new("/etc/f.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bad_kind_names_file_line_key_and_expectation() {
        let text =
            "[providers.gpu-box]\nkind = \"openia\"\nbase_url = \"http://10.0.0.5:8000/v1\"\n";
        let error = error_of(text);
        assert!(
            error.starts_with("invalid configuration at /etc/f.toml:2:"),
            "{error}"
        );
        assert!(error.contains("key `providers.gpu-box.kind`"), "{error}");
        assert!(error.contains("unknown variant `openia`"), "{error}");
        assert!(error.contains("`openai`"), "{error}");
    }

    #[test]
    fn an_unknown_key_and_a_wrong_type_are_named() {
        let error = error_of("[providers.x]\nkind = \"openai\"\nbase_ur1 = \"http://h\"\n");
        assert!(error.contains(":3:"), "{error}");
        assert!(error.contains("unknown field `base_ur1`"), "{error}");
        let error = error_of("[providers.x]\nkind = \"openai\"\nmax_retries = \"three\"\n");
        assert!(error.contains("key `providers.x.max_retries`"), "{error}");
        assert!(error.contains(":3:"), "{error}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let error = error_of("default_model = \"a\"\n[providers\n");
        assert!(error.contains("/etc/f.toml:2:"), "{error}");
    }

    /// Every TOML example in the documentation parses, and every provider in
    /// it resolves: the docs promise working configurations.
    #[test]
    fn documented_configurations_are_valid() {
        let docs = [
            (
                "docs/providers.md",
                include_str!("../../../docs/providers.md"),
            ),
            (
                "docs/configuration.md",
                include_str!("../../../docs/configuration.md"),
            ),
            ("README.md", include_str!("../../../README.md")),
        ];
        let mut blocks = 0;
        for (name, text) in docs {
            for block in text.split("```toml\n").skip(1) {
                let block = block.split("```").next().unwrap();
                let config =
                    parse(block, Path::new(name)).unwrap_or_else(|e| panic!("{e}\n{block}"));
                for (provider, settings) in &config.providers {
                    settings
                        .resolve(provider)
                        .unwrap_or_else(|e| panic!("{name}: {e}\n{block}"));
                }
                blocks += 1;
            }
        }
        assert!(blocks >= 10, "only {blocks} examples found");
    }

    #[test]
    fn layers_merge_tables_and_replace_values() {
        let mut base: toml::Table = toml::from_str("a = 1\n[t]\nx = 1\ny = 2\n").unwrap();
        let layer: toml::Table = toml::from_str("a = 2\n[t]\ny = 3\n").unwrap();
        merge(&mut base, layer);
        let expected: toml::Table = toml::from_str("a = 2\n[t]\nx = 1\ny = 3\n").unwrap();
        assert_eq!(base, expected);
    }
}
