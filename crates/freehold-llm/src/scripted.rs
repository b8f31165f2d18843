//! A provider that answers from a script instead of a model: for
//! deterministic tests of whatever drives a model (the agent loop) and for
//! measuring that driver's own overhead (`freehold bench agent`).
//!
//! Each request takes the next [`ScriptedAnswer`] from the queue; the
//! requests are recorded so tests can check what the model was sent. When
//! the queue is empty, requests fail with a clear error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, ContentPart, ErrorKind, LlmError, Message, ModelInfo,
    Role, StopReason, ToolCall, Usage,
};

use crate::provider::{EventStream, Provider, collect_stream};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct ScriptedAnswer {
    /// What the model "says".
    pub response: ChatResponse,
    /// Waited before the answer starts (to test cancellation).
    pub delay: Duration,
    /// Returned instead of an answer, when set.
    pub error: Option<LlmError>,
}

impl ScriptedAnswer {
    /// An answer of plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::message(
            vec![ContentPart::Text { text: text.into() }],
            StopReason::EndTurn,
        )
    }

    /// An answer calling one tool with JSON arguments.
    pub fn call(name: &str, arguments: serde_json::Value) -> Self {
        Self::calls(&[(name, arguments)])
    }

    /// An answer calling several tools at once.
    pub fn calls(calls: &[(&str, serde_json::Value)]) -> Self {
        let content = calls
            .iter()
            .map(|(name, arguments)| {
                ContentPart::ToolCall(ToolCall::new(
                    format!("call_{}", fastrand::u32(..)),
                    *name,
                    arguments.to_string(),
                ))
            })
            .collect();
        Self::message(content, StopReason::ToolUse)
    }

    /// An answer that fails with `error`.
    pub fn fail(error: LlmError) -> Self {
        let mut answer = Self::text("");
        answer.error = Some(error);
        answer
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn message(content: Vec<ContentPart>, stop_reason: StopReason) -> Self {
        Self {
            response: ChatResponse {
                id: None,
                model: None,
                message: Message {
                    role: Role::Assistant,
                    content,
                },
                usage: Usage::default(),
                stop_reason,
                timings: None,
                context_edits: Vec::new(),
                refusal_details: None,
            },
            delay: Duration::ZERO,
            error: None,
        }
    }
}

/// A provider answering from a script.
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    name: String,
    answers: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
    requests: Arc<Mutex<Vec<ChatRequest>>>,
    /// When set, every answer reports usage: input tokens estimated from
    /// the request's bytes (one per four), output tokens from the answer's.
    estimate_usage: bool,
}

impl ScriptedProvider {
    /// A provider called `name` that gives `answers` in order.
    pub fn new(name: impl Into<String>, answers: Vec<ScriptedAnswer>) -> Self {
        Self {
            name: name.into(),
            answers: Arc::new(Mutex::new(answers.into())),
            requests: Arc::new(Mutex::new(Vec::new())),
            estimate_usage: true,
        }
    }

    /// Queue more answers.
    pub fn push(&self, answer: ScriptedAnswer) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(answer);
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Answers still queued.
    pub fn remaining(&self) -> usize {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn next(&self, request: &ChatRequest) -> Result<ScriptedAnswer, LlmError> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        let answer = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let mut answer = answer.ok_or_else(|| {
            LlmError::new(
                ErrorKind::InvalidRequest,
                self.name.clone(),
                "the script has no more answers",
            )
        })?;
        if self.estimate_usage && answer.response.usage == Usage::default() {
            let input = serde_json::to_string(&request.messages).map_or(0, |s| s.len())
                + serde_json::to_string(&request.tools).map_or(0, |s| s.len());
            let output =
                serde_json::to_string(&answer.response.message.content).map_or(0, |s| s.len());
            answer.response.usage = Usage {
                input_tokens: (input / 4) as u64,
                output_tokens: (output / 4) as u64,
                ..Usage::default()
            };
        }
        Ok(answer)
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities::default()
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let answer = self.next(&request)?;
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        if let Some(error) = answer.error {
            return Err(error);
        }
        let events = answer.response.to_events();
        Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let stream = self.stream(request).await?;
        collect_stream(&self.name, stream).await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(vec![ModelInfo {
            id: "scripted".into(),
            provider: self.name.clone(),
            context_window: None,
            max_output_tokens: None,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freehold_protocol::StreamEvent;
    use futures::StreamExt;

    #[tokio::test]
    async fn answers_in_order_and_records_requests() {
        let provider = ScriptedProvider::new(
            "scripted",
            vec![
                ScriptedAnswer::call("read", serde_json::json!({"path": "a"})),
                ScriptedAnswer::text("done"),
            ],
        );
        let request = ChatRequest::new("scripted:x", vec![Message::user("hi")]);
        let first = provider.complete(request.clone()).await.unwrap();
        assert_eq!(first.stop_reason, StopReason::ToolUse);
        let call = first.message.tool_calls().next().unwrap();
        assert_eq!(call.name, "read");
        assert_eq!(call.arguments, r#"{"path":"a"}"#);
        assert!(first.usage.input_tokens > 0);
        let mut stream = provider.stream(request.clone()).await.unwrap();
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            if let StreamEvent::TextDelta { text: t } = event.unwrap() {
                text.push_str(&t);
            }
        }
        assert_eq!(text, "done");
        assert_eq!(provider.requests().len(), 2);
        let error = provider.complete(request).await.unwrap_err();
        assert!(error.message.contains("no more answers"));
    }
}
