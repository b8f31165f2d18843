//! Contract suite of the OpenAI Chat Completions client against scripted
//! servers on 127.0.0.1 speaking the exact wire format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_well_ordered, drain, options, text_of};
use freehold_llm::client::OpenAiChatClient;
use freehold_llm::secret::ApiKey;
use freehold_llm::wire::openai_chat::{Dialect, MaxTokensField, TokenCountEndpoint};
use freehold_llm::{Provider, collect_stream};
use freehold_protocol::{
    ChatRequest, ContentPart, ErrorKind, Message, Reasoning, ReasoningEffort, ResponseFormat, Role,
    StopReason, StreamEvent, ToolCall, ToolChoice, ToolSpec, Usage,
};
use freehold_test_support::{MockServer, Scripted, Split, sse_text};
use serde_json::json;

fn client(server: &MockServer) -> OpenAiChatClient {
    let options = options("test-openai", format!("{}/v1", server.url()))
        .with_key(ApiKey::new("sk-test-key-0123456789"));
    OpenAiChatClient::new(options, Dialect::default()).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-test",
        vec![Message::system("Be brief."), Message::user("Hi")],
    )
}

fn read_tool() -> ToolSpec {
    ToolSpec {
        name: "read".into(),
        description: "Read a file".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        strict: false,
    }
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    })
    .to_string()
}

fn text_stream() -> String {
    let usage = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 0}}
    })
    .to_string();
    sse_text(&[
        (
            "",
            &chunk(json!({"role": "assistant", "content": ""}), None),
        ),
        ("", &chunk(json!({"content": "Héllo"}), None)),
        ("", &chunk(json!({"content": ", wörld ✓"}), None)),
        ("", &chunk(json!({}), Some("stop"))),
        ("", &usage),
        ("", "[DONE]"),
    ])
}

#[tokio::test]
async fn streams_text_and_usage_split_at_every_byte() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Every(1))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    assert_eq!(
        events[events.len() - 2..],
        [
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                cached_input_tokens: 8,
                output_tokens: 3,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::EndTurn
            }
        ]
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some("Bearer sk-test-key-0123456789")
    );
    let body = sent.json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
}

fn parallel_tool_stream() -> String {
    sse_text(&[
        (
            "",
            &chunk(json!({"role": "assistant", "content": null}), None),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "read", "arguments": ""}}]}),
                None,
            ),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"pa"}}]}),
                None,
            ),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"a.rs\"}"}}]}),
                None,
            ),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "read", "arguments": "{\"path\""}}]}),
                None,
            ),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 1, "function": {"arguments": ": \"b.rs\"}"}}]}),
                None,
            ),
        ),
        ("", &chunk(json!({}), Some("tool_calls"))),
        ("", "[DONE]"),
    ])
}

#[tokio::test]
async fn parallel_tool_calls_survive_any_split() {
    let text = parallel_tool_stream();
    // Cut at a few awkward places: inside `data:`, inside escapes, between \n\n.
    for split in [
        Split::Every(1),
        Split::Every(7),
        Split::At(vec![3, 50, 51, 130, 131, 400]),
    ] {
        let server = MockServer::start(vec![Scripted::sse(&text, split.clone())]).await;
        let mut req = request();
        req.tools = vec![read_tool()];
        let stream = client(&server).stream(req).await.unwrap();
        let response = collect_stream("test", stream).await.unwrap();
        let calls: Vec<_> = response.message.tool_calls().cloned().collect();
        assert_eq!(
            calls,
            vec![
                ToolCall::new("call_a", "read", r#"{"path": "a.rs"}"#),
                ToolCall::new("call_b", "read", r#"{"path": "b.rs"}"#),
            ],
            "{split:?}"
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
    }
}

#[tokio::test]
async fn ollama_reusing_index_zero_gives_two_calls() {
    let text = sse_text(&[
        (
            "",
            &chunk(
                json!({"role": "assistant", "content": "", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}}]}),
                None,
            ),
        ),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_2", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"b\"}"}}]}),
                None,
            ),
        ),
        ("", &chunk(json!({}), Some("stop"))),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none());
    assert_well_ordered(&events);
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStart { index, id, .. } => Some((*index, id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![(0, "call_1".to_owned()), (1, "call_2".to_owned())]
    );
    // "stop" after tool calls means tool use.
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::ToolUse
        })
    );
}

#[tokio::test]
async fn vllm_null_usage_on_every_chunk_is_ignored_until_the_real_one() {
    let with_null = |delta: serde_json::Value, finish: Option<&str>| {
        let mut value: serde_json::Value = serde_json::from_str(&chunk(delta, finish)).unwrap();
        value["usage"] = serde_json::Value::Null;
        value.to_string()
    };
    let last = json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    .to_string();
    let text = sse_text(&[
        ("", &with_null(json!({"content": "ok"}), None)),
        ("", &with_null(json!({}), Some("length"))),
        ("", &last),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let response = collect_stream("t", client(&server).stream(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.message.text(), "ok");
    assert_eq!(response.stop_reason, StopReason::MaxTokens);
    assert_eq!(response.usage.input_tokens, 5);
    assert_eq!(response.usage.output_tokens, 2);
}

#[tokio::test]
async fn complete_decodes_a_non_streamed_answer_and_encodes_options() {
    let body = json!({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "reasoning_content": "Need the file.",
            "tool_calls": [{"id": "call_z", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"x\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                  "completion_tokens_details": {"reasoning_tokens": 4}}
    });
    let server = MockServer::start(vec![Scripted::json(200, body)]).await;
    let options = options("o", format!("{}/v1", server.url()));
    let client = OpenAiChatClient::new(
        options,
        Dialect {
            max_tokens_field: MaxTokensField::MaxCompletionTokens,
            ..Dialect::default()
        },
    )
    .unwrap();
    let mut req = request();
    req.tools = vec![read_tool()];
    req.tool_choice = ToolChoice::Tool {
        name: "read".into(),
    };
    req.max_tokens = Some(64);
    req.stop = vec!["END".into()];
    req.sampling.temperature = Some(0.2);
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    let response = client.complete(req).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(
        response.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![ToolCall::new("call_z", "read", r#"{"path":"x"}"#)]
    );
    assert_eq!(response.usage.reasoning_tokens, 4);

    let sent = server.requests()[0].json();
    assert_eq!(
        sent.get("stream"),
        None,
        "non-streaming requests omit `stream`"
    );
    assert_eq!(sent["max_completion_tokens"], 64);
    assert_eq!(sent.get("max_tokens"), None);
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "read"}})
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "read");
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    assert!(
        server.requests()[0].header("authorization").is_none(),
        "no key, no header"
    );
}

#[tokio::test]
async fn assistant_tool_calls_and_results_are_encoded_for_the_next_turn() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let mut req = request();
    req.messages.push(freehold_protocol::Message {
        role: freehold_protocol::Role::Assistant,
        content: vec![freehold_protocol::ContentPart::ToolCall(ToolCall::new(
            "c1",
            "read",
            "{\"path\":\"a\"}",
        ))],
    });
    req.messages
        .push(Message::tool_result("c1", "fn main() {}"));
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    let messages = server.requests()[0].json()["messages"].clone();
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": null,
               "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}}]})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "content": "fn main() {}", "tool_call_id": "c1"})
    );
}

#[tokio::test]
async fn every_error_status_maps_to_its_kind() {
    let cases: Vec<(u16, serde_json::Value, ErrorKind)> = vec![
        (
            400,
            json!({"error": {"message": "bad", "type": "invalid_request_error"}}),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9100 tokens.", "code": "context_length_exceeded"}}),
            ErrorKind::ContextLengthExceeded {
                needed: Some(9100),
                allowed: Some(8192),
            },
        ),
        (
            401,
            json!({"error": {"message": "no"}}),
            ErrorKind::Authentication,
        ),
        (
            403,
            json!({"error": {"message": "no"}}),
            ErrorKind::Permission,
        ),
        (
            404,
            json!({"error": {"message": "model not found"}}),
            ErrorKind::NotFound,
        ),
        (
            422,
            json!({"detail": "unprocessable"}),
            ErrorKind::InvalidRequest,
        ),
        (
            429,
            json!({"error": {"message": "slow"}}),
            ErrorKind::RateLimited { retry_after: None },
        ),
        (
            500,
            json!({"error": {"message": "boom"}}),
            ErrorKind::Server,
        ),
        (
            503,
            json!({"error": {"message": "busy"}}),
            ErrorKind::Overloaded,
        ),
        (
            529,
            json!({"error": {"message": "busy"}}),
            ErrorKind::Overloaded,
        ),
    ];
    for (status, body, kind) in cases {
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        let mut options = options("o", format!("{}/v1", server.url()));
        options.http.retry = freehold_llm::retry::RetryPolicy::none();
        let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
        let Err(error) = client.stream(request()).await else {
            panic!("status {status} must fail")
        };
        assert_eq!(error.kind, kind, "status {status}");
        assert_eq!(error.status, Some(status));
        let error = client.complete(request()).await.unwrap_err();
        assert_eq!(error.kind, kind, "status {status} (complete)");
    }
}

#[tokio::test]
async fn retries_server_errors_and_honours_retry_after() {
    let ok = Scripted::sse(&text_stream(), Split::Whole);
    let server = MockServer::start(vec![
        Scripted::json(500, json!({"error": {"message": "boom"}})),
        Scripted::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "1"),
        ok,
    ])
    .await;
    let started = Instant::now();
    let stream = client(&server).stream(request()).await.unwrap();
    let response = collect_stream("t", stream).await.unwrap();
    assert_eq!(response.message.text(), "Héllo, wörld ✓");
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
}

