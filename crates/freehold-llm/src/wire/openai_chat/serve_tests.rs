//! Tests of the gateway direction: round trips through the client side.

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, LlmError, Message, Reasoning,
    ReasoningEffort, ResponseFormat, Role, Sampling, StopReason, StreamEvent, ToolCall, ToolChoice,
    ToolResult, ToolSpec, Usage, Verbosity,
};
use serde_json::{Value, json};

use super::*;
use crate::wire::serve::test_support::{replay, replay_events};
use crate::wire::serve::{DecodeError, SseFrame};

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
        model: "gpt-5.1".into(),
        messages: vec![
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
                            url: "https://example.com/a.jpg".into(),
                        },
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Text {
                        text: "Let me look.".into(),
                    },
                    ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                    ContentPart::ToolCall(ToolCall::new("call_2", "grep", r#"{"q":"b"}"#)),
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
                        content: "no match".into(),
                        is_error: false,
                    }),
                ],
            },
            Message::assistant("Done."),
            Message::user("Thanks"),
        ],
        tools: vec![tool("read"), tool("grep")],
        tool_choice: ToolChoice::Tool {
            name: "read".into(),
        },
        parallel_tool_calls: Some(false),
        sampling: Sampling {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            seed: Some(7),
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
        },
        max_tokens: Some(512),
        stop: vec!["END".into(), "STOP".into()],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object"}),
            strict: true,
        }),
        reasoning: Some(ReasoningEffort::High),
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
    for field in [
        MaxTokensField::MaxTokens,
        MaxTokensField::MaxCompletionTokens,
    ] {
        let dialect = Dialect {
            max_tokens_field: field,
            openai_api: true,
            ..Dialect::default()
        };
        let wire = encode_request(&request, dialect, true);
        // Through JSON, as a server receives it.
        let wire: CompletionRequest =
            serde_json::from_value(serde_json::to_value(&wire).unwrap()).unwrap();
        let (decoded, options) = decode_request(wire).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(
            options,
            ServeOptions {
                stream: true,
                include_usage: true
            }
        );
    }
    let simple = ChatRequest::new("m", vec![Message::user("hi")]);
    let (decoded, options) =
        decode_request(encode_request(&simple, Dialect::default(), false)).unwrap();
    assert_eq!(decoded, simple);
    assert_eq!(options, ServeOptions::default());
}

