//! The Google Gemini API (`generativelanguage.googleapis.com/v1beta`):
//! `POST models/{model}:generateContent`, and
//! `POST models/{model}:streamGenerateContent?alt=sse`, whose SSE events each
//! carry a whole `GenerateContentResponse` chunk.
//!
//! How Freehold's types map onto Gemini's:
//! - system messages become the top-level `systemInstruction`; users speak as
//!   `user`, the assistant as `model`, and tool results travel in a `user` turn
//!   as `functionResponse` parts; consecutive turns of the same role are merged
//!   (Gemini wants all the results of one model turn in one turn);
//! - Gemini has no call ids: [`ChunkDecoder`] generates them
//!   ([`generated_call_id`]) and [`encode_request`] finds a result's function
//!   name from the earlier call with the same id;
//! - `thoughtSignature`s are round-tripped: on a `functionCall` part as
//!   [`freehold_protocol::ToolCall::signature`], on a thought (`thought: true`)
//!   part as the signature of its [`freehold_protocol::Reasoning`], and on any
//!   other part as a text-less reasoning part that follows it;
//! - tool and response schemas go through [`sanitize_schema`], because
//!   Gemini's schema dialect (an OpenAPI subset) rejects many JSON Schema keys.

use std::collections::HashMap;

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, Document, DocumentSource, ErrorKind, ImageSource,
    LlmError, Message, ReasoningEffort, ResponseBuilder, ResponseFormat, Role, StopReason,
    ToolChoice, ToolResult, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
use crate::http::{context_length_kind, is_context_length_message};
use crate::sse::SseEvent;

mod schema;

pub use schema::{fits_the_dialect, sanitize_schema};

/// The public endpoint of the Gemini API.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The origin stamped on reasoning signatures this protocol produces.
pub const ORIGIN: &str = "gemini";

/// The most stop sequences `generateContent` takes in one request
/// (`generationConfig.stopSequences`); a request with more is refused.
pub const MAX_STOP_SEQUENCES: usize = 5;

/// The signature Google documents for function calls that Gemini 3 did not
/// produce itself (carried over from another model, or written by hand); it
/// tells Gemini 3's strict validation to let them through.
pub const SKIP_SIGNATURE_VALIDATION: &str = "skip_thought_signature_validator";

/// A `generateContent` / `streamGenerateContent` request body (the model is in
/// the URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// The conversation, oldest first.
    #[serde(default)]
    pub contents: Vec<Content>,
    /// System instructions (only `parts` is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model must use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    /// Sampling, limits, structured output and thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// Safety thresholds, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_settings: Option<Vec<Value>>,
    /// A cached-content resource name (`cachedContents/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content: Option<String>,
}

/// One turn of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// `user` or `model` (absent on `systemInstruction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What the turn holds, in order.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// One part of a turn: exactly one of the data fields is set, plus the
/// `thought` flag and `thoughtSignature` metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text (or, with `thought`, a thought summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// True on thought-summary parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// An opaque signature of the model's thinking, to be sent back on this
    /// same part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    /// Inline bytes (images…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    /// Bytes by URI (Files API, public URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    /// A function call made by the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// A function's result, sent by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
    /// Code the model wrote for the code-execution tool, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_code: Option<Value>,
    /// The code-execution tool's result, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_execution_result: Option<Value>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }
}

/// Inline bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// The MIME type (`image/png`…).
    pub mime_type: String,
    /// Base64 bytes.
    pub data: String,
}

/// Bytes by URI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    /// The MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The URI.
    pub file_uri: String,
}

/// A function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    /// An id: Gemini 3 gives every call one, and wants it back on the call
    /// and on its result; earlier models leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function's name.
    pub name: String,
    /// The arguments, an object (absent for functions without parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// A function's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    /// The id of the call it answers, where the call had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name of the function that was called.
    pub name: String,
    /// The result, an object.
    #[serde(default)]
    pub response: Value,
}

/// A tool: function declarations, or one of Gemini's built-in tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
    /// Grounding with Google Search, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_search: Option<Value>,
    /// Code execution, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_execution: Option<Value>,
    /// URL context, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_context: Option<Value>,
}

/// A function the model may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters in Gemini's schema dialect ([`sanitize_schema`]);
    /// absent when it takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Its parameters as full JSON Schema (newer models; the alternative to
    /// `parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

/// `toolConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    /// How functions may be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_calling_config: Option<FunctionCallingConfig>,
}

/// `functionCallingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `NONE`, `ANY` (or `VALIDATED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// With `ANY`: the functions the model may choose from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

/// `generationConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// Up to [`MAX_STOP_SEQUENCES`] stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// `application/json` for structured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// The answer's schema, in Gemini's dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// The answer's schema as full JSON Schema (the alternative to
    /// `responseSchema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    /// How many answers (Freehold asks for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    /// The output limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Sampling seed (an int32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Thinking budget and summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// `thinkingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// Thinking tokens allowed (`-1`: the model decides, `0`: off where
    /// allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i32>,
    /// Whether thought summaries are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
    /// Gemini 3's `low` / `high`, the alternative to a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<String>,
}

/// A complete response, or one chunk of a streamed one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// The answers (Freehold asks for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// Why the prompt was blocked, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token counts (in a stream, the last report wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model version that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The response's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

/// One answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// What the model produced (absent when it was blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Set on the answer's last chunk: `STOP`, `MAX_TOKENS`, `SAFETY`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Details of the finish reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_message: Option<String>,
    /// Which answer (0 for Freehold's only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Safety ratings, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_ratings: Option<Vec<Value>>,
}

/// `promptFeedback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// Why the prompt was blocked (`SAFETY`, `OTHER`, `BLOCKLIST`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    /// Safety ratings of the prompt, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_ratings: Option<Vec<Value>>,
}

/// `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_token_count: u64,
    /// Input tokens served from cached content.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_content_token_count: u64,
    /// Answer tokens, thoughts excluded.
    #[serde(default)]
    pub candidates_token_count: u64,
    /// Thinking tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub thoughts_token_count: u64,
    /// Input tokens of built-in tool results (search…).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_use_prompt_token_count: u64,
    /// Everything.
    #[serde(default)]
    pub total_token_count: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl From<&UsageMetadata> for Usage {
    fn from(wire: &UsageMetadata) -> Self {
        Usage {
            // Built-in tool results are input the model read.
            input_tokens: wire.prompt_token_count + wire.tool_use_prompt_token_count,
            cached_input_tokens: wire.cached_content_token_count,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            output_tokens: wire.candidates_token_count + wire.thoughts_token_count,
            reasoning_tokens: wire.thoughts_token_count,
        }
    }
}

