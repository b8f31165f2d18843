//! The path every chat request takes, whatever protocol it came in:
//! admission (key, model, rate limit, caps, route, budget), the call, and
//! the accounting afterwards (budget settled, ledger line, metrics).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use freehold_llm::context_edit::ContextEdits;
use freehold_llm::{EventStream, Target};
use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, LlmError, StreamEvent, Usage,
};
use futures::StreamExt;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::{GatewayError, Protocol};
use crate::metrics::{LabelText, LatencyLabels, RequestLabels, TokenLabels};
use crate::privacy::{Decision, Reasons};
use crate::request_id::{Arrival, RequestId};
use crate::state::{Gateway, Routes};
use crate::store::{Reservation, Store, StoreError, UsageRecord, recorded_end_user};

/// A request that passed admission, with what its accounting needs.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) request: ChatRequest,
    pub(crate) accounting: Accounting,
    routes: Arc<Routes>,
    /// The targets it goes to, in order: its model's route, as resolved at
    /// admission, or the part of it the privacy policy kept (the local
    /// ones).
    targets: Vec<Target>,
}

impl Admitted {
    /// The request's input tokens, estimated as its first target gets it
    /// (see [`InputEstimate`]).
    pub(crate) fn input_estimate(&self) -> u64 {
        match self.targets.first() {
            Some(first) => self.accounting.input_estimate_for(first),
            None => self.request.estimated_input_tokens(),
        }
    }
}

/// Checks a request before any provider sees it.
///
/// # Errors
/// The first check that fails, as the client should see it.
pub(crate) async fn admit(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: Caller,
    endpoint: &'static str,
    request: ChatRequest,
    arrival: &Arrival,
) -> Result<Admitted, GatewayError> {
    admit_call(
        gateway,
        headers,
        caller,
        endpoint,
        request,
        arrival,
        RateLimit::Counted,
    )
    .await
}

/// Whether a provider call is a client request of its own for the key's
/// requests-per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimit {
    /// It is: it counts, and is refused past the limit.
    Counted,
    /// It is the second call of a request already counted (the answer
    /// after a server-side compaction's summary): neither counted nor
    /// refused for the requests per minute. Its tokens count, as every
    /// call's do.
    CountedBefore,
}

/// [`admit`], for a call that `rate_limit` says how to count.
///
/// # Errors
/// As [`admit`].
pub(crate) async fn admit_call(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: Caller,
    endpoint: &'static str,
    mut request: ChatRequest,
    arrival: &Arrival,
    rate_limit: RateLimit,
) -> Result<Admitted, GatewayError> {
    let asked = request.model.clone();
    let mut accounting = Accounting::new(gateway, caller.clone(), endpoint, &asked, arrival);
    let result = admit_inner(
        gateway,
        headers,
        &caller,
        &mut request,
        &mut accounting,
        rate_limit,
    )
    .await;
    match result {
        Ok((routes, targets)) => Ok(Admitted {
            request,
            accounting,
            routes,
            targets,
        }),
        Err(error) => {
            accounting.fail(&error);
            Err(error)
        }
    }
}

/// Checks a request's key. Refusals are counted in the metrics but not
/// written to the ledger: anyone can send them.
///
/// # Errors
/// 401 without a valid key.
pub(crate) async fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Caller, GatewayError> {
    gateway
        .auth
        .authenticate(headers)
        .await
        .inspect_err(|error| {
            gateway
                .metrics
                .count_error(endpoint, UNROUTED.into(), "", error.kind);
        })
}

/// The privacy header's value on a request, if the policy has a header.
///
/// # Errors
/// 400 for a value the default header does not take (it is not silently
/// ignored: the client meant something by it). A header the operator named
/// may be one clients already send for other reasons: other values of it
/// are ignored.
pub(crate) fn privacy_header<'a>(
    gateway: &Gateway,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, GatewayError> {
    let Some(name) = gateway.privacy.header_name() else {
        return Ok(None);
    };
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if crate::privacy::known_header_value(text) => Ok(Some(text)),
        _ if name != crate::privacy::DEFAULT_HEADER => Ok(None),
        _ => Err(GatewayError::bad_request(format!(
            "the {name} header takes `local-only` (keep the request on local providers); \
             it was `{}`",
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        ))),
    }
}

async fn admit_inner(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: &Caller,
    request: &mut ChatRequest,
    accounting: &mut Accounting,
    rate_limit: RateLimit,
) -> Result<(Arc<Routes>, Vec<Target>), GatewayError> {
    take_end_user(gateway, request, accounting);
    let privacy_header = privacy_header(gateway, headers)?;
    // Keys allow models by the name the client asked for, checked before
    // routing, so that a key learns nothing of models outside its list
    // (not even whether they exist).
    check_model_name(&request.model)?;
    caller.check_model(&request.model)?;
    let routes = gateway.routes();
    let targets = route(gateway, &routes, request)?;
    accounting.routed = true;
    if let Some(key) = caller.key()
        && rate_limit == RateLimit::Counted
    {
        // Only a token limit needs the prompt's size at once: as the
        // providers of its route read it (a document as a note where one
        // reads none, less what context edits clear).
        let input_tokens = key
            .tpm
            .map_or(0, |_| InputEstimate::of(request).largest(&routes, &targets));
        accounting.rate_tokens_counted = gateway
            .limits
            .admit(&key.id, key.rpm, key.tpm, input_tokens)
            .await
            .map_err(|limited| GatewayError::rate_limited(&limited))?;
    }
    // Larger asks are lowered to the cap; a request without one keeps the
    // provider's default (the local engine gives a quarter of its window, 512 to 2,048 tokens)...
    let cap = gateway.settings.max_tokens_cap;
    request.max_tokens = request.max_tokens.map(|asked| asked.min(cap));
    // ...unless a budget pays for it on a hosted model: a hosted default
    // can be far above what the budget reserves below, so the answer is
    // held to the bound the reservation assumes.
    let budgeted = caller.key().is_some_and(|key| key.budget_usd.is_some());
    if budgeted && request.max_tokens.is_none() && leaves_the_machine(&targets, &routes) {
        request.max_tokens = Some(output_bound(&targets, &routes, cap));
    }
    let narrowed = apply_privacy(
        gateway,
        caller,
        privacy_header,
        request,
        &targets,
        &routes,
        accounting,
    )?;
    // The most the request can cost: the prompt's estimate (all of it
    // written to the cache, when the client asks for caching) and every
    // output token it may ask for (the cap when it names no limit).
    // Priced on what the request will be sent on.
    let sent_to = narrowed.as_deref().unwrap_or(&targets);
    let estimate = InputEstimate::of(request);
    let usage = Usage {
        output_tokens: u64::from(request.max_tokens.unwrap_or(cap)),
        ..dearest_input(request, estimate.largest(&routes, sent_to))
    };
    // A request cut off before any answer pays for its prompt as input:
    // nothing says it was written to a cache.
    accounting.expect_input(estimate, sent_to, &routes);
    reserve_budget(gateway, caller, &routes, sent_to, &usage, accounting).await?;
    Ok((routes, narrowed.unwrap_or(targets)))
}

