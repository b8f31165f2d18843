//! The loop, end to end with real tools on a real directory and a scripted
//! model: every behaviour here is deterministic.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freehold_agent::{
    Agent, AgentOptions, Approval, ApprovalRequest, Collect, Frontend, PermissionMode, SessionStore,
};
use freehold_llm::Catalog;
use freehold_llm::router::Router;
use freehold_llm::scripted::{ScriptedAnswer, ScriptedProvider};
use freehold_protocol::{AgentEvent, AgentStop, ContentPart, Role, ToolChoice};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Fixture {
    base: PathBuf,
    project: PathBuf,
    store: SessionStore,
    provider: ScriptedProvider,
    router: Arc<Router>,
}

impl Fixture {
    fn new(answers: Vec<ScriptedAnswer>) -> Self {
        let base = std::env::temp_dir().join(format!(
            "freehold-agent-loop-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let project = base.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let provider = ScriptedProvider::new("scripted", answers);
        let mut providers: BTreeMap<String, Arc<dyn freehold_llm::Provider>> = BTreeMap::new();
        providers.insert("scripted".into(), Arc::new(provider.clone()));
        let router = Arc::new(Router::new(
            providers,
            BTreeMap::new(),
            Catalog::builtin().unwrap(),
        ));
        Self {
            store: SessionStore::new(base.join("sessions")),
            base,
            project,
            provider,
            router,
        }
    }

    fn options(&self, mode: PermissionMode) -> AgentOptions {
        let mut options = AgentOptions::new("scripted:test", &self.project);
        options.permissions.mode = mode;
        options.checkpoint_dir = Some(self.base.join("checkpoints"));
        options
    }

    fn agent(&self, mode: PermissionMode) -> Agent {
        Agent::start(self.router.clone(), self.options(mode), &self.store).unwrap()
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.project.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.project.join(path)).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn tool_results(events: &[AgentEvent]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::ToolResult {
                name,
                content,
                is_error,
                ..
            } => Some((name.clone(), content.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

/// The tool results the model was sent in the last request.
fn results_sent(provider: &ScriptedProvider) -> Vec<String> {
    let requests = provider.requests();
    let last = requests.last().unwrap();
    last.messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .flat_map(|m| m.content.iter())
        .filter_map(|part| match part {
            ContentPart::ToolResult(result) => Some(result.content.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn read_edit_shell_answer() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("read", json!({"path": "greeting.txt"})),
        ScriptedAnswer::call(
            "edit",
            json!({"path": "greeting.txt", "old_string": "hello", "new_string": "goodbye"}),
        ),
        ScriptedAnswer::call("shell", json!({"command": "cat greeting.txt"})),
        ScriptedAnswer::text("I changed hello to goodbye."),
    ]);
    fixture.write("greeting.txt", "hello world\n");
    let mut agent = fixture.agent(PermissionMode::BypassPermissions);
    let mut frontend = Collect::default();
    let summary = agent
        .run(
            "Say goodbye instead",
            &mut frontend,
            CancellationToken::new(),
        )
        .await;

    assert_eq!(summary.stop_reason, AgentStop::Completed);
    assert!(!summary.is_error);
    assert_eq!(summary.result, "I changed hello to goodbye.");
    assert_eq!(summary.turns, 4);
    assert!(summary.usage.input_tokens > 0);
    assert_eq!(fixture.read("greeting.txt"), "goodbye world\n");
    let results = tool_results(&frontend.events);
    assert_eq!(results.len(), 3);
    assert!(results[0].1.contains("hello world"), "{results:?}");
    assert!(results[2].1.contains("goodbye world"), "{results:?}");
    assert!(results.iter().all(|(_, _, is_error)| !is_error));
    // The edit's diff reached the front end.
    assert!(frontend.events.iter().any(|e| matches!(
        e,
        AgentEvent::ToolResult { name, diff: Some(diff), .. } if name == "edit" && diff.contains("+goodbye world")
    )));
    // The model saw every result, and the system prompt and tools were the
    // same bytes on every call (the prefix cache depends on it).
    assert_eq!(results_sent(&fixture.provider).len(), 3);
    let requests = fixture.provider.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests[1..] {
        assert_eq!(request.messages[0], requests[0].messages[0]);
        assert_eq!(request.tools, requests[0].tools);
    }
    // Every call asks a provider that caches only what it is told to
    // (Anthropic) to cache the conversation.
    assert!(
        requests
            .iter()
            .all(|r| r.prompt_cache == Some(json!({"type": "ephemeral"}))),
        "{:?}",
        requests[0].prompt_cache
    );
    // The first user message carries the environment, then the task.
    let first_user = requests[0].messages[1].text();
    assert!(first_user.starts_with("<env>"), "{first_user}");
    assert!(first_user.ends_with("Say goodbye instead"));
    // The transcript holds the conversation.
    let transcript = std::fs::read_to_string(agent.transcript()).unwrap();
    assert!(transcript.contains("\"type\":\"meta\""));
    assert!(transcript.contains("I changed hello to goodbye."));
    assert_eq!(transcript.matches("\"type\":\"usage\"").count(), 4);
    assert!(matches!(
        frontend.events.last(),
        Some(AgentEvent::Finished(_))
    ));
}

#[tokio::test]
async fn headless_mode_denies_what_would_ask_and_tells_the_model() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("shell", json!({"command": "touch created-by-shell"})),
        ScriptedAnswer::call("write", json!({"path": "new.txt", "content": "x"})),
        ScriptedAnswer::text("I could not run it."),
    ]);
    let mut agent = fixture.agent(PermissionMode::Default);
    let mut frontend = Collect::default();
    let summary = agent
        .run("Create a file", &mut frontend, CancellationToken::new())
        .await;
    assert_eq!(summary.stop_reason, AgentStop::Completed);
    assert!(!fixture.project.join("created-by-shell").exists());
    assert!(!fixture.project.join("new.txt").exists());
    let denied: Vec<_> = frontend
        .events
        .iter()
        .filter(|e| matches!(e, AgentEvent::PermissionDenied { .. }))
        .collect();
    assert_eq!(denied.len(), 2);
    let sent = results_sent(&fixture.provider);
    assert!(sent[0].contains("non-interactive"), "{sent:?}");
    assert!(
        sent[0].contains("--allowedTools \"shell(touch created-by-shell)\""),
        "{sent:?}"
    );
    assert!(
        sent[1].contains("--permission-mode acceptEdits"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn rules_allow_and_deny_beats_allow() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("shell", json!({"command": "echo allowed > out.txt"})),
        ScriptedAnswer::call("shell", json!({"command": "git --version"})),
        ScriptedAnswer::call("shell", json!({"command": "rm -f keep.txt"})),
        ScriptedAnswer::text("done"),
    ]);
    fixture.write("keep.txt", "keep");
    let mut options = fixture.options(PermissionMode::Default);
    options.permissions.allow = vec!["shell(git:*)".parse().unwrap(), "shell".parse().unwrap()];
    options.permissions.deny = vec!["shell(rm:*)".parse().unwrap()];
    let mut agent = Agent::start(fixture.router.clone(), options, &fixture.store).unwrap();
    let mut frontend = Collect::default();
    agent
        .run("go", &mut frontend, CancellationToken::new())
        .await;
    let results = tool_results(&frontend.events);
    assert!(!results[0].2, "{results:?}");
    assert!(!results[1].2, "{results:?}");
    assert!(
        results[2].2 && results[2].1.contains("shell(rm:*)"),
        "{results:?}"
    );
    assert_eq!(fixture.read("keep.txt"), "keep");
    assert_eq!(fixture.read("out.txt"), "allowed\n");
}

/// A front end that answers every question the same way and counts them.
struct Answering {
    answer: Approval,
    asked: Vec<ApprovalRequest>,
    events: Vec<AgentEvent>,
}

#[async_trait::async_trait]
impl Frontend for Answering {
    fn event(&mut self, event: &AgentEvent) {
        self.events.push(event.clone());
    }

    async fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        self.asked.push(request.clone());
        self.answer.clone()
    }
}

#[tokio::test]
async fn always_is_remembered_for_the_session() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("shell", json!({"command": "echo one >> log.txt"})),
        ScriptedAnswer::call("shell", json!({"command": "echo one >> log.txt"})),
        ScriptedAnswer::call("shell", json!({"command": "echo two >> log.txt"})),
        ScriptedAnswer::text("done"),
    ]);
    let mut agent = fixture.agent(PermissionMode::Default);
    let mut frontend = Answering {
        answer: Approval::Always,
        asked: Vec::new(),
        events: Vec::new(),
    };
    agent
        .run("log", &mut frontend, CancellationToken::new())
        .await;
    // Asked for the first command and for the different third one only.
    let asked: Vec<_> = frontend
        .asked
        .iter()
        .map(|r| r.subject.clone().unwrap())
        .collect();
    assert_eq!(asked, ["echo one >> log.txt", "echo two >> log.txt"]);
    assert_eq!(fixture.read("log.txt"), "one\none\ntwo\n");
}

