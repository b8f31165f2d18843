//! The real coding agents against `freehold serve`: OpenAI's Codex CLI
//! (`codex exec`, the Responses API), Anthropic's Claude Code
//! (`claude -p`, the Messages API) and Aider (`aider --message`, Chat
//! Completions through LiteLLM), the versions pinned by
//! `scripts/agent-clients`.
//!
//! Behind the gateway is an OpenAI-compatible upstream on 127.0.0.1 that
//! plays a model deterministically: asked for the task below, it calls the
//! agent's shell tool once to write a file; given the tool's output, it
//! answers with a line quoting it. (Aider calls no tools: asked to fix a
//! file, the model answers with an edit in Aider's SEARCH/REPLACE form,
//! which Aider applies; its test checks the edit and the request.) So each
//! tool-calling agent's test proves the whole round trip
//! through two translations (the agent's protocol to Chat Completions and
//! back): the agent read the gateway's stream, ran the call it carried, sent
//! the result back in its own shape, and printed the final answer. The
//! agents' side requests (titles, quota checks) get a short text.
//!
//! Like vLLM serving a model whose chat template allows one system message,
//! first, the upstream refuses any other conversation, and both agents send
//! one (Claude Code system messages inside the conversation, Codex two at
//! its start): the gateway's client sends those again folded.
//!
//! And like a local server whose model reads the agents' long prompts, the
//! upstream opens its streamed tool call with the role, as vLLM and
//! llama.cpp do, then says nothing for 8 s, while the gateway keeps the
//! agent's stream alive (`stream_keepalive_secs = 1`): Codex is told to give
//! up on a stream silent for 5 s and not to retry, so its test fails unless
//! it counts the gateway's keepalives (it does fail without them). The
//! margins are wide: with 2 s of them, one run in a few failed on CI's two
//! cores while both agents started.
//!
//! Both agents hold tools back from models they know to have a tool search
//! (Codex an MCP server's from gpt-5.5, Claude Code most of its own from
//! Claude Opus 4.7), offering the search instead: a test of each has the
//! model search, then call the tool found. Codex's "lite" mode (gpt-5.6),
//! which declares its tools in the input, has a test of its own.
//!
//! A real model behind the gateway is in docs/gateway.md; it is too slow on
//! CI's cores for the agents' prompts of 10,000 tokens and more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use freehold_test_support::{MockServer, Recorded, Scripted, Split, sse_text, test_agent_clients};
use serde_json::{Value, json};

use super::{MASTER, Served, unique};

/// The task each agent is given; the upstream acts on it only.
const TASK: &str = "Run the proof command for the freehold gateway test.";
/// What the shell command writes and prints.
const PROOF: &str = "freehold-proof-4141";
/// The id of the upstream's one tool call.
const CALL_ID: &str = "call_proof_1";
/// The start of the upstream's final answer, followed by the tool output it saw.
const VERIFIED: &str = "verified the tool output:";
/// How long the upstream is silent after opening its streamed tool call.
const SILENCE: Duration = Duration::from_secs(8);

/// The task Aider is given; the upstream answers it with [`AIDER_EDIT`].
const AIDER_TASK: &str = "Fix add in calc.py: it subtracts.";
/// The file Aider edits, before and after.
const CALC_BEFORE: &str = "def add(a, b):\n    return a - b\n";
const CALC_AFTER: &str = "def add(a, b):\n    return a + b\n";
/// The scripted model's answer to [`AIDER_TASK`]: an edit in the form
/// Aider's `diff` edit format asks for.
const AIDER_EDIT: &str = "calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    \
                          return a + b\n>>>>>>> REPLACE\n```\n";

/// The shell command the upstream asks the agent to run, in the agent's
/// working directory.
fn proof_command() -> String {
    format!("printf %s {PROOF} > proof.txt && cat proof.txt")
}

/// The shell tools the upstream knows: the tool's name as the agent offers
/// it, and the arguments that run [`proof_command`].
fn shell_call(tools: &[&str]) -> Option<(&'static str, Value)> {
    if tools.contains(&"exec_command") {
        // Codex's unified exec tool.
        return Some(("exec_command", json!({"cmd": proof_command()})));
    }
    if tools.contains(&"Bash") {
        // Claude Code's.
        return Some((
            "Bash",
            json!({"command": proof_command(), "description": "Write the proof file"}),
        ));
    }
    None
}

/// What the scripted model's server says to a conversation whose system
/// messages are not one and first, as vLLM does for models whose chat
/// template allows only that.
const STRICT_TEMPLATE_REFUSAL: &str = "System message must be at the beginning.";

