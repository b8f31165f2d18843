//! A tiny OpenAI-compatible upstream that answers at once, for
//! `freehold bench gateway` (the gateway's overhead is measured against
//! direct calls to it) and for tests. It binds loopback only.
//!
//! It answers every chat request with the same short text, or, when the
//! request offers tools and its last message contains `call`, with a call
//! of the first tool; usage counts are derived from the body's size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The answer text.
pub const MOCK_TEXT: &str = "Hello from the mock upstream.";

/// A running mock upstream.
#[derive(Debug)]
pub struct MockUpstream {
    address: SocketAddr,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Starts one on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts one on `address` (which must be a loopback address).
    ///
    /// # Errors
    /// A non-loopback address, or one that cannot be bound.
    pub async fn start_on(address: SocketAddr) -> std::io::Result<Self> {
        if !address.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the mock upstream only binds loopback addresses",
            ));
        }
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&requests));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            requests,
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
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops it: connections are refused from now on (a replica dying).
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
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}],
    }))
    .into_response()
}

async fn embeddings(State(requests): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    requests.fetch_add(1, Ordering::Relaxed);
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

async fn chat(State(requests): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    requests.fetch_add(1, Ordering::Relaxed);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "bad json", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
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
