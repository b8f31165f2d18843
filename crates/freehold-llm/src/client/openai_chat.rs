//! The OpenAI Chat Completions client, for OpenAI and every compatible server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, ContentPart, EmbedRequest, EmbedResponse, ErrorKind,
    LlmError, ModelInfo, Reasoning, Role, fold_system_messages,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::client::effort::{EffortAsk, EffortMemory, EffortTries, Endpoint};
use crate::client::openai_responses::OpenAiResponsesClient;
use crate::client::{ClientOptions, KeyHeader, post_to_optional_endpoint};
use crate::http::{Response, Transport};
use crate::provider::{EventStream, Provider, check_embed_request};
use crate::stop::LocalStops;
use crate::think;
use crate::wire::embeddings::{self, OpenAiEmbeddingsResponse};
use crate::wire::openai_api;
use crate::wire::openai_chat::{
    self, ChunkDecoder, CompletionResponse, Dialect, TokenCountEndpoint,
};

/// A client of `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiChatClient {
    options: ClientOptions,
    dialect: Dialect,
    transport: Transport,
    headers: HeaderMap,
    /// `{base_url}/chat/completions`, parsed once: reqwest would parse the
    /// text again on every request. The error is reported on each request.
    completions_url: Result<reqwest::Url, String>,
    /// The models (as the server names them) whose chat template refused a
    /// conversation that it then took folded ([`Self::post_folding`]):
    /// their conversations are folded before they are sent. Shared by the
    /// clones of this client, lost with it (a reload that changes the
    /// provider builds a new one), and at most [`LEARNED_MODELS_KEPT`].
    folded_models: Arc<ModelMemory<()>>,
    /// The models (as the server names them) whose requests were refused
    /// for their stop sequences and answered with fewer
    /// ([`Self::post_with_stops`]), with how many they take: the others are
    /// applied to the answer here. Kept like [`Self::folded_models`].
    stop_limits: Arc<ModelMemory<usize>>,
    /// The reasoning efforts the server's models were found to take,
    /// shared with [`Self::responses`].
    efforts: Arc<EffortMemory>,
    /// For OpenAI's own API ([`Dialect::openai_api`]): a Responses client
    /// of the same server, which takes the requests with function tools of
    /// a model whose reasoning Chat Completions refuses beside them
    /// (gpt-5.4 and later: "Please use /v1/responses instead").
    responses: Option<OpenAiResponsesClient>,
}

/// How many models [`OpenAiChatClient`] remembers as needing their
/// conversations folded, or as refusing stop sequences; past that, the
/// others are still sent as they must be, but only after each refusal.
const LEARNED_MODELS_KEPT: usize = 64;

impl OpenAiChatClient {
    /// A client speaking `dialect` to `options.base_url`.
    ///
    /// # Errors
    /// Invalid extra headers or an unusable TLS backend.
    pub fn new(options: ClientOptions, dialect: Dialect) -> Result<Self, LlmError> {
        let transport = Transport::new(
            options.name.clone(),
            options.http.clone(),
            options.secrets(),
        )?;
        let headers = options.headers(KeyHeader::Bearer, &[])?;
        let completions_url = options.parsed_url("/chat/completions");
        let efforts = Arc::<EffortMemory>::default();
        let responses = if dialect.openai_api {
            Some(
                OpenAiResponsesClient::new(options.clone())?
                    .with_openai_api(true)
                    .with_efforts(Arc::clone(&efforts)),
            )
        } else {
            None
        };
        Ok(Self {
            options,
            dialect,
            transport,
            headers,
            completions_url,
            folded_models: Arc::default(),
            stop_limits: Arc::default(),
            efforts,
            responses,
        })
    }
}

impl OpenAiChatClient {
    fn completions_url(&self) -> Result<reqwest::Url, LlmError> {
        self.completions_url
            .clone()
            .map_err(|error| self.transport.error(ErrorKind::InvalidRequest, error))
    }

