//! Contract suite of the OpenAI Responses client against scripted servers on
//! 127.0.0.1 speaking the exact wire format (event names, `sequence_number`s
//! and response snapshots as OpenAI sends them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_well_ordered, drain, options, text_of};
use freehold_llm::client::OpenAiResponsesClient;
use freehold_llm::secret::ApiKey;
use freehold_llm::{Provider, collect_stream};
use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, Message, Reasoning,
    ReasoningEffort, ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, ToolSpec,
    Usage,
};
use freehold_test_support::{MockServer, Scripted, Split, sse_text};
use serde_json::{Value, json};

const KEY: &str = "sk-test-key-0123456789";
const MODEL: &str = "gpt-5-2025-08-07";

fn client(server: &MockServer) -> OpenAiResponsesClient {
    let options = options("test-openai", format!("{}/v1", server.url())).with_key(ApiKey::new(KEY));
    OpenAiResponsesClient::new(options).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-5",
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

fn grep_tool() -> ToolSpec {
    ToolSpec {
        name: "grep".into(),
        description: String::new(),
        parameters: json!({"type": "object", "properties": {"pattern": {"type": "string"}}}),
        strict: false,
    }
}

/// A response object as OpenAI sends it in lifecycle events and
/// non-streamed answers.
fn snapshot(status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_67c9fdcecf488190", "object": "response", "created_at": 1741290958,
        "status": status, "background": false, "error": null, "incomplete_details": null,
        "instructions": "Be brief.", "max_output_tokens": null, "model": MODEL,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "service_tier": "default", "store": false,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {}
    })
}

fn usage_json(input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    json!({
        "input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output
    })
}

/// SSE text of `events`, each named by its `type` in an `event:` line and
/// numbered with a `sequence_number`, as OpenAI sends them.
fn sse(events: &[Value]) -> String {
    let mut text = String::new();
    for (number, event) in events.iter().enumerate() {
        let mut event = event.clone();
        event["sequence_number"] = json!(number);
        let kind = event["type"].as_str().unwrap().to_owned();
        text.push_str(&sse_text(&[(&kind, &event.to_string())]));
    }
    text
}

fn created() -> [Value; 2] {
    [
        json!({"type": "response.created", "response": snapshot("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": snapshot("in_progress", json!([]), Value::Null)}),
    ]
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => {
            json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
        }
        None => json!([]),
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn text_delta(item_id: &str, output_index: u32, delta: &str) -> Value {
    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": output_index,
           "content_index": 0, "delta": delta, "logprobs": [], "obfuscation": "x1y2"})
}

/// A whole text answer: every event a real server sends for one message.
fn text_events(text_parts: &[&str]) -> Vec<Value> {
    let full: String = text_parts.concat();
    let mut events = created().to_vec();
    events.push(
        json!({"type": "response.output_item.added", "output_index": 0,
                       "item": message_item("msg_1", "in_progress", None)}),
    );
    events.push(json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
                       "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}));
    for part in text_parts {
        events.push(text_delta("msg_1", 0, part));
    }
    events.push(json!({"type": "response.output_text.annotation.added", "item_id": "msg_1", "output_index": 0,
                       "content_index": 0, "annotation_index": 0,
                       "annotation": {"type": "url_citation", "url": "https://example.com", "start_index": 0, "end_index": 1, "title": "t"}}));
    events.push(
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
                       "content_index": 0, "text": full, "logprobs": []}),
    );
    events.push(json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0,
                       "content_index": 0, "part": {"type": "output_text", "text": full, "annotations": [], "logprobs": []}}));
    events.push(
        json!({"type": "response.output_item.done", "output_index": 0,
                       "item": message_item("msg_1", "completed", Some(&full))}),
    );
    events.push(json!({"type": "response.completed", "response": snapshot(
        "completed",
        json!([message_item("msg_1", "completed", Some(&full))]),
        usage_json(12, 8, 3, 0),
    )}));
    events
}

fn text_stream() -> String {
    // A keep-alive comment first, as proxies send.
    format!(
        ": keep-alive\n\n{}",
        sse(&text_events(&["Héllo", ", wörld ✓"]))
    )
}

/// A streamed response of `text` cut into `split`. Chunks go out without
/// the mock's default 1 ms pause: HTTP/1.1 chunked framing still hands each
/// one to the client as its own body frame, and byte-by-byte streams of a
/// few kilobytes stay fast.
fn streamed(text: &str, split: Split) -> Scripted {
    let mut script = Scripted::sse(text, split);
    script.chunk_delay = Duration::ZERO;
    script
}

fn start() -> StreamEvent {
    StreamEvent::Start {
        id: Some("resp_67c9fdcecf488190".into()),
        model: Some(MODEL.into()),
    }
}

#[tokio::test]
async fn streams_the_full_event_sequence_split_at_every_byte() {
    let server = MockServer::start(vec![streamed(&text_stream(), Split::Every(1))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    // Multi-byte characters cut in half by the split arrive whole.
    assert_eq!(
        events,
        vec![
            start(),
            StreamEvent::TextDelta {
                text: "Héllo".into()
            },
            StreamEvent::TextDelta {
                text: ", wörld ✓".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: 12,
                cached_input_tokens: 8,
                output_tokens: 3,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::EndTurn
            },
        ]
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, "/v1/responses");
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some("Bearer sk-test-key-0123456789")
    );
    assert_eq!(
        sent.json(),
        json!({
            "model": "gpt-5",
            "instructions": "Be brief.",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            "store": false,
            "stream": true,
        })
    );
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": arguments,
           "call_id": call_id, "name": name})
}

