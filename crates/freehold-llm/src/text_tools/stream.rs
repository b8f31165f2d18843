//! The streaming adapter: answer text goes on at once unless it could be the
//! start of a printed call; what was held back is recovered when the answer
//! ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use freehold_protocol::{
    AppliedContextEdit, LlmError, StopReason, StreamEvent, ToolCall, ToolSpec, Usage,
};
use futures::{Stream, StreamExt};

use super::parse::{self, Event, FenceContent, MARKERS, WholeJson};
use crate::provider::EventStream;

/// How far the text has been understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Only blanks so far.
    Start,
    /// The answer starts with `{` or `[`: it may be bare JSON calls.
    Json {
        /// How long the text was when last parsed.
        parsed: usize,
    },
    /// Prose; everything before `pos` is settled.
    Scan {
        /// Where to look for the next call tag or fence.
        pos: usize,
        /// Inside a fenced block that holds no call.
        fence_open: bool,
    },
    /// A fenced block that may hold a call has started.
    Fence {
        /// Just past its opening backticks.
        ticks_end: usize,
        /// Where to look for its closing fence.
        closer_from: usize,
    },
    /// A call may have started: hold everything until the answer ends.
    Hold,
    /// Recovery is off (the answer has structured calls, or it ended): text
    /// passes through.
    Passthrough,
}

/// The synchronous heart of the adapter: decides which text may go on now
/// and recovers calls from the rest at the end.
///
/// Text it passes on never contains the start of a call that
/// [`parse::find_spans`] would find in the whole answer, and never ends with
/// blanks, so that the text of a recovered answer is the same, streamed or
/// not (apart from leading blanks).
#[derive(Debug)]
pub(super) struct Holder {
    tools: Vec<ToolSpec>,
    /// The answer text so far.
    text: String,
    /// How much of `text` was passed on.
    emitted: usize,
    phase: Phase,
}

impl Holder {
    /// A holder recovering calls of `tools`.
    pub(super) fn new(tools: Vec<ToolSpec>) -> Self {
        Self {
            tools,
            text: String::new(),
            emitted: 0,
            phase: Phase::Start,
        }
    }

    /// Adds answer text; returns the text that may be passed on now.
    pub(super) fn push(&mut self, delta: &str) -> Option<String> {
        if self.phase == Phase::Passthrough {
            return non_empty(delta);
        }
        self.text.push_str(delta);
        let before = self.emitted;
        self.advance();
        non_empty(&self.text[before..self.emitted])
    }

    /// Stops recovering: returns the held text unchanged; later text passes
    /// straight through.
    pub(super) fn give_up(&mut self) -> Option<String> {
        let held = non_empty(&self.text[self.emitted..]);
        self.phase = Phase::Passthrough;
        self.text.clear();
        self.emitted = 0;
        held
    }

    /// The answer ended: the calls in the held text and the text to pass on
    /// in its place (or the held text unchanged when there are none).
    pub(super) fn finish(&mut self) -> (Option<String>, Vec<ToolCall>) {
        if self.phase == Phase::Passthrough {
            return (None, Vec::new());
        }
        let spans = parse::find_spans(&self.text, &self.tools);
        if let Some(first) = spans.first() {
            let remaining = parse::remove_spans(&self.text, &spans);
            let emitted = &self.text[..self.emitted];
            if first.range.start >= self.emitted && remaining.starts_with(emitted) {
                let rest = &remaining[self.emitted..];
                let rest = if self.emitted == 0 {
                    rest.trim()
                } else {
                    rest.trim_end()
                };
                let rest = non_empty(rest);
                self.give_up();
                return (
                    rest,
                    spans.into_iter().flat_map(|span| span.calls).collect(),
                );
            }
            tracing::warn!(
                emitted = self.emitted,
                span_start = first.range.start,
                "a printed tool call overlaps text already streamed; leaving it as text"
            );
        }
        (self.give_up(), Vec::new())
    }

