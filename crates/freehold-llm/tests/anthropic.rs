//! Contract suite of the Anthropic Messages client against scripted servers
//! on 127.0.0.1 speaking the exact wire format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_well_ordered, drain, options, text_of};
use freehold_llm::client::AnthropicClient;
use freehold_llm::retry::RetryPolicy;
use freehold_llm::secret::ApiKey;
use freehold_llm::{Provider, collect_stream};
use freehold_protocol::{
    ChatRequest, ContentPart, ErrorKind, ImageSource, Message, Reasoning, ReasoningEffort,
    RefusalDetails, ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice,
    ToolResult, ToolSpec, Usage,
};
use freehold_test_support::{MockServer, Scripted, Split, sse_text};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-key-0123456789";

fn client(server: &MockServer) -> AnthropicClient {
    let options = options("test-anthropic", server.url()).with_key(ApiKey::new(KEY));
    AnthropicClient::new(options).unwrap()
}

fn client_without_retries(server: &MockServer) -> AnthropicClient {
    let mut options = options("test-anthropic", server.url()).with_key(ApiKey::new(KEY));
    options.http.retry = RetryPolicy::none();
    AnthropicClient::new(options).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "claude-sonnet-4-20250514",
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

/// SSE text of events, each named after its `type` as the API does.
fn sse(events: &[Value]) -> String {
    let pairs: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event.to_string(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_str()))
        .collect();
    sse_text(&refs)
}

fn message_start(usage: Value) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-20250514", "stop_reason": null, "stop_sequence": null, "usage": usage}})
}

fn block_start(index: u32, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn delta(index: u32, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}

fn text_delta(index: u32, text: &str) -> Value {
    delta(index, json!({"type": "text_delta", "text": text}))
}

fn json_delta(index: u32, partial: &str) -> Value {
    delta(
        index,
        json!({"type": "input_json_delta", "partial_json": partial}),
    )
}

fn block_stop(index: u32) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(reason: &str, output_tokens: u64) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
           "usage": {"output_tokens": output_tokens}})
}

/// A float sent as f32, compared loosely.
fn assert_close(value: &Value, expected: f64) {
    let actual = value.as_f64().unwrap_or(f64::NAN);
    assert!((actual - expected).abs() < 1e-6, "{value} != {expected}");
}

fn ping() -> Value {
    json!({"type": "ping"})
}

fn message_stop() -> Value {
    json!({"type": "message_stop"})
}

fn text_stream() -> String {
    sse(&[
        message_start(
            json!({"input_tokens": 12, "cache_creation_input_tokens": 30,
                             "cache_read_input_tokens": 100, "output_tokens": 1}),
        ),
        block_start(0, json!({"type": "text", "text": ""})),
        ping(),
        text_delta(0, "Héllo"),
        ping(),
        text_delta(0, ", wörld ✓"),
        block_stop(0),
        message_delta("end_turn", 7),
        ping(),
        message_stop(),
    ])
}

#[tokio::test]
async fn streams_text_and_cache_usage_split_at_every_byte() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Every(1))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".into()),
            model: Some("claude-sonnet-4-20250514".into()),
        }
    );
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    assert_eq!(
        events[events.len() - 2..],
        [
            StreamEvent::Usage(Usage {
                input_tokens: 142,
                cached_input_tokens: 100,
                cache_write_tokens: 30,
                cache_write_1h_tokens: 0,
                output_tokens: 7,
                reasoning_tokens: 0,
            }),
            StreamEvent::Stop {
                reason: StopReason::EndTurn
            }
        ]
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, "/v1/messages");
    assert_eq!(sent.header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        sent.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        sent.json(),
        json!({
            "model": "claude-sonnet-4-20250514",
            "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 8192,
            "stream": true,
        })
    );
}

fn parallel_tool_stream() -> String {
    sse(&[
        message_start(json!({"input_tokens": 400, "output_tokens": 1})),
        block_start(0, json!({"type": "text", "text": ""})),
        text_delta(0, "Reading both."),
        block_stop(0),
        block_start(
            1,
            json!({"type": "tool_use", "id": "toolu_01A", "name": "read", "input": {}}),
        ),
        json_delta(1, ""),
        json_delta(1, "{\"pa"),
        json_delta(1, "th\": \"a\\\"q\\\".rs"),
        json_delta(1, "\"}"),
        block_stop(1),
        ping(),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_01B", "name": "read", "input": {}}),
        ),
        json_delta(2, "{\"path\""),
        json_delta(2, ": \"b/ü.rs\"}"),
        block_stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_01C", "name": "now", "input": {}}),
        ),
        block_stop(3),
        message_delta("tool_use", 90),
        message_stop(),
    ])
}

