//! The chat endpoints: `/v1/chat/completions`, `/v1/responses` and
//! `/v1/responses/compact` (OpenAI) and `/v1/messages` (Anthropic). Each
//! protocol only decodes its request and encodes the answer; everything
//! between is [`crate::chat`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freehold_llm::wire::serve::{DecodeError, SseFrame};
use freehold_llm::wire::{anthropic, openai_chat, openai_responses};
use freehold_protocol::{ChatRequest, ChatResponse, ErrorKind, LlmError, StreamEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chat::{
    AccountedStream, Accounting, Admitted, admit, authenticate, count_input_tokens, parse_body,
};
use crate::error::{GatewayError, Protocol};
use crate::request_id::Arrival;
use crate::routes::read_body;
use crate::routes::server_compaction::{self, Compacted, Pending, Plan, Then};
use crate::state::Gateway;

/// A stream encoder of one protocol.
trait StreamEncoder: Send + 'static {
    fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame>;
    fn finish(&mut self) -> Vec<SseFrame>;
    fn error(&mut self, error: &LlmError) -> Vec<SseFrame>;
    fn keepalive(&mut self) -> Vec<SseFrame>;
    /// The error the encoder ended the stream with itself, once (the
    /// provider's stream does not know the answer failed).
    fn take_failure(&mut self) -> Option<LlmError> {
        None
    }
    /// Puts a compaction run before the answer first in it (see
    /// [`server_compaction`]); called before the answer's first event.
    fn compacted(&mut self, _compacted: Compacted) -> Vec<SseFrame> {
        Vec::new()
    }
}

/// Implements [`StreamEncoder`] by the encoder's own methods, and the
/// protocol's own hooks (`compacted`…) given after the type.
macro_rules! stream_encoder {
    ($type:ty $(; $($hooks:item)*)?) => {
        impl StreamEncoder for $type {
            fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame> {
                <$type>::push(self, event)
            }
            fn finish(&mut self) -> Vec<SseFrame> {
                <$type>::finish(self)
            }
            fn error(&mut self, error: &LlmError) -> Vec<SseFrame> {
                <$type>::error(self, error)
            }
            fn keepalive(&mut self) -> Vec<SseFrame> {
                <$type>::keepalive(self)
            }
            $($($hooks)*)?
        }
    };
}

stream_encoder!(openai_chat::ChunkEncoder);

stream_encoder! {
    anthropic::MessageStreamEncoder;
    fn compacted(&mut self, compacted: Compacted) -> Vec<SseFrame> {
        Self::compacted(self, &compacted.summary, &compacted.usage)
    }
}

stream_encoder! {
    openai_responses::ResponseStreamEncoder;
    // It may fail an answer itself (a compaction without a summary).
    fn take_failure(&mut self) -> Option<LlmError> {
        Self::take_failure(self)
    }
    fn compacted(&mut self, compacted: Compacted) -> Vec<SseFrame> {
        let item = openai_responses::compaction_item_for(&compacted.summary);
        Self::compacted(self, item, &compacted.usage)
    }
}

/// What differs between the chat protocols.
trait ChatProtocol {
    /// The route, for metrics and the ledger.
    const ENDPOINT: &'static str;
    /// The error shape.
    const PROTOCOL: Protocol;
    /// The request body.
    type Wire: DeserializeOwned;
    /// What the request asks of delivery (`stream`…) and of the answer's
    /// encoding (the Responses API's freeform tools).
    type Options;
    /// The complete answer's body.
    type Response: Serialize;
    /// The streamed answer's encoder.
    type Encoder: StreamEncoder;

