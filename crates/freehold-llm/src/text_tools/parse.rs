//! The formats: where printed calls are in a text and what they call.
//!
//! [`find_spans`] is the one parser. The stream adapter uses the same helpers
//! ([`next_event`], [`classify_fence`], [`fence_calls`], [`whole_json_state`])
//! to decide how much text it may pass on before the answer ends, so that a
//! streamed answer and a complete one are recovered alike.

use std::ops::Range;

use freehold_protocol::{ToolCall, ToolSpec};
use serde_json::{Map, Value};

/// Opens a Hermes / Qwen call block.
const TOOL_CALL_OPEN: &str = "<tool_call>";
/// Closes a Hermes / Qwen call block.
const TOOL_CALL_CLOSE: &str = "</tool_call>";
/// Opens a Qwen3-Coder function.
const FUNCTION_OPEN: &str = "<function=";
/// Closes a Qwen3-Coder function.
const FUNCTION_CLOSE: &str = "</function>";
/// Opens a Qwen3-Coder parameter.
const PARAMETER_OPEN: &str = "<parameter=";
/// Closes a Qwen3-Coder parameter.
const PARAMETER_CLOSE: &str = "</parameter>";
/// A Markdown code fence (at the start of a line, after optional blanks).
const FENCE: &str = "```";
/// The tags that may open a call wherever they appear.
pub(super) const MARKERS: [&str; 2] = [TOOL_CALL_OPEN, FUNCTION_OPEN];

/// Keys a bare JSON call may have (`{"name": …, "arguments": …}`).
const CALL_KEYS: [&str; 5] = ["name", "arguments", "parameters", "id", "type"];
/// Keys an OpenAI-style wrapper may have (`{"type": "function", "function": …}`).
const WRAPPER_KEYS: [&str; 3] = ["function", "id", "type"];

/// A stretch of text that holds one or more calls.
#[derive(Debug)]
pub(super) struct Span {
    /// Where it is in the text.
    pub(super) range: Range<usize>,
    /// The calls it holds, in order.
    pub(super) calls: Vec<ToolCall>,
}

/// Something that may start a call, found by [`next_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A `<tool_call>` or `<function=` tag.
    Tag,
    /// A fence line; the event's position is the start of the line.
    Fence {
        /// Just past the three backticks.
        ticks_end: usize,
    },
}

/// What the start of a fenced block's content says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FenceContent {
    /// Too little text to tell.
    Undecided,
    /// It starts like a call (`{`, `[` or a call tag).
    Candidate,
    /// It cannot hold a call: ordinary code or prose.
    Prose,
}

/// What a text that starts with `{` or `[` is, so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WholeJson {
    /// Valid JSON so far, but not complete.
    Incomplete,
    /// Complete JSON values that are all calls (or arrays of calls).
    Calls,
    /// Anything else: it can never become a whole-message call.
    NotCalls,
}

/// Finds every recoverable call in `text`, in order. Spans never overlap.
pub(super) fn find_spans(text: &str, tools: &[ToolSpec]) -> Vec<Span> {
    if let Some(calls) = whole_json_calls(text, tools) {
        return vec![Span {
            range: 0..text.len(),
            calls,
        }];
    }
    let mut spans = Vec::new();
    let mut pos = 0;
    // Whether we are inside a fenced block that holds no call: its closing
    // fence must not be taken for an opening one.
    let mut fence_open = false;
    while let Some((start, event)) = next_event(text, pos) {
        match event {
            Event::Tag => match tag_block(text, start, tools) {
                Some((end, calls)) => {
                    spans.push(Span {
                        range: start..end,
                        calls,
                    });
                    pos = end;
                }
                // Skip the `<` and look further.
                None => pos = start + 1,
            },
            Event::Fence { ticks_end } if fence_open => {
                fence_open = false;
                pos = ticks_end;
            }
            Event::Fence { ticks_end } => {
                let Some(content_start) = line_end(text, ticks_end) else {
                    break;
                };
                let (content_end, end) =
                    next_fence(text, content_start).unwrap_or((text.len(), text.len()));
                match fence_calls(&text[content_start..content_end], tools) {
                    Some(calls) => {
                        spans.push(Span {
                            range: start..end,
                            calls,
                        });
                        pos = end;
                    }
                    None => {
                        fence_open = true;
                        pos = content_start;
                    }
                }
            }
        }
    }
    spans
}