/// What `usage` costs on the dearest of `targets` that has a price.
fn dearest_cost(routes: &Routes, targets: &[Target], usage: &Usage) -> Option<f64> {
    targets
        .iter()
        .filter_map(|target| {
            routes
                .router
                .cost_of(&target.provider, &target.model, usage)
        })
        .reduce(f64::max)
}

/// The most `request`'s prompt can cost, by its estimated size: every token
/// of it written to the provider's cache when the client marked it for
/// caching (Anthropic charges writes 1.25 times the input price, and twice
/// for a `"ttl": "1h"` mark; on a model without a cache-write price, and
/// so on every provider but Anthropic, that is the input price), plain
/// input otherwise; `input_tokens` is the prompt's estimate
/// ([`InputEstimate::largest`]).
fn dearest_input(request: &ChatRequest, input_tokens: u64) -> Usage {
    let Some(mark) = &request.prompt_cache else {
        return Usage {
            input_tokens,
            ..Usage::default()
        };
    };
    let kept_an_hour = mark.get("ttl").and_then(serde_json::Value::as_str) == Some("1h");
    Usage {
        input_tokens,
        cache_write_tokens: input_tokens,
        cache_write_1h_tokens: if kept_an_hour { input_tokens } else { 0 },
        ..Usage::default()
    }
}

/// The targets `request`'s model routes to. A model without a route goes
/// to `[gateway] default_model` when one is set, and `request.model`
/// becomes it. The caller has checked the name ([`check_model_name`]).
///
/// # Errors
/// 404 for a model without a route when there is no default; the router's
/// error for an alias that cannot be resolved.
fn route(
    gateway: &Gateway,
    routes: &Routes,
    request: &mut ChatRequest,
) -> Result<Vec<Target>, GatewayError> {
    match routes.router.resolve(&request.model) {
        Ok(targets) => {
            refuse_engine_paths(&request.model, &targets, routes, &gateway.settings)?;
            Ok(targets)
        }
        Err(error) if error.kind == ErrorKind::NotFound => {
            let Some(default) = &gateway.settings.default_model else {
                return Err(GatewayError::not_found(format!(
                    "no route for model `{}`: ask for an alias or `provider:model` from \
                     GET /v1/models (a hosted provider is routed only when the gateway's \
                     configuration names it, in [providers.NAME] or an alias), or set \
                     [gateway] default_model",
                    request.model
                )));
            };
            request.model.clone_from(default);
            routes
                .router
                .resolve(default)
                .map_err(|error| GatewayError::upstream(&error))
        }
        Err(error) => Err(GatewayError::upstream(&error)),
    }
}

/// The longest model name the gateway takes from a client.
const MAX_MODEL_NAME: usize = 256;

/// Refuses a model name that no provider uses and that would go into the
/// log, the ledger and the metrics as it came: longer than
/// [`MAX_MODEL_NAME`] bytes, or with control characters (a line break
/// would forge log lines).
///
/// # Errors
/// 400 saying what a name may be.
pub(crate) fn check_model_name(model: &str) -> Result<(), GatewayError> {
    if model.len() <= MAX_MODEL_NAME && !model.chars().any(char::is_control) {
        return Ok(());
    }
    Err(GatewayError::bad_request(format!(
        "invalid model name `{}`: at most {MAX_MODEL_NAME} bytes, without control characters",
        recorded_name(model).escape_debug()
    )))
}

/// `model` as the ledger and the log record it: at most
/// [`MAX_MODEL_NAME`] bytes (cut at a character), control characters
/// replaced, so that a refused name cannot fill them either.
fn recorded_name(model: &str) -> String {
    let mut end = model.len().min(MAX_MODEL_NAME);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    model[..end]
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Notes the end user the client named on the request's ledger line, first,
/// so that a request refused later (its model, its rate limit) is counted
/// for that user too.
///
/// The id is for the provider's abuse monitoring, not part of the
/// conversation: one the privacy detectors find anything in (an email
/// address) is not sent, whatever the policy does with the rest, and the
/// ledger keeps it hashed ([`recorded_end_user`]); the body the ledger may
/// log, which holds it as sent, is then redacted.
fn take_end_user(gateway: &Gateway, request: &mut ChatRequest, accounting: &mut Accounting) {
    if note_end_user(gateway, request.end_user.as_deref(), accounting) {
        tracing::debug!("the end user's id holds what a detector matches: not sent");
        request.end_user = None;
    }
}

/// Notes the end user `id` on the request's ledger line (hashed when the
/// privacy detectors find anything in it, which then also redacts the body
/// the ledger may log); returns whether they did.
pub(crate) fn note_end_user(
    gateway: &Gateway,
    id: Option<&str>,
    accounting: &mut Accounting,
) -> bool {
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return false;
    };
    let sensitive = gateway.privacy.finds_anything_in(id);
    accounting.end_user = Some(recorded_end_user(id, sensitive));
    accounting.body_has_findings |= sensitive;
    sensitive
}

/// Refuses a client's `provider:path` for the embedded engine, which loads
/// a model from any file path it is given: a client could otherwise load
/// any GGUF file the gateway can read, learn which files exist, and fill
/// its memory with copies. Clients name engine models by their store
/// names; a file path is the operator's to give, in an alias.
///
/// # Errors
/// 404 naming the way to serve such a file.
pub(crate) fn refuse_engine_paths(
    asked: &str,
    targets: &[Target],
    routes: &Routes,
    settings: &crate::settings::GatewaySettings,
) -> Result<(), GatewayError> {
    // The operator's names: an alias, or the default model (which
    // `GET /v1/models` lists, so clients may ask for it by name).
    if routes.router.aliases().contains_key(asked)
        || settings.default_model.as_deref() == Some(asked)
    {
        return Ok(());
    }
    let names_a_file = |model: &str| {
        model.contains(['/', '\\']) || model.ends_with(".gguf") || model.starts_with('.')
    };
    match targets
        .iter()
        .find(|t| routes.engine_providers.contains(&t.provider) && names_a_file(&t.model))
    {
        Some(target) => Err(GatewayError::not_found(format!(
            "no route for model `{}`: the embedded engine serves installed models by their \
             names (`freehold models list`), not files by path; to serve a file, name it in \
             an alias of the gateway's configuration",
            target.provider
        ))),
        None => Ok(()),
    }
}

