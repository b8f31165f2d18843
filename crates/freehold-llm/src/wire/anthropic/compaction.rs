//! Server-side compaction in the Messages API, served by the gateway for
//! every provider.
//!
//! A client asks for it two ways: the `compact_20260112` context edit
//! (compact once the conversation reaches a trigger, then answer from the
//! summary, or stop at the summary with `pause_after_compaction`), or the
//! `compaction` parameter (`{"type": "summarize"}`: answer with the summary
//! alone). Either way the answer begins with a `compaction` block whose
//! `content` is the summary the model wrote, and the client sends that
//! block back in its assistant message: whatever comes before it in the
//! conversation is what it stands for, and is left out
//! ([`super::decode_request`]), while the system prompt and the tools stay.
//!
//! Anthropic's API compacts with the same model and returns the summary in
//! the clear too (beside opaque fields, which the gateway neither makes nor
//! needs). The gateway makes the compaction for Anthropic's API as well:
//! a block it made can then go on with any provider, and one Anthropic
//! made reads back by its `content` the same way.

use freehold_protocol::{ChatRequest, Role, Usage};
use serde_json::{Value, json};

use super::{
    ContentBlock, IterationUsage, MessageContent, MessagesResponse, WireMessage, WireUsage,
};
use crate::context_edit::CompactEdit;
use crate::wire::compaction::{summary_message, summary_request_asking};
use crate::wire::serve::{DecodeError, generated_id};

/// What the model is asked, after the conversation, to write the summary
/// (unless the request gave its own `instructions`). Unlike a Responses
/// compaction, nothing of the conversation is kept beside the summary, so
/// it must carry the user's request too.
pub(super) const SUMMARY_REQUEST: &str = "\
The conversation above is about to be replaced by a summary that you write \
now, to go on with the work from. Nothing else of it will be kept: not the \
user's messages, not your answers, not the tools you called or what they \
returned. Write the summary for yourself, as notes to continue from:
- what the user wants, and the constraints and preferences they gave;
- the user's latest message, in their words, and what it asks of you now;
- what has been done so far: files read or changed, commands run and what \
they showed, decisions made and why;
- what is left to do, and the next step;
- the exact names, paths, values and error messages needed to go on.
Be complete but brief. Write only the summary: no greeting, and call no \
tool.";

/// The `type` of a compaction block.
const COMPACTION: &str = "compaction";

/// The block's summary, when `value` (a block of a kind that has no type
/// of its own, [`ContentBlock::Other`]) is a `compaction` block: `Ok(None)`
/// for one whose compaction failed (`content: null`), which stands for
/// nothing. `field` names the block, for errors.
///
/// # Errors
/// A `content` that is neither a summary (a non-empty string) nor null.
pub(super) fn summary_in(
    value: &Value,
    field: &str,
) -> Option<Result<Option<String>, DecodeError>> {
    if value.get("type").and_then(Value::as_str) != Some(COMPACTION) {
        return None;
    }
    Some(match value.get("content") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(summary)) if !summary.trim().is_empty() => Ok(Some(summary.clone())),
        Some(_) => Err(DecodeError::invalid(
            format!("{field}.content"),
            "expected the summary a compaction returned (a non-empty string), or null for a \
             compaction that failed; send the block back as it came",
        )),
    })
}

/// Whether `content` holds a compaction block.
pub(super) fn holds_compaction(content: &MessageContent) -> bool {
    let MessageContent::Blocks(blocks) = content else {
        return false;
    };
    blocks.iter().any(|block| match block {
        ContentBlock::Other(value) => summary_in(value, "").is_some(),
        _ => false,
    })
}

/// Where a conversation's last compaction is: the index of its message (an
/// assistant's, as it was answered, or a user's, where a client that sent
/// it first in a new conversation put it), and its summary. What comes
/// before it is what it stands for.
pub(super) fn last_compaction(messages: &[WireMessage]) -> Option<(usize, String)> {
    messages
        .iter()
        .enumerate()
        .rev()
        .find_map(|(index, message)| {
            let MessageContent::Blocks(blocks) = &message.content else {
                return None;
            };
            if !matches!(message.role.as_str(), "assistant" | "user") {
                return None;
            }
            blocks.iter().rev().find_map(|block| match block {
                ContentBlock::Other(value) => match summary_in(value, "") {
                    Some(Ok(Some(summary))) => Some((index, summary)),
                    _ => None,
                },
                _ => None,
            })
        })
}

