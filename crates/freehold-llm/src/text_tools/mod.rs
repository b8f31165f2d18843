//! Recovers tool calls that small and local models print as text instead of
//! emitting structured calls.
//!
//! Recognised, and only for a tool offered in the request (by
//! [`ToolSpec::name`]):
//! - Hermes / Qwen2.5: `<tool_call>{"name": …, "arguments": …}</tool_call>`,
//!   several per message, with prose around, with the closing tag missing,
//!   with `arguments` as a JSON-encoded string or named `parameters`;
//! - Qwen3-Coder XML: `<function=NAME><parameter=KEY>value</parameter></function>`,
//!   inside `<tool_call>` tags or not; values are converted by the tool's
//!   JSON-Schema property types;
//! - a bare JSON call (`{"name", "arguments" | "parameters"}` or OpenAI's
//!   `{"type": "function", "function": {…}}`), or an array of them, that is the
//!   whole message or a whole fenced code block.
//!
//! Text that holds no recoverable call is left exactly as it was.
//!
//! Entry points: [`recover`] for a text, [`recover_in_response`] for a
//! complete answer, [`recover_in_stream`] for a streamed one, and
//! [`RecoveringProvider`] to apply them to every request offering tools.
//!
//! ```
//! use freehold_llm::text_tools::recover;
//! use freehold_protocol::ToolSpec;
//!
//! let tools = [ToolSpec {
//!     name: "read".into(),
//!     description: "Reads a file".into(),
//!     parameters: serde_json::json!({"type": "object"}),
//!     strict: false,
//! }];
//! let text = "Let me look.\n<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>";
//! let recovered = recover(text, &tools).unwrap();
//! assert_eq!(recovered.text, "Let me look.");
//! assert_eq!(recovered.calls[0].name, "read");
//! assert_eq!(recovered.calls[0].arguments, r#"{"path":"a.rs"}"#);
//! assert!(recover("No call here.", &tools).is_none());
//! ```

mod parse;
mod provider;
mod stream;

use freehold_protocol::{ChatResponse, ContentPart, StopReason, ToolCall, ToolSpec};

pub use provider::RecoveringProvider;

use crate::provider::EventStream;

/// Tool calls recovered from a text, and the prose around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The calls, in the order they were printed, each with a fresh
    /// `call_…` id and compact JSON object arguments.
    pub calls: Vec<ToolCall>,
    /// The rest of the text, calls removed, trimmed (may be empty).
    pub text: String,
}

/// Finds the tool calls printed in `text` that name one of `tools`.
///
/// Returns `None` when there is none: the text is then to be used as it is.
pub fn recover(text: &str, tools: &[ToolSpec]) -> Option<Recovered> {
    let spans = parse::find_spans(text, tools);
    if spans.is_empty() {
        return None;
    }
    let remaining = parse::remove_spans(text, &spans);
    Some(Recovered {
        calls: spans.into_iter().flat_map(|span| span.calls).collect(),
        text: remaining.trim().to_owned(),
    })
}

/// Recovers printed calls in a complete answer that has no structured call:
/// its text parts are replaced by the remaining prose (one part, where the
/// first one was; none when it is empty), the calls are appended, and the
/// stop reason becomes [`StopReason::ToolUse`]. Returns whether anything was
/// recovered; when not, the response is unchanged.
pub fn recover_in_response(response: &mut ChatResponse, tools: &[ToolSpec]) -> bool {
    if response.message.tool_calls().next().is_some() {
        return false;
    }
    let Some(recovered) = recover(&response.message.text_content(), tools) else {
        return false;
    };
    let mut text = (!recovered.text.is_empty()).then_some(ContentPart::Text {
        text: recovered.text,
    });
    let parts = std::mem::take(&mut response.message.content);
    for part in parts {
        match part {
            ContentPart::Text { .. } => response.message.content.extend(text.take()),
            other => response.message.content.push(other),
        }
    }
    response
        .message
        .content
        .extend(recovered.calls.into_iter().map(ContentPart::ToolCall));
    response.stop_reason = StopReason::ToolUse;
    true
}

/// Recovers printed calls in a streamed answer.
///
/// Text deltas pass through at once until the text could be the start of a
/// call: a `<tool_call>` or `<function=` tag (a partial one at the end of the
/// text waits for the next delta), a fenced block that may hold a JSON call
/// (released as soon as it cannot), or an answer whose first non-blank
/// character is `{` or `[` (released as soon as it is not one JSON call).
/// Blanks at the end of the text so far also wait for what follows them.
///
/// At [`freehold_protocol::StreamEvent::Stop`] the held text is parsed:
/// recovered calls are emitted as tool-call events (indexes after any the
/// stream had), preceded by the remaining prose, and the stop reason becomes
/// [`StopReason::ToolUse`]; with no call the held text is emitted unchanged.
/// Usage is held until then so that it still comes just before the stop.
/// A stream that has structured tool calls is left alone (what was held is
/// released before its first call); errors pass through, after what was held.
pub fn recover_in_stream(stream: EventStream, tools: Vec<ToolSpec>) -> EventStream {
    Box::pin(stream::RecoverStream::new(stream, tools))
}

