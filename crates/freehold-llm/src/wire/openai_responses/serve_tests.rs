//! Tests of the gateway direction: round trips through the client side.

use std::collections::BTreeSet;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, LlmError, Message, Reasoning,
    ReasoningEffort, ResponseFormat, Role, Sampling, StopReason, StreamEvent, ToolCall, ToolChoice,
    ToolResult, ToolSpec, Usage, Verbosity,
};
use serde_json::{Value, json};

use super::*;
use crate::wire::serve::test_support::{replay, replay_events};
use crate::wire::serve::{DecodeError, SseData, SseFrame};

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("The {name} tool"),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        strict: false,
    }
}

fn full_request() -> ChatRequest {
    ChatRequest {
        model: "gpt-5".into(),
        messages: vec![
            Message::system("You are Codex."),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Text {
                        text: "Look".into(),
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
                        text: "Plan: read a.".into(),
                        signature: Some("gAAAA".into()),
                        id: Some("rs_1".into()),
                        origin: Some(ORIGIN.into()),
                        ..Reasoning::default()
                    }),
                    ContentPart::Text {
                        text: "Reading.".into(),
                    },
                    ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                    ContentPart::ToolCall(ToolCall::new("call_2", "read", r#"{"path":"b"}"#)),
                ],
            },
            Message {
                role: Role::Tool,
                content: vec![
                    ContentPart::ToolResult(ToolResult {
                        call_id: "call_1".into(),
                        content: "contents of a".into(),
                        is_error: false,
                    }),
                    ContentPart::ToolResult(ToolResult {
                        call_id: "call_2".into(),
                        content: "contents of b".into(),
                        is_error: false,
                    }),
                ],
            },
            Message::user("Go on"),
            Message::assistant("Done."),
            Message::user("Thanks"),
        ],
        tools: vec![tool("read"), tool("write")],
        tool_choice: ToolChoice::Tool {
            name: "read".into(),
        },
        parallel_tool_calls: Some(false),
        sampling: Sampling {
            temperature: Some(0.5),
            top_p: Some(0.75),
            ..Sampling::default()
        },
        max_tokens: Some(2048),
        stop: Vec::new(),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object"}),
            strict: true,
        }),
        reasoning: Some(ReasoningEffort::Medium),
        reasoning_budget: None,
        reasoning_effort_name: None,
        forwarded_headers: Vec::new(),
        prompt_cache: None,
        cache_key: Some("conversation-1".into()),
        verbosity: Some(Verbosity::Low),
        service_tier: Some("flex".into()),
        context_management: None,
        reasoning_display: None,
        end_user: Some("user-7".into()),
    }
}

#[test]
fn requests_round_trip_through_the_client_encoder() {
    let request = full_request();
    let wire = encode_request(&request, true, true);
    let wire: ResponsesRequest =
        serde_json::from_value(serde_json::to_value(&wire).unwrap()).unwrap();
    let (decoded, options) = decode_request(wire).unwrap();
    assert_eq!(decoded, request);
    assert!(options.stream);

    for choice in [ToolChoice::Auto, ToolChoice::None, ToolChoice::Required] {
        let request = ChatRequest {
            tool_choice: choice,
            response_format: Some(ResponseFormat::JsonObject),
            reasoning: None,
            ..full_request()
        };
        let (decoded, options) = decode_request(encode_request(&request, false, true)).unwrap();
        assert_eq!(decoded, request);
        assert!(!options.stream);
    }
}

fn full_response() -> ChatResponse {
    ChatResponse {
        id: Some("resp_abc".into()),
        model: Some("gpt-5".into()),
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "Plan it.".into(),
                    signature: Some("gAAAA".into()),
                    id: Some("rs_1".into()),
                    origin: Some(ORIGIN.into()),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "Reading both.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                ContentPart::ToolCall(ToolCall::new("call_2", "read", r#"{"path":"b"}"#)),
            ],
        },
        usage: Usage {
            input_tokens: 500,
            cached_input_tokens: 300,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: 80,
            reasoning_tokens: 40,
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
    let wire = encode_response(&response, "gpt-5");
    let json = serde_json::to_value(&wire).unwrap();
    assert_eq!(json["object"], "response");
    assert_eq!(json["status"], "completed");
    assert_eq!(json["output"][0]["type"], "reasoning");
    assert_eq!(json["output"][1]["type"], "message");
    assert_eq!(json["output"][1]["content"][0]["type"], "output_text");
    // Always there, as OpenAI writes it: the SDKs' types require it.
    assert_eq!(json["output"][1]["content"][0]["annotations"], json!([]));
    assert_eq!(json["output"][2]["type"], "function_call");
    assert_eq!(json["output"][2]["call_id"], "call_1");
    assert_eq!(json["usage"]["input_tokens_details"]["cached_tokens"], 300);
    let back = decode_response("p", serde_json::from_value(json).unwrap()).unwrap();
    assert_eq!(back, response);

    let cut = ChatResponse {
        id: None,
        message: Message::assistant("partial"),
        stop_reason: StopReason::MaxTokens,
        ..full_response()
    };
    let wire = encode_response(&cut, "gpt-5");
    assert!(wire.id.starts_with("resp_"), "{}", wire.id);
    assert_eq!(wire.status.as_deref(), Some("incomplete"));
    // The message the end cut off is incomplete too, as OpenAI marks it.
    let cut_item = serde_json::to_value(&wire.output).unwrap();
    assert_eq!(cut_item[0]["status"], "incomplete", "{cut_item}");
    let back = decode_response("p", wire).unwrap();
    assert_eq!(back.stop_reason, StopReason::MaxTokens);
    assert_eq!(back.message, cut.message);

    let refused = ChatResponse {
        message: Message::assistant("I can't help with that."),
        stop_reason: StopReason::Refusal,
        ..full_response()
    };
    let back = decode_response("p", encode_response(&refused, "gpt-5")).unwrap();
    assert_eq!(back.stop_reason, StopReason::Refusal);
    assert_eq!(back.message, refused.message);
}

fn encode_stream(events: &[StreamEvent]) -> Vec<SseFrame> {
    let mut encoder = ResponseStreamEncoder::new("gpt-5", None);
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

/// The `type` of each frame, checking the `event:` name and that the
/// sequence numbers count from 0.
fn types(frames: &[SseFrame]) -> Vec<String> {
    frames
        .iter()
        .enumerate()
        .map(|(index, frame)| {
            let json = json_of(frame);
            assert_eq!(json["sequence_number"], index as u64);
            let kind = json["type"].as_str().unwrap().to_owned();
            assert_eq!(frame.event.as_deref(), Some(kind.as_str()));
            kind
        })
        .collect()
}

/// A refusal streams as a message item with a `refusal` part
/// (`response.refusal.delta`s and `.done`), and the client decoder reads it
/// back as a refusal, marked for the next encoder.
#[test]
fn a_streamed_refusal_goes_as_a_refusal_part() {
    let refused = ChatResponse {
        message: Message::assistant("I can't help with that."),
        stop_reason: StopReason::Refusal,
        ..full_response()
    };
    let frames = encode_stream(&refused.to_events());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.refusal.delta",
            "response.refusal.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let done = json_of(&frames[7]);
    assert_eq!(
        done["item"]["content"][0],
        json!({"type": "refusal", "refusal": "I can't help with that."}),
        "{done}"
    );
    let back = replay(&frames, ResponsesDecoder::new("p")).unwrap();
    assert_eq!(back.stop_reason, StopReason::Refusal);
    assert_eq!(back.message, refused.message);
    let events = replay_events(&frames, ResponsesDecoder::new("p")).unwrap();
    assert!(events.contains(&StreamEvent::RefusalStart), "{events:?}");

    // Text before the refusal keeps its own item; the refusal gets the next.
    let frames = encode_stream(&[
        StreamEvent::TextDelta {
            text: "Well. ".into(),
        },
        StreamEvent::RefusalStart,
        StreamEvent::TextDelta { text: "No.".into() },
        StreamEvent::Stop {
            reason: StopReason::Refusal,
        },
    ]);
    let kinds = types(&frames);
    let refusal_added = kinds
        .iter()
        .position(|kind| kind == "response.refusal.delta")
        .unwrap();
    assert!(
        kinds[..refusal_added].contains(&"response.output_text.done".to_owned()),
        "{kinds:?}"
    );
    let completed = json_of(frames.last().unwrap());
    assert_eq!(completed["type"], "response.completed", "{completed}");
    let output = &completed["response"]["output"];
    assert_eq!(
        output[0]["content"][0]["type"], "output_text",
        "{completed}"
    );
    assert_eq!(
        output[1]["content"][0],
        json!({"type": "refusal", "refusal": "No."}),
        "{completed}"
    );
}

#[test]
fn streams_round_trip_through_the_client_decoder() {
    let response = full_response();
    let frames = encode_stream(&response.to_events());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let completed = json_of(frames.last().unwrap());
    assert_eq!(completed["response"]["id"], "resp_abc");
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["response"]["output"].as_array().unwrap().len(), 4);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 80);
    for index in [9, 12, 13] {
        let frame = json_of(&frames[index]);
        let part = frame
            .get("part")
            .or_else(|| frame["item"]["content"].get(0))
            .unwrap_or_else(|| panic!("no content part in {frame}"));
        assert_eq!(part["annotations"], json!([]), "{frame}");
    }
    let reasoning_done = json_of(&frames[7]);
    assert_eq!(reasoning_done["item"]["encrypted_content"], "gAAAA");
    assert_eq!(reasoning_done["item"]["id"], "rs_1");

    let back = replay(&frames, ResponsesDecoder::new("p")).unwrap();
    assert_eq!(back, response);
}

