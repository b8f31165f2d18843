//! When and how long to wait before trying a failed request again.

use std::time::Duration;

use freehold_protocol::{ErrorKind, LlmError};

/// Exponential backoff with jitter, honouring the provider's `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The delay before the first retry, before jitter.
    pub initial_delay: Duration,
    /// The longest computed delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a provider asking for more makes
    /// the request fail at once with a rate-limit error saying how long to wait.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// How long to wait before retry number `attempt` (1-based) after `error`,
    /// or `None` when the request must not be retried.
    pub fn delay(&self, attempt: u32, error: &LlmError) -> Option<Duration> {
        // A timeout is not retried here: the server may still be generating
        // the first answer, and asking again would pay for it twice. (The
        // router may still fall back to another model.)
        if attempt > self.max_retries || !error.is_retryable() || error.kind == ErrorKind::Timeout {
            return None;
        }
        if let Some(wait) = error.retry_after() {
            return (wait <= self.max_retry_after).then_some(wait);
        }
        let exponential = self
            .initial_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        // "Equal jitter": half fixed, half random, so that clients that failed
        // together do not retry together, yet each still backs off.
        let half = exponential / 2;
        Some(half + half.mul_f64(fastrand::f64()))
    }
}

#[cfg(test)]
mod tests {
    use freehold_protocol::ErrorKind;

    use super::*;

    fn error(kind: ErrorKind) -> LlmError {
        LlmError::new(kind, "p", "")
    }

    #[test]
    fn backs_off_exponentially_with_bounded_jitter() {
        let policy = RetryPolicy::default();
        let server = error(ErrorKind::Server);
        for attempt in 1..=3 {
            let delay = policy.delay(attempt, &server).unwrap();
            let full = Duration::from_millis(500) * (1 << (attempt - 1));
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempt}: {delay:?}"
            );
        }
        assert_eq!(policy.delay(4, &server), None);
    }

    #[test]
    fn honours_retry_after_and_never_retries_client_errors() {
        let policy = RetryPolicy::default();
        let limited = error(ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(policy.delay(1, &limited), Some(Duration::from_secs(7)));
        let too_long = error(ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
        });
        assert_eq!(policy.delay(1, &too_long), None);
        assert_eq!(policy.delay(1, &error(ErrorKind::Authentication)), None);
        assert_eq!(policy.delay(1, &error(ErrorKind::InvalidRequest)), None);
    }
}
