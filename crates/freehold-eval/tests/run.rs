//! Running tasks end to end with a scripted model: the real tasks in
//! eval/tasks, time limits, the working directory and the JSON report.
//!
//! Tests marked "needs the tools" call the agent's `write` tool and pass
//! only with the real freehold-tools (not its stubs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use freehold_eval::{Filter, Progress, RunSettings, Task, load_suite, run_suite, run_task};
use freehold_llm::Catalog;
use freehold_llm::router::Router;
use freehold_llm::scripted::{ScriptedAnswer, ScriptedProvider};
use freehold_protocol::AgentStop;
use serde_json::{Value, json};

fn eval_task(name: &str) -> Task {
    Task::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../eval/tasks")
            .join(name),
    )
    .unwrap()
}

/// A router whose only provider, `scripted`, gives `answers`.
fn scripted(answers: Vec<ScriptedAnswer>) -> (Arc<Router>, ScriptedProvider) {
    let provider = ScriptedProvider::new("scripted", answers);
    let mut providers: BTreeMap<String, Arc<dyn freehold_llm::Provider>> = BTreeMap::new();
    providers.insert("scripted".into(), Arc::new(provider.clone()));
    let router = Router::new(providers, BTreeMap::new(), Catalog::builtin().unwrap());
    (Arc::new(router), provider)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "freehold-eval-run-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn entries(&self, sub: &str) -> Vec<PathBuf> {
        match std::fs::read_dir(self.0.join(sub)) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A task of its own: `toml` fields after the prompt, `files` in repo/.
    fn task(&self, name: &str, check: &str, files: &[(&str, &str)]) -> Task {
        let dir = self.0.join("tasks").join(name);
        std::fs::create_dir_all(dir.join("repo")).unwrap();
        std::fs::create_dir_all(dir.join("check")).unwrap();
        let toml = format!(
            "prompt = \"Do nothing.\"\ncheck = {check:?}\ndifficulty = \"easy\"\nlanguage = \"shell\"\nkind = \"test\"\nmax_turns = 3\n"
        );
        std::fs::write(dir.join("task.toml"), toml).unwrap();
        for (path, text) in files {
            std::fs::write(dir.join("repo").join(path), text).unwrap();
        }
        Task::load(dir).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings for the scripted model, working under `temp`.
fn settings(temp: &TempDir) -> RunSettings {
    let mut settings = RunSettings::new("scripted:test");
    settings.work_dir = Some(temp.path().join("work"));
    settings
}

/// Needs the tools: the scripted model writes hello.txt with `write`.
#[tokio::test]
async fn create_file_passes_when_the_agent_creates_it() {
    let temp = TempDir::new();
    let (router, provider) = scripted(vec![
        ScriptedAnswer::call(
            "write",
            json!({"path": "hello.txt", "content": "hello world"}),
        ),
        ScriptedAnswer::text("I created hello.txt."),
    ]);
    let report = run_task(&eval_task("01-create-hello-file"), &settings(&temp), router).await;
    assert_eq!(report.error, None, "{report:#?}");
    assert_eq!(report.stop_reason, Some(AgentStop::Completed));
    assert_eq!(report.turns, 2);
    assert_eq!(provider.remaining(), 0);
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.check_exit_code, Some(0));
}

#[tokio::test]
async fn create_file_fails_when_the_agent_does_nothing() {
    let temp = TempDir::new();
    let (router, _) = scripted(vec![ScriptedAnswer::text("Done!")]);
    let report = run_task(&eval_task("01-create-hello-file"), &settings(&temp), router).await;
    assert_eq!(report.error, None, "{report:#?}");
    assert_eq!(report.stop_reason, Some(AgentStop::Completed));
    assert!(!report.passed);
    assert_eq!(report.check_exit_code, Some(1));
    assert_eq!(report.turns, 1);
    assert_eq!(report.answer, "Done!");
    assert_eq!(report.name, "01-create-hello-file");
    assert_eq!(report.kind, "create-file");
    assert!(report.usage.input_tokens > 0);
    assert!(report.wall_ms >= report.agent_ms + report.check_ms);
}

#[tokio::test]
async fn answer_task_passes_with_the_right_answer() {
    let temp = TempDir::new();
    let (router, provider) = scripted(vec![ScriptedAnswer::text(
        "server.py listens on port 8731 by default.",
    )]);
    let task = eval_task("03-answer-default-port");
    let report = run_task(&task, &settings(&temp), router).await;
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.answer, "server.py listens on port 8731 by default.");
    // The agent got the task's prompt and worked in the copy.
    let requests = provider.requests();
    let first = requests[0]
        .messages
        .iter()
        .map(|m| m.text())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(first.contains(&task.prompt), "{first}");
    assert!(
        !first.contains(&task.dir.join("repo").display().to_string()),
        "{first}"
    );
}

