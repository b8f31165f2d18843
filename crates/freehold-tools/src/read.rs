//! The `read` tool: a text file with numbered lines, a window of it for
//! large files.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use serde::Deserialize;

use crate::files::{blocking, io_error};
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths};

/// Larger files are read only in windows (offset/limit).
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Lines shown when no limit is given.
const DEFAULT_LIMIT: usize = 2000;
/// Longer lines are cut (minified code would flood the context).
const MAX_LINE_CHARS: usize = 2000;
/// The whole answer stops growing past this, whatever the limit.
const MAX_OUTPUT_CHARS: usize = 100_000;
/// How much of the start of a file is checked for NUL bytes.
const BINARY_PROBE_BYTES: u64 = 8192;

/// The `read` tool.
pub(crate) struct Read;

#[derive(Debug, Deserialize)]
struct Args {
    path: String,
    #[serde(default, deserialize_with = "args::lenient_u64")]
    offset: Option<u64>,
    #[serde(default, deserialize_with = "args::lenient_u64")]
    limit: Option<u64>,
}

#[async_trait]
impl Tool for Read {
    fn name(&self) -> &'static str {
        "read"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read".into(),
            description: "Read a text file; lines are numbered from 1. For long files pass offset (first line) and limit (number of lines).".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "offset": {"type": "integer"},
                    "limit": {"type": "integer"}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Read
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        args::string_field(arguments, "path")
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("read", arguments)?;
        let context = context.clone();
        blocking(move || read(&context, &args)).await
    }
}

