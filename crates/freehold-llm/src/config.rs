//! Provider configuration (`[providers.NAME]` tables) and the factory that
//! turns it into [`Provider`]s.
//!
//! ```toml
//! [providers.gpu-box]
//! kind = "openai"              # openai | openai-responses | anthropic | gemini | ollama | local
//! base_url = "http://10.0.0.5:8000/v1"
//! api_key_env = "GPU_BOX_KEY"  # optional
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo,
};
use serde::{Deserialize, Serialize};

use crate::balance::{HealthSettings, ReplicaSet};
use crate::client::{ClientOptions, OllamaSettings, OpenAiChatClient};
use crate::http::HttpSettings;
use crate::presets::{Preset, ProviderKind, preset, preset_names};
use crate::provider::{EventStream, Provider};
use crate::retry::RetryPolicy;
use crate::secret::ApiKey;
use crate::text_tools::RecoveringProvider;
use crate::wire::openai_chat::{Dialect, MaxTokensField, TokenCountEndpoint};

/// One `[providers.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire protocol. Optional when `preset` (or the table's name) is a
    /// preset, which implies it.
    #[serde(default)]
    pub kind: Option<ProviderKind>,
    /// A preset supplying defaults: `vllm`, `groq`, `ollama`… (see
    /// [`crate::presets::PRESETS`]). Defaults to the table's name when that
    /// is a preset's name.
    #[serde(default)]
    pub preset: Option<String>,
    /// The API's base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Several base URLs serving the same models: requests are balanced
    /// across them (least outstanding requests) with passive health checks.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// The environment variable holding the API key. Keys are never read
    /// from the configuration file itself.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are secrets, read from the named
    /// environment variables (`headers_env = { "api-key" = "AZURE_KEY" }`);
    /// they are redacted from errors like the API key.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Seconds of silence after which a request fails (default 120, 600 for
    /// local servers, whose prefill can be long).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds to wait for a connection (default 10).
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// Seconds a non-streamed request may take to answer (default 600, 1800
    /// for local servers): such servers are silent until the answer is done.
    #[serde(default)]
    pub response_timeout_secs: Option<u64>,
    /// Retries of retryable failures (default 3).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Whether the server is on this machine or the private network, which
    /// the gateway's privacy policy and budgets rely on (local models cost
    /// nothing; local-only requests go only there). Default: from its base
    /// URLs: every one a loopback or private address, `localhost`, or a
    /// `.local` / `.lan` name. Set it for a private server known by a bare
    /// host name (`http://gpu-box:8000/v1`).
    #[serde(default)]
    pub local: Option<bool>,
    /// Whether requests go through a proxy the environment names
    /// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, with `NO_PROXY`).
    /// Default: yes for hosted providers, no for local ones, so that a
    /// request the privacy policy keeps local does not cross a proxy that
    /// may be elsewhere. Set it for a local server reached only through a
    /// proxy (an SSH tunnel's SOCKS port, say).
    #[serde(default)]
    pub env_proxy: Option<bool>,
    /// Recover tool calls that models print as text (default: on for local
    /// providers, off for hosted ones).
    #[serde(default)]
    pub recover_text_tool_calls: Option<bool>,
    /// Chat Completions only: `max_tokens` or `max_completion_tokens`.
    #[serde(default)]
    pub max_tokens_field: Option<MaxTokensFieldName>,
    /// Chat Completions only: send `stream_options.include_usage`.
    #[serde(default)]
    pub stream_usage: Option<bool>,
    /// Chat Completions only: where the server counts a request's tokens
    /// for the gateway's `count_tokens` (presets set it for vLLM,
    /// llama.cpp and OpenAI).
    #[serde(default)]
    pub token_count: Option<TokenCountName>,
    /// Chat Completions only: send `chat_template_kwargs: {"enable_thinking":
    /// false}` for a request that asks for no reasoning (presets turn it on
    /// for vLLM, SGLang and llama.cpp, whose templates read it).
    #[serde(default)]
    pub enable_thinking_kwarg: Option<bool>,
    /// Chat Completions only: the health probes also ask `GET /health`
    /// beside the `/v1` root, where a server error means not ready
    /// (presets turn it on for vLLM and llama.cpp).
    #[serde(default)]
    pub probe_health: Option<bool>,
    /// Chat Completions only: send an assistant message's earlier
    /// reasoning back (`reasoning_content` and `reasoning`), for chat
    /// templates that show it (presets turn it on for vLLM, SGLang and
    /// llama.cpp).
    #[serde(default)]
    pub reasoning_in_history: Option<bool>,
    /// Chat Completions and Responses: the server is OpenAI's own API (or
    /// takes what it takes, as Azure's does): no reasoning asks each model
    /// for its least effort, `xhigh` and the settings only OpenAI reads
    /// (`prompt_cache_key`, `verbosity`, `service_tier`,
    /// `safety_identifier`) are sent, and
    /// Chat Completions sends through the Responses API the requests with
    /// tools of a model that refuses reasoning beside them (presets turn it
    /// on for `openai` and `openai-responses`).
    #[serde(default)]
    pub openai_api: Option<bool>,
    /// Chat Completions only: the most stop sequences the server takes in
    /// one request; a request's others are applied to the answer by
    /// Freehold (presets set 4 for `openai`, `vllm`, `groq` and
    /// `openrouter`; 0 sends none).
    #[serde(default)]
    pub max_stop_sequences: Option<usize>,
    /// Chat Completions only: send `reasoning_effort: "none"` when a client
    /// asks for no reasoning (presets set it for `groq` and `openrouter`);
    /// a model that takes other values is sent what its refusal names.
    #[serde(default)]
    pub none_for_off: Option<bool>,
    /// Anthropic only: `max_tokens` when a request sets none (the API
    /// requires one; default 8192).
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Anthropic only: the server is Anthropic's own API, which makes the
    /// context edits a client asks for (`context_management`) itself: they
    /// are sent as asked. Otherwise Freehold makes them before the request
    /// leaves, since a server that only speaks the protocol may not
    /// (default: on when the base URL is `api.anthropic.com`).
    #[serde(default)]
    pub anthropic_api: Option<bool>,
    /// Ollama only: the smallest `num_ctx` requested (default 8192).
    #[serde(default)]
    pub num_ctx_min: Option<u32>,
    /// Ollama only: the largest `num_ctx` requested when the model's trained
    /// context is unknown (default 131072).
    #[serde(default)]
    pub num_ctx_max: Option<u32>,
    /// Ollama only: how long the model stays loaded (`"5m"`, `"-1"`).
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// `kind = "local"` only: CPU threads (default: the physical cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// `kind = "local"` only: the largest context to allocate, in tokens
    /// (default: the model's trained context).
    #[serde(default)]
    pub max_context: Option<u32>,
    /// `kind = "local"` only: idle contexts kept for prefix reuse (default
    /// 4; 0 turns prefix caching off).
    #[serde(default)]
    pub cache_slots: Option<usize>,
    /// `kind = "local"` only: model layers offloaded to the GPU when the
    /// binary is built with a GPU back end (default: all of them; 0 keeps
    /// the model on the CPU). Without one it changes nothing.
    #[serde(default)]
    pub gpu_layers: Option<u32>,
}