#[tokio::test]
async fn gives_up_after_max_retries_with_the_last_error() {
    let server = MockServer::start(vec![Scripted::json(
        503,
        json!({"error": {"message": "busy"}}),
    )])
    .await;
    let Err(error) = client(&server).stream(request()).await else {
        panic!("must fail")
    };
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(server.requests().len(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn idle_timeout_fires_when_the_stream_goes_silent() {
    let script =
        Scripted::sse(&text_stream(), Split::Every(40)).stall_after(2, Duration::from_secs(30));
    let server = MockServer::start(vec![script]).await;
    let mut options = options("o", format!("{}/v1", server.url()));
    // Long enough that a loaded machine does not mistake slow headers for
    // silence; the stall is 30 s.
    options.http.idle_timeout = Duration::from_secs(1);
    let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
    let started = Instant::now();
    let (_events, error) = drain(client.stream(request()).await.unwrap()).await;
    let error = error.expect("a timeout");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn slow_but_steady_streams_are_never_cut() {
    // 30 chunks 100 ms apart: 3 s in total, three times the 1 s idle
    // timeout, but never silent for long: a total deadline would kill it, an
    // idle timeout must not. (The timeout is ten gaps long so that a test
    // thread held up on a loaded machine does not look like silence.)
    let mut script = Scripted::sse(&text_stream(), Split::Every(text_stream().len() / 30 + 1));
    script.chunk_delay = Duration::from_millis(100);
    let server = MockServer::start(vec![script]).await;
    let mut options = options("o", format!("{}/v1", server.url()));
    options.http.idle_timeout = Duration::from_secs(1);
    let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
    let response = collect_stream("o", client.stream(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.message.text(), "Héllo, wörld ✓");
}

#[tokio::test]
async fn error_object_mid_stream_is_reported() {
    let text = sse_text(&[
        ("", &chunk(json!({"content": "par"}), None)),
        (
            "",
            &json!({"error": {"message": "upstream overloaded", "code": 503}}).to_string(),
        ),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "par");
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert!(error.message.contains("upstream overloaded"));
}

/// llama.cpp's server wrote its in-stream errors as an `error:` line of
/// their own, then `data: [DONE]`, until late 2025: still read as the
/// error it is (here, a prompt over the context), not as a stream cut off.
#[tokio::test]
async fn an_older_llama_server_error_line_is_read() {
    let error = json!({"code": 400, "type": "exceed_context_size_error",
        "message": "the request exceeds the available context size, try increasing it"});
    let text = format!(
        "{}error: {error}\n\ndata: [DONE]\n\n",
        sse_text(&[("", &chunk(json!({"content": "par"}), None))])
    );
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Every(7))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "par");
    let error = error.unwrap();
    assert!(
        matches!(error.kind, ErrorKind::ContextLengthExceeded { .. }),
        "{error:?}"
    );
    assert!(error.message.contains("available context size"), "{error}");
}

#[tokio::test]
async fn text_that_mentions_error_is_text_and_a_finish_reason_of_error_is_read() {
    // The decoder reads chunks straight into their type unless the text may
    // hold an `"error"` key: neither of these is an error object.
    let text = sse_text(&[
        ("", &chunk(json!({"content": "the \"error\" key: "}), None)),
        ("", &chunk(json!({"content": "error"}), Some("stop"))),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text_of(&events), "the \"error\" key: error");
}

#[tokio::test]
async fn a_stream_cut_before_finish_is_a_connection_error() {
    let text = sse_text(&[("", &chunk(json!({"content": "half"}), None))]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "half");
    assert_eq!(error.unwrap().kind, ErrorKind::Connection);
}

#[tokio::test]
async fn a_base_url_that_is_not_a_url_is_named_in_the_error() {
    let client =
        OpenAiChatClient::new(options("o", "no scheme/v1".into()), Dialect::default()).unwrap();
    for error in [
        client.complete(request()).await.unwrap_err(),
        client.stream(request()).await.err().unwrap(),
    ] {
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(
            error
                .message
                .contains("base_url `no scheme/v1` is not a usable URL"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    let server = MockServer::start(vec![]).await;
    let url = server.url();
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut options = options("o", format!("{url}/v1"));
    options.http.retry = freehold_llm::retry::RetryPolicy::none();
    let client = OpenAiChatClient::new(options, Dialect::default()).unwrap();
    let error = client.complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(
        error.to_string().contains("is the server running"),
        "{error}"
    );
}

#[tokio::test]
async fn lists_models() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"object": "list", "data": [{"id": "qwen2.5-coder", "object": "model", "max_model_len": 32768}, {"id": "b", "object": "model"}]}),
    )])
    .await;
    let models = client(&server).list_models().await.unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].id, "qwen2.5-coder");
    assert_eq!(models[0].context_window, Some(32768));
    assert_eq!(models[0].provider, "test-openai");
    assert_eq!(server.requests()[0].uri, "/v1/models");
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_request_at_the_server() {
    // A long answer, one chunk every 20 ms (6 s in all): the client reads a
    // few events and drops the stream; the server must see the connection
    // go away long before the answer would have ended.
    let deltas: Vec<String> = (0..300)
        .map(|i| chunk(json!({"content": format!("w{i} ")}), None))
        .collect();
    let events: Vec<(&str, &str)> = deltas.iter().map(|d| ("", d.as_str())).collect();
    let mut script = Scripted::sse(&sse_text(&events), Split::Every(deltas[0].len() + 8));
    script.chunk_delay = Duration::from_millis(20);
    let server = MockServer::start(vec![script]).await;
    let mut stream = client(&server).stream(request()).await.unwrap();
    for _ in 0..3 {
        let event = futures::StreamExt::next(&mut stream).await;
        assert!(matches!(event, Some(Ok(_))), "{event:?}");
    }
    let dropped_at = Instant::now();
    drop(stream);
    while server.aborted() == 0 && dropped_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.aborted(), 1, "the server never saw the cancellation");
}

#[tokio::test]
async fn a_finished_stream_is_not_counted_as_cancelled() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Every(60))]).await;
    let (_, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.aborted(), 0);
}

#[tokio::test]
async fn tool_results_in_a_user_message_come_right_after_the_calls() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let mut req = request();
    req.messages.push(freehold_protocol::Message {
        role: freehold_protocol::Role::Assistant,
        content: vec![freehold_protocol::ContentPart::ToolCall(ToolCall::new(
            "c1", "read", "{}",
        ))],
    });
    // Anthropic-style: the results travel in a user message, with text.
    req.messages.push(freehold_protocol::Message {
        role: freehold_protocol::Role::User,
        content: vec![
            freehold_protocol::ContentPart::ToolResult(freehold_protocol::ToolResult {
                call_id: "c1".into(),
                content: "data".into(),
                is_error: false,
            }),
            freehold_protocol::ContentPart::Text {
                text: "and now?".into(),
            },
        ],
    });
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    let messages = server.requests()[0].json()["messages"].clone();
    assert_eq!(
        messages[3],
        json!({"role": "tool", "content": "data", "tool_call_id": "c1"})
    );
    assert_eq!(messages[4], json!({"role": "user", "content": "and now?"}));
    assert_eq!(
        messages.as_array().unwrap().len(),
        5,
        "no empty user message: {messages}"
    );
}

