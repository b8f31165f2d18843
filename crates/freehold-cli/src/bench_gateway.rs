//! `freehold bench gateway`: what `freehold serve` adds to a request,
//! against direct calls to the same upstream in the same run.
//!
//! This process starts the mock upstream (`freehold_gateway::mock`) and the
//! load generator; the gateway is this very binary's `freehold serve`, run
//! as a child process with a generated configuration (one OpenAI-kind
//! provider at the mock, the master key required, the usage ledger on a
//! SQLite file in a temporary directory), so that its resident memory and
//! CPU time are its own. `--in-process` serves the gateway in this process
//! instead (no memory figure then). The measuring itself is
//! `freehold_gateway::bench`.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use freehold_gateway::bench::{
    self, DEFAULT_CLIENTS, GatewayUnderTest, InProcessGateway, LoadOptions, MAX_CLIENTS,
    Measurement, Progress, RelayUnderTest, Report,
};
use freehold_gateway::mock::MockUpstream;
use freehold_gateway::settings::ServeRuntime;
use freehold_gateway::store::{NewKey, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cpu_affinity::{self, CpuList};

/// Arguments of `freehold bench gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayBenchArgs {
    /// Concurrent clients, each looping requests over its own keep-alive
    /// connection.
    #[arg(short, long, value_name = "N", default_value_t = DEFAULT_CLIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS as i64))]
    clients: u32,
    /// Measured time per phase (`10s`, `500ms`, `1.5` seconds).
    #[arg(short, long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each phase.
    #[arg(short, long, value_name = "TIME", default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Requests per second in all offered in the paced phases, where the
    /// latency goals are judged (0 leaves them out).
    #[arg(short, long, value_name = "N", default_value_t = bench::goals::REQUESTS_PER_S)]
    rate: f64,
    /// Worker threads of the gateway's async runtime (its
    /// `TOKIO_WORKER_THREADS`); default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    gateway_threads: Option<u32>,
    /// How the gateway schedules requests on threads: `shared` or
    /// `per-core` (its `freehold serve --runtime`).
    #[arg(long, value_name = "KIND", conflicts_with = "in_process")]
    gateway_runtime: Option<ServeRuntime>,
    /// The gateway's `--busy-poll-us`: microseconds each of its per-core
    /// runtimes keeps polling after a request starts or ends (needs
    /// `--gateway-runtime per-core`).
    #[arg(long, value_name = "MICROS", conflicts_with = "in_process")]
    gateway_busy_poll_us: Option<u64>,
    /// Run the gateway (and the relay) on these CPUs only (`0,1`, `0-1`),
    /// and the load generator and mock upstream on the others: on a
    /// many-core machine, the gateway measured with N cores of its own.
    /// Linux only.
    #[arg(long, value_name = "LIST", conflicts_with = "in_process")]
    gateway_cpus: Option<CpuList>,
    /// The key the gateway's requests carry: `master` (the master key:
    /// no lookup, limits or budget), `virtual` (a virtual key without
    /// limits), or `limited` (a virtual key with requests- and
    /// tokens-per-minute limits and a budget, all far above what the run
    /// uses, so that every request pays for its rate-limit check and its
    /// budget reservation and settlement without being refused).
    #[arg(long, value_name = "KIND", default_value = "master")]
    gateway_key: KeyKind,
    /// The gateway's database (its `[gateway] database`): `postgres://…`
    /// measures keys, budgets, shared rate limits and the ledger on that
    /// server. Use a scratch database: the run's key and ledger lines stay
    /// in it (the key revoked). Default: a SQLite file in a temporary
    /// directory.
    #[arg(long, value_name = "URL")]
    gateway_database: Option<String>,
    /// Serve the gateway in this process instead of running `freehold
    /// serve` (its memory is not measured then).
    #[arg(long)]
    in_process: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Which key a run's requests carry (`--gateway-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KeyKind {
    /// The master key.
    Master,
    /// A virtual key without limits or budget.
    Virtual,
    /// A virtual key with limits and a budget that the run never reaches.
    Limited,
}

impl KeyKind {
    /// What the report says about it.
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Master => "master key",
            KeyKind::Virtual => "a virtual key without limits",
            KeyKind::Limited => "a virtual key with rpm, tpm and a budget (never reached)",
        }
    }
}

