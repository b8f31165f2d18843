//! The HTTP surface: which handler answers which route.

mod chat;
mod ops;
mod server_compaction;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::error::{GatewayError, Protocol};
use crate::request_id::{Arrival, RESPONSE_HEADERS};
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
        .route("/v1/responses/compact", post(chat::responses_compact))
        .route("/v1/messages", post(chat::messages))
        .route("/v1/messages/count_tokens", post(chat::count_tokens))
        .route("/v1/models", get(ops::models))
        // Names may hold slashes (`vllm:Qwen/Qwen2.5-Coder-7B-Instruct`).
        .route("/v1/models/{*model}", get(ops::model))
        .route("/v1/embeddings", post(ops::embeddings))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // One layer, not two: each costs every request a boxed future and
        // a clone of the routes behind it.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            front_door,
        ))
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
    // A whole body within the request's own limit too: a client sending a
    // byte just inside each pause must not hold its request for ever.
    let whole = settings.request_timeout();
    let deadline = tokio::time::Instant::now() + whole;
    let mut body = http_body_util::Limited::new(body, limit);
    // A body usually comes in one piece: kept as it is, not copied.
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(GatewayError::body_too_slow(whole));
        }
        let frame = match tokio::time::timeout(timeout.min(left), body.frame()).await {
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
            Err(_) if timeout < left => return Err(GatewayError::body_timeout(timeout)),
            Err(_) => return Err(GatewayError::body_too_slow(whole)),
        };
        if let Ok(data) = frame.into_data() {
            pieces.push(data);
        }
    }
}

/// What every request goes through first: it gets its [`Arrival`] (id and
/// start time), a request only a web page would send is refused
/// ([`web_page_refusal`]), and the answer, refusals included, carries the
/// request's id in its headers.
async fn front_door(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let arrival = Arrival::now(request.headers());
    let id = arrival.id.header_value().clone();
    let mut response = match web_page_refusal(&gateway, &request) {
        Some(refusal) => refusal,
        None => {
            // What is logged while the handler runs (the router's
            // fallbacks, a replica taken out, a privacy decision) names
            // the request. At warn level so that it is there at the
            // default log level; a span costs no line of its own.
            let span = tracing::warn_span!("request", request_id = %arrival.id);
            request.extensions_mut().insert(arrival);
            next.run(request).instrument(span).await
        }
    };
    let headers = response.headers_mut();
    for name in RESPONSE_HEADERS {
        headers.insert(name, id.clone());
    }
    response
}

/// The refusal of a request that only a web page in a browser would send, so that
/// a page the user visits cannot use a gateway on their machine where no
/// key protects it (`require_key = false`, or the status pages open on
/// loopback); where a key is needed, a page has none, and reverse proxies
/// that pass their own `Host` on must keep working:
/// - a request whose `Origin` (which browsers send and SDKs do not) is not
///   the gateway itself: a page elsewhere posting to it, which needs no
///   CORS preflight when its body has no JSON content type;
/// - on a gateway listening on loopback, a request whose `Host` does not
///   name loopback: a page whose own name was made to resolve to this
///   machine (DNS rebinding), which would otherwise count as the same
///   origin and read the answers too.
fn web_page_refusal(gateway: &Gateway, request: &axum::extract::Request) -> Option<Response> {
    let settings = gateway.settings();
    let status_page = matches!(request.uri().path(), "/health" | "/metrics");
    let unprotected = !settings.require_key || (status_page && settings.status_is_open());
    if !unprotected {
        return None;
    }
    let headers = request.headers();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let refusal = if settings.listen.ip().is_loopback() && !names_loopback(host) {
        Some(format!(
            "this gateway listens on loopback and is asked for as `{host}`: ask for it as \
             localhost, 127.0.0.1 or [::1] (a web page whose name was made to point at this \
             machine is refused)"
        ))
    } else {
        headers
            .get(axum::http::header::ORIGIN)
            .and_then(|value| value.to_str().ok())
            .filter(|origin| !is_origin_of(origin, host))
            .map(|origin| {
                format!(
                    "requests from web pages elsewhere ({origin}) are refused; call the gateway \
                     from a program, or from a server of your own"
                )
            })
    };
    refusal.map(|message| {
        GatewayError::forbidden(message)
            .into_response(protocol_of(headers))
            .into_response()
    })
}

/// Whether a `Host` header names this machine's loopback: `localhost` (or
/// a name under it), an address in 127.0.0.0/8, or `[::1]`, with any port.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` (`scheme://host[:port]`) is the gateway's own, as
/// asked for in `host`.
fn is_origin_of(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
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
    GatewayError::no_route(format!(
        "no such endpoint: {}; this gateway serves /v1/chat/completions, /v1/responses, \
         /v1/responses/compact, /v1/messages, /v1/messages/count_tokens, /v1/models, \
         /v1/models/MODEL, /v1/embeddings, /health and /metrics",
        uri.path()
    ))
    .into_response(protocol)
    .into_response()
}

/// A known route asked with the wrong method (`GET /v1/chat/completions`):
/// 405 in the protocol's shape, naming the method to use, instead of an
/// empty body; 426 for a WebSocket asked for (Codex tries one for
/// `/v1/responses` first, and uses HTTP at once on a 426).
async fn wrong_method(headers: HeaderMap, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let websocket = headers
        .get(axum::http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if websocket && method == Method::GET {
        return GatewayError::websocket_not_supported(path)
            .into_response(protocol_of(&headers))
            .into_response();
    }
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
