//! The gateway in process on 127.0.0.1, over mock upstreams: keys, rate
//! limits, budgets under concurrency (SQLite, and two gateways sharing one
//! PostgreSQL), load balancing with a replica killed mid-test, and the
//! errors malformed requests get, in each protocol's shape. Streams kept
//! alive while an upstream is silent are in gateway/keepalive.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use freehold_gateway::ledger::Ledger;
use freehold_gateway::mock::{MOCK_TEXT, MockUpstream};
use freehold_gateway::settings::GatewaySettings;
use freehold_gateway::state::{Gateway, Routes};
use freehold_gateway::store::{GroupBy, KeyRecord, LedgerLine, NewKey, Store};
use freehold_llm::catalog::{Catalog, ModelEntry, Pricing};
use freehold_llm::config::ProviderConfig;
use freehold_llm::presets::ProviderKind;
use freehold_llm::router::{AliasTarget, Router};
use freehold_llm::{HealthSettings, Provider};
use serde_json::{Value, json};

#[path = "gateway/keepalive.rs"]
mod keepalive;

#[path = "gateway/context_edits.rs"]
mod context_edits;

const MASTER: &str = "fh-master-for-tests";

/// A routing table over one provider `mock` with the given replicas; the
/// model `mock:mock-model` costs $1 per million input and output tokens.
fn routes(base_urls: Vec<String>) -> Routes {
    routes_with(
        base_urls,
        &HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_secs(60),
            probe: false,
            probe_interval: None,
        },
    )
}

/// [`routes`] with its replicas' health settings.
fn routes_with(base_urls: Vec<String>, health: &HealthSettings) -> Routes {
    routes_with_model(base_urls, health, None)
}

/// [`routes_with`], the catalog saying how many output tokens the model
/// allows.
fn routes_with_model(
    base_urls: Vec<String>,
    health: &HealthSettings,
    max_output_tokens: Option<u32>,
) -> Routes {
    routes_priced(base_urls, health, max_output_tokens, 1.0)
}

/// [`routes_with_model`] at `usd_per_million` tokens, in and out.
fn routes_priced(
    base_urls: Vec<String>,
    health: &HealthSettings,
    max_output_tokens: Option<u32>,
    usd_per_million: f64,
) -> Routes {
    let provider: Arc<dyn Provider> = ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_urls,
        ..ProviderConfig::default()
    }
    .resolve("mock")
    .unwrap()
    .build(health)
    .unwrap();
    let mut catalog = Catalog::new();
    catalog
        .insert(
            "mock:mock-model",
            ModelEntry {
                pricing: Some(Pricing {
                    input: usd_per_million,
                    cached_input: None,
                    cache_write: None,
                    output: usd_per_million,
                    long_prompt: None,
                }),
                max_output_tokens,
                ..ModelEntry::default()
            },
        )
        .unwrap();
    let aliases = BTreeMap::from([(
        "mock".to_owned(),
        AliasTarget::One("mock:mock-model".into()),
    )]);
    Routes {
        router: Router::new(
            BTreeMap::from([("mock".to_owned(), provider)]),
            aliases,
            catalog,
        ),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::from(["mock".to_owned()]),
        engine_providers: BTreeSet::new(),
    }
}

/// A gateway serving on a free loopback port.
struct Running {
    url: String,
    store: Store,
    gateway: Arc<Gateway>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Creates a virtual key in this gateway's store; returns it and its
    /// secret.
    async fn key(&self, key: NewKey) -> (KeyRecord, String) {
        self.store.create_key(key).await.unwrap()
    }
}

async fn start(routes: Routes, settings: GatewaySettings, database: Option<String>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let url = database.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("g.db").display()));
    let store = Store::open(&url).await.unwrap();
    let (ledger, _task) = Ledger::start(store.clone());
    let gateway = Arc::new(
        Gateway::new(
            settings,
            routes,
            Some(MASTER.into()),
            Some(store.clone()),
            ledger,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let limits = gateway.settings().time_limits();
    let app = freehold_gateway::routes::app(Arc::clone(&gateway));
    tokio::spawn(freehold_gateway::listen::serve(
        listener,
        app,
        None,
        limits,
        std::future::pending(),
    ));
    Running {
        url: format!("http://{address}"),
        store,
        gateway,
        _dir: dir,
    }
}

/// A gateway with the default settings in front of an Anthropic upstream
/// at `url` ([`anthropic_routes`]).
async fn start_anthropic(url: &str) -> Running {
    start(anthropic_routes(url), GatewaySettings::default(), None).await
}

/// A gateway with the default settings in front of `providers`, each a
/// `[providers.NAME]` table as the configuration file would give it.
async fn start_configured(providers: Vec<(&str, ProviderConfig)>) -> Running {
    start_configured_with(providers, GatewaySettings::default()).await
}

/// [`start_configured`] with `settings`.
async fn start_configured_with(
    providers: Vec<(&str, ProviderConfig)>,
    settings: GatewaySettings,
) -> Running {
    let built = providers
        .into_iter()
        .map(|(name, config)| {
            let provider: Arc<dyn Provider> = config
                .resolve(name)
                .unwrap()
                .build(&HealthSettings::default())
                .unwrap();
            (name.to_owned(), provider)
        })
        .collect();
    let routes = Routes {
        router: Router::new(built, BTreeMap::new(), Catalog::new()),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    };
    start(routes, settings, None).await
}

/// A whole Chat Completions answer of `model` saying `text`, as an
/// upstream sends it.
fn chat_completion(model: &str, text: &str) -> Value {
    json!({
        "id": "c", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
}

/// A whole Messages answer of `model` saying `text`, as Anthropic's API
/// sends it.
fn anthropic_message(model: &str, text: &str) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1},
    })
}

/// An `openai`-kind provider at `server` (`openai_api` as given).
fn openai_kind(
    server: &freehold_test_support::MockServer,
    openai_api: Option<bool>,
) -> ProviderConfig {
    ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_url: Some(format!("{}/v1", server.url())),
        openai_api,
        ..ProviderConfig::default()
    }
}

/// Reads a streamed answer until what it received contains `needle`
/// (within 10 s a piece); returns what it received.
async fn read_until(response: &mut reqwest::Response, needle: &str) -> String {
    let mut received = String::new();
    while !received.contains(needle) {
        let piece = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("`{needle}` within 10 s: {received}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before `{needle}`: {received}"));
        received.push_str(&String::from_utf8_lossy(&piece));
    }
    received
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100})
}

async fn post(url: &str, path: &str, key: Option<&str>, body: &Value) -> (u16, Value, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

/// `GET url` (with `key`, if any): the status and the body as JSON (`Null`
/// when it is not JSON).
async fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn keys_missing_wrong_revoked_expired_and_model_not_allowed() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (status, body, _) = post(&gw.url, "/v1/chat/completions", None, &chat_body("mock")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no API key")
    );
    let (status, _, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some("fh-wrong"),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], MOCK_TEXT);

    // A key allowed one model only.
    let (_, secret) = gw
        .key(NewKey {
            name: "narrow".into(),
            allowed_models: vec!["mock".into()],
            ..NewKey::default()
        })
        .await;
    let (status, _, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body, _) = post(
        &gw.url,
        "/v1/messages",
        Some(&secret),
        &chat_body("mock:mock-model"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    // A name outside the list is refused before it is looked up: the key
    // learns neither whether it exists nor what the gateway serves.
    for (path, body) in [
        ("/v1/chat/completions", chat_body("nope")),
        ("/v1/embeddings", json!({"model": "nope", "input": "x"})),
    ] {
        let (status, answer, _) = post(&gw.url, path, Some(&secret), &body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("may not use model `nope`"),
            "{path}: {message}"
        );
    }
    // The list of models is the key's.
    let (status, listed) = get(&format!("{}/v1/models", gw.url), Some(&secret)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], "mock", "{listed}");
    let (_, everything) = get(&format!("{}/v1/models", gw.url), Some(MASTER)).await;
    assert!(
        everything["data"].as_array().unwrap().len() > 1,
        "{everything}"
    );
    // A listed model carries the context window its server gave, under
    // the names clients read; an alias names none.
    let listed_model = everything["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "mock:mock-model")
        .unwrap_or_else(|| panic!("{everything}"));
    assert_eq!(listed_model["max_model_len"], 8192, "{listed_model}");
    assert_eq!(listed_model["context_length"], 8192, "{listed_model}");
    assert!(listed["data"][0].get("max_model_len").is_none(), "{listed}");
    // Anthropic's SDK sends a key from the environment beside the token it
    // was given: the gateway's own key of the two is the caller.
    let both = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-api-key", "sk-ant-not-this-gateways")
        .bearer_auth(&secret)
        .json(&chat_body("mock"))
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 200);

    // Revoked: refused once the key cache (one second) has expired.
    gw.store.revoke_key("narrow").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    // Expired.
    let (_, expired) = gw
        .key(NewKey {
            name: "old".into(),
            expires_at: Some(1),
            ..NewKey::default()
        })
        .await;
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&expired),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

/// A web page cannot use a gateway on the user's machine: neither by
/// posting to it from elsewhere, nor by making its own name point at
/// this machine (DNS rebinding). Programs, which send neither an `Origin`
/// nor a foreign `Host`, are served.
#[tokio::test]
async fn web_pages_cannot_use_a_gateway_on_loopback() {
    let upstream = MockUpstream::start().await.unwrap();
    let settings = GatewaySettings {
        require_key: false,
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
    let address = gw.url.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    let send = |headers: &[(&str, &str)]| {
        let mut request = client
            .post(format!("{}/v1/chat/completions", gw.url))
            .json(&chat_body("mock"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(&[]).await, 200);
    let own_origin = format!("http://{address}");
    assert_eq!(send(&[("origin", own_origin.as_str())]).await, 200);
    let port = address.rsplit_once(':').unwrap().1;
    let localhost = format!("localhost:{port}");
    assert_eq!(send(&[("host", localhost.as_str())]).await, 200);
    assert_eq!(send(&[("origin", "https://evil.example")]).await, 403);
    assert_eq!(send(&[("origin", "null")]).await, 403);
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    assert_eq!(
        send(&[
            ("host", rebound.as_str()),
            ("origin", rebound_origin.as_str())
        ])
        .await,
        403
    );
    assert_eq!(upstream.requests(), 3);

    // Where a key is needed, a page has none: a reverse proxy passing its
    // own Host on is served. The status pages, open on loopback without a
    // key, are still kept from rebound pages.
    let keyed = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let port = keyed.url.rsplit_once(':').unwrap().1.to_owned();
    let proxied = format!("gw.example.com:{port}");
    let status = client
        .post(format!("{}/v1/chat/completions", keyed.url))
        .bearer_auth(MASTER)
        .header("host", proxied.as_str())
        .json(&chat_body("mock"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    for path in ["/metrics", "/health"] {
        let status = client
            .get(format!("{}{path}", keyed.url))
            .header("host", proxied.as_str())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403, "{path}");
    }
}

/// Model names go into the log, the ledger and /metrics: one that would
/// forge lines there, or fill them, is refused.
#[tokio::test]
async fn model_names_cannot_forge_metrics_or_log_lines() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let forged = "mock:x\"} 1\nfreehold_gateway_tokens_total{model=\"coder\",key=\"alice\",direction=\"output\"} 1e12";
    let long = format!("mock:{}", "m".repeat(300));
    for model in [forged, long.as_str()] {
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body(model),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid model name"),
            "{body}"
        );
    }
    // A name with quotes that routes is counted, escaped.
    let quoted = "mock:say \"hi\"";
    let (status, _, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body(quoted),
    )
    .await;
    assert_eq!(status, 200);
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(r#"model="mock:say \"hi\"""#), "{metrics}");
    assert!(!metrics.contains("1e12"), "{metrics}");
}

/// A client may not name a file for the embedded engine to load; an
/// operator's alias may. (The mock stands in for an engine provider: the
/// gateway refuses before any provider is asked.)
#[tokio::test]
async fn clients_cannot_load_files_into_the_engine() {
    let upstream = MockUpstream::start().await.unwrap();
    let provider: Arc<dyn Provider> = ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_urls: vec![upstream.base_url()],
        ..ProviderConfig::default()
    }
    .resolve("engine")
    .unwrap()
    .build(&HealthSettings::default())
    .unwrap();
    let routes = Routes {
        router: Router::new(
            BTreeMap::from([("engine".to_owned(), provider)]),
            BTreeMap::from([(
                "file".to_owned(),
                AliasTarget::One("engine:/srv/models/coder.gguf".into()),
            )]),
            Catalog::new(),
        ),
        local_providers: BTreeSet::from(["engine".to_owned()]),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::from(["engine".to_owned()]),
    };
    let gw = start(routes, GatewaySettings::default(), None).await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for model in [
        "engine:/home/bob/private.gguf",
        "engine:../models/x",
        "engine:weights.gguf",
        "engine:C:\\models\\x",
    ] {
        let (status, body, _) =
            post(&gw.url, "/v1/chat/completions", Some(MASTER), &chat(model)).await;
        assert_eq!(status, 404, "{model}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not files by path"),
            "{body}"
        );
        let (status, _, _) = post(
            &gw.url,
            "/v1/embeddings",
            Some(MASTER),
            &json!({"model": model, "input": "hi"}),
        )
        .await;
        assert_eq!(status, 404, "{model}");
        let (status, _) = get(&format!("{}/v1/models/{model}", gw.url), Some(MASTER)).await;
        assert_eq!(status, 404, "{model}");
    }
    assert_eq!(upstream.requests(), 0);
    // A store name, and the operator's alias to a file, reach the provider.
    for model in ["engine:qwen2.5-coder-7b", "file"] {
        let (status, body, _) =
            post(&gw.url, "/v1/chat/completions", Some(MASTER), &chat(model)).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    assert_eq!(upstream.requests(), 2);
}

/// `GET /v1/models/{model}`: a routed model in the protocol's shape; an
/// unknown one, or one the key may not use, refused in it.
#[tokio::test]
async fn one_model_is_retrieved_in_either_protocol() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let fetch = |path: &str, key: &str, anthropic: bool| {
        let mut request = client.get(format!("{}{path}", gw.url)).bearer_auth(key);
        if anthropic {
            request = request.header("anthropic-version", "2023-06-01");
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = fetch("/v1/models/mock", MASTER, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "mock", "object": "model", "created": 0, "owned_by": "freehold"})
    );
    // A provider's model, its name holding a slash.
    let (status, body) = fetch("/v1/models/mock:org/some-model", MASTER, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "mock:org/some-model");
    assert_eq!(body["type"], "model");
    assert!(body["display_name"].is_string() && body["created_at"].is_string());

    let (status, body) = fetch("/v1/models/no-such-model", MASTER, false).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model")
    );
    let (status, body) = fetch("/v1/models/no-such-model", MASTER, true).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");

    let (_, narrow) = gw
        .key(NewKey {
            name: "narrow".into(),
            allowed_models: vec!["mock".into()],
            ..NewKey::default()
        })
        .await;
    assert_eq!(fetch("/v1/models/mock", &narrow, false).await.0, 200);
    let (status, body) = fetch("/v1/models/mock:mock-model", &narrow, false).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = fetch("/v1/models/mock", "fh-wrong", false).await;
    assert_eq!(status, 401);
    // Only GET.
    let response = client
        .post(format!("{}/v1/models/mock", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.text().await.unwrap().contains("use GET"));
}

/// A request compacted before it is answered (the Responses API's
/// server-side compaction) is one request to its key's rate limit, though
/// it makes two provider calls: a key allowed one a minute gets its answer,
/// and is refused the next request.
#[tokio::test]
async fn a_compacted_request_counts_once_against_the_rate_limit() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (_, secret) = gw
        .key(NewKey {
            name: "one-a-minute".into(),
            rpm: Some(1),
            ..NewKey::default()
        })
        .await;
    let compacted = json!({"model": "mock", "input": "Summarise, then answer.",
        "context_management": [{"type": "compaction", "compact_threshold": 1}]});
    let (status, body, _) = post(&gw.url, "/v1/responses", Some(&secret), &compacted).await;
    assert_eq!(status, 200, "{body}");
    let kinds: Vec<&str> = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["compaction", "message"], "{body}");
    assert_eq!(upstream.requests(), 2);
    let (status, body, _) = post(&gw.url, "/v1/responses", Some(&secret), &compacted).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test]