#[test]
fn max_tokens_ends_with_response_incomplete() {
    let events = [
        StreamEvent::TextDelta { text: "par".into() },
        StreamEvent::TextDelta {
            text: "tial".into(),
        },
        StreamEvent::Stop {
            reason: StopReason::MaxTokens,
        },
    ];
    let frames = encode_stream(&events);
    let last = json_of(frames.last().unwrap());
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    // The message open when the answer was cut off is done `incomplete`.
    let done = frames
        .iter()
        .map(json_of)
        .find(|event| event["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(done["item"]["status"], "incomplete", "{done}");
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    let back = replay(&frames, ResponsesDecoder::new("p")).unwrap();
    assert_eq!(back.message, Message::assistant("partial"));
    assert_eq!(back.stop_reason, StopReason::MaxTokens);
}

#[test]
fn calls_closed_only_at_the_end_are_sent_one_item_at_a_time() {
    let events = vec![
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c0".into(),
            name: "read".into(),
            signature: None,
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "c1".into(),
            name: "grep".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "{\"q\":1}".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "{}".into(),
        },
        StreamEvent::TextDelta {
            text: "after".into(),
        },
    ];
    let frames = encode_stream(&events);
    let back = replay(&frames, ResponsesDecoder::new("p")).unwrap();
    assert_eq!(
        back.message.content,
        vec![
            ContentPart::ToolCall(ToolCall::new("c0", "read", "{}")),
            ContentPart::ToolCall(ToolCall::new("c1", "grep", "{\"q\":1}")),
            ContentPart::Text {
                text: "after".into()
            },
        ]
    );
    assert_eq!(back.stop_reason, StopReason::ToolUse);
}

#[test]
fn codex_requests_decode() {
    // The shape Codex CLI sends (stateless, store: false).
    let body = json!({
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "**Listing**"}], "content": null, "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\n"},
            {"type": "message", "role": "assistant", "id": "msg_1", "content": [{"type": "output_text", "text": "One file.", "annotations": []}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
        ],
        "tools": [{"type": "function", "name": "shell", "description": "Runs a command", "strict": false,
                   "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                                  "required": ["command"], "additionalProperties": false}}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "high", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-abcd",
        "text": {"verbosity": "medium"}
    });
    let (request, options) =
        decode_request(serde_json::from_value::<ResponsesRequest>(body).unwrap()).unwrap();
    assert!(options.stream);
    assert_eq!(request.reasoning, Some(ReasoningEffort::High));
    assert_eq!(request.parallel_tool_calls, Some(false));
    assert_eq!(request.response_format, None);
    assert_eq!(request.tools[0].name, "shell");
    assert_eq!(
        request.messages,
        vec![
            Message::system("You are Codex, a coding agent."),
            Message::system("<permissions>"),
            Message::user("<environment_context/>"),
            Message::user("list files"),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "**Listing**".into(),
                        signature: Some("gAAA".into()),
                        id: Some("rs_1".into()),
                        // Unmarked: OpenAI's own.
                        origin: Some(ORIGIN.into()),
                        ..Reasoning::default()
                    }),
                    ContentPart::ToolCall(ToolCall::new(
                        "call_1",
                        "shell",
                        "{\"command\":[\"ls\"]}"
                    )),
                ],
            },
            Message::tool_result("call_1", "a.txt\n"),
            Message::assistant("One file."),
            Message::user("thanks"),
        ]
    );
}

fn decode_json(body: Value) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    decode_request(serde_json::from_value::<ResponsesRequest>(body).unwrap())
}

/// Anthropic's redacted thinking reaches a Responses client (Codex routed
/// to Claude) as a reasoning item, and comes back from it still redacted:
/// its data cannot be sent back as a signature.
#[test]
fn redacted_reasoning_comes_back_redacted() {
    let frames = encode_stream(&[
        StreamEvent::ReasoningSignature {
            signature: "EmwKAhgBEgy".into(),
            redacted: true,
            id: None,
            origin: Some("anthropic".into()),
        },
        StreamEvent::TextDelta { text: "Hi".into() },
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ]);
    let done = frames
        .iter()
        .map(json_of)
        .find(|frame| {
            frame["type"] == "response.output_item.done" && frame["item"]["type"] == "reasoning"
        })
        .expect("a reasoning item");
    let item = done["item"].clone();
    assert_ne!(item["encrypted_content"], "EmwKAhgBEgy", "{item}");
    let (request, _) = decode_json(json!({"model": "m", "input": [
        item,
        {"role": "user", "content": "And?"}
    ]}))
    .unwrap();
    let reasoning = request.messages[0]
        .content
        .iter()
        .find_map(|part| match part {
            ContentPart::Reasoning(reasoning) => Some(reasoning.clone()),
            _ => None,
        })
        .expect("the reasoning handed back");
    assert!(reasoning.redacted);
    assert_eq!(reasoning.signature.as_deref(), Some("EmwKAhgBEgy"));
    // Ordinary encrypted content is left as it is.
    let (request, _) = decode_json(json!({"model": "m", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"role": "user", "content": "And?"}
    ]}))
    .unwrap();
    assert!(matches!(
        &request.messages[0].content[0],
        ContentPart::Reasoning(r) if !r.redacted && r.signature.as_deref() == Some("gAAAA")
    ));
}

/// The shape of OpenAI's own examples: messages in `input` without a
/// `type`, beside typed items.
#[test]
fn messages_without_a_type_are_messages() {
    let (request, _) = decode_json(json!({"model": "m", "input": [
        {"role": "developer", "content": "Talk like a pirate."},
        {"role": "user", "content": [{"type": "input_text", "text": "Are semicolons optional?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"}
    ]}))
    .unwrap();
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
    assert_eq!(request.messages[0].text_content(), "Talk like a pirate.");
    assert_eq!(
        request.messages[1].text_content(),
        "Are semicolons optional?"
    );

    // Neither a type nor a role: an error that says what an item needs.
    let error = serde_json::from_value::<ResponsesRequest>(
        json!({"model": "m", "input": [{"content": "hi"}]}),
    )
    .unwrap_err();
    assert!(error.to_string().contains("needs a `type`"), "{error}");
}

#[test]
fn bad_requests_name_the_field() {
    let error = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}))
    .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsupportedTool { field, kind } if field == "tools[1]" && kind == "file_search"),
        "{error:?}"
    );

    let error = decode_json(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}))
        .unwrap_err();
    assert_eq!(error.field(), "previous_response_id");

    let error = decode_json(json!({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "", "output": "x"}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "input[0].call_id");

    let error = decode_json(json!({"model": "m", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "input[0].content[0]");

    let error =
        decode_json(json!({"model": "m", "input": "x", "reasoning": {"effort": "maximal"}}))
            .unwrap_err();
    assert_eq!(error.field(), "reasoning.effort");
}

#[test]
fn a_stream_error_is_response_failed() {
    let mut encoder = ResponseStreamEncoder::new("gpt-5", None);
    let mut frames = encoder.push(&StreamEvent::TextDelta { text: "par".into() });
    frames.extend(encoder.error(&LlmError::new(
        ErrorKind::ContextLengthExceeded {
            needed: Some(300_000),
            allowed: Some(272_000),
        },
        "up",
        "too long",
    )));
    assert!(encoder.finish().is_empty());
    let last = json_of(frames.last().unwrap());
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["error"]["code"], "context_length_exceeded");
    let error = replay(&frames, ResponsesDecoder::new("p")).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(300_000),
            allowed: Some(272_000)
        }
    );

    let mut encoder = ResponseStreamEncoder::new("gpt-5", None);
    let frames = encoder.error(&LlmError::new(
        ErrorKind::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(2)),
        },
        "up",
        "slow down",
    ));
    assert_eq!(types(&frames)[0], "response.created");
    let error = replay(&frames, ResponsesDecoder::new("p")).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(2))
        }
    );
    let (status, body) = encode_error(&LlmError::new(ErrorKind::Overloaded, "up", "busy"));
    assert_eq!(status, 503);
    assert_eq!(body.error.code.as_deref(), Some("server_is_overloaded"));
}

