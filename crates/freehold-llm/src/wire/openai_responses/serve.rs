//! The gateway direction of the Responses API: decode a client's request,
//! encode the answer (whole or streamed) and errors.

use std::collections::{BTreeMap, BTreeSet};

use freehold_protocol::{
    ChatRequest, ChatResponse, ContentPart, LlmError, Message, Reasoning, ResponseFormat, Role,
    Sampling, StopReason, StreamEvent, ToolCall, ToolResult, ToolSpec, Usage,
};
use serde_json::{Value, json};

use super::compaction::{
    self, SUMMARY_REQUEST, kept_before_compaction, kept_by_compaction, last_compaction,
};
use super::{
    ArgumentsDoneEvent, CompactionTriggerItem, ContentItem, ContextManagementEntry,
    CustomToolCallItem, DeltaEvent, FunctionCallItem, FunctionCallOutputItem, IncompleteDetails,
    InputDoneEvent, Item, ItemContent, ItemEvent, MessageItem, ORIGIN, PartEvent, ReasoningItem,
    RefusalDoneEvent, ResponseError, ResponseEvent, ResponseInput, ResponseObject,
    ResponseSnapshot, ResponseUsage, ResponsesRequest, ServerEvent, SummaryPartEvent,
    TextDoneEvent, TextFormat, TextPart, ToolSearchCallItem, WireTool,
};
use crate::wire::compaction::Summary;
use crate::wire::openai_chat::{
    self, ErrorBody, decode_effort, decode_tool_choice, decode_verbosity, openai_error_message,
    openai_error_parts,
};
use crate::wire::serve::{
    DecodeError, SseFrame, call_id_for_client, document_from_file, generated_id, image_from_url,
    signature_for_client, split_client_call_id, split_client_signature, unix_now,
};

/// What a Responses request asks of the answer's delivery, beyond the
/// [`ChatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Answer as a stream of `response.*` events.
    pub stream: bool,
    /// The names of the request's freeform (`custom`) tools. Providers see
    /// each as a function tool with one string argument, `input`; calls of
    /// them go back to the client as
    /// `custom_tool_call` items whose input is that argument.
    pub freeform_tools: BTreeSet<String>,
    /// The tools of the request's `namespace` tools, by the name
    /// providers see them under (`{namespace}__{name}`): their namespace
    /// and their own name, which calls of them go back to the client with.
    pub namespaced_tools: BTreeMap<String, (String, String)>,
    /// Whether the request offered Codex's `tool_search` (run by the
    /// client): providers see it as a function tool of that name, and
    /// calls of it go back as `tool_search_call` items.
    pub tool_search: bool,
    /// Whether the request asked for the conversation to be compacted (a
    /// `compaction_trigger` item ends its input): the model is asked for a
    /// summary, and the answer is one `compaction` item holding it.
    pub compaction: bool,
    /// The input tokens at which the request asked for its conversation to
    /// be compacted before it is answered (`context_management`'s
    /// `compact_threshold`, OpenAI's server-side compaction): the gateway
    /// then asks the model for a summary first
    /// ([`super::summary_request`]), and answers from the conversation it
    /// stands for ([`super::request_after_compaction`]), the `compaction`
    /// item first in the
    /// output. `None` when not asked, and for a request that is itself a
    /// compaction.
    pub compact_threshold: Option<u64>,
}

/// The one argument of the function tool a freeform tool becomes.
const FREEFORM_ARGUMENT: &str = "input";

/// The name providers see Codex's `tool_search` under.
const TOOL_SEARCH: &str = "tool_search";

/// A tool of a request, with the field it was declared at.
struct DeclaredTool {
    field: String,
    tool: WireTool,
    /// Found by a tool search (in a `tool_search_output` item): a tool found
    /// again, or already offered, is the same tool.
    found: bool,
}

impl DeclaredTool {
    /// The tools of a list (`tools`, or an item's) at `field`.
    fn all(tools: Vec<WireTool>, field: &str, found: bool) -> impl Iterator<Item = Self> + '_ {
        tools
            .into_iter()
            .enumerate()
            .map(move |(index, tool)| DeclaredTool {
                field: format!("{field}[{index}]"),
                tool,
                found,
            })
    }
}

