//! Contract suite of the Gemini client against scripted servers on 127.0.0.1
//! speaking the exact wire format of `generativelanguage.googleapis.com`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_well_ordered, drain, options, text_of};
use freehold_llm::client::GeminiClient;
use freehold_llm::secret::ApiKey;
use freehold_llm::wire::gemini::{SKIP_SIGNATURE_VALIDATION, encode_request};
use freehold_llm::{Provider, collect_stream};
use freehold_protocol::{
    ChatRequest, ContentPart, ErrorKind, ImageSource, Message, Reasoning, ReasoningEffort,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, ToolResult, ToolSpec,
    Usage,
};
use freehold_test_support::{MockServer, Scripted, Split};
use serde_json::{Value, json};

const KEY: &str = "AIzaSy-test-key-0123456789";
const MODEL: &str = "gemini-2.5-flash";

fn client(server: &MockServer) -> GeminiClient {
    let options =
        options("test-gemini", format!("{}/v1beta", server.url())).with_key(ApiKey::new(KEY));
    GeminiClient::new(options).unwrap()
}

fn no_retry_client(server: &MockServer) -> GeminiClient {
    let mut options =
        options("test-gemini", format!("{}/v1beta", server.url())).with_key(ApiKey::new(KEY));
    options.http.retry = freehold_llm::retry::RetryPolicy::none();
    GeminiClient::new(options).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        MODEL,
        vec![Message::system("Be brief."), Message::user("Hi")],
    )
}

fn read_tool() -> ToolSpec {
    ToolSpec {
        name: "read".into(),
        description: "Read a file".into(),
        parameters: json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {"path": {"type": "string", "default": "."}},
            "required": ["path"]
        }),
        strict: false,
    }
}

/// One `streamGenerateContent` chunk, as Gemini sends it.
fn chunk(parts: Value, finish: Option<&str>, usage: Option<Value>) -> String {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    let mut chunk = json!({
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1"
    });
    if let Some(usage) = usage {
        chunk["usageMetadata"] = usage;
    }
    chunk.to_string()
}

/// Gemini ends SSE events with `\r\n\r\n`.
fn sse(chunks: &[String]) -> String {
    chunks
        .iter()
        .map(|data| format!("data: {data}\r\n\r\n"))
        .collect()
}

fn text_stream() -> String {
    sse(&[
        chunk(
            json!([{"text": "Héllo"}]),
            None,
            Some(json!({"promptTokenCount": 12, "totalTokenCount": 12})),
        ),
        chunk(
            json!([{"text": ", wörld ✓"}]),
            Some("STOP"),
            Some(json!({
                "promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15,
                "cachedContentTokenCount": 8,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]
            })),
        ),
    ])
}

#[tokio::test]
async fn streams_text_and_usage_split_at_every_byte() {
    let server = MockServer::start(vec![Scripted::sse(&text_stream(), Split::Every(1))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: Some("resp-1".into()),
            model: Some("gemini-2.5-flash".into())
        }
    );
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    // The last usageMetadata wins.
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
    assert_eq!(
        sent.uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(KEY));
    assert!(
        !sent.uri.contains("key="),
        "the key must never be in the URL"
    );
    assert!(sent.header("authorization").is_none());
    let body = sent.json();
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "Hi"}]}])
    );
    assert_eq!(body.get("model"), None, "the model is in the URL");
    assert_eq!(body.get("tools"), None);
    assert_eq!(body.get("generationConfig"), None);
}

fn parallel_tool_stream() -> String {
    sse(&[
        chunk(
            json!([{"text": "I need **both** files.", "thought": true}]),
            None,
            Some(json!({"promptTokenCount": 40, "totalTokenCount": 40})),
        ),
        // Gemini sends whole calls; only the first carries the signature.
        chunk(
            json!([
                {"functionCall": {"name": "read", "args": {"path": "a.rs"}}, "thoughtSignature": "c2lnLWE="},
                {"functionCall": {"name": "read", "args": {"path": "dé/b.rs"}}}
            ]),
            Some("STOP"),
            Some(json!({
                "promptTokenCount": 40, "cachedContentTokenCount": 32, "candidatesTokenCount": 18,
                "thoughtsTokenCount": 25, "totalTokenCount": 83
            })),
        ),
    ])
}