/// Settings of the embedded engine (`kind = "local"`); `None` leaves the
/// engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSettings {
    /// CPU threads.
    pub threads: Option<usize>,
    /// The largest context to allocate, in tokens.
    pub max_context: Option<u32>,
    /// Idle contexts kept for prefix reuse.
    pub cache_slots: Option<usize>,
    /// Layers offloaded to a GPU.
    pub gpu_layers: Option<u32>,
}

/// The spelling of the output-limit field, in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensFieldName {
    /// `max_tokens`.
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// The endpoint a Chat Completions server counts tokens at, in
/// configuration (see [`TokenCountEndpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCountName {
    /// None: the gateway estimates.
    None,
    /// vLLM's `POST /tokenize`.
    Tokenize,
    /// Anthropic's `POST /v1/messages/count_tokens`, as llama.cpp serves it.
    MessagesCountTokens,
    /// OpenAI's `POST /v1/responses/input_tokens`.
    ResponsesInputTokens,
}

impl From<TokenCountName> for TokenCountEndpoint {
    fn from(name: TokenCountName) -> Self {
        match name {
            TokenCountName::None => TokenCountEndpoint::None,
            TokenCountName::Tokenize => TokenCountEndpoint::Tokenize,
            TokenCountName::MessagesCountTokens => TokenCountEndpoint::MessagesCountTokens,
            TokenCountName::ResponsesInputTokens => TokenCountEndpoint::ResponsesInputTokens,
        }
    }
}