    /// Moves through the phases as far as the text allows, passing text on.
    fn advance(&mut self) {
        loop {
            match self.phase {
                Phase::Start => match self.text.trim_start().chars().next() {
                    None => return,
                    Some('{' | '[') => self.phase = Phase::Json { parsed: 0 },
                    Some(_) => {
                        self.phase = Phase::Scan {
                            pos: 0,
                            fence_open: false,
                        }
                    }
                },
                Phase::Json { parsed } => {
                    // Parsing only tells when to release the text early, so
                    // long texts are parsed again only once they grew by a
                    // quarter: the work stays linear in the text's length.
                    let len = self.text.len();
                    if len > JSON_ALWAYS_PARSED && len < parsed + parsed / 4 {
                        return;
                    }
                    self.phase = Phase::Json { parsed: len };
                    match parse::whole_json_state(&self.text, &self.tools) {
                        WholeJson::Incomplete | WholeJson::Calls => return,
                        WholeJson::NotCalls => {
                            self.phase = Phase::Scan {
                                pos: 0,
                                fence_open: false,
                            }
                        }
                    }
                }
                Phase::Scan { pos, fence_open } => match parse::next_event(&self.text, pos) {
                    Some((start, Event::Tag)) => {
                        self.release_to(start);
                        self.phase = Phase::Hold;
                        return;
                    }
                    Some((_, Event::Fence { ticks_end })) if fence_open => {
                        self.phase = Phase::Scan {
                            pos: ticks_end,
                            fence_open: false,
                        };
                    }
                    Some((start, Event::Fence { ticks_end })) => {
                        self.release_to(start);
                        self.phase = Phase::Fence {
                            ticks_end,
                            closer_from: ticks_end,
                        };
                    }
                    None => {
                        let safe = held_tail(&self.text, pos);
                        self.release_to(safe);
                        self.phase = Phase::Scan {
                            pos: safe,
                            fence_open,
                        };
                        return;
                    }
                },
                Phase::Fence {
                    ticks_end,
                    closer_from,
                } => {
                    let Some(content_start) = parse::line_end(&self.text, ticks_end) else {
                        return;
                    };
                    let content = &self.text[content_start..];
                    let prose = match parse::classify_fence(content) {
                        FenceContent::Undecided => return,
                        FenceContent::Prose => true,
                        FenceContent::Candidate => {
                            match parse::next_fence(&self.text, closer_from.max(content_start)) {
                                None => {
                                    // Backticks before the last two cannot
                                    // start the closer any more.
                                    let mut from = self.text.len().saturating_sub(2);
                                    while !self.text.is_char_boundary(from) {
                                        from -= 1;
                                    }
                                    self.phase = Phase::Fence {
                                        ticks_end,
                                        closer_from: from.max(content_start),
                                    };
                                    return;
                                }
                                Some((closer, _)) => parse::fence_calls(
                                    &self.text[content_start..closer],
                                    &self.tools,
                                )
                                .is_none(),
                            }
                        }
                    };
                    self.phase = if prose {
                        Phase::Scan {
                            pos: content_start,
                            fence_open: true,
                        }
                    } else {
                        Phase::Hold
                    };
                }
                Phase::Hold | Phase::Passthrough => return,
            }
        }
    }

    /// Passes on the text before `end`, less its trailing blanks (they may
    /// precede a call and go with it).
    fn release_to(&mut self, end: usize) {
        let end = self.text[..end].trim_end().len();
        self.emitted = self.emitted.max(end);
    }
}

/// Texts up to this length are parsed on every delta while they may be bare
/// JSON calls.
const JSON_ALWAYS_PARSED: usize = 4096;

/// Where prose being scanned from `pos` may hide the start of a call: a
/// partial tag at the end, or a last line that may become a fence. Text
/// before the returned position is safe, and scanning resumes there.
fn held_tail(text: &str, pos: usize) -> usize {
    let longest = MARKERS.iter().map(|marker| marker.len()).max().unwrap_or(0);
    let partial_tag = (text.len().saturating_sub(longest)..text.len())
        .filter(|&at| at >= pos && text.is_char_boundary(at))
        .find(|&at| {
            let tail = &text[at..];
            tail.starts_with('<') && MARKERS.iter().any(|marker| marker.starts_with(tail))
        });
    // A last line of blanks and at most two backticks, read from its end so
    // that long lines cost nothing.
    let bytes = text.as_bytes();
    let mut line = bytes.len();
    let mut ticks = 0;
    while ticks < 3 && line > 0 && bytes[line - 1] == b'`' {
        line -= 1;
        ticks += 1;
    }
    while line > 0 && matches!(bytes[line - 1], b' ' | b'\t') {
        line -= 1;
    }
    let partial_fence = (ticks < 3 && (line == 0 || bytes[line - 1] == b'\n')).then_some(line);
    [partial_tag, partial_fence]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len())
        .max(pos)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Wraps an [`EventStream`], recovering printed calls; see
/// [`super::recover_in_stream`].
pub(super) struct RecoverStream {
    inner: EventStream,
    holder: Holder,
    ready: VecDeque<Result<StreamEvent, LlmError>>,
    /// Usage is held until the stop, so that recovered events precede it.
    usage: Option<Usage>,
    /// Context edits, held with the usage.
    context_edits: Vec<AppliedContextEdit>,
    /// The index the next recovered call gets.
    next_index: u32,
    ended: bool,
}

impl RecoverStream {
    /// The adapter over `inner` for `tools`.
    pub(super) fn new(inner: EventStream, tools: Vec<ToolSpec>) -> Self {
        Self {
            inner,
            holder: Holder::new(tools),
            ready: VecDeque::new(),
            usage: None,
            context_edits: Vec::new(),
            next_index: 0,
            ended: false,
        }
    }

