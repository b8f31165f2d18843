//! An incremental decoder of newline-delimited JSON (Ollama's stream format),
//! fed with byte chunks split anywhere.
//!
//! The decoder holds at most one partial line, bounded by [`MAX_LINE_BYTES`]
//! (or the limit given to [`NdjsonDecoder::with_limits`]); each byte is
//! scanned once, however small the chunks.

/// The longest line, in bytes without its `\n`, that [`NdjsonDecoder::new`]
/// accepts.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// A line the decoder could not turn into a value.
#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    /// A line that is not valid JSON.
    #[error("invalid JSON line in stream: {error} (line starts with {preview:?})")]
    InvalidJson {
        /// The parser's complaint.
        error: serde_json::Error,
        /// The first characters of the line.
        preview: String,
    },
    /// A line longer than the decoder's limit; its bytes were dropped.
    #[error("JSON line in stream exceeded {limit} bytes")]
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Splits bytes into lines and parses each non-blank line as JSON.
///
/// A line longer than the limit yields one [`NdjsonError::LineTooLong`] as
/// soon as it passes the limit; the rest of it is skipped without being
/// kept, and decoding resumes with the next line.
#[derive(Debug)]
pub struct NdjsonDecoder {
    /// The start of a line whose `\n` has not arrived yet. It holds no
    /// `\n`, so it is never scanned again.
    buffer: Vec<u8>,
    /// The current line passed the limit and was reported: its bytes are
    /// dropped up to its `\n`.
    skipping: bool,
    max_line_bytes: usize,
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        Self::with_limits(MAX_LINE_BYTES)
    }
}

impl NdjsonDecoder {
    /// A decoder at the start of a stream, accepting lines of up to
    /// [`MAX_LINE_BYTES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder at the start of a stream that accepts lines of at most
    /// `max_line_bytes` bytes (without the `\n`).
    pub fn with_limits(max_line_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            skipping: false,
            max_line_bytes,
        }
    }

    /// Feeds a chunk; returns the values of the lines it completed, and an
    /// [`NdjsonError::LineTooLong`] for a line that passed the limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Result<serde_json::Value, NdjsonError>> {
        let mut values = Vec::new();
        let mut bytes = chunk;
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let tail = &bytes[..end];
            bytes = &bytes[end + 1..];
            if std::mem::take(&mut self.skipping) {
                continue; // Already reported.
            }
            if self.buffer.len() + tail.len() > self.max_line_bytes {
                self.buffer.clear();
                values.push(Err(self.too_long()));
                continue;
            }
            let value = if self.buffer.is_empty() {
                parse_line(tail)
            } else {
                self.buffer.extend_from_slice(tail);
                let value = parse_line(&self.buffer);
                self.buffer.clear();
                value
            };
            values.extend(value);
        }
        if !self.skipping {
            if self.buffer.len() + bytes.len() > self.max_line_bytes {
                self.buffer = Vec::new();
                self.skipping = true;
                values.push(Err(self.too_long()));
            } else {
                self.buffer.extend_from_slice(bytes);
            }
        }
        values
    }

    /// Ends the stream, parsing a last line that had no newline.
    pub fn finish(&mut self) -> Option<Result<serde_json::Value, NdjsonError>> {
        self.skipping = false;
        let line = std::mem::take(&mut self.buffer);
        parse_line(&line)
    }

    fn too_long(&self) -> NdjsonError {
        NdjsonError::LineTooLong {
            limit: self.max_line_bytes,
        }
    }
}

