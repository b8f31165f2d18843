//! Anthropic's context editing (`context_management.edits`), made by
//! Freehold for providers that do not make it themselves.
//!
//! A Messages client can ask for old tool results and old thinking to be
//! cleared from the conversation before the model reads it, while the
//! client keeps the whole history. Anthropic's API does it on its side; for
//! every other provider (the embedded engine, OpenAI-compatible servers…)
//! the router does it here, with the same settings and defaults, and
//! reports what it cleared the way Anthropic does
//! ([`AppliedContextEdit`]).
//!
//! - `clear_tool_uses_20250919`: once the conversation is past its trigger
//!   (100,000 input tokens unless told otherwise, or a number of tool
//!   uses), every tool result but the last `keep` (3) is replaced by a
//!   short note, and the call's input too where `clear_tool_inputs` says
//!   so. Tools named in `exclude_tools` are left alone and not counted.
//!   With `clear_at_least`, nothing is cleared unless that many tokens
//!   would be.
//! - `clear_thinking_20251015`: the reasoning of all but the last `keep`
//!   assistant messages that have some (1 unless told otherwise; `"all"`
//!   keeps every one) is taken out.
//! - `compact_20260112` (a summary of the conversation, made before the
//!   answer once the conversation reaches a trigger) is parsed here
//!   ([`ContextEdits::compaction`]) and made by the gateway, for every
//!   provider: it takes the edit out of what it sends
//!   ([`without_compaction`]), so the router never sees one.
//! - An edit of a kind this version does not know passes the parse, for
//!   Anthropic's API to make, and is refused when it would have to be made
//!   here.
//!
//! This module parses, plans and applies; it does not count tokens. The
//! caller gives the conversation's input tokens when a trigger needs them
//! ([`ContextEdits::needs_input_tokens`]); what an edit clears is
//! estimated at four bytes a token.

use std::collections::BTreeSet;

use freehold_protocol::{AppliedContextEdit, ChatRequest, ContentPart, Role};
use serde::Deserialize;
use serde_json::Value;

/// The note a cleared tool result is replaced by.
pub const CLEARED_RESULT: &str =
    "[This tool result was cleared to save context. Call the tool again if you need it.]";

/// What a cleared tool call's input becomes.
const CLEARED_INPUT: &str = "{}";

/// `clear_tool_uses_20250919`'s trigger when none is given, in input tokens.
pub const DEFAULT_TRIGGER_INPUT_TOKENS: u64 = 100_000;

/// The tool uses `clear_tool_uses_20250919` keeps when not told.
pub const DEFAULT_KEEP_TOOL_USES: u64 = 3;

/// The assistant messages whose thinking `clear_thinking_20251015` keeps
/// when not told.
pub const DEFAULT_KEEP_THINKING_TURNS: u64 = 1;

/// `compact_20260112`'s trigger when none is given, in input tokens.
pub const DEFAULT_COMPACT_TRIGGER_INPUT_TOKENS: u64 = 150_000;

/// The strategy names, as the API spells them.
const CLEAR_TOOL_USES: &str = "clear_tool_uses_20250919";
const CLEAR_THINKING: &str = "clear_thinking_20251015";
const COMPACT: &str = "compact_20260112";

/// A `context_management` object, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEdits {
    edits: Vec<Edit>,
}

/// One edit of `context_management.edits`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Edit {
    ClearToolUses(ClearToolUses),
    ClearThinking {
        /// `None`: keep every assistant message's thinking.
        keep_turns: Option<u64>,
    },
    /// A server-side compaction, which the gateway makes before the
    /// request reaches a provider; never applied here.
    Compact(CompactEdit),
    /// A kind this version does not know, by its `type`: Anthropic's API
    /// may make it; nothing here can.
    Unknown(String),
}

/// `compact_20260112`, parsed: when to compact the conversation, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactEdit {
    /// The conversation's input tokens at which it is compacted
    /// (`trigger.value`; [`DEFAULT_COMPACT_TRIGGER_INPUT_TOKENS`] when not
    /// given).
    pub trigger_input_tokens: u64,
    /// Answer with the compaction alone (`stop_reason: "compaction"`),
    /// rather than go on to answer from it.
    pub pause_after_compaction: bool,
    /// What the model is also asked to write its summary by.
    pub instructions: Option<String>,
    /// The instructions replace the default summary's prompt, rather than
    /// follow it (the `compaction` request parameter's; the edit's follow
    /// it, "additional instructions" in the SDK's words).
    pub instructions_replace_prompt: bool,
}

/// `compact_20260112` as the API takes it.
#[derive(Deserialize)]
struct WireCompact {
    #[serde(default)]
    trigger: Option<WireCount>,
    #[serde(default)]
    pause_after_compaction: Option<bool>,
    #[serde(default)]
    instructions: Option<String>,
}

