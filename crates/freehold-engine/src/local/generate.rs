//! One generation: prompt rendering and tokenization, context sizing,
//! then decoding on its own thread.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use freehold_llm::EventStream;
use freehold_protocol::{ChatRequest, ErrorKind, LlmError, StopReason, StreamEvent, Usage};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::template::{self, CHATML_TEMPLATE, TemplateMessage};
use super::{DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, error};

/// Context sizes are rounded up to a multiple of this.
const CONTEXT_STEP: u32 = 256;
/// Prompt tokens decoded per batch.
const BATCH: usize = 512;

/// Everything a generation needs, checked before it starts.
pub(super) struct Prepared {
    model: Arc<LlamaModel>,
    model_name: String,
    tokens: Vec<LlamaToken>,
    n_ctx: u32,
    max_new: u32,
    threads: usize,
    sampling: freehold_protocol::Sampling,
    stop: Vec<String>,
}

/// Renders and tokenizes the prompt and sizes the context.
///
/// # Errors
/// A template that fails, or [`ErrorKind::ContextLengthExceeded`] when the
/// prompt leaves no room for one token.
pub(super) fn prepare(
    model: Arc<LlamaModel>,
    request: &ChatRequest,
    threads: usize,
    context_cap: Option<u32>,
) -> Result<Prepared, LlmError> {
    if !request.tools.is_empty() {
        tracing::debug!(
            tools = request.tools.len(),
            "the local provider does not offer tools yet; ignoring them"
        );
    }
    let prompt = render_prompt(&model, request)?;
    let vocab = model.vocab();
    let bos = String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned();
    let mut tokens = Vec::new();
    if vocab.should_add_bos() && (bos.is_empty() || !prompt.starts_with(&bos)) {
        tokens.push(vocab.bos());
    }
    tokens.extend(vocab.tokenize(prompt.as_bytes(), false, true));

    let trained = model.n_ctx_train().max(1);
    let allowed = context_cap.map_or(trained, |cap| cap.min(trained));
    let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let wanted = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
    if u64::from(prompt_len) + 1 > u64::from(allowed) {
        return Err(error(
            ErrorKind::ContextLengthExceeded {
                needed: Some(u64::from(prompt_len) + u64::from(wanted)),
                allowed: Some(u64::from(allowed)),
            },
            format!(
                "the prompt has {prompt_len} tokens; {} allows {allowed}",
                request.model
            ),
        ));
    }
    let total = prompt_len.saturating_add(wanted);
    let n_ctx = total
        .div_ceil(CONTEXT_STEP)
        .saturating_mul(CONTEXT_STEP)
        .min(allowed);
    Ok(Prepared {
        model_name: request.model.clone(),
        max_new: wanted.min(n_ctx - prompt_len),
        n_ctx,
        tokens,
        threads,
        sampling: request.sampling.clone(),
        stop: request
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        model,
    })
}

/// The chat prompt from the model's template, or ChatML when it has none.
fn render_prompt(model: &LlamaModel, request: &ChatRequest) -> Result<String, LlmError> {
    static FALLBACK_LOGGED: Once = Once::new();
    let template = match model.meta_val_str("tokenizer.chat_template") {
        Ok(template) => template,
        Err(_) => {
            FALLBACK_LOGGED.call_once(|| {
                tracing::warn!("the model has no chat template; using ChatML");
            });
            CHATML_TEMPLATE.to_string()
        }
    };
    let vocab = model.vocab();
    let piece =
        |token| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
    let messages: Vec<TemplateMessage> = request
        .messages
        .iter()
        .map(TemplateMessage::from_message)
        .collect();
    template::render(
        &template,
        &messages,
        &piece(vocab.bos()),
        &piece(vocab.eos()),
    )
    .map_err(|e| {
        error(
            ErrorKind::InvalidRequest,
            format!("the chat template failed: {e}"),
        )
    })
}