async fn rate_limited_keys_get_429_with_retry_after() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (_, secret) = gw
        .key(NewKey {
            name: "slow".into(),
            rpm: Some(2),
            ..NewKey::default()
        })
        .await;
    for _ in 0..2 {
        let (status, _, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&secret),
            &chat_body("mock"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, body, retry_after) =
        post(&gw.url, "/v1/messages", Some(&secret), &chat_body("mock")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let seconds: u64 = retry_after.parse().unwrap();
    assert!((1..=60).contains(&seconds), "{retry_after}");

    // Tokens per minute: the first request spends more than 10 tokens (the
    // mock counts a quarter of the body's bytes, plus 7 out), so the next
    // one waits.
    let (_, secret) = gw
        .key(NewKey {
            name: "hungry".into(),
            tpm: Some(10),
            ..NewKey::default()
        })
        .await;
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, retry_after) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("token"),
        "{body}"
    );
    let seconds: u64 = retry_after.parse().unwrap();
    assert!((1..=60).contains(&seconds), "{retry_after}");

    // Sent together to a slow upstream, requests of a key with a token
    // limit do not all pass before the first has finished: each counts its
    // prompt's estimate as it is admitted. Every prompt here is about 10
    // tokens, so a limit of 25 admits three and refuses the rest.
    let slow = MockUpstream::start_slow(Duration::from_millis(300))
        .await
        .unwrap();
    let slow_gw = start(
        routes(vec![slow.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (_, secret) = slow_gw
        .key(NewKey {
            name: "eager".into(),
            tpm: Some(25),
            ..NewKey::default()
        })
        .await;
    let prompt = json!({"model": "mock", "max_tokens": 8,
                        "messages": [{"role": "user", "content": "x".repeat(40)}]});
    let results = futures::future::join_all(
        (0..10).map(|_| post(&slow_gw.url, "/v1/chat/completions", Some(&secret), &prompt)),
    )
    .await;
    let statuses: Vec<u16> = results.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|status| [200, 429].contains(status)),
        "{statuses:?}"
    );
    assert_eq!(slow.requests(), 3);
}

#[tokio::test]
async fn budgets_refuse_hosted_models_without_a_price() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (_, budgeted) = gw
        .key(NewKey {
            name: "budgeted".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await;
    // `mock:mock-model` has a price; `mock:unpriced` does not.
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&budgeted),
        &chat_body("mock:mock-model"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&budgeted),
        &chat_body("mock:unpriced"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(r#"[models."mock:unpriced"]"#), "{message}");
    // A key without a budget may use it.
    let (_, unlimited) = gw
        .key(NewKey {
            name: "unlimited".into(),
            ..NewKey::default()
        })
        .await;
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(&unlimited),
        &chat_body("mock:unpriced"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A client that hangs up while the database is taking its budget hold
/// (a busy SQLite here) leaves no hold behind.
#[tokio::test]
async fn a_hold_taken_after_the_client_left_is_released() {
    use sqlx::Connection;

    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (key, secret) = gw
        .key(NewKey {
            name: "impatient".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await;
    // Another writer holds the database: the hold waits for it.
    let mut blocker = sqlx::SqliteConnection::connect(&format!(
        "sqlite:{}",
        gw._dir.path().join("g.db").display()
    ))
    .await
    .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let sent = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&secret)
        .timeout(Duration::from_millis(500))
        .json(&chat_body("mock"))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "the request should still be waiting: {sent:?}"
    );
    // The client is gone; the writer lets go and the hold goes through.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();
    let mut reserved = f64::NAN;
    for _ in 0..100 {
        let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
        reserved = now.reserved_usd;
        if reserved == 0.0 && gw.store.requests(None, 10).await.unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reserved, 0.0, "the hold was left behind");
    // It was cut off at admission: no provider saw it.
    assert_eq!(upstream.requests(), 0);
}

/// A request is priced on the routing table it was admitted on: a reload
/// that changes the price while it streams does not change what it costs.
#[tokio::test]
async fn a_request_in_flight_is_priced_on_the_table_it_started_with() {
    use freehold_test_support::{MockServer, Scripted, Split};

    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
                   "model": "mock-model", "choices": [{"index": 0, "delta": delta,
                   "finish_reason": finish}],
                   "usage": if finish.is_null() { Value::Null } else {
                       json!({"prompt_tokens": 1000, "completion_tokens": 1000,
                              "total_tokens": 2000}) }})
        )
    };
    let first = chunk(
        json!({"role": "assistant", "content": "hello"}),
        Value::Null,
    );
    let last = chunk(json!({}), json!("stop"));
    let mut slow = Scripted::sse(
        &format!("{first}{last}data: [DONE]\n\n"),
        Split::At(vec![first.len()]),
    );
    slow.chunk_delay = Duration::from_millis(500);
    let upstream = MockServer::start(vec![slow]).await;
    let base = vec![format!("{}/v1", upstream.url())];
    let health = HealthSettings::default();
    let gw = start(
        routes_priced(base.clone(), &health, None, 1.0),
        GatewaySettings::default(),
        None,
    )
    .await;
    let mut body = chat_body("mock");
    body["stream"] = json!(true);
    let request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER)
        .json(&body)
        .send();
    let streamed = tokio::spawn(async move { request.await.unwrap().text().await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upstream.requests().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The price goes up a hundredfold while the answer streams.
    gw.gateway.reload(routes_priced(base, &health, None, 100.0));
    let text = streamed.await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    let lines = ledger_lines(&gw.store, 1).await;
    let cost = lines[0].record.cost_usd.unwrap();
    // 2,000 tokens at $1 per million.
    assert!((cost - 0.002).abs() < 1e-9, "{cost}");
}

/// A stream the client leaves before the provider's usage arrives (the
/// count comes last) is still charged to the key's budget, token limit
/// and ledger: its estimated input and the answer it received. Before,
/// it was charged nothing, so a client could spend a budget for free by
/// hanging up.
#[tokio::test]
async fn a_stream_cut_off_before_its_usage_is_charged_an_estimate() {
    use freehold_test_support::{MockServer, Scripted, Split};

    let answer = "x".repeat(400);
    let first = format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
               "model": "mock-model", "choices": [{"index": 0,
               "delta": {"role": "assistant", "content": answer}, "finish_reason": null}]})
    );
    let rest = "data: [DONE]\n\n";
    let upstream = MockServer::start(vec![
        Scripted::sse(&format!("{first}{rest}"), Split::At(vec![first.len()]))
            .stall_after(1, Duration::from_secs(30)),
    ])
    .await;
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (key, secret) = gw
        .key(NewKey {
            name: "leaves-early".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await;
    let prompt = "y".repeat(4_000);
    let body = json!({"model": "mock", "stream": true, "max_tokens": 1000,
        "messages": [{"role": "user", "content": prompt}]});
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The first piece of the answer, then the client hangs up.
    read_until(&mut response, "xxxx").await;
    drop(response);
    // The gateway sees the connection close at its next write, or when
    // the upstream's stall ends: poll for the settlement.
    let mut spent = 0.0;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
        if now.reserved_usd.abs() < 1e-12 && now.spent_usd > 0.0 {
            spent = now.spent_usd;
            break;
        }
    }
    // About 1,000 input tokens (4,000 bytes) and 100 output (400 bytes),
    // at $1 per million each way.
    let expected = (1_000.0 + 100.0) / 1e6;
    assert!(
        spent >= expected * 0.9 && spent <= expected * 1.2,
        "spent {spent}, expected about {expected}"
    );
}

/// What a provider refused, or never got, costs nothing: a stream that
/// opens with an error, and a provider that cannot be reached.
#[tokio::test]
async fn refused_and_unreached_requests_are_not_charged() {
    use freehold_test_support::{MockServer, Scripted, Split};

    let refusal = "data: {\"error\": {\"message\": \"prompt too long\", \"type\": \
                   \"invalid_request_error\", \"code\": \"context_length_exceeded\"}}\n\n";
    let upstream = MockServer::start(vec![Scripted::sse(refusal, Split::Whole)]).await;
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    for base in [format!("{}/v1", upstream.url()), dead] {
        let gw = start(routes(vec![base.clone()]), GatewaySettings::default(), None).await;
        let (key, secret) = gw
            .key(NewKey {
                name: "refused".into(),
                budget_usd: Some(1.0),
                ..NewKey::default()
            })
            .await;
        let body = json!({"model": "mock", "stream": true, "max_tokens": 100,
            "messages": [{"role": "user", "content": "y".repeat(4_000)}]});
        let (status, _, _) = post(&gw.url, "/v1/chat/completions", Some(&secret), &body).await;
        assert!(status >= 400, "{base}: {status}");
        assert!(
            gw.gateway
                .settlements_written(Duration::from_secs(10))
                .await
        );
        let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
        assert!(now.spent_usd.abs() < 1e-12, "{base}: {now:?}");
        assert!(now.reserved_usd.abs() < 1e-12, "{base}: {now:?}");
    }
}

/// Codex's settings that only OpenAI's API reads (`prompt_cache_key`,
/// `text.verbosity`, `service_tier`) reach an upstream
/// configured as OpenAI's API; and a model whose reasoning that API's Chat
/// Completions refuses beside tools (as Claude Code's every request has
/// them) is answered through its Responses API.
#[tokio::test]
async fn codex_settings_and_tool_turns_reach_openais_api_as_it_takes_them() {
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("gpt-5.2", "ok");
    let refused = json!({"error": {"message": "Function tools with reasoning_effort are not \
        supported for gpt-5.5 in /v1/chat/completions. Please use /v1/responses instead.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": null}});
    let through_responses = json!({
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": "gpt-5.5", "output": [{"id": "msg_1", "type": "message", "status": "completed",
        "role": "assistant", "content": [{"type": "output_text", "text": "via responses",
        "annotations": []}]}],
        "usage": {"input_tokens": 30, "output_tokens": 2, "total_tokens": 32}});
    let server = MockServer::start(vec![
        Scripted::json(200, completion),
        Scripted::json(400, refused),
        Scripted::json(200, through_responses),
    ])
    .await;
    let gw = start_configured(vec![("up", openai_kind(&server, Some(true)))]).await;

    let codex = json!({"model": "up:gpt-5.2", "instructions": "You are Codex.",
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "hi"}]}],
        "reasoning": {"effort": "medium", "summary": "auto"},
        "text": {"verbosity": "low"}, "prompt_cache_key": "019a-thread",
        "service_tier": "flex", "store": false, "stream": false});
    let (status, body, _) = post(&gw.url, "/v1/responses", Some(MASTER), &codex).await;
    assert_eq!(status, 200, "{body}");
    let sent = server.requests()[0].json();
    assert_eq!(sent["prompt_cache_key"], "019a-thread", "{sent}");
    assert_eq!(sent["verbosity"], "low", "{sent}");
    assert_eq!(sent["service_tier"], "flex", "{sent}");
    assert_eq!(sent["reasoning_effort"], "medium", "{sent}");

    let claude_code = json!({"model": "up:gpt-5.5", "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "Read a.rs."}],
        "tools": [{"name": "read", "input_schema": {"type": "object",
                   "properties": {"path": {"type": "string"}}}}]});
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &claude_code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "via responses", "{body}");
    let paths: Vec<String> = server.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/responses"
        ]
    );
    let through = server.requests()[2].json();
    assert_eq!(through["reasoning"]["effort"], "low", "{through}");
    assert_eq!(through["tools"][0]["name"], "read", "{through}");
}

