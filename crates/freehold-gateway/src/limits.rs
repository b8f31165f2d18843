//! Per-key rate limits: requests and tokens per minute over a sliding
//! window, kept in this process's memory.
//!
//! Several gateway replicas each enforce the limit on their own share of
//! the traffic; budgets (which must never be overspent) live in the shared
//! database instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
            self.retry_after.as_secs().max(1)
        )
    }
}

/// One key's recent traffic.
#[derive(Debug, Default)]
struct Window {
    /// When each request in the window arrived.
    requests: VecDeque<Instant>,
    /// Tokens used, with when.
    tokens: VecDeque<(Instant, u64)>,
    /// The sum of `tokens`.
    token_total: u64,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOW)
        {
            self.requests.pop_front();
        }
        while let Some((at, count)) = self.tokens.front().copied() {
            if now.duration_since(at) < WINDOW {
                break;
            }
            self.tokens.pop_front();
            self.token_total -= count;
        }
    }
}

/// Sliding-window counters for every key seen.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    /// Admits a request for `key` if it is under both limits, counting it.
    ///
    /// # Errors
    /// [`Limited`] with the time until the oldest request or tokens leave
    /// the window.
    pub fn admit(&self, key: &str, rpm: Option<u32>, tpm: Option<u32>) -> Result<(), Limited> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.lock();
        let window = windows.entry(key.to_owned()).or_default();
        window.expire(now);
        if let Some(rpm) = rpm
            && window.requests.len() >= rpm as usize
        {
            let oldest = window.requests.front().copied().unwrap_or(now);
            return Err(Limited {
                limit: LimitKind::Requests,
                per_minute: rpm,
                retry_after: WINDOW.saturating_sub(now.duration_since(oldest)),
            });
        }
        if let Some(tpm) = tpm
            && window.token_total >= u64::from(tpm)
        {
            // Wait until enough tokens leave the window to get under it.
            let mut remaining = window.token_total;
            let mut until = now;
            for (at, count) in &window.tokens {
                remaining -= count;
                until = *at;
                if remaining < u64::from(tpm) {
                    break;
                }
            }
            return Err(Limited {
                limit: LimitKind::Tokens,
                per_minute: tpm,
                retry_after: WINDOW.saturating_sub(now.duration_since(until)),
            });
        }
        window.requests.push_back(now);
        Ok(())
    }

    /// Counts `tokens` used by a finished request of `key`.
    pub fn record_tokens(&self, key: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut windows = self.lock();
        if let Some(window) = windows.get_mut(key) {
            window.tokens.push_back((Instant::now(), tokens));
            window.token_total += tokens;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding the lock leaves counters that are still
        // usable; keep serving rather than poisoning every later request.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_refuse_the_one_over() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter.admit("k", Some(3), None).unwrap();
        }
        let refused = limiter.admit("k", Some(3), None).unwrap_err();
        assert_eq!(refused.limit, LimitKind::Requests);
        assert!(refused.retry_after > Duration::from_secs(55));
        assert!(refused.to_string().contains("3 requests per minute"));
        // Other keys have their own window.
        limiter.admit("other", Some(3), None).unwrap();
    }

    #[test]
    fn tokens_per_minute_count_what_was_used() {
        let limiter = RateLimiter::default();
        limiter.admit("k", None, Some(100)).unwrap();
        limiter.record_tokens("k", 60);
        limiter.admit("k", None, Some(100)).unwrap();
        limiter.record_tokens("k", 60);
        let refused = limiter.admit("k", None, Some(100)).unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tokens);
        assert!(refused.retry_after <= WINDOW);
    }

    #[test]
    fn no_limits_keep_no_state() {
        let limiter = RateLimiter::default();
        for _ in 0..1000 {
            limiter.admit("k", None, None).unwrap();
        }
        assert!(limiter.lock().is_empty());
    }
}
