//! Tool calls, structured output and prefix caching of the `local` provider,
//! on the real SmolLM2-135M and Qwen2.5-Coder-0.5B (skipped unless
//! `FREEHOLD_TEST_MODELS` names the directory holding their GGUFs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use freehold_engine::local::{LocalProvider, LocalSettings};
use freehold_llm::Provider;
use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, Message, ResponseFormat, StopReason, ToolCall,
    ToolChoice, ToolSpec,
};
use serde_json::{Value, json};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

fn model(file: &str) -> Option<String> {
    freehold_test_support::test_model(file).map(|path| path.to_string_lossy().into_owned())
}

/// One provider for the test binary, so that each model loads once.
fn provider() -> &'static LocalProvider {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        LocalProvider::new(LocalSettings {
            threads: Some(2),
            ..LocalSettings::default()
        })
    })
}

async fn complete(request: ChatRequest) -> ChatResponse {
    tokio::time::timeout(Duration::from_secs(300), provider().complete(request))
        .await
        .expect("the test took too long")
        .unwrap()
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Gets the current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["city"]
        }),
        strict: false,
    }
}

fn read_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Reads a file of the project and returns its text.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1}
            },
            "required": ["path"]
        }),
        strict: false,
    }
}

fn tools() -> Vec<ToolSpec> {
    vec![weather_tool(), read_tool()]
}

fn request(model: &str, prompt: &str) -> ChatRequest {
    let mut request = ChatRequest::new(model, vec![Message::user(prompt)]);
    request.max_tokens = Some(96);
    request.sampling.temperature = Some(0.0);
    request
}

/// Checks a value against the small subset of JSON Schema the tests use:
/// types, `properties`, `required`, `enum`, `minimum`, and no keys beyond
/// `properties`.
fn check(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let object = value
                .as_object()
                .ok_or_else(|| format!("{at}: {value} is not an object"))?;
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = required.as_str().unwrap();
                if !object.contains_key(key) {
                    return Err(format!("{at}: `{key}` is missing from {value}"));
                }
            }
            for (key, item) in object {
                let sub = properties
                    .and_then(|p| p.get(key))
                    .ok_or_else(|| format!("{at}: `{key}` is not in the schema"))?;
                check(sub, item, &format!("{at}.{key}"))?;
            }
        }
        Some("string") if !value.is_string() => return Err(format!("{at}: {value} not a string")),
        Some("integer") => {
            let n = value
                .as_i64()
                .ok_or_else(|| format!("{at}: {value} is not an integer"))?;
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
                && n < min
            {
                return Err(format!("{at}: {n} < {min}"));
            }
        }
        Some("boolean") if !value.is_boolean() => return Err(format!("{at}: {value} not a bool")),
        _ => {}
    }
    Ok(())
}

fn calls(response: &ChatResponse) -> Vec<ToolCall> {
    response.message.tool_calls().cloned().collect()
}

/// Every call names an offered tool and its arguments match its schema.
fn assert_valid_calls(response: &ChatResponse, offered: &[ToolSpec]) {
    let calls = calls(response);
    assert!(!calls.is_empty(), "no tool call in {response:?}");
    assert_eq!(response.stop_reason, StopReason::ToolUse, "{response:?}");
    for call in calls {
        let tool = offered
            .iter()
            .find(|tool| tool.name == call.name)
            .unwrap_or_else(|| panic!("`{}` was not offered", call.name));
        let arguments: Value = serde_json::from_str(&call.arguments)
            .unwrap_or_else(|e| panic!("{}: {e}", call.arguments));
        check(&tool.parameters, &arguments, &call.name).unwrap();
        assert!(call.id.starts_with("call_"), "{}", call.id);
    }
}

const PROMPTS: [&str; 3] = [
    "What's the weather like in Lisbon today?",
    "Show me what is in src/main.rs.",
    "hello",
];

