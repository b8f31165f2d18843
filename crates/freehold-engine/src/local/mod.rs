//! The `local` provider: GGUF models run in process by llama.cpp (through
//! `llama-cpp-2`).
//!
//! A request's `model` is an installed store name (`smollm2-135m`) or a path
//! to a `.gguf` file. Loaded models stay loaded for the life of the process,
//! one per path and GPU layer count, shared by every provider of the
//! process (a gateway's configuration reload builds new providers, and must
//! not load the same weights again); the llama.cpp backend is initialised
//! once per process. Each
//! generation runs on its own thread and sends events through a channel;
//! dropping the returned stream stops decoding within one token.
//!
//! - Prompts are rendered with the model's own chat template ([`template`]).
//! - Tool calls and JSON output are constrained by grammars (`tools.rs`).
//! - Contexts are kept in slots between requests so that a conversation's
//!   next turn evaluates only its new tokens (`slots.rs`).
//! - Embedding models (and others, mean-pooled) embed texts through
//!   [`Provider::embed`] (`embed.rs`).

mod embed;
mod generate;
mod slots;
pub mod template;
mod thinking;
mod tools;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use freehold_llm::{EventStream, Provider, collect_stream};
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo,
};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;

use crate::hardware::Hardware;
use crate::store::Store;

/// The provider's name.
pub const PROVIDER_NAME: &str = "local";

/// The answer length when a request sets no `max_tokens`, for a context
/// of `window` tokens: a quarter of it, 512 to 2,048 tokens (the coding
/// agent's share for local models). Clients of the gateway that never set
/// a limit (Codex) would otherwise have every answer cut short, and a
/// limit is still needed: the context allocated grows with it, and a
/// small model on a CPU that rambles to the end of a large window costs
/// minutes.
pub fn default_max_tokens(window: u32) -> u32 {
    (window / 4).clamp(512, 2048)
}

/// The temperature when a request sets none (0 means greedy decoding).
pub const DEFAULT_TEMPERATURE: f32 = 0.7;

/// How a [`LocalProvider`] runs models.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    /// Where installed models are found; `None`: [`Store::open_default`].
    pub store: Option<Store>,
    /// CPU threads for decoding; `None`: [`Hardware::default_threads`].
    pub threads: Option<usize>,
    /// The largest context to allocate, in tokens; `None`: the model's
    /// trained context.
    pub context_cap: Option<u32>,
    /// How many idle contexts to keep for prefix reuse; `None`:
    /// [`DEFAULT_SLOTS`]. 0 turns prefix caching off.
    pub slots: Option<usize>,
    /// Model layers to offload to a GPU; `None`: all of them when the
    /// binary has a GPU back end (llama.cpp's default). 0 keeps the model
    /// on the CPU. Without a GPU back end it changes nothing.
    pub gpu_layers: Option<u32>,
}

/// Idle contexts kept for prefix reuse when the settings name no number:
/// a few concurrent conversations without holding much memory.
pub const DEFAULT_SLOTS: usize = 4;

/// Runs GGUF models in process. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Option<Store>,
    threads: usize,
    context_cap: Option<u32>,
    gpu_layers: Option<u32>,
    slots: Arc<slots::SlotPool>,
    active: Arc<AtomicUsize>,
}

