//! One [`Provider`] in front of many: `provider:model` names, aliases,
//! fallback chains, the model catalog and cost.
//!
//! A request's `model` is either `provider:model`, split at the first `:`
//! (`ollama:qwen3:8b` is model `qwen3:8b` of provider `ollama`), or an alias
//! from the configuration. An alias names one model or a fallback chain of
//! them, and may name other aliases:
//!
//! ```toml
//! [aliases]
//! fast = "ollama:qwen3:8b"
//! smart = ["anthropic:claude-sonnet-4-5", "openai:gpt-5", "fast"]
//! ```
//!
//! When a target of a chain fails with a retryable error (overloaded, rate
//! limited, server, timeout, connection) before its first answer event, the
//! next target gets the request; other errors, and errors after the answer
//! started, go to the caller. Embeddings ([`Router::embed_routed`]) route
//! and fall back the same way. Each provider may itself be a
//! [`crate::balance::ReplicaSet`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use freehold_llm::catalog::Catalog;
//! use freehold_llm::router::{AliasTarget, Router, Target};
//!
//! let aliases = BTreeMap::from([("fast".to_owned(), AliasTarget::One("ollama:qwen3:8b".into()))]);
//! let router = Router::new(BTreeMap::new(), aliases, Catalog::new());
//! // No provider is configured, so the alias cannot resolve.
//! assert!(router.resolve("fast").is_err());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use freehold_protocol::{
    AppliedContextEdit, Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse,
    ErrorKind, LlmError, ModelInfo, StreamEvent, Usage,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::balance::{HealthSettings, first_content};
use crate::catalog::{Catalog, Pricing};
use crate::context_edit::ContextEdits;
use crate::cost::cost;
use crate::provider::{EventStream, Provider};

/// The name the router reports as its own.
const ROUTER: &str = "router";

/// What an alias stands for, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AliasTarget {
    /// One model (`provider:model`) or another alias.
    One(String),
    /// A fallback chain, tried in order.
    Chain(Vec<String>),
}

impl AliasTarget {
    /// The names it lists, in order.
    pub fn names(&self) -> &[String] {
        match self {
            Self::One(name) => std::slice::from_ref(name),
            Self::Chain(names) => names,
        }
    }
}

/// One concrete model of one configured provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The configured provider name.
    pub provider: String,
    /// The model id at that provider.
    pub model: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.model)
    }
}

/// The router's configuration (`[router]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// Consecutive failures that eject a replica (0: never).
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// Seconds an ejected replica rests before it is tried again.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// Whether a rested replica is tried by a background probe (its model
    /// list) instead of a client request.
    #[serde(default)]
    pub probe_ejected: bool,
    /// Seconds between probes (model lists) of each replica in rotation
    /// (0: none); probes that fail or go unanswered in a row eject a
    /// replica. Implies `probe_ejected`. Unset, the command decides
    /// ([`RouterSettings::health`]): the gateway probes, other commands do
    /// not.
    #[serde(default)]
    pub probe_interval_secs: Option<u64>,
}

fn default_eject_after_failures() -> u32 {
    HealthSettings::default().eject_after_failures
}

fn default_cooldown_secs() -> u64 {
    HealthSettings::default().cooldown.as_secs()
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            eject_after_failures: default_eject_after_failures(),
            cooldown_secs: default_cooldown_secs(),
            probe_ejected: false,
            probe_interval_secs: None,
        }
    }
}

impl RouterSettings {
    /// The replicas' health settings, probing every `default_interval` when
    /// `probe_interval_secs` is unset (a long-running gateway passes
    /// [`RouterSettings::GATEWAY_PROBE_INTERVAL`]; other commands `None`,
    /// so that they send nothing to pools they do not use).
    pub fn health(&self, default_interval: Option<Duration>) -> HealthSettings {
        let interval = match self.probe_interval_secs {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => default_interval,
        };
        HealthSettings {
            eject_after_failures: self.eject_after_failures,
            cooldown: Duration::from_secs(self.cooldown_secs),
            probe: self.probe_ejected,
            probe_interval: interval,
        }
    }