/// A reasoning item from a Responses upstream keeps the upstream's id from
/// its first event to its last (it is the id the client sends back), with
/// or without summary text; a gateway id is made only when there is none.
#[test]
fn reasoning_items_keep_one_id_from_added_to_done() {
    let signature = |id: Option<&str>| StreamEvent::ReasoningSignature {
        signature: "gAAAA".into(),
        redacted: false,
        id: id.map(str::to_owned),
        origin: Some("openai_responses".into()),
    };
    let frames = encode_stream(&[
        StreamEvent::ReasoningDelta {
            text: "Think".into(),
            id: Some("rs_up1".into()),
        },
        signature(Some("rs_up1")),
        // Encrypted content alone, no summary.
        signature(Some("rs_up2")),
        // An item without encrypted content, then one with only that.
        StreamEvent::ReasoningDelta {
            text: "Plain".into(),
            id: Some("rs_up3".into()),
        },
        signature(Some("rs_up4")),
        // No id anywhere: the gateway makes one.
        StreamEvent::ReasoningDelta {
            text: "More".into(),
            id: None,
        },
        signature(None),
        StreamEvent::TextDelta { text: "Hi".into() },
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ]);
    let ids = |kind: &str| -> Vec<String> {
        frames
            .iter()
            .map(json_of)
            .filter(|frame| frame["type"] == kind && frame["item"]["type"] == "reasoning")
            .map(|frame| frame["item"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let added = ids("response.output_item.added");
    assert_eq!(added, ids("response.output_item.done"));
    assert_eq!(&added[..4], ["rs_up1", "rs_up2", "rs_up3", "rs_up4"]);
    assert!(added[4].starts_with("rs_"), "{added:?}");
    // Every delta names its item's id.
    for frame in frames.iter().map(json_of) {
        if frame["type"] == "response.reasoning_summary_text.delta" {
            assert!(
                added.iter().any(|id| frame["item_id"] == id.as_str()),
                "{frame}"
            );
        }
    }
}

/// Codex's patch tool, as it declares it for `gpt-5…` models: freeform,
/// its input following a Lark grammar.
fn patch_tool() -> Value {
    json!({
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files.",
        "format": {"type": "grammar", "syntax": "lark",
                   "definition": "start: begin_patch hunk+ end_patch"}
    })
}

const PATCH: &str = "*** Begin Patch\n*** Update File: a.py\n@@\n-x = 1\n+x = 2\n*** End Patch";

#[test]
fn freeform_tools_reach_providers_as_functions_with_one_text_argument() {
    let (request, options) = decode_json(json!({
        "model": "gpt-5-codex",
        "input": [
            {"role": "user", "content": "Set x to 2."},
            {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch",
             "input": PATCH, "status": "completed", "id": "ctc_1"},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
        ],
        "tools": [patch_tool(), {"type": "function", "name": "shell",
                                 "parameters": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
        "stream": true,
    }))
    .unwrap();
    assert_eq!(
        options.freeform_tools,
        BTreeSet::from(["apply_patch".to_owned()])
    );
    let patch = &request.tools[0];
    assert_eq!(patch.name, "apply_patch");
    assert_eq!(
        patch.parameters["properties"]["input"]["type"], "string",
        "{}",
        patch.parameters
    );
    assert_eq!(patch.parameters["required"], json!(["input"]));
    // The description keeps the tool's own, says how to pass the input and
    // carries the grammar, which only OpenAI would enforce.
    assert!(
        patch
            .description
            .starts_with("Use the `apply_patch` tool to edit files.\n\n"),
        "{}",
        patch.description
    );
    assert!(
        patch
            .description
            .ends_with("(lark syntax):\n\nstart: begin_patch hunk+ end_patch"),
        "{}",
        patch.description
    );
    // A function tool beside it is unchanged.
    assert_eq!(
        request.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(
        request.tool_choice,
        ToolChoice::Tool {
            name: "apply_patch".into()
        }
    );
    // The history: the call with its input as the one argument, then its
    // result.
    let call = request.messages[1].tool_calls().next().unwrap();
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("call_1", "apply_patch")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"input": PATCH})
    );
    assert_eq!(
        request.messages[2].content,
        vec![ContentPart::ToolResult(ToolResult {
            call_id: "call_1".into(),
            content: "Done!".into(),
            is_error: false,
        })]
    );

    // A custom tool needs a name, and so does a custom tool choice.
    let error = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "custom", "name": ""}]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[0].name");
    let error = decode_json(json!({"model": "m", "input": "hi", "tools": [patch_tool()],
        "tool_choice": {"type": "custom"}}))
    .unwrap_err();
    assert_eq!(error.field(), "tool_choice.name");
    // A text-format tool's description has no grammar.
    let (request, _) = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "custom", "name": "note", "format": {"type": "text"}}]}))
    .unwrap();
    assert!(!request.tools[0].description.contains("grammar"));
}

fn freeform_options() -> ServeOptions {
    ServeOptions {
        stream: false,
        freeform_tools: BTreeSet::from(["apply_patch".to_owned()]),
        ..ServeOptions::default()
    }
}

#[test]
fn calls_of_freeform_tools_go_back_as_custom_tool_calls() {
    let arguments = json!({ "input": PATCH }).to_string();
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::ToolCall(ToolCall::new("call_1", "apply_patch", arguments)),
                // A model that wrote the patch bare, not as JSON.
                ContentPart::ToolCall(ToolCall::new("call_2", "apply_patch", PATCH)),
                ContentPart::ToolCall(ToolCall::new("call_3", "shell", "{}")),
            ],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let wire = serde_json::to_value(encode_response_for(
        &response,
        "gpt-5-codex",
        &freeform_options(),
    ))
    .unwrap();
    let output = wire["output"].as_array().unwrap();
    assert_eq!(output.len(), 3, "{wire}");
    for (item, call_id) in output[..2].iter().zip(["call_1", "call_2"]) {
        assert_eq!(item["type"], "custom_tool_call", "{item}");
        assert_eq!(item["call_id"], call_id);
        assert_eq!(item["name"], "apply_patch");
        assert_eq!(item["input"], PATCH);
        assert!(item["id"].as_str().unwrap().starts_with("ctc_"), "{item}");
    }
    assert_eq!(output[2]["type"], "function_call");
    assert_eq!(output[2]["arguments"], "{}");
    // Without the option (another request), a call is a function call.
    let plain = serde_json::to_value(encode_response(&response, "m")).unwrap();
    assert_eq!(plain["output"][0]["type"], "function_call");
}

#[test]
fn streamed_calls_of_freeform_tools_send_their_input_whole() {
    let arguments = json!({ "input": PATCH }).to_string();
    let (first, rest) = arguments.split_at(12);
    let events = [
        StreamEvent::Start {
            id: Some("resp_1".into()),
            model: None,
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "apply_patch".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: first.into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: rest.into(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder = ResponseStreamEncoder::new("gpt-5-codex", None)
        .with_freeform_tools(freeform_options().freeform_tools);
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = json_of(&frames[2]);
    assert_eq!(added["item"]["type"], "custom_tool_call");
    assert_eq!(added["item"]["input"], "");
    let item_id = added["item"]["id"].as_str().unwrap().to_owned();
    assert_eq!(json_of(&frames[3])["delta"], PATCH);
    assert_eq!(json_of(&frames[3])["item_id"], item_id.as_str());
    assert_eq!(json_of(&frames[4])["input"], PATCH);
    let done = json_of(&frames[5]);
    assert_eq!(done["item"]["input"], PATCH);
    assert_eq!(done["item"]["call_id"], "call_1");
    assert_eq!(done["item"]["id"], item_id.as_str());
    let completed = json_of(&frames[6]);
    assert_eq!(completed["response"]["output"][0], done["item"]);
}

#[test]
fn hosted_web_search_is_left_out_unless_forced() {
    // What Codex sends a `gpt-5…` model by default.
    let (request, _) = decode_json(json!({"model": "gpt-5-codex", "input": "hi", "tools": [
        {"type": "web_search", "external_web_access": false},
        {"type": "function", "name": "shell", "parameters": {"type": "object"}},
        {"type": "web_search_preview"},
        // A search of deferred tools that OpenAI would run.
        {"type": "tool_search", "description": "Find tools",
         "parameters": {"type": "object"}},
    ]}))
    .unwrap();
    let names: Vec<&str> = request
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    assert_eq!(names, ["shell"]);
    // A request that insists on searching cannot be served.
    for kind in ["web_search", "tool_search"] {
        let error = decode_json(json!({"model": "m", "input": "hi",
            "tools": [{"type": kind}], "tool_choice": {"type": kind}}))
        .unwrap_err();
        assert_eq!(error.field(), "tool_choice.type", "{kind}");
    }
    // So does one that must call a tool when searching was its only one.
    let error = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "web_search"}], "tool_choice": "required"}))
    .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsupportedTool { field, kind } if field == "tools[0]" && kind == "web_search"),
        "{error:?}"
    );
    // With another tool beside it, `required` means that one.
    let (request, _) = decode_json(
        json!({"model": "m", "input": "hi", "tool_choice": "required",
        "tools": [{"type": "web_search"}, {"type": "function", "name": "shell"}]}),
    )
    .unwrap();
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tool_choice, ToolChoice::Required);
}