/// Whether a Chat Completions body has a system message anywhere but first.
fn has_late_system_message(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .any(|message| message["role"] == "system")
}

/// The scripted model: what it answers to one Chat Completions request.
fn play_model(request: &Recorded) -> Scripted {
    if !request.uri.ends_with("/chat/completions") {
        return Scripted::json(
            200,
            json!({"object": "list", "data": [{"id": "scripted", "object": "model"}]}),
        );
    }
    let body = request.json();
    if has_late_system_message(&body) {
        return Scripted::json(
            400,
            json!({"error": {"message": STRICT_TEMPLATE_REFUSAL, "type": "BadRequestError",
                             "code": 400}}),
        );
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let stream = body["stream"] == true;
    let asked_for_a_note = messages
        .iter()
        .any(|message| message["role"] == "user" && message_text(message).contains(NOTE_TASK));
    if asked_for_a_note {
        return completion(stream, play_note_task(&body, &messages));
    }
    if asked_for(&messages, COMPACT_TASK) {
        return completion(stream, play_compact_task(&body, &messages));
    }
    let asked_for_a_patch = messages
        .iter()
        .any(|message| message["role"] == "user" && message_text(message).contains(PATCH_TASK));
    if asked_for_a_patch {
        return completion(stream, play_patch_task(&body, &messages));
    }
    let tool_output = messages
        .iter()
        .find(|message| message["role"] == "tool")
        .map(message_text);
    if let Some(output) = tool_output {
        let reply = Reply::Text(format!("{VERIFIED} {}", output.trim()));
        return completion(stream, reply);
    }
    let asked_of = |task: &str| {
        messages
            .iter()
            .any(|message| message["role"] == "user" && message_text(message).contains(task))
    };
    if asked_of(AIDER_TASK) {
        return completion(stream, Reply::Text(AIDER_EDIT.into()));
    }
    let asked = asked_of(TASK);
    match shell_call(&tool_names(&body)) {
        Some((name, arguments)) if asked => {
            after_a_silence(completion(stream, Reply::Call(CALL_ID, name, arguments)))
        }
        _ => completion(stream, Reply::Text("ok".into())),
    }
}

/// The task that needs a tool the agent holds back until its tool search
/// finds it (for Codex the MCP server's, for Claude Code one of its own).
const NOTE_TASK: &str = "Write the proof note with the notes server.";
/// The ids of the scripted model's search and of its call of the tool found.
const SEARCH_ID: &str = "call_search_1";
const NOTE_ID: &str = "call_note_1";
/// The name the gateway gives providers for the MCP server's tool.
const NOTE_TOOL: &str = "mcp__notes__write_note";
/// The tool Claude Code holds back that its search is asked for (one with
/// no side effect).
const FOUND_TOOL: &str = "TaskList";

/// The scripted model on [`NOTE_TASK`]: it searches for the tool (Codex's
/// MCP tool, or one of Claude Code's own), calls what the search found,
/// then quotes the tool's output.
fn play_note_task(body: &Value, messages: &[Value]) -> Reply {
    let result_of = |id: &str| result_of(messages, id);
    let offered = |name: &str| offers(body, name);
    if let Some(output) = result_of(NOTE_ID) {
        return Reply::Text(format!("{VERIFIED} {}", output.trim()));
    }
    if result_of(SEARCH_ID).is_some() {
        return if offered(NOTE_TOOL) {
            Reply::Call(NOTE_ID, NOTE_TOOL, json!({"text": PROOF}))
        } else if offered(FOUND_TOOL) {
            Reply::Call(NOTE_ID, FOUND_TOOL, json!({}))
        } else {
            Reply::Text("the search found no tool".into())
        };
    }
    // Codex's search, then Claude Code's.
    if offered("tool_search") {
        return Reply::Call(SEARCH_ID, "tool_search", json!({"query": "write note"}));
    }
    if offered("ToolSearch") {
        return Reply::Call(
            SEARCH_ID,
            "ToolSearch",
            json!({"query": format!("select:{FOUND_TOOL}")}),
        );
    }
    Reply::Text("no tool search was offered".into())
}

/// The task Codex is given to edit with its freeform `apply_patch` tool.
const PATCH_TASK: &str = "Add the proof file with a patch.";
/// The id of the scripted model's patch.
const PATCH_ID: &str = "call_patch_1";
/// The patch: in Codex's own format, not JSON (the tool is freeform).
const PATCH: &str =
    "*** Begin Patch\n*** Add File: patched.txt\n+freehold-proof-4141\n*** End Patch\n";

/// The scripted model on [`PATCH_TASK`]: it calls `apply_patch` (a
/// function with one `input` argument to the provider, the gateway's form
/// of a freeform tool), then quotes the tool's output.
fn play_patch_task(body: &Value, messages: &[Value]) -> Reply {
    if let Some(result) = result_of(messages, PATCH_ID) {
        return Reply::Text(format!("{VERIFIED} {}", result.trim()));
    }
    if offers(body, "apply_patch") {
        Reply::Call(PATCH_ID, "apply_patch", json!({ "input": PATCH }))
    } else {
        Reply::Text("no apply_patch was offered".into())
    }
}

/// The task Codex runs with a context so small that it compacts the
/// conversation after the tool's call.
const COMPACT_TASK: &str = "Run the proof command; the conversation will be compacted.";
/// What the gateway's request for a summary says (its first line).
const SUMMARY_ASKED: &str = "replaced by a summary that you write";
/// The summary the scripted model writes when asked for one.
const SUMMARY: &str = "Summary so far: the proof command ran and printed freehold-proof-4141.";

/// Whether a user message among `messages` holds `text`.
fn asked_for(messages: &[Value], text: &str) -> bool {
    messages
        .iter()
        .any(|message| message["role"] == "user" && message_text(message).contains(text))
}

/// The scripted model on [`COMPACT_TASK`]: it calls the shell tool, writes
/// [`SUMMARY`] when the gateway asks for one, and answers from the summary
/// once the conversation is compacted (the call and its result gone).
fn play_compact_task(body: &Value, messages: &[Value]) -> Reply {
    let last_asks_for_a_summary = messages
        .last()
        .is_some_and(|last| last["role"] == "user" && message_text(last).contains(SUMMARY_ASKED));
    if last_asks_for_a_summary {
        return Reply::Text(SUMMARY.into());
    }
    if asked_for(messages, SUMMARY) {
        return Reply::Text(format!("{VERIFIED} {PROOF}, read from the summary"));
    }
    if let Some(output) = messages
        .iter()
        .find(|message| message["role"] == "tool")
        .map(message_text)
    {
        return Reply::Text(format!("{VERIFIED} {}, not compacted", output.trim()));
    }
    match shell_call(&tool_names(body)) {
        Some((name, arguments)) => Reply::Call(CALL_ID, name, arguments),
        None => Reply::Text("no shell tool was offered".into()),
    }
}

/// An MCP server on stdio with one tool, `write_note`, which writes its
/// `text` to the file named by the server's one argument and says so.
const NOTES_MCP_SERVER: &str = r#"
import json, sys
note_path = sys.argv[1]
def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    method, ident = message.get("method"), message.get("id")
    if ident is None:
        continue
    if method == "initialize":
        version = message.get("params", {}).get("protocolVersion", "2025-06-18")
        result = {"protocolVersion": version, "capabilities": {"tools": {}},
                  "serverInfo": {"name": "notes", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "write_note", "description": "Write a note to the notes file",
                             "inputSchema": {"type": "object",
                                             "properties": {"text": {"type": "string"}},
                                             "required": ["text"]}}]}
    elif method == "tools/call":
        text = message["params"]["arguments"]["text"]
        with open(note_path, "w") as note:
            note.write(text)
        result = {"content": [{"type": "text", "text": "wrote " + text}]}
    else:
        result = {}
    send({"jsonrpc": "2.0", "id": ident, "result": result})
