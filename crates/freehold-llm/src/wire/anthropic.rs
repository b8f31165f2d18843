//! Anthropic Messages (`POST /v1/messages`): Claude's native protocol, also
//! spoken by proxies and gateways that front it.
//!
//! How Freehold's neutral types map onto it:
//! - every [`Role::System`] message is joined (with a blank line) into the
//!   top-level `system` string;
//! - roles must alternate, so consecutive user-side messages ([`Role::User`]
//!   and [`Role::Tool`], whose results become `tool_result` blocks) merge into
//!   one `user` message, tool results first as the API requires, and
//!   consecutive assistant messages merge likewise;
//! - tool calls are `tool_use` blocks whose `input` is a JSON object (the
//!   call's argument text parsed; invalid or empty text sends `{}`);
//! - reasoning round-trips as `thinking` blocks with their `signature`, or
//!   `redacted_thinking` blocks with their opaque `data`; unsigned reasoning
//!   (from another provider) is not sent, as the API would reject it;
//! - `max_tokens` is required: the request's value, else a default
//!   ([`DEFAULT_MAX_TOKENS`], configurable on the client);
//! - structured output ([`ResponseFormat`]) has no native mode in this API, so
//!   it is emulated with a tool: see [`structured_output_tool`].

use std::collections::HashMap;

use freehold_protocol::{
    AppliedContextEdit, ChatRequest, ChatResponse, ContentPart, DocumentSource, ErrorKind,
    ImageSource, LlmError, Message, Reasoning, ReasoningEffort, RefusalDetails, ResponseFormat,
    Role, StopReason, ToolCall, ToolChoice, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
use crate::http::{context_length_kind, is_context_length_message};
use crate::sse::SseEvent;
use crate::wire::text_or::TextOr;

mod compaction;
mod read_block;
mod serve;
#[cfg(test)]
mod serve_tests;

pub use compaction::{
    answer_after_compaction, encode_compaction_alone, put_compaction_first, split_for_compaction,
};
pub use serve::{
    MessageStreamEncoder, ServeOptions, decode_request, effort_for_budget, effort_for_name,
    encode_error, encode_response, encode_response_for,
};

/// The API's public base URL (the client appends `/v1/messages`).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The origin stamped on reasoning signatures this protocol produces.
pub const ORIGIN: &str = "anthropic";

/// The `anthropic-version` header every request carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The `max_tokens` sent when a request sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// The most Anthropic's API takes of `metadata.user_id`.
const USER_ID_MAX: usize = 256;

/// The name of the structured-output tool when the format's own name cannot
/// be used (invalid characters, or a clash with a caller's tool).
pub const STRUCTURED_OUTPUT_TOOL: &str = "structured_output";

/// A request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model.
    pub model: String,
    /// The conversation, alternating `user` and `assistant`.
    pub messages: Vec<WireMessage>,
    /// System instructions: a string, or text blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    /// The most tokens to generate (required by the API; it includes the
    /// thinking budget).
    pub max_tokens: u32,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Whether to stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Sampling temperature (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<WireToolChoice>,
    /// Extended thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingConfig>,
    /// Output settings: `effort`, which guides adaptive thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    /// Request metadata: `user_id`, the end user's id
    /// ([`ChatRequest::end_user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Anthropic's context editing (`{"edits": [...]}`), as the client
    /// sent it ([`crate::context_edit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<Value>,
    /// A compaction request (`{"type": "summarize"}`): the conversation is
    /// answered with one `compaction` block that stands for it. The gateway
    /// serves it ([`split_for_compaction`]); it is never sent to a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Value>,
    /// A prompt-caching mark for the whole request (automatic caching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    /// Structured output as the beta before `output_config.format` named
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<Value>,
    // Fields Freehold does not read (`service_tier`, `container`…) are
    // left out when a request is read: nothing sent them on, and a struct
    // with a `#[serde(flatten)]` map of them is read through serde's
    // intermediate copy of each such field.
}

/// `system`: the API takes a string or an array of text blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    /// Plain text (what Freehold sends).
    Text(String),
    /// Text blocks (which may carry `cache_control`).
    Blocks(Vec<ContentBlock>),
}

impl SystemPrompt {
    /// The text of the prompt, blocks joined with a blank line.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Blocks(blocks) => blocks
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

impl<'de> Deserialize<'de> for SystemPrompt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::read(deserializer, "a string or an array of text blocks")? {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(blocks) => Self::Blocks(blocks),
            },
        )
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::read(deserializer, "a string or an array of content blocks")? {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(blocks) => Self::Blocks(blocks),
            },
        )
    }
}

impl<'de> Deserialize<'de> for ToolResultContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::read(deserializer, "a string or an array of content blocks")? {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(blocks) => Self::Blocks(blocks),
            },
        )
    }
}

/// A message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// A string, or content blocks (what Freehold sends).
    pub content: MessageContent,
}

/// Message content: plain text or blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed blocks.
    Blocks(Vec<ContentBlock>),
}

impl MessageContent {
    /// The content as blocks (text becomes one text block).
    pub fn into_blocks(self) -> Vec<ContentBlock> {
        match self {
            Self::Text(text) => vec![ContentBlock::text(text)],
            Self::Blocks(blocks) => blocks,
        }
    }
}

/// A content block, in requests and responses alike. It is read by hand
/// (`read_block`), in one pass where `type` comes first; written by serde.
/// In a request, a field of the wrong type is an error; in an answer, the
/// block is kept as it came ([`MessagesResponse::content`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Citations of documents (responses), kept as they came.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
        /// A prompt-caching breakpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// An image.
    Image {
        /// Where its bytes are.
        source: WireImageSource,
        /// A prompt-caching breakpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A tool call by the assistant.
    ToolUse {
        /// The call's id (`toolu_…`).
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments, a JSON object.
        #[serde(default)]
        input: Value,
        /// A prompt-caching breakpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A tool's result, in a user message.
    ToolResult {
        /// The [`ContentBlock::ToolUse`] id it answers.
        tool_use_id: String,
        /// The result: a string or blocks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        /// A prompt-caching breakpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// Extended-thinking text with its signature, to be sent back unchanged.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// The opaque signature.
        #[serde(default)]
        signature: String,
    },
    /// Thinking the provider encrypted; `data` must be sent back unchanged.
    RedactedThinking {
        /// The opaque data.
        data: String,
    },
    /// A document the model reads: a PDF, or plain text.
    Document {
        /// Where its content is.
        source: WireDocumentSource,
        /// Its title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// What it is about, for the model (not cited).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
        /// Whether answers may cite it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
        /// A prompt-caching breakpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// Any other block (server tools, search results…), kept as it came;
    /// also a block of a known kind without a field that kind needs (then
    /// with the fields it had that the kind has), for the decoder to say
    /// what is missing.
    #[serde(untagged)]
    Other(Value),
}

/// `source` of a document block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireDocumentSource {
    /// Inline bytes: a PDF (`application/pdf`).
    Base64 {
        /// The MIME type.
        media_type: String,
        /// The base64 bytes.
        data: String,
    },
    /// A PDF at a URL the API fetches.
    Url {
        /// The URL.
        url: String,
    },
    /// Plain text.
    Text {
        /// `text/plain`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
        /// The text.
        data: String,
    },
    /// Content blocks (text and images) as one document.
    Content {
        /// The blocks.
        content: Value,
    },
    /// A file of Anthropic's Files API, or any other source: Freehold has
    /// no copy of it.
    #[serde(other)]
    Unsupported,
}

impl ContentBlock {
    /// A plain text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            citations: None,
            cache_control: None,
        }
    }
}

/// `content` of a tool result: a string or blocks (text and images).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<ContentBlock>),
}

