//! Test helpers for Freehold: HTTP servers on 127.0.0.1 that answer with
//! scripted bytes, so that clients are tested against the exact wire format,
//! split at awkward places, slowed down or stalled, or chosen by a function
//! of each request; and the fixtures from outside the repository (test
//! models, the SDKs' Python, the coding agents, PostgreSQL), which skip a
//! test on a developer's machine but fail it under CI.
//!
//! It must only ever bind loopback addresses.
//!
//! ```no_run
//! # async fn demo() {
//! use freehold_test_support::{MockServer, Scripted};
//!
//! let server = MockServer::start(vec![Scripted::json(200, serde_json::json!({"ok": true}))]).await;
//! let url = format!("{}/v1/models", server.url());
//! # let _ = url;
//! assert_eq!(server.requests().len(), 0);
//! # }
//! ```

mod fixtures;

pub use fixtures::{
    one_model_at_a_time, self_signed_certificate, test_agent_clients, test_model, test_postgres,
    test_python,
};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::Response;
use futures::StreamExt;

/// One scripted HTTP response.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// The status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body, sent chunk by chunk (each chunk flushed on its own).
    pub chunks: Vec<Vec<u8>>,
    /// Pause before sending the response headers.
    pub delay_before_headers: Duration,
    /// Pause between chunks.
    pub chunk_delay: Duration,
    /// After this many chunks, go silent for `stall_for` (to fire idle timeouts).
    pub stall_after: Option<usize>,
    /// How long a stall lasts.
    pub stall_for: Duration,
}

impl Scripted {
    /// A response with the given status, content type and body chunks.
    pub fn chunks(status: u16, content_type: &str, chunks: Vec<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            chunks,
            delay_before_headers: Duration::ZERO,
            chunk_delay: Duration::from_millis(1),
            stall_after: None,
            stall_for: Duration::from_secs(30),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::chunks(
            status,
            "application/json",
            vec![body.to_string().into_bytes()],
        )
    }

    /// A `text/event-stream` response of `text`, cut into the given chunks.
    pub fn sse(text: &str, split: Split) -> Self {
        Self::chunks(200, "text/event-stream", split.apply(text.as_bytes()))
    }

    /// An `application/x-ndjson` response of `text`, cut into the given chunks.
    pub fn ndjson(text: &str, split: Split) -> Self {
        Self::chunks(200, "application/x-ndjson", split.apply(text.as_bytes()))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_before_headers = delay;
        self
    }

    /// Goes silent for `duration` after sending `chunks` chunks.
    pub fn stall_after(mut self, chunks: usize, duration: Duration) -> Self {
        self.stall_after = Some(chunks);
        self.stall_for = duration;
        self
    }
}

/// How to cut a body into chunks.
#[derive(Debug, Clone)]
pub enum Split {
    /// One chunk.
    Whole,
    /// Every `n` bytes (1 splits every byte, UTF-8 sequences included).
    Every(usize),
    /// At these byte offsets.
    At(Vec<usize>),
}

