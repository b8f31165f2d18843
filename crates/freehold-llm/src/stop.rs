//! Stop sequences a provider cannot be sent, applied here to its answer.
//!
//! APIs differ in how many stop sequences a request may carry: OpenAI's
//! Chat Completions takes 4 (its reasoning models none), Gemini 5, the
//! Responses API none at all, while Anthropic's clients may send more. A
//! client of such an API sends what the API takes
//! ([`LocalStops::split_off`]) and applies the rest to the answer: the text
//! ends where one of them begins, the stop sequence itself is not shown,
//! and the answer's stop reason is [`StopReason::StopSequence`] naming it,
//! as if the provider had stopped there. A streamed answer is cut as it comes (and
//! the request dropped, so the provider stops generating): text that could
//! be the start of a stop sequence waits for the next piece.
//!
//! Only answer text is matched, as providers do: reasoning and tool-call
//! arguments are not, and neither is a refusal's text.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, LlmError, StopReason, StreamEvent,
};
use futures::{Stream, StreamExt};

use crate::provider::EventStream;

/// The stop sequences of a request that its provider was not sent, to be
/// applied to the answer here. Empty (and then free) for most requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalStops {
    sequences: Vec<String>,
}

impl LocalStops {
    /// Leaves at most `limit` of `request`'s stop sequences in it (the
    /// first ones, which a provider honours itself) and returns the rest.
    /// `None` takes no limit: every sequence stays in the request. Empty
    /// sequences, which would end every answer before it began, are
    /// dropped.
    pub fn split_off(request: &mut ChatRequest, limit: Option<usize>) -> Self {
        request.stop.retain(|sequence| !sequence.is_empty());
        let Some(limit) = limit else {
            return Self::default();
        };
        let sequences = if request.stop.len() > limit {
            request.stop.split_off(limit)
        } else {
            Vec::new()
        };
        if !sequences.is_empty() {
            tracing::debug!(
                sent = request.stop.len(),
                applied_here = sequences.len(),
                "more stop sequences than the provider takes; the rest are applied to the answer"
            );
        }
        Self { sequences }
    }

    /// Takes every stop sequence still in `request` as well, in front of
    /// those already here: for a provider found to refuse them.
    pub fn take_all_from(&mut self, request: &mut ChatRequest) {
        let mut sequences = std::mem::take(&mut request.stop);
        sequences.append(&mut self.sequences);
        self.sequences = sequences;
    }

    /// Moves the first `count` of these sequences (at most all of them)
    /// back to `request`, for a provider that takes that many.
    pub fn give_back_first(&mut self, request: &mut ChatRequest, count: usize) {
        let count = count.min(self.sequences.len());
        let rest = self.sequences.split_off(count);
        request.stop.append(&mut self.sequences);
        self.sequences = rest;
    }

