//! GGUF metadata.