/// Creates the run's virtual key in the gateway's database, before the
/// gateway starts; returns the store (to revoke it after) and its secret.
async fn create_bench_key(
    database_url: &str,
    kind: KeyKind,
) -> anyhow::Result<(Store, String, String)> {
    let store = Store::open(database_url)
        .await
        .context("opening the gateway's database to create the run's key")?;
    // Far above any rate this machine reaches: checked, never hit.
    let limited = kind == KeyKind::Limited;
    let (key, secret) = store
        .create_key(NewKey {
            name: format!("bench-{}", bench_key().trim_start_matches("fh-bench-")),
            rpm: limited.then_some(1_000_000_000),
            tpm: limited.then_some(1_000_000_000),
            budget_usd: limited.then_some(1_000_000.0),
            ..NewKey::default()
        })
        .await
        .context("creating the run's virtual key")?;
    Ok((store, secret, key.id))
}

/// Arguments of the hidden `freehold bench relay`.
#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// Where to relay to (`127.0.0.1:PORT`).
    #[arg(long, value_name = "ADDR")]
    to: std::net::SocketAddr,
}

/// `freehold bench relay`: relays a free loopback port to `--to`, after
/// printing `relay: http://ADDR` for the parent.
pub(crate) async fn relay(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the relay to a loopback port")?;
    println!("relay: http://{}", listener.local_addr()?);
    bench::relay(listener, args.to).await;
    Ok(ExitCode::SUCCESS)
}

/// `10s`, `500ms`, `2m` or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (10s, 500ms, 2m)"))?;
    if !value.is_finite() || value < 0.0 || value * scale > 86_400.0 {
        return Err(format!("`{text}` is out of range (0 to 24 h)"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// `freehold bench gateway`.
pub(crate) async fn gateway(args: GatewayBenchArgs) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        clients: args.clients as usize,
        duration: args.duration,
        warmup: args.warmup,
        rate: (args.rate != 0.0).then_some(args.rate),
    };
    options.validate()?;
    if args.gateway_busy_poll_us.is_some_and(|micros| micros > 0)
        && args.gateway_runtime != Some(ServeRuntime::PerCore)
    {
        bail!(
            "--gateway-busy-poll-us needs --gateway-runtime per-core: busy polling keeps \
             single-threaded runtimes polling"
        );
    }
    // Listened for before any child starts: a signal that came before the
    // wait below would otherwise kill this process and leave them running.
    let termination = crate::serve::Termination::listen();
    let load_cpus = args
        .gateway_cpus
        .as_ref()
        .map(cpu_affinity::split)
        .transpose()?;
    let mock = MockUpstream::start()
        .await
        .context("starting the mock upstream")?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let key = bench_key();
    let database = args
        .gateway_database
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("gateway.db").display()));
    // The key the requests carry: the master key, or a virtual one made
    // for this run.
    let virtual_key = match args.gateway_key {
        KeyKind::Master => None,
        kind => Some(create_bench_key(&database, kind).await?),
    };
    let request_key = virtual_key
        .as_ref()
        .map_or_else(|| key.clone(), |(_, secret, _)| secret.clone());
    let database_kind = if database.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    // Whichever runs, it lives until the report is made.
    let mut relay_child = None;
    let (under_test, _in_process, mut child) = if args.in_process {
        let gateway = InProcessGateway::start(&mock.base_url(), &key, &database).await?;
        let under_test = GatewayUnderTest {
            base_url: gateway.base_url(),
            key: request_key.clone(),
            pid: None,
            description: format!(
                "served in this process (memory not measured: --in-process), requests with {}, \
                 ledger on {database_kind}",
                args.gateway_key.describe()
            ),
            relay: None,
        };
        (under_test, Some(gateway), None)
    } else {
        let cpus = args.gateway_cpus.as_ref();
        let (child, base_url) = spawn_serve(
            dir.path(),
            &mock,
            &key,
            &database,
            args.gateway_threads,
            ServeFlags {
                runtime: args.gateway_runtime,
                busy_poll_us: args.gateway_busy_poll_us,
            },
            cpus,
        )
        .await?;
        let pid = child.id();
        relay_child = Some(spawn_relay(&mock, args.gateway_threads, cpus).await?);
        if let Some(load_cpus) = &load_cpus {
            cpu_affinity::confine_this_process(load_cpus)?;
        }
        let relay = relay_child
            .as_ref()
            .map(|(child, base_url)| RelayUnderTest {
                base_url: base_url.clone(),
                pid: child.id(),
            });
        let under_test = GatewayUnderTest {
            base_url,
            key: request_key.clone(),
            pid,
            relay,
            description: format!(
                "`freehold serve` as a child process (pid {}), requests with {}, \
                 ledger on {database_kind}, default log level, {} runtime{}, {} worker threads, {}",
                pid.map_or_else(|| "?".into(), |p| p.to_string()),
                args.gateway_key.describe(),
                args.gateway_runtime.unwrap_or_default(),
                args.gateway_busy_poll_us
                    .filter(|&micros| micros > 0)
                    .map_or_else(String::new, |micros| format!(
                        " busy-polling {micros} µs after each request start and end"
                    )),
                args.gateway_threads
                    .map_or_else(|| "default".into(), |n| n.to_string()),
                match (&args.gateway_cpus, &load_cpus) {
                    (Some(gateway), Some(load)) => format!(
                        "on CPUs {gateway} (load and mock on CPUs {})",
                        CpuList::from(load.clone())
                    ),
                    _ => "CPUs shared with the load".into(),
                }
            ),
        };
        (under_test, None, Some(child))
    };
    eprintln!(
        "freehold bench gateway: {} clients, {:?} warm-up + {:?} per phase; gateway: {}",
        options.clients, options.warmup, options.duration, under_test.description
    );
    let run = bench::run(&mock, &under_test, &options, &|progress| match progress {
        Progress::Phase { name, index, of } => eprintln!("[{index}/{of}] {name}…"),
        Progress::Done(m) => eprintln!(
            "      {:.0} requests/s, p50 {} µs, p99 {} µs{}",
            m.requests_per_s,
            m.latency.p50_us,
            m.latency.p99_us,
            if m.errors > 0 {
                format!(", {} errors", m.errors)
            } else {
                String::new()
            }
        ),
    });
    // Stopped by a signal, the bench still stops the gateway and the relay
    // it started and removes their temporary directory, instead of leaving
    // them running.
    let report = tokio::select! {
        report = run => report.map_err(anyhow::Error::from),
        () = termination.wait() => Err(anyhow::anyhow!(
            "interrupted: the gateway and relay this bench started were stopped"
        )),
    };
    for child in child.iter_mut().chain(relay_child.as_mut().map(|(c, _)| c)) {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    // A database the run did not create keeps its lines, but not a key
    // that works.
    if let Some((store, _, id)) = &virtual_key {
        if let Err(error) = store.revoke_key(id).await {
            eprintln!("freehold bench gateway: could not revoke the run's key {id}: {error}");
        }
        store.close().await;
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, args.gateway_cpus.is_some()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `freehold bench relay` in front of `mock`, with the gateway's
/// worker threads and CPUs, so that both run as alike as they can; returns
/// it and its URL once it listens.
async fn spawn_relay(
    mock: &MockUpstream,
    threads: Option<u32>,
    cpus: Option<&CpuList>,
) -> anyhow::Result<(Child, String)> {
    let mut command = child_command(threads)?;
    command
        .args(["bench", "relay", "--to"])
        .arg(mock.address().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_on(&mut command, cpus).context("starting the relay")?;
    let stdout = child.stdout.take().context("reading the relay's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("relay: ") {
                return Ok(url.trim().to_owned());
            }
        }
        bail!("the relay exited before listening")
    })
    .await
    .context("the relay did not listen within 30 s")??;
    Ok((child, url))
}