impl From<&Usage> for UsageMetadata {
    fn from(usage: &Usage) -> Self {
        let thoughts = usage.reasoning_tokens.min(usage.output_tokens);
        UsageMetadata {
            prompt_token_count: usage.input_tokens,
            cached_content_token_count: usage.cached_input_tokens,
            candidates_token_count: usage.output_tokens - thoughts,
            thoughts_token_count: thoughts,
            tool_use_prompt_token_count: 0,
            total_token_count: usage.total_tokens(),
        }
    }
}

/// A page of `GET models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelList {
    /// The models.
    #[serde(default)]
    pub models: Vec<WireModel>,
    /// The token of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A model of `GET models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireModel {
    /// `models/gemini-2.5-flash`.
    pub name: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_token_limit: Option<u32>,
    /// The output limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_token_limit: Option<u32>,
    /// `generateContent`, `embedContent`, `countTokens`…
    #[serde(default)]
    pub supported_generation_methods: Vec<String>,
    /// Whether the model thinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
}

impl WireModel {
    /// The model's id without the `models/` prefix.
    pub fn id(&self) -> &str {
        self.name.strip_prefix("models/").unwrap_or(&self.name)
    }

    /// Whether it answers `generateContent` (embedding models do not). A model
    /// listing no methods is assumed to.
    pub fn generates_content(&self) -> bool {
        self.supported_generation_methods.is_empty()
            || self
                .supported_generation_methods
                .iter()
                .any(|method| method == "generateContent")
    }
}

/// An error body: `{"error":{"code":429,"message":…,"status":"RESOURCE_EXHAUSTED"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: WireError,
}

/// A Google RPC error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// The HTTP status.
    #[serde(default)]
    pub code: u16,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// The RPC status name (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`…).
    #[serde(default)]
    pub status: String,
    /// Typed details (`google.rpc.RetryInfo`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// The path (under the base URL) of a model's `method`: `/models/{model}:{method}`.
/// A model already naming its collection (`models/…`, `tunedModels/…`) keeps it.
///
/// The model's own name is percent-encoded where it holds a character
/// that would change the path (`/`, `?`, `#`, `%`, spaces): a client's
/// `gemini:../cachedContents#` must name a model that does not exist, not
/// another endpoint of the API called with the operator's key.
pub fn model_path(model: &str, method: &str) -> String {
    let resource = model_resource(model);
    let (collection, name) = resource.split_once('/').unwrap_or(("models", &resource));
    let mut path = format!("/{collection}/");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&byte) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push(':');
    path.push_str(method);
    path
}

/// A model's resource name, as request bodies name it: `models/{model}`,
/// or the model as given when it names its collection already.
pub fn model_resource(model: &str) -> String {
    let model = model.trim_start_matches('/');
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

/// Encodes a request.
///
/// Knowing deviations: `parallel_tool_calls` is not sent (Gemini has no such
/// switch); the seed is folded into Gemini's int32 range; schemas are
/// sanitized ([`sanitize_schema`]), or sent in JSON Schema form when the
/// sanitized one would still be refused ([`fits_the_dialect`]); a tool
/// without parameters gets no `parameters` (Gemini rejects an object schema
/// with no properties); presence and frequency penalties reach Gemini 1.x
/// and 2.0 only (later models refuse any but zero); a JSON answer asked for
/// beside tools is asked for in the system instruction before Gemini 3
/// (earlier models refuse the two together).
pub fn encode_request(request: &ChatRequest) -> GenerateContentRequest {
    let generation = Generation::of(&request.model);
    let (mut system_instruction, contents) = encode_contents(&request.messages, generation);
    let tools = (!request.tools.is_empty()).then(|| {
        vec![Tool {
            function_declarations: Some(
                request
                    .tools
                    .iter()
                    .map(|tool| {
                        let (parameters, parameters_json_schema) =
                            function_parameters(&tool.parameters);
                        FunctionDeclaration {
                            name: tool.name.clone(),
                            description: (!tool.description.is_empty())
                                .then(|| tool.description.clone()),
                            parameters,
                            parameters_json_schema,
                        }
                    })
                    .collect(),
            ),
            ..Tool::default()
        }]
    });
    let tool_config = tools.as_ref().map(|_| {
        let (mode, names) = match &request.tool_choice {
            ToolChoice::Auto => ("AUTO", None),
            ToolChoice::None => ("NONE", None),
            ToolChoice::Required => ("ANY", None),
            ToolChoice::Tool { name } => ("ANY", Some(vec![name.clone()])),
        };
        ToolConfig {
            function_calling_config: Some(FunctionCallingConfig {
                mode: Some(mode.into()),
                allowed_function_names: names,
            }),
        }
    });
    let json_beside_tools = tools.is_some() && !generation.json_with_tools;
    let (response_mime_type, response_schema, response_json_schema) = match &request.response_format
    {
        None => (None, None, None),
        Some(format) if json_beside_tools => {
            // Asked for in words: the model still sees the tools.
            let instruction = json_answer_instruction(format);
            let system = system_instruction.get_or_insert_with(|| Content {
                role: None,
                parts: Vec::new(),
            });
            system.parts.push(Part::text(&instruction));
            (None, None, None)
        }
        Some(ResponseFormat::JsonObject) => (Some("application/json".to_owned()), None, None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            let sanitized = sanitize_schema(schema);
            let (dialect, json) = if fits_the_dialect(&sanitized) && !is_empty_object(&sanitized) {
                (Some(sanitized), None)
            } else {
                (None, Some(schema::json_schema_form(schema)))
            };
            (Some("application/json".to_owned()), dialect, json)
        }
    };
    let sampling = &request.sampling;
    let penalty = |value: Option<f32>| match value {
        Some(value) if generation.penalties || value == 0.0 => Some(widen(value)),
        Some(value) => {
            tracing::debug!(
                model = %request.model,
                value,
                "this Gemini model refuses penalties; left out"
            );
            None
        }
        None => None,
    };
    let generation_config = GenerationConfig {
        stop_sequences: (!request.stop.is_empty()).then(|| request.stop.clone()),
        response_mime_type,
        response_schema,
        response_json_schema,
        candidate_count: None,
        max_output_tokens: request.max_tokens,
        temperature: sampling.temperature.map(widen),
        top_p: sampling.top_p.map(widen),
        top_k: sampling.top_k,
        // Gemini's seed is an int32: keep the low 31 bits, so that equal
        // seeds stay equal.
        seed: sampling
            .seed
            .map(|seed| i64::try_from(seed & 0x7fff_ffff).unwrap_or_default()),
        presence_penalty: penalty(sampling.presence_penalty),
        frequency_penalty: penalty(sampling.frequency_penalty),
        thinking_config: request
            .reasoning
            .and_then(|effort| generation.thinking.config(effort, request.reasoning_budget)),
    };
    GenerateContentRequest {
        contents,
        system_instruction,
        tools,
        tool_config,
        generation_config: (generation_config != GenerationConfig::default())
            .then_some(generation_config),
        safety_settings: None,
        cached_content: None,
    }
}

/// An `f32` as the `f64` it was written as (`0.9`, not `0.8999999761581421`).
fn widen(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

/// What a Gemini model accepts that others of the family do not, from its
/// name ([`gemini_version`]). A Gemini name that says no version
/// (`gemini-flash-latest`) is taken as the newest: aliases move forward.
/// Other models of the API (Gemma, LearnLM) are asked as the request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation {
    /// Presence and frequency penalties (1.x and 2.0; later models refuse
    /// any but zero: "Penalty is not enabled for models/…").
    penalties: bool,
    /// A JSON answer (`responseMimeType`) together with tools (Gemini 3;
    /// earlier models refuse "Function calling with a response mime type").
    json_with_tools: bool,
    /// Each call has an id to send back, and each turn's calls must carry a
    /// thought signature (Gemini 3; a conversation without one is refused).
    gemini_3: bool,
    /// How its thinking is set.
    thinking: ThinkingControl,
}

/// How a Gemini model's thinking is set: by a budget of tokens (2.5) or by
/// a level (Gemini 3, for which Google says a budget may cost quality; a
/// request with both is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThinkingControl {
    /// Not at all: models that do not think (before 2.5, and other models
    /// of the API) refuse `thinkingConfig`.
    Unset,
    /// `thinkingBudget`, within the model's `min..=max` (Flash 1–24,576,
    /// Flash-Lite 512–24,576, Pro 128–32,768; a budget outside is
    /// refused). `off` is the budget sent for no reasoning: 0 turns thinking
    /// off on Flash and Flash-Lite; Pro cannot stop ("this model only works
    /// in thinking mode") and gets its least.
    Budget { off: i32, min: i32, max: i32 },
    /// `thinkingLevel`: every model of the generation takes `low` and
    /// `high`; `minimal` Flash-Lite and Flash before 3.7 (later Flash
    /// refuses it), `medium` Flash and Pro from 3.1 on.
    Levels { minimal: bool, medium: bool },
}

