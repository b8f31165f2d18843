//! Keys, budgets and the usage ledger, in SQLite (default) or PostgreSQL.
//!
//! One [`Store`] serves both backends with the same SQL (numbered `$1`
//! parameters work in both), except where each takes a budget's hold or
//! settles it in one statement its own way (PostgreSQL with a
//! data-modifying `WITH`, SQLite with triggers) and where each reads its
//! own clock; the schema is created and upgraded by versioned migrations
//! (the private `migrate` module) when a store opens.
//!
//! - Secrets are never stored: a key keeps the SHA-256 of its secret and
//!   the first characters (the prefix) to recognise it.
//! - Money is stored as integer micro-dollars (1 USD = 1 000 000) so that
//!   sums never drift; the API speaks `f64` USD.
//! - Budgets are enforced with reservations: [`Store::reserve`] holds an
//!   estimate with one conditional statement (race-free across tasks and
//!   across processes sharing a database), [`Store::settle`] replaces the
//!   hold by the actual cost, once however often it is tried. Each hold is
//!   also a row with an expiry, so that
//!   [`Store::release_expired_reservations`] can free the holds of a
//!   gateway that died before settling them: at their expiry, or sooner
//!   when the gateway held a lease ([`Store::as_gateway`]) that ran out.
//! - Per-key rate limits can be kept here too ([`Store::admit_rate`]), so
//!   that gateways sharing a database enforce one limit between them.

mod migrate;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, migrated or queried.
    #[error("gateway database: {0}")]
    Database(String),
    /// The database did not take the statement for now, and wrote
    /// nothing: it was busy (SQLite), a concurrent transaction won
    /// (PostgreSQL's serialization failures and deadlocks), or no
    /// connection could be had in time (the server restarting, a pool
    /// full). Trying again later is safe ([`StoreError::is_retryable`]).
    #[error("gateway database (nothing was written): {0}")]
    Busy(String),
    /// The statement taking a budget hold failed in a way that leaves
    /// unknown whether the database took the hold (its answer was lost:
    /// the connection dropped mid-statement). [`Store::release_unanswered`]
    /// releases it, whether it was taken, is still being taken or never
    /// will be.
    #[error("gateway database: {error} (whether the budget hold was taken is unknown)")]
    HoldUnanswered {
        /// The hold that may have been taken.
        reservation: Reservation,
        /// What failed.
        error: String,
    },
    /// No answer came: the connection failed (or the server stopped)
    /// while the operation was under way, or while connecting for it, so
    /// it may have been applied. Returned only where trying the same
    /// operation again is safe: by [`Store::record`], which writes a batch
    /// once however often it is tried.
    #[error("gateway database (no answer came; it may have been written): {0}")]
    Unanswered(String),
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
    /// Several keys match a name or prefix.
    #[error(
        "`{which}` matches {} virtual keys ({}); name one by its id",
        .matches.len(),
        .matches.join(", ")
    )]
    AmbiguousKey {
        /// What was asked for.
        which: String,
        /// The ids of the keys it matches.
        matches: Vec<String>,
    },
    /// An active (not revoked) key already has that name.
    #[error("an active virtual key is already named `{0}`; choose another name or revoke it first")]
    NameTaken(String),
    /// An argument is out of range (a negative amount, an empty name…).
    #[error("{0}")]
    Invalid(String),
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
    /// Its row in `freehold_reservations` (`res_…`).
    pub id: String,
    /// The key.
    pub key_id: String,
    /// The amount held, in USD.
    pub amount_usd: f64,
}

/// Names one batch of ledger lines ([`Store::record`]), so that a batch
/// tried again after a failure whose answer was lost is written once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId(String);

