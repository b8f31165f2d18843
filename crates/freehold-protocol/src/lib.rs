//! Provider-neutral types shared by every part of Freehold.
//!
//! The agent, the gateway and the embedded engine all speak these types; only
//! `freehold-llm` knows how each wire protocol (OpenAI, Anthropic, Gemini, Ollama…)
//! spells them. The crate is pure data: it must never do I/O, spawn tasks or
//! depend on an async runtime, so that any front end can use it.
//!
//! The main types:
//! - [`ChatRequest`]: messages ([`Message`] made of [`ContentPart`]s), tools
//!   ([`ToolSpec`]), [`ToolChoice`], [`Sampling`], limits, stop sequences and
//!   structured output ([`ResponseFormat`]).
//! - [`StreamEvent`]: what a streaming answer is made of; a [`ResponseBuilder`]
//!   folds a stream of them into a [`ChatResponse`].
//! - [`EmbedRequest`] and [`EmbedResponse`]: texts in, one vector each out.
//! - [`Usage`] and [`StopReason`].
//! - [`LlmError`]: the typed error taxonomy ([`ErrorKind`]).
//!
//! ```
//! use freehold_protocol::{ChatRequest, Message, ResponseBuilder, StreamEvent, StopReason};
//!
//! let request = ChatRequest::new("local:smollm2-135m", vec![Message::user("Hi")]);
//! assert_eq!(request.messages.len(), 1);
//!
//! let mut builder = ResponseBuilder::default();
//! builder.push(&StreamEvent::TextDelta { text: "Hel".into() });
//! builder.push(&StreamEvent::TextDelta { text: "lo".into() });
//! builder.push(&StreamEvent::Stop { reason: StopReason::EndTurn });
//! let response = builder.finish();
//! assert_eq!(response.message.text(), "Hello");
//! ```

mod agent;
mod embed;
mod error;
mod event;
mod message;
mod request;
pub mod time;
mod usage;

pub use agent::{AgentEvent, AgentStop, AgentSummary};
pub use embed::{EmbedRequest, EmbedResponse};
pub use error::{ErrorKind, LlmError};
pub use event::{
    AppliedContextEdit, ChatResponse, RefusalDetails, ResponseBuilder, StopReason, StreamEvent,
};
pub use message::{
    ContentPart, Document, DocumentSource, ImageSource, Message, Reasoning, Role, ToolCall,
    ToolResult, fold_system_messages, text_with_document_notes,
};
pub use request::{
    Capabilities, ChatRequest, ModelInfo, ReasoningEffort, ResponseFormat, Sampling, ToolChoice,
    ToolSpec, Verbosity,
};
pub use usage::{Timings, Usage};
