//! The `local` provider against SmolLM2-135M, and Qwen2.5-Coder-0.5B for
//! tool calls in a thinking model's answer (skipped unless
//! `FREEHOLD_TEST_MODELS` names the directory holding their GGUFs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use freehold_engine::local::{LocalProvider, LocalSettings};
use freehold_llm::Provider;
use freehold_protocol::{ChatRequest, ErrorKind, Message, Role, StopReason, StreamEvent};
use futures::StreamExt;

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    freehold_test_support::test_model(MODEL_FILE)
}

/// One provider for the whole test binary, so the model loads once.
fn provider() -> &'static LocalProvider {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        LocalProvider::new(LocalSettings {
            threads: Some(2),
            ..LocalSettings::default()
        })
    })
}

fn request(path: &std::path::Path, prompt: &str) -> ChatRequest {
    let mut request = ChatRequest::new(
        path.to_string_lossy(),
        vec![Message::from_text(Role::User, prompt)],
    );
    request.max_tokens = Some(24);
    request.sampling.temperature = Some(0.0);
    request
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the test took too long")
}

async fn events(request: ChatRequest) -> Vec<StreamEvent> {
    let stream = provider().stream(request).await.unwrap();
    stream.map(|event| event.unwrap()).collect().await
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_short_chat() {
    let Some(path) = model_path() else { return };
    let response =
        bounded(provider().complete(request(&path, "What is the capital of France?"))).await;
    let response = response.unwrap();
    assert!(!response.message.text().trim().is_empty(), "{response:?}");
    assert!(response.usage.input_tokens > 0);
    assert!(response.usage.output_tokens > 0);
    assert!(response.usage.output_tokens <= 24);
    assert!(matches!(
        response.stop_reason,
        StopReason::EndTurn | StopReason::MaxTokens
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_order() {
    let Some(path) = model_path() else { return };
    let events = bounded(events(request(&path, "Tell me about the sea."))).await;
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })));
    assert!(matches!(events.last(), Some(StreamEvent::Stop { .. })));
    assert!(matches!(events[events.len() - 3], StreamEvent::Usage(_)));
    let StreamEvent::Timings(timings) = &events[events.len() - 2] else {
        panic!("no timings before the stop: {events:?}")
    };
    assert!(timings.generated_tokens > 0 && timings.generation_us > 0);
    assert!(timings.first_token_us > 0);
    let deltas = events
        .iter()
        .filter(|event| matches!(event, StreamEvent::TextDelta { .. }))
        .count();
    assert!(deltas >= 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sequence_ends_the_answer_without_its_text() {
    let Some(path) = model_path() else { return };
    let prompt = "Name three colours.";
    let greedy = text_of(&bounded(events(request(&path, prompt))).await);
    // A word from the middle of the greedy answer: generation must hit it.
    let words: Vec<&str> = greedy.split_whitespace().filter(|w| w.len() >= 3).collect();
    assert!(words.len() >= 2, "greedy answer too short: {greedy:?}");
    let stop = words[1].to_string();
    let mut stopped = request(&path, prompt);
    stopped.stop = vec![stop.clone()];
    let events = bounded(events(stopped)).await;
    let text = text_of(&events);
    assert!(!text.contains(&stop), "{text:?} contains {stop:?}");
    assert!(greedy.starts_with(&text), "{text:?} vs {greedy:?}");
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::StopSequence(Some(stop))
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_generation() {
    let Some(path) = model_path() else { return };
    let mut long = request(&path, "Write a long story about a dragon.");
    long.max_tokens = Some(400);
    let mut stream = bounded(provider().stream(long)).await.unwrap();
    loop {
        match bounded(stream.next()).await {
            Some(Ok(StreamEvent::TextDelta { .. })) => break,
            Some(Ok(_)) => {}
            other => panic!("no text: {other:?}"),
        }
    }
    drop(stream);
    // Other tests share the provider: wait for every generation to end.
    bounded(async {
        while provider().active_generations() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let response = bounded(provider().complete(request(&path, "Hi"))).await;
    assert!(response.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_prompt_is_refused() {
    let Some(path) = model_path() else { return };
    let prompt = "apple banana cherry ".repeat(5000);
    let error = bounded(provider().stream(request(&path, &prompt)))
        .await
        .err()
        .expect("an over-long prompt must fail");
    match &error.kind {
        ErrorKind::ContextLengthExceeded {
            needed: Some(needed),
            allowed: Some(allowed),
        } => {
            assert_eq!(*allowed, 8192);
            assert!(needed > allowed);
        }
        other => panic!("unexpected {other:?}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_not_found() {
    let error = provider()
        .stream(ChatRequest::new(
            "/nonexistent/model.gguf",
            vec![Message::from_text(Role::User, "hi")],
        ))
        .await
        .err()
        .expect("must fail");
    assert_eq!(error.kind, ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_the_prompt_as_a_generation_reads_it() {
    let Some(path) = model_path() else { return };
    let mut asked = request(&path, "What is the capital of France?");
    asked
        .messages
        .insert(0, Message::system("Answer in one word."));
    asked.max_tokens = Some(1);
    let counted = bounded(provider().count_input_tokens(asked.clone()))
        .await
        .unwrap()
        .expect("the local provider counts with the model's tokenizer");
    let answered = bounded(provider().complete(asked.clone())).await.unwrap();
    assert_eq!(
        counted, answered.usage.input_tokens,
        "the count is the prompt the generation evaluated"
    );

    // Counting needs no room for an answer: a prompt too long to answer
    // is counted, so a client can see by how much it is over.
    let long = request(&path, &"apple banana cherry ".repeat(5000));
    let long_count = bounded(provider().count_input_tokens(long))
        .await
        .unwrap()
        .unwrap();
    assert!(long_count > 8192, "{long_count}");

    let error = bounded(provider().count_input_tokens(ChatRequest::new(
        "/nonexistent/model.gguf",
        vec![Message::from_text(Role::User, "hi")],
    )))
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
}

/// A thinking template of the kind DeepSeek-R1's distilled models and QwQ
/// have, in short: the generation prompt opens `<think>`; told
/// `enable_thinking` false, it closes it again (Qwen3's switch); an
/// assistant turn shows the reasoning sent back with it.
const THINKING_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
{% if m.reasoning_content is string %}<think>{{ m.reasoning_content }}</think>{% endif %}\
{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n<think>\n\
{% if enable_thinking is defined and enable_thinking is false %}</think>\n{% endif %}";

/// A model file removed when the test ends, passed or not.
struct TempModel(PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A copy of the model at `path` whose chat template is `template`, written
/// over the old one in place (padded with a Jinja comment to the same
/// length, so the tensors' offsets do not move).
fn with_template(path: &std::path::Path, template: &str) -> TempModel {
    const KEY: &[u8] = b"tokenizer.chat_template";
    const STRING_TYPE: u32 = 8;
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(KEY.len())
        .position(|window| window == KEY)
        .expect("the model has a chat template")
        + KEY.len();
    let value_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(value_type, STRING_TYPE);
    let length = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
    let padding = length
        .checked_sub(template.len() + 4)
        .expect("the new template fits in the old one's place");
    let new = format!("{template}{{#{}#}}", " ".repeat(padding));
    bytes[at + 12..at + 12 + length].copy_from_slice(new.as_bytes());
    let copy = std::env::temp_dir().join(format!(
        "freehold-thinking-{}-{}.gguf",
        std::process::id(),
        path.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&copy, bytes).unwrap();
    TempModel(copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_in_tags_is_reasoning_and_reasoning_reaches_the_template() {
    let Some(path) = model_path() else { return };
    let copy = with_template(&path, THINKING_TEMPLATE);
    let thinking_model = copy.0.clone();
    let is_reasoning = |event: &StreamEvent| matches!(event, StreamEvent::ReasoningDelta { .. });

    // The prompt opened `<think>`: what the model writes is its thinking
    // (all of it, unless it writes `</think>`: SmolLM2 does not know the
    // tag, and greedy, it does not).
    let thinking = bounded(events(request(&thinking_model, "What is 2 + 2?"))).await;
    let reasoning: String = thinking
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ReasoningDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!reasoning.trim().is_empty(), "{thinking:?}");
    assert!(!reasoning.contains("<think>"), "{reasoning:?}");
    assert_eq!(text_of(&thinking), "", "{thinking:?}");
    assert!(
        matches!(
            thinking.last(),
            Some(StreamEvent::Stop {
                reason: StopReason::EndTurn | StopReason::MaxTokens
            })
        ),
        "{thinking:?}"
    );

    // Reasoning turned off: the template closes the thinking, and the
    // model's text is its answer.
    let mut off = request(&thinking_model, "What is 2 + 2?");
    off.reasoning = Some(freehold_protocol::ReasoningEffort::Off);
    let answered = bounded(events(off)).await;
    assert!(!text_of(&answered).trim().is_empty(), "{answered:?}");
    assert!(!answered.iter().any(is_reasoning), "{answered:?}");

    // A whole answer is split the same way (not compared word for word:
    // the cached prompt is evaluated otherwise the second time).
    let whole = bounded(provider().complete(request(&thinking_model, "What is 2 + 2?")))
        .await
        .unwrap();
    let whole_reasoning: String = whole
        .message
        .content
        .iter()
        .filter_map(|part| match part {
            freehold_protocol::ContentPart::Reasoning(thought) => Some(thought.text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!whole_reasoning.trim().is_empty(), "{whole:?}");
    assert!(!whole.message.text().contains("think>"), "{whole:?}");

    // JSON output is constrained from its first token: there is no
    // thinking in it, and the JSON is the answer's text.
    let mut json_asked = request(&thinking_model, "Give me a JSON object with your name.");
    json_asked.response_format = Some(freehold_protocol::ResponseFormat::JsonObject);
    let json_answer = bounded(events(json_asked)).await;
    assert!(!json_answer.iter().any(is_reasoning), "{json_answer:?}");
    assert!(
        text_of(&json_answer).trim_start().starts_with('{'),
        "{json_answer:?}"
    );

    // Reasoning sent back with an earlier turn is rendered: the prompt
    // grows by it.
    let conversation = |reasoning: &str| {
        let mut earlier = Message::assistant("4");
        earlier.content.insert(
            0,
            freehold_protocol::ContentPart::Reasoning(freehold_protocol::Reasoning {
                text: reasoning.into(),
                ..Default::default()
            }),
        );
        let mut asked = request(&thinking_model, "What is 2 + 2?");
        asked.messages.push(earlier);
        asked.messages.push(Message::user("And 3 + 3?"));
        asked
    };
    let without = bounded(provider().count_input_tokens(conversation("")))
        .await
        .unwrap()
        .unwrap();
    let with = bounded(provider().count_input_tokens(conversation(
        "Two and two make four, as counting on fingers shows.",
    )))
    .await
    .unwrap()
    .unwrap();
    assert!(
        with > without + 8,
        "{with} tokens with reasoning, {without} without"
    );
}

/// A Hermes tool template (as Qwen's) that shows earlier turns' reasoning
/// in `<think>` tags and opens one at the end of the prompt, as Qwen3's
/// thinking models do, unless thinking is turned off: the model may then
/// open its own.
const THINKING_TOOLS_TEMPLATE: &str = "{% if tools %}<|im_start|>system\n\
Tools you may call, one JSON signature a line:\n<tools>\n\
{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n\
To call one, answer with <tool_call>\n{\"name\": NAME, \"arguments\": ARGUMENTS}\n\
</tool_call><|im_end|>\n{% endif %}\
{% for m in messages %}<|im_start|>{{ m.role }}\n\
{% if m.reasoning_content is string %}<think>{{ m.reasoning_content }}</think>{% endif %}\
{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n\
{% if not (enable_thinking is defined and enable_thinking is false) %}<think>\n{% endif %}";

/// A call written inside the thinking is thinking: the engine's scanner
/// does not take it for a call (the grammar's side is tested on its own,
/// in `generate.rs`). When the model may open its thinking but writes a
/// call instead, the call is a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_drafted_while_thinking_is_no_call() {
    let Some(qwen) = freehold_test_support::test_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    else {
        return;
    };
    // Alone on the cores: beside it, the SmolLM2 tests' answers may take
    // longer than they are given.
    let _model_turn = freehold_test_support::one_model_at_a_time().await;
    let copy = with_template(&qwen, THINKING_TOOLS_TEMPLATE);
    let weather = freehold_protocol::ToolSpec {
        name: "get_weather".into(),
        description: "Gets the current weather in a city.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
        strict: false,
    };
    let ask = |reasoning| {
        let mut asked = request(&copy.0, "What is the weather in Paris? Call the tool.");
        asked.tools = vec![weather.clone()];
        asked.max_tokens = Some(64);
        asked.reasoning = reasoning;
        asked
    };

    // The prompt opened `<think>`, and Qwen2.5, which does not know the
    // tag, writes its call at once: inside the thinking, never closed.
    let drafted = bounded(events(ask(None))).await;
    let reasoning: String = drafted
        .iter()
        .filter_map(|event| match event {
            StreamEvent::ReasoningDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(reasoning.contains("get_weather"), "{drafted:?}");
    assert!(
        !drafted
            .iter()
            .any(|event| matches!(event, StreamEvent::ToolCallStart { .. })),
        "{drafted:?}"
    );

    // Thinking off: the model may open it (the template knows the tags),
    // and writes its call instead.
    let answered = bounded(provider().complete(ask(Some(freehold_protocol::ReasoningEffort::Off))))
        .await
        .unwrap();
    let calls: Vec<&freehold_protocol::ToolCall> = answered
        .message
        .content
        .iter()
        .filter_map(|part| match part {
            freehold_protocol::ContentPart::ToolCall(call) => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{answered:?}");
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(answered.stop_reason, StopReason::ToolUse);
}