/// What recovery reads of the offered `tools`, kept while the request is
/// away at the provider: each tool's name and its properties' `type`s. A
/// coding agent's tool schemas are tens of kilobytes of descriptions that
/// recovery never reads: copying them whole cost some 170,000
/// instructions for a Claude Code request, the view 75,000
/// (`bench/gateway-instructions`).
pub(crate) fn recovery_view(tools: &[ToolSpec]) -> Vec<ToolSpec> {
    use serde_json::{Map, Value};
    tools
        .iter()
        .map(|tool| {
            let mut properties = Map::new();
            if let Some(Value::Object(offered)) = tool.parameters.get("properties") {
                for (name, schema) in offered {
                    let mut kept = Map::new();
                    if let Some(kind) = schema.get("type") {
                        kept.insert("type".to_owned(), kind.clone());
                    }
                    properties.insert(name.clone(), Value::Object(kept));
                }
            }
            let mut parameters = Map::new();
            parameters.insert("properties".to_owned(), Value::Object(properties));
            ToolSpec {
                name: tool.name.clone(),
                description: String::new(),
                parameters: Value::Object(parameters),
                strict: tool.strict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{Message, Reasoning, Role, Usage};
    use serde_json::json;

    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "read".into(),
            description: "Reads a file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            strict: false,
        }]
    }

    fn response(content: Vec<ContentPart>) -> ChatResponse {
        ChatResponse {
            id: None,
            model: None,
            message: Message {
                role: Role::Assistant,
                content,
            },
            usage: Usage::default(),
            stop_reason: StopReason::EndTurn,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        }
    }

    fn text(text: &str) -> ContentPart {
        ContentPart::Text { text: text.into() }
    }

    #[test]
    fn the_recovery_view_recovers_what_the_whole_tools_do() {
        let tools = vec![ToolSpec {
            name: "search".into(),
            description: "Searches files. ".repeat(100),
            parameters: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "A regex. ".repeat(50)},
                    "limit": {"type": ["integer", "null"], "minimum": 1},
                    "glob": {"anyOf": [{"type": "string"}]},
                },
                "required": ["pattern"],
            }),
            strict: true,
        }];
        let view = recovery_view(&tools);
        assert_eq!(view[0].name, "search");
        assert!(view[0].strict);
        assert_eq!(
            view[0].parameters,
            json!({"properties": {
                "pattern": {"type": "string"},
                "limit": {"type": ["integer", "null"]},
                "glob": {},
            }})
        );
        let printed = [
            "<tool_call>\n<function=search>\n<parameter=pattern>\nfn main\n</parameter>\n\
             <parameter=limit>\n5\n</parameter>\n<parameter=glob>*.rs</parameter>\n\
             </function>\n</tool_call>",
            r#"{"name": "search", "arguments": {"pattern": "x", "limit": 2}}"#,
            "Nothing to call.",
        ];
        // What was recovered, call ids aside (they are random).
        let recovered = |text: &str, tools: &[ToolSpec]| {
            recover(text, tools).map(|found| {
                let calls: Vec<_> = found
                    .calls
                    .into_iter()
                    .map(|call| (call.name, call.arguments))
                    .collect();
                (found.text, calls)
            })
        };
        for text in printed {
            assert_eq!(recovered(text, &tools), recovered(text, &view), "{text}");
        }
        let found = recover(printed[0], &view).expect("the XML call is recovered");
        assert_eq!(
            found.calls[0].arguments,
            r#"{"glob":"*.rs","limit":5,"pattern":"fn main"}"#
        );
    }

    #[test]
    fn response_text_is_replaced_and_calls_appended() {
        let reasoning = ContentPart::Reasoning(Reasoning {
            text: "I should read it.".into(),
            ..Reasoning::default()
        });
        let mut answer = response(vec![
            reasoning.clone(),
            text("Reading.\n<tool_call>\n{\"name\": \"read\", "),
            text("\"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>"),
        ]);
        assert!(recover_in_response(&mut answer, &tools()));
        assert_eq!(answer.stop_reason, StopReason::ToolUse);
        let [first, second, ContentPart::ToolCall(call)] = answer.message.content.as_slice() else {
            panic!("unexpected parts: {:?}", answer.message.content);
        };
        assert_eq!(first, &reasoning);
        assert_eq!(second, &text("Reading."));
        assert_eq!(call.name, "read");
        assert_eq!(call.arguments, r#"{"path":"a.rs"}"#);
        assert!(call.id.starts_with("call_"));
    }

    #[test]
    fn response_of_calls_only_keeps_no_text_part() {
        let mut answer = response(vec![text(
            "<tool_call>\n{\"name\": \"read\", \"arguments\": {}}\n</tool_call>",
        )]);
        assert!(recover_in_response(&mut answer, &tools()));
        assert_eq!(answer.message.content.len(), 1);
        assert!(matches!(
            answer.message.content[0],
            ContentPart::ToolCall(_)
        ));
    }

    #[test]
    fn responses_with_structured_calls_or_no_printed_call_are_untouched() {
        let structured = response(vec![
            text("<tool_call>{\"name\": \"read\"}</tool_call>"),
            ContentPart::ToolCall(ToolCall::new("c1", "read", "{}")),
        ]);
        let mut answer = structured.clone();
        assert!(!recover_in_response(&mut answer, &tools()));
        assert_eq!(answer, structured);

        let plain = response(vec![text("Nothing to call.")]);
        let mut answer = plain.clone();
        assert!(!recover_in_response(&mut answer, &tools()));
        assert_eq!(answer, plain);
    }
}