    fn decode(wire: Self::Wire) -> Result<(ChatRequest, Self::Options), DecodeError>;
    fn streams(options: &Self::Options) -> bool;
    /// The answer's body; an error when the answer cannot be what the
    /// request asked for (a compaction without a summary).
    fn encode(
        response: &ChatResponse,
        model: &str,
        options: &Self::Options,
    ) -> Result<Self::Response, LlmError>;
    /// `input_estimate`: the request's input tokens, estimated as its
    /// first target gets it, for a protocol that reports them before the
    /// provider does.
    fn encoder(model: &str, options: Self::Options, input_estimate: u64) -> Self::Encoder;
    /// The compaction the request asked for before it is answered, once
    /// its conversation reaches a threshold ([`server_compaction`]).
    fn compaction(_options: &Self::Options) -> Option<Plan> {
        None
    }
    /// Whether the answer's usage counts a compaction run before it (else
    /// the protocol reports the compaction's apart).
    const USAGE_COUNTS_COMPACTION: bool = true;
    /// Puts a compaction run before the answer first in it.
    fn put_compaction_first(_response: &mut Self::Response, _compacted: &Compacted) {}
    /// The answer to a request that asked for the compaction alone.
    fn compaction_alone(
        _compacted: &Compacted,
        _model: &str,
        _options: &Self::Options,
    ) -> Option<Self::Response> {
        None
    }
}

struct ChatCompletions;

impl ChatProtocol for ChatCompletions {
    const ENDPOINT: &'static str = "/v1/chat/completions";
    const PROTOCOL: Protocol = Protocol::OpenAi;
    type Wire = openai_chat::CompletionRequest;
    type Options = openai_chat::ServeOptions;
    type Response = openai_chat::CompletionResponse;
    type Encoder = openai_chat::ChunkEncoder;

    fn decode(wire: Self::Wire) -> Result<(ChatRequest, Self::Options), DecodeError> {
        openai_chat::decode_request(wire)
    }
    fn streams(options: &Self::Options) -> bool {
        options.stream
    }
    fn encode(
        response: &ChatResponse,
        model: &str,
        _: &Self::Options,
    ) -> Result<Self::Response, LlmError> {
        Ok(openai_chat::encode_response(response, model))
    }
    fn encoder(model: &str, options: Self::Options, _: u64) -> Self::Encoder {
        openai_chat::ChunkEncoder::new(model, None, options.include_usage)
    }
}

struct Messages;

impl ChatProtocol for Messages {
    const ENDPOINT: &'static str = "/v1/messages";
    const PROTOCOL: Protocol = Protocol::Anthropic;
    type Wire = anthropic::MessagesRequest;
    type Options = anthropic::ServeOptions;
    type Response = anthropic::MessagesResponse;
    type Encoder = anthropic::MessageStreamEncoder;

    fn decode(wire: Self::Wire) -> Result<(ChatRequest, Self::Options), DecodeError> {
        anthropic::decode_request(wire)
    }
    fn streams(options: &Self::Options) -> bool {
        options.stream
    }
    fn encode(
        response: &ChatResponse,
        model: &str,
        options: &Self::Options,
    ) -> Result<Self::Response, LlmError> {
        Ok(anthropic::encode_response_for(response, model, options))
    }
    fn encoder(model: &str, options: Self::Options, input_estimate: u64) -> Self::Encoder {
        // message_start goes out before the provider reports usage: it
        // carries the estimate, and message_delta the real count.
        let mut encoder = anthropic::MessageStreamEncoder::new(model, None, input_estimate);
        if options.context_management {
            encoder = encoder.reporting_context_edits();
        }
        if options
            .compaction
            .is_some_and(|compaction| compaction.pause_after_compaction)
        {
            encoder = encoder.pausing_after_compaction();
        }
        encoder
    }
    fn compaction(options: &Self::Options) -> Option<Plan> {
        options.compaction.clone().map(Plan::Messages)
    }
    const USAGE_COUNTS_COMPACTION: bool = false;
    fn put_compaction_first(response: &mut Self::Response, compacted: &Compacted) {
        anthropic::put_compaction_first(response, &compacted.summary, &compacted.usage);
    }
    fn compaction_alone(
        compacted: &Compacted,
        model: &str,
        options: &Self::Options,
    ) -> Option<Self::Response> {
        Some(anthropic::encode_compaction_alone(
            &compacted.summary,
            &compacted.usage,
            model,
            options.context_management,
        ))
    }
}

