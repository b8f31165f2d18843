//! The router and the replica set against scripted fake providers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use freehold_llm::balance::{HealthSettings, ReplicaHealth, ReplicaSet};
use freehold_llm::catalog::Catalog;
use freehold_llm::router::{AliasTarget, Router, RouterSettings, Target};
use freehold_llm::{EventStream, Provider, collect_stream};
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, ErrorKind, LlmError, Message, ModelInfo, StopReason,
    StreamEvent, Usage,
};
use futures::StreamExt;

/// Locks a fake's state (a panicking test thread may poison it).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a fake answers to one call.
#[derive(Debug, Clone)]
enum Reply {
    /// `stream`/`complete` fail at once.
    Fail(ErrorKind),
    /// The stream yields these, then ends.
    Events(Vec<Result<StreamEvent, ErrorKind>>),
    /// The stream yields `Start` and one text delta, then stays open.
    Hold,
}

fn answer(text: &str) -> Reply {
    Reply::Events(vec![
        Ok(StreamEvent::Start {
            id: None,
            model: None,
        }),
        Ok(StreamEvent::TextDelta { text: text.into() }),
        Ok(StreamEvent::Usage(Usage {
            input_tokens: 10,
            output_tokens: 2,
            ..Usage::default()
        })),
        Ok(StreamEvent::Stop {
            reason: StopReason::EndTurn,
        }),
    ])
}

/// A provider that answers from a script and counts its calls.
#[derive(Debug)]
struct Fake {
    name: String,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    calls: AtomicUsize,
    /// The requests it was sent.
    requests: Mutex<Vec<ChatRequest>>,
    listing: Option<Vec<&'static str>>,
    /// Whether it counts tokens (answering 7, or failing as scripted);
    /// otherwise it cannot count, like an OpenAI-compatible server.
    counts: std::sync::atomic::AtomicBool,
    /// Model lists asked for.
    listings: AtomicUsize,
    /// How the next model lists fail (`None`: as `listing` says).
    listing_script: Mutex<VecDeque<Option<ErrorKind>>>,
}

impl Fake {
    fn new(name: &str, default: Reply) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            listing: None,
            counts: Default::default(),
            listings: AtomicUsize::new(0),
            listing_script: Mutex::new(VecDeque::new()),
        })
    }

    fn scripted(name: &str, replies: Vec<Reply>, default: Reply) -> Arc<Self> {
        let fake = Self::new(name, default);
        lock(&fake.script).extend(replies);
        fake
    }

    fn listing(name: &str, listing: Option<Vec<&'static str>>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(answer(name)),
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            listing,
            counts: Default::default(),
            listings: AtomicUsize::new(0),
            listing_script: Mutex::new(VecDeque::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn listings(&self) -> usize {
        self.listings.load(Ordering::SeqCst)
    }

    /// Scripts how the next model lists go (`Some`: failing with it).
    fn script_listings(&self, outcomes: &[Option<ErrorKind>]) {
        lock(&self.listing_script).extend(outcomes.iter().cloned());
    }

    /// Makes it count tokens from now on.
    fn count(&self) {
        self.counts.store(true, Ordering::SeqCst);
    }

    fn set_default(&self, reply: Reply) {
        *lock(&self.default) = reply;
    }

    fn models_seen(&self) -> Vec<String> {
        lock(&self.requests)
            .iter()
            .map(|request| request.model.clone())
            .collect()
    }

    fn next(&self, request: &ChatRequest) -> Reply {
        self.calls.fetch_add(1, Ordering::SeqCst);
        lock(&self.requests).push(request.clone());
        let scripted = lock(&self.script).pop_front();
        scripted.unwrap_or_else(|| lock(&self.default).clone())
    }

    fn error(&self, kind: ErrorKind) -> LlmError {
        LlmError::new(kind, self.name.clone(), "scripted")
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities::default()
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let name = self.name.clone();
        match self.next(&request) {
            Reply::Fail(kind) => Err(self.error(kind)),
            Reply::Events(events) => {
                let events = events
                    .into_iter()
                    .map(move |event| event.map_err(|kind| LlmError::new(kind, name.clone(), "x")));
                Ok(Box::pin(futures::stream::iter(events)))
            }
            Reply::Hold => {
                let events = vec![
                    Ok(StreamEvent::Start {
                        id: None,
                        model: None,
                    }),
                    Ok(StreamEvent::TextDelta { text: name.clone() }),
                ];
                Ok(Box::pin(
                    futures::stream::iter(events).chain(futures::stream::pending()),
                ))
            }
        }
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        match self.next(&request) {
            Reply::Fail(kind) => Err(self.error(kind)),
            Reply::Events(events) => {
                let name = self.name.clone();
                let events = events
                    .into_iter()
                    .map(move |event| event.map_err(|kind| LlmError::new(kind, name.clone(), "x")));
                collect_stream(&self.name, Box::pin(futures::stream::iter(events))).await
            }
            Reply::Hold => futures::future::pending().await,
        }
    }

    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        if !self.counts.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match self.next(&request) {
            Reply::Fail(kind) => Err(self.error(kind)),
            _ => Ok(Some(7)),
        }
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        if let Some(Some(kind)) = lock(&self.listing_script).pop_front() {
            return Err(self.error(kind));
        }
        match &self.listing {
            Some(ids) => Ok(ids
                .iter()
                .map(|id| ModelInfo {
                    id: (*id).into(),
                    provider: self.name.clone(),
                    context_window: None,
                    max_output_tokens: None,
                })
                .collect()),
            None => Err(self.error(ErrorKind::Connection)),
        }
    }
}

/// The error of a stream request that must fail before streaming.
async fn stream_error(provider: &dyn Provider, request: ChatRequest) -> LlmError {
    match provider.stream(request).await {
        Ok(_) => panic!("the request streamed"),
        Err(error) => error,
    }
}

fn request(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user("hi")])
}

fn router(providers: &[(&str, &Arc<Fake>)], aliases: &[(&str, AliasTarget)]) -> Router {
    let providers = providers
        .iter()
        .map(|(name, fake)| ((*name).to_owned(), Arc::clone(*fake) as Arc<dyn Provider>))
        .collect();
    let aliases = aliases
        .iter()
        .map(|(name, target)| ((*name).to_owned(), target.clone()))
        .collect();
    Router::new(providers, aliases, builtin())
}

fn builtin() -> Catalog {
    Catalog::builtin().unwrap_or_else(|error| panic!("{error}"))
}

fn chain(names: &[&str]) -> AliasTarget {
    AliasTarget::Chain(names.iter().map(|name| (*name).to_owned()).collect())
}

fn target(provider: &str, model: &str) -> Target {
    Target {
        provider: provider.into(),
        model: model.into(),
    }
}

// --- Router -------------------------------------------------------------------

#[tokio::test]
async fn chain_falls_back_on_overloaded_and_connection_before_the_first_token() {
    let a = Fake::new("a", Reply::Fail(ErrorKind::Overloaded));
    // `b` accepts the request, then drops the connection before any token.
    let b = Fake::new(
        "b",
        Reply::Events(vec![
            Ok(StreamEvent::Start {
                id: Some("from-b".into()),
                model: None,
            }),
            Err(ErrorKind::Connection),
        ]),
    );
    let c = Fake::new("c", answer("from c"));
    let router = router(
        &[("a", &a), ("b", &b), ("c", &c)],
        &[("smart", chain(&["a:m1", "b:m2", "c:m3"]))],
    );

    let (answered_by, stream) = router.stream_routed(request("smart")).await.unwrap();
    assert_eq!(answered_by, target("c", "m3"));
    let response = collect_stream("router", stream).await.unwrap();
    assert_eq!(response.message.text(), "from c");
    // `b`'s Start was not passed on.
    assert_eq!(response.id, None);
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 1));
    assert_eq!(a.models_seen(), ["m1"]);
    assert_eq!(b.models_seen(), ["m2"]);
    assert_eq!(c.models_seen(), ["m3"]);
}