/// A configuration that cannot be turned into a provider.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `preset` names no preset.
    #[error("provider `{provider}`: unknown preset `{preset}`; known presets: {known}")]
    UnknownPreset {
        /// The provider's name.
        provider: String,
        /// What was written.
        preset: String,
        /// The presets there are.
        known: String,
    },
    /// Neither `kind` nor a preset says which protocol to speak.
    #[error(
        "provider `{provider}`: missing `kind`; set kind = \"openai\" | \"openai-responses\" | \"anthropic\" | \"gemini\" | \"ollama\" | \"local\", or a `preset`"
    )]
    MissingKind {
        /// The provider's name.
        provider: String,
    },
    /// No base URL, and no preset to supply one.
    #[error(
        "provider `{provider}`: missing `base_url` (for example base_url = \"http://127.0.0.1:8000/v1\")"
    )]
    MissingBaseUrl {
        /// The provider's name.
        provider: String,
    },
    /// A base URL that is not http(s).
    #[error("provider `{provider}`: base_url `{url}` must start with http:// or https://")]
    InvalidBaseUrl {
        /// The provider's name.
        provider: String,
        /// What was written.
        url: String,
    },
    /// The kind is valid but not built into this binary.
    #[error("provider `{provider}`: kind \"{kind}\" is not available in this build ({why})")]
    Unavailable {
        /// The provider's name.
        provider: String,
        /// The kind.
        kind: String,
        /// Why.
        why: String,
    },
    /// A setting of the embedded engine on another kind of provider.
    #[error(
        "provider `{provider}`: `{key}` applies only to kind = \"local\" (the embedded engine); remove it or set kind = \"local\""
    )]
    LocalOnly {
        /// The provider's name.
        provider: String,
        /// The setting.
        key: &'static str,
    },
    /// A setting of one protocol's client on a provider of another kind,
    /// where it would do nothing.
    #[error(
        "provider `{provider}`: `{key}` applies only to kind = \"{applies_to}\", and this provider's kind is \"{kind}\"; remove it"
    )]
    OtherKindOnly {
        /// The provider's name.
        provider: String,
        /// The setting.
        key: &'static str,
        /// The kind it is for.
        applies_to: &'static str,
        /// The provider's kind.
        kind: &'static str,
    },
    /// A setting with a value that cannot work.
    #[error("provider `{provider}`: `{key}` {problem}")]
    InvalidValue {
        /// The provider's name.
        provider: String,
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A client refused its options (bad header…).
    #[error("provider `{provider}`: {message}")]
    Client {
        /// The provider's name.
        provider: String,
        /// The client's complaint.
        message: String,
    },
}

/// A provider configuration with defaults and preset filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedProvider {
    /// The provider's name.
    pub name: String,
    /// The protocol.
    pub kind: ProviderKind,
    /// Base URLs (one, or several replicas).
    pub base_urls: Vec<String>,
    /// The key variable, if any.
    pub api_key_env: Option<String>,
    /// Whether requests fail without the key.
    pub key_required: bool,
    /// Whether the server is local.
    pub local: bool,
    /// Whether text tool-call recovery is on.
    pub recover_text_tool_calls: bool,
    /// Per-model exceptions to `recover_text_tool_calls` (model id → on).
    pub recover_per_model: BTreeMap<String, bool>,
    /// Chat Completions differences.
    pub dialect: Dialect,
    /// Timeouts and retries.
    pub http: HttpSettings,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Secret headers: header name → environment variable.
    pub headers_env: Vec<(String, String)>,
    /// Anthropic's default `max_tokens`.
    pub default_max_tokens: Option<u32>,
    /// Whether the Anthropic server is Anthropic's own API (`None`: judged
    /// by its base URL).
    pub anthropic_api: Option<bool>,
    /// Ollama's settings.
    pub ollama: OllamaSettings,
    /// The embedded engine's settings (`kind = "local"`).
    pub engine: EngineSettings,
}

