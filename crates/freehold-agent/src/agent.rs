//! The loop: model → tool calls → results → model, until the model answers
//! without calling a tool, the turn limit, or a cancel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use freehold_llm::router::Router;
use freehold_protocol::{
    AgentEvent, AgentStop, AgentSummary, ChatRequest, ContentPart, ErrorKind, LlmError, Message,
    ReasoningEffort, ResponseBuilder, Role, StopReason, StreamEvent, ToolCall, ToolChoice,
    ToolResult, ToolSpec, Usage,
};
use freehold_tools::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, Toolbox};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::budget;
use crate::checkpoint::{self, Checkpoints, RestoreReport};
use crate::error::AgentError;
use crate::frontend::{Approval, ApprovalRequest, Frontend};
use crate::memory;
use crate::permissions::{Decision, Permissions, Rule};
use crate::prompt;
use crate::session::{LoadedSession, Record, SessionStore, SessionWriter};

/// How an agent is set up.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The model, as `provider:model` (or an alias the router knows).
    pub model: String,
    /// The project directory.
    pub cwd: PathBuf,
    /// Permission mode and rules.
    pub permissions: Permissions,
    /// The most model calls for one task.
    pub max_turns: u32,
    /// The model's context window in tokens.
    pub context_window: u32,
    /// The most tokens one answer may have (reserved out of the window).
    pub max_output_tokens: u32,
    /// Sampling temperature (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// The user's configuration directory, for the user's `AGENTS.md`.
    pub user_config_dir: Option<PathBuf>,
    /// The data directory: checkpoints of projects that are not git
    /// repositories go in shadow repositories under `<dir>/checkpoints`.
    /// `None` turns checkpoints off.
    pub checkpoint_dir: Option<PathBuf>,
    /// Default time limit of a shell command, in seconds.
    pub shell_timeout_secs: u64,
    /// Scaffolding for small models, which often answer in prose instead
    /// of working: files the task names by path are attached to it (not
    /// only `@path` mentions); when none is, the first model call of the
    /// task must call a tool; and an answer that shows code while no file
    /// was changed (or an empty answer) gets one reminder to do the work
    /// with the tools.
    pub guided: bool,
}

impl AgentOptions {
    /// Defaults for `model` in `cwd`: default permissions, 40 turns, an
    /// 8,192-token window with 2,048 reserved for the answer.
    pub fn new(model: impl Into<String>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            cwd: cwd.into(),
            permissions: Permissions::default(),
            max_turns: 40,
            context_window: 8192,
            max_output_tokens: 2048,
            temperature: None,
            user_config_dir: None,
            checkpoint_dir: None,
            shell_timeout_secs: 120,
            guided: false,
        }
    }
}

/// A coding agent working in one session.
pub struct Agent {
    router: Arc<Router>,
    options: AgentOptions,
    toolbox: Toolbox,
    tool_context: ToolContext,
    system: String,
    messages: Vec<Message>,
    session: SessionWriter,
    totals: Totals,
    /// Input tokens of the last model call and how many messages it saw:
    /// the real count beats estimates for the context budget.
    last_prompt: Option<(u64, usize)>,
    checkpoints: Option<Checkpoints>,
    /// Identical calls seen in the current task, for loop detection.
    repeated: HashMap<(String, String), u32>,
    /// Successful changes (edit, write, apply_patch) in the current task.
    changes: u32,
}

/// Usage summed over a session.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Tokens.
    pub usage: Usage,
    /// Cost in USD; `None` once any call's price was unknown.
    pub cost_usd: Option<f64>,
    /// Model calls.
    pub model_calls: u32,
}

/// Appended to the result of every successful change.
const AFTER_CHANGE: &str = "\nIf this completes the task, check it if you can, then reply to the user in one or two sentences.";

/// The reminder a guided model gets when it shows code instead of changing
/// a file.
const SHOWN_NOT_MADE: &str = "[You showed code but changed no file. If the task asks for a change, make it now with edit (old_string copied exactly from the file), or write for a new file. If it was only a question, read what you need and answer in one or two sentences.]";

/// The reminder a guided model gets when it ends with an empty answer.
const EMPTY_ANSWER: &str = "[Your reply was empty. If the task is done, reply with what you changed or the answer; otherwise go on with your tools.]";

