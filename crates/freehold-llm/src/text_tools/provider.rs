//! [`RecoveringProvider`]: recovery as a [`Provider`] wrapper.

use std::sync::Arc;

use async_trait::async_trait;
use freehold_protocol::{Capabilities, ChatRequest, ChatResponse, LlmError, ModelInfo, ToolChoice};

use super::{recover_in_response, recover_in_stream};
use crate::provider::{EventStream, Provider};

/// A [`Provider`] that recovers tool calls its inner provider's model
/// printed as text (see [`crate::text_tools`]).
///
/// Recovery applies to requests that offer tools and do not forbid them
/// ([`ToolChoice::None`]); other requests go to the inner provider
/// untouched. Everything else (name, capabilities, models) is the inner
/// provider's.
#[derive(Debug, Clone)]
pub struct RecoveringProvider {
    inner: Arc<dyn Provider>,
}

impl RecoveringProvider {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Provider>) -> Self {
        Self { inner }
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

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        if !wants_recovery(&request) {
            return self.inner.stream(request).await;
        }
        let tools = request.tools.clone();
        let stream = self.inner.stream(request).await?;
        Ok(recover_in_stream(stream, tools))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        if !wants_recovery(&request) {
            return self.inner.complete(request).await;
        }
        let tools = request.tools.clone();
        let mut response = self.inner.complete(request).await?;
        recover_in_response(&mut response, &tools);
        Ok(response)
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        self.inner.list_models().await
    }
}
