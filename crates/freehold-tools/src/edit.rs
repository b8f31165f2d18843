//! The `edit` tool: replace an exact piece of a file.

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use serde::Deserialize;

use crate::files::{Text, blocking, io_error, read_text, unified_diff, write_atomic};
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, matching, paths};

/// The `edit` tool.
pub(crate) struct Edit;

#[derive(Debug, Deserialize)]
struct Args {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default, deserialize_with = "args::lenient_bool")]
    replace_all: bool,
}

#[async_trait]
impl Tool for Edit {
    fn name(&self) -> &'static str {
        "edit"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "edit".into(),
            description: "Replace old_string with new_string in a file. old_string must match the file exactly, indentation included, and only once unless replace_all is true.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "old_string": {"type": "string"},
                    "new_string": {"type": "string"},
                    "replace_all": {"type": "boolean"}
                },
                "required": ["path", "old_string", "new_string"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Edit
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        args::string_field(arguments, "path")
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("edit", arguments)?;
        let context = context.clone();
        blocking(move || edit(&context, args)).await
    }
}

fn edit(context: &ToolContext, args: Args) -> Result<ToolOutput, ToolError> {
    if args.old_string == args.new_string {
        return Err(ToolError::failed(
            "old_string and new_string are the same; nothing to change",
        ));
    }
    let path = paths::resolve(&context.root, &args.path)?;
    let shown = paths::display(&context.root, &path);
    // An empty old_string creates a missing (or fills an empty) file.
    let text = if args.old_string.is_empty() && !path.exists() {
        Text {
            bom: false,
            crlf: false,
            body: String::new(),
        }
    } else {
        read_text(&path, &shown)?
    };
    // The model writes `\n`; the file's own line endings come back on write.
    let old = args.old_string.replace("\r\n", "\n");
    let new = args.new_string.replace("\r\n", "\n");

    let (body, count) = if old.is_empty() {
        if !text.body.is_empty() {
            return Err(ToolError::failed(format!(
                "old_string is empty but {shown} is not; give the text to replace"
            )));
        }
        (new, 1)
    } else {
        let count = text.body.matches(old.as_str()).count();
        if count == 0 {
            if let Some(forgiven) = forgiving_replace(&text.body, &old, &new) {
                return finish(
                    context,
                    &path,
                    &shown,
                    &text,
                    forgiven.body,
                    1,
                    forgiven.note,
                );
            }
            return Err(no_match(&text.body, &old, &shown));
        }
        if count > 1 && !args.replace_all {
            return Err(ToolError::failed(format!(
                "old_string occurs {count} times in {shown}; include more surrounding lines to make it unique, or set replace_all to true"
            )));
        }
        if args.replace_all {
            (text.body.replace(&old, &new), count)
        } else {
            (text.body.replacen(&old, &new, 1), 1)
        }
    };

    finish(context, &path, &shown, &text, body, count, String::new())
}

/// Write the edited `body` and describe the change (`note` appended).
fn finish(
    context: &ToolContext,
    path: &std::path::Path,
    shown: &str,
    text: &Text,
    body: String,
    count: usize,
    note: String,
) -> Result<ToolOutput, ToolError> {
    write_atomic(path, &text.encode(&body)).map_err(io_error(format!("writing {shown}")))?;
    context.files.mark_seen(path);
    let plural = if count == 1 { "" } else { "s" };
    Ok(ToolOutput {
        content: format!("Edited {shown}: replaced {count} occurrence{plural}.{note}"),
        diff: Some(unified_diff(shown, shown, &text.body, &body)),
        changed_files: vec![shown.to_owned()],
    })
}

/// The most file lines an old_string may leave out and still be applied.
const MAX_LINES_LEFT_OUT: usize = 5;

/// An edit applied although old_string was not exact.
struct Forgiven {
    body: String,
    /// Says what was forgiven, for the model.
    note: String,
}