struct Responses;

impl ChatProtocol for Responses {
    const ENDPOINT: &'static str = "/v1/responses";
    const PROTOCOL: Protocol = Protocol::OpenAi;
    type Wire = openai_responses::ResponsesRequest;
    type Options = openai_responses::ServeOptions;
    type Response = openai_responses::ResponseObject;
    type Encoder = openai_responses::ResponseStreamEncoder;

    fn decode(wire: Self::Wire) -> Result<(ChatRequest, Self::Options), DecodeError> {
        openai_responses::decode_request(wire)
    }
    fn streams(options: &Self::Options) -> bool {
        options.stream
    }
    fn encode(
        response: &ChatResponse,
        model: &str,
        options: &Self::Options,
    ) -> Result<Self::Response, LlmError> {
        if options.compaction {
            openai_responses::encode_compaction(response, model)
        } else {
            Ok(openai_responses::encode_response_for(
                response, model, options,
            ))
        }
    }
    fn encoder(model: &str, options: Self::Options, _: u64) -> Self::Encoder {
        openai_responses::ResponseStreamEncoder::new(model, None)
            .with_freeform_tools(options.freeform_tools)
            .with_namespaced_tools(options.namespaced_tools)
            .with_tool_search(options.tool_search)
            .with_compaction(options.compaction)
    }
    fn compaction(options: &Self::Options) -> Option<Plan> {
        options.compact_threshold.map(Plan::Responses)
    }
    fn put_compaction_first(response: &mut Self::Response, compacted: &Compacted) {
        server_compaction::put_first(response, compacted);
    }
}

/// `POST /v1/responses/compact`: a Responses request's conversation,
/// answered with its user messages and one `compaction` item, never
/// streamed.
struct ResponsesCompact;

impl ChatProtocol for ResponsesCompact {
    const ENDPOINT: &'static str = "/v1/responses/compact";
    const PROTOCOL: Protocol = Protocol::OpenAi;
    type Wire = openai_responses::ResponsesRequest;
    type Options = CompactOptions;
    type Response = openai_responses::ResponseObject;
    type Encoder = openai_responses::ResponseStreamEncoder;

    fn decode(wire: Self::Wire) -> Result<(ChatRequest, Self::Options), DecodeError> {
        let (request, serve, kept) = openai_responses::decode_compact_request(wire)?;
        Ok((request, CompactOptions { serve, kept }))
    }
    fn streams(_: &Self::Options) -> bool {
        false
    }
    fn encode(
        response: &ChatResponse,
        model: &str,
        options: &Self::Options,
    ) -> Result<Self::Response, LlmError> {
        openai_responses::encode_compacted(response, model, options.kept.clone())
    }
    fn encoder(model: &str, options: Self::Options, input_estimate: u64) -> Self::Encoder {
        Responses::encoder(model, options.serve, input_estimate)
    }
}

/// What a `/v1/responses/compact` request asks of its answer.
struct CompactOptions {
    /// As a Responses request's (a compaction).
    serve: openai_responses::ServeOptions,
    /// The items the answer keeps before its compaction item.
    kept: Vec<openai_responses::Item>,
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<ChatCompletions>(gateway, arrival, headers, body).await
}

/// `POST /v1/messages` (also with `?beta=true`, as Claude Code sends it).
pub(crate) async fn messages(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<Messages>(gateway, arrival, headers, body).await
}

/// `POST /v1/responses`.
pub(crate) async fn responses(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<Responses>(gateway, arrival, headers, body).await
}

/// `POST /v1/responses/compact`.
pub(crate) async fn responses_compact(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<ResponsesCompact>(gateway, arrival, headers, body).await
}

