//! Server-side compaction: a request that asks for its conversation to be
//! compacted once it reaches a threshold, and has reached it, is answered
//! in two provider calls. The first asks the model for a summary of the
//! conversation; the second answers from what the summary stands for. The
//! summary goes first in the answer. Two protocols ask for it:
//!
//! - the Responses API, with `context_management`'s `compact_threshold`:
//!   the summary is a `compaction` item, standing for everything but the
//!   user's messages, the system and developer messages, which stay; the
//!   two calls' usage is added up in the response's;
//! - the Messages API, with the `compact_20260112` edit: the summary is a
//!   `compaction` block, standing for the whole conversation (the system
//!   prompt and tools stay); the answer's usage is the response's, the
//!   summary's is in `usage.iterations`. With `pause_after_compaction`, or
//!   the `compaction` parameter (which always compacts), the answer is the
//!   block alone and there is no second call.
//!
//! Each call is admitted and accounted on its own (two ledger lines under
//! the request's id, each with its own budget hold; the key's requests per
//! minute count the client's one request, its tokens per minute both
//! calls'), so that a budget cannot be overspent by the summary, and a
//! summary the model fails to write ends the request before the second
//! call. Both share the request's time limit, counted from its
//! arrival. A conversation still past the threshold after it was compacted
//! is answered as it is: the gateway compacts once per request.

use axum::body::Bytes;
use axum::http::HeaderMap;
use freehold_llm::context_edit::CompactEdit;
use freehold_llm::wire::anthropic;
use freehold_llm::wire::compaction::summary_of;
use freehold_llm::wire::openai_responses::{
    self, ResponsesRequest, compaction_item_for, request_after_compaction, summary_request,
};
use freehold_protocol::{ChatRequest, Usage};

use crate::auth::Caller;
use crate::chat::{Accounting, Admitted, RateLimit, admit, admit_call, parse_body};
use crate::error::GatewayError;
use crate::request_id::Arrival;
use crate::state::Gateway;

/// A compaction the gateway ran before the answer: the summary the model
/// wrote and the usage of the call that wrote it.
pub(super) struct Compacted {
    pub(super) summary: String,
    pub(super) usage: Usage,
}

/// The compaction a request asked for, by the protocol that asked.
pub(super) enum Plan {
    /// A Responses request's, at this many input tokens.
    Responses(u64),
    /// A Messages request's.
    Messages(CompactEdit),
}

impl Plan {
    fn threshold(&self) -> u64 {
        match self {
            Self::Responses(threshold) => *threshold,
            Self::Messages(edit) => edit.trigger_input_tokens,
        }
    }
}

/// Whether `request`, asking to be compacted as `plan` says, has reached
/// its threshold. The gateway's estimate (about four bytes a token), as
/// for every check it makes before a provider counts.
pub(super) fn due(request: &ChatRequest, plan: &Plan) -> bool {
    request.estimated_input_tokens() >= plan.threshold()
}

/// What the answer's request is made from, once the summary is written.
enum After {
    /// The client's Responses request as sent, with the `compaction` item
    /// appended.
    Responses(ResponsesRequest),
    /// A Messages request without its conversation, to which the summary
    /// is added.
    Messages(ChatRequest),
    /// Nothing: the answer is the compaction alone.
    Pause,
}

/// What follows a compaction's summary, once it is written.
#[expect(
    clippy::large_enum_variant,
    reason = "one per compacted request, returned once: boxing would save nothing"
)]
pub(super) enum Then {
    /// The answer's request, admitted.
    Answer(Admitted),
    /// Nothing more: the request asked for the compaction alone. The
    /// summary's call is left unfinished in its ledger line, so that the
    /// route that sends the answer logs it (with `log_bodies`) and ends it.
    Alone(Accounting),
}

/// A request to compact before it is answered, whose summary's call was
/// admitted.
pub(super) struct Pending {
    summary: Admitted,
    after: After,
    gateway: std::sync::Arc<Gateway>,
    headers: HeaderMap,
    caller: Caller,
    endpoint: &'static str,
    arrival: Arrival,
}

