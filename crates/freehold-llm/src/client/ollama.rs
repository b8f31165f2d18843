//! The client of Ollama's native API (`/api/chat`), which, unlike Ollama's
//! OpenAI-compatible `/v1`, lets each request size the model's context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo,
};
use reqwest::header::HeaderMap;

use crate::client::{ClientOptions, KeyHeader};
use crate::http::Transport;
use crate::provider::{EventStream, Provider, check_embed_request};
use crate::wire::embeddings::{self, OllamaEmbedResponse};
use crate::wire::ollama::{
    self, ChatLineDecoder, ContextSize, KeepAlive, ModelFacts, NumCtxPolicy, ShowRequest,
    ShowResponse, TagsResponse, WireChatResponse,
};

/// What an [`OllamaClient`] does beyond the HTTP options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaSettings {
    /// How `options.num_ctx` (and, without `max_tokens`,
    /// `options.num_predict`) is sized for each request.
    pub num_ctx: NumCtxPolicy,
    /// How long the model stays loaded after a request (`"5m"`, `"-1"`);
    /// `None` leaves the server's default.
    pub keep_alive: Option<String>,
    /// Whether to ask `/api/show` (once per model) for the model's trained
    /// context, which then caps `num_ctx` instead of
    /// [`NumCtxPolicy::max`].
    pub probe_context: bool,
}

impl Default for OllamaSettings {
    fn default() -> Self {
        Self {
            num_ctx: NumCtxPolicy::default(),
            keep_alive: None,
            probe_context: true,
        }
    }
}

/// A client of `POST {base_url}/api/chat` (default base URL
/// [`ollama::DEFAULT_BASE_URL`]).
///
/// Every request carries an `options.num_ctx` and an `options.num_predict`
/// sized by [`ollama::size_context`]; a request that cannot fit the model's
/// context fails with [`ErrorKind::ContextLengthExceeded`] before anything is
/// sent.
/// Ollama has no `tool_choice`: [`freehold_protocol::ToolChoice::None`] sends
/// no tools, and a required or named tool cannot be forced (a named tool is
/// offered alone).
#[derive(Debug, Clone)]
pub struct OllamaClient {
    options: ClientOptions,
    settings: OllamaSettings,
    transport: Transport,
    headers: HeaderMap,
    /// What `/api/show` said about each model asked about, shared by
    /// clones.
    facts: Arc<Mutex<HashMap<String, ModelFacts>>>,
    /// The largest `num_ctx` sent for each model, shared by clones: a
    /// smaller one would make Ollama reload the model (it does whenever
    /// `num_ctx` changes), so a short request after a long one is sent at
    /// the long one's size.
    largest_num_ctx: Arc<Mutex<HashMap<String, u32>>>,
}

impl OllamaClient {
    /// A client with default [`OllamaSettings`]. An empty `base_url` means
    /// [`ollama::DEFAULT_BASE_URL`]. A key, when given, is sent as a bearer
    /// token (Ollama's cloud, or a proxy in front of a server).
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn new(options: ClientOptions) -> Result<Self, LlmError> {
        Self::with_settings(options, OllamaSettings::default())
    }