#[tokio::test]
async fn tolerant_of_null_fields_and_ids_repeated_on_continuations() {
    // `"model": null` (some local servers) and a continuation chunk that
    // carries a different id but no name: still one call.
    let mut first: serde_json::Value = serde_json::from_str(&chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_x", "type": "function", "function": {"name": "read", "arguments": "{\"path\":"}}]}),
        None,
    ))
    .unwrap();
    first["model"] = serde_json::Value::Null;
    first["id"] = serde_json::Value::Null;
    let text = sse_text(&[
        ("", &first.to_string()),
        (
            "",
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_y", "function": {"arguments": "\"a\"}"}}]}),
                None,
            ),
        ),
        ("", &chunk(json!({}), Some("tool_calls"))),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let response = collect_stream("t", client(&server).stream(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![ToolCall::new("call_x", "read", r#"{"path":"a"}"#)]
    );
}

#[tokio::test]
async fn non_streamed_reasoning_is_read_under_either_name() {
    let body = json!({"id": "r", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "4", "reasoning": "2+2"}}]});
    let server = MockServer::start(vec![Scripted::json(200, body)]).await;
    let response = client(&server).complete(request()).await.unwrap();
    assert_eq!(
        response.message.content[0],
        freehold_protocol::ContentPart::Reasoning(freehold_protocol::Reasoning {
            text: "2+2".into(),
            ..Default::default()
        })
    );
    assert_eq!(response.message.text(), "4");
}

/// A provider built from configuration, as `freehold serve` builds them.
fn configured(config: &str, server: &MockServer) -> std::sync::Arc<dyn Provider> {
    let mut config: freehold_llm::config::ProviderConfig = toml::from_str(config).unwrap();
    config.base_url = Some(format!("{}/v1", server.url()));
    config
        .resolve("gpu")
        .unwrap()
        .build(&freehold_llm::HealthSettings::default())
        .unwrap()
}

/// A request to count: with a tool (counted) and `max_tokens` (which the
/// count endpoints refuse, so it must be left out).
fn count_request() -> ChatRequest {
    let mut request = request();
    request.tools = vec![read_tool()];
    request.max_tokens = Some(10);
    request
}