#[tokio::test]
async fn cancel_kills_the_running_command_and_keeps_the_session() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("shell", json!({"command": "sleep 30; touch too-late"})),
        ScriptedAnswer::text("never reached"),
    ]);
    let mut agent = fixture.agent(PermissionMode::BypassPermissions);
    let mut frontend = Collect::default();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let summary = agent.run("wait", &mut frontend, cancel).await;
    assert_eq!(summary.stop_reason, AgentStop::Cancelled);
    assert!(summary.is_error);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let results = tool_results(&frontend.events);
    assert_eq!(results.len(), 1);
    assert!(
        results[0].2 && results[0].1.contains("cancelled"),
        "{results:?}"
    );
    // The command's process group is gone: the file never appears.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fixture.project.join("too-late").exists());
    // The conversation is kept (call, result, the interrupt note) and the
    // unused answer is still queued.
    let roles: Vec<Role> = agent.messages().iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
    assert_eq!(fixture.provider.remaining(), 1);
}

#[tokio::test]
async fn cancel_while_the_model_is_thinking() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::text("slow").after(Duration::from_secs(30)),
    ]);
    let mut agent = fixture.agent(PermissionMode::BypassPermissions);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let summary = agent.run("think", &mut Collect::default(), cancel).await;
    assert_eq!(summary.stop_reason, AgentStop::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn repeated_identical_calls_are_stopped() {
    let read = || ScriptedAnswer::call("read", json!({"path": "a.txt"}));
    let fixture = Fixture::new(vec![read(), read(), read(), ScriptedAnswer::text("ok")]);
    fixture.write("a.txt", "a\n");
    let mut agent = fixture.agent(PermissionMode::Default);
    let mut frontend = Collect::default();
    agent
        .run("read it", &mut frontend, CancellationToken::new())
        .await;
    let results = tool_results(&frontend.events);
    assert!(!results[0].2 && !results[1].2);
    assert!(results[2].2, "{results:?}");
    assert!(results[2].1.contains("Do not repeat it"), "{results:?}");
    assert!(frontend.events.iter().any(
        |e| matches!(e, AgentEvent::Notice { message } if message.contains("same arguments"))
    ));
}

#[tokio::test]
async fn the_turn_limit_stops_the_loop() {
    let fixture = Fixture::new(
        (0..5)
            .map(|i| ScriptedAnswer::call("glob", json!({"pattern": format!("*{i}")})))
            .collect(),
    );
    let mut options = fixture.options(PermissionMode::Default);
    options.max_turns = 3;
    let mut agent = Agent::start(fixture.router.clone(), options, &fixture.store).unwrap();
    let summary = agent
        .run("loop", &mut Collect::default(), CancellationToken::new())
        .await;
    assert_eq!(summary.stop_reason, AgentStop::MaxTurns);
    assert_eq!(summary.turns, 3);
    assert!(summary.is_error);
}

#[tokio::test]
async fn bad_calls_are_explained_to_the_model() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("frobnicate", json!({})),
        ScriptedAnswer::call("read", json!({"file": "a.txt"})),
        ScriptedAnswer::text("ok"),
    ]);
    let mut agent = fixture.agent(PermissionMode::Default);
    let mut frontend = Collect::default();
    agent
        .run("go", &mut frontend, CancellationToken::new())
        .await;
    let results = tool_results(&frontend.events);
    assert!(
        results[0].2 && results[0].1.contains("no tool `frobnicate`"),
        "{results:?}"
    );
    assert!(results[0].1.contains("read, write, edit"), "{results:?}");
    assert!(results[1].2 && results[1].1.contains("path"), "{results:?}");
}