#[tokio::test]
async fn parallel_function_calls_in_one_chunk_survive_any_split() {
    let text = parallel_tool_stream();
    let signature_at = text.find("c2lnLWE=").unwrap();
    for split in [
        Split::Every(1),
        Split::Every(7),
        Split::At(vec![3, 60, 61, signature_at + 3, text.len() - 3]),
    ] {
        let server = MockServer::start(vec![Scripted::sse(&text, split.clone())]).await;
        let mut req = request();
        req.tools = vec![read_tool()];
        let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
        assert!(error.is_none(), "{split:?}: {error:?}");
        assert_well_ordered(&events);
        let mut builder = freehold_protocol::ResponseBuilder::default();
        events.iter().for_each(|event| builder.push(event));
        let response = builder.finish();
        let calls: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
        assert_eq!(calls.len(), 2, "{split:?}");
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("read", r#"{"path":"a.rs"}"#)
        );
        assert_eq!(calls[0].signature.as_deref(), Some("c2lnLWE="));
        assert_eq!(calls[1].arguments, r#"{"path":"dé/b.rs"}"#);
        assert_eq!(calls[1].signature, None);
        assert!(calls[0].id.starts_with("call_0_"), "{}", calls[0].id);
        assert!(calls[1].id.starts_with("call_1_"), "{}", calls[1].id);
        assert_eq!(
            response.message.content[0],
            ContentPart::Reasoning(Reasoning {
                text: "I need **both** files.".into(),
                ..Reasoning::default()
            })
        );
        // STOP after calls is tool use.
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 40,
                cached_input_tokens: 32,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                output_tokens: 43,
                reasoning_tokens: 25,
            }
        );
    }
}

#[tokio::test]
async fn finish_reasons_map_to_stop_reasons() {
    for (finish, reason) in [
        ("MAX_TOKENS", StopReason::MaxTokens),
        ("SAFETY", StopReason::ContentFilter),
        ("RECITATION", StopReason::ContentFilter),
        ("PROHIBITED_CONTENT", StopReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            StopReason::Other("MALFORMED_FUNCTION_CALL".into()),
        ),
    ] {
        let text = sse(&[chunk(json!([{"text": "x"}]), Some(finish), None)]);
        let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
        let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert!(error.is_none());
        assert_well_ordered(&events);
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Stop { reason }),
            "{finish}"
        );
    }
}

#[tokio::test]
async fn a_blocked_prompt_stops_with_content_filter() {
    let blocked = json!({
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        "modelVersion": "gemini-2.5-flash"
    });
    let text = sse(&[blocked.to_string()]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::ContentFilter
        })
    );

    let server = MockServer::start(vec![Scripted::json(200, blocked)]).await;
    let response = client(&server).complete(request()).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::ContentFilter);
    assert!(response.message.content.is_empty());
    assert_eq!(response.usage.input_tokens, 7);
}

#[tokio::test]
async fn complete_decodes_a_non_streamed_answer() {
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me look.", "thought": true},
                {"text": "Reading it now."},
                {"functionCall": {"name": "read", "args": {"path": "x"}}, "thoughtSignature": "U0lH"}
            ]},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
        }],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 9, "thoughtsTokenCount": 4, "totalTokenCount": 33},
        "modelVersion": "gemini-2.5-pro",
        "responseId": "r-9"
    });
    let server = MockServer::start(vec![Scripted::json(200, body)]).await;
    let mut req = request();
    req.model = "gemini-2.5-pro".into();
    req.tools = vec![read_tool()];
    let response = client(&server).complete(req).await.unwrap();
    assert_eq!(response.id.as_deref(), Some("r-9"));
    assert_eq!(response.model.as_deref(), Some("gemini-2.5-pro"));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.message.role, Role::Assistant);
    assert_eq!(response.message.content.len(), 3);
    assert_eq!(
        response.message.content[0],
        ContentPart::Reasoning(Reasoning {
            text: "Let me look.".into(),
            ..Reasoning::default()
        })
    );
    assert_eq!(response.message.text(), "Reading it now.");
    let call = response.message.tool_calls().next().unwrap();
    assert_eq!(call.name, "read");
    assert_eq!(call.arguments, r#"{"path":"x"}"#);
    assert_eq!(call.signature.as_deref(), Some("U0lH"));
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 20,
            output_tokens: 13,
            reasoning_tokens: 4,
            ..Usage::default()
        }
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(KEY));
}