impl BatchId {
    /// A new id: `bat_` and 32 random hex digits (or, should the system
    /// give no random bytes, the process id, the time and a count).
    pub fn new() -> Self {
        match random_hex(16) {
            Ok(hex) => Self(format!("bat_{hex}")),
            // No random bytes (not seen on a working system): the process,
            // the moment and a count still keep apart the batches of the
            // gateways sharing a database, and a ledger line is not worth
            // losing over it.
            Err(_) => {
                static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Self(format!("bat_{}_{nanos}_{count}", std::process::id()))
            }
        }
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Store::record`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Its lines were written now.
    Written,
    /// An earlier try had written them (its answer was lost); nothing was
    /// written now.
    AlreadyWritten,
}

/// One line of the usage ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    /// The id the client got back in `request-id` and `x-request-id`;
    /// `None` on lines written before ledgers kept it.
    pub request_id: Option<String>,
    /// The end user the client sent the request for (Anthropic's
    /// `metadata.user_id`, OpenAI's `safety_identifier` or `user`), as
    /// [`recorded_end_user`] keeps it; `None` when it named none, and on
    /// lines written before ledgers kept it.
    pub end_user: Option<String>,
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
    /// The privacy policy's decision when it did anything (kept local,
    /// redacted, blocked), as its audit line: which triggers and detectors,
    /// never the matched text. `None` when the request passed untouched.
    pub privacy: Option<String>,
    /// The request and response bodies, only when body logging is on.
    pub body: Option<String>,
}

/// One request as `freehold usage --requests` lists it: a ledger line
/// (without its body) and the name of its key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerLine {
    /// The virtual key's name; `None` for the master key or an open gateway.
    pub key_name: Option<String>,
    /// The line.
    #[serde(flatten)]
    pub record: UsageRecord,
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
    /// Per end user the clients named ([`UsageRecord::end_user`]); requests
    /// that named none are grouped as `(none)`.
    User,
}

/// The group of `freehold usage --by user` for requests that named no end
/// user.
pub const NO_END_USER: &str = "(none)";

/// The longest end user's id the ledger keeps as it was sent: Anthropic's
/// limit for `metadata.user_id`, the longest any provider takes.
pub const MAX_RECORDED_END_USER: usize = 256;

/// An end user's id as the ledger keeps it ([`UsageRecord::end_user`]): as
/// the client sent it, unless it is longer than [`MAX_RECORDED_END_USER`]
/// bytes, holds control or invisible formatting characters (which would
/// forge or disguise lines in `freehold usage`'s tables), could be taken
/// for one of the ledger's own labels ([`NO_END_USER`], a hash), or is
/// `sensitive` (the privacy detectors found something in it, an email
/// address say). Those are kept as `sha256:` and the id's SHA-256 in hex:
/// one user still has one line in a report, and what the detectors found
/// is not written out. (A provider that gets a hashed id, one longer than
/// it takes, gets the same hex without the prefix.)
pub fn recorded_end_user(id: &str, sensitive: bool) -> String {
    let kept_as_sent = !sensitive
        && id.len() <= MAX_RECORDED_END_USER
        && !id.chars().any(hides_or_breaks_lines)
        && id != NO_END_USER
        && !id.starts_with(HASHED_END_USER);
    if kept_as_sent {
        return id.to_owned();
    }
    format!(
        "{HASHED_END_USER}{}",
        freehold_llm::wire::hashed_end_user(id)
    )
}

/// What begins an end user's id that the ledger keeps hashed.
const HASHED_END_USER: &str = "sha256:";

/// Whether `c` is a control character, a line or paragraph separator, or
/// a format character (Unicode's category Cf: zero-width characters, the
/// bidirectional marks, overrides and isolates, the soft hyphen, tags),
/// which changes how the text around it is shown without being seen
/// itself and can make one id look like another in a table.
fn hides_or_breaks_lines(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The key name, model, day or end user.
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

/// Whether a key works now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Neither revoked nor expired.
    Active,
    /// Revoked with `freehold keys revoke`.
    Revoked,
    /// Past its expiry time.
    Expired,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
        })
    }
}

impl KeyRecord {
    /// The key's state at `now` (Unix seconds): revoked wins over expired.
    pub fn state(&self, now: i64) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| now > at) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether SQLite answered SQLITE_BUSY (any of its extended codes):
/// another connection holds the lock.
fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// One statement, as each backend writes it.
struct BackendSql {
    postgres: &'static str,
    sqlite: &'static str,
}

/// Settles a hold still held: deletes it and moves its amount from the
/// key's reserved total to the actual cost spent; changes nothing (and
/// counts no row) if the hold is not there.
const SETTLE_HOLD: BackendSql = BackendSql {
    postgres: "WITH released AS ( \
                   DELETE FROM freehold_reservations WHERE id = $1 AND key_id = $2 \
                   RETURNING micros) \
               UPDATE freehold_keys SET \
               reserved_micros = GREATEST(reserved_micros - (SELECT micros FROM released), 0), \
               spent_micros = spent_micros + $3 \
               WHERE id = $2 AND EXISTS (SELECT 1 FROM released)",
    // Setting the hold's actual cost fires a trigger (migration 5) that
    // releases it, adds the cost and deletes the row, in this statement.
    sqlite: "UPDATE freehold_reservations SET settled_micros = $3 \
             WHERE id = $1 AND key_id = $2 AND settled_micros IS NULL",
};

/// [`SETTLE_HOLD`] for a hold of more than 0 micros; changes nothing (and
/// counts no row) for a hold of 0, such as the placeholder
/// [`Store::release_unanswered`] leaves.
const SETTLE_NONEMPTY_HOLD: BackendSql = BackendSql {
    postgres: "WITH released AS ( \
                   DELETE FROM freehold_reservations \
                   WHERE id = $1 AND key_id = $2 AND micros > 0 \
                   RETURNING micros) \
               UPDATE freehold_keys SET \
               reserved_micros = GREATEST(reserved_micros - (SELECT micros FROM released), 0), \
               spent_micros = spent_micros + $3 \
               WHERE id = $2 AND EXISTS (SELECT 1 FROM released)",
    // The settlement's trigger (migration 5) releases it.
    sqlite: "UPDATE freehold_reservations SET settled_micros = $3 \
             WHERE id = $1 AND key_id = $2 AND settled_micros IS NULL AND micros > 0",
};

/// Charges the actual cost of a hold the sweep released, if nobody did
/// yet; changes nothing (and counts no row) otherwise.
const CHARGE_RELEASED_HOLD: BackendSql = BackendSql {
    postgres: "WITH charged AS ( \
                   UPDATE freehold_released_holds SET charged_micros = $3 \
                   WHERE reservation_id = $1 AND key_id = $2 AND charged_micros IS NULL \
                   RETURNING key_id) \
               UPDATE freehold_keys SET spent_micros = spent_micros + $3 \
               WHERE id = $2 AND EXISTS (SELECT 1 FROM charged)",
    // A trigger (migration 6) adds the cost in this statement.
    sqlite: "UPDATE freehold_released_holds SET charged_micros = $3 \
             WHERE reservation_id = $1 AND key_id = $2 AND charged_micros IS NULL",
};

/// SQLite's clock in Unix milliseconds: `julianday('now')` counts days
/// with millisecond precision, 2440587.5 being the Unix epoch's. It stays
/// the same for the whole of one statement.
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Durations are added to the database's clock in SQL, where an overflow
/// is an error: a century is "never" enough.
const CENTURY_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The largest amount of money the store accepts in one value, in USD.
const MAX_USD: f64 = 1e9;

/// How long a SQLite connection waits for another writer before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a PostgreSQL server to answer, or for a pooled
/// connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a ledger batch's transaction begins on PostgreSQL, in one round
/// trip. It waits at most 5 seconds for a lock (`lock_timeout`): the id
/// held by another try of the same batch, say; past that it fails as
/// [`StoreError::Busy`] and is tried again later. And the server ends it
/// if it is left idle for 15 seconds (`idle_in_transaction_session_timeout`):
/// a try whose client vanished without the server noticing (a NAT or a
/// proxy dropping the connection) would otherwise hold the batch's id, and
/// block the next try, for the hours TCP takes to notice; the batch's
/// transaction never waits between its statements. `SET LOCAL`, so that
/// the limits end with the transaction, also behind PgBouncer's
/// transaction pooling. Both are well inside [`Store::RECORD_TIME_LIMIT`]
/// and the ledger writer's minute of retries.
const POSTGRES_BEGIN_LEDGER_BATCH: &str = "BEGIN; SET LOCAL lock_timeout = '5s'; \
     SET LOCAL idle_in_transaction_session_timeout = '15s'";

/// The key columns, in the order of [`KeyRow`].
macro_rules! key_columns {
    () => {
        "id, name, prefix, created_at, expires_at, revoked_at, allowed_models, \
         rpm, tpm, budget_micros, spent_micros, reserved_micros, local_only"
    };
}

/// One `freehold_keys` row as selected by [`key_columns`].
type KeyRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    bool,
);

/// The columns each ledger line binds in its INSERT.
const LEDGER_COLUMNS: usize = 17;

/// Ledger lines per INSERT statement, so that a full statement stays under
/// SQLite's oldest limit of 999 parameters.
const LINES_PER_INSERT: usize = 999 / LEDGER_COLUMNS;

/// Runs the same code against whichever pool the store holds: the SQL is
/// written once, the compiler checks it against both drivers' types.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

mod lease;
mod rate;

pub use rate::RateWindow;

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The keys, budgets and usage ledger of `freehold serve`, on SQLite or
/// PostgreSQL. Cheap to clone (a handle to one connection pool).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Where the database is, without any password.
    location: Arc<str>,
    /// The gateway whose reservations this handle takes, when it is one
    /// ([`Store::as_gateway`]).
    gateway_id: Option<Arc<str>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("location", &self.location)
            .field("gateway_id", &self.gateway_id)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url`: `sqlite:PATH`,
    /// `sqlite::memory:`, a bare file path (SQLite), or `postgres://…` /
    /// `postgresql://…`.
    ///
    /// SQLite files (and their parent directories) are created when
    /// missing; tables are created or upgraded by versioned migrations,
    /// which are safe to run from several processes at once.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::Invalid(
                "the database URL is empty: give sqlite:PATH, a file path or postgres://…".into(),
            ));
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Self::open_postgres(url).await;
        }
        let options = if lower.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(|e| {
                StoreError::Invalid(format!("invalid SQLite database URL `{url}`: {e}"))
            })?
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::Invalid(format!(
                "unsupported database `{scheme}://…`: use sqlite:PATH, a file path, or postgres://…"
            )));
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let in_memory = lower.contains(":memory:") || lower.contains("mode=memory");
        Self::open_sqlite(options, in_memory).await
    }

    async fn open_sqlite(
        options: SqliteConnectOptions,
        in_memory: bool,
    ) -> Result<Store, StoreError> {
        let path = options.get_filename().to_path_buf();
        let location = if in_memory {
            ":memory:".to_owned()
        } else {
            path.display().to_string()
        };
        if !in_memory
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!(
                    "cannot open the database at {location}: cannot create {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool_options = if in_memory {
            // Every connection to `:memory:` is its own database, and it
            // vanishes with its last connection: keep exactly one.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            // WAL: readers never block the writer; writes are serialised by
            // SQLite itself, so a few connections are plenty. (One
            // connection, which queues writes in this process instead of
            // letting them wait in SQLite's busy handler, served a budgeted
            // key a fifth slower: statements no longer overlap with the
            // hand-offs to and from the connections' threads.)
            SqlitePoolOptions::new().max_connections(4)
        };
        let options = if in_memory {
            options
        } else {
            options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
        let pool_options = pool_options.acquire_timeout(SQLITE_BUSY_TIMEOUT + CONNECT_TIMEOUT);
        // A file another process is creating at this very moment can refuse
        // a first connection at once with SQLITE_BUSY: switching it to WAL,
        // or recovering its WAL, does not wait for the busy timeout. So
        // the first connection is retried for as long as that timeout.
        let retry_until = std::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(error) if is_busy(&error) && std::time::Instant::now() < retry_until => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(error) => {
                    return Err(StoreError::Database(format!(
                        "cannot open the database at {location}: {error}"
                    )));
                }
            }
        };
        migrate::sqlite(&pool).await.map_err(|e| {
            StoreError::Database(format!("cannot migrate the database at {location}: {e}"))
        })?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            location: location.into(),
            gateway_id: None,
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        // The parser's errors never repeat the URL, so no password leaks.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
        let location = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
        );
        // One direct connection first: the pool retries refused connections
        // until its timeout and then reports only the timeout.
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Err(_) => {
                return Err(StoreError::Database(format!(
                    "PostgreSQL unreachable at {location}: no answer in {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(sqlx::Error::Io(e))) => {
                return Err(StoreError::Database(format!(
                    "PostgreSQL unreachable at {location}: {e}"
                )));
            }
            Ok(Err(e)) => {
                return Err(StoreError::Database(format!(
                    "cannot connect to PostgreSQL at {location}: {e}"
                )));
            }
            Ok(Ok(connection)) => {
                // Closing is a courtesy to the server; a failure changes nothing.
                let _ = connection.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(CONNECT_TIMEOUT)
            // The conditional statements that take and settle holds rely
            // on read committed (a concurrent update is re-checked, not a
            // serialization failure), whatever the server's default. Set
            // on each new connection rather than as a startup option, which
            // connection poolers (PgBouncer) refuse.
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(
                        &mut *connection,
                        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    )
                    .await
                    .map(|_| ())
                })
            })
            .connect_lazy_with(options);
        migrate::postgres(&pool).await.map_err(|e| {
            StoreError::Database(format!("cannot migrate the database at {location}: {e}"))
        })?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            location: location.into(),
            gateway_id: None,
        })
    }

    /// Which backend holds the data: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// SQL for the database's own clock, in Unix milliseconds. Holds are
    /// timed by it, the one clock that every gateway sharing the database
    /// sees, so replicas whose clocks disagree cannot release each other's
    /// holds early.
    fn now_ms_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => SQLITE_NOW_MS,
            Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Where the database is, fit for logs: a file path, `:memory:`, or
    /// `postgres://USER@HOST:PORT/DB` (never a password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes the pool's connections (SQLite folds its write-ahead log back
    /// into the database file when the last one closes).
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
    }

    /// Whether [`Store::close`] was called: nothing more can be written.
    pub fn is_closed(&self) -> bool {
        with_pool!(self, pool => pool.is_closed())
    }

    /// Creates a key and returns it with its secret (`fh-` and 48 base-62
    /// characters). The secret is not stored (only its SHA-256): this is the
    /// only time it is seen.
    pub async fn create_key(&self, new: NewKey) -> Result<(KeyRecord, String), StoreError> {
        let name = validate_name(&new.name)?;
        let budget = new
            .budget_usd
            .map(|usd| usd_to_micros(usd, "the budget"))
            .transpose()?;
        let mut models: Vec<String> = Vec::new();
        for model in &new.allowed_models {
            let model = model.trim();
            if !model.is_empty() && !models.iter().any(|m| m == model) {
                models.push(model.to_owned());
            }
        }
        // An empty list means every model: a list that was given but held
        // only blanks (an empty `$MODELS` in a script) must not mean that.
        if models.is_empty() && !new.allowed_models.is_empty() {
            return Err(StoreError::Invalid(
                "the list of allowed models is empty; name at least one model, or leave the \
                 option out to allow every model"
                    .into(),
            ));
        }
        let models = serde_json::to_string(&models)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the model list: {e}")))?;
        let secret = random_secret()?;
        let prefix: String = secret.chars().take(SHOWN_PREFIX).collect();
        let id = format!("key_{}", random_hex(8)?);
        let hash = sha256_hex(&secret);

        let taken: Option<String> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM freehold_keys WHERE name = $1 AND revoked_at IS NULL",
            )
            .bind(&name)
            .fetch_optional(pool)
            .await
        })
        .map_err(db("cannot create the key"))?;
        if taken.is_some() {
            return Err(StoreError::NameTaken(name));
        }
        let row: KeyRow = with_pool!(self, pool => {
            sqlx::query_as::<_, KeyRow>(concat!(
                "INSERT INTO freehold_keys (id, name, prefix, secret_sha256, created_at, \
                 expires_at, allowed_models, rpm, tpm, budget_micros, local_only) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
                key_columns!()
            ))
            .bind(&id)
            .bind(&name)
            .bind(&prefix)
            .bind(&hash)
            .bind(unix_now())
            .bind(new.expires_at)
            .bind(&models)
            .bind(new.rpm.map(i64::from))
            .bind(new.tpm.map(i64::from))
            .bind(budget)
            .bind(new.local_only)
            // All rows, so that the statement runs to its end: SQLite
            // commits there, and a statement dropped after its first row
            // would lose a failed commit.
            .fetch_all(pool)
            .await
        })
        .map_err(|e| match &e {
            // Another process took the name between the check and the insert.
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::NameTaken(name.clone())
            }
            _ => db("cannot create the key")(e),
        })?
        .pop()
        .ok_or_else(|| StoreError::Database("cannot create the key: no row was inserted".into()))?;
        Ok((key_record(row)?, secret))
    }

    /// Every key, oldest first (then by name), revoked and expired ones
    /// included.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = with_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM freehold_keys ORDER BY created_at, name, id"
            ))
            .fetch_all(pool)
            .await
        })
        .map_err(db("cannot list the keys"))?;
        rows.into_iter().map(key_record).collect()
    }

    /// Revokes the key named by `which`: its id, its name or its shown
    /// prefix. A name or prefix shared by several keys picks the only active
    /// one, else fails with [`StoreError::AmbiguousKey`]. Revoking a revoked
    /// key changes nothing and returns it.
    pub async fn revoke_key(&self, which: &str) -> Result<KeyRecord, StoreError> {
        let which = which.trim();
        let rows: Vec<KeyRow> = with_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM freehold_keys WHERE id = $1 OR name = $1 OR prefix = $1 \
                 ORDER BY created_at, name, id"
            ))
            .bind(which)
            .fetch_all(pool)
            .await
        })
        .map_err(db("cannot revoke the key"))?;
        let keys = rows
            .into_iter()
            .map(key_record)
            .collect::<Result<Vec<_>, _>>()?;
        let key = pick_key(which, keys)?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let row: Option<KeyRow> = with_pool!(self, pool => {
            sqlx::query_as::<_, KeyRow>(concat!(
                "UPDATE freehold_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
                 RETURNING ",
                key_columns!()
            ))
            .bind(&key.id)
            .bind(unix_now())
            // All rows: see `create_key`.
            .fetch_all(pool)
            .await
        })
        .map_err(db("cannot revoke the key"))?
        .pop();
        match row {
            Some(row) => key_record(row),
            // Revoked by someone else meanwhile: report it as it is now.
            None => self
                .key_by_id(&key.id)
                .await?
                .ok_or_else(|| StoreError::UnknownKey(which.to_owned())),
        }
    }

    /// The key with id `id`, if any.
    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = with_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM freehold_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .map_err(db("cannot read the key"))?;
        row.map(key_record).transpose()
    }

    /// The key whose secret is `secret`, if any. Revoked and expired keys are
    /// returned too: the caller decides, and can say why it refuses
    /// ([`KeyRecord::state`]).
    pub async fn key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>, StoreError> {
        let hash = sha256_hex(secret);
        let row: Option<KeyRow> = with_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM freehold_keys WHERE secret_sha256 = $1"
            ))
            .bind(&hash)
            .fetch_optional(pool)
            .await
        })
        .map_err(db("cannot look the key up"))?;
        row.map(key_record).transpose()
    }

    /// [`Store::reserve_for`] with a hold of [`Store::DEFAULT_HOLD`].
    ///
    /// # Errors
    /// As [`Store::reserve_for`].
    pub async fn reserve(&self, key_id: &str, amount_usd: f64) -> Result<Reservation, StoreError> {
        self.reserve_for(key_id, amount_usd, Self::DEFAULT_HOLD)
            .await
    }

    /// How long [`Store::reserve`] holds a reservation that is not settled.
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(3600);

    /// Holds `amount_usd` of the key's budget for a request in flight, for
    /// at most `hold`: a hold not settled by then (its gateway died) is
    /// released by [`Store::release_expired_reservations`]. `hold` must
    /// outlast the longest request.
    ///
    /// Succeeds only if spent + reserved + amount stays within the budget
    /// (keys without a budget always succeed; the gateway does not reserve
    /// for them). One conditional statement: concurrent callers, in this
    /// process or another sharing the database, can never together exceed
    /// the budget. Amounts are rounded to the micro-dollar.
    ///
    /// # Errors
    /// [`StoreError::BudgetExhausted`], [`StoreError::UnknownKey`], an
    /// amount out of range, or a database failure:
    /// [`StoreError::HoldUnanswered`] when the hold may have been taken
    /// all the same, which the caller releases with
    /// [`Store::release_unanswered`].
    pub async fn reserve_for(
        &self,
        key_id: &str,
        amount_usd: f64,
        hold: Duration,
    ) -> Result<Reservation, StoreError> {
        let amount = usd_to_micros(amount_usd, "the amount to reserve")?;
        let id = format!("res_{}", random_hex(12)?);
        let hold_ms = duration_ms(hold).min(CENTURY_MS);
        // One statement, so one round trip, holding the key's row only for
        // as long as the statement runs.
        let reserve = match &self.pool {
            Pool::Postgres(_) => format!(
                "WITH held AS ( \
                     UPDATE freehold_keys SET reserved_micros = reserved_micros + $3 \
                     WHERE id = $2 \
                     AND (budget_micros IS NULL \
                          OR spent_micros + reserved_micros + $3 <= budget_micros) \
                     RETURNING id) \
                 INSERT INTO freehold_reservations \
                     (id, key_id, micros, expires_at_ms, gateway_id) \
                 SELECT $1, held.id, $3, {} + $4, $5 FROM held",
                self.now_ms_sql()
            ),
            // SQLite has no UPDATE inside a WITH: the row is inserted only
            // while the budget allows it, and a trigger (migration 5) adds
            // it to the key's reserved total in the same statement.
            Pool::Sqlite(_) => format!(
                "INSERT INTO freehold_reservations \
                     (id, key_id, micros, expires_at_ms, gateway_id, counted_by_trigger) \
                 SELECT $1, id, $3, {} + $4, $5, TRUE FROM freehold_keys \
                 WHERE id = $2 \
                 AND (budget_micros IS NULL \
                      OR spent_micros + reserved_micros + $3 <= budget_micros)",
                self.now_ms_sql()
            ),
        };
        // Run to completion and counted, rather than a row read back with
        // RETURNING: SQLite commits a statement when it finishes, and a
        // statement dropped after its first row would lose a failed commit.
        let inserted = with_pool!(self, pool => {
            sqlx::query(&reserve)
                .bind(&id)
                .bind(key_id)
                .bind(amount)
                .bind(hold_ms)
                .bind(self.gateway_id.as_deref())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        let reservation = Reservation {
            id,
            key_id: key_id.to_owned(),
            amount_usd: micros_to_usd(amount),
        };
        let inserted = match inserted {
            Ok(inserted) => inserted,
            // A connection lost or a server stopped mid-statement leaves
            // unknown whether the hold was taken; the database's refusal
            // of the statement (an error with a code) means that it, its
            // own transaction, took nothing.
            Err(error) if may_have_applied(&error) => {
                return Err(StoreError::HoldUnanswered {
                    reservation,
                    error: format!("cannot reserve budget: {error}"),
                });
            }
            Err(error) => return Err(db("cannot reserve budget")(error)),
        };
        if inserted == 1 {
            return Ok(reservation);
        }
        // Refused: read the key only to explain why.
        let row: Option<(Option<i64>, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT budget_micros, spent_micros, reserved_micros \
                 FROM freehold_keys WHERE id = $1",
            )
            .bind(key_id)
            .fetch_optional(pool)
            .await
        })
        .map_err(db("cannot reserve budget"))?;
        match row {
            None => Err(StoreError::UnknownKey(key_id.to_owned())),
            Some((budget, spent, reserved)) => Err(StoreError::BudgetExhausted {
                budget: micros_to_usd(budget.unwrap_or(0)),
                spent: micros_to_usd(spent),
                reserved: micros_to_usd(reserved),
            }),
        }
    }

    /// Releases `reservation` and adds `actual_usd` to the key's spend, in
    /// one statement. The actual cost may exceed the reservation (a longer
    /// answer than estimated): spend then goes over the budget by that
    /// much, and later reservations fail.
    /// Settling with `0.0` just releases the hold (a failed request).
    ///
    /// A hold already released by [`Store::release_expired_reservations`]
    /// is not released twice: only the cost is added then, in a second
    /// statement. A reservation is settled once however often this is
    /// called for it, so a settlement whose answer was lost (which the
    /// database may or may not have applied) can be tried again. (A hold
    /// that the sweep of a gateway older than schema version 6 released is
    /// not noted: settled here, late, it adds nothing.)
    ///
    /// # Errors
    /// [`StoreError::UnknownKey`], or a database failure.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual_usd: f64,
    ) -> Result<(), StoreError> {
        let actual = clamped_micros(actual_usd);
        if self
            .run_settlement(SETTLE_HOLD, reservation, actual)
            .await?
            == 1
        {
            return Ok(());
        }
        // No hold: the sweep released it, or an earlier try of this
        // settlement took it already (its answer lost). Only a hold the
        // sweep released and nobody charged yet takes the cost. (A
        // separate statement on PostgreSQL: the release may have been
        // committed while the statement above waited for the hold's row,
        // and rows committed since a statement began are not in its view.)
        if self
            .run_settlement(CHARGE_RELEASED_HOLD, reservation, actual)
            .await?
            == 1
        {
            return Ok(());
        }
        if self.key_by_id(&reservation.key_id).await?.is_none() {
            return Err(StoreError::UnknownKey(reservation.key_id.clone()));
        }
        tracing::debug!(
            reservation = %reservation.id,
            "the reservation was settled already; not settled again"
        );
        Ok(())
    }

    /// Runs one of the settlement's statements, in this backend's dialect,
    /// with the reservation's id (`$1`), its key (`$2`) and the cost in
    /// micro-dollars (`$3`). Returns the rows it changed itself (not those
    /// its triggers did).
    async fn run_settlement(
        &self,
        statement: BackendSql,
        reservation: &Reservation,
        actual_micros: i64,
    ) -> Result<u64, StoreError> {
        let sql = match &self.pool {
            Pool::Postgres(_) => statement.postgres,
            Pool::Sqlite(_) => statement.sqlite,
        };
        with_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&reservation.id)
                .bind(&reservation.key_id)
                .bind(actual_micros)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(db("cannot settle the reservation"))
    }

    /// Releases the hold of a reservation whose answer was lost
    /// ([`StoreError::HoldUnanswered`]), whichever of three things
    /// happened to it: the database took the hold, is still taking it (its
    /// statement waiting on the key's row, say), or never got it. A row of
    /// nothing is put in the hold's place first, under its id: a
    /// reservation statement still to come then fails on that id instead of
    /// taking the hold after this release. If the hold is there already, it
    /// is released, charging nothing. Safe to try again: a placeholder is
    /// never released by this (it holds nothing), and it goes at its
    /// expiry, an hour on, long after any statement waiting to take the
    /// hold.
    ///
    /// # Errors
    /// A database failure.
    pub async fn release_unanswered(&self, reservation: &Reservation) -> Result<(), StoreError> {
        let placeholder = format!(
            "INSERT INTO freehold_reservations (id, key_id, micros, expires_at_ms, gateway_id) \
             VALUES ($1, $2, 0, {} + $3, NULL) ON CONFLICT (id) DO NOTHING",
            self.now_ms_sql()
        );
        let placed = with_pool!(self, pool => {
            sqlx::query(&placeholder)
                .bind(&reservation.id)
                .bind(&reservation.key_id)
                .bind(duration_ms(Self::PLACEHOLDER_KEPT))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(db("cannot release an unanswered reservation"))?;
        if placed == 0 {
            self.run_settlement(SETTLE_NONEMPTY_HOLD, reservation, 0)
                .await?;
        }
        Ok(())
    }

    /// How long the placeholder of [`Store::release_unanswered`] stays.
    const PLACEHOLDER_KEPT: Duration = Duration::from_secs(3600);

    /// How long past a released hold's own expiry its record is kept, so
    /// that its late settlement adds its cost once: no request outlives
    /// its hold's expiry, and a settlement is retried for a minute at most.
    const RELEASED_HOLDS_KEPT: Duration = Duration::from_secs(3600);

    /// Releases the holds of requests whose gateway died before settling
    /// them: holds past their own expiry, and the holds of gateways whose
    /// lease has run out ([`Store::as_gateway`]). Each is released once,
    /// whichever of the gateways sharing the database gets to it first.
    /// Returns how many holds of more than 0 it released (not the
    /// placeholders of [`Store::release_unanswered`], nor a free model's
    /// holds, which hold nothing).
    ///
    /// # Errors
    /// A database failure (the holds then stay, for the next call).
    pub async fn release_expired_reservations(&self) -> Result<u64, StoreError> {
        // Two queries, each on its own index; the clock is read once as a
        // subquery so that the planner can use them.
        let now = format!("(SELECT {})", self.now_ms_sql());
        let past_expiry = format!(
            "SELECT id, key_id, micros, expires_at_ms FROM freehold_reservations \
             WHERE expires_at_ms < {now} ORDER BY expires_at_ms LIMIT 1000"
        );
        let of_dead_gateways = format!(
            "SELECT id, key_id, micros, expires_at_ms FROM freehold_reservations \
             WHERE gateway_id IN (SELECT id FROM freehold_gateways WHERE alive_until_ms < {now}) \
             LIMIT 1000"
        );
        // The condition again when deleting: a gateway whose lease looked
        // ended may have renewed it since the lists were read.
        let delete = format!(
            "DELETE FROM freehold_reservations WHERE id = $1 AND (expires_at_ms < {now} \
             OR gateway_id IN (SELECT id FROM freehold_gateways WHERE alive_until_ms < {now}))"
        );
        let released = with_pool!(self, pool => async {
            let mut expired: Vec<(String, String, i64, i64)> = sqlx::query_as(&past_expiry)
                .fetch_all(pool)
                .await?;
            // A hold in both lists is released once: the second delete
            // finds nothing.
            expired.extend(
                sqlx::query_as::<_, (String, String, i64, i64)>(&of_dead_gateways)
                    .fetch_all(pool)
                    .await?,
            );
            let mut released = 0;
            for (id, key_id, micros, expires_at_ms) in expired {
                let mut tx = pool.begin().await?;
                // Another gateway (or the settlement, just in time) may
                // have taken it since: only the one that deletes the row
                // releases the hold.
                let deleted = sqlx::query(&delete)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 1 {
                    sqlx::query(
                        "UPDATE freehold_keys SET \
                         reserved_micros = CASE WHEN reserved_micros > $2 \
                                                THEN reserved_micros - $2 ELSE 0 END \
                         WHERE id = $1",
                    )
                    .bind(&key_id)
                    .bind(micros)
                    .execute(&mut *tx)
                    .await?;
                    // Remembered, so that its request's settlement, if it
                    // comes after all, adds its cost once.
                    sqlx::query(
                        "INSERT INTO freehold_released_holds \
                             (reservation_id, key_id, expires_at_ms) VALUES ($1, $2, $3) \
                         ON CONFLICT (reservation_id) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(&key_id)
                    .bind(expires_at_ms)
                    .execute(&mut *tx)
                    .await?;
                    // A hold of 0 (the placeholder of release_unanswered,
                    // or a free model's hold) holds nothing: its going is
                    // not counted, nor logged, as a hold released.
                    if micros > 0 {
                        released += 1;
                    }
                }
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(released)
        }
        .await)
        .map_err(db("cannot release expired reservations"))?;
        // Records kept for a while only: each table, the time its rows are
        // dated by, how long they are kept past it, and what they are.
        let kept_for_a_while = [
            (
                "freehold_gateways",
                "alive_until_ms",
                lease::FORGET_AFTER,
                "gateways whose lease ended long ago",
            ),
            (
                "freehold_released_holds",
                "expires_at_ms",
                Self::RELEASED_HOLDS_KEPT,
                "released holds long past their expiry",
            ),
            (
                "freehold_ledger_batches",
                "written_at_ms",
                Self::LEDGER_BATCHES_KEPT,
                "the ids of ledger batches written long ago",
            ),
        ];
        for (table, dated_by, kept, what) in kept_for_a_while {
            if let Err(error) = self.forget_older_than(table, dated_by, kept).await {
                tracing::warn!(%error, "forgetting {what}");
            }
        }
        Ok(released)
    }

    /// Deletes the rows of `table` whose `dated_by` column (Unix
    /// milliseconds) is `kept` or more before the database's clock.
    async fn forget_older_than(
        &self,
        table: &str,
        dated_by: &str,
        kept: Duration,
    ) -> Result<(), StoreError> {
        let forget = format!(
            "DELETE FROM {table} WHERE {dated_by} < (SELECT {}) - $1",
            self.now_ms_sql()
        );
        with_pool!(self, pool => {
            sqlx::query(&forget)
                .bind(duration_ms(kept))
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(db("cannot forget old records"))
    }

    /// Appends `records` to the ledger in one transaction, all or none, as
    /// the batch `batch`: a batch already written is not written again, so
    /// a write whose answer was lost ([`StoreError::Unanswered`]) can be
    /// tried again with the same `batch`. A record's `key_id`, when set,
    /// must name an existing key. The ledger is for reports: it does not
    /// touch budgets ([`Store::settle`] does).
    pub async fn record(
        &self,
        batch: &BatchId,
        records: &[UsageRecord],
    ) -> Result<Recorded, StoreError> {
        if records.is_empty() {
            return Ok(Recorded::Written);
        }
        // A cost out of range (an upstream reporting absurd token counts)
        // is held to the range, rather than failing the lines batched with it.
        let costs: Vec<Option<i64>> = records
            .iter()
            .map(|r| r.cost_usd.map(clamped_micros))
            .collect();
        // SQLite begins as sqlx does (deferred).
        let begin = match self.pool {
            Pool::Sqlite(_) => None,
            Pool::Postgres(_) => Some(POSTGRES_BEGIN_LEDGER_BATCH),
        };
        let claim_batch = format!(
            "INSERT INTO freehold_ledger_batches (batch_id, written_at_ms) VALUES ($1, {}) \
             ON CONFLICT (batch_id) DO NOTHING",
            self.now_ms_sql()
        );
        with_pool!(self, pool => async {
            let mut connection = ClosedUnlessKept::new(pool.acquire().await.map_err(record_failed)?);
            let write = async {
                let mut tx = match begin {
                    Some(begin) => sqlx::Connection::begin_with(&mut **connection, begin).await?,
                    None => sqlx::Connection::begin(&mut **connection).await?,
                };
                // The batch's row first. A try before this one that was
                // committed left it, and then this one writes nothing; on
                // PostgreSQL, a try still under way holds it until that
                // try ends, so this one waits to see whether it was
                // committed (for a while: see POSTGRES_BEGIN_LEDGER_BATCH).
                let claimed = sqlx::query(&claim_batch)
                    .bind(batch.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    // Nothing was written in this transaction: however its
                    // rollback goes, the batch is in the ledger once (and
                    // the connection, if it failed, is not reused).
                    let rolled_back = tx.rollback().await;
                    if let Err(error) = &rolled_back {
                        tracing::debug!(%error, "rolling back a ledger batch already written");
                    }
                    return Ok((Recorded::AlreadyWritten, rolled_back.is_ok()));
                }
                // One multi-row INSERT per chunk instead of one per line:
                // each statement is a round trip to the database (for
                // SQLite, a wake-up of its worker thread), which is what a
                // busy gateway paid per request before.
                for (chunk, chunk_costs) in records
                    .chunks(LINES_PER_INSERT)
                    .zip(costs.chunks(LINES_PER_INSERT))
                {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO freehold_usage (at_ms, request_id, end_user, key_id, \
                         model, provider, provider_model, endpoint, input_tokens, \
                         cached_input_tokens, output_tokens, cost_micros, latency_ms, status, \
                         error, privacy, body) ",
                    );
                    insert.push_values(chunk.iter().zip(chunk_costs), |mut row, (r, cost)| {
                        row.push_bind(r.at_ms)
                            .push_bind(r.request_id.as_deref())
                            .push_bind(r.end_user.as_deref())
                            .push_bind(r.key_id.as_deref())
                            .push_bind(r.model.as_str())
                            .push_bind(r.provider.as_str())
                            .push_bind(r.provider_model.as_str())
                            .push_bind(r.endpoint.as_str())
                            .push_bind(to_i64(r.input_tokens))
                            .push_bind(to_i64(r.cached_input_tokens))
                            .push_bind(to_i64(r.output_tokens))
                            .push_bind(*cost)
                            .push_bind(to_i64(r.latency_ms))
                            .push_bind(i32::from(r.status))
                            .push_bind(r.error.as_deref())
                            .push_bind(r.privacy.as_deref())
                            .push_bind(r.body.as_deref());
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>((Recorded::Written, true))
            };
            match tokio::time::timeout(Self::RECORD_TIME_LIMIT, write).await {
                Ok(Ok((recorded, clean))) => {
                    if clean {
                        connection.keep();
                    }
                    Ok(recorded)
                }
                Ok(Err(error)) => Err(record_failed(error)),
                Err(_) => Err(StoreError::Unanswered(format!(
                    "cannot record usage: no answer in {} s",
                    Self::RECORD_TIME_LIMIT.as_secs()
                ))),
            }
        }
        .await)
    }

    /// How long one try of [`Store::record`] may take, once it has a
    /// connection, before it is given up as [`StoreError::Unanswered`].
    const RECORD_TIME_LIMIT: Duration = Duration::from_secs(20);

    /// How long a written ledger batch's id is kept: far longer than the
    /// ledger writer tries a batch again.
    const LEDGER_BATCHES_KEPT: Duration = Duration::from_secs(3600);

    /// Sums the ledger by key, model, UTC day or end user, from `since_ms`
    /// (Unix milliseconds) on when given. Days come newest first; keys,
    /// models and end users by cost, largest first. Requests without a key
    /// are grouped as `(no key)`, those that named no end user as
    /// [`NO_END_USER`]; two keys sharing a name show their ids.
    pub async fn usage(
        &self,
        by: GroupBy,
        since_ms: Option<i64>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let group = match by {
            GroupBy::Key => "u.key_id, k.name, CAST(NULL AS BIGINT)",
            GroupBy::Model => "u.model, CAST(NULL AS TEXT), CAST(NULL AS BIGINT)",
            GroupBy::Day => "CAST(NULL AS TEXT), CAST(NULL AS TEXT), u.at_ms / 86400000",
            GroupBy::User => "u.end_user, CAST(NULL AS TEXT), CAST(NULL AS BIGINT)",
        };
        let group_by = match by {
            GroupBy::Key => "u.key_id, k.name",
            GroupBy::Model => "u.model",
            GroupBy::Day => "u.at_ms / 86400000",
            GroupBy::User => "u.end_user",
        };
        let sql = format!(
            "SELECT {group}, COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN u.status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(u.input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(u.output_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(u.cost_micros), 0) AS BIGINT) \
             FROM freehold_usage u LEFT JOIN freehold_keys k ON k.id = u.key_id \
             WHERE u.at_ms >= $1 GROUP BY {group_by}"
        );
        type Row = (
            Option<String>,
            Option<String>,
            Option<i64>,
            i64,
            i64,
            i64,
            i64,
            i64,
        );
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(since_ms.unwrap_or(i64::MIN))
                .fetch_all(pool)
                .await
        })
        .map_err(db("cannot read usage"))?;

        // Labels: a key's name (its id too when names repeat), the model,
        // or the day.
        let mut names: HashMap<&str, usize> = HashMap::new();
        if by == GroupBy::Key {
            for (id, name, ..) in &rows {
                if id.is_some() {
                    let name = name.as_deref().or(id.as_deref()).unwrap_or_default();
                    *names.entry(name).or_default() += 1;
                }
            }
        }
        let mut sorted: Vec<(i64, i64, UsageRow)> = rows
            .iter()
            .map(|(a, b, day, requests, errors, input, output, cost)| {
                let group = match by {
                    GroupBy::Key => match (a, b) {
                        (None, _) => "(no key)".to_owned(),
                        (Some(id), None) => id.clone(),
                        (Some(id), Some(name)) if names.get(name.as_str()) > Some(&1) => {
                            format!("{name} ({id})")
                        }
                        (Some(_), Some(name)) => name.clone(),
                    },
                    GroupBy::Model => a.clone().unwrap_or_default(),
                    GroupBy::Day => day_label(day.unwrap_or(0)),
                    GroupBy::User => a.clone().unwrap_or_else(|| NO_END_USER.to_owned()),
                };
                let row = UsageRow {
                    group,
                    requests: to_u64(*requests),
                    errors: to_u64(*errors),
                    input_tokens: to_u64(*input),
                    output_tokens: to_u64(*output),
                    cost_usd: micros_to_usd(*cost),
                };
                (day.unwrap_or(0), *cost, row)
            })
            .collect();
        match by {
            GroupBy::Day => sorted.sort_by_key(|row| std::cmp::Reverse(row.0)),
            GroupBy::Key | GroupBy::Model | GroupBy::User => sorted.sort_by(|a, b| {
                b.1.cmp(&a.1)
                    .then(b.2.requests.cmp(&a.2.requests))
                    .then_with(|| a.2.group.cmp(&b.2.group))
            }),
        }
        Ok(sorted.into_iter().map(|(_, _, row)| row).collect())
    }

    /// The latest `limit` requests of the ledger, from `since_ms` (Unix
    /// milliseconds) on when given, newest first. Bodies are left out.
    pub async fn requests(
        &self,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerLine>, StoreError> {
        self.ledger_lines(since_ms, None, limit).await
    }

    /// The ledger's lines for the request whose id is `request_id` (the
    /// `request-id` its client got back), from `since_ms` on when given,
    /// newest first, at most `limit`: usually one, more when clients gave
    /// the same `x-request-id` to several requests.
    pub async fn requests_with_id(
        &self,
        request_id: &str,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerLine>, StoreError> {
        self.ledger_lines(since_ms, Some(request_id), limit).await
    }

    async fn ledger_lines(
        &self,
        since_ms: Option<i64>,
        request_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LedgerLine>, StoreError> {
        // Every column named with AS: `LedgerRow` reads them by name, and
        // SQLite does not promise the names of columns it was not given.
        const SELECT: &str = "SELECT u.at_ms AS at_ms, u.request_id AS request_id, \
             u.end_user AS end_user, u.key_id AS key_id, k.name AS key_name, u.model AS model, \
             u.provider AS provider, u.provider_model AS provider_model, \
             u.endpoint AS endpoint, u.input_tokens AS input_tokens, \
             u.cached_input_tokens AS cached_input_tokens, u.output_tokens AS output_tokens, \
             u.cost_micros AS cost_micros, u.latency_ms AS latency_ms, u.status AS status, \
             u.error AS error, u.privacy AS privacy \
             FROM freehold_usage u LEFT JOIN freehold_keys k ON k.id = u.key_id ";
        const LATEST: &str = "WHERE u.at_ms >= $1 ORDER BY u.at_ms DESC, u.id DESC LIMIT $2";
        const WITH_ID: &str = "WHERE u.at_ms >= $1 AND u.request_id = $3 \
             ORDER BY u.at_ms DESC, u.id DESC LIMIT $2";
        let sql = format!(
            "{SELECT}{}",
            if request_id.is_some() {
                WITH_ID
            } else {
                LATEST
            }
        );
        let rows: Vec<LedgerRow> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql)
                .bind(since_ms.unwrap_or(i64::MIN))
                .bind(i64::from(limit));
            if let Some(id) = request_id {
                query = query.bind(id);
            }
            query.fetch_all(pool).await
        })
        .map_err(db("cannot read the ledger"))?;
        Ok(rows.into_iter().map(|row| row.0).collect())
    }
}

/// A ledger line as [`Store::ledger_lines`] selects it, read by column
/// name: more columns than sqlx reads into a tuple (16).
struct LedgerRow(LedgerLine);

impl<'r, R> sqlx::FromRow<'r, R> for LedgerRow
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let count = |column: &'static str| row.try_get::<i64, _>(column).map(to_u64);
        Ok(Self(LedgerLine {
            key_name: row.try_get("key_name")?,
            record: UsageRecord {
                at_ms: row.try_get("at_ms")?,
                request_id: row.try_get("request_id")?,
                end_user: row.try_get("end_user")?,
                key_id: row.try_get("key_id")?,
                model: row.try_get("model")?,
                provider: row.try_get("provider")?,
                provider_model: row.try_get("provider_model")?,
                endpoint: row.try_get("endpoint")?,
                input_tokens: count("input_tokens")?,
                cached_input_tokens: count("cached_input_tokens")?,
                output_tokens: count("output_tokens")?,
                cost_usd: row
                    .try_get::<Option<i64>, _>("cost_micros")?
                    .map(micros_to_usd),
                latency_ms: count("latency_ms")?,
                status: u16::try_from(row.try_get::<i32, _>("status")?).unwrap_or(0),
                error: row.try_get("error")?,
                privacy: row.try_get("privacy")?,
                body: None,
            },
        }))
    }
}

/// How many characters of a secret are kept and shown: `fh-` and 8.
const SHOWN_PREFIX: usize = 11;

/// Maps a database error to [`StoreError::Database`] (or
/// [`StoreError::Busy`] when nothing was written) with what was being done.
fn db(doing: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if wrote_nothing(&e) {
            StoreError::Busy(format!("{doing}: {e}"))
        } else {
            StoreError::Database(format!("{doing}: {e}"))
        }
    }
}

/// Whether `error` means the statement certainly did not apply: no
/// connection was had, or the database refused it before committing
/// anything. (A connection lost mid-statement is not one of these: the
/// statement may have been applied.)
fn wrote_nothing(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(error) => matches!(
            error.code().as_deref(),
            // PostgreSQL: serialization failure, deadlock, lock not
            // available, a transaction ended for idling.
            Some("40001" | "40P01" | "55P03" | "25P03")
            // SQLite: busy and locked, with their extended codes.
            | Some("5" | "6" | "261" | "262" | "517")
        ),
        _ => false,
    }
}

/// Whether a failed statement may have been applied all the same: no
/// answer came (the connection lost, or a protocol or driver failure), or
/// the answer says the connection failed rather than refusing the
/// statement (SQLSTATE class 08, which a pooler such as PgBouncer sends
/// when it lost the server mid-statement, and 57P: the server stopping).
fn may_have_applied(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        // Nothing was sent: no connection in time, or the store closed.
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => false,
        _ => true,
    }
}