/// `POST /v1/messages/count_tokens`: the request's input tokens, counted
/// by the provider that would answer it where it can, estimated otherwise
/// (see [`crate::chat::count_input_tokens`]). The `x-freehold-token-count`
/// header says which: `tokenizer` or `estimate`.
pub(crate) async fn count_tokens(
    State(gateway): State<Arc<Gateway>>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ENDPOINT: &str = "/v1/messages/count_tokens";
    let protocol = Protocol::Anthropic;
    let caller = match authenticate(&gateway, &headers, ENDPOINT).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(protocol),
    };
    let decoded = async {
        let body = read_body(body, &gateway.settings).await?;
        let mut value: serde_json::Value = parse_body(&headers, &body)?;
        // The counting request has no max_tokens; the Messages type needs
        // one, so a placeholder goes in, and out again once decoded: a
        // provider must count the request as it would be sent without a
        // limit (a small one turns Anthropic's thinking off).
        let mut placeholder = false;
        if let Some(object) = value.as_object_mut()
            && !object.contains_key("max_tokens")
        {
            object.insert("max_tokens".into(), serde_json::Value::from(1));
            placeholder = true;
        }
        let wire: anthropic::MessagesRequest = serde_json::from_value(value)
            .map_err(|error| GatewayError::bad_request(format!("invalid request body: {error}")))?;
        let (mut request, _) = anthropic::decode_request(wire).map_err(decode_error)?;
        if placeholder {
            request.max_tokens = None;
        }
        Ok::<_, GatewayError>(request)
    }
    .await;
    let mut request = match decoded {
        Ok(request) => request,
        Err(error) => {
            Accounting::new(&gateway, caller, ENDPOINT, "", &arrival).fail(&error);
            return error.into_response(protocol);
        }
    };
    forward_anthropic_headers(&headers, &mut request);
    match count_input_tokens(&gateway, &headers, caller, ENDPOINT, request, &arrival).await {
        Ok(count) => {
            let source = if count.exact { "tokenizer" } else { "estimate" };
            (
                [("x-freehold-token-count", source)],
                Json(anthropic::CountTokensResponse {
                    input_tokens: count.input_tokens,
                    context_management: count.original_input_tokens.map(|original_input_tokens| {
                        anthropic::CountedBeforeEdits {
                            original_input_tokens,
                        }
                    }),
                }),
            )
                .into_response()
        }
        Err(error) => error.into_response(protocol),
    }
}

/// Copies the Anthropic headers a client sent (`anthropic-version`,
/// `anthropic-beta`) onto its request, so that they reach Anthropic
/// upstreams (other providers ignore them): beta features are asked for
/// that way.
fn forward_anthropic_headers(headers: &HeaderMap, request: &mut ChatRequest) {
    for name in ["anthropic-version", "anthropic-beta"] {
        for value in headers.get_all(name) {
            if let Ok(value) = value.to_str() {
                request
                    .forwarded_headers
                    .push((name.to_owned(), value.to_owned()));
            }
        }
    }
}

fn decode_error(error: DecodeError) -> GatewayError {
    GatewayError::bad_request(error.to_string())
}

