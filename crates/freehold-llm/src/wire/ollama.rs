//! Ollama's native API: `POST /api/chat` (NDJSON when streaming),
//! `GET /api/tags` and `POST /api/show`.
//!
//! Ollama differs from the OpenAI-style protocols in ways that matter:
//! - Its context window is a *request option* (`options.num_ctx`) with a
//!   small default (2048 or 4096 tokens, depending on the version), and a
//!   prompt longer than it is silently cut from the front. [`size_context`]
//!   sizes it from what each request needs, under a [`NumCtxPolicy`], and
//!   bounds the answer (`options.num_predict`) to the room left, so that
//!   Ollama never shifts the context while generating either.
//! - Tool calls arrive whole (arguments as a JSON object), possibly several
//!   in one line, and without ids: ids are generated.
//! - Images are base64 strings in a per-message `images` array; there are no
//!   image URLs.
//! - There is no `tool_choice`: [`ToolChoice::None`] sends no tools, and
//!   [`ToolChoice::Required`] or a named tool cannot be enforced (a named
//!   tool is sent alone, which is the most Ollama can do).
//! - Reasoning ("thinking") is plain text in `message.thinking`, without a
//!   signature; it is sent back the same way.

use std::collections::HashMap;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, ImageSource, LlmError, Message, Reasoning,
    ReasoningEffort, ResponseFormat, Role, StopReason, ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
use crate::http::{context_length_kind, is_context_length_message, max_tokens_overflow_words};
use crate::wire::openai_chat::generated_call_id;

/// Where a local Ollama listens unless told otherwise.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

// ---------------------------------------------------------------------------
// Context sizing.
// ---------------------------------------------------------------------------

/// How [`size_context`] sizes `options.num_ctx` and `options.num_predict`.
///
/// Every request carries a `num_ctx` large enough for its estimated prompt
/// plus its answer, because Ollama otherwise loads the model with a small
/// default context and silently drops the start of longer prompts (the system
/// prompt and tool definitions first), which is the most common way agents
/// fail on local models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumCtxPolicy {
    /// The smallest context ever requested (default 8192), so that short
    /// conversations do not reload the model at every size step.
    pub min: u32,
    /// The largest context requested when the model's trained context is
    /// unknown (default 131072). When `/api/show` reports the model's
    /// context, that is the limit instead.
    pub max: u32,
    /// The most answer tokens allowed when the request sets no `max_tokens`
    /// (default 4096). Less is allowed when the prompt leaves less room in
    /// the context, down to [`MIN_ANSWER_TOKENS`].
    pub default_output: u32,
}

impl NumCtxPolicy {
    /// The most `num_ctx` may be: the model's trained context
    /// (`model_context`, from `/api/show`), else [`NumCtxPolicy::max`].
    pub fn limit(&self, model_context: Option<u32>) -> u32 {
        model_context
            .filter(|context| *context > 0)
            .unwrap_or(self.max)
    }
}

impl Default for NumCtxPolicy {
    fn default() -> Self {
        Self {
            min: 8_192,
            max: 131_072,
            default_output: 4_096,
        }
    }
}

/// The least room for the answer a request without `max_tokens` must leave
/// in the context (or [`NumCtxPolicy::default_output`], when that is
/// smaller): a prompt leaving less fails with [`ContextOverflow`] rather than
/// being sent for an answer cut off after a few words.
pub const MIN_ANSWER_TOKENS: u32 = 256;

/// The estimated prompt is multiplied by `INPUT_MARGIN_NUM / INPUT_MARGIN_DEN`
/// (×1.25): [`ChatRequest::estimated_input_tokens`] counts about four bytes a
/// token, and code, non-English text and chat templates cost more than that.
const INPUT_MARGIN_NUM: u64 = 5;
const INPUT_MARGIN_DEN: u64 = 4;

/// A request that does not fit the model's context, found before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextOverflow {
    /// Tokens the request needs: estimated prompt with its margin plus the
    /// answer's room (`max_tokens` when the request sets it, else the
    /// smallest room accepted, [`MIN_ANSWER_TOKENS`]).
    pub needed: u64,
    /// Tokens the model (or the policy's cap) allows.
    pub allowed: u64,
    /// The request's `max_tokens`, when it set one.
    pub max_tokens: Option<u64>,
}

impl std::error::Error for ContextOverflow {}

impl std::fmt::Display for ContextOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (needed, allowed) = (self.needed, self.allowed);
        let prompt = self
            .max_tokens
            .and_then(|answer| Some((needed.checked_sub(answer)?, answer)));
        match prompt {
            // The prompt fits and the answer's room does not: in Anthropic's
            // words, which Claude Code answers by asking again with a
            // smaller max_tokens (compacting would not help).
            Some((prompt, answer)) if prompt <= allowed => write!(
                f,
                "{} (the input length is an estimate with a 25% margin)",
                max_tokens_overflow_words(prompt, answer, allowed)
            ),
            _ => write!(
                f,
                "the request needs about {needed} tokens (its estimated prompt with a 25% margin, \
                 plus room for the answer) but the context allows at most {allowed}"
            ),
        }
    }
}

impl ContextOverflow {
    /// The matching [`ErrorKind::ContextLengthExceeded`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::ContextLengthExceeded {
            needed: Some(self.needed),
            allowed: Some(self.allowed),
        }
    }
}