async fn required_calls_are_schema_valid(file: &str) {
    let Some(model) = model(file) else { return };
    for prompt in PROMPTS {
        let mut request = request(&model, prompt);
        request.tools = tools();
        request.tool_choice = ToolChoice::Required;
        let response = complete(request).await;
        assert_valid_calls(&response, &tools());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_required_tool_calls_are_schema_valid() {
    required_calls_are_schema_valid(SMOLLM2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_required_tool_calls_are_schema_valid() {
    required_calls_are_schema_valid(QWEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_tool_is_the_one_called() {
    for file in [SMOLLM2, QWEN] {
        let Some(model) = model(file) else { return };
        let mut request = request(&model, "Show me the README.md file.");
        request.tools = tools();
        request.tool_choice = ToolChoice::Tool {
            name: "read_file".into(),
        };
        let response = complete(request).await;
        assert_valid_calls(&response, &tools());
        assert!(calls(&response).iter().all(|c| c.name == "read_file"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_calls_an_offered_tool_by_itself_in_its_own_format() {
    let Some(model) = model(QWEN) else { return };
    let mut request = request(
        &model,
        "Use the get_weather tool to find the weather in Paris.",
    );
    request.tools = tools();
    let response = complete(request).await;
    assert_valid_calls(&response, &tools());
    let call = &calls(&response)[0];
    assert_eq!(call.name, "get_weather");
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(
        arguments["city"].as_str().unwrap().contains("Paris"),
        "{arguments}"
    );
    // The call's markup is not shown as text.
    assert!(
        !response.message.text().contains("<tool_call>"),
        "{response:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_answers_from_a_tool_result() {
    let Some(model) = model(QWEN) else { return };
    let call = ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#);
    let mut request = ChatRequest::new(
        &model,
        vec![
            Message::user("What's the weather in Paris?"),
            Message {
                role: freehold_protocol::Role::Assistant,
                content: vec![ContentPart::ToolCall(call)],
            },
            Message::tool_result("call_1", "Sunny, 24 degrees celsius."),
        ],
    );
    request.tools = tools();
    // The model would happily call again; the test is about reading the
    // result.
    request.tool_choice = ToolChoice::None;
    request.max_tokens = Some(48);
    request.sampling.temperature = Some(0.0);
    let response = complete(request).await;
    let text = response.message.text();
    assert!(
        text.contains("24") || text.to_lowercase().contains("sunny"),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_choice_none_gives_text() {
    let Some(model) = model(QWEN) else { return };
    let mut request = request(
        &model,
        "Use the get_weather tool to find the weather in Paris.",
    );
    request.max_tokens = Some(24);
    request.tools = tools();
    request.tool_choice = ToolChoice::None;
    let response = complete(request).await;
    assert!(calls(&response).is_empty(), "{response:?}");
    assert!(!response.message.text().trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_matches_the_schema() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
        },
        "required": ["name", "age", "languages"]
    });
    for file in [SMOLLM2, QWEN] {
        let Some(model) = model(file) else { return };
        let mut request = request(
            &model,
            "Describe a fictional programmer as JSON with a name, an age and the languages they know.",
        );
        request.max_tokens = Some(128);
        request.response_format = Some(ResponseFormat::JsonSchema {
            name: "programmer".into(),
            schema: schema.clone(),
            strict: true,
        });
        let response = complete(request).await;
        let text = response.message.text();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut flat = schema.clone();
        flat["properties"]["languages"] = json!({});
        check(&flat, &value, file).unwrap();
        assert!(
            value["languages"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
        assert_eq!(response.stop_reason, StopReason::EndTurn, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_turn_evaluates_only_new_tokens() {
    let Some(model) = model(SMOLLM2) else { return };
    // A provider of its own, so that other tests' requests do not take the
    // slot.
    let provider = LocalProvider::new(LocalSettings {
        threads: Some(2),
        slots: Some(2),
        ..LocalSettings::default()
    });
    let mut conversation = vec![
        Message::system("You are a concise assistant."),
        Message::user("Name three colours."),
    ];
    let mut turn = ChatRequest::new(&model, conversation.clone());
    turn.max_tokens = Some(32);
    turn.sampling.temperature = Some(0.0);
    let first = provider.complete(turn.clone()).await.unwrap();
    assert_eq!(first.usage.cached_input_tokens, 0, "{:?}", first.usage);
    let timings = first.timings.expect("the engine reports timings");
    assert_eq!(timings.prompt_tokens, first.usage.input_tokens);
    assert!(timings.prompt_tokens_per_second().is_some());

    conversation.push(Message::assistant(first.message.text()));
    conversation.push(Message::user("And three animals?"));
    turn.messages = conversation;
    let second = provider.complete(turn.clone()).await.unwrap();
    let usage = second.usage;
    let evaluated = usage.input_tokens - usage.cached_input_tokens;
    assert!(
        usage.cached_input_tokens >= first.usage.input_tokens,
        "the first turn's prompt was not reused: {usage:?} after {:?}",
        first.usage
    );
    assert!(
        evaluated <= usage.input_tokens - first.usage.input_tokens,
        "evaluated {evaluated} of {usage:?}; only the answer and the new message are new"
    );
    assert_eq!(second.timings.unwrap().prompt_tokens, evaluated);

    // The same request again: everything but the last token is cached.
    let again = provider.complete(turn).await.unwrap();
    assert_eq!(
        again.usage.cached_input_tokens,
        again.usage.input_tokens - 1
    );
    assert_eq!(again.message.text(), second.message.text());
    assert_eq!(provider.idle_slots(), 1);
}