/// The end user a client names for the provider's abuse monitoring reaches
/// the provider in its own field, whatever protocol the client spoke:
/// Claude Code's `metadata.user_id` (longer than OpenAI takes: hashed) as
/// OpenAI's `safety_identifier`, an OpenAI client's `user` as Anthropic's
/// `metadata.user_id`; servers that only speak either protocol get none;
/// and with the privacy detectors on, an id they find anything in (an
/// email address) is left out, the request still answered by the hosted
/// provider. The ledger names each request's end user.
#[tokio::test]
async fn the_end_user_reaches_each_provider_in_its_own_field() {
    use freehold_gateway::privacy::PrivacySettings;
    use freehold_test_support::{MockServer, Scripted};

    let openai = MockServer::start(vec![
        Scripted::json(200, chat_completion("gpt-5.2", "ok")),
        Scripted::json(200, chat_completion("m", "ok")),
        Scripted::json(200, chat_completion("gpt-5.2", "ok")),
    ])
    .await;
    let anthropic = MockServer::start(vec![
        Scripted::json(200, anthropic_message("claude-x", "hi")),
        Scripted::json(200, anthropic_message("claude-x", "hi")),
    ])
    .await;
    let anthropic_kind = |anthropic_api| ProviderConfig {
        kind: Some(ProviderKind::Anthropic),
        base_url: Some(anthropic.url()),
        anthropic_api: Some(anthropic_api),
        ..ProviderConfig::default()
    };
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings::default()),
        ..GatewaySettings::default()
    };
    let gw = start_configured_with(
        vec![
            ("up", openai_kind(&openai, Some(true))),
            ("other", openai_kind(&openai, None)),
            ("claude", anthropic_kind(true)),
            ("compatible", anthropic_kind(false)),
        ],
        settings,
    )
    .await;
    let session = format!(
        "user_{}_account__session_{}",
        "a1".repeat(32),
        "0f".repeat(16)
    );
    let claude_code = json!({"model": "up:gpt-5.2", "max_tokens": 100,
        "metadata": {"user_id": session},
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &claude_code).await;
    assert_eq!(status, 200, "{body}");
    let sent = openai.requests()[0].json();
    let id = sent["safety_identifier"].as_str().unwrap();
    assert_eq!(id, freehold_llm::wire::hashed_end_user(&session), "{sent}");
    assert!(sent.get("user").is_none(), "{sent}");

    let mut elsewhere = claude_code.clone();
    elsewhere["model"] = json!("other:m");
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &elsewhere).await;
    assert_eq!(status, 200, "{body}");
    let sent = openai.requests()[1].json();
    assert!(sent.get("safety_identifier").is_none(), "{sent}");

    let openai_client = |model: &str, user: &str| json!({"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &openai_client("claude:claude-x", "user-7"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = anthropic.requests()[0].json();
    assert_eq!(sent["metadata"], json!({"user_id": "user-7"}), "{sent}");
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &openai_client("compatible:claude-x", "user-7"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = anthropic.requests()[1].json();
    assert!(sent.get("metadata").is_none(), "{sent}");

    // An email address as the id: left out, and the request not kept local
    // for it (no local route here: that would be a 403).
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &openai_client("up:gpt-5.2", "ada.lovelace@corp.io"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = openai.requests()[2].json();
    assert!(sent.get("safety_identifier").is_none(), "{sent}");

    // A request refused for its model still counts for its end user.
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &openai_client("nowhere:m", "user-9"),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // A `metadata` of another shape is the client's mistake, named.
    let mut wrong = claude_code;
    wrong["metadata"] = json!({"user_id": 7});
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &wrong).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("metadata.user_id"), "{message}");

    // The ledger keeps whom each request was for, whatever the provider
    // got: the id as sent, or its SHA-256 where the detectors found
    // something in it (none for the request refused before it was read).
    let lines = ledger_lines(&gw.store, 7).await;
    let users: Vec<_> = lines
        .iter()
        .rev()
        .map(|line| line.record.end_user.clone())
        .collect();
    let hashed_email = freehold_gateway::store::recorded_end_user("ada.lovelace@corp.io", true);
    assert_eq!(
        users,
        [
            Some(session.clone()),
            Some(session),
            Some("user-7".to_owned()),
            Some("user-7".to_owned()),
            Some(hashed_email),
            Some("user-9".to_owned()),
            None,
        ],
        "{lines:#?}"
    );
}

/// Gemini 3's thought signatures on function calls reach the gateway's
/// clients inside the calls' ids, and come back to Gemini where they
/// belong when the clients hand the conversation back: a Chat Completions
/// client's whole and streamed answers, and an Anthropic client's.
#[tokio::test]
async fn gemini_call_signatures_round_trip_through_every_clients_call_ids() {
    use freehold_test_support::{MockServer, Scripted};

    const SIGNATURE: &str = "Q0FM+/TAxw==";
    let call = json!({"functionCall": {"name": "read", "args": {"path": "a.rs"}},
                      "thoughtSignature": SIGNATURE});
    let answer = |parts: Value| {
        json!({"candidates": [{"content": {"role": "model", "parts": parts},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                 "totalTokenCount": 15},
               "modelVersion": "gemini-3-pro-preview"})
    };
    let text = answer(json!([{"text": "It is empty."}]));
    let streamed_call = format!("data: {}\n\n", answer(json!([call])));
    let server = MockServer::start(vec![
        Scripted::json(200, answer(json!([call]))),
        Scripted::json(200, text.clone()),
        Scripted::sse(&streamed_call, freehold_test_support::Split::Whole),
        Scripted::json(200, text.clone()),
        Scripted::json(200, answer(json!([call]))),
        Scripted::json(200, text),
    ])
    .await;
    let gemini = ProviderConfig {
        kind: Some(ProviderKind::Gemini),
        base_url: Some(format!("{}/v1beta", server.url())),
        ..ProviderConfig::default()
    };
    let gw = start_configured(vec![("g", gemini)]).await;
    let tools = json!([{"type": "function", "function": {"name": "read", "parameters":
        {"type": "object", "properties": {"path": {"type": "string"}}}}}]);
    let ask = json!({"model": "g:gemini-3-pro-preview", "tools": tools,
        "messages": [{"role": "user", "content": "Read a.rs."}]});
    // The conversation handed back with the call's id as the client got it.
    let hand_back = |id: &str| {
        json!({"model": "g:gemini-3-pro-preview", "tools": tools, "messages": [
            {"role": "user", "content": "Read a.rs."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
             "function": {"name": "read", "arguments": "{\"path\":\"a.rs\"}"}}]},
            {"role": "tool", "tool_call_id": id, "content": ""}]})
    };
    // What Gemini received when the conversation came back: the signature
    // on the call, and no trace of it in any id.
    let assert_signature_came_back = |request: &freehold_test_support::Recorded| {
        let sent = request.json();
        let model_turn = &sent["contents"][1];
        assert_eq!(model_turn["role"], "model", "{sent}");
        assert_eq!(
            model_turn["parts"][0]["thoughtSignature"], SIGNATURE,
            "{sent}"
        );
        assert!(!sent.to_string().contains("__sig_"), "{sent}");
    };

    // Chat Completions, whole.
    let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &ask).await;
    assert_eq!(status, 200, "{body}");
    let id = body["choices"][0]["message"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.contains("__sig_") && id.ends_with("Q0FM-_TAxw"), "{id}");
    let back = hand_back(&id);
    let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &back).await;
    assert_eq!(status, 200, "{body}");
    assert_signature_came_back(&server.requests()[1]);

    // Chat Completions, streamed.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let received = read_until(&mut response, "[DONE]").await;
    assert!(received.contains("Q0FM-_TAxw\""), "{received}");
    let id = received
        .split("\"id\":\"")
        .find_map(|rest| rest.split('"').next().filter(|id| id.contains("__sig_")))
        .unwrap()
        .to_owned();
    let back = hand_back(&id);
    let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &back).await;
    assert_eq!(status, 200, "{body}");
    assert_signature_came_back(&server.requests()[3]);

    // Anthropic Messages.
    let messages = json!({"model": "g:gemini-3-pro-preview", "max_tokens": 1000,
        "tools": [{"name": "read", "input_schema": {"type": "object",
                   "properties": {"path": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "Read a.rs."}]});
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &messages).await;
    assert_eq!(status, 200, "{body}");
    let tool_use = &body["content"][0];
    assert_eq!(tool_use["type"], "tool_use", "{body}");
    let id = tool_use["id"].as_str().unwrap().to_owned();
    assert!(id.contains("__sig_") && id.ends_with("Q0FM-_TAxw"), "{id}");
    let mut back = messages.clone();
    back["messages"] = json!([
        {"role": "user", "content": "Read a.rs."},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": ""}]}]);
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &back).await;
    assert_eq!(status, 200, "{body}");
    assert_signature_came_back(&server.requests()[5]);
}

/// An Anthropic client's stop sequences reach a server that takes fewer
/// (`max_stop_sequences`) as far as it takes them; the gateway ends the
/// answer at the others, and the client gets `stop_sequence` as its stop
/// reason and the sequence as its `stop_sequence`, whole or streamed.
#[tokio::test]
async fn stop_sequences_past_an_upstreams_limit_end_the_answer_at_the_gateway() {
    use freehold_test_support::{MockServer, Scripted, Split, sse_text};

    let chunk = |content: &str| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        .to_string()
    };
    let pieces = [chunk("Thought: add\nObserv"), chunk("ation: 5\nmore")];
    let streamed = sse_text(&[("", &pieces[0]), ("", &pieces[1]), ("", "[DONE]")]);
    let server = MockServer::start(vec![
        Scripted::json(200, chat_completion("m", "Thought: add\nObservation: 5")),
        Scripted::sse(&streamed, Split::Whole),
    ])
    .await;
    let mut config = openai_kind(&server, None);
    config.max_stop_sequences = Some(4);
    let gw = start_configured(vec![("u", config)]).await;
    let stops = ["S1", "S2", "S3", "S4", "\nObservation:"];
    let mut ask = json!({"model": "u:m", "max_tokens": 100, "stop_sequences": stops,
        "messages": [{"role": "user", "content": "What is 2 + 3?"}]});

    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &ask).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Thought: add"}])
    );
    assert_eq!(body["stop_reason"], "stop_sequence");
    assert_eq!(body["stop_sequence"], "\nObservation:");

    ask["stream"] = json!(true);
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .bearer_auth(MASTER)
        .json(&ask)
        .send()
        .await
        .unwrap();
    let received = read_until(&mut response, "event: message_stop").await;
    assert!(received.contains(r#""text":"Thought: add""#), "{received}");
    // The sequence is named once, as the stop sequence, and never shown.
    assert_eq!(received.matches("Observ").count(), 1, "{received}");
    assert!(
        received.contains(r#""stop_reason":"stop_sequence","stop_sequence":"\nObservation:""#),
        "{received}"
    );

    for sent in server.requests() {
        assert_eq!(sent.json()["stop"], json!(["S1", "S2", "S3", "S4"]));
    }
}

/// An Anthropic request for `model` (100 tokens at most) to summarise a
/// PDF whose base64 bytes are `data`.
fn asked_to_summarise_a_pdf(model: &str, data: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
         "data": data}},
        {"type": "text", "text": "Summarise it."}]}]})
}

/// A PDF Claude Code read (a `document` block in a tool result) reaches a
/// provider that reads documents as a file, and one that reads text only
/// as a note saying it is there: the conversation goes on either way.
#[tokio::test]
async fn a_pdf_claude_code_read_reaches_each_provider_as_it_can_take_it() {
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("m", "A spec.");
    let openai = MockServer::start(vec![Scripted::json(200, completion.clone())]).await;
    // The text-only server streams its second answer, without usage.
    let streamed = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\
                    \"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A spec.\"},\
                    \"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let local = MockServer::start(vec![
        Scripted::json(200, completion),
        Scripted::sse(streamed, freehold_test_support::Split::Whole),
    ])
    .await;
    let gw = start_configured(vec![
        ("up", openai_kind(&openai, Some(true))),
        ("box", openai_kind(&local, Some(false))),
    ])
    .await;
    for model in ["up:gpt-5.1", "box:qwen3"] {
        let read_pdf = json!({"model": model, "max_tokens": 1000,
            "tools": [{"name": "Read", "input_schema": {"type": "object",
                       "properties": {"file_path": {"type": "string"}}}}],
            "messages": [
                {"role": "user", "content": "Summarise spec.pdf."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                    "name": "Read", "input": {"file_path": "spec.pdf"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": [{"type": "document", "source": {"type": "base64",
                        "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}]}]}]});
        let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &read_pdf).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["content"][0]["text"], "A spec.", "{body}");
    }
    let sent = openai.requests()[0].json();
    let after_results = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(after_results["role"], "user", "{sent}");
    assert_eq!(
        after_results["content"][0],
        json!({"type": "file", "file": {"filename": "document.pdf",
               "file_data": "data:application/pdf;base64,JVBERi0xLjQK"}}),
        "{sent}"
    );
    let sent = local.requests()[0].json();
    let after_results = sent["messages"].as_array().unwrap().last().unwrap().clone();
    let note = after_results["content"].as_str().unwrap();
    assert!(note.contains("cannot read documents"), "{sent}");

    // Counted as each gets it (neither server counts: the gateway
    // estimates): a 400 KB PDF is some 10,000 tokens to one that reads it,
    // a line to one that does not, so Claude Code does not compact a
    // conversation a local model has room for.
    let count = |model: &str| {
        let mut count = asked_to_summarise_a_pdf(model, &"A".repeat(400_000));
        count.as_object_mut().unwrap().remove("max_tokens");
        count
    };
    let (status, read, _) = post(
        &gw.url,
        "/v1/messages/count_tokens",
        Some(MASTER),
        &count("up:gpt-5.1"),
    )
    .await;
    assert_eq!(status, 200, "{read}");
    let (status, named, _) = post(
        &gw.url,
        "/v1/messages/count_tokens",
        Some(MASTER),
        &count("box:qwen3"),
    )
    .await;
    assert_eq!(status, 200, "{named}");
    let read = read["input_tokens"].as_u64().unwrap();
    let named = named["input_tokens"].as_u64().unwrap();
    assert!(read > 9_000, "{read}");
    assert!(named < 200, "{named}");

    // A streamed answer's estimate, in `message_start` and (the server
    // counting nothing) in `message_delta`, goes by the note too.
    let mut streamed = count("box:qwen3");
    streamed["max_tokens"] = json!(100);
    streamed["stream"] = json!(true);
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let received = read_until(&mut response, "message_stop").await;
    let input_counts: Vec<u64> = received
        .split("\"input_tokens\":")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    assert_eq!(input_counts.len(), 2, "{received}");
    assert!(
        input_counts.iter().all(|&count| (1..200).contains(&count)),
        "{received}"
    );
}

/// A budget holds and charges a PDF's cost only where a provider reads it:
/// to a hosted server that reads text only, the PDF goes as a line, and is
/// held (and, when the server reports no usage, charged) as one.
#[tokio::test]
async fn a_budget_holds_and_charges_a_pdf_as_the_provider_gets_it() {
    use freehold_test_support::{MockServer, Scripted};

    let upstream = MockUpstream::start().await.unwrap();
    // A text-only server that reports no usage: the gateway estimates it.
    let mut no_usage = chat_completion("m", "A spec.");
    no_usage.as_object_mut().unwrap().remove("usage");
    let quiet = MockServer::start(vec![Scripted::json(200, no_usage)]).await;
    let mut routes = routes(vec![upstream.base_url()]);
    let mut providers = routes.router.providers().clone();
    // The mock again, said to be OpenAI's API, which reads PDFs.
    let reader = ProviderConfig {
        openai_api: Some(true),
        base_url: Some(upstream.base_url()),
        ..openai_kind(&quiet, None)
    };
    for (name, config) in [("reader", reader), ("quiet", openai_kind(&quiet, None))] {
        let provider: Arc<dyn Provider> = config
            .resolve(name)
            .unwrap()
            .build(&HealthSettings::default())
            .unwrap();
        providers.insert(name.to_owned(), provider);
    }
    let mut catalog = Catalog::new();
    for model in ["mock:mock-model", "reader:mock-model", "quiet:m"] {
        let pricing = Pricing {
            input: 1.0,
            cached_input: None,
            cache_write: None,
            output: 1.0,
            long_prompt: None,
        };
        let entry = ModelEntry {
            pricing: Some(pricing),
            ..ModelEntry::default()
        };
        catalog.insert(model, entry).unwrap();
    }
    // A fallback from a server that reads text only to one that reads PDFs.
    let aliases = BTreeMap::from([(
        "either".to_owned(),
        AliasTarget::Chain(vec!["mock:mock-model".into(), "reader:mock-model".into()]),
    )]);
    routes.router = Router::new(providers, aliases, catalog);
    routes
        .listed_providers
        .extend(["reader".into(), "quiet".into()]);
    let gw = start(routes, GatewaySettings::default(), None).await;
    // $0.002 is 2,000 tokens at $1 a million: room for the note and 100
    // tokens of answer, not for a 300 KB PDF (some 10,000 tokens).
    let (key, budgeted) = gw
        .key(NewKey {
            name: "budgeted".into(),
            budget_usd: Some(0.002),
            ..NewKey::default()
        })
        .await;
    let with_pdf = |model: &str| asked_to_summarise_a_pdf(model, &"A".repeat(400_000));
    // Where any provider of the route reads it, the PDF is held whole:
    // refused before anything was spent, in Anthropic's shape.
    for model in ["reader:mock-model", "either"] {
        let (status, body, _) =
            post(&gw.url, "/v1/messages", Some(&budgeted), &with_pdf(model)).await;
        assert_eq!(status, 402, "{model}: {body}");
        assert_eq!(body["error"]["type"], "billing_error", "{body}");
    }
    for model in ["mock:mock-model", "quiet:m"] {
        let (status, body, _) =
            post(&gw.url, "/v1/messages", Some(&budgeted), &with_pdf(model)).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    // The two refusals and the two answers.
    let lines = ledger_lines(&gw.store, 4).await;
    let quiet_line = lines
        .iter()
        .find(|line| line.record.provider == "quiet")
        .unwrap();
    // Charged the note's estimate, not the file's.
    assert!(
        (1..200).contains(&quiet_line.record.input_tokens),
        "{quiet_line:?}"
    );
    let key = gw
        .store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == key.id)
        .unwrap();
    assert!(key.spent_usd < 0.001, "spent {}", key.spent_usd);
}

/// A privacy policy that cannot read a PDF can still decide on it:
/// `documents = "block"` refuses a request carrying one, from an Anthropic
/// or an OpenAI client, in the client's error shape, and says so in the
/// ledger; `"local_only"` keeps it off hosted models (`mock` is hosted
/// here). A plain-text file is text to the detectors, and passes.
#[tokio::test]
async fn a_privacy_policy_can_keep_or_block_documents_it_cannot_read() {
    use freehold_gateway::privacy::{Action, PrivacySettings};

    let read_pdf = asked_to_summarise_a_pdf("mock", "JVBERi0xLjQK");
    let chat_file = |media_type: &str| {
        json!({"model": "mock", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "spec",
                "file_data": format!("data:{media_type};base64,SGVsbG8uCg==")}},
            {"type": "text", "text": "Summarise it."}]}]})
    };
    for documents in [Action::Block, Action::LocalOnly] {
        let upstream = MockUpstream::start().await.unwrap();
        let settings = GatewaySettings {
            privacy: Some(PrivacySettings {
                documents,
                ..PrivacySettings::default()
            }),
            ..GatewaySettings::default()
        };
        let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
        let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &read_pdf).await;
        assert_eq!(status, 403, "{documents:?}: {body}");
        assert_eq!(body["error"]["type"], "permission_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_file("application/pdf"),
        )
        .await;
        assert_eq!(status, 403, "{documents:?}: {body}");
        assert_eq!(body["error"]["type"], "permission_error", "{body}");
        assert_eq!(upstream.requests(), 0);
        // A text file and a request without a file pass.
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_file("text/plain"),
        )
        .await;
        assert_eq!(status, 200, "{documents:?}: {body}");
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body("mock"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let lines = ledger_lines(&gw.store, 4).await;
        let expected = match documents {
            Action::Block => {
                assert!(message.contains("document:1"), "{message}");
                assert!(message.contains("remove the document"), "{message}");
                "block trigger=content detectors=document:1"
            }
            _ => {
                assert!(message.contains("must stay on this machine"), "{message}");
                "local_only trigger=content detectors=document:1"
            }
        };
        let audited = lines
            .iter()
            .filter(|line| line.record.privacy.as_deref() == Some(expected))
            .count();
        assert_eq!(audited, 2, "{lines:?}");
    }
}

