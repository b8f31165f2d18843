//! The OpenAI Responses client (`POST {base_url}/responses`), used
//! statelessly: the whole conversation goes with every request and nothing
//! is stored at the provider.

use std::sync::Arc;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo, ReasoningEffort,
};
use reqwest::header::HeaderMap;

use crate::client::effort::{EffortAsk, EffortMemory, EffortTries, Endpoint};
use crate::client::{ClientOptions, KeyHeader, post_to_optional_endpoint};
use crate::http::Transport;
use crate::provider::{EventStream, Provider};
use crate::stop::LocalStops;
use crate::wire::openai_api;
use crate::wire::openai_responses::{self, ResponseObject, ResponsesDecoder};

/// A client of the OpenAI Responses API.
///
/// Requests carry `store: false` and the full conversation as `input`;
/// reasoning items come back with their `encrypted_content` (when reasoning
/// is requested) and are sent back on the next turn. Stop sequences have
/// no field in this API: they are applied to the answer here
/// ([`crate::stop`]). Top-k, seed and penalties have none either and are
/// ignored (logged at debug level).
#[derive(Debug, Clone)]
pub struct OpenAiResponsesClient {
    options: ClientOptions,
    transport: Transport,
    headers: HeaderMap,
    /// Whether the server is OpenAI's own API
    /// ([`crate::wire::openai_chat::Dialect::openai_api`]).
    openai_api: bool,
    /// The efforts its models were found to take.
    efforts: Arc<EffortMemory>,
}

impl OpenAiResponsesClient {
    /// OpenAI's base URL, for [`ClientOptions::new`].
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// A client of `options.base_url` (`Authorization: Bearer` with the key).
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn new(options: ClientOptions) -> Result<Self, LlmError> {
        let transport = Transport::new(
            options.name.clone(),
            options.http.clone(),
            options.secrets(),
        )?;
        let headers = options.headers(KeyHeader::Bearer, &[])?;
        Ok(Self {
            options,
            transport,
            headers,
            openai_api: false,
            efforts: Arc::default(),
        })
    }

    /// The same client, told whether its server is OpenAI's own API: a
    /// request for no reasoning then asks each model for its least effort,
    /// and `prompt_cache_key`, `verbosity`, `service_tier` and
    /// `safety_identifier` are sent
    /// (see [`crate::wire::openai_api`]).
    pub fn with_openai_api(mut self, openai_api: bool) -> Self {
        self.openai_api = openai_api;
        self
    }

    /// The same client, learning into (and from) `efforts`.
    pub(crate) fn with_efforts(mut self, efforts: Arc<EffortMemory>) -> Self {
        self.efforts = efforts;
        self
    }

    /// Sends `request`, with the reasoning effort its model takes: when
    /// the server refuses the one sent and names those the model takes
    /// (OpenAI's API does), it is sent again with the nearest, which is
    /// remembered for the model's later requests.
    async fn post(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<crate::http::Response, LlmError> {
        let mut body = openai_responses::encode_request(request, stream, self.openai_api);
        let verbosity = body.text.as_ref().and_then(|text| text.verbosity.clone());
        let mut tries = EffortTries::new(
            &self.efforts,
            EffortAsk {
                provider: &self.options.name,
                model: &request.model,
                asked: openai_api::effort_name(request, self.openai_api, false),
                verbosity: verbosity.as_deref(),
                endpoint: Endpoint::Responses,
            },
        );
        let summary = asked_for_reasoning(request);
        loop {
            body.set_effort(tries.effort(), summary);
            let json = serde_json::to_value(&body).map_err(|error| {
                self.transport
                    .error(ErrorKind::InvalidRequest, error.to_string())
            })?;
            let url = self.options.url("/responses");
            match self
                .transport
                .post_json_answer(&url, &self.headers, &json, stream)
                .await
            {
                Err(refused) if tries.retry_after(&refused) => {}
                answered => return answered,
            }
        }
    }
}

/// Whether `request` asks for reasoning, rather than for none or nothing:
/// only then is a summary of it asked for (OpenAI refuses summaries to
/// organisations it has not verified, so a request for no reasoning must not
/// fail for one).
fn asked_for_reasoning(request: &ChatRequest) -> bool {
    request
        .reasoning
        .is_some_and(|effort| effort != ReasoningEffort::Off)
}

/// Whether `model` is one of OpenAI's reasoning models.
fn is_reasoning_model(model: &str) -> bool {
    let model = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5", "codex", "gpt-oss"]
        .iter()
        .any(|prefix| model.starts_with(prefix))
}

#[async_trait]
impl Provider for OpenAiResponsesClient {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        Capabilities {
            vision: true,
            reasoning: is_reasoning_model(model),
            structured_output: true,
            documents: self.openai_api,
            ..Capabilities::default()
        }
    }

