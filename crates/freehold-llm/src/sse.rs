//! An incremental decoder of Server-Sent Events (the `text/event-stream`
//! format of the WHATWG HTML standard), fed with byte chunks split anywhere.
//!
//! The decoder holds at most one partial line and one event's data, and
//! both are bounded ([`MAX_LINE_BYTES`], [`MAX_EVENT_BYTES`], or the limits
//! given to [`SseDecoder::with_limits`]): a server that never sends a line
//! ending or a blank line makes the decoder fail ([`SseDecoder::error`])
//! rather than grow.

/// The longest line, in bytes without its line ending, that
/// [`SseDecoder::new`] accepts.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The largest `data` of one event, in bytes of its UTF-8 text (the `data:`
/// lines joined with `\n`), that [`SseDecoder::new`] accepts.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty means the default type, `message`.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
}

/// A limit of the decoder that the stream exceeded; the decoder stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseLimitError {
    /// A line grew past the line limit before it ended.
    #[error("SSE line exceeded {limit} bytes")]
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// An event's `data` grew past the event limit before its blank line.
    #[error("SSE event data exceeded {limit} bytes")]
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Turns bytes into [`SseEvent`]s. Lines may end in `\n`, `\r\n` or `\r`;
/// chunks may split anything, including a UTF-8 sequence or a `\r\n` pair.
///
/// Each byte is scanned once, whatever the chunking. When the stream
/// exceeds a limit the decoder records a [`SseLimitError`], readable with
/// [`SseDecoder::error`], and from then on ignores its input: check
/// `error()` after each [`SseDecoder::feed`] and end the stream when it is
/// set.
#[derive(Debug)]
pub struct SseDecoder {
    /// The start of a line whose ending has not arrived yet.
    buffer: Vec<u8>,
    /// A `\r` ended the previous chunk, so a `\n` starting the next one is
    /// part of the same line ending.
    pending_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    started: bool,
    max_line_bytes: usize,
    max_event_bytes: usize,
    error: Option<SseLimitError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder at the start of a stream, with the default limits
    /// [`MAX_LINE_BYTES`] and [`MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder at the start of a stream that accepts lines of at most
    /// `max_line_bytes` bytes (without the line ending) and events whose
    /// `data` holds at most `max_event_bytes` bytes.
    pub fn with_limits(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            pending_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            started: false,
            max_line_bytes,
            max_event_bytes,
            error: None,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    ///
    /// If the chunk exceeds a limit, the events completed before that point
    /// are returned and [`SseDecoder::error`] becomes `Some`; later calls
    /// return nothing.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        // An empty chunk says nothing, in particular not whether a `\r`
        // ending the previous chunk is followed by a `\n`.
        if chunk.is_empty() || self.error.is_some() {
            return events;
        }
        let mut bytes = chunk;
        if std::mem::take(&mut self.pending_cr) && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if let Err(error) = self.complete_line(&bytes[..end], &mut events) {
                self.fail(error);
                return events;
            }
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    None => self.pending_cr = true,
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                }
            }
            bytes = &bytes[next..];
        }
        if self.buffer.len() + bytes.len() > self.max_line_bytes {
            self.fail(SseLimitError::LineTooLong {
                limit: self.max_line_bytes,
            });
            return events;
        }
        self.buffer.extend_from_slice(bytes);
        events
    }

    /// Ends the stream: an event left without its closing blank line is
    /// dispatched (servers that close the connection right after the last
    /// `data:` line are common).
    ///
    /// Returns `None` once [`SseDecoder::error`] is set, and sets it if the
    /// last line exceeds the event limit.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.error.is_some() {
            return None;
        }
        let mut events = Vec::new();
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            if let Err(error) = self.line(&line, &mut events) {
                self.fail(error);
                return None;
            }
        }
        self.dispatch(&mut events);
        events.pop()
    }

    /// The limit the stream exceeded, if it did; the decoder ignores all
    /// input after it.
    pub fn error(&self) -> Option<SseLimitError> {
        self.error
    }

    /// Handles the line made of the buffered bytes followed by `tail`.
    fn complete_line(
        &mut self,
        tail: &[u8],
        events: &mut Vec<SseEvent>,
    ) -> Result<(), SseLimitError> {
        if self.buffer.len() + tail.len() > self.max_line_bytes {
            return Err(SseLimitError::LineTooLong {
                limit: self.max_line_bytes,
            });
        }
        if self.buffer.is_empty() {
            return self.line(tail, events);
        }
        let mut line = std::mem::take(&mut self.buffer);
        line.extend_from_slice(tail);
        let result = self.line(&line, events);
        // Keep the allocation for the next partial line.
        line.clear();
        self.buffer = line;
        result
    }

    /// Stops decoding for good, freeing what was held.
    fn fail(&mut self, error: SseLimitError) {
        self.error = Some(error);
        self.buffer = Vec::new();
        self.data = String::new();
        self.event = String::new();
        self.has_data = false;
        self.pending_cr = false;
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseLimitError> {
        let mut line = line;
        if !self.started {
            self.started = true;
            // A UTF-8 byte-order mark may open the stream.
            if let Some(rest) = line.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // A comment, used as a keep-alive.
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = value.into_owned(),
            b"data" => self.append_data(&value)?,
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            // Not a field of the standard, but llama.cpp's server sent its
            // in-stream errors so until late 2025 (`error: {…}`, then
            // `data: [DONE]`): read as an `error` event, rather than lost
            // and the stream taken for one cut short.
            b"error" => {
                self.event = "error".to_owned();
                self.append_data(&value)?;
            }
            _ => {} // `retry:` and unknown fields are ignored.
        }
        Ok(())
    }

    /// Adds a `data` line to the event, within the size limit.
    fn append_data(&mut self, value: &str) -> Result<(), SseLimitError> {
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > self.max_event_bytes {
            return Err(SseLimitError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return;
        }
        self.has_data = false;
        events.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` cut at `cuts` (clamped and kept in order; a repeated
    /// cut feeds an empty chunk) and finishes.
    fn decode_with(
        mut decoder: SseDecoder,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<SseEvent>, Option<SseLimitError>) {
        let mut events = Vec::new();
        let mut last = 0;
        for &cut in cuts {
            let cut = cut.min(input.len()).max(last);
            events.extend(decoder.feed(&input[last..cut]));
            last = cut;
        }
        events.extend(decoder.feed(&input[last..]));
        events.extend(decoder.finish());
        (events, decoder.error())
    }

    fn decode_in_chunks(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let (events, error) = decode_with(SseDecoder::new(), input, cuts);
        assert_eq!(error, None);
        events
    }

    #[test]
    fn decodes_fields_comments_and_multiline_data() {
        let input = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\nid: 7\n\ndata:no-space\n\n";
        let events = decode_in_chunks(input, &[]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "message_start".into(),
                    data: "{\"a\":1}".into(),
                    id: None
                },
                SseEvent {
                    event: String::new(),
                    data: "line1\nline2".into(),
                    id: Some("7".into())
                },
                SseEvent {
                    event: String::new(),
                    data: "no-space".into(),
                    id: Some("7".into())
                },
            ]
        );
    }

    #[test]
    fn handles_crlf_split_between_chunks_and_unterminated_last_event() {
        let input = b"data: a\r\n\r\ndata: b";
        let events = decode_in_chunks(input, &[8, 9, 10]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "a");
        assert_eq!(events[1].data, "b");
    }

    #[test]
    fn empty_chunk_between_cr_and_lf_is_not_a_blank_line() {
        let input = b"event: e\r\ndata: a\r\ndata: b\r\n\r\n";
        let expected = vec![SseEvent {
            event: "e".into(),
            data: "a\nb".into(),
            id: None,
        }];
        // Cut right after each `\r`, with an empty chunk in between.
        assert_eq!(decode_in_chunks(input, &[9, 9]), expected);
        assert_eq!(decode_in_chunks(input, &[18, 18, 18]), expected);
        assert_eq!(decode_in_chunks(input, &[9, 9, 18, 18, 27, 27]), expected);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(decode_in_chunks(b"event: ping\n\n", &[]).is_empty());
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        let decoder = SseDecoder::with_limits(8, 1024);
        let (events, error) = decode_with(decoder, b"data: ab\n\n", &[3]);
        assert_eq!(error, None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "ab");
    }

    #[test]
    fn over_long_line_is_an_error_without_buffering_it() {
        let mut decoder = SseDecoder::with_limits(16, 1024);
        let mut events = decoder.feed(b"data: ok\n\n");
        for _ in 0..1000 {
            events.extend(decoder.feed(b"x"));
            assert!(decoder.buffer.len() <= 16);
        }
        assert_eq!(
            decoder.error(),
            Some(SseLimitError::LineTooLong { limit: 16 })
        );
        assert_eq!(
            decoder.error().map(|error| error.to_string()).as_deref(),
            Some("SSE line exceeded 16 bytes")
        );
        // The decoder has stopped: nothing more comes out of it.
        assert!(decoder.feed(b"\n\ndata: later\n\n").is_empty());
        assert_eq!(decoder.finish(), None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "ok");
    }

    #[test]
    fn over_long_line_in_one_chunk_is_an_error() {
        let decoder = SseDecoder::with_limits(16, 1024);
        let input = b"data: a\n\ndata: 0123456789abcdef\n\ndata: b\n\n";
        let (events, error) = decode_with(decoder, input, &[]);
        assert_eq!(error, Some(SseLimitError::LineTooLong { limit: 16 }));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn over_large_event_is_an_error() {
        let decoder = SseDecoder::with_limits(64, 10);
        // "123456" + "\n" + "789" is exactly 10 bytes; one more is too many.
        let input = b"data: a\n\ndata: 123456\ndata: 789\n\ndata: 123456\ndata: 7890\n\n";
        let (events, error) = decode_with(decoder, input, &[]);
        assert_eq!(error, Some(SseLimitError::EventTooLarge { limit: 10 }));
        let data: Vec<_> = events.iter().map(|event| event.data.as_str()).collect();
        assert_eq!(data, ["a", "123456\n789"]);
        assert_eq!(
            SseLimitError::EventTooLarge { limit: 10 }.to_string(),
            "SSE event data exceeded 10 bytes"
        );
    }

    #[test]
    fn over_large_unterminated_last_event_is_an_error() {
        let decoder = SseDecoder::with_limits(64, 4);
        let (events, error) = decode_with(decoder, b"data: ab\ndata: cd", &[]);
        assert_eq!(error, Some(SseLimitError::EventTooLarge { limit: 4 }));
        assert!(events.is_empty());
    }

    #[test]
    fn long_line_fed_byte_by_byte_is_linear() {
        // Each byte is scanned once and appended once: a megabyte fed one
        // byte at a time is a million small steps, not a million rescans.
        let mut input = b"data: ".to_vec();
        input.resize(1024 * 1024, b'x');
        input.extend_from_slice(b"\n\n");
        let mut decoder = SseDecoder::with_limits(2 * 1024 * 1024, 2 * 1024 * 1024);
        let mut events = Vec::new();
        for byte in input.chunks(1) {
            events.extend(decoder.feed(byte));
        }
        assert_eq!(decoder.error(), None);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 1024 * 1024 - 6);
    }

    type Stream = (Vec<(String, Vec<String>)>, String);

    fn arbitrary_stream() -> impl Strategy<Value = Stream> {
        let field = "[a-z_]{0,8}";
        let data = prop::collection::vec("[^\r\n]{0,20}", 1..3);
        let newline = prop_oneof![
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\r".to_owned())
        ];
        (prop::collection::vec((field, data), 0..8), newline)
    }

    fn render((events, newline): &Stream) -> String {
        let mut text = String::new();
        for (event, data) in events {
            if !event.is_empty() {
                text.push_str(&format!("event: {event}{newline}"));
            }
            for line in data {
                text.push_str(&format!("data: {line}{newline}"));
            }
            text.push_str(newline);
        }
        text
    }

    /// Cut points anywhere in a text of `len` bytes, in order; a flagged cut
    /// is repeated, which feeds an empty chunk.
    fn cut_points(cuts: &[(prop::sample::Index, bool)], len: usize) -> Vec<usize> {
        let mut points = Vec::new();
        for (index, twice) in cuts {
            let point = index.index(len + 1);
            points.push(point);
            if *twice {
                points.push(point);
            }
        }
        points.sort_unstable();
        points
    }

    proptest! {
        /// However the bytes are cut, the events are those of the uncut stream.
        #[test]
        fn chunking_never_changes_the_events(
            stream in arbitrary_stream(),
            cuts in prop::collection::vec(any::<(prop::sample::Index, bool)>(), 0..20),
        ) {
            let text = render(&stream);
            let cuts = cut_points(&cuts, text.len());
            let whole = decode_in_chunks(text.as_bytes(), &[]);
            let split = decode_in_chunks(text.as_bytes(), &cuts);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), stream.0.len());
            for (decoded, (event, data)) in whole.iter().zip(&stream.0) {
                prop_assert_eq!(&decoded.event, event);
                prop_assert_eq!(&decoded.data, &data.join("\n"));
            }
        }

        /// With small limits, the events and the error do not depend on the
        /// chunking either.
        #[test]
        fn chunking_never_changes_limit_errors(
            stream in arbitrary_stream(),
            cuts in prop::collection::vec(any::<(prop::sample::Index, bool)>(), 0..20),
            max_line in 0usize..40,
            max_event in 0usize..60,
        ) {
            let text = render(&stream);
            let cuts = cut_points(&cuts, text.len());
            let whole = decode_with(SseDecoder::with_limits(max_line, max_event), text.as_bytes(), &[]);
            let split = decode_with(SseDecoder::with_limits(max_line, max_event), text.as_bytes(), &cuts);
            prop_assert_eq!(whole, split);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let _ = decode_with(SseDecoder::new(), &bytes, &[cut]);
            let _ = decode_with(SseDecoder::with_limits(8, 8), &bytes, &[cut, cut]);
        }
    }
}
