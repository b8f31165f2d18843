//! Contract suite of the Ollama native client against scripted servers on
//! 127.0.0.1 speaking Ollama's exact NDJSON wire format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_well_ordered, drain, options, text_of};
use freehold_llm::client::{ClientOptions, OllamaClient, OllamaSettings};
use freehold_llm::retry::RetryPolicy;
use freehold_llm::secret::ApiKey;
use freehold_llm::wire::ollama::NumCtxPolicy;
use freehold_llm::{Provider, collect_stream};
use freehold_protocol::{
    ChatRequest, ContentPart, ErrorKind, ImageSource, Message, Reasoning, ReasoningEffort,
    ResponseFormat, Role, StopReason, StreamEvent, ToolCall, ToolChoice, ToolSpec, Usage,
};
use freehold_test_support::{MockServer, Scripted, Split};
use serde_json::{Value, json};

const MODEL: &str = "qwen3:8b";

/// Client options for `server`, without retries when `retries` is false.
fn opts(server: &MockServer, retries: bool) -> ClientOptions {
    let mut options = options("test-ollama", server.url());
    if !retries {
        options.http.retry = RetryPolicy::none();
    }
    options
}

/// A client that does not ask `/api/show` (so the script only needs the
/// chat answers).
fn client(server: &MockServer) -> OllamaClient {
    let settings = OllamaSettings {
        probe_context: false,
        ..OllamaSettings::default()
    };
    OllamaClient::with_settings(opts(server, true), settings).unwrap()
}

/// A client with default settings: it asks `/api/show` first.
fn probing_client(server: &MockServer) -> OllamaClient {
    OllamaClient::new(opts(server, false)).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(
        MODEL,
        vec![Message::system("Be brief."), Message::user("Hi")],
    )
}

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("The {name} tool"),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        strict: false,
    }
}

fn message_line(message: Value) -> Value {
    json!({"model": MODEL, "created_at": "2025-06-01T10:00:00.123456789Z", "message": message, "done": false})
}

fn text_line(text: &str) -> Value {
    message_line(json!({"role": "assistant", "content": text}))
}

fn done_line(reason: &str) -> Value {
    json!({
        "model": MODEL, "created_at": "2025-06-01T10:00:01.5Z",
        "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": reason,
        "total_duration": 4_883_583_458u64, "load_duration": 1_334_875,
        "prompt_eval_count": 26, "prompt_eval_duration": 342_546_000,
        "eval_count": 282, "eval_duration": 4_535_599_000u64
    })
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

fn text_stream() -> String {
    ndjson(&[
        message_line(json!({"role": "assistant", "content": "", "thinking": "Greet ✓"})),
        message_line(json!({"role": "assistant", "content": "", "thinking": " briefly."})),
        text_line("Héllo"),
        text_line(", wörld ✓"),
        done_line("stop"),
    ])
}

fn show(context: u64) -> Scripted {
    Scripted::json(
        200,
        json!({
            "modelfile": "FROM /models/x", "parameters": "stop \"<|im_end|>\"", "template": "{{ .Prompt }}",
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "3.8B", "quantization_level": "Q4_0"},
            "model_info": {"general.architecture": "llama", "general.parameter_count": 3_821_079_552u64,
                           "llama.context_length": context, "llama.embedding_length": 3072},
            "capabilities": ["completion", "tools"]
        }),
    )
}

#[tokio::test]
async fn streams_text_and_thinking_split_at_every_byte() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Every(1))]).await;
    let settings = OllamaSettings {
        probe_context: false,
        keep_alive: Some("30m".into()),
        ..OllamaSettings::default()
    };
    let client = OllamaClient::with_settings(opts(&server, true), settings).unwrap();
    let (events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_well_ordered(&events);
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: None,
            model: Some(MODEL.into())
        }
    );
    assert_eq!(text_of(&events), "Héllo, wörld ✓");
    let reasoning: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ReasoningDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, "Greet ✓ briefly.");
    assert_eq!(
        events[events.len() - 2..],
        [
            StreamEvent::Usage(Usage {
                input_tokens: 26,
                output_tokens: 282,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::EndTurn
            }
        ]
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/api/chat");
    assert_eq!(sent.method, "POST");
    assert!(sent.header("authorization").is_none(), "no key, no header");
    let body = sent.json();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], true);
    assert_eq!(body["keep_alive"], "30m");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    // Without max_tokens the answer is still bounded, by the default
    // allowance, so that Ollama never shifts the context while answering.
    assert_eq!(
        body["options"],
        json!({"num_ctx": 8192, "num_predict": 4096})
    );
    assert_eq!(body.get("tools"), None);
    assert_eq!(body.get("think"), None);
    assert_eq!(body.get("format"), None);
}

