//! The agent's front ends through the real binary: `freehold -p`/`run`
//! against a scripted OpenAI-compatible server on 127.0.0.1 (exact
//! behaviour), and against the embedded engine with the real test models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use freehold_test_support::{
    MockServer, Scripted, Split, one_model_at_a_time, sse_text, test_model,
};
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A project directory and a private home for one test.
struct Sandbox {
    base: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let base = std::env::temp_dir().join(format!(
            "freehold-cli-agent-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(base.join("project")).unwrap();
        std::fs::create_dir_all(base.join("home")).unwrap();
        Self { base }
    }

    fn project(&self) -> PathBuf {
        self.base.join("project").canonicalize().unwrap()
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.project().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.project().join(path)).unwrap()
    }

    async fn freehold(&self, args: &[&str], config: &str) -> Run {
        self.freehold_with_input(args, config, None).await
    }

    async fn freehold_with_input(&self, args: &[&str], config: &str, input: Option<&str>) -> Run {
        let config_path = self.base.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let home = self.base.join("home");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_freehold"))
            .args(args)
            .current_dir(self.project())
            .env_clear()
            .env("HOME", &home)
            .env("FREEHOLD_DATA_DIR", home.join("data"))
            .env("FREEHOLD_MODELS_DIR", home.join("models"))
            .env("FREEHOLD_CONFIG", &config_path)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        if let Some(input) = input {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
            drop(stdin);
        }
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(600),
            child.wait_with_output(),
        )
        .await
        .expect("freehold finished within 10 minutes")
        .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn transcripts(&self) -> Vec<PathBuf> {
        let dir = self.base.join("home/data/sessions");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "mock-model",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

fn usage_chunk() -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "mock-model", "choices": [],
           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})
    .to_string()
}

/// An OpenAI-compatible streamed answer of text.
fn text_answer(text: &str) -> Scripted {
    let body = sse_text(&[
        (
            "",
            &chunk(json!({"role": "assistant", "content": text}), None),
        ),
        ("", &chunk(json!({}), Some("stop"))),
        ("", &usage_chunk()),
        ("", "[DONE]"),
    ]);
    Scripted::sse(&body, Split::Every(7))
}