/// Decodes a client's request.
///
/// - `instructions` becomes a leading [`Role::System`] message, and so do
///   `system` and `developer` message items; a plain-string `input` is one
///   user message;
/// - `function_call` items (which need a `call_id` or an `id`) and
///   `reasoning` items join the assistant message around them (the
///   encrypted content is the reasoning's signature, OpenAI's unless the
///   gateway marked another provider's when it sent it:
///   [`crate::wire::serve::signature_for_client`]; a call's `call_id`
///   carries its signature when the gateway put one there); consecutive
///   `function_call_output` items become one [`Role::Tool`] message, their
///   text parts joined by newlines and their images moved to a user message
///   after them;
/// - `text.format` becomes the response format; `reasoning.effort` the
///   reasoning effort (`none`: none);
/// - the tools of an `additional_tools` input item (where Codex declares
///   its tools to the models it runs in its "lite" mode, gpt-5.6's, with
///   no `tools`) are read as if they were in `tools`, after them;
/// - `custom` (freeform) tools become function tools with one string
///   argument, `input`, their description saying so and giving the
///   input's grammar when they have one (no provider other than OpenAI
///   constrains output to a grammar), and `custom_tool_call` and
///   `custom_tool_call_output` items become calls with that argument and
///   their results (see [`ServeOptions::freeform_tools`]);
/// - OpenAI's hosted web search (`web_search`, `web_search_preview…`),
///   which Codex offers `gpt-5…` models in every request, is left out: the
///   gateway has no search to run, and the model answers without one (a
///   request that must search, its `tool_choice` naming the search or
///   `required` with no other tool, is still refused), and so is a
///   `tool_search` the server would run;
/// - Codex's own `tool_search` (`"execution": "client"`, its search over
///   the tools it holds back, an MCP server's) is a function tool named
///   `tool_search` whose calls go back as `tool_search_call` items (see
///   [`ServeOptions::tool_search`]); `tool_search_call` items in the input
///   are its calls, and `tool_search_output` items its results, a line
///   naming the tools found, which join the request's tools (a tool found
///   again, or already offered, once);
/// - the tools of a `namespace` tool (as Codex groups an MCP server's
///   tools) become tools named `{namespace}__{name}` (shortened with a hash
///   past 63 bytes), the namespace's description added to its first
///   tool's, and call items with a `namespace` calls of them (see
///   [`ServeOptions::namespaced_tools`]);
/// - other tools (`file_search`, `image_generation`, which OpenAI runs,
///   and `local_shell`, whose calls come back in an item of its own) are
///   rejected, and so is
///   `previous_response_id`: the gateway keeps no responses, the client must
///   send the whole conversation (as Codex does, with `store: false`);
/// - a `compaction_trigger` item, which must end the input, asks for the
///   conversation to be compacted: a user message after it asks the model
///   for a summary, in text (no tool may be called, and `text.format` is
///   left out; see [`ServeOptions::compaction`]); a `compaction` item the
///   gateway made is a user message carrying its summary, and one it did
///   not make (OpenAI's, encrypted) is refused; before the last compaction
///   item, only the user's, system and developer messages and the tools
///   declared in the input are kept: the rest is what it replaced;
/// - `context_management`'s `compaction` entry (server-side compaction)
///   gives [`ServeOptions::compact_threshold`]; an entry of another kind is
///   refused;
/// - input items of other types (`web_search_call`, `item_reference`…) are
///   skipped, as are content parts of unknown types in assistant messages.
///
/// # Errors
/// A [`DecodeError`] naming the field at fault.
pub fn decode_request(wire: ResponsesRequest) -> Result<(ChatRequest, ServeOptions), DecodeError> {
    if wire.previous_response_id.is_some() {
        return Err(DecodeError::unsupported(
            "previous_response_id",
            "continuing a stored response (send the whole conversation in `input`)",
        ));
    }
    let mut messages: Vec<Message> = Vec::new();
    if let Some(instructions) = wire.instructions.filter(|text| !text.is_empty()) {
        messages.push(Message::system(instructions));
    }
    // The tools of `tools`, then those declared or found by a tool search
    // in `input`.
    let mut declared_tools: Vec<DeclaredTool> =
        DeclaredTool::all(wire.tools.unwrap_or_default(), "tools", false).collect();
    let mut compaction = false;
    match wire.input {
        ResponseInput::Text(text) => messages.push(Message::user(text)),
        ResponseInput::Items(items) => {
            // What the last compaction replaced is left out; each item
            // keeps its index, for the errors.
            let replaced = last_compaction(&items).unwrap_or(0);
            // The images and files of a run of tool outputs, which go in one
            // user message after the run: a message between two results
            // would part them from their calls.
            let mut attachments = Vec::new();
            let last = items.len().saturating_sub(1);
            for (index, item) in items.into_iter().enumerate() {
                let item = if index < replaced {
                    match kept_before_compaction(item) {
                        Some(item) => item,
                        None => continue,
                    }
                } else {
                    item
                };
                // Outputs keep the run's attachments for after the run, and
                // so do declared tools, which are no message.
                let keeps_attachments = matches!(
                    item,
                    Item::FunctionCallOutput(_)
                        | Item::CustomToolCallOutput(_)
                        | Item::ToolSearchOutput(_)
                        | Item::AdditionalTools(_)
                );
                if !keeps_attachments {
                    push_attachments(&mut messages, &mut attachments);
                }
                if let Item::CompactionTrigger(_) = item {
                    // What comes after the trigger would be neither
                    // summarised nor answered.
                    if index != last {
                        return Err(DecodeError::invalid(
                            format!("input[{index}]"),
                            "a `compaction_trigger` must be the last input item",
                        ));
                    }
                    compaction = true;
                    continue;
                }
                decode_item(
                    item,
                    &format!("input[{index}]"),
                    &mut messages,
                    &mut attachments,
                    &mut declared_tools,
                )?;
            }
            push_attachments(&mut messages, &mut attachments);
        }
    }
    if compaction {
        messages.push(Message::user(SUMMARY_REQUEST));
    }
    let mut names = ToolNames::default();
    let mut tools = Vec::new();
    let mut left_out = None;
    for DeclaredTool { field, tool, found } in declared_tools {
        match tool.kind.as_str() {
            // Codex's search over the tools it holds back (an MCP server's),
            // which it runs itself: a function to providers, whose calls go
            // back as `tool_search_call` items.
            "tool_search" if tool.execution.as_deref() == Some("client") => {
                // A function of that name too would take its calls, which
                // Codex must get as searches.
                if !names.taken.insert(TOOL_SEARCH.to_owned()) {
                    return Err(DecodeError::invalid(
                        field,
                        format!("another tool is also named `{TOOL_SEARCH}`"),
                    ));
                }
                names.tool_search = true;
                tools.push(ToolSpec {
                    name: TOOL_SEARCH.to_owned(),
                    description: tool.description.unwrap_or_default(),
                    parameters: tool
                        .parameters
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    strict: false,
                });
            }
            // A search the server runs (OpenAI's) is left out: the gateway
            // has none to run.
            kind if kind.starts_with("web_search") || kind == "tool_search" => {
                tracing::debug!(kind, "leaving out a search tool");
                left_out.get_or_insert((field, tool.kind));
            }
            "function" | "custom" if found && names.taken.contains(&tool.name) => {}
            "function" | "custom" => tools.push(names.decode(tool, &field, None)?),
            "namespace" => {
                if tool.name.is_empty() {
                    return Err(DecodeError::missing(
                        format!("{field}.name"),
                        "a namespace tool needs a name",
                    ));
                }
                let mut first = true;
                for (inner, function) in tool.tools.unwrap_or_default().into_iter().enumerate() {
                    let field = format!("{field}.tools[{inner}]");
                    if !matches!(function.kind.as_str(), "function" | "custom") {
                        return Err(DecodeError::UnsupportedTool {
                            field,
                            kind: function.kind,
                        });
                    }
                    if found
                        && names
                            .taken
                            .contains(&namespaced_name(&tool.name, &function.name))
                    {
                        continue;
                    }
                    let mut spec = names.decode(function, &field, Some(&tool.name))?;
                    // Providers have no namespaces: what the namespace is
                    // for goes with its first tool, once rather than with
                    // each of an MCP server's tens of tools.
                    if std::mem::take(&mut first)
                        && let Some(about) = tool.description.as_deref().map(str::trim)
                        && !about.is_empty()
                    {
                        spec.description =
                            namespace_description(&spec.description, &tool.name, about);
                    }
                    tools.push(spec);
                }
            }
            _ => {
                return Err(DecodeError::UnsupportedTool {
                    field,
                    kind: tool.kind,
                });
            }
        }
    }
    // The namespace of a forced tool, when the choice names one.
    let forced_namespace = match &wire.tool_choice {
        Some(Value::Object(choice)) => choice
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|space| !space.is_empty()),
        _ => None,
    };
    let tool_choice = match &wire.tool_choice {
        None | Some(Value::Null) => freehold_protocol::ToolChoice::Auto,
        // A freeform tool forced by name, or a tool of a namespace: the
        // function it became, under the name providers see.
        Some(Value::Object(choice))
            if choice.get("type").and_then(Value::as_str) == Some("custom")
                || forced_namespace.is_some() =>
        {
            match choice.get("name").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => freehold_protocol::ToolChoice::Tool {
                    name: match forced_namespace {
                        Some(namespace) => namespaced_name(namespace, name),
                        None => name.to_owned(),
                    },
                },
                _ => {
                    return Err(DecodeError::missing(
                        "tool_choice.name",
                        "a forced tool choice needs the tool's name",
                    ));
                }
            }
        }
        // Codex's own search, forced.
        Some(Value::Object(choice))
            if names.tool_search
                && choice.get("type").and_then(Value::as_str) == Some(TOOL_SEARCH) =>
        {
            freehold_protocol::ToolChoice::Tool {
                name: TOOL_SEARCH.to_owned(),
            }
        }
        Some(value) => decode_tool_choice(value, "tool_choice")?,
    };
    // A summary is text: the tools stay declared (providers want them when
    // the conversation has calls), but none may be called.
    let tool_choice = if compaction {
        freehold_protocol::ToolChoice::None
    } else {
        tool_choice
    };
    // A request that must call a tool, whose only tools were searches the
    // gateway cannot run, cannot be served as asked.
    if tools.is_empty()
        && tool_choice == freehold_protocol::ToolChoice::Required
        && let Some((field, kind)) = left_out
    {
        return Err(DecodeError::UnsupportedTool { field, kind });
    }
    let (format, verbosity) = wire
        .text
        .map(|text| (text.format, text.verbosity))
        .unwrap_or_default();
    let verbosity = verbosity
        .as_deref()
        .map(|verbosity| decode_verbosity(verbosity, "text.verbosity"))
        .transpose()?;
    let response_format = match format {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(TextFormat::JsonSchema {
            name,
            schema,
            strict,
            ..
        }) => {
            if name.is_empty() {
                return Err(DecodeError::missing(
                    "text.format.name",
                    "a json_schema format needs a name",
                ));
            }
            Some(ResponseFormat::JsonSchema {
                name,
                schema,
                strict: strict.unwrap_or(false),
            })
        }
    };
    // A summary is text, whatever format the conversation's answers had.
    let response_format = response_format.filter(|_| !compaction);
    // A compaction is not compacted first.
    let compact_threshold =
        decode_context_management(wire.context_management.as_deref())?.filter(|_| !compaction);
    let reasoning = match wire.reasoning.and_then(|reasoning| reasoning.effort) {
        None => None,
        Some(effort) => decode_effort(&effort, "reasoning.effort")?,
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
            ..Sampling::default()
        },
        max_tokens: wire.max_output_tokens,
        stop: Vec::new(),
        response_format,
        reasoning,
        reasoning_budget: None,
        reasoning_effort_name: None,
        forwarded_headers: Vec::new(),
        prompt_cache: None,
        cache_key: wire.prompt_cache_key,
        verbosity,
        service_tier: wire.service_tier,
        context_management: None,
        reasoning_display: None,
        end_user: openai_chat::end_user(wire.safety_identifier, wire.user),
    };
    Ok((
        request,
        ServeOptions {
            stream: wire.stream,
            freeform_tools: names.freeform,
            namespaced_tools: names.namespaced,
            tool_search: names.tool_search,
            compaction,
            compact_threshold,
        },
    ))
}

/// The threshold of a request's `context_management` (the lowest, should
/// it have several `compaction` entries). An entry without a threshold is
/// ignored: the gateway knows no default for a model.
///
/// # Errors
/// An entry of another kind, or a threshold of 0.
fn decode_context_management(
    entries: Option<&[ContextManagementEntry]>,
) -> Result<Option<u64>, DecodeError> {
    let mut lowest: Option<u64> = None;
    for (index, entry) in entries.unwrap_or_default().iter().enumerate() {
        if entry.kind.is_empty() {
            return Err(DecodeError::missing(
                format!("context_management[{index}].type"),
                "a context management entry needs a `type`: `compaction`",
            ));
        }
        if entry.kind != "compaction" {
            return Err(DecodeError::invalid(
                format!("context_management[{index}].type"),
                format!(
                    "`{}` is not a kind of context management: the Responses API has \
                     `compaction`",
                    entry.kind
                ),
            ));
        }
        match entry.compact_threshold {
            Some(0) => {
                return Err(DecodeError::invalid(
                    format!("context_management[{index}].compact_threshold"),
                    "a compaction threshold is a number of input tokens above 0",
                ));
            }
            Some(threshold) => lowest = Some(lowest.map_or(threshold, |low| low.min(threshold))),
            None => tracing::debug!(
                index,
                "a compaction entry without a threshold is ignored: the gateway knows no \
                 default"
            ),
        }
    }
    Ok(lowest)
}

/// Decodes a `POST /v1/responses/compact` request (the fields of a
/// Responses request; `stream` is ignored): the request that asks the model
/// for the summary, as a `compaction_trigger` ending the input would, and
/// the items the answer keeps before its `compaction` item (the input's
/// user messages, their text as `input_text` parts).
///
/// # Errors
/// As [`decode_request`].
pub fn decode_compact_request(
    mut wire: ResponsesRequest,
) -> Result<(ChatRequest, ServeOptions, Vec<Item>), DecodeError> {
    let kept = kept_by_compaction(&wire.input);
    let mut items = std::mem::take(&mut wire.input).into_items();
    if !matches!(items.last(), Some(Item::CompactionTrigger(_))) {
        items.push(Item::CompactionTrigger(CompactionTriggerItem::default()));
    }
    wire.input = ResponseInput::Items(items);
    wire.stream = false;
    let (request, options) = decode_request(wire)?;
    Ok((request, options, kept))
}

