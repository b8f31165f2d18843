//! Streaming events and the complete answer they add up to.

use serde::{Deserialize, Serialize};

use crate::message::{ContentPart, Message, Reasoning, Role, ToolCall};
use crate::usage::{Timings, Usage};

/// Why the model stopped.
///
/// Serialized as its snake_case name (`"end_turn"`), or as a one-key object
/// for a variant that carries text (`{"stop_sequence": "\nObservation:"}`,
/// `{"other": "…"}`); a stop sequence whose text is unknown is the plain
/// name `"stop_sequence"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "serde_repr::StopReasonRepr",
    into = "serde_repr::StopReasonRepr"
)]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It reached `max_tokens`.
    MaxTokens,
    /// It produced one of the stop sequences: which one, where that is
    /// known (Anthropic says, vLLM and SGLang say, and Freehold knows the
    /// ones it applies itself; OpenAI and Gemini end with a plain "stop").
    StopSequence(Option<String>),
    /// It called one or more tools and waits for their results.
    ToolUse,
    /// The provider's safety filter stopped it.
    ContentFilter,
    /// The provider refused to answer.
    Refusal,
    /// The caller cancelled the request.
    Cancelled,
    /// A reason this crate does not know, as the provider spelled it.
    Other(String),
}

/// The reason as a person reads it: its serialized name (`end_turn`), and
/// the stop sequence quoted where it is known (`stop_sequence "\n\n"`).
impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::StopSequence(None) => "stop_sequence",
            Self::StopSequence(Some(sequence)) => return write!(f, "stop_sequence {sequence:?}"),
            Self::ToolUse => "tool_use",
            Self::ContentFilter => "content_filter",
            Self::Refusal => "refusal",
            Self::Cancelled => "cancelled",
            Self::Other(other) => other,
        };
        f.write_str(name)
    }
}

/// How [`StopReason`] is written: plain names for the variants without
/// text, one-key objects for those with it. A separate shape because serde's
/// derive cannot write one variant both ways.
mod serde_repr {
    use serde::{Deserialize, Serialize};

