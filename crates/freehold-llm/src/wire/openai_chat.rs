//! OpenAI Chat Completions (`POST /v1/chat/completions`), the format most
//! servers speak: OpenAI, vLLM, SGLang, llama.cpp's server, LM Studio,
//! Mistral, Groq, Together, DeepSeek, OpenRouter, Fireworks, Ollama's `/v1`.

use std::collections::HashMap;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, DocumentSource, ErrorKind, ImageSource, LlmError,
    Message, Reasoning, ReasoningEffort, ResponseFormat, Role, StopReason, ToolCall, ToolChoice,
    Usage, text_with_document_notes,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
use crate::http::{context_length_kind, is_context_length_message};
use crate::sse::SseEvent;
use crate::wire::openai_api;
use crate::wire::openai_responses::document_filename;
use crate::wire::text_or::TextOr;

mod serve;
#[cfg(test)]
mod serve_tests;

pub use serve::{
    ChunkEncoder, ErrorBody, ErrorObject, ServeOptions, decode_request, encode_error,
    encode_response, finish_reason_name,
};
pub(crate) use serve::{
    decode_effort, decode_tool_choice, decode_verbosity, end_user, openai_error_message,
    openai_error_parts,
};

/// A request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","function":{"name":…}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether several calls may come in one answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k (an extension vLLM, SGLang and llama.cpp accept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Sampling seed, a signed 64-bit integer in OpenAI's reference (some
    /// clients send -1 for "random").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// The output limit, as most servers name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The output limit, as OpenAI names it for current models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopField>,
    /// Whether to stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Stream options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Structured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Reasoning effort for reasoning models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Arguments for the server's chat template (vLLM, SGLang and llama.cpp
    /// take them). Sent only as `{"enable_thinking": false}`, for a request
    /// that asks for no reasoning, where [`Dialect::enable_thinking_kwarg`]
    /// says so; read from clients for that switch alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<Value>,
    /// End-user id (OpenAI's older field for it; read from clients, never
    /// sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The end user's id, for OpenAI's abuse monitoring (at most 64
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    /// The key that groups requests onto one prompt cache (OpenAI's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// How long the answer's text should be (`low`, `medium`, `high`;
    /// OpenAI's gpt-5 family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    /// The processing tier (OpenAI's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// How many answers to write. Read from clients only, to refuse more
    /// than one by name; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Whether to return the tokens' log probabilities. Read from clients
    /// only, to refuse it by name; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many likely tokens to return at each position, with `logprobs`.
    /// Read from clients only; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// The functions of OpenAI's API before tools. Read from clients only,
    /// to refuse them by name instead of answering without them; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    /// The choice among [`CompletionRequest::functions`]. Read from clients
    /// only; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    /// The kinds of output asked for (`["text", "audio"]`). Read from
    /// clients only, to refuse audio by name; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    /// Spoken output's settings. Read from clients only; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
    /// OpenAI's hosted web search for its search models. Read from clients
    /// only; never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_options: Option<Value>,
}

/// `stop` may be one string or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StopField {
    /// The sequences as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a final chunk carrying usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// A message on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, an array of parts, or null (assistant messages with calls).
    #[serde(default)]
    pub content: Option<WireContent>,
    /// Reasoning text (DeepSeek, vLLM, llama.cpp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Reasoning text, as OpenRouter, LM Studio and Ollama's `/v1` name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A refusal (OpenAI structured outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// Message content: plain text or typed parts (read in one pass, not
/// through serde's copy for `untagged`: see `wire::text_or`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WireContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<WirePart>),
}

impl<'de> Deserialize<'de> for WireContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::read(deserializer, "a string or an array of content parts")? {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(parts) => Self::Parts(parts),
            },
        )
    }
}

/// A typed content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WirePart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL (`https://` or `data:`).
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// A file (a PDF), as OpenAI's API takes it.
    File {
        /// The file.
        file: WireFile,
    },
    /// Anything else (audio…), kept as it came.
    #[serde(untagged)]
    Other(Value),
}

/// `file` of a file part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFile {
    /// Its name (OpenAI requires one with inline bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Its bytes as a `data:` URL (`data:application/pdf;base64,…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// An uploaded file's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// `image_url` of an image part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: WireFunction,
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call in an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// Name and arguments.
    pub function: WireCallFunction,
}