    fn handle(&mut self, item: Result<StreamEvent, LlmError>) {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                self.flush();
                self.ready.push_back(Err(error));
                return;
            }
        };
        match event {
            StreamEvent::TextDelta { text } => {
                if let Some(text) = self.holder.push(&text) {
                    self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
                }
            }
            // A refusal is no tool call: the text held goes out before it.
            StreamEvent::RefusalStart => {
                if let Some(text) = self.holder.give_up() {
                    self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
                }
                self.ready.push_back(Ok(event));
            }
            StreamEvent::ToolCallStart { index, .. } => {
                // Structured calls: the model calls tools properly, leave its
                // text alone.
                if let Some(text) = self.holder.give_up() {
                    self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
                }
                self.next_index = self.next_index.max(index.saturating_add(1));
                self.ready.push_back(Ok(event));
            }
            StreamEvent::ToolCallArgsDelta { index, .. }
            | StreamEvent::ToolCallEnd { index, .. } => {
                self.next_index = self.next_index.max(index.saturating_add(1));
                self.ready.push_back(Ok(event));
            }
            StreamEvent::Usage(usage) => self.usage = Some(usage),
            StreamEvent::ContextEdited { edits } => self.context_edits.extend(edits),
            StreamEvent::Stop { reason } => self.stop(reason),
            other => self.ready.push_back(Ok(other)),
        }
    }

    fn stop(&mut self, reason: StopReason) {
        let (text, calls) = self.holder.finish();
        if let Some(text) = text {
            self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
        }
        let recovered = !calls.is_empty();
        if recovered {
            tracing::debug!(calls = calls.len(), "recovered tool calls printed as text");
        }
        for call in calls {
            let index = self.next_index;
            self.next_index = self.next_index.saturating_add(1);
            self.ready.push_back(Ok(StreamEvent::ToolCallStart {
                index,
                id: call.id,
                name: call.name,
                signature: None,
            }));
            self.ready.push_back(Ok(StreamEvent::ToolCallArgsDelta {
                index,
                delta: call.arguments,
            }));
            self.ready.push_back(Ok(StreamEvent::ToolCallEnd {
                index,
                signature: None,
            }));
        }
        self.end_counts();
        let reason = if recovered {
            StopReason::ToolUse
        } else {
            reason
        };
        self.ready.push_back(Ok(StreamEvent::Stop { reason }));
    }

    /// Passes on everything held, unchanged.
    fn flush(&mut self) {
        if let Some(text) = self.holder.give_up() {
            self.ready.push_back(Ok(StreamEvent::TextDelta { text }));
        }
        self.end_counts();
    }

    /// The usage and the context edits held for the answer's end.
    fn end_counts(&mut self) {
        if let Some(usage) = self.usage.take() {
            self.ready.push_back(Ok(StreamEvent::Usage(usage)));
        }
        if !self.context_edits.is_empty() {
            let edits = std::mem::take(&mut self.context_edits);
            self.ready
                .push_back(Ok(StreamEvent::ContextEdited { edits }));
        }
    }
}