#[tokio::test]
async fn several_calls_in_one_line_and_calls_over_two_lines() {
    let text = ndjson(&[
        message_line(
            json!({"role": "assistant", "content": "Reading…", "tool_calls": [
                {"function": {"name": "read", "arguments": {"path": "a.rs"}}},
                {"function": {"index": 1, "name": "read", "arguments": {"path": "b/ü.rs"}}}
            ]}),
        ),
        message_line(json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_srv", "function": {"index": 2, "name": "grep", "arguments": {"pattern": "fn main", "path": "."}}}
        ]})),
        done_line("stop"),
    ]);
    for split in [
        Split::Every(1),
        Split::Every(5),
        Split::At(vec![10, 120, 121, 250, 400]),
        Split::Whole,
    ] {
        let server = MockServer::start(vec![Scripted::ndjson(&text, split.clone())]).await;
        let mut req = request();
        req.tools = vec![tool("read"), tool("grep")];
        let (events, error) = drain(client(&server).stream(req).await.unwrap()).await;
        assert!(error.is_none(), "{split:?}: {error:?}");
        assert_well_ordered(&events);
        let mut builder = freehold_protocol::ResponseBuilder::default();
        for event in &events {
            builder.push(event);
        }
        let response = builder.finish();
        assert_eq!(response.message.text(), "Reading…");
        let calls: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
        assert_eq!(calls.len(), 3, "{split:?}");
        let summary: Vec<(&str, Value)> = calls
            .iter()
            .map(|c| (c.name.as_str(), serde_json::from_str(&c.arguments).unwrap()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("read", json!({"path": "a.rs"})),
                ("read", json!({"path": "b/ü.rs"})),
                ("grep", json!({"pattern": "fn main", "path": "."})),
            ]
        );
        // Ollama gives no ids: they are generated, distinct; a server id is kept.
        assert!(calls[0].id.starts_with("call_") && calls[1].id.starts_with("call_"));
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(calls[2].id, "call_srv");
        let indexes: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallStart { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![0, 1, 2]);
        // "stop" after tool calls means tool use.
        assert_eq!(response.stop_reason, StopReason::ToolUse);
    }
}

#[tokio::test]
async fn done_reasons_are_mapped() {
    for (reason, expected) in [
        ("length", StopReason::MaxTokens),
        ("stop", StopReason::EndTurn),
        ("load", StopReason::Other("load".into())),
    ] {
        let text = ndjson(&[text_line("cut"), done_line(reason)]);
        let server = MockServer::start(vec![Scripted::ndjson(&text, Split::Whole)]).await;
        let response = collect_stream("t", client(&server).stream(request()).await.unwrap())
            .await
            .unwrap();
        assert_eq!(response.stop_reason, expected, "{reason}");
        assert_eq!(response.usage.output_tokens, 282);
    }
}

#[tokio::test]
async fn error_line_mid_stream_is_reported_and_redacted() {
    let key = "sk-ollama-cloud-0123456789abcdef";
    let cases = [
        (
            format!("an error was encountered while running the model: CUDA error (key {key})"),
            ErrorKind::Server,
        ),
        (
            "server busy, please try again.  maximum pending requests exceeded".to_owned(),
            ErrorKind::Overloaded,
        ),
    ];
    for (message, kind) in cases {
        let text = ndjson(&[text_line("par"), json!({"error": message})]);
        let server = MockServer::start(vec![Scripted::ndjson(&text, Split::Every(3))]).await;
        let settings = OllamaSettings {
            probe_context: false,
            ..OllamaSettings::default()
        };
        let options = opts(&server, true).with_key(ApiKey::new(key));
        let client = OllamaClient::with_settings(options, settings).unwrap();
        let (events, error) = drain(client.stream(request()).await.unwrap()).await;
        assert_eq!(text_of(&events), "par");
        assert!(!events.iter().any(|e| matches!(e, StreamEvent::Stop { .. })));
        let error = error.expect("an error");
        assert_eq!(error.kind, kind);
        assert!(!error.message.contains(key), "{}", error.message);
        assert!(!error.message.is_empty());
        assert_eq!(
            server.requests()[0].header("authorization").as_deref(),
            Some(format!("Bearer {key}").as_str())
        );
    }
}