/// An OpenAI-compatible streamed answer calling one tool.
fn call_answer(name: &str, arguments: Value) -> Scripted {
    let call = json!({"role": "assistant", "tool_calls": [{"index": 0, "id": format!("call_{name}"),
        "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]});
    let body = sse_text(&[
        ("", &chunk(call, None)),
        ("", &chunk(json!({}), Some("tool_calls"))),
        ("", &usage_chunk()),
        ("", "[DONE]"),
    ]);
    Scripted::sse(&body, Split::Every(7))
}

fn config_for(server: &MockServer) -> String {
    format!(
        "[providers.box]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        server.url()
    )
}

/// The tool results the model was sent in request `index`.
fn tool_messages(server: &MockServer, index: usize) -> Vec<String> {
    let body = server.requests()[index].json();
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn print_mode_edits_runs_and_answers_with_a_json_summary() {
    let server = MockServer::start(vec![
        call_answer("read", json!({"path": "notes.txt"})),
        call_answer(
            "edit",
            json!({"path": "notes.txt", "old_string": "apple", "new_string": "banana"}),
        ),
        call_answer("shell", json!({"command": "cat notes.txt"})),
        text_answer("Replaced apple with banana."),
    ])
    .await;
    let sandbox = Sandbox::new();
    sandbox.write("notes.txt", "an apple a day\n");
    let run = sandbox
        .freehold(
            &[
                "-p",
                "Replace apple with banana in notes.txt",
                "--model",
                "box:mock-model",
                "--output-format",
                "json",
                "--permission-mode",
                "acceptEdits",
                "--allowedTools",
                "shell(cat:*)",
            ],
            &config_for(&server),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sandbox.read("notes.txt"), "an banana a day\n");
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["result"], "Replaced apple with banana.");
    assert_eq!(summary["turns"], 4);
    assert_eq!(summary["stop_reason"], "completed");
    assert_eq!(summary["is_error"], false);
    assert_eq!(summary["usage"]["input_tokens"], 400);
    assert!(summary["duration_ms"].as_u64().is_some());
    let session = summary["session_id"].as_str().unwrap();
    // The shell result reached the model; the transcript is on disk.
    assert!(tool_messages(&server, 3)[2].contains("an banana a day"));
    let transcripts = sandbox.transcripts();
    assert_eq!(transcripts.len(), 1);
    assert!(transcripts[0].ends_with(format!("{session}.jsonl")));
    // The request carried the tools and a system prompt.
    let first = server.requests()[0].json();
    assert_eq!(first["tools"].as_array().unwrap().len(), 8);
    assert_eq!(first["messages"][0]["role"], "system");
}

#[tokio::test]
async fn headless_refuses_what_needs_approval_and_says_so() {
    let server = MockServer::start(vec![
        call_answer("shell", json!({"command": "touch made-by-shell"})),
        text_answer("I was not allowed to run it."),
    ])
    .await;
    let sandbox = Sandbox::new();
    let run = sandbox
        .freehold(
            &["run", "make a file", "--model", "box:mock-model"],
            &config_for(&server),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "I was not allowed to run it.");
    assert!(!sandbox.project().join("made-by-shell").exists());
    let told = tool_messages(&server, 1);
    assert!(told[0].contains("permission denied"), "{told:?}");
    assert!(told[0].contains("--allowedTools"), "{told:?}");
}

#[tokio::test]
async fn stream_json_prints_one_event_per_line() {
    let server = MockServer::start(vec![
        call_answer("glob", json!({"pattern": "*.txt"})),
        text_answer("One file."),
    ])
    .await;
    let sandbox = Sandbox::new();
    sandbox.write("a.txt", "a");
    let run = sandbox
        .freehold(
            &[
                "-p",
                "list",
                "-m",
                "box:mock-model",
                "--output-format",
                "stream-json",
            ],
            &config_for(&server),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"session_started"));
    assert_eq!(types.last(), Some(&"finished"));
    assert!(types.contains(&"tool_call"));
    assert!(types.contains(&"tool_result"));
    assert!(types.contains(&"text_delta"));
    let result = events.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert!(result["content"].as_str().unwrap().contains("a.txt"));
    assert_eq!(events.last().unwrap()["result"], "One file.");
}

#[tokio::test]
async fn continue_resumes_the_last_session_here_and_sessions_lists_it() {
    let server = MockServer::start(vec![
        text_answer("The answer is 42."),
        text_answer("You asked for the answer."),
    ])
    .await;
    let sandbox = Sandbox::new();
    let config = config_for(&server);
    let first = sandbox
        .freehold(
            &["-p", "What is the answer?", "-m", "box:mock-model"],
            &config,
        )
        .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = sandbox
        .freehold(
            &[
                "-c",
                "-p",
                "What did I ask?",
                "-m",
                "box:mock-model",
                "--output-format",
                "json",
            ],
            &config,
        )
        .await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    // One transcript, holding both tasks; the second request carried the
    // first exchange.
    assert_eq!(sandbox.transcripts().len(), 1);
    let transcript = std::fs::read_to_string(&sandbox.transcripts()[0]).unwrap();
    assert!(
        transcript.contains("The answer is 42.")
            && transcript.contains("You asked for the answer.")
    );
    let messages = server.requests()[1].json()["messages"].clone();
    assert_eq!(messages[2]["content"], "The answer is 42.");

    let listed = sandbox.freehold(&["sessions"], &config).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("What is the answer?"),
        "{}",
        listed.stdout
    );

    let missing = sandbox
        .freehold(
            &["--resume", "nope", "-p", "x", "-m", "box:mock-model"],
            &config,
        )
        .await;
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("freehold sessions"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn undo_restores_the_files_the_agent_changed() {
    let server = MockServer::start(vec![
        call_answer("write", json!({"path": "new.txt", "content": "new"})),
        call_answer(
            "edit",
            json!({"path": "keep.txt", "old_string": "one", "new_string": "two"}),
        ),
        text_answer("done"),
    ])
    .await;
    let sandbox = Sandbox::new();
    sandbox.write("keep.txt", "one\n");
    let config = config_for(&server);
    let run = sandbox
        .freehold(
            &[
                "-p",
                "change",
                "-m",
                "box:mock-model",
                "--permission-mode",
                "acceptEdits",
            ],
            &config,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sandbox.read("keep.txt"), "two\n");
    assert!(sandbox.project().join("new.txt").exists());
    // Not a git repository: the checkpoint lives in a shadow repository.
    assert!(!sandbox.project().join(".git").exists());
    let undo = sandbox.freehold(&["undo"], &config).await;
    assert_eq!(undo.code, 0, "{}", undo.stderr);
    assert_eq!(sandbox.read("keep.txt"), "one\n");
    assert!(!sandbox.project().join("new.txt").exists());
    assert!(undo.stdout.contains("deleted  new.txt"), "{}", undo.stdout);
    let again = sandbox.freehold(&["undo"], &config).await;
    assert_ne!(again.code, 0);
}

#[tokio::test]
async fn interactive_session_asks_before_commands_and_takes_slash_commands() {
    let server = MockServer::start(vec![
        call_answer("shell", json!({"command": "echo ran > ran.txt"})),
        text_answer("Ran it."),
        call_answer("shell", json!({"command": "touch refused.txt"})),
        text_answer("Understood, I did not."),
    ])
    .await;
    let sandbox = Sandbox::new();
    let input =
        "run the command\ny\n/cost\nnow the other\nno, leave it\n/mode plan\n/mode\n/nope\n/exit\n";
    let run = sandbox
        .freehold_with_input(&["-m", "box:mock-model"], &config_for(&server), Some(input))
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains("/help for commands"), "{out}");
    assert!(out.contains("● shell echo ran > ran.txt"), "{out}");
    assert!(out.contains("Allow shell echo ran > ran.txt?"), "{out}");
    assert!(out.contains("Ran it."), "{out}");
    assert_eq!(sandbox.read("ran.txt"), "ran\n");
    // /cost: two model calls of 100 + 10 tokens each so far.
    assert!(out.contains("2 model calls · 200 input tokens"), "{out}");
    // Declined with words: the model is told what the user said.
    assert!(!sandbox.project().join("refused.txt").exists());
    let told = tool_messages(&server, 3);
    assert!(
        told[1].contains("the user declined this call and said: no, leave it"),
        "{told:?}"
    );
    assert!(out.contains("permission mode: plan"), "{out}");
    assert!(out.contains("unknown command /nope"), "{out}");
}

#[tokio::test]
async fn bad_flags_are_explained() {
    let sandbox = Sandbox::new();
    let run = sandbox
        .freehold(&["-p", "x", "--permission-mode", "yolo"], "")
        .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("acceptEdits"), "{}", run.stderr);
    let run = sandbox
        .freehold(
            &["-p", "x", "-m", "box:m", "--allowedTools", "shell(git"],
            "[providers.box]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        )
        .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("closing parenthesis"), "{}", run.stderr);
}

fn stream_events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test]
async fn qwen_coder_edits_a_file_with_real_tool_calls() {
    let Some(model) = test_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let sandbox = Sandbox::new();
    sandbox.write("config.ini", "port = 80\nhost = localhost\n");
    // Greedy decoding: the same prompt gives the same calls on every run.
    let run = sandbox
        .freehold(
            &[
                "-p",
                // Spelled out: a 0.5B model given "set port to 8080" edits
                // the wrong text; given both strings it edits every time
                // (5 of 5 runs, each in a new directory).
                "In config.ini, replace \"port = 80\" with \"port = 8080\".",
                "--model",
                model.to_str().unwrap(),
                "--permission-mode",
                "acceptEdits",
                "--max-turns",
                "6",
                "--output-format",
                "stream-json",
            ],
            "[agent]\ntemperature = 0.0\n",
        )
        .await;
    let events = stream_events(&run.stdout);
    let calls: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_call").collect();
    assert!(
        !calls.is_empty(),
        "no tool calls: {}\n{}",
        run.stdout,
        run.stderr
    );
    // Every call names a real tool with schema-valid arguments (the
    // grammar's work), and the edit landed.
    let tools = [
        "read",
        "write",
        "edit",
        "apply_patch",
        "glob",
        "grep",
        "shell",
        "todo",
    ];
    for call in &calls {
        assert!(tools.contains(&call["name"].as_str().unwrap()), "{call}");
        assert!(call["arguments"].is_object(), "{call}");
    }
    // The calls were about the file the task names.
    assert!(
        calls
            .iter()
            .any(|c| c["arguments"].to_string().contains("config.ini")),
        "{}",
        run.stdout
    );
    // The edit landed, and nothing else in the file changed.
    assert_eq!(
        sandbox.read("config.ini"),
        "port = 8080\nhost = localhost\n",
        "{}",
        run.stdout
    );
    // The lean prompt: system prompt, tool definitions and the first
    // message in under 2,000 tokens of the model's own tokenizer.
    let first_usage = events.iter().find(|e| e["type"] == "usage").unwrap();
    let prompt_tokens = first_usage["usage"]["input_tokens"].as_u64().unwrap();
    assert!(prompt_tokens < 2000, "first prompt: {prompt_tokens} tokens");
    // Later turns reuse the prefix cache.
    let cached: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "usage")
        .map(|e| e["usage"]["cached_input_tokens"].as_u64().unwrap())
        .collect();
    assert!(cached.len() < 2 || cached[1] >= prompt_tokens, "{cached:?}");
    // The transcript holds the calls.
    let transcript = std::fs::read_to_string(&sandbox.transcripts()[0]).unwrap();
    assert!(transcript.contains("\"tool_call\""));
    assert!(transcript.contains("\"tool_result\""));
}

