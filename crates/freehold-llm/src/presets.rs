//! Named presets: where well-known servers listen, which variable holds
//! their key, and how they differ from each other.
//!
//! Every preset is also a provider that needs no configuration:
//! `--model groq:llama-3.3-70b-versatile` works as soon as `GROQ_API_KEY` is
//! set, and `--model ollama:qwen3:8b` as soon as Ollama runs locally.

use crate::wire::openai_chat::{Dialect, MaxTokensField, TokenCountEndpoint};

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions and every compatible server.
    Openai,
    /// The OpenAI Responses API.
    OpenaiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Ollama's native `/api/chat`.
    Ollama,
    /// The embedded engine (llama.cpp in-process).
    Local,
}

impl ProviderKind {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::OpenaiResponses => "openai-responses",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Ollama => "ollama",
            Self::Local => "local",
        }
    }
}

/// A well-known server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Its name, usable as a provider name and as `preset = "…"`.
    pub name: &'static str,
    /// The protocol it speaks.
    pub kind: ProviderKind,
    /// Where it listens by default.
    pub base_url: &'static str,
    /// The variable holding its key, if it takes one.
    pub api_key_env: Option<&'static str>,
    /// Whether a key is required (hosted APIs) or optional (local servers).
    pub key_required: bool,
    /// Whether it runs on the user's own machine or network: local providers
    /// get long idle timeouts and text tool-call recovery by default.
    pub local: bool,
    /// Chat Completions differences.
    pub dialect: Dialect,
}

const COMPATIBLE: Dialect = Dialect {
    max_tokens_field: MaxTokensField::MaxTokens,
    stream_usage: true,
    token_count: TokenCountEndpoint::None,
    enable_thinking_kwarg: false,
    probe_health: false,
    reasoning_in_history: false,
    openai_api: false,
    max_stop_sequences: None,
    none_for_off: false,
};

/// A hosted server that takes at most 4 stop sequences, as OpenAI's API
/// does.
const FOUR_STOPS: Dialect = Dialect {
    max_stop_sequences: Some(4),
    ..COMPATIBLE
};

/// Groq and OpenRouter: 4 stop sequences, and `reasoning_effort: "none"`
/// for no reasoning (OpenRouter maps it to each provider's switch; the
/// models of either that take other values say so when refused).
const FOUR_STOPS_NONE_FOR_OFF: Dialect = Dialect {
    none_for_off: true,
    ..FOUR_STOPS
};

/// Servers that hand `chat_template_kwargs` to the model's chat template
/// (vLLM, SGLang, llama.cpp's `llama-server`), so that a request for no
/// reasoning can turn a thinking template's `enable_thinking` off, and
/// earlier reasoning reaches templates that show it; most also say at
/// `GET /health`, cheaply, whether they can answer.
const INFERENCE_SERVER: Dialect = Dialect {
    enable_thinking_kwarg: true,
    probe_health: true,
    reasoning_in_history: true,
    ..COMPATIBLE
};

const fn hosted(
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    key: &'static str,
) -> Preset {
    Preset {
        name,
        kind,
        base_url,
        api_key_env: Some(key),
        key_required: true,
        local: false,
        dialect: COMPATIBLE,
    }
}

const fn local(
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    key: Option<&'static str>,
) -> Preset {
    Preset {
        name,
        kind,
        base_url,
        api_key_env: key,
        key_required: false,
        local: true,
        dialect: COMPATIBLE,
    }
}

