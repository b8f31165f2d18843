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

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use freehold_protocol::{EmbedRequest, EmbedResponse, ErrorKind, LlmError, Usage};
use serde::{Deserialize, Serialize};

use super::serve::DecodeError;

/// What `input` holds in an OpenAI embeddings request: one text or several,
/// or token ids, which OpenAI also takes but the gateway refuses by name
/// ([`decode_openai_request`]): the models behind it have tokenizers of
/// their own. Clients send [`OpenAiInput::Many`]; a server accepts all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpenAiInput {
    /// One text.
    One(String),
    /// Several texts, each embedded on its own.
    Many(Vec<String>),
    /// One input as token ids.
    TokenIds(Vec<i64>),
    /// Several inputs as token ids.
    TokenIdLists(Vec<Vec<i64>>),
}

/// How the vectors of an answer are written: OpenAI's `encoding_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VectorEncoding {
    /// A JSON array of numbers (`float`, the default).
    #[default]
    Float,
    /// The vector's 32-bit floats, little-endian, in base64 (`base64`,
    /// which OpenAI's Node SDK asks for unless told otherwise).
    Base64,
}

/// The body of `POST /embeddings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiEmbeddingsRequest {
    /// The model.
    pub model: String,
    /// The texts.
    pub input: OpenAiInput,
    /// `float` (the default) or `base64` ([`VectorEncoding`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// A shorter output dimension, for models that allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// The end user the client sent the request for (the gateway's ledger
    /// records it); never sent to a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
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
    pub embedding: OpenAiVector,
}

/// A vector as an answer writes it ([`VectorEncoding`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpenAiVector {
    /// Numbers.
    Floats(Vec<f32>),
    /// Little-endian 32-bit floats in base64.
    Base64(String),
}

impl OpenAiVector {
    /// `vector` written as `encoding` says.
    pub fn encode(vector: &[f32], encoding: VectorEncoding) -> Self {
        match encoding {
            VectorEncoding::Float => Self::Floats(vector.to_vec()),
            VectorEncoding::Base64 => {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Self::Base64(BASE64_STANDARD.encode(bytes))
            }
        }
    }

    /// The numbers, or why a base64 vector cannot be read.
    pub fn decode(self) -> Result<Vec<f32>, String> {
        match self {
            Self::Floats(vector) => Ok(vector),
            Self::Base64(text) => {
                let bytes = BASE64_STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| format!("a base64 vector is not base64: {e}"))?;
                if bytes.len() % 4 != 0 {
                    return Err(format!(
                        "a base64 vector has {} bytes, not a whole number of 32-bit floats",
                        bytes.len()
                    ));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
        }
    }
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
        dimensions: request.dimensions,
        user: None,
    }
}