impl ThinkingControl {
    /// The control for a Gemini model named `name` (after `gemini-`) of
    /// `version`, or the newest generation when its name says none.
    fn of(name: &str, version: Option<(u32, u32)>) -> Self {
        let lite = name.contains("flash-lite");
        let flash = name.contains("flash");
        let pro = name.contains("pro");
        match version {
            Some(version) if version >= (3, 0) => Self::Levels {
                minimal: lite || (flash && version < (3, 7)),
                medium: flash || (pro && version >= (3, 1)),
            },
            Some(version) if version >= (2, 5) && pro => Self::Budget {
                off: 128,
                min: 128,
                max: 32_768,
            },
            Some(version) if version >= (2, 5) => Self::Budget {
                off: 0,
                min: if lite { 512 } else { 1 },
                max: 24_576,
            },
            Some(_) => Self::Unset,
            // An alias of the newest models: the levels all of them take.
            None => Self::Levels {
                minimal: lite,
                medium: flash || pro,
            },
        }
    }

    /// The `thinkingConfig` for a request's effort, and its budget when the
    /// client named one (Anthropic's `budget_tokens`): sent as asked, within
    /// the model's range, where a budget is taken; Gemini 3 gets the level
    /// of the effort nearest to it.
    fn config(self, effort: ReasoningEffort, named_budget: Option<u32>) -> Option<ThinkingConfig> {
        let thoughts = effort != ReasoningEffort::Off;
        let (thinking_budget, thinking_level) = match self {
            Self::Unset => return None,
            Self::Budget { off, .. } if !thoughts => (Some(off), None),
            Self::Budget { min, max, .. } => {
                let asked = named_budget.unwrap_or(effort.budget_tokens());
                let asked = i32::try_from(asked).unwrap_or(i32::MAX);
                (Some(asked.clamp(min, max)), None)
            }
            Self::Levels { minimal, medium } => {
                let level = match effort {
                    ReasoningEffort::Off | ReasoningEffort::Minimal if minimal => "minimal",
                    ReasoningEffort::Off | ReasoningEffort::Minimal | ReasoningEffort::Low => "low",
                    ReasoningEffort::Medium if medium => "medium",
                    ReasoningEffort::Medium | ReasoningEffort::High => "high",
                };
                (None, Some(level.to_owned()))
            }
        };
        Some(ThinkingConfig {
            thinking_budget,
            // Summaries of thinking asked not to happen would be of the
            // least a model insists on: not what the client wants to read.
            include_thoughts: thoughts.then_some(true),
            thinking_level,
        })
    }
}

impl Generation {
    fn of(model: &str) -> Self {
        let model = model.to_ascii_lowercase();
        let model = model.strip_prefix("models/").unwrap_or(&model);
        let Some(name) = model.strip_prefix("gemini-") else {
            return Self {
                penalties: true,
                json_with_tools: true,
                gemini_3: false,
                thinking: ThinkingControl::Unset,
            };
        };
        let version = gemini_version(name);
        let thinking = ThinkingControl::of(name, version);
        match version {
            Some((major, minor)) => Self {
                penalties: major < 2 || (major, minor) == (2, 0),
                json_with_tools: major >= 3,
                gemini_3: major >= 3,
                thinking,
            },
            None => Self {
                penalties: false,
                json_with_tools: true,
                gemini_3: true,
                thinking,
            },
        }
    }
}

/// The version in a Gemini model's name after `gemini-`: its first part
/// that reads as one (`2.5` in `2.5-flash` and `live-2.5-flash-preview`,
/// `3` in `3-pro-preview`). Dates (`exp-1206`) are not versions.
fn gemini_version(name: &str) -> Option<(u32, u32)> {
    name.split('-').find_map(|part| {
        let (major, minor) = part.split_once('.').unwrap_or((part, "0"));
        let major: u32 = major.parse().ok()?;
        let minor: u32 = minor.parse().ok()?;
        (major < 100).then_some((major, minor))
    })
}