/// `text` without the spans. The blanks just before each span go with it, so
/// that prose does not end in the blank line that preceded a call.
pub(super) fn remove_spans(text: &str, spans: &[Span]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for span in spans {
        out.push_str(text[last..span.range.start].trim_end());
        last = span.range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// The first call tag or fence line at or after `from`.
pub(super) fn next_event(text: &str, from: usize) -> Option<(usize, Event)> {
    let rest = text.get(from..)?;
    let tag = MARKERS
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .map(|offset| from + offset);
    let fence = next_fence(text, from);
    match (tag, fence) {
        (Some(tag), Some((line, ticks_end))) if line < tag => {
            Some((line, Event::Fence { ticks_end }))
        }
        (Some(tag), _) => Some((tag, Event::Tag)),
        (None, Some((line, ticks_end))) => Some((line, Event::Fence { ticks_end })),
        (None, None) => None,
    }
}

/// The next fence line whose backticks are at or after `from`: the start of
/// its line and the position just past the backticks.
pub(super) fn next_fence(text: &str, from: usize) -> Option<(usize, usize)> {
    let mut search = from;
    while let Some(offset) = text.get(search..).and_then(|rest| rest.find(FENCE)) {
        let at = search + offset;
        let line = line_start(text, at);
        if text[line..at]
            .bytes()
            .all(|byte| byte == b' ' || byte == b'\t')
        {
            return Some((line, at + FENCE.len()));
        }
        search = at + FENCE.len();
    }
    None
}

/// The start of the line holding `at`.
fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |newline| newline + 1)
}

/// The start of the line after the one holding `from`, if that line ended.
pub(super) fn line_end(text: &str, from: usize) -> Option<usize> {
    text.get(from..)?
        .find('\n')
        .map(|newline| from + newline + 1)
}

/// Classifies a fenced block by the start of its content.
pub(super) fn classify_fence(content: &str) -> FenceContent {
    let start = content.trim_start();
    if start.is_empty() {
        return FenceContent::Undecided;
    }
    if start.starts_with(['{', '[']) || MARKERS.iter().any(|marker| start.starts_with(marker)) {
        return FenceContent::Candidate;
    }
    if MARKERS.iter().any(|marker| marker.starts_with(start)) {
        return FenceContent::Undecided;
    }
    FenceContent::Prose
}

/// The calls a fenced block holds, when its whole content is calls: one JSON
/// call or array of calls, or call tags and nothing else.
pub(super) fn fence_calls(content: &str, tools: &[ToolSpec]) -> Option<Vec<ToolCall>> {
    if classify_fence(content) != FenceContent::Candidate {
        return None;
    }
    let content = content.trim();
    if content.starts_with(['{', '[']) {
        let value: Value = serde_json::from_str(content).ok()?;
        return calls_from_json(&value, tools, true);
    }
    // The content has no fence line, so this does not recurse further.
    let spans = find_spans(content, tools);
    if spans.is_empty() || !remove_spans(content, &spans).trim().is_empty() {
        return None;
    }
    Some(spans.into_iter().flat_map(|span| span.calls).collect())
}

/// What a text that may be bare JSON calls is so far.
pub(super) fn whole_json_state(text: &str, tools: &[ToolSpec]) -> WholeJson {
    match json_calls(text, tools) {
        Ok(_) => WholeJson::Calls,
        Err(state) => state,
    }
}