fn function_type() -> String {
    "function".into()
}

/// Name and arguments of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCallFunction {
    /// The tool's name.
    pub name: String,
    /// JSON text of the arguments. Some servers send an object instead;
    /// [`arguments_text`] normalises.
    #[serde(default)]
    pub arguments: Value,
}

/// Reads `null` as the type's default: compatible servers send `null` for
/// fields OpenAI always fills (`"model": null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Arguments as JSON text, whether the server sent text or an object.
pub fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A complete (non-streamed) response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// Response id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub object: String,
    /// Creation time (Unix seconds).
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: u64,
    /// The model that answered.
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    /// The answers (Freehold asks for one).
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

/// One answer of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its index.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// The message.
    pub message: WireMessage,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM: the stop string that ended the answer (a number when a stop
    /// token did); see [`matched_stop_string`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Value>,
    /// SGLang: the same, under its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_stop: Option<Value>,
}

/// A streamed chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    /// Response id, the same on every chunk.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub object: String,
    /// Creation time.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: u64,
    /// The model.
    #[serde(default, deserialize_with = "null_as_default")]
    pub model: String,
    /// Deltas (empty on the usage-only final chunk).
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    /// Usage: on the final chunk with `include_usage`; vLLM sends `null` on
    /// every other chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

/// A delta of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which answer.
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// What is new.
    #[serde(default, deserialize_with = "null_as_default")]
    pub delta: Delta,
    /// Set on the answer's last delta.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM: the stop string that ended the answer, on the last delta; see
    /// [`matched_stop_string`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Value>,
    /// SGLang: the same, under its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_stop: Option<Value>,
}

/// What a chunk adds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// More reasoning (DeepSeek, vLLM, llama.cpp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// More reasoning (OpenRouter, Ollama, LM Studio spell it this way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// A refusal fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A fragment of a streamed tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the answer (Ollama sends 0 for every call).
    #[serde(default, deserialize_with = "null_as_default")]
    pub index: u32,
    /// The id, on the call's first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (first fragment) and argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

/// Name and argument fragment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// The tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The next piece of the argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Usage as OpenAI reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Input tokens, cached included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Cached input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// Reasoning output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek's name for cached input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_hit_tokens: Option<u64>,
}

