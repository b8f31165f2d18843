//! `freehold bench gateway`: the gateway's own cost, measured against
//! direct calls to the same upstream in the same run.
//!
//! The upstream is a [`MockUpstream`] in the benchmarking process, which
//! answers at once, so whatever a request through the gateway takes beyond
//! a direct call is the gateway's: reading and checking the request, the
//! key, routing, the call to the upstream over a second HTTP connection,
//! re-encoding the answer, metrics and the usage ledger. A load generator
//! of `clients` concurrent clients, each looping one request after another
//! over its own keep-alive HTTP/1.1 connection, measures every request's
//! latency (and, for streams, the time to the first body byte).
//!
//! Two kinds of phases, each direct to the mock and through the gateway:
//!
//! - **max**: every client sends its next request as soon as the last one
//!   is answered (a closed loop). This finds the most requests per second
//!   the loop reaches; latency there is mostly queueing (with `clients`
//!   requests always in flight, latency ≈ clients / throughput), so the
//!   latency added at saturation says how much throughput the gateway
//!   costs, not what one request pays.
//! - **paced** at `rate` requests per second in all (by default the
//!   throughput goal, 5,000/s), spread evenly over the clients (an open
//!   loop): below saturation, latency is what one request pays. The
//!   latency goals are judged here. If a side cannot keep up, its
//!   achieved rate falls short of the offered one and the report shows it.
//!
//! Paced phases: non-streaming `/v1/chat/completions`, streaming (time to
//! first byte and to the end), `/v1/messages` (Anthropic) and
//! `/v1/responses` (OpenAI's, which Codex speaks) through the gateway
//! against the direct non-streaming reference; and a coding agent's
//! request (some 95 KB, in Claude Code's shape) to `/v1/messages` against
//! the same conversation sent directly, at a lower rate
//! ([`LARGE_RATE_DIVISOR`]).
//!
//! Each phase runs `warmup` unmeasured, then `duration` measured. The
//! generator, the mock and the gateway share the machine's cores, so the
//! figures are those of the whole loop on this machine; the CPU the gateway
//! process spends per request (when it runs as its own process) says what
//! the gateway alone costs.
//!
//! The gateway under test is reached over HTTP: `freehold bench gateway`
//! runs `freehold serve` as a child process (so that its resident memory
//! can be read on its own), and [`InProcessGateway`] serves one in this
//! process (for tests, and for a run without the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::task::{JoinHandle, JoinSet};

use crate::ledger::Ledger;
use crate::mock::{MOCK_TEXT, MockUpstream};
use crate::settings::GatewaySettings;
use crate::state::{Gateway, Routes};
use crate::store::Store;

mod agent_request;

/// Concurrent clients by default.
pub const DEFAULT_CLIENTS: usize = 64;

/// The `large` phases (a coding agent's request, some 95 KB) are paced at
/// the run's rate divided by this: 200/s by default. Each such request
/// costs the gateway, the mock and the load generator tens of times what
/// a one-line chat costs, and the phases must stay below what the
/// machine's cores can do, for their latency to be what one request pays
/// rather than queueing. At a low rate they are paced faster, so that
/// clients still send in the measured time (see `large_rate`).
pub const LARGE_RATE_DIVISOR: f64 = 25.0;

/// The rate of the `large` phases for a run paced at `rate`: a 25th of it,
/// but not so low that a client would send nothing in the measured time,
/// nor above `rate`.
fn large_rate(rate: f64, options: &LoadOptions) -> f64 {
    let every_client_once = options.clients as f64 / options.duration.as_secs_f64();
    (rate / LARGE_RATE_DIVISOR).max(every_client_once).min(rate)
}
/// Measured time per phase by default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Unmeasured time before each phase by default.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(2);
/// The most concurrent clients accepted.
pub const MAX_CLIENTS: usize = 4096;
/// The alias the gateway under test must route to the mock's model.
pub const ALIAS: &str = "mock";
/// The model the mock is asked for directly (`mock:mock-model` through
/// the gateway).
pub const UPSTREAM_MODEL: &str = "mock-model";

/// The goals the gateway is held to.
pub mod goals {
    /// Added latency at the median, in microseconds.
    pub const ADDED_P50_US: f64 = 100.0;
    /// Added latency at the 99th percentile, in microseconds.
    pub const ADDED_P99_US: f64 = 1000.0;
    /// Non-streaming requests per second through the gateway.
    pub const REQUESTS_PER_S: f64 = 5000.0;
    /// Resident memory of the gateway process at that load, in bytes
    /// (50 MB, read as 50 × 10⁶).
    pub const RSS_BYTES: u64 = 50_000_000;
    /// Time to the first streamed byte added, in microseconds.
    pub const ADDED_FIRST_BYTE_US: f64 = 1000.0;
}