/// The names of a request's tools, as they are decoded.
#[derive(Default)]
struct ToolNames {
    /// Every name a provider sees, to refuse a second tool of one name.
    taken: BTreeSet<String>,
    freeform: BTreeSet<String>,
    namespaced: BTreeMap<String, (String, String)>,
    tool_search: bool,
}

impl ToolNames {
    /// A `function` or `custom` tool (at `field`, in `namespace` if any)
    /// as the provider sees it.
    fn decode(
        &mut self,
        tool: WireTool,
        field: &str,
        namespace: Option<&str>,
    ) -> Result<ToolSpec, DecodeError> {
        if tool.name.is_empty() {
            return Err(DecodeError::missing(
                format!("{field}.name"),
                format!("a {} tool needs a name", tool.kind),
            ));
        }
        let name = match namespace {
            Some(namespace) => {
                let flat = namespaced_name(namespace, &tool.name);
                self.namespaced
                    .insert(flat.clone(), (namespace.to_owned(), tool.name.clone()));
                flat
            }
            None => tool.name.clone(),
        };
        // A function and a freeform tool of one name (or a namespaced one
        // that flattens to it) would be two functions of that name.
        if !self.taken.insert(name.clone()) {
            return Err(DecodeError::invalid(
                format!("{field}.name"),
                format!("another tool is also named `{name}`"),
            ));
        }
        if tool.kind == "custom" {
            self.freeform.insert(name.clone());
            return Ok(ToolSpec {
                description: freeform_description(
                    tool.description.as_deref().unwrap_or_default(),
                    tool.format.as_ref(),
                ),
                name,
                parameters: freeform_parameters(),
                strict: false,
            });
        }
        Ok(ToolSpec {
            name,
            description: tool.description.unwrap_or_default(),
            parameters: tool
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            // Left out, OpenAI's own default is strict; taken as not strict
            // here, so that a schema strict mode would refuse still works
            // on every provider (as it did before the flag was carried).
            strict: tool.strict == Some(true),
        })
    }
}

/// The description of a namespace's first tool (`own`): its own, then
/// what its namespace, `namespace`, is for (`about`).
fn namespace_description(own: &str, namespace: &str, about: &str) -> String {
    let own = own.trim_end();
    let separator = if own.is_empty() { "" } else { "\n\n" };
    format!("{own}{separator}One of the tools of `{namespace}`: {about}")
}

/// The longest tool name providers accept: 64 bytes for OpenAI and
/// Anthropic, and for Gemini 64 in most of Google's references but 63 in
/// some, so 63.
const PROVIDER_NAME_LIMIT: usize = 63;

/// The name a provider sees for tool `name` of namespace `namespace`:
/// joined by one `__` as Codex flattens them itself (MCP namespaces end
/// in `__` in some versions, and a doubled separator would both lengthen
/// names past providers' limit and tempt the model to call the
/// name without it).
///
/// A joined name longer than providers accept (an MCP server and a tool
/// with long names) keeps the tool's own name whole, which is what the
/// model reads to choose it, and gives up the end of the namespace for 8
/// hex digits of a hash of the whole name:
/// `mcp__github_enterprise_server_for_the_platform_team` and
/// `list_pull_request_review_comments` become
/// `mcp__github_enterpr_a25a0d3e__list_pull_request_review_comments`.
/// The hash makes it the same on every request, so a call in the
/// conversation's history still names its tool, and distinct for
/// namespaces that share a start. A tool name too long to keep whole
/// beside the namespace's first 8 bytes (over 44 bytes) is cut too. The
/// client never sees these names: calls go back under their namespace
/// and own name.
fn namespaced_name(namespace: &str, name: &str) -> String {
    let namespace = namespace.trim_end_matches('_');
    let name = name.trim_start_matches('_');
    let joined = format!("{namespace}__{name}");
    if joined.len() <= PROVIDER_NAME_LIMIT {
        return joined;
    }
    // At least the namespace's start stays, to tell whose tool it is.
    const NAMESPACE_KEPT_AT_LEAST: usize = 8;
    let digest = format!("{:08x}", fnv1a_32(joined.as_bytes()));
    let overhead = 1 + digest.len() + 2;
    let namespace_room = PROVIDER_NAME_LIMIT
        .saturating_sub(overhead + name.len())
        .max(NAMESPACE_KEPT_AT_LEAST);
    // Cut after a `_`, it would end in a doubled separator again.
    let namespace = start_within(namespace, namespace_room).trim_end_matches(['_', '-']);
    let name_room = PROVIDER_NAME_LIMIT - overhead - namespace.len();
    let name = start_within(name, name_room);
    format!("{namespace}_{digest}__{name}")
}

/// The longest start of `text` of at most `bytes` bytes that ends on a
/// character's boundary.
fn start_within(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The 32-bit FNV-1a hash of `bytes`: stable across runs and builds
/// (unlike the standard library's hasher), which a name that must match
/// the same name in a later request needs. Not a defence against anyone.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The parameters of the function tool a freeform tool becomes.
fn freeform_parameters() -> Value {
    json!({
        "type": "object",
        "properties": {
            FREEFORM_ARGUMENT: {
                "type": "string",
                "description": "The tool's whole input, as plain text in its own format (not JSON)."
            }
        },
        "required": [FREEFORM_ARGUMENT],
        "additionalProperties": false
    })
}

/// A freeform tool's description as a function tool: how to pass its input
/// and, when it has one, the grammar the input must follow.
fn freeform_description(description: &str, format: Option<&Value>) -> String {
    let mut text = description.trim_end().to_owned();
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(&format!(
        "Pass the tool's whole input as one string argument, `{FREEFORM_ARGUMENT}`, in the \
         tool's own format (not JSON)."
    ));
    let grammar = format
        .filter(|format| format.get("type").and_then(Value::as_str) == Some("grammar"))
        .and_then(|format| {
            let definition = format.get("definition").and_then(Value::as_str)?;
            let syntax = format
                .get("syntax")
                .and_then(Value::as_str)
                .unwrap_or("lark");
            Some((syntax, definition))
        });
    if let Some((syntax, definition)) = grammar {
        text.push_str(&format!(
            " It must match this grammar ({syntax} syntax):\n\n{definition}"
        ));
    }
    text
}

/// A freeform tool call's input, from the arguments of the function call it
/// came back as: its `input` argument (or, misnamed, its only one); a JSON
/// string as that text; nothing for no arguments; and the whole text when
/// the model wrote the input bare instead of as JSON.
pub(super) fn freeform_input(arguments: &str) -> String {
    let text = |value: Value| match value {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut fields)) => match fields.remove(FREEFORM_ARGUMENT) {
            Some(input) => text(input),
            None if fields.len() == 1 => fields.into_values().next().map(text).unwrap_or_default(),
            None if fields.is_empty() => String::new(),
            None => arguments.to_owned(),
        },
        Ok(Value::String(input)) => input,
        _ if arguments.trim().is_empty() => String::new(),
        _ => arguments.to_owned(),
    }
}

/// Appends `part` to the last message when it has `role`, else to a new one.
fn push_part(messages: &mut Vec<Message>, role: Role, part: ContentPart) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.push(part),
        _ => messages.push(Message {
            role,
            content: vec![part],
        }),
    }
}

/// The images and files of the tool outputs before, as one user message.
fn push_attachments(messages: &mut Vec<Message>, attachments: &mut Vec<ContentPart>) {
    if !attachments.is_empty() {
        messages.push(Message {
            role: Role::User,
            content: std::mem::take(attachments),
        });
    }
}