#[tokio::test]
async fn vllm_counts_a_chat_with_its_tokenize_endpoint() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"count": 57, "max_model_len": 32768, "tokens": [1, 2, 3]}),
    )])
    .await;
    let vllm = configured("preset = \"vllm\"", &server);
    assert_eq!(
        vllm.count_input_tokens(count_request()).await.unwrap(),
        Some(57)
    );
    let sent = &server.requests()[0];
    assert_eq!(
        sent.uri, "/tokenize",
        "beside the /v1 root, as vLLM serves it"
    );
    let body = sent.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["add_generation_prompt"], true);
    assert_eq!(body["messages"][0]["content"], "Be brief.");
    assert_eq!(body["tools"][0]["function"]["name"], "read");
    assert_eq!(body.get("max_tokens"), None, "{body}");

    // A server without such an endpoint: no count, no error, and no retry
    // of a 501. A /tokenize of another kind (llama.cpp's answers
    // `{"tokens"}` to a body without `content`) gives no count either.
    for (status, answer) in [
        (404, json!({"detail": "Not Found"})),
        (501, json!({"error": "not implemented"})),
        (200, json!({"tokens": []})),
    ] {
        let server = MockServer::start(vec![Scripted::json(status, answer)]).await;
        let vllm = configured("preset = \"vllm\"", &server);
        assert_eq!(
            vllm.count_input_tokens(request()).await.unwrap(),
            None,
            "HTTP {status}"
        );
        assert_eq!(server.requests().len(), 1, "HTTP {status}");
    }
    // A model the server does not have is an error, as for chat.
    let server = MockServer::start(vec![Scripted::json(
        404,
        json!({"object": "error", "message": "The model `gpt-test` does not exist.",
               "type": "NotFoundError", "param": null, "code": 404}),
    )])
    .await;
    let vllm = configured("preset = \"vllm\"", &server);
    let error = vllm.count_input_tokens(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn other_compatible_servers_count_only_when_told_to() {
    let server = MockServer::start(vec![Scripted::json(200, json!({"count": 9}))]).await;
    let plain = configured("kind = \"openai\"", &server);
    assert_eq!(plain.count_input_tokens(request()).await.unwrap(), None);
    assert!(server.requests().is_empty());
    let told = configured("kind = \"openai\"\ntoken_count = \"tokenize\"", &server);
    assert_eq!(told.count_input_tokens(request()).await.unwrap(), Some(9));
    assert_eq!(server.requests()[0].uri, "/tokenize");

    // A preset's endpoint can be turned off.
    let server = MockServer::start(vec![Scripted::json(200, json!({"count": 9}))]).await;
    let off = configured("preset = \"vllm\"\ntoken_count = \"none\"", &server);
    assert_eq!(off.count_input_tokens(request()).await.unwrap(), None);
    assert!(server.requests().is_empty());

    // An unknown endpoint is refused with the ones there are.
    let error = toml::from_str::<freehold_llm::config::ProviderConfig>(
        "kind = \"openai\"\ntoken_count = \"count\"",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("messages_count_tokens"), "{error}");
}

#[tokio::test]
async fn a_count_is_awaited_for_the_idle_timeout_not_a_whole_answers() {
    // A count generates nothing: a server that has not answered within the
    // idle timeout is stuck, even though a whole answer may take minutes.
    let server = MockServer::start(vec![
        Scripted::json(200, json!({"count": 3})).delay(Duration::from_secs(30)),
    ])
    .await;
    let mut options = options("gpu", format!("{}/v1", server.url()));
    options.http.idle_timeout = Duration::from_secs(1);
    options.http.response_timeout = Duration::from_secs(600);
    options.http.retry.max_retries = 0;
    let dialect = Dialect {
        token_count: TokenCountEndpoint::Tokenize,
        ..Dialect::default()
    };
    let vllm = OpenAiChatClient::new(options, dialect).unwrap();
    let started = Instant::now();
    let error = vllm.count_input_tokens(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn llama_cpp_counts_a_chat_at_anthropics_count_endpoint() {
    // llama-server serves Anthropic's count_tokens beside its Chat
    // Completions: the chat rendered by its template and tokenized as a
    // generation would be, answered by `{"input_tokens"}`.
    let server = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 41}))]).await;
    let llama = configured("preset = \"llamacpp\"", &server);
    assert_eq!(
        llama.count_input_tokens(count_request()).await.unwrap(),
        Some(41)
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/messages/count_tokens");
    let body = sent.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["system"], "Be brief.", "{body}");
    assert_eq!(body["messages"][0]["content"][0]["text"], "Hi", "{body}");
    assert_eq!(body["tools"][0]["name"], "read");
    assert_eq!(body["tools"][0]["input_schema"]["required"][0], "path");
    for refused in ["max_tokens", "stream"] {
        assert_eq!(body.get(refused), None, "{body}");
    }

    // Earlier reasoning, which the chat sends back, is counted: as a
    // thinking block, which llama-server reads as its reasoning.
    let server = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 60}))]).await;
    let llama = configured("preset = \"llamacpp\"", &server);
    let mut chain = count_request();
    chain.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            ContentPart::Reasoning(Reasoning {
                text: "Read the file first.".into(),
                ..Reasoning::default()
            }),
            ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
        ],
    });
    chain
        .messages
        .push(Message::tool_result("call_1", "fn a() {}"));
    assert_eq!(llama.count_input_tokens(chain).await.unwrap(), Some(60));
    let body = server.requests()[0].json();
    assert_eq!(
        body["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "Read the file first.", "signature": ""}),
        "{body}"
    );

    // Configured without `/v1`, as llama-server also serves its chat: the
    // count still goes where llama-server has it.
    let server = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 7}))]).await;
    let mut config: freehold_llm::config::ProviderConfig =
        toml::from_str("preset = \"llamacpp\"").unwrap();
    config.base_url = Some(server.url());
    let rooted = config
        .resolve("gpu")
        .unwrap()
        .build(&freehold_llm::HealthSettings::default())
        .unwrap();
    assert_eq!(rooted.count_input_tokens(request()).await.unwrap(), Some(7));
    assert_eq!(server.requests()[0].uri, "/v1/messages/count_tokens");

    // A llama-server from before the endpoint (404), a server answering
    // something else there, or one that refuses or fails on the count (a
    // template error, say) while its chat may work: no count, no error, and
    // the gateway estimates.
    for (status, answer) in [
        (
            404,
            json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}),
        ),
        (200, json!({"tokens": [1, 2]})),
        (200, json!({"input_tokens": "many"})),
        (
            400,
            json!({"error": {"code": 400, "message": "bad template", "type": "invalid_request_error"}}),
        ),
        (
            500,
            json!({"error": {"code": 500, "message": "no mmproj", "type": "server_error"}}),
        ),
    ] {
        let server = MockServer::start(vec![Scripted::json(status, answer.clone())]).await;
        let llama = configured("preset = \"llamacpp\"\nmax_retries = 0", &server);
        assert_eq!(
            llama.count_input_tokens(request()).await.unwrap(),
            None,
            "HTTP {status}: {answer}"
        );
    }
    // A wrong key is the server's answer to anything: an error.
    let server = MockServer::start(vec![Scripted::json(
        401,
        json!({"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}),
    )])
    .await;
    let llama = configured("preset = \"llamacpp\"", &server);
    let error = llama.count_input_tokens(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
}

/// vLLM and llama.cpp render the model's own chat template, and some (Qwen,
/// Gemma, Mistral) refuse a system message after the first, which Claude
/// Code sends: the request is sent once more with it as user text.
#[tokio::test]
async fn a_refused_late_system_message_is_sent_again_as_user_text() {
    let refusal = || {
        Scripted::json(
            400,
            json!({"error": {"message": "System message must be at the beginning.",
                             "type": "BadRequestError", "code": 400}}),
        )
    };
    let conversation = vec![
        Message::system("Be brief."),
        Message::user("Hi"),
        Message::system("cwd: /w"),
    ];
    for stream in [true, false] {
        let (answer, expected) = if stream {
            (
                Scripted::sse(&text_stream(), Split::Whole),
                "Héllo, wörld ✓",
            )
        } else {
            let whole = json!({"id": "c", "object": "chat.completion", "created": 1,
                "model": "gpt-test", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello!"}}]});
            (Scripted::json(200, whole), "Hello!")
        };
        let server = MockServer::start(vec![refusal(), answer]).await;
        let request = ChatRequest::new("gpt-test", conversation.clone());
        let text = if stream {
            let (events, error) = drain(client(&server).stream(request).await.unwrap()).await;
            assert!(error.is_none(), "{error:?}");
            text_of(&events)
        } else {
            client(&server)
                .complete(request)
                .await
                .unwrap()
                .message
                .text()
        };
        assert_eq!(text, expected, "stream: {stream}");
        let sent: Vec<serde_json::Value> = server
            .requests()
            .iter()
            .map(|request| request.json()["messages"].clone())
            .collect();
        assert_eq!(sent.len(), 2, "stream: {stream}");
        assert_eq!(sent[0][2]["role"], "system", "first as asked: {}", sent[0]);
        assert_eq!(
            sent[1],
            json!([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Hi\n\ncwd: /w"}]),
            "stream: {stream}"
        );
    }

    // Without a late system message, a refusal is not sent again; when the
    // second try fails too, the first refusal is the error.
    let server = MockServer::start(vec![refusal()]).await;
    let error = client(&server).complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(server.requests().len(), 1);
    let server = MockServer::start(vec![
        refusal(),
        Scripted::json(400, json!({"error": {"message": "another thing"}})),
    ])
    .await;
    let error = client(&server)
        .complete(ChatRequest::new("gpt-test", conversation.clone()))
        .await
        .unwrap_err();
    assert!(error.message.contains("System message"), "{error:?}");
    assert_eq!(server.requests().len(), 2);

    // A second try refused for the context's length is reported as such,
    // so that the agent compacts its conversation.
    let server = MockServer::start(vec![
        refusal(),
        Scripted::json(
            400,
            json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9100 tokens.", "code": "context_length_exceeded"}}),
        ),
    ])
    .await;
    let error = client(&server)
        .complete(ChatRequest::new("gpt-test", conversation.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::ContextLengthExceeded { .. }),
        "{error:?}"
    );

    // A second try that fails otherwise is reported as itself, so that the
    // router may retry it or fall back.
    let server = MockServer::start(vec![
        refusal(),
        Scripted::json(401, json!({"error": {"message": "key revoked"}})),
    ])
    .await;
    let error = client(&server)
        .complete(ChatRequest::new("gpt-test", conversation))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication, "{error:?}");

    // Codex's two leading system messages (instructions and its developer
    // message) become one; a refusal that is not a 400, a 422 or
    // llama.cpp's 500 for a template (a 413 body too large) is not sent
    // again.
    let two_first = vec![
        Message::system("Be brief."),
        Message::system("Skills."),
        Message::user("Hi"),
    ];
    let server = MockServer::start(vec![
        refusal(),
        Scripted::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "ok"}}]}),
        ),
    ])
    .await;
    client(&server)
        .complete(ChatRequest::new("gpt-test", two_first.clone()))
        .await
        .unwrap();
    assert_eq!(
        server.requests()[1].json()["messages"],
        json!([{"role": "system", "content": "Be brief.\n\nSkills."},
               {"role": "user", "content": "Hi"}])
    );
    let server = MockServer::start(vec![Scripted::json(
        413,
        json!({"error": {"message": "request entity too large"}}),
    )])
    .await;
    let error = client(&server)
        .complete(ChatRequest::new("gpt-test", two_first))
        .await
        .unwrap_err();
    assert_eq!(error.status, Some(413), "{error:?}");
    assert_eq!(server.requests().len(), 1);
}

/// What llama.cpp's server answers when a Qwen3 template refuses a late
/// system message: a 500 of its own, the template's words inside.
fn llama_cpp_template_refusal() -> Scripted {
    Scripted::json(
        500,
        json!({"error": {"code": 500, "type": "server_error", "message":
            "\n------------\nWhile executing CallExpression at line 85, column 32 in source:\n\
             ...first %}\n    {{- raise_exception('System message must be at the beginnin...\n\
             Error: Jinja Exception: System message must be at the beginning."}}),
    )
}

fn answered(text: &str) -> Scripted {
    Scripted::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text}}]}),
    )
}

/// A conversation with a system message inside, as Claude Code sends.
fn late_system_conversation(model: &str) -> ChatRequest {
    ChatRequest::new(
        model,
        vec![
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::system("cwd: /w"),
        ],
    )
}

fn has_late_system_message(body: &serde_json::Value) -> bool {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .any(|message| message["role"] == "system")
}

/// llama.cpp's server reports a template's refusal as a 500: it is the
/// request's fault, not retried as a server failure, and sent folded.
#[tokio::test]
async fn a_template_refusal_reported_as_a_500_is_folded_not_retried() {
    let server = MockServer::start(vec![llama_cpp_template_refusal(), answered("Hello!")]).await;
    let answer = client(&server)
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap();
    assert_eq!(answer.message.text(), "Hello!");
    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 2, "no retry of the same refusal: {sent:?}");
    assert!(has_late_system_message(&sent[0]));
    assert!(!has_late_system_message(&sent[1]), "{}", sent[1]);

    // Refused folded too: the template's refusal is the error, as a
    // request's (400), not a server's failure.
    let server = MockServer::start(vec![
        llama_cpp_template_refusal(),
        llama_cpp_template_refusal(),
    ])
    .await;
    let error = client(&server)
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error:?}");
    assert!(error.message.contains("System message"), "{error:?}");
    assert_eq!(server.requests().len(), 2);

    // Any other 500 is still the server's failure, retried, not folded.
    let server = MockServer::start(vec![Scripted::json(
        500,
        json!({"error": {"code": 500, "type": "server_error", "message": "out of memory"}}),
    )])
    .await;
    let error = client(&server)
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server, "{error:?}");
    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 3, "one attempt and two retries");
    assert!(sent.iter().all(has_late_system_message));
}

