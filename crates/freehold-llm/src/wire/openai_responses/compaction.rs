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
//! summary, so any provider can continue the conversation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use freehold_protocol::{LlmError, Message};

use super::{CompactionItem, ContentItem, Item, ItemContent, MessageItem, ResponseInput};
use crate::wire::serve::DecodeError;

/// What starts the `encrypted_content` of a compaction the gateway made.
const MARK: &str = "freehold-compaction-v1:";

/// The provider named in errors about compaction.
const GATEWAY: &str = "freehold";

/// The summary's length when the request sets none: enough for a detailed
/// handoff, and a bound on a model that does not stop.
pub(super) const SUMMARY_MAX_TOKENS: u32 = 4096;

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

/// What introduces a compaction's summary to the model, in the user
/// message that stands for it.
const SUMMARY_INTRO: &str = "\
The earlier part of this conversation was compacted into this summary, \
written then:";

/// The `encrypted_content` of a compaction whose summary is `summary`.
pub fn compaction_content(summary: &str) -> String {
    format!("{MARK}{}", STANDARD.encode(summary.trim()))
}

/// The user message that stands for a compaction item (at `field`) in a
/// conversation.
///
/// # Errors
/// A compaction the gateway did not make (OpenAI's, encrypted with its own
/// key) or whose content is damaged.
pub(super) fn message_for(item: &CompactionItem, field: &str) -> Result<Message, DecodeError> {
    let field = format!("{field}.encrypted_content");
    let Some(encoded) = item.encrypted_content.strip_prefix(MARK) else {
        return Err(DecodeError::invalid(
            field,
            "this compaction was not made by the gateway (OpenAI encrypts its own \
             with a key only it holds), so no provider here can read it: go on from \
             the conversation before it was compacted, or start a new one",
        ));
    };
    let summary = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            DecodeError::invalid(
                field,
                "the compaction's content is damaged (not the base64 of a summary); send \
                 the item as the gateway returned it",
            )
        })?;
    Ok(Message::user(format!("{SUMMARY_INTRO}\n\n{summary}")))
}

/// The `compaction` output item for a summary the model wrote.
///
/// # Errors
/// The model wrote no summary (only whitespace, or only tool calls and
/// reasoning): an item without one would lose the conversation.
pub(super) fn item_for(summary: &str) -> Result<Item, LlmError> {
    if summary.trim().is_empty() {
        return Err(LlmError::new(
            freehold_protocol::ErrorKind::Server,
            GATEWAY,
            "the model wrote no summary of the conversation, so it was not compacted; \
             try again, or compact with another model",
        )
        .with_status(502));
    }
    Ok(Item::Compaction(CompactionItem {
        id: Some(crate::wire::serve::generated_id("cmp_")),
        encrypted_content: compaction_content(summary),
    }))
}

/// The items a compaction keeps, in order: the input's user messages
/// (`/v1/responses/compact` answers with them, then the compaction item).
pub fn kept_by_compaction(input: &ResponseInput) -> Vec<Item> {
    match input {
        ResponseInput::Text(text) => vec![Item::Message(MessageItem {
            id: None,
            role: "user".into(),
            content: ItemContent::Parts(vec![ContentItem::InputText { text: text.clone() }]),
            status: None,
        })],
        ResponseInput::Items(items) => items
            .iter()
            .filter(|item| matches!(item, Item::Message(message) if message.role == "user"))
            .cloned()
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
            format!("{SUMMARY_INTRO}\n\nThe user wants add() fixed.\nNext: run tests.")
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
    fn no_summary_is_an_error_not_an_empty_compaction() {
        let error = item_for(" \n").unwrap_err();
        assert_eq!(error.status, Some(502));
        assert!(error.message.contains("no summary"), "{error}");
        let Item::Compaction(item) = item_for("notes").unwrap() else {
            panic!("a compaction item");
        };
        assert!(item.id.is_some_and(|id| id.starts_with("cmp_")));
    }
}
