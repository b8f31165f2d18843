//! `freehold serve`: the gateway, with its configuration reloaded on SIGHUP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use freehold_gateway::busy_poll::BusyPoll;
use freehold_gateway::ledger::Ledger;
use freehold_gateway::settings::{GatewaySettings, ServeRuntime};
use freehold_gateway::state::{Gateway, Routes};
use freehold_gateway::store::Store;

use crate::setup::{BuiltProviders, Setup};

/// `freehold serve` flags; each overrides the `[gateway]` table.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:4141). Anything but loopback
    /// exposes the gateway to the network: keys are required then.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The usage database: a SQLite file or a postgres:// URL (default
    /// gateway.db in the data directory). Its value is never shown in
    /// `--help`: a postgres:// URL may carry a password.
    #[arg(
        long,
        env = "FREEHOLD_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,
    /// Serve without keys (loopback only): for one person on one machine.
    #[arg(long)]
    no_auth: bool,
    /// Model for requests naming a model no route knows (Claude Code asks
    /// for claude-… ids).
    #[arg(long, value_name = "MODEL")]
    default_model: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How requests are scheduled on threads: `shared` (one work-stealing
    /// runtime, the default) or `per-core` (one single-threaded runtime per
    /// core: less CPU per request under heavy load).
    #[arg(long, value_name = "KIND")]
    runtime: Option<ServeRuntime>,
    /// Keep each per-core runtime polling its sockets for this many
    /// microseconds after a request starts or ends, instead of sleeping:
    /// lower latency on machines whose idle cores are slow to wake, paid in
    /// CPU time spent polling (0: never; at most 1000000).
    #[arg(long, value_name = "MICROS")]
    busy_poll_us: Option<u64>,
}

/// Runs the gateway until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ServeArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    raise_open_files_limit();
    let setup = Setup::load_for_gateway(config, &BuiltProviders::new())?;
    let mut settings = setup.config.gateway.clone();
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if args.database.is_some() {
        settings.database = args.database;
    }
    if args.no_auth {
        settings.require_key = false;
    }
    if args.default_model.is_some() {
        settings.default_model = args.default_model;
    }
    if args.tls_cert.is_some() {
        settings.tls_cert = args.tls_cert;
        settings.tls_key = args.tls_key;
    }
    if let Some(runtime) = args.runtime {
        settings.runtime = runtime;
    }
    if let Some(micros) = args.busy_poll_us {
        settings.busy_poll_us = micros;
    }
    let busy_poll = settings.busy_poll_window().map_err(anyhow::Error::msg)?;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(freehold_gateway::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => bail!("[gateway] tls_cert and tls_key go together: set both or neither"),
    };
    if !settings.require_key && !settings.listen.ip().is_loopback() {
        bail!(
            "refusing to serve without keys on {}: anyone on the network could use it; \
             listen on 127.0.0.1 or drop --no-auth / require_key = false",
            settings.listen
        );
    }
    let master_key = std::env::var(&settings.master_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let database = database_url(&settings)?;
    let store = Store::open(&database)
        .await
        // The store's errors name the database without its password.
        .context("opening the usage database")?;
    // Its reservations name this gateway, so that they are released soon
    // after it dies, by whichever gateway sharing the database sweeps next.
    let store_location = store.location().to_owned();
    let store = store
        .as_gateway(LEASE)
        .await
        .with_context(|| format!("registering with the usage database ({store_location})"))?;
    let (ledger, ledger_task) = Ledger::start(store.clone());
    let ledger_writer = ledger.clone();
    let built = setup.built.clone();
    let routes = routes(setup, &settings)?;
    let provider_count = routes.router.providers().len();
    let alias_count = routes.router.aliases().len();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let access = match (&master_key, settings.require_key) {
        (_, false) => "open (no keys)".to_owned(),
        (Some(_), true) => format!(
            "master key from ${} and virtual keys",
            settings.master_key_env
        ),
        (None, true) => format!(
            "virtual keys only (${} is not set)",
            settings.master_key_env
        ),
    };
    let gateway = Arc::new(
        Gateway::new(settings, routes, master_key, Some(store.clone()), ledger)
            .context("invalid [gateway.privacy] table")?,
    );
    // Signals are listened for before the address is announced: whoever
    // reads it may signal at once, and a signal nobody listens for yet
    // kills the process (SIGTERM) or, for SIGHUP, ends it too.
    let termination = Termination::listen();
    let hangups = hangups();
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "freehold serve: {scheme}://{address} · {provider_count} providers, {alias_count} aliases · \
         access: {access} · ledger: {} ({})",
        store.backend(),
        store.location()
    );
    // Renewing runs apart from the sweep, so that a long sweep (a dead
    // gateway's many holds, a slow database) never delays it.
    let lease = tokio::spawn(keep_lease(store.clone()));
    tokio::spawn(release_dead_holds(store.clone()));
    tokio::spawn(reload_on_hangup(
        hangups,
        Arc::clone(&gateway),
        config.map(Path::to_path_buf),
        built,
    ));
    let app = freehold_gateway::routes::app(Arc::clone(&gateway));
    // On Ctrl-C or SIGTERM the server stops accepting; requests in flight
    // (a long stream, say) get the grace period to finish, then are cut off.
    let limits = gateway.time_limits();
    let grace = limits.grace;
    let cut_off = if gateway.settings().runtime == ServeRuntime::PerCore {
        serve_per_core(
            listener,
            app,
            tls,
            &gateway,
            busy_poll,
            shutdown_signal(termination),
        )
        .await?
    } else {
        freehold_gateway::listen::serve(listener, app, tls, limits, shutdown_signal(termination))
            .await
    };
    if cut_off > 0 {
        eprintln!(
            "freehold serve: {cut_off} connections still answering requests after the \
             {grace:?} grace period ([gateway] shutdown_grace_secs) were cut off"
        );
    }
    // Stopped before the lease ends, so that a renewal cannot take it
    // again afterwards.
    lease.abort();
    let _ = lease.await;
    finish(gateway, &store, &ledger_writer, ledger_task, grace).await
}