#[tokio::test]
async fn parallel_tool_calls_stream_their_arguments_under_any_split() {
    let text = parallel_tool_stream();
    for split in [
        Split::Every(1),
        Split::Every(7),
        Split::At(vec![3, 50, 51, 300, 301, 302, 700, 1000]),
    ] {
        let server = MockServer::start(vec![Scripted::sse(&text, split.clone())]).await;
        let mut req = request();
        req.tools = vec![read_tool()];
        let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
        assert!(error.is_none(), "{split:?}: {error:?}");
        assert_well_ordered(&events);
        // The arguments are streamed as they arrive, not buffered.
        let deltas: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::ToolCallArgsDelta { index, delta } => Some((*index, delta.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            deltas,
            vec![
                (0, "{\"pa"),
                (0, "th\": \"a\\\"q\\\".rs"),
                (0, "\"}"),
                (1, "{\"path\""),
                (1, ": \"b/ü.rs\"}"),
                (2, "{}"),
            ],
            "{split:?}"
        );
        // Each call is closed at its content_block_stop, before the next starts.
        let position = |wanted: &StreamEvent| events.iter().position(|e| e == wanted).unwrap();
        assert!(
            position(&StreamEvent::ToolCallEnd {
                index: 0,
                signature: None
            }) < position(&StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_01B".into(),
                name: "read".into(),
                signature: None,
            })
        );

        let mut builder = freehold_protocol::ResponseBuilder::default();
        events.iter().for_each(|event| builder.push(event));
        let response = builder.finish();
        assert_eq!(response.message.text(), "Reading both.");
        assert_eq!(
            response.message.tool_calls().cloned().collect::<Vec<_>>(),
            vec![
                ToolCall::new("toolu_01A", "read", r#"{"path": "a\"q\".rs"}"#),
                ToolCall::new("toolu_01B", "read", r#"{"path": "b/ü.rs"}"#),
                ToolCall::new("toolu_01C", "now", "{}"),
            ],
            "{split:?}"
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.usage.input_tokens, 400);
        assert_eq!(response.usage.output_tokens, 90);
    }
}

fn thinking_stream() -> String {
    sse(&[
        message_start(json!({"input_tokens": 50, "output_tokens": 3})),
        block_start(0, json!({"type": "thinking", "thinking": ""})),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "Let me think: "}),
        ),
        ping(),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "2 + 2 = 4."}),
        ),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h+/sig=="}),
        ),
        block_stop(0),
        block_start(
            1,
            json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
        ),
        block_stop(1),
        block_start(2, json!({"type": "text", "text": ""})),
        text_delta(2, "4"),
        block_stop(2),
        message_delta("end_turn", 120),
        message_stop(),
    ])
}

#[tokio::test]
async fn thinking_and_redacted_thinking_stream_and_round_trip_unchanged() {
    let server = MockServer::start(vec![Scripted::sse(&thinking_stream(), Split::Every(5))]).await;
    let mut req = request();
    req.reasoning = Some(ReasoningEffort::Medium);
    req.sampling.temperature = Some(0.7);
    req.sampling.top_k = Some(40);
    req.sampling.top_p = Some(0.5);
    let client = client(&server);
    let (events, error) = drain(client.stream(req.clone()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    // message_start's count of the prompt comes at once, for a stream cut
    // off before its end.
    assert!(
        matches!(&events[1], StreamEvent::UsageSoFar(usage) if usage.input_tokens > 0),
        "{:?}",
        events[1]
    );
    let events: Vec<StreamEvent> = events
        .into_iter()
        .filter(|event| !matches!(event, StreamEvent::UsageSoFar(_)))
        .collect();
    assert_eq!(
        events[1..5],
        [
            StreamEvent::ReasoningDelta {
                text: "Let me think: ".into(),
                id: None
            },
            StreamEvent::ReasoningDelta {
                text: "2 + 2 = 4.".into(),
                id: None
            },
            StreamEvent::ReasoningSignature {
                signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3h+/sig==".into(),
                redacted: false,
                id: None,
                origin: Some("anthropic".into()),
            },
            StreamEvent::ReasoningSignature {
                signature: "EmwKAhgBEgy3va3pzix/LafPsn4a".into(),
                redacted: true,
                id: None,
                origin: Some("anthropic".into()),
            },
        ]
    );

    // The thinking request: budget from the effort, room for the answer,
    // sampling the API forbids with thinking left out.
    let sent = server.requests()[0].json();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(sent["max_tokens"], 8192 + 8192);
    assert_eq!(sent.get("temperature"), None);
    assert_eq!(sent.get("top_k"), None);
    assert_close(&sent["top_p"], 0.95);

    // The next turn sends the blocks back exactly as they came.
    let mut builder = freehold_protocol::ResponseBuilder::default();
    events.iter().for_each(|event| builder.push(event));
    let answer = builder.finish();
    let mut next = req;
    next.messages.push(answer.message);
    next.messages.push(Message::user("And 3 + 3?"));
    let _ = drain(client.stream(next).await.unwrap()).await;
    let sent = server.requests()[1].json();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me think: 2 + 2 = 4.",
                 "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h+/sig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "text", "text": "4"},
            ]},
            {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}]},
        ])
    );
}

