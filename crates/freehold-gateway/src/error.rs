//! Errors the gateway sends, in the shape of the protocol the client speaks.
//!
//! Messages are written for the client: what was wrong and how to fix it.
//! Upstream failures that could reveal the gateway's insides (addresses of
//! inference servers, upstream bodies) reach the client as a short summary;
//! the detail goes to the log.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freehold_protocol::{ErrorKind, LlmError};
use serde_json::json;

use crate::limits::Limited;

/// The wire protocol a client speaks, which decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// Anthropic's `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

impl Protocol {
    /// The protocol of the gateway's endpoint `endpoint` (`/v1/messages`…).
    pub fn of_endpoint(endpoint: &str) -> Self {
        if endpoint.starts_with("/v1/messages") {
            Protocol::Anthropic
        } else {
            Protocol::OpenAi
        }
    }
}

/// Anthropic's status for an overloaded server.
const ANTHROPIC_OVERLOADED: StatusCode = match StatusCode::from_u16(529) {
    Ok(status) => status,
    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
};

/// A failed request, ready to be sent in either protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    /// The HTTP status (an Anthropic client may get another one:
    /// [`GatewayError::status_for`]).
    pub status: StatusCode,
    /// What the client is told.
    pub message: String,
    /// A short stable kind for metrics and the ledger.
    pub kind: &'static str,
    /// OpenAI's `error.type`.
    openai_type: &'static str,
    /// OpenAI's `error.code`.
    openai_code: Option<&'static str>,
    /// Anthropic's `error.type`.
    anthropic_type: &'static str,
    /// The status Anthropic's API documents for this error, where it is not
    /// [`GatewayError::status`] (OpenAI's).
    anthropic_status: Option<StatusCode>,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
    /// Whether the answer tells the client's SDK not to retry
    /// (`x-should-retry: false`, which the official OpenAI and Anthropic
    /// SDKs obey): for a refusal that the same request would get again, under
    /// a status that SDKs otherwise retry.
    no_retry: bool,
}

