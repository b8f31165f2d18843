//! Recovery of tool calls printed as text, on samples shaped like what small
//! and local models actually print, complete and streamed (split everywhere).

// Helpers outside `#[test]` functions panic on purpose too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use freehold_llm::text_tools::{
    Recovered, RecoveringProvider, recover, recover_in_response, recover_in_stream,
};
use freehold_llm::{EventStream, Provider, collect_stream};
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, ErrorKind, LlmError, Message, ModelInfo,
    ResponseBuilder, StopReason, StreamEvent, ToolCall, ToolChoice, ToolSpec, Usage,
};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

fn tool(name: &str, properties: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("The {name} tool."),
        parameters: json!({"type": "object", "properties": properties}),
        strict: false,
    }
}

fn tools() -> Vec<ToolSpec> {
    vec![
        tool(
            "read_file",
            json!({
                "path": {"type": "string"},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"}
            }),
        ),
        tool(
            "write_file",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
        ),
        tool("list_dir", json!({"path": {"type": "string"}})),
        tool(
            "run_tests",
            json!({
                "filter": {"type": "string"},
                "release": {"type": "boolean"},
                "env": {"type": "object"},
                "timeout": {"type": "number"}
            }),
        ),
        tool(
            "get_current_temperature",
            json!({"location": {"type": "string"}, "unit": {"type": "string"}}),
        ),
        tool(
            "get_temperature_date",
            json!({
                "location": {"type": "string"},
                "date": {"type": "string"},
                "unit": {"type": "string"}
            }),
        ),
    ]
}