/// One input item (at `field`) into `messages`; its images and files go to
/// `attachments`, and the tools it declares or a tool search found to
/// `declared_tools`.
fn decode_item(
    item: Item,
    field: &str,
    messages: &mut Vec<Message>,
    attachments: &mut Vec<ContentPart>,
    declared_tools: &mut Vec<DeclaredTool>,
) -> Result<(), DecodeError> {
    match item {
        Item::Message(message) => {
            let (role, images) = match message.role.as_str() {
                "system" | "developer" => (Role::System, false),
                "user" => (Role::User, true),
                "assistant" => (Role::Assistant, false),
                other => {
                    return Err(DecodeError::invalid(
                        format!("{field}.role"),
                        format!(
                            "unknown role `{other}` (expected system, developer, user or \
                             assistant)"
                        ),
                    ));
                }
            };
            let parts = decode_parts(message.content, field, images, role == Role::Assistant)?;
            if role == Role::Assistant {
                for part in parts {
                    push_part(messages, Role::Assistant, part);
                }
            } else if !parts.is_empty() {
                messages.push(Message {
                    role,
                    content: parts,
                });
            }
        }
        Item::FunctionCall(call) => {
            let (call_id, name) = call_identity(
                field,
                "function_call",
                &call.call_id,
                call.id.as_deref(),
                call.name,
                call.namespace.as_deref(),
            )?;
            push_part(
                messages,
                Role::Assistant,
                ContentPart::ToolCall(client_call(&call_id, name, call.arguments)),
            );
        }
        Item::CustomToolCall(call) => {
            let (call_id, name) = call_identity(
                field,
                "custom_tool_call",
                &call.call_id,
                call.id.as_deref(),
                call.name,
                call.namespace.as_deref(),
            )?;
            let arguments = json!({ FREEFORM_ARGUMENT: call.input }).to_string();
            push_part(
                messages,
                Role::Assistant,
                ContentPart::ToolCall(client_call(&call_id, name, arguments)),
            );
        }
        Item::FunctionCallOutput(output) => {
            decode_call_output(output, field, "function_call_output", messages, attachments)?;
        }
        Item::CustomToolCallOutput(output) => {
            decode_call_output(
                output,
                field,
                "custom_tool_call_output",
                messages,
                attachments,
            )?;
        }
        Item::Reasoning(reasoning) => {
            let text = reasoning.text();
            let signature = reasoning.encrypted_content.filter(|data| !data.is_empty());
            let (signature, redacted) = match signature {
                Some(data) => match data.strip_prefix(REDACTED_MARK) {
                    Some(redacted) => (Some(redacted.to_owned()), true),
                    None => (Some(data), false),
                },
                None => (None, false),
            };
            let (signature, origin) = match signature {
                Some(signature) => {
                    let (signature, origin) = split_client_signature(signature, ORIGIN);
                    (Some(signature), origin)
                }
                None => (None, None),
            };
            if !text.is_empty() || signature.is_some() {
                push_part(
                    messages,
                    Role::Assistant,
                    ContentPart::Reasoning(Reasoning {
                        text,
                        signature,
                        redacted,
                        id: reasoning.id,
                        origin,
                    }),
                );
            }
        }
        // A search the server ran (OpenAI's), or one without a call id:
        // no call of the client's to pair it with; the tools it found
        // still join the request's.
        Item::ToolSearchCall(call) if !runs_on_client(call.execution.as_deref()) => {}
        Item::ToolSearchOutput(output)
            if !runs_on_client(output.execution.as_deref()) || output.call_id.is_none() =>
        {
            tracing::debug!(
                field,
                "keeping only the tools of a search the client did not run"
            );
            let field = format!("{field}.tools");
            declared_tools.extend(DeclaredTool::all(output.tools, &field, true));
        }
        Item::ToolSearchCall(call) => {
            let (call_id, name) = call_identity(
                field,
                "tool_search_call",
                call.call_id.as_deref().unwrap_or_default(),
                call.id.as_deref(),
                TOOL_SEARCH.to_owned(),
                None,
            )?;
            let arguments = match call.arguments {
                Value::String(text) => text,
                Value::Null => "{}".to_owned(),
                arguments => arguments.to_string(),
            };
            push_part(
                messages,
                Role::Assistant,
                ContentPart::ToolCall(client_call(&call_id, name, arguments)),
            );
        }
        Item::ToolSearchOutput(output) => {
            let call_id = output.call_id.as_deref().unwrap_or_default();
            push_part(
                messages,
                Role::Tool,
                ContentPart::ToolResult(ToolResult {
                    call_id: split_client_call_id(call_id).0,
                    content: found_tools_text(&output.tools),
                    is_error: false,
                }),
            );
            let field = format!("{field}.tools");
            declared_tools.extend(DeclaredTool::all(output.tools, &field, true));
        }
        Item::AdditionalTools(declared) => {
            let field = format!("{field}.tools");
            declared_tools.extend(DeclaredTool::all(declared.tools, &field, false));
        }
        Item::Compaction(compaction) => messages.push(compaction::message_for(&compaction, field)?),
        // Taken by decode_request's loop over the input, which checks that
        // it is last; it never reaches here.
        Item::CompactionTrigger(_) => {}
        Item::Other => {
            tracing::debug!(field, "skipping an input item of an unsupported type");
        }
    }
    Ok(())
}

/// The call id and tool name of a `function_call` or `custom_tool_call`
/// item (`kind`, at `field`): its `call_id`, else its item `id`; its name,
/// flattened with its `namespace` when it has one, as its tool was.
fn call_identity(
    field: &str,
    kind: &str,
    call_id: &str,
    id: Option<&str>,
    name: String,
    namespace: Option<&str>,
) -> Result<(String, String), DecodeError> {
    let call_id = match (call_id, id) {
        ("", Some(id)) if !id.is_empty() => id.to_owned(),
        ("", _) => {
            return Err(DecodeError::missing(
                format!("{field}.call_id"),
                format!("a {kind} needs call_id (its output item refers to it)"),
            ));
        }
        (call_id, _) => call_id.to_owned(),
    };
    if name.is_empty() {
        return Err(DecodeError::missing(
            format!("{field}.name"),
            format!("a {kind} needs the tool's name"),
        ));
    }
    let name = match namespace.filter(|space| !space.is_empty()) {
        Some(namespace) => namespaced_name(namespace, &name),
        None => name,
    };
    Ok((call_id, name))
}

/// A call a client hands back, its signature taken out of its id
/// ([`split_client_call_id`]).
fn client_call(call_id: &str, name: String, arguments: String) -> ToolCall {
    let (id, signature) = split_client_call_id(call_id);
    ToolCall {
        signature,
        ..ToolCall::new(id, name, arguments)
    }
}

/// Whether a tool search item's `execution` is the client's (Codex's, or
/// not said).
fn runs_on_client(execution: Option<&str>) -> bool {
    execution.is_none_or(|execution| execution == "client")
}

/// A tool search's result as a provider reads it: the names the tools it
/// found have now among the request's tools (they are offered from the
/// next request on, as Codex's search makes them).
fn found_tools_text(tools: &[WireTool]) -> String {
    let names: Vec<String> = tools
        .iter()
        .flat_map(|tool| match tool.kind.as_str() {
            "namespace" => tool
                .tools
                .iter()
                .flatten()
                .map(|inner| namespaced_name(&tool.name, &inner.name))
                .collect(),
            _ => vec![tool.name.clone()],
        })
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        "No tools matched the search.".to_owned()
    } else {
        format!(
            "Found, and now among your tools: {}.",
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A `function_call_output` or `custom_tool_call_output` item (`kind`):
/// a tool result, joining the last [`Role::Tool`] message; its images and
/// files join `attachments`, the user message after the run of outputs.
fn decode_call_output(
    output: FunctionCallOutputItem,
    field: &str,
    kind: &str,
    messages: &mut Vec<Message>,
    attachments: &mut Vec<ContentPart>,
) -> Result<(), DecodeError> {
    if output.call_id.is_empty() {
        return Err(DecodeError::missing(
            format!("{field}.call_id"),
            format!("a {kind} needs call_id (the call it answers)"),
        ));
    }
    let content = match output.output {
        ItemContent::Text(text) => text,
        ItemContent::Parts(parts) => {
            let mut texts = Vec::new();
            for part in parts {
                match part {
                    ContentItem::InputText { text } | ContentItem::OutputText { text, .. } => {
                        texts.push(text)
                    }
                    ContentItem::InputImage {
                        image_url: Some(url),
                        ..
                    } => attachments.push(ContentPart::Image {
                        source: image_from_url(&url),
                    }),
                    // As images: in the user message after the outputs.
                    ContentItem::InputFile {
                        file_data,
                        filename,
                        file_url,
                        ..
                    } => match document_from_file(file_data, file_url, filename) {
                        Some(ContentPart::Text { text }) => texts.push(text),
                        Some(part) => attachments.push(part),
                        None => {
                            return Err(DecodeError::unsupported(
                                format!("{field}.output"),
                                "an input_file without file_data or file_url (an uploaded \
                                 file's id: the gateway has no copy of it; send its bytes \
                                 instead)",
                            ));
                        }
                    },
                    _ => {}
                }
            }
            texts.join("\n")
        }
    };
    push_part(
        messages,
        Role::Tool,
        ContentPart::ToolResult(ToolResult {
            call_id: split_client_call_id(&output.call_id).0,
            content,
            is_error: false,
        }),
    );
    Ok(())
}

fn decode_parts(
    content: ItemContent,
    field: &str,
    images: bool,
    assistant: bool,
) -> Result<Vec<ContentPart>, DecodeError> {
    let parts = match content {
        ItemContent::Text(text) if text.is_empty() => return Ok(Vec::new()),
        ItemContent::Text(text) => return Ok(vec![ContentPart::Text { text }]),
        ItemContent::Parts(parts) => parts,
    };
    let mut out: Vec<ContentPart> = Vec::new();
    for (index, part) in parts.into_iter().enumerate() {
        let part_field = format!("{field}.content[{index}]");
        match part {
            ContentItem::InputText { text }
            | ContentItem::OutputText { text, .. }
            | ContentItem::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(ContentPart::Text { text });
                }
            }
            ContentItem::InputImage { image_url, .. } if images => match image_url {
                Some(url) if !url.is_empty() => out.push(ContentPart::Image {
                    source: image_from_url(&url),
                }),
                _ => {
                    return Err(DecodeError::unsupported(
                        part_field,
                        "an input_image without image_url (uploaded files)",
                    ));
                }
            },
            ContentItem::InputImage { .. } => {
                return Err(DecodeError::unsupported(
                    part_field,
                    "an image outside a user message",
                ));
            }
            ContentItem::InputFile {
                file_data,
                filename,
                file_url,
                ..
            } if images => match document_from_file(file_data, file_url, filename) {
                Some(part) => out.push(part),
                None => {
                    return Err(DecodeError::unsupported(
                        part_field,
                        "an input_file without file_data or file_url (an uploaded file's id: \
                         the gateway has no copy of it; send its bytes instead)",
                    ));
                }
            },
            ContentItem::InputFile { .. } => {
                return Err(DecodeError::unsupported(
                    part_field,
                    "a file outside a user message",
                ));
            }
            ContentItem::Other if assistant => {}
            ContentItem::Other => {
                return Err(DecodeError::unsupported(
                    part_field,
                    "a content part of this type (only input_text, input_image and input_file \
                     are)",
                ));
            }
        }
    }
    Ok(out)
}

