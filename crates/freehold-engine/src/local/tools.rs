//! Tool calls and structured output on the embedded engine.
//!
//! Small models get the *shape* of a call wrong more often than its intent:
//! a missing brace, a misspelt argument, prose inside the JSON. So decoding is
//! constrained by a grammar (GBNF, built from the tools' JSON Schemas by
//! llama.cpp's own converter):
//!
//! - with `tool_choice: auto` the grammar is *lazy*: text stays free until the
//!   model starts a call in its family's format (the trigger), and from there
//!   on only a valid call to an offered tool, with arguments matching that
//!   tool's schema, can be produced;
//! - with `required` or a named tool the grammar applies from the first token;
//! - with `none`, no grammar and no tools in the prompt;
//! - a `response_format` JSON Schema constrains the whole answer the same way.
//!
//! The call format is the one the model's chat template teaches it
//! ([`CallFormat::detect`]); a template that cannot render tools gets them
//! described in the system prompt, in the Hermes format.

use freehold_llm::text_tools;
use freehold_protocol::{
    ChatRequest, ErrorKind, LlmError, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};
use serde_json::Value;

use super::error;

/// How a model family prints a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallFormat {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>` (Qwen2.5, Qwen3,
    /// Hermes, SmolLM3 …).
    Hermes,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}, …]` (Mistral).
    Mistral,
    /// A bare `{"name": …, "parameters": …}` as the whole answer (Llama 3.x).
    Llama3,
    /// The template does not render tools: they are described in the system
    /// prompt and called in the Hermes format.
    Generic,
}

impl CallFormat {
    /// The format a chat template teaches.
    pub(crate) fn detect(template: &str) -> Self {
        if !super::template::supports_tools(template) {
            CallFormat::Generic
        } else if template.contains("<tool_call>") {
            CallFormat::Hermes
        } else if template.contains("[TOOL_CALLS]") {
            CallFormat::Mistral
        } else if template.contains("<|python_tag|>") || template.contains("\"parameters\"") {
            CallFormat::Llama3
        } else {
            // A template that renders tools in a way we do not know: describe
            // them ourselves, in a format we can parse.
            CallFormat::Generic
        }
    }

    /// The texts that start a call, each with whether it counts only at the
    /// start of the answer (after whitespace): a `{` later in prose is not a
    /// call. Small Qwen models often print a Hermes call without its tags,
    /// so a bare JSON object opening the answer is a call in that format too,
    /// and so is one in a Markdown code fence (an answer opening with a
    /// fence that holds no call is given back as text at the end).
    pub(crate) fn markers(self) -> &'static [(&'static str, bool)] {
        match self {
            CallFormat::Hermes | CallFormat::Generic => {
                &[("<tool_call>", false), ("{", true), ("```", true)]
            }
            CallFormat::Mistral => &[("[TOOL_CALLS]", false)],
            CallFormat::Llama3 => &[("{", true), ("```", true)],
        }
    }

    /// The regular expressions llama.cpp's lazy grammar waits for; the
    /// grammar applies from the first capture group (or the whole match).
    fn trigger_patterns(self) -> Vec<String> {
        // Anchored at both ends: llama.cpp then matches the whole output.
        // `"name"` must follow, so that an answer that merely is JSON is not
        // forced into a call.
        let bare_json_at_start = r#"^\s*(\{\s*"name"\s*:)[\s\S]*$"#.to_owned();
        // Qwen2.5-Coder-0.5B often wraps its call in ```json … ```: the
        // grammar then applies from the object on, so the tool's name and
        // arguments are still constrained.
        let fenced_json_at_start = r#"^\s*```(?:json)?\s*(\{\s*"name"\s*:)[\s\S]*$"#.to_owned();
        match self {
            CallFormat::Hermes | CallFormat::Generic => vec![
                "<tool_call>".to_owned(),
                bare_json_at_start,
                fenced_json_at_start,
            ],
            CallFormat::Mistral => vec![r"\[TOOL_CALLS\]".to_owned()],
            CallFormat::Llama3 => vec![bare_json_at_start, fenced_json_at_start],
        }
    }

    fn arguments_key(self) -> &'static str {
        match self {
            CallFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

/// How one generation is constrained.
#[derive(Debug, Clone)]
pub(crate) enum Constraint {
    /// Free text.
    None,
    /// Tool calls in `format`; `grammar` applies after the trigger when
    /// `lazy`, from the first token otherwise.
    Tools {
        format: CallFormat,
        grammar: String,
        trigger_patterns: Vec<String>,
        lazy: bool,
        tools: Vec<ToolSpec>,
    },
    /// The whole answer is JSON matching a schema.
    Json { grammar: String },
}

/// What the prompt shows and how decoding is constrained, for a request on a
/// model with `template`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The conversation to render (tools described in it for
    /// [`CallFormat::Generic`]).
    pub(crate) messages: Vec<Message>,
    /// Tools for the template's `tools` variable (empty when the template
    /// cannot render them or none are offered).
    pub(crate) template_tools: Vec<ToolSpec>,
    /// The decoding constraint.
    pub(crate) constraint: Constraint,
}

