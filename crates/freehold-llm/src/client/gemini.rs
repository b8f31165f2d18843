//! The Google Gemini API client (`generateContent`, `streamGenerateContent`).
//!
//! The key travels in the `x-goog-api-key` header, never in the URL's
//! `?key=` (URLs end up in error messages and logs).

use std::fmt::Write as _;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, ContentPart, ErrorKind, LlmError, ModelInfo,
};
use reqwest::header::HeaderMap;

use crate::client::{ClientOptions, KeyHeader};
use crate::http::{Transport, clip};
use crate::provider::{EventStream, Provider};
use crate::stop::LocalStops;
use crate::wire::gemini::{
    self, ChunkDecoder, GenerateContentResponse, ModelList, model_path, model_resource,
    stream_error,
};

/// How many pages of `GET models` are read at most.
const MAX_MODEL_PAGES: usize = 10;

/// A client of the Gemini API at `options.base_url`
/// ([`gemini::DEFAULT_BASE_URL`] for Google's).
#[derive(Debug, Clone)]
pub struct GeminiClient {
    options: ClientOptions,
    transport: Transport,
    headers: HeaderMap,
}

impl GeminiClient {
    /// A client of `options.base_url`, sending `options.api_key` as
    /// `x-goog-api-key`.
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn new(options: ClientOptions) -> Result<Self, LlmError> {
        let transport = Transport::new(
            options.name.clone(),
            options.http.clone(),
            options.secrets(),
        )?;
        let headers = options.headers(KeyHeader::Named("x-goog-api-key"), &[])?;
        Ok(Self {
            options,
            transport,
            headers,
        })
    }

    /// `POST url` with `body`, the answer read whole as JSON, or the error
    /// it carries (Google can send one with a success status). `generates`
    /// says whether the answer is generated: then it may take the response
    /// timeout to come, otherwise (a token count) the idle timeout.
    async fn post_for_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        generates: bool,
    ) -> Result<serde_json::Value, LlmError> {
        let sent = if generates {
            self.transport
                .post_json_whole(url, &self.headers, body)
                .await
        } else {
            self.transport.post_json(url, &self.headers, body).await
        };
        let response = sent.map_err(refine)?;
        let json = self.transport.read_json(response).await?;
        if let Some(error) = json.get("error") {
            return Err(self
                .transport
                .redact_error(stream_error(&self.options.name, error)));
        }
        Ok(json)
    }

    /// `streamGenerateContent` with `request`.
    async fn post_stream(&self, request: &ChatRequest) -> Result<crate::http::Response, LlmError> {
        let body = self.body(request)?;
        let url = self.options.url(&format!(
            "{}?alt=sse",
            model_path(&request.model, "streamGenerateContent")
        ));
        self.transport
            .post_json(&url, &self.headers, &body)
            .await
            .map_err(refine)
    }

    /// `generateContent` with `request`, the answer as JSON.
    async fn post_generate(&self, request: &ChatRequest) -> Result<serde_json::Value, LlmError> {
        let body = self.body(request)?;
        let url = self
            .options
            .url(&model_path(&request.model, "generateContent"));
        self.post_for_json(&url, &body, true).await
    }

    fn body(&self, request: &ChatRequest) -> Result<serde_json::Value, LlmError> {
        serde_json::to_value(gemini::encode_request(request)).map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })
    }
}