/// An OpenAI request as Freehold's (for the gateway), with the encoding its
/// answer's vectors are to have.
///
/// # Errors
/// Token ids as input, an `encoding_format` other than `float` or
/// `base64`, or `dimensions` of 0, each naming the field.
pub fn decode_openai_request(
    request: OpenAiEmbeddingsRequest,
) -> Result<(EmbedRequest, VectorEncoding), DecodeError> {
    let inputs = match request.input {
        OpenAiInput::One(text) => vec![text],
        OpenAiInput::Many(texts) => texts,
        OpenAiInput::TokenIds(_) | OpenAiInput::TokenIdLists(_) => {
            return Err(DecodeError::unsupported(
                "input",
                "input as token ids (each model behind the gateway has its own tokenizer; \
                 send the text, a string or a list of strings)",
            ));
        }
    };
    let encoding = match request.encoding_format.as_deref() {
        None | Some("float") => VectorEncoding::Float,
        Some("base64") => VectorEncoding::Base64,
        Some(other) => {
            return Err(DecodeError::invalid(
                "encoding_format",
                format!("`{other}` is not an encoding; use `float` or `base64`"),
            ));
        }
    };
    if request.dimensions == Some(0) {
        return Err(DecodeError::invalid(
            "dimensions",
            "must be at least 1 (or left out for the model's own)",
        ));
    }
    let embed = EmbedRequest {
        model: request.model,
        inputs,
        dimensions: request.dimensions,
    };
    Ok((embed, encoding))
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
        let vector = entry.embedding.decode().map_err(|reason| {
            LlmError::new(
                ErrorKind::Server,
                provider,
                format!("the answer's vector for input {}: {reason}", entry.index),
            )
        })?;
        if slot.replace(vector).is_some() {
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

/// `answer`, unless `request` asked for `dimensions` that its vectors do not
/// have: a server that does not shorten vectors (an older Ollama, a model
/// vLLM serves without it) answers with whole ones instead of refusing.
///
/// # Errors
/// [`ErrorKind::InvalidRequest`] naming both sizes.
pub fn check_dimensions(
    provider: &str,
    request: &EmbedRequest,
    answer: EmbedResponse,
) -> Result<EmbedResponse, LlmError> {
    let Some(asked) = request.dimensions else {
        return Ok(answer);
    };
    match answer
        .embeddings
        .iter()
        .find(|vector| vector.len() != asked as usize)
    {
        None => Ok(answer),
        Some(vector) => Err(LlmError::new(
            ErrorKind::InvalidRequest,
            provider,
            format!(
                "`{}` answered with vectors of {} dimensions, not the {asked} asked for: the \
                 server does not shorten them; leave out `dimensions`",
                request.model,
                vector.len()
            ),
        )),
    }
}

/// Freehold's answer in OpenAI's shape (for the gateway), its vectors
/// written as `encoding` says.
pub fn encode_openai_response(
    response: &EmbedResponse,
    encoding: VectorEncoding,
) -> OpenAiEmbeddingsResponse {
    OpenAiEmbeddingsResponse {
        object: list(),
        data: response
            .embeddings
            .iter()
            .enumerate()
            .map(|(index, vector)| OpenAiEmbedding {
                object: embedding(),
                index,
                embedding: OpenAiVector::encode(vector, encoding),
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
    /// How many dimensions the vectors should have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
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
        dimensions: request.dimensions,
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
        assert_eq!(
            decode_openai_request(wire).unwrap(),
            (request, VectorEncoding::Float)
        );
        let one: OpenAiEmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": "just one"})).unwrap();
        assert_eq!(
            decode_openai_request(one).unwrap().0.inputs,
            vec!["just one"]
        );
    }

    #[test]
    fn openai_request_options_are_kept_or_refused_by_name() {
        let decode =
            |body: serde_json::Value| decode_openai_request(serde_json::from_value(body).unwrap());
        let (request, encoding) = decode(json!({
            "model": "m", "input": ["a"], "encoding_format": "base64", "dimensions": 256
        }))
        .unwrap();
        assert_eq!(encoding, VectorEncoding::Base64);
        assert_eq!(request.dimensions, Some(256));
        // Passed on to the upstream, which the gateway asks for numbers.
        assert_eq!(
            serde_json::to_value(encode_openai_request(&request)).unwrap(),
            json!({"model": "m", "input": ["a"], "dimensions": 256})
        );
        assert_eq!(
            decode(json!({"model": "m", "input": "a", "encoding_format": "float"}))
                .unwrap()
                .1,
            VectorEncoding::Float
        );
        for (body, field) in [
            (json!({"model": "m", "input": [9906, 1917]}), "input"),
            (json!({"model": "m", "input": [[9906], [1917]]}), "input"),
            (
                json!({"model": "m", "input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "a", "dimensions": 0}),
                "dimensions",
            ),
        ] {
            let error = decode(body.clone()).unwrap_err();
            assert_eq!(error.field(), field, "{body}: {error}");
        }
    }

    #[test]
    fn vectors_of_another_size_than_asked_are_refused() {
        let answer = EmbedResponse {
            model: "m".into(),
            embeddings: vec![vec![0.0; 4], vec![0.0; 4]],
            usage: Usage::default(),
        };
        let mut request = EmbedRequest::new("m", vec!["a".into(), "b".into()]);
        assert!(check_dimensions("p", &request, answer.clone()).is_ok());
        request.dimensions = Some(4);
        assert!(check_dimensions("p", &request, answer.clone()).is_ok());
        request.dimensions = Some(2);
        let error = check_dimensions("p", &request, answer).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(error.message.contains("4 dimensions, not the 2"), "{error}");
    }

    #[test]
    fn base64_vectors_are_little_endian_floats() {
        // 0.5 is 0x3f000000 and -1.0 is 0xbf800000, each written
        // least significant byte first.
        let encoded = OpenAiVector::encode(&[0.5, -1.0], VectorEncoding::Base64);
        assert_eq!(encoded, OpenAiVector::Base64("AAAAPwAAgL8=".into()));
        assert_eq!(encoded.decode().unwrap(), vec![0.5, -1.0]);
        assert_eq!(
            OpenAiVector::Base64("AACAPw==".into()).decode().unwrap(),
            vec![1.0]
        );
        let ragged = OpenAiVector::Base64("AAA=".into()).decode().unwrap_err();
        assert!(ragged.contains("2 bytes"), "{ragged}");
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
        for encoding in [VectorEncoding::Float, VectorEncoding::Base64] {
            let encoded = encode_openai_response(&decoded, encoding);
            let again = decode_openai_response("p", "m", 2, encoded).unwrap();
            assert_eq!(again, decoded);
        }

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
        let mut request = EmbedRequest::new("nomic-embed-text", vec!["a".into()]);
        assert_eq!(
            serde_json::to_value(encode_ollama_request(&request, None)).unwrap(),
            json!({"model": "nomic-embed-text", "input": ["a"], "truncate": false})
        );
        request.dimensions = Some(64);
        assert_eq!(
            serde_json::to_value(encode_ollama_request(&request, None)).unwrap()["dimensions"],
            64
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