fn args_delta(item_id: &str, output_index: u32, delta: &str) -> Value {
    json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
           "output_index": output_index, "delta": delta, "obfuscation": "abc"})
}

/// Two calls whose argument deltas interleave.
fn parallel_calls_stream() -> String {
    let a_args = r#"{"path": "a.rs"}"#;
    let b_args = r#"{"pattern": "fn ✓"}"#;
    let mut events = created().to_vec();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": call_item("fc_a", "call_a", "read", "", "in_progress")}),
        json!({"type": "response.output_item.added", "output_index": 1,
               "item": call_item("fc_b", "call_b", "grep", "", "in_progress")}),
        args_delta("fc_a", 0, "{\"pa"),
        args_delta("fc_b", 1, "{\"pattern\""),
        args_delta("fc_a", 0, "th\": \"a.rs\"}"),
        args_delta("fc_b", 1, ": \"fn ✓\"}"),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_b", "output_index": 1, "arguments": b_args}),
        json!({"type": "response.output_item.done", "output_index": 1,
               "item": call_item("fc_b", "call_b", "grep", b_args, "completed")}),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_a", "output_index": 0, "arguments": a_args}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": call_item("fc_a", "call_a", "read", a_args, "completed")}),
        json!({"type": "response.completed", "response": snapshot(
            "completed",
            json!([call_item("fc_a", "call_a", "read", a_args, "completed"),
                   call_item("fc_b", "call_b", "grep", b_args, "completed")]),
            usage_json(80, 0, 40, 0),
        )}),
    ]);
    sse(&events)
}

#[tokio::test]
async fn interleaved_parallel_calls_survive_any_split() {
    let text = parallel_calls_stream();
    // Every(2) cuts every multi-byte character and escape sequence too
    // (Every(1) is covered by the text stream above, and costs a few seconds).
    for split in [
        Split::Every(2),
        Split::Every(7),
        Split::At(vec![3, 50, 51, 700, 701, 1500, 1501, 2200]),
    ] {
        let server = MockServer::start(vec![streamed(&text, split.clone())]).await;
        let mut req = request();
        req.tools = vec![read_tool(), grep_tool()];
        let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
        assert!(error.is_none(), "{split:?}: {error:?}");
        assert_well_ordered(&events);
        let calls: Vec<_> = events
            .iter()
            .filter(|event| {
                matches!(
                    event,
                    StreamEvent::ToolCallStart { .. } | StreamEvent::ToolCallEnd { .. }
                )
            })
            .cloned()
            .collect();
        assert_eq!(
            calls,
            vec![
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_a".into(),
                    name: "read".into(),
                    signature: None,
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "call_b".into(),
                    name: "grep".into(),
                    signature: None,
                },
                StreamEvent::ToolCallEnd {
                    index: 1,
                    signature: None
                },
                StreamEvent::ToolCallEnd {
                    index: 0,
                    signature: None
                },
            ],
            "{split:?}"
        );
        let response = collect_events(events);
        assert_eq!(
            response.message.tool_calls().cloned().collect::<Vec<_>>(),
            vec![
                ToolCall::new("call_a", "read", r#"{"path": "a.rs"}"#),
                ToolCall::new("call_b", "grep", r#"{"pattern": "fn ✓"}"#),
            ],
            "{split:?}"
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.usage.output_tokens, 40);
    }
}

fn collect_events(events: Vec<StreamEvent>) -> ChatResponse {
    let mut builder = freehold_protocol::ResponseBuilder::default();
    for event in &events {
        builder.push(event);
    }
    builder.finish()
}

fn reasoning_item(summary: &[&str], encrypted: Option<&str>, status: &str) -> Value {
    let summary: Vec<Value> = summary
        .iter()
        .map(|text| json!({"type": "summary_text", "text": text}))
        .collect();
    let mut item = json!({"id": "rs_68af", "type": "reasoning", "summary": summary});
    if let Some(encrypted) = encrypted {
        item["encrypted_content"] = json!(encrypted);
    }
    if status != "in_progress" {
        item["status"] = json!(status);
    }
    item
}

fn summary_event(kind: &str, summary_index: u32, extra: Value) -> Value {
    let mut event = json!({"type": kind, "item_id": "rs_68af", "output_index": 0, "summary_index": summary_index});
    for (key, value) in extra.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

/// Reasoning with a two-part summary and encrypted content, then a call.
fn reasoning_stream() -> String {
    let first = "**Planning** the read";
    let second = "Then answer.";
    let encrypted = "gAAAAABo-ENCRYPTED+/=";
    let args = r#"{"path":"src/main.rs"}"#;
    let mut events = created().to_vec();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": reasoning_item(&[], None, "in_progress")}),
        summary_event("response.reasoning_summary_part.added", 0, json!({"part": {"type": "summary_text", "text": ""}})),
        summary_event("response.reasoning_summary_text.delta", 0, json!({"delta": "**Planning**", "obfuscation": "q"})),
        summary_event("response.reasoning_summary_text.delta", 0, json!({"delta": " the read", "obfuscation": "q"})),
        summary_event("response.reasoning_summary_text.done", 0, json!({"text": first})),
        summary_event("response.reasoning_summary_part.done", 0, json!({"part": {"type": "summary_text", "text": first}})),
        summary_event("response.reasoning_summary_part.added", 1, json!({"part": {"type": "summary_text", "text": ""}})),
        summary_event("response.reasoning_summary_text.delta", 1, json!({"delta": second})),
        summary_event("response.reasoning_summary_text.done", 1, json!({"text": second})),
        summary_event("response.reasoning_summary_part.done", 1, json!({"part": {"type": "summary_text", "text": second}})),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": reasoning_item(&[first, second], Some(encrypted), "completed")}),
        json!({"type": "response.output_item.added", "output_index": 1,
               "item": call_item("fc_1", "call_1", "read", "", "in_progress")}),
        args_delta("fc_1", 1, "{\"path\":"),
        args_delta("fc_1", 1, "\"src/main.rs\"}"),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": args}),
        json!({"type": "response.output_item.done", "output_index": 1,
               "item": call_item("fc_1", "call_1", "read", args, "completed")}),
        json!({"type": "response.completed", "response": snapshot(
            "completed",
            json!([reasoning_item(&[first, second], Some(encrypted), "completed"),
                   call_item("fc_1", "call_1", "read", args, "completed")]),
            usage_json(2000, 1536, 300, 256),
        )}),
    ]);
    sse(&events)
}

