//! Per-key rate limits kept in the database, so that every gateway sharing
//! it enforces one limit instead of one each.
//!
//! Each limited key has a row with the requests and tokens counted in the
//! current minute and in the minute before it, minutes being aligned on
//! the database's clock. The count "in the last 60 seconds" is estimated
//! from those two: all of the current minute, plus the share of the
//! previous minute that the sliding window still covers (the previous
//! minute's traffic taken as spread evenly). A request is admitted by one
//! statement, an upsert that creates the key's row or rolls it over to the
//! current minute, and counts the request only if the estimate stays
//! within the limits: concurrent admissions, from any gateway, are
//! serialised on the row.

use std::sync::LazyLock;

use super::{Pool, SQLITE_NOW_MS, Store, StoreError, db, to_i64, to_u64};

/// The window limits count over, in milliseconds.
const WINDOW_MS: i64 = 60_000;

/// The most a count holds, so that the estimate's arithmetic (two counts
/// times the window) never overflows a BIGINT, whatever token counts an
/// upstream reports.
const MAX_COUNT: i64 = i64::MAX / (2 * WINDOW_MS);

/// One key's counts as the database had them when it refused a request,
/// already rolled over to the current minute: what a refusal needs to say
/// when to retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// Requests counted in the minute before the current one.
    pub previous_requests: u64,
    /// Requests counted in the current minute.
    pub requests: u64,
    /// Tokens counted in the minute before the current one.
    pub previous_tokens: u64,
    /// Tokens counted in the current minute.
    pub tokens: u64,
    /// How far the database's clock is into the current minute, in
    /// milliseconds (0 to 59,999).
    pub elapsed_ms: u64,
}

/// The statements of one backend, written once from its clock expression.
struct RateSql {
    admit: String,
    read: String,
    add_tokens: String,
}

impl RateSql {
    /// `now` must give the same Unix milliseconds wherever it appears in one
    /// statement.
    fn new(now: &str) -> Self {
        let minute = format!("(({now}) / {WINDOW_MS} * {WINDOW_MS})");
        // Columns are named with their table: in an upsert's update, a bare
        // name could also mean the row that was proposed (PostgreSQL
        // refuses it as ambiguous).
        let column = |name: &str| format!("freehold_rate_windows.{name}");
        let start = column("window_start_ms");
        // A row can be ahead of a statement's clock: PostgreSQL stamps a
        // statement when it arrives, not when it gets the row, so one
        // stamped just before a minute's end can run after one stamped
        // just after it. The row's minute never moves back (that would
        // forget the newer minute's counts); such a statement is taken to
        // run at the start of the row's minute, where the previous minute
        // weighs the most.
        let ahead = format!("{start} > {minute}");
        let window = format!("(CASE WHEN {ahead} THEN {start} ELSE {minute} END)");
        let elapsed = format!("(CASE WHEN {ahead} THEN 0 ELSE ({now}) - {minute} END)");
        // Counts as of the row's new minute: a row last written in the
        // previous minute moves its counts to `prev_*`; an older row
        // counts nothing.
        let current = |count: &str| {
            let count = column(count);
            format!("(CASE WHEN {start} >= {minute} THEN {count} ELSE 0 END)")
        };
        let previous = |count: &str, prev: &str| {
            let (count, prev) = (column(count), column(prev));
            format!(
                "(CASE WHEN {start} >= {minute} THEN {prev} \
                 WHEN {start} = {minute} - {WINDOW_MS} THEN {count} ELSE 0 END)"
            )
        };
        let (requests, prev_requests) =
            (current("requests"), previous("requests", "prev_requests"));
        let (tokens, prev_tokens) = (current("tokens"), previous("tokens", "prev_tokens"));
        let roll_over = format!(
            "window_start_ms = {window}, prev_requests = {prev_requests}, \
             prev_tokens = {prev_tokens}"
        );
        // The estimate times WINDOW_MS, so that the comparison stays in
        // integers: previous × (window − elapsed) + current × window.
        // A key's first limited request creates its row, counted.
        // The prompt's estimate ($4) is counted with the request; the
        // check is on the tokens counted before it, so that one request
        // larger than the whole limit still passes into an empty window.
        let admit = format!(
            "INSERT INTO freehold_rate_windows (key_id, window_start_ms, requests, tokens) \
             VALUES ($1, {minute}, 1, CAST($4 AS BIGINT)) \
             ON CONFLICT (key_id) DO UPDATE SET {roll_over}, \
             requests = {requests} + 1, \
             tokens = CASE WHEN {tokens} > {MAX_COUNT} - CAST($4 AS BIGINT) THEN {MAX_COUNT} \
                      ELSE {tokens} + CAST($4 AS BIGINT) END \
             WHERE (CAST($2 AS BIGINT) IS NULL OR \
                  {prev_requests} * ({WINDOW_MS} - {elapsed}) + ({requests} + 1) * {WINDOW_MS} \
                  <= CAST($2 AS BIGINT) * {WINDOW_MS}) \
             AND (CAST($3 AS BIGINT) IS NULL OR \
                  {prev_tokens} * ({WINDOW_MS} - {elapsed}) + {tokens} * {WINDOW_MS} \
                  < CAST($3 AS BIGINT) * {WINDOW_MS})"
        );
        let read = format!(
            "SELECT {prev_requests}, {requests}, {prev_tokens}, {tokens}, {elapsed} \
             FROM freehold_rate_windows WHERE key_id = $1"
        );
        let add_tokens = format!(
            "UPDATE freehold_rate_windows SET {roll_over}, \
             requests = {requests}, \
             tokens = CASE WHEN {tokens} > {MAX_COUNT} - $2 THEN {MAX_COUNT} ELSE {tokens} + $2 END \
             WHERE key_id = $1"
        );
        Self {
            admit,
            read,
            add_tokens,
        }
    }
}

