//! Conversation messages and their content parts.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model. Providers with a separate system field
    /// (Anthropic, Gemini) receive all system messages joined there.
    System,
    /// The person (or program) talking to the model.
    User,
    /// The model.
    Assistant,
    /// Results of tool calls, sent back to the model.
    Tool,
}

/// The conversation with at most one system message, first: the leading
/// system messages joined into one, every later one (a mid-conversation
/// instruction, as Claude Code sends) made a user message (after the tool
/// results, when it came between an assistant's calls and their results),
/// and user messages that then follow one another joined into one; joined
/// parts are separated by a blank line. For chat templates that allow a system
/// message only at the start, or roles that only alternate (some Qwen,
/// Gemma and Mistral templates). `None` when the conversation already has
/// that shape, so nothing would change, or when it has no user message to
/// answer.
pub fn fold_system_messages(messages: &[Message]) -> Option<Vec<Message>> {
    let leading = messages
        .iter()
        .take_while(|message| message.role == Role::System)
        .count();
    let late = messages[leading..]
        .iter()
        .any(|message| message.role == Role::System);
    if leading <= 1 && !late {
        return None;
    }
    let mut folded: Vec<Message> = Vec::with_capacity(messages.len());
    if leading > 0 {
        let mut system = Message {
            role: Role::System,
            content: Vec::new(),
        };
        for message in &messages[..leading] {
            join_parts(&mut system.content, message.content.clone());
        }
        folded.push(system);
    }
    // A system message that comes between an assistant's tool calls and
    // their results waits until the results are past: servers want the
    // results right after the calls.
    let mut waiting: Option<Message> = None;
    for message in &messages[leading..] {
        let mut message = message.clone();
        if message.role == Role::System {
            message.role = Role::User;
            let amid_results = folded.last().is_some_and(|last| {
                last.role == Role::Tool
                    || (last.role == Role::Assistant && last.tool_calls().next().is_some())
            });
            if amid_results || waiting.is_some() {
                match &mut waiting {
                    Some(held) => join_parts(&mut held.content, message.content),
                    None => waiting = Some(message),
                }
                continue;
            }
        } else if message.role != Role::Tool
            && let Some(held) = waiting.take()
        {
            push_joining_users(&mut folded, held);
        }
        push_joining_users(&mut folded, message);
    }
    if let Some(held) = waiting {
        push_joining_users(&mut folded, held);
    }
    // A conversation of system messages only would fold to instructions
    // with nothing to answer, which some templates drop without a word.
    folded
        .iter()
        .any(|message| message.role == Role::User)
        .then_some(folded)
}

/// Pushes `message`, or joins it to the last one when both are user
/// messages.
fn push_joining_users(messages: &mut Vec<Message>, message: Message) {
    match messages.last_mut() {
        Some(last) if last.role == Role::User && message.role == Role::User => {
            join_parts(&mut last.content, message.content);
        }
        _ => messages.push(message),
    }
}

/// Appends `more` to `content`, with a blank line between when both show
/// something (text or an image) that would otherwise run together.
fn join_parts(content: &mut Vec<ContentPart>, mut more: Vec<ContentPart>) {
    let shows = |parts: &[ContentPart]| {
        parts.iter().any(|part| match part {
            ContentPart::Text { text } => !text.is_empty(),
            ContentPart::Image { .. } => true,
            _ => false,
        })
    };
    if shows(content) && shows(&more) {
        content.push(ContentPart::Text {
            text: "\n\n".into(),
        });
    }
    content.append(&mut more);
}

/// One message of a conversation: a role and an ordered list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it contains, in order.
    pub content: Vec<ContentPart>,
}

impl Message {
    /// A message with the given role holding one text part.
    pub fn from_text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![ContentPart::Text { text: text.into() }],
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::from_text(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::from_text(Role::User, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::from_text(Role::Assistant, text)
    }

    /// A tool message carrying one tool result.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: vec![ContentPart::ToolResult(ToolResult {
                call_id: call_id.into(),
                content: content.into(),
                is_error: false,
            })],
        }
    }

    /// All text parts concatenated (reasoning, tool calls and images skipped).
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// [`Message::text_content`] with each document's [`Document::note`]
    /// in its place, on its own line: what a provider that reads no
    /// documents gets.
    pub fn text_with_document_notes(&self) -> String {
        text_with_document_notes(&self.content)
    }

    /// The same message with each document replaced by its
    /// [`Document::note`], as a provider that reads no documents gets it.
    pub fn into_document_notes(mut self) -> Message {
        for part in &mut self.content {
            if let ContentPart::Document(document) = part {
                *part = ContentPart::Text {
                    text: document.note_paragraph(),
                };
            }
        }
        self
    }

    /// Whether the message carries a document.
    pub fn has_document(&self) -> bool {
        self.content
            .iter()
            .any(|part| matches!(part, ContentPart::Document(_)))
    }

    /// Alias of [`Message::text_content`], reads better on responses.
    pub fn text(&self) -> String {
        self.text_content()
    }

    /// The tool calls this message makes, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.content.iter().filter_map(|part| match part {
            ContentPart::ToolCall(call) => Some(call),
            _ => None,
        })
    }
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, inline or by URL.
    Image {
        /// Where the image bytes are.
        source: ImageSource,
    },
    /// A call of a tool, made by the assistant.
    ToolCall(ToolCall),
    /// The result of a tool call, sent back in a [`Role::Tool`] message.
    ToolResult(ToolResult),
    /// The model's reasoning ("thinking"), with the opaque signature some
    /// providers require to be sent back unchanged on the next turn.
    Reasoning(Reasoning),
    /// A document the model reads, such as a PDF.
    Document(Document),
}