/// The whole path of one chat request in protocol `P`.
async fn serve<P: ChatProtocol>(
    gateway: Arc<Gateway>,
    arrival: Arrival,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Authenticate before reading the body: an unauthenticated client
    // cannot make the gateway parse megabytes.
    let caller = match authenticate(&gateway, &headers, P::ENDPOINT).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(P::PROTOCOL),
    };
    let decoded = async {
        let body = read_body(body, &gateway.settings).await?;
        let wire: P::Wire = parse_body(&headers, &body)?;
        let (request, options) = P::decode(wire).map_err(decode_error)?;
        Ok::<_, GatewayError>((request, options, body))
    }
    .await;
    let (mut request, options, body) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            // A key's malformed requests are in its ledger too.
            Accounting::new(&gateway, caller, P::ENDPOINT, "", &arrival).fail(&error);
            return error.into_response(P::PROTOCOL);
        }
    };
    if P::PROTOCOL == Protocol::Anthropic {
        forward_anthropic_headers(&headers, &mut request);
    }
    let model = request.model.clone();
    // A conversation to compact first. Boxed, so that the futures of
    // every other request do not grow by its size.
    if let Some(plan) = P::compaction(&options)
        && server_compaction::due(&request, &plan)
    {
        let compacted = compact_then_answer::<P>(
            &gateway, &headers, caller, request, plan, options, &body, &arrival,
        );
        return Box::pin(compacted).await;
    }
    let mut admitted = match admit(&gateway, &headers, caller, P::ENDPOINT, request, &arrival).await
    {
        Ok(admitted) => admitted,
        Err(error) => return error.into_response(P::PROTOCOL),
    };
    admitted.accounting.log_body(&body);
    if P::streams(&options) {
        let encoder = P::encoder(&model, options, admitted.input_estimate());
        let keepalive = gateway.settings.stream_keepalive();
        // The status line waits for the provider's first event, so that a
        // request failing at once (a prompt over the context window) gets
        // its real status and the protocol's error body, which SDKs turn
        // into their own exception types; later failures can only be
        // error events in the stream. It waits one keepalive interval at
        // most: a provider still silent then (a local model reading a long
        // prompt) gets the answer begun, so that clients which give up on
        // silent streams keep waiting.
        streamed(
            P::PROTOCOL,
            Box::pin(open_stream(admitted)),
            encoder,
            keepalive,
        )
        .await
    } else {
        match admitted.complete().await {
            Ok((response, accounting)) => {
                whole::<P>(&gateway, response, accounting, &model, &options, None)
            }
            Err(error) => error.into_response(P::PROTOCOL),
        }
    }
}

/// The streamed answer's response, `opening` the provider's stream being
/// opened: the status line waits for its first event, one keepalive
/// interval at most (see [`serve`]).
async fn streamed<E: StreamEncoder>(
    protocol: Protocol,
    mut opening: Pin<Box<dyn Future<Output = Result<Opened, GatewayError>> + Send>>,
    encoder: E,
    keepalive: Option<std::time::Duration>,
) -> Response {
    let waited = match keepalive {
        Some(every) => tokio::time::timeout(every, &mut opening).await.ok(),
        None => Some((&mut opening).await),
    };
    match waited {
        Some(Err(error)) => error.into_response(protocol),
        Some(Ok(opened)) => sse_response(Upstream::Open(opened), encoder, keepalive, false),
        None => sse_response(Upstream::Opening(opening), encoder, keepalive, true),
    }
}

/// A whole answer's response (`compacted`: the compaction run before it,
/// put first).
fn whole<P: ChatProtocol>(
    gateway: &Gateway,
    mut response: ChatResponse,
    mut accounting: Accounting,
    model: &str,
    options: &P::Options,
    compacted: Option<Compacted>,
) -> Response {
    // The client is told what both calls used (in the answer's usage, or
    // apart); each call's ledger line has its own.
    if let Some(compacted) = &compacted
        && P::USAGE_COUNTS_COMPACTION
    {
        response.usage.add(&compacted.usage);
    }
    let mut encoded = match P::encode(&response, model, options) {
        Ok(encoded) => encoded,
        Err(error) => {
            tracing::warn!(%error, "the provider's answer could not be sent");
            let error = GatewayError::upstream(&error);
            accounting.fail(&error);
            return error.into_response(P::PROTOCOL);
        }
    };
    if let Some(compacted) = &compacted {
        P::put_compaction_first(&mut encoded, compacted);
    }
    send_whole(gateway, accounting, encoded)
}

/// Sends a whole answer, its body logged first when the gateway logs
/// bodies, and ends its request's accounting.
fn send_whole(gateway: &Gateway, mut accounting: Accounting, encoded: impl Serialize) -> Response {
    if gateway.settings.log_bodies
        && let Ok(text) = serde_json::to_string(&encoded)
    {
        accounting.log_body(text.as_bytes());
    }
    accounting.succeed();
    (StatusCode::OK, Json(encoded)).into_response()
}

