//! What is known about models: context windows, output limits and prices.
//!
//! The built-in table lives in `data/models.toml`; configuration overrides
//! any of its fields per model with a [`ModelOverride`]. Keys are
//! `provider:model`, split at the first `:` (`ollama:qwen3:8b` is model
//! `qwen3:8b` of provider `ollama`).
//!
//! A price is either known ([`Pricing`], which may be zero: local models are
//! free) or unknown (`None`). An unknown price is never treated as zero.
//!
//! ```
//! use freehold_llm::catalog::Catalog;
//!
//! let catalog = Catalog::builtin().expect("the built-in catalog parses");
//! let gpt5 = catalog.lookup("openai", "gpt-5").expect("gpt-5 is listed");
//! assert!(gpt5.pricing.is_some_and(|price| price.input > 0.0));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The built-in catalog's source text.
const BUILTIN: &str = include_str!("../data/models.toml");

/// Why a catalog could not be built or changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML text does not parse, or has a field this crate does not know.
    #[error("the model catalog is not valid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    /// A key is not of the form `provider:model`.
    #[error("model key `{key}` must be `provider:model`, both parts non-empty")]
    InvalidKey {
        /// The offending key.
        key: String,
    },
    /// A model has an input price without an output price, or the reverse.
    #[error(
        "model `{key}` has an `{present}` price but no `{missing}` price; give both or neither"
    )]
    IncompletePrice {
        /// The model's key.
        key: String,
        /// The price that is there.
        present: &'static str,
        /// The price that is missing.
        missing: &'static str,
    },
    /// A price is negative, infinite or not a number.
    #[error("model `{key}` has an invalid `{field}` price {value}: prices must be finite and >= 0")]
    InvalidPrice {
        /// The model's key.
        key: String,
        /// Which price.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A long-prompt price for a model without prices of its own, or one
    /// that starts at no prompt size.
    #[error("model `{key}` has an invalid `long_prompt`: {reason}")]
    InvalidLongPrompt {
        /// The model's key.
        key: String,
        /// What is wrong, and what to give instead.
        reason: &'static str,
    },
}

/// USD prices per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pricing {
    /// Uncached input tokens.
    pub input: f64,
    /// Input tokens read from the prompt cache (`None`: charged as `input`).
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache (`None`: charged as `input`).
    pub cache_write: Option<f64>,
    /// Output tokens, reasoning included.
    pub output: f64,
    /// Higher prices for every token of a request whose prompt is longer
    /// than a size (Gemini 2.5 Pro's, and Claude's with the 1M-token
    /// context, past 200,000 input tokens); `None`: one price whatever the
    /// size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_prompt: Option<LongPromptPricing>,
}

/// The prices of [`Pricing::long_prompt`], USD per million tokens; also
/// how they are given, as `[models."provider:model".long_prompt]` in the
/// catalog or the configuration:
///
/// ```toml
/// [models."gemini:gemini-2.5-pro".long_prompt]
/// above = 200_000
/// input = 2.50
/// output = 15.0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPromptPricing {
    /// They apply to requests of more input tokens than this (cached and
    /// cache-write tokens included).
    #[serde(rename(deserialize = "above"))]
    pub above_input_tokens: u64,
    /// Uncached input tokens.
    pub input: f64,
    /// Input tokens read from the prompt cache (`None`: charged as `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache (`None`: charged as `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Output tokens, reasoning included.
    pub output: f64,
}

impl Pricing {
    /// The prices a request of `input_tokens` input tokens is charged:
    /// the long-prompt ones past their size, these otherwise.
    pub fn for_input_tokens(&self, input_tokens: u64) -> Pricing {
        match self.long_prompt {
            Some(long) if input_tokens > long.above_input_tokens => Pricing {
                input: long.input,
                cached_input: long.cached_input,
                cache_write: long.cache_write,
                output: long.output,
                long_prompt: None,
            },
            _ => *self,
        }
    }

    /// Free: every price zero (local models).
    pub const FREE: Pricing = Pricing {
        input: 0.0,
        cached_input: Some(0.0),
        cache_write: Some(0.0),
        output: 0.0,
        long_prompt: None,
    };
}

/// What the catalog knows of one model; every field may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelEntry {
    /// The context window in tokens.
    pub context_window: Option<u32>,
    /// The most output tokens one answer may have.
    pub max_output_tokens: Option<u32>,
    /// The prices; `None` means unknown, not free.
    pub pricing: Option<Pricing>,
}