    /// Sends `request` to the completions endpoint, as a stream or whole,
    /// with the reasoning effort its model takes: when the server refuses
    /// the one sent and names those the model takes (OpenAI's API does), it
    /// is sent again with the nearest, which is remembered for the model's
    /// later requests. A refusal of reasoning beside function tools is sent
    /// again with `none`, unless [`Self::responses`] should take it.
    async fn post(&self, request: &ChatRequest, stream: bool) -> Result<Response, LlmError> {
        let mut body = openai_chat::encode_request(request, self.dialect, stream);
        let mut tries = EffortTries::new(
            &self.efforts,
            EffortAsk {
                provider: &self.options.name,
                model: &request.model,
                // What the encoder put in the body.
                asked: self.dialect.effort_name(request),
                verbosity: body.verbosity.as_deref(),
                endpoint: Endpoint::ChatCompletions {
                    with_tools: !request.tools.is_empty(),
                },
            },
        );
        if tries.differs_from_asked() {
            body.reasoning_effort = tries.effort().map(str::to_owned);
        }
        loop {
            let url = self.completions_url()?;
            match self
                .transport
                .post_json_answer(url, &self.headers, &body, stream)
                .await
            {
                Err(refused) => {
                    // A request the caller sends to the Responses API
                    // instead is not sent here again.
                    if !tries.retry_after(&refused)
                        || self.redirect_for(request, &refused).is_some()
                    {
                        return Err(refused);
                    }
                    body.reasoning_effort = tries.effort().map(str::to_owned);
                }
                answered => return answered,
            }
        }
    }

    /// The Responses client that takes `request` instead of Chat
    /// Completions: for OpenAI's own API, a request with function tools for
    /// a model whose reasoning Chat Completions was found to refuse beside
    /// them.
    fn responses_for(&self, request: &ChatRequest) -> Option<&OpenAiResponsesClient> {
        self.responses.as_ref().filter(|_| {
            !request.tools.is_empty() && self.efforts.refuses_beside_tools(&request.model)
        })
    }

    /// The Responses client that takes `request` after `refused`: for
    /// OpenAI's own API, a request with function tools refused for its
    /// reasoning beside them (whether or not the model could be remembered).
    fn redirect_for(
        &self,
        request: &ChatRequest,
        refused: &LlmError,
    ) -> Option<&OpenAiResponsesClient> {
        self.responses.as_ref().filter(|_| {
            !request.tools.is_empty()
                && refused.status == Some(400)
                && openai_api::read_effort_refusal(&refused.message, None)
                    == Some(openai_api::EffortRefusal::NotBesideTools)
        })
    }

    /// [`Self::post`], folding the conversation's system messages when the
    /// model's chat template is known to want that, or once it refuses
    /// them.
    ///
    /// When the server refuses the request as invalid (400 or 422, or a
    /// 500 for a template's refusal of its system messages, as llama.cpp's
    /// server reports it) and its system messages are more than one, or
    /// not first, it is sent once more with them folded into one system
    /// message first and user text ([`fold_system_messages`]). Servers that
    /// render the model's own chat template (vLLM, llama.cpp, LM Studio,
    /// SGLang) refuse the others for models whose template allows a system
    /// message only at the start (some Qwen, Gemma and Mistral templates);
    /// Claude Code sends system messages inside the conversation, Codex two
    /// at its start. A model whose folded conversation is answered is
    /// remembered, and its later conversations are folded before the first
    /// try: an agent's every request would otherwise be sent twice.
    ///
    /// If the second try is refused as invalid as well, the first refusal
    /// is the error (it describes what was asked); any other failure of the
    /// second try is reported as itself: a context-length error (servers
    /// render the template before they count, so a long conversation is
    /// refused for its template first), so that Claude Code and Codex
    /// compact; a timeout, a 5xx or a rate limit, so that the router's
    /// retries and fallbacks still apply.
    async fn post_folding(
        &self,
        request: &mut ChatRequest,
        stream: bool,
    ) -> Result<Response, LlmError> {
        if self.fold_if_known(request) {
            return self.post(request, stream).await;
        }
        let refused = match self.post(request, stream).await {
            // To be sent through the Responses API instead: not a
            // template's refusal.
            Err(refused) if self.redirect_for(request, &refused).is_some() => return Err(refused),
            // Refused for its stop sequences: [`Self::post_with_stops`]
            // sends it again with fewer, not folded.
            Err(refused) if self.refused_for_stops(request, &refused) => return Err(refused),
            // gpt-oss by a name not known as its own: its template refused
            // the reasoning beside a message's text and calls.
            Err(refused)
                if openai_chat::refuses_reasoning_beside_text(&refused)
                    && openai_chat::strip_reasoning_beside_text(&mut request.messages) =>
            {
                tracing::debug!(
                    provider = %self.options.name,
                    "the template refused reasoning beside text and tool calls; sending again \
                     without it"
                );
                return second_try(refused, self.post(request, stream).await);
            }
            Err(refused) if self.fold_for_second_try(&refused, request) => refused,
            answered => return answered,
        };
        let again = self.post(request, stream).await;
        if again.is_ok() {
            self.remember_folding(&request.model);
        }
        second_try(refused, again)
    }