#[tokio::test]
async fn an_explicit_small_max_tokens_shrinks_the_thinking_budget() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let mut req = request();
    req.reasoning = Some(ReasoningEffort::High);
    req.max_tokens = Some(4000);
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    let sent = server.requests()[0].json();
    assert_eq!(sent["max_tokens"], 4000);
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 3999})
    );
}

#[tokio::test]
async fn the_conversation_is_encoded_field_by_field() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let mut req = ChatRequest::new(
        "claude-sonnet-4-20250514",
        vec![
            Message::system("Be brief."),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Text {
                        text: "What is in these?".into(),
                    },
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/cat.jpg".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "data:image/webp;base64,UklGRg==".into(),
                        },
                    },
                ],
            },
            Message::system("Use tools."),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "unsigned, from another provider".into(),
                        ..Reasoning::default()
                    }),
                    ContentPart::Text {
                        text: "Looking.".into(),
                    },
                    ContentPart::ToolCall(ToolCall::new("toolu_1", "read", r#"{"path":"a"}"#)),
                    ContentPart::ToolCall(ToolCall::new("toolu_2", "read", "{\"path\":")),
                    ContentPart::ToolCall(ToolCall::new("toolu_3", "read", "")),
                ],
            },
            Message::tool_result("toolu_1", "fn main() {}"),
            Message {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(ToolResult {
                    call_id: "toolu_2".into(),
                    content: "bad arguments".into(),
                    is_error: true,
                })],
            },
            Message::user("Also this one."),
            Message::tool_result("toolu_3", ""),
        ],
    );
    req.tools = vec![read_tool()];
    req.parallel_tool_calls = Some(false);
    req.stop = vec!["END".into(), "\n\nHuman:".into()];
    req.max_tokens = Some(512);
    req.sampling.temperature = Some(0.2);
    req.sampling.top_p = Some(0.9);
    req.sampling.top_k = Some(5);
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    let sent = server.requests()[0].json();
    assert_eq!(sent["system"], "Be brief.\n\nUse tools.");
    assert_eq!(sent["max_tokens"], 512);
    assert_eq!(sent["stop_sequences"], json!(["END", "\n\nHuman:"]));
    assert_close(&sent["temperature"], 0.2);
    assert_close(&sent["top_p"], 0.9);
    assert_eq!(sent["top_k"], 5);
    assert_eq!(sent.get("thinking"), None);
    assert_eq!(
        sent["tools"],
        json!([{"name": "read", "description": "Read a file",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "read", "input": {}},
                {"type": "tool_use", "id": "toolu_3", "name": "read", "input": {}},
            ]},
            // Tool and user messages merge into one user turn, results first.
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn main() {}"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "bad arguments", "is_error": true},
                {"type": "tool_result", "tool_use_id": "toolu_3"},
                {"type": "text", "text": "Also this one."},
            ]},
        ])
    );
}

#[tokio::test]
async fn tool_choice_maps_every_variant() {
    let cases = [
        (ToolChoice::Auto, None, json!({"type": "auto"})),
        (ToolChoice::Required, None, json!({"type": "any"})),
        (
            ToolChoice::Required,
            Some(false),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (
            ToolChoice::Tool {
                name: "read".into(),
            },
            Some(true),
            json!({"type": "tool", "name": "read"}),
        ),
        (ToolChoice::None, Some(false), json!({"type": "none"})),
    ];
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let client = client(&server);
    for (i, (choice, parallel, expected)) in cases.into_iter().enumerate() {
        let mut req = request();
        req.tools = vec![read_tool()];
        req.tool_choice = choice;
        req.parallel_tool_calls = parallel;
        let _ = drain(client.stream(req).await.unwrap()).await;
        assert_eq!(server.requests()[i].json()["tool_choice"], expected);
    }
    // No tools: neither `tools` nor `tool_choice`.
    let mut req = request();
    req.tool_choice = ToolChoice::Required;
    let _ = drain(client.stream(req).await.unwrap()).await;
    let sent = server.requests().last().unwrap().json();
    assert_eq!(sent.get("tools"), None);
    assert_eq!(sent.get("tool_choice"), None);
}

fn schema_format() -> ResponseFormat {
    ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        strict: true,
    }
}

