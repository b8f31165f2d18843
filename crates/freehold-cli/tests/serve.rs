//! `freehold serve` through the real binary, driven by the official
//! `openai` and `anthropic` Python SDKs (tests/python/clients.py), backed by
//! a mock upstream on 127.0.0.1 and by the real test models.
//!
//! The SDKs come from `scripts/python-sdks` (scripts/test sets
//! FREEHOLD_TEST_PYTHON); without it these tests say so and pass (under CI
//! they fail). The coding agents' tests are in serve/agent_clients.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use freehold_gateway::mock::{MOCK_REFUSAL, MOCK_TEXT, MockUpstream};
use freehold_test_support::{one_model_at_a_time, test_model, test_postgres, test_python};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[path = "serve/agent_clients.rs"]
mod agent_clients;

const MASTER: &str = "fh-test-master-key-0123456789";

/// A running `freehold serve` with its own home and configuration.
struct Served {
    child: Child,
    url: String,
    base: PathBuf,
    /// Every line the gateway wrote to stderr (its log) so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    async fn start(config: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(config, extra_args, &[]).await
    }

    /// [`Served::start`] with these variables in the gateway's environment.
    async fn start_with_env(config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], config, extra_args, env).await
    }

    /// [`Served::start_with_env`], run through `wrapper` (a command that
    /// execs the one after it, such as `prlimit --nofile=256:`), if any.
    async fn start_under(
        wrapper: &[&str],
        config: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let base = std::env::temp_dir().join(format!(
            "freehold-serve-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(base.join("home")).unwrap();
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let freehold = env!("CARGO_BIN_EXE_freehold");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(freehold);
                command
            }
            None => Command::new(freehold),
        };
        let mut child = command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env_clear()
            .env("HOME", base.join("home"))
            .env("FREEHOLD_DATA_DIR", base.join("home/data"))
            .env("FREEHOLD_MODELS_DIR", base.join("home/models"))
            .env("FREEHOLD_CONFIG", &config_path)
            .env("FREEHOLD_MASTER_KEY", MASTER)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("freehold serve: ")
                    && (rest.starts_with("http://") || rest.starts_with("https://"))
                {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
                eprintln!("serve: {line}");
                log.lock().unwrap().push(line);
            }
            panic!("freehold serve exited before listening");
        })
        .await
        .expect("freehold serve listened within 60 s");
        // Keep draining its log so it never blocks on a full pipe.
        let kept = std::sync::Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("serve: {line}");
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            url,
            base,
            log,
        }
    }

    /// Waits up to 10 s for a line of the gateway's log that contains
    /// `needle`; returns the whole log so far.
    async fn log_with(&self, needle: &str) -> String {
        for _ in 0..200 {
            let log = self.log.lock().unwrap().join("\n");
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the gateway never logged {needle:?}; its log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    /// Runs one scenario of clients.py; returns its result object.
    async fn scenario(&self, python: &Path, name: &str, env: &[(&str, &str)]) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/clients.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(name)
            .env("FREEHOLD_URL", &self.url)
            .env("FREEHOLD_KEY", MASTER);
        for (key, value) in env {
            command.env(key, value);
        }
        let output = tokio::time::timeout(Duration::from_secs(900), command.output())
            .await
            .expect("the scenario finished within 15 minutes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "scenario {name} failed:\n{stdout}\n{stderr}"
        );
        let line: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        line["result"].clone()
    }
}