/// Once serving has stopped: has the ledger writer write what is queued and
/// stop, within the grace period.
async fn finish(
    gateway: Arc<Gateway>,
    store: &Store,
    ledger: &Ledger,
    ledger_task: tokio::task::JoinHandle<()>,
    grace: Duration,
) -> anyhow::Result<ExitCode> {
    if !gateway.settlements_written(grace).await {
        eprintln!(
            "freehold serve: budget settlements still running after {grace:?} were cut off; \
             their reservations are released by the next gateway to start on this database, \
             or by another already sharing it"
        );
    }
    // Nothing this gateway holds is in use any more: ending its lease lets
    // whatever it still holds (settlements cut off) be released at once.
    if let Err(error) = store.end_lease().await {
        tracing::warn!(%error, "ending the gateway's lease");
    }
    // Told, not left to notice that every handle is gone: the reload task
    // holds the gateway (and so a handle) to the end.
    ledger.close();
    drop(gateway);
    if tokio::time::timeout(grace, ledger_task).await.is_err() {
        eprintln!("freehold serve: usage lines still queued after {grace:?} were not written");
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves with one single-threaded runtime per core (`--runtime per-core`),
/// each on a thread of its own that accepts from the shared listener and
/// serves its connections to the end. The gateway's state (routes, keys,
/// ledger, metrics) is shared as with one runtime. At `signal` every
/// runtime stops accepting; requests in flight get the grace period to
/// finish, and each runtime waits for its budget settlements before its
/// thread ends. With a `busy_poll` window, each runtime keeps polling for
/// that long after its requests start and end ([`BusyPoll`]).
///
/// Returns how many connections were cut off.
///
/// # Errors
/// A runtime or thread that cannot be started.
async fn serve_per_core(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<freehold_gateway::tls::ServerConfig>>,
    gateway: &Arc<Gateway>,
    busy_poll: Option<Duration>,
    signal: impl Future<Output = ()>,
) -> anyhow::Result<usize> {
    let threads = per_core_threads();
    let listener = listener
        .into_std()
        .context("taking over the listening socket")?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut cores = Vec::with_capacity(threads);
    for index in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a per-core runtime")?;
        // Registered with the runtime that will serve it.
        let socket = {
            let _entered = runtime.enter();
            listener
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std)
                .context("sharing the listening socket")?
        };
        let mut stopping = stopping.clone();
        let stopped = async move {
            // A dropped sender (serve returned early) stops it too.
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let app = match busy_poll {
            Some(window) => {
                let poller = BusyPoll::new(window);
                // Dropped with the runtime when the thread ends.
                runtime.spawn(Arc::clone(&poller).run());
                poller.track(app.clone())
            }
            None => app.clone(),
        };
        let shard = serve_one_core(socket, app, tls.clone(), Arc::clone(gateway), stopped);
        let core = std::thread::Builder::new()
            .name(format!("serve-core-{index}"))
            .spawn(move || runtime.block_on(shard))
            .context("starting a per-core thread")?;
        cores.push(core);
    }
    match busy_poll {
        Some(window) => eprintln!(
            "freehold serve: {threads} single-threaded runtimes, one per core, each polling \
             for {} µs after a request starts or ends",
            window.as_micros()
        ),
        None => eprintln!("freehold serve: {threads} single-threaded runtimes, one per core"),
    }
    signal.await;
    let _ = stop.send(true);
    // Each core stops within the grace period, its settlements within as
    // much again.
    let joined = tokio::task::spawn_blocking(move || {
        cores
            .into_iter()
            .map(|core| core.join().unwrap_or(0))
            .sum::<usize>()
    });
    Ok(joined.await.unwrap_or(0))
}

/// The runtimes `--runtime per-core` starts: one per core this process may
/// use, or `TOKIO_WORKER_THREADS` when set (as for the shared runtime).
fn per_core_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|&threads| threads > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// One core's server: accepts until `stopped`, finishes its requests in
/// flight within the grace period, and waits for the budget settlements
/// they leave (which run on this core's runtime). Returns how many
/// connections it cut off.
async fn serve_one_core(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<freehold_gateway::tls::ServerConfig>>,
    gateway: Arc<Gateway>,
    stopped: impl Future<Output = ()>,
) -> usize {
    let limits = gateway.time_limits();
    let grace = limits.grace;
    let cut_off = freehold_gateway::listen::serve(listener, app, tls, limits, stopped).await;
    let _ = gateway.settlements_written(grace).await;
    cut_off
}

/// The routing table from a loaded configuration.
///
/// A hosted provider is routable only when the configuration names it: a
/// `[providers.NAME]` table, an alias's target or `[gateway] default_model`.
/// A built-in preset whose key merely happens to be in the gateway's
/// environment (`OPENAI_API_KEY` exported for something else) is left out,
/// so that requests leave the machine only where the operator said so.
/// Local providers (the embedded engine, local servers) stay.
fn routes(setup: Setup, settings: &GatewaySettings) -> anyhow::Result<Routes> {
    let local_providers: BTreeSet<String> = setup
        .providers
        .iter()
        .filter(|(resolved, _)| resolved.local)
        .map(|(resolved, _)| resolved.name.clone())
        .collect();
    let named = named_providers(&setup, settings);
    let routable: BTreeMap<String, Arc<dyn freehold_llm::Provider>> = setup
        .router
        .providers()
        .iter()
        .filter(|(name, _)| {
            let configured = setup.providers.iter().any(|(resolved, origin)| {
                resolved.name == **name && *origin == crate::setup::Origin::Config
            });
            configured || local_providers.contains(*name) || named.contains(name.as_str())
        })
        .map(|(name, provider)| (name.clone(), Arc::clone(provider)))
        .collect();
    let router = freehold_llm::Router::new(
        routable,
        setup.router.aliases().clone(),
        setup.router.catalog().clone(),
    );
    if let Some(default) = &settings.default_model {
        router
            .resolve(default)
            .map_err(|error| anyhow::anyhow!("[gateway] default_model: {}", error.message))?;
    }
    let listed_providers = setup
        .providers
        .iter()
        .filter(|(_, origin)| *origin == crate::setup::Origin::Config)
        .map(|(resolved, _)| resolved.name.clone())
        .collect();
    let engine_providers = setup
        .providers
        .iter()
        .filter(|(resolved, _)| resolved.kind == freehold_llm::presets::ProviderKind::Local)
        .map(|(resolved, _)| resolved.name.clone())
        .collect();
    Ok(Routes {
        router,
        local_providers,
        listed_providers,
        engine_providers,
    })
}

/// The providers the configuration's aliases and `default_model` name
/// (`provider` of each `provider:model`).
fn named_providers<'a>(setup: &'a Setup, settings: &'a GatewaySettings) -> BTreeSet<&'a str> {
    setup
        .router
        .aliases()
        .values()
        .flat_map(|target| target.names())
        .chain(settings.default_model.as_ref())
        .filter_map(|name| name.split_once(':').map(|(provider, _)| provider))
        .collect()
}

/// Raises this process's soft limit on open files to its hard limit, as Go
/// programs and nginx do. Every client connection and every pooled upstream
/// connection is a file, and a busy gateway (per-core runtimes, several
/// upstreams) can need more than the common soft limit of 1,024, which
/// exists for old programs that use `select`. Where the limit cannot be
/// raised, the gateway runs with what it has.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(%error, soft, hard, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "cannot read the open files limit"),
    }
}