/// Once a model's template has taken a conversation only folded, its later
/// conversations are folded before they are sent, not refused first; other
/// models still go as asked.
#[tokio::test]
async fn a_model_that_needed_folding_is_folded_from_then_on() {
    let server = MockServer::start(vec![
        llama_cpp_template_refusal(),
        answered("one"),
        answered("two"),
        answered("three"),
        answered("four"),
    ])
    .await;
    let client = client(&server);
    for expected in ["one", "two"] {
        let answer = client
            .complete(late_system_conversation("qwen3"))
            .await
            .unwrap();
        assert_eq!(answer.message.text(), expected);
    }
    // A clone (as the router holds) shares what was learned.
    let clone = client.clone();
    let answer = clone
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap();
    assert_eq!(answer.message.text(), "three");
    let answer = client
        .complete(late_system_conversation("another-model"))
        .await
        .unwrap();
    assert_eq!(answer.message.text(), "four");

    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    let late: Vec<bool> = sent.iter().map(has_late_system_message).collect();
    assert_eq!(late, [true, false, false, false, true], "{sent:?}");

    // A conversation of the learned model that has nothing to fold goes
    // once, as it is (the mock repeats its last answer).
    let plain = ChatRequest::new(
        "qwen3",
        vec![Message::system("Be brief."), Message::user("Hi")],
    );
    client.complete(plain).await.unwrap();
    let sent = server.requests();
    assert_eq!(sent.len(), 6);
    assert_eq!(
        sent[5].json()["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
}

/// A stream is folded at once too; a remembered model whose folded
/// conversation is refused gets that refusal, without another try.
#[tokio::test]
async fn a_remembered_model_streams_folded_and_its_refusals_are_final() {
    let server = MockServer::start(vec![
        llama_cpp_template_refusal(),
        answered("learned"),
        Scripted::sse(&text_stream(), Split::Whole),
        Scripted::json(400, json!({"error": {"message": "tools: invalid schema"}})),
        answered("never sent"),
    ])
    .await;
    let client = client(&server);
    client
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap();
    let stream = client
        .stream(late_system_conversation("qwen3"))
        .await
        .unwrap();
    let (events, error) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    let error = client
        .complete(late_system_conversation("qwen3"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("invalid schema"), "{error:?}");

    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    let late: Vec<bool> = sent.iter().map(has_late_system_message).collect();
    assert_eq!(late, [true, false, false, false], "{sent:?}");
    assert_eq!(sent[2]["stream"], true);
}

/// vLLM's `/tokenize` renders the template as its chat does: a count
/// refused for a late system message is asked again folded. Counts follow
/// what the chat taught, and teach nothing themselves.
#[tokio::test]
async fn vllm_counts_a_conversation_its_template_takes_only_folded() {
    let refusal = || {
        Scripted::json(
            400,
            json!({"object": "error", "type": "BadRequestError", "code": 400,
                   "message": "System message must be at the beginning."}),
        )
    };
    let count = || {
        Scripted::json(
            200,
            json!({"count": 31, "max_model_len": 32768, "tokens": []}),
        )
    };
    let server = MockServer::start(vec![
        refusal(),
        count(),
        refusal(),
        count(),
        // The chat, which teaches.
        refusal(),
        answered("ok"),
        count(),
    ])
    .await;
    let vllm = configured("preset = \"vllm\"", &server);
    for _ in 0..2 {
        assert_eq!(
            vllm.count_input_tokens(late_system_conversation("qwen3"))
                .await
                .unwrap(),
            Some(31)
        );
    }
    vllm.complete(late_system_conversation("qwen3"))
        .await
        .unwrap();
    assert_eq!(
        vllm.count_input_tokens(late_system_conversation("qwen3"))
            .await
            .unwrap(),
        Some(31)
    );
    let sent: Vec<(String, bool)> = server
        .requests()
        .iter()
        .map(|request| {
            (
                request.uri.clone(),
                has_late_system_message(&request.json()),
            )
        })
        .collect();
    let counted = |late| ("/tokenize".to_owned(), late);
    let chatted = |late| ("/v1/chat/completions".to_owned(), late);
    assert_eq!(
        sent,
        [
            counted(true),
            counted(false),
            counted(true),
            counted(false),
            chatted(true),
            chatted(false),
            counted(false),
        ]
    );
}

/// A server that takes any model name cannot make the client remember
/// without bound: past 64 models, the others are folded after each
/// refusal, as before anything was learned.
#[tokio::test]
async fn the_memory_of_models_that_need_folding_is_bounded() {
    let mut script = Vec::new();
    for _ in 0..66 {
        script.push(llama_cpp_template_refusal());
        script.push(answered("ok"));
    }
    let server = MockServer::start(script).await;
    let client = client(&server);
    for model in 0..65 {
        client
            .complete(late_system_conversation(&format!("model-{model}")))
            .await
            .unwrap();
    }
    assert_eq!(
        server.requests().len(),
        130,
        "each refused once, then folded"
    );
    // The 65th was not remembered: refused again.
    client
        .complete(late_system_conversation("model-64"))
        .await
        .unwrap();
    let sent: Vec<bool> = server
        .requests()
        .iter()
        .skip(130)
        .map(|request| has_late_system_message(&request.json()))
        .collect();
    assert_eq!(sent, [true, false]);
    // The first is still remembered.
    client
        .complete(late_system_conversation("model-0"))
        .await
        .unwrap();
    // (The mock repeats its last answer past its script.)
    assert!(!has_late_system_message(
        &server.requests().last().unwrap().json()
    ));
    assert_eq!(server.requests().len(), 133);
}

/// A refusal (structured outputs) is the answer's text and ends it as a
/// refusal, whole or streamed, so that the gateway can hand it to OpenAI
/// clients as `refusal` and to Anthropic clients as `stop_reason: refusal`.
#[tokio::test]
async fn refusals_end_the_answer_as_refusals() {
    let words = "I'm sorry, I can't help with that.";
    let whole = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": null, "refusal": words}}]});
    let server = MockServer::start(vec![Scripted::json(200, whole)]).await;
    let response = client(&server).complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::Refusal);
    assert_eq!(response.message.text(), words);

    let streamed = sse_text(&[
        (
            "",
            &chunk(json!({"role": "assistant", "refusal": ""}), None),
        ),
        ("", &chunk(json!({"refusal": "I'm sorry, "}), None)),
        (
            "",
            &chunk(json!({"refusal": "I can't help with that."}), None),
        ),
        ("", &chunk(json!({}), Some("stop"))),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&streamed, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text_of(&events), words);
    // Marked as a refusal before its first words, for the gateway's
    // encoders (OpenAI clients get it as `refusal`).
    let marked = events
        .iter()
        .position(|event| *event == StreamEvent::RefusalStart)
        .unwrap();
    assert!(
        matches!(&events[marked + 1], StreamEvent::TextDelta { text } if text == "I'm sorry, "),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::Refusal
        })
    );
}

/// gpt-oss served under a name that does not say so: its template refuses
/// reasoning beside an assistant message's text and tool calls (llama.cpp
/// reports it as a 500), and the request is sent once more without it.
#[tokio::test]
async fn a_template_refusing_reasoning_beside_text_is_asked_again_without() {
    let refusal = Scripted::json(
        500,
        json!({"error": {"code": 500, "type": "server_error", "message":
            "Cannot pass both content and thinking in an assistant message with tool calls! \
             Put the final response in the content field."}}),
    );
    let answer = Scripted::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 0, "model": "local",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."},
                         "finish_reason": "stop"}]}),
    );
    let server = MockServer::start(vec![refusal, answer]).await;
    let llama = configured("preset = \"llamacpp\"", &server);
    let mut chain = ChatRequest::new(
        "local",
        vec![
            Message::user("Fix the test."),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "Read the file first.".into(),
                        ..Reasoning::default()
                    }),
                    ContentPart::Text {
                        text: "Reading it.".into(),
                    },
                    ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                ],
            },
            Message::tool_result("call_1", "fn a() {}"),
        ],
    );
    chain.tools = vec![read_tool()];
    let answer = llama.complete(chain).await.unwrap();
    assert_eq!(answer.message.text(), "Done.");
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].json()["messages"][1]["reasoning_content"],
        "Read the file first."
    );
    let again = sent[1].json();
    assert_eq!(
        again["messages"][1].get("reasoning_content"),
        None,
        "{again}"
    );
    assert_eq!(again["messages"][1]["content"], "Reading it.", "{again}");
}