/// The fields of `compact_20260112` beside its `type`.
const COMPACT_FIELDS: &[&str] = &["trigger", "pause_after_compaction", "instructions"];

/// Takes every `compact_20260112` edit out of a `context_management`
/// object (as sent, already parsed by [`ContextEdits::parse`]), so that
/// what is left can go to a provider: the gateway makes the compaction
/// itself. `None` when nothing is left to edit.
pub fn without_compaction(mut asked: Value) -> Option<Value> {
    if let Some(Value::Array(edits)) = asked.get_mut("edits") {
        edits.retain(|edit| edit.get("type").and_then(Value::as_str) != Some(COMPACT));
        if edits.is_empty() {
            return None;
        }
    }
    Some(asked)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClearToolUses {
    trigger: Trigger,
    keep: u64,
    clear_at_least: u64,
    exclude_tools: BTreeSet<String>,
    clear_inputs: ClearInputs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    InputTokens(u64),
    ToolUses(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClearInputs {
    None,
    All,
    Of(BTreeSet<String>),
}

/// A `context_management` that cannot be parsed or applied: `field` is the
/// path of the value at fault, from `context_management` down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ContextEditError {
    /// Where, from `context_management` down (`context_management.edits[1].keep`).
    pub field: String,
    /// What is wrong, and how to put it right.
    pub message: String,
}

impl ContextEditError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `clear_tool_uses_20250919` as the API takes it. Each kind is read on
/// its own, from the parsed value in place (a `#[serde(tag = "type")]` enum
/// would copy it into an intermediate tree first); the API refuses fields
/// it does not know, and so does [`parse_edit`].
#[derive(Deserialize)]
struct WireClearToolUses {
    #[serde(default)]
    trigger: Option<WireCount>,
    #[serde(default)]
    keep: Option<WireCount>,
    #[serde(default)]
    clear_at_least: Option<WireCount>,
    #[serde(default)]
    exclude_tools: Option<Vec<String>>,
    #[serde(default)]
    clear_tool_inputs: Option<WireClearInputs>,
}

/// The fields of `clear_tool_uses_20250919` beside its `type`.
const CLEAR_TOOL_USES_FIELDS: &[&str] = &[
    "trigger",
    "keep",
    "clear_at_least",
    "exclude_tools",
    "clear_tool_inputs",
];

/// `clear_thinking_20251015` as the API takes it.
#[derive(Deserialize)]
struct WireClearThinking {
    #[serde(default)]
    keep: Option<WireThinkingKeep>,
}

/// The fields of `clear_thinking_20251015` beside its `type`.
const CLEAR_THINKING_FIELDS: &[&str] = &["keep"];

/// `{"type": "input_tokens" | "tool_uses", "value": N}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCount {
    #[serde(rename = "type")]
    kind: String,
    value: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireClearInputs {
    All(bool),
    Of(Vec<String>),
}

/// `"all"`, `{"type": "all"}` or `{"type": "thinking_turns", "value": N}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireThinkingKeep {
    Name(String),
    Count(WireThinkingCount),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireThinkingCount {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<u64>,
}

impl ContextEdits {
    /// Parses a `context_management` object as the Messages API takes it.
    ///
    /// # Errors
    /// The first value that is not what the API takes, named by its path,
    /// and a second `compact_20260112`.
    pub fn parse(value: &Value) -> Result<Self, ContextEditError> {
        let object = value.as_object().ok_or_else(|| {
            ContextEditError::new(
                "context_management",
                "expected an object such as {\"edits\": [{\"type\": \"clear_tool_uses_20250919\"}]}",
            )
        })?;
        if let Some(name) = object.keys().find(|name| name.as_str() != "edits") {
            return Err(ContextEditError::new(
                format!("context_management.{name}"),
                "unknown field (expected only `edits`)",
            ));
        }
        let edits = match object.get("edits") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(edits)) => edits
                .iter()
                .enumerate()
                .map(|(index, edit)| parse_edit(index, edit))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(ContextEditError::new(
                    "context_management.edits",
                    "expected an array of edits",
                ));
            }
        };
        if let Some(second) = edits
            .iter()
            .enumerate()
            .filter(|(_, edit)| matches!(edit, Edit::Compact(_)))
            .nth(1)
        {
            return Err(ContextEditError::new(
                format!("context_management.edits[{}]", second.0),
                format!("a second `{COMPACT}` edit: give one"),
            ));
        }
        Ok(Self { edits })
    }

    /// The server-side compaction asked for (`compact_20260112`), if any.
    pub fn compaction(&self) -> Option<&CompactEdit> {
        self.edits.iter().find_map(|edit| match edit {
            Edit::Compact(compact) => Some(compact),
            _ => None,
        })
    }

    /// Whether applying the edits to `request` needs its input tokens: a
    /// tool-use edit triggered by them that would clear something once
    /// triggered (so that a conversation with nothing to clear is not
    /// counted).
    pub fn needs_input_tokens(&self, request: &ChatRequest) -> bool {
        self.edits.iter().any(|edit| match edit {
            Edit::ClearToolUses(settings) => {
                matches!(settings.trigger, Trigger::InputTokens(_))
                    && settings.plan(request, u64::MAX).is_some()
            }
            Edit::ClearThinking { .. } | Edit::Compact(_) | Edit::Unknown(_) => false,
        })
    }

    /// The input tokens the edits would take out of `request`, estimated,
    /// without making them: for sizing a request (a budget's hold, a
    /// count) before it is sent. `input_tokens` is the request's size, for
    /// the triggers.
    pub fn estimated_savings(&self, request: &ChatRequest, input_tokens: u64) -> u64 {
        let mut saved = 0u64;
        for edit in &self.edits {
            saved += match edit {
                Edit::ClearToolUses(settings) => settings
                    .plan(request, input_tokens.saturating_sub(saved))
                    .map_or(0, |plan| plan.saved),
                Edit::ClearThinking { keep_turns } => {
                    thinking_plan(request, *keep_turns).map_or(0, |plan| plan.saved)
                }
                Edit::Compact(_) | Edit::Unknown(_) => 0,
            };
        }
        saved
    }

    /// Makes the edits on `request`'s conversation, in order, and says what
    /// each that cleared something cleared. `input_tokens` is the
    /// conversation's size before the edits, when
    /// [`Self::needs_input_tokens`]; an earlier edit's clearing counts
    /// against it for the edits after.
    ///
    /// # Errors
    /// An edit of a kind this version does not know, which only Anthropic's
    /// API can make.
    pub fn apply(
        &self,
        request: &mut ChatRequest,
        input_tokens: u64,
    ) -> Result<Vec<AppliedContextEdit>, ContextEditError> {
        if let Some((index, kind)) =
            self.edits
                .iter()
                .enumerate()
                .find_map(|(index, edit)| match edit {
                    Edit::Unknown(kind) => Some((index, kind.as_str())),
                    // The gateway takes it out before a request is sent.
                    Edit::Compact(_) => Some((index, COMPACT)),
                    _ => None,
                })
        {
            return Err(ContextEditError::new(
                format!("context_management.edits[{index}].type"),
                format!(
                    "`{kind}` is not an edit Freehold can make (it makes `{CLEAR_TOOL_USES}` and \
                     `{CLEAR_THINKING}`), and this model's provider is not Anthropic's API, which \
                     could; leave it out, or route the model to Anthropic"
                ),
            ));
        }
        let mut applied = Vec::new();
        let mut input_tokens = input_tokens;
        for edit in &self.edits {
            let done = match edit {
                Edit::ClearToolUses(settings) => settings
                    .plan(request, input_tokens)
                    .map(|plan| plan.apply(request)),
                Edit::ClearThinking { keep_turns } => {
                    thinking_plan(request, *keep_turns).map(|plan| plan.apply(request))
                }
                Edit::Compact(_) | Edit::Unknown(_) => None,
            };
            if let Some(done) = done {
                input_tokens = input_tokens.saturating_sub(done.cleared_input_tokens);
                applied.push(done);
            }
        }
        Ok(applied)
    }
}

