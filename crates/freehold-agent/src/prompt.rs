//! The system prompt and the environment note.
//!
//! The system prompt is short on purpose: on a laptop CPU a 1.5B model
//! reads about 50 prompt tokens a second, so every sentence costs time on
//! the first turn. It is also byte-stable for a session (no date, no git
//! status), so the engine's prefix cache serves it on every later turn;
//! facts that change go in [`environment_note`], which opens the first
//! user message instead.

use std::fmt::Write as _;
use std::path::Path;

use crate::memory::MemoryFile;

/// The instructions every session starts with.
pub const BASE_PROMPT: &str = "\
You are Freehold, a coding agent working in the user's project directory. \
You read, search and edit its files and run commands with your tools to do what the user asks.

How to work:
- Begin every task by calling a tool: find the code with grep or glob and read it. Answer questions only from what you have read.
- Change files with edit (replace an exact piece of text) or write (new files). Make the smallest change that does the task.
- After changing code, run its tests or the program with shell, and fix what fails.
- Use todo to plan tasks with several steps.
- Paths are relative to the project directory. Do not ask for permission; the tools ask when needed.
- If a tool fails, read the error and try something different; do not repeat the same call.
- Do the work with your tools: never describe a change instead of making it, and never claim a change you have not made.
- When the task is done, reply in one or two sentences: what you changed, or the answer to the question.";

/// The system prompt: [`BASE_PROMPT`], then the memory files.
pub fn system_prompt(memory: &[MemoryFile], project_root: &Path) -> String {
    let mut prompt = String::from(BASE_PROMPT);
    for file in memory {
        let shown = file
            .path
            .strip_prefix(project_root)
            .unwrap_or(&file.path)
            .display()
            .to_string();
        let _ = write!(
            prompt,
            "\n\nInstructions from {shown} (follow them):\n{}",
            file.text
        );
    }
    prompt
}

/// Facts that may change between sessions: date, directory, platform and
/// git state. Sent at the start of the first user message.
pub fn environment_note(cwd: &Path, date: &str, git: Option<&str>) -> String {
    let mut note = format!(
        "<env>\nDirectory: {}\nPlatform: {} {}\nDate: {date}\n",
        cwd.display(),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    if let Some(git) = git {
        let _ = writeln!(note, "Git: {git}");
    }
    let files = top_level_entries(cwd, MAX_LISTED_ENTRIES);
    if !files.is_empty() {
        let _ = writeln!(note, "Files: {}", files.join(", "));
    }
    note.push_str("</env>\n\n");
    note
}

/// The most top-level entries listed in the environment note.
const MAX_LISTED_ENTRIES: usize = 40;

/// The project's top-level files and directories (`src/`), sorted, hidden
/// ones left out: small models find their way far better when they see
/// what is there, and it costs a few dozen tokens.
fn top_level_entries(dir: &Path, max: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || matches!(name.as_str(), "target" | "node_modules" | "__pycache__")
            {
                return None;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            Some(if is_dir { format!("{name}/") } else { name })
        })
        .collect();
    names.sort();
    if names.len() > max {
        let more = names.len() - max;
        names.truncate(max);
        names.push(format!("… {more} more"));
    }
    names
}

/// A one-line git summary for [`environment_note`] (branch and number of
/// changed files), or `None` outside a repository or without git.
pub fn git_summary(cwd: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let branch = run(&["rev-parse", "--abbrev-ref", "HEAD"])?;
    let status = run(&["status", "--porcelain"]).unwrap_or_default();
    let changed = status.lines().count();
    Some(format!(
        "branch {}, {changed} changed file{}",
        branch.trim(),
        if changed == 1 { "" } else { "s" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_follows_the_base_prompt() {
        let memory = [MemoryFile {
            path: "/repo/AGENTS.md".into(),
            text: "Use tabs.".into(),
        }];
        let prompt = system_prompt(&memory, Path::new("/repo"));
        assert!(prompt.starts_with(BASE_PROMPT));
        assert!(prompt.ends_with("Instructions from AGENTS.md (follow them):\nUse tabs."));
    }
}
