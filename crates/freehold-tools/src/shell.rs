//! The `shell` tool: a command run by bash in the project directory, in
//! its own process group so a timeout or cancel can kill all it started.

use std::os::fd::AsFd as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use freehold_protocol::ToolSpec;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use crate::files::io_error;
use crate::{Tool, ToolContext, ToolError, ToolKind, ToolOutput, args, paths};

mod capture;
mod env;

use capture::Capture;
#[cfg(test)]
use env::is_secret_env;

/// After SIGTERM, how long the group gets before SIGKILL.
const KILL_GRACE: Duration = Duration::from_millis(500);
/// After the command exits, how long output from background children that
/// still hold the pipe is still collected.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The `shell` tool.
pub(crate) struct Shell;

#[derive(Debug, Deserialize)]
struct Args {
    command: String,
    #[serde(default, deserialize_with = "args::lenient_u64")]
    timeout: Option<u64>,
}

#[async_trait]
impl Tool for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "shell".into(),
            description: "Run a bash command in the project directory and return its output and exit code. timeout: seconds before it is killed.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "timeout": {"type": "integer"}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn kind(&self) -> ToolKind {
        ToolKind::Execute
    }

    fn subject(&self, arguments: &serde_json::Value) -> Option<String> {
        args::string_field(arguments, "command")
    }

    async fn run(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let args: Args = args::parse("shell", arguments)?;
        if args.command.trim().is_empty() {
            return Err(ToolError::failed("command is empty"));
        }
        let seconds = args
            .timeout
            .filter(|seconds| *seconds > 0)
            .unwrap_or(context.shell_timeout_secs)
            .min(context.max_shell_timeout_secs)
            .max(1);
        run_command(&args.command, seconds, context).await
    }
}

async fn run_command(
    command: &str,
    seconds: u64,
    context: &ToolContext,
) -> Result<ToolOutput, ToolError> {
    // One pipe for stdout and stderr keeps their lines in arrival order,
    // as a terminal would show them.
    let (reader, writer) = std::io::pipe().map_err(io_error("creating a pipe".into()))?;
    let stderr = writer
        .try_clone()
        .map_err(io_error("creating a pipe".into()))?;
    let mut cmd = Command::new(shell_program());
    cmd.arg("-c")
        .arg(command)
        .current_dir(paths::root(&context.root))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0)
        .env_clear()
        .envs(env::child_env(std::env::vars_os()))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(io_error(format!("starting {}", shell_program())))?;
    // The parent's copies of the pipe's write end must be closed, or the
    // read end never sees end-of-file.
    drop(cmd);
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut reader = pipe::Receiver::from_owned_fd(reader.into())
        .map_err(io_error("reading the command's output".into()))?;

    let mut capture = Capture::default();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    let mut status: Option<ExitStatus> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut open = true;
    while open || status.is_none() {
        let drain = async {
            match drain_until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read(&mut chunk), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => capture.push(&chunk[..n]),
            },
            exited = child.wait(), if status.is_none() => {
                let exited = exited.map_err(io_error("waiting for the command".into()))?;
                status = Some(exited);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            () = drain => {
                // What is already in the pipe was written before the time
                // was up: take it, even if this task was held up so long
                // that the timer fired first.
                drain_now(&reader, &mut chunk, &mut capture);
                open = false;
            },
            () = &mut deadline => {
                kill_group(&mut child, group).await;
                let output = capture.finish();
                let detail = if output.is_empty() { String::new() } else { format!("\n{output}") };
                return Err(ToolError::TimedOut { seconds, detail });
            },
            () = context.cancel.cancelled() => {
                kill_group(&mut child, group).await;
                return Err(ToolError::Cancelled);
            },
        }
    }
    Ok(ToolOutput::text(render(capture.finish(), status)))
}

/// Reads what the pipe holds now, without waiting: a pipe's worth (64 KiB
/// on Linux) a few times over at most, in case background children are
/// still writing. The read goes to the file descriptor (non-blocking)
/// rather than through tokio, whose readiness flag may not yet know of data
/// that came while this task was held up; the reader is not used after.
fn drain_now(reader: &pipe::Receiver, chunk: &mut [u8], capture: &mut Capture) {
    const MOST_READS: usize = 16;
    for _ in 0..MOST_READS {
        match nix::unistd::read(reader.as_fd(), chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => capture.push(&chunk[..n]),
        }
    }
}

/// The model's view: the output, then how the command ended unless it
/// succeeded. A failing command is not a tool error: its output matters.
fn render(mut output: String, status: Option<ExitStatus>) -> String {
    let ending = match status {
        Some(status) if status.success() => None,
        Some(status) => Some(match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code: {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "exit code: unknown".to_owned(),
        }),
        None => None,
    };
    match ending {
        Some(ending) => {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&ending);
        }
        None if output.is_empty() => output.push_str("(no output)"),
        None => {}
    }
    output
}

/// SIGTERM to the whole group, SIGKILL after a grace period for whatever
/// is left, then reap the shell.
async fn kill_group(child: &mut Child, group: Option<Pid>) {
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
        let _ = killpg(group, Signal::SIGKILL);
    } else {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

/// bash where there is one, else sh.
fn shell_program() -> &'static str {
    static PROGRAM: OnceLock<&'static str> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("bash").is_file()));
        if on_path || Path::new("/bin/bash").is_file() {
            "bash"
        } else {
            "sh"
        }
    })
}

#[cfg(test)]
mod tests;
