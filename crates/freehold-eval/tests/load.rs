//! Loading tasks and suites: the real tasks in eval/tasks, and the errors
//! a broken task.toml gets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use freehold_eval::{Difficulty, EvalError, Filter, Language, Task, load_suite};

fn eval_tasks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/tasks")
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "freehold-eval-load-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A task directory `name` with `toml` as its task.toml and a repo/.
    fn task(&self, name: &str, toml: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(dir.join("repo")).unwrap();
        std::fs::write(dir.join("task.toml"), toml).unwrap();
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = r#"
prompt = "Do it."
check = "true"
difficulty = "easy"
language = "text"
kind = "create-file"
"#;

#[test]
fn loads_the_real_suite_sorted() {
    let tasks = load_suite(eval_tasks(), &Filter::all()).unwrap();
    assert!(tasks.len() >= 20, "{}", tasks.len());
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let first = &tasks[0];
    assert_eq!(first.name, "01-create-hello-file");
    assert_eq!(first.difficulty, Difficulty::Easy);
    assert_eq!(first.language, Language::Text);
    assert_eq!(first.kind, "create-file");
    assert_eq!(first.max_turns, Some(6));
    assert!(first.prompt.contains("hello.txt"));
    assert!(first.dir.is_absolute());
    assert!(first.repo().join("README.md").is_file());
}

#[test]
fn filter_selects_by_substring_or_name() {
    let tasks = load_suite(eval_tasks(), &Filter::any_of(["answer"])).unwrap();
    assert!(tasks.len() >= 3);
    assert!(tasks.iter().all(|t| t.name.contains("answer")));

    let names = ["03-answer-default-port", "01-create-hello-file"];
    let tasks = load_suite(eval_tasks(), &Filter::any_of(names)).unwrap();
    let got: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, ["01-create-hello-file", "03-answer-default-port"]);
}

#[test]
fn a_pattern_that_matches_nothing_is_an_error() {
    let error = load_suite(eval_tasks(), &Filter::any_of(["hello", "no-such-task"])).unwrap_err();
    assert!(
        matches!(&error, EvalError::UnmatchedFilter { pattern, .. } if pattern == "no-such-task")
    );
    assert!(error.to_string().contains("no-such-task"), "{error}");
}

#[test]
fn a_task_directory_is_a_suite_of_one() {
    let tasks = load_suite(eval_tasks().join("03-answer-default-port"), &Filter::all()).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, "answer");
}

#[test]
fn an_empty_directory_has_no_tasks() {
    let temp = TempDir::new();
    std::fs::create_dir_all(temp.0.join("not-a-task")).unwrap();
    let error = load_suite(&temp.0, &Filter::all()).unwrap_err();
    assert!(matches!(error, EvalError::NoTasks { .. }), "{error}");
}

#[test]
fn bad_toml_names_the_file() {
    let temp = TempDir::new();
    let dir = temp.task("01-bad", "prompt = \"unterminated\n");
    let error = Task::load(&dir).unwrap_err();
    assert!(matches!(error, EvalError::Parse { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("01-bad/task.toml"), "{message}");
}

#[test]
fn unknown_fields_are_refused() {
    let temp = TempDir::new();
    let dir = temp.task("01-extra", &format!("{GOOD}timeout = 5\n"));
    let message = Task::load(&dir).unwrap_err().to_string();
    assert!(message.contains("task.toml"), "{message}");
    assert!(message.contains("timeout"), "{message}");
}

#[test]
fn missing_fields_and_bad_values_are_refused() {
    let temp = TempDir::new();
    let cases = [
        (GOOD.replace("check = \"true\"\n", ""), "check"),
        (GOOD.replace("\"easy\"", "\"trivial\""), "trivial"),
        (GOOD.replace("\"text\"", "\"cobol\""), "cobol"),
        (GOOD.replace("\"Do it.\"", "\"  \""), "prompt"),
        (format!("{GOOD}max_turns = 0\n"), "max_turns"),
        (format!("{GOOD}max_turns = -3\n"), "max_turns"),
    ];
    for (index, (toml, needle)) in cases.iter().enumerate() {
        let dir = temp.task(&format!("{index:02}-case"), toml);
        let message = Task::load(&dir).unwrap_err().to_string();
        assert!(message.contains("task.toml"), "{message}");
        assert!(message.contains(needle), "case {index}: {message}");
    }
    // One bad task fails the whole suite: a half-loaded suite would give
    // a misleading pass rate.
    assert!(load_suite(&temp.0, &Filter::all()).is_err());
}

#[test]
fn a_task_needs_its_repo() {
    let temp = TempDir::new();
    let dir = temp.task("01-no-repo", GOOD);
    std::fs::remove_dir(dir.join("repo")).unwrap();
    let message = Task::load(&dir).unwrap_err().to_string();
    assert!(message.contains("repo/"), "{message}");
}