/// The status and `incomplete_details` of a finished response.
fn final_status(reason: &StopReason) -> (&'static str, Option<IncompleteDetails>) {
    let incomplete = |reason: &str| {
        Some(IncompleteDetails {
            reason: Some(reason.to_owned()),
        })
    };
    match reason {
        StopReason::MaxTokens => ("incomplete", incomplete("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", incomplete("content_filter")),
        StopReason::Cancelled => ("cancelled", None),
        _ => ("completed", None),
    }
}

/// Marks an output item `incomplete` (reasoning, which has no status of
/// its own here, is left as it is).
fn mark_incomplete(item: &mut Item) {
    let status = match item {
        Item::Message(message) => &mut message.status,
        Item::FunctionCall(call) => &mut call.status,
        Item::CustomToolCall(call) => &mut call.status,
        Item::ToolSearchCall(call) => &mut call.status,
        _ => return,
    };
    *status = Some("incomplete".into());
}

/// A message's one part: `text` as output text, or as the model's refusal.
fn message_part(text: String, refusal: bool) -> ContentItem {
    if refusal {
        ContentItem::Refusal { refusal: text }
    } else {
        ContentItem::OutputText {
            text,
            annotations: Vec::new(),
        }
    }
}

fn message_item(id: String, text: &str, refusal: bool, status: &str) -> Item {
    let part = message_part(text.to_owned(), refusal);
    Item::Message(MessageItem {
        id: Some(id),
        role: "assistant".into(),
        content: ItemContent::Parts(if status == "in_progress" {
            Vec::new()
        } else {
            vec![part]
        }),
        status: Some(status.into()),
    })
}

/// What marks, in a reasoning item's `encrypted_content`, reasoning the
/// provider redacted (Anthropic's `redacted_thinking`, whose opaque data
/// is all there is): the client hands the item back unchanged, and the
/// data must then go back as redacted thinking, not as a signature.
const REDACTED_MARK: &str = "freehold-redacted:";

/// The `encrypted_content` for a reasoning's signature, made by a provider
/// of `origin`'s protocol (marked when that is not this one's:
/// [`signature_for_client`]).
fn encrypted_content(signature: &str, redacted: bool, origin: Option<&str>) -> String {
    let signature = signature_for_client(signature, origin, ORIGIN);
    if redacted {
        format!("{REDACTED_MARK}{signature}")
    } else {
        signature
    }
}

fn reasoning_item(id: String, text: &str, encrypted: Option<String>) -> Item {
    Item::Reasoning(ReasoningItem {
        id: Some(id),
        summary: if text.is_empty() {
            Vec::new()
        } else {
            vec![TextPart::summary(text)]
        },
        content: None,
        encrypted_content: encrypted,
        status: None,
    })
}

/// A `custom_tool_call` item for `call` of a freeform tool, its input
/// `input`; one of a `namespace` tool (found in `namespaced`) goes back
/// under its namespace and own name.
fn custom_call_item(
    id: String,
    call: &ToolCall,
    input: String,
    status: &str,
    namespaced: &BTreeMap<String, (String, String)>,
) -> Item {
    let (namespace, name) = split_name(call, namespaced);
    Item::CustomToolCall(CustomToolCallItem {
        id: Some(id),
        call_id: call_id_for_client(&call.id, call.signature.as_deref()),
        name,
        input,
        status: Some(status.into()),
        namespace,
    })
}

/// A `tool_search_call` item for `call`: its arguments as a JSON object
/// (Codex reads nothing else; text a model wrote instead is the query).
fn tool_search_item(id: String, call: &ToolCall, status: &str) -> Item {
    Item::ToolSearchCall(ToolSearchCallItem {
        id: Some(id),
        call_id: Some(call_id_for_client(&call.id, call.signature.as_deref())),
        execution: Some("client".into()),
        arguments: tool_search_arguments(&call.arguments),
        status: Some(status.into()),
    })
}

/// A model's arguments for Codex's search as Codex reads them: an object
/// with a string `query` and, if any, a numeric `limit`. What a small model
/// writes instead (bare text, the query under another name, the limit as
/// a string) is put in that shape.
fn tool_search_arguments(written: &str) -> Value {
    let mut arguments = match serde_json::from_str::<Value>(written) {
        Ok(Value::Object(arguments)) => arguments,
        Ok(Value::String(query)) => return json!({ "query": query }),
        _ if written.trim().is_empty() => return json!({ "query": "" }),
        _ => return json!({ "query": written }),
    };
    if !arguments.get("query").is_some_and(Value::is_string) {
        let query = arguments
            .iter()
            .find(|(key, value)| *key != "limit" && value.is_string())
            .and_then(|(_, value)| value.as_str())
            .unwrap_or_default()
            .to_owned();
        arguments.insert("query".into(), Value::String(query));
    }
    if let Some(Value::String(limit)) = arguments.get("limit")
        && let Ok(limit) = limit.trim().parse::<u64>()
    {
        arguments.insert("limit".into(), limit.into());
    }
    arguments.retain(|key, value| match key.as_str() {
        "query" => true,
        "limit" => value.is_number(),
        _ => false,
    });
    Value::Object(arguments)
}

/// The namespace and own name of `call`'s tool, as the client declared it.
fn split_name(
    call: &ToolCall,
    namespaced: &BTreeMap<String, (String, String)>,
) -> (Option<String>, String) {
    match namespaced.get(&call.name) {
        Some((namespace, name)) => (Some(namespace.clone()), name.clone()),
        None => (None, call.name.clone()),
    }
}

/// A `function_call` item for `call`; a function of a `namespace` tool
/// (found in `namespaced`) goes back under its namespace and own name.
fn call_item(
    id: String,
    call: &ToolCall,
    status: &str,
    namespaced: &BTreeMap<String, (String, String)>,
) -> Item {
    let (namespace, name) = split_name(call, namespaced);
    Item::FunctionCall(FunctionCallItem {
        id: Some(id),
        call_id: call_id_for_client(&call.id, call.signature.as_deref()),
        name,
        arguments: call.arguments.clone(),
        status: Some(status.into()),
        namespace,
    })
}

/// Encodes a complete answer as a `response` object.
///
/// The id is the response's, else a new `resp_…`; `created_at` is now;
/// `model` is the name the client asked for. Output items, in the order of
/// the message's parts: `reasoning` (summary from the text, the signature as
/// `encrypted_content`, the reasoning's id or a new `rs_…`), `message`
/// (consecutive text joined in one `output_text` part, a `refusal` part when
/// the stop reason is a refusal) and `function_call` items. The status is
/// `completed`, or `incomplete` with `incomplete_details.reason`
/// `max_output_tokens` / `content_filter`. Calls of the request's freeform
/// tools are `custom_tool_call` items: see [`encode_response_for`].
pub fn encode_response(response: &ChatResponse, model: &str) -> ResponseObject {
    encode_response_for(response, model, &ServeOptions::default())
}

/// [`encode_response`] for a request decoded with `options`: calls of its
/// freeform tools become `custom_tool_call` items (id `ctc_…`), their input
/// the call's `input` argument, and calls of Codex's `tool_search`
/// `tool_search_call` items (id `tsc_…`).
pub fn encode_response_for(
    response: &ChatResponse,
    model: &str,
    options: &ServeOptions,
) -> ResponseObject {
    let refusal = response.stop_reason == StopReason::Refusal;
    let mut output = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, output: &mut Vec<Item>| {
        if !text.is_empty() {
            output.push(message_item(
                generated_id("msg_"),
                &std::mem::take(text),
                refusal,
                "completed",
            ));
        }
    };
    for part in &response.message.content {
        match part {
            ContentPart::Text { text: more } => text.push_str(more),
            ContentPart::Reasoning(reasoning) => {
                flush(&mut text, &mut output);
                output.push(reasoning_item(
                    reasoning.id.clone().unwrap_or_else(|| generated_id("rs_")),
                    &reasoning.text,
                    reasoning.signature.as_deref().map(|signature| {
                        encrypted_content(
                            signature,
                            reasoning.redacted,
                            reasoning.origin.as_deref(),
                        )
                    }),
                ));
            }
            ContentPart::ToolCall(call) if options.tool_search && call.name == TOOL_SEARCH => {
                flush(&mut text, &mut output);
                output.push(tool_search_item(generated_id("tsc_"), call, "completed"));
            }
            ContentPart::ToolCall(call) if options.freeform_tools.contains(&call.name) => {
                flush(&mut text, &mut output);
                output.push(custom_call_item(
                    generated_id("ctc_"),
                    call,
                    freeform_input(&call.arguments),
                    "completed",
                    &options.namespaced_tools,
                ));
            }
            ContentPart::ToolCall(call) => {
                flush(&mut text, &mut output);
                output.push(call_item(
                    generated_id("fc_"),
                    call,
                    "completed",
                    &options.namespaced_tools,
                ));
            }
            ContentPart::Image { .. } | ContentPart::Document(_) | ContentPart::ToolResult(_) => {}
        }
    }
    flush(&mut text, &mut output);
    let (status, incomplete_details) = final_status(&response.stop_reason);
    // The item the answer's end cut off is incomplete, as OpenAI marks it.
    if status == "incomplete"
        && let Some(last) = output.last_mut()
    {
        mark_incomplete(last);
    }
    whole_response(response, model, output, status, incomplete_details)
}

/// The `response` object of a whole answer, with its `output` items.
fn whole_response(
    response: &ChatResponse,
    model: &str,
    output: Vec<Item>,
    status: &str,
    incomplete_details: Option<IncompleteDetails>,
) -> ResponseObject {
    ResponseObject {
        id: response.id.clone().unwrap_or_else(|| generated_id("resp_")),
        object: "response".into(),
        created_at: Some(unix_now().into()),
        status: Some(status.into()),
        model: model.to_owned(),
        output,
        error: None,
        incomplete_details,
        usage: Some(ResponseUsage::from(&response.usage)),
    }
}

/// Encodes the answer to a request that asked for a compaction
/// ([`ServeOptions::compaction`]): one `compaction` item holding the
/// model's text, its summary (runs of text parted by reasoning or a call
/// joined by a blank line); reasoning and any tool call the model made are
/// left out. The status is `completed` even when the summary was cut at the
/// length bound: the item is whole, and holds what the model wrote.
///
/// # Errors
/// No summary: the model wrote no text, refused, or was stopped by a
/// content filter. A compaction without a summary would lose the
/// conversation it replaces.
pub fn encode_compaction(response: &ChatResponse, model: &str) -> Result<ResponseObject, LlmError> {
    let output = vec![compaction::compaction_item(response)?];
    Ok(whole_response(response, model, output, "completed", None))
}

/// Encodes the answer to `POST /v1/responses/compact` (decoded by
/// [`decode_compact_request`]): a `response.compaction` object whose output
/// is the `kept` items (the input's user messages), then the `compaction`
/// item.
///
/// # Errors
/// As [`encode_compaction`].
pub fn encode_compacted(
    response: &ChatResponse,
    model: &str,
    kept: Vec<Item>,
) -> Result<ResponseObject, LlmError> {
    let mut compacted = encode_compaction(response, model)?;
    compacted.object = "response.compaction".into();
    compacted.output.splice(0..0, kept);
    Ok(compacted)
}

/// The output item the stream encoder has open.
#[derive(Debug)]
enum OpenItem {
    /// A message item, whose one part is text or, when `refusal`, the
    /// model's refusal.
    Message {
        id: String,
        text: String,
        refusal: bool,
    },
    Reasoning {
        id: String,
        text: String,
    },
    /// A function call, with its [`StreamEvent`] index; a freeform tool's
    /// call gathers its arguments and sends its input when it closes, a
    /// tool search's sends the whole item then.
    Call {
        index: u32,
        id: String,
        call: ToolCall,
        kind: CallKind,
    },
}

/// The item a tool call goes to the client as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// `function_call`, its arguments streamed.
    Function,
    /// `custom_tool_call` (a freeform tool), its input sent whole.
    Freeform,
    /// `tool_search_call`, sent whole when it is complete: Codex acts on
    /// the item as it is announced, and its arguments must be whole then.
    ToolSearch,
}

