//! Load balancing over replicas of one model server, with passive health and,
//! when asked for, background probes of ejected replicas.
//!
//! A [`ReplicaSet`] is a [`Provider`] made of several providers that serve the
//! same models (three vLLM boxes, two Ollama hosts). Each request goes to the
//! healthy replica with the fewest requests outstanding; a request counts
//! until its [`EventStream`] ends or is dropped, or until
//! [`Provider::complete`] (or [`Provider::embed`]) returns.
//!
//! Health is learnt from the traffic itself, with no probing requests of its
//! own: after [`HealthSettings::eject_after_failures`] consecutive failures
//! (connection, timeout, server error, overloaded) a replica is ejected for
//! [`HealthSettings::cooldown`]; then one request is let through, and a
//! success (the first answer event, or a complete answer) readmits it while
//! a failure ejects it again. With [`HealthSettings::probe`], no client request
//! is that trial: a background task asks the rested replica for its model
//! list instead, and only an answer readmits it. Rate limits move a request to another replica
//! but say nothing about health. When every replica is ejected the one
//! ejected longest ago is used rather than failing outright.
//!
//! A retryable failure before the first answer event (anything but
//! [`StreamEvent::Start`]) moves the request to another healthy replica, each
//! replica at most once; once an answer event went to the caller, errors go
//! to the caller too.
//!
//! ```
//! use std::time::Duration;
//! use freehold_llm::balance::HealthSettings;
//!
//! let settings = HealthSettings::default();
//! assert_eq!(settings.eject_after_failures, 3);
//! assert_eq!(settings.cooldown, Duration::from_secs(30));
//! ```

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo, StreamEvent,
};
use futures::{Stream, StreamExt};

use crate::provider::{EventStream, Provider};

/// When a replica is taken out of rotation and let back in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Consecutive failures that eject a replica (0: never eject).
    pub eject_after_failures: u32,
    /// How long an ejected replica rests before it is tried again.
    pub cooldown: Duration,
    /// Whether a rested replica is tried by a background probe (its model
    /// list asked for) rather than with a client request, so that no client
    /// waits on a replica that may still be down. Needs a tokio runtime
    /// when the set is built; without one, trials are client requests.
    pub probe: bool,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(30),
            probe: false,
        }
    }
}

/// The longest a probe waits for a replica's model list.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot of one replica's state, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// The replica's provider name.
    pub name: String,
    /// Requests in flight on it.
    pub outstanding: usize,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Whether it is out of rotation (resting, or waiting for its trial
    /// request to answer).
    pub ejected: bool,
}

/// Replicas serving the same models, balanced by outstanding requests.
#[derive(Debug)]
pub struct ReplicaSet {
    name: String,
    replicas: Vec<Arc<dyn Provider>>,
    shared: Arc<Shared>,
}

impl ReplicaSet {
    /// A set called `name` over `replicas`, all healthy to begin with.
    pub fn new(
        name: impl Into<String>,
        replicas: Vec<Arc<dyn Provider>>,
        settings: HealthSettings,
    ) -> Self {
        let name = name.into();
        let states = replicas.iter().map(|_| ReplicaState::default()).collect();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let probes = settings.probe && runtime.is_some();
        if settings.probe && !probes {
            tracing::warn!(
                replica_set = %name,
                "no async runtime to probe ejected replicas from; client requests are their trials"
            );
        }
        let shared = Arc::new(Shared {
            name: name.clone(),
            settings,
            probes,
            inner: Mutex::new(Inner {
                replicas: states,
                rotation: 0,
            }),
        });
        if let Some(runtime) = runtime.filter(|_| probes) {
            runtime.spawn(probe_ejected(Arc::downgrade(&shared), replicas.clone()));
        }
        Self {
            replicas,
            shared,
            name,
        }
    }

    /// The replicas, in the order given.
    pub fn replicas(&self) -> &[Arc<dyn Provider>] {
        &self.replicas
    }

    /// The health settings.
    pub fn settings(&self) -> &HealthSettings {
        &self.shared.settings
    }

    /// The current state of each replica, in order.
    pub fn health(&self) -> Vec<ReplicaHealth> {
        let now = Instant::now();
        let inner = self.shared.lock();
        self.replicas
            .iter()
            .zip(&inner.replicas)
            .map(|(provider, state)| ReplicaHealth {
                name: provider.name().to_owned(),
                outstanding: state.outstanding,
                consecutive_failures: state.failures,
                ejected: !self.shared.available(state, now),
            })
            .collect()
    }

