//! Embeddings on a local model: one vector per input, L2-normalised.
//!
//! Each input is its own sequence in a context created with embeddings on.
//! An embedding model (its GGUF sets `<arch>.pooling_type`) is pooled its
//! own way (mean, CLS or last token); any other model is mean-pooled over
//! its last hidden states, which gives usable if modest vectors. Inputs are
//! decoded several at a time, up to [`BATCH_TOKENS`] tokens or
//! [`MAX_SEQUENCES`] sequences per decode, and always whole: llama.cpp pools
//! a sequence over one micro-batch, so a sequence is never split (a longer
//! input gets a batch of its own, as large as it is).
//!
//! An input longer than the model's trained context (or the configured cap)
//! is an [`ErrorKind::ContextLengthExceeded`] error naming its length and
//! the limit: inputs are never cut.
//!
//! The work runs on a blocking thread; dropping the future stops it
//! between two decodes.

use std::num::NonZeroU32;

use freehold_llm::check_embed_request;
use freehold_protocol::{EmbedRequest, EmbedResponse, ErrorKind, LlmError, Usage};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::{CONTEXT_CREATION, LocalProvider, PROVIDER_NAME, backend, error};

/// The most tokens decoded at once (several short inputs share a decode).
/// llama.cpp computes the output layer for every token of an embedding
/// batch, so this bounds that buffer: tokens × vocabulary × 4 bytes.
pub(super) const BATCH_TOKENS: usize = 512;

/// The most inputs decoded at once.
pub(super) const MAX_SEQUENCES: usize = 32;

/// The embeddings of `request.inputs` on the model it names.
///
/// # Errors
/// An empty input list or an empty input ([`ErrorKind::InvalidRequest`]),
/// an input longer than the context ([`ErrorKind::ContextLengthExceeded`]),
/// a reranking model, or a model that cannot be found or loaded.
pub(super) async fn embed(
    provider: &LocalProvider,
    request: EmbedRequest,
) -> Result<EmbedResponse, LlmError> {
    check_embed_request(PROVIDER_NAME, &request)?;
    let this = provider.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let result = (|| {
            let path = this.resolve(&request.model)?;
            let model = this.load(&path)?;
            let job = Job::prepare(model, &request, this.inner.context_cap)?;
            job.run(backend()?, this.inner.threads, || tx.is_closed())
        })();
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(result) => result,
        // The thread ended without an answer: it panicked.
        Err(_) => Err(match task.await {
            Err(join) => error(ErrorKind::Server, format!("embedding failed: {join}")),
            Ok(()) => error(ErrorKind::Server, "embedding ended without an answer"),
        }),
    }
}

/// Tokenized inputs, checked against the context.
struct Job {
    model: &'static LlamaModel,
    model_name: String,
    pooling: LlamaPoolingType,
    inputs: Vec<Vec<LlamaToken>>,
}

impl Job {
    fn prepare(
        model: &'static LlamaModel,
        request: &EmbedRequest,
        context_cap: Option<u32>,
    ) -> Result<Self, LlmError> {
        let pooling = pooling(model, &request.model)?;
        // The engine gives a model's vectors whole: cutting them short is
        // right only for models trained for it, which a GGUF file does not
        // say.
        if let Some(dimensions) = request.dimensions {
            let own = model.n_embd_out();
            if i64::from(dimensions) != i64::from(own) {
                return Err(error(
                    ErrorKind::InvalidRequest,
                    format!(
                        "`{}` gives vectors of {own} dimensions, and the embedded engine does \
                         not shorten them; leave out `dimensions` (or ask for {own})",
                        request.model
                    ),
                ));
            }
        }
        let trained = model.n_ctx_train().max(1);
        let allowed = context_cap.map_or(trained, |cap| cap.min(trained));
        let vocab = model.vocab();
        let mut inputs = Vec::with_capacity(request.inputs.len());
        for (index, text) in request.inputs.iter().enumerate() {
            if text.is_empty() {
                return Err(error(
                    ErrorKind::InvalidRequest,
                    format!("input {index} is empty; every input needs some text"),
                ));
            }
            // The model's own special tokens (BOS, and the EOS or SEP that
            // embedding models append); text that looks like a special
            // token stays text.
            let tokens = vocab.tokenize(text.as_bytes(), true, false);
            if tokens.len() as u64 > u64::from(allowed) {
                return Err(error(
                    ErrorKind::ContextLengthExceeded {
                        needed: Some(tokens.len() as u64),
                        allowed: Some(u64::from(allowed)),
                    },
                    format!(
                        "input {index} has {} tokens; {} allows {allowed}; split it (inputs \
                         are never cut)",
                        tokens.len(),
                        request.model
                    ),
                ));
            }
            if tokens.is_empty() {
                return Err(error(
                    ErrorKind::InvalidRequest,
                    format!("input {index} has no tokens"),
                ));
            }
            inputs.push(tokens);
        }
        Ok(Self {
            model,
            model_name: request.model.clone(),
            pooling,
            inputs,
        })
    }

