//! The Anthropic Messages client, for Claude and servers that speak its API.

use async_trait::async_trait;
use freehold_protocol::{Capabilities, ChatRequest, ChatResponse, ErrorKind, LlmError, ModelInfo};
use reqwest::header::HeaderMap;
use serde::Serialize;

use crate::client::{ClientOptions, KeyHeader, post_to_optional_endpoint};
use crate::http::Transport;
use crate::provider::{EventStream, Provider};
use crate::wire::anthropic::{
    self, ANTHROPIC_VERSION, COUNT_TOKENS_FIELDS, DEFAULT_MAX_TOKENS, EncodeOptions, ErrorResponse,
    EventDecoder, MessagesResponse, ModelList,
};

/// Pages of `GET /v1/models` read at most (of up to 1000 models each).
const MAX_MODEL_PAGES: usize = 20;

/// A client of `POST {base_url}/v1/messages`.
///
/// `base_url` is the API root (`https://api.anthropic.com`, see
/// [`anthropic::DEFAULT_BASE_URL`]); one that already ends in `/v1` is accepted too. The
/// key goes in `x-api-key`, with `anthropic-version: 2023-06-01`.
///
/// The API requires `max_tokens`; requests that set none get
/// [`DEFAULT_MAX_TOKENS`] (8192), which [`AnthropicClient::with_default_max_tokens`]
/// changes.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    options: ClientOptions,
    transport: Transport,
    headers: HeaderMap,
    default_max_tokens: u32,
    /// The server is Anthropic's own API, which makes context edits itself.
    anthropic_api: bool,
}

impl AnthropicClient {
    /// The client's headers plus the Anthropic headers a gateway's client
    /// sent (`anthropic-beta`, `anthropic-version`), which replace the
    /// client's own.
    fn request_headers(&self, request: &ChatRequest) -> std::borrow::Cow<'_, HeaderMap> {
        let forwarded: Vec<_> = request
            .forwarded_headers
            .iter()
            .filter(|(name, _)| {
                name.eq_ignore_ascii_case("anthropic-beta")
                    || name.eq_ignore_ascii_case("anthropic-version")
            })
            .filter_map(|(name, value)| {
                Some((
                    reqwest::header::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .ok()?,
                    reqwest::header::HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        if forwarded.is_empty() {
            return std::borrow::Cow::Borrowed(&self.headers);
        }
        // The client's values replace the configured ones of the same name;
        // a header the client sent several times (one `anthropic-beta` per
        // feature) keeps every value.
        let mut headers = self.headers.clone();
        for (name, _) in &forwarded {
            headers.remove(name);
        }
        for (name, value) in forwarded {
            headers.append(name, value);
        }
        std::borrow::Cow::Owned(headers)
    }

    /// A client of `options.base_url`.
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn new(options: ClientOptions) -> Result<Self, LlmError> {
        let transport = Transport::new(
            options.name.clone(),
            options.http.clone(),
            options.secrets(),
        )?;
        let headers = options.headers(
            KeyHeader::Named("x-api-key"),
            &[("anthropic-version", ANTHROPIC_VERSION)],
        )?;
        let anthropic_api = is_anthropics_own(&options.base_url);
        Ok(Self {
            options,
            transport,
            headers,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            anthropic_api,
        })
    }

    /// The same client, saying whether its server is Anthropic's own API
    /// (which makes the context edits a request asks for itself) rather
    /// than judging by the base URL.
    pub fn with_anthropic_api(mut self, anthropic_api: bool) -> Self {
        self.anthropic_api = anthropic_api;
        self
    }

    /// The same client, sending `max_tokens: n` when a request sets none.
    pub fn with_default_max_tokens(mut self, n: u32) -> Self {
        self.default_max_tokens = n.max(1);
        self
    }

    /// The `max_tokens` sent when a request sets none.
    pub fn default_max_tokens(&self) -> u32 {
        self.default_max_tokens
    }

    /// `base_url` joined with an API path (`/messages`, `/models`).
    fn url(&self, path: &str) -> String {
        if self.options.base_url.ends_with("/v1") {
            self.options.url(path)
        } else {
            self.options.url(&format!("/v1{path}"))
        }
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<serde_json::Value, LlmError> {
        let body = anthropic::encode_request(
            request,
            EncodeOptions {
                default_max_tokens: self.default_max_tokens,
                stream,
                thinking_display: self.anthropic_api,
                end_user: self.anthropic_api,
            },
        );
        to_json(&self.transport, &body)
    }
}

impl AnthropicClient {
    /// A JSON answer, or the error it carries.
    async fn read_answer(
        &self,
        response: crate::http::Response,
    ) -> Result<serde_json::Value, LlmError> {
        read_answer(&self.transport, &self.options.name, response).await
    }
}

/// A JSON answer, or the error it carries: Anthropic's error shape can come
/// with a success status from servers that imitate the API.
async fn read_answer(
    transport: &Transport,
    provider: &str,
    response: crate::http::Response,
) -> Result<serde_json::Value, LlmError> {
    let json = transport.read_json(response).await?;
    if json.get("type").and_then(serde_json::Value::as_str) == Some("error") {
        let error: ErrorResponse = serde_json::from_value(json).unwrap_or_default();
        let error = anthropic::api_error(provider, &error.error);
        return Err(transport.redact_error(error));
    }
    Ok(json)
}

/// Counts `request`'s input tokens at an Anthropic `count_tokens` endpoint
/// (`url`): the Messages request with only the fields that endpoint takes,
/// answered by `{"input_tokens"}`. `None` when the server has no such
/// endpoint. Shared with Chat Completions servers that serve Anthropic's
/// endpoint too (llama.cpp's `llama-server`).
pub(crate) async fn count_with_messages_endpoint(
    transport: &Transport,
    provider: &str,
    url: &str,
    headers: &HeaderMap,
    request: &ChatRequest,
) -> Result<Option<u64>, LlmError> {
    // `max_tokens` is filled in and then left out with the other fields the
    // endpoint refuses, so the default does not matter.
    let mut body = to_json(
        transport,
        &anthropic::encode_request(request, EncodeOptions::default()),
    )?;
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|name, _| COUNT_TOKENS_FIELDS.contains(&name.as_str()));
    }
    let sent = post_to_optional_endpoint(transport, url, headers, &body, &request.model).await?;
    let Some(response) = sent else {
        return Ok(None);
    };
    let json = read_answer(transport, provider, response).await?;
    match json.get("input_tokens") {
        // Another kind of endpoint at that path: no count, the caller
        // estimates.
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(count) => count.as_u64().map(Some).ok_or_else(|| {
            transport.error(
                ErrorKind::Server,
                format!("unexpected count_tokens response: input_tokens {count}"),
            )
        }),
    }
}

/// Whether `base_url` is Anthropic's own API (`api.anthropic.com`).
fn is_anthropics_own(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|host| host == "api.anthropic.com")
}

fn to_json(transport: &Transport, body: &impl Serialize) -> Result<serde_json::Value, LlmError> {
    serde_json::to_value(body)
        .map_err(|error| transport.error(ErrorKind::InvalidRequest, error.to_string()))
}

#[async_trait]
impl Provider for AnthropicClient {
    fn name(&self) -> &str {
        &self.options.name
    }