/// A sample answer and what recovering it must give: `None` when the text
/// must stay as it is.
struct Sample {
    name: &'static str,
    text: &'static str,
    expected: Option<(Vec<(&'static str, Value)>, &'static str)>,
}

const QWEN3_WRITE: &str = "I'll create the library with a test.

<tool_call>
<function=write_file>
<parameter=path>
src/lib.rs
</parameter>
<parameter=content>
/// Adds two numbers.
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[cfg(test)]
mod tests {
    #[test]
    fn adds() {
        assert_eq!(super::add(1, 2), 3);
    }
}

</parameter>
</function>
</tool_call>";

const QWEN3_WRITTEN: &str = "/// Adds two numbers.
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[cfg(test)]
mod tests {
    #[test]
    fn adds() {
        assert_eq!(super::add(1, 2), 3);
    }
}
";

const HERMES_TWO: &str = r#"<tool_call>
{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}
</tool_call>
<tool_call>
{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", "date": "2024-10-01"}}
</tool_call>"#;

fn samples() -> Vec<Sample> {
    vec![
        Sample {
            name: "qwen2.5-coder without closing tag",
            text: "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.rs\"}}\n",
            expected: Some((vec![("read_file", json!({"path": "src/main.rs"}))], "")),
        },
        Sample {
            name: "qwen2.5-coder two unclosed blocks",
            text: "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}}\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"b.rs\"}}\n",
            expected: Some((
                vec![
                    ("read_file", json!({"path": "a.rs"})),
                    ("read_file", json!({"path": "b.rs"})),
                ],
                "",
            )),
        },
        Sample {
            name: "qwen3-coder xml with code",
            text: QWEN3_WRITE,
            expected: Some((
                vec![(
                    "write_file",
                    json!({"path": "src/lib.rs", "content": QWEN3_WRITTEN}),
                )],
                "I'll create the library with a test.",
            )),
        },
        Sample {
            name: "qwen3-coder xml without opening tag, typed values",
            text: "<function=read_file>\n<parameter=path>\nsrc/parse.rs\n</parameter>\n<parameter=offset>\n120\n</parameter>\n<parameter=limit>\n40\n</parameter>\n</function>\n</tool_call>",
            expected: Some((
                vec![(
                    "read_file",
                    json!({"path": "src/parse.rs", "offset": 120, "limit": 40}),
                )],
                "",
            )),
        },
        Sample {
            name: "qwen3-coder xml booleans, objects, numbers, unknown keys",
            text: "Running the tests.\n<tool_call>\n<function=run_tests>\n<parameter=filter>\ntext_tools\n</parameter>\n<parameter=release>\nfalse\n</parameter>\n<parameter=env>\n{\"RUST_LOG\": \"debug\"}\n</parameter>\n<parameter=timeout>\n2.5\n</parameter>\n<parameter=jobs>\n4\n</parameter>\n</function>\n</tool_call>",
            expected: Some((
                vec![(
                    "run_tests",
                    json!({
                        "filter": "text_tools",
                        "release": false,
                        "env": {"RUST_LOG": "debug"},
                        "timeout": 2.5,
                        "jobs": "4"
                    }),
                )],
                "Running the tests.",
            )),
        },
        Sample {
            name: "hermes two calls",
            text: HERMES_TWO,
            expected: Some((
                vec![
                    (
                        "get_current_temperature",
                        json!({"location": "San Francisco, CA, USA"}),
                    ),
                    (
                        "get_temperature_date",
                        json!({"location": "San Francisco, CA, USA", "date": "2024-10-01"}),
                    ),
                ],
                "",
            )),
        },
        Sample {
            name: "hermes with prose around",
            text: "Let me check the tests first.\n\n<tool_call>\n{\"name\": \"run_tests\", \"arguments\": {\"filter\": \"parse\"}}\n</tool_call>\nI'll wait for the result.",
            expected: Some((
                vec![("run_tests", json!({"filter": "parse"}))],
                "Let me check the tests first.\nI'll wait for the result.",
            )),
        },
        Sample {
            name: "hermes arguments as a string",
            text: "<tool_call>\n{\"name\": \"read_file\", \"arguments\": \"{\\\"path\\\": \\\"src/lib.rs\\\", \\\"limit\\\": 50}\"}\n</tool_call>",
            expected: Some((
                vec![("read_file", json!({"path": "src/lib.rs", "limit": 50}))],
                "",
            )),
        },
        Sample {
            name: "hermes parameters key",
            text: "<tool_call>\n{\"name\": \"list_dir\", \"parameters\": {\"path\": \"crates\"}}\n</tool_call>",
            expected: Some((vec![("list_dir", json!({"path": "crates"}))], "")),
        },
        Sample {
            name: "fenced json after prose",
            text: "I'll read the file:\n\n```json\n{\n  \"name\": \"read_file\",\n  \"arguments\": {\n    \"path\": \"Cargo.toml\"\n  }\n}\n```",
            expected: Some((
                vec![("read_file", json!({"path": "Cargo.toml"}))],
                "I'll read the file:",
            )),
        },
        Sample {
            name: "plain fence, openai shape",
            text: "```\n{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"arguments\": \"{\\\"path\\\":\\\"README.md\\\"}\"}}\n```\n",
            expected: Some((vec![("read_file", json!({"path": "README.md"}))], "")),
        },
        Sample {
            name: "bare object (llama style)",
            text: "{\"name\": \"list_dir\", \"parameters\": {\"path\": \".\"}}",
            expected: Some((vec![("list_dir", json!({"path": "."}))], "")),
        },
        Sample {
            name: "bare array",
            text: "\n[\n  {\"name\": \"read_file\", \"arguments\": {\"path\": \"src/a.rs\"}},\n  {\"name\": \"read_file\", \"arguments\": {\"path\": \"src/b.rs\"}}\n]\n",
            expected: Some((
                vec![
                    ("read_file", json!({"path": "src/a.rs"})),
                    ("read_file", json!({"path": "src/b.rs"})),
                ],
                "",
            )),
        },
        Sample {
            name: "bare objects one per line (llama style parallel calls)",
            text: "{\"name\": \"read_file\", \"parameters\": {\"path\": \"src/a.rs\"}}\n{\"name\": \"read_file\", \"parameters\": {\"path\": \"src/b.rs\"}}",
            expected: Some((
                vec![
                    ("read_file", json!({"path": "src/a.rs"})),
                    ("read_file", json!({"path": "src/b.rs"})),
                ],
                "",
            )),
        },
        Sample {
            name: "tags wrapped in a fence",
            text: "Reading it now.\n```xml\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"x.rs\"}}\n</tool_call>\n```",
            expected: Some((
                vec![("read_file", json!({"path": "x.rs"}))],
                "Reading it now.",
            )),
        },
        Sample {
            name: "non-ascii prose",
            text: "Je vais lire « main.rs » 📄 d'abord.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/é.rs\"}}\n</tool_call>",
            expected: Some((
                vec![("read_file", json!({"path": "src/é.rs"}))],
                "Je vais lire « main.rs » 📄 d'abord.",
            )),
        },
        Sample {
            name: "known and unknown blocks",
            text: "<tool_call>\n{\"name\": \"drop_database\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"list_dir\", \"arguments\": {\"path\": \"src\"}}\n</tool_call>",
            expected: Some((
                vec![("list_dir", json!({"path": "src"}))],
                "<tool_call>\n{\"name\": \"drop_database\", \"arguments\": {}}\n</tool_call>",
            )),
        },
        Sample {
            name: "unknown tool",
            text: "<tool_call>\n{\"name\": \"delete_repository\", \"arguments\": {\"confirm\": true}}\n</tool_call>",
            expected: None,
        },
        Sample {
            name: "unknown tool in xml",
            text: "<tool_call>\n<function=rm_rf>\n<parameter=path>\n/\n</parameter>\n</function>\n</tool_call>",
            expected: None,
        },
        Sample {
            name: "invalid json",
            text: "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}\n</tool_call>",
            expected: None,
        },
        Sample {
            name: "bare json that is no call",
            text: "{\"status\": \"ok\", \"files\": 3}",
            expected: None,
        },
        Sample {
            name: "echoed tool definition",
            text: "```json\n{\"name\": \"read_file\", \"description\": \"Reads\", \"parameters\": {\"type\": \"object\"}}\n```",
            expected: None,
        },
        Sample {
            name: "bare json call with prose after",
            text: "{\"name\": \"list_dir\", \"arguments\": {}}\nThat is what I would call.",
            expected: None,
        },
        Sample {
            name: "markdown with code and links",
            text: "[Rust](https://rust-lang.org) is nice.\n\n```rust\nfn main() {\n    println!(\"<tool_call>\");\n}\n```\n\nUse `<function=…>` tags, then:\n```json\n{\"a\": [1, 2]}\n```\n",
            expected: None,
        },
    ]
}

/// A call's name and parsed arguments.
fn shape(calls: &[ToolCall]) -> Vec<(String, Value)> {
    calls
        .iter()
        .map(|call| {
            assert!(is_call_id(&call.id), "bad id {:?}", call.id);
            let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
            assert_eq!(
                call.arguments,
                serde_json::to_string(&arguments).unwrap(),
                "arguments are compact"
            );
            (call.name.clone(), arguments)
        })
        .collect()
}

fn is_call_id(id: &str) -> bool {
    id.strip_prefix("call_").is_some_and(|rest| {
        rest.len() == 24
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    })
}

fn expected_shape(expected: &[(&str, Value)]) -> Vec<(String, Value)> {
    expected
        .iter()
        .map(|(name, arguments)| (name.to_string(), arguments.clone()))
        .collect()
}

#[test]
fn samples_are_recovered_as_expected() {
    let tools = tools();
    for sample in samples() {
        let recovered = recover(sample.text, &tools);
        match (&sample.expected, recovered) {
            (None, None) => {}
            (
                Some((calls, text)),
                Some(Recovered {
                    calls: got,
                    text: got_text,
                }),
            ) => {
                assert_eq!(shape(&got), expected_shape(calls), "{}", sample.name);
                assert_eq!(&got_text, text, "{}", sample.name);
            }
            (expected, got) => panic!(
                "{}: expected {:?}, got {got:?}",
                sample.name,
                expected.is_some()
            ),
        }
    }
}

#[test]
fn nothing_is_recovered_without_matching_tools() {
    for sample in samples() {
        assert_eq!(recover(sample.text, &[]), None, "{}", sample.name);
    }
    let others = [tool("search", json!({}))];
    assert_eq!(recover(HERMES_TWO, &others), None);
}

// ---------------------------------------------------------------------------
// Streaming.

fn answer(chunks: &[&str]) -> Vec<Result<StreamEvent, LlmError>> {
    let mut events = vec![Ok(StreamEvent::Start {
        id: Some("r1".into()),
        model: Some("qwen".into()),
    })];
    events.extend(
        chunks
            .iter()
            .filter(|chunk| !chunk.is_empty())
            .map(|chunk| {
                Ok(StreamEvent::TextDelta {
                    text: chunk.to_string(),
                })
            }),
    );
    events.push(Ok(StreamEvent::Usage(Usage {
        input_tokens: 100,
        output_tokens: 20,
        ..Usage::default()
    })));
    events.push(Ok(StreamEvent::Stop {
        reason: StopReason::EndTurn,
    }));
    events
}

fn adapt(events: Vec<Result<StreamEvent, LlmError>>, tools: Vec<ToolSpec>) -> Vec<StreamEvent> {
    let inner: EventStream = Box::pin(futures::stream::iter(events));
    recover_in_stream(inner, tools)
        .collect::<Vec<_>>()
        .now_or_never()
        .expect("an iterator stream is always ready")
        .into_iter()
        .map(|item| item.unwrap())
        .collect()
}

/// Checks the order documented on `StreamEvent`.
fn assert_well_ordered(events: &[StreamEvent]) {
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })));
    let n = events.len();
    assert!(
        matches!(events[n - 1], StreamEvent::Stop { .. }),
        "{events:?}"
    );
    assert!(matches!(events[n - 2], StreamEvent::Usage(_)), "{events:?}");
    for (position, event) in events.iter().enumerate() {
        match event {
            StreamEvent::Start { .. } => assert_eq!(position, 0),
            StreamEvent::Usage(_) => assert_eq!(position, n - 2),
            StreamEvent::Stop { .. } => assert_eq!(position, n - 1),
            StreamEvent::ToolCallArgsDelta { index, .. }
            | StreamEvent::ToolCallEnd { index, .. } => {
                assert!(events[..position].iter().any(
                    |earlier| matches!(earlier, StreamEvent::ToolCallStart { index: i, .. } if i == index)
                ));
            }
            _ => {}
        }
    }
}

