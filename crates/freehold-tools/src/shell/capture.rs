//! A command's output, kept to a fixed size: the first and the last part,
//! with the middle counted but dropped.

use std::collections::VecDeque;

/// Bytes kept from the start of the output.
const HEAD_BYTES: usize = 15_000;
/// Bytes kept from the end of the output.
const TAIL_BYTES: usize = 15_000;

/// The output so far.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Bytes dropped between head and tail.
    dropped: usize,
    /// Newlines among them.
    dropped_lines: usize,
}

impl Capture {
    /// Add output.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        let room = HEAD_BYTES - self.head.len();
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        // Only what can stay in the tail is copied; the rest is counted.
        if bytes.len() > TAIL_BYTES {
            let (skip, keep) = bytes.split_at(bytes.len() - TAIL_BYTES);
            self.drop_bytes(skip.iter().copied());
            bytes = keep;
        }
        self.tail.extend(bytes);
        if self.tail.len() > TAIL_BYTES {
            let excess = self.tail.len() - TAIL_BYTES;
            let dropped: Vec<u8> = self.tail.drain(..excess).collect();
            self.drop_bytes(dropped.into_iter());
        }
    }

    fn drop_bytes(&mut self, bytes: impl Iterator<Item = u8>) {
        for byte in bytes {
            self.dropped += 1;
            self.dropped_lines += usize::from(byte == b'\n');
        }
    }

    /// The output as text, with `[... N lines omitted ...]` where the
    /// middle was dropped (cut at line boundaries).
    pub(crate) fn finish(&self) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if self.dropped == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        // Cut at line ends so whole lines are shown; output without any
        // newline (one huge line) is cut mid-line instead.
        let head_end = self
            .head
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(self.head.len(), |at| at + 1);
        let tail_newline = tail.iter().position(|b| *b == b'\n');
        let tail_start = tail_newline.map_or(0, |at| at + 1);
        let omitted = self.dropped_lines + usize::from(tail_newline.is_some());
        let mut out = String::from_utf8_lossy(&self.head[..head_end]).into_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("[... {omitted} lines omitted ...]\n"));
        out.push_str(&String::from_utf8_lossy(&tail[tail_start..]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut capture = Capture::default();
        capture.push(b"hello\n");
        capture.push(b"world");
        assert_eq!(capture.finish(), "hello\nworld");
    }

    #[test]
    fn large_output_keeps_head_and_tail() {
        let mut capture = Capture::default();
        for n in 0..100_000 {
            capture.push(format!("line {n}\n").as_bytes());
        }
        let out = capture.finish();
        assert!(out.starts_with("line 0\nline 1\n"));
        assert!(out.ends_with("line 99998\nline 99999\n"));
        assert!(out.len() <= HEAD_BYTES + TAIL_BYTES + 40, "{}", out.len());
        // Every line is either shown or counted as omitted.
        let shown = out.lines().filter(|line| line.starts_with("line ")).count();
        let marker = out.lines().find(|line| line.starts_with("[... ")).unwrap();
        let omitted: usize = marker.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(shown + omitted, 100_000, "{marker}");
    }

    #[test]
    fn one_huge_chunk_is_handled() {
        let mut capture = Capture::default();
        let text: String = (0..20_000).map(|n| format!("{n}\n")).collect();
        capture.push(text.as_bytes());
        let out = capture.finish();
        assert!(out.starts_with("0\n1\n"));
        assert!(out.ends_with("19999\n"));
        assert!(out.contains(" lines omitted ...]\n"));
    }

    #[test]
    fn one_endless_line_still_shows_its_ends() {
        let mut capture = Capture::default();
        capture.push(&[b'a'; 20_000]);
        capture.push(&[b'b'; 20_000]);
        let out = capture.finish();
        assert!(out.starts_with("aaaa"));
        assert!(out.ends_with("bbbb"));
        assert!(out.contains("\n[... 0 lines omitted ...]\n"));
    }
}