/// A conversation with two tool uses, asking for Anthropic's context
/// editing to clear all tool results but the last.
fn asking_for_context_edits(model: &str) -> ChatRequest {
    let mut messages = vec![Message::user("read both files")];
    for index in 0..2 {
        messages.push(Message {
            role: freehold_protocol::Role::Assistant,
            content: vec![freehold_protocol::ContentPart::ToolCall(
                freehold_protocol::ToolCall::new(format!("call_{index}"), "read", "{}"),
            )],
        });
        messages.push(Message::tool_result(
            format!("call_{index}"),
            "x".repeat(400),
        ));
    }
    let mut request = ChatRequest::new(model, messages);
    request.context_management = Some(serde_json::json!({"edits": [{
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "tool_uses", "value": 0},
        "keep": {"type": "tool_uses", "value": 1},
    }]}));
    request
}

/// The tool results `request` carries.
fn tool_results(request: &ChatRequest) -> Vec<String> {
    request
        .messages
        .iter()
        .flat_map(|message| &message.content)
        .filter_map(|part| match part {
            freehold_protocol::ContentPart::ToolResult(result) => Some(result.content.clone()),
            _ => None,
        })
        .collect()
}

/// The router makes the edits for each target that does not make them
/// itself, and reports them just before the stop: a target that opens
/// and then fails has shown nothing, so the chain still falls back.
#[tokio::test]
async fn context_edits_are_made_per_target_and_reported_before_the_stop() {
    let a = Fake::new(
        "a",
        Reply::Events(vec![
            Ok(StreamEvent::Start {
                id: None,
                model: None,
            }),
            Err(ErrorKind::Overloaded),
        ]),
    );
    let b = Fake::new("b", answer("from b"));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[("smart", chain(&["a:m1", "b:m2"]))],
    );

    let (answered_by, stream) = router
        .stream_routed(asking_for_context_edits("smart"))
        .await
        .unwrap();
    assert_eq!(answered_by, target("b", "m2"));
    let events: Vec<StreamEvent> = stream.map(Result::unwrap).collect().await;
    let names: Vec<&str> = events
        .iter()
        .map(|event| match event {
            StreamEvent::Start { .. } => "start",
            StreamEvent::TextDelta { .. } => "text",
            StreamEvent::Usage(_) => "usage",
            StreamEvent::ContextEdited { .. } => "edited",
            StreamEvent::Stop { .. } => "stop",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["start", "text", "usage", "edited", "stop"]);
    let StreamEvent::ContextEdited { edits } = &events[3] else {
        unreachable!()
    };
    assert_eq!(edits[0].kind, "clear_tool_uses_20250919");
    assert_eq!(edits[0].cleared_tool_uses, Some(1));
    // Each target got the edited conversation, and no `context_management`.
    for fake in [&a, &b] {
        let sent = lock(&fake.requests).clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].context_management, None);
        let results = tool_results(&sent[0]);
        assert_eq!(results[0], freehold_llm::context_edit::CLEARED_RESULT);
        assert_eq!(results[1], "x".repeat(400));
    }

    // A whole answer carries them too.
    let (_, response) = router
        .complete_routed(asking_for_context_edits("b:m2"))
        .await
        .unwrap();
    assert_eq!(response.context_edits.len(), 1);
}

#[tokio::test]
async fn chain_does_not_fall_back_on_authentication() {
    let a = Fake::new("a", Reply::Fail(ErrorKind::Authentication));
    let b = Fake::new("b", answer("from b"));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[("smart", chain(&["a:m", "b:m"]))],
    );

    let error = stream_error(&router, request("smart")).await;
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.provider, "a");
    let error = router.complete(request("smart")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(b.calls(), 0);
}

#[tokio::test]
async fn chain_does_not_fall_back_after_a_text_delta() {
    let a = Fake::new(
        "a",
        Reply::Events(vec![
            Ok(StreamEvent::Start {
                id: None,
                model: None,
            }),
            Ok(StreamEvent::TextDelta {
                text: "partial".into(),
            }),
            Err(ErrorKind::Connection),
        ]),
    );
    let b = Fake::new("b", answer("from b"));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[("smart", chain(&["a:m", "b:m"]))],
    );

    let stream = router.stream(request("smart")).await.unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 3);
    assert!(matches!(events[0], Ok(StreamEvent::Start { .. })));
    assert_eq!(
        events[1],
        Ok(StreamEvent::TextDelta {
            text: "partial".into()
        })
    );
    assert!(matches!(&events[2], Err(error) if error.kind == ErrorKind::Connection));
    assert_eq!(b.calls(), 0);
}

#[tokio::test]
async fn complete_falls_back_on_retryable_errors_only() {
    let a = Fake::scripted(
        "a",
        vec![
            Reply::Fail(ErrorKind::RateLimited { retry_after: None }),
            Reply::Fail(ErrorKind::InvalidRequest),
        ],
        answer("from a"),
    );
    let b = Fake::new("b", answer("from b"));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[("smart", chain(&["a:m", "b:n"]))],
    );

    let (answered_by, response) = router.complete_routed(request("smart")).await.unwrap();
    assert_eq!(answered_by, target("b", "n"));
    assert_eq!(response.message.text(), "from b");
    let error = router.complete(request("smart")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn the_last_target_error_is_returned_when_every_target_fails() {
    let a = Fake::new("a", Reply::Fail(ErrorKind::Overloaded));
    let b = Fake::new("b", Reply::Fail(ErrorKind::Server));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[("smart", chain(&["a:m", "b:m"]))],
    );
    let error = stream_error(&router, request("smart")).await;
    assert_eq!(
        (error.kind, error.provider.as_str()),
        (ErrorKind::Server, "b")
    );
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[tokio::test]
async fn provider_model_splits_at_the_first_colon() {
    let ollama = Fake::new("ollama", answer("local"));
    let router = router(&[("ollama", &ollama)], &[]);
    assert_eq!(
        router.resolve("ollama:qwen3:8b").unwrap(),
        [target("ollama", "qwen3:8b")]
    );
    let response = router.complete(request("ollama:qwen3:8b")).await.unwrap();
    assert_eq!(response.message.text(), "local");
    assert_eq!(ollama.models_seen(), ["qwen3:8b"]);
}

#[test]
fn aliases_may_name_aliases_and_repeats_are_dropped() {
    let a = Fake::new("a", answer("a"));
    let b = Fake::new("b", answer("b"));
    let router = router(
        &[("a", &a), ("b", &b)],
        &[
            ("fast", AliasTarget::One("b:small".into())),
            ("smart", chain(&["a:big", "fast"])),
            ("everything", chain(&["smart", "fast", "a:other"])),
        ],
    );
    assert_eq!(
        router.resolve("everything").unwrap(),
        [
            target("a", "big"),
            target("b", "small"),
            target("a", "other")
        ]
    );
    router.validate().unwrap();
}

#[test]
fn alias_cycles_are_reported_with_their_path() {
    let a = Fake::new("a", answer("a"));
    let router = router(
        &[("a", &a)],
        &[
            ("one", chain(&["a:m", "two"])),
            ("two", AliasTarget::One("three".into())),
            ("three", AliasTarget::One("one".into())),
            ("me", AliasTarget::One("me".into())),
        ],
    );
    let error = router.resolve("one").unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(
        error.message.contains("one -> two -> three -> one"),
        "{error}"
    );
    let error = router.resolve("me").unwrap_err();
    assert!(error.message.contains("me -> me"), "{error}");
    assert!(router.validate().is_err());
}

#[test]
fn unknown_names_list_providers_and_aliases() {
    let a = Fake::new("a", answer("a"));
    let router = router(
        &[("anthropic", &a), ("ollama", &a)],
        &[("fast", AliasTarget::One("ollama:qwen3:8b".into()))],
    );
    for name in ["qwen3", "openai:gpt-5"] {
        let error = router.resolve(name).unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound, "{name}");
        assert_eq!(error.provider, "router");
        let text = error.to_string();
        assert!(
            text.contains("configured providers: anthropic, ollama"),
            "{text}"
        );
        assert!(text.contains("aliases: fast"), "{text}");
        assert!(text.contains("`provider:model`"), "{text}");
    }
    assert!(
        router
            .resolve("openai:gpt-5")
            .unwrap_err()
            .message
            .contains("unknown provider `openai`")
    );
    let bad_alias = router_with_bad_alias();
    let error = bad_alias.validate().unwrap_err();
    assert!(error.message.contains("named by alias `broken`"), "{error}");
}