/// The calls of a text that is, apart from blanks, JSON calls: one call, an
/// array of calls, or several of either one after the other (as some models
/// print parallel calls, one per line).
fn whole_json_calls(text: &str, tools: &[ToolSpec]) -> Option<Vec<ToolCall>> {
    if !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    json_calls(text, tools).ok()
}

/// The calls of a text made of JSON calls only, or why it is not that (yet).
fn json_calls(text: &str, tools: &[ToolSpec]) -> Result<Vec<ToolCall>, WholeJson> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut calls = Vec::new();
    for value in &mut values {
        match value {
            Ok(value) => {
                calls.extend(calls_from_json(&value, tools, true).ok_or(WholeJson::NotCalls)?)
            }
            Err(error) if error.is_eof() => return Err(WholeJson::Incomplete),
            Err(_) => return Err(WholeJson::NotCalls),
        }
    }
    if calls.is_empty() {
        return Err(WholeJson::Incomplete);
    }
    Ok(calls)
}

/// The calls of the tag block starting at `start` (a `<tool_call>` block, or
/// a bare `<function=` block), and where the block ends.
fn tag_block(text: &str, start: usize, tools: &[ToolSpec]) -> Option<(usize, Vec<ToolCall>)> {
    let rest = &text[start..];
    if let Some(after) = rest.strip_prefix(TOOL_CALL_OPEN) {
        let body_start = start + TOOL_CALL_OPEN.len();
        let close = after.find(TOOL_CALL_CLOSE);
        let next_open = after.find(TOOL_CALL_OPEN);
        return match close {
            Some(close) if next_open.is_none_or(|open| close < open) => {
                let (_, calls) = body_calls(&after[..close], tools, true)?;
                Some((body_start + close + TOOL_CALL_CLOSE.len(), calls))
            }
            // No closing tag before the next block or the end of the text:
            // the block ends where its calls end.
            _ => {
                let body_end = next_open.unwrap_or(after.len());
                let (used, calls) = body_calls(&after[..body_end], tools, false)?;
                Some((body_start + used, calls))
            }
        };
    }
    let (used, call) = function_block(rest, tools)?;
    let mut end = start + used;
    // A closing tag whose opening one the model left out.
    let after = &text[end..];
    let trimmed = after.trim_start();
    if trimmed.starts_with(TOOL_CALL_CLOSE) {
        end += after.len() - trimmed.len() + TOOL_CALL_CLOSE.len();
    }
    Some((end, vec![call]))
}

/// The calls in a `<tool_call>` block's body and how many bytes they use.
/// A closed body must be calls only; an unclosed one may go on with prose.
fn body_calls(body: &str, tools: &[ToolSpec], closed: bool) -> Option<(usize, Vec<ToolCall>)> {
    let lead = body.len() - body.trim_start().len();
    let content = &body[lead..];
    let (used, calls) = if content.starts_with(FUNCTION_OPEN) {
        function_sequence(content, tools)?
    } else if content.starts_with(['{', '[']) {
        json_sequence(content, tools)
    } else {
        return None;
    };
    let used = lead + used;
    if calls.is_empty() || (closed && !body[used..].trim().is_empty()) {
        return None;
    }
    Some((used, calls))
}

/// Consecutive `<function=` blocks; any that fails fails them all.
fn function_sequence(text: &str, tools: &[ToolSpec]) -> Option<(usize, Vec<ToolCall>)> {
    let mut calls = Vec::new();
    let mut used = 0;
    loop {
        let rest = &text[used..];
        let lead = rest.len() - rest.trim_start().len();
        if !rest[lead..].starts_with(FUNCTION_OPEN) {
            return Some((used, calls));
        }
        let (block, call) = function_block(&rest[lead..], tools)?;
        calls.push(call);
        used += lead + block;
    }
}