#[async_trait]
impl Provider for GeminiClient {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        let model = model.to_ascii_lowercase();
        Capabilities {
            vision: true,
            structured_output: true,
            reasoning: model.contains("2.5")
                || model.contains("gemini-3")
                || model.contains("thinking"),
            documents: true,
            ..Capabilities::default()
        }
    }

    async fn stream(&self, mut request: ChatRequest) -> Result<EventStream, LlmError> {
        let stops = LocalStops::split_off(&mut request, Some(gemini::MAX_STOP_SEQUENCES));
        let response = match self.post_stream(&request).await {
            Err(refused) if refuses_signatures(&refused) && drop_signatures(&mut request) => {
                tracing::debug!(
                    provider = %self.options.name,
                    "a thought signature was refused; sending again without signatures"
                );
                self.post_stream(&request).await?
            }
            sent => sent?,
        };
        let events = self.transport.sse_stream(response);
        let events = self
            .transport
            .decode_stream(events, ChunkDecoder::new(self.options.name.clone()));
        Ok(stops.apply_to_stream(events))
    }

    async fn complete(&self, mut request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let stops = LocalStops::split_off(&mut request, Some(gemini::MAX_STOP_SEQUENCES));
        let json = match self.post_generate(&request).await {
            Err(refused) if refuses_signatures(&refused) && drop_signatures(&mut request) => {
                tracing::debug!(
                    provider = %self.options.name,
                    "a thought signature was refused; sending again without signatures"
                );
                self.post_generate(&request).await?
            }
            answered => answered?,
        };
        let response: GenerateContentResponse = serde_json::from_value(json).map_err(|error| {
            self.transport.error(
                ErrorKind::Server,
                format!("unexpected response shape: {error}"),
            )
        })?;
        let mut answer = gemini::decode_response(&self.options.name, response)?;
        stops.apply_to_response(&mut answer);
        Ok(answer)
    }

    /// Google's own count: `models/{model}:countTokens` with the whole
    /// `generateContent` request (system instruction and tools included).
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        let mut generate = self.body(&request)?;
        if let Some(fields) = generate.as_object_mut() {
            fields.insert("model".into(), model_resource(&request.model).into());
        }
        let body = serde_json::json!({ "generateContentRequest": generate });
        let url = self.options.url(&model_path(&request.model, "countTokens"));
        let json = self.post_for_json(&url, &body, false).await?;
        // Google's JSON leaves out zero fields, but a prompt always has
        // tokens: an answer without `totalTokens` comes from something
        // else (a proxy, a compatible server), and the caller estimates.
        match json.get("totalTokens") {
            None if json.is_object() => Ok(None),
            Some(total) if total.is_u64() => Ok(total.as_u64()),
            _ => Err(self.transport.error(
                ErrorKind::Server,
                format!(
                    "unexpected countTokens response: {}",
                    clip(&json.to_string())
                ),
            )),
        }
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut models = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let mut url = self.options.url("/models?pageSize=1000");
            if let Some(token) = &token {
                url.push_str("&pageToken=");
                url.push_str(&percent_encode(token));
            }
            let response = self
                .transport
                .get(&url, &self.headers)
                .await
                .map_err(refine)?;
            let json = self.transport.read_json(response).await?;
            let page: ModelList = serde_json::from_value(json).map_err(|error| {
                self.transport
                    .error(ErrorKind::Server, format!("unexpected model list: {error}"))
            })?;
            models.extend(
                page.models
                    .iter()
                    .filter(|model| model.generates_content())
                    .map(|model| ModelInfo {
                        id: model.id().to_owned(),
                        provider: self.options.name.clone(),
                        context_window: model.input_token_limit,
                        max_output_tokens: model.output_token_limit,
                    }),
            );
            token = page.next_page_token.filter(|token| !token.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(models)
    }
}

/// Gemini answers a wrong or expired key with `400 INVALID_ARGUMENT` ("API
/// key not valid. Please pass a valid API key."): that is an authentication
/// failure, not a malformed request.
fn refine(error: LlmError) -> LlmError {
    let lower = error.message.to_ascii_lowercase();
    let bad_key = ["api key not valid", "api key expired", "api key invalid"]
        .iter()
        .any(|needle| lower.contains(needle));
    if error.kind == ErrorKind::InvalidRequest && bad_key {
        LlmError {
            kind: ErrorKind::Authentication,
            ..error
        }
    } else {
        error
    }
}

/// Whether Gemini refused a thought signature the conversation carries, or
/// the lack of one ("Corrupted thought signature.", "Function call is
/// missing a `thought_signature`…"): one made
/// for another model, key or deployment (a conversation moved by a fallback
/// or an alias), or damaged on its way through a client.
fn refuses_signatures(error: &LlmError) -> bool {
    let message = error.message.to_ascii_lowercase();
    error.kind == ErrorKind::InvalidRequest
        && (message.contains("thought signature") || message.contains("thought_signature"))
}

/// Takes every thought signature out of `request`'s conversation, so that
/// its calls go with the placeholder that skips Gemini's check, which
/// Google documents for conversations from elsewhere; whether any was.
fn drop_signatures(request: &mut ChatRequest) -> bool {
    let mut dropped = false;
    for part in request
        .messages
        .iter_mut()
        .flat_map(|message| message.content.iter_mut())
    {
        match part {
            ContentPart::ToolCall(call) => dropped |= call.signature.take().is_some(),
            ContentPart::Reasoning(reasoning)
                if reasoning
                    .origin
                    .as_deref()
                    .is_none_or(|origin| origin == gemini::ORIGIN) =>
            {
                dropped |= reasoning.signature.take().is_some();
            }
            _ => {}
        }
    }
    dropped
}

/// `text` with everything but RFC 3986 unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