#[tokio::test]
async fn a_stream_without_done_true_is_a_connection_error() {
    let text = ndjson(&[text_line("half"), text_line(" an answer")]);
    let server = MockServer::start(vec![Scripted::ndjson(&text, Split::Every(9))]).await;
    let (events, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(text_of(&events), "half an answer");
    let error = error.expect("truncation is an error");
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(error.message.contains("done"), "{}", error.message);
}

#[tokio::test]
async fn a_line_that_is_not_json_is_a_server_error() {
    let text = format!("{}\n<html>502 Bad Gateway</html>\n", text_line("a"));
    let server = MockServer::start(vec![Scripted::ndjson(&text, Split::Whole)]).await;
    let (_, error) = drain(client(&server).stream(request()).await.unwrap()).await;
    assert_eq!(error.unwrap().kind, ErrorKind::Server);
}

#[tokio::test]
async fn num_ctx_grows_with_the_request_and_never_shrinks() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    let client = client(&server);

    // Short: the minimum.
    let _ = drain(client.stream(request()).await.unwrap()).await;
    // Long: 200_000 bytes ≈ 50_000 tokens, ×1.25 = 62_500, + 4096 answer
    // tokens = 66_596, rounded up to the next power of two = 131_072.
    let long = ChatRequest::new(MODEL, vec![Message::user("x".repeat(200_000 - 8))]);
    assert_eq!(long.estimated_input_tokens(), 50_000);
    let _ = drain(client.stream(long.clone()).await.unwrap()).await;
    // With max_tokens 1000: 62_500 + 1000 = 63_500 would need 65_536, but
    // a smaller num_ctx than the last one would make Ollama reload the
    // model: it stays at 131_072, and so does a short request after it.
    let mut limited = long;
    limited.max_tokens = Some(1000);
    let _ = drain(client.stream(limited).await.unwrap()).await;
    let _ = drain(client.stream(request()).await.unwrap()).await;

    let bodies: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies[0]["options"]["num_ctx"], 8192);
    assert_eq!(bodies[1]["options"]["num_ctx"], 131_072);
    assert_eq!(bodies[1]["options"]["num_predict"], 4096);
    assert_eq!(bodies[2]["options"]["num_ctx"], 131_072);
    assert_eq!(bodies[2]["options"]["num_predict"], 1000);
    assert_eq!(bodies[3]["options"]["num_ctx"], 131_072);
    // Never truncated silently: a prompt that does not fit is an error.
    assert!(bodies.iter().all(|body| body["truncate"] == false));
}

#[tokio::test]
async fn policy_cap_rejects_before_sending_when_the_model_is_unknown() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    let settings = OllamaSettings {
        probe_context: false,
        num_ctx: NumCtxPolicy {
            max: 32_768,
            ..NumCtxPolicy::default()
        },
        ..OllamaSettings::default()
    };
    let client = OllamaClient::with_settings(opts(&server, true), settings).unwrap();
    // The prompt alone (62_500 tokens with the margin) overflows: the need
    // named is the prompt plus the smallest answer room, 256 tokens.
    let long = ChatRequest::new(MODEL, vec![Message::user("x".repeat(200_000 - 8))]);
    let Err(error) = client.stream(long.clone()).await else {
        panic!("must not fit")
    };
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(62_756),
            allowed: Some(32_768)
        }
    );
    // With max_tokens the need is the prompt plus all of it.
    let mut limited = long;
    limited.max_tokens = Some(1000);
    let error = client.complete(limited).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(63_500),
            allowed: Some(32_768)
        }
    );
    assert!(server.requests().is_empty(), "nothing may be sent");
}

