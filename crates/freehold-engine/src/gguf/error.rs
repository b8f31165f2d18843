//! Errors from reading a GGUF header.

use std::fmt;
use std::io;
use std::path::Path;
use std::path::PathBuf;

/// Reading a GGUF header failed: the file could not be read, is not GGUF,
/// is truncated or corrupt, or declares sizes beyond this reader's limits.
///
/// Its message starts with the file's path when there is one. Use
/// [`GgufError::kind`] to tell the cases apart.
#[derive(Debug)]
pub struct GgufError {
    path: Option<PathBuf>,
    kind: GgufErrorKind,
}

impl GgufError {
    pub(crate) fn new(kind: GgufErrorKind) -> Self {
        Self { path: None, kind }
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &GgufErrorKind {
        &self.kind
    }

    /// The file being read, when the header came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for GgufError {}

impl From<GgufErrorKind> for GgufError {
    fn from(kind: GgufErrorKind) -> Self {
        Self::new(kind)
    }
}

/// The cases of [`GgufError`]. Offsets count bytes from the start of the
/// file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufErrorKind {
    /// The file could not be opened.
    #[error("cannot open the model file: {0}")]
    Open(io::Error),

    /// Reading failed for a reason other than the file ending.
    #[error("cannot read the GGUF header at byte {offset}: {error}")]
    Read {
        /// Where the read started.
        offset: u64,
        /// The I/O error.
        error: io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "not a GGUF file (it starts with {found:?}, not \"GGUF\"); \
         pass a .gguf model file"
    )]
    NotGguf {
        /// The first bytes of the file, lossily decoded.
        found: String,
    },

    /// The version field reads as a small number only with its bytes
    /// swapped: a big-endian GGUF file.
    #[error(
        "this GGUF file is big-endian (version {0}); only little-endian files are \
         supported, so download the little-endian build of the model"
    )]
    BigEndian(u32),

    /// The GGUF version is not 2 or 3.
    #[error(
        "unsupported GGUF version {0} (this reader understands versions 2 and 3); \
         convert the model again with a current llama.cpp"
    )]
    UnsupportedVersion(u32),

    /// The file ends inside the header.
    #[error(
        "the file ends inside the GGUF header (at byte {offset}, reading {what}); \
         it is truncated or corrupt, so download it again"
    )]
    Truncated {
        /// How far the reader got.
        offset: u64,
        /// What it was reading.
        what: String,
    },

    /// A declared length or count is beyond a limit of this reader; nothing
    /// was allocated for it.
    #[error(
        "{what} is {value} at byte {offset}, over this reader's limit of {limit}; \
         the file is corrupt or not a model it accepts"
    )]
    LimitExceeded {
        /// What was too large (`string length in metadata key "…"`…).
        what: String,
        /// The value found.
        value: u64,
        /// The limit, in words (`1 MiB`, `10000000 elements`…).
        limit: String,
        /// Where the value was read.
        offset: u64,
    },

    /// A metadata value type tag is not one GGUF defines.
    #[error(
        "unknown metadata value type {tag} at byte {offset}; \
         the file is corrupt or from a newer GGUF version"
    )]
    UnknownValueType {
        /// The tag found.
        tag: u32,
        /// Where it was read.
        offset: u64,
    },

    /// A bool value byte is neither 0 nor 1.
    #[error("invalid bool byte {byte} at byte {offset} (must be 0 or 1); the file is corrupt")]
    InvalidBool {
        /// The byte found.
        byte: u8,
        /// Where it was read.
        offset: u64,
    },

    /// The same metadata key appears twice.
    #[error("metadata key {0:?} appears more than once; the file is corrupt")]
    DuplicateKey(String),

    /// The same tensor name appears twice.
    #[error("tensor {0:?} appears more than once; the file is corrupt")]
    DuplicateTensor(String),

    /// A tensor has more dimensions than GGML supports.
    #[error("tensor {name:?} has {dims} dimensions, more than the {max} GGML supports")]
    TooManyDimensions {
        /// The tensor.
        name: String,
        /// Its declared number of dimensions.
        dims: u32,
        /// The most allowed.
        max: u32,
    },

    /// `general.alignment` is not a usable alignment.
    #[error("general.alignment is {0}, but it must be a non-zero power of two")]
    InvalidAlignment(String),
}
