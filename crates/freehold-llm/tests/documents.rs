//! A document (a PDF) a client attached reaches each provider in the form
//! it reads, and those that read none are told it is there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use freehold_llm::wire::openai_chat::Dialect;
use freehold_llm::wire::{anthropic, gemini, ollama, openai_chat, openai_responses};
use freehold_protocol::{ChatRequest, ContentPart, Document, DocumentSource, Message, Role};
use serde_json::{Value, json};

const PDF: &str = "JVBERi0xLjQK";

/// A conversation whose user message carries a PDF, as Claude Code's Read
/// of a `.pdf` arrives once decoded.
fn with_pdf(source: DocumentSource) -> ChatRequest {
    ChatRequest::new(
        "m",
        vec![Message {
            role: Role::User,
            content: vec![
                ContentPart::Text {
                    text: "Summarise it.".into(),
                },
                ContentPart::Document(Document {
                    source,
                    title: Some("spec.pdf".into()),
                }),
            ],
        }],
    )
}

fn inline() -> DocumentSource {
    DocumentSource::Base64 {
        media_type: "application/pdf".into(),
        data: PDF.into(),
    }
}

fn json_of<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn anthropic_gets_a_document_block() {
    let body = json_of(anthropic::encode_request(
        &with_pdf(inline()),
        anthropic::EncodeOptions::default(),
    ));
    assert_eq!(
        body["messages"][0]["content"][1],
        json!({"type": "document", "title": "spec.pdf",
               "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}})
    );
    let by_url = json_of(anthropic::encode_request(
        &with_pdf(DocumentSource::Url {
            url: "https://example.com/spec.pdf".into(),
        }),
        anthropic::EncodeOptions::default(),
    ));
    assert_eq!(
        by_url["messages"][0]["content"][1]["source"],
        json!({"type": "url", "url": "https://example.com/spec.pdf"})
    );
}

#[test]
fn gemini_gets_the_bytes_inline() {
    let body = json_of(gemini::encode_request(&with_pdf(inline())));
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "application/pdf", "data": PDF}})
    );
}

#[test]
fn openais_api_gets_a_file_and_other_servers_a_note() {
    let openai = Dialect {
        openai_api: true,
        ..Dialect::default()
    };
    let body = json_of(openai_chat::encode_request(
        &with_pdf(inline()),
        openai,
        false,
    ));
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "text", "text": "Summarise it."},
               {"type": "file", "file": {"filename": "spec.pdf",
                                         "file_data": format!("data:application/pdf;base64,{PDF}")}}])
    );
    // A compatible server (vLLM, llama.cpp…) reads text: it is told.
    let body = json_of(openai_chat::encode_request(
        &with_pdf(inline()),
        Dialect::default(),
        false,
    ));
    let text = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        text.starts_with("Summarise it.\n[A document was attached here (spec.pdf: application/pdf"),
        "{text}"
    );
    assert!(text.contains("cannot read documents"), "{text}");
    // Chat Completions takes no file URL: named, even to OpenAI.
    let body = json_of(openai_chat::encode_request(
        &with_pdf(DocumentSource::Url {
            url: "https://example.com/spec.pdf".into(),
        }),
        openai,
        false,
    ));
    assert!(
        body["messages"][0]["content"]
            .to_string()
            .contains("at https://example.com/spec.pdf"),
        "{body}"
    );

    let body = json_of(openai_responses::encode_request(
        &with_pdf(inline()),
        false,
        true,
    ));
    assert_eq!(
        body["input"][0]["content"][1],
        json!({"type": "input_file", "filename": "spec.pdf",
               "file_data": format!("data:application/pdf;base64,{PDF}")})
    );
}

#[test]
fn ollama_is_told_a_document_is_there() {
    let size = ollama::ContextSize {
        num_ctx: 8192,
        num_predict: 512,
    };
    let body = json_of(ollama::encode_request(&with_pdf(inline()), size, false).unwrap());
    let text = body["messages"][0]["content"].as_str().unwrap();
    assert!(text.contains("spec.pdf"), "{text}");
    assert!(text.contains("cannot read documents"), "{text}");
    assert!(body["messages"][0].get("images").is_none(), "{body}");
}

/// What Claude Code sends after reading a PDF: the document inside the
/// tool result. It reaches providers after the results, as images do; a
/// plain-text document is text.
#[test]
fn a_document_in_an_anthropic_tool_result_follows_the_results() {
    let wire: anthropic::MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Read spec.pdf."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "spec.pdf"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "PDF file read: spec.pdf"},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}]},
                {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "Ship it."}}]}
        ]
    }))
    .unwrap();
    let (request, _) = anthropic::decode_request(wire).unwrap();
    assert_eq!(request.messages[2].role, Role::Tool);
    assert_eq!(
        request.messages[3].content,
        [
            ContentPart::Document(Document {
                source: inline(),
                title: None
            }),
            ContentPart::Text {
                text: "notes\n\nShip it.".into()
            }
        ]
    );
}

/// A provider that reads no documents is sized by what it gets, the note,
/// not by the PDF's bytes: a 2 MB PDF fits a small Ollama context.
#[test]
fn a_text_only_provider_is_sized_by_the_note() {
    let mut request = with_pdf(DocumentSource::Base64 {
        media_type: "application/pdf".into(),
        data: "A".repeat(2_800_000),
    });
    request.max_tokens = Some(1_000);
    let size =
        ollama::size_context(&request, &ollama::NumCtxPolicy::default(), Some(40_960)).unwrap();
    assert_eq!(size.num_ctx, 8_192);
    // A provider that reads it counts it.
    assert!(request.estimated_input_tokens() > 60_000);
}