/// Every preset, local servers first.
pub const PRESETS: &[Preset] = &[
    local(
        "ollama",
        ProviderKind::Ollama,
        "http://127.0.0.1:11434",
        Some("OLLAMA_API_KEY"),
    ),
    Preset {
        // llama-server counts a chat's tokens, tools included, at
        // Anthropic's count endpoint, which it also serves.
        dialect: Dialect {
            token_count: TokenCountEndpoint::MessagesCountTokens,
            ..INFERENCE_SERVER
        },
        ..local(
            "llamacpp",
            ProviderKind::Openai,
            "http://127.0.0.1:8080/v1",
            Some("LLAMACPP_API_KEY"),
        )
    },
    local(
        "lmstudio",
        ProviderKind::Openai,
        "http://127.0.0.1:1234/v1",
        None,
    ),
    Preset {
        // vLLM counts a chat's tokens, tools included, at `/tokenize`,
        // and takes 4 stop sequences unless `VLLM_MAX_STOP_STRINGS` says
        // otherwise (older releases take any number).
        dialect: Dialect {
            token_count: TokenCountEndpoint::Tokenize,
            max_stop_sequences: Some(4),
            ..INFERENCE_SERVER
        },
        ..local(
            "vllm",
            ProviderKind::Openai,
            "http://127.0.0.1:8000/v1",
            Some("VLLM_API_KEY"),
        )
    },
    Preset {
        // SGLang's `/health` generates a token, which can take longer than
        // a probe may wait while the server is busy: not asked.
        dialect: Dialect {
            probe_health: false,
            ..INFERENCE_SERVER
        },
        ..local(
            "sglang",
            ProviderKind::Openai,
            "http://127.0.0.1:30000/v1",
            Some("SGLANG_API_KEY"),
        )
    },
    Preset {
        dialect: Dialect {
            max_tokens_field: MaxTokensField::MaxCompletionTokens,
            // OpenAI counts a request's tokens for the Responses API, which
            // sees the same conversation.
            token_count: TokenCountEndpoint::ResponsesInputTokens,
            openai_api: true,
            ..FOUR_STOPS
        },
        ..hosted(
            "openai",
            ProviderKind::Openai,
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
        )
    },
    Preset {
        dialect: Dialect {
            openai_api: true,
            ..COMPATIBLE
        },
        ..hosted(
            "openai-responses",
            ProviderKind::OpenaiResponses,
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
        )
    },
    hosted(
        "anthropic",
        ProviderKind::Anthropic,
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
    ),
    hosted(
        "gemini",
        ProviderKind::Gemini,
        "https://generativelanguage.googleapis.com/v1beta",
        "GEMINI_API_KEY",
    ),
    Preset {
        // Mistral rejects fields it does not know, `stream_options` among
        // them; it sends usage on the last chunk unasked.
        dialect: Dialect {
            stream_usage: false,
            ..COMPATIBLE
        },
        ..hosted(
            "mistral",
            ProviderKind::Openai,
            "https://api.mistral.ai/v1",
            "MISTRAL_API_KEY",
        )
    },
    Preset {
        dialect: FOUR_STOPS_NONE_FOR_OFF,
        ..hosted(
            "groq",
            ProviderKind::Openai,
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
        )
    },
    hosted(
        "together",
        ProviderKind::Openai,
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
    ),
    hosted(
        "deepseek",
        ProviderKind::Openai,
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    ),
    Preset {
        dialect: FOUR_STOPS_NONE_FOR_OFF,
        ..hosted(
            "openrouter",
            ProviderKind::Openai,
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
        )
    },
    hosted(
        "fireworks",
        ProviderKind::Openai,
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
    ),
];

/// The preset with this name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// The names of every preset, for error messages.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|preset| preset.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_hosted_presets_need_keys() {
        let mut names = preset_names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PRESETS.len());
        for preset in PRESETS {
            assert_eq!(preset.local, !preset.key_required, "{}", preset.name);
            assert!(
                preset.local || preset.base_url.starts_with("https://"),
                "{}",
                preset.name
            );
            assert!(!preset.base_url.ends_with('/'), "{}", preset.name);
        }
        assert_eq!(preset("groq").map(|p| p.kind), Some(ProviderKind::Openai));
    }

    /// Only servers known to hand `chat_template_kwargs` to the template
    /// get the thinking switch (hosted APIs may refuse unknown fields), and
    /// only they are asked `GET /health` (a hosted API has no such path).
    #[test]
    fn the_thinking_switch_and_health_go_to_inference_servers_only() {
        let with = |flag: fn(&Dialect) -> bool| -> Vec<&str> {
            PRESETS
                .iter()
                .filter(|preset| flag(&preset.dialect))
                .map(|preset| preset.name)
                .collect()
        };
        assert_eq!(
            with(|dialect| dialect.enable_thinking_kwarg),
            ["llamacpp", "vllm", "sglang"]
        );
        assert_eq!(with(|dialect| dialect.probe_health), ["llamacpp", "vllm"]);
        assert_eq!(
            with(|dialect| dialect.reasoning_in_history),
            ["llamacpp", "vllm", "sglang"]
        );
        assert_eq!(
            with(|dialect| dialect.max_stop_sequences == Some(4)),
            ["vllm", "openai", "groq", "openrouter"]
        );
        // Only OpenAI's own API gets what only it takes.
        assert_eq!(
            with(|dialect| dialect.openai_api),
            ["openai", "openai-responses"]
        );
    }
}
