//! Running a task's check: `bash -c CHECK` in the agent's copy, with a time
//! limit, its output kept in a log file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

/// The most bytes of a check's output a report keeps (the end of it, where
/// failures are).
pub(crate) const OUTPUT_TAIL_BYTES: u64 = 4000;

/// What the check did.
#[derive(Debug)]
pub(crate) struct CheckOutcome {
    /// Its exit code; `None` when it was killed (time limit, cancel) or
    /// died of a signal.
    pub(crate) exit_code: Option<i32>,
    /// Whether it ran past the time limit.
    pub(crate) timed_out: bool,
    /// Whether the suite was cancelled while it ran.
    pub(crate) cancelled: bool,
    /// The end of its output.
    pub(crate) output_tail: String,
}

impl CheckOutcome {
    /// Exit 0: the task passed.
    pub(crate) fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

/// Where the check runs and what it is told.
pub(crate) struct CheckRun<'a> {
    /// The shell command.
    pub(crate) command: &'a str,
    /// The agent's copy of the repository (the working directory).
    pub(crate) cwd: &'a Path,
    /// The task directory, as `FREEHOLD_EVAL_TASK_DIR`.
    pub(crate) task_dir: &'a Path,
    /// The answer file, as `FREEHOLD_EVAL_ANSWER`.
    pub(crate) answer: &'a Path,
    /// Where its output goes.
    pub(crate) log: &'a Path,
    /// The time limit.
    pub(crate) timeout: Duration,
}

/// Run the check. It gets its own process group, so a time-out or cancel
/// kills whatever it started (a test runner, a compiler) as well.
///
/// # Errors
/// When the log cannot be created or bash cannot be started.
pub(crate) async fn run_check(
    run: CheckRun<'_>,
    cancel: &CancellationToken,
) -> io::Result<CheckOutcome> {
    // One file for both streams keeps their order, and unlike a pipe it
    // never blocks on a grandchild that holds it open.
    let log = File::create(run.log)?;
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(run.command)
        .current_dir(run.cwd)
        .env("FREEHOLD_EVAL_TASK_DIR", run.task_dir)
        .env("FREEHOLD_EVAL_ANSWER", run.answer)
        // Like eval/validate: builds go to the copy's own target/, no
        // bytecode files, no colour codes in the log.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let (status, timed_out, cancelled) = tokio::select! {
        status = child.wait() => (Some(status?), false, false),
        () = tokio::time::sleep(run.timeout) => (None, true, false),
        () = cancel.cancelled() => (None, false, true),
    };
    // Also after a normal exit: background processes the check left behind
    // must not outlive it.
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    let status = match status {
        Some(status) => status,
        None => child.wait().await?,
    };
    let mut output_tail = read_tail(run.log, OUTPUT_TAIL_BYTES).unwrap_or_default();
    if timed_out {
        output_tail.push_str(&format!(
            "\n[freehold eval: the check ran past {} s and was killed]",
            run.timeout.as_secs()
        ));
    }
    Ok(CheckOutcome {
        exit_code: if timed_out || cancelled {
            None
        } else {
            status.code()
        },
        timed_out,
        cancelled,
        output_tail,
    })
}

/// The end of the file at `path` as text: at most its last `limit` bytes,
/// starting at a line boundary (marked `…`) when cut.
pub(crate) fn read_tail(path: &Path, limit: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(limit);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        // The cut may split a line or a character: start at the next line.
        let skip = text.find('\n').map_or(0, |at| at + 1);
        text.drain(..skip);
        text.insert_str(0, "…\n");
    }
    Ok(text)
}
