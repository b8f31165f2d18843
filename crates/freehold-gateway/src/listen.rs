//! The gateway's HTTP server: the accept loop, the socket options and
//! time limits of every client connection, and the graceful stop.
//!
//! The gateway runs its own loop rather than `axum::serve` because that
//! one serves connections without a timer, so a client that opens a
//! connection and sends its request head a byte at a time (or never) would
//! hold it forever.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
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

/// `listener` for `axum::serve`, each accepted connection prepared by
/// [`prepare_accepted`]. For servers without the gateway's time limits
/// (the benchmark's in-process gateway); `freehold serve` uses [`serve`].
pub fn prepared(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| prepare_accepted(stream))
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until
/// `shutdown` completes. Then it stops accepting, asks every connection to
/// close once the request it is answering is done (idle ones close at
/// once), and returns when all have closed. Dropping the future before
/// that cuts the remaining connections off: callers bound the wait with
/// their grace period.
///
/// A client has `header_timeout` to send each request's head (its request
/// line and headers), counted from when the gateway starts waiting for it.
/// An idle keep-alive connection waits the same, so this is also how long
/// one is kept open; the OpenAI and Anthropic SDKs close theirs after 5 s.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
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
    while connections.join_next().await.is_some() {}
}

/// One client connection and what serving it needs.
struct Connection {
    builder: Builder<TokioExecutor>,
    app: axum::Router,
    closing: CancellationToken,
    peer: SocketAddr,
}

impl Connection {
    /// Serves it after the TLS handshake, which must finish within
    /// [`crate::tls::HANDSHAKE_TIMEOUT`].
    async fn serve_tls(self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let peer = self.peer;
        match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
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

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut listener = prepared(listener);
        let client = TcpStream::connect(address).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap());
        // A connection accepted by hand (the TLS server's loop) too.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "Linux accepts with Nagle on");
        prepare_accepted(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
