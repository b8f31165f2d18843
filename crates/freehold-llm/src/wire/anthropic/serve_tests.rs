//! Tests of the gateway direction: round trips through the client side.

use std::time::Duration;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, LlmError, Message, Reasoning,
    ReasoningEffort, Role, Sampling, StopReason, StreamEvent, ToolCall, ToolChoice, ToolResult,
    ToolSpec, Usage,
};
use serde_json::{Value, json};

use super::*;
use crate::context_edit::CompactEdit;
use crate::wire::serve::test_support::replay;
use crate::wire::serve::{DecodeError, SseData, SseFrame};

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("The {name} tool"),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        strict: false,
    }
}

fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a coding agent.\n\nBe careful."),
        Message {
            role: Role::User,
            content: vec![
                ContentPart::Text {
                    text: "Look at these".into(),
                },
                ContentPart::Image {
                    source: ImageSource::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    },
                },
                ContentPart::Image {
                    source: ImageSource::Url {
                        url: "https://example.com/a.jpg".into(),
                    },
                },
            ],
        },
        Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "Need to read a.".into(),
                    signature: Some("sig-1".into()),
                    origin: Some(ORIGIN.into()),
                    ..Reasoning::default()
                }),
                ContentPart::Reasoning(Reasoning {
                    signature: Some("opaque".into()),
                    redacted: true,
                    origin: Some(ORIGIN.into()),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "Reading.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("toolu_1", "read", r#"{"path":"a"}"#)),
                ContentPart::ToolCall(ToolCall::new("toolu_2", "read", r#"{"path":"b"}"#)),
            ],
        },
        Message {
            role: Role::Tool,
            content: vec![
                ContentPart::ToolResult(ToolResult {
                    call_id: "toolu_1".into(),
                    content: "contents of a".into(),
                    is_error: false,
                }),
                ContentPart::ToolResult(ToolResult {
                    call_id: "toolu_2".into(),
                    content: "no such file".into(),
                    is_error: true,
                }),
            ],
        },
        Message::user("Go on"),
        Message::assistant("Done."),
        Message::user("Thanks"),
    ]
}

#[test]
fn requests_round_trip_through_the_client_encoder() {
    let request = ChatRequest {
        model: "claude-x".into(),
        messages: conversation(),
        tools: vec![tool("read"), tool("write")],
        tool_choice: ToolChoice::Tool {
            name: "read".into(),
        },
        parallel_tool_calls: Some(false),
        sampling: Sampling {
            temperature: Some(0.25),
            top_p: Some(0.5),
            top_k: Some(10),
            ..Sampling::default()
        },
        max_tokens: Some(1000),
        stop: vec!["END".into()],
        response_format: None,
        reasoning: None,
        reasoning_budget: None,
        reasoning_effort_name: None,
        forwarded_headers: Vec::new(),
        prompt_cache: None,
        cache_key: None,
        verbosity: None,
        service_tier: None,
        context_management: None,
        reasoning_display: None,
        end_user: Some("user-7".into()),
    };
    let options = EncodeOptions {
        stream: true,
        end_user: true,
        ..EncodeOptions::default()
    };
    let wire = encode_request(&request, options);
    let wire: MessagesRequest =
        serde_json::from_value(serde_json::to_value(&wire).unwrap()).unwrap();
    let (decoded, serve) = decode_request(wire).unwrap();
    assert_eq!(decoded, request);
    assert!(serve.stream);

    // Thinking and the other tool choices.
    for (effort, choice) in [
        (ReasoningEffort::Minimal, ToolChoice::Auto),
        (ReasoningEffort::Low, ToolChoice::None),
        (ReasoningEffort::Medium, ToolChoice::Auto),
        (ReasoningEffort::High, ToolChoice::Auto),
    ] {
        let request = ChatRequest {
            reasoning: Some(effort),
            tool_choice: choice,
            parallel_tool_calls: None,
            sampling: Sampling::default(),
            max_tokens: Some(32_000),
            ..request.clone()
        };
        let (decoded, serve) =
            decode_request(encode_request(&request, EncodeOptions::default())).unwrap();
        // The level's budget comes back as the budget asked for; the end
        // user goes to Anthropic's own API alone.
        let expected = ChatRequest {
            reasoning_budget: Some(effort.budget_tokens()),
            end_user: None,
            ..request.clone()
        };
        assert_eq!(decoded, expected);
        assert!(!serve.stream);
    }
    let required = ChatRequest {
        tool_choice: ToolChoice::Required,
        ..request
    };
    let (decoded, _) = decode_request(encode_request(&required, options)).unwrap();
    assert_eq!(decoded, required);
}

fn full_response() -> ChatResponse {
    ChatResponse {
        id: Some("msg_abc".into()),
        model: Some("claude-x".into()),
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "Let me think.".into(),
                    signature: Some("sig".into()),
                    origin: Some(ORIGIN.into()),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "I will read both.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("toolu_1", "read", r#"{"path":"a"}"#)),
                ContentPart::ToolCall(ToolCall::new("toolu_2", "grep", r#"{"path":"b","q":"x"}"#)),
            ],
        },
        usage: Usage {
            input_tokens: 1000,
            cached_input_tokens: 600,
            cache_write_tokens: 100,
            cache_write_1h_tokens: 0,
            output_tokens: 50,
            reasoning_tokens: 0,
        },
        stop_reason: StopReason::ToolUse,
        timings: None,
        context_edits: Vec::new(),
        refusal_details: None,
    }
}

#[test]
fn responses_round_trip_through_the_client_decoder() {
    let response = full_response();
    let wire = encode_response(&response, "claude-x");
    let json = serde_json::to_value(&wire).unwrap();
    assert_eq!(json["type"], "message");
    assert_eq!(json["role"], "assistant");
    assert_eq!(json["stop_reason"], "tool_use");
    assert!(json["stop_sequence"].is_null());
    assert_eq!(json["usage"]["input_tokens"], 300);
    assert_eq!(json["usage"]["cache_read_input_tokens"], 600);
    assert_eq!(json["content"][2]["input"], json!({"path": "a"}));
    let back = decode_response(serde_json::from_value(json).unwrap(), None);
    assert_eq!(back, response);

    let plain = ChatResponse {
        id: None,
        message: Message::assistant("hi"),
        stop_reason: StopReason::MaxTokens,
        ..full_response()
    };
    let wire = encode_response(&plain, "claude-x");
    assert!(wire.id.starts_with("msg_"), "{}", wire.id);
    assert_eq!(wire.stop_reason.as_deref(), Some("max_tokens"));
}

