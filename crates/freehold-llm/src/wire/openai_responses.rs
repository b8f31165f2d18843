//! OpenAI Responses (`POST /v1/responses`): typed input and output items,
//! reasoning that round-trips as encrypted content, and a stream of named
//! semantic events (`response.output_text.delta`…).
//!
//! Freehold uses the API statelessly: every request carries the whole
//! conversation as `input` with `store: false` and never a
//! `previous_response_id`. When reasoning is requested it also asks for
//! `include: ["reasoning.encrypted_content"]`, so that each reasoning item can
//! be sent back (summary and encrypted content) on the next turn.
//!
//! Mapping of a [`ChatRequest`]:
//! - system messages → `instructions`, joined by a blank line;
//! - user text and images → `message` items with `input_text` /
//!   `input_image` parts; assistant text → `message` items with `output_text`
//!   parts; tool calls → `function_call` items; tool results →
//!   `function_call_output` items; reasoning parts that carry a signature →
//!   `reasoning` items (`id` from [`Reasoning::id`], `encrypted_content` from
//!   the signature);
//! - tools → flat `{"type":"function","name",…}` definitions;
//!   `response_format` → `text.format`; reasoning effort → `reasoning`.
//!
//! What the protocol cannot express is dropped with a `tracing::debug!`
//! event: stop sequences, top-k, seed, presence and frequency penalties.
//!
//! The types derive both `Serialize` and `Deserialize`, so that a gateway can
//! decode its clients' requests and encode its responses with them. Unknown
//! item, content and event types deserialize to an `Other` variant (their
//! contents are not kept); unknown fields are ignored.

use std::collections::HashMap;
use std::time::Duration;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, Document, DocumentSource, ErrorKind, LlmError, Message,
    Reasoning, ReasoningEffort, ResponseFormat, Role, StopReason, ToolCall, ToolChoice, Usage,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
use crate::http::{context_length_kind, is_context_length_message};
use crate::sse::SseEvent;
use crate::wire::openai_api;
use crate::wire::openai_chat::{generated_call_id, image_url};
use crate::wire::text_or::TextOr;

mod compaction;
mod read_item;
mod serve;
#[cfg(test)]
mod serve_tests;

pub use compaction::{
    compaction_content, compaction_item, compaction_item_for, compaction_summary,
    request_after_compaction, summary_request,
};
pub use serve::{
    ResponseStreamEncoder, ServeOptions, decode_compact_request, decode_request, encode_compacted,
    encode_compaction, encode_error, encode_response, encode_response_for,
};

/// What `include` must name for reasoning items to carry `encrypted_content`.
pub const INCLUDE_ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// The origin stamped on reasoning signatures this protocol produces.
pub const ORIGIN: &str = "openai-responses";

/// A request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// The model.
    pub model: String,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The conversation: a plain string or typed items.
    #[serde(default)]
    pub input: ResponseInput,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","name":…}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether several calls may come in one answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The output limit, reasoning tokens included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Output format (structured output) and verbosity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    /// Reasoning effort and summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    /// Extra output to include (`reasoning.encrypted_content`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Whether the provider keeps the response (Freehold sends `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Whether to stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// A stored response to continue from (never sent by Freehold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// End-user id (OpenAI's older field for it; read from clients, never
    /// sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The end user's id, for OpenAI's abuse monitoring (at most 64
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    /// The key that groups requests onto one prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// The processing tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Server-side context management: a `compaction` entry asks for the
    /// conversation to be compacted before it is answered once it reaches
    /// `compact_threshold` tokens (never sent by Freehold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<Vec<ContextManagementEntry>>,
}

/// An entry of a request's `context_management`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextManagementEntry {
    /// `compaction`, the only kind the API has.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The input tokens past which the conversation is compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_threshold: Option<u64>,
}

/// `input`: one user text, or a list of items.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponseInput {
    /// A single user message.
    Text(String),
    /// Typed items, oldest first.
    Items(Vec<Item>),
}

impl Default for ResponseInput {
    fn default() -> Self {
        Self::Items(Vec::new())
    }
}

impl ResponseInput {
    /// The input as items: a plain string is one user message.
    pub fn into_items(self) -> Vec<Item> {
        match self {
            Self::Text(text) => vec![Item::Message(MessageItem {
                id: None,
                role: "user".into(),
                content: ItemContent::Text(text),
                status: None,
            })],
            Self::Items(items) => items,
        }
    }
}

/// Read by hand rather than untagged (`wire::text_or`), so that a bad item's
/// error reaches the client instead of "did not match any variant".
impl<'de> Deserialize<'de> for ResponseInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::read(deserializer, "a string or a list of input items")? {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(items) => Self::Items(items),
            },
        )
    }
}

/// An input or output item.
///
/// A message may come without its `type`, as `{"role": "user", "content":
/// "…"}`: OpenAI accepts that shape in `input` (its documentation's own
/// examples use it), so it reads as a `message` here too. Read by hand
/// (`read_item`), in one pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A message of the user, the assistant, the system or the developer.
    Message(MessageItem),
    /// A call of a function tool by the model.
    FunctionCall(FunctionCallItem),
    /// The result of a function call.
    FunctionCallOutput(FunctionCallOutputItem),
    /// A call of a freeform (`custom`) tool: its input is plain text.
    CustomToolCall(CustomToolCallItem),
    /// The result of a freeform tool's call.
    CustomToolCallOutput(FunctionCallOutputItem),
    /// The model's reasoning.
    Reasoning(ReasoningItem),
    /// Tools declared in the input rather than in `tools`: Codex sends its
    /// tools this way, first in `input`, to models it runs in its "lite"
    /// mode (gpt-5.6's), with `tools` left out.
    AdditionalTools(AdditionalToolsItem),
    /// A call of Codex's `tool_search` (its search over the tools it holds
    /// back from `tools`, which it runs itself).
    ToolSearchCall(ToolSearchCallItem),
    /// What a `tool_search` found: the tools, declared as in `tools`.
    ToolSearchOutput(ToolSearchOutputItem),
    /// A request to compact the conversation before it, in place of an
    /// answer: OpenAI's, which Codex sends to a provider named `OpenAI`
    /// when the context fills. It must be the last input item.
    CompactionTrigger(CompactionTriggerItem),
    /// A compacted conversation: what came before it, in one opaque
    /// `encrypted_content`.
    Compaction(CompactionItem),
    /// Any other item (web search, file search, computer use…).
    Other,
}

/// A `compaction_trigger` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionTriggerItem {
    /// The item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A `compaction` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionItem {
    /// The item id (`cmp_…`), on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The compacted conversation, opaque to the client: OpenAI's is
    /// encrypted, the gateway's is marked as its own (see
    /// [`compaction_content`]).
    #[serde(default)]
    pub encrypted_content: String,
}