static SQLITE: LazyLock<RateSql> = LazyLock::new(|| RateSql::new(SQLITE_NOW_MS));

// `statement_timestamp()` is fixed for one statement (`clock_timestamp()`
// would move between the expressions of one UPDATE).
static POSTGRES: LazyLock<RateSql> = LazyLock::new(|| {
    RateSql::new("CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)")
});

impl Store {
    fn rate_sql(&self) -> &'static RateSql {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE,
            Pool::Postgres(_) => &POSTGRES,
        }
    }

    /// Counts a request of `key_id` against its per-minute limits if it
    /// stays within them: `Ok(None)` when admitted, `Ok(Some(window))`,
    /// with the counts that refused it, when not. `None` limits are not
    /// checked; a limit of 0 refuses everything. An admitted request's
    /// `input_tokens` (its prompt's estimate; 0 for a key without a token
    /// limit) are counted with it, and the rest of its tokens afterwards,
    /// by [`Store::add_rate_tokens`]; a key over its token limit is refused
    /// until enough of them leave the window.
    ///
    /// # Errors
    /// [`StoreError::UnknownKey`], or a database failure.
    pub async fn admit_rate(
        &self,
        key_id: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        input_tokens: u64,
    ) -> Result<Option<RateWindow>, StoreError> {
        // A limit of nothing: no request passes, none is counted.
        if rpm == Some(0) || tpm == Some(0) {
            return Ok(Some(RateWindow::default()));
        }
        let sql = self.rate_sql();
        // Counted, not read back with RETURNING: a statement SQLite drops
        // after its first row would lose a failed commit.
        let admitted: Result<u64, sqlx::Error> = with_pool!(self, pool => {
            sqlx::query(&sql.admit)
                .bind(key_id)
                .bind(rpm.map(i64::from))
                .bind(tpm.map(i64::from))
                .bind(to_i64(input_tokens).min(MAX_COUNT))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match admitted {
            Ok(1..) => return Ok(None),
            Ok(0) => {}
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(StoreError::UnknownKey(key_id.to_owned()));
            }
            Err(error) => return Err(db("cannot check the key's rate limit")(error)),
        }
        // Refused: the row exists. Read it only to say when to retry.
        let row: Option<(i64, i64, i64, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(&sql.read).bind(key_id).fetch_optional(pool).await
        })
        .map_err(db("cannot check the key's rate limit"))?;
        let (previous_requests, requests, previous_tokens, tokens, elapsed_ms) =
            row.unwrap_or_default();
        Ok(Some(RateWindow {
            previous_requests: to_u64(previous_requests),
            requests: to_u64(requests),
            previous_tokens: to_u64(previous_tokens),
            tokens: to_u64(tokens),
            elapsed_ms: to_u64(elapsed_ms),
        }))
    }

    /// Adds `tokens` used by a finished request of `key_id` to its current
    /// minute. A key without a row (never admitted by
    /// [`Store::admit_rate`]) is left alone.
    ///
    /// # Errors
    /// A database failure.
    pub async fn add_rate_tokens(&self, key_id: &str, tokens: u64) -> Result<(), StoreError> {
        let sql = self.rate_sql();
        with_pool!(self, pool => {
            sqlx::query(&sql.add_tokens)
                .bind(key_id)
                .bind(to_i64(tokens).min(MAX_COUNT))
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(db("cannot count the key's tokens"))?;
        Ok(())
    }
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}