    /// Decodes every input and reads its pooled vector; `cancelled` is
    /// asked between decodes.
    fn run(
        &self,
        backend: &LlamaBackend,
        threads: usize,
        cancelled: impl Fn() -> bool,
    ) -> Result<EmbedResponse, LlmError> {
        let longest = self.inputs.iter().map(Vec::len).max().unwrap_or(1);
        let total: usize = self.inputs.iter().map(Vec::len).sum();
        // One decode holds `batch` tokens; a sequence is never split, so
        // it is at least the longest input.
        let sequences = self.inputs.len().min(MAX_SEQUENCES);
        // llama.cpp sizes its worst-case graph with the batch rounded up to
        // a multiple of the sequences but the outputs not, and mean pooling
        // then fails an assertion: keep the batch a multiple.
        let batch = longest
            .max(BATCH_TOKENS.min(total))
            .div_ceil(sequences)
            .saturating_mul(sequences);
        let batch_u32 = u32::try_from(batch).unwrap_or(u32::MAX);
        let threads = i32::try_from(threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(self.pooling)
            .with_n_ctx(NonZeroU32::new(batch_u32))
            .with_n_batch(batch_u32)
            .with_n_ubatch(batch_u32)
            .with_n_seq_max(u32::try_from(sequences).unwrap_or(1))
            // The sequences of a decode share the whole context, rather
            // than each getting an equal slice of it.
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = {
            let _lock = CONTEXT_CREATION
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.model.new_context(backend, params).map_err(|e| {
                error(
                    ErrorKind::Server,
                    format!("cannot create an embedding context: {e}"),
                )
            })?
        };

        let mut embeddings = Vec::with_capacity(self.inputs.len());
        let mut start = 0;
        while start < self.inputs.len() {
            if cancelled() {
                return Err(error(ErrorKind::Cancelled, "the embedding was cancelled"));
            }
            let end = group_end(&self.inputs, start, batch, sequences);
            self.decode_group(&mut ctx, &self.inputs[start..end], batch)?;
            for seq in 0..(end - start) {
                let vector = ctx.embeddings_seq_ith(seq as i32).map_err(|e| {
                    error(
                        ErrorKind::Server,
                        format!("no embedding for input {}: {e}", start + seq),
                    )
                })?;
                embeddings.push(normalized(vector));
            }
            start = end;
        }
        Ok(EmbedResponse {
            model: self.model_name.clone(),
            embeddings,
            usage: Usage {
                input_tokens: total as u64,
                ..Usage::default()
            },
        })
    }

    /// Decodes `group`, input `i` as sequence `i`, from an empty cache.
    fn decode_group(
        &self,
        ctx: &mut LlamaContext<'_>,
        group: &[Vec<LlamaToken>],
        batch: usize,
    ) -> Result<(), LlmError> {
        ctx.clear_kv_cache();
        let mut tokens = LlamaBatch::new(batch, 1);
        for (seq, input) in group.iter().enumerate() {
            tokens
                .add_sequence(input, seq as i32, true)
                .map_err(|e| error(ErrorKind::Server, e))?;
        }
        ctx.decode(&mut tokens)
            .map_err(|e| error(ErrorKind::Server, format!("decoding failed: {e}")))
    }
}

/// Where the decode starting at `start` ends: as many inputs as fit in
/// `batch` tokens and `sequences` sequences, and at least one.
fn group_end(inputs: &[Vec<LlamaToken>], start: usize, batch: usize, sequences: usize) -> usize {
    let mut end = start;
    let mut tokens = 0;
    while end < inputs.len() && end - start < sequences {
        let len = inputs[end].len();
        if end > start && tokens + len > batch {
            break;
        }
        tokens += len;
        end += 1;
    }
    end
}

/// How to pool `model`'s hidden states: the model's own way when it is an
/// embedding model (its GGUF says `<arch>.pooling_type`), else the mean.
fn pooling(model: &LlamaModel, name: &str) -> Result<LlamaPoolingType, LlmError> {
    let own = model
        .meta_val_str("general.architecture")
        .ok()
        .and_then(|arch| model.meta_val_str(&format!("{arch}.pooling_type")).ok())
        .and_then(|value| value.trim().parse::<i32>().ok())
        .map(LlamaPoolingType::from);
    match own {
        Some(
            pooling @ (LlamaPoolingType::Mean | LlamaPoolingType::Cls | LlamaPoolingType::Last),
        ) => Ok(pooling),
        Some(LlamaPoolingType::Rank) => Err(error(
            ErrorKind::InvalidRequest,
            format!("{name} is a reranking model: it scores pairs of texts and has no embeddings"),
        )),
        _ => Ok(LlamaPoolingType::Mean),
    }
}

/// `vector` scaled to length 1 (a zero vector stays zero).
fn normalized(vector: &[f32]) -> Vec<f32> {
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        vector
            .iter()
            .map(|x| (f64::from(*x) / norm) as f32)
            .collect()
    } else {
        vector.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(lengths: &[usize]) -> Vec<Vec<LlamaToken>> {
        lengths
            .iter()
            .map(|len| vec![LlamaToken::new(1); *len])
            .collect()
    }

    #[test]
    fn groups_fill_the_batch_and_never_split_an_input() {
        let all = inputs(&[100, 300, 200, 600, 10]);
        assert_eq!(group_end(&all, 0, 512, 32), 2);
        assert_eq!(group_end(&all, 2, 512, 32), 3);
        // An input longer than the batch goes alone.
        assert_eq!(group_end(&all, 3, 512, 32), 4);
        assert_eq!(group_end(&all, 4, 512, 32), 5);
        // The sequence limit also ends a group.
        let many = inputs(&[1; 10]);
        assert_eq!(group_end(&many, 0, 512, 4), 4);
    }

    #[test]
    fn vectors_are_scaled_to_unit_length() {
        assert_eq!(normalized(&[3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(normalized(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