#[tokio::test]
async fn answer_task_fails_with_the_wrong_answer() {
    let temp = TempDir::new();
    let (router, _) = scripted(vec![ScriptedAnswer::text("It listens on 8080.")]);
    let report = run_task(
        &eval_task("03-answer-default-port"),
        &settings(&temp),
        router,
    )
    .await;
    assert_eq!(report.error, None, "{report:#?}");
    assert!(!report.passed);
    assert_eq!(report.check_exit_code, Some(1));
}

#[tokio::test]
async fn a_slow_agent_is_cancelled_at_the_time_limit() {
    let temp = TempDir::new();
    let (router, _) = scripted(vec![
        ScriptedAnswer::text("The port is 8731.").after(Duration::from_secs(30)),
    ]);
    let mut settings = settings(&temp);
    settings.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let report = run_task(&eval_task("03-answer-default-port"), &settings, router).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.passed);
    assert!(report.timed_out);
    assert_eq!(report.stop_reason, Some(AgentStop::Cancelled));
    assert_eq!(report.error, None, "the check still runs: {report:#?}");
    assert_eq!(report.check_exit_code, Some(1));
}

#[tokio::test]
async fn a_provider_failure_fails_the_task_and_says_why() {
    let temp = TempDir::new();
    // No answers: the first request fails.
    let (router, _) = scripted(Vec::new());
    let report = run_task(
        &eval_task("03-answer-default-port"),
        &settings(&temp),
        router,
    )
    .await;
    assert!(!report.passed);
    assert!(
        matches!(&report.stop_reason, Some(AgentStop::Error(message)) if message.contains("no more answers")),
        "{report:#?}"
    );
}

#[tokio::test]
async fn the_check_runs_in_a_git_copy_with_its_environment() {
    let temp = TempDir::new();
    let check = r#"set -e
test -x run.sh
test "$(cat data.txt)" = data
test -f "$FREEHOLD_EVAL_TASK_DIR/task.toml"
test -d "$FREEHOLD_EVAL_TASK_DIR/check"
grep -qx 'the answer' "$FREEHOLD_EVAL_ANSWER"
if command -v git >/dev/null; then
    git log --format=%s | grep -qx 'Starting state'
    test -z "$(git status --porcelain)"
fi
test -z "${CARGO_TARGET_DIR:-}"
echo all good"#;
    let task = temp.task(
        "01-env",
        check,
        &[("run.sh", "#!/bin/sh\n"), ("data.txt", "data\n")],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let script = task.repo().join("run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (router, _) = scripted(vec![ScriptedAnswer::text("the answer")]);
    let report = run_task(&task, &settings(&temp), router).await;
    assert!(report.passed, "{report:#?}");
    assert!(report.check_output_tail.contains("all good"), "{report:#?}");
    // The task itself is untouched.
    assert!(!task.repo().join(".git").exists());
}

#[tokio::test]
async fn working_directories_are_removed_unless_kept() {
    let temp = TempDir::new();
    let task = temp.task("01-keep", "touch made-by-check; false", &[("a.txt", "a\n")]);
    let (router, _) = scripted(vec![ScriptedAnswer::text("ok")]);
    let report = run_task(&task, &settings(&temp), router).await;
    assert_eq!(report.work_dir, None);
    assert!(
        temp.entries("work").is_empty(),
        "{:?}",
        temp.entries("work")
    );

    let (router, _) = scripted(vec![ScriptedAnswer::text("kept answer")]);
    let mut settings = settings(&temp);
    settings.keep = true;
    let report = run_task(&task, &settings, router).await;
    let work_dir = report.work_dir.clone().unwrap();
    assert!(work_dir.join("a.txt").is_file());
    assert!(work_dir.join("made-by-check").is_file());
    let answer = work_dir.parent().unwrap().join("answer.txt");
    assert_eq!(std::fs::read_to_string(answer).unwrap(), "kept answer");
    assert_eq!(temp.entries("work").len(), 1);
}

#[tokio::test]
async fn a_check_past_its_time_limit_is_killed() {
    let temp = TempDir::new();
    // The background sleep is in the check's process group and dies too.
    let task = temp.task("01-slow-check", "echo started; sleep 60 & sleep 60", &[]);
    let (router, _) = scripted(vec![ScriptedAnswer::text("ok")]);
    let mut settings = settings(&temp);
    settings.check_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let report = run_task(&task, &settings, router).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.passed);
    assert_eq!(report.check_exit_code, None);
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("check ran past"),
        "{report:#?}"
    );
    assert!(
        report.check_output_tail.starts_with("started"),
        "{report:#?}"
    );
}