/// What went wrong setting up or running the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Options out of range.
    #[error("invalid benchmark options: {0}")]
    Options(String),
    /// The mock, the gateway or the client could not be set up.
    #[error("setting up the benchmark: {0}")]
    Setup(String),
    /// A phase finished without a single successful request.
    #[error("{phase}: no request succeeded ({errors} errors; first: {first_error})")]
    NoSuccess {
        /// The phase.
        phase: String,
        /// Failed requests.
        errors: u64,
        /// The first failure, as the client saw it.
        first_error: String,
    },
}

/// How hard and how long to load each phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Requests per second in all offered in the paced phases; `None`
    /// leaves them out.
    pub rate: Option<f64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            clients: DEFAULT_CLIENTS,
            duration: DEFAULT_DURATION,
            warmup: DEFAULT_WARMUP,
            rate: Some(goals::REQUESTS_PER_S),
        }
    }
}

impl LoadOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// No clients, too many, or a zero duration.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(BenchError::Options(format!(
                "clients must be between 1 and {MAX_CLIENTS}, not {}",
                self.clients
            )));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Options("the duration must not be zero".into()));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0 && rate <= 1e7)
        {
            return Err(BenchError::Options(format!(
                "the rate must be above 0 and at most 10,000,000 requests/s, not {rate}"
            )));
        }
        Ok(())
    }
}

/// The request a phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// `POST /v1/chat/completions`, a whole answer.
    Chat,
    /// `POST /v1/chat/completions` with `"stream": true`.
    ChatStream,
    /// `POST /v1/messages` (Anthropic), a whole answer.
    Messages,
    /// The same, asking to keep all thinking with Anthropic's context
    /// editing, as Claude Code does in every request.
    MessagesEditing,
    /// `POST /v1/responses` (what Codex speaks), a whole answer.
    Responses,
    /// `POST /v1/chat/completions` with a coding agent's request (some
    /// 95 KB of system prompt, tool schemas and conversation): the direct
    /// reference for [`Call::MessagesLarge`].
    ChatLarge,
    /// `POST /v1/messages` with the same conversation as Claude Code sends
    /// it.
    MessagesLarge,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Self::Chat | Self::ChatStream | Self::ChatLarge => "/v1/chat/completions",
            Self::Messages | Self::MessagesEditing | Self::MessagesLarge => "/v1/messages",
            Self::Responses => "/v1/responses",
        }
    }

    fn streams(self) -> bool {
        self == Self::ChatStream
    }

    /// The request body, the same for every request of a phase: a short
    /// conversation of the size a chat client sends for a one-line prompt.
    fn body(self, model: &str) -> Bytes {
        let messages = json!([
            {"role": "user", "content": "Say hello in one short sentence, please."}
        ]);
        let body = match self {
            Self::Chat => json!({"model": model, "messages": messages, "max_tokens": 32}),
            Self::ChatStream => {
                json!({"model": model, "messages": messages, "max_tokens": 32, "stream": true})
            }
            Self::Messages => json!({"model": model, "messages": messages, "max_tokens": 32}),
            Self::MessagesEditing => json!({
                "model": model, "messages": messages, "max_tokens": 32,
                "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            }),
            Self::Responses => json!({"model": model, "input": messages, "max_output_tokens": 32}),
            Self::ChatLarge => agent_request::chat_body(model),
            Self::MessagesLarge => agent_request::messages_body(model),
        };
        Bytes::from(body.to_string())
    }
}

/// One phase's endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The phase's name in the report (`direct`, `gateway`…).
    pub name: String,
    /// `http://127.0.0.1:PORT`, without the path.
    pub base_url: String,
    /// The key sent (`Authorization: Bearer`, or `x-api-key` for
    /// `/v1/messages`), if any.
    pub key: Option<String>,
    /// What is sent.
    pub call: Call,
    /// The model asked for.
    pub model: String,
    /// Requests per second offered in all (paced), or `None`: each client
    /// sends as soon as it has its answer.
    pub rate: Option<f64>,
}

/// Latency percentiles over one phase's successful requests, in
/// microseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Requests measured.
    pub samples: u64,
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: u32,
    /// The 90th percentile.
    pub p90_us: u32,
    /// The 99th percentile.
    pub p99_us: u32,
    /// The slowest.
    pub max_us: u32,
}

