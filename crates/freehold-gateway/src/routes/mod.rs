//! The HTTP surface: which handler answers which route.

mod chat;
mod ops;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;

use crate::error::{GatewayError, Protocol};
use crate::settings::GatewaySettings;
use crate::state::Gateway;

/// The gateway's axum application.
pub fn app(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(ops::root).head(ops::root))
        // Claude Code probes these before its first request.
        .route("/api/hello", get(ops::root).head(ops::root))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/responses", post(chat::responses))
        .route("/v1/messages", post(chat::messages))
        .route("/v1/messages/count_tokens", post(chat::count_tokens))
        .route("/v1/models", get(ops::models))
        // Names may hold slashes (`vllm:Qwen/Qwen2.5-Coder-7B-Instruct`).
        .route("/v1/models/{*model}", get(ops::model))
        .route("/v1/embeddings", post(ops::embeddings))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies are read (and limited) by the handlers themselves, so
        // that an oversized one gets the protocol's own error shape.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(gateway)
}

/// Reads a request body up to `[gateway] max_body_bytes`, each piece of it
/// within `client_timeout_secs` of the one before.
///
/// # Errors
/// 413 when it is larger, 408 when the client stops sending it, 400 when
/// the connection fails while it is read.
pub(crate) async fn read_body(
    body: Body,
    settings: &GatewaySettings,
) -> Result<Bytes, GatewayError> {
    let limit = settings.max_body_bytes;
    let timeout = settings.client_timeout();
    let mut body = http_body_util::Limited::new(body, limit);
    // A body usually comes in one piece: kept as it is, not copied.
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) if pieces.len() == 1 => return Ok(pieces.swap_remove(0)),
            Ok(None) => return Ok(Bytes::from(pieces.concat())),
            Ok(Some(Err(error))) => {
                return Err(if error.is::<http_body_util::LengthLimitError>() {
                    GatewayError::too_large(limit)
                } else {
                    GatewayError::bad_request(format!(
                        "the request body could not be read: {error}"
                    ))
                });
            }
            Err(_) => return Err(GatewayError::body_timeout(timeout)),
        };
        if let Ok(data) = frame.into_data() {
            pieces.push(data);
        }
    }
}

/// The error shape a request without a protocol of its own gets: the
/// Anthropic one when it carries Anthropic's headers.
fn protocol_of(headers: &HeaderMap) -> Protocol {
    if ops::speaks_anthropic(headers) {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

async fn unknown_route(headers: HeaderMap, uri: Uri) -> Response {
    let protocol = protocol_of(&headers);
    let mut error = GatewayError::not_found(format!(
        "no such endpoint: {}; this gateway serves /v1/chat/completions, /v1/responses, \
         /v1/messages, /v1/messages/count_tokens, /v1/models, /v1/models/MODEL, /v1/embeddings, \
         /health and /metrics",
        uri.path()
    ));
    error.kind = "no_route";
    error.into_response(protocol).into_response()
}

/// A known route asked with the wrong method (`GET /v1/chat/completions`):
/// 405 in the protocol's shape, naming the method to use, instead of an
/// empty body.
async fn wrong_method(headers: HeaderMap, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let allowed = match path {
        "/" => "GET or HEAD",
        "/health" | "/metrics" | "/v1/models" => "GET",
        _ if path.starts_with("/v1/models/") => "GET",
        _ => "POST",
    };
    GatewayError::method_not_allowed(format!("{method} is not allowed on {path}; use {allowed}"))
        .into_response(protocol_of(&headers))
        .into_response()
}
