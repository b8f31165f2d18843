//! What an answer cost, in US dollars.
//!
//! ```
//! use freehold_llm::catalog::Pricing;
//! use freehold_llm::cost::{CostDisplay, cost};
//! use freehold_protocol::Usage;
//!
//! let pricing = Pricing {
//!     input: 1.25, cached_input: Some(0.125), cache_write: None, output: 10.0, long_prompt: None,
//! };
//! let usage = Usage { input_tokens: 10_000, cached_input_tokens: 4_000, output_tokens: 1_000, ..Usage::default() };
//! assert_eq!(CostDisplay(cost(&usage, Some(&pricing))).to_string(), "$0.0180");
//! assert_eq!(CostDisplay(cost(&usage, None)).to_string(), "unknown");
//! ```

use std::fmt;

use freehold_protocol::Usage;

use crate::catalog::Pricing;

/// What a cache write kept for an hour costs, in input prices (Anthropic's
/// published multiplier; five-minute writes cost 1.25).
const ONE_HOUR_WRITE_MULTIPLIER: f64 = 2.0;

/// The cost of `usage` in USD, or `None` when the price is unknown.
///
/// A request of more input tokens than a long-prompt price starts at is
/// charged at those prices ([`Pricing::for_input_tokens`]), all its tokens.
/// `usage.input_tokens` includes cached and cache-write tokens: the rest is
/// charged at `input`, cached tokens at `cached_input` and cache writes at
/// `cache_write` (each falling back to `input` when the provider has no
/// separate price), except writes kept for an hour, which Anthropic (the
/// one provider with them) charges at twice `input` (where the model has a
/// `cache_write` price: a provider without one charges no writes); output
/// tokens (reasoning included) at `output`.
pub fn cost(usage: &Usage, pricing: Option<&Pricing>) -> Option<f64> {
    let pricing = pricing?.for_input_tokens(usage.input_tokens);
    let uncached = usage
        .input_tokens
        .saturating_sub(usage.cached_input_tokens)
        .saturating_sub(usage.cache_write_tokens);
    let cached_price = pricing.cached_input.unwrap_or(pricing.input);
    let write_price = pricing.cache_write.unwrap_or(pricing.input);
    let hour_price = pricing
        .cache_write
        .map_or(pricing.input, |_| ONE_HOUR_WRITE_MULTIPLIER * pricing.input);
    let hour_writes = usage.cache_write_1h_tokens.min(usage.cache_write_tokens);
    let short_writes = usage.cache_write_tokens - hour_writes;
    // Token counts fit f64 exactly far beyond any real answer (2^53).
    let micro_dollars = uncached as f64 * pricing.input
        + usage.cached_input_tokens as f64 * cached_price
        + short_writes as f64 * write_price
        + hour_writes as f64 * hour_price
        + usage.output_tokens as f64 * pricing.output;
    Some(micro_dollars / 1_000_000.0)
}

/// Shows a cost as `$0.0123`, or `unknown` when it is not known.
///
/// Sums of a dollar or more get cents (`$12.34`); smaller ones get four
/// decimals, or two significant digits when that would show zero
/// (`$0.000012`). Zero is `$0.00`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostDisplay(pub Option<f64>);