impl Percentiles {
    /// Sorts `samples` and reads the percentiles off them; `None` when
    /// there are none.
    pub fn from_samples(samples: &mut [u32]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of them at
            // or below it.
            let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index]
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Some(Self {
            samples: samples.len() as u64,
            mean_us: sum as f64 / samples.len() as f64,
            p50_us: rank(0.50),
            p90_us: rank(0.90),
            p99_us: rank(0.99),
            max_us: samples[samples.len() - 1],
        })
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The phase (`direct`, `gateway`, `direct stream`…).
    pub name: String,
    /// What was sent.
    pub call: Call,
    /// Successful requests started in the measured time.
    pub requests: u64,
    /// Failed requests started in the measured time.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// The measured time, in seconds.
    pub seconds: f64,
    /// Requests per second offered (paced phases).
    pub offered_per_s: Option<f64>,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// From sending the request to the answer's last byte.
    pub latency: Percentiles,
    /// From sending the request to the first byte of the body (streams
    /// only).
    pub first_byte: Option<Percentiles>,
    /// CPU time per request, warm-up included, in microseconds, of the
    /// process in front of the mock when it runs as its own: the gateway,
    /// or in the `relay` phase the relay.
    pub gateway_cpu_us_per_request: Option<f64>,
    /// CPU time of this process (load generator and mock, and the gateway
    /// too when it runs in process) per request, in microseconds.
    pub bench_cpu_us_per_request: Option<f64>,
}

/// What the gateway adds to one phase over its reference.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// The gateway's phase.
    pub phase: String,
    /// The reference phase (direct calls).
    pub reference: String,
    /// `latency` or `first byte`.
    pub metric: &'static str,
    /// Gateway minus reference at the median, in microseconds.
    pub p50_us: f64,
    /// Gateway minus reference at the 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Gateway over reference at the median.
    pub ratio_p50: f64,
    /// Gateway over reference at the 99th percentile.
    pub ratio_p99: f64,
    /// Gateway over reference requests per second.
    pub ratio_requests_per_s: f64,
}

/// The gateway process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set size after start-up, before any load.
    pub idle_rss_bytes: u64,
    /// The largest resident set size sampled (every 20 ms) under load.
    pub peak_rss_bytes: u64,
    /// The kernel's high-water mark (`VmHWM`) at the end.
    pub hwm_bytes: u64,
}

/// One goal and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is held to the goal.
    pub name: String,
    /// The goal, in words.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Met, missed, or not measured in this run (`None`).
    pub met: Option<bool>,
}

/// The gateway a run measures.
#[derive(Debug, Clone)]
pub struct GatewayUnderTest {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The master key it accepts.
    pub key: String,
    /// Its process, when it runs as its own (for memory and CPU).
    pub pid: Option<u32>,
    /// How it runs, in words, for the report.
    pub description: String,
    /// A [`relay`] in front of the mock, when the run has one: the paced
    /// `relay` phase measures what one more process on the path costs on
    /// this machine without any of a gateway's work, so that the gateway's
    /// figures can be read against that floor as well as against direct
    /// calls.
    pub relay: Option<RelayUnderTest>,
}

/// A byte relay a run measures (see [`GatewayUnderTest::relay`]).
#[derive(Debug, Clone)]
pub struct RelayUnderTest {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Its process, when it runs as its own (for its CPU time).
    pub pid: Option<u32>,
}