/// An image's URL is read like text: a presigned link is a credential, and
/// a blocking policy refuses it with a message saying where it was (the
/// URL is never rewritten, so it is no use redacting it).
#[tokio::test]
async fn a_presigned_image_link_is_found_and_blocked() {
    use freehold_gateway::privacy::{Action, PrivacySettings};

    let upstream = MockUpstream::start().await.unwrap();
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings {
            action: Action::Block,
            ..PrivacySettings::default()
        }),
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
    let with_image = |url: &str| {
        json!({"model": "mock", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "What is in it?"}]}]})
    };
    let presigned = "https://acct.blob.core.windows.net/c/cat.png?sv=2022-11-02&sp=r\
                     &se=2026-12-08T00:00:00Z&sig=Xo5%2BzRk8Yt3qLm9Pw2vN7bC4dF6gH1jK0sA%3D";
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &with_image(presigned),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("password_assignment:1"), "{message}");
    assert!(message.contains("an image's URL"), "{message}");
    assert!(!message.contains("Xo5"), "{message}");
    assert_eq!(upstream.requests(), 0);

    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &with_image("https://upload.wikimedia.org/cat.png"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Under `redact`, the link cannot be rewritten: the request stays
    // local, and a model with no local route says why.
    let redacting = redacting_gateway_for(upstream.base_url()).await;
    let (status, body, _) = post(
        &redacting.url,
        "/v1/chat/completions",
        Some(MASTER),
        &with_image(presigned),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("must stay on this machine"), "{message}");
    assert!(message.contains("in an image's URL"), "{message}");
    assert!(message.contains("send the image's bytes"), "{message}");
    assert!(!message.contains("Xo5"), "{message}");
    assert_eq!(upstream.requests(), 1);
}

/// A client asking for no reasoning (Chat Completions' `none`, the Anthropic
/// `disabled` that Claude Code sends for its subagents) reaches a server
/// whose chat templates take the switch (vLLM, SGLang, llama.cpp) as
/// `enable_thinking: false`, and as no effort at all; such a server also
/// gets earlier reasoning back.
#[tokio::test]
async fn a_request_for_no_reasoning_turns_a_templates_thinking_off() {
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("qwen3", "ok");
    let template_server = MockServer::start(vec![Scripted::json(200, completion.clone())]).await;
    let other_server = MockServer::start(vec![Scripted::json(200, completion)]).await;
    // `vllm` takes the preset of that name, which turns the switch on; a
    // server known by another name is not sent it.
    let gw = start_configured(vec![
        ("vllm", openai_kind(&template_server, None)),
        ("box", openai_kind(&other_server, None)),
    ])
    .await;
    for model in ["vllm:qwen3", "box:qwen3"] {
        let chat = json!({"model": model, "reasoning_effort": "none",
            "messages": [{"role": "user", "content": "hi"}]});
        let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &chat).await;
        assert_eq!(status, 200, "{body}");
        let subagent = json!({"model": model, "max_tokens": 1000,
            "thinking": {"type": "disabled"}, "output_config": {"effort": "high"},
            "messages": [{"role": "user", "content": "hi"}]});
        let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &subagent).await;
        assert_eq!(status, 200, "{body}");
    }
    let sent = template_server.requests();
    assert_eq!(sent.len(), 2);
    for request in sent {
        let sent = request.json();
        assert_eq!(
            sent["chat_template_kwargs"],
            json!({"enable_thinking": false}),
            "{sent}"
        );
        assert_eq!(sent.get("reasoning_effort"), None, "{sent}");
    }
    let sent = other_server.requests();
    assert_eq!(sent.len(), 2);
    for request in sent {
        let sent = request.json();
        assert_eq!(sent.get("chat_template_kwargs"), None, "{sent}");
        assert_eq!(sent.get("reasoning_effort"), None, "{sent}");
    }

    // The thinking an Anthropic client hands back goes to the server
    // whose template may show it (Qwen3's, within a chain of tool calls).
    let tool_chain = json!({"model": "vllm:qwen3", "max_tokens": 1000,
        "messages": [
            {"role": "user", "content": "Fix the test."},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The test reads a.rs first.", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.rs"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn a() {}"}]}],
        "tools": [{"name": "read", "input_schema": {"type": "object",
                   "properties": {"path": {"type": "string"}}}}]});
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &tool_chain).await;
    assert_eq!(status, 200, "{body}");
    let sent = template_server.requests()[2].json();
    let calls = &sent["messages"][1];
    assert_eq!(
        calls["reasoning_content"], "The test reads a.rs first.",
        "{sent}"
    );
    assert_eq!(calls["reasoning"], "The test reads a.rs first.", "{sent}");
}

#[tokio::test]
async fn max_tokens_are_capped_and_slow_upstreams_time_out() {
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("mock-model", "ok");
    let upstream = MockServer::start(vec![Scripted::json(200, completion)]).await;
    let settings = GatewaySettings {
        max_tokens_cap: 50,
        ..GatewaySettings::default()
    };
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        settings,
        None,
    )
    .await;
    // chat_body asks for 100.
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream.requests()[0].json();
    let asked = sent
        .get("max_completion_tokens")
        .or_else(|| sent.get("max_tokens"))
        .cloned();
    assert_eq!(asked, Some(json!(50)), "{sent}");

    // An upstream slower than request_timeout_secs: 504, in each
    // protocol's shape, streamed or not.
    let slow = MockUpstream::start_slow(Duration::from_secs(5))
        .await
        .unwrap();
    let settings = GatewaySettings {
        request_timeout_secs: 1,
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![slow.base_url()]), settings, None).await;
    let started = std::time::Instant::now();
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request_timeout_secs"),
        "{body}"
    );
    let mut streamed = chat_body("mock");
    streamed["stream"] = json!(true);
    let (status, body, _) = post(&gw.url, "/v1/messages", Some(MASTER), &streamed).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    // Both gave up after about a second each: had either waited for the
    // upstream's 5 s, the two would have taken 6 s or more.
    assert!(started.elapsed() < Duration::from_millis(5500));
}

/// Fires `count` concurrent requests with `key`; returns how many passed.
async fn concurrent(url: &str, key: &str, count: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (url, key) = (url.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            post(&url, "/v1/chat/completions", Some(&key), &chat_body("mock"))
                .await
                .0
        }));
    }
    let mut passed = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            200 => passed += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (passed, refused)
}

/// The most one request may cost: its prompt estimate plus 100 output
/// tokens at $1 per million, so a budget of $0.00125 admits about ten.
const BUDGET: f64 = 0.00125;

async fn assert_budget_held(gateways: &[&Running], key_id: &str, passed: usize) {
    // Settling happens just after each response, in the background: what
    // shutdown waits for.
    for running in gateways {
        assert!(
            running
                .gateway
                .settlements_written(Duration::from_secs(10))
                .await
        );
    }
    let key = gateways[0]
        .store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == key_id)
        .unwrap();
    assert!(key.spent_usd <= BUDGET + 1e-9, "spent {}", key.spent_usd);
    assert!(key.spent_usd > 0.0);
    assert!(
        key.reserved_usd.abs() < 1e-9,
        "left reserved {}",
        key.reserved_usd
    );
    assert!((1..50).contains(&passed), "{passed} passed");
}

#[tokio::test]
async fn fifty_concurrent_requests_spend_at_most_the_budget() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (key, secret) = gw
        .key(NewKey {
            name: "capped".into(),
            budget_usd: Some(BUDGET),
            ..NewKey::default()
        })
        .await;
    let (passed, refused) = concurrent(&gw.url, &secret, 50).await;
    eprintln!("budget: {passed} passed, {refused} refused");
    assert_eq!(passed + refused, 50);
    assert_budget_held(&[&gw], &key.id, passed).await;
    // Requests cost less than their reservation (7 tokens out of 100
    // allowed), so what is left admits more, one at a time, until the
    // budget is spent: then the refusal says so.
    let mut later = 0;
    let body = loop {
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&secret),
            &chat_body("mock"),
        )
        .await;
        later += 1;
        if status == 429 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(later < 1000, "the budget never ran out");
    };
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_budget_held(&[&gw], &key.id, passed).await;
    // The ledger has one line per request, once its writer has caught up.
    ledger_lines(&gw.store, 50 + later).await;
    let usage = gw.store.usage(GroupBy::Key, None).await.unwrap();
    let row = usage.iter().find(|r| r.group == "capped").unwrap();
    assert_eq!(row.requests as usize, 50 + later);
    assert_eq!(row.errors as usize, refused + 1);
}

/// A budget reserves the cap's worth of output for a request without
/// `max_tokens`; the request must then not be allowed more upstream.
#[tokio::test]
async fn a_budgeted_request_without_max_tokens_is_held_to_what_was_reserved() {
    let upstream = MockUpstream::start().await.unwrap();
    let no_max_tokens = json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]});
    let health = HealthSettings::default();
    for (max_output_tokens, expected) in [(None, 50), (Some(40), 40)] {
        let gw = start(
            routes_with_model(vec![upstream.base_url()], &health, max_output_tokens),
            GatewaySettings {
                max_tokens_cap: 50,
                ..GatewaySettings::default()
            },
            None,
        )
        .await;
        let (_, budgeted) = gw
            .key(NewKey {
                name: "budgeted".into(),
                budget_usd: Some(1.0),
                ..NewKey::default()
            })
            .await;
        let (_, unbudgeted) = gw
            .key(NewKey {
                name: "free".into(),
                ..NewKey::default()
            })
            .await;

        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&budgeted),
            &no_max_tokens,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(upstream.last_max_tokens(), Some(expected));

        // An ask of its own is only capped; without a budget, the
        // provider's default stands.
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&budgeted),
            &chat_body("mock"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(upstream.last_max_tokens(), Some(50));
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(&unbudgeted),
            &no_max_tokens,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(upstream.last_max_tokens(), None);
    }
}

/// Two gateways in front of one mock upstream, sharing the test PostgreSQL
/// server's database; `None` (skipped) without one.
async fn two_gateways_on_postgres() -> Option<(MockUpstream, Running, Running)> {
    let admin = freehold_test_support::test_postgres()?;
    let upstream = MockUpstream::start().await.unwrap();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        gateways.push(
            start(
                routes(vec![upstream.base_url()]),
                GatewaySettings::default(),
                Some(admin.clone()),
            )
            .await,
        );
    }
    let second = gateways.pop()?;
    let first = gateways.pop()?;
    Some((upstream, first, second))
}

#[tokio::test]
async fn two_gateways_sharing_postgres_enforce_one_budget() {
    let Some((_upstream, first, second)) = two_gateways_on_postgres().await else {
        return;
    };
    let name = format!("shared-{}", std::process::id());
    let (key, secret) = first
        .key(NewKey {
            name,
            budget_usd: Some(BUDGET),
            ..NewKey::default()
        })
        .await;
    let (a, b) = tokio::join!(
        concurrent(&first.url, &secret, 25),
        concurrent(&second.url, &secret, 25)
    );
    eprintln!("shared budget: {a:?} and {b:?}");
    assert_budget_held(&[&first, &second], &key.id, a.0 + b.0).await;
    assert!(a.0 + b.0 > 0);
}

/// Rate limits are counted in the PostgreSQL database the gateways share:
/// a key gets its limit once between them, not once from each.
#[tokio::test]
async fn two_gateways_sharing_postgres_enforce_one_rate_limit() {
    let Some((_upstream, first, second)) = two_gateways_on_postgres().await else {
        return;
    };
    let (_, secret) = first
        .key(NewKey {
            name: format!("limited-{}", std::process::id()),
            rpm: Some(4),
            ..NewKey::default()
        })
        .await;
    let send = |url: String| {
        let secret = secret.clone();
        async move {
            post(
                &url,
                "/v1/chat/completions",
                Some(&secret),
                &chat_body("mock"),
            )
            .await
        }
    };
    let results = futures::future::join_all((0..10).map(|i| {
        send(if i % 2 == 0 {
            first.url.clone()
        } else {
            second.url.clone()
        })
    }))
    .await;
    let passed = results
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .count();
    assert_eq!(passed, 4, "{results:?}");
    for (status, body, retry_after) in results.iter().filter(|(status, _, _)| *status != 200) {
        assert_eq!(*status, 429, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4 requests per minute"),
            "{body}"
        );
        let seconds: u64 = retry_after.parse().unwrap();
        assert!((1..=120).contains(&seconds), "{retry_after}");
    }

    // Tokens spent through one gateway count at the other: the first
    // request spends more than 10 (see the test above), so once its count
    // is written the second gateway refuses the key's first request there.
    let (hungry, secret) = first
        .key(NewKey {
            name: format!("hungry-{}", std::process::id()),
            tpm: Some(10),
            ..NewKey::default()
        })
        .await;
    let (status, body, _) = post(
        &first.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The count is written after the answer, off the response path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rate_tokens(&second.store, &hungry.id).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tokens never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body, _) = post(
        &second.url,
        "/v1/chat/completions",
        Some(&secret),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10 tokens per minute"),
        "{body}"
    );
}

/// The tokens a key's shared rate window holds, as a refusal at the
/// smallest token limit reports them. Not a plain read: while the count is
/// 0 the check admits, and counts, a request (harmless for a key limited
/// by tokens alone).
async fn rate_tokens(store: &Store, key_id: &str) -> u64 {
    let window = store.admit_rate(key_id, None, Some(1), 0).await.unwrap();
    window.map_or(0, |w| w.tokens + w.previous_tokens)
}

#[tokio::test]
async fn a_killed_replica_fails_no_request() {
    // Each answer takes 20 ms, so requests are in flight on every replica
    // when one of them dies, its open connections with it.
    let delay = Duration::from_millis(20);
    let replicas = [
        MockUpstream::start_slow(delay).await.unwrap(),
        MockUpstream::start_slow(delay).await.unwrap(),
        MockUpstream::start_slow(delay).await.unwrap(),
    ];
    let gw = start(
        routes(replicas.iter().map(MockUpstream::base_url).collect()),
        GatewaySettings::default(),
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let send = |round: usize| {
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", gw.url);
        async move {
            let streamed = round.is_multiple_of(2);
            let mut body = chat_body("mock");
            body["stream"] = json!(streamed);
            let response = client
                .post(url)
                .bearer_auth(MASTER)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let whole = if streamed {
                text.contains("[DONE]")
            } else {
                text.contains(MOCK_TEXT)
            };
            (status, whole, text)
        }
    };
    // 16 clients, 15 requests each; the kill lands while the first rounds
    // are in flight.
    let clients = (0..16).map(|client| {
        let send = &send;
        async move {
            let mut results = Vec::new();
            for round in 0..15 {
                results.push(send(client + round).await);
            }
            results
        }
    });
    // Killed as soon as it has answered something, whatever the machine's
    // speed; the clients still have most of their rounds to go.
    let kill = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while replicas[1].requests() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = replicas[1].requests();
        replicas[1].kill();
        before
    };
    let (results, answered_before_kill) = tokio::join!(futures::future::join_all(clients), kill);
    assert!(answered_before_kill > 0, "the kill came before any request");
    let results: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(results.len(), 240);
    for (status, whole, text) in &results {
        assert_eq!(*status, 200, "{text}");
        assert!(whole, "{text}");
    }
    let served: Vec<u64> = replicas.iter().map(MockUpstream::requests).collect();
    eprintln!("requests per replica: {served:?}");
    assert!(served.iter().all(|n| *n > 0), "{served:?}");
    let (_, health) = get(&format!("{}/health", gw.url), None).await;
    assert_eq!(health["providers"]["mock"]["state"], "up", "{health}");
    let replicas_health = health["providers"]["mock"]["replicas"].as_array().unwrap();
    assert_eq!(replicas_health.len(), 3);
    // The one out of rotation is the killed one, named by its address.
    let unhealthy: Vec<&Value> = replicas_health
        .iter()
        .filter(|r| r["healthy"] == false)
        .map(|r| &r["address"])
        .collect();
    assert_eq!(
        unhealthy,
        [&json!(replicas[1].base_url().trim_end_matches('/'))],
        "{health}"
    );
}