/// How many times the same call (tool and arguments) may run in one task
/// before the model is told to change course.
const MAX_IDENTICAL_CALLS: u32 = 2;

impl Agent {
    /// Start a new session.
    ///
    /// # Errors
    /// When the transcript cannot be created.
    pub fn start(
        router: Arc<Router>,
        options: AgentOptions,
        store: &SessionStore,
    ) -> Result<Self, AgentError> {
        let session = store.create(&options.cwd, &options.model)?;
        Ok(Self::assemble(router, options, session, None))
    }

    /// Continue a session from its transcript; new messages are appended
    /// to the same file.
    ///
    /// # Errors
    /// When the session is unknown or its transcript unreadable.
    pub fn resume(
        router: Arc<Router>,
        options: AgentOptions,
        store: &SessionStore,
        id: &str,
    ) -> Result<Self, AgentError> {
        let (loaded, session) = store.resume(id)?;
        Ok(Self::assemble(router, options, session, Some(loaded)))
    }

    fn assemble(
        router: Arc<Router>,
        options: AgentOptions,
        session: SessionWriter,
        loaded: Option<LoadedSession>,
    ) -> Self {
        let memory = memory::discover(&options.cwd, options.user_config_dir.as_deref());
        let root = memory::repository_root(&options.cwd).unwrap_or_else(|| options.cwd.clone());
        let system = prompt::system_prompt(&memory, &root);
        let mut tool_context = ToolContext::new(&options.cwd);
        tool_context.shell_timeout_secs = options.shell_timeout_secs;
        let (messages, totals) = match loaded {
            Some(loaded) => (
                loaded.messages,
                Totals {
                    usage: loaded.usage,
                    cost_usd: loaded.cost_usd,
                    model_calls: loaded.model_calls,
                },
            ),
            None => (
                Vec::new(),
                Totals {
                    cost_usd: Some(0.0),
                    ..Totals::default()
                },
            ),
        };
        Self {
            router,
            options,
            toolbox: Toolbox::builtin(),
            tool_context,
            system,
            messages,
            session,
            totals,
            last_prompt: None,
            checkpoints: None,
            repeated: HashMap::new(),
            changes: 0,
        }
    }

    /// Replace the tools offered to the model (tests, restricted agents).
    pub fn with_toolbox(mut self, toolbox: Toolbox) -> Self {
        self.toolbox = toolbox;
        self
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        self.session.id()
    }

    /// The transcript's path.
    pub fn transcript(&self) -> &std::path::Path {
        self.session.path()
    }

    /// The model in use.
    pub fn model(&self) -> &str {
        &self.options.model
    }

    /// Switch model; the conversation carries over.
    pub fn set_model(&mut self, model: impl Into<String>, context_window: Option<u32>) {
        self.options.model = model.into();
        if let Some(window) = context_window {
            self.options.context_window = window;
        }
        self.last_prompt = None;
    }

    /// The permission mode and rules (the interactive front end changes
    /// them).
    pub fn permissions_mut(&mut self) -> &mut Permissions {
        &mut self.options.permissions
    }

    /// Usage and cost so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The conversation so far (without the system prompt).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The system prompt (byte-stable for the session).
    pub fn system_prompt(&self) -> &str {
        &self.system
    }

