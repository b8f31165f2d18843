//! Per-key rate limits: requests and tokens per minute over a sliding
//! window.
//!
//! A gateway alone keeps the windows in its memory, as counts per tenth of
//! a second (so that a key's memory is bounded, whatever its rate), which
//! leave the window once their latest arrival has. Gateways sharing a
//! PostgreSQL database keep them in it instead ([`Store::admit_rate`]), so that a key's limit
//! holds across all of them rather than once per replica; the window is
//! then estimated from two whole minutes, at the cost of a database round
//! trip for each request of a limited key (as a budget costs one).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::store::{RateWindow, Store};

/// The window the limits count over.
const WINDOW: Duration = Duration::from_secs(60);

/// A refused request: how long until it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit.
    pub limit: LimitKind,
    /// The configured value.
    pub per_minute: u32,
    /// When to try again.
    pub retry_after: Duration,
}

/// Which per-minute limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.limit {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        };
        write!(
            f,
            "rate limit of {} {what} per minute reached for this key; retry in {} s",
            self.per_minute,
            // Rounded up, as the Retry-After header is.
            self.retry_after.as_secs_f64().ceil().max(1.0) as u64
        )
    }
}

/// How finely the in-memory windows slice time: a key's counts take at
/// most `WINDOW / SLICE` (600) entries, however fast its requests come.
const SLICE: Duration = Duration::from_millis(100);

/// A count over the last [`WINDOW`], kept in slices of at most [`SLICE`].
/// A slice leaves the window only once its latest arrival has, so the
/// count is never below the true one and at most one slice's worth above.
#[derive(Debug, Default)]
struct Counter {
    /// Per slice: when it began, its latest arrival, and its count.
    slices: VecDeque<(Instant, Instant, u64)>,
    /// The sum of the slices' counts.
    total: u64,
}

impl Counter {
    fn add(&mut self, now: Instant, count: u64) {
        match self.slices.back_mut() {
            Some((began, latest, slice)) if now.saturating_duration_since(*began) < SLICE => {
                *latest = now;
                *slice += count;
            }
            _ => self.slices.push_back((now, now, count)),
        }
        self.total += count;
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, latest, count)) = self.slices.front().copied() {
            if now.saturating_duration_since(latest) < WINDOW {
                break;
            }
            self.slices.pop_front();
            self.total -= count;
        }
    }

    /// How long until the count falls below `limit`, if nothing more comes.
    fn wait_until_below(&self, limit: u64, now: Instant) -> Duration {
        let mut remaining = self.total;
        for (_, latest, count) in &self.slices {
            if remaining < limit {
                break;
            }
            remaining -= count;
            if remaining < limit {
                return WINDOW.saturating_sub(now.saturating_duration_since(*latest));
            }
        }
        // Already below (or a limit of 0, which nothing gets under).
        if self.total < limit {
            Duration::ZERO
        } else {
            WINDOW
        }
    }
}

/// One key's recent traffic.
#[derive(Debug, Default)]
struct Window {
    /// Requests admitted.
    requests: Counter,
    /// Tokens used by finished requests.
    tokens: Counter,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        self.requests.expire(now);
        self.tokens.expire(now);
    }
}

/// Sliding-window counters for every key seen, in memory or in the
/// database the gateways share.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
    /// The database the windows are kept in when gateways share them;
    /// `None` keeps them in `windows`, which is also the fallback while
    /// that database fails.
    shared: Option<Shared>,
}

/// How long the limiter counts in memory after the shared database failed,
/// before it tries the database again.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(5);

