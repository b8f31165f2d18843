//! A tiny OpenAI-compatible upstream that answers at once, for
//! `freehold bench gateway` (the gateway's overhead is measured against
//! direct calls to it) and for tests. It binds loopback only.
//!
//! It answers every chat request with the same short text, or, when the
//! request offers tools and its last message contains `call`, with a call
//! of the first tool, and when its last message contains `Please refuse`, with a
//! refusal (OpenAI's `refusal` in place of the content, as structured
//! outputs send it); usage counts are derived from the body's size. It can
//! be slowed down (requests are then in flight for a while) and killed
//! (every connection, open ones included, is closed at once), to stand for
//! a replica that dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

/// The answer text.
pub const MOCK_TEXT: &str = "Hello from the mock upstream.";

/// The refusal's text.
pub const MOCK_REFUSAL: &str = "I can't help with that.";

/// A running mock upstream.
#[derive(Debug)]
pub struct MockUpstream {
    address: SocketAddr,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct MockState {
    /// Chat and embedding requests answered (or being answered).
    requests: AtomicU64,
    /// How long each chat request waits before its answer.
    delay: Duration,
    /// The `max_tokens` (or `max_completion_tokens`) of the last chat
    /// request, [`NO_MAX_TOKENS`] when it had neither.
    last_max_tokens: AtomicU64,
    /// How many stop sequences the last chat request sent (the mock does
    /// not apply them).
    last_stop_count: AtomicU64,
}

/// [`MockState::last_max_tokens`] before any request, or after one without
/// `max_tokens`.
const NO_MAX_TOKENS: u64 = u64::MAX;

impl MockUpstream {
    /// Starts one on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts one on a free port of 127.0.0.1 that waits `delay` before
    /// answering each chat request.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start_slow(delay: Duration) -> std::io::Result<Self> {
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0)), delay).await
    }

    /// Starts one on `address` (which must be a loopback address).
    ///
    /// # Errors
    /// A non-loopback address, or one that cannot be bound.
    pub async fn start_on(address: SocketAddr) -> std::io::Result<Self> {
        Self::serve(address, Duration::ZERO).await
    }

    async fn serve(address: SocketAddr, delay: Duration) -> std::io::Result<Self> {
        if !address.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the mock upstream only binds loopback addresses",
            ));
        }
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(MockState {
            requests: AtomicU64::new(0),
            delay,
            last_max_tokens: AtomicU64::new(NO_MAX_TOKENS),
            last_stop_count: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&state));
        // Each connection is a task of this one's set, so that aborting
        // this task (kill, drop) closes the open connections too.
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let service = TowerToHyperService::new(app.clone());
                        connections.spawn(async move {
                            let _ = Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL an OpenAI client needs.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Chat and embedding requests answered so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// How many stop sequences the last chat request carried: how many of
    /// a client's the gateway passed on.
    pub fn last_stop_count(&self) -> u64 {
        self.state.last_stop_count.load(Ordering::Relaxed)
    }

    /// The `max_tokens` the last chat request asked for, if it had one: what
    /// the gateway forwarded.
    pub fn last_max_tokens(&self) -> Option<u64> {
        let last = self.state.last_max_tokens.load(Ordering::Relaxed);
        (last != NO_MAX_TOKENS).then_some(last)
    }

    /// Stops it as a dying replica stops: new connections are refused and
    /// open ones are closed, requests in flight included.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        // With its context window, as vLLM lists one.
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock",
                  "max_model_len": 8192}],
    }))
    .into_response()
}

async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let inputs = match &request["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, -0.5, i as f32]}))
        .collect();
    axum::Json(json!({
        "object": "list", "data": data, "model": request["model"],
        "usage": {"prompt_tokens": inputs * 3, "total_tokens": inputs * 3},
    }))
    .into_response()
}

async fn chat(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "bad json", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
    let stop_count = match &request["stop"] {
        Value::Array(stops) => stops.len() as u64,
        Value::String(_) => 1,
        _ => 0,
    };
    state.last_stop_count.store(stop_count, Ordering::Relaxed);
    state.last_max_tokens.store(
        request["max_tokens"]
            .as_u64()
            .or_else(|| request["max_completion_tokens"].as_u64())
            .unwrap_or(NO_MAX_TOKENS),
        Ordering::Relaxed,
    );
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    let prompt_tokens = (body.len() as u64 / 4).max(1);
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    let tool = request["tools"][0]["function"]["name"]
        .as_str()
        .filter(|_| last.contains("call"))
        .map(str::to_owned);
    let refuses = tool.is_none() && last.contains("Please refuse");
    let completion_tokens = 7;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    if request["stream"] == true {
        let mut events = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
        };
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        match &tool {
            Some(name) => {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_mock", "type": "function",
                        "function": {"name": name, "arguments": "{\"city\": \"Paris\"}"}}]}),
                    Value::Null,
                ));
                events.push(chunk(json!({}), json!("tool_calls")));
            }
            None if refuses => {
                for word in MOCK_REFUSAL.split_inclusive(' ') {
                    events.push(chunk(json!({"refusal": word}), Value::Null));
                }
                events.push(chunk(json!({}), json!("stop")));
            }
            None => {
                for word in MOCK_TEXT.split_inclusive(' ') {
                    events.push(chunk(json!({"content": word}), Value::Null));
                }
                events.push(chunk(json!({}), json!("stop")));
            }
        }
        if request["stream_options"]["include_usage"] == true {
            events.push(json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [], "usage": usage,
            }));
        }
        let mut text = String::new();
        for event in events {
            text.push_str("data: ");
            text.push_str(&event.to_string());
            text.push_str("\n\n");
        }
        text.push_str("data: [DONE]\n\n");
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from(text),
        )
            .into_response();
    }
    let message = match &tool {
        Some(name) => json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_mock", "type": "function",
                "function": {"name": name, "arguments": "{\"city\": \"Paris\"}"}}],
        }),
        None if refuses => json!({"role": "assistant", "content": null, "refusal": MOCK_REFUSAL}),
        None => json!({"role": "assistant", "content": MOCK_TEXT}),
    };
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };
    axum::Json(json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }))
    .into_response()
}