/// Starts the generation thread; the stream ends it when dropped.
pub(super) fn spawn(
    prepared: Prepared,
    backend: &'static LlamaBackend,
    active: Arc<AtomicUsize>,
) -> EventStream {
    let (tx, rx) = mpsc::channel(64);
    active.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let _guard = ActiveGuard(active);
        if let Err(e) = run(&prepared, backend, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Sender = mpsc::Sender<Result<StreamEvent, LlmError>>;

/// Creating contexts in parallel is unsound in llama.cpp (it may write the
/// model's trained context); creation is serialised.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// Decodes the prompt, then samples until a stop; returns `Ok` also when the
/// receiver went away (the generation was cancelled).
fn run(p: &Prepared, backend: &LlamaBackend, tx: &Sender) -> Result<(), LlmError> {
    let send = |event: StreamEvent| tx.blocking_send(Ok(event)).is_ok();
    if !send(StreamEvent::Start {
        id: None,
        model: Some(p.model_name.clone()),
    }) {
        return Ok(());
    }
    let threads = i32::try_from(p.threads).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(p.n_ctx))
        .with_n_batch(BATCH as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = {
        let _lock = CONTEXT_CREATION.lock().unwrap_or_else(|e| e.into_inner());
        p.model
            .new_context(backend, params)
            .map_err(|e| error(ErrorKind::Server, format!("cannot create a context: {e}")))?
    };
    let decode_failed = |e| error(ErrorKind::Server, format!("decoding failed: {e}"));

    let mut batch = LlamaBatch::new(BATCH, 1);
    let last = p.tokens.len().saturating_sub(1);
    for (chunk_index, chunk) in p.tokens.chunks(BATCH).enumerate() {
        batch.clear();
        for (i, token) in chunk.iter().enumerate() {
            let pos = chunk_index * BATCH + i;
            batch
                .add(*token, pos as i32, &[0], pos == last)
                .map_err(|e| error(ErrorKind::Server, e))?;
        }
        ctx.decode(&mut batch).map_err(decode_failed)?;
        if tx.is_closed() {
            return Ok(());
        }
    }

    let mut sampler = sampler(&p.sampling);
    let vocab = p.model.vocab();
    let mut text = TextBuffer::new(&p.stop);
    let mut pos = p.tokens.len();
    let mut generated: u32 = 0;
    let reason = loop {
        if generated >= p.max_new {
            break StopReason::MaxTokens;
        }
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        if vocab.is_eog(token) {
            break StopReason::EndTurn;
        }
        generated += 1;
        let (delta, stopped) = text.push(&vocab.token_to_piece(token, false, None));
        if !delta.is_empty() && !send(StreamEvent::TextDelta { text: delta }) {
            return Ok(());
        }
        if stopped {
            break StopReason::StopSequence;
        }
        if tx.is_closed() {
            return Ok(());
        }
        batch.clear();
        batch
            .add(token, pos as i32, &[0], true)
            .map_err(|e| error(ErrorKind::Server, e))?;
        pos += 1;
        ctx.decode(&mut batch).map_err(decode_failed)?;
    };
    if reason != StopReason::StopSequence {
        let rest = text.finish();
        if !rest.is_empty() && !send(StreamEvent::TextDelta { text: rest }) {
            return Ok(());
        }
    }
    let _ = send(StreamEvent::Usage(Usage {
        input_tokens: p.tokens.len() as u64,
        output_tokens: u64::from(generated),
        ..Usage::default()
    }));
    let _ = send(StreamEvent::Stop { reason });
    Ok(())
}

/// Greedy at temperature 0; otherwise top-k, top-p, temperature and a
/// seeded draw (random seed unless the request sets one).
fn sampler(sampling: &freehold_protocol::Sampling) -> LlamaSampler {
    let temperature = sampling.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let mut chain = Vec::new();
    if let Some(k) = sampling.top_k.filter(|k| *k > 0) {
        chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
    }
    if let Some(p) = sampling.top_p.filter(|p| *p < 1.0) {
        chain.push(LlamaSampler::top_p(p, 1));
    }
    chain.push(LlamaSampler::temp(temperature));
    // llama.cpp's LLAMA_DEFAULT_SEED (u32::MAX) asks for a random seed.
    let seed = sampling.seed.map_or(u32::MAX, |s| s as u32);
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

/// Turns token bytes into text deltas: holds back partial UTF-8 sequences
/// and any tail that could be the start of a stop sequence.
struct TextBuffer<'a> {
    bytes: Vec<u8>,
    pending: String,
    stop: &'a [String],
}

impl<'a> TextBuffer<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self {
            bytes: Vec::new(),
            pending: String::new(),
            stop,
        }
    }

    /// Adds a token's bytes; returns the text safe to emit and whether a
    /// stop sequence was reached (the text then ends before it).
    fn push(&mut self, piece: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(_) => self.bytes.len(),
            Err(e) => match e.error_len() {
                // Invalid bytes: emit them replaced rather than wait forever.
                Some(len) => e.valid_up_to() + len,
                None => e.valid_up_to(),
            },
        };
        let done: Vec<u8> = self.bytes.drain(..valid).collect();
        self.pending.push_str(&String::from_utf8_lossy(&done));

        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        let hold = self
            .stop
            .iter()
            .map(|stop| held_prefix(&self.pending, stop))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// What is left at the end (held text and incomplete bytes).
    fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        out.push_str(&String::from_utf8_lossy(&self.bytes));
        self.bytes.clear();
        out
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// `stop` (ending on a char boundary of `text`).
fn held_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held() {
        let stop: Vec<String> = Vec::new();
        let mut buf = TextBuffer::new(&stop);
        let euro = "€".as_bytes();
        assert_eq!(buf.push(&euro[..1]), (String::new(), false));
        assert_eq!(buf.push(&euro[1..]), ("€".to_string(), false));
    }

    #[test]
    fn stop_sequence_split_across_tokens_is_never_emitted() {
        let stop = vec!["END".to_string()];
        let mut buf = TextBuffer::new(&stop);
        assert_eq!(buf.push(b"hello E"), ("hello ".to_string(), false));
        assert_eq!(buf.push(b"N"), (String::new(), false));
        assert_eq!(buf.push(b"D more"), (String::new(), true));
    }

    #[test]
    fn held_text_is_released_when_it_does_not_match() {
        let stop = vec!["END".to_string()];
        let mut buf = TextBuffer::new(&stop);
        assert_eq!(buf.push(b"a E"), ("a ".to_string(), false));
        assert_eq!(buf.push(b"x"), ("Ex".to_string(), false));
        assert_eq!(buf.push(b"E"), (String::new(), false));
        assert_eq!(buf.finish(), "E");
    }
}
