//! The gateway direction of Chat Completions: decode a client's request,
//! encode the answer (whole or streamed) and errors.

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, ErrorKind, LlmError, Message, ReasoningEffort,
    ResponseFormat, Role, Sampling, StopReason, StreamEvent, ToolCall, ToolChoice, ToolResult,
    ToolSpec, Usage, Verbosity,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Choice, ChunkChoice, CompletionChunk, CompletionRequest, CompletionResponse, Delta,
    FunctionDelta, ToolCallDelta, WireCallFunction, WireContent, WireMessage, WirePart,
    WireToolCall, WireUsage, arguments_text,
};
use crate::wire::serve::{
    DecodeError, SseFrame, call_id_for_client, client_message, document_from_file, generated_id,
    image_from_url, split_client_call_id, unix_now,
};

/// What a Chat Completions request asks of the answer's delivery, beyond
/// the [`ChatRequest`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Answer as a stream of `chat.completion.chunk` events.
    pub stream: bool,
    /// `stream_options.include_usage`: end the stream with a chunk carrying
    /// usage and no choices.
    pub include_usage: bool,
}

/// Decodes a client's request.
///
/// - `system` and `developer` messages become [`Role::System`] messages;
/// - `tool` messages (which need `tool_call_id`) become [`Role::Tool`]
///   messages, consecutive ones merged into one;
/// - `data:` image URLs become inline (base64) images;
/// - an assistant's `reasoning_content` (or `reasoning`) becomes a
///   reasoning part before its text;
/// - `max_completion_tokens` wins over `max_tokens`;
/// - `reasoning_effort` `none` is [`ReasoningEffort::Off`], and so is
///   `chat_template_kwargs.enable_thinking: false` (vLLM's and SGLang's
///   switch) when no effort is named; `xhigh` is [`ReasoningEffort::High`];
/// - `prompt_cache_key`, `verbosity` and `service_tier` are kept for
///   OpenAI's own API (see [`crate::wire::openai_api`]), and so is the end
///   user (`safety_identifier`, else `user`; an empty one is none), which
///   Anthropic's API takes too;
/// - tools other than `function` are rejected.
///
/// # Errors
/// A [`DecodeError`] naming the field at fault.
pub fn decode_request(wire: CompletionRequest) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    refuse_unserved_fields(&wire)?;
    let options = ServeOptions {
        stream: wire.stream,
        include_usage: wire.stream
            && wire
                .stream_options
                .as_ref()
                .is_some_and(|options| options.include_usage),
    };
    let mut messages: Vec<Message> = Vec::new();
    // Images a tool returned: tool results carry text only (as most
    // providers take them), so they open the user message that follows the
    // results, or one of their own when the next message is not the user's
    // (as the Anthropic decoder does with a `tool_result`'s images).
    let mut tool_images: Vec<ContentPart> = Vec::new();
    for (index, message) in wire.messages.into_iter().enumerate() {
        let field = format!("messages[{index}]");
        let (decoded, images) = decode_message(message, &field)?;
        tool_images.extend(images);
        if decoded.role == Role::Tool {
            match messages.last_mut() {
                Some(last) if last.role == Role::Tool => last.content.extend(decoded.content),
                _ => messages.push(decoded),
            }
            continue;
        }
        if !tool_images.is_empty() {
            let mut content = std::mem::take(&mut tool_images);
            if decoded.role == Role::User {
                content.extend(decoded.content);
                messages.push(Message {
                    role: Role::User,
                    content,
                });
                continue;
            }
            messages.push(Message {
                role: Role::User,
                content,
            });
        }
        messages.push(decoded);
    }
    if !tool_images.is_empty() {
        messages.push(Message {
            role: Role::User,
            content: tool_images,
        });
    }
    let tools = wire
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, tool)| {
            let field = format!("tools[{index}]");
            if tool.kind != "function" {
                return Err(DecodeError::UnsupportedTool {
                    field,
                    kind: tool.kind,
                });
            }
            if tool.function.name.is_empty() {
                return Err(DecodeError::missing(
                    format!("{field}.function.name"),
                    "a function tool needs a name",
                ));
            }
            Ok(ToolSpec {
                name: tool.function.name,
                description: tool.function.description.unwrap_or_default(),
                parameters: tool
                    .function
                    .parameters
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                strict: tool.function.strict == Some(true),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = match wire.tool_choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(value) => decode_tool_choice(&value, "tool_choice")?,
    };
    let response_format = match wire.response_format {
        None | Some(Value::Null) => None,
        Some(value) => decode_response_format(&value)?,
    };
    let thinking_switched_off = wire
        .chat_template_kwargs
        .as_ref()
        .and_then(|kwargs| kwargs.get("enable_thinking"))
        .and_then(Value::as_bool)
        == Some(false);
    let reasoning = match wire.reasoning_effort.as_deref() {
        None => thinking_switched_off.then_some(ReasoningEffort::Off),
        Some(effort) => decode_effort(effort, "reasoning_effort")?,
    };
    let request = ChatRequest {
        model: wire.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: wire.parallel_tool_calls,
        sampling: Sampling {
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            // A negative seed is how some clients ask for a random one,
            // which is what no seed gets.
            seed: wire.seed.and_then(|seed| u64::try_from(seed).ok()),
            presence_penalty: wire.presence_penalty,
            frequency_penalty: wire.frequency_penalty,
        },
        max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
        stop: wire
            .stop
            .map(super::StopField::into_vec)
            .unwrap_or_default(),
        response_format,
        reasoning,
        reasoning_budget: None,
        reasoning_effort_name: None,
        forwarded_headers: Vec::new(),
        prompt_cache: None,
        cache_key: wire.prompt_cache_key,
        verbosity: wire
            .verbosity
            .as_deref()
            .map(|verbosity| decode_verbosity(verbosity, "verbosity"))
            .transpose()?,
        service_tier: wire.service_tier,
        context_management: None,
        reasoning_display: None,
        end_user: end_user(wire.safety_identifier, wire.user),
    };
    Ok((request, options))
}

/// The end user a client names (OpenAI's `safety_identifier`, else its
/// older `user`), an empty one being none.
pub(crate) fn end_user(safety_identifier: Option<String>, user: Option<String>) -> Option<String> {
    let named = |id: &Option<String>| id.as_deref().is_some_and(|id| !id.is_empty());
    match (named(&safety_identifier), named(&user)) {
        (true, _) => safety_identifier,
        (false, true) => user,
        (false, false) => None,
    }
}

/// Refuses, by name, what a client asks for that the gateway's answer would
/// leave out: one answer without the others asked for, no log
/// probabilities, or a plain text answer instead of a function call would
/// each look like success to the client and fail later, or never.
fn refuse_unserved_fields(wire: &CompletionRequest) -> Result<(), DecodeError> {
    if let Some(n) = wire.n
        && n != 1
    {
        return Err(DecodeError::unsupported(
            "n",
            format!("{n} answers to one request (the gateway writes one; send {n} requests)"),
        ));
    }
    if wire.logprobs == Some(true) || wire.top_logprobs.is_some_and(|top| top > 0) {
        return Err(DecodeError::unsupported(
            if wire.logprobs == Some(true) {
                "logprobs"
            } else {
                "top_logprobs"
            },
            "log probabilities (leave out `logprobs` and `top_logprobs`)",
        ));
    }
    for (field, present) in [
        ("functions", wire.functions.is_some()),
        ("function_call", wire.function_call.is_some()),
    ] {
        if present {
            return Err(DecodeError::unsupported(
                field,
                "the API before tools (send `tools` with `type: \"function\"` and \
                 `tool_choice` instead)",
            ));
        }
    }
    let audio_asked = wire
        .modalities
        .as_ref()
        .is_some_and(|kinds| kinds.iter().any(|kind| kind != "text"));
    if audio_asked || wire.audio.is_some() {
        return Err(DecodeError::unsupported(
            if audio_asked { "modalities" } else { "audio" },
            "spoken output (ask for text only)",
        ));
    }
    if wire.web_search_options.is_some() {
        return Err(DecodeError::unsupported(
            "web_search_options",
            "OpenAI's hosted web search (the gateway has no search to run)",
        ));
    }
    Ok(())
}

/// One message, and the images of a tool message (which go to the user
/// message after the results).
fn decode_message(
    message: WireMessage,
    field: &str,
) -> Result<(Message, Vec<ContentPart>), DecodeError> {
    match message.role.as_str() {
        "system" | "developer" => Ok((
            Message {
                role: Role::System,
                content: decode_content(message.content, field, false)?,
            },
            Vec::new(),
        )),
        "user" => Ok((
            Message {
                role: Role::User,
                content: decode_content(message.content, field, true)?,
            },
            Vec::new(),
        )),
        "assistant" => {
            let mut content = Vec::new();
            if let Some(reasoning) = message
                .reasoning_content
                .or(message.reasoning)
                .filter(|text| !text.is_empty())
            {
                content.push(ContentPart::Reasoning(freehold_protocol::Reasoning {
                    text: reasoning,
                    ..freehold_protocol::Reasoning::default()
                }));
            }
            content.extend(decode_content(message.content, field, false)?);
            // An earlier refusal, as the Agents SDK replays it: what the
            // model said, kept as its text.
            if let Some(refusal) = message.refusal.filter(|text| !text.is_empty()) {
                content.push(ContentPart::Text { text: refusal });
            }
            for (index, call) in message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let call_field = format!("{field}.tool_calls[{index}]");
                if call.id.is_empty() {
                    return Err(DecodeError::missing(call_field, "a tool call needs an id"));
                }
                if call.function.name.is_empty() {
                    return Err(DecodeError::missing(
                        format!("{call_field}.function.name"),
                        "a tool call needs the tool's name",
                    ));
                }
                let (id, signature) = split_client_call_id(&call.id);
                content.push(ContentPart::ToolCall(ToolCall {
                    signature,
                    ..ToolCall::new(
                        id,
                        call.function.name,
                        arguments_text(&call.function.arguments),
                    )
                }));
            }
            Ok((
                Message {
                    role: Role::Assistant,
                    content,
                },
                Vec::new(),
            ))
        }
        "tool" => {
            let call_id = message
                .tool_call_id
                .filter(|id| !id.is_empty())
                .map(|id| split_client_call_id(&id).0)
                .ok_or_else(|| {
                    DecodeError::missing(
                        field,
                        "a tool message needs tool_call_id (the id of the call it answers)",
                    )
                })?;
            // Text parts are the result; images go to the user message
            // after the results (see `decode_request`); anything else is
            // refused by name.
            let mut images = Vec::new();
            let mut texts = Vec::new();
            for part in decode_content(message.content, field, true)? {
                match part {
                    ContentPart::Text { text } => texts.push(text),
                    image => images.push(image),
                }
            }
            Ok((
                Message {
                    role: Role::Tool,
                    content: vec![ContentPart::ToolResult(ToolResult {
                        call_id,
                        content: texts.join("\n"),
                        is_error: false,
                    })],
                },
                images,
            ))
        }
        "function" => Err(DecodeError::unsupported(
            format!("{field}.role"),
            "the deprecated `function` role (use `tool` messages with tool_call_id)",
        )),
        other => Err(DecodeError::invalid(
            format!("{field}.role"),
            format!("unknown role `{other}` (expected system, developer, user, assistant or tool)"),
        )),
    }
}