    /// Folds `request` in place if its model is known to need it; whether
    /// it was, which leaves no second try.
    fn fold_if_known(&self, request: &mut ChatRequest) -> bool {
        if !self.folds_first(&request.model) {
            return false;
        }
        if let Some(folded) = fold_system_messages(&request.messages) {
            request.messages = folded;
        }
        true
    }

    /// Folds `request` in place if `refused` is a refusal that folding may
    /// answer and folding changes it; whether to send it again.
    fn fold_for_second_try(&self, refused: &LlmError, request: &mut ChatRequest) -> bool {
        if refused.kind != ErrorKind::InvalidRequest
            || !matches!(refused.status, Some(400 | 422 | 500))
        {
            return false;
        }
        let Some(folded) = fold_system_messages(&request.messages) else {
            return false;
        };
        tracing::debug!(
            provider = %self.options.name,
            "refused as invalid; sending again with the system messages folded"
        );
        request.messages = folded;
        true
    }

    /// Whether `model`'s conversations are folded before they are sent.
    fn folds_first(&self, model: &str) -> bool {
        self.folded_models.get(model).is_some()
    }

    /// Remembers that `model`'s template took a conversation only folded.
    fn remember_folding(&self, model: &str) {
        match self.folded_models.learn(model, ()) {
            // The refusal's text is not logged: a server may echo the
            // prompt in it.
            Learned::New => tracing::warn!(
                provider = %self.options.name,
                model,
                "the server refused a conversation whose system messages are not one and \
                 first (as its model's chat template may require) and answered it folded; this \
                 model's conversations are folded from now on"
            ),
            Learned::Known | Learned::Full { first: false } => {}
            // Once: past the limit this would come with every request.
            Learned::Full { first: true } => tracing::warn!(
                provider = %self.options.name,
                model,
                "the server answered a conversation only with its system messages folded; \
                 {LEARNED_MODELS_KEPT} models are remembered as needing that already, so this \
                 one's conversations, and those of any other model past them, will each be \
                 refused once before they are folded (logged once)"
            ),
        }
    }

    /// How many stop sequences a request for `model` may carry: as many
    /// as the server was found to take for it, or the dialect's limit.
    fn stop_limit(&self, model: &str) -> Option<usize> {
        self.stop_limits
            .get(model)
            .or(self.dialect.max_stop_sequences)
    }