#[tokio::test]
async fn request_body_is_encoded_field_by_field() {
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}]});
    let server = MockServer::start(vec![Scripted::json(200, answer)]).await;
    let mut req = ChatRequest::new(
        MODEL,
        vec![
            Message::system("Rule one."),
            Message::user("Look at these."),
            Message {
                role: Role::User,
                content: vec![
                    ContentPart::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "https://example.test/cat.webp?size=2".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "https://example.test/photo".into(),
                        },
                    },
                    ContentPart::Image {
                        source: ImageSource::Url {
                            url: "data:image/gif;base64,R0lGOD".into(),
                        },
                    },
                ],
            },
            Message::system("Rule two."),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: "Two files.".into(),
                        ..Reasoning::default()
                    }),
                    ContentPart::Text {
                        text: "Reading.".into(),
                    },
                    ContentPart::ToolCall(ToolCall {
                        signature: Some("U0lHLTE=".into()),
                        ..ToolCall::new("call_0_x", "read", r#"{"path":"a.json"}"#)
                    }),
                    ContentPart::ToolCall(ToolCall::new("call_1_y", "grep", r#"{"q":"fn"}"#)),
                ],
            },
            Message::tool_result("call_0_x", r#"{"lines": 3}"#),
            Message {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(ToolResult {
                    call_id: "call_1_y".into(),
                    content: "no such file".into(),
                    is_error: true,
                })],
            },
            Message::user("And now?"),
        ],
    );
    req.tools = vec![
        read_tool(),
        ToolSpec {
            name: "grep".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string", "format": "regex"}}}),
            strict: false,
        },
        ToolSpec {
            name: "now".into(),
            description: "The time".into(),
            parameters: json!({"type": "object", "properties": {}}),
            strict: false,
        },
    ];
    req.tool_choice = ToolChoice::Tool {
        name: "read".into(),
    };
    req.parallel_tool_calls = Some(false);
    req.sampling.temperature = Some(0.5);
    req.sampling.top_p = Some(0.9);
    req.sampling.top_k = Some(40);
    req.sampling.seed = Some(42);
    req.sampling.presence_penalty = Some(0.25);
    req.sampling.frequency_penalty = Some(0.5);
    req.max_tokens = Some(256);
    req.stop = vec!["END".into()];
    req.reasoning = Some(ReasoningEffort::Medium);
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object", "additionalProperties": false,
                       "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
        strict: true,
    });
    client(&server).complete(req).await.unwrap();
    let body = server.requests()[0].json();

    // All system messages go to systemInstruction, in order; Gemini 2.5
    // refuses a JSON answer beside tools, so it is asked for there too.
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Rule one."}, {"text": "Rule two."}, {"text":
            "Give your final answer as one JSON value that matches this JSON Schema, and nothing \
             else:\n{\"additionalProperties\":false,\"properties\":{\"a\":{\"type\":\"integer\"}},\
             \"required\":[\"a\"],\"type\":\"object\"}"}]})
    );
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "{contents:#?}");
    // Consecutive user messages merge into one turn; images by kind.
    assert_eq!(
        contents[0],
        json!({"role": "user", "parts": [
            {"text": "Look at these."},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.test/cat.webp?size=2"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.test/photo"}},
            {"inlineData": {"mimeType": "image/gif", "data": "R0lGOD"}}
        ]})
    );
    // The assistant is `model`; thoughts and signatures go back on their parts.
    assert_eq!(
        contents[1],
        json!({"role": "model", "parts": [
            {"text": "Two files.", "thought": true},
            {"text": "Reading."},
            // No ids: Gemini 2.5 gives calls none.
            {"functionCall": {"name": "read", "args": {"path": "a.json"}}, "thoughtSignature": "U0lHLTE="},
            {"functionCall": {"name": "grep", "args": {"q": "fn"}}}
        ]})
    );
    // Both results and the next user text share one user turn; results are
    // found by the name of their call.
    assert_eq!(
        contents[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "read", "response": {"lines": 3}}},
            {"functionResponse": {"name": "grep", "response": {"error": "no such file"}}},
            {"text": "And now?"}
        ]})
    );

    // Tools: sanitized schemas; no parameters for a tool without any.
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [
            {"name": "read", "description": "Read a file",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
            {"name": "grep", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "now", "description": "The time"}
        ]}])
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["read"]}})
    );
    assert_eq!(
        body["generationConfig"],
        json!({
            "stopSequences": ["END"],
            "maxOutputTokens": 256,
            "temperature": 0.5,
            "topP": 0.9,
            "topK": 40,
            "seed": 42,
            // Penalties: Gemini 2.5 refuses them.
            "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}
        })
    );
    assert!(
        !body.to_string().contains("parallel"),
        "Gemini has no parallel switch"
    );
}