/// `prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptDetails {
    /// Input served from the cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// `completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionDetails {
    /// Output spent reasoning.
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<&WireUsage> for Usage {
    fn from(wire: &WireUsage) -> Self {
        let cached = wire
            .prompt_tokens_details
            .as_ref()
            .and_then(|details| details.cached_tokens)
            .or(wire.prompt_cache_hit_tokens)
            .unwrap_or(0);
        Usage {
            input_tokens: wire.prompt_tokens,
            cached_input_tokens: cached,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: wire.completion_tokens,
            reasoning_tokens: wire
                .completion_tokens_details
                .as_ref()
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl From<&Usage> for WireUsage {
    fn from(usage: &Usage) -> Self {
        WireUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens(),
            prompt_tokens_details: Some(PromptDetails {
                cached_tokens: Some(usage.cached_input_tokens),
            }),
            completion_tokens_details: Some(CompletionDetails {
                reasoning_tokens: Some(usage.reasoning_tokens),
            }),
            prompt_cache_hit_tokens: None,
        }
    }
}

/// Which field carries the output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_tokens`: what compatible servers read.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: what OpenAI requires for reasoning models.
    MaxCompletionTokens,
}

/// Differences between servers that speak this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The output-limit field.
    pub max_tokens_field: MaxTokensField,
    /// Whether to send `stream_options.include_usage` (a few strict servers
    /// reject unknown fields).
    pub stream_usage: bool,
    /// Where the server counts a request's input tokens, if anywhere.
    pub token_count: TokenCountEndpoint,
    /// Whether a request for no reasoning ([`ReasoningEffort::Off`]) sends
    /// `chat_template_kwargs: {"enable_thinking": false}`, the switch that
    /// the chat templates of models which think unless told not to (Qwen3,
    /// GLM-4.5 and others) read. vLLM, SGLang and llama.cpp's server hand
    /// it to the template (a template without the switch ignores it); a
    /// server that refuses unknown fields would refuse the request, so it
    /// is off unless a preset or the configuration turns it on. Without
    /// it, such a request sends no effort at all: the model's default.
    pub enable_thinking_kwarg: bool,
    /// Whether the server has `GET /health` beside its `/v1` root, which
    /// says whether it can answer (llama.cpp's server: 503 while its model
    /// loads; vLLM and SGLang: an error while the engine is down), asked by
    /// the health probes after the model list.
    pub probe_health: bool,
    /// Whether an assistant message's earlier reasoning is sent back (as
    /// `reasoning_content`, which llama.cpp's and SGLang's servers read, and
    /// `reasoning`, which vLLM's does), for chat templates that show it to
    /// the model: Qwen3's keeps the reasoning of the turns since the last
    /// user message (a chain of tool calls), gpt-oss's that of its last
    /// tool call. Off elsewhere: DeepSeek's API refuses it in input.
    pub reasoning_in_history: bool,
    /// Whether the server is OpenAI's own API (or one that takes what it
    /// takes, as Azure's does): a request for no reasoning asks each model
    /// for its least effort, `xhigh` goes as named, and the settings only
    /// OpenAI reads go too (`prompt_cache_key`, `verbosity`,
    /// `service_tier`, `safety_identifier`; see [`super::openai_api`]). Also read by the
    /// Responses client, and by the Chat Completions client to send a
    /// model's requests with tools through the Responses API once it
    /// refuses reasoning beside them.
    pub openai_api: bool,
    /// The most stop sequences the server takes in one request, `None`
    /// for no limit: the rest are applied to the answer by the client
    /// ([`crate::stop`]). OpenAI, Groq, OpenRouter and vLLM take 4; a
    /// model refused for them (OpenAI's reasoning models take none) is
    /// learned from its refusal.
    pub max_stop_sequences: Option<usize>,
    /// Whether a request for no reasoning sends `reasoning_effort:
    /// "none"` (OpenRouter maps it to each provider's switch, Groq's Qwen
    /// models take it, and the models of either that cannot stop reasoning
    /// or take no effort say so when refused: see
    /// [`openai_api::read_effort_refusal`]). Off: no effort is sent for
    /// no reasoning, which most servers refuse or ignore.
    pub none_for_off: bool,
}

impl Dialect {
    /// The `reasoning_effort` to send for `request`
    /// ([`openai_api::effort_name`]).
    pub fn effort_name(&self, request: &ChatRequest) -> Option<&'static str> {
        openai_api::effort_name(request, self.openai_api, self.none_for_off)
    }
}

/// Where a Chat Completions server counts a request's input tokens without
/// answering it. The protocol has no such endpoint of its own, so each
/// server that has one borrows another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenCountEndpoint {
    /// Nowhere: the caller estimates.
    #[default]
    None,
    /// `POST /tokenize` beside the `/v1` root, as vLLM has it:
    /// `{"model", "messages", "tools", "add_generation_prompt": true}`
    /// answered by `{"count", …}`.
    Tokenize,
    /// `POST {base}/messages/count_tokens`, Anthropic's, as llama.cpp's
    /// `llama-server` has it: the request in the Messages API's shape,
    /// answered by `{"input_tokens"}`.
    MessagesCountTokens,
    /// `POST {base}/responses/input_tokens`, as OpenAI's API has it: the
    /// request in the Responses API's shape.
    ResponsesInputTokens,
}

impl Default for Dialect {
    fn default() -> Self {
        Self {
            max_tokens_field: MaxTokensField::MaxTokens,
            stream_usage: true,
            token_count: TokenCountEndpoint::None,
            enable_thinking_kwarg: false,
            probe_health: false,
            reasoning_in_history: false,
            openai_api: false,
            max_stop_sequences: None,
            none_for_off: false,
        }
    }
}