"#;

/// `answer`, silent for [`SILENCE`] after its first chunk when it is a
/// stream (the role, from [`completion`]).
fn after_a_silence(answer: Scripted) -> Scripted {
    if answer.chunks.len() < 2 {
        return answer;
    }
    Scripted {
        stall_after: Some(1),
        stall_for: SILENCE,
        ..answer
    }
}

/// The names of the tools a Chat Completions body offers.
fn tool_names(body: &Value) -> Vec<&str> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .collect()
}

/// Whether a Chat Completions body offers a tool named `name`.
fn offers(body: &Value, name: &str) -> bool {
    tool_names(body).contains(&name)
}

/// The text of the result of call `id` among a body's messages.
fn result_of(messages: &[Value], id: &str) -> Option<String> {
    messages
        .iter()
        .find(|message| message["role"] == "tool" && message["tool_call_id"] == id)
        .map(message_text)
}

/// A message's text, whether its content is a string or a list of parts.
fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

enum Reply {
    Text(String),
    /// A call: its id, the tool's name and the arguments.
    Call(&'static str, &'static str, Value),
}

/// A Chat Completions answer, whole or as an SSE stream with usage.
fn completion(stream: bool, reply: Reply) -> Scripted {
    let (message, delta, finish) = match &reply {
        Reply::Text(text) => (
            json!({"role": "assistant", "content": text}),
            json!({"role": "assistant", "content": text}),
            "stop",
        ),
        Reply::Call(id, name, arguments) => {
            let call = json!([{
                "index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            }]);
            (
                json!({"role": "assistant", "content": null, "tool_calls": call}),
                json!({"role": "assistant", "tool_calls": call}),
                "tool_calls",
            )
        }
    };
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110});
    if !stream {
        return Scripted::json(
            200,
            json!({
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
                "model": "scripted",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }),
        );
    }
    let chunk = |choices: Value, usage: Value| {
        json!({
            "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
            "model": "scripted", "choices": choices, "usage": usage,
        })
        .to_string()
    };
    let events = [
        // The role first, as vLLM and llama.cpp send it.
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
            Value::Null,
        ),
        chunk(json!([]), usage),
        "[DONE]".to_owned(),
    ];
    let pairs: Vec<(&str, &str)> = events.iter().map(|event| ("", event.as_str())).collect();
    // The role in a piece of its own, so that a pause can follow it.
    let role = sse_text(&pairs[..1]).len();
    Scripted::sse(&sse_text(&pairs), Split::At(vec![role]))
}

