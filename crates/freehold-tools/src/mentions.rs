//! Files a task names, attached to it so the model starts from their text.
//!
//! `@src/lib.rs` in a prompt attaches that file (as in other coding agents);
//! with `bare_names`, any word of the prompt that is the path of a file in
//! the project (`calc.py`, `src/lib.rs`) does too. Small models often answer
//! from the prompt alone instead of reading first; with the file in front of
//! them they edit the right text. Attached files count as read, so `write`
//! may replace them.

use std::fmt::Write as _;

use crate::{ToolContext, files, paths};

/// The largest file attached, in bytes: a bigger one is left for `read`
/// (with offset and limit) so one mention cannot fill the context.
pub const MAX_ATTACHED_FILE_BYTES: usize = 8 * 1024;

/// The most bytes attached to one prompt in all.
pub const MAX_ATTACHED_BYTES: usize = 16 * 1024;

/// The most files attached to one prompt.
pub const MAX_ATTACHED_FILES: usize = 4;

/// A file's text, attached to a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The path as the model sees it (relative to the project).
    pub path: String,
    /// The file's text (UTF-8, line endings as `\n`).
    pub text: String,
}

/// The files `prompt` names: `@path` mentions, and with `bare_names` words
/// that are paths of files in the project, in the order they first appear,
/// within the limits above. Each is marked as read in `context`.
pub fn attach_mentioned_files(
    context: &ToolContext,
    prompt: &str,
    bare_names: bool,
) -> Vec<Attachment> {
    let mut attached: Vec<Attachment> = Vec::new();
    let mut total = 0;
    for word in prompt.split_whitespace() {
        if attached.len() == MAX_ATTACHED_FILES {
            break;
        }
        let (explicit, word) = match word.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let name = trim_punctuation(word);
        // A bare word must look like a path: `calc.py`, `src/lib`, not `the`.
        if name.is_empty() || !(explicit || bare_names && name.contains(['.', '/'])) {
            continue;
        }
        let Ok(path) = paths::resolve(&context.root, name) else {
            continue;
        };
        let shown = paths::display(&context.root, &path);
        if shown.starts_with(".git/") || attached.iter().any(|a| a.path == shown) {
            continue;
        }
        let Some(text) = small_text_file(&path) else {
            continue;
        };
        if total + text.len() > MAX_ATTACHED_BYTES {
            continue;
        }
        total += text.len();
        context.files.mark_seen(&path);
        attached.push(Attachment { path: shown, text });
    }
    attached
}

/// The attachments as the prompt shows them: each file in a `<file>` block.
pub fn render_attachments(attachments: &[Attachment]) -> String {
    let mut out = String::new();
    for attachment in attachments {
        let _ = writeln!(out, "<file path=\"{}\">", attachment.path);
        out.push_str(&attachment.text);
        if !attachment.text.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("</file>\n");
    }
    out
}

/// Quotes, brackets and sentence punctuation around a word: `` `calc.py` ``,
/// `(pager.py)`, `README.md.` all name the file.
fn trim_punctuation(word: &str) -> &str {
    word.trim_matches(|c: char| "`'\"()[]{}<>,;:!?*".contains(c))
        .trim_end_matches('.')
}

/// The text of a regular file no bigger than [`MAX_ATTACHED_FILE_BYTES`],
/// or `None` (missing, a directory, too big, binary).
fn small_text_file(path: &std::path::Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() || metadata.len() > MAX_ATTACHED_FILE_BYTES as u64 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if bytes.contains(&0) {
        return None;
    }
    let text = files::Text::decode(bytes)?;
    Some(text.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{project, put};

    #[test]
    fn attaches_named_files_once_within_the_limits() {
        let (dir, context) = project();
        put(dir.path(), "calc.py", "def add(a, b):\n    return a + b\n");
        put(dir.path(), "src/lib.rs", "pub fn f() {}");
        put(
            dir.path(),
            "big.txt",
            "x".repeat(MAX_ATTACHED_FILE_BYTES + 1),
        );
        std::fs::write(dir.path().join("blob.bin"), [0u8, 159, 146, 150]).unwrap();
        let prompt =
            "Fix `calc.py` (see src/lib.rs, big.txt, blob.bin, calc.py. and missing.py) the end.";

        let attached = attach_mentioned_files(&context, prompt, true);
        let paths: Vec<&str> = attached.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["calc.py", "src/lib.rs"]);
        assert_eq!(attached[0].text, "def add(a, b):\n    return a + b\n");
        assert!(context.files.was_seen(&dir.path().join("calc.py")));
        assert_eq!(
            render_attachments(&attached),
            "<file path=\"calc.py\">\ndef add(a, b):\n    return a + b\n</file>\n\
             <file path=\"src/lib.rs\">\npub fn f() {}\n</file>\n"
        );

        // Without bare names only @ mentions count.
        let attached = attach_mentioned_files(&context, "Look at calc.py and @src/lib.rs", false);
        let paths: Vec<&str> = attached.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["src/lib.rs"]);
    }

    #[test]
    fn never_leaves_the_project() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "inside");
        let attached = attach_mentioned_files(&context, "@../a.txt @/etc/hostname", true);
        assert!(attached.is_empty(), "{attached:?}");
    }
}
