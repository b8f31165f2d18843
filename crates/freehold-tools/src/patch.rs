//! The `apply_patch` format: parsing it, and applying one file's hunks to
//! its lines.
//!
//! ```text
//! *** Begin Patch
//! *** Add File: path        (then lines starting with +)
//! *** Update File: path
//! *** Move to: new/path     (optional)
//! @@ optional line to find first
//!  context
//! -removed
//! +added
//! *** Delete File: path
//! *** End Patch
//! ```

use crate::matching;

/// One file operation of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create a file with these contents.
    Add { path: String, content: String },
    /// Delete a file.
    Delete { path: String },
    /// Change a file, and maybe rename it.
    Update {
        path: String,
        move_to: Option<String>,
        hunks: Vec<Hunk>,
    },
}

impl Op {
    /// The path the operation names first.
    pub(crate) fn path(&self) -> &str {
        match self {
            Self::Add { path, .. } | Self::Delete { path } | Self::Update { path, .. } => path,
        }
    }
}

/// One `@@` section of an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hunk {
    /// A line to find before looking for the hunk (the text after `@@`).
    pub(crate) anchor: Option<String>,
    /// Context and removed lines, as in the file.
    pub(crate) old: Vec<String>,
    /// Context and added lines, as they should become.
    pub(crate) new: Vec<String>,
    /// `*** End of File` followed the hunk: it belongs at the end.
    pub(crate) at_end: bool,
}

const BEGIN: &str = "*** Begin Patch";
const END: &str = "*** End Patch";
const ADD: &str = "*** Add File:";
const DELETE: &str = "*** Delete File:";
const UPDATE: &str = "*** Update File:";
const MOVE: &str = "*** Move to:";
const END_OF_FILE: &str = "*** End of File";

/// Parse a patch. Lenient where small models slip: a missing begin or end
/// line, blank lines between operations, a blank line inside a hunk (taken
/// as an empty context line), unified-diff `@@ -1,2 +1,3 @@` headers.
pub(crate) fn parse(patch: &str) -> Result<Vec<Op>, String> {
    let lines: Vec<&str> = patch.lines().collect();
    let mut at = lines
        .iter()
        .position(|line| line.trim() == BEGIN)
        .map_or(0, |begin| begin + 1);
    let mut ops = Vec::new();
    while at < lines.len() {
        let line = lines[at].trim_end();
        at += 1;
        if line.trim() == END {
            break;
        } else if line.trim().is_empty() {
            continue;
        } else if let Some(path) = header(line, ADD) {
            let mut content = String::new();
            while at < lines.len() && !lines[at].starts_with("*** ") {
                let body = lines[at];
                match body.strip_prefix('+') {
                    Some(text) => content.push_str(text),
                    None if body.trim().is_empty() => {}
                    None => {
                        return Err(format!(
                            "in \"*** Add File: {path}\" every line must start with +, found: {body}"
                        ));
                    }
                }
                content.push('\n');
                at += 1;
            }
            ops.push(Op::Add { path, content });
        } else if let Some(path) = header(line, DELETE) {
            ops.push(Op::Delete { path });
        } else if let Some(path) = header(line, UPDATE) {
            let move_to = lines.get(at).and_then(|next| header(next, MOVE));
            if move_to.is_some() {
                at += 1;
            }
            let hunks = parse_hunks(&lines, &mut at, &path)?;
            if hunks.is_empty() && move_to.is_none() {
                return Err(format!("\"*** Update File: {path}\" has no changes"));
            }
            ops.push(Op::Update {
                path,
                move_to,
                hunks,
            });
        } else {
            return Err(format!(
                "unexpected line: {line}; a patch holds \"*** Add File: \", \"*** Update File: \" or \"*** Delete File: \" sections"
            ));
        }
    }
    if ops.is_empty() {
        return Err(format!(
            "the patch has no file operations; start with \"{BEGIN}\" and a \"*** Update File: path\" (or Add/Delete) line"
        ));
    }
    Ok(ops)
}

/// The path after a `*** …:` header, if `line` is one.
fn header(line: &str, prefix: &str) -> Option<String> {
    let path = line.trim().strip_prefix(prefix)?.trim();
    (!path.is_empty()).then(|| path.to_owned())
}