    /// How often the gateway probes each replica in rotation when the
    /// configuration does not say: without probes a replica that accepts
    /// connections and never answers is never ejected.
    pub const GATEWAY_PROBE_INTERVAL: Duration = Duration::from_secs(10);
}

impl From<&RouterSettings> for HealthSettings {
    /// [`RouterSettings::health`] with no probes unless configured.
    fn from(settings: &RouterSettings) -> Self {
        settings.health(None)
    }
}

impl From<RouterSettings> for HealthSettings {
    fn from(settings: RouterSettings) -> Self {
        Self::from(&settings)
    }
}

/// Routes each request to a configured provider by model name.
#[derive(Debug)]
pub struct Router {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    aliases: BTreeMap<String, AliasTarget>,
    catalog: Catalog,
    prices: PriceCache,
}

/// The prices [`Router::cost_of`] found, by provider and model: a gateway
/// prices every request, and a model the catalog does not list by its exact
/// key costs a scan of every entry to look up.
#[derive(Debug, Default)]
struct PriceCache {
    by_provider: std::sync::RwLock<HashMap<String, HashMap<String, Option<Pricing>>>>,
}

impl PriceCache {
    /// Models remembered at most; clients choose model names, so the
    /// cache must not grow without bound: past it, it starts empty again.
    const MAX_MODELS: usize = 4096;

    fn get_or_find(
        &self,
        provider: &str,
        model: &str,
        find: impl FnOnce() -> Option<Pricing>,
    ) -> Option<Pricing> {
        // A poisoned lock only means another thread panicked mid-insert;
        // the map itself is still whole.
        let cached = self
            .by_provider
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(provider)
            .and_then(|models| models.get(model).copied());
        if let Some(pricing) = cached {
            return pricing;
        }
        let pricing = find();
        let mut map = self
            .by_provider
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Full (clients inventing names, say): start again rather than stop
        // remembering, so that the models in use are soon cached again.
        if map.values().map(HashMap::len).sum::<usize>() >= Self::MAX_MODELS {
            map.clear();
        }
        map.entry(provider.to_owned())
            .or_default()
            .insert(model.to_owned(), pricing);
        pricing
    }
}

impl Router {
    /// A router over `providers` (by configured name) with `aliases`.
    /// Call [`Router::validate`] to check every alias at start-up.
    pub fn new(
        providers: BTreeMap<String, Arc<dyn Provider>>,
        aliases: BTreeMap<String, AliasTarget>,
        catalog: Catalog,
    ) -> Self {
        Self {
            providers,
            aliases,
            catalog,
            prices: PriceCache::default(),
        }
    }

    /// Checks that every alias resolves.
    ///
    /// # Errors
    /// The first alias that does not: a cycle, an empty chain, or a name that
    /// is neither an alias nor `provider:model` of a configured provider.
    pub fn validate(&self) -> Result<(), LlmError> {
        for alias in self.aliases.keys() {
            self.resolve(alias)?;
        }
        Ok(())
    }

    /// The targets `name` stands for, in the order to try them, each once.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown provider or a bare name that is
    /// no alias (the message lists the providers and aliases);
    /// [`ErrorKind::InvalidRequest`] for an alias cycle, an empty chain or an
    /// empty model id.
    pub fn resolve(&self, name: &str) -> Result<Vec<Target>, LlmError> {
        let mut targets = Vec::new();
        self.expand(name, &mut Vec::new(), &mut targets)?;
        let mut unique: Vec<Target> = Vec::with_capacity(targets.len());
        for target in targets {
            if !unique.contains(&target) {
                unique.push(target);
            }
        }
        Ok(unique)
    }