    /// [`Self::post_folding`] with no more stop sequences than the server
    /// takes ([`Self::stop_limit`]); the others are returned, to be applied
    /// to the answer. A request refused for its stop sequences (a 400 or
    /// 422 that names them: OpenAI's reasoning models take none, vLLM 4 by
    /// default) is sent again with as many as the refusal says the server
    /// takes (none when it names no number, or when that is refused too),
    /// and that is remembered for its model. On failure the request gets
    /// its stop sequences back (for the Responses client, which may take
    /// it).
    async fn post_with_stops(
        &self,
        request: &mut ChatRequest,
        stream: bool,
    ) -> Result<(Response, LocalStops), LlmError> {
        let mut local = LocalStops::split_off(request, self.stop_limit(&request.model));
        let mut sent = self.post_folding(request, stream).await;
        // Once with the limit the refusal names, and if that is refused as
        // well (a limit misread), once with none.
        for retry in 0..2 {
            let Err(refused) = &sent else {
                break;
            };
            if !self.refused_for_stops(request, refused) {
                break;
            }
            let limit = match retry {
                0 => stop_limit_in(&refused.message)
                    .unwrap_or(0)
                    .min(request.stop.len() - 1),
                _ => 0,
            };
            local.take_all_from(request);
            local.give_back_first(request, limit);
            sent = self.post_folding(request, stream).await;
            if sent.is_ok() {
                self.remember_stop_limit(&request.model, limit);
            }
        }
        match sent {
            Ok(response) => Ok((response, local)),
            Err(error) => {
                local.restore(request);
                Err(error)
            }
        }
    }

    /// Whether `refused` refuses `request` for its stop sequences: it
    /// carries some, and the refusal names them
    /// ([`refuses_stop_sequences`]).
    fn refused_for_stops(&self, request: &ChatRequest, refused: &LlmError) -> bool {
        !request.stop.is_empty() && refuses_stop_sequences(refused)
    }

    /// Remembers that `model` was answered with `limit` stop sequences.
    fn remember_stop_limit(&self, model: &str, limit: usize) {
        match self.stop_limits.learn(model, limit) {
            Learned::New => tracing::info!(
                provider = %self.options.name,
                model,
                limit,
                "the server refused a request for its stop sequences and answered it with \
                 fewer; this model's stop sequences past the limit are applied to its answers \
                 from now on"
            ),
            Learned::Known | Learned::Full { .. } => {}
        }
    }
}

/// Whether `refused` is a refusal of a request's stop sequences: an
/// invalid request (400 or 422) that names the field as servers do, quoted
/// (OpenAI's `Unsupported parameter: 'stop'` and `Invalid 'stop': array too
/// long`, vLLM's `('body', 'stop')`), or alone on a line of a validation
/// error (pydantic's, as vLLM words it), or as Anthropic and Gemini call
/// it. A prompt echoed in the message that merely says "stop" is not one.
fn refuses_stop_sequences(refused: &LlmError) -> bool {
    refused.kind == ErrorKind::InvalidRequest
        && matches!(refused.status, Some(400 | 422))
        && stop_field_at(&refused.message).is_some()
}

/// Where a refusal's message names the stop field (see
/// [`refuses_stop_sequences`]).
fn stop_field_at(message: &str) -> Option<usize> {
    let quoted = [
        "'stop'",
        "\"stop\"",
        "`stop`",
        "stop_sequences",
        "stopSequences",
    ]
    .iter()
    .filter_map(|name| message.find(name))
    .min();
    let on_a_line = message
        .split_inclusive('\n')
        .scan(0, |start, line| {
            let at = *start;
            *start += line.len();
            Some((at, line))
        })
        .find(|(_, line)| line.trim() == "stop")
        .map(|(at, _)| at);
    quoted.into_iter().chain(on_a_line).min()
}