/// The shared database's side of a [`RateLimiter`].
#[derive(Debug)]
struct Shared {
    store: Store,
    /// Keys the database refused, with the refusal and when it ends. Until
    /// then the key is refused here without asking: its count can only go
    /// up before time brings it down, so asking sooner would only load the
    /// database every gateway shares (a client that ignores `Retry-After`
    /// would cost two queries a request).
    refused: Mutex<HashMap<String, (Instant, Limited)>>,
    /// Until when the database is not asked, after it failed.
    unavailable_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// Limits counted in this process's memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Limits counted in `store`, shared with every gateway using it.
    pub fn shared(store: Store) -> Self {
        Self {
            windows: Mutex::default(),
            shared: Some(Shared {
                store,
                refused: Mutex::default(),
                unavailable_until: Mutex::default(),
            }),
        }
    }

    /// Whether the limits are counted in a shared database.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Admits a request for `key` if it is under both limits, counting it,
    /// and, for a key with a token limit, its `input_tokens` (the prompt's
    /// estimate) at once: requests sent together then cannot all pass
    /// before any of them has finished and been counted. Returns the tokens
    /// counted, for the request's end to leave out when it counts the rest
    /// (0 when the shared database was down and memory alone counted them:
    /// the end then writes them all to the database).
    ///
    /// When the shared database fails, requests are counted in this
    /// process's memory instead for the next few seconds (and a warning
    /// logged): a rate limit is not worth refusing service over, unlike a
    /// budget.
    ///
    /// # Errors
    /// [`Limited`] with the time until enough of the window has passed.
    pub async fn admit(
        &self,
        key: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        input_tokens: u64,
    ) -> Result<u64, Limited> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(0);
        }
        let counted = if tpm.is_some() { input_tokens } else { 0 };
        if let Some(shared) = &self.shared
            && let Some(admitted) = shared.admit(key, rpm, tpm, counted).await
        {
            if admitted.is_ok() {
                self.count_in_memory_window(key, counted);
            }
            return admitted.map(|()| counted);
        }
        self.admit_in_memory(key, rpm, tpm, counted)?;
        // Counted in memory alone while the shared database is down: the
        // request's end writes all of its tokens there (and to memory again,
        // which only makes the fallback count more).
        Ok(if self.shared.is_some() { 0 } else { counted })
    }

    fn admit_in_memory(
        &self,
        key: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        input_tokens: u64,
    ) -> Result<(), Limited> {
        let now = Instant::now();
        let mut windows = self.lock();
        let window = windows.entry(key.to_owned()).or_default();
        window.expire(now);
        if let Some(rpm) = rpm
            && window.requests.total >= u64::from(rpm)
        {
            return Err(Limited {
                limit: LimitKind::Requests,
                per_minute: rpm,
                retry_after: window.requests.wait_until_below(u64::from(rpm), now),
            });
        }
        if let Some(tpm) = tpm
            && window.tokens.total >= u64::from(tpm)
        {
            return Err(Limited {
                limit: LimitKind::Tokens,
                per_minute: tpm,
                retry_after: window.tokens.wait_until_below(u64::from(tpm), now),
            });
        }
        window.requests.add(now, 1);
        if input_tokens > 0 {
            window.tokens.add(now, input_tokens);
        }
        Ok(())
    }

    /// Adds `tokens` to `key`'s window in memory, where it has one: the
    /// fallback's count, for when the shared database fails.
    fn count_in_memory_window(&self, key: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut windows = self.lock();
        if let Some(window) = windows.get_mut(key) {
            window.tokens.add(Instant::now(), tokens);
        }
    }

    /// Counts `tokens` used by a finished request of `key`, whose token
    /// limit is `tpm`, less the `counted_at_admission` that
    /// [`RateLimiter::admit`] counted already (a request that used fewer
    /// than its estimate keeps them counted). In a shared database that is
    /// a write, spawned and tracked by `writes` (shutdown waits for it),
    /// and only for keys with a token limit.
    pub(crate) fn record_tokens(
        &self,
        key: &str,
        tokens: u64,
        counted_at_admission: u64,
        tpm: Option<u32>,
        writes: &TaskTracker,
    ) {
        let tokens = tokens.saturating_sub(counted_at_admission);
        if tokens == 0 {
            return;
        }
        if let Some(shared) = &self.shared
            && tpm.is_some()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let (store, key) = (shared.store.clone(), key.to_owned());
            handle.spawn(writes.track_future(async move {
                if let Err(error) = store.add_rate_tokens(&key, tokens).await {
                    tracing::warn!(%error, "counting a request's tokens against its key's limit");
                }
            }));
        }
        // In memory too: the fallback's window, when the database fails.
        self.count_in_memory_window(key, tokens);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        lock(&self.windows)
    }
}

