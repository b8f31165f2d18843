//! Shared machinery that turns a provider's stream items into well-ordered
//! [`StreamEvent`]s, so each wire decoder only says what its chunks mean.

use std::collections::BTreeMap;

use freehold_protocol::{LlmError, StopReason, StreamEvent, Usage};
use futures::StreamExt;

use crate::http::BoxStream;
use crate::provider::EventStream;

/// Collects events in the order [`StreamEvent`] documents: it closes tool
/// calls that the protocol never closes explicitly, keeps the latest usage,
/// and holds the stop reason back until the stream ends, so that a usage
/// chunk arriving after `finish_reason` (OpenAI's `include_usage`) still comes
/// before [`StreamEvent::Stop`].
#[derive(Debug, Default)]
pub struct StreamAssembler {
    ready: Vec<StreamEvent>,
    started: bool,
    /// Open tool calls: stream index → assigned to whether args were seen.
    open_calls: BTreeMap<u32, ()>,
    next_call_index: u32,
    usage: Option<Usage>,
    /// The prompt's side of the last [`StreamEvent::UsageSoFar`] sent (input,
    /// cached and cache-written tokens), so that one goes out only when
    /// that changes.
    input_so_far: Option<(u64, u64, u64)>,
    stop: Option<StopReason>,
    finished: bool,
    origin: Option<&'static str>,
    /// Whether [`StreamEvent::RefusalStart`] went out.
    refusing: bool,
    /// Context edits reported, held for the end.
    context_edits: Vec<freehold_protocol::AppliedContextEdit>,
    /// What the provider said of its refusal, held for the end.
    refusal_details: Option<freehold_protocol::RefusalDetails>,
}