/// The system instruction's words for a JSON answer asked for beside tools.
fn json_answer_instruction(format: &ResponseFormat) -> String {
    match format {
        ResponseFormat::JsonObject => {
            "Give your final answer as one JSON object and nothing else.".to_owned()
        }
        ResponseFormat::JsonSchema { schema, .. } => format!(
            "Give your final answer as one JSON value that matches this JSON Schema, and \
             nothing else:\n{schema}"
        ),
    }
}

/// A tool's `parameters` (sanitized) or `parametersJsonSchema` (when the
/// sanitized form would be refused), both left out when the tool takes
/// none.
fn function_parameters(schema: &Value) -> (Option<Value>, Option<Value>) {
    let sanitized = sanitize_schema(schema);
    if is_empty_object(&sanitized) {
        // Arguments whose names are not known beforehand (a dictionary)
        // still need their schema; none at all need nothing.
        if is_dictionary(schema) {
            (None, Some(schema::json_schema_form(schema)))
        } else {
            (None, None)
        }
    } else if fits_the_dialect(&sanitized) {
        (Some(sanitized), None)
    } else {
        (None, Some(schema::json_schema_form(schema)))
    }
}

/// Whether a sanitized schema is an object without properties (which
/// Gemini's dialect refuses) and without alternatives.
fn is_empty_object(sanitized: &Value) -> bool {
    let no_properties = sanitized
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let is_object = sanitized
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(|kind| kind.eq_ignore_ascii_case("object"));
    is_object && no_properties && sanitized.get("anyOf").is_none()
}

/// Whether a JSON Schema allows properties of any name
/// (`additionalProperties` a schema, or `true`).
fn is_dictionary(schema: &Value) -> bool {
    matches!(
        schema.get("additionalProperties"),
        Some(Value::Object(_) | Value::Bool(true))
    )
}

/// The system instruction and the turns of a conversation.
fn encode_contents(
    messages: &[Message],
    generation: Generation,
) -> (Option<Content>, Vec<Content>) {
    // Gemini answers a call by function name: remember each call's name.
    let names: HashMap<&str, &str> = messages
        .iter()
        .flat_map(|message| message.tool_calls())
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect();
    let gemini_3 = generation.gemini_3;
    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    for message in messages {
        let (role, parts) = match message.role {
            Role::System => {
                system.extend(
                    message
                        .content
                        .iter()
                        .filter_map(|part| match part {
                            ContentPart::Text { text } if !text.is_empty() => Some(text),
                            _ => None,
                        })
                        .map(Part::text),
                );
                continue;
            }
            Role::User | Role::Tool => ("user", user_parts(&message.content, &names, gemini_3)),
            Role::Assistant => ("model", model_parts(&message.content, gemini_3)),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role.into()),
                parts,
            }),
        }
    }
    let system = (!system.is_empty()).then_some(Content {
        role: None,
        parts: system,
    });
    (system, contents)
}

/// The parts of a user (or tool) message: text, images and function results.
fn user_parts(content: &[ContentPart], names: &HashMap<&str, &str>, gemini_3: bool) -> Vec<Part> {
    content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } if !text.is_empty() => Some(Part::text(text)),
            ContentPart::Image { source } => Some(image_part(source)),
            ContentPart::Document(document) => Some(document_part(document)),
            ContentPart::ToolResult(result) => Some(Part {
                function_response: Some(FunctionResponse {
                    id: issued_id(&result.call_id, gemini_3),
                    // A result whose call is not in the conversation keeps
                    // its id as the name: the best guess left.
                    name: names
                        .get(result.call_id.as_str())
                        .map_or_else(|| result.call_id.clone(), |name| (*name).to_owned()),
                    response: function_response(result),
                }),
                ..Part::default()
            }),
            _ => None,
        })
        .collect()
}

/// A tool result as the object Gemini wants: the content itself when it is a
/// JSON object, else `{"result": text}`, or `{"error": text}` for a failure.
pub fn function_response(result: &ToolResult) -> Value {
    if result.is_error {
        return json!({ "error": result.content });
    }
    match serde_json::from_str::<Value>(&result.content) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => json!({ "result": result.content }),
    }
}

/// The parts of an assistant message, signatures put back where they came
/// from.
fn model_parts(content: &[ContentPart], gemini_3: bool) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for part in content {
        match part {
            ContentPart::Text { text } if !text.is_empty() => parts.push(Part::text(text)),
            ContentPart::Text { .. } | ContentPart::ToolResult(_) | ContentPart::Document(_) => {}
            ContentPart::Image { source } => parts.push(image_part(source)),
            ContentPart::ToolCall(call) => parts.push(Part {
                function_call: Some(FunctionCall {
                    id: issued_id(&call.id, gemini_3),
                    name: call.name.clone(),
                    args: Some(call_args(&call.arguments)),
                }),
                thought_signature: call.signature.clone(),
                ..Part::default()
            }),
            // Redacted reasoning and reasoning signed by another protocol
            // come from other providers (Anthropic, OpenAI Responses):
            // Gemini cannot read them. Of reasoning whose origin is unknown,
            // that with an item id is the Responses API's. (A gateway's
            // Responses client hands Gemini's back with an item id the
            // gateway gave it, and its origin.)
            ContentPart::Reasoning(reasoning)
                if reasoning.redacted
                    || match reasoning.origin.as_deref() {
                        Some(origin) => origin != ORIGIN,
                        None => reasoning.id.is_some(),
                    } => {}
            ContentPart::Reasoning(reasoning) if !reasoning.text.is_empty() => parts.push(Part {
                text: Some(reasoning.text.clone()),
                thought: Some(true),
                thought_signature: reasoning.signature.clone(),
                ..Part::default()
            }),
            ContentPart::Reasoning(reasoning) => {
                let Some(signature) = &reasoning.signature else {
                    continue;
                };
                // A text-less signature belongs to the text part before it
                // (that is where the decoder found it).
                match parts.last_mut() {
                    Some(last)
                        if last.text.is_some()
                            && last.thought.is_none()
                            && last.thought_signature.is_none() =>
                    {
                        last.thought_signature = Some(signature.clone());
                    }
                    _ => parts.push(Part {
                        text: Some(String::new()),
                        thought_signature: Some(signature.clone()),
                        ..Part::default()
                    }),
                }
            }
        }
    }
    let has_signed_call = parts
        .iter()
        .any(|part| part.function_call.is_some() && part.thought_signature.is_some());
    if gemini_3
        && !has_signed_call
        && let Some(first) = parts.iter_mut().find(|part| part.function_call.is_some())
    {
        first.thought_signature = Some(SKIP_SIGNATURE_VALIDATION.into());
    }
    parts
}

