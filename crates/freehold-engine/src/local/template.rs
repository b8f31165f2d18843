//! Chat templates: a GGUF's `tokenizer.chat_template` (Jinja) rendered with
//! minijinja, with a ChatML fallback for models that carry none.

use std::collections::HashMap;

use freehold_protocol::{ContentPart, Message, Role, ToolSpec};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

/// The ChatML template, used when a model carries no template of its own.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One message as chat templates expect it (the shape of OpenAI's Chat
/// Completions messages, which is what Hugging Face templates are written
/// against).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// The message's text.
    pub content: String,
    /// The calls an assistant message made (absent when none, so that
    /// `{% if message.tool_calls %}` reads false).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<TemplateToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a `tool` message: the name of the tool that was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A tool call inside an assistant [`TemplateMessage`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateToolCall {
    /// The call's id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The name and arguments.
    pub function: TemplateFunction,
}

/// The function of a [`TemplateToolCall`]; `arguments` is a JSON object (not
/// a string), which is what templates that `tojson` it expect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateFunction {
    /// The tool's name.
    pub name: String,
    /// The arguments.
    pub arguments: serde_json::Value,
}

impl TemplateMessage {
    /// A plain text message.
    pub fn text(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// The template form of a conversation. Tool results become one `tool`
    /// message each (Anthropic-style results inside a user message are split
    /// out, before that message's text); images are left out.
    pub fn from_messages(messages: &[Message]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::with_capacity(messages.len());
        let mut call_names: HashMap<String, String> = HashMap::new();
        for message in messages {
            let role = match message.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut text = String::new();
            let mut calls = Vec::new();
            for part in &message.content {
                match part {
                    ContentPart::Text { text: t } => text.push_str(t),
                    ContentPart::ToolCall(call) => {
                        call_names.insert(call.id.clone(), call.name.clone());
                        // Arguments that are not JSON are passed as a string
                        // rather than dropped.
                        let arguments = serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
                        calls.push(TemplateToolCall {
                            id: call.id.clone(),
                            kind: "function",
                            function: TemplateFunction {
                                name: call.name.clone(),
                                arguments,
                            },
                        });
                    }
                    ContentPart::ToolResult(result) => out.push(Self {
                        role: "tool",
                        content: result.content.clone(),
                        tool_calls: Vec::new(),
                        tool_call_id: Some(result.call_id.clone()),
                        name: call_names.get(&result.call_id).cloned(),
                    }),
                    // The engine reads text: a document is named, for the
                    // model to say so or turn to a tool.
                    ContentPart::Document(document) => text.push_str(&document.note_paragraph()),
                    ContentPart::Reasoning(_) | ContentPart::Image { .. } => {}
                }
            }
            if role == "tool" && text.is_empty() && calls.is_empty() {
                continue;
            }
            if !text.is_empty() || !calls.is_empty() || role != "user" || out.is_empty() {
                out.push(Self {
                    role,
                    content: text,
                    tool_calls: calls,
                    tool_call_id: None,
                    name: None,
                });
            }
        }
        out
    }
}

/// A tool as templates expect it: `{"type": "function", "function": {name,
/// description, parameters}}`.
pub fn template_tool(tool: &ToolSpec) -> serde_json::Value {
    serde_json::json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
    })
}

/// Whether a template renders the `tools` it is given (if not, tools have to
/// be described in the system prompt instead).
pub fn supports_tools(template: &str) -> bool {
    template.contains("tools")
}

/// Renders `template` for `messages`, ending with the generation prompt.
///
/// # Errors
/// A template that does not parse, or that fails (`raise_exception`).
pub fn render(
    template: &str,
    messages: &[TemplateMessage],
    tools: &[serde_json::Value],
    bos_token: &str,
    eos_token: &str,
) -> Result<String, Error> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)?;
    let tmpl = env.get_template("chat")?;
    tmpl.render(context! {
        messages => Value::from_serialize(messages),
        // `none` rather than an empty list when there are none: templates
        // test `{% if tools %}` but also `{% if tools is not none %}`.
        tools => if tools.is_empty() { Value::from(()) } else { Value::from_serialize(tools) },
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    })
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as Hugging Face renders it (Python's `json.dumps`): `", "` and
/// `": "` separators, non-ASCII kept, nothing HTML-escaped, `indent=N`
/// honoured. Models are trained on exactly this text, and earlier calls must
/// render as the model wrote them for the prefix cache to hit.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(width) => {
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(text))
}

/// Compact JSON with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<TemplateMessage> {
        vec![
            TemplateMessage::text("system", "Be brief."),
            TemplateMessage::text("user", "Hi"),
        ]
    }

    #[test]
    fn chatml_fallback_renders() {
        let out = render(CHATML_TEMPLATE, &messages(), &[], "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let out = render(
            "{{ messages[0] | tojson }}|{{ {'a': [1, 2]} | tojson(indent=2) }}",
            &[TemplateMessage::text("user", "<é>")],
            &[],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"<é>\"}|{\n  \"a\": [\n    1,\n    2\n  ]\n}"
        );
    }

    /// Gemma's rule, in short: roles alternate, and only the first
    /// message may be a system message.
    const ALTERNATING: &str = "{% for m in messages %}\
{% if m['role'] == 'system' and not loop.first %}{{ raise_exception('system only first') }}{% endif %}\
{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}{{ raise_exception('roles must alternate') }}{% endif %}\
<{{ m['role'] }}>{{ m['content'] }}{% endfor %}";

    #[test]
    fn folded_late_system_messages_render_where_they_were_refused() {
        let conversation = [
            Message::system("Top."),
            Message::user("hi"),
            Message::system("Env."),
            Message::assistant("hello"),
            Message::user("go"),
            Message::system("Now in Go."),
        ];
        let as_sent = TemplateMessage::from_messages(&conversation);
        assert!(render(ALTERNATING, &as_sent, &[], "", "").is_err());
        let folded = freehold_protocol::fold_system_messages(&conversation).unwrap();
        assert_eq!(
            render(
                ALTERNATING,
                &TemplateMessage::from_messages(&folded),
                &[],
                "",
                ""
            )
            .unwrap(),
            "<system>Top.<user>hi\n\nEnv.<assistant>hello<user>go\n\nNow in Go."
        );
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let err = render("{{ raise_exception('no') }}", &messages(), &[], "", "").unwrap_err();
        assert!(err.to_string().contains("no"));
    }

    #[test]
    fn smollm2_template_from_the_gguf() {
        let Some(path) = freehold_test_support::test_model("SmolLM2-135M-Instruct.Q4_1.gguf")
        else {
            return;
        };
        let gguf = crate::gguf::read_metadata(&path).unwrap();
        let template = gguf.chat_template().unwrap();
        let user = [TemplateMessage::text("user", "Hello there")];
        let out = render(template, &user, &[], "", "").unwrap();
        assert!(
            out.ends_with("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"),
            "{out:?}"
        );
        assert!(out.starts_with("<|im_start|>system\n"), "{out:?}");
    }
}