fn parse_hunks(lines: &[&str], at: &mut usize, path: &str) -> Result<Vec<Hunk>, String> {
    let mut hunks = Vec::new();
    let mut hunk = Hunk::default();
    while *at < lines.len() {
        let line = lines[*at];
        if line.starts_with("*** ") && line.trim_end() != END_OF_FILE {
            break;
        }
        *at += 1;
        if line.trim_end() == END_OF_FILE {
            hunk.at_end = true;
        } else if let Some(rest) = line.strip_prefix("@@") {
            hunks.push(std::mem::take(&mut hunk));
            hunk.anchor = anchor(rest);
        } else if let Some(text) = line.strip_prefix('+') {
            hunk.new.push(text.to_owned());
        } else if let Some(text) = line.strip_prefix('-') {
            hunk.old.push(text.to_owned());
        } else if let Some(text) = line.strip_prefix(' ') {
            hunk.old.push(text.to_owned());
            hunk.new.push(text.to_owned());
        } else if line.trim().is_empty() {
            hunk.old.push(String::new());
            hunk.new.push(String::new());
        } else {
            return Err(format!(
                "unexpected line in the changes to {path}: {line}; hunk lines start with ' ' (context), '-' (remove) or '+' (add)"
            ));
        }
    }
    hunks.push(hunk);
    // Blank lines before the next operation are not part of the last hunk.
    for hunk in &mut hunks {
        while hunk.old.last().is_some_and(String::is_empty)
            && hunk.new.last().is_some_and(String::is_empty)
            && !hunk.at_end
            && hunk.old.len() > 1
        {
            hunk.old.pop();
            hunk.new.pop();
        }
    }
    hunks.retain(|hunk| !hunk.old.is_empty() || !hunk.new.is_empty());
    Ok(hunks)
}