fn decode_content(
    content: Option<WireContent>,
    field: &str,
    images: bool,
) -> Result<Vec<ContentPart>, DecodeError> {
    match content {
        None => Ok(Vec::new()),
        Some(WireContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(WireContent::Text(text)) => Ok(vec![ContentPart::Text { text }]),
        Some(WireContent::Parts(parts)) => {
            let mut out: Vec<ContentPart> = Vec::new();
            for (index, part) in parts.into_iter().enumerate() {
                let part_field = format!("{field}.content[{index}]");
                match part {
                    WirePart::Text { text } if text.is_empty() => {}
                    WirePart::Text { text } => out.push(ContentPart::Text { text }),
                    WirePart::ImageUrl { image_url } if images => {
                        if image_url.url.is_empty() {
                            return Err(DecodeError::missing(
                                format!("{part_field}.image_url.url"),
                                "an image part needs a URL",
                            ));
                        }
                        out.push(ContentPart::Image {
                            source: image_from_url(&image_url.url),
                        });
                    }
                    WirePart::ImageUrl { .. } => {
                        return Err(DecodeError::unsupported(
                            part_field,
                            "an image outside a user message",
                        ));
                    }
                    WirePart::File { file } if images => {
                        match document_from_file(file.file_data, None, file.filename) {
                            Some(part) => out.push(part),
                            None => {
                                return Err(DecodeError::unsupported(
                                    format!("{part_field}.file"),
                                    "a file without file_data (an uploaded file's id: the \
                                     gateway has no copy of it; send its bytes instead)",
                                ));
                            }
                        }
                    }
                    WirePart::File { .. } => {
                        return Err(DecodeError::unsupported(
                            part_field,
                            "a file outside a user message",
                        ));
                    }
                    WirePart::Other(value) => {
                        let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
                        // A refusal part of an assistant message is its text.
                        if kind == "refusal"
                            && let Some(text) = value.get("refusal").and_then(Value::as_str)
                        {
                            out.push(ContentPart::Text {
                                text: text.to_owned(),
                            });
                            continue;
                        }
                        if kind == "image_url" {
                            return Err(DecodeError::invalid(
                                format!("{part_field}.image_url"),
                                "an image part's `image_url` is an object with a `url`",
                            ));
                        }
                        return Err(DecodeError::unsupported(
                            part_field,
                            format!("a `{kind}` content part (only text, image_url and file are)"),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Decodes `tool_choice`: `"auto"`, `"none"`, `"required"`,
/// `{"type":"function","function":{"name":…}}` (or the Responses form
/// `{"type":"function","name":…}`).
pub(crate) fn decode_tool_choice(value: &Value, field: &str) -> Result<ToolChoice, DecodeError> {
    match value {
        Value::String(text) => match text.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(DecodeError::invalid(
                field,
                format!("unknown value `{other}` (expected auto, none, required or an object)"),
            )),
        },
        Value::Object(map) => {
            let name = map
                .get("function")
                .and_then(|function| function.get("name"))
                .or_else(|| map.get("name"))
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty());
            match (map.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Ok(ToolChoice::Tool {
                    name: name.to_owned(),
                }),
                (Some("function"), None) => Err(DecodeError::missing(
                    format!("{field}.function.name"),
                    "a forced tool choice needs the tool's name",
                )),
                (Some(mode @ ("auto" | "none" | "required")), _) => {
                    decode_tool_choice(&Value::String(mode.to_owned()), field)
                }
                (kind, _) => Err(DecodeError::invalid(
                    format!("{field}.type"),
                    format!(
                        "unsupported tool choice type {} (expected `function`, or `custom` for a \
                         freeform tool of the Responses API)",
                        kind.map_or_else(|| "(none)".to_owned(), |kind| format!("`{kind}`"))
                    ),
                )),
            }
        }
        _ => Err(DecodeError::invalid(
            field,
            "expected a string or an object",
        )),
    }
}

fn decode_response_format(value: &Value) -> Result<Option<ResponseFormat>, DecodeError> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = value.get("json_schema").ok_or_else(|| {
                DecodeError::missing(
                    "response_format.json_schema",
                    "a json_schema format needs its json_schema object",
                )
            })?;
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    DecodeError::missing(
                        "response_format.json_schema.name",
                        "a json_schema format needs a name",
                    )
                })?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                schema: spec
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                strict: spec.get("strict").and_then(Value::as_bool).unwrap_or(false),
            }))
        }
        other => Err(DecodeError::invalid(
            "response_format.type",
            format!(
                "unsupported format {} (expected text, json_object or json_schema)",
                other.map_or_else(|| "(none)".to_owned(), |kind| format!("`{kind}`"))
            ),
        )),
    }
}