/// Copies bytes both ways between each connection accepted on `listener`
/// and a new connection of its own to `upstream`, until either side
/// closes. It reads nothing of what it carries, so what a request through
/// it costs beyond a direct call is the price of one more process on the
/// path on this machine: two more loopback hops and the wake-ups they take.
/// Runs until its task is dropped; accepting errors are logged and retried.
pub async fn relay(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    loop {
        let mut inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, for instance: wait, don't spin.
                tracing::warn!(%error, "relay: accepting a connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            // As the gateway's own sockets: no Nagle delay on small writes.
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// A whole run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Concurrent clients.
    pub clients: usize,
    /// Measured seconds per phase.
    pub duration_s: f64,
    /// Unmeasured seconds before each phase.
    pub warmup_s: f64,
    /// CPU cores available to this process (shared by the load generator,
    /// the mock and the gateway).
    pub cores: usize,
    /// How the gateway ran.
    pub gateway: String,
    /// Every phase, in the order run.
    pub phases: Vec<Measurement>,
    /// What the gateway added over direct calls.
    pub added: Vec<Added>,
    /// The gateway process's memory (when it runs as its own process).
    pub memory: Option<Memory>,
    /// Each goal, met or not.
    pub goals: Vec<Goal>,
}

impl Report {
    /// The phase called `name`.
    pub fn phase(&self, name: &str) -> Option<&Measurement> {
        self.phases.iter().find(|m| m.name == name)
    }
}

/// Progress of a run, for a caller that shows it.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// A phase starts.
    Phase {
        /// Its name.
        name: &'a str,
        /// Its place, from 1.
        index: usize,
        /// Phases in all.
        of: usize,
    },
    /// A phase ended.
    Done(&'a Measurement),
}

/// Runs every phase against `mock` directly and through `gateway`, and
/// judges the goals.
///
/// # Errors
/// Bad options, a client that cannot be built, or a phase in which no
/// request succeeded.
pub async fn run(
    mock: &MockUpstream,
    gateway: &GatewayUnderTest,
    options: &LoadOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Report, BenchError> {
    options.validate()?;
    let direct_url = format!("http://{}", mock.address());
    let phase = |name: &str, via: Via, call: Call, rate: Option<f64>| {
        let target = Target {
            name: name.to_owned(),
            base_url: match via {
                Via::Direct => direct_url.clone(),
                Via::Relay => gateway
                    .relay
                    .as_ref()
                    .map_or_else(String::new, |relay| relay.base_url.clone()),
                Via::Gateway => gateway.base_url.clone(),
            },
            key: (via == Via::Gateway).then(|| gateway.key.clone()),
            call,
            model: if via == Via::Gateway {
                ALIAS
            } else {
                UPSTREAM_MODEL
            }
            .to_owned(),
            rate,
        };
        let watched = match via {
            Via::Direct => None,
            Via::Relay => gateway.relay.as_ref().and_then(|relay| relay.pid),
            Via::Gateway => gateway.pid,
        };
        (target, watched)
    };
    let mut targets = vec![
        phase("direct max", Via::Direct, Call::Chat, None),
        phase("gateway max", Via::Gateway, Call::Chat, None),
    ];
    if let Some(rate) = options.rate {
        targets.push(phase("direct", Via::Direct, Call::Chat, Some(rate)));
        if gateway.relay.is_some() {
            targets.push(phase("relay", Via::Relay, Call::Chat, Some(rate)));
        }
        targets.extend([
            phase("gateway", Via::Gateway, Call::Chat, Some(rate)),
            phase("direct stream", Via::Direct, Call::ChatStream, Some(rate)),
            phase("gateway stream", Via::Gateway, Call::ChatStream, Some(rate)),
            phase("gateway messages", Via::Gateway, Call::Messages, Some(rate)),
            phase(
                "gateway messages editing",
                Via::Gateway,
                Call::MessagesEditing,
                Some(rate),
            ),
            phase(
                "gateway responses",
                Via::Gateway,
                Call::Responses,
                Some(rate),
            ),
            phase(
                "direct large",
                Via::Direct,
                Call::ChatLarge,
                Some(large_rate(rate, options)),
            ),
            phase(
                "gateway messages large",
                Via::Gateway,
                Call::MessagesLarge,
                Some(large_rate(rate, options)),
            ),
        ]);
    }
    let idle_rss = gateway
        .pid
        .and_then(process_memory)
        .map(|(rss, _)| rss)
        .unwrap_or(0);
    let sampler = gateway.pid.map(MemorySampler::start);
    let mut phases = Vec::with_capacity(targets.len());
    for (index, (target, watched)) in targets.iter().enumerate() {
        progress(Progress::Phase {
            name: &target.name,
            index: index + 1,
            of: targets.len(),
        });
        let measurement = measure(target, options, *watched).await?;
        progress(Progress::Done(&measurement));
        phases.push(measurement);
    }
    let memory = match (sampler, gateway.pid) {
        (Some(sampler), Some(pid)) => {
            let peak = sampler.stop();
            let hwm = process_memory(pid).map(|(_, hwm)| hwm).unwrap_or(0);
            Some(Memory {
                idle_rss_bytes: idle_rss,
                peak_rss_bytes: peak,
                hwm_bytes: hwm,
            })
        }
        _ => None,
    };
    let mut report = Report {
        clients: options.clients,
        duration_s: options.duration.as_secs_f64(),
        warmup_s: options.warmup.as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        gateway: gateway.description.clone(),
        phases,
        added: Vec::new(),
        memory,
        goals: Vec::new(),
    };
    report.added = [
        ("gateway max", "direct max", "latency"),
        ("gateway", "direct", "latency"),
        ("relay", "direct", "latency"),
        ("gateway", "relay", "latency"),
        ("gateway stream", "direct stream", "latency"),
        ("gateway stream", "direct stream", "first byte"),
        ("gateway messages", "direct", "latency"),
        ("gateway messages editing", "direct", "latency"),
        ("gateway responses", "direct", "latency"),
        ("gateway messages large", "direct large", "latency"),
    ]
    .into_iter()
    .filter_map(|(phase, reference, metric)| added(&report, phase, reference, metric))
    .collect();
    report.goals = judge(&report);
    Ok(report)
}

/// Where a phase's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Relay,
    Gateway,
}

fn added(report: &Report, phase: &str, reference: &str, metric: &'static str) -> Option<Added> {
    let gateway = report.phase(phase)?;
    let direct = report.phase(reference)?;
    let (g, d) = if metric == "first byte" {
        (gateway.first_byte?, direct.first_byte?)
    } else {
        (gateway.latency, direct.latency)
    };
    let ratio = |a: u32, b: u32| f64::from(a) / f64::from(b.max(1));
    Some(Added {
        phase: phase.to_owned(),
        reference: reference.to_owned(),
        metric,
        p50_us: f64::from(g.p50_us) - f64::from(d.p50_us),
        p99_us: f64::from(g.p99_us) - f64::from(d.p99_us),
        ratio_p50: ratio(g.p50_us, d.p50_us),
        ratio_p99: ratio(g.p99_us, d.p99_us),
        ratio_requests_per_s: gateway.requests_per_s / direct.requests_per_s.max(f64::MIN_POSITIVE),
    })
}

fn judge(report: &Report) -> Vec<Goal> {
    // Goals are judged against direct calls, never against the relay.
    let find = |phase: &str, metric: &str| {
        report
            .added
            .iter()
            .find(|a| a.phase == phase && a.metric == metric && a.reference.starts_with("direct"))
    };
    // Paced when there are paced phases, at saturation otherwise.
    let chat = find("gateway", "latency").or_else(|| find("gateway max", "latency"));
    let first_byte = find("gateway stream", "first byte");
    let paced = report
        .phase("gateway")
        .and_then(|m| m.offered_per_s)
        .map_or_else(String::new, |rate| format!(", paced at {rate:.0}/s"));
    let added_p50 = format!("added latency p50 ({} clients{paced})", report.clients);
    let added_p99 = format!("added latency p99 ({} clients{paced})", report.clients);
    let mut out = vec![
        Goal {
            name: added_p50,
            target: format!("< {} µs", goals::ADDED_P50_US),
            measured: chat.map_or("not measured".into(), |a| format!("{:.0} µs", a.p50_us)),
            met: chat.map(|a| a.p50_us < goals::ADDED_P50_US),
        },
        Goal {
            name: added_p99,
            target: format!("< {} µs", goals::ADDED_P99_US),
            measured: chat.map_or("not measured".into(), |a| format!("{:.0} µs", a.p99_us)),
            met: chat.map(|a| a.p99_us < goals::ADDED_P99_US),
        },
    ];
    let rps = report.phase("gateway max").map(|m| m.requests_per_s);
    out.push(Goal {
        name: format!("non-streaming throughput ({} clients, max)", report.clients),
        target: format!("≥ {} requests/s", goals::REQUESTS_PER_S),
        measured: rps.map_or("not measured".into(), |r| format!("{r:.0} requests/s")),
        met: rps.map(|r| r >= goals::REQUESTS_PER_S),
    });
    out.push(Goal {
        name: "gateway resident memory under load".into(),
        target: format!("< {} MB", goals::RSS_BYTES / 1_000_000),
        measured: report.memory.map_or_else(
            || "not measured (gateway in process)".into(),
            |m| {
                format!(
                    "{:.1} MB peak",
                    m.hwm_bytes.max(m.peak_rss_bytes) as f64 / 1e6
                )
            },
        ),
        met: report
            .memory
            .map(|m| m.hwm_bytes.max(m.peak_rss_bytes) < goals::RSS_BYTES),
    });
    out.push(Goal {
        name: format!("added time to first byte, streaming, p50{paced}"),
        target: format!("< {} µs", goals::ADDED_FIRST_BYTE_US),
        measured: first_byte.map_or("not measured".into(), |a| format!("{:.0} µs", a.p50_us)),
        met: first_byte.map(|a| a.p50_us < goals::ADDED_FIRST_BYTE_US),
    });
    out
}

/// A client for loopback load: one keep-alive HTTP/1.1 connection per
/// concurrent request, no proxy.
fn client(clients: usize) -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|error| BenchError::Setup(format!("building the HTTP client: {error}")))
}