    /// The tool definitions sent to the model (byte-stable).
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.toolbox.specs()
    }

    /// The emitted `SessionStarted` event for front ends that print it.
    pub fn started_event(&self, resumed: bool) -> AgentEvent {
        AgentEvent::SessionStarted {
            session_id: self.session_id().to_owned(),
            model: self.options.model.clone(),
            cwd: self.options.cwd.display().to_string(),
            resumed,
        }
    }

    /// Forget the conversation (the transcript keeps it).
    ///
    /// # Errors
    /// When the transcript cannot be written.
    pub fn clear(&mut self) -> Result<(), AgentError> {
        let summarized = self.messages.len();
        self.messages.clear();
        self.last_prompt = None;
        self.session.append(&Record::Compacted {
            messages: Vec::new(),
            summarized,
        })
    }

    /// Restore the working tree to the last checkpoint.
    ///
    /// # Errors
    /// When checkpoints are off or there is none.
    pub async fn undo(&mut self) -> Result<RestoreReport, AgentError> {
        let checkpoints = self.checkpoints().await?;
        Ok(checkpoints.restore_last().await?)
    }

    /// The checkpoint store, opened on first use (it runs git).
    async fn checkpoints(&mut self) -> Result<&Checkpoints, AgentError> {
        if self.checkpoints.is_none() {
            let dir = self
                .options
                .checkpoint_dir
                .as_ref()
                .ok_or(AgentError::CheckpointsOff)?;
            let shadow = checkpoint::default_shadow_dir(dir, &self.options.cwd);
            self.checkpoints = Some(Checkpoints::open(&self.options.cwd, &shadow).await?);
        }
        self.checkpoints.as_ref().ok_or(AgentError::CheckpointsOff)
    }

    /// Run one task: `prompt` from the user, then model calls and tool
    /// calls until the model answers, `max_turns`, or `cancel`. The
    /// conversation and transcript keep everything, also after a cancel.
    pub async fn run(
        &mut self,
        prompt: &str,
        frontend: &mut dyn Frontend,
        cancel: CancellationToken,
    ) -> AgentSummary {
        let started = Instant::now();
        let before = self.totals;
        self.repeated.clear();
        self.changes = 0;
        let mut text = if self.messages.is_empty() {
            let date = crate::clock::date(crate::clock::unix_now());
            let git = prompt::git_summary(&self.options.cwd);
            prompt::environment_note(&self.options.cwd, &date, git.as_deref())
        } else {
            String::new()
        };
        // `@path` always attaches a file; guided models get every file the
        // task names, since they tend to answer before reading.
        let attached =
            freehold_tools::attach_mentioned_files(&self.tool_context, prompt, self.options.guided);
        if !attached.is_empty() {
            let names: Vec<&str> = attached.iter().map(|a| a.path.as_str()).collect();
            frontend.event(&AgentEvent::Notice {
                message: format!("attached {}", names.join(", ")),
            });
            text.push_str(&freehold_tools::render_attachments(&attached));
            text.push('\n');
        }
        text.push_str(prompt);
        let label = prompt.lines().next().unwrap_or_default().to_owned();
        self.push(Message::user(text));
        let mut turns = 0;
        let mut checkpointed = false;
        let mut last_text = String::new();
        let mut reminded = false;
        // A guided model must look before it answers, unless the files the
        // task names are already in front of it: then it may first say what
        // it will change (small models edit better after writing the fix
        // out), and is reminded to make the change if it stops there.
        let mut require_tool = self.options.guided && attached.is_empty();
        let stop = loop {
            if cancel.is_cancelled() {
                break AgentStop::Cancelled;
            }
            if turns >= self.options.max_turns {
                break AgentStop::MaxTurns;
            }
            turns += 1;
            frontend.event(&AgentEvent::TurnStarted { turn: turns });
            self.compact_if_needed(frontend, &cancel).await;
            let tool_choice = if std::mem::take(&mut require_tool) {
                ToolChoice::Required
            } else {
                ToolChoice::Auto
            };
            let response = match self.call_model(tool_choice, frontend, &cancel).await {
                Ok(Some(response)) => response,
                Ok(None) => break AgentStop::Cancelled,
                Err(error) => break AgentStop::Error(error.to_string()),
            };
            let text = response.message.text();
            if !text.trim().is_empty() {
                last_text.clone_from(&text);
            }
            let calls: Vec<ToolCall> = response.message.tool_calls().cloned().collect();
            self.push(response.message);
            if calls.is_empty() {
                if self.options.guided
                    && !reminded
                    && turns < self.options.max_turns
                    && let Some(reminder) = self.reminder_for(&text)
                {
                    reminded = true;
                    // Showing code means the model meant to change
                    // something: make the next call a tool call.
                    require_tool = reminder == SHOWN_NOT_MADE;
                    frontend.event(&AgentEvent::Notice {
                        message: "the model answered without doing the work; it was reminded to use its tools".into(),
                    });
                    self.push(Message::user(reminder));
                    continue;
                }
                break AgentStop::Completed;
            }
            let cancelled = self
                .run_calls(&calls, frontend, &cancel, &mut checkpointed, &label)
                .await;
            if cancelled {
                break AgentStop::Cancelled;
            }
        };
        if stop == AgentStop::Cancelled {
            self.push(Message::user(
                "[The user interrupted. Stop and wait for their next message.]",
            ));
        }
        let mut usage = self.totals.usage;
        subtract(&mut usage, &before.usage);
        let cost_usd = match (self.totals.cost_usd, before.cost_usd) {
            (Some(now), Some(then)) => Some(now - then),
            _ => None,
        };
        let summary = AgentSummary {
            result: last_text,
            session_id: self.session_id().to_owned(),
            turns,
            usage,
            cost_usd,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            is_error: stop != AgentStop::Completed,
            stop_reason: stop,
        };
        frontend.event(&AgentEvent::Finished(summary.clone()));
        summary
    }

    /// Summarise older turns now (the `/compact` command).
    ///
    /// # Errors
    /// When there is too little to compact.
    pub async fn compact(
        &mut self,
        frontend: &mut dyn Frontend,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        let keep = (f64::from(self.usable_window()) * budget::KEEP_RECENT / 2.0) as u64;
        if !self.compact_keeping(keep, frontend, cancel).await {
            return Err(AgentError::Model(LlmError::new(
                ErrorKind::InvalidRequest,
                "agent",
                "nothing to compact yet",
            )));
        }
        Ok(())
    }

    fn push(&mut self, message: Message) {
        if let Err(error) = self.session.append(&Record::Message {
            message: message.clone(),
        }) {
            tracing::warn!(%error, "cannot write the transcript");
        }
        self.messages.push(message);
    }

    fn usable_window(&self) -> u32 {
        self.options
            .context_window
            .saturating_sub(self.options.max_output_tokens)
            .max(1024)
    }

    /// The conversation's size in tokens: the last call's real prompt
    /// count plus estimates of what was added since.
    pub fn estimated_tokens(&self) -> u64 {
        match self.last_prompt {
            Some((tokens, seen)) if seen <= self.messages.len() => {
                tokens + budget::estimate_messages(&self.messages[seen..])
            }
            _ => {
                let tools = serde_json::to_string(&self.toolbox.specs()).unwrap_or_default();
                budget::estimate_text(&self.system)
                    + budget::estimate_text(&tools)
                    + budget::estimate_messages(&self.messages)
            }
        }
    }

    async fn compact_if_needed(&mut self, frontend: &mut dyn Frontend, cancel: &CancellationToken) {
        let usable = f64::from(self.usable_window());
        if (self.estimated_tokens() as f64) < usable * budget::COMPACT_AT {
            return;
        }
        let keep = (usable * budget::KEEP_RECENT) as u64;
        self.compact_keeping(keep, frontend, cancel).await;
    }

    /// Replace older messages by a summary, keeping about `keep` tokens of
    /// recent ones. Returns whether anything was compacted.
    async fn compact_keeping(
        &mut self,
        keep: u64,
        frontend: &mut dyn Frontend,
        cancel: &CancellationToken,
    ) -> bool {
        let Some(split) = budget::compaction_split(&self.messages, keep) else {
            return false;
        };
        let before = self.estimated_tokens();
        let max_bytes = (self.usable_window() as usize).saturating_sub(1024) * 3;
        let transcript = budget::transcript_text(&self.messages[..split], max_bytes.max(2048));
        let summary = match self.summarise(&transcript, cancel).await {
            Ok(summary) if !summary.trim().is_empty() => summary,
            outcome => {
                if let Err(error) = outcome {
                    frontend.event(&AgentEvent::Notice {
                        message: format!("the model could not summarise older turns ({error}); they were shortened instead"),
                    });
                }
                // Without a summary, keep the user's requests: the least
                // the model needs to know what it is doing.
                self.messages[..split]
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .map(|m| format!("- The user asked: {}", m.text().trim()))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let note = format!(
            "[Earlier turns of this conversation were compacted to fit the context. Summary:]\n{}\n[End of summary; continue from here.]",
            summary.trim()
        );
        let mut kept = self.messages.split_off(split);
        match kept.first_mut() {
            Some(first) if first.role == Role::User => {
                first.content.insert(
                    0,
                    ContentPart::Text {
                        text: format!("{note}\n\n"),
                    },
                );
            }
            _ => kept.insert(0, Message::user(note)),
        }
        self.messages = kept;
        self.last_prompt = None;
        if let Err(error) = self.session.append(&Record::Compacted {
            messages: self.messages.clone(),
            summarized: split,
        }) {
            tracing::warn!(%error, "cannot write the transcript");
        }
        frontend.event(&AgentEvent::Compacted {
            messages_summarized: split,
            tokens_before: before,
            tokens_after: self.estimated_tokens(),
        });
        true
    }

    async fn summarise(
        &mut self,
        transcript: &str,
        cancel: &CancellationToken,
    ) -> Result<String, LlmError> {
        let mut request = ChatRequest::new(
            self.options.model.clone(),
            vec![
                Message::system(
                    "You write handoff notes. Summarise the conversation below for the assistant who continues it: \
                     the user's task, what was done (files read and changed, commands run and their results), \
                     important facts found, and what is left to do. Be brief and concrete; use a short list.",
                ),
                Message::user(transcript.to_owned()),
            ],
        );
        request.max_tokens = Some(self.options.max_output_tokens.min(768));
        request.sampling.temperature = Some(0.2);
        // A summary needs no reasoning, and a thinking model would spend
        // the few tokens it has on it (the answer then has no text).
        request.reasoning = Some(ReasoningEffort::Off);
        let routed = tokio::select! {
            routed = self.router.complete_routed(request) => routed?,
            () = cancel.cancelled() => return Err(LlmError::new(ErrorKind::Cancelled, "agent", "cancelled")),
        };
        let (target, response) = routed;
        self.record_usage(&target.provider, &target.model, &response.usage);
        Ok(response.message.text())
    }

    /// The reminder a guided model gets for answering `text` without a
    /// tool call, if any: see [`AgentOptions::guided`].
    fn reminder_for(&self, text: &str) -> Option<&'static str> {
        if text.trim().is_empty() {
            Some(EMPTY_ANSWER)
        } else if self.changes == 0 && text.contains("```") {
            Some(SHOWN_NOT_MADE)
        } else {
            None
        }
    }

    fn request(&self, tool_choice: ToolChoice) -> ChatRequest {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        messages.push(Message::system(self.system.clone()));
        messages.extend(self.messages.iter().cloned());
        let mut request = ChatRequest::new(self.options.model.clone(), messages);
        request.tools = self.toolbox.specs();
        request.tool_choice = tool_choice;
        request.max_tokens = Some(self.options.max_output_tokens);
        request.sampling.temperature = self.options.temperature;
        // The conversation is sent again every turn: a provider that caches
        // only what it is told to (Anthropic) then reads all but the newest
        // turn from its cache, at a tenth of the input price; the others
        // ignore this.
        request.prompt_cache = Some(serde_json::json!({"type": "ephemeral"}));
        request
    }

    /// One model call, streamed to the front end. `Ok(None)` on cancel.
    async fn call_model(
        &mut self,
        tool_choice: ToolChoice,
        frontend: &mut dyn Frontend,
        cancel: &CancellationToken,
    ) -> Result<Option<freehold_protocol::ChatResponse>, LlmError> {
        let mut retried_after_compaction = false;
        loop {
            let request = self.request(tool_choice.clone());
            let seen = self.messages.len();
            let routed = tokio::select! {
                routed = self.router.stream_routed(request) => routed,
                () = cancel.cancelled() => return Ok(None),
            };
            let (target, mut stream) = match routed {
                Ok(routed) => routed,
                // The window was smaller than we thought: compact hard and
                // try once more.
                Err(error)
                    if matches!(error.kind, ErrorKind::ContextLengthExceeded { .. })
                        && !retried_after_compaction =>
                {
                    retried_after_compaction = true;
                    let keep = (f64::from(self.usable_window()) * budget::KEEP_RECENT / 2.0) as u64;
                    if !self.compact_keeping(keep, frontend, cancel).await {
                        return Err(error);
                    }
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut builder = ResponseBuilder::default();
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    () = cancel.cancelled() => {
                        // Keep what was said so far, without half-made calls.
                        let partial = builder.finish().message;
                        let text = partial.text();
                        if !text.is_empty() {
                            self.push(Message::assistant(text));
                        }
                        return Ok(None);
                    }
                };
                let Some(event) = event else { break };
                let event = event?;
                match &event {
                    StreamEvent::TextDelta { text } => {
                        frontend.event(&AgentEvent::TextDelta { text: text.clone() });
                    }
                    StreamEvent::ReasoningDelta { text, .. } => {
                        frontend.event(&AgentEvent::ReasoningDelta { text: text.clone() });
                    }
                    _ => {}
                }
                builder.push(&event);
            }
            let response = builder.finish();
            if response.stop_reason == StopReason::MaxTokens
                && response.message.tool_calls().next().is_none()
            {
                frontend.event(&AgentEvent::Notice {
                    message: format!(
                        "the answer reached the {}-token limit and was cut",
                        self.options.max_output_tokens
                    ),
                });
            }
            self.last_prompt = Some((response.usage.input_tokens, seen));
            self.record_usage(&target.provider, &target.model, &response.usage);
            let cost = self
                .router
                .cost_of(&target.provider, &target.model, &response.usage);
            frontend.event(&AgentEvent::Usage {
                usage: response.usage,
                cost_usd: cost,
            });
            return Ok(Some(response));
        }
    }

    fn record_usage(&mut self, provider: &str, model: &str, usage: &Usage) {
        let cost = self.router.cost_of(provider, model, usage);
        self.totals.usage.add(usage);
        self.totals.model_calls += 1;
        self.totals.cost_usd = match (self.totals.cost_usd, cost) {
            (Some(total), Some(cost)) => Some(total + cost),
            // Local models cost nothing; a price the catalog does not
            // know makes the total unknown.
            (Some(total), None) if provider == "local" => Some(total),
            _ => None,
        };
        if let Err(error) = self.session.append(&Record::Usage {
            model: format!("{provider}:{model}"),
            usage: *usage,
            cost_usd: cost,
        }) {
            tracing::warn!(%error, "cannot write the transcript");
        }
    }

    /// Run the calls of one answer, adding a result message for each, in
    /// order. Consecutive reads run concurrently; edits and commands one
    /// at a time. Returns whether the user cancelled.
    async fn run_calls(
        &mut self,
        calls: &[ToolCall],
        frontend: &mut dyn Frontend,
        cancel: &CancellationToken,
        checkpointed: &mut bool,
        label: &str,
    ) -> bool {
        let mut context = self.tool_context.clone();
        context.cancel = cancel.child_token();
        let mut index = 0;
        while index < calls.len() {
            if cancel.is_cancelled() {
                for call in &calls[index..] {
                    self.add_result(
                        call,
                        Err("cancelled by the user before it ran".into()),
                        None,
                        frontend,
                    );
                }
                return true;
            }
            // A run of read-only calls goes together; anything else alone.
            let concurrent = |call: &ToolCall| {
                self.toolbox
                    .get(&call.name)
                    .is_some_and(|tool| matches!(tool.kind(), ToolKind::Read | ToolKind::Plan))
            };
            let mut end = index + 1;
            if concurrent(&calls[index]) {
                while end < calls.len() && concurrent(&calls[end]) {
                    end += 1;
                }
            }
            let mut batch = Vec::new();
            for call in &calls[index..end] {
                let prepared = self.prepare(call, frontend);
                batch.push((call.clone(), prepared));
            }
            index = end;
            if batch.len() > 1 {
                let runs = batch.iter().map(|(_, prepared)| async {
                    match prepared {
                        Prepared::Run {
                            tool, arguments, ..
                        } => Some(tool.run(arguments.clone(), &context).await),
                        _ => None,
                    }
                });
                let outputs = futures::future::join_all(runs).await;
                for ((call, prepared), output) in batch.into_iter().zip(outputs) {
                    self.finish_call(&call, prepared, output, frontend);
                }
                continue;
            }
            let Some((call, prepared)) = batch.pop() else {
                continue;
            };
            let prepared = match prepared {
                Prepared::Run {
                    tool,
                    arguments,
                    kind,
                    subject,
                } if matches!(kind, ToolKind::Edit | ToolKind::Execute) => {
                    match self
                        .authorize(&call, &arguments, kind, subject.clone(), frontend)
                        .await
                    {
                        Ok(()) => {
                            if !*checkpointed {
                                *checkpointed = true;
                                self.checkpoint(label, frontend).await;
                            }
                            Prepared::Run {
                                tool,
                                arguments,
                                kind,
                                subject,
                            }
                        }
                        Err(reason) => Prepared::Denied(reason),
                    }
                }
                other => other,
            };
            let output = match &prepared {
                Prepared::Run {
                    tool, arguments, ..
                } => Some(tool.run(arguments.clone(), &context).await),
                _ => None,
            };
            let was_cancelled = matches!(output, Some(Err(ToolError::Cancelled)));
            self.finish_call(&call, prepared, output, frontend);
            if was_cancelled {
                for call in &calls[index..] {
                    self.add_result(
                        call,
                        Err("cancelled by the user before it ran".into()),
                        None,
                        frontend,
                    );
                }
                return true;
            }
        }
        false
    }

    /// Parse, look up, permission-check (without asking) and loop-check a
    /// call.
    fn prepare(&mut self, call: &ToolCall, frontend: &mut dyn Frontend) -> Prepared {
        let arguments: serde_json::Value = match serde_json::from_str(
            if call.arguments.trim().is_empty() {
                "{}"
            } else {
                &call.arguments
            },
        ) {
            Ok(value) => value,
            Err(error) => {
                frontend.event(&AgentEvent::ToolCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: serde_json::Value::String(call.arguments.clone()),
                });
                return Prepared::Invalid(format!(
                    "the arguments are not valid JSON ({error}); call {} again with a JSON object",
                    call.name
                ));
            }
        };
        frontend.event(&AgentEvent::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: arguments.clone(),
        });
        let Some(tool) = self.toolbox.get(&call.name) else {
            return Prepared::Invalid(format!(
                "there is no tool `{}`; the tools are: {}",
                call.name,
                self.toolbox.names().join(", ")
            ));
        };
        let key = (call.name.clone(), canonical_json(&arguments));
        let seen = self.repeated.entry(key).or_insert(0);
        *seen += 1;
        // Repeating a change is never useful and can be harmful (replacing
        // `port = 80` in `port = 8080` again gives `port = 808080`).
        let limit = if tool.kind() == ToolKind::Edit {
            1
        } else {
            MAX_IDENTICAL_CALLS
        };
        if *seen > limit {
            frontend.event(&AgentEvent::Notice {
                message: format!("{} was called {} times with the same arguments; the model was told to change course", call.name, *seen),
            });
            return Prepared::Invalid(format!(
                "you already made this exact {} call {} in this task (see its result above). \
                 Do not repeat it: if the task is done, reply to the user with what you did; otherwise change the arguments or use another tool.",
                call.name,
                if *seen == 2 {
                    "once".to_owned()
                } else {
                    format!("{} times", *seen - 1)
                }
            ));
        }
        let kind = tool.kind();
        let subject = tool.subject(&arguments);
        match self
            .options
            .permissions
            .decide(&call.name, kind, subject.as_deref())
        {
            Decision::Deny(reason) => Prepared::Denied(format!("permission denied: {reason}")),
            // Asking happens just before the call runs, in order.
            Decision::Allow | Decision::Ask => Prepared::Run {
                tool,
                arguments,
                kind,
                subject,
            },
        }
    }

    /// Ask the front end for calls the rules do not allow outright.
    async fn authorize(
        &mut self,
        call: &ToolCall,
        arguments: &serde_json::Value,
        kind: ToolKind,
        subject: Option<String>,
        frontend: &mut dyn Frontend,
    ) -> Result<(), String> {
        match self
            .options
            .permissions
            .decide(&call.name, kind, subject.as_deref())
        {
            Decision::Allow => return Ok(()),
            Decision::Deny(reason) => return Err(format!("permission denied: {reason}")),
            Decision::Ask => {}
        }
        let request = ApprovalRequest {
            tool: call.name.clone(),
            kind,
            subject: subject.clone(),
            arguments: arguments.clone(),
        };
        match frontend.approve(&request).await {
            Approval::Once => Ok(()),
            Approval::Always => {
                let permissions = &mut self.options.permissions;
                match (kind, subject) {
                    (ToolKind::Execute, Some(command)) => {
                        permissions.allow.push(Rule::exact(&call.name, &command));
                    }
                    _ => {
                        for tool in ["write", "edit", "apply_patch"] {
                            permissions.allow.push(Rule::any(tool));
                        }
                    }
                }
                Ok(())
            }
            Approval::Deny(reason) => Err(reason),
        }
    }

    async fn checkpoint(&mut self, label: &str, frontend: &mut dyn Frontend) {
        if self.options.checkpoint_dir.is_none() {
            return;
        }
        let session = self.session.id().to_owned();
        let taken = match self.checkpoints().await {
            Ok(checkpoints) => checkpoints
                .snapshot(&session, label)
                .await
                .map_err(AgentError::from),
            Err(error) => Err(error),
        };
        match taken {
            Ok(checkpoint) => {
                if let Err(error) = self.session.append(&Record::Checkpoint {
                    id: checkpoint.id.clone(),
                }) {
                    tracing::warn!(%error, "cannot write the transcript");
                }
                frontend.event(&AgentEvent::Checkpoint { id: checkpoint.id });
            }
            Err(error) => frontend.event(&AgentEvent::Notice {
                message: format!("no checkpoint was taken before this change: {error}"),
            }),
        }
    }

    fn finish_call(
        &mut self,
        call: &ToolCall,
        prepared: Prepared,
        output: Option<Result<ToolOutput, ToolError>>,
        frontend: &mut dyn Frontend,
    ) {
        match (prepared, output) {
            (Prepared::Denied(reason), _) => {
                frontend.event(&AgentEvent::PermissionDenied {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    reason: reason.clone(),
                });
                self.add_result(call, Err(reason), None, frontend);
            }
            (Prepared::Invalid(reason), _) => self.add_result(call, Err(reason), None, frontend),
            (Prepared::Run { kind, .. }, Some(Ok(output))) => {
                let diff = output.diff.clone();
                let mut content = output.content;
                if kind == ToolKind::Edit {
                    self.changes += 1;
                    // Small models often go on editing after the work is
                    // done; a reminder in the result they just read is
                    // what they follow best.
                    content.push_str(AFTER_CHANGE);
                }
                self.add_result(call, Ok(content), diff, frontend);
            }
            (Prepared::Run { .. }, Some(Err(error))) => {
                self.add_result(call, Err(error.to_string()), None, frontend);
            }
            (Prepared::Run { .. }, None) => {
                self.add_result(call, Err("the call did not run".into()), None, frontend);
            }
        }
    }

    fn add_result(
        &mut self,
        call: &ToolCall,
        outcome: Result<String, String>,
        diff: Option<String>,
        frontend: &mut dyn Frontend,
    ) {
        let (content, is_error) = match outcome {
            Ok(content) => (content, false),
            Err(reason) => (format!("Error: {reason}"), true),
        };
        // A quarter of the usable window, in bytes, for one result.
        let max_bytes = (self.usable_window() as usize * 3 / 4).clamp(2_000, 60_000);
        let (content, truncated) = budget::truncate_middle(&content, max_bytes);
        if truncated {
            frontend.event(&AgentEvent::Notice {
                message: format!(
                    "the output of {} was cut to {max_bytes} bytes to fit the context",
                    call.name
                ),
            });
        }
        frontend.event(&AgentEvent::ToolResult {
            id: call.id.clone(),
            name: call.name.clone(),
            content: content.clone(),
            is_error,
            diff,
        });
        self.push(Message {
            role: Role::Tool,
            content: vec![ContentPart::ToolResult(ToolResult {
                call_id: call.id.clone(),
                content,
                is_error,
            })],
        });
    }
}

