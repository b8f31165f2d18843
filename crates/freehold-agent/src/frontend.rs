//! What the agent needs from whoever drives it: somewhere to send events
//! and someone to ask for permission.

use async_trait::async_trait;
use freehold_protocol::AgentEvent;
use freehold_tools::ToolKind;

/// A call that needs the user's approval.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The tool.
    pub tool: String,
    /// Its kind.
    pub kind: ToolKind,
    /// What it acts on (the command, the path), if anything.
    pub subject: Option<String>,
    /// The call's arguments.
    pub arguments: serde_json::Value,
}

/// The user's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Run this call.
    Once,
    /// Run it and do not ask again for the same thing in this session (the
    /// same command; any edit).
    Always,
    /// Do not run it; the reason is told to the model.
    Deny(String),
}

/// The front end of an agent: renders its events and answers its
/// permission questions. The terminal UI, the headless printer and tests
/// implement it.
#[async_trait]
pub trait Frontend: Send {
    /// Something happened.
    fn event(&mut self, event: &AgentEvent);

    /// Ask the user whether a call may run. The default refuses, as
    /// headless front ends must: nobody is there to answer.
    async fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        Approval::Deny(headless_denial(request))
    }
}

/// What the model is told when a call needed approval in headless mode.
pub fn headless_denial(request: &ApprovalRequest) -> String {
    let what = match &request.subject {
        Some(subject) => format!("`{}` ({subject})", request.tool),
        None => format!("`{}`", request.tool),
    };
    let rule = match (&request.subject, request.kind) {
        (Some(subject), ToolKind::Execute) => format!("--allowedTools \"shell({subject})\""),
        (_, ToolKind::Edit) => "--permission-mode acceptEdits".to_owned(),
        _ => format!("--allowedTools \"{}\"", request.tool),
    };
    format!(
        "permission denied: {what} needs the user's approval, and this session is non-interactive, so it was refused. \
         Do not retry it; finish what you can without it and say in your answer what needs approval \
         (the user can allow it with {rule})."
    )
}

/// A front end that collects events, for tests and embedding.
#[derive(Debug, Default)]
pub struct Collect {
    /// The events so far.
    pub events: Vec<AgentEvent>,
}

#[async_trait]
impl Frontend for Collect {
    fn event(&mut self, event: &AgentEvent) {
        self.events.push(event.clone());
    }
}