/// A gateway whose model `model` (an alias) is the scripted upstream.
async fn gateway_before_scripted_model(model: &str) -> (MockServer, Served) {
    let upstream = MockServer::answering(play_model).await;
    let config = format!(
        "[providers.scripted]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
         [aliases]\n\"{model}\" = \"scripted:scripted\"\n\n\
         [gateway]\nstream_keepalive_secs = 1\n",
        upstream.url()
    );
    let served = Served::start(&config, &[]).await;
    (upstream, served)
}

/// `codex exec` of `task` in `workdir`, its home `home`, configured to ask
/// the gateway for `model` (its own provider, no retries), then `more`
/// (more of the provider's settings, then other sections).
fn codex_exec(
    agents: &Path,
    served: &Served,
    home: &Path,
    workdir: &Path,
    model: &str,
    more: &str,
    task: &str,
) -> tokio::process::Command {
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"{model}\"\nmodel_provider = \"freehold\"\n\n\
             [model_providers.freehold]\nname = \"Freehold\"\nbase_url = \"{}/v1\"\n\
             env_key = \"FREEHOLD_KEY\"\nwire_api = \"responses\"\n\
             stream_max_retries = 0\n{more}",
            served.url
        ),
    )
    .unwrap();
    codex_command(agents, home, workdir, task)
}