/// The most stop sequences a refusal says the server takes, read after
/// where it names the field: OpenAI's "Invalid 'stop': … Expected an array
/// with maximum length 4", vLLM's "stop\n  List should have at most 4
/// items". `None` when it names no limit there (OpenAI's reasoning models:
/// "Unsupported parameter").
fn stop_limit_in(message: &str) -> Option<usize> {
    let after = &message[stop_field_at(message)?..];
    // The field's own limit: in the sentence that names the field or the
    // next (OpenAI: "Invalid 'stop': array too long. Expected an array
    // with maximum length 4"), not another field's further on.
    let sentence = after.split(". ").take(2).collect::<Vec<_>>().join(". ");
    ["maximum length ", "at most "].iter().find_map(|words| {
        let (_, rest) = sentence.split_once(words)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// What an [`OpenAiChatClient`] learned about its server's models from
/// their refusals (that their templates want one system message first; how
/// many stop sequences they take), so that their later requests are sent as
/// the server takes them. At most [`LEARNED_MODELS_KEPT`] models: a server
/// that takes any model name would otherwise let its clients grow it.
#[derive(Debug)]
struct ModelMemory<T> {
    /// Whether any model was learned: until then, no request locks.
    any: AtomicBool,
    learned: Mutex<LearnedModels<T>>,
}

impl<T> Default for ModelMemory<T> {
    fn default() -> Self {
        Self {
            any: AtomicBool::new(false),
            learned: Mutex::new(LearnedModels {
                models: BTreeMap::new(),
                full_logged: false,
            }),
        }
    }
}

/// The models of [`ModelMemory`], with what was learned of each.
#[derive(Debug)]
struct LearnedModels<T> {
    models: BTreeMap<String, T>,
    /// Whether it was logged that [`LEARNED_MODELS_KEPT`] were reached.
    full_logged: bool,
}

/// What [`ModelMemory::learn`] did.
#[derive(Debug, PartialEq, Eq)]
enum Learned {
    /// The model is remembered from now on (or what it was remembered
    /// with has changed).
    New,
    /// It already was, as it is.
    Known,
    /// It could not be: the memory is full. `first` the first time.
    Full { first: bool },
}

impl<T: Copy + PartialEq> ModelMemory<T> {
    /// What was learned of `model`, if anything.
    fn get(&self, model: &str) -> Option<T> {
        // Most servers never refuse: their requests take no lock.
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .models
            .get(model)
            .copied()
    }

    /// Remembers `value` for `model`, if there is room.
    fn learn(&self, model: &str, value: T) -> Learned {
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = learned.models.get_mut(model) {
            if *known == value {
                return Learned::Known;
            }
            *known = value;
            return Learned::New;
        }
        if learned.models.len() < LEARNED_MODELS_KEPT {
            learned.models.insert(model.to_owned(), value);
            drop(learned);
            self.any.store(true, Ordering::Release);
            return Learned::New;
        }
        Learned::Full {
            first: !std::mem::replace(&mut learned.full_logged, true),
        }
    }
}

/// The outcome of a folded second try after `refused`: its answer; the
/// first refusal if it was refused as well (that one describes what was
/// asked); any other failure as itself.
fn second_try<T>(refused: LlmError, again: Result<T, LlmError>) -> Result<T, LlmError> {
    match again {
        Err(again) if again.kind == ErrorKind::InvalidRequest => Err(refused),
        again => again,
    }
}

#[async_trait]
impl Provider for OpenAiChatClient {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities {
            structured_output: true,
            vision: true,
            // OpenAI's API reads PDFs sent as `file` parts.
            documents: self.dialect.openai_api,
            ..Capabilities::default()
        }
    }

    async fn stream(&self, mut request: ChatRequest) -> Result<EventStream, LlmError> {
        if let Some(responses) = self.responses_for(&request) {
            return responses.stream(request).await;
        }
        let (response, stops) = match self.post_with_stops(&mut request, true).await {
            Ok(sent) => sent,
            Err(refused) => match self.redirect_for(&request, &refused) {
                Some(responses) => return responses.stream(request).await,
                None => return Err(refused),
            },
        };
        let events = self.transport.sse_stream(response);
        // `request.stop` is what was sent: `stops` are the others.
        let decoder = ChunkDecoder::new(self.options.name.clone()).with_sent_stops(request.stop);
        let mut events = self.transport.decode_stream(events, decoder);
        // OpenAI's models never write their reasoning into the text.
        if !self.dialect.openai_api {
            events = think::split_stream(events);
        }
        Ok(stops.apply_to_stream(events))
    }

    async fn complete(&self, mut request: ChatRequest) -> Result<ChatResponse, LlmError> {
        if let Some(responses) = self.responses_for(&request) {
            return responses.complete(request).await;
        }
        let (response, stops) = match self.post_with_stops(&mut request, false).await {
            Ok(sent) => sent,
            Err(refused) => match self.redirect_for(&request, &refused) {
                Some(responses) => return responses.complete(request).await,
                None => return Err(refused),
            },
        };
        let response: CompletionResponse = self.transport.read_json_as(response).await?;
        let mut answer = openai_chat::decode_response(&self.options.name, response, &request.stop)?;
        // OpenAI's models never write their reasoning into the text.
        if !self.dialect.openai_api {
            think::split_response(&mut answer);
        }
        stops.apply_to_response(&mut answer);
        Ok(answer)
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        list_openai_models(&self.transport, &self.options, &self.headers).await
    }

    /// The model list, and where the dialect says the server has one
    /// ([`Dialect::probe_health`]), `GET /health` beside the `/v1` root:
    /// llama.cpp's server lists its models while it is still loading one
    /// (and answers 503 "Loading model" there), vLLM's API process while
    /// its engine is dead. A server error or no answer there means not
    /// ready; a refusal (404, 501, 401…) says nothing, and the list decides.
    async fn check_ready(&self) -> Result<(), LlmError> {
        self.list_models().await?;
        if !self.dialect.probe_health {
            return Ok(());
        }
        let url = format!("{}/health", self.server_root());
        match self.transport.get(&url, &self.headers).await {
            Ok(_) => Ok(()),
            // 501: no such endpoint, like a 404.
            Err(error)
                if error
                    .status
                    .is_some_and(|status| status < 500 || status == 501) =>
            {
                tracing::debug!(provider = %self.options.name, %error, "no health endpoint");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// `POST {base_url}/embeddings`.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        openai_embed(&self.transport, &self.options, &self.headers, request).await
    }

    /// At the endpoint the dialect names (see [`TokenCountEndpoint`]):
    /// vLLM's `POST /tokenize` beside the `/v1` root (the chat rendered by
    /// the server's own template, tools included), Anthropic's
    /// `POST /v1/messages/count_tokens` at the server's root (llama.cpp's
    /// `llama-server`), or OpenAI's `POST /responses/input_tokens`. A server
    /// without the endpoint (404, 405 or 501 that does not name the model)
    /// cannot count: `None`, as without one.
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        let borrowed = match self.dialect.token_count {
            TokenCountEndpoint::None => return Ok(None),
            TokenCountEndpoint::Tokenize => self.count_with_tokenize(request).await,
            TokenCountEndpoint::MessagesCountTokens => {
                // The chat sends a document as a line of text, unless the
                // server is OpenAI's.
                let request = if self.dialect.openai_api {
                    request
                } else {
                    request.into_document_notes()
                };
                let request = if self.dialect.reasoning_in_history {
                    with_reasoning_as_sent(request)
                } else {
                    request
                };
                super::anthropic::count_with_messages_endpoint(
                    &self.transport,
                    &self.options.name,
                    &format!("{}/v1/messages/count_tokens", self.server_root()),
                    &self.headers,
                    &request,
                )
                .await
            }
            TokenCountEndpoint::ResponsesInputTokens => {
                // OpenAI's own endpoint, on OpenAI's own API: its errors
                // are the request's.
                return super::openai_responses::count_with_input_tokens(
                    &self.transport,
                    &self.options,
                    &self.headers,
                    &request,
                    self.dialect.openai_api,
                    &self.efforts,
                )
                .await;
            }
        };
        // An endpoint borrowed from another API may refuse or fail on what
        // the server's chat takes (another validator, another code path): a
        // count is advisory, so that is no count rather than a failure, and
        // it must not count against the server's health. Connection, key and
        // model errors are the server's answer to anything, and stay errors.
        match borrowed {
            Err(error) if matches!(error.kind, ErrorKind::InvalidRequest | ErrorKind::Server) => {
                tracing::debug!(provider = %self.options.name, %error, "no token count");
                Ok(None)
            }
            counted => counted,
        }
    }
}

impl OpenAiChatClient {
    /// The server's root: the base URL without its `/v1`, where servers
    /// put the endpoints that are not OpenAI's.
    fn server_root(&self) -> &str {
        let base = self.options.base_url.as_str();
        base.strip_suffix("/v1").unwrap_or(base)
    }

    /// vLLM's `POST /tokenize`, beside the `/v1` root. It renders the
    /// model's chat template as the chat does, so it is folded as the chat
    /// is ([`Self::post_folding`]), but teaches nothing: another endpoint
    /// may validate otherwise.
    async fn count_with_tokenize(&self, mut request: ChatRequest) -> Result<Option<u64>, LlmError> {
        let sent = if self.fold_if_known(&mut request) {
            self.post_tokenize(&request).await
        } else {
            match self.post_tokenize(&request).await {
                Err(refused) if self.fold_for_second_try(&refused, &mut request) => {
                    second_try(refused, self.post_tokenize(&request).await)
                }
                answered => answered,
            }
        }?;
        let Some(response) = sent else {
            return Ok(None);
        };
        // A server whose `/tokenize` is another (llama.cpp's takes text and
        // answers `{"tokens"}`) gives no count: the caller estimates.
        let answer = self.transport.read_json(response).await?;
        Ok(answer.get("count").and_then(serde_json::Value::as_u64))
    }

    /// Sends `request`'s conversation and tools to `POST /tokenize` (and
    /// the template's arguments: thinking switched off renders differently);
    /// `None` when the server has no such endpoint.
    async fn post_tokenize(&self, request: &ChatRequest) -> Result<Option<Response>, LlmError> {
        let encoded = openai_chat::encode_request(request, self.dialect, false);
        let mut body = serde_json::to_value(&encoded).map_err(|error| {
            self.transport
                .error(ErrorKind::InvalidRequest, error.to_string())
        })?;
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|name, _| {
                matches!(
                    name.as_str(),
                    "model" | "messages" | "tools" | "chat_template_kwargs"
                )
            });
            fields.insert("add_generation_prompt".into(), true.into());
        }
        let url = format!("{}/tokenize", self.server_root());
        post_to_optional_endpoint(&self.transport, &url, &self.headers, &body, &request.model).await
    }
}

/// The request as an Anthropic count endpoint (llama.cpp's) should see it
/// when the chat sends earlier reasoning back: what the chat would send
/// ([`openai_chat::reasoning_sent_back`]) as a thinking block with an empty
/// signature, which llama.cpp reads as `reasoning_content`, and no other
/// reasoning (the Anthropic encoding drops what another provider signed).
fn with_reasoning_as_sent(mut request: ChatRequest) -> ChatRequest {
    for message in &mut request.messages {
        if message.role != Role::Assistant {
            continue;
        }
        let sent = openai_chat::reasoning_sent_back(&message.content, &request.model);
        message
            .content
            .retain(|part| !matches!(part, ContentPart::Reasoning(_)));
        if let Some(text) = sent {
            message.content.insert(
                0,
                ContentPart::Reasoning(Reasoning {
                    text,
                    signature: Some(String::new()),
                    ..Reasoning::default()
                }),
            );
        }
    }
    request
}

/// `POST {base_url}/embeddings` as OpenAI and compatible servers answer it;
/// shared with the Responses client.
pub(crate) async fn openai_embed(
    transport: &Transport,
    options: &ClientOptions,
    headers: &HeaderMap,
    request: EmbedRequest,
) -> Result<EmbedResponse, LlmError> {
    check_embed_request(&options.name, &request)?;
    let body = serde_json::to_value(embeddings::encode_openai_request(&request))
        .map_err(|error| transport.error(ErrorKind::InvalidRequest, error.to_string()))?;
    let response = transport
        .post_json_whole(&options.url("/embeddings"), headers, &body)
        .await?;
    let json = transport.read_json(response).await?;
    let response: OpenAiEmbeddingsResponse = serde_json::from_value(json).map_err(|error| {
        transport.error(
            ErrorKind::Server,
            format!("unexpected embeddings answer: {error}"),
        )
    })?;
    embeddings::decode_openai_response(
        &options.name,
        &request.model,
        request.inputs.len(),
        response,
    )
    .and_then(|answer| embeddings::check_dimensions(&options.name, &request, answer))
    .map_err(|error| transport.redact_error(error))
}

/// `GET {base_url}/models` as OpenAI and compatible servers answer it
/// (vLLM adds `max_model_len`, others `context_length`); shared with the
/// Responses client.
pub(crate) async fn list_openai_models(
    transport: &Transport,
    options: &ClientOptions,
    headers: &HeaderMap,
) -> Result<Vec<ModelInfo>, LlmError> {
    #[derive(Deserialize)]
    struct ModelList {
        #[serde(default)]
        data: Vec<Model>,
    }
    #[derive(Deserialize)]
    struct Model {
        id: String,
        #[serde(default)]
        context_length: Option<u32>,
        #[serde(default)]
        max_model_len: Option<u32>,
    }
    let response = transport.get(&options.url("/models"), headers).await?;
    let json = transport.read_json(response).await?;
    let list: ModelList = serde_json::from_value(json).map_err(|error| {
        transport.error(ErrorKind::Server, format!("unexpected model list: {error}"))
    })?;
    Ok(list
        .data
        .into_iter()
        .map(|model| ModelInfo {
            context_window: model.context_length.or(model.max_model_len),
            id: model.id,
            provider: options.name.clone(),
            max_output_tokens: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, message: &str) -> LlmError {
        LlmError::new(ErrorKind::InvalidRequest, "p", message).with_status(status)
    }

    #[test]
    fn refusals_of_stop_sequences_are_told_and_their_limit_read() {
        let openai_unsupported = "Unsupported parameter: 'stop' is not supported with this model.";
        let openai_too_many = "Invalid 'stop': array too long. Expected an array with maximum \
                               length 4, but got an array with length 9 instead.";
        let vllm = "1 validation error for ChatCompletionRequest\nstop\n  List should have at \
                    most 4 items after validation, not 5";
        for message in [openai_unsupported, openai_too_many, vllm] {
            assert!(refuses_stop_sequences(&refused(400, message)), "{message}");
        }
        assert!(refuses_stop_sequences(&refused(422, vllm)));
        assert_eq!(stop_limit_in(openai_unsupported), None);
        assert_eq!(stop_limit_in(openai_too_many), Some(4));
        assert_eq!(stop_limit_in(vllm), Some(4));

        // A limit that is another field's is not read as the stop field's.
        let two_fields = "2 validation errors\nmessages.0.name\n  String should have at most 64 \
                          characters\nstop\n  Input should be a valid list";
        assert!(refuses_stop_sequences(&refused(422, two_fields)));
        assert_eq!(stop_limit_in(two_fields), None);
        let vllm_old = "[{'type': 'too_long', 'loc': ('body', 'stop'), 'msg': 'List should have \
                        at most 4 items after validation, not 6'}]";
        assert_eq!(stop_limit_in(vllm_old), Some(4));

        // Other refusals, words that only contain "stop", and a prompt
        // echoed in a refusal that says it.
        for message in [
            "Invalid 'max_tokens': integer above maximum value.",
            "stopwatch and nonstop are not the parameter",
            "This model's chat template refused: please stop asking",
        ] {
            assert!(!refuses_stop_sequences(&refused(400, message)), "{message}");
        }
        // Not an invalid request: the server's failure, or another status.
        assert!(!refuses_stop_sequences(&refused(500, openai_unsupported)));
        let failure = LlmError::new(ErrorKind::Server, "p", openai_unsupported).with_status(400);
        assert!(!refuses_stop_sequences(&failure));
    }
}