    /// Anthropic's own API edits the context itself: the request's
    /// `context_management` goes to it as the client sent it. Another
    /// server that speaks the protocol may ignore it, or refuse it: the
    /// router makes the edits for it.
    fn makes_context_edits(&self) -> bool {
        self.anthropic_api
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        // Extended thinking arrived with Claude 3.7 Sonnet; older models lack it.
        let old = [
            "claude-2",
            "claude-instant",
            "claude-3-haiku",
            "claude-3-opus",
            "claude-3-sonnet",
            "claude-3-5",
        ]
        .iter()
        .any(|prefix| model.starts_with(prefix));
        Capabilities {
            streaming: true,
            tools: true,
            parallel_tool_calls: true,
            vision: true,
            reasoning: !old,
            // Emulated with a forced tool call (see `structured_output_tool`).
            structured_output: true,
            documents: true,
        }
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let body = self.body(&request, true)?;
        let response = self
            .transport
            .post_json(
                &self.url("/messages"),
                &self.request_headers(&request),
                &body,
            )
            .await?;
        let events = self.transport.sse_stream(response);
        let decoder = EventDecoder::new(self.options.name.clone())
            .with_structured_tool(anthropic::structured_output_tool(&request));
        Ok(self.transport.decode_stream(events, decoder))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = self.body(&request, false)?;
        let response = self
            .transport
            .post_json_whole(
                &self.url("/messages"),
                &self.request_headers(&request),
                &body,
            )
            .await?;
        let json = self.read_answer(response).await?;
        let response: MessagesResponse = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected response shape: {error}"),
            )
        })?;
        let structured = anthropic::structured_output_tool(&request);
        Ok(anthropic::decode_response(response, structured.as_deref()))
    }

    /// Anthropic's own count: `POST /v1/messages/count_tokens` with the
    /// request's model, system prompt, messages and tools. A server that
    /// speaks the Messages API without that endpoint (404, 405 or 501 that
    /// does not name the model) cannot count: `None`.
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        count_with_messages_endpoint(
            &self.transport,
            &self.options.name,
            &self.url("/messages/count_tokens"),
            &self.request_headers(&request),
            &request,
        )
        .await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let mut url = self.url("/models?limit=1000");
            if let Some(after) = &after {
                url.push_str("&after_id=");
                url.push_str(after);
            }
            let response = self.transport.get(&url, &self.headers).await?;
            let json = self.transport.read_json(response).await?;
            let page: ModelList = serde_json::from_value(json).map_err(|error| {
                self.transport
                    .error(ErrorKind::Server, format!("unexpected model list: {error}"))
            })?;
            let last = page
                .last_id
                .clone()
                .or_else(|| page.data.last().map(|model| model.id.clone()));
            models.extend(page.data.into_iter().map(|model| ModelInfo {
                id: model.id,
                provider: self.options.name.clone(),
                context_window: None,
                max_output_tokens: None,
            }));
            match last {
                Some(last) if page.has_more && after.as_deref() != Some(last.as_str()) => {
                    after = Some(last)
                }
                _ => break,
            }
        }
        Ok(models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_anthropics_own_api_is_taken_for_it() {
        assert!(is_anthropics_own("https://api.anthropic.com"));
        assert!(is_anthropics_own("https://API.anthropic.com/v1"));
        for other in [
            "https://api.deepseek.com/anthropic",
            "http://127.0.0.1:8080",
            "https://api.anthropic.com.example.org",
            "not a url",
        ] {
            assert!(!is_anthropics_own(other), "{other}");
        }
    }
}
