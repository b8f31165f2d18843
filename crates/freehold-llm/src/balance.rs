//! Load balancing over replicas of one model server, with passive health and,
//! when asked for, background probes: of ejected replicas, to readmit them,
//! and of every replica in rotation, to find one that has stopped answering.
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
//! list instead, and only an answer readmits it. With
//! [`HealthSettings::probe_interval`], every replica in rotation is also
//! asked for its model list that often, and as many probes in a row as
//! failed requests would eject it: this is what finds a replica that
//! accepts connections but never answers, whose client requests end by the
//! caller's time limit and so count as nothing. Rate limits move a request to another replica
//! but say nothing about health. When every replica left to try is ejected
//! (all of them, or all but those the request has failed on), the one
//! ejected longest ago is used rather than failing outright.
//!
//! A retryable failure before the first answer event (anything but
//! [`StreamEvent::Start`]) moves the request to another healthy replica, each
//! replica at most once; once an answer event went to the caller, errors go
//! to the caller too. So does a request still waiting for its replica's
//! first answer event when that replica's probes find it stopped answering
//! and another untried replica is in rotation (now, or once one is
//! readmitted): its attempt is dropped, counting no failure.
//!
//! ```
//! use std::time::Duration;
//! use freehold_llm::balance::HealthSettings;
//!
//! let settings = HealthSettings::default();
//! assert_eq!(settings.eject_after_failures, 3);
//! assert_eq!(settings.cooldown, Duration::from_secs(30));
//! ```

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use freehold_protocol::{
    Capabilities, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, ErrorKind, LlmError,
    ModelInfo, StreamEvent,
};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::Notify;

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
    /// Implied by [`HealthSettings::probe_interval`].
    pub probe: bool,
    /// How often each replica in rotation is asked for its model list
    /// (`None`, or zero: never). [`HealthSettings::eject_after_failures`]
    /// probes in a row that fail (connection, server error) or get no
    /// answer within the interval (at most 10 s) eject it. They are counted
    /// apart from failed requests: an answered probe clears the probes'
    /// count but not the requests', since a server's API can list models
    /// while its engine is stuck. Needs a tokio runtime when the set is
    /// built.
    pub probe_interval: Option<Duration>,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(30),
            probe: false,
            probe_interval: None,
        }
    }
}

impl HealthSettings {
    /// Whether anything is probed in the background.
    fn probes_anything(&self) -> bool {
        self.probe || self.probe_interval.is_some()
    }

    /// How long a probe of a replica in rotation may wait for its answer:
    /// at most [`PROBE_TIMEOUT`], and never past the next probe.
    fn check_timeout(&self) -> Duration {
        self.probe_interval
            .map_or(PROBE_TIMEOUT, |interval| interval.min(PROBE_TIMEOUT))
    }

