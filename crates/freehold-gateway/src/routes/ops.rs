//! Operational endpoints and the ones that are not chat: `/health`,
//! `/metrics`, `/v1/models`, `/v1/embeddings`, and `HEAD /` and
//! `/api/hello` (Claude Code probes them before its first request).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freehold_llm::wire::anthropic::{ModelList, WireModel};
use freehold_llm::wire::embeddings::{
    OpenAiEmbeddingsRequest, decode_openai_request, encode_openai_response,
};
use serde_json::{Value, json};

use crate::chat::{
    Accounting, InputEstimate, authenticate, blocked, call_upstream, keep_local,
    leaves_the_machine, parse_body, privacy_header, reserve_budget,
};
use crate::error::{GatewayError, Protocol};
use crate::privacy::Decision;
use crate::request_id::Arrival;
use crate::routes::read_body;
use crate::state::Gateway;
use freehold_protocol::{ChatRequest, EmbedRequest, Message, Usage};

/// How long `/v1/models` waits for a provider to list its models.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET` and `HEAD` of `/` and `/api/hello`: a plain answer, so probes
/// (Claude Code sends both before its first request) see a live server.
pub(crate) async fn root() -> &'static str {
    "freehold gateway\n"
}

/// Whether a request may see `/metrics` and `/health`'s details: always
/// when they are open (a gateway on loopback, or `open_status = true`),
/// otherwise with a valid key.
async fn may_see_status(gateway: &Gateway, headers: &HeaderMap) -> Result<(), GatewayError> {
    if gateway.settings.status_is_open() {
        return Ok(());
    }
    gateway.auth.authenticate(headers).await.map(|_| ())
}

/// `GET /health`: liveness, and each provider's replicas (those only to a
/// caller allowed to see them: a load balancer's probe needs no key).
pub(crate) async fn health(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Json<Value> {
    if may_see_status(&gateway, &headers).await.is_err() {
        return Json(json!({"status": "ok"}));
    }
    let routes = gateway.routes();
    let mut providers = serde_json::Map::new();
    for (name, provider) in routes.router.providers() {
        let replicas: Vec<Value> = provider
            .replica_health()
            .into_iter()
            .map(|replica| {
                json!({
                    "name": replica.name,
                    "address": replica.address,
                    "healthy": !replica.ejected,
                    "outstanding": replica.outstanding,
                    "consecutive_failures": replica.consecutive_failures,
                })
            })
            .collect();
        let state = ProviderState::of(provider.usable(), &replicas);
        providers.insert(
            name.clone(),
            json!({
                "state": state.name(),
                "healthy": state.healthy(),
                "local": routes.local_providers.contains(name),
                "replicas": replicas,
            }),
        );
    }
    Json(json!({"status": "ok", "providers": providers}))
}

/// What `/health` says of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProviderState {
    /// At least one of its replicas is taking requests.
    Up,
    /// Every replica is ejected after failures (until its cooldown ends).
    Down,
    /// A single endpoint: the gateway keeps no health for it (its failures
    /// show in the metrics), so it is assumed up.
    Untracked,
    /// It cannot send requests (its API key is not set, say).
    Unusable,
}

impl ProviderState {
    fn of(usable: bool, replicas: &[Value]) -> Self {
        if !usable {
            Self::Unusable
        } else if replicas.is_empty() {
            Self::Untracked
        } else if replicas.iter().any(|replica| replica["healthy"] == true) {
            Self::Up
        } else {
            Self::Down
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Untracked => "untracked",
            Self::Unusable => "unusable",
        }
    }

