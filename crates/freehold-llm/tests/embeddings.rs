//! Contract suite of embeddings: the OpenAI-compatible and Ollama clients
//! against scripted servers on 127.0.0.1 speaking each API's exact JSON, and
//! the router and replica set in front of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use freehold_llm::catalog::Catalog;
use freehold_llm::client::{
    AnthropicClient, ClientOptions, OllamaClient, OpenAiChatClient, OpenAiResponsesClient,
};
use freehold_llm::retry::RetryPolicy;
use freehold_llm::router::{AliasTarget, Router, Target};
use freehold_llm::secret::ApiKey;
use freehold_llm::wire::openai_chat::Dialect;
use freehold_llm::{HealthSettings, Provider, ReplicaSet};
use freehold_protocol::{EmbedRequest, EmbedResponse, ErrorKind, Usage};
use freehold_test_support::{MockServer, Scripted};
use serde_json::json;

const KEY: &str = "sk-embed-SECRET0123456789abcdef";

fn opts(name: &str, base: String, retries: bool) -> ClientOptions {
    let mut options = common::options(name, base).with_key(ApiKey::new(KEY));
    if !retries {
        options.http.retry = RetryPolicy::none();
    }
    options
}

fn openai(server: &MockServer, retries: bool) -> OpenAiChatClient {
    OpenAiChatClient::new(
        opts("box", format!("{}/v1", server.url()), retries),
        Dialect::default(),
    )
    .unwrap()
}

fn ollama(server: &MockServer) -> OllamaClient {
    OllamaClient::new(opts("ollama", server.url(), false)).unwrap()
}

fn request(model: &str) -> EmbedRequest {
    EmbedRequest::new(
        model,
        vec![
            "The cat sat on the mat.".into(),
            "Ünïcödé ✓".into(),
            "Third".into(),
        ],
    )
}

/// An OpenAI embeddings answer, its entries in the order given.
fn openai_answer(entries: &[(usize, [f32; 2])]) -> Scripted {
    let data: Vec<_> = entries
        .iter()
        .map(|(index, vector)| json!({"object": "embedding", "index": index, "embedding": vector}))
        .collect();
    Scripted::json(
        200,
        json!({"object": "list", "data": data, "model": "text-embedding-3-small",
               "usage": {"prompt_tokens": 12, "total_tokens": 12}}),
    )
}

#[tokio::test]
async fn openai_sends_the_inputs_and_orders_vectors_by_index() {
    // Servers may answer out of order; the vectors must come back in input
    // order.
    let server = MockServer::start(vec![openai_answer(&[
        (2, [0.0, 1.0]),
        (0, [1.0, 0.0]),
        (1, [0.6, 0.8]),
    ])])
    .await;
    let response = openai(&server, true)
        .embed(request("text-embedding-3-small"))
        .await
        .unwrap();
    assert_eq!(
        response,
        EmbedResponse {
            model: "text-embedding-3-small".into(),
            embeddings: vec![vec![1.0, 0.0], vec![0.6, 0.8], vec![0.0, 1.0]],
            usage: Usage {
                input_tokens: 12,
                ..Usage::default()
            },
        }
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, "/v1/embeddings");
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {KEY}")));
    assert_eq!(
        sent.json(),
        json!({"model": "text-embedding-3-small",
               "input": ["The cat sat on the mat.", "Ünïcödé ✓", "Third"]})
    );
}

#[tokio::test]
async fn the_responses_client_embeds_through_the_same_endpoint() {
    let server = MockServer::start(vec![openai_answer(&[(0, [1.0, 0.0])])]).await;
    let client =
        OpenAiResponsesClient::new(opts("openai", format!("{}/v1", server.url()), true)).unwrap();
    let response = client
        .embed(EmbedRequest::new(
            "text-embedding-3-small",
            vec!["x".into()],
        ))
        .await
        .unwrap();
    assert_eq!(response.embeddings, vec![vec![1.0, 0.0]]);
    assert_eq!(server.requests()[0].uri, "/v1/embeddings");
}

