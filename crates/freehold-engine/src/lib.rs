//! The embedded engine: GGUF models on this machine.
//!
//! This crate owns the model store (pulling models from Hugging Face, an
//! `https://` URL, a `pip:` package or a local file; verifying them by
//! sha256; listing and removing them) and reading GGUF metadata. The
//! in-process llama.cpp provider arrives next, built on them.
//!
//! It must not block an async runtime: long work (downloads, hashing,
//! inference) runs on its own threads or is `async`.

pub mod gguf;
pub mod hardware;
pub mod recommend;
pub mod store;