#[tokio::test]
async fn parallel_reads_all_answer_in_order() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::calls(&[
            ("read", json!({"path": "a.txt"})),
            ("read", json!({"path": "b.txt"})),
            ("grep", json!({"pattern": "bee"})),
        ]),
        ScriptedAnswer::text("ok"),
    ]);
    fixture.write("a.txt", "ay\n");
    fixture.write("b.txt", "bee\n");
    let mut agent = fixture.agent(PermissionMode::Default);
    let mut frontend = Collect::default();
    agent
        .run("read both", &mut frontend, CancellationToken::new())
        .await;
    let results = tool_results(&frontend.events);
    assert_eq!(results.len(), 3);
    assert!(results[0].1.contains("ay"));
    assert!(results[1].1.contains("bee"));
    assert!(results[2].1.contains("b.txt"));
    let sent = results_sent(&fixture.provider);
    assert_eq!(sent.len(), 3);
}

#[tokio::test]
async fn compaction_summarises_older_turns_at_the_budget() {
    let big: String = (0..400)
        .map(|i| format!("line {i} of a long file\n"))
        .collect();
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call("read", json!({"path": "big.txt"})),
        ScriptedAnswer::call("read", json!({"path": "big.txt", "offset": 2})),
        ScriptedAnswer::call("read", json!({"path": "big.txt", "offset": 3})),
        // The summariser's answer.
        ScriptedAnswer::text("HANDOFF: read big.txt three times; nothing changed."),
        ScriptedAnswer::text("finished"),
    ]);
    fixture.write("big.txt", &big);
    let mut options = fixture.options(PermissionMode::Default);
    options.context_window = 6000;
    options.max_output_tokens = 1000;
    let mut agent = Agent::start(fixture.router.clone(), options, &fixture.store).unwrap();
    let mut frontend = Collect::default();
    let summary = agent
        .run("read big.txt", &mut frontend, CancellationToken::new())
        .await;
    assert_eq!(
        summary.stop_reason,
        AgentStop::Completed,
        "{:?}",
        frontend.events
    );
    assert_eq!(summary.result, "finished");
    let compacted = frontend.events.iter().find_map(|e| match e {
        AgentEvent::Compacted {
            tokens_before,
            tokens_after,
            messages_summarized,
        } => Some((*tokens_before, *tokens_after, *messages_summarized)),
        _ => None,
    });
    let (before, after, summarized) = compacted.expect("a compaction");
    assert!(after < before, "{before} -> {after}");
    assert!(summarized >= 2);
    // The summariser got the transcript without tools; the next call got
    // the summary instead of the older turns.
    let requests = fixture.provider.requests();
    let summariser = requests.iter().find(|r| r.tools.is_empty()).unwrap();
    assert!(
        summariser.messages[1]
            .text()
            .contains("Assistant called read")
    );
    let last = requests.last().unwrap();
    let text: String = last.messages.iter().map(|m| m.text()).collect();
    assert!(text.contains("HANDOFF: read big.txt"), "{text}");
    assert!(last.messages.len() < requests[requests.len() - 3].messages.len());
    let transcript = std::fs::read_to_string(agent.transcript()).unwrap();
    assert!(transcript.contains("\"type\":\"compacted\""));
}

