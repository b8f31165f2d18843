//! `freehold -p` / `freehold run`: one task, no questions asked (calls
//! that would need approval are refused and the model is told why), the
//! answer on standard output.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use async_trait::async_trait;
use freehold_agent::Frontend;
use freehold_protocol::{AgentEvent, AgentStop};
use tokio_util::sync::CancellationToken;

use super::render::Painter;
use super::{OutputFormat, Session};

/// Runs `task` and prints it in `format`.
pub(crate) async fn run(
    mut session: Session,
    task: &str,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let mut printer = Printer {
        format,
        progress: std::io::stderr().is_terminal(),
        painter: Painter::stderr(),
    };
    printer.event(&session.agent.started_event(session.resumed));
    let summary = session.agent.run(task, &mut printer, cancel).await;
    match format {
        OutputFormat::Text => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", summary.result.trim_end())?;
            stdout.flush()?;
            if printer.progress {
                eprintln!("{}", printer.painter.summary(&summary));
            }
        }
        OutputFormat::Json => {
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer(&mut stdout, &summary)?;
            writeln!(stdout)?;
        }
        // Every event, the summary included, was printed as it came.
        OutputFormat::StreamJson => {}
    }
    Ok(match &summary.stop_reason {
        AgentStop::Completed => ExitCode::SUCCESS,
        AgentStop::MaxTurns => {
            eprintln!(
                "error: the task was not finished within {} turns; raise --max-turns or continue with `freehold -c`",
                summary.turns
            );
            ExitCode::from(3)
        }
        AgentStop::Cancelled => {
            eprintln!("interrupted; continue with `freehold -c`");
            ExitCode::from(130)
        }
        AgentStop::Error(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    })
}

/// Prints events: as JSON lines for `stream-json`, as short progress
/// lines on a terminal's standard error otherwise.
struct Printer {
    format: OutputFormat,
    progress: bool,
    painter: Painter,
}

#[async_trait]
impl Frontend for Printer {
    fn event(&mut self, event: &AgentEvent) {
        if self.format == OutputFormat::StreamJson {
            let mut stdout = std::io::stdout().lock();
            if serde_json::to_writer(&mut stdout, event).is_ok() {
                let _ = writeln!(stdout);
                let _ = stdout.flush();
            }
            return;
        }
        if !self.progress {
            return;
        }
        let painter = self.painter;
        match event {
            AgentEvent::ToolCall {
                name, arguments, ..
            } => eprintln!("{}", painter.tool_call(name, arguments)),
            AgentEvent::ToolResult {
                content,
                is_error,
                diff,
                ..
            } => eprint!(
                "{}",
                painter.tool_result(content, *is_error, diff.as_deref())
            ),
            AgentEvent::Notice { message } => {
                eprintln!("{}", painter.dim(&format!("note: {message}")))
            }
            AgentEvent::Compacted {
                tokens_before,
                tokens_after,
                ..
            } => eprintln!(
                "{}",
                painter.dim(&format!(
                    "compacted the conversation: ~{tokens_before} → ~{tokens_after} tokens"
                ))
            ),
            _ => {}
        }
    }
}