/// A `tool_search_call` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolSearchCallItem {
    /// The item id (`tsc_…`), on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call id that the output refers to (Codex may send `null` for a
    /// search the server ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `client`: the client runs the search (the only kind the gateway
    /// serves); `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// The search's arguments, a JSON object (`query`, `limit`).
    #[serde(default)]
    pub arguments: Value,
    /// `in_progress` or `completed`, on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A `tool_search_output` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolSearchOutputItem {
    /// The item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call it answers (`null` for a search the server ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `client` or `server`: who ran the search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// The tools found (functions, or `namespace` tools holding them).
    #[serde(default)]
    pub tools: Vec<WireTool>,
}

/// An `additional_tools` item: tools as `tools` declares them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdditionalToolsItem {
    /// The tools.
    #[serde(default)]
    pub tools: Vec<WireTool>,
}

/// A `message` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageItem {
    /// The item id (`msg_…`), on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `user`, `assistant`, `system` or `developer`.
    pub role: String,
    /// The content.
    #[serde(default)]
    pub content: ItemContent,
    /// `in_progress`, `completed` or `incomplete`, on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Message (or function output) content: plain text or typed parts (read
/// by its first token, `read_item`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ItemContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<ContentItem>),
}

impl Default for ItemContent {
    fn default() -> Self {
        Self::Parts(Vec::new())
    }
}

impl ItemContent {
    /// The text of every text part (input or output) joined.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|part| match part {
                    ContentItem::InputText { text } | ContentItem::OutputText { text, .. } => {
                        Some(text.as_str())
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

/// A typed content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentItem {
    /// Text written by the user.
    InputText {
        /// The text.
        text: String,
    },
    /// An image sent by the user.
    InputImage {
        /// An `https://` or `data:` URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_url: Option<String>,
        /// An uploaded file's id, instead of a URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        /// `low`, `high` or `auto`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Text written by the model.
    OutputText {
        /// The text.
        text: String,
        /// Citations and other annotations; always written, even empty, as
        /// OpenAI does (its SDKs' types require the list).
        #[serde(default)]
        annotations: Vec<Value>,
    },
    /// The model's refusal to answer.
    Refusal {
        /// Why it refused.
        refusal: String,
    },
    /// A file sent by the user (a PDF).
    InputFile {
        /// Its bytes as a `data:` URL (`data:application/pdf;base64,…`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_data: Option<String>,
        /// Its name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// A URL OpenAI fetches it from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
        /// An uploaded file's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
    },
    /// Any other part (audio…).
    #[serde(other)]
    Other,
}

impl ContentItem {
    /// A document as an `input_file` part.
    pub fn input_file(document: &Document) -> Self {
        let (file_data, file_url) = match &document.source {
            DocumentSource::Base64 { media_type, data } => {
                (Some(format!("data:{media_type};base64,{data}")), None)
            }
            DocumentSource::Url { url } => (None, Some(url.clone())),
        };
        Self::InputFile {
            filename: file_data.as_ref().map(|_| document_filename(document)),
            file_data,
            file_url,
            file_id: None,
        }
    }
}

/// The file name a document is sent under (OpenAI requires one with inline
/// bytes): its title, or `document.pdf`.
pub fn document_filename(document: &Document) -> String {
    document
        .title
        .clone()
        .filter(|title| !title.is_empty())
        .unwrap_or_else(|| "document.pdf".into())
}

/// A `function_call` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    /// The item id (`fc_…`), on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call id (`call_…`) that the output refers to.
    #[serde(default)]
    pub call_id: String,
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// The arguments as JSON text (empty while they stream).
    #[serde(default)]
    pub arguments: String,
    /// `in_progress`, `completed` or `incomplete`, on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The namespace of a function declared in a `namespace` tool (its
    /// `name` is then the function's name within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A `custom_tool_call` item: a call of a freeform tool, whose input is
/// text in the tool's own format rather than JSON arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomToolCallItem {
    /// The item id (`ctc_…`), on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call id that the output refers to.
    #[serde(default)]
    pub call_id: String,
    /// The tool's name.
    #[serde(default)]
    pub name: String,
    /// The input text (empty while it streams).
    #[serde(default)]
    pub input: String,
    /// `in_progress` or `completed`, on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The namespace of a freeform tool declared in a `namespace` tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A `function_call_output` item (also the shape of
/// `custom_tool_call_output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    /// The item id, when the provider assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The call this answers.
    pub call_id: String,
    /// The result: text, or typed parts.
    pub output: ItemContent,
    /// The item's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A `reasoning` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningItem {
    /// The item id (`rs_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Readable summaries (`summary_text` parts).
    #[serde(default)]
    pub summary: Vec<TextPart>,
    /// Raw reasoning (`reasoning_text` parts), from open-weight models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<TextPart>>,
    /// The opaque reasoning, to send back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
    /// The item's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ReasoningItem {
    /// The readable reasoning: the summary parts joined by a blank line, or,
    /// without a summary, the raw reasoning text.
    pub fn text(&self) -> String {
        let join = |parts: &[TextPart]| {
            parts
                .iter()
                .map(|part| part.text.as_str())
                .filter(|text| !text.is_empty())
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        let summary = join(&self.summary);
        if summary.is_empty() {
            self.content.as_deref().map(join).unwrap_or_default()
        } else {
            summary
        }
    }
}

/// A typed piece of text (`summary_text`, `reasoning_text`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPart {
    /// The part's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: String,
}

impl TextPart {
    /// A `summary_text` part.
    pub fn summary(text: impl Into<String>) -> Self {
        Self {
            kind: "summary_text".into(),
            text: text.into(),
        }
    }
}

/// A tool definition (flat: name and parameters sit next to `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    /// `function` (other built-in tool types are not used by Freehold).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's name.
    #[serde(default)]
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
    /// A `custom` tool's input format: `{"type": "text"}`, or
    /// `{"type": "grammar", "syntax": "lark" | "regex", "definition": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// A `namespace` tool's functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// A `tool_search` tool's `client` (Codex runs the search) or `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
}

/// `text`: the output format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// The format the answer must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low`, `medium` or `high` (GPT-5 models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

/// `text.format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        schema: Value,
        /// What the format is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Whether the schema is enforced strictly.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// `reasoning`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningConfig {
    /// `minimal`, `low`, `medium` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// `auto`, `concise` or `detailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A response object: the body of a non-streamed answer, and the snapshot
/// that `response.created`, `response.completed`… events carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// The response id (`resp_…`).
    #[serde(default)]
    pub id: String,
    /// Always `response`.
    #[serde(default)]
    pub object: String,
    /// Creation time (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<serde_json::Number>,
    /// `completed`, `incomplete`, `failed`, `cancelled`, `in_progress` or
    /// `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The output items.
    #[serde(default)]
    pub output: Vec<Item>,
    /// Why the response failed (status `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResponseError>,
    /// Why the response is incomplete (status `incomplete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_details: Option<IncompleteDetails>,
    /// Token usage (on finished responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
}