#[test]
fn two_tools_of_one_name_are_refused() {
    let error = decode_json(json!({"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "apply_patch", "parameters": {"type": "object"}},
        patch_tool(),
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[1].name");
    assert!(error.to_string().contains("`apply_patch`"), "{error}");
}

#[test]
fn a_freeform_input_is_read_from_whatever_arguments_the_model_wrote() {
    for (arguments, input) in [
        (json!({"input": PATCH}).to_string(), PATCH.to_owned()),
        // Misnamed, but the only argument.
        (json!({"patch": PATCH}).to_string(), PATCH.to_owned()),
        // A JSON string, not an object.
        (json!(PATCH).to_string(), PATCH.to_owned()),
        // Bare text.
        (PATCH.to_owned(), PATCH.to_owned()),
        // Not a string: its JSON text; null is nothing.
        (json!({"input": 42}).to_string(), "42".to_owned()),
        (json!({"input": null}).to_string(), String::new()),
        // Nothing at all.
        ("{}".to_owned(), String::new()),
        (String::new(), String::new()),
        // Several arguments, none named `input`: all of it.
        (
            r#"{"a": "x", "b": "y"}"#.to_owned(),
            r#"{"a": "x", "b": "y"}"#.to_owned(),
        ),
    ] {
        assert_eq!(serve::freeform_input(&arguments), input, "{arguments}");
    }
}

/// Tools of an MCP server, as recent Codex versions group them.
fn gmail_namespace() -> Value {
    json!({
        "type": "namespace",
        "name": "mcp__gmail",
        "description": "Find and reference emails from your inbox.",
        "tools": [
            {"type": "function", "name": "search_emails", "description": "Search emails.",
             "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
            {"type": "function", "name": "read_email",
             "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}},
        ]
    })
}

#[test]
fn functions_of_a_namespace_reach_providers_under_one_flat_name_each() {
    let (request, options) = decode_json(json!({
        "model": "gpt-5-codex",
        "input": [
            {"role": "user", "content": "Find the invoice."},
            {"type": "function_call", "call_id": "call_1", "name": "search_emails",
             "namespace": "mcp__gmail", "arguments": "{\"query\":\"invoice\"}"},
            {"type": "function_call_output", "call_id": "call_1", "name": "search_emails",
             "namespace": "mcp__gmail", "output": "1 email"},
        ],
        "tools": [gmail_namespace(), {"type": "function", "name": "shell",
                                      "parameters": {"type": "object"}}],
    }))
    .unwrap();
    let names: Vec<&str> = request
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "mcp__gmail__search_emails",
            "mcp__gmail__read_email",
            "shell"
        ]
    );
    // The namespace's description goes with its first tool only.
    assert_eq!(
        request.tools[0].description,
        "Search emails.\n\nOne of the tools of `mcp__gmail`: Find and reference emails from \
         your inbox."
    );
    assert_eq!(request.tools[1].description, "");
    assert_eq!(
        options.namespaced_tools["mcp__gmail__read_email"],
        ("mcp__gmail".to_owned(), "read_email".to_owned())
    );
    let call = request.messages[1].tool_calls().next().unwrap();
    assert_eq!(call.name, "mcp__gmail__search_emails");
    assert!(
        matches!(&request.messages[2].content[0], ContentPart::ToolResult(result) if result.call_id == "call_1")
    );

    // Only functions may sit in a namespace, and flat names must not clash.
    let error = decode_json(json!({"model": "m", "input": "hi", "tools": [
        {"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[0].tools[0]");
    let error = decode_json(json!({"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "mcp__gmail__read_email"}, gmail_namespace()]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[1].tools[1].name");
    let error = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "namespace", "tools": []}]}))
    .unwrap_err();
    assert_eq!(error.field(), "tools[0].name");
}

#[test]
fn namespaced_names_past_64_characters_are_shortened_the_same_way_each_time() {
    let namespace = "mcp__github_enterprise_server_for_the_platform_team";
    let long = "list_pull_request_review_comments";
    let sibling = "list_pull_request_review_threads";
    let request_json = json!({
        "model": "m",
        "input": [
            {"role": "user", "content": "Summarise the review."},
            {"type": "function_call", "call_id": "call_1", "name": long,
             "namespace": namespace, "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "[]"},
        ],
        "tools": [{"type": "namespace", "name": namespace, "tools": [
            {"type": "function", "name": long, "parameters": {"type": "object"}},
            {"type": "function", "name": sibling, "parameters": {"type": "object"}},
            {"type": "function", "name": "me", "parameters": {"type": "object"}},
        ]}],
    });
    let (request, options) = decode_json(request_json.clone()).unwrap();
    let names: Vec<&str> = request
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    // Both long ones fit and keep the namespace's start and their own
    // name whole; a short one is left as it was.
    for (name, own) in names[..2].iter().zip([long, sibling]) {
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("mcp__github_enterpr"), "{name}");
        assert!(name.ends_with(&format!("__{own}")), "{name}");
    }
    assert_eq!(names[2], format!("{namespace}__me"));
    // Pinned, so that a later build names a tool as an earlier one did
    // (a provider's prompt cache holds the names it saw).
    assert_eq!(
        names[0],
        "mcp__github_enterpr_a25a0d3e__list_pull_request_review_comments"
    );
    // The call in the history names the tool as the tool list does, and
    // the next request shortens it the same way.
    assert_eq!(
        request.messages[1].tool_calls().next().unwrap().name,
        names[0]
    );
    let (again, _) = decode_json(request_json).unwrap();
    assert_eq!(again.tools[0].name, names[0]);

    // The model's call goes back under the client's own names.
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall::new(
                "call_2", names[1], "{}",
            ))],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let wire = serde_json::to_value(encode_response_for(&response, "m", &options)).unwrap();
    assert_eq!(wire["output"][0]["name"], sibling);
    assert_eq!(wire["output"][0]["namespace"], namespace);
}

#[test]
fn a_forced_tool_of_a_namespace_is_named_as_providers_see_it() {
    let namespace = "mcp__github_enterprise_server_for_the_platform_team";
    for kind in ["function", "custom"] {
        let (request, _) = decode_json(json!({"model": "m", "input": "hi",
            "tools": [{"type": "namespace", "name": namespace, "tools": [
                {"type": kind, "name": "list_pull_request_review_comments"}]}],
            "tool_choice": {"type": kind, "namespace": namespace,
                            "name": "list_pull_request_review_comments"}}))
        .unwrap();
        assert_eq!(
            request.tool_choice,
            freehold_protocol::ToolChoice::Tool {
                name: request.tools[0].name.clone()
            },
            "{kind}"
        );
    }
}

#[test]
fn a_namespace_cut_after_an_underscore_does_not_double_the_separator() {
    // Cut to 12 bytes, the namespace would end in `_`.
    let (request, _) = decode_json(json!({"model": "m", "input": "hi", "tools": [
        {"type": "namespace", "name": "mcp__github_enterprise", "tools": [
            {"type": "function", "name": "x".repeat(40)}]}]}))
    .unwrap();
    let name = &request.tools[0].name;
    assert!(name.starts_with("mcp__github_"), "{name}");
    assert!(!name.starts_with("mcp__github__"), "{name}");
    assert_eq!(name.matches("__").count(), 2, "{name}");
    assert!(name.len() <= 63, "{name}");
}

#[test]
fn shortened_names_cut_long_parts_on_character_boundaries() {
    let cases = [
        // A namespace of 2-byte characters, cut between two of them.
        ("é".repeat(40), "read".to_owned(), "__read"),
        // A tool's own name too long to keep whole: it is cut as well.
        ("mcp__x".to_owned(), "ü".repeat(40), "__üüü"),
        ("mcp__x".to_owned(), "a".repeat(70), "__aaa"),
    ];
    for (namespace, own, visible) in cases {
        let (request, options) = decode_json(json!({"model": "m", "input": "hi", "tools": [
            {"type": "namespace", "name": namespace, "tools": [
                {"type": "function", "name": own}]}]}))
        .unwrap();
        let name = &request.tools[0].name;
        assert!(name.len() <= 63 && name.len() >= 60, "{name}");
        assert!(name.contains(visible), "{name}");
        assert_eq!(options.namespaced_tools[name], (namespace, own));
    }
}

#[test]
fn calls_of_namespaced_functions_go_back_under_their_namespace() {
    let (_, options) = decode_json(json!({"model": "m", "input": "hi",
        "tools": [gmail_namespace()]}))
    .unwrap();
    let call = ToolCall::new("call_1", "mcp__gmail__read_email", "{\"id\":\"7\"}");
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(call.clone())],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let wire = serde_json::to_value(encode_response_for(&response, "m", &options)).unwrap();
    let item = &wire["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "read_email");
    assert_eq!(item["namespace"], "mcp__gmail");
    assert_eq!(item["arguments"], "{\"id\":\"7\"}");

    let events = [
        StreamEvent::ToolCallStart {
            index: 0,
            id: call.id.clone(),
            name: call.name.clone(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: call.arguments.clone(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder =
        ResponseStreamEncoder::new("m", None).with_namespaced_tools(options.namespaced_tools);
    let frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    for kind in ["response.output_item.added", "response.output_item.done"] {
        let frame = frames
            .iter()
            .map(json_of)
            .find(|frame| frame["type"] == kind)
            .unwrap();
        assert_eq!(frame["item"]["name"], "read_email", "{frame}");
        assert_eq!(frame["item"]["namespace"], "mcp__gmail", "{frame}");
    }
}

#[test]
fn namespaces_hold_freeform_tools_and_flatten_as_codex_does() {
    let (request, options) = decode_json(json!({
        "model": "gpt-5-codex",
        "input": [
            {"role": "user", "content": "Run it."},
            {"type": "custom_tool_call", "call_id": "call_1", "name": "exec",
             "namespace": "code_mode", "input": "print(1)"},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "1"},
        ],
        "tools": [
            // Some Codex versions end MCP namespaces with the separator.
            {"type": "namespace", "name": "mcp__github__", "tools": [
                {"type": "function", "name": "create_issue", "parameters": {"type": "object"}}]},
            {"type": "namespace", "name": "code_mode", "tools": [
                {"type": "custom", "name": "exec", "description": "Runs code.",
                 "format": {"type": "text"}}]},
        ],
    }))
    .unwrap();
    let names: Vec<&str> = request
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    assert_eq!(names, ["mcp__github__create_issue", "code_mode__exec"]);
    assert!(options.freeform_tools.contains("code_mode__exec"));
    assert_eq!(
        request.tools[1].parameters["required"],
        json!(["input"]),
        "{}",
        request.tools[1].parameters
    );
    let call = request.messages[1].tool_calls().next().unwrap();
    assert_eq!(call.name, "code_mode__exec");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"input": "print(1)"})
    );
    // Its call goes back as a custom tool call in its namespace.
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall::new(
                "call_2",
                "code_mode__exec",
                json!({"input": "print(2)"}).to_string(),
            ))],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let wire = serde_json::to_value(encode_response_for(&response, "m", &options)).unwrap();
    let item = &wire["output"][0];
    assert_eq!(item["type"], "custom_tool_call", "{item}");
    assert_eq!(item["name"], "exec");
    assert_eq!(item["namespace"], "code_mode");
    assert_eq!(item["input"], "print(2)");
}