/// Encodes a request.
pub fn encode_request(request: &ChatRequest, dialect: Dialect, stream: bool) -> CompletionRequest {
    let tools = (!request.tools.is_empty()).then(|| {
        request
            .tools
            .iter()
            .map(|tool| WireTool {
                kind: "function".into(),
                function: WireFunction {
                    name: tool.name.clone(),
                    description: (!tool.description.is_empty()).then(|| tool.description.clone()),
                    parameters: Some(tool.parameters.clone()),
                    strict: tool.strict.then_some(true),
                },
            })
            .collect()
    });
    let tool_choice = tools.as_ref().map(|_| match &request.tool_choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool { name } => json!({"type": "function", "function": {"name": name}}),
    });
    let (max_tokens, max_completion_tokens) = match dialect.max_tokens_field {
        MaxTokensField::MaxTokens => (request.max_tokens, None),
        MaxTokensField::MaxCompletionTokens => (None, request.max_tokens),
    };
    CompletionRequest {
        model: request.model.clone(),
        messages: encode_messages(
            &request.messages,
            dialect
                .reasoning_in_history
                .then_some(request.model.as_str()),
            dialect.openai_api,
        ),
        parallel_tool_calls: tools.as_ref().and(request.parallel_tool_calls),
        tools,
        tool_choice,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        top_k: request.sampling.top_k,
        // A signed integer on the wire: the top bit is dropped, so that
        // equal seeds stay equal.
        seed: request
            .sampling
            .seed
            .map(|seed| i64::try_from(seed & (i64::MAX as u64)).unwrap_or_default()),
        presence_penalty: request.sampling.presence_penalty,
        frequency_penalty: request.sampling.frequency_penalty,
        max_tokens,
        max_completion_tokens,
        stop: (!request.stop.is_empty()).then(|| StopField::Many(request.stop.clone())),
        stream,
        stream_options: (stream && dialect.stream_usage).then_some(StreamOptions {
            include_usage: true,
        }),
        response_format: request.response_format.as_ref().map(encode_response_format),
        reasoning_effort: dialect.effort_name(request).map(str::to_owned),
        chat_template_kwargs: (dialect.enable_thinking_kwarg
            && request.reasoning == Some(ReasoningEffort::Off))
        .then(|| json!({"enable_thinking": false})),
        user: None,
        safety_identifier: dialect
            .openai_api
            .then(|| openai_api::safety_identifier(request))
            .flatten(),
        prompt_cache_key: dialect
            .openai_api
            .then(|| request.cache_key.clone())
            .flatten(),
        verbosity: dialect
            .openai_api
            .then(|| openai_api::verbosity(request).map(str::to_owned))
            .flatten(),
        service_tier: dialect
            .openai_api
            .then(|| openai_api::service_tier(request))
            .flatten(),
        n: None,
        logprobs: None,
        top_logprobs: None,
        functions: None,
        function_call: None,
        modalities: None,
        audio: None,
        web_search_options: None,
    }
}

/// `response_format` for a structured-output request.
pub fn encode_response_format(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => json!({
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict},
        }),
    }
}

/// The wire messages; `reasoning_for`, when earlier reasoning goes back, is
/// the model it goes to ([`reasoning_sent_back`]); `documents`, whether the
/// server reads documents (OpenAI's API: `file` parts), else each is named
/// in the text ([`freehold_protocol::Document::note`]).
fn encode_messages(
    messages: &[Message],
    reasoning_for: Option<&str>,
    documents: bool,
) -> Vec<WireMessage> {
    let mut out = Vec::new();
    for message in messages {
        match message.role {
            Role::System | Role::User => {
                // Tool results inside a user message (as Anthropic-style
                // callers put them) become tool messages, and they must come
                // first: OpenAI requires the tool messages right after the
                // assistant message that made the calls.
                push_tool_results(&message.content, &mut out);
                let has_content = message.content.iter().any(|part| {
                    matches!(
                        part,
                        ContentPart::Text { .. }
                            | ContentPart::Image { .. }
                            | ContentPart::Document(_)
                    )
                });
                if has_content {
                    let role = if message.role == Role::System {
                        "system"
                    } else {
                        "user"
                    };
                    out.push(WireMessage {
                        role: role.into(),
                        content: Some(encode_content(&message.content, documents)),
                        ..WireMessage::default()
                    });
                }
            }
            Role::Assistant => {
                let text = message.text_content();
                let calls: Vec<WireToolCall> = message
                    .tool_calls()
                    .map(|call| WireToolCall {
                        id: call.id.clone(),
                        kind: "function".into(),
                        function: WireCallFunction {
                            name: call.name.clone(),
                            arguments: Value::String(if call.arguments.is_empty() {
                                "{}".into()
                            } else {
                                call.arguments.clone()
                            }),
                        },
                    })
                    .collect();
                // Reasoning goes back only where the dialect says so:
                // DeepSeek refuses `reasoning_content` in input, and
                // OpenAI keeps its reasoning to itself.
                let reasoning =
                    reasoning_for.and_then(|model| reasoning_sent_back(&message.content, model));
                out.push(WireMessage {
                    role: "assistant".into(),
                    content: (!text.is_empty() || calls.is_empty())
                        .then_some(WireContent::Text(text)),
                    reasoning_content: reasoning.clone(),
                    reasoning,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..WireMessage::default()
                });
            }
            Role::Tool => push_tool_results(&message.content, &mut out),
        }
    }
    out
}

