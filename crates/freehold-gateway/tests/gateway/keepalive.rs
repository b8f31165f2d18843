//! Streams kept alive while the upstream is silent
//! (`[gateway] stream_keepalive_secs`): before its first event (a local
//! model reading a long prompt) the answer is begun and kept waiting, and a
//! pause mid-answer gets keepalives too, in each protocol's own way; a
//! failure after the answer began is the protocol's error event.

use freehold_test_support::{MockServer, Recorded, Scripted, Split, sse_text};

use super::*;

/// How long the scripted upstream stays silent: four keepalive intervals
/// of the gateway under test, so that the order of what the client gets
/// does not depend on the machine's speed.
const SILENCE: Duration = Duration::from_secs(4);

/// The three streaming endpoints, each with a request for the `mock` model.
fn streaming_requests() -> [(&'static str, Value); 3] {
    let messages = json!([{"role": "user", "content": "hi"}]);
    [
        (
            "/v1/chat/completions",
            json!({"model": "mock", "messages": messages, "stream": true}),
        ),
        (
            "/v1/messages",
            json!({"model": "mock", "max_tokens": 100, "messages": messages, "stream": true}),
        ),
        (
            "/v1/responses",
            json!({"model": "mock", "input": "hi", "stream": true}),
        ),
    ]
}

/// A Chat Completions stream answering "Hello" in two pieces, with usage;
/// and the byte offset where its first piece ends.
fn hello_stream() -> (String, usize) {
    let chunk = |delta: Value, finish: Value, usage: Value| {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
            "model": "mock-model", "usage": usage,
            "choices": if delta.is_null() { json!([]) } else {
                json!([{"index": 0, "delta": delta, "finish_reason": finish}])
            },
        })
        .to_string()
    };
    let first = chunk(
        json!({"role": "assistant", "content": "Hel"}),
        Value::Null,
        Value::Null,
    );
    let events = [
        first.clone(),
        chunk(json!({"content": "lo"}), Value::Null, Value::Null),
        chunk(json!({}), json!("stop"), Value::Null),
        chunk(
            Value::Null,
            Value::Null,
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        ),
        "[DONE]".to_owned(),
    ];
    let pairs: Vec<(&str, &str)> = events.iter().map(|event| ("", event.as_str())).collect();
    let first_piece = sse_text(&[("", first.as_str())]).len();
    (sse_text(&pairs), first_piece)
}

/// Silent for [`SILENCE`], then streams "Hello".
fn slow_to_answer(_: &Recorded) -> Scripted {
    Scripted {
        delay_before_headers: SILENCE,
        ..Scripted::sse(&hello_stream().0, Split::Whole)
    }
}

/// Silent for [`SILENCE`], then refuses the prompt as longer than the
/// model's context (as vLLM says it).
fn slow_to_refuse(_: &Recorded) -> Scripted {
    Scripted {
        delay_before_headers: SILENCE,
        ..Scripted::json(
            400,
            json!({"error": {
                "message": "This model's maximum context length is 4096 tokens. However, \
                            you requested 9000 tokens in the messages.",
                "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded",
            }}),
        )
    }
}

/// Sends its first piece at once, pauses for [`SILENCE`], then the rest.
fn pausing_mid_answer(_: &Recorded) -> Scripted {
    let (text, first_piece) = hello_stream();
    Scripted {
        stall_after: Some(1),
        stall_for: SILENCE,
        ..Scripted::sse(&text, Split::At(vec![first_piece]))
    }
}

/// A gateway with `stream_keepalive_secs = keepalive_secs` in front of an
/// upstream answering with `upstream`.
async fn gateway_before(
    upstream: fn(&Recorded) -> Scripted,
    keepalive_secs: u64,
) -> (MockServer, Running) {
    let settings = GatewaySettings {
        stream_keepalive_secs: keepalive_secs,
        ..GatewaySettings::default()
    };
    gateway_with(upstream, settings).await
}

/// A gateway with these settings in front of an upstream answering with
/// `upstream`.
async fn gateway_with(
    upstream: fn(&Recorded) -> Scripted,
    settings: GatewaySettings,
) -> (MockServer, Running) {
    let upstream = MockServer::answering(upstream).await;
    let gateway = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        settings,
        None,
    )
    .await;
    (upstream, gateway)
}

/// What a client got from one streaming request: the status, and each
/// event of the body as a label (its `type`; `:` for a comment, `chunk`
/// for a Chat Completions chunk, `error` for an error chunk, `[DONE]`)
/// with its data.
struct Streamed {
    status: u16,
    events: Vec<(String, Value)>,
}

