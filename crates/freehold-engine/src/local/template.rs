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
    /// For an assistant message: the model's reasoning, where the client
    /// sent it back (the field vLLM's and llama.cpp's servers give
    /// templates). Templates of thinking models (Qwen3's) render it in the
    /// turns of an agent's tool loop, so the prompt reads as the model
    /// wrote it, and the cached prefix still matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
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
            reasoning_content: None,
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
            let mut reasoning = String::new();
            let mut calls = Vec::new();
            for part in &message.content {
                match part {
                    ContentPart::Text { text: t } => text.push_str(t),
                    // Reasoning that another provider signed (Claude's, an
                    // OpenAI model's, Gemini's) or redacted was not this
                    // model's: it is left out, as it is for every
                    // provider of another protocol. What the engine (or an
                    // open model's server) wrote has no signature.
                    ContentPart::Reasoning(thought)
                        if thought.signature.is_none() && !thought.redacted =>
                    {
                        if !reasoning.is_empty() && !thought.text.is_empty() {
                            reasoning.push_str("\n\n");
                        }
                        reasoning.push_str(&thought.text);
                    }
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
                        reasoning_content: None,
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
                    reasoning_content: (role == "assistant" && !reasoning.is_empty())
                        .then_some(reasoning),
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
/// `enable_thinking`, where set, is given to the template under that name
/// (Qwen3's switch, which vLLM's and llama.cpp's servers pass the same way);
/// unset, the template does what it does by default.
///
/// # Errors
/// A template that does not parse, or that fails (`raise_exception`).
pub fn render(
    template: &str,
    messages: &[TemplateMessage],
    tools: &[serde_json::Value],
    bos_token: &str,
    eos_token: &str,
    enable_thinking: Option<bool>,
) -> Result<String, Error> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)?;
    let tmpl = env.get_template("chat")?;
    // Left undefined when unset: templates test `enable_thinking is defined`,
    // and some read a `none` as off.
    let thinking_switch = match enable_thinking {
        Some(on) => context! { enable_thinking => on },
        None => context! {},
    };
    tmpl.render(context! {
        messages => Value::from_serialize(messages),
        // `none` rather than an empty list when there are none: templates
        // test `{% if tools %}` but also `{% if tools is not none %}`.
        tools => if tools.is_empty() { Value::from(()) } else { Value::from_serialize(tools) },
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
        ..thinking_switch
    })
}

/// Where an answer's text may hold the model's thinking in `<think>` tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingTags {
    /// The template knows no such tags: the text is all answer, whatever
    /// it says.
    None,
    /// The template knows them and leaves opening them to the model
    /// (Qwen3's hybrid models).
    MayOpen,
    /// The prompt ends inside an opened `<think>` (DeepSeek-R1's distilled
    /// models, QwQ, Qwen3's thinking-only models): the answer starts in the
    /// thinking.
    Opened,
}

