//! What a caller asks of a model, and what a model can do.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// A request for one model answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model, as the provider names it (the router strips the
    /// `provider:` prefix before a client sees the request).
    pub model: String,
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool the model must call.
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Whether the model may call several tools in one answer (`None`: the
    /// provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling: Sampling,
    /// The most tokens the answer may have (`None`: the provider's default,
    /// or the catalog's maximum where the protocol requires a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sequences that end the answer when generated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Structured output: the answer must match this format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// How much the model should reason, for models that can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningEffort>,
    /// The thinking budget in tokens the caller asked for, when it named one
    /// (Anthropic's `budget_tokens`): APIs that take a budget (Anthropic,
    /// Gemini) get it as asked; the others get `reasoning`, its nearest
    /// level. Only read when `reasoning` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_budget: Option<u32>,
    /// The effort the caller named, as its protocol spells it, when the
    /// protocol has levels `reasoning` lacks (Anthropic's `xhigh` and
    /// `max`): an upstream of the same protocol gets it as named. Only read
    /// when `reasoning` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort_name: Option<String>,
    /// Protocol headers a gateway's client sent that an upstream speaking
    /// the same protocol should receive too (`anthropic-beta` turns on beta
    /// features); clients of other protocols ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwarded_headers: Vec<(String, String)>,
    /// The mark of a client that asked for its prompt to be cached
    /// (Anthropic's `cache_control` object: `{"type": "ephemeral"}`, with
    /// the `ttl` it gave): a provider that caches only where it is told
    /// (Anthropic) marks the prompt's stable points with it. `None` when the
    /// client marked nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<serde_json::Value>,
    /// The key a client groups its requests by, so that a provider sends
    /// those sharing a prompt to the same cache (OpenAI's
    /// `prompt_cache_key`, which Codex sets to its conversation's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// How long the answer's text should be (OpenAI's `verbosity`, for the
    /// gpt-5 family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<Verbosity>,
    /// The processing tier the client asked for (OpenAI's `service_tier`:
    /// `auto`, `default`, `flex`, `priority`), as it spelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Anthropic's context editing (`context_management`), as the client
    /// sent it: an Anthropic upstream gets it as it is and edits the
    /// conversation itself; for any other provider the router makes the
    /// edits first (`freehold_llm::context_edit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<serde_json::Value>,
    /// How the client asked to see the reasoning, as its protocol names
    /// it (Anthropic's `thinking.display`: `summarized`, or `omitted` for
    /// its signature alone, which Claude Code asks for): an Anthropic
    /// upstream gets it as asked; other providers send the reasoning they
    /// have. Only read when `reasoning` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_display: Option<String>,
    /// The end user the client sends the request for, as it names them to a
    /// provider for abuse monitoring (Anthropic's `metadata.user_id`,
    /// OpenAI's `safety_identifier`, or its older `user`): a provider that
    /// takes such an id gets it in its own field, so that what it monitors
    /// is one user's and not the whole gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
}

/// How long an answer's text should be, for models that take a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// Terse.
    Low,
    /// The model's usual length.
    Medium,
    /// Thorough.
    High,
}