fn full_response() -> ChatResponse {
    ChatResponse {
        id: Some("chatcmpl-abc".into()),
        model: Some("gpt-x".into()),
        message: Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "thinking it over".into(),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "Reading both.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                ContentPart::ToolCall(ToolCall::new("call_2", "grep", r#"{"q":"b"}"#)),
            ],
        },
        usage: Usage {
            input_tokens: 120,
            cached_input_tokens: 100,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: 30,
            reasoning_tokens: 12,
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
    let wire = encode_response(&response, "gpt-x");
    let json = serde_json::to_value(&wire).unwrap();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        json["choices"][0]["message"]["tool_calls"][0]["type"],
        "function"
    );
    assert_eq!(json["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(json["usage"]["total_tokens"], 150);
    let back = decode_response("p", serde_json::from_value(json).unwrap(), &[]).unwrap();
    assert_eq!(back, response);

    // Text only; no id: one is generated.
    let mut plain = full_response();
    plain.id = None;
    plain.message = Message::assistant("hi");
    plain.stop_reason = StopReason::MaxTokens;
    let wire = encode_response(&plain, "gpt-x");
    assert!(wire.id.starts_with("chatcmpl-"), "{}", wire.id);
    assert!(wire.created > 1_600_000_000);
    let back = decode_response("p", wire, &[]).unwrap();
    assert_eq!(back.message, plain.message);
    assert_eq!(back.stop_reason, StopReason::MaxTokens);

    // A refusal: `refusal` with `content: null`, as OpenAI sends it (the
    // SDK's `parse()` reads it instead of parsing the words), and back.
    let mut refused = full_response();
    refused.message = Message::assistant("I can't help with that.");
    refused.stop_reason = StopReason::Refusal;
    let json = serde_json::to_value(encode_response(&refused, "gpt-x")).unwrap();
    let message = &json["choices"][0]["message"];
    assert!(message["content"].is_null(), "{message}");
    assert_eq!(message["refusal"], "I can't help with that.");
    let back = decode_response("p", serde_json::from_value(json).unwrap(), &[]).unwrap();
    assert_eq!(back.stop_reason, StopReason::Refusal);
    assert_eq!(back.message, refused.message);
}

fn encode_stream(events: &[StreamEvent], include_usage: bool) -> Vec<SseFrame> {
    let mut encoder = ChunkEncoder::new("gpt-x", None, include_usage);
    let mut frames: Vec<SseFrame> = events.iter().flat_map(|e| encoder.push(e)).collect();
    frames.extend(encoder.finish());
    frames
}

#[test]
fn streams_round_trip_through_the_client_decoder() {
    let response = full_response();
    let frames = encode_stream(&response.to_events(), true);
    assert!(frames.last().unwrap().is_done());
    let first = match &frames[0].data {
        crate::wire::serve::SseData::Json(value) => value.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["id"], "chatcmpl-abc");
    let back = replay(&frames, ChunkDecoder::new("p")).unwrap();
    assert_eq!(back, response);

    // Without include_usage the usage is not sent.
    let frames = encode_stream(&response.to_events(), false);
    let back = replay(&frames, ChunkDecoder::new("p")).unwrap();
    assert_eq!(back.usage, Usage::default());
    assert_eq!(back.message, response.message);
}

/// A refusal streams as `delta.refusal`, and the client decoder reads it
/// back as a refusal (marked, and ending as one).
#[test]
fn a_streamed_refusal_goes_as_refusal_deltas() {
    let mut refused = full_response();
    refused.message = Message::assistant("I can't help with that.");
    refused.stop_reason = StopReason::Refusal;
    let events = refused.to_events();
    assert!(events.contains(&StreamEvent::RefusalStart), "{events:?}");
    let frames = encode_stream(&events, true);
    let deltas: Vec<Value> = frames
        .iter()
        .filter_map(|frame| match &frame.data {
            crate::wire::serve::SseData::Json(value) => Some(value["choices"][0].clone()),
            _ => None,
        })
        .collect();
    assert!(
        deltas
            .iter()
            .any(|choice| choice["delta"]["refusal"] == "I can't help with that."),
        "{deltas:?}"
    );
    // Nothing but the opening chunk's empty content.
    assert!(
        deltas.iter().all(|choice| choice["delta"]["content"]
            .as_str()
            .is_none_or(str::is_empty)),
        "{deltas:?}"
    );
    let back = replay(&frames, ChunkDecoder::new("p")).unwrap();
    assert_eq!(back.stop_reason, StopReason::Refusal);
    assert_eq!(back.message, refused.message);
    // The decoder marks the refusal for the next encoder.
    let decoded = replay_events(&frames, ChunkDecoder::new("p")).unwrap();
    let marked = decoded
        .iter()
        .position(|event| *event == StreamEvent::RefusalStart)
        .unwrap();
    assert!(
        matches!(&decoded[marked + 1], StreamEvent::TextDelta { text } if text == "I can't help with that."),
        "{decoded:?}"
    );
}

#[test]
fn interleaved_parallel_calls_keep_their_indexes() {
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
            delta: "{\"q\":".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "{}".into(),
        },
        StreamEvent::ToolCallArgsDelta {
            index: 1,
            delta: "1}".into(),
        },
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        },
    ];
    let frames = encode_stream(&events, false);
    let back = replay(&frames, ChunkDecoder::new("p")).unwrap();
    assert_eq!(
        back.message.tool_calls().cloned().collect::<Vec<_>>(),
        vec![
            ToolCall::new("c0", "read", "{}"),
            ToolCall::new("c1", "grep", "{\"q\":1}")
        ]
    );
    assert_eq!(back.stop_reason, StopReason::ToolUse);
}