impl Served {
    /// Runs another `freehold` command with this gateway's home and
    /// configuration; returns its stdout.
    async fn freehold(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_freehold"))
            .args(args)
            .env_clear()
            .env("HOME", self.base.join("home"))
            .env("FREEHOLD_DATA_DIR", self.base.join("home/data"))
            .env("FREEHOLD_CONFIG", self.base.join("config.toml"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Served {
    /// The row of `group` in `freehold usage --by BY --json`, if it has one.
    async fn usage_row(&self, by: &str, group: &str) -> Option<Value> {
        let rows: Value =
            serde_json::from_str(&self.freehold(&["usage", "--by", by, "--json"]).await).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["group"] == group)
            .cloned()
    }

    /// Sends SIGTERM and waits for a successful exit, at most `within`;
    /// returns how long it took.
    async fn terminate(&mut self, within: Duration) -> Duration {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("freehold serve still running {within:?} after SIGTERM"))
            .unwrap();
        assert!(status.success(), "{status:?}");
        started.elapsed()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A one-message chat request for `model` to the gateway at `url`, with
/// the master key.
fn chat(client: &reqwest::Client, url: &str, model: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&serde_json::json!({
            "model": model, "messages": [{"role": "user", "content": "hi"}],
        }))
}

/// The JSON answer to [`chat`].
async fn chat_answer(client: &reqwest::Client, url: &str, model: &str) -> Value {
    chat(client, url, model)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends a chat request for `model` in the background and waits until
/// `upstream` has it; returns the pending answer.
async fn request_in_flight(
    url: &str,
    model: &str,
    upstream: &MockUpstream,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let before = upstream.requests();
    let request = tokio::spawn(chat(&reqwest::Client::new(), url, model).send());
    for _ in 0..250 {
        if upstream.requests() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.requests(),
        before + 1,
        "the request never reached the upstream"
    );
    request
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The gateway's configuration for `upstream`, as provider `mock` and the
/// alias `mock`. Its provider takes one stop sequence, as some servers
/// take few: the gateway applies a request's others to the answer (the
/// `stop_sequences` scenario).
fn mock_config(upstream: &MockUpstream) -> String {
    format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\nmax_stop_sequences = 1\n\n\
         [aliases]\nmock = \"mock:mock-model\"\n",
        upstream.base_url()
    )
}

/// A validation error that echoes the request (FastAPI's 422, as vLLM
/// sends) reaches the client, but the prompt in it stays out of the
/// gateway's log unless the operator logs bodies.
#[tokio::test]
async fn an_upstream_error_that_echoes_the_prompt_keeps_it_out_of_the_log() {
    use freehold_test_support::{MockServer, Scripted};

    const PROMPT: &str = "the launch code is canary-7731";
    let echo = serde_json::json!({"detail": [{
        "type": "extra_forbidden", "loc": ["body", "foo"], "msg": "Extra inputs are not permitted",
        "input": {"messages": [{"role": "user", "content": PROMPT}]},
    }]});
    let upstream = MockServer::start(vec![Scripted::json(422, echo)]).await;
    let config = format!(
        "[providers.vllm]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        upstream.url()
    );
    let body = serde_json::json!({
        "model": "vllm:qwen", "messages": [{"role": "user", "content": PROMPT}],
    });
    for log_bodies in [false, true] {
        let served = Served::start(
            &format!("{config}\n[gateway]\nlog_bodies = {log_bodies}\n"),
            &[],
        )
        .await;
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", served.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let answer: Value = response.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(PROMPT), "the client sees why: {message}");
        let log = served.log_with("upstream failed").await;
        assert!(
            log.contains("422"),
            "the status is logged either way: {log}"
        );
        assert_eq!(
            log.contains(PROMPT),
            log_bodies,
            "log_bodies = {log_bodies}:\n{log}"
        );
    }
}

/// The lines of a request, the router's (here: the first target of a
/// fallback chain failed) and the one it ends with, name it by the id its
/// client got back.
#[tokio::test]
async fn a_requests_log_lines_name_it() {
    use freehold_test_support::{MockServer, Scripted};

    let failing = MockServer::start(vec![Scripted::json(
        503,
        serde_json::json!({"error": {"message": "overloaded", "type": "server_error"}}),
    )])
    .await;
    let upstream = MockUpstream::start().await.unwrap();
    let config = format!(
        "[providers.first]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n\
         [providers.second]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [aliases]\nchain = [\"first:a\", \"second:mock-model\"]\n",
        failing.url(),
        upstream.base_url()
    );
    // At info level, for the `request` line each request ends with.
    let served = Served::start(&config, &["-v"]).await;
    let response = chat(&reqwest::Client::new(), &served.url, "chain")
        .header("x-request-id", "trace-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-4711");
    let log = served.log_with(" request ").await;
    for needle in ["falling back", " request "] {
        let line = log.lines().find(|line| line.contains(needle)).unwrap();
        assert!(line.contains("request{request_id=trace-4711}"), "{line}");
    }
}

/// A compaction whose model writes no summary fails rather than replace
/// the conversation with nothing: a 502 in the gateway's words on
/// `/v1/responses/compact` and for a server-side compaction (whose answer
/// is then not asked for), `response.failed` in a streamed trigger, and
/// the ledger records each as failed.
#[tokio::test]
async fn a_compaction_without_a_summary_fails_and_is_recorded() {
    use freehold_test_support::{MockServer, Recorded, Scripted, Split, sse_text};
    use serde_json::json;

    // The model answers every request with empty text.
    let upstream = MockServer::answering(|request: &Recorded| {
        let message = json!({"role": "assistant", "content": ""});
        if request.json()["stream"] != true {
            return Scripted::json(
                200,
                json!({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 40, "completion_tokens": 1,
                                 "total_tokens": 41}}),
            );
        }
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        let events = [
            chunk(message, Value::Null),
            chunk(json!({}), json!("stop")),
            "[DONE]".to_owned(),
        ];
        let pairs: Vec<(&str, &str)> = events.iter().map(|event| ("", event.as_str())).collect();
        Scripted::sse(&sse_text(&pairs), Split::Whole)
    })
    .await;
    let config = format!(
        "[providers.quiet]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
         [aliases]\nquiet = \"quiet:m\"\n",
        upstream.url()
    );
    let served = Served::start(&config, &[]).await;
    let client = reqwest::Client::new();
    let conversation = json!([{"role": "user", "content": "Fix add in calc.py."}]);

    let compacted = client
        .post(format!("{}/v1/responses/compact", served.url))
        .bearer_auth(MASTER)
        .json(&json!({"model": "quiet", "input": conversation}))
        .send()
        .await
        .unwrap();
    assert_eq!(compacted.status(), 502);
    let body: Value = compacted.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no summary"), "{body}");
    assert!(
        !message.contains("provider `"),
        "no provider to blame: {body}"
    );

    // Server-side compaction: the summary's call fails the request, and
    // the answer's is never made.
    let compacted = client
        .post(format!("{}/v1/responses", served.url))
        .bearer_auth(MASTER)
        .json(&json!({"model": "quiet", "input": conversation,
                      "context_management": [{"type": "compaction", "compact_threshold": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(compacted.status(), 502);
    let body: Value = compacted.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no summary"),
        "{body}"
    );
    assert_eq!(upstream.requests().len(), 2);

    let mut triggered = conversation.clone();
    triggered
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "compaction_trigger"}));
    let streamed = client
        .post(format!("{}/v1/responses", served.url))
        .bearer_auth(MASTER)
        .json(&json!({"model": "quiet", "input": triggered, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let events = streamed.text().await.unwrap();
    assert!(events.contains("event: response.failed"), "{events}");
    assert!(!events.contains("response.completed"), "{events}");
    assert!(events.contains("no summary"), "{events}");

    // Both in the ledger as failed (it writes in batches: wait for them).
    let mut lines = Value::Null;
    for _ in 0..50 {
        lines = serde_json::from_str(
            &served
                .freehold(&["usage", "--requests", "5", "--json"])
                .await,
        )
        .unwrap();
        if lines.as_array().is_some_and(|lines| lines.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<(&str, u64)> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["endpoint"].as_str().unwrap(),
                line["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), 3, "{lines}");
    assert!(
        statuses.contains(&("/v1/responses/compact", 502)),
        "{lines}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|line| **line == ("/v1/responses", 502))
            .count(),
        2,
        "{lines}"
    );
}

/// A proxy named in the environment (`HTTP_PROXY`) carries the requests of
/// hosted providers only: a provider counted as local is reached directly,
/// so that what the privacy policy keeps on this machine never crosses a
/// proxy that may be elsewhere. Both providers here are on 127.0.0.1; one
/// is marked hosted (`local = false`).
#[tokio::test]
async fn a_proxy_in_the_environment_carries_only_hosted_providers_requests() {
    use freehold_test_support::{MockServer, Scripted};
    use serde_json::json;

    let upstream = MockUpstream::start().await.unwrap();
    let answer = json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "via the proxy"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    });
    let proxy = MockServer::start(vec![Scripted::json(200, answer)]).await;
    let config = format!(
        "{}hosted = \"hosted:m\"\n\n\
         [providers.hosted]\nkind = \"openai\"\nbase_url = \"{}\"\nlocal = false\n",
        mock_config(&upstream),
        upstream.base_url()
    );
    let served = Served::start_with_env(&config, &[], &[("HTTP_PROXY", &proxy.url())]).await;
    let client = reqwest::Client::new();

    let local = chat(&client, &served.url, "mock").send().await.unwrap();
    assert_eq!(local.status(), 200);
    assert_eq!(upstream.requests(), 1);
    assert!(
        proxy.requests().is_empty(),
        "a local request crossed the proxy"
    );

    let hosted = chat(&client, &served.url, "hosted").send().await.unwrap();
    assert_eq!(hosted.status(), 200);
    let body: Value = hosted.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "via the proxy");
    let proxied = proxy.requests();
    assert_eq!(proxied.len(), 1);
    // A forward proxy is asked for the whole URL.
    assert!(
        proxied[0].uri.ends_with("/chat/completions"),
        "{}",
        proxied[0].uri
    );
    assert_eq!(upstream.requests(), 1);
}

/// A refusal from an Anthropic upstream keeps what the API said of it
/// (`stop_details`: the category and the explanation) on its way through
/// the gateway to the Anthropic SDK, whole and streamed.
#[tokio::test]
async fn an_anthropic_refusals_details_reach_the_sdk() {
    use freehold_test_support::{MockServer, Recorded, Scripted, Split, sse_text};
    use serde_json::json;

    let Some(python) = test_python() else { return };
    const EXPLANATION: &str = "This could help spread malware.";
    let details = json!({"type": "refusal", "category": "cyber", "explanation": EXPLANATION});
    let upstream = MockServer::answering(move |request: &Recorded| {
        if request.json()["stream"] != true {
            return Scripted::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant",
                       "model": "claude-x", "content": [],
                       "stop_reason": "refusal", "stop_sequence": null,
                       "stop_details": details,
                       "usage": {"input_tokens": 12, "output_tokens": 1}}),
            );
        }
        let start = json!({"type": "message_start", "message": {
            "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}});
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": null, "stop_details": details},
            "usage": {"output_tokens": 1}});
        let (start, delta) = (start.to_string(), delta.to_string());
        let events = [
            ("message_start", start.as_str()),
            ("message_delta", delta.as_str()),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        Scripted::sse(&sse_text(&events), Split::Whole)
    })
    .await;
    let config = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\nanthropic_api = true\n\n\
         [aliases]\nguarded = \"claude:claude-x\"\n",
        upstream.url()
    );
    let served = Served::start(&config, &[]).await;
    let seen = served
        .scenario(
            &python,
            "refusal_details",
            &[
                ("FREEHOLD_REFUSING_MODEL", "guarded"),
                ("FREEHOLD_EXPECT_EXPLANATION", EXPLANATION),
            ],
        )
        .await;
    assert_eq!(seen["category"], "cyber", "{seen}");
    assert_eq!(upstream.requests().len(), 2);
}

/// Server-side compaction (`context_management` with a
/// `compact_threshold`): a conversation past the threshold is summarised in
/// one call and answered from the summary in a second; the compaction item
/// leads the output, whole and streamed, and the usage adds both calls. The
/// upstream sees the whole conversation with the request for a summary,
/// then the user's and developer's messages and the summary without the
/// model's turns and the tool's output. Appended and sent again, the
/// conversation is read as the compaction left it (under the threshold, so
/// answered at once); under the threshold nothing is compacted; and both
/// calls are in the ledger.
#[tokio::test]
async fn a_server_side_compaction_summarises_then_answers_from_the_summary() {
    use freehold_test_support::{MockServer, Recorded, Scripted, Split, sse_text};
    use serde_json::json;

    const SUMMARY: &str = "The user wants add() fixed; it subtracts.";
    const ANSWER: &str = "Changed - to + in add().";
    // The summary for a request that asks for one (its last message), the
    // answer otherwise.
    let upstream = MockServer::answering(|request: &Recorded| {
        let body = request.json();
        let last = body["messages"].as_array().unwrap().last().unwrap().clone();
        let asks_for_summary = last["content"]
            .as_str()
            .is_some_and(|text| text.contains("replaced by a summary"));
        let text = if asks_for_summary { SUMMARY } else { ANSWER };
        let usage = json!({"prompt_tokens": 700, "completion_tokens": 20, "total_tokens": 720});
        if body["stream"] != true {
            let whole = Scripted::json(
                200,
                json!({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": usage}),
            );
            // A summary takes longer than the gateway's keepalive interval,
            // as a model writing one does: a streamed answer has begun by
            // the time it comes.
            return if asks_for_summary {
                whole.delay(Duration::from_millis(1500))
            } else {
                whole
            };
        }
        let chunk = |delta: Value, finish: Value, usage: Value| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                   "usage": usage})
            .to_string()
        };
        let events = [
            chunk(
                json!({"role": "assistant", "content": text}),
                Value::Null,
                Value::Null,
            ),
            chunk(json!({}), json!("stop"), usage),
            "[DONE]".to_owned(),
        ];
        let pairs: Vec<(&str, &str)> = events.iter().map(|event| ("", event.as_str())).collect();
        Scripted::sse(&sse_text(&pairs), Split::Whole)
    })
    .await;
    let config = format!(
        "[gateway]\nstream_keepalive_secs = 1\n\n\
         [providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
         [aliases]\nagent = \"up:m\"\n",
        upstream.url()
    );
    let served = Served::start(&config, &[]).await;
    let client = reqwest::Client::new();
    // Some 1,000 tokens by the gateway's estimate, nearly all of it the
    // tool's output.
    let file = "    return a - b  # subtracts\n".repeat(140);
    let conversation = json!([
        {"role": "developer", "content": "Sandbox: workspace-write."},
        {"role": "user", "content": "Fix add in calc.py."},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command",
         "arguments": "{\"cmd\": \"cat calc.py\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": file},
    ]);
    let request = |stream: bool, input: &Value| {
        json!({"model": "agent", "instructions": "You are a coding agent.", "stream": stream,
               "tools": [{"type": "function", "name": "exec_command",
                          "parameters": {"type": "object",
                                         "properties": {"cmd": {"type": "string"}}}}],
               "context_management": [{"type": "compaction", "compact_threshold": 500}],
               "input": input})
    };
    let post = |body: Value| {
        client
            .post(format!("{}/v1/responses", served.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };

    // Whole.
    let response = post(request(false, &conversation)).await.unwrap();
    assert_eq!(response.status(), 200);
    let whole: Value = response.json().await.unwrap();
    let output = whole["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{whole}");
    assert_eq!(output[0]["type"], "compaction");
    assert_eq!(
        freehold_llm::wire::openai_responses::compaction_summary(
            output[0]["encrypted_content"].as_str().unwrap()
        )
        .as_deref(),
        Some(SUMMARY)
    );
    assert_eq!(output[1]["content"][0]["text"], ANSWER);
    assert_eq!(whole["usage"]["input_tokens"], 1400, "{whole}");
    assert_eq!(whole["usage"]["output_tokens"], 40, "{whole}");
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    let roles = |recorded: &Recorded| -> Vec<String> {
        recorded.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect()
    };
    // The summary's call: the conversation whole, then the request.
    assert_eq!(
        roles(&sent[0]),
        ["system", "system", "user", "assistant", "tool", "user"]
    );
    assert_eq!(sent[0].json()["tool_choice"], "none");
    // The answer's: the tool's output is gone, the summary is last.
    assert_eq!(roles(&sent[1]), ["system", "system", "user", "user"]);
    let answered_from = sent[1].json()["messages"][3]["content"].to_string();
    assert!(answered_from.contains(SUMMARY), "{answered_from}");
    assert!(!sent[1].json().to_string().contains("subtracts\\n"));
    assert!(
        sent[1].json()["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 1)
    );

    // Streamed: begun (with a keepalive) while the summary is written, then
    // the item first, announced and done at once, then the answer.
    let response = post(request(true, &conversation)).await.unwrap();
    assert_eq!(response.status(), 200);
    let events = response.text().await.unwrap();
    let data: Vec<Value> = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let kinds: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done"
        ],
        "{events}"
    );
    let sequence: Vec<u64> = data
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        sequence.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{events}"
    );
    let added: Vec<&Value> = data
        .iter()
        .filter(|event| event["type"] == "response.output_item.added")
        .collect();
    assert_eq!(added[0]["output_index"], 0, "{events}");
    assert_eq!(added[0]["item"]["type"], "compaction");
    assert_eq!(added[1]["output_index"], 1);
    assert_eq!(added[1]["item"]["type"], "message");
    let completed = data.last().unwrap();
    assert_eq!(completed["type"], "response.completed", "{events}");
    assert_eq!(completed["response"]["output"][0]["type"], "compaction");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 1400);
    assert_eq!(upstream.requests().len(), 4);

    // The client appends the output, as OpenAI's guide says, and goes on:
    // what the compaction replaced is left out, so the conversation is
    // under the threshold and answered in one call.
    let mut go_on = conversation.as_array().unwrap().clone();
    go_on.extend(output.iter().cloned());
    go_on.push(json!({"role": "user", "content": "Now run the tests."}));
    let response = post(request(false, &Value::Array(go_on))).await.unwrap();
    assert_eq!(response.status(), 200);
    let next: Value = response.json().await.unwrap();
    assert_eq!(next["output"].as_array().unwrap().len(), 1, "{next}");
    assert_eq!(next["output"][0]["type"], "message");
    let sent = upstream.requests();
    assert_eq!(sent.len(), 5);
    assert_eq!(
        roles(&sent[4]),
        ["system", "system", "user", "user", "assistant", "user"]
    );

    // Five calls, five ledger lines (it writes in batches: wait for them).
    let mut lines = Value::Null;
    for _ in 0..50 {
        lines = serde_json::from_str(
            &served
                .freehold(&["usage", "--requests", "10", "--json"])
                .await,
        )
        .unwrap();
        if lines.as_array().is_some_and(|lines| lines.len() >= 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 5, "{lines:?}");
    // Each call's own tokens (the client was told their sum), the two
    // calls of a compacted request under one request id.
    for line in lines {
        assert_eq!(line["endpoint"], "/v1/responses", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["input_tokens"], 700, "{line}");
        assert_eq!(line["output_tokens"], 20, "{line}");
    }
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|line| line["request_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "two compacted requests and one plain: {lines:?}"
    );
}

/// `freehold serve` raises its soft limit on open files to the hard one:
/// each connection, client or upstream, is a file.
#[tokio::test]
async fn serve_raises_its_open_files_limit() {
    if Command::new("prlimit")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is missing"
        );
        return;
    }
    let served = Served::start_under(&["prlimit", "--nofile=256:"], "", &[], &[]).await;
    // prlimit execs freehold in place: the pid is the gateway's.
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", served.child.id().unwrap())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // "Max open files SOFT HARD files"
    assert_eq!(open_files[3], open_files[4], "{limits}");
    assert_ne!(open_files[3], "256", "{limits}");
}

/// A body over the gateway's limit and an upstream that is down surface as
/// each SDK's own exception types (413, 502).
#[tokio::test]
async fn gateway_errors_reach_the_sdks_as_their_own_exceptions() {
    let Some(python) = test_python() else { return };
    let upstream = MockUpstream::start().await.unwrap();
    // A port that refuses connections: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let config = format!(
        "[gateway]\nmax_body_bytes = 100000\n\n{}down = \"dead:model\"\n\n\
         [providers.dead]\nkind = \"openai\"\nbase_url = \"{dead_url}\"\n",
        mock_config(&upstream)
    );
    let served = Served::start(&config, &[]).await;
    let seen = served
        .scenario(
            &python,
            "gateway_errors",
            &[("FREEHOLD_DEAD_MODEL", "down")],
        )
        .await;
    assert_eq!(seen["openai_too_large"], 413, "{seen}");
    assert_eq!(seen["anthropic_too_large"], 413, "{seen}");
    assert_eq!(seen["openai_upstream_down"], 502, "{seen}");
    assert_eq!(seen["anthropic_upstream_down"], 502, "{seen}");
}