#[tokio::test]
async fn model_context_from_api_show_caps_num_ctx_and_is_cached() {
    let server = MockServer::start(vec![
        show(4096),
        Scripted::ndjson(&text_stream(), Split::Whole),
    ])
    .await;
    let client = probing_client(&server);
    assert_eq!(client.context_length(MODEL).await.unwrap(), Some(4096));

    // A short request on a 4096-token model gets 4096, not the 8192 minimum.
    let mut short = request();
    short.max_tokens = Some(512);
    let _ = drain(client.stream(short).await.unwrap()).await;

    // A request that cannot fit fails before anything is sent: its prompt
    // alone (4000 tokens, 5000 with the margin) is over the model's 4096.
    let long = ChatRequest::new(MODEL, vec![Message::user("x".repeat(16_000 - 8))]);
    let Err(error) = client.stream(long.clone()).await else {
        panic!("must not fit")
    };
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(5000 + 256),
            allowed: Some(4096)
        }
    );
    assert!(error.to_string().contains(MODEL), "{error}");
    let error = client.complete(long).await.unwrap_err();
    assert!(matches!(
        error.kind,
        ErrorKind::ContextLengthExceeded { .. }
    ));

    let requests = server.requests();
    let uris: Vec<&str> = requests.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, vec!["/api/show", "/api/chat"], "show once, chat once");
    assert_eq!(requests[0].json(), json!({"model": MODEL}));
    assert_eq!(requests[1].json()["options"]["num_ctx"], 4096);
    assert_eq!(requests[1].json()["options"]["num_predict"], 512);
}

#[tokio::test]
async fn a_small_model_answers_without_max_tokens_in_the_room_left() {
    let server = MockServer::start(vec![
        show(4096),
        Scripted::ndjson(&text_stream(), Split::Whole),
    ])
    .await;
    let client = probing_client(&server);
    // 27 bytes ≈ 7 tokens, 9 with the margin: the answer gets the other
    // 4087 of the model's 4096 (not the 4096 default, which would not fit).
    let short = request();
    assert_eq!(short.estimated_input_tokens(), 7);
    let response = collect_stream("t", client.stream(short).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.message.text(), "Héllo, wörld ✓");

    // A prompt that alone overflows still fails before sending.
    let long = ChatRequest::new(MODEL, vec![Message::user("x".repeat(16_000 - 8))]);
    let error = client.complete(long).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(5256),
            allowed: Some(4096)
        }
    );

    let requests = server.requests();
    let uris: Vec<&str> = requests.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        vec!["/api/show", "/api/chat"],
        "no chat for the overflow"
    );
    assert_eq!(
        requests[1].json()["options"],
        json!({"num_ctx": 4096, "num_predict": 4087})
    );
}

#[tokio::test]
async fn a_long_prompt_on_an_8k_model_gets_a_shorter_answer_not_an_error() {
    let server = MockServer::start(vec![
        show(8192),
        Scripted::ndjson(&text_stream(), Split::Whole),
    ])
    .await;
    // 20 KB ≈ 5000 tokens, 6250 with the margin: 6250 + 4096 would not fit
    // 8192, so the answer gets the 1942 tokens left.
    let long = ChatRequest::new(MODEL, vec![Message::user("x".repeat(20_000 - 8))]);
    let _ = drain(probing_client(&server).stream(long).await.unwrap()).await;
    let requests = server.requests();
    assert_eq!(requests[1].uri, "/api/chat");
    assert_eq!(
        requests[1].json()["options"],
        json!({"num_ctx": 8192, "num_predict": 1942})
    );
}

#[tokio::test]
async fn a_need_of_9000_tokens_asks_for_16384() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    // 16_000 bytes = 4000 tokens, 5000 with the margin, + 4000 = 9000: the
    // next power of two, not the next multiple of 2048 (10_240).
    let mut req = ChatRequest::new(MODEL, vec![Message::user("x".repeat(16_000 - 8))]);
    req.max_tokens = Some(4000);
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    assert_eq!(
        server.requests()[0].json()["options"],
        json!({"num_ctx": 16_384, "num_predict": 4000})
    );
}