#[tokio::test]
async fn tool_choice_modes_and_json_object_format() {
    let mut req = request();
    req.tools = vec![read_tool()];
    for (choice, mode) in [
        (ToolChoice::Auto, "AUTO"),
        (ToolChoice::None, "NONE"),
        (ToolChoice::Required, "ANY"),
    ] {
        req.tool_choice = choice;
        let body = serde_json::to_value(encode_request(&req)).unwrap();
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": mode}})
        );
    }
    req.response_format = Some(ResponseFormat::JsonObject);
    // Gemini 3 takes a JSON answer beside tools (2.5 gets it in words).
    req.model = "gemini-3-flash-preview".into();
    let body = serde_json::to_value(encode_request(&req)).unwrap();
    assert_eq!(
        body["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    // Without tools, no tool config at all.
    let body = serde_json::to_value(encode_request(&request())).unwrap();
    assert_eq!(body.get("toolConfig"), None);
}

#[tokio::test]
async fn signatures_round_trip_from_a_stream_to_the_next_request() {
    // Thought summary, answer text and its signature in a trailing empty part,
    // then calls: the next request must carry every signature on its part.
    let text = sse(&[
        chunk(json!([{"text": "Plan.", "thought": true}]), None, None),
        chunk(json!([{"text": "Sure"}]), None, None),
        chunk(
            json!([{"text": "", "thoughtSignature": "VEVYVA=="}]),
            None,
            None,
        ),
        chunk(
            json!([
                {"functionCall": {"name": "read", "args": {"path": "a"}}, "thoughtSignature": "Q0FMTA=="},
                {"functionCall": {"name": "read"}}
            ]),
            Some("STOP"),
            None,
        ),
    ]);
    let server = MockServer::start(vec![
        Scripted::sse(&text, Split::Every(5)),
        Scripted::sse(&text_stream(), Split::Whole),
    ])
    .await;
    let gemini = client(&server);
    let mut req = request();
    req.tools = vec![read_tool()];
    let first = collect_stream("t", gemini.stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    let calls: Vec<ToolCall> = first.message.tool_calls().cloned().collect();
    assert_eq!(calls[1].arguments, "{}", "a call without args has none");

    req.messages.push(first.message.clone());
    for call in &calls {
        req.messages.push(Message::tool_result(&call.id, "done"));
    }
    let (_, error) = drain(gemini.stream(req).await.unwrap()).await;
    assert!(error.is_none());
    let body = server.requests()[1].json();
    assert_eq!(
        body["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Plan.", "thought": true},
            {"text": "Sure", "thoughtSignature": "VEVYVA=="},
            {"functionCall": {"name": "read", "args": {"path": "a"}}, "thoughtSignature": "Q0FMTA=="},
            {"functionCall": {"name": "read", "args": {}}}
        ]})
    );
    assert_eq!(
        body["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "read", "response": {"result": "done"}}},
            {"functionResponse": {"name": "read", "response": {"result": "done"}}}
        ]})
    );
}

#[tokio::test]
async fn gemini_3_calls_without_signatures_get_the_documented_bypass() {
    let mut req = ChatRequest::new(
        "gemini-3-pro-preview",
        vec![
            Message::user("Hi"),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::ToolCall(ToolCall::new("a", "read", "{}")),
                    ContentPart::ToolCall(ToolCall::new("b", "read", "{}")),
                ],
            },
            Message::tool_result("a", "1"),
            Message::tool_result("b", "2"),
        ],
    );
    let body = serde_json::to_value(encode_request(&req)).unwrap();
    let parts = &body["contents"][1]["parts"];
    assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE_VALIDATION);
    assert_eq!(parts[1].get("thoughtSignature"), None);
    // Older models get nothing invented.
    req.model = MODEL.into();
    let body = serde_json::to_value(encode_request(&req)).unwrap();
    assert_eq!(
        body["contents"][1]["parts"][0].get("thoughtSignature"),
        None
    );
}

