//! `freehold` with no arguments: a conversation in the terminal. Answers
//! stream as they come, each tool call shows as a line with a short result
//! and the diff of edits, calls that need approval ask y/n/always, and
//! slash commands manage the session.

use std::io::Write;
use std::process::ExitCode;

use async_trait::async_trait;
use freehold_agent::{Approval, ApprovalRequest, Frontend, PermissionMode};
use freehold_engine::default_model::Purpose;
use freehold_llm::cost::CostDisplay;
use freehold_protocol::AgentEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Session;
use super::render::{Painter, describe_call};

const HELP: &str = "\
Type a task or a question; Ctrl-C interrupts the agent (the session is kept).
  /model [NAME]   show or switch the model (provider:model, or local)
  /mode [MODE]    show or set the permission mode: default, acceptEdits, plan, bypassPermissions
  /compact        summarise older turns to free context
  /undo           restore the files to the checkpoint before the last change
  /cost           tokens and cost of this session
  /clear          start the conversation afresh (the transcript keeps it)
  /help           this help
  /exit           leave (Ctrl-D too)
End a line with \\ to continue on the next.";

/// Runs the conversation until `/exit`, end of input or Ctrl-C at the
/// prompt.
pub(crate) async fn run(mut session: Session) -> anyhow::Result<ExitCode> {
    let painter = Painter::stdout();
    let mut input = Input::spawn();
    let agent = &session.agent;
    println!(
        "{} {} {}",
        painter.bold("freehold"),
        painter.dim(&format!("· {} ·", agent.model())),
        painter.dim(&format!(
            "session {} · /help for commands",
            agent.session_id()
        ))
    );
    if session.resumed {
        println!(
            "{}",
            painter.dim(&format!(
                "resumed: {} messages so far",
                session.agent.messages().len()
            ))
        );
    }
    loop {
        print!("{} ", painter.bold(">"));
        let _ = std::io::stdout().flush();
        let line = tokio::select! {
            line = input.line() => line,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else {
            println!();
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            match command_outcome(&mut session, command, painter, &mut input).await {
                Flow::Continue => continue,
                Flow::Exit => break,
            }
        }
        run_task(&mut session, line, painter, &mut input).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_task(session: &mut Session, task: &str, painter: Painter, input: &mut Input) {
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let mut terminal = Terminal {
        painter,
        input,
        cancel: cancel.clone(),
        at_line_start: true,
    };
    let summary = session.agent.run(task, &mut terminal, cancel).await;
    watcher.abort();
    terminal.line_break();
    println!("{}", painter.summary(&summary));
}

enum Flow {
    Continue,
    Exit,
}

async fn command_outcome(
    session: &mut Session,
    command: &str,
    painter: Painter,
    input: &mut Input,
) -> Flow {
    let (name, argument) = match command.split_once(' ') {
        Some((name, rest)) => (name, rest.trim()),
        None => (command, ""),
    };
    let agent = &mut session.agent;
    match name {
        "exit" | "quit" | "q" => return Flow::Exit,
        "help" | "?" => println!("{HELP}"),
        "model" if argument.is_empty() => println!("model: {}", agent.model()),
        "model" => match crate::local_model::model_name(Some(argument), Purpose::Chat).await {
            Ok(model) => {
                let window = session.window_for(&model).await;
                session.agent.set_model(model.clone(), Some(window));
                println!(
                    "{}",
                    painter.dim(&format!("now using {model} ({window}-token budget)"))
                );
            }
            Err(error) => println!("{}", painter.red(&format!("error: {error:#}"))),
        },
        "mode" if argument.is_empty() => {
            println!("permission mode: {}", agent.permissions_mut().mode);
        }
        "mode" => match argument.parse::<PermissionMode>() {
            Ok(mode) => {
                agent.permissions_mut().mode = mode;
                println!("{}", painter.dim(&format!("permission mode: {mode}")));
            }
            Err(error) => println!("{}", painter.red(&error)),
        },
        "compact" => {
            let cancel = CancellationToken::new();
            let mut terminal = Terminal {
                painter,
                input,
                cancel: cancel.clone(),
                at_line_start: true,
            };
            if let Err(error) = agent.compact(&mut terminal, &cancel).await {
                println!("{}", painter.red(&format!("cannot compact: {error}")));
            }
        }
        "undo" => match agent.undo().await {
            Ok(report) => {
                if report.restored.is_empty() && report.deleted.is_empty() {
                    println!(
                        "{}",
                        painter.dim("nothing changed since the last checkpoint")
                    );
                }
                for path in &report.restored {
                    println!("  {} {path}", painter.green("restored"));
                }
                for path in &report.deleted {
                    println!("  {} {path}", painter.red("deleted"));
                }
            }
            Err(error) => println!("{}", painter.red(&format!("cannot undo: {error}"))),
        },
        "cost" => {
            let totals = agent.totals();
            let usage = totals.usage;
            println!(
                "{} model calls · {} input tokens ({} cached) · {} output tokens · {} · ~{} tokens in context",
                totals.model_calls,
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens,
                CostDisplay(totals.cost_usd),
                agent.estimated_tokens()
            );
        }
        "clear" => match agent.clear() {
            Ok(()) => println!("{}", painter.dim("conversation cleared")),
            Err(error) => println!("{}", painter.red(&format!("error: {error}"))),
        },
        other => println!(
            "{}",
            painter.red(&format!("unknown command /{other}; /help lists them"))
        ),
    }
    Flow::Continue
}

/// Lines typed by the user, read on a thread of their own: a blocking read
/// of the terminal must not hold up the async runtime or its shutdown.
struct Input {
    lines: mpsc::Receiver<String>,
}

impl Input {
    fn spawn() -> Self {
        let (sender, lines) = mpsc::channel(16);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut buffer = String::new();
            loop {
                buffer.clear();
                match stdin.read_line(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = buffer.trim_end_matches(['\n', '\r']).to_owned();
                        if sender.blocking_send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Self { lines }
    }

    /// The next logical line (lines ending in `\` continue), `None` at the
    /// end of input.
    async fn line(&mut self) -> Option<String> {
        let mut text = String::new();
        loop {
            let line = self.lines.recv().await?;
            match line.strip_suffix('\\') {
                Some(start) => {
                    text.push_str(start);
                    text.push('\n');
                }
                None => {
                    text.push_str(&line);
                    return Some(text);
                }
            }
        }
    }
}

/// Renders events on the terminal and asks for approvals.
struct Terminal<'a> {
    painter: Painter,
    input: &'a mut Input,
    cancel: CancellationToken,
    at_line_start: bool,
}

impl Terminal<'_> {
    fn print(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
        if !text.is_empty() {
            self.at_line_start = text.ends_with('\n');
        }
    }

    fn line_break(&mut self) {
        if !self.at_line_start {
            self.print("\n");
        }
    }
}

#[async_trait]
impl Frontend for Terminal<'_> {
    fn event(&mut self, event: &AgentEvent) {
        let painter = self.painter;
        match event {
            AgentEvent::TextDelta { text } => self.print(text),
            AgentEvent::ReasoningDelta { text } => self.print(&painter.dim(text)),
            AgentEvent::ToolCall {
                name, arguments, ..
            } => {
                self.line_break();
                self.print(&format!("{}\n", painter.tool_call(name, arguments)));
            }
            AgentEvent::ToolResult {
                content,
                is_error,
                diff,
                ..
            } => self.print(&painter.tool_result(content, *is_error, diff.as_deref())),
            AgentEvent::Notice { message } => {
                self.line_break();
                self.print(&format!("{}\n", painter.dim(&format!("note: {message}"))));
            }
            AgentEvent::Checkpoint { id } => {
                let short: String = id.chars().take(8).collect();
                self.print(&format!(
                    "{}\n",
                    painter.dim(&format!("  checkpoint {short} (/undo restores it)"))
                ));
            }
            AgentEvent::Compacted {
                tokens_before,
                tokens_after,
                ..
            } => {
                self.line_break();
                self.print(&format!(
                    "{}\n",
                    painter.dim(&format!(
                        "compacted the conversation: ~{tokens_before} → ~{tokens_after} tokens"
                    ))
                ));
            }
            _ => {}
        }
    }

    async fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        self.line_break();
        let what = describe_call(&request.tool, &request.arguments);
        let always = match request.kind {
            freehold_tools::ToolKind::Execute => "always allow this command",
            _ => "allow all edits this session",
        };
        self.print(&format!(
            "{} {} {}? {}",
            self.painter.bold("Allow"),
            self.painter.cyan(&request.tool),
            what,
            self.painter.dim(&format!(
                "[y]es / [n]o / [a]lways ({always}) / or say what to do instead: "
            ))
        ));
        let answer = tokio::select! {
            line = self.input.line() => line,
            () = self.cancel.cancelled() => None,
        };
        self.at_line_start = true;
        let Some(answer) = answer else {
            return Approval::Deny("the user interrupted".into());
        };
        match answer.trim().to_lowercase().as_str() {
            "y" | "yes" => Approval::Once,
            "a" | "always" => Approval::Always,
            "" | "n" | "no" => Approval::Deny(
                "the user declined this call; do not retry it, ask them or take another approach"
                    .into(),
            ),
            _ => Approval::Deny(format!(
                "the user declined this call and said: {}",
                answer.trim()
            )),
        }
    }
}