/// An error object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// A machine-readable code (`rate_limit_exceeded`, `server_error`…).
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<String>,
    /// The human-readable message.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// The error's type (`invalid_request_error`…), where given.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// The request field at fault, where given.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub param: Option<String>,
}

/// `incomplete_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Usage as the Responses API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Input tokens, cached included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Cached input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_details: Option<InputTokensDetails>,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub output_tokens: u64,
    /// Reasoning output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputTokensDetails>,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
}

/// `input_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Input served from the prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Input written to the prompt cache (every lifetime).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// `output_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Output spent reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl From<&ResponseUsage> for Usage {
    fn from(wire: &ResponseUsage) -> Self {
        Usage {
            input_tokens: wire.input_tokens,
            cached_input_tokens: wire
                .input_tokens_details
                .as_ref()
                .map_or(0, |details| details.cached_tokens),
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: wire.output_tokens,
            reasoning_tokens: wire
                .output_tokens_details
                .as_ref()
                .map_or(0, |details| details.reasoning_tokens),
        }
    }
}

impl From<&Usage> for ResponseUsage {
    fn from(usage: &Usage) -> Self {
        ResponseUsage {
            input_tokens: usage.input_tokens,
            input_tokens_details: Some(InputTokensDetails {
                cached_tokens: usage.cached_input_tokens,
                cache_write_tokens: usage.cache_write_tokens,
            }),
            output_tokens: usage.output_tokens,
            output_tokens_details: Some(OutputTokensDetails {
                reasoning_tokens: usage.reasoning_tokens,
            }),
            total_tokens: usage.total_tokens(),
        }
    }
}

/// One server-sent event of a streamed response: the event and the
/// `sequence_number` every event carries (which Freehold does not need:
/// SSE over one connection is already ordered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEvent {
    /// The event's position in the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// The event.
    #[serde(flatten)]
    pub event: ResponseEvent,
}

/// The events of a streamed response, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResponseEvent {
    /// The response was created.
    #[serde(rename = "response.created")]
    Created(ResponseSnapshot),
    /// The response is being generated.
    #[serde(rename = "response.in_progress")]
    InProgress(ResponseSnapshot),
    /// The response finished; carries the usage. Ends the stream.
    #[serde(rename = "response.completed")]
    Completed(ResponseSnapshot),
    /// The response stopped early (`incomplete_details`). Ends the stream.
    #[serde(rename = "response.incomplete")]
    Incomplete(ResponseSnapshot),
    /// The response failed (`error`). Ends the stream.
    #[serde(rename = "response.failed")]
    Failed(ResponseSnapshot),
    /// A new output item begins.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded(ItemEvent),
    /// An output item is complete.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone(ItemEvent),
    /// A content part of a message begins.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded(PartEvent),
    /// A content part of a message is complete.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone(PartEvent),
    /// More answer text.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta(DeltaEvent),
    /// An output text part is complete.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone(TextDoneEvent),
    /// More refusal text.
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta(DeltaEvent),
    /// A refusal is complete.
    #[serde(rename = "response.refusal.done")]
    RefusalDone(RefusalDoneEvent),
    /// More of a function call's arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta(DeltaEvent),
    /// A function call's arguments are complete.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone(ArgumentsDoneEvent),
    /// More of a freeform tool call's input.
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomToolCallInputDelta(DeltaEvent),
    /// A freeform tool call's input is complete.
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomToolCallInputDone(InputDoneEvent),
    /// A reasoning summary part begins.
    #[serde(rename = "response.reasoning_summary_part.added")]
    ReasoningSummaryPartAdded(SummaryPartEvent),
    /// A reasoning summary part is complete.
    #[serde(rename = "response.reasoning_summary_part.done")]
    ReasoningSummaryPartDone(SummaryPartEvent),
    /// More reasoning summary.
    #[serde(rename = "response.reasoning_summary_text.delta")]
    ReasoningSummaryTextDelta(DeltaEvent),
    /// A reasoning summary text is complete.
    #[serde(rename = "response.reasoning_summary_text.done")]
    ReasoningSummaryTextDone(TextDoneEvent),
    /// More raw reasoning (open-weight models).
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta(DeltaEvent),
    /// Raw reasoning text is complete.
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone(TextDoneEvent),
    /// An error; ends the stream.
    #[serde(rename = "error")]
    Error(ErrorEvent),
    /// Any other event (annotations, built-in tools, `response.queued`…).
    #[serde(other)]
    Other,
}

/// The payload of the `response.*` lifecycle events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseSnapshot {
    /// The response as it stands.
    #[serde(default)]
    pub response: ResponseObject,
}

/// The payload of `response.output_item.added` and `.done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemEvent {
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The item (empty arguments and content on `added`).
    pub item: Item,
}

/// The payload of `response.content_part.added` and `.done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEvent {
    /// The message item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The part's position in the message.
    #[serde(default)]
    pub content_index: u32,
    /// The part.
    pub part: ContentItem,
}

/// The payload of every `….delta` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaEvent {
    /// The item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The content part's position (text, refusal and reasoning text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_index: Option<u32>,
    /// The summary part's position (reasoning summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_index: Option<u32>,
    /// The text's log probabilities: `output_text` events only, which
    /// carry a list (empty: the gateway serves none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Value>>,
    /// The new text.
    #[serde(default)]
    pub delta: String,
}

/// The payload of `response.output_text.done` and the reasoning `….done`
/// events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextDoneEvent {
    /// The item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The content part's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_index: Option<u32>,
    /// The summary part's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_index: Option<u32>,
    /// The text's log probabilities, as on [`DeltaEvent::logprobs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Value>>,
    /// The whole text.
    #[serde(default)]
    pub text: String,
}

/// The payload of `response.refusal.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefusalDoneEvent {
    /// The item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The content part's position.
    #[serde(default)]
    pub content_index: u32,
    /// The whole refusal.
    #[serde(default)]
    pub refusal: String,
}

/// The payload of `response.function_call_arguments.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArgumentsDoneEvent {
    /// The call item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The whole argument text.
    #[serde(default)]
    pub arguments: String,
}

/// The payload of `response.custom_tool_call_input.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputDoneEvent {
    /// The call item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The whole input text.
    #[serde(default)]
    pub input: String,
}

/// The payload of `response.reasoning_summary_part.added` and `.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryPartEvent {
    /// The reasoning item's id.
    #[serde(default)]
    pub item_id: String,
    /// The item's position in `output`.
    #[serde(default)]
    pub output_index: u32,
    /// The part's position in the summary.
    #[serde(default)]
    pub summary_index: u32,
    /// The part.
    #[serde(default)]
    pub part: TextPart,
}

