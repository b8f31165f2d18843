//! Operational endpoints and the ones that are not chat: `/health`,
//! `/metrics`, `/v1/models`, `/v1/embeddings`, and `HEAD /` (Claude Code
//! probes it before its first request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freehold_llm::wire::anthropic::{ModelList, WireModel};
use freehold_llm::wire::embeddings::{
    OpenAiEmbeddingsRequest, decode_openai_request, encode_openai_response,
};
use serde_json::{Value, json};

use crate::chat::{Accounting, keep_local, parse_body, privacy_header};
use crate::error::{GatewayError, Protocol};
use crate::privacy::Decision;
use crate::state::Gateway;
use freehold_protocol::{ChatRequest, EmbedRequest, Message};

/// How long `/v1/models` waits for a provider to list its models.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /` and `HEAD /`: a plain answer, so probes see a live server.
pub(crate) async fn root() -> &'static str {
    "freehold gateway\n"
}

/// `GET /health`: liveness, and each provider's replicas.
pub(crate) async fn health(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let routes = gateway.routes();
    let mut providers = serde_json::Map::new();
    for (name, provider) in routes.router.providers() {
        let replicas: Vec<Value> = provider
            .replica_health()
            .into_iter()
            .map(|replica| {
                json!({
                    "name": replica.name,
                    "healthy": !replica.ejected,
                    "outstanding": replica.outstanding,
                    "consecutive_failures": replica.consecutive_failures,
                })
            })
            .collect();
        let healthy = replicas.is_empty() || replicas.iter().any(|r| r["healthy"] == true);
        providers.insert(
            name.clone(),
            json!({
                "healthy": healthy,
                "local": routes.local_providers.contains(name),
                "replicas": replicas,
            }),
        );
    }
    Json(json!({"status": "ok", "providers": providers}))
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
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
/// shape, or Anthropic's when asked with Anthropic headers.
pub(crate) async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let protocol = if speaks_anthropic(&headers) {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    };
    if let Err(error) = gateway.auth.authenticate(&headers).await {
        return error.into_response(protocol);
    }
    let ids = model_ids(&gateway).await;
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
        Protocol::OpenAi => Json(json!({
            "object": "list",
            "data": ids.iter().map(|id| json!({
                "id": id, "object": "model", "created": 0, "owned_by": "freehold",
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
    }
}

/// Aliases first, then `provider:model` for what each provider lists
/// (providers that cannot answer quickly are left out).
async fn model_ids(gateway: &Gateway) -> Vec<String> {
    let routes = gateway.routes();
    let mut ids: Vec<String> = routes.router.aliases().keys().cloned().collect();
    if let Some(default) = &gateway.settings.default_model
        && !ids.contains(default)
    {
        ids.push(default.clone());
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
                    .map(|m| format!("{name}:{}", m.id))
                    .collect(),
                _ => Vec::new(),
            }
        }
    });
    for listed in futures::future::join_all(listings).await {
        for id in listed {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// `POST /v1/embeddings` (OpenAI).
pub(crate) async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let caller = match gateway.auth.authenticate(&headers).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(Protocol::OpenAi),
    };
    let wire: OpenAiEmbeddingsRequest = match parse_body(&headers, &body) {
        Ok(wire) => wire,
        Err(error) => return error.into_response(Protocol::OpenAi),
    };
    let mut request = decode_openai_request(wire);
    let mut accounting = Accounting::new(
        &gateway,
        caller.clone(),
        "/v1/embeddings",
        &request.model,
        started,
    );
    if let Err(error) = caller.check_model(&request.model) {
        accounting.fail(&error);
        return error.into_response(Protocol::OpenAi);
    }
    if let Some(key) = caller.key()
        && let Err(limited) = gateway.limits.admit(&key.id, key.rpm, key.tpm)
    {
        let error = GatewayError::rate_limited(&limited);
        accounting.fail(&error);
        return error.into_response(Protocol::OpenAi);
    }
    let routes = gateway.routes();
    if let Err(error) = embeddings_privacy(&gateway, &headers, &caller, &routes, &mut request) {
        accounting.fail(&error);
        return error.into_response(Protocol::OpenAi);
    }
    match routes.router.embed_routed(request).await {
        Ok((target, response)) => {
            accounting.answered(target, response.usage);
            accounting.succeed();
            (StatusCode::OK, Json(encode_openai_response(&response))).into_response()
        }
        Err(error) => {
            tracing::warn!(error = %error, "embeddings failed");
            let sent = GatewayError::upstream(&error);
            accounting.fail(&sent);
            sent.into_response(Protocol::OpenAi)
        }
    }
}

/// The privacy policy for texts to embed: the same detectors, header and
/// key setting as chat (the texts are inspected as user messages).
fn embeddings_privacy(
    gateway: &Gateway,
    headers: &HeaderMap,
    caller: &crate::auth::Caller,
    routes: &crate::state::Routes,
    request: &mut EmbedRequest,
) -> Result<(), GatewayError> {
    let as_chat = ChatRequest::new(
        request.model.clone(),
        request.inputs.iter().map(Message::user).collect(),
    );
    let local_only_key = caller.key().is_some_and(|key| key.local_only);
    let decision =
        gateway
            .privacy
            .decide(&as_chat, privacy_header(gateway, headers), local_only_key);
    decision.log();
    let targets = || {
        routes
            .router
            .resolve(&request.model)
            .map_err(|error| GatewayError::upstream(&error))
    };
    match decision {
        Decision::Pass => Ok(()),
        Decision::LocalOnly { .. } => {
            let targets = targets()?;
            keep_local(&mut request.model, &targets, routes)
        }
        Decision::Redacted {
            request: redacted, ..
        } => {
            request.inputs = redacted.messages.iter().map(Message::text).collect();
            Ok(())
        }
        Decision::Block { reasons } => Err(GatewayError::forbidden(format!(
            "this request was blocked by the gateway's privacy policy ({}); remove the \
             sensitive data and send it again",
            reasons.findings
        ))),
    }
}