#[test]
fn a_streamed_call_of_a_namespaced_freeform_tool_keeps_its_namespace() {
    let (_, options) = decode_json(json!({"model": "m", "input": "hi", "tools": [
        {"type": "namespace", "name": "code_mode", "tools": [
            {"type": "custom", "name": "exec", "format": {"type": "text"}}]}]}))
    .unwrap();
    let events = [
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "code_mode__exec".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: json!({"input": "print(1)"}).to_string(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder = ResponseStreamEncoder::new("m", None)
        .with_freeform_tools(options.freeform_tools)
        .with_namespaced_tools(options.namespaced_tools);
    let frames: Vec<Value> = events
        .iter()
        .flat_map(|e| encoder.push(e))
        .map(|frame| json_of(&frame))
        .collect();
    for kind in ["response.output_item.added", "response.output_item.done"] {
        let frame = frames.iter().find(|frame| frame["type"] == kind).unwrap();
        assert_eq!(frame["item"]["type"], "custom_tool_call", "{frame}");
        assert_eq!(frame["item"]["name"], "exec", "{frame}");
        assert_eq!(frame["item"]["namespace"], "code_mode", "{frame}");
    }
    let done = frames
        .iter()
        .find(|frame| frame["type"] == "response.custom_tool_call_input.done")
        .unwrap();
    assert_eq!(done["input"], "print(1)");
}

#[test]
fn keepalives_begin_the_answer_then_repeat_in_progress_until_it_ends() {
    let response = full_response();
    let mut encoder = ResponseStreamEncoder::new("gpt-5", None);
    let mut frames = encoder.keepalive();
    assert_eq!(types(&frames), ["response.created", "response.in_progress"]);
    frames.extend(encoder.keepalive());
    for event in response.to_events() {
        frames.extend(encoder.push(&event));
        frames.extend(encoder.keepalive());
    }
    frames.extend(encoder.finish());
    assert!(encoder.keepalive().is_empty(), "nothing after the end");
    // Sequence numbers still count from 0 without a gap (checked by
    // `types`), and the answer begins once.
    let kinds = types(&frames);
    assert_eq!(kinds[2], "response.in_progress");
    assert_eq!(kinds.iter().filter(|k| *k == "response.created").count(), 1);
    // A keepalive carries the items finished so far.
    let last_in_progress = frames
        .iter()
        .map(json_of)
        .rfind(|frame| frame["type"] == "response.in_progress")
        .unwrap();
    assert_eq!(last_in_progress["response"]["status"], "in_progress");
    assert!(
        !last_in_progress["response"]["output"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let back = replay(&frames, ResponsesDecoder::new("p")).unwrap();
    assert!(back.id.as_deref().unwrap().starts_with("resp_"));
    assert_eq!(
        ChatResponse {
            id: response.id.clone(),
            ..back
        },
        response
    );
}

/// A Responses function is strict only when the client says so: OpenAI's
/// own default (strict) would refuse schemas that every other provider
/// takes.
#[test]
fn functions_are_strict_only_when_the_client_says_so() {
    let strict_of = |strict: Value| {
        let mut tool = json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
        if !strict.is_null() {
            tool["strict"] = strict;
        }
        let (request, _) =
            decode_json(json!({"model": "m", "input": "x", "tools": [tool]})).unwrap();
        request.tools[0].strict
    };
    assert!(strict_of(json!(true)));
    assert!(!strict_of(json!(false)));
    assert!(!strict_of(Value::Null));
}

/// `reasoning.effort: "none"` asks for no reasoning, which an upstream of
/// the same protocol is asked for by leaving `reasoning` out.
#[test]
fn effort_none_asks_for_no_reasoning() {
    let body = json!({"model": "m", "input": "hi", "reasoning": {"effort": "none"}});
    let (request, _) =
        decode_request(serde_json::from_value::<ResponsesRequest>(body).unwrap()).unwrap();
    assert_eq!(request.reasoning, Some(ReasoningEffort::Off));
    let sent = serde_json::to_value(crate::wire::openai_responses::encode_request(
        &request, false, false,
    ))
    .unwrap();
    assert_eq!(sent.get("reasoning"), None, "{sent}");
}

/// A call's signature (Gemini's) goes to the client inside its `call_id`,
/// whole and streamed, and comes back out of it, on the call and on its
/// output, when the client hands the conversation back.
#[test]
fn a_calls_signature_travels_inside_its_call_id() {
    let mut response = full_response();
    response.message.content = vec![ContentPart::ToolCall(ToolCall {
        signature: Some("Q0FMTA==".into()),
        ..ToolCall::new("call_1", "read", r#"{"path":"a"}"#)
    })];
    let wire = serde_json::to_value(encode_response(&response, "gemini-3-pro-preview")).unwrap();
    let call_id = wire["output"][0]["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        call_id,
        crate::wire::serve::call_id_for_client("call_1", Some("Q0FMTA=="))
    );
    assert!(call_id.starts_with("call_1__sig_"), "{call_id}");

    let mut encoder = ResponseStreamEncoder::new("gemini-3-pro-preview", None);
    let mut frames: Vec<SseFrame> = response
        .to_events()
        .iter()
        .flat_map(|event| encoder.push(event))
        .collect();
    frames.extend(encoder.finish());
    let streamed: String = frames.iter().map(SseFrame::to_sse_text).collect();
    assert!(
        streamed.contains(&format!(r#""call_id":"{call_id}""#)),
        "{streamed}"
    );

    let wire: ResponsesRequest = serde_json::from_value(json!({
        "model": "gemini-3-pro-preview",
        "input": [
            {"type": "message", "role": "user", "content": "Read a."},
            {"type": "function_call", "call_id": call_id, "name": "read",
             "arguments": "{\"path\":\"a\"}"},
            {"type": "function_call_output", "call_id": call_id, "output": "fn a() {}"}
        ]
    }))
    .unwrap();
    let (request, _) = decode_request(wire).unwrap();
    let call = request.messages[1].tool_calls().next().unwrap();
    assert_eq!(call.id, "call_1");
    assert_eq!(call.signature.as_deref(), Some("Q0FMTA=="));
    let ContentPart::ToolResult(result) = &request.messages[2].content[0] else {
        panic!("{:?}", request.messages[2]);
    };
    assert_eq!(result.call_id, "call_1");
}

/// Codex's "lite" mode (the gpt-5.6 models): empty `instructions`, no
/// `tools`, and the tools in an `additional_tools` item opening `input`.
#[test]
fn tools_declared_in_the_input_are_the_requests_tools() {
    let (request, options) = decode_json(json!({
        "model": "gpt-5.6-sol",
        "instructions": "",
        "input": [
            {"type": "additional_tools", "role": "developer", "tools": [
                {"type": "namespace", "name": "functions", "tools": [
                    {"type": "function", "name": "shell", "parameters": {"type": "object"}}]},
                {"type": "custom", "name": "apply_patch", "format": {"type": "text"}}]},
            {"role": "developer", "content": "You are Codex."},
            {"role": "user", "content": "List the files."},
        ],
    }))
    .unwrap();
    let names: Vec<&str> = request
        .tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    assert_eq!(names, ["functions__shell", "apply_patch"]);
    assert!(options.freeform_tools.contains("apply_patch"));
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User]);
    assert_eq!(request.messages[0].text(), "You are Codex.");

    // After the request's own `tools`, and with the same checks, naming
    // where a tool was.
    let (request, _) = decode_json(json!({"model": "m",
        "tools": [{"type": "function", "name": "first"}],
        "input": [{"type": "additional_tools", "tools": [{"type": "function", "name": "second"}]},
                  {"role": "user", "content": "hi"}]}))
    .unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    let error = decode_json(json!({"model": "m", "input": [
        {"type": "additional_tools", "tools": [{"type": "file_search"}]}]}))
    .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsupportedTool { field, kind }
            if field == "input[0].tools[0]" && kind == "file_search"),
        "{error:?}"
    );
}

#[test]
fn efforts_above_high_are_high() {
    // Codex's `ultra` too: it is `high` to every upstream, as an OpenAI
    // client's `xhigh` is (see docs/gateway.md, translation gaps).
    for asked in ["high", "xhigh", "max", "ultra"] {
        let (request, _) =
            decode_json(json!({"model": "gpt-5.5", "input": "hi", "reasoning": {"effort": asked}}))
                .unwrap();
        assert_eq!(request.reasoning, Some(ReasoningEffort::High), "{asked}");
        assert_eq!(request.reasoning_effort_name, None, "{asked}");
    }
    let error = decode_json(json!({"model": "m", "input": "hi", "reasoning": {"effort": "huge"}}))
        .unwrap_err();
    assert!(error.to_string().contains("ultra"), "{error}");
}

/// Codex's `tool_search` as Codex 0.171.0 declares it (with an MCP server
/// set up, for a model whose metadata has the search, gpt-5.5).
fn tool_search_tool() -> Value {
    json!({"type": "tool_search", "execution": "client",
           "description": "# Tool discovery\n\nSearches over deferred tool metadata.",
           "parameters": {"type": "object", "properties": {
               "limit": {"type": "number"}, "query": {"type": "string"}},
               "required": ["query"], "additionalProperties": false}})
}

/// What Codex's search found: an MCP server's tools, grouped by namespace.
fn found_notes_tools() -> Value {
    json!([{"type": "namespace", "name": "mcp__notes",
            "description": "Tools in the mcp__notes namespace.",
            "tools": [
                {"type": "function", "name": "create_note", "description": "Create a note",
                 "strict": false, "defer_loading": true,
                 "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
                {"type": "function", "name": "list_notes", "description": "List notes",
                 "strict": false, "defer_loading": true,
                 "parameters": {"type": "object", "properties": {}}}]}])
}

#[test]
fn codexs_tool_search_is_a_function_and_the_tools_it_found_join_the_request() {
    let (request, options) = decode_json(json!({
        "model": "gpt-5.5",
        "tools": [
            {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
            tool_search_tool(),
            {"type": "web_search", "external_web_access": true},
        ],
        "input": [
            {"role": "user", "content": "Make a note."},
            {"type": "tool_search_call", "call_id": "call_s1", "execution": "client",
             "status": "completed", "arguments": {"query": "notes", "limit": 8}},
            {"type": "tool_search_output", "call_id": "call_s1", "status": "completed",
             "execution": "client", "tools": found_notes_tools()},
            // Found again by a second search: the same tools, once.
            {"type": "tool_search_call", "call_id": "call_s2", "execution": "client",
             "arguments": {"query": "create note"}},
            {"type": "tool_search_output", "call_id": "call_s2", "tools": [
                found_notes_tools()[0].clone()]},
        ],
    }))
    .unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "exec_command",
            "tool_search",
            "mcp__notes__create_note",
            "mcp__notes__list_notes"
        ]
    );
    assert!(options.tool_search);
    assert_eq!(request.tools[1].parameters["required"], json!(["query"]));
    assert!(request.tools[1].description.starts_with("# Tool discovery"));
    assert_eq!(
        options.namespaced_tools["mcp__notes__create_note"],
        ("mcp__notes".to_owned(), "create_note".to_owned())
    );
    // The search's call and result, as a provider reads them.
    let call = request.messages[1].tool_calls().next().unwrap();
    assert_eq!(call.name, "tool_search");
    assert_eq!(call.id, "call_s1");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"query": "notes", "limit": 8})
    );
    let Some(ContentPart::ToolResult(result)) = request.messages[2].content.first() else {
        panic!("{:?}", request.messages[2]);
    };
    assert_eq!(result.call_id, "call_s1");
    assert_eq!(
        result.content,
        "Found, and now among your tools: `mcp__notes__create_note`, `mcp__notes__list_notes`."
    );

    // A search the server runs is still left out; its items in the input
    // (or an output with no call id) pair with no call of the client's, and
    // are skipped, though what they found joins the tools.
    let (request, options) = decode_json(json!({"model": "m",
    "tools": [{"type": "tool_search", "execution": "server"},
              {"type": "function", "name": "f"}],
    "input": [
        {"role": "user", "content": "hi"},
        {"type": "tool_search_call", "call_id": null, "execution": "server",
         "arguments": {"query": "notes"}},
        {"type": "tool_search_output", "call_id": null, "execution": "server",
         "status": "completed", "tools": found_notes_tools()},
        {"type": "tool_search_output", "tools": []},
    ]}))
    .unwrap();
    let names: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["f", "mcp__notes__create_note", "mcp__notes__list_notes"]
    );
    assert!(!options.tool_search);
    assert_eq!(request.messages, vec![Message::user("hi")]);

    // Forced by its type; refused beside a function of its name, whose
    // calls Codex would get as plain function calls.
    let (request, _) = decode_json(json!({"model": "m", "input": "hi",
        "tools": [tool_search_tool()], "tool_choice": {"type": "tool_search"}}))
    .unwrap();
    assert_eq!(
        request.tool_choice,
        ToolChoice::Tool {
            name: "tool_search".into()
        }
    );
    let error = decode_json(json!({"model": "m", "input": "hi",
        "tools": [{"type": "function", "name": "tool_search"}, tool_search_tool()]}))
    .unwrap_err();
    assert!(error.to_string().contains("tool_search"), "{error}");
}