fn parse_edit(index: usize, edit: &Value) -> Result<Edit, ContextEditError> {
    // Built only for an error: Claude Code sends an edit with every request.
    let field = || format!("context_management.edits[{index}]");
    let kind = edit
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ContextEditError::new(field(), "expected an object with a `type`"))?;
    let wrong = |error: serde_json::Error| ContextEditError::new(field(), error.to_string());
    match kind {
        CLEAR_TOOL_USES => {
            only_fields(edit, CLEAR_TOOL_USES_FIELDS)
                .map_err(|message| ContextEditError::new(field(), message))?;
            let wire = WireClearToolUses::deserialize(edit).map_err(wrong)?;
            parse_clear_tool_uses(wire, index).map(Edit::ClearToolUses)
        }
        CLEAR_THINKING => {
            only_fields(edit, CLEAR_THINKING_FIELDS)
                .map_err(|message| ContextEditError::new(field(), message))?;
            let WireClearThinking { keep } = WireClearThinking::deserialize(edit).map_err(wrong)?;
            let keep_turns = match keep {
                None => Some(DEFAULT_KEEP_THINKING_TURNS),
                Some(WireThinkingKeep::Name(name)) if name == "all" => None,
                Some(WireThinkingKeep::Count(count)) if count.kind == "all" => None,
                Some(WireThinkingKeep::Count(WireThinkingCount {
                    kind,
                    value: Some(value),
                })) if kind == "thinking_turns" && value >= 1 => Some(value),
                Some(_) => {
                    return Err(ContextEditError::new(
                        format!("{}.keep", field()),
                        "expected \"all\", {\"type\": \"all\"} or {\"type\": \"thinking_turns\", \
                         \"value\": N} with N at least 1",
                    ));
                }
            };
            Ok(Edit::ClearThinking { keep_turns })
        }
        COMPACT => {
            only_fields(edit, COMPACT_FIELDS)
                .map_err(|message| ContextEditError::new(field(), message))?;
            let wire = WireCompact::deserialize(edit).map_err(wrong)?;
            let trigger_input_tokens = match wire.trigger {
                None => DEFAULT_COMPACT_TRIGGER_INPUT_TOKENS,
                Some(count) if count.kind != "input_tokens" => {
                    return Err(wrong_count(index, "trigger", &count.kind, "input_tokens"));
                }
                Some(count) if count.value == 0 => {
                    return Err(ContextEditError::new(
                        format!("{}.trigger.value", field()),
                        "expected a number of input tokens of at least 1",
                    ));
                }
                Some(count) => count.value,
            };
            Ok(Edit::Compact(CompactEdit {
                trigger_input_tokens,
                pause_after_compaction: wire.pause_after_compaction.unwrap_or(false),
                instructions: wire
                    .instructions
                    .filter(|instructions| !instructions.trim().is_empty()),
                instructions_replace_prompt: false,
            }))
        }
        other => Ok(Edit::Unknown(other.to_owned())),
    }
}

