//! GGUF metadata: what a model file says about itself, read without
//! llama.cpp and without reading the tensor data.
//!
//! [`read_metadata`] reads the header of a GGUF file (versions 2 and 3,
//! little-endian): the metadata key/value pairs as typed [`Value`]s and the
//! [`TensorInfo`] of every tensor (name, dimensions, GGML type, offset).
//! [`GgufFile`] has accessors for the well-known keys, a [`Summary`] for
//! `freehold models list`, and [`describe`] formats everything for
//! `freehold models info`.
//!
//! A GGUF file is untrusted input. Every declared length and count is checked
//! before anything is allocated for it: a string may be at most
//! [`MAX_STRING_LEN`] bytes, an array at most [`MAX_ARRAY_LEN`] elements and
//! [`MAX_ARRAY_DEPTH`] levels deep, and the decoded header at most
//! [`MAX_HEADER_BYTES`]; a file beyond them, truncated, or corrupt gives a
//! [`GgufError`], never a panic.
//!
//! ```no_run
//! use std::path::Path;
//!
//! let gguf = freehold_engine::gguf::read_metadata(Path::new("model.gguf"))?;
//! let summary = gguf.summary();
//! println!(
//!     "{} {} {}",
//!     summary.architecture.as_deref().unwrap_or("?"),
//!     freehold_engine::gguf::human_count(summary.parameters),
//!     summary.quantization.as_deref().unwrap_or("?"),
//! );
//! # Ok::<(), freehold_engine::gguf::GgufError>(())
//! ```

mod describe;
mod error;
mod names;
mod read;
mod value;

use std::fs::File;
use std::io::BufReader;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

pub use describe::describe;
pub use describe::human_count;
pub use error::GgufError;
pub use error::GgufErrorKind;
pub use names::GgmlType;
pub use names::file_type_name;
pub use value::Array;
pub use value::Value;
pub use value::ValueType;

/// The longest string (key, value or tensor name) accepted, in bytes: 1 MiB.
pub const MAX_STRING_LEN: u64 = 1 << 20;

/// The most elements accepted in one array: 10 million.
pub const MAX_ARRAY_LEN: u64 = 10_000_000;

/// How deeply arrays may nest (an array of arrays is two levels).
pub const MAX_ARRAY_DEPTH: usize = 16;

/// The most decoded header accepted, in bytes (512 MiB): file bytes plus the
/// in-memory overhead of each string, array, key and tensor.
pub const MAX_HEADER_BYTES: u64 = 512 << 20;

/// The most tensors a header may declare.
pub const MAX_TENSORS: u64 = 1_000_000;

/// The most metadata keys a header may declare.
pub const MAX_METADATA_KEYS: u64 = 1_000_000;

/// The most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// The tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Architectures that only make embeddings.
const EMBEDDING_ARCHITECTURES: &[&str] = &[
    "bert",
    "gemma-embedding",
    "jina-bert-v2",
    "jina-bert-v3",
    "modern-bert",
    "neo-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "t5encoder",
];

/// Reads the GGUF header of the model file at `path`: metadata and tensor
/// infos, not tensor data.
///
/// # Errors
///
/// Fails when the file cannot be opened or read, is not a GGUF file, has a
/// version other than 2 or 3, is truncated or corrupt, or declares a length
/// or count beyond this module's limits. The message names the file.
pub fn read_metadata(path: &Path) -> Result<GgufFile, GgufError> {
    let file =
        File::open(path).map_err(|e| GgufError::new(GgufErrorKind::Open(e)).with_path(path))?;
    read_metadata_from(BufReader::new(file)).map_err(|e| e.with_path(path))
}

/// Reads a GGUF header from `reader`, which is left just past the tensor
/// infos. Reads are small, so pass a buffered reader.
///
/// # Errors
///
/// As [`read_metadata`], without a path in the message.
pub fn read_metadata_from(reader: impl Read) -> Result<GgufFile, GgufError> {
    read::read_header(reader).map_err(GgufError::new)
}