#[tokio::test]
async fn suite_report_sums_up_and_serialises() {
    let temp = TempDir::new();
    temp.task("01-pass", "true", &[]);
    temp.task("02-fail", "echo nope; exit 3", &[]);
    temp.task("03-skipped", "true", &[]);
    let tasks = load_suite(temp.path().join("tasks"), &Filter::any_of(["01-", "02-"])).unwrap();
    let (router, _) = scripted(vec![
        ScriptedAnswer::text("one"),
        ScriptedAnswer::text("two"),
    ]);
    let mut events = Vec::new();
    let report = run_suite(
        &tasks,
        &settings(&temp),
        router,
        &mut |progress| match progress {
            Progress::Started { index, total, task } => {
                events.push(format!("start {index}/{total} {}", task.name));
            }
            Progress::Finished {
                index,
                total,
                report,
            } => {
                events.push(format!(
                    "done {index}/{total} {} {}",
                    report.name, report.passed
                ));
            }
        },
    )
    .await;
    assert_eq!(
        events,
        [
            "start 0/2 01-pass",
            "done 0/2 01-pass true",
            "start 1/2 02-fail",
            "done 1/2 02-fail false",
        ]
    );
    assert_eq!(report.model, "scripted:test");
    assert_eq!(report.totals.tasks, 2);
    assert_eq!(report.totals.passed, 1);
    assert_eq!(report.totals.failed, 1);
    assert_eq!(report.totals.errors, 0);
    assert!((report.totals.pass_rate - 0.5).abs() < 1e-9);
    assert_eq!(report.totals.turns, 2);

    let path = temp.path().join("report.json");
    report.write_json(&path).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["model"], "scripted:test");
    let started_at = json["started_at"].as_str().unwrap();
    assert!(
        started_at.len() == 20 && started_at.ends_with('Z'),
        "{started_at}"
    );
    assert_eq!(json["cancelled"], false);
    let totals = &json["totals"];
    assert_eq!(totals["passed"], 1);
    assert_eq!(totals["pass_rate"], 0.5);
    assert!(totals["usage"]["input_tokens"].as_u64().unwrap() > 0);
    // The scripted model has no price: unknown, not free.
    assert!(totals["cost_usd"].is_null(), "{totals}");
    let failed = &json["tasks"][1];
    for field in [
        "name",
        "language",
        "difficulty",
        "kind",
        "passed",
        "stop_reason",
        "timed_out",
        "turns",
        "usage",
        "cost_usd",
        "wall_ms",
        "agent_ms",
        "check_ms",
        "check_exit_code",
        "check_output_tail",
        "answer",
        "session_id",
        "work_dir",
        "error",
    ] {
        assert!(failed.get(field).is_some(), "no `{field}` in {failed}");
    }
    assert_eq!(failed["name"], "02-fail");
    assert_eq!(failed["language"], "shell");
    assert_eq!(failed["difficulty"], "easy");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["stop_reason"], "completed");
    assert_eq!(failed["check_exit_code"], 3);
    assert_eq!(failed["check_output_tail"], "nope\n");
    assert_eq!(failed["answer"], "two");
    assert!(failed["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_cancelled_suite_stops_starting_tasks() {
    let temp = TempDir::new();
    temp.task("01-a", "true", &[]);
    temp.task("02-b", "true", &[]);
    let tasks = load_suite(temp.path().join("tasks"), &Filter::all()).unwrap();
    let (router, _) = scripted(vec![
        ScriptedAnswer::text("slow").after(Duration::from_secs(30)),
    ]);
    let settings = settings(&temp);
    let cancel = settings.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let report = run_suite(&tasks, &settings, router, &mut |_| {}).await;
    assert!(report.cancelled);
    assert_eq!(report.tasks.len(), 1);
    assert!(!report.tasks[0].passed);
    assert_eq!(report.tasks[0].stop_reason, Some(AgentStop::Cancelled));
    assert!(report.tasks[0].error.is_some());
}

#[tokio::test]
async fn tasks_run_in_parallel_with_jobs() {
    let temp = TempDir::new();
    temp.task("01-a", "true", &[]);
    temp.task("02-b", "true", &[]);
    temp.task("03-c", "false", &[]);
    let tasks = load_suite(temp.path().join("tasks"), &Filter::all()).unwrap();
    let delay = Duration::from_millis(1500);
    let (router, _) = scripted(vec![
        ScriptedAnswer::text("a").after(delay),
        ScriptedAnswer::text("b").after(delay),
        ScriptedAnswer::text("c").after(delay),
    ]);
    let mut settings = settings(&temp);
    settings.jobs = 3;
    let started = std::time::Instant::now();
    let report = run_suite(&tasks, &settings, router, &mut |_| {}).await;
    assert!(started.elapsed() < delay * 3, "{:?}", started.elapsed());
    // In the suite's order, whatever order they finished in.
    let names: Vec<&str> = report.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["01-a", "02-b", "03-c"]);
    assert_eq!(report.totals.passed, 2);
}