/// Decides the prompt and the constraint of a request.
///
/// # Errors
/// A named tool that is not offered, a `required` choice with no tools, or a
/// schema llama.cpp cannot turn into a grammar.
pub(crate) fn plan(template: &str, request: &ChatRequest) -> Result<Plan, LlmError> {
    let offered = match &request.tool_choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Auto | ToolChoice::Required => request.tools.clone(),
        ToolChoice::Tool { name } => {
            let tool = request
                .tools
                .iter()
                .find(|tool| &tool.name == name)
                .cloned()
                .ok_or_else(|| {
                    error(
                        ErrorKind::InvalidRequest,
                        format!("tool_choice names `{name}`, which is not among the tools offered"),
                    )
                })?;
            vec![tool]
        }
    };
    if offered.is_empty() {
        if request.tool_choice == ToolChoice::Required {
            return Err(error(
                ErrorKind::InvalidRequest,
                "tool_choice is `required` but no tools are offered",
            ));
        }
        let constraint = match &request.response_format {
            Some(format) => Constraint::Json {
                grammar: schema_grammar(&response_schema(format))?,
            },
            None => Constraint::None,
        };
        return Ok(Plan {
            messages: request.messages.clone(),
            template_tools: Vec::new(),
            constraint,
        });
    }

    let format = CallFormat::detect(template);
    // One call per answer unless the request asks for more (llama.cpp's
    // server does the same): small models otherwise repeat a call until
    // they run out of tokens.
    let parallel = request.parallel_tool_calls == Some(true);
    let grammar = call_grammar(format, &offered, parallel)?;
    let (messages, template_tools) = if format == CallFormat::Generic {
        (describe_tools(&request.messages, &offered), Vec::new())
    } else {
        // The template shows every offered tool (the model keeps its
        // bearings); the grammar narrows a named choice to one.
        (request.messages.clone(), request.tools.clone())
    };
    Ok(Plan {
        messages,
        template_tools,
        constraint: Constraint::Tools {
            format,
            grammar,
            trigger_patterns: format.trigger_patterns(),
            lazy: request.tool_choice == ToolChoice::Auto,
            tools: offered,
        },
    })
}

/// The JSON Schema a response format asks for.
fn response_schema(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::JsonObject => serde_json::json!({"type": "object"}),
        ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
    }
}

/// A GBNF grammar for JSON matching `schema` (root rule `root`).
fn schema_grammar(schema: &Value) -> Result<String, LlmError> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        error(
            ErrorKind::InvalidRequest,
            format!("the JSON Schema cannot be enforced by a grammar: {e}"),
        )
    })
}

