//! The gateway direction of the Messages API: decode a client's request,
//! encode the answer (whole or streamed) and errors.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use freehold_protocol::{
    AppliedContextEdit, ChatRequest, ChatResponse, ContentPart, Document, DocumentSource,
    ErrorKind, ImageSource, LlmError, Message, Reasoning, ReasoningEffort, RefusalDetails,
    ResponseFormat, Role, Sampling, StopReason, StreamEvent, ToolCall, ToolChoice, ToolResult,
    ToolSpec, Usage,
};
use serde_json::Value;

use super::compaction::{
    compaction_block, compaction_parameter, holds_compaction, iterations, last_compaction,
    summary_in,
};
use super::{
    ApiError, BlockDelta, ContentBlock, ErrorResponse, MessageContent, MessageDeltaBody,
    MessageStreamEvent, MessagesRequest, MessagesResponse, ORIGIN, ThinkingConfig,
    ToolResultContent, WireDocumentSource, WireImageSource, WireToolChoice, WireUsage,
    arguments_object, context_management_report, input_text, stop_details, stop_reason_name,
};
use crate::context_edit::{CompactEdit, ContextEdits, without_compaction};
use crate::wire::compaction::summary_message;
use crate::wire::serve::{
    DecodeError, SseFrame, call_id_for_client, client_message, generated_id, signature_for_client,
    split_client_call_id, split_client_signature, text_of_file,
};

/// What a Messages request asks of the answer's delivery, beyond the
/// [`ChatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Answer as a stream of named events.
    pub stream: bool,
    /// The request asked for context editing (`context_management`): the
    /// answer says which edits were made, even when none were.
    pub context_management: bool,
    /// The server-side compaction the request asked for (the
    /// `compact_20260112` edit, or the `compaction` parameter), which the
    /// gateway makes ([`super::split_for_compaction`]).
    pub compaction: Option<CompactEdit>,
}

/// The reasoning effort whose budget ([`ReasoningEffort::budget_tokens`]) is
/// the smallest at least `budget`, or [`ReasoningEffort::High`].
pub fn effort_for_budget(budget: u32) -> ReasoningEffort {
    [
        ReasoningEffort::Minimal,
        ReasoningEffort::Low,
        ReasoningEffort::Medium,
    ]
    .into_iter()
    .find(|effort| budget <= effort.budget_tokens())
    .unwrap_or(ReasoningEffort::High)
}

/// The [`ReasoningEffort`] for adaptive thinking's `output_config.effort`:
/// `xhigh`, `max` and levels this version does not know are the most there
/// is ([`ReasoningEffort::High`]), which is also the API's default. (The
/// name itself travels in `ChatRequest::reasoning_effort_name`, so an
/// Anthropic upstream gets it as asked.)
pub fn effort_for_name(effort: Option<&str>) -> ReasoningEffort {
    match effort {
        Some("low") => ReasoningEffort::Low,
        Some("medium") => ReasoningEffort::Medium,
        _ => ReasoningEffort::High,
    }
}