    /// The model catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The configured providers, by name.
    pub fn providers(&self) -> &BTreeMap<String, Arc<dyn Provider>> {
        &self.providers
    }

    /// The configured aliases, by name.
    pub fn aliases(&self) -> &BTreeMap<String, AliasTarget> {
        &self.aliases
    }

    /// What `usage` cost on `model` of provider `provider`, in USD; `None`
    /// when the catalog does not know its price.
    pub fn cost_of(&self, provider: &str, model: &str, usage: &Usage) -> Option<f64> {
        let pricing = self.prices.get_or_find(provider, model, || {
            self.catalog
                .lookup(provider, model)
                .and_then(|entry| entry.pricing)
        });
        cost(usage, pricing.as_ref())
    }

    /// Streams an answer like [`Provider::stream`] and says which target
    /// gave it (for cost accounting).
    ///
    /// # Errors
    /// A resolution error, a non-retryable error, or the last target's error.
    pub async fn stream_routed(
        &self,
        request: ChatRequest,
    ) -> Result<(Target, EventStream), LlmError> {
        let targets = self.resolve(&request.model)?;
        self.stream_on(targets, request).await
    }

    /// [`Self::stream_routed`] over `targets` (a route narrowed by the
    /// caller, say to its local members) instead of `request.model`'s.
    ///
    /// # Errors
    /// A non-retryable error, or the last target's error.
    pub async fn stream_on(
        &self,
        targets: Vec<Target>,
        request: ChatRequest,
    ) -> Result<(Target, EventStream), LlmError> {
        let name = request.model.clone();
        let last = targets.len().saturating_sub(1);
        let mut last_error = None;
        for (attempt, (target, request)) in TargetRequests::new(targets, request).enumerate() {
            let provider = self.provider(&target)?;
            let call = async {
                let (request, edits) = with_context_edits(provider, request).await?;
                let stream = provider.stream(request).await?;
                Ok(report_context_edits(stream, edits))
            };
            let result = match with_fallback_after(attempt < last, call).await {
                Ok(stream) if attempt < last => first_content(stream, &target.provider).await,
                other => other,
            };
            match result {
                Ok(stream) => {
                    answered(&name, &target, attempt);
                    return Ok((target, stream));
                }
                Err(error) if error.is_retryable() && attempt < last => {
                    falling_back(&name, &target, &error);
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| self.unknown(&name)))
    }

    /// A complete answer like [`Provider::complete`], and the target that
    /// gave it.
    ///
    /// # Errors
    /// A resolution error, a non-retryable error, or the last target's error.
    pub async fn complete_routed(
        &self,
        request: ChatRequest,
    ) -> Result<(Target, ChatResponse), LlmError> {
        let targets = self.resolve(&request.model)?;
        self.complete_on(targets, request).await
    }

    /// [`Self::complete_routed`] over `targets` instead of
    /// `request.model`'s.
    ///
    /// # Errors
    /// A non-retryable error, or the last target's error.
    pub async fn complete_on(
        &self,
        targets: Vec<Target>,
        request: ChatRequest,
    ) -> Result<(Target, ChatResponse), LlmError> {
        let name = request.model.clone();
        self.whole(&name, targets, request, |provider, request| async move {
            let (request, edits) = with_context_edits(&provider, request).await?;
            let mut response = provider.complete(request).await?;
            if !edits.is_empty() {
                response.context_edits = edits;
            }
            Ok(response)
        })
        .await
    }

    /// Embeddings like [`Provider::embed`], and the target that gave them.
    /// `request.model` resolves like a chat model (`provider:model` or an
    /// alias), and a fallback chain moves to its next target on a
    /// retryable error, as for chat.
    ///
    /// # Errors
    /// A resolution error, a non-retryable error (a provider without
    /// embeddings says so), or the last target's error.
    pub async fn embed_routed(
        &self,
        request: EmbedRequest,
    ) -> Result<(Target, EmbedResponse), LlmError> {
        let targets = self.resolve(&request.model)?;
        self.embed_on(targets, request).await
    }

    /// [`Self::embed_routed`] over `targets` instead of `request.model`'s.
    ///
    /// # Errors
    /// A non-retryable error, or the last target's error.
    pub async fn embed_on(
        &self,
        targets: Vec<Target>,
        request: EmbedRequest,
    ) -> Result<(Target, EmbedResponse), LlmError> {
        let name = request.model.clone();
        self.whole(&name, targets, request, |provider, request| async move {
            provider.embed(request).await
        })
        .await
    }

    /// Counts `request`'s input tokens like [`Provider::count_input_tokens`]
    /// on the target that would answer it, and says which target that was.
    /// A fallback chain moves to its next target on a retryable error, as
    /// for chat; `None` means that target cannot count.
    ///
    /// # Errors
    /// A resolution error, a non-retryable error, or the last target's error.
    pub async fn count_input_tokens_routed(
        &self,
        request: ChatRequest,
    ) -> Result<(Target, Option<u64>), LlmError> {
        let targets = self.resolve(&request.model)?;
        self.count_input_tokens_on(targets, request).await
    }

    /// [`Self::count_input_tokens_routed`] over `targets` instead of
    /// `request.model`'s.
    ///
    /// # Errors
    /// A non-retryable error, or the last target's error.
    pub async fn count_input_tokens_on(
        &self,
        targets: Vec<Target>,
        request: ChatRequest,
    ) -> Result<(Target, Option<u64>), LlmError> {
        let name = request.model.clone();
        self.whole(&name, targets, request, |provider, request| {
            // Counted as the model would read it: after the context edits.
            async move {
                let (request, _) = with_context_edits(&provider, request).await?;
                provider.count_input_tokens(request).await
            }
        })
        .await
    }

    /// Tries `targets` (those of the model `name`) in order with `request`,
    /// addressed to each in turn, for an answer that comes whole, falling
    /// back on retryable errors.
    async fn whole<R, T, F, Fut>(
        &self,
        name: &str,
        targets: Vec<Target>,
        request: R,
        call: F,
    ) -> Result<(Target, T), LlmError>
    where
        R: Addressed,
        F: Fn(Arc<dyn Provider>, R) -> Fut,
        Fut: std::future::Future<Output = Result<T, LlmError>>,
    {
        let last = targets.len().saturating_sub(1);
        let mut last_error = None;
        for (attempt, (target, request)) in TargetRequests::new(targets, request).enumerate() {
            let provider = Arc::clone(self.provider(&target)?);
            match with_fallback_after(attempt < last, call(provider, request)).await {
                Ok(answer) => {
                    answered(name, &target, attempt);
                    return Ok((target, answer));
                }
                Err(error) if error.is_retryable() && attempt < last => {
                    falling_back(name, &target, &error);
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| self.unknown(name)))
    }

    fn provider(&self, target: &Target) -> Result<&Arc<dyn Provider>, LlmError> {
        self.providers
            .get(&target.provider)
            .ok_or_else(|| self.unknown(&target.to_string()))
    }

    /// Appends the targets of `name` to `out`; `stack` holds the aliases
    /// being expanded, to catch cycles.
    fn expand(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        out: &mut Vec<Target>,
    ) -> Result<(), LlmError> {
        let Some(alias) = self.aliases.get(name) else {
            out.push(self.parse(name, stack.last().map(String::as_str))?);
            return Ok(());
        };
        if let Some(position) = stack.iter().position(|seen| seen == name) {
            let mut cycle = stack[position..].to_vec();
            cycle.push(name.to_owned());
            return Err(LlmError::new(
                ErrorKind::InvalidRequest,
                ROUTER,
                format!(
                    "the aliases form a cycle: {}; make one of them name `provider:model`",
                    cycle.join(" -> ")
                ),
            ));
        }
        if alias.names().is_empty() {
            return Err(LlmError::new(
                ErrorKind::InvalidRequest,
                ROUTER,
                format!("alias `{name}` lists no models; give it at least one `provider:model`"),
            ));
        }
        stack.push(name.to_owned());
        for next in alias.names() {
            self.expand(next, stack, out)?;
        }
        stack.pop();
        Ok(())
    }

    /// Parses `provider:model`; `alias` is the alias that named it, if any.
    fn parse(&self, name: &str, alias: Option<&str>) -> Result<Target, LlmError> {
        let context = alias
            .map(|alias| format!(" (named by alias `{alias}`)"))
            .unwrap_or_default();
        let Some((provider, model)) = name.split_once(':') else {
            return Err(LlmError::new(
                ErrorKind::NotFound,
                ROUTER,
                format!(
                    "unknown model `{name}`{context}: it is no alias, and models are named \
                     `provider:model`; {}",
                    self.known()
                ),
            ));
        };
        if !self.providers.contains_key(provider) {
            return Err(LlmError::new(
                ErrorKind::NotFound,
                ROUTER,
                format!(
                    "unknown provider `{provider}` in `{name}`{context}; {}",
                    self.known()
                ),
            ));
        }
        if model.is_empty() {
            return Err(LlmError::new(
                ErrorKind::InvalidRequest,
                ROUTER,
                format!("`{name}`{context} names no model; use `{provider}:<model>`"),
            ));
        }
        Ok(Target {
            provider: provider.to_owned(),
            model: model.to_owned(),
        })
    }

    fn unknown(&self, name: &str) -> LlmError {
        LlmError::new(
            ErrorKind::NotFound,
            ROUTER,
            format!("unknown model `{name}`; {}", self.known()),
        )
    }

    /// The configured providers and aliases, for error messages.
    fn known(&self) -> String {
        let list = |names: Vec<&str>| {
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        };
        format!(
            "configured providers: {}; aliases: {}; use `provider:model` (such as \
             `ollama:qwen3:8b`) or an alias",
            list(self.providers.keys().map(String::as_str).collect()),
            list(self.aliases.keys().map(String::as_str).collect()),
        )
    }
}

#[async_trait]
impl Provider for Router {
    fn name(&self) -> &str {
        ROUTER
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        self.resolve(model)
            .ok()
            .and_then(|targets| {
                let target = targets.into_iter().next()?;
                let provider = self.providers.get(&target.provider)?;
                Some(provider.capabilities(&target.model))
            })
            .unwrap_or_default()
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        self.stream_routed(request).await.map(|(_, stream)| stream)
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        self.complete_routed(request)
            .await
            .map(|(_, response)| response)
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        self.embed_routed(request)
            .await
            .map(|(_, response)| response)
    }

    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        self.count_input_tokens_routed(request)
            .await
            .map(|(_, tokens)| tokens)
    }

    /// Every provider's models, as `provider` = the configured name, with
    /// context windows from the catalog where the provider gives none. A
    /// provider that fails is skipped with a warning; only when every
    /// provider fails is the first error returned.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let answers = futures::future::join_all(
            self.providers
                .iter()
                .map(|(name, provider)| async move { (name, provider.list_models().await) }),
        )
        .await;
        let mut models = Vec::new();
        let mut first_error = None;
        let mut answered = false;
        for (name, answer) in answers {
            match answer {
                Ok(listed) => {
                    answered = true;
                    for mut model in listed {
                        model.provider.clone_from(name);
                        if let Some(entry) = self.catalog.lookup(name, &model.id) {
                            model.context_window = model.context_window.or(entry.context_window);
                            model.max_output_tokens =
                                model.max_output_tokens.or(entry.max_output_tokens);
                        }
                        models.push(model);
                    }
                }
                Err(error) => {
                    tracing::warn!(provider = %name, error = %error, "cannot list models; skipping");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !answered => Err(error),
            _ => Ok(models),
        }
    }
}

/// `request` addressed to `target`'s model.
/// Runs a provider call, telling its HTTP client when another target comes
/// after it ([`crate::http::fallback_follows`]): such a call is not retried
/// with backoff (a 429's `Retry-After` could hold a chain up for minutes),
/// since the next target is tried at once instead.
async fn with_fallback_after<F: std::future::Future>(follows: bool, call: F) -> F::Output {
    crate::http::FALLBACK_FOLLOWS.scope(follows, call).await
}

/// A request that names its model, and so can be addressed to a target's.
trait Addressed: Clone {
    fn set_model(&mut self, model: &str);
}

impl Addressed for ChatRequest {
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
}

impl Addressed for EmbedRequest {
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
}

/// A caller's request, addressed to each target of a route in turn: a copy
/// for every target a fallback may follow, the request itself for the last
/// one (a coding agent's request is tens of kilobytes of conversation and
/// tool schemas, and most routes have one target). Copies are made as the
/// targets are tried, not before.
struct TargetRequests<R> {
    targets: std::vec::IntoIter<Target>,
    request: Option<R>,
}

impl<R: Addressed> TargetRequests<R> {
    fn new(targets: Vec<Target>, request: R) -> Self {
        Self {
            targets: targets.into_iter(),
            request: Some(request),
        }
    }
}

impl<R: Addressed> Iterator for TargetRequests<R> {
    type Item = (Target, R);

