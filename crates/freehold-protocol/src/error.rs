//! The typed error taxonomy every provider maps its failures into.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What went wrong, independent of the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorKind {
    /// The API key is missing, wrong or expired (HTTP 401).
    Authentication,
    /// The key is valid but may not do this (HTTP 403).
    Permission,
    /// The model or endpoint does not exist (HTTP 404).
    NotFound,
    /// Too many requests (HTTP 429); wait `retry_after` when given.
    RateLimited {
        /// How long the provider asked to wait.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
        retry_after: Option<Duration>,
    },
    /// The prompt plus the answer do not fit the model's context window.
    ContextLengthExceeded {
        /// Tokens the request needed, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needed: Option<u64>,
        /// Tokens the model allows, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed: Option<u64>,
    },
    /// The provider is temporarily overloaded (HTTP 503, 529).
    Overloaded,
    /// The request is malformed or unsupported (HTTP 400, 422).
    InvalidRequest,
    /// The provider failed (HTTP 5xx) or sent something that is not its
    /// protocol.
    Server,
    /// No bytes arrived for longer than the idle timeout.
    Timeout,
    /// The provider could not be reached, or the connection broke.
    Connection,
    /// The caller cancelled the request.
    Cancelled,
}

impl ErrorKind {
    /// Whether trying again (later, or on another replica) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded
                | Self::Server
                | Self::Timeout
                | Self::Connection
        )
    }

    /// A short stable name (`rate_limited`…), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Permission => "permission",
            Self::NotFound => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::Overloaded => "overloaded",
            Self::InvalidRequest => "invalid_request",
            Self::Server => "server_error",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Cancelled => "cancelled",
        }
    }

    fn summary(&self) -> String {
        match self {
            Self::Authentication => "authentication failed".into(),
            Self::Permission => "permission denied".into(),
            Self::NotFound => "not found".into(),
            Self::RateLimited { retry_after } => match retry_after {
                Some(wait) => format!("rate limited (retry after {:.1} s)", wait.as_secs_f64()),
                None => "rate limited".into(),
            },
            Self::ContextLengthExceeded { needed, allowed } => match (needed, allowed) {
                (Some(needed), Some(allowed)) => {
                    format!("context length exceeded ({needed} tokens needed, {allowed} allowed)")
                }
                (None, Some(allowed)) => {
                    format!("context length exceeded ({allowed} tokens allowed)")
                }
                _ => "context length exceeded".into(),
            },
            Self::Overloaded => "provider overloaded".into(),
            Self::InvalidRequest => "invalid request".into(),
            Self::Server => "server error".into(),
            Self::Timeout => "timed out".into(),
            Self::Connection => "connection failed".into(),
            Self::Cancelled => "cancelled".into(),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Authentication => {
                Some("check the API key in the variable named by `api_key_env`")
            }
            Self::Permission => Some("the key is valid but lacks access to this model or endpoint"),
            Self::NotFound => Some("check the model name and the provider's `base_url`"),
            Self::ContextLengthExceeded { .. } => {
                Some("shorten the conversation or choose a model with a larger context window")
            }
            Self::Timeout => Some("raise `idle_timeout_secs` for slow local models"),
            Self::Connection => Some("is the server running, and is `base_url` right?"),
            _ => None,
        }
    }
}

/// A failed model request, with the provider it came from.
///
/// Its `Display` names the provider, the kind and the provider's own message,
/// then a hint saying how to fix it. Clients redact API keys from `message`
/// before building one, so it is safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct LlmError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The configured provider name (`openai`, `gpu-box`…).
    pub provider: String,
    /// Details, usually the provider's own message.
    pub message: String,
    /// The HTTP status, when the error came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the provider asked to wait before trying again, when it said
    /// so on an error other than a rate limit (a 503 or 529 with
    /// `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub wait: Option<Duration>,
}

impl LlmError {
    /// A new error.
    pub fn new(kind: ErrorKind, provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            provider: provider.into(),
            message: message.into(),
            status: None,
            wait: None,
        }
    }

    /// The same error with an HTTP status attached.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The same error with the wait the provider asked for.
    pub fn with_wait(mut self, wait: Option<Duration>) -> Self {
        self.wait = wait;
        self
    }

    /// How long the provider asked to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::RateLimited { retry_after } => retry_after.or(self.wait),
            _ => self.wait,
        }
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.provider, self.kind.summary())?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(hint) = self.kind.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// Serialises an optional duration as fractional seconds.
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_f64(duration.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        Ok(secs.and_then(|secs| Duration::try_from_secs_f64(secs).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_provider_kind_and_hint() {
        let error = LlmError::new(
            ErrorKind::ContextLengthExceeded {
                needed: Some(9000),
                allowed: Some(8192),
            },
            "local",
            "prompt too long",
        )
        .with_status(400);
        assert_eq!(
            error.to_string(),
            "local: context length exceeded (9000 tokens needed, 8192 allowed) (HTTP 400): prompt too long; \
             shorten the conversation or choose a model with a larger context window"
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn rate_limit_round_trips_through_json() {
        let error = LlmError::new(
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            },
            "openai",
            "slow down",
        );
        let json = serde_json::to_string(&error).unwrap();
        let back: LlmError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, error);
        assert_eq!(back.retry_after(), Some(Duration::from_millis(1500)));
        assert!(back.is_retryable());
    }
}