#[tokio::test]
async fn structured_output_streams_the_forced_tool_input_as_text() {
    let text = sse(&[
        message_start(json!({"input_tokens": 30, "output_tokens": 1})),
        block_start(
            0,
            json!({"type": "tool_use", "id": "toolu_S", "name": "answer", "input": {}}),
        ),
        json_delta(0, "{\"city\": "),
        json_delta(0, "\"Zürich\"}"),
        block_stop(0),
        message_delta("tool_use", 12),
        message_stop(),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Every(3))]).await;
    let mut req = request();
    req.response_format = Some(schema_format());
    let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "{\"city\": \"Zürich\"}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::ToolCallStart { .. })),
        "the structured-output tool is not a tool call: {events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::EndTurn
        })
    );
    let sent = server.requests()[0].json();
    assert_eq!(
        sent["tools"],
        json!([{"name": "answer",
                "description": "Give the final answer by calling this tool; its input is the answer.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "answer", "disable_parallel_tool_use": true})
    );
}

#[tokio::test]
async fn structured_output_with_thinking_asks_instead_of_forcing_and_drops_preamble() {
    let text = sse(&[
        message_start(json!({"input_tokens": 30, "output_tokens": 1})),
        block_start(0, json!({"type": "thinking", "thinking": ""})),
        delta(0, json!({"type": "thinking_delta", "thinking": "Zürich."})),
        delta(0, json!({"type": "signature_delta", "signature": "c2ln"})),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        text_delta(1, "Here is the answer:"),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_S", "name": "structured_output", "input": {}}),
        ),
        json_delta(2, "{\"city\": \"Zürich\"}"),
        block_stop(2),
        message_delta("tool_use", 12),
        message_stop(),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let mut req = request();
    req.reasoning = Some(ReasoningEffort::Low);
    // A caller tool already named `answer`: the format's name is not reused.
    req.tools = vec![ToolSpec {
        name: "answer".into(),
        ..read_tool()
    }];
    req.response_format = Some(schema_format());
    let response = collect_stream("t", client(&server).stream(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.message.text(), "{\"city\": \"Zürich\"}");
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(response.message.tool_calls().count(), 0);
    let sent = server.requests()[0].json();
    assert_eq!(sent["tools"][1]["name"], "structured_output");
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
    assert!(
        sent["system"].as_str().unwrap().starts_with(
            "Be brief.\n\nGive your final answer by calling the `structured_output` tool"
        ),
        "{}",
        sent["system"]
    );
}

#[tokio::test]
async fn complete_decodes_a_non_streamed_answer_and_encodes_options() {
    let body = json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "Need the file.", "signature": "WaUjzkypQ2mUEVM36O2T"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"},
            {"type": "text", "text": "Reading it.", "citations": null},
            {"type": "tool_use", "id": "toolu_01Z", "name": "read", "input": {"path": "x"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 1000,
                  "output_tokens": 9, "service_tier": "standard"}
    });
    let server = MockServer::start(vec![Scripted::json(200, body)]).await;
    let mut req = request();
    req.tools = vec![read_tool()];
    req.tool_choice = ToolChoice::Tool {
        name: "read".into(),
    };
    req.parallel_tool_calls = Some(false);
    req.max_tokens = Some(64);
    req.stop = vec!["END".into()];
    let response = client(&server).complete(req).await.unwrap();
    assert_eq!(response.id.as_deref(), Some("msg_013Zva2CMHLNnXjNJJKqJ2EF"));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(
        response.message.content,
        vec![
            ContentPart::Reasoning(Reasoning {
                text: "Need the file.".into(),
                signature: Some("WaUjzkypQ2mUEVM36O2T".into()),
                origin: Some("anthropic".into()),
                ..Reasoning::default()
            }),
            ContentPart::Reasoning(Reasoning {
                signature: Some("EmwKAhgBEgy3".into()),
                redacted: true,
                origin: Some("anthropic".into()),
                ..Reasoning::default()
            }),
            ContentPart::Text {
                text: "Reading it.".into()
            },
            ContentPart::ToolCall(ToolCall::new("toolu_01Z", "read", r#"{"path":"x"}"#)),
        ]
    );
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 1025,
            cached_input_tokens: 1000,
            cache_write_tokens: 5,
            cache_write_1h_tokens: 0,
            output_tokens: 9,
            reasoning_tokens: 0,
        }
    );

    let sent = server.requests()[0].json();
    assert_eq!(
        sent.get("stream"),
        None,
        "non-streaming requests omit `stream`"
    );
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "read", "disable_parallel_tool_use": true})
    );
}

#[tokio::test]
async fn complete_turns_the_structured_tool_into_text() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "tool_use", "id": "toolu_S", "name": "answer", "input": {"city": "Zürich"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 4}
    });
    let server = MockServer::start(vec![Scripted::json(200, body)]).await;
    let mut req = request();
    req.response_format = Some(schema_format());
    let response = client(&server).complete(req).await.unwrap();
    let answer: Value = serde_json::from_str(&response.message.text()).unwrap();
    assert_eq!(answer, json!({"city": "Zürich"}));
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(response.message.tool_calls().count(), 0);
}

