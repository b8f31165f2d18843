//! Who is calling: the master key, a virtual key, or nobody (an open
//! gateway on loopback).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::GatewayError;
use crate::store::{KeyRecord, KeyState, Store};

/// How long a looked-up key is trusted before the database is asked
/// again: revocations reach every replica within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Looked-up secrets: when, and the key (or `None`: no such key).
type KeyCache = HashMap<String, (Instant, Option<Arc<KeyRecord>>)>;

/// The identity a request runs under.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No key needed (`require_key = false`).
    Open,
    /// The master key: every model, no limits.
    Master,
    /// A virtual key with its settings.
    Virtual(Arc<KeyRecord>),
}

impl Caller {
    /// The name used in metrics and logs (never the secret).
    pub fn label(&self) -> &str {
        match self {
            Self::Open => "open",
            Self::Master => "master",
            Self::Virtual(key) => &key.name,
        }
    }

    /// The virtual key, if any.
    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Self::Virtual(key) => Some(key),
            _ => None,
        }
    }

    /// Whether this caller may use `model` (as the client named it).
    ///
    /// # Errors
    /// 403 naming the models the key allows.
    pub fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        let Some(key) = self.key() else {
            return Ok(());
        };
        if key.allowed_models.is_empty() || key.allowed_models.iter().any(|m| m == model) {
            return Ok(());
        }
        Err(GatewayError::forbidden(format!(
            "key `{}` may not use model `{model}`; it allows: {}",
            key.name,
            key.allowed_models.join(", ")
        )))
    }
}

/// The credential a request carries: `x-api-key` (Anthropic clients) or
/// `Authorization: Bearer` (OpenAI clients; Anthropic's SDK with an auth
/// token too).
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let key = key.trim();
        if !key.is_empty() {
            return Some(key);
        }
    }
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks credentials against the master key and the key store.
pub struct Authenticator {
    require_key: bool,
    master_key: Option<String>,
    store: Option<Store>,
    cache: Mutex<KeyCache>,
}

/// Written by hand: the master key and the cache's secrets never appear.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("require_key", &self.require_key)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator; `master_key` is the secret itself (from the
    /// environment), `store` holds the virtual keys.
    pub fn new(require_key: bool, master_key: Option<String>, store: Option<Store>) -> Self {
        Self {
            require_key,
            master_key: master_key.filter(|key| !key.is_empty()),
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Who is calling.
    ///
    /// # Errors
    /// 401 with the reason: no key, a wrong one, a revoked or expired one;
    /// 500 when the key store cannot be read.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
        let Some(secret) = credential(headers) else {
            if !self.require_key {
                return Ok(Caller::Open);
            }
            return Err(GatewayError::unauthorized(
                "no API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY` \
                 (`freehold keys create` makes one)",
            ));
        };
        if let Some(master) = &self.master_key
            && bool::from(secret.as_bytes().ct_eq(master.as_bytes()))
        {
            return Ok(Caller::Master);
        }
        let Some(key) = self.lookup(secret).await? else {
            if !self.require_key {
                // An open gateway ignores keys it does not know (clients
                // often send a placeholder).
                return Ok(Caller::Open);
            }
            return Err(GatewayError::unauthorized(
                "invalid API key: it is neither the master key nor a virtual key of this \
                 gateway (`freehold keys list` shows the keys)",
            ));
        };
        let now = now_secs();
        if key.revoked_at.is_some() {
            return Err(GatewayError::unauthorized(format!(
                "API key `{}` ({}) has been revoked",
                key.name, key.prefix
            )));
        }
        // `expires_at` is the last second the key is valid (a date given
        // to `keys create --expires` lasts through its end).
        if key.state(now) == KeyState::Expired {
            return Err(GatewayError::unauthorized(format!(
                "API key `{}` ({}) has expired; create a new one with `freehold keys create`",
                key.name, key.prefix
            )));
        }
        Ok(Caller::Virtual(key))
    }

    async fn lookup(&self, secret: &str) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        if let Some((at, key)) = self.lock().get(secret)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let key = store
            .key_by_secret(secret)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading the key store");
                GatewayError::internal("the gateway could not read its key store")
            })?
            .map(Arc::new);
        let mut cache = self.lock();
        // Unknown secrets are cached too (so a flood of wrong keys does not
        // become a flood of queries), but the cache is bounded.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(secret.to_owned(), (Instant::now(), key.clone()));
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn credentials_come_from_either_header() {
        assert_eq!(credential(&headers(&[("x-api-key", "a")])), Some("a"));
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer b")])),
            Some("b")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  c ")])),
            Some("c")
        );
        assert_eq!(credential(&headers(&[("authorization", "Basic x")])), None);
        assert_eq!(credential(&headers(&[])), None);
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let auth = Authenticator::new(true, Some("sekrit".into()), None);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[tokio::test]
    async fn master_key_and_missing_keys() {
        let auth = Authenticator::new(true, Some("sekrit".into()), None);
        let caller = auth
            .authenticate(&headers(&[("x-api-key", "sekrit")]))
            .await
            .unwrap();
        assert!(matches!(caller, Caller::Master));
        let missing = auth.authenticate(&headers(&[])).await.unwrap_err();
        assert_eq!(missing.status, 401);
        let wrong = auth
            .authenticate(&headers(&[("x-api-key", "sekrix")]))
            .await
            .unwrap_err();
        assert!(
            wrong.message.contains("invalid API key"),
            "{}",
            wrong.message
        );
        // An open gateway lets anyone in.
        let open = Authenticator::new(false, None, None);
        assert!(matches!(
            open.authenticate(&headers(&[("x-api-key", "whatever")]))
                .await
                .unwrap(),
            Caller::Open
        ));
    }
}
