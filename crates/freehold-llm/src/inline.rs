//! An HTTP/1.1 client for plain `http://` servers whose connections are
//! driven by the task that makes the request.
//!
//! reqwest (hyper-util's pooled client) runs every connection as a task of
//! its own: a request hands itself to that task and waits to be woken with
//! the answer, and every hand-off may wake another thread. For a model
//! server on the same machine or network, that is much of what a call costs
//! the caller (measured in docs/benchmarks.md, "The upstream call driven in
//! the request's own task"). Here the request's own task polls the
//! connection while it waits for the response head and while it reads the
//! body, so nothing else runs on its behalf.
//!
//! Idle connections wait in a pool kept per runtime, thread and server. A
//! connection waits for its socket through the reactor of the runtime that
//! made it, so only that runtime may reuse it: with one runtime per core,
//! each core keeps its own connections. Under a work-stealing runtime any
//! thread may drive any connection, so the split by thread costs nothing
//! there. Connections idle for longer than 30 s are closed when a request
//! next uses the pool.
//!
//! [`crate::http::Transport`] sends `http://` requests here when no proxy
//! is set in the environment; `https://` and proxied requests go through
//! reqwest. This module does not retry, time out a response or map errors
//! to [`freehold_protocol::LlmError`]s: the transport does that for both.

use std::collections::HashMap;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::net::TcpStream;

type Sender = http1::SendRequest<Full<Bytes>>;
type Connection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// Idle connections kept per thread and server; more are closed.
const MAX_IDLE_PER_SERVER: usize = 64;

/// How long a connection may sit idle before it is closed rather than
/// reused. Servers close idle connections too (uvicorn, behind vLLM and
/// SGLang, after 5 s); a closed one is noticed at checkout, and a request
/// that loses the race is sent again on a new connection.
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    /// No TCP connection could be made.
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// No TCP connection within the connect timeout.
    #[error("no connection within {} s", .0.as_secs_f64())]
    ConnectTimeout(Duration),
    /// The URL cannot be sent here (not `http://`, or without a host).
    #[error("{0}")]
    Url(String),
    /// The exchange failed: reset, closed early, a malformed response.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The request could not be built (a header value hyper refuses).
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
    /// The server closed the connection before it answered.
    #[error("the server closed the connection before it answered")]
    ClosedEarly,
}

impl InlineError {
    /// Whether the request failed before any of the response arrived
    /// because the connection was closed: on a reused connection, the
    /// server had closed it while it sat idle.
    fn closed_before_answer(&self) -> bool {
        match self {
            Self::ClosedEarly => true,
            Self::Http(error) => error.is_canceled() || error.is_incomplete_message(),
            _ => false,
        }
    }
}

/// A pooling HTTP/1.1 client for `http://` URLs. Cloning shares the pool.
#[derive(Clone)]
pub struct InlineClient {
    inner: Arc<Inner>,
}

struct Inner {
    connect_timeout: Duration,
    user_agent: HeaderValue,
    idle: Mutex<Pool>,
}

/// The idle connections, in lists by [`PoolKey`].
struct Pool {
    lists: HashMap<PoolKey, Vec<Idle>>,
    /// When connections idle for too long were last closed in every list
    /// (a list whose runtime or thread is gone is never checked out again).
    swept: Instant,
}

/// Which idle list a connection belongs to: the runtime and thread that
/// gave it back, and the server's `host:port`.
type PoolKey = (tokio::runtime::Id, ThreadId, String);

/// The idle list for `address` on the current runtime and thread; `None`
/// outside a runtime (where nothing can be reused).
fn pool_key(address: &str) -> Option<PoolKey> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some((
        runtime.id(),
        std::thread::current().id(),
        address.to_owned(),
    ))
}

/// A connection waiting for its next request.
struct Idle {
    sender: Sender,
    connection: Connection,
    since: Instant,
}