/// Answers with the compaction alone, as a request that asked only for it
/// is answered whole; `accounting` is the summary's call's, still open,
/// which logs the answer (with `log_bodies`) and ends.
fn compaction_alone<P: ChatProtocol>(
    gateway: &Gateway,
    mut accounting: Accounting,
    compacted: &Compacted,
    model: &str,
    options: &P::Options,
) -> Response {
    let Some(encoded) = P::compaction_alone(compacted, model, options) else {
        let error = GatewayError::upstream(&LlmError::new(
            ErrorKind::Server,
            "gateway",
            "this protocol has no answer made of a compaction alone",
        ));
        accounting.fail(&error);
        return error.into_response(P::PROTOCOL);
    };
    send_whole(gateway, accounting, encoded)
}

/// Answers a request whose conversation is compacted first (see
/// [`server_compaction`]): the summary's call is admitted at once, so that
/// a refusal gets its own status; then it runs, and the answer's call
/// after it, whole or streamed. Streamed, the compaction runs while the
/// stream is opened, so that the client gets keepalives while the model
/// writes the summary.
#[expect(
    clippy::too_many_arguments,
    reason = "the request and its context, as `serve` holds them"
)]
async fn compact_then_answer<P: ChatProtocol>(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: crate::auth::Caller,
    request: ChatRequest,
    plan: Plan,
    options: P::Options,
    body: &Bytes,
    arrival: &Arrival,
) -> Response {
    let model = request.model.clone();
    let model = model.as_str();
    let pending = match Pending::admit(
        gateway,
        headers,
        caller,
        P::ENDPOINT,
        request,
        plan,
        body,
        arrival,
    )
    .await
    {
        Ok(pending) => pending,
        Err(error) => return error.into_response(P::PROTOCOL),
    };
    if P::streams(&options) {
        let body = body.clone();
        let opening = async move {
            let (then, compacted) = pending.run().await?;
            let mut opened = match then {
                Then::Answer(mut admitted) => {
                    admitted.accounting.log_body(&body);
                    open_stream(admitted).await?
                }
                // The compaction alone: the stream ends after it. (A
                // streamed answer's body is not logged.)
                Then::Alone(mut accounting) => {
                    accounting.succeed();
                    Opened {
                        first: VecDeque::new(),
                        stream: None,
                        compacted: None,
                    }
                }
            };
            opened.compacted = Some(compacted);
            Ok(opened)
        };
        // The answer's estimate is not known before the summary is
        // written: Responses streams do not report one.
        let encoder = P::encoder(model, options, 0);
        streamed(
            P::PROTOCOL,
            Box::pin(opening),
            encoder,
            gateway.settings.stream_keepalive(),
        )
        .await
    } else {
        let (then, compacted) = match pending.run().await {
            Ok(ran) => ran,
            Err(error) => return error.into_response(P::PROTOCOL),
        };
        let mut admitted = match then {
            Then::Answer(admitted) => admitted,
            Then::Alone(accounting) => {
                return compaction_alone::<P>(gateway, accounting, &compacted, model, &options);
            }
        };
        admitted.accounting.log_body(body);
        match admitted.complete().await {
            Ok((response, accounting)) => whole::<P>(
                gateway,
                response,
                accounting,
                model,
                &options,
                Some(compacted),
            ),
            Err(error) => error.into_response(P::PROTOCOL),
        }
    }
}

/// A provider's open stream and the events read from it so far.
struct Opened {
    /// Its opening (`Start`) and its first event of the answer itself (none
    /// when it ended without one, and has nothing more to give), not yet
    /// encoded.
    first: VecDeque<StreamEvent>,
    /// `None` when there is no answer to stream: the compaction alone.
    stream: Option<AccountedStream>,
    /// A compaction run before the answer, not yet encoded.
    compacted: Option<Compacted>,
}