/// Decodes an OpenAI reasoning effort: `none` is [`ReasoningEffort::Off`],
/// the levels above `high` (`xhigh`, OpenRouter's `max`, Codex's `ultra`)
/// are [`ReasoningEffort::High`], and Groq's `default` is no effort asked:
/// the model's own.
pub(crate) fn decode_effort(
    effort: &str,
    field: &str,
) -> Result<Option<ReasoningEffort>, DecodeError> {
    match effort {
        "none" => Ok(Some(ReasoningEffort::Off)),
        "minimal" => Ok(Some(ReasoningEffort::Minimal)),
        "low" => Ok(Some(ReasoningEffort::Low)),
        "medium" => Ok(Some(ReasoningEffort::Medium)),
        "high" | "xhigh" | "max" | "ultra" => Ok(Some(ReasoningEffort::High)),
        "default" => Ok(None),
        other => Err(DecodeError::invalid(
            field,
            format!(
                "unknown effort `{other}` (expected none, minimal, low, medium, high, xhigh, \
                 max, ultra or default)"
            ),
        )),
    }
}

/// Decodes OpenAI's `verbosity`.
pub(crate) fn decode_verbosity(verbosity: &str, field: &str) -> Result<Verbosity, DecodeError> {
    match verbosity {
        "low" => Ok(Verbosity::Low),
        "medium" => Ok(Verbosity::Medium),
        "high" => Ok(Verbosity::High),
        other => Err(DecodeError::invalid(
            field,
            format!("unknown verbosity `{other}` (expected low, medium or high)"),
        )),
    }
}