impl std::fmt::Debug for InlineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineClient")
            .field("connect_timeout", &self.inner.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The head of a response; the body follows in [`InlineBody`].
#[derive(Debug)]
pub struct InlineResponse {
    /// The response's status.
    pub status: StatusCode,
    /// The response's headers.
    pub headers: HeaderMap,
    /// The body, read by polling it (which also drives the connection).
    pub body: InlineBody,
}

impl InlineClient {
    /// A client that gives up connecting after `connect_timeout` and names
    /// itself with `user_agent`.
    pub fn new(connect_timeout: Duration, user_agent: HeaderValue) -> Self {
        Self {
            inner: Arc::new(Inner {
                connect_timeout,
                user_agent,
                idle: Mutex::new(Pool {
                    lists: HashMap::new(),
                    swept: Instant::now(),
                }),
            }),
        }
    }

    /// Sends one request and returns once the response head has arrived.
    ///
    /// A request that fails on a reused connection before any of the
    /// response arrived (the server had closed it while it sat idle) is sent
    /// once more on a new connection, as browsers do: a server that closes a
    /// connection does not act on a request it never read.
    ///
    /// # Errors
    /// A URL that is not `http://host…`, a failed connection, or a failed
    /// exchange.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<InlineResponse, InlineError> {
        let server = server_of(url)?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let build = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .body(Full::new(body.clone()))?;
            let request_headers = request.headers_mut();
            let host = HeaderValue::from_str(&server.host_header)
                .map_err(|error| InlineError::Url(format!("bad host in `{url}`: {error}")))?;
            request_headers.insert(header::HOST, host);
            request_headers.insert(header::USER_AGENT, self.inner.user_agent.clone());
            // A name's values come one after another: the first replaces
            // a default (`user-agent`), the rest join it, so a header sent
            // several times (`anthropic-beta`) keeps every value.
            let mut previous = None;
            for (name, value) in headers {
                if previous == Some(name) {
                    request_headers.append(name, value.clone());
                } else {
                    request_headers.insert(name, value.clone());
                }
                previous = Some(name);
            }
            Ok::<_, InlineError>(request)
        };
        if let Some(idle) = self.checkout(&server.address) {
            match exchange(idle.sender, idle.connection, build()?).await {
                Ok(head) => return Ok(self.respond(head, server.address)),
                Err(error) if !error.closed_before_answer() => return Err(error),
                // Closed by the server while idle: try a new connection.
                Err(_) => {}
            }
        }
        let (sender, connection) = self.connect(&server.address).await?;
        let head = exchange(sender, connection, build()?).await?;
        Ok(self.respond(head, server.address))
    }

    fn respond(&self, head: Head, address: String) -> InlineResponse {
        let (parts, body) = head.response.into_parts();
        InlineResponse {
            status: parts.status,
            headers: parts.headers,
            body: InlineBody {
                body,
                link: Some(Link {
                    sender: head.sender,
                    connection: head.connection,
                    pool: Arc::clone(&self.inner),
                    address,
                }),
            },
        }
    }

    async fn connect(&self, address: &str) -> Result<(Sender, Connection), InlineError> {
        let timeout = self.inner.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| InlineError::ConnectTimeout(timeout))?
            .map_err(InlineError::Connect)?;
        // Each request is written whole at once: waiting for the
        // acknowledgement of the last one would only delay it.
        stream.set_nodelay(true).map_err(InlineError::Connect)?;
        Ok(http1::handshake(TokioIo::new(stream)).await?)
    }

    /// An idle connection to `address` given back on this runtime and
    /// thread that is still open, if any.
    fn checkout(&self, address: &str) -> Option<Idle> {
        let key = pool_key(address)?;
        loop {
            let mut idle = self.inner.lock().lists.get_mut(&key)?.pop()?;
            if idle.since.elapsed() > MAX_IDLE_TIME {
                continue;
            }
            // One poll reads what came while it sat idle: the end of the
            // stream when the server closed it.
            if is_done(&mut idle.connection) {
                continue;
            }
            if idle.sender.is_ready() {
                return Some(idle);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A poisoned lock only means another thread panicked between a
        // push and a pop; the lists themselves are whole.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `idle` for the next request to `address` on this runtime and
    /// thread; outside a runtime, or when the list is full, it is closed.
    fn give_back(&self, address: &str, idle: Idle) {
        let Some(key) = pool_key(address) else {
            return;
        };
        let mut pool = self.lock();
        if pool.swept.elapsed() > MAX_IDLE_TIME {
            pool.close_stale();
        }
        let list = pool.lists.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_SERVER {
            list.push(idle);
        }
    }
}

impl Pool {
    /// Closes the connections idle for longer than [`MAX_IDLE_TIME`] in
    /// every list, and forgets the lists left empty.
    fn close_stale(&mut self) {
        self.lists.retain(|_, list| {
            list.retain(|idle| idle.since.elapsed() <= MAX_IDLE_TIME);
            !list.is_empty()
        });
        self.swept = Instant::now();
    }
}

/// A request's server: where to connect, and its `Host` header.
struct Server {
    address: String,
    host_header: String,
}

fn server_of(url: &Url) -> Result<Server, InlineError> {
    if url.scheme() != "http" {
        return Err(InlineError::Url(format!("`{url}` is not an http:// URL")));
    }
    let host = url
        .host_str()
        .ok_or_else(|| InlineError::Url(format!("`{url}` has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(Server {
        // `host_str` keeps an IPv6 address in brackets, as `host:port`
        // needs it.
        address: format!("{host}:{port}"),
        host_header: match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        },
    })
}

/// A response head, with the connection it came on.
struct Head {
    response: hyper::Response<Incoming>,
    sender: Sender,
    connection: Connection,
}

/// Writes `request` and reads the response head, polling the connection
/// in this task.
async fn exchange(
    mut sender: Sender,
    mut connection: Connection,
    request: Request<Full<Bytes>>,
) -> Result<Head, InlineError> {
    let mut response = pin!(sender.send_request(request));
    let mut closed = None;
    let response = std::future::poll_fn(|cx| {
        // The connection first: it writes the request and reads the answer
        // that the response future then yields.
        if closed.is_none()
            && let Poll::Ready(result) = connection.poll_without_shutdown(cx)
        {
            closed = Some(result);
        }
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(InlineError::Http));
        }
        match closed.take() {
            Some(Ok(())) => Poll::Ready(Err(InlineError::ClosedEarly)),
            Some(Err(error)) => Poll::Ready(Err(InlineError::Http(error))),
            None => Poll::Pending,
        }
    })
    .await?;
    Ok(Head {
        response,
        sender,
        connection,
    })
}