#[test]
fn a_stream_error_reaches_the_client_as_its_error() {
    let mut encoder = ChunkEncoder::new("gpt-x", None, true);
    let mut frames = encoder.push(&StreamEvent::TextDelta { text: "par".into() });
    frames.extend(encoder.error(&LlmError::new(
        ErrorKind::ContextLengthExceeded {
            needed: Some(9000),
            allowed: Some(8192),
        },
        "local",
        "too long",
    )));
    assert!(encoder.finish().is_empty());
    let error = replay(&frames, ChunkDecoder::new("p")).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(9000),
            allowed: Some(8192)
        }
    );
}

#[test]
fn sdk_requests_decode() {
    // As the openai Python SDK sends it.
    let body = json!({
        "model": "gpt-5",
        "messages": [
            {"role": "developer", "content": "You are terse."},
            {"role": "system", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
            ], "refusal": null},
            {"role": "tool", "tool_call_id": "call_9", "content": [{"type": "text", "text": "a cat"}]},
            {"role": "user", "content": "And?", "name": "bob"}
        ],
        "max_completion_tokens": 1000,
        "max_tokens": 50,
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "look", "strict": true,
                   "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false}}}],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
        "stop": "\n\n",
        "n": 1,
        "logprobs": false,
        "metadata": {"k": "v"},
        "service_tier": "auto"
    });
    let (request, options) =
        decode_request(serde_json::from_value::<CompletionRequest>(body).unwrap()).unwrap();
    assert_eq!(
        options,
        ServeOptions {
            stream: true,
            include_usage: true
        }
    );
    assert_eq!(request.max_tokens, Some(1000));
    assert_eq!(request.stop, vec!["\n\n".to_owned()]);
    assert_eq!(request.tool_choice, ToolChoice::Required);
    assert_eq!(request.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(request.reasoning, Some(ReasoningEffort::Low));
    assert_eq!(request.tools[0].name, "look");
    assert_eq!(
        request.messages,
        vec![
            Message::system("You are terse."),
            Message::system("Answer in English."),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Text {
                        text: "Describe".into()
                    },
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/jpeg".into(),
                            data: "/9j/4AAQ".into()
                        }
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![ContentPart::ToolCall(ToolCall::new(
                    "call_9",
                    "look",
                    "{\"x\":1}"
                ))],
            },
            Message::tool_result("call_9", "a cat"),
            Message::user("And?"),
        ]
    );
}

fn decode_json(body: Value) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    decode_request(serde_json::from_value::<CompletionRequest>(body).unwrap())
}

/// What the answer would leave out is refused by name, rather than
/// answered as if it had been done.
#[test]
fn fields_the_answer_cannot_honour_are_refused_by_name() {
    let with = |extra: Value| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        for (name, value) in extra.as_object().unwrap() {
            body[name] = value.clone();
        }
        decode_json(body)
    };
    for (extra, field) in [
        (json!({"n": 3}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"logprobs": true, "top_logprobs": 5}), "logprobs"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"functions": [{"name": "f", "parameters": {"type": "object"}}]}),
            "functions",
        ),
        (json!({"function_call": "auto"}), "function_call"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
        ),
        (json!({"web_search_options": {}}), "web_search_options"),
    ] {
        let error = with(extra.clone()).unwrap_err();
        assert_eq!(error.field(), field, "{extra}: {error}");
        assert!(error.to_string().contains("not supported"), "{error}");
    }
    // What asks for nothing more is served.
    for extra in [
        json!({"n": 1}),
        json!({"logprobs": false, "top_logprobs": 0}),
        json!({"functions": null, "function_call": null}),
        json!({"modalities": ["text"]}),
    ] {
        assert!(with(extra.clone()).is_ok(), "{extra}");
    }
    // A negative seed asks for a random one; a seed is signed on the wire.
    let (request, _) = with(json!({"seed": -1})).unwrap();
    assert_eq!(request.sampling.seed, None);
    let (request, _) = with(json!({"seed": 42})).unwrap();
    assert_eq!(request.sampling.seed, Some(42));
}

