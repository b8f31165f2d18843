//! The `apply_patch` tool: several file changes at once, all or nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use serde::Deserialize;

use crate::files::{Text, blocking, io_error, unified_diff, write_atomic};
use crate::patch::{self, Op};
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths};

/// The `apply_patch` tool.
pub(crate) struct ApplyPatch;

#[derive(Debug, Deserialize)]
struct Args {
    patch: String,
}

#[async_trait]
impl Tool for ApplyPatch {
    fn name(&self) -> &'static str {
        "apply_patch"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "apply_patch".into(),
            description: "Change several files at once. patch: \"*** Begin Patch\", then sections \"*** Add File: p\" (lines start with +), \"*** Update File: p\" (hunks after @@: ' ' context, - remove, + add) or \"*** Delete File: p\", then \"*** End Patch\".".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"patch": {"type": "string"}},
                "required": ["patch"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Edit
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        let patch = arguments.get("patch")?.as_str()?;
        patch::parse(patch)
            .ok()?
            .first()
            .map(|op| op.path().to_owned())
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("apply_patch", arguments)?;
        let context = context.clone();
        blocking(move || apply_patch(&context, &args.patch)).await
    }
}

fn apply_patch(context: &ToolContext, patch: &str) -> Result<ToolOutput, ToolError> {
    let ops = patch::parse(patch)
        .map_err(|error| ToolError::failed(format!("invalid patch: {error}")))?;
    let mut plan = Plan::new(&context.root);
    for op in &ops {
        plan.add(op)?;
    }
    plan.commit()?;
    for path in &plan.order {
        if plan.state.get(path).is_some_and(Option::is_some) {
            context.files.mark_seen(path);
        }
    }
    Ok(plan.output)
}

/// Every file's new contents, computed in memory before anything is
/// written, so a hunk that fails leaves every file untouched.
struct Plan<'a> {
    root: &'a Path,
    /// Paths in the order the patch first touches them.
    order: Vec<PathBuf>,
    /// What each touched path held before (`None`: did not exist).
    original: HashMap<PathBuf, Option<Vec<u8>>>,
    /// What each touched path will hold (`None`: deleted).
    state: HashMap<PathBuf, Option<Vec<u8>>>,
    output: ToolOutput,
    summary: Vec<String>,
}

impl<'a> Plan<'a> {
    fn new(root: &'a Path) -> Self {
        Self {
            root,
            order: Vec::new(),
            original: HashMap::new(),
            state: HashMap::new(),
            output: ToolOutput::default(),
            summary: Vec::new(),
        }
    }