/// An answer ended by a known stop sequence names it in `stop_sequence`,
/// whole and streamed; one whose sequence is unknown has `null` there.
#[test]
fn the_stop_sequence_that_ended_an_answer_is_named() {
    let stopped = ChatResponse {
        message: Message::assistant("Thought: add"),
        stop_reason: StopReason::StopSequence(Some("\nObservation:".into())),
        ..full_response()
    };
    let wire = encode_response(&stopped, "claude-x");
    assert_eq!(wire.stop_reason.as_deref(), Some("stop_sequence"));
    assert_eq!(wire.stop_sequence.as_deref(), Some("\nObservation:"));
    let back = decode_response(wire, None);
    assert_eq!(back.stop_reason, stopped.stop_reason);

    let unknown = ChatResponse {
        stop_reason: StopReason::StopSequence(None),
        ..stopped.clone()
    };
    assert_eq!(encode_response(&unknown, "claude-x").stop_sequence, None);

    let streamed_delta = |response: &ChatResponse| {
        encode_stream(&response.to_events(), 0)
            .iter()
            .map(json_of)
            .find(|frame| frame["type"] == "message_delta")
            .expect("a message_delta")["delta"]
            .clone()
    };
    assert_eq!(
        streamed_delta(&stopped),
        json!({"stop_reason": "stop_sequence", "stop_sequence": "\nObservation:"})
    );
    assert_eq!(
        streamed_delta(&unknown),
        json!({"stop_reason": "stop_sequence", "stop_sequence": null})
    );
}

/// What a provider said of its refusal reaches an Anthropic client as
/// `stop_details`, whole and on the stream's `message_delta`, as Anthropic's
/// API sends it (`null` for what is not known); an answer that is not a
/// refusal has none, whatever the response holds.
#[test]
fn a_refusals_details_are_its_stop_details() {
    let refused = ChatResponse {
        message: Message::assistant("I can't help with that."),
        stop_reason: StopReason::Refusal,
        refusal_details: Some(RefusalDetails {
            category: Some("bio".into()),
            explanation: None,
        }),
        ..full_response()
    };
    let expected = json!({"type": "refusal", "category": "bio", "explanation": null});
    let wire = encode_response(&refused, "claude-x");
    assert_eq!(wire.stop_reason.as_deref(), Some("refusal"));
    assert_eq!(wire.stop_details, Some(expected.clone()));
    let back = decode_response(wire, None);
    assert_eq!(back.refusal_details, refused.refusal_details);

    let frames = encode_stream(&refused.to_events(), 0);
    let delta = frames
        .iter()
        .map(json_of)
        .find(|frame| frame["type"] == "message_delta")
        .expect("a message_delta");
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "refusal", "stop_sequence": null, "stop_details": expected})
    );

    let answered = ChatResponse {
        stop_reason: StopReason::EndTurn,
        ..refused.clone()
    };
    let json = serde_json::to_value(encode_response(&answered, "claude-x")).unwrap();
    assert!(json.get("stop_details").is_none(), "{json}");
    let delta = encode_stream(&answered.to_events(), 0)
        .iter()
        .map(json_of)
        .find(|frame| frame["type"] == "message_delta")
        .expect("a message_delta");
    assert!(delta["delta"].get("stop_details").is_none(), "{delta}");
}

fn encode_stream(events: &[StreamEvent], estimate: u64) -> Vec<SseFrame> {
    let mut encoder = MessageStreamEncoder::new("claude-x", None, estimate);
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    frames
}

fn json_of(frame: &SseFrame) -> Value {
    match &frame.data {
        SseData::Json(value) => value.clone(),
        SseData::Done | SseData::Comment(_) => panic!("no [DONE] or comment in this protocol"),
    }
}

/// The `type` of each frame, checking that it matches the `event:` name.
fn types(frames: &[SseFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| {
            let kind = json_of(frame)["type"].as_str().unwrap().to_owned();
            assert_eq!(frame.event.as_deref(), Some(kind.as_str()));
            kind
        })
        .collect()
}

#[test]
fn streams_round_trip_through_the_client_decoder() {
    let response = full_response();
    let frames = encode_stream(&response.to_events(), 0);
    assert_eq!(
        types(&frames),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = json_of(&frames[0]);
    assert_eq!(start["message"]["id"], "msg_abc");
    assert_eq!(start["message"]["content"], json!([]));
    assert!(start["message"]["stop_reason"].is_null());
    let indexes: Vec<u64> = frames
        .iter()
        .filter_map(|frame| json_of(frame)["index"].as_u64())
        .collect();
    assert_eq!(indexes, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    let delta = json_of(&frames[14]);
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 50);

    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(back, response);
}

#[test]
fn the_estimate_stands_in_until_usage_comes() {
    let events = [
        StreamEvent::TextDelta { text: "hi".into() },
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ];
    let frames = encode_stream(&events, 42);
    assert_eq!(json_of(&frames[0])["message"]["usage"]["input_tokens"], 42);
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(back.usage.input_tokens, 42);
    assert_eq!(back.message, Message::assistant("hi"));
    assert!(back.id.unwrap().starts_with("msg_"));
}

#[test]
fn calls_closed_only_at_the_end_are_sent_one_block_at_a_time() {
    // The order an OpenAI Chat Completions upstream produces: calls are
    // closed after the last one, and arguments may interleave.
    let events = vec![
        StreamEvent::Start {
            id: Some("chatcmpl-1".into()),
            model: None,
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c0".into(),
            name: "read".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "{\"path\":".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "c1".into(),
            name: "grep".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "{\"q\":".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "\"a\"}".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "1}".into(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::ToolCallEnd {
            index: 1,
            signature: None,
        },
        StreamEvent::Usage(Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        }),
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ];
    let frames = encode_stream(&events, 0);
    assert_eq!(
        types(&frames),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    // Each call's arguments go out whole, in one delta.
    assert_eq!(
        json_of(&frames[2])["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"path\":\"a\"}"})
    );
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(back.id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(
        back.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![
            ToolCall::new("c0", "read", "{\"path\":\"a\"}"),
            ToolCall::new("c1", "grep", "{\"q\":1}"),
        ]
    );
    assert_eq!(back.stop_reason, StopReason::ToolUse);
    assert_eq!(back.usage.input_tokens, 10);
    assert_eq!(back.usage.output_tokens, 5);

    // Without ToolCallEnd nor Stop, finish closes everything.
    let frames = encode_stream(&events[..7], 0);
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(back.message.tool_calls().count(), 2);
    assert_eq!(back.stop_reason, StopReason::ToolUse);
}

#[test]
fn claude_code_requests_decode() {
    // The shape Claude Code sends: system blocks with cache_control,
    // tool results with content blocks (text and an image), thinking.
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "metadata": {"user_id": "user_abc"},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Work carefully.", "cache_control": {"type": "ephemeral"}}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "tools": [
            {"name": "Read", "description": "Reads a file", "input_schema": {
                "type": "object", "properties": {"file_path": {"type": "string"}},
                "required": ["file_path"], "additionalProperties": false,
                "$schema": "http://json-schema.org/draft-07/schema#"},
             "cache_control": {"type": "ephemeral"}}
        ],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "read a.png", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use Read.", "signature": "EqQB"},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "a.png"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [
                    {"type": "text", "text": "An image:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"type": "text", "text": "What is it?"}
            ]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "boom", "is_error": true}
            ]}
        ]
    });
    let wire: MessagesRequest = serde_json::from_value(body).unwrap();
    let (request, options) = decode_request(wire).unwrap();
    assert!(options.stream);
    assert_eq!(request.max_tokens, Some(32000));
    assert_eq!(request.reasoning, Some(ReasoningEffort::Low));
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tools[0].name, "Read");
    assert_eq!(
        request.messages,
        vec![
            Message::system("You are Claude Code.\n\nWork carefully."),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Text {
                        text: "<system-reminder>ctx</system-reminder>".into()
                    },
                    ContentPart::Text {
                        text: "read a.png".into()
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "Use Read.".into(),
                        signature: Some("EqQB".into()),
                        // Unmarked: Anthropic's own.
                        origin: Some(ORIGIN.into()),
                        ..Reasoning::default()
                    }),
                    ContentPart::ToolCall(ToolCall::new(
                        "toolu_01",
                        "Read",
                        r#"{"file_path":"a.png"}"#
                    )),
                ],
            },
            Message::tool_result("toolu_01", "An image:"),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "AAAA".into()
                        }
                    },
                    ContentPart::Text {
                        text: "What is it?".into()
                    },
                ],
            },
            Message::assistant("A cat."),
            Message {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(ToolResult {
                    call_id: "toolu_02".into(),
                    content: "boom".into(),
                    is_error: true,
                })],
            },
        ]
    );
}