/// Consecutive JSON calls (objects or arrays of them), up to the first value
/// that is not one.
fn json_sequence(text: &str, tools: &[ToolSpec]) -> (usize, Vec<ToolCall>) {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut calls = Vec::new();
    let mut used = 0;
    while let Some(Ok(value)) = values.next() {
        let Some(found) = calls_from_json(&value, tools, false) else {
            break;
        };
        calls.extend(found);
        used = values.byte_offset();
    }
    (used, calls)
}

/// One Qwen3-Coder `<function=NAME>…</function>` block at the start of
/// `text`: the bytes it uses and its call. Without `</function>`, the block
/// ends at the next `<function=`, `</tool_call>` or the end of the text.
fn function_block(text: &str, tools: &[ToolSpec]) -> Option<(usize, ToolCall)> {
    let after_open = text.strip_prefix(FUNCTION_OPEN)?;
    let name_end = after_open.find('>')?;
    let name = after_open[..name_end].trim();
    if name.contains('\n') {
        return None;
    }
    let spec = find_tool(tools, name)?;
    let inner_start = FUNCTION_OPEN.len() + name_end + 1;
    let rest = &text[inner_start..];
    let close = rest.find(FUNCTION_CLOSE);
    let next_open = rest.find(FUNCTION_OPEN);
    let (inner, used) = match close {
        Some(close) if next_open.is_none_or(|open| close < open) => {
            (&rest[..close], inner_start + close + FUNCTION_CLOSE.len())
        }
        _ => {
            let end = [next_open, rest.find(TOOL_CALL_CLOSE)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(rest.len());
            (&rest[..end], inner_start + end)
        }
    };
    let arguments = function_parameters(inner, spec)?;
    let arguments = serde_json::to_string(&Value::Object(arguments)).ok()?;
    Some((
        used,
        ToolCall::new(new_call_id(), spec.name.clone(), arguments),
    ))
}

/// The `<parameter=NAME>value</parameter>` list of a function block, values
/// converted by the tool's schema. Anything but parameters and blanks fails.
/// A parameter without `</parameter>` ends at the next one or the block's end.
fn function_parameters(inner: &str, spec: &ToolSpec) -> Option<Map<String, Value>> {
    let mut arguments = Map::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let after = rest.strip_prefix(PARAMETER_OPEN)?;
        let name_end = after.find('>')?;
        let name = after[..name_end].trim();
        if name.is_empty() || name.contains('\n') {
            return None;
        }
        let value = &after[name_end + 1..];
        let close = value.find(PARAMETER_CLOSE);
        let next_open = value.find(PARAMETER_OPEN);
        let (raw, next) = match (close, next_open) {
            (Some(close), open) if open.is_none_or(|open| close < open) => {
                (&value[..close], &value[close + PARAMETER_CLOSE.len()..])
            }
            (_, Some(open)) => (&value[..open], &value[open..]),
            _ => (value, ""),
        };
        let schema = spec
            .parameters
            .get("properties")
            .and_then(|properties| properties.get(name));
        arguments.insert(name.to_owned(), convert_parameter(raw, schema));
        rest = next.trim_start();
    }
    Some(arguments)
}

