//! Provider configuration: presets, defaults, errors, and providers built
//! from it talking to real servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use freehold_llm::HealthSettings;
use freehold_llm::Provider;
use freehold_llm::config::{ConfigError, ProviderConfig};
use freehold_llm::presets::ProviderKind;
use freehold_protocol::{ChatRequest, ErrorKind, Message};
use freehold_test_support::{MockServer, Scripted};
use serde_json::json;

fn config(text: &str) -> ProviderConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn a_preset_name_needs_no_other_setting() {
    let groq = ProviderConfig::default().resolve("groq").unwrap();
    assert_eq!(groq.kind, ProviderKind::Openai);
    assert_eq!(groq.base_urls, vec!["https://api.groq.com/openai/v1"]);
    assert_eq!(groq.api_key_env.as_deref(), Some("GROQ_API_KEY"));
    assert!(groq.key_required && !groq.local && !groq.recover_text_tool_calls);
    assert_eq!(groq.http.idle_timeout, Duration::from_secs(120));

    let ollama = ProviderConfig::default().resolve("ollama").unwrap();
    assert_eq!(ollama.kind, ProviderKind::Ollama);
    assert!(ollama.local && ollama.recover_text_tool_calls && !ollama.key_required);
    assert_eq!(ollama.http.idle_timeout, Duration::from_secs(600));
}

#[test]
fn a_preset_can_be_pointed_elsewhere_and_tuned() {
    let resolved = config(
        r#"
        preset = "vllm"
        base_url = "http://10.0.0.5:8000/v1/"
        idle_timeout_secs = 900
        max_retries = 1
        recover_text_tool_calls = false
        headers = { "x-team" = "infra" }
        "#,
    )
    .resolve("gpu-box")
    .unwrap();
    assert_eq!(resolved.kind, ProviderKind::Openai);
    assert_eq!(
        resolved.base_urls,
        vec!["http://10.0.0.5:8000/v1"],
        "trailing slash trimmed"
    );
    assert_eq!(resolved.http.idle_timeout, Duration::from_secs(900));
    assert_eq!(resolved.http.retry.max_retries, 1);
    assert!(!resolved.recover_text_tool_calls);
    assert_eq!(
        resolved.headers,
        vec![("x-team".to_owned(), "infra".to_owned())]
    );
}

/// A server listed twice is used once; replicas are named in their health
/// by their addresses, without the credentials a URL may hold; and a local
/// server is reached without a proxy, a hosted one through any the
/// environment names.
#[tokio::test]
async fn replicas_are_listed_once_and_named_by_address() {
    let resolved = config(
        r#"
        kind = "openai"
        base_url = "http://user:secret@10.0.0.5:8000/v1"
        base_urls = ["http://10.0.0.6:8000/v1/", "http://user:secret@10.0.0.5:8000/v1",
                     "http://10.0.0.6:8000/v1"]
        "#,
    )
    .resolve("pool")
    .unwrap();
    assert_eq!(
        resolved.base_urls,
        vec![
            "http://user:secret@10.0.0.5:8000/v1",
            "http://10.0.0.6:8000/v1"
        ]
    );
    assert!(resolved.http.direct, "a local pool goes around proxies");
    let built = resolved.build(&HealthSettings::default()).unwrap();
    let addresses: Vec<Option<String>> = built
        .replica_health()
        .into_iter()
        .map(|replica| replica.address)
        .collect();
    assert_eq!(
        addresses,
        [
            Some("http://10.0.0.5:8000/v1".to_owned()),
            Some("http://10.0.0.6:8000/v1".to_owned())
        ]
    );
    let hosted = config("kind = \"openai\"\nbase_url = \"https://llm.example.com/v1\"")
        .resolve("corp")
        .unwrap();
    assert!(!hosted.http.direct);
    // A local server reached only through a proxy says so.
    let tunnelled =
        config("kind = \"openai\"\nbase_url = \"http://192.168.1.20:8080/v1\"\nenv_proxy = true")
            .resolve("home")
            .unwrap();
    assert!(tunnelled.local && !tunnelled.http.direct);
}

#[test]
fn a_custom_server_on_a_private_address_counts_as_local() {
    let resolved = config("kind = \"openai\"\nbase_url = \"http://192.168.1.20:8080/v1\"")
        .resolve("lan")
        .unwrap();
    assert!(resolved.local);
    assert!(resolved.recover_text_tool_calls);
    let hosted = config("kind = \"openai\"\nbase_url = \"https://llm.example.com/v1\"")
        .resolve("corp")
        .unwrap();
    assert!(!hosted.local);
}