impl ToolResultContent {
    /// The text of the result (text blocks concatenated).
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Blocks(blocks) => blocks
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// `source` of an image block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireImageSource {
    /// Inline bytes.
    Base64 {
        /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
        media_type: String,
        /// The base64 text.
        data: String,
    },
    /// An `https://` URL the API fetches.
    Url {
        /// The URL.
        url: String,
    },
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    /// Set for Anthropic-defined tools (`web_search_20250305`…); absent for
    /// client tools.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its input (an object schema); required for client tools.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input_schema: Value,
    /// A prompt-caching breakpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    /// Strict tool use: the input is held to `input_schema` exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Whether the tool is offered only once the conversation loads it
    /// (`true`), with tool search. Anything but `true` is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_loading: Option<Value>,
    // Other fields (the parameters of Anthropic-defined tools, such as
    // `max_uses`) are left out when read: such tools are not served, and
    // nothing sent them on.
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireToolChoice {
    /// The model decides.
    Auto {
        /// At most one call per answer when true.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call some tool.
    Any {
        /// At most one call per answer when true.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call this tool.
    Tool {
        /// The tool.
        name: String,
        /// At most one call per answer when true.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must not call tools.
    None {},
}

/// `thinking`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingConfig {
    /// Extended thinking with a token budget (at least 1024, below
    /// `max_tokens`). Refused by Claude Opus 4.7 and later.
    Enabled {
        /// Tokens the model may spend thinking.
        budget_tokens: u32,
        /// How the thinking comes back: `summarized`, or `omitted` (only
        /// its signature; Claude Code asks for that).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
    },
    /// The model thinks as much as it sees fit, guided by
    /// `output_config.effort` (Claude 4.6 and later).
    Adaptive {
        /// As for [`ThinkingConfig::Enabled`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
    },
    /// No thinking.
    Disabled {},
}

/// `output_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputConfig {
    /// `low`, `medium`, `high` (the API's default), `xhigh` or `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// Structured output (`{"type": "json_schema", "schema": {...}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
}

/// The `output_config.effort` for an effort level.
pub fn effort_name(effort: ReasoningEffort) -> &'static str {
    match effort {
        ReasoningEffort::Off | ReasoningEffort::Minimal | ReasoningEffort::Low => "low",
        ReasoningEffort::Medium => "medium",
        ReasoningEffort::High => "high",
    }
}

/// Whether `model` takes `thinking: {"type": "adaptive"}` (Claude 4.6 and
/// later, which Opus 4.7 and later require) rather than a token budget.
///
/// Read from the model's name, as Anthropic, Bedrock and Vertex spell it
/// (`claude-opus-4-7`, `claude-sonnet-4-6-20260217`,
/// `anthropic.claude-opus-4-7-v1:0`, `claude-opus-4-7@…`): a family, then
/// its version. Names in the older order (`claude-3-7-sonnet-…`), or not
/// Claude's at all (a local model behind an Anthropic-compatible server),
/// keep the token budget that every version before 4.6 takes.
pub fn takes_adaptive_thinking(model: &str) -> bool {
    let Some(start) = model.find("claude-") else {
        return false;
    };
    let mut parts = model[start + "claude-".len()..].split(['-', '@', ':', '.']);
    if !matches!(parts.next(), Some("opus" | "sonnet" | "haiku")) {
        return false;
    }
    // One or two digits are a version number; eight are a date.
    let number = |part: Option<&str>| {
        part.filter(|p| (1..=2).contains(&p.len()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let Some(major) = number(parts.next()) else {
        return false;
    };
    let minor = number(parts.next()).unwrap_or(0);
    (major, minor) >= (4, 6)
}

/// A complete (non-streamed) response; also the `message` of a
/// `message_start` event (then with empty content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// The message id (`msg_…`).
    #[serde(default)]
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    /// Always `assistant`.
    #[serde(default = "assistant_role")]
    pub role: String,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The answer's blocks. A block that cannot be read is kept as it came
    /// ([`ContentBlock::Other`]), not an error: servers that speak the
    /// protocol are not all strict about its field types.
    #[serde(default, deserialize_with = "read_block::leniently_all")]
    pub content: Vec<ContentBlock>,
    /// Why it ended (`null` in `message_start`).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop sequence that ended it, if one did.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Why it stopped, beyond the reason (a refusal's category and
    /// explanation); kept as it came, since the API may add kinds this
    /// crate does not know ([`refusal_details`] reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_details: Option<Value>,
    /// Tokens used.
    #[serde(default)]
    pub usage: WireUsage,
    /// The context edits the API made (`{"applied_edits": [...]}`), where
    /// the request asked for context editing; kept as it came, since the
    /// API may report kinds of edit this crate does not know
    /// ([`applied_context_edits`] reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<Value>,
}

/// The edits of an answer's `context_management` that this crate can read
/// (those with a `type`; counts it lacks are zero).
pub fn applied_context_edits(context_management: Option<&Value>) -> Vec<AppliedContextEdit> {
    context_management
        .and_then(|report| report.get("applied_edits"))
        .and_then(Value::as_array)
        .map(|edits| {
            edits
                .iter()
                .filter_map(|edit| serde_json::from_value(edit.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What an answer's `stop_details` says of a refusal: `None` unless it is
/// one (`"type": "refusal"`). Fields that are not strings are left out.
pub fn refusal_details(stop_details: Option<&Value>) -> Option<RefusalDetails> {
    let details = stop_details?;
    if details.get("type").and_then(Value::as_str) != Some("refusal") {
        return None;
    }
    let text = |name: &str| details.get(name).and_then(Value::as_str).map(str::to_owned);
    Some(RefusalDetails {
        category: text("category"),
        explanation: text("explanation"),
    })
}

/// The `stop_details` of a refusal, as Anthropic's API writes it (`null`
/// for what is not known).
pub fn stop_details(details: &RefusalDetails) -> Value {
    json!({
        "type": "refusal",
        "category": details.category,
        "explanation": details.explanation,
    })
}

/// An answer's `context_management` reporting `edits`.
pub fn context_management_report(edits: &[AppliedContextEdit]) -> Value {
    serde_json::json!({ "applied_edits": edits })
}

fn message_type() -> String {
    "message".into()
}

fn assistant_role() -> String {
    "assistant".into()
}

/// Usage as Anthropic reports it: `input_tokens` EXCLUDES cache reads and
/// writes, which are counted apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Input tokens processed at the full price (neither read from nor
    /// written to the cache).
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens (thinking included). Cumulative in `message_delta`.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// The cache writes by how long they are kept, which sets their price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreation>,
    /// The usage of each call that made the answer, when there were several:
    /// a server-side compaction's (`"compaction"`, not counted in the
    /// fields above) and the answer's (`"message"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<Vec<IterationUsage>>,
}

/// One entry of `usage.iterations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationUsage {
    /// `compaction` or `message` (others, such as an advisor's, may come).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// As [`WireUsage::input_tokens`].
    #[serde(default)]
    pub input_tokens: u64,
    /// As [`WireUsage::output_tokens`].
    #[serde(default)]
    pub output_tokens: u64,
    /// As [`WireUsage::cache_creation_input_tokens`].
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// As [`WireUsage::cache_read_input_tokens`].
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl IterationUsage {
    /// The entry of kind `kind` for a call that used `usage`.
    pub fn of(kind: &str, usage: &WireUsage) -> Self {
        Self {
            kind: kind.to_owned(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens.unwrap_or(0),
            cache_read_input_tokens: usage.cache_read_input_tokens.unwrap_or(0),
        }
    }
}

/// `usage.cache_creation`: [`WireUsage::cache_creation_input_tokens`] by
/// how long the writes are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCreation {
    /// Written for five minutes (1.25 times the input price).
    #[serde(default)]
    pub ephemeral_5m_input_tokens: u64,
    /// Written for an hour (twice the input price).
    #[serde(default)]
    pub ephemeral_1h_input_tokens: u64,
}

impl From<&WireUsage> for Usage {
    fn from(wire: &WireUsage) -> Self {
        let read = wire.cache_read_input_tokens.unwrap_or(0);
        let write = wire.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: wire.input_tokens + read + write,
            cached_input_tokens: read,
            cache_write_tokens: write,
            cache_write_1h_tokens: wire
                .cache_creation
                .map_or(0, |creation| creation.ephemeral_1h_input_tokens.min(write)),
            output_tokens: wire.output_tokens,
            reasoning_tokens: 0,
        }
    }
}

impl From<&Usage> for WireUsage {
    fn from(usage: &Usage) -> Self {
        WireUsage {
            input_tokens: usage
                .input_tokens
                .saturating_sub(usage.cached_input_tokens)
                .saturating_sub(usage.cache_write_tokens),
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: Some(usage.cache_write_tokens),
            cache_read_input_tokens: Some(usage.cached_input_tokens),
            cache_creation: Some(CacheCreation {
                ephemeral_5m_input_tokens: usage
                    .cache_write_tokens
                    .saturating_sub(usage.cache_write_1h_tokens),
                ephemeral_1h_input_tokens: usage.cache_write_1h_tokens,
            }),
            iterations: None,
        }
    }
}

/// One server-sent event of a streamed answer (the SSE `data`, whose `type`
/// repeats the SSE `event` name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageStreamEvent {
    /// The answer begins: id, model, input usage.
    MessageStart {
        /// The message so far (no content yet).
        message: MessagesResponse,
    },
    /// A content block begins.
    ContentBlockStart {
        /// The block's position in the answer.
        index: u32,
        /// The block, empty (`text: ""`, `input: {}`); kept as it came when
        /// it cannot be read, as in [`MessagesResponse::content`].
        #[serde(deserialize_with = "read_block::leniently")]
        content_block: ContentBlock,
    },
    /// More of a block.
    ContentBlockDelta {
        /// Which block.
        index: u32,
        /// What is new.
        delta: BlockDelta,
    },
    /// A block is complete.
    ContentBlockStop {
        /// Which block.
        index: u32,
    },
    /// Top-level changes: the stop reason and cumulative usage.
    MessageDelta {
        /// Stop reason and sequence.
        delta: MessageDeltaBody,
        /// Cumulative usage (`output_tokens` at least).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<WireUsage>,
        /// The context edits the API made, where the request asked for
        /// context editing ([`MessagesResponse::context_management`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_management: Option<Value>,
    },
    /// The answer is complete.
    MessageStop {},
    /// A keep-alive.
    Ping {},
    /// An error after the stream began.
    Error {
        /// What went wrong.
        error: ApiError,
    },
    /// An event type this crate does not know, kept as it came (the API
    /// may add new ones and promises that clients ignore them).
    #[serde(untagged)]
    Other(Value),
}

/// `delta` of a `content_block_delta` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// More thinking.
    ThinkingDelta {
        /// The reasoning text.
        thinking: String,
    },
    /// The thinking block's signature (sent just before it stops).
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// A fragment of a tool call's input JSON.
    InputJsonDelta {
        /// The next piece of the JSON text.
        partial_json: String,
    },
    /// A `compaction` block's content, whole.
    CompactionDelta {
        /// The summary.
        content: String,
    },
    /// Any other delta (citations…), kept as it came.
    #[serde(untagged)]
    Other(Value),
}

/// `delta` of a `message_delta` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why the answer ended.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop sequence that ended it.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Why it stopped, beyond the reason
    /// ([`MessagesResponse::stop_details`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_details: Option<Value>,
}

/// The `error` object of an error body or event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `invalid_request_error`, `overloaded_error`, `rate_limit_error`…
    #[serde(rename = "type", default)]
    pub kind: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
}

/// An error body: `{"type":"error","error":{…}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Always `error`.
    #[serde(rename = "type", default = "error_type")]
    pub kind: String,
    /// The error.
    pub error: ApiError,
}

fn error_type() -> String {
    "error".into()
}

/// The fields of a Messages request that `POST /v1/messages/count_tokens`
/// accepts; it refuses the others (`max_tokens`, `stream`, sampling).
pub const COUNT_TOKENS_FIELDS: [&str; 8] = [
    "context_management",
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
];

/// `POST /v1/messages/count_tokens` response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTokensResponse {
    /// The request's input tokens: system prompt, messages and tools.
    pub input_tokens: u64,
    /// For a request that asked for context editing, the count before the
    /// edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<CountedBeforeEdits>,
}

