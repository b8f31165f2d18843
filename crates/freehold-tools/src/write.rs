//! The `write` tool: create a file or replace one the model has read.

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use serde::Deserialize;

use crate::files::{blocking, io_error, line_count, unified_diff, write_atomic};
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths};

/// The `write` tool.
pub(crate) struct Write;

#[derive(Debug, Deserialize)]
struct Args {
    path: String,
    content: String,
}

#[async_trait]
impl Tool for Write {
    fn name(&self) -> &'static str {
        "write"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write".into(),
            description: "Create a file, or replace a whole file you have read, with content. Prefer edit for small changes.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"}
                },
                "required": ["path", "content"],
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
        let args: Args = args::parse("write", arguments)?;
        let context = context.clone();
        blocking(move || write(&context, &args)).await
    }
}

fn write(context: &ToolContext, args: &Args) -> Result<ToolOutput, ToolError> {
    let path = paths::resolve(&context.root, &args.path)?;
    let shown = paths::display(&context.root, &path);
    let old = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {
            return Err(ToolError::failed(format!(
                "{shown} is a directory; give a file path"
            )));
        }
        Ok(_) => {
            // Overwriting a file the model never saw (or that changed since)
            // would silently throw away someone's work.
            if !context.files.was_seen(&path) {
                return Err(ToolError::failed(format!(
                    "{shown} already exists and you have not read it; read it first, then write it (or use edit)"
                )));
            }
            if context.files.changed_since_seen(&path) {
                return Err(ToolError::failed(format!(
                    "{shown} changed on disk since you read it; read it again before writing"
                )));
            }
            let bytes = std::fs::read(&path).map_err(io_error(format!("reading {shown}")))?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Err(_) => None,
    };
    if old.as_deref() == Some(args.content.as_str()) {
        context.files.mark_seen(&path);
        return Ok(ToolOutput::text(format!(
            "{shown} already has this content; nothing changed."
        )));
    }
    write_atomic(&path, args.content.as_bytes()).map_err(io_error(format!("writing {shown}")))?;
    context.files.mark_seen(&path);
    let verb = if old.is_some() { "Wrote" } else { "Created" };
    Ok(ToolOutput {
        content: format!("{verb} {shown} ({} lines).", line_count(&args.content)),
        diff: Some(unified_diff(
            &shown,
            &shown,
            old.as_deref().unwrap_or(""),
            &args.content,
        )),
        changed_files: vec![shown],
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::read::Read;
    use crate::testing::{call, get, project, put};

    #[tokio::test]
    async fn creates_a_file_and_its_parents() {
        let (dir, context) = project();
        let out = call(
            &Write,
            &context,
            json!({"path": "a/b/c.txt", "content": "hi\nthere\n"}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "Created a/b/c.txt (2 lines).");
        assert_eq!(out.changed_files, ["a/b/c.txt"]);
        assert!(
            out.diff
                .unwrap()
                .contains("+++ b/a/b/c.txt\n@@ -0,0 +1,2 @@\n+hi\n+there\n")
        );
        assert_eq!(get(dir.path(), "a/b/c.txt"), "hi\nthere\n");
        // Written files count as seen: a second write needs no read.
        call(
            &Write,
            &context,
            json!({"path": "a/b/c.txt", "content": "bye\n"}),
        )
        .await
        .unwrap();
        assert_eq!(get(dir.path(), "a/b/c.txt"), "bye\n");
    }

    #[tokio::test]
    async fn refuses_to_overwrite_an_unread_file() {
        let (dir, context) = project();
        put(dir.path(), "keep.txt", "precious\n");
        let error = call(
            &Write,
            &context,
            json!({"path": "keep.txt", "content": "x"}),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("read it first"), "{error}");
        assert_eq!(get(dir.path(), "keep.txt"), "precious\n");

        call(&Read, &context, json!({"path": "keep.txt"}))
            .await
            .unwrap();
        let out = call(
            &Write,
            &context,
            json!({"path": "keep.txt", "content": "new\n"}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "Wrote keep.txt (1 lines).");
        assert!(out.diff.unwrap().contains("-precious\n+new\n"));
    }

    #[tokio::test]
    async fn refuses_a_file_changed_since_it_was_read() {
        let (dir, context) = project();
        put(dir.path(), "f.txt", "v1\n");
        call(&Read, &context, json!({"path": "f.txt"}))
            .await
            .unwrap();
        let path = dir.path().join("f.txt");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::write(&path, "v2\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let error = call(
            &Write,
            &context,
            json!({"path": "f.txt", "content": "v3\n"}),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("changed on disk"), "{error}");
        assert_eq!(get(dir.path(), "f.txt"), "v2\n");
    }

    #[tokio::test]
    async fn refuses_directories_and_outside_paths() {
        let (dir, context) = project();
        put(dir.path(), "d/x", "");
        let error = call(&Write, &context, json!({"path": "d", "content": ""}))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("is a directory"), "{error}");
        let error = call(&Write, &context, json!({"path": "/tmp/x", "content": ""}))
            .await
            .unwrap_err();
        assert!(matches!(error, ToolError::OutsideProject { .. }));
    }
}
