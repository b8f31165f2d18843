//! API keys must never appear in an error message, a log line or `Debug`
//! output — even when the server echoes them back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use freehold_llm::Provider;
use freehold_llm::client::{
    AnthropicClient, GeminiClient, OllamaClient, OpenAiChatClient, OpenAiResponsesClient,
};
use freehold_llm::secret::ApiKey;
use freehold_llm::wire::openai_chat::Dialect;
use freehold_protocol::{ChatRequest, Message};
use freehold_test_support::{MockServer, Scripted, Split, sse_text};
use futures::StreamExt;
use serde_json::json;

const KEY: &str = "sk-live-SECRET0123456789abcdefXYZ";

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn clients(base: &str) -> Vec<(&'static str, Arc<dyn Provider>)> {
    let options = |name: &str, url: String| common::options(name, url).with_key(ApiKey::new(KEY));
    vec![
        (
            "openai",
            Arc::new(
                OpenAiChatClient::new(options("openai", format!("{base}/v1")), Dialect::default())
                    .unwrap(),
            ),
        ),
        (
            "openai-responses",
            Arc::new(
                OpenAiResponsesClient::new(options("openai-responses", format!("{base}/v1")))
                    .unwrap(),
            ),
        ),
        (
            "anthropic",
            Arc::new(AnthropicClient::new(options("anthropic", base.to_owned())).unwrap()),
        ),
        (
            "gemini",
            Arc::new(GeminiClient::new(options("gemini", format!("{base}/v1beta"))).unwrap()),
        ),
        (
            "ollama",
            Arc::new(OllamaClient::new(options("ollama", base.to_owned())).unwrap()),
        ),
    ]
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} leaks the key: {text}");
    // Providers echo fragments ("sk-live-****abcdefXYZ"): no 8-character run
    // of the key may appear either.
    for start in 0..=KEY.len() - 8 {
        let piece = &KEY[start..start + 8];
        assert!(!text.contains(piece), "{what} leaks `{piece}`: {text}");
    }
}

#[tokio::test]
async fn keys_stay_out_of_errors_logs_and_debug_output() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = format!(
        "Incorrect API key provided: {KEY}. Also seen: sk-live-****{}",
        &KEY[KEY.len() - 12..]
    );
    for (status, kind) in [(401, "authentication"), (500, "server")] {
        // The body echoes the key in every shape a provider might.
        let body = json!({"error": {"message": echo, "type": kind, "code": status}});
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        for (name, client) in clients(&server.url()) {
            assert_clean(&format!("{name} Debug"), &format!("{client:?}"));
            let request = ChatRequest::new("m", vec![Message::user("hi")]);
            let error = match client.stream(request.clone()).await {
                Ok(_) => panic!("{name}: status {status} must fail"),
                Err(error) => error,
            };
            assert_clean(&format!("{name} error Display"), &error.to_string());
            assert_clean(&format!("{name} error Debug"), &format!("{error:?}"));
            let error = client.complete(request).await.unwrap_err();
            assert_clean(&format!("{name} complete error"), &error.to_string());
            let error = client.list_models().await.unwrap_err();
            assert_clean(&format!("{name} list_models error"), &error.to_string());
        }
        // The key did reach the server (so the test proves redaction, not absence).
        let sent_somewhere = server.requests().iter().any(|request| {
            request
                .headers
                .values()
                .any(|value| value.to_str().unwrap_or_default().contains(KEY))
        });
        assert!(sent_somewhere, "no client sent the key");
    }

    // An error event inside a stream that echoes the key.
    let stream_error = sse_text(&[(
        "",
        &json!({"error": {"message": format!("bad key {KEY}"), "code": 500}}).to_string(),
    )]);
    let server = MockServer::start(vec![Scripted::sse(&stream_error, Split::Whole)]).await;
    let (_, client) = clients(&server.url()).remove(0);
    let mut stream = client
        .stream(ChatRequest::new("m", vec![Message::user("hi")]))
        .await
        .unwrap();
    let mut saw_error = false;
    while let Some(item) = stream.next().await {
        if let Err(error) = item {
            assert_clean("mid-stream error", &error.to_string());
            saw_error = true;
        }
    }
    assert!(saw_error);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "retries were logged: {logs}");
    assert_clean("logs", &logs);
}

#[test]
fn api_key_debug_is_redacted() {
    let key = ApiKey::new(KEY);
    assert_clean("ApiKey Debug", &format!("{key:?}"));
    let options = common::options("p", "http://127.0.0.1:1".into()).with_key(key);
    assert_clean("ClientOptions Debug", &format!("{options:?}"));
}

#[tokio::test]
async fn secret_headers_are_sent_and_redacted_like_keys() {
    let body = json!({"error": {"message": format!("bad api-key {KEY}")}});
    let server = MockServer::start(vec![Scripted::json(401, body)]).await;
    let mut options = common::options("azure", format!("{}/v1", server.url()));
    options.secret_headers = vec![("api-key".into(), ApiKey::new(KEY))];
    assert_clean("ClientOptions Debug", &format!("{options:?}"));
    let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
    let error = client
        .complete(ChatRequest::new("m", vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_clean("secret header error", &error.to_string());
    assert_eq!(server.requests()[0].header("api-key").as_deref(), Some(KEY));
}