/// Applies the privacy policy to a request routed to `targets`: keeps it
/// on this machine, redacts what it found before the request leaves, or
/// refuses it. The decision is logged and its audit line goes to the
/// ledger through `accounting`. Returns the local targets the request was
/// narrowed to, when it was ([`keep_local`]).
///
/// # Errors
/// 403 when the policy blocks the request, or keeps it local and its
/// route has no local target.
///
/// [`take_end_user`] comes first.
fn apply_privacy(
    gateway: &Gateway,
    caller: &Caller,
    privacy_header: Option<&str>,
    request: &mut ChatRequest,
    targets: &[Target],
    routes: &Routes,
    accounting: &mut Accounting,
) -> Result<Option<Vec<Target>>, GatewayError> {
    let local_only_key = caller.key().is_some_and(|key| key.local_only);
    let decision = gateway
        .privacy
        .decide(request, privacy_header, local_only_key);
    decision.log();
    accounting.privacy = decision.audit_line();
    // A document alone leaves nothing for the log's redaction to find; the
    // end user's id, in the body as the client sent it, does
    // ([`take_end_user`]).
    accounting.body_has_findings = accounting.body_has_findings
        || decision
            .reasons()
            .is_some_and(|reasons| reasons.findings.in_text());
    match decision {
        Decision::Pass => {}
        Decision::LocalOnly { reasons } => {
            return keep_local(&request.model, targets, routes, &reasons);
        }
        Decision::Redacted {
            request: redacted, ..
        } => {
            // Redaction only matters for requests that leave the machine.
            if leaves_the_machine(targets, routes) {
                *request = *redacted;
            } else if let Some(line) = &mut accounting.privacy {
                line.push_str(" sent=unredacted route=local");
            }
        }
        Decision::Block { reasons } => return Err(blocked(&reasons)),
    }
    Ok(None)
}

/// A request's input tokens, as `count_tokens` answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenCount {
    /// The count.
    pub(crate) input_tokens: u64,
    /// Whether the provider that would answer counted it with its own
    /// tokenizer; `false` for the gateway's estimate.
    pub(crate) exact: bool,
    /// For a request that asked for context editing, the count before the
    /// edits, taken the same way (`None` when a second count failed).
    pub(crate) original_input_tokens: Option<u64>,
}

/// Counts a request's input tokens. It is routed, and checked against the
/// key's models and the privacy policy like the request itself (kept
/// local, redacted or refused alike); then the provider that would answer
/// counts it when it can (see `Provider::count_input_tokens`: the local
/// engine with the model's tokenizer, servers and APIs with a count
/// endpoint), and the gateway estimates otherwise. Counting takes no
/// rate-limit token and no budget; the ledger gets a line without tokens,
/// naming the provider only when one counted.
///
/// # Errors
/// The first check that fails, or the provider's error, as the client
/// should see it.
pub(crate) async fn count_input_tokens(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: Caller,
    endpoint: &'static str,
    mut request: ChatRequest,
    arrival: &Arrival,
) -> Result<TokenCount, GatewayError> {
    let asked = request.model.clone();
    let mut accounting = Accounting::new(gateway, caller.clone(), endpoint, &asked, arrival);
    take_end_user(gateway, &mut request, &mut accounting);
    let checked = async {
        check_model_name(&asked)?;
        caller.check_model(&asked)?;
        let routes = gateway.routes();
        let targets = route(gateway, &routes, &mut request)?;
        accounting.routed = true;
        let privacy_header = privacy_header(gateway, headers)?;
        let narrowed = apply_privacy(
            gateway,
            &caller,
            privacy_header,
            &mut request,
            &targets,
            &routes,
            &mut accounting,
        )?;
        Ok::<_, GatewayError>((routes, narrowed.unwrap_or(targets)))
    }
    .await;
    let (routes, targets) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            accounting.fail(&error);
            return Err(error);
        }
    };
    let estimate_for = |request: &ChatRequest| {
        let estimate = InputEstimate::of(request);
        match targets.first() {
            Some(first) => estimate.for_target(&routes, first),
            None => estimate.whole,
        }
    };
    let estimate = estimate_for(&request);
    // Anthropic's answer to a request that asked for context editing also
    // gives the count before the edits: the same request without them.
    let original = request.context_management.is_some().then(|| ChatRequest {
        context_management: None,
        ..request.clone()
    });
    let original_estimate = original.as_ref().map(estimate_for);
    let call = routes.router.count_input_tokens_on(targets, request);
    let (target, counted) = call_upstream(&mut accounting, call).await?;
    let original_input_tokens = match (original, counted) {
        (None, _) => None,
        (Some(_), None) => original_estimate,
        // Counted by the provider that counted the request, or not at all.
        (Some(original), Some(_)) => routes
            .router
            .count_input_tokens_on(vec![target.clone()], original)
            .await
            .ok()
            .and_then(|(_, count)| count),
    };
    // Only a provider that counted is named in the ledger; an estimate
    // is the gateway's own.
    if counted.is_some() {
        accounting.answered(target, Usage::default());
    }
    accounting.succeed();
    Ok(match counted {
        Some(input_tokens) => TokenCount {
            input_tokens,
            exact: true,
            original_input_tokens,
        },
        None => TokenCount {
            input_tokens: estimate,
            exact: false,
            original_input_tokens,
        },
    })
}

/// A request's input tokens, estimated from its size, as each provider
/// gets it: whole, or with each document's note in its place for a
/// provider that reads no documents (a 300 KB PDF is some 10,000 tokens to
/// the first and a line to the second; counted whole, it would make Claude
/// Code compact a conversation a local model has room for, and a budget
/// hold and charge for a file the server never got).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InputEstimate {
    /// Its documents read whole ([`ChatRequest::estimated_input_tokens`]).
    whole: u64,
    /// Its documents as notes
    /// ([`ChatRequest::estimated_input_tokens_as_notes`]); `whole` when it
    /// has none.
    as_notes: u64,
}

impl InputEstimate {
    /// `request`'s estimate, as the model reads it: less what the context
    /// edits it asks for would clear (Anthropic's `context_management`),
    /// whether the provider or the router makes them.
    pub(crate) fn of(request: &ChatRequest) -> Self {
        let whole = request.estimated_input_tokens();
        let has_documents = request
            .messages
            .iter()
            .any(freehold_protocol::Message::has_document);
        let as_notes = if has_documents {
            request.estimated_input_tokens_as_notes()
        } else {
            whole
        };
        let cleared = request
            .context_management
            .as_ref()
            .and_then(|asked| ContextEdits::parse(asked).ok())
            .map_or(0, |edits| edits.estimated_savings(request, whole));
        Self {
            whole: whole.saturating_sub(cleared),
            as_notes: as_notes.saturating_sub(cleared),
        }
    }

    /// An estimate of `input_tokens` for every provider (a request without
    /// documents, such as texts to embed).
    pub(crate) fn plain(input_tokens: u64) -> Self {
        Self {
            whole: input_tokens,
            as_notes: input_tokens,
        }
    }

    /// The estimate as `target` gets the request: whole when its provider
    /// reads documents (`Capabilities::documents`) or is not found.
    pub(crate) fn for_target(&self, routes: &Routes, target: &Target) -> u64 {
        if self.whole == self.as_notes {
            return self.whole;
        }
        let reads_documents = routes
            .router
            .providers()
            .get(&target.provider)
            .is_none_or(|provider| provider.capabilities(&target.model).documents);
        if reads_documents {
            self.whole
        } else {
            self.as_notes
        }
    }

    /// The largest estimate of any of `targets` (whole when there is none).
    fn largest(&self, routes: &Routes, targets: &[Target]) -> u64 {
        targets
            .iter()
            .map(|target| self.for_target(routes, target))
            .max()
            .unwrap_or(self.whole)
    }
}