/// A call's id to send to Gemini 3, which gives each call one and wants it
/// on the call and on its result (which is how two results of one function
/// are told apart). Ids made up here for calls that came without one
/// ([`generated_call_id`]) are not sent, nor any to earlier models.
fn issued_id(id: &str, gemini_3: bool) -> Option<String> {
    (gemini_3 && !id.is_empty() && !is_generated_call_id(id)).then(|| id.to_owned())
}

/// Whether `id` has the shape of [`generated_call_id`]'s ids.
fn is_generated_call_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("call_") else {
        return false;
    };
    let Some((index, suffix)) = rest.split_once('_') else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|byte| byte.is_ascii_digit())
        && suffix.len() == 12
        && suffix.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// A call's arguments as the object Gemini wants. Arguments that are not a
/// JSON object (never produced by Gemini, possible in a conversation carried
/// over from another model) become an empty object.
fn call_args(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => Value::Object(Map::new()),
    }
}

/// An image part: inline bytes for base64 and `data:` URLs, `fileData` for
/// other URLs.
pub fn image_part(source: &ImageSource) -> Part {
    let inline = |mime_type: &str, data: &str| Part {
        inline_data: Some(Blob {
            mime_type: mime_type.to_owned(),
            data: data.to_owned(),
        }),
        ..Part::default()
    };
    match source {
        ImageSource::Base64 { media_type, data } => inline(media_type, data),
        ImageSource::Url { url } => {
            let data_url = url
                .strip_prefix("data:")
                .and_then(|rest| rest.split_once(','))
                .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)));
            match data_url {
                Some((mime_type, data)) => inline(
                    if mime_type.is_empty() {
                        "image/jpeg"
                    } else {
                        mime_type
                    },
                    data,
                ),
                None => Part {
                    file_data: Some(FileData {
                        mime_type: Some(mime_from_url(url).to_owned()),
                        file_uri: url.clone(),
                    }),
                    ..Part::default()
                },
            }
        }
    }
}

/// A document as Gemini reads it: its bytes inline, or its URL as file
/// data.
fn document_part(document: &Document) -> Part {
    match &document.source {
        DocumentSource::Base64 { media_type, data } => Part {
            inline_data: Some(Blob {
                mime_type: media_type.clone(),
                data: data.clone(),
            }),
            ..Part::default()
        },
        DocumentSource::Url { url } => Part {
            file_data: Some(FileData {
                mime_type: Some("application/pdf".into()),
                file_uri: url.clone(),
            }),
            ..Part::default()
        },
    }
}

/// The MIME type of a URL's file, guessed from its extension
/// (`image/jpeg` when unknown).
pub fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let file = path.rsplit('/').next().unwrap_or_default();
    let extension = file
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// Maps a `finishReason`. `STOP` after function calls becomes
/// [`StopReason::ToolUse`] later, where the calls are known.
pub fn stop_reason(finish_reason: &str) -> StopReason {
    match finish_reason {
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            StopReason::ContentFilter
        }
        other => StopReason::Other(other.to_owned()),
    }
}

/// An id for a call (Gemini sends none): `call_{index}_{random}`.
pub fn generated_call_id(index: u32) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect();
    format!("call_{index}_{suffix}")
}

/// Decodes a complete response.
///
/// # Errors
/// A response with neither candidates nor a block reason, or an error object.
pub fn decode_response(
    provider: &str,
    response: GenerateContentResponse,
) -> Result<ChatResponse, LlmError> {
    let blocked = response
        .prompt_feedback
        .as_ref()
        .is_some_and(|feedback| feedback.block_reason.is_some());
    if response.candidates.is_empty() && !blocked {
        return Err(LlmError::new(
            ErrorKind::Server,
            provider,
            "the response has no candidates",
        ));
    }
    // The same decoder as for streams, so that both give the same answer.
    let mut decoder = ChunkDecoder::new(provider);
    let mut assembler = StreamAssembler::new();
    assembler.set_origin(ORIGIN);
    decoder.chunk(response, &mut assembler);
    if !assembler.is_stopped() {
        assembler.stop(StopReason::EndTurn);
    }
    let mut builder = ResponseBuilder::default();
    for event in assembler.finish().unwrap_or_default() {
        builder.push(&event);
    }
    Ok(builder.finish())
}

/// Decodes a `streamGenerateContent?alt=sse` stream: each event is a whole
/// [`GenerateContentResponse`]; the chunk with a `finishReason` is the last
/// one, then the server closes the connection (there is no `[DONE]`).
#[derive(Debug)]
pub struct ChunkDecoder {
    provider: String,
    /// Calls seen so far, for generated ids.
    calls: u32,
}

impl ChunkDecoder {
    /// A decoder for `provider`'s stream.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            calls: 0,
        }
    }

    /// Applies one response chunk.
    fn chunk(&mut self, chunk: GenerateContentResponse, out: &mut StreamAssembler) {
        out.start(
            chunk.response_id.filter(|id| !id.is_empty()),
            chunk.model_version.filter(|model| !model.is_empty()),
        );
        if let Some(usage) = &chunk.usage_metadata {
            out.usage(Usage::from(usage));
        }
        let candidate = chunk
            .candidates
            .into_iter()
            .find(|candidate| candidate.index.unwrap_or(0) == 0);
        match candidate {
            Some(candidate) => {
                for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                    self.part(part, out);
                }
                if let Some(reason) = candidate.finish_reason.filter(|r| !r.is_empty()) {
                    out.stop(stop_reason(&reason));
                }
            }
            None => {
                let blocked = chunk
                    .prompt_feedback
                    .is_some_and(|feedback| feedback.block_reason.is_some());
                if blocked {
                    out.stop(StopReason::ContentFilter);
                }
            }
        }
    }

    fn part(&mut self, part: Part, out: &mut StreamAssembler) {
        let signature = part.thought_signature.filter(|s| !s.is_empty());
        if let Some(call) = part.function_call {
            let id = call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| generated_call_id(self.calls));
            self.calls += 1;
            let arguments = match call.args {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(args) => args.to_string(),
            };
            let index = out.tool_start_signed(&id, &call.name, signature.clone());
            out.tool_args(index, &arguments);
            out.tool_end(index, signature);
            return;
        }
        if part.thought == Some(true) {
            out.reasoning(part.text.as_deref().unwrap_or_default());
        } else if let Some(text) = &part.text {
            out.text(text);
        }
        // After its part, so that the encoder puts it back on that part.
        if let Some(signature) = signature {
            out.reasoning_signature(&signature, false);
        }
    }
}