/// What a stream adds up to: its text, its calls and its stop reason.
#[derive(Debug, PartialEq)]
struct Outcome {
    text: String,
    calls: Vec<(String, Value)>,
    stop: StopReason,
}

fn outcome(events: &[StreamEvent]) -> Outcome {
    assert_well_ordered(events);
    let mut builder = ResponseBuilder::default();
    for event in events {
        builder.push(event);
    }
    let response = builder.finish();
    let calls: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
    Outcome {
        text: response.message.text(),
        calls: shape(&calls),
        stop: response.stop_reason,
    }
}

fn streamed(chunks: &[&str]) -> Outcome {
    outcome(&adapt(answer(chunks), tools()))
}

fn char_boundaries(text: &str) -> impl Iterator<Item = usize> + '_ {
    (0..=text.len()).filter(|&at| text.is_char_boundary(at))
}

#[test]
fn a_streamed_sample_matches_its_complete_recovery() {
    let tools = tools();
    for sample in samples() {
        let whole = streamed(&[sample.text]);
        match recover(sample.text, &tools) {
            Some(recovered) => {
                assert_eq!(whole.calls, shape(&recovered.calls), "{}", sample.name);
                assert_eq!(whole.text.trim(), recovered.text, "{}", sample.name);
                assert_eq!(whole.stop, StopReason::ToolUse, "{}", sample.name);
            }
            None => {
                assert_eq!(whole.text, sample.text, "{}", sample.name);
                assert!(whole.calls.is_empty(), "{}", sample.name);
                assert_eq!(whole.stop, StopReason::EndTurn, "{}", sample.name);
            }
        }
    }
}