/// A call after parsing and checks.
enum Prepared {
    Run {
        tool: Arc<dyn Tool>,
        arguments: serde_json::Value,
        kind: ToolKind,
        subject: Option<String>,
    },
    /// Refused by a rule, the mode or the user.
    Denied(String),
    /// Malformed, unknown or repeated.
    Invalid(String),
}

/// JSON with sorted keys, so that `{"a":1,"b":2}` and `{"b":2,"a":1}` are
/// the same call.
fn canonical_json(value: &serde_json::Value) -> String {
    fn sort(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let sorted: std::collections::BTreeMap<_, _> =
                    map.iter().map(|(k, v)| (k.clone(), sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sort).collect())
            }
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

fn subtract(usage: &mut Usage, before: &Usage) {
    usage.input_tokens -= before.input_tokens.min(usage.input_tokens);
    usage.cached_input_tokens -= before.cached_input_tokens.min(usage.cached_input_tokens);
    usage.cache_write_tokens -= before.cache_write_tokens.min(usage.cache_write_tokens);
    usage.cache_write_1h_tokens -= before
        .cache_write_1h_tokens
        .min(usage.cache_write_1h_tokens);
    usage.output_tokens -= before.output_tokens.min(usage.output_tokens);
    usage.reasoning_tokens -= before.reasoning_tokens.min(usage.reasoning_tokens);
}