impl ProviderConfig {
    /// Fills in defaults from the preset (named, or implied by the provider's
    /// name) and checks the result.
    ///
    /// # Errors
    /// An unknown preset, a missing kind or base URL, a malformed URL.
    pub fn resolve(&self, name: &str) -> Result<ResolvedProvider, ConfigError> {
        let preset: Option<&Preset> = match &self.preset {
            Some(wanted) => Some(preset(wanted).ok_or_else(|| ConfigError::UnknownPreset {
                provider: name.to_owned(),
                preset: wanted.clone(),
                known: preset_names().join(", "),
            })?),
            // `[providers.groq]` with only a key variable means the groq preset.
            None => preset(name).filter(|p| self.kind.is_none() || self.kind == Some(p.kind)),
        };
        let kind =
            self.kind
                .or(preset.map(|p| p.kind))
                .ok_or_else(|| ConfigError::MissingKind {
                    provider: name.to_owned(),
                })?;
        let mut base_urls = self.base_urls.clone();
        if let Some(url) = &self.base_url {
            base_urls.insert(0, url.clone());
        }
        if base_urls.is_empty() {
            match preset {
                Some(preset) => base_urls.push(preset.base_url.to_owned()),
                None if kind == ProviderKind::Local => {}
                None => {
                    return Err(ConfigError::MissingBaseUrl {
                        provider: name.to_owned(),
                    });
                }
            }
        }
        for url in &mut base_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::InvalidBaseUrl {
                    provider: name.to_owned(),
                    url: url.clone(),
                });
            }
            *url = url.trim_end_matches('/').to_owned();
        }
        // The same server listed twice would get twice the share, and a
        // request moved off it could land on it again.
        let listed = base_urls.len();
        let mut seen = std::collections::BTreeSet::new();
        base_urls.retain(|url| seen.insert(url.clone()));
        if base_urls.len() < listed {
            tracing::warn!(
                provider = name,
                "a base URL is listed more than once in [providers.{name}]; each is used once"
            );
        }
        // Where the requests go decides, not the preset or the kind: a
        // local preset pointed at a hosted server (`ollama` at
        // https://ollama.com) is hosted.
        let local = self.local.unwrap_or_else(|| {
            kind == ProviderKind::Local
                || (!base_urls.is_empty() && base_urls.iter().all(|u| is_private_url(u)))
        });
        if !local && self.local.is_none() && preset.is_some_and(|p| p.local) {
            tracing::warn!(
                provider = name,
                urls = ?base_urls,
                "a local server's preset at an address that is not on this machine or a \
                 private network: treated as hosted (local-only requests refused, prices \
                 needed for budgets); in [providers.{name}], set `local = true` if it is \
                 yours, or `local = false` to say it is hosted and silence this"
            );
        }
        let api_key_env = self
            .api_key_env
            .clone()
            .or(preset.and_then(|p| p.api_key_env.map(str::to_owned)));
        // A key variable the user named is required; a preset's is required
        // only for hosted APIs.
        let key_required = self.api_key_env.is_some() || preset.is_some_and(|p| p.key_required);
        let mut dialect = preset.map(|p| p.dialect).unwrap_or_default();
        if let Some(field) = self.max_tokens_field {
            dialect.max_tokens_field = match field {
                MaxTokensFieldName::MaxTokens => MaxTokensField::MaxTokens,
                MaxTokensFieldName::MaxCompletionTokens => MaxTokensField::MaxCompletionTokens,
            };
        }
        if let Some(stream_usage) = self.stream_usage {
            dialect.stream_usage = stream_usage;
        }
        if let Some(endpoint) = self.token_count {
            dialect.token_count = endpoint.into();
        }
        if let Some(switch) = self.enable_thinking_kwarg {
            dialect.enable_thinking_kwarg = switch;
        }
        if let Some(probe) = self.probe_health {
            dialect.probe_health = probe;
        }
        if let Some(send) = self.reasoning_in_history {
            dialect.reasoning_in_history = send;
        }
        if let Some(openai_api) = self.openai_api {
            dialect.openai_api = openai_api;
        }
        if let Some(limit) = self.max_stop_sequences {
            dialect.max_stop_sequences = Some(limit);
        }
        if let Some(none_for_off) = self.none_for_off {
            dialect.none_for_off = none_for_off;
        }
        let engine = EngineSettings {
            threads: self.threads,
            max_context: self.max_context,
            cache_slots: self.cache_slots,
            gpu_layers: self.gpu_layers,
        };
        // Settings of one protocol's client would do nothing elsewhere; a
        // user who set one meant something by it.
        let protocol_settings = [
            (
                "max_tokens_field",
                ProviderKind::Openai,
                self.max_tokens_field.is_some(),
            ),
            (
                "stream_usage",
                ProviderKind::Openai,
                self.stream_usage.is_some(),
            ),
            (
                "token_count",
                ProviderKind::Openai,
                self.token_count.is_some(),
            ),
            (
                "enable_thinking_kwarg",
                ProviderKind::Openai,
                self.enable_thinking_kwarg.is_some(),
            ),
            (
                "probe_health",
                ProviderKind::Openai,
                self.probe_health.is_some(),
            ),
            (
                "reasoning_in_history",
                ProviderKind::Openai,
                self.reasoning_in_history.is_some(),
            ),
            (
                "max_stop_sequences",
                ProviderKind::Openai,
                self.max_stop_sequences.is_some(),
            ),
            (
                "none_for_off",
                ProviderKind::Openai,
                self.none_for_off.is_some(),
            ),
            (
                "default_max_tokens",
                ProviderKind::Anthropic,
                self.default_max_tokens.is_some(),
            ),
            (
                "anthropic_api",
                ProviderKind::Anthropic,
                self.anthropic_api.is_some(),
            ),
            (
                "num_ctx_min",
                ProviderKind::Ollama,
                self.num_ctx_min.is_some(),
            ),
            (
                "num_ctx_max",
                ProviderKind::Ollama,
                self.num_ctx_max.is_some(),
            ),
            (
                "keep_alive",
                ProviderKind::Ollama,
                self.keep_alive.is_some(),
            ),
        ];
        if self.openai_api.is_some()
            && !matches!(kind, ProviderKind::Openai | ProviderKind::OpenaiResponses)
        {
            return Err(ConfigError::OtherKindOnly {
                provider: name.to_owned(),
                key: "openai_api",
                applies_to: "openai or openai-responses",
                kind: kind.as_str(),
            });
        }
        if let Some((key, applies_to, _)) = protocol_settings
            .iter()
            .find(|(_, applies_to, set)| *set && *applies_to != kind)
        {
            return Err(ConfigError::OtherKindOnly {
                provider: name.to_owned(),
                key,
                applies_to: applies_to.as_str(),
                kind: kind.as_str(),
            });
        }
        if kind != ProviderKind::Local {
            let set = [
                ("threads", engine.threads.is_some()),
                ("max_context", engine.max_context.is_some()),
                ("cache_slots", engine.cache_slots.is_some()),
                ("gpu_layers", engine.gpu_layers.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                return Err(ConfigError::LocalOnly {
                    provider: name.to_owned(),
                    key,
                });
            }
        }
        if engine.threads == Some(0) {
            return Err(ConfigError::InvalidValue {
                provider: name.to_owned(),
                key: "threads",
                problem: "must be at least 1",
            });
        }
        if engine.max_context.is_some_and(|n| n < 256) {
            return Err(ConfigError::InvalidValue {
                provider: name.to_owned(),
                key: "max_context",
                problem: "must be at least 256 tokens",
            });
        }
        let default_idle = if local { 600 } else { 120 };
        let http = HttpSettings {
            connect_timeout: Duration::from_secs(self.connect_timeout_secs.unwrap_or(10)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.unwrap_or(default_idle)),
            response_timeout: Duration::from_secs(self.response_timeout_secs.unwrap_or(if local {
                1800
            } else {
                600
            })),
            retry: RetryPolicy {
                max_retries: self.max_retries.unwrap_or(3),
                ..RetryPolicy::default()
            },
            // A local server is reached directly unless told otherwise: the
            // privacy policy counts on its requests not leaving for a proxy.
            direct: !self.env_proxy.unwrap_or(!local),
        };
        Ok(ResolvedProvider {
            name: name.to_owned(),
            kind,
            base_urls,
            api_key_env,
            key_required,
            local,
            recover_text_tool_calls: self.recover_text_tool_calls.unwrap_or(local),
            recover_per_model: BTreeMap::new(),
            dialect,
            http,
            headers: self.headers.clone().into_iter().collect(),
            headers_env: self.headers_env.clone().into_iter().collect(),
            default_max_tokens: self.default_max_tokens,
            anthropic_api: self.anthropic_api,
            ollama: self.ollama_settings(),
            engine,
        })
    }

    fn ollama_settings(&self) -> OllamaSettings {
        let mut settings = OllamaSettings::default();
        if let Some(min) = self.num_ctx_min {
            settings.num_ctx.min = min;
        }
        if let Some(max) = self.num_ctx_max {
            settings.num_ctx.max = max;
        }
        settings.keep_alive = self.keep_alive.clone();
        settings
    }
}

