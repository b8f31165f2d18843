//! Reasoning a model writes into its answer's text between `<think>` and
//! `</think>`, moved to reasoning.
//!
//! Reasoning models whose chat template leaves the tag to them (Qwen3's
//! hybrid models) open their answer with their thinking in these tags.
//! Servers that know the model take it out and send it as reasoning
//! (llama.cpp's server by default, vLLM and SGLang with a reasoning parser,
//! Ollama's own API); others leave it in the text (vLLM without a parser,
//! Groq's `raw` format, some hosted APIs). A client of the gateway would
//! then show the model's thinking as its answer, and a coding agent would
//! read it as one. Here the tags are read only where such a model writes
//! them: at the very start of the answer (after blanks), before any
//! reasoning the server sent itself. An answer cut off inside the tags
//! (`max_tokens`) is all reasoning, as the server's parsers make it.
//!
//! Some templates open the tag themselves, at the end of the prompt
//! (DeepSeek-R1's distilled models, QwQ, Qwen3's thinking-only models): the
//! answer then starts inside the thinking and shows only `</think>`. Only
//! a caller that sees the prompt knows this (the embedded engine), and it
//! says so with [`split_stream_opened`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use freehold_protocol::{ChatResponse, ContentPart, LlmError, Reasoning, StopReason, StreamEvent};
use futures::{Stream, StreamExt};

use crate::provider::EventStream;
use crate::stop::held_prefix;

/// The tag that opens a model's thinking.
pub const OPEN: &str = "<think>";
/// The tag that closes it.
pub const CLOSE: &str = "</think>";

/// `response` with the reasoning at the start of its text moved to a
/// reasoning part before it. An answer with reasoning of its own is left
/// as it is.
pub fn split_response(response: &mut ChatResponse) {
    // A refusal's text is left whole, as the stream leaves it.
    if response.stop_reason == StopReason::Refusal {
        return;
    }
    let content = &mut response.message.content;
    if content
        .iter()
        .any(|part| matches!(part, ContentPart::Reasoning(_)))
    {
        return;
    }
    let Some(ContentPart::Text { text }) = content.first() else {
        return;
    };
    let Some(inside) = text.trim_start().strip_prefix(OPEN) else {
        return;
    };
    let (thinking, answer) = match inside.split_once(CLOSE) {
        Some((thinking, answer)) => (thinking, answer.trim_start()),
        None => (inside, ""),
    };
    // Empty thinking (Qwen3 told `/no_think`) is no reasoning, as the
    // stream sends none for it.
    let thinking = thinking.trim_start();
    let reasoning = (!thinking.is_empty()).then(|| {
        ContentPart::Reasoning(Reasoning {
            text: thinking.to_owned(),
            ..Reasoning::default()
        })
    });
    let answer = answer.to_owned();
    let mut parts: Vec<ContentPart> = reasoning.into_iter().collect();
    if !answer.is_empty() {
        parts.push(ContentPart::Text { text: answer });
    }
    content.splice(0..1, parts);
}

/// `stream` with the reasoning at the start of its text sent as reasoning.
pub fn split_stream(stream: EventStream) -> EventStream {
    split(stream, Phase::Start)
}

/// `stream` of an answer whose prompt ended with `<think>`: its text is
/// reasoning up to `</think>` (a `<think>` the model writes again at the
/// start is dropped), then the answer.
pub fn split_stream_opened(stream: EventStream) -> EventStream {
    split(stream, Phase::StartInside)
}

fn split(stream: EventStream, phase: Phase) -> EventStream {
    Box::pin(ThinkStream {
        inner: Some(stream),
        phase,
        held: String::new(),
        reasoning_started: false,
        ready: VecDeque::new(),
    })
}

/// Where the answer's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No text yet but blanks, or the start of `<think>`: held.
    Start,
    /// As `Start`, but the prompt opened the tag: whatever is not `<think>`
    /// is thinking.
    StartInside,
    /// Inside the tags: text is reasoning; the end of it that may be the
    /// start of `</think>` is held.
    Thinking,
    /// Just past `</think>`: blanks before the answer are dropped.
    AfterThinking,
    /// Text is the answer's, and goes on as it comes.
    Answer,
}