    fn next(&mut self) -> Option<(Target, R)> {
        let target = self.targets.next()?;
        let mut request = if self.targets.len() == 0 {
            self.request.take()?
        } else {
            self.request.clone()?
        };
        request.set_model(&target.model);
        Some((target, request))
    }
}

/// `request` as `provider` gets it: when it asks for Anthropic's context
/// edits and the provider does not make them itself, made here first
/// ([`crate::context_edit`]), and what they cleared. A trigger in input
/// tokens is measured by the provider's own count where it has one, and
/// estimated otherwise.
///
/// # Errors
/// An edit of a kind this version cannot make, or a `context_management`
/// that is not what the API takes, as an invalid request.
async fn with_context_edits(
    provider: &Arc<dyn Provider>,
    mut request: ChatRequest,
) -> Result<(ChatRequest, Vec<AppliedContextEdit>), LlmError> {
    if provider.makes_context_edits() {
        return Ok((request, Vec::new()));
    }
    // The provider is not sent what it would not understand.
    let Some(asked) = request.context_management.take() else {
        return Ok((request, Vec::new()));
    };
    let invalid = |error: crate::context_edit::ContextEditError| {
        LlmError::new(
            ErrorKind::InvalidRequest,
            provider.name(),
            error.to_string(),
        )
    };
    let edits = ContextEdits::parse(&asked).map_err(invalid)?;
    let input_tokens = if edits.needs_input_tokens(&request) {
        match provider.count_input_tokens(request.clone()).await {
            Ok(Some(count)) => count,
            Ok(None) => estimated_input_tokens(provider.as_ref(), &request),
            Err(error) => {
                tracing::debug!(error = %error, "cannot count for context edits; estimating");
                estimated_input_tokens(provider.as_ref(), &request)
            }
        }
    } else {
        0
    };
    let edits = edits.apply(&mut request, input_tokens).map_err(invalid)?;
    if !edits.is_empty() {
        tracing::debug!(edits = ?edits, "context edited");
    }
    Ok((request, edits))
}

/// `request`'s input tokens estimated as `provider` reads them.
fn estimated_input_tokens(provider: &dyn Provider, request: &ChatRequest) -> u64 {
    if provider.capabilities(&request.model).documents {
        request.estimated_input_tokens()
    } else {
        request.estimated_input_tokens_as_notes()
    }
}

/// `stream` with the context edits made for it reported just before its
/// [`StreamEvent::Stop`] ([`StreamEvent::ContextEdited`]), where
/// Anthropic's API reports its own: an event earlier would look like the
/// answer's first content to what waits for that (a fallback, a stream's
/// status line).
fn report_context_edits(stream: EventStream, edits: Vec<AppliedContextEdit>) -> EventStream {
    if edits.is_empty() {
        return stream;
    }
    let mut edits = Some(edits);
    Box::pin(stream.flat_map(move |event| {
        let report = match &event {
            Ok(StreamEvent::Stop { .. }) => edits
                .take()
                .map(|edits| Ok(StreamEvent::ContextEdited { edits })),
            _ => None,
        };
        futures::stream::iter(report.into_iter().chain(std::iter::once(event)))
    }))
}

fn answered(requested: &str, target: &Target, attempt: usize) {
    if attempt == 0 {
        tracing::debug!(requested, target = %target, "routed");
    } else {
        tracing::info!(requested, target = %target, attempt, "answered by a fallback target");
    }
}

fn falling_back(requested: &str, target: &Target, error: &LlmError) {
    tracing::warn!(
        requested,
        target = %target,
        error = %error,
        "target failed before its first token; falling back"
    );
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Names a client invents fill the price cache, which then starts
    /// again: a model in use is looked up once more, then cached again.
    #[test]
    fn the_price_cache_starts_again_when_full() {
        let cache = PriceCache::default();
        let lookups = Cell::new(0);
        let find = || {
            lookups.set(lookups.get() + 1);
            None
        };
        cache.get_or_find("vllm", "real", find);
        cache.get_or_find("vllm", "real", find);
        assert_eq!(lookups.get(), 1);
        for index in 0..PriceCache::MAX_MODELS {
            cache.get_or_find("vllm", &format!("junk-{index}"), || None);
        }
        let cached: usize = cache
            .by_provider
            .read()
            .unwrap()
            .values()
            .map(HashMap::len)
            .sum();
        assert!(cached <= PriceCache::MAX_MODELS, "{cached}");
        cache.get_or_find("vllm", "real", find);
        cache.get_or_find("vllm", "real", find);
        assert_eq!(lookups.get(), 2);
    }

    /// A request that counts its copies.
    struct Counted {
        model: String,
        copies: Rc<Cell<usize>>,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.copies.set(self.copies.get() + 1);
            Self {
                model: self.model.clone(),
                copies: Rc::clone(&self.copies),
            }
        }
    }