/// An API key exported in the gateway's environment does not open its
/// hosted provider to every client: only providers the configuration names
/// (a table, an alias) are routed, with local ones.
#[tokio::test]
async fn hosted_presets_are_routed_only_when_the_configuration_names_them() {
    let upstream = MockUpstream::start().await.unwrap();
    let config = mock_config(&upstream) + "claude = \"anthropic:claude-x\"\n";
    let served = Served::start_with_env(
        &config,
        &[],
        &[
            ("OPENAI_API_KEY", "sk-exported-for-something-else"),
            ("ANTHROPIC_API_KEY", "sk-ant-named-by-an-alias"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("{}/health", served.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let providers = health["providers"].as_object().unwrap();
    assert!(providers.contains_key("mock"), "{health}");
    assert!(providers.contains_key("anthropic"), "{health}");
    assert!(providers.contains_key("local"), "{health}");
    assert!(!providers.contains_key("openai"), "{health}");
    // Asked for by name, it is unknown (and nothing left the machine).
    let response = chat(&client, &served.url, "openai:gpt-4o")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("openai:gpt-4o"), "{message}");
    assert!(message.contains("[providers.NAME]"), "{message}");
}

#[tokio::test]
async fn official_sdks_against_a_mock_upstream() {
    let Some(python) = test_python() else { return };
    let upstream = MockUpstream::start().await.unwrap();
    let served = Served::start(&mock_config(&upstream), &[]).await;
    let expect = [("FREEHOLD_EXPECT_TEXT", MOCK_TEXT)];
    for scenario in [
        "openai_chat",
        "openai_stream",
        "openai_tools",
        "openai_models",
        "openai_embeddings",
        "openai_responses",
        "responses_compaction",
        "responses_server_compaction",
        "anthropic_tools",
        "anthropic_context_editing",
        "anthropic_server_compaction",
    ] {
        let result = served.scenario(&python, scenario, &expect).await;
        eprintln!("{scenario}: {result}");
    }
    // An OpenAI-compatible upstream has no tokenizer to ask: count_tokens
    // is the gateway's estimate, and says so.
    let messages = served
        .scenario(&python, "anthropic_messages", &expect)
        .await;
    assert_eq!(messages["count_source"], "estimate", "{messages}");
    let errors = served.scenario(&python, "openai_errors", &[]).await;
    assert_eq!(errors["auth"], 401);
    assert_eq!(errors["not_found"], 404);
    assert_eq!(errors["bad_request"], 400);
    let errors = served.scenario(&python, "anthropic_errors", &[]).await;
    assert_eq!(errors["auth"], 401);
    assert_eq!(errors["not_found"], 404);
    assert_eq!(errors["bad_request"], 400);
    assert_eq!(errors["model_not_found"], 404);
    // Every chat, tool and embedding call reached the upstream
    // (count_tokens was estimated by the gateway itself), a server-side
    // compaction's two calls each (one when it stops at the compaction).
    assert_eq!(upstream.requests(), 38);
    // A refusal reaches each SDK as its own (the mock refuses when asked
    // to), whole and streamed.
    let refusal = [("FREEHOLD_EXPECT_REFUSAL", MOCK_REFUSAL)];
    served.scenario(&python, "refusals", &refusal).await;
    // Stop sequences past what the upstream takes end the answer at the
    // gateway, with each SDK's own stop reason.
    let stopped = served.scenario(&python, "stop_sequences", &expect).await;
    assert_eq!(
        stopped,
        serde_json::json!({"anthropic": "stop_sequence", "openai": "stop"})
    );
    // The one it takes went to the upstream; the other was applied here.
    assert_eq!(upstream.last_stop_count(), 1);
    // A coding agent's request (a system prompt and tools of about 100,000
    // tokens) goes through whole when the upstream takes it.
    let long = served.scenario(&python, "long_prompts", &[]).await;
    assert_eq!(
        long,
        serde_json::json!({"anthropic": "answered", "openai": "answered"})
    );

    // A virtual key made with `freehold keys` works with the SDK at once,
    // and `freehold usage` shows what it did.
    let created: Value = serde_json::from_str(
        &served
            .freehold(&["keys", "create", "--name", "sdk", "--json"])
            .await,
    )
    .unwrap();
    let secret = created["secret"].as_str().unwrap();
    served
        .scenario(
            &python,
            "openai_chat",
            &[
                ("FREEHOLD_KEY", secret),
                ("FREEHOLD_EXPECT_TEXT", MOCK_TEXT),
            ],
        )
        .await;
    let mut row = None;
    for _ in 0..20 {
        // The ledger is written in batches, just after the answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = served.usage_row("key", "sdk").await;
        if row.is_some() {
            break;
        }
    }
    let row = row.expect("usage for key sdk");
    assert_eq!(row["requests"], 1, "{row}");
    assert!(row["input_tokens"].as_u64().unwrap() > 0, "{row}");
    // Each SDK named its end user (`safety_identifier`, Anthropic's
    // `metadata.user_id`): the two chats and the first message.
    let row = served.usage_row("user", "sdk-user").await;
    assert_eq!(row.expect("usage for end user sdk-user")["requests"], 3);

    // A key over its requests per minute: each SDK raises its own
    // rate-limit error.
    let created: Value = serde_json::from_str(
        &served
            .freehold(&["keys", "create", "--name", "slow", "--rpm", "1", "--json"])
            .await,
    )
    .unwrap();
    let limited = served
        .scenario(
            &python,
            "rate_limited",
            &[("FREEHOLD_KEY", created["secret"].as_str().unwrap())],
        )
        .await;
    assert_eq!(limited["openai"], 429, "{limited}");
    assert_eq!(limited["anthropic"], 429, "{limited}");
    assert_eq!(limited["responses_stream"], 429, "{limited}");
    let retry_after = limited["openai_retry_after"].as_u64().unwrap();
    assert!((1..=60).contains(&retry_after), "{limited}");
}

/// A key whose budget cannot pay for a request: each SDK raises its own
/// error at once, with each API's status, and does not retry it.
#[tokio::test]
async fn official_sdks_stop_at_a_spent_budget() {
    let Some(python) = test_python() else { return };
    let upstream = MockUpstream::start().await.unwrap();
    // Hosted and priced, so that a request costs something.
    let config = format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\nlocal = false\n\n\
         [aliases]\nmock = \"mock:mock-model\"\n\n\
         [models.\"mock:mock-model\"]\ninput = 1000.0\noutput = 1000.0\n",
        upstream.base_url()
    );
    let served = Served::start(&config, &[]).await;
    let created: Value = serde_json::from_str(
        &served
            .freehold(&[
                "keys", "create", "--name", "poor", "--budget", "0.001", "--json",
            ])
            .await,
    )
    .unwrap();
    let spent = served
        .scenario(
            &python,
            "budget_spent",
            &[("FREEHOLD_KEY", created["secret"].as_str().unwrap())],
        )
        .await;
    assert_eq!(spent["openai"], 429, "{spent}");
    assert_eq!(spent["anthropic"], 402, "{spent}");
    // Refused before any upstream was asked.
    assert_eq!(upstream.requests(), 0);
    let mut row = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = served.usage_row("key", "poor").await;
        if row.as_ref().is_some_and(|row| row["requests"] == 2) {
            break;
        }
    }
    let row = row.expect("usage for key poor");
    // Each SDK asked once, although both retry a 429 (and the scenario
    // lets them retry twice).
    assert_eq!(row["requests"], 2, "{row}");
    assert_eq!(row["errors"], 2, "{row}");
}

/// An upstream that says nothing for 4 s (a local model reading a long
/// prompt), behind a gateway sending keepalives every second: each SDK,
/// stream helpers included, reads through the begun answer and its
/// keepalives to the whole text.
#[tokio::test]
async fn official_sdks_wait_through_a_silent_upstream() {
    let Some(python) = test_python() else { return };
    let upstream = MockUpstream::start_slow(Duration::from_secs(4))
        .await
        .unwrap();
    let config = format!(
        "{}\n[gateway]\nstream_keepalive_secs = 1\n",
        mock_config(&upstream)
    );
    let served = Served::start(&config, &[]).await;
    let expect = [("FREEHOLD_EXPECT_TEXT", MOCK_TEXT)];
    let seen = served.scenario(&python, "silent_upstream", &expect).await;
    // Begun, then kept alive at least once more in 4 s.
    assert!(seen["responses_in_progress"].as_u64() >= Some(2), "{seen}");
    assert_eq!(upstream.requests(), 4);
}

#[tokio::test]
async fn official_sdks_against_smollm2_in_process() {
    let Some(python) = test_python() else { return };
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let config = format!(
        "[aliases]\nsmol = \"local:{}\"\n\n[providers.local]\nkind = \"local\"\nthreads = 2\n",
        model.display()
    );
    let served = Served::start(&config, &[]).await;
    let env = [("FREEHOLD_MODEL", "smol")];
    for scenario in [
        "openai_chat",
        "openai_stream",
        "openai_responses",
        "responses_compaction",
        "responses_server_compaction",
        "anthropic_server_compaction",
    ] {
        let result = served.scenario(&python, scenario, &env).await;
        eprintln!("{scenario}: {result}");
    }
    // The engine's own vectors, as numbers and in base64 (what the SDKs ask
    // for unless told otherwise), are the same.
    let embedded = served.scenario(&python, "openai_embeddings", &env).await;
    assert_eq!(embedded["dimension"], 576, "{embedded}");
    // count_tokens counts with the model's own tokenizer: what the model
    // read for the same messages.
    let messages = served.scenario(&python, "anthropic_messages", &env).await;
    assert_eq!(messages["count_source"], "tokenizer", "{messages}");
    assert_eq!(messages["count"], messages["prompt_tokens"], "{messages}");
    // The same agent-sized request is over SmolLM2's 8,192-token window:
    // each SDK gets its protocol's own context-length error.
    let long = served.scenario(&python, "long_prompts", &env).await;
    assert_eq!(
        long,
        serde_json::json!({"anthropic": "context_length", "openai": "context_length"})
    );
}

#[tokio::test]
async fn tool_calls_round_trip_through_qwen_in_every_protocol() {
    let Some(python) = test_python() else { return };
    let Some(model) = test_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let config = format!(
        "[aliases]\nqwen = \"local:{}\"\n\n[providers.local]\nkind = \"local\"\nthreads = 2\n",
        model.display()
    );
    let served = Served::start(&config, &[]).await;
    let env = [("FREEHOLD_MODEL", "qwen")];
    for scenario in ["openai_tools", "anthropic_tools", "responses_custom_tools"] {
        let result = served.scenario(&python, scenario, &env).await;
        eprintln!("{scenario}: {result}");
    }
    // Anthropic's context editing made by the router for the engine: the
    // model reads fewer tokens with the old results cleared, and
    // count_tokens, asked with the same edits, counts what it read.
    let edited = served
        .scenario(&python, "anthropic_context_editing", &env)
        .await;
    eprintln!("anthropic_context_editing: {edited}");
    let read = &edited["input_tokens"];
    let (Some(after), Some(before)) = (read["edited"].as_u64(), read["plain"].as_u64()) else {
        panic!("token counts in {edited}");
    };
    assert!(after < before, "{edited}");
    assert_eq!(edited["counted"]["edited"], read["edited"], "{edited}");
    assert_eq!(edited["counted"]["plain"], read["plain"], "{edited}");
}

/// A chat completion streamed slowly: ten words, 300 ms apart.
fn slow_stream() -> freehold_test_support::Scripted {
    use freehold_test_support::{Scripted, Split, sse_text};
    let mut events = Vec::new();
    for word in 0..10 {
        events.push(
            serde_json::json!({
                "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [{"index": 0, "delta": {"content": format!("w{word} ")},
                             "finish_reason": null}],
            })
            .to_string(),
        );
    }
    events.push(
        serde_json::json!({
            "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        })
        .to_string(),
    );
    events.push("[DONE]".into());
    let pairs: Vec<(&str, &str)> = events.iter().map(|e| ("", e.as_str())).collect();
    let text = sse_text(&pairs);
    let cuts: Vec<usize> = text.match_indices("\n\n").map(|(i, _)| i + 2).collect();
    let mut scripted = Scripted::sse(&text, Split::At(cuts));
    scripted.chunk_delay = Duration::from_millis(300);
    scripted
}

#[tokio::test]
async fn sighup_reloads_routes_without_dropping_requests_in_flight() {
    use freehold_test_support::MockServer;

    let slow = MockServer::start(vec![slow_stream()]).await;
    let second = MockUpstream::start().await.unwrap();
    let config = |base: &str| {
        format!(
            "[providers.up]\nkind = \"openai\"\nbase_url = \"{base}\"\n\n[aliases]\nm = \"up:m\"\n"
        )
    };
    let served = Served::start(&config(&format!("{}/v1", slow.url())), &[]).await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
    });
    // A slow stream starts on the first configuration…
    let in_flight = {
        let request = client
            .post(format!("{}/v1/chat/completions", served.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send();
        tokio::spawn(async move { request.await.unwrap().text().await.unwrap() })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while slow.requests().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.requests().len(), 1, "the stream reached its upstream");
    // …the configuration changes and the gateway is told…
    std::fs::write(served.base.join("config.toml"), config(&second.base_url())).unwrap();
    let pid = served.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // …new requests go to the new upstream…
    let mut moved = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = chat_answer(&client, &served.url, "m").await;
        if answer["choices"][0]["message"]["content"] == MOCK_TEXT {
            moved = true;
            break;
        }
    }
    assert!(moved, "requests never reached the reloaded upstream");
    // …and the stream that started before finishes whole.
    let streamed = in_flight.await.unwrap();
    for word in 0..10 {
        assert!(streamed.contains(&format!("w{word} ")), "{streamed}");
    }
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");

    // A configuration that would break the working provider (a header
    // value HTTP forbids) is refused, and the running one keeps answering.
    let broken = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         headers = {{ \"x-team\" = \"a\\u0007b\" }}\n\n[aliases]\nm = \"up:m\"\n",
        second.base_url()
    );
    std::fs::write(served.base.join("config.toml"), &broken).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let log = served.log_with("would break providers").await;
    assert!(log.contains("NOT reloaded"), "{log}");
    assert!(log.contains("[providers.up]"), "{log}");
    let answer = chat_answer(&client, &served.url, "m").await;
    assert_eq!(answer["choices"][0]["message"]["content"], MOCK_TEXT);

    // So is one naming a key variable the gateway's environment lacks: the
    // environment of a running process cannot change, so no request to the
    // provider could ever be sent.
    let keyless = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key_env = \"FREEHOLD_TEST_UNSET_KEY\"\n\n[aliases]\nm = \"up:m\"\n",
        second.base_url()
    );
    std::fs::write(served.base.join("config.toml"), &keyless).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let log = served.log_with("FREEHOLD_TEST_UNSET_KEY is not set").await;
    let refusal = log
        .lines()
        .rfind(|line| line.contains("FREEHOLD_TEST_UNSET_KEY"))
        .unwrap();
    assert!(refusal.contains("NOT reloaded"), "{log}");
    let answer = chat_answer(&client, &served.url, "m").await;
    assert_eq!(answer["choices"][0]["message"]["content"], MOCK_TEXT);
}

