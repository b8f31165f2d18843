//! Who may run which tool: permission modes and allow/deny rules.
//!
//! A rule names a tool and, optionally, a pattern in parentheses matched
//! against the call's subject (see [`freehold_tools::Tool::subject`]):
//! `shell(git status:*)` allows any command starting with `git status`,
//! `shell(cargo test)` exactly that command, `edit(src/**)` edits under
//! `src/`, and a bare `read` every read. Deny rules beat allow rules.
//!
//! A shell command is split at `&&`, `||`, `;`, `|` and newlines: an allow
//! rule must match every part (so `git status && rm -rf ~` is not allowed
//! by `shell(git status:*)`), a deny rule any part. Commands with `$(`, a
//! backtick or a redirection are only allowed by a rule for the whole tool
//! or for exactly that command.

use std::fmt;
use std::str::FromStr;

use freehold_tools::ToolKind;
use serde::{Deserialize, Serialize};

/// How much the agent may do without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermissionMode {
    /// Ask before edits and commands.
    #[default]
    #[serde(rename = "default")]
    Default,
    /// Edit files without asking; ask before commands.
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    /// Read-only: edits and commands are refused.
    #[serde(rename = "plan")]
    Plan,
    /// Never ask (for sandboxes and throwaway copies).
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
}

impl PermissionMode {
    /// The names, as written on the command line and in configuration.
    pub const NAMES: [&'static str; 4] = ["default", "acceptEdits", "plan", "bypassPermissions"];
}

impl FromStr for PermissionMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "default" => Ok(Self::Default),
            "acceptEdits" => Ok(Self::AcceptEdits),
            "plan" => Ok(Self::Plan),
            "bypassPermissions" => Ok(Self::BypassPermissions),
            other => Err(format!(
                "unknown permission mode `{other}`; use one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::Plan => "plan",
            Self::BypassPermissions => "bypassPermissions",
        };
        f.write_str(name)
    }
}

/// One allow or deny rule: a tool name and an optional subject pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    tool: String,
    pattern: Option<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `text:*` or `text*`: the subject starts with `text`.
    Prefix(String),
    /// A glob over paths (`src/**`, `*.md`).
    Glob(String),
    /// Exactly this subject.
    Exact(String),
}

/// A rule that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid permission rule `{rule}`: {reason}; write `tool` or `tool(pattern)`, e.g. `shell(git status:*)` or `edit(src/**)`"
)]
pub struct RuleError {
    rule: String,
    reason: &'static str,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let fail = |reason| RuleError {
            rule: text.to_owned(),
            reason,
        };
        let (tool, pattern) = match text.find('(') {
            None => (text, None),
            Some(open) => {
                let inner = text[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| fail("missing the closing parenthesis"))?;
                (&text[..open], Some(inner.trim()))
            }
        };
        let tool = tool.trim();
        if tool.is_empty() || !tool.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(fail("the tool name must be letters, digits or `_`"));
        }
        let pattern = match pattern {
            None | Some("*") | Some("") => None,
            Some(p) => Some(if let Some(prefix) = p.strip_suffix(":*") {
                Pattern::Prefix(prefix.to_owned())
            } else if tool_takes_paths(tool) && p.contains(['*', '?', '[']) {
                Pattern::Glob(p.to_owned())
            } else if let Some(prefix) = p.strip_suffix('*') {
                Pattern::Prefix(prefix.to_owned())
            } else {
                Pattern::Exact(p.to_owned())
            }),
        };
        Ok(Self {
            tool: canonical_tool(tool).to_owned(),
            pattern,
        })
    }
}

/// Claude Code calls its tools `Bash`, `Edit`, `Write`…; accept those names
/// so users can bring their rules along.
fn canonical_tool(name: &str) -> &str {
    match name {
        "Bash" | "bash" => "shell",
        "Read" => "read",
        "Write" => "write",
        "Edit" | "MultiEdit" => "edit",
        "Glob" => "glob",
        "Grep" => "grep",
        "TodoWrite" => "todo",
        other => other,
    }
}

fn tool_takes_paths(tool: &str) -> bool {
    matches!(
        canonical_tool(tool),
        "read" | "write" | "edit" | "apply_patch" | "glob" | "grep"
    )
}

impl Rule {
    /// A rule allowing `tool` calls whose subject is exactly `subject`.
    pub fn exact(tool: &str, subject: &str) -> Self {
        Self {
            tool: tool.to_owned(),
            pattern: Some(Pattern::Exact(subject.to_owned())),
        }
    }