#[tokio::test]
async fn reasoning_summary_and_encrypted_content_round_trip_into_the_next_request() {
    let server = MockServer::start(vec![
        Scripted::sse(&reasoning_stream(), Split::Every(5)),
        Scripted::sse(&text_stream(), Split::Whole),
    ])
    .await;
    let client = client(&server);
    let mut first = request();
    first.tools = vec![read_tool()];
    first.reasoning = Some(ReasoningEffort::High);
    let (events, error) = drain(client.stream(first.clone()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert!(events.contains(&StreamEvent::ReasoningSignature {
        signature: "gAAAAABo-ENCRYPTED+/=".into(),
        redacted: false,
        id: Some("rs_68af".into()),
        origin: Some("openai-responses".into()),
    }));
    let response = collect_events(events);
    assert_eq!(
        response.message.content,
        vec![
            ContentPart::Reasoning(Reasoning {
                text: "**Planning** the read\n\nThen answer.".into(),
                signature: Some("gAAAAABo-ENCRYPTED+/=".into()),
                redacted: false,
                id: Some("rs_68af".into()),
                origin: Some("openai-responses".into()),
            }),
            ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"src/main.rs"}"#)),
        ]
    );
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 2000,
            cached_input_tokens: 1536,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: 300,
            reasoning_tokens: 256,
        }
    );
    assert_eq!(response.stop_reason, StopReason::ToolUse);

    let body = server.requests()[0].json();
    assert_eq!(
        body["reasoning"],
        json!({"effort": "high", "summary": "auto"})
    );
    assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(body["store"], false);

    // The next turn sends the reasoning back, before the call it led to.
    let mut second = first;
    second.messages.push(response.message);
    second
        .messages
        .push(Message::tool_result("call_1", "fn main() {}"));
    let _ = drain(client.stream(second).await.unwrap()).await;
    let body = server.requests()[1].json();
    assert_eq!(
        body["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "reasoning", "id": "rs_68af",
             "summary": [{"type": "summary_text", "text": "**Planning** the read\n\nThen answer."}],
             "encrypted_content": "gAAAAABo-ENCRYPTED+/="},
            {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{\"path\":\"src/main.rs\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "fn main() {}"},
        ])
    );
}

#[tokio::test]
async fn open_weight_reasoning_text_and_delta_less_servers_are_understood() {
    // A compatible server (gpt-oss behind vLLM, say) streams raw reasoning
    // text, and sends the message only whole, in `output_item.done`, and a
    // last call only in the final snapshot.
    let args = r#"{"path":"x"}"#;
    let mut events = created().to_vec();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        json!({"type": "response.reasoning_text.delta", "item_id": "rs_1", "output_index": 0, "content_index": 0, "delta": "The user "}),
        json!({"type": "response.reasoning_text.delta", "item_id": "rs_1", "output_index": 0, "content_index": 0, "delta": "greets."}),
        json!({"type": "response.reasoning_text.done", "item_id": "rs_1", "output_index": 0, "content_index": 0, "text": "The user greets."}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": {"id": "rs_1", "type": "reasoning", "summary": [],
                        "content": [{"type": "reasoning_text", "text": "The user greets."}]}}),
        json!({"type": "response.output_item.done", "output_index": 1,
               "item": message_item("msg_2", "completed", Some("Hello!"))}),
        json!({"type": "response.completed", "response": snapshot(
            "completed",
            json!([{"id": "rs_1", "type": "reasoning", "summary": [],
                    "content": [{"type": "reasoning_text", "text": "The user greets."}]},
                   message_item("msg_2", "completed", Some("Hello!")),
                   call_item("fc_9", "call_9", "read", args, "completed")]),
            usage_json(10, 0, 20, 12),
        )}),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&sse(&events), Split::Every(3))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        events,
        vec![
            start(),
            StreamEvent::ReasoningDelta {
                text: "The user ".into(),
                id: Some("rs_1".into())
            },
            StreamEvent::ReasoningDelta {
                text: "greets.".into(),
                id: Some("rs_1".into())
            },
            StreamEvent::TextDelta {
                text: "Hello!".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_9".into(),
                name: "read".into(),
                signature: None,
            },
            StreamEvent::ToolCallArgsDelta {
                index: 0,
                delta: args.into()
            },
            StreamEvent::ToolCallEnd {
                index: 0,
                signature: None
            },
            StreamEvent::Usage(Usage {
                input_tokens: 10,
                output_tokens: 20,
                reasoning_tokens: 12,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::ToolUse
            },
        ]
    );
}