fn router_with_bad_alias() -> Router {
    let a = Fake::new("a", answer("a"));
    router(&[("a", &a)], &[("broken", chain(&["a:m", "nowhere:m"]))])
}

#[test]
fn empty_chains_and_empty_models_are_invalid() {
    let a = Fake::new("a", answer("a"));
    let router = router(&[("a", &a)], &[("none", chain(&[]))]);
    assert_eq!(
        router.resolve("none").unwrap_err().kind,
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        router.resolve("a:").unwrap_err().kind,
        ErrorKind::InvalidRequest
    );
}

#[tokio::test]
async fn list_models_aggregates_and_skips_failing_providers() {
    let gpu = Fake::listing("vllm-replica", Some(vec!["qwen3:8b", "mystery"]));
    let down = Fake::listing("down", None);
    let router = router(&[("gpu-box", &gpu), ("down", &down)], &[]);
    let models = router.list_models().await.unwrap();
    assert_eq!(
        models,
        [
            ModelInfo {
                id: "qwen3:8b".into(),
                provider: "gpu-box".into(),
                // From the catalog's `ollama:qwen3:8b`.
                context_window: Some(40_960),
                max_output_tokens: None,
            },
            ModelInfo {
                id: "mystery".into(),
                provider: "gpu-box".into(),
                context_window: None,
                max_output_tokens: None,
            },
        ]
    );
    let only_down = router_of_down();
    assert_eq!(
        only_down.list_models().await.unwrap_err().kind,
        ErrorKind::Connection
    );
}

fn router_of_down() -> Router {
    let down = Fake::listing("down", None);
    router(&[("down", &down)], &[])
}

