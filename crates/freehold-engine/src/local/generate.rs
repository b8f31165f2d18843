//! One generation: prompt rendering and tokenization, context sizing,
//! then decoding on its own thread.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use freehold_llm::stop::{first_match, held_prefix};
use freehold_llm::{EventStream, think};
use freehold_protocol::{
    ChatRequest, ErrorKind, LlmError, Message, ReasoningEffort, StopReason, StreamEvent, Timings,
    ToolCall, Usage, fold_system_messages,
};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::mpsc;

use super::slots::{BATCH, ContextSpec, Slot, SlotPool};
use super::template::{self, CHATML_TEMPLATE, TemplateMessage, ThinkingTags};
use super::thinking::{Feed, GrammarGate, Place, Step, ThinkingScan};
use super::tools::{self, CallFormat, Constraint};
use super::{DEFAULT_TEMPERATURE, default_max_tokens, error};

/// Everything a generation needs, checked before it starts.
pub(super) struct Prepared {
    model: &'static LlamaModel,
    model_name: String,
    tokens: Vec<LlamaToken>,
    /// Prompt plus answer, in tokens.
    needed: u32,
    /// The largest context allowed.
    allowed: u32,
    max_new: u32,
    threads: usize,
    sampling: freehold_protocol::Sampling,
    stop: Vec<String>,
    constraint: Constraint,
    thinking: ThinkingTags,
}

/// Renders and tokenizes the prompt and sizes the context.
///
/// # Errors
/// A template that fails, a tool choice or schema that cannot be honoured,
/// or [`ErrorKind::ContextLengthExceeded`] when the prompt leaves no room for
/// one token.
pub(super) fn prepare(
    model: &'static LlamaModel,
    request: &ChatRequest,
    threads: usize,
    context_cap: Option<u32>,
) -> Result<Prepared, LlmError> {
    let Prompt {
        tokens,
        constraint,
        thinking,
    } = prompt_tokens(model, request)?;
    let trained = model.n_ctx_train().max(1);
    let allowed = context_cap.map_or(trained, |cap| cap.min(trained));
    let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    let wanted = request
        .max_tokens
        .unwrap_or_else(|| default_max_tokens(allowed))
        .max(1);
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
    let needed = prompt_len.saturating_add(wanted).min(allowed);
    Ok(Prepared {
        model_name: request.model.clone(),
        max_new: wanted.min(needed - prompt_len),
        needed,
        allowed,
        tokens,
        threads,
        sampling: request.sampling.clone(),
        stop: request
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        constraint,
        thinking,
        model,
    })
}

/// A request's prompt as the model reads it.
pub(super) struct Prompt {
    /// The conversation and tools rendered by the model's chat template,
    /// tokenized.
    pub(super) tokens: Vec<LlamaToken>,
    /// How the answer must be constrained (tool calls, JSON).
    pub(super) constraint: Constraint,
    /// Where the answer may hold the model's thinking.
    pub(super) thinking: ThinkingTags,
}

/// The request's prompt as the model reads it (see [`Prompt`]).
///
/// # Errors
/// A template that fails, or a tool choice or schema that cannot be
/// honoured.
pub(super) fn prompt_tokens(model: &LlamaModel, request: &ChatRequest) -> Result<Prompt, LlmError> {
    let template = chat_template(model);
    let plan = tools::plan(&template, request)?;
    // Reasoning asked for or turned off is the template's switch, as vLLM
    // and llama.cpp's server pass it; unasked, the template's default.
    let enable_thinking = request
        .reasoning
        .map(|effort| effort != ReasoningEffort::Off);
    let prompt = render_prompt(model, &template, &plan, enable_thinking)?;
    let thinking = thinking_tags(&plan.constraint, &template, &prompt);
    tracing::trace!(prompt = %prompt, "rendered prompt");
    let vocab = model.vocab();
    let bos = String::from_utf8_lossy(&vocab.token_to_piece(vocab.bos(), true, None)).into_owned();
    let mut tokens = Vec::new();
    if vocab.should_add_bos() && (bos.is_empty() || !prompt.starts_with(&bos)) {
        tokens.push(vocab.bos());
    }
    tokens.extend(vocab.tokenize(prompt.as_bytes(), false, true));
    Ok(Prompt {
        tokens,
        constraint: plan.constraint,
        thinking,
    })
}