#[test]
fn splitting_the_text_anywhere_changes_nothing() {
    for sample in samples() {
        let whole = streamed(&[sample.text]);
        for at in char_boundaries(sample.text) {
            let (head, tail) = sample.text.split_at(at);
            assert_eq!(
                streamed(&[head, tail]),
                whole,
                "{} split at {at}",
                sample.name
            );
        }
    }
}

#[test]
fn splitting_the_text_in_three_anywhere_changes_nothing() {
    let picks = [
        "qwen2.5-coder without closing tag",
        "qwen3-coder xml without opening tag, typed values",
        "fenced json after prose",
        "bare array",
        "hermes with prose around",
        "markdown with code and links",
    ];
    for sample in samples()
        .iter()
        .filter(|sample| picks.contains(&sample.name))
    {
        let whole = streamed(&[sample.text]);
        let cuts: Vec<usize> = char_boundaries(sample.text).collect();
        for (i, &first) in cuts.iter().enumerate() {
            for &second in &cuts[i..] {
                let chunks = [
                    &sample.text[..first],
                    &sample.text[first..second],
                    &sample.text[second..],
                ];
                assert_eq!(
                    streamed(&chunks),
                    whole,
                    "{} split at {first} and {second}",
                    sample.name
                );
            }
        }
    }
}