/// Holds the most a request can cost (`usage` priced on the dearest of its
/// `targets`, which the accounting keeps for any caller) on the caller's
/// budget, when its key has one. Providers on
/// this machine cost nothing; a hosted target without a price would spend
/// the budget uncounted, so it is refused.
///
/// # Errors
/// 403 for a hosted target without a price; 429 when the budget cannot
/// cover the request; 500 when the database fails.
pub(crate) async fn reserve_budget(
    gateway: &Gateway,
    caller: &Caller,
    routes: &Routes,
    targets: &[Target],
    usage: &Usage,
    accounting: &mut Accounting,
) -> Result<(), GatewayError> {
    // Kept for every request: a whole answer cut off is charged it
    // ([`Accounting::most_it_can_cost`]).
    accounting.most_it_can_cost = dearest_cost(routes, targets, usage);
    let (Some(key), Some(store)) = (caller.key(), &gateway.store) else {
        return Ok(());
    };
    if key.budget_usd.is_none() {
        return Ok(());
    }
    if let Some(target) = targets.iter().find(|target| {
        !routes.runs_locally(target)
            && routes
                .router
                .cost_of(&target.provider, &target.model, usage)
                .is_none()
    }) {
        return Err(GatewayError::forbidden(format!(
            "key `{}` has a budget, but `{target}` has no price, so what it spends could not \
             be counted; the operator must set its prices in [models.\"{target}\"] (input and \
             output, USD per million tokens; 0 for a free model)",
            key.name
        )));
    }
    let estimate = accounting.most_it_can_cost.unwrap_or(0.0);
    let hold = gateway.settings.reservation_hold();
    let reservation = take_hold(gateway, store, &key.id, estimate, hold)
        .await
        .map_err(|error| match error {
            StoreError::BudgetExhausted { .. } => GatewayError::budget_exhausted(format!(
                "key `{}`: {error}; this request needs up to ${estimate:.6}",
                key.name
            )),
            other => {
                tracing::error!(error = %other, "reserving budget");
                GatewayError::internal("the gateway could not reach its usage database")
            }
        })?;
    accounting.reservation = Some(reservation);
    Ok(())
}

/// Takes a hold of `usd` on the key's budget, in a task of its own: a
/// request cut off while the database is taking it (the client gone, the
/// server shutting down) would otherwise leave a hold that nobody settles,
/// and the key short of budget until the hold expires. Whichever side
/// finds the other gone releases it.
async fn take_hold(
    gateway: &Gateway,
    store: &Store,
    key_id: &str,
    usd: f64,
    hold: std::time::Duration,
) -> Result<Reservation, StoreError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task_store = store.clone();
    let key_id = key_id.to_owned();
    tokio::spawn(gateway.settling.track_future(async move {
        let taken = task_store.reserve_for(&key_id, usd, hold).await;
        // The request is refused at once; the hold, if the database took
        // it or is still taking it, is released here, with a settlement's
        // retries.
        let unanswered = match &taken {
            Err(StoreError::HoldUnanswered { reservation, .. }) => Some(reservation.clone()),
            _ => None,
        };
        if let Err(Ok(orphan)) = sender.send(taken) {
            settle(&task_store, &orphan, 0.0).await;
        }
        if let Some(reservation) = unanswered {
            write_budget(&task_store, &reservation, BudgetWrite::ReleaseUnanswered).await;
        }
    }));
    let mut pending = PendingHold {
        receiver,
        received: false,
        store: store.clone(),
        settling: gateway.settling.clone(),
    };
    let taken = (&mut pending.receiver)
        .await
        .unwrap_or_else(|_| Err(StoreError::Database("taking the hold was cancelled".into())));
    pending.received = true;
    taken
}

/// A hold being taken for a request; dropped before the answer came, it
/// releases a hold that had arrived in the meantime.
struct PendingHold {
    receiver: tokio::sync::oneshot::Receiver<Result<Reservation, StoreError>>,
    /// Whether the answer was taken (nothing is left to release).
    received: bool,
    store: Store,
    /// The gateway's settlements, which shutdown waits for.
    settling: tokio_util::task::TaskTracker,
}

impl Drop for PendingHold {
    fn drop(&mut self) {
        if self.received {
            return;
        }
        // Closed first, so a hold sent from now on comes back to its task.
        self.receiver.close();
        if let Ok(Ok(orphan)) = self.receiver.try_recv()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            handle.spawn(
                self.settling
                    .track_future(async move { settle(&store, &orphan, 0.0).await }),
            );
        }
    }
}

/// The most output tokens a request without `max_tokens` is given when a
/// budget pays for it: the cap, or less when a model of its route is known
/// to allow fewer (a larger ask would be refused by that provider).
fn output_bound(targets: &[Target], routes: &Routes, cap: u32) -> u32 {
    let catalog = routes.router.catalog();
    targets
        .iter()
        .filter_map(|target| catalog.lookup(&target.provider, &target.model))
        .filter_map(|entry| entry.max_output_tokens)
        .fold(cap, u32::min)
        .max(1)
}

/// The refusal of a request the privacy policy blocks.
pub(crate) fn blocked(reasons: &Reasons) -> GatewayError {
    // Clients send a conversation's documents again with every turn. The
    // advice is for what blocked the request, not what would only have
    // kept it local.
    let findings = &reasons.findings;
    let blocking = findings.blocking();
    if blocking.in_document_name() {
        return GatewayError::forbidden(format!(
            "this request was blocked by the gateway's privacy policy ({findings}): a \
             document's title or URL holds sensitive data; remove the document (a conversation \
             that carries one stays blocked) and send it again"
        ));
    }
    if blocking.in_image_url() {
        return GatewayError::forbidden(format!(
            "this request was blocked by the gateway's privacy policy ({findings}): an image's \
             URL holds sensitive data; send the image's bytes instead of its URL, or remove it \
             (a conversation that carries it stays blocked), and send it again"
        ));
    }
    let what = match (blocking.has_document(), blocking.in_text()) {
        (true, false) => {
            "remove the document (a conversation that carries one stays blocked) and send it \
             again"
        }
        (true, true) => {
            "remove the document (a conversation that carries one stays blocked) and the \
             sensitive data, and send it again"
        }
        _ => "remove the sensitive data and send it again",
    };
    GatewayError::forbidden(format!(
        "this request was blocked by the gateway's privacy policy ({}); {what}",
        reasons.findings
    ))
}

/// Whether any target of a route is a provider off this machine.
pub(crate) fn leaves_the_machine(targets: &[Target], routes: &Routes) -> bool {
    targets.iter().any(|t| !routes.runs_locally(t))
}

