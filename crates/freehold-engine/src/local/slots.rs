//! Prefix caching: llama.cpp contexts kept between requests, with the tokens
//! their KV cache holds.
//!
//! An agent re-sends the whole conversation every turn. A slot remembers what
//! its context has already evaluated; the next request evaluates only the
//! tokens after the longest common prefix. Several slots serve several
//! conversations at once; the least recently used idle one is dropped when
//! there are more than the configured number.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Instant;

use freehold_protocol::{ErrorKind, LlmError};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::{CONTEXT_CREATION, error};

/// Prompt tokens decoded per batch.
pub(crate) const BATCH: u32 = 512;

/// The smallest context a slot allocates: small enough to cost little, large
/// enough that a short conversation grows in it without reallocating.
const MIN_CONTEXT: u32 = 1024;

/// A context and what its KV cache (sequence 0) holds.
pub(crate) struct Slot {
    /// The llama.cpp context.
    pub(crate) ctx: LlamaContext<'static>,
    /// The tokens evaluated into the cache, in order from position 0.
    pub(crate) tokens: Vec<LlamaToken>,
    /// The model it was made for, by address: loaded models are never
    /// freed, so an address names one model for the process's life (a
    /// file replaced at the same path is another model, at another one).
    model: usize,
    n_ctx: u32,
    last_used: Instant,
}

impl Slot {
    /// Keeps the cache's longest prefix shared with `prompt` and drops the
    /// rest; returns how many prompt tokens need no evaluation. At least the
    /// last prompt token is always left to evaluate (its logits are needed).
    pub(crate) fn keep_prefix(&mut self, prompt: &[LlamaToken]) -> usize {
        let shared = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(cached, new)| cached == new)
            .count();
        let keep = shared.min(prompt.len().saturating_sub(1));
        if keep < self.tokens.len() {
            let removed = u32::try_from(keep)
                .ok()
                .and_then(|p0| self.ctx.clear_kv_cache_seq(Some(0), Some(p0), None).ok())
                .unwrap_or(false);
            if !removed {
                // Some caches (recurrent or sliding-window models) cannot
                // drop a tail: start over.
                self.ctx.clear_kv_cache();
                self.tokens.clear();
                return 0;
            }
            self.tokens.truncate(keep);
        }
        keep
    }
}

/// The slots of one provider.
pub(crate) struct SlotPool {
    idle: Mutex<Vec<Slot>>,
    capacity: usize,
}

impl std::fmt::Debug for SlotPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|idle| idle.len()).unwrap_or(0);
        f.debug_struct("SlotPool")
            .field("idle", &idle)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// What a new context is created with.
pub(crate) struct ContextSpec {
    pub(crate) model: &'static LlamaModel,
    pub(crate) backend: &'static LlamaBackend,
    /// Tokens the request needs (prompt plus answer).
    pub(crate) needed: u32,
    /// The largest context allowed.
    pub(crate) allowed: u32,
    pub(crate) threads: usize,
}

impl SlotPool {
    /// A pool keeping up to `capacity` idle slots (0 disables caching).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// The idle slot of this model sharing the longest prefix with `prompt`
    /// and large enough for the request, or a new one.
    pub(crate) fn acquire(
        &self,
        spec: &ContextSpec,
        prompt: &[LlamaToken],
    ) -> Result<Slot, LlmError> {
        if let Some(slot) = self.take_best(spec, prompt) {
            return Ok(slot);
        }
        let n_ctx = context_size(spec.needed, spec.allowed);
        let threads = i32::try_from(spec.threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(BATCH)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = {
            let _lock = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
            spec.model
                .new_context(spec.backend, params)
                .map_err(|e| error(ErrorKind::Server, format!("cannot create a context: {e}")))?
        };
        Ok(Slot {
            ctx,
            tokens: Vec::new(),
            model: model_address(spec.model),
            n_ctx,
            last_used: Instant::now(),
        })
    }

    fn take_best(&self, spec: &ContextSpec, prompt: &[LlamaToken]) -> Option<Slot> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (index, shared) = idle
            .iter()
            .enumerate()
            .filter(|(_, slot)| {
                slot.model == model_address(spec.model) && slot.n_ctx >= spec.needed
            })
            .map(|(index, slot)| {
                let shared = slot
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (index, shared)
            })
            .max_by_key(|(index, shared)| (*shared, idle[*index].last_used))?;
        // A slot with nothing in common is still worth reusing when the pool
        // is full: it saves allocating a context.
        if shared == 0 && idle.len() < self.capacity {
            return None;
        }
        Some(idle.swap_remove(index))
    }

    /// Returns a slot after a request; the least recently used idle slots
    /// beyond capacity are dropped (their memory freed).
    pub(crate) fn release(&self, mut slot: Slot) {
        if self.capacity == 0 {
            return;
        }
        slot.last_used = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(slot);
        while idle.len() > self.capacity {
            if let Some(oldest) = idle
                .iter()
                .enumerate()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(index, _)| index)
            {
                idle.swap_remove(oldest);
            }
        }
    }

    /// How many idle slots are kept now.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// A context for `needed` tokens: the next power of two (so that a growing
/// conversation reallocates rarely), at least [`MIN_CONTEXT`], at most
/// `allowed`.
/// A loaded model's address, which identifies it (see [`Slot`]).
fn model_address(model: &'static LlamaModel) -> usize {
    std::ptr::from_ref(model) as usize
}

fn context_size(needed: u32, allowed: u32) -> u32 {
    needed
        .max(MIN_CONTEXT)
        .checked_next_power_of_two()
        .unwrap_or(u32::MAX)
        .min(allowed)
        .max(needed.min(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_grow_in_powers_of_two_within_the_cap() {
        assert_eq!(context_size(10, 8192), 1024);
        assert_eq!(context_size(1500, 8192), 2048);
        assert_eq!(context_size(5000, 8192), 8192);
        assert_eq!(context_size(5000, 6000), 6000);
        assert_eq!(context_size(600, 512), 512);
    }
}
