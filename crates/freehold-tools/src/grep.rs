//! The `grep` tool: a regex search over the project with ripgrep's crates.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use ignore::WalkState;
use ignore::overrides::OverrideBuilder;
use serde::Deserialize;

use crate::files::blocking;
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths, walk};

/// At most this many matching lines (or files) are listed.
const MAX_RESULTS: usize = 200;
/// Longer matching lines are cut.
const MAX_LINE_CHARS: usize = 300;

/// The `grep` tool.
pub(crate) struct Grep;

#[derive(Debug, Deserialize)]
struct Args {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default, deserialize_with = "args::lenient_bool")]
    ignore_case: bool,
    #[serde(default)]
    output: Output,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Output {
    /// Only the names of files with a match.
    Files,
    /// `path:line:text` for every matching line.
    #[default]
    Lines,
}

#[async_trait]
impl Tool for Grep {
    fn name(&self) -> &'static str {
        "grep"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "grep".into(),
            description: "Search file contents with a regex; prints path:line:text. path: file or directory; glob: filter files, e.g. \"*.rs\"; output \"files\" lists only file names.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string"},
                    "glob": {"type": "string"},
                    "ignore_case": {"type": "boolean"},
                    "output": {"type": "string", "enum": ["lines", "files"]}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Read
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        args::string_field(arguments, "path").or_else(|| args::string_field(arguments, "pattern"))
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("grep", arguments)?;
        let context = context.clone();
        blocking(move || grep(&context, &args)).await
    }
}

fn grep(context: &ToolContext, args: &Args) -> Result<ToolOutput, ToolError> {
    let base = paths::resolve(&context.root, args.path.as_deref().unwrap_or(""))?;
    let shown_base = paths::display(&context.root, &base);
    if !base.exists() {
        return Err(ToolError::failed(format!(
            "{shown_base} does not exist; use glob to find the right path"
        )));
    }
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(args.ignore_case)
        // Line-oriented search is what makes ripgrep fast.
        .line_terminator(Some(b'\n'))
        .build(&args.pattern)
        .map_err(|error| {
            ToolError::failed(format!(
                "invalid regex {:?}: {error}\nEscape special characters such as ( [ {{ . * + ? with a backslash to match them literally.",
                args.pattern
            ))
        })?;
    let mut walker = walk::builder(&base);
    if let Some(glob) = args.glob.as_deref().filter(|glob| !glob.trim().is_empty()) {
        let overrides = OverrideBuilder::new(&base)
            .add(glob.trim())
            .and_then(|builder| builder.build())
            .map_err(|error| ToolError::failed(format!("invalid glob {glob:?}: {error}")))?;
        walker.overrides(overrides);
    }

    let found = Found::default();
    let root = paths::root(&context.root);
    walker.build_parallel().run(|| {
        let matcher = matcher.clone();
        let found = &found;
        let root = &root;
        let mut searcher = SearcherBuilder::new()
            .binary_detection(BinaryDetection::quit(b'\0'))
            .line_number(true)
            .build();
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                return WalkState::Continue;
            };
            if entry.file_type().is_some_and(|kind| kind.is_file()) {
                search_file(
                    &mut searcher,
                    &matcher,
                    entry.path(),
                    root,
                    args.output,
                    found,
                );
            }
            WalkState::Continue
        })
    });
    Ok(ToolOutput::text(found.render(
        args.output,
        &args.pattern,
        &shown_base,
    )))
}

/// Search one file and add what it matched.
fn search_file(
    searcher: &mut Searcher,
    matcher: &RegexMatcher,
    path: &Path,
    root: &Path,
    output: Output,
    found: &Found,
) {
    let mut collector = Collector {
        lines: Vec::new(),
        count: 0,
        binary: false,
        first_only: output == Output::Files,
    };
    // Unreadable files are skipped, as ripgrep does.
    if searcher.search_path(matcher, path, &mut collector).is_err() || collector.binary {
        return;
    }
    if collector.count > 0 {
        let shown = paths::display(root, path);
        found.add(shown, collector.lines, collector.count);
    }
}

/// One file's matches.
struct Collector {
    lines: Vec<(u64, String)>,
    count: usize,
    binary: bool,
    /// Stop at the first match (`output: files`).
    first_only: bool,
}

impl Sink for Collector {
    type Error = std::io::Error;

    fn matched(
        &mut self,
        _searcher: &Searcher,
        found: &SinkMatch<'_>,
    ) -> Result<bool, Self::Error> {
        self.count += 1;
        if self.first_only {
            return Ok(false);
        }
        if self.lines.len() < MAX_RESULTS {
            let bytes = found.bytes();
            let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            self.lines
                .push((found.line_number().unwrap_or(0), truncate(bytes)));
        }
        Ok(true)
    }

    fn binary_data(&mut self, _searcher: &Searcher, _offset: u64) -> Result<bool, Self::Error> {
        // Binary files are left out, like ripgrep does when searching a tree.
        self.binary = true;
        Ok(false)
    }
}

fn truncate(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}[...]", &text[..cut]),
        None => text.into_owned(),
    }
}

/// What all search threads found: the lines of the files that sort first
/// (enough for the output, so memory stays bounded on huge result sets)
/// and the total count.
#[derive(Default)]
struct Found {
    files: Mutex<Files>,
    total: AtomicUsize,
}

#[derive(Default)]
struct Files {
    by_path: BTreeMap<String, Vec<(u64, String)>>,
    lines: usize,
    /// Files with a match, counted even when dropped from `by_path`.
    count: usize,
}

