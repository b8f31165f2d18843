//! The chat endpoints: `/v1/chat/completions`, `/v1/responses` (OpenAI)
//! and `/v1/messages` (Anthropic). Each protocol only decodes its request
//! and encodes the answer; everything between is [`crate::chat`].

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freehold_llm::wire::serve::{DecodeError, SseFrame};
use freehold_llm::wire::{anthropic, openai_chat, openai_responses};
use freehold_protocol::{ChatRequest, ChatResponse, ErrorKind, LlmError, StreamEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chat::{
    AccountedStream, Accounting, admit, authenticate, count_input_tokens, parse_body,
};
use crate::error::{GatewayError, Protocol};
use crate::routes::read_body;
use crate::state::Gateway;

/// A stream encoder of one protocol.
trait StreamEncoder: Send + 'static {
    fn push(&mut self, event: &StreamEvent) -> Vec<SseFrame>;
    fn finish(&mut self) -> Vec<SseFrame>;
    fn error(&mut self, error: &LlmError) -> Vec<SseFrame>;
}

macro_rules! stream_encoder {
    ($type:ty) => {
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
        }
    };
}

stream_encoder!(openai_chat::ChunkEncoder);
stream_encoder!(anthropic::MessageStreamEncoder);
stream_encoder!(openai_responses::ResponseStreamEncoder);

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
    fn encode(response: &ChatResponse, model: &str, options: &Self::Options) -> Self::Response;
    fn encoder(model: &str, options: Self::Options, request: &ChatRequest) -> Self::Encoder;
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
    fn encode(response: &ChatResponse, model: &str, _: &Self::Options) -> Self::Response {
        openai_chat::encode_response(response, model)
    }
    fn encoder(model: &str, options: Self::Options, _: &ChatRequest) -> Self::Encoder {
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
    fn encode(response: &ChatResponse, model: &str, _: &Self::Options) -> Self::Response {
        anthropic::encode_response(response, model)
    }
    fn encoder(model: &str, _: Self::Options, request: &ChatRequest) -> Self::Encoder {
        // message_start goes out before the provider reports usage: it
        // carries the estimate, and message_delta the real count.
        anthropic::MessageStreamEncoder::new(model, None, request.estimated_input_tokens())
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
    fn encode(response: &ChatResponse, model: &str, options: &Self::Options) -> Self::Response {
        openai_responses::encode_response_for(response, model, options)
    }
    fn encoder(model: &str, options: Self::Options, _: &ChatRequest) -> Self::Encoder {
        openai_responses::ResponseStreamEncoder::new(model, None)
            .with_freeform_tools(options.freeform_tools)
            .with_namespaced_tools(options.namespaced_tools)
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<ChatCompletions>(gateway, headers, body).await
}

/// `POST /v1/messages` (also with `?beta=true`, as Claude Code sends it).
pub(crate) async fn messages(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<Messages>(gateway, headers, body).await
}

/// `POST /v1/responses`.
pub(crate) async fn responses(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::<Responses>(gateway, headers, body).await
}

/// `POST /v1/messages/count_tokens`: the request's input tokens, counted
/// by the provider that would answer it where it can, estimated otherwise
/// (see [`crate::chat::count_input_tokens`]). The `x-freehold-token-count`
/// header says which: `tokenizer` or `estimate`.
pub(crate) async fn count_tokens(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const ENDPOINT: &str = "/v1/messages/count_tokens";
    let started = Instant::now();
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
            Accounting::new(&gateway, caller, ENDPOINT, "", started).fail(&error);
            return error.into_response(protocol);
        }
    };
    forward_anthropic_headers(&headers, &mut request);
    match count_input_tokens(&gateway, &headers, caller, ENDPOINT, request, started).await {
        Ok(count) => {
            let source = if count.exact { "tokenizer" } else { "estimate" };
            (
                [("x-freehold-token-count", source)],
                Json(anthropic::CountTokensResponse {
                    input_tokens: count.input_tokens,
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
async fn serve<P: ChatProtocol>(gateway: Arc<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
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
            Accounting::new(&gateway, caller, P::ENDPOINT, "", started).fail(&error);
            return error.into_response(P::PROTOCOL);
        }
    };
    if P::PROTOCOL == Protocol::Anthropic {
        forward_anthropic_headers(&headers, &mut request);
    }
    let model = request.model.clone();
    let mut admitted = match admit(&gateway, &headers, caller, P::ENDPOINT, request, started).await
    {
        Ok(admitted) => admitted,
        Err(error) => return error.into_response(P::PROTOCOL),
    };
    admitted
        .accounting
        .log_body(&String::from_utf8_lossy(&body));
    if P::streams(&options) {
        let encoder = P::encoder(&model, options, &admitted.request);
        let mut stream = match admitted.stream().await {
            Ok(stream) => stream,
            Err(error) => return error.into_response(P::PROTOCOL),
        };
        // The status line waits for the provider's first event, so that a
        // request failing at once (a prompt over the context window) gets
        // its real status and the protocol's error body, which SDKs turn
        // into their own exception types; later failures can only be
        // error events in the stream.
        match stream.next().await {
            Some(Err(error)) => error.into_response(P::PROTOCOL),
            first => sse_response(first, stream, encoder),
        }
    } else {
        match admitted.complete().await {
            Ok((response, mut accounting)) => {
                let encoded = P::encode(&response, &model, &options);
                if gateway.settings.log_bodies
                    && let Ok(text) = serde_json::to_string(&encoded)
                {
                    accounting.log_body(&text);
                }
                accounting.succeed();
                (StatusCode::OK, Json(encoded)).into_response()
            }
            Err(error) => error.into_response(P::PROTOCOL),
        }
    }
}

/// A `text/event-stream` response: each provider event encoded as it
/// arrives; an error mid-stream becomes the protocol's error event.
fn sse_response<E: StreamEncoder>(
    first: Option<Result<StreamEvent, GatewayError>>,
    stream: AccountedStream,
    encoder: E,
) -> Response {
    let state = Some((first, stream, encoder));
    let body = futures::stream::unfold(state, |state| async move {
        let (mut first, mut stream, mut encoder) = state?;
        loop {
            let next = match first.take() {
                Some(event) => Some(event),
                None => stream.next().await,
            };
            let (frames, more) = match next {
                Some(Ok(event)) => (encoder.push(&event), true),
                Some(Err(error)) => (encoder.error(&stream_error(&error)), false),
                None => (encoder.finish(), false),
            };
            if frames.is_empty() && more {
                continue;
            }
            let mut text = Vec::with_capacity(256 * frames.len());
            for frame in &frames {
                frame.write_sse(&mut text);
            }
            let next = more.then_some((None, stream, encoder));
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
        400 => ErrorKind::InvalidRequest,
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
    use super::*;

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