/// Encodes a streamed answer as Responses events, each with its `event:`
/// name and a `sequence_number` counting from 0.
///
/// What it emits:
/// 1. `response.created` and `response.in_progress` (status `in_progress`,
///    no output) on the first event;
/// 2. one output item per run of text: `response.output_item.added` (a
///    `message` item), `response.content_part.added` (an empty
///    `output_text`), `response.output_text.delta`s, then
///    `response.output_text.done`, `response.content_part.done` and
///    `response.output_item.done` with the whole text; after a
///    [`StreamEvent::RefusalStart`], the part is a `refusal` instead, with
///    `response.refusal.delta`s and `response.refusal.done` (a text message
///    open then is closed first, so that the refusal has its own item);
/// 3. one per run of reasoning: a `reasoning` item with one summary part
///    (`response.reasoning_summary_part.added`,
///    `response.reasoning_summary_text.delta`s, `….done`s), whose
///    `output_item.done` carries the signature as `encrypted_content` and
///    the reasoning's own id when the signature event names one;
/// 4. one per tool call: a `function_call` item (`id` `fc_…`, `call_id` the
///    call's id, empty arguments), `response.function_call_arguments.delta`s,
///    then `response.function_call_arguments.done` and
///    `response.output_item.done`; for a freeform tool's call, a
///    `custom_tool_call` item (`ctc_…`) whose input, decoded from the
///    arguments once they are complete, goes out in one
///    `response.custom_tool_call_input.delta`, then
///    `response.custom_tool_call_input.done` and `response.output_item.done`;
///    for a call of Codex's `tool_search`, a `tool_search_call` item
///    (`tsc_…`), announced and done together once its arguments are whole;
/// 5. `response.completed` with the whole response and its usage, or
///    `response.incomplete` (max tokens, content filter).
///
/// Items are emitted one after the other: while a tool call is open, events
/// that belong elsewhere are held back and replayed when it ends (see
/// [`crate::wire::anthropic::MessageStreamEncoder`]). No `[DONE]` marker:
/// the stream ends after the final event.
#[derive(Debug)]
pub struct ResponseStreamEncoder {
    id: Option<String>,
    model: String,
    created_at: u64,
    sequence: u64,
    started: bool,
    finished: bool,
    open: Option<OpenItem>,
    output: Vec<Item>,
    held: Vec<StreamEvent>,
    has_calls: bool,
    /// Whether the text is the model's refusal ([`StreamEvent::RefusalStart`]).
    refusing: bool,
    usage: Option<Usage>,
    freeform_tools: BTreeSet<String>,
    namespaced_tools: BTreeMap<String, (String, String)>,
    tool_search: bool,
    /// The summary written so far, when the request asked for a compaction
    /// ([`ServeOptions::compaction`]).
    compaction: Option<Summary>,
    /// Why the compaction failed, when it did ([`Self::take_failure`]).
    failure: Option<LlmError>,
    /// Whether the answer ended incomplete (max tokens, a content filter):
    /// the item still open then is closed `incomplete`.
    cut_off: bool,
    /// The usage of a compaction run before this answer
    /// ([`Self::compacted`]), added to the answer's.
    earlier_usage: Usage,
}

impl ResponseStreamEncoder {
    /// An encoder for an answer named `model` (the name the client asked
    /// for). `id` `None` takes the id of a leading [`StreamEvent::Start`],
    /// else a new `resp_…`.
    pub fn new(model: impl Into<String>, id: Option<String>) -> Self {
        Self {
            id,
            model: model.into(),
            created_at: unix_now(),
            sequence: 0,
            started: false,
            finished: false,
            open: None,
            output: Vec::new(),
            held: Vec::new(),
            has_calls: false,
            refusing: false,
            usage: None,
            freeform_tools: BTreeSet::new(),
            namespaced_tools: BTreeMap::new(),
            tool_search: false,
            compaction: None,
            failure: None,
            cut_off: false,
            earlier_usage: Usage::default(),
        }
    }