/// A failed ledger write as the caller sees it: [`StoreError::Unanswered`]
/// when it may have been written (so that it is tried again, as safely as
/// one that was not).
fn record_failed(error: sqlx::Error) -> StoreError {
    if may_have_applied(&error) {
        StoreError::Unanswered(format!("cannot record usage: {error}"))
    } else {
        db("cannot record usage")(error)
    }
}

/// A pooled connection that is closed, not handed back to the pool, unless
/// [`ClosedUnlessKept::keep`] was called: after a failed try, or one cut
/// off (its time limit, its caller gone), the connection may be left in a
/// transaction, or in an aborted one (a `BEGIN` whose settings the server
/// refused, which sqlx does not track), that would fail whatever ran on it
/// next. Closing it makes the server roll back whatever it had not
/// committed.
struct ClosedUnlessKept<DB: sqlx::Database> {
    connection: sqlx::pool::PoolConnection<DB>,
    kept: bool,
}

impl<DB: sqlx::Database> ClosedUnlessKept<DB> {
    fn new(connection: sqlx::pool::PoolConnection<DB>) -> Self {
        Self {
            connection,
            kept: false,
        }
    }

    /// Hands the connection back to the pool when dropped: its last use
    /// ended cleanly.
    fn keep(&mut self) {
        self.kept = true;
    }
}