fn incomplete_stream(reason: &str) -> String {
    let mut events = created().to_vec();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": message_item("msg_1", "in_progress", None)}),
        text_delta("msg_1", 0, "Once upon"),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": message_item("msg_1", "incomplete", Some("Once upon"))}),
    ]);
    let mut last = snapshot(
        "incomplete",
        json!([message_item("msg_1", "incomplete", Some("Once upon"))]),
        usage_json(9, 0, 16, 0),
    );
    last["incomplete_details"] = json!({"reason": reason});
    events.push(json!({"type": "response.incomplete", "response": last}));
    sse(&events)
}

#[tokio::test]
async fn incomplete_responses_stop_for_max_tokens_or_the_content_filter() {
    for (reason, expected) in [
        ("max_output_tokens", StopReason::MaxTokens),
        ("content_filter", StopReason::ContentFilter),
    ] {
        let server = MockServer::start(vec![Scripted::sse(
            &incomplete_stream(reason),
            Split::Whole,
        )])
        .await;
        let mut req = request();
        req.max_tokens = Some(16);
        let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        assert_well_ordered(&events);
        assert_eq!(text_of(&events), "Once upon");
        assert_eq!(
            events[events.len() - 2..],
            [
                StreamEvent::Usage(Usage {
                    input_tokens: 9,
                    output_tokens: 16,
                    ..Usage::default()
                }),
                StreamEvent::Stop { reason: expected }
            ]
        );
        assert_eq!(server.requests()[0].json()["max_output_tokens"], 16);
    }
}

#[tokio::test]
async fn a_refusal_is_text_with_a_refusal_stop() {
    let refusal = "I can't help with that.";
    let item = |content: Value, status: &str| json!({"id": "msg_r", "type": "message", "status": status, "role": "assistant", "content": content});
    let mut events = created().to_vec();
    events.extend([
        json!({"type": "response.output_item.added", "output_index": 0, "item": item(json!([]), "in_progress")}),
        json!({"type": "response.content_part.added", "item_id": "msg_r", "output_index": 0, "content_index": 0,
               "part": {"type": "refusal", "refusal": ""}}),
        json!({"type": "response.refusal.delta", "item_id": "msg_r", "output_index": 0, "content_index": 0, "delta": "I can't "}),
        json!({"type": "response.refusal.delta", "item_id": "msg_r", "output_index": 0, "content_index": 0, "delta": "help with that."}),
        json!({"type": "response.refusal.done", "item_id": "msg_r", "output_index": 0, "content_index": 0, "refusal": refusal}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": item(json!([{"type": "refusal", "refusal": refusal}]), "completed")}),
        json!({"type": "response.completed", "response": snapshot(
            "completed",
            json!([item(json!([{"type": "refusal", "refusal": refusal}]), "completed")]),
            usage_json(5, 0, 7, 0),
        )}),
    ]);
    // Streamed, and known only from the finished item (no deltas).
    let whole_item: Vec<Value> = events
        .iter()
        .filter(|event| {
            !matches!(
                event["type"].as_str(),
                Some("response.refusal.delta" | "response.refusal.done")
            )
        })
        .cloned()
        .collect();
    for script in [events, whole_item] {
        let server = MockServer::start(vec![Scripted::sse(&sse(&script), Split::Every(11))]).await;
        let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        assert_well_ordered(&events);
        assert_eq!(text_of(&events), refusal);
        // Marked as a refusal before its words, for the gateway's encoders.
        let marked = events
            .iter()
            .position(|event| *event == StreamEvent::RefusalStart)
            .unwrap();
        assert!(
            matches!(&events[marked + 1], StreamEvent::TextDelta { .. }),
            "{events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Stop {
                reason: StopReason::Refusal
            })
        );
    }
}

fn failed_stream(error: Value) -> String {
    let mut events = created().to_vec();
    events.push(
        json!({"type": "response.output_item.added", "output_index": 0,
                       "item": message_item("msg_1", "in_progress", None)}),
    );
    events.push(text_delta("msg_1", 0, "par"));
    let mut last = snapshot("failed", json!([]), Value::Null);
    last["error"] = error;
    events.push(json!({"type": "response.failed", "response": last}));
    sse(&events)
}

#[tokio::test]
async fn response_failed_is_mapped_to_the_error_it_carries() {
    let cases = [
        (
            json!({"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-5 on tokens per min (TPM). Please try again in 1.5s."}),
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
            },
        ),
        (
            json!({"code": "context_length_exceeded", "message": "Your input exceeds the context window of this model. Please adjust your input and try again."}),
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None,
            },
        ),
        (
            json!({"code": "server_error", "message": "The model failed to generate a response."}),
            ErrorKind::Server,
        ),
        (
            json!({"code": "invalid_prompt", "message": "Invalid prompt: flagged."}),
            ErrorKind::InvalidRequest,
        ),
        (json!(null), ErrorKind::Server),
    ];
    for (error, kind) in cases {
        let server = MockServer::start(vec![Scripted::sse(
            &failed_stream(error.clone()),
            Split::Whole,
        )])
        .await;
        let (events, failure) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "par", "{error}");
        let failure = failure.expect("an error");
        assert_eq!(failure.kind, kind, "{error}");
        assert_eq!(failure.provider, "test-openai");
        if let Some(message) = error["message"].as_str() {
            assert!(failure.message.contains(message), "{failure}");
        }
        assert!(
            !events
                .iter()
                .any(|event| matches!(event, StreamEvent::Stop { .. })),
            "a failed stream has no Stop"
        );
    }
}