/// A client of OpenAI's own API ([`Dialect::openai_api`]), as the `openai`
/// preset makes it.
fn openai_api_client(server: &MockServer) -> OpenAiChatClient {
    let options = options("openai", format!("{}/v1", server.url()))
        .with_key(ApiKey::new("sk-test-key-0123456789"));
    let dialect = Dialect {
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        openai_api: true,
        ..Dialect::default()
    };
    OpenAiChatClient::new(options, dialect).unwrap()
}

/// OpenAI's 400 for an effort the model does not take.
fn unsupported_effort(sent: &str, model: &str, takes: &str) -> Scripted {
    Scripted::json(
        400,
        json!({"error": {
            "message": format!(
                "Unsupported value: '{sent}' is not supported with the '{model}' model. \
                 Supported values are: {takes}."
            ),
            "type": "invalid_request_error", "param": "reasoning_effort",
            "code": "unsupported_value"}}),
    )
}

fn asking_for(model: &str, effort: ReasoningEffort) -> ChatRequest {
    let mut request = ChatRequest::new(model, vec![Message::user("Hi")]);
    request.reasoning = Some(effort);
    request
}

/// No reasoning asks each of OpenAI's models for its least effort: `none`
/// first (gpt-5.1 and later), then, once a model refuses it and names what
/// it takes, the nearest of those, from then on without a refusal.
#[tokio::test]
async fn no_reasoning_asks_openai_models_for_the_least_they_take() {
    let server = MockServer::start(vec![
        unsupported_effort("none", "gpt-5.1-codex", "'low', 'medium', and 'high'"),
        answered("one"),
        answered("two"),
        answered("three"),
        answered("four"),
    ])
    .await;
    let openai = openai_api_client(&server);
    for expected in ["one", "two"] {
        let answer = openai
            .complete(asking_for("gpt-5.1-codex", ReasoningEffort::Off))
            .await
            .unwrap();
        assert_eq!(answer.message.text(), expected);
    }
    // An effort above what it takes comes down to its most.
    let mut xhigh = asking_for("gpt-5.1-codex", ReasoningEffort::High);
    xhigh.reasoning_effort_name = Some("xhigh".into());
    openai.complete(xhigh).await.unwrap();
    // gpt-5 takes `minimal`, asked at once.
    openai
        .complete(asking_for("gpt-5-mini", ReasoningEffort::Off))
        .await
        .unwrap();
    let efforts: Vec<serde_json::Value> = server
        .requests()
        .iter()
        .map(|r| r.json()["reasoning_effort"].clone())
        .collect();
    assert_eq!(
        efforts,
        [
            json!("none"),
            json!("low"),
            json!("low"),
            json!("high"),
            json!("minimal")
        ]
    );

    // Other servers get no effort for no reasoning, as before.
    let server = MockServer::start(vec![answered("plain")]).await;
    client(&server)
        .complete(asking_for("qwen3", ReasoningEffort::Off))
        .await
        .unwrap();
    assert!(
        server.requests()[0]
            .json()
            .get("reasoning_effort")
            .is_none()
    );
}

/// A model that takes no effort at all is then sent none; a refusal that
/// names another parameter is the answer, not tried again.
#[tokio::test]
async fn a_model_that_takes_no_effort_is_sent_none_and_other_refusals_stand() {
    let server = MockServer::start(vec![
        Scripted::json(
            400,
            json!({"error": {"message": "Unsupported parameter: 'reasoning_effort' is not \
                   supported with this model.", "type": "invalid_request_error",
                   "param": "reasoning_effort", "code": "unsupported_parameter"}}),
        ),
        answered("without"),
        Scripted::json(
            400,
            json!({"error": {"message": "Unsupported value: 'temperature' does not support 0.5 \
                   with this model. Only the default (1) value is supported.",
                   "type": "invalid_request_error", "param": "temperature",
                   "code": "unsupported_value"}}),
        ),
    ])
    .await;
    let openai = openai_api_client(&server);
    let answer = openai
        .complete(asking_for("gpt-4.1-2025", ReasoningEffort::Low))
        .await
        .unwrap();
    assert_eq!(answer.message.text(), "without");
    let error = openai
        .complete(asking_for("gpt-5.1", ReasoningEffort::Low))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error:?}");
    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0]["reasoning_effort"], "low");
    assert!(sent[1].get("reasoning_effort").is_none(), "{}", sent[1]);
    assert_eq!(sent[2]["reasoning_effort"], "low");
}