    /// A rule matching every call of `tool`.
    pub fn any(tool: &str) -> Self {
        Self {
            tool: tool.to_owned(),
            pattern: None,
        }
    }

    fn matches_one(&self, tool: &str, subject: Option<&str>) -> bool {
        if self.tool != tool {
            return false;
        }
        match (&self.pattern, subject) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(Pattern::Exact(exact)), Some(subject)) => exact == subject,
            (Some(Pattern::Prefix(prefix)), Some(subject)) => {
                // `git status:*` matches `git status` and `git status -s`,
                // not `git statusx`.
                subject == prefix
                    || subject
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| prefix.ends_with(' ') || rest.starts_with(' '))
            }
            (Some(Pattern::Glob(glob)), Some(subject)) => globset::Glob::new(glob)
                .map(|g| {
                    g.compile_matcher()
                        .is_match(subject.trim_start_matches("./"))
                })
                .unwrap_or(false),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            None => write!(f, "{}", self.tool),
            Some(Pattern::Exact(p) | Pattern::Glob(p)) => write!(f, "{}({p})", self.tool),
            Some(Pattern::Prefix(p)) => write!(f, "{}({p}:*)", self.tool),
        }
    }
}

/// The mode and rules in force for a session.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// The mode.
    pub mode: PermissionMode,
    /// Rules that allow calls without asking.
    pub allow: Vec<Rule>,
    /// Rules that refuse calls; they beat allow rules and the mode.
    pub deny: Vec<Rule>,
}

/// What to do with one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it.
    Allow,
    /// Ask the user (refused in headless mode).
    Ask,
    /// Refuse it, telling the model why.
    Deny(String),
}

impl Permissions {
    /// Decide a call of `tool` (of kind `kind`) on `subject`.
    pub fn decide(&self, tool: &str, kind: ToolKind, subject: Option<&str>) -> Decision {
        let parts = split_subject(tool, subject);
        let parts: Vec<Option<&str>> = match &parts {
            Some(parts) => parts.iter().map(|p| Some(p.as_str())).collect(),
            None => vec![subject],
        };
        for rule in &self.deny {
            // A whole-tool deny rule matches even when there is no subject.
            if parts.iter().any(|part| rule.matches_one(tool, *part))
                || (rule.pattern.is_none() && rule.tool == tool)
            {
                return Decision::Deny(format!(
                    "the permission rule `{rule}` denies this; do not retry it, find another way or ask the user"
                ));
            }
        }
        if matches!(kind, ToolKind::Read | ToolKind::Plan) {
            return Decision::Allow;
        }
        if self.mode == PermissionMode::Plan {
            return Decision::Deny(
                "plan mode is read-only: describe the change you would make instead of making it"
                    .into(),
            );
        }
        if self.mode == PermissionMode::BypassPermissions {
            return Decision::Allow;
        }
        if kind == ToolKind::Edit && self.mode == PermissionMode::AcceptEdits {
            return Decision::Allow;
        }
        // A command with substitution or redirection is only allowed by a
        // rule for the whole tool or for exactly this command: its first
        // words say nothing about what it does.
        let risky = kind == ToolKind::Execute && subject.is_some_and(has_substitution);
        let allowed = if risky {
            self.allow.iter().any(|rule| {
                matches!(rule.pattern, None | Some(Pattern::Exact(_)))
                    && rule.matches_one(tool, subject)
            })
        } else {
            parts
                .iter()
                .all(|part| self.allow.iter().any(|rule| rule.matches_one(tool, *part)))
        };
        if allowed {
            Decision::Allow
        } else {
            Decision::Ask
        }
    }
}