/// A master key for this run only (the gateway listens on loopback).
fn bench_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("fh-bench-{:x}-{nanos:x}", std::process::id())
}

/// This binary as a child process with a clean environment (nothing of
/// this one, a `RUST_LOG` or a user's configuration, changes what is
/// measured), `threads` async worker threads when given, and no stdin;
/// killed when dropped.
fn child_command(threads: Option<u32>) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("finding the freehold binary")?;
    let mut command = Command::new(exe);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(threads) = threads {
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    Ok(command)
}

/// Spawns `command`, on `cpus` when given.
fn spawn_on(command: &mut Command, cpus: Option<&CpuList>) -> anyhow::Result<Child> {
    match cpus {
        Some(cpus) => cpu_affinity::spawn_on(cpus, || Ok(command.spawn()?)),
        None => Ok(command.spawn()?),
    }
}

/// The `freehold serve` flags a run passes on.
struct ServeFlags {
    runtime: Option<ServeRuntime>,
    busy_poll_us: Option<u64>,
}

/// Runs `freehold serve` on a free loopback port in front of `mock`, with
/// its own home in `dir`; returns it and its URL once it listens.
async fn spawn_serve(
    dir: &Path,
    mock: &MockUpstream,
    key: &str,
    database: &str,
    threads: Option<u32>,
    flags: ServeFlags,
    cpus: Option<&CpuList>,
) -> anyhow::Result<(Child, String)> {
    let config = dir.join("config.toml");
    std::fs::write(&config, bench::serve_config(&mock.base_url(), database))
        .context("writing the gateway's configuration")?;
    let home = dir.join("home");
    let mut command = child_command(threads)?;
    command
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(flags.runtime.map(|runtime| format!("--runtime={runtime}")))
        .args(
            flags
                .busy_poll_us
                .map(|micros| format!("--busy-poll-us={micros}")),
        )
        .env("HOME", &home)
        .env("FREEHOLD_DATA_DIR", home.join("data"))
        .env("FREEHOLD_MODELS_DIR", home.join("models"))
        .env("FREEHOLD_MASTER_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn_on(&mut command, cpus).context("starting freehold serve")?;
    let stderr = child
        .stderr
        .take()
        .context("reading freehold serve's output")?;
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("freehold serve: http://")
                && let Some(address) = rest.split_whitespace().next()
            {
                return Ok(format!("http://{address}"));
            }
            eprintln!("serve: {line}");
        }
        bail!("freehold serve exited before listening")
    })
    .await
    .context("freehold serve did not listen within 60 s")??;
    // Keep reading its log, so that it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("serve: {line}");
        }
    });
    Ok((child, url))
}