/// The context options sent with a request, from [`size_context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextSize {
    /// `options.num_ctx`: the context window to load the model with.
    pub num_ctx: u32,
    /// `options.num_predict`: the most tokens to generate, which always fits
    /// in `num_ctx` after the (estimated) prompt, so that Ollama never shifts
    /// the context (silently dropping its start) while answering.
    pub num_predict: u32,
}

/// The `num_ctx` and `num_predict` to send with `request`.
///
/// The prompt needs its estimate ×1.25. The limit is the model's trained
/// context (`model_context`, from `/api/show`) or, when that is unknown,
/// [`NumCtxPolicy::max`].
/// - With `max_tokens`, the answer gets exactly that, and prompt plus answer
///   must fit the limit.
/// - Without, the answer gets [`NumCtxPolicy::default_output`] or whatever
///   room the prompt leaves under the limit, if less; the prompt must leave
///   at least [`MIN_ANSWER_TOKENS`] (or `default_output`, if smaller).
///
/// `num_ctx` is prompt plus answer rounded up to the next power of two, at
/// least [`NumCtxPolicy::min`] and at most the limit.
///
/// # Errors
/// [`ContextOverflow`] when the request does not fit that limit: sending it
/// anyway would let Ollama truncate the prompt silently.
pub fn size_context(
    request: &ChatRequest,
    policy: &NumCtxPolicy,
    model_context: Option<u32>,
) -> Result<ContextSize, ContextOverflow> {
    // Ollama's models read no documents: each goes as a line of text.
    let input = request
        .estimated_input_tokens_as_notes()
        .saturating_mul(INPUT_MARGIN_NUM)
        .div_ceil(INPUT_MARGIN_DEN);
    let allowed = u64::from(policy.limit(model_context));
    let output = match request.max_tokens {
        Some(max_tokens) => {
            let needed = input.saturating_add(u64::from(max_tokens));
            if needed > allowed {
                return Err(ContextOverflow {
                    needed,
                    allowed,
                    max_tokens: Some(u64::from(max_tokens)),
                });
            }
            u64::from(max_tokens)
        }
        None => {
            let floor = u64::from(MIN_ANSWER_TOKENS.min(policy.default_output));
            let room = allowed.saturating_sub(input);
            if input > allowed || room < floor {
                return Err(ContextOverflow {
                    needed: input.saturating_add(floor),
                    allowed,
                    max_tokens: None,
                });
            }
            room.min(u64::from(policy.default_output))
        }
    };
    let needed = input.saturating_add(output);
    // Powers of two, not finer steps: Ollama reloads the model (and
    // reallocates its KV cache) whenever `num_ctx` changes, which takes
    // seconds to minutes on a local machine. Doubling buckets mean a
    // conversation growing from 8k to 32k tokens changes size twice (16k,
    // 32k) instead of at every 2048-token step, for at most twice the memory
    // the request strictly needs, and never more than the limit.
    let bucket = needed.checked_next_power_of_two().unwrap_or(u64::MAX);
    let num_ctx = bucket.max(u64::from(policy.min)).min(allowed);
    // `allowed` came from a u32 and `output` is at most a u32 (`max_tokens`
    // or at most `default_output`), so neither saturates.
    Ok(ContextSize {
        num_ctx: u32::try_from(num_ctx).unwrap_or(u32::MAX),
        num_predict: u32::try_from(output).unwrap_or(u32::MAX),
    })
}

// ---------------------------------------------------------------------------
// Wire types.
// ---------------------------------------------------------------------------

/// A `POST /api/chat` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireChatRequest {
    /// The model (`qwen2.5-coder:7b`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// Structured output: `"json"` or a JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// Runtime and sampling options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<WireOptions>,
    /// Whether to stream; Ollama streams unless told `false`, so it is
    /// always sent.
    #[serde(default = "default_stream")]
    pub stream: bool,
    /// How long the model stays loaded after the request (`"5m"`, `0`, `-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAlive>,
    /// Whether the model should think (`true`/`false`, or a level such as
    /// `"high"` for models that take one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Think>,
    /// Whether Ollama may drop the start of a prompt longer than `num_ctx`
    /// (its default). Always sent as `false`: the context is sized for the
    /// request, so a prompt that still does not fit (the size is an
    /// estimate) must be an error, not a conversation silently cut.
    /// Servers older than the field ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

fn default_stream() -> bool {
    true
}

/// `keep_alive`: a duration string or a number of seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeepAlive {
    /// A Go duration (`"5m"`, `"1h"`, `"-1"`).
    Duration(String),
    /// Seconds (negative: forever).
    Seconds(i64),
}

/// `think`: on/off, or a level for models that take one (gpt-oss).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Think {
    /// Thinking on or off.
    Enabled(bool),
    /// `"low"`, `"medium"` or `"high"`.
    Level(String),
}

/// `options` of a request. Only the fields Freehold sets are typed; the
/// others (`repeat_penalty`, `min_p`…) are kept in `other`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireOptions {
    /// The context window to load the model with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u32>,
    /// The most tokens to generate (`-1`: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Every other option, as sent.
    #[serde(flatten, default)]
    pub other: Map<String, Value>,
}

