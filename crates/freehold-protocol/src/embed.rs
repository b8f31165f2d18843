//! Embeddings: texts in, vectors out.

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// A request for the embeddings of some texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The model, as the provider names it (the router strips the
    /// `provider:` prefix before a client sees the request).
    pub model: String,
    /// The texts to embed, each on its own; the answer keeps their order.
    pub inputs: Vec<String>,
    /// How many dimensions the vectors should have, for models trained to
    /// be cut short (OpenAI's `text-embedding-3-*`, many Matryoshka
    /// models); `None` for the model's own. A provider that cannot give
    /// that many refuses the request rather than answering otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

impl EmbedRequest {
    /// A request for the embeddings of `inputs` by `model`.
    pub fn new(model: impl Into<String>, inputs: Vec<String>) -> Self {
        Self {
            model: model.into(),
            inputs,
            dimensions: None,
        }
    }

    /// A rough count of the tokens the inputs hold (about 4 bytes a
    /// token), for budgets before the provider reports the real one.
    pub fn estimated_input_tokens(&self) -> u64 {
        let bytes: usize = self.inputs.iter().map(String::len).sum();
        (bytes as u64).div_ceil(4)
    }
}

/// The embeddings of a request's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// The model that answered, as the provider names it.
    pub model: String,
    /// One vector per input, in the order of [`EmbedRequest::inputs`].
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens read (`input_tokens`); embeddings produce no output tokens.
    pub usage: Usage,
}

impl EmbedResponse {
    /// The vectors' dimension (0 when there are none).
    pub fn dimension(&self) -> usize {
        self.embeddings.first().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let request = EmbedRequest::new("local:smollm2-135m", vec!["a".into(), "b".into()]);
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"model": "local:smollm2-135m", "inputs": ["a", "b"]})
        );
        assert_eq!(
            serde_json::from_value::<EmbedRequest>(json).unwrap(),
            request
        );

        let response = EmbedResponse {
            model: "m".into(),
            embeddings: vec![vec![0.6, 0.8], vec![1.0, 0.0]],
            usage: Usage {
                input_tokens: 5,
                ..Usage::default()
            },
        };
        assert_eq!(response.dimension(), 2);
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(
            serde_json::from_str::<EmbedResponse>(&text).unwrap(),
            response
        );
    }
}