#[tokio::test]
async fn resume_continues_the_same_transcript() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::text("The answer is 42."),
        ScriptedAnswer::text("You asked about the answer."),
    ]);
    let id = {
        let mut agent = fixture.agent(PermissionMode::Default);
        agent
            .run(
                "What is the answer?",
                &mut Collect::default(),
                CancellationToken::new(),
            )
            .await;
        agent.session_id().to_owned()
    };
    let latest = fixture.store.latest_in(&fixture.project).unwrap().unwrap();
    assert_eq!(latest.meta.id, id);
    assert_eq!(latest.title, "What is the answer?");
    let mut agent = Agent::resume(
        fixture.router.clone(),
        fixture.options(PermissionMode::Default),
        &fixture.store,
        &id,
    )
    .unwrap();
    assert_eq!(agent.session_id(), id);
    assert_eq!(agent.totals().model_calls, 1);
    let summary = agent
        .run(
            "What did I ask?",
            &mut Collect::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(summary.session_id, id);
    let requests = fixture.provider.requests();
    let texts: Vec<String> = requests[1].messages.iter().map(|m| m.text()).collect();
    assert!(texts[1].ends_with("What is the answer?"));
    assert_eq!(texts[2], "The answer is 42.");
    // No second environment note on a resumed conversation.
    assert_eq!(texts[3], "What did I ask?");
    assert_eq!(fixture.store.list().unwrap().len(), 1);
    let transcript = std::fs::read_to_string(agent.transcript()).unwrap();
    assert!(transcript.contains("You asked about the answer."));
    assert_eq!(transcript.matches("\"type\":\"meta\"").count(), 1);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn undo_restores_the_tree_from_before_the_turn() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::call(
            "edit",
            json!({"path": "src.txt", "old_string": "one", "new_string": "two"}),
        ),
        ScriptedAnswer::call("write", json!({"path": "added/new.txt", "content": "new"})),
        ScriptedAnswer::call("shell", json!({"command": "rm gone.txt"})),
        ScriptedAnswer::text("done"),
    ]);
    let project = &fixture.project;
    git(project, &["init", "-q"]);
    git(project, &["config", "user.email", "t@example.com"]);
    git(project, &["config", "user.name", "t"]);
    fixture.write("src.txt", "one\n");
    fixture.write("gone.txt", "bye\n");
    git(project, &["add", "-A"]);
    git(project, &["commit", "-qm", "start"]);
    fixture.write("src.txt", "one\nuncommitted\n");
    let head = git(project, &["rev-parse", "HEAD"]);

    let mut agent = fixture.agent(PermissionMode::BypassPermissions);
    let mut frontend = Collect::default();
    agent
        .run("change things", &mut frontend, CancellationToken::new())
        .await;
    let checkpoints = frontend
        .events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Checkpoint { .. }))
        .count();
    assert_eq!(
        checkpoints, 1,
        "one checkpoint per user turn: {:?}",
        frontend.events
    );
    assert_eq!(fixture.read("src.txt"), "two\nuncommitted\n");
    assert!(project.join("added/new.txt").exists());
    assert!(!project.join("gone.txt").exists());

    agent.undo().await.unwrap();
    assert_eq!(fixture.read("src.txt"), "one\nuncommitted\n");
    assert!(!project.join("added/new.txt").exists());
    assert_eq!(fixture.read("gone.txt"), "bye\n");
    // The user's branch and index are untouched.
    assert_eq!(git(project, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(project, &["diff", "--cached", "--name-only"]), "");
}

