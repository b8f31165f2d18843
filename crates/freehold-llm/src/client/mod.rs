//! One client per wire protocol, each a [`crate::Provider`].

mod anthropic;
mod effort;
mod gemini;
mod ollama;
mod openai_chat;
mod openai_responses;

pub use anthropic::AnthropicClient;
pub use gemini::GeminiClient;
pub use ollama::{OllamaClient, OllamaSettings};
pub use openai_chat::OpenAiChatClient;
pub use openai_responses::OpenAiResponsesClient;

use crate::http::HttpSettings;
use crate::secret::ApiKey;

/// What every HTTP client is built from.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The configured provider name, used in errors and model listings.
    pub name: String,
    /// The API's base URL, without a trailing slash (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// Extra headers sent with every request.
    pub extra_headers: Vec<(String, String)>,
    /// Extra headers whose values are secrets (read from the environment):
    /// sent like `extra_headers`, redacted like the key.
    pub secret_headers: Vec<(String, ApiKey)>,
    /// Timeouts and retries.
    pub http: HttpSettings,
}

impl ClientOptions {
    /// Options with default HTTP settings and no key or headers.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            extra_headers: Vec::new(),
            secret_headers: Vec::new(),
            http: HttpSettings::default(),
        }
    }

    /// The same options with a key.
    pub fn with_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// `base_url` joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// `base_url` joined with `path`, parsed; the error names the base URL
    /// to fix.
    pub fn parsed_url(&self, path: &str) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&self.url(path)).map_err(|error| {
            format!(
                "provider `{}`: base_url `{}` is not a usable URL ({error}); set it to \
                 something like `http://127.0.0.1:8000/v1`",
                self.name, self.base_url
            )
        })
    }

    /// The keys a transport must redact.
    pub fn secrets(&self) -> Vec<ApiKey> {
        self.api_key
            .iter()
            .chain(self.secret_headers.iter().map(|(_, value)| value))
            .cloned()
            .collect()
    }
}

/// How a protocol sends the API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer KEY` (OpenAI and compatible servers).
    Bearer,
    /// The key as the value of a named header (`x-api-key`, `x-goog-api-key`).
    Named(&'static str),
}

impl ClientOptions {
    /// The headers of every request: the key (if any) as `key_header` says,
    /// then `fixed` protocol headers, then the configured extra headers.
    ///
    /// # Errors
    /// A header name or value that HTTP does not allow.
    pub fn headers(
        &self,
        key_header: KeyHeader,
        fixed: &[(&str, &str)],
    ) -> Result<reqwest::header::HeaderMap, freehold_protocol::LlmError> {
        let bearer;
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(key) = &self.api_key {
            match key_header {
                KeyHeader::Bearer => {
                    bearer = format!("Bearer {}", key.expose());
                    pairs.push(("authorization", bearer.as_str()));
                }
                KeyHeader::Named(name) => pairs.push((name, key.expose())),
            }
        }
        pairs.extend_from_slice(fixed);
        pairs.extend(
            self.extra_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        pairs.extend(
            self.secret_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose())),
        );
        crate::http::headers(pairs, &self.name)
    }
}

/// `POST url` with `body` for an endpoint a server of the protocol may
/// lack (a token count): `None` when it does ([`lacks_endpoint`], logged
/// at debug level), the answer otherwise. A count generates nothing, so
/// its answer is awaited for the idle timeout, not for the long time a
/// whole generated answer may take.
///
/// # Errors
/// Any other failure of the request.
pub(crate) async fn post_to_optional_endpoint(
    transport: &crate::http::Transport,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
    model: &str,
) -> Result<Option<crate::http::Response>, freehold_protocol::LlmError> {
    match transport.post_json(url, headers, body).await {
        Ok(response) => Ok(Some(response)),
        Err(error) if lacks_endpoint(&error, model) => {
            tracing::debug!(provider = %transport.provider(), url, %error, "no such endpoint");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Whether `error` says the server has no such endpoint (404, 405 or 501)
/// rather than no such model (a 404 that names `model`): a server that
/// speaks a protocol without one of its optional endpoints, such as a
/// token count.
pub(crate) fn lacks_endpoint(error: &freehold_protocol::LlmError, model: &str) -> bool {
    matches!(error.status, Some(404 | 405 | 501))
        && (model.is_empty() || !error.message.contains(model))
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{ErrorKind, LlmError};

    use super::lacks_endpoint;

    fn refused(status: u16, message: &str) -> LlmError {
        LlmError::new(ErrorKind::NotFound, "p", message).with_status(status)
    }

    #[test]
    fn a_missing_endpoint_is_told_from_a_missing_model() {
        assert!(lacks_endpoint(&refused(404, "Not Found"), "qwen"));
        assert!(lacks_endpoint(&refused(405, "Method Not Allowed"), "qwen"));
        assert!(lacks_endpoint(&refused(501, ""), "qwen"));
        assert!(!lacks_endpoint(
            &refused(404, "The model `qwen` does not exist."),
            "qwen"
        ));
        assert!(!lacks_endpoint(&refused(400, "bad"), "qwen"));
        assert!(!lacks_endpoint(
            &LlmError::new(ErrorKind::Connection, "p", "refused"),
            "qwen"
        ));
        assert!(lacks_endpoint(&refused(404, "Not Found"), ""));
    }
}