fn google_error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

#[tokio::test]
async fn every_error_status_maps_to_its_kind() {
    let cases: Vec<(u16, Value, ErrorKind)> = vec![
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received. Unknown name \"foo\".",
            ),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1196265) exceeds the maximum number of tokens allowed (1048576).",
            ),
            ErrorKind::ContextLengthExceeded {
                needed: Some(1_196_265),
                allowed: Some(1_048_576),
            },
        ),
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            ),
            ErrorKind::Authentication,
        ),
        (
            401,
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ),
            ErrorKind::Authentication,
        ),
        (
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Permission denied on resource project.",
            ),
            ErrorKind::Permission,
        ),
        (
            404,
            google_error(
                404,
                "NOT_FOUND",
                "models/gemini-9 is not found for API version v1beta.",
            ),
            ErrorKind::NotFound,
        ),
        (
            429,
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
            ),
            ErrorKind::RateLimited { retry_after: None },
        ),
        (
            500,
            google_error(500, "INTERNAL", "An internal error has occurred."),
            ErrorKind::Server,
        ),
        (
            503,
            google_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ),
            ErrorKind::Overloaded,
        ),
        (
            529,
            google_error(529, "UNAVAILABLE", "overloaded"),
            ErrorKind::Overloaded,
        ),
    ];
    for (status, body, kind) in cases {
        let server = MockServer::start(vec![Scripted::json(status, body.clone())]).await;
        let gemini = no_retry_client(&server);
        let Err(error) = gemini.stream(request()).await else {
            panic!("status {status} must fail")
        };
        assert_eq!(error.kind, kind, "status {status}: {body}");
        assert_eq!(error.status, Some(status));
        assert_eq!(error.message, body["error"]["message"].as_str().unwrap());
        let error = gemini.complete(request()).await.unwrap_err();
        assert_eq!(error.kind, kind, "status {status} (complete)");
    }
}

#[tokio::test]
async fn an_echoed_key_is_redacted_from_errors() {
    let server = MockServer::start(vec![Scripted::json(
        400,
        google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("API key not valid: {KEY}"),
        ),
    )])
    .await;
    let error = no_retry_client(&server)
        .complete(request())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert!(!error.to_string().contains("0123456789"), "{error}");
    assert!(!server.requests()[0].uri.contains("key="));
}

#[tokio::test]
async fn retries_server_errors_and_honours_retry_after() {
    let server = MockServer::start(vec![
        Scripted::json(500, google_error(500, "INTERNAL", "boom")),
        Scripted::json(429, google_error(429, "RESOURCE_EXHAUSTED", "slow down"))
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
async fn idle_timeout_fires_when_the_stream_goes_silent() {
    let script =
        Scripted::sse(&text_stream(), Split::Every(40)).stall_after(2, Duration::from_secs(30));
    let server = MockServer::start(vec![script]).await;
    let mut options = options("o", format!("{}/v1beta", server.url()));
    // Long enough that a loaded machine does not mistake slow headers for
    // silence; the stall is 30 s.
    options.http.idle_timeout = Duration::from_secs(1);
    let gemini = GeminiClient::new(options).unwrap();
    let started = Instant::now();
    let (_events, error) = drain(gemini.stream(request()).await.unwrap()).await;
    assert_eq!(error.expect("a timeout").kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn errors_inside_the_stream_are_mapped() {
    let quota = json!({"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource has been exhausted (e.g. check quota).",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    }});
    let too_long = google_error(
        400,
        "INVALID_ARGUMENT",
        "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
    );
    let overloaded = google_error(503, "UNAVAILABLE", "The model is overloaded.");
    for (error, kind) in [
        (
            quota,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
        ),
        (
            too_long,
            ErrorKind::ContextLengthExceeded {
                needed: Some(2_000_000),
                allowed: Some(1_048_576),
            },
        ),
        (overloaded, ErrorKind::Overloaded),
    ] {
        let text = sse(&[
            chunk(json!([{"text": "par"}]), None, None),
            error.to_string(),
        ]);
        let server = MockServer::start(vec![Scripted::sse(&text, Split::Every(9))]).await;
        let (events, got) = drain(client(&server).stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "par");
        let got = got.expect("an error");
        assert_eq!(got.kind, kind);
        assert_eq!(got.message, error["error"]["message"].as_str().unwrap());
        assert_eq!(got.provider, "test-gemini");
    }
}

#[tokio::test]
async fn a_stream_cut_before_finish_reason_is_a_connection_error() {
    let text = sse(&[chunk(json!([{"text": "half"}]), None, None)]);
    let server = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "half");
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Stop { .. })));
    assert_eq!(error.unwrap().kind, ErrorKind::Connection);
}

