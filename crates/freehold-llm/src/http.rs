//! The HTTP transport every client shares: retries, idle timeouts, status
//! mapping into [`ErrorKind`]s and key redaction, over two HTTP clients:
//! reqwest for `https://` (and for everything when a proxy is set), and
//! [`crate::inline`] for plain `http://` servers.
//!
//! There is deliberately no total deadline on a request: a local model may
//! spend minutes reading a long prompt before its first token. What is bounded
//! is *silence*: no bytes for [`HttpSettings::idle_timeout`] ends the request
//! with [`ErrorKind::Timeout`].

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use freehold_protocol::{ErrorKind, LlmError};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::inline::{InlineBody, InlineClient, InlineError};
use crate::ndjson::NdjsonDecoder;
use crate::retry::RetryPolicy;
use crate::secret::{ApiKey, redact_all};
use crate::sse::{SseDecoder, SseEvent};

tokio::task_local! {
    /// Set by the router around a call to a target that has another after
    /// it in a fallback chain.
    pub(crate) static FALLBACK_FOLLOWS: bool;
}

/// Whether the request being sent has a fallback after it: failures then
/// go back at once, for the router to try the next target, instead of
/// being retried here with backoff (as a replica set's replicas do).
pub(crate) fn fallback_follows() -> bool {
    FALLBACK_FOLLOWS
        .try_with(|follows| *follows)
        .unwrap_or(false)
}

/// Timeouts and retries of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long the server may stay silent: before the response headers,
    /// and between any two chunks of the body.
    pub idle_timeout: Duration,
    /// How long a non-streamed request may take to answer: such servers
    /// send nothing until the whole answer is generated, so silence there is
    /// expected and only this bounds it.
    pub response_timeout: Duration,
    /// Retries of failed requests, before any byte of the answer was read.
    pub retry: RetryPolicy,
    /// Connect straight to the server, never through a proxy the
    /// environment names (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`): set
    /// for providers counted as local, so that a request the privacy
    /// policy keeps on this machine or its private network does not cross
    /// a proxy that may be elsewhere.
    pub direct: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            response_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            direct: false,
        }
    }
}

/// The most bytes of an error body read (the message is near the start).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The most bytes of a non-streamed JSON answer.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A boxed stream of results, as the transport returns them.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, LlmError>> + Send>>;

/// A URL a request can go to: parsed already ([`reqwest::Url`]), or text
/// parsed for the call (an error then names the URL).
pub trait RequestUrl {
    /// The parsed URL.
    ///
    /// # Errors
    /// Text that is not a URL.
    fn request_url(self, transport: &Transport) -> Result<reqwest::Url, LlmError>;
}

impl RequestUrl for reqwest::Url {
    fn request_url(self, _: &Transport) -> Result<reqwest::Url, LlmError> {
        Ok(self)
    }
}

impl RequestUrl for &str {
    fn request_url(self, transport: &Transport) -> Result<reqwest::Url, LlmError> {
        reqwest::Url::parse(self).map_err(|error| {
            transport.error(
                ErrorKind::InvalidRequest,
                format!("`{self}` is not a usable URL ({error}); check the provider's base_url"),
            )
        })
    }
}

impl RequestUrl for &String {
    fn request_url(self, transport: &Transport) -> Result<reqwest::Url, LlmError> {
        self.as_str().request_url(transport)
    }
}

/// A response with a success status, its body still to be read (with
/// [`Transport::sse_stream`], [`Transport::read_json`] and the like).
#[derive(Debug)]
pub struct Response {
    url: reqwest::Url,
    headers: HeaderMap,
    body: ResponseBody,
}

impl Response {
    /// The response's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// Which HTTP client a body arrives through.
#[derive(Debug)]
enum ResponseBody {
    Reqwest(reqwest::Response),
    // Boxed: it holds the connection, several times reqwest's handle.
    Inline(Box<InlineBody>),
}

/// An HTTP client bound to one provider: it names that provider in errors and
/// redacts that provider's keys from everything it reports.
///
/// Plain `http://` requests (local engines and servers on the network) go
/// through [`InlineClient`], which drives each connection in the calling
/// task; `https://` requests, and every request when a proxy is set in the
/// environment (`HTTP_PROXY`, `ALL_PROXY`, lower case too), go through
/// reqwest, which honours the proxy.
#[derive(Clone)]
pub struct Transport {
    provider: String,
    client: reqwest::Client,
    inline: Option<InlineClient>,
    settings: HttpSettings,
    secrets: Vec<ApiKey>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("provider", &self.provider)
            .field("inline", &self.inline.is_some())
            .field("settings", &self.settings)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("freehold/", env!("CARGO_PKG_VERSION"));

/// Whether the environment names a proxy for plain HTTP, which reqwest
/// would use (and [`InlineClient`] would not).
fn proxy_for_http_in_environment() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

impl Transport {
    /// A transport for `provider`; `secrets` are the keys to redact.
    ///
    /// # Errors
    /// Fails when the TLS backend cannot be initialised.
    pub fn new(
        provider: impl Into<String>,
        settings: HttpSettings,
        secrets: Vec<ApiKey>,
    ) -> Result<Self, LlmError> {
        let mut transport = Self::through_reqwest(provider, settings, secrets)?;
        if transport.settings.direct || !proxy_for_http_in_environment() {
            transport.inline = Some(InlineClient::new(
                transport.settings.connect_timeout,
                HeaderValue::from_static(USER_AGENT),
            ));
        }
        Ok(transport)
    }

