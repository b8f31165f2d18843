//! [`RecoveringProvider`]: recovery as a [`Provider`] wrapper.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, LlmError, ModelInfo,
    ToolChoice,
};

use super::{recover_in_response, recover_in_stream, recovery_view};
use crate::provider::{EventStream, Provider};

/// A [`Provider`] that recovers tool calls its inner provider's model
/// printed as text (see [`crate::text_tools`]).
///
/// Recovery applies to requests that offer tools and do not forbid them
/// ([`ToolChoice::None`]); other requests go to the inner provider
/// untouched. Everything else (name, capabilities, models, embeddings) is
/// the inner provider's.
#[derive(Debug, Clone)]
pub struct RecoveringProvider {
    inner: Arc<dyn Provider>,
    enabled_by_default: bool,
    per_model: BTreeMap<String, bool>,
}

impl RecoveringProvider {
    /// Wraps `inner`, recovering for every model.
    pub fn new(inner: Arc<dyn Provider>) -> Self {
        Self {
            inner,
            enabled_by_default: true,
            per_model: BTreeMap::new(),
        }
    }

    /// Wraps `inner`, recovering for models whose entry in `per_model` is
    /// true, and for other models when `enabled_by_default` is.
    pub fn with_policy(
        inner: Arc<dyn Provider>,
        enabled_by_default: bool,
        per_model: BTreeMap<String, bool>,
    ) -> Self {
        Self {
            inner,
            enabled_by_default,
            per_model,
        }
    }

    /// Whether recovery is on for `model`.
    pub fn enabled_for(&self, model: &str) -> bool {
        self.per_model
            .get(model)
            .copied()
            .unwrap_or(self.enabled_by_default)
    }

    fn wants_recovery(&self, request: &ChatRequest) -> bool {
        self.enabled_for(&request.model) && wants_recovery(request)
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &Arc<dyn Provider> {
        &self.inner
    }
}

/// Whether a model answering `request` may call tools.
fn wants_recovery(request: &ChatRequest) -> bool {
    !request.tools.is_empty() && request.tool_choice != ToolChoice::None
}

#[async_trait]
impl Provider for RecoveringProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        self.inner.capabilities(model)
    }

    fn makes_context_edits(&self) -> bool {
        self.inner.makes_context_edits()
    }

    fn replica_health(&self) -> Vec<crate::balance::ReplicaHealth> {
        self.inner.replica_health()
    }

    fn usable(&self) -> bool {
        self.inner.usable()
    }

    async fn check_ready(&self) -> Result<(), LlmError> {
        self.inner.check_ready().await
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        if !self.wants_recovery(&request) {
            return self.inner.stream(request).await;
        }
        let tools = recovery_view(&request.tools);
        let stream = self.inner.stream(request).await?;
        Ok(recover_in_stream(stream, tools))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        if !self.wants_recovery(&request) {
            return self.inner.complete(request).await;
        }
        let tools = recovery_view(&request.tools);
        let mut response = self.inner.complete(request).await?;
        recover_in_response(&mut response, &tools);
        Ok(response)
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        self.inner.list_models().await
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        self.inner.embed(request).await
    }

    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        self.inner.count_input_tokens(request).await
    }
}