fn parse_line(line: &[u8]) -> Option<Result<serde_json::Value, NdjsonError>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(line).map_err(|error| NdjsonError::InvalidJson {
            error,
            preview: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Feeds `input` cut at `cuts` (clamped and kept in order; a repeated
    /// cut feeds an empty chunk) and finishes; errors become their message.
    fn decode_results(
        mut decoder: NdjsonDecoder,
        input: &[u8],
        cuts: &[usize],
    ) -> Vec<Result<serde_json::Value, String>> {
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts {
            let cut = cut.clamp(last, input.len());
            out.extend(decoder.feed(&input[last..cut]));
            last = cut;
        }
        out.extend(decoder.feed(&input[last..]));
        out.extend(decoder.finish());
        out.into_iter()
            .map(|result| result.map_err(|error| error.to_string()))
            .collect()
    }

    fn decode(input: &[u8], cuts: &[usize]) -> Vec<serde_json::Value> {
        decode_results(NdjsonDecoder::new(), input, cuts)
            .into_iter()
            .map(|v| v.unwrap())
            .collect()
    }

    #[test]
    fn decodes_lines_blank_lines_crlf_and_unterminated_tail() {
        let input = "{\"a\":\"é\"}\r\n\n{\"b\":2}\n{\"c\":3}".as_bytes();
        assert_eq!(
            decode(input, &[3, 4, 4]),
            vec![json!({"a":"é"}), json!({"b":2}), json!({"c":3})]
        );
    }

    #[test]
    fn reports_invalid_lines() {
        let mut decoder = NdjsonDecoder::new();
        let results = decoder.feed(b"{oops}\n");
        assert!(
            results[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("{oops}")
        );
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        // A `\r` before the `\n` counts: the first line is 8 bytes long.
        let input = b"{\"a\":1}\r\n{\"b\":2}";
        assert_eq!(
            decode_results(NdjsonDecoder::with_limits(8), input, &[2]),
            vec![Ok(json!({"a":1})), Ok(json!({"b":2}))]
        );
        assert_eq!(
            decode_results(NdjsonDecoder::with_limits(7), input, &[2]),
            vec![
                Err("JSON line in stream exceeded 7 bytes".to_owned()),
                Ok(json!({"b":2}))
            ]
        );
    }

    #[test]
    fn over_long_line_is_one_error_and_is_skipped() {
        let input = b"{\"a\":1}\n{\"long\":\"0123456789\"}\n{\"b\":2}\n";
        let expected = vec![
            Ok(json!({"a":1})),
            Err("JSON line in stream exceeded 16 bytes".to_owned()),
            Ok(json!({"b":2})),
        ];
        assert_eq!(
            decode_results(NdjsonDecoder::with_limits(16), input, &[]),
            expected
        );
        let byte_cuts: Vec<usize> = (0..input.len()).collect();
        assert_eq!(
            decode_results(NdjsonDecoder::with_limits(16), input, &byte_cuts),
            expected
        );
    }

    #[test]
    fn over_long_line_is_reported_before_its_end_and_not_kept() {
        let mut decoder = NdjsonDecoder::with_limits(16);
        let mut results = Vec::new();
        for _ in 0..1000 {
            results.extend(decoder.feed(b"x"));
            assert!(decoder.buffer.len() <= 16);
        }
        assert_eq!(results.len(), 1);
        assert!(matches!(
            results[0],
            Err(NdjsonError::LineTooLong { limit: 16 })
        ));
        // The unterminated over-long line was already reported.
        assert!(decoder.finish().is_none());
    }

    #[test]
    fn long_line_fed_byte_by_byte_is_linear() {
        // The buffer only ever holds bytes already known to contain no
        // newline, so each byte is scanned once: a megabyte fed one byte at a
        // time is a million small steps, not a million rescans.
        let text = "x".repeat(1024 * 1024);
        let input = format!("{}\n", json!({ "s": text }));
        let mut decoder = NdjsonDecoder::with_limits(2 * 1024 * 1024);
        let mut values = Vec::new();
        for byte in input.as_bytes().chunks(1) {
            values.extend(decoder.feed(byte));
        }
        assert!(decoder.finish().is_none());
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].as_ref().unwrap(), &json!({ "s": text }));
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
        #[test]
        fn chunking_never_changes_the_values(
            texts in prop::collection::vec("\\PC{0,20}", 0..10),
            cuts in prop::collection::vec(any::<(prop::sample::Index, bool)>(), 0..16),
        ) {
            let values: Vec<_> = texts.iter().map(|t| json!({"message": {"content": t}})).collect();
            let mut input = String::new();
            for value in &values {
                input.push_str(&value.to_string());
                input.push('\n');
            }
            let cuts = cut_points(&cuts, input.len());
            prop_assert_eq!(decode(input.as_bytes(), &cuts), values);
        }

        /// With a small limit, the values and errors do not depend on the
        /// chunking, and nothing past the limit is kept.
        #[test]
        fn chunking_never_changes_limit_errors(
            lines in prop::collection::vec("[ -~]{0,40}", 0..10),
            crlf in any::<bool>(),
            unterminated in any::<bool>(),
            cuts in prop::collection::vec(any::<(prop::sample::Index, bool)>(), 0..16),
            max_line in 0usize..40,
        ) {
            let newline = if crlf { "\r\n" } else { "\n" };
            let mut input = lines.join(newline);
            if !unterminated {
                input.push_str(newline);
            }
            let cuts = cut_points(&cuts, input.len());
            let whole = decode_results(NdjsonDecoder::with_limits(max_line), input.as_bytes(), &[]);
            let split = decode_results(NdjsonDecoder::with_limits(max_line), input.as_bytes(), &cuts);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = NdjsonDecoder::new();
            let _ = decoder.feed(&bytes);
            let _ = decoder.finish();
            let mut decoder = NdjsonDecoder::with_limits(8);
            let _ = decoder.feed(&bytes);
            let _ = decoder.finish();
        }
    }
}
