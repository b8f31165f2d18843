//! Embeddings on the wire: OpenAI's `POST /embeddings` (and every
//! compatible server: vLLM, llama.cpp's server, LM Studio…) and Ollama's
//! native `POST /api/embed`.
//!
//! Both take a list of texts and answer with one vector per text. OpenAI
//! tags each vector with the `index` of its input and does not promise the
//! order, so [`decode_openai_response`] puts them back in input order and
//! checks that every input got exactly one. Ollama answers in input order
//! and, unless told otherwise, silently cuts inputs longer than the model's
//! context: [`encode_ollama_request`] always sends `"truncate": false`, so an
//! overlong input is an error rather than the embedding of part of it.

use freehold_protocol::{EmbedRequest, EmbedResponse, ErrorKind, LlmError, Usage};
use serde::{Deserialize, Serialize};

/// What `input` holds in an OpenAI embeddings request: one text or several.
/// Clients always send [`OpenAiInput::Many`]; a server accepts both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpenAiInput {
    /// One text.
    One(String),
    /// Several texts, each embedded on its own.
    Many(Vec<String>),
}

impl OpenAiInput {
    /// The texts, in order.
    pub fn into_texts(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

/// The body of `POST /embeddings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiEmbeddingsRequest {
    /// The model.
    pub model: String,
    /// The texts.
    pub input: OpenAiInput,
    /// `float` (the default) or `base64`; only `float` is decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// A shorter output dimension, for models that allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// The answer to `POST /embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    #[serde(default = "list")]
    pub object: String,
    /// One entry per input, each tagged with its input's index.
    pub data: Vec<OpenAiEmbedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Tokens read; some compatible servers leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OpenAiEmbeddingsUsage>,
}

fn list() -> String {
    "list".to_owned()
}

fn embedding() -> String {
    "embedding".to_owned()
}

/// One vector of an [`OpenAiEmbeddingsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    #[serde(default = "embedding")]
    pub object: String,
    /// The index of the input it embeds.
    pub index: usize,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// The `usage` of an [`OpenAiEmbeddingsResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiEmbeddingsUsage {
    /// Tokens read.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// The same (embeddings produce no output tokens).
    #[serde(default)]
    pub total_tokens: u64,
}

/// The OpenAI body for `request`.
pub fn encode_openai_request(request: &EmbedRequest) -> OpenAiEmbeddingsRequest {
    OpenAiEmbeddingsRequest {
        model: request.model.clone(),
        input: OpenAiInput::Many(request.inputs.clone()),
        encoding_format: None,
        dimensions: None,
    }
}

/// An OpenAI request as Freehold's (for the gateway).
pub fn decode_openai_request(request: OpenAiEmbeddingsRequest) -> EmbedRequest {
    EmbedRequest {
        model: request.model,
        inputs: request.input.into_texts(),
    }
}

/// An OpenAI answer to a request of `inputs` texts, as Freehold's: vectors
/// put in input order by their `index`.
///
/// # Errors
/// [`ErrorKind::Server`] when an input has no vector or several, or an
/// index is out of range.
pub fn decode_openai_response(
    provider: &str,
    model: &str,
    inputs: usize,
    response: OpenAiEmbeddingsResponse,
) -> Result<EmbedResponse, LlmError> {
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for entry in response.data {
        let Some(slot) = slots.get_mut(entry.index) else {
            return Err(LlmError::new(
                ErrorKind::Server,
                provider,
                format!(
                    "the answer has a vector for input {} but only {inputs} were sent",
                    entry.index
                ),
            ));
        };
        if slot.replace(entry.embedding).is_some() {
            return Err(LlmError::new(
                ErrorKind::Server,
                provider,
                format!("the answer has two vectors for input {}", entry.index),
            ));
        }
    }
    let mut embeddings = Vec::with_capacity(inputs);
    for (index, slot) in slots.into_iter().enumerate() {
        let Some(vector) = slot else {
            return Err(LlmError::new(
                ErrorKind::Server,
                provider,
                format!("the answer has no vector for input {index} of {inputs}"),
            ));
        };
        embeddings.push(vector);
    }
    let model = if response.model.is_empty() {
        model.to_owned()
    } else {
        response.model
    };
    Ok(EmbedResponse {
        model,
        embeddings,
        usage: Usage {
            input_tokens: response.usage.map_or(0, |usage| usage.prompt_tokens),
            ..Usage::default()
        },
    })
}

