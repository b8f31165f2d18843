//! Chat templates: a GGUF's `tokenizer.chat_template` (Jinja) rendered with
//! minijinja, with a ChatML fallback for models that carry none.

use freehold_protocol::{Message, Role};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

/// The ChatML template, used when a model carries no template of its own.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One message as chat templates expect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// The message's text.
    pub content: String,
}

impl TemplateMessage {
    /// The template form of a protocol message (text parts only; tool calls
    /// and images are out of scope for now).
    pub fn from_message(message: &Message) -> Self {
        let role = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        Self {
            role,
            content: message.text_content(),
        }
    }
}

/// Renders `template` for `messages`, ending with the generation prompt.
///
/// # Errors
/// A template that does not parse, or that fails (`raise_exception`).
pub fn render(
    template: &str,
    messages: &[TemplateMessage],
    bos_token: &str,
    eos_token: &str,
) -> Result<String, Error> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_template("chat", template)?;
    let tmpl = env.get_template("chat")?;
    tmpl.render(context! {
        messages => Value::from_serialize(messages),
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    })
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<TemplateMessage> {
        vec![
            TemplateMessage {
                role: "system",
                content: "Be brief.".into(),
            },
            TemplateMessage {
                role: "user",
                content: "Hi".into(),
            },
        ]
    }

    #[test]
    fn chatml_fallback_renders() {
        let out = render(CHATML_TEMPLATE, &messages(), "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let err = render("{{ raise_exception('no') }}", &messages(), "", "").unwrap_err();
        assert!(err.to_string().contains("no"));
    }

    #[test]
    fn smollm2_template_from_the_gguf() {
        let Some(dir) = std::env::var_os("FREEHOLD_TEST_MODELS") else {
            eprintln!("skipped: FREEHOLD_TEST_MODELS is unset");
            return;
        };
        let path = std::path::Path::new(&dir).join("SmolLM2-135M-Instruct.Q4_1.gguf");
        let gguf = crate::gguf::read_metadata(&path).unwrap();
        let template = gguf.chat_template().unwrap();
        let user = [TemplateMessage {
            role: "user",
            content: "Hello there".into(),
        }];
        let out = render(template, &user, "", "").unwrap();
        assert!(
            out.ends_with("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"),
            "{out:?}"
        );
        assert!(out.starts_with("<|im_start|>system\n"), "{out:?}");
    }
}