#[tokio::test]
async fn a_first_request_that_does_not_fit_sends_no_chat() {
    let server = MockServer::start(vec![show(8192)]).await;
    let long = ChatRequest::new(MODEL, vec![Message::user("é".repeat(20_000))]);
    let Err(error) = probing_client(&server).stream(long).await else {
        panic!("must not fit")
    };
    // 40_008 bytes (with the message's 8) ≈ 10_002 tokens, 12_503 with the
    // margin, + 256 for the answer.
    assert_eq!(
        error.kind,
        ErrorKind::ContextLengthExceeded {
            needed: Some(12_759),
            allowed: Some(8192)
        }
    );
    let uris: Vec<String> = server.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, vec!["/api/show".to_owned()], "no /api/chat request");
}

#[tokio::test]
async fn unknown_model_on_api_show_is_not_found_and_old_servers_fall_back() {
    let server = MockServer::start(vec![Scripted::json(
        404,
        json!({"error": "model 'nope' not found"}),
    )])
    .await;
    let error = probing_client(&server)
        .complete(ChatRequest::new("nope", vec![Message::user("Hi")]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert_eq!(error.status, Some(404));
    assert_eq!(error.message, "model 'nope' not found");
    assert_eq!(server.requests().len(), 1, "no /api/chat after the 404");

    // A server whose /api/show fails otherwise (or says nothing of the
    // context) leaves the policy's cap in charge.
    let server = MockServer::start(vec![
        Scripted::json(500, json!({"error": "boom"})),
        Scripted::ndjson(&text_stream(), Split::Whole),
    ])
    .await;
    let response = collect_stream(
        "t",
        probing_client(&server).stream(request()).await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.message.text(), "Héllo, wörld ✓");
    let requests = server.requests();
    assert_eq!(requests[1].uri, "/api/chat");
    assert_eq!(requests[1].json()["options"]["num_ctx"], 8192);
}

#[tokio::test]
async fn every_error_status_maps_to_its_kind() {
    let cases: Vec<(u16, Value, ErrorKind)> = vec![
        (
            400,
            json!({"error": "json: cannot unmarshal string into Go struct field ChatRequest.messages"}),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            json!({"error": "registry.ollama.ai/library/gemma:2b does not support tools"}),
            ErrorKind::InvalidRequest,
        ),
        (
            400,
            json!({"error": "prompt is too long: 9000 tokens, maximum context length is 8192"}),
            ErrorKind::ContextLengthExceeded {
                needed: Some(9000),
                allowed: Some(8192),
            },
        ),
        (
            401,
            json!({"error": "unauthorized"}),
            ErrorKind::Authentication,
        ),
        (403, json!({"error": "forbidden"}), ErrorKind::Permission),
        (
            404,
            json!({"error": "model 'x' not found"}),
            ErrorKind::NotFound,
        ),
        (
            429,
            json!({"error": "too many requests"}),
            ErrorKind::RateLimited { retry_after: None },
        ),
        (
            500,
            json!({"error": "llama runner process has terminated: exit status 2"}),
            ErrorKind::Server,
        ),
        (
            503,
            json!({"error": "server busy, please try again.  maximum pending requests exceeded"}),
            ErrorKind::Overloaded,
        ),
        (529, json!({"error": "overloaded"}), ErrorKind::Overloaded),
    ];
    for (status, body, kind) in cases {
        let message = body["error"].as_str().unwrap().to_owned();
        let server = MockServer::start(vec![Scripted::json(status, body)]).await;
        let settings = OllamaSettings {
            probe_context: false,
            ..OllamaSettings::default()
        };
        let client = OllamaClient::with_settings(opts(&server, false), settings).unwrap();
        let Err(error) = client.stream(request()).await else {
            panic!("status {status} must fail")
        };
        assert_eq!(error.kind, kind, "status {status}");
        assert_eq!(error.status, Some(status));
        assert_eq!(error.message, message);
        let error = client.complete(request()).await.unwrap_err();
        assert_eq!(error.kind, kind, "status {status} (complete)");
        // A prompt that did not fit is asked once more with more context
        // (refused again here, so the next request starts where the first
        // did); nothing is retried by the transport without a policy.
        let sends = if matches!(kind, ErrorKind::ContextLengthExceeded { .. }) {
            4
        } else {
            2
        };
        assert_eq!(server.requests().len(), sends, "status {status}");
    }
}

#[tokio::test]
async fn a_refusal_inside_a_whole_answer_is_treated_as_a_400() {
    // Ollama can answer 200 with only `{"error"}`; a refusal of the request
    // stands for the 400 it sends before an answer starts (and is logged
    // like one by the gateway), other errors carry no status.
    for (body, kind, status) in [
        (
            json!({"error": "registry.ollama.ai/library/gemma:2b does not support tools"}),
            ErrorKind::InvalidRequest,
            Some(400),
        ),
        (
            json!({"error": "llama runner process has terminated: exit status 2"}),
            ErrorKind::Server,
            None,
        ),
    ] {
        let server = MockServer::start(vec![Scripted::json(200, body.clone())]).await;
        let settings = OllamaSettings {
            probe_context: false,
            ..OllamaSettings::default()
        };
        let client = OllamaClient::with_settings(opts(&server, false), settings).unwrap();
        let error = client.complete(request()).await.unwrap_err();
        assert_eq!((error.kind, error.status), (kind, status), "{body}");
    }
}

#[tokio::test]
async fn retries_server_errors_and_honours_retry_after() {
    let server = MockServer::start(vec![
        Scripted::json(500, json!({"error": "boom"})),
        Scripted::json(429, json!({"error": "slow down"})).header("retry-after", "1"),
        Scripted::ndjson(&text_stream(), Split::Whole),
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
        Scripted::ndjson(&text_stream(), Split::Every(40)).stall_after(2, Duration::from_secs(30));
    let server = MockServer::start(vec![script]).await;
    let mut options = opts(&server, true);
    // Long enough that a loaded machine does not mistake slow headers for
    // silence; the stall is 30 s.
    options.http.idle_timeout = Duration::from_secs(1);
    let settings = OllamaSettings {
        probe_context: false,
        ..OllamaSettings::default()
    };
    let client = OllamaClient::with_settings(options, settings).unwrap();
    let started = Instant::now();
    let (events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert_eq!(error.expect("a timeout").kind, ErrorKind::Timeout);
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Stop { .. })));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    let server = MockServer::start(vec![]).await;
    let url = server.url();
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut options = options("o", url);
    options.http.retry = RetryPolicy::none();
    // Probing: the /api/show failure is reported as it is.
    let client = OllamaClient::new(options).unwrap();
    let error = client.complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(
        error.to_string().contains("is the server running"),
        "{error}"
    );
}

#[tokio::test]
async fn complete_decodes_a_non_streamed_answer_and_encodes_options() {
    let answer = json!({
        "model": MODEL, "created_at": "2025-06-01T10:00:00Z",
        "message": {"role": "assistant", "content": "", "thinking": "I need the file.",
                    "tool_calls": [{"function": {"name": "read", "arguments": {"path": "src/main.rs"}}}]},
        "done": true, "done_reason": "stop",
        "total_duration": 100, "load_duration": 1, "prompt_eval_count": 120, "prompt_eval_duration": 10,
        "eval_count": 33, "eval_duration": 20
    });
    let server = MockServer::start(vec![Scripted::json(200, answer)]).await;
    let mut req = request();
    req.tools = vec![tool("read"), tool("grep")];
    req.tool_choice = ToolChoice::Tool {
        name: "read".into(),
    };
    req.max_tokens = Some(300);
    req.stop = vec!["END".into(), "\n\n".into()];
    req.sampling.temperature = Some(0.25);
    req.sampling.top_p = Some(0.5);
    req.sampling.top_k = Some(40);
    req.sampling.seed = Some(42);
    req.sampling.presence_penalty = Some(0.5);
    req.sampling.frequency_penalty = Some(0.25);
    req.reasoning = Some(ReasoningEffort::High);
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}});
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.clone(),
        strict: true,
    });
    let response = client(&server).complete(req).await.unwrap();

    assert_eq!(response.model.as_deref(), Some(MODEL));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(
        response.message.content[0],
        ContentPart::Reasoning(Reasoning {
            text: "I need the file.".into(),
            ..Reasoning::default()
        })
    );
    let calls: Vec<_> = response.message.tool_calls().cloned().collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "read");
    assert_eq!(calls[0].arguments, r#"{"path":"src/main.rs"}"#);
    assert!(calls[0].id.starts_with("call_"));
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 120,
            output_tokens: 33,
            ..Usage::default()
        }
    );

    let sent = server.requests()[0].json();
    assert_eq!(server.requests()[0].uri, "/api/chat");
    assert_eq!(sent["stream"], false, "Ollama streams unless told not to");
    assert_eq!(sent["think"], true);
    assert_eq!(sent["format"], schema);
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "read", "description": "The read tool",
                "parameters": tool("read").parameters}}]),
        "a named tool is offered alone"
    );
    assert_eq!(sent.get("tool_choice"), None);
    assert_eq!(
        sent["options"],
        json!({"num_ctx": 8192, "num_predict": 300, "temperature": 0.25, "top_p": 0.5, "top_k": 40,
               "seed": 42, "presence_penalty": 0.5, "frequency_penalty": 0.25, "stop": ["END", "\n\n"]})
    );
}