    /// Whether requests routed to it can be expected to get through.
    fn healthy(self) -> bool {
        matches!(self, Self::Up | Self::Untracked)
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(error) = may_see_status(&gateway, &headers).await {
        return error.into_response(Protocol::OpenAi);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics_text(),
    )
        .into_response()
}

/// Whether a request comes from an Anthropic client (their SDKs always
/// send `anthropic-version`).
pub(crate) fn speaks_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// `GET /v1/models`: the aliases and every provider's models, in OpenAI's
/// shape, or Anthropic's when asked with Anthropic headers; for a key with a
/// list of models, only those of them.
pub(crate) async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let protocol = if speaks_anthropic(&headers) {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    let caller = match gateway.auth.authenticate(&headers).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(protocol),
    };
    let listed = listed_models(&gateway).await;
    let mut ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).collect();
    if let Some(key) = caller.key()
        && !key.allowed_models.is_empty()
    {
        ids.retain(|id| key.allowed_models.contains(id));
        // A name the key allows that routes without being listed (a model
        // of a provider that lists none, a name the default model takes).
        let routes = gateway.routes();
        for allowed in &key.allowed_models {
            let routed =
                gateway.settings.default_model.is_some() || routes.router.resolve(allowed).is_ok();
            if routed && !ids.contains(allowed) {
                ids.push(allowed.clone());
            }
        }
    }
    match protocol {
        Protocol::Anthropic => {
            let data: Vec<WireModel> = ids
                .iter()
                .map(|id| WireModel {
                    id: id.clone(),
                    display_name: Some(id.clone()),
                    created_at: Some("1970-01-01T00:00:00Z".into()),
                    kind: Some("model".into()),
                })
                .collect();
            Json(ModelList {
                first_id: ids.first().cloned(),
                last_id: ids.last().cloned(),
                data,
                has_more: false,
            })
            .into_response()
        }
        Protocol::OpenAi => {
            let context_windows: std::collections::HashMap<&str, u32> = listed
                .iter()
                .filter_map(|(id, window)| Some((id.as_str(), (*window)?)))
                .collect();
            Json(json!({
                "object": "list",
                "data": ids.iter().map(|id| {
                    let mut entry = json!({
                        "id": id, "object": "model", "created": 0, "owned_by": "freehold",
                    });
                    // The context window where its provider's listing says
                    // (vLLM's and llama.cpp's do), under the names clients
                    // read: vLLM's `max_model_len` (Continue), and the
                    // `context_length` of OpenRouter and LM Studio.
                    if let Some(window) = context_windows.get(id.as_str()) {
                        entry["max_model_len"] = json!(window);
                        entry["context_length"] = json!(window);
                    }
                    entry
                }).collect::<Vec<_>>(),
            }))
            .into_response()
        }
    }
}

/// `GET /v1/models/{model}` (OpenAI's and Anthropic's `models.retrieve`):
/// the model in the protocol's shape, when a request for it would be
/// routed (an alias, a `provider:model` of a configured provider, or any
/// name once `[gateway] default_model` is set) and the caller's key may
/// use it.
pub(crate) async fn model(
    State(gateway): State<Arc<Gateway>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    let protocol = if speaks_anthropic(&headers) {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    let caller = match gateway.auth.authenticate(&headers).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(protocol),
    };
    if let Err(error) = crate::chat::check_model_name(&model) {
        return error.into_response(protocol);
    }
    // The key's list first, so that a key learns nothing of models
    // outside it.
    if let Err(error) = caller.check_model(&model) {
        return error.into_response(protocol);
    }
    let routes = gateway.routes();
    let routed = match routes.router.resolve(&model) {
        Ok(targets) => {
            crate::chat::refuse_engine_paths(&model, &targets, &routes, &gateway.settings).is_ok()
        }
        Err(_) => gateway.settings.default_model.is_some(),
    };
    if !routed {
        return GatewayError::not_found(format!(
            "no model `{model}` here: GET /v1/models lists aliases and each provider's models \
             (`provider:model`)"
        ))
        .into_response(protocol);
    }
    match protocol {
        Protocol::Anthropic => Json(WireModel {
            display_name: Some(model.clone()),
            created_at: Some("1970-01-01T00:00:00Z".into()),
            kind: Some("model".into()),
            id: model,
        })
        .into_response(),
        Protocol::OpenAi => Json(json!({
            "id": model, "object": "model", "created": 0, "owned_by": "freehold",
        }))
        .into_response(),
    }
}

/// Aliases first, then `provider:model` for what each provider lists
/// (providers that cannot answer quickly are left out), each with its
/// context window where the provider's listing gives one.
async fn listed_models(gateway: &Gateway) -> Vec<(String, Option<u32>)> {
    let routes = gateway.routes();
    let mut ids: Vec<(String, Option<u32>)> = routes
        .router
        .aliases()
        .keys()
        .map(|alias| (alias.clone(), None))
        .collect();
    if let Some(default) = &gateway.settings.default_model
        && !ids.iter().any(|(id, _)| id == default)
    {
        ids.push((default.clone(), None));
    }
    let listed = routes
        .router
        .providers()
        .iter()
        .filter(|(name, _)| routes.listed_providers.contains(*name));
    let listings = listed.map(|(name, provider)| {
        let provider = Arc::clone(provider);
        async move {
            match tokio::time::timeout(LIST_TIMEOUT, provider.list_models()).await {
                Ok(Ok(models)) => models
                    .into_iter()
                    .map(|m| (format!("{name}:{}", m.id), m.context_window))
                    .collect(),
                _ => Vec::new(),
            }
        }
    });
    for listed in futures::future::join_all(listings).await {
        for (id, window) in listed {
            if !ids.iter().any(|(known, _)| *known == id) {
                ids.push((id, window));
            }
        }
    }
    ids
}