/// The reasoning of an assistant message that goes back to `model` on a
/// server whose dialect takes it ([`Dialect::reasoning_in_history`]): its
/// readable reasoning, parts joined by a blank line. `None` when it has
/// none (redacted reasoning is opaque to another server), and for a gpt-oss
/// message with both text and tool calls, which its chat template refuses
/// ("Cannot pass both content and thinking in an assistant message with
/// tool calls"). A gpt-oss model by another name is asked again without
/// ([`strip_reasoning_beside_text`]).
pub fn reasoning_sent_back(parts: &[ContentPart], model: &str) -> Option<String> {
    if has_text_and_calls(parts) && is_gpt_oss(model) {
        return None;
    }
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Reasoning(reasoning) if !reasoning.redacted => {
                Some(reasoning.text.as_str())
            }
            _ => None,
        })
        .filter(|text| !text.trim().is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n\n"))
}

/// Whether an assistant message has both text and tool calls.
fn has_text_and_calls(parts: &[ContentPart]) -> bool {
    let calls = parts
        .iter()
        .any(|part| matches!(part, ContentPart::ToolCall(_)));
    calls
        && parts
            .iter()
            .any(|part| matches!(part, ContentPart::Text { text } if !text.is_empty()))
}

/// Whether `model` names gpt-oss (`openai/gpt-oss-120b`, `gpt-oss:20b`,
/// a GGUF's `gpt_oss` file name).
fn is_gpt_oss(model: &str) -> bool {
    let model = model.to_ascii_lowercase();
    ["gpt-oss", "gpt_oss", "gptoss"]
        .iter()
        .any(|name| model.contains(name))
}

/// Whether `error` is gpt-oss's chat template refusing an assistant
/// message's reasoning beside its text and tool calls.
pub fn refuses_reasoning_beside_text(error: &LlmError) -> bool {
    error.kind == ErrorKind::InvalidRequest
        && error
            .message
            .to_ascii_lowercase()
            .contains(crate::http::GPT_OSS_REASONING_REFUSAL)
}

/// Removes the reasoning of every assistant message with both text and tool
/// calls, for a second try after [`refuses_reasoning_beside_text`]; whether
/// any was removed.
pub fn strip_reasoning_beside_text(messages: &mut [Message]) -> bool {
    let mut stripped = false;
    for message in messages {
        if message.role == Role::Assistant && has_text_and_calls(&message.content) {
            let before = message.content.len();
            message
                .content
                .retain(|part| !matches!(part, ContentPart::Reasoning(_)));
            stripped |= message.content.len() != before;
        }
    }
    stripped
}

fn push_tool_results(parts: &[ContentPart], out: &mut Vec<WireMessage>) {
    for part in parts {
        if let ContentPart::ToolResult(result) = part {
            out.push(WireMessage {
                role: "tool".into(),
                content: Some(WireContent::Text(result.content.clone())),
                tool_call_id: Some(result.call_id.clone()),
                ..WireMessage::default()
            });
        }
    }
}

fn encode_content(parts: &[ContentPart], documents: bool) -> WireContent {
    // A document goes as a `file` part where the server reads them and its
    // bytes are at hand (Chat Completions takes no file URL); else it is
    // named in the text.
    let as_file = |part: &ContentPart| match part {
        ContentPart::Document(document) if documents => match &document.source {
            DocumentSource::Base64 { media_type, data } => Some(WireFile {
                filename: Some(document_filename(document)),
                file_data: Some(format!("data:{media_type};base64,{data}")),
                file_id: None,
            }),
            DocumentSource::Url { .. } => None,
        },
        _ => None,
    };
    let needs_parts = parts
        .iter()
        .any(|part| matches!(part, ContentPart::Image { .. }) || as_file(part).is_some());
    if !needs_parts {
        return WireContent::Text(text_with_document_notes(parts));
    }
    WireContent::Parts(
        parts
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } => Some(WirePart::Text { text: text.clone() }),
                ContentPart::Image { source } => Some(WirePart::ImageUrl {
                    image_url: ImageUrl {
                        url: image_url(source),
                        detail: None,
                    },
                }),
                ContentPart::Document(document) => Some(match as_file(part) {
                    Some(file) => WirePart::File { file },
                    None => WirePart::Text {
                        text: document.note(),
                    },
                }),
                _ => None,
            })
            .collect(),
    )
}