#[tokio::test]
async fn error_events_are_mapped_and_redacted() {
    let cases = [
        // OpenAI's flat form.
        (
            json!({"type": "error", "code": "server_is_overloaded", "message": "The server is overloaded.", "param": null}),
            ErrorKind::Overloaded,
        ),
        // The nested form some compatible servers send.
        (
            json!({"type": "error", "error": {"type": "invalid_request_error", "code": null, "message": "Unsupported parameter: 'temperature'.", "param": "temperature"}}),
            ErrorKind::InvalidRequest,
        ),
        (
            json!({"type": "error", "code": "rate_limit_exceeded", "message": "Please try again in 20ms.", "param": null}),
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(20)),
            },
        ),
        (
            json!({"type": "error", "code": "invalid_api_key", "message": format!("Incorrect API key provided: {KEY}."), "param": null}),
            ErrorKind::Authentication,
        ),
    ];
    for (error_event, kind) in cases {
        let mut events = created().to_vec();
        events.push(
            json!({"type": "response.output_item.added", "output_index": 0,
                           "item": message_item("msg_1", "in_progress", None)}),
        );
        events.push(text_delta("msg_1", 0, "half"));
        events.push(error_event.clone());
        let server = MockServer::start(vec![Scripted::sse(&sse(&events), Split::Whole)]).await;
        let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "half");
        let error = error.expect("an error");
        assert_eq!(error.kind, kind, "{error_event}");
        assert!(
            !error.message.contains("0123456789") && !error.to_string().contains(KEY),
            "the key leaked: {error}"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_before_response_completed_is_a_connection_error() {
    let mut events = text_events(&["cut ", "short"]);
    events.pop(); // No response.completed.
    let server = MockServer::start(vec![Scripted::sse(&sse(&events), Split::Every(64))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "cut short");
    let error = error.expect("truncation is an error");
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(error.message.contains("response.completed"), "{error}");
}

#[tokio::test]
async fn malformed_events_are_server_errors() {
    let text = sse_text(&[
        ("response.output_text.delta", "{not json"),
        ("response.completed", "{}"),
    ]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (_, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(error.unwrap().kind, ErrorKind::Server);

    // Arguments for a call that was never announced cannot be placed.
    let text = sse(&[args_delta("fc_x", 0, "{}")]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (_, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(error.unwrap().kind, ErrorKind::Server);
}

#[tokio::test]
async fn every_error_status_is_mapped() {
    let error = |code: &str, message: &str| json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let cases = [
        (
            400,
            error("invalid_value", "Invalid value for 'input'."),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            error(
                "context_length_exceeded",
                "Your input exceeds the context window of this model. Please adjust your input and try again.",
            ),
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None,
            },
        ),
        (
            401,
            error("invalid_api_key", "Incorrect API key provided."),
            ErrorKind::Authentication,
        ),
        (
            403,
            error(
                "unsupported_country_region_territory",
                "Country, region, or territory not supported",
            ),
            ErrorKind::Permission,
        ),
        (
            404,
            error(
                "model_not_found",
                "The model `gpt-9` does not exist or you do not have access to it.",
            ),
            ErrorKind::NotFound,
        ),
        (
            429,
            error("rate_limit_exceeded", "Rate limit reached."),
            ErrorKind::RateLimited { retry_after: None },
        ),
        (
            500,
            error("server_error", "The server had an error."),
            ErrorKind::Server,
        ),
        (
            503,
            error("server_is_overloaded", "Overloaded."),
            ErrorKind::Overloaded,
        ),
        (
            529,
            error("overloaded", "Overloaded."),
            ErrorKind::Overloaded,
        ),
    ];
    for (status, body, kind) in cases {
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        let mut options = options("o", format!("{}/v1", server.url()));
        options.http.retry = freehold_llm::retry::RetryPolicy::none();
        let client = OpenAiResponsesClient::new(options).unwrap();
        let Err(error) = client.stream(request()).await else {
            panic!("status {status} must fail")
        };
        assert_eq!(error.kind, kind, "status {status}");
        assert_eq!(error.status, Some(status));
        let error = client.complete(request()).await.unwrap_err();
        assert_eq!(error.kind, kind, "status {status} (complete)");
        assert_eq!(server.requests().len(), 2, "no retries");
    }
}

#[tokio::test]
async fn retries_server_errors_and_honours_retry_after() {
    let server = MockServer::start(vec![
        Scripted::json(
            500,
            json!({"error": {"message": "boom", "code": "server_error"}}),
        ),
        Scripted::json(
            429,
            json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
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
async fn gives_up_after_max_retries_with_the_last_error() {
    let server = MockServer::start(vec![Scripted::json(
        503,
        json!({"error": {"message": "busy", "code": "server_is_overloaded"}}),
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
        Scripted::sse(&text_stream(), Split::Every(200)).stall_after(2, Duration::from_secs(30));
    let server = MockServer::start(vec![script]).await;
    let mut options = options("o", format!("{}/v1", server.url()));
    // Long enough that a loaded machine does not mistake slow headers for
    // silence; the stall is 30 s.
    options.http.idle_timeout = Duration::from_secs(1);
    let client = OpenAiResponsesClient::new(options).unwrap();
    let started = Instant::now();
    let (_events, error) = drain(client.stream(request()).await.unwrap()).await;
    let error = error.expect("a timeout");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A non-streamed answer with reasoning, text and a call.
fn complete_body() -> Value {
    let mut body = snapshot(
        "completed",
        json!([
            {"id": "rs_9", "type": "reasoning", "status": "completed",
             "summary": [{"type": "summary_text", "text": "Need the file."}],
             "encrypted_content": "gAAAAAB-secret"},
            message_item("msg_9", "completed", Some("Reading it.")),
            call_item("fc_9", "call_9", "read", r#"{"path":"x"}"#, "completed"),
        ]),
        usage_json(2048, 1024, 200, 128),
    );
    body["reasoning"] = json!({"effort": "low", "summary": "auto"});
    body
}

#[tokio::test]
async fn complete_decodes_a_non_streamed_answer_and_encodes_every_option() {
    let server = MockServer::start(vec![Scripted::json(200, complete_body())]).await;
    let client = client(&server);
    let mut req = request();
    req.tools = vec![read_tool()];
    req.tool_choice = ToolChoice::Tool {
        name: "read".into(),
    };
    req.parallel_tool_calls = Some(false);
    req.max_tokens = Some(64);
    req.stop = vec!["END".into()];
    req.sampling.temperature = Some(0.5);
    req.sampling.top_p = Some(0.25);
    req.sampling.seed = Some(7);
    req.sampling.top_k = Some(40);
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    req.reasoning = Some(ReasoningEffort::Low);
    let response = client.complete(req.clone()).await.unwrap();
    assert_eq!(
        response,
        ChatResponse {
            id: Some("resp_67c9fdcecf488190".into()),
            model: Some(MODEL.into()),
            message: Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "Need the file.".into(),
                        signature: Some("gAAAAAB-secret".into()),
                        redacted: false,
                        id: Some("rs_9".into()),
                        origin: Some("openai-responses".into()),
                    }),
                    ContentPart::Text {
                        text: "Reading it.".into()
                    },
                    ContentPart::ToolCall(ToolCall::new("call_9", "read", r#"{"path":"x"}"#)),
                ],
            },
            usage: Usage {
                input_tokens: 2048,
                cached_input_tokens: 1024,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                output_tokens: 200,
                reasoning_tokens: 128,
            },
            stop_reason: StopReason::ToolUse,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        }
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/responses");
    // Stop sequences, seed and top-k have no field in this API: dropped.
    assert_eq!(
        sent.json(),
        json!({
            "model": "gpt-5",
            "instructions": "Be brief.",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            "tools": [{"type": "function", "name": "read", "description": "Read a file",
                       "parameters": read_tool().parameters, "strict": false}],
            "tool_choice": {"type": "function", "name": "read"},
            "parallel_tool_calls": false,
            "max_output_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.25,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "store": false,
        })
    );

    // The reasoning item goes back with its id, before the text and call.
    req.messages.push(response.message);
    req.messages.push(Message::tool_result("call_9", "data"));
    let _ = client.complete(req).await.unwrap();
    let input = server.requests()[1].json()["input"].clone();
    assert_eq!(
        input,
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "Need the file."}],
             "encrypted_content": "gAAAAAB-secret"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading it.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_9", "name": "read", "arguments": "{\"path\":\"x\"}"},
            {"type": "function_call_output", "call_id": "call_9", "output": "data"},
        ])
    );
}

#[tokio::test]
async fn complete_maps_incomplete_failed_and_refused_statuses() {
    let mut incomplete = snapshot(
        "incomplete",
        json!([message_item("m", "incomplete", Some("Once"))]),
        usage_json(3, 0, 1, 0),
    );
    incomplete["incomplete_details"] = json!({"reason": "max_output_tokens"});
    let mut failed = snapshot("failed", json!([]), Value::Null);
    failed["error"] =
        json!({"code": "server_error", "message": "The model failed to generate a response."});
    let refused = snapshot(
        "completed",
        json!([{"id": "m", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "refusal", "refusal": "No."}]}]),
        usage_json(3, 0, 1, 0),
    );
    let server = MockServer::start(vec![
        Scripted::json(200, incomplete),
        Scripted::json(200, failed),
        Scripted::json(200, refused),
    ])
    .await;
    let client = client(&server);

    let response = client.complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::MaxTokens);
    assert_eq!(response.message.text(), "Once");

    let error = client.complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.message.contains("failed to generate"), "{error}");

    let response = client.complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::Refusal);
    assert_eq!(response.message.text(), "No.");
    assert!(
        server.requests()[0].json().get("stream").is_none(),
        "non-streamed requests omit `stream`"
    );
}

#[tokio::test]
async fn the_request_body_is_encoded_field_by_field() {
    let server = MockServer::start(vec![Scripted::json(200, complete_body())]).await;
    let client = client(&server);
    let mut req = ChatRequest::new(
        "gpt-4.1",
        vec![
            Message::system("Be brief."),
            Message::user("Look:"),
            Message::system("Answer in English."),
        ],
    );
    req.messages[1].content.extend([
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
    ]);
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            // Reasoning without encrypted content cannot be sent back.
            ContentPart::Reasoning(Reasoning {
                text: "hidden".into(),
                ..Reasoning::default()
            }),
            ContentPart::Text {
                text: "Let me ".into(),
            },
            ContentPart::Text {
                text: "check.".into(),
            },
            ContentPart::ToolCall(ToolCall::new("c1", "read", "{\"path\":\"a\"}")),
            ContentPart::ToolCall(ToolCall::new("c2", "grep", "")),
        ],
    });
    req.messages
        .push(Message::tool_result("c1", "fn main() {}"));
    // Anthropic-style: a tool result inside a user message, then text.
    req.messages.push(Message {
        role: Role::User,
        content: vec![
            ContentPart::ToolResult(freehold_protocol::ToolResult {
                call_id: "c2".into(),
                content: "no match".into(),
                is_error: true,
            }),
            ContentPart::Text {
                text: "Thanks".into(),
            },
        ],
    });
    req.tools = vec![read_tool(), grep_tool()];
    req.response_format = Some(ResponseFormat::JsonObject);
    let choices = [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Required, json!("required")),
    ];
    for (choice, _) in &choices {
        req.tool_choice = choice.clone();
        client.complete(req.clone()).await.unwrap();
    }
    let requests = server.requests();
    for (i, (_, expected)) in choices.iter().enumerate() {
        assert_eq!(&requests[i].json()["tool_choice"], expected);
    }
    let body = requests[0].json();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4.1",
            "instructions": "Be brief.\n\nAnswer in English.",
            "input": [
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Look:"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
                ]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
                {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{\"path\":\"a\"}"},
                {"type": "function_call", "call_id": "c2", "name": "grep", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "fn main() {}"},
                {"type": "function_call_output", "call_id": "c2", "output": "no match"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
            ],
            "tools": [
                {"type": "function", "name": "read", "description": "Read a file",
                 "parameters": read_tool().parameters, "strict": false},
                {"type": "function", "name": "grep", "parameters": grep_tool().parameters, "strict": false},
            ],
            "tool_choice": "auto",
            "text": {"format": {"type": "json_object"}},
            "store": false,
        })
    );
    assert!(
        requests[0].header("authorization").is_some(),
        "the key is sent"
    );
}