    fn no_replicas(&self) -> LlmError {
        LlmError::new(
            ErrorKind::InvalidRequest,
            self.name.clone(),
            "this replica set has no replicas; list at least one",
        )
    }

    /// Picks the replica for attempt `attempt`, skipping those in `tried`.
    fn acquire(&self, tried: &[bool], attempt: usize) -> Option<Lease> {
        let lease = self.shared.acquire(tried, attempt == 0)?;
        if attempt > 0 {
            tracing::info!(
                replica_set = %self.name,
                replica = lease.index,
                name = %self.replicas[lease.index].name(),
                attempt,
                "trying another replica"
            );
        }
        Some(lease)
    }

    /// Runs a request whose answer comes whole ([`Provider::complete`],
    /// [`Provider::embed`]) on the best replica, moving to another on a
    /// retryable failure, each replica at most once.
    async fn whole<T, F, Fut>(&self, call: F) -> Result<T, LlmError>
    where
        F: Fn(Arc<dyn Provider>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LlmError>>,
    {
        self.whole_reporting(call, true).await
    }

    /// [`ReplicaSet::whole`]; `success_is_health` says whether a successful
    /// answer shows the replica can serve. A token count does not: most
    /// replicas cannot count and answer without asking their server, and
    /// vLLM counts in its API process even while its engine is stuck. So a
    /// count's success neither readmits an ejected replica nor clears its
    /// failures; its failures (the server unreachable) still count.
    async fn whole_reporting<T, F, Fut>(
        &self,
        call: F,
        success_is_health: bool,
    ) -> Result<T, LlmError>
    where
        F: Fn(Arc<dyn Provider>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LlmError>>,
    {
        let count = self.replicas.len();
        let mut tried = vec![false; count];
        let mut last_error = None;
        for attempt in 0..count {
            let Some(mut lease) = self.acquire(&tried, attempt) else {
                break;
            };
            let index = lease.index;
            tried[index] = true;
            match call(Arc::clone(&self.replicas[index])).await {
                Ok(answer) => {
                    if success_is_health {
                        lease.success();
                    }
                    return Ok(answer);
                }
                Err(error) => {
                    lease.failure(&error.kind);
                    if !error.is_retryable() || tried.iter().all(|tried| *tried) {
                        return Err(error);
                    }
                    tracing::warn!(
                        replica_set = %self.name,
                        replica = index,
                        error = %error,
                        "replica failed"
                    );
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_replicas()))
    }
}

#[async_trait]
impl Provider for ReplicaSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn replica_health(&self) -> Vec<ReplicaHealth> {
        self.health()
    }

    fn capabilities(&self, model: &str) -> Capabilities {
        self.replicas
            .first()
            .map(|replica| replica.capabilities(model))
            .unwrap_or_default()
    }

    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let count = self.replicas.len();
        let mut tried = vec![false; count];
        let mut last_error = None;
        for attempt in 0..count {
            let Some(mut lease) = self.acquire(&tried, attempt) else {
                break;
            };
            let index = lease.index;
            tried[index] = true;
            let replica = &self.replicas[index];
            let may_move = tried.iter().any(|tried| !tried);
            let result = match replica.stream(request.clone()).await {
                Err(error) => {
                    lease.failure(&error.kind);
                    Err(error)
                }
                Ok(stream) => {
                    let tracked: EventStream = Box::pin(Tracked {
                        inner: stream,
                        lease: Some(lease),
                        stopped: false,
                    });
                    if may_move {
                        first_content(tracked, replica.name()).await
                    } else {
                        Ok(tracked)
                    }
                }
            };
            match result {
                Ok(stream) => return Ok(stream),
                Err(error) if error.is_retryable() && may_move => {
                    tracing::warn!(
                        replica_set = %self.name,
                        replica = index,
                        error = %error,
                        "replica failed before its first token"
                    );
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_replicas()))
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        self.whole(|replica| {
            let request = request.clone();
            async move { replica.complete(request).await }
        })
        .await
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, LlmError> {
        self.whole(|replica| {
            let request = request.clone();
            async move { replica.embed(request).await }
        })
        .await
    }

    async fn count_input_tokens(&self, request: ChatRequest) -> Result<Option<u64>, LlmError> {
        self.whole_reporting(
            |replica| {
                let request = request.clone();
                async move { replica.count_input_tokens(request).await }
            },
            false,
        )
        .await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        // Replicas in rotation first: an ejected one may be a dead host
        // whose connection timeout outlasts the caller's patience.
        let order: Vec<usize> = {
            let inner = self.shared.lock();
            let mut order: Vec<usize> = (0..self.replicas.len()).collect();
            order.sort_by_key(|&index| {
                inner
                    .replicas
                    .get(index)
                    .is_some_and(|state| state.ejected_at.is_some())
            });
            order
        };
        let mut last_error = None;
        for replica in order.iter().filter_map(|&index| self.replicas.get(index)) {
            match replica.list_models().await {
                Ok(mut models) => {
                    for model in &mut models {
                        model.provider.clone_from(&self.name);
                    }
                    return Ok(models);
                }
                Err(error) => {
                    tracing::warn!(
                        replica_set = %self.name,
                        error = %error,
                        "replica could not list its models"
                    );
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_replicas()))
    }
}

/// Waits for the first event that is not [`StreamEvent::Start`] and returns
/// the stream with the events read so far put back in front, so that a
/// failure before the answer starts can be retried elsewhere.
///
/// # Errors
/// The stream's error before its first answer event, or a connection error
/// when it ends before one.
pub(crate) async fn first_content(
    mut stream: EventStream,
    provider: &str,
) -> Result<EventStream, LlmError> {
    let mut read = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                let started = !matches!(event, StreamEvent::Start { .. });
                read.push(Ok(event));
                if started {
                    return Ok(Box::pin(futures::stream::iter(read).chain(stream)));
                }
            }
            Some(Err(error)) => return Err(error),
            None => {
                return Err(LlmError::new(
                    ErrorKind::Connection,
                    provider,
                    "the stream ended before the answer started",
                ));
            }
        }
    }
}

/// Whether a failure of this kind says the replica is unwell.
fn is_health_failure(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Server | ErrorKind::Overloaded
    )
}