impl StreamAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the start of the answer (only the first call emits).
    pub fn start(&mut self, id: Option<String>, model: Option<String>) {
        if !self.started {
            self.started = true;
            self.ready.push(StreamEvent::Start { id, model });
        }
    }

    /// Context edits the provider made before its model read the
    /// conversation (Anthropic's `context_management.applied_edits`);
    /// emitted by [`StreamAssembler::finish`], with the usage.
    pub fn context_edited(&mut self, edits: Vec<freehold_protocol::AppliedContextEdit>) {
        self.context_edits.extend(edits);
    }

    /// What the provider says of its refusal to answer (Anthropic's
    /// `stop_details`); emitted by [`StreamAssembler::finish`] when the
    /// answer ends as a refusal.
    pub fn refusal_details(&mut self, details: freehold_protocol::RefusalDetails) {
        self.refusal_details = Some(details);
    }

    /// Answer text.
    pub fn text(&mut self, text: &str) {
        if !text.is_empty() {
            self.ready.push(StreamEvent::TextDelta {
                text: text.to_owned(),
            });
        }
    }

    /// The model's refusal to answer (OpenAI's `refusal`): text, after a
    /// [`StreamEvent::RefusalStart`] (once) that marks it as a refusal.
    pub fn refusal(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !std::mem::replace(&mut self.refusing, true) {
            self.ready.push(StreamEvent::RefusalStart);
        }
        self.text(text);
    }

    /// Reasoning text.
    pub fn reasoning(&mut self, text: &str) {
        self.reasoning_with_id(text, None);
    }

    /// Reasoning text of the reasoning item the provider calls `id`.
    pub fn reasoning_with_id(&mut self, text: &str, id: Option<&str>) {
        if !text.is_empty() {
            self.ready.push(StreamEvent::ReasoningDelta {
                text: text.to_owned(),
                id: id.map(str::to_owned),
            });
        }
    }

    /// Names the wire protocol this stream speaks, stamped on every
    /// reasoning signature (see [`freehold_protocol::Reasoning::origin`]).
    pub fn set_origin(&mut self, protocol: &'static str) {
        self.origin = Some(protocol);
    }

    /// A reasoning signature (or redacted reasoning data).
    pub fn reasoning_signature(&mut self, signature: &str, redacted: bool) {
        self.reasoning_signature_with_id(signature, redacted, None);
    }

    /// A reasoning signature with the provider's id of the reasoning item.
    pub fn reasoning_signature_with_id(
        &mut self,
        signature: &str,
        redacted: bool,
        id: Option<String>,
    ) {
        self.ready.push(StreamEvent::ReasoningSignature {
            signature: signature.to_owned(),
            redacted,
            id,
            origin: self.origin.map(str::to_owned),
        });
    }

    /// Opens a tool call and returns its index in the answer (indexes are
    /// assigned in order of starts, whatever the provider numbered them).
    pub fn tool_start(&mut self, id: &str, name: &str) -> u32 {
        self.tool_start_signed(id, name, None)
    }

    /// [`Self::tool_start`] for a call whose signature comes with it
    /// (Gemini's); the decoder gives it to [`Self::tool_end`] too.
    pub fn tool_start_signed(&mut self, id: &str, name: &str, signature: Option<String>) -> u32 {
        let index = self.next_call_index;
        self.next_call_index += 1;
        self.open_calls.insert(index, ());
        self.ready.push(StreamEvent::ToolCallStart {
            index,
            id: id.to_owned(),
            name: name.to_owned(),
            signature,
        });
        index
    }

    /// More arguments of an open call.
    pub fn tool_args(&mut self, index: u32, delta: &str) {
        if !delta.is_empty() && self.open_calls.contains_key(&index) {
            self.ready.push(StreamEvent::ToolCallArgsDelta {
                index,
                delta: delta.to_owned(),
            });
        }
    }

    /// Closes a call (a no-op when it is not open).
    pub fn tool_end(&mut self, index: u32, signature: Option<String>) {
        if self.open_calls.remove(&index).is_some() {
            self.ready
                .push(StreamEvent::ToolCallEnd { index, signature });
        }
    }

    /// Closes every open call.
    pub fn close_tool_calls(&mut self) {
        let open: Vec<u32> = self.open_calls.keys().copied().collect();
        for index in open {
            self.tool_end(index, None);
        }
    }

    /// Whether any tool call was started.
    pub fn has_tool_calls(&self) -> bool {
        self.next_call_index > 0
    }

    /// Replaces the usage reported so far (providers send cumulative usage).
    pub fn usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// Adds the usage counted so far as [`StreamEvent::UsageSoFar`] while
    /// the answer is under way, when its prompt side is new: a stream cut
    /// off before its end (a client leaving, say) is then charged the
    /// prompt as the provider counted it (cache reads at their price, not
    /// estimated as fresh input). Done as the events are taken, after the
    /// whole of a provider's item is read, so that an item that both counts
    /// and ends the answer (a final chunk) adds none: the usage that ends
    /// the answer goes out from [`Self::finish`].
    fn report_so_far(&mut self) {
        let Some(usage) = self.usage else { return };
        if !self.started || self.stop.is_some() || self.finished {
            return;
        }
        let prompt = (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
        );
        if prompt == (0, 0, 0) || self.input_so_far == Some(prompt) {
            return;
        }
        self.input_so_far = Some(prompt);
        self.ready.push(StreamEvent::UsageSoFar(usage));
    }

    /// Merges a partial usage report: fields that are non-zero replace the
    /// earlier ones (Anthropic sends input counts at the start and output
    /// counts at the end).
    pub fn merge_usage(&mut self, usage: Usage) {
        let current = self.usage.get_or_insert_with(Usage::default);
        let pick = |new: u64, old: u64| if new > 0 { new } else { old };
        *current = Usage {
            input_tokens: pick(usage.input_tokens, current.input_tokens),
            cached_input_tokens: pick(usage.cached_input_tokens, current.cached_input_tokens),
            cache_write_tokens: pick(usage.cache_write_tokens, current.cache_write_tokens),
            cache_write_1h_tokens: pick(usage.cache_write_1h_tokens, current.cache_write_1h_tokens),
            output_tokens: pick(usage.output_tokens, current.output_tokens),
            reasoning_tokens: pick(usage.reasoning_tokens, current.reasoning_tokens),
        };
    }

    /// Records why the answer stopped; emitted by [`StreamAssembler::finish`].
    pub fn stop(&mut self, reason: StopReason) {
        self.stop = Some(reason);
    }

    /// Whether a stop reason was recorded.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// The events completed so far.
    pub fn take(&mut self) -> Vec<StreamEvent> {
        self.report_so_far();
        std::mem::take(&mut self.ready)
    }

    /// Ends the answer: closes open calls, then emits usage and stop.
    /// Returns `None` when no stop reason was ever recorded — the stream was
    /// cut short.
    pub fn finish(&mut self) -> Option<Vec<StreamEvent>> {
        let reason = self.stop.take()?;
        self.finished = true;
        self.close_tool_calls();
        // Providers that report "stop" after a tool call mean "tool use",
        // also when they name a stop string (vLLM finishes a forced call
        // with `stop`): the calls are what the caller must act on.
        let reason = match reason {
            StopReason::EndTurn | StopReason::StopSequence(_) if self.has_tool_calls() => {
                StopReason::ToolUse
            }
            other => other,
        };
        if let Some(usage) = self.usage.take() {
            self.ready.push(StreamEvent::Usage(usage));
        }
        if !self.context_edits.is_empty() {
            let edits = std::mem::take(&mut self.context_edits);
            self.ready.push(StreamEvent::ContextEdited { edits });
        }
        if let Some(details) = self.refusal_details.take()
            && reason == StopReason::Refusal
        {
            self.ready.push(StreamEvent::RefusalDetails(details));
        }
        self.ready.push(StreamEvent::Stop { reason });
        Some(self.take())
    }
}