#[tokio::test]
async fn every_error_status_maps_to_its_kind() {
    let error = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
    let cases: Vec<(u16, Value, ErrorKind)> = vec![
        (
            400,
            error("invalid_request_error", "messages: roles must alternate"),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            error(
                "invalid_request_error",
                "prompt is too long: 208310 tokens > 200000 maximum",
            ),
            ErrorKind::ContextLengthExceeded {
                needed: Some(208310),
                allowed: Some(200000),
            },
        ),
        (
            401,
            error("authentication_error", &format!("invalid x-api-key {KEY}")),
            ErrorKind::Authentication,
        ),
        (
            403,
            error("permission_error", "no access"),
            ErrorKind::Permission,
        ),
        (
            404,
            error("not_found_error", "model: claude-nope"),
            ErrorKind::NotFound,
        ),
        (
            413,
            error("request_too_large", "Request exceeds the maximum size"),
            ErrorKind::InvalidRequest,
        ),
        (
            429,
            error("rate_limit_error", "slow down"),
            ErrorKind::RateLimited { retry_after: None },
        ),
        (500, error("api_error", "boom"), ErrorKind::Server),
        (
            503,
            error("overloaded_error", "busy"),
            ErrorKind::Overloaded,
        ),
        (
            529,
            error("overloaded_error", "Overloaded"),
            ErrorKind::Overloaded,
        ),
    ];
    for (status, body, kind) in cases {
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        let client = client_without_retries(&server);
        let Err(error) = client.stream(request()).await else {
            panic!("status {status} must fail")
        };
        assert_eq!(error.kind, kind, "status {status}");
        assert_eq!(error.status, Some(status));
        assert!(!error.to_string().contains(KEY), "key leaked: {error}");
        let error = client.complete(request()).await.unwrap_err();
        assert_eq!(error.kind, kind, "status {status} (complete)");
        assert_eq!(server.requests().len(), 2, "no retries were configured");
    }
}