impl LocalProvider {
    /// A provider with these settings; nothing is loaded until a request.
    pub fn new(settings: LocalSettings) -> Self {
        let threads = settings
            .threads
            .unwrap_or_else(|| Hardware::probe().default_threads())
            .max(1);
        Self {
            inner: Arc::new(Inner {
                store: settings.store,
                threads,
                context_cap: settings.context_cap,
                gpu_layers: settings.gpu_layers,
                slots: Arc::new(slots::SlotPool::new(
                    settings.slots.unwrap_or(DEFAULT_SLOTS),
                )),
                active: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// How many generation threads are running now (for tests and status).
    pub fn active_generations(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// How many idle contexts are kept for prefix reuse now.
    pub fn idle_slots(&self) -> usize {
        self.inner.slots.idle_count()
    }

    fn store(&self) -> Result<Store, LlmError> {
        match &self.inner.store {
            Some(store) => Ok(store.clone()),
            None => Store::open_default().map_err(|e| error(ErrorKind::InvalidRequest, e)),
        }
    }

    /// The file a request's `model` names: a `.gguf` path or a store name.
    fn resolve(&self, model: &str) -> Result<PathBuf, LlmError> {
        let path = Path::new(model);
        if model.ends_with(".gguf") || path.components().count() > 1 {
            if path.is_file() {
                return Ok(path.to_path_buf());
            }
            return Err(error(
                ErrorKind::NotFound,
                format!("no model file at {}", path.display()),
            ));
        }
        match self.store()?.get(model) {
            Ok(Some(installed)) => Ok(installed.path),
            Ok(None) => Err(error(
                ErrorKind::NotFound,
                format!("model `{model}` is not installed (try `freehold models pull {model}`)"),
            )),
            Err(e) => Err(error(ErrorKind::InvalidRequest, e)),
        }
    }

    /// The cached model for `path`, loading it on first use. Models stay
    /// loaded for the process's life, shared by every provider, cached by
    /// the file's canonical path (two spellings of one file load it once)
    /// and its identity (a file replaced at the same path is loaded anew;
    /// context slots are matched by the model itself, so none made for the
    /// old file is reused).
    fn load(&self, path: &Path) -> Result<&'static LlamaModel, LlmError> {
        let backend = backend()?;
        let canonical = path.canonicalize();
        let path = canonical.as_deref().unwrap_or(path);
        // The file's identity too: a model pulled again to the same path
        // (a new revision) is loaded anew, not served from the old one.
        let file = std::fs::metadata(path)
            .map(|meta| FileIdentity::of(&meta))
            .map_err(|e| {
                error(
                    ErrorKind::InvalidRequest,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        let key = ModelKey {
            path: path.to_path_buf(),
            gpu_layers: self.inner.gpu_layers,
            file,
        };
        let mut models = loaded_models()
            .lock()
            .map_err(|_| error(ErrorKind::Server, "the model cache is poisoned"))?;
        if let Some(model) = models.get(&key) {
            return Ok(*model);
        }
        // The file at this path changed: forget the old copy (it stays in
        // memory, borrowed by contexts, until the process ends).
        let before = models.len();
        models.retain(|old, _| !(old.path == key.path && old.gpu_layers == key.gpu_layers));
        if models.len() < before {
            tracing::warn!(
                path = %path.display(),
                "the model file changed since it was loaded; loading it again (the old copy \
                 stays in memory until freehold restarts)"
            );
        }
        tracing::info!(path = %path.display(), gpu_layers = ?self.inner.gpu_layers, "loading model");
        let model = LlamaModel::load_from_file(backend, path, &model_params(self.inner.gpu_layers))
            .map_err(|e| {
                error(
                    ErrorKind::InvalidRequest,
                    format!("cannot load {}: {e}", path.display()),
                )
            })?;
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        models.insert(key, model);
        Ok(model)
    }
}

/// What identifies a loaded model: its canonical path, GPU layer count,
/// and the file's identity when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ModelKey {
    path: PathBuf,
    gpu_layers: Option<u32>,
    file: FileIdentity,
}

/// What tells one file at a path from another put there later: its size,
/// modification time and (on Unix) inode, so that a copy that keeps the
/// time (`cp -p`) is still seen as new.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileIdentity {
    size: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            size: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// The models loaded in this process. They are leaked on purpose: contexts
/// kept in slots borrow them for as long as the process lives. One cache
/// for the process, not one per provider, so that providers built again (a
/// configuration reload) reuse them.
type LoadedModels = Mutex<HashMap<ModelKey, &'static LlamaModel>>;

fn loaded_models() -> &'static LoadedModels {
    static MODELS: OnceLock<LoadedModels> = OnceLock::new();
    MODELS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// How to load a model: `gpu_layers` offloaded, or llama.cpp's default
/// (every layer, where a GPU back end is built in) when `None`.
pub(crate) fn model_params(gpu_layers: Option<u32>) -> LlamaModelParams {
    let params = LlamaModelParams::default();
    match gpu_layers {
        Some(layers) => params.with_n_gpu_layers(layers),
        None => params,
    }
}

/// The compute devices llama.cpp found, as `NAME (DESCRIPTION)`: the CPU
/// always, and each GPU when the binary has a GPU back end.
pub fn devices() -> Vec<String> {
    if backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect()
}

/// The process-wide llama.cpp backend, initialised on first use.
pub(crate) fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| error(ErrorKind::Server, format!("llama.cpp failed to start: {e}")))
}

/// Creating contexts in parallel is unsound in llama.cpp (it may write the
/// model's trained context), so every context creation of this provider
/// (chat slots and embeddings) takes this lock.
pub(crate) static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

pub(crate) fn error(kind: ErrorKind, message: impl ToString) -> LlmError {
    LlmError::new(kind, PROVIDER_NAME, message.to_string())
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities {
            streaming: true,
            tools: true,
            parallel_tool_calls: true,
            vision: false,
            reasoning: false,
            structured_output: true,
            // Each document is named in the text it reads.
            documents: false,
        }
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let this = self.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let path = this.resolve(&request.model)?;
            let model = this.load(&path)?;
            generate::prepare(model, &request, this.inner.threads, this.inner.context_cap)
        })
        .await
        .map_err(|e| error(ErrorKind::Server, e))??;
        Ok(generate::spawn(
            prepared,
            generate::Shared {
                backend: backend()?,
                slots: Arc::clone(&self.inner.slots),
                active: Arc::clone(&self.inner.active),
            },
        ))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let stream = self.stream(request).await?;
        collect_stream(PROVIDER_NAME, stream).await
    }

    /// One L2-normalised vector per input, on a blocking thread (see
    /// `embed.rs`).
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        embed::embed(self, request).await
    }

