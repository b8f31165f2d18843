//! The `[gateway]` configuration table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[gateway]`: how `freehold serve` listens, authenticates and limits.
/// Flags of `freehold serve` override these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The address to listen on. Loopback unless told otherwise: exposing
    /// the gateway to a network is a decision, not a default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The environment variable holding the master key. With neither a
    /// master key nor a database of virtual keys the gateway refuses to
    /// start on a non-loopback address.
    #[serde(default = "default_master_key_env")]
    pub master_key_env: String,
    /// Whether requests need a key at all. On by default; `false` is for a
    /// single user on loopback.
    #[serde(default = "default_true")]
    pub require_key: bool,
    /// The usage database: a SQLite path or `postgres://…` URL (default:
    /// `gateway.db` in the data directory).
    #[serde(default)]
    pub database: Option<String>,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The largest `max_tokens` a client may ask for; larger requests are
    /// capped to it (not refused). Budgets assume it for requests that set
    /// no limit.
    #[serde(default = "default_max_tokens_cap")]
    pub max_tokens_cap: u32,
    /// Seconds a whole request may take, streaming included.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Seconds a streamed answer may go without sending the client anything
    /// before the gateway sends the protocol's keepalive; 0: never. Before
    /// the provider's first event (a local model reading a long prompt)
    /// the first keepalive also begins the answer: status 200 and the
    /// protocol's opening event, so a failure after that is an error event
    /// in the stream rather than an HTTP status.
    #[serde(default = "default_stream_keepalive_secs")]
    pub stream_keepalive_secs: u64,
    /// The model used when a client asks for one no route knows (Claude Code
    /// asks for `claude-…` ids); `None`: such requests fail with 404.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Write request and response bodies to the usage ledger, and what an
    /// upstream said of a request it refused as invalid to the log. Off by
    /// default: the ledger holds who used what, not what they said.
    #[serde(default)]
    pub log_bodies: bool,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Seconds a client may take to send a request's head, or between two
    /// pieces of its body; also how long an idle keep-alive connection is
    /// kept. At least 1.
    #[serde(default = "default_client_timeout_secs")]
    pub client_timeout_secs: u64,
    /// Whether `/metrics` and the provider details of `/health` answer
    /// without a key. Default: only when listening on loopback, since they
    /// name keys, providers and upstream addresses.
    #[serde(default)]
    pub open_status: Option<bool>,
    /// Seconds to let requests in flight finish at shutdown.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// How requests are scheduled on threads (`freehold serve --runtime`).
    #[serde(default)]
    pub runtime: ServeRuntime,
    /// Microseconds each runtime keeps polling its sockets after a request
    /// starts or ends instead of sleeping ([`crate::busy_poll`]); 0 (the
    /// default) never; at most [`MAX_BUSY_POLL_US`]. Needs
    /// `runtime = "per-core"`. Trades CPU time for latency on machines
    /// whose idle cores are slow to wake.
    #[serde(default)]
    pub busy_poll_us: u64,
    /// `[gateway.privacy]`: detectors that keep requests local, redact or
    /// block them. Absent: no content is inspected (a key's `local_only`
    /// and the privacy header still keep requests local).
    #[serde(default)]
    pub privacy: Option<crate::privacy::PrivacySettings>,
}

/// The longest `busy_poll_us` accepted: one second.
pub const MAX_BUSY_POLL_US: u64 = 1_000_000;

/// How `freehold serve` schedules requests on threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServeRuntime {
    /// One work-stealing runtime whose threads share every connection: a
    /// busy thread's work is taken over by an idle one.
    #[default]
    Shared,
    /// One single-threaded runtime per core. Each accepts connections and
    /// serves them to the end, so a request never moves between threads:
    /// less CPU per request under heavy load (threads do not wake each
    /// other), but a connection waits for its own thread when that one is
    /// busy.
    PerCore,
}

impl ServeRuntime {
    /// The name used in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerCore => "per-core",
        }
    }
}