    /// A client with the given settings.
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn with_settings(
        mut options: ClientOptions,
        settings: OllamaSettings,
    ) -> Result<Self, LlmError> {
        if options.base_url.is_empty() {
            options.base_url = ollama::DEFAULT_BASE_URL.to_owned();
        }
        let transport = Transport::new(
            options.name.clone(),
            options.http.clone(),
            options.secrets(),
        )?;
        let headers = options.headers(KeyHeader::Bearer, &[])?;
        Ok(Self {
            options,
            settings,
            transport,
            headers,
            facts: Arc::new(Mutex::new(HashMap::new())),
            largest_num_ctx: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The client's settings.
    pub fn settings(&self) -> &OllamaSettings {
        &self.settings
    }

    /// The context `model` was trained with, from `POST /api/show`
    /// (`model_info["<arch>.context_length"]`); `None` when the server does
    /// not say. Each model is asked about once; answers are cached.
    ///
    /// # Errors
    /// The request failed (unknown model, server unreachable…); failures are
    /// not cached.
    pub async fn context_length(&self, model: &str) -> Result<Option<u32>, LlmError> {
        Ok(self.model_facts(model).await?.context_length)
    }

    /// What `POST /api/show` says about `model` ([`ModelFacts`]). Each model
    /// is asked about once; answers are cached.
    ///
    /// # Errors
    /// The request failed (unknown model, server unreachable…); failures are
    /// not cached.
    pub async fn model_facts(&self, model: &str) -> Result<ModelFacts, LlmError> {
        if let Some(known) = self.cached_facts(model) {
            return Ok(known);
        }
        let body = serde_json::to_value(ShowRequest {
            model: model.to_owned(),
        })
        .map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })?;
        let response = self
            .transport
            .post_json(&self.options.url("/api/show"), &self.headers, &body)
            .await?;
        let json = self.transport.read_json(response).await?;
        let show: ShowResponse = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected /api/show answer: {error}"),
            )
        })?;
        let facts = show.facts();
        if let Ok(mut known) = self.facts.lock() {
            known.insert(model.to_owned(), facts);
        }
        Ok(facts)
    }

    fn cached_facts(&self, model: &str) -> Option<ModelFacts> {
        self.facts
            .lock()
            .ok()
            .and_then(|known| known.get(model).copied())
    }

    /// `num_ctx` raised to the largest sent for `model` so far, within
    /// `limit`; remembered as the largest when it is.
    fn never_smaller(&self, model: &str, num_ctx: u32, limit: u32) -> u32 {
        let Ok(mut largest) = self.largest_num_ctx.lock() else {
            return num_ctx;
        };
        let sent = largest.entry(model.to_owned()).or_insert(num_ctx);
        let num_ctx = num_ctx.max((*sent).min(limit));
        *sent = (*sent).max(num_ctx);
        num_ctx
    }

    /// The `num_ctx` and `num_predict` this client sends with `request`: see
    /// [`ollama::size_context`], capped by the model's trained context when
    /// [`OllamaSettings::probe_context`] is on and the server reports it.
    ///
    /// # Errors
    /// [`ErrorKind::ContextLengthExceeded`] when the request cannot fit;
    /// [`ErrorKind::NotFound`] (and connection or key errors) from
    /// `/api/show`. Other `/api/show` failures (old servers) only leave the
    /// model's context unknown.
    pub async fn size_context(&self, request: &ChatRequest) -> Result<ContextSize, LlmError> {
        let model_context = if self.settings.probe_context {
            match self.context_length(&request.model).await {
                Ok(context) => context,
                Err(error)
                    if matches!(
                        error.kind,
                        ErrorKind::NotFound
                            | ErrorKind::Connection
                            | ErrorKind::Authentication
                            | ErrorKind::Permission
                    ) =>
                {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(
                        provider = %self.options.name,
                        model = %request.model,
                        error = %error,
                        "cannot read the model's context from /api/show; capping num_ctx by the policy"
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut size = ollama::size_context(request, &self.settings.num_ctx, model_context)
            .map_err(|overflow| {
                self.transport
                    .error(overflow.kind(), format!("`{}`: {overflow}", request.model))
            })?;
        let limit = self.settings.num_ctx.limit(model_context);
        size.num_ctx = self.never_smaller(&request.model, size.num_ctx, limit);
        Ok(size)
    }

    fn encode(
        &self,
        request: &ChatRequest,
        size: ContextSize,
        stream: bool,
    ) -> Result<serde_json::Value, LlmError> {
        let mut body = ollama::encode_request(request, size, stream).map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })?;
        body.keep_alive = self.settings.keep_alive.clone().map(KeepAlive::Duration);
        // Known only when `/api/show` was asked (probe_context): otherwise
        // `think` is sent as the request asks.
        if let Some(facts) = self.cached_facts(&request.model) {
            body.think = facts.think(request.reasoning);
        }
        serde_json::to_value(&body).map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })
    }

    /// Sends a chat body; when Ollama says the prompt does not fit a
    /// `num_ctx` below the model's limit (the size is an estimate, and
    /// `truncate` is off), sends it once more with four times the context
    /// (an estimate of four bytes a token is off by at most that much, for
    /// text of a byte a token), within the limit. The larger size is kept
    /// for the model only once it has been answered.
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<crate::http::Response, LlmError> {
        let size = self.size_context(request).await?;
        let chat_url = self.options.url("/api/chat");
        let url = &chat_url;
        let post = |body: serde_json::Value| async move {
            self.transport
                .post_json_answer(url, &self.headers, &body, stream)
                .await
        };
        let first = post(self.encode(request, size, stream)?).await;
        let model_context = self
            .cached_facts(&request.model)
            .and_then(|facts| facts.context_length);
        let limit = self.settings.num_ctx.limit(model_context);
        match first {
            Err(error)
                if matches!(error.kind, ErrorKind::ContextLengthExceeded { .. })
                    && size.num_ctx < limit =>
            {
                let num_ctx = size.num_ctx.saturating_mul(4).min(limit);
                tracing::debug!(
                    provider = %self.options.name,
                    model = %request.model,
                    from = size.num_ctx,
                    to = num_ctx,
                    "the prompt did not fit the estimated context; asking again with more"
                );
                let answer =
                    post(self.encode(request, ContextSize { num_ctx, ..size }, stream)?).await;
                if answer.is_ok() {
                    self.never_smaller(&request.model, num_ctx, limit);
                }
                answer
            }
            other => other,
        }
    }
}