fn decode_json(body: Value) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    decode_request(serde_json::from_value::<MessagesRequest>(body).unwrap())
}

/// Claude Code on Claude 4.6 and later asks for adaptive thinking, with
/// its effort in `output_config`.
#[test]
fn adaptive_thinking_decodes_to_its_effort() {
    let effort = |extra: Value| {
        let mut body = json!({"model": "claude-opus-4-7", "max_tokens": 64000,
            "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        decode_json(body).unwrap().0.reasoning
    };
    assert_eq!(effort(json!({})), Some(ReasoningEffort::High));
    for (name, expected) in [
        ("low", ReasoningEffort::Low),
        ("medium", ReasoningEffort::Medium),
        ("high", ReasoningEffort::High),
        ("xhigh", ReasoningEffort::High),
        ("max", ReasoningEffort::High),
    ] {
        assert_eq!(
            effort(json!({"output_config": {"effort": name}})),
            Some(expected),
            "{name}"
        );
    }
    // Effort without thinking does not turn thinking on.
    let (request, _) = decode_json(json!({"model": "claude-opus-4-7", "max_tokens": 100,
        "output_config": {"effort": "low"},
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    assert_eq!(request.reasoning, None);
    // Thinking turned off (as Claude Code asks for its subagents, effort
    // and all) asks for no reasoning; an adaptive request carrying a
    // budget of 0 (as later Claude Code sends) is adaptive.
    assert_eq!(
        effort(json!({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}})),
        Some(ReasoningEffort::Off)
    );
    assert_eq!(
        effort(json!({"thinking": {"type": "adaptive", "budget_tokens": 0}})),
        Some(ReasoningEffort::High)
    );
}

#[test]
fn bad_requests_name_the_field() {
    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "content": "r"}]}
    ]}))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "messages[2].content[0]: tool_result needs tool_use_id (the id of the tool_use block it answers)"
    );

    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}))
    .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsupportedTool { field, kind } if field == "tools[0]" && kind == "web_search_20250305"),
        "{error:?}"
    );
    assert!(error.to_string().contains("server-side tool"), "{error}");

    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [],
        "tools": [{"name": "x"}]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[0].input_schema");

    // A document from Anthropic's Files API: the gateway has no copy.
    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "file_011"}}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[0].content[0].source");
    assert!(error.to_string().contains("Files API"), "{error}");

    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "developer", "content": "x"}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[0].role");
    assert!(
        error
            .to_string()
            .contains("expected user, assistant or system"),
        "{error}"
    );

    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[1].content[0]");
    assert!(error.to_string().contains("only text is"), "{error}");
}

/// A document of text sent as base64 bytes (a JSON or YAML file) is its
/// text, headed by its title, which every model reads and the privacy
/// detectors can look into; a PDF, or bytes that are not UTF-8, stay a
/// document.
#[test]
fn a_text_files_bytes_are_its_text() {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let document = |media_type: &str, data: String| {
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "document", "title": "config",
             "source": {"type": "base64", "media_type": media_type, "data": data}}]}]})
    };
    for media_type in [
        "application/json",
        "text/csv",
        "application/x-yaml",
        "Application/JSON",
    ] {
        let (request, _) = decode_json(document(media_type, encode(b"{\"port\": 8080}"))).unwrap();
        assert_eq!(
            request.messages[0].content,
            vec![ContentPart::Text {
                text: "config\n\n{\"port\": 8080}\n".into()
            }],
            "{media_type}"
        );
    }
    for (media_type, bytes) in [
        ("application/pdf", &b"%PDF-1.4"[..]),
        ("text/plain", &[0xff, 0xfe, 0x00][..]),
    ] {
        let (request, _) = decode_json(document(media_type, encode(bytes))).unwrap();
        assert!(
            matches!(request.messages[0].content[0], ContentPart::Document(_)),
            "{media_type}: {:?}",
            request.messages[0].content
        );
    }
}

/// Claude Code (2.1.3xx) sends `role: "system"` messages inside `messages`
/// (the API's mid-conversation system messages): they keep their place.
#[test]
fn mid_conversation_system_messages_decode_in_place() {
    let (request, _) = decode_json(json!({"model": "m", "max_tokens": 10,
    "system": "Top.",
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [
            {"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": ""},
            {"type": "text", "text": "cwd: /w"}
        ]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "go on"},
        {"role": "system", "content": "Now in Go."},
        {"role": "system", "content": []}
    ]}))
    .unwrap();
    assert_eq!(
        request.messages,
        vec![
            Message::system("Top."),
            Message::user("hi"),
            Message::system("# Environment\n\ncwd: /w"),
            Message::assistant("hello"),
            Message::user("go on"),
            Message::system("Now in Go."),
        ]
    );
}

