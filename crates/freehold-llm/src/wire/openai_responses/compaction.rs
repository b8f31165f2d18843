//! Compaction in the Responses API, served by the gateway: a conversation
//! replaced by a summary that the model writes.
//!
//! OpenAI's API compacts a conversation in two ways, and clients rely on
//! both: a `compaction_trigger` item at the end of a `/v1/responses`
//! request (what Codex sends a provider named `OpenAI` when its context
//! fills), answered by one `compaction` output item; and
//! `POST /v1/responses/compact`, answered by the conversation's user
//! messages followed by that item. The client then sends the item in place
//! of what it replaced. OpenAI encrypts its content; the gateway's holds the
//! summary the model wrote, marked as the gateway's and base64-encoded
//! (opaque to clients, not secret: the client holds the conversation
//! anyway). A later request reads it back as a user message carrying the
//! summary, so any provider can continue the conversation, and leaves out
//! what the item replaced ([`kept_before_compaction`]).
//!
//! A third way is server-side compaction: a request's `context_management`
//! names a threshold, and the server compacts the conversation once it
//! reaches it, before answering. The gateway does that in two calls, with
//! what this module gives it: the summary ([`summary_request`],
//! [`compaction_item`]), then the answer from the conversation the item
//! stands for ([`request_after_compaction`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use freehold_protocol::{ChatRequest, ChatResponse, LlmError, Message, StopReason};

use super::{
    CompactionItem, ContentItem, Item, ItemContent, MessageItem, ResponseInput, ResponsesRequest,
};
use crate::wire::compaction::{
    checked_summary, summary_message, summary_of, summary_request_asking,
};
use crate::wire::serve::DecodeError;

/// What starts the `encrypted_content` of a compaction the gateway made.
const MARK: &str = "freehold-compaction-v1:";

/// What the model is asked, after the conversation, to write the summary.
pub(super) const SUMMARY_REQUEST: &str = "\
The conversation above is about to be replaced by a summary that you write \
now, to go on with the work from. The user's own messages are kept; \
everything else (your answers, the tools you called and what they \
returned) will be gone. Write the summary for yourself, as notes to \
continue from:
- what the user wants, and the constraints and preferences they gave;
- what has been done so far: files read or changed, commands run and what \
they showed, decisions made and why;
- what is left to do, and the next step;
- the exact names, paths, values and error messages needed to go on.
Be complete but brief. Write only the summary: no greeting, and call no \
tool.";

/// The `encrypted_content` of a compaction whose summary is `summary`.
pub fn compaction_content(summary: &str) -> String {
    format!("{MARK}{}", STANDARD.encode(summary.trim()))
}