/// Narrows a local-only request for `model` to the local targets of its
/// route, in their order (a fallback chain keeps its local fallbacks):
/// returns them when that left some out. `reasons`, the policy's, say in
/// the 403 of a route with no local target why a request the policy would
/// have redacted stays local.
pub(crate) fn keep_local(
    model: &str,
    targets: &[Target],
    routes: &Routes,
    reasons: &Reasons,
) -> Result<Option<Vec<Target>>, GatewayError> {
    let local: Vec<Target> = targets
        .iter()
        .filter(|t| routes.runs_locally(t))
        .cloned()
        .collect();
    match local.first() {
        Some(_) if local.len() == targets.len() => Ok(None),
        Some(first) => {
            tracing::info!(model = %model, to = %first, of = local.len(), "privacy: kept on local providers");
            Ok(Some(local))
        }
        None => Err(GatewayError::forbidden(format!(
            "this request must stay on this machine{}, but model `{}` only routes to models \
             that run off it ({}); ask for a local model",
            unredactable(reasons),
            model,
            targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Why a request under a `redact` policy stays local: what was found where
/// redaction cannot reach (an image's URL, a document's title or URL, which
/// would no longer lead to the file if rewritten). Empty otherwise.
fn unredactable(reasons: &Reasons) -> String {
    if !reasons.redaction_incomplete {
        return String::new();
    }
    let found = reasons.findings.unredactable();
    let mut places = Vec::new();
    if found.in_image_url() {
        places.push(
            "an image's URL, which is not rewritten: send the image's bytes instead of its URL",
        );
    }
    if found.in_document_name() {
        places.push(
            "a document's title or URL, which is not rewritten: rename the document, or send \
             its bytes",
        );
    }
    if places.is_empty() {
        return " (the privacy policy found sensitive data it could not redact)".to_owned();
    }
    format!(
        " (the privacy policy found sensitive data, {found}, in {})",
        places.join("; and in ")
    )
}

impl Admitted {
    /// Calls the provider for a whole answer.
    ///
    /// # Errors
    /// The provider's error, mapped for the client (and accounted).
    pub(crate) async fn complete(mut self) -> Result<(ChatResponse, Accounting), GatewayError> {
        // Boxed: the router's future is some 20 KB, which every future
        // holding it inline (this one, the handler's) would make each of
        // their moves copy.
        let call = Box::pin(self.routes.router.complete_on(self.targets, self.request));
        self.accounting.whole_answer = true;
        let (target, response) = call_upstream(&mut self.accounting, call).await?;
        self.accounting.target = Some(target);
        self.accounting.usage = response.usage;
        self.accounting.output_bytes = response.message.content.iter().map(answer_bytes).sum();
        Ok((response, self.accounting))
    }

    /// Calls the provider for a stream of events. The accounting travels
    /// with the stream and runs when it ends or is dropped.
    ///
    /// # Errors
    /// The provider's error before the first event, mapped for the client.
    pub(crate) async fn stream(mut self) -> Result<AccountedStream, GatewayError> {
        // One deadline for the whole request, the wait for the first event
        // included.
        let deadline = self.accounting.started + self.accounting.gateway.settings.request_timeout();
        // Boxed, as in `complete`.
        let call = Box::pin(self.routes.router.stream_on(self.targets, self.request));
        // One stop future for the whole stream, its wait for the first
        // event included.
        let mut stopping = Box::pin(
            self.accounting
                .gateway
                .streams_ending
                .clone()
                .cancelled_owned(),
        );
        let (target, stream) =
            call_upstream_until(&mut self.accounting, call, Some(&mut stopping)).await?;
        self.accounting.target = Some(target);
        Ok(AccountedStream {
            inner: stream,
            accounting: self.accounting,
            deadline,
            stopping,
        })
    }
}

/// Runs a provider call under `[gateway] request_timeout_secs`; a failure
/// is mapped for the client and accounted.
///
/// # Errors
/// The provider's error, or 504 when the time ran out.
pub(crate) async fn call_upstream<T>(
    accounting: &mut Accounting,
    call: impl Future<Output = Result<T, LlmError>>,
) -> Result<T, GatewayError> {
    call_upstream_until(accounting, call, None).await
}

/// [`call_upstream`], ending with [`GatewayError::shutting_down`] once
/// `stopping` is ready (the gateway is stopping and its grace period
/// nearly over), so that a stream waiting on its provider's first event
/// (behind keepalives) ends with its protocol's error event rather than a
/// cut connection. Whole answers are not given it: waiting on the stop
/// would cost each request a waiter on one lock that every request shares
/// (about 6 µs of CPU a request, measured), and a whole answer still
/// unanswered at the end of the grace period is cut off.
async fn call_upstream_until<T>(
    accounting: &mut Accounting,
    call: impl Future<Output = Result<T, LlmError>>,
    stopping: Option<&mut Pin<Box<WaitForCancellationFutureOwned>>>,
) -> Result<T, GatewayError> {
    let timeout = accounting.gateway.settings.request_timeout();
    // What is left of the request's time once it was admitted.
    let left = timeout.saturating_sub(accounting.started.elapsed());
    if left.is_zero() {
        // Admission (a slow body) took all the time: nothing is sent.
        let sent = GatewayError::request_timeout(timeout);
        accounting.fail(&sent);
        return Err(sent);
    }
    // From here a provider may have the prompt: a request cut off now,
    // by the client leaving, the gateway's time limit or its stop, pays
    // for it.
    accounting.dispatched = true;
    let answered = match stopping {
        None => tokio::time::timeout(left, call).await,
        Some(stopping) => tokio::select! {
            answered = tokio::time::timeout(left, call) => answered,
            () = stopping.as_mut() => {
                let sent = GatewayError::shutting_down();
                accounting.fail(&sent);
                return Err(sent);
            }
        },
    };
    let sent = match answered {
        Ok(Ok(answer)) => {
            accounting.dispatched = false;
            return Ok(answer);
        }
        Ok(Err(error)) => {
            // The provider failed (a timeout of its own included): it
            // answered nothing to pay for.
            accounting.dispatched = false;
            log_upstream_failure(accounting, &error, "upstream failed");
            GatewayError::upstream(&error)
        }
        Err(_) => GatewayError::request_timeout(timeout),
    };
    accounting.fail(&sent);
    Err(sent)
}

/// Logs a provider's failure at `warn`. When an upstream refused the
/// request as invalid (HTTP 400, 413, 422), what it said is logged only at
/// `debug`, or with `log_bodies` on: the client gets it in its answer, and
/// servers that echo their input in validation errors (FastAPI's 422, as
/// vLLM sends) would otherwise put fragments of prompts in the gateway's
/// log. Failures of the gateway's own providers (the local engine's, which
/// carry no status) and other statuses are logged whole: they are the
/// operator's to fix.
pub(crate) fn log_upstream_failure(accounting: &Accounting, error: &LlmError, what: &'static str) {
    let may_echo_the_request = matches!(error.status, Some(400 | 413 | 422));
    if may_echo_the_request && !accounting.gateway.settings.log_bodies {
        tracing::warn!(
            provider = %error.provider,
            kind = error.kind.name(),
            status = ?error.status,
            "{what} (what it said is logged at debug level)"
        );
        tracing::debug!(error = %error, "{what}");
    } else {
        tracing::warn!(error = %error, "{what}");
    }
}

/// A provider's event stream that records usage as it passes and settles
/// the accounting when it ends, fails or is dropped (client gone).
pub(crate) struct AccountedStream {
    inner: EventStream,
    accounting: Accounting,
    deadline: Instant,
    /// Ready once the gateway is stopping and its grace period nearly over
    /// ([`Gateway::time_limits`]); one future for the whole stream, so that
    /// each event does not register a waiter anew.
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl AccountedStream {
    /// Records the request as failed with `error`; the stream ends.
    pub(crate) fn fail(&mut self, error: &GatewayError) {
        self.accounting.fail(error);
    }

    /// The next event; `None` at the end. An error ends the stream (the
    /// protocol encoder turns it into the protocol's in-stream error).
    ///
    /// # Cancel safety
    /// Cancel-safe: the streaming route drops this future whenever a
    /// keepalive is due. Its only await is the provider stream's `next`,
    /// and everything it records happens after that returns, with no await
    /// between; keep it so.
    pub(crate) async fn next(&mut self) -> Option<Result<StreamEvent, GatewayError>> {
        if self.accounting.finished {
            return None;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        // In the request's span: a provider may log while it streams (a
        // replica taken out of rotation, say).
        let in_request = self.inner.next().instrument(self.accounting.span.clone());
        let next = tokio::select! {
            next = tokio::time::timeout(remaining, in_request) => next,
            // The gateway is stopping and its grace period is nearly over:
            // end with the protocol's error event rather than
            // a connection cut mid-event.
            () = self.stopping.as_mut() => {
                let error = GatewayError::shutting_down();
                self.accounting.fail(&error);
                return Some(Err(error));
            }
        };
        let next = match next {
            Ok(next) => next,
            Err(_) => {
                let error = GatewayError::request_timeout(
                    self.accounting.gateway.settings.request_timeout(),
                );
                self.accounting.fail(&error);
                return Some(Err(error));
            }
        };
        match next {
            Some(Ok(event)) => {
                // The provider's opening is not an answer yet: a refusal
                // right after it costs nothing, like one before it.
                if self.accounting.first_byte.is_none()
                    && !matches!(
                        event,
                        StreamEvent::Start { .. } | StreamEvent::UsageSoFar(_)
                    )
                {
                    self.accounting.first_byte = Some(self.accounting.started.elapsed());
                }
                match &event {
                    StreamEvent::Stop { .. } => self.accounting.answered = true,
                    StreamEvent::Usage(usage) => self.accounting.usage = *usage,
                    // The prompt as the provider counted it, for a stream
                    // cut off before its end. Not its output count: stale
                    // by then, and the bytes received estimate it.
                    StreamEvent::UsageSoFar(usage) => {
                        self.accounting.usage = Usage {
                            output_tokens: 0,
                            reasoning_tokens: 0,
                            ..*usage
                        };
                    }
                    StreamEvent::TextDelta { text } | StreamEvent::ReasoningDelta { text, .. } => {
                        self.accounting.output_bytes += text.len() as u64;
                    }
                    StreamEvent::ToolCallArgsDelta { delta, .. } => {
                        self.accounting.output_bytes += delta.len() as u64;
                    }
                    _ => {}
                }
                Some(Ok(event))
            }
            Some(Err(error)) => {
                self.accounting.span.in_scope(|| {
                    log_upstream_failure(&self.accounting, &error, "upstream stream failed");
                });
                let sent = GatewayError::upstream(&error);
                if self.accounting.first_byte.is_none() {
                    // Refused before it answered anything (a stream that
                    // opens with an error, or with its opening and then
                    // one): nothing to count, as for the same refusal of a
                    // whole answer, not even the prompt its opening
                    // counted (which would spend the key's token limit).
                    self.accounting.target = None;
                    self.accounting.usage = Usage::default();
                    self.accounting.output_bytes = 0;
                }
                self.accounting.fail(&sent);
                Some(Err(sent))
            }
            None => {
                self.accounting.succeed();
                None
            }
        }
    }
}

/// What a finished request must leave behind: settled budget, a ledger
/// line, metrics and rate-limit tokens. Runs once, on success, on failure,
/// or when dropped unfinished (the client went away: status 499, unless
/// the provider had ended its answer).
#[derive(Debug)]
pub(crate) struct Accounting {
    gateway: Arc<Gateway>,
    caller: Caller,
    endpoint: &'static str,
    model: String,
    /// The request's id, for its ledger line.
    pub(crate) request_id: RequestId,
    /// The request's span (`request{request_id=…}`, opened by the routes'
    /// front door), entered for what is logged after the handler returned:
    /// a stream's failures, its providers' lines, the `request` line.
    span: tracing::Span,
    started: Instant,
    at_ms: i64,
    first_byte: Option<std::time::Duration>,
    /// Whether the provider's stream ended its answer (its stop event
    /// passed). A client that closes the connection once it has read the
    /// answer's last event, without waiting for the stream's end, was
    /// answered (Codex closes at once, before the embedded engine's stream
    /// ends): its request succeeded, not a 499.
    answered: bool,
    reservation: Option<Reservation>,
    /// The routing table the request was admitted on, which prices it.
    routes: Option<Arc<Routes>>,
    target: Option<Target>,
    usage: Usage,
    /// The request's input tokens, estimated from its size: what is
    /// counted when a provider reports no usage.
    input_estimate: InputEstimate,
    /// The tokens its key's rate limit counted when it was admitted (the
    /// prompt's estimate, for a key with a token limit): only the rest is
    /// counted when it ends.
    pub(crate) rate_tokens_counted: u64,
    /// The bytes of answer (text, reasoning, tool arguments) received.
    output_bytes: u64,
    /// What the request's input costs on the dearest target of its route:
    /// charged when a stream is cut off before any answer while a provider
    /// had it ([`Self::dispatched`]), as the provider may bill for the
    /// prompt.
    unanswered_cost: Option<f64>,
    /// The most the request can cost on its route (its prompt and every
    /// output token it may ask for, on the dearest target): charged
    /// instead when a whole answer is cut off so, since providers usually
    /// finish such an answer and bill it, and the gateway cannot see how
    /// long it was.
    most_it_can_cost: Option<f64>,
    /// Whether the answer is asked for whole (not streamed).
    whole_answer: bool,
    /// Whether a provider call is under way: set while the gateway waits
    /// for a provider's answer, so that a request cut off then (status
    /// 499 or the gateway's 504) is told from one that never left.
    dispatched: bool,
    /// Whether the model asked for has a route. Metrics label requests by
    /// model only then: names clients make up must not grow the series
    /// without bound (the ledger keeps them).
    pub(crate) routed: bool,
    /// The privacy decision's audit line, when it did anything.
    pub(crate) privacy: Option<String>,
    /// The end user the client named, as the ledger keeps it
    /// ([`recorded_end_user`]).
    end_user: Option<String>,
    /// The request (and a whole answer) when `log_bodies` is on.
    body: Option<String>,
    /// Whether the privacy policy found anything in the request: the
    /// bodies logged are then redacted
    /// ([`crate::privacy::Privacy::redacted_for_log`]).
    pub(crate) body_has_findings: bool,
    finished: bool,
}

impl Accounting {
    pub(crate) fn new(
        gateway: &Arc<Gateway>,
        caller: Caller,
        endpoint: &'static str,
        model: &str,
        arrival: &Arrival,
    ) -> Self {
        gateway.metrics.in_flight.inc();
        Self {
            gateway: Arc::clone(gateway),
            caller,
            endpoint,
            model: recorded_name(model),
            request_id: arrival.id.clone(),
            span: tracing::Span::current(),
            started: arrival.started,
            at_ms: now_ms(),
            first_byte: None,
            answered: false,
            reservation: None,
            routes: None,
            target: None,
            usage: Usage::default(),
            input_estimate: InputEstimate::default(),
            rate_tokens_counted: 0,
            most_it_can_cost: None,
            whole_answer: false,
            output_bytes: 0,
            unanswered_cost: None,
            dispatched: false,
            routed: false,
            privacy: None,
            end_user: None,
            body: None,
            body_has_findings: false,
            finished: false,
        }
    }

    /// Keeps `body` (a request or response body) for the ledger, when the
    /// gateway logs bodies. It is read as text only then: a coding agent's
    /// request is tens of kilobytes, and checking that much UTF-8 for a
    /// switched-off log was a seventh of the instructions the gateway spent
    /// on one (`bench/gateway-instructions`).
    pub(crate) fn log_body(&mut self, body: &[u8]) {
        if self.gateway.settings.log_bodies {
            let text = String::from_utf8_lossy(body);
            let text = text.as_ref();
            let redacted;
            let text = if self.body_has_findings {
                redacted = self.gateway.privacy.redacted_for_log(text);
                &redacted
            } else {
                text
            };
            let body = self.body.get_or_insert_with(String::new);
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(text);
        }
    }

    /// Notes the request's estimated input tokens, and what they cost on
    /// the dearest of `targets` (the route it is sent on: any of them may
    /// be the one it waits on), for a request that ends without the
    /// provider's count ([`Self::billed_usage`]).
    ///
    /// `routes` is the table the request runs on: it is priced on it when
    /// it ends, even if a reload has replaced it meanwhile.
    pub(crate) fn expect_input(
        &mut self,
        estimate: InputEstimate,
        targets: &[Target],
        routes: &Arc<Routes>,
    ) {
        self.routes = Some(Arc::clone(routes));
        self.input_estimate = estimate;
        // The dearest: a fallback may be what the request is waiting on.
        self.unanswered_cost = targets
            .iter()
            .filter_map(|t| {
                let input = Usage {
                    input_tokens: estimate.for_target(routes, t),
                    ..Usage::default()
                };
                routes.router.cost_of(&t.provider, &t.model, &input)
            })
            .reduce(f64::max);
    }

    /// The request's estimated input tokens as `target` gets it.
    pub(crate) fn input_estimate_for(&self, target: &Target) -> u64 {
        match &self.routes {
            Some(routes) => self.input_estimate.for_target(routes, target),
            None => self.input_estimate.whole,
        }
    }

    /// The usage to account, so that a budget, a token limit and the
    /// ledger see what a request used even when its provider never said:
    /// - the provider's count, when it gave one;
    /// - when it answered without one (a stream cut off before its usage,
    ///   by the client leaving, a failure or the time limit; a server that
    ///   never reports usage), the request's estimated input and the
    ///   answer received so far, at about four bytes a token, for each
    ///   side the provider did not count;
    /// - nothing when no provider answered.
    fn billed_usage(&self, reported: Usage) -> Usage {
        let Some(target) = &self.target else {
            return reported;
        };
        // Each side on its own: a provider may count one and not the other
        // (Ollama leaves out the input of a prompt it had cached).
        let mut usage = reported;
        if usage.input_tokens == 0 {
            usage.input_tokens = self.input_estimate_for(target);
        }
        if usage.output_tokens == 0 {
            usage.output_tokens = self.output_bytes.div_ceil(4);
        }
        usage
    }

    /// Records which target answered, with what usage.
    pub(crate) fn answered(&mut self, target: Target, usage: Usage) {
        self.target = Some(target);
        self.usage = usage;
    }

    /// The request succeeded with the usage recorded so far.
    pub(crate) fn succeed(&mut self) {
        self.finish(200, None);
    }

    /// The request failed with `error` (already sent, or about to be).
    pub(crate) fn fail(&mut self, error: &GatewayError) {
        self.gateway.metrics.count_error(
            self.endpoint,
            self.metrics_model(),
            self.caller.label(),
            error.kind,
        );
        let sent = error.status_for(Protocol::of_endpoint(self.endpoint));
        self.finish(sent.as_u16(), Some(error.kind));
    }

    fn finish(&mut self, status: u16, error: Option<&'static str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let span = self.span.clone();
        let _in_request = span.enter();
        let gateway = &self.gateway;
        let metrics = &gateway.metrics;
        metrics.in_flight.dec();
        let elapsed = self.started.elapsed();
        let key = LabelText::from(self.caller.label());
        let model = self.metrics_model();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: self.endpoint.to_owned(),
                model: model.clone(),
                key: key.clone(),
                status,
            })
            .inc();
        let latency_labels = LatencyLabels {
            endpoint: self.endpoint.to_owned(),
            model: model.clone(),
        };
        metrics
            .latency
            .get_or_create(&latency_labels)
            .observe(elapsed.as_secs_f64());
        if let Some(first) = self.first_byte {
            metrics
                .first_byte
                .get_or_create(&latency_labels)
                .observe(first.as_secs_f64());
        }
        let reported = std::mem::take(&mut self.usage);
        let usage = self.billed_usage(reported);
        for (direction, count) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            if count > 0 {
                metrics
                    .tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        key: key.clone(),
                        direction,
                    })
                    .inc_by(count);
            }
        }
        let (provider, provider_model) = self
            .target
            .as_ref()
            .map(|t| (t.provider.clone(), t.model.clone()))
            .unwrap_or_default();
        let routes = self.routes.clone().unwrap_or_else(|| gateway.routes());
        let cost = match &self.target {
            Some(t) => routes.router.cost_of(&t.provider, &t.model, &usage),
            // Cut off before any answer while a provider had the prompt:
            // the client gone (499), the gateway's time limit (504) or its
            // stop (503, Anthropic's 529). (Also while the gateway is
            // still retrying a provider that does not answer: it cannot
            // tell that from one that is reading the prompt.)
            None if self.dispatched && matches!(status, 499 | 503 | 504 | 529) => {
                if self.whole_answer {
                    self.most_it_can_cost.or(self.unanswered_cost)
                } else {
                    self.unanswered_cost
                }
            }
            None => None,
        };
        let key_id = self.caller.key().map(|k| k.id.clone());
        if let Some(id) = &key_id {
            gateway.limits.record_tokens(
                id,
                usage.input_tokens + usage.output_tokens,
                self.rate_tokens_counted,
                self.caller.key().and_then(|key| key.tpm),
                &gateway.settling,
            );
        }
        let record = UsageRecord {
            at_ms: self.at_ms,
            request_id: Some(self.request_id.as_str().to_owned()),
            end_user: self.end_user.take(),
            key_id,
            model: self.model.clone(),
            provider,
            provider_model,
            endpoint: self.endpoint.to_owned(),
            input_tokens: usage.input_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: cost,
            latency_ms: elapsed.as_millis() as u64,
            status,
            error: error.map(str::to_owned),
            privacy: self.privacy.take(),
            body: self.body.take(),
        };
        tracing::info!(
            endpoint = self.endpoint,
            model = %self.model,
            key = %key.0,
            status,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            ms = record.latency_ms,
            "request"
        );
        // The ledger line is queued at once, never by a task waiting for
        // room: when the database falls behind, a full queue drops lines
        // (logged and counted) instead of piling up tasks and memory.
        gateway.ledger.try_record(record, &gateway.metrics);
        // Settling is a database call: off the response path. Dropping an
        // unfinished request (the client hung up) lands here too, so the
        // reservation is always released.
        if let (Some(reservation), Some(store)) = (self.reservation.take(), gateway.store.clone())
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let actual = cost.unwrap_or(0.0);
            handle.spawn(gateway.settling.track_future(async move {
                settle(&store, &reservation, actual).await;
            }));
        }
    }
}

/// Settles `reservation` at `actual` USD, retried as [`write_budget`]
/// says: a reservation is settled once however often it is tried
/// ([`Store::settle`]). Given up, the hold would be released by the sweep,
/// and the request's cost never counted.
async fn settle(store: &Store, reservation: &Reservation, actual: f64) {
    write_budget(store, reservation, BudgetWrite::Settle(actual)).await;
}

/// What [`write_budget`] does with a reservation.
#[derive(Clone, Copy)]
enum BudgetWrite {
    /// Settle it at this many USD ([`Store::settle`]).
    Settle(f64),
    /// Release the hold of a reservation whose answer was lost, whatever
    /// became of it ([`Store::release_unanswered`]).
    ReleaseUnanswered,
}

impl BudgetWrite {
    /// What it is doing, for the log.
    fn doing(self) -> &'static str {
        match self {
            BudgetWrite::Settle(_) => "settling a budget reservation",
            BudgetWrite::ReleaseUnanswered => "releasing an unanswered budget reservation",
        }
    }
}