/// An image as a URL, turning inline bytes into a `data:` URL.
pub fn image_url(source: &ImageSource) -> String {
    match source {
        ImageSource::Url { url } => url.clone(),
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

/// Maps `finish_reason`, with the stop string that ended the answer where
/// the server names it ([`matched_stop_string`]): OpenAI's `stop` means
/// both "finished" and "reached a stop sequence", and only vLLM and SGLang
/// say which.
pub fn stop_reason(finish_reason: &str, matched_stop: Option<&str>) -> StopReason {
    match finish_reason {
        "stop" if matched_stop.is_some() => {
            StopReason::StopSequence(matched_stop.map(str::to_owned))
        }
        "stop" | "eos" | "end_turn" => StopReason::EndTurn,
        "length" | "max_tokens" => StopReason::MaxTokens,
        "tool_calls" | "function_call" | "tool_use" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

/// The stop sequence a choice says ended it: vLLM's `stop_reason` or
/// SGLang's `matched_stop` when it is text and one of `sent_stops`, the
/// request's. A number is a stop token's id, and text of the server's own
/// (SGLang adds its chat template's stop strings to the request's) is the
/// model's end of turn, no stop sequence of the client's; `null` is an end
/// of any other kind.
pub fn matched_stop_string<'a>(
    vllm_stop_reason: &'a Option<Value>,
    sglang_matched_stop: &'a Option<Value>,
    sent_stops: &[String],
) -> Option<&'a str> {
    [vllm_stop_reason, sglang_matched_stop]
        .into_iter()
        .filter_map(|named| named.as_ref().and_then(Value::as_str))
        .find(|named| sent_stops.iter().any(|sent| sent == named))
}

/// Decodes a complete response to a request sent with `sent_stops` as its
/// stop sequences (see [`matched_stop_string`]).
///
/// # Errors
/// A response without choices.
pub fn decode_response(
    provider: &str,
    response: CompletionResponse,
    sent_stops: &[String],
) -> Result<ChatResponse, LlmError> {
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(LlmError::new(
            ErrorKind::Server,
            provider,
            "the response has no choices",
        ));
    };
    let message = choice.message;
    let mut content = Vec::new();
    if let Some(reasoning) = message
        .reasoning_content
        .or(message.reasoning)
        .filter(|text| !text.is_empty())
    {
        content.push(ContentPart::Reasoning(Reasoning {
            text: reasoning,
            ..Reasoning::default()
        }));
    }
    let text = match message.content {
        Some(WireContent::Text(text)) => text,
        Some(WireContent::Parts(parts)) => parts
            .into_iter()
            .filter_map(|part| match part {
                WirePart::Text { text } => Some(text),
                _ => None,
            })
            .collect(),
        None => String::new(),
    };
    // A refusal (structured outputs) comes instead of the content: its
    // words are the answer's text, and the answer ends as a refusal.
    let refusal = message.refusal.filter(|text| !text.is_empty());
    let refused = text.is_empty() && refusal.is_some();
    let text = if refused {
        refusal.unwrap_or_default()
    } else {
        text
    };
    if !text.is_empty() {
        content.push(ContentPart::Text { text });
    }
    for call in message.tool_calls.unwrap_or_default() {
        content.push(ContentPart::ToolCall(ToolCall::new(
            call.id,
            call.function.name,
            arguments_text(&call.function.arguments),
        )));
    }
    let has_calls = content
        .iter()
        .any(|part| matches!(part, ContentPart::ToolCall(_)));
    let matched_stop = matched_stop_string(&choice.stop_reason, &choice.matched_stop, sent_stops);
    let stop_reason = match choice
        .finish_reason
        .as_deref()
        .map(|reason| stop_reason(reason, matched_stop))
    {
        Some(StopReason::EndTurn) | None if refused => StopReason::Refusal,
        // Calls to run matter more than where the text stopped (vLLM
        // finishes a forced tool call with `stop`).
        Some(StopReason::EndTurn | StopReason::StopSequence(_)) | None if has_calls => {
            StopReason::ToolUse
        }
        Some(reason) => reason,
        None => StopReason::EndTurn,
    };
    Ok(ChatResponse {
        id: (!response.id.is_empty()).then_some(response.id),
        model: (!response.model.is_empty()).then_some(response.model),
        message: Message {
            role: Role::Assistant,
            content,
        },
        usage: response.usage.as_ref().map(Usage::from).unwrap_or_default(),
        stop_reason,
        timings: None,
        context_edits: Vec::new(),
        refusal_details: None,
    })
}

/// Decodes a Chat Completions SSE stream.
#[derive(Debug)]
pub struct ChunkDecoder {
    provider: String,
    /// The stop sequences the request was sent with, the only ones a
    /// server's named stop string can be ([`matched_stop_string`]).
    sent_stops: Vec<String>,
    /// The wire index of each open call → (our index, its id).
    calls: HashMap<u32, (u32, String)>,
    /// Whether the answer was a refusal (`delta.refusal`): it then ends as
    /// one, not as an ordinary `stop`.
    refused: bool,
}

impl ChunkDecoder {
    /// A decoder for `provider`'s stream.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            sent_stops: Vec::new(),
            refused: false,
            calls: HashMap::new(),
        }
    }

    /// The stop sequences the request was sent with: a stop string the
    /// server names is the answer's stop sequence only when it is one of
    /// them.
    pub fn with_sent_stops(mut self, stops: Vec<String>) -> Self {
        self.sent_stops = stops;
        self
    }

    fn tool_delta(&mut self, delta: ToolCallDelta, out: &mut StreamAssembler) {
        let function = delta.function.unwrap_or_default();
        let id = delta.id.filter(|id| !id.is_empty());
        let open = self.calls.get(&delta.index).cloned();
        // A new id *with a name* at a known index is a new call: Ollama
        // numbers every parallel call 0. Some servers vary the id on
        // continuation chunks; without a name those continue the same call.
        let has_name = function
            .name
            .as_deref()
            .is_some_and(|name| !name.is_empty());
        let starts_new = match (&open, &id) {
            (None, _) => true,
            (Some((_, open_id)), Some(id)) => open_id != id && has_name,
            (Some(_), None) => false,
        };
        let index = if starts_new {
            if let Some((previous, _)) = open {
                out.tool_end(previous, None);
            }
            let id = id.unwrap_or_else(generated_call_id);
            let index = out.tool_start(&id, function.name.as_deref().unwrap_or_default());
            self.calls.insert(delta.index, (index, id));
            index
        } else {
            open.map(|(index, _)| index).unwrap_or_default()
        };
        if let Some(arguments) = function.arguments {
            out.tool_args(index, &arguments);
        }
    }
}