#[test]
fn streaming_one_character_at_a_time_changes_nothing() {
    for sample in samples() {
        let whole = streamed(&[sample.text]);
        let mut chunks = Vec::new();
        let mut rest = sample.text;
        while let Some(c) = rest.chars().next() {
            let (head, tail) = rest.split_at(c.len_utf8());
            chunks.push(head);
            rest = tail;
        }
        assert_eq!(streamed(&chunks), whole, "{}", sample.name);
    }
}

#[test]
fn recovered_calls_are_emitted_as_call_events_before_usage_and_stop() {
    let events = adapt(
        answer(&[
            "Let me look.\n",
            "<tool_call>\n{\"name\": \"list_dir\", ",
            "\"arguments\": {\"path\": \"src\"}}\n</tool_call>",
        ]),
        tools(),
    );
    let [start, text, call_start, args, end, usage, stop] = events.as_slice() else {
        panic!("unexpected events: {events:?}");
    };
    assert!(matches!(start, StreamEvent::Start { .. }));
    assert_eq!(
        text,
        &StreamEvent::TextDelta {
            text: "Let me look.".into()
        }
    );
    let StreamEvent::ToolCallStart {
        index: 0, id, name, ..
    } = call_start
    else {
        panic!("not a call start: {call_start:?}");
    };
    assert!(is_call_id(id));
    assert_eq!(name, "list_dir");
    assert_eq!(
        args,
        &StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: r#"{"path":"src"}"#.into()
        }
    );
    assert_eq!(
        end,
        &StreamEvent::ToolCallEnd {
            index: 0,
            signature: None
        }
    );
    assert!(matches!(usage, StreamEvent::Usage(u) if u.output_tokens == 20));
    assert_eq!(
        stop,
        &StreamEvent::Stop {
            reason: StopReason::ToolUse
        }
    );
}

#[test]
fn plain_prose_streams_through_unchanged() {
    let chunks = [
        "Sure! ",
        "The function `parse` reads ",
        "a < b and",
        " {x}.\n\n",
        "Done.",
    ];
    let events = adapt(answer(&chunks), tools());
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    // Each delta goes on as it comes, bar blanks (and a `<` that might have
    // begun a tag) that wait for the next one.
    assert_eq!(
        texts,
        [
            "Sure!",
            " The function `parse` reads",
            " a < b and",
            " {x}.",
            "\n\nDone."
        ]
    );
    assert_eq!(texts.concat(), chunks.concat());
    assert_eq!(outcome(&events).stop, StopReason::EndTurn);
}