/// A server that leaves a reasoning model's thinking in its text (vLLM
/// without a reasoning parser, Groq's `raw` format) has it moved to
/// reasoning, streamed and whole; OpenAI's own API is taken at its word.
#[tokio::test]
async fn thinking_left_in_the_text_is_reasoning() {
    let streamed = sse_text(&[
        (
            "",
            &chunk(
                json!({"role": "assistant", "content": "<think>\nAdd th"}),
                None,
            ),
        ),
        ("", &chunk(json!({"content": "em.</thi"}), None)),
        ("", &chunk(json!({"content": "nk>\n\nIt is 5."}), None)),
        ("", &chunk(json!({}), Some("stop"))),
        ("", "[DONE]"),
    ]);
    let thought = "<think>\nAdd them.</think>\n\nIt is 5.";
    let server = MockServer::start(vec![
        Scripted::sse(&streamed, Split::Every(17)),
        answered(thought),
        answered(thought),
    ])
    .await;
    let client = client(&server);
    let (events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    let answer = collect_stream(
        "t",
        Box::pin(futures::stream::iter(events.into_iter().map(Ok))),
    )
    .await
    .unwrap();
    let whole = client.complete(request()).await.unwrap();
    for answer in [answer, whole] {
        assert_eq!(answer.message.text(), "It is 5.");
        assert!(
            matches!(&answer.message.content[0], ContentPart::Reasoning(r) if r.text == "Add them."),
            "{:?}",
            answer.message.content
        );
    }
    let openai = openai_api_client(&server);
    let answer = openai.complete(request()).await.unwrap();
    assert_eq!(answer.message.text(), thought);
}

/// Groq's refusal of an effort, in its words.
fn groq_refusal(message: &str) -> Scripted {
    Scripted::json(
        400,
        json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}

/// Groq's models take different efforts, and say which when refused: its
/// Qwen models `none` and `default` (an effort asked becomes `default`,
/// reasoning at the model's measure), gpt-oss `low` to `high` (no reasoning
/// becomes `low`, its least), and the models that do not reason none at
/// all. Each is refused once, then sent what it takes. The preset sends
/// `none` for no reasoning, as OpenRouter takes it.
#[tokio::test]
async fn groqs_models_are_sent_the_efforts_their_refusals_name() {
    let server = MockServer::start(vec![
        groq_refusal("`reasoning_effort` must be one of `none` or `default`"),
        answered("qwen thought"),
        answered("qwen again"),
        answered("qwen without"),
        groq_refusal("`reasoning_effort` must be one of `low`, `medium`, or `high`"),
        answered("gpt-oss at its least"),
        groq_refusal("`reasoning_effort` is not supported with this model"),
        answered("llama"),
    ])
    .await;
    let preset = freehold_llm::presets::preset("groq").unwrap();
    assert!(preset.dialect.none_for_off);
    let options = options("groq", format!("{}/v1", server.url()));
    let groq = OpenAiChatClient::new(options, preset.dialect).unwrap();
    let asks = [
        ("qwen/qwen3.6-27b", ReasoningEffort::High, "qwen thought"),
        ("qwen/qwen3.6-27b", ReasoningEffort::Medium, "qwen again"),
        ("qwen/qwen3.6-27b", ReasoningEffort::Off, "qwen without"),
        (
            "openai/gpt-oss-120b",
            ReasoningEffort::Off,
            "gpt-oss at its least",
        ),
        ("llama-3.3-70b-versatile", ReasoningEffort::Low, "llama"),
    ];
    for (model, effort, expected) in asks {
        let answer = groq.complete(asking_for(model, effort)).await.unwrap();
        assert_eq!(answer.message.text(), expected, "{model}");
    }
    let sent: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.json()["reasoning_effort"].as_str().map(str::to_owned))
        .collect();
    let expected = [
        Some("high"),
        Some("default"),
        Some("default"),
        Some("none"),
        Some("none"),
        Some("low"),
        Some("low"),
        None,
    ];
    assert_eq!(
        sent,
        expected.map(|effort| effort.map(str::to_owned)).to_vec()
    );
}

/// OpenRouter takes `none` for no reasoning, but a model it marks as always
/// reasoning refuses it: that model is sent `minimal` from then on,
/// streamed or not, and an effort asked of it still goes as asked.
#[tokio::test]
async fn openrouters_models_that_must_reason_are_sent_their_least() {
    let streamed = sse_text(&[
        (
            "",
            &chunk(json!({"role": "assistant", "content": "streamed"}), None),
        ),
        ("", &chunk(json!({}), Some("stop"))),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![
        groq_refusal("Reasoning is mandatory for this endpoint and cannot be disabled."),
        Scripted::sse(&streamed, Split::Every(13)),
        answered("whole"),
        answered("high"),
    ])
    .await;
    let preset = freehold_llm::presets::preset("openrouter").unwrap();
    let options = options("openrouter", format!("{}/v1", server.url()));
    let openrouter = OpenAiChatClient::new(options, preset.dialect).unwrap();
    let model = "openai/gpt-5.1";
    let (events, error) = drain(
        openrouter
            .stream(asking_for(model, ReasoningEffort::Off))
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text_of(&events), "streamed");
    let whole = openrouter
        .complete(asking_for(model, ReasoningEffort::Off))
        .await
        .unwrap();
    assert_eq!(whole.message.text(), "whole");
    let high = openrouter
        .complete(asking_for(model, ReasoningEffort::High))
        .await
        .unwrap();
    assert_eq!(high.message.text(), "high");
    let sent: Vec<String> = server
        .requests()
        .iter()
        .map(|r| {
            r.json()["reasoning_effort"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        })
        .collect();
    assert_eq!(sent, ["none", "minimal", "minimal", "high"]);
}

/// OpenAI's refusal of reasoning beside function tools in Chat Completions.
fn not_beside_tools(model: &str) -> Scripted {
    Scripted::json(
        400,
        json!({"error": {"message": format!(
            "Function tools with reasoning_effort are not supported for {model} in \
             /v1/chat/completions. Please use /v1/responses instead."),
            "type": "invalid_request_error", "param": "reasoning_effort", "code": null}}),
    )
}

/// A non-streamed Responses API answer with `text`.
fn responses_answer(text: &str) -> Scripted {
    Scripted::json(
        200,
        json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
               "model": "gpt-5.4", "output": [{"id": "msg_1", "type": "message",
               "status": "completed", "role": "assistant", "content": [{"type": "output_text",
               "text": text, "annotations": []}]}],
               "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}}),
    )
}

/// OpenAI's newer models refuse reasoning beside function tools in Chat
/// Completions (even their default effort): on OpenAI's own API such a
/// model's requests with tools go through the Responses API, with the
/// effort asked, from then on; those without tools stay.
#[tokio::test]
async fn a_model_refusing_reasoning_beside_tools_is_asked_through_the_responses_api() {
    let server = MockServer::start(vec![
        not_beside_tools("gpt-5.4"),
        responses_answer("through responses"),
        responses_answer("again"),
        answered("plain chat"),
    ])
    .await;
    let openai = openai_api_client(&server);
    let mut with_tools = asking_for("gpt-5.4", ReasoningEffort::High);
    with_tools.tools = vec![read_tool()];
    let answer = openai.complete(with_tools.clone()).await.unwrap();
    assert_eq!(answer.message.text(), "through responses");
    let answer = openai.complete(with_tools).await.unwrap();
    assert_eq!(answer.message.text(), "again");
    let answer = openai
        .complete(asking_for("gpt-5.4", ReasoningEffort::High))
        .await
        .unwrap();
    assert_eq!(answer.message.text(), "plain chat");

    let sent = server.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/responses",
            "/v1/chat/completions"
        ]
    );
    let through = sent[1].json();
    assert_eq!(through["reasoning"]["effort"], "high", "{through}");
    assert_eq!(through["tools"][0]["name"], "read", "{through}");
    assert_eq!(through["store"], false);
    assert_eq!(sent[3].json()["reasoning_effort"], "high");
}

/// Elsewhere (an OpenAI-compatible server that words its refusal as
/// OpenAI does), such a model's requests with tools are sent with `none`.
#[tokio::test]
async fn elsewhere_a_model_refusing_reasoning_beside_tools_gets_none_with_tools() {
    let server = MockServer::start(vec![
        not_beside_tools("gpt-5.4"),
        answered("with none"),
        answered("again"),
    ])
    .await;
    let compatible = client(&server);
    let mut with_tools = asking_for("gpt-5.4", ReasoningEffort::Medium);
    with_tools.tools = vec![read_tool()];
    for expected in ["with none", "again"] {
        let answer = compatible.complete(with_tools.clone()).await.unwrap();
        assert_eq!(answer.message.text(), expected);
    }
    let efforts: Vec<serde_json::Value> = server
        .requests()
        .iter()
        .map(|r| r.json()["reasoning_effort"].clone())
        .collect();
    assert_eq!(efforts, [json!("medium"), json!("none"), json!("none")]);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.uri == "/v1/chat/completions")
    );
}

/// The settings only OpenAI's API reads reach it, and no other server.
#[tokio::test]
async fn prompt_cache_key_verbosity_and_service_tier_reach_openai_only() {
    let mut request = asking_for("gpt-5.1", ReasoningEffort::Low);
    request.cache_key = Some("019a-conversation".into());
    request.verbosity = Some(freehold_protocol::Verbosity::Low);
    request.service_tier = Some("flex".into());

    let server = MockServer::start(vec![answered("a"), answered("b"), answered("c")]).await;
    let openai = openai_api_client(&server);
    openai.complete(request.clone()).await.unwrap();
    // Not to a model before gpt-5 (verbosity), nor a tier priced above the
    // catalog's.
    let mut older = request.clone();
    older.model = "gpt-4.1".into();
    older.reasoning = None;
    older.service_tier = Some("priority".into());
    openai.complete(older).await.unwrap();
    let sent: Vec<serde_json::Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["prompt_cache_key"], "019a-conversation");
    assert_eq!(sent[0]["verbosity"], "low");
    assert_eq!(sent[0]["service_tier"], "flex");
    assert_eq!(sent[1]["prompt_cache_key"], "019a-conversation");
    assert!(sent[1].get("verbosity").is_none(), "{}", sent[1]);
    assert!(sent[1].get("service_tier").is_none(), "{}", sent[1]);

    let server = MockServer::start(vec![answered("d")]).await;
    client(&server).complete(request).await.unwrap();
    let body = server.requests()[0].json();
    for field in ["prompt_cache_key", "verbosity", "service_tier"] {
        assert!(body.get(field).is_none(), "{field}: {body}");
    }
}

