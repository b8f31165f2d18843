//! Helpers for the tools' unit tests.

use std::path::Path;

use crate::{Tool, ToolContext, ToolError, ToolOutput};

/// A temporary project directory and a context rooted in it.
pub(crate) fn project() -> (tempfile::TempDir, ToolContext) {
    let dir = tempfile::tempdir().unwrap();
    let context = ToolContext::new(dir.path());
    (dir, context)
}

/// Write `content` to `name` under `root`, creating parent directories.
pub(crate) fn put(root: &Path, name: &str, content: impl AsRef<[u8]>) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The content of `name` under `root`, as text.
pub(crate) fn get(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(name)).unwrap()
}

/// Run `tool` with JSON `arguments`.
pub(crate) async fn call(
    tool: &dyn Tool,
    context: &ToolContext,
    arguments: serde_json::Value,
) -> Result<ToolOutput, ToolError> {
    tool.run(arguments, context).await
}