/// `context_management` of a `count_tokens` response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedBeforeEdits {
    /// The request's input tokens before its context edits.
    pub original_input_tokens: u64,
}

/// `GET /v1/models` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// The models of this page.
    #[serde(default)]
    pub data: Vec<WireModel>,
    /// Whether another page follows.
    #[serde(default)]
    pub has_more: bool,
    /// The first id of this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_id: Option<String>,
    /// The last id of this page (`after_id` of the next request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

/// One model of a [`ModelList`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireModel {
    /// The model id (`claude-sonnet-4-20250514`).
    pub id: String,
    /// A readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// RFC 3339 release time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Always `model`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// How a request is encoded beyond what [`ChatRequest`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// `max_tokens` when the request sets none.
    pub default_max_tokens: u32,
    /// Whether to stream.
    pub stream: bool,
    /// Whether to send how the client asked to see the thinking
    /// (`thinking.display`): Anthropic's own API takes it; a server that
    /// only speaks the protocol may refuse a field it does not know.
    pub thinking_display: bool,
    /// Whether to send the end user's id (`metadata.user_id`,
    /// [`ChatRequest::end_user`]): Anthropic's own API takes it for its
    /// abuse monitoring; another server of the protocol has no use for it.
    pub end_user: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            default_max_tokens: DEFAULT_MAX_TOKENS,
            stream: false,
            thinking_display: false,
            end_user: false,
        }
    }
}

/// The name of the tool that carries structured output for `request`, or
/// `None` when it asks for none.
///
/// The Messages API has no JSON-schema mode, so a [`ResponseFormat`] is
/// emulated: the request offers one extra tool whose `input_schema` is the
/// schema (`{"type":"object"}` for [`ResponseFormat::JsonObject`]) and forces
/// the model to call it; the call's input is then turned back into the
/// answer's TEXT, streamed as text deltas, and the `tool_use` stop reason
/// into `end_turn`. The tool is named after the format when that name is a
/// valid tool name that no caller tool has, else [`STRUCTURED_OUTPUT_TOOL`]
/// (suffixed with `_` until unique).
pub fn structured_output_tool(request: &ChatRequest) -> Option<String> {
    let format = request.response_format.as_ref()?;
    let taken = |name: &str| request.tools.iter().any(|tool| tool.name == name);
    if let ResponseFormat::JsonSchema { name, .. } = format {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid && !taken(name) {
            return Some(name.clone());
        }
    }
    let mut name = STRUCTURED_OUTPUT_TOOL.to_owned();
    while taken(&name) {
        name.push('_');
    }
    Some(name)
}

