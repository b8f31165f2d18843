//! A request the size and shape of a coding agent's, for the benchmark's
//! `large` phases.
//!
//! Claude Code's first request of a session, captured with a recording
//! server (version 2.1.332, `-p "say hi"`), is 87 KB: a 29 KB system
//! prompt in text blocks, 12 tools whose descriptions add up to 34 KB and
//! whose schemas have some 290 JSON nodes, and an 11 KB user message of
//! several text blocks; later requests add the conversation's tool calls
//! and results. This builds one of the same sizes from filler text (none of
//! Claude Code's), with three rounds of tool calls and results before a
//! last question, in both protocols: Anthropic's Messages for the gateway,
//! and the same conversation as an OpenAI chat request for the direct
//! reference, so that the mock reads a body of the same size both ways.

use serde_json::{Value, json};

/// The tools offered: name, description size in bytes, and properties.
const TOOLS: [(&str, usize, &[&str]); 12] = [
    (
        "Agent",
        8_200,
        &[
            "description",
            "prompt",
            "subagent_type",
            "model",
            "resume",
            "run_in_background",
            "isolation",
        ],
    ),
    (
        "Bash",
        10_800,
        &[
            "command",
            "timeout",
            "description",
            "run_in_background",
            "dangerously_disable_sandbox",
        ],
    ),
    (
        "Edit",
        1_100,
        &["file_path", "old_string", "new_string", "replace_all"],
    ),
    ("ListAgents", 1_400, &["status", "limit", "verbose"]),
    (
        "Read",
        1_800,
        &["file_path", "offset", "limit", "pages", "encoding"],
    ),
    ("ReportFindings", 600, &["findings", "summary"]),
    (
        "ScheduleWakeup",
        3_400,
        &["delay_seconds", "reason", "prompt", "repeat", "until"],
    ),
    ("Skill", 1_400, &["skill", "args"]),
    ("ToolSearch", 950, &["query", "max_results"]),
    (
        "Workflow",
        3_500,
        &[
            "name", "steps", "inputs", "dry_run", "parallel", "timeout", "on_error",
        ],
    ),
    ("Glob", 600, &["pattern", "path"]),
    ("Write", 600, &["file_path", "content"]),
];

/// Filler prose of `bytes` bytes (to the sentence), with the quotes and
/// line breaks that real prompts have, so that JSON escapes are exercised.
fn prose(seed: &str, bytes: usize) -> String {
    let sentences = [
        "Read the files you need before you change them, and keep each change small.",
        "Prefer the dedicated tools over shell commands: they are faster and their output is shorter.",
        "When a command fails, read its \"stderr\" and say what went wrong before trying again.",
        "Never commit unless the user asks; never push to a remote.\n",
        "Answer in a few lines; the user reads your text in a terminal.\n\n",
    ];
    let mut text = String::with_capacity(bytes + 128);
    text.push_str(seed);
    text.push_str(": ");
    let mut index = seed.len();
    while text.len() < bytes {
        text.push_str(sentences[index % sentences.len()]);
        text.push(' ');
        index += 1;
    }
    text
}

/// The JSON Schema of a tool's input: an object of string, integer and
/// boolean properties, each with a description, the first required.
fn schema(properties: &[&str]) -> Value {
    let mut fields = serde_json::Map::new();
    for (index, name) in properties.iter().enumerate() {
        let property = match index % 3 {
            0 => json!({"type": "string", "description": prose(name, 120)}),
            1 => json!({"type": "integer", "minimum": 0, "description": prose(name, 60)}),
            _ => json!({"type": "boolean", "default": false, "description": prose(name, 40)}),
        };
        fields.insert((*name).to_owned(), property);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": fields,
        "required": [properties[0]],
        "additionalProperties": false,
    })
}

/// One round of the conversation: a tool's id, name, input and result.
fn rounds() -> Vec<(String, &'static str, Value, String)> {
    (0..3)
        .map(|round| {
            (
                format!("toolu_bench_{round}"),
                "Read",
                json!({"file_path": format!("/work/project/src/module_{round}.rs")}),
                prose(&format!("module_{round}.rs"), 2_000),
            )
        })
        .collect()
}

/// The first user message's text blocks (text parts, to OpenAI: the same
/// JSON): reminders and context as Claude Code sends them, then the task.
fn first_message() -> Value {
    json!([
        {"type": "text", "text": prose("reminder", 6_000)},
        {"type": "text", "text": prose("context", 4_500)},
        {"type": "text", "text": "Look at the modules under src/ and tell me what they do."},
    ])
}

/// The last question: the mock answers with its text (it calls a tool
/// only when the last message says "call").
const LAST_QUESTION: &str = "Now summarise what these modules do, in three sentences.";

/// The request as Claude Code sends it to `/v1/messages` (`model` is the
/// gateway's alias for the mock).
pub(super) fn messages_body(model: &str) -> Value {
    let tools: Vec<Value> = TOOLS
        .iter()
        .map(|(name, description, properties)| {
            json!({"name": name, "description": prose(name, *description), "input_schema": schema(properties)})
        })
        .collect();
    let system: Vec<Value> = [2_900, 13_000, 13_000]
        .iter()
        .enumerate()
        .map(|(index, bytes)| json!({"type": "text", "text": prose(&format!("system {index}"), *bytes)}))
        .collect();
    let mut messages = vec![json!({"role": "user", "content": first_message()})];
    for (id, name, input, result) in rounds() {
        messages.push(json!({
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I will read the next module."},
                {"type": "tool_use", "id": id, "name": name, "input": input},
            ],
        }));
        messages.push(json!({
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": id, "content": result}],
        }));
    }
    messages.push(json!({"role": "user", "content": LAST_QUESTION}));
    json!({
        "model": model,
        "max_tokens": 32,
        "system": system,
        "messages": messages,
        "tools": tools,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "bench-user"},
    })
}

/// The same conversation as an OpenAI chat request, for the direct
/// reference.
pub(super) fn chat_body(model: &str) -> Value {
    let tools: Vec<Value> = TOOLS
        .iter()
        .map(|(name, description, properties)| {
            json!({"type": "function", "function": {
                "name": name, "description": prose(name, *description), "parameters": schema(properties),
            }})
        })
        .collect();
    let system = [2_900, 13_000, 13_000]
        .iter()
        .enumerate()
        .map(|(index, bytes)| prose(&format!("system {index}"), *bytes))
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": first_message()}),
    ];
    for (id, name, input, result) in rounds() {
        messages.push(json!({
            "role": "assistant",
            "content": "I will read the next module.",
            "tool_calls": [{"id": id, "type": "function",
                "function": {"name": name, "arguments": input.to_string()}}],
        }));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
    }
    messages.push(json!({"role": "user", "content": LAST_QUESTION}));
    json!({"model": model, "messages": messages, "tools": tools, "max_tokens": 32})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_size_of_claude_codes() {
        let messages = messages_body("mock").to_string();
        let chat = chat_body("mock").to_string();
        // Claude Code's first request was 87 KB; with three rounds of
        // tool use, some 95 KB.
        assert!(
            (85_000..110_000).contains(&messages.len()),
            "{}",
            messages.len()
        );
        // Both protocols carry the same conversation, give or take the
        // wire's own shape.
        let ratio = chat.len() as f64 / messages.len() as f64;
        assert!((0.9..1.1).contains(&ratio), "{ratio}");
        assert!(!LAST_QUESTION.contains("call"));
    }
}