/// Decodes one protocol's stream items (SSE events, NDJSON values) into
/// answer events.
pub trait WireDecoder<T>: Send + 'static {
    /// Handles one item. Returning [`Decoded::Done`] ends the
    /// stream (a `[DONE]` marker or a final chunk).
    ///
    /// # Errors
    /// A malformed item, or an error the provider sent mid-stream.
    fn decode(&mut self, item: T, out: &mut StreamAssembler) -> Result<Decoded, LlmError>;

    /// The error to report when the stream ends without a stop reason.
    fn truncated(&self) -> LlmError;
}

/// Whether a decoded item ended the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// More items may follow.
    More,
    /// The answer is complete; the rest of the connection is ignored.
    Done,
}

/// Runs `decoder` over `items`, yielding well-ordered events; after an error
/// the stream ends.
pub fn decode_stream<T, D>(items: BoxStream<T>, decoder: D) -> EventStream
where
    T: Send + 'static,
    D: WireDecoder<T>,
{
    struct State<T, D> {
        items: BoxStream<T>,
        decoder: D,
        assembler: StreamAssembler,
        done: bool,
    }
    let state = State {
        items,
        decoder,
        assembler: StreamAssembler::new(),
        done: false,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            let batch: Vec<Result<StreamEvent, LlmError>> = match state.items.next().await {
                Some(Ok(item)) => match state.decoder.decode(item, &mut state.assembler) {
                    Ok(Decoded::More) => state.assembler.take().into_iter().map(Ok).collect(),
                    Ok(Decoded::Done) => {
                        state.done = true;
                        finish(&mut state.assembler, &state.decoder)
                    }
                    Err(error) => {
                        state.done = true;
                        let mut batch: Vec<_> =
                            state.assembler.take().into_iter().map(Ok).collect();
                        batch.push(Err(error));
                        batch
                    }
                },
                Some(Err(error)) => {
                    state.done = true;
                    vec![Err(error)]
                }
                None => {
                    state.done = true;
                    finish(&mut state.assembler, &state.decoder)
                }
            };
            if !batch.is_empty() {
                return Some((futures::stream::iter(batch), state));
            }
        }
    })
    .flatten();
    Box::pin(events)
}