/// The grammar of one or more calls to `tools` in `format`.
fn call_grammar(
    format: CallFormat,
    tools: &[ToolSpec],
    parallel: bool,
) -> Result<String, LlmError> {
    let calls: Vec<String> = tools
        .iter()
        .map(|tool| call_schema(tool, format.arguments_key()))
        .collect();
    // Built as text so that `name` comes before the arguments (serde_json
    // would sort the keys): the order models are trained on.
    let schema = if calls.len() == 1 {
        calls[0].clone()
    } else {
        format!(r#"{{"anyOf":[{}]}}"#, calls.join(","))
    };
    let converted = llama_cpp_2::json_schema_to_grammar(&schema).map_err(|e| {
        error(
            ErrorKind::InvalidRequest,
            format!("a tool's parameter schema cannot be enforced by a grammar: {e}"),
        )
    })?;
    let call_rules = rename_root(&converted, "fh-call");
    let repeat = |one: &str, separator: &str| {
        if parallel {
            format!("{one} ({separator}{one})*")
        } else {
            one.to_owned()
        }
    };
    let root = match format {
        // Tagged calls, or one bare call (see `CallFormat::markers`).
        CallFormat::Hermes | CallFormat::Generic => format!(
            "root ::= {} | fh-call\nfh-block ::= \"<tool_call>\" fh-ws fh-call fh-ws \"</tool_call>\"\n",
            repeat("fh-block", "fh-ws ")
        ),
        CallFormat::Mistral => format!(
            "root ::= \"[TOOL_CALLS]\" fh-ws \"[\" fh-ws {} fh-ws \"]\"\n",
            repeat("fh-call", "fh-ws \",\" fh-ws ")
        ),
        CallFormat::Llama3 => "root ::= fh-call\n".to_owned(),
    };
    Ok(format!("{root}fh-ws ::= [ \\t\\n]{{0,4}}\n{call_rules}"))
}

/// The JSON Schema of one call: `{"name": <the tool's name>, <key>: <its
/// parameters>}`, nothing else.
fn call_schema(tool: &ToolSpec, arguments_key: &str) -> String {
    let mut parameters = tool.parameters.clone();
    if !parameters.is_object() || parameters.get("type").is_none() {
        parameters = serde_json::json!({"type": "object"});
    }
    // Unlisted arguments are refused unless the schema allows them: a small
    // model otherwise pads calls with invented keys.
    if let Some(object) = parameters.as_object_mut()
        && object.contains_key("properties")
        && !object.contains_key("additionalProperties")
    {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    let name = Value::String(tool.name.clone());
    format!(
        r#"{{"type":"object","properties":{{"name":{{"const":{name}}},"{arguments_key}":{parameters}}},"required":["name","{arguments_key}"],"additionalProperties":false}}"#
    )
}

/// Renames the `root` rule of a converted grammar (its definition and any
/// reference to it) so that it can be embedded in another.
fn rename_root(grammar: &str, new_name: &str) -> String {
    let mut out = String::with_capacity(grammar.len());
    for line in grammar.lines() {
        let line = match line.strip_prefix("root ::=") {
            Some(rest) => format!("{new_name} ::={rest}"),
            None => line.to_owned(),
        };
        out.push_str(&replace_rule_reference(&line, "root", new_name));
        out.push('\n');
    }
    out
}

/// Replaces references to rule `from` outside quoted strings and character
/// classes (rule names are `[a-zA-Z0-9-]+`, so `root-1` is another rule).
fn replace_rule_reference(line: &str, from: &str, to: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'[') => {
                let close = if quote == b'"' { b'"' } else { b']' };
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != close {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                out.push_str(&line[start..i]);
            }
            b if is_name(b) => {
                let start = i;
                while i < bytes.len() && is_name(bytes[i]) {
                    i += 1;
                }
                let word = &line[start..i];
                out.push_str(if word == from { to } else { word });
            }
            _ => {
                // Multi-byte characters only occur inside strings, which are
                // copied whole above; copy one char to stay on a boundary.
                let ch = line[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// The conversation with the tools described in its system message, and
/// earlier calls and results written out as text, for templates that know
/// nothing of tools.
fn describe_tools(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
    let mut description = String::from(
        "You can call tools. They are described in JSON inside <tools></tools>:\n<tools>\n",
    );
    for tool in tools {
        description.push_str(&super::template::template_tool(tool).to_string());
        description.push('\n');
    }
    description.push_str(
        "</tools>\nTo call a tool, answer with only:\n<tool_call>\n{\"name\": \"<tool name>\", \"arguments\": {<arguments>}}\n</tool_call>\nOtherwise answer normally.",
    );
    // Leading system messages become one, followed by the description.
    let leading = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let mut system: Vec<String> = messages[..leading]
        .iter()
        .map(Message::text_content)
        .collect();
    system.push(description);
    let mut out = Vec::with_capacity(messages.len() + 1);
    out.push(Message::system(system.join("\n\n")));
    out.extend(messages[leading..].iter().map(written_out));
    out
}

/// A message whose tool calls and results are written as text in the Hermes
/// format.
fn written_out(message: &Message) -> Message {
    use freehold_protocol::ContentPart;
    let mut text = String::new();
    for part in &message.content {
        match part {
            ContentPart::Text { text: t } => text.push_str(t),
            ContentPart::ToolCall(call) => {
                let arguments: Value = serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                let body = serde_json::json!({"name": call.name, "arguments": arguments});
                text.push_str(&format!("\n<tool_call>\n{body}\n</tool_call>"));
            }
            ContentPart::ToolResult(result) => {
                text.push_str(&format!(
                    "<tool_response>\n{}\n</tool_response>\n",
                    result.content
                ));
            }
            ContentPart::Document(document) => text.push_str(&document.note_paragraph()),
            ContentPart::Reasoning(_) | ContentPart::Image { .. } => {}
        }
    }
    let role = if message.role == Role::Tool {
        Role::User
    } else {
        message.role
    };
    Message {
        role,
        content: vec![ContentPart::Text {
            text: text.trim().to_owned(),
        }],
    }
}

/// The calls in the text a model printed from its marker on; `None` when
/// none could be read (the text is then shown as it is).
pub(crate) fn parse_calls(
    format: CallFormat,
    text: &str,
    tools: &[ToolSpec],
) -> Option<Vec<ToolCall>> {
    let body = match format {
        CallFormat::Mistral => text.trim_start().strip_prefix("[TOOL_CALLS]")?,
        _ => text,
    };
    let recovered = text_tools::recover(body, tools)?;
    (!recovered.calls.is_empty()).then_some(recovered.calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: "d".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"]
            }),
            strict: false,
        }
    }

    #[test]
    fn formats_are_read_from_templates() {
        assert_eq!(
            CallFormat::detect("{% if tools %}<tool_call>{% endif %}"),
            CallFormat::Hermes
        );
        assert_eq!(
            CallFormat::detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            CallFormat::Mistral
        );
        assert_eq!(
            CallFormat::detect("{% if tools %}<|python_tag|>{% endif %}"),
            CallFormat::Llama3
        );
        assert_eq!(
            CallFormat::detect("{{ messages[0].content }}"),
            CallFormat::Generic
        );
    }

    #[test]
    fn root_references_are_renamed_but_not_lookalikes() {
        let grammar = "root ::= \"{\" root-a \"root\" [root] root\nroot-a ::= \"x\"\n";
        assert_eq!(
            rename_root(grammar, "fh-call"),
            "fh-call ::= \"{\" root-a \"root\" [root] fh-call\nroot-a ::= \"x\"\n"
        );
    }

    #[test]
    fn call_grammar_embeds_the_converted_schema() {
        let grammar =
            call_grammar(CallFormat::Hermes, &[tool("read"), tool("list")], true).unwrap();
        assert!(
            grammar.starts_with("root ::= fh-block (fh-ws fh-block)* | fh-call\n"),
            "{grammar}"
        );
        assert!(grammar.contains("fh-call ::="), "{grammar}");
        assert!(
            !grammar.lines().any(|l| l.starts_with("root ::= (")),
            "{grammar}"
        );
        assert!(
            grammar.contains("read") && grammar.contains("list"),
            "{grammar}"
        );
    }

    #[test]
    fn a_named_tool_must_be_offered() {
        let mut request = ChatRequest::new("m", vec![Message::user("hi")]);
        request.tools = vec![tool("read")];
        request.tool_choice = ToolChoice::Tool {
            name: "write".into(),
        };
        let err = plan("<tool_call> tools", &request).unwrap_err();
        assert!(err.message.contains("write"), "{err}");
        request.tools.clear();
        request.tool_choice = ToolChoice::Required;
        assert!(plan("", &request).is_err());
    }

    #[test]
    fn generic_templates_get_tools_in_the_system_prompt() {
        let mut request = ChatRequest::new(
            "m",
            vec![Message::system("Be brief."), Message::user("read a.rs")],
        );
        request.tools = vec![tool("read")];
        let plan = plan("{{ messages }}", &request).unwrap();
        assert!(plan.template_tools.is_empty());
        let system = plan.messages[0].text_content();
        assert!(system.starts_with("Be brief.\n\n"), "{system}");
        assert!(system.contains("\"name\":\"read\""), "{system}");
        assert_eq!(plan.messages.len(), 2);
        assert!(matches!(
            plan.constraint,
            Constraint::Tools {
                format: CallFormat::Generic,
                lazy: true,
                ..
            }
        ));
    }

    #[test]
    fn printed_calls_are_parsed_per_format() {
        let tools = [tool("read")];
        let hermes =
            "<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}\n</tool_call>";
        let calls = parse_calls(CallFormat::Hermes, hermes, &tools).unwrap();
        assert_eq!(calls[0].arguments, r#"{"path":"a"}"#);
        let mistral = "[TOOL_CALLS][{\"name\": \"read\", \"arguments\": {\"path\": \"b\"}}]";
        let calls = parse_calls(CallFormat::Mistral, mistral, &tools).unwrap();
        assert_eq!(calls[0].arguments, r#"{"path":"b"}"#);
        let llama = "{\"name\": \"read\", \"parameters\": {\"path\": \"c\"}}";
        let calls = parse_calls(CallFormat::Llama3, llama, &tools).unwrap();
        assert_eq!(calls[0].arguments, r#"{"path":"c"}"#);
    }
}