impl std::fmt::Display for ServeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ServeRuntime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "shared" => Ok(Self::Shared),
            "per-core" => Ok(Self::PerCore),
            other => Err(format!(
                "unknown runtime `{other}`: use `shared` (one work-stealing runtime) or \
                 `per-core` (one single-threaded runtime per core)"
            )),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4141))
}

fn default_master_key_env() -> String {
    "FREEHOLD_MASTER_KEY".into()
}

fn default_true() -> bool {
    true
}

fn default_max_body_bytes() -> usize {
    // Coding agents send tens of thousands of tokens of prompt and tools,
    // and images travel as base64: 32 MiB holds that with room to spare.
    32 * 1024 * 1024
}

fn default_max_tokens_cap() -> u32 {
    32_768
}

fn default_request_timeout_secs() -> u64 {
    600
}

fn default_stream_keepalive_secs() -> u64 {
    // What servers and proxies commonly use (the SSE specification suggests
    // about 15 s), well inside the 60 s idle limit of common proxies. Codex
    // gives up on a Responses stream after 5 minutes without an event;
    // Claude Code after 5 minutes without one too, but counts bytes that
    // keep arriving as activity for a while (docs/gateway.md).
    15
}

/// The longest time limit honoured: a year. Larger settings mean "never"
/// in practice, and would overflow the clock's arithmetic.
const LONGEST_LIMIT_SECS: u64 = 365 * 24 * 3600;

fn default_client_timeout_secs() -> u64 {
    30
}

fn default_shutdown_grace_secs() -> u64 {
    30
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            master_key_env: default_master_key_env(),
            require_key: true,
            database: None,
            max_body_bytes: default_max_body_bytes(),
            max_tokens_cap: default_max_tokens_cap(),
            request_timeout_secs: default_request_timeout_secs(),
            stream_keepalive_secs: default_stream_keepalive_secs(),
            client_timeout_secs: default_client_timeout_secs(),
            open_status: None,
            default_model: None,
            log_bodies: false,
            tls_cert: None,
            tls_key: None,
            shutdown_grace_secs: default_shutdown_grace_secs(),
            runtime: ServeRuntime::Shared,
            busy_poll_us: 0,
            privacy: None,
        }
    }
}