impl Verbosity {
    /// The lowercase name OpenAI's APIs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl ChatRequest {
    /// A request with defaults for everything but the model and messages.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: None,
            sampling: Sampling::default(),
            max_tokens: None,
            stop: Vec::new(),
            response_format: None,
            reasoning: None,
            reasoning_budget: None,
            reasoning_effort_name: None,
            forwarded_headers: Vec::new(),
            prompt_cache: None,
            cache_key: None,
            verbosity: None,
            service_tier: None,
            context_management: None,
            reasoning_display: None,
            end_user: None,
        }
    }

    /// The same request with each document replaced by its note
    /// ([`crate::Document::note`]), as a provider that reads no documents
    /// gets it.
    pub fn into_document_notes(mut self) -> ChatRequest {
        if self.messages.iter().any(Message::has_document) {
            self.messages = self
                .messages
                .into_iter()
                .map(Message::into_document_notes)
                .collect();
        }
        self
    }

    /// A rough count of the request's tokens (about four bytes a token), for
    /// sizing contexts and budgets before a tokenizer is at hand, by a
    /// provider that reads documents ([`crate::Document::estimated_tokens`]
    /// each).
    pub fn estimated_input_tokens(&self) -> u64 {
        self.estimate_input_tokens(DocumentsRead::Whole)
    }

    /// [`Self::estimated_input_tokens`] by a provider that reads no
    /// documents: each counts as the note sent in its place
    /// ([`Self::into_document_notes`]), not as the file.
    pub fn estimated_input_tokens_as_notes(&self) -> u64 {
        self.estimate_input_tokens(DocumentsRead::AsNotes)
    }

    fn estimate_input_tokens(&self, documents: DocumentsRead) -> u64 {
        let mut bytes = 0usize;
        for message in &self.messages {
            bytes += 8;
            for part in &message.content {
                bytes += match part {
                    crate::ContentPart::Text { text } => text.len(),
                    // An image costs about a thousand tokens on most providers.
                    crate::ContentPart::Image { .. } => 4_000,
                    crate::ContentPart::ToolCall(call) => call.name.len() + call.arguments.len(),
                    crate::ContentPart::ToolResult(result) => result.content.len(),
                    crate::ContentPart::Reasoning(reasoning) => reasoning.text.len(),
                    // In bytes of text: four a token.
                    crate::ContentPart::Document(document) => match documents {
                        DocumentsRead::Whole => {
                            usize::try_from(document.estimated_tokens() * 4).unwrap_or(usize::MAX)
                        }
                        DocumentsRead::AsNotes => document.note_paragraph().len(),
                    },
                };
            }
        }
        for tool in &self.tools {
            bytes += tool.name.len() + tool.description.len() + json_text_len(&tool.parameters);
        }
        (bytes as u64).div_ceil(4)
    }
}

/// How long `value` is as compact JSON text, escapes aside: a quote, a
/// backslash or a control character in a string counts as its one byte, not
/// as its escape; otherwise what `value.to_string().len()` gives. Measured
/// without writing the text: a coding agent's tool schemas are tens of
/// kilobytes, and writing them out only to take their length cost more than
/// the rest of the estimate. The escapes left out are a percent or two of a
/// schema's text, in an estimate of four bytes a token.
fn json_text_len(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(number) => {
            let mut counter = LenCounter(0);
            // A `fmt::Write` that only counts cannot fail.
            let _ = std::fmt::Write::write_fmt(&mut counter, format_args!("{number}"));
            counter.0
        }
        Value::String(text) => text.len() + 2,
        // `[`, `]` and a comma between items.
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(json_text_len).sum::<usize>()
        }
        // `{`, `}`, a comma between entries, and each key's quotes and colon.
        Value::Object(entries) => {
            2 + entries.len().saturating_sub(1)
                + entries
                    .iter()
                    .map(|(key, value)| key.len() + 3 + json_text_len(value))
                    .sum::<usize>()
        }
    }
}

/// A `fmt::Write` that counts the bytes written to it.
struct LenCounter(usize);

impl std::fmt::Write for LenCounter {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0 += text.len();
        Ok(())
    }
}

/// How [`ChatRequest::estimate_input_tokens`] counts a document.
#[derive(Debug, Clone, Copy)]
enum DocumentsRead {
    /// As the provider reads it.
    Whole,
    /// As the note a provider that reads none gets in its place.
    AsNotes,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does and when to use it.
    #[serde(default)]
    pub description: String,
    /// A JSON Schema (an `object` schema) for its arguments.
    pub parameters: serde_json::Value,
    /// The client asked the provider to hold the model's arguments to
    /// `parameters` exactly (`strict` in OpenAI's and Anthropic's tool
    /// definitions). Providers that have no such mode leave it aside.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool {
        /// The tool's name.
        name: String,
    },
}

/// Sampling parameters; `None` leaves the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Randomness, usually 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling (not every provider has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// A seed for reproducible sampling, where supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Penalty for tokens already present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Penalty proportional to how often a token appeared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
}

/// A required shape for the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// A name for the schema (OpenAI requires one).
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// Whether the provider must enforce the schema strictly.
        #[serde(default)]
        strict: bool,
    },
}