#[test]
fn errors_map_to_statuses_and_types() {
    let context = LlmError::new(
        ErrorKind::ContextLengthExceeded {
            needed: Some(208_310),
            allowed: Some(200_000),
        },
        "local",
        "too long",
    );
    let (status, body) = encode_error(&context);
    assert_eq!(status, 400);
    assert_eq!(body.kind, "error");
    assert_eq!(body.error.kind, "invalid_request_error");
    assert!(
        body.error
            .message
            .starts_with("prompt is too long: 208310 tokens > 200000 maximum"),
        "{}",
        body.error.message
    );
    assert_eq!(api_error("p", &body.error).kind, context.kind);

    let cases = [
        (ErrorKind::Authentication, 401, "authentication_error"),
        (ErrorKind::Permission, 403, "permission_error"),
        (ErrorKind::NotFound, 404, "not_found_error"),
        (
            ErrorKind::RateLimited { retry_after: None },
            429,
            "rate_limit_error",
        ),
        (ErrorKind::Overloaded, 529, "overloaded_error"),
        (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
        (ErrorKind::Server, 502, "api_error"),
        (ErrorKind::Connection, 502, "api_error"),
        (ErrorKind::Timeout, 504, "timeout_error"),
        (ErrorKind::Cancelled, 500, "api_error"),
    ];
    for (kind, expected_status, expected_type) in cases {
        let error = LlmError::new(kind.clone(), "p", "m");
        let (status, body) = encode_error(&error);
        assert_eq!(
            (status, body.error.kind.as_str()),
            (expected_status, expected_type)
        );
        // The client side reads the kind back.
        if !matches!(kind, ErrorKind::Connection | ErrorKind::Cancelled) {
            assert_eq!(api_error("p", &body.error).kind, kind);
        }
    }
    let (status, body) =
        encode_error(&LlmError::new(ErrorKind::InvalidRequest, "p", "big").with_status(413));
    assert_eq!(
        (status, body.error.kind.as_str()),
        (413, "request_too_large")
    );
}

#[test]
fn a_stream_error_is_an_error_event() {
    let mut encoder = MessageStreamEncoder::new("claude-x", None, 0);
    let mut frames = encoder.push(&StreamEvent::TextDelta { text: "par".into() });
    frames.extend(encoder.error(&LlmError::new(ErrorKind::Overloaded, "up", "busy")));
    assert!(encoder.finish().is_empty());
    let last = frames.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(json_of(last)["error"]["type"], "overloaded_error");
    let error = replay(&frames, EventDecoder::new("p")).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Overloaded);
}

/// An answer that calls `write` with `arguments` (in pieces of 5 bytes),
/// stopping for `reason`.
fn tool_call_events(arguments: &str, reason: StopReason) -> Vec<StreamEvent> {
    let mut events = vec![
        StreamEvent::Start {
            id: None,
            model: None,
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c0".into(),
            name: "write".into(),
            signature: None,
        },
    ];
    let bytes: Vec<char> = arguments.chars().collect();
    events.extend(bytes.chunks(5).map(|piece| StreamEvent::ToolCallArgsDelta {
        index: 0,
        delta: piece.iter().collect(),
    }));
    events.push(StreamEvent::ToolCallEnd {
        index: 0,
        signature: None,
    });
    events.push(StreamEvent::Stop { reason });
    events
}