/// The parts of a shell command that rules apply to one by one.
fn split_subject(tool: &str, subject: Option<&str>) -> Option<Vec<String>> {
    if tool != "shell" {
        return None;
    }
    let command = subject?;
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = command.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '&' | '|' if !single && !double => {
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                parts.push(std::mem::take(&mut current));
                continue;
            }
            ';' | '\n' if !single && !double => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    Some(
        parts
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

/// Command substitution or output redirection can do anything, whatever
/// the command's first words say.
fn has_substitution(command: &str) -> bool {
    command.contains("$(") || command.contains('`') || command.contains('>')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(texts: &[&str]) -> Vec<Rule> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn modes_decide_by_kind() {
        let mut p = Permissions::default();
        assert_eq!(p.decide("read", ToolKind::Read, Some("a")), Decision::Allow);
        assert_eq!(p.decide("edit", ToolKind::Edit, Some("a")), Decision::Ask);
        assert_eq!(
            p.decide("shell", ToolKind::Execute, Some("ls")),
            Decision::Ask
        );
        p.mode = PermissionMode::AcceptEdits;
        assert_eq!(p.decide("edit", ToolKind::Edit, Some("a")), Decision::Allow);
        assert_eq!(
            p.decide("shell", ToolKind::Execute, Some("ls")),
            Decision::Ask
        );
        p.mode = PermissionMode::Plan;
        assert!(matches!(
            p.decide("edit", ToolKind::Edit, None),
            Decision::Deny(_)
        ));
        assert_eq!(p.decide("todo", ToolKind::Plan, None), Decision::Allow);
        p.mode = PermissionMode::BypassPermissions;
        assert_eq!(
            p.decide("shell", ToolKind::Execute, Some("rm -rf x")),
            Decision::Allow
        );
    }

    #[test]
    fn allow_rules_match_prefixes_and_every_part_of_a_command() {
        let p = Permissions {
            allow: rules(&["shell(git status:*)", "Bash(cargo test)"]),
            ..Permissions::default()
        };
        let shell = |c| p.decide("shell", ToolKind::Execute, Some(c));
        assert_eq!(shell("git status"), Decision::Allow);
        assert_eq!(shell("git status -s"), Decision::Allow);
        assert_eq!(shell("git statusx"), Decision::Ask);
        assert_eq!(shell("cargo test"), Decision::Allow);
        assert_eq!(shell("cargo test --release"), Decision::Ask);
        assert_eq!(shell("git status && cargo test"), Decision::Allow);
        assert_eq!(shell("git status && rm -rf ~"), Decision::Ask);
        assert_eq!(shell("git status; rm x"), Decision::Ask);
        assert_eq!(shell("git status $(rm x)"), Decision::Ask);
        assert_eq!(shell("git status > out"), Decision::Ask);
        let exact = Permissions {
            allow: vec![Rule::exact("shell", "echo a > b")],
            ..Permissions::default()
        };
        assert_eq!(
            exact.decide("shell", ToolKind::Execute, Some("echo a > b")),
            Decision::Allow
        );
        // Quoted separators do not split.
        let q = Permissions {
            allow: rules(&["shell(echo:*)"]),
            ..Permissions::default()
        };
        assert_eq!(
            q.decide("shell", ToolKind::Execute, Some("echo 'a && b'")),
            Decision::Allow
        );
    }

    #[test]
    fn deny_beats_allow_and_mode() {
        let p = Permissions {
            mode: PermissionMode::BypassPermissions,
            allow: rules(&["shell"]),
            deny: rules(&["shell(rm:*)", "write"]),
        };
        assert!(matches!(
            p.decide("shell", ToolKind::Execute, Some("ls && rm -rf x")),
            Decision::Deny(_)
        ));
        assert_eq!(
            p.decide("shell", ToolKind::Execute, Some("ls")),
            Decision::Allow
        );
        assert!(matches!(
            p.decide("write", ToolKind::Edit, None),
            Decision::Deny(_)
        ));
        // Reads can be denied too.
        let r = Permissions {
            deny: rules(&["read(secrets/**)"]),
            ..Permissions::default()
        };
        assert!(matches!(
            r.decide("read", ToolKind::Read, Some("secrets/key.pem")),
            Decision::Deny(_)
        ));
        assert_eq!(
            r.decide("read", ToolKind::Read, Some("src/a.rs")),
            Decision::Allow
        );
    }

    #[test]
    fn path_rules_are_globs() {
        let p = Permissions {
            allow: rules(&["edit(src/**)"]),
            ..Permissions::default()
        };
        assert_eq!(
            p.decide("edit", ToolKind::Edit, Some("src/a/b.rs")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("edit", ToolKind::Edit, Some("./src/b.rs")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("edit", ToolKind::Edit, Some("docs/b.md")),
            Decision::Ask
        );
    }

    #[test]
    fn bad_rules_say_how_to_write_them() {
        let error = "shell(git".parse::<Rule>().unwrap_err().to_string();
        assert!(error.contains("closing parenthesis"), "{error}");
        assert!(error.contains("shell(git status:*)"), "{error}");
        assert!("".parse::<Rule>().is_err());
        assert_eq!(
            "Bash(git log:*)".parse::<Rule>().unwrap().to_string(),
            "shell(git log:*)"
        );
        assert!("plan".parse::<PermissionMode>().is_ok());
        assert!(
            "yolo"
                .parse::<PermissionMode>()
                .unwrap_err()
                .contains("acceptEdits")
        );
    }
}