/// Images a tool returned (the Agents SDK, LangChain) open the user
/// message after the results, or one of their own; other parts are
/// refused by name, not dropped.
#[test]
fn images_in_tool_messages_go_to_the_user_message_after_the_results() {
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let call = |id: &str| {
        json!({"id": id, "type": "function",
        "function": {"name": "shot", "arguments": "{}"}})
    };
    let (request, _) = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": null, "tool_calls": [call("a"), call("b")]},
        {"role": "tool", "tool_call_id": "a", "content": [
            {"type": "text", "text": "screenshot taken"},
            {"type": "image_url", "image_url": {"url": png}}]},
        {"role": "tool", "tool_call_id": "b", "content": "no image"},
        {"role": "user", "content": "what do you see?"}
    ]}))
    .unwrap();
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
    match &request.messages[2].content[..] {
        [ContentPart::ToolResult(a), ContentPart::ToolResult(b)] => {
            assert_eq!(
                (a.content.as_str(), b.content.as_str()),
                ("screenshot taken", "no image")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &request.messages[3].content[..],
        [ContentPart::Image { .. }, ContentPart::Text { text }] if text == "what do you see?"
    ));
    // Results last in the conversation: the images in a message of their own.
    let (request, _) = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": null, "tool_calls": [call("a")]},
        {"role": "tool", "tool_call_id": "a", "content": [
            {"type": "image_url", "image_url": {"url": png}}]}
    ]}))
    .unwrap();
    assert_eq!(request.messages.len(), 4);
    assert!(matches!(
        &request.messages[3].content[..],
        [ContentPart::Image { .. }]
    ));
    // So does a file: the user message after the results is where every
    // provider takes documents.
    let (request, _) = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": null, "tool_calls": [call("a")]},
        {"role": "tool", "tool_call_id": "a", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==",
                                      "filename": "a.pdf"}}]}
    ]}))
    .unwrap();
    assert_eq!(
        request.messages[3].content,
        [ContentPart::Document(freehold_protocol::Document {
            source: freehold_protocol::DocumentSource::Base64 {
                media_type: "application/pdf".into(),
                data: "AA==".into()
            },
            title: Some("a.pdf".into()),
        })]
    );
    // An uploaded file's id is refused by name: the gateway has no copy.
    let error = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[0].content[0].file");
    // An image_url that is not an object says so.
    let error = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": png}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[0].content[0].image_url");
}

/// An assistant message that was a refusal, as the Agents SDK sends it
/// back in the conversation, keeps what the model said.
#[test]
fn an_earlier_refusal_is_kept_as_the_assistants_text() {
    let (request, _) = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "refusal": "I can't help with that."},
        {"role": "user", "content": "y"}
    ]}))
    .unwrap();
    assert_eq!(
        request.messages[1].content,
        [ContentPart::Text {
            text: "I can't help with that.".into()
        }]
    );
}

#[test]
fn bad_requests_name_the_field() {
    let error = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "content": "r"}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[1]");
    assert!(error.to_string().contains("tool_call_id"), "{error}");

    let error = decode_json(json!({"model": "m", "messages": [],
        "tools": [{"type": "web_search", "function": {"name": "w"}}]}))
    .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsupportedTool { field, kind } if field == "tools[0]" && kind == "web_search"),
        "{error:?}"
    );

    let error = decode_json(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
    ]}))
    .unwrap_err();
    assert_eq!(error.field(), "messages[0].content[0]");
    assert!(error.to_string().contains("input_audio"), "{error}");

    let error =
        decode_json(json!({"model": "m", "messages": [], "tool_choice": "sometimes"})).unwrap_err();
    assert_eq!(error.field(), "tool_choice");

    let error = decode_json(json!({"model": "m", "messages": [], "reasoning_effort": "maximal"}))
        .unwrap_err();
    assert_eq!(error.field(), "reasoning_effort");

    let error = decode_json(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}))
        .unwrap_err();
    assert_eq!(error.field(), "messages[0].role");
}