    /// What `path` holds at this point of the patch.
    fn current(&mut self, path: &Path, shown: &str) -> Result<Option<Vec<u8>>, ToolError> {
        if let Some(state) = self.state.get(path) {
            return Ok(state.clone());
        }
        let bytes = match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(ToolError::failed(format!(
                    "{shown} is a directory, not a file"
                )));
            }
            Ok(_) => Some(std::fs::read(path).map_err(io_error(format!("reading {shown}")))?),
            Err(_) => None,
        };
        self.order.push(path.to_path_buf());
        self.original.insert(path.to_path_buf(), bytes.clone());
        self.state.insert(path.to_path_buf(), bytes.clone());
        Ok(bytes)
    }

    fn resolve(&self, path: &str) -> Result<(PathBuf, String), ToolError> {
        let resolved = paths::resolve(self.root, path)?;
        let shown = paths::display(self.root, &resolved);
        Ok((resolved, shown))
    }

    fn add(&mut self, op: &Op) -> Result<(), ToolError> {
        let (path, shown) = self.resolve(op.path())?;
        let before = self.current(&path, &shown)?;
        match op {
            Op::Add { content, .. } => {
                if before.is_some() {
                    return Err(failed(format!(
                        "{shown} already exists; use \"*** Update File: {shown}\" to change it"
                    )));
                }
                self.record(&shown, &shown, "", content, format!("A {shown}"));
                self.state
                    .insert(path.clone(), Some(content.clone().into_bytes()));
                self.touch(&shown);
            }
            Op::Delete { .. } => {
                let Some(before) = before else {
                    return Err(failed(format!("cannot delete {shown}: it does not exist")));
                };
                let old = String::from_utf8_lossy(&before).into_owned();
                self.record(&shown, &shown, &old, "", format!("D {shown}"));
                self.state.insert(path.clone(), None);
                self.touch(&shown);
            }
            Op::Update { move_to, hunks, .. } => {
                let Some(before) = before else {
                    return Err(failed(format!(
                        "cannot update {shown}: it does not exist (use \"*** Add File: {shown}\" to create it)"
                    )));
                };
                let text = Text::decode(before).ok_or_else(|| {
                    failed(format!(
                        "{shown} is not UTF-8 text; apply_patch only edits UTF-8 files"
                    ))
                })?;
                let body = patch::apply(&text.body, hunks)
                    .map_err(|error| failed(format!("in {shown}, {error}\nRead the file and copy the context and - lines exactly.")))?;
                let bytes = text.encode(&body);
                match move_to {
                    Some(to) => {
                        let (target, target_shown) = self.resolve(to)?;
                        if target != path && self.current(&target, &target_shown)?.is_some() {
                            return Err(failed(format!(
                                "cannot move {shown} to {target_shown}: it already exists"
                            )));
                        }
                        self.record(
                            &shown,
                            &target_shown,
                            &text.body,
                            &body,
                            format!("R {shown} -> {target_shown}"),
                        );
                        self.state.insert(path.clone(), None);
                        self.state.insert(target, Some(bytes));
                        self.touch(&shown);
                        self.touch(&target_shown);
                    }
                    None => {
                        self.record(&shown, &shown, &text.body, &body, format!("M {shown}"));
                        self.state.insert(path.clone(), Some(bytes));
                        self.touch(&shown);
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, from: &str, to: &str, old: &str, new: &str, summary: String) {
        let diff = unified_diff(from, to, old, new);
        self.output
            .diff
            .get_or_insert_with(String::new)
            .push_str(&diff);
        self.summary.push(summary);
    }

    fn touch(&mut self, shown: &str) {
        if !self.output.changed_files.iter().any(|file| file == shown) {
            self.output.changed_files.push(shown.to_owned());
        }
    }

    /// Write every changed file; on a failure, put back the ones already
    /// written (best effort) and report it.
    fn commit(&mut self) -> Result<(), ToolError> {
        let mut done: Vec<&PathBuf> = Vec::new();
        for path in &self.order {
            let (before, after) = (&self.original[path], &self.state[path]);
            if before == after {
                continue;
            }
            if let Err(error) = put(path, after.as_deref()) {
                for written in done.into_iter().rev() {
                    let _ = put(written, self.original[written].as_deref());
                }
                let shown = paths::display(self.root, path);
                return Err(io_error(format!(
                    "writing {shown} failed, so the files already changed were restored"
                ))(error));
            }
            done.push(path);
        }
        self.output.content = format!("Applied the patch:\n{}", self.summary.join("\n"));
        Ok(())
    }
}

/// Make `path` hold `bytes`, or not exist.
fn put(path: &Path, bytes: Option<&[u8]>) -> std::io::Result<()> {
    match bytes {
        Some(bytes) => write_atomic(path, bytes),
        None => match std::fs::remove_file(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    }
}

fn failed(message: String) -> ToolError {
    ToolError::Failed(format!("{message}\nNo file was changed."))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{call, get, project, put};

    async fn patch(context: &ToolContext, text: &str) -> Result<ToolOutput, ToolError> {
        call(&ApplyPatch, context, json!({"patch": text})).await
    }

    #[tokio::test]
    async fn adds_updates_moves_and_deletes_across_files() {
        let (dir, context) = project();
        put(
            dir.path(),
            "src/lib.rs",
            "fn a() {\n    1\n}\n\nfn b() {\n    2\n}\n",
        );
        put(dir.path(), "old.txt", "x\ny\n");
        put(dir.path(), "gone.txt", "bye\n");
        let out = patch(
            &context,
            "*** Begin Patch\n\
             *** Add File: docs/new.md\n+# New\n+text\n\
             *** Update File: src/lib.rs\n@@ fn b() {\n-    2\n+    3\n\
             *** Update File: old.txt\n*** Move to: moved/new.txt\n x\n-y\n+z\n\
             *** Delete File: gone.txt\n\
             *** End Patch",
        )
        .await
        .unwrap();
        assert_eq!(
            out.content,
            "Applied the patch:\nA docs/new.md\nM src/lib.rs\nR old.txt -> moved/new.txt\nD gone.txt"
        );
        assert_eq!(
            out.changed_files,
            [
                "docs/new.md",
                "src/lib.rs",
                "old.txt",
                "moved/new.txt",
                "gone.txt"
            ]
        );
        assert_eq!(get(dir.path(), "docs/new.md"), "# New\ntext\n");
        assert_eq!(
            get(dir.path(), "src/lib.rs"),
            "fn a() {\n    1\n}\n\nfn b() {\n    3\n}\n"
        );
        assert_eq!(get(dir.path(), "moved/new.txt"), "x\nz\n");
        assert!(!dir.path().join("old.txt").exists());
        assert!(!dir.path().join("gone.txt").exists());
        let diff = out.diff.unwrap();
        assert!(
            diff.contains("--- a/old.txt\n+++ b/moved/new.txt\n"),
            "{diff}"
        );
        assert!(diff.contains("-    2\n+    3\n"), "{diff}");
        assert!(context.files.was_seen(&dir.path().join("src/lib.rs")));
    }

    #[tokio::test]
    async fn a_failing_hunk_leaves_every_file_untouched() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "one\ntwo\n");
        put(dir.path(), "b.txt", "three\nfour\n");
        put(dir.path(), "c.txt", "five\n");
        let error = patch(
            &context,
            "*** Begin Patch\n\
             *** Update File: a.txt\n-one\n+ONE\n\
             *** Add File: d.txt\n+new\n\
             *** Delete File: c.txt\n\
             *** Update File: b.txt\n three\n-nope\n+NOPE\n\
             *** End Patch",
        )
        .await
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("in b.txt, hunk 1 did not match"),
            "{message}"
        );
        assert!(message.contains("three\nnope"), "{message}");
        assert!(message.contains("No file was changed."), "{message}");
        assert_eq!(get(dir.path(), "a.txt"), "one\ntwo\n");
        assert_eq!(get(dir.path(), "b.txt"), "three\nfour\n");
        assert_eq!(get(dir.path(), "c.txt"), "five\n");
        assert!(!dir.path().join("d.txt").exists());
    }

    #[tokio::test]
    async fn a_failed_write_restores_files_already_written() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "one\n");
        put(dir.path(), "b.txt", "two\n");
        // A file where the move target needs a directory: the patch plans
        // fine, and writing fails after a.txt was written and b.txt removed.
        put(dir.path(), "blocker", "");
        let error = patch(
            &context,
            "*** Begin Patch\n*** Update File: a.txt\n-one\n+ONE\n*** Update File: b.txt\n*** Move to: blocker/b.txt\n-two\n+TWO\n*** End Patch",
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("writing blocker/b.txt failed"),
            "{error}"
        );
        assert!(error.to_string().contains("restored"), "{error}");
        assert_eq!(get(dir.path(), "a.txt"), "one\n");
        assert_eq!(get(dir.path(), "b.txt"), "two\n");
        assert_eq!(get(dir.path(), "blocker"), "");
    }

    #[tokio::test]
    async fn preserves_crlf_and_bom() {
        let (dir, context) = project();
        put(dir.path(), "w.txt", "\u{feff}a\r\nb\r\nc\r\n");
        patch(
            &context,
            "*** Begin Patch\n*** Update File: w.txt\n a\n-b\n+B\n+B2\n*** End Patch",
        )
        .await
        .unwrap();
        assert_eq!(get(dir.path(), "w.txt"), "\u{feff}a\r\nB\r\nB2\r\nc\r\n");
    }

    #[tokio::test]
    async fn refuses_bad_targets() {
        let (dir, context) = project();
        put(dir.path(), "a.txt", "a\n");
        let error = patch(
            &context,
            "*** Begin Patch\n*** Add File: a.txt\n+x\n*** End Patch",
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        let error = patch(
            &context,
            "*** Begin Patch\n*** Delete File: none.txt\n*** End Patch",
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        let error = patch(
            &context,
            "*** Begin Patch\n*** Update File: ../x\n-a\n+b\n*** End Patch",
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ToolError::OutsideProject { .. }));
        let error = patch(&context, "not a patch").await.unwrap_err();
        assert!(error.to_string().starts_with("invalid patch:"), "{error}");
    }

    #[test]
    fn subject_is_the_first_path() {
        let args = json!({"patch": "*** Begin Patch\n*** Update File: src/a.rs\n-x\n+y\n*** Delete File: b\n*** End Patch"});
        assert_eq!(ApplyPatch.subject(&args).as_deref(), Some("src/a.rs"));
        assert_eq!(ApplyPatch.subject(&json!({})), None);
    }
}