#[tokio::test]
async fn complete_reports_an_error_body_and_a_missing_done() {
    let server = MockServer::start(vec![
        Scripted::json(200, json!({"error": "model requires more system memory"})),
        Scripted::json(
            200,
            json!({"model": MODEL, "message": {"role": "assistant", "content": "x"}, "done": false}),
        ),
    ])
    .await;
    let client = client(&server);
    let error = client.complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert_eq!(error.message, "model requires more system memory");
    let error = client.complete(request()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
}

#[tokio::test]
async fn tool_choices_json_mode_and_required() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    let client = client(&server);
    let mut none = request();
    none.tools = vec![tool("read")];
    none.tool_choice = ToolChoice::None;
    none.response_format = Some(ResponseFormat::JsonObject);
    let _ = drain(client.stream(none).await.unwrap()).await;
    let mut required = request();
    required.tools = vec![tool("read"), tool("grep")];
    required.tool_choice = ToolChoice::Required;
    let _ = drain(client.stream(required).await.unwrap()).await;

    let bodies: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies[0].get("tools"),
        None,
        "ToolChoice::None sends no tools"
    );
    assert_eq!(bodies[0]["format"], "json");
    let names: Vec<&str> = bodies[1]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["read", "grep"]);
}

#[tokio::test]
async fn conversation_with_calls_results_images_and_reasoning_is_encoded() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    let mut req = request();
    req.messages = vec![
        Message::system("You are a coder."),
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
                        url: "data:image/jpeg;base64,/9j/4AAQ".into(),
                    },
                },
            ],
        },
        Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Reasoning(Reasoning {
                    text: "Look at both files.".into(),
                    ..Reasoning::default()
                }),
                ContentPart::Text {
                    text: "Let me read.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("call_1", "read", r#"{"path":"a.rs"}"#)),
                ContentPart::ToolCall(ToolCall::new("call_2", "grep", "")),
            ],
        },
        Message::tool_result("call_1", "fn main() {}"),
        // Anthropic-style: a result inside a user message, then text.
        Message {
            role: Role::User,
            content: vec![
                ContentPart::ToolResult(freehold_protocol::ToolResult {
                    call_id: "call_2".into(),
                    content: "no match".into(),
                    is_error: false,
                }),
                ContentPart::Text {
                    text: "Go on.".into(),
                },
            ],
        },
    ];
    let _ = drain(client(&server).stream(req).await.unwrap()).await;
    let messages = server.requests()[0].json()["messages"].clone();
    assert_eq!(
        messages,
        json!([
            {"role": "system", "content": "You are a coder."},
            {"role": "user", "content": "What is in these?", "images": ["iVBORw0KGgo=", "/9j/4AAQ"]},
            {"role": "assistant", "content": "Let me read.", "thinking": "Look at both files.",
             "tool_calls": [
                {"id": "call_1", "function": {"name": "read", "arguments": {"path": "a.rs"}}},
                {"id": "call_2", "function": {"name": "grep", "arguments": {}}}
             ]},
            {"role": "tool", "content": "fn main() {}", "tool_name": "read", "tool_call_id": "call_1"},
            {"role": "tool", "content": "no match", "tool_name": "grep", "tool_call_id": "call_2"},
            {"role": "user", "content": "Go on."}
        ])
    );
}