#[test]
fn tool_arguments_that_are_not_a_json_object_reach_the_client_as_an_empty_input() {
    for (arguments, reason) in [
        // What small models write: a trailing comma, a missing brace.
        (r#"{"path": "a.py", "content": "x",}"#, StopReason::ToolUse),
        (
            r#"{"path": "a.py", "content": "print(1)"#,
            StopReason::ToolUse,
        ),
        // Cut off by the output limit.
        (r#"{"path": "a.py", "cont"#, StopReason::MaxTokens),
        // JSON, but not an object.
        (r#"["a.py"]"#, StopReason::ToolUse),
        ("", StopReason::ToolUse),
    ] {
        let frames = encode_stream(&tool_call_events(arguments, reason.clone()), 0);
        assert!(
            !types(&frames)
                .iter()
                .any(|kind| kind == "content_block_delta"),
            "{arguments}: {:?}",
            types(&frames)
        );
        // The block's input stays the `{}` of its start, which the client's
        // decoder (like the SDKs') reads as the call's input.
        let back = replay(&frames, EventDecoder::new("p")).unwrap();
        assert_eq!(
            back.message.tool_calls().cloned().collect::<Vec<_>>(),
            vec![ToolCall::new("c0", "write", "{}")],
            "{arguments}"
        );
        assert_eq!(back.stop_reason, reason, "{arguments}");
    }
    // A valid object goes out as written, in one delta.
    let arguments = r#"{"path": "a.py", "content": "print(\"hi\")\n"}"#;
    let frames = encode_stream(&tool_call_events(arguments, StopReason::ToolUse), 0);
    let deltas: Vec<Value> = frames
        .iter()
        .map(json_of)
        .filter(|frame| frame["type"] == "content_block_delta")
        .collect();
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(deltas[0]["delta"]["partial_json"], arguments);
}

#[test]
fn keepalives_go_out_while_arguments_are_gathered_or_held_back() {
    let events = tool_call_events(
        r#"{"path": "a.py", "content": "0123456789"}"#,
        StopReason::ToolUse,
    );
    let pieces = events
        .iter()
        .filter(|event| matches!(event, StreamEvent::ToolCallArgsDelta { .. }))
        .count();
    let empty_pieces = |frames: &[SseFrame]| {
        frames
            .iter()
            .map(json_of)
            .filter(|frame| {
                frame["delta"] == json!({"type": "input_json_delta", "partial_json": ""})
            })
            .count()
    };
    // At the default interval a quick call gets none.
    assert_eq!(empty_pieces(&encode_stream(&events, 0)), 0);
    // With no interval, one per piece gathered: nothing else went out.
    let mut encoder =
        MessageStreamEncoder::new("claude-x", None, 0).with_keepalive_every(Duration::ZERO);
    let frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    assert_eq!(empty_pieces(&frames), pieces, "{:?}", types(&frames));
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(
        back.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![ToolCall::new(
            "c0",
            "write",
            r#"{"path": "a.py", "content": "0123456789"}"#
        )]
    );

    // Two calls whose arguments interleave (an OpenAI upstream): the
    // second's events are held back while the first is open, and each
    // event pushed meanwhile gets one keepalive; none comes out of the
    // replay.
    let interleaved = vec![
        StreamEvent::Start {
            id: None,
            model: None,
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c0".into(),
            name: "read".into(),
            signature: None,
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "c1".into(),
            name: "write".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "{\"path\":".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "\"b\"}".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "{\"path\":\"a\"}".into(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::ToolCallEnd {
            index: 1,
            signature: None,
        },
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder =
        MessageStreamEncoder::new("claude-x", None, 0).with_keepalive_every(Duration::ZERO);
    let per_event: Vec<Vec<SseFrame>> = interleaved.iter().map(|e| encoder.push(e)).collect();
    // Events 2 to 5 (call 1 held back, call 0's arguments) send nothing
    // but a keepalive each, on call 0's block.
    for frames in &per_event[2..=5] {
        assert_eq!(frames.len(), 1, "{:?}", types(frames));
        assert_eq!(json_of(&frames[0])["index"], 0);
        assert_eq!(empty_pieces(frames), 1);
    }
    let frames: Vec<SseFrame> = per_event.into_iter().flatten().collect();
    assert_eq!(empty_pieces(&frames), 4, "{:?}", types(&frames));
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    assert_eq!(
        back.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![
            ToolCall::new("c0", "read", "{\"path\":\"a\"}"),
            ToolCall::new("c1", "write", "{\"path\":\"b\"}"),
        ]
    );
}

#[test]
fn keepalives_begin_the_answer_then_ping_until_it_ends() {
    let response = full_response();
    let mut encoder = MessageStreamEncoder::new("claude-x", None, 7);
    // Before the provider's first event the answer begins, with the
    // estimate; a second keepalive is a ping.
    let mut frames = encoder.keepalive();
    assert_eq!(types(&frames), ["message_start"]);
    assert_eq!(json_of(&frames[0])["message"]["usage"]["input_tokens"], 7);
    frames.extend(encoder.keepalive());
    assert_eq!(types(&frames[1..]), ["ping"]);
    // Pings may come between any two events, inside blocks too; the
    // upstream's Start does not begin the answer twice.
    for event in response.to_events() {
        frames.extend(encoder.push(&event));
        frames.extend(encoder.keepalive());
    }
    frames.extend(encoder.finish());
    assert!(encoder.keepalive().is_empty(), "nothing after the end");
    let kinds = types(&frames);
    assert_eq!(kinds.iter().filter(|k| *k == "message_start").count(), 1);
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
    // In an open tool block the keepalive is an empty piece of its
    // arguments, an event the SDKs pass on; elsewhere a ping.
    let empty_pieces = frames
        .iter()
        .map(json_of)
        .filter(|frame| frame["delta"] == json!({"type": "input_json_delta", "partial_json": ""}))
        .count();
    assert!(empty_pieces >= 2, "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "ping").count() >= 3,
        "{kinds:?}"
    );
    let back = replay(&frames, EventDecoder::new("p")).unwrap();
    // The id was fixed before the upstream's was known.
    assert!(back.id.as_deref().unwrap().starts_with("msg_"));
    assert_eq!(
        ChatResponse {
            id: response.id.clone(),
            ..back
        },
        response
    );
}

/// Structured output as the Python SDK's `messages.parse` sends it
/// (`output_config.format`), and as the beta before it did
/// (`output_format`): the schema the answer must match.
#[test]
fn structured_output_formats_become_the_requests_schema() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    let body = |format_field: &str| {
        let mut body = json!({"model": "m", "max_tokens": 64,
                              "messages": [{"role": "user", "content": "Where?"}]});
        let format = json!({"type": "json_schema", "schema": schema});
        match format_field {
            "output_config" => body["output_config"] = json!({"format": format}),
            _ => body["output_format"] = format,
        }
        body
    };
    for field in ["output_config", "output_format"] {
        let (request, _) = decode_json(body(field)).unwrap();
        assert_eq!(
            request.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "output".into(),
                schema: schema.clone(),
                strict: false
            }),
            "{field}"
        );
    }
    // Effort beside a format is still read.
    let mut both = body("output_config");
    both["output_config"]["effort"] = json!("low");
    both["thinking"] = json!({"type": "adaptive"});
    let (request, _) = decode_json(both).unwrap();
    assert_eq!(request.reasoning, Some(ReasoningEffort::Low));
    assert!(request.response_format.is_some());

    let mut wrong = body("output_config");
    wrong["output_config"]["format"]["type"] = json!("json_object");
    let error = decode_json(wrong).unwrap_err();
    assert_eq!(error.field(), "output_config.format.type", "{error}");
    let mut no_schema = body("output_format");
    no_schema["output_format"] = json!({"type": "json_schema"});
    let error = decode_json(no_schema).unwrap_err();
    assert_eq!(error.field(), "output_format.schema", "{error}");
}

/// A client's `cache_control` marks, wherever it put them, say it wants its
/// prompt cached, with which settings; a request without marks says nothing.
#[test]
fn a_clients_cache_marks_are_kept_as_the_requests_prompt_cache() {
    let mark = json!({"type": "ephemeral", "ttl": "1h"});
    // What else a mark holds stays with the client.
    let sent_mark = json!({"type": "ephemeral", "ttl": "1h", "scope": "global"});
    let base = json!({"model": "m", "max_tokens": 64,
    "system": [{"type": "text", "text": "Be terse."}],
    "tools": [{"name": "read", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "Read it."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "done"}]}]}
    ]});
    let (request, _) = decode_json(base.clone()).unwrap();
    assert_eq!(request.prompt_cache, None);
    let places: [&[&str]; 4] = [
        &["system", "0"],
        &["tools", "0"],
        &["messages", "1", "content", "0"],
        &["messages", "2", "content", "0", "content", "0"],
    ];
    for place in places {
        let mut body = base.clone();
        let mut target = &mut body;
        for step in place {
            target = match step.parse::<usize>() {
                Ok(index) => &mut target[index],
                Err(_) => &mut target[*step],
            };
        }
        target["cache_control"] = sent_mark.clone();
        let (request, _) = decode_json(body).unwrap();
        assert_eq!(request.prompt_cache, Some(mark.clone()), "{place:?}");
    }
    // A mark of the whole request, at its top level.
    let mut body = base.clone();
    body["cache_control"] = json!({"type": "ephemeral"});
    let (request, _) = decode_json(body).unwrap();
    assert_eq!(request.prompt_cache, Some(json!({"type": "ephemeral"})));
    // Of several, the last: the one on the conversation.
    let mut body = base.clone();
    body["system"][0]["cache_control"] = json!({"type": "ephemeral", "ttl": "1h"});
    body["messages"][2]["content"][0]["cache_control"] = json!({"type": "ephemeral"});
    let (request, _) = decode_json(body).unwrap();
    assert_eq!(request.prompt_cache, Some(json!({"type": "ephemeral"})));
}

/// Strict tool use is read from an Anthropic client's tool definitions.
#[test]
fn strict_tools_are_read() {
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 64,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"name": "weather", "input_schema": {"type": "object"}, "strict": true},
            {"name": "time", "input_schema": {"type": "object"}},
        ],
    }))
    .unwrap();
    let strict: Vec<bool> = request.tools.iter().map(|tool| tool.strict).collect();
    assert_eq!(strict, [true, false]);
}