/// The report as tables.
/// The report as tables; `cpus_split` when the gateway had CPUs of its own
/// (`--gateway-cpus`).
fn render(report: &Report, cpus_split: bool) -> String {
    let sharing = if cpus_split {
        "for the load generator and the mock upstream (the gateway's own are below)"
    } else {
        "shared by the load generator, the mock upstream and the gateway"
    };
    let mut out = format!(
        "{} clients, {} s warm-up + {} s measured per phase, {} cores {sharing}\ngateway: {}\n\n",
        report.clients, report.warmup_s, report.duration_s, report.cores, report.gateway
    );
    out.push_str(
        "| phase | offered/s | requests/s | p50 µs | p90 µs | p99 µs | max µs | first byte p50 / p99 µs | errors | gateway (relay) CPU µs/request |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for m in &report.phases {
        out.push_str(&row(m));
    }
    out.push_str(
        "\n`max` phases: each client sends again as soon as it is answered (the most the loop \
         reaches; latency there is mostly queueing); the others are paced at the offered rate \
         in all. `relay` goes through a process that copies bytes without reading them: what \
         one more process on the path costs on this machine.\n",
    );
    out.push_str(
        "\nadded over the reference (phase − reference, same run):\n\n\
         | phase | reference | metric | added p50 µs | added p99 µs | ratio p50 | ratio p99 | ratio requests/s |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for a in &report.added {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            a.phase,
            a.reference,
            a.metric,
            a.p50_us,
            a.p99_us,
            a.ratio_p50,
            a.ratio_p99,
            a.ratio_requests_per_s
        ));
    }
    if let Some(memory) = &report.memory {
        out.push_str(&format!(
            "\ngateway memory: {:.1} MB resident idle, {:.1} MB peak under load (VmHWM {:.1} MB)\n",
            memory.idle_rss_bytes as f64 / 1e6,
            memory.peak_rss_bytes as f64 / 1e6,
            memory.hwm_bytes as f64 / 1e6,
        ));
    }
    if let Some(cpu) = report
        .phase("gateway max")
        .and_then(|m| m.gateway_cpu_us_per_request)
        .filter(|cpu| *cpu > 0.0)
    {
        out.push_str(&format!(
            "gateway CPU: {cpu:.0} µs per non-streaming request, i.e. about {:.0} requests/s \
             per core if it had the core to itself\n",
            1e6 / cpu
        ));
    }
    out.push_str("\ngoals:\n");
    for goal in &report.goals {
        let verdict = match goal.met {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "n/a ",
        };
        out.push_str(&format!(
            "  [{verdict}] {}: {} (goal {})\n",
            goal.name, goal.measured, goal.target
        ));
    }
    if !cpus_split {
        out.push_str(
            "\nThe load generator and the mock run on the same cores as the gateway: requests/s \
             is what the whole loop reaches on this machine, and direct calls pay the generator's \
             share too.\n",
        );
    }
    out
}

fn row(m: &Measurement) -> String {
    let first_byte = m.first_byte.map_or_else(
        || "–".to_owned(),
        |f| format!("{} / {}", f.p50_us, f.p99_us),
    );
    let cpu = m
        .gateway_cpu_us_per_request
        .map_or_else(|| "–".to_owned(), |c| format!("{c:.0}"));
    let offered = m
        .offered_per_s
        .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}"));
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
        m.name,
        offered,
        m.requests_per_s,
        m.latency.p50_us,
        m.latency.p90_us,
        m.latency.p99_us,
        m.latency.max_us,
        first_byte,
        m.errors,
        cpu
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