#[tokio::test]
async fn counts_input_tokens_with_googles_own_endpoint() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}),
    )])
    .await;
    let mut req = request();
    req.tools = vec![read_tool()];
    let counted = client(&server).count_input_tokens(req).await.unwrap();
    assert_eq!(counted, Some(31));

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/v1beta/models/gemini-2.5-flash:countTokens");
    assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(KEY));
    let inner = &sent.json()["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-flash");
    assert_eq!(inner["contents"][0]["parts"][0]["text"], "Hi");
    assert_eq!(inner["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(inner["tools"][0]["functionDeclarations"][0]["name"], "read");
}

#[tokio::test]
async fn a_count_is_awaited_for_the_idle_timeout_not_a_whole_answers() {
    // countTokens generates nothing: no answer within the idle timeout
    // means a stuck server, though a generated answer may take minutes.
    let server = MockServer::start(vec![
        Scripted::json(200, json!({"totalTokens": 3})).delay(Duration::from_secs(30)),
    ])
    .await;
    let mut options =
        options("test-gemini", format!("{}/v1beta", server.url())).with_key(ApiKey::new(KEY));
    options.http.retry = freehold_llm::retry::RetryPolicy::none();
    options.http.idle_timeout = Duration::from_secs(1);
    options.http.response_timeout = Duration::from_secs(600);
    let client = GeminiClient::new(options).unwrap();
    let started = Instant::now();
    let error = client.count_input_tokens(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_count_without_total_tokens_is_no_count_and_a_wrong_one_an_error() {
    // Google's JSON leaves zero fields out, but a prompt always has tokens:
    // an answer without any is not Google's, and the caller estimates.
    let server = MockServer::start(vec![
        Scripted::json(200, json!({})),
        Scripted::json(200, json!({"totalTokens": "many"})),
    ])
    .await;
    let client = no_retry_client(&server);
    assert_eq!(client.count_input_tokens(request()).await.unwrap(), None);
    let error = client.count_input_tokens(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.message.contains("many"), "{error}");
}

#[tokio::test]
async fn lists_models_across_pages() {
    let server = MockServer::start(vec![
        Scripted::json(
            200,
            json!({
                "models": [
                    {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "inputTokenLimit": 1048576,
                     "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"],
                     "thinking": true},
                    {"name": "models/text-embedding-004", "inputTokenLimit": 2048, "outputTokenLimit": 1,
                     "supportedGenerationMethods": ["embedContent"]}
                ],
                "nextPageToken": "page+2/=="
            }),
        ),
        Scripted::json(
            200,
            json!({"models": [{"name": "models/gemini-2.5-pro", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
                               "supportedGenerationMethods": ["generateContent"]}]}),
        ),
    ])
    .await;
    let models = client(&server).list_models().await.unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["gemini-2.5-flash", "gemini-2.5-pro"]);
    assert_eq!(models[0].context_window, Some(1_048_576));
    assert_eq!(models[0].max_output_tokens, Some(65_536));
    assert_eq!(models[0].provider, "test-gemini");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].uri, "/v1beta/models?pageSize=1000");
    assert_eq!(
        requests[1].uri,
        "/v1beta/models?pageSize=1000&pageToken=page%2B2%2F%3D%3D"
    );
    for sent in &requests {
        assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(KEY));
        assert!(!sent.uri.contains("key="));
    }
}

#[tokio::test]
async fn model_listing_stops_after_a_bounded_number_of_pages() {
    // A server that always has a next page must not loop forever.
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"models": [{"name": "models/m", "supportedGenerationMethods": ["generateContent"]}], "nextPageToken": "again"}),
    )])
    .await;
    let models = client(&server).list_models().await.unwrap();
    assert_eq!(server.requests().len(), 10);
    assert_eq!(models.len(), 10);
}