impl Found {
    fn add(&self, path: String, lines: Vec<(u64, String)>, count: usize) {
        self.total.fetch_add(count, Ordering::Relaxed);
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.count += 1;
        files.lines += lines.len().max(1);
        files.by_path.insert(path, lines);
        // Files sorting last are dropped while the rest still fill the
        // output; they would not be shown anyway.
        while let Some((_, last)) = files.by_path.last_key_value() {
            let last = last.len().max(1);
            if files.lines - last < MAX_RESULTS {
                break;
            }
            files.lines -= last;
            files.by_path.pop_last();
        }
    }

    fn render(self, output: Output, pattern: &str, shown_base: &str) -> String {
        let total = self.total.into_inner();
        let files = self
            .files
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if files.count == 0 {
            return format!("No matches for {pattern:?} in {shown_base}.");
        }
        let mut out: Vec<String> = Vec::new();
        let (shown, all, what) = match output {
            Output::Files => {
                out.extend(files.by_path.into_keys().take(MAX_RESULTS));
                (out.len(), files.count, "files")
            }
            Output::Lines => {
                'files: for (path, lines) in files.by_path {
                    for (number, text) in lines {
                        if out.len() == MAX_RESULTS {
                            break 'files;
                        }
                        out.push(format!("{path}:{number}:{text}"));
                    }
                }
                (out.len(), total, "matching lines")
            }
        };
        if all > shown {
            out.push(format!(
                "({} more {what} not shown; narrow the pattern, path or glob)",
                all - shown
            ));
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{call, project, put};

    #[tokio::test]
    async fn prints_sorted_path_line_text() {
        let (dir, context) = project();
        put(
            dir.path(),
            "src/b.rs",
            "fn main() {}\nlet x = 1;\nfn other() {}\n",
        );
        put(dir.path(), "a.rs", "// fn in a comment\r\n");
        put(dir.path(), "notes.txt", "fn is short for function\n");
        let out = call(
            &Grep,
            &context,
            json!({"pattern": "fn \\w+", "glob": "*.rs"}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.content,
            "a.rs:1:// fn in a comment\nsrc/b.rs:1:fn main() {}\nsrc/b.rs:3:fn other() {}"
        );
        let out = call(
            &Grep,
            &context,
            json!({"pattern": "FN IS", "ignore_case": true, "output": "files"}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "notes.txt");
        let out = call(
            &Grep,
            &context,
            json!({"pattern": "let", "path": "src/b.rs"}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "src/b.rs:2:let x = 1;");
        let out = call(&Grep, &context, json!({"pattern": "nothing here"}))
            .await
            .unwrap();
        assert_eq!(out.content, "No matches for \"nothing here\" in ..");
    }

    #[tokio::test]
    async fn respects_gitignore_and_skips_binaries() {
        let (dir, context) = project();
        put(dir.path(), ".gitignore", "build/\n");
        put(dir.path(), "src.c", "needle\n");
        put(dir.path(), "build/out.c", "needle\n");
        put(dir.path(), "blob.bin", b"needle\n\0\0\0binary");
        put(dir.path(), ".hidden", "needle\n");
        let out = call(&Grep, &context, json!({"pattern": "needle"}))
            .await
            .unwrap();
        assert_eq!(out.content, "src.c:1:needle");
    }

    #[tokio::test]
    async fn caps_lines_and_long_lines() {
        let (dir, context) = project();
        for file in 0..5 {
            let text: String = (0..100).map(|n| format!("hit {n}\n")).collect();
            put(dir.path(), &format!("f{file}.txt"), text);
        }
        put(
            dir.path(),
            "long.txt",
            format!("hit {}\n", "y".repeat(1000)),
        );
        let out = call(&Grep, &context, json!({"pattern": "hit"}))
            .await
            .unwrap();
        let lines: Vec<&str> = out.content.lines().collect();
        assert_eq!(lines.len(), MAX_RESULTS + 1);
        assert_eq!(lines[0], "f0.txt:1:hit 0");
        assert_eq!(lines[MAX_RESULTS - 1], "f1.txt:100:hit 99");
        assert_eq!(
            lines[MAX_RESULTS],
            "(301 more matching lines not shown; narrow the pattern, path or glob)"
        );
        let out = call(
            &Grep,
            &context,
            json!({"pattern": "hit y", "path": "long.txt"}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.content,
            format!("long.txt:1:hit {}[...]", "y".repeat(296))
        );
    }

    #[tokio::test]
    async fn caps_file_lists() {
        let (dir, context) = project();
        for n in 0..(MAX_RESULTS + 3) {
            put(dir.path(), &format!("f{n:03}.txt"), "x\n");
        }
        let out = call(&Grep, &context, json!({"pattern": "x", "output": "files"}))
            .await
            .unwrap();
        let lines: Vec<&str> = out.content.lines().collect();
        assert_eq!(lines[0], "f000.txt");
        assert_eq!(
            lines[MAX_RESULTS],
            "(3 more files not shown; narrow the pattern, path or glob)"
        );
    }

    #[tokio::test]
    async fn invalid_regex_and_paths_are_explained() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "x\n");
        let error = call(&Grep, &context, json!({"pattern": "foo("}))
            .await
            .unwrap_err();
        assert!(
            error.to_string().starts_with("invalid regex \"foo(\""),
            "{error}"
        );
        assert!(error.to_string().contains("backslash"), "{error}");
        let error = call(&Grep, &context, json!({"pattern": "x", "path": "nope"}))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        let error = call(&Grep, &context, json!({"pattern": "x", "output": "count"}))
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            ToolError::InvalidArguments { tool: "grep", .. }
        ));
    }
}