/// The payload of an `error` event. OpenAI sends the fields flat; some
/// compatible servers nest them under `error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// A machine-readable code.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<String>,
    /// The human-readable message.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// The request field at fault.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub param: Option<String>,
    /// The nested form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResponseError>,
}

impl ErrorEvent {
    /// The error as one [`ResponseError`], whichever form it came in.
    pub fn into_error(self) -> ResponseError {
        let nested = self.error.unwrap_or_default();
        ResponseError {
            code: self.code.or(nested.code),
            message: self.message.or(nested.message),
            kind: nested.kind,
            param: self.param.or(nested.param),
        }
    }
}

/// Accepts a string, a number (some servers send numeric codes) or null.
fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    })
}

/// Encodes a request. `stream` selects a streamed answer; `for_openai`
/// says the server is OpenAI's own API (see
/// [`crate::wire::openai_chat::Dialect::openai_api`]).
pub fn encode_request(request: &ChatRequest, stream: bool, for_openai: bool) -> ResponsesRequest {
    log_unsupported(request);
    let instructions: Vec<String> = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System)
        .map(Message::text_content)
        .filter(|text| !text.is_empty())
        .collect();
    let tools = (!request.tools.is_empty()).then(|| {
        request
            .tools
            .iter()
            .map(|tool| WireTool {
                kind: "function".into(),
                name: tool.name.clone(),
                description: (!tool.description.is_empty()).then(|| tool.description.clone()),
                parameters: Some(tool.parameters.clone()),
                // Said either way: left out, the Responses API takes a
                // function as strict, which Chat Completions does not.
                strict: Some(tool.strict),
                format: None,
                tools: None,
                execution: None,
            })
            .collect()
    });
    let tool_choice = tools
        .as_ref()
        .map(|_| encode_tool_choice(&request.tool_choice));
    let effort = openai_api::effort_name(request, for_openai, false);
    let verbosity = for_openai.then(|| openai_api::verbosity(request)).flatten();
    let mut encoded = ResponsesRequest {
        model: request.model.clone(),
        instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        input: ResponseInput::Items(encode_input(&request.messages, for_openai)),
        parallel_tool_calls: tools.as_ref().and(request.parallel_tool_calls),
        tools,
        tool_choice,
        max_output_tokens: request.max_tokens,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        text: (request.response_format.is_some() || verbosity.is_some()).then(|| TextConfig {
            format: request.response_format.as_ref().map(encode_text_format),
            verbosity: verbosity.map(str::to_owned),
        }),
        include: Vec::new(),
        reasoning: None,
        store: Some(false),
        stream,
        previous_response_id: None,
        user: None,
        safety_identifier: for_openai
            .then(|| openai_api::safety_identifier(request))
            .flatten(),
        prompt_cache_key: for_openai.then(|| request.cache_key.clone()).flatten(),
        service_tier: for_openai
            .then(|| openai_api::service_tier(request))
            .flatten(),
        context_management: None,
    };
    // A summary of the reasoning only when reasoning was asked for, not for
    // the least effort a request for none gets.
    let summary = request
        .reasoning
        .is_some_and(|effort| effort != ReasoningEffort::Off);
    encoded.set_effort(effort, summary);
    encoded
}

impl ResponsesRequest {
    /// Asks for `effort` (`None`: for no `reasoning` at all), with a
    /// summary of the reasoning if `summary` and, so that it can be sent
    /// back, its encrypted content: a model that does not reason refuses
    /// that `include`.
    pub fn set_effort(&mut self, effort: Option<&str>, summary: bool) {
        self.reasoning = effort.map(|effort| ReasoningConfig {
            effort: Some(effort.to_owned()),
            summary: summary.then(|| "auto".into()),
        });
        self.include
            .retain(|name| name != INCLUDE_ENCRYPTED_REASONING);
        if self.reasoning.is_some() {
            self.include.push(INCLUDE_ENCRYPTED_REASONING.to_owned());
        }
    }
}

/// Says, at debug level, which of the request's settings the protocol has
/// no field for.
fn log_unsupported(request: &ChatRequest) {
    if !request.stop.is_empty() {
        tracing::debug!(
            model = %request.model,
            stop = ?request.stop,
            "the Responses API has no stop sequences; not sent"
        );
    }
    let sampling = &request.sampling;
    let unsupported = [
        ("top_k", sampling.top_k.is_some()),
        ("seed", sampling.seed.is_some()),
        ("presence_penalty", sampling.presence_penalty.is_some()),
        ("frequency_penalty", sampling.frequency_penalty.is_some()),
    ];
    for (name, set) in unsupported {
        if set {
            tracing::debug!(
                model = %request.model,
                parameter = name,
                "the Responses API has no such sampling parameter; ignoring it"
            );
        }
    }
}

/// `tool_choice` on the wire.
pub fn encode_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool { name } => json!({"type": "function", "name": name}),
    }
}

/// `text.format` for a structured-output request.
pub fn encode_text_format(format: &ResponseFormat) -> TextFormat {
    match format {
        ResponseFormat::JsonObject => TextFormat::JsonObject,
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => TextFormat::JsonSchema {
            name: name.clone(),
            schema: schema.clone(),
            description: None,
            strict: Some(*strict),
        },
    }
}

/// The conversation as input items (system messages excluded: they become
/// `instructions`); documents as `input_file`s where the server reads them
/// (`documents`: OpenAI's API), else as a line naming each.
pub fn encode_input(messages: &[Message], documents: bool) -> Vec<Item> {
    let mut items = Vec::new();
    for message in messages {
        match message.role {
            Role::System => {}
            Role::User => {
                // Tool results inside a user message (as Anthropic-style
                // callers put them) answer the calls before it: they come
                // first.
                push_tool_results(&message.content, &mut items);
                let parts: Vec<ContentItem> = message
                    .content
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Text { text } if !text.is_empty() => {
                            Some(ContentItem::InputText { text: text.clone() })
                        }
                        ContentPart::Image { source } => Some(ContentItem::InputImage {
                            image_url: Some(image_url(source)),
                            file_id: None,
                            detail: Some("auto".into()),
                        }),
                        // OpenAI's API reads files; another server is told
                        // one is there.
                        ContentPart::Document(document) if documents => {
                            Some(ContentItem::input_file(document))
                        }
                        ContentPart::Document(document) => Some(ContentItem::InputText {
                            text: document.note(),
                        }),
                        _ => None,
                    })
                    .collect();
                if !parts.is_empty() {
                    items.push(Item::Message(MessageItem {
                        role: "user".into(),
                        content: ItemContent::Parts(parts),
                        ..MessageItem::default()
                    }));
                }
            }
            Role::Assistant => encode_assistant(&message.content, &mut items),
            Role::Tool => push_tool_results(&message.content, &mut items),
        }
    }
    items
}

