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
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}