impl fmt::Display for CostDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self.0 {
            Some(value) if value.is_finite() => value,
            _ => return f.pad("unknown"),
        };
        let magnitude = value.abs();
        let decimals = if magnitude == 0.0 || magnitude >= 1.0 {
            2
        } else if magnitude >= 0.0001 {
            4
        } else {
            // Two significant digits: 0.000012 has its first digit at the
            // fifth decimal.
            let first_digit = (-magnitude.log10()).ceil() as usize;
            (first_digit + 1).min(12)
        };
        let sign = if value < 0.0 { "-" } else { "" };
        f.pad(&format!("{sign}${magnitude:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::LongPromptPricing;

    fn usage(input: u64, cached: u64, write: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            cache_write_tokens: write,
            cache_write_1h_tokens: 0,
            output_tokens: output,
            reasoning_tokens: 0,
        }
    }

    const GPT5: Pricing = Pricing {
        input: 1.25,
        cached_input: Some(0.125),
        cache_write: None,
        output: 10.0,
        long_prompt: None,
    };

    const SONNET: Pricing = Pricing {
        input: 3.0,
        cached_input: Some(0.30),
        cache_write: Some(3.75),
        output: 15.0,
        long_prompt: None,
    };

    #[test]
    fn cached_tokens_are_charged_at_the_cached_price() {
        // 6,000 uncached × 1.25 + 4,000 cached × 0.125 + 1,000 out × 10
        // = 7,500 + 500 + 10,000 = 18,000 µ$.
        assert_eq!(
            cost(&usage(10_000, 4_000, 0, 1_000), Some(&GPT5)),
            Some(0.018)
        );
        // Without caching it would have been 12,500 + 10,000.
        assert_eq!(cost(&usage(10_000, 0, 0, 1_000), Some(&GPT5)), Some(0.0225));
    }

    #[test]
    fn cache_writes_are_charged_at_the_write_price() {
        // 1,000 uncached × 3 + 2,000 cached × 0.30 + 4,000 written × 3.75
        // + 500 out × 15 = 3,000 + 600 + 15,000 + 7,500 = 26,100 µ$.
        let total = cost(&usage(7_000, 2_000, 4_000, 500), Some(&SONNET)).unwrap();
        assert!((total - 0.0261).abs() < 1e-15, "{total}");
        assert_eq!(CostDisplay(Some(total)).to_string(), "$0.0261");
    }

    #[test]
    fn writes_kept_for_an_hour_cost_twice_the_input_price() {
        // Of 4,000 written, 1,000 for an hour: 1,000 uncached × 3 + 2,000
        // cached × 0.30 + 3,000 × 3.75 + 1,000 × 6 + 500 out × 15
        // = 3,000 + 600 + 11,250 + 6,000 + 7,500 = 28,350 µ$.
        let short = Usage {
            cache_write_1h_tokens: 1_000,
            ..usage(7_000, 2_000, 4_000, 500)
        };
        let total = cost(&short, Some(&SONNET)).unwrap();
        assert!((total - 0.02835).abs() < 1e-15, "{total}");
        // Past a long prompt's size, twice its input price.
        let tiered = sonnet_with_a_long_prompt_price();
        let long = Usage {
            cache_write_1h_tokens: 1_000,
            ..usage(201_000, 0, 1_000, 0)
        };
        // 200,000 × 6 + 1,000 × 12 = 1,212,000 µ$.
        let total = cost(&long, Some(&tiered)).unwrap();
        assert!((total - 1.212).abs() < 1e-12, "{total}");
    }

    /// Claude Sonnet's prices, doubled past 200,000 input tokens.
    fn sonnet_with_a_long_prompt_price() -> Pricing {
        Pricing {
            long_prompt: Some(LongPromptPricing {
                above_input_tokens: 200_000,
                input: 6.0,
                cached_input: Some(0.60),
                cache_write: Some(7.50),
                output: 22.50,
            }),
            ..SONNET
        }
    }

    #[test]
    fn missing_cache_prices_fall_back_to_the_input_price() {
        let flat = Pricing {
            input: 2.0,
            cached_input: None,
            cache_write: None,
            output: 8.0,
            long_prompt: None,
        };
        // Every input token at 2.0: 3,000 × 2 + 1,000 × 8 = 14,000 µ$.
        assert_eq!(
            cost(&usage(3_000, 1_000, 1_000, 1_000), Some(&flat)),
            Some(0.014)
        );
        // Writes said to be kept an hour too: a provider without a write
        // price charges none.
        let hour = Usage {
            cache_write_1h_tokens: 1_000,
            ..usage(3_000, 1_000, 1_000, 1_000)
        };
        assert_eq!(cost(&hour, Some(&flat)), Some(0.014));
    }

    #[test]
    fn a_long_prompt_is_charged_its_own_prices_for_every_token() {
        let tiered = sonnet_with_a_long_prompt_price();
        // At the limit, the usual prices: 200,000 × 3 + 1,000 × 15.
        assert_eq!(
            cost(&usage(200_000, 0, 0, 1_000), Some(&tiered)),
            Some(0.615)
        );
        // Past it, every token at the long-prompt prices: 150,000 × 6 +
        // 50,001 × 0.60 + 1,000 × 22.50 = 900,000 + 30,000.6 + 22,500 µ$.
        let long = cost(&usage(200_001, 50_001, 0, 1_000), Some(&tiered)).unwrap();
        assert!((long - 0.9525006).abs() < 1e-12, "{long}");
    }

    #[test]
    fn inconsistent_counts_saturate_instead_of_wrapping() {
        // More cached tokens reported than input tokens: uncached is 0.
        // 5,000 cached × 0.125 = 625 µ$.
        assert_eq!(
            cost(&usage(1_000, 5_000, 0, 0), Some(&GPT5)),
            Some(0.000625)
        );
    }

    #[test]
    fn unknown_price_is_none_and_free_is_zero() {
        assert_eq!(cost(&usage(1_000, 0, 0, 1_000), None), None);
        assert_eq!(CostDisplay(None).to_string(), "unknown");
        let free = cost(&usage(1_000, 10, 10, 1_000), Some(&Pricing::FREE));
        assert_eq!(free, Some(0.0));
        assert_eq!(CostDisplay(free).to_string(), "$0.00");
    }

    #[test]
    fn display_precision_follows_the_size_of_the_sum() {
        let shown = |value: f64| CostDisplay(Some(value)).to_string();
        assert_eq!(shown(12.345), "$12.35");
        assert_eq!(shown(1.0), "$1.00");
        assert_eq!(shown(0.0123), "$0.0123");
        assert_eq!(shown(0.5), "$0.5000");
        assert_eq!(shown(0.0001), "$0.0001");
        assert_eq!(shown(0.000012), "$0.000012");
        assert_eq!(shown(0.00000051), "$0.00000051");
        assert_eq!(shown(-0.25), "-$0.2500");
        assert_eq!(CostDisplay(Some(f64::NAN)).to_string(), "unknown");
        assert_eq!(format!("{:>8}", CostDisplay(Some(0.5))), " $0.5000");
    }
}