/// An id for a call whose server sent none.
pub fn generated_call_id() -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("call_{suffix}")
}

impl ChunkDecoder {
    /// A chunk read through a `Value`: an error the server sent in the
    /// stream, or text that is not a chunk, each with its own message.
    fn decode_slowly(&self, data: &str) -> Result<CompletionChunk, LlmError> {
        let value: Value = serde_json::from_str(data).map_err(|error| {
            LlmError::new(
                ErrorKind::Server,
                self.provider.clone(),
                format!("invalid stream chunk ({error}): {}", preview(data)),
            )
        })?;
        if let Some(error) = value.get("error") {
            return Err(stream_error(&self.provider, error));
        }
        serde_json::from_value(value).map_err(|error| {
            LlmError::new(
                ErrorKind::Server,
                self.provider.clone(),
                format!("unexpected stream chunk ({error}): {}", preview(data)),
            )
        })
    }
}

impl WireDecoder<SseEvent> for ChunkDecoder {
    fn decode(&mut self, event: SseEvent, out: &mut StreamAssembler) -> Result<Decoded, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Decoded::Done);
        }
        if data.is_empty() {
            return Ok(Decoded::More);
        }
        if event.event == "error" {
            // An error event's data is the error itself, or wraps it.
            let value: Value =
                serde_json::from_str(data).unwrap_or_else(|_| json!({"message": data}));
            return Err(stream_error(
                &self.provider,
                value.get("error").unwrap_or(&value),
            ));
        }
        // Most chunks are straight into the typed form. Only text that may
        // hold an `"error"` key (a quote inside a JSON string is escaped,
        // so content cannot fake one) goes through a `Value` first to look.
        let chunk: CompletionChunk = match serde_json::from_str(data) {
            Ok(chunk) if !data.contains("\"error\"") => chunk,
            _ => self.decode_slowly(data)?,
        };
        out.start(
            (!chunk.id.is_empty()).then(|| chunk.id.clone()),
            (!chunk.model.is_empty()).then(|| chunk.model.clone()),
        );
        if let Some(usage) = &chunk.usage {
            out.usage(Usage::from(usage));
        }
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            let delta = choice.delta;
            if let Some(reasoning) = delta
                .reasoning_content
                .as_deref()
                .or(delta.reasoning.as_deref())
            {
                out.reasoning(reasoning);
            }
            if let Some(text) = &delta.content {
                out.text(text);
            }
            if let Some(refusal) = delta.refusal.as_deref().filter(|text| !text.is_empty()) {
                out.refusal(refusal);
                self.refused = true;
            }
            for call in delta.tool_calls.unwrap_or_default() {
                self.tool_delta(call, out);
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                let matched_stop = matched_stop_string(
                    &choice.stop_reason,
                    &choice.matched_stop,
                    &self.sent_stops,
                );
                // With calls made, [`StreamAssembler::finish`] makes it
                // `ToolUse`.
                out.stop(match stop_reason(reason, matched_stop) {
                    StopReason::EndTurn if self.refused => StopReason::Refusal,
                    reason => reason,
                });
            }
        }
        Ok(Decoded::More)
    }

    fn truncated(&self) -> LlmError {
        LlmError::new(
            ErrorKind::Connection,
            self.provider.clone(),
            "the stream ended before a finish_reason",
        )
    }
}