/// `codex exec` of `task` in `workdir`, with the configuration in `home`
/// (and the key in `FREEHOLD_KEY`, for a provider of its own, and in
/// `CODEX_API_KEY`, which `codex exec` takes for its built-in `openai` one).
fn codex_command(
    agents: &Path,
    home: &Path,
    workdir: &Path,
    task: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(agents.join("codex"));
    command
        .args(["exec", "--skip-git-repo-check"])
        // The test is of the protocol, not of Codex's sandbox (which needs
        // namespaces a CI container may not grant).
        .arg("--dangerously-bypass-approvals-and-sandbox")
        .arg("-C")
        .arg(workdir)
        .arg(task)
        .env_clear()
        .env("HOME", home)
        .env("CODEX_HOME", home)
        .env("FREEHOLD_KEY", MASTER)
        .env("CODEX_API_KEY", MASTER)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// `claude -p` with `args` in `workdir`, its home `home`, on the gateway.
fn claude_p(
    agents: &Path,
    served: &Served,
    home: &Path,
    workdir: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(agents.join("claude"));
    command
        .arg("-p")
        .args(args)
        .current_dir(workdir)
        .env_clear()
        .env("HOME", home)
        .env("ANTHROPIC_BASE_URL", &served.url)
        .env("ANTHROPIC_API_KEY", MASTER)
        // No update checks, telemetry or error reports: nothing but the
        // gateway to talk to.
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// A fresh, empty folder for one agent run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "freehold-agent-{name}-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs an agent to completion (at most 3 minutes); returns its stdout, after
/// checking that it exited successfully.
async fn run_agent(mut command: tokio::process::Command, what: &str) -> String {
    command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 3 minutes"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    eprintln!("{what} stdout:\n{stdout}\n{what} stderr:\n{stderr}");
    stdout
}

/// What every agent test checks once the agent has exited: its first
/// conversation was refused for its system messages and sent again folded;
/// the command ran in its folder; the upstream got the tool's output back
/// under the call's id; and the agent printed the final answer.
fn assert_round_trip(upstream: &MockServer, workdir: &Path, stdout: &str) {
    let bodies: Vec<Value> = upstream.requests().iter().map(Recorded::json).collect();
    assert!(
        bodies.iter().any(has_late_system_message),
        "the agent's conversations were refused once, then sent folded"
    );
    let written = std::fs::read_to_string(workdir.join("proof.txt"))
        .expect("the agent ran the tool call and the command wrote proof.txt");
    assert_eq!(written, PROOF);
    let answered_messages: Vec<Value> = bodies
        .iter()
        .filter(|body| !has_late_system_message(body))
        .flat_map(|body| body["messages"].as_array().cloned().unwrap_or_default())
        .collect();
    let results: Vec<&Value> = answered_messages
        .iter()
        .filter(|message| message["role"] == "tool")
        .collect();
    assert!(
        !results.is_empty(),
        "no request to the upstream carried the tool's result"
    );
    for result in &results {
        assert_eq!(result["tool_call_id"], CALL_ID, "{result}");
        assert!(message_text(result).contains(PROOF), "{result}");
    }
    let calls: Vec<Value> = answered_messages
        .iter()
        .filter_map(|message| message["tool_calls"].as_array().cloned())
        .flatten()
        .collect();
    assert!(
        !calls.is_empty() && calls.iter().all(|call| call["id"] == CALL_ID),
        "the history sent back names the call by its id: {calls:?}"
    );
    assert!(
        stdout.contains(VERIFIED) && stdout.contains(PROOF),
        "the agent printed the final answer: {stdout}"
    );
}

/// Waits (at most 5 s: the ledger writes in batches) until the ledger has
/// at least both turns of `model`.
async fn assert_ledger_has_both_turns(served: &Served, model: &str) {
    for _ in 0..50 {
        let row = served.usage_row("model", model).await;
        if row.is_some_and(|row| row["requests"].as_u64() >= Some(2)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the ledger lacks the turns of {model}: {:?}",
        served.usage_row("model", model).await
    );
}

#[tokio::test]
async fn codex_runs_a_tool_call_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("coder").await;
    let home = scratch("codex-home");
    let workdir = scratch("codex-work");
    let command = codex_exec(
        &agents,
        &served,
        &home,
        &workdir,
        "coder",
        "stream_idle_timeout_ms = 5000\n",
        TASK,
    );
    let stdout = run_agent(command, "codex exec").await;

    assert_round_trip(&upstream, &workdir, &stdout);
    assert_ledger_has_both_turns(&served, "coder").await;
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Codex holds an MCP server's tools back from models whose metadata has
/// its tool search (gpt-5.5's), offering `tool_search` instead: the search's
/// call goes to Codex as a `tool_search_call`, Codex runs it and sends what
/// it found, the gateway offers the found tool, and its call reaches the
/// MCP server under its namespace.
#[tokio::test]
async fn codex_finds_an_mcp_tool_with_its_tool_search_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("gpt-5.5").await;
    let home = scratch("codex-search-home");
    let workdir = scratch("codex-search-work");
    let server = home.join("notes_server.py");
    std::fs::write(&server, NOTES_MCP_SERVER).unwrap();
    let note = workdir.join("note.txt");
    let python = std::env::var("FREEHOLD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let notes_server = format!(
        "\n[mcp_servers.notes]\ncommand = {python:?}\nargs = [{:?}, {:?}]\n\
         startup_timeout_sec = 60\n",
        server.display().to_string(),
        note.display().to_string(),
    );
    let command = codex_exec(
        &agents,
        &served,
        &home,
        &workdir,
        "gpt-5.5",
        &notes_server,
        NOTE_TASK,
    );
    let stdout = run_agent(command, "codex exec").await;

    let written = std::fs::read_to_string(&note)
        .expect("Codex ran the MCP tool its search found, and the server wrote the note");
    assert_eq!(written, PROOF);
    assert!(
        stdout.contains(VERIFIED) && stdout.contains(PROOF),
        "Codex printed the final answer: {stdout}"
    );
    // The MCP tool was not among the first request's tools: the search
    // found it.
    let bodies: Vec<Value> = upstream.requests().iter().map(Recorded::json).collect();
    let offers_note_tool = |body: &Value| offers(body, NOTE_TOOL);
    let first = bodies
        .iter()
        .find(|body| {
            body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|message| message_text(message).contains(NOTE_TASK))
        })
        .expect("the task reached the upstream");
    assert!(!offers_note_tool(first), "{first}");
    assert!(bodies.iter().any(offers_note_tool));
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Codex offers gpt-5.5 its `apply_patch` as a freeform tool, whose input
/// is a patch in its own format rather than JSON: the provider sees a
/// function with one `input` argument, the call goes back to Codex as a
/// `custom_tool_call`, Codex applies the patch and answers with a
/// `custom_tool_call_output`.
#[tokio::test]
async fn codex_applies_a_freeform_patch_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("gpt-5.5").await;
    let home = scratch("codex-patch-home");
    let workdir = scratch("codex-patch-work");
    let command = codex_exec(&agents, &served, &home, &workdir, "gpt-5.5", "", PATCH_TASK);
    let stdout = run_agent(command, "codex exec").await;

    let written = std::fs::read_to_string(workdir.join("patched.txt"))
        .expect("Codex applied the patch the model wrote");
    assert_eq!(written.trim_end(), PROOF);
    assert!(
        stdout.contains(VERIFIED),
        "Codex printed the final answer: {stdout}"
    );
    // The tool reached the provider as a function of one text argument.
    let bodies: Vec<Value> = upstream.requests().iter().map(Recorded::json).collect();
    let patch_tool = bodies
        .iter()
        .flat_map(|body| body["tools"].as_array().cloned().unwrap_or_default())
        .find(|tool| tool["function"]["name"] == "apply_patch")
        .expect("apply_patch was offered");
    assert_eq!(
        patch_tool["function"]["parameters"]["required"],
        json!(["input"])
    );
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Codex's "lite" mode (the gpt-5.6 models) declares its tools in an
/// `additional_tools` input item instead of `tools`: they reach the
/// provider all the same.
#[tokio::test]
async fn codex_lite_modes_tools_reach_the_provider() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("gpt-5.6-sol").await;
    let home = scratch("codex-lite-home");
    let workdir = scratch("codex-lite-work");
    let command = codex_exec(
        &agents,
        &served,
        &home,
        &workdir,
        "gpt-5.6-sol",
        "",
        "Say hello.",
    );
    run_agent(command, "codex exec").await;

    let bodies: Vec<Value> = upstream.requests().iter().map(Recorded::json).collect();
    let tools: Vec<String> = bodies
        .iter()
        .filter(|body| !has_late_system_message(body))
        .flat_map(|body| body["tools"].as_array().cloned().unwrap_or_default())
        .filter_map(|tool| tool["function"]["name"].as_str().map(str::to_owned))
        .collect();
    // Its code-mode tool, in the `functions` namespace Codex puts it in.
    assert!(
        tools.iter().any(|name| name == "functions__exec"),
        "{tools:?}"
    );
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Codex's built-in `openai` provider pointed at the gateway compacts a
/// full context the way OpenAI's API does: a request ending in a
/// `compaction_trigger`, answered with one `compaction` item. The gateway
/// asks the model for a summary, and reads the item back as that summary
/// when Codex sends it in place of the conversation it replaced.
#[tokio::test]
async fn codex_compacts_its_conversation_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("gpt-5.5").await;
    let home = scratch("codex-compact-home");
    let workdir = scratch("codex-compact-work");
    // Each answer reports 110 tokens: past this limit after the first.
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"gpt-5.5\"\nopenai_base_url = \"{}/v1\"\n\
             model_auto_compact_token_limit = 100\n",
            served.url
        ),
    )
    .unwrap();
    let command = codex_command(&agents, &home, &workdir, COMPACT_TASK);
    let stdout = run_agent(command, "codex exec").await;

    let written = std::fs::read_to_string(workdir.join("proof.txt"))
        .expect("Codex ran the tool call before compacting");
    assert_eq!(written, PROOF);
    assert!(
        stdout.contains("read from the summary"),
        "Codex went on from the compacted conversation: {stdout}"
    );
    let bodies: Vec<Value> = upstream
        .requests()
        .iter()
        .map(Recorded::json)
        .filter(|body| !has_late_system_message(body))
        .collect();
    let asked_for_summary = bodies
        .iter()
        .find(|body| {
            body["messages"]
                .as_array()
                .and_then(|messages| messages.last())
                .is_some_and(|last| message_text(last).contains(SUMMARY_ASKED))
        })
        .expect("the gateway asked the model for a summary");
    assert_eq!(asked_for_summary["tool_choice"], "none");
    let messages = asked_for_summary["messages"].as_array().unwrap();
    assert!(
        result_of(messages, CALL_ID).is_some_and(|output| output.contains(PROOF)),
        "the conversation to summarise held the call's result"
    );
    // After it, the summary stands for the call and its result.
    let compacted = bodies
        .iter()
        .find(|body| {
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            asked_for(&messages, SUMMARY)
        })
        .expect("a request went on from the summary");
    let messages = compacted["messages"].as_array().unwrap();
    assert!(asked_for(messages, COMPACT_TASK), "{compacted}");
    assert!(result_of(messages, CALL_ID).is_none(), "{compacted}");
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