/// Asks each ejected replica whose cooldown is over for its model list,
/// every tick, until the set is dropped: an answer readmits it, anything
/// else rests it for another cooldown.
async fn probe_ejected(shared: Weak<Shared>, replicas: Vec<Arc<dyn Provider>>) {
    let tick = match shared.upgrade() {
        Some(shared) => {
            (shared.settings.cooldown / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let due: Vec<usize> = {
            let now = Instant::now();
            let cooldown = shared.settings.cooldown;
            let mut inner = shared.lock();
            inner
                .replicas
                .iter_mut()
                .enumerate()
                .filter(|(_, state)| {
                    !state.probing
                        && state
                            .ejected_at
                            .is_some_and(|at| now.saturating_duration_since(at) >= cooldown)
                })
                .map(|(index, state)| {
                    state.probing = true;
                    index
                })
                .collect()
        };
        for index in due {
            let Some(replica) = replicas.get(index) else {
                continue;
            };
            let answered = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, replica.list_models()).await,
                Ok(Ok(_))
            );
            let mut inner = shared.lock();
            let state = &mut inner.replicas[index];
            state.probing = false;
            // A client request may have readmitted it meanwhile (every
            // replica ejected: the one ejected longest ago is used).
            if state.ejected_at.is_none() {
                continue;
            }
            if answered {
                tracing::info!(
                    replica_set = %shared.name,
                    replica = index,
                    "probe: replica answered; readmitting it"
                );
                state.failures = 0;
                state.ejected_at = None;
            } else {
                tracing::debug!(
                    replica_set = %shared.name,
                    replica = index,
                    "probe: replica still down; resting it again"
                );
                state.ejected_at = Some(Instant::now());
            }
        }
    }
}

/// State shared by the set and its leases.
#[derive(Debug)]
struct Shared {
    /// The set's name, for logs.
    name: String,
    settings: HealthSettings,
    /// Whether a background task probes ejected replicas (then no client
    /// request is sent to one while another replica is available).
    probes: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    replicas: Vec<ReplicaState>,
    /// Where the next search starts, so that ties rotate.
    rotation: usize,
}

#[derive(Debug, Default)]
struct ReplicaState {
    outstanding: usize,
    failures: u32,
    /// When it was (last) ejected; `None` while healthy.
    ejected_at: Option<Instant>,
    /// Whether its trial request after a cooldown is under way.
    probing: bool,
}