#[tokio::test]
async fn no_key_means_no_authorization_header() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Whole)]).await;
    let client =
        OpenAiResponsesClient::new(options("local", format!("{}/v1", server.url()))).unwrap();
    let response = collect_stream("local", client.stream(request()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.message.text(), "Héllo, wörld ✓");
    assert!(server.requests()[0].header("authorization").is_none());
}

#[tokio::test]
async fn lists_models() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"object": "list", "data": [
            {"id": "gpt-5", "object": "model", "created": 1754425777, "owned_by": "system"},
            {"id": "gpt-oss-120b", "object": "model", "max_model_len": 131072},
        ]}),
    )])
    .await;
    let client = client(&server);
    let models = client.list_models().await.unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].id, "gpt-5");
    assert_eq!(models[0].provider, "test-openai");
    assert_eq!(models[1].context_window, Some(131072));
    let sent = &server.requests()[0];
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.uri, "/v1/models");
    assert!(client.capabilities("gpt-5").reasoning);
    assert!(!client.capabilities("gpt-4.1").reasoning);
    assert_eq!(
        OpenAiResponsesClient::DEFAULT_BASE_URL,
        "https://api.openai.com/v1"
    );
}

#[tokio::test]
async fn counts_input_tokens_with_openais_own_endpoint() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"object": "response.input_tokens", "input_tokens": 81}),
    )])
    .await;
    let mut req = request();
    req.tools = vec![read_tool()];
    req.max_tokens = Some(50);
    req.reasoning = Some(ReasoningEffort::Low);
    assert_eq!(
        client(&server).count_input_tokens(req).await.unwrap(),
        Some(81)
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1/responses/input_tokens");
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    let body = sent.json();
    assert_eq!(body["model"], "gpt-5");
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["tools"][0]["name"], "read");
    assert_eq!(body["reasoning"]["effort"], "low");
    for refused in ["stream", "store", "max_output_tokens", "include"] {
        assert_eq!(body.get(refused), None, "{refused} in {body}");
    }

    // A Responses-compatible server without the endpoint: no count.
    let server = MockServer::start(vec![Scripted::json(404, json!({"detail": "Not Found"}))]).await;
    assert_eq!(
        client(&server).count_input_tokens(request()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn the_openai_preset_counts_chat_completions_with_the_responses_endpoint() {
    use freehold_llm::client::OpenAiChatClient;
    use freehold_llm::presets::preset;

    use freehold_llm::wire::openai_chat::TokenCountEndpoint;

    let dialect = preset("openai").unwrap().dialect;
    assert_eq!(
        dialect.token_count,
        TokenCountEndpoint::ResponsesInputTokens
    );
    assert_eq!(
        preset("groq").unwrap().dialect.token_count,
        TokenCountEndpoint::None
    );
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"object": "response.input_tokens", "input_tokens": 12}),
    )])
    .await;
    let options = options("openai", format!("{}/v1", server.url())).with_key(ApiKey::new(KEY));
    let chat = OpenAiChatClient::new(options, dialect).unwrap();
    assert_eq!(chat.count_input_tokens(request()).await.unwrap(), Some(12));
    assert_eq!(server.requests()[0].uri, "/v1/responses/input_tokens");
}