    async fn stream(&self, mut request: ChatRequest) -> Result<EventStream, LlmError> {
        let stops = LocalStops::split_off(&mut request, Some(0));
        let response = self.post(&request, true).await?;
        let events = self.transport.sse_stream(response);
        let events = self
            .transport
            .decode_stream(events, ResponsesDecoder::new(self.options.name.clone()));
        Ok(stops.apply_to_stream(events))
    }

    async fn complete(&self, mut request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let stops = LocalStops::split_off(&mut request, Some(0));
        let response = self.post(&request, false).await?;
        let json = self.transport.read_json(response).await?;
        let response: ResponseObject = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected response shape: {error}"),
            )
        })?;
        let mut answer = openai_responses::decode_response(&self.options.name, response)
            .map_err(|error| self.transport.redact_error(error))?;
        stops.apply_to_response(&mut answer);
        Ok(answer)
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        super::openai_chat::list_openai_models(&self.transport, &self.options, &self.headers).await
    }

    /// `POST {base_url}/embeddings`: the same API serves both.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        super::openai_chat::openai_embed(&self.transport, &self.options, &self.headers, request)
            .await
    }

    /// OpenAI's own count: `POST {base_url}/responses/input_tokens`.
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        count_with_input_tokens(
            &self.transport,
            &self.options,
            &self.headers,
            &request,
            self.openai_api,
            &self.efforts,
        )
        .await
    }
}

/// The fields of a Responses request that `POST /responses/input_tokens`
/// takes; OpenAI refuses parameters it does not know (`stream`, `store`,
/// `max_output_tokens`…).
const INPUT_TOKENS_FIELDS: [&str; 9] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
];

/// Counts `request` with `POST {base_url}/responses/input_tokens`, which
/// takes a Responses request and answers `{"input_tokens": N}`; shared with
/// the Chat Completions client for OpenAI's own API. A server without the
/// endpoint (404, 405 or 501 that does not name the model), or an answer
/// without `input_tokens`, gives `None`: the caller estimates. The effort
/// sent is the one the model was found to take (`efforts`).
pub(crate) async fn count_with_input_tokens(
    transport: &Transport,
    options: &ClientOptions,
    headers: &HeaderMap,
    request: &ChatRequest,
    openai_api: bool,
    efforts: &EffortMemory,
) -> Result<Option<u64>, LlmError> {
    let mut encoded = openai_responses::encode_request(request, false, openai_api);
    // An effort the model was found to take; none for no reasoning, as a
    // count learns nothing from a refusal.
    let asked = openai_api::effort_name(request, openai_api, false)
        .filter(|_| asked_for_reasoning(request));
    let effort = efforts.effort_for(&EffortAsk {
        provider: &options.name,
        model: &request.model,
        asked,
        verbosity: None,
        endpoint: Endpoint::Responses,
    });
    encoded.set_effort(effort, false);
    let mut body = serde_json::to_value(&encoded)
        .map_err(|error| transport.error(ErrorKind::InvalidRequest, error.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|name, _| INPUT_TOKENS_FIELDS.contains(&name.as_str()));
    }
    let url = options.url("/responses/input_tokens");
    let sent = post_to_optional_endpoint(transport, &url, headers, &body, &request.model).await?;
    let Some(response) = sent else {
        return Ok(None);
    };
    let answer = transport.read_json(response).await?;
    Ok(answer
        .get("input_tokens")
        .and_then(serde_json::Value::as_u64))
}