#[test]
fn calls_of_tool_search_go_back_as_tool_search_calls() {
    let (_, options) = decode_json(json!({"model": "gpt-5.5", "input": "hi",
        "tools": [tool_search_tool()]}))
    .unwrap();
    let called = |arguments: &str| ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall::new(
                "call_7",
                "tool_search",
                arguments,
            ))],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let wire = serde_json::to_value(encode_response_for(
        &called(r#"{"query": "notes"}"#),
        "gpt-5.5",
        &options,
    ))
    .unwrap();
    let item = &wire["output"][0];
    assert_eq!(item["type"], "tool_search_call", "{item}");
    assert_eq!(item["execution"], "client");
    assert_eq!(item["call_id"], "call_7");
    assert_eq!(item["status"], "completed");
    assert_eq!(item["arguments"], json!({"query": "notes"}));
    assert!(item["id"].as_str().unwrap().starts_with("tsc_"));
    // What a small model may write instead of an object is the query.
    for (written, arguments) in [
        (r#""notes""#, json!({"query": "notes"})),
        ("notes please", json!({"query": "notes please"})),
        ("", json!({"query": ""})),
        (r#"{"q": "notes", "extra": 1}"#, json!({"query": "notes"})),
        (
            r#"{"query": "notes", "limit": "5"}"#,
            json!({"query": "notes", "limit": 5}),
        ),
        (
            r#"{"query": "notes", "limit": 3}"#,
            json!({"query": "notes", "limit": 3}),
        ),
    ] {
        let wire =
            serde_json::to_value(encode_response_for(&called(written), "m", &options)).unwrap();
        assert_eq!(wire["output"][0]["arguments"], arguments, "{written:?}");
    }
    // Without Codex's search in the request, a tool of that name is a
    // function like any other.
    let wire = serde_json::to_value(encode_response(&called("{}"), "m")).unwrap();
    assert_eq!(wire["output"][0]["type"], "function_call");

    // Streamed: announced and done together, its arguments whole.
    let events = [
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_7".into(),
            name: "tool_search".into(),
            signature: None,
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: r#"{"query": "#.into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: r#""notes"}"#.into(),
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_tool_search(true);
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = json_of(&frames[2]);
    let done = json_of(&frames[3]);
    assert_eq!(added["item"]["type"], "tool_search_call");
    assert_eq!(added["item"]["arguments"], json!({"query": "notes"}));
    assert_eq!(added["item"]["status"], "in_progress");
    assert_eq!(done["item"]["status"], "completed");
    assert_eq!(done["item"]["id"], added["item"]["id"]);
    assert_eq!(json_of(&frames[4])["response"]["output"][0], done["item"]);
}

/// A search beside a function call in one streamed answer: each its own
/// item, in order, the function's events held while the search is open.
#[test]
fn a_streamed_search_beside_a_function_call_keeps_the_items_apart() {
    let start = |index: u32, id: &str, name: &str| StreamEvent::ToolCallStart {
        index,
        id: id.into(),
        name: name.into(),
        signature: None,
    };
    let delta = |index: u32, delta: &str| StreamEvent::ToolCallArgsDelta {
        index,
        delta: delta.into(),
    };
    let end = |index: u32| StreamEvent::ToolCallEnd {
        index,
        signature: None,
    };
    let events = [
        start(0, "call_s", "tool_search"),
        delta(0, r#"{"query""#),
        start(1, "call_f", "exec_command"),
        delta(1, r#"{"cmd": "ls"}"#),
        delta(0, r#": "notes"}"#),
        end(0),
        end(1),
        StreamEvent::Stop {
            reason: StopReason::ToolUse,
        },
    ];
    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_tool_search(true);
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    let kinds = types(&frames);
    let done: Vec<Value> = frames
        .iter()
        .map(json_of)
        .filter(|frame| frame["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done.len(), 2, "{kinds:?}");
    assert_eq!(done[0]["output_index"], 0);
    assert_eq!(done[0]["item"]["type"], "tool_search_call");
    assert_eq!(done[0]["item"]["arguments"], json!({"query": "notes"}));
    assert_eq!(done[1]["output_index"], 1);
    assert_eq!(done[1]["item"]["type"], "function_call");
    assert_eq!(done[1]["item"]["arguments"], r#"{"cmd": "ls"}"#);
    let completed = json_of(frames.last().unwrap());
    assert_eq!(completed["response"]["output"][0], done[0]["item"]);
    assert_eq!(completed["response"]["output"][1], done[1]["item"]);
}

/// A conversation Codex compacts as it does for a provider named `OpenAI`:
/// its history with a call, then the trigger.
fn compaction_request() -> Value {
    json!({"model": "gpt-5.5", "stream": true, "instructions": "You are Codex.",
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}],
        "tool_choice": "auto",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Fix add in calc.py."}]},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command",
             "arguments": "{\"cmd\": \"cat calc.py\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "return a - b"},
            {"type": "compaction_trigger"}]})
}

/// A `compaction_trigger` asks for a summary: the model gets the
/// conversation, then the request for one, with its tools but no call
/// allowed, in text whatever format the request named.
#[test]
fn a_compaction_trigger_asks_the_model_for_a_summary() {
    let mut body = compaction_request();
    body["text"] = json!({"format": {"type": "json_object"}, "verbosity": "low"});
    let (request, options) = decode_json(body).unwrap();
    assert!(options.compaction && options.stream);
    let last = request.messages.last().unwrap();
    assert_eq!(last.role, Role::User);
    assert_eq!(last.text(), compaction::SUMMARY_REQUEST);
    // The conversation before it is whole: the call and its result.
    assert!(request.messages.iter().any(|m| m.role == Role::Tool));
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tool_choice, ToolChoice::None);
    assert_eq!(request.response_format, None);
    assert_eq!(request.verbosity, Some(Verbosity::Low));
    assert_eq!(request.max_tokens, None);
    let mut with_limit = compaction_request();
    with_limit["max_output_tokens"] = json!(300);
    assert_eq!(decode_json(with_limit).unwrap().0.max_tokens, Some(300));
    // An ordinary request is no compaction.
    let (_, plain) = decode_json(json!({"model": "m", "input": "hi"})).unwrap();
    assert!(!plain.compaction);
    // A trigger anywhere but last would leave what follows it unanswered.
    let mut early = compaction_request();
    early["input"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "and then?"}));
    let error = decode_json(early).unwrap_err().to_string();
    assert!(
        error.contains("input[3]") && error.contains("last"),
        "{error}"
    );
}

/// The summary goes back as one `compaction` item, whole or streamed
/// (announced and done at once, after the model finished), and the next
/// request reads the item back as a user message carrying it.
#[test]
fn the_summary_goes_back_as_a_compaction_item_that_later_requests_read() {
    let summary = "The user wants add() fixed; calc.py subtracts.";
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "Let me summarise.".into(),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: summary.into(),
                },
            ],
        },
        stop_reason: StopReason::EndTurn,
        ..full_response()
    };
    let whole = serde_json::to_value(encode_compaction(&response, "gpt-5.5").unwrap()).unwrap();
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["status"], "completed");
    let output = whole["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{whole}");
    assert_eq!(output[0]["type"], "compaction");
    assert!(output[0]["id"].as_str().unwrap().starts_with("cmp_"));
    assert_eq!(
        output[0]["encrypted_content"],
        compaction_content(summary).as_str()
    );

    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_compaction(true);
    let events = [
        StreamEvent::Start {
            id: Some("resp_9".into()),
            model: None,
        },
        StreamEvent::ReasoningDelta {
            text: "thinking".into(),
            id: None,
        },
        StreamEvent::TextDelta {
            text: "The user wants add() fixed; ".into(),
        },
        StreamEvent::TextDelta {
            text: "calc.py subtracts.".into(),
        },
        StreamEvent::Usage(Usage {
            input_tokens: 900,
            output_tokens: 12,
            ..Usage::default()
        }),
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ];
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = json_of(&frames[2]);
    let done = json_of(&frames[3]);
    assert_eq!(done["item"], output_without_id(&output[0], &done["item"]));
    assert_eq!(added["item"], done["item"], "announced whole");
    assert_eq!(
        (
            added["output_index"].as_u64(),
            done["output_index"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(encoder.take_failure().is_none());
    let completed = json_of(&frames[4]);
    assert_eq!(completed["response"]["output"], json!([done["item"]]));
    assert_eq!(completed["response"]["usage"]["input_tokens"], 900);

    // Codex then sends its user messages and the item.
    let (next, options) = decode_json(json!({"model": "gpt-5.5", "input": [
        {"role": "user", "content": "Fix add in calc.py."},
        done["item"],
        {"role": "user", "content": "Go on."}]}))
    .unwrap();
    assert!(!options.compaction);
    let texts: Vec<String> = next.messages.iter().map(Message::text).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(next.messages[1].role, Role::User);
    assert!(texts[1].ends_with(&format!("\n\n{summary}")), "{texts:?}");
}

/// The streamed item's id is made when it is encoded: the same item as the
/// whole answer's, but for that.
fn output_without_id(whole: &Value, streamed: &Value) -> Value {
    let mut expected = whole.clone();
    expected["id"] = streamed["id"].clone();
    expected
}

/// A model that writes no summary fails the compaction, rather than
/// answering with an empty one that would lose the conversation.
#[test]
fn a_compaction_without_a_summary_fails() {
    let called = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall::new(
                "c",
                "exec_command",
                "{}",
            ))],
        },
        stop_reason: StopReason::ToolUse,
        ..full_response()
    };
    let error = encode_compaction(&called, "gpt-5.5").unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_compaction(true);
    let mut frames: Vec<SseFrame> = [
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c".into(),
            name: "exec_command".into(),
            signature: None,
        },
        StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        },
    ]
    .iter()
    .flat_map(|e| encoder.push(e))
    .collect();
    frames.extend(encoder.finish());
    assert_eq!(
        types(&frames),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let failed = json_of(&frames[2]);
    let message = failed["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("no summary"), "{message}");
    // The gateway learns of it once, to record it.
    assert!(encoder.take_failure().is_some());
    assert!(encoder.take_failure().is_none());

    // A refusal is no summary either, whatever it says.
    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_compaction(true);
    let frames: Vec<SseFrame> = [
        StreamEvent::RefusalStart,
        StreamEvent::TextDelta {
            text: "I can't help with that.".into(),
        },
        StreamEvent::Stop {
            reason: StopReason::Refusal,
        },
    ]
    .iter()
    .flat_map(|e| encoder.push(e))
    .collect();
    assert_eq!(types(&frames).last().unwrap(), "response.failed");
    assert!(encoder.take_failure().unwrap().message.contains("refused"));
}

/// Text the model wrote in two runs, reasoning between, is one summary
/// with a blank line between them, whole and streamed.
#[test]
fn runs_of_summary_are_joined_by_a_blank_line() {
    let response = ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Text {
                    text: "Done: a.".into(),
                },
                ContentPart::Reasoning(Reasoning {
                    text: "more".into(),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "Next: b.".into(),
                },
            ],
        },
        ..full_response()
    };
    let whole = encode_compaction(&response, "m").unwrap();
    let summary_of = |item: &Item| match item {
        Item::Compaction(item) => compaction_summary(&item.encrypted_content).unwrap(),
        other => panic!("not a compaction: {other:?}"),
    };
    assert_eq!(summary_of(&whole.output[0]), "Done: a.\n\nNext: b.");
    let mut encoder = ResponseStreamEncoder::new("m", None).with_compaction(true);
    let frames: Vec<SseFrame> = [
        StreamEvent::ReasoningDelta {
            text: "first".into(),
            id: None,
        },
        StreamEvent::TextDelta {
            text: "Done: ".into(),
        },
        StreamEvent::TextDelta { text: "a.".into() },
        StreamEvent::ReasoningDelta {
            text: "more".into(),
            id: None,
        },
        StreamEvent::TextDelta {
            text: "Next: b.".into(),
        },
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ]
    .iter()
    .flat_map(|e| encoder.push(e))
    .collect();
    let done = json_of(&frames[frames.len() - 2]);
    let item: Item = serde_json::from_value(done["item"].clone()).unwrap();
    assert_eq!(summary_of(&item), "Done: a.\n\nNext: b.");
}