/// A raw XML parameter value as JSON, by the property's schema type: numbers,
/// booleans, objects, arrays and null are parsed; strings (and values of
/// unknown properties, or that do not parse) stay text, less one leading and
/// one trailing newline.
pub(super) fn convert_parameter(raw: &str, schema: Option<&Value>) -> Value {
    let text = trim_one_newline(raw);
    let types: Vec<&str> = match schema.and_then(|schema| schema.get("type")) {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    types
        .into_iter()
        .find_map(|kind| convert_as(text, kind))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

/// `text` as a JSON value of schema type `kind`, if it is one.
fn convert_as(text: &str, kind: &str) -> Option<Value> {
    let trimmed = text.trim();
    match kind {
        "string" => Some(Value::String(text.to_owned())),
        "integer" => trimmed
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| trimmed.parse::<u64>().map(Value::from))
            .ok()
            .or_else(|| {
                // `3.0` is an integer too; beyond 2^53 a float is not exact.
                let float = trimmed.parse::<f64>().ok()?;
                (float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0)
                    .then_some(Value::from(float as i64))
            }),
        "number" => match trimmed.parse::<i64>() {
            Ok(integer) => Some(Value::from(integer)),
            Err(_) => trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
        },
        "boolean" => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        "null" => (trimmed.is_empty() || trimmed == "null").then_some(Value::Null),
        "object" => serde_json::from_str::<Value>(trimmed)
            .ok()
            .filter(Value::is_object),
        "array" => serde_json::from_str::<Value>(trimmed)
            .ok()
            .filter(Value::is_array),
        _ => None,
    }
}

/// `raw` less one leading and one trailing newline (`\n` or `\r\n`).
fn trim_one_newline(raw: &str) -> &str {
    let raw = raw
        .strip_prefix("\r\n")
        .or_else(|| raw.strip_prefix('\n'))
        .unwrap_or(raw);
    raw.strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(raw)
}

/// The calls of a JSON value: one call object, or a non-empty array of them.
/// `strict` (for JSON outside call tags) refuses objects with keys a call
/// does not have, such as a tool definition's `description`.
fn calls_from_json(value: &Value, tools: &[ToolSpec], strict: bool) -> Option<Vec<ToolCall>> {
    match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| call_from_object(item, tools, strict))
            .collect(),
        Value::Object(_) => Some(vec![call_from_object(value, tools, strict)?]),
        _ => None,
    }
}

/// One call object: `{"name", "arguments" | "parameters"}`, or OpenAI's
/// `{"type": "function", "function": {…}}`.
fn call_from_object(value: &Value, tools: &[ToolSpec], strict: bool) -> Option<ToolCall> {
    let object = value.as_object()?;
    if strict
        && let Some(kind) = object.get("type")
        && kind.as_str() != Some("function")
    {
        return None;
    }
    if let Some(function) = object.get("function") {
        if strict
            && !object
                .keys()
                .all(|key| WRAPPER_KEYS.contains(&key.as_str()))
        {
            return None;
        }
        return call_from_object(function, tools, strict);
    }
    if strict && !object.keys().all(|key| CALL_KEYS.contains(&key.as_str())) {
        return None;
    }
    let name = object.get("name")?.as_str()?;
    let spec = find_tool(tools, name)?;
    let arguments = object
        .get("arguments")
        .or_else(|| object.get("parameters"))
        .unwrap_or(&Value::Null);
    Some(ToolCall::new(
        new_call_id(),
        spec.name.clone(),
        arguments_text(arguments)?,
    ))
}

/// Arguments as compact JSON object text: an object, a JSON-encoded object,
/// or nothing (`{}`).
fn arguments_text(arguments: &Value) -> Option<String> {
    match arguments {
        Value::Object(_) => serde_json::to_string(arguments).ok(),
        Value::Null => Some("{}".to_owned()),
        Value::String(text) if text.trim().is_empty() => Some("{}".to_owned()),
        Value::String(text) => {
            let value: Value = serde_json::from_str(text).ok()?;
            value
                .is_object()
                .then(|| serde_json::to_string(&value).ok())
                .flatten()
        }
        _ => None,
    }
}

/// The offered tool called `name`.
fn find_tool<'a>(tools: &'a [ToolSpec], name: &str) -> Option<&'a ToolSpec> {
    tools.iter().find(|tool| tool.name == name)
}

