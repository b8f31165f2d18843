//! The embedded engine: GGUF models on this machine.
//!
//! This crate owns the model store (pulling models from Hugging Face, an
//! `https://` URL, a `pip:` package or a local file; verifying them by
//! sha256; listing and removing them), reads GGUF metadata, and runs
//! installed models in process with llama.cpp: [`local::LocalProvider`]
//! implements `freehold_llm::Provider` (freehold-llm must never depend on
//! this crate; the CLI wires the two together), for chat and embeddings.
//! [`default_model`] decides which local model runs when none is named;
//! [`mod@bench`] measures the engine's prompt and generation throughput the
//! way llama.cpp's `llama-bench` does.
//!
//! It must not block an async runtime: long work (downloads, hashing,
//! inference) runs on its own threads or is `async`.

pub mod bench;
pub mod default_model;
pub mod gguf;
pub mod hardware;
pub mod local;
pub mod recommend;
pub mod store;