/// A message, in requests and in answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// `system`, `user`, `assistant` or `tool`.
    #[serde(default)]
    pub role: String,
    /// The text (empty on messages that only call tools).
    #[serde(default, deserialize_with = "null_as_default")]
    pub content: String,
    /// Reasoning text of thinking models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Base64-encoded images (no `data:` prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// The tool whose result a `tool` message carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The call a `tool` message answers (newer servers; older ones ignore
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool call: whole, with its arguments as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call's id: absent from most servers' answers (Freehold then
    /// generates one); sent back so that servers that read it can pair
    /// results with calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name and arguments.
    pub function: WireFunctionCall,
}

/// Name and arguments of a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireFunctionCall {
    /// The call's position in the answer (newer servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The tool's name.
    pub name: String,
    /// The arguments: a JSON object (some proxies send JSON text instead).
    #[serde(default)]
    pub arguments: Value,
}

/// A tool definition (the OpenAI shape).
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
}

/// One line of a streamed answer, or a whole non-streamed answer: the same
/// shape, the last (or only) one with `done: true` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireChatResponse {
    /// The model answering.
    #[serde(default)]
    pub model: String,
    /// When this line was produced (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// What is new (the whole message when not streaming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<WireMessage>,
    /// Whether the answer is complete.
    #[serde(default)]
    pub done: bool,
    /// Why it ended: `stop`, `length`, `load`, `unload`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Nanoseconds spent on the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Nanoseconds spent loading the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    /// Nanoseconds spent reading the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    /// Generated tokens (thinking included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    /// Nanoseconds spent generating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
}

/// `GET /api/tags`: the models pulled on the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagsResponse {
    /// The models.
    #[serde(default, deserialize_with = "null_as_default")]
    pub models: Vec<TagModel>,
}

/// One model of [`TagsResponse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagModel {
    /// Its name (`llama3.2:latest`).
    #[serde(default)]
    pub name: String,
    /// Its name again (newer servers).
    #[serde(default)]
    pub model: String,
    /// Last modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
    /// Size on disk in bytes.
    #[serde(default)]
    pub size: u64,
    /// Content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Family, size and quantisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
}

/// `details` of a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDetails {
    /// The model it was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_model: Option<String>,
    /// `gguf`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `llama`, `qwen2`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Every family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families: Option<Vec<String>>,
    /// `7.6B`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    /// `Q4_K_M`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_level: Option<String>,
}

/// `POST /api/show` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowRequest {
    /// The model.
    pub model: String,
}

/// `POST /api/show` answer (the fields Freehold reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowResponse {
    /// GGUF metadata: `general.architecture`, `<arch>.context_length`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_info: Option<Map<String, Value>>,
    /// Family, size and quantisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
    /// `completion`, `tools`, `vision`, `thinking`… (newer servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// The Modelfile's parameters, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
}

/// What `/api/show` says about a model that changes how it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelFacts {
    /// The context it was trained with ([`ShowResponse::context_length`]).
    pub context_length: Option<u32>,
    /// Whether it can think: `capabilities` lists `thinking`. `None` when
    /// the server lists no capabilities (older servers).
    pub can_think: Option<bool>,
    /// Whether its `think` takes a level (`"low"`…`"high"`) instead of a
    /// boolean: gpt-oss, the one family Ollama lets (and needs to) choose
    /// its effort. Ollama refuses a level for any other model.
    pub takes_think_level: bool,
}

impl ModelFacts {
    /// The `think` to send for `effort` (the request's reasoning): none for a
    /// model that cannot think (Ollama refuses `think: true` with a 400 there,
    /// and clients such as Claude Code ask for thinking whatever the model),
    /// the effort's level for gpt-oss (whose least is `low`: it cannot be
    /// turned off), else `true`, or `false` for [`ReasoningEffort::Off`]
    /// (Ollama's thinking models think unless told not to).
    pub fn think(&self, effort: Option<ReasoningEffort>) -> Option<Think> {
        let effort = effort?;
        if self.can_think == Some(false) {
            return None;
        }
        if self.takes_think_level {
            let level = match effort {
                ReasoningEffort::Off | ReasoningEffort::Minimal | ReasoningEffort::Low => "low",
                ReasoningEffort::Medium => "medium",
                ReasoningEffort::High => "high",
            };
            return Some(Think::Level(level.to_owned()));
        }
        Some(Think::Enabled(effort != ReasoningEffort::Off))
    }
}

impl ShowResponse {
    /// What changes how the model is asked.
    pub fn facts(&self) -> ModelFacts {
        let architecture = self
            .model_info
            .as_ref()
            .and_then(|info| info.get("general.architecture"))
            .and_then(Value::as_str);
        let family = self
            .details
            .as_ref()
            .and_then(|details| details.family.as_deref());
        ModelFacts {
            context_length: self.context_length(),
            can_think: self
                .capabilities
                .as_ref()
                .map(|capabilities| capabilities.iter().any(|c| c == "thinking")),
            takes_think_level: [architecture, family].contains(&Some("gptoss")),
        }
    }

    /// The context the model was trained with: `<arch>.context_length`,
    /// where `<arch>` is `general.architecture`, else any
    /// `*.context_length` entry.
    pub fn context_length(&self) -> Option<u32> {
        let info = self.model_info.as_ref()?;
        let as_u32 = |value: &Value| value.as_u64().and_then(|n| u32::try_from(n).ok());
        let by_arch = info
            .get("general.architecture")
            .and_then(Value::as_str)
            .and_then(|arch| info.get(&format!("{arch}.context_length")))
            .and_then(as_u32);
        by_arch.or_else(|| {
            info.iter()
                .filter(|(key, _)| key.ends_with(".context_length"))
                .find_map(|(_, value)| as_u32(value))
        })
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------

/// A request Ollama cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An image given by URL: Ollama only takes image bytes.
    #[error(
        "Ollama takes images only as base64 bytes, not by URL ({url}); download the image and \
         send it as base64"
    )]
    ImageUrl {
        /// The URL, shortened.
        url: String,
    },
}