impl<DB: sqlx::Database> std::ops::Deref for ClosedUnlessKept<DB> {
    type Target = sqlx::pool::PoolConnection<DB>;

    fn deref(&self) -> &Self::Target {
        &self.connection
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for ClosedUnlessKept<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.connection
    }
}

impl<DB: sqlx::Database> Drop for ClosedUnlessKept<DB> {
    fn drop(&mut self) {
        if !self.kept {
            self.connection.close_on_drop();
        }
    }
}

impl StoreError {
    /// Whether the operation wrote nothing and may be tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }

    /// Whether the failure is the database's state rather than the
    /// operation's (busy, out of reach, a connection lost), so that an
    /// operation safe to try again ([`Store::record`]) is worth trying
    /// again for a while.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Unanswered(_))
    }
}

fn key_record(row: KeyRow) -> Result<KeyRecord, StoreError> {
    let (
        id,
        name,
        prefix,
        created_at,
        expires_at,
        revoked_at,
        models,
        rpm,
        tpm,
        budget,
        spent,
        reserved,
        local_only,
    ) = row;
    let allowed_models: Vec<String> = serde_json::from_str(&models)
        .map_err(|e| StoreError::Database(format!("key {id} has an unreadable model list: {e}")))?;
    let limit = |v: Option<i64>| v.map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX));
    Ok(KeyRecord {
        id,
        name,
        prefix,
        created_at,
        expires_at,
        revoked_at,
        allowed_models,
        rpm: limit(rpm),
        tpm: limit(tpm),
        budget_usd: budget.map(micros_to_usd),
        spent_usd: micros_to_usd(spent),
        reserved_usd: micros_to_usd(reserved),
        local_only,
    })
}