/// Apply `old` → `new` where `old` left out a few lines of the file (small
/// models drop a docstring or a blank line when they copy code): the
/// change between `old` and `new` is applied line by line to the one run
/// of the file that holds `old`'s lines in order, and the lines `old` left
/// out stay where they are. `None` when there is no such single run.
fn forgiving_replace(body: &str, old: &str, new: &str) -> Option<Forgiven> {
    let file: Vec<&str> = body.split_inclusive('\n').collect();
    let old_lines: Vec<&str> = old.trim_matches('\n').lines().collect();
    let new_lines: Vec<&str> = new.trim_matches('\n').lines().collect();
    let mapped = matching::with_lines_left_out(&file, &old_lines, MAX_LINES_LEFT_OUT)?;
    let (first, last) = (mapped[0], mapped[mapped.len() - 1]);

    // For each line of `old`: keep it or not, and what comes before it
    // (index `old_lines.len()`: what comes after the last).
    let mut keep = vec![false; old_lines.len()];
    let mut before: Vec<Vec<&str>> = vec![Vec::new(); old_lines.len() + 1];
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old_lines, &new_lines) {
        match op {
            similar::DiffOp::Equal { old_index, len, .. } => {
                keep[old_index..old_index + len].fill(true);
            }
            similar::DiffOp::Delete { .. } => {}
            similar::DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            }
            | similar::DiffOp::Replace {
                old_index,
                new_index,
                new_len,
                ..
            } => before[old_index].extend(&new_lines[new_index..new_index + new_len]),
        }
    }
    // The file's indentation before `old`'s first line, when `old` started
    // after it (as an exact match inside the line would have kept it).
    let indent = {
        let line = file[first].trim_end();
        &line[..line.len() - old_lines[0].trim_end().len()]
    };
    let mut out: Vec<String> = Vec::new();
    let mut next = 0;
    for (at, line) in file.iter().enumerate().take(last + 1).skip(first) {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if mapped.get(next) == Some(&at) {
            out.extend(before[next].iter().map(|l| (*l).to_owned()));
            if keep[next] {
                out.push(line.to_owned());
            }
            next += 1;
        } else {
            out.push(line.to_owned());
        }
    }
    out.extend(before[old_lines.len()].iter().map(|l| (*l).to_owned()));
    // Only new text opening the run takes the indentation: a kept first
    // line has its own.
    if let Some(first_new) = out.first_mut().filter(|_| !before[0].is_empty()) {
        first_new.insert_str(0, indent);
    }

    let left_out: Vec<String> = (first..=last)
        .filter(|at| !mapped.contains(at))
        .map(|at| (at + 1).to_string())
        .collect();
    let mut result: String = file[..first].concat();
    result.push_str(&out.join("\n"));
    if file[last].ends_with('\n') || last + 1 < file.len() {
        result.push('\n');
    }
    result.push_str(&file[last + 1..].concat());
    Some(Forgiven {
        body: result,
        note: if left_out.len() == 1 {
            format!(
                " old_string left out line {} of the file; it was kept as it is.",
                left_out[0]
            )
        } else {
            format!(
                " old_string left out lines {} of the file; they were kept as they are.",
                left_out.join(", ")
            )
        },
    })
}

