//! What the gateway's compactions share across protocols: the request that
//! asks the model for a summary of its conversation, the summary read back
//! from its answer, and the user message that stands for the summary when
//! the conversation goes on.
//!
//! Each protocol hands the summary to its client its own way: the Responses
//! API in a `compaction` item ([`super::openai_responses`]), the Messages
//! API in a `compaction` block ([`super::anthropic`]). Each reads it back
//! as the same user message (`summary_message`), so that any provider can
//! go on from it.

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, LlmError, Message, StopReason, ToolChoice,
};

use crate::wire::serve::GATEWAY_PROVIDER;

/// What introduces a compaction's summary to the model, in the user
/// message that stands for it.
pub(crate) const SUMMARY_INTRO: &str = "\
The earlier part of this conversation was compacted into this summary, \
written then:";

/// The user message that stands for a compaction whose summary is
/// `summary`.
pub(crate) fn summary_message(summary: &str) -> Message {
    Message::user(format!("{SUMMARY_INTRO}\n\n{}", summary.trim()))
}

/// A compaction's summary as the model writes it: its runs of text, a
/// blank line between two that something else (reasoning, a call) parted.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    text: String,
    parted: bool,
}

impl Summary {
    /// More of the model's text.
    pub(crate) fn push(&mut self, text: &str) {
        if std::mem::take(&mut self.parted) && !self.text.is_empty() && !text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(text);
    }

    /// Something other than text came.
    pub(crate) fn part(&mut self) {
        self.parted = true;
    }

    /// The summary written so far, taken.
    pub(crate) fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// `summary`, the model's summary that ended for `reason`, if it can stand
/// for the conversation. A summary cut at the length bound is kept, with a
/// warning: a client cannot go on from an incomplete compaction, and a
/// summary cut short still carries most of what it would.
///
/// # Errors
/// No summary to keep, which would lose the conversation it stands for:
/// the model wrote none (only whitespace, or only tool calls and
/// reasoning), refused, or was stopped by the provider's content filter
/// (a 502 in the gateway's words).
pub(crate) fn checked_summary(summary: String, reason: &StopReason) -> Result<String, LlmError> {
    let failed = |why: &str| {
        Err(LlmError::new(
            ErrorKind::Server,
            GATEWAY_PROVIDER,
            format!(
                "{why}, so the conversation was not compacted; try again, or compact with \
                 another model"
            ),
        )
        .with_status(502))
    };
    match reason {
        StopReason::Refusal => return failed("the model refused to summarise the conversation"),
        StopReason::ContentFilter => {
            return failed("the provider's content filter stopped the model's summary");
        }
        _ if summary.trim().is_empty() => {
            return failed("the model wrote no summary of the conversation");
        }
        StopReason::MaxTokens => {
            tracing::warn!("a compaction's summary reached its length bound and was cut short");
        }
        _ => {}
    }
    Ok(summary)
}

/// The summary in a model's answer to a summary's request: its text, runs
/// that reasoning or a call parted joined by a blank line; reasoning and
/// calls are left out.
///
/// # Errors
/// No summary to keep: the model wrote none (only whitespace, or only tool
/// calls and reasoning), refused, or was stopped by the provider's content
/// filter (a 502 in the gateway's words).
pub fn summary_of(response: &ChatResponse) -> Result<String, LlmError> {
    let mut summary = Summary::default();
    for part in &response.message.content {
        match part {
            ContentPart::Text { text } => summary.push(text),
            _ => summary.part(),
        }
    }
    checked_summary(summary.take(), &response.stop_reason)
}

/// The request that asks the model for a summary of `request`'s
/// conversation: the conversation, then a user message asking for the
/// summary in the words of `prompt`. The tools stay declared, since
/// providers want them beside a conversation with calls, but none may be
/// called, and no output format is asked: a summary is text. It has no
/// output bound of the client's: the request's bounds its answer, not the
/// summary (the provider's default bounds it, or, for a key with a budget
/// on a hosted model, the gateway's).
pub(crate) fn summary_request_asking(mut request: ChatRequest, prompt: &str) -> ChatRequest {
    request.messages.push(Message::user(prompt));
    request.tool_choice = ToolChoice::None;
    request.response_format = None;
    request.max_tokens = None;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_summary_is_an_error_not_an_empty_compaction() {
        let error = checked_summary(" \n".into(), &StopReason::EndTurn).unwrap_err();
        assert_eq!(error.status, Some(502));
        assert_eq!(error.provider, GATEWAY_PROVIDER);
        assert!(error.message.contains("no summary"), "{error}");
        let refused =
            checked_summary("I can't help with that.".into(), &StopReason::Refusal).unwrap_err();
        assert!(refused.message.contains("refused"), "{refused}");
        let filtered = checked_summary("The user".into(), &StopReason::ContentFilter).unwrap_err();
        assert!(filtered.message.contains("content filter"), "{filtered}");
        for reason in [StopReason::EndTurn, StopReason::MaxTokens] {
            assert_eq!(checked_summary("notes".into(), &reason).unwrap(), "notes");
        }
    }

    #[test]
    fn the_summary_is_the_text_runs_joined() {
        let mut response = ChatResponse {
            id: None,
            model: None,
            message: Message::assistant("First."),
            usage: Default::default(),
            stop_reason: StopReason::EndTurn,
            timings: None,
            context_edits: Vec::new(),
            refusal_details: None,
        };
        response
            .message
            .content
            .push(ContentPart::Reasoning(Default::default()));
        response.message.content.push(ContentPart::Text {
            text: "Second.".into(),
        });
        assert_eq!(summary_of(&response).unwrap(), "First.\n\nSecond.");
    }
}
