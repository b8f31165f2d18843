//! The set of tools offered to the model.

use std::sync::Arc;

use freehold_protocol::ToolSpec;

use crate::Tool;

/// An ordered set of tools. The order is the order of the tool list in the
/// prompt, so it is fixed (byte-stable prompts keep the prefix cache warm).
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: Vec<Arc<dyn Tool>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|tool| tool.name()))
            .finish()
    }
}

impl Toolbox {
    /// Every built-in tool: read, write, edit, apply_patch, glob, grep,
    /// shell, todo.
    pub fn builtin() -> Self {
        Self {
            tools: vec![
                Arc::new(crate::read::Read),
                Arc::new(crate::write::Write),
                Arc::new(crate::edit::Edit),
                Arc::new(crate::apply_patch::ApplyPatch),
                Arc::new(crate::glob::Glob),
                Arc::new(crate::grep::Grep),
                Arc::new(crate::shell::Shell),
                Arc::new(crate::todo::Todo),
            ],
        }
    }

    /// An empty toolbox.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Add a tool (replacing one of the same name).
    pub fn with(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.retain(|existing| existing.name() != tool.name());
        self.tools.push(tool);
        self
    }

    /// Keep only the tools `keep` accepts.
    pub fn retain(mut self, mut keep: impl FnMut(&dyn Tool) -> bool) -> Self {
        self.tools.retain(|tool| keep(tool.as_ref()));
        self
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.iter().find(|tool| tool.name() == name).cloned()
    }

    /// The specs to send to the model, in order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|tool| tool.spec()).collect()
    }

    /// The tools' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|tool| tool.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_small_strict_object_schemas() {
        let toolbox = Toolbox::builtin();
        assert_eq!(
            toolbox.names(),
            [
                "read",
                "write",
                "edit",
                "apply_patch",
                "glob",
                "grep",
                "shell",
                "todo"
            ]
        );
        for spec in toolbox.specs() {
            let schema = &spec.parameters;
            assert_eq!(schema["type"], "object", "{}", spec.name);
            assert_eq!(schema["additionalProperties"], false, "{}", spec.name);
            assert!(schema["properties"].is_object(), "{}", spec.name);
            for required in schema["required"].as_array().unwrap() {
                let name = required.as_str().unwrap();
                assert!(
                    schema["properties"].get(name).is_some(),
                    "{}: {name}",
                    spec.name
                );
            }
            assert!(
                !spec.description.is_empty() && spec.description.len() < 300,
                "{}",
                spec.name
            );
        }
        // The whole tool list must leave room in a 2,000-token prompt.
        let size = serde_json::to_string(&toolbox.specs()).unwrap().len();
        assert!(size < 3_500, "{size} chars");
    }

    #[test]
    fn specs_are_byte_stable() {
        let first = serde_json::to_string(&Toolbox::builtin().specs()).unwrap();
        let second = serde_json::to_string(&Toolbox::builtin().specs()).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn kinds_and_subjects() {
        let toolbox = Toolbox::builtin();
        let kind = |name: &str| toolbox.get(name).unwrap().kind();
        assert_eq!(kind("read"), crate::ToolKind::Read);
        assert_eq!(kind("glob"), crate::ToolKind::Read);
        assert_eq!(kind("grep"), crate::ToolKind::Read);
        assert_eq!(kind("write"), crate::ToolKind::Edit);
        assert_eq!(kind("edit"), crate::ToolKind::Edit);
        assert_eq!(kind("apply_patch"), crate::ToolKind::Edit);
        assert_eq!(kind("shell"), crate::ToolKind::Execute);
        assert_eq!(kind("todo"), crate::ToolKind::Plan);
        let subject =
            |name: &str, args: serde_json::Value| toolbox.get(name).unwrap().subject(&args);
        assert_eq!(
            subject("shell", serde_json::json!({"command": "git status"})).as_deref(),
            Some("git status")
        );
        assert_eq!(
            subject("read", serde_json::json!({"path": "src/a.rs"})).as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(
            subject("edit", serde_json::json!({"path": "b"})).as_deref(),
            Some("b")
        );
        assert_eq!(subject("todo", serde_json::json!({"todos": []})), None);
    }
}