impl Split {
    /// The chunks of `bytes`.
    pub fn apply(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Split::Whole => vec![bytes.to_vec()],
            Split::Every(n) => bytes.chunks((*n).max(1)).map(<[u8]>::to_vec).collect(),
            Split::At(offsets) => {
                let mut chunks = Vec::new();
                let mut last = 0;
                for &offset in offsets {
                    let offset = offset.clamp(last, bytes.len());
                    chunks.push(bytes[last..offset].to_vec());
                    last = offset;
                }
                chunks.push(bytes[last..].to_vec());
                chunks.retain(|chunk| !chunk.is_empty());
                chunks
            }
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

/// Chooses the response to a request from the request itself (see
/// [`MockServer::answering`]).
pub type Responder = Arc<dyn Fn(&Recorded) -> Scripted + Send + Sync>;

#[derive(Default)]
struct State {
    script: VecDeque<Scripted>,
    /// When set, answers every request instead of the script.
    responder: Option<Responder>,
    recorded: Vec<Recorded>,
    /// Responses whose body the client stopped reading before the end.
    aborted: usize,
    /// Set by [`MockServer::kill`]: every request is cut off.
    killed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("script", &self.script)
            .field("responder", &self.responder.is_some())
            .field("recorded", &self.recorded.len())
            .field("aborted", &self.aborted)
            .field("killed", &self.killed)
            .finish()
    }
}

/// Counts a response as aborted when its body is dropped unfinished (the
/// client closed the connection).
struct AbortWatch {
    state: Arc<Mutex<State>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for AbortWatch {
    fn drop(&mut self) {
        if !self.done.load(std::sync::atomic::Ordering::SeqCst)
            && let Ok(mut state) = self.state.lock()
        {
            state.aborted += 1;
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers requests with its script, in
/// order; the last scripted response is repeated once the others are used.
/// Or, made with [`MockServer::answering`], with what a function of each
/// request returns. It stops when dropped.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts a server on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound (a broken test machine).
    pub async fn start(script: Vec<Scripted>) -> Self {
        Self::serve(State {
            script: script.into(),
            ..State::default()
        })
        .await
    }

    /// Starts a server that answers each request with what `responder`
    /// returns for it: for clients whose requests vary in number and order
    /// (a coding agent's side requests beside its turns).
    ///
    /// # Panics
    /// When no loopback port can be bound (a broken test machine).
    pub async fn answering(
        responder: impl Fn(&Recorded) -> Scripted + Send + Sync + 'static,
    ) -> Self {
        Self::serve(State {
            responder: Some(Arc::new(responder)),
            ..State::default()
        })
        .await
    }

    #[allow(clippy::expect_used)]
    async fn serve(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new().fallback({
            let state = state.clone();
            move |request: Request<Body>| answer(state.clone(), request)
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .lock()
            .map(|state| state.recorded.clone())
            .unwrap_or_default()
    }

    /// How many responses the client abandoned before their body ended
    /// (by closing the connection: a cancelled stream).
    pub fn aborted(&self) -> usize {
        self.state
            .lock()
            .map(|state| state.aborted)
            .unwrap_or_default()
    }

    /// Kills the server as a crash would: it stops accepting connections,
    /// and requests on connections a client kept open are cut off without a
    /// complete answer.
    pub fn kill(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.killed = true;
        }
        self.task.abort();
    }

    /// Appends responses to the script.
    pub fn push(&self, scripted: Scripted) {
        if let Ok(mut state) = self.state.lock() {
            state.script.push_back(scripted);
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(state: Arc<Mutex<State>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    };
    // The responder runs outside the lock: if it panics, the next requests
    // still get its answers rather than a poisoned state's 500.
    let responder = match state.lock() {
        Ok(state) => state.responder.clone(),
        Err(_) => return plain(500, "mock server state poisoned"),
    };
    let chosen = responder.map(|responder| responder(&recorded));
    let scripted = {
        let Ok(mut state) = state.lock() else {
            return plain(500, "mock server state poisoned");
        };
        state.recorded.push(recorded);
        if state.killed {
            // A body that fails at once makes the server drop the
            // connection mid-response.
            let broken = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "killed",
                ))
            });
            return Response::new(Body::from_stream(broken));
        }
        if chosen.is_some() {
            chosen
        } else if state.script.len() > 1 {
            state.script.pop_front()
        } else {
            state.script.front().cloned()
        }
    };
    let Some(scripted) = scripted else {
        return plain(500, "mock server has no scripted response");
    };
    tokio::time::sleep(scripted.delay_before_headers).await;
    let chunk_delay = scripted.chunk_delay;
    let stall_after = scripted.stall_after;
    let stall_for = scripted.stall_for;
    let last = scripted.chunks.len().saturating_sub(1);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(
        scripted.chunks.is_empty(),
    ));
    let watch = AbortWatch {
        state: state.clone(),
        done: done.clone(),
    };
    let chunks =
        futures::stream::iter(scripted.chunks.into_iter().enumerate()).then(move |(i, chunk)| {
            let done = done.clone();
            let _watch = &watch;
            async move {
                if stall_after == Some(i) {
                    tokio::time::sleep(stall_for).await;
                } else if i > 0 {
                    tokio::time::sleep(chunk_delay).await;
                }
                if i == last {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok::<_, std::io::Error>(Bytes::from(chunk))
            }
        });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::OK);
    for (name, value) in scripted.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn plain(status: u16, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// Formats SSE events: `(event name or "", data)` pairs, each closed by a
/// blank line.
pub fn sse_text(events: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (event, data) in events {
        if !event.is_empty() {
            text.push_str("event: ");
            text.push_str(event);
            text.push('\n');
        }
        text.push_str("data: ");
        text.push_str(data);
        text.push_str("\n\n");
    }
    text
}

/// A static file server on 127.0.0.1 (a stand-in for Hugging Face or any
/// download host): a GET whose path ends with one of the given suffixes gets
/// that file, anything else a 404. Records every path asked for.
pub struct FileServer {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Starts serving `files` (path suffix, contents) on a free loopback
    /// port.
    ///
    /// # Panics
    /// When no loopback port can be bound (a broken test machine).
    #[allow(clippy::expect_used)]
    pub async fn start(files: Vec<(&str, Vec<u8>)>) -> Self {
        let files: Arc<Vec<(String, Bytes)>> = Arc::new(
            files
                .into_iter()
                .map(|(suffix, body)| (suffix.to_owned(), Bytes::from(body)))
                .collect(),
        );
        let paths = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new().fallback({
            let paths = paths.clone();
            move |request: Request<Body>| {
                let path = request.uri().path().to_owned();
                if let Ok(mut seen) = paths.lock() {
                    seen.push(path.clone());
                }
                let file = files
                    .iter()
                    .find(|(suffix, _)| path.ends_with(suffix.as_str()))
                    .map(|(_, body)| body.clone());
                async move {
                    let (status, body) = match file {
                        Some(body) => (StatusCode::OK, Body::from(body)),
                        None => (StatusCode::NOT_FOUND, Body::empty()),
                    };
                    let mut response = Response::new(body);
                    *response.status_mut() = status;
                    response
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, paths, task }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The paths asked for so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths
            .lock()
            .map(|paths| paths.clone())
            .unwrap_or_default()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