    /// Puts these sequences back at the end of `request`'s, undoing
    /// [`Self::split_off`] (and [`Self::take_all_from`]): for a request
    /// that goes to another client after all.
    pub fn restore(self, request: &mut ChatRequest) {
        request.stop.extend(self.sequences);
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The sequences applied here.
    pub fn sequences(&self) -> &[String] {
        &self.sequences
    }

    /// Ends `response` at the first of these sequences in its text, if one
    /// is there: the text before it stays, everything after it (more text,
    /// tool calls) goes, and the stop reason becomes
    /// [`StopReason::StopSequence`]. Text split into parts (Gemini signs a
    /// text part, which puts a signature between two pieces of text) is
    /// matched as the one text it is. A refusal is left whole.
    pub fn apply_to_response(&self, response: &mut ChatResponse) {
        if self.is_empty() || response.stop_reason == StopReason::Refusal {
            return;
        }
        let content = &mut response.message.content;
        let Some(cut) = self.first_in_parts(content) else {
            return;
        };
        // Signatures between the parts the sequence spans stay, as a
        // stream keeps those that came while its start was held.
        let signatures: Vec<ContentPart> = content[cut.part + 1..=cut.end_part]
            .iter()
            .filter(|part| matches!(part, ContentPart::Reasoning(_)))
            .cloned()
            .collect();
        content.truncate(cut.part + 1);
        if let Some(ContentPart::Text { text }) = content.last_mut() {
            text.truncate(cut.at);
            if text.is_empty() {
                content.pop();
            }
        }
        content.extend(signatures);
        response.stop_reason = StopReason::StopSequence(Some(cut.sequence));
    }

    /// Where the first of these sequences is in `parts`. Consecutive text
    /// parts, and those with only a signature between them, are one text.
    fn first_in_parts(&self, parts: &[ContentPart]) -> Option<Cut> {
        // The run of text so far, and where each of its parts starts in it.
        let mut text = String::new();
        let mut starts: Vec<(usize, usize)> = Vec::new();
        let found_in = |text: &str, starts: &[(usize, usize)]| {
            let (at, sequence) = first_match(text, &self.sequences)?;
            let length = sequence.len();
            let part_of = |byte: usize| {
                starts
                    .iter()
                    .rev()
                    .find(|(_, start)| *start <= byte)
                    .copied()
            };
            let (part, start) = part_of(at)?;
            let (end_part, _) = part_of(at + length - 1)?;
            Some(Cut {
                part,
                at: at - start,
                end_part,
                sequence: sequence.to_owned(),
            })
        };
        for (index, part) in parts.iter().enumerate() {
            match part {
                ContentPart::Text { text: piece } => {
                    starts.push((index, text.len()));
                    text.push_str(piece);
                }
                // A signature between two pieces of text does not end it.
                ContentPart::Reasoning(reasoning) if reasoning.text.is_empty() => {}
                _ => {
                    if let Some(found) = found_in(&text, &starts) {
                        return Some(found);
                    }
                    text.clear();
                    starts.clear();
                }
            }
        }
        found_in(&text, &starts)
    }

    /// `stream` with these sequences applied as it comes; `stream` itself
    /// when there are none.
    pub fn apply_to_stream(self, stream: EventStream) -> EventStream {
        if self.is_empty() {
            return stream;
        }
        Box::pin(StopStream {
            inner: Some(stream),
            matcher: Matcher::new(self.sequences),
            ready: VecDeque::new(),
            waiting: Vec::new(),
            open_calls: Vec::new(),
            refusal: false,
        })
    }
}

/// Where a whole answer is cut ([`LocalStops::apply_to_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cut {
    /// The text part the sequence begins in.
    part: usize,
    /// The byte in that part where it begins.
    at: usize,
    /// The text part it ends in.
    end_part: usize,
    /// The sequence.
    sequence: String,
}

/// The first of `sequences` to be completed in `text`, if any is there:
/// where it begins, and which it is. First completed, as generation meets
/// them: with `["abcd", "bc"]`, `"abcd"` stops at `"bc"`, whether it came
/// whole or in pieces. Of two that end at one place, the one that begins
/// first.
pub fn first_match<'s>(text: &str, sequences: &'s [String]) -> Option<(usize, &'s str)> {
    sequences
        .iter()
        .filter_map(|sequence| Some((text.find(sequence.as_str())?, sequence.as_str())))
        .min_by_key(|&(at, sequence)| (at + sequence.len(), at))
}