/// How hard a reasoning model should think.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    /// No reasoning: the caller asked for none (OpenAI's `none`, Anthropic's
    /// `disabled`). Models that reason unless told otherwise are told not
    /// to where their API has a way (Gemini 2.5 Flash's budget of 0,
    /// Ollama's `think: false`, a chat template's `enable_thinking`), and
    /// get the least it allows where it has none (Gemini 2.5 Pro and 3).
    #[serde(rename = "none")]
    Off,
    /// As little as the model allows.
    Minimal,
    /// A little.
    Low,
    /// The usual.
    Medium,
    /// A lot.
    High,
}

impl ReasoningEffort {
    /// The lowercase name used by OpenAI-style APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "none",
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    /// A thinking-token budget for APIs that take one (Anthropic, Gemini).
    /// [`Off`](Self::Off) has none: it turns thinking off rather than
    /// budgeting it.
    pub fn budget_tokens(self) -> u32 {
        match self {
            Self::Off => 0,
            Self::Minimal => 1_024,
            Self::Low => 2_048,
            Self::Medium => 8_192,
            Self::High => 24_576,
        }
    }
}

/// A model a provider serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's id at its provider.
    pub id: String,
    /// The configured provider serving it.
    pub provider: String,
    /// The context window in tokens, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// The most output tokens, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// What a provider (or one of its models) can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Streams answers.
    pub streaming: bool,
    /// Calls tools natively.
    pub tools: bool,
    /// Calls several tools in one answer.
    pub parallel_tool_calls: bool,
    /// Reads images.
    pub vision: bool,
    /// Produces reasoning.
    pub reasoning: bool,
    /// Enforces a JSON Schema on the answer.
    pub structured_output: bool,
    /// Reads documents (PDFs); without, each is sent as a line naming it
    /// ([`crate::Document::note`]).
    pub documents: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            streaming: true,
            tools: true,
            parallel_tool_calls: true,
            vision: false,
            reasoning: false,
            structured_output: false,
            documents: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentPart, Document, DocumentSource, Role};

    #[test]
    fn a_schemas_length_is_measured_as_its_compact_text() {
        let schemas = [
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!(null),
            serde_json::json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Où lire — a UTF-8 path"},
                    "limit": {"type": "integer", "minimum": -1, "maximum": 1.5e300},
                    "flags": {"type": "array", "items": [true, false, null, 0.25]},
                },
                "required": ["path"],
                "additionalProperties": false,
            }),
        ];
        for schema in schemas {
            assert_eq!(json_text_len(&schema), schema.to_string().len(), "{schema}");
        }
        // Escapes are left out of the measure: a quote, a backslash or a
        // line break is one byte, not two.
        let quoted = serde_json::json!({"description": "say \"hi\"\nC:\\"});
        assert_eq!(json_text_len(&quoted), quoted.to_string().len() - 4);
    }

    /// A request whose user message carries a 300 KB PDF beside its text.
    fn with_pdf() -> ChatRequest {
        let pdf = ContentPart::Document(Document {
            source: DocumentSource::Base64 {
                media_type: "application/pdf".into(),
                data: "A".repeat(400_000),
            },
            title: Some("spec.pdf".into()),
        });
        let ask = ContentPart::Text {
            text: "Summarise it.".into(),
        };
        ChatRequest::new(
            "m",
            vec![Message {
                role: Role::User,
                content: vec![pdf, ask],
            }],
        )
    }

    #[test]
    fn a_document_counts_whole_or_as_the_note_sent_in_its_place() {
        let request = with_pdf();
        // 300 KB at a token for each 30 bytes.
        assert!(request.estimated_input_tokens() > 10_000);
        let as_notes = request.estimated_input_tokens_as_notes();
        assert!(as_notes < 100, "{as_notes}");

        let noted = request.into_document_notes();
        assert!(!noted.messages[0].has_document());
        assert_eq!(noted.estimated_input_tokens(), as_notes);
        let text = noted.messages[0].text_content();
        assert!(
            text.contains("spec.pdf: application/pdf, about 293 KB"),
            "{text}"
        );
        assert!(text.ends_with("Summarise it."), "{text}");
    }
}