/// Refuses a field of `edit` other than its `type` and `fields`, as the
/// API does, in serde's words.
fn only_fields(edit: &Value, fields: &[&str]) -> Result<(), String> {
    let Some(object) = edit.as_object() else {
        return Ok(());
    };
    match object
        .keys()
        .find(|name| name.as_str() != "type" && !fields.contains(&name.as_str()))
    {
        None => Ok(()),
        Some(name) => {
            let expected = fields
                .iter()
                .map(|field| format!("`{field}`"))
                .collect::<Vec<_>>();
            let expected = match expected.as_slice() {
                [one] => format!("expected {one}"),
                many => format!("expected one of {}", many.join(", ")),
            };
            Err(format!("unknown field `{name}`, {expected}"))
        }
    }
}

/// A `clear_tool_uses_20250919` edit's settings, with the API's defaults;
/// `index` is the edit's place, for errors.
fn parse_clear_tool_uses(
    wire: WireClearToolUses,
    index: usize,
) -> Result<ClearToolUses, ContextEditError> {
    let WireClearToolUses {
        trigger,
        keep,
        clear_at_least,
        exclude_tools,
        clear_tool_inputs,
    } = wire;
    let trigger = match trigger {
        None => Trigger::InputTokens(DEFAULT_TRIGGER_INPUT_TOKENS),
        Some(count) => match count.kind.as_str() {
            "input_tokens" => Trigger::InputTokens(count.value),
            "tool_uses" => Trigger::ToolUses(count.value),
            other => {
                return Err(wrong_count(
                    index,
                    "trigger",
                    other,
                    "input_tokens` or `tool_uses",
                ));
            }
        },
    };
    let keep = match keep {
        None => DEFAULT_KEEP_TOOL_USES,
        Some(count) if count.kind == "tool_uses" => count.value,
        Some(count) => return Err(wrong_count(index, "keep", &count.kind, "tool_uses")),
    };
    let clear_at_least = match clear_at_least {
        None => 0,
        Some(count) if count.kind == "input_tokens" => count.value,
        Some(count) => {
            return Err(wrong_count(
                index,
                "clear_at_least",
                &count.kind,
                "input_tokens",
            ));
        }
    };
    let clear_inputs = match clear_tool_inputs {
        None | Some(WireClearInputs::All(false)) => ClearInputs::None,
        Some(WireClearInputs::All(true)) => ClearInputs::All,
        Some(WireClearInputs::Of(names)) => ClearInputs::Of(names.into_iter().collect()),
    };
    Ok(ClearToolUses {
        trigger,
        keep,
        clear_at_least,
        exclude_tools: exclude_tools.unwrap_or_default().into_iter().collect(),
        clear_inputs,
    })
}

fn wrong_count(index: usize, name: &str, kind: &str, expected: &str) -> ContextEditError {
    ContextEditError::new(
        format!("context_management.edits[{index}].{name}.type"),
        format!("`{kind}` is not a kind of count here (expected `{expected}`)"),
    )
}

/// The tokens `text` is estimated to take: four bytes each.
fn estimated_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// A part of a message: (message, part) indexes.
type At = (usize, usize);

/// One tool call of the conversation: where it is, and where its result is.
struct ToolUse {
    name: String,
    call: At,
    /// Where its result is, when the conversation has it.
    result: Option<At>,
}