#[tokio::test]
async fn image_urls_are_rejected_before_sending() {
    let server = MockServer::start(vec![Scripted::ndjson(&text_stream(), Split::Whole)]).await;
    let mut req = request();
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentPart::Image {
            source: ImageSource::Url {
                url: "https://example.com/cat.png".into(),
            },
        }],
    });
    let Err(error) = client(&server).stream(req).await else {
        panic!("URL images are not supported")
    };
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(
        error.message.contains("https://example.com/cat.png") && error.message.contains("base64"),
        "{}",
        error.message
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn lists_models_with_known_contexts() {
    let tags = json!({"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "modified_at": "2025-05-04T17:37:44.706015396-07:00",
         "size": 2_019_393_189u64, "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
         "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                     "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}},
        {"name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size": 4_683_087_332u64,
         "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}}
    ]});
    let server = MockServer::start(vec![show(131_072), Scripted::json(200, tags)]).await;
    let client = probing_client(&server);
    client.context_length("llama3.2:latest").await.unwrap();
    let models = client.list_models().await.unwrap();
    let summary: Vec<(&str, Option<u32>, &str)> = models
        .iter()
        .map(|m| (m.id.as_str(), m.context_window, m.provider.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("llama3.2:latest", Some(131_072), "test-ollama"),
            ("qwen2.5-coder:7b", None, "test-ollama"),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests[1].uri, "/api/tags");
    assert_eq!(requests[1].method, "GET");
}

