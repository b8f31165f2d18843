//! Embeddings of the `local` provider on SmolLM2-135M (skipped unless
//! `FREEHOLD_TEST_MODELS` names the directory holding its GGUF).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use freehold_engine::local::{LocalProvider, LocalSettings};
use freehold_llm::Provider;
use freehold_protocol::{EmbedRequest, EmbedResponse, ErrorKind, LlmError};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2-135M's hidden size.
const SMOLLM2_DIMENSION: usize = 576;

fn model() -> Option<String> {
    freehold_test_support::test_model(MODEL_FILE).map(|path| path.to_string_lossy().into_owned())
}

/// One provider for the whole test binary, so the model loads once.
fn provider() -> &'static LocalProvider {
    static PROVIDER: OnceLock<LocalProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        LocalProvider::new(LocalSettings {
            threads: Some(2),
            ..LocalSettings::default()
        })
    })
}

async fn embed(model: &str, inputs: &[&str]) -> Result<EmbedResponse, LlmError> {
    let request = EmbedRequest::new(model, inputs.iter().map(|s| (*s).to_owned()).collect());
    tokio::time::timeout(Duration::from_secs(120), provider().embed(request))
        .await
        .expect("the embedding took too long")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn length(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_have_the_model_dimension_unit_length_and_input_order() {
    let Some(model) = model() else { return };
    let inputs = [
        "The cat sat on the mat.",
        "A kitten was sitting on the rug.",
        "Quarterly revenue rose by eight percent.",
    ];
    let response = embed(&model, &inputs).await.unwrap();
    assert_eq!(response.embeddings.len(), 3);
    for vector in &response.embeddings {
        assert_eq!(vector.len(), SMOLLM2_DIMENSION);
        assert!((length(vector) - 1.0).abs() < 1e-4, "{}", length(vector));
        assert!(vector.iter().all(|x| x.is_finite()));
    }
    assert!(response.usage.input_tokens >= 3 * 5, "{:?}", response.usage);
    assert_eq!(response.usage.output_tokens, 0);

    // Each input alone gives the vector it got in the batch: sequences do
    // not leak into each other, and the order is the input order.
    for (index, input) in inputs.iter().enumerate() {
        let alone = embed(&model, &[input]).await.unwrap();
        let similarity = cosine(&alone.embeddings[0], &response.embeddings[index]);
        assert!(similarity > 0.999, "input {index}: cosine {similarity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_deterministic_and_paraphrases_are_closer() {
    let Some(model) = model() else { return };
    let inputs = [
        "How do I reset my password?",
        "What are the steps to change my password?",
        "The volcano erupted and covered the village in ash.",
    ];
    let first = embed(&model, &inputs).await.unwrap();
    let second = embed(&model, &inputs).await.unwrap();
    assert_eq!(first.embeddings, second.embeddings);

    let [question, paraphrase, unrelated] = &first.embeddings[..] else {
        panic!("three vectors expected")
    };
    let close = cosine(question, paraphrase);
    let far = cosine(question, unrelated);
    assert!(
        close > far,
        "paraphrase cosine {close} should exceed unrelated cosine {far}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_inputs_are_split_across_decodes() {
    let Some(model) = model() else { return };
    // More inputs than one decode takes (32 sequences), and longer than
    // one batch of tokens in all.
    let inputs: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "Sentence number {i} talks about topic {} in some detail.",
                i % 7
            )
        })
        .collect();
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let response = embed(&model, &refs).await.unwrap();
    assert_eq!(response.embeddings.len(), 40);
    let last_alone = embed(&model, &refs[39..]).await.unwrap();
    assert!(cosine(&last_alone.embeddings[0], &response.embeddings[39]) > 0.999);

    // Any count of inputs of any lengths (odd totals included) works.
    let varied: Vec<String> = (1..=7).map(|n| "one two three ".repeat(n)).collect();
    for count in 1..=varied.len() {
        let refs: Vec<&str> = varied[..count].iter().map(String::as_str).collect();
        let response = embed(&model, &refs).await.unwrap();
        assert_eq!(response.embeddings.len(), count);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_clear_errors() {
    let Some(model) = model() else { return };
    let error = embed(&model, &[]).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("no inputs"), "{error}");

    let error = embed(&model, &["fine", ""]).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("input 1 is empty"), "{error}");

    // SmolLM2 was trained on 8192 tokens; this is well over.
    let long = "word ".repeat(9000);
    let error = embed(&model, &["short", &long]).await.unwrap_err();
    let ErrorKind::ContextLengthExceeded { needed, allowed } = error.kind else {
        panic!("{error}")
    };
    assert_eq!(allowed, Some(8192));
    assert!(needed.unwrap() > 8192, "{needed:?}");
    assert!(error.message.contains("input 1 has"), "{error}");

    let error = embed("no-such-model", &["x"]).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_cap_bounds_inputs_too() {
    let Some(model) = model() else { return };
    let capped = LocalProvider::new(LocalSettings {
        threads: Some(2),
        context_cap: Some(64),
        ..LocalSettings::default()
    });
    let request = EmbedRequest::new(model, vec!["word ".repeat(100)]);
    let error = capped.embed(request).await.unwrap_err();
    assert!(
        matches!(
            error.kind,
            ErrorKind::ContextLengthExceeded {
                allowed: Some(64),
                ..
            }
        ),
        "{error}"
    );
}

/// The engine gives a model's vectors whole: `dimensions` is taken only
/// when it is the model's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimensions_other_than_the_models_own_are_refused() {
    let Some(model) = model() else { return };
    let ask = |dimensions: u32| {
        let mut request = EmbedRequest::new(model.clone(), vec!["a cat".to_owned()]);
        request.dimensions = Some(dimensions);
        provider().embed(request)
    };
    let own = ask(SMOLLM2_DIMENSION as u32).await.unwrap();
    assert_eq!(own.dimension(), SMOLLM2_DIMENSION);
    let error = ask(256).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
    assert!(
        error.message.contains("576 dimensions")
            && error.message.contains("leave out `dimensions`"),
        "{error}"
    );
}