impl Stream for RecoverStream {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(item)) => this.handle(item),
                Poll::Ready(None) => {
                    this.ended = true;
                    this.flush();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn tools() -> Vec<ToolSpec> {
        ["read", "write"]
            .into_iter()
            .map(|name| ToolSpec {
                name: name.into(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
                strict: false,
            })
            .collect()
    }

    /// Feeds `chunks`, returning what was passed on after each one.
    fn feed(holder: &mut Holder, chunks: &[&str]) -> Vec<String> {
        chunks
            .iter()
            .map(|chunk| holder.push(chunk).unwrap_or_default())
            .collect()
    }

    #[test]
    fn prose_goes_on_at_once_but_trailing_blanks_wait() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(&mut holder, &["Hello", " world", ".\n", "\nBye"]),
            ["Hello", " world", ".", "\n\nBye"]
        );
        assert_eq!(holder.finish(), (None, Vec::new()));
    }

    #[test]
    fn partial_tags_are_held_until_they_turn_out_harmless() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(
                &mut holder,
                &["a <tool", "_c", "ool> b", " <", "function", "al"]
            ),
            ["a", "", " <tool_cool> b", "", "", " <functional"]
        );
    }

    #[test]
    fn a_tag_holds_everything_after_it() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(
                &mut holder,
                &[
                    "Let me look.\n<tool_call>",
                    "\n{\"name\": \"nope\"}\n",
                    "</tool_call> ok"
                ]
            ),
            ["Let me look.", "", ""]
        );
        assert_eq!(
            holder.finish(),
            (
                Some("\n<tool_call>\n{\"name\": \"nope\"}\n</tool_call> ok".into()),
                Vec::new()
            )
        );
    }

    #[test]
    fn code_fences_are_released_once_they_cannot_be_calls() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(
                &mut holder,
                &["Here:\n`", "``rust\n", "fn main() {}\n", "```\nDone"]
            ),
            ["Here:", "", "\n```rust\nfn main() {}", "\n```\nDone"]
        );
    }

    #[test]
    fn a_json_fence_waits_for_its_closer() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(&mut holder, &["Config:\n```json\n{\"a\": 1}\n", "```\nok"]),
            ["Config:", "\n```json\n{\"a\": 1}\n```\nok"]
        );
    }

    #[test]
    fn an_answer_starting_like_json_is_released_once_it_is_not_a_call() {
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(&mut holder, &["  [", "link", "](https://x.y) here"]),
            ["", "  [link", "](https://x.y) here"]
        );
        let mut holder = Holder::new(tools());
        assert_eq!(
            feed(&mut holder, &["{\"name\": \"read\"}", "\n", "Then"]),
            ["", "", "{\"name\": \"read\"}\nThen"]
        );
    }

    #[test]
    fn giving_up_returns_held_text_and_lets_later_text_through() {
        let mut holder = Holder::new(tools());
        assert_eq!(feed(&mut holder, &["x <tool_call>{"]), ["x"]);
        assert_eq!(holder.give_up().as_deref(), Some(" <tool_call>{"));
        assert_eq!(holder.push("\n").as_deref(), Some("\n"));
        assert_eq!(holder.finish(), (None, Vec::new()));
    }

    #[test]
    fn long_candidates_streamed_in_small_deltas_are_recovered() {
        // About 110 KB of arguments in 4-byte deltas: quadratic work here
        // would take minutes.
        let content = "let x = 1;\n".repeat(10_000);
        let call = json!({"name": "write", "arguments": {"path": "big.rs", "content": content}});
        let call = call.to_string();
        for text in [call.clone(), format!("Writing it.\n```json\n{call}\n```\n")] {
            let mut holder = Holder::new(tools());
            let mut out = String::new();
            for chunk in text.as_bytes().chunks(4) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                out.push_str(&holder.push(chunk).unwrap_or_default());
            }
            let (rest, calls) = holder.finish();
            out.push_str(&rest.unwrap_or_default());
            assert_eq!(
                out,
                if text.starts_with('{') {
                    ""
                } else {
                    "Writing it."
                }
            );
            assert_eq!(calls.len(), 1);
            let arguments: serde_json::Value = serde_json::from_str(&calls[0].arguments).unwrap();
            assert_eq!(arguments["content"], content.as_str());
        }
    }

    proptest! {
        /// Prose without markers, fences or a leading `{`/`[` is passed on
        /// as soon as it arrives (bar trailing blanks), and byte for byte.
        #[test]
        fn prose_without_markers_passes_through_at_once(
            text in "[a-zA-Z0-9 .,:;!?'\"(){}<>/=_\n\t-]{0,200}",
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            prop_assume!(!text.trim_start().starts_with(['{', '[']));
            prop_assume!(!MARKERS.iter().any(|marker| text.contains(marker)));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(text.len())).collect();
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut holder = Holder::new(tools());
            let mut out = String::new();
            let mut last = 0;
            for cut in cuts {
                out.push_str(&holder.push(&text[last..cut]).unwrap_or_default());
                last = cut;
                // Only a partial tag or trailing blanks may be held.
                let fed = &text[..cut];
                let held = &fed[out.len()..];
                prop_assert!(fed.starts_with(&out));
                prop_assert!(
                    held.trim().is_empty()
                        || MARKERS.iter().any(|marker| marker.starts_with(held.trim_start())),
                    "held {:?} of {:?}", held, fed
                );
            }
            let (rest, calls) = holder.finish();
            out.push_str(&rest.unwrap_or_default());
            prop_assert!(calls.is_empty());
            prop_assert_eq!(out, text);
        }

        /// Whatever the text, when nothing is recovered it comes out byte for
        /// byte, however it is split.
        #[test]
        fn unrecovered_text_is_unchanged(
            text in "[a-z{}\\[\\]<>=`\"_: \n]{0,120}",
            cut in 0usize..120,
        ) {
            let cut = cut.min(text.len());
            let mut holder = Holder::new(tools());
            let mut out = holder.push(&text[..cut]).unwrap_or_default();
            out.push_str(&holder.push(&text[cut..]).unwrap_or_default());
            let (rest, calls) = holder.finish();
            out.push_str(&rest.unwrap_or_default());
            prop_assert!(calls.is_empty());
            prop_assert_eq!(out, text);
        }
    }
}