#[tokio::test]
async fn defaults_and_capabilities() {
    let client = OllamaClient::new(ClientOptions::new("local", "")).unwrap();
    assert_eq!(client.name(), "local");
    assert!(client.settings().probe_context);
    assert_eq!(client.settings().num_ctx, NumCtxPolicy::default());
    let caps = client.capabilities(MODEL);
    assert!(caps.streaming && caps.tools && caps.structured_output && caps.reasoning);
}

/// `think` goes only to models that can think (Ollama refuses it with a 400
/// elsewhere, and clients such as Claude Code ask for thinking whatever the
/// model), as an effort level for gpt-oss; asked for no reasoning, a
/// thinking model is told not to think (Ollama's default is to think).
#[tokio::test]
async fn think_is_sent_as_each_model_takes_it() {
    let gpt_oss = || {
        Scripted::json(
            200,
            json!({
                "details": {"format": "gguf", "family": "gptoss"},
                "model_info": {"general.architecture": "gptoss", "gptoss.context_length": 131_072},
                "capabilities": ["completion", "tools", "thinking"]
            }),
        )
    };
    let qwen3 = Scripted::json(
        200,
        json!({
            "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40_960},
            "capabilities": ["completion", "tools", "thinking"]
        }),
    );
    let cases = [
        (show(32_768), ReasoningEffort::High, None),
        (gpt_oss(), ReasoningEffort::High, Some(json!("high"))),
        (gpt_oss(), ReasoningEffort::Off, Some(json!("low"))),
        (qwen3, ReasoningEffort::Off, Some(json!(false))),
        (show(32_768), ReasoningEffort::Off, None),
    ];
    for (show, effort, think) in cases {
        let server =
            MockServer::start(vec![show, Scripted::ndjson(&text_stream(), Split::Whole)]).await;
        let client = probing_client(&server);
        let mut thinking = request();
        thinking.reasoning = Some(effort);
        let _ = drain(client.stream(thinking).await.unwrap()).await;
        let chat = server.requests()[1].json();
        assert_eq!(chat.get("think"), think.as_ref(), "{chat}");
    }
}

/// The context is sized from an estimate; when Ollama still finds the
/// prompt too long (`truncate` is off, so it says so instead of cutting the
/// conversation), the request is sent once more with four times the
/// context, within the model's limit, and later requests stay at that size.
#[tokio::test]
async fn a_prompt_ollama_finds_too_long_is_asked_again_at_the_models_limit() {
    let too_long = Scripted::json(
        500,
        json!({"error": "the input length exceeds the context length"}),
    );
    let server = MockServer::start(vec![
        show(32_768),
        too_long,
        Scripted::ndjson(&text_stream(), Split::Whole),
    ])
    .await;
    let client = probing_client(&server);
    let (events, error) = drain(client.stream(request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(!events.is_empty());
    let _ = drain(client.stream(request()).await.unwrap()).await;

    let requests = server.requests();
    let num_ctx: Vec<Value> = requests[1..]
        .iter()
        .map(|request| request.json()["options"]["num_ctx"].clone())
        .collect();
    assert_eq!(num_ctx, [json!(8192), json!(32_768), json!(32_768)]);
}