/// Freehold's answer in OpenAI's shape (for the gateway).
pub fn encode_openai_response(response: &EmbedResponse) -> OpenAiEmbeddingsResponse {
    OpenAiEmbeddingsResponse {
        object: list(),
        data: response
            .embeddings
            .iter()
            .enumerate()
            .map(|(index, vector)| OpenAiEmbedding {
                object: embedding(),
                index,
                embedding: vector.clone(),
            })
            .collect(),
        model: response.model.clone(),
        usage: Some(OpenAiEmbeddingsUsage {
            prompt_tokens: response.usage.input_tokens,
            total_tokens: response.usage.input_tokens,
        }),
    }
}

/// The body of Ollama's `POST /api/embed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OllamaEmbedRequest {
    /// The model.
    pub model: String,
    /// The texts.
    pub input: Vec<String>,
    /// Whether Ollama may cut inputs longer than the context (its default
    /// is yes); clients send `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// How long the model stays loaded afterwards (`"5m"`, `"-1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

/// The answer to `POST /api/embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OllamaEmbedResponse {
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// One vector per input, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds spent in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Nanoseconds spent loading the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Tokens read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
}

/// The Ollama body for `request`: never truncating.
pub fn encode_ollama_request(
    request: &EmbedRequest,
    keep_alive: Option<String>,
) -> OllamaEmbedRequest {
    OllamaEmbedRequest {
        model: request.model.clone(),
        input: request.inputs.clone(),
        truncate: Some(false),
        keep_alive,
    }
}

/// An Ollama answer to a request of `inputs` texts, as Freehold's.
///
/// # Errors
/// [`ErrorKind::Server`] when the number of vectors is not the number of
/// inputs.
pub fn decode_ollama_response(
    provider: &str,
    model: &str,
    inputs: usize,
    response: OllamaEmbedResponse,
) -> Result<EmbedResponse, LlmError> {
    if response.embeddings.len() != inputs {
        return Err(LlmError::new(
            ErrorKind::Server,
            provider,
            format!(
                "the answer has {} vectors for {inputs} inputs",
                response.embeddings.len()
            ),
        ));
    }
    let model = if response.model.is_empty() {
        model.to_owned()
    } else {
        response.model
    };
    Ok(EmbedResponse {
        model,
        embeddings: response.embeddings,
        usage: Usage {
            input_tokens: response.prompt_eval_count.unwrap_or(0),
            ..Usage::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_requests_round_trip_and_accept_one_text() {
        let request = EmbedRequest::new("text-embedding-3-small", vec!["a".into(), "b".into()]);
        let wire = encode_openai_request(&request);
        assert_eq!(
            serde_json::to_value(&wire).unwrap(),
            json!({"model": "text-embedding-3-small", "input": ["a", "b"]})
        );
        assert_eq!(decode_openai_request(wire), request);
        let one: OpenAiEmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": "just one"})).unwrap();
        assert_eq!(decode_openai_request(one).inputs, vec!["just one"]);
    }

    #[test]
    fn openai_responses_are_put_in_input_order_and_checked() {
        let response: OpenAiEmbeddingsResponse = serde_json::from_value(json!({
            "object": "list", "model": "m",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}
            ],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}
        }))
        .unwrap();
        let decoded = decode_openai_response("p", "m", 2, response.clone()).unwrap();
        assert_eq!(decoded.embeddings, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(decoded.usage.input_tokens, 7);
        // Back to the wire, in order, and decoded again to the same thing.
        let again = decode_openai_response("p", "m", 2, encode_openai_response(&decoded)).unwrap();
        assert_eq!(again, decoded);

        let missing = decode_openai_response("p", "m", 3, response.clone()).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::Server);
        assert!(
            missing.message.contains("no vector for input 2"),
            "{missing}"
        );
        let extra = decode_openai_response("p", "m", 1, response).unwrap_err();
        assert!(extra.message.contains("only 1 were sent"), "{extra}");
    }

    #[test]
    fn ollama_never_truncates_and_counts_vectors() {
        let request = EmbedRequest::new("nomic-embed-text", vec!["a".into()]);
        assert_eq!(
            serde_json::to_value(encode_ollama_request(&request, None)).unwrap(),
            json!({"model": "nomic-embed-text", "input": ["a"], "truncate": false})
        );
        let response: OllamaEmbedResponse = serde_json::from_value(json!({
            "model": "nomic-embed-text", "embeddings": [[0.5, 0.5]], "prompt_eval_count": 3
        }))
        .unwrap();
        let decoded = decode_ollama_response("o", "nomic-embed-text", 1, response.clone()).unwrap();
        assert_eq!(decoded.usage.input_tokens, 3);
        let error = decode_ollama_response("o", "nomic-embed-text", 2, response).unwrap_err();
        assert!(error.message.contains("1 vectors for 2 inputs"), "{error}");
    }
}