/// A fresh call id: `call_` and 24 random lowercase letters and digits.
pub(super) fn new_call_id() -> String {
    let mut id = String::with_capacity(29);
    id.push_str("call_");
    for _ in 0..24 {
        id.push(char::from_digit(fastrand::u32(..36), 36).unwrap_or('0'));
    }
    id
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tool(name: &str, properties: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": properties}),
            strict: false,
        }
    }

    fn args(call: &ToolCall) -> Value {
        serde_json::from_str(&call.arguments).unwrap()
    }

    #[test]
    fn parameters_convert_by_schema_type() {
        let schema = |kind: Value| json!({ "type": kind });
        let cases = [
            ("\n42\n", schema(json!("integer")), json!(42)),
            ("-7", schema(json!("integer")), json!(-7)),
            ("4x", schema(json!("integer")), json!("4x")),
            ("3.0", schema(json!("integer")), json!(3)),
            ("3.5", schema(json!("integer")), json!("3.5")),
            ("\n2.5\n", schema(json!("number")), json!(2.5)),
            ("3", schema(json!("number")), json!(3)),
            ("\nTrue\n", schema(json!("boolean")), json!(true)),
            ("false", schema(json!("boolean")), json!(false)),
            ("yes", schema(json!("boolean")), json!("yes")),
            (
                "\n{\"a\": [1]}\n",
                schema(json!("object")),
                json!({"a": [1]}),
            ),
            ("[1, 2]", schema(json!("array")), json!([1, 2])),
            ("[1, 2", schema(json!("array")), json!("[1, 2")),
            ("null", schema(json!(["integer", "null"])), json!(null)),
            ("5", schema(json!(["integer", "null"])), json!(5)),
            ("\n\nkeep\n\n", schema(json!("string")), json!("\nkeep\n")),
            ("\r\nwin\r\n", schema(json!("string")), json!("win")),
            (" 12 ", schema(json!("string")), json!(" 12 ")),
        ];
        for (raw, schema, expected) in cases {
            assert_eq!(convert_parameter(raw, Some(&schema)), expected, "{raw:?}");
        }
        assert_eq!(convert_parameter("\n12\n", None), json!("12"));
    }

    #[test]
    fn call_ids_have_the_openai_shape() {
        let id = new_call_id();
        assert_eq!(id.len(), 29);
        let (prefix, rest) = id.split_at(5);
        assert_eq!(prefix, "call_");
        assert!(
            rest.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(new_call_id(), new_call_id());
    }

    #[test]
    fn arguments_accept_objects_encoded_objects_and_nothing() {
        assert_eq!(
            arguments_text(&json!({"b": 1, "a": "x"})).as_deref(),
            Some(r#"{"a":"x","b":1}"#)
        );
        assert_eq!(
            arguments_text(&json!("{\"path\": \"a.rs\"}")).as_deref(),
            Some(r#"{"path":"a.rs"}"#)
        );
        assert_eq!(arguments_text(&json!(null)).as_deref(), Some("{}"));
        assert_eq!(arguments_text(&json!("  ")).as_deref(), Some("{}"));
        assert_eq!(arguments_text(&json!("not json")), None);
        assert_eq!(arguments_text(&json!("[1]")), None);
        assert_eq!(arguments_text(&json!(3)), None);
    }

    #[test]
    fn strict_json_refuses_tool_definitions_but_tags_are_lenient() {
        let tools = [tool("read", json!({}))];
        let definition = json!({
            "name": "read",
            "description": "Reads a file",
            "parameters": {"type": "object"}
        });
        assert!(calls_from_json(&definition, &tools, true).is_none());
        assert!(calls_from_json(&definition, &tools, false).is_some());
        let wrong_type = json!({"type": "object", "name": "read", "arguments": {}});
        assert!(calls_from_json(&wrong_type, &tools, true).is_none());
        assert!(calls_from_json(&json!([]), &tools, true).is_none());
    }

    #[test]
    fn function_without_closing_tags_ends_at_the_next_parameter() {
        let tools = [tool(
            "read",
            json!({"path": {"type": "string"}, "limit": {"type": "integer"}}),
        )];
        let text = "<function=read>\n<parameter=path>\na.rs\n<parameter=limit>\n20\n";
        let spans = find_spans(text, &tools);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].range, 0..text.len());
        assert_eq!(
            args(&spans[0].calls[0]),
            json!({"path": "a.rs", "limit": 20})
        );
    }

    #[test]
    fn function_body_with_stray_prose_is_not_a_call() {
        let tools = [tool("read", json!({}))];
        let text = "<function=read>\nsome prose\n</function>";
        assert!(find_spans(text, &tools).is_empty());
    }

    #[test]
    fn fence_content_is_classified_from_its_first_characters() {
        assert_eq!(classify_fence("  \n"), FenceContent::Undecided);
        assert_eq!(classify_fence("\n<tool_"), FenceContent::Undecided);
        assert_eq!(classify_fence("\n<tool_call>"), FenceContent::Candidate);
        assert_eq!(classify_fence("{"), FenceContent::Candidate);
        assert_eq!(classify_fence("fn main"), FenceContent::Prose);
        assert_eq!(classify_fence("<div>"), FenceContent::Prose);
    }

    #[test]
    fn fenced_tags_take_the_fence_with_them() {
        let tools = [tool("read", json!({}))];
        let text = "Reading.\n```xml\n<tool_call>\n{\"name\": \"read\", \"arguments\": {}}\n</tool_call>\n```\nDone.";
        let spans = find_spans(text, &tools);
        assert_eq!(spans.len(), 1);
        assert_eq!(remove_spans(text, &spans), "Reading.\nDone.");
    }

    #[test]
    fn a_closing_fence_is_not_taken_for_an_opening_one() {
        let tools = [tool("read", json!({}))];
        // Were the closer of the Rust block an opener, the JSON line after it
        // would read as a fenced call.
        let text = "```rust\nlet x = 1;\n```\n{\"name\": \"read\"}\n```\nDone.";
        assert!(find_spans(text, &tools).is_empty());
    }

    #[test]
    fn tags_inside_a_prose_fence_are_still_found() {
        let tools = [tool("read", json!({}))];
        let text = "```text\n<tool_call>\n{\"name\": \"read\"}\n</tool_call>\nmore\n```";
        let spans = find_spans(text, &tools);
        assert_eq!(spans.len(), 1);
        assert_eq!(remove_spans(text, &spans), "```text\nmore\n```");
    }

    #[test]
    fn whole_json_state_tells_incomplete_from_impossible() {
        let tools = [tool("read", json!({}))];
        assert_eq!(whole_json_state("{\"na", &tools), WholeJson::Incomplete);
        assert_eq!(whole_json_state("  [", &tools), WholeJson::Incomplete);
        assert_eq!(
            whole_json_state("{\"name\": \"read\"}\n", &tools),
            WholeJson::Calls
        );
        assert_eq!(
            whole_json_state("{\"name\": \"nope\"}", &tools),
            WholeJson::NotCalls
        );
        assert_eq!(whole_json_state("[link](x)", &tools), WholeJson::NotCalls);
        assert_eq!(
            whole_json_state("{\"name\": \"read\"} and more", &tools),
            WholeJson::NotCalls
        );
        assert_eq!(
            whole_json_state("{\"name\": \"read\"}\n{\"name\": \"read\"}", &tools),
            WholeJson::Calls
        );
        assert_eq!(
            whole_json_state("{\"name\": \"read\"}\n{\"name\": \"read\", \"argu", &tools),
            WholeJson::Incomplete
        );
        assert_eq!(
            whole_json_state("{\"name\": \"read\"}\n[1]", &tools),
            WholeJson::NotCalls
        );
        assert_eq!(whole_json_state("{\"a\": -", &tools), WholeJson::Incomplete);
        assert_eq!(whole_json_state("[tr", &tools), WholeJson::Incomplete);
        assert_eq!(whole_json_state("  ", &tools), WholeJson::Incomplete);
    }
}