/// Opens the provider's stream and waits for the first event of the answer
/// itself; a failure before that is the error. The provider's opening
/// (Anthropic's `message_start`, a Responses `response.created`, and the
/// usage they may carry) does not count: a provider that opens and then refuses (overloaded, say) has
/// answered nothing, and the client gets the refusal's own status.
async fn open_stream(admitted: Admitted) -> Result<Opened, GatewayError> {
    let mut stream = admitted.stream().await?;
    let mut read = VecDeque::new();
    loop {
        match stream.next().await {
            Some(Err(error)) => return Err(error),
            Some(Ok(event)) => {
                let opening = matches!(
                    event,
                    StreamEvent::Start { .. } | StreamEvent::UsageSoFar(_)
                );
                read.push_back(event);
                if !opening {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(Opened {
        first: read,
        stream: Some(stream),
        compacted: None,
    })
}

/// Where a streamed answer's events come from.
#[expect(
    clippy::large_enum_variant,
    reason = "one per streamed answer, kept in its body's state; boxing the open stream \
              would cost every stream an allocation"
)]
enum Upstream {
    /// The provider has sent nothing yet.
    Opening(Pin<Box<dyn Future<Output = Result<Opened, GatewayError>> + Send>>),
    /// Its stream is open.
    Open(Opened),
}

impl Upstream {
    /// Records the answer as failed (the stream then ends): the encoder
    /// could not send what the provider answered.
    fn fail(&mut self, error: &GatewayError) {
        if let Self::Open(Opened {
            stream: Some(stream),
            ..
        }) = self
        {
            stream.fail(error);
        }
    }

    /// The compaction run before the answer, once, when the stream is
    /// open.
    fn take_compacted(&mut self) -> Option<Compacted> {
        match self {
            Self::Open(opened) => opened.compacted.take(),
            Self::Opening(_) => None,
        }
    }

    /// The next event, or `Err(Silent)` when `deadline` passes first.
    async fn next(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Result<StreamEvent, GatewayError>>, Silent> {
        loop {
            match self {
                Self::Opening(opening) => match until(deadline, opening.as_mut()).await? {
                    Ok(opened) => *self = Self::Open(opened),
                    Err(error) => return Ok(Some(Err(error))),
                },
                Self::Open(Opened { first, stream, .. }) => {
                    if let Some(first) = first.pop_front() {
                        return Ok(Some(Ok(first)));
                    }
                    return match stream {
                        Some(stream) => until(deadline, stream.next()).await,
                        None => Ok(None),
                    };
                }
            }
        }
    }
}

/// Nothing came before the keepalive deadline.
struct Silent;

/// `future`'s output, or `Err(Silent)` if `deadline` passes first. Both
/// futures it is given are cancel-safe: dropping them loses no event.
async fn until<T>(
    deadline: Option<tokio::time::Instant>,
    future: impl Future<Output = T>,
) -> Result<T, Silent> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| Silent),
        None => Ok(future.await),
    }
}