#[tokio::test]
async fn retries_server_errors_and_honours_retry_after() {
    let server = MockServer::start(vec![
        Scripted::json(
            500,
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        ),
        Scripted::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .header("retry-after", "1"),
        Scripted::sse(&text_stream(), Split::Whole),
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
async fn overloaded_529_is_retried_then_reported() {
    let server = MockServer::start(vec![Scripted::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )])
    .await;
    let error = client(&server).complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(error.status, Some(529));
    assert!(error.message.contains("Overloaded"));
    assert_eq!(server.requests().len(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn idle_timeout_fires_when_the_stream_goes_silent() {
    let script =
        Scripted::sse(&text_stream(), Split::Every(40)).stall_after(2, Duration::from_secs(30));
    let server = MockServer::start(vec![script]).await;
    let mut options = options("o", server.url());
    // Long enough that a loaded machine does not mistake slow headers for
    // silence; the stall is 30 s.
    options.http.idle_timeout = Duration::from_secs(1);
    let client = AnthropicClient::new(options).unwrap();
    let started = Instant::now();
    let (_events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert_eq!(error.expect("a timeout").kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn error_events_mid_stream_map_to_their_kinds() {
    let cases = [
        ("overloaded_error", "Overloaded", ErrorKind::Overloaded),
        (
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
            ErrorKind::RateLimited { retry_after: None },
        ),
        (
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            ErrorKind::ContextLengthExceeded {
                needed: Some(210000),
                allowed: Some(200000),
            },
        ),
        (
            "invalid_request_error",
            "bad thinking signature",
            ErrorKind::InvalidRequest,
        ),
        ("api_error", "Internal server error", ErrorKind::Server),
    ];
    for (kind_name, message, kind) in cases {
        let text = sse(&[
            message_start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "par"),
            ping(),
            json!({"type": "error", "error": {"type": kind_name, "message": message}}),
        ]);
        let server = MockServer::start(vec![Scripted::sse(&text, Split::Every(11))]).await;
        let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "par");
        let error = error.expect("an error");
        assert_eq!(error.kind, kind, "{kind_name}: {message}");
        assert_eq!(error.message, message);
        assert_eq!(error.provider, "test-anthropic");
        // The status Anthropic documents for the type, as if it had come
        // with one.
        let status = match kind_name {
            "overloaded_error" => 529,
            "rate_limit_error" => 429,
            "invalid_request_error" => 400,
            _ => 500,
        };
        assert_eq!(error.status, Some(status), "{kind_name}");
    }
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_is_a_connection_error() {
    let full = [
        message_start(json!({"input_tokens": 5, "output_tokens": 1})),
        block_start(0, json!({"type": "text", "text": ""})),
        text_delta(0, "half"),
        block_stop(0),
        message_delta("end_turn", 2),
        message_stop(),
    ];
    // Cut mid-block, and cut after message_delta but before message_stop.
    for kept in [3, 5] {
        let text = sse(&full[..kept]);
        let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
        let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "half");
        assert!(
            !events.iter().any(|e| matches!(e, StreamEvent::Stop { .. })),
            "{events:?}"
        );
        let error = error.expect("a truncation error");
        assert_eq!(error.kind, ErrorKind::Connection);
        assert!(error.message.contains("message_stop"), "{error}");
    }
}

#[tokio::test]
async fn unknown_events_and_blocks_are_ignored_but_malformed_known_ones_fail() {
    let text = sse(&[
        message_start(json!({"input_tokens": 5, "output_tokens": 1})),
        json!({"type": "some_future_event", "x": 1}),
        block_start(
            0,
            json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        ),
        json_delta(0, "{\"query\": \"x\"}"),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        delta(
            1,
            json!({"type": "citations_delta", "citation": {"type": "char_location"}}),
        ),
        text_delta(1, "ok"),
        block_stop(1),
        message_delta("pause_turn", 3),
        message_stop(),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "ok");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::Other("pause_turn".into())
        })
    );

    let text = sse(&[
        message_start(json!({"input_tokens": 5, "output_tokens": 1})),
        json!({"type": "content_block_delta", "index": "zero"}),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (_events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    let error = error.expect("a protocol error");
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.message.contains("content_block_delta"), "{error}");
}

#[tokio::test]
async fn stop_reasons_map() {
    let cases = [
        ("end_turn", StopReason::EndTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence(None)),
        ("refusal", StopReason::Refusal),
        ("pause_turn", StopReason::Other("pause_turn".into())),
    ];
    for (wire, reason) in cases {
        let text = sse(&[
            message_start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "x"),
            block_stop(0),
            message_delta(wire, 2),
            message_stop(),
        ]);
        let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
        let response = collect_stream("t", client(&server).stream(request()).await.unwrap())
            .await
            .unwrap();
        assert_eq!(response.stop_reason, reason, "{wire}");
    }
}

/// What Anthropic says of a refusal (`stop_details`) is read, streamed and
/// whole: the stream carries it just before its stop, the answer holds it;
/// a category the API leaves `null` is none. Details on an answer that is
/// not a refusal, or of a kind this crate does not know, are not read.
#[tokio::test]
async fn a_refusals_details_are_read_streamed_and_whole() {
    let details = json!({"type": "refusal", "category": "cyber",
                         "explanation": "This could help write malware."});
    let expected = RefusalDetails {
        category: Some("cyber".into()),
        explanation: Some("This could help write malware.".into()),
    };
    let refusal_stream = |details: Value, reason: &str| {
        sse(&[
            message_start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "I can't help with that."),
            block_stop(0),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": reason, "stop_sequence": null, "stop_details": details},
                   "usage": {"output_tokens": 7}}),
            message_stop(),
        ])
    };
    let whole = |details: Value, reason: &str| {
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "I can't help with that."}],
            "stop_reason": reason, "stop_sequence": null, "stop_details": details,
            "usage": {"input_tokens": 5, "output_tokens": 7},
        })
    };
    let uncategorised = json!({"type": "refusal", "category": null, "explanation": null});
    let server = MockServer::start(vec![
        Scripted::sse(&refusal_stream(details.clone(), "refusal"), Split::Every(1)),
        Scripted::json(200, whole(details.clone(), "refusal")),
        Scripted::sse(
            &refusal_stream(uncategorised.clone(), "refusal"),
            Split::Whole,
        ),
        Scripted::json(200, whole(uncategorised, "refusal")),
        Scripted::sse(&refusal_stream(details.clone(), "end_turn"), Split::Whole),
        Scripted::json(
            200,
            whole(json!({"type": "something_new", "x": 1}), "refusal"),
        ),
    ])
    .await;
    let client = client(&server);

    let (events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        &events[events.len() - 2..],
        &[
            StreamEvent::RefusalDetails(expected.clone()),
            StreamEvent::Stop {
                reason: StopReason::Refusal
            },
        ]
    );
    let response = client.complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::Refusal);
    assert_eq!(response.refusal_details, Some(expected));

    let streamed = collect_stream("t", client.stream(request()).await.unwrap())
        .await
        .unwrap();
    let whole = client.complete(request()).await.unwrap();
    for response in [streamed, whole] {
        assert_eq!(response.refusal_details, Some(RefusalDetails::default()));
    }

    let not_a_refusal = collect_stream("t", client.stream(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(not_a_refusal.stop_reason, StopReason::EndTurn);
    assert_eq!(not_a_refusal.refusal_details, None);
    let unknown_kind = client.complete(request()).await.unwrap();
    assert_eq!(unknown_kind.stop_reason, StopReason::Refusal);
    assert_eq!(unknown_kind.refusal_details, None);
}

/// The stop sequence Anthropic names, streamed and whole, is the one the
/// answer says it stopped at.
#[tokio::test]
async fn the_stop_sequence_that_ended_an_answer_is_kept() {
    let text = sse(&[
        message_start(json!({"input_tokens": 5, "output_tokens": 1})),
        block_start(0, json!({"type": "text", "text": ""})),
        text_delta(0, "Thought: add"),
        block_stop(0),
        json!({"type": "message_delta",
               "delta": {"stop_reason": "stop_sequence", "stop_sequence": "\nObservation:"},
               "usage": {"output_tokens": 3}}),
        message_stop(),
    ]);
    let whole = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Thought: add"}],
        "stop_reason": "stop_sequence", "stop_sequence": "\nObservation:",
        "usage": {"input_tokens": 5, "output_tokens": 3}
    });
    let server = MockServer::start(vec![
        Scripted::sse(&text, Split::Whole),
        Scripted::json(200, whole),
    ])
    .await;
    let stopped = StopReason::StopSequence(Some("\nObservation:".into()));
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: stopped.clone()
        })
    );
    let response = client(&server).complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, stopped);
}