/// Decodes a client's request.
///
/// - `system` (a string, or text blocks whose `cache_control` is ignored)
///   becomes one leading [`Role::System`] message, blocks joined by a blank
///   line; a `system` message inside `messages` (the API's mid-conversation
///   system messages, which Claude Code sends) becomes a [`Role::System`]
///   message at its place, likewise from text only; its `tool_addition`
///   blocks that define a tool add it to the request's tools, and its
///   `tool_removal` blocks take the tool they name out;
/// - a user message's `tool_result` blocks (which need `tool_use_id`)
///   become a [`Role::Tool`] message placed before the rest of the user
///   message; their text blocks are joined by newlines (a `tool_reference`,
///   a tool search's find, is a line naming the tool), and images inside
///   them move to the user message that follows;
/// - `thinking` blocks become reasoning with their signature, and
///   `redacted_thinking` blocks redacted reasoning; the signature's origin
///   is Anthropic's, unless the gateway marked another provider's when it
///   sent it ([`crate::wire::serve::signature_for_client`]), so that it
///   goes back to no provider of another protocol;
/// - a `tool_use` block's id carries its call's signature when the gateway
///   put one there ([`crate::wire::serve::call_id_for_client`]);
/// - `thinking.budget_tokens` becomes the nearest [`ReasoningEffort`]
///   ([`effort_for_budget`]), adaptive thinking the effort of
///   `output_config.effort` ([`effort_for_name`]), and `{"type":
///   "disabled"}` [`ReasoningEffort::Off`]; `disable_parallel_tool_use: true` becomes
///   `parallel_tool_calls: Some(false)`;
/// - a deferred tool (`defer_loading: true`) is offered once the
///   conversation has loaded it (a `tool_reference` naming it in a tool
///   result, or a `tool_addition` naming it), or when `tool_choice` forces
///   it, as Anthropic's API offers it; beside a tool search that
///   Anthropic's API runs itself (`tool_search_tool_regex_…`,
///   `tool_search_tool_bm25_…`), which no provider here runs, every
///   deferred tool is offered and the search is left out, so that the
///   model can call any of them directly;
/// - Claude Code's advisor tool (`advisor_…`) is left out; other tools with
///   a `type` other than `custom` (server tools such as
///   `web_search_20250305`, and Anthropic-defined client tools such as
///   `bash_20250124`) are rejected; so are content blocks other than text,
///   image, document, tool_use, tool_result, thinking and
///   redacted_thinking (server tool results…), and documents given only by
///   a file's id;
/// - `context_management` (Anthropic's context editing) is checked
///   ([`ContextEdits::parse`]) and kept as sent, for an Anthropic upstream
///   to make or the router to make ([`ChatRequest::context_management`]),
///   but for a `compact_20260112` edit: that and the `compaction`
///   parameter are [`ServeOptions::compaction`], for the gateway to make;
/// - the conversation before its last `compaction` block with a summary
///   (in an assistant message, or sent first in a user message) is what
///   the block stands for: it is left out, and a user message carrying the
///   summary takes its place, after the system prompt and any system
///   messages before the first turn (`anthropic::compaction`); a
///   compaction block that failed (`content: null`) stands for nothing.
///
/// # Errors
/// A [`DecodeError`] naming the field at fault.
pub fn decode_request(
    mut wire: MessagesRequest,
) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    let prompt_cache = last_cache_mark(&wire);
    let asked_context_management = !matches!(wire.context_management, None | Some(Value::Null));
    let mut compaction = match wire.compaction.take() {
        None | Some(Value::Null) => None,
        Some(asked) => Some(compaction_parameter(&asked, asked_context_management)?),
    };
    let context_management = match wire.context_management.take() {
        None | Some(Value::Null) => None,
        Some(asked) => {
            // Checked here, so that a mistake is a 400 whichever provider
            // would answer; made by the provider or the router, but for a
            // compaction, which the gateway makes.
            let edits = ContextEdits::parse(&asked)
                .map_err(|error| DecodeError::invalid(error.field, error.message))?;
            match edits.compaction() {
                Some(compact) => {
                    compaction = Some(compact.clone());
                    without_compaction(asked)
                }
                None => Some(asked),
            }
        }
    };
    // What a compaction block sent back stands for is left out.
    let compacted = last_compaction(&wire.messages);
    let mut messages = Vec::new();
    if let Some(system) = &wire.system {
        if let super::SystemPrompt::Blocks(blocks) = system {
            for (index, block) in blocks.iter().enumerate() {
                if !matches!(block, ContentBlock::Text { .. }) {
                    return Err(DecodeError::unsupported(
                        format!("system[{index}]"),
                        format!("a `{}` block in the system prompt", block_type(block)),
                    ));
                }
            }
        }
        let text = system.text();
        if !text.is_empty() {
            messages.push(Message::system(text));
        }
    }
    // Tools added, removed or loaded mid-conversation, in order, and the
    // deferred tools (`defer_loading`) a tool search's result loaded.
    let mut tool_changes = Vec::new();
    let mut loaded = BTreeSet::new();
    // Where the message holding the last compaction begins in `messages`.
    let mut compacted_from = None;
    for (index, message) in wire.messages.into_iter().enumerate() {
        let field = format!("messages[{index}]");
        if compacted.as_ref().is_some_and(|(at, _)| *at == index) {
            compacted_from = Some(messages.len());
        }
        match message.role.as_str() {
            "user" => decode_user(message.content, &field, &mut messages, &mut loaded)?,
            "assistant" => {
                let held_compaction = holds_compaction(&message.content);
                let message = decode_assistant(message.content, &field)?;
                // A message that held only compaction blocks stands for
                // nothing more.
                if !message.content.is_empty() || !held_compaction {
                    messages.push(message);
                }
            }
            "system" => {
                if let Some(system) = decode_system(message.content, &field, &mut tool_changes)? {
                    messages.push(system);
                }
            }
            other => {
                return Err(DecodeError::invalid(
                    format!("{field}.role"),
                    format!("unknown role `{other}` (expected user, assistant or system)"),
                ));
            }
        }
    }
    if let (Some((_, summary)), Some(from)) = (&compacted, compacted_from) {
        // The system prompt stays (and system messages before the first
        // turn, as when the compaction was made:
        // `compaction::split_for_compaction`). What the compaction stands
        // for was decoded all the same: the tools its system messages
        // added, and the deferred tools its searches loaded, are still the
        // model's.
        let start = messages[..from]
            .iter()
            .position(|message| message.role != Role::System)
            .unwrap_or(from);
        messages.splice(start..from, [summary_message(summary)]);
    }
    loaded.extend(tool_changes.iter().filter_map(|change| match change {
        ToolChange::Load(name) => Some(name.clone()),
        ToolChange::Add(_) | ToolChange::Remove(_) => None,
    }));
    let tools = wire.tools.unwrap_or_default();
    // A search the server would run over the deferred tools: the model gets
    // them all instead.
    let server_search = tools.iter().any(is_server_tool_search);
    let tools = tools
        .into_iter()
        .enumerate()
        .filter(|(_, tool)| {
            // Claude Code's advisor (a server tool that asks a larger
            // Claude model for advice, offered in every request when it is
            // set up): no provider behind the gateway runs it, and the
            // model works without it.
            let advisor = tool
                .kind
                .as_deref()
                .is_some_and(|kind| kind.starts_with("advisor_"));
            if advisor {
                tracing::debug!("leaving out the advisor tool");
            }
            // A deferred tool is the model's once the conversation loads
            // it, as Anthropic's API has it (Claude Code's tools found by
            // its `ToolSearch`, and never its `DeferredToolPlaceholder`).
            let forced = forced_tool(wire.tool_choice.as_ref()) == Some(tool.name.as_str());
            let deferred = tool.defer_loading == Some(Value::Bool(true))
                && !loaded.contains(&tool.name)
                && !forced
                && !server_search;
            !advisor && !deferred && !is_server_tool_search(tool)
        })
        .map(|(index, tool)| {
            let field = format!("tools[{index}]");
            if let Some(kind) = tool.kind.filter(|kind| kind != "custom") {
                return Err(DecodeError::UnsupportedTool { field, kind });
            }
            if tool.name.is_empty() {
                return Err(DecodeError::missing(
                    format!("{field}.name"),
                    "a tool needs a name",
                ));
            }
            if tool.input_schema.is_null() {
                return Err(DecodeError::missing(
                    format!("{field}.input_schema"),
                    "a client tool needs input_schema (a JSON Schema of its input)",
                ));
            }
            Ok(ToolSpec {
                name: tool.name,
                description: tool.description.unwrap_or_default(),
                parameters: tool.input_schema,
                strict: tool.strict == Some(true),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tools = apply_tool_changes(tools, tool_changes);
    let (tool_choice, disable_parallel) = match wire.tool_choice {
        None => (ToolChoice::Auto, None),
        Some(WireToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (ToolChoice::Auto, disable_parallel_tool_use),
        Some(WireToolChoice::Any {
            disable_parallel_tool_use,
        }) => (ToolChoice::Required, disable_parallel_tool_use),
        Some(WireToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (ToolChoice::Tool { name }, disable_parallel_tool_use),
        Some(WireToolChoice::None {}) => (ToolChoice::None, None),
    };
    let reasoning = match &wire.thinking {
        Some(ThinkingConfig::Enabled { budget_tokens, .. }) => {
            Some(effort_for_budget(*budget_tokens))
        }
        Some(ThinkingConfig::Adaptive { .. }) => Some(effort_for_name(
            wire.output_config
                .as_ref()
                .and_then(|config| config.effort.as_deref()),
        )),
        // Claude Code turns thinking off this way for its subagents.
        Some(ThinkingConfig::Disabled {}) => Some(ReasoningEffort::Off),
        None => None,
    };
    let reasoning_budget = match &wire.thinking {
        Some(ThinkingConfig::Enabled { budget_tokens, .. }) => Some(*budget_tokens),
        _ => None,
    };
    let reasoning_display = match &wire.thinking {
        Some(ThinkingConfig::Enabled { display, .. } | ThinkingConfig::Adaptive { display }) => {
            display.clone()
        }
        _ => None,
    };
    // The effort's own name, for an Anthropic upstream (`xhigh` and `max`
    // have no level of their own).
    let reasoning_effort_name = match &wire.thinking {
        Some(ThinkingConfig::Adaptive { .. }) => wire
            .output_config
            .as_ref()
            .and_then(|config| config.effort.clone()),
        _ => None,
    };
    // Structured output: `output_config.format`, or `output_format` as the
    // beta before it named it.
    let format = match wire
        .output_config
        .as_ref()
        .and_then(|config| config.format.as_ref())
    {
        Some(format) => Some(("output_config.format", format)),
        None => wire
            .output_format
            .as_ref()
            .map(|format| ("output_format", format)),
    };
    let response_format = match format {
        None | Some((_, Value::Null)) => None,
        Some((field, format)) => Some(decode_output_format(format, field)?),
    };
    let end_user = decode_user_id(wire.metadata.as_ref())?;
    let request = ChatRequest {
        model: wire.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: (disable_parallel == Some(true)).then_some(false),
        sampling: Sampling {
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            ..Sampling::default()
        },
        max_tokens: Some(wire.max_tokens),
        stop: wire.stop_sequences.unwrap_or_default(),
        response_format,
        reasoning,
        reasoning_budget,
        reasoning_effort_name,
        forwarded_headers: Vec::new(),
        prompt_cache,
        cache_key: None,
        verbosity: None,
        service_tier: None,
        context_management,
        reasoning_display,
        end_user,
    };
    let options = ServeOptions {
        stream: wire.stream,
        context_management: request.context_management.is_some(),
        compaction,
    };
    Ok((request, options))
}

/// The end user's id in a request's `metadata` (`user_id`).
///
/// # Errors
/// `metadata` that is not an object, or a `user_id` that is not a string.
fn decode_user_id(metadata: Option<&Value>) -> Result<Option<String>, DecodeError> {
    let fields = match metadata {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(fields)) => fields,
        Some(_) => {
            return Err(DecodeError::invalid(
                "metadata",
                "must be an object, such as `{\"user_id\": \"…\"}`",
            ));
        }
    };
    match fields.get("user_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok((!id.is_empty()).then(|| id.clone())),
        Some(_) => Err(DecodeError::invalid(
            "metadata.user_id",
            "must be a string: the end user's id",
        )),
    }
}

/// The mark the gateway caches a request's prompt with, when the client
/// marked any of it with `cache_control` (or marked the whole request, at
/// its top level): the client's last mark, in the order the API reads the
/// prompt (tools, system, messages), reduced to its `type` and `ttl`. Marks
/// are not kept where the client put them: the conversation's blocks are
/// merged and split on their way to Freehold's messages, so a provider that
/// takes marks places its own ([`super::place_cache_marks`]), all alike.
/// The last mark, because it is the one on the conversation, which changes
/// every turn: a longer `ttl` a client gave its system prompt would make
/// each turn's write of the conversation cost twice the input price
/// instead of 1.25 times.
fn last_cache_mark(wire: &MessagesRequest) -> Option<Value> {
    let tools = wire
        .tools
        .iter()
        .flatten()
        .filter_map(|tool| tool.cache_control.as_ref());
    let system = match &wire.system {
        Some(super::SystemPrompt::Blocks(blocks)) => blocks.as_slice(),
        _ => &[],
    };
    let blocks = wire
        .messages
        .iter()
        .flat_map(|message| match &message.content {
            MessageContent::Blocks(blocks) => blocks.as_slice(),
            MessageContent::Text(_) => &[],
        });
    let mark = tools
        .chain(system.iter().chain(blocks).filter_map(block_cache_mark))
        .chain(wire.cache_control.as_ref())
        .last()?;
    let mut kept = serde_json::Map::new();
    for field in ["type", "ttl"] {
        if let Some(value) = mark.get(field) {
            kept.insert(field.to_owned(), value.clone());
        }
    }
    Some(Value::Object(kept))
}

/// A block's `cache_control`, where its type has one (a tool result's own
/// blocks included).
fn block_cache_mark(block: &ContentBlock) -> Option<&Value> {
    match block {
        ContentBlock::Text { cache_control, .. }
        | ContentBlock::Image { cache_control, .. }
        | ContentBlock::ToolUse { cache_control, .. } => cache_control.as_ref(),
        ContentBlock::ToolResult {
            cache_control,
            content,
            ..
        } => cache_control.as_ref().or_else(|| match content {
            Some(ToolResultContent::Blocks(inner)) => inner.iter().find_map(block_cache_mark),
            _ => None,
        }),
        _ => None,
    }
}

/// A structured-output format (`{"type": "json_schema", "schema": {…}}`, the
/// only type the Messages API has) as the schema the answer must match.
fn decode_output_format(format: &Value, field: &str) -> Result<ResponseFormat, DecodeError> {
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {}
        Some(other) => {
            return Err(DecodeError::invalid(
                format!("{field}.type"),
                format!("`{other}` is not a format; the Messages API has `json_schema`"),
            ));
        }
        None => {
            return Err(DecodeError::missing(
                format!("{field}.type"),
                "a format needs a type (`json_schema`)",
            ));
        }
    }
    match format.get("schema") {
        // Not strict: OpenAI's strict mode wants every property required,
        // which a schema written for Anthropic need not say.
        Some(schema) if schema.is_object() => Ok(ResponseFormat::JsonSchema {
            name: "output".to_owned(),
            schema: schema.clone(),
            strict: false,
        }),
        _ => Err(DecodeError::missing(
            format!("{field}.schema"),
            "a `json_schema` format needs its schema, a JSON Schema object",
        )),
    }
}

/// The `type` of a block, for error messages.
fn block_type(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text { .. } => "text".into(),
        ContentBlock::Image { .. } => "image".into(),
        ContentBlock::ToolUse { .. } => "tool_use".into(),
        ContentBlock::ToolResult { .. } => "tool_result".into(),
        ContentBlock::Thinking { .. } => "thinking".into(),
        ContentBlock::RedactedThinking { .. } => "redacted_thinking".into(),
        ContentBlock::Document { .. } => "document".into(),
        ContentBlock::Other(value) => value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("(untyped)")
            .to_owned(),
    }
}

/// The error for a block that did not parse as its own type (a missing
/// required field makes it an [`ContentBlock::Other`]), or that has no place
/// in this message.
fn bad_block(value: &Value, field: &str, role: &str) -> DecodeError {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "tool_result" => DecodeError::missing(
            field,
            "tool_result needs tool_use_id (the id of the tool_use block it answers)",
        ),
        "tool_use" => DecodeError::missing(field, "tool_use needs an id and a name"),
        "text" => DecodeError::missing(field, "a text block needs `text`"),
        "image" => DecodeError::invalid(
            format!("{field}.source"),
            "an image needs a source of type base64 (media_type, data) or url",
        ),
        "thinking" => DecodeError::missing(field, "a thinking block needs `thinking`"),
        "redacted_thinking" => DecodeError::missing(field, "redacted_thinking needs `data`"),
        "" => DecodeError::missing(format!("{field}.type"), "a content block needs a type"),
        other => DecodeError::unsupported(field, format!("a `{other}` block in a {role} message")),
    }
}

fn decode_image(source: WireImageSource) -> ImageSource {
    match source {
        WireImageSource::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
        WireImageSource::Url { url } => ImageSource::Url { url },
    }
}

/// The tool a `tool_choice` forces by name, if it does.
fn forced_tool(choice: Option<&WireToolChoice>) -> Option<&str> {
    match choice {
        Some(WireToolChoice::Tool { name, .. }) => Some(name),
        _ => None,
    }
}

/// A tool added or removed in the middle of a conversation (a
/// `tool_addition` or `tool_removal` block of Anthropic's beta).
#[derive(Debug)]
enum ToolChange {
    /// A tool defined in the block itself (the `inline-tools` beta).
    Add(ToolSpec),
    /// A tool added by name: it is in `tools` already, deferred, and is
    /// loaded from here on.
    Load(String),
    /// A tool no longer offered, by name.
    Remove(String),
}

/// The change a block makes, if it is a tool change: `Some(None)` for one
/// with nothing to apply (a shape not understood).
fn tool_change(block: &Value) -> Option<Option<ToolChange>> {
    let tool = block.get("tool");
    // Where a tool's name may be: on the block, or on its `tool`.
    let name = || {
        ["tool_name", "name"].iter().find_map(|key| {
            block
                .get(key)
                .or_else(|| tool.and_then(|tool| tool.get(key)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    };
    match block.get("type").and_then(Value::as_str)? {
        "tool_addition" => {
            let definition = tool
                .filter(|tool| tool.get("type").and_then(Value::as_str) == Some("tool_definition"))
                .and_then(|tool| tool.get("definition"));
            if let Some(name) = tool.and_then(tool_reference_name) {
                return Some(Some(ToolChange::Load(name.to_owned())));
            }
            let added = definition.and_then(|definition| {
                let name = definition.get("name").and_then(Value::as_str)?;
                let schema = definition.get("input_schema")?;
                Some(ToolChange::Add(ToolSpec {
                    name: name.to_owned(),
                    description: definition
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    parameters: schema.clone(),
                    strict: definition.get("strict").and_then(Value::as_bool) == Some(true),
                }))
            });
            Some(added)
        }
        "tool_removal" => Some(name().map(ToolChange::Remove)),
        _ => None,
    }
}

/// `tools` as the conversation's tool changes leave them: a tool defined
/// mid-conversation joins them (unless one of its name is there), a tool
/// removed is no longer offered, each change in the conversation's order.
fn apply_tool_changes(mut tools: Vec<ToolSpec>, changes: Vec<ToolChange>) -> Vec<ToolSpec> {
    for change in changes {
        match change {
            ToolChange::Add(spec) => {
                if !tools.iter().any(|tool| tool.name == spec.name) {
                    tools.push(spec);
                }
            }
            ToolChange::Remove(name) => tools.retain(|tool| tool.name != name),
            ToolChange::Load(_) => {}
        }
    }
    tools
}

/// The tool a `tool_reference` block names (a tool search's find in a
/// tool result, or a tool added by name); `None` for other blocks.
fn tool_reference_name(block: &Value) -> Option<&str> {
    if block.get("type").and_then(Value::as_str) != Some("tool_reference") {
        return None;
    }
    block.get("tool_name").and_then(Value::as_str)
}

/// A mid-conversation `system` message: its text blocks joined by a blank
/// line, as the top-level `system` field's are; `None` when it has no
/// text. Its tool changes join `tool_changes`.
fn decode_system(
    content: MessageContent,
    field: &str,
    tool_changes: &mut Vec<ToolChange>,
) -> Result<Option<Message>, DecodeError> {
    let mut texts = Vec::new();
    for (index, block) in content.into_blocks().into_iter().enumerate() {
        match block {
            ContentBlock::Text { text, .. } => texts.push(text),
            // Tools added or removed in the middle of a conversation (Claude
            // Code's, when an MCP server connects late): applied to the
            // request's tools, as the model would see them now.
            ContentBlock::Other(value) if let Some(change) = tool_change(&value) => {
                tool_changes.extend(change);
            }
            ContentBlock::Other(value) => {
                return Err(bad_block(
                    &value,
                    &format!("{field}.content[{index}]"),
                    "system",
                ));
            }
            other => {
                return Err(DecodeError::unsupported(
                    format!("{field}.content[{index}]"),
                    format!(
                        "a `{}` block in a system message (only text is)",
                        block_type(&other)
                    ),
                ));
            }
        }
    }
    texts.retain(|text| !text.is_empty());
    Ok((!texts.is_empty()).then(|| Message::system(texts.join("\n\n"))))
}

/// Whether `tool` is a tool search Anthropic's API runs itself over the
/// request's deferred tools (its regex and BM25 variants).
fn is_server_tool_search(tool: &super::WireTool) -> bool {
    tool.kind
        .as_deref()
        .is_some_and(|kind| kind.starts_with("tool_search_tool_"))
}

fn decode_user(
    content: MessageContent,
    field: &str,
    messages: &mut Vec<Message>,
    loaded: &mut BTreeSet<String>,
) -> Result<(), DecodeError> {
    let mut results = Vec::new();
    let mut result_images = Vec::new();
    let mut parts = Vec::new();
    for (index, block) in content.into_blocks().into_iter().enumerate() {
        let block_field = format!("{field}.content[{index}]");
        match block {
            ContentBlock::Text { text, .. } if text.is_empty() => {}
            ContentBlock::Text { text, .. } => parts.push(ContentPart::Text { text }),
            ContentBlock::Image { source, .. } => parts.push(ContentPart::Image {
                source: decode_image(source),
            }),
            ContentBlock::Document { source, title, .. } => {
                parts.push(decode_document(source, title, &block_field)?)
            }
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } => {
                if tool_use_id.is_empty() {
                    return Err(bad_block(
                        &serde_json::json!({"type": "tool_result"}),
                        &block_field,
                        "user",
                    ));
                }
                let text = match content {
                    None => String::new(),
                    Some(ToolResultContent::Text(text)) => text,
                    Some(ToolResultContent::Blocks(blocks)) => {
                        let mut texts = Vec::new();
                        for (inner, block) in blocks.into_iter().enumerate() {
                            match block {
                                ContentBlock::Text { text, .. } => texts.push(text),
                                ContentBlock::Image { source, .. } => {
                                    result_images.push(ContentPart::Image {
                                        source: decode_image(source),
                                    })
                                }
                                // As images: in the user message after the
                                // results, which every provider takes.
                                // (A plain-text one is the result's text.)
                                ContentBlock::Document { source, title, .. } => {
                                    match decode_document(
                                        source,
                                        title,
                                        &format!("{block_field}.content[{inner}]"),
                                    )? {
                                        ContentPart::Text { text } => texts.push(text),
                                        document => result_images.push(document),
                                    }
                                }
                                // A tool search's find: the tool is the
                                // model's from here on (the gateway
                                // offers it, `defer_loading` or not).
                                ContentBlock::Other(ref value)
                                    if let Some(name) = tool_reference_name(value) =>
                                {
                                    texts.push(format!("Tool `{name}` is available."));
                                    loaded.insert(name.to_owned());
                                }
                                other => {
                                    return Err(DecodeError::unsupported(
                                        format!("{block_field}.content[{inner}]"),
                                        format!(
                                            "a `{}` block in a tool result (only text, image, \
                                             document and tool_reference are)",
                                            block_type(&other)
                                        ),
                                    ));
                                }
                            }
                        }
                        texts.join("\n")
                    }
                };
                results.push(ContentPart::ToolResult(ToolResult {
                    call_id: split_client_call_id(&tool_use_id).0,
                    content: text,
                    is_error: is_error.unwrap_or(false),
                }));
            }
            ContentBlock::Other(value) => match summary_in(&value, &block_field) {
                // A compaction sent back first in a conversation: what came
                // before it is what it stands for.
                Some(Ok(Some(_))) => {
                    results.clear();
                    result_images.clear();
                    parts.clear();
                }
                Some(Ok(None)) => {}
                Some(Err(error)) => return Err(error),
                None => return Err(bad_block(&value, &block_field, "user")),
            },
            other => {
                return Err(DecodeError::unsupported(
                    block_field,
                    format!("a `{}` block in a user message", block_type(&other)),
                ));
            }
        }
    }
    if !results.is_empty() {
        messages.push(Message {
            role: Role::Tool,
            content: results,
        });
    }
    result_images.extend(parts);
    if !result_images.is_empty() {
        messages.push(Message {
            role: Role::User,
            content: result_images,
        });
    }
    Ok(())
}

/// A `document` block: a PDF (inline or by URL) as a document; plain text
/// (or content blocks' text, or a text file's base64 bytes: see
/// [`text_of_file`]) as text, headed by its title.
fn decode_document(
    source: WireDocumentSource,
    title: Option<String>,
    field: &str,
) -> Result<ContentPart, DecodeError> {
    let headed = |text: String| match &title {
        Some(title) if !title.is_empty() => format!("{title}\n\n{text}"),
        _ => text,
    };
    Ok(match source {
        WireDocumentSource::Base64 { media_type, data } => {
            let media_type = media_type.to_ascii_lowercase();
            match text_of_file(&media_type, &data) {
                Some(text) => ContentPart::Text { text: headed(text) },
                None => ContentPart::Document(Document {
                    source: DocumentSource::Base64 { media_type, data },
                    title,
                }),
            }
        }
        WireDocumentSource::Url { url } => ContentPart::Document(Document {
            source: DocumentSource::Url { url },
            title,
        }),
        WireDocumentSource::Text { data, .. } => ContentPart::Text { text: headed(data) },
        WireDocumentSource::Content { content } => {
            let text = match content {
                Value::String(text) => text,
                Value::Array(blocks) => blocks
                    .iter()
                    .filter_map(|block| block.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            ContentPart::Text { text: headed(text) }
        }
        WireDocumentSource::Unsupported => {
            return Err(DecodeError::unsupported(
                format!("{field}.source"),
                "a document source other than base64, url, text or content (a Files API \
                 file: the gateway has no copy of it; send its bytes instead)",
            ));
        }
    })
}

fn decode_assistant(content: MessageContent, field: &str) -> Result<Message, DecodeError> {
    let mut parts = Vec::new();
    for (index, block) in content.into_blocks().into_iter().enumerate() {
        let block_field = format!("{field}.content[{index}]");
        match block {
            ContentBlock::Text { text, .. } if text.is_empty() => {}
            ContentBlock::Text { text, .. } => parts.push(ContentPart::Text { text }),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => {
                if id.is_empty() || name.is_empty() {
                    return Err(bad_block(
                        &serde_json::json!({"type": "tool_use"}),
                        &block_field,
                        "assistant",
                    ));
                }
                let (id, signature) = split_client_call_id(&id);
                parts.push(ContentPart::ToolCall(ToolCall {
                    signature,
                    ..ToolCall::new(id, name, input_text(&input))
                }));
            }
            ContentBlock::Thinking {
                thinking,
                signature,
            } => {
                let (signature, origin) = if signature.is_empty() {
                    (None, None)
                } else {
                    let (signature, origin) = split_client_signature(signature, ORIGIN);
                    (Some(signature), origin)
                };
                parts.push(ContentPart::Reasoning(Reasoning {
                    text: thinking,
                    signature,
                    origin,
                    ..Reasoning::default()
                }))
            }
            ContentBlock::RedactedThinking { data } => {
                let (data, origin) = split_client_signature(data, ORIGIN);
                parts.push(ContentPart::Reasoning(Reasoning {
                    signature: Some(data),
                    redacted: true,
                    origin,
                    ..Reasoning::default()
                }))
            }
            ContentBlock::Other(value) => match summary_in(&value, &block_field) {
                // What came before it is what it stands for.
                Some(Ok(Some(_))) => parts.clear(),
                // A compaction that failed: nothing.
                Some(Ok(None)) => {}
                Some(Err(error)) => return Err(error),
                None => return Err(bad_block(&value, &block_field, "assistant")),
            },
            other => {
                return Err(DecodeError::unsupported(
                    block_field,
                    format!("a `{}` block in an assistant message", block_type(&other)),
                ));
            }
        }
    }
    Ok(Message {
        role: Role::Assistant,
        content: parts,
    })
}

/// The blocks of an answer: text, `thinking` (with its signature, or an
/// empty one for unsigned reasoning), `redacted_thinking`, and `tool_use`
/// (arguments that are not a JSON object become `{}`).
fn encode_blocks(parts: &[ContentPart]) -> Vec<ContentBlock> {
    parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } if text.is_empty() => None,
            ContentPart::Text { text } => Some(ContentBlock::text(text.clone())),
            ContentPart::Reasoning(reasoning) if reasoning.redacted => reasoning
                .signature
                .as_deref()
                .map(|data| ContentBlock::RedactedThinking {
                    data: signature_for_client(data, reasoning.origin.as_deref(), ORIGIN),
                }),
            ContentPart::Reasoning(reasoning) => Some(ContentBlock::Thinking {
                thinking: reasoning.text.clone(),
                signature: reasoning
                    .signature
                    .as_deref()
                    .map(|signature| {
                        signature_for_client(signature, reasoning.origin.as_deref(), ORIGIN)
                    })
                    .unwrap_or_default(),
            }),
            ContentPart::ToolCall(call) => Some(ContentBlock::ToolUse {
                id: call_id_for_client(&call.id, call.signature.as_deref()),
                name: call.name.clone(),
                input: arguments_object(&call.arguments),
                cache_control: None,
            }),
            ContentPart::Image { .. } | ContentPart::Document(_) | ContentPart::ToolResult(_) => {
                None
            }
        })
        .collect()
}

/// The stop reason the client sees: `end_turn` after tool calls means
/// `tool_use`.
fn final_reason(reason: &StopReason, has_calls: bool) -> String {
    match reason {
        StopReason::EndTurn if has_calls => "tool_use".into(),
        other => stop_reason_name(other),
    }
}

/// The `stop_sequence` that goes with a stop reason: the sequence's text
/// where it is known, else `null` (as Anthropic's own answers have for
/// every other reason).
fn stop_sequence(reason: &StopReason) -> Option<String> {
    match reason {
        StopReason::StopSequence(sequence) => sequence.clone(),
        _ => None,
    }
}

/// Encodes a complete answer as a `message` object.
///
/// The id is the response's, else a new `msg_…`; `model` is the name the
/// client asked for; usage is split the Anthropic way (`input_tokens`
/// without the cache reads and writes, which have their own fields).
pub fn encode_response(response: &ChatResponse, model: &str) -> MessagesResponse {
    let has_calls = response.message.tool_calls().next().is_some();
    MessagesResponse {
        id: response.id.clone().unwrap_or_else(|| generated_id("msg_")),
        kind: "message".into(),
        role: "assistant".into(),
        model: model.to_owned(),
        content: encode_blocks(&response.message.content),
        stop_reason: Some(final_reason(&response.stop_reason, has_calls)),
        stop_sequence: stop_sequence(&response.stop_reason),
        stop_details: response
            .refusal_details
            .as_ref()
            .filter(|_| response.stop_reason == StopReason::Refusal)
            .map(stop_details),
        usage: WireUsage::from(&response.usage),
        context_management: (!response.context_edits.is_empty())
            .then(|| context_management_report(&response.context_edits)),
    }
}

/// [`encode_response`] for a request decoded with `options`: one that asked
/// for context editing is told which edits were made, even when none were.
pub fn encode_response_for(
    response: &ChatResponse,
    model: &str,
    options: &ServeOptions,
) -> MessagesResponse {
    let mut wire = encode_response(response, model);
    if options.context_management {
        wire.context_management
            .get_or_insert_with(|| context_management_report(&[]));
    }
    wire
}

/// The kind of the content block the encoder has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
    Compaction,
    /// A `tool_use` block, with the [`StreamEvent`] index of its call.
    Tool(u32),
}

/// Encodes a streamed answer as Messages events, each with its `event:`
/// name.
///
/// What it emits:
/// 1. `message_start` first (on the first event), with empty content and
///    `usage.input_tokens` set to the estimate given to [`Self::new`]: the
///    real count usually arrives only at the end;
/// 2. one block per run of text (`text_delta`), of reasoning
///    (`thinking_delta`, closed by a `signature_delta` when a signature
///    comes), per redacted reasoning (`redacted_thinking`, no deltas), and
///    per tool call (`tool_use` with `input: {}`, then one
///    `input_json_delta` with the whole arguments), each as
///    `content_block_start`, deltas, `content_block_stop`, indexes counting
///    from 0;
/// 3. `message_delta` with the stop reason (`tool_use` when calls were
///    made), the `stop_sequence` where one ended the answer and is known
///    (else `null`), and the cumulative usage (input and
///    cache counts included, so that SDKs that merge it get the real
///    numbers; input falls back to the estimate when the provider gave
///    none), then `message_stop`.
///
/// Blocks cannot interleave in this protocol, so while a tool call is open
/// (between its `ToolCallStart` and `ToolCallEnd`), events that belong
/// elsewhere (another call starting, text) are held back and replayed in
/// order when it ends. Providers that close calls only at the end of the
/// answer (OpenAI Chat Completions) therefore have their later calls sent
/// whole at the end.
///
/// A tool call's arguments are gathered, not passed on piece by piece, and
/// sent when the call ends only if they are a JSON object: a client's SDK
/// parses the pieces as they come (with a parser for partial JSON), and a
/// model (small local ones especially) that writes invalid JSON there would
/// make it fail on the whole answer. Invalid arguments leave the call's
/// `input` at `{}`, as in a whole answer ([`encode_response`]); the tool then
/// refuses the call for its missing parameters and the model can try
/// again. While arguments are gathered (or calls held back), an empty
/// `input_json_delta` on the open tool block goes out every
/// [`Self::KEEPALIVE_EVERY`] without another frame: clients that watch for
/// idle streams (Claude Code does) see an event, where the SDKs drop a
/// `ping` before it reaches them; an empty piece is what the API itself
/// sends first in a tool block, and the SDKs parse nothing for it.
#[derive(Debug)]
pub struct MessageStreamEncoder {
    id: Option<String>,
    model: String,
    input_estimate: u64,
    started: bool,
    finished: bool,
    next_block: u32,
    open: Option<OpenBlock>,
    held: Vec<StreamEvent>,
    has_calls: bool,
    usage: Option<Usage>,
    /// The open tool call's arguments so far.
    arguments: String,
    /// When the last frame went out while a tool block was open, for the
    /// keepalives while its arguments are gathered.
    last_frame: Instant,
    keepalive_every: Duration,
    /// The context edits to report on `message_delta`: `Some` once one is
    /// made, or from the start when the request asked for context editing.
    context_edits: Option<Vec<AppliedContextEdit>>,
    /// What the provider said of its refusal, for `message_delta`'s
    /// `stop_details`.
    refusal_details: Option<RefusalDetails>,
    /// The usage of a compaction run before the answer
    /// ([`Self::compacted`]), reported in `usage.iterations`.
    compaction_usage: Option<Usage>,
    /// The answer is the compaction alone ([`Self::pausing_after_compaction`]).
    pause_after_compaction: bool,
}

impl MessageStreamEncoder {
    /// How long a client goes without a frame, while a tool call's
    /// arguments are gathered, before it is sent an empty piece of them.
    pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

    /// An encoder for an answer named `model` (the name the client asked
    /// for). `id` `None` takes the id of a leading [`StreamEvent::Start`],
    /// else a new `msg_…`. `input_tokens` is the estimate `message_start`
    /// carries (`ChatRequest::estimated_input_tokens`, or 0).
    pub fn new(model: impl Into<String>, id: Option<String>, input_tokens: u64) -> Self {
        Self {
            id,
            model: model.into(),
            input_estimate: input_tokens,
            started: false,
            finished: false,
            next_block: 0,
            open: None,
            held: Vec::new(),
            has_calls: false,
            usage: None,
            arguments: String::new(),
            last_frame: Instant::now(),
            keepalive_every: Self::KEEPALIVE_EVERY,
            context_edits: None,
            refusal_details: None,
            compaction_usage: None,
            pause_after_compaction: false,
        }
    }

    /// Ends the answer after its compaction ([`Self::compacted`]) with
    /// `stop_reason: "compaction"` and the compaction's usage, for a
    /// request that asked to stop there (`pause_after_compaction`, or the
    /// `compaction` parameter).
    pub fn pausing_after_compaction(mut self) -> Self {
        self.pause_after_compaction = true;
        self
    }

    /// Puts a compaction run before the answer first in it: a `compaction`
    /// block (`content: null`, then the summary whole in one
    /// `compaction_delta`), whose call's usage (`usage`) is reported in
    /// `message_delta`'s `usage.iterations`. The answer's blocks follow it.
    pub fn compacted(&mut self, summary: &str, usage: &Usage) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(None, &mut out);
        self.open(OpenBlock::Compaction, compaction_block(None), &mut out);
        self.delta(
            BlockDelta::CompactionDelta {
                content: summary.to_owned(),
            },
            &mut out,
        );
        self.close(&mut out);
        self.compaction_usage = Some(*usage);
        out
    }

    /// Reports the context edits made on `message_delta` even when there
    /// are none, for a request that asked for context editing
    /// ([`ServeOptions::context_management`]).
    pub fn reporting_context_edits(mut self) -> Self {
        self.context_edits.get_or_insert_with(Vec::new);
        self
    }

    /// Sends keepalives every `every` (instead of
    /// [`Self::KEEPALIVE_EVERY`]) while a tool call's arguments are
    /// gathered.
    pub fn with_keepalive_every(mut self, every: Duration) -> Self {
        self.keepalive_every = every;
        self
    }

    /// The message id (fixed once `message_start` is out).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn frame(event: MessageStreamEvent) -> SseFrame {
        let value = serde_json::to_value(&event).unwrap_or(Value::Null);
        let name = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_owned();
        SseFrame::named(name, value)
    }

    fn start(&mut self, id: Option<&String>, out: &mut Vec<SseFrame>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = self
            .id
            .clone()
            .or_else(|| id.filter(|id| !id.is_empty()).cloned())
            .unwrap_or_else(|| generated_id("msg_"));
        self.id = Some(id.clone());
        out.push(Self::frame(MessageStreamEvent::MessageStart {
            message: MessagesResponse {
                id,
                kind: "message".into(),
                role: "assistant".into(),
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                stop_details: None,
                usage: WireUsage {
                    input_tokens: self.input_estimate,
                    output_tokens: 0,
                    cache_creation_input_tokens: None,
                    cache_read_input_tokens: None,
                    cache_creation: None,
                    iterations: None,
                },
                context_management: None,
            },
        }));
    }

    fn close(&mut self, out: &mut Vec<SseFrame>) {
        if let Some(OpenBlock::Tool(call)) = self.open {
            self.send_arguments(call, out);
        }
        if self.open.take().is_some() {
            out.push(Self::frame(MessageStreamEvent::ContentBlockStop {
                index: self.next_block - 1,
            }));
        }
    }

    /// Sends the gathered arguments of tool call `call` (the open block) as
    /// one `input_json_delta`, if they are a JSON object; otherwise nothing,
    /// leaving its `input` at `{}`.
    fn send_arguments(&mut self, call: u32, out: &mut Vec<SseFrame>) {
        let arguments = std::mem::take(&mut self.arguments);
        if arguments.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(&arguments) {
            Ok(Value::Object(_)) => self.delta(
                BlockDelta::InputJsonDelta {
                    partial_json: arguments,
                },
                out,
            ),
            Ok(_) | Err(_) => tracing::warn!(
                index = call,
                length = arguments.len(),
                "the model's tool call arguments are not a JSON object; sending `{{}}` instead"
            ),
        }
    }

    fn open(&mut self, kind: OpenBlock, block: ContentBlock, out: &mut Vec<SseFrame>) {
        self.close(out);
        out.push(Self::frame(MessageStreamEvent::ContentBlockStart {
            index: self.next_block,
            content_block: block,
        }));
        self.next_block += 1;
        self.open = Some(kind);
    }

    fn delta(&self, delta: BlockDelta, out: &mut Vec<SseFrame>) {
        out.push(Self::frame(MessageStreamEvent::ContentBlockDelta {
            index: self.next_block.saturating_sub(1),
            delta,
        }));
    }

    /// The frames for one event (none after the answer finished).
    pub fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
        let mut out = self.encode(event);
        // Nothing to send while a tool block is open: the call's arguments
        // are being gathered, or other events held back behind it.
        if out.is_empty()
            && !self.finished
            && matches!(self.open, Some(OpenBlock::Tool(_)))
            && self.last_frame.elapsed() >= self.keepalive_every
        {
            self.delta(
                BlockDelta::InputJsonDelta {
                    partial_json: String::new(),
                },
                &mut out,
            );
        }
        // Read only while a tool block is open, and a block opens with a
        // frame: no clock read for the text deltas of an answer.
        if !out.is_empty() && matches!(self.open, Some(OpenBlock::Tool(_))) {
            self.last_frame = Instant::now();
        }
        out
    }

    fn encode(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let Some(OpenBlock::Tool(call)) = self.open {
            let belongs = match event {
                StreamEvent::ToolCallArgsDelta { index, .. }
                | StreamEvent::ToolCallEnd { index, .. } => *index == call,
                StreamEvent::Usage(_)
                | StreamEvent::UsageSoFar(_)
                | StreamEvent::Timings(_)
                | StreamEvent::ContextEdited { .. }
                | StreamEvent::RefusalDetails(_)
                | StreamEvent::Start { .. }
                | StreamEvent::Stop { .. } => true,
                _ => false,
            };
            if !belongs {
                self.held.push(event.clone());
                return out;
            }
        }
        match event {
            StreamEvent::Start { id, .. } => self.start(id.as_ref(), &mut out),
            StreamEvent::TextDelta { text } => {
                self.start(None, &mut out);
                if self.open != Some(OpenBlock::Text) {
                    self.open(OpenBlock::Text, ContentBlock::text(""), &mut out);
                }
                self.delta(BlockDelta::TextDelta { text: text.clone() }, &mut out);
            }
            // A refusal's text is text here, and its stop reason
            // `refusal`.
            StreamEvent::RefusalStart => {}
            StreamEvent::ReasoningDelta { text, .. } => {
                self.start(None, &mut out);
                if self.open != Some(OpenBlock::Thinking) {
                    self.open(OpenBlock::Thinking, empty_thinking(), &mut out);
                }
                self.delta(
                    BlockDelta::ThinkingDelta {
                        thinking: text.clone(),
                    },
                    &mut out,
                );
            }
            StreamEvent::ReasoningSignature {
                signature,
                redacted: true,
                origin,
                ..
            } => {
                self.start(None, &mut out);
                self.open(
                    OpenBlock::Thinking,
                    ContentBlock::RedactedThinking {
                        data: signature_for_client(signature, origin.as_deref(), ORIGIN),
                    },
                    &mut out,
                );
                self.close(&mut out);
            }
            StreamEvent::ReasoningSignature {
                signature, origin, ..
            } => {
                self.start(None, &mut out);
                if self.open != Some(OpenBlock::Thinking) {
                    self.open(OpenBlock::Thinking, empty_thinking(), &mut out);
                }
                self.delta(
                    BlockDelta::SignatureDelta {
                        signature: signature_for_client(signature, origin.as_deref(), ORIGIN),
                    },
                    &mut out,
                );
                self.close(&mut out);
            }
            StreamEvent::ToolCallStart {
                index,
                id,
                name,
                signature,
            } => {
                self.start(None, &mut out);
                self.has_calls = true;
                self.open(
                    OpenBlock::Tool(*index),
                    ContentBlock::ToolUse {
                        id: call_id_for_client(id, signature.as_deref()),
                        name: name.clone(),
                        input: Value::Object(serde_json::Map::new()),
                        cache_control: None,
                    },
                    &mut out,
                );
            }
            StreamEvent::ToolCallArgsDelta { index, delta } => {
                if self.open == Some(OpenBlock::Tool(*index)) {
                    self.arguments.push_str(delta);
                } else {
                    tracing::warn!(index, "tool call arguments after the call ended; dropped");
                }
            }
            StreamEvent::ToolCallEnd { index, .. } => {
                if self.open == Some(OpenBlock::Tool(*index)) {
                    self.close(&mut out);
                    out.extend(self.replay());
                }
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::ContextEdited { edits } => self
                .context_edits
                .get_or_insert_with(Vec::new)
                .extend_from_slice(edits),
            StreamEvent::RefusalDetails(details) => self.refusal_details = Some(details.clone()),
            StreamEvent::Timings(_) | StreamEvent::UsageSoFar(_) => {}
            StreamEvent::Stop { reason } => {
                out.extend(self.drain());
                if !self.finished {
                    out.extend(self.end(reason));
                }
            }
        }
        out
    }

    /// Closes an open tool call and replays what it held back, until
    /// nothing is held.
    fn drain(&mut self) -> Vec<SseFrame> {
        let mut out = Vec::new();
        while !self.finished {
            if matches!(self.open, Some(OpenBlock::Tool(_))) {
                self.close(&mut out);
            }
            if self.held.is_empty() {
                break;
            }
            out.extend(self.replay());
        }
        out
    }

    /// Replays the held events (which may hold some back again).
    fn replay(&mut self) -> Vec<SseFrame> {
        let held = std::mem::take(&mut self.held);
        held.iter().flat_map(|event| self.encode(event)).collect()
    }

    fn end(&mut self, reason: &StopReason) -> Vec<SseFrame> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.close(&mut out);
        self.finished = true;
        let mut usage = self.usage.unwrap_or_default();
        if usage.input_tokens == 0 {
            usage.input_tokens = self.input_estimate;
        }
        let mut stop_reason = final_reason(reason, self.has_calls);
        let mut stop_sequence = stop_sequence(reason);
        let refusal_details = self
            .refusal_details
            .take()
            .filter(|_| *reason == StopReason::Refusal);
        let mut wire_usage = WireUsage::from(&usage);
        match self.compaction_usage {
            Some(compaction) if self.pause_after_compaction => {
                stop_reason = "compaction".into();
                stop_sequence = None;
                // No answer: the compaction's tokens are in its iteration
                // only, as Anthropic's API reports them.
                wire_usage = WireUsage::from(&Usage::default());
                wire_usage.iterations = Some(iterations(&compaction, None));
            }
            Some(compaction) => {
                wire_usage.iterations = Some(iterations(&compaction, Some(&wire_usage)));
            }
            None => {}
        }
        out.push(Self::frame(MessageStreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop_reason),
                stop_sequence,
                stop_details: refusal_details.as_ref().map(stop_details),
            },
            usage: Some(wire_usage),
            context_management: self.context_edits.as_deref().map(context_management_report),
        }));
        out.push(Self::frame(MessageStreamEvent::MessageStop {}));
        out
    }

    /// Ends the stream if no [`StreamEvent::Stop`] did: closes an open tool
    /// call, replays what it held back, then `message_delta` (`tool_use`
    /// when calls were made, else `end_turn`) and `message_stop`. Nothing
    /// when the stream already ended.
    pub fn finish(&mut self) -> Vec<SseFrame> {
        let mut out = self.drain();
        if !self.finished {
            let reason = if self.has_calls {
                StopReason::ToolUse
            } else {
                StopReason::EndTurn
            };
            out.extend(self.end(&reason));
        }
        out
    }

    /// What keeps a client waiting while the provider sends nothing (a
    /// local model reading a long prompt): `message_start` if the answer
    /// has not begun; in an open tool block, an empty piece of its
    /// arguments (an event the SDKs pass on, see the type's docs); else
    /// `event: ping`, as the API itself sends while a model works, which
    /// the SDKs drop (Claude Code still counts the bytes as activity, for a
    /// while); nothing once the answer ended.
    pub fn keepalive(&mut self) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match (self.started, self.open) {
            (false, _) => self.start(None, &mut out),
            (true, Some(OpenBlock::Tool(_))) => {
                self.delta(
                    BlockDelta::InputJsonDelta {
                        partial_json: String::new(),
                    },
                    &mut out,
                );
                self.last_frame = Instant::now();
            }
            (true, _) => out.push(Self::frame(MessageStreamEvent::Ping {})),
        }
        out
    }

    /// The `event: error` frame reporting an error after the stream began
    /// (what the API sends for an overload mid-stream). The encoder emits
    /// nothing more afterwards.
    pub fn error(&mut self, error: &LlmError) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let (_, body) = encode_error(error);
        vec![Self::frame(MessageStreamEvent::Error { error: body.error })]
    }
}

