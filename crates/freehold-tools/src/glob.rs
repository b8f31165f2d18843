//! The `glob` tool: files whose paths match a pattern, newest first.

use std::time::SystemTime;

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use globset::GlobBuilder;
use serde::Deserialize;

use crate::files::blocking;
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths, walk};

/// At most this many paths are listed.
const MAX_RESULTS: usize = 200;

/// The `glob` tool.
pub(crate) struct Glob;

#[derive(Debug, Deserialize)]
struct Args {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

#[async_trait]
impl Tool for Glob {
    fn name(&self) -> &'static str {
        "glob"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "glob".into(),
            description: "Find files by name pattern, e.g. \"**/*.rs\" or \"src/*.ts\" (no / matches names at any depth); newest first. path: directory to search in.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string"}
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
        let args: Args = args::parse("glob", arguments)?;
        let context = context.clone();
        blocking(move || glob(&context, &args)).await
    }
}

fn glob(context: &ToolContext, args: &Args) -> Result<ToolOutput, ToolError> {
    let dir = paths::resolve(&context.root, args.path.as_deref().unwrap_or(""))?;
    let shown_dir = paths::display(&context.root, &dir);
    if !dir.is_dir() {
        return Err(ToolError::failed(format!(
            "{shown_dir} is not a directory; path must be a directory to search in"
        )));
    }
    let pattern = args.pattern.trim().trim_start_matches("./");
    // Like .gitignore: a pattern without a slash matches the file name at
    // any depth, which is what "*.rs" usually means.
    let by_name = !pattern.contains('/');
    let matcher = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|error| ToolError::failed(format!("invalid glob pattern: {error}")))?
        .compile_matcher();

    let mut found: Vec<(SystemTime, String)> = Vec::new();
    for entry in walk::builder(&dir).build().flatten() {
        if !entry.file_type().is_some_and(|kind| kind.is_file()) {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(&dir) else {
            continue;
        };
        let matched = if by_name {
            matcher.is_match(entry.file_name())
        } else {
            matcher.is_match(relative)
        };
        if matched {
            let modified = entry
                .metadata()
                .ok()
                .and_then(|metadata| metadata.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, paths::display(&context.root, entry.path())));
        }
    }
    if found.is_empty() {
        return Ok(ToolOutput::text(format!(
            "No files match {:?} in {shown_dir}.",
            args.pattern
        )));
    }
    // Newest first; ties by path so the order is stable.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = found.len();
    let mut out: Vec<String> = found
        .into_iter()
        .take(MAX_RESULTS)
        .map(|(_, path)| path)
        .collect();
    if total > MAX_RESULTS {
        out.push(format!(
            "({} more files not shown; use a narrower pattern or path)",
            total - MAX_RESULTS
        ));
    }
    Ok(ToolOutput::text(out.join("\n")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::testing::{call, project, put};

    fn touch(path: &std::path::Path, seconds_ago: u64) {
        let when = SystemTime::now() - Duration::from_secs(seconds_ago);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[tokio::test]
    async fn matches_names_at_any_depth_newest_first() {
        let (dir, context) = project();
        put(dir.path(), "a.rs", "");
        put(dir.path(), "src/b.rs", "");
        put(dir.path(), "src/deep/c.rs", "");
        put(dir.path(), "src/d.txt", "");
        touch(&dir.path().join("a.rs"), 300);
        touch(&dir.path().join("src/b.rs"), 100);
        touch(&dir.path().join("src/deep/c.rs"), 200);
        let out = call(&Glob, &context, json!({"pattern": "*.rs"}))
            .await
            .unwrap();
        assert_eq!(out.content, "src/b.rs\nsrc/deep/c.rs\na.rs");
        let out = call(&Glob, &context, json!({"pattern": "src/*.rs"}))
            .await
            .unwrap();
        assert_eq!(out.content, "src/b.rs");
        let out = call(
            &Glob,
            &context,
            json!({"pattern": "**/*.rs", "path": "src"}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "src/b.rs\nsrc/deep/c.rs");
        let out = call(&Glob, &context, json!({"pattern": "*.py"}))
            .await
            .unwrap();
        assert_eq!(out.content, "No files match \"*.py\" in ..");
    }

    #[tokio::test]
    async fn respects_gitignore_and_hidden_files_without_git() {
        let (dir, context) = project();
        put(dir.path(), ".gitignore", "target/\n*.log\n");
        put(dir.path(), "keep.rs", "");
        put(dir.path(), "target/out.rs", "");
        put(dir.path(), "debug.log", "");
        put(dir.path(), ".hidden/x.rs", "");
        let out = call(&Glob, &context, json!({"pattern": "**/*"}))
            .await
            .unwrap();
        assert_eq!(out.content, "keep.rs");
    }

    #[tokio::test]
    async fn caps_the_list() {
        let (dir, context) = project();
        for n in 0..(MAX_RESULTS + 5) {
            put(dir.path(), &format!("f{n:03}.txt"), "");
        }
        let out = call(&Glob, &context, json!({"pattern": "*.txt"}))
            .await
            .unwrap();
        let lines: Vec<&str> = out.content.lines().collect();
        assert_eq!(lines.len(), MAX_RESULTS + 1);
        assert_eq!(
            lines[MAX_RESULTS],
            "(5 more files not shown; use a narrower pattern or path)"
        );
    }

    #[tokio::test]
    async fn refuses_bad_patterns_and_paths() {
        let (dir, context) = project();
        put(dir.path(), "f.txt", "");
        let error = call(&Glob, &context, json!({"pattern": "a[", }))
            .await
            .unwrap_err();
        assert!(
            error.to_string().starts_with("invalid glob pattern"),
            "{error}"
        );
        let error = call(&Glob, &context, json!({"pattern": "*", "path": "f.txt"}))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
        let error = call(&Glob, &context, json!({"pattern": "*", "path": "/"}))
            .await
            .unwrap_err();
        assert!(matches!(error, ToolError::OutsideProject { .. }));
    }
}