fn finish<T, D: WireDecoder<T>>(
    assembler: &mut StreamAssembler,
    decoder: &D,
) -> Vec<Result<StreamEvent, LlmError>> {
    match assembler.finish() {
        Some(events) => events.into_iter().map(Ok).collect(),
        None => {
            let mut batch: Vec<_> = assembler.take().into_iter().map(Ok).collect();
            batch.push(Err(decoder.truncated()));
            batch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counted_mid_stream_is_reported_once_until_the_prompt_changes() {
        let prompt = Usage {
            input_tokens: 100_010,
            cached_input_tokens: 100_000,
            output_tokens: 1,
            ..Usage::default()
        };
        let mut assembler = StreamAssembler::new();
        // Not before the answer's start: Start stays first.
        assembler.merge_usage(prompt);
        assert!(assembler.take().is_empty());
        assembler.start(None, None);
        assembler.merge_usage(prompt);
        assert_eq!(
            assembler.take(),
            [
                StreamEvent::Start {
                    id: None,
                    model: None
                },
                StreamEvent::UsageSoFar(prompt)
            ]
        );
        // More output, the same prompt: nothing new to report.
        assembler.text("Hi");
        assembler.merge_usage(Usage {
            output_tokens: 5,
            ..Usage::default()
        });
        assert_eq!(
            assembler.take(),
            [StreamEvent::TextDelta { text: "Hi".into() }]
        );
        // The usage that ends the answer is the final one only.
        assembler.stop(StopReason::EndTurn);
        assembler.usage(Usage {
            output_tokens: 6,
            ..prompt
        });
        let end = assembler.finish().unwrap();
        assert_eq!(
            end,
            [
                StreamEvent::Usage(Usage {
                    output_tokens: 6,
                    ..prompt
                }),
                StreamEvent::Stop {
                    reason: StopReason::EndTurn
                }
            ]
        );
    }

    #[test]
    fn usage_after_stop_still_precedes_stop_and_calls_are_closed() {
        let mut assembler = StreamAssembler::new();
        assembler.start(None, None);
        let call = assembler.tool_start("c1", "read");
        assembler.tool_args(call, "{}");
        assembler.stop(StopReason::EndTurn);
        assembler.usage(Usage {
            input_tokens: 3,
            output_tokens: 2,
            ..Usage::default()
        });
        let events = assembler.finish().unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: None,
                    model: None
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "c1".into(),
                    name: "read".into(),
                    signature: None,
                },
                StreamEvent::ToolCallArgsDelta {
                    index: 0,
                    delta: "{}".into()
                },
                StreamEvent::ToolCallEnd {
                    index: 0,
                    signature: None
                },
                StreamEvent::Usage(Usage {
                    input_tokens: 3,
                    output_tokens: 2,
                    ..Usage::default()
                }),
                StreamEvent::Stop {
                    reason: StopReason::ToolUse
                },
            ]
        );
    }

    /// A stop string named beside calls (vLLM finishes a forced call with
    /// `stop`): the answer is the calls'.
    #[test]
    fn calls_end_the_answer_whatever_stopped_its_text() {
        for reason in [
            StopReason::EndTurn,
            StopReason::StopSequence(Some("END".into())),
        ] {
            let mut assembler = StreamAssembler::new();
            let call = assembler.tool_start("c1", "read");
            assembler.tool_args(call, "{}");
            assembler.stop(reason);
            let events = assembler.finish().unwrap();
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Stop {
                    reason: StopReason::ToolUse
                })
            );
        }
        let mut assembler = StreamAssembler::new();
        assembler.text("Thought: add");
        assembler.stop(StopReason::StopSequence(Some("END".into())));
        assert_eq!(
            assembler.finish().unwrap().last(),
            Some(&StreamEvent::Stop {
                reason: StopReason::StopSequence(Some("END".into()))
            })
        );
    }

    #[test]
    fn finish_without_stop_reports_truncation() {
        let mut assembler = StreamAssembler::new();
        assembler.text("partial");
        assert!(assembler.finish().is_none());
    }
}