/// What one client measured.
#[derive(Default)]
struct ClientSamples {
    latency_us: Vec<u32>,
    first_byte_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    completed: u64,
}

/// Loads `target` with `options.clients` clients: `warmup` unmeasured,
/// then `duration` measured. `watch` is a process whose CPU time per
/// request is reported (the gateway's).
///
/// # Errors
/// A client that cannot be built, or no successful request at all.
pub async fn measure(
    target: &Target,
    options: &LoadOptions,
    watch: Option<u32>,
) -> Result<Measurement, BenchError> {
    options.validate()?;
    let client = client(options.clients)?;
    let url = reqwest::Url::parse(&format!("{}{}", target.base_url, target.call.path()))
        .map_err(|error| BenchError::Setup(format!("bad URL {}: {error}", target.base_url)))?;
    let body = target.call.body(&target.model);
    let shared = Arc::new(Shared {
        client,
        url,
        key: target.key.clone(),
        call: target.call,
        body,
    });
    let watched_before = watch.and_then(process_cpu_seconds);
    let own_before = process_cpu_seconds(std::process::id());
    let start = Instant::now();
    let record_from = start + options.warmup;
    let end = record_from + options.duration;
    let mut tasks = JoinSet::new();
    // Paced: each client sends every `clients / rate` seconds, the clients
    // staggered evenly over that interval.
    let interval = target
        .rate
        .map(|rate| Duration::from_secs_f64(options.clients as f64 / rate));
    for client in 0..options.clients {
        let pace = interval.map(|every| Pace {
            first: start + every.mul_f64(client as f64 / options.clients as f64),
            every,
        });
        tasks.spawn(client_loop(Arc::clone(&shared), pace, record_from, end));
    }
    let mut all = ClientSamples::default();
    while let Some(joined) = tasks.join_next().await {
        let samples = joined
            .map_err(|error| BenchError::Setup(format!("a load generator task failed: {error}")))?;
        all.latency_us.extend_from_slice(&samples.latency_us);
        all.first_byte_us.extend_from_slice(&samples.first_byte_us);
        all.errors += samples.errors;
        all.completed += samples.completed;
        if all.first_error.is_none() {
            all.first_error = samples.first_error;
        }
    }
    let per_request = |before: Option<f64>, pid: Option<u32>| {
        let spent = pid.and_then(process_cpu_seconds)? - before?;
        (all.completed > 0).then(|| spent * 1e6 / all.completed as f64)
    };
    let gateway_cpu_us_per_request = per_request(watched_before, watch);
    let bench_cpu_us_per_request = per_request(own_before, Some(std::process::id()));
    let Some(latency) = Percentiles::from_samples(&mut all.latency_us) else {
        return Err(BenchError::NoSuccess {
            phase: target.name.clone(),
            errors: all.errors,
            first_error: all.first_error.unwrap_or_else(|| "none was sent".into()),
        });
    };
    let seconds = options.duration.as_secs_f64();
    Ok(Measurement {
        name: target.name.clone(),
        call: target.call,
        requests: latency.samples,
        errors: all.errors,
        first_error: all.first_error,
        seconds,
        offered_per_s: target.rate,
        requests_per_s: latency.samples as f64 / seconds,
        latency,
        first_byte: Percentiles::from_samples(&mut all.first_byte_us),
        gateway_cpu_us_per_request,
        bench_cpu_us_per_request,
    })
}