#[tokio::test]
async fn a_repeated_edit_is_stopped_at_once() {
    let edit = || {
        ScriptedAnswer::call(
            "edit",
            json!({"path": "config.ini", "old_string": "port = 80", "new_string": "port = 8080"}),
        )
    };
    let fixture = Fixture::new(vec![edit(), edit(), ScriptedAnswer::text("done")]);
    fixture.write("config.ini", "port = 80\n");
    let mut agent = fixture.agent(PermissionMode::AcceptEdits);
    let mut frontend = Collect::default();
    agent
        .run("set the port", &mut frontend, CancellationToken::new())
        .await;
    // Run twice, the edit would have given `port = 808080`.
    assert_eq!(fixture.read("config.ini"), "port = 8080\n");
    let results = tool_results(&frontend.events);
    assert!(!results[0].2 && results[1].2, "{results:?}");
    assert!(results[1].1.contains("reply to the user"), "{results:?}");
}

#[tokio::test]
async fn guided_models_look_first_and_are_reminded_to_make_changes() {
    let fixture = Fixture::new(vec![
        // Asked to look first: a tool call is required.
        ScriptedAnswer::call("read", json!({"path": "calc.py"})),
        // Describes the fix instead of making it.
        ScriptedAnswer::text("Change it to:\n```python\nreturn a + b\n```"),
        // Reminded, and required to call a tool: makes it.
        ScriptedAnswer::call(
            "edit",
            json!({"path": "calc.py", "old_string": "a - b", "new_string": "a + b"}),
        ),
        ScriptedAnswer::text("Fixed:\n```python\nreturn a + b\n```"),
    ]);
    fixture.write("calc.py", "def add(a, b):\n    return a - b\n");
    let mut options = fixture.options(PermissionMode::BypassPermissions);
    options.guided = true;
    let mut agent = Agent::start(fixture.router.clone(), options, &fixture.store).unwrap();
    let mut frontend = Collect::default();
    let summary = agent
        .run(
            "Fix the add function",
            &mut frontend,
            CancellationToken::new(),
        )
        .await;

    assert_eq!(summary.stop_reason, AgentStop::Completed);
    assert_eq!(summary.turns, 4);
    assert_eq!(
        fixture.read("calc.py"),
        "def add(a, b):\n    return a + b\n"
    );
    let choices: Vec<ToolChoice> = fixture
        .provider
        .requests()
        .iter()
        .map(|r| r.tool_choice.clone())
        .collect();
    assert_eq!(
        choices,
        [
            ToolChoice::Required,
            ToolChoice::Auto,
            ToolChoice::Required,
            ToolChoice::Auto
        ]
    );
    // The reminder went to the model once, as a user message; code shown
    // after a change is a normal answer.
    let last = fixture.provider.requests().pop().unwrap();
    let reminders = last
        .messages
        .iter()
        .filter(|m| m.role == Role::User && m.text().contains("changed no file"))
        .count();
    assert_eq!(reminders, 1);
    assert!(frontend.events.iter().any(|e| matches!(
        e,
        AgentEvent::Notice { message } if message.contains("reminded to use its tools")
    )));
}