/// The error for an old_string that is not in the file, pointing at a
/// near miss (same lines, different whitespace) when there is one, else
/// showing the text most like it, which the model can copy.
fn no_match(body: &str, old: &str, shown: &str) -> ToolError {
    let lines: Vec<&str> = body.lines().collect();
    let wanted: Vec<&str> = old.trim_matches('\n').lines().collect();
    let near = matching::seek(&lines, &wanted, 0, false).filter(|_| !wanted.is_empty());
    let hint = match (near, matching::closest(&lines, &wanted)) {
        (Some(at), _) => format!(
            " Lines {}-{} match except for whitespace; copy them exactly as the file has them.",
            at + 1,
            at + wanted.len()
        ),
        (None, Some(range)) => format!(
            " The closest text is lines {}-{}; to change it, use exactly this as old_string:\n{}",
            range.start + 1,
            range.end,
            lines[range.clone()].join("\n")
        ),
        (None, None) => {
            " Check whitespace and indentation, or read the file again and copy the text exactly."
                .to_owned()
        }
    };
    ToolError::failed(format!("old_string was not found in {shown}.{hint}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{call, get, project, put};

    fn args(path: &str, old: &str, new: &str) -> serde_json::Value {
        json!({"path": path, "old_string": old, "new_string": new})
    }

    #[tokio::test]
    async fn replaces_a_unique_match() {
        let (dir, context) = project();
        put(dir.path(), "a.rs", "fn a() {\n    1\n}\n");
        let out = call(&Edit, &context, args("a.rs", "    1\n", "    2\n"))
            .await
            .unwrap();
        assert_eq!(out.content, "Edited a.rs: replaced 1 occurrence.");
        assert_eq!(out.changed_files, ["a.rs"]);
        assert!(out.diff.unwrap().contains("-    1\n+    2\n"));
        assert_eq!(get(dir.path(), "a.rs"), "fn a() {\n    2\n}\n");
    }

    #[tokio::test]
    async fn refuses_a_non_unique_match_unless_replace_all() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "x = 1\nx = 1\nx = 1\n");
        let error = call(&Edit, &context, args("a.txt", "x = 1", "x = 2"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("occurs 3 times"), "{error}");
        assert!(error.to_string().contains("replace_all"), "{error}");
        assert_eq!(get(dir.path(), "a.txt"), "x = 1\nx = 1\nx = 1\n");

        let mut all = args("a.txt", "x = 1", "x = 2");
        all["replace_all"] = json!(true);
        let out = call(&Edit, &context, all).await.unwrap();
        assert_eq!(out.content, "Edited a.txt: replaced 3 occurrences.");
        assert_eq!(get(dir.path(), "a.txt"), "x = 2\nx = 2\nx = 2\n");
    }

    #[tokio::test]
    async fn no_match_explains_and_points_at_near_misses() {
        let (dir, context) = project();
        put(dir.path(), "a.py", "def f():\n    return 1\n");
        let error = call(&Edit, &context, args("a.py", "missing", "x"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not found in a.py"), "{error}");
        assert!(
            error.to_string().contains("whitespace and indentation"),
            "{error}"
        );
        let error = call(&Edit, &context, args("a.py", "def f():\n  return 1", "x"))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("Lines 1-2 match except for whitespace"),
            "{error}"
        );
        // A changed line: the error shows the real text to copy.
        put(dir.path(), "b.py", "def g(xs):\n    return len(xs) - 1\n");
        let error = call(
            &Edit,
            &context,
            args("b.py", "def g(xs):\n    return len(xs) + 1", "x"),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().ends_with(
                "lines 1-2; to change it, use exactly this as old_string:\ndef g(xs):\n    return len(xs) - 1"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn forgives_lines_left_out_of_old_string() {
        let (dir, context) = project();
        let file = "def add(a, b):\n    return a + b\n\n\ndef average(numbers):\n    \"\"\"The mean.\"\"\"\n    return sum(numbers) / (len(numbers) - 1)\n";
        put(dir.path(), "calc.py", file);
        let output = call(
            &Edit,
            &context,
            args(
                "calc.py",
                "def average(numbers):\n    return sum(numbers) / (len(numbers) - 1)",
                "def average(numbers):\n    return sum(numbers) / len(numbers)",
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            get(dir.path(), "calc.py"),
            file.replace("(len(numbers) - 1)", "len(numbers)")
        );
        assert!(
            output
                .content
                .ends_with("old_string left out line 6 of the file; it was kept as it is."),
            "{}",
            output.content
        );

        // Lines added and removed around a kept comment; CRLF kept.
        put(dir.path(), "b.txt", "a\r\n# note\r\nb\r\nc\r\nd\r\n");
        call(&Edit, &context, args("b.txt", "a\nb\nc", "a\nB\nc\nc2"))
            .await
            .unwrap();
        assert_eq!(
            get(dir.path(), "b.txt"),
            "a\r\n# note\r\nB\r\nc\r\nc2\r\nd\r\n"
        );

        // The first line may lack its indentation.
        put(
            dir.path(),
            "c.py",
            "if x:\n    y = 1\n    # why\n    z = 2\n",
        );
        call(
            &Edit,
            &context,
            args("c.py", "y = 1\n    z = 2", "y = 3\n    z = 2"),
        )
        .await
        .unwrap();
        assert_eq!(
            get(dir.path(), "c.py"),
            "if x:\n    y = 3\n    # why\n    z = 2\n"
        );

        // Its first line deleted: no indentation is added to what follows.
        put(
            dir.path(),
            "e.py",
            "if x:\n    y = 1\n    # why\n    z = 2\n",
        );
        call(
            &Edit,
            &context,
            args("e.py", "y = 1\n    z = 2", "    z = 2"),
        )
        .await
        .unwrap();
        assert_eq!(get(dir.path(), "e.py"), "if x:\n    # why\n    z = 2\n");

        // Two places that fit: refused, nothing written.
        put(dir.path(), "d.txt", "a\nx\nb\na\ny\nb\n");
        let error = call(&Edit, &context, args("d.txt", "a\nb", "q"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not found"), "{error}");
        assert_eq!(get(dir.path(), "d.txt"), "a\nx\nb\na\ny\nb\n");
    }

    #[tokio::test]
    async fn preserves_crlf_and_bom() {
        let (dir, context) = project();
        put(dir.path(), "w.txt", "\u{feff}one\r\ntwo\r\nthree\r\n");
        call(&Edit, &context, args("w.txt", "one\ntwo\n", "1\n2\n"))
            .await
            .unwrap();
        assert_eq!(get(dir.path(), "w.txt"), "\u{feff}1\r\n2\r\nthree\r\n");
        // CRLF sent by the model matches too.
        call(&Edit, &context, args("w.txt", "2\r\nthree", "3"))
            .await
            .unwrap();
        assert_eq!(get(dir.path(), "w.txt"), "\u{feff}1\r\n3\r\n");
    }

    #[tokio::test]
    async fn refuses_non_utf8_same_strings_and_missing_files() {
        let (dir, context) = project();
        put(dir.path(), "latin1.txt", b"caf\xe9\n");
        let error = call(&Edit, &context, args("latin1.txt", "caf", "cafe"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
        let error = call(&Edit, &context, args("latin1.txt", "a", "a"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("the same"), "{error}");
        let error = call(&Edit, &context, args("none.txt", "a", "b"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[tokio::test]
    async fn empty_old_string_creates_a_missing_file() {
        let (dir, context) = project();
        let out = call(&Edit, &context, args("new/f.txt", "", "hello\n"))
            .await
            .unwrap();
        assert_eq!(out.changed_files, ["new/f.txt"]);
        assert_eq!(get(dir.path(), "new/f.txt"), "hello\n");
        let error = call(&Edit, &context, args("new/f.txt", "", "again"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("old_string is empty"), "{error}");
    }
}
