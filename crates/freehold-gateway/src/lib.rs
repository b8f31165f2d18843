//! `freehold serve`: one HTTP endpoint that speaks the OpenAI and Anthropic
//! wire protocols to clients and routes every request through
//! [`freehold_llm::Router`] to the configured providers.
//!
//! What it owns:
//! - the axum application: `/v1/chat/completions`, `/v1/responses` (+
//!   `/compact`), `/v1/messages` (+ `count_tokens`), `/v1/models` (+
//!   `/v1/models/{model}`), `/v1/embeddings`, `/health`, `/metrics`;
//! - access control: the master key and virtual keys ([`store`]), per-key
//!   rate limits ([`limits`]: in memory, or shared through PostgreSQL);
//! - the usage ledger and budgets ([`store`]), on SQLite or PostgreSQL, with
//!   the leases that let one gateway release a dead one's budget holds;
//! - privacy routing.
//!
//! What it must not do: hold provider keys anywhere a client or a log can
//! see them, or know how a provider speaks (that is freehold-llm's job).

pub mod auth;
pub mod bench;
pub mod busy_poll;
mod chat;
pub mod error;
pub mod ledger;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod mock;
pub mod privacy;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod state;
pub mod store;
pub mod tls;
