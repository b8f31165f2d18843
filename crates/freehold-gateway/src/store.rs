//! Keys, budgets and the usage ledger, in SQLite (default) or PostgreSQL.
//!
//! STUB: the types and signatures below are the contract the server codes
//! against; the implementation replaces the bodies.

use serde::{Deserialize, Serialize};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, migrated or queried.
    #[error("usage database: {0}")]
    Database(String),
    /// No key has that id or prefix.
    #[error("no virtual key matches `{0}`; `freehold keys list` shows them")]
    UnknownKey(String),
    /// The reservation would take the key over its budget.
    #[error("budget exhausted: ${spent:.6} spent and ${reserved:.6} reserved of ${budget:.6}")]
    BudgetExhausted {
        /// The key's budget in USD.
        budget: f64,
        /// Spent so far.
        spent: f64,
        /// Reserved by requests in flight.
        reserved: f64,
    },
}

/// A new virtual key's settings (`freehold keys create`).
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// A human name (`ci`, `alice`).
    pub name: String,
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
    /// Model names (as clients ask for them) the key may use; empty: all.
    pub allowed_models: Vec<String>,
    /// Requests per minute; `None`: unlimited.
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute; `None`: unlimited.
    pub tpm: Option<u32>,
    /// Spend cap in USD over the key's life; `None`: unlimited.
    pub budget_usd: Option<f64>,
    /// Requests with this key never leave the machine (local providers only).
    pub local_only: bool,
}

/// A stored virtual key (never the secret itself: only its hash is kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable id (`key_…`).
    pub id: String,
    /// The human name.
    pub name: String,
    /// The first characters of the secret (`fh-…` + 8), to recognise it.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
    /// Allowed models; empty: all.
    pub allowed_models: Vec<String>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    /// Budget in USD.
    pub budget_usd: Option<f64>,
    /// Spent so far in USD (settled requests).
    pub spent_usd: f64,
    /// Reserved by requests in flight, in USD.
    pub reserved_usd: f64,
    /// Keep this key's requests on local providers.
    pub local_only: bool,
}

/// A hold on part of a key's budget, taken before a call and settled after.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The key.
    pub key_id: String,
    /// The amount held, in USD.
    pub amount_usd: f64,
}

/// One line of the usage ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    /// The virtual key id; `None` for the master key or an open gateway.
    pub key_id: Option<String>,
    /// The model the client asked for.
    pub model: String,
    /// The provider that answered (or was last tried).
    pub provider: String,
    /// The model id at that provider.
    pub provider_model: String,
    /// The endpoint (`/v1/messages`, …).
    pub endpoint: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Prompt tokens served from a cache.
    pub cached_input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// USD; `None` when the price is unknown.
    pub cost_usd: Option<f64>,
    /// Milliseconds from arrival to the last byte.
    pub latency_ms: u64,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// A short error kind when it failed.
    pub error: Option<String>,
    /// The request and response bodies, only when body logging is on.
    pub body: Option<String>,
}

/// How `freehold usage` groups the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Per virtual key (name).
    Key,
    /// Per model asked for.
    Model,
    /// Per UTC day.
    Day,
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The key name, model or day.
    pub group: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests (status ≥ 400).
    pub errors: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// USD.
    pub cost_usd: f64,
}

/// TEMPORARY stand-in (replaced by the store implementation on merge).
#[derive(Debug, Clone)]
pub struct Store;

#[allow(missing_docs, clippy::unused_async)]
impl Store {
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Err(StoreError::Database(format!("not built yet: {url}")))
    }
    pub fn backend(&self) -> &'static str {
        "none"
    }
    pub async fn create_key(&self, _new: NewKey) -> Result<(KeyRecord, String), StoreError> {
        Err(StoreError::Database("stub".into()))
    }
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    pub async fn key_by_secret(&self, _secret: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(None)
    }
    pub async fn reserve(&self, key_id: &str, amount_usd: f64) -> Result<Reservation, StoreError> {
        Ok(Reservation {
            key_id: key_id.into(),
            amount_usd,
        })
    }
    pub async fn settle(&self, _r: &Reservation, _actual_usd: f64) -> Result<(), StoreError> {
        Ok(())
    }
    pub async fn record(&self, _records: &[UsageRecord]) -> Result<(), StoreError> {
        Ok(())
    }
}