/// An assistant message as items, in the order of its parts: reasoning,
/// text and calls.
fn encode_assistant(parts: &[ContentPart], items: &mut Vec<Item>) {
    let mut text = String::new();
    let flush = |text: &mut String, items: &mut Vec<Item>| {
        if !text.is_empty() {
            items.push(Item::Message(MessageItem {
                role: "assistant".into(),
                content: ItemContent::Parts(vec![ContentItem::OutputText {
                    text: std::mem::take(text),
                    annotations: Vec::new(),
                }]),
                ..MessageItem::default()
            }));
        }
    };
    for part in parts {
        match part {
            ContentPart::Text { text: more } => text.push_str(more),
            ContentPart::Reasoning(reasoning) => {
                // Without its encrypted content a reasoning item cannot be
                // sent back statelessly: the provider stored nothing.
                let Some(signature) = &reasoning.signature else {
                    continue;
                };
                // Another provider's signature is not encrypted content.
                if !reasoning.signed_for(ORIGIN) {
                    continue;
                }
                flush(&mut text, items);
                items.push(Item::Reasoning(ReasoningItem {
                    id: reasoning.id.clone(),
                    summary: if reasoning.text.is_empty() {
                        Vec::new()
                    } else {
                        vec![TextPart::summary(reasoning.text.clone())]
                    },
                    content: None,
                    encrypted_content: Some(signature.clone()),
                    status: None,
                }));
            }
            ContentPart::ToolCall(call) => {
                flush(&mut text, items);
                items.push(Item::FunctionCall(FunctionCallItem {
                    id: None,
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: if call.arguments.is_empty() {
                        "{}".into()
                    } else {
                        call.arguments.clone()
                    },
                    status: None,
                    namespace: None,
                }));
            }
            ContentPart::Image { .. } | ContentPart::Document(_) | ContentPart::ToolResult(_) => {}
        }
    }
    flush(&mut text, items);
}

fn push_tool_results(parts: &[ContentPart], items: &mut Vec<Item>) {
    for part in parts {
        if let ContentPart::ToolResult(result) = part {
            items.push(Item::FunctionCallOutput(FunctionCallOutputItem {
                id: None,
                call_id: result.call_id.clone(),
                output: ItemContent::Text(result.content.clone()),
                status: None,
            }));
        }
    }
}