/// Encodes a request.
///
/// Besides the mapping described in the module docs:
/// - with `request.reasoning` set, `thinking` is adaptive with its effort
///   on models that take it ([`takes_adaptive_thinking`]), and otherwise
///   enabled with `request.reasoning_budget` (at least 1024), or else
///   [`freehold_protocol::ReasoningEffort::budget_tokens`]; as the budget must
///   stay below `max_tokens`, a defaulted `max_tokens` grows to budget +
///   default, and an explicit one that is too small shrinks the budget (never
///   under the API's minimum of 1024). Thinking forbids `temperature` and
///   `top_k` and limits `top_p` to 0.95–1, so those are dropped or clamped;
/// - `parallel_tool_calls: Some(false)` sets `disable_parallel_tool_use`.
pub fn encode_request(request: &ChatRequest, options: EncodeOptions) -> MessagesRequest {
    let structured = structured_output_tool(request);
    let mut max_tokens = request.max_tokens.unwrap_or(options.default_max_tokens);
    let adaptive = takes_adaptive_thinking(&request.model);
    let display = request
        .reasoning_display
        .clone()
        .filter(|_| options.thinking_display);
    let thinking = reasoning_for(request).and_then(|effort| {
        // The client's own budget when it named one (a client of the
        // Anthropic protocol), else its level's.
        let mut budget = request.reasoning_budget.map_or_else(
            || effort.budget_tokens(),
            |asked| asked.max(MIN_THINKING_BUDGET),
        );
        // Adaptive thinking has no budget to fit under `max_tokens`, but it
        // spends from it: a defaulted limit still grows by the effort's
        // budget, and an explicit one is kept whatever its size.
        if adaptive {
            if request.max_tokens.is_none() && max_tokens <= budget {
                max_tokens = budget.saturating_add(options.default_max_tokens);
            }
            return Some(ThinkingConfig::Adaptive { display });
        }
        if max_tokens <= budget {
            match request.max_tokens {
                None => max_tokens = budget.saturating_add(options.default_max_tokens),
                // The budget must be at least 1024 and below max_tokens: an
                // answer limit that small leaves no room to think at all.
                Some(explicit) if explicit <= MIN_THINKING_BUDGET => {
                    tracing::debug!(explicit, "max_tokens too small for thinking; thinking off");
                    return None;
                }
                Some(explicit) => budget = explicit.saturating_sub(1).max(MIN_THINKING_BUDGET),
            }
        }
        Some(ThinkingConfig::Enabled {
            budget_tokens: budget,
            display,
        })
    });
    let thinking_on = thinking.is_some();
    let output_config = request
        .reasoning
        .filter(|_| matches!(thinking, Some(ThinkingConfig::Adaptive { .. })))
        .map(|effort| OutputConfig {
            effort: Some(
                request
                    .reasoning_effort_name
                    .clone()
                    .unwrap_or_else(|| effort_name(effort).to_owned()),
            ),
            format: None,
        });

    let mut system = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System)
        .map(Message::text_content)
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");

    let mut tools: Vec<WireTool> = request
        .tools
        .iter()
        .map(|tool| WireTool {
            kind: None,
            name: tool.name.clone(),
            description: (!tool.description.is_empty()).then(|| tool.description.clone()),
            input_schema: tool.parameters.clone(),
            cache_control: None,
            // Not sent: older Claude models and Anthropic-protocol servers
            // of others refuse it, and a request does not say whether an
            // Anthropic client asked (an OpenAI SDK's `parse()` asks for
            // strict on every schema).
            strict: None,
            defer_loading: None,
        })
        .collect();
    let disable_parallel = (request.parallel_tool_calls == Some(false)).then_some(true);
    let mut tool_choice = (!tools.is_empty()).then(|| match &request.tool_choice {
        // With thinking on the API accepts only `auto` and `none`: a forced
        // choice becomes `auto` rather than a rejected request.
        ToolChoice::Required | ToolChoice::Tool { .. } if thinking_on => {
            tracing::debug!("forced tool choice is not allowed with thinking; using auto");
            WireToolChoice::Auto {
                disable_parallel_tool_use: disable_parallel,
            }
        }
        ToolChoice::Auto => WireToolChoice::Auto {
            disable_parallel_tool_use: disable_parallel,
        },
        ToolChoice::Required => WireToolChoice::Any {
            disable_parallel_tool_use: disable_parallel,
        },
        ToolChoice::Tool { name } => WireToolChoice::Tool {
            name: name.clone(),
            disable_parallel_tool_use: disable_parallel,
        },
        ToolChoice::None => WireToolChoice::None {},
    });

    if let (Some(name), Some(format)) = (&structured, &request.response_format) {
        let (schema, description) = match format {
            ResponseFormat::JsonSchema { schema, .. } => (
                schema.clone(),
                "Give the final answer by calling this tool; its input is the answer.",
            ),
            ResponseFormat::JsonObject => (
                json!({"type": "object"}),
                "Give the final answer by calling this tool with the answer as a JSON object.",
            ),
        };
        tools.push(WireTool {
            kind: None,
            name: name.clone(),
            description: Some(description.to_owned()),
            input_schema: schema,
            cache_control: None,
            strict: None,
            defer_loading: None,
        });
        let caller_tools = !request.tools.is_empty();
        tool_choice = Some(match (&request.tool_choice, caller_tools) {
            // Forced tool use is not allowed with thinking: ask instead.
            _ if thinking_on => {
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&format!(
                    "Give your final answer by calling the `{name}` tool; its input is the answer."
                ));
                WireToolChoice::Auto {
                    disable_parallel_tool_use: disable_parallel,
                }
            }
            // The caller forces a tool of theirs: keep that.
            (ToolChoice::Tool { name: forced }, true) => WireToolChoice::Tool {
                name: forced.clone(),
                disable_parallel_tool_use: disable_parallel,
            },
            // The model may still call the caller's tools, or answer.
            (ToolChoice::Auto | ToolChoice::Required, true) => WireToolChoice::Any {
                disable_parallel_tool_use: disable_parallel,
            },
            _ => WireToolChoice::Tool {
                name: name.clone(),
                disable_parallel_tool_use: Some(true),
            },
        });
    }

    let (temperature, top_p, top_k) = if thinking_on {
        (
            None,
            request.sampling.top_p.map(|p| p.clamp(0.95, 1.0)),
            None,
        )
    } else {
        (
            request.sampling.temperature,
            request.sampling.top_p,
            request.sampling.top_k,
        )
    };

    let mut wire = MessagesRequest {
        model: request.model.clone(),
        messages: encode_messages(&request.messages),
        system: (!system.is_empty()).then_some(SystemPrompt::Text(system)),
        max_tokens,
        stop_sequences: (!request.stop.is_empty()).then(|| request.stop.clone()),
        stream: options.stream,
        temperature,
        top_p,
        top_k,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        thinking,
        output_config,
        metadata: request
            .end_user
            .as_deref()
            .filter(|_| options.end_user)
            .map(|id| serde_json::json!({"user_id": super::end_user_within(id, USER_ID_MAX)})),
        context_management: request.context_management.clone(),
        compaction: None,
        cache_control: None,
        output_format: None,
    };
    if let Some(mark) = &request.prompt_cache {
        place_cache_marks(&mut wire, mark);
    }
    wire
}

/// How many `cache_control` marks a request may carry.
const MAX_CACHE_MARKS: usize = 4;

/// Marks the stable points of `wire`'s prompt for Anthropic's prompt cache
/// with `mark`, as a client that caches marks them: the end of the tools,
/// the end of the system prompt, and the last block of each of the last two
/// messages (four marks, the API's most). A later request that extends the
/// conversation then reads all of it up to its previous end from the cache
/// (the API looks for a cached prefix up to 20 blocks before each mark, so
/// the second-to-last message's mark covers turns that added more). A
/// thinking block cannot carry a mark: the last block before it does.
pub fn place_cache_marks(wire: &mut MessagesRequest, mark: &Value) {
    let mut placed = 0;
    if let Some(tool) = wire.tools.as_mut().and_then(|tools| tools.last_mut()) {
        tool.cache_control = Some(mark.clone());
        placed += 1;
    }
    if let Some(system) = wire.system.take() {
        let mut blocks = match system {
            SystemPrompt::Text(text) => vec![ContentBlock::text(text)],
            SystemPrompt::Blocks(blocks) => blocks,
        };
        if let Some(ContentBlock::Text { cache_control, .. }) = blocks.last_mut() {
            *cache_control = Some(mark.clone());
            placed += 1;
        }
        wire.system = Some(SystemPrompt::Blocks(blocks));
    }
    for message in wire.messages.iter_mut().rev().take(2) {
        if placed == MAX_CACHE_MARKS {
            break;
        }
        // The encoder writes every message as blocks.
        let MessageContent::Blocks(blocks) = &mut message.content else {
            continue;
        };
        let markable = blocks.iter_mut().rev().find_map(|block| match block {
            ContentBlock::Text {
                text,
                cache_control,
                ..
            } if !text.is_empty() => Some(cache_control),
            ContentBlock::Image { cache_control, .. }
            | ContentBlock::Document { cache_control, .. }
            | ContentBlock::ToolUse { cache_control, .. }
            | ContentBlock::ToolResult { cache_control, .. } => Some(cache_control),
            _ => None,
        });
        if let Some(cache_control) = markable {
            *cache_control = Some(mark.clone());
            placed += 1;
        }
    }
}