/// The conversation's tool calls in order, each with its result.
fn tool_uses(request: &ChatRequest) -> Vec<ToolUse> {
    let mut uses: Vec<ToolUse> = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for (message_index, message) in request.messages.iter().enumerate() {
        for (part_index, part) in message.content.iter().enumerate() {
            match part {
                ContentPart::ToolCall(call) if message.role == Role::Assistant => {
                    by_id.insert(call.id.as_str(), uses.len());
                    uses.push(ToolUse {
                        name: call.name.clone(),
                        call: (message_index, part_index),
                        result: None,
                    });
                }
                ContentPart::ToolResult(result) => {
                    if let Some(&position) = by_id.get(result.call_id.as_str()) {
                        uses[position].result = Some((message_index, part_index));
                    }
                }
                _ => {}
            }
        }
    }
    uses
}

/// What a tool-use edit would clear.
struct ToolUsesPlan {
    /// The results to replace by the note.
    results: Vec<At>,
    /// The calls whose input becomes `{}`.
    inputs: Vec<At>,
    /// The tool uses with something cleared.
    uses: u64,
    saved: u64,
}

impl ClearToolUses {
    /// What the edit would clear of `request` (`input_tokens` long): `None`
    /// when it is not triggered, or would clear nothing, or less than
    /// `clear_at_least`. A result or an input already cleared (by an
    /// earlier edit, or in the client's own history) is not cleared again.
    fn plan(&self, request: &ChatRequest, input_tokens: u64) -> Option<ToolUsesPlan> {
        let uses = tool_uses(request);
        let triggered = match self.trigger {
            Trigger::InputTokens(limit) => input_tokens > limit,
            Trigger::ToolUses(limit) => uses.len() as u64 > limit,
        };
        if !triggered {
            return None;
        }
        let clearable: Vec<&ToolUse> = uses
            .iter()
            .filter(|tool_use| !self.exclude_tools.contains(&tool_use.name))
            .collect();
        let keep = usize::try_from(self.keep).unwrap_or(usize::MAX);
        let mut plan = ToolUsesPlan {
            results: Vec::new(),
            inputs: Vec::new(),
            uses: 0,
            saved: 0,
        };
        for tool_use in &clearable[..clearable.len().saturating_sub(keep)] {
            let mut cleared = false;
            if let Some(at) = tool_use.result
                && let ContentPart::ToolResult(result) = &request.messages[at.0].content[at.1]
                && result.content != CLEARED_RESULT
            {
                plan.saved += estimated_tokens(&result.content)
                    .saturating_sub(estimated_tokens(CLEARED_RESULT));
                plan.results.push(at);
                cleared = true;
            }
            let clear_input = match &self.clear_inputs {
                ClearInputs::None => false,
                ClearInputs::All => true,
                ClearInputs::Of(names) => names.contains(&tool_use.name),
            };
            if clear_input
                && let ContentPart::ToolCall(call) =
                    &request.messages[tool_use.call.0].content[tool_use.call.1]
                && call.arguments != CLEARED_INPUT
            {
                plan.saved += estimated_tokens(&call.arguments)
                    .saturating_sub(estimated_tokens(CLEARED_INPUT));
                plan.inputs.push(tool_use.call);
                cleared = true;
            }
            plan.uses += u64::from(cleared);
        }
        (plan.uses > 0 && plan.saved >= self.clear_at_least).then_some(plan)
    }
}

impl ToolUsesPlan {
    fn apply(self, request: &mut ChatRequest) -> AppliedContextEdit {
        for (message, part) in self.results {
            if let ContentPart::ToolResult(result) = &mut request.messages[message].content[part] {
                CLEARED_RESULT.clone_into(&mut result.content);
            }
        }
        for (message, part) in self.inputs {
            if let ContentPart::ToolCall(call) = &mut request.messages[message].content[part] {
                CLEARED_INPUT.clone_into(&mut call.arguments);
            }
        }
        AppliedContextEdit {
            kind: CLEAR_TOOL_USES.to_owned(),
            cleared_input_tokens: self.saved,
            cleared_tool_uses: Some(self.uses),
            cleared_thinking_turns: None,
        }
    }
}

/// What a thinking edit would clear: the assistant messages whose
/// reasoning goes.
struct ThinkingPlan {
    turns: Vec<usize>,
    saved: u64,
}

/// The reasoning of all but the last `keep_turns` assistant messages that
/// have some (`None`: keeps it all); `None` when nothing would go.
fn thinking_plan(request: &ChatRequest, keep_turns: Option<u64>) -> Option<ThinkingPlan> {
    let keep = usize::try_from(keep_turns?).unwrap_or(usize::MAX);
    let has_reasoning = |index: &usize| {
        let message = &request.messages[*index];
        message.role == Role::Assistant
            && message
                .content
                .iter()
                .any(|part| matches!(part, ContentPart::Reasoning(_)))
    };
    let thinking_turns: Vec<usize> = (0..request.messages.len()).filter(has_reasoning).collect();
    let turns = thinking_turns[..thinking_turns.len().saturating_sub(keep)].to_vec();
    if turns.is_empty() {
        return None;
    }
    let saved = turns
        .iter()
        .flat_map(|&index| &request.messages[index].content)
        .map(|part| match part {
            ContentPart::Reasoning(reasoning) => estimated_tokens(&reasoning.text),
            _ => 0,
        })
        .sum();
    Some(ThinkingPlan { turns, saved })
}