struct ThinkStream {
    /// The answer's events; `None` once they ended.
    inner: Option<EventStream>,
    phase: Phase,
    /// Text not yet sent on.
    held: String,
    /// Whether any reasoning went on (the blanks before it are dropped, as
    /// in a whole answer).
    reasoning_started: bool,
    ready: VecDeque<Result<StreamEvent, LlmError>>,
}

impl ThinkStream {
    fn handle(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::TextDelta { text } if self.phase != Phase::Answer => {
                if self.held.is_empty() {
                    self.held = text;
                } else {
                    self.held.push_str(&text);
                }
                self.advance();
            }
            // Counts so far and the answer's start say nothing of the text.
            event @ (StreamEvent::Start { .. }
            | StreamEvent::UsageSoFar(_)
            | StreamEvent::Timings(_)) => self.ready.push_back(Ok(event)),
            event => {
                // Anything else before the text (the server's own
                // reasoning, a tool call, a refusal) means the text is the
                // answer's; at the end (the final usage, the stop), what is
                // held goes as it stands.
                self.flush();
                self.phase = Phase::Answer;
                self.ready.push_back(Ok(event));
            }
        }
    }

    /// Moves what is held on as far as the text says.
    fn advance(&mut self) {
        loop {
            match self.phase {
                Phase::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.held = rest.to_owned();
                        self.phase = Phase::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return;
                    } else {
                        self.phase = Phase::Answer;
                        self.send_text();
                        return;
                    }
                }
                Phase::StartInside => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.held = rest.to_owned();
                    } else if OPEN.starts_with(trimmed) {
                        return;
                    }
                    self.phase = Phase::Thinking;
                }
                Phase::Thinking => match self.held.find(CLOSE) {
                    Some(at) => {
                        let rest = self.held.split_off(at + CLOSE.len());
                        self.held.truncate(at);
                        self.send_reasoning();
                        self.held = rest;
                        self.phase = Phase::AfterThinking;
                    }
                    None => {
                        let hold = held_prefix(&self.held, CLOSE);
                        let rest = self.held.split_off(self.held.len() - hold);
                        self.send_reasoning();
                        self.held = rest;
                        return;
                    }
                },
                Phase::AfterThinking => {
                    let answer = self.held.trim_start();
                    if answer.is_empty() {
                        self.held.clear();
                        return;
                    }
                    self.held = answer.to_owned();
                    self.phase = Phase::Answer;
                    self.send_text();
                    return;
                }
                Phase::Answer => {
                    self.send_text();
                    return;
                }
            }
        }
    }

    /// Sends on what is held as it stands: reasoning inside the tags (an
    /// answer cut off there), else text.
    fn flush(&mut self) {
        match self.phase {
            Phase::StartInside | Phase::Thinking => self.send_reasoning(),
            Phase::AfterThinking => self.held.clear(),
            Phase::Start | Phase::Answer => self.send_text(),
        }
    }

    fn send_text(&mut self) {
        if !self.held.is_empty() {
            let text = std::mem::take(&mut self.held);
            self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
        }
    }

    fn send_reasoning(&mut self) {
        let mut text = std::mem::take(&mut self.held);
        if !self.reasoning_started {
            text = text.trim_start().to_owned();
        }
        if !text.is_empty() {
            self.reasoning_started = true;
            self.ready
                .push_back(Ok(StreamEvent::ReasoningDelta { text, id: None }));
        }
    }
}