fn empty_thinking() -> ContentBlock {
    ContentBlock::Thinking {
        thinking: String::new(),
        signature: String::new(),
    }
}

/// Encodes an error as an HTTP status and the API's error body
/// (`{"type":"error","error":{"type","message"}}`).
///
/// | kind | status | `error.type` |
/// |---|---|---|
/// | authentication | 401 | `authentication_error` |
/// | permission | 403 | `permission_error` |
/// | not found | 404 | `not_found_error` |
/// | rate limited | 429 | `rate_limit_error` |
/// | context length | 400 | `invalid_request_error`, "prompt is too long: N tokens > M maximum" |
/// | invalid request | 400, or 413 `request_too_large` when the error's status is 413 | `invalid_request_error` |
/// | overloaded | 529 (the API's own status) | `overloaded_error` |
/// | server, connection | 502 | `api_error` |
/// | timeout | 504 | `timeout_error` |
/// | cancelled | 500 | `api_error` |
pub fn encode_error(error: &LlmError) -> (u16, ErrorResponse) {
    let message = client_message(error);
    let (status, kind, message) = match &error.kind {
        ErrorKind::Authentication => (401, "authentication_error", message),
        ErrorKind::Permission => (403, "permission_error", message),
        ErrorKind::NotFound => (404, "not_found_error", message),
        ErrorKind::RateLimited { .. } => (429, "rate_limit_error", message),
        ErrorKind::ContextLengthExceeded { needed, allowed } => {
            let text = match (needed, allowed) {
                (Some(needed), Some(allowed)) => {
                    format!("prompt is too long: {needed} tokens > {allowed} maximum")
                }
                _ => "prompt is too long".to_owned(),
            };
            (400, "invalid_request_error", format!("{text} ({message})"))
        }
        ErrorKind::InvalidRequest if error.status == Some(413) => {
            (413, "request_too_large", message)
        }
        ErrorKind::InvalidRequest => (400, "invalid_request_error", message),
        ErrorKind::Overloaded => (529, "overloaded_error", message),
        ErrorKind::Server | ErrorKind::Connection => (502, "api_error", message),
        ErrorKind::Timeout => (504, "timeout_error", message),
        ErrorKind::Cancelled => (500, "api_error", message),
    };
    (
        status,
        ErrorResponse {
            kind: "error".into(),
            error: ApiError {
                kind: kind.into(),
                message,
            },
        },
    )
}