/// The smallest thinking budget the API accepts.
const MIN_THINKING_BUDGET: u32 = 1024;

/// The request's reasoning effort, unless it asks for none
/// ([`ReasoningEffort::Off`]: thinking is off when not asked for) or
/// thinking cannot be on: with
/// thinking on, the API requires the last assistant turn, when it called
/// tools, to start with a signed `thinking` block ("Expected `thinking` or
/// `redacted_thinking`, but found `tool_use`"). A turn another protocol's
/// client handed back carries no Anthropic signature, so for that
/// request thinking is left off rather than refused.
fn reasoning_for(request: &ChatRequest) -> Option<ReasoningEffort> {
    let effort = request
        .reasoning
        .filter(|effort| *effort != ReasoningEffort::Off)?;
    let last_assistant = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == Role::Assistant);
    let unsigned_tool_turn = last_assistant.is_some_and(|message| {
        let calls_tools = message
            .content
            .iter()
            .any(|part| matches!(part, ContentPart::ToolCall(_)));
        let signed = message.content.iter().any(|part| {
            matches!(part, ContentPart::Reasoning(reasoning) if encode_reasoning(reasoning).is_some())
        });
        calls_tools && !signed
    });
    if unsigned_tool_turn {
        tracing::debug!(
            "the last assistant turn called tools without signed thinking; thinking off"
        );
        return None;
    }
    Some(effort)
}

/// The blocks of the conversation, in alternating `user`/`assistant`
/// messages.
pub fn encode_messages(messages: &[Message]) -> Vec<WireMessage> {
    let mut out: Vec<(bool, Vec<ContentBlock>)> = Vec::new();
    for message in messages {
        let assistant = match message.role {
            Role::System => continue,
            Role::User | Role::Tool => false,
            Role::Assistant => true,
        };
        let blocks: Vec<ContentBlock> = message
            .content
            .iter()
            .filter_map(|part| encode_part(part, assistant))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last_assistant, last)) if *last_assistant == assistant => last.extend(blocks),
            _ => out.push((assistant, blocks)),
        }
    }
    out.into_iter()
        .map(|(assistant, mut blocks)| {
            if !assistant {
                // Tool results must open a user message.
                blocks.sort_by_key(|block| !matches!(block, ContentBlock::ToolResult { .. }));
            }
            WireMessage {
                role: if assistant { "assistant" } else { "user" }.into(),
                content: MessageContent::Blocks(blocks),
            }
        })
        .collect()
}

fn encode_part(part: &ContentPart, assistant: bool) -> Option<ContentBlock> {
    match part {
        // The API rejects empty text blocks.
        ContentPart::Text { text } if text.is_empty() => None,
        ContentPart::Text { text } => Some(ContentBlock::text(text.clone())),
        ContentPart::Image { source } if !assistant => Some(ContentBlock::Image {
            source: encode_image(source),
            cache_control: None,
        }),
        ContentPart::Image { .. } => None,
        ContentPart::ToolCall(call) if assistant => Some(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.name.clone(),
            input: arguments_object(&call.arguments),
            cache_control: None,
        }),
        ContentPart::ToolCall(_) => None,
        ContentPart::ToolResult(result) if !assistant => Some(ContentBlock::ToolResult {
            tool_use_id: result.call_id.clone(),
            content: (!result.content.is_empty())
                .then(|| ToolResultContent::Text(result.content.clone())),
            is_error: result.is_error.then_some(true),
            cache_control: None,
        }),
        ContentPart::ToolResult(_) => None,
        ContentPart::Reasoning(reasoning) if assistant => encode_reasoning(reasoning),
        ContentPart::Reasoning(_) => None,
        // Anthropic reads PDFs; any other type is named.
        ContentPart::Document(document)
            if !assistant
                && matches!(&document.source, DocumentSource::Base64 { media_type, .. }
                    if media_type != "application/pdf") =>
        {
            Some(ContentBlock::text(document.type_note()))
        }
        ContentPart::Document(document) if !assistant => Some(ContentBlock::Document {
            source: match &document.source {
                DocumentSource::Base64 { media_type, data } => WireDocumentSource::Base64 {
                    media_type: media_type.clone(),
                    data: data.clone(),
                },
                DocumentSource::Url { url } => WireDocumentSource::Url { url: url.clone() },
            },
            title: document.title.clone(),
            context: None,
            citations: None,
            cache_control: None,
        }),
        ContentPart::Document(_) => None,
    }
}

fn encode_reasoning(reasoning: &Reasoning) -> Option<ContentBlock> {
    // Another provider's signature would be rejected: leave it out.
    if !reasoning.signed_for(ORIGIN) {
        return None;
    }
    let signature = reasoning.signature.clone()?;
    Some(if reasoning.redacted {
        ContentBlock::RedactedThinking { data: signature }
    } else {
        ContentBlock::Thinking {
            thinking: reasoning.text.clone(),
            signature,
        }
    })
}

/// A call's argument text as the JSON object `input` must be: anything that
/// is not a JSON object (empty, invalid, an array…) becomes `{}`.
pub fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// An image source; `data:` URLs become inline base64.
pub fn encode_image(source: &ImageSource) -> WireImageSource {
    match source {
        ImageSource::Base64 { media_type, data } => WireImageSource::Base64 {
            media_type: media_type.clone(),
            data: data.clone(),
        },
        ImageSource::Url { url } => match parse_data_url(url) {
            Some((media_type, data)) => WireImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            },
            None => WireImageSource::Url { url: url.clone() },
        },
    }
}

/// `(media type, base64 data)` of a `data:<type>;base64,<data>` URL.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// Maps `stop_reason`, with the `stop_sequence` that ended the answer where
/// it says.
pub fn stop_reason(reason: &str, stop_sequence: Option<&str>) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence(stop_sequence.map(str::to_owned)),
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::Refusal,
        other => StopReason::Other(other.to_owned()),
    }
}

/// The `stop_reason` spelling of a [`StopReason`] (for the gateway direction).
///
/// A reason of another provider's (Gemini's `MALFORMED_FUNCTION_CALL`,
/// vLLM's `abort`) is outside the values SDKs know, so it becomes
/// `end_turn`; Anthropic's own rarer ones (`pause_turn`,
/// `model_context_window_exceeded`) pass through.
pub fn stop_reason_name(reason: &StopReason) -> String {
    match reason {
        StopReason::EndTurn | StopReason::Cancelled => "end_turn".into(),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopSequence(_) => "stop_sequence".into(),
        StopReason::ToolUse => "tool_use".into(),
        StopReason::ContentFilter | StopReason::Refusal => "refusal".into(),
        StopReason::Other(other)
            if matches!(
                other.as_str(),
                "pause_turn" | "model_context_window_exceeded"
            ) =>
        {
            other.clone()
        }
        StopReason::Other(other) => {
            tracing::debug!(reason = %other, "an upstream stop reason Anthropic lacks: end_turn");
            "end_turn".into()
        }
    }
}