#[test]
fn cost_of_uses_the_catalog_and_unknown_stays_unknown() {
    let a = Fake::new("a", answer("a"));
    let router = router(&[("openai", &a)], &[]);
    let usage = Usage {
        input_tokens: 10_000,
        cached_input_tokens: 4_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    assert_eq!(router.cost_of("openai", "gpt-5", &usage), Some(0.018));
    assert_eq!(router.cost_of("ollama", "qwen3:8b", &usage), Some(0.0));
    assert_eq!(router.cost_of("openai", "gpt-unreleased", &usage), None);
    assert_eq!(
        router.cost_of("mistral", "mistral-large-latest", &usage),
        None
    );
}

#[test]
fn router_settings_have_defaults_and_reject_unknown_fields() {
    let settings: RouterSettings = toml::from_str("").unwrap();
    assert_eq!(settings, RouterSettings::default());
    // Unset, the command decides whether pools are probed: a gateway passes
    // its interval, a one-off command none.
    assert_eq!(HealthSettings::from(&settings), HealthSettings::default());
    let ten = Duration::from_secs(10);
    assert_eq!(
        settings.health(Some(ten)),
        HealthSettings {
            probe_interval: Some(ten),
            ..HealthSettings::default()
        }
    );
    // Set, it holds for every command; 0 turns probing off.
    let settings: RouterSettings =
        toml::from_str("cooldown_secs = 5\nprobe_interval_secs = 0").unwrap();
    assert_eq!(
        settings.health(Some(ten)),
        HealthSettings {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(5),
            probe: false,
            probe_interval: None,
        }
    );
    let settings: RouterSettings = toml::from_str("probe_interval_secs = 3").unwrap();
    for default in [None, Some(ten)] {
        assert_eq!(
            settings.health(default).probe_interval,
            Some(Duration::from_secs(3))
        );
    }
    assert!(toml::from_str::<RouterSettings>("cooldown = 5").is_err());
    let alias: BTreeMap<String, AliasTarget> =
        toml::from_str("fast = \"a:m\"\nsmart = [\"a:m\", \"fast\"]").unwrap();
    assert_eq!(alias["fast"], AliasTarget::One("a:m".into()));
    assert_eq!(alias["smart"], chain(&["a:m", "fast"]));
}

// --- Replica set ----------------------------------------------------------------

/// A replica set over any providers, shared with the tasks that use it.
fn pool(replicas: Vec<Arc<dyn Provider>>, settings: HealthSettings) -> Arc<ReplicaSet> {
    Arc::new(ReplicaSet::new("gpu-box", replicas, settings))
}

fn replica_set(replicas: &[&Arc<Fake>], settings: HealthSettings) -> ReplicaSet {
    let replicas = replicas
        .iter()
        .map(|fake| Arc::clone(*fake) as Arc<dyn Provider>)
        .collect();
    ReplicaSet::new("gpu-box", replicas, settings)
}

fn fast_health(eject_after_failures: u32) -> HealthSettings {
    HealthSettings {
        eject_after_failures,
        cooldown: Duration::from_millis(50),
        probe: false,
        probe_interval: None,
    }
}

fn outstanding(set: &ReplicaSet) -> Vec<usize> {
    set.health()
        .iter()
        .map(|health| health.outstanding)
        .collect()
}

fn calls(fakes: &[&Arc<Fake>]) -> Vec<usize> {
    fakes.iter().map(|fake| fake.calls()).collect()
}

/// Reads a held stream's first answer event: the text names its replica.
async fn replica_of(stream: &mut EventStream) -> String {
    loop {
        match stream.next().await {
            Some(Ok(StreamEvent::TextDelta { text })) => return text,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn new_requests_go_to_the_replica_with_fewest_outstanding() {
    let r0 = Fake::new("r0", Reply::Hold);
    let r1 = Fake::new("r1", Reply::Hold);
    let r2 = Fake::new("r2", Reply::Hold);
    let set = replica_set(&[&r0, &r1, &r2], HealthSettings::default());

    // Three requests held open land on three different replicas.
    let mut open = BTreeMap::new();
    for expected_busy in 1..=3 {
        let mut stream = set.stream(request("m")).await.unwrap();
        open.insert(replica_of(&mut stream).await, stream);
        assert_eq!(outstanding(&set).iter().sum::<usize>(), expected_busy);
    }
    assert_eq!(calls(&[&r0, &r1, &r2]), [1, 1, 1]);
    assert_eq!(outstanding(&set), [1, 1, 1]);

    // Closing r1's stream makes it the idle one: the next request goes there,
    // whatever the rotation says.
    drop(open.remove("r1"));
    assert_eq!(outstanding(&set), [1, 0, 1]);
    let mut next = set.stream(request("m")).await.unwrap();
    assert_eq!(replica_of(&mut next).await, "r1");
    assert_eq!(calls(&[&r0, &r1, &r2]), [1, 2, 1]);

    // Again with r2, twice in a row while the others stay busy.
    drop(open.remove("r2"));
    let mut again = set.stream(request("m")).await.unwrap();
    assert_eq!(replica_of(&mut again).await, "r2");
    assert_eq!(outstanding(&set), [1, 1, 1]);

    drop((open, next, again));
    assert_eq!(outstanding(&set), [0, 0, 0]);
}

#[tokio::test]
async fn a_busy_replica_gets_no_work_while_another_is_idle() {
    let busy = Fake::new("busy", Reply::Hold);
    let idle = Fake::new("idle", answer("idle"));
    let set = replica_set(&[&busy, &idle], HealthSettings::default());
    // Route until `busy` holds a request open (answers from `idle` finish).
    let mut held = None;
    while held.is_none() {
        let mut stream = set.stream(request("m")).await.unwrap();
        if replica_of(&mut stream).await == "busy" {
            held = Some(stream);
        }
    }
    assert_eq!(outstanding(&set), [1, 0]);
    for _ in 0..5 {
        let response = set.complete(request("m")).await.unwrap();
        assert_eq!(response.message.text(), "idle");
    }
    assert_eq!(busy.calls(), 1, "the busy replica got more work");
    drop(held);
    assert_eq!(outstanding(&set), [0, 0]);
}

#[tokio::test]
async fn a_finished_stream_is_no_longer_outstanding() {
    let r0 = Fake::new("r0", answer("done"));
    let set = replica_set(&[&r0], HealthSettings::default());
    let stream = set.stream(request("m")).await.unwrap();
    assert_eq!(outstanding(&set), [1]);
    let response = collect_stream("gpu-box", stream).await.unwrap();
    assert_eq!(response.message.text(), "done");
    assert_eq!(outstanding(&set), [0]);
    set.complete(request("m")).await.unwrap();
    assert_eq!(outstanding(&set), [0]);
}

#[tokio::test]
async fn replicas_are_ejected_after_three_failures_and_readmitted_after_cooldown() {
    let flaky = Fake::new("flaky", Reply::Fail(ErrorKind::Overloaded));
    let good = Fake::new("good", answer("good"));
    // Far longer than the handful of in-memory requests below, even on a
    // loaded machine that holds this test's thread up for a while.
    let set = replica_set(
        &[&flaky, &good],
        HealthSettings {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(1),
            probe: false,
            probe_interval: None,
        },
    );

    for _ in 0..10 {
        let stream = set.stream(request("m")).await.unwrap();
        let response = collect_stream("gpu-box", stream).await.unwrap();
        assert_eq!(response.message.text(), "good");
    }
    assert_eq!(flaky.calls(), 3, "an ejected replica got requests");
    assert_eq!(good.calls(), 10);
    assert_eq!(
        set.health()[0],
        ReplicaHealth {
            name: "flaky".into(),
            address: None,
            outstanding: 0,
            consecutive_failures: 3,
            ejected: true,
        }
    );

    // After the cooldown one trial request goes through; it fails, and the
    // replica is ejected again at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!set.health()[0].ejected);
    for _ in 0..6 {
        set.complete(request("m")).await.unwrap();
    }
    assert_eq!(flaky.calls(), 4);
    assert!(set.health()[0].ejected);

    // After another cooldown it has recovered: one success readmits it.
    flaky.set_default(answer("flaky"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(set.complete(request("m")).await.unwrap().message.text());
    }
    assert!(
        answers.iter().filter(|text| *text == "flaky").count() >= 2,
        "{answers:?}"
    );
    assert_eq!(set.health()[0].consecutive_failures, 0);
    assert!(!set.health()[0].ejected);
}

#[tokio::test]
async fn with_probes_a_rested_replica_gets_no_client_request_until_it_answers_one() {
    // `down` cannot list its models either (no listing), so its probes fail.
    let down = Fake::new("down", Reply::Fail(ErrorKind::Connection));
    let good = Fake::new("good", answer("good"));
    let set = replica_set(
        &[&down, &good],
        HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_millis(30),
            probe: true,
            probe_interval: None,
        },
    );
    for _ in 0..3 {
        let response = set.complete(request("m")).await.unwrap();
        assert_eq!(response.message.text(), "good");
    }
    assert_eq!(down.calls(), 1, "ejected by its first failure");
    assert!(set.health()[0].ejected);
    // Several cooldowns later: without probes one of these would be its
    // trial; with them, it stays out while its probes fail.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let response = set.complete(request("m")).await.unwrap();
        assert_eq!(response.message.text(), "good");
    }
    assert_eq!(
        down.calls(),
        1,
        "a client request went to the rested replica"
    );
    assert!(set.health()[0].ejected);
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let flaky = Fake::scripted(
        "flaky",
        vec![
            Reply::Fail(ErrorKind::Timeout),
            Reply::Fail(ErrorKind::Timeout),
            answer("ok"),
            Reply::Fail(ErrorKind::Timeout),
            Reply::Fail(ErrorKind::Timeout),
        ],
        answer("ok"),
    );
    let set = replica_set(&[&flaky], fast_health(3));
    for expected in [false, false, true, false, false, true] {
        assert_eq!(set.complete(request("m")).await.is_ok(), expected);
    }
    assert_eq!(set.health()[0].consecutive_failures, 0);
    assert!(!set.health()[0].ejected);
}

/// Two replicas that cannot be reached, each ejected after one failure
/// for an hour.
fn two_unreachable_replicas() -> (Arc<Fake>, Arc<Fake>, ReplicaSet) {
    let a = Fake::new("a", Reply::Fail(ErrorKind::Connection));
    let b = Fake::new("b", Reply::Fail(ErrorKind::Connection));
    let set = replica_set(
        &[&a, &b],
        HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_secs(3600),
            probe: false,
            probe_interval: None,
        },
    );
    (a, b, set)
}

#[tokio::test]
async fn all_ejected_still_serves_starting_with_the_longest_ejected() {
    let (a, b, set) = two_unreachable_replicas();
    // The first request tries both and ejects both, `a` first.
    let error = stream_error(&set, request("m")).await;
    assert_eq!(error.kind, ErrorKind::Connection);
    assert_eq!(calls(&[&a, &b]), [1, 1]);
    assert!(set.health().iter().all(|health| health.ejected));

    // With every replica ejected, the one ejected longest ago serves, once.
    a.set_default(answer("a again"));
    let response = set.complete(request("m")).await.unwrap();
    assert_eq!(response.message.text(), "a again");
    assert_eq!(calls(&[&a, &b]), [2, 1]);
    // Its success readmitted it.
    assert!(!set.health()[0].ejected);
    set.complete(request("m")).await.unwrap();
    assert_eq!(calls(&[&a, &b]), [3, 1]);
}

/// With every replica ejected, a request that fails on the one ejected
/// longest ago moves on to the next ejected one, rather than failing while
/// a replica that has come back could answer it; whole and streamed.
#[tokio::test]
async fn a_failed_request_moves_on_to_ejected_replicas() {
    let (a, b, set) = two_unreachable_replicas();
    let error = stream_error(&set, request("m")).await;
    assert_eq!(error.kind, ErrorKind::Connection);
    assert!(set.health().iter().all(|health| health.ejected));
    // `b` is back; `a`, ejected longest ago, is asked first and fails.
    b.set_default(answer("b is back"));
    let response = set.complete(request("m")).await.unwrap();
    assert_eq!(response.message.text(), "b is back");
    assert_eq!(calls(&[&a, &b]), [2, 2]);
    assert!(!set.health()[1].ejected);

    let (a, b, set) = two_unreachable_replicas();
    stream_error(&set, request("m")).await;
    b.set_default(answer("b is back"));
    let streamed = collect_stream("m", set.stream(request("m")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(streamed.message.text(), "b is back");
    assert_eq!(calls(&[&a, &b]), [2, 2]);
}

#[tokio::test]
async fn all_ejected_rotates_through_the_dead() {
    let only = Fake::new("only", Reply::Fail(ErrorKind::Server));
    let set = replica_set(
        &[&only],
        HealthSettings {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(3600),
            probe: false,
            probe_interval: None,
        },
    );
    for _ in 0..5 {
        let error = set.complete(request("m")).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Server);
    }
    // Ejected after three, yet still asked rather than failing without trying.
    assert_eq!(only.calls(), 5);
    assert!(set.health()[0].ejected);
}

#[tokio::test]
async fn failover_is_bounded_by_the_replica_count() {
    let fakes: Vec<Arc<Fake>> = (0..3)
        .map(|i| Fake::new(&format!("r{i}"), Reply::Fail(ErrorKind::Overloaded)))
        .collect();
    let set = replica_set(&fakes.iter().collect::<Vec<_>>(), fast_health(100));
    let error = stream_error(&set, request("m")).await;
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(calls(&fakes.iter().collect::<Vec<_>>()), [1, 1, 1]);
    let error = set.complete(request("m")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert_eq!(calls(&fakes.iter().collect::<Vec<_>>()), [2, 2, 2]);
}

#[tokio::test]
async fn replica_failover_happens_only_before_the_first_token_and_for_retryable_errors() {
    let cut = Fake::new(
        "cut",
        Reply::Events(vec![
            Ok(StreamEvent::Start {
                id: None,
                model: None,
            }),
            Ok(StreamEvent::TextDelta { text: "par".into() }),
            Err(ErrorKind::Connection),
        ]),
    );
    let refused = Fake::new("refused", Reply::Fail(ErrorKind::Authentication));
    let set = replica_set(&[&cut, &refused], fast_health(3));
    // Each request lands on one of them and none is moved: the cut stream had
    // already delivered text, and authentication is not retryable.
    for _ in 0..4 {
        match set.stream(request("m")).await {
            Ok(stream) => {
                let error = collect_stream("gpu-box", stream).await.unwrap_err();
                assert_eq!(error.kind, ErrorKind::Connection);
            }
            Err(error) => assert_eq!(error.kind, ErrorKind::Authentication),
        }
    }
    assert_eq!(cut.calls() + refused.calls(), 4);
    // Authentication failures are not health failures.
    assert_eq!(set.health()[1].consecutive_failures, 0);
}

#[tokio::test]
async fn rate_limits_move_requests_without_ejecting() {
    let limited = Fake::new(
        "limited",
        Reply::Fail(ErrorKind::RateLimited { retry_after: None }),
    );
    let good = Fake::new("good", answer("good"));
    let set = replica_set(&[&limited, &good], fast_health(1));
    for _ in 0..6 {
        assert_eq!(
            set.complete(request("m")).await.unwrap().message.text(),
            "good"
        );
    }
    assert_eq!(good.calls(), 6);
    assert!(limited.calls() >= 2, "rotation never reached it");
    assert!(!set.health()[0].ejected);
}

#[tokio::test]
async fn list_models_asks_replicas_in_turn() {
    let down = Fake::listing("down", None);
    let up = Fake::listing("up", Some(vec!["qwen3:8b"]));
    let set = replica_set(&[&down, &up], HealthSettings::default());
    let models = set.list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        (models[0].id.as_str(), models[0].provider.as_str()),
        ("qwen3:8b", "gpu-box")
    );
    let none = replica_set(&[], HealthSettings::default());
    assert!(none.stream(request("m")).await.is_err());
}

#[tokio::test]
async fn a_router_over_replica_sets_balances_and_falls_back() {
    let r0 = Fake::new("r0", Reply::Fail(ErrorKind::Overloaded));
    let r1 = Fake::new("r1", Reply::Fail(ErrorKind::Overloaded));
    let cloud = Fake::new("cloud", answer("cloud"));
    let set: Arc<dyn Provider> = Arc::new(replica_set(&[&r0, &r1], fast_health(3)));
    let providers = BTreeMap::from([
        ("gpu-box".to_owned(), set),
        ("openai".to_owned(), Arc::clone(&cloud) as Arc<dyn Provider>),
    ]);
    let aliases = BTreeMap::from([(
        "default".to_owned(),
        chain(&["gpu-box:qwen3:8b", "openai:gpt-5-mini"]),
    )]);
    let router = Router::new(providers, aliases, Catalog::builtin().unwrap());
    let (answered_by, stream) = router.stream_routed(request("default")).await.unwrap();
    assert_eq!(answered_by, target("openai", "gpt-5-mini"));
    let response = collect_stream("router", stream).await.unwrap();
    assert_eq!(response.message.text(), "cloud");
    assert_eq!(calls(&[&r0, &r1]), [1, 1]);
    assert_eq!(r0.models_seen(), ["qwen3:8b"]);
    let cost = router.cost_of(&answered_by.provider, &answered_by.model, &response.usage);
    // 10 input × 0.25 + 2 output × 2.0 = 6.5 µ$.
    assert_eq!(cost, Some(6.5e-6));
}

#[tokio::test]
async fn counts_say_nothing_of_a_replicas_health() {
    let (a, b, set) = two_unreachable_replicas();
    stream_error(&set, request("m")).await;
    assert!(set.health().iter().all(|health| health.ejected));
    // OpenAI-compatible replicas cannot count: nothing is sent, and the
    // answer readmits no one.
    assert_eq!(set.count_input_tokens(request("m")).await.unwrap(), None);
    assert_eq!(calls(&[&a, &b]), [1, 1]);
    assert!(set.health().iter().all(|health| health.ejected));

    // Nor does it clear failures: three in a row still eject, counts
    // between them.
    let flaky = Fake::new("flaky", Reply::Fail(ErrorKind::Timeout));
    let set = replica_set(&[&flaky], fast_health(3));
    for _ in 0..3 {
        set.complete(request("m")).await.unwrap_err();
        assert_eq!(set.count_input_tokens(request("m")).await.unwrap(), None);
    }
    assert_eq!(set.health()[0].consecutive_failures, 3);
    assert!(set.health()[0].ejected);

    // A replica that counts (vLLM counts in its API process even while its
    // engine is stuck) is not made healthy by its counts either.
    let stuck = Fake::scripted(
        "stuck",
        vec![
            Reply::Fail(ErrorKind::Timeout),
            answer("counted"),
            Reply::Fail(ErrorKind::Timeout),
            answer("counted"),
            Reply::Fail(ErrorKind::Timeout),
        ],
        answer("late"),
    );
    stuck.count();
    let set = replica_set(&[&stuck], fast_health(3));
    for _ in 0..2 {
        set.complete(request("m")).await.unwrap_err();
        assert_eq!(set.count_input_tokens(request("m")).await.unwrap(), Some(7));
    }
    set.complete(request("m")).await.unwrap_err();
    assert!(set.health()[0].ejected, "{:?}", set.health());
}

#[tokio::test]
async fn counts_move_to_another_replica_or_target_on_retryable_errors() {
    let down = Fake::new("down", Reply::Fail(ErrorKind::Connection));
    let up = Fake::new("up", answer("up"));
    down.count();
    up.count();
    let set = replica_set(&[&down, &up], fast_health(1));
    for _ in 0..2 {
        assert_eq!(set.count_input_tokens(request("m")).await.unwrap(), Some(7));
    }
    assert!(set.health()[0].ejected, "{:?}", set.health());
    assert!(!set.health()[1].ejected);

    // Through a router: a fallback chain moves on as for chat, and says
    // which target counted; a refusal is not retried.
    let first = Fake::new("first", Reply::Fail(ErrorKind::Overloaded));
    let second = Fake::new("second", answer("second"));
    first.count();
    second.count();
    let routed = router(
        &[("first", &first), ("second", &second)],
        &[("coder", chain(&["first:m1", "second:m2"]))],
    );
    let (counted_by, counted) = routed
        .count_input_tokens_routed(request("coder"))
        .await
        .unwrap();
    assert_eq!((counted_by, counted), (target("second", "m2"), Some(7)));
    first.set_default(Reply::Fail(ErrorKind::InvalidRequest));
    let error = routed
        .count_input_tokens_routed(request("coder"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(calls(&[&first, &second]), [2, 1]);
}

/// A target with a fallback after it is not retried with backoff: a 429
/// asking to wait 20 s moves the request to the next target at once.
#[tokio::test]
async fn a_rate_limited_target_with_a_fallback_is_not_waited_for() {
    use freehold_llm::config::ProviderConfig;
    use freehold_llm::presets::ProviderKind;
    use freehold_test_support::{MockServer, Scripted};

    let limited = || {
        Scripted::json(
            429,
            serde_json::json!({"error": {"message": "slow down", "type": "rate_limit"}}),
        )
        .header("retry-after", "20")
    };
    let answer = || {
        Scripted::json(
            200,
            serde_json::json!({
                "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from b"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }),
        )
    };
    let a = MockServer::start(vec![limited(), limited()]).await;
    let b = MockServer::start(vec![answer(), answer()]).await;
    let provider = |name: &str, url: String| -> Arc<dyn Provider> {
        ProviderConfig {
            kind: Some(ProviderKind::Openai),
            base_url: Some(format!("{url}/v1")),
            ..ProviderConfig::default()
        }
        .resolve(name)
        .unwrap()
        .build(&HealthSettings::default())
        .unwrap()
    };
    let router = Router::new(
        BTreeMap::from([
            ("a".to_owned(), provider("a", a.url())),
            ("b".to_owned(), provider("b", b.url())),
        ]),
        BTreeMap::from([("smart".to_owned(), chain(&["a:m", "b:m"]))]),
        builtin(),
    );
    let quick = Duration::from_secs(5);
    let (by, answer) = tokio::time::timeout(quick, router.complete_routed(request("smart")))
        .await
        .expect("answered without waiting out the 429")
        .unwrap();
    assert_eq!(
        (by, answer.message.text()),
        (target("b", "m"), "from b".to_owned())
    );
    let (by, _) = tokio::time::timeout(quick, router.stream_routed(request("smart")))
        .await
        .expect("streamed without waiting out the 429")
        .unwrap();
    assert_eq!(by, target("b", "m"));
    // One call each: no retry of `a`.
    assert_eq!(a.requests().len(), 2);
}

/// A replica set lists its models from a replica in rotation before an
/// ejected one (which may be a dead host that takes long to refuse).
#[tokio::test]
async fn a_replica_set_lists_models_from_a_healthy_replica_first() {
    let dead = Fake::listing("dead", Some(vec!["from-dead"]));
    dead.set_default(Reply::Fail(ErrorKind::Connection));
    let alive = Fake::listing("alive", Some(vec!["from-alive"]));
    let set = replica_set(
        &[&dead, &alive],
        HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_secs(3600),
            probe: false,
            probe_interval: None,
        },
    );
    // Requests until the dead replica has been tried (and ejected).
    while dead.calls() == 0 {
        set.complete(request("m")).await.unwrap();
    }
    assert!(set.health()[0].ejected);
    let models = set.list_models().await.unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["from-alive"]);
}

/// A replica that accepts every call and never answers any, like a server
/// process that is stopped or stuck behind a listening socket.
#[derive(Debug)]
struct Unanswering;

#[async_trait]
impl Provider for Unanswering {
    fn name(&self) -> &str {
        "stuck"
    }

    fn capabilities(&self, _model: &str) -> Capabilities {
        Capabilities::default()
    }

    async fn stream(&self, _request: ChatRequest) -> Result<EventStream, LlmError> {
        std::future::pending().await
    }

    async fn complete(&self, _request: ChatRequest) -> Result<ChatResponse, LlmError> {
        std::future::pending().await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        std::future::pending().await
    }
}

fn probing_every(interval: Duration, eject_after_failures: u32) -> HealthSettings {
    HealthSettings {
        eject_after_failures,
        cooldown: Duration::from_secs(60),
        probe: false,
        probe_interval: Some(interval),
    }
}

/// Waits (up to 5 s) until replica `index` of `set` is ejected.
/// Sends a request through `set` in a task of its own, and checks that it
/// is waiting on the first replica (of two).
async fn waiting_on_the_first_replica(
    set: &Arc<ReplicaSet>,
) -> tokio::task::JoinHandle<Result<ChatResponse, LlmError>> {
    let waiting = {
        let set = Arc::clone(set);
        tokio::spawn(async move { set.complete(request("m")).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(outstanding(set), [1, 0]);
    waiting
}

async fn until_ejected(set: &ReplicaSet, index: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !set.health()[index].ejected {
        assert!(
            std::time::Instant::now() < deadline,
            "never ejected: {:?}",
            set.health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn probes_in_rotation_eject_a_replica_that_never_answers_before_any_client_request() {
    let stuck: Arc<dyn Provider> = Arc::new(Unanswering);
    let good = Fake::listing("good", Some(vec!["m"]));
    let set = ReplicaSet::new(
        "gpu-box",
        vec![Arc::clone(&stuck), Arc::clone(&good) as Arc<dyn Provider>],
        probing_every(Duration::from_millis(20), 2),
    );
    // Two probes time out (each after the interval): ejected.
    until_ejected(&set, 0).await;
    assert!(!set.health()[1].ejected, "{:?}", set.health());
    // No client request waits on it: every one goes to the other replica.
    for _ in 0..6 {
        let response = tokio::time::timeout(Duration::from_secs(5), set.complete(request("m")))
            .await
            .expect("a request went to the replica that never answers")
            .unwrap();
        assert_eq!(response.message.text(), "good");
    }
    assert_eq!(good.calls(), 6);
    // Nor does one that fails on the other replica: the replica its probes
    // found not answering is not tried next, so the error comes at once.
    good.set_default(Reply::Fail(ErrorKind::Overloaded));
    let error = tokio::time::timeout(Duration::from_secs(5), set.complete(request("m")))
        .await
        .expect("a failed request moved on to the replica that never answers")
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Overloaded);

    // Dropping the set (a reload) stops its probes: nothing holds the
    // replica once the last probe has timed out.
    drop(set);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stuck) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "probes outlived their set"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With every replica ejected, a request goes first to one ejected for its
/// failures, not to one its probes found silent, though that one was
/// ejected longer ago: it would wait there until its time limit.
#[tokio::test]
async fn with_every_replica_ejected_a_silent_one_is_tried_last() {
    let stuck: Arc<dyn Provider> = Arc::new(Unanswering);
    let flaky = Fake::listing("flaky", Some(vec!["m"]));
    flaky.set_default(Reply::Fail(ErrorKind::Connection));
    let set = ReplicaSet::new(
        "gpu-box",
        vec![Arc::clone(&stuck), Arc::clone(&flaky) as Arc<dyn Provider>],
        probing_every(Duration::from_millis(20), 2),
    );
    until_ejected(&set, 0).await;
    // Two failures eject the other one too.
    for _ in 0..2 {
        let failed = tokio::time::timeout(Duration::from_secs(5), set.complete(request("m")))
            .await
            .expect("a failed request waited on the silent replica");
        assert_eq!(failed.unwrap_err().kind, ErrorKind::Connection);
    }
    assert!(set.health().iter().all(|health| health.ejected));
    flaky.set_default(answer("back"));
    let response = tokio::time::timeout(Duration::from_secs(5), set.complete(request("m")))
        .await
        .expect("the request waited on the silent replica")
        .unwrap();
    assert_eq!(response.message.text(), "back");
}

#[tokio::test]
async fn without_a_probe_interval_a_replica_in_rotation_is_not_probed() {
    // Its model list fails, but nobody asks for it: the probes of ejected
    // replicas run, and it is not one.
    let quiet = Fake::listing("quiet", None);
    let set = replica_set(
        &[&quiet],
        HealthSettings {
            probe: true,
            ..fast_health(1)
        },
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!set.health()[0].ejected);
    assert_eq!(set.health()[0].consecutive_failures, 0);
    assert_eq!(quiet.listings(), 0);
    // Nor with a zero interval, which means none.
    let set = replica_set(&[&quiet], probing_every(Duration::ZERO, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!set.health()[0].ejected);
    assert_eq!(quiet.listings(), 0);
    // With one, the failing list ejects it.
    let set = replica_set(&[&quiet], probing_every(Duration::from_millis(20), 1));
    until_ejected(&set, 0).await;
    assert_eq!(quiet.calls(), 0, "no client request was needed");
}

#[tokio::test]
async fn a_probe_that_answers_does_not_clear_the_failures_of_client_requests() {
    // The server's API lists its models while its engine times out every
    // request, as vLLM's API process does when its engine is stuck.
    let engine_stuck = Fake::listing("engine-stuck", Some(vec!["m"]));
    engine_stuck.set_default(Reply::Fail(ErrorKind::Timeout));
    let good = Fake::listing("good", Some(vec!["m"]));
    let set = replica_set(
        &[&engine_stuck, &good],
        probing_every(Duration::from_millis(10), 2),
    );
    let mut sent = 0;
    while !set.health()[0].ejected {
        assert!(sent < 20, "never ejected: {:?}", set.health());
        let response = set.complete(request("m")).await.unwrap();
        assert_eq!(response.message.text(), "good");
        sent += 1;
        // Several probes answer between two requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(engine_stuck.calls(), 2, "ejected by its second failure");
}

#[tokio::test]
async fn only_probes_that_fail_in_a_row_eject() {
    let flaky = Fake::listing("flaky", Some(vec!["m"]));
    let connection = Some(ErrorKind::Connection);
    // Every other probe fails: never two in a row.
    flaky.script_listings(&[
        connection.clone(),
        None,
        connection.clone(),
        None,
        connection.clone(),
        None,
    ]);
    let set = replica_set(&[&flaky], probing_every(Duration::from_millis(10), 2));
    while flaky.listings() < 6 {
        assert!(!set.health()[0].ejected, "{:?}", set.health());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!set.health()[0].ejected, "{:?}", set.health());
    // Then two in a row.
    flaky.script_listings(&[connection.clone(), connection]);
    until_ejected(&set, 0).await;
    assert_eq!(flaky.calls(), 0);
}

#[tokio::test]
async fn a_rested_replica_that_answers_its_probe_with_a_refusal_is_readmitted() {
    // Its server answers, but will not list models (a proxy that only
    // passes chat, a key without that right): a refusal is still an answer.
    let guarded = Fake::listing("guarded", Some(vec!["m"]));
    // More refusals than the trials the test can wait for.
    guarded.script_listings(&vec![Some(ErrorKind::NotFound); 1000]);
    guarded.set_default(Reply::Fail(ErrorKind::Connection));
    let good = Fake::listing("good", Some(vec!["m"]));
    let set = replica_set(
        &[&guarded, &good],
        HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_millis(30),
            probe: true,
            probe_interval: None,
        },
    );
    while !set.health()[0].ejected {
        set.complete(request("m")).await.unwrap();
    }
    guarded.set_default(answer("guarded"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while set.health()[0].ejected {
        assert!(std::time::Instant::now() < deadline, "never readmitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(guarded.listings() > 0);
}

#[tokio::test]
async fn a_probe_from_before_an_ejection_does_not_count_after_the_readmission() {
    let held = Controlled::new(
        Fake::scripted(
            "held",
            vec![Reply::Fail(ErrorKind::Connection)],
            answer("held"),
        ),
        false,
        true,
    );
    let set = ReplicaSet::new(
        "gpu-box",
        vec![Arc::clone(&held) as Arc<dyn Provider>],
        HealthSettings {
            eject_after_failures: 1,
            cooldown: Duration::from_millis(30),
            probe: false,
            // Long enough that the first probe is still waiting below.
            probe_interval: Some(Duration::from_secs(5)),
        },
    );
    // The first probe has started (and waits).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while held.listings.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no probe started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A failed request ejects it; a trial probe readmits it.
    assert!(set.complete(request("m")).await.is_err());
    assert!(set.health()[0].ejected);
    while set.health()[0].ejected {
        assert!(std::time::Instant::now() < deadline, "never readmitted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now the first probe fails: it started before, so it does not count.
    // (Had it ejected the replica, a trial probe, a third model list, would
    // soon readmit it: the count shows it.)
    let listings = held.listings.load(Ordering::SeqCst);
    held.release.notify_one();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!set.health()[0].ejected, "{:?}", set.health());
    assert_eq!(set.health()[0].consecutive_failures, 0);
    assert_eq!(
        held.listings.load(Ordering::SeqCst),
        listings,
        "the stale probe ejected it"
    );
}

#[tokio::test]
async fn probes_stop_when_the_set_is_dropped_even_with_a_stream_open() {
    let holding = Fake::listing("holding", Some(vec!["m"]));
    holding.set_default(Reply::Hold);
    let set = replica_set(&[&holding], probing_every(Duration::from_millis(10), 3));
    let stream = set.stream(request("m")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while holding.listings() == 0 {
        assert!(std::time::Instant::now() < deadline, "never probed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(set);
    // At most one more round of probes after the drop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after_drop = holding.listings();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(holding.listings(), after_drop, "probing went on");
    drop(stream);
}

#[tokio::test]
async fn requests_waiting_on_a_replica_move_on_when_it_is_ejected() {
    let stuck: Arc<dyn Provider> = Arc::new(Unanswering);
    let also_stuck: Arc<dyn Provider> = Arc::new(Unanswering);
    let good = Fake::listing("good", Some(vec!["m"]));
    let set = pool(
        vec![
            Arc::clone(&stuck),
            Arc::clone(&also_stuck),
            Arc::clone(&good) as Arc<dyn Provider>,
        ],
        probing_every(Duration::from_millis(50), 2),
    );
    // Sent before any probe ran, in this order: a stream to the first
    // stuck replica (ties go to the first), a whole answer to the second
    // (the next in rotation with none outstanding), and a third to the
    // good one, the only replica with nothing outstanding.
    let streamed = {
        let set = Arc::clone(&set);
        tokio::spawn(async move {
            let stream = set.stream(request("m")).await?;
            collect_stream("gpu-box", stream).await
        })
    };
    let whole = |set: Arc<ReplicaSet>| async move { set.complete(request("m")).await };
    let second = tokio::spawn(whole(Arc::clone(&set)));
    let third = tokio::spawn(whole(Arc::clone(&set)));
    tokio::task::yield_now().await;
    assert_eq!(outstanding(&set), [1, 1, 0]);
    // Once probes eject the stuck replicas, each waiting request moves to
    // the good one.
    for handle in [streamed, second, third] {
        let answer = tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("a request still waits on an ejected replica")
            .unwrap()
            .unwrap();
        assert_eq!(answer.message.text(), "good");
    }
    assert!(set.health()[0].ejected && set.health()[1].ejected);
    assert_eq!(outstanding(&set), [0, 0, 0]);
    assert_eq!(good.calls(), 3);
}

/// A replica whose answers and model lists the test holds back or fails
/// at will.
#[derive(Debug)]
struct Controlled {
    /// Answers its requests.
    chat: Arc<Fake>,
    /// Whether its requests wait for `release` before being answered.
    requests_wait: bool,
    /// Whether its first model list waits for `release`, then fails.
    first_listing_waits: bool,
    release: tokio::sync::Notify,
    listings: AtomicUsize,
    /// Whether its model lists fail (from now on).
    listing_fails: std::sync::atomic::AtomicBool,
}

impl Controlled {
    fn new(chat: Arc<Fake>, requests_wait: bool, first_listing_waits: bool) -> Arc<Self> {
        Arc::new(Self {
            chat,
            requests_wait,
            first_listing_waits,
            release: tokio::sync::Notify::new(),
            listings: AtomicUsize::new(0),
            listing_fails: Default::default(),
        })
    }
}

#[async_trait]
impl Provider for Controlled {
    fn name(&self) -> &str {
        "controlled"
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        self.chat.capabilities(model)
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        if self.requests_wait {
            self.release.notified().await;
        }
        self.chat.stream(request).await
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        if self.requests_wait {
            self.release.notified().await;
        }
        self.chat.complete(request).await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let first = self.listings.fetch_add(1, Ordering::SeqCst) == 0;
        if first && self.first_listing_waits {
            self.release.notified().await;
            return Err(LlmError::new(ErrorKind::Connection, "controlled", "gone"));
        }
        if self.listing_fails.load(Ordering::SeqCst) {
            return Err(LlmError::new(ErrorKind::Connection, "controlled", "down"));
        }
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn a_request_with_nowhere_else_to_go_keeps_waiting_on_an_ejected_replica() {
    let gated = Controlled::new(Fake::new("gated", answer("gated")), true, false);
    let down = Fake::listing("down", None);
    let set = pool(
        vec![
            Arc::clone(&gated) as Arc<dyn Provider>,
            Arc::clone(&down) as Arc<dyn Provider>,
        ],
        probing_every(Duration::from_millis(20), 1),
    );
    until_ejected(&set, 1).await;
    let waiting = waiting_on_the_first_replica(&set).await;
    // Its replica's probes now fail too: ejected, but the other is out as
    // well, so the request is not dropped.
    gated.listing_fails.store(true, Ordering::SeqCst);
    until_ejected(&set, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the request was dropped");
    gated.release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.message.text(), "gated");
    assert_eq!(down.calls(), 0);
}

#[tokio::test]
async fn a_stranded_request_moves_to_a_replica_once_it_is_readmitted() {
    let gated = Controlled::new(Fake::new("gated", answer("gated")), true, false);
    // Its first three model lists fail: ejected by the first, its trials
    // (every 100 ms) fail twice more, then it is readmitted.
    let back = Fake::listing("back", Some(vec!["m"]));
    let connection = Some(ErrorKind::Connection);
    back.script_listings(&[connection.clone(), connection.clone(), connection]);
    let set = pool(
        vec![
            Arc::clone(&gated) as Arc<dyn Provider>,
            Arc::clone(&back) as Arc<dyn Provider>,
        ],
        HealthSettings {
            cooldown: Duration::from_millis(100),
            ..probing_every(Duration::from_millis(20), 1)
        },
    );
    until_ejected(&set, 1).await;
    let waiting = waiting_on_the_first_replica(&set).await;
    // Its replica stops answering while the other is still out: it waits,
    // and moves once the other is back.
    gated.listing_fails.store(true, Ordering::SeqCst);
    until_ejected(&set, 0).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the request was not woken when a replica came back")
        .unwrap()
        .unwrap();
    assert_eq!(answer.message.text(), "back");
    assert_eq!(back.calls(), 1);
}

#[tokio::test]
async fn a_request_sent_while_every_replica_is_out_moves_once_one_is_back() {
    // Stuck for good: its requests never end, its model list fails.
    let stuck = Controlled::new(Fake::new("stuck", answer("stuck")), true, false);
    stuck.listing_fails.store(true, Ordering::SeqCst);
    let back = Fake::listing("back", Some(vec!["m"]));
    let set = pool(
        vec![
            Arc::clone(&stuck) as Arc<dyn Provider>,
            Arc::clone(&back) as Arc<dyn Provider>,
        ],
        HealthSettings {
            cooldown: Duration::from_millis(500),
            ..probing_every(Duration::from_millis(20), 1)
        },
    );
    until_ejected(&set, 0).await;
    // The other goes out after it (its next model list fails), so the stuck
    // one has been out longest and takes the request (well before either
    // one's trial, half a second after its ejection).
    back.script_listings(&[Some(ErrorKind::Connection)]);
    until_ejected(&set, 1).await;
    let waiting = waiting_on_the_first_replica(&set).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the request stayed on the stuck replica")
        .unwrap()
        .unwrap();
    assert_eq!(answer.message.text(), "back");
}

/// llama.cpp's server lists its models while it is still loading one, and
/// answers 503 "Loading model" at `GET /health` until it can answer: a
/// replica of a `llamacpp` pool whose health says so is taken out by the
/// probes and gets no client request, and comes back once it is ready.
#[tokio::test]
async fn a_llama_server_still_loading_its_model_is_kept_out_until_ready() {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use freehold_llm::config::ProviderConfig;
    use freehold_llm::presets::ProviderKind;
    use freehold_test_support::{MockServer, Scripted};

    let completion = |text: &str| {
        Scripted::json(
            200,
            serde_json::json!({
                "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }),
        )
    };
    let llama_server = |name: &'static str, loading: Arc<AtomicBool>| {
        move |request: &freehold_test_support::Recorded| match request.uri.as_str() {
            "/v1/models" => Scripted::json(200, serde_json::json!({"data": [{"id": "m"}]})),
            "/health" if loading.load(Ordering::SeqCst) => Scripted::json(
                503,
                serde_json::json!({"error": {"code": 503, "message": "Loading model",
                                             "type": "unavailable_error"}}),
            ),
            "/health" => Scripted::json(200, serde_json::json!({"status": "ok"})),
            _ => completion(name),
        }
    };
    let loading = Arc::new(AtomicBool::new(true));
    let slow = MockServer::answering(llama_server("slow", Arc::clone(&loading))).await;
    let ready =
        MockServer::answering(llama_server("ready", Arc::new(AtomicBool::new(false)))).await;
    let health = HealthSettings {
        eject_after_failures: 1,
        cooldown: Duration::from_millis(50),
        probe: true,
        probe_interval: Some(Duration::from_millis(50)),
    };
    let pool = ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_urls: vec![format!("{}/v1", slow.url()), format!("{}/v1", ready.url())],
        ..ProviderConfig::default()
    }
    .resolve("llamacpp")
    .unwrap()
    .build(&health)
    .unwrap();
    // The probes find it loading: out of rotation.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pool
        .replica_health()
        .first()
        .is_some_and(|replica| replica.ejected)
    {
        assert!(
            Instant::now() < deadline,
            "never taken out: {:?}",
            pool.replica_health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked_health = |server: &MockServer| {
        server
            .requests()
            .iter()
            .filter(|request| request.uri == "/health")
            .count()
    };
    assert!(asked_health(&slow) > 0);
    for _ in 0..6 {
        let answer = pool.complete(request("m")).await.unwrap();
        assert_eq!(answer.message.text(), "ready");
    }
    let chats = |server: &MockServer| {
        server
            .requests()
            .iter()
            .filter(|request| request.uri == "/v1/chat/completions")
            .count()
    };
    assert_eq!(chats(&slow), 0, "a client request went to a loading server");
    // Loaded: readmitted, and answering again.
    loading.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool
        .replica_health()
        .first()
        .is_some_and(|replica| replica.ejected)
    {
        assert!(
            Instant::now() < deadline,
            "never readmitted: {:?}",
            pool.replica_health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered_by = Vec::new();
    for _ in 0..6 {
        answered_by.push(pool.complete(request("m")).await.unwrap().message.text());
    }
    assert!(
        answered_by.iter().any(|text| text == "slow"),
        "{answered_by:?}"
    );
}

/// Only servers whose dialect says so are asked their health, and one
/// without a health endpoint (404) is ready when it lists its models.
#[tokio::test]
async fn health_is_asked_only_of_servers_that_have_it() {
    use freehold_llm::config::ProviderConfig;
    use freehold_llm::presets::ProviderKind;
    use freehold_test_support::{MockServer, Scripted};

    let server = |health: u16| {
        move |request: &freehold_test_support::Recorded| match request.uri.as_str() {
            "/v1/models" => Scripted::json(200, serde_json::json!({"data": [{"id": "m"}]})),
            _ => Scripted::json(health, serde_json::json!({"error": "no"})),
        }
    };
    let probe = |name: &str, url: String| {
        ProviderConfig {
            kind: Some(ProviderKind::Openai),
            base_url: Some(format!("{url}/v1")),
            // As a replica's: a probe is not retried.
            max_retries: Some(0),
            ..ProviderConfig::default()
        }
        .resolve(name)
        .unwrap()
        .build(&HealthSettings::default())
        .unwrap()
    };
    // A llama.cpp server without the endpoint (an older one, a proxy).
    let without = MockServer::answering(server(404)).await;
    probe("llamacpp", without.url())
        .check_ready()
        .await
        .unwrap();
    assert_eq!(without.requests().len(), 2, "the list, then /health");
    // Another server is not asked, whatever its health would say.
    let other = MockServer::answering(server(503)).await;
    probe("box", other.url()).check_ready().await.unwrap();
    assert_eq!(other.requests().len(), 1, "only the list");
    // A llama.cpp server whose health fails is not ready.
    let failing = MockServer::answering(server(500)).await;
    let error = probe("llamacpp", failing.url())
        .check_ready()
        .await
        .unwrap_err();
    assert_eq!(error.status, Some(500), "{error}");
}