/// Where the answer to `prompt`, rendered by `template`, may hold thinking.
/// A grammar that applies from the first token (JSON output, a forced
/// call) leaves the model no room to think: what it writes is the answer
/// the grammar allows, even after a prompt that opened `<think>`.
fn thinking_tags(constraint: &Constraint, template: &str, prompt: &str) -> ThinkingTags {
    match constraint {
        Constraint::Json { .. } | Constraint::Tools { lazy: false, .. } => ThinkingTags::None,
        Constraint::None | Constraint::Tools { lazy: true, .. } => {
            ThinkingTags::of(template, prompt)
        }
    }
}

/// The model's own chat template, or ChatML when it has none.
fn chat_template(model: &LlamaModel) -> String {
    static FALLBACK_LOGGED: Once = Once::new();
    match model.meta_val_str("tokenizer.chat_template") {
        Ok(template) => template,
        Err(_) => {
            FALLBACK_LOGGED.call_once(|| {
                tracing::warn!("the model has no chat template; using ChatML");
            });
            CHATML_TEMPLATE.to_string()
        }
    }
}

/// The chat prompt: the planned conversation through the template.
fn render_prompt(
    model: &LlamaModel,
    template: &str,
    plan: &tools::Plan,
    enable_thinking: Option<bool>,
) -> Result<String, LlmError> {
    let vocab = model.vocab();
    let piece =
        |token| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
    let tools: Vec<serde_json::Value> = plan
        .template_tools
        .iter()
        .map(template::template_tool)
        .collect();
    let render = |messages: &[Message]| {
        template::render(
            template,
            &TemplateMessage::from_messages(messages),
            &tools,
            &piece(vocab.bos()),
            &piece(vocab.eos()),
            enable_thinking,
        )
    };
    render(&plan.messages)
        .or_else(|refused| {
            // A template that allows one system message, first (or roles
            // that only alternate), gets the leading ones joined and the
            // later ones as user text rather than failing the request. If
            // that fails too, the error of what was asked is reported.
            match fold_system_messages(&plan.messages) {
                Some(folded) => render(&folded)
                    .inspect(|_| {
                        tracing::debug!(
                            "the chat template refused the conversation; rendered with its system messages folded"
                        );
                    })
                    .map_err(|_| refused),
                None => Err(refused),
            }
        })
        .map_err(|e| {
            error(
                ErrorKind::InvalidRequest,
                format!("the chat template failed: {e}"),
            )
        })
}

/// What a generation thread shares with its provider.
pub(super) struct Shared {
    pub(super) backend: &'static LlamaBackend,
    pub(super) slots: Arc<SlotPool>,
    pub(super) active: Arc<AtomicUsize>,
}

