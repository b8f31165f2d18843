//! The inline HTTP/1.1 client behind every `http://` provider: connections
//! are reused, replaced when the server closed them, and its errors read
//! like reqwest's. The server here is raw TCP on 127.0.0.1, so that each
//! test controls exactly when a connection closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use freehold_llm::Provider;
use freehold_llm::client::OpenAiChatClient;
use freehold_llm::http::{HttpSettings, Transport};
use freehold_llm::retry::RetryPolicy;
use freehold_llm::wire::openai_chat::Dialect;
use freehold_protocol::{ChatRequest, ErrorKind, Message, StreamEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with a connection after answering on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterAnswer {
    /// Keeps it open for the next request (keep-alive).
    KeepOpen,
    /// Closes it, without saying so in the response (as a server whose
    /// keep-alive timeout ran out does).
    Close,
    /// Keeps it open, but closes it on the next request without answering
    /// (the request arrived just as the server gave up on the connection).
    CloseOnNextRequest,
}

/// A raw HTTP/1.1 server on 127.0.0.1 that counts its connections.
struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(after: AfterAnswer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let number = counted.fetch_add(1, Ordering::SeqCst) + 1;
                // Only the first connection plays the closing trick.
                let after = if number == 1 {
                    after
                } else {
                    AfterAnswer::KeepOpen
                };
                tokio::spawn(serve_connection(stream, after));
            }
        });
        Self {
            url,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve_connection(mut stream: TcpStream, after: AfterAnswer) {
    let mut answered = 0;
    while let Some(body) = read_request(&mut stream).await {
        if after == AfterAnswer::CloseOnNextRequest && answered == 1 {
            return;
        }
        let streamed = body.contains("\"stream\":true");
        if stream.write_all(&answer(streamed)).await.is_err() {
            return;
        }
        answered += 1;
        if after == AfterAnswer::Close {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some(String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned())
}

/// A whole completion, or a stream of one in chunked encoding whose last
/// chunk comes in the same write as `data: [DONE]`.
fn answer(streamed: bool) -> Vec<u8> {
    if streamed {
        let events = concat!(
            r#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
            "\n\n",
            r#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
             {:x}\r\n{events}\r\n0\r\n\r\n",
            events.len()
        )
        .into_bytes()
    } else {
        let body = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

fn client(server: &Server) -> OpenAiChatClient {
    OpenAiChatClient::new(
        common::options("local", server.url.clone()),
        Dialect::default(),
    )
    .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new("m", vec![Message::user("Say hi")])
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = Server::start(AfterAnswer::KeepOpen).await;
    let client = client(&server);
    for _ in 0..3 {
        let answer = client.complete(request()).await.unwrap();
        assert_eq!(answer.message.text(), "Hi");
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_stream_read_to_its_done_marker_leaves_the_connection_reusable() {
    let server = Server::start(AfterAnswer::KeepOpen).await;
    let client = client(&server);
    for _ in 0..3 {
        let (events, error) = common::drain(client.stream(request()).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(common::text_of(&events), "Hi");
        assert!(matches!(events.last(), Some(StreamEvent::Stop { .. })));
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    let server = Server::start(AfterAnswer::Close).await;
    let client = client(&server);
    assert_eq!(
        client.complete(request()).await.unwrap().message.text(),
        "Hi"
    );
    // Give the server's close time to arrive, as it would between requests.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        client.complete(request()).await.unwrap().message.text(),
        "Hi"
    );
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_request_the_server_closed_on_unanswered_is_sent_again_on_a_new_connection() {
    let server = Server::start(AfterAnswer::CloseOnNextRequest).await;
    // No retries by the transport: the new connection must be the inline
    // client's own doing.
    let mut options = common::options("local", server.url.clone());
    options.http.retry.max_retries = 0;
    let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
    assert_eq!(
        client.complete(request()).await.unwrap().message.text(),
        "Hi"
    );
    assert_eq!(
        client.complete(request()).await.unwrap().message.text(),
        "Hi"
    );
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn both_http_clients_word_a_refused_connection_alike() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/models");
    let settings = HttpSettings {
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..HttpSettings::default()
    };
    let inline = Transport::new("local", settings.clone(), Vec::new()).unwrap();
    let reqwest = Transport::through_reqwest("local", settings, Vec::new()).unwrap();
    for transport in [inline, reqwest] {
        let error = transport
            .get(&url, &Default::default())
            .await
            .expect_err("nothing listens there");
        assert_eq!(error.kind, ErrorKind::Connection, "{error}");
        assert!(
            error
                .message
                .starts_with(&format!("cannot connect to {url}: ")),
            "{transport:?}: {}",
            error.message
        );
        assert!(error.message.to_lowercase().contains("refused"), "{error}");
    }
}

/// A connection waits for its socket through the reactor of the runtime
/// that made it. Another runtime on the same thread must not reuse it: that
/// reactor may never run again, and the request would wait forever.
#[test]
fn a_connection_is_not_reused_by_another_runtime_on_the_same_thread() {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_runtime.block_on(Server::start(AfterAnswer::KeepOpen));
    let client = client(&server);
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (first, second) = (current_thread(), current_thread());
    let answer = first.block_on(client.complete(request())).unwrap();
    assert_eq!(answer.message.text(), "Hi");
    // `first` is still alive, but nothing drives its reactor any more.
    let answer = second
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(5), client.complete(request())).await
        })
        .expect("the second runtime's request must not wait on the first's reactor")
        .unwrap();
    assert_eq!(answer.message.text(), "Hi");
    assert_eq!(server.connections(), 2);
    drop(server);
}
