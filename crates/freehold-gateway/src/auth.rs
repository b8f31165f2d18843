//! Who is calling: the master key, a virtual key, or nobody (an open
//! gateway on loopback).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::GatewayError;
use crate::store::{KeyRecord, KeyState, Store};

/// How long a looked-up key is trusted before the database is asked
/// again: revocations reach every replica within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Looked-up secrets: when, and the key (or `None`: no such key).
/// Lookups by the SHA-256 of the secret: the cache holds no secret, and
/// its entries are the same size whatever a client sends.
type KeyCache = HashMap<[u8; 32], (Instant, Option<Arc<KeyRecord>>)>;

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

/// The credentials a request carries, in the order they are tried:
/// `x-api-key` (Anthropic clients), then `Authorization: Bearer` (OpenAI
/// clients; Anthropic's SDK with an auth token too). Anthropic's SDK sends
/// both when it has both, an `ANTHROPIC_API_KEY` from the environment
/// beside the token it was given, so either may be the gateway's.
pub fn credentials(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty());
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let other_bearer = bearer.filter(|token| api_key != Some(*token));
    api_key.into_iter().chain(other_bearer)
}

/// Checks credentials against the master key and the key store.
pub struct Authenticator {
    require_key: bool,
    /// The SHA-256 of the master key: digests of equal length are
    /// compared, so the comparison's time says nothing of the key's length.
    master_key: Option<[u8; 32]>,
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
            master_key: master_key
                .filter(|key| !key.is_empty())
                .map(|key| Sha256::digest(key.as_bytes()).into()),
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
        let mut secrets = credentials(headers).peekable();
        if secrets.peek().is_none() && self.require_key {
            return Err(GatewayError::unauthorized(
                "no API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY` \
                 (`freehold keys create` makes one)",
            ));
        }
        // The first credential that is the gateway's decides; a refusal
        // stands only when no other credential is the gateway's either.
        let mut refusal = None;
        for secret in secrets {
            match self.caller_for(secret).await? {
                Some(Ok(caller)) => return Ok(caller),
                Some(Err(refused)) => {
                    refusal.get_or_insert(refused);
                }
                None => {}
            }
        }
        if let Some(refused) = refusal {
            return Err(refused);
        }
        if !self.require_key {
            // An open gateway ignores keys it does not know (clients
            // often send a placeholder).
            return Ok(Caller::Open);
        }
        // OpenAI's own opening words for a wrong key, which clients
        // (litellm, and so Aider) look for to say the key is wrong.
        Err(GatewayError::unauthorized(
            "Incorrect API key provided: it is neither the master key nor a virtual key of this \
             gateway (`freehold keys list` shows the keys)",
        ))
    }

    /// Who `secret` makes the caller: `None` for a secret that is not the
    /// gateway's, `Some(Err)` for a key of the gateway's that is refused
    /// (revoked or expired).
    ///
    /// # Errors
    /// 500 when the key store cannot be read.
    async fn caller_for(
        &self,
        secret: &str,
    ) -> Result<Option<Result<Caller, GatewayError>>, GatewayError> {
        if let Some(master) = &self.master_key
            && bool::from(Sha256::digest(secret.as_bytes()).as_slice().ct_eq(master))
        {
            return Ok(Some(Ok(Caller::Master)));
        }
        let Some(key) = self.lookup(secret).await? else {
            return Ok(None);
        };
        Ok(Some(Self::admit(key)))
    }

    /// A virtual key of the gateway's, unless it is revoked or expired.
    fn admit(key: Arc<KeyRecord>) -> Result<Caller, GatewayError> {
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
        // What cannot be one of the gateway's keys is neither looked up
        // nor cached: a client sending huge or random headers costs no
        // query and no memory.
        if !crate::store::could_be_key_secret(secret) {
            return Ok(None);
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some((at, key)) = self.lock().get(&digest)
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
        cache.insert(digest, (Instant::now(), key.clone()));
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

    fn found(pairs: &[(&'static str, &str)]) -> Vec<String> {
        credentials(&headers(pairs)).map(str::to_owned).collect()
    }

    #[test]
    fn credentials_come_from_either_header() {
        assert_eq!(found(&[("x-api-key", "a")]), ["a"]);
        assert_eq!(found(&[("authorization", "Bearer b")]), ["b"]);
        assert_eq!(found(&[("authorization", "bearer  c ")]), ["c"]);
        assert!(found(&[("authorization", "Basic x")]).is_empty());
        assert!(found(&[]).is_empty());
        // Both, as Anthropic's SDK sends them with a key and a token:
        // tried in this order, the same one once.
        assert_eq!(
            found(&[("x-api-key", "a"), ("authorization", "Bearer b")]),
            ["a", "b"]
        );
        assert_eq!(
            found(&[("x-api-key", "a"), ("authorization", "Bearer a")]),
            ["a"]
        );
        assert_eq!(
            found(&[("x-api-key", " "), ("authorization", "Bearer b")]),
            ["b"]
        );
    }

    /// Virtual keys are looked up by their hash and cached by it; what
    /// cannot be a key (too long, another vendor's) is refused without a
    /// lookup and is not cached, so a flood of huge headers holds no memory.
    #[tokio::test]
    async fn only_what_could_be_a_key_is_looked_up_and_cached() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (_, secret) = store
            .create_key(crate::store::NewKey {
                name: "k".into(),
                ..crate::store::NewKey::default()
            })
            .await
            .unwrap();
        let auth = Authenticator::new(true, None, Some(store.clone()));
        let caller = auth
            .authenticate(&headers(&[("x-api-key", &secret)]))
            .await
            .unwrap();
        assert!(matches!(caller, Caller::Virtual(key) if key.name == "k"));
        let huge = format!("fh-{}", "x".repeat(200_000));
        for wrong in [huge.as_str(), "sk-ant-elsewhere"] {
            let refused = auth
                .authenticate(&headers(&[("x-api-key", wrong)]))
                .await
                .unwrap_err();
            assert_eq!(refused.status, 401);
        }
        // A secret of the right shape that is no key is cached, as "none".
        let unknown = format!("fh-{}", "y".repeat(48));
        assert!(
            auth.authenticate(&headers(&[("x-api-key", &unknown)]))
                .await
                .is_err()
        );
        {
            let cache = auth.lock();
            assert_eq!(cache.len(), 2);
            assert!(cache.contains_key(&<[u8; 32]>::from(Sha256::digest(secret.as_bytes()))));
            assert!(cache.values().any(|(_, key)| key.is_none()));
        }
        // Not looked up at all: with the store gone, a lookup would be a
        // 500; what cannot be a key is still a plain 401.
        store.close().await;
        let refused = auth
            .authenticate(&headers(&[("x-api-key", &huge)]))
            .await
            .unwrap_err();
        assert_eq!(refused.status, 401);
        let looked_up = auth
            .authenticate(&headers(&[(
                "x-api-key",
                &format!("fh-{}", "z".repeat(48)),
            )]))
            .await
            .unwrap_err();
        assert_eq!(looked_up.status, 500);
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
            wrong.message.starts_with("Incorrect API key provided"),
            "{}",
            wrong.message
        );
        // A key beside the master key, either way round: the master key
        // decides (Anthropic's SDK sends a key from the environment beside
        // the token it was given).
        for pair in [
            [
                ("x-api-key", "sk-ant-elsewhere"),
                ("authorization", "Bearer sekrit"),
            ],
            [
                ("x-api-key", "sekrit"),
                ("authorization", "Bearer sk-ant-elsewhere"),
            ],
        ] {
            let caller = auth.authenticate(&headers(&pair)).await.unwrap();
            assert!(matches!(caller, Caller::Master), "{pair:?}");
        }
        let neither = auth
            .authenticate(&headers(&[
                ("x-api-key", "sekrix"),
                ("authorization", "Bearer sekriy"),
            ]))
            .await
            .unwrap_err();
        assert!(
            neither.message.starts_with("Incorrect API key provided"),
            "{}",
            neither.message
        );
        // A master key's length is not told by the comparison: one that
        // begins like it, or holds it, is no better than any other.
        for near in ["sekri", "sekrit-", "sekritsekrit"] {
            let refused = auth.authenticate(&headers(&[("x-api-key", near)])).await;
            assert!(refused.is_err(), "{near}");
        }
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