#[tokio::test]
async fn health_says_which_providers_are_tracked_and_which_cannot_send() {
    let upstream = MockUpstream::start().await.unwrap();
    let build = |name: &str, key_env: Option<&str>| {
        ProviderConfig {
            kind: Some(ProviderKind::Openai),
            base_urls: vec![upstream.base_url()],
            api_key_env: key_env.map(str::to_owned),
            ..ProviderConfig::default()
        }
        .resolve(name)
        .unwrap()
        .build(&HealthSettings::default())
        .unwrap()
    };
    let providers = BTreeMap::from([
        ("single".to_owned(), build("single", None)),
        (
            "keyless".to_owned(),
            build("keyless", Some("FREEHOLD_TEST_KEY_THAT_IS_NEVER_SET")),
        ),
    ]);
    let routes = Routes {
        router: Router::new(providers, BTreeMap::new(), Catalog::new()),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    };
    let gw = start(routes, GatewaySettings::default(), None).await;
    let (_, health) = get(&format!("{}/health", gw.url), None).await;
    let single = &health["providers"]["single"];
    assert_eq!(single["state"], "untracked", "{health}");
    assert_eq!(single["healthy"], true, "{health}");
    let keyless = &health["providers"]["keyless"];
    assert_eq!(keyless["state"], "unusable", "{health}");
    assert_eq!(keyless["healthy"], false, "{health}");
}

/// Off loopback, `/metrics` and `/health`'s details (key names, upstream
/// addresses) need a key; a load balancer's probe still gets its answer.
#[tokio::test]
async fn status_pages_need_a_key_off_loopback() {
    let upstream = MockUpstream::start().await.unwrap();
    let exposed = GatewaySettings {
        listen: "0.0.0.0:4141".parse().unwrap(),
        ..GatewaySettings::default()
    };
    for (settings, open) in [
        (exposed.clone(), false),
        (
            GatewaySettings {
                open_status: Some(true),
                ..exposed
            },
            true,
        ),
        (GatewaySettings::default(), true),
    ] {
        let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
        let (metrics, _) = get(&format!("{}/metrics", gw.url), None).await;
        let (_, health) = get(&format!("{}/health", gw.url), None).await;
        assert_eq!(health["status"], "ok");
        if open {
            assert_eq!(metrics, 200);
            assert!(health["providers"]["mock"].is_object(), "{health}");
            continue;
        }
        assert_eq!(metrics, 401);
        assert!(health.get("providers").is_none(), "{health}");
        let (metrics, _) = get(&format!("{}/metrics", gw.url), Some(MASTER)).await;
        assert_eq!(metrics, 200);
        let (_, health) = get(&format!("{}/health", gw.url), Some(MASTER)).await;
        assert!(health["providers"]["mock"].is_object(), "{health}");
    }
}