impl Shared {
    /// The database's answer, or `None` when it is unavailable (the caller
    /// counts in memory then).
    async fn admit(
        &self,
        key: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        input_tokens: u64,
    ) -> Option<Result<(), Limited>> {
        let now = Instant::now();
        if lock(&self.unavailable_until).is_some_and(|until| now < until) {
            return None;
        }
        {
            let mut refused = lock(&self.refused);
            match refused.get(key) {
                Some((until, limited)) if now < *until => {
                    return Some(Err(Limited {
                        retry_after: *until - now,
                        ..*limited
                    }));
                }
                Some(_) => {
                    refused.remove(key);
                }
                None => {}
            }
        }
        match self.store.admit_rate(key, rpm, tpm, input_tokens).await {
            Ok(None) => Some(Ok(())),
            Ok(Some(window)) => {
                let limited = refusal(&window, rpm, tpm);
                lock(&self.refused).insert(key.to_owned(), (now + limited.retry_after, limited));
                Some(Err(limited))
            }
            Err(error) => {
                let mut until = lock(&self.unavailable_until);
                // One warning per outage, not one per request.
                if until.is_none_or(|until| until <= now) {
                    tracing::warn!(
                        %error,
                        "the shared rate limits are unavailable; counting requests in this \
                         gateway alone for {} s",
                        UNAVAILABLE_FOR.as_secs()
                    );
                }
                *until = Some(Instant::now() + UNAVAILABLE_FOR);
                None
            }
        }
    }
}

/// Locks `mutex`, even one poisoned by a panic: the counters stay usable,
/// and serving on beats failing every later request.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the shared `window` refused a request, and when to retry.
fn refusal(window: &RateWindow, rpm: Option<u32>, tpm: Option<u32>) -> Limited {
    let elapsed = window.elapsed_ms;
    if let Some(rpm) = rpm {
        // The estimate with this request in it, against the limit.
        let estimate = estimate(window.previous_requests, window.requests, elapsed) + 1.0;
        if estimate > f64::from(rpm) || tpm.is_none() {
            return Limited {
                limit: LimitKind::Requests,
                per_minute: rpm,
                retry_after: wait_until_at_most(
                    window.previous_requests,
                    window.requests,
                    elapsed,
                    f64::from(rpm) - 1.0,
                ),
            };
        }
    }
    let tpm = tpm.unwrap_or(0);
    Limited {
        limit: LimitKind::Tokens,
        per_minute: tpm,
        // Tokens pass while the estimate is under the limit, strictly.
        retry_after: wait_until_at_most(
            window.previous_tokens,
            window.tokens,
            elapsed,
            f64::from(tpm) - 1e-6,
        ),
    }
}

/// The count in the sliding minute ending `elapsed_ms` into the current
/// minute: all of the current one, and the part of the previous one the
/// window still covers.
fn estimate(previous: u64, current: u64, elapsed_ms: u64) -> f64 {
    let window = WINDOW.as_millis() as f64;
    let covered = (window - elapsed_ms as f64).max(0.0) / window;
    previous as f64 * covered + current as f64
}