/// The `finish_reason` spelling of a [`StopReason`]. A reason of another
/// provider's (Gemini's `MALFORMED_FUNCTION_CALL`, vLLM's `abort`) is
/// outside the values SDKs know, so it becomes `stop`.
pub fn finish_reason_name(reason: &StopReason) -> String {
    match reason {
        StopReason::EndTurn
        | StopReason::StopSequence(_)
        | StopReason::Cancelled
        | StopReason::Refusal => "stop".into(),
        StopReason::MaxTokens => "length".into(),
        StopReason::ToolUse => "tool_calls".into(),
        StopReason::ContentFilter => "content_filter".into(),
        StopReason::Other(other) => {
            tracing::debug!(reason = %other, "an upstream stop reason OpenAI lacks: stop");
            "stop".into()
        }
    }
}

/// Encodes a complete answer as a `chat.completion` object.
///
/// The id is the response's, else a new `chatcmpl-…`; `created` is now;
/// `model` is the name the client asked for. Reasoning text goes in
/// `reasoning_content` (signatures are dropped: the protocol has no field
/// for them); text parts are joined; a tool-calls-only answer has
/// `content: null`.
pub fn encode_response(response: &ChatResponse, model: &str) -> CompletionResponse {
    let text = response.message.text_content();
    let reasoning: String = response
        .message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Reasoning(reasoning) => Some(reasoning.text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<WireToolCall> = response
        .message
        .tool_calls()
        .map(|call| WireToolCall {
            id: call_id_for_client(&call.id, call.signature.as_deref()),
            kind: "function".into(),
            function: WireCallFunction {
                name: call.name.clone(),
                arguments: Value::String(call.arguments.clone()),
            },
        })
        .collect();
    let refusal = matches!(response.stop_reason, StopReason::Refusal) && !text.is_empty();
    CompletionResponse {
        id: response
            .id
            .clone()
            .unwrap_or_else(|| generated_id("chatcmpl-")),
        object: "chat.completion".into(),
        created: unix_now(),
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: WireMessage {
                role: "assistant".into(),
                // A refusal is `refusal` with `content: null`, as OpenAI
                // sends it: the SDK's `parse()` reads the refusal instead of
                // parsing its words as the answer.
                content: (!refusal && (!text.is_empty() || calls.is_empty()))
                    .then(|| WireContent::Text(text.clone())),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: refusal.then_some(text),
                ..WireMessage::default()
            },
            finish_reason: Some(finish_reason_name(&response.stop_reason)),
            stop_reason: None,
            matched_stop: None,
        }],
        usage: Some(WireUsage::from(&response.usage)),
    }
}