#[tokio::test]
async fn openai_answers_that_do_not_match_the_inputs_are_errors() {
    // Input 1 has no vector.
    let server = MockServer::start(vec![openai_answer(&[(0, [1.0, 0.0]), (2, [0.0, 1.0])])]).await;
    let error = openai(&server, true).embed(request("m")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.message.contains("no vector for input 1"), "{error}");

    let server = MockServer::start(vec![Scripted::json(200, json!({"data": "nope"}))]).await;
    let error = openai(&server, true).embed(request("m")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(
        error.message.contains("unexpected embeddings answer"),
        "{error}"
    );
}

#[tokio::test]
async fn openai_error_statuses_map_to_kinds_and_never_show_the_key() {
    let cases = [
        (
            401,
            "Incorrect API key provided: sk-embed-SECRET0123456789abcdef",
            ErrorKind::Authentication,
        ),
        (404, "The model `nope` does not exist", ErrorKind::NotFound),
        (
            400,
            "This model's maximum context length is 8192 tokens, however you requested 9000 tokens",
            ErrorKind::ContextLengthExceeded {
                needed: Some(9000),
                allowed: Some(8192),
            },
        ),
        (
            429,
            "Rate limit reached",
            ErrorKind::RateLimited { retry_after: None },
        ),
        (500, "boom", ErrorKind::Server),
    ];
    for (status, message, kind) in cases {
        let server = MockServer::start(vec![Scripted::json(
            status,
            json!({"error": {"message": message, "type": "x"}}),
        )])
        .await;
        let error = openai(&server, false)
            .embed(request("m"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, kind, "{status}: {error}");
        assert_eq!(error.status, Some(status));
        assert!(!error.to_string().contains(KEY), "{error}");
        assert!(!format!("{error:?}").contains(KEY), "{error:?}");
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_before_an_answer() {
    let server = MockServer::start(vec![
        Scripted::json(503, json!({"error": {"message": "busy"}})),
        openai_answer(&[(0, [1.0, 0.0])]),
    ])
    .await;
    let response = openai(&server, true)
        .embed(EmbedRequest::new("m", vec!["x".into()]))
        .await
        .unwrap();
    assert_eq!(response.embeddings.len(), 1);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn an_empty_input_list_is_refused_before_sending() {
    let server = MockServer::start(vec![openai_answer(&[])]).await;
    let error = openai(&server, true)
        .embed(EmbedRequest::new("m", Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("no inputs"), "{error}");
    let error = ollama(&server)
        .embed(EmbedRequest::new("m", Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn ollama_sends_api_embed_without_truncation() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({
            "model": "nomic-embed-text",
            "embeddings": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
            "total_duration": 14_143_917u64, "load_duration": 1_019_500,
            "prompt_eval_count": 17
        }),
    )])
    .await;
    let response = ollama(&server)
        .embed(request("nomic-embed-text"))
        .await
        .unwrap();
    assert_eq!(
        response,
        EmbedResponse {
            model: "nomic-embed-text".into(),
            embeddings: vec![vec![0.1, 0.2], vec![0.3, 0.4], vec![0.5, 0.6]],
            usage: Usage {
                input_tokens: 17,
                ..Usage::default()
            },
        }
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.uri, "/api/embed");
    assert_eq!(
        sent.json(),
        json!({"model": "nomic-embed-text",
               "input": ["The cat sat on the mat.", "Ünïcödé ✓", "Third"],
               "truncate": false})
    );
}

#[tokio::test]
async fn ollama_errors_map_to_kinds() {
    let server = MockServer::start(vec![Scripted::json(
        400,
        json!({"error": "the input length exceeds the context length"}),
    )])
    .await;
    let error = ollama(&server).embed(request("m")).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::ContextLengthExceeded { .. }),
        "{error}"
    );

    let server = MockServer::start(vec![Scripted::json(
        404,
        json!({"error": "model \"nope\" not found, try pulling it first"}),
    )])
    .await;
    let error = ollama(&server).embed(request("nope")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);

    // A vector short is the server's fault, not a panic.
    let server = MockServer::start(vec![Scripted::json(200, json!({"embeddings": [[0.1]]}))]).await;
    let error = ollama(&server).embed(request("m")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Server);
    assert!(error.message.contains("1 vectors for 3 inputs"), "{error}");
}

fn router(providers: Vec<(&str, Arc<dyn Provider>)>, aliases: &[(&str, &[&str])]) -> Router {
    let providers = providers
        .into_iter()
        .map(|(name, provider)| (name.to_owned(), provider))
        .collect();
    let aliases = aliases
        .iter()
        .map(|(name, targets)| {
            (
                (*name).to_owned(),
                AliasTarget::Chain(targets.iter().map(|t| (*t).to_owned()).collect()),
            )
        })
        .collect::<BTreeMap<_, _>>();
    Router::new(providers, aliases, Catalog::new())
}

#[tokio::test]
async fn the_router_resolves_names_and_falls_back_on_retryable_errors() {
    let down = MockServer::start(vec![Scripted::json(
        503,
        json!({"error": {"message": "overloaded"}}),
    )])
    .await;
    let up = MockServer::start(vec![openai_answer(&[(0, [1.0, 0.0])])]).await;
    let router = router(
        vec![
            ("down", Arc::new(openai(&down, false))),
            ("up", Arc::new(openai(&up, false))),
        ],
        &[("vectors", &["down:big-embedder", "up:small-embedder"])],
    );
    let (target, response) = router
        .embed_routed(EmbedRequest::new("vectors", vec!["x".into()]))
        .await
        .unwrap();
    assert_eq!(
        target,
        Target {
            provider: "up".into(),
            model: "small-embedder".into()
        }
    );
    assert_eq!(response.embeddings, vec![vec![1.0, 0.0]]);
    // Each target got its own model name, without the provider prefix.
    assert_eq!(down.requests()[0].json()["model"], "big-embedder");
    assert_eq!(up.requests()[0].json()["model"], "small-embedder");

    // `provider:model` through the Provider trait.
    let response = router
        .embed(EmbedRequest::new("up:small-embedder", vec!["y".into()]))
        .await
        .unwrap();
    assert_eq!(response.embeddings.len(), 1);

    // An unknown name is the router's error, naming what is configured.
    let error = router
        .embed(EmbedRequest::new("nowhere:x", vec!["y".into()]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.message.contains("down, up"), "{error}");
}

#[tokio::test]
async fn a_provider_without_embeddings_says_so_and_is_not_a_fallback_reason() {
    let server = MockServer::start(vec![openai_answer(&[(0, [1.0, 0.0])])]).await;
    let anthropic =
        AnthropicClient::new(opts("anthropic", format!("{}/v1", server.url()), false)).unwrap();
    let router = router(
        vec![
            ("anthropic", Arc::new(anthropic)),
            ("up", Arc::new(openai(&server, false))),
        ],
        &[("chain", &["anthropic:claude-sonnet-4-5", "up:e"])],
    );
    let error = router
        .embed(EmbedRequest::new("chain", vec!["x".into()]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(
        error
            .message
            .contains("provider anthropic does not offer embeddings"),
        "{error}"
    );
    assert!(server.requests().is_empty(), "nothing was sent anywhere");
}

#[tokio::test]
async fn a_replica_set_moves_embeddings_to_a_healthy_replica() {
    let down = MockServer::start(vec![Scripted::json(
        500,
        json!({"error": {"message": "crashed"}}),
    )])
    .await;
    let up = MockServer::start(vec![openai_answer(&[(0, [1.0, 0.0])])]).await;
    let set = ReplicaSet::new(
        "pool",
        vec![Arc::new(openai(&down, false)), Arc::new(openai(&up, false))],
        HealthSettings::default(),
    );
    // Whichever replica is tried first, every request is answered.
    for _ in 0..3 {
        let response = set
            .embed(EmbedRequest::new("e", vec!["x".into()]))
            .await
            .unwrap();
        assert_eq!(response.embeddings, vec![vec![1.0, 0.0]]);
    }
    assert_eq!(up.requests().len(), 3);
    let failures: u32 = set
        .health()
        .iter()
        .map(|replica| replica.consecutive_failures)
        .sum();
    assert_eq!(failures, down.requests().len() as u32);
}