impl WireDecoder<SseEvent> for ChunkDecoder {
    fn decode(&mut self, event: SseEvent, out: &mut StreamAssembler) -> Result<Decoded, LlmError> {
        out.set_origin(ORIGIN);
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Decoded::More);
        }
        let value: Value = serde_json::from_str(data).map_err(|error| {
            LlmError::new(
                ErrorKind::Server,
                self.provider.clone(),
                format!("invalid stream chunk ({error}): {}", preview(data)),
            )
        })?;
        // Without `alt=sse` chunks come as a JSON array; accept both.
        let chunks = match value {
            Value::Array(chunks) => chunks,
            other => vec![other],
        };
        for chunk in chunks {
            if let Some(error) = chunk.get("error") {
                return Err(stream_error(&self.provider, error));
            }
            let chunk: GenerateContentResponse =
                serde_json::from_value(chunk).map_err(|error| {
                    LlmError::new(
                        ErrorKind::Server,
                        self.provider.clone(),
                        format!("unexpected stream chunk ({error}): {}", preview(data)),
                    )
                })?;
            self.chunk(chunk, out);
        }
        // The finishing chunk is followed by the end of the connection; a
        // late usage-only chunk is still read.
        Ok(Decoded::More)
    }

    fn truncated(&self) -> LlmError {
        LlmError::new(
            ErrorKind::Connection,
            self.provider.clone(),
            "the stream ended before a finishReason",
        )
    }
}

/// An `error` object (`{"code","message","status","details"}`) sent inside a
/// stream or a 200 body.
pub fn stream_error(provider: &str, error: &Value) -> LlmError {
    let wire: WireError = serde_json::from_value(error.clone()).unwrap_or_else(|_| WireError {
        message: error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned),
        ..WireError::default()
    });
    let kind = error_kind(&wire);
    let mut error = LlmError::new(kind, provider, wire.message);
    if wire.code >= 400 {
        error = error.with_status(wire.code);
    }
    error
}

/// The kind of a Google RPC error, from its message, status name and code.
pub fn error_kind(error: &WireError) -> ErrorKind {
    if is_context_length_message(&error.message) {
        return context_length_kind(&error.message);
    }
    match (error.status.as_str(), error.code) {
        ("RESOURCE_EXHAUSTED", _) | (_, 429) => ErrorKind::RateLimited {
            retry_after: retry_delay(&error.details),
        },
        ("UNAVAILABLE", _) | (_, 503) => ErrorKind::Overloaded,
        // Google's 400 for an account the API will not serve ("User
        // location is not supported for the API use", "free tier is not
        // available in your country. Please enable billing"): no change to
        // the request helps, so the caller is told it is not allowed.
        ("FAILED_PRECONDITION", _) => ErrorKind::Permission,
        ("INVALID_ARGUMENT" | "OUT_OF_RANGE", _) | (_, 400) => ErrorKind::InvalidRequest,
        ("UNAUTHENTICATED", _) | (_, 401) => ErrorKind::Authentication,
        ("PERMISSION_DENIED", _) | (_, 403) => ErrorKind::Permission,
        ("NOT_FOUND", _) | (_, 404) => ErrorKind::NotFound,
        ("DEADLINE_EXCEEDED", _) | (_, 504) => ErrorKind::Timeout,
        ("CANCELLED", _) => ErrorKind::Cancelled,
        _ => ErrorKind::Server,
    }
}

/// The wait a `google.rpc.RetryInfo` detail asks for (`"retryDelay": "37s"`).
pub fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter_map(|detail| detail.get("retryDelay")?.as_str())
        .find_map(|delay| {
            let seconds: f64 = delay.trim().strip_suffix('s')?.parse().ok()?;
            std::time::Duration::try_from_secs_f64(seconds).ok()
        })
}

fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use freehold_protocol::{ToolCall, ToolSpec};

    #[test]
    fn a_named_thinking_budget_is_sent_as_asked() {
        use freehold_protocol::{Message, ReasoningEffort};
        let mut request =
            freehold_protocol::ChatRequest::new("gemini-2.5-flash", vec![Message::user("hi")]);
        request.reasoning = Some(ReasoningEffort::Medium);
        let budget = |request: &freehold_protocol::ChatRequest| {
            encode_request(request)
                .generation_config
                .and_then(|config| config.thinking_config)
                .and_then(|thinking| thinking.thinking_budget)
        };
        assert_eq!(budget(&request), Some(8192));
        request.reasoning_budget = Some(5000);
        assert_eq!(budget(&request), Some(5000));
    }

    #[test]
    fn tools_without_parameters_send_none() {
        assert_eq!(
            function_parameters(&json!({"type": "object", "properties": {}})),
            (None, None)
        );
        assert_eq!(function_parameters(&json!({})), (None, None));
        assert!(
            function_parameters(
                &json!({"type": "object", "properties": {"a": {"type": "string"}}})
            )
            .0
            .is_some()
        );
    }

    /// Schemas the dialect cannot say (a dictionary, an array without
    /// `items`, a tuple) go as JSON Schema, whole; the others as before.
    #[test]
    fn schemas_the_dialect_cannot_say_go_as_json_schema() {
        let plain = json!({"type": "object", "properties": {
            "paths": {"type": "array", "items": {"type": "string"}}}, "required": ["paths"]});
        let (dialect, json_form) = function_parameters(&plain);
        assert!(dialect.is_some() && json_form.is_none());
        // A dictionary at the top too.
        let dictionary = json!({"type": "object", "additionalProperties": {"type": "number"}});
        assert_eq!(
            function_parameters(&dictionary),
            (None, Some(dictionary.clone()))
        );
        for property in [
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({"type": "array"}),
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}),
            json!({"type": ["string", "array"]}),
        ] {
            let schema = json!({"$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object", "properties": {"x": property}});
            let (dialect, json_form) = function_parameters(&schema);
            assert_eq!(dialect, None, "{schema}");
            let json_form = json_form.unwrap();
            assert_eq!(json_form["properties"]["x"], property);
            assert!(json_form.get("$schema").is_none());
        }
        // The same for a response schema.
        let mut request = ChatRequest::new("gemini-2.5-flash", vec![Message::user("Hi")]);
        request.response_format = Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object", "properties": {
                "scores": {"type": "object", "additionalProperties": {"type": "number"}}}}),
            strict: false,
        });
        let config = encode_request(&request).generation_config.unwrap();
        assert!(config.response_schema.is_none());
        assert!(config.response_json_schema.is_some());
    }

    /// What each generation refuses is left out or said otherwise.
    #[test]
    fn penalties_and_json_beside_tools_follow_the_models_generation() {
        let mut request = ChatRequest::new("gemini-2.5-flash", vec![Message::user("Hi")]);
        request.sampling.presence_penalty = Some(0.5);
        request.sampling.frequency_penalty = Some(0.0);
        request.tools = vec![ToolSpec {
            name: "read".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            strict: false,
        }];
        request.response_format = Some(ResponseFormat::JsonObject);
        let body = serde_json::to_value(encode_request(&request)).unwrap();
        let config = &body["generationConfig"];
        assert!(config.get("presencePenalty").is_none(), "{config}");
        assert_eq!(config["frequencyPenalty"], 0.0);
        assert!(config.get("responseMimeType").is_none(), "{config}");
        let system = body["systemInstruction"]["parts"].to_string();
        assert!(system.contains("one JSON object"), "{system}");

        request.model = "gemini-2.0-flash".into();
        let body = serde_json::to_value(encode_request(&request)).unwrap();
        assert_eq!(body["generationConfig"]["presencePenalty"], 0.5);

        request.model = "gemini-3-pro-preview".into();
        let body = serde_json::to_value(encode_request(&request)).unwrap();
        assert_eq!(
            body["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert!(body.get("systemInstruction").is_none());
    }

    /// Gemini 3's call ids go back on the call and on its result; ids made
    /// up for calls that had none do not.
    #[test]
    fn call_ids_gemini_gave_are_sent_back() {
        let made_up = generated_call_id(0);
        let request = ChatRequest::new(
            "gemini-3-flash-preview",
            vec![
                Message::user("Read both"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentPart::ToolCall(ToolCall::new("k3x9q2", "read", r#"{"path":"a"}"#)),
                        ContentPart::ToolCall(ToolCall::new(&made_up, "read", r#"{"path":"b"}"#)),
                    ],
                },
                Message::tool_result(&made_up, "b's text"),
                Message::tool_result("k3x9q2", "a's text"),
            ],
        );
        let body = serde_json::to_value(encode_request(&request)).unwrap();
        let calls = &body["contents"][1]["parts"];
        assert_eq!(calls[0]["functionCall"]["id"], "k3x9q2");
        assert!(calls[1]["functionCall"].get("id").is_none());
        let results = &body["contents"][2]["parts"];
        assert!(results[0]["functionResponse"].get("id").is_none());
        assert_eq!(results[1]["functionResponse"]["id"], "k3x9q2");
        assert!(!is_generated_call_id("call_abc"));
        assert!(is_generated_call_id(&made_up));
    }

    #[test]
    fn the_generation_is_read_from_the_models_name() {
        // (penalties, JSON beside tools, Gemini 3)
        let newest = (false, true, true);
        let as_asked = (true, true, false);
        let gemini_2_5 = (false, false, false);
        let gemini_2_0 = (true, false, false);
        for (model, expected) in [
            ("gemini-3-pro-preview", newest),
            ("models/gemini-3.1-flash", newest),
            ("gemini-flash-latest", newest),
            ("gemini-exp-1206", newest),
            ("gemini-2.5-flash", gemini_2_5),
            ("gemini-live-2.5-flash-preview", gemini_2_5),
            ("gemini-robotics-er-1.5-preview", gemini_2_0),
            ("gemini-2.0-flash", gemini_2_0),
            ("gemini-1.5-pro", gemini_2_0),
            ("gemma-3-27b-it", as_asked),
            ("learnlm-2.0-flash-experimental", as_asked),
        ] {
            let generation = Generation::of(model);
            assert_eq!(
                (
                    generation.penalties,
                    generation.json_with_tools,
                    generation.gemini_3
                ),
                expected,
                "{model}"
            );
        }
    }

    /// Gemini 3 gets a level each model takes; 2.5 a budget, 0 (off) where
    /// the model allows it; models that do not think unasked get nothing
    /// when asked for no reasoning.
    #[test]
    fn thinking_is_set_as_each_generation_takes_it() {
        let thinking = |model: &str, effort| {
            let mut request = ChatRequest::new(model, vec![Message::user("Hi")]);
            request.reasoning = Some(effort);
            let body = serde_json::to_value(encode_request(&request)).unwrap();
            body["generationConfig"]["thinkingConfig"].clone()
        };
        use ReasoningEffort::{High, Low, Medium, Minimal, Off};
        for (model, effort, expected) in [
            (
                "gemini-3-flash-preview",
                Off,
                json!({"thinkingLevel": "minimal"}),
            ),
            (
                "gemini-3-flash-preview",
                Medium,
                json!({"thinkingLevel": "medium", "includeThoughts": true}),
            ),
            ("gemini-3-pro-preview", Off, json!({"thinkingLevel": "low"})),
            (
                "gemini-3-pro-preview",
                Minimal,
                json!({"thinkingLevel": "low", "includeThoughts": true}),
            ),
            (
                "gemini-3-pro-preview",
                Medium,
                json!({"thinkingLevel": "high", "includeThoughts": true}),
            ),
            (
                "gemini-3.1-pro-preview",
                Medium,
                json!({"thinkingLevel": "medium", "includeThoughts": true}),
            ),
            (
                "gemini-pro-latest",
                High,
                json!({"thinkingLevel": "high", "includeThoughts": true}),
            ),
            (
                "gemini-flash-lite-latest",
                Off,
                json!({"thinkingLevel": "minimal"}),
            ),
            // Flash from 3.7 on, and its alias, refuse `minimal`.
            ("gemini-3.8-flash", Off, json!({"thinkingLevel": "low"})),
            ("gemini-flash-latest", Off, json!({"thinkingLevel": "low"})),
            (
                "gemini-3.5-flash-lite",
                Off,
                json!({"thinkingLevel": "minimal"}),
            ),
            ("gemini-2.5-flash", Off, json!({"thinkingBudget": 0})),
            ("gemini-2.5-flash-lite", Off, json!({"thinkingBudget": 0})),
            ("gemini-2.5-pro", Off, json!({"thinkingBudget": 128})),
            (
                "gemini-2.5-pro",
                Low,
                json!({"thinkingBudget": 2048, "includeThoughts": true}),
            ),
            ("gemini-2.0-flash", Off, Value::Null),
            ("gemma-3-27b-it", Off, Value::Null),
            // Models that do not think refuse any thinking settings.
            ("gemini-2.0-flash", High, Value::Null),
            ("gemma-3-27b-it", Low, Value::Null),
        ] {
            assert_eq!(thinking(model, effort), expected, "{model} {effort:?}");
        }
    }

    /// A budget the client named goes as asked within the model's range;
    /// Gemini 3 gets the level of the nearest effort, never a budget beside
    /// it (Gemini refuses both together).
    #[test]
    fn a_named_budget_stays_within_the_models_range() {
        let thinking = |model: &str, budget: u32| {
            let mut request = ChatRequest::new(model, vec![Message::user("Hi")]);
            request.reasoning = Some(ReasoningEffort::High);
            request.reasoning_budget = Some(budget);
            let body = serde_json::to_value(encode_request(&request)).unwrap();
            body["generationConfig"]["thinkingConfig"].clone()
        };
        for (model, budget, expected) in [
            ("gemini-2.5-flash", 31_999, json!(24_576)),
            ("gemini-2.5-pro", 31_999, json!(31_999)),
            ("gemini-2.5-pro", 40_000, json!(32_768)),
            ("gemini-2.5-flash-lite", 100, json!(512)),
            ("gemini-2.5-flash", 5_000, json!(5_000)),
        ] {
            assert_eq!(
                thinking(model, budget)["thinkingBudget"],
                expected,
                "{model}"
            );
        }
        let level = thinking("gemini-3-pro-preview", 31_999);
        assert_eq!(
            level,
            json!({"thinkingLevel": "high", "includeThoughts": true})
        );
    }

    /// Names without a version are aliases of the newest models, whose
    /// calls must be signed.
    #[test]
    fn unversioned_names_get_signed_calls() {
        for (model, signed) in [
            ("gemini-flash-latest", true),
            ("gemini-3-pro-preview", true),
            ("gemini-2.5-flash", false),
            ("gemini-1.5-pro", false),
        ] {
            let request = ChatRequest::new(
                model,
                vec![
                    Message::user("Read"),
                    Message {
                        role: Role::Assistant,
                        content: vec![ContentPart::ToolCall(ToolCall::new("c1", "read", "{}"))],
                    },
                    Message::tool_result("c1", "text"),
                ],
            );
            let body = serde_json::to_value(encode_request(&request)).unwrap();
            let call = &body["contents"][1]["parts"][0];
            assert_eq!(
                call.get("thoughtSignature").is_some(),
                signed,
                "{model}: {call}"
            );
        }
    }

    #[test]
    fn model_names_cannot_change_the_path() {
        assert_eq!(
            model_path("../cachedContents#", "generateContent"),
            "/models/..%2FcachedContents%23:generateContent"
        );
        assert_eq!(
            model_path("models/x?key=1", "countTokens"),
            "/models/x%3Fkey=1:countTokens"
        );
        assert_eq!(
            model_path("gemini 2/../y", "generateContent"),
            "/models/gemini%202%2F..%2Fy:generateContent"
        );
    }

    #[test]
    fn model_paths_keep_an_explicit_collection() {
        assert_eq!(
            model_path("gemini-2.5-flash", "generateContent"),
            "/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            model_path("models/gemini-2.5-flash", "generateContent"),
            "/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            model_path("tunedModels/mine-1", "streamGenerateContent"),
            "/tunedModels/mine-1:streamGenerateContent"
        );
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(stop_reason("STOP"), StopReason::EndTurn);
        assert_eq!(stop_reason("MAX_TOKENS"), StopReason::MaxTokens);
        for filtered in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(stop_reason(filtered), StopReason::ContentFilter);
        }
        assert_eq!(
            stop_reason("MALFORMED_FUNCTION_CALL"),
            StopReason::Other("MALFORMED_FUNCTION_CALL".into())
        );
    }

    #[test]
    fn mime_types_are_guessed_from_extensions() {
        assert_eq!(mime_from_url("https://x.test/a/b.PNG?x=1#f"), "image/png");
        assert_eq!(mime_from_url("https://x.test/a.webp"), "image/webp");
        assert_eq!(mime_from_url("https://x.test/photo"), "image/jpeg");
        assert_eq!(mime_from_url("https://x.test/a.v1/photo"), "image/jpeg");
    }

    #[test]
    fn rpc_errors_map_to_kinds() {
        let error = |code, status: &str, message: &str| WireError {
            code,
            message: message.into(),
            status: status.into(),
            details: vec![
                json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}),
            ],
        };
        assert_eq!(
            error_kind(&error(429, "RESOURCE_EXHAUSTED", "quota")),
            ErrorKind::RateLimited {
                retry_after: Some(std::time::Duration::from_millis(2500))
            }
        );
        assert_eq!(
            error_kind(&error(503, "UNAVAILABLE", "The model is overloaded.")),
            ErrorKind::Overloaded
        );
        assert_eq!(
            error_kind(&error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1196265) exceeds the maximum number of tokens allowed (1048575)."
            )),
            ErrorKind::ContextLengthExceeded {
                needed: Some(1_196_265),
                allowed: Some(1_048_575)
            }
        );
        assert_eq!(
            error_kind(&error(500, "INTERNAL", "boom")),
            ErrorKind::Server
        );
        assert_eq!(
            error_kind(&error(
                400,
                "FAILED_PRECONDITION",
                "User location is not supported for the API use."
            )),
            ErrorKind::Permission
        );
        assert_eq!(
            error_kind(&error(400, "INVALID_ARGUMENT", "bad schema")),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn usage_round_trips() {
        let wire = UsageMetadata {
            prompt_token_count: 100,
            cached_content_token_count: 60,
            candidates_token_count: 20,
            thoughts_token_count: 30,
            tool_use_prompt_token_count: 0,
            total_token_count: 150,
        };
        let usage = Usage::from(&wire);
        assert_eq!(
            usage,
            Usage {
                input_tokens: 100,
                cached_input_tokens: 60,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                output_tokens: 50,
                reasoning_tokens: 30
            }
        );
        assert_eq!(UsageMetadata::from(&usage), wire);
    }
}