/// A `text/event-stream` response: each provider event encoded as it
/// arrives; an error mid-stream becomes the protocol's error event. When
/// nothing has gone out for `keepalive`, the encoder's keepalive does
/// (which begins the answer if the provider has not); `silent` says the
/// client has already waited that long, so one goes out first.
fn sse_response<E: StreamEncoder>(
    upstream: Upstream,
    encoder: E,
    keepalive: Option<std::time::Duration>,
    silent: bool,
) -> Response {
    let state = Some((upstream, encoder, silent));
    let body = futures::stream::unfold(state, move |state| async move {
        let (mut upstream, mut encoder, mut silent) = state?;
        // Measured from when the last piece went out (this closure runs
        // when the body asks for the next one), across events that encode
        // to nothing.
        let next_deadline = || keepalive.map(|every| tokio::time::Instant::now() + every);
        let mut deadline = next_deadline();
        loop {
            let next = match std::mem::take(&mut silent) {
                true => Err(Silent),
                false => upstream.next(deadline).await,
            };
            let (frames, more) = match next {
                Err(Silent) => {
                    // Nothing to keep alive once the answer ended (the
                    // provider may still send its usage): wait on.
                    deadline = next_deadline();
                    (encoder.keepalive(), true)
                }
                Ok(Some(Ok(event))) => (
                    compaction_first(&mut upstream, &mut encoder, |encoder| encoder.push(&event)),
                    true,
                ),
                Ok(Some(Err(error))) => (encoder.error(&stream_error(&error)), false),
                Ok(None) => (
                    compaction_first(&mut upstream, &mut encoder, E::finish),
                    false,
                ),
            };
            if let Some(error) = encoder.take_failure() {
                tracing::warn!(%error, "the provider's answer could not be sent");
                upstream.fail(&GatewayError::upstream(&error));
            }
            if frames.is_empty() && more {
                continue;
            }
            let mut text = Vec::with_capacity(256 * frames.len());
            for frame in &frames {
                frame.write_sse(&mut text);
            }
            let next = more.then_some((upstream, encoder, false));
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(text)), next));
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must pass events on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `frames`, after the compaction run before the answer when the stream it
/// was run for has just opened (its first event, or its end).
fn compaction_first<E: StreamEncoder>(
    upstream: &mut Upstream,
    encoder: &mut E,
    frames: impl FnOnce(&mut E) -> Vec<SseFrame>,
) -> Vec<SseFrame> {
    match upstream.take_compacted() {
        Some(compacted) => {
            let mut first = encoder.compacted(compacted);
            first.extend(frames(encoder));
            first
        }
        None => frames(encoder),
    }
}

/// The error an encoder writes into a stream, from the sanitised one.
/// A full context window keeps its kind, so that the client's SDK sees
/// `context_length_exceeded` (Codex compacts its history on it rather than
/// retrying).
fn stream_error(error: &GatewayError) -> LlmError {
    let kind = match error.status.as_u16() {
        _ if error.openai_code() == Some("context_length_exceeded") => {
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None,
            }
        }
        400 | 413 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::RateLimited {
            retry_after: error.retry_after,
        },
        503 => ErrorKind::Overloaded,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::Server,
    };
    LlmError::new(kind, "gateway", error.message.clone()).with_status(error.status.as_u16())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// An encoder whose answer has ended: keepalives send nothing (and are
    /// counted), an error is one comment.
    #[derive(Default)]
    struct Ended {
        keepalives: Arc<AtomicUsize>,
    }

    impl StreamEncoder for Ended {
        fn push(&mut self, _: &StreamEvent) -> Vec<SseFrame> {
            Vec::new()
        }
        fn finish(&mut self) -> Vec<SseFrame> {
            Vec::new()
        }
        fn error(&mut self, _: &LlmError) -> Vec<SseFrame> {
            vec![SseFrame::comment("error")]
        }
        fn keepalive(&mut self) -> Vec<SseFrame> {
            self.keepalives.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        }
    }

    /// A provider that goes quiet after the answer ended (before its usage,
    /// say) is waited on one interval at a time, not polled in a loop. (In
    /// real time: with the clock paused, a spinning loop would hang the
    /// test instead of failing it.)
    #[tokio::test]
    async fn a_quiet_provider_after_the_end_is_waited_on_not_spun_on() {
        let late = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Err(GatewayError::bad_request("late"))
        });
        let encoder = Ended::default();
        let keepalives = Arc::clone(&encoder.keepalives);
        let response = sse_response(
            Upstream::Opening(late),
            encoder,
            Some(Duration::from_millis(100)),
            false,
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], b": error\n\n");
        // One every 100 ms of the 600, or fewer if the machine stalls,
        // where a spinning loop makes millions.
        let keepalives = keepalives.load(Ordering::Relaxed);
        assert!(keepalives <= 8, "{keepalives}");
    }

    #[test]
    fn a_full_context_window_keeps_its_kind_in_a_stream() {
        let upstream = LlmError::new(
            ErrorKind::ContextLengthExceeded {
                needed: Some(300_000),
                allowed: Some(272_000),
            },
            "vllm",
            "too long",
        );
        let sent = stream_error(&GatewayError::upstream(&upstream));
        assert!(
            matches!(sent.kind, ErrorKind::ContextLengthExceeded { .. }),
            "{sent:?}"
        );
        assert!(
            sent.message.contains("300000 tokens > 272000"),
            "{}",
            sent.message
        );
        // Others still follow their status.
        let sent = stream_error(&GatewayError::bad_request("no"));
        assert_eq!(sent.kind, ErrorKind::InvalidRequest);
    }
}