/// The header of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GgufFile {
    /// The GGUF format version (2 or 3).
    pub version: u32,
    /// The metadata key/value pairs, in file order; keys are unique.
    pub metadata: Vec<(String, Value)>,
    /// The tensor infos, in file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// The alignment of the tensor data (`general.alignment`, default 32).
    pub alignment: u64,
    /// Where the tensor data starts: the end of the header rounded up to
    /// the alignment. Tensor offsets count from here.
    pub data_offset: u64,
}

impl GgufFile {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find_map(|(k, value)| (k == key).then_some(value))
    }

    /// The value of `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The value of `key` if it is a non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture` (`llama`, `qwen2`, `bert`…).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`, the model's display name.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// `{arch}.context_length`: the context window the model was trained
    /// with, in tokens.
    pub fn context_length(&self) -> Option<u64> {
        self.arch_u64("context_length")
    }

    /// `{arch}.embedding_length`: the width of the hidden state.
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_u64("embedding_length")
    }

    /// `{arch}.block_count`: the number of layers.
    pub fn block_count(&self) -> Option<u64> {
        self.arch_u64("block_count")
    }

    /// `tokenizer.chat_template`, the Jinja chat template.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// The quantization named by `general.file_type` (`Q4_K_M`, `F16`…),
    /// `type N` for a number this reader does not know, or `None` when the
    /// key is absent.
    pub fn file_type(&self) -> Option<String> {
        let n = self.get_u64("general.file_type")?;
        Some(match file_type_name(n) {
            Some(name) => name.to_owned(),
            None => format!("type {n}"),
        })
    }

    /// The number of parameters: the sum over tensors of the product of
    /// their dimensions (saturating on absurd values).
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0, |sum: u64, t| sum.saturating_add(t.element_count()))
    }

    /// Whether this looks like an embedding model rather than a generative
    /// one: it declares `{arch}.pooling_type`, or its architecture only
    /// makes embeddings (`bert`, `nomic-bert`…).
    pub fn is_embedding_model(&self) -> bool {
        let Some(arch) = self.architecture() else {
            return false;
        };
        EMBEDDING_ARCHITECTURES.contains(&arch)
            || self.get(&format!("{arch}.pooling_type")).is_some()
    }

    /// The facts `freehold models list` shows. The quantization falls back
    /// to the most common tensor type (by elements) when
    /// `general.file_type` is absent.
    pub fn summary(&self) -> Summary {
        Summary {
            architecture: self.architecture().map(str::to_owned),
            name: self.name().map(str::to_owned),
            parameters: self.parameter_count(),
            quantization: self
                .file_type()
                .or_else(|| self.dominant_tensor_type().map(|t| t.to_string())),
            context_length: self.context_length(),
        }
    }

    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }

    /// The GGML type holding the most elements.
    fn dominant_tensor_type(&self) -> Option<GgmlType> {
        let mut totals: Vec<(GgmlType, u64)> = Vec::new();
        for tensor in &self.tensors {
            match totals.iter_mut().find(|(ty, _)| *ty == tensor.ggml_type) {
                Some((_, total)) => *total = total.saturating_add(tensor.element_count()),
                None => totals.push((tensor.ggml_type, tensor.element_count())),
            }
        }
        totals
            .into_iter()
            .max_by_key(|&(ty, total)| (total, std::cmp::Reverse(ty)))
            .map(|(ty, _)| ty)
    }
}

/// One tensor's description in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor name (`blk.0.attn_q.weight`…).
    pub name: String,
    /// The dimensions in GGML order: the first is the innermost (a row's
    /// length). At most [`MAX_DIMS`].
    pub dims: Vec<u64>,
    /// How the elements are stored.
    pub ggml_type: GgmlType,
    /// Where the data starts, relative to [`GgufFile::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// The number of elements: the product of the dimensions (saturating).
    pub fn element_count(&self) -> u64 {
        self.dims.iter().fold(1, |n: u64, &d| n.saturating_mul(d))
    }
}

/// What `freehold models list` shows about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// The number of parameters; see [`GgufFile::parameter_count`].
    pub parameters: u64,
    /// The quantization (`Q4_K_M`…); see [`GgufFile::summary`].
    pub quantization: Option<String>,
    /// The trained context window, in tokens.
    pub context_length: Option<u64>,
}