/// Configuration for one model, replacing the fields it sets.
///
/// The same shape is used by `data/models.toml`:
///
/// ```toml
/// [models."openai:gpt-5"]
/// context_window = 400_000
/// input = 1.25
/// cached_input = 0.125
/// output = 10.0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverride {
    /// The context window in tokens.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// The most output tokens one answer may have.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// USD per million uncached input tokens.
    #[serde(default)]
    pub input: Option<f64>,
    /// USD per million cached input tokens.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// USD per million tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per million output tokens.
    #[serde(default)]
    pub output: Option<f64>,
    /// Higher prices past a prompt size, replacing any the model had.
    #[serde(default)]
    pub long_prompt: Option<LongPromptPricing>,
    /// Whether to recover tool calls this model prints as text (overrides
    /// the provider's `recover_text_tool_calls`). Not a catalog field: the
    /// provider factory reads it.
    #[serde(default)]
    pub recover_text_tool_calls: Option<bool>,
}

/// Known models by `provider:model` key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    entries: BTreeMap<String, ModelEntry>,
}

/// The file format: one table of models.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    models: BTreeMap<String, ModelOverride>,
}

impl Catalog {
    /// An empty catalog: every model unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The catalog shipped with this crate (`data/models.toml`).
    ///
    /// # Errors
    /// Only if the shipped file is broken, which a test rules out.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_toml(BUILTIN)
    }

    /// Parses a catalog from TOML text with a `[models."provider:model"]`
    /// table per model.
    ///
    /// # Errors
    /// Invalid TOML, unknown fields, malformed keys, an input price without an
    /// output price (or the reverse), or a negative or non-finite price.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        let mut catalog = Self::new();
        for (key, entry) in &file.models {
            catalog.apply_override(key, entry)?;
        }
        Ok(catalog)
    }

    /// Adds or replaces a whole entry.
    ///
    /// # Errors
    /// The key is not `provider:model`, or a price is invalid.
    pub fn insert(&mut self, key: &str, entry: ModelEntry) -> Result<(), CatalogError> {
        split_key(key)?;
        if let Some(pricing) = &entry.pricing {
            validate_pricing(key, pricing)?;
        }
        self.entries.insert(key.to_owned(), entry);
        Ok(())
    }

    /// Replaces the fields `changes` sets on the entry `key`, creating the
    /// entry when it does not exist. Setting one price of a model without
    /// prices needs both `input` and `output`.
    ///
    /// # Errors
    /// The key is not `provider:model`, a price is negative or not finite, or
    /// the result would have an input price without an output price.
    pub fn apply_override(
        &mut self,
        key: &str,
        changes: &ModelOverride,
    ) -> Result<(), CatalogError> {
        split_key(key)?;
        let mut entry = self.entries.get(key).cloned().unwrap_or_default();
        if let Some(window) = changes.context_window {
            entry.context_window = Some(window);
        }
        if let Some(max) = changes.max_output_tokens {
            entry.max_output_tokens = Some(max);
        }
        let sets_price = changes.input.is_some()
            || changes.output.is_some()
            || changes.cached_input.is_some()
            || changes.cache_write.is_some();
        if sets_price {
            let base = entry.pricing;
            let input = changes.input.or(base.map(|price| price.input));
            let output = changes.output.or(base.map(|price| price.output));
            let (input, output) = match (input, output) {
                (Some(input), Some(output)) => (input, output),
                (Some(_), None) => return Err(incomplete(key, "input", "output")),
                (None, Some(_)) => return Err(incomplete(key, "output", "input")),
                (None, None) => {
                    let present = if changes.cached_input.is_some() {
                        "cached_input"
                    } else {
                        "cache_write"
                    };
                    return Err(incomplete(key, present, "input"));
                }
            };
            let pricing = Pricing {
                input,
                cached_input: changes
                    .cached_input
                    .or(base.and_then(|price| price.cached_input)),
                cache_write: changes
                    .cache_write
                    .or(base.and_then(|price| price.cache_write)),
                output,
                long_prompt: base.and_then(|price| price.long_prompt),
            };
            validate_pricing(key, &pricing)?;
            entry.pricing = Some(pricing);
        }
        if let Some(long) = changes.long_prompt {
            let Some(pricing) = &mut entry.pricing else {
                return Err(CatalogError::InvalidLongPrompt {
                    key: key.to_owned(),
                    reason: "the model has no prices of its own; give its `input` and `output` too",
                });
            };
            pricing.long_prompt = Some(long);
            validate_pricing(key, pricing)?;
        }
        self.entries.insert(key.to_owned(), entry);
        Ok(())
    }

    /// The entry stored under exactly `key` (`provider:model`).
    pub fn get(&self, key: &str) -> Option<&ModelEntry> {
        self.entries.get(key)
    }

    /// What is known of `model` served by `provider`.
    ///
    /// Tried in order, the first hit wins:
    /// 1. the exact key `provider:model`;
    /// 2. the same provider with a model id that differs only by a `-latest`
    ///    or `-YYYYMMDD` suffix (`claude-3-5-haiku-20241022` finds
    ///    `claude-3-5-haiku-latest`), when exactly one entry matches;
    /// 3. the model id alone under any provider (a self-hosted `gpu-box`
    ///    serving `qwen3:8b`), when exactly one entry has it;
    /// 4. the same, ignoring the suffix, when exactly one entry matches.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&ModelEntry> {
        if let Some(entry) = self.entries.get(&format!("{provider}:{model}")) {
            return Some(entry);
        }
        let base = base_model(model);
        self.unique(|p, m| p == provider && base_model(m) == base)
            .or_else(|| self.unique(|_, m| m == model))
            .or_else(|| self.unique(|_, m| base_model(m) == base))
    }

    /// Every entry, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelEntry)> {
        self.entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// How many models are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no model is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The one entry whose `(provider, model)` satisfies `matches`, if exactly
    /// one does.
    fn unique(&self, matches: impl Fn(&str, &str) -> bool) -> Option<&ModelEntry> {
        let mut found = self.entries.iter().filter(|(key, _)| {
            key.split_once(':')
                .is_some_and(|(provider, model)| matches(provider, model))
        });
        let first = found.next()?;
        found.next().is_none().then_some(first.1)
    }
}