/// A server that takes 4 stop sequences (OpenAI's, Groq's) gets the first
/// 4; the client ends the answer at the others as it streams, and drops
/// the request there, so the server stops generating.
#[tokio::test]
async fn stop_sequences_past_the_servers_limit_end_the_stream_here() {
    let mut deltas = vec![
        chunk(
            json!({"role": "assistant", "content": "Thought: add them\nObs"}),
            None,
        ),
        chunk(json!({"content": "ervation: 5"}), None),
    ];
    // A long rest (6 s at 20 ms a chunk) that must never be waited for.
    deltas.extend((0..300).map(|i| chunk(json!({"content": format!(" w{i}")}), None)));
    let events: Vec<(&str, &str)> = deltas.iter().map(|d| ("", d.as_str())).collect();
    let mut script = Scripted::sse(&sse_text(&events), Split::Every(deltas[0].len() + 8));
    script.chunk_delay = Duration::from_millis(20);
    let server = MockServer::start(vec![script, answered("1, 2, 3 END 4")]).await;
    let options = options("test-openai", format!("{}/v1", server.url()));
    let dialect = Dialect {
        max_stop_sequences: Some(4),
        ..Dialect::default()
    };
    let client = OpenAiChatClient::new(options, dialect).unwrap();
    let mut asked = request();
    asked.stop = ["s1", "s2", "s3", "s4", "\nObservation:", "END"]
        .map(String::from)
        .to_vec();

    let started = Instant::now();
    let (events, error) = drain(client.stream(asked.clone()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "Thought: add them");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::StopSequence(Some("\nObservation:".into()))
        })
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    while server.aborted() == 0 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.aborted(), 1, "the server never saw the cancellation");

    let answer = client.complete(asked).await.unwrap();
    assert_eq!(answer.message.text(), "1, 2, 3 ");
    assert_eq!(
        answer.stop_reason,
        StopReason::StopSequence(Some("END".into()))
    );

    for sent in server.requests() {
        assert_eq!(sent.json()["stop"], json!(["s1", "s2", "s3", "s4"]));
    }
}

/// vLLM names the stop string that ended an answer in `stop_reason`, SGLang
/// in `matched_stop`: that answer stopped at a stop sequence, and which one
/// is kept. A number there is a stop token, text that is none of the
/// request's stop sequences the server's own (SGLang adds its chat
/// template's), and a plain `stop` the end of the answer; calls made are
/// the answer's end whatever stopped its text.
#[tokio::test]
async fn the_stop_string_a_server_names_is_the_stop_sequence() {
    let named = |fields: serde_json::Value| {
        let mut body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Thought: add"}}]});
        for (field, value) in fields.as_object().unwrap() {
            body["choices"][0][field] = value.clone();
        }
        Scripted::json(200, body)
    };
    let with_call = Scripted::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "END",
                         "message": {"role": "assistant", "content": null, "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": "read", "arguments": "{}"}}]}}]}),
    );
    let last_chunk = |field: &str, named: &str| {
        let mut chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        chunk["choices"][0][field] = json!(named);
        chunk.to_string()
    };
    let streamed = |field: &str, named: &str| {
        sse_text(&[
            (
                "",
                &chunk(
                    json!({"role": "assistant", "content": "Thought: add"}),
                    None,
                ),
            ),
            ("", &last_chunk(field, named)),
            ("", "[DONE]"),
        ])
    };
    let server = MockServer::start(vec![
        named(json!({"stop_reason": "\nObservation:"})),
        named(json!({"matched_stop": "END"})),
        named(json!({"stop_reason": null, "matched_stop": "END"})),
        named(json!({"stop_reason": 128009})),
        named(json!({"stop_reason": null})),
        named(json!({"matched_stop": "<|im_end|>"})),
        with_call,
        Scripted::sse(&streamed("stop_reason", "\nObservation:"), Split::Every(11)),
        Scripted::sse(
            &streamed("matched_stop", "\nObservation:"),
            Split::Every(11),
        ),
        Scripted::sse(&streamed("matched_stop", "<|im_end|>"), Split::Every(11)),
    ])
    .await;
    let client = client(&server);
    let mut asked = request();
    asked.stop = vec!["\nObservation:".into(), "END".into()];
    let reasons = [
        StopReason::StopSequence(Some("\nObservation:".into())),
        StopReason::StopSequence(Some("END".into())),
        StopReason::StopSequence(Some("END".into())),
        StopReason::EndTurn,
        StopReason::EndTurn,
        StopReason::EndTurn,
        StopReason::ToolUse,
    ];
    for (turn, expected) in reasons.into_iter().enumerate() {
        let answer = client.complete(asked.clone()).await.unwrap();
        assert_eq!(answer.stop_reason, expected, "answer {turn}");
    }
    let streamed_reasons = [
        StopReason::StopSequence(Some("\nObservation:".into())),
        StopReason::StopSequence(Some("\nObservation:".into())),
        StopReason::EndTurn,
    ];
    for expected in streamed_reasons {
        let (events, error) = drain(client.stream(asked.clone()).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(events.last(), Some(&StreamEvent::Stop { reason: expected }));
    }
}

/// A model refused for its stop sequences is asked again with as many as
/// the refusal says the server takes (OpenAI's reasoning models: none;
/// vLLM: 4 by default), the others end its answer here, and its later
/// requests go that way at once; other models' still as asked.
#[tokio::test]
async fn a_model_refused_for_its_stop_sequences_gets_them_applied_from_then_on() {
    let openai_refusal = json!({"error": {
        "message": "Unsupported parameter: 'stop' is not supported with this model.",
        "type": "invalid_request_error", "param": "stop", "code": "unsupported_parameter"}});
    let vllm_refusal = json!({"object": "error", "type": "BadRequestError", "param": null, "code": 400,
        "message": "1 validation error for ChatCompletionRequest\nstop\n  List should have at most 4 items after validation, not 5"});
    let streamed = sse_text(&[
        (
            "",
            &chunk(
                json!({"role": "assistant", "content": "Other model. E"}),
                None,
            ),
        ),
        ("", &chunk(json!({"content": "ND more"}), None)),
        ("", &chunk(json!({}), Some("stop"))),
        ("", "[DONE]"),
    ]);
    let server = MockServer::start(vec![
        Scripted::json(400, openai_refusal),
        answered("Step one. Step two."),
        answered("Again. And again."),
        Scripted::json(400, vllm_refusal),
        Scripted::sse(&streamed, Split::Every(9)),
        answered("Once more END"),
        answered("Unlearned. Yes."),
    ])
    .await;
    let client = client(&server);
    let asking = |model: &str, stop: &[&str]| {
        let mut asked = request();
        asked.model = model.into();
        asked.stop = stop.iter().map(|s| (*s).to_owned()).collect();
        asked
    };
    let answer = client.complete(asking("o3", &[". "])).await.unwrap();
    assert_eq!(answer.message.text(), "Step one");
    assert_eq!(
        answer.stop_reason,
        StopReason::StopSequence(Some(". ".into()))
    );
    let answer = client.complete(asking("o3", &[". "])).await.unwrap();
    assert_eq!(answer.message.text(), "Again");

    let five = ["s1", "s2", "s3", "s4", "END"];
    let stream = client.stream(asking("qwen", &five)).await.unwrap();
    let (events, error) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "Other model. ");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::StopSequence(Some("END".into()))
        })
    );
    let answer = client.complete(asking("qwen", &five)).await.unwrap();
    assert_eq!(answer.message.text(), "Once more ");
    // A model that was never refused gets its stop sequences.
    let answer = client.complete(asking("llama", &[". "])).await.unwrap();
    assert_eq!(answer.message.text(), "Unlearned. Yes.");

    let stops: Vec<serde_json::Value> = server
        .requests()
        .iter()
        .map(|sent| sent.json()["stop"].clone())
        .collect();
    let null = serde_json::Value::Null;
    let four = json!(["s1", "s2", "s3", "s4"]);
    assert_eq!(
        stops,
        [
            json!([". "]),
            null.clone(),
            null,
            json!(five),
            four.clone(),
            four,
            json!([". "])
        ]
    );
}

/// A refusal for another reason is not taken for one of the stop
/// sequences: with none in the request, it is the answer.
#[tokio::test]
async fn other_refusals_are_not_sent_again_without_stop_sequences() {
    let refusal = json!({"error": {"message": "Invalid 'max_tokens': stop at 4096.",
        "type": "invalid_request_error", "param": "max_tokens", "code": null}});
    let server = MockServer::start(vec![Scripted::json(400, refusal), answered("never")]).await;
    let error = client(&server).complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(server.requests().len(), 1);
}
