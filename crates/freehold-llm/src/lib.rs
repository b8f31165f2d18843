//! The any-LLM client layer: one [`Provider`] trait and a client for each
//! wire protocol behind it, so that switching between a local model and a
//! hosted one is a change of name, not of code.
//!
//! What it owns:
//! - [`Provider`]: stream, complete, embed, list models, capabilities;
//! - the transport ([`http::Transport`]): retries with backoff honouring
//!   `Retry-After`, an idle (never total) timeout, key redaction; plain
//!   `http://` servers are reached through [`inline::InlineClient`], which
//!   drives each connection in the calling task;
//! - the SSE and NDJSON decoders ([`sse`], [`ndjson`]);
//! - stop sequences a provider cannot be sent, applied to its answer
//!   ([`stop`]);
//! - reasoning a model writes into its text between `<think>` tags, moved
//!   to reasoning where the server left it there ([`think`]);
//! - Anthropic's context editing, made by the router for providers that do
//!   not make it themselves ([`context_edit`]);
//! - [`secret::ApiKey`], which never prints itself.
//!
//! What it must not do: know about agents, terminals or HTTP servers. The
//! gateway reuses its wire types in the other direction; the agent only sees
//! [`Provider`].
//!
//! ```
//! use freehold_llm::secret::ApiKey;
//!
//! let key = ApiKey::new("sk-live-0123456789");
//! assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
//! ```

pub mod assemble;
pub mod balance;
pub mod catalog;
pub mod client;
pub mod config;
pub mod context_edit;
pub mod cost;
pub mod http;
pub mod inline;
pub mod ndjson;
pub mod presets;
mod provider;
pub mod retry;
pub mod router;
pub mod scripted;
pub mod secret;
pub mod sse;
pub mod stop;
pub mod text_tools;
pub mod think;
pub mod wire;

pub use balance::{HealthSettings, ReplicaSet};
pub use catalog::{Catalog, CatalogError, ModelEntry, ModelOverride, Pricing};
pub use cost::{CostDisplay, cost};
pub use provider::{EventStream, Provider, check_embed_request, collect_stream, no_embeddings};
pub use router::{AliasTarget, Router, RouterSettings, Target};
