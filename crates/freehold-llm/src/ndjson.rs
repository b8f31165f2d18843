//! An incremental decoder of newline-delimited JSON (Ollama's stream format),
//! fed with byte chunks split anywhere.

/// A line that is not valid JSON.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON line in stream: {error} (line starts with {preview:?})")]
pub struct NdjsonError {
    /// The parser's complaint.
    pub error: serde_json::Error,
    /// The first characters of the line.
    pub preview: String,
}

/// Splits bytes into lines and parses each non-blank line as JSON.
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    buffer: Vec<u8>,
}

impl NdjsonDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the values of the lines it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Result<serde_json::Value, NdjsonError>> {
        self.buffer.extend_from_slice(chunk);
        let mut values = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            if let Some(value) = parse_line(&self.buffer[start..end]) {
                values.push(value);
            }
            start = end + 1;
        }
        self.buffer.drain(..start);
        values
    }

    /// Ends the stream, parsing a last line that had no newline.
    pub fn finish(&mut self) -> Option<Result<serde_json::Value, NdjsonError>> {
        let line = std::mem::take(&mut self.buffer);
        parse_line(&line)
    }
}

fn parse_line(line: &[u8]) -> Option<Result<serde_json::Value, NdjsonError>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(serde_json::from_slice(line).map_err(|error| NdjsonError {
        error,
        preview: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode(input: &[u8], cuts: &[usize]) -> Vec<serde_json::Value> {
        let mut decoder = NdjsonDecoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts {
            let cut = cut.clamp(last, input.len());
            out.extend(
                decoder
                    .feed(&input[last..cut])
                    .into_iter()
                    .map(|v| v.unwrap()),
            );
            last = cut;
        }
        out.extend(decoder.feed(&input[last..]).into_iter().map(|v| v.unwrap()));
        out.extend(decoder.finish().map(|v| v.unwrap()));
        out
    }

    #[test]
    fn decodes_lines_blank_lines_crlf_and_unterminated_tail() {
        let input = "{\"a\":\"é\"}\r\n\n{\"b\":2}\n{\"c\":3}".as_bytes();
        assert_eq!(
            decode(input, &[3, 4]),
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

    proptest! {
        #[test]
        fn chunking_never_changes_the_values(
            texts in prop::collection::vec("\\PC{0,20}", 0..10),
            cuts in prop::collection::vec(0usize..400, 0..16),
        ) {
            let values: Vec<_> = texts.iter().map(|t| json!({"message": {"content": t}})).collect();
            let mut input = String::new();
            for value in &values {
                input.push_str(&value.to_string());
                input.push('\n');
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode(input.as_bytes(), &cuts), values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = NdjsonDecoder::new();
            let _ = decoder.feed(&bytes);
            let _ = decoder.finish();
        }
    }
}