/// Splits `provider:model` at the first `:`.
fn split_key(key: &str) -> Result<(&str, &str), CatalogError> {
    match key.split_once(':') {
        Some((provider, model)) if !provider.is_empty() && !model.is_empty() => {
            Ok((provider, model))
        }
        _ => Err(CatalogError::InvalidKey {
            key: key.to_owned(),
        }),
    }
}

/// A model id without a trailing `-latest` or `-YYYYMMDD`.
fn base_model(model: &str) -> &str {
    if let Some(base) = model.strip_suffix("-latest") {
        return base;
    }
    match model.rsplit_once('-') {
        Some((base, date)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => model,
    }
}

fn incomplete(key: &str, present: &'static str, missing: &'static str) -> CatalogError {
    CatalogError::IncompletePrice {
        key: key.to_owned(),
        present,
        missing,
    }
}

fn validate_pricing(key: &str, pricing: &Pricing) -> Result<(), CatalogError> {
    let long = pricing.long_prompt;
    if long.is_some_and(|long| long.above_input_tokens == 0) {
        return Err(CatalogError::InvalidLongPrompt {
            key: key.to_owned(),
            reason: "`above` must be more than 0 (the input tokens past which its prices apply)",
        });
    }
    let fields = [
        ("input", Some(pricing.input)),
        ("cached_input", pricing.cached_input),
        ("cache_write", pricing.cache_write),
        ("output", Some(pricing.output)),
        ("long_prompt.input", long.map(|long| long.input)),
        (
            "long_prompt.cached_input",
            long.and_then(|long| long.cached_input),
        ),
        (
            "long_prompt.cache_write",
            long.and_then(|long| long.cache_write),
        ),
        ("long_prompt.output", long.map(|long| long.output)),
    ];
    for (field, value) in fields {
        match value {
            Some(value) if !(value.is_finite() && value >= 0.0) => {
                return Err(CatalogError::InvalidPrice {
                    key: key.to_owned(),
                    field,
                    value,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_prices_gpt5() {
        let catalog = Catalog::builtin().unwrap();
        assert!(catalog.len() >= 30, "only {} models", catalog.len());
        let gpt5 = catalog.lookup("openai", "gpt-5").unwrap();
        assert_eq!(
            gpt5,
            &ModelEntry {
                context_window: Some(400_000),
                max_output_tokens: Some(128_000),
                pricing: Some(Pricing {
                    input: 1.25,
                    cached_input: Some(0.125),
                    cache_write: None,
                    output: 10.0,
                    long_prompt: None,
                }),
            }
        );
    }

    #[test]
    fn builtin_catalog_lists_every_required_model() {
        let catalog = Catalog::builtin().unwrap();
        let required = [
            "openai:gpt-5",
            "openai:gpt-5-mini",
            "openai:gpt-5-nano",
            "openai:gpt-4.1",
            "openai:gpt-4.1-mini",
            "openai:gpt-4o",
            "openai:gpt-4o-mini",
            "openai:o3",
            "openai:o4-mini",
            "anthropic:claude-opus-4-5",
            "anthropic:claude-opus-4-1",
            "anthropic:claude-sonnet-4-5",
            "anthropic:claude-haiku-4-5",
            "anthropic:claude-3-5-haiku-latest",
            "gemini:gemini-2.5-pro",
            "gemini:gemini-2.5-flash",
            "gemini:gemini-2.5-flash-lite",
            "deepseek:deepseek-chat",
            "deepseek:deepseek-reasoner",
            "mistral:mistral-large-latest",
            "mistral:mistral-medium-latest",
            "mistral:codestral-latest",
            "groq:llama-3.3-70b-versatile",
            "ollama:qwen2.5-coder:7b",
            "ollama:qwen3:8b",
            "local:smollm2-135m",
        ];
        for key in required {
            let entry = catalog.get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(
                entry.context_window.is_some(),
                "{key} has no context window"
            );
        }
        // Every Anthropic model has a cache-write price; every priced model's
        // cache prices are below its input price.
        for (key, entry) in catalog.iter() {
            if key.starts_with("anthropic:") {
                assert!(entry.pricing.unwrap().cache_write.is_some(), "{key}");
            }
            if let Some(price) = entry.pricing {
                assert!(price.cached_input.unwrap_or(0.0) <= price.input, "{key}");
            }
        }
    }

    #[test]
    fn local_models_are_free_not_unknown() {
        let catalog = Catalog::builtin().unwrap();
        let qwen = catalog.lookup("ollama", "qwen3:8b").unwrap();
        assert_eq!(qwen.context_window, Some(40_960));
        let price = qwen.pricing.unwrap();
        assert_eq!((price.input, price.output), (0.0, 0.0));
        let smol = catalog.lookup("local", "smollm2-135m").unwrap();
        assert_eq!(smol.pricing.map(|price| price.output), Some(0.0));
    }

    #[test]
    fn unpriced_and_unlisted_models_have_unknown_prices() {
        let catalog = Catalog::builtin().unwrap();
        let large = catalog.lookup("mistral", "mistral-large-latest").unwrap();
        assert_eq!(large.pricing, None);
        assert!(large.context_window.is_some());
        assert_eq!(catalog.lookup("openai", "gpt-99"), None);
    }

    #[test]
    fn lookup_falls_back_to_dated_ids_and_to_the_model_alone() {
        let catalog = Catalog::builtin().unwrap();
        let latest = catalog.get("anthropic:claude-3-5-haiku-latest").unwrap();
        let dated = catalog
            .lookup("anthropic", "claude-3-5-haiku-20241022")
            .unwrap();
        assert_eq!(dated, latest);
        let sonnet = catalog.get("anthropic:claude-sonnet-4-5").unwrap();
        assert_eq!(
            catalog.lookup("anthropic", "claude-sonnet-4-5-20250929"),
            Some(sonnet)
        );
        // A self-hosted server named `gpu-box` serving an Ollama model.
        let qwen = catalog.get("ollama:qwen3:8b").unwrap();
        assert_eq!(catalog.lookup("gpu-box", "qwen3:8b"), Some(qwen));
        // A model id listed twice is ambiguous without its provider.
        let mut twice = Catalog::new();
        twice.insert("a:m", ModelEntry::default()).unwrap();
        twice.insert("b:m", ModelEntry::default()).unwrap();
        assert_eq!(twice.lookup("c", "m"), None);
        assert!(twice.lookup("a", "m").is_some());
    }

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let mut catalog = Catalog::builtin().unwrap();
        let changes: ModelOverride = toml::from_str("input = 1.0\ncontext_window = 1000").unwrap();
        catalog.apply_override("openai:gpt-5", &changes).unwrap();
        assert_eq!(
            catalog.get("openai:gpt-5"),
            Some(&ModelEntry {
                context_window: Some(1000),
                max_output_tokens: Some(128_000),
                pricing: Some(Pricing {
                    input: 1.0,
                    cached_input: Some(0.125),
                    cache_write: None,
                    output: 10.0,
                    long_prompt: None,
                }),
            })
        );
    }

    #[test]
    fn override_creates_entries_and_needs_both_prices() {
        let mut catalog = Catalog::new();
        let only_input = ModelOverride {
            input: Some(1.0),
            ..ModelOverride::default()
        };
        let error = catalog
            .apply_override("vllm:my-model", &only_input)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "model `vllm:my-model` has an `input` price but no `output` price; give both or neither"
        );
        let both = ModelOverride {
            input: Some(1.0),
            output: Some(2.0),
            ..ModelOverride::default()
        };
        catalog.apply_override("vllm:my-model", &both).unwrap();
        assert_eq!(
            catalog.get("vllm:my-model").unwrap().pricing,
            Some(Pricing {
                input: 1.0,
                cached_input: None,
                cache_write: None,
                output: 2.0,
                long_prompt: None,
            })
        );
    }

    #[test]
    fn rejects_bad_keys_fields_and_prices() {
        let error =
            Catalog::from_toml("[models.\"gpt-5\"]\ninput = 1.0\noutput = 2.0").unwrap_err();
        assert!(matches!(error, CatalogError::InvalidKey { ref key } if key == "gpt-5"));
        let error = Catalog::from_toml("[models.\"a:b\"]\nprice = 1.0").unwrap_err();
        assert!(matches!(error, CatalogError::Parse(_)), "{error}");
        assert!(error.to_string().contains("price"), "{error}");
        let error = Catalog::from_toml("[models.\"a:b\"]\ninput = -1.0\noutput = 2.0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "model `a:b` has an invalid `input` price -1: prices must be finite and >= 0"
        );
        let error = Catalog::from_toml("[models.\"a:b\"]\ncached_input = 1.0").unwrap_err();
        assert!(matches!(error, CatalogError::IncompletePrice { .. }));
    }

    #[test]
    fn integer_prices_parse() {
        let catalog = Catalog::from_toml("[models.\"a:b\"]\ninput = 3\noutput = 15").unwrap();
        let price = catalog.get("a:b").unwrap().pricing.unwrap();
        assert_eq!((price.input, price.output), (3.0, 15.0));
    }

    #[test]
    fn long_prompt_prices_come_from_the_catalog_and_configuration() {
        let catalog = Catalog::builtin().unwrap();
        let pro = catalog.lookup("gemini", "gemini-2.5-pro").unwrap();
        let long = pro.pricing.unwrap().long_prompt.unwrap();
        assert_eq!(long.above_input_tokens, 200_000);
        assert_eq!((long.input, long.output), (2.50, 15.0));
        let sonnet = catalog.lookup("anthropic", "claude-sonnet-4-5").unwrap();
        assert!(sonnet.pricing.unwrap().long_prompt.is_some());

        let mut configured = Catalog::from_toml(
            "[models.\"vllm:big\"]\ninput = 1.0\noutput = 2.0\n\
             long_prompt = { above = 1000, input = 3.0, output = 4.0 }\n",
        )
        .unwrap();
        let price = configured.get("vllm:big").unwrap().pricing.unwrap();
        assert_eq!(price.for_input_tokens(1000).input, 1.0);
        assert_eq!(price.for_input_tokens(1001).input, 3.0);
        assert_eq!(price.for_input_tokens(1001).output, 4.0);
        // Changing the usual prices keeps the long-prompt ones.
        configured
            .apply_override(
                "vllm:big",
                &ModelOverride {
                    input: Some(1.5),
                    ..ModelOverride::default()
                },
            )
            .unwrap();
        let price = configured.get("vllm:big").unwrap().pricing.unwrap();
        assert_eq!(price.input, 1.5);
        assert_eq!(price.for_input_tokens(5000).input, 3.0);

        for (toml, says) in [
            (
                "[models.\"a:b\"]\nlong_prompt = { above = 10, input = 1.0, output = 1.0 }\n",
                "has no prices of its own",
            ),
            (
                "[models.\"a:b\"]\ninput = 1.0\noutput = 1.0\n\
                 long_prompt = { above = 0, input = 1.0, output = 1.0 }\n",
                "`above` must be more than 0",
            ),
            (
                "[models.\"a:b\"]\ninput = 1.0\noutput = 1.0\n\
                 long_prompt = { above = 10, input = -1.0, output = 1.0 }\n",
                "long_prompt.input",
            ),
        ] {
            let error = Catalog::from_toml(toml).unwrap_err().to_string();
            assert!(error.contains(says), "{toml}: {error}");
        }
    }
}
