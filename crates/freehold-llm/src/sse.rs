//! An incremental decoder of Server-Sent Events (the `text/event-stream`
//! format of the WHATWG HTML standard), fed with byte chunks split anywhere.

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

/// Turns bytes into [`SseEvent`]s. Lines may end in `\n`, `\r\n` or `\r`;
/// chunks may split anything, including a UTF-8 sequence or a `\r\n` pair.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    /// A `\r` ended the previous chunk, so a `\n` starting the next one is
    /// part of the same line ending.
    pending_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    started: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut bytes = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    self.buffer.extend_from_slice(&bytes[start..i]);
                    let line = std::mem::take(&mut self.buffer);
                    self.line(&line, &mut events);
                    if bytes[i] == b'\r' {
                        if i + 1 == bytes.len() {
                            self.pending_cr = true;
                        } else if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buffer.extend_from_slice(&bytes[start..]);
        events
    }

    /// Ends the stream: an event left without its closing blank line is
    /// dispatched (servers that close the connection right after the last
    /// `data:` line are common).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut events = Vec::new();
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            self.line(&line, &mut events);
        }
        self.dispatch(&mut events);
        events.pop()
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
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
            return;
        }
        if line[0] == b':' {
            return; // A comment, used as a keep-alive.
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
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            _ => {} // `retry:` and unknown fields are ignored.
        }
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

    fn decode_in_chunks(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        let mut last = 0;
        for &cut in cuts {
            let cut = cut.min(input.len()).max(last);
            events.extend(decoder.feed(&input[last..cut]));
            last = cut;
        }
        events.extend(decoder.feed(&input[last..]));
        events.extend(decoder.finish());
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
    fn event_without_data_is_not_dispatched() {
        assert!(decode_in_chunks(b"event: ping\n\n", &[]).is_empty());
    }

    fn arbitrary_stream() -> impl Strategy<Value = (Vec<(String, String)>, String)> {
        let field = "[a-z_]{0,8}";
        let data = "[^\r\n]{0,40}";
        let newline = prop_oneof![
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\r".to_owned())
        ];
        (prop::collection::vec((field, data), 0..8), newline)
    }

    proptest! {
        /// However the bytes are cut, the events are those of the uncut stream.
        #[test]
        fn chunking_never_changes_the_events(
            (events, newline) in arbitrary_stream(),
            cuts in prop::collection::vec(0usize..600, 0..20),
        ) {
            let mut text = String::new();
            for (event, data) in &events {
                if !event.is_empty() {
                    text.push_str(&format!("event: {event}{newline}"));
                }
                text.push_str(&format!("data: {data}{newline}{newline}"));
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let whole = decode_in_chunks(text.as_bytes(), &[]);
            let split = decode_in_chunks(text.as_bytes(), &cuts);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), events.len());
            for (decoded, (event, data)) in whole.iter().zip(&events) {
                prop_assert_eq!(&decoded.event, event);
                prop_assert_eq!(&decoded.data, data);
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let _ = decode_in_chunks(&bytes, &[cut]);
        }
    }
}