/// `/v1/responses/compact`: the conversation's user messages, then the
/// compaction item.
#[test]
fn the_compact_endpoint_keeps_the_user_messages_then_the_compaction() {
    let mut body = compaction_request();
    body["input"].as_array_mut().unwrap().pop();
    body["input"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "Fixed."}));
    let wire: ResponsesRequest = serde_json::from_value(body).unwrap();
    let (request, options, kept) = decode_compact_request(wire).unwrap();
    assert!(options.compaction && !options.stream);
    assert_eq!(
        request.messages.last().unwrap().text(),
        compaction::SUMMARY_REQUEST
    );
    let response = ChatResponse {
        message: Message::assistant("Summary."),
        ..full_response()
    };
    let compacted =
        serde_json::to_value(encode_compacted(&response, "gpt-5.5", kept).unwrap()).unwrap();
    assert_eq!(compacted["object"], "response.compaction");
    let output = compacted["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{compacted}");
    assert_eq!(output[0]["role"], "user");
    assert_eq!(output[0]["content"][0]["text"], "Fix add in calc.py.");
    assert_eq!(output[1]["type"], "compaction");
    // A plain-text input is one user message, kept as such.
    let wire: ResponsesRequest =
        serde_json::from_value(json!({"model": "m", "input": "Remember 42."})).unwrap();
    let (_, _, kept) = decode_compact_request(wire).unwrap();
    let kept = serde_json::to_value(kept).unwrap();
    assert_eq!(kept[0]["content"][0]["text"], "Remember 42.");
}