/// `url` without a user name or password in it, for status pages.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials at all.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_owned()
        }
        _ => url.to_owned(),
    }
}

/// Whether a URL points at this machine or a private network.
fn is_private_url(url: &str) -> bool {
    // Parsed, not matched as text: `https://127.0.0.1@api.example.com` is
    // api.example.com, and `10.example.com` is a name, not an address.
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
        // Loopback, and unique local addresses (fc00::/7).
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            // A name of one label (`ollama`, `gpu-box`) resolves only
            // through /etc/hosts, a container network or a search domain;
            // the others are names kept for private networks.
            !name.contains('.')
                || [".localhost", ".local", ".lan", ".internal", ".home.arpa"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
        }
    }
}

impl ResolvedProvider {
    /// Client options for one of the base URLs, with the key read from the
    /// environment.
    pub fn client_options(&self, base_url: &str) -> ClientOptions {
        let mut options = ClientOptions::new(self.name.clone(), base_url);
        options.api_key = self.api_key_env.as_deref().and_then(ApiKey::from_env);
        options.extra_headers = self.headers.clone();
        options.secret_headers = self
            .headers_env
            .iter()
            .filter_map(|(name, variable)| Some((name.clone(), ApiKey::from_env(variable)?)))
            .collect();
        options.http = self.http.clone();
        options
    }

