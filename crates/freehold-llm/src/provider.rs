//! The one interface every model source implements.

use std::pin::Pin;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo, ResponseBuilder, StreamEvent,
};
use futures::{Stream, StreamExt};

/// A stream of answer events. Dropping it cancels the request: the connection
/// is closed and the provider stops generating.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

/// A source of model answers: a hosted API, a local server, the embedded
/// engine, or a router over several of them.
///
/// Cancellation is by dropping: dropping the future of [`Provider::stream`]
/// or [`Provider::complete`], or the returned [`EventStream`], aborts the
/// request.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The configured name of this provider (`openai`, `gpu-box`…).
    fn name(&self) -> &str;

    /// What `model` can do on this provider.
    fn capabilities(&self, model: &str) -> Capabilities;

    /// Whether the provider makes Anthropic's context edits
    /// ([`ChatRequest::context_management`]) itself, as Anthropic's API
    /// does; for one that does not (this default), the router makes them
    /// before the request reaches it ([`crate::context_edit`]).
    fn makes_context_edits(&self) -> bool {
        false
    }

    /// Starts a streamed answer. The stream follows the order documented on
    /// [`StreamEvent`].
    ///
    /// # Errors
    /// Failures before the answer starts; later ones arrive in the stream.
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError>;

    /// A complete answer, requested without streaming where the protocol
    /// allows.
    ///
    /// # Errors
    /// Any failure of the request.
    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;

    /// The models this provider serves.
    ///
    /// # Errors
    /// The provider is unreachable or refuses the key.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError>;

    /// Whether the provider is ready for requests, as the health probes of
    /// a replica set ask it: by default, that it lists its models (it is up
    /// and takes the key). A server that lists them before it can answer
    /// (llama.cpp's while its model loads) says more where it can.
    ///
    /// # Errors
    /// What keeps it from answering.
    async fn check_ready(&self) -> Result<(), LlmError> {
        self.list_models().await.map(|_| ())
    }

    /// The embeddings of `request.inputs`, one vector per input in their
    /// order. Providers without embeddings keep this default, which refuses.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidRequest`] from providers that offer no
    /// embeddings; otherwise any failure of the request.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        Err(no_embeddings(self.name(), &request.model))
    }

    /// How many input tokens `request` (its system prompt, messages and
    /// tools) comes to on this provider's own tokenizer, for clients that
    /// size their context before they send (Anthropic's `count_tokens`).
    /// `Ok(None)` when the provider has no way to count, which is this
    /// default; the caller then estimates
    /// ([`ChatRequest::estimated_input_tokens`], or
    /// [`ChatRequest::estimated_input_tokens_as_notes`] for a provider that
    /// reads no documents).
    ///
    /// # Errors
    /// The provider refused the request or could not be reached.
    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        let _ = request;
        Ok(None)
    }

    /// The state of each replica behind this provider, for status pages
    /// (`freehold serve`'s `/health`); empty for a single endpoint.
    fn replica_health(&self) -> Vec<crate::balance::ReplicaHealth> {
        Vec::new()
    }

    /// Whether requests can be sent at all: `false` for a provider that
    /// could not be built (its API key is not set, say), whose every
    /// request fails at once.
    fn usable(&self) -> bool {
        true
    }
}

/// Checks what every provider refuses alike: a request with no inputs.
///
/// # Errors
/// [`ErrorKind::InvalidRequest`] when `request.inputs` is empty.
pub fn check_embed_request(provider: &str, request: &EmbedRequest) -> Result<(), LlmError> {
    if request.inputs.is_empty() {
        return Err(LlmError::new(
            ErrorKind::InvalidRequest,
            provider,
            format!(
                "nothing to embed: the request for `{}` has no inputs; give at least one text",
                request.model
            ),
        ));
    }
    Ok(())
}

/// The error of a provider that offers no embeddings.
pub fn no_embeddings(provider: &str, model: &str) -> LlmError {
    LlmError::new(
        ErrorKind::InvalidRequest,
        provider,
        format!(
            "provider {provider} does not offer embeddings (asked for `{model}`); use an \
             OpenAI-compatible server, Ollama or `local:` for embeddings"
        ),
    )
}

/// Drains a stream into a complete answer. A stream that ends without a
/// [`StreamEvent::Stop`] is an error: the connection broke mid-answer.
///
/// # Errors
/// The first error in the stream, or a connection error for a truncated one.
pub async fn collect_stream(
    provider: &str,
    mut stream: EventStream,
) -> Result<ChatResponse, LlmError> {
    let mut builder = ResponseBuilder::default();
    while let Some(event) = stream.next().await {
        builder.push(&event?);
    }
    if !builder.is_stopped() {
        return Err(LlmError::new(
            ErrorKind::Connection,
            provider,
            "the stream ended before the answer was complete",
        ));
    }
    Ok(builder.finish())
}