    /// A transport that sends every request through reqwest, `http://`
    /// ones too (as it does when a proxy is set for a provider that is not
    /// [`HttpSettings::direct`]).
    ///
    /// # Errors
    /// Fails when the TLS backend cannot be initialised.
    pub fn through_reqwest(
        provider: impl Into<String>,
        settings: HttpSettings,
        secrets: Vec<ApiKey>,
    ) -> Result<Self, LlmError> {
        let provider = provider.into();
        let mut builder = reqwest::Client::builder();
        if settings.direct {
            builder = builder.no_proxy();
        }
        let client = builder
            .connect_timeout(settings.connect_timeout)
            .user_agent(USER_AGENT)
            // No model API needs redirects, and following one could carry a
            // key in `x-api-key` or `x-goog-api-key` to another host (reqwest
            // strips only `Authorization` on cross-host redirects).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                LlmError::new(
                    ErrorKind::Connection,
                    provider.clone(),
                    format!("cannot build the HTTP client: {error}"),
                )
            })?;
        Ok(Self {
            provider,
            client,
            inline: None,
            settings,
            secrets,
        })
    }

    /// The provider this transport serves.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The transport's settings.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// An error of this provider, with keys redacted from the message.
    pub fn error(&self, kind: ErrorKind, message: impl AsRef<str>) -> LlmError {
        LlmError::new(kind, self.provider.clone(), self.redact(message.as_ref()))
    }

    /// The same error with this provider's keys removed from its message
    /// (for errors built from a server's own text).
    pub fn redact_error(&self, mut error: LlmError) -> LlmError {
        error.message = self.redact(&error.message);
        error
    }

    /// `text` with this provider's keys removed.
    pub fn redact(&self, text: &str) -> String {
        redact_all(text, &self.secrets)
    }

    /// POSTs a JSON body for a streamed answer, retrying retryable
    /// failures. Returns the response once its status is a success; any
    /// other status becomes an error. The wait for the response headers is
    /// bounded by the idle timeout.
    ///
    /// # Errors
    /// The mapped [`LlmError`] of the last attempt.
    pub async fn post_json(
        &self,
        url: impl RequestUrl,
        headers: &HeaderMap,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Response, LlmError> {
        self.post(url, headers, body, self.settings.idle_timeout)
            .await
    }

    /// POSTs a JSON body for an answer that comes whole (not streamed): the
    /// server is silent until the answer is generated, so the wait is
    /// bounded by [`HttpSettings::response_timeout`] instead of the idle
    /// timeout.
    ///
    /// # Errors
    /// The mapped [`LlmError`] of the last attempt.
    pub async fn post_json_whole(
        &self,
        url: impl RequestUrl,
        headers: &HeaderMap,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Response, LlmError> {
        let wait = self
            .settings
            .response_timeout
            .max(self.settings.idle_timeout);
        self.post(url, headers, body, wait).await
    }

    /// POSTs a JSON body for a model's answer: [`Self::post_json`] when it
    /// is streamed, [`Self::post_json_whole`] when it comes whole.
    ///
    /// # Errors
    /// The mapped [`LlmError`] of the last attempt.
    pub async fn post_json_answer(
        &self,
        url: impl RequestUrl,
        headers: &HeaderMap,
        body: &(impl Serialize + ?Sized),
        stream: bool,
    ) -> Result<Response, LlmError> {
        if stream {
            self.post_json(url, headers, body).await
        } else {
            self.post_json_whole(url, headers, body).await
        }
    }

    async fn post(
        &self,
        url: impl RequestUrl,
        headers: &HeaderMap,
        body: &(impl Serialize + ?Sized),
        header_wait: Duration,
    ) -> Result<Response, LlmError> {
        let url = url.request_url(self)?;
        // Straight to bytes: a body built as a `serde_json::Value` first
        // would cost a second pass over the whole request.
        let body = Bytes::from(
            serde_json::to_vec(body)
                .map_err(|error| self.error(ErrorKind::InvalidRequest, error.to_string()))?,
        );
        let mut headers = headers.clone();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request = Outgoing {
            method: reqwest::Method::POST,
            url,
            headers,
            body,
        };
        self.send_with_retries(&request, header_wait).await
    }

    /// GETs `url`, retrying retryable failures.
    ///
    /// # Errors
    /// The mapped [`LlmError`] of the last attempt.
    pub async fn get(
        &self,
        url: impl RequestUrl,
        headers: &HeaderMap,
    ) -> Result<Response, LlmError> {
        let request = Outgoing {
            method: reqwest::Method::GET,
            url: url.request_url(self)?,
            headers: headers.clone(),
            body: Bytes::new(),
        };
        self.send_with_retries(&request, self.settings.idle_timeout)
            .await
    }

    async fn send_with_retries(
        &self,
        request: &Outgoing,
        header_wait: Duration,
    ) -> Result<Response, LlmError> {
        let mut attempt = 0;
        loop {
            let error = match self.send_once(request, header_wait).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            attempt += 1;
            if fallback_follows() {
                return Err(error);
            }
            match self.settings.retry.delay(attempt, &error) {
                Some(delay) => {
                    tracing::warn!(
                        provider = %self.provider,
                        error = %error,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "retrying model request"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
        }
    }

    async fn send_once(
        &self,
        request: &Outgoing,
        header_wait: Duration,
    ) -> Result<Response, LlmError> {
        let sent = async {
            match &self.inline {
                Some(inline) if request.url.scheme() == "http" => inline
                    .send(
                        request.method.clone(),
                        &request.url,
                        &request.headers,
                        request.body.clone(),
                    )
                    .await
                    .map(|response| {
                        (
                            response.status,
                            Response {
                                url: request.url.clone(),
                                headers: response.headers,
                                body: ResponseBody::Inline(Box::new(response.body)),
                            },
                        )
                    })
                    .map_err(|error| self.inline_error(&request.url, &error)),
                _ => self
                    .client
                    .request(request.method.clone(), request.url.clone())
                    .headers(request.headers.clone())
                    .body(request.body.clone())
                    .send()
                    .await
                    .map(|mut response| {
                        (
                            response.status(),
                            Response {
                                url: request.url.clone(),
                                headers: std::mem::take(response.headers_mut()),
                                body: ResponseBody::Reqwest(response),
                            },
                        )
                    })
                    .map_err(|error| self.transport_error(&error)),
            }
        };
        let (status, response) = match tokio::time::timeout(header_wait, sent).await {
            Err(_) => {
                return Err(self.error(
                    ErrorKind::Timeout,
                    format!("no response within {} s", header_wait.as_secs_f64()),
                ));
            }
            Ok(result) => result?,
        };
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers.clone();
        let body = self
            .read_capped(response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        Err(self.status_error(status.as_u16(), &headers, &String::from_utf8_lossy(&body)))
    }

    /// Maps a failed HTTP status and its body to an error.
    pub fn status_error(&self, status: u16, headers: &HeaderMap, body: &str) -> LlmError {
        let full = self.redact(&error_message_from_body(body));
        let kind = match classify_status(status, headers, &full) {
            // Google sends the wait in the body, not in a header.
            ErrorKind::RateLimited { retry_after: None } => ErrorKind::RateLimited {
                retry_after: retry_delay_in_body(body),
            },
            kind => kind,
        };
        // A 503 or 529 may say when to come back, as a rate limit does.
        let wait = match kind {
            ErrorKind::Overloaded | ErrorKind::Server => retry_after(headers),
            _ => None,
        };
        // Classified on the whole message, kept short: a server may echo the
        // request in its error (FastAPI's 422 `detail` carries the input),
        // and the message reaches logs.
        LlmError::new(kind, self.provider.clone(), clip(&full))
            .with_status(status)
            .with_wait(wait)
    }

    /// Maps a reqwest failure (connection refused, reset, TLS…) to an error.
    pub fn transport_error(&self, error: &reqwest::Error) -> LlmError {
        let kind = if error.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
        let url = error.url().map(|url| url.as_str()).unwrap_or("the server");
        let message = if error.is_connect() {
            format!("cannot connect to {url}: {}", root_cause(error))
        } else {
            failed_request(url, error)
        };
        self.error(kind, message)
    }

    /// Maps a failure of the inline client to an error worded like
    /// [`Transport::transport_error`]'s.
    fn inline_error(&self, url: &reqwest::Url, error: &InlineError) -> LlmError {
        let (kind, message) = match error {
            InlineError::Connect(cause) => (
                ErrorKind::Connection,
                format!("cannot connect to {url}: {cause}"),
            ),
            InlineError::ConnectTimeout(_) => (
                ErrorKind::Timeout,
                format!("cannot connect to {url}: {error}"),
            ),
            InlineError::Url(_) | InlineError::Request(_) => (
                ErrorKind::InvalidRequest,
                format!("cannot send a request to {url}: {error}"),
            ),
            InlineError::Http(cause) => {
                (ErrorKind::Connection, failed_request(url.as_str(), cause))
            }
            InlineError::ClosedEarly => (
                ErrorKind::Connection,
                format!("request to {url} failed: {error}"),
            ),
        };
        self.error(kind, message)
    }

    fn idle_timeout_error(&self, doing: &str) -> LlmError {
        self.error(
            ErrorKind::Timeout,
            format!(
                "no data for {} s while {doing}",
                self.settings.idle_timeout.as_secs_f64()
            ),
        )
    }

    /// The body's bytes, each chunk awaited at most the idle timeout.
    pub fn body_stream(&self, response: Response) -> BoxStream<Bytes> {
        let transport = self.clone();
        let idle = self.settings.idle_timeout;
        let chunks: BoxStream<Bytes> = match response.body {
            ResponseBody::Reqwest(body) => {
                let transport = self.clone();
                Box::pin(
                    body.bytes_stream()
                        .map(move |chunk| chunk.map_err(|error| transport.transport_error(&error))),
                )
            }
            ResponseBody::Inline(body) => {
                let transport = self.clone();
                let url = response.url;
                Box::pin(body.map(move |chunk| {
                    chunk.map_err(|error| transport.inline_error(&url, &InlineError::Http(error)))
                }))
            }
        };
        Box::pin(futures::stream::unfold(
            (chunks, transport, false),
            move |(mut chunks, transport, done)| async move {
                if done {
                    return None;
                }
                match tokio::time::timeout(idle, chunks.next()).await {
                    Err(_) => Some((
                        Err(transport.idle_timeout_error("streaming the answer")),
                        (chunks, transport, true),
                    )),
                    Ok(None) => None,
                    Ok(Some(Ok(bytes))) => Some((Ok(bytes), (chunks, transport, false))),
                    Ok(Some(Err(error))) => Some((Err(error), (chunks, transport, true))),
                }
            },
        ))
    }

    /// Reads at most `limit` bytes of a body (under the idle timeout between
    /// chunks); a longer body is an error rather than unbounded memory.
    async fn read_capped(&self, response: Response, limit: usize) -> Result<Vec<u8>, LlmError> {
        let mut body = Vec::new();
        let mut chunks = self.body_stream(response);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > limit {
                return Err(self.error(
                    ErrorKind::Server,
                    format!("the response is larger than {limit} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads a whole JSON body (under the idle timeout between chunks, at
    /// most [`MAX_JSON_BODY_BYTES`]).
    ///
    /// # Errors
    /// A timeout, a broken connection, an oversized body, or a body that is
    /// not JSON.
    pub async fn read_json(&self, response: Response) -> Result<serde_json::Value, LlmError> {
        let body = self.read_capped(response, MAX_JSON_BODY_BYTES).await?;
        serde_json::from_slice(&body).map_err(|error| self.not_json(&body, &error))
    }

    /// Reads a JSON body straight into `T` (no `serde_json::Value` in
    /// between), as [`Transport::read_json`] reads it.
    ///
    /// # Errors
    /// As [`Transport::read_json`]; a JSON body that is not a `T` is an
    /// "unexpected response shape".
    pub async fn read_json_as<T: DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, LlmError> {
        let body = self.read_capped(response, MAX_JSON_BODY_BYTES).await?;
        serde_json::from_slice(&body).map_err(|error| {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                self.error(
                    ErrorKind::Server,
                    format!("unexpected response shape: {error}"),
                )
            } else {
                self.not_json(&body, &error)
            }
        })
    }

    fn not_json(&self, body: &[u8], error: &serde_json::Error) -> LlmError {
        let preview = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        self.error(
            ErrorKind::Server,
            format!("the response is not JSON ({error}): {preview}"),
        )
    }

    /// Runs a wire decoder over stream items (see
    /// [`crate::assemble::decode_stream`]), redacting this provider's keys
    /// from any error the stream reports: errors sent inside a stream are the
    /// server's own text and may echo a key.
    pub fn decode_stream<T, D>(
        &self,
        items: BoxStream<T>,
        decoder: D,
    ) -> crate::provider::EventStream
    where
        T: Send + 'static,
        D: crate::assemble::WireDecoder<T>,
    {
        let transport = self.clone();
        Box::pin(
            crate::assemble::decode_stream(items, decoder)
                .map(move |item| item.map_err(|error| transport.redact_error(error))),
        )
    }

    /// The body decoded as Server-Sent Events.
    pub fn sse_stream(&self, response: Response) -> BoxStream<SseEvent> {
        let mut decoder = SseDecoder::new();
        let transport = self.clone();
        let body = self.body_stream(response);
        let events = body
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .flat_map(move |chunk| {
                // A decoder past a size limit ignores its input: report its
                // error once, after the events that came before it.
                let failed = decoder.error().is_some();
                let mut events: Vec<Result<SseEvent, LlmError>> = match chunk {
                    Some(Ok(bytes)) => decoder.feed(&bytes).into_iter().map(Ok).collect(),
                    Some(Err(error)) => vec![Err(error)],
                    None => decoder.finish().into_iter().map(Ok).collect(),
                };
                if let (false, Some(error)) = (failed, decoder.error()) {
                    events.push(Err(transport.error(ErrorKind::Server, error.to_string())));
                }
                futures::stream::iter(events)
            });
        Box::pin(events)
    }

    /// The body decoded as newline-delimited JSON.
    pub fn ndjson_stream(&self, response: Response) -> BoxStream<serde_json::Value> {
        let mut decoder = NdjsonDecoder::new();
        let transport = self.clone();
        let body = self.body_stream(response);
        let values = body
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .flat_map(move |chunk| {
                let values: Vec<_> = match chunk {
                    Some(Ok(bytes)) => decoder.feed(&bytes),
                    Some(Err(error)) => return futures::stream::iter(vec![Err(error)]),
                    None => decoder.finish().into_iter().collect(),
                };
                let values: Vec<Result<serde_json::Value, LlmError>> = values
                    .into_iter()
                    .map(|value| {
                        value.map_err(|error| transport.error(ErrorKind::Server, error.to_string()))
                    })
                    .collect();
                futures::stream::iter(values)
            });
        Box::pin(values)
    }
}

/// The innermost cause of `error`: the clients' own Display omits it
/// ("connection refused"), and it is what the user needs to see.
fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut root = error;
    while let Some(cause) = root.source() {
        root = cause;
    }
    root
}

/// "request to URL failed: ERROR", with the root cause when it is another.
fn failed_request(url: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let root = root_cause(error);
    if std::ptr::addr_eq(root, error) {
        format!("request to {url} failed: {error}")
    } else {
        format!("request to {url} failed: {error}: {root}")
    }
}

/// A request as the transport sends it, once per attempt.
struct Outgoing {
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Bytes,
}

/// Builds a header map from name/value pairs, marking values that carry
/// credentials as sensitive so that they never appear in debug output.
///
/// # Errors
/// A name or value that is not valid in an HTTP header.
pub fn headers<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    provider: &str,
) -> Result<HeaderMap, LlmError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let invalid = |what: &str| {
            LlmError::new(
                ErrorKind::InvalidRequest,
                provider,
                format!(
                    "header `{name}` has an invalid {what}; check `headers` and the API key variable"
                ),
            )
        };
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("name"))?;
        let mut header_value = HeaderValue::from_str(value).map_err(|_| invalid("value"))?;
        let lower = name.to_ascii_lowercase();
        if lower == "authorization" || lower.contains("key") || lower.contains("token") {
            header_value.set_sensitive(true);
        }
        map.insert(header_name, header_value);
    }
    Ok(map)
}

/// The human-readable message in an error body, whatever the provider's
/// shape: `{"error":{"message":…}}` (OpenAI, Anthropic, Gemini),
/// `{"error":"…"}` (Ollama), `{"message":…}` or `{"detail":…}` (others), or
/// the raw text, shortened.
pub fn error_message_from_body(body: &str) -> String {
    let trimmed = body.trim();
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(trimmed) {
        let candidates = [
            json.pointer("/error/message"),
            json.get("error").filter(|e| e.is_string()),
            json.get("message"),
            json.get("detail"),
            json.pointer("/0/error/message"), // Gemini sometimes wraps errors in an array.
        ];
        if let Some(message) = candidates.into_iter().flatten().find_map(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }) {
            return message;
        }
    }
    clip(trimmed)
}

/// The most characters of an upstream's error message kept.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// `text`, cut to [`MAX_ERROR_MESSAGE_CHARS`] with `…` when longer.
pub(crate) fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
    if text.chars().nth(MAX_ERROR_MESSAGE_CHARS).is_some() {
        clipped.push('…');
    }
    clipped
}

/// The error kind of an HTTP status, refined by the message (a 400 that says
/// the prompt is too long is a context-length error).
pub fn classify_status(status: u16, headers: &HeaderMap, message: &str) -> ErrorKind {
    match status {
        400 | 413 | 422 if is_context_length_message(message) => context_length_kind(message),
        400 | 405 | 409 | 413 | 415 | 422 => ErrorKind::InvalidRequest,
        // The model's chat template refused the conversation's system
        // messages, which llama.cpp's server reports as its own failure:
        // asking again, or another replica of the same model, cannot help.
        500 if is_template_refusal(message) => ErrorKind::InvalidRequest,
        // Ollama refuses a prompt longer than `num_ctx` (when told not to
        // cut it) as its own failure: "the input length exceeds the context
        // length". Asking again as it is cannot help.
        500 if message
            .to_ascii_lowercase()
            .contains("input length exceeds the context length") =>
        {
            context_length_kind(message)
        }
        401 => ErrorKind::Authentication,
        402 | 403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited {
            retry_after: retry_after(headers),
        },
        503 | 529 => ErrorKind::Overloaded,
        // Not Implemented: asking again cannot help.
        501 => ErrorKind::InvalidRequest,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::InvalidRequest,
    }
}

/// Whether an error message is a chat template's own refusal of the
/// conversation (its `raise_exception`, as llama.cpp words it), rather than
/// a fault of the server: of where its system messages are (`Jinja
/// Exception: System message must be at the beginning.`, which folding the
/// system messages answers), or gpt-oss's of an assistant message with
/// text, tool calls and reasoning together. Only those: any other template
/// failure (a broken template, roles that must alternate) stays the
/// server's, so that the router can still fall back to another provider.
fn is_template_refusal(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    (lower.contains("jinja exception") && lower.contains("system message"))
        || lower.contains(GPT_OSS_REASONING_REFUSAL)
}

/// gpt-oss's chat template's refusal of an assistant message with text,
/// tool calls and reasoning together, lowercased ("Cannot pass both
/// content and thinking in an assistant message with tool calls!").
pub(crate) const GPT_OSS_REASONING_REFUSAL: &str = "cannot pass both content and thinking";

/// Whether an error message says the prompt does not fit the context.
///
/// Not a refusal of `max_tokens` alone (vLLM's "'max_tokens' or
/// 'max_completion_tokens' is too large: 4000. This model's maximum
/// context length is 4096 tokens…"): the prompt fits, and a client that
/// shortened its conversation would be refused again. That stays an
/// invalid request, in the server's words.
pub fn is_context_length_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    if lower.contains("max_tokens") && lower.contains("is too large") {
        return false;
    }
    [
        // llama.cpp: "request (9000 tokens) exceeds the available context
        // size (8192 tokens)", and "… exceeds context size …" since.
        "context size",
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "prompt is too long",
        "input is too long",
        "too many tokens",
        "exceeds the context",
        "exceed context",
        "input token count",
        "reduce the length",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// A context-length kind with the token counts a message mentions: the
/// sum and the limit of Anthropic's `198096 + 8192 > 200000` (see
/// [`input_and_output_over_context`]), or else the larger and the smaller
/// of the first two numbers (`… 9000 tokens … maximum context length is
/// 8192 …`).
pub fn context_length_kind(message: &str) -> ErrorKind {
    if let Some((input, output, limit)) = input_and_output_over_context(message) {
        return ErrorKind::ContextLengthExceeded {
            needed: Some(input.saturating_add(output)),
            allowed: Some(limit),
        };
    }
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| s.len() >= 3)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (needed, allowed) = match numbers.as_slice() {
        [a, b, ..] if a != b => (Some(*a.max(b)), Some(*a.min(b))),
        _ => (None, None),
    };
    ErrorKind::ContextLengthExceeded { needed, allowed }
}

/// The prompt's tokens, `max_tokens` and the context window in Anthropic's
/// refusal of a request whose prompt fits but whose `max_tokens` does not:
/// `input length and `max_tokens` exceed context limit: 198096 + 8192 >
/// 200000, decrease input length or `max_tokens` and try again`. Claude
/// Code answers that one by asking again with a smaller `max_tokens`, not
/// by compacting its conversation, so the gateway passes it on as it is.
pub fn input_and_output_over_context(message: &str) -> Option<(u64, u64, u64)> {
    let (_, rest) = message.split_once("exceed context limit:")?;
    let mut words = rest.split_whitespace();
    let mut number = |after: Option<&str>| {
        if let Some(expected) = after
            && words.next()? != expected
        {
            return None;
        }
        words.next()?.trim_end_matches(',').parse::<u64>().ok()
    };
    let input = number(None)?;
    let output = number(Some("+"))?;
    let limit = number(Some(">"))?;
    Some((input, output, limit))
}

/// Anthropic's words for a request whose prompt fits but whose `max_tokens`
/// does not, which [`input_and_output_over_context`] reads back and
/// Claude Code answers by asking again with a smaller `max_tokens`.
pub fn max_tokens_overflow_words(input: u64, output: u64, limit: u64) -> String {
    format!(
        "input length and `max_tokens` exceed context limit: {input} + {output} > {limit}, \
         decrease input length or `max_tokens` and try again"
    )
}

/// The prompt, answer and context sizes of an OpenAI-compatible server's
/// refusal of a request whose prompt fits but whose `max_tokens` does not:
/// vLLM's "'max_tokens' or 'max_completion_tokens' is too large: 16384.
/// This model's maximum context length is 32768 tokens and your request has
/// 20000 input tokens (16384 > 32768 - 20000)", or the older "This model's
/// maximum context length is 32768 tokens. However, you requested 36384
/// tokens (20000 in the messages, 16384 in the completion)". `None` when
/// the message is neither, or when the prompt alone is over the limit
/// (then only a shorter conversation helps).
pub fn max_tokens_over_context(message: &str) -> Option<(u64, u64, u64)> {
    let number_after = |needle: &str| -> Option<u64> {
        let (_, rest) = message.split_once(needle)?;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let limit = number_after("maximum context length is")?;
    let (input, output) = match number_after("is too large:") {
        Some(output) => (number_after("your request has")?, output),
        None => (
            number_after("tokens (")?,
            number_after("in the messages, ")?,
        ),
    };
    (input <= limit && input.saturating_add(output) > limit).then_some((input, output, limit))
}

/// Google's `RetryInfo` in an error body:
/// `{"error":{"details":[{"@type":"…RetryInfo","retryDelay":"37s"}]}}`.
pub fn retry_delay_in_body(body: &str) -> Option<Duration> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let details = json.pointer("/error/details")?.as_array()?;
    details.iter().find_map(|detail| {
        let text = detail.get("retryDelay")?.as_str()?;
        let secs: f64 = text.strip_suffix('s')?.parse().ok()?;
        Duration::try_from_secs_f64(secs).ok()
    })
}

/// The wait a response asks for: `retry-after-ms` (OpenAI), else
/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // `try_from_secs_f64` rejects negative, infinite and absurdly large
    // values, which a hostile server could send to make us panic.
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_upstream_messages_are_classified_whole_and_kept_short() {
        let transport = Transport::new("vllm", HttpSettings::default(), Vec::new()).unwrap();
        let none = HeaderMap::new();
        // A validation error that echoes a long prompt back.
        let echo =
            serde_json::json!({"detail": [{"type": "missing", "input": "secret ".repeat(400)}]});
        let error = transport.status_error(422, &none, &echo.to_string());
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert_eq!(error.message.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        // A context-length message whose numbers come after the cut is
        // still recognised.
        let long = format!(
            "{} This model's maximum context length is 8192 tokens. However, you requested 9000 tokens",
            "Padding. ".repeat(80)
        );
        let body = serde_json::json!({"error": {"message": long}});
        let error = transport.status_error(400, &none, &body.to_string());
        assert_eq!(
            error.kind,
            ErrorKind::ContextLengthExceeded {
                needed: Some(9000),
                allowed: Some(8192)
            }
        );
    }

    #[test]
    fn classifies_statuses_and_context_errors() {
        let none = HeaderMap::new();
        assert_eq!(classify_status(401, &none, ""), ErrorKind::Authentication);
        assert_eq!(classify_status(529, &none, ""), ErrorKind::Overloaded);
        assert_eq!(classify_status(500, &none, ""), ErrorKind::Server);
        // Not Implemented is not worth asking again.
        assert_eq!(classify_status(501, &none, ""), ErrorKind::InvalidRequest);
        assert_eq!(
            classify_status(
                400,
                &none,
                "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens"
            ),
            ErrorKind::ContextLengthExceeded {
                needed: Some(9000),
                allowed: Some(8192)
            }
        );
        assert_eq!(
            classify_status(400, &none, "bad field"),
            ErrorKind::InvalidRequest
        );
        // llama.cpp's wordings, old and new.
        for message in [
            "request (9000 tokens) exceeds the available context size (8192 tokens), try \
             increasing it",
            "request (9000 tokens) exceeds context size (8192 tokens)",
        ] {
            assert_eq!(
                classify_status(400, &none, message),
                ErrorKind::ContextLengthExceeded {
                    needed: Some(9000),
                    allowed: Some(8192)
                },
                "{message}"
            );
        }
        // Anthropic's prompt plus max_tokens over the window: the sum and
        // the window, not the first two numbers.
        let over = "input length and `max_tokens` exceed context limit: 198096 + 8192 > 200000, \
                    decrease input length or `max_tokens` and try again";
        assert_eq!(
            classify_status(400, &none, over),
            ErrorKind::ContextLengthExceeded {
                needed: Some(206_288),
                allowed: Some(200_000)
            }
        );
        assert_eq!(
            input_and_output_over_context(over),
            Some((198_096, 8192, 200_000))
        );
        assert_eq!(
            input_and_output_over_context("exceed context limit: 5 > 4"),
            None
        );
        // vLLM's refusal of max_tokens alone: the prompt fits.
        let max_tokens = "'max_tokens' or 'max_completion_tokens' is too large: 4000. This \
                          model's maximum context length is 4096 tokens and your request has \
                          100 input tokens (4000 > 4096 - 100).";
        assert_eq!(
            classify_status(400, &none, max_tokens),
            ErrorKind::InvalidRequest
        );
        // A template's refusal of a late system message, which llama.cpp
        // reports as a 500, is the request's; other template failures and
        // other statuses stay the server's.
        let refusal = "Error: JINJA Exception: System message must be at the beginning.";
        assert_eq!(
            classify_status(500, &none, refusal),
            ErrorKind::InvalidRequest
        );
        assert_eq!(classify_status(502, &none, refusal), ErrorKind::Server);
        // vLLM's refusal of a max_tokens that does not fit, new and old.
        assert_eq!(
            max_tokens_over_context(
                "'max_tokens' or 'max_completion_tokens' is too large: 16384. This model's \
                 maximum context length is 65536 tokens and your request has 52189 input tokens \
                 (16384 > 65536 - 52189). (parameter=max_tokens, value=16384)"
            ),
            Some((52_189, 16_384, 65_536))
        );
        assert_eq!(
            max_tokens_over_context(
                "This model's maximum context length is 32768 tokens. However, you requested \
                 36384 tokens (20000 in the messages, 16384 in the completion). Please reduce \
                 the length of the messages or completion."
            ),
            Some((20_000, 16_384, 32_768))
        );
        // The prompt alone too long: not a max_tokens problem.
        assert_eq!(
            max_tokens_over_context(
                "This model's maximum context length is 32768 tokens. However, you requested \
                 40384 tokens (40000 in the messages, 384 in the completion)."
            ),
            None
        );
        assert_eq!(max_tokens_over_context("prompt is too long"), None);
        // Ollama's refusal of a prompt over num_ctx with truncation off.
        assert_eq!(
            classify_status(500, &none, "the input length exceeds the context length"),
            ErrorKind::ContextLengthExceeded {
                needed: None,
                allowed: None
            }
        );
        assert_eq!(
            classify_status(500, &none, "failed to load the system message cache"),
            ErrorKind::Server
        );
        assert_eq!(
            classify_status(
                500,
                &none,
                "Jinja Exception: Conversation roles must alternate user/assistant"
            ),
            ErrorKind::Server
        );
        // gpt-oss's template refuses an assistant message's reasoning beside
        // its text and calls: the request's fault, not the server's.
        assert_eq!(
            classify_status(
                500,
                &none,
                "Cannot pass both content and thinking in an assistant message with tool calls! \
                 Put the final response in the content field."
            ),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn reads_retry_after_in_all_its_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&dated), Some(Duration::ZERO));
        // Hostile values are ignored, never a panic.
        for hostile in ["1e30", "-5", "inf", "NaN"] {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", HeaderValue::from_static(hostile));
            headers.insert("retry-after-ms", HeaderValue::from_static(hostile));
            assert_eq!(retry_after(&headers), None, "{hostile}");
        }
    }

    #[test]
    fn reads_googles_retry_delay_from_the_body() {
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
        assert_eq!(retry_delay_in_body(body), Some(Duration::from_millis(1500)));
        assert_eq!(retry_delay_in_body("{}"), None);
    }

    #[test]
    fn extracts_messages_from_every_error_shape() {
        assert_eq!(
            error_message_from_body(r#"{"error":{"message":"m1","type":"x"}}"#),
            "m1"
        );
        assert_eq!(
            error_message_from_body(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"m2"}}"#
            ),
            "m2"
        );
        assert_eq!(error_message_from_body(r#"{"error":"m3"}"#), "m3");
        assert_eq!(error_message_from_body(r#"{"detail":"m4"}"#), "m4");
        assert_eq!(error_message_from_body("plain"), "plain");
        assert_eq!(
            error_message_from_body(&"x".repeat(600)).chars().count(),
            501
        );
    }
}