    /// The variable, of those this provider needs (its key, its secret
    /// headers), that is missing from the environment.
    pub fn missing_key(&self) -> Option<&str> {
        let key = self
            .api_key_env
            .as_deref()
            .filter(|variable| self.key_required && ApiKey::from_env(variable).is_none());
        // Secret headers the user named are required too.
        key.or_else(|| {
            self.headers_env
                .iter()
                .map(|(_, variable)| variable.as_str())
                .find(|variable| ApiKey::from_env(variable).is_none())
        })
    }

    /// Builds the provider: one client per base URL, balanced when there are
    /// several, wrapped for text tool-call recovery when that is on.
    ///
    /// # Errors
    /// A client that refuses its options, or an unavailable kind.
    pub fn build(&self, health: &HealthSettings) -> Result<Arc<dyn Provider>, ConfigError> {
        if let Some(variable) = self.missing_key() {
            return Ok(Arc::new(Unusable {
                provider: self.name.clone(),
                kind: ErrorKind::Authentication,
                message: format!("the environment variable {variable} is not set"),
            }));
        }
        // With several replicas, a failed request moves to the next replica
        // at once (the replica set does that) instead of retrying the same,
        // possibly dead, one with backoff.
        let mut http = self.http.clone();
        if self.base_urls.len() > 1 {
            http.retry = RetryPolicy::none();
        }
        let mut replicas = Vec::new();
        for url in &self.base_urls {
            replicas.push(self.build_client(url, &http)?);
        }
        if self.kind == ProviderKind::Local {
            return Err(ConfigError::Unavailable {
                provider: self.name.clone(),
                kind: "local".into(),
                why: "the embedded llama.cpp engine is not part of this build yet; use an Ollama or llama.cpp server meanwhile".into(),
            });
        }
        let provider = if replicas.len() == 1 {
            replicas.remove(0)
        } else {
            Arc::new(
                ReplicaSet::new(self.name.clone(), replicas, health.clone()).with_addresses(
                    self.base_urls
                        .iter()
                        .map(|url| without_credentials(url))
                        .collect(),
                ),
            )
        };
        let recovers_somewhere =
            self.recover_text_tool_calls || self.recover_per_model.values().any(|on| *on);
        Ok(if recovers_somewhere {
            Arc::new(RecoveringProvider::with_policy(
                provider,
                self.recover_text_tool_calls,
                self.recover_per_model.clone(),
            ))
        } else {
            provider
        })
    }