/// How long a gateway's lease on the database lasts: its reservations are
/// released once it has not renewed it for this long.
const LEASE: Duration = Duration::from_secs(60);

/// How often the gateway renews its lease: a quarter of it, so that a few
/// failed renewals in a row (a database restarting) do not end it.
const LEASE_RENEWAL: Duration = Duration::from_secs(15);

/// How soon a failed renewal is tried again.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// How long one renewal may take before it counts as failed.
const LEASE_RENEWAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the gateway looks for reservations left by a dead gateway.
const RESERVATION_SWEEP: Duration = Duration::from_secs(15);

/// Renews this gateway's lease every [`LEASE_RENEWAL`] (it was taken just
/// before), and soon again after a failure. Runs until aborted (at
/// shutdown, before the lease is ended).
async fn keep_lease(store: Store) {
    let mut wait = LEASE_RENEWAL;
    loop {
        tokio::time::sleep(wait).await;
        let renewed = tokio::time::timeout(LEASE_RENEWAL_TIMEOUT, store.renew_lease(LEASE)).await;
        wait = match renewed {
            Ok(Ok(())) => LEASE_RENEWAL,
            Ok(Err(error)) => {
                tracing::warn!(%error, "renewing the gateway's lease on the usage database");
                LEASE_RETRY
            }
            Err(_) => {
                tracing::warn!(
                    "renewing the gateway's lease on the usage database: no answer in {} s",
                    LEASE_RENEWAL_TIMEOUT.as_secs()
                );
                LEASE_RETRY
            }
        };
    }
}

