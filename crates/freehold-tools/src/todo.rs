//! The `todo` tool: the model's plan, replaced whole on each call.

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use serde::Deserialize;

use crate::{TodoItem, TodoStatus, Tool, ToolContext, ToolError, ToolKind, ToolOutput, args};

/// The `todo` tool.
pub(crate) struct Todo;

#[derive(Debug, Deserialize)]
struct Args {
    todos: Vec<TodoItem>,
}

#[async_trait]
impl Tool for Todo {
    fn name(&self) -> &'static str {
        "todo"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "todo".into(),
            description: "Replace your task list. Keep one item in_progress and mark items completed as you finish them.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "todos": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "content": {"type": "string"},
                                "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}
                            },
                            "required": ["content", "status"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["todos"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Plan
    }

    fn subject(&self, _arguments: &serde_json::Value) -> Option<String> {
        None
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("todo", arguments)?;
        let rendered = render(&args.todos);
        *context
            .todos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = args.todos;
        Ok(ToolOutput::text(rendered))
    }
}

/// The list as the model sees it back: `[x] done`, `[>] doing`, `[ ] to do`.
pub(crate) fn render(todos: &[TodoItem]) -> String {
    if todos.is_empty() {
        return "The task list is empty.".to_owned();
    }
    todos
        .iter()
        .map(|todo| {
            let mark = match todo.status {
                TodoStatus::Completed => "[x]",
                TodoStatus::InProgress => "[>]",
                TodoStatus::Pending => "[ ]",
            };
            format!("{mark} {}", todo.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{call, project};

    #[tokio::test]
    async fn replaces_the_list_and_renders_it() {
        let (_dir, context) = project();
        let out = call(
            &Todo,
            &context,
            json!({"todos": [
                {"content": "read the code", "status": "completed"},
                {"content": "fix the bug", "status": "in_progress"},
                {"content": "run the tests", "status": "pending"}
            ]}),
        )
        .await
        .unwrap();
        assert_eq!(
            out.content,
            "[x] read the code\n[>] fix the bug\n[ ] run the tests"
        );
        assert_eq!(context.todo_list().len(), 3);
        assert_eq!(context.todo_list()[1].status, TodoStatus::InProgress);

        let out = call(
            &Todo,
            &context,
            json!({"todos": [{"content": "ship", "status": "done"}]}),
        )
        .await
        .unwrap();
        assert_eq!(out.content, "[x] ship");
        assert_eq!(context.todo_list().len(), 1);

        let out = call(&Todo, &context, json!({"todos": []})).await.unwrap();
        assert_eq!(out.content, "The task list is empty.");
        assert!(context.todo_list().is_empty());
    }

    #[tokio::test]
    async fn bad_items_are_invalid_arguments() {
        let (_dir, context) = project();
        let error = call(
            &Todo,
            &context,
            json!({"todos": [{"content": "x", "status": "later"}]}),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, ToolError::InvalidArguments { tool: "todo", .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("unknown variant `later`"),
            "{error}"
        );
    }
}