    fn build_client(
        &self,
        base_url: &str,
        http: &HttpSettings,
    ) -> Result<Arc<dyn Provider>, ConfigError> {
        let mut options = self.client_options(base_url);
        options.http = http.clone();
        let client_error = |error: LlmError| ConfigError::Client {
            provider: self.name.clone(),
            message: error.message,
        };
        Ok(match self.kind {
            ProviderKind::Openai => {
                Arc::new(OpenAiChatClient::new(options, self.dialect).map_err(client_error)?)
            }
            ProviderKind::OpenaiResponses => Arc::new(
                crate::client::OpenAiResponsesClient::new(options)
                    .map_err(client_error)?
                    .with_openai_api(self.dialect.openai_api),
            ),
            ProviderKind::Anthropic => {
                let mut client =
                    crate::client::AnthropicClient::new(options).map_err(client_error)?;
                if let Some(max) = self.default_max_tokens {
                    client = client.with_default_max_tokens(max);
                }
                if let Some(anthropic_api) = self.anthropic_api {
                    client = client.with_anthropic_api(anthropic_api);
                }
                Arc::new(client)
            }
            ProviderKind::Gemini => {
                Arc::new(crate::client::GeminiClient::new(options).map_err(client_error)?)
            }
            ProviderKind::Ollama => Arc::new(
                crate::client::OllamaClient::with_settings(options, self.ollama.clone())
                    .map_err(client_error)?,
            ),
            ProviderKind::Local => {
                return Err(ConfigError::Unavailable {
                    provider: self.name.clone(),
                    kind: "local".into(),
                    why: "the embedded llama.cpp engine is not part of this build yet".into(),
                });
            }
        })
    }
}

/// A provider standing in for one that cannot work — its key variable is
/// not set, or it could not be built: every request fails at once with an
/// error saying why, without touching the network.
#[derive(Debug)]
struct Unusable {
    provider: String,
    kind: ErrorKind,
    message: String,
}

/// A provider whose every request fails with `error`: configured providers
/// that cannot be built stay visible, and say why, instead of vanishing.
pub fn unusable_provider(name: &str, error: &ConfigError) -> Arc<dyn Provider> {
    Arc::new(Unusable {
        provider: name.to_owned(),
        kind: ErrorKind::InvalidRequest,
        message: error.to_string(),
    })
}

impl Unusable {
    fn error(&self) -> LlmError {
        LlmError::new(
            self.kind.clone(),
            self.provider.clone(),
            self.message.clone(),
        )
    }
}

#[async_trait]
impl Provider for Unusable {
    fn name(&self) -> &str {
        &self.provider
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities::default()
    }

    async fn stream(&self, _request: ChatRequest) -> Result<EventStream, LlmError> {
        Err(self.error())
    }

    async fn complete(&self, _request: ChatRequest) -> Result<ChatResponse, LlmError> {
        Err(self.error())
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Err(self.error())
    }

    async fn embed(&self, _request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        Err(self.error())
    }

    async fn count_input_tokens(&self, _request: ChatRequest) -> Result<Option<u64>, LlmError> {
        Err(self.error())
    }

    fn usable(&self) -> bool {
        false
    }
}