#[test]
fn errors_map_to_statuses_and_codes() {
    let (status, body) = encode_error(&LlmError::new(
        ErrorKind::ContextLengthExceeded {
            needed: Some(9000),
            allowed: Some(8192),
        },
        "local",
        "too long",
    ));
    assert_eq!(status, 400);
    let json = serde_json::to_value(&body).unwrap();
    assert_eq!(json["error"]["code"], "context_length_exceeded");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(json["error"]["param"].is_null());
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("maximum context length is 8192 tokens"),
        "{message}"
    );
    assert_eq!(
        crate::http::context_length_kind(message),
        ErrorKind::ContextLengthExceeded {
            needed: Some(9000),
            allowed: Some(8192)
        }
    );

    let cases = [
        (ErrorKind::Authentication, 401),
        (ErrorKind::Permission, 403),
        (ErrorKind::NotFound, 404),
        (ErrorKind::RateLimited { retry_after: None }, 429),
        (ErrorKind::Overloaded, 503),
        (ErrorKind::InvalidRequest, 400),
        (ErrorKind::Server, 502),
        (ErrorKind::Connection, 502),
        (ErrorKind::Timeout, 504),
        (ErrorKind::Cancelled, 500),
    ];
    for (kind, expected) in cases {
        let (status, _) = encode_error(&LlmError::new(kind.clone(), "p", "m"));
        assert_eq!(status, expected, "{kind:?}");
    }
    let (status, _) =
        encode_error(&LlmError::new(ErrorKind::InvalidRequest, "p", "big").with_status(413));
    assert_eq!(status, 413);

    let decode = decode_json(json!({"model": "m", "messages": [{"role": "tool", "content": "r"}]}))
        .unwrap_err();
    let (status, body) = encode_error(&LlmError::from(decode));
    assert_eq!(status, 400);
    assert_eq!(body.error.param.as_deref(), Some("messages[0]"));
    assert!(
        body.error.message.starts_with("messages[0]: "),
        "{}",
        body.error.message
    );

    let (_, body) = encode_error(&LlmError::new(
        ErrorKind::RateLimited {
            retry_after: Some(std::time::Duration::from_millis(1500)),
        },
        "p",
        "slow down",
    ));
    assert_eq!(
        crate::wire::openai_responses::retry_after_in_message(&body.error.message),
        Some(std::time::Duration::from_millis(1500))
    );
}

#[test]
fn keepalives_are_comments_that_clients_skip() {
    let response = full_response();
    let mut encoder = ChunkEncoder::new("gpt-x", None, true);
    let mut frames = encoder.keepalive();
    assert_eq!(frames[0].to_sse_text(), ": keepalive\n\n");
    for event in response.to_events() {
        frames.extend(encoder.push(&event));
        frames.extend(encoder.keepalive());
    }
    frames.extend(encoder.finish());
    assert!(encoder.keepalive().is_empty(), "nothing after [DONE]");
    assert!(frames.last().unwrap().is_done());
    let back = replay(&frames, ChunkDecoder::new("p")).unwrap();
    assert_eq!(back, response);
}