impl ThinkingTags {
    /// What `template`, rendered as `prompt`, leaves to the model.
    pub fn of(template: &str, prompt: &str) -> Self {
        if !template.contains(freehold_llm::think::CLOSE) {
            ThinkingTags::None
        } else if prompt.trim_end().ends_with(freehold_llm::think::OPEN) {
            ThinkingTags::Opened
        } else {
            ThinkingTags::MayOpen
        }
    }
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
        let out = render(CHATML_TEMPLATE, &messages(), &[], "", "", None).unwrap();
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
            None,
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
        assert!(render(ALTERNATING, &as_sent, &[], "", "", None).is_err());
        let folded = freehold_protocol::fold_system_messages(&conversation).unwrap();
        assert_eq!(
            render(
                ALTERNATING,
                &TemplateMessage::from_messages(&folded),
                &[],
                "",
                "",
                None
            )
            .unwrap(),
            "<system>Top.<user>hi\n\nEnv.<assistant>hello<user>go\n\nNow in Go."
        );
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let err = render(
            "{{ raise_exception('no') }}",
            &messages(),
            &[],
            "",
            "",
            None,
        )
        .unwrap_err();
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
        let out = render(template, &user, &[], "", "", None).unwrap();
        assert!(
            out.ends_with("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"),
            "{out:?}"
        );
        assert!(out.starts_with("<|im_start|>system\n"), "{out:?}");
    }

    /// A thinking template in short, as Qwen3's hybrid models have it: an
    /// assistant turn after the last user message shows its reasoning (from
    /// `reasoning_content`) in `<think>` tags; earlier turns do not; the
    /// switch `enable_thinking` false closes an empty thinking in the
    /// generation prompt.
    const HYBRID: &str = "{% set ns = namespace(last_user=0) %}\
{% for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}\
{% for m in messages %}<{{ m.role }}>\
{% if m.role == 'assistant' and loop.index0 > ns.last_user and m.reasoning_content is string %}\
<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}{% endfor %}\
<assistant>{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}";

    #[test]
    fn reasoning_sent_back_reaches_the_template() {
        use freehold_protocol::{ContentPart, Reasoning, ToolCall, ToolResult};
        let thought = |text: &str, redacted: bool| {
            ContentPart::Reasoning(Reasoning {
                text: text.into(),
                redacted,
                ..Reasoning::default()
            })
        };
        let conversation = [
            Message::user("Read a.txt"),
            Message {
                role: Role::Assistant,
                content: vec![
                    thought("I should read it.", false),
                    thought("Then answer.", false),
                    thought("", true),
                    ContentPart::Reasoning(Reasoning {
                        text: "Claude's own thinking.".into(),
                        signature: Some("sig".into()),
                        origin: Some("anthropic".into()),
                        ..Reasoning::default()
                    }),
                    ContentPart::ToolCall(ToolCall::new("c1", "read", "{}")),
                ],
            },
            Message {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(ToolResult {
                    call_id: "c1".into(),
                    content: "hi".into(),
                    is_error: false,
                })],
            },
        ];
        let messages = TemplateMessage::from_messages(&conversation);
        assert_eq!(
            messages[1].reasoning_content.as_deref(),
            Some("I should read it.\n\nThen answer.")
        );
        assert_eq!(messages[2].reasoning_content, None);
        let out = render(HYBRID, &messages, &[], "", "", None).unwrap();
        assert_eq!(
            out,
            "<user>Read a.txt<assistant><think>I should read it.\n\nThen answer.</think><tool>hi<assistant>"
        );
        // A message without reasoning has no such field at all.
        let plain = TemplateMessage::from_messages(&[Message::assistant("ok")]);
        assert_eq!(plain[0].reasoning_content, None);
        assert!(
            !serde_json::to_string(&plain[0])
                .unwrap()
                .contains("reasoning")
        );
    }

    #[test]
    fn enable_thinking_is_given_only_when_asked() {
        let user = [TemplateMessage::text("user", "Hi")];
        let shown =
            "{% if enable_thinking is defined %}{{ enable_thinking }}{% else %}unset{% endif %}";
        assert_eq!(render(shown, &user, &[], "", "", None).unwrap(), "unset");
        // Printed as Python prints it, as Hugging Face's renderer does.
        assert_eq!(
            render(shown, &user, &[], "", "", Some(false)).unwrap(),
            "False"
        );
        assert_eq!(
            render(shown, &user, &[], "", "", Some(true)).unwrap(),
            "True"
        );
        assert_eq!(
            render(HYBRID, &user, &[], "", "", Some(false)).unwrap(),
            "<user>Hi<assistant><think></think>"
        );
    }

    #[test]
    fn thinking_tags_are_read_from_the_template_and_the_prompt() {
        let user = [TemplateMessage::text("user", "Hi")];
        let opened = "{% for m in messages %}<{{ m.role }}>{{ m.content.split('</think>')[-1] }}\
{% endfor %}<assistant><think>\n";
        for (template, thinking, expected) in [
            (CHATML_TEMPLATE, None, ThinkingTags::None),
            (HYBRID, None, ThinkingTags::MayOpen),
            (HYBRID, Some(false), ThinkingTags::MayOpen),
            (opened, None, ThinkingTags::Opened),
        ] {
            let prompt = render(template, &user, &[], "", "", thinking).unwrap();
            assert_eq!(ThinkingTags::of(template, &prompt), expected, "{prompt:?}");
        }
    }
}