impl GatewaySettings {
    /// The whole-request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.min(LONGEST_LIMIT_SECS))
    }

    /// How long a stream may stay silent before a keepalive; `None`: never.
    pub fn stream_keepalive(&self) -> Option<Duration> {
        (self.stream_keepalive_secs > 0)
            .then(|| Duration::from_secs(self.stream_keepalive_secs.min(LONGEST_LIMIT_SECS)))
    }

    /// Whether `/metrics` and `/health`'s details need no key
    /// (`open_status`, by default whether it listens on loopback).
    pub fn status_is_open(&self) -> bool {
        self.open_status
            .unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    /// How long a budget reservation is held before any gateway may
    /// release it as left by a dead one: longer than a request can take
    /// here. A request ends by `request_timeout` (upstream call and stream
    /// together), its last write to a client that stopped reading fails
    /// after `client_timeout`, and at shutdown it is cut off after the
    /// grace; five minutes more are a margin.
    pub fn reservation_hold(&self) -> Duration {
        let limits = self.time_limits();
        self.request_timeout() + limits.client + limits.grace + Duration::from_secs(300)
    }

    /// How long requests in flight are given to finish at shutdown
    /// (`shutdown_grace_secs`, at most a year, as every time limit here).
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.min(LONGEST_LIMIT_SECS))
    }

    /// The time limits of the gateway's HTTP server, without a notice for
    /// the streams open at its end ([`crate::state::Gateway::time_limits`] has
    /// its gateway's).
    pub fn time_limits(&self) -> crate::listen::TimeLimits {
        crate::listen::TimeLimits {
            client: self.client_timeout(),
            grace: self.shutdown_grace(),
            stream_notice: None,
        }
    }

    /// How long each runtime polls after a request starts or ends
    /// (`busy_poll_us`), when it does.
    ///
    /// # Errors
    /// A window over [`MAX_BUSY_POLL_US`], or busy polling asked of the
    /// shared runtime, which cannot keep each of its threads polling.
    pub fn busy_poll_window(&self) -> Result<Option<Duration>, String> {
        match (self.busy_poll_us, self.runtime) {
            (0, _) => Ok(None),
            (micros, _) if micros > MAX_BUSY_POLL_US => Err(format!(
                "[gateway] busy_poll_us = {micros} is above the maximum of \
                 {MAX_BUSY_POLL_US} µs (one second): a window that long keeps a core busy \
                 between requests far apart; a few hundred to a few thousand µs is usual"
            )),
            (micros, ServeRuntime::PerCore) => Ok(Some(Duration::from_micros(micros))),
            (micros, ServeRuntime::Shared) => Err(format!(
                "[gateway] busy_poll_us = {micros} needs the per-core runtime: set \
                 runtime = \"per-core\" (or pass --runtime per-core), or busy_poll_us = 0"
            )),
        }
    }

    /// How long a client may leave a connection silent while the gateway
    /// waits for its request (`client_timeout_secs`, at least a second).
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout_secs.clamp(1, LONGEST_LIMIT_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_and_need_a_key() {
        let settings: GatewaySettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, GatewaySettings::default());
        assert!(settings.listen.ip().is_loopback());
        assert!(settings.require_key);
    }

    #[test]
    fn the_runtime_is_named_alike_in_the_file_and_on_the_command_line() {
        let settings: GatewaySettings = serde_json::from_str(r#"{"runtime": "per-core"}"#).unwrap();
        assert_eq!(settings.runtime, ServeRuntime::PerCore);
        for runtime in [ServeRuntime::Shared, ServeRuntime::PerCore] {
            assert_eq!(runtime.name().parse::<ServeRuntime>(), Ok(runtime));
            assert_eq!(runtime.to_string(), runtime.name());
        }
        let error = "percore".parse::<ServeRuntime>().unwrap_err();
        assert!(
            error.contains("`percore`") && error.contains("`per-core`"),
            "{error}"
        );
        let error = serde_json::from_str::<GatewaySettings>(r#"{"runtime": "percore"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("per-core"), "{error}");
    }

    #[test]
    fn busy_polling_is_for_the_per_core_runtime_only() {
        assert_eq!(GatewaySettings::default().busy_poll_window(), Ok(None));
        let settings: GatewaySettings =
            serde_json::from_str(r#"{"runtime": "per-core", "busy_poll_us": 250}"#).unwrap();
        assert_eq!(
            settings.busy_poll_window(),
            Ok(Some(Duration::from_micros(250)))
        );
        let shared: GatewaySettings = serde_json::from_str(r#"{"busy_poll_us": 250}"#).unwrap();
        let error = shared.busy_poll_window().unwrap_err();
        assert!(
            error.contains("busy_poll_us = 250") && error.contains("--runtime per-core"),
            "{error}"
        );
        let too_long = GatewaySettings {
            busy_poll_us: MAX_BUSY_POLL_US + 1,
            ..settings
        };
        let error = too_long.busy_poll_window().unwrap_err();
        assert!(error.contains("1000001 is above the maximum"), "{error}");
    }

    /// Time limits set absurdly high are a year at most: each is added to
    /// the time now, which would overflow and panic on every request.
    #[test]
    fn every_time_limit_is_at_most_a_year() {
        let settings: GatewaySettings = serde_json::from_value(serde_json::json!({
            "request_timeout_secs": u64::MAX,
            "client_timeout_secs": u64::MAX,
            "shutdown_grace_secs": u64::MAX,
            "stream_keepalive_secs": u64::MAX,
        }))
        .unwrap();
        let year = Duration::from_secs(LONGEST_LIMIT_SECS);
        let limits = settings.time_limits();
        assert_eq!(limits.client, year);
        assert_eq!(limits.grace, year);
        assert_eq!(settings.request_timeout(), year);
        assert_eq!(settings.stream_keepalive(), Some(year));
        let now = std::time::Instant::now();
        assert!(now.checked_add(settings.reservation_hold()).is_some());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = serde_json::from_str::<GatewaySettings>(r#"{"lisen": "0.0.0.0:1"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("lisen"), "{error}");
    }
}
