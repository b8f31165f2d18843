//! What the coding agent reports while it works: [`AgentEvent`]s.
//!
//! The agent emits these and front ends only render them: the interactive
//! terminal prints them, `--output-format stream-json` writes each one as a
//! JSON line, and tests assert on them. Every event is tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::Usage;

/// One thing the agent did or saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentEvent {
    /// A session started or resumed.
    SessionStarted {
        /// The session's id (its transcript's file name).
        session_id: String,
        /// The model, as `provider:model`.
        model: String,
        /// The project directory.
        cwd: String,
        /// Whether an earlier session was resumed.
        resumed: bool,
    },
    /// The model is being asked (once per turn of the loop).
    TurnStarted {
        /// 1 for the first model call of the task.
        turn: u32,
    },
    /// Part of the model's answer text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// Part of the model's reasoning, for models that think aloud.
    ReasoningDelta {
        /// The text.
        text: String,
    },
    /// The model called a tool.
    ToolCall {
        /// The call's id.
        id: String,
        /// The tool.
        name: String,
        /// The arguments, as the model wrote them (JSON when valid).
        arguments: serde_json::Value,
    },
    /// A tool call finished (or was refused).
    ToolResult {
        /// The call's id.
        id: String,
        /// The tool.
        name: String,
        /// What the model is told (possibly truncated).
        content: String,
        /// Whether it failed or was refused.
        is_error: bool,
        /// A unified diff of the files it changed, for display.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
    },
    /// A tool call was refused by the permission rules or the user.
    PermissionDenied {
        /// The call's id.
        id: String,
        /// The tool.
        name: String,
        /// Why, as told to the model.
        reason: String,
    },
    /// The working tree was snapshotted before the turn's first change.
    Checkpoint {
        /// The snapshot's id (a git commit).
        id: String,
    },
    /// Older turns were summarised to stay within the context window.
    Compacted {
        /// Messages replaced by the summary.
        messages_summarized: usize,
        /// Estimated tokens of the conversation before.
        tokens_before: u64,
        /// Estimated tokens after.
        tokens_after: u64,
    },
    /// Something the user should know that is not an error (a truncated
    /// output, a repeated call, a skipped checkpoint).
    Notice {
        /// What happened.
        message: String,
    },
    /// Tokens and cost of one model call.
    Usage {
        /// Tokens of that call.
        usage: Usage,
        /// Its cost in USD, where the price is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// The task ended.
    Finished(AgentSummary),
}

/// How a task ended and what it used: the `--output-format json` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The final answer (the model's last text).
    pub result: String,
    /// The session's id.
    pub session_id: String,
    /// Model calls made.
    pub turns: u32,
    /// Tokens used, summed over the calls.
    pub usage: Usage,
    /// Cost in USD, where every call's price is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Why it stopped.
    pub stop_reason: AgentStop,
    /// Whether the task counts as failed (`stop_reason` is not `completed`).
    pub is_error: bool,
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStop {
    /// The model answered without calling a tool.
    Completed,
    /// The turn limit was reached.
    MaxTurns,
    /// The user interrupted.
    Cancelled,
    /// The model or the provider failed.
    Error(String),
}