/// How long until the estimated count falls to `allowance` or below, if
/// nothing more arrives: the previous minute slides out of the window
/// first, then (after the next minute starts) the current one.
fn wait_until_at_most(previous: u64, current: u64, elapsed_ms: u64, allowance: f64) -> Duration {
    if allowance < 0.0 {
        // A limit of 0: nothing will ever pass.
        return WINDOW;
    }
    let window = WINDOW.as_millis() as f64;
    let to_next_minute = (window - elapsed_ms as f64).max(0.0);
    let (previous, current) = (previous as f64, current as f64);
    let ms = if current <= allowance {
        if previous <= 0.0 {
            0.0
        } else {
            (to_next_minute - window * (allowance - current) / previous).max(0.0)
        }
    } else {
        to_next_minute + window * (1.0 - allowance / current)
    };
    Duration::from_millis(ms.ceil() as u64).min(2 * WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_refuse_the_one_over() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter.admit_in_memory("k", Some(3), None, 0).unwrap();
        }
        let refused = limiter.admit_in_memory("k", Some(3), None, 0).unwrap_err();
        assert_eq!(refused.limit, LimitKind::Requests);
        assert!(refused.retry_after > Duration::from_secs(55));
        assert!(refused.to_string().contains("3 requests per minute"));
        // Other keys have their own window.
        limiter.admit_in_memory("other", Some(3), None, 0).unwrap();
    }

    #[test]
    fn tokens_per_minute_count_what_was_used() {
        let limiter = RateLimiter::default();
        limiter.admit_in_memory("k", None, Some(100), 0).unwrap();
        limiter.record_tokens("k", 60, 0, Some(100), &TaskTracker::new());
        limiter.admit_in_memory("k", None, Some(100), 0).unwrap();
        limiter.record_tokens("k", 60, 0, Some(100), &TaskTracker::new());
        let refused = limiter
            .admit_in_memory("k", None, Some(100), 0)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tokens);
        assert!(refused.retry_after <= WINDOW);
    }

    /// Requests sent together cannot all pass a token limit before any has
    /// finished: each counts its prompt's estimate when admitted, and only
    /// the rest of its tokens when it ends.
    #[test]
    fn a_prompts_estimate_counts_when_it_is_admitted() {
        let limiter = RateLimiter::default();
        // One larger than the whole limit passes into an empty window...
        limiter.admit_in_memory("k", None, Some(100), 150).unwrap();
        // ...and the next waits, though the first has not finished.
        let refused = limiter
            .admit_in_memory("k", None, Some(100), 10)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tokens);
        // Its end adds what it used beyond its estimate (30 here), no more:
        // 70, then 110 with the next.
        let other = RateLimiter::default();
        other.admit_in_memory("k", None, Some(100), 40).unwrap();
        other.record_tokens("k", 70, 40, Some(100), &TaskTracker::new());
        other.admit_in_memory("k", None, Some(100), 40).unwrap();
        let refused = other.admit_in_memory("k", None, Some(100), 1).unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tokens);
    }

    #[tokio::test]
    async fn no_limits_keep_no_state() {
        let limiter = RateLimiter::default();
        for _ in 0..1000 {
            limiter.admit("k", None, None, 0).await.unwrap();
        }
        assert!(limiter.lock().is_empty());
    }

    #[test]
    fn shared_refusals_say_when_the_window_has_room() {
        let window = |previous_requests, requests, elapsed_ms| RateWindow {
            previous_requests,
            requests,
            previous_tokens: 0,
            tokens: 0,
            elapsed_ms,
        };
        // Three this minute, 10 s in, of 3 a minute: the next minute starts
        // in 50 s, and then a third of those three must slide out (20 s).
        let refused = refusal(&window(0, 3, 10_000), Some(3), None);
        assert_eq!(refused.limit, LimitKind::Requests);
        assert_eq!(refused.retry_after, Duration::from_secs(70));
        // Six last minute, halfway through this one: 3 still count; two
        // must, so 10 s more of the previous minute has to slide out.
        let refused = refusal(&window(6, 0, 30_000), Some(3), None);
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        // Tokens: 100 of 100 this minute.
        let tokens = RateWindow {
            tokens: 100,
            ..window(0, 1, 0)
        };
        let refused = refusal(&tokens, Some(10), Some(100));
        assert_eq!(refused.limit, LimitKind::Tokens);
        assert_eq!(refused.per_minute, 100);
        assert!(refused.retry_after > WINDOW && refused.retry_after <= 2 * WINDOW);
        // Ten tokens last minute, of 10 a minute, at its very end: the
        // first millisecond of this one takes the estimate under 10.
        let just_over = RateWindow {
            previous_tokens: 10,
            ..window(0, 0, 0)
        };
        let refused = refusal(&just_over, None, Some(10));
        assert_eq!(refused.retry_after, Duration::from_millis(1));
        // A limit of nothing waits a whole window.
        assert_eq!(refusal(&window(0, 0, 0), Some(0), None).retry_after, WINDOW);
        // Never more than two minutes.
        assert!(refusal(&window(0, 1_000, 0), Some(1), None).retry_after <= 2 * WINDOW);
    }

    #[test]
    fn the_estimate_slides_the_previous_minute_out() {
        assert!((estimate(60, 5, 0) - 65.0).abs() < 1e-9);
        assert!((estimate(60, 5, 30_000) - 35.0).abs() < 1e-9);
        assert!((estimate(60, 5, 59_999) - 5.001).abs() < 1e-9);
    }

    #[tokio::test]
    async fn shared_limits_fall_back_to_memory_when_the_database_fails() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (key, _) = store
            .create_key(crate::store::NewKey {
                name: "k".into(),
                rpm: Some(2),
                ..crate::store::NewKey::default()
            })
            .await
            .unwrap();
        let limiter = RateLimiter::shared(store.clone());
        assert!(limiter.is_shared());
        limiter.admit(&key.id, Some(2), None, 0).await.unwrap();
        // The database goes away: requests are still limited, by memory.
        store.close().await;
        limiter.admit(&key.id, Some(2), None, 0).await.unwrap();
        limiter.admit(&key.id, Some(2), None, 0).await.unwrap();
        let refused = limiter.admit(&key.id, Some(2), None, 0).await.unwrap_err();
        assert_eq!(refused.limit, LimitKind::Requests);
    }

    #[tokio::test]
    async fn shared_refusals_are_remembered_until_they_end() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (key, _) = store
            .create_key(crate::store::NewKey {
                name: "k".into(),
                rpm: Some(1),
                ..crate::store::NewKey::default()
            })
            .await
            .unwrap();
        let limiter = RateLimiter::shared(store.clone());
        limiter.admit(&key.id, Some(1), None, 0).await.unwrap();
        let first = limiter.admit(&key.id, Some(1), None, 0).await.unwrap_err();
        // Without the database the refusal still stands (memory alone, which
        // has counted nothing, would admit): it was not asked again.
        store.close().await;
        let again = limiter.admit(&key.id, Some(1), None, 0).await.unwrap_err();
        assert_eq!(again.limit, LimitKind::Requests);
        assert!(again.retry_after <= first.retry_after);
        assert!(again.retry_after > Duration::from_secs(50), "{again:?}");
    }

    #[test]
    fn a_fast_key_takes_bounded_memory_and_is_counted_in_full() {
        let start = Instant::now();
        let mut counter = Counter::default();
        // Two minutes of a request every millisecond.
        for ms in 0..120_000u64 {
            let now = start + Duration::from_millis(ms);
            counter.expire(now);
            counter.add(now, 1);
        }
        assert!(counter.slices.len() <= 601, "{}", counter.slices.len());
        // The last minute in full, and at most one slice more.
        assert!(
            (60_000..=60_100).contains(&counter.total),
            "{}",
            counter.total
        );
        let now = start + Duration::from_millis(119_999);
        // Under a limit of 30,000: half the window has to pass.
        let wait = counter.wait_until_below(30_000, now);
        assert!(
            wait >= Duration::from_millis(29_900) && wait <= Duration::from_millis(30_100),
            "{wait:?}"
        );
        assert_eq!(counter.wait_until_below(100_000, now), Duration::ZERO);
        assert_eq!(counter.wait_until_below(0, now), WINDOW);
    }
}