#[tokio::test]
async fn claude_code_runs_a_tool_call_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("coder").await;
    let home = scratch("claude-home");
    let workdir = scratch("claude-work");
    let args = [TASK, "--model", "coder", "--allowedTools", "Bash"];
    let command = claude_p(&agents, &served, &home, &workdir, &args);
    let stdout = run_agent(command, "claude -p").await;

    assert_round_trip(&upstream, &workdir, &stdout);
    // Claude Code sends its environment as a system message inside
    // `messages` (which the gateway once refused): it reaches a Chat
    // Completions upstream in place, after the first user message (and,
    // refused there, is sent again as user text).
    let placed = upstream.requests().iter().any(|request| {
        let messages = request.json()["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let first_user = messages.iter().position(|m| m["role"] == "user");
        first_user.is_some_and(|first| messages[first..].iter().any(|m| m["role"] == "system"))
    });
    assert!(
        placed,
        "no request carried a system message after a user message"
    );
    assert_ledger_has_both_turns(&served, "coder").await;
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Anthropic's answer "hello", streamed or whole as `request` asks, for
/// a Messages upstream that stands for Anthropic's API.
fn anthropic_hello(request: &Recorded) -> Scripted {
    let body = request.json();
    let model = body["model"].as_str().unwrap_or("claude").to_owned();
    if request.uri.contains("count_tokens") {
        return Scripted::json(200, json!({"input_tokens": 100}));
    }
    let usage = json!({"input_tokens": 10, "output_tokens": 2});
    if body["stream"] != true {
        return Scripted::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                   "stop_sequence": null, "usage": usage}),
        );
    }
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
               "role": "assistant", "model": model, "content": [], "stop_reason": null,
               "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "hello"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 2},
               "context_management": {"applied_edits": []}}),
        json!({"type": "message_stop"}),
    ];
    let pairs: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap_or("").to_owned(),
                event.to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_str()))
        .collect();
    Scripted::sse(&sse_text(&pairs), Split::Whole)
}