/// Reasoning a provider of another protocol signed (Gemini, here) reaches
/// an Anthropic client marked with its origin, comes back knowing it, and
/// so goes back to Gemini but never to Anthropic, which would refuse the
/// whole request for it; Anthropic's own signatures go unmarked.
#[test]
fn another_protocols_signature_comes_back_with_its_origin() {
    let mut response = full_response();
    response.message.content = vec![
        ContentPart::Reasoning(Reasoning {
            text: "Check a first.".into(),
            signature: Some("CiQBcsjafE".into()),
            origin: Some("gemini".into()),
            ..Reasoning::default()
        }),
        ContentPart::Text { text: "Ok.".into() },
    ];
    let wire = serde_json::to_value(encode_response(&response, "gemini-3-pro-preview")).unwrap();
    let block = wire["content"][0].clone();
    assert_eq!(block["signature"], "freehold-origin:gemini:CiQBcsjafE");
    // The stream marks it the same way.
    let mut encoder = MessageStreamEncoder::new("gemini-3-pro-preview", None, 0);
    let mut frames: Vec<SseFrame> = response
        .to_events()
        .iter()
        .flat_map(|event| encoder.push(event))
        .collect();
    frames.extend(encoder.finish());
    let text: String = frames.iter().map(SseFrame::to_sse_text).collect();
    assert!(text.contains("freehold-origin:gemini:CiQBcsjafE"), "{text}");

    let wire: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [block, {"type": "text", "text": "Ok."}]},
            {"role": "user", "content": "and b?"}
        ]
    }))
    .unwrap();
    let (request, _) = decode_request(wire).unwrap();
    let ContentPart::Reasoning(reasoning) = &request.messages[1].content[0] else {
        panic!("{:?}", request.messages[1]);
    };
    assert_eq!(reasoning.signature.as_deref(), Some("CiQBcsjafE"));
    assert_eq!(reasoning.origin.as_deref(), Some("gemini"));
    let to_anthropic =
        serde_json::to_value(encode_request(&request, EncodeOptions::default())).unwrap();
    assert_eq!(
        to_anthropic["messages"][1]["content"],
        json!([{"type": "text", "text": "Ok."}]),
        "{to_anthropic}"
    );
    let to_gemini = serde_json::to_value(crate::wire::gemini::encode_request(&request)).unwrap();
    assert!(to_gemini.to_string().contains("CiQBcsjafE"), "{to_gemini}");
}

/// A streamed call's signature (Gemini's, given with the call's start)
/// reaches an Anthropic client inside the `tool_use` block's id, which
/// comes back split.
#[test]
fn a_streamed_calls_signature_travels_inside_its_tool_use_id() {
    let frames = encode_stream(
        &[
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_0".into(),
                name: "read".into(),
                signature: Some("Q0FMTA==".into()),
            },
            StreamEvent::ToolCallArgsDelta {
                index: 0,
                delta: "{}".into(),
            },
            StreamEvent::ToolCallEnd {
                index: 0,
                signature: Some("Q0FMTA==".into()),
            },
            StreamEvent::Stop {
                reason: StopReason::ToolUse,
            },
        ],
        0,
    );
    let expected = crate::wire::serve::call_id_for_client("call_0", Some("Q0FMTA=="));
    let start = frames
        .iter()
        .map(json_of)
        .find(|event| event["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["id"], expected.as_str(), "{start}");
    assert_eq!(
        crate::wire::serve::split_client_call_id(&expected),
        ("call_0".to_owned(), Some("Q0FMTA==".to_owned()))
    );
}

/// What Claude Code sends with its advisor set up, with MCP servers that
/// connect late (the mid-conversation tool changes beta), and with tool
/// search on: none of it is refused.
#[test]
fn claude_codes_advisor_tool_changes_and_tool_references_decode() {
    let (request, _) = decode_json(json!({"model": "m", "max_tokens": 10,
    "tools": [
        {"name": "Read", "input_schema": {"type": "object"}},
        {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"},
        // Deferred, and loaded by the tool search below.
        {"name": "mcp__docs__search", "input_schema": {"type": "object"}, "defer_loading": true},
        // Deferred, and never loaded: not offered.
        {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object"},
         "defer_loading": true},
        // Deferred, loaded by name in a tool change.
        {"name": "mcp__docs__list", "input_schema": {"type": "object"}, "defer_loading": true}
    ],
    "messages": [
        {"role": "user", "content": "Find the docs tool."},
        {"role": "system", "content": [
            {"type": "text", "text": "The docs server connected."},
            // Defined here and in `tools`: one tool.
            {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {
                "name": "mcp__docs__search", "input_schema": {"type": "object"}}}},
            // Defined here only (the inline-tools beta): it joins them.
            {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {
                "name": "mcp__docs__fetch", "description": "Fetch a page",
                "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}}}}},
            // Named: it is in `tools` already (and loaded, if deferred).
            {"type": "tool_addition", "tool": {"type": "tool_reference",
                                               "tool_name": "mcp__docs__list"}},
            {"type": "tool_removal", "tool_name": "mcp__old__gone"}
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "docs"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "tool_reference", "tool_name": "mcp__docs__search"}]}]}
    ]}))
    .unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Read",
            "mcp__docs__search",
            "mcp__docs__list",
            "mcp__docs__fetch"
        ]
    );
    assert_eq!(request.tools[3].description, "Fetch a page");
    assert_eq!(
        request.messages[1],
        Message::system("The docs server connected.")
    );
    let Some(ContentPart::ToolResult(result)) = request.messages[3].content.first() else {
        panic!("{:?}", request.messages[3]);
    };
    assert_eq!(result.content, "Tool `mcp__docs__search` is available.");

    // Beside a tool search Anthropic's API would run, the model gets every
    // deferred tool, and no search.
    let (request, _) = decode_json(json!({"model": "m", "max_tokens": 10,
        "tools": [
            {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
            {"name": "get_weather", "input_schema": {"type": "object"}, "defer_loading": true},
            {"name": "get_time", "input_schema": {"type": "object"}, "defer_loading": true},
            {"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
    .unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time", "Read"]);

    // A deferred tool that `tool_choice` forces is offered.
    let (request, _) = decode_json(json!({"model": "m", "max_tokens": 10,
        "tools": [{"name": "late", "input_schema": {"type": "object"}, "defer_loading": true}],
        "tool_choice": {"type": "tool", "name": "late"},
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    assert_eq!(request.tools.len(), 1);
    // A tool removed is no longer offered; a system message of tool
    // changes alone is no message.
    let (request, _) = decode_json(json!({"model": "m", "max_tokens": 10,
        "tools": [{"name": "x", "input_schema": {"type": "object"}},
                  {"name": "y", "input_schema": {"type": "object"}}],
        "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "tool_removal", "tool_name": "x"}]}]}))
    .unwrap();
    assert_eq!(request.messages, vec![Message::user("hi")]);
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["y"]);
    // Other server tools are still refused, and other blocks in a result.
    let error = decode_json(json!({"model": "m", "max_tokens": 10,
        "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}],
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap_err();
    assert!(
        matches!(error, DecodeError::UnsupportedTool { .. }),
        "{error:?}"
    );
    let error = decode_json(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "search_result", "source": "s", "title": "t", "content": []}]}]}]}))
    .unwrap_err();
    assert!(error.to_string().contains("tool_reference"), "{error}");
}

/// The end user's id: `metadata.user_id` in and out (hashed past the 256
/// characters Anthropic takes); a `metadata` of the wrong shape is refused
/// by field.
#[test]
fn the_end_user_is_metadata_user_id() {
    let decode = |metadata: Value| {
        let body = json!({"model": "m", "max_tokens": 10, "metadata": metadata,
                          "messages": [{"role": "user", "content": "hi"}]});
        decode_request(serde_json::from_value::<MessagesRequest>(body).unwrap())
            .map(|(request, _)| request.end_user)
    };
    assert_eq!(
        decode(json!({"user_id": "user_abc"})).unwrap(),
        Some("user_abc".into())
    );
    assert_eq!(decode(json!({})).unwrap(), None);
    assert_eq!(decode(json!({"user_id": null})).unwrap(), None);
    let error = decode(json!({"user_id": 42})).unwrap_err().to_string();
    assert!(error.contains("metadata.user_id"), "{error}");
    let error = decode(json!("user_abc")).unwrap_err().to_string();
    assert!(error.contains("metadata"), "{error}");

    let request = ChatRequest {
        end_user: Some("x".repeat(300)),
        ..ChatRequest::new("claude-sonnet-4-5", vec![Message::user("hi")])
    };
    let anthropics_own = EncodeOptions {
        end_user: true,
        ..EncodeOptions::default()
    };
    let sent = encode_request(&request, anthropics_own);
    let id = sent.metadata.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 64);
    let plain = ChatRequest::new("claude-sonnet-4-5", vec![Message::user("hi")]);
    assert_eq!(encode_request(&plain, anthropics_own).metadata, None);
    // Another server of the protocol gets no id.
    assert_eq!(
        encode_request(&request, EncodeOptions::default()).metadata,
        None
    );
}

/// `compact_20260112` is the gateway's to make: decoded into the options,
/// and taken out of what goes on to the provider (other edits stay).
#[test]
fn a_compaction_edit_is_the_gateways_and_the_rest_goes_on() {
    let (request, options) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "context_management": {"edits": [
            {"type": "clear_thinking_20251015", "keep": "all"},
            {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 60000},
             "instructions": "Keep paths."}]}}))
    .unwrap();
    assert_eq!(
        options.compaction,
        Some(CompactEdit {
            trigger_input_tokens: 60_000,
            pause_after_compaction: false,
            instructions: Some("Keep paths.".into()),
            instructions_replace_prompt: false,
        })
    );
    assert_eq!(
        request.context_management,
        Some(json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}))
    );
    assert!(options.context_management);

    // Alone, nothing is left for the provider.
    let (request, options) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "context_management": {"edits": [
            {"type": "compact_20260112", "pause_after_compaction": true}]}}))
    .unwrap();
    assert_eq!(request.context_management, None);
    let compaction = options.compaction.unwrap();
    assert!(compaction.pause_after_compaction);
    assert_eq!(compaction.trigger_input_tokens, 150_000);
}