/// Does `write` to `reservation`, which is applied once however often it
/// is tried. A failure is retried for up to a minute, whether or not the
/// database may have applied it (a connection lost mid-statement). Not
/// retried: an unknown key, or a store closed (the gateway has stopped).
async fn write_budget(store: &Store, reservation: &Reservation, write: BudgetWrite) {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let written = match write {
            BudgetWrite::Settle(actual) => store.settle(reservation, actual).await,
            BudgetWrite::ReleaseUnanswered => store.release_unanswered(reservation).await,
        };
        match written {
            Ok(()) => return,
            Err(error)
                if !matches!(error, StoreError::UnknownKey(_))
                    && !store.is_closed()
                    && started.elapsed() < crate::ledger::WRITE_PATIENCE =>
            {
                attempt += 1;
                tracing::warn!(%error, reservation = %reservation.id, "{}; retrying", write.doing());
                tokio::time::sleep(crate::ledger::retry_delay(attempt)).await;
            }
            Err(error) => {
                match write {
                    BudgetWrite::Settle(usd) => {
                        tracing::error!(%error, reservation = %reservation.id, usd, "{}", write.doing());
                    }
                    BudgetWrite::ReleaseUnanswered => {
                        tracing::error!(%error, reservation = %reservation.id, "{}", write.doing());
                    }
                }
                return;
            }
        }
    }
}