    /// Puts a compaction that was run before this answer (server-side
    /// compaction, [`ServeOptions::compact_threshold`]) first in the
    /// response: the item is announced and done at once, as OpenAI's
    /// stream does, and `usage`, the summary's, is added to the answer's in
    /// the final event. Call it before the answer's first event.
    pub fn compacted(&mut self, item: Item, usage: &Usage) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(None, &mut out);
        self.close(&mut out);
        self.whole_item(item, &mut out);
        self.earlier_usage.add(usage);
        out
    }

    /// Encodes the answer as one `compaction` item, when the request asked
    /// for a compaction ([`ServeOptions::compaction`]): the model's text is
    /// gathered as the summary (reasoning and tool calls are left out), and
    /// the item is announced and done together when the answer ends, after
    /// `response.in_progress` keepalives while the model writes, then
    /// `response.completed` (also for a summary cut at the length bound, as
    /// [`encode_compaction`]). A model that wrote no text gets
    /// `response.failed` instead.
    pub fn with_compaction(mut self, asked: bool) -> Self {
        self.compaction = asked.then(Summary::default);
        self
    }

    /// The error the encoder itself ended the stream with, once: a
    /// compaction without a summary, which the provider's stream does not
    /// know failed (the gateway records it in its ledger).
    pub fn take_failure(&mut self) -> Option<LlmError> {
        self.failure.take()
    }

    /// Encodes calls of `tool_search` as `tool_search_call` items, when the
    /// request offered Codex's ([`ServeOptions::tool_search`]).
    pub fn with_tool_search(mut self, offered: bool) -> Self {
        self.tool_search = offered;
        self
    }

    /// Encodes calls of these tools (the request's freeform tools,
    /// [`ServeOptions::freeform_tools`]) as `custom_tool_call` items.
    pub fn with_freeform_tools(mut self, names: BTreeSet<String>) -> Self {
        self.freeform_tools = names;
        self
    }

    /// Encodes calls of these functions (those of the request's `namespace`
    /// tools, [`ServeOptions::namespaced_tools`]) under their namespace and
    /// own name.
    pub fn with_namespaced_tools(mut self, names: BTreeMap<String, (String, String)>) -> Self {
        self.namespaced_tools = names;
        self
    }

    /// The response id (fixed once `response.created` is out).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn frame(&mut self, event: ResponseEvent) -> SseFrame {
        let event = ServerEvent {
            sequence_number: Some(self.sequence),
            event,
        };
        self.sequence += 1;
        let value = serde_json::to_value(&event).unwrap_or(Value::Null);
        let name = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_owned();
        SseFrame::named(name, value)
    }

    fn snapshot(&self, status: &str) -> ResponseSnapshot {
        ResponseSnapshot {
            response: ResponseObject {
                id: self.id.clone().unwrap_or_default(),
                object: "response".into(),
                created_at: Some(self.created_at.into()),
                status: Some(status.into()),
                model: self.model.clone(),
                output: self.output.clone(),
                error: None,
                incomplete_details: None,
                usage: None,
            },
        }
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
            .unwrap_or_else(|| generated_id("resp_"));
        self.id = Some(id);
        let created = ResponseEvent::Created(self.snapshot("in_progress"));
        out.push(self.frame(created));
        let in_progress = ResponseEvent::InProgress(self.snapshot("in_progress"));
        out.push(self.frame(in_progress));
    }

    fn output_index(&self) -> u32 {
        u32::try_from(self.output.len()).unwrap_or(u32::MAX)
    }

    fn added(&mut self, item: Item, out: &mut Vec<SseFrame>) {
        let event = ResponseEvent::OutputItemAdded(ItemEvent {
            output_index: self.output_index(),
            item,
        });
        out.push(self.frame(event));
    }

    /// Closes the open item, with `encrypted` as a reasoning item's
    /// encrypted content and `reasoning_id` its id.
    fn close_with(
        &mut self,
        encrypted: Option<String>,
        reasoning_id: Option<String>,
        out: &mut Vec<SseFrame>,
    ) {
        let Some(open) = self.open.take() else {
            return;
        };
        // An item the answer's end cut off is incomplete, as OpenAI marks
        // it; any other is closed complete.
        let status = if self.cut_off {
            "incomplete"
        } else {
            "completed"
        };
        let output_index = self.output_index();
        let item = match open {
            OpenItem::Message { id, text, refusal } => {
                let done = if refusal {
                    ResponseEvent::RefusalDone(RefusalDoneEvent {
                        item_id: id.clone(),
                        output_index,
                        content_index: 0,
                        refusal: text.clone(),
                    })
                } else {
                    ResponseEvent::OutputTextDone(TextDoneEvent {
                        item_id: id.clone(),
                        output_index,
                        content_index: Some(0),
                        summary_index: None,
                        logprobs: Some(Vec::new()),
                        text: text.clone(),
                    })
                };
                out.push(self.frame(done));
                let part = ResponseEvent::ContentPartDone(PartEvent {
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    part: message_part(text.clone(), refusal),
                });
                out.push(self.frame(part));
                message_item(id, &text, refusal, status)
            }
            OpenItem::Reasoning { id, text } => {
                if !text.is_empty() {
                    let done = ResponseEvent::ReasoningSummaryTextDone(TextDoneEvent {
                        item_id: id.clone(),
                        output_index,
                        content_index: None,
                        summary_index: Some(0),
                        logprobs: None,
                        text: text.clone(),
                    });
                    out.push(self.frame(done));
                    let part = ResponseEvent::ReasoningSummaryPartDone(SummaryPartEvent {
                        item_id: id.clone(),
                        output_index,
                        summary_index: 0,
                        part: TextPart::summary(text.clone()),
                    });
                    out.push(self.frame(part));
                }
                reasoning_item(reasoning_id.unwrap_or(id), &text, encrypted)
            }
            OpenItem::Call {
                id,
                call,
                kind: CallKind::ToolSearch,
                ..
            } => {
                // Announced only now, whole.
                self.added(tool_search_item(id.clone(), &call, "in_progress"), out);
                tool_search_item(id, &call, status)
            }
            OpenItem::Call {
                id,
                call,
                kind: CallKind::Freeform,
                ..
            } => {
                let input = freeform_input(&call.arguments);
                if !input.is_empty() {
                    let delta = ResponseEvent::CustomToolCallInputDelta(DeltaEvent {
                        item_id: id.clone(),
                        output_index,
                        content_index: None,
                        summary_index: None,
                        logprobs: None,
                        delta: input.clone(),
                    });
                    out.push(self.frame(delta));
                }
                let done = ResponseEvent::CustomToolCallInputDone(InputDoneEvent {
                    item_id: id.clone(),
                    output_index,
                    input: input.clone(),
                });
                out.push(self.frame(done));
                custom_call_item(id, &call, input, status, &self.namespaced_tools)
            }
            OpenItem::Call { id, call, .. } => {
                let done = ResponseEvent::FunctionCallArgumentsDone(ArgumentsDoneEvent {
                    item_id: id.clone(),
                    output_index,
                    arguments: call.arguments.clone(),
                });
                out.push(self.frame(done));
                call_item(id, &call, status, &self.namespaced_tools)
            }
        };
        let done = ResponseEvent::OutputItemDone(ItemEvent {
            output_index,
            item: item.clone(),
        });
        out.push(self.frame(done));
        self.output.push(item);
    }

    fn close(&mut self, out: &mut Vec<SseFrame>) {
        self.close_with(None, None, out);
    }

    /// Closes the open reasoning item when `id` names another of the
    /// provider's items: each keeps its own id from first event to last.
    fn close_other_reasoning(&mut self, id: Option<&str>, out: &mut Vec<SseFrame>) {
        if let (Some(OpenItem::Reasoning { id: open, .. }), Some(id)) = (&self.open, id)
            && open != id
        {
            self.close(out);
        }
    }

    /// The open reasoning item's id, opening one (named `upstream_id`, the
    /// provider's id, when it gave one) if none is open.
    fn open_reasoning(&mut self, upstream_id: Option<&str>, out: &mut Vec<SseFrame>) -> String {
        if let Some(OpenItem::Reasoning { id, .. }) = &self.open {
            return id.clone();
        }
        self.close(out);
        let id = upstream_id.map_or_else(|| generated_id("rs_"), str::to_owned);
        self.added(reasoning_item(id.clone(), "", None), out);
        self.open = Some(OpenItem::Reasoning {
            id: id.clone(),
            text: String::new(),
        });
        id
    }

    /// The frames for one event (none after the answer finished).
    pub fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if self.compaction.is_some() {
            return self.push_compacting(event);
        }
        if let Some(OpenItem::Call { index: open, .. }) = &self.open {
            let belongs = match event {
                StreamEvent::ToolCallArgsDelta { index, .. }
                | StreamEvent::ToolCallEnd { index, .. } => index == open,
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
                let id = match &self.open {
                    Some(OpenItem::Message { id, .. }) => id.clone(),
                    _ => {
                        self.close(&mut out);
                        let id = generated_id("msg_");
                        self.added(message_item(id.clone(), "", false, "in_progress"), &mut out);
                        let part = ResponseEvent::ContentPartAdded(PartEvent {
                            item_id: id.clone(),
                            output_index: self.output_index(),
                            content_index: 0,
                            part: message_part(String::new(), self.refusing),
                        });
                        out.push(self.frame(part));
                        self.open = Some(OpenItem::Message {
                            id: id.clone(),
                            text: String::new(),
                            refusal: self.refusing,
                        });
                        id
                    }
                };
                if let Some(OpenItem::Message { text: all, .. }) = &mut self.open {
                    all.push_str(text);
                }
                let delta = DeltaEvent {
                    item_id: id,
                    output_index: self.output_index(),
                    content_index: Some(0),
                    summary_index: None,
                    // No log probabilities are served; text events carry
                    // the empty list OpenAI's do (the SDK's types want it).
                    logprobs: (!self.refusing).then(Vec::new),
                    delta: text.clone(),
                };
                let delta = if self.refusing {
                    ResponseEvent::RefusalDelta(delta)
                } else {
                    ResponseEvent::OutputTextDelta(delta)
                };
                out.push(self.frame(delta));
            }
            // The refusal's text goes in a message of its own.
            StreamEvent::RefusalStart => {
                if matches!(self.open, Some(OpenItem::Message { refusal: false, .. })) {
                    self.close(&mut out);
                }
                self.refusing = true;
            }
            StreamEvent::ReasoningDelta { text, id } => {
                self.start(None, &mut out);
                self.close_other_reasoning(id.as_deref(), &mut out);
                let fresh = !matches!(self.open, Some(OpenItem::Reasoning { .. }));
                let id = self.open_reasoning(id.as_deref(), &mut out);
                if fresh {
                    let part = ResponseEvent::ReasoningSummaryPartAdded(SummaryPartEvent {
                        item_id: id.clone(),
                        output_index: self.output_index(),
                        summary_index: 0,
                        part: TextPart::summary(""),
                    });
                    out.push(self.frame(part));
                }
                if let Some(OpenItem::Reasoning { text: all, .. }) = &mut self.open {
                    all.push_str(text);
                }
                let delta = ResponseEvent::ReasoningSummaryTextDelta(DeltaEvent {
                    item_id: id,
                    output_index: self.output_index(),
                    content_index: None,
                    summary_index: Some(0),
                    logprobs: None,
                    delta: text.clone(),
                });
                out.push(self.frame(delta));
            }
            StreamEvent::ReasoningSignature {
                signature,
                redacted,
                id,
                origin,
            } => {
                self.start(None, &mut out);
                self.close_other_reasoning(id.as_deref(), &mut out);
                self.open_reasoning(id.as_deref(), &mut out);
                self.close_with(
                    Some(encrypted_content(signature, *redacted, origin.as_deref())),
                    id.clone(),
                    &mut out,
                );
            }
            StreamEvent::ToolCallStart {
                index,
                id,
                name,
                signature,
            } => {
                self.start(None, &mut out);
                self.close(&mut out);
                self.has_calls = true;
                let kind = if self.tool_search && name == TOOL_SEARCH {
                    CallKind::ToolSearch
                } else if self.freeform_tools.contains(name) {
                    CallKind::Freeform
                } else {
                    CallKind::Function
                };
                let call = ToolCall {
                    signature: signature.clone(),
                    ..ToolCall::new(id.clone(), name.clone(), "")
                };
                let item_id = match kind {
                    CallKind::ToolSearch => generated_id("tsc_"),
                    CallKind::Freeform => {
                        let item_id = generated_id("ctc_");
                        let item = custom_call_item(
                            item_id.clone(),
                            &call,
                            String::new(),
                            "in_progress",
                            &self.namespaced_tools,
                        );
                        self.added(item, &mut out);
                        item_id
                    }
                    CallKind::Function => {
                        let item_id = generated_id("fc_");
                        let item = call_item(
                            item_id.clone(),
                            &call,
                            "in_progress",
                            &self.namespaced_tools,
                        );
                        self.added(item, &mut out);
                        item_id
                    }
                };
                self.open = Some(OpenItem::Call {
                    index: *index,
                    id: item_id,
                    call,
                    kind,
                });
            }
            StreamEvent::ToolCallArgsDelta { index, delta } => {
                let output_index = self.output_index();
                match &mut self.open {
                    Some(OpenItem::Call {
                        index: open,
                        kind: CallKind::Freeform | CallKind::ToolSearch,
                        call,
                        ..
                    }) if open == index => call.arguments.push_str(delta),
                    Some(OpenItem::Call {
                        index: open,
                        id,
                        call,
                        kind: CallKind::Function,
                    }) if open == index => {
                        call.arguments.push_str(delta);
                        let event = ResponseEvent::FunctionCallArgumentsDelta(DeltaEvent {
                            item_id: id.clone(),
                            output_index,
                            content_index: None,
                            summary_index: None,
                            logprobs: None,
                            delta: delta.clone(),
                        });
                        out.push(self.frame(event));
                    }
                    _ => {
                        tracing::warn!(index, "tool call arguments after the call ended; dropped")
                    }
                }
            }
            StreamEvent::ToolCallEnd { index, .. } => {
                if matches!(&self.open, Some(OpenItem::Call { index: open, .. }) if open == index) {
                    self.close(&mut out);
                    out.extend(self.replay());
                }
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Timings(_)
            | StreamEvent::UsageSoFar(_)
            | StreamEvent::ContextEdited { .. }
            | StreamEvent::RefusalDetails(_) => {}
            StreamEvent::Stop { reason } => {
                out.extend(self.drain());
                if !self.finished {
                    out.extend(self.end(reason));
                }
            }
        }
        out
    }

    /// [`Self::push`] for a compaction: text is the summary, the rest of
    /// the answer (reasoning, calls) is not kept.
    fn push_compacting(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
        let mut out = Vec::new();
        match event {
            StreamEvent::Start { id, .. } => self.start(id.as_ref(), &mut out),
            StreamEvent::TextDelta { text } => {
                if let Some(summary) = &mut self.compaction {
                    summary.push(text);
                }
            }
            StreamEvent::Usage(usage) => self.usage = Some(*usage),
            StreamEvent::Stop { reason } => out.extend(self.end_compaction(reason)),
            StreamEvent::Timings(_)
            | StreamEvent::UsageSoFar(_)
            | StreamEvent::ContextEdited { .. }
            | StreamEvent::RefusalDetails(_) => {}
            // Reasoning, a call or a refusal's start part the text.
            _ => {
                if let Some(summary) = &mut self.compaction {
                    summary.part();
                }
            }
        }
        out
    }

    /// The compaction's item, then the response's end.
    fn end_compaction(&mut self, reason: &StopReason) -> Vec<SseFrame> {
        let summary = self
            .compaction
            .as_mut()
            .map(Summary::take)
            .unwrap_or_default();
        let item = match compaction::item_for(summary, reason) {
            Ok(item) => item,
            Err(error) => {
                let out = self.error(&error);
                self.failure = Some(error);
                return out;
            }
        };
        let mut out = Vec::new();
        self.start(None, &mut out);
        self.whole_item(item, &mut out);
        out.extend(self.end(&StopReason::EndTurn));
        out
    }

    /// An item announced and done at once, whole (a compaction): clients
    /// (Codex) read the announced item too.
    fn whole_item(&mut self, item: Item, out: &mut Vec<SseFrame>) {
        self.added(item.clone(), out);
        let done = ResponseEvent::OutputItemDone(ItemEvent {
            output_index: self.output_index(),
            item: item.clone(),
        });
        out.push(self.frame(done));
        self.output.push(item);
    }

    fn replay(&mut self) -> Vec<SseFrame> {
        let held = std::mem::take(&mut self.held);
        held.iter().flat_map(|event| self.push(event)).collect()
    }

    /// Closes an open tool call and replays what it held back, until
    /// nothing is held.
    fn drain(&mut self) -> Vec<SseFrame> {
        let mut out = Vec::new();
        while !self.finished {
            if matches!(self.open, Some(OpenItem::Call { .. })) {
                self.close(&mut out);
            }
            if self.held.is_empty() {
                break;
            }
            out.extend(self.replay());
        }
        out
    }

    fn end(&mut self, reason: &StopReason) -> Vec<SseFrame> {
        let mut out = Vec::new();
        self.start(None, &mut out);
        let (status, incomplete_details) = final_status(reason);
        self.cut_off = status == "incomplete";
        self.close(&mut out);
        self.finished = true;
        let mut snapshot = self.snapshot(status);
        snapshot.response.incomplete_details = incomplete_details;
        let mut usage = self.usage.unwrap_or_default();
        usage.add(&self.earlier_usage);
        snapshot.response.usage = Some(ResponseUsage::from(&usage));
        let event = if status == "incomplete" {
            ResponseEvent::Incomplete(snapshot)
        } else {
            ResponseEvent::Completed(snapshot)
        };
        out.push(self.frame(event));
        out
    }

    /// Ends the stream if no [`StreamEvent::Stop`] did (closing an open
    /// call and replaying what it held back), with `response.completed`;
    /// nothing when the stream already ended.
    pub fn finish(&mut self) -> Vec<SseFrame> {
        if self.compaction.is_some() && !self.finished {
            return self.end_compaction(&StopReason::EndTurn);
        }
        let mut out = self.drain();
        if !self.finished {
            out.extend(self.end(&StopReason::EndTurn));
        }
        out
    }

    /// What keeps a client waiting while the provider sends nothing (a
    /// local model reading a long prompt): `response.created` and
    /// `response.in_progress` if the answer has not begun, else another
    /// `response.in_progress` (its `output` holding the items finished so
    /// far, not the one open); nothing once the answer ended. Codex gives up on a stream without events for 5
    /// minutes and does not count SSE comments. OpenAI's own `keepalive`
    /// event is not used: SDKs from before mid-2026 (openai-node before
    /// 6.46, openai-php) fail the whole stream on it, while every client
    /// knows `response.in_progress`.
    pub fn keepalive(&mut self) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if self.started {
            let in_progress = ResponseEvent::InProgress(self.snapshot("in_progress"));
            out.push(self.frame(in_progress));
        } else {
            self.start(None, &mut out);
        }
        out
    }

    /// The `response.failed` event reporting an error after the stream
    /// began, its `error` holding OpenAI's code (`context_length_exceeded`,
    /// `rate_limit_exceeded`…) and message (see [`encode_error`]). The
    /// encoder emits nothing more afterwards.
    pub fn error(&mut self, error: &LlmError) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(None, &mut out);
        self.finished = true;
        let (_, kind, code) = openai_error_parts(error);
        let mut snapshot = self.snapshot("failed");
        snapshot.response.error = Some(ResponseError {
            code: Some(code.unwrap_or(kind).to_owned()),
            message: Some(openai_error_message(error)),
            kind: Some(kind.to_owned()),
            param: None,
        });
        let event = ResponseEvent::Failed(snapshot);
        out.push(self.frame(event));
        out
    }
}

/// Encodes an error as an HTTP status and OpenAI's error body, exactly as
/// [`openai_chat::encode_error`] (the Responses API shares it).
pub fn encode_error(error: &LlmError) -> (u16, ErrorBody) {
    openai_chat::encode_error(error)
}