fn read(context: &ToolContext, args: &Args) -> Result<ToolOutput, ToolError> {
    let path = paths::resolve(&context.root, &args.path)?;
    let shown = paths::display(&context.root, &path);
    let metadata = std::fs::metadata(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ToolError::failed(format!(
            "{shown} does not exist; use glob to find the right path"
        )),
        _ => io_error(format!("reading {shown}"))(error),
    })?;
    if metadata.is_dir() {
        return Err(ToolError::failed(format!(
            "{shown} is a directory, not a file; use glob with path \"{shown}\" to list its files"
        )));
    }
    let windowed = args.offset.is_some() || args.limit.is_some();
    let huge = metadata.len() > MAX_FILE_BYTES;
    if huge && !windowed {
        return Err(ToolError::failed(format!(
            "{shown} is too large to read at once ({} MiB); read a part with offset and limit, or search it with grep",
            metadata.len() / (1024 * 1024)
        )));
    }

    let file = File::open(&path).map_err(io_error(format!("reading {shown}")))?;
    let mut probe = Vec::new();
    let mut file = BufReader::with_capacity(64 * 1024, file);
    (&mut file)
        .take(BINARY_PROBE_BYTES)
        .read_to_end(&mut probe)
        .map_err(io_error(format!("reading {shown}")))?;
    if probe.contains(&0) {
        return Err(ToolError::failed(format!(
            "{shown} is a binary file; read only shows text files"
        )));
    }
    context.files.mark_seen(&path);
    if probe.is_empty() {
        return Ok(ToolOutput::text(format!("{shown} is empty.")));
    }

    let first = usize::try_from(args.offset.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
    let limit = args
        .limit
        .and_then(|limit| usize::try_from(limit).ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(DEFAULT_LIMIT);
    let window = Window::collect(std::io::Cursor::new(probe).chain(file), first, limit, huge)
        .map_err(io_error(format!("reading {shown}")))?;
    // Small models fill optional arguments with any number: an offset past
    // the end of a short file shows the file from the start (with a note)
    // rather than an error that teaches them nothing.
    if window.last == 0
        && first > 1
        && !huge
        && let Some(total) = window.total
    {
        let again = File::open(&path).map_err(io_error(format!("reading {shown}")))?;
        let whole = Window::collect(BufReader::new(again), 1, limit, false)
            .map_err(io_error(format!("reading {shown}")))?;
        let mut output = whole.render(&shown, 1)?;
        output.content = format!(
            "(offset {first} is past the end of {shown}, which has {total} lines; showing it from line 1)\n{}",
            output.content
        );
        return Ok(output);
    }
    window.render(&shown, first)
}

/// The lines of a file shown to the model, and how many it has.
struct Window {
    out: String,
    /// The last line shown (0 when none).
    last: usize,
    /// Lines in the file; `None` when counting stopped early (huge file).
    total: Option<usize>,
}

impl Window {
    fn collect(
        mut reader: impl BufRead,
        first: usize,
        limit: usize,
        huge: bool,
    ) -> std::io::Result<Self> {
        let mut window = Self {
            out: String::new(),
            last: 0,
            total: None,
        };
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                window.total = Some(number);
                return Ok(window);
            }
            number += 1;
            if number < first {
                continue;
            }
            let full = number - first >= limit || window.out.len() >= MAX_OUTPUT_CHARS;
            if !full {
                window.push(number, &line);
            } else if huge {
                // Counting the rest of a huge file would cost as much as
                // reading it; the note just says there is more.
                return Ok(window);
            }
        }
    }

    fn push(&mut self, number: usize, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        self.out.push_str(&format!("{number:>6}\t"));
        match text.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => {
                self.out.push_str(&text[..cut]);
                self.out.push_str(&format!(
                    " [... line truncated, {} chars in all]",
                    text.chars().count()
                ));
            }
            None => self.out.push_str(&text),
        }
        self.out.push('\n');
        self.last = number;
    }

    fn render(mut self, shown: &str, first: usize) -> Result<ToolOutput, ToolError> {
        if self.last == 0 {
            let total = self.total.unwrap_or(0);
            return Err(ToolError::failed(format!(
                "{shown} has {total} lines; offset {first} is past the end"
            )));
        }
        match self.total {
            Some(total) if first == 1 && self.last == total => {}
            Some(total) => self.out.push_str(&format!(
                "(showing lines {first}-{} of {total}; use offset to read more)\n",
                self.last
            )),
            None => self.out.push_str(&format!(
                "(showing lines {first}-{}; the file goes on; use offset to read more)\n",
                self.last
            )),
        }
        Ok(ToolOutput::text(self.out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{call, project, put};

    #[tokio::test]
    async fn numbers_lines_and_marks_the_file_seen() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "one\r\ntwo\nthree");
        let out = call(&Read, &context, json!({"path": "a.txt"}))
            .await
            .unwrap();
        assert_eq!(out.content, "     1\tone\n     2\ttwo\n     3\tthree\n");
        assert!(
            context
                .files
                .was_seen(&paths::resolve(dir.path(), "a.txt").unwrap())
        );
    }

    #[tokio::test]
    async fn offset_and_limit_show_a_window_with_a_note() {
        let (dir, context) = project();
        let text: String = (1..=10).map(|n| format!("line {n}\n")).collect();
        put(dir.path(), "a.txt", &text);
        let out = call(
            &Read,
            &context,
            json!({"path": "a.txt", "offset": 4, "limit": "2"}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.content,
            "     4\tline 4\n     5\tline 5\n(showing lines 4-5 of 10; use offset to read more)\n"
        );
        let out = call(&Read, &context, json!({"path": "a.txt", "offset": 11}))
            .await
            .unwrap();
        assert!(
            out.content.starts_with(
                "(offset 11 is past the end of a.txt, which has 10 lines; showing it from line 1)\n     1\tline 1\n"
            ),
            "{}",
            out.content
        );
    }

    #[tokio::test]
    async fn default_limit_is_2000_lines() {
        let (dir, context) = project();
        let text: String = (1..=2500).map(|n| format!("{n}\n")).collect();
        put(dir.path(), "big.txt", &text);
        let out = call(&Read, &context, json!({"path": "big.txt"}))
            .await
            .unwrap();
        assert!(out.content.contains("  2000\t2000\n"));
        assert!(!out.content.contains("2001\t"));
        assert!(
            out.content
                .ends_with("(showing lines 1-2000 of 2500; use offset to read more)\n")
        );
    }

    #[tokio::test]
    async fn long_lines_are_truncated() {
        let (dir, context) = project();
        put(dir.path(), "min.js", "x".repeat(5000));
        let out = call(&Read, &context, json!({"path": "min.js"}))
            .await
            .unwrap();
        assert!(
            out.content
                .contains("[... line truncated, 5000 chars in all]")
        );
        assert!(out.content.len() < 2100);
    }

    #[tokio::test]
    async fn refuses_binaries_directories_and_missing_files() {
        let (dir, context) = project();
        put(dir.path(), "img.png", b"\x89PNG\r\n\x1a\n\0\0\0");
        put(dir.path(), "sub/x.txt", "x");
        let error = call(&Read, &context, json!({"path": "img.png"}))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("img.png is a binary file"),
            "{error}"
        );
        let error = call(&Read, &context, json!({"path": "sub"}))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("sub is a directory"), "{error}");
        assert!(error.to_string().contains("glob"), "{error}");
        let error = call(&Read, &context, json!({"path": "nope.txt"}))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "nope.txt does not exist; use glob to find the right path"
        );
        let error = call(&Read, &context, json!({"path": "../x"}))
            .await
            .unwrap_err();
        assert!(matches!(error, ToolError::OutsideProject { .. }));
        let error = call(&Read, &context, json!({})).await.unwrap_err();
        assert!(matches!(
            error,
            ToolError::InvalidArguments { tool: "read", .. }
        ));
    }

    #[tokio::test]
    async fn empty_file_says_so() {
        let (dir, context) = project();
        put(dir.path(), "empty.txt", "");
        let out = call(&Read, &context, json!({"path": "empty.txt"}))
            .await
            .unwrap();
        assert_eq!(out.content, "empty.txt is empty.");
    }

    #[tokio::test]
    async fn huge_files_need_a_window() {
        let (dir, context) = project();
        let line = "0123456789abcdef".repeat(8) + "\n";
        let text = line.repeat((MAX_FILE_BYTES as usize / line.len()) + 10);
        put(dir.path(), "huge.log", &text);
        let error = call(&Read, &context, json!({"path": "huge.log"}))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("too large"), "{error}");
        assert!(error.to_string().contains("offset and limit"), "{error}");
        let out = call(
            &Read,
            &context,
            json!({"path": "huge.log", "offset": 3, "limit": 2}),
        )
        .await
        .unwrap();
        assert!(out.content.starts_with("     3\t0123"));
        assert!(
            out.content
                .ends_with("(showing lines 3-4; the file goes on; use offset to read more)\n")
        );
    }
}