/// Chooses among the keys matching `which` (by id, name or prefix).
fn pick_key(which: &str, mut keys: Vec<KeyRecord>) -> Result<KeyRecord, StoreError> {
    if let Some(i) = keys.iter().position(|k| k.id == which) {
        return Ok(keys.swap_remove(i));
    }
    if keys.len() > 1 {
        let active: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].revoked_at.is_none())
            .collect();
        if let [only] = active[..] {
            return Ok(keys.swap_remove(only));
        }
        return Err(StoreError::AmbiguousKey {
            which: which.to_owned(),
            matches: keys.into_iter().map(|k| k.id).collect(),
        });
    }
    keys.pop()
        .ok_or_else(|| StoreError::UnknownKey(which.to_owned()))
}

fn validate_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Invalid("a key needs a name".into()));
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "invalid key name `{}`: at most 64 printable characters",
            name.escape_debug()
        )));
    }
    Ok(name.to_owned())
}

/// USD to micro-dollars, refusing what cannot be money.
fn usd_to_micros(usd: f64, what: &str) -> Result<i64, StoreError> {
    if !usd.is_finite() || !(0.0..=MAX_USD).contains(&usd) {
        return Err(StoreError::Invalid(format!(
            "{what} must be between 0 and {MAX_USD} USD, not {usd}"
        )));
    }
    // In range by the check above: at most 1e15, exact in an i64.
    Ok((usd * 1e6).round() as i64)
}