#[test]
fn prose_is_not_delayed_until_the_stream_ends() {
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    let mut stream = recover_in_stream(Box::pin(receiver), tools());
    let mut next = || {
        stream
            .next()
            .now_or_never()
            .map(|item| item.map(Result::unwrap))
    };

    // Nothing yet: the adapter waits for the inner stream.
    assert_eq!(next(), None);
    sender
        .unbounded_send(Ok(StreamEvent::TextDelta {
            text: "Here is the plan.".into(),
        }))
        .unwrap();
    // The inner stream has yielded only this delta and is still open.
    assert_eq!(
        next(),
        Some(Some(StreamEvent::TextDelta {
            text: "Here is the plan.".into()
        }))
    );
    assert_eq!(next(), None);

    // A call starts: held back, not emitted early.
    sender
        .unbounded_send(Ok(StreamEvent::TextDelta {
            text: "\n<tool_".into(),
        }))
        .unwrap();
    assert_eq!(next(), None);
    sender
        .unbounded_send(Ok(StreamEvent::TextDelta {
            text: "call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a\"}}".into(),
        }))
        .unwrap();
    assert_eq!(next(), None);
    sender
        .unbounded_send(Ok(StreamEvent::Stop {
            reason: StopReason::EndTurn,
        }))
        .unwrap();
    drop(sender);
    let mut rest = Vec::new();
    while let Some(Some(event)) = next() {
        rest.push(event);
    }
    assert!(
        matches!(&rest[0], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "read_file")
    );
    assert_eq!(
        rest.last(),
        Some(&StreamEvent::Stop {
            reason: StopReason::ToolUse
        })
    );
}

#[test]
fn streams_with_structured_calls_are_not_recovered() {
    let printed =
        "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a\"}}\n</tool_call>";
    let events = vec![
        Ok(StreamEvent::Start {
            id: None,
            model: None,
        }),
        Ok(StreamEvent::TextDelta {
            text: printed.into(),
        }),
        Ok(StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "list_dir".into(),
            signature: None,
        }),
        Ok(StreamEvent::ToolCallArgsDelta {
            index: 0,
            delta: "{}".into(),
        }),
        Ok(StreamEvent::ToolCallEnd {
            index: 0,
            signature: None,
        }),
        Ok(StreamEvent::TextDelta {
            text: " <tool_call>".into(),
        }),
        Ok(StreamEvent::Usage(Usage::default())),
        Ok(StreamEvent::Stop {
            reason: StopReason::ToolUse,
        }),
    ];
    let expected: Vec<StreamEvent> = events.iter().cloned().map(Result::unwrap).collect();
    assert_eq!(adapt(events, tools()), expected);
}

#[test]
fn errors_pass_through_after_the_held_text() {
    let error = LlmError::new(ErrorKind::Connection, "local", "reset by peer");
    let events = vec![
        Ok(StreamEvent::TextDelta {
            text: "Reading <tool_call>\n{\"na".into(),
        }),
        Err(error.clone()),
    ];
    let inner: EventStream = Box::pin(futures::stream::iter(events));
    let out: Vec<_> = recover_in_stream(inner, tools())
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap();
    assert_eq!(
        out,
        vec![
            Ok(StreamEvent::TextDelta {
                text: "Reading".into()
            }),
            Ok(StreamEvent::TextDelta {
                text: " <tool_call>\n{\"na".into()
            }),
            Err(error),
        ]
    );
}

#[test]
fn a_truncated_stream_releases_what_it_held() {
    let events = vec![Ok(StreamEvent::TextDelta {
        text: "<tool_call>\n{\"name\": \"list_dir\", \"arguments\": {}}".into(),
    })];
    let out = adapt(events, tools());
    assert_eq!(
        out,
        vec![StreamEvent::TextDelta {
            text: "<tool_call>\n{\"name\": \"list_dir\", \"arguments\": {}}".into()
        }]
    );
}

// ---------------------------------------------------------------------------
// The provider wrapper.