impl Streamed {
    async fn request(url: &str, path: &str, body: &Value) -> Self {
        let response = reqwest::Client::new()
            .post(format!("{url}{path}"))
            .bearer_auth(MASTER)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let events = text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                if block.starts_with(':') {
                    return (":".to_owned(), Value::Null);
                }
                let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: ")) else {
                    // A whole error body, sent without a stream.
                    return ("body".to_owned(), serde_json::from_str(block).unwrap());
                };
                if data == "[DONE]" {
                    return ("[DONE]".to_owned(), Value::Null);
                }
                let value: Value = serde_json::from_str(data).unwrap();
                let label = match value["type"].as_str() {
                    Some(kind) => kind.to_owned(),
                    None if value.get("error").is_some() => "error".to_owned(),
                    None => "chunk".to_owned(),
                };
                (label, value)
            })
            .collect();
        Self { status, events }
    }

    fn labels(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|(label, _)| label.as_str())
            .collect()
    }

    /// How many events labelled `label` came before the first `before`.
    fn count_before(&self, label: &str, before: &str) -> usize {
        self.labels()
            .into_iter()
            .take_while(|seen| *seen != before)
            .filter(|seen| *seen == label)
            .count()
    }

    /// The answer's text, in any of the three protocols.
    fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|(label, value)| match label.as_str() {
                "chunk" => value["choices"][0]["delta"]["content"].as_str(),
                "content_block_delta" => value["delta"]["text"].as_str(),
                "response.output_text.delta" => value["delta"].as_str(),
                _ => None,
            })
            .collect()
    }

    /// The last event's data.
    fn last(&self) -> &Value {
        &self.events.last().unwrap().1
    }
}

/// Waits until `gateway`'s ledger has `count` lines, and checks that each
/// has `status`.
async fn assert_ledger_statuses(gateway: &Running, count: usize, status: u16) {
    let lines = ledger_lines(&gateway.store, count).await;
    assert!(
        lines.iter().all(|line| line.record.status == status),
        "{lines:?}"
    );
}

/// Sends every streaming request to `gateway` at once.
async fn stream_all(gateway: &Running) -> Vec<(&'static str, Streamed)> {
    futures::future::join_all(streaming_requests().into_iter().map(|(path, body)| {
        let url = gateway.url.clone();
        async move { (path, Streamed::request(&url, path, &body).await) }
    }))
    .await
}

#[tokio::test]
async fn a_silent_upstream_gets_the_answer_begun_and_kept_alive() {
    let (_upstream, gateway) = gateway_before(slow_to_answer, 1).await;
    for (path, got) in stream_all(&gateway).await {
        let labels = got.labels();
        assert_eq!(got.status, 200, "{path}: {labels:?}");
        assert_eq!(got.text(), "Hello", "{path}: {labels:?}");
        match path {
            // Comments, which every parser skips, then the usual chunks.
            "/v1/chat/completions" => {
                assert_eq!(labels[0], ":", "{labels:?}");
                assert!(got.count_before(":", "chunk") >= 2, "{labels:?}");
                assert_eq!(labels.last(), Some(&"[DONE]"));
            }
            // The answer begins (with the input estimate), then pings.
            "/v1/messages" => {
                assert_eq!(labels[0], "message_start", "{labels:?}");
                assert!(got.events[0].1["message"]["usage"]["input_tokens"].as_u64() > Some(0));
                assert!(
                    got.count_before("ping", "content_block_start") >= 1,
                    "{labels:?}"
                );
                assert_eq!(labels.iter().filter(|l| **l == "message_start").count(), 1);
                assert_eq!(labels.last(), Some(&"message_stop"));
            }
            // The answer begins, then `response.in_progress` again.
            "/v1/responses" => {
                assert_eq!(labels[..2], ["response.created", "response.in_progress"]);
                assert!(
                    got.count_before("response.in_progress", "response.output_item.added") >= 2,
                    "{labels:?}"
                );
                let numbers: Vec<u64> = got
                    .events
                    .iter()
                    .map(|(_, value)| value["sequence_number"].as_u64().unwrap())
                    .collect();
                assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
                assert_eq!(labels.last(), Some(&"response.completed"));
            }
            other => unreachable!("{other}"),
        }
    }
    // Each was answered, and accounted as such.
    assert_ledger_statuses(&gateway, 3, 200).await;
}