/// A cost in micro-dollars, held to 0…[`MAX_USD`] (NaN counts as 0): for
/// costs computed from what an upstream reported, where refusing would
/// lose the record.
fn clamped_micros(usd: f64) -> i64 {
    let usd = if usd.is_nan() {
        0.0
    } else {
        usd.clamp(0.0, MAX_USD)
    };
    (usd * 1e6).round() as i64
}

fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sha256_hex(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn random_bytes(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf)
        .map_err(|e| StoreError::Invalid(format!("the operating system gave no random bytes: {e}")))
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; bytes];
    random_bytes(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a virtual key's secret begins.
const SECRET_PREFIX: &str = "fh-";
/// How many base-62 characters follow [`SECRET_PREFIX`].
const SECRET_RANDOM_CHARS: usize = 48;

/// Whether `secret` has the shape of a virtual key's secret (`fh-` and 48
/// letters and digits), so that anything else is refused without a
/// lookup.
pub fn could_be_key_secret(secret: &str) -> bool {
    secret.len() == SECRET_PREFIX.len() + SECRET_RANDOM_CHARS
        && secret.starts_with(SECRET_PREFIX)
        && secret[SECRET_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric())
}

/// `fh-` and 48 base-62 characters (about 285 bits).
fn random_secret() -> Result<String, StoreError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const LEN: usize = SECRET_RANDOM_CHARS;
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + LEN);
    secret.push_str(SECRET_PREFIX);
    let mut buf = [0u8; 64];
    while secret.len() < SECRET_PREFIX.len() + LEN {
        random_bytes(&mut buf)?;
        // 248 = 4 × 62: bytes above it are dropped so that every character
        // is equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if secret.len() == SECRET_PREFIX.len() + LEN {
                break;
            }
            secret.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(secret)
}