/// A client of OpenAI's own API, as the `openai-responses` preset makes it.
fn openai_api_client(server: &MockServer) -> OpenAiResponsesClient {
    client(server).with_openai_api(true)
}

fn answer(text: &str) -> Scripted {
    Scripted::json(
        200,
        snapshot(
            "completed",
            json!([message_item("msg_1", "completed", Some(text))]),
            usage_json(12, 0, 3, 0),
        ),
    )
}

/// A model that takes no effort is asked again without `reasoning` (and
/// without the encrypted reasoning it would refuse too), and from then on
/// at once; one that takes other efforts gets the nearest.
#[tokio::test]
async fn efforts_a_model_refuses_are_replaced_by_what_it_takes() {
    let server = MockServer::start(vec![
        Scripted::json(
            400,
            json!({"error": {"message": "Unsupported parameter: 'reasoning.effort' is not \
                   supported with this model.", "type": "invalid_request_error",
                   "param": "reasoning.effort", "code": "unsupported_parameter"}}),
        ),
        answer("one"),
        answer("two"),
        Scripted::json(
            400,
            json!({"error": {"message": "Unsupported value: 'minimal' is not supported with the \
                   'gpt-5-pro' model. Supported values are: 'high'.",
                   "type": "invalid_request_error", "param": "reasoning.effort",
                   "code": "unsupported_value"}}),
        ),
        answer("three"),
    ])
    .await;
    let openai = openai_api_client(&server);
    let mut request = request();
    request.model = "gpt-4.1".into();
    request.reasoning = Some(ReasoningEffort::Medium);
    for expected in ["one", "two"] {
        let answer = openai.complete(request.clone()).await.unwrap();
        assert_eq!(answer.message.text(), expected);
    }
    request.model = "gpt-5-pro".into();
    request.reasoning = Some(ReasoningEffort::Off);
    let answer = openai.complete(request).await.unwrap();
    assert_eq!(answer.message.text(), "three");

    let sent: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[0]["reasoning"]["effort"], "medium");
    assert_eq!(sent[0]["include"], json!(["reasoning.encrypted_content"]));
    for retried in &sent[1..3] {
        assert!(retried.get("reasoning").is_none(), "{retried}");
        assert!(retried.get("include").is_none(), "{retried}");
    }
    // gpt-5's least is `minimal`; its pro takes `high` alone.
    assert_eq!(sent[3]["reasoning"]["effort"], "minimal");
    assert_eq!(sent[4]["reasoning"]["effort"], "high");
}