    /// The prompt's length in the model's own tokens, rendered by its chat
    /// template exactly as a generation would be (loading the model if it
    /// is not loaded yet).
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let path = this.resolve(&request.model)?;
            let model = this.load(&path)?;
            let prompt = generate::prompt_tokens(model, &request)?;
            Ok(Some(u64::try_from(prompt.tokens.len()).unwrap_or(u64::MAX)))
        })
        .await
        .map_err(|e| error(ErrorKind::Server, e))?
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let store = self.store()?;
        tokio::task::spawn_blocking(move || {
            let listing = store
                .list()
                .map_err(|e| error(ErrorKind::InvalidRequest, e))?;
            Ok::<_, LlmError>(
                listing
                    .models
                    .into_iter()
                    .map(|model| ModelInfo {
                        context_window: crate::gguf::read_metadata(&model.path)
                            .ok()
                            .and_then(|gguf| gguf.context_length())
                            .and_then(|n| u32::try_from(n).ok()),
                        id: model.name,
                        provider: PROVIDER_NAME.to_string(),
                        max_output_tokens: None,
                    })
                    .collect(),
            )
        })
        .await
        .map_err(|e| error(ErrorKind::Server, e))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{LocalProvider, LocalSettings, default_max_tokens};

    #[test]
    fn providers_built_again_share_the_loaded_model() {
        // What a gateway's configuration reload does: a second provider
        // with the same settings. It must not load (and keep) a second copy.
        let Some(path) = freehold_test_support::test_model("SmolLM2-135M-Instruct.Q4_1.gguf")
        else {
            return;
        };
        let settings = || LocalSettings {
            threads: Some(1),
            ..LocalSettings::default()
        };
        let first = LocalProvider::new(settings()).load(&path).unwrap();
        let again = LocalProvider::new(settings()).load(&path).unwrap();
        assert!(std::ptr::eq(first, again));

        // A file replaced at the same path (pulled again) is another model.
        let copy = std::env::temp_dir().join(format!(
            "freehold-replaced-model-{}.gguf",
            std::process::id()
        ));
        std::fs::copy(&path, &copy).unwrap();
        let provider = LocalProvider::new(settings());
        let old = provider.load(&copy).unwrap();
        let file = std::fs::File::options().write(true).open(&copy).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        file.set_modified(later).unwrap();
        let new = provider.load(&copy).unwrap();
        assert!(!std::ptr::eq(old, new));
        assert!(std::ptr::eq(new, provider.load(&copy).unwrap()));
        let _ = std::fs::remove_file(&copy);
    }

    #[test]
    fn unset_answer_lengths_are_a_quarter_of_the_window_within_bounds() {
        assert_eq!(default_max_tokens(1024), 512);
        assert_eq!(default_max_tokens(4096), 1024);
        assert_eq!(default_max_tokens(8192), 2048);
        assert_eq!(default_max_tokens(131_072), 2048);
    }
}
