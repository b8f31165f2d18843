//! Turning agent events into short terminal lines: a tool call as one
//! line, its result as a few, diffs coloured.

use std::io::IsTerminal;

use freehold_llm::cost::CostDisplay;
use freehold_protocol::{AgentStop, AgentSummary};

/// Lines of a tool result shown under the call.
const RESULT_LINES: usize = 4;
/// Lines of a diff shown.
const DIFF_LINES: usize = 40;

/// ANSI styling, on when the stream is a terminal and `NO_COLOR` is unset or empty.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Painter {
    color: bool,
}

impl Painter {
    /// Styling for standard output.
    pub(crate) fn stdout() -> Self {
        Self {
            color: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        }
    }

    /// Styling for standard error.
    pub(crate) fn stderr() -> Self {
        Self {
            color: std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub(crate) fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    pub(crate) fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub(crate) fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    /// `● shell  cargo test`
    pub(crate) fn tool_call(self, name: &str, arguments: &serde_json::Value) -> String {
        let subject = describe_call(name, arguments);
        format!("{} {} {}", self.cyan("●"), self.bold(name), subject)
    }

    /// The first lines of a result (or the error), then the diff.
    pub(crate) fn tool_result(self, content: &str, is_error: bool, diff: Option<&str>) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = content.lines().collect();
        let shown = if diff.is_some() && !is_error {
            1
        } else {
            RESULT_LINES
        };
        for (index, line) in lines.iter().take(shown).enumerate() {
            let prefix = if index == 0 { "  ⎿ " } else { "    " };
            let line = shorten(line, 160);
            let line = if is_error {
                self.red(&line)
            } else {
                self.dim(&line)
            };
            out.push_str(&format!("{prefix}{line}\n"));
        }
        if lines.len() > shown {
            out.push_str(&self.dim(&format!("    … {} more lines\n", lines.len() - shown)));
        }
        if let Some(diff) = diff.filter(|_| !is_error) {
            let diff_lines: Vec<&str> = diff.lines().collect();
            for line in diff_lines.iter().take(DIFF_LINES) {
                let painted = if line.starts_with("+++") || line.starts_with("---") {
                    self.bold(line)
                } else if line.starts_with('+') {
                    self.green(line)
                } else if line.starts_with('-') {
                    self.red(line)
                } else if line.starts_with("@@") {
                    self.cyan(line)
                } else {
                    self.dim(line)
                };
                out.push_str(&format!("    {painted}\n"));
            }
            if diff_lines.len() > DIFF_LINES {
                out.push_str(&self.dim(&format!(
                    "    … {} more diff lines\n",
                    diff_lines.len() - DIFF_LINES
                )));
            }
        }
        out
    }

    /// `3 turns · 1,234 in (1,000 cached) · 120 out · $0 · 12.3 s`
    pub(crate) fn summary(self, summary: &AgentSummary) -> String {
        let usage = summary.usage;
        let cached = if usage.cached_input_tokens > 0 {
            format!(" ({} cached)", usage.cached_input_tokens)
        } else {
            String::new()
        };
        let stop = match &summary.stop_reason {
            AgentStop::Completed => String::new(),
            AgentStop::MaxTurns => " · stopped at the turn limit".into(),
            AgentStop::Cancelled => " · interrupted".into(),
            AgentStop::Error(_) => " · failed".into(),
        };
        self.dim(&format!(
            "[{} turn{} · {} in{cached} · {} out · {} · {:.1} s{stop}]",
            summary.turns,
            if summary.turns == 1 { "" } else { "s" },
            usage.input_tokens,
            usage.output_tokens,
            CostDisplay(summary.cost_usd),
            summary.duration_ms as f64 / 1000.0,
        ))
    }
}

/// What a call acts on, in a few words.
pub(crate) fn describe_call(name: &str, arguments: &serde_json::Value) -> String {
    let field = |key: &str| {
        arguments
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let text = match name {
        "shell" => field("command"),
        "grep" => field("pattern").map(|p| match field("path") {
            Some(path) => format!("{p}  in {path}"),
            None => p,
        }),
        "glob" => field("pattern"),
        "todo" => arguments
            .get("todos")
            .and_then(|t| t.as_array())
            .map(|items| format!("{} items", items.len())),
        "apply_patch" => field("patch").map(|patch| {
            let files: Vec<&str> = patch
                .lines()
                .filter_map(|line| {
                    line.strip_prefix("*** Update File: ")
                        .or_else(|| line.strip_prefix("*** Add File: "))
                        .or_else(|| line.strip_prefix("*** Delete File: "))
                })
                .collect();
            files.join(", ")
        }),
        _ => field("path"),
    };
    match text {
        Some(text) => shorten(&text.replace('\n', " ⏎ "), 120),
        None if arguments.is_string() => shorten(&arguments.to_string(), 120),
        None => String::new(),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_are_described_by_what_they_touch() {
        assert_eq!(
            describe_call("shell", &json!({"command": "cargo test"})),
            "cargo test"
        );
        assert_eq!(
            describe_call("read", &json!({"path": "src/a.rs"})),
            "src/a.rs"
        );
        assert_eq!(
            describe_call("grep", &json!({"pattern": "fn main", "path": "src"})),
            "fn main  in src"
        );
        let patch = "*** Begin Patch\n*** Update File: a.rs\n*** Add File: b.rs\n*** End Patch";
        assert_eq!(
            describe_call("apply_patch", &json!({"patch": patch})),
            "a.rs, b.rs"
        );
    }

    #[test]
    fn results_show_a_few_lines_and_the_diff() {
        let painter = Painter { color: false };
        let text = painter.tool_result("1\n2\n3\n4\n5\n6", false, None);
        assert!(text.starts_with("  ⎿ 1\n"));
        assert!(text.contains("… 2 more lines"));
        let text =
            painter.tool_result("Edited a.rs", false, Some("--- a/a.rs\n+++ b/a.rs\n-x\n+y"));
        assert!(text.contains("    +y\n"));
    }
}