/// Decodes a complete response. `structured_tool` is the name returned by
/// [`structured_output_tool`] for the request, whose call becomes the
/// answer's text.
///
/// A `tool_use` stop reason without any remaining tool call (only the
/// structured-output tool was called) becomes `end_turn`.
pub fn decode_response(response: MessagesResponse, structured_tool: Option<&str>) -> ChatResponse {
    let structured_used = structured_tool.is_some_and(|name| {
        response
            .content
            .iter()
            .any(|block| matches!(block, ContentBlock::ToolUse { name: n, .. } if n == name))
    });
    let mut content = Vec::new();
    for block in response.content {
        match block {
            // The structured answer replaces any preamble text.
            ContentBlock::Text { .. } if structured_used => {}
            ContentBlock::Text { text, .. } if text.is_empty() => {}
            ContentBlock::Text { text, .. } => push_text(&mut content, text),
            ContentBlock::ToolUse { name, input, .. } if Some(name.as_str()) == structured_tool => {
                push_text(&mut content, input_text(&input))
            }
            ContentBlock::ToolUse {
                id, name, input, ..
            } => content.push(ContentPart::ToolCall(ToolCall::new(
                id,
                name,
                input_text(&input),
            ))),
            ContentBlock::Thinking {
                thinking,
                signature,
            } => content.push(ContentPart::Reasoning(Reasoning {
                text: thinking,
                signature: (!signature.is_empty()).then_some(signature),
                origin: Some(ORIGIN.into()),
                ..Reasoning::default()
            })),
            ContentBlock::RedactedThinking { data } => {
                content.push(ContentPart::Reasoning(Reasoning {
                    text: String::new(),
                    signature: Some(data),
                    redacted: true,
                    id: None,
                    origin: Some(ORIGIN.into()),
                }))
            }
            ContentBlock::Image { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::ToolResult { .. }
            | ContentBlock::Other(_) => {}
        }
    }
    let has_calls = content
        .iter()
        .any(|part| matches!(part, ContentPart::ToolCall(_)));
    let stop_sequence = response.stop_sequence.as_deref();
    let stop_reason = match response
        .stop_reason
        .as_deref()
        .map(|reason| stop_reason(reason, stop_sequence))
    {
        Some(StopReason::ToolUse) if !has_calls => StopReason::EndTurn,
        Some(reason) => reason,
        None if has_calls => StopReason::ToolUse,
        None => StopReason::EndTurn,
    };
    ChatResponse {
        id: (!response.id.is_empty()).then_some(response.id),
        model: (!response.model.is_empty()).then_some(response.model),
        message: Message {
            role: Role::Assistant,
            content,
        },
        usage: Usage::from(&response.usage),
        timings: None,
        context_edits: applied_context_edits(response.context_management.as_ref()),
        refusal_details: refusal_details(response.stop_details.as_ref())
            .filter(|_| stop_reason == StopReason::Refusal),
        stop_reason,
    }
}

fn push_text(content: &mut Vec<ContentPart>, text: String) {
    match content.last_mut() {
        Some(ContentPart::Text { text: last }) => last.push_str(&text),
        _ => content.push(ContentPart::Text { text }),
    }
}

/// A `tool_use` input as argument text (`{}` when absent).
fn input_text(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// Maps an API error (`error.type` and message) to an [`LlmError`].
pub fn api_error(provider: &str, error: &ApiError) -> LlmError {
    let message = if error.message.is_empty() {
        error.kind.clone()
    } else {
        error.message.clone()
    };
    let kind = match error.kind.as_str() {
        "overloaded_error" => ErrorKind::Overloaded,
        "rate_limit_error" => ErrorKind::RateLimited { retry_after: None },
        "invalid_request_error" | "request_too_large" if is_context_length_message(&message) => {
            context_length_kind(&message)
        }
        "invalid_request_error" | "request_too_large" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" | "billing_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "timeout_error" => ErrorKind::Timeout,
        _ => ErrorKind::Server,
    };
    // The HTTP status Anthropic documents for each type, so that an error
    // sent inside a stream (or with a success status) reads like one sent
    // with its status.
    let status = match error.kind.as_str() {
        "invalid_request_error" => Some(400),
        "authentication_error" => Some(401),
        "billing_error" => Some(402),
        "permission_error" => Some(403),
        "not_found_error" => Some(404),
        "request_too_large" => Some(413),
        "rate_limit_error" => Some(429),
        "api_error" => Some(500),
        "timeout_error" => Some(504),
        "overloaded_error" => Some(529),
        _ => None,
    };
    let error = LlmError::new(kind, provider, message);
    match status {
        Some(status) => error.with_status(status),
        None => error,
    }
}

/// What a streamed content block is, by its wire index.
#[derive(Debug)]
enum Block {
    Text,
    Thinking {
        signature: String,
    },
    Redacted,
    Tool {
        index: u32,
        args_seen: bool,
        start_input: Option<String>,
    },
    Structured {
        args_seen: bool,
        start_input: Option<String>,
    },
    Other,
}

/// Decodes a Messages SSE stream into answer events.
///
/// Text, thinking and tool-input fragments are passed on as they arrive (a
/// tool call is closed at its `content_block_stop`); a thinking block's
/// signature is emitted when the block stops. `ping` and unknown event types
/// are ignored; an `error` event ends the stream with its mapped error (see
/// [`api_error`]). The answer is complete only at `message_stop`: a stream
/// that ends before it is a [`ErrorKind::Connection`] error, even after
/// `message_delta`.
#[derive(Debug)]
pub struct EventDecoder {
    provider: String,
    structured_tool: Option<String>,
    blocks: HashMap<u32, Block>,
    /// Text held back while a structured answer may still replace it.
    held_text: String,
    structured_used: bool,
    /// The stop reason of `message_delta`, recorded at `message_stop`.
    stop: Option<StopReason>,
}

impl EventDecoder {
    /// A decoder for `provider`'s stream.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            structured_tool: None,
            blocks: HashMap::new(),
            held_text: String::new(),
            structured_used: false,
            stop: None,
        }
    }

    /// The same decoder, turning calls of `tool` (the request's
    /// [`structured_output_tool`]) into answer text.
    pub fn with_structured_tool(mut self, tool: Option<String>) -> Self {
        self.structured_tool = tool;
        self
    }

    fn error(&self, message: String) -> LlmError {
        LlmError::new(ErrorKind::Server, self.provider.clone(), message)
    }

    fn text(&mut self, text: &str, out: &mut StreamAssembler) {
        if self.structured_tool.is_some() {
            // The structured answer must be the whole text; hold any preamble
            // until it is known whether the tool was called.
            if !self.structured_used {
                self.held_text.push_str(text);
            }
        } else {
            out.text(text);
        }
    }

    fn block_start(&mut self, index: u32, block: ContentBlock, out: &mut StreamAssembler) {
        let state = match block {
            ContentBlock::Text { text, .. } => {
                self.text(&text, out);
                Block::Text
            }
            ContentBlock::Thinking {
                thinking,
                signature,
            } => {
                out.reasoning(&thinking);
                Block::Thinking { signature }
            }
            ContentBlock::RedactedThinking { data } => {
                out.reasoning_signature(&data, true);
                Block::Redacted
            }
            ContentBlock::ToolUse {
                id, name, input, ..
            } => {
                let start_input = match &input {
                    Value::Object(map) if !map.is_empty() => Some(input.to_string()),
                    _ => None,
                };
                if self.structured_tool.as_deref() == Some(name.as_str()) {
                    self.structured_used = true;
                    self.held_text.clear();
                    Block::Structured {
                        args_seen: false,
                        start_input,
                    }
                } else {
                    Block::Tool {
                        index: out.tool_start(&id, &name),
                        args_seen: false,
                        start_input,
                    }
                }
            }
            ContentBlock::Image { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::ToolResult { .. }
            | ContentBlock::Other(_) => Block::Other,
        };
        self.blocks.insert(index, state);
    }

    fn block_delta(&mut self, index: u32, delta: BlockDelta, out: &mut StreamAssembler) {
        match (self.blocks.get_mut(&index), delta) {
            (Some(Block::Text) | None, BlockDelta::TextDelta { text }) => self.text(&text, out),
            (Some(Block::Thinking { .. }) | None, BlockDelta::ThinkingDelta { thinking }) => {
                out.reasoning(&thinking)
            }
            (
                Some(Block::Thinking { signature }),
                BlockDelta::SignatureDelta { signature: more },
            ) => signature.push_str(&more),
            (
                Some(Block::Tool {
                    index, args_seen, ..
                }),
                BlockDelta::InputJsonDelta { partial_json },
            ) if !partial_json.is_empty() => {
                *args_seen = true;
                out.tool_args(*index, &partial_json);
            }
            (
                Some(Block::Structured { args_seen, .. }),
                BlockDelta::InputJsonDelta { partial_json },
            ) if !partial_json.is_empty() => {
                *args_seen = true;
                out.text(&partial_json);
            }
            // Citations, deltas of unknown blocks, mismatched deltas.
            _ => {}
        }
    }

    fn block_stop(&mut self, index: u32, out: &mut StreamAssembler) {
        match self.blocks.remove(&index) {
            Some(Block::Thinking { signature }) if !signature.is_empty() => {
                out.reasoning_signature(&signature, false)
            }
            Some(Block::Tool {
                index,
                args_seen,
                start_input,
            }) => {
                if !args_seen {
                    out.tool_args(index, start_input.as_deref().unwrap_or("{}"));
                }
                out.tool_end(index, None);
            }
            Some(Block::Structured {
                args_seen: false,
                start_input,
            }) => out.text(start_input.as_deref().unwrap_or("{}")),
            _ => {}
        }
    }

    fn message_delta(
        &mut self,
        delta: MessageDeltaBody,
        usage: Option<WireUsage>,
        out: &mut StreamAssembler,
    ) {
        if !self.held_text.is_empty() {
            out.text(&std::mem::take(&mut self.held_text));
        }
        if let Some(usage) = &usage {
            out.merge_usage(Usage::from(usage));
        }
        if let Some(details) = refusal_details(delta.stop_details.as_ref()) {
            out.refusal_details(details);
        }
        if let Some(reason) = delta.stop_reason.as_deref() {
            self.stop = Some(match stop_reason(reason, delta.stop_sequence.as_deref()) {
                // Only the structured-output tool was called: that is the answer.
                StopReason::ToolUse if !out.has_tool_calls() => StopReason::EndTurn,
                other => other,
            });
        }
    }
}

/// SSE event types this decoder knows; one of them failing to parse is an
/// error, not an unknown event.
const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

impl WireDecoder<SseEvent> for EventDecoder {
    fn decode(&mut self, event: SseEvent, out: &mut StreamAssembler) -> Result<Decoded, LlmError> {
        out.set_origin(ORIGIN);
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Decoded::More);
        }
        let mut value: Value = serde_json::from_str(data).map_err(|error| {
            self.error(format!("invalid stream event ({error}): {}", preview(data)))
        })?;
        // The `type` field repeats the SSE event name; fill it in if absent.
        if let Value::Object(map) = &mut value
            && !map.contains_key("type")
            && !event.event.is_empty()
        {
            map.insert("type".into(), Value::String(event.event.clone()));
        }
        let parsed: MessageStreamEvent = serde_json::from_value(value).map_err(|error| {
            self.error(format!(
                "unexpected stream event ({error}): {}",
                preview(data)
            ))
        })?;
        match parsed {
            MessageStreamEvent::MessageStart { message } => {
                out.start(
                    (!message.id.is_empty()).then_some(message.id),
                    (!message.model.is_empty()).then_some(message.model),
                );
                out.merge_usage(Usage::from(&message.usage));
            }
            MessageStreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block, out),
            MessageStreamEvent::ContentBlockDelta { index, delta } => {
                self.block_delta(index, delta, out)
            }
            MessageStreamEvent::ContentBlockStop { index } => self.block_stop(index, out),
            MessageStreamEvent::MessageDelta {
                delta,
                usage,
                context_management,
            } => {
                out.context_edited(applied_context_edits(context_management.as_ref()));
                self.message_delta(delta, usage, out)
            }
            MessageStreamEvent::MessageStop {} => {
                if !self.held_text.is_empty() {
                    out.text(&std::mem::take(&mut self.held_text));
                }
                // The end marker: only now is the answer complete (a server
                // that skipped `message_delta` still ended it).
                out.stop(self.stop.take().unwrap_or(StopReason::EndTurn));
                return Ok(Decoded::Done);
            }
            MessageStreamEvent::Ping {} => {}
            MessageStreamEvent::Error { error } => return Err(api_error(&self.provider, &error)),
            MessageStreamEvent::Other(value) => {
                let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
                if KNOWN_EVENTS.contains(&kind) {
                    return Err(self.error(format!("malformed `{kind}` event: {}", preview(data))));
                }
                tracing::debug!(provider = %self.provider, kind, "ignoring unknown stream event");
            }
        }
        Ok(Decoded::More)
    }

    fn truncated(&self) -> LlmError {
        LlmError::new(
            ErrorKind::Connection,
            self.provider.clone(),
            "the stream ended before message_stop",
        )
    }
}

fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{ReasoningEffort, ToolSpec};

    use super::*;

    fn thinking_request(choice: ToolChoice, max_tokens: Option<u32>) -> ChatRequest {
        let mut request = ChatRequest::new("claude", vec![Message::user("hi")]);
        request.reasoning = Some(ReasoningEffort::Low);
        request.max_tokens = max_tokens;
        request.tools = vec![ToolSpec {
            name: "read".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
            strict: false,
        }];
        request.tool_choice = choice;
        request
    }

    fn options() -> EncodeOptions {
        EncodeOptions::default()
    }

    #[test]
    fn forced_tool_choice_becomes_auto_with_thinking() {
        for choice in [
            ToolChoice::Required,
            ToolChoice::Tool {
                name: "read".into(),
            },
        ] {
            let encoded = encode_request(&thinking_request(choice, None), options());
            assert!(encoded.thinking.is_some());
            let choice = serde_json::to_value(&encoded.tool_choice).unwrap();
            assert_eq!(choice["type"], "auto", "{choice}");
        }
    }

    /// A client's own `budget_tokens` reaches an Anthropic upstream as
    /// asked (a round trip through the server side's decoder), not as its
    /// level's budget.
    #[test]
    fn a_clients_thinking_budget_travels_as_asked() {
        let wire: MessagesRequest = serde_json::from_value(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 16000,
            "thinking": {"type": "enabled", "budget_tokens": 5000},
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let (request, _) = decode_request(wire).unwrap();
        assert_eq!(request.reasoning_budget, Some(5000));
        assert_eq!(request.reasoning, Some(effort_for_budget(5000)));
        let encoded = encode_request(&request, options());
        assert_eq!(
            serde_json::to_value(&encoded.thinking).unwrap(),
            json!({"type": "enabled", "budget_tokens": 5000})
        );
        // Below the API's minimum it is raised to it.
        let mut small = request.clone();
        small.reasoning_budget = Some(100);
        let encoded = encode_request(&small, options());
        assert_eq!(
            serde_json::to_value(&encoded.thinking).unwrap(),
            json!({"type": "enabled", "budget_tokens": 1024})
        );
    }

    /// Adaptive thinking's `xhigh` and `max`, which have no level of their
    /// own, reach an Anthropic upstream as named.
    #[test]
    fn an_adaptive_effort_travels_by_name() {
        for name in ["max", "xhigh", "medium"] {
            let wire: MessagesRequest = serde_json::from_value(json!({
                "model": "claude-opus-4-7", "max_tokens": 16000,
                "thinking": {"type": "adaptive"}, "output_config": {"effort": name},
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .unwrap();
            let (request, _) = decode_request(wire).unwrap();
            let encoded = serde_json::to_value(encode_request(&request, options())).unwrap();
            assert_eq!(encoded["thinking"], json!({"type": "adaptive"}));
            assert_eq!(encoded["output_config"]["effort"], name, "{encoded}");
        }
    }

    #[test]
    fn a_tiny_max_tokens_turns_thinking_off() {
        let encoded = encode_request(&thinking_request(ToolChoice::Auto, Some(1024)), options());
        assert!(encoded.thinking.is_none());
        assert_eq!(encoded.max_tokens, 1024);
        let encoded = encode_request(&thinking_request(ToolChoice::Auto, Some(1500)), options());
        assert_eq!(
            serde_json::to_value(&encoded.thinking).unwrap(),
            json!({"type": "enabled", "budget_tokens": 1499})
        );
    }

    #[test]
    fn models_from_claude_4_6_on_take_adaptive_thinking() {
        for model in [
            "claude-opus-4-7",
            "claude-sonnet-4-6",
            "claude-opus-4-6-20260205",
            "claude-haiku-5",
            "claude-opus-5-1",
            "anthropic.claude-opus-4-7-v1:0",
            "us.anthropic.claude-sonnet-4-6-v1",
            "claude-opus-4-7@20260416",
        ] {
            assert!(takes_adaptive_thinking(model), "{model}");
        }
        for model in [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-20250514",
            "claude-opus-4-1-20250805",
            "claude-3-7-sonnet-20250219",
            "claude-3-5-haiku-latest",
            "claude",
            "qwen2.5-coder-7b",
            "claude-sonnet",
        ] {
            assert!(!takes_adaptive_thinking(model), "{model}");
        }
    }

    #[test]
    fn adaptive_thinking_carries_the_effort() {
        let mut request = thinking_request(ToolChoice::Auto, None);
        request.model = "claude-opus-4-7".into();
        request.reasoning = Some(ReasoningEffort::Medium);
        let encoded = serde_json::to_value(encode_request(&request, options())).unwrap();
        assert_eq!(encoded["thinking"], json!({"type": "adaptive"}));
        assert_eq!(encoded["output_config"], json!({"effort": "medium"}));
        assert!(encoded.get("temperature").is_none(), "{encoded}");
        // A defaulted limit leaves room for the effort's thinking.
        request.max_tokens = None;
        request.reasoning = Some(ReasoningEffort::High);
        let encoded = encode_request(&request, options());
        assert!(encoded.max_tokens > ReasoningEffort::High.budget_tokens());
        request.reasoning = Some(ReasoningEffort::Medium);
        // No budget to fit: a small answer limit keeps it, unchanged.
        request.max_tokens = Some(1000);
        let encoded = serde_json::to_value(encode_request(&request, options())).unwrap();
        assert_eq!(encoded["thinking"], json!({"type": "adaptive"}));
        assert_eq!(encoded["max_tokens"], 1000);
        request.max_tokens = None;
        // An older model keeps its token budget, and no effort.
        request.model = "claude-sonnet-4-5".into();
        let encoded = serde_json::to_value(encode_request(&request, options())).unwrap();
        assert_eq!(encoded["thinking"]["type"], "enabled");
        assert!(encoded.get("output_config").is_none(), "{encoded}");
        // No reasoning asked for: thinking left off (Claude's default), on
        // either kind of model, and sampling kept.
        request.reasoning = Some(ReasoningEffort::Off);
        request.sampling.temperature = Some(0.5);
        for model in ["claude-sonnet-4-5", "claude-opus-4-7"] {
            request.model = model.into();
            let encoded = serde_json::to_value(encode_request(&request, options())).unwrap();
            assert!(encoded.get("thinking").is_none(), "{encoded}");
            assert!(encoded.get("output_config").is_none(), "{encoded}");
            assert!(encoded.get("temperature").is_some(), "{encoded}");
        }
    }

    /// The API refuses thinking when the last assistant turn called tools
    /// without a signed thinking block, as one another protocol's client
    /// handed back has.
    #[test]
    fn thinking_is_off_after_a_tool_turn_without_signed_thinking() {
        let tool_turn = |reasoning: Option<Reasoning>| {
            let mut request = thinking_request(ToolChoice::Auto, None);
            let mut content: Vec<ContentPart> =
                reasoning.map(ContentPart::Reasoning).into_iter().collect();
            content.push(ContentPart::ToolCall(ToolCall::new(
                "toolu_1", "read", "{}",
            )));
            request.messages.push(Message {
                role: Role::Assistant,
                content,
            });
            request
                .messages
                .push(Message::tool_result("toolu_1", "done"));
            encode_request(&request, options())
        };
        assert!(tool_turn(None).thinking.is_none());
        let unsigned = Reasoning {
            text: "plan".into(),
            ..Reasoning::default()
        };
        assert!(tool_turn(Some(unsigned)).thinking.is_none());
        let signed = Reasoning {
            text: "plan".into(),
            signature: Some("sig".into()),
            ..Reasoning::default()
        };
        let encoded = tool_turn(Some(signed));
        assert!(encoded.thinking.is_some());
        let turn = serde_json::to_value(&encoded.messages[1]).unwrap();
        assert_eq!(turn["content"][0]["type"], "thinking", "{turn}");
    }

    /// Counts the `cache_control` marks anywhere in `value`.
    fn marks(value: &Value) -> usize {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(key, inner)| usize::from(key == "cache_control") + marks(inner))
                .sum(),
            Value::Array(items) => items.iter().map(marks).sum(),
            _ => 0,
        }
    }

    #[test]
    fn a_client_that_caches_gets_its_prompts_stable_points_marked() {
        let mark = json!({"type": "ephemeral", "ttl": "1h"});
        let mut request = thinking_request(ToolChoice::Auto, Some(4096));
        request
            .messages
            .insert(0, Message::system("You are terse."));
        let signed = Reasoning {
            text: "plan".into(),
            signature: Some("sig".into()),
            ..Reasoning::default()
        };
        request.messages.push(Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::Text {
                    text: "Reading.".into(),
                },
                ContentPart::ToolCall(ToolCall::new("toolu_1", "read", "{}")),
                ContentPart::Reasoning(signed),
            ],
        });
        request
            .messages
            .push(Message::tool_result("toolu_1", "done"));
        // Without the client's mark, none: caching costs a write first.
        let plain = serde_json::to_value(encode_request(&request, options())).unwrap();
        assert_eq!(marks(&plain), 0, "{plain}");

        request.prompt_cache = Some(mark.clone());
        let wire = serde_json::to_value(encode_request(&request, options())).unwrap();
        assert_eq!(marks(&wire), 4, "{wire}");
        assert_eq!(wire["tools"][0]["cache_control"], mark);
        assert_eq!(wire["system"][0]["text"], "You are terse.");
        assert_eq!(wire["system"][0]["cache_control"], mark);
        let messages = wire["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        assert_eq!(last["content"][0]["type"], "tool_result", "{last}");
        assert_eq!(last["content"][0]["cache_control"], mark);
        // The assistant turn's thinking block is last there: the tool call
        // before it carries the mark.
        let turn = &messages[messages.len() - 2]["content"];
        let marked: Vec<&str> = turn
            .as_array()
            .unwrap()
            .iter()
            .filter(|block| block.get("cache_control").is_some())
            .map(|block| block["type"].as_str().unwrap())
            .collect();
        assert_eq!(marked, ["tool_use"], "{turn}");

        // A short conversation: one mark.
        let mut short = ChatRequest::new("claude", vec![Message::user("hi")]);
        short.prompt_cache = Some(mark.clone());
        let wire = serde_json::to_value(encode_request(&short, options())).unwrap();
        assert_eq!(marks(&wire), 1, "{wire}");
        assert_eq!(wire["messages"][0]["content"][0]["cache_control"], mark);
    }
}