    /// How often the probing task looks for due probes.
    fn probe_tick(&self) -> Duration {
        // Trials of rested replicas are probes whenever checks are. A zero
        // cooldown would make the tick spin: then a trial a second.
        let mut tick = if self.cooldown.is_zero() {
            Duration::from_secs(1)
        } else {
            self.cooldown / 2
        };
        if let Some(interval) = self.probe_interval {
            tick = tick.min(interval / 2);
        }
        tick.clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// The longest a probe waits for a replica's model list.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot of one replica's state, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// The replica's provider name.
    pub name: String,
    /// Where it is (its base URL, without credentials), where the set was
    /// told ([`ReplicaSet::with_addresses`]): replicas share their name.
    pub address: Option<String>,
    /// Requests in flight on it.
    pub outstanding: usize,
    /// Failures since its last success: of requests, or of its probes in
    /// rotation when that run is longer.
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
    /// Each replica's address, for [`ReplicaHealth::address`].
    addresses: Vec<Option<String>>,
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
        let mut settings = settings;
        settings.probe_interval = settings.probe_interval.filter(|every| !every.is_zero());
        let states = replicas.iter().map(|_| ReplicaState::default()).collect();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let probes = settings.probes_anything() && runtime.is_some();
        if settings.probes_anything() && !probes {
            tracing::warn!(
                replica_set = %name,
                "no async runtime to probe replicas from; client requests are the trials of \
                 ejected ones, and replicas in rotation are not probed"
            );
        }
        let shared = Arc::new(Shared {
            name: name.clone(),
            settings,
            probes,
            closed: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                replicas: states,
                rotation: 0,
            }),
        });
        if let Some(runtime) = runtime.filter(|_| probes) {
            runtime.spawn(probe_replicas(Arc::downgrade(&shared), replicas.clone()));
        }
        Self {
            addresses: vec![None; replicas.len()],
            replicas,
            shared,
            name,
        }
    }

    /// Names where each replica is, in the order of the replicas, for
    /// status pages ([`ReplicaHealth::address`]); give addresses without
    /// credentials.
    pub fn with_addresses(mut self, addresses: Vec<String>) -> Self {
        self.addresses = addresses.into_iter().map(Some).collect();
        self.addresses.resize(self.replicas.len(), None);
        self
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
            .zip(&self.addresses)
            .map(|((provider, state), address)| ReplicaHealth {
                name: provider.name().to_owned(),
                address: address.clone(),
                outstanding: state.outstanding,
                consecutive_failures: state.failures.max(state.probe_failures),
                ejected: !self.shared.available(state, now),
            })
            .collect()
    }

    /// Runs `attempt` on replica `index`, unless its health probes find
    /// (or have found) that the replica stopped answering while an untried
    /// replica (not in `tried`) is available: then the attempt is
    /// dropped and `None` says to try that one. This is what moves requests
    /// off a replica that accepts them and never answers, which could
    /// otherwise only end by the caller's time limit. A replica ejected
    /// for its requests' failures (errors, overload) may still answer the
    /// others, and with nowhere else to go the attempt is the best chance:
    /// both keep waiting.
    async fn unless_ejected<T>(
        &self,
        index: usize,
        tried: &[bool],
        attempt: impl Future<Output = Result<T, LlmError>>,
    ) -> Option<Result<T, LlmError>> {
        let Some(signal) = self.shared.ejection_signal(index) else {
            return Some(attempt.await);
        };
        let ejected = signal.notified();
        tokio::pin!(ejected);
        tokio::pin!(attempt);
        loop {
            // Registered before looking: an ejection (or a readmission
            // elsewhere) from now on wakes it, and one before is seen below.
            // A replica leased while out (every replica was) counts too:
            // the request moves once another is back.
            ejected.as_mut().enable();
            if self.shared.stopped_answering(index) && self.shared.untried_available(tried) {
                return None;
            }
            tokio::select! {
                biased;
                result = &mut attempt => return Some(result),
                () = &mut ejected => ejected.set(signal.notified()),
            }
        }
    }

    /// The error of a request whose replica `index` was ejected while it
    /// waited for the replica's answer.
    fn ejected_meanwhile(&self, index: usize) -> LlmError {
        let name = self
            .replicas
            .get(index)
            .map_or(self.name.as_str(), |r| r.name());
        tracing::warn!(
            replica_set = %self.name,
            replica = index,
            "replica ejected while a request waited for its answer; trying another"
        );
        LlmError::new(
            ErrorKind::Connection,
            name,
            "the replica was taken out of rotation (it stopped answering) before it answered",
        )
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
            let attempt = call(Arc::clone(&self.replicas[index]));
            let outcome = if tried.iter().any(|tried| !tried) {
                self.unless_ejected(index, &tried, attempt).await
            } else {
                Some(attempt.await)
            };
            let Some(outcome) = outcome else {
                last_error = Some(self.ejected_meanwhile(index));
                continue;
            };
            match outcome {
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

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        // Leases of streams still open keep the shared state alive; its
        // probes stop now all the same.
        self.shared.closed.store(true, Ordering::Relaxed);
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

    /// Only when every replica does: a request may go to any of them.
    fn makes_context_edits(&self) -> bool {
        !self.replicas.is_empty()
            && self
                .replicas
                .iter()
                .all(|replica| replica.makes_context_edits())
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
            let request = request.clone();
            // The lease goes with the attempt: dropped with it when the
            // replica is ejected meanwhile, counting no failure.
            let attempt = async move {
                match replica.stream(request).await {
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
                }
            };
            let result = if may_move {
                match self.unless_ejected(index, &tried, attempt).await {
                    Some(result) => result,
                    None => {
                        last_error = Some(self.ejected_meanwhile(index));
                        continue;
                    }
                }
            } else {
                attempt.await
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
                let started = !matches!(
                    event,
                    StreamEvent::Start { .. } | StreamEvent::UsageSoFar(_)
                );
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

/// What a background probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    /// An ejected replica has rested: an answer readmits it.
    Trial,
    /// A replica in rotation: a failure counts against it.
    Check,
}

/// Every tick, until the set is dropped, starts the probes that are due:
/// trials of ejected replicas whose cooldown is over, and checks of
/// replicas in rotation. Each probe runs in a task of its own, so that a
/// replica that never answers delays no other.
async fn probe_replicas(shared: Weak<Shared>, replicas: Vec<Arc<dyn Provider>>) {
    let tick = match shared.upgrade() {
        Some(shared) => shared.settings.probe_tick(),
        None => return,
    };
    loop {
        tokio::time::sleep(tick).await;
        // Only upgraded for the moment: a probe in flight holds a weak
        // reference too, so dropping the set ends this loop.
        // Streams still open after the set was dropped (a reload) keep
        // its state alive; they need no more probes.
        let due = match shared.upgrade() {
            Some(shared) if !shared.closed.load(Ordering::Relaxed) => {
                shared.due_probes(Instant::now())
            }
            _ => return,
        };
        for due in due {
            let Some(replica) = replicas.get(due.index) else {
                continue;
            };
            tokio::spawn(probe(Weak::clone(&shared), Arc::clone(replica), due));
        }
    }
}

/// A probe to start: which replica, what for, and its
/// [`ReplicaState::epoch`] when it started.
#[derive(Debug, Clone, Copy)]
struct DueProbe {
    index: usize,
    kind: ProbeKind,
    epoch: u64,
}

/// Asks one replica for its model list and records the outcome.
async fn probe(shared: Weak<Shared>, replica: Arc<dyn Provider>, due: DueProbe) {
    let limit = match shared.upgrade() {
        Some(shared) => match due.kind {
            ProbeKind::Trial => PROBE_TIMEOUT,
            ProbeKind::Check => shared.settings.check_timeout(),
        },
        None => return,
    };
    // A provider that panics fails its probe rather than leaving the
    // replica marked as being probed for ever.
    let listing = AssertUnwindSafe(replica.check_ready()).catch_unwind();
    let outcome = match tokio::time::timeout(limit, listing).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(error),
        Ok(Err(_)) => Err(LlmError::new(
            ErrorKind::Server,
            replica.name(),
            "listing the models panicked",
        )),
        Err(_) => Err(LlmError::new(
            ErrorKind::Timeout,
            replica.name(),
            format!(
                "no answer to its health probe within {:.1} s of asking",
                limit.as_secs_f64()
            ),
        )),
    };
    if let Some(shared) = shared.upgrade() {
        match due.kind {
            ProbeKind::Trial => shared.trial_probed(due, outcome),
            ProbeKind::Check => shared.checked(due, outcome),
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
    /// request is sent to one while another replica is available), and,
    /// with [`HealthSettings::probe_interval`], replicas in rotation.
    probes: bool,
    /// Set when the [`ReplicaSet`] is dropped: probing stops.
    closed: AtomicBool,
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
    /// Requests failed since its last success.
    failures: u32,
    /// Probes in rotation failed since its last answered probe or request.
    probe_failures: u32,
    /// Changes whenever it is ejected or readmitted, so that a probe that
    /// started before drops its result.
    epoch: u64,
    /// When it was (last) ejected; `None` while healthy.
    ejected_at: Option<Instant>,
    /// Whether its trial request after a cooldown is under way.
    probing: bool,
    /// Whether a probe of it, in rotation, is under way.
    checking: bool,
    /// When its last probe in rotation started: probes start one interval
    /// apart, each ending within the interval.
    checked_at: Option<Instant>,
    /// Whether a probe in rotation got an answer that says nothing of
    /// health (a 401 or 404 for the model list) and that was logged.
    probe_refusal_logged: bool,
    /// Whether its probes ejected it (it stopped answering), not its
    /// requests' failures.
    stopped_answering: bool,
    /// Wakes the requests waiting on it when its probes eject it, so that
    /// they can move to another replica.
    ejected_signal: Arc<Notify>,
}

impl ReplicaState {
    /// Takes it out of rotation now (or rests it again);
    /// `stopped_answering`: its probes found it so, and requests waiting on
    /// it are woken to move on.
    fn eject(&mut self, stopped_answering: bool) {
        if self.ejected_at.is_none() {
            self.epoch = self.epoch.wrapping_add(1);
            self.stopped_answering = stopped_answering;
            if stopped_answering {
                self.ejected_signal.notify_waiters();
            }
        } else if stopped_answering && !self.stopped_answering {
            // Ejected for its requests' failures, and now its probe gets
            // no answer either: the requests it holds may move.
            self.stopped_answering = true;
            self.ejected_signal.notify_waiters();
        }
        self.ejected_at = Some(Instant::now());
    }

    /// It answered: back in rotation with no failures counted. Returns
    /// whether it was out of rotation.
    fn readmit(&mut self) -> bool {
        let was_out = self.ejected_at.is_some();
        if was_out {
            self.epoch = self.epoch.wrapping_add(1);
        }
        self.ejected_at = None;
        self.stopped_answering = false;
        self.failures = 0;
        self.probe_failures = 0;
        was_out
    }
}

impl Inner {
    /// Wakes the requests waiting on replicas that stopped answering: a
    /// replica back in rotation may be where they can go now.
    fn wake_stranded_requests(&self) {
        for state in self.replicas.iter().filter(|state| state.stopped_answering) {
            state.ejected_signal.notify_waiters();
        }
    }
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

    /// What wakes the requests waiting on replica `index` when it is
    /// ejected.
    fn ejection_signal(&self, index: usize) -> Option<Arc<Notify>> {
        self.lock()
            .replicas
            .get(index)
            .map(|state| Arc::clone(&state.ejected_signal))
    }

    /// The probes due at `now`, each marked as under way.
    fn due_probes(&self, now: Instant) -> Vec<DueProbe> {
        if !self.probes {
            return Vec::new();
        }
        let cooldown = self.settings.cooldown;
        let interval = self.settings.probe_interval;
        let mut inner = self.lock();
        let mut due = Vec::new();
        for (index, state) in inner.replicas.iter_mut().enumerate() {
            match state.ejected_at {
                Some(at) => {
                    if !state.probing && now.saturating_duration_since(at) >= cooldown {
                        state.probing = true;
                        due.push(DueProbe {
                            index,
                            kind: ProbeKind::Trial,
                            epoch: state.epoch,
                        });
                    }
                }
                None => {
                    let Some(interval) = interval else { continue };
                    let rested = state
                        .checked_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= interval);
                    if !state.checking && rested {
                        state.checking = true;
                        state.checked_at = Some(now);
                        due.push(DueProbe {
                            index,
                            kind: ProbeKind::Check,
                            epoch: state.epoch,
                        });
                    }
                }
            }
        }
        due
    }

    /// Records the trial probe of an ejected replica: any answer readmits
    /// it (a refusal to list models, 401 or 404, still shows a server that
    /// answers), a health failure rests it for another cooldown.
    fn trial_probed(&self, due: DueProbe, outcome: Result<(), LlmError>) {
        let mut inner = self.lock();
        let Some(state) = inner.replicas.get_mut(due.index) else {
            return;
        };
        state.probing = false;
        // A client request may have readmitted it meanwhile (every
        // replica ejected: the one ejected longest ago is used).
        if state.ejected_at.is_none() || state.epoch != due.epoch {
            return;
        }
        match outcome {
            Err(error) if is_health_failure(&error.kind) => {
                tracing::debug!(
                    replica_set = %self.name,
                    replica = due.index,
                    error = %error,
                    "probe: replica still down; resting it again"
                );
                state.eject(true);
            }
            _ => {
                tracing::info!(
                    replica_set = %self.name,
                    replica = due.index,
                    "probe: replica answered; readmitting it"
                );
                if state.readmit() {
                    inner.wake_stranded_requests();
                }
            }
        }
    }

    /// Records the probe of a replica in rotation: an answer clears the
    /// probes' count of failures, a health failure adds to it.
    fn checked(&self, due: DueProbe, outcome: Result<(), LlmError>) {
        let mut inner = self.lock();
        let Some(state) = inner.replicas.get_mut(due.index) else {
            return;
        };
        state.checking = false;
        // Ejected (and perhaps readmitted) since it started: stale.
        if state.ejected_at.is_some() || state.epoch != due.epoch {
            return;
        }
        let error = match outcome {
            Ok(()) => {
                state.probe_failures = 0;
                return;
            }
            Err(error) if !is_health_failure(&error.kind) => {
                if !state.probe_refusal_logged {
                    state.probe_refusal_logged = true;
                    tracing::warn!(
                        replica_set = %self.name,
                        replica = due.index,
                        error = %error,
                        "the replica answers its health probe (its model list) with an error; \
                         probes can only see it stop answering"
                    );
                }
                state.probe_failures = 0;
                return;
            }
            Err(error) => error,
        };
        tracing::warn!(
            replica_set = %self.name,
            replica = due.index,
            error = %error,
            "replica failed its health probe"
        );
        state.probe_failures = state.probe_failures.saturating_add(1);
        let failures = state.probe_failures;
        self.eject_at_threshold(state, due.index, failures, true);
    }

    /// Counts one failed request of replica `index`, ejecting it at the
    /// threshold (or resting an ejected one again).
    fn count_failure(&self, state: &mut ReplicaState, index: usize) {
        state.failures = state.failures.saturating_add(1);
        let failures = state.failures;
        self.eject_at_threshold(state, index, failures, false);
    }

    /// Ejects replica `index` when `failures` in a row (of its probes, or
    /// of its requests) reach the threshold.
    fn eject_at_threshold(
        &self,
        state: &mut ReplicaState,
        index: usize,
        failures: u32,
        by_probes: bool,
    ) {
        let threshold = self.settings.eject_after_failures;
        if threshold == 0 || failures < threshold {
            return;
        }
        if state.ejected_at.is_none() {
            let what = if by_probes { "probes" } else { "requests" };
            tracing::warn!(
                replica_set = %self.name,
                replica = index,
                failures,
                "ejecting replica after consecutive failed {what}"
            );
        }
        state.eject(by_probes);
    }

    /// Whether replica `index` is out of rotation for not answering its
    /// probes (readmission clears the flag).
    fn stopped_answering(&self, index: usize) -> bool {
        self.lock()
            .replicas
            .get(index)
            .is_some_and(|state| state.stopped_answering)
    }

    /// Whether a replica not in `tried` may take a request now.
    fn untried_available(&self, tried: &[bool]) -> bool {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .replicas
            .iter()
            .zip(tried)
            .any(|(state, tried)| !tried && self.available(state, now))
    }

    /// Takes a lease on the available untried replica with the fewest
    /// requests outstanding; with none available, on the untried replica
    /// ejected longest ago: a request that a replica back since its
    /// ejection could answer is not failed for want of trying it. After
    /// the `first` attempt, a replica its probes found not answering is
    /// left out: the request would wait on it until its time limit, where
    /// the client can have the error it already got.
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
            None => {
                let index = (0..count)
                    .filter(|index| {
                        !tried[*index] && (first || !inner.replicas[*index].stopped_answering)
                    })
                    // One its probes found not answering last: a request
                    // would wait on it until its time limit.
                    .min_by_key(|index| {
                        let state = &inner.replicas[*index];
                        (state.stopped_answering, state.ejected_at)
                    })?;
                tracing::warn!(
                    replica = index,
                    "every replica left to try is ejected; using the one ejected longest ago"
                );
                (index, false)
            }
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
        let readmitted = state.readmit();
        if self.probe {
            state.probing = false;
            self.probe = false;
        }
        if readmitted {
            inner.wake_stranded_requests();
        }
    }

    /// The request failed with `kind`; health failures count towards
    /// ejection, other errors are ignored.
    fn failure(&mut self, kind: &ErrorKind) {
        if self.failed || !is_health_failure(kind) {
            return;
        }
        self.failed = true;
        let mut inner = self.shared.lock();
        let state = &mut inner.replicas[self.index];
        self.shared.count_failure(state, self.index);
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
                // The opening, and the usage it may carry, are not an
                // answer yet (as for `first_content`).
                Some(Ok(StreamEvent::Start { .. } | StreamEvent::UsageSoFar(_))) => {}
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
