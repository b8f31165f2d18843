//! Versioned schema migrations, embedded in the binary.
//!
//! Applied versions are kept in `freehold_migrations` (not sqlx's
//! `_sqlx_migrations`, so a PostgreSQL database shared with other software
//! does not mix its history with ours). Each run happens under a lock, so
//! that several processes opening the same database at once are fine:
//! SQLite's write lock (`BEGIN IMMEDIATE`), or a PostgreSQL transaction
//! advisory lock. A database migrated by a newer Freehold is refused rather
//! than misread.

use sqlx::{PgPool, SqlitePool};

/// One schema version, in each backend's dialect.
struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration, oldest first. Never edit a released one: add another.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "keys and usage ledger",
        sqlite: include_str!("migrations/sqlite_0001_init.sql"),
        postgres: include_str!("migrations/postgres_0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "budget reservations that outlive a dead gateway are released",
        sqlite: include_str!("migrations/sqlite_0002_reservations.sql"),
        postgres: include_str!("migrations/postgres_0002_reservations.sql"),
    },
    Migration {
        version: 3,
        description: "per-key rate limits shared by the gateways using the database",
        sqlite: include_str!("migrations/sqlite_0003_rate_windows.sql"),
        postgres: include_str!("migrations/postgres_0003_rate_windows.sql"),
    },
    Migration {
        version: 4,
        description: "gateway leases, so that a dead gateway's reservations are released soon",
        sqlite: include_str!("migrations/sqlite_0004_gateway_leases.sql"),
        postgres: include_str!("migrations/postgres_0004_gateway_leases.sql"),
    },
    Migration {
        version: 5,
        description: "SQLite takes and settles a budget hold in one statement",
        sqlite: include_str!("migrations/sqlite_0005_budget_triggers.sql"),
        postgres: include_str!("migrations/postgres_0005_budget_triggers.sql"),
    },
    Migration {
        version: 6,
        description: "holds released by the sweep are remembered, so that a settlement is applied once",
        sqlite: include_str!("migrations/sqlite_0006_released_holds.sql"),
        postgres: include_str!("migrations/postgres_0006_released_holds.sql"),
    },
    Migration {
        version: 7,
        description: "ledger batches are remembered, so that a batch tried again is written once",
        sqlite: include_str!("migrations/sqlite_0007_ledger_batches.sql"),
        postgres: include_str!("migrations/postgres_0007_ledger_batches.sql"),
    },
    Migration {
        version: 8,
        description: "each ledger line names its request by the id its client got back",
        sqlite: include_str!("migrations/sqlite_0008_request_ids.sql"),
        postgres: include_str!("migrations/postgres_0008_request_ids.sql"),
    },
    Migration {
        version: 9,
        description: "each ledger line names the end user its client sent the request for",
        sqlite: include_str!("migrations/sqlite_0009_end_users.sql"),
        postgres: include_str!("migrations/postgres_0009_end_users.sql"),
    },
];

const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS freehold_migrations (\
     version BIGINT PRIMARY KEY, \
     description TEXT NOT NULL, \
     applied_at BIGINT NOT NULL)";

const RECORD: &str =
    "INSERT INTO freehold_migrations (version, description, applied_at) VALUES ($1, $2, $3)";

/// The advisory lock key taken while migrating a PostgreSQL database
/// ("freehold" in ASCII).
const PG_LOCK: i64 = 0x0066_7265_6568_6f6c;

/// What went wrong while migrating.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(
        "its schema is version {found}, newer than this freehold knows ({known}): upgrade freehold"
    )]
    TooNew { found: i64, known: i64 },
}

/// Brings a SQLite database up to date.
pub(crate) async fn sqlite(pool: &SqlitePool) -> Result<(), MigrateError> {
    // IMMEDIATE takes the write lock now: a second process waits here (busy
    // timeout) and then finds the work done.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(CREATE_HISTORY).execute(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM freehold_migrations")
        .fetch_all(&mut *tx)
        .await?;
    check_known(&applied)?;
    for migration in pending(&applied) {
        sqlx::raw_sql(migration.sqlite).execute(&mut *tx).await?;
        sqlx::query(RECORD)
            .bind(migration.version)
            .bind(migration.description)
            .bind(super::unix_now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Brings a PostgreSQL database up to date.
pub(crate) async fn postgres(pool: &PgPool) -> Result<(), MigrateError> {
    let mut tx = pool.begin().await?;
    // Held until commit; other processes migrating wait here.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(CREATE_HISTORY).execute(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM freehold_migrations")
        .fetch_all(&mut *tx)
        .await?;
    check_known(&applied)?;
    for migration in pending(&applied) {
        sqlx::raw_sql(migration.postgres).execute(&mut *tx).await?;
        sqlx::query(RECORD)
            .bind(migration.version)
            .bind(migration.description)
            .bind(super::unix_now())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn pending(applied: &[i64]) -> impl Iterator<Item = &'static Migration> + '_ {
    MIGRATIONS
        .iter()
        .filter(move |m| !applied.contains(&m.version))
}

fn check_known(applied: &[i64]) -> Result<(), MigrateError> {
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    match applied.iter().copied().max() {
        Some(found) if found > known => Err(MigrateError::TooNew { found, known }),
        _ => Ok(()),
    }
}