impl Accounting {
    /// The model label of this request's metrics: `(none)` without a
    /// route; the name once a provider has answered for it (this request
    /// or an earlier one), so that names clients make up, which providers
    /// refuse, get no series of their own.
    fn metrics_model(&self) -> LabelText {
        if self.routed {
            self.gateway
                .metrics
                .model_label(&self.model, self.target.is_some())
        } else {
            UNROUTED.into()
        }
    }
}

/// The model label of requests for a model without a route (or none).
pub(crate) const UNROUTED: &str = "(none)";

impl Drop for Accounting {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.answered {
            self.succeed();
        } else {
            self.finish(499, Some("client_closed"));
        }
    }
}

/// The bytes of answer in a part of a whole answer, as counted from a
/// stream's deltas.
fn answer_bytes(part: &ContentPart) -> u64 {
    match part {
        ContentPart::Text { text } => text.len() as u64,
        ContentPart::Reasoning(reasoning) => reasoning.text.len() as u64,
        ContentPart::ToolCall(call) => call.arguments.len() as u64,
        _ => 0,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses a JSON body into `T`, naming the field that was wrong.
///
/// # Errors
/// 400 with the JSON path and serde's reason.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, GatewayError> {
    if let Some(kind) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let essence = kind.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") && !essence.ends_with("+json") {
            return Err(GatewayError::unsupported_media_type(kind));
        }
    }
    // The path of a bad field is only worth its bookkeeping when there is
    // an error to report: the body is read again for it then.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        // `?` stands for a field not reached (the body ended): the path is
        // the fields around it.
        let path = error.path().to_string();
        let path = path.strip_suffix(".?").unwrap_or(&path).to_owned();
        let inner = error.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            GatewayError::bad_request(format!(
                "the body is not valid JSON for this endpoint: {inner}"
            ))
        } else {
            GatewayError::bad_request(format!("invalid request body at `{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{
        ChatRequest, ContentPart, Document, DocumentSource, ImageSource, Message,
    };

    use super::blocked;
    use crate::privacy::Privacy;

    /// A refusal's advice is for what blocked the request: a presigned
    /// image link that would only have kept it local does not take the
    /// place of the document that blocked it, and is named when it blocks.
    #[test]
    fn a_refusal_names_what_blocked_the_request() {
        let mut request = ChatRequest::new("m", vec![Message::user("What are these?")]);
        request.messages[0].content.extend([
            ContentPart::Image {
                source: ImageSource::Url {
                    url: "https://b.s3.amazonaws.com/k.png?X-Amz-Expires=60&X-Amz-Signature=\
                          5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                        .into(),
                },
            },
            ContentPart::Document(Document {
                source: DocumentSource::Base64 {
                    media_type: "application/pdf".into(),
                    data: "JVBERi0xLjQK".into(),
                },
                title: None,
            }),
        ]);
        let policy = |settings: serde_json::Value| {
            Privacy::new(serde_json::from_value(settings).unwrap()).unwrap()
        };
        let documents_block = policy(serde_json::json!({ "documents": "block" }));
        let decision = documents_block.decide(&request, None, false);
        let message = blocked(decision.reasons().unwrap()).message;
        assert!(message.contains("remove the document"), "{message}");
        assert!(!message.contains("image"), "{message}");

        let all_block = policy(serde_json::json!({ "action": "block" }));
        let decision = all_block.decide(&request, None, false);
        let message = blocked(decision.reasons().unwrap()).message;
        assert!(message.contains("an image's URL"), "{message}");
        assert!(!message.contains("5d672d79"), "{message}");
    }
}