impl ThinkingPlan {
    fn apply(self, request: &mut ChatRequest) -> AppliedContextEdit {
        for &index in &self.turns {
            request.messages[index]
                .content
                .retain(|part| !matches!(part, ContentPart::Reasoning(_)));
        }
        AppliedContextEdit {
            kind: CLEAR_THINKING.to_owned(),
            cleared_input_tokens: self.saved,
            cleared_tool_uses: None,
            cleared_thinking_turns: Some(self.turns.len() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{Message, Reasoning, ToolCall, ToolResult};
    use serde_json::json;

    use super::*;

    /// A conversation with `calls` tool uses, one per assistant message, each
    /// with a 4,000-byte result, and reasoning on every assistant message.
    fn conversation(calls: usize) -> ChatRequest {
        let mut messages = vec![Message::user("read the files")];
        for index in 0..calls {
            let name = if index == 0 { "memory" } else { "read" };
            messages.push(Message {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning(Reasoning {
                        text: format!("thinking about step {index}"),
                        ..Reasoning::default()
                    }),
                    ContentPart::ToolCall(ToolCall::new(
                        format!("call_{index}"),
                        name,
                        format!("{{\"path\": \"file_{index}.rs\"}}"),
                    )),
                ],
            });
            messages.push(Message {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(ToolResult {
                    call_id: format!("call_{index}"),
                    content: "x".repeat(4_000),
                    is_error: false,
                })],
            });
        }
        ChatRequest::new("m", messages)
    }

    fn parsed(value: Value) -> ContextEdits {
        match ContextEdits::parse(&json!({ "edits": [value] })) {
            Ok(edits) => edits,
            Err(error) => panic!("{error}"),
        }
    }

    fn results(request: &ChatRequest) -> Vec<&str> {
        request
            .messages
            .iter()
            .flat_map(|message| &message.content)
            .filter_map(|part| match part {
                ContentPart::ToolResult(result) => Some(result.content.as_str()),
                _ => None,
            })
            .collect()
    }

    fn arguments(request: &ChatRequest) -> Vec<&str> {
        request
            .messages
            .iter()
            .flat_map(|message| &message.content)
            .filter_map(|part| match part {
                ContentPart::ToolCall(call) => Some(call.arguments.as_str()),
                _ => None,
            })
            .collect()
    }

    fn reasoning_turns(request: &ChatRequest) -> usize {
        request
            .messages
            .iter()
            .filter(|message| {
                message
                    .content
                    .iter()
                    .any(|part| matches!(part, ContentPart::Reasoning(_)))
            })
            .count()
    }

    #[test]
    fn tool_results_are_cleared_past_the_trigger_but_the_last_few() {
        let edits = parsed(json!({"type": "clear_tool_uses_20250919"}));
        // Three uses, all kept: nothing to count the conversation for.
        assert!(!edits.needs_input_tokens(&conversation(3)));
        assert!(edits.needs_input_tokens(&conversation(5)));
        let mut request = conversation(5);
        // Under the default trigger of 100,000 tokens: untouched.
        let untouched = request.clone();
        assert_eq!(edits.apply(&mut request, 100_000), Ok(Vec::new()));
        assert_eq!(request, untouched);

        let estimated = edits.estimated_savings(&request, 100_001);
        let applied = edits.apply(&mut request, 100_001).unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].cleared_input_tokens, estimated);
        assert_eq!(applied[0].kind, "clear_tool_uses_20250919");
        assert_eq!(applied[0].cleared_tool_uses, Some(2));
        let per_result = 1_000 - estimated_tokens(CLEARED_RESULT);
        assert_eq!(applied[0].cleared_input_tokens, 2 * per_result);
        let kept = results(&request);
        assert_eq!(&kept[..2], [CLEARED_RESULT, CLEARED_RESULT]);
        assert!(kept[2..].iter().all(|result| result.len() == 4_000));
        // The calls' inputs stay unless asked.
        assert!(
            arguments(&request)
                .iter()
                .all(|arguments| arguments.contains("file_"))
        );
        // What is cleared already is not cleared again, nor counted.
        let again = parsed(json!({
            "type": "clear_tool_uses_20250919",
            "trigger": {"type": "tool_uses", "value": 0},
        }));
        assert_eq!(again.apply(&mut request, 0), Ok(Vec::new()));
    }

    #[test]
    fn keep_exclusions_inputs_and_a_tool_use_trigger() {
        let edits = parsed(json!({
            "type": "clear_tool_uses_20250919",
            "trigger": {"type": "tool_uses", "value": 4},
            "keep": {"type": "tool_uses", "value": 1},
            "exclude_tools": ["memory"],
            "clear_tool_inputs": true,
        }));
        assert!(!edits.needs_input_tokens(&conversation(5)));
        let mut four = conversation(4);
        assert_eq!(
            edits.apply(&mut four, 0),
            Ok(Vec::new()),
            "4 uses is not past 4"
        );

        let mut request = conversation(5);
        let applied = edits.apply(&mut request, 0).unwrap();
        // `memory` (the first) is neither cleared nor counted; of the four
        // `read`s the last is kept.
        assert_eq!(applied[0].cleared_tool_uses, Some(3));
        let kept = results(&request);
        assert_eq!(kept[0].len(), 4_000);
        assert_eq!(&kept[1..4], [CLEARED_RESULT; 3]);
        assert_eq!(kept[4].len(), 4_000);
        let inputs = arguments(&request);
        assert_eq!(&inputs[1..4], [CLEARED_INPUT; 3]);
        assert!(inputs[0].contains("file_0") && inputs[4].contains("file_4"));

        // Inputs of the named tools only.
        let edits = edits_with_inputs(json!(["memory"]));
        let mut request = conversation(5);
        edits.apply(&mut request, 0).unwrap();
        assert_eq!(arguments(&request)[0], CLEARED_INPUT);
        assert!(arguments(&request)[1].contains("file_1"));
    }

    fn edits_with_inputs(inputs: Value) -> ContextEdits {
        parsed(json!({
            "type": "clear_tool_uses_20250919",
            "trigger": {"type": "tool_uses", "value": 0},
            "keep": {"type": "tool_uses", "value": 0},
            "clear_tool_inputs": inputs,
        }))
    }

    #[test]
    fn nothing_is_cleared_unless_at_least_the_minimum_would_be() {
        let edits_asking = |minimum: u64| {
            parsed(json!({
                "type": "clear_tool_uses_20250919",
                "trigger": {"type": "tool_uses", "value": 0},
                "keep": {"type": "tool_uses", "value": 2},
                "clear_at_least": {"type": "input_tokens", "value": minimum},
            }))
        };
        let saved = 1_000 - estimated_tokens(CLEARED_RESULT);
        let mut request = conversation(3);
        let untouched = request.clone();
        assert_eq!(
            edits_asking(saved + 1).apply(&mut request, 0),
            Ok(Vec::new())
        );
        assert_eq!(request, untouched);
        let applied = edits_asking(saved).apply(&mut request, 0).unwrap();
        assert_eq!(applied[0].cleared_input_tokens, saved);
    }

    #[test]
    fn thinking_is_cleared_from_all_but_the_last_turns() {
        let mut request = conversation(4);
        let applied = parsed(json!({"type": "clear_thinking_20251015"}))
            .apply(&mut request, 0)
            .unwrap();
        assert_eq!(applied[0].kind, "clear_thinking_20251015");
        assert_eq!(applied[0].cleared_thinking_turns, Some(3));
        assert!(applied[0].cleared_input_tokens > 0);
        assert_eq!(reasoning_turns(&request), 1);
        // The calls stay where the thinking was taken out.
        assert_eq!(arguments(&request).len(), 4);

        let mut request = conversation(4);
        let two = json!({"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 2}});
        parsed(two).apply(&mut request, 0).unwrap();
        assert_eq!(reasoning_turns(&request), 2);

        // Claude Code's setting: keep it all.
        for keep in [json!("all"), json!({"type": "all"})] {
            let mut request = conversation(4);
            let untouched = request.clone();
            let edits = parsed(json!({"type": "clear_thinking_20251015", "keep": keep}));
            assert_eq!(edits.apply(&mut request, 0), Ok(Vec::new()));
            assert_eq!(request, untouched);
        }
    }

    #[test]
    fn edits_apply_in_order_and_count_what_came_before() {
        // The thinking cleared first brings the conversation under the tool
        // edit's trigger.
        let parsed = ContextEdits::parse(&json!({"edits": [
            {"type": "clear_thinking_20251015"},
            {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 5_000}},
        ]}))
        .unwrap();
        let mut request = conversation(5);
        let thinking = estimated_tokens("thinking about step 0") * 4;
        let applied = parsed.apply(&mut request, 5_000 + thinking).unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].kind, "clear_thinking_20251015");
    }

    #[test]
    fn a_server_compaction_is_parsed_and_never_applied_here() {
        let compact = json!({"edits": [{"type": "compact_20260112"}]});
        let parsed = ContextEdits::parse(&compact).unwrap();
        assert_eq!(
            parsed.compaction(),
            Some(&CompactEdit {
                trigger_input_tokens: DEFAULT_COMPACT_TRIGGER_INPUT_TOKENS,
                pause_after_compaction: false,
                instructions: None,
                instructions_replace_prompt: false,
            })
        );
        // The gateway takes it out before the router sees the request.
        let error = parsed.apply(&mut conversation(2), 0).unwrap_err();
        assert_eq!(error.field, "context_management.edits[0].type");
        assert_eq!(without_compaction(compact), None);

        let asked = json!({"edits": [
            {"type": "clear_thinking_20251015", "keep": "all"},
            {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 2_000},
             "pause_after_compaction": true, "instructions": "Keep the file names."},
        ]});
        let parsed = ContextEdits::parse(&asked).unwrap();
        assert_eq!(
            parsed.compaction(),
            Some(&CompactEdit {
                trigger_input_tokens: 2_000,
                pause_after_compaction: true,
                instructions: Some("Keep the file names.".into()),
                instructions_replace_prompt: false,
            })
        );
        assert_eq!(
            without_compaction(asked),
            Some(json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}))
        );
    }

    #[test]
    fn a_server_compaction_s_mistakes_are_named() {
        let cases = [
            (
                json!([{"type": "compact_20260112", "trigger": {"type": "tool_uses", "value": 3}}]),
                "context_management.edits[0].trigger.type",
            ),
            (
                json!([{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 0}}]),
                "context_management.edits[0].trigger.value",
            ),
            (
                json!([{"type": "compact_20260112", "pause_after_compaction": "yes"}]),
                "context_management.edits[0]",
            ),
            (
                json!([{"type": "compact_20260112", "keep": 1}]),
                "context_management.edits[0]",
            ),
            (
                json!([{"type": "compact_20260112"}, {"type": "compact_20260112"}]),
                "context_management.edits[1]",
            ),
        ];
        for (edits, field) in cases {
            let error = ContextEdits::parse(&json!({ "edits": edits })).unwrap_err();
            assert_eq!(error.field, field, "{edits}: {error}");
        }
    }

    #[test]
    fn an_edit_of_an_unknown_kind_is_left_to_anthropic() {
        let unknown = parsed(json!({"type": "clear_everything_20270101", "keep": 1}));
        let mut request = conversation(2);
        assert_eq!(unknown.estimated_savings(&request, 1_000_000), 0);
        let error = unknown.apply(&mut request, 0).unwrap_err();
        assert_eq!(error.field, "context_management.edits[0].type");
        assert!(
            error.message.contains("clear_tool_uses_20250919"),
            "{error}"
        );
        assert!(
            error.message.contains("route the model to Anthropic"),
            "{error}"
        );
    }

    #[test]
    fn mistakes_are_named_by_their_path() {
        let cases = [
            (json!([]), "context_management"),
            (json!({"edits": {}}), "context_management.edits"),
            (json!({"edit": []}), "context_management.edit"),
            (
                json!({"edits": [{"keep": 1}]}),
                "context_management.edits[0]",
            ),
            (
                json!({"edits": [{"type": "clear_tool_uses_20250919", "keep": {"type": "input_tokens", "value": 3}}]}),
                "context_management.edits[0].keep.type",
            ),
            (
                json!({"edits": [{"type": "clear_tool_uses_20250919", "trigger": {"type": "turns", "value": 3}}]}),
                "context_management.edits[0].trigger.type",
            ),
            (
                json!({"edits": [{"type": "clear_tool_uses_20250919", "clear_at_least": {"type": "tool_uses", "value": 3}}]}),
                "context_management.edits[0].clear_at_least.type",
            ),
            (
                json!({"edits": [{"type": "clear_tool_uses_20250919", "keeps": 3}]}),
                "context_management.edits[0]",
            ),
            (
                json!({"edits": [{"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 0}}]}),
                "context_management.edits[0].keep",
            ),
        ];
        for (value, field) in cases {
            let error = ContextEdits::parse(&value).unwrap_err();
            assert_eq!(error.field, field, "{value}: {error}");
        }
        // An unknown field is named with those the kind takes (its `type`
        // aside), in serde's words.
        let message = |value: Value| ContextEdits::parse(&value).unwrap_err().message;
        assert_eq!(
            message(json!({"edits": [{"type": "clear_tool_uses_20250919", "keeps": 3}]})),
            "unknown field `keeps`, expected one of `trigger`, `keep`, `clear_at_least`, \
             `exclude_tools`, `clear_tool_inputs`"
        );
        assert_eq!(
            message(json!({"edits": [{"type": "clear_thinking_20251015", "kept": "all"}]})),
            "unknown field `kept`, expected `keep`"
        );
        assert!(
            message(json!({"edits": [{"type": "clear_tool_uses_20250919", "keep": 3}]}))
                .contains("invalid type: integer `3`"),
        );
    }
}
