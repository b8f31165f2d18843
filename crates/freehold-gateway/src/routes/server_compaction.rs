//! Server-side compaction in the Responses API: a request whose
//! `context_management` names a `compact_threshold`, and whose conversation
//! has reached it, is answered in two provider calls. The first asks the
//! model for a summary of the conversation (the `compaction` item); the
//! second answers from what the item stands for (the user's messages, the
//! system and developer messages, the summary). The item goes first in the
//! response's output, and the two calls' usage is added up in it.
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
use freehold_llm::wire::openai_responses::{
    self, Item, ResponsesRequest, compaction_item, request_after_compaction, summary_request,
};
use freehold_protocol::{ChatRequest, Usage};

use crate::auth::Caller;
use crate::chat::{Accounting, Admitted, RateLimit, admit, admit_call, parse_body};
use crate::error::GatewayError;
use crate::request_id::Arrival;
use crate::state::Gateway;

/// A compaction the gateway ran before the answer: its item and the usage
/// of the call that wrote it.
pub(super) struct Compacted {
    pub(super) item: Item,
    pub(super) usage: Usage,
}

/// Whether `request`, asking to be compacted at `threshold` input tokens,
/// has reached it. The gateway's estimate (about four bytes a token), as
/// for every check it makes before a provider counts.
pub(super) fn due(request: &ChatRequest, threshold: Option<u64>) -> bool {
    threshold.is_some_and(|threshold| request.estimated_input_tokens() >= threshold)
}

/// A request to compact before it is answered, whose summary's call was
/// admitted.
pub(super) struct Pending {
    summary: Admitted,
    /// The client's request as sent, from which the request after the
    /// compaction is made.
    wire: ResponsesRequest,
    gateway: std::sync::Arc<Gateway>,
    headers: HeaderMap,
    caller: Caller,
    endpoint: &'static str,
    arrival: Arrival,
}

impl Pending {
    /// Admits the summary's call for `request` (decoded from `body`, whose
    /// conversation the summary replaces): the key, the model, the rate
    /// limit and the budget are checked before anything is sent.
    ///
    /// # Errors
    /// What admission refused, as the client should see it.
    pub(super) async fn admit(
        gateway: &std::sync::Arc<Gateway>,
        headers: &HeaderMap,
        caller: Caller,
        endpoint: &'static str,
        request: ChatRequest,
        body: &Bytes,
        arrival: &Arrival,
    ) -> Result<Self, GatewayError> {
        // Read again rather than kept from the first reading: only a
        // request that is compacted pays for it. (It was read once, so this
        // is not expected to fail; if it does, it is in the key's ledger.)
        let wire: ResponsesRequest = match parse_body(headers, body) {
            Ok(wire) => wire,
            Err(error) => {
                Accounting::new(gateway, caller, endpoint, &request.model, arrival).fail(&error);
                return Err(error);
            }
        };
        let mut summary = admit(
            gateway,
            headers,
            caller.clone(),
            endpoint,
            summary_request(request),
            arrival,
        )
        .await?;
        summary.accounting.log_body(body);
        Ok(Self {
            summary,
            wire,
            gateway: std::sync::Arc::clone(gateway),
            headers: headers.clone(),
            caller,
            endpoint,
            arrival: arrival.clone(),
        })
    }

    /// Runs the summary's call, then admits the answer's request: the
    /// conversation the compaction stands for, with the request's tools and
    /// settings.
    ///
    /// # Errors
    /// The summary's call failed, or the model wrote no summary (a 502 in
    /// the gateway's words, as for a `compaction_trigger`), or the answer's
    /// request was not admitted.
    pub(super) async fn run(self) -> Result<(Admitted, Compacted), GatewayError> {
        let (summary, mut accounting) = self.summary.complete().await?;
        let item = match compaction_item(&summary) {
            Ok(item) => item,
            Err(error) => {
                tracing::warn!(%error, "the conversation could not be compacted");
                let error = GatewayError::upstream(&error);
                accounting.fail(&error);
                return Err(error);
            }
        };
        accounting.succeed();
        let model = self.wire.model.clone();
        let request = match request_after_compaction(self.wire, item.clone()) {
            Ok(request) => request,
            // Decoded once already, so not expected; in the ledger if it
            // happens.
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
        Ok((
            admitted,
            Compacted {
                item,
                usage: summary.usage,
            },
        ))
    }
}

/// Puts the compaction first in a whole answer's output.
pub(super) fn put_first(response: &mut openai_responses::ResponseObject, item: Item) {
    response.output.insert(0, item);
}