/// The length of the longest end of `text` that is the start (and not the
/// whole) of `sequence`, ending on a character boundary: the text that
/// must wait for what follows before it can be shown.
pub fn held_prefix(text: &str, sequence: &str) -> usize {
    (1..sequence.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && sequence.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// What [`Matcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
enum Matched {
    /// Text that can be shown (possibly empty: all of it waits).
    Text(String),
    /// A stop sequence: the answer ends.
    Stop {
        /// The text before it, still to be shown.
        before: String,
        /// The sequence.
        sequence: String,
    },
}

/// Finds stop sequences in text that comes in pieces.
#[derive(Debug)]
struct Matcher {
    sequences: Vec<String>,
    /// Text that may be the start of a sequence.
    held: String,
}

impl Matcher {
    fn new(sequences: Vec<String>) -> Self {
        Self {
            sequences,
            held: String::new(),
        }
    }

    fn push(&mut self, text: &str) -> Matched {
        self.held.push_str(text);
        if let Some((at, sequence)) = first_match(&self.held, &self.sequences) {
            let sequence = sequence.to_owned();
            self.held.truncate(at);
            return Matched::Stop {
                before: std::mem::take(&mut self.held),
                sequence,
            };
        }
        let hold = self
            .sequences
            .iter()
            .map(|sequence| held_prefix(&self.held, sequence))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - hold);
        Matched::Text(std::mem::replace(&mut self.held, rest))
    }

    /// Whether no text is held.
    fn holds_nothing(&self) -> bool {
        self.held.is_empty()
    }

    /// How much text is held, in bytes.
    fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The text held, shown after all: what follows it is no text.
    fn release(&mut self) -> Option<String> {
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }
}

/// An [`EventStream`] cut at the first stop sequence in its text; see
/// [`LocalStops::apply_to_stream`].
struct StopStream {
    /// The provider's stream; `None` once it is cut (dropping it ends the
    /// request) or over.
    inner: Option<EventStream>,
    matcher: Matcher,
    ready: VecDeque<Result<StreamEvent, LlmError>>,
    /// Signatures that came while text was held, each with the length of
    /// the held text it came after: they wait to go out at that place in
    /// the text, so that a stop sequence split across two signed pieces
    /// (Gemini signs a text part) is still found, and the signature stays
    /// on the piece it came with.
    waiting: Vec<(usize, StreamEvent)>,
    /// The tool calls begun and not yet ended, to end if the answer is cut.
    open_calls: Vec<u32>,
    /// Whether the text is a refusal's, which is not matched.
    refusal: bool,
}

impl StopStream {
    fn handle(&mut self, item: Result<StreamEvent, LlmError>) {
        let event = match item {
            Ok(StreamEvent::TextDelta { text }) if !self.refusal => {
                match self.matcher.push(&text) {
                    Matched::Text(text) => self.show(&text),
                    Matched::Stop { before, sequence } => self.cut(&before, sequence),
                }
                return;
            }
            // Counts say nothing of the text: they go out as they come.
            Ok(event @ (StreamEvent::UsageSoFar(_) | StreamEvent::Timings(_))) => {
                self.ready.push_back(Ok(event));
                return;
            }
            Ok(event @ StreamEvent::ReasoningSignature { .. }) if !self.matcher.holds_nothing() => {
                self.waiting.push((self.matcher.held_len(), event));
                return;
            }
            other => other,
        };
        self.release();
        match &event {
            Ok(StreamEvent::RefusalStart) => self.refusal = true,
            Ok(StreamEvent::ToolCallStart { index, .. }) => self.open_calls.push(*index),
            Ok(StreamEvent::ToolCallEnd { index, .. }) => {
                self.open_calls.retain(|open| open != index);
            }
            _ => {}
        }
        self.ready.push_back(event);
    }

    /// Shows `text`, the start of what was held, with the signatures that
    /// came within it in their places; the others wait on.
    fn show(&mut self, text: &str) {
        let mut shown = 0;
        let mut still_waiting = Vec::new();
        for (at, event) in std::mem::take(&mut self.waiting) {
            if at > text.len() {
                still_waiting.push((at - text.len(), event));
                continue;
            }
            if at > shown {
                self.ready.push_back(Ok(StreamEvent::TextDelta {
                    text: text[shown..at].to_owned(),
                }));
                shown = at;
            }
            self.ready.push_back(Ok(event));
        }
        if shown < text.len() {
            self.ready.push_back(Ok(StreamEvent::TextDelta {
                text: text[shown..].to_owned(),
            }));
        }
        self.waiting = still_waiting;
    }

    /// Shows the text held, and the signatures that came within it.
    fn release(&mut self) {
        let held = self.matcher.release().unwrap_or_default();
        self.show(&held);
        // Nothing is held now: every signature came within what was shown.
        debug_assert!(self.waiting.is_empty());
    }

    /// Ends the answer after `text`: the provider's stream is dropped,
    /// which cancels its request, and the tool calls still open are ended.
    /// Usage the provider counts as it goes went by as
    /// [`StreamEvent::UsageSoFar`]; the rest never comes (OpenAI's comes at
    /// the end).
    fn cut(&mut self, text: &str, sequence: String) {
        self.inner = None;
        self.show(text);
        // Signatures that came after the stop sequence began: kept, after
        // the text, as the provider sent them.
        let late = std::mem::take(&mut self.waiting);
        self.ready
            .extend(late.into_iter().map(|(_, event)| Ok(event)));
        for index in std::mem::take(&mut self.open_calls) {
            self.ready.push_back(Ok(StreamEvent::ToolCallEnd {
                index,
                signature: None,
            }));
        }
        self.ready.push_back(Ok(StreamEvent::Stop {
            reason: StopReason::StopSequence(Some(sequence)),
        }));
    }
}

impl Stream for StopStream {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(item)) => this.handle(item),
                Poll::Ready(None) => {
                    this.inner = None;
                    this.release();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{Message, Role, ToolCall, Usage};

    use super::*;

    fn stops(sequences: &[&str]) -> LocalStops {
        LocalStops {
            sequences: sequences.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn text(text: &str) -> StreamEvent {
        StreamEvent::TextDelta { text: text.into() }
    }

    async fn run(local: LocalStops, events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        let inner: EventStream = Box::pin(futures::stream::iter(events.into_iter().map(Ok)));
        local
            .apply_to_stream(inner)
            .map(|item| item.unwrap())
            .collect()
            .await
    }

    #[test]
    fn split_off_keeps_what_the_provider_takes() {
        let mut request = ChatRequest::new("m", vec![Message::user("hi")]);
        request.stop = ["a", "", "b", "c", "d", "e", "f"]
            .map(String::from)
            .to_vec();
        let local = LocalStops::split_off(&mut request, Some(4));
        assert_eq!(request.stop, ["a", "b", "c", "d"]);
        assert_eq!(local.sequences(), ["e", "f"]);

        let mut request = ChatRequest::new("m", vec![Message::user("hi")]);
        request.stop = ["a", "b"].map(String::from).to_vec();
        assert!(LocalStops::split_off(&mut request, Some(4)).is_empty());
        assert_eq!(request.stop, ["a", "b"]);
        assert!(LocalStops::split_off(&mut request, None).is_empty());
        assert_eq!(request.stop, ["a", "b"]);
        let local = LocalStops::split_off(&mut request, Some(0));
        assert!(request.stop.is_empty());
        assert_eq!(local.sequences(), ["a", "b"]);
        local.restore(&mut request);
        assert_eq!(request.stop, ["a", "b"]);

        // A provider that refuses stop sequences: all of them here, in
        // their order, and back again.
        request.stop = ["a", "b", "c"].map(String::from).to_vec();
        let mut local = LocalStops::split_off(&mut request, Some(2));
        local.take_all_from(&mut request);
        assert!(request.stop.is_empty());
        assert_eq!(local.sequences(), ["a", "b", "c"]);
        local.restore(&mut request);
        assert_eq!(request.stop, ["a", "b", "c"]);

        // A server found to take 1 of them.
        let mut local = LocalStops::split_off(&mut request, Some(0));
        local.give_back_first(&mut request, 1);
        assert_eq!(request.stop, ["a"]);
        assert_eq!(local.sequences(), ["b", "c"]);
        local.give_back_first(&mut request, 9);
        assert_eq!(request.stop, ["a", "b", "c"]);
        assert!(local.is_empty());
    }

    #[test]
    fn a_sequence_split_across_pieces_is_never_shown() {
        let mut matcher = Matcher::new(vec!["END".into()]);
        assert_eq!(matcher.push("hello E"), Matched::Text("hello ".into()));
        assert_eq!(matcher.push("N"), Matched::Text(String::new()));
        assert_eq!(
            matcher.push("D and more"),
            Matched::Stop {
                before: String::new(),
                sequence: "END".into()
            }
        );
    }

    #[test]
    fn held_text_goes_out_once_it_cannot_be_a_sequence() {
        let mut matcher = Matcher::new(vec!["END".into(), "\nObservation:".into()]);
        assert_eq!(matcher.push("a E"), Matched::Text("a ".into()));
        assert_eq!(matcher.push("x\n"), Matched::Text("Ex".into()));
        assert_eq!(matcher.push("Obs"), Matched::Text(String::new()));
        assert_eq!(matcher.push("cure"), Matched::Text("\nObscure".into()));
        assert_eq!(matcher.release(), None);
        assert_eq!(
            matcher.push("é\nObservation: 4"),
            Matched::Stop {
                before: "é".into(),
                sequence: "\nObservation:".into()
            }
        );
    }

    #[test]
    fn the_earliest_sequence_wins() {
        let sequences = ["world".to_owned(), "lo".to_owned()];
        assert_eq!(first_match("hello world", &sequences), Some((3, "lo")));
        assert_eq!(first_match("hi", &sequences), None);
        // The first completed: of two that begin at one place, the
        // shorter; of two that overlap, the one that ends first, as a
        // stream meets them; of two that end at one place, the longer.
        let sequences = ["abc".to_owned(), "ab".to_owned()];
        assert_eq!(first_match("xabcd", &sequences), Some((1, "ab")));
        let sequences = ["abcd".to_owned(), "bc".to_owned()];
        assert_eq!(first_match("xabcde", &sequences), Some((2, "bc")));
        let sequences = ["c".to_owned(), "abc".to_owned()];
        assert_eq!(first_match("xabcd", &sequences), Some((1, "abc")));
        // A held end starts on a character boundary.
        assert_eq!(held_prefix("naïv", "ïve"), "ïv".len());
        assert_eq!(held_prefix("café", "ét"), "é".len());
        assert_eq!(held_prefix("café", "x"), 0);
        assert_eq!(held_prefix("end", "end"), 0);
    }

    #[tokio::test]
    async fn a_stream_ends_at_the_sequence_and_the_provider_is_dropped() {
        let events = vec![
            StreamEvent::Start {
                id: None,
                model: None,
            },
            StreamEvent::UsageSoFar(Usage {
                input_tokens: 7,
                ..Usage::default()
            }),
            text("Thought: add them\nObs"),
            text("ervation: 5\nmore"),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "t".into(),
                signature: None,
            },
            StreamEvent::Stop {
                reason: StopReason::EndTurn,
            },
        ];
        let out = run(stops(&["\nObservation:"]), events).await;
        assert_eq!(
            out,
            vec![
                StreamEvent::Start {
                    id: None,
                    model: None
                },
                StreamEvent::UsageSoFar(Usage {
                    input_tokens: 7,
                    ..Usage::default()
                }),
                text("Thought: add them"),
                StreamEvent::Stop {
                    reason: StopReason::StopSequence(Some("\nObservation:".into()))
                },
            ]
        );
    }

    #[tokio::test]
    async fn held_text_goes_out_before_other_events_and_at_the_end() {
        let events = vec![
            text("done E"),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "END".into(),
                signature: None,
            },
            StreamEvent::ToolCallArgsDelta {
                index: 0,
                delta: "{\"a\": \"END\"}".into(),
            },
            StreamEvent::ToolCallEnd {
                index: 0,
                signature: None,
            },
            StreamEvent::ReasoningDelta {
                text: "END".into(),
                id: None,
            },
            text("tail E"),
            StreamEvent::Usage(Usage::default()),
            StreamEvent::Stop {
                reason: StopReason::ToolUse,
            },
        ];
        let out = run(stops(&["END"]), events.clone()).await;
        let mut expected = events;
        expected[0] = text("done ");
        expected.insert(1, text("E"));
        expected[6] = text("tail ");
        expected.insert(7, text("E"));
        assert_eq!(out, expected);

        // A stream that ends without its stop still shows what was held.
        let out = run(stops(&["END"]), vec![text("a"), text("EN")]).await;
        assert_eq!(out, vec![text("a"), text("EN")]);
    }

    /// Gemini sends its usage with pieces of text, and may sign a text
    /// part: usage goes out as it comes, a signature waits at its place in
    /// the held text, and a sequence split across two pieces is still
    /// found.
    #[tokio::test]
    async fn usage_and_signatures_between_pieces_do_not_hide_a_sequence() {
        let usage = StreamEvent::UsageSoFar(Usage {
            input_tokens: 9,
            ..Usage::default()
        });
        let signature = StreamEvent::ReasoningSignature {
            signature: "sig".into(),
            redacted: false,
            id: None,
            origin: None,
        };
        let events = vec![
            text("Thought: add\nObs"),
            usage.clone(),
            signature.clone(),
            text("ervation: 5"),
            StreamEvent::Stop {
                reason: StopReason::EndTurn,
            },
        ];
        let out = run(stops(&["\nObservation:"]), events).await;
        assert_eq!(
            out,
            vec![
                text("Thought: add"),
                usage.clone(),
                signature.clone(),
                StreamEvent::Stop {
                    reason: StopReason::StopSequence(Some("\nObservation:".into()))
                },
            ]
        );
        // Released with the text once it is no sequence's start.
        let events = vec![
            text("a\nObs"),
            usage.clone(),
            text("cure"),
            text(" b"),
            StreamEvent::Stop {
                reason: StopReason::EndTurn,
            },
        ];
        let out = run(stops(&["\nObservation:"]), events).await;
        assert_eq!(
            out,
            vec![
                text("a"),
                usage,
                text("\nObscure"),
                text(" b"),
                StreamEvent::Stop {
                    reason: StopReason::EndTurn
                },
            ]
        );
        // A signature that came with held text goes out at its place in it.
        let events = vec![
            text("x\n"),
            signature.clone(),
            text("y"),
            StreamEvent::Stop {
                reason: StopReason::EndTurn,
            },
        ];
        let out = run(stops(&["\n\n"]), events).await;
        assert_eq!(
            out,
            vec![
                text("x"),
                text("\n"),
                signature,
                text("y"),
                StreamEvent::Stop {
                    reason: StopReason::EndTurn
                },
            ]
        );
    }

    /// Text after a call has begun (servers that interleave them): a cut
    /// there ends the call, so that every call begun is ended.
    #[tokio::test]
    async fn a_cut_ends_the_calls_still_open() {
        let events = vec![
            StreamEvent::ToolCallStart {
                index: 3,
                id: "c".into(),
                name: "t".into(),
                signature: None,
            },
            StreamEvent::ToolCallArgsDelta {
                index: 3,
                delta: "{}".into(),
            },
            text("and END"),
        ];
        let out = run(stops(&["END"]), events.clone()).await;
        let mut expected = events[..2].to_vec();
        expected.extend([
            text("and "),
            StreamEvent::ToolCallEnd {
                index: 3,
                signature: None,
            },
            StreamEvent::Stop {
                reason: StopReason::StopSequence(Some("END".into())),
            },
        ]);
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn a_refusal_is_not_cut() {
        let events = vec![
            StreamEvent::RefusalStart,
            text("I can't END that"),
            StreamEvent::Stop {
                reason: StopReason::Refusal,
            },
        ];
        assert_eq!(run(stops(&["END"]), events.clone()).await, events);
    }

    #[test]
    fn a_whole_answer_ends_at_the_sequence() {
        let call = ToolCall {
            id: "c".into(),
            name: "t".into(),
            arguments: "{}".into(),
            signature: None,
        };
        let mut response = ChatResponse {
            id: None,
            model: None,
            message: Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Text {
                        text: "1, 2, 3".into(),
                    },
                    ContentPart::ToolCall(call.clone()),
                ],
            },
            usage: Usage::default(),
            stop_reason: StopReason::ToolUse,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        };
        let untouched = response.clone();
        stops(&["4"]).apply_to_response(&mut response);
        assert_eq!(response, untouched);

        stops(&["4", ", 3"]).apply_to_response(&mut response);
        assert_eq!(
            response.message.content,
            vec![ContentPart::Text {
                text: "1, 2".into()
            }]
        );
        assert_eq!(
            response.stop_reason,
            StopReason::StopSequence(Some(", 3".into()))
        );

        // A sequence at the very start leaves no text part.
        let mut response = untouched.clone();
        stops(&["1"]).apply_to_response(&mut response);
        assert!(response.message.content.is_empty());

        // Text in signed parts is one text: a sequence across two parts is
        // found, and the cut keeps what came before it, signature included.
        let signature = ContentPart::Reasoning(freehold_protocol::Reasoning {
            signature: Some("sig".into()),
            ..freehold_protocol::Reasoning::default()
        });
        let piece = |text: &str| ContentPart::Text { text: text.into() };
        let mut signed = untouched.clone();
        signed.message.content = vec![
            piece("Thought: add\nObs"),
            signature.clone(),
            piece("ervation: 5"),
            ContentPart::ToolCall(call.clone()),
        ];
        stops(&["\nObservation:"]).apply_to_response(&mut signed);
        // The signature within the sequence stays, as a stream keeps it.
        assert_eq!(
            signed.message.content,
            vec![piece("Thought: add"), signature.clone()]
        );
        let mut later = untouched.clone();
        later.message.content = vec![piece("a"), signature.clone(), piece("b END c")];
        stops(&["END"]).apply_to_response(&mut later);
        assert_eq!(
            later.message.content,
            vec![piece("a"), signature.clone(), piece("b ")]
        );
        // A sequence at the start of a later part, and after empty parts.
        let mut at_start = untouched.clone();
        at_start.message.content = vec![piece("a"), signature.clone(), piece(""), piece("END")];
        stops(&["END"]).apply_to_response(&mut at_start);
        assert_eq!(
            at_start.message.content,
            vec![piece("a"), signature.clone(), piece("")]
        );
        // Reasoning with text ends a run, as it does in a stream.
        let thought = ContentPart::Reasoning(freehold_protocol::Reasoning {
            text: "hmm".into(),
            ..freehold_protocol::Reasoning::default()
        });
        let mut thinking = untouched.clone();
        thinking.message.content = vec![piece("E"), thought, piece("ND")];
        let kept = thinking.clone();
        stops(&["END"]).apply_to_response(&mut thinking);
        assert_eq!(thinking, kept);
        // A tool call ends a run of text: no sequence across it.
        let mut apart = untouched.clone();
        apart.message.content = vec![piece("E"), ContentPart::ToolCall(call), piece("ND")];
        let kept = apart.clone();
        stops(&["END"]).apply_to_response(&mut apart);
        assert_eq!(apart, kept);

        let mut refusal = untouched;
        refusal.stop_reason = StopReason::Refusal;
        let kept = refusal.clone();
        stops(&["2"]).apply_to_response(&mut refusal);
        assert_eq!(refusal, kept);
    }
}
