//! The gateway's HTTP server: the accept loop, the socket options and
//! time limits of every client connection, and the graceful stop.
//!
//! The gateway runs its own loop rather than `axum::serve` because that
//! one serves connections without a timer, so a client that opens a
//! connection and sends its request head a byte at a time (or never) would
//! hold it forever.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// Prepares an accepted client connection. It turns Nagle's algorithm off
/// (`TCP_NODELAY`): a streamed answer is many small writes, one per event,
/// and with Nagle on each would wait until the client had acknowledged the
/// one before, which across a network is a round trip per event. A socket
/// that refuses the option is still served, as it is.
pub fn prepare_accepted(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
}

/// The time limits [`serve`] holds clients and its own stop to.
#[derive(Debug, Clone)]
pub struct TimeLimits {
    /// How long a client may take to send a request's head (its request
    /// line and headers), counted from when the gateway starts waiting for
    /// it, and how long a write may wait for the client to take the bytes.
    /// An idle keep-alive connection waits the same, so this is also how
    /// long one is kept open; the OpenAI and Anthropic SDKs close theirs
    /// after 5 s.
    pub client: Duration,
    /// Once told to stop, how long connections have to finish the requests
    /// they are answering before they are cut off.
    pub grace: Duration,
    /// Cancelled before the grace period ends (by a quarter of it, at most
    /// [`LONGEST_STREAM_NOTICE`]), so that the streams still open end with
    /// an error their client reads (a 503 before their first event, their
    /// protocol's error event after it) rather than with a connection cut
    /// mid-event; whole answers are still cut off. `None`: streams are cut
    /// off too. Once cancelled, it stays so: a gateway whose stop it
    /// announced is not served again.
    pub stream_notice: Option<CancellationToken>,
}

/// The most time before the grace period ends that streams still open are
/// told to end: time for their error to reach a client on a slow link.
pub const LONGEST_STREAM_NOTICE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` over HTTP/1.1, in TLS when `tls` is given,
/// until `shutdown` completes. Then it stops accepting, asks every
/// connection to close once the request it is answering is done (idle
/// ones close at once), and gives them `limits.grace`. Connections still
/// open after that are cut off, and dropped before it returns, so that what
/// their requests leave behind (their accounting) has run. Returns how many
/// were cut off.
///
/// HTTP/1.1 only: hyper's HTTP/2 server has no timer for a stream's
/// headers or an idle connection, so it would undo the client time limits.
/// The SDKs this gateway serves speak HTTP/1.1.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: TimeLimits,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    prepare_accepted(&stream);
                    let connection = Connection {
                        builder: builder.clone(),
                        app: app.clone(),
                        closing: closing.clone(),
                        write_limit: limits.client,
                        peer,
                    };
                    match &tls {
                        Some(acceptor) => {
                            connections.spawn(connection.serve_tls(acceptor.clone(), stream));
                        }
                        None => {
                            connections.spawn(connection.serve(stream));
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Finished connections are reaped as they go, so the set holds
            // only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    // New connections are refused from here on.
    drop(listener);
    closing.cancel();
    if finished_within_grace(&mut connections, &limits).await {
        return 0;
    }
    let cut_off = connections.len();
    connections.abort_all();
    // `join_next` yields an aborted connection once its task is dropped,
    // with the requests it was serving.
    while connections.join_next().await.is_some() {}
    cut_off
}

/// Waits up to the grace period for `connections` to finish, giving streams
/// still open their notice ([`TimeLimits::stream_notice`]) near its end;
/// says whether they all did.
async fn finished_within_grace(connections: &mut JoinSet<()>, limits: &TimeLimits) -> bool {
    let all_closed = async { while connections.join_next().await.is_some() {} };
    let mut all_closed = std::pin::pin!(all_closed);
    let Some(notice) = &limits.stream_notice else {
        return tokio::time::timeout(limits.grace, all_closed).await.is_ok();
    };
    let before_notice = limits
        .grace
        .saturating_sub((limits.grace / 4).min(LONGEST_STREAM_NOTICE));
    if tokio::time::timeout(before_notice, all_closed.as_mut())
        .await
        .is_ok()
    {
        return true;
    }
    notice.cancel();
    tokio::time::timeout(limits.grace - before_notice, all_closed)
        .await
        .is_ok()
}

/// One client connection and what serving it needs.
struct Connection {
    builder: hyper::server::conn::http1::Builder,
    app: axum::Router,
    closing: CancellationToken,
    write_limit: Duration,
    peer: SocketAddr,
}

impl Connection {
    /// Serves it after the TLS handshake, which must finish within
    /// [`crate::tls::HANDSHAKE_TIMEOUT`] and before the gateway stops.
    async fn serve_tls(self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let peer = self.peer;
        let handshake =
            tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let tls = tokio::select! {
            done = handshake => done,
            () = self.closing.cancelled() => return,
        };
        match tls {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// Serves its requests until the client closes it, a time limit runs
    /// out, or the gateway stops (after the request in flight).
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app);
        let io = TokioIo::new(WriteLimit::new(io, self.write_limit));
        let connection = self.builder.serve_connection(io, service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = self.closing.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%error, peer = %self.peer, "connection ended with an error");
        }
    }
}

/// A connection whose writes fail once one has waited `limit` for the
/// client to take its bytes. A client that stops reading (a stream it
/// opened, say) is cut off, instead of holding its request, and the budget
/// reserved for it, for as long as it likes.
struct WriteLimit<I> {
    io: I,
    limit: Duration,
    /// Running while a write waits for room; reset by every write that
    /// goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteLimit<I> {
    fn new(io: I, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// What a write that found no room answers: still pending, or, past the
    /// limit, an error that ends the connection.
    fn poll_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn went_through<T>(&mut self, result: io::Result<T>) -> Poll<io::Result<T>> {
        self.stalled = None;
        Poll::Ready(result)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteLimit<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteLimit<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(result) => self.went_through(result),
            Poll::Pending => self.poll_stalled(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => self.went_through(result),
            Poll::Pending => self.poll_stalled(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(result) => self.went_through(result),
            Poll::Pending => self.poll_stalled(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "Linux accepts with Nagle on");
        prepare_accepted(&accepted);
        assert!(accepted.nodelay().unwrap());
    }

    // On tokio's paused clock, which moves only when every task waits: the
    // test's own pauses then cannot be stretched by a loaded machine.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_does_not_take_fails_after_the_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (near, mut far) = tokio::io::duplex(64);
        let mut limited = WriteLimit::new(near, Duration::from_millis(200));
        // Room for 64 bytes: they go through.
        limited.write_all(&[1; 64]).await.unwrap();
        // The client reads some in time: the wait starts again.
        let writing = tokio::spawn(async move {
            let written = limited.write_all(&[2; 64]).await;
            (limited, written)
        });
        tokio::time::sleep(Duration::from_millis(120)).await;
        let mut taken = [0; 64];
        far.read_exact(&mut taken).await.unwrap();
        let (mut limited, written) = writing.await.unwrap();
        written.unwrap();
        // Then it stops reading: the next write fails once the limit runs out.
        let started = tokio::time::Instant::now();
        let error = limited.write_all(&[3; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        drop(far);
    }
}