/// An `error` object sent inside a stream.
fn stream_error(provider: &str, error: &Value) -> LlmError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..600).contains(code));
    // OpenAI's own codes are words, and say what the status would.
    let named = error.get("code").and_then(Value::as_str);
    let kind = if is_context_length_message(&message) {
        context_length_kind(&message)
    } else {
        match (code, named) {
            (_, Some("context_length_exceeded")) => ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None,
            },
            (Some(429), _) | (_, Some("rate_limit_exceeded")) => {
                ErrorKind::RateLimited { retry_after: None }
            }
            (Some(503) | Some(529), _) | (_, Some("server_is_overloaded")) => ErrorKind::Overloaded,
            (Some(400), _) => ErrorKind::InvalidRequest,
            _ => ErrorKind::Server,
        }
    };
    // vLLM sends the HTTP status it would have answered as `code`.
    let error = LlmError::new(kind, provider, message);
    match code {
        Some(code) => error.with_status(code),
        None => error,
    }
}

fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod stream_error_tests {
    use serde_json::json;

    use super::*;

    /// Errors sent inside a stream are read by OpenAI's worded codes as
    /// well as by the numeric statuses vLLM sends.
    #[test]
    fn worded_and_numeric_codes_are_both_read() {
        let kind = |error: Value| stream_error("p", &error).kind;
        let cases = [
            (
                json!({"message": "prompt too long", "code": "context_length_exceeded"}),
                ErrorKind::ContextLengthExceeded {
                    needed: None,
                    allowed: None,
                },
            ),
            (
                json!({"message": "slow down", "code": "rate_limit_exceeded"}),
                ErrorKind::RateLimited { retry_after: None },
            ),
            (
                json!({"message": "busy", "code": "server_is_overloaded"}),
                ErrorKind::Overloaded,
            ),
            (
                json!({"message": "slow down", "code": 429}),
                ErrorKind::RateLimited { retry_after: None },
            ),
            (
                json!({"message": "bad", "code": 400}),
                ErrorKind::InvalidRequest,
            ),
            (
                json!({"message": "broke", "code": "whatever"}),
                ErrorKind::Server,
            ),
            (json!({"message": "broke"}), ErrorKind::Server),
        ];
        for (error, expected) in cases {
            assert_eq!(kind(error.clone()), expected, "{error}");
        }
    }
}