#[tokio::test]
async fn named_files_are_attached_and_unguided_models_answer_freely() {
    let fixture = Fixture::new(vec![
        ScriptedAnswer::text("It returns 8731."),
        ScriptedAnswer::text("Still 8731."),
        ScriptedAnswer::text(""),
    ]);
    fixture.write("server.py", "PORT = 8731\n");
    fixture.write("notes.txt", "unrelated\n");
    // Guided: the file named by its path is attached, and with it in view
    // the first call may answer.
    let mut options = fixture.options(PermissionMode::Default);
    options.guided = true;
    let mut agent = Agent::start(fixture.router.clone(), options, &fixture.store).unwrap();
    let mut frontend = Collect::default();
    let summary = agent
        .run(
            "What port does server.py use?",
            &mut frontend,
            CancellationToken::new(),
        )
        .await;
    assert_eq!(summary.result, "It returns 8731.");
    let first = fixture.provider.requests()[0].clone();
    assert_eq!(first.tool_choice, ToolChoice::Auto);
    let text = first.messages[1].text();
    assert!(
        text.ends_with(
            "<file path=\"server.py\">\nPORT = 8731\n</file>\n\nWhat port does server.py use?"
        ),
        "{text}"
    );
    assert!(!text.contains("unrelated"));

    // Unguided: only `@` mentions attach, no call is required, and an
    // empty answer is final.
    let mut agent = fixture.agent(PermissionMode::Default);
    let summary = agent
        .run(
            "Compare server.py with @notes.txt",
            &mut frontend,
            CancellationToken::new(),
        )
        .await;
    assert_eq!(summary.result, "Still 8731.");
    let second = fixture.provider.requests()[1].clone();
    assert_eq!(second.tool_choice, ToolChoice::Auto);
    let text = second.messages[1].text();
    assert!(
        text.contains("<file path=\"notes.txt\">\nunrelated\n</file>"),
        "{text}"
    );
    assert!(!text.contains("PORT"), "{text}");
    let summary = agent
        .run("And now?", &mut frontend, CancellationToken::new())
        .await;
    assert_eq!(summary.turns, 1);
    assert_eq!(fixture.provider.remaining(), 0);
}