/// The summary in a compaction's `encrypted_content`, if the gateway made
/// it and it is whole (the gateway's log redacts what the detectors find
/// in it, as in any text).
pub fn compaction_summary(content: &str) -> Option<String> {
    let encoded = content.strip_prefix(MARK)?;
    let bytes = STANDARD.decode(encoded.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

/// The user message that stands for a compaction item (at `field`) in a
/// conversation.
///
/// # Errors
/// A compaction the gateway did not make (OpenAI's, encrypted with its own
/// key) or whose content is damaged.
pub(super) fn message_for(item: &CompactionItem, field: &str) -> Result<Message, DecodeError> {
    let field = format!("{field}.encrypted_content");
    let content = &item.encrypted_content;
    if content.is_empty() {
        return Err(DecodeError::missing(
            field,
            "a compaction item needs the `encrypted_content` it was returned with",
        ));
    }
    if !content.starts_with(MARK) {
        return Err(DecodeError::invalid(
            field,
            "this compaction was not made by the gateway (OpenAI encrypts its own \
             with a key only it holds), so no provider here can read it: go on from \
             the conversation before it was compacted, or start a new one",
        ));
    }
    let summary = compaction_summary(content).ok_or_else(|| {
        DecodeError::invalid(
            field,
            "the compaction's content is damaged (not the base64 of a summary); send \
             the item as the gateway returned it",
        )
    })?;
    Ok(summary_message(&summary))
}

/// The `compaction` output item for the summary the model wrote, which
/// ended for `reason`.
///
/// # Errors
/// No summary to keep ([`checked_summary`]).
pub(super) fn item_for(summary: String, reason: &StopReason) -> Result<Item, LlmError> {
    checked_summary(summary, reason).map(|summary| compaction_item_for(&summary))
}

/// A new `compaction` output item carrying `summary`.
pub fn compaction_item_for(summary: &str) -> Item {
    Item::Compaction(CompactionItem {
        id: Some(crate::wire::serve::generated_id("cmp_")),
        encrypted_content: compaction_content(summary),
    })
}

/// The `compaction` item for a model's answer to a [`summary_request`] (or
/// to a request that ended with a `compaction_trigger`): its text, runs
/// that reasoning or a call parted joined by a blank line, is the summary;
/// reasoning and calls are left out.
///
/// # Errors
/// The model wrote no summary, refused, or was stopped by a content
/// filter (a 502 in the gateway's words).
pub fn compaction_item(response: &ChatResponse) -> Result<Item, LlmError> {
    summary_of(response).map(|summary| compaction_item_for(&summary))
}

/// The request that asks the model for a summary of `request`'s
/// conversation before it is answered (server-side compaction), as a
/// `compaction_trigger` ending its input would: the conversation, then a
/// user message asking for the summary, with no tool to call and no
/// output bound of the client's (the bound is the answer's).
pub fn summary_request(request: ChatRequest) -> ChatRequest {
    summary_request_asking(request, SUMMARY_REQUEST)
}

/// A Responses request (`wire`, as the client sent it) once `compaction`
/// has replaced its conversation: its tools and settings, and as its
/// conversation what a compaction item keeps of what came before it (the
/// user's, system and developer messages, the tools declared in the
/// input), then the user message carrying the summary. The server-side
/// compaction's answer is asked with it, and it is what the client's next
/// request, with the compaction and the answer appended, reads as.
///
/// # Errors
/// As [`super::decode_request`] (the request was decoded once already, so
/// none is expected).
pub fn request_after_compaction(
    mut wire: ResponsesRequest,
    compaction: Item,
) -> Result<ChatRequest, DecodeError> {
    let mut items = std::mem::take(&mut wire.input).into_items();
    items.push(compaction);
    wire.input = ResponseInput::Items(items);
    // Compacted now: not again.
    wire.context_management = None;
    let (request, _) = super::decode_request(wire)?;
    Ok(request)
}

/// The index of a conversation's last `compaction` item: what comes before
/// it is what it replaced ([`kept_before_compaction`]).
pub(super) fn last_compaction(items: &[Item]) -> Option<usize> {
    items
        .iter()
        .rposition(|item| matches!(item, Item::Compaction(_)))
}

/// What is kept of an item that comes before a conversation's last
/// `compaction` item, which replaced the rest: the model's turns and the
/// tools' traffic (assistant messages, reasoning, calls and their outputs)
/// go; the user's messages, the system and developer messages and the
/// tools declared in the input stay, as `/v1/responses/compact` keeps them.
/// A client that appends a server-side compaction's output to its
/// conversation, as OpenAI's guide says to, sends all of it again; without
/// this the conversation would keep its full length and be compacted anew
/// on every turn.
///
/// A search the client ran keeps the tools it found (the model may call
/// them), without its call, which is gone.
pub(super) fn kept_before_compaction(item: Item) -> Option<Item> {
    match item {
        Item::Message(message)
            if matches!(message.role.as_str(), "user" | "system" | "developer") =>
        {
            Some(Item::Message(message))
        }
        Item::AdditionalTools(tools) => Some(Item::AdditionalTools(tools)),
        Item::ToolSearchOutput(mut output) => {
            output.call_id = None;
            Some(Item::ToolSearchOutput(output))
        }
        _ => None,
    }
}

/// The items a compaction keeps, in order: the input's user messages
/// (`/v1/responses/compact` answers with them, then the compaction item),
/// their text as `input_text` parts however it was sent.
pub(super) fn kept_by_compaction(input: &ResponseInput) -> Vec<Item> {
    let user_message = |content: ItemContent| {
        let content = match content {
            ItemContent::Text(text) => ItemContent::Parts(vec![ContentItem::InputText { text }]),
            parts => parts,
        };
        Item::Message(MessageItem {
            id: None,
            role: "user".into(),
            content,
            status: None,
        })
    };
    match input {
        ResponseInput::Text(text) => vec![user_message(ItemContent::Text(text.clone()))],
        ResponseInput::Items(items) => items
            .iter()
            .filter_map(|item| match item {
                Item::Message(message) if message.role == "user" => {
                    Some(user_message(message.content.clone()))
                }
                _ => None,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_the_user_message_that_stands_for_it() {
        let content = compaction_content("  The user wants add() fixed.\nNext: run tests. ");
        assert!(content.starts_with(MARK), "{content}");
        let item = CompactionItem {
            id: None,
            encrypted_content: content,
        };
        let message = message_for(&item, "input[3]").unwrap();
        assert_eq!(message.role, freehold_protocol::Role::User);
        assert_eq!(
            message.text(),
            format!(
                "{}\n\nThe user wants add() fixed.\nNext: run tests.",
                crate::wire::compaction::SUMMARY_INTRO
            )
        );
    }

    #[test]
    fn a_compaction_the_gateway_did_not_make_is_refused_by_name() {
        let foreign = CompactionItem {
            id: Some("cmp_1".into()),
            encrypted_content: "gAAAAABo-openai-encrypted".into(),
        };
        let error = message_for(&foreign, "input[2]").unwrap_err().to_string();
        assert!(error.contains("input[2].encrypted_content"), "{error}");
        assert!(error.contains("not made by the gateway"), "{error}");
        let damaged = CompactionItem {
            id: None,
            encrypted_content: format!("{MARK}not base64!"),
        };
        let error = message_for(&damaged, "input[0]").unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
    }

    #[test]
    fn a_summary_becomes_a_new_compaction_item() {
        for reason in [StopReason::EndTurn, StopReason::MaxTokens] {
            let Item::Compaction(item) = item_for("notes".into(), &reason).unwrap() else {
                panic!("a compaction item");
            };
            assert!(item.id.is_some_and(|id| id.starts_with("cmp_")));
            assert_eq!(
                compaction_summary(&item.encrypted_content).unwrap(),
                "notes"
            );
        }
        let error = item_for(" \n".into(), &StopReason::EndTurn).unwrap_err();
        assert_eq!(error.status, Some(502));
    }

    #[test]
    fn an_empty_compaction_item_is_refused_as_missing_its_content() {
        let error = message_for(&CompactionItem::default(), "input[1]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("input[1].encrypted_content"), "{error}");
        assert!(!error.contains("not made by the gateway"), "{error}");
    }

    #[test]
    fn the_user_messages_kept_carry_their_text_as_parts() {
        let input: ResponseInput = serde_json::from_value(serde_json::json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "three"}]}]))
        .unwrap();
        let kept = serde_json::to_value(kept_by_compaction(&input)).unwrap();
        assert_eq!(
            kept,
            serde_json::json!([
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "one"}]},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "three"}]}])
        );
    }
}