/// Encodes a request with the given context options (from
/// [`size_context`]): `options.num_ctx` and `options.num_predict`.
/// `keep_alive` is left unset: it is a client setting.
///
/// # Errors
/// [`EncodeError::ImageUrl`] for an image given by `https://` URL (`data:`
/// URLs are decoded into base64).
pub fn encode_request(
    request: &ChatRequest,
    size: ContextSize,
    stream: bool,
) -> Result<WireChatRequest, EncodeError> {
    let tools: Vec<WireTool> = match &request.tool_choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Auto | ToolChoice::Required => request.tools.iter().map(encode_tool).collect(),
        // Ollama cannot force a call; offering only the named tool is the
        // closest it gets.
        ToolChoice::Tool { name } => request
            .tools
            .iter()
            .filter(|tool| &tool.name == name)
            .map(encode_tool)
            .collect(),
    };
    let sampling = &request.sampling;
    let options = WireOptions {
        num_ctx: Some(size.num_ctx),
        num_predict: Some(i64::from(size.num_predict)),
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        // Ollama's seed is a signed integer; the top bit is dropped.
        seed: sampling
            .seed
            .map(|seed| i64::try_from(seed & (i64::MAX as u64)).unwrap_or_default()),
        presence_penalty: sampling.presence_penalty,
        frequency_penalty: sampling.frequency_penalty,
        stop: (!request.stop.is_empty()).then(|| request.stop.clone()),
        other: Map::new(),
    };
    Ok(WireChatRequest {
        model: request.model.clone(),
        messages: encode_messages(&request.messages)?,
        tools: (!tools.is_empty()).then_some(tools),
        format: request.response_format.as_ref().map(encode_format),
        options: Some(options),
        stream,
        keep_alive: None,
        // As for a server that lists no capabilities; the client narrows it
        // once the model's facts are known.
        think: ModelFacts::default().think(request.reasoning),
        truncate: Some(false),
    })
}

fn encode_tool(tool: &ToolSpec) -> WireTool {
    WireTool {
        kind: "function".into(),
        function: WireFunction {
            name: tool.name.clone(),
            description: (!tool.description.is_empty()).then(|| tool.description.clone()),
            parameters: Some(tool.parameters.clone()),
        },
    }
}

/// `format` for a structured-output request: `"json"` or the schema itself.
pub fn encode_format(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::JsonObject => Value::String("json".into()),
        ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
    }
}

fn encode_messages(messages: &[Message]) -> Result<Vec<WireMessage>, EncodeError> {
    // Ollama names the tool in a result message; Freehold's results only
    // carry the call id, so remember each call's tool.
    let mut tool_names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for message in messages {
        match message.role {
            Role::System | Role::User => {
                // Tool results inside a user message (as Anthropic-style
                // callers put them) become tool messages first: they answer
                // the preceding assistant calls.
                push_tool_results(&message.content, &tool_names, &mut out);
                let images = encode_images(&message.content)?;
                // Ollama's models read no documents: each is named.
                let text = message.text_with_document_notes();
                let only_results = message
                    .content
                    .iter()
                    .all(|part| matches!(part, ContentPart::ToolResult(_)));
                if message.content.is_empty() || !only_results {
                    out.push(WireMessage {
                        role: if message.role == Role::System {
                            "system"
                        } else {
                            "user"
                        }
                        .into(),
                        content: text,
                        images: (!images.is_empty()).then_some(images),
                        ..WireMessage::default()
                    });
                }
            }
            Role::Assistant => {
                let thinking: String = message
                    .content
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Reasoning(reasoning) => Some(reasoning.text.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<WireToolCall> = message
                    .tool_calls()
                    .map(|call| {
                        tool_names.insert(call.id.as_str(), call.name.as_str());
                        WireToolCall {
                            id: (!call.id.is_empty()).then(|| call.id.clone()),
                            function: WireFunctionCall {
                                index: None,
                                name: call.name.clone(),
                                arguments: arguments_object(&call.arguments),
                            },
                        }
                    })
                    .collect();
                out.push(WireMessage {
                    role: "assistant".into(),
                    content: message.text_content(),
                    thinking: (!thinking.is_empty()).then_some(thinking),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..WireMessage::default()
                });
            }
            Role::Tool => push_tool_results(&message.content, &tool_names, &mut out),
        }
    }
    Ok(out)
}

fn push_tool_results(
    parts: &[ContentPart],
    tool_names: &HashMap<&str, &str>,
    out: &mut Vec<WireMessage>,
) {
    for part in parts {
        if let ContentPart::ToolResult(result) = part {
            out.push(WireMessage {
                role: "tool".into(),
                content: result.content.clone(),
                tool_name: tool_names
                    .get(result.call_id.as_str())
                    .map(|name| (*name).to_owned()),
                tool_call_id: (!result.call_id.is_empty()).then(|| result.call_id.clone()),
                ..WireMessage::default()
            });
        }
    }
}

/// Ollama wants call arguments as an object. Text that is not a JSON object
/// (the model produced invalid JSON on an earlier turn) is sent as `{}`:
/// Ollama would reject the whole request otherwise.
fn arguments_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            tracing::warn!(
                arguments = %preview(arguments),
                "tool-call arguments are not a JSON object; sending {{}} to Ollama"
            );
            Value::Object(Map::new())
        }
    }
}