/// A summary cut at the length bound is kept, and the response completed:
/// Codex cannot go on from an incomplete one.
#[test]
fn a_summary_cut_at_the_length_bound_still_completes_the_compaction() {
    let cut = ChatResponse {
        message: Message::assistant("The user wants add() fi"),
        stop_reason: StopReason::MaxTokens,
        ..full_response()
    };
    let whole = encode_compaction(&cut, "gpt-5.5").unwrap();
    assert_eq!(whole.status.as_deref(), Some("completed"));
    assert_eq!(whole.incomplete_details, None);
    let mut encoder = ResponseStreamEncoder::new("gpt-5.5", None).with_compaction(true);
    let frames: Vec<SseFrame> = [
        StreamEvent::TextDelta {
            text: "The user wants add() fi".into(),
        },
        StreamEvent::Stop {
            reason: StopReason::MaxTokens,
        },
    ]
    .iter()
    .flat_map(|e| encoder.push(e))
    .collect();
    assert_eq!(
        types(&frames)[2..],
        [
            "response.output_item.added",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let completed = json_of(frames.last().unwrap());
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["response"]["incomplete_details"], Value::Null);
    assert_eq!(completed["response"]["output"][0]["type"], "compaction");
}

/// Server-side compaction: `context_management`'s threshold is read, the
/// lowest of several; an entry of another kind or a threshold of 0 is
/// refused by field; an entry without one is ignored; a request that is
/// itself a compaction is not compacted first.
#[test]
fn context_management_gives_the_compaction_threshold() {
    let with = |entries: Value| {
        decode_json(json!({"model": "m", "input": "hi", "context_management": entries}))
    };
    let (_, options) = with(json!([{"type": "compaction", "compact_threshold": 2000}])).unwrap();
    assert_eq!(options.compact_threshold, Some(2000));
    let (_, options) = with(json!([
        {"type": "compaction", "compact_threshold": 9000},
        {"type": "compaction", "compact_threshold": 3000}]))
    .unwrap();
    assert_eq!(options.compact_threshold, Some(3000));
    let (_, options) = with(json!([{"type": "compaction"}])).unwrap();
    assert_eq!(options.compact_threshold, None);
    let (_, plain) = decode_json(json!({"model": "m", "input": "hi"})).unwrap();
    assert_eq!(plain.compact_threshold, None);
    let error = with(json!([{"type": "truncation"}]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("context_management[0].type"), "{error}");
    assert!(error.contains("`truncation`"), "{error}");
    let error = with(json!([{"type": "compaction", "compact_threshold": 0}]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("context_management[0].compact_threshold"),
        "{error}"
    );
    let mut trigger = compaction_request();
    trigger["context_management"] = json!([{"type": "compaction", "compact_threshold": 1}]);
    let (_, options) = decode_json(trigger).unwrap();
    assert!(options.compaction);
    assert_eq!(options.compact_threshold, None);
}

/// What a compaction replaced is left out of a later request: before the
/// last compaction item, the user's, system and developer messages and the
/// tools declared in the input stay, and a search's tools without its
/// call; after it, everything.
#[test]
fn a_compaction_replaces_the_model_turns_before_it() {
    let summary = compaction_content("The user wants add() fixed; calc.py read.");
    let (request, _) = decode_json(json!({"model": "m", "instructions": "Be brief.",
        "input": [
            {"type": "additional_tools", "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]},
            {"role": "developer", "content": "Sandbox: read-only."},
            {"role": "user", "content": "Fix add in calc.py."},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "return a - b"},
            {"type": "tool_search_call", "call_id": "ts_1", "execution": "client",
             "arguments": {"query": "notes"}},
            {"type": "tool_search_output", "call_id": "ts_1", "execution": "client",
             "tools": [{"type": "function", "name": "notes", "parameters": {"type": "object"}}]},
            {"role": "assistant", "content": "Reading it."},
            {"type": "compaction", "encrypted_content": summary},
            {"role": "assistant", "content": "Fixed it."},
            {"type": "function_call", "call_id": "call_2", "name": "exec_command",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_2", "output": "ok"},
            {"role": "user", "content": "Thanks; now the tests."}]}))
    .unwrap();
    let roles: Vec<(Role, String)> = request
        .messages
        .iter()
        .map(|m| (m.role, m.text().chars().take(20).collect()))
        .collect();
    assert_eq!(
        roles,
        vec![
            (Role::System, "Be brief.".into()),
            (Role::System, "Sandbox: read-only.".into()),
            (Role::User, "Fix add in calc.py.".into()),
            (Role::User, "The earlier part of ".into()),
            (Role::Assistant, "Fixed it.".into()),
            // A tool result has no text of its own (`Message::text`).
            (Role::Tool, String::new()),
            (Role::User, "Thanks; now the test".into()),
        ]
    );
    let tools: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tools, ["exec_command", "notes"]);
}

/// The two calls of a server-side compaction: the summary's request is the
/// conversation and the request for a summary, nothing callable; the
/// answer's conversation is what the compaction stands for, the summary
/// last; its item is the model's text.
#[test]
fn a_server_side_compaction_asks_for_a_summary_then_answers_from_it() {
    let body = json!({"model": "m", "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}],
        "text": {"format": {"type": "json_object"}},
        "context_management": [{"type": "compaction", "compact_threshold": 10}],
        "input": [
            {"role": "user", "content": "Fix add in calc.py."},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command",
             "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "return a - b"}]});
    let (request, options) = decode_json(body.clone()).unwrap();
    assert_eq!(options.compact_threshold, Some(10));
    let summary = summary_request(request.clone());
    assert_eq!(summary.messages.len(), request.messages.len() + 1);
    assert_eq!(
        summary.messages.last().unwrap().text(),
        compaction::SUMMARY_REQUEST
    );
    assert_eq!(summary.tool_choice, ToolChoice::None);
    assert_eq!(summary.tools, request.tools);
    assert_eq!(summary.response_format, None);
    assert_eq!(request.response_format, Some(ResponseFormat::JsonObject));

    let answered = ChatResponse {
        message: Message::assistant("Add subtracts; fix it."),
        stop_reason: StopReason::EndTurn,
        ..full_response()
    };
    let item = compaction_item(&answered).unwrap();
    let Item::Compaction(compaction) = &item else {
        panic!("a compaction item: {item:?}");
    };
    assert_eq!(
        compaction_summary(&compaction.encrypted_content).unwrap(),
        "Add subtracts; fix it."
    );
    let wire: ResponsesRequest = serde_json::from_value(body).unwrap();
    let after = request_after_compaction(wire, item).unwrap();
    // The request's own tools and settings, the conversation replaced.
    assert_eq!(after.tools, request.tools);
    assert_eq!(after.response_format, request.response_format);
    let texts: Vec<(Role, String)> = after.messages.iter().map(|m| (m.role, m.text())).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts[0], (Role::System, "Be brief.".into()));
    assert_eq!(texts[1], (Role::User, "Fix add in calc.py.".into()));
    assert!(texts[2].1.ends_with("Add subtracts; fix it."), "{texts:?}");
    // A model that wrote nothing compacts nothing.
    let silent = ChatResponse {
        message: Message::assistant(""),
        ..answered
    };
    assert_eq!(compaction_item(&silent).unwrap_err().status, Some(502));
}

/// Streamed, a compaction run before the answer is the first output item,
/// announced and done at once; the answer's items follow it, and the final
/// usage adds both calls'.
#[test]
fn a_compaction_run_first_leads_the_streamed_answer() {
    let mut encoder = ResponseStreamEncoder::new("m", None);
    let item = Item::Compaction(CompactionItem {
        id: Some("cmp_1".into()),
        encrypted_content: compaction_content("Notes."),
    });
    let summary_usage = Usage {
        input_tokens: 900,
        output_tokens: 40,
        ..Usage::default()
    };
    let mut frames = encoder.compacted(item.clone(), &summary_usage);
    frames.extend(
        [
            StreamEvent::Start {
                id: Some("resp_up".into()),
                model: None,
            },
            StreamEvent::TextDelta {
                text: "Done.".into(),
            },
            StreamEvent::Usage(Usage {
                input_tokens: 100,
                output_tokens: 5,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::EndTurn,
            },
        ]
        .iter()
        .flat_map(|e| encoder.push(e)),
    );
    let kinds = types(&frames);
    assert_eq!(
        kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done"
        ],
        "{kinds:?}"
    );
    let added = json_of(&frames[2]);
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["type"], "compaction");
    let text_added = frames
        .iter()
        .map(json_of)
        .find(|f| f["type"] == "response.output_item.added" && f["item"]["type"] == "message")
        .unwrap();
    assert_eq!(text_added["output_index"], 1);
    let completed = json_of(frames.last().unwrap());
    assert_eq!(completed["type"], "response.completed");
    let output = completed["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0], serde_json::to_value(&item).unwrap());
    assert_eq!(output[1]["content"][0]["text"], "Done.");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 1000);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 45);
}

/// Items left out as replaced by a compaction still count for the index an
/// error names: it is the client's own.
#[test]
fn errors_after_a_compaction_name_the_item_as_sent() {
    let error = decode_json(json!({"model": "m", "input": [
        {"role": "user", "content": "Fix it."},
        {"role": "assistant", "content": "Reading."},
        {"type": "compaction", "encrypted_content": "gAAAAABo-encrypted-by-openai"}]}))
    .unwrap_err()
    .to_string();
    assert!(error.contains("input[2].encrypted_content"), "{error}");
    let summary = compaction_content("Notes.");
    let error = decode_json(json!({"model": "m", "input": [
        {"role": "assistant", "content": "Reading."},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "compaction", "encrypted_content": summary},
        {"type": "compaction_trigger"},
        {"role": "user", "content": "Go on."}]}))
    .unwrap_err()
    .to_string();
    assert!(error.contains("input[3]"), "{error}");
}

/// The end user reaches OpenAI's own Responses API as its
/// `safety_identifier` (hashed past 64 characters), and no other server.
#[test]
fn the_end_user_reaches_openais_responses_api_alone() {
    let request = ChatRequest {
        end_user: Some("u".repeat(80)),
        ..ChatRequest::new("gpt-5", vec![Message::user("hi")])
    };
    let sent = encode_request(&request, false, true);
    assert_eq!(sent.safety_identifier.as_deref().map(str::len), Some(64));
    assert_eq!(sent.user, None);
    let elsewhere = serde_json::to_value(encode_request(&request, false, false)).unwrap();
    assert!(elsewhere.get("safety_identifier").is_none(), "{elsewhere}");
    let (decoded, _) = decode_json(json!({"model": "m", "input": "hi", "user": "",
        "safety_identifier": "user-7"}))
    .unwrap();
    assert_eq!(decoded.end_user.as_deref(), Some("user-7"));
}