#[tokio::test]
async fn a_refusal_after_the_answer_began_is_the_protocols_error_event() {
    let (_upstream, gateway) = gateway_before(slow_to_refuse, 1).await;
    for (path, got) in stream_all(&gateway).await {
        let labels = got.labels();
        assert_eq!(got.status, 200, "{path}: {labels:?}");
        match path {
            "/v1/chat/completions" => {
                assert_eq!(labels[labels.len() - 2..], ["error", "[DONE]"]);
                let error = &got.events[labels.len() - 2].1["error"];
                assert_eq!(error["code"], "context_length_exceeded", "{error}");
            }
            "/v1/messages" => {
                assert_eq!(labels.last(), Some(&"error"), "{labels:?}");
                let error = &got.last()["error"];
                assert_eq!(error["type"], "invalid_request_error", "{error}");
                // What Claude Code looks for to compact its conversation.
                assert!(
                    error["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("prompt is too long"),
                    "{error}"
                );
            }
            "/v1/responses" => {
                assert_eq!(labels.last(), Some(&"response.failed"), "{labels:?}");
                let error = &got.last()["response"]["error"];
                assert_eq!(error["code"], "context_length_exceeded", "{error}");
            }
            other => unreachable!("{other}"),
        }
    }
    // The ledger has the refusal, not the 200 the clients saw.
    assert_ledger_statuses(&gateway, 3, 400).await;
}

#[tokio::test]
async fn without_keepalives_the_status_waits_for_the_upstream() {
    let (_upstream, gateway) = gateway_before(slow_to_refuse, 0).await;
    for (path, got) in stream_all(&gateway).await {
        assert_eq!(got.status, 400, "{path}: {:?}", got.labels());
        assert_eq!(got.labels(), ["body"], "{path}");
    }
    let (_upstream, gateway) = gateway_before(slow_to_answer, 0).await;
    for (path, got) in stream_all(&gateway).await {
        let labels = got.labels();
        assert_eq!(got.status, 200, "{path}: {labels:?}");
        assert_eq!(got.text(), "Hello", "{path}: {labels:?}");
        assert!(
            !labels.iter().any(|label| matches!(*label, ":" | "ping")),
            "{path}: {labels:?}"
        );
        let in_progress = labels
            .iter()
            .filter(|label| **label == "response.in_progress")
            .count();
        assert!(in_progress <= 1, "{path}: {labels:?}");
    }
}

#[tokio::test]
async fn a_pause_mid_answer_gets_keepalives() {
    let (_upstream, gateway) = gateway_before(pausing_mid_answer, 1).await;
    for (path, got) in stream_all(&gateway).await {
        let labels = got.labels();
        assert_eq!(got.status, 200, "{path}: {labels:?}");
        assert_eq!(got.text(), "Hello", "{path}: {labels:?}");
        // The keepalives come after the first piece of text.
        let (keepalive, text) = match path {
            "/v1/chat/completions" => (":", "chunk"),
            "/v1/messages" => ("ping", "content_block_delta"),
            "/v1/responses" => ("response.in_progress", "response.output_text.delta"),
            other => unreachable!("{other}"),
        };
        let first_text = labels.iter().position(|label| *label == text).unwrap();
        assert!(
            labels[first_text..].contains(&keepalive),
            "{path}: {labels:?}"
        );
    }
}

#[tokio::test]
async fn the_time_limit_after_the_answer_began_is_an_error_event() {
    let settings = GatewaySettings {
        stream_keepalive_secs: 1,
        request_timeout_secs: 2,
        ..GatewaySettings::default()
    };
    let (_upstream, gateway) = gateway_with(slow_to_answer, settings).await;
    for (path, got) in stream_all(&gateway).await {
        let labels = got.labels();
        assert_eq!(got.status, 200, "{path}: {labels:?}");
        assert_eq!(got.text(), "", "{path}: {labels:?}");
        let message = match path {
            "/v1/chat/completions" => {
                assert_eq!(labels[labels.len() - 2..], ["error", "[DONE]"]);
                got.events[labels.len() - 2].1["error"]["message"].clone()
            }
            "/v1/messages" => {
                assert_eq!(labels.last(), Some(&"error"), "{labels:?}");
                assert_eq!(got.last()["error"]["type"], "timeout_error");
                got.last()["error"]["message"].clone()
            }
            "/v1/responses" => {
                assert_eq!(labels.last(), Some(&"response.failed"), "{labels:?}");
                got.last()["response"]["error"]["message"].clone()
            }
            other => unreachable!("{other}"),
        };
        assert!(
            message.as_str().unwrap().contains("request_timeout_secs"),
            "{path}: {message}"
        );
    }
    assert_ledger_statuses(&gateway, 3, 504).await;
}

#[tokio::test]
async fn a_client_that_leaves_while_kept_alive_is_accounted_as_gone() {
    let (_upstream, gateway) = gateway_before(slow_to_answer, 1).await;
    let (path, body) = streaming_requests()[1].clone();
    let mut response = reqwest::Client::new()
        .post(format!("{}{path}", gateway.url))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: message_start"),
        "{first:?}"
    );
    // Gone before the upstream answered.
    drop(response);
    let lines = ledger_lines(&gateway.store, 1).await;
    assert_eq!(lines[0].record.status, 499, "{lines:?}");
}