impl Pending {
    /// Admits the summary's call for `request` (decoded from `body`, whose
    /// conversation the summary replaces, compacted as `plan` says): the
    /// key, the model, the rate limit and the budget are checked before
    /// anything is sent.
    ///
    /// # Errors
    /// What admission refused, as the client should see it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request and its context, as the gateway's other admissions take them"
    )]
    pub(super) async fn admit(
        gateway: &std::sync::Arc<Gateway>,
        headers: &HeaderMap,
        caller: Caller,
        endpoint: &'static str,
        request: ChatRequest,
        plan: Plan,
        body: &Bytes,
        arrival: &Arrival,
    ) -> Result<Self, GatewayError> {
        let (summary, after) = match plan {
            Plan::Responses(_) => {
                // Read again rather than kept from the first reading: only
                // a request that is compacted pays for it. (It was read
                // once, so this is not expected to fail; if it does, it is
                // in the key's ledger.)
                let wire: ResponsesRequest = match parse_body(headers, body) {
                    Ok(wire) => wire,
                    Err(error) => {
                        Accounting::new(gateway, caller, endpoint, &request.model, arrival)
                            .fail(&error);
                        return Err(error);
                    }
                };
                (summary_request(request), After::Responses(wire))
            }
            Plan::Messages(edit) => {
                let (summary, answer) = anthropic::split_for_compaction(request, &edit);
                let after = match edit.pause_after_compaction {
                    true => After::Pause,
                    false => After::Messages(answer),
                };
                (summary, after)
            }
        };
        let mut summary =
            admit(gateway, headers, caller.clone(), endpoint, summary, arrival).await?;
        summary.accounting.log_body(body);
        Ok(Self {
            summary,
            after,
            gateway: std::sync::Arc::clone(gateway),
            headers: headers.clone(),
            caller,
            endpoint,
            arrival: arrival.clone(),
        })
    }

    /// Runs the summary's call, then admits the answer's request: the
    /// conversation the compaction stands for, with the request's tools and
    /// settings. [`Then::Alone`] in its place when the request asked for
    /// the compaction alone.
    ///
    /// # Errors
    /// The summary's call failed, or the model wrote no summary (a 502 in
    /// the gateway's words, as for a `compaction_trigger`), or the answer's
    /// request was not admitted.
    pub(super) async fn run(self) -> Result<(Then, Compacted), GatewayError> {
        let (response, mut accounting) = self.summary.complete().await?;
        let summary = match summary_of(&response) {
            Ok(summary) => summary,
            Err(error) => {
                tracing::warn!(%error, "the conversation could not be compacted");
                let error = GatewayError::upstream(&error);
                accounting.fail(&error);
                return Err(error);
            }
        };
        let compacted = Compacted {
            summary,
            usage: response.usage,
        };
        let request = match self.after {
            After::Pause => return Ok((Then::Alone(accounting), compacted)),
            After::Messages(answer) => {
                accounting.succeed();
                anthropic::answer_after_compaction(answer, &compacted.summary)
            }
            After::Responses(wire) => {
                accounting.succeed();
                let model = wire.model.clone();
                let item = compaction_item_for(&compacted.summary);
                match request_after_compaction(wire, item) {
                    Ok(request) => request,
                    // Decoded once already, so not expected; in the ledger
                    // if it happens.
                    Err(error) => {
                        let error = GatewayError::bad_request(error.to_string());
                        Accounting::new(
                            &self.gateway,
                            self.caller,
                            self.endpoint,
                            &model,
                            &self.arrival,
                        )
                        .fail(&error);
                        return Err(error);
                    }
                }
            }
        };
        // The client sent one request: its rate limit counted it when the
        // summary's call was admitted.
        let admitted = admit_call(
            &self.gateway,
            &self.headers,
            self.caller,
            self.endpoint,
            request,
            &self.arrival,
            RateLimit::CountedBefore,
        )
        .await?;
        Ok((Then::Answer(admitted), compacted))
    }
}

/// Puts the compaction first in a whole Responses answer's output.
pub(super) fn put_first(response: &mut openai_responses::ResponseObject, compacted: &Compacted) {
    response
        .output
        .insert(0, compaction_item_for(&compacted.summary));
}