/// Encodes a streamed answer as `chat.completion.chunk` events.
///
/// What it emits, in order:
/// 1. on the first event, a chunk with `delta: {"role":"assistant","content":""}`;
/// 2. text as `delta.content` (as `delta.refusal` after a
///    [`StreamEvent::RefusalStart`]), reasoning as `delta.reasoning_content`;
/// 3. a tool call's start as `delta.tool_calls: [{index, id, type:
///    "function", function: {name, arguments: ""}}]`, then its argument
///    fragments as `delta.tool_calls: [{index, function: {arguments}}]`
///    (the index is the [`StreamEvent`]'s, so parallel calls may
///    interleave);
/// 4. on [`StreamEvent::Stop`], a chunk with an empty delta and
///    `finish_reason`; with `include_usage`, a chunk with `choices: []` and
///    `usage`; then the `[DONE]` marker ([`SseFrame::done`]): **the encoder
///    emits `[DONE]`**, the server writes the frames as they come.
///
/// Every chunk carries the same id, `created` and model. Reasoning
/// signatures and `ToolCallEnd` produce nothing (the protocol has no field
/// for them).
#[derive(Debug)]
pub struct ChunkEncoder {
    id: Option<String>,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    has_calls: bool,
    /// Whether the text is the model's refusal ([`StreamEvent::RefusalStart`]).
    refusing: bool,
    usage: Option<Usage>,
    finished: bool,
}