/// `POST /v1/embeddings` (OpenAI): the same admission as chat (key, model,
/// rate limit, privacy, budget), then the routed call under the request
/// timeout.
pub(crate) async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ENDPOINT: &str = "/v1/embeddings";
    // Authenticate before reading the body, as chat does.
    let caller = match authenticate(&gateway, &headers, ENDPOINT).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(Protocol::OpenAi),
    };
    let decoded = async {
        let body = read_body(body, &gateway.settings).await?;
        let mut wire: OpenAiEmbeddingsRequest = parse_body(&headers, &body)?;
        let end_user = wire.user.take();
        decode_openai_request(wire)
            .map(|(request, encoding)| (request, encoding, end_user))
            .map_err(|error| GatewayError::bad_request(error.to_string()))
    }
    .await;
    let (mut request, encoding, end_user) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            Accounting::new(&gateway, caller, ENDPOINT, "", &arrival).fail(&error);
            return error.into_response(Protocol::OpenAi);
        }
    };
    let mut accounting =
        Accounting::new(&gateway, caller.clone(), ENDPOINT, &request.model, &arrival);
    // The ledger names the end user; no provider is sent it.
    crate::chat::note_end_user(&gateway, end_user.as_deref(), &mut accounting);
    let routes = gateway.routes();
    let admitted = admit_embeddings(
        &gateway,
        &headers,
        &caller,
        &routes,
        &mut request,
        &mut accounting,
    )
    .await;
    let targets = match admitted {
        Ok(targets) => targets,
        Err(error) => {
            accounting.fail(&error);
            return error.into_response(Protocol::OpenAi);
        }
    };
    let call = routes.router.embed_on(targets, request);
    match call_upstream(&mut accounting, call).await {
        Ok((target, response)) => {
            accounting.answered(target, response.usage);
            accounting.succeed();
            (
                StatusCode::OK,
                Json(encode_openai_response(&response, encoding)),
            )
                .into_response()
        }
        Err(error) => error.into_response(Protocol::OpenAi),
    }
}

/// Admission of an embeddings request: the key may use the model and is
/// within its rate limit, the privacy policy is applied (the texts are
/// inspected as user messages), and the budget holds the input's cost.
/// Returns the targets it may go to (its route, narrowed by the policy).
async fn admit_embeddings(
    gateway: &Gateway,
    headers: &HeaderMap,
    caller: &crate::auth::Caller,
    routes: &Arc<crate::state::Routes>,
    request: &mut EmbedRequest,
    accounting: &mut Accounting,
) -> Result<Vec<freehold_llm::router::Target>, GatewayError> {
    crate::chat::check_model_name(&request.model)?;
    // The key's list first, as for chat.
    caller.check_model(&request.model)?;
    let targets = routes
        .router
        .resolve(&request.model)
        .map_err(|error| GatewayError::upstream(&error))?;
    crate::chat::refuse_engine_paths(&request.model, &targets, routes, &gateway.settings)?;
    accounting.routed = true;
    if let Some(key) = caller.key() {
        let input_tokens = key.tpm.map_or(0, |_| request.estimated_input_tokens());
        accounting.rate_tokens_counted = gateway
            .limits
            .admit(&key.id, key.rpm, key.tpm, input_tokens)
            .await
            .map_err(|limited| GatewayError::rate_limited(&limited))?;
    }
    let as_chat = ChatRequest::new(
        request.model.clone(),
        request.inputs.iter().map(Message::user).collect(),
    );
    let local_only_key = caller.key().is_some_and(|key| key.local_only);
    let decision =
        gateway
            .privacy
            .decide(&as_chat, privacy_header(gateway, headers)?, local_only_key);
    decision.log();
    accounting.privacy = decision.audit_line();
    let mut narrowed = None;
    match decision {
        Decision::Pass => {}
        Decision::LocalOnly { reasons } => {
            narrowed = keep_local(&request.model, &targets, routes, &reasons)?;
        }
        Decision::Redacted {
            request: redacted, ..
        } => {
            // As for chat: only texts that leave the machine are redacted.
            if leaves_the_machine(&targets, routes) {
                request.inputs = redacted.messages.iter().map(Message::text).collect();
            } else if let Some(line) = &mut accounting.privacy {
                line.push_str(" sent=unredacted route=local");
            }
        }
        Decision::Block { reasons } => return Err(blocked(&reasons)),
    }
    let usage = Usage {
        input_tokens: request.estimated_input_tokens(),
        ..Usage::default()
    };
    // Priced on what the texts will be sent on.
    let sent_to = narrowed.as_deref().unwrap_or(&targets);
    accounting.expect_input(InputEstimate::plain(usage.input_tokens), sent_to, routes);
    reserve_budget(gateway, caller, routes, sent_to, &usage, accounting).await?;
    Ok(narrowed.unwrap_or(targets))
}