#[derive(Debug)]
struct Canned {
    text: String,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Canned {
    fn new(text: &str) -> Arc<Self> {
        Arc::new(Self {
            text: text.into(),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn response(&self) -> ChatResponse {
        ChatResponse {
            id: None,
            model: Some("qwen2.5-coder:7b".into()),
            message: Message::assistant(self.text.clone()),
            usage: Usage::default(),
            stop_reason: StopReason::EndTurn,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        }
    }
}

#[async_trait]
impl Provider for Canned {
    fn name(&self) -> &str {
        "ollama"
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities {
            vision: true,
            ..Capabilities::default()
        }
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        self.requests.lock().unwrap().push(request);
        let events: Vec<Result<StreamEvent, LlmError>> =
            self.response().to_events().into_iter().map(Ok).collect();
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        self.requests.lock().unwrap().push(request);
        Ok(self.response())
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(vec![ModelInfo {
            id: "qwen2.5-coder:7b".into(),
            provider: "ollama".into(),
            context_window: None,
            max_output_tokens: None,
        }])
    }
}

fn request(choice: ToolChoice, tools: Vec<ToolSpec>) -> ChatRequest {
    let mut request = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("Read a.rs")]);
    request.tools = tools;
    request.tool_choice = choice;
    request
}

fn now<T>(future: impl std::future::Future<Output = T>) -> T {
    future
        .now_or_never()
        .expect("the canned provider never waits")
}

const PRINTED: &str = "I'll read it.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>";

#[test]
fn the_provider_recovers_when_tools_are_offered() {
    let inner = Canned::new(PRINTED);
    let provider = RecoveringProvider::new(inner.clone());
    assert_eq!(provider.name(), "ollama");
    assert!(provider.capabilities("m").vision);
    assert_eq!(now(provider.list_models()).unwrap().len(), 1);

    let complete = now(provider.complete(request(ToolChoice::Auto, tools()))).unwrap();
    let stream = now(provider.stream(request(ToolChoice::Required, tools()))).unwrap();
    let streamed = now(collect_stream("ollama", stream)).unwrap();
    for response in [complete, streamed] {
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.message.text(), "I'll read it.");
        let calls: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
        assert_eq!(
            shape(&calls),
            vec![("read_file".to_string(), json!({"path": "a.rs"}))]
        );
    }
    // The request reached the inner provider unchanged.
    assert_eq!(
        inner.requests.lock().unwrap()[0],
        request(ToolChoice::Auto, tools())
    );
}

#[test]
fn the_provider_leaves_requests_without_usable_tools_alone() {
    let provider = RecoveringProvider::new(Canned::new(PRINTED));
    for request in [
        request(ToolChoice::None, tools()),
        request(ToolChoice::Auto, Vec::new()),
    ] {
        let complete = now(provider.complete(request.clone())).unwrap();
        assert_eq!(complete.message.text(), PRINTED);
        assert_eq!(complete.stop_reason, StopReason::EndTurn);
        let stream = now(provider.stream(request)).unwrap();
        let streamed = now(collect_stream("ollama", stream)).unwrap();
        assert_eq!(streamed.message.text(), PRINTED);
        assert_eq!(streamed.message.tool_calls().count(), 0);
    }
}

#[test]
fn recover_in_response_matches_recover() {
    let tools = tools();
    for sample in samples() {
        let mut response = ChatResponse {
            id: None,
            model: None,
            message: Message::assistant(sample.text),
            usage: Usage::default(),
            stop_reason: StopReason::EndTurn,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        };
        let changed = recover_in_response(&mut response, &tools);
        assert_eq!(changed, sample.expected.is_some(), "{}", sample.name);
        match &sample.expected {
            Some((calls, text)) => {
                assert_eq!(response.message.text(), *text, "{}", sample.name);
                let got: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
                assert_eq!(shape(&got), expected_shape(calls), "{}", sample.name);
            }
            None => assert_eq!(response.message.text(), sample.text, "{}", sample.name),
        }
    }
}

/// A refusal is no tool call: text held back for a possible call goes out
/// before the refusal's mark, and the refusal passes unchanged.
#[test]
fn a_refusal_passes_after_the_text_held_before_it() {
    let events = vec![
        Ok(StreamEvent::Start {
            id: None,
            model: None,
        }),
        Ok(StreamEvent::TextDelta {
            text: "ok <".into(),
        }),
        Ok(StreamEvent::RefusalStart),
        Ok(StreamEvent::TextDelta {
            text: "<tool_call> no".into(),
        }),
        Ok(StreamEvent::Stop {
            reason: StopReason::Refusal,
        }),
    ];
    let adapted = adapt(events, tools());
    assert_eq!(
        adapted,
        [
            StreamEvent::Start {
                id: None,
                model: None,
            },
            StreamEvent::TextDelta { text: "ok".into() },
            // Held as the start of a possible call.
            StreamEvent::TextDelta { text: " <".into() },
            StreamEvent::RefusalStart,
            StreamEvent::TextDelta {
                text: "<tool_call> no".into()
            },
            StreamEvent::Stop {
                reason: StopReason::Refusal
            },
        ]
    );
}