/// A response body that drives its connection as it is read, and gives the
/// connection back to the pool when the body has been read to its end.
/// Dropped before its end, it closes the connection, which tells the server
/// to stop (a model stops generating).
pub struct InlineBody {
    body: Incoming,
    link: Option<Link>,
}

impl std::fmt::Debug for InlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineBody")
            .field("connected", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

/// The connection a body arrives on, and where it goes back.
struct Link {
    sender: Sender,
    connection: Connection,
    pool: Arc<Inner>,
    address: String,
}

impl Stream for InlineBody {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut turns = 0;
        loop {
            turns += 1;
            if let Some(link) = &mut this.link {
                match link.connection.poll_without_shutdown(cx) {
                    Poll::Pending => {}
                    // The server closed the connection; what it sent of the
                    // body is still to be read below.
                    Poll::Ready(Ok(())) => this.link = None,
                    Poll::Ready(Err(error)) => {
                        this.link = None;
                        return Poll::Ready(Some(Err(error)));
                    }
                }
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                // The connection reads body bytes only once the body asks
                // for them, and asking wakes this task. One more turn here
                // reads what is already in its buffer without that wake-up;
                // at the start of a body, that sends the response head and
                // the first chunk on together.
                Poll::Pending if turns == 1 && this.link.is_some() => {}
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(link) = this.link.take() {
                        link.release();
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.link = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Empty chunks and trailers carry nothing to read.
                    _ => {}
                },
            }
        }
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        // A reader that stops at the answer's own end (`data: [DONE]`)
        // leaves the body's framing unread: the last chunk of a chunked
        // body. When that has arrived already, the connection can serve
        // another request; otherwise (a reader that gave up mid-answer)
        // dropping it closes the connection.
        let mut context = Context::from_waker(Waker::noop());
        for _ in 0..4 {
            if is_done(&mut link.connection) {
                return;
            }
            match Pin::new(&mut self.body).poll_frame(&mut context) {
                Poll::Ready(None) => return link.release(),
                // Asking for the body lets the connection read it: turn again.
                Poll::Pending => {}
                Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_none_or(Bytes::is_empty) => {}
                Poll::Ready(Some(_)) => return,
            }
        }
    }
}

impl Link {
    /// Gives the connection back to the pool, once it is ready for another
    /// request.
    fn release(mut self) {
        // One more poll moves the connection from the finished answer to
        // waiting for the next request.
        if is_done(&mut self.connection) {
            return;
        }
        self.pool.give_back(
            &self.address,
            Idle {
                sender: self.sender,
                connection: self.connection,
                since: Instant::now(),
            },
        );
    }
}

/// Polls `connection` once, with no task to wake: it reads what has already
/// arrived and moves a finished exchange along. True when the connection is
/// done: closed by the server, failed, or not fit for another request.
fn is_done(connection: &mut Connection) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    connection.poll_without_shutdown(&mut context).is_ready()
}