fn encode_images(parts: &[ContentPart]) -> Result<Vec<String>, EncodeError> {
    parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Image { source } => Some(image_base64(source)),
            _ => None,
        })
        .collect()
}

/// An image's base64 text: inline bytes as they are, a `data:…;base64,` URL
/// decoded to its payload.
///
/// # Errors
/// Any other URL.
pub fn image_base64(source: &ImageSource) -> Result<String, EncodeError> {
    match source {
        ImageSource::Base64 { data, .. } => Ok(data.clone()),
        ImageSource::Url { url } => url
            .strip_prefix("data:")
            .and_then(|rest| rest.split_once(','))
            .filter(|(header, _)| header.ends_with(";base64"))
            .map(|(_, data)| data.to_owned())
            .ok_or_else(|| EncodeError::ImageUrl { url: preview(url) }),
    }
}

// ---------------------------------------------------------------------------
// Decoding.
// ---------------------------------------------------------------------------

/// Maps `done_reason` (absent on old servers: a normal end).
pub fn stop_reason(done_reason: Option<&str>) -> StopReason {
    match done_reason {
        None | Some("") | Some("stop") => StopReason::EndTurn,
        Some("length") => StopReason::MaxTokens,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

/// Usage of a final line: `prompt_eval_count` in, `eval_count` out. Ollama
/// reports neither cached nor reasoning tokens separately.
pub fn usage(response: &WireChatResponse) -> Usage {
    Usage {
        input_tokens: response.prompt_eval_count.unwrap_or(0),
        output_tokens: response.eval_count.unwrap_or(0),
        ..Usage::default()
    }
}

/// Call arguments as JSON text, whether the server sent an object or text.
pub fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// The kind of an error Ollama reports as `{"error": "…"}` inside a stream
/// or a successful response.
pub fn error_kind(message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if is_context_length_message(message) {
        context_length_kind(message)
    } else if lower.contains("busy") || lower.contains("overloaded") {
        ErrorKind::Overloaded
    } else if lower.contains("not found") {
        ErrorKind::NotFound
    } else if lower.contains("does not support") || lower.contains("invalid") {
        ErrorKind::InvalidRequest
    } else {
        ErrorKind::Server
    }
}

/// The `{"error": "…"}` of a line or body, as an error of `provider`.
///
/// Such an error comes inside an answer that already had its status (200),
/// so it has none of its own; a refusal of the request (invalid, or too
/// long for the context) is given the 400 that Ollama sends for one before
/// an answer starts, so that it is handled (and logged) the same way.
pub fn error_in(provider: &str, value: &Value) -> Option<LlmError> {
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    let message = match error {
        Value::String(text) => text.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    };
    let kind = error_kind(&message);
    let refusal = matches!(
        kind,
        ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded { .. }
    );
    let error = LlmError::new(kind, provider, message);
    Some(if refusal {
        error.with_status(400)
    } else {
        error
    })
}

/// Decodes a complete (non-streamed) answer.
pub fn decode_response(response: WireChatResponse) -> ChatResponse {
    let usage = usage(&response);
    let message = response.message.unwrap_or_default();
    let mut content = Vec::new();
    if let Some(thinking) = message.thinking.filter(|text| !text.is_empty()) {
        content.push(ContentPart::Reasoning(Reasoning {
            text: thinking,
            ..Reasoning::default()
        }));
    }
    if !message.content.is_empty() {
        content.push(ContentPart::Text {
            text: message.content,
        });
    }
    for call in message.tool_calls.unwrap_or_default() {
        content.push(ContentPart::ToolCall(ToolCall::new(
            call.id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(generated_call_id),
            call.function.name,
            arguments_text(&call.function.arguments),
        )));
    }
    let has_calls = content
        .iter()
        .any(|part| matches!(part, ContentPart::ToolCall(_)));
    let stop_reason = match stop_reason(response.done_reason.as_deref()) {
        StopReason::EndTurn if has_calls => StopReason::ToolUse,
        other => other,
    };
    ChatResponse {
        id: None,
        model: (!response.model.is_empty()).then_some(response.model),
        message: Message {
            role: Role::Assistant,
            content,
        },
        usage,
        stop_reason,
        timings: None,
        context_edits: Vec::new(),
        refusal_details: None,
    }
}

/// Decodes the NDJSON lines of a streamed `/api/chat` answer.
#[derive(Debug)]
pub struct ChatLineDecoder {
    provider: String,
}

impl ChatLineDecoder {
    /// A decoder for `provider`'s stream.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
        }
    }
}

