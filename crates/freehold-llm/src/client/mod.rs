//! One client per wire protocol, each a [`crate::Provider`].

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

    /// The keys a transport must redact.
    pub fn secrets(&self) -> Vec<ApiKey> {
        self.api_key.iter().cloned().collect()
    }
}