/// A Responses server that is not OpenAI's is told a document is there;
/// a file of another type than PDF reaches Anthropic named, not as a
/// document it would refuse.
#[test]
fn documents_go_only_where_they_are_read() {
    let body = json_of(openai_responses::encode_request(
        &with_pdf(inline()),
        false,
        false,
    ));
    let part = &body["input"][0]["content"][1];
    assert_eq!(part["type"], "input_text", "{body}");
    assert!(
        part["text"]
            .as_str()
            .unwrap()
            .contains("cannot read documents")
    );

    let docx = with_pdf(DocumentSource::Base64 {
        media_type: "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            .into(),
        data: PDF.into(),
    });
    let body = json_of(anthropic::encode_request(
        &docx,
        anthropic::EncodeOptions::default(),
    ));
    assert_eq!(body["messages"][0]["content"][1]["type"], "text", "{body}");
}

/// A prompt cached through the gateway is cached up to and with the PDF:
/// the mark goes on the document, the conversation's last block.
#[test]
fn the_cache_mark_covers_the_document() {
    let mut request = with_pdf(inline());
    request.prompt_cache = Some(json!({"type": "ephemeral"}));
    let body = json_of(anthropic::encode_request(
        &request,
        anthropic::EncodeOptions::default(),
    ));
    assert_eq!(
        body["messages"][0]["content"][1]["cache_control"],
        json!({"type": "ephemeral"}),
        "{body}"
    );
}

/// OpenAI-shaped files: an image file is an image, a text file its text, a
/// PDF a document, in Chat Completions parts and in a Responses tool
/// output alike.
#[test]
fn openai_shaped_files_are_read_by_their_type() {
    let text = "bm90ZXM="; // "notes"
    let wire: openai_chat::CompletionRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": format!("data:image/png;base64,{PDF}")}},
            {"type": "file", "file": {"file_data": format!("data:text/plain;base64,{text}"),
                                      "filename": "n.txt"}},
            {"type": "file", "file": {"file_data": PDF, "filename": "spec.pdf"}}]}]
    }))
    .unwrap();
    let (request, _) = openai_chat::decode_request(wire).unwrap();
    let content = &request.messages[0].content;
    assert!(
        matches!(content[0], ContentPart::Image { .. }),
        "{content:?}"
    );
    assert_eq!(
        content[1],
        ContentPart::Text {
            text: "n.txt\n\nnotes\n".into()
        }
    );
    assert_eq!(
        content[2],
        ContentPart::Document(Document {
            source: inline(),
            title: Some("spec.pdf".into())
        })
    );

    let wire: openai_responses::ResponsesRequest = serde_json::from_value(json!({
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "Read it."},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "read"},
                {"type": "input_file", "filename": "spec.pdf",
                 "file_data": format!("data:application/pdf;base64,{PDF}")}]}
        ]
    }))
    .unwrap();
    let (request, _) = openai_responses::decode_request(wire).unwrap();
    assert_eq!(request.messages[2].role, Role::Tool);
    assert_eq!(
        request.messages[3].content,
        [ContentPart::Document(Document {
            source: inline(),
            title: Some("spec.pdf".into())
        })]
    );
}

/// Two parallel calls whose outputs both carry a file: the results stay one
/// tool message, the files one user message after them (a message between
/// two results would part them from their calls).
#[test]
fn the_files_of_parallel_outputs_follow_the_run_of_results() {
    let file = || {
        json!({"type": "input_file", "filename": "a.pdf",
               "file_data": format!("data:Application/PDF;name=a.pdf;base64,{PDF}")})
    };
    let wire: openai_responses::ResponsesRequest = serde_json::from_value(json!({
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "Read both."},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [file()]},
            {"type": "function_call_output", "call_id": "c2", "output": [file()]},
            {"type": "message", "role": "user", "content": "Compare them."}
        ]
    }))
    .unwrap();
    let (request, _) = openai_responses::decode_request(wire).unwrap();
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::User,
            Role::User
        ]
    );
    assert_eq!(request.messages[2].content.len(), 2, "both results");
    // The media type as written (case, parameters) is read as PDF.
    assert_eq!(
        request.messages[3].content,
        vec![
            ContentPart::Document(Document {
                source: inline(),
                title: Some("a.pdf".into())
            });
            2
        ]
    );
    let body = json_of(openai_chat::encode_request(
        &request,
        Dialect::default(),
        false,
    ));
    let sent_roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent_roles,
        ["user", "assistant", "tool", "tool", "user", "user"]
    );
}

/// A file Anthropic cannot read is named by its type, not as "documents".
#[test]
fn anthropic_is_told_the_type_it_cannot_read() {
    let docx = with_pdf(DocumentSource::Base64 {
        media_type: "application/msword".into(),
        data: PDF.into(),
    });
    let body = json_of(anthropic::encode_request(
        &docx,
        anthropic::EncodeOptions::default(),
    ));
    let text = body["messages"][0]["content"][1]["text"].as_str().unwrap();
    assert!(text.contains("application/msword"), "{text}");
    assert!(!text.contains("cannot read documents"), "{text}");
}