/// The text of `parts` with each document's [`Document::note`] in its
/// place ([`Message::text_with_document_notes`]).
pub fn text_with_document_notes(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            ContentPart::Text { text } => out.push_str(text),
            ContentPart::Document(document) => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&document.note());
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// A document the model reads as a whole (a PDF: its text and its pages'
/// images), inline or by URL. Providers that read documents (Anthropic,
/// Gemini, OpenAI's API) get it in their own form; the others get
/// [`Document::note`] in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Where its bytes are, with their MIME type (`application/pdf`).
    pub source: DocumentSource,
    /// Its name or title, where the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Where a document's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DocumentSource {
    /// Base64-encoded bytes with their media type.
    Base64 {
        /// The MIME type, such as `application/pdf`.
        media_type: String,
        /// The base64 text (no `data:` prefix).
        data: String,
    },
    /// An `https://` URL the provider fetches.
    Url {
        /// The URL.
        url: String,
    },
}

impl Document {
    /// A rough count of the tokens a provider that reads the document
    /// spends on it: a PDF costs its pages' text and an image of each page,
    /// about a token for each 30 bytes of the file, and at least a page's
    /// worth (2,000).
    pub fn estimated_tokens(&self) -> u64 {
        match &self.source {
            DocumentSource::Base64 { data, .. } => ((data.len() as u64) * 3 / 4 / 30).max(2_000),
            DocumentSource::Url { .. } => 2_000,
        }
    }

    /// What a model that cannot read documents is told in the document's
    /// place, so that it can say so or turn to a tool (`pdftotext`).
    pub fn note(&self) -> String {
        let title = self.title.as_deref().unwrap_or("untitled");
        let what = match &self.source {
            DocumentSource::Base64 { media_type, data } => {
                format!(
                    "{media_type}, about {} KB",
                    (data.len() * 3 / 4).div_ceil(1024)
                )
            }
            DocumentSource::Url { url } => format!("at {url}"),
        };
        format!(
            "[A document was attached here ({title}: {what}), but this model cannot read \
             documents; ask for its text, or extract it with a tool.]"
        )
    }

    /// [`Document::note`] on a line of its own, as it goes among a
    /// message's text.
    pub fn note_paragraph(&self) -> String {
        format!("\n{}\n", self.note())
    }

    /// What a model that reads documents of other types is told in the
    /// place of one whose type it cannot read (Anthropic reads PDFs only).
    pub fn type_note(&self) -> String {
        let title = self.title.as_deref().unwrap_or("untitled");
        let media_type = match &self.source {
            DocumentSource::Base64 { media_type, .. } => media_type.as_str(),
            DocumentSource::Url { .. } => "a file by URL",
        };
        format!(
            "[A file was attached here ({title}: {media_type}), a type this model cannot read; \
             ask for it as PDF or text, or convert it with a tool.]"
        )
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// Base64-encoded bytes with their media type (`image/png`…).
    Base64 {
        /// The MIME type, such as `image/png`.
        media_type: String,
        /// The base64 text (no `data:` prefix).
        data: String,
    },
    /// An `https://` or `data:` URL.
    Url {
        /// The URL.
        url: String,
    },
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of this call; tool results refer to it.
    pub id: String,
    /// The tool's name, one of the request's [`crate::ToolSpec`]s.
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them (it may
    /// be invalid JSON: the caller decides what to do with that).
    pub arguments: String,
    /// An opaque signature that must be sent back with this call (Gemini's
    /// `thoughtSignature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl ToolCall {
    /// A call without a signature.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            signature: None,
        }
    }
}

/// The outcome of a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers.
    pub call_id: String,
    /// The result, as text.
    pub content: String,
    /// Whether the tool failed (the content then describes the failure).
    #[serde(default)]
    pub is_error: bool,
}