    use super::StopReason;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub(super) enum Named {
        EndTurn,
        MaxTokens,
        StopSequence,
        ToolUse,
        ContentFilter,
        Refusal,
        Cancelled,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub(super) enum WithText {
        StopSequence(String),
        Other(String),
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum StopReasonRepr {
        Named(Named),
        WithText(WithText),
    }

    impl From<StopReason> for StopReasonRepr {
        fn from(reason: StopReason) -> Self {
            match reason {
                StopReason::EndTurn => Self::Named(Named::EndTurn),
                StopReason::MaxTokens => Self::Named(Named::MaxTokens),
                StopReason::StopSequence(None) => Self::Named(Named::StopSequence),
                StopReason::StopSequence(Some(sequence)) => {
                    Self::WithText(WithText::StopSequence(sequence))
                }
                StopReason::ToolUse => Self::Named(Named::ToolUse),
                StopReason::ContentFilter => Self::Named(Named::ContentFilter),
                StopReason::Refusal => Self::Named(Named::Refusal),
                StopReason::Cancelled => Self::Named(Named::Cancelled),
                StopReason::Other(other) => Self::WithText(WithText::Other(other)),
            }
        }
    }

    impl From<StopReasonRepr> for StopReason {
        fn from(repr: StopReasonRepr) -> Self {
            match repr {
                StopReasonRepr::Named(Named::EndTurn) => Self::EndTurn,
                StopReasonRepr::Named(Named::MaxTokens) => Self::MaxTokens,
                StopReasonRepr::Named(Named::StopSequence) => Self::StopSequence(None),
                StopReasonRepr::Named(Named::ToolUse) => Self::ToolUse,
                StopReasonRepr::Named(Named::ContentFilter) => Self::ContentFilter,
                StopReasonRepr::Named(Named::Refusal) => Self::Refusal,
                StopReasonRepr::Named(Named::Cancelled) => Self::Cancelled,
                StopReasonRepr::WithText(WithText::StopSequence(sequence)) => {
                    Self::StopSequence(Some(sequence))
                }
                StopReasonRepr::WithText(WithText::Other(other)) => Self::Other(other),
            }
        }
    }
}

/// One event of a streamed answer.
///
/// Every stream a client returns follows this order: at most one
/// [`StreamEvent::Start`] first; then text, reasoning and tool-call events
/// (with at most one [`StreamEvent::RefusalStart`] among them, before the
/// text it marks, and anywhere among them any number of
/// [`StreamEvent::UsageSoFar`]);
/// then at most one [`StreamEvent::Usage`], at most one
/// [`StreamEvent::ContextEdited`] and, after a refusal, at most one
/// [`StreamEvent::RefusalDetails`], in any order; and exactly one
/// [`StreamEvent::Stop`] last. Tool-call events carry an `index` that is unique within the answer:
/// `ToolCallStart` comes before the call's argument deltas and `ToolCallEnd`
/// after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The provider accepted the request.
    Start {
        /// The provider's id for this answer, where it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The model actually answering, where the provider says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// More answer text.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// The text that follows is the model's refusal to answer, not an
    /// answer (OpenAI's `refusal`, which structured outputs send in place of
    /// the content): an encoder for such a protocol sends it as a refusal.
    /// The answer ends with [`StopReason::Refusal`]. Consumers that show
    /// text show it as any other.
    RefusalStart,
    /// More reasoning text.
    ReasoningDelta {
        /// The new reasoning text.
        text: String,
        /// The provider's id of the reasoning item it belongs to, where the
        /// provider names it as it starts (OpenAI Responses): an encoder
        /// can then give the item that id from its first event on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The opaque signature closing the current reasoning block; it must be
    /// sent back with the reasoning on the next turn.
    ReasoningSignature {
        /// The signature (or, for redacted reasoning, the opaque data).
        signature: String,
        /// True when the reasoning was redacted by the provider.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redacted: bool,
        /// The provider's id of the reasoning item (OpenAI Responses).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The wire protocol that produced the signature (see
        /// [`crate::Reasoning::origin`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// A tool call begins.
    ToolCallStart {
        /// Position of this call within the answer.
        index: u32,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
        /// The call's opaque signature, when the provider gives it with the
        /// call's start (Gemini sends each call whole, its thought signature
        /// on it): a gateway can then hand it to its client inside the
        /// call's id. The same signature comes on [`StreamEvent::ToolCallEnd`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// More of a tool call's JSON arguments.
    ToolCallArgsDelta {
        /// Which call.
        index: u32,
        /// The next fragment of the JSON text.
        delta: String,
    },
    /// A tool call is complete.
    ToolCallEnd {
        /// Which call.
        index: u32,
        /// An opaque signature to send back with the call (Gemini).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// What the provider has counted so far, before the answer's end: sent
    /// when a count comes mid-stream (Anthropic's `message_start` gives the
    /// prompt's tokens, cache reads and writes included; vLLM's continuous
    /// usage), so that a stream cut off before its [`StreamEvent::Usage`]
    /// can still be charged what the provider counted. Its output count is
    /// whatever the provider had reached when it sent it. A final `Usage`
    /// replaces it.
    UsageSoFar(Usage),
    /// Token usage of the whole answer.
    Usage(Usage),
    /// How long the answer took (providers that measure it; before `Stop`).
    Timings(Timings),
    /// Context edits made to the conversation before the model read it
    /// (Anthropic's context editing, `context_management`), reported just
    /// before [`StreamEvent::Stop`], as Anthropic's API reports them; an
    /// encoder of a protocol that has no place for them ignores them.
    ContextEdited {
        /// The edits, in the order they were made.
        edits: Vec<AppliedContextEdit>,
    },
    /// Why the provider refused to answer, where it says (Anthropic's
    /// `stop_details`): sent just before a [`StreamEvent::Stop`] with
    /// [`StopReason::Refusal`]; an encoder of a protocol that has no place
    /// for it ignores it.
    RefusalDetails(RefusalDetails),
    /// The answer is complete.
    Stop {
        /// Why it ended.
        reason: StopReason,
    },
}

/// What a provider says about its refusal to answer (Anthropic's
/// `stop_details` of `"type": "refusal"`). Either field may be missing:
/// a refusal outside the provider's named categories has no category, and
/// one without an explanation none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalDetails {
    /// The policy category that triggered the refusal, as the provider
    /// names it (Anthropic: `cyber`, `bio`, `frontier_llm`,
    /// `reasoning_extraction`, `general_harms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The provider's explanation, for people to read; not stable text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// A context edit made to a conversation before the model read it, as
/// Anthropic's API reports one (`context_management.applied_edits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedContextEdit {
    /// The strategy, as Anthropic names it (`clear_tool_uses_20250919`,
    /// `clear_thinking_20251015`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The input tokens the edit took out.
    #[serde(default)]
    pub cleared_input_tokens: u64,
    /// The tool uses it cleared (tool-use edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_tool_uses: Option<u64>,
    /// The assistant turns whose thinking it cleared (thinking edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_thinking_turns: Option<u64>,
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The provider's id for this answer, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The model that answered, where the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The assistant message: reasoning, text and tool calls in order.
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
    /// Why the answer ended.
    pub stop_reason: StopReason,
    /// How long it took, where the provider measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// Context edits made to the conversation before the model read it
    /// ([`StreamEvent::ContextEdited`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_edits: Vec<AppliedContextEdit>,
    /// Why the provider refused, where it says
    /// ([`StreamEvent::RefusalDetails`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_details: Option<RefusalDetails>,
}

impl ChatResponse {
    /// The answer's stream of events, in the order a stream would carry them;
    /// the inverse of [`ResponseBuilder`].
    pub fn to_events(&self) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Start {
            id: self.id.clone(),
            model: self.model.clone(),
        }];
        let mut index = 0u32;
        // A refusal's text is marked as one before it starts.
        let mut refusal = self.stop_reason == StopReason::Refusal;
        for part in &self.message.content {
            match part {
                ContentPart::Text { text } => {
                    if std::mem::take(&mut refusal) {
                        events.push(StreamEvent::RefusalStart);
                    }
                    events.push(StreamEvent::TextDelta { text: text.clone() })
                }
                ContentPart::Reasoning(reasoning) => {
                    if !reasoning.text.is_empty() {
                        events.push(StreamEvent::ReasoningDelta {
                            text: reasoning.text.clone(),
                            id: reasoning.id.clone(),
                        });
                    }
                    if let Some(signature) = &reasoning.signature {
                        events.push(StreamEvent::ReasoningSignature {
                            signature: signature.clone(),
                            redacted: reasoning.redacted,
                            id: reasoning.id.clone(),
                            origin: reasoning.origin.clone(),
                        });
                    }
                }
                ContentPart::ToolCall(call) => {
                    events.push(StreamEvent::ToolCallStart {
                        index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                        signature: call.signature.clone(),
                    });
                    if !call.arguments.is_empty() {
                        events.push(StreamEvent::ToolCallArgsDelta {
                            index,
                            delta: call.arguments.clone(),
                        });
                    }
                    events.push(StreamEvent::ToolCallEnd {
                        index,
                        signature: call.signature.clone(),
                    });
                    index += 1;
                }
                ContentPart::Image { .. }
                | ContentPart::Document(_)
                | ContentPart::ToolResult(_) => {}
            }
        }
        events.push(StreamEvent::Usage(self.usage));
        if let Some(timings) = self.timings {
            events.push(StreamEvent::Timings(timings));
        }
        if !self.context_edits.is_empty() {
            events.push(StreamEvent::ContextEdited {
                edits: self.context_edits.clone(),
            });
        }
        if let Some(details) = &self.refusal_details {
            events.push(StreamEvent::RefusalDetails(details.clone()));
        }
        events.push(StreamEvent::Stop {
            reason: self.stop_reason.clone(),
        });
        events
    }
}

/// Folds stream events into a [`ChatResponse`].
///
/// Consecutive text deltas join into one text part and consecutive reasoning
/// deltas into one reasoning part; tool calls keep the order of their starts.
#[derive(Debug, Default)]
pub struct ResponseBuilder {
    id: Option<String>,
    model: Option<String>,
    parts: Vec<ContentPart>,
    /// Maps a stream's tool-call index to the position of its part.
    open_calls: Vec<(u32, usize)>,
    usage: Usage,
    timings: Option<Timings>,
    stop_reason: Option<StopReason>,
    context_edits: Vec<AppliedContextEdit>,
    refusal_details: Option<RefusalDetails>,
}

impl ResponseBuilder {
    /// Adds one event.
    pub fn push(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Start { id, model } => {
                self.id = id.clone().or(self.id.take());
                self.model = model.clone().or(self.model.take());
            }
            StreamEvent::TextDelta { text } => match self.parts.last_mut() {
                Some(ContentPart::Text { text: last }) => last.push_str(text),
                _ => self.parts.push(ContentPart::Text { text: text.clone() }),
            },
            // The stop reason says the answer was a refusal.
            StreamEvent::RefusalStart => {}
            StreamEvent::ReasoningDelta { text, id } => match self.parts.last_mut() {
                // The same reasoning block: unsigned yet, and not another of
                // the provider's items.
                Some(ContentPart::Reasoning(last))
                    if last.signature.is_none()
                        && (last.id.is_none() || id.is_none() || last.id == *id) =>
                {
                    last.text.push_str(text);
                    if last.id.is_none() {
                        last.id.clone_from(id);
                    }
                }
                _ => self.parts.push(ContentPart::Reasoning(Reasoning {
                    text: text.clone(),
                    id: id.clone(),
                    ..Reasoning::default()
                })),
            },
            StreamEvent::ReasoningSignature {
                signature,
                redacted,
                id,
                origin,
            } => match self.parts.last_mut() {
                Some(ContentPart::Reasoning(last)) if last.signature.is_none() && !redacted => {
                    last.signature = Some(signature.clone());
                    last.id = id.clone().or(last.id.take());
                    last.origin = origin.clone();
                }
                _ => self.parts.push(ContentPart::Reasoning(Reasoning {
                    text: String::new(),
                    signature: Some(signature.clone()),
                    redacted: *redacted,
                    id: id.clone(),
                    origin: origin.clone(),
                })),
            },
            StreamEvent::ToolCallStart {
                index,
                id,
                name,
                signature,
            } => {
                self.open_calls.push((*index, self.parts.len()));
                self.parts.push(ContentPart::ToolCall(ToolCall {
                    signature: signature.clone(),
                    ..ToolCall::new(id.clone(), name.clone(), "")
                }));
            }
            StreamEvent::ToolCallArgsDelta { index, delta } => {
                if let Some(call) = self.call_mut(*index) {
                    call.arguments.push_str(delta);
                }
            }
            StreamEvent::ToolCallEnd { index, signature } => {
                if let (Some(call), Some(signature)) = (self.call_mut(*index), signature) {
                    call.signature = Some(signature.clone());
                }
            }
            StreamEvent::UsageSoFar(usage) | StreamEvent::Usage(usage) => self.usage = *usage,
            StreamEvent::Timings(timings) => self.timings = Some(*timings),
            StreamEvent::ContextEdited { edits } => self.context_edits.extend_from_slice(edits),
            StreamEvent::RefusalDetails(details) => self.refusal_details = Some(details.clone()),
            StreamEvent::Stop { reason } => self.stop_reason = Some(reason.clone()),
        }
    }

    fn call_mut(&mut self, index: u32) -> Option<&mut ToolCall> {
        let position = self
            .open_calls
            .iter()
            .rev()
            .find(|(open, _)| *open == index)
            .map(|(_, position)| *position)?;
        match self.parts.get_mut(position) {
            Some(ContentPart::ToolCall(call)) => Some(call),
            _ => None,
        }
    }

    /// Whether a [`StreamEvent::Stop`] was pushed.
    pub fn is_stopped(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// The answer so far. Without a stop event, the stop reason is
    /// [`StopReason::ToolUse`] when tool calls were made and
    /// [`StopReason::EndTurn`] otherwise.
    pub fn finish(self) -> ChatResponse {
        let has_calls = self
            .parts
            .iter()
            .any(|part| matches!(part, ContentPart::ToolCall(_)));
        let stop_reason = self.stop_reason.unwrap_or(if has_calls {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        });
        ChatResponse {
            id: self.id,
            model: self.model,
            message: Message {
                role: Role::Assistant,
                content: self.parts,
            },
            usage: self.usage,
            stop_reason,
            timings: self.timings,
            context_edits: self.context_edits,
            refusal_details: self.refusal_details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_joins_deltas_and_round_trips_through_events() {
        let events = vec![
            StreamEvent::Start {
                id: Some("r1".into()),
                model: Some("m".into()),
            },
            StreamEvent::ReasoningDelta {
                text: "think".into(),
                id: None,
            },
            StreamEvent::ReasoningDelta {
                text: "ing".into(),
                id: None,
            },
            StreamEvent::ReasoningSignature {
                signature: "sig".into(),
                redacted: false,
                id: None,
                origin: Some("anthropic".into()),
            },
            StreamEvent::TextDelta { text: "a".into() },
            StreamEvent::TextDelta { text: "b".into() },
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
            StreamEvent::ToolCallEnd {
                index: 0,
                signature: None,
            },
            StreamEvent::ToolCallEnd {
                index: 1,
                signature: Some("g".into()),
            },
            StreamEvent::Usage(Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            }),
            StreamEvent::Stop {
                reason: StopReason::ToolUse,
            },
        ];
        let mut builder = ResponseBuilder::default();
        for event in &events {
            builder.push(event);
        }
        let response = builder.finish();
        assert_eq!(response.message.text(), "ab");
        let calls: Vec<_> = response.message.tool_calls().cloned().collect();
        assert_eq!(
            calls,
            vec![
                ToolCall::new("c0", "read", "{}"),
                ToolCall {
                    signature: Some("g".into()),
                    ..ToolCall::new("c1", "grep", "{\"q\":1}")
                },
            ]
        );
        assert_eq!(
            response.message.content[0],
            ContentPart::Reasoning(Reasoning {
                text: "thinking".into(),
                signature: Some("sig".into()),
                redacted: false,
                id: None,
                origin: Some("anthropic".into()),
            })
        );

        let mut again = ResponseBuilder::default();
        for event in response.to_events() {
            again.push(&event);
        }
        assert_eq!(again.finish(), response);
    }

    #[test]
    fn stop_reason_defaults_from_content() {
        let mut builder = ResponseBuilder::default();
        builder.push(&StreamEvent::ToolCallStart {
            index: 0,
            id: "x".into(),
            name: "t".into(),
            signature: None,
        });
        assert_eq!(builder.finish().stop_reason, StopReason::ToolUse);
        assert_eq!(
            ResponseBuilder::default().finish().stop_reason,
            StopReason::EndTurn
        );
    }

    #[test]
    fn stop_reasons_are_written_as_names_or_one_key_objects() {
        let written = [
            (StopReason::EndTurn, r#""end_turn""#),
            (StopReason::MaxTokens, r#""max_tokens""#),
            (StopReason::ToolUse, r#""tool_use""#),
            (StopReason::ContentFilter, r#""content_filter""#),
            (StopReason::Refusal, r#""refusal""#),
            (StopReason::StopSequence(None), r#""stop_sequence""#),
            (
                StopReason::StopSequence(Some("\nObservation:".into())),
                r#"{"stop_sequence":"\nObservation:"}"#,
            ),
            (StopReason::Other("pause".into()), r#"{"other":"pause"}"#),
            (StopReason::Cancelled, r#""cancelled""#),
        ];
        for (reason, json) in written {
            assert_eq!(serde_json::to_string(&reason).unwrap(), json);
            assert_eq!(serde_json::from_str::<StopReason>(json).unwrap(), reason);
        }
        for unknown in [r#""stopped""#, r#""other""#, r#"{"end_turn": "x"}"#] {
            assert!(
                serde_json::from_str::<StopReason>(unknown).is_err(),
                "{unknown}"
            );
        }
        assert_eq!(
            StopReason::StopSequence(Some("\n\n".into())).to_string(),
            r#"stop_sequence "\n\n""#
        );
        assert_eq!(StopReason::MaxTokens.to_string(), "max_tokens");
    }
}