#[tokio::test]
async fn a_probe_readmits_a_replica_that_came_back_without_a_client_request() {
    let replicas = [
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    ];
    let address = replicas[1].address();
    let health = HealthSettings {
        eject_after_failures: 1,
        cooldown: Duration::from_millis(100),
        probe: true,
        probe_interval: None,
    };
    let gw = start(
        routes_with(
            replicas.iter().map(MockUpstream::base_url).collect(),
            &health,
        ),
        GatewaySettings::default(),
        None,
    )
    .await;
    let healthy = |url: String| async move {
        let health: Value = reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["providers"]["mock"]["replicas"][1]["healthy"] == true
    };
    replicas[1].kill();
    // Every request succeeds: the first one the dead replica gets ejects it
    // and moves on to the other.
    for _ in 0..4 {
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body("mock"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(!healthy(gw.url.clone()).await);
    // Its probes fail while it is down: still out after a few cooldowns.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!healthy(gw.url.clone()).await);

    // It comes back on the same address, with no client request to it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let revived = loop {
        match MockUpstream::start_on(address).await {
            Ok(revived) => break revived,
            // The killed server's listener may take a moment to close.
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    while !healthy(gw.url.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the probe never readmitted the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(revived.requests(), 0, "a client request was the trial");
    for _ in 0..6 {
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body("mock"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        revived.requests() > 0,
        "the readmitted replica got no request"
    );
}

/// A listener on 127.0.0.1 that accepts connections and never answers on
/// them, like a stopped server process whose socket the kernel still
/// serves; it keeps them open until dropped.
async fn unanswering_listener() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{address}/v1"), task)
}

#[tokio::test]
async fn a_replica_that_accepts_but_never_answers_is_probed_out_of_rotation() {
    let up = MockUpstream::start().await.unwrap();
    let (stuck, listener) = unanswering_listener().await;
    let health = HealthSettings {
        eject_after_failures: 2,
        cooldown: Duration::from_secs(60),
        probe: false,
        // Long enough that a loaded machine answers the healthy replica's
        // probes in time (two missed in a row would eject it too).
        probe_interval: Some(Duration::from_millis(400)),
    };
    // The gateway's own time limit is the default (minutes): a request
    // sent to the stuck replica would outlast the test's patience below.
    let gw = start(
        routes_with(vec![stuck, up.base_url()], &health),
        GatewaySettings::default(),
        None,
    )
    .await;
    // Two requests before any probe: one of them goes to the stuck replica
    // and waits there until the probes eject it, then moves on.
    let early: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url.clone();
            tokio::spawn(async move {
                post(
                    &url,
                    "/v1/chat/completions",
                    Some(MASTER),
                    &chat_body("mock"),
                )
                .await
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = get(&format!("{}/health", gw.url), Some(MASTER)).await;
        if health["providers"]["mock"]["replicas"][0]["healthy"] == false {
            assert_eq!(
                health["providers"]["mock"]["replicas"][1]["healthy"], true,
                "{health}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck replica was never ejected: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..6 {
        let (status, body, _) = tokio::time::timeout(
            Duration::from_secs(10),
            post(
                &gw.url,
                "/v1/chat/completions",
                Some(MASTER),
                &chat_body("mock"),
            ),
        )
        .await
        .expect("a request was sent to the replica that never answers");
        assert_eq!(status, 200, "{body}");
    }
    for request in early {
        let (status, body, _) = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("a request still waits on the ejected replica")
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(up.requests(), 8);
    listener.abort();
}

#[tokio::test]
async fn malformed_requests_get_the_protocols_own_errors() {
    let upstream = MockUpstream::start().await.unwrap();
    let settings = GatewaySettings {
        max_body_bytes: 4096,
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
    let client = reqwest::Client::new();
    // Not JSON.
    let response = client
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // A body cut short names no field it never reached: at the top, none;
    // inside a message, the message.
    let cut_short = [
        (r#"{"model": "mock""#, "the body is not valid JSON"),
        (
            r#"{"model": "mock", "messages": [{"role": "user", "#,
            "invalid request body at `messages[0]`",
        ),
    ];
    for (cut, expected) in cut_short {
        let response = client
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", MASTER)
            .header("content-type", "application/json")
            .body(cut)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{body}");
        assert!(!message.contains('?'), "{body}");
    }
    // The wrong content type.
    let response = client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER)
        .header("content-type", "text/plain")
        .body(chat_body("mock").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));
    // Too large.
    let mut big = chat_body("mock");
    big["messages"][0]["content"] = json!("x".repeat(10_000));
    let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("4096"));
    // A field of the wrong type is named.
    let (status, body, _) = post(
        &gw.url,
        "/v1/chat/completions",
        Some(MASTER),
        &json!({"model": "mock", "messages": [{"role": "user", "content": 5}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("messages[0].content"), "{body}");
    // What was expected, where serde's untagged enums said only that the
    // data matched no variant.
    assert!(
        message.contains("expected a string or an array of content parts"),
        "{body}"
    );
    // Unknown models and routes.
    let (status, body, _) = post(
        &gw.url,
        "/v1/messages",
        Some(MASTER),
        &chat_body("claude-sonnet-4-5"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    let (status, body, _) = post(&gw.url, "/v1/nothing", Some(MASTER), &json!({})).await;
    assert_eq!(status, 404, "{body}");
    // A known route with the wrong method: 405, in each protocol's shape.
    let client = reqwest::Client::new();
    // Claude Code's probes, without a key, see a live server.
    for path in ["/", "/api/hello"] {
        let response = client
            .head(format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = client
        .get(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "GET is not allowed on /v1/chat/completions; use POST"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let response = client
        .put(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // A WebSocket asked for (Codex's first try on `/v1/responses`): 426,
    // on which Codex turns to HTTP at once.
    let response = client
        .get(format!("{}/v1/responses", gw.url))
        .bearer_auth(MASTER)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 426);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "/v1/responses does not take a WebSocket; send each request with POST"
    );
    // Embeddings: the key is checked before the body is read, and the body
    // is held to the same limit.
    let large = json!({"model": "mock", "input": ["x".repeat(10_000)]});
    let (status, body, _) = post(&gw.url, "/v1/embeddings", None, &large).await;
    assert_eq!(status, 401, "{body}");
    let (status, body, _) = post(&gw.url, "/v1/embeddings", Some(MASTER), &large).await;
    assert_eq!(status, 413, "{body}");
    let (status, body, _) = post(
        &gw.url,
        "/v1/embeddings",
        Some(MASTER),
        &json!({"model": "mock", "input": ["a short text"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `encoding_format` and `dimensions` as OpenAI's SDKs send them: the
/// vectors come back in base64 when asked (the Node SDK's default), the
/// dimensions reach the upstream, and what the gateway cannot serve is
/// refused by name. The `user` a client names is on the ledger's line.
#[tokio::test]
async fn embeddings_honour_encoding_format_and_dimensions() {
    use freehold_test_support::{MockServer, Scripted};

    let answer = json!({
        "object": "list", "model": "m",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    });
    let upstream = MockServer::start(vec![
        Scripted::json(200, answer.clone()),
        Scripted::json(200, answer),
    ])
    .await;
    let gw = start(
        routes(vec![format!("{}/v1", upstream.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let url = gw.url.as_str();
    let embed = |body: Value| async move { post(url, "/v1/embeddings", Some(MASTER), &body).await };
    let (status, body, _) = embed(json!({
        "model": "mock", "input": "hi", "encoding_format": "base64", "dimensions": 2
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], "AAAAPwAAgL8=", "{body}");
    let (status, body, _) = embed(json!({"model": "mock", "input": "hi", "user": "user-7"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], json!([0.5, -1.0]), "{body}");
    let sent: Vec<Value> = upstream.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["dimensions"], 2, "{sent:?}");
    // The end user is the ledger's, not the provider's.
    assert!(sent[1].get("user").is_none(), "{sent:?}");
    let lines = ledger_lines(&gw.store, 2).await;
    assert_eq!(lines[0].record.end_user.as_deref(), Some("user-7"));
    assert_eq!(lines[1].record.end_user, None);
    // The upstream is asked for numbers, whatever the client wants.
    assert!(
        sent.iter().all(|r| r.get("encoding_format").is_none()),
        "{sent:?}"
    );
    assert!(sent[1].get("dimensions").is_none(), "{sent:?}");

    for (body, names) in [
        (
            json!({"model": "mock", "input": [[9906, 1917]]}),
            "token ids",
        ),
        (
            json!({"model": "mock", "input": "hi", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": "mock", "input": "hi", "dimensions": 0}),
            "dimensions",
        ),
    ] {
        let (status, answer, _) = embed(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn default_model_catches_unknown_names_and_metrics_count_them() {
    let upstream = MockUpstream::start().await.unwrap();
    let settings = GatewaySettings {
        default_model: Some("mock".into()),
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
    let (status, body, _) = post(
        &gw.url,
        "/v1/messages",
        Some(MASTER),
        &chat_body("claude-sonnet-4-5"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], MOCK_TEXT);
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"freehold_gateway_requests_total{endpoint="/v1/messages",model="claude-sonnet-4-5",key="master",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("freehold_gateway_tokens_total"));

    // Without a default, made-up names are 404s, counted under `(none)`:
    // clients cannot grow the number of series.
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    for name in ["made-up-1", "made-up-2"] {
        let (status, body, _) = post(
            &gw.url,
            "/v1/chat/completions",
            Some(MASTER),
            &chat_body(name),
        )
        .await;
        assert_eq!(status, 404, "{body}");
    }
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("made-up"), "{metrics}");
    assert!(
        metrics.contains(
            r#"freehold_gateway_errors_total{endpoint="/v1/chat/completions",model="(none)",key="master",kind="not_found"} 2"#
        ),
        "{metrics}"
    );
}

/// Every answer carries its request id in both SDKs' headers (refusals,
/// streams and unknown routes too), and the ledger line of a request has
/// the id its client got, so that a client's error can be looked up; a
/// client's own plain `x-request-id` is kept, anything else replaced.
#[tokio::test]
async fn answers_carry_their_request_id_and_the_ledger_keeps_it() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let client = reqwest::Client::new();
    let ids_of = |response: &reqwest::Response| {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let id = header("request-id").expect("a request-id header");
        assert_eq!(header("x-request-id").as_deref(), Some(id.as_str()));
        id
    };
    let send = |path: &str, body: Value, client_id: Option<&str>| {
        let mut request = client
            .post(format!("{}{path}", gw.url))
            .bearer_auth(MASTER)
            .json(&body);
        if let Some(id) = client_id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };

    // A whole answer, a stream and a refusal, each with an id of its own.
    let answered = send("/v1/chat/completions", chat_body("mock"), None)
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let answered_id = ids_of(&answered);
    assert!(answered_id.starts_with("req_"), "{answered_id}");
    let mut streamed_body = chat_body("mock");
    streamed_body["stream"] = json!(true);
    let streamed = send("/v1/messages", streamed_body, None).await.unwrap();
    assert_eq!(streamed.status(), 200);
    let streamed_id = ids_of(&streamed);
    let text = streamed.text().await.unwrap();
    assert!(text.contains("message_stop"), "{text}");
    let refused = send("/v1/chat/completions", chat_body("no-such-model"), None)
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let refused_id = ids_of(&refused);
    let unrouted = client
        .get(format!("{}/v2/nothing", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 404);
    ids_of(&unrouted);
    // No such endpoint is not a missing model: no `model_not_found`.
    let unrouted: Value = unrouted.json().await.unwrap();
    assert!(unrouted["error"]["code"].is_null(), "{unrouted}");
    assert_eq!(
        unrouted["error"]["type"], "invalid_request_error",
        "{unrouted}"
    );
    let ids = [&answered_id, &streamed_id, &refused_id];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );

    // A client's plain id is kept; one that is not plain is replaced.
    let kept = send(
        "/v1/chat/completions",
        chat_body("mock"),
        Some("trace-42.a:b_c"),
    )
    .await
    .unwrap();
    assert_eq!(ids_of(&kept), "trace-42.a:b_c");
    let odd = "has spaces and \"quotes\"";
    let replaced = send("/v1/chat/completions", chat_body("mock"), Some(odd))
        .await
        .unwrap();
    let replaced_id = ids_of(&replaced);
    assert!(replaced_id.starts_with("req_"), "{replaced_id}");

    // The ledger: one line for each chat request, under the id it got.
    let lines = ledger_lines(&gw.store, 5).await;
    let recorded: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.record.request_id.as_deref())
        .collect();
    for id in [&answered_id, &streamed_id, &refused_id, &replaced_id] {
        assert!(recorded.contains(&id.as_str()), "{id} not in {recorded:?}");
    }
    assert!(recorded.contains(&"trace-42.a:b_c"), "{recorded:?}");
    let found = gw
        .store
        .requests_with_id(&refused_id, None, 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record.status, 404);
    assert_eq!(found[0].record.model, "no-such-model");
}

/// The ledger's `body` column for every request, oldest first.
async fn ledger_bodies(database: &Path) -> Vec<Option<String>> {
    use sqlx::Connection;
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite:{}", database.display()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT body FROM freehold_usage ORDER BY id")
        .fetch_all(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn bodies_reach_the_ledger_only_when_switched_on() {
    let upstream = MockUpstream::start().await.unwrap();
    for log_bodies in [false, true] {
        let settings = GatewaySettings {
            log_bodies,
            ..GatewaySettings::default()
        };
        let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
        let mut body = chat_body("mock");
        body["messages"][0]["content"] = json!("the secret recipe");
        let (status, _, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &body).await;
        assert_eq!(status, 200);
        ledger_lines(&gw.store, 1).await;
        let bodies = ledger_bodies(&gw._dir.path().join("g.db")).await;
        assert_eq!(bodies.len(), 1);
        match &bodies[0] {
            Some(text) => {
                assert!(log_bodies);
                assert!(text.contains("the secret recipe"), "{text}");
                assert!(text.contains(MOCK_TEXT), "{text}");
            }
            None => assert!(!log_bodies),
        }
    }
}

#[tokio::test]
async fn a_logged_body_with_findings_is_redacted() {
    use freehold_gateway::privacy::{Action, PrivacySettings};
    // The mock is on loopback, so the request itself goes out unredacted
    // (it stays on this machine); the ledger, which may be a database
    // elsewhere, still gets the body without the secret.
    let upstream = MockUpstream::start().await.unwrap();
    let settings = GatewaySettings {
        log_bodies: true,
        privacy: Some(PrivacySettings {
            action: Action::Redact,
            ..PrivacySettings::default()
        }),
        ..GatewaySettings::default()
    };
    let gw = start(routes(vec![upstream.base_url()]), settings, None).await;
    let secret = format!("AKIA{}", "Q7XZ2LMN4PRT8VWY");
    let mut body = chat_body("mock");
    // After a newline: in the raw JSON the key follows `\n`, no word
    // boundary, so the body is redacted value by value.
    body["messages"][0]["content"] = json!(format!("deploy with\n{secret} please"));
    let (status, answer, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_eq!(status, 200, "{answer}");
    ledger_lines(&gw.store, 1).await;
    let bodies = ledger_bodies(&gw._dir.path().join("g.db")).await;
    let logged = bodies[0].as_deref().unwrap_or_default();
    assert!(!logged.contains(&secret), "{logged}");
    assert!(
        logged.contains("deploy with\\n[REDACTED:aws_access_key] please"),
        "{logged}"
    );
    assert!(logged.contains(MOCK_TEXT), "{logged}");
}

/// A local-only request keeps every local member of a fallback chain: when
/// the first local server is down, the next one answers, and the hosted
/// member is never asked.
#[tokio::test]
async fn a_local_only_request_keeps_its_local_fallbacks() {
    use freehold_gateway::privacy::PrivacySettings;

    let hosted = MockUpstream::start().await.unwrap();
    let local = MockUpstream::start().await.unwrap();
    let provider = |name: &str, base: String| -> Arc<dyn Provider> {
        ProviderConfig {
            kind: Some(ProviderKind::Openai),
            base_url: Some(base),
            ..ProviderConfig::default()
        }
        .resolve(name)
        .unwrap()
        .build(&HealthSettings::default())
        .unwrap()
    };
    let routes = Routes {
        router: Router::new(
            BTreeMap::from([
                ("hosted".to_owned(), provider("hosted", hosted.base_url())),
                // Port 9 refuses connections on loopback.
                (
                    "down".to_owned(),
                    provider("down", "http://127.0.0.1:9/v1".into()),
                ),
                ("up".to_owned(), provider("up", local.base_url())),
            ]),
            BTreeMap::from([(
                "chain".to_owned(),
                AliasTarget::Chain(vec!["hosted:m".into(), "down:m".into(), "up:m".into()]),
            )]),
            Catalog::new(),
        ),
        local_providers: BTreeSet::from(["down".to_owned(), "up".to_owned()]),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    };
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings::default()),
        ..GatewaySettings::default()
    };
    let gw = start(routes, settings, None).await;
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        let body = if path == "/v1/embeddings" {
            json!({"model": "chain", "input": "hello"})
        } else {
            chat_body("chain")
        };
        let response = reqwest::Client::new()
            .post(format!("{}{path}", gw.url))
            .bearer_auth(MASTER)
            .header("x-freehold-privacy", "local-only")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {answer}");
    }
    assert_eq!(local.requests(), 2);
    assert_eq!(hosted.requests(), 0);
    let lines = ledger_lines(&gw.store, 2).await;
    assert!(lines.iter().all(|l| l.record.provider == "up"), "{lines:?}");
}

/// A local server may run some of its models elsewhere: a signed-in
/// Ollama passes its cloud models (`…:…-cloud`, `…:cloud`) on to
/// ollama.com. A local-only request for one is refused, and nothing reaches
/// the server; the same server's own models are served.
#[tokio::test]
async fn a_local_servers_cloud_models_are_not_local() {
    use freehold_gateway::privacy::PrivacySettings;

    let ollama = MockUpstream::start().await.unwrap();
    let provider = ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_url: Some(ollama.base_url()),
        ..ProviderConfig::default()
    }
    .resolve("ollama")
    .unwrap()
    .build(&HealthSettings::default())
    .unwrap();
    let routes = Routes {
        router: Router::new(
            BTreeMap::from([("ollama".to_owned(), provider)]),
            BTreeMap::from([(
                "big".to_owned(),
                AliasTarget::Chain(vec![
                    "ollama:gpt-oss:120b-cloud".into(),
                    "ollama:qwen3:8b".into(),
                ]),
            )]),
            Catalog::new(),
        ),
        local_providers: BTreeSet::from(["ollama".to_owned()]),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    };
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings::default()),
        ..GatewaySettings::default()
    };
    let gw = start(routes, settings, None).await;
    let local_only = |model: &str| {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(MASTER)
            .header("x-freehold-privacy", "local-only")
            .json(&chat_body(model))
            .send()
    };
    for cloud in ["ollama:gpt-oss:120b-cloud", "ollama:gemma4:cloud"] {
        let response = local_only(cloud).await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 403, "{cloud}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("({cloud})")), "{message}");
    }
    assert_eq!(ollama.requests(), 0);
    // A chain that starts with a cloud model keeps the local one.
    let response = local_only("big").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ollama.requests(), 1);
    let lines = ledger_lines(&gw.store, 3).await;
    let served: Vec<_> = lines.iter().filter(|l| l.record.status == 200).collect();
    assert_eq!(served.len(), 1, "{lines:?}");
    assert_eq!(served[0].record.provider_model, "qwen3:8b", "{lines:?}");
}

/// A gateway in front of `upstream` (hosted, as `mock`) whose privacy
/// policy redacts what the detectors find.
async fn redacting_gateway(upstream: &freehold_test_support::MockServer) -> Running {
    redacting_gateway_for(format!("{}/v1", upstream.url())).await
}

/// [`redacting_gateway`] in front of the upstream at `base_url`.
async fn redacting_gateway_for(base_url: String) -> Running {
    use freehold_gateway::privacy::{Action, PrivacySettings};

    let settings = GatewaySettings {
        privacy: Some(PrivacySettings {
            action: Action::Redact,
            ..PrivacySettings::default()
        }),
        ..GatewaySettings::default()
    };
    start(routes(vec![base_url]), settings, None).await
}

/// A text file sent as bytes (a JSON file attached in either protocol) is
/// read as its text, so the detectors look into it and a key there is
/// redacted before the request leaves, as one typed in a message is.
#[tokio::test]
async fn a_key_in_an_attached_text_file_is_redacted() {
    use base64::Engine as _;
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("mock-model", "ok");
    let upstream = MockServer::start(vec![
        Scripted::json(200, completion.clone()),
        Scripted::json(200, completion),
    ])
    .await;
    let gw = redacting_gateway(&upstream).await;
    // An AWS key id, assembled so this file holds none.
    let secret = format!("AKIA{}", "Q7XZ2LMN4PRT8VWY");
    let file = base64::engine::general_purpose::STANDARD
        .encode(format!("{{\"aws_access_key_id\": \"{secret}\"}}"));
    let openai = json!({"model": "mock", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "creds.json",
            "file_data": format!("data:application/json;base64,{file}")}},
        {"type": "text", "text": "Which region is this for?"}]}]});
    let anthropic = json!({"model": "mock", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "creds.json",
         "source": {"type": "base64", "media_type": "application/json", "data": file}},
        {"type": "text", "text": "Which region is this for?"}]}]});
    let (status, answer, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &openai).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer, _) = post(&gw.url, "/v1/messages", Some(MASTER), &anthropic).await;
    assert_eq!(status, 200, "{answer}");
    for sent in upstream.requests() {
        let sent = sent.json().to_string();
        assert!(!sent.contains(&secret), "{sent}");
        assert!(!sent.contains(&file), "{sent}");
        assert!(sent.contains("creds.json"), "{sent}");
        assert!(sent.contains("[REDACTED:aws_access_key]"), "{sent}");
    }
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn privacy_keeps_requests_local_or_redacts_them() {
    use freehold_test_support::{MockServer, Scripted};

    let completion = chat_completion("mock-model", "ok");
    let upstream = MockServer::start(vec![Scripted::json(200, completion.clone())]).await;
    let gw = redacting_gateway(&upstream).await;
    // An AWS key id, assembled so this file holds none.
    let secret = format!("AKIA{}", "Q7XZ2LMN4PRT8VWY");
    let mut body = chat_body("mock");
    body["messages"][0]["content"] = json!(format!("deploy with {secret} please"));
    let (status, answer, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = upstream.requests()[0].json().to_string();
    assert!(!sent.contains(&secret), "{sent}");
    assert!(sent.contains("[REDACTED:aws_access_key]"), "{sent}");

    // The header asks for local providers only; `mock` is hosted here.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("x-freehold-privacy", "local-only")
        .json(&chat_body("mock"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let refused: Value = response.json().await.unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must stay on this machine"),
        "{refused}"
    );

    // A value the header does not take is refused, not ignored: the client
    // believed its request would stay here.
    let asked = upstream.requests().len();
    for value in ["local", "true"] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(MASTER)
            .header("x-freehold-privacy", value)
            .json(&chat_body("mock"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{value}");
        let refused: Value = response.json().await.unwrap();
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("takes `local-only`"), "{refused}");
    }
    assert_eq!(upstream.requests().len(), asked);

    // Embeddings follow the same policy.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", gw.url))
        .bearer_auth(MASTER)
        .header("x-freehold-privacy", "local-only")
        .json(&json!({"model": "mock", "input": ["private notes"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // A local-only key on a gateway where `mock` is local: served.
    let mut local_routes = routes(vec![format!("{}/v1", upstream.url())]);
    local_routes.local_providers.insert("mock".into());
    upstream.push(Scripted::json(200, completion));
    let local = start(local_routes, GatewaySettings::default(), None).await;
    let (_, key) = local
        .key(NewKey {
            name: "private".into(),
            local_only: true,
            ..NewKey::default()
        })
        .await;
    let (status, answer, _) = post(
        &local.url,
        "/v1/chat/completions",
        Some(&key),
        &chat_body("mock"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Every decision is in the ledger, the audit trail, without the text
    // that matched.
    let lines = ledger_lines(&gw.store, 5).await;
    let privacy: Vec<(&str, Option<&str>, u16)> = lines
        .iter()
        .rev()
        .map(|l| {
            (
                l.record.endpoint.as_str(),
                l.record.privacy.as_deref(),
                l.record.status,
            )
        })
        .collect();
    assert_eq!(
        privacy,
        [
            (
                "/v1/chat/completions",
                Some("redacted trigger=content detectors=aws_access_key:1"),
                200
            ),
            ("/v1/messages", Some("local_only trigger=header"), 403),
            ("/v1/chat/completions", None, 400),
            ("/v1/chat/completions", None, 400),
            ("/v1/embeddings", Some("local_only trigger=header"), 403),
        ]
    );
    assert!(lines.iter().all(|l| !format!("{l:?}").contains(&secret)));
    let lines = ledger_lines(&local.store, 1).await;
    assert_eq!(
        lines[0].record.privacy.as_deref(),
        Some("local_only trigger=key")
    );
    assert_eq!(lines[0].key_name.as_deref(), Some("private"));
}

/// The latest lines of the ledger (at least `count`, at most 100 unless
/// more are asked for), newest first, once the writer has written them (it
/// writes in batches, just after each answer). Waits up to 10 s: a loaded
/// machine can hold the writer up.
async fn ledger_lines(store: &Store, count: usize) -> Vec<LedgerLine> {
    for _ in 0..500 {
        let lines = store.requests(None, count.max(100) as _).await.unwrap();
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the ledger never held {count} lines");
}

/// A routing table over one Anthropic provider, `claude`, at `url`.
fn anthropic_routes(url: &str) -> Routes {
    anthropic_routes_with(url, Catalog::new())
}

/// [`anthropic_routes`] with `claude:claude-x` priced at Claude Sonnet's
/// prices (input $3, cache reads $0.30, cache writes $3.75, output $15 per
/// million tokens).
fn priced_anthropic_routes(url: &str) -> Routes {
    let mut catalog = Catalog::new();
    catalog
        .insert(
            "claude:claude-x",
            ModelEntry {
                pricing: Some(Pricing {
                    input: 3.0,
                    cached_input: Some(0.3),
                    cache_write: Some(3.75),
                    output: 15.0,
                    long_prompt: None,
                }),
                ..ModelEntry::default()
            },
        )
        .unwrap();
    anthropic_routes_with(url, catalog)
}

/// [`anthropic_routes`] with `catalog`.
fn anthropic_routes_with(url: &str, catalog: Catalog) -> Routes {
    let provider: Arc<dyn Provider> = ProviderConfig {
        kind: Some(ProviderKind::Anthropic),
        base_url: Some(format!("{url}/v1")),
        // The mock stands for Anthropic's own API.
        anthropic_api: Some(true),
        ..ProviderConfig::default()
    }
    .resolve("claude")
    .unwrap()
    .build(&HealthSettings::default())
    .unwrap();
    Routes {
        router: Router::new(
            BTreeMap::from([("claude".to_owned(), provider)]),
            BTreeMap::new(),
            catalog,
        ),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    }
}

/// Anthropic's `message_start`, with the usage of a prompt read mostly
/// from the cache.
const CACHED_MESSAGE_START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":100000,"cache_creation_input_tokens":0,"output_tokens":1}}}"#;

/// The start of an Anthropic stream whose prompt was read mostly from the
/// cache: `message_start`, a text block, and its first words, "Hello".
fn anthropic_stream_head() -> String {
    freehold_test_support::sse_text(&[
        ("message_start", CACHED_MESSAGE_START),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        ),
    ])
}

/// A gateway before an Anthropic upstream at `upstream` (see
/// [`priced_anthropic_routes`]), with a virtual key of $10 of budget: the
/// gateway, the key and its secret.
async fn budgeted_gateway_before_anthropic(
    upstream: &freehold_test_support::MockServer,
) -> (Running, KeyRecord, String) {
    let gw = start(
        priced_anthropic_routes(&upstream.url()),
        GatewaySettings::default(),
        None,
    )
    .await;
    let (key, secret) = gw
        .key(NewKey {
            name: "cc".into(),
            budget_usd: Some(10.0),
            ..NewKey::default()
        })
        .await;
    (gw, key, secret)
}

/// Cache writes kept for an hour cost twice the input price, not the
/// five-minute price: Anthropic's usage says which were which, and the key
/// is charged and the client told accordingly.
#[tokio::test]
async fn hour_long_cache_writes_are_charged_their_own_price() {
    use freehold_test_support::{MockServer, Scripted};

    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 1000, "output_tokens": 100,
                  "cache_creation": {"ephemeral_5m_input_tokens": 200,
                                     "ephemeral_1h_input_tokens": 800}},
    });
    let upstream = MockServer::start(vec![Scripted::json(200, answer)]).await;
    let (gw, key, secret) = budgeted_gateway_before_anthropic(&upstream).await;
    let mark = json!({"type": "ephemeral", "ttl": "1h"});
    let body = json!({"model": "claude:claude-x", "max_tokens": 1000,
        "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": mark}],
        "messages": [{"role": "user", "content": "Read main.rs."}]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["usage"]["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 800}),
        "{answer}"
    );
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    // 10 × $3 + 200 × $3.75 + 800 × $6 + 100 × $15 per million
    // = 30 + 750 + 4,800 + 1,500 = 7,080 µ$ (all at $3.75: 5,280 µ$).
    let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!((now.spent_usd - 0.00708).abs() < 1e-9, "{now:?}");
    let sent = upstream.requests()[0].json();
    assert_eq!(sent["system"][0]["cache_control"], mark, "{sent}");
}

/// A request whose client asks for caching may write its whole prompt to
/// the cache, at 1.25 times the input price, or twice for an hour: its
/// budget reservation holds that much, so a key cannot overspend by it.
#[tokio::test]
async fn a_cached_prompt_reserves_the_price_of_writing_it() {
    use freehold_test_support::{MockServer, Scripted};

    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 2},
    });
    let upstream = MockServer::start(vec![Scripted::json(200, answer)]).await;
    let gw = start(
        priced_anthropic_routes(&upstream.url()),
        GatewaySettings::default(),
        None,
    )
    .await;
    // About 10,000 tokens of prompt by its size: $0.030 as input, $0.0375
    // written for five minutes, $0.060 for an hour (and 10 output tokens at
    // most, $0.00015). A key with $0.045 can afford all but the last.
    let (_, secret) = gw
        .key(NewKey {
            name: "cc".into(),
            budget_usd: Some(0.045),
            ..NewKey::default()
        })
        .await;
    let ask = |mark: Option<Value>| {
        let mut system = json!({"type": "text", "text": "x".repeat(40_000)});
        if let Some(mark) = mark {
            system["cache_control"] = mark;
        }
        let body = json!({"model": "claude:claude-x", "max_tokens": 10, "system": [system],
            "messages": [{"role": "user", "content": "hi"}]});
        let url = gw.url.clone();
        let secret = secret.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", &secret)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    // Each asked once the one before has settled, so that only its own
    // reservation counts against the budget.
    assert_eq!(ask(None).await, 200);
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    assert_eq!(ask(Some(json!({"type": "ephemeral"}))).await, 200);
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    assert_eq!(
        ask(Some(json!({"type": "ephemeral", "ttl": "1h"}))).await,
        402
    );
    assert_eq!(upstream.requests().len(), 2);
}

/// A provider that opens its stream and then refuses (Anthropic's
/// `message_start`, then an overloaded error) has answered nothing: the
/// client gets the refusal's own status, which its SDK retries, and the
/// key is charged nothing.
#[tokio::test]
async fn a_refusal_right_after_the_providers_opening_keeps_its_status() {
    use freehold_test_support::{MockServer, Scripted, Split, sse_text};

    let text = sse_text(&[
        ("message_start", CACHED_MESSAGE_START),
        (
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ]);
    let upstream = MockServer::start(vec![Scripted::sse(&text, Split::Whole)]).await;
    let (gw, key, secret) = budgeted_gateway_before_anthropic(&upstream).await;
    let body = json!({"model": "claude:claude-x", "stream": true, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "y".repeat(4_000)}]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 529);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "overloaded_error", "{answer}");
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(now.spent_usd.abs() < 1e-12, "{now:?}");
    assert!(now.reserved_usd.abs() < 1e-12, "{now:?}");
    // Nor are the tokens its opening counted: none are the key's.
    let lines = ledger_lines(&gw.store, 1).await;
    let line = &lines[0].record;
    assert_eq!(line.status, 529, "{line:?}");
    assert_eq!(
        (
            line.input_tokens,
            line.cached_input_tokens,
            line.output_tokens
        ),
        (0, 0, 0),
        "{line:?}"
    );
}

/// A provider that answers in full, then holds its stream open a while
/// before ending it (as the embedded engine does while it puts its context
/// away).
#[derive(Debug)]
struct AnswersThenLingers(freehold_llm::scripted::ScriptedProvider);

#[async_trait::async_trait]
impl Provider for AnswersThenLingers {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self, model: &str) -> freehold_protocol::Capabilities {
        self.0.capabilities(model)
    }
    async fn stream(
        &self,
        request: freehold_protocol::ChatRequest,
    ) -> Result<freehold_llm::EventStream, freehold_protocol::LlmError> {
        use futures::StreamExt;
        let answer = self.0.stream(request).await?;
        Ok(Box::pin(answer.chain(futures::stream::pending())))
    }
    async fn complete(
        &self,
        request: freehold_protocol::ChatRequest,
    ) -> Result<freehold_protocol::ChatResponse, freehold_protocol::LlmError> {
        self.0.complete(request).await
    }
    async fn list_models(
        &self,
    ) -> Result<Vec<freehold_protocol::ModelInfo>, freehold_protocol::LlmError> {
        self.0.list_models().await
    }
}

/// A client that closes the connection as soon as it has read the answer's
/// last event (Codex does), before the provider's stream has ended, was
/// answered: its ledger line says 200, not 499, whatever the protocol.
#[tokio::test]
async fn a_client_that_leaves_after_the_last_event_was_answered() {
    use freehold_llm::scripted::{ScriptedAnswer, ScriptedProvider};

    let answers = (0..3).map(|_| ScriptedAnswer::text("Hello")).collect();
    let provider: Arc<dyn Provider> = Arc::new(AnswersThenLingers(ScriptedProvider::new(
        "lingering",
        answers,
    )));
    let routes = Routes {
        router: Router::new(
            BTreeMap::from([("lingering".to_owned(), provider)]),
            BTreeMap::new(),
            Catalog::new(),
        ),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::new(),
        engine_providers: BTreeSet::new(),
    };
    let gw = start(routes, GatewaySettings::default(), None).await;
    let model = "lingering:m";
    let asks = [
        (
            "/v1/responses",
            json!({"model": model, "input": "hi", "stream": true}),
            "event: response.completed",
        ),
        (
            "/v1/chat/completions",
            json!({"model": model, "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
            "\"finish_reason\":\"stop\"",
        ),
        (
            "/v1/messages",
            json!({"model": model, "stream": true, "max_tokens": 8,
                   "messages": [{"role": "user", "content": "hi"}]}),
            "event: message_stop",
        ),
    ];
    for (path, body, last_event) in asks {
        let mut response = reqwest::Client::new()
            .post(format!("{}{path}", gw.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        read_until(&mut response, last_event).await;
        // Gone at once: the stream has not ended.
        drop(response);
    }
    let lines = ledger_lines(&gw.store, 3).await;
    let statuses: Vec<(&str, u16)> = lines
        .iter()
        .map(|line| (line.record.endpoint.as_str(), line.record.status))
        .collect();
    for path in ["/v1/responses", "/v1/chat/completions", "/v1/messages"] {
        assert!(statuses.contains(&(path, 200)), "{statuses:?}");
    }
}

/// A client that leaves mid-answer (Claude Code's Esc) is charged the
/// prompt as the provider counted it at the start of its stream: cache
/// reads at the cache's price, not the whole prompt estimated as fresh
/// input, which costs ten times as much.
#[tokio::test]
async fn a_stream_cut_off_is_charged_the_prompt_the_provider_counted() {
    use freehold_test_support::{MockServer, Scripted, Split, sse_text};

    let head = anthropic_stream_head();
    let tail = sse_text(&[
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    let upstream = MockServer::start(vec![
        Scripted::sse(&format!("{head}{tail}"), Split::At(vec![head.len()]))
            .stall_after(1, Duration::from_secs(30)),
    ])
    .await;
    let (gw, key, secret) = budgeted_gateway_before_anthropic(&upstream).await;
    // About 100,000 tokens of prompt by its size, as the cached one is.
    let body = json!({"model": "claude:claude-x", "stream": true, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "y".repeat(400_000)}]});
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_until(&mut response, "Hello").await;
    drop(response);
    let lines = ledger_lines(&gw.store, 1).await;
    let line = &lines[0].record;
    assert_eq!(line.status, 499, "{line:?}");
    assert_eq!(line.cached_input_tokens, 100_000, "{line:?}");
    assert!(
        gw.gateway
            .settlements_written(Duration::from_secs(10))
            .await
    );
    let now = gw.store.key_by_id(&key.id).await.unwrap().unwrap();
    // 10 fresh tokens at $3, 100,000 cache reads at $0.30 and the answer's
    // two tokens (estimated from "Hello") at $15 per million: about
    // $0.03, where the prompt estimated as fresh input costs $0.30.
    let provider_count = (10.0 * 3.0 + 100_000.0 * 0.3 + 2.0 * 15.0) / 1e6;
    assert!(
        (now.spent_usd - provider_count).abs() < 0.001,
        "spent {} against {provider_count}",
        now.spent_usd
    );
    assert!(now.reserved_usd.abs() < 1e-12, "{now:?}");
}

#[tokio::test]
async fn anthropic_beta_headers_reach_anthropic_upstreams() {
    use freehold_test_support::{MockServer, Scripted};

    let upstream = MockServer::start(vec![Scripted::json(
        200,
        anthropic_message("claude-x", "hi"),
    )])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .json(&chat_body("claude:claude-x"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "hi");
    let sent = &upstream.requests()[0];
    // Each beta the client named, none lost to the one after it.
    let betas: Vec<&str> = sent
        .headers
        .get_all("anthropic-beta")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(
        betas,
        ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    );
    assert_eq!(
        sent.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    // The gateway's master key is not what the upstream gets.
    assert_ne!(sent.header("x-api-key").as_deref(), Some(MASTER));
}

/// Claude Code asks for its thinking without the text (`thinking.display:
/// "omitted"`, its signature alone): an Anthropic upstream is asked the
/// same, with budgeted and adaptive thinking alike.
#[tokio::test]
async fn how_thinking_is_shown_is_asked_of_anthropic_upstreams() {
    use freehold_test_support::{MockServer, Scripted};

    let answer = anthropic_message("claude-x", "hi");
    let upstream = MockServer::start(vec![
        Scripted::json(200, answer.clone()),
        Scripted::json(200, answer),
    ])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let mut budgeted = chat_body("claude:claude-x");
    budgeted["max_tokens"] = json!(4096);
    budgeted["thinking"] = json!({"type": "enabled", "budget_tokens": 2048, "display": "omitted"});
    // A name Anthropic's API gives adaptive thinking.
    let mut adaptive = chat_body("claude:claude-opus-4-7");
    adaptive["thinking"] = json!({"type": "adaptive", "display": "omitted"});
    for body in [&budgeted, &adaptive] {
        let (status, answer, _) = post(&gw.url, "/v1/messages", Some(MASTER), body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let sent: Vec<Value> = upstream.requests().iter().map(|r| r.json()).collect();
    assert_eq!(
        sent[0]["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048, "display": "omitted"})
    );
    assert_eq!(
        sent[1]["thinking"],
        json!({"type": "adaptive", "display": "omitted"})
    );
}

/// Claude Code marks its prompt for Anthropic's cache: an Anthropic
/// upstream gets the prompt's stable points marked with the client's mark,
/// and the cache's usage comes back; a client that marked nothing gets no
/// marks (a cache write costs more than a plain read).
#[tokio::test]
async fn a_clients_cache_marks_reach_anthropic_upstreams() {
    use freehold_test_support::{MockServer, Scripted};

    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 1,
                  "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 100},
    });
    let upstream = MockServer::start(vec![
        Scripted::json(200, answer.clone()),
        Scripted::json(200, answer),
    ])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let mark = json!({"type": "ephemeral"});
    let marked = json!({
        "model": "claude:claude-x", "max_tokens": 100,
        "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": mark}],
        "tools": [{"name": "read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Read main.rs.", "cache_control": mark}]}],
    });
    let mut unmarked = marked.clone();
    unmarked["system"] = json!("You are a coding agent.");
    unmarked["messages"][0]["content"] = json!("Read main.rs.");
    for body in [&marked, &unmarked] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", MASTER)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["usage"]["cache_read_input_tokens"], 2000, "{answer}");
    }
    let sent: Vec<Value> = upstream.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["tools"][0]["cache_control"], mark, "{}", sent[0]);
    assert_eq!(sent[0]["system"][0]["cache_control"], mark, "{}", sent[0]);
    assert_eq!(
        sent[0]["messages"][0]["content"][0]["cache_control"], mark,
        "{}",
        sent[0]
    );
    assert!(
        !sent[1].to_string().contains("cache_control"),
        "{}",
        sent[1]
    );
}

/// `POST /v1/messages/count_tokens` with the master key and `headers`:
/// the status, the body, and the `x-freehold-token-count` header.
async fn count_tokens(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/messages/count_tokens"))
        .header("x-api-key", MASTER)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let source = response
        .headers()
        .get("x-freehold-token-count")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, response.json().await.unwrap_or(Value::Null), source)
}

#[tokio::test]
async fn count_tokens_asks_a_provider_that_can_count_and_estimates_otherwise() {
    use freehold_gateway::privacy::{Action, PrivacySettings};
    use freehold_test_support::{MockServer, Scripted};

    // An Anthropic upstream counts for itself; the privacy policy applies
    // to what the count sends, as to the request.
    let upstream = MockServer::start(vec![
        Scripted::json(200, json!({"input_tokens": 4242})),
        Scripted::json(
            404,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "model: claude-x"}}),
        ),
    ])
    .await;
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings {
            action: Action::Redact,
            ..PrivacySettings::default()
        }),
        ..GatewaySettings::default()
    };
    let gw = start(anthropic_routes(&upstream.url()), settings, None).await;
    let secret = format!("AKIA{}", "Q7XZ2LMN4PRT8VWY");
    let body = json!({
        "model": "claude:claude-x",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": format!("deploy with {secret}")}],
        "tools": [{"name": "read", "description": "Read a file",
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
        "thinking": {"type": "enabled", "budget_tokens": 4096},
    });
    let (status, counted, source) = count_tokens(
        &gw.url,
        &[("anthropic-beta", "context-1m-2025-08-07")],
        &body,
    )
    .await;
    assert_eq!((status, &counted), (200, &json!({"input_tokens": 4242})));
    assert_eq!(source, "tokenizer");
    let sent = &upstream.requests()[0];
    assert_eq!(sent.uri, "/v1/messages/count_tokens");
    assert_eq!(
        sent.header("anthropic-beta").as_deref(),
        Some("context-1m-2025-08-07")
    );
    let sent = sent.json();
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["tools"][0]["name"], "read");
    assert_eq!(sent.get("max_tokens"), None, "{sent}");
    // Thinking stays on, as it would be sent (the budget is the nearest
    // effort's: the gateway's requests carry an effort, not a budget).
    assert_eq!(sent["thinking"]["type"], "enabled", "{sent}");
    assert!(!sent.to_string().contains(&secret), "{sent}");

    // Kept local by the header, with no local target: refused, and
    // nothing sent.
    let (status, refused, _) =
        count_tokens(&gw.url, &[("x-freehold-privacy", "local-only")], &body).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["type"], "error");
    assert_eq!(upstream.requests().len(), 1);

    // What the upstream refuses reaches the client in Anthropic's shape.
    let (status, refused, _) = count_tokens(&gw.url, &[], &body).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["type"], "not_found_error");

    // Counts are in the ledger, with the privacy decision and no tokens.
    let lines = ledger_lines(&gw.store, 3).await;
    let seen: Vec<(&str, u16, Option<&str>, u64)> = lines
        .iter()
        .rev()
        .map(|l| {
            (
                l.record.endpoint.as_str(),
                l.record.status,
                l.record.privacy.as_deref(),
                l.record.input_tokens,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/v1/messages/count_tokens",
                200,
                Some("redacted trigger=content detectors=aws_access_key:1"),
                0
            ),
            (
                "/v1/messages/count_tokens",
                403,
                Some("local_only trigger=header detectors=aws_access_key:1"),
                0
            ),
            (
                "/v1/messages/count_tokens",
                404,
                Some("redacted trigger=content detectors=aws_access_key:1"),
                0
            ),
        ]
    );

    // An OpenAI-compatible upstream has no count: the gateway estimates,
    // and says so, without calling it.
    let openai = MockServer::start(Vec::new()).await;
    let gw = start(
        routes(vec![format!("{}/v1", openai.url())]),
        GatewaySettings::default(),
        None,
    )
    .await;
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "x ".repeat(400)}]});
    let (status, counted, source) = count_tokens(&gw.url, &[], &body).await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(source, "estimate");
    let estimate = counted["input_tokens"].as_u64().unwrap();
    assert!((100..=1000).contains(&estimate), "{counted}");
    assert!(openai.requests().is_empty());
    // The ledger names no provider for an estimate: none was asked.
    let line = &ledger_lines(&gw.store, 1).await[0];
    assert_eq!(
        (line.record.status, line.record.provider.as_str()),
        (200, "")
    );
}

#[tokio::test]
async fn count_tokens_follows_a_keys_models_and_a_local_only_route() {
    use freehold_gateway::privacy::PrivacySettings;
    use freehold_test_support::{MockServer, Scripted};

    // `coder` falls back from a hosted Anthropic upstream to a server on
    // this machine (OpenAI-compatible: it cannot count).
    let claude = MockServer::start(vec![Scripted::json(200, json!({"input_tokens": 11}))]).await;
    let nearby = MockServer::start(Vec::new()).await;
    let mut mixed = anthropic_routes(&claude.url());
    let near = routes(vec![format!("{}/v1", nearby.url())]);
    let mut providers = mixed.router.providers().clone();
    providers.extend(near.router.providers().clone());
    mixed.router = Router::new(
        providers,
        BTreeMap::from([(
            "coder".to_owned(),
            AliasTarget::Chain(vec!["claude:claude-x".into(), "mock:mock-model".into()]),
        )]),
        Catalog::new(),
    );
    mixed.local_providers.insert("mock".into());
    let settings = GatewaySettings {
        privacy: Some(PrivacySettings::default()),
        ..GatewaySettings::default()
    };
    let gw = start(mixed, settings, None).await;
    let body =
        json!({"model": "coder", "messages": [{"role": "user", "content": "private notes"}]});

    // Kept local: counted for the local target, nothing sent to Claude.
    let (status, counted, source) =
        count_tokens(&gw.url, &[("x-freehold-privacy", "local-only")], &body).await;
    assert_eq!((status, source.as_str()), (200, "estimate"), "{counted}");
    assert!(claude.requests().is_empty());
    assert!(nearby.requests().is_empty());
    // Otherwise the first target counts.
    let (status, counted, source) = count_tokens(&gw.url, &[], &body).await;
    assert_eq!((status, source.as_str()), (200, "tokenizer"), "{counted}");
    assert_eq!(counted["input_tokens"], 11);

    // A key allowed other models only may not count for this one.
    let (_, key) = gw
        .key(NewKey {
            name: "narrow".into(),
            allowed_models: vec!["other".into()],
            ..NewKey::default()
        })
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages/count_tokens", gw.url))
        .header("x-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(claude.requests().len(), 1);
}

/// The Anthropic events of an answer that says a word and calls
/// `get_weather` for Paris, its arguments cut across two deltas.
const ANTHROPIC_TOOL_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

/// An OpenAI client's tool call through an Anthropic upstream, whole and
/// streamed: the request reaches the upstream in Anthropic's shape, and
/// the tool call, stop reason and usage come back in OpenAI's.
#[tokio::test]
async fn openai_clients_call_tools_through_an_anthropic_upstream() {
    use freehold_test_support::{MockServer, Scripted, Split};

    let upstream = MockServer::start(vec![
        Scripted::json(
            200,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                             "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 25, "output_tokens": 12},
            }),
        ),
        Scripted::sse(ANTHROPIC_TOOL_STREAM, Split::Every(37)),
    ])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let mut request = json!({
        "model": "claude:claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "What is the weather in Paris? call the tool"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}],
    });

    let (status, body, _) = post(&gw.url, "/v1/chat/completions", Some(MASTER), &request).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(body["usage"]["prompt_tokens"], 25, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 12, "{body}");
    // What the upstream got is an Anthropic request.
    let sent = upstream.requests()[0].json();
    assert_eq!(sent["tools"][0]["name"], "get_weather", "{sent}");
    assert_eq!(sent["tools"][0]["input_schema"]["required"][0], "city");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["messages"][0]["role"], "user");

    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let mut content = String::new();
    let mut name = String::new();
    let mut arguments = String::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for chunk in &chunks {
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(call) = choice["delta"]["tool_calls"].get(0) {
            name.push_str(call["function"]["name"].as_str().unwrap_or(""));
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert_eq!(content, "Checking.", "{text}");
    assert_eq!(name, "get_weather", "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish, "tool_calls", "{text}");
    assert_eq!(usage["prompt_tokens"], 25, "{text}");
    assert_eq!(usage["completion_tokens"], 12, "{text}");
    assert_eq!(upstream.requests()[1].json()["stream"], true);
}

/// Sends `head`, then the pieces of `body` 50 ms apart, on a new connection
/// to `url`'s server, then reads until the server closes the connection;
/// `None` if it is still open after 10 s.
async fn send_and_wait_for_close(url: &str, head: &str, body: &[&[u8]]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn clients_that_stop_sending_are_cut_off() {
    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings {
            client_timeout_secs: 1,
            ..GatewaySettings::default()
        },
        None,
    )
    .await;
    // A client that connects and sends nothing: closed.
    let closed = send_and_wait_for_close(&gw.url, "", &[]).await;
    assert_eq!(
        closed.as_deref(),
        Some(""),
        "a silent client kept its connection"
    );
    // Nor does HTTP/2's preface buy it more time: this gateway speaks
    // HTTP/1.1, which has a timer for request heads.
    let closed = send_and_wait_for_close(&gw.url, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &[]).await;
    assert!(closed.is_some(), "an HTTP/2 preface kept its connection");
    // A request head that never ends: the connection is closed.
    let started = std::time::Instant::now();
    let closed = send_and_wait_for_close(
        &gw.url,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nx-slow: ",
        &[],
    )
    .await;
    assert!(closed.is_some(), "a half-sent head kept its connection");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A body that stops arriving: 408 in the protocol's shape.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {MASTER}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    let answer = send_and_wait_for_close(&gw.url, &head, &[b"{\"model\": "])
        .await
        .expect("a stalled body kept its connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("client_timeout_secs"), "{answer}");
    assert!(answer.contains("\"invalid_request_error\""), "{answer}");

    // A body sent in pieces within the limit is answered (and read whole);
    // the idle keep-alive connection is then closed after the same time.
    let body = serde_json::to_string(&chat_body("mock")).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {MASTER}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let answer = send_and_wait_for_close(&gw.url, &head, &[first, rest])
        .await
        .expect("an idle connection was kept");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(MOCK_TEXT), "{answer}");
}

/// A body that trickles in, a byte just inside each pause, is cut off at
/// the request's own time limit.
#[tokio::test]
async fn a_trickling_body_is_cut_off_at_the_request_time_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = MockUpstream::start().await.unwrap();
    let gw = start(
        routes(vec![upstream.base_url()]),
        GatewaySettings {
            client_timeout_secs: 1,
            request_timeout_secs: 2,
            ..GatewaySettings::default()
        },
        None,
    )
    .await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {MASTER}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(8) {
        // Any write may fail once the gateway has answered and closed.
        let _ = stream.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout_secs"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Whether a [`Stoppable`] gateway tells its requests still waiting near
/// the end of its grace period ([`Gateway::time_limits`]), or cuts them
/// off ([`GatewaySettings::time_limits`]).
enum Notice {
    Given,
    None,
}

/// A gateway on a SQLite store with a ledger, served until `stop` is
/// notified; `serving` says how many connections it cut off.
struct Stoppable {
    url: String,
    store: Store,
    gateway: Arc<Gateway>,
    stop: Arc<tokio::sync::Notify>,
    serving: tokio::task::JoinHandle<usize>,
    _dir: tempfile::TempDir,
}

impl Stoppable {
    async fn start(routes: Routes, grace_secs: u64, notice: Notice) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite:{}", dir.path().join("g.db").display()))
            .await
            .unwrap();
        let (ledger, _task) = Ledger::start(store.clone());
        let gateway = Arc::new(
            Gateway::new(
                GatewaySettings {
                    shutdown_grace_secs: grace_secs,
                    ..GatewaySettings::default()
                },
                routes,
                Some(MASTER.into()),
                Some(store.clone()),
                ledger,
            )
            .unwrap(),
        );
        let limits = match notice {
            Notice::Given => gateway.time_limits(),
            Notice::None => gateway.settings().time_limits(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(tokio::sync::Notify::new());
        let serving = tokio::spawn(freehold_gateway::listen::serve(
            listener,
            freehold_gateway::routes::app(Arc::clone(&gateway)),
            None,
            limits,
            {
                let stop = Arc::clone(&stop);
                async move { stop.notified().await }
            },
        ));
        Self {
            url,
            store,
            gateway,
            stop,
            serving,
            _dir: dir,
        }
    }
}

/// At shutdown, a stream still open near the end of the grace period ends
/// with its protocol's error event, not with a cut connection, and one
/// still waiting for its provider's first event gets a status its SDK
/// retries; the ledger says why they ended.
#[tokio::test]
async fn requests_open_when_the_grace_period_ends_are_told_why() {
    use freehold_test_support::{MockServer, Scripted, Split};

    let head = anthropic_stream_head();
    let upstream = MockServer::start(vec![
        Scripted::sse(&format!("{head}{head}"), Split::At(vec![head.len()]))
            .stall_after(1, Duration::from_secs(30)),
        Scripted::sse(&head, Split::Whole).delay(Duration::from_secs(30)),
    ])
    .await;
    // `_dir` bound, not dropped: it holds the database.
    let Stoppable {
        url,
        store,
        stop,
        serving,
        _dir,
        ..
    } = Stoppable::start(anthropic_routes(&upstream.url()), 4, Notice::Given).await;
    let body = json!({"model": "claude:claude-x", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut response = reqwest::Client::new()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = read_until(&mut response, "Hello").await;
    // A stream whose provider has not begun to answer.
    let waiting = tokio::spawn({
        let url = url.clone();
        let body = body.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", MASTER)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    });
    while upstream.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = std::time::Instant::now();
    stop.notify_one();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("the stream ends within the grace period")
        .unwrap()
    {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Told a quarter of the grace period before its end.
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopped.elapsed()
    );
    assert!(received.contains("event: error"), "{received}");
    assert!(received.contains("overloaded_error"), "{received}");
    assert!(received.contains("gateway is stopping"), "{received}");
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 529, "{answer}");
    assert_eq!(answer["error"]["type"], "overloaded_error", "{answer}");
    let cut_off = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returned")
        .unwrap();
    assert_eq!(cut_off, 0, "both ended themselves, in time");
    let lines = ledger_lines(&store, 2).await;
    for line in &lines {
        assert_eq!(line.record.status, 529, "{:?}", line.record);
    }
}

/// At shutdown, a request still running after the grace period is cut
/// off, and its budget reservation is released all the same.
#[tokio::test]
async fn a_request_cut_off_at_shutdown_releases_its_reservation() {
    let upstream = MockUpstream::start_slow(Duration::from_secs(30))
        .await
        .unwrap();
    // Without the notice: cut off at the end of the grace period.
    let Stoppable {
        url,
        store,
        gateway,
        stop,
        serving,
        _dir,
    } = Stoppable::start(routes(vec![upstream.base_url()]), 1, Notice::None).await;
    let (key, secret) = store
        .create_key(NewKey {
            name: "in-flight".into(),
            budget_usd: Some(1.0),
            ..NewKey::default()
        })
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move {
            post(
                &url,
                "/v1/chat/completions",
                Some(&secret),
                &chat_body("mock"),
            )
            .await
        }
    });
    // Wait until its reservation is held.
    let mut held = 0.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = store.key_by_id(&key.id).await.unwrap().unwrap();
        if now.reserved_usd > 0.0 {
            held = now.reserved_usd;
            break;
        }
    }
    assert!(held > 0.0, "the request never reserved its budget");
    stop.notify_one();
    let cut_off = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returned within the grace period and a little more")
        .unwrap();
    assert_eq!(cut_off, 1);
    assert!(gateway.settlements_written(Duration::from_secs(10)).await);
    let now = store.key_by_id(&key.id).await.unwrap().unwrap();
    assert!(now.reserved_usd.abs() < 1e-9, "left reserved: {now:?}");
    // A whole answer cut off before it came pays the most it could cost,
    // what it reserved: a provider that had it usually finishes it and
    // bills it, and the gateway cannot see how long it was.
    assert!((now.spent_usd - held).abs() < 1e-9, "{now:?} held {held}");
    in_flight.abort();
}

#[tokio::test]
async fn serves_https_with_a_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = freehold_test_support::self_signed_certificate(dir.path());
    let config = freehold_gateway::tls::server_config(&cert, &key).unwrap();
    let upstream = MockUpstream::start().await.unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.path().join("g.db").display()))
        .await
        .unwrap();
    let gateway = Arc::new(
        Gateway::new(
            GatewaySettings::default(),
            routes(vec![upstream.base_url()]),
            Some(MASTER.into()),
            Some(store),
            Ledger::disabled(),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = freehold_gateway::routes::app(gateway);
    tokio::spawn(freehold_gateway::listen::serve(
        listener,
        app,
        Some(config),
        GatewaySettings::default().time_limits(),
        std::future::pending(),
    ));
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!("https://{address}");
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&chat_body("mock"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], MOCK_TEXT);
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        reqwest::get(format!("http://{address}/health"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn codex_namespaces_with_long_names_reach_a_provider_that_limits_names() {
    use freehold_test_support::{MockServer, Scripted};

    // The name the gateway gives the first tool below (pinned in
    // freehold-llm's tests): the namespace's start, a hash, the tool's name.
    const SHORTENED: &str = "mcp__github_enterpr_a25a0d3e__list_pull_request_review_comments";
    let upstream = MockServer::start(vec![Scripted::json(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": SHORTENED,
                         "input": {"pull": 7}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 40, "output_tokens": 9},
        }),
    )])
    .await;
    let gw = start_anthropic(&upstream.url()).await;
    let namespace = "mcp__github_enterprise_server_for_the_platform_team";
    let request = json!({
        "model": "claude:claude-x",
        "input": "Summarise the review of pull request 7.",
        "tools": [{"type": "namespace", "name": namespace,
                   "description": "The platform team's GitHub Enterprise server.",
                   "tools": [
            {"type": "function", "name": "list_pull_request_review_comments",
             "parameters": {"type": "object", "properties": {"pull": {"type": "integer"}}}},
            {"type": "function", "name": "list_pull_request_review_threads",
             "parameters": {"type": "object"}},
        ]}],
    });
    let (status, body, _) = post(&gw.url, "/v1/responses", Some(MASTER), &request).await;
    assert_eq!(status, 200, "{body}");

    // Anthropic refuses tool names over 64 bytes: none went.
    let sent = upstream.requests()[0].json();
    let names: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], SHORTENED, "{sent}");
    assert!(names.iter().all(|name| name.len() <= 63), "{names:?}");
    assert!(
        names[1].ends_with("__list_pull_request_review_threads"),
        "{names:?}"
    );
    let description = sent["tools"][0]["description"].as_str().unwrap();
    assert!(description.contains("GitHub Enterprise server"), "{sent}");

    // The client gets the call under its own namespace and name.
    let item = &body["output"][0];
    assert_eq!(item["type"], "function_call", "{body}");
    assert_eq!(item["namespace"], namespace, "{body}");
    assert_eq!(item["name"], "list_pull_request_review_comments", "{body}");
    assert_eq!(item["call_id"], "toolu_1", "{body}");
}