impl ChunkEncoder {
    /// An encoder for an answer named `model` (the name the client asked
    /// for). `id` `None` takes the id of a leading [`StreamEvent::Start`],
    /// else a new `chatcmpl-…`.
    pub fn new(model: impl Into<String>, id: Option<String>, include_usage: bool) -> Self {
        Self {
            id,
            model: model.into(),
            created: unix_now(),
            include_usage,
            started: false,
            has_calls: false,
            refusing: false,
            usage: None,
            finished: false,
        }
    }

    /// The answer's id (fixed once the first chunk is out).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<WireUsage>) -> SseFrame {
        let chunk = CompletionChunk {
            id: self.id.clone().unwrap_or_default(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        SseFrame::data(serde_json::to_value(chunk).unwrap_or(Value::Null))
    }

    fn delta(&self, delta: Delta, finish_reason: Option<String>) -> SseFrame {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                stop_reason: None,
                matched_stop: None,
            }],
            None,
        )
    }

    fn start(&mut self, id: Option<&String>, out: &mut Vec<SseFrame>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_none() {
            self.id = Some(
                id.filter(|id| !id.is_empty())
                    .cloned()
                    .unwrap_or_else(|| generated_id("chatcmpl-")),
            );
        }
        out.push(self.delta(
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        ));
    }

    /// The frames for one event (none after the answer finished).
    pub fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match event {
            StreamEvent::Start { id, .. } => self.start(id.as_ref(), &mut out),
            StreamEvent::TextDelta { text } => {
                self.start(None, &mut out);
                let delta = if self.refusing {
                    Delta {
                        refusal: Some(text.clone()),
                        ..Delta::default()
                    }
                } else {
                    Delta {
                        content: Some(text.clone()),
                        ..Delta::default()
                    }
                };
                out.push(self.delta(delta, None));
            }
            StreamEvent::RefusalStart => self.refusing = true,
            StreamEvent::ReasoningDelta { text, .. } => {
                self.start(None, &mut out);
                out.push(self.delta(
                    Delta {
                        reasoning_content: Some(text.clone()),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            StreamEvent::ToolCallStart {
                index,
                id,
                name,
                signature,
            } => {
                self.start(None, &mut out);
                self.has_calls = true;
                out.push(self.delta(
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: *index,
                            id: Some(call_id_for_client(id, signature.as_deref())),
                            kind: Some("function".into()),
                            function: Some(FunctionDelta {
                                name: Some(name.clone()),
                                arguments: Some(String::new()),
                            }),
                        }]),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            StreamEvent::ToolCallArgsDelta { index, delta } => {
                self.start(None, &mut out);
                out.push(self.delta(
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: *index,
                            id: None,
                            kind: None,
                            function: Some(FunctionDelta {
                                name: None,
                                arguments: Some(delta.clone()),
                            }),
                        }]),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Stop { reason } => out.extend(self.stop(reason)),
            StreamEvent::ReasoningSignature { .. }
            | StreamEvent::ToolCallEnd { .. }
            | StreamEvent::UsageSoFar(_)
            | StreamEvent::ContextEdited { .. }
            | StreamEvent::RefusalDetails(_)
            | StreamEvent::Timings(_) => {}
        }
        out
    }

    fn stop(&mut self, reason: &StopReason) -> Vec<SseFrame> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.finished = true;
        let reason = match reason {
            StopReason::EndTurn if self.has_calls => StopReason::ToolUse,
            other => other.clone(),
        };
        out.push(self.delta(Delta::default(), Some(finish_reason_name(&reason))));
        if self.include_usage {
            let usage = self.usage.unwrap_or_default();
            out.push(self.chunk(Vec::new(), Some(WireUsage::from(&usage))));
        }
        out.push(SseFrame::done());
        out
    }

    /// Ends the stream if no [`StreamEvent::Stop`] did (`tool_calls` when a
    /// call was made, else `stop`); nothing when it already ended.
    pub fn finish(&mut self) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        let reason = if self.has_calls {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        self.stop(&reason)
    }

    /// What keeps a client waiting while the provider sends nothing (a
    /// local model reading a long prompt): an SSE comment, `: keepalive`,
    /// which parsers skip (the protocol has no keepalive event); nothing
    /// once the answer ended. It keeps proxies and clients' read timeouts
    /// from cutting the connection.
    pub fn keepalive(&mut self) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        vec![SseFrame::comment("keepalive")]
    }

    /// The frames reporting an error after the stream began: a chunk
    /// holding only `{"error": {…}}` (what OpenAI sends), then `[DONE]`.
    /// The encoder emits nothing more afterwards.
    pub fn error(&mut self, error: &LlmError) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let (_, body) = encode_error(error);
        vec![
            SseFrame::data(serde_json::to_value(body).unwrap_or(Value::Null)),
            SseFrame::done(),
        ]
    }
}