#[tokio::test]
async fn capabilities_reflect_the_model() {
    let server = MockServer::start(vec![]).await;
    let gemini = client(&server);
    let flash = gemini.capabilities("gemini-2.5-flash");
    assert!(flash.reasoning && flash.vision && flash.tools && flash.structured_output);
    assert!(!gemini.capabilities("gemini-2.0-flash").reasoning);
}

/// A signature Gemini refuses (made for another model or key, or damaged
/// on its way through a client) costs one refusal: the conversation is
/// sent again with its calls under the documented placeholder, whole and
/// streamed.
#[tokio::test]
async fn a_refused_signature_is_sent_again_without_signatures() {
    let corrupted = || {
        Scripted::json(
            400,
            google_error(400, "INVALID_ARGUMENT", "Corrupted thought signature."),
        )
    };
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                        "finishReason": "STOP"}]});
    let server = MockServer::start(vec![
        corrupted(),
        Scripted::json(200, answer),
        corrupted(),
        Scripted::sse(&text_stream(), Split::Whole),
    ])
    .await;
    let gemini = client(&server);
    let req = ChatRequest::new(
        "gemini-3-pro-preview",
        vec![
            Message::user("Hi"),
            Message {
                role: Role::Assistant,
                content: vec![ContentPart::ToolCall(ToolCall {
                    signature: Some("Q0FMTA==".into()),
                    ..ToolCall::new("a", "read", "{}")
                })],
            },
            Message::tool_result("a", "1"),
        ],
    );
    let answer = gemini.complete(req.clone()).await.unwrap();
    assert_eq!(answer.message.text(), "ok");
    let (events, error) = drain(gemini.stream(req).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(!text_of(&events).is_empty());
    let sent: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 4);
    for (first, again) in [(&sent[0], &sent[1]), (&sent[2], &sent[3])] {
        assert_eq!(
            first["contents"][1]["parts"][0]["thoughtSignature"],
            "Q0FMTA=="
        );
        assert_eq!(
            again["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE_VALIDATION
        );
    }

    // Other refusals are the answer.
    let server = MockServer::start(vec![Scripted::json(
        400,
        google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
    )])
    .await;
    let error = client(&server).complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(server.requests().len(), 1);
}

/// Gemini takes 5 stop sequences: a request with more sends the first 5
/// and the client ends the answer at the others, streamed or whole.
#[tokio::test]
async fn stop_sequences_past_five_are_applied_to_the_answer() {
    // Usage comes with every chunk, as Gemini sends it.
    let usage = |output: u64| {
        Some(
            json!({"promptTokenCount": 9, "candidatesTokenCount": output,
                    "totalTokenCount": 9 + output}),
        )
    };
    let stream = sse(&[
        chunk(json!([{"text": "Thought: add\nObs"}]), None, usage(4)),
        chunk(
            json!([{"text": "ervation: 5\nThought: done"}]),
            None,
            usage(10),
        ),
        chunk(json!([{"text": "."}]), Some("STOP"), usage(11)),
    ]);
    let whole = json!({
        "candidates": [{"content": {"parts": [{"text": "1, 2, 3\nObservation: 4"}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 8, "totalTokenCount": 17}
    });
    let server = MockServer::start(vec![
        Scripted::sse(&stream, Split::Every(7)),
        Scripted::json(200, whole),
    ])
    .await;
    let mut asked = request();
    asked.stop = ["a1", "a2", "a3", "a4", "a5", "\nObservation:"]
        .map(String::from)
        .to_vec();

    let (events, error) = drain(client(&server).stream(asked.clone()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(text_of(&events), "Thought: add");
    let stopped = StopReason::StopSequence(Some("\nObservation:".into()));
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: stopped.clone()
        })
    );

    let answer = client(&server).complete(asked).await.unwrap();
    assert_eq!(answer.message.text(), "1, 2, 3");
    assert_eq!(answer.stop_reason, stopped);
    assert_eq!(answer.usage.output_tokens, 8);

    for sent in server.requests() {
        assert_eq!(
            sent.json()["generationConfig"]["stopSequences"],
            json!(["a1", "a2", "a3", "a4", "a5"])
        );
    }
}