/// A client's `strict` reaches OpenAI-protocol upstreams in their own
/// field, and a tool the client did not mark stays as it was.
#[test]
fn a_strict_tool_stays_strict_for_openai_protocol_upstreams() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"], "additionalProperties": false});
    let (request, _) = decode_json(json!({
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"type": "function", "function": {"name": "weather", "parameters": schema, "strict": true}},
            {"type": "function", "function": {"name": "time", "parameters": schema}},
        ],
    }))
    .unwrap();
    let strict: Vec<bool> = request.tools.iter().map(|tool| tool.strict).collect();
    assert_eq!(strict, [true, false]);

    let chat = serde_json::to_value(encode_request(&request, Dialect::default(), false)).unwrap();
    assert_eq!(chat["tools"][0]["function"]["strict"], true);
    assert!(chat["tools"][1]["function"].get("strict").is_none());

    let responses = serde_json::to_value(crate::wire::openai_responses::encode_request(
        &request, false, false,
    ))
    .unwrap();
    assert_eq!(responses["tools"][0]["strict"], true);
    // Said, since the Responses API takes a function as strict when it is
    // left out.
    assert_eq!(responses["tools"][1]["strict"], false);

    let anthropic = serde_json::to_value(crate::wire::anthropic::encode_request(
        &request,
        crate::wire::anthropic::EncodeOptions::default(),
    ))
    .unwrap();
    // Not to Anthropic: older models and other servers of its protocol
    // refuse it.
    assert!(anthropic["tools"][0].get("strict").is_none());
}

/// `none`, and vLLM's `enable_thinking: false` switch, ask for no
/// reasoning; a named effort wins over the switch.
#[test]
fn no_reasoning_is_asked_for_by_none_or_the_template_switch() {
    let reasoning = |extra: Value| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        decode_json(body).unwrap().0.reasoning
    };
    assert_eq!(reasoning(json!({})), None);
    assert_eq!(
        reasoning(json!({"reasoning_effort": "none"})),
        Some(ReasoningEffort::Off)
    );
    let switched_off = json!({"chat_template_kwargs": {"enable_thinking": false}});
    assert_eq!(reasoning(switched_off), Some(ReasoningEffort::Off));
    assert_eq!(
        reasoning(json!({"chat_template_kwargs": {"enable_thinking": true}})),
        None
    );
    assert_eq!(
        reasoning(json!({"chat_template_kwargs": {"enable_thinking": false},
                         "reasoning_effort": "low"})),
        Some(ReasoningEffort::Low)
    );
    // Groq's `default` is the model's own effort; OpenRouter's `max` the
    // highest.
    assert_eq!(reasoning(json!({"reasoning_effort": "default"})), None);
    assert_eq!(
        reasoning(json!({"reasoning_effort": "max"})),
        Some(ReasoningEffort::High)
    );
}

/// No reasoning reaches a server whose templates take the switch as
/// `enable_thinking: false`, and no server as an effort (OpenAI's models
/// before gpt-5.1 refuse `none`).
#[test]
fn no_reasoning_is_sent_as_the_dialect_takes_it() {
    let mut request = ChatRequest::new("m", vec![Message::user("hi")]);
    request.reasoning = Some(ReasoningEffort::Off);
    let template_server = Dialect {
        enable_thinking_kwarg: true,
        ..Dialect::default()
    };
    let body = serde_json::to_value(encode_request(&request, template_server, false)).unwrap();
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(body.get("reasoning_effort"), None, "{body}");
    let body = serde_json::to_value(encode_request(&request, Dialect::default(), false)).unwrap();
    assert_eq!(body.get("chat_template_kwargs"), None, "{body}");
    assert_eq!(body.get("reasoning_effort"), None, "{body}");
    request.reasoning = Some(ReasoningEffort::Low);
    let body = serde_json::to_value(encode_request(&request, template_server, false)).unwrap();
    assert_eq!(body.get("chat_template_kwargs"), None, "{body}");
    assert_eq!(body["reasoning_effort"], "low");
}