/// An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// A human-readable message.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`…
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, where known.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`,
    /// `rate_limit_exceeded`…), where one fits.
    pub code: Option<String>,
}

/// The HTTP status, error `type` and `code` of an error kind, as OpenAI
/// spells them. An [`LlmError::status`] of 413 keeps 413 for invalid
/// requests.
pub(crate) fn openai_error_parts(error: &LlmError) -> (u16, &'static str, Option<&'static str>) {
    match error.kind {
        ErrorKind::Authentication => (401, "authentication_error", Some("invalid_api_key")),
        ErrorKind::Permission => (403, "permission_error", Some("permission_denied")),
        ErrorKind::NotFound => (404, "invalid_request_error", Some("model_not_found")),
        ErrorKind::RateLimited { .. } => (429, "rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::ContextLengthExceeded { .. } => (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        ErrorKind::Overloaded => (503, "server_error", Some("server_is_overloaded")),
        ErrorKind::InvalidRequest if error.status == Some(413) => {
            (413, "invalid_request_error", Some("request_too_large"))
        }
        ErrorKind::InvalidRequest => (400, "invalid_request_error", None),
        ErrorKind::Server | ErrorKind::Connection => (502, "server_error", Some("server_error")),
        ErrorKind::Timeout => (504, "server_error", Some("timeout")),
        ErrorKind::Cancelled => (500, "server_error", Some("cancelled")),
    }
}

/// The message an OpenAI client sees: context-length errors in OpenAI's own
/// words (clients match on them), rate limits with "try again in …".
pub(crate) fn openai_error_message(error: &LlmError) -> String {
    let message = client_message(error);
    match &error.kind {
        ErrorKind::ContextLengthExceeded {
            needed: Some(needed),
            allowed: Some(allowed),
        } => format!(
            "This model's maximum context length is {allowed} tokens. However, your messages \
             resulted in {needed} tokens. Please reduce the length of the messages. ({message})"
        ),
        ErrorKind::ContextLengthExceeded { .. } => format!(
            "This model's maximum context length was exceeded. Please reduce the length of the \
             messages. ({message})"
        ),
        ErrorKind::RateLimited { .. } => match error.retry_after() {
            Some(wait) => format!("{message}. Please try again in {:.3}s.", wait.as_secs_f64()),
            None => message,
        },
        _ => message,
    }
}

/// Encodes an error as an HTTP status and OpenAI's error body.
///
/// | kind | status | `type` | `code` |
/// |---|---|---|---|
/// | authentication | 401 | `authentication_error` | `invalid_api_key` |
/// | permission | 403 | `permission_error` | `permission_denied` |
/// | not found | 404 | `invalid_request_error` | `model_not_found` |
/// | rate limited | 429 | `rate_limit_error` | `rate_limit_exceeded` |
/// | context length | 400 | `invalid_request_error` | `context_length_exceeded` |
/// | overloaded | 503 | `server_error` | `server_is_overloaded` |
/// | invalid request | 400 (413 when the error's status is) | `invalid_request_error` | — |
/// | server, connection | 502 | `server_error` | `server_error` |
/// | timeout | 504 | `server_error` | `timeout` |
/// | cancelled | 500 | `server_error` | `cancelled` |
///
/// `param` is the field of a [`DecodeError`] when the message starts with
/// one (`messages[2].content: …`).
pub fn encode_error(error: &LlmError) -> (u16, ErrorBody) {
    let (status, kind, code) = openai_error_parts(error);
    (
        status,
        ErrorBody {
            error: ErrorObject {
                message: openai_error_message(error),
                kind: kind.into(),
                param: decode_error_param(error),
                code: code.map(str::to_owned),
            },
        },
    )
}

/// The field path that a gateway decode error's message starts with.
pub(crate) fn decode_error_param(error: &LlmError) -> Option<String> {
    if error.provider != crate::wire::serve::GATEWAY_PROVIDER {
        return None;
    }
    let (field, _) = error.message.split_once(": ")?;
    let looks_like_path = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    looks_like_path.then(|| field.to_owned())
}