/// At start and every [`RESERVATION_SWEEP`], releases the budget
/// reservations that a gateway which died mid-request left held (this one
/// before a crash, or another sharing the database): those of gateways
/// whose lease ran out, and any past its own expiry.
async fn release_dead_holds(store: Store) {
    let mut sweeps = tokio::time::interval(RESERVATION_SWEEP);
    loop {
        sweeps.tick().await;
        match store.release_expired_reservations().await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(
                released,
                "released budget reservations left by a gateway that stopped mid-request"
            ),
            Err(error) => tracing::warn!(%error, "releasing expired budget reservations"),
        }
    }
}

/// SIGHUP, listened for from now on; `None` (logged) when the process
/// cannot listen for it.
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot listen for SIGHUP: configuration reload is off");
        })
        .ok()
}

/// Reloads providers, aliases and models on each of `hangups`; requests
/// in flight keep the table they started with. Providers whose settings did
/// not change are kept as they are (`built`: the ones running now).
async fn reload_on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    gateway: Arc<Gateway>,
    config: Option<PathBuf>,
    mut built: BuiltProviders,
) {
    let Some(mut hangups) = hangups else { return };
    while hangups.recv().await.is_some() {
        let reloaded = Setup::load_for_gateway(config.as_deref(), &built).and_then(|setup| {
            refuse_broken_providers(&setup, &built)?;
            let now_built = setup.built.clone();
            Ok((routes(setup, gateway.settings())?, now_built))
        });
        match reloaded {
            Ok((routes, now_built)) => {
                let (providers, aliases) = (
                    routes.router.providers().len(),
                    routes.router.aliases().len(),
                );
                gateway.reload(routes);
                built = now_built;
                eprintln!(
                    "freehold serve: configuration reloaded ({providers} providers, {aliases} aliases)"
                );
            }
            Err(error) => eprintln!(
                "freehold serve: configuration NOT reloaded, the running one stays: {error:#}"
            ),
        }
    }
}

/// Refuses a reloaded configuration in which a provider that works now
/// could not be built (a header value HTTP forbids, say): taking it would
/// swap a working provider for one that fails every request.
fn refuse_broken_providers(setup: &Setup, running: &BuiltProviders) -> anyhow::Result<()> {
    let broken: Vec<String> = setup
        .unusable
        .iter()
        .filter(|(name, _)| running.get(*name).is_some_and(|old| old.usable))
        .map(|(name, why)| format!("[providers.{name}]: {why}"))
        .collect();
    if broken.is_empty() {
        for (name, why) in &setup.unusable {
            eprintln!("freehold serve: provider {name} cannot be used: {why}");
        }
        return Ok(());
    }
    bail!(
        "it would break providers that work now: {}",
        broken.join("; ")
    )
}

async fn shutdown_signal(termination: Termination) {
    termination.wait().await;
    eprintln!("freehold serve: shutting down; finishing requests in flight");
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment this is made,
/// so that one that comes before [`Termination::wait`] is awaited is kept
/// rather than killing the process. Make it inside a tokio runtime.
pub(crate) struct Termination {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Termination {
    /// Starts listening.
    pub(crate) fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Returns at the first signal (at once for one already received).
    pub(crate) async fn wait(mut self) {
        async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(self.interrupt.as_mut()) => {}
            () = next(self.terminate.as_mut()) => {}
        }
    }
}

/// The database URL: the configured one, or `gateway.db` in the data
/// directory.
pub(crate) fn database_url(settings: &GatewaySettings) -> anyhow::Result<String> {
    if let Some(url) = &settings.database {
        return Ok(url.clone());
    }
    let dir = freehold_agent::session::data_dir()
        .context("no data directory: set FREEHOLD_DATA_DIR or HOME, or pass --database")?;
    Ok(format!("sqlite:{}", dir.join("gateway.db").display()))
}
