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