/// Earlier reasoning goes back to servers whose templates show it, under
/// both names servers read, and to no other; redacted reasoning never.
#[test]
fn earlier_reasoning_goes_back_where_the_dialect_says() {
    let thought = |text: &str, redacted: bool| {
        ContentPart::Reasoning(Reasoning {
            text: text.into(),
            redacted,
            ..Reasoning::default()
        })
    };
    let request = ChatRequest::new(
        "qwen3",
        vec![
            Message::user("Fix the test."),
            Message {
                role: Role::Assistant,
                content: vec![
                    thought("The test reads a file.", false),
                    thought("", true),
                    ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a"}"#)),
                ],
            },
            Message::tool_result("call_1", "fn a() {}"),
            Message {
                role: Role::Assistant,
                content: vec![
                    thought("opaque", true),
                    ContentPart::Text {
                        text: "Done.".into(),
                    },
                ],
            },
        ],
    );
    let server = Dialect {
        reasoning_in_history: true,
        ..Dialect::default()
    };
    let body = serde_json::to_value(encode_request(&request, server, false)).unwrap();
    let calls = &body["messages"][1];
    assert_eq!(
        calls["reasoning_content"], "The test reads a file.",
        "{body}"
    );
    assert_eq!(calls["reasoning"], "The test reads a file.", "{body}");
    let done = &body["messages"][3];
    assert_eq!(done.get("reasoning_content"), None, "{body}");
    // Beside both text and calls, Qwen3's template takes reasoning, and
    // gpt-oss's refuses it.
    let mut both = request.clone();
    both.messages[1].content.push(ContentPart::Text {
        text: "Reading it.".into(),
    });
    let body = serde_json::to_value(encode_request(&both, server, false)).unwrap();
    assert_eq!(
        body["messages"][1]["reasoning"], "The test reads a file.",
        "{body}"
    );
    both.model = "openai/gpt-oss-20b".into();
    let body = serde_json::to_value(encode_request(&both, server, false)).unwrap();
    assert_eq!(body["messages"][1].get("reasoning_content"), None, "{body}");
    let body = serde_json::to_value(encode_request(&request, Dialect::default(), false)).unwrap();
    assert!(!body.to_string().contains("reads a file"), "{body}");
}

/// The end user's id: read from `safety_identifier`, else `user`; sent to
/// OpenAI's own API alone, as `safety_identifier`, hashed past the 64
/// characters it takes; other servers get none.
#[test]
fn the_end_user_reaches_openai_as_its_safety_identifier() {
    let decode = |body: serde_json::Value| {
        decode_request(serde_json::from_value::<CompletionRequest>(body).unwrap())
            .unwrap()
            .0
            .end_user
    };
    let messages = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        decode(json!({"model": "m", "messages": messages, "user": "old",
                      "safety_identifier": "new"})),
        Some("new".into())
    );
    assert_eq!(
        decode(json!({"model": "m", "messages": messages, "user": "old"})),
        Some("old".into())
    );
    assert_eq!(decode(json!({"model": "m", "messages": messages})), None);
    // An empty id is none, and hides no other.
    assert_eq!(
        decode(json!({"model": "m", "messages": messages, "user": "old",
                      "safety_identifier": ""})),
        Some("old".into())
    );
    assert_eq!(
        decode(json!({"model": "m", "messages": messages, "user": ""})),
        None
    );

    let long = format!("user_{}_account_{}", "a".repeat(64), "b".repeat(36));
    let request = ChatRequest {
        end_user: Some(long.clone()),
        ..ChatRequest::new("gpt-5", vec![Message::user("hi")])
    };
    let openai = Dialect {
        openai_api: true,
        ..Dialect::default()
    };
    let sent = encode_request(&request, openai, false);
    let id = sent.safety_identifier.unwrap();
    assert_eq!(id.len(), 64);
    assert_ne!(id, long[..64]);
    assert_eq!(sent.user, None);
    let short = ChatRequest {
        end_user: Some("user-7".into()),
        ..request.clone()
    };
    assert_eq!(
        encode_request(&short, openai, false).safety_identifier,
        Some("user-7".into())
    );
    // A server that only speaks the protocol gets no id.
    let elsewhere =
        serde_json::to_value(encode_request(&short, Dialect::default(), false)).unwrap();
    assert!(elsewhere.get("safety_identifier").is_none(), "{elsewhere}");
    assert!(elsewhere.get("user").is_none(), "{elsewhere}");
}
