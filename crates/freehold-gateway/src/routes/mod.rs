//! The HTTP surface: which handler answers which route.

mod chat;
mod ops;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::{GatewayError, Protocol};
use crate::state::Gateway;

/// The gateway's axum application.
pub fn app(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(ops::root).head(ops::root))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/responses", post(chat::responses))
        .route("/v1/messages", post(chat::messages))
        .route("/v1/messages/count_tokens", post(chat::count_tokens))
        .route("/v1/models", get(ops::models))
        .route("/v1/embeddings", post(ops::embeddings))
        .fallback(unknown_route)
        // Bodies are read (and limited) by the handlers themselves, so
        // that an oversized one gets the protocol's own error shape.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(gateway)
}

/// Reads a request body up to `limit` bytes.
///
/// # Errors
/// 413 in the caller's protocol when it is larger.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::too_large(limit))
}

async fn unknown_route(headers: HeaderMap, uri: Uri) -> Response {
    let protocol = if ops::speaks_anthropic(&headers) {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    let mut error = GatewayError::not_found(format!(
        "no such endpoint: {}; this gateway serves /v1/chat/completions, /v1/responses, \
         /v1/messages, /v1/messages/count_tokens, /v1/models, /v1/embeddings, /health and /metrics",
        uri.path()
    ));
    error.kind = "no_route";
    error.into_response(protocol).into_response()
}