/// What every client of a phase shares.
struct Shared {
    client: reqwest::Client,
    url: reqwest::Url,
    key: Option<String>,
    call: Call,
    body: Bytes,
}

/// When a paced client sends: at `first`, then every `every`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    first: Instant,
    every: Duration,
}

async fn client_loop(
    shared: Arc<Shared>,
    pace: Option<Pace>,
    record_from: Instant,
    end: Instant,
) -> ClientSamples {
    let mut samples = ClientSamples {
        latency_us: Vec::with_capacity(64 * 1024),
        ..ClientSamples::default()
    };
    let mut next = pace.map(|pace| pace.first);
    loop {
        if let (Some(at), Some(pace)) = (next, pace) {
            if at >= end {
                break;
            }
            // Deadlines are absolute, so the timer's coarseness (1 ms)
            // delays single requests, not the rate. A client that falls
            // behind sends at once until it has caught up. Latency is
            // measured from the actual send.
            tokio::time::sleep_until(at.into()).await;
            next = Some(at + pace.every);
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let result = one_request(&shared, sent).await;
        samples.completed += 1;
        if sent < record_from {
            continue;
        }
        match result {
            Ok((total, first_byte)) => {
                samples.latency_us.push(micros(total));
                if let Some(first_byte) = first_byte {
                    samples.first_byte_us.push(micros(first_byte));
                }
            }
            Err(error) => {
                samples.errors += 1;
                if samples.first_error.is_none() {
                    samples.first_error = Some(error);
                }
                // A failing endpoint must not become a busy loop.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    samples
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// Sends one request and reads the whole answer; returns the time to its
/// last byte and, for streams, to its first body byte. Answers are checked
/// (the mock's text, or a stream's end), so that a fast error never passes
/// for a fast answer.
async fn one_request(
    shared: &Shared,
    sent: Instant,
) -> Result<(Duration, Option<Duration>), String> {
    let mut request = shared
        .client
        .post(shared.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(shared.body.clone());
    if let Some(key) = &shared.key {
        request = match shared.call {
            Call::Messages | Call::MessagesEditing | Call::MessagesLarge => request
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            Call::Chat | Call::ChatStream | Call::Responses | Call::ChatLarge => {
                request.bearer_auth(key)
            }
        };
    }
    let mut response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    if !shared.call.streams() {
        let body = response.bytes().await.map_err(|error| error.to_string())?;
        let total = sent.elapsed();
        if !contains(&body, MOCK_TEXT.as_bytes()) {
            return Err(format!(
                "the answer lacks the mock's text: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        return Ok((total, None));
    }
    let mut first_byte = None;
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    while let Some(chunk) = response.chunk().await.map_err(|error| error.to_string())? {
        if chunk.is_empty() {
            continue;
        }
        if first_byte.is_none() {
            first_byte = Some(sent.elapsed());
        }
        tail.extend_from_slice(&chunk);
        if tail.len() > 32 {
            tail.drain(..tail.len() - 32);
        }
    }
    let total = sent.elapsed();
    if !trim_end(&tail).ends_with(b"data: [DONE]") {
        return Err(format!(
            "the stream did not end with [DONE]: …{}",
            String::from_utf8_lossy(&tail)
        ));
    }
    Ok((total, first_byte))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// A process's resident set size and its high-water mark (`VmRSS`,
/// `VmHWM` from `/proc/PID/status`), in bytes; `None` where there is no
/// `/proc` or no such process.
pub fn process_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A process's CPU time (user and system, all threads) in seconds, from
/// `/proc/PID/stat`, in clock ticks of 1/100 s (Linux's `USER_HZ`).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3.. follow; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Samples a process's resident set size every 20 ms and keeps the
/// largest.
#[derive(Debug)]
pub struct MemorySampler {
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MemorySampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                match process_memory(pid) {
                    Some((rss, _)) => {
                        seen.fetch_max(rss, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Self { peak, task }
    }

    /// Stops sampling; returns the largest resident set size seen, in
    /// bytes.
    pub fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The routing table a gateway under test needs: one OpenAI-kind provider
/// `mock` at `upstream_base_url` (`http://127.0.0.1:PORT/v1`) and the alias
/// [`ALIAS`] for its model, as `freehold serve` builds it from
/// [`serve_config`].
///
/// # Errors
/// A provider that cannot be built.
pub fn mock_routes(upstream_base_url: &str) -> Result<Routes, BenchError> {
    use std::collections::{BTreeMap, BTreeSet};

    use freehold_llm::HealthSettings;
    use freehold_llm::catalog::Catalog;
    use freehold_llm::config::ProviderConfig;
    use freehold_llm::presets::ProviderKind;
    use freehold_llm::router::{AliasTarget, Router};

    let provider = ProviderConfig {
        kind: Some(ProviderKind::Openai),
        base_urls: vec![upstream_base_url.to_owned()],
        ..ProviderConfig::default()
    }
    .resolve("mock")
    .and_then(|resolved| resolved.build(&HealthSettings::default()))
    .map_err(|error| BenchError::Setup(format!("the mock provider: {error}")))?;
    let aliases = BTreeMap::from([(
        ALIAS.to_owned(),
        AliasTarget::One(format!("mock:{UPSTREAM_MODEL}")),
    )]);
    Ok(Routes {
        router: Router::new(
            BTreeMap::from([("mock".to_owned(), provider)]),
            aliases,
            Catalog::new(),
        ),
        local_providers: BTreeSet::new(),
        listed_providers: BTreeSet::from(["mock".to_owned()]),
        engine_providers: BTreeSet::new(),
    })
}

/// The configuration file `freehold serve` needs to be the gateway under
/// test: the provider and alias of [`mock_routes`], the ledger (and keys)
/// in the database at `database_url` (`sqlite:PATH` or `postgres://…`).
pub fn serve_config(upstream_base_url: &str, database_url: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = {}\n\n[aliases]\n{ALIAS} = {}\n\n\
         [gateway]\ndatabase = {}\n",
        quote(upstream_base_url),
        quote(&format!("mock:{UPSTREAM_MODEL}")),
        quote(database_url),
    )
}

/// A gateway served in this process on a free port of 127.0.0.1, over
/// [`mock_routes`], with the master key required and the ledger in a
/// database: the path `freehold serve` takes, without its process.
#[derive(Debug)]
pub struct InProcessGateway {
    address: SocketAddr,
    server: JoinHandle<()>,
}

impl InProcessGateway {
    /// Starts one in front of the mock at `upstream_base_url`, accepting
    /// `master_key` (and the virtual keys of its database), its ledger in
    /// the database at `database_url`.
    ///
    /// # Errors
    /// The database cannot be opened or no port can be bound.
    pub async fn start(
        upstream_base_url: &str,
        master_key: &str,
        database_url: &str,
    ) -> Result<Self, BenchError> {
        let store = Store::open(database_url)
            .await
            .map_err(|error| BenchError::Setup(format!("opening the ledger: {error}")))?;
        let (ledger, _writer) = Ledger::start(store.clone());
        let gateway = Gateway::new(
            GatewaySettings::default(),
            mock_routes(upstream_base_url)?,
            Some(master_key.to_owned()),
            Some(store),
            ledger,
        )
        .map_err(|error| BenchError::Setup(format!("the gateway: {error}")))?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|error| BenchError::Setup(format!("binding 127.0.0.1: {error}")))?;
        let address = listener
            .local_addr()
            .map_err(|error| BenchError::Setup(format!("reading the bound address: {error}")))?;
        let limits = gateway.settings().time_limits();
        let app = crate::routes::app(Arc::new(gateway));
        // The server `freehold serve` runs, stopped by dropping it.
        let server = tokio::spawn(async move {
            crate::listen::serve(listener, app, None, limits, std::future::pending()).await;
        });
        Ok(Self { address, server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_phases_are_paced_at_a_25th_but_every_client_still_sends() {
        let options = LoadOptions {
            clients: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rate: Some(5_000.0),
        };
        assert_eq!(large_rate(5_000.0, &options), 200.0);
        // A 25th of 100/s would leave most clients silent for 10 s.
        assert_eq!(large_rate(100.0, &options), 6.4);
        // Never above the run's own rate.
        assert_eq!(large_rate(2.0, &options), 2.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).rev().collect();
        let p = Percentiles::from_samples(&mut samples).unwrap();
        assert_eq!((p.p50_us, p.p90_us, p.p99_us, p.max_us), (50, 90, 99, 100));
        assert_eq!(p.samples, 100);
        assert!((p.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(
            Percentiles::from_samples(&mut [7]).map(|p| p.p99_us),
            Some(7)
        );
        assert!(Percentiles::from_samples(&mut []).is_none());
    }

    #[test]
    fn options_are_checked() {
        assert!(LoadOptions::default().validate().is_ok());
        let none = LoadOptions {
            clients: 0,
            ..LoadOptions::default()
        };
        assert!(none.validate().is_err());
        let zero = LoadOptions {
            duration: Duration::ZERO,
            ..LoadOptions::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn proc_is_read() {
        let pid = std::process::id();
        let (rss, hwm) = process_memory(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(process_cpu_seconds(pid).unwrap() >= 0.0);
        assert!(process_memory(u32::MAX).is_none());
    }

    #[test]
    fn the_serve_config_parses_as_toml_strings() {
        let config = serve_config("http://127.0.0.1:9/v1", "sqlite:/tmp/a \"b\"/g.db");
        assert!(config.contains("base_url = \"http://127.0.0.1:9/v1\""));
        assert!(config.contains("database = \"sqlite:/tmp/a \\\"b\\\"/g.db\""));
    }
}