    impl Addressed for Counted {
        fn set_model(&mut self, model: &str) {
            model.clone_into(&mut self.model);
        }
    }

    fn targets(models: &[&str]) -> Vec<Target> {
        models
            .iter()
            .map(|model| Target {
                provider: "p".into(),
                model: (*model).into(),
            })
            .collect()
    }

    #[test]
    fn targets_a_fallback_may_follow_get_copies_and_the_last_the_request() {
        let copies = Rc::new(Cell::new(0));
        let request = Counted {
            model: "alias".into(),
            copies: Rc::clone(&copies),
        };
        let mut addressed = TargetRequests::new(targets(&["a", "b", "c"]), request);
        let (target, first) = addressed.next().unwrap();
        assert_eq!((target.model.as_str(), first.model.as_str()), ("a", "a"));
        assert_eq!(copies.get(), 1);
        // Copies are made as targets are tried: none for `c` yet.
        let (_, second) = addressed.next().unwrap();
        assert_eq!((second.model.as_str(), copies.get()), ("b", 2));
        let (_, last) = addressed.next().unwrap();
        assert_eq!((last.model.as_str(), copies.get()), ("c", 2));
        assert!(addressed.next().is_none());

        // One target: the request itself, never copied.
        let alone = TargetRequests::new(targets(&["only"]), last).collect::<Vec<_>>();
        assert_eq!(alone[0].1.model, "only");
        assert_eq!(copies.get(), 2);
    }
}