#[tokio::test]
async fn lists_models_across_pages() {
    let server = MockServer::start(vec![
        Scripted::json(
            200,
            json!({"data": [
                {"type": "model", "id": "claude-opus-4-1-20250805", "display_name": "Claude Opus 4.1", "created_at": "2025-08-05T00:00:00Z"},
                {"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4", "created_at": "2025-05-22T00:00:00Z"}
            ], "has_more": true, "first_id": "claude-opus-4-1-20250805", "last_id": "claude-sonnet-4-20250514"}),
        ),
        Scripted::json(
            200,
            json!({"data": [{"type": "model", "id": "claude-3-5-haiku-20241022", "display_name": "Claude Haiku 3.5", "created_at": "2024-10-22T00:00:00Z"}],
                   "has_more": false, "first_id": "claude-3-5-haiku-20241022", "last_id": "claude-3-5-haiku-20241022"}),
        ),
    ])
    .await;
    let client = client(&server);
    let models = client.list_models().await.unwrap();
    let ids: Vec<_> = models.iter().map(|model| model.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "claude-opus-4-1-20250805",
            "claude-sonnet-4-20250514",
            "claude-3-5-haiku-20241022"
        ]
    );
    assert!(
        models
            .iter()
            .all(|model| model.provider == "test-anthropic")
    );
    let requests = server.requests();
    assert_eq!(requests[0].uri, "/v1/models?limit=1000");
    assert_eq!(
        requests[1].uri,
        "/v1/models?limit=1000&after_id=claude-sonnet-4-20250514"
    );
    assert_eq!(requests[1].header("x-api-key").as_deref(), Some(KEY));
    assert!(client.capabilities("claude-sonnet-4-20250514").reasoning);
    assert!(!client.capabilities("claude-3-5-haiku-20241022").reasoning);
}

#[tokio::test]
async fn a_base_url_ending_in_v1_and_a_custom_default_max_tokens() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let options = options("o", format!("{}/v1/", server.url()));
    let client = AnthropicClient::new(options)
        .unwrap()
        .with_default_max_tokens(1234);
    assert_eq!(client.default_max_tokens(), 1234);
    let _ = drain(client.stream(request()).await.unwrap()).await;
    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/messages");
    assert_eq!(sent.json()["max_tokens"], 1234);
    assert_eq!(sent.header("x-api-key"), None, "no key, no header");
}

#[tokio::test]
async fn counts_input_tokens_with_anthropics_own_endpoint() {
    let server = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 2095}))]).await;
    let mut req = request();
    req.tools = vec![read_tool()];
    req.max_tokens = Some(64);
    req.stop = vec!["END".into()];
    req.forwarded_headers = vec![("anthropic-beta".into(), "token-efficient-tools".into())];
    let counted = client(&server).count_input_tokens(req).await.unwrap();
    assert_eq!(counted, Some(2095));

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/messages/count_tokens");
    assert_eq!(sent.header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(
        sent.header("anthropic-beta").as_deref(),
        Some("token-efficient-tools")
    );
    let body = sent.json();
    assert_eq!(body["model"], "claude-sonnet-4-20250514");
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["tools"][0]["name"], "read");
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["messages", "model", "system", "tool_choice", "tools"],
        "count_tokens refuses max_tokens, stop_sequences and the like"
    );
}

#[tokio::test]
async fn a_count_keeps_thinking_when_the_request_sets_no_limit() {
    let server = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 12}))]).await;
    let mut req = request();
    req.reasoning = Some(ReasoningEffort::High);
    assert_eq!(
        client(&server).count_input_tokens(req).await.unwrap(),
        Some(12)
    );
    let body = server.requests()[0].json();
    assert_eq!(body["thinking"]["type"], "enabled", "{body}");
    assert_eq!(body.get("max_tokens"), None, "{body}");
}

#[tokio::test]
async fn a_server_without_the_count_endpoint_cannot_count() {
    // An Anthropic-compatible server that lacks the route: no count, no
    // error; the caller estimates.
    for (status, body) in [
        (404, json!({"detail": "Not Found"})),
        (405, json!({"error": "method not allowed"})),
    ] {
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        let counted = client_without_retries(&server)
            .count_input_tokens(request())
            .await
            .unwrap();
        assert_eq!(counted, None, "HTTP {status}");
    }
}

