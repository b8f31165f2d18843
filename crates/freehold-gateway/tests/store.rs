//! The store on real databases: SQLite in a temporary directory, and
//! PostgreSQL at `FREEHOLD_TEST_POSTGRES` (`scripts/postgres-test start`
//! prints one; `scripts/test` starts it). Each PostgreSQL test creates its
//! own database there (the URL's user needs CREATEDB) and drops it after.
//! Without the variable the PostgreSQL tests print "skipped", except under
//! CI, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use freehold_gateway::store::{
    BatchId, GroupBy, KeyState, MAX_RECORDED_END_USER, NO_END_USER, NewKey, Recorded, Reservation,
    Store, StoreError, UsageRecord, recorded_end_user, unix_now,
};
use sqlx::Connection;

/// One database for one test.
enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        /// The server's URL, for creating and dropping the test's database.
        admin: String,
        url: String,
        name: String,
    },
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        // A parent that does not exist yet: open creates it.
        let path = dir.path().join("nested/dir/gateway.db");
        TestDb::Sqlite {
            url: format!("sqlite:{}", path.display()),
            dir,
        }
    }

    /// A fresh database on the test server, or `None` (skipped) without one.
    async fn postgres() -> Option<TestDb> {
        let admin = freehold_test_support::test_postgres()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "freehold_t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin_conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin_conn)
            .await
            .unwrap();
        admin_conn.close().await.unwrap();
        let url = with_database(&admin, &name);
        Some(TestDb::Postgres { admin, url, name })
    }

    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// Everything stored about keys, as text, to look for secrets in.
    async fn raw_keys(&self) -> String {
        match self {
            TestDb::Sqlite { dir, .. } => {
                // The database and its write-ahead log, byte for byte.
                let mut all = Vec::new();
                for entry in std::fs::read_dir(dir.path().join("nested/dir")).unwrap() {
                    all.extend(std::fs::read(entry.unwrap().path()).unwrap());
                }
                String::from_utf8_lossy(&all).into_owned()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let rows: Vec<String> =
                    sqlx::query_scalar("SELECT CAST(k AS TEXT) FROM freehold_keys k")
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                conn.close().await.unwrap();
                rows.join("\n")
            }
        }
    }

    /// The expiries of the held reservations, in Unix milliseconds.
    async fn reservation_expiries(&self) -> Vec<i64> {
        let sql = "SELECT expires_at_ms FROM freehold_reservations ORDER BY expires_at_ms";
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
        }
    }

    /// The one integer `sql` selects, on its own connection.
    async fn scalar(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                let value = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                value
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let value = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                value
            }
        }
    }

    /// Runs `sql` on its own connection.
    async fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    async fn finish(self) {
        if let TestDb::Postgres { admin, name, .. } = self {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::raw_sql(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// Each check runs on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let db = super::TestDb::sqlite().await;
                    super::$check(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$check(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both!(
    keys_lifecycle,
    expired_and_revoked_keys_are_returned,
    reserve_and_settle,
    concurrent_reservations_never_exceed_the_budget,
    two_stores_share_one_budget,
    usage_by_key_model_and_day,
    usage_by_end_user,
    requests_list_the_latest_lines,
    large_batches_are_written_whole,
    reopening_keeps_data_and_migrates_once,
    expired_reservations_are_released_once,
    rate_limits_hold_across_stores,
    rate_windows_roll_over_by_the_minute,
    holds_of_a_gateway_whose_lease_ran_out_are_released,
    a_settlement_racing_a_release_takes_the_hold_off_once,
    a_hold_taken_by_an_older_gateway_is_counted_once,
    a_database_from_a_newer_freehold_is_refused,
    a_cost_out_of_range_is_held_to_the_range,
    a_settlement_tried_again_is_applied_once,
    two_tries_of_one_settlement_at_once_apply_it_once,
    a_ledger_batch_tried_again_is_written_once,
    an_unanswered_reservation_is_released_whatever_became_of_it,
);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Asserts a key's spent and reserved totals, in USD.
async fn assert_totals(store: &Store, key_id: &str, spent: f64, reserved: f64) {
    let key = store.key_by_id(key_id).await.unwrap().unwrap();
    assert!(
        close(key.spent_usd, spent) && close(key.reserved_usd, reserved),
        "expected ${spent} spent and ${reserved} reserved: {key:?}"
    );
}

async fn keys_lifecycle(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let expected_backend = match db {
        TestDb::Sqlite { .. } => "sqlite",
        TestDb::Postgres { .. } => "postgres",
    };
    assert_eq!(store.backend(), expected_backend);
    assert!(store.list_keys().await.unwrap().is_empty());
    // Where the database is, as logs show it: never its password, however
    // the URL gives it.
    if let TestDb::Postgres { url, .. } = db {
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(credentials, _)| credentials.split_once(':'))
            .map(|(_, password)| password.to_owned())
            .expect("the test server's URL holds a password");
        assert!(
            !store.location().contains(&password),
            "{}",
            store.location()
        );
        let (base, query) = url
            .split_once('?')
            .map_or((url.as_str(), ""), |(b, q)| (b, q));
        let moved = format!(
            "{}?password={password}{}{query}",
            base.replacen(&format!(":{password}@"), "@", 1),
            if query.is_empty() { "" } else { "&" }
        );
        let again = Store::open(&moved).await.unwrap();
        assert!(
            !again.location().contains(&password),
            "{}",
            again.location()
        );
        again.close().await;
    }

    let (alice, secret) = store
        .create_key(NewKey {
            name: "alice".into(),
            expires_at: Some(unix_now() + 3600),
            allowed_models: vec![
                "gpt-4o".into(),
                " claude ".into(),
                "gpt-4o".into(),
                String::new(),
            ],
            rpm: Some(60),
            tpm: Some(100_000),
            budget_usd: Some(12.5),
            local_only: true,
        })
        .await
        .unwrap();
    assert!(secret.starts_with("fh-") && secret.len() >= 43, "{secret}");
    assert!(secret[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(alice.id.starts_with("key_"));
    assert_eq!(alice.prefix, secret[..11]);
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.allowed_models, ["gpt-4o", "claude"]);
    assert_eq!((alice.rpm, alice.tpm), (Some(60), Some(100_000)));
    assert_eq!(alice.budget_usd, Some(12.5));
    assert_eq!((alice.spent_usd, alice.reserved_usd), (0.0, 0.0));
    assert!(alice.local_only);
    assert!(alice.revoked_at.is_none());
    assert!((alice.created_at - unix_now()).abs() < 60);
    assert_eq!(alice.state(unix_now()), KeyState::Active);

    let (bob, bob_secret) = store
        .create_key(NewKey {
            name: "bob".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_ne!(secret, bob_secret);
    assert!(bob.allowed_models.is_empty());
    assert_eq!(
        (bob.rpm, bob.budget_usd, bob.expires_at),
        (None, None, None)
    );

    // The secret is not stored anywhere; the key is.
    let raw = db.raw_keys().await;
    assert!(raw.contains("alice"), "the dump shows the stored keys");
    assert!(!raw.contains(&secret), "the secret must not be stored");
    assert!(!raw.contains(&bob_secret), "the secret must not be stored");

    assert_eq!(
        store.list_keys().await.unwrap(),
        [alice.clone(), bob.clone()]
    );
    assert_eq!(
        store.key_by_secret(&secret).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.key_by_secret(&bob_secret).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(store.key_by_secret("fh-nope").await.unwrap(), None);
    assert_eq!(store.key_by_id(&bob.id).await.unwrap(), Some(bob.clone()));

    // One active key per name.
    let taken = store
        .create_key(NewKey {
            name: "alice".into(),
            ..NewKey::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(taken, StoreError::NameTaken(ref n) if n == "alice"),
        "{taken}"
    );
    let empty = store.create_key(NewKey::default()).await.unwrap_err();
    assert!(matches!(empty, StoreError::Invalid(_)), "{empty}");

    // Revoke by name, by prefix and by id.
    let revoked = store.revoke_key("alice").await.unwrap();
    assert_eq!(revoked.id, alice.id);
    let revoked_at = revoked.revoked_at.expect("revoked_at is set");
    assert_eq!(revoked.state(unix_now()), KeyState::Revoked);
    // Again: nothing changes.
    assert_eq!(store.revoke_key(&alice.id).await.unwrap(), revoked);
    assert_eq!(store.revoke_key(&bob.prefix).await.unwrap().id, bob.id);

    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed[0].revoked_at, Some(revoked_at));
    assert!(listed.iter().all(|k| k.revoked_at.is_some()));

    // The name is free again; revoking it picks the active one.
    let (alice2, _) = store
        .create_key(NewKey {
            name: "alice".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_eq!(store.revoke_key("alice").await.unwrap().id, alice2.id);
    // Now two revoked keys are named alice: ambiguous.
    let ambiguous = store.revoke_key("alice").await.unwrap_err();
    match &ambiguous {
        StoreError::AmbiguousKey { which, matches } => {
            assert_eq!(which, "alice");
            assert_eq!(matches.len(), 2);
        }
        other => panic!("expected AmbiguousKey, got {other}"),
    }
    assert!(ambiguous.to_string().contains(&alice.id), "{ambiguous}");

    let unknown = store.revoke_key("carol").await.unwrap_err();
    assert!(matches!(unknown, StoreError::UnknownKey(_)), "{unknown}");
    assert!(unknown.to_string().contains("freehold keys list"));
    store.close().await;
}

async fn expired_and_revoked_keys_are_returned(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let now = unix_now();
    let (old, secret) = store
        .create_key(NewKey {
            name: "old".into(),
            expires_at: Some(now - 10),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let found = store.key_by_secret(&secret).await.unwrap().unwrap();
    assert_eq!(found.id, old.id);
    assert_eq!(found.expires_at, Some(now - 10));
    assert_eq!(found.state(now), KeyState::Expired);
    // Revoked wins over expired.
    store.revoke_key(&old.id).await.unwrap();
    let found = store.key_by_secret(&secret).await.unwrap().unwrap();
    assert!(found.revoked_at.is_some());
    assert_eq!(found.state(now), KeyState::Revoked);
    store.close().await;
}

async fn reserve_and_settle(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "capped".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let first = store.reserve(&key.id, 0.4).await.unwrap();
    assert_eq!(first.key_id, key.id);
    assert!(close(first.amount_usd, 0.4));
    let second = store.reserve(&key.id, 0.4).await.unwrap();
    let refused = store.reserve(&key.id, 0.4).await.unwrap_err();
    match refused {
        StoreError::BudgetExhausted {
            budget,
            spent,
            reserved,
        } => {
            assert!(close(budget, 1.0) && close(spent, 0.0) && close(reserved, 0.8));
        }
        other => panic!("expected BudgetExhausted, got {other}"),
    }

    // Settling releases the hold and adds the actual cost.
    store.settle(&first, 0.5).await.unwrap();
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.spent_usd, 0.5) && close(now.reserved_usd, 0.4));
    // Exactly up to the budget: 0.5 + 0.4 + 0.1 = 1.0.
    let third = store.reserve(&key.id, 0.1).await.unwrap();
    assert!(store.reserve(&key.id, 0.000_001).await.is_err());
    // A failed request: released, nothing spent.
    store.settle(&third, 0.0).await.unwrap();
    // An answer dearer than its reservation takes spent over the budget.
    store.settle(&second, 0.7).await.unwrap();
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.spent_usd, 1.2) && close(now.reserved_usd, 0.0));
    assert!(store.reserve(&key.id, 0.0).await.is_err());

    // No budget: always granted, still counted.
    let (free, _) = store
        .create_key(NewKey {
            name: "free".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let hold = store.reserve(&free.id, 1000.0).await.unwrap();
    store.settle(&hold, 2.25).await.unwrap();
    let now = store.key_by_id(&free.id).await.unwrap().unwrap();
    assert!(close(now.spent_usd, 2.25) && close(now.reserved_usd, 0.0));

    let unknown = store.reserve("key_nope", 0.1).await.unwrap_err();
    assert!(matches!(unknown, StoreError::UnknownKey(_)), "{unknown}");
    let negative = store.reserve(&free.id, -1.0).await.unwrap_err();
    assert!(matches!(negative, StoreError::Invalid(_)), "{negative}");
    assert!(store.reserve(&free.id, f64::NAN).await.is_err());
    store.close().await;
}

/// 50 callers race for a budget that holds exactly 7 reservations.
async fn concurrent_reservations_never_exceed_the_budget(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "race".into(),
            budget_usd: Some(0.7),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let id = key.id.clone();
            tokio::spawn(async move { store.reserve(&id, 0.1).await })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(reservation) => granted.push(reservation),
            Err(StoreError::BudgetExhausted { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(granted.len(), 7);
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.reserved_usd, 0.7), "{}", now.reserved_usd);

    let settles: Vec<_> = granted
        .into_iter()
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move { store.settle(&r, 0.1).await })
        })
        .collect();
    for settle in settles {
        settle.await.unwrap().unwrap();
    }
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.spent_usd, 0.7) && close(now.reserved_usd, 0.0));
    store.close().await;
}

/// A database whose default isolation is serializable (set by its
/// administrator) changes nothing: the store asks for read committed, which
/// its conditional statements are written for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serializable_postgres_default_changes_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    db.execute(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'serializable'"
    ))
    .await;
    // Two stores migrating an empty database at once, then 50 racing holds.
    reopening_keeps_data_and_migrates_once(&db).await;
    concurrent_reservations_never_exceed_the_budget(&db).await;
    db.finish().await;
}

/// Two stores (as two gateway processes would open) enforce one budget.
async fn two_stores_share_one_budget(db: &TestDb) {
    let a = Store::open(db.url()).await.unwrap();
    let b = Store::open(db.url()).await.unwrap();
    let (key, _) = a
        .create_key(NewKey {
            name: "shared".into(),
            budget_usd: Some(1.3),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = key.id.clone();
            tokio::spawn(async move { store.reserve(&id, 0.1).await.is_ok() })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 13);
    for store in [&a, &b] {
        let now = store.key_by_id(&key.id).await.unwrap().unwrap();
        assert!(close(now.reserved_usd, 1.3), "{}", now.reserved_usd);
    }
    a.close().await;
    b.close().await;
}

/// Another connection holding a key's row (PostgreSQL) or the write lock
/// (SQLite), so that statements that need it wait.
enum KeyLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl KeyLock {
    async fn take(db: &TestDb, key_id: &str) -> KeyLock {
        match db {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                KeyLock::Sqlite(conn)
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
                // The lock a budget's UPDATE takes: it does not stop the
                // foreign-key checks of rows naming the key.
                sqlx::query("SELECT id FROM freehold_keys WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(key_id)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                KeyLock::Postgres(conn)
            }
        }
    }

    /// Lets go after `delay`, giving what waits on it time to start.
    async fn release_after(self, delay: Duration) {
        tokio::time::sleep(delay).await;
        self.release().await;
    }

    /// Lets go once `waiters` statements of the test's database wait on a
    /// lock (on PostgreSQL; on SQLite, after 300 ms), or fails after 30 s.
    async fn release_once_waited_on(self, db: &TestDb, waiters: i64) {
        if let TestDb::Postgres { .. } = db {
            let waiting = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                           WHERE datname = current_database() AND wait_event_type = 'Lock'";
            let mut seen = 0;
            for _ in 0..3000 {
                seen = db.scalar(waiting).await;
                if seen >= waiters {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(seen >= waiters, "{seen} of {waiters} statements waited");
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.release().await;
    }

    async fn release(self) {
        match self {
            KeyLock::Sqlite(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
            KeyLock::Postgres(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Two tries of one settlement at once (the second started while the
/// first is still running, both held up behind a lock) apply it once, for
/// a hold still held and for one the sweep released.
async fn two_tries_of_one_settlement_at_once_apply_it_once(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "twice".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let held = store.reserve(&key.id, 0.4).await.unwrap();
    let released = store
        .reserve_for(&key.id, 0.2, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 1);

    let lock = KeyLock::take(db, &key.id).await;
    let (a, b, c, d, ()) = tokio::join!(
        store.settle(&held, 0.3),
        store.settle(&held, 0.3),
        store.settle(&released, 0.1),
        store.settle(&released, 0.1),
        // On PostgreSQL, once all four wait: each first try on the key's
        // row, each second on the row the first took. (SQLite runs them
        // one at a time once the lock is gone.)
        lock.release_once_waited_on(db, 4)
    );
    for result in [a, b, c, d] {
        result.unwrap();
    }
    assert_totals(&store, &key.id, 0.4, 0.0).await;
    store.close().await;
}

/// A late settlement and the sweep that releases the same expired hold,
/// both held up behind a lock on the key (so that they run into each
/// other), take the hold off once between them and add the cost once.
async fn a_settlement_racing_a_release_takes_the_hold_off_once(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "raced".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let late = store
        .reserve_for(&key.id, 0.3, Duration::ZERO)
        .await
        .unwrap();
    let live = store
        .reserve_for(&key.id, 0.5, Duration::from_secs(3600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Another connection holds the key's row (PostgreSQL) or the write
    // lock (SQLite) while both start.
    let lock = KeyLock::take(db, &key.id).await;
    let (settled, released, ()) = tokio::join!(
        store.settle(&late, 0.1),
        store.release_expired_reservations(),
        lock.release_after(Duration::from_millis(200))
    );
    settled.unwrap();
    assert!(released.unwrap() <= 1);
    assert_totals(&store, &key.id, 0.1, 0.5).await;
    store.settle(&live, 0.0).await.unwrap();
    store.close().await;
}

/// A settlement tried again (its first answer lost, though the database
/// applied it) is applied once, whether the hold was still held or had
/// been released by the sweep; the sweep's record of a released hold is
/// forgotten an hour past the hold's expiry. A hold released by a gateway
/// of the previous version (schema 5), which keeps no record, adds
/// nothing when settled late.
async fn a_settlement_tried_again_is_applied_once(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "retried".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let held = store.reserve(&key.id, 0.4).await.unwrap();
    store.settle(&held, 0.3).await.unwrap();
    store.settle(&held, 0.3).await.unwrap();
    assert_totals(&store, &key.id, 0.3, 0.0).await;

    let released = store
        .reserve_for(&key.id, 0.2, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 1);
    store.settle(&released, 0.1).await.unwrap();
    store.settle(&released, 0.1).await.unwrap();
    assert_totals(&store, &key.id, 0.4, 0.0).await;

    let records = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_released_holds";
    assert_eq!(db.scalar(records).await, 1);
    db.execute("UPDATE freehold_released_holds SET expires_at_ms = expires_at_ms - 3540000")
        .await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 0);
    assert_eq!(db.scalar(records).await, 1, "forgotten before its hour");
    db.execute("UPDATE freehold_released_holds SET expires_at_ms = expires_at_ms - 120000")
        .await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 0);
    assert_eq!(db.scalar(records).await, 0);

    // Released by the previous version's sweep: a delete and the key's
    // total, no record.
    let by_older = store.reserve(&key.id, 0.2).await.unwrap();
    db.execute(&format!(
        "DELETE FROM freehold_reservations WHERE id = '{}'; \
         UPDATE freehold_keys SET reserved_micros = reserved_micros - 200000 \
         WHERE id = '{}';",
        by_older.id, key.id
    ))
    .await;
    store.settle(&by_older, 0.05).await.unwrap();
    assert_totals(&store, &key.id, 0.4, 0.0).await;

    // Another key's reservation id does not settle this key's hold, held
    // or released.
    let mine = store.reserve(&key.id, 0.1).await.unwrap();
    let mine_released = store
        .reserve_for(&key.id, 0.1, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 1);
    let (other, _) = store
        .create_key(NewKey {
            name: "other".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let forged = Reservation {
        key_id: other.id.clone(),
        ..mine.clone()
    };
    store.settle(&forged, 0.5).await.unwrap();
    let forged_released = Reservation {
        key_id: other.id.clone(),
        ..mine_released.clone()
    };
    store.settle(&forged_released, 0.5).await.unwrap();
    assert_totals(&store, &key.id, 0.4, 0.1).await;
    let theirs = store.key_by_id(&other.id).await.unwrap().unwrap();
    assert!(
        close(theirs.spent_usd, 0.0) && close(theirs.reserved_usd, 0.0),
        "{theirs:?}"
    );
    store.settle(&mine, 0.0).await.unwrap();
    // The released one is still there to be charged, by its own key.
    store.settle(&mine_released, 0.05).await.unwrap();
    assert_totals(&store, &key.id, 0.45, 0.0).await;

    let unknown = Reservation {
        id: "res_unknown".into(),
        key_id: "key_nope".into(),
        amount_usd: 0.1,
    };
    let error = store.settle(&unknown, 0.1).await.unwrap_err();
    assert!(matches!(error, StoreError::UnknownKey(_)), "{error}");
    store.close().await;
}

/// A settlement whose connection is killed while it waits inside its
/// statement (here for a lock on the key) is not applied, and its error is
/// not one that says so; tried again, it is applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settlement_cut_off_mid_statement_is_applied_when_tried_again() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "cut".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let hold = store.reserve(&key.id, 0.4).await.unwrap();

    let mut locker = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT id FROM freehold_keys WHERE id = $1 FOR UPDATE")
        .bind(&key.id)
        .execute(&mut locker)
        .await
        .unwrap();
    let settling = tokio::spawn({
        let (store, hold) = (store.clone(), hold.clone());
        async move { store.settle(&hold, 0.3).await }
    });
    // The settling statement's server process, once it waits on the lock.
    // Asked on a connection of its own, outside the locker's transaction:
    // a transaction sees the server's activity as it was when first asked,
    // so asking inside it would never see a statement that began later.
    let waiting = "SELECT pid FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE '%RETURNING micros%'";
    let mut watcher = sqlx::PgConnection::connect(db.url()).await.unwrap();
    // (Up to 30 s: the whole suite runs at once on as few as two cores.)
    let mut pid: Option<i32> = None;
    for _ in 0..3000 {
        pid = sqlx::query_scalar(waiting)
            .fetch_optional(&mut watcher)
            .await
            .unwrap();
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(pid) = pid else {
        panic!(
            "the settlement never waited on the key's lock (finished: {})",
            settling.is_finished()
        );
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut locker)
        .await
        .unwrap();
    let error = settling.await.unwrap().unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    locker.close().await.unwrap();
    watcher.close().await.unwrap();

    assert_totals(&store, &key.id, 0.0, 0.4).await;
    store.settle(&hold, 0.3).await.unwrap();
    store.settle(&hold, 0.3).await.unwrap();
    assert_totals(&store, &key.id, 0.3, 0.0).await;
    store.close().await;
    db.finish().await;
}

/// A TCP relay on 127.0.0.1 in front of the test's PostgreSQL that, when
/// armed with a marker, fails the first statement sent whose text contains
/// it, in one of four ways ([`Loss`]).
struct AnswerLosingRelay {
    /// The test server's URL, through the relay.
    url: String,
    armed: std::sync::Arc<std::sync::Mutex<Option<(&'static str, Loss)>>>,
    /// Whether the client closed a connection gone silent ([`Loss::Silence`]).
    silent_closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What cuts off the client of the connection that sent a statement
    /// marked for [`Loss::Client`].
    client_cut: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>>,
}

/// How the relay fails a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// The statement runs, and the server's answer to it is withheld from
    /// its CommandComplete on. Once the server has said it is ready for the
    /// next statement (so this one was committed), the relay closes the
    /// connection, as a network failing at that moment would.
    Answer,
    /// The statement never reaches the server. The relay closes the
    /// client's side of the connection but keeps the server's open, as a
    /// NAT or a proxy that dropped the connection would: the server sees a
    /// session idle (in its transaction, if one was open) with no client.
    Statement,
    /// The statement, and whatever the client sends after it, never
    /// reaches the server, and both sides of the connection are kept open:
    /// the client waits for an answer that never comes, as behind a
    /// network that went silent without a reset.
    Silence,
    /// The statement reaches the server, and the relay closes the
    /// client's side of its connection when told to
    /// ([`AnswerLosingRelay::cut_off_client`]): the statement runs on
    /// (waiting on a lock, say) after its client got an error.
    Client,
}

impl AnswerLosingRelay {
    async fn start(server_url: &str) -> AnswerLosingRelay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // postgres://USER:PASSWORD@HOST:PORT/DB: the relay takes HOST:PORT.
        let (scheme_and_user, rest) = server_url.rsplit_once('@').unwrap();
        let (server, database) = rest.split_once('/').unwrap();
        // Plain TCP, so that the relay can read the statements.
        let database = match database.split_once('?') {
            Some((name, query)) => format!("{name}?{query}&sslmode=disable"),
            None => format!("{database}?sslmode=disable"),
        };
        let server = server.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::Mutex::new(None::<(&'static str, Loss)>));
        let relay_armed = armed.clone();
        let silent_closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relay_silent_closed = silent_closed.clone();
        let client_cut = std::sync::Arc::new(std::sync::Mutex::new(None));
        let relay_client_cut = client_cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(&server).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = upstream.into_split();
                let doomed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let severed = std::sync::Arc::new(tokio::sync::Notify::new());
                let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (armed, client_doomed, client_severed, client_silent, closed, cut) = (
                    relay_armed.clone(),
                    doomed.clone(),
                    severed.clone(),
                    silent.clone(),
                    relay_silent_closed.clone(),
                    relay_client_cut.clone(),
                );
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    // The end of what was sent before, so that a marker
                    // split between two reads is found.
                    let mut seen = Vec::new();
                    let mut silenced = false;
                    while let Ok(read) = from_client.read(&mut buffer).await {
                        if read == 0 {
                            if silenced {
                                closed.store(true, Ordering::SeqCst);
                            }
                            break;
                        }
                        if silenced {
                            continue;
                        }
                        let sent = &buffer[..read];
                        seen.extend_from_slice(sent);
                        let fired = {
                            let mut armed = armed.lock().unwrap();
                            match *armed {
                                Some((marker, loss))
                                    if seen
                                        .windows(marker.len())
                                        .any(|w| w == marker.as_bytes()) =>
                                {
                                    *armed = None;
                                    Some(loss)
                                }
                                Some(_) => None,
                                None => {
                                    seen.clear();
                                    None
                                }
                            }
                        };
                        if fired == Some(Loss::Client) {
                            *cut.lock().unwrap() = Some(client_severed.clone());
                        }
                        if fired == Some(Loss::Statement) {
                            // The client's side closes; the server's is
                            // held open, idle, long past the test.
                            client_severed.notify_one();
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            return;
                        }
                        if fired == Some(Loss::Silence) {
                            // Held open while the client keeps it.
                            silenced = true;
                            client_silent.store(true, Ordering::SeqCst);
                            continue;
                        }
                        if fired == Some(Loss::Answer) {
                            client_doomed.store(true, Ordering::SeqCst);
                        }
                        let keep = seen.len().min(256);
                        seen.drain(..seen.len() - keep);
                        if to_server.write_all(sent).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    // Once doomed, the server's messages are read whole:
                    // those before the statement's CommandComplete pass
                    // (the answer to preparing it), the rest are withheld.
                    let mut unread = Vec::new();
                    let mut completed = false;
                    loop {
                        let read = tokio::select! {
                            read = from_server.read(&mut buffer) => match read {
                                Ok(read) if read > 0 => read,
                                _ => break,
                            },
                            // Returning drops the client's side.
                            () = severed.notified() => return,
                        };
                        if silent.load(Ordering::SeqCst) {
                            // Nothing from the server reaches the client
                            // any more, its error and its closing included.
                            continue;
                        }
                        if !doomed.load(Ordering::SeqCst) {
                            if to_client.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        unread.extend_from_slice(&buffer[..read]);
                        let mut ready = false;
                        // A message: its type, then its length (itself
                        // included), then the rest.
                        while unread.len() >= 5 {
                            let length = u32::from_be_bytes(unread[1..5].try_into().unwrap());
                            let end = 1 + length as usize;
                            if unread.len() < end {
                                break;
                            }
                            let message: Vec<u8> = unread.drain(..end).collect();
                            completed |= message[0] == b'C';
                            if !completed {
                                if to_client.write_all(&message).await.is_err() {
                                    return;
                                }
                            } else if message[0] == b'Z' {
                                // Ready for the next query: committed.
                                ready = true;
                                break;
                            }
                        }
                        if ready {
                            break;
                        }
                    }
                    if silent.load(Ordering::SeqCst) {
                        // The client's side is held open, long past the test.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    // Dropping both halves closes the client's connection.
                });
            }
        });
        AnswerLosingRelay {
            url: format!("{scheme_and_user}@127.0.0.1:{port}/{database}"),
            armed,
            silent_closed,
            client_cut,
        }
    }

    /// Loses the answer to the next statement whose text has `marker`.
    fn lose_the_answer_to(&self, marker: &'static str) {
        *self.armed.lock().unwrap() = Some((marker, Loss::Answer));
    }

    /// Cuts the client off before the next statement whose text has
    /// `marker`, leaving the server's side of its connection open.
    fn cut_off_before(&self, marker: &'static str) {
        *self.armed.lock().unwrap() = Some((marker, Loss::Statement));
    }

    /// Marks the connection of the next statement whose text has
    /// `marker`, for [`AnswerLosingRelay::cut_off_client`].
    fn mark_client_of(&self, marker: &'static str) {
        *self.armed.lock().unwrap() = Some((marker, Loss::Client));
    }

    /// Closes the client's side of the marked connection, now.
    fn cut_off_client(&self) {
        let cut = self.client_cut.lock().unwrap().take();
        cut.expect("a connection was marked").notify_one();
    }

    /// Never sends the next statement whose text has `marker`, nor
    /// anything after it on that connection, and keeps the connection open.
    fn go_silent_before(&self, marker: &'static str) {
        *self.armed.lock().unwrap() = Some((marker, Loss::Silence));
    }
}

/// A settlement the database applied but whose answer was lost is not
/// applied again when tried again; a reservation whose answer was lost
/// says so, with the hold it may have taken, which settling at nothing
/// releases; a ledger batch is written once, whether its lost answer was
/// to its lines or to its COMMIT. Each on a store of its own, so that the
/// statement's text is sent (a connection that prepared it already would
/// send only its name).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_whose_answers_were_lost() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let direct = Store::open(db.url()).await.unwrap();
    let relay = AnswerLosingRelay::start(db.url()).await;
    let (key, _) = direct
        .create_key(NewKey {
            name: "lossy".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let hold = direct.reserve(&key.id, 0.4).await.unwrap();

    let relayed = Store::open(&relay.url).await.unwrap();
    relay.lose_the_answer_to("RETURNING micros");
    let error = relayed.settle(&hold, 0.3).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    let now = direct.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(
        close(now.spent_usd, 0.3) && close(now.reserved_usd, 0.0),
        "the lost settlement was not applied: {now:?}"
    );
    relayed.settle(&hold, 0.3).await.unwrap();
    assert_totals(&direct, &key.id, 0.3, 0.0).await;
    relayed.close().await;

    // The late settlement of a hold the sweep released: its charge is
    // applied, its answer lost, and it is not charged again.
    let late = direct
        .reserve_for(&key.id, 0.2, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(direct.release_expired_reservations().await.unwrap(), 1);
    let relayed = Store::open(&relay.url).await.unwrap();
    relay.lose_the_answer_to("SET charged_micros");
    let error = relayed.settle(&late, 0.1).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    let now = direct.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(
        close(now.spent_usd, 0.4),
        "the lost charge was not applied: {now:?}"
    );
    relayed.settle(&late, 0.1).await.unwrap();
    assert_totals(&direct, &key.id, 0.4, 0.0).await;
    relayed.close().await;

    let relayed = Store::open(&relay.url).await.unwrap();
    relay.lose_the_answer_to("INSERT INTO freehold_reservations");
    let error = relayed.reserve(&key.id, 0.5).await.unwrap_err();
    let StoreError::HoldUnanswered { reservation, .. } = error else {
        panic!("expected HoldUnanswered, got {error}");
    };
    // It was taken; settling it at nothing frees it (the gateway uses
    // release_unanswered, tested below, which does this too).
    let holds = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_reservations";
    assert_eq!(db.scalar(holds).await, 1);
    let now = direct.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.reserved_usd, 0.5), "{now:?}");
    relayed.settle(&reservation, 0.0).await.unwrap();
    assert_totals(&direct, &key.id, 0.4, 0.0).await;
    assert_eq!(db.scalar(holds).await, 0);
    // A hold never taken (an id the database never saw): settling it at
    // nothing changes nothing.
    let never = Reservation {
        id: "res_never_taken".into(),
        ..reservation
    };
    relayed.settle(&never, 0.0).await.unwrap();
    assert_totals(&direct, &key.id, 0.4, 0.0).await;
    relayed.close().await;

    // A ledger batch whose COMMIT was answered, the answer lost: it was
    // written, and the writer's next try writes nothing.
    let lines = [line(5_000, Some(&key.id), "gpt", Some(0.01), 200)];
    let ledger = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_usage";
    let batch = BatchId::new();
    let relayed = Store::open(&relay.url).await.unwrap();
    // The simple query's text ends with a NUL: `READ COMMITTED`, which
    // each new connection sets, does not match.
    relay.lose_the_answer_to("COMMIT\0");
    let error = relayed.record(&batch, &lines).await.unwrap_err();
    assert!(matches!(error, StoreError::Unanswered(_)), "{error}");
    assert_eq!(db.scalar(ledger).await, 1);
    assert_eq!(
        relayed.record(&batch, &lines).await.unwrap(),
        Recorded::AlreadyWritten
    );
    assert_eq!(db.scalar(ledger).await, 1);
    relayed.close().await;
    // One whose lines' answer was lost, before its COMMIT: the server
    // rolled it back when the connection closed, and the next try writes
    // it (waiting, if need be, until the server has).
    let batch = BatchId::new();
    let relayed = Store::open(&relay.url).await.unwrap();
    relay.lose_the_answer_to("INSERT INTO freehold_usage");
    let error = relayed.record(&batch, &lines).await.unwrap_err();
    assert!(matches!(error, StoreError::Unanswered(_)), "{error}");
    assert_eq!(
        relayed.record(&batch, &lines).await.unwrap(),
        Recorded::Written
    );
    assert_eq!(db.scalar(ledger).await, 2);
    relayed.close().await;
    direct.close().await;
    db.finish().await;
}

/// A try of a ledger batch waits for another try of it still under way:
/// when that one commits, this one writes nothing; when it rolls back,
/// this one writes the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_batch_waits_for_another_try_of_it() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = Store::open(db.url()).await.unwrap();
    let lines = [line(6_000, None, "gpt", Some(0.01), 200)];
    let ledger = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_usage";
    let waiting = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for (end, expected, written) in [
        ("COMMIT", Recorded::AlreadyWritten, 1),
        ("ROLLBACK", Recorded::Written, 2),
    ] {
        let batch = BatchId::new();
        // The other try: its id claimed, its lines written, not committed.
        let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query("INSERT INTO freehold_ledger_batches (batch_id, written_at_ms) VALUES ($1, 0)")
            .bind(batch.as_str())
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO freehold_usage (at_ms, model, provider, provider_model, endpoint, \
             input_tokens, cached_input_tokens, output_tokens, latency_ms, status) \
             VALUES (6000, 'gpt', 'openai', 'gpt-2024', '/v1/chat/completions', 1, 0, 1, 1, 200)",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let task_store = store.clone();
        let (task_batch, task_lines) = (batch.clone(), lines.clone());
        let this_try =
            tokio::spawn(async move { task_store.record(&task_batch, &task_lines).await.unwrap() });
        // Well within the try's 5 s lock timeout.
        let looking = std::time::Instant::now();
        let mut seen = 0;
        while seen == 0 && looking.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = db.scalar(waiting).await;
        }
        assert_eq!(seen, 1, "the try did not wait for the other");
        sqlx::raw_sql(end).execute(&mut other).await.unwrap();
        assert_eq!(this_try.await.unwrap(), expected, "after {end}");
        assert_eq!(db.scalar(ledger).await, written, "after {end}");
    }
    store.close().await;
    db.finish().await;
}

/// A ledger batch whose client was cut off before its COMMIT reached the
/// server (a NAT dropping the connection) leaves its transaction open on
/// the server, holding the batch's id. The next try does not wait on it
/// for hours: it gives up after the lock timeout (busy, so the writer
/// tries again later), and once the server has ended the idle
/// transaction (`idle_in_transaction_session_timeout`), the batch is
/// written, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_batch_cut_off_before_its_commit_is_written_once_the_server_ends_it() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let relay = AnswerLosingRelay::start(db.url()).await;
    let relayed = Store::open(&relay.url).await.unwrap();
    let direct = Store::open(db.url()).await.unwrap();
    let lines = [line(7_000, None, "gpt", Some(0.01), 200)];
    let batch = BatchId::new();
    relay.cut_off_before("COMMIT\0");
    let error = relayed.record(&batch, &lines).await.unwrap_err();
    assert!(matches!(error, StoreError::Unanswered(_)), "{error}");

    let started = std::time::Instant::now();
    let error = direct.record(&batch, &lines).await.unwrap_err();
    assert!(error.is_retryable() && error.is_outage(), "{error}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(10)).contains(&waited),
        "gave up on the id after {waited:?}"
    );
    let recorded = loop {
        match direct.record(&batch, &lines).await {
            Ok(recorded) => break recorded,
            Err(error) if error.is_retryable() && started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("after {:?}: {error}", started.elapsed()),
        }
    };
    assert_eq!(recorded, Recorded::Written);
    let ledger = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_usage";
    assert_eq!(db.scalar(ledger).await, 1);
    relayed.close().await;
    direct.close().await;
    db.finish().await;
}

/// The ledger writer whose write gets no answer at all (the network gone
/// silent before its COMMIT, the connection still open on both ends as far
/// as either can tell) does not wait for ever: it gives the try up after
/// its time limit, closes that connection, tries again, and the batch is
/// written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_write_without_an_answer_is_given_up_and_written_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let relay = AnswerLosingRelay::start(db.url()).await;
    let relayed = Store::open(&relay.url).await.unwrap();
    let (ledger, writer) = freehold_gateway::ledger::Ledger::start(relayed.clone());
    let metrics = freehold_gateway::metrics::Metrics::default();
    relay.go_silent_before("COMMIT\0");
    let started = std::time::Instant::now();
    ledger.try_record(line(8_000, None, "gpt", Some(0.01), 200), &metrics);
    let lines = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_usage";
    while db.scalar(lines).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the line was not written in a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not before the try's time limit (20 s) gave it up, and the
    // connection that went silent was closed, not handed back to the pool.
    assert!(
        started.elapsed() > Duration::from_secs(19),
        "{:?}",
        started.elapsed()
    );
    let closing = std::time::Instant::now();
    while !relay.silent_closed.load(Ordering::SeqCst) {
        assert!(
            closing.elapsed() < Duration::from_secs(5),
            "the connection gone silent was not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.close();
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stopped when closed")
        .unwrap();
    assert_eq!(db.scalar(lines).await, 1);
    assert_eq!(metrics.ledger_dropped.get(), 0);
    relayed.close().await;
    db.finish().await;
}

/// A reservation whose answer was lost is released whether its hold was
/// taken or never came: a hold taken is released, charging nothing; in
/// place of one never taken a placeholder of nothing stays, under its id,
/// until its expiry; trying again changes nothing.
async fn an_unanswered_reservation_is_released_whatever_became_of_it(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "unanswered".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let taken = store.reserve(&key.id, 0.4).await.unwrap();
    assert_totals(&store, &key.id, 0.0, 0.4).await;
    store.release_unanswered(&taken).await.unwrap();
    assert_totals(&store, &key.id, 0.0, 0.0).await;
    store.release_unanswered(&taken).await.unwrap();
    assert_totals(&store, &key.id, 0.0, 0.0).await;

    let never = Reservation {
        id: "res_never_taken".into(),
        key_id: key.id.clone(),
        amount_usd: 0.3,
    };
    let placeholder = "SELECT micros FROM freehold_reservations WHERE id = 'res_never_taken'";
    store.release_unanswered(&never).await.unwrap();
    assert_eq!(db.scalar(placeholder).await, 0);
    store.release_unanswered(&never).await.unwrap();
    assert_eq!(db.scalar(placeholder).await, 0);
    assert_totals(&store, &key.id, 0.0, 0.0).await;
    // It goes at its expiry, and is not counted as a hold released.
    db.execute("UPDATE freehold_reservations SET expires_at_ms = expires_at_ms - 7200000")
        .await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 0);
    let holds = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_reservations";
    assert_eq!(db.scalar(holds).await, 0);
    assert_totals(&store, &key.id, 0.0, 0.0).await;
    store.close().await;
}

/// A reservation whose statement is still waiting on the key's row when
/// its client got an error, and when the gateway released it, takes no
/// hold once the row is free: it fails on the placeholder's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_still_waiting_when_released_takes_no_hold() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let direct = Store::open(db.url()).await.unwrap();
    let (key, _) = direct
        .create_key(NewKey {
            name: "waiting".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let relay = AnswerLosingRelay::start(db.url()).await;
    let relayed = Store::open(&relay.url).await.unwrap();
    let lock = KeyLock::take(&db, &key.id).await;
    relay.mark_client_of("INSERT INTO freehold_reservations");
    let reserving = {
        let (relayed, key_id) = (relayed.clone(), key.id.clone());
        tokio::spawn(async move { relayed.reserve(&key_id, 0.5).await })
    };
    // The statement is on the server, waiting for the key's row, when its
    // client is cut off.
    let waiting = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let looking = std::time::Instant::now();
    while db.scalar(waiting).await == 0 {
        assert!(
            looking.elapsed() < Duration::from_secs(5),
            "no statement waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.cut_off_client();
    let error = reserving.await.unwrap().unwrap_err();
    let StoreError::HoldUnanswered { reservation, .. } = error else {
        panic!("expected HoldUnanswered, got {error}");
    };
    assert_eq!(db.scalar(waiting).await, 1, "the statement still waits");
    direct.release_unanswered(&reservation).await.unwrap();
    lock.release().await;
    // Let the statement run to its end.
    let running = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                   WHERE datname = current_database() AND state = 'active' \
                   AND query LIKE '%INSERT INTO freehold_reservations%' \
                   AND pid <> pg_backend_pid()";
    let looking = std::time::Instant::now();
    while db.scalar(running).await > 0 {
        assert!(
            looking.elapsed() < Duration::from_secs(5),
            "the statement did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_totals(&direct, &key.id, 0.0, 0.0).await;
    let held = "SELECT CAST(COALESCE(SUM(micros), 0) AS BIGINT) FROM freehold_reservations";
    assert_eq!(db.scalar(held).await, 0);
    relayed.close().await;
    direct.close().await;
    db.finish().await;
}

/// A reservation whose statement has taken its hold, not yet committed,
/// when the gateway releases it: the placeholder waits for it, finds the
/// hold once it is committed, and releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_committing_when_released_is_released() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "committing".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    // What the reservation's statement does, left uncommitted.
    let mut reserving = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN")
        .execute(&mut reserving)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE freehold_keys SET reserved_micros = reserved_micros + 300000 WHERE id = $1",
    )
    .bind(&key.id)
    .execute(&mut reserving)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO freehold_reservations (id, key_id, micros, expires_at_ms) \
         VALUES ('res_committing', $1, 300000, 9999999999999)",
    )
    .bind(&key.id)
    .execute(&mut reserving)
    .await
    .unwrap();
    let reservation = Reservation {
        id: "res_committing".into(),
        key_id: key.id.clone(),
        amount_usd: 0.3,
    };
    let releasing = {
        let (store, reservation) = (store.clone(), reservation.clone());
        tokio::spawn(async move { store.release_unanswered(&reservation).await })
    };
    let waiting = "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let looking = std::time::Instant::now();
    while db.scalar(waiting).await == 0 {
        assert!(
            looking.elapsed() < Duration::from_secs(5),
            "the release did not wait"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("COMMIT")
        .execute(&mut reserving)
        .await
        .unwrap();
    releasing.await.unwrap().unwrap();
    assert_totals(&store, &key.id, 0.0, 0.0).await;
    let holds = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_reservations";
    assert_eq!(db.scalar(holds).await, 0);
    store.close().await;
    db.finish().await;
}

/// A gateway that stops renewing its lease (killed) has its holds
/// released by the next sweep, long before their own expiry; a live
/// gateway's, and those of a store that is no gateway, stay.
async fn holds_of_a_gateway_whose_lease_ran_out_are_released(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "leased".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let dying = store.as_gateway(Duration::ZERO).await.unwrap();
    let live = store.as_gateway(Duration::from_secs(3600)).await.unwrap();
    assert!(dying.gateway_id().unwrap().starts_with("gw_"));
    assert_ne!(dying.gateway_id(), live.gateway_id());
    assert_eq!(store.gateway_id(), None);
    let hour = Duration::from_secs(3600);
    let lost = dying.reserve_for(&key.id, 0.4, hour).await.unwrap();
    let kept = live.reserve_for(&key.id, 0.3, hour).await.unwrap();
    let plain = store.reserve_for(&key.id, 0.1, hour).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(live.release_expired_reservations().await.unwrap(), 1);
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.reserved_usd, 0.4), "{now:?}");
    // The dead gateway's request settles after all: only its cost counts,
    // its hold is not taken off a second time.
    dying.settle(&lost, 0.05).await.unwrap();
    assert_totals(&store, &key.id, 0.05, 0.4).await;

    // A gateway that stops cleanly ends its lease: what it still holds is
    // released at once.
    live.end_lease().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.release_expired_reservations().await.unwrap(), 1);
    live.settle(&kept, 0.0).await.unwrap();
    // A renewed lease is taken again, even after it ran out.
    dying.renew_lease(hour).await.unwrap();
    let again = dying.reserve_for(&key.id, 0.2, hour).await.unwrap();
    assert_eq!(store.release_expired_reservations().await.unwrap(), 0);
    dying.settle(&again, 0.0).await.unwrap();
    store.settle(&plain, 0.0).await.unwrap();
    assert_totals(&store, &key.id, 0.05, 0.0).await;

    // Gateways dead for over an hour are forgotten; the others stay.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM freehold_gateways").await, 2);
    db.execute(&format!(
        "UPDATE freehold_gateways SET alive_until_ms = alive_until_ms - 7200000 WHERE id = '{}'",
        live.gateway_id().unwrap()
    ))
    .await;
    store.release_expired_reservations().await.unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM freehold_gateways").await, 1);
    store.close().await;
}

/// Two stores on one database (two gateways) admit a key's requests
/// against one limit, however many race for it.
async fn rate_limits_hold_across_stores(db: &TestDb) {
    let a = Store::open(db.url()).await.unwrap();
    let b = Store::open(db.url()).await.unwrap();
    let (key, _) = a
        .create_key(NewKey {
            name: "limited".into(),
            rpm: Some(5),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = key.id.clone();
            tokio::spawn(async move { store.admit_rate(&id, Some(5), None, 0).await.unwrap() })
        })
        .collect();
    let mut refusals = Vec::new();
    for task in tasks {
        if let Some(window) = task.await.unwrap() {
            refusals.push(window);
        }
    }
    assert_eq!(refusals.len(), 15, "{refusals:?}");
    // Five counted, in this minute or (across a minute's end) the last.
    assert!(
        refusals
            .iter()
            .all(|w| w.requests + w.previous_requests == 5),
        "{refusals:?}"
    );

    // Tokens counted by one store refuse the next request at the other.
    let (hungry, _) = a
        .create_key(NewKey {
            name: "hungry".into(),
            tpm: Some(100),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_eq!(
        a.admit_rate(&hungry.id, None, Some(100), 0).await.unwrap(),
        None
    );
    a.add_rate_tokens(&hungry.id, 99).await.unwrap();
    assert_eq!(
        b.admit_rate(&hungry.id, None, Some(100), 0).await.unwrap(),
        None
    );
    a.add_rate_tokens(&hungry.id, 21).await.unwrap();
    let refused = b
        .admit_rate(&hungry.id, None, Some(100), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.tokens + refused.previous_tokens, 120, "{refused:?}");
    // Without limits nothing is refused; the count still goes on.
    assert_eq!(b.admit_rate(&hungry.id, None, None, 0).await.unwrap(), None);

    // A prompt's estimate is counted when its request is admitted, so that
    // requests sent together cannot all pass before any has finished: the
    // first passes into an empty window even when larger than the limit,
    // and the next is refused at once.
    let (eager, _) = a
        .create_key(NewKey {
            name: "eager".into(),
            tpm: Some(100),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_eq!(
        a.admit_rate(&eager.id, None, Some(100), 150).await.unwrap(),
        None
    );
    let refused = b
        .admit_rate(&eager.id, None, Some(100), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.tokens + refused.previous_tokens, 150, "{refused:?}");

    // Tokens of a key that was never limited are not kept.
    let (free, _) = a
        .create_key(NewKey {
            name: "free".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    a.add_rate_tokens(&free.id, 1_000).await.unwrap();
    assert_eq!(
        a.admit_rate(&free.id, None, Some(10), 0).await.unwrap(),
        None
    );
    assert!(matches!(
        a.admit_rate("key_missing", Some(1), None, 0).await,
        Err(StoreError::UnknownKey(_))
    ));
    a.close().await;
    b.close().await;
}

/// The previous minute counts for the part of it the sliding window still
/// covers; the one before that not at all.
async fn rate_windows_roll_over_by_the_minute(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "rolling".into(),
            rpm: Some(10),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.admit_rate(&key.id, Some(10), None, 0).await.unwrap(),
        None
    );
    // Clear of a minute's end, so that "this minute" is the same minute to
    // the test and to the statements it runs (the database's clock is
    // this machine's here).
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let into_minute = now_ms() % 60_000;
    if into_minute > 55_000 {
        tokio::time::sleep(Duration::from_millis((60_100 - into_minute) as u64)).await;
    }
    let minute = now_ms() / 60_000 * 60_000;
    let elapsed = now_ms() - minute;
    // 1,000 requests in the previous minute: most of them are still in
    // the window, so the key is refused...
    db.execute(&format!(
        "UPDATE freehold_rate_windows SET window_start_ms = {}, requests = 1000, \
         prev_requests = 0 WHERE key_id = '{}'",
        minute - 60_000,
        key.id
    ))
    .await;
    let refused = store
        .admit_rate(&key.id, Some(10), None, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (refused.previous_requests, refused.requests),
        (1000, 0),
        "{refused:?}"
    );
    assert!(
        (refused.elapsed_ms as i64 - elapsed).abs() < 5_000,
        "{refused:?} against {elapsed}"
    );
    // ...and the refusal did not count.
    let again = store
        .admit_rate(&key.id, Some(10), None, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.previous_requests, again.requests), (1000, 0));
    // Two minutes back: nothing of it is left.
    db.execute(&format!(
        "UPDATE freehold_rate_windows SET window_start_ms = {}, requests = 1000, \
         prev_requests = 1000 WHERE key_id = '{}'",
        minute - 120_000,
        key.id
    ))
    .await;
    assert_eq!(
        store.admit_rate(&key.id, Some(10), None, 0).await.unwrap(),
        None
    );
    // A row ahead of the statement's clock (another gateway's statement,
    // stamped later, ran first) keeps its minute: the statement counts in
    // it, as at its start, and does not take the row back a minute.
    db.execute(&format!(
        "UPDATE freehold_rate_windows SET window_start_ms = {}, requests = 8, \
         prev_requests = 1 WHERE key_id = '{}'",
        minute + 60_000,
        key.id
    ))
    .await;
    assert_eq!(
        store.admit_rate(&key.id, Some(10), None, 0).await.unwrap(),
        None
    );
    let refused = store
        .admit_rate(&key.id, Some(10), None, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            refused.previous_requests,
            refused.requests,
            refused.elapsed_ms
        ),
        (1, 9, 0),
        "{refused:?}"
    );
    store.close().await;
}

fn line(
    at_ms: i64,
    key_id: Option<&str>,
    model: &str,
    cost: Option<f64>,
    status: u16,
) -> UsageRecord {
    UsageRecord {
        at_ms,
        request_id: Some(format!("req_{at_ms}")),
        end_user: None,
        key_id: key_id.map(str::to_owned),
        model: model.into(),
        provider: "openai".into(),
        provider_model: format!("{model}-2024"),
        endpoint: "/v1/chat/completions".into(),
        input_tokens: 100,
        cached_input_tokens: 10,
        output_tokens: 20,
        cost_usd: cost,
        latency_ms: 250,
        status,
        error: (status >= 400).then(|| "upstream".into()),
        privacy: None,
        body: None,
    }
}

async fn usage_by_key_model_and_day(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    assert!(store.usage(GroupBy::Key, None).await.unwrap().is_empty());
    store.record(&BatchId::new(), &[]).await.unwrap();

    let (a, _) = store
        .create_key(NewKey {
            name: "a".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let (b, _) = store
        .create_key(NewKey {
            name: "b".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    // 2026-01-01 and 2026-01-02, UTC.
    let day1 = 20_454 * 86_400_000;
    let day2 = day1 + 86_400_000;
    store
        .record(
            &BatchId::new(),
            &[
                line(day1 + 1000, Some(&a.id), "gpt", Some(0.25), 200),
                line(day1 + 2000, Some(&a.id), "claude", Some(0.5), 200),
                line(day2 + 5, Some(&b.id), "gpt", Some(1.0), 200),
                line(day2 + 6, Some(&b.id), "gpt", None, 502),
                line(day2 + 7, None, "claude", Some(0.125), 200),
            ],
        )
        .await
        .unwrap();

    let by_key = store.usage(GroupBy::Key, None).await.unwrap();
    let groups: Vec<_> = by_key.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(groups, ["b", "a", "(no key)"]);
    assert_eq!(
        (
            by_key[0].requests,
            by_key[0].errors,
            by_key[0].input_tokens,
            by_key[0].output_tokens
        ),
        (2, 1, 200, 40)
    );
    assert!(close(by_key[0].cost_usd, 1.0));
    assert!(close(by_key[1].cost_usd, 0.75));
    assert!(close(by_key[2].cost_usd, 0.125));

    let by_model = store.usage(GroupBy::Model, None).await.unwrap();
    let groups: Vec<_> = by_model
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(groups, [("gpt", 3), ("claude", 2)]);
    assert!(close(by_model[0].cost_usd, 1.25) && close(by_model[1].cost_usd, 0.625));

    let by_day = store.usage(GroupBy::Day, None).await.unwrap();
    let groups: Vec<_> = by_day
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(groups, [("2026-01-02", 3), ("2026-01-01", 2)]);
    assert!(close(by_day[0].cost_usd, 1.125) && close(by_day[1].cost_usd, 0.75));

    let since = store.usage(GroupBy::Day, Some(day2)).await.unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].group, "2026-01-02");

    // A batch is all or nothing: an unknown key fails it whole.
    let bad = store
        .record(
            &BatchId::new(),
            &[
                line(day2 + 8, Some(&a.id), "gpt", Some(1.0), 200),
                line(day2 + 9, Some("key_missing"), "gpt", Some(1.0), 200),
            ],
        )
        .await;
    assert!(bad.is_err());
    assert_eq!(store.usage(GroupBy::Model, None).await.unwrap(), by_model);

    // Two keys sharing a name (one revoked) are told apart.
    store.revoke_key(&a.id).await.unwrap();
    let (a2, _) = store
        .create_key(NewKey {
            name: "a".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    store
        .record(
            &BatchId::new(),
            &[line(day2 + 10, Some(&a2.id), "gpt", Some(0.01), 200)],
        )
        .await
        .unwrap();
    let by_key = store.usage(GroupBy::Key, None).await.unwrap();
    let groups: Vec<_> = by_key.iter().map(|r| r.group.clone()).collect();
    assert!(groups.contains(&format!("a ({})", a.id)), "{groups:?}");
    assert!(groups.contains(&format!("a ({})", a2.id)), "{groups:?}");
    store.close().await;
}

/// `--by user` sums the lines by the end user their clients named, with
/// those that named none as one group, largest cost first; `--since` and
/// the keys do not change who a line is for.
async fn usage_by_end_user(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "team".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let for_user = |at_ms, user: Option<&str>, cost| UsageRecord {
        end_user: user.map(str::to_owned),
        ..line(at_ms, Some(&key.id), "gpt", Some(cost), 200)
    };
    let hashed = recorded_end_user("ada@example.com", true);
    store
        .record(
            &BatchId::new(),
            &[
                for_user(1_000, Some("user-7"), 0.25),
                for_user(2_000, Some("user-8"), 1.0),
                for_user(3_000, Some("user-7"), 0.5),
                for_user(4_000, None, 0.125),
                for_user(5_000, Some(&hashed), 0.0625),
                line(6_000, None, "claude", Some(0.03125), 502),
            ],
        )
        .await
        .unwrap();
    let by_user = store.usage(GroupBy::User, None).await.unwrap();
    let groups: Vec<_> = by_user
        .iter()
        .map(|r| (r.group.as_str(), r.requests, r.errors))
        .collect();
    assert_eq!(
        groups,
        [
            ("user-8", 1, 0),
            ("user-7", 2, 0),
            (NO_END_USER, 2, 1),
            (hashed.as_str(), 1, 0),
        ]
    );
    assert!(close(by_user[1].cost_usd, 0.75));
    assert!(close(by_user[2].cost_usd, 0.15625));
    assert_eq!(by_user[1].input_tokens, 200);
    let since = store.usage(GroupBy::User, Some(2_500)).await.unwrap();
    let groups: Vec<_> = since
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(
        groups,
        [("user-7", 1), (NO_END_USER, 2), (hashed.as_str(), 1)]
    );
    // Each line lists the end user it was recorded with.
    let lines = store.requests(None, 10).await.unwrap();
    let users: Vec<_> = lines.iter().map(|l| l.record.end_user.as_deref()).collect();
    assert_eq!(
        users,
        [
            None,
            Some(hashed.as_str()),
            None,
            Some("user-7"),
            Some("user-8"),
            Some("user-7")
        ]
    );
    store.close().await;
}

/// What the ledger keeps of an end user's id: the id, unless it is too
/// long, holds control characters or what the detectors find, which are
/// kept as their SHA-256, the same for the same id.
#[test]
fn end_users_are_recorded_as_sent_or_hashed() {
    assert_eq!(recorded_end_user("user-7", false), "user-7");
    let longest = "u".repeat(MAX_RECORDED_END_USER);
    assert_eq!(recorded_end_user(&longest, false), longest);
    let hashed = |id: &str, sensitive| {
        let recorded = recorded_end_user(id, sensitive);
        let hex = recorded
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("{recorded}"));
        assert_eq!(hex.len(), 64, "{recorded}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{recorded}");
        assert_eq!(hex, freehold_llm::wire::hashed_end_user(id));
        recorded
    };
    let too_long = format!("{longest}u");
    assert_eq!(hashed(&too_long, false), hashed(&too_long, false));
    assert_ne!(hashed(&too_long, false), hashed(&longest, true));
    hashed("user\n2026-01-01 forged line", false);
    hashed("user-\u{202E}7-resu", false);
    hashed("user\u{200B}-7", false);
    for invisible in [
        '\u{00AD}',
        '\u{061C}',
        '\u{2028}',
        '\u{2029}',
        '\u{180E}',
        '\u{E0041}',
    ] {
        hashed(&format!("user-{invisible}7"), false);
    }
    hashed("ada@example.com", true);
    // Nothing passes for one of the ledger's own labels.
    hashed(NO_END_USER, false);
    hashed("sha256:0000", false);
    assert_eq!(recorded_end_user("ünïcode-user", false), "ünïcode-user");
}

async fn requests_list_the_latest_lines(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    assert!(store.requests(None, 10).await.unwrap().is_empty());
    let (key, _) = store
        .create_key(NewKey {
            name: "ci".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let mut private = line(3_000, Some(&key.id), "gpt", Some(0.25), 200);
    private.privacy = Some("redacted trigger=content detectors=email:1".into());
    private.body = Some("kept in the database, not listed".into());
    store
        .record(
            &BatchId::new(),
            &[
                line(1_000, None, "claude", None, 502),
                line(2_000, Some(&key.id), "gpt", Some(0.5), 200),
                private.clone(),
            ],
        )
        .await
        .unwrap();
    let lines = store.requests(None, 2).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].key_name.as_deref(), Some("ci"));
    assert_eq!(
        lines[0].record,
        UsageRecord {
            body: None,
            ..private
        }
    );
    assert_eq!(lines[1].record.at_ms, 2_000);
    let since = store.requests(Some(500), 10).await.unwrap();
    assert_eq!(since.len(), 3);
    let last = &since[2];
    assert_eq!((last.key_name.as_deref(), last.record.status), (None, 502));
    assert_eq!(last.record.cost_usd, None);
    assert_eq!(last.record.error.as_deref(), Some("upstream"));
    assert_eq!(store.requests(Some(2_500), 10).await.unwrap().len(), 1);

    // One request found by the id its client got back.
    let found = store.requests_with_id("req_2000", None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record.at_ms, 2_000);
    assert_eq!(found[0].key_name.as_deref(), Some("ci"));
    assert!(
        store
            .requests_with_id("req_2000", Some(2_500), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .requests_with_id("req_unknown", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Lines written before the ledger kept ids have none, and are listed.
    let mut old = line(4_000, None, "gpt", None, 200);
    old.request_id = None;
    store.record(&BatchId::new(), &[old]).await.unwrap();
    assert_eq!(
        store.requests(None, 1).await.unwrap()[0].record.request_id,
        None
    );
    store.close().await;
}

/// A batch larger than one INSERT statement (the writer sends up to 512
/// lines at once) is written whole, every field kept, and a bad line in its
/// last statement leaves none of the batch behind.
async fn large_batches_are_written_whole(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "batch".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let lines: Vec<UsageRecord> = (0..300)
        .map(|i| {
            let mut record = line(10_000 + i, Some(&key.id), "gpt", Some(0.001), 200);
            record.privacy = (i % 7 == 0).then(|| format!("redacted line={i}"));
            record.end_user = (i % 3 == 0).then(|| format!("user-{i}"));
            record
        })
        .collect();
    store.record(&BatchId::new(), &lines).await.unwrap();
    let by_key = store.usage(GroupBy::Key, None).await.unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].requests, 300);
    assert!(close(by_key[0].cost_usd, 0.3), "{by_key:?}");
    let listed = store.requests(None, 1000).await.unwrap();
    assert_eq!(listed.len(), 300);
    // Newest first: the last line written comes back as it was (no body).
    assert_eq!(listed[0].record, lines[299]);
    assert_eq!(listed[299].record, lines[0]);
    assert_eq!(listed[160].record, lines[139]);
    assert_eq!(listed[161].record.end_user.as_deref(), Some("user-138"));
    assert_eq!(listed[161].record, lines[138]);

    let mut failing: Vec<UsageRecord> = (0..200)
        .map(|i| line(20_000 + i, Some(&key.id), "claude", Some(1.0), 200))
        .collect();
    failing[199].key_id = Some("key_missing".into());
    let batch = BatchId::new();
    assert!(store.record(&batch, &failing).await.is_err());
    let by_model = store.usage(GroupBy::Model, None).await.unwrap();
    assert_eq!(by_model.len(), 1, "{by_model:?}");
    assert_eq!(by_model[0].requests, 300);
    // The failed batch's id went with it: mended, it is written.
    failing[199].key_id = Some(key.id.clone());
    assert_eq!(
        store.record(&batch, &failing).await.unwrap(),
        Recorded::Written
    );
    let by_model = store.usage(GroupBy::Model, None).await.unwrap();
    assert_eq!(by_model.len(), 2, "{by_model:?}");
    store.close().await;
}

/// A ledger batch written twice (the writer tries again when a write's
/// answer was lost) is kept once; another batch of the same lines is
/// another batch. Batch ids are forgotten an hour after they were written.
async fn a_ledger_batch_tried_again_is_written_once(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let lines = [
        line(1_000, None, "gpt", Some(0.25), 200),
        line(1_001, None, "gpt", None, 502),
    ];
    let requests = async || {
        let by_model = store.usage(GroupBy::Model, None).await.unwrap();
        by_model.iter().map(|row| row.requests).sum::<u64>()
    };
    let first = BatchId::new();
    assert_eq!(
        store.record(&first, &lines).await.unwrap(),
        Recorded::Written
    );
    assert_eq!(
        store.record(&first, &lines).await.unwrap(),
        Recorded::AlreadyWritten
    );
    assert_eq!(requests().await, 2);
    let second = BatchId::new();
    assert_ne!(first, second);
    assert_eq!(
        store.record(&second, &lines).await.unwrap(),
        Recorded::Written
    );
    assert_eq!(requests().await, 4);

    let ids = "SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_ledger_batches";
    assert_eq!(db.scalar(ids).await, 2);
    // The sweep keeps an id written within the hour, and forgets one
    // written before.
    store.release_expired_reservations().await.unwrap();
    assert_eq!(db.scalar(ids).await, 2);
    db.execute(&format!(
        "UPDATE freehold_ledger_batches SET written_at_ms = written_at_ms - 3601000 \
         WHERE batch_id = '{}'",
        first.as_str()
    ))
    .await;
    store.release_expired_reservations().await.unwrap();
    assert_eq!(db.scalar(ids).await, 1);
    assert_eq!(
        store.record(&second, &lines).await.unwrap(),
        Recorded::AlreadyWritten
    );
    assert_eq!(requests().await, 4);
    store.close().await;
}

async fn a_cost_out_of_range_is_held_to_the_range(db: &TestDb) {
    // An upstream reporting absurd token counts must not cost the lines
    // batched with its own, nor leave a hold unsettled.
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "absurd".into(),
            budget_usd: Some(5.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let lines = [
        line(1_000, Some(&key.id), "gpt", Some(2e9), 200),
        line(2_000, Some(&key.id), "gpt", Some(0.25), 200),
        line(3_000, Some(&key.id), "gpt", Some(f64::NAN), 200),
    ];
    store.record(&BatchId::new(), &lines).await.unwrap();
    let by_key = store.usage(GroupBy::Key, None).await.unwrap();
    assert_eq!(by_key[0].requests, 3);
    assert!(close(by_key[0].cost_usd, 1e9 + 0.25), "{by_key:?}");
    let hold = store.reserve(&key.id, 1.0).await.unwrap();
    store.settle(&hold, f64::INFINITY).await.unwrap();
    let after = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(after.reserved_usd, 0.0), "{after:?}");
    assert!(close(after.spent_usd, 1e9), "{after:?}");
    store.close().await;
}

async fn reopening_keeps_data_and_migrates_once(db: &TestDb) {
    // Two processes opening a fresh database at once both succeed.
    let (first, second) = tokio::join!(Store::open(db.url()), Store::open(db.url()));
    let (first, second) = (first.unwrap(), second.unwrap());
    let (key, secret) = first
        .create_key(NewKey {
            name: "kept".into(),
            budget_usd: Some(5.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let hold = first.reserve(&key.id, 1.0).await.unwrap();
    first.settle(&hold, 0.75).await.unwrap();
    first
        .record(
            &BatchId::new(),
            &[line(1_000, Some(&key.id), "gpt", Some(0.75), 200)],
        )
        .await
        .unwrap();
    first.close().await;
    second.close().await;

    let again = Store::open(db.url()).await.unwrap();
    let found = again.key_by_secret(&secret).await.unwrap().unwrap();
    assert_eq!(found.id, key.id);
    assert!(close(found.spent_usd, 0.75));
    assert_eq!(again.usage(GroupBy::Model, None).await.unwrap().len(), 1);
    again.close().await;
    // And once more: migrations already applied are skipped.
    let third = Store::open(db.url()).await.unwrap();
    assert_eq!(third.list_keys().await.unwrap().len(), 1);
    third.close().await;
}

/// A gateway that died mid-request left a hold: past its expiry, one of
/// the gateways sharing the database releases it, once; holds of requests
/// still in flight stay.
async fn expired_reservations_are_released_once(db: &TestDb) {
    let (first, second) = tokio::join!(Store::open(db.url()), Store::open(db.url()));
    let (first, second) = (first.unwrap(), second.unwrap());
    let (key, _) = first
        .create_key(NewKey {
            name: "held".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let lost = first
        .reserve_for(&key.id, 0.4, Duration::ZERO)
        .await
        .unwrap();
    let live = first
        .reserve_for(&key.id, 0.3, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_ne!(lost.id, live.id);
    // Timed by the database's clock, in milliseconds: the live hold expires
    // an hour from now (this machine's clock is the database's here).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let expiries = db.reservation_expiries().await;
    assert_eq!(expiries.len(), 2);
    let hour_ms = 3_600_000;
    assert!(
        (expiries[1] - (now_ms + hour_ms)).abs() < 60_000,
        "{expiries:?} against {now_ms}"
    );
    assert!((expiries[0] - now_ms).abs() < 60_000, "{expiries:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (a, b) = tokio::join!(
        first.release_expired_reservations(),
        second.release_expired_reservations()
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(second.release_expired_reservations().await.unwrap(), 0);
    assert_totals(&first, &key.id, 0.0, 0.3).await;
    // The budget has room again for what the dead request held.
    let again = second.reserve(&key.id, 0.7).await.unwrap();
    second.settle(&again, 0.0).await.unwrap();

    // A request in flight settles as usual; a released one that settles
    // after all adds its cost without releasing its hold a second time.
    first.settle(&live, 0.2).await.unwrap();
    first.settle(&lost, 0.1).await.unwrap();
    // A hold as long as a Duration goes is capped, not an SQL overflow.
    let forever = first
        .reserve_for(&key.id, 0.1, Duration::MAX)
        .await
        .unwrap();
    first.settle(&forever, 0.0).await.unwrap();
    assert_totals(&first, &key.id, 0.3, 0.0).await;
    first.close().await;
    second.close().await;
}

/// A database made by a Freehold from before reservations had rows (schema
/// version 1) is upgraded in place, its keys and holds kept.
#[tokio::test]
async fn a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("old.db").display());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let mut old = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::raw_sql(include_str!("../src/store/migrations/sqlite_0001_init.sql"))
            .execute(&mut old)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE freehold_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at BIGINT NOT NULL); \
             INSERT INTO freehold_migrations VALUES (1, 'keys and usage ledger', 0); \
             INSERT INTO freehold_keys (id, name, prefix, secret_sha256, created_at, \
             budget_micros, reserved_micros) VALUES ('key_old', 'old', 'fh-old', 'x', 0, \
             2000000, 500000);",
        )
        .execute(&mut old)
        .await
        .unwrap();
        old.close().await.unwrap();
    }
    let store = Store::open(&url).await.unwrap();
    let key = store.key_by_id("key_old").await.unwrap().unwrap();
    assert!(close(key.reserved_usd, 0.5), "{key:?}");
    let hold = store.reserve(&key.id, 1.0).await.unwrap();
    store.settle(&hold, 0.25).await.unwrap();
    let key = store.key_by_id("key_old").await.unwrap().unwrap();
    assert!(
        close(key.reserved_usd, 0.5) && close(key.spent_usd, 0.25),
        "{key:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn in_memory_sqlite() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.location(), ":memory:");
    let (key, secret) = store
        .create_key(NewKey {
            name: "mem".into(),
            ..NewKey::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.key_by_secret(&secret).await.unwrap().unwrap().id,
        key.id
    );
    assert_eq!(store.list_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bare_path_is_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/gateway.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    assert!(path.exists());
    store.close().await;
}

#[tokio::test]
async fn open_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.join("gateway.db");
    let err = Store::open(path.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open the database at"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let err = Store::open("mysql://u:p@host/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported database"), "{err}");
    let err = Store::open("  ").await.unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");

    // Nothing listens on port 1; the password is never shown.
    let err = Store::open("postgres://alice:s3cr3t-pw@127.0.0.1:1/ledger")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("PostgreSQL unreachable at"), "{err}");
    assert!(err.contains("postgres://alice@127.0.0.1:1/ledger"), "{err}");
    assert!(!err.contains("s3cr3t-pw"), "{err}");
}

#[tokio::test]
async fn postgres_handle_hides_the_password() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = Store::open(db.url()).await.unwrap();
    let password = db
        .url()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, password)| password.to_owned());
    if let Some(password) = password {
        assert!(!format!("{store:?}").contains(&password));
        assert!(!store.location().contains(&password));
    }
    assert!(store.location().starts_with("postgres://"));
    store.close().await;
    db.finish().await;
}

#[test]
fn database_urls() {
    assert_eq!(
        with_database("postgres://u:p@h:5/db?sslmode=disable", "x"),
        "postgres://u:p@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

/// A gateway of an older version, still running when a newer `freehold`
/// upgraded the schema, takes its holds as it always did: the key's total
/// updated by its own statement, then the row inserted. They must count
/// once, and this version must settle and release them.
async fn a_hold_taken_by_an_older_gateway_is_counted_once(db: &TestDb) {
    let store = Store::open(db.url()).await.unwrap();
    let (key, _) = store
        .create_key(NewKey {
            name: "upgraded".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let old_hold = |id: &str, micros: i64, expires_at_ms: i64| {
        format!(
            "UPDATE freehold_keys SET reserved_micros = reserved_micros + {micros} \
             WHERE id = '{key}'; \
             INSERT INTO freehold_reservations (id, key_id, micros, expires_at_ms) \
             VALUES ('{id}', '{key}', {micros}, {expires_at_ms});",
            key = key.id
        )
    };
    let far = (unix_now() + 3600) * 1000;
    db.execute(&old_hold("res_old_settled", 300_000, far)).await;
    db.execute(&old_hold("res_old_expired", 200_000, 0)).await;
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(close(now.reserved_usd, 0.5), "{}", now.reserved_usd);

    // This version's holds count beside them, up to the budget.
    let new_hold = store.reserve(&key.id, 0.5).await.unwrap();
    assert!(store.reserve(&key.id, 0.000_001).await.is_err());

    let old = Reservation {
        id: "res_old_settled".into(),
        key_id: key.id.clone(),
        amount_usd: 0.3,
    };
    store.settle(&old, 0.25).await.unwrap();
    assert_eq!(store.release_expired_reservations().await.unwrap(), 1);
    store.settle(&new_hold, 0.1).await.unwrap();
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(
        close(now.spent_usd, 0.35) && close(now.reserved_usd, 0.0),
        "spent {} reserved {}",
        now.spent_usd,
        now.reserved_usd
    );
    let rows = db
        .scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM freehold_reservations")
        .await;
    assert_eq!(rows, 0);
    store.close().await;
}

/// A schema newer than this binary knows could change what its statements
/// mean (a trigger that counts a hold, say): it is refused, not misread.
async fn a_database_from_a_newer_freehold_is_refused(db: &TestDb) {
    Store::open(db.url()).await.unwrap().close().await;
    db.execute(
        "INSERT INTO freehold_migrations (version, description, applied_at) \
         VALUES (999, 'from the future', 0)",
    )
    .await;
    let refused = Store::open(db.url()).await.unwrap_err().to_string();
    assert!(
        refused.contains("version 999") && refused.contains("upgrade freehold"),
        "{refused}"
    );
}