/// Starts the generation thread; the stream ends it when dropped. Thinking
/// the model writes in `<think>` tags is sent as reasoning, as llama.cpp's
/// server sends it.
pub(super) fn spawn(prepared: Prepared, shared: Shared) -> EventStream {
    let thinking = prepared.thinking;
    let (tx, rx) = mpsc::channel(64);
    shared.active.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let _guard = ActiveGuard(Arc::clone(&shared.active));
        if let Err(e) = run(&prepared, &shared, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let events: EventStream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    match thinking {
        ThinkingTags::None => events,
        ThinkingTags::MayOpen => think::split_stream(events),
        ThinkingTags::Opened => think::split_stream_opened(events),
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Sender = mpsc::Sender<Result<StreamEvent, LlmError>>;

/// Takes a slot, runs the generation in it, and gives the slot back unless
/// decoding failed (its cache is then in an unknown state).
fn run(p: &Prepared, shared: &Shared, tx: &Sender) -> Result<(), LlmError> {
    let started = Instant::now();
    if tx
        .blocking_send(Ok(StreamEvent::Start {
            id: None,
            model: Some(p.model_name.clone()),
        }))
        .is_err()
    {
        return Ok(());
    }
    let spec = ContextSpec {
        model: p.model,
        backend: shared.backend,
        needed: p.needed,
        allowed: p.allowed,
        threads: p.threads,
    };
    let mut slot = shared.slots.acquire(&spec, &p.tokens)?;
    let result = generate(p, &mut slot, tx, started);
    if result.is_ok() {
        shared.slots.release(slot);
    }
    result
}

/// Evaluates the prompt after the cached prefix, then samples until a stop;
/// returns `Ok` also when the receiver went away (the generation was
/// cancelled).
fn generate(p: &Prepared, slot: &mut Slot, tx: &Sender, started: Instant) -> Result<(), LlmError> {
    let send = |event: StreamEvent| tx.blocking_send(Ok(event)).is_ok();
    let decode_failed = |e| error(ErrorKind::Server, format!("decoding failed: {e}"));
    let batch_error = |e| error(ErrorKind::Server, e);

    let cached = slot.keep_prefix(&p.tokens);
    let prompt_started = Instant::now();
    let mut batch = LlamaBatch::new(BATCH as usize, 1);
    let fresh = &p.tokens[cached..];
    for (chunk_index, chunk) in fresh.chunks(BATCH as usize).enumerate() {
        batch.clear();
        for (i, token) in chunk.iter().enumerate() {
            let pos = cached + chunk_index * BATCH as usize + i;
            batch
                .add(*token, pos as i32, &[0], pos == p.tokens.len() - 1)
                .map_err(batch_error)?;
        }
        slot.ctx.decode(&mut batch).map_err(decode_failed)?;
        slot.tokens.extend_from_slice(chunk);
        if tx.is_closed() {
            return Ok(());
        }
    }
    let prompt_us = elapsed_us(prompt_started);

    let mut sampler = Sampler::new(p)?;
    let vocab = p.model.vocab();
    let mut output = Output::new(&p.stop, &p.constraint, p.thinking);
    let mut generated: u32 = 0;
    let mut first_token: Option<Instant> = None;
    let mut first_token_us = 0;
    let reason = loop {
        if generated >= p.max_new {
            break StopReason::MaxTokens;
        }
        let token = sampler.sample(&slot.ctx, batch.n_tokens() - 1)?;
        if first_token.is_none() {
            first_token = Some(Instant::now());
            first_token_us = elapsed_us(started);
        }
        // A control token that does not end the turn (Qwen's
        // `<|im_start|>`) means the model is starting another turn of the
        // chat on its own: the answer is over, and the token must not leak
        // into it as text. (Tool-call tags such as `<tool_call>` are not
        // control tokens.)
        if vocab.is_eog(token) || vocab.is_control(token) {
            break StopReason::EndTurn;
        }
        generated += 1;
        // Special tokens are text only where they can start a tool call
        // (`<tool_call>` is one in Qwen's vocabulary).
        let piece = vocab.token_to_piece(token, output.has_tools(), None);
        let (delta, stopped_by) = output.push(&piece);
        // After the text: whether the grammar sees the token depends on
        // whether it was the thinking's.
        sampler.accept(token, output.step())?;
        if !delta.is_empty() && !send(StreamEvent::TextDelta { text: delta }) {
            return Ok(());
        }
        if let Some(sequence) = stopped_by {
            break StopReason::StopSequence(Some(sequence));
        }
        if tx.is_closed() {
            return Ok(());
        }
        batch.clear();
        batch
            .add(token, slot.tokens.len() as i32, &[0], true)
            .map_err(batch_error)?;
        slot.ctx.decode(&mut batch).map_err(decode_failed)?;
        slot.tokens.push(token);
    };
    let generation_us = first_token.map_or(0, elapsed_us);

    let (rest, calls) = output.finish(matches!(reason, StopReason::StopSequence(_)));
    if !rest.is_empty() && !send(StreamEvent::TextDelta { text: rest }) {
        return Ok(());
    }
    let called = !calls.is_empty();
    for (index, call) in calls.into_iter().enumerate() {
        let index = index as u32;
        let events = [
            StreamEvent::ToolCallStart {
                index,
                id: call.id,
                name: call.name,
                signature: None,
            },
            StreamEvent::ToolCallArgsDelta {
                index,
                delta: call.arguments,
            },
            StreamEvent::ToolCallEnd {
                index,
                signature: None,
            },
        ];
        for event in events {
            if !send(event) {
                return Ok(());
            }
        }
    }
    let _ = send(StreamEvent::Usage(Usage {
        input_tokens: p.tokens.len() as u64,
        cached_input_tokens: cached as u64,
        output_tokens: u64::from(generated),
        ..Usage::default()
    }));
    let _ = send(StreamEvent::Timings(Timings {
        prompt_tokens: (p.tokens.len() - cached) as u64,
        prompt_us,
        // The first token's time is in `first_token_us`.
        generated_tokens: u64::from(generated.saturating_sub(1)),
        generation_us,
        first_token_us,
    }));
    let reason = if called && reason == StopReason::EndTurn {
        StopReason::ToolUse
    } else {
        reason
    };
    let _ = send(StreamEvent::Stop { reason });
    Ok(())
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The request's sampler chain, and the grammar that constrains it (if any).
struct Sampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// Which tokens the grammar sees: none of a thinking model's thinking.
    gate: GrammarGate,
    /// To spell text for the grammar in tokens.
    model: &'static LlamaModel,
}

impl Sampler {
    fn new(p: &Prepared) -> Result<Self, LlmError> {
        let grammar_error = |e| {
            error(
                ErrorKind::InvalidRequest,
                format!("llama.cpp refused the grammar built for this request: {e}"),
            )
        };
        let grammar = match &p.constraint {
            Constraint::None => None,
            Constraint::Json { grammar } => {
                Some(LlamaSampler::grammar(p.model, grammar, "root").map_err(grammar_error)?)
            }
            Constraint::Tools {
                grammar,
                trigger_patterns,
                lazy: true,
                ..
            } => Some(
                LlamaSampler::grammar_lazy_patterns(
                    p.model,
                    grammar,
                    "root",
                    trigger_patterns,
                    &[],
                )
                .map_err(grammar_error)?,
            ),
            Constraint::Tools { grammar, .. } => {
                Some(LlamaSampler::grammar(p.model, grammar, "root").map_err(grammar_error)?)
            }
        };
        Ok(Self {
            chain: chain(&p.sampling),
            grammar,
            gate: GrammarGate::new(p.thinking),
            model: p.model,
        })
    }

    /// The next token. The unconstrained choice is checked against the
    /// grammar first and the whole vocabulary is filtered only when it is
    /// refused: filtering every step halves decoding speed, and most tokens
    /// of a valid call are what the model would have chosen anyway.
    fn sample(
        &mut self,
        ctx: &llama_cpp_2::context::LlamaContext<'_>,
        idx: i32,
    ) -> Result<LlamaToken, LlmError> {
        let token = self.chain.sample(ctx, idx);
        let Some(grammar) = self.grammar.as_mut().filter(|_| self.gate.open()) else {
            return Ok(token);
        };
        let mut single =
            LlamaTokenDataArray::from_iter([LlamaTokenData::new(token, 1.0, 0.0)], false);
        grammar.apply(&mut single);
        if single.data.first().is_some_and(|d| d.logit().is_finite()) {
            return Ok(token);
        }
        let mut all = ctx.token_data_array_ith(idx);
        grammar.apply(&mut all);
        self.chain.apply(&mut all);
        all.selected_token().ok_or_else(|| {
            error(
                ErrorKind::Server,
                "the grammar left no token to choose (the model cannot continue a valid answer)",
            )
        })
    }

    /// Records a chosen (non end-of-generation) token in the grammar, if
    /// it is the answer's: `step` says what its text did to the thinking.
    fn accept(&mut self, token: LlamaToken, step: &Step) -> Result<(), LlmError> {
        let Some(grammar) = &mut self.grammar else {
            return Ok(());
        };
        let tokens = match self.gate.after(token, step) {
            Feed::Nothing => return Ok(()),
            Feed::Tokens(tokens) => tokens,
            Feed::Text(text) => self.model.vocab().tokenize(text.as_bytes(), false, true),
        };
        for token in tokens {
            grammar.try_accept(token).map_err(|e| {
                error(
                    ErrorKind::Server,
                    format!("the grammar refused a sampled token: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Greedy at temperature 0; otherwise top-k, top-p, temperature and a
/// seeded draw (random seed unless the request sets one).
fn chain(sampling: &freehold_protocol::Sampling) -> LlamaSampler {
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

/// Splits the generated text into what is shown as text and what is a tool
/// call (from the format's marker on).
struct Output<'a> {
    text: TextBuffer<'a>,
    /// The call format and its tools, when tools are offered.
    tools: Option<(CallFormat, &'a [freehold_protocol::ToolSpec])>,
    /// The call text once the marker was seen.
    call: Option<Vec<u8>>,
}

impl<'a> Output<'a> {
    fn new(stop: &'a [String], constraint: &'a Constraint, thinking: ThinkingTags) -> Self {
        let tools = match constraint {
            Constraint::Tools { format, tools, .. } => Some((*format, tools.as_slice())),
            _ => None,
        };
        let markers = tools.map_or(&[][..], |(format, _)| format.markers());
        Self {
            text: TextBuffer::new(stop, markers, thinking),
            tools,
            call: None,
        }
    }

    /// Whether tools are offered.
    fn has_tools(&self) -> bool {
        self.tools.is_some()
    }

    /// What the last piece did to the thinking (once a call began, the
    /// rest is the answer's).
    fn step(&self) -> &Step {
        &self.text.step
    }

    /// Adds a token's bytes; returns the text to emit and the stop
    /// sequence that ended the answer, if one did.
    fn push(&mut self, piece: &[u8]) -> (String, Option<String>) {
        if let Some(call) = &mut self.call {
            call.extend_from_slice(piece);
            self.text.step = Step::at(Place::Answer);
            return (String::new(), None);
        }
        match self.text.push(piece) {
            Pushed::Text(text) => (text, None),
            Pushed::Stop { before, sequence } => (before, Some(sequence)),
            Pushed::Marker(text, rest) => {
                self.call = Some(rest.into_bytes());
                (text, None)
            }
        }
    }

    /// The text still held and the calls read from the call text (which is
    /// returned as text when no call can be read from it).
    fn finish(&mut self, stopped: bool) -> (String, Vec<ToolCall>) {
        let mut rest = if stopped {
            String::new()
        } else {
            self.text.finish()
        };
        let (Some(call), Some((format, tools))) = (self.call.take(), self.tools) else {
            return (rest, Vec::new());
        };
        let call = String::from_utf8_lossy(&call).into_owned();
        match tools::parse_calls(format, &call, tools) {
            Some(calls) => (rest, calls),
            None => {
                tracing::debug!("a tool call was started but could not be read; kept as text");
                rest.push_str(&call);
                (rest, Vec::new())
            }
        }
    }
}

/// What [`TextBuffer::push`] found.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Text safe to emit.
    Text(String),
    /// A stop sequence: the answer ends.
    Stop {
        /// The text before it.
        before: String,
        /// The sequence.
        sequence: String,
    },
    /// The tool-call marker: the text before it, and the text from it on.
    Marker(String, String),
}

/// Turns token bytes into text deltas: holds back partial UTF-8 sequences
/// and any tail that could be the start of a stop sequence or of the
/// tool-call marker. A thinking model's thinking goes through as it is
/// written, held only where it may be writing its tags: neither markers nor
/// stop sequences count in it (a call it drafts there is no call, and a
/// stop sequence ends the answer, not the thinking).
struct TextBuffer<'a> {
    bytes: Vec<u8>,
    pending: String,
    stop: &'a [String],
    /// The tool-call markers, each with whether it counts only at the start.
    markers: &'static [(&'static str, bool)],
    /// Whether anything but whitespace was emitted in the answer (a
    /// start-only marker can no longer appear).
    started: bool,
    /// Where the thinking ends.
    thinking: ThinkingScan,
    /// What the last piece did to the thinking.
    step: Step,
}

impl<'a> TextBuffer<'a> {
    fn new(
        stop: &'a [String],
        markers: &'static [(&'static str, bool)],
        thinking: ThinkingTags,
    ) -> Self {
        Self {
            bytes: Vec::new(),
            pending: String::new(),
            stop,
            markers,
            started: false,
            thinking: ThinkingScan::new(thinking),
            step: Step::at(Place::at_start(thinking)),
        }
    }

    /// Adds a token's bytes.
    fn push(&mut self, piece: &[u8]) -> Pushed {
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

        let (thought, step) = self.thinking.take_thinking(&mut self.pending);
        let answer = step.place == Place::Answer;
        self.step = step;
        if !answer {
            return Pushed::Text(thought);
        }
        if thought.is_empty() {
            return self.push_answer();
        }
        match self.push_answer() {
            Pushed::Text(text) => Pushed::Text(thought + &text),
            Pushed::Stop { before, sequence } => Pushed::Stop {
                before: thought + &before,
                sequence,
            },
            Pushed::Marker(text, rest) => Pushed::Marker(thought + &text, rest),
        }
    }

    /// [`Self::push`] for the answer's text, in `pending`.
    fn push_answer(&mut self) -> Pushed {
        let stop_at = first_match(&self.pending, self.stop);
        let marker_at = self.marker_position();
        match (stop_at, marker_at) {
            (Some((stop, sequence)), marker) if marker.is_none_or(|m| stop < m) => {
                let before = self.pending[..stop].to_string();
                self.pending.clear();
                return Pushed::Stop {
                    before,
                    sequence: sequence.to_owned(),
                };
            }
            (_, Some(at)) => {
                let rest = self.pending.split_off(at);
                let out = std::mem::take(&mut self.pending);
                return Pushed::Marker(out, rest);
            }
            _ => {}
        }
        let mut hold = self
            .stop
            .iter()
            .map(|stop| held_prefix(&self.pending, stop))
            .max()
            .unwrap_or(0);
        for &(marker, start_only) in self.markers {
            if !start_only {
                hold = hold.max(held_prefix(&self.pending, marker));
            } else if !self.started {
                // Hold leading whitespace (and the start of a multi-byte
                // marker such as a code fence) until the text says whether
                // this is a call.
                let trimmed = self.pending.trim_start();
                if trimmed.is_empty()
                    || (trimmed.len() < marker.len() && marker.starts_with(trimmed))
                {
                    hold = self.pending.len();
                }
            }
        }
        let trimmed = self.pending.trim_start();
        let maybe_marker = self.markers.iter().any(|&(marker, start_only)| {
            start_only && trimmed.len() < marker.len() && marker.starts_with(trimmed)
        });
        if !trimmed.is_empty() && !maybe_marker {
            self.started = true;
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Pushed::Text(out)
    }

    /// Where the first tool-call marker starts in the pending text, if one
    /// is there.
    fn marker_position(&self) -> Option<usize> {
        self.markers
            .iter()
            .filter_map(|&(marker, start_only)| {
                if !start_only {
                    return self.pending.find(marker);
                }
                if self.started {
                    return None;
                }
                // The whitespace before it goes with the call, not the text.
                self.pending.trim_start().starts_with(marker).then_some(0)
            })
            .min()
    }

    /// What is left at the end (held text and incomplete bytes).
    fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        out.push_str(&String::from_utf8_lossy(&self.bytes));
        self.bytes.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grammar_from_the_first_token_leaves_no_thinking() {
        let template = "{{ messages[0].content }}<think>\n{# </think> #}";
        let prompt = "hi<think>\n";
        let json = Constraint::Json {
            grammar: String::new(),
        };
        let tools = |lazy| Constraint::Tools {
            format: CallFormat::Hermes,
            grammar: String::new(),
            trigger_patterns: Vec::new(),
            lazy,
            tools: Vec::new(),
        };
        assert_eq!(thinking_tags(&json, template, prompt), ThinkingTags::None);
        assert_eq!(
            thinking_tags(&tools(false), template, prompt),
            ThinkingTags::None
        );
        assert_eq!(
            thinking_tags(&tools(true), template, prompt),
            ThinkingTags::Opened
        );
        assert_eq!(
            thinking_tags(&Constraint::None, template, prompt),
            ThinkingTags::Opened
        );
    }

    #[test]
    fn utf8_split_across_tokens_is_held() {
        let stop: Vec<String> = Vec::new();
        let mut buf = TextBuffer::new(&stop, &[], ThinkingTags::None);
        let euro = "€".as_bytes();
        assert_eq!(buf.push(&euro[..1]), Pushed::Text(String::new()));
        assert_eq!(buf.push(&euro[1..]), Pushed::Text("€".to_string()));
    }

    #[test]
    fn stop_sequence_split_across_tokens_is_never_emitted() {
        let stop = vec!["END".to_string()];
        let mut buf = TextBuffer::new(&stop, &[], ThinkingTags::None);
        assert_eq!(buf.push(b"hello E"), Pushed::Text("hello ".to_string()));
        assert_eq!(buf.push(b"N"), Pushed::Text(String::new()));
        assert_eq!(
            buf.push(b"D more"),
            Pushed::Stop {
                before: String::new(),
                sequence: "END".into()
            }
        );
    }

    #[test]
    fn held_text_is_released_when_it_does_not_match() {
        let stop = vec!["END".to_string()];
        let mut buf = TextBuffer::new(&stop, &[], ThinkingTags::None);
        assert_eq!(buf.push(b"a E"), Pushed::Text("a ".to_string()));
        assert_eq!(buf.push(b"x"), Pushed::Text("Ex".to_string()));
        assert_eq!(buf.push(b"E"), Pushed::Text(String::new()));
        assert_eq!(buf.finish(), "E");
    }

    #[test]
    fn a_marker_split_across_tokens_switches_to_the_call() {
        let stop: Vec<String> = Vec::new();
        let mut buf = TextBuffer::new(&stop, &[("<tool_call>", false)], ThinkingTags::None);
        assert_eq!(
            buf.push(b"Let me look. <tool"),
            Pushed::Text("Let me look. ".into())
        );
        assert_eq!(
            buf.push(b"_call>\n{"),
            Pushed::Marker(String::new(), "<tool_call>\n{".into())
        );
    }

    #[test]
    fn a_start_only_marker_counts_only_at_the_start() {
        let stop: Vec<String> = Vec::new();
        let mut buf = TextBuffer::new(&stop, &[("{", true)], ThinkingTags::None);
        assert_eq!(buf.push(b" \n"), Pushed::Text(String::new()));
        assert_eq!(
            buf.push(b"{\"name\""),
            Pushed::Marker(String::new(), " \n{\"name\"".into())
        );
        let mut buf = TextBuffer::new(&stop, &[("{", true)], ThinkingTags::None);
        assert_eq!(buf.push(b"Use {x}"), Pushed::Text("Use {x}".into()));
    }

    #[test]
    fn a_fenced_call_opening_the_answer_is_a_call_and_other_fences_stay_text() {
        let stop: Vec<String> = Vec::new();
        let markers: &[(&str, bool)] = &[("{", true), ("```", true)];
        let mut buf = TextBuffer::new(&stop, markers, ThinkingTags::None);
        assert_eq!(buf.push(b"``"), Pushed::Text(String::new()));
        assert_eq!(
            buf.push(b"`json\n{"),
            Pushed::Marker(String::new(), "```json\n{".into())
        );
        // A back-tick in prose is no fence.
        let mut buf = TextBuffer::new(&stop, markers, ThinkingTags::None);
        assert_eq!(buf.push(b"`x` is"), Pushed::Text("`x` is".into()));

        let constraint = Constraint::Tools {
            format: CallFormat::Hermes,
            grammar: String::new(),
            trigger_patterns: Vec::new(),
            lazy: true,
            tools: vec![freehold_protocol::ToolSpec {
                name: "read".into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}}}),
                strict: false,
            }],
        };
        let mut output = Output::new(&stop, &constraint, ThinkingTags::None);
        output.push(b"```json\n{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}");
        let (text, calls) = output.finish(false);
        assert_eq!(text, "");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "read");
        let mut output = Output::new(&stop, &constraint, ThinkingTags::None);
        output.push(b"```python\nprint(1)\n```");
        assert_eq!(
            output.finish(false),
            ("```python\nprint(1)\n```".to_string(), Vec::new())
        );
    }

    /// Hermes calls of one tool, `read`, as the output scanner sees them
    /// (no grammar: these tests feed the text themselves).
    fn read_tool_calls() -> Constraint {
        Constraint::Tools {
            format: CallFormat::Hermes,
            grammar: String::new(),
            trigger_patterns: Vec::new(),
            lazy: true,
            tools: vec![freehold_protocol::ToolSpec {
                name: "read".into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
                strict: false,
            }],
        }
    }

    #[test]
    fn an_answer_that_is_json_but_no_call_stays_text() {
        let constraint = read_tool_calls();
        let stop: Vec<String> = Vec::new();
        let mut output = Output::new(&stop, &constraint, ThinkingTags::None);
        assert_eq!(output.push(b"{\"a\": "), (String::new(), None));
        assert_eq!(output.push(b"1}"), (String::new(), None));
        assert_eq!(output.finish(false), ("{\"a\": 1}".to_string(), Vec::new()));

        let mut output = Output::new(&stop, &constraint, ThinkingTags::None);
        output.push(b"{\"name\": \"read\", \"arguments\": {}}");
        let (text, calls) = output.finish(false);
        assert_eq!((text.as_str(), calls[0].name.as_str()), ("", "read"));
    }

    /// A call a thinking model drafts in its thinking is thinking (sent on
    /// as text, which the think adapter makes reasoning); after
    /// `</think>`, the answer's call is a call, a bare one opening the
    /// answer too; a stop sequence ends the answer, not the thinking.
    #[test]
    fn calls_and_stops_count_only_after_the_thinking() {
        let stop = vec!["STOP".to_string()];
        let constraint = read_tool_calls();
        let call = "{\"name\": \"read\", \"arguments\": {}}";
        let mut output = Output::new(&stop, &constraint, ThinkingTags::Opened);
        let drafted = format!("Maybe <tool_call>{call}</tool_call> STOP or not.");
        assert_eq!(output.push(drafted.as_bytes()), (drafted.clone(), None));
        assert_eq!(output.step(), &Step::at(Place::Thinking));
        assert_eq!(output.push(b"</think>"), ("</think>".into(), None));
        assert_eq!(output.step().closed_before.as_deref(), Some(""));
        let (text, _) = output.push(format!("\n{call}").as_bytes());
        assert_eq!(text, "");
        assert_eq!(output.step(), &Step::at(Place::Answer));
        let (text, calls) = output.finish(false);
        assert_eq!((text.as_str(), calls.len()), ("", 1));

        // Opened by the model: the same, and an answer without the tags is
        // read as before.
        let mut output = Output::new(&stop, &constraint, ThinkingTags::MayOpen);
        let (text, _) = output.push(b"<think>I'll <tool_call> it</think>\n\n<tool_call>");
        assert_eq!(text, "<think>I'll <tool_call> it</think>\n\n");
        output.push(format!("{call}</tool_call>").as_bytes());
        assert_eq!(output.finish(false).1.len(), 1);
        let mut output = Output::new(&stop, &constraint, ThinkingTags::MayOpen);
        assert_eq!(output.push(b" "), (String::new(), None));
        assert_eq!(output.step(), &Step::at(Place::Undecided));
        output.push(call.as_bytes());
        assert_eq!(output.step(), &Step::at(Place::Answer));
        assert_eq!(output.finish(false).1.len(), 1);
        let mut output = Output::new(&stop, &constraint, ThinkingTags::MayOpen);
        assert_eq!(
            output.push(b"Hi.STOPBye"),
            ("Hi.".into(), Some("STOP".into()))
        );
    }

    /// The gate on llama.cpp's own lazy grammar, with Qwen2.5-Coder's
    /// vocabulary and tool-call grammar: a `<tool_call>` drafted while
    /// thinking leaves the grammar waiting (it would trigger it were the
    /// thinking fed), one in the answer triggers it, and so does one whose
    /// start was held while it was undecided whether the model opens its
    /// thinking.
    #[test]
    fn the_lazy_grammar_sees_only_the_answer() {
        let Some(path) =
            freehold_test_support::test_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        else {
            return;
        };
        let provider = super::super::LocalProvider::new(super::super::LocalSettings::default());
        let model = provider.load(&path).unwrap();
        let vocab = model.vocab();
        let mut request = ChatRequest::new("qwen", vec![Message::user("Weather in Paris?")]);
        request.tools = vec![freehold_protocol::ToolSpec {
            name: "get_weather".into(),
            description: "Gets the weather.".into(),
            parameters: serde_json::json!({"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            strict: false,
        }];
        let plan = tools::plan(&chat_template(model), &request).unwrap();
        let sampler_for = |thinking| {
            let prepared = Prepared {
                model,
                model_name: "qwen".into(),
                tokens: Vec::new(),
                needed: 0,
                allowed: 0,
                max_new: 0,
                threads: 1,
                sampling: freehold_protocol::Sampling::default(),
                stop: Vec::new(),
                constraint: plan.constraint.clone(),
                thinking,
            };
            Sampler::new(&prepared).unwrap()
        };
        // Writes `text` as tokens (special ones parsed when `special`), as
        // the decoding loop does: the text first, then the grammar.
        let write = |sampler: &mut Sampler, output: &mut Output<'_>, text: &str, special| {
            for token in vocab.tokenize(text.as_bytes(), false, special) {
                output.push(&vocab.token_to_piece(token, true, None));
                sampler.accept(token, output.step()).unwrap();
            }
        };
        let prose = vocab.tokenize(b" hello", false, false)[0];
        // Whether the grammar lets the model write prose next: it does
        // until its trigger.
        let allows_prose = |sampler: &mut Sampler| {
            let grammar = sampler.grammar.as_mut().unwrap();
            let mut one =
                LlamaTokenDataArray::from_iter([LlamaTokenData::new(prose, 1.0, 0.0)], false);
            grammar.apply(&mut one);
            one.data[0].logit().is_finite()
        };
        let stop: Vec<String> = Vec::new();

        let mut sampler = sampler_for(ThinkingTags::Opened);
        let mut output = Output::new(&stop, &plan.constraint, ThinkingTags::Opened);
        write(&mut sampler, &mut output, "Maybe <tool_call> it", true);
        assert!(allows_prose(&mut sampler), "the drafted call triggered it");
        write(&mut sampler, &mut output, "</think>\n<tool_call>", true);
        assert!(!allows_prose(&mut sampler), "the answer's call did not");

        // The same text with no thinking to gate: the draft triggers it.
        let mut ungated = sampler_for(ThinkingTags::None);
        let mut output = Output::new(&stop, &plan.constraint, ThinkingTags::None);
        write(&mut ungated, &mut output, "Maybe <tool_call>", true);
        assert!(!allows_prose(&mut ungated));

        // Held while undecided: ` <t` (the start of `<think>`), then the
        // rest of a `<tool_call>` spelled as plain text.
        let mut sampler = sampler_for(ThinkingTags::MayOpen);
        let mut output = Output::new(&stop, &plan.constraint, ThinkingTags::MayOpen);
        write(&mut sampler, &mut output, " <t", false);
        assert_eq!(output.step(), &Step::at(Place::Undecided));
        assert!(allows_prose(&mut sampler));
        write(&mut sampler, &mut output, "ool_call>", false);
        assert!(!allows_prose(&mut sampler), "the held start was not fed");
    }

    #[test]
    fn a_stop_before_the_marker_wins() {
        let stop = vec!["END".to_string()];
        let mut buf = TextBuffer::new(&stop, &[("<tool_call>", false)], ThinkingTags::None);
        assert_eq!(
            buf.push(b"a END <tool_call>"),
            Pushed::Stop {
                before: "a ".into(),
                sequence: "END".into()
            }
        );
    }
}