impl WireDecoder<Value> for ChatLineDecoder {
    fn decode(&mut self, value: Value, out: &mut StreamAssembler) -> Result<Decoded, LlmError> {
        if let Some(error) = error_in(&self.provider, &value) {
            return Err(error);
        }
        let line: WireChatResponse = serde_json::from_value(value).map_err(|error| {
            LlmError::new(
                ErrorKind::Server,
                self.provider.clone(),
                format!("unexpected stream line: {error}"),
            )
        })?;
        out.start(None, (!line.model.is_empty()).then(|| line.model.clone()));
        if let Some(message) = &line.message {
            if let Some(thinking) = &message.thinking {
                out.reasoning(thinking);
            }
            out.text(&message.content);
            // Calls come whole, several per line at times: each opens and
            // closes here.
            for call in message.tool_calls.iter().flatten() {
                let id = call
                    .id
                    .clone()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(generated_call_id);
                let index = out.tool_start(&id, &call.function.name);
                out.tool_args(index, &arguments_text(&call.function.arguments));
                out.tool_end(index, None);
            }
        }
        if !line.done {
            return Ok(Decoded::More);
        }
        out.usage(usage(&line));
        out.stop(stop_reason(line.done_reason.as_deref()));
        Ok(Decoded::Done)
    }

    fn truncated(&self) -> LlmError {
        LlmError::new(
            ErrorKind::Connection,
            self.provider.clone(),
            "the stream ended before its final `\"done\": true` line",
        )
    }
}

