//! The `apply_patch` tool.

use async_trait::async_trait;
use freehold_protocol::ToolSpec;

use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput};

/// The `apply_patch` tool (to be implemented).
pub(crate) struct ApplyPatch;

#[async_trait]
impl Tool for ApplyPatch {
    fn name(&self) -> &'static str {
        "apply_patch"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "apply_patch".into(),
            description: String::new(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Read
    }

    fn subject(&self, _arguments: &serde_json::Value) -> Option<String> {
        None
    }

    async fn run(
        &self,
        _arguments: serde_json::Value,
        _context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        Err(ToolError::failed("not implemented"))
    }
}
