//! Gateway leases: which gateways sharing the database are alive, so that
//! the budget reservations of one that died are released within a minute
//! or so, instead of at their own expiry (past the longest a request can
//! take, about 16 minutes by default).
//!
//! A gateway takes a lease when it starts ([`Store::as_gateway`]) and
//! renews it while it runs ([`Store::renew_lease`]); its reservations name
//! it. Once its lease has run out, [`Store::release_expired_reservations`],
//! run by any gateway, releases them. Leases are timed by the database's
//! clock, like the reservations' own expiries.

use std::sync::Arc;
use std::time::Duration;

use super::{Pool, Store, StoreError, db, duration_ms, random_hex};

/// How long after its lease ended a gateway's row is forgotten (its
/// reservations were released when the lease ended).
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl Store {
    /// Registers this process as a gateway, alive for `lease` from now, and
    /// returns a handle to the same database whose reservations name it.
    /// Renew the lease well before it runs out ([`Store::renew_lease`]).
    ///
    /// # Errors
    /// A database failure.
    pub async fn as_gateway(&self, lease: Duration) -> Result<Store, StoreError> {
        let mut store = self.clone();
        store.gateway_id = Some(Arc::from(format!("gw_{}", random_hex(8)?)));
        store.renew_lease(lease).await?;
        Ok(store)
    }

    /// This handle's gateway id, when it is one ([`Store::as_gateway`]).
    pub fn gateway_id(&self) -> Option<&str> {
        self.gateway_id.as_deref()
    }

    /// Extends this gateway's lease to `lease` from now (and takes it again
    /// if it had run out and was forgotten). A handle that is not a
    /// gateway's does nothing.
    ///
    /// # Errors
    /// A database failure.
    pub async fn renew_lease(&self, lease: Duration) -> Result<(), StoreError> {
        let Some(id) = &self.gateway_id else {
            return Ok(());
        };
        let now = self.now_ms_sql();
        let upsert = format!(
            "INSERT INTO freehold_gateways (id, alive_until_ms) VALUES ($1, {now} + $2) \
             ON CONFLICT (id) DO UPDATE SET alive_until_ms = {now} + $2"
        );
        with_pool!(self, pool => {
            sqlx::query(&upsert)
                .bind(id.as_ref())
                .bind(duration_ms(lease).min(super::CENTURY_MS))
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(db("cannot renew the gateway's lease"))
    }

    /// Ends this gateway's lease now, at shutdown: whatever it still holds
    /// (settlements that were cut off) is released by the next sweep of any
    /// gateway sharing the database.
    ///
    /// # Errors
    /// A database failure.
    pub async fn end_lease(&self) -> Result<(), StoreError> {
        let Some(id) = &self.gateway_id else {
            return Ok(());
        };
        let end = format!(
            "UPDATE freehold_gateways SET alive_until_ms = {} - 1 WHERE id = $1",
            self.now_ms_sql()
        );
        with_pool!(self, pool => {
            sqlx::query(&end)
                .bind(id.as_ref())
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(db("cannot end the gateway's lease"))
    }
}