fn preview(text: &str) -> String {
    let mut short: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request_of_bytes(bytes: usize) -> ChatRequest {
        // One message costs 8 bytes of overhead in the estimate.
        ChatRequest::new("m", vec![Message::user("x".repeat(bytes - 8))])
    }

    fn sized(num_ctx: u32, num_predict: u32) -> Result<ContextSize, ContextOverflow> {
        Ok(ContextSize {
            num_ctx,
            num_predict,
        })
    }

    #[test]
    fn an_error_inside_an_answer_is_a_400_only_when_it_refuses_the_request() {
        let refusal = error_in(
            "o",
            &json!({"error": "registry.ollama.ai/library/gemma:2b does not support tools"}),
        )
        .unwrap();
        assert_eq!(
            (refusal.kind, refusal.status),
            (ErrorKind::InvalidRequest, Some(400))
        );
        let too_long = error_in(
            "o",
            &json!({"error": "prompt is too long: 9000 tokens, maximum context length is 8192"}),
        )
        .unwrap();
        assert_eq!(too_long.status, Some(400));
        let crash = error_in(
            "o",
            &json!({"error": {"message": "llama runner process has terminated"}}),
        )
        .unwrap();
        assert_eq!((crash.kind, crash.status), (ErrorKind::Server, None));
        assert!(error_in("o", &json!({"error": null, "done": true})).is_none());
    }

    #[test]
    fn short_requests_get_the_minimum_and_the_default_answer() {
        let request = ChatRequest::new("m", vec![Message::user("Hi")]);
        assert_eq!(
            size_context(&request, &NumCtxPolicy::default(), None),
            sized(8192, 4096)
        );
    }

    #[test]
    fn need_is_prompt_with_margin_plus_answer_rounded_to_a_power_of_two() {
        // 40_000 bytes ≈ 10_000 tokens, ×1.25 = 12_500, + 4096 = 16_596,
        // rounded up to the next power of two = 32_768.
        let request = request_of_bytes(40_000);
        assert_eq!(request.estimated_input_tokens(), 10_000);
        assert_eq!(
            size_context(&request, &NumCtxPolicy::default(), None),
            sized(32_768, 4096)
        );
        // An explicit max_tokens replaces the default allowance:
        // 12_500 + 1000 = 13_500 → 16_384.
        let mut request = request;
        request.max_tokens = Some(1000);
        assert_eq!(
            size_context(&request, &NumCtxPolicy::default(), None),
            sized(16_384, 1000)
        );
    }

    #[test]
    fn a_need_of_9000_tokens_gets_16384() {
        // 16_000 bytes = 4000 tokens, ×1.25 = 5000, + 4000 = 9000.
        let mut request = request_of_bytes(16_000);
        request.max_tokens = Some(4000);
        let policy = NumCtxPolicy::default();
        assert_eq!(size_context(&request, &policy, None), sized(16_384, 4000));
        // Every need from 8193 to 16_384 shares that size; one more doubles.
        for (max_tokens, num_ctx) in [(3193, 16_384), (11_384, 16_384), (11_385, 32_768)] {
            request.max_tokens = Some(max_tokens);
            assert_eq!(
                size_context(&request, &policy, None),
                sized(num_ctx, max_tokens),
                "max_tokens {max_tokens}"
            );
        }
    }

    #[test]
    fn a_growing_conversation_changes_size_only_at_powers_of_two() {
        // Needs from about 8k to 32k tokens, growing 1000 bytes a turn.
        let policy = NumCtxPolicy::default();
        let mut sizes: Vec<u32> = (12_000..=89_000)
            .step_by(1000)
            .map(|bytes| {
                size_context(&request_of_bytes(bytes), &policy, None)
                    .map(|size| size.num_ctx)
                    .unwrap_or_default()
            })
            .collect();
        sizes.dedup();
        assert_eq!(sizes, vec![8192, 16_384, 32_768]);
    }

    #[test]
    fn small_growth_keeps_the_same_size() {
        let policy = NumCtxPolicy::default();
        let a = size_context(&request_of_bytes(40_000), &policy, None);
        let b = size_context(&request_of_bytes(40_800), &policy, None);
        assert_eq!(a, b, "a few hundred more bytes must not change num_ctx");
    }

    #[test]
    fn without_max_tokens_the_answer_takes_the_room_left() {
        let policy = NumCtxPolicy::default();
        // A 4096-token model: "Hi" is 3 tokens, 4 with the margin; the
        // answer gets the rest rather than the request being refused.
        let hi = ChatRequest::new("m", vec![Message::user("Hi")]);
        assert_eq!(size_context(&hi, &policy, Some(4096)), sized(4096, 4092));
        assert_eq!(size_context(&hi, &policy, Some(2048)), sized(2048, 2044));
        // An 8192-token model and a 20 KB prompt (5000 tokens, 6250 with
        // the margin): 1942 tokens are left for the answer.
        assert_eq!(
            size_context(&request_of_bytes(20_000), &policy, Some(8192)),
            sized(8192, 1942)
        );
        // 12_500 + 4096 = 16_596 fits 17_000: the whole default answer, and
        // the power of two (32_768) is cut to the model's context.
        let request = request_of_bytes(40_000);
        assert_eq!(
            size_context(&request, &policy, Some(17_000)),
            sized(17_000, 4096)
        );
        // 16_384 leaves 3884 tokens after the prompt.
        assert_eq!(
            size_context(&request, &policy, Some(16_384)),
            sized(16_384, 3884)
        );
    }

    #[test]
    fn a_prompt_leaving_too_little_room_is_an_overflow() {
        let policy = NumCtxPolicy::default();
        let request = request_of_bytes(40_000);
        // 12_500 prompt tokens leave 200 < 256 of 12_700.
        assert_eq!(
            size_context(&request, &policy, Some(12_700)),
            Err(ContextOverflow {
                needed: 12_756,
                allowed: 12_700,
                max_tokens: None,
            })
        );
        // Exactly the floor is enough.
        assert_eq!(
            size_context(&request, &policy, Some(12_756)),
            sized(12_756, MIN_ANSWER_TOKENS)
        );
        // The prompt alone overflows.
        assert_eq!(
            size_context(&request, &policy, Some(8192)),
            Err(ContextOverflow {
                needed: 12_756,
                allowed: 8192,
                max_tokens: None,
            })
        );
        // A default answer under the floor is the floor.
        let small = NumCtxPolicy {
            default_output: 100,
            ..NumCtxPolicy::default()
        };
        assert_eq!(
            size_context(&request, &small, Some(12_600)),
            sized(12_600, 100)
        );
        assert_eq!(
            size_context(&request, &small, Some(12_599)),
            Err(ContextOverflow {
                needed: 12_600,
                allowed: 12_599,
                max_tokens: None,
            })
        );
    }

    #[test]
    fn an_explicit_max_tokens_must_fit_whole() {
        let policy = NumCtxPolicy::default();
        let mut request = request_of_bytes(40_000);
        request.max_tokens = Some(4096);
        // 12_500 + 4096 = 16_596 > 16_384: max_tokens is never shrunk.
        assert_eq!(
            size_context(&request, &policy, Some(16_384)),
            Err(ContextOverflow {
                needed: 16_596,
                allowed: 16_384,
                max_tokens: Some(4096),
            })
        );
        assert_eq!(
            size_context(&request, &policy, Some(17_000)),
            sized(17_000, 4096)
        );
        // A model with a context under the minimum gets its own context.
        let mut tiny = ChatRequest::new("m", vec![Message::user("Hi")]);
        tiny.max_tokens = Some(256);
        assert_eq!(size_context(&tiny, &policy, Some(2048)), sized(2048, 256));
    }

    #[test]
    fn policy_max_applies_only_when_the_model_is_unknown() {
        let policy = NumCtxPolicy {
            max: 16_384,
            ..NumCtxPolicy::default()
        };
        let mut request = request_of_bytes(40_000);
        request.max_tokens = Some(4096);
        assert_eq!(
            size_context(&request, &policy, None),
            Err(ContextOverflow {
                needed: 16_596,
                allowed: 16_384,
                max_tokens: Some(4096),
            })
        );
        assert_eq!(
            size_context(&request, &policy, Some(32_768)),
            sized(32_768, 4096)
        );
        request.max_tokens = None;
        assert_eq!(size_context(&request, &policy, None), sized(16_384, 3884));
        let error = ContextOverflow {
            needed: 2,
            allowed: 1,
            max_tokens: None,
        };
        assert_eq!(
            error.kind(),
            ErrorKind::ContextLengthExceeded {
                needed: Some(2),
                allowed: Some(1)
            }
        );
        assert!(
            error.to_string().contains("needs about 2 tokens"),
            "{error}"
        );
    }

    /// A prompt that fits with a max_tokens that does not is refused in
    /// Anthropic's words, with the numbers the gateway and Claude Code read.
    #[test]
    fn a_max_tokens_that_does_not_fit_is_said_to_be_the_cause() {
        let mut request = request_of_bytes(40_000);
        request.max_tokens = Some(32_000);
        let error = size_context(&request, &NumCtxPolicy::default(), Some(32_768)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(
                "input length and `max_tokens` exceed context limit: 12500 + 32000 > 32768"
            ),
            "{message}"
        );
        assert_eq!(
            crate::http::input_and_output_over_context(&message),
            Some((12_500, 32_000, 32_768))
        );
        // The prompt alone too long: the usual words.
        let error = size_context(&request, &NumCtxPolicy::default(), Some(8192)).unwrap_err();
        assert!(error.to_string().contains("needs about"), "{error}");
    }

    #[test]
    fn think_is_sent_as_the_model_takes_it() {
        let show = |json: Value| {
            serde_json::from_value::<ShowResponse>(json)
                .unwrap()
                .facts()
        };
        let plain = show(json!({"capabilities": ["completion", "tools"],
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072}}));
        assert_eq!(plain.context_length, Some(131_072));
        assert_eq!(plain.can_think, Some(false));
        assert_eq!(plain.think(Some(ReasoningEffort::High)), None);
        let qwen3 = show(json!({"capabilities": ["completion", "thinking"],
            "model_info": {"general.architecture": "qwen3"}}));
        assert_eq!(
            qwen3.think(Some(ReasoningEffort::High)),
            Some(Think::Enabled(true))
        );
        assert_eq!(qwen3.think(None), None);
        let gpt_oss = show(json!({"capabilities": ["completion", "tools", "thinking"],
            "model_info": {"general.architecture": "gptoss"}, "details": {"family": "gptoss"}}));
        let level = |effort| gpt_oss.think(Some(effort));
        assert_eq!(
            level(ReasoningEffort::Minimal),
            Some(Think::Level("low".into()))
        );
        assert_eq!(
            level(ReasoningEffort::Medium),
            Some(Think::Level("medium".into()))
        );
        assert_eq!(
            level(ReasoningEffort::High),
            Some(Think::Level("high".into()))
        );
        // A server that lists no capabilities: asked as before.
        let old = show(json!({"model_info": {"general.architecture": "llama"}}));
        assert_eq!(
            old.think(Some(ReasoningEffort::Low)),
            Some(Think::Enabled(true))
        );
        // Asked for no reasoning: thinking models are told not to think,
        // gpt-oss thinks least, and a model that cannot think is told
        // nothing.
        assert_eq!(
            qwen3.think(Some(ReasoningEffort::Off)),
            Some(Think::Enabled(false))
        );
        assert_eq!(
            level(ReasoningEffort::Off),
            Some(Think::Level("low".into()))
        );
        assert_eq!(plain.think(Some(ReasoningEffort::Off)), None);
        assert_eq!(
            old.think(Some(ReasoningEffort::Off)),
            Some(Think::Enabled(false))
        );
        // Before the model's facts are known, `think` goes as asked.
        let size = ContextSize {
            num_ctx: 4096,
            num_predict: 1024,
        };
        let mut request = ChatRequest::new("qwen3", vec![Message::user("hi")]);
        for (effort, think) in [
            (None, None),
            (Some(ReasoningEffort::Off), Some(Think::Enabled(false))),
            (Some(ReasoningEffort::Low), Some(Think::Enabled(true))),
        ] {
            request.reasoning = effort;
            let body = encode_request(&request, size, false).unwrap();
            assert_eq!(body.think, think, "{effort:?}");
        }
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let policy = NumCtxPolicy {
            min: 0,
            max: 0,
            default_output: 0,
        };
        let request = ChatRequest::new("m", vec![]);
        assert_eq!(size_context(&request, &policy, None), sized(0, 0));
        let mut huge = ChatRequest::new("m", vec![Message::user("x")]);
        huge.max_tokens = Some(u32::MAX);
        assert!(size_context(&huge, &NumCtxPolicy::default(), Some(u32::MAX)).is_err());
        huge.max_tokens = None;
        assert_eq!(
            size_context(&huge, &NumCtxPolicy::default(), Some(u32::MAX)),
            sized(8192, 4096)
        );
    }

    #[test]
    fn encoding_sends_both_context_options() {
        let request = ChatRequest::new("m", vec![Message::user("Hi")]);
        let size = ContextSize {
            num_ctx: 4096,
            num_predict: 4092,
        };
        let body = encode_request(&request, size, true).unwrap();
        let options = body.options.unwrap();
        assert_eq!(
            (options.num_ctx, options.num_predict),
            (Some(4096), Some(4092))
        );
    }

    #[test]
    fn show_response_context_length() {
        let show: ShowResponse = serde_json::from_value(json!({
            "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768,
                           "llama.context_length": 4096}
        }))
        .unwrap();
        assert_eq!(show.context_length(), Some(32768));
        let show: ShowResponse = serde_json::from_value(json!({
            "model_info": {"gemma3.context_length": 131072}
        }))
        .unwrap();
        assert_eq!(show.context_length(), Some(131072));
        assert_eq!(ShowResponse::default().context_length(), None);
    }

    #[test]
    fn data_urls_become_base64_and_other_urls_fail() {
        assert_eq!(
            image_base64(&ImageSource::Url {
                url: "data:image/png;base64,iVBOR".into()
            }),
            Ok("iVBOR".into())
        );
        assert!(matches!(
            image_base64(&ImageSource::Url {
                url: "https://example.com/cat.png".into()
            }),
            Err(EncodeError::ImageUrl { url }) if url == "https://example.com/cat.png"
        ));
    }

    #[test]
    fn invalid_arguments_are_sent_as_an_empty_object() {
        assert_eq!(arguments_object(""), json!({}));
        assert_eq!(arguments_object("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(arguments_object("{\"a\":"), json!({}));
        assert_eq!(arguments_object("[1]"), json!({}));
    }

    #[test]
    fn stream_errors_are_classified() {
        assert_eq!(
            error_kind("server busy, please try again. maximum pending requests exceeded"),
            ErrorKind::Overloaded
        );
        assert_eq!(error_kind("model 'x' not found"), ErrorKind::NotFound);
        assert_eq!(
            error_kind("the input length exceeds the context length"),
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None
            }
        );
        assert_eq!(
            error_kind("an error was encountered while running the model"),
            ErrorKind::Server
        );
    }
}