impl Stream for ThinkStream {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            let Some(inner) = &mut this.inner else {
                return Poll::Ready(None);
            };
            // The answer's text goes on as it comes: nothing is held then.
            if this.phase == Phase::Answer {
                let next = std::task::ready!(inner.poll_next_unpin(cx));
                if next.is_none() {
                    this.inner = None;
                }
                return Poll::Ready(next);
            }
            match inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => this.handle(event),
                Poll::Ready(Some(Err(error))) => {
                    this.flush();
                    this.ready.push_back(Err(error));
                }
                Poll::Ready(None) => {
                    this.inner = None;
                    this.flush();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{Message, Role, StopReason, Usage};

    use super::*;

    fn text(text: &str) -> StreamEvent {
        StreamEvent::TextDelta { text: text.into() }
    }

    fn reasoning(text: &str) -> StreamEvent {
        StreamEvent::ReasoningDelta {
            text: text.into(),
            id: None,
        }
    }

    fn stop() -> StreamEvent {
        StreamEvent::Stop {
            reason: StopReason::EndTurn,
        }
    }

    async fn run(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        let stream: EventStream = Box::pin(futures::stream::iter(events.into_iter().map(Ok)));
        split_stream(stream)
            .map(|item| item.unwrap())
            .collect()
            .await
    }

    /// Joins consecutive deltas of one kind, so that tests compare what was
    /// said, not how it was cut.
    fn joined(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        let mut out: Vec<StreamEvent> = Vec::new();
        for event in events {
            match (out.last_mut(), event) {
                (Some(StreamEvent::TextDelta { text }), StreamEvent::TextDelta { text: more }) => {
                    text.push_str(&more)
                }
                (
                    Some(StreamEvent::ReasoningDelta { text, .. }),
                    StreamEvent::ReasoningDelta { text: more, .. },
                ) => text.push_str(&more),
                (_, event) => out.push(event),
            }
        }
        out
    }

    #[tokio::test]
    async fn thinking_at_the_start_is_reasoning_in_any_pieces() {
        let whole = "\n<think>\nAdd them: 5.\n</think>\n\nThe sum is 5.";
        for cut in 1..whole.len() {
            if !whole.is_char_boundary(cut) {
                continue;
            }
            let events = vec![text(&whole[..cut]), text(&whole[cut..]), stop()];
            assert_eq!(
                joined(run(events).await),
                vec![reasoning("Add them: 5.\n"), text("The sum is 5."), stop()],
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn byte_by_byte_pieces_and_the_end_of_the_stream() {
        let whole = "<think>é</think>ok";
        let mut events: Vec<StreamEvent> = whole.chars().map(|c| text(&c.to_string())).collect();
        events.push(StreamEvent::UsageSoFar(Usage::default()));
        events.push(stop());
        assert_eq!(
            joined(run(events).await),
            vec![
                reasoning("é"),
                text("ok"),
                StreamEvent::UsageSoFar(Usage::default()),
                stop()
            ]
        );
        // A stream that ended is not polled again.
        let stream: EventStream = Box::pin(futures::stream::iter(vec![Ok(text("<thi"))]));
        let mut split = split_stream(stream);
        assert!(matches!(
            split.next().await,
            Some(Ok(StreamEvent::TextDelta { .. }))
        ));
        assert!(split.next().await.is_none());
        assert!(split.next().await.is_none());
    }

    #[tokio::test]
    async fn other_answers_pass_as_they_are() {
        // Text that does not open with the tag, or opens with something
        // like it.
        for answer in ["The <think> tag is Qwen's.", "<thin ice", "  <thinking>"] {
            let events = vec![text(&answer[..3]), text(&answer[3..]), stop()];
            assert_eq!(joined(run(events).await), vec![text(answer), stop()]);
        }
        // The server sent reasoning of its own: the text is the answer.
        let events = vec![reasoning("hm"), text("<think>x</think>y"), stop()];
        assert_eq!(
            joined(run(events.clone()).await),
            vec![reasoning("hm"), text("<think>x</think>y"), stop()]
        );
    }

    async fn run_opened(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        let stream: EventStream = Box::pin(futures::stream::iter(events.into_iter().map(Ok)));
        split_stream_opened(stream)
            .map(|item| item.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_prompt_that_opened_the_tag_starts_in_the_thinking() {
        // What DeepSeek-R1's distilled models write after a prompt ending
        // in `<think>\n`, and the same with the tag written again.
        for whole in [
            "Add them: 5.\n</think>\n\nThe sum is 5.",
            "\n<think>\nAdd them: 5.\n</think>\n\nThe sum is 5.",
        ] {
            for cut in 1..whole.len() {
                let events = vec![text(&whole[..cut]), text(&whole[cut..]), stop()];
                assert_eq!(
                    joined(run_opened(events).await),
                    vec![reasoning("Add them: 5.\n"), text("The sum is 5."), stop()],
                    "{whole:?} cut at {cut}"
                );
            }
        }
        // Cut off while thinking, or with nothing but blanks: reasoning
        // only, or nothing.
        let events = vec![text("<thi"), stop()];
        assert_eq!(
            joined(run_opened(events).await),
            vec![reasoning("<thi"), stop()]
        );
        let events = vec![text("Hmm, the"), text(" user"), stop()];
        assert_eq!(
            joined(run_opened(events).await),
            vec![reasoning("Hmm, the user"), stop()]
        );
        assert_eq!(
            joined(run_opened(vec![text("\n"), stop()]).await),
            vec![stop()]
        );
        // A call made without closing the thinking (a grammar that forced
        // it) is still a call.
        let call = StreamEvent::ToolCallStart {
            index: 0,
            id: "c".into(),
            name: "read".into(),
            signature: None,
        };
        let events = vec![text("\n"), call.clone(), stop()];
        assert_eq!(joined(run_opened(events).await), vec![call, stop()]);
    }

    #[tokio::test]
    async fn an_answer_cut_off_while_thinking_is_all_reasoning() {
        let events = vec![
            text("<think>Let me see. Per"),
            text("haps </thi"),
            StreamEvent::Usage(Usage::default()),
            StreamEvent::Stop {
                reason: StopReason::MaxTokens,
            },
        ];
        assert_eq!(
            joined(run(events).await),
            vec![
                reasoning("Let me see. Perhaps </thi"),
                StreamEvent::Usage(Usage::default()),
                StreamEvent::Stop {
                    reason: StopReason::MaxTokens
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_tool_call_after_thinking_follows_it() {
        let call = StreamEvent::ToolCallStart {
            index: 0,
            id: "c".into(),
            name: "read".into(),
            signature: None,
        };
        let events = vec![text("<think>read it</think>\n"), call.clone(), stop()];
        assert_eq!(
            joined(run(events).await),
            vec![reasoning("read it"), call, stop()]
        );
    }

    #[test]
    fn a_whole_answer_is_split_the_same_way() {
        let answer = |content: Vec<ContentPart>| ChatResponse {
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
        };
        let thinking = |text: &str| {
            ContentPart::Reasoning(Reasoning {
                text: text.into(),
                ..Reasoning::default()
            })
        };
        let said = |text: &str| ContentPart::Text { text: text.into() };

        let mut response = answer(vec![said("\n<think>\nAdd.\n</think>\n\nIt is 5.")]);
        split_response(&mut response);
        assert_eq!(
            response.message.content,
            vec![thinking("Add.\n"), said("It is 5.")]
        );

        let mut cut_off = answer(vec![said("<think>Let me")]);
        split_response(&mut cut_off);
        assert_eq!(cut_off.message.content, vec![thinking("Let me")]);

        // Empty thinking is no reasoning.
        let mut no_think = answer(vec![said("<think>\n\n</think>\n\nHi")]);
        split_response(&mut no_think);
        assert_eq!(no_think.message.content, vec![said("Hi")]);

        // A refusal is left whole.
        let mut refused = answer(vec![said("<think>no</think>No.")]);
        refused.stop_reason = StopReason::Refusal;
        let untouched = refused.clone();
        split_response(&mut refused);
        assert_eq!(refused, untouched);

        for content in [
            vec![said("The <think> tag")],
            vec![thinking("own"), said("<think>x</think>y")],
        ] {
            let mut response = answer(content.clone());
            split_response(&mut response);
            assert_eq!(response.message.content, content);
        }
    }
}