/// The `compaction` parameter compacts at once and answers with the
/// compaction alone; it cannot come with `context_management`.
#[test]
fn the_compaction_parameter_asks_for_the_compaction_alone() {
    let body = |compaction: Value, context_management: Option<Value>| {
        let mut body = json!({"model": "claude-x", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}], "compaction": compaction});
        if let Some(edits) = context_management {
            body["context_management"] = edits;
        }
        decode_json(body)
    };
    let (_, options) = body(json!({"type": "summarize", "instructions": "Short."}), None).unwrap();
    assert_eq!(
        options.compaction,
        Some(CompactEdit {
            trigger_input_tokens: 0,
            pause_after_compaction: true,
            instructions: Some("Short.".into()),
            instructions_replace_prompt: true,
        })
    );
    let field = |result: Result<(ChatRequest, ServeOptions), DecodeError>| {
        let error = result.unwrap_err().to_string();
        error.split(':').next().unwrap().to_owned()
    };
    assert_eq!(
        field(body(json!({"type": "shorten"}), None)),
        "compaction.type"
    );
    assert_eq!(field(body(json!("summarize"), None)), "compaction");
    assert_eq!(
        field(body(json!({"type": "summarize", "effort": 1}), None)),
        "compaction.effort"
    );
    assert_eq!(
        field(body(json!({"type": "summarize", "instructions": 3}), None)),
        "compaction.instructions"
    );
    let both = body(
        json!({"type": "summarize"}),
        Some(json!({"edits": [{"type": "clear_thinking_20251015"}]})),
    );
    assert_eq!(field(both), "compaction");
}

/// A compaction block sent back stands for everything before it: the
/// conversation reads as the system prompt, the summary, then what came
/// after the block. The tools a system message added before it stay; a
/// failed compaction (`content: null`) stands for nothing.
#[test]
fn what_a_compaction_block_stands_for_is_left_out() {
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Fix add() in calc.py."},
            {"role": "assistant", "content": [
                {"type": "compaction", "content": null},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "calc.py"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "def add(a, b): return a - b"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Before the summary."},
                {"type": "compaction", "content": "The user wants add() fixed; it subtracts.",
                 "encrypted_content": "opaque", "signature": "sig"},
                {"type": "text", "text": "Fixing it now."}]},
            {"role": "user", "content": "Go on."}]}))
    .unwrap();
    let summary = format!(
        "{}\n\nThe user wants add() fixed; it subtracts.",
        crate::wire::compaction::SUMMARY_INTRO
    );
    assert_eq!(
        request.messages,
        vec![
            Message::system("You are terse."),
            Message::user(summary.as_str()),
            Message::assistant("Fixing it now."),
            Message::user("Go on."),
        ]
    );

    // An assistant message holding only the block is left out whole.
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Fix add()."},
            {"role": "assistant", "content": [{"type": "compaction", "content": "Notes."}]}]}))
    .unwrap();
    assert_eq!(request.messages.len(), 1);
    assert_eq!(request.messages[0].role, Role::User);
    assert!(request.messages[0].text().ends_with("Notes."));

    // A failed compaction alone in its message leaves nothing of it.
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Fix add()."},
            {"role": "assistant", "content": [{"type": "compaction", "content": null}]},
            {"role": "user", "content": "Again."}]}))
    .unwrap();
    assert_eq!(
        request.messages,
        vec![Message::user("Fix add()."), Message::user("Again.")]
    );

    // Sent first in a new conversation, in a user message, with system
    // messages before it that stay.
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100, "system": "Be brief.",
        "messages": [
            {"role": "system", "content": "Tools may change."},
            {"role": "user", "content": [
                {"type": "text", "text": "Left out."},
                {"type": "compaction", "content": "Notes."},
                {"type": "text", "text": "Go on."}]}]}))
    .unwrap();
    assert_eq!(request.messages.len(), 4, "{:?}", request.messages);
    assert_eq!(request.messages[0], Message::system("Be brief."));
    assert_eq!(request.messages[1], Message::system("Tools may change."));
    assert!(request.messages[2].text().ends_with("\n\nNotes."));
    assert_eq!(request.messages[3], Message::user("Go on."));

    // An empty summary is a mistake, named by its place.
    let error = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "compaction", "content": ""}]},
            {"role": "user", "content": "again"}]}))
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("messages[1].content[0].content"),
        "{error}"
    );
}

