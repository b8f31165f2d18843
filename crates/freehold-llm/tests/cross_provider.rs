//! A conversation that moves between providers (a fallback, a `--model`
//! switch) must not send one provider's reasoning signature to another,
//! which would reject the whole request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use freehold_llm::Provider;
use freehold_llm::client::{AnthropicClient, GeminiClient, OpenAiResponsesClient};
use freehold_protocol::{ChatRequest, ContentPart, Message, Reasoning, Role};
use freehold_test_support::{MockServer, Scripted};
use serde_json::json;

fn signed(origin: &str, signature: &str) -> ContentPart {
    ContentPart::Reasoning(Reasoning {
        text: format!("thoughts from {origin}"),
        signature: Some(signature.into()),
        origin: Some(origin.into()),
        ..Reasoning::default()
    })
}

/// A history whose assistant turn carries reasoning signed by all three
/// protocols.
fn history() -> ChatRequest {
    ChatRequest::new(
        "m",
        vec![
            Message::user("first"),
            Message {
                role: Role::Assistant,
                content: vec![
                    signed("anthropic", "SIG-ANTHROPIC"),
                    signed("openai-responses", "SIG-OPENAI"),
                    signed("gemini", "SIG-GEMINI"),
                    ContentPart::Text {
                        text: "answer".into(),
                    },
                ],
            },
            Message::user("second"),
        ],
    )
}

async fn sent_body(server: &MockServer, provider: &dyn Provider) -> String {
    let _ = provider.complete(history()).await;
    server.requests()[0].json().to_string()
}

#[tokio::test]
async fn each_protocol_gets_only_its_own_signatures() {
    let cases: Vec<(&str, &str)> = vec![
        ("anthropic", "SIG-ANTHROPIC"),
        ("openai-responses", "SIG-OPENAI"),
        ("gemini", "SIG-GEMINI"),
    ];
    for (protocol, own) in cases {
        let server = MockServer::start(vec![Scripted::json(
            500,
            json!({"error": {"message": "stop here"}}),
        )])
        .await;
        let mut options = common::options(protocol, server.url());
        options.http.retry = freehold_llm::retry::RetryPolicy::none();
        let provider: Box<dyn Provider> = match protocol {
            "anthropic" => Box::new(AnthropicClient::new(options).unwrap()),
            "openai-responses" => Box::new(OpenAiResponsesClient::new(options).unwrap()),
            _ => Box::new(GeminiClient::new(options).unwrap()),
        };
        let body = sent_body(&server, provider.as_ref()).await;
        assert!(
            body.contains(own),
            "{protocol} lost its own signature: {body}"
        );
        for (_, foreign) in [
            ("a", "SIG-ANTHROPIC"),
            ("o", "SIG-OPENAI"),
            ("g", "SIG-GEMINI"),
        ] {
            if foreign != own {
                assert!(
                    !body.contains(foreign),
                    "{protocol} was sent {foreign}: {body}"
                );
            }
        }
    }
}