#[tokio::test]
async fn smollm2_smoke_test_runs_the_loop_end_to_end() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let sandbox = Sandbox::new();
    sandbox.write("README.md", "# Demo\nA demo project.\n");
    let run = sandbox
        .freehold(
            &[
                "-p",
                "What is this project? Read README.md.",
                "--model",
                model.to_str().unwrap(),
                "--max-turns",
                "3",
                "--output-format",
                "json",
            ],
            // A 135M model can ramble: short answers keep the test quick.
            "[agent]\nmax_output_tokens = 256\n",
        )
        .await;
    // A 135M model may or may not finish within three turns; the loop must
    // run, stop cleanly and report.
    assert!(
        run.code == 0 || run.code == 3,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let summary: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(summary["turns"].as_u64().unwrap() >= 1);
    assert!(summary["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(sandbox.transcripts().len(), 1);
}

#[tokio::test]
async fn eval_runs_suite_tasks_on_the_real_model_and_writes_its_report() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/tasks");
    let sandbox = Sandbox::new();
    let report = sandbox.project().join("report.json");
    let run = sandbox
        .freehold(
            &[
                "eval",
                suite.to_str().unwrap(),
                "--model",
                model.to_str().unwrap(),
                "-f",
                "01-create-hello-file",
                "-f",
                "03-answer-default-port",
                "--max-turns",
                "2",
                // Generous: a slow CI machine must not turn into a failure.
                "--timeout",
                "300",
                "--report",
                report.to_str().unwrap(),
            ],
            "[agent]\nmax_output_tokens = 256\n",
        )
        .await;
    // Pass or fail is the model's business; the run itself must work.
    assert!(
        run.code == 0 || run.code == 1,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("01-create-hello-file"),
        "{}",
        run.stdout
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        assert!(task["passed"].is_boolean(), "{task}");
        assert!(task["turns"].as_u64().unwrap() >= 1, "{task}");
        assert!(
            task["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{task}"
        );
        assert!(task["wall_ms"].as_u64().is_some(), "{task}");
    }
    assert_eq!(report["totals"]["tasks"], 2);
}