#[tokio::test]
async fn two_gateway_processes_on_one_postgres_enforce_one_budget() {
    let Some(database) = test_postgres() else {
        return;
    };
    let upstream = MockUpstream::start().await.unwrap();
    // $1 per million tokens: a request reserves about $0.00011 (its prompt
    // and 100 output tokens), so $0.00125 admits about ten at once.
    let config = format!(
        "{}\n[models.\"mock:mock-model\"]\ninput = 1.0\noutput = 1.0\n\n[gateway]\ndatabase = \"{database}\"\n",
        mock_config(&upstream)
    );
    let first = Served::start(&config, &[]).await;
    let second = Served::start(&config, &[]).await;
    let name = format!("shared-{}-{}", std::process::id(), unique());
    let created: Value = serde_json::from_str(
        &first
            .freehold(&[
                "keys", "create", "--name", &name, "--budget", "0.00125", "--json",
            ])
            .await,
    )
    .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = if i % 2 == 0 { &first.url } else { &second.url };
        let request = client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&serde_json::json!({
                "model": "mock", "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send();
        tasks.push(tokio::spawn(async move {
            request.await.unwrap().status().as_u16()
        }));
    }
    let mut passed = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => passed += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // Settlements are written just after the answers: read until they are
    // all in (a loaded machine can hold them up), for at most 10 s.
    let mut key = Value::Null;
    for _ in 0..50 {
        let keys: Value =
            serde_json::from_str(&second.freehold(&["keys", "list", "--json"]).await).unwrap();
        key = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name.as_str())
            .unwrap()
            .clone();
        if key["reserved_usd"].as_f64().unwrap().abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("two gateways: {passed} of 50 passed; {key}");
    assert!((1..50).contains(&passed), "{passed}");
    assert!(
        key["spent_usd"].as_f64().unwrap() <= 0.00125 + 1e-9,
        "{key}"
    );
    assert!(key["reserved_usd"].as_f64().unwrap().abs() < 1e-9, "{key}");
}

#[tokio::test]
async fn shutdown_cuts_off_requests_after_the_grace_period() {
    // The upstream would take 30 s; the grace period is 1 s.
    let upstream = MockUpstream::start_slow(Duration::from_secs(30))
        .await
        .unwrap();
    let config = format!(
        "{}\n[gateway]\nshutdown_grace_secs = 1\n",
        mock_config(&upstream)
    );
    let mut served = Served::start(&config, &[]).await;
    let request = request_in_flight(&served.url, "mock", &upstream).await;
    let elapsed = served.terminate(Duration::from_secs(20)).await;
    // One grace period for the request, at most one more for the ledger:
    // far less than the upstream's 30 s, with room for a loaded machine.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let answer = request.await.unwrap();
    assert!(
        answer.is_err(),
        "the request in flight was cut off: {answer:?}"
    );
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_at_once_with_the_ledger_written() {
    let upstream = MockUpstream::start().await.unwrap();
    // The default grace period (30 s) is what an idle gateway must not wait.
    let mut served = Served::start(&mock_config(&upstream), &[]).await;
    let answer = chat(&reqwest::Client::new(), &served.url, "mock")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let request_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    served.terminate(Duration::from_secs(10)).await;
    let row = served.usage_row("model", "mock").await;
    assert_eq!(row.expect("usage for model mock")["requests"], 1);
    // The request is found by the id its client got back, as a table and
    // as JSON; an id the ledger does not have is said to be missing.
    let table = served
        .freehold(&["usage", "--request-id", &request_id])
        .await;
    assert!(
        table.contains("REQUEST ID") && table.contains(&request_id),
        "{table}"
    );
    let lines: Value = serde_json::from_str(
        &served
            .freehold(&["usage", "--request-id", &request_id, "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(lines.as_array().map(Vec::len), Some(1), "{lines}");
    assert_eq!(lines[0]["request_id"], request_id.as_str());
    assert_eq!(lines[0]["model"], "mock");
    assert_eq!(lines[0]["status"], 200);
    let missing = served
        .freehold(&["usage", "--request-id", "req_not_there"])
        .await;
    assert!(missing.contains("no request req_not_there"), "{missing}");
}

/// `freehold usage --by user` sums the requests by the end user each
/// client named, in either protocol, and `--requests` shows it (a long id
/// shortened in the table, whole in JSON).
#[tokio::test]
async fn usage_is_summed_by_the_end_user_clients_name() {
    use serde_json::json;

    let upstream = MockUpstream::start().await.unwrap();
    let mut served = Served::start(&mock_config(&upstream), &[]).await;
    let client = reqwest::Client::new();
    let claude_code = format!(
        "user_{}_account__session_{}",
        "a1".repeat(32),
        "0f".repeat(16)
    );
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"model": "mock", "user": "user-7",
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "mock", "safety_identifier": "user-7",
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "mock", "max_tokens": 10,
            "metadata": {"user_id": claude_code},
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "mock",
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (path, body) in bodies {
        let response = client
            .post(format!("{}{path}", served.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    served.terminate(Duration::from_secs(10)).await;
    let row = served.usage_row("user", "user-7").await;
    assert_eq!(row.expect("usage for user-7")["requests"], 2);
    let row = served.usage_row("user", &claude_code).await;
    assert_eq!(row.expect("usage for Claude Code's id")["requests"], 1);
    let row = served.usage_row("user", "(none)").await;
    assert_eq!(row.expect("usage without an end user")["requests"], 1);
    let table = served.freehold(&["usage", "--by", "user"]).await;
    assert!(table.starts_with("END USER"), "{table}");
    let listed = served.freehold(&["usage", "--requests", "4"]).await;
    assert!(
        listed.contains("END USER") && listed.contains("user-7"),
        "{listed}"
    );
    assert!(listed.contains("user_a1a1a1a1a1a…"), "{listed}");
    let lines: Value = serde_json::from_str(
        &served
            .freehold(&["usage", "--requests", "4", "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(lines[1]["end_user"], claude_code.as_str(), "{lines}");
    assert_eq!(lines[0]["end_user"], Value::Null, "{lines}");
}

#[tokio::test]
async fn per_core_runtime_serves_every_connection_and_shuts_down_within_the_grace() {
    let fast = MockUpstream::start().await.unwrap();
    let slow = MockUpstream::start_slow(Duration::from_secs(30))
        .await
        .unwrap();
    let config = format!(
        "[providers.fast]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [providers.slow]\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [aliases]\nfast = \"fast:mock-model\"\nslow = \"slow:mock-model\"\n\n\
         [gateway]\nshutdown_grace_secs = 1\n",
        fast.base_url(),
        slow.base_url()
    );
    let mut served = Served::start(&config, &["--runtime", "per-core"]).await;
    let pid = served.child.id().unwrap();
    // The runtimes are threads of their own (started just after the
    // address is printed).
    let thread_names = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    };
    let mut threads = thread_names();
    for _ in 0..100 {
        if threads.iter().any(|name| name == "serve-core-0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        threads = thread_names();
    }
    assert!(
        threads.iter().any(|name| name == "serve-core-0"),
        "{threads:?}"
    );
    // Concurrent connections, whole answers and streams, all answered.
    let url = format!("{}/v1/chat/completions", served.url);
    let mut requests = tokio::task::JoinSet::new();
    for index in 0..24 {
        let url = url.clone();
        requests.spawn(async move {
            // A client each: one connection each, spread over the runtimes.
            let stream = index % 2 == 1;
            let answer = reqwest::Client::new()
                .post(url)
                .bearer_auth(MASTER)
                .json(&serde_json::json!({
                    "model": "fast", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            (stream, answer.text().await.unwrap())
        });
    }
    while let Some(answered) = requests.join_next().await {
        let (stream, text) = answered.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["choices"][0]["message"]["content"], MOCK_TEXT);
        }
    }
    assert_eq!(fast.requests(), 24);
    // A request still running at SIGTERM is cut off after the grace.
    let in_flight = request_in_flight(&served.url, "slow", &slow).await;
    let elapsed = served.terminate(Duration::from_secs(20)).await;
    // The 1 s grace, not the upstream's 30 s.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert!(in_flight.await.unwrap().is_err(), "the request was cut off");
    // Every answered request is in the ledger, written before the exit.
    let row = served.usage_row("model", "fast").await;
    assert_eq!(row.expect("usage for model fast")["requests"], 24);
}

#[tokio::test]
async fn per_core_runtime_serves_https_too() {
    let upstream = MockUpstream::start().await.unwrap();
    let dir =
        std::env::temp_dir().join(format!("freehold-tls-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = freehold_test_support::self_signed_certificate(&dir);
    let mut served = Served::start(
        &mock_config(&upstream),
        &[
            "--runtime",
            "per-core",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(served.url.starts_with("https://"), "{}", served.url);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    for _ in 0..4 {
        let answer = chat_answer(&client, &served.url, "mock").await;
        assert_eq!(answer["choices"][0]["message"]["content"], MOCK_TEXT);
    }
    // Nothing in flight: SIGTERM ends it at once.
    served.terminate(Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `freehold serve ARGS` with an empty configuration, expecting it to
/// refuse to start; returns what it printed on stderr.
async fn refused_serve(args: &[&str]) -> String {
    let base = std::env::temp_dir().join(format!(
        "freehold-refused-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("config.toml"), "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_freehold"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("HOME", &base)
        .env("FREEHOLD_DATA_DIR", base.join("data"))
        .env("FREEHOLD_CONFIG", base.join("config.toml"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("freehold serve refused to start within 60 s")
        .unwrap();
    let _ = std::fs::remove_dir_all(&base);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    stderr
}

#[tokio::test]
async fn serving_without_keys_is_refused_off_loopback() {
    let stderr = refused_serve(&["--listen", "0.0.0.0:0", "--no-auth"]).await;
    assert!(
        stderr.contains("refusing to serve without keys on 0.0.0.0:0"),
        "{stderr}"
    );
}

/// CPU time `pid` has used, its threads together (Linux's schedstat). A
/// thread that has exited no longer counts, so callers subtract with
/// `saturating_sub`.
#[cfg(target_os = "linux")]
fn process_cpu_time(pid: u32) -> Duration {
    let nanos = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn busy_polling_keeps_a_per_core_runtime_polling_after_requests_only() {
    // Refused with the shared runtime, saying how to fix it.
    let stderr = refused_serve(&["--listen", "127.0.0.1:0", "--busy-poll-us", "500"]).await;
    assert!(
        stderr.contains("busy_poll_us = 500 needs the per-core runtime")
            && stderr.contains("--runtime per-core"),
        "{stderr}"
    );

    // With one per-core runtime polling 300 ms after each request start and
    // end: idle, it sleeps; after a request, it keeps its core busy.
    let upstream = MockUpstream::start().await.unwrap();
    let served = Served::start_with_env(
        &mock_config(&upstream),
        &["--runtime", "per-core", "--busy-poll-us", "300000"],
        &[("TOKIO_WORKER_THREADS", "1")],
    )
    .await;
    let pid = served.child.id().unwrap();
    let client = reqwest::Client::new();
    // CPU time is shared with whatever else runs: each check takes the best
    // of a few windows, so that one window crowded by other work (or by the
    // runtime still starting) does not decide it.
    let window = Duration::from_millis(300);
    let quiet = Duration::from_millis(30);
    // CPU time over up to `tries` windows, until one is quiet.
    let until_quiet = |tries: usize| async move {
        let mut seen = Vec::new();
        for _ in 0..tries {
            let before = process_cpu_time(pid);
            tokio::time::sleep(window).await;
            seen.push(process_cpu_time(pid).saturating_sub(before));
            if seen.last() < Some(&quiet) {
                break;
            }
        }
        seen
    };
    let idle = until_quiet(5).await;
    assert!(idle.last() < Some(&quiet), "idle: {idle:?}");

    let mut polling = Vec::new();
    for _ in 0..3 {
        let before = process_cpu_time(pid);
        let answer = chat_answer(&client, &served.url, "mock").await;
        assert_eq!(answer["choices"][0]["message"]["content"], MOCK_TEXT);
        tokio::time::sleep(window).await;
        polling.push(process_cpu_time(pid).saturating_sub(before));
        // A fifth of the window: other tests may share the CPUs.
        if polling.last() > Some(&Duration::from_millis(60)) {
            break;
        }
    }
    assert!(
        polling.last() > Some(&Duration::from_millis(60)),
        "after a request: {polling:?}"
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two tries only: polling that ran on much past its window must fail.
    let after = until_quiet(2).await;
    assert!(after.last() < Some(&quiet), "after the window: {after:?}");
}