#[tokio::test]
async fn a_refused_count_is_the_apis_own_error() {
    let server = MockServer::start(vec![Scripted::json(
        404,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model: claude-nope"}}),
    )])
    .await;
    let mut req = request();
    req.model = "claude-nope".into();
    let error = client_without_retries(&server)
        .count_input_tokens(req)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.message.contains("claude-nope"), "{error}");
}

mod wire {
    use freehold_llm::wire::anthropic::{
        self, CacheCreation, ContentBlock, MessageStreamEvent, MessagesRequest, MessagesResponse,
        WireUsage,
    };
    use freehold_llm::wire::openai_chat;
    use freehold_protocol::{StopReason, Usage};
    use serde_json::{Value, json};

    /// Parses `value` as `T` and writes it back: the result must be identical.
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: Value) -> T {
        let parsed: T = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
        parsed
    }

    #[test]
    fn requests_as_other_clients_send_them_round_trip() {
        let request: MessagesRequest = round_trip(json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1",
                     "content": [{"type": "text", "text": "ok"}], "is_error": false},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}
                ]}
            ],
            "tools": [
                {"name": "read", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                {"type": "web_search_20250305", "name": "web_search"},
                {"name": "grep", "input_schema": {"type": "object"}, "defer_loading": true}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "u-1"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "cache_control": {"type": "ephemeral"},
            "stream": true
        }));
        assert_eq!(request.system.unwrap().text(), "You are terse.");
        // A document is read as one.
        assert!(matches!(
            request.messages[2].content.clone().into_blocks()[1],
            ContentBlock::Document { .. }
        ));
        // Fields Freehold does not read are left out when a request is
        // read (they are not gathered, which would cost a copy of the whole
        // body): a tool's server-side settings, the request's tier.
        let read: MessagesRequest = serde_json::from_value(json!({
            "model": "m", "max_tokens": 10, "messages": [], "service_tier": "auto",
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            json!({"model": "m", "max_tokens": 10, "messages": [],
                   "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
        );
        // An unknown block is kept as it came.
        let request: MessagesRequest = round_trip(json!({
            "model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "https://example.com", "title": "t",
                 "content": [{"type": "text", "text": "x"}]}]}]
        }));
        assert!(matches!(
            request.messages[0].content.clone().into_blocks()[0],
            ContentBlock::Other(_)
        ));
    }

    #[test]
    fn stream_events_round_trip() {
        for event in [
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "m", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 2}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "x"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {}}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": 0, "output_tokens": 15}}),
            json!({"type": "message_stop"}),
            json!({"type": "ping"}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ] {
            let parsed: MessageStreamEvent = round_trip(event.clone());
            assert!(
                !matches!(parsed, MessageStreamEvent::Other(_)),
                "{event} fell through to Other"
            );
        }
    }

    #[test]
    fn usage_converts_both_ways() {
        let wire = WireUsage {
            input_tokens: 10,
            output_tokens: 4,
            cache_creation_input_tokens: Some(20),
            cache_read_input_tokens: Some(300),
            cache_creation: Some(CacheCreation {
                ephemeral_5m_input_tokens: 8,
                ephemeral_1h_input_tokens: 12,
            }),
            iterations: None,
        };
        let usage = Usage::from(&wire);
        assert_eq!(
            usage,
            Usage {
                input_tokens: 330,
                cached_input_tokens: 300,
                cache_write_tokens: 20,
                cache_write_1h_tokens: 12,
                output_tokens: 4,
                reasoning_tokens: 0,
            }
        );
        assert_eq!(WireUsage::from(&usage), wire);
    }

    #[test]
    fn stop_reason_names_invert_the_mapping() {
        for name in [
            "end_turn",
            "max_tokens",
            "stop_sequence",
            "tool_use",
            "refusal",
            "pause_turn",
        ] {
            assert_eq!(
                anthropic::stop_reason_name(&anthropic::stop_reason(name, None)),
                name
            );
        }
        assert_eq!(
            anthropic::stop_reason("pause_turn", None),
            StopReason::Other("pause_turn".into())
        );
        // Other providers' reasons are outside what Anthropic's SDKs know.
        for other in ["MALFORMED_FUNCTION_CALL", "abort", "load"] {
            assert_eq!(
                anthropic::stop_reason_name(&StopReason::Other(other.into())),
                "end_turn"
            );
            assert_eq!(
                openai_chat::finish_reason_name(&StopReason::Other(other.into())),
                "stop"
            );
        }
    }

    #[test]
    fn a_response_without_stop_reason_but_with_calls_is_tool_use() {
        let response: MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": null}],
            "usage": {"input_tokens": 1, "output_tokens": 1}
        }))
        .unwrap();
        let decoded = anthropic::decode_response(response, None);
        assert_eq!(decoded.stop_reason, StopReason::ToolUse);
        assert_eq!(decoded.message.tool_calls().next().unwrap().arguments, "{}");
    }
}