/// Locality comes from where requests go, read from the parsed URL: the
/// privacy policy and budgets rely on it.
#[test]
fn locality_is_read_from_the_url_not_the_preset_or_its_spelling() {
    let local = |table: &str, name: &str| config(table).resolve(name).unwrap().local;
    for url in [
        "http://127.0.0.1:8000/v1",
        "http://localhost:11434",
        "http://[::1]:8080/v1",
        "http://10.0.0.5:8000/v1",
        "http://172.20.1.2/v1",
        "http://gpu-box.local:8000/v1",
        "http://[fd12::5]:8000/v1",
        "http://ollama:11434",
        "http://host.docker.internal:11434",
        "http://nas.home.arpa:8080/v1",
    ] {
        assert!(
            local(&format!("kind = \"openai\"\nbase_url = \"{url}\""), "a"),
            "{url}"
        );
    }
    for url in [
        "https://127.0.0.1@api.example.com/v1",
        "https://10.example.com/v1",
        "https://192.168.example.com/v1",
        "http://172.32.0.1/v1",
        "https://localhost.example.com/v1",
    ] {
        assert!(
            !local(&format!("kind = \"openai\"\nbase_url = \"{url}\""), "a"),
            "{url}"
        );
    }
    // A local preset, or kind, pointed at a hosted server is hosted.
    assert!(!local(
        "preset = \"ollama\"\nbase_url = \"https://ollama.com\"",
        "cloud"
    ));
    assert!(!local(
        "kind = \"ollama\"\nbase_url = \"https://ollama.com\"",
        "cloud"
    ));
    assert!(local("preset = \"ollama\"", "ollama"));
    // A private server known by a public-looking name says so, and a
    // setting overrides the address either way.
    let corp = "kind = \"openai\"\nbase_url = \"http://gpu.corp.example:8000/v1\"";
    assert!(!local(corp, "gpu"));
    assert!(local(&format!("{corp}\nlocal = true"), "gpu"));
    assert!(!local(
        "kind = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nlocal = false",
        "gpu"
    ));
}

#[test]
fn bad_configurations_say_what_to_do() {
    assert_eq!(
        config("preset = \"vlm\"").resolve("x").unwrap_err(),
        ConfigError::UnknownPreset {
            provider: "x".into(),
            preset: "vlm".into(),
            known: freehold_llm::presets::preset_names().join(", "),
        }
    );
    let missing_kind = config("base_url = \"http://h/v1\"")
        .resolve("x")
        .unwrap_err();
    assert!(
        missing_kind.to_string().contains("missing `kind`"),
        "{missing_kind}"
    );
    let missing_url = config("kind = \"openai\"").resolve("x").unwrap_err();
    assert!(
        missing_url.to_string().contains("missing `base_url`"),
        "{missing_url}"
    );
    let bad_url = config("kind = \"openai\"\nbase_url = \"localhost:8000\"")
        .resolve("x")
        .unwrap_err();
    assert!(
        bad_url.to_string().contains("must start with http://"),
        "{bad_url}"
    );
}

#[test]
fn engine_settings_are_read_for_local_and_refused_elsewhere() {
    let local = config(
        "kind = \"local\"\nthreads = 4\nmax_context = 8192\ncache_slots = 0\ngpu_layers = 20",
    )
    .resolve("local")
    .unwrap();
    assert_eq!(local.engine.threads, Some(4));
    assert_eq!(local.engine.max_context, Some(8192));
    assert_eq!(local.engine.cache_slots, Some(0));
    assert_eq!(local.engine.gpu_layers, Some(20));
    for key in [
        "threads = 4",
        "max_context = 8192",
        "cache_slots = 0",
        "gpu_layers = 0",
    ] {
        let error = config(&format!("preset = \"vllm\"\n{key}"))
            .resolve("team")
            .unwrap_err();
        let name = key.split(' ').next().unwrap();
        assert_eq!(
            error,
            ConfigError::LocalOnly {
                provider: "team".into(),
                key: name,
            },
            "{key}"
        );
    }
}

#[test]
fn a_protocols_settings_are_refused_on_another_kind() {
    for (table, key, applies_to, kind) in [
        (
            "preset = \"anthropic\"",
            "stream_usage = false",
            "openai",
            "anthropic",
        ),
        (
            "kind = \"openai-responses\"\nbase_url = \"http://127.0.0.1:1/v1\"",
            "token_count = \"tokenize\"",
            "openai",
            "openai-responses",
        ),
        (
            "preset = \"vllm\"",
            "keep_alive = \"5m\"",
            "ollama",
            "openai",
        ),
        (
            "preset = \"ollama\"",
            "default_max_tokens = 100",
            "anthropic",
            "ollama",
        ),
        (
            "preset = \"gemini\"",
            "max_tokens_field = \"max_tokens\"",
            "openai",
            "gemini",
        ),
        (
            "preset = \"anthropic\"",
            "num_ctx_min = 4096",
            "ollama",
            "anthropic",
        ),
        (
            "preset = \"ollama\"",
            "enable_thinking_kwarg = true",
            "openai",
            "ollama",
        ),
        (
            "preset = \"anthropic\"",
            "openai_api = true",
            "openai or openai-responses",
            "anthropic",
        ),
    ] {
        let error = config(&format!("{table}\n{key}"))
            .resolve("team")
            .unwrap_err();
        let name = key.split(' ').next().unwrap();
        assert_eq!(
            error,
            ConfigError::OtherKindOnly {
                provider: "team".into(),
                key: name,
                applies_to,
                kind,
            },
            "{key}"
        );
        assert!(error.to_string().contains("remove it"), "{error}");
    }
    // On their own kind they are taken.
    for (table, key) in [
        ("preset = \"vllm\"", "token_count = \"none\""),
        ("preset = \"lmstudio\"", "enable_thinking_kwarg = true"),
        ("preset = \"lmstudio\"", "probe_health = false"),
        ("preset = \"vllm\"", "reasoning_in_history = false"),
        ("preset = \"anthropic\"", "default_max_tokens = 100"),
        ("preset = \"ollama\"", "keep_alive = \"5m\""),
        ("preset = \"vllm\"", "openai_api = true"),
        (
            "kind = \"openai-responses\"\nbase_url = \"http://127.0.0.1:1/v1\"",
            "openai_api = true",
        ),
    ] {
        config(&format!("{table}\n{key}")).resolve("team").unwrap();
    }
}