impl Shared {
    /// Whether a client request may go to `state`'s replica now: a healthy
    /// one, or a rested one whose trial is not under way when client
    /// requests are the trials.
    fn available(&self, state: &ReplicaState, now: Instant) -> bool {
        match state.ejected_at {
            None => true,
            Some(at) => {
                !self.probes
                    && !state.probing
                    && now.saturating_duration_since(at) >= self.settings.cooldown
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a lease on the available untried replica with the fewest
    /// requests outstanding; with none available, and `first`, on the untried
    /// replica ejected longest ago.
    fn acquire(self: &Arc<Self>, tried: &[bool], first: bool) -> Option<Lease> {
        let now = Instant::now();
        let mut inner = self.lock();
        let count = inner.replicas.len();
        if count == 0 {
            return None;
        }
        let start = inner.rotation % count;
        inner.rotation = inner.rotation.wrapping_add(1);
        let mut best: Option<(usize, usize)> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let state = &inner.replicas[index];
            if tried[index] || !self.available(state, now) {
                continue;
            }
            if best.is_none_or(|(_, outstanding)| state.outstanding < outstanding) {
                best = Some((index, state.outstanding));
            }
        }
        let (index, probe) = match best {
            Some((index, _)) => (index, inner.replicas[index].ejected_at.is_some()),
            None if first => {
                let index = (0..count)
                    .filter(|index| !tried[*index])
                    .min_by_key(|index| inner.replicas[*index].ejected_at)?;
                tracing::warn!(
                    replica = index,
                    "every replica is ejected; using the one ejected longest ago"
                );
                (index, false)
            }
            None => return None,
        };
        let state = &mut inner.replicas[index];
        state.outstanding += 1;
        if probe {
            state.probing = true;
        }
        Some(Lease {
            shared: Arc::clone(self),
            index,
            probe,
            succeeded: false,
            failed: false,
        })
    }
}

/// One request's hold on a replica: counted as outstanding until dropped;
/// reports the request's outcome to the replica's health.
#[derive(Debug)]
struct Lease {
    shared: Arc<Shared>,
    index: usize,
    /// Whether this is the trial request after a cooldown.
    probe: bool,
    succeeded: bool,
    failed: bool,
}

impl Lease {
    /// The replica answered: it is healthy again.
    fn success(&mut self) {
        if self.succeeded {
            return;
        }
        self.succeeded = true;
        let mut inner = self.shared.lock();
        let state = &mut inner.replicas[self.index];
        if state.ejected_at.is_some() {
            tracing::info!(
                replica = self.index,
                "replica answered again; readmitting it"
            );
        }
        state.failures = 0;
        state.ejected_at = None;
        if self.probe {
            state.probing = false;
            self.probe = false;
        }
    }

    /// The request failed with `kind`; health failures count towards
    /// ejection, other errors are ignored.
    fn failure(&mut self, kind: &ErrorKind) {
        if self.failed || !is_health_failure(kind) {
            return;
        }
        self.failed = true;
        let threshold = self.shared.settings.eject_after_failures;
        let mut inner = self.shared.lock();
        let state = &mut inner.replicas[self.index];
        state.failures = state.failures.saturating_add(1);
        if threshold > 0 && state.failures >= threshold {
            if state.ejected_at.is_none() {
                tracing::warn!(
                    replica_set = %self.shared.name,
                    replica = self.index,
                    failures = state.failures,
                    "ejecting replica after consecutive failures"
                );
            }
            state.ejected_at = Some(Instant::now());
        }
        if self.probe {
            state.probing = false;
            self.probe = false;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let state = &mut inner.replicas[self.index];
        state.outstanding = state.outstanding.saturating_sub(1);
        if self.probe {
            state.probing = false;
        }
    }
}

/// A replica's stream, holding its lease until it ends or is dropped and
/// reporting its outcome.
struct Tracked {
    inner: EventStream,
    lease: Option<Lease>,
    stopped: bool,
}

impl Stream for Tracked {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = ready!(this.inner.as_mut().poll_next(cx));
        if let Some(lease) = this.lease.as_mut() {
            match &item {
                Some(Ok(StreamEvent::Start { .. })) => {}
                Some(Ok(event)) => {
                    lease.success();
                    this.stopped |= matches!(event, StreamEvent::Stop { .. });
                }
                Some(Err(error)) => lease.failure(&error.kind),
                // Ending without `Stop` is a broken connection.
                None if !this.stopped => lease.failure(&ErrorKind::Connection),
                None => {}
            }
        }
        // The request is over at `Stop` (or the end): release the lease
        // then, not when the caller gets round to dropping the stream.
        if item.is_none() || this.stopped {
            this.lease = None;
        }
        Poll::Ready(item)
    }
}