/// Claude Code asks a Claude model to keep all its thinking
/// (`context_management` with `clear_thinking_20251015`, beta
/// `context-management-2025-06-27`) and to send it back without its text
/// (`thinking.display: "omitted"`), in every request (2.1.332 and 2.1.337 do, for
/// `claude-opus-4-7` with adaptive thinking). An upstream that is
/// Anthropic's API gets both as Claude Code sent them, where the gateway
/// used to drop them.
#[tokio::test]
async fn claude_codes_context_editing_reaches_anthropics_api() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let upstream = MockServer::answering(anthropic_hello).await;
    let config = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\n\
         api_key_env = \"FREEHOLD_TEST_ANTHROPIC_KEY\"\nanthropic_api = true\n\n\
         [aliases]\n\"claude-opus-4-7\" = \"claude:claude-opus-4-7\"\n",
        upstream.url()
    );
    let served = Served::start_with_env(
        &config,
        &[],
        &[("FREEHOLD_TEST_ANTHROPIC_KEY", "sk-ant-test")],
    )
    .await;
    let home = scratch("claude-context-home");
    let workdir = scratch("claude-context-work");
    let args = ["Say hello.", "--model", "claude-opus-4-7"];
    let command = claude_p(&agents, &served, &home, &workdir, &args);
    let stdout = run_agent(command, "claude -p").await;
    assert!(stdout.contains("hello"), "{stdout}");

    let turns: Vec<Recorded> = upstream
        .requests()
        .into_iter()
        .filter(|request| !request.uri.contains("count_tokens"))
        .collect();
    assert!(!turns.is_empty(), "Claude Code's turn reached the upstream");
    for turn in &turns {
        let body = turn.json();
        let edits = &body["context_management"]["edits"];
        assert!(
            edits.as_array().is_some_and(|edits| edits
                .iter()
                .any(|edit| edit["type"] == "clear_thinking_20251015")),
            "{body}"
        );
        let betas = turn.header("anthropic-beta").unwrap_or_default();
        assert!(betas.contains("context-management-2025-06-27"), "{betas}");
        assert_eq!(body["thinking"]["type"], "adaptive", "{body}");
        assert_eq!(body["thinking"]["display"], "omitted", "{body}");
    }
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Claude Code holds most of its tools back from Claude models that have
/// tool search (`claude-opus-4-7` here, as 2.1.332 and 2.1.337 decide by the
/// name),
/// offering `ToolSearch`: its result names the tools found in
/// `tool_reference` blocks, which the gateway once refused, and the found
/// tool is offered from the next request on.
#[tokio::test]
async fn claude_code_finds_a_deferred_tool_with_its_tool_search_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("claude-opus-4-7").await;
    let home = scratch("claude-search-home");
    let workdir = scratch("claude-search-work");
    let args = [NOTE_TASK, "--model", "claude-opus-4-7"];
    let command = claude_p(&agents, &served, &home, &workdir, &args);
    let stdout = run_agent(command, "claude -p").await;

    assert!(
        stdout.contains(VERIFIED),
        "Claude Code printed the final answer: {stdout}"
    );
    let bodies: Vec<Value> = upstream.requests().iter().map(Recorded::json).collect();
    let result_of = |body: &Value, id: &str| {
        result_of(
            body["messages"].as_array().map_or(&[][..], Vec::as_slice),
            id,
        )
    };
    let asked: Vec<&Value> = bodies
        .iter()
        .filter(|body| offers(body, "ToolSearch"))
        .collect();
    assert!(
        asked
            .first()
            .is_some_and(|first| !offers(first, FOUND_TOOL)),
        "the first request holds the tool back"
    );
    // Claude Code's placeholder for its deferred tools is deferred itself,
    // and loaded by nothing: the model never sees it.
    assert!(
        !bodies
            .iter()
            .any(|body| offers(body, "DeferredToolPlaceholder")),
        "the placeholder was offered"
    );
    let found = asked
        .iter()
        .find_map(|body| result_of(body, SEARCH_ID))
        .expect("the search's result reached the model");
    assert_eq!(found, format!("Tool `{FOUND_TOOL}` is available."));
    assert!(
        asked
            .iter()
            .any(|body| offers(body, FOUND_TOOL) && result_of(body, NOTE_ID).is_some()),
        "the tool found was offered, called, and its result sent back"
    );
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_dir_all(&workdir);
}

