use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::testing::{call, project};

#[tokio::test]
async fn interleaves_stdout_and_stderr_and_runs_in_the_root() {
    let (dir, context) = project();
    let out = call(
        &Shell,
        &context,
        json!({"command": "echo out; echo err >&2; echo out2; pwd"}),
    )
    .await
    .unwrap();
    let root = paths::root(dir.path());
    assert_eq!(out.content, format!("out\nerr\nout2\n{}\n", root.display()));
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code() {
    let (_dir, context) = project();
    let out = call(&Shell, &context, json!({"command": "echo hi; exit 3"}))
        .await
        .unwrap();
    assert_eq!(out.content, "hi\nexit code: 3");
    let out = call(&Shell, &context, json!({"command": "true"}))
        .await
        .unwrap();
    assert_eq!(out.content, "(no output)");
    let error = call(&Shell, &context, json!({"command": " "}))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "command is empty");
}

/// Whether process `pid` still runs (a zombie waiting to be reaped by
/// init does not count).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

async fn gone_soon(pid: &str) -> bool {
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (dir, context) = project();
    let started = Instant::now();
    let error = call(
        &Shell,
        &context,
        // 3 s: time for bash to start and write both lines on a loaded machine.
        json!({"command": "sleep 30 & echo $! > bg.pid; echo started; sleep 30", "timeout": 3}),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(12));
    match error {
        ToolError::TimedOut { seconds, detail } => {
            assert_eq!(seconds, 3);
            assert_eq!(detail, "\nstarted\n");
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let pid = std::fs::read_to_string(dir.path().join("bg.pid")).unwrap();
    assert!(
        gone_soon(pid.trim()).await,
        "background child {pid} survived"
    );
}

#[tokio::test]
async fn the_timeout_is_capped_by_the_context() {
    let (_dir, mut context) = project();
    context.max_shell_timeout_secs = 1;
    let error = call(
        &Shell,
        &context,
        json!({"command": "sleep 20", "timeout": 600}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ToolError::TimedOut { seconds: 1, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn cancel_kills_the_command() {
    let (dir, context) = project();
    let cancel = context.cancel.clone();
    let pid_file = dir.path().join("bg.pid");
    let watcher = tokio::spawn(async move {
        // Cancel once the command is under way and has told its child's pid.
        while !std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n')) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    });
    let started = Instant::now();
    let error = call(
        &Shell,
        &context,
        json!({"command": "sleep 30 & echo $! > bg.pid; sleep 30"}),
    )
    .await
    .unwrap_err();
    watcher.await.unwrap();
    assert!(matches!(error, ToolError::Cancelled), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid = std::fs::read_to_string(dir.path().join("bg.pid")).unwrap();
    assert!(
        gone_soon(pid.trim()).await,
        "background child {pid} survived"
    );
}

#[tokio::test]
async fn background_children_do_not_hold_the_call() {
    let (_dir, context) = project();
    let started = Instant::now();
    let out = call(&Shell, &context, json!({"command": "sleep 3 & echo done"}))
        .await
        .unwrap();
    assert_eq!(out.content, "done\n");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn huge_output_keeps_head_and_tail() {
    let (_dir, context) = project();
    let out = call(&Shell, &context, json!({"command": "seq 1 200000"}))
        .await
        .unwrap();
    assert!(out.content.starts_with("1\n2\n3\n"));
    assert!(out.content.ends_with("199999\n200000\n"));
    assert!(out.content.contains(" lines omitted ...]\n"));
    assert!(out.content.len() < 31_000, "{}", out.content.len());
}

#[test]
fn secret_variables_are_recognized() {
    for name in [
        "OPENAI_API_KEY",
        "anthropic_api_key",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "FREEHOLD_MODEL",
        "DATABASE_URL",
    ] {
        assert!(is_secret_env(name), "{name}");
    }
    for name in ["PATH", "HOME", "USER", "LANG", "CARGO_HOME", "TERM"] {
        assert!(!is_secret_env(name), "{name}");
    }
}

#[test]
fn child_env_drops_secrets_and_disables_pagers() {
    let vars = [("PATH", "/bin"), ("MY_API_KEY", "x"), ("PAGER", "less")]
        .map(|(name, value)| (name.into(), value.into()));
    let env = env::child_env(vars.into_iter());
    let names: Vec<String> = env
        .iter()
        .map(|(name, value)| format!("{}={}", name.display(), value.display()))
        .collect();
    assert_eq!(
        names,
        [
            "PATH=/bin",
            "PAGER=cat",
            "GIT_PAGER=cat",
            "GIT_TERMINAL_PROMPT=0"
        ]
    );
}

/// Set in the copy of this test binary that the test below starts.
const CHILD_MARK: &str = "FREEHOLD_TOOLS_TEST_CHILD";

/// Runs the shell tool in a copy of the test binary whose environment has
/// a fake secret (the test process's own environment is left alone).
#[tokio::test]
async fn secrets_do_not_reach_commands() {
    if std::env::var_os(CHILD_MARK).is_some() {
        let (_dir, context) = project();
        let command = "echo key=${FAKE_API_KEY:-unset} plain=${PLAIN_VAR:-unset} mark=${FREEHOLD_TOOLS_TEST_CHILD:-unset}";
        let out = call(&Shell, &context, json!({"command": command}))
            .await
            .unwrap();
        assert_eq!(out.content, "key=unset plain=visible mark=unset\n");
        return;
    }
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shell::tests::secrets_do_not_reach_commands",
            "--test-threads=1",
        ])
        .env(CHILD_MARK, "1")
        .env("FAKE_API_KEY", "sk-fake")
        .env("PLAIN_VAR", "visible")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    // The filter must have found the test, or nothing was checked.
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[tokio::test]
async fn the_last_drain_takes_what_the_pipe_holds_without_waiting_for_tokio() {
    // Output written before the drain time ran out must not be lost to a
    // reader that tokio has not yet seen become readable.
    let (reader, mut writer) = std::io::pipe().unwrap();
    let reader = pipe::Receiver::from_owned_fd(reader.into()).unwrap();
    std::io::Write::write_all(&mut writer, b"last words\n").unwrap();
    let mut capture = Capture::default();
    let mut chunk = vec![0u8; 4];
    drain_now(&reader, &mut chunk, &mut capture);
    assert_eq!(capture.finish(), "last words\n");
    // An empty pipe whose writer is still open: nothing, and no wait.
    let mut capture = Capture::default();
    drain_now(&reader, &mut chunk, &mut capture);
    assert_eq!(capture.finish(), "");
}