#[async_trait]
impl Provider for OllamaClient {
    fn name(&self) -> &str {
        &self.options.name
    }

    /// What Ollama's API allows; whether `model` itself can see images, call
    /// tools or think depends on the model.
    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities {
            structured_output: true,
            vision: true,
            reasoning: true,
            ..Capabilities::default()
        }
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let response = self.send(&request, true).await?;
        let lines = self.transport.ndjson_stream(response);
        Ok(self
            .transport
            .decode_stream(lines, ChatLineDecoder::new(self.options.name.clone())))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let response = self.send(&request, false).await?;
        let json = self.transport.read_json(response).await?;
        if let Some(error) = ollama::error_in(&self.options.name, &json) {
            return Err(self.transport.redact_error(error));
        }
        let response: WireChatResponse = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected response shape: {error}"),
            )
        })?;
        if !response.done {
            return Err(self.transport.error(
                ErrorKind::Server,
                "the answer is not marked `\"done\": true`",
            ));
        }
        Ok(ollama::decode_response(response))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let response = self
            .transport
            .get(&self.options.url("/api/tags"), &self.headers)
            .await?;
        let json = self.transport.read_json(response).await?;
        let tags: TagsResponse = serde_json::from_value(json).map_err(|error| {
            self.transport
                .error(ErrorKind::Server, format!("unexpected model list: {error}"))
        })?;
        Ok(tags
            .models
            .into_iter()
            .map(|model| {
                let id = if model.name.is_empty() {
                    model.model
                } else {
                    model.name
                };
                ModelInfo {
                    // Known only for models already asked about: one
                    // /api/show per model would make listing slow.
                    context_window: self
                        .cached_facts(&id)
                        .and_then(|facts| facts.context_length),
                    id,
                    provider: self.options.name.clone(),
                    max_output_tokens: None,
                }
            })
            .collect())
    }

    /// `POST /api/embed`, with `"truncate": false`: an input longer than
    /// the model's context is an error, never cut.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        check_embed_request(&self.options.name, &request)?;
        let body = embeddings::encode_ollama_request(&request, self.settings.keep_alive.clone());
        let body = serde_json::to_value(&body).map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })?;
        let response = self
            .transport
            .post_json_whole(&self.options.url("/api/embed"), &self.headers, &body)
            .await?;
        let json = self.transport.read_json(response).await?;
        if let Some(error) = ollama::error_in(&self.options.name, &json) {
            return Err(self.transport.redact_error(error));
        }
        let response: OllamaEmbedResponse = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected /api/embed answer: {error}"),
            )
        })?;
        embeddings::decode_ollama_response(
            &self.options.name,
            &request.model,
            request.inputs.len(),
            response,
        )
        .and_then(|answer| embeddings::check_dimensions(&self.options.name, &request, answer))
        .map_err(|error| self.transport.redact_error(error))
    }
}
