//! The socket options of every connection the gateway accepts.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

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
/// [`prepare_accepted`].
pub fn prepared(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| prepare_accepted(stream))
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