/// The stop reason of an `incomplete` response.
pub fn incomplete_reason(details: Option<&IncompleteDetails>) -> StopReason {
    match details.and_then(|details| details.reason.as_deref()) {
        Some("max_output_tokens") | None => StopReason::MaxTokens,
        Some("content_filter") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

/// The error kind of an error `code` (or, without one, its `type`) and
/// message, as sent in `response.failed`, `error` events and failed
/// non-streamed responses.
pub fn error_kind(code: Option<&str>, message: &str) -> ErrorKind {
    let code = code.unwrap_or_default();
    if code == "context_length_exceeded" || is_context_length_message(message) {
        return context_length_kind(message);
    }
    match code {
        "rate_limit_exceeded" | "rate_limit_error" | "rate_limited" | "429" => {
            ErrorKind::RateLimited {
                retry_after: retry_after_in_message(message),
            }
        }
        // A spent quota does not come back by retrying (HTTP's 402 maps the
        // same way).
        "insufficient_quota" | "billing_hard_limit_reached" => ErrorKind::Permission,
        "server_is_overloaded"
        | "overloaded"
        | "overloaded_error"
        | "slow_down"
        | "503"
        | "529" => ErrorKind::Overloaded,
        "invalid_api_key" | "authentication_error" | "401" => ErrorKind::Authentication,
        "permission_denied"
        | "permission_error"
        | "unsupported_country_region_territory"
        | "403" => ErrorKind::Permission,
        "model_not_found" | "not_found" | "not_found_error" | "404" => ErrorKind::NotFound,
        "invalid_prompt"
        | "invalid_request_error"
        | "bad_request"
        | "failed_to_download_image"
        | "image_too_large"
        | "image_too_small"
        | "image_parse_error"
        | "image_content_policy_violation"
        | "image_file_too_large"
        | "image_file_not_found"
        | "400"
        | "422" => ErrorKind::InvalidRequest,
        code if code.starts_with("invalid_")
            || code.starts_with("unsupported_")
            || code.starts_with("empty_") =>
        {
            ErrorKind::InvalidRequest
        }
        _ => ErrorKind::Server,
    }
}

/// The wait a rate-limit message asks for: OpenAI writes "Please try again
/// in 1.898s" (or "in 20ms", "in 2 seconds").
pub fn retry_after_in_message(message: &str) -> Option<Duration> {
    const NEEDLE: &str = "try again in";
    let lower = message.to_ascii_lowercase();
    let start = lower.find(NEEDLE)? + NEEDLE.len();
    let rest = lower[start..].trim_start();
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let value: f64 = rest[..number_len].parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let unit = rest[number_len..].trim_start();
    let seconds = if unit.starts_with("ms") || unit.starts_with("millisecond") {
        value / 1000.0
    } else if unit.starts_with('s') {
        value
    } else if unit.starts_with('m') {
        value * 60.0
    } else {
        return None;
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// An error object as an [`LlmError`] of `provider`. The message is not
/// redacted: callers holding keys redact it.
pub fn response_error(provider: &str, error: &ResponseError) -> LlmError {
    let message = error
        .message
        .clone()
        .filter(|message| !message.is_empty())
        .unwrap_or_else(|| "the response failed".to_owned());
    let code = error.code.as_deref().or(error.kind.as_deref());
    let message_with_code = match code {
        Some(code) if !message.contains(code) => format!("{message} ({code})"),
        _ => message.clone(),
    };
    LlmError::new(error_kind(code, &message), provider, message_with_code)
}

/// Decodes a complete (non-streamed) response.
///
/// # Errors
/// A `failed` response, as the error it carries.
pub fn decode_response(provider: &str, response: ResponseObject) -> Result<ChatResponse, LlmError> {
    let status = response.status.as_deref().unwrap_or("completed");
    if status == "failed" {
        return Err(response_error(
            provider,
            &response.error.clone().unwrap_or_default(),
        ));
    }
    let mut content = Vec::new();
    let mut refused = false;
    for item in &response.output {
        match item {
            Item::Reasoning(reasoning) => {
                let text = reasoning.text();
                let signature = reasoning
                    .encrypted_content
                    .clone()
                    .filter(|data| !data.is_empty());
                if !text.is_empty() || signature.is_some() {
                    content.push(ContentPart::Reasoning(Reasoning {
                        text,
                        signature,
                        redacted: false,
                        id: reasoning.id.clone(),
                        origin: Some(ORIGIN.into()),
                    }));
                }
            }
            Item::Message(message) => {
                let text = match &message.content {
                    ItemContent::Text(text) => text.clone(),
                    ItemContent::Parts(parts) => parts
                        .iter()
                        .filter_map(|part| match part {
                            ContentItem::OutputText { text, .. }
                            | ContentItem::InputText { text } => Some(text.as_str()),
                            ContentItem::Refusal { refusal } => {
                                refused = true;
                                Some(refusal.as_str())
                            }
                            _ => None,
                        })
                        .collect(),
                };
                if !text.is_empty() {
                    content.push(ContentPart::Text { text });
                }
            }
            Item::FunctionCall(call) => {
                content.push(ContentPart::ToolCall(ToolCall::new(
                    call_id_of(call),
                    call.name.clone(),
                    call.arguments.clone(),
                )));
            }
            Item::FunctionCallOutput(_)
            | Item::CustomToolCall(_)
            | Item::CustomToolCallOutput(_)
            | Item::AdditionalTools(_)
            | Item::ToolSearchCall(_)
            | Item::ToolSearchOutput(_)
            | Item::CompactionTrigger(_)
            | Item::Compaction(_)
            | Item::Other => {}
        }
    }
    let has_calls = content
        .iter()
        .any(|part| matches!(part, ContentPart::ToolCall(_)));
    let stop_reason = match status {
        "incomplete" => incomplete_reason(response.incomplete_details.as_ref()),
        "cancelled" => StopReason::Cancelled,
        "completed" if has_calls => StopReason::ToolUse,
        "completed" if refused => StopReason::Refusal,
        "completed" => StopReason::EndTurn,
        other => StopReason::Other(other.to_owned()),
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

/// The id results must refer to: `call_id`, else the item id, else a new one.
fn call_id_of(call: &FunctionCallItem) -> String {
    if !call.call_id.is_empty() {
        return call.call_id.clone();
    }
    call.id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(generated_call_id)
}

/// What the decoder knows of one output item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Message,
    /// A function call, with its index in the answer.
    Call(u32),
    Reasoning,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct OpenItem {
    kind: ItemKind,
    /// Whether deltas carried its content (then `.done` events add nothing).
    streamed: bool,
    /// The last reasoning summary part seen.
    summary_index: Option<u32>,
}

/// Decodes a Responses SSE stream into answer events.
///
/// Items are found by `item_id`, else by `output_index`, so that parallel
/// function calls whose argument deltas interleave stay apart (even on a
/// server that numbers every item 0). Content a server sends only in
/// `….done` events or in the final response snapshot (some compatible
/// servers skip deltas) is emitted there instead.
#[derive(Debug)]
pub struct ResponsesDecoder {
    provider: String,
    /// Every item seen, in order.
    items: Vec<OpenItem>,
    /// Output index → latest item there.
    by_output: HashMap<u32, usize>,
    /// Item id → item.
    by_id: HashMap<String, usize>,
    /// The model refused (a refusal part was seen).
    refused: bool,
}

impl ResponsesDecoder {
    /// A decoder for `provider`'s stream.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            items: Vec::new(),
            by_output: HashMap::new(),
            by_id: HashMap::new(),
            refused: false,
        }
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> LlmError {
        LlmError::new(kind, self.provider.clone(), message)
    }

    /// The item an event refers to: by id when known, else by output index.
    fn find(&self, output_index: u32, item_id: &str) -> Option<usize> {
        self.by_id
            .get(item_id)
            .or_else(|| self.by_output.get(&output_index))
            .copied()
    }

    /// Registers a new item.
    fn register(&mut self, output_index: u32, item_id: Option<&str>, item: OpenItem) -> usize {
        let slot = self.items.len();
        self.items.push(item);
        self.by_output.insert(output_index, slot);
        if let Some(id) = item_id.filter(|id| !id.is_empty()) {
            self.by_id.insert(id.to_owned(), slot);
        }
        slot
    }

    /// The item an event refers to, registered as `kind` when unknown.
    fn item_mut(&mut self, output_index: u32, item_id: &str, kind: ItemKind) -> &mut OpenItem {
        let slot = match self.find(output_index, item_id) {
            Some(slot) => slot,
            None => self.register(
                output_index,
                Some(item_id),
                OpenItem {
                    kind,
                    streamed: false,
                    summary_index: None,
                },
            ),
        };
        &mut self.items[slot]
    }

    fn item_added(&mut self, output_index: u32, item: &Item, out: &mut StreamAssembler) {
        out.start(None, None);
        let (kind, id) = match item {
            Item::Message(message) => (ItemKind::Message, message.id.as_deref()),
            Item::FunctionCall(call) => {
                let index = out.tool_start(&call_id_of(call), &call.name);
                out.tool_args(index, &call.arguments);
                (ItemKind::Call(index), call.id.as_deref())
            }
            Item::Reasoning(reasoning) => (ItemKind::Reasoning, reasoning.id.as_deref()),
            Item::FunctionCallOutput(_)
            | Item::CustomToolCall(_)
            | Item::CustomToolCallOutput(_)
            | Item::AdditionalTools(_)
            | Item::ToolSearchCall(_)
            | Item::ToolSearchOutput(_)
            | Item::CompactionTrigger(_)
            | Item::Compaction(_)
            | Item::Other => (ItemKind::Other, None),
        };
        let streamed = matches!(item, Item::FunctionCall(call) if !call.arguments.is_empty());
        self.register(
            output_index,
            id,
            OpenItem {
                kind,
                streamed,
                summary_index: None,
            },
        );
    }

    /// Emits what an item holds that its deltas did not carry, and closes
    /// it.
    fn item_done(&mut self, output_index: u32, item: &Item, out: &mut StreamAssembler) {
        out.start(None, None);
        let id = match item {
            Item::Message(message) => message.id.as_deref(),
            Item::FunctionCall(call) => call.id.as_deref(),
            Item::Reasoning(reasoning) => reasoning.id.as_deref(),
            Item::FunctionCallOutput(_)
            | Item::CustomToolCall(_)
            | Item::CustomToolCallOutput(_)
            | Item::AdditionalTools(_)
            | Item::ToolSearchCall(_)
            | Item::ToolSearchOutput(_)
            | Item::CompactionTrigger(_)
            | Item::Compaction(_)
            | Item::Other => None,
        };
        let slot = self.find(output_index, id.unwrap_or_default());
        let open = slot.map(|slot| self.items[slot]);
        let streamed = open.is_some_and(|open| open.streamed);
        let mut kind = open.map_or(ItemKind::Other, |open| open.kind);
        match item {
            Item::Message(message) => match &message.content {
                ItemContent::Parts(parts) => {
                    for part in parts {
                        match part {
                            ContentItem::OutputText { text, .. } if !streamed => out.text(text),
                            ContentItem::Refusal { refusal } => {
                                self.refused = true;
                                if !streamed {
                                    out.refusal(refusal);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ItemContent::Text(text) if !streamed => out.text(text),
                ItemContent::Text(_) => {}
            },
            Item::FunctionCall(call) => {
                let index = match kind {
                    ItemKind::Call(index) => index,
                    _ => out.tool_start(&call_id_of(call), &call.name),
                };
                if !streamed {
                    out.tool_args(index, &call.arguments);
                }
                out.tool_end(index, None);
                kind = ItemKind::Call(index);
            }
            Item::Reasoning(reasoning) => {
                if !streamed {
                    out.reasoning_with_id(&reasoning.text(), reasoning.id.as_deref());
                }
                if let Some(data) = reasoning
                    .encrypted_content
                    .as_deref()
                    .filter(|data| !data.is_empty())
                {
                    out.reasoning_signature_with_id(data, false, reasoning.id.clone());
                }
            }
            Item::FunctionCallOutput(_)
            | Item::CustomToolCall(_)
            | Item::CustomToolCallOutput(_)
            | Item::AdditionalTools(_)
            | Item::ToolSearchCall(_)
            | Item::ToolSearchOutput(_)
            | Item::CompactionTrigger(_)
            | Item::Compaction(_)
            | Item::Other => {}
        }
        let done = OpenItem {
            kind,
            streamed: true,
            summary_index: None,
        };
        match slot {
            Some(slot) => self.items[slot] = done,
            None => {
                self.register(output_index, id, done);
            }
        }
    }

    /// Emits the items of the final snapshot that no event announced.
    fn reconcile(&mut self, response: &ResponseObject, out: &mut StreamAssembler) {
        for (index, item) in response.output.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if !self.by_output.contains_key(&index) {
                self.item_done(index, item, out);
            }
        }
    }

    /// Handles the final snapshot; `incomplete` for `response.incomplete`.
    fn finish(
        &mut self,
        snapshot: ResponseSnapshot,
        incomplete: bool,
        out: &mut StreamAssembler,
    ) -> StopReason {
        let response = snapshot.response;
        out.start(
            (!response.id.is_empty()).then(|| response.id.clone()),
            (!response.model.is_empty()).then(|| response.model.clone()),
        );
        self.reconcile(&response, out);
        if let Some(usage) = &response.usage {
            out.usage(Usage::from(usage));
        }
        match response.status.as_deref() {
            _ if incomplete => incomplete_reason(response.incomplete_details.as_ref()),
            Some("incomplete") => incomplete_reason(response.incomplete_details.as_ref()),
            Some("cancelled") => StopReason::Cancelled,
            _ if self.refused && !out.has_tool_calls() => StopReason::Refusal,
            _ => StopReason::EndTurn,
        }
    }

    fn handle(
        &mut self,
        event: ResponseEvent,
        out: &mut StreamAssembler,
    ) -> Result<Decoded, LlmError> {
        match event {
            ResponseEvent::Created(snapshot) | ResponseEvent::InProgress(snapshot) => {
                let response = snapshot.response;
                out.start(
                    (!response.id.is_empty()).then_some(response.id),
                    (!response.model.is_empty()).then_some(response.model),
                );
            }
            ResponseEvent::OutputItemAdded(event) => {
                self.item_added(event.output_index, &event.item, out);
            }
            ResponseEvent::OutputItemDone(event) => {
                self.item_done(event.output_index, &event.item, out);
            }
            ResponseEvent::OutputTextDelta(delta) => {
                out.start(None, None);
                self.item_mut(delta.output_index, &delta.item_id, ItemKind::Message)
                    .streamed = true;
                out.text(&delta.delta);
            }
            ResponseEvent::RefusalDelta(delta) => {
                out.start(None, None);
                self.refused = true;
                self.item_mut(delta.output_index, &delta.item_id, ItemKind::Message)
                    .streamed = true;
                out.refusal(&delta.delta);
            }
            ResponseEvent::FunctionCallArgumentsDelta(delta) => {
                let index = self.call_index(delta.output_index, &delta.item_id)?;
                self.item_mut(delta.output_index, &delta.item_id, ItemKind::Call(index))
                    .streamed = true;
                out.tool_args(index, &delta.delta);
            }
            ResponseEvent::FunctionCallArgumentsDone(done) => {
                let index = self.call_index(done.output_index, &done.item_id)?;
                let item = self.item_mut(done.output_index, &done.item_id, ItemKind::Call(index));
                if !item.streamed {
                    item.streamed = true;
                    out.tool_args(index, &done.arguments);
                }
            }
            ResponseEvent::ReasoningSummaryTextDelta(delta) => {
                out.start(None, None);
                let item = self.item_mut(delta.output_index, &delta.item_id, ItemKind::Reasoning);
                item.streamed = true;
                // Summary parts are separate paragraphs.
                let part = delta.summary_index.unwrap_or_default();
                let id = Some(delta.item_id.as_str()).filter(|id| !id.is_empty());
                if item.summary_index.is_some_and(|last| last != part) {
                    out.reasoning_with_id("\n\n", id);
                }
                item.summary_index = Some(part);
                out.reasoning_with_id(&delta.delta, id);
            }
            ResponseEvent::ReasoningTextDelta(delta) => {
                out.start(None, None);
                self.item_mut(delta.output_index, &delta.item_id, ItemKind::Reasoning)
                    .streamed = true;
                let id = Some(delta.item_id.as_str()).filter(|id| !id.is_empty());
                out.reasoning_with_id(&delta.delta, id);
            }
            ResponseEvent::Completed(snapshot) => {
                let reason = self.finish(snapshot, false, out);
                out.stop(reason);
                return Ok(Decoded::Done);
            }
            ResponseEvent::Incomplete(snapshot) => {
                let reason = self.finish(snapshot, true, out);
                out.stop(reason);
                return Ok(Decoded::Done);
            }
            ResponseEvent::Failed(snapshot) => {
                let error = snapshot.response.error.unwrap_or_default();
                return Err(response_error(&self.provider, &error));
            }
            ResponseEvent::Error(error) => {
                return Err(response_error(&self.provider, &error.into_error()));
            }
            ResponseEvent::ContentPartAdded(_)
            | ResponseEvent::ContentPartDone(_)
            | ResponseEvent::OutputTextDone(_)
            | ResponseEvent::RefusalDone(_)
            | ResponseEvent::ReasoningSummaryPartAdded(_)
            | ResponseEvent::ReasoningSummaryPartDone(_)
            | ResponseEvent::ReasoningSummaryTextDone(_)
            | ResponseEvent::ReasoningTextDone(_)
            // Freeform tools are sent to providers as function tools, so
            // their calls come back as function calls.
            | ResponseEvent::CustomToolCallInputDelta(_)
            | ResponseEvent::CustomToolCallInputDone(_)
            | ResponseEvent::Other => {}
        }
        Ok(Decoded::More)
    }

    /// The answer index of the call an argument event belongs to.
    fn call_index(&self, output_index: u32, item_id: &str) -> Result<u32, LlmError> {
        match self
            .find(output_index, item_id)
            .map(|slot| self.items[slot].kind)
        {
            Some(ItemKind::Call(call)) => Ok(call),
            _ => Err(self.error(
                ErrorKind::Server,
                format!(
                    "function call arguments for an item that is not an open function call \
                     (output_index {output_index}, item_id {item_id:?})"
                ),
            )),
        }
    }
}

impl WireDecoder<SseEvent> for ResponsesDecoder {
    fn decode(&mut self, event: SseEvent, out: &mut StreamAssembler) -> Result<Decoded, LlmError> {
        out.set_origin(ORIGIN);
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Decoded::More);
        }
        if data == "[DONE]" {
            return Ok(Decoded::Done);
        }
        let mut value: Value = serde_json::from_str(data).map_err(|error| {
            self.error(
                ErrorKind::Server,
                format!("invalid stream event ({error}): {}", preview(data)),
            )
        })?;
        // The type is in the data; a server that only names it in `event:`
        // is still understood.
        if let Some(object) = value.as_object_mut()
            && !object.contains_key("type")
            && !event.event.is_empty()
        {
            object.insert("type".into(), Value::String(event.event.clone()));
        }
        let parsed: ServerEvent = serde_json::from_value(value).map_err(|error| {
            self.error(
                ErrorKind::Server,
                format!("unexpected stream event ({error}): {}", preview(data)),
            )
        })?;
        self.handle(parsed.event, out)
    }

    fn truncated(&self) -> LlmError {
        self.error(
            ErrorKind::Connection,
            "the stream ended before response.completed",
        )
    }
}

fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_their_sequence_number() {
        let text = r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hi","sequence_number":7}"#;
        let event: ServerEvent = serde_json::from_str(text).unwrap();
        assert_eq!(event.sequence_number, Some(7));
        assert_eq!(
            event.event,
            ResponseEvent::OutputTextDelta(DeltaEvent {
                item_id: "msg_1".into(),
                output_index: 1,
                content_index: Some(0),
                summary_index: None,
                logprobs: None,
                delta: "Hi".into(),
            })
        );
        let back: Value = serde_json::to_value(&event).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());

        let unknown: ServerEvent = serde_json::from_str(
            r#"{"type":"response.output_text.annotation.added","sequence_number":3,"annotation":{}}"#,
        )
        .unwrap();
        assert_eq!(unknown.event, ResponseEvent::Other);
    }

    #[test]
    fn items_deserialize_with_unknown_types_and_fields() {
        let items: Vec<Item> = serde_json::from_value(json!([
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "message", "id": "m", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "a", "annotations": [], "logprobs": []},
                         {"type": "output_audio", "data": "…"}]},
            {"type": "message", "role": "user", "content": "plain"},
        ]))
        .unwrap();
        assert_eq!(items[0], Item::Other);
        let Item::Message(message) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!(message.content.text(), "a");
        let Item::Message(message) = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(message.content, ItemContent::Text("plain".into()));
    }

    fn decode_all(events: &[Value]) -> Result<Vec<freehold_protocol::StreamEvent>, LlmError> {
        let mut decoder = ResponsesDecoder::new("p");
        let mut out = StreamAssembler::new();
        for event in events {
            let sse = SseEvent {
                event: String::new(),
                data: event.to_string(),
                id: None,
            };
            if decoder.decode(sse, &mut out)? == Decoded::Done {
                break;
            }
        }
        out.finish().ok_or_else(|| decoder.truncated())
    }

    #[test]
    fn calls_sharing_an_output_index_are_told_apart_by_item_id() {
        let call = |id: &str, call_id: &str| json!({"type": "function_call", "id": id, "call_id": call_id, "name": "f", "arguments": ""});
        let delta = |id: &str, delta: &str| json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": 0, "delta": delta});
        let events = decode_all(&[
            json!({"type": "response.output_item.added", "output_index": 0, "item": call("fc_1", "c1")}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": call("fc_2", "c2")}),
            delta("fc_1", "{\"a\":"),
            delta("fc_2", "{\"b\":"),
            delta("fc_1", "1}"),
            delta("fc_2", "2}"),
            json!({"type": "response.completed", "response": {"id": "r", "status": "completed"}}),
        ])
        .unwrap();
        let mut builder = freehold_protocol::ResponseBuilder::default();
        for event in &events {
            builder.push(event);
        }
        let response = builder.finish();
        assert_eq!(
            response.message.tool_calls().cloned().collect::<Vec<_>>(),
            vec![
                ToolCall::new("c1", "f", "{\"a\":1}"),
                ToolCall::new("c2", "f", "{\"b\":2}"),
            ]
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
    }

    #[test]
    fn a_type_named_only_in_the_event_line_is_understood() {
        let mut decoder = ResponsesDecoder::new("p");
        let mut out = StreamAssembler::new();
        let sse = SseEvent {
            event: "response.output_text.delta".into(),
            data: r#"{"item_id":"m","output_index":0,"content_index":0,"delta":"hi"}"#.into(),
            id: None,
        };
        assert_eq!(decoder.decode(sse, &mut out).unwrap(), Decoded::More);
        assert_eq!(
            out.take(),
            vec![
                freehold_protocol::StreamEvent::Start {
                    id: None,
                    model: None
                },
                freehold_protocol::StreamEvent::TextDelta { text: "hi".into() },
            ]
        );
    }

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(
            error_kind(
                Some("rate_limit_exceeded"),
                "Rate limit reached for gpt-5. Please try again in 1.898s."
            ),
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(1898))
            }
        );
        assert_eq!(
            error_kind(
                Some("context_length_exceeded"),
                "Your input exceeds the limit."
            ),
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None
            }
        );
        assert_eq!(
            error_kind(Some("server_is_overloaded"), "busy"),
            ErrorKind::Overloaded
        );
        assert_eq!(
            error_kind(Some("invalid_image_url"), "bad"),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            error_kind(Some("insufficient_quota"), "quota"),
            ErrorKind::Permission
        );
        assert_eq!(error_kind(Some("server_error"), "x"), ErrorKind::Server);
        assert_eq!(error_kind(None, "x"), ErrorKind::Server);
    }

    #[test]
    fn retry_after_is_read_from_messages() {
        let wait = |text| retry_after_in_message(text);
        assert_eq!(wait("Try again in 20ms."), Some(Duration::from_millis(20)));
        assert_eq!(wait("try again in 2 seconds"), Some(Duration::from_secs(2)));
        assert_eq!(
            wait("Please try again in 1m"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(wait("try again in a while"), None);
        assert_eq!(wait("try again in 1.2.3s"), None);
        assert_eq!(wait("no hint"), None);
    }
}