/// Codex's settings that only OpenAI reads reach OpenAI's Responses API:
/// `prompt_cache_key`, `text.verbosity` beside a format (to a model that
/// takes it), `service_tier`.
/// A server not known as OpenAI's gets none of them, and no effort for no
/// reasoning.
#[tokio::test]
async fn codex_settings_reach_openai_responses() {
    let mut request = request();
    request.model = "gpt-5.2".into();
    request.cache_key = Some("019a-thread".into());
    request.verbosity = Some(freehold_protocol::Verbosity::High);
    request.service_tier = Some("auto".into());
    request.reasoning = Some(ReasoningEffort::Off);
    request.response_format = Some(ResponseFormat::JsonObject);

    let server = MockServer::start(vec![answer("a"), answer("b")]).await;
    openai_api_client(&server)
        .complete(request.clone())
        .await
        .unwrap();
    client(&server).complete(request).await.unwrap();
    let sent: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["prompt_cache_key"], "019a-thread");
    assert_eq!(sent[0]["service_tier"], "auto");
    assert_eq!(
        sent[0]["text"],
        json!({"format": {"type": "json_object"}, "verbosity": "high"})
    );
    // No summary of reasoning that was not asked for: OpenAI refuses
    // summaries to organisations it has not verified.
    assert_eq!(sent[0]["reasoning"], json!({"effort": "none"}));
    for field in ["prompt_cache_key", "service_tier", "reasoning"] {
        assert!(sent[1].get(field).is_none(), "{field}: {}", sent[1]);
    }
    assert_eq!(sent[1]["text"], json!({"format": {"type": "json_object"}}));
}

/// Through the Chat Completions client of OpenAI's API, a streamed request
/// with tools of a model that refuses reasoning beside them is streamed
/// from the Responses API.
#[tokio::test]
async fn a_chat_stream_refused_beside_tools_streams_from_the_responses_api() {
    let server = MockServer::start(vec![
        Scripted::json(
            400,
            json!({"error": {"message": "Function tools with reasoning_effort are not supported \
                   for gpt-5.5 in /v1/chat/completions. Please use /v1/responses instead.",
                   "type": "invalid_request_error", "param": "reasoning_effort", "code": null}}),
        ),
        streamed(&text_stream(), Split::Whole),
    ])
    .await;
    let options = options("openai", format!("{}/v1", server.url())).with_key(ApiKey::new(KEY));
    let dialect = freehold_llm::wire::openai_chat::Dialect {
        openai_api: true,
        ..Default::default()
    };
    let chat = freehold_llm::client::OpenAiChatClient::new(options, dialect).unwrap();
    let mut request = request();
    request.model = "gpt-5.5".into();
    request.tools = vec![read_tool()];
    let (events, error) = drain(chat.stream(request).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    let paths: Vec<String> = server.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/responses"]);
    assert_eq!(server.requests()[1].json()["stream"], true);
}

/// The Responses API has no stop sequences: none is sent, and the client
/// ends the answer at them, as a Chat Completions server would have.
#[tokio::test]
async fn stop_sequences_are_applied_to_the_answer_not_sent() {
    let server = MockServer::start(vec![streamed(
        &sse(&text_events(&["Para one.\n", "\nPara two."])),
        Split::Every(5),
    )])
    .await;
    let mut asked = request();
    asked.stop = vec!["\n\n".into()];
    let (events, error) = drain(client(&server).stream(asked).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "Para one.");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::StopSequence(Some("\n\n".into()))
        })
    );
    let sent = server.requests()[0].json();
    assert!(sent.get("stop").is_none(), "{sent}");

    // A whole answer too.
    let whole = snapshot(
        "completed",
        json!([message_item("msg_1", "completed", Some("One.\n\nTwo."))]),
        usage_json(12, 0, 5, 0),
    );
    let server = MockServer::start(vec![Scripted::json(200, whole)]).await;
    let mut asked = request();
    asked.stop = vec!["\n\n".into()];
    let answer = client(&server).complete(asked).await.unwrap();
    assert_eq!(answer.message.text(), "One.");
    assert_eq!(
        answer.stop_reason,
        StopReason::StopSequence(Some("\n\n".into()))
    );
    assert_eq!(answer.usage.output_tokens, 5);
    assert!(server.requests()[0].json().get("stop").is_none());
}
