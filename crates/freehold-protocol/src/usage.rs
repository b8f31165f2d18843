//! Token usage of one answer.

use serde::{Deserialize, Serialize};

/// Tokens used by one request.
///
/// `input_tokens` counts *all* input tokens, cached or not (OpenAI's
/// convention); providers that report cached tokens separately (Anthropic) are
/// normalised to it, so `input_tokens - cached_input_tokens - cache_write_tokens`
/// is what was processed at the full price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All input (prompt) tokens, including cached ones.
    pub input_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (Anthropic charges
    /// extra for them).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Of `cache_write_tokens`, those written to be kept for an hour
    /// (Anthropic's `"ttl": "1h"`), which cost more than the five-minute
    /// writes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    /// Output (completion) tokens, including reasoning tokens.
    pub output_tokens: u64,
    /// Output tokens spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Adds another request's usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_write_1h_tokens += other.cache_write_1h_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// How long an answer took, where the provider measures it (the embedded
/// engine does; HTTP providers mostly do not).
///
/// Durations are in microseconds so that the type stays exact and `Eq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Prompt tokens evaluated (cached ones are not: they cost nothing).
    pub prompt_tokens: u64,
    /// Time spent evaluating them.
    pub prompt_us: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Time spent generating them (after the first one was sampled).
    pub generation_us: u64,
    /// From the request reaching the engine to the first generated token.
    pub first_token_us: u64,
}

impl Timings {
    /// Prompt evaluation speed (prefill), tokens per second.
    pub fn prompt_tokens_per_second(&self) -> Option<f64> {
        per_second(self.prompt_tokens, self.prompt_us)
    }

    /// Generation speed (decode), tokens per second.
    pub fn generation_tokens_per_second(&self) -> Option<f64> {
        per_second(self.generated_tokens, self.generation_us)
    }

    /// The time to the first token.
    pub fn time_to_first_token(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.first_token_us)
    }
}

fn per_second(tokens: u64, micros: u64) -> Option<f64> {
    (tokens > 0 && micros > 0).then(|| tokens as f64 * 1e6 / micros as f64)
}
