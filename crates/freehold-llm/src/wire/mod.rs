//! Wire formats, one module per protocol: the exact JSON each API sends and
//! receives, as serde types, with conversions to and from
//! [`freehold_protocol`] types.
//!
//! The types derive both `Serialize` and `Deserialize` so that they serve in
//! both directions: the clients in [`crate::client`] encode requests and
//! decode responses with them, and the gateway decodes its own clients'
//! requests and encodes responses with the same types. The gateway direction
//! (`decode_request`, `encode_response`, the stream encoders and
//! `encode_error` of [`openai_chat`], [`anthropic`] and
//! [`openai_responses`]) is described in [`serve`].

pub mod anthropic;
pub mod embeddings;
pub mod gemini;
pub mod ollama;
pub mod openai_api;
pub mod openai_chat;
pub mod openai_responses;
pub mod serve;
mod text_or;