/// Reasoning produced by a model before its answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reasoning {
    /// The readable reasoning text (may be empty when the provider hides it).
    pub text: String,
    /// An opaque signature (Anthropic `signature`, OpenAI `encrypted_content`)
    /// that must be sent back unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// True when the provider redacted the reasoning; `signature` then holds the
    /// opaque data to send back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// The provider's id for this reasoning item, where it has one (OpenAI
    /// Responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Which wire protocol produced `signature` (`anthropic`,
    /// `openai-responses`, `gemini`). A signature only means something to
    /// the protocol that made it: clients send signed reasoning back only
    /// when the origin is theirs (or unknown), so a conversation can move
    /// between providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Reasoning {
    /// Whether this reasoning's signature may be sent to `protocol`: it came
    /// from that protocol, or its origin is unknown.
    pub fn signed_for(&self, protocol: &str) -> bool {
        self.signature.is_some()
            && self
                .origin
                .as_deref()
                .is_none_or(|origin| origin == protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_fold_to_one_first() {
        let conversation = [
            Message::system("Top."),
            Message::user("hi"),
            Message::system("Env."),
            Message::assistant("hello"),
            Message::tool_result("c1", "out"),
            Message::system("Now in Go."),
            Message::user("go"),
        ];
        let folded = fold_system_messages(&conversation).unwrap();
        let text = |message: &Message| (message.role, message.text_content());
        assert_eq!(
            folded.iter().map(text).collect::<Vec<_>>(),
            [
                (Role::System, "Top.".to_owned()),
                (Role::User, "hi\n\nEnv.".to_owned()),
                (Role::Assistant, "hello".to_owned()),
                (Role::Tool, String::new()),
                (Role::User, "Now in Go.\n\ngo".to_owned()),
            ]
        );
        // Leading system messages join (Codex's instructions and developer
        // message); a late one with no user message beside it becomes one
        // of its own.
        let folded = fold_system_messages(&[
            Message::system("A."),
            Message::system("B."),
            Message::assistant("x"),
            Message::system("C."),
        ])
        .unwrap();
        assert_eq!(
            folded.iter().map(text).collect::<Vec<_>>(),
            [
                (Role::System, "A.\n\nB.".to_owned()),
                (Role::Assistant, "x".to_owned()),
                (Role::User, "C.".to_owned()),
            ]
        );
        let folded = fold_system_messages(&[
            Message::system("A."),
            Message::system("B."),
            Message::user("hi"),
        ])
        .unwrap();
        assert_eq!(folded.len(), 2);
        // No blank line beside a part that shows nothing: a tool result, an
        // empty text.
        let mut results = Message::tool_result("c2", "done");
        results.role = Role::User;
        let folded = fold_system_messages(&[
            Message::assistant("calling"),
            results,
            Message::system("S."),
            Message::system(""),
        ])
        .unwrap();
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[1].text_content(), "S.");
        assert_eq!(
            fold_system_messages(&[Message::system("A."), Message::user("hi")]),
            None
        );
        // Between an assistant's calls and their results, a system message
        // waits for the results to pass.
        let calling = Message {
            role: Role::Assistant,
            content: vec![
                ContentPart::ToolCall(ToolCall::new("c1", "read", "{}")),
                ContentPart::ToolCall(ToolCall::new("c2", "read", "{}")),
            ],
        };
        let folded = fold_system_messages(&[
            Message::user("q"),
            calling.clone(),
            Message::system("Mid."),
            Message::tool_result("c1", "one"),
            Message::system("Later."),
            Message::tool_result("c2", "two"),
            Message::user("next"),
        ])
        .unwrap();
        assert_eq!(
            folded,
            [
                Message::user("q"),
                calling.clone(),
                Message::tool_result("c1", "one"),
                Message::tool_result("c2", "two"),
                Message {
                    role: Role::User,
                    content: vec![
                        ContentPart::Text {
                            text: "Mid.".into()
                        },
                        ContentPart::Text {
                            text: "\n\n".into()
                        },
                        ContentPart::Text {
                            text: "Later.".into()
                        },
                        ContentPart::Text {
                            text: "\n\n".into()
                        },
                        ContentPart::Text {
                            text: "next".into()
                        },
                    ],
                },
            ]
        );
        // Held to the end when nothing follows the results; before an
        // assistant message, it goes out just before it.
        let folded = fold_system_messages(&[
            Message::user("q"),
            calling.clone(),
            Message::system("End."),
            Message::tool_result("c1", "one"),
        ])
        .unwrap();
        assert_eq!(
            folded.iter().map(text).collect::<Vec<_>>(),
            [
                (Role::User, "q".to_owned()),
                (Role::Assistant, String::new()),
                (Role::Tool, String::new()),
                (Role::User, "End.".to_owned()),
            ]
        );
        let folded = fold_system_messages(&[
            Message::user("q"),
            calling,
            Message::system("Env."),
            Message::tool_result("c1", "one"),
            Message::assistant("done"),
        ])
        .unwrap();
        assert_eq!(
            folded.iter().map(text).collect::<Vec<_>>(),
            [
                (Role::User, "q".to_owned()),
                (Role::Assistant, String::new()),
                (Role::Tool, String::new()),
                (Role::User, "Env.".to_owned()),
                (Role::Assistant, "done".to_owned()),
            ]
        );
        assert_eq!(fold_system_messages(&[]), None);
        assert_eq!(
            fold_system_messages(&[Message::system("A."), Message::system("B.")]),
            None
        );
    }
}
