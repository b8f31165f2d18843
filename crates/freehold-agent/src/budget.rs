//! The context budget: estimating how full the model's context is,
//! truncating large tool outputs, and choosing what compaction summarises.

use freehold_protocol::{ContentPart, Message, Role};

/// Bytes per token assumed when no tokenizer count is at hand. Code and
/// English average 3.5–4 bytes per token on current tokenizers; 3 errs on
/// the side of compacting early rather than overflowing.
const BYTES_PER_TOKEN: u64 = 3;

/// Tokens a message costs beyond its text (role markers, separators).
const PER_MESSAGE_TOKENS: u64 = 6;

/// Compact when the conversation passes this share of the usable window.
pub const COMPACT_AT: f64 = 0.8;

/// Keep at most this share of the usable window verbatim when compacting.
pub const KEEP_RECENT: f64 = 0.35;

/// A rough token count of `text`.
pub fn estimate_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(BYTES_PER_TOKEN)
}

/// A rough token count of one message.
pub fn estimate_message(message: &Message) -> u64 {
    let parts: u64 = message
        .content
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => estimate_text(text),
            ContentPart::ToolCall(call) => {
                estimate_text(&call.name) + estimate_text(&call.arguments) + 8
            }
            ContentPart::ToolResult(result) => estimate_text(&result.content) + 4,
            ContentPart::Reasoning(reasoning) => estimate_text(&reasoning.text),
            ContentPart::Image { .. } => 800,
            ContentPart::Document(document) => document.estimated_tokens(),
        })
        .sum();
    parts + PER_MESSAGE_TOKENS
}

/// A rough token count of messages.
pub fn estimate_messages(messages: &[Message]) -> u64 {
    messages.iter().map(estimate_message).sum()
}

/// Cut `text` to about `max_bytes`, keeping its head and tail (errors and
/// summaries are usually at the end), with a note saying what was cut.
/// Returns the text unchanged when it fits.
pub fn truncate_middle(text: &str, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text.to_owned(), false);
    }
    let head_len = floor_char_boundary(text, max_bytes * 2 / 3);
    let tail_start = ceil_char_boundary(text, text.len() - (max_bytes - head_len));
    let head = &text[..head_len];
    let tail = &text[tail_start..];
    let omitted = &text[head_len..tail_start];
    let lines = omitted.matches('\n').count();
    (
        format!(
            "{head}\n[... {} bytes ({lines} lines) omitted to fit the context; read the file with offset/limit or grep for what you need ...]\n{tail}",
            omitted.len()
        ),
        true,
    )
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// Where to split `messages` for compaction: everything before the index
/// is summarised, everything from it is kept. The kept part fits in
/// `keep_tokens` where possible and never starts with a tool result (so
/// no result is separated from its call). `None` when there is nothing
/// worth summarising.
pub fn compaction_split(messages: &[Message], keep_tokens: u64) -> Option<usize> {
    let mut kept = 0u64;
    let mut split = None;
    for index in (1..messages.len()).rev() {
        kept += estimate_message(&messages[index]);
        if kept > keep_tokens && split.is_some() {
            break;
        }
        if messages[index].role != Role::Tool {
            split = Some(index);
        }
    }
    // Keep at least the last message that is not a tool result.
    let split = split.or_else(|| {
        (1..messages.len())
            .rev()
            .find(|&i| messages[i].role != Role::Tool)
    })?;
    (split > 0).then_some(split)
}

/// The conversation written out as plain text for the summariser, long
/// tool results shortened.
pub fn transcript_text(messages: &[Message], max_bytes: usize) -> String {
    let mut out = String::new();
    for message in messages {
        let role = match message.role {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool result",
        };
        for part in &message.content {
            match part {
                ContentPart::Text { text } => {
                    out.push_str(&format!("{role}: {}\n", text.trim()));
                }
                ContentPart::ToolCall(call) => {
                    out.push_str(&format!(
                        "Assistant called {}({})\n",
                        call.name, call.arguments
                    ));
                }
                ContentPart::ToolResult(result) => {
                    let (short, _) = truncate_middle(&result.content, 600);
                    let flag = if result.is_error { " (error)" } else { "" };
                    out.push_str(&format!("{role}{flag}: {short}\n"));
                }
                _ => {}
            }
        }
    }
    truncate_middle(&out, max_bytes).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use freehold_protocol::ToolCall;

    fn call(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall::new(id, "read", "{}"))],
        }
    }

    #[test]
    fn truncation_keeps_head_and_tail() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let (cut, truncated) = truncate_middle(&text, 1000);
        assert!(truncated);
        assert!(cut.starts_with("line 0\n"));
        assert!(cut.trim_end().ends_with("line 999"));
        assert!(cut.contains("omitted"));
        assert!(cut.len() < 1200);
        assert_eq!(truncate_middle("short", 10), ("short".into(), false));
        // Multi-byte characters are never split.
        let (cut, _) = truncate_middle(&"é".repeat(1000), 101);
        assert!(cut.contains("omitted"));
    }

    #[test]
    fn split_never_separates_a_result_from_its_call() {
        let big = "x".repeat(3000);
        let messages = vec![
            Message::user("task"),
            call("1"),
            Message::tool_result("1", big.clone()),
            call("2"),
            Message::tool_result("2", big.clone()),
            call("3"),
            Message::tool_result("3", "small"),
        ];
        let split = compaction_split(&messages, 100).unwrap();
        assert_eq!(split, 5);
        assert_eq!(messages[split].role, Role::Assistant);
        let split = compaction_split(&messages, 1200).unwrap();
        assert_eq!(split, 3);
        assert_eq!(compaction_split(&messages[..1], 100), None);
    }
}