/// The anchor line after `@@`, ignoring unified-diff line ranges.
fn anchor(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let rest = if rest.starts_with('-') {
        // `@@ -12,3 +12,4 @@ fn name()`: keep only what follows the ranges.
        rest.split_once("@@").map_or("", |(_, after)| after.trim())
    } else {
        rest
    };
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// Apply `hunks` to `body` (with `\n` line endings). The error names the
/// first hunk that did not match and its first lines.
pub(crate) fn apply(body: &str, hunks: &[Hunk]) -> Result<String, String> {
    let mut lines: Vec<&str> = body.split('\n').collect();
    let trailing_newline = body.is_empty() || body.ends_with('\n');
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut edits: Vec<(usize, usize, &[String])> = Vec::new();
    let mut cursor = 0;
    for (number, hunk) in hunks.iter().enumerate() {
        let anchored = hunk
            .anchor
            .as_ref()
            .and_then(|anchor| matching::seek(&lines, &[anchor], cursor, false));
        if let Some(found) = anchored {
            cursor = found + 1;
        }
        if hunk.old.is_empty() {
            // Pure additions go after the anchor, or at the end.
            let at = anchored.map_or(lines.len(), |found| found + 1);
            if overlaps(&edits, at, 0) {
                return Err(format!(
                    "hunk {} adds lines inside an earlier hunk",
                    number + 1
                ));
            }
            edits.push((at, 0, &hunk.new));
            continue;
        }
        let (start, len) = locate(&lines, hunk, cursor)
            .filter(|&(start, len)| !overlaps(&edits, start, len))
            .ok_or_else(|| {
                let shown: Vec<&str> = hunk.old.iter().take(3).map(String::as_str).collect();
                format!(
                    "hunk {} did not match; these lines were not found:\n{}",
                    number + 1,
                    shown.join("\n")
                )
            })?;
        let new_len = if len < hunk.old.len() {
            hunk.new.len().saturating_sub(1)
        } else {
            hunk.new.len()
        };
        edits.push((start, len, &hunk.new[..new_len]));
        cursor = start + len;
    }
    edits.sort_by_key(|&(start, _, _)| start);
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut next = 0;
    for (start, len, new) in edits {
        out.extend_from_slice(&lines[next..start]);
        out.extend(new.iter().map(String::as_str));
        next = start + len;
    }
    out.extend_from_slice(&lines[next..]);
    let mut text = out.join("\n");
    if trailing_newline && !out.is_empty() {
        text.push('\n');
    }
    Ok(text)
}

/// Where a hunk's old lines are: after the cursor, else anywhere (hunks out
/// of order), retrying without a trailing blank line models often add.
fn locate(lines: &[&str], hunk: &Hunk, cursor: usize) -> Option<(usize, usize)> {
    let old = &hunk.old[..];
    let find = |old: &[String]| {
        matching::seek(lines, old, cursor, hunk.at_end)
            .or_else(|| matching::seek(lines, old, 0, hunk.at_end))
            .map(|start| (start, old.len()))
    };
    find(old).or_else(|| match old.split_last() {
        Some((last, rest))
            if last.is_empty()
                && !rest.is_empty()
                && hunk.new.last().is_some_and(String::is_empty) =>
        {
            find(rest)
        }
        _ => None,
    })
}

fn overlaps(edits: &[(usize, usize, &[String])], start: usize, len: usize) -> bool {
    edits
        .iter()
        .any(|&(other, other_len, _)| start < other + other_len && other < start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_operation() {
        let patch = "*** Begin Patch\n*** Add File: new.txt\n+a\n+b\n*** Update File: src/x.rs\n*** Move to: src/y.rs\n@@ fn main() {\n context\n-old\n+new\n*** End of File\n*** Delete File: gone.txt\n*** End Patch\n";
        let ops = parse(patch).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Add {
                    path: "new.txt".into(),
                    content: "a\nb\n".into()
                },
                Op::Update {
                    path: "src/x.rs".into(),
                    move_to: Some("src/y.rs".into()),
                    hunks: vec![Hunk {
                        anchor: Some("fn main() {".into()),
                        old: vec!["context".into(), "old".into()],
                        new: vec!["context".into(), "new".into()],
                        at_end: true,
                    }],
                },
                Op::Delete {
                    path: "gone.txt".into()
                },
            ]
        );
    }

    #[test]
    fn rejects_garbage_with_a_useful_message() {
        assert!(parse("").unwrap_err().contains("no file operations"));
        assert!(
            parse("*** Begin Patch\nhello\n*** End Patch")
                .unwrap_err()
                .contains("unexpected line: hello")
        );
        let error =
            parse("*** Begin Patch\n*** Update File: a\n@@\n?x\n*** End Patch").unwrap_err();
        assert!(error.contains("hunk lines start with"), "{error}");
        let error = parse("*** Begin Patch\n*** Add File: a\nx\n*** End Patch").unwrap_err();
        assert!(error.contains("must start with +"), "{error}");
    }

    #[test]
    fn unified_diff_ranges_are_not_anchors() {
        assert_eq!(anchor(" -1,2 +1,3 @@ fn f()"), Some("fn f()".into()));
        assert_eq!(anchor(" -1,2 +1,3 @@"), None);
        assert_eq!(anchor(" impl X"), Some("impl X".into()));
    }

    fn hunk(old: &[&str], new: &[&str]) -> Hunk {
        Hunk {
            old: old.iter().map(|s| (*s).to_owned()).collect(),
            new: new.iter().map(|s| (*s).to_owned()).collect(),
            ..Hunk::default()
        }
    }

    #[test]
    fn applies_hunks_in_order_with_fuzzy_fallbacks() {
        let body = "a\nb\nc\nb\nd\n";
        let hunks = [hunk(&["c", "b"], &["c", "B"])];
        assert_eq!(apply(body, &hunks).unwrap(), "a\nb\nc\nB\nd\n");
        // Trailing whitespace in the file is forgiven.
        let hunks = [hunk(&["x", "y"], &["z"])];
        assert_eq!(apply("x  \ny\n", &hunks).unwrap(), "z\n");
        // Two hunks, anchors and pure additions.
        let mut add = hunk(&[], &["after-a"]);
        add.anchor = Some("a".into());
        let hunks = [add, hunk(&["d"], &["D"])];
        assert_eq!(apply(body, &hunks).unwrap(), "a\nafter-a\nb\nc\nb\nD\n");
        // No trailing newline stays without one.
        assert_eq!(apply("p\nq", &[hunk(&["q"], &["r"])]).unwrap(), "p\nr");
    }

    #[test]
    fn a_hunk_that_does_not_match_is_named() {
        let hunks = [hunk(&["a"], &["A"]), hunk(&["zzz", "yyy"], &["q"])];
        let error = apply("a\nb\n", &hunks).unwrap_err();
        assert_eq!(
            error,
            "hunk 2 did not match; these lines were not found:\nzzz\nyyy"
        );
    }
}