/// The `compaction` parameter of a request (`{"type": "summarize",
/// "instructions": …}`), as the compaction it asks for: at once, and
/// answered with the compaction alone.
///
/// # Errors
/// Not an object of that shape, or sent beside `context_management`.
pub(super) fn compaction_parameter(
    value: &Value,
    with_context_management: bool,
) -> Result<CompactEdit, DecodeError> {
    let Some(object) = value.as_object() else {
        return Err(DecodeError::invalid(
            "compaction",
            "expected an object such as {\"type\": \"summarize\"}",
        ));
    };
    if object.get("type").and_then(Value::as_str) != Some("summarize") {
        return Err(DecodeError::invalid(
            "compaction.type",
            "expected \"summarize\", the one kind of compaction",
        ));
    }
    if let Some(name) = object
        .keys()
        .find(|name| !matches!(name.as_str(), "type" | "instructions"))
    {
        return Err(DecodeError::invalid(
            format!("compaction.{name}"),
            "unknown field (expected `type` and `instructions`)",
        ));
    }
    let instructions = match object.get("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()).filter(|text| !text.trim().is_empty()),
        Some(_) => {
            return Err(DecodeError::invalid(
                "compaction.instructions",
                "expected a string, or null",
            ));
        }
    };
    if with_context_management {
        return Err(DecodeError::invalid(
            "compaction",
            "a compaction request cannot also ask for `context_management`: send it alone, \
             or use the `compact_20260112` edit instead",
        ));
    }
    Ok(CompactEdit {
        trigger_input_tokens: 0,
        pause_after_compaction: true,
        instructions,
        instructions_replace_prompt: true,
    })
}

/// Splits a request to be compacted into the summary's request (the
/// conversation, then the ask for a summary: the default prompt, with the
/// edit's `instructions` after it, or the `compaction` parameter's in its
/// place, as the SDK describes each) and the answer's request without its
/// conversation: its system prompt (and system messages before the first
/// turn), tools and settings, to which [`answer_after_compaction`] adds the
/// summary.
pub fn split_for_compaction(
    mut request: ChatRequest,
    compaction: &CompactEdit,
) -> (ChatRequest, ChatRequest) {
    let messages = std::mem::take(&mut request.messages);
    let mut answer = request.clone();
    answer.messages = messages
        .iter()
        .take_while(|message| message.role == Role::System)
        .cloned()
        .collect();
    request.messages = messages;
    let prompt = match (
        &compaction.instructions,
        compaction.instructions_replace_prompt,
    ) {
        (None, _) => SUMMARY_REQUEST.to_owned(),
        (Some(instructions), true) => instructions.clone(),
        (Some(instructions), false) => format!("{SUMMARY_REQUEST}\n\n{instructions}"),
    };
    (summary_request_asking(request, &prompt), answer)
}

/// The answer's request once the conversation is compacted into
/// `summary` (`answer` from [`split_for_compaction`]): what a later request
/// that sends the compaction block back reads as, up to that block.
pub fn answer_after_compaction(mut answer: ChatRequest, summary: &str) -> ChatRequest {
    answer.messages.push(summary_message(summary));
    answer
}

/// The `compaction` block carrying `summary` (`None` in a stream's
/// `content_block_start`, before its `compaction_delta`).
pub(super) fn compaction_block(summary: Option<&str>) -> ContentBlock {
    ContentBlock::Other(json!({"type": COMPACTION, "content": summary}))
}

/// `usage.iterations` of an answer made after a compaction that used
/// `compaction` (its own usage is `answer`), or of the compaction alone.
pub(super) fn iterations(compaction: &Usage, answer: Option<&WireUsage>) -> Vec<IterationUsage> {
    let mut iterations = vec![IterationUsage::of(COMPACTION, &WireUsage::from(compaction))];
    if let Some(answer) = answer {
        iterations.push(IterationUsage::of("message", answer));
    }
    iterations
}

/// Puts a compaction run before the answer first in it: its block, and its
/// usage in `usage.iterations`. The answer's own usage stays the top-level
/// usage, as Anthropic's API reports it.
pub fn put_compaction_first(response: &mut MessagesResponse, summary: &str, usage: &Usage) {
    response.content.insert(0, compaction_block(Some(summary)));
    response.usage.iterations = Some(iterations(usage, Some(&response.usage)));
}

/// The answer to a request that asked to stop at the compaction
/// (`pause_after_compaction`, or the `compaction` parameter): its block
/// alone, `stop_reason: "compaction"`. The usage of the call that wrote it
/// is its one iteration; the top-level usage, which counts the answer's
/// calls only, is zero, as Anthropic's API reports it. `context_edits`:
/// the request asked for context editing, which is reported (as nothing
/// done) as for any answer.
pub fn encode_compaction_alone(
    summary: &str,
    usage: &Usage,
    model: &str,
    context_edits: bool,
) -> MessagesResponse {
    let mut wire_usage = WireUsage::from(&Usage::default());
    wire_usage.iterations = Some(iterations(usage, None));
    MessagesResponse {
        id: generated_id("msg_"),
        kind: "message".into(),
        role: "assistant".into(),
        model: model.to_owned(),
        content: vec![compaction_block(Some(summary))],
        stop_reason: Some(COMPACTION.into()),
        stop_sequence: None,
        stop_details: None,
        usage: wire_usage,
        context_management: context_edits.then(|| super::context_management_report(&[])),
    }
}