#[tokio::test]
async fn a_key_variable_that_is_not_set_fails_without_touching_the_network() {
    let server = MockServer::start(vec![Scripted::json(200, json!({}))]).await;
    let resolved = config(&format!(
        "kind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"FREEHOLD_TEST_KEY_THAT_IS_NEVER_SET\"",
        server.url()
    ))
    .resolve("team")
    .unwrap();
    assert_eq!(
        resolved.missing_key(),
        Some("FREEHOLD_TEST_KEY_THAT_IS_NEVER_SET")
    );
    let provider = resolved.build(&HealthSettings::default()).unwrap();
    let error = provider
        .complete(ChatRequest::new("m", vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert!(
        error
            .to_string()
            .contains("FREEHOLD_TEST_KEY_THAT_IS_NEVER_SET is not set"),
        "{error}"
    );
    assert!(server.requests().is_empty());
}

fn answer() -> Scripted {
    Scripted::json(
        200,
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
    )
}

#[tokio::test]
async fn replicas_survive_one_being_killed_mid_test() {
    let servers = [
        MockServer::start(vec![answer()]).await,
        MockServer::start(vec![answer()]).await,
        MockServer::start(vec![answer()]).await,
    ];
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}/v1\"", s.url()))
        .collect();
    let resolved = config(&format!(
        "kind = \"openai\"\nbase_urls = [{}]",
        urls.join(", ")
    ))
    .resolve("pool")
    .unwrap();
    let health = HealthSettings {
        eject_after_failures: 2,
        cooldown: Duration::from_secs(60),
        probe: false,
        probe_interval: None,
    };
    let provider: Arc<dyn Provider> = resolved.build(&health).unwrap();
    let ask = |provider: Arc<dyn Provider>| async move {
        provider
            .complete(ChatRequest::new("m", vec![Message::user("hi")]))
            .await
    };

    let first: Vec<_> = futures::future::join_all((0..9).map(|_| ask(provider.clone()))).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    for server in &servers {
        assert!(!server.requests().is_empty(), "every replica got work");
    }

    servers[1].kill();
    let before = servers[1].requests().len();
    let second: Vec<_> = futures::future::join_all((0..30).map(|_| ask(provider.clone()))).await;
    let failures: Vec<_> = second.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "no request a retry could save may fail: {failures:?}"
    );
    // The dead replica is ejected after two failures and gets no more work.
    assert!(
        servers[1].requests().len() - before <= 2,
        "the dead replica kept getting requests"
    );
}

fn printed_call() -> Scripted {
    Scripted::json(
        200,
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "qwen",
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                 "content": "<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>"}}]}),
    )
}

fn tool_request(model: &str) -> ChatRequest {
    let mut request = ChatRequest::new(model, vec![Message::user("read a.rs")]);
    request.tools = vec![freehold_protocol::ToolSpec {
        name: "read".into(),
        description: "Read a file".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        strict: false,
    }];
    request
}

#[tokio::test]
async fn a_local_server_gets_printed_tool_calls_recovered_unless_a_model_opts_out() {
    let server = MockServer::start(vec![printed_call()]).await;
    let mut resolved = config(&format!(
        "kind = \"openai\"\nbase_url = \"{}/v1\"",
        server.url()
    ))
    .resolve("lan")
    .unwrap();
    assert!(resolved.local && resolved.recover_text_tool_calls);
    resolved.recover_per_model.insert("raw-model".into(), false);
    let provider = resolved.build(&HealthSettings::default()).unwrap();

    let response = provider.complete(tool_request("qwen")).await.unwrap();
    let calls: Vec<_> = response.message.tool_calls().cloned().collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "read");
    assert_eq!(calls[0].arguments, r#"{"path":"a.rs"}"#);
    assert_eq!(response.stop_reason, freehold_protocol::StopReason::ToolUse);

    let response = provider.complete(tool_request("raw-model")).await.unwrap();
    assert_eq!(response.message.tool_calls().count(), 0);
    assert!(response.message.text().contains("<tool_call>"));
}