/// `YYYY-MM-DD` of a count of days since 1970-01-01.
fn day_label(days: i64) -> String {
    freehold_protocol::time::utc_date(days.saturating_mul(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(11_016), "2000-02-29");
        assert_eq!(day_label(20_454), "2026-01-01");
    }

    #[test]
    fn secrets() {
        let a = random_secret().unwrap();
        let b = random_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 51);
        assert!(a.starts_with("fh-"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(sha256_hex("abc").len(), 64);
        // What the gateway looks up: its own secrets, nothing shaped otherwise.
        assert!(could_be_key_secret(&a));
        for other in [
            "fh-short",
            "sk-ant-api03-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST",
            &format!("fh-{}", "x".repeat(47)),
            &format!("fh-{}", "x".repeat(49)),
            &format!("fh-{}-", "x".repeat(47)),
            &format!("fh-{}é", "x".repeat(46)),
            &format!("xx-{}", "x".repeat(48)),
        ] {
            assert!(!could_be_key_secret(other), "{other}");
        }
    }

    #[test]
    fn money() {
        assert_eq!(usd_to_micros(1.5, "x").unwrap(), 1_500_000);
        assert_eq!(usd_to_micros(0.000_000_4, "x").unwrap(), 0);
        assert!(usd_to_micros(-1.0, "x").is_err());
        assert!(usd_to_micros(f64::NAN, "x").is_err());
        assert_eq!(micros_to_usd(usd_to_micros(0.1, "x").unwrap()), 0.1);
        assert_eq!(clamped_micros(2e9), 1_000_000_000_000_000);
        assert_eq!(clamped_micros(f64::NAN), 0);
        assert_eq!(clamped_micros(-3.0), 0);
    }

    #[test]
    fn only_failures_that_wrote_nothing_are_retryable() {
        assert!(db("x")(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!db("x")(sqlx::Error::RowNotFound).is_retryable());
        assert!(!db("x")(sqlx::Error::PoolClosed).is_retryable());
    }

    #[test]
    fn statements_that_got_no_answer_may_have_been_applied() {
        // Nothing was sent: no connection was had.
        assert!(!may_have_applied(&sqlx::Error::PoolTimedOut));
        assert!(!may_have_applied(&sqlx::Error::PoolClosed));
        let lost = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection lost");
        assert!(may_have_applied(&sqlx::Error::Io(lost)));
        assert!(may_have_applied(&sqlx::Error::Protocol("garbled".into())));
        assert!(may_have_applied(&sqlx::Error::WorkerCrashed));
    }
}