/// Split for compaction: the summary's request is the conversation then
/// the ask (the request's instructions where given), with no tool to call
/// and no bound of the client's; the answer's keeps the system prompt,
/// tools and settings, and reads the summary.
#[test]
fn a_request_splits_into_the_summarys_and_the_answers() {
    let (request, options) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100, "system": "Be brief.",
        "tools": [{"name": "read", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Fix add()."},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Now sub()."}],
        "context_management": {"edits": [{"type": "compact_20260112"}]}}))
    .unwrap();
    let compaction = options.compaction.unwrap();
    let (summary, answer) = split_for_compaction(request.clone(), &compaction);
    assert_eq!(summary.messages.len(), 5);
    assert_eq!(
        summary.messages.last().unwrap().text(),
        super::compaction::SUMMARY_REQUEST
    );
    assert_eq!(summary.tool_choice, ToolChoice::None);
    assert_eq!(summary.max_tokens, None);
    assert_eq!(summary.tools, request.tools);
    let answer = answer_after_compaction(answer, "Notes.");
    assert_eq!(answer.messages[0], Message::system("Be brief."));
    assert_eq!(answer.messages.len(), 2);
    assert!(answer.messages[1].text().ends_with("\n\nNotes."));
    assert_eq!(answer.tools, request.tools);
    assert_eq!(answer.max_tokens, Some(100));

    // The edit's instructions follow the prompt; the parameter's replace
    // it.
    let asked = CompactEdit {
        instructions: Some("List the files only.".into()),
        ..compaction
    };
    let (summary, _) = split_for_compaction(request.clone(), &asked);
    assert_eq!(
        summary.messages.last().unwrap().text(),
        format!(
            "{}\n\nList the files only.",
            super::compaction::SUMMARY_REQUEST
        )
    );
    let replacing = CompactEdit {
        instructions_replace_prompt: true,
        ..asked
    };
    let (summary, _) = split_for_compaction(request, &replacing);
    assert_eq!(
        summary.messages.last().unwrap().text(),
        "List the files only."
    );
}

/// Whole: the compaction block first, the answer's usage at the top and
/// each call's in `usage.iterations`; alone, the block and
/// `stop_reason: "compaction"`.
#[test]
fn a_compaction_goes_first_in_a_whole_answer_or_alone() {
    let summary_usage = Usage {
        input_tokens: 700,
        output_tokens: 20,
        ..Usage::default()
    };
    let response = ChatResponse {
        stop_reason: StopReason::EndTurn,
        message: Message::assistant("Fixed."),
        ..full_response()
    };
    let mut wire = encode_response(&response, "claude-x");
    put_compaction_first(&mut wire, "Notes.", &summary_usage);
    let wire = serde_json::to_value(&wire).unwrap();
    assert_eq!(
        wire["content"],
        json!([{"type": "compaction", "content": "Notes."}, {"type": "text", "text": "Fixed."}])
    );
    assert_eq!(wire["usage"]["input_tokens"], 300);
    assert_eq!(wire["usage"]["iterations"][0]["type"], "compaction");
    assert_eq!(wire["usage"]["iterations"][0]["input_tokens"], 700);
    assert_eq!(wire["usage"]["iterations"][0]["output_tokens"], 20);
    assert_eq!(wire["usage"]["iterations"][1]["type"], "message");
    assert_eq!(
        wire["usage"]["iterations"][1]["cache_read_input_tokens"],
        600
    );
    assert_eq!(wire["stop_reason"], "end_turn");

    let alone = serde_json::to_value(encode_compaction_alone(
        "Notes.",
        &summary_usage,
        "claude-x",
        true,
    ))
    .unwrap();
    assert_eq!(
        alone["content"],
        json!([{"type": "compaction", "content": "Notes."}])
    );
    assert_eq!(alone["stop_reason"], "compaction");
    // The compaction's tokens are in its iteration, not the top level.
    assert_eq!(alone["usage"]["output_tokens"], 0);
    assert_eq!(alone["usage"]["input_tokens"], 0);
    assert_eq!(
        alone["usage"]["iterations"],
        json!([{"type": "compaction", "input_tokens": 700, "output_tokens": 20,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}])
    );
    assert_eq!(alone["context_management"], json!({"applied_edits": []}));
    // What a client sends back reads as the summary.
    let (request, _) = decode_json(json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Fix add()."},
                     {"role": "assistant", "content": alone["content"]}]}))
    .unwrap();
    assert!(request.messages[0].text().ends_with("Notes."));
}

/// Streamed: the compaction block (its content in one `compaction_delta`)
/// at index 0, the answer's blocks after it, and the iterations on
/// `message_delta`; paused, the stream ends after the block with
/// `stop_reason: "compaction"`.
#[test]
fn a_compaction_goes_first_in_a_stream_or_alone() {
    let summary_usage = Usage {
        input_tokens: 700,
        output_tokens: 20,
        ..Usage::default()
    };
    let mut encoder = MessageStreamEncoder::new("claude-x", None, 0);
    let mut frames = encoder.keepalive();
    frames.extend(encoder.compacted("Notes.", &summary_usage));
    for event in [
        StreamEvent::Start {
            id: Some("msg_up".into()),
            model: None,
        },
        StreamEvent::TextDelta {
            text: "Fixed.".into(),
        },
        StreamEvent::Usage(Usage {
            input_tokens: 40,
            output_tokens: 3,
            ..Usage::default()
        }),
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ] {
        frames.extend(encoder.push(&event));
    }
    frames.extend(encoder.finish());
    assert_eq!(
        types(&frames),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let json: Vec<Value> = frames.iter().map(json_of).collect();
    assert_eq!(
        json[1]["content_block"],
        json!({"type": "compaction", "content": null})
    );
    assert_eq!(
        json[2]["delta"],
        json!({"type": "compaction_delta", "content": "Notes."})
    );
    assert_eq!(json[4]["index"], 1);
    let usage = &json[7]["usage"];
    assert_eq!(usage["input_tokens"], 40);
    assert_eq!(usage["iterations"][0]["input_tokens"], 700);
    assert_eq!(usage["iterations"][1]["output_tokens"], 3);
    assert_eq!(json[7]["delta"]["stop_reason"], "end_turn");

    let mut paused = MessageStreamEncoder::new("claude-x", None, 0).pausing_after_compaction();
    let mut frames = paused.compacted("Notes.", &summary_usage);
    frames.extend(paused.finish());
    assert_eq!(
        types(&frames),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let delta = json_of(&frames[4]);
    assert_eq!(delta["delta"]["stop_reason"], "compaction");
    assert_eq!(delta["usage"]["output_tokens"], 0);
    assert_eq!(delta["usage"]["iterations"][0]["output_tokens"], 20);
}