impl GatewayError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        openai_type: &'static str,
        anthropic_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            openai_type,
            openai_code: None,
            anthropic_type,
            anthropic_status: None,
            retry_after: None,
            no_retry: false,
        }
    }

    fn anthropic_status(mut self, status: StatusCode) -> Self {
        self.anthropic_status = Some(status);
        self
    }

    /// The status a client speaking `protocol` gets.
    pub fn status_for(&self, protocol: Protocol) -> StatusCode {
        match protocol {
            Protocol::Anthropic => self.anthropic_status.unwrap_or(self.status),
            Protocol::OpenAi => self.status,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.openai_code = Some(code);
        self
    }

    /// OpenAI's `error.code`, where the error has one
    /// (`context_length_exceeded`, `insufficient_quota`…).
    pub fn openai_code(&self) -> Option<&'static str> {
        self.openai_code
    }

    /// 400: the request is malformed or asks for something unsupported.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request_error",
            "invalid_request_error",
            message,
        )
    }

    /// 401: no key, or one that is wrong, revoked or expired.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication",
            "invalid_request_error",
            "authentication_error",
            message,
        )
        .code("invalid_api_key")
    }

    /// 403: the key may not do this (a model it is not allowed, a request
    /// that must stay local and cannot).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission",
            "permission_error",
            "permission_error",
            message,
        )
    }

    /// 404: no such model or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "invalid_request_error",
            "not_found_error",
            message,
        )
        .code("model_not_found")
    }

    /// 404: no such endpoint. Without a `code`, as OpenAI answers one:
    /// `model_not_found` would send a client looking at its model name.
    pub fn no_route(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "invalid_request_error",
            "not_found_error",
            message,
        )
    }

    /// 405: the route exists, but not for this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "invalid_request_error",
            "invalid_request_error",
            message,
        )
    }

    /// 426: a WebSocket asked for where the gateway speaks plain HTTP
    /// (Codex tries one for `/v1/responses` first, and takes this status,
    /// and only this one, as the sign to use HTTP at once).
    pub fn websocket_not_supported(path: &str) -> Self {
        Self::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_not_supported",
            "invalid_request_error",
            "invalid_request_error",
            format!("{path} does not take a WebSocket; send each request with POST"),
        )
    }

    /// 413: the body is over the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "invalid_request_error",
            "request_too_large",
            format!(
                "the request body is over this gateway's limit of {limit} bytes \
                 ([gateway] max_body_bytes)"
            ),
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(found: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "invalid_request_error",
            "invalid_request_error",
            format!("expected a JSON body (Content-Type: application/json), got `{found}`"),
        )
    }

    /// 429: a per-key rate limit.
    pub fn rate_limited(limited: &Limited) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate_limit_exceeded",
            "rate_limit_error",
            limited.to_string(),
        )
        .code("rate_limit_exceeded");
        error.retry_after = Some(limited.retry_after);
        error
    }

    /// 429 `insufficient_quota` (what OpenAI sends for an exhausted quota),
    /// 402 `billing_error` to Anthropic clients (what Anthropic documents):
    /// the key's budget is spent. Not to be retried: SDKs retry a 429 at
    /// once, and would only be refused again.
    pub fn budget_exhausted(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "budget",
            "insufficient_quota",
            "billing_error",
            message,
        )
        .code("insufficient_quota")
        .anthropic_status(StatusCode::PAYMENT_REQUIRED);
        error.no_retry = true;
        error
    }

    /// 408: the client stopped sending its request's body.
    pub fn body_timeout(timeout: Duration) -> Self {
        Self::body_late(format!(
            "the request body stopped arriving for {} s ([gateway] client_timeout_secs)",
            timeout.as_secs()
        ))
    }

    /// 408: the request's body took longer than the whole request may.
    pub fn body_too_slow(timeout: Duration) -> Self {
        Self::body_late(format!(
            "the request body took longer than {} s to arrive ([gateway] request_timeout_secs)",
            timeout.as_secs()
        ))
    }

    /// 408 for a body that came too slowly, saying which limit it broke.
    fn body_late(message: String) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "invalid_request_error",
            "invalid_request_error",
            message,
        )
    }

    /// 504: the whole request ran past `[gateway] request_timeout_secs`.
    pub fn request_timeout(timeout: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "server_error",
            "timeout_error",
            format!(
                "no answer from the model within {} s ([gateway] request_timeout_secs)",
                timeout.as_secs()
            ),
        )
    }

    /// 503 (Anthropic's 529, overloaded): a stream still open when the
    /// gateway's grace period for stopping nearly ran out. SDKs retry the
    /// status, sent when the stream had not begun; after that it is the
    /// protocol's error event, which ends the answer as failed.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server_error",
            "overloaded_error",
            "the gateway is stopping and ended this answer before its end; ask again",
        )
        .anthropic_status(ANTHROPIC_OVERLOADED)
    }

    /// 500: the gateway itself failed (its database, most likely).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "server_error",
            "api_error",
            message,
        )
    }

    /// An upstream provider's error, mapped to the status a client of the
    /// real API would see. Transport failures are summarised so that the
    /// addresses of inference servers stay private; the caller logs the
    /// detail.
    pub fn upstream(error: &LlmError) -> Self {
        let provider = &error.provider;
        match &error.kind {
            ErrorKind::Authentication => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth",
                "server_error",
                "api_error",
                format!(
                    "the gateway's credentials for provider `{provider}` were refused; \
                     the operator must fix its API key"
                ),
            ),
            // Like a refused key, a refused permission is about the
            // operator's account at the provider (its plan, project or
            // region), not the client's request: the client gets a summary,
            // the gateway's log the provider's words.
            ErrorKind::Permission => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_permission",
                "server_error",
                "api_error",
                format!(
                    "provider `{provider}` refused this request with the gateway's credentials \
                     (permission denied); the operator must check that account's access to the \
                     model"
                ),
            ),
            ErrorKind::NotFound => Self::not_found(error.message.clone()),
            ErrorKind::RateLimited { retry_after } => {
                let mut limited = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "upstream_rate_limited",
                    "rate_limit_exceeded",
                    "rate_limit_error",
                    format!("provider `{provider}` is rate limiting requests; retry later"),
                );
                limited.retry_after = *retry_after;
                limited
            }
            ErrorKind::ContextLengthExceeded { needed, allowed } => {
                // Written here, not passed on: clients recognise the
                // phrasing of the real APIs (Claude Code looks for "prompt
                // is too long"), and an engine's message may name a model
                // file's path on this machine.
                let over = freehold_llm::http::input_and_output_over_context(&error.message)
                    .or_else(|| freehold_llm::http::max_tokens_over_context(&error.message));
                let message = match (needed, allowed) {
                    // Anthropic's refusal of a prompt that fits but whose
                    // max_tokens does not, which Claude Code answers by
                    // lowering max_tokens: in Anthropic's words, from the
                    // numbers only.
                    _ if let Some((input, output, limit)) = over => {
                        freehold_llm::http::max_tokens_overflow_words(input, output, limit)
                    }
                    (Some(needed), Some(allowed)) => format!(
                        "prompt is too long: {needed} tokens > {allowed} maximum (this model's \
                         maximum context length is {allowed} tokens)"
                    ),
                    (_, Some(allowed)) => format!(
                        "prompt is too long: this model's maximum context length is {allowed} \
                         tokens"
                    ),
                    // Both phrases matter: Claude Code looks for the
                    // first, litellm (Aider) for the second.
                    _ => "prompt is too long: this model's maximum context length is exceeded \
                          by this request"
                        .to_owned(),
                };
                Self::bad_request(message).code("context_length_exceeded")
            }
            // An upstream's own size limit, as the client would see it
            // from that API.
            ErrorKind::InvalidRequest if error.status == Some(413) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "invalid_request_error",
                "request_too_large",
                error.message.clone(),
            ),
            // A prompt that fits with a max_tokens that does not (vLLM's
            // "'max_tokens' … is too large"): in Anthropic's words, which
            // Claude Code, sending 32,000 by default, answers by asking
            // again with less. Not a context-length error: a shorter
            // conversation would be refused again.
            ErrorKind::InvalidRequest
                if let Some((input, output, limit)) =
                    freehold_llm::http::max_tokens_over_context(&error.message) =>
            {
                Self::bad_request(freehold_llm::http::max_tokens_overflow_words(
                    input, output, limit,
                ))
            }
            ErrorKind::InvalidRequest => Self::bad_request(error.message.clone()),
            // 529 is Anthropic's status for it, which its SDKs know as
            // overloaded (and retry); OpenAI's clients know 503.
            ErrorKind::Overloaded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "server_error",
                "overloaded_error",
                format!("provider `{provider}` is overloaded; retry later"),
            )
            .anthropic_status(ANTHROPIC_OVERLOADED),
            ErrorKind::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "server_error",
                "timeout_error",
                format!("provider `{provider}` did not answer in time"),
            ),
            // The provider answered, but not with what the request asked
            // for (a compaction without a summary): the gateway's own
            // words, which name no provider or address.
            ErrorKind::Server if provider == freehold_llm::wire::serve::GATEWAY_PROVIDER => {
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "unusable_answer",
                    "server_error",
                    "api_error",
                    error.message.clone(),
                )
            }
            ErrorKind::Server | ErrorKind::Connection => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                "server_error",
                "api_error",
                format!("provider `{provider}` failed ({})", error.kind.name()),
            ),
            ErrorKind::Cancelled => Self::new(
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "cancelled",
                "server_error",
                "api_error",
                "the request was cancelled",
            ),
        }
    }

    /// The JSON body in `protocol`'s shape.
    pub fn body(&self, protocol: Protocol) -> serde_json::Value {
        match protocol {
            Protocol::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type,
                    "param": null,
                    "code": self.openai_code,
                }
            }),
            Protocol::Anthropic => json!({
                "type": "error",
                "error": {"type": self.anthropic_type, "message": self.message},
            }),
        }
    }

    /// The HTTP response in `protocol`'s shape.
    pub fn into_response(self, protocol: Protocol) -> Response {
        let mut response =
            (self.status_for(protocol), axum::Json(self.body(protocol))).into_response();
        if self.no_retry {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_each_protocol() {
        let error = GatewayError::unauthorized("no key");
        assert_eq!(
            error.body(Protocol::OpenAi),
            json!({"error": {"message": "no key", "type": "invalid_request_error",
                             "param": null, "code": "invalid_api_key"}})
        );
        assert_eq!(
            error.body(Protocol::Anthropic),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
        );
    }

    #[test]
    fn refused_credentials_are_summarised_for_the_client() {
        for kind in [ErrorKind::Authentication, ErrorKind::Permission] {
            let error = LlmError::new(
                kind,
                "openai",
                "Project proj_Secret123 does not have access to model gpt-x (billing hold)",
            );
            let sent = GatewayError::upstream(&error);
            assert_eq!(sent.status, StatusCode::BAD_GATEWAY);
            assert!(!sent.message.contains("proj_"), "{}", sent.message);
            assert!(sent.message.contains("`openai`"), "{}", sent.message);
            assert!(sent.message.contains("operator"), "{}", sent.message);
            assert!(!sent.message.contains("  "), "{}", sent.message);
        }
    }

    #[test]
    fn context_errors_read_like_the_real_apis_and_hide_paths() {
        let error = LlmError::new(
            ErrorKind::ContextLengthExceeded {
                needed: Some(89_087),
                allowed: Some(8192),
            },
            "local",
            "the prompt has 89087 tokens; /srv/models/secret-project.gguf allows 8192",
        );
        let sent = GatewayError::upstream(&error);
        assert_eq!(sent.status, StatusCode::BAD_REQUEST);
        assert!(!sent.message.contains("/srv"), "{}", sent.message);
        assert!(
            sent.message
                .starts_with("prompt is too long: 89087 tokens > 8192 maximum"),
            "{}",
            sent.message
        );
        assert_eq!(
            sent.body(Protocol::OpenAi)["error"]["code"],
            "context_length_exceeded"
        );

        // Without the numbers: still what Claude Code and litellm look for.
        let unknown = LlmError::new(
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None,
            },
            "openai",
            "Your input exceeds the context window of this model.",
        );
        let sent = GatewayError::upstream(&unknown).message;
        assert!(sent.starts_with("prompt is too long"), "{sent}");
        assert!(
            sent.contains("this model's maximum context length is"),
            "{sent}"
        );

        // vLLM's refusal of a max_tokens that does not fit goes on in
        // Anthropic's words, still an invalid request (not a full context).
        let vllm = "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's \
                    maximum context length is 40960 tokens and your request has 12000 input \
                    tokens (32000 > 40960 - 12000). (parameter=max_tokens, value=32000)";
        let refused = LlmError::new(
            freehold_llm::http::classify_status(400, &Default::default(), vllm),
            "vllm",
            vllm,
        );
        let sent = GatewayError::upstream(&refused);
        assert_eq!(
            sent.message,
            "input length and `max_tokens` exceed context limit: 12000 + 32000 > 40960, \
             decrease input length or `max_tokens` and try again"
        );
        assert_eq!(sent.openai_code(), None);

        // Anthropic's prompt-plus-max_tokens refusal goes on in its own
        // words, which Claude Code answers by lowering max_tokens.
        let words = "input length and `max_tokens` exceed context limit: 198096 + 8192 > 200000, \
                     decrease input length or `max_tokens` and try again";
        let over = LlmError::new(
            freehold_llm::http::context_length_kind(words),
            "anthropic",
            words,
        );
        let sent = GatewayError::upstream(&over);
        assert_eq!(sent.message, words);
        assert_eq!(sent.openai_code(), Some("context_length_exceeded"));
    }

    #[test]
    fn transport_failures_hide_upstream_details() {
        let error = LlmError::new(
            ErrorKind::Connection,
            "vllm",
            "error sending request for url (http://10.1.2.3:8000/v1/chat/completions)",
        );
        let sent = GatewayError::upstream(&error);
        assert_eq!(sent.status, StatusCode::BAD_GATEWAY);
        assert!(!sent.message.contains("10.1.2.3"), "{}", sent.message);
    }

    #[test]
    fn statuses_and_types_follow_each_protocols_documentation() {
        let spent = GatewayError::budget_exhausted("spent");
        for (protocol, status, kind) in [
            (Protocol::OpenAi, 429, "insufficient_quota"),
            (Protocol::Anthropic, 402, "billing_error"),
        ] {
            let response = spent.clone().into_response(protocol);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["x-should-retry"], "false");
            let body = spent.body(protocol);
            let sent = if protocol == Protocol::OpenAi {
                &body["error"]["code"]
            } else {
                &body["error"]["type"]
            };
            assert_eq!(sent, kind);
        }
        let busy = GatewayError::upstream(&LlmError::new(ErrorKind::Overloaded, "vllm", "busy"));
        assert_eq!(busy.status_for(Protocol::OpenAi).as_u16(), 503);
        assert_eq!(busy.status_for(Protocol::Anthropic).as_u16(), 529);
        assert!(
            !busy
                .into_response(Protocol::Anthropic)
                .headers()
                .contains_key("x-should-retry")
        );
        let late = GatewayError::upstream(&LlmError::new(ErrorKind::Timeout, "vllm", "late"));
        assert_eq!(late.status_for(Protocol::Anthropic).as_u16(), 504);
        assert_eq!(
            late.body(Protocol::Anthropic)["error"]["type"],
            "timeout_error"
        );
        let whole = GatewayError::request_timeout(Duration::from_secs(5));
        assert_eq!(
            whole.body(Protocol::Anthropic)["error"]["type"],
            "timeout_error"
        );
        let too_big = GatewayError::upstream(
            &LlmError::new(ErrorKind::InvalidRequest, "vllm", "too big").with_status(413),
        );
        assert_eq!(too_big.status.as_u16(), 413);
        assert_eq!(
            too_big.body(Protocol::Anthropic)["error"]["type"],
            "request_too_large"
        );
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let response = GatewayError::rate_limited(&Limited {
            limit: crate::limits::LimitKind::Requests,
            per_minute: 2,
            retry_after: Duration::from_millis(1500),
        })
        .into_response(Protocol::OpenAi);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