#[tokio::test]
async fn aider_applies_an_edit_through_the_gateway() {
    let Some(agents) = test_agent_clients() else {
        return;
    };
    let (upstream, served) = gateway_before_scripted_model("coder").await;
    let home = scratch("aider-home");
    let workdir = scratch("aider-work");
    // The model's metadata, which Aider would otherwise look up in a list
    // it fetches from GitHub: nothing but the gateway to talk to.
    let metadata = home.join("models.json");
    let coder = json!({"openai/coder": {"max_input_tokens": 32768, "max_output_tokens": 4096,
        "litellm_provider": "openai", "mode": "chat"}});
    std::fs::write(&metadata, coder.to_string()).unwrap();
    std::fs::write(workdir.join("calc.py"), CALC_BEFORE).unwrap();
    let api_base = format!("{}/v1", served.url);
    let mut command = tokio::process::Command::new(agents.join("aider"));
    command
        .args(["--model", "openai/coder", "--openai-api-base", &api_base])
        .args(["--openai-api-key", MASTER, "--edit-format", "diff"])
        .args([
            "--yes-always",
            "--no-git",
            "--map-tokens",
            "0",
            "--no-pretty",
        ])
        .args(["--no-check-update", "--no-show-release-notes"])
        .args(["--no-show-model-warnings", "--analytics-disable"])
        .arg("--model-metadata-file")
        .arg(&metadata)
        .args(["--message", AIDER_TASK, "calc.py"])
        .current_dir(&workdir)
        .env_clear()
        .env("HOME", &home)
        // LiteLLM's own model list, read from its package, not fetched.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        // Anything else it would fetch fails at once, and no browser opens
        // a link in an error.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("BROWSER", "true")
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let stdout = run_agent(command, "aider --message").await;

    assert_eq!(
        std::fs::read_to_string(workdir.join("calc.py")).unwrap(),
        CALC_AFTER,
        "Aider applied the model's edit: {stdout}"
    );
    assert!(stdout.contains("Applied edit to calc.py"), "{stdout}");
    // One streamed request (no retries, no summaries), which reached the
    // model as Aider wrote it: its system prompt first, the file, greedy.
    let asked: Vec<Value> = upstream
        .requests()
        .iter()
        .map(Recorded::json)
        .filter(|body| body.to_string().contains(AIDER_TASK))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let body = &asked[0];
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(body["temperature"], 0.0, "{body}");
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    assert!(
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|message| message_text(message).contains("return a - b")),
        "{body}"
    );
    for _ in 0..50 {
        let row = served.usage_row("model", "coder").await;
        if row.is_some_and(|row| row["requests"].as_u64() >= Some(1)) {
            let _ = std::fs::remove_dir_all(&home);
            let _ = std::fs::remove_dir_all(&workdir);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the ledger lacks Aider's request");
}
