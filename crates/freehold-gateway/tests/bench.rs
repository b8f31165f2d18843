//! The gateway benchmark's library, run very briefly: the report must be
//! whole and consistent. No timing is asserted (a shared machine's
//! figures are whatever they are).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use freehold_gateway::bench::{
    self, GatewayUnderTest, InProcessGateway, LoadOptions, Percentiles, Progress, RelayUnderTest,
};
use freehold_gateway::mock::MockUpstream;

const MASTER: &str = "fh-bench-master-key";

fn ordered(p: &Percentiles) {
    assert!(p.samples > 0);
    assert!(p.p50_us <= p.p90_us, "{p:?}");
    assert!(p.p90_us <= p.p99_us, "{p:?}");
    assert!(p.p99_us <= p.max_us, "{p:?}");
    assert!(p.mean_us <= f64::from(p.max_us), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_every_phase() {
    let mock = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("gateway.db");
    let database_url = format!("sqlite:{}", database.display());
    let gateway = InProcessGateway::start(&mock.base_url(), MASTER, &database_url)
        .await
        .unwrap();
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_address = relay_listener.local_addr().unwrap();
    let relay = tokio::spawn(bench::relay(relay_listener, mock.address()));
    let under_test = GatewayUnderTest {
        base_url: gateway.base_url(),
        key: MASTER.into(),
        // Its own process, to exercise the memory and CPU readings.
        pid: Some(std::process::id()),
        description: "in process".into(),
        relay: Some(RelayUnderTest {
            base_url: format!("http://{relay_address}"),
            pid: Some(std::process::id()),
        }),
    };
    let options = LoadOptions {
        clients: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        rate: Some(400.0),
    };
    let phases = std::sync::Mutex::new(Vec::new());
    let report = bench::run(&mock, &under_test, &options, &|progress| {
        if let Progress::Phase { name, .. } = progress {
            phases.lock().unwrap().push(name.to_owned());
        }
    })
    .await
    .unwrap();

    let names: Vec<&str> = report.phases.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "direct max",
            "gateway max",
            "direct",
            "relay",
            "gateway",
            "direct stream",
            "gateway stream",
            "gateway messages",
            "gateway messages editing",
            "gateway responses",
            "direct large",
            "gateway messages large"
        ]
    );
    assert_eq!(*phases.lock().unwrap(), names);
    for phase in &report.phases {
        assert!(phase.requests > 0, "{phase:?}");
        assert_eq!(phase.errors, 0, "{phase:?}");
        assert!(phase.requests_per_s > 0.0, "{phase:?}");
        ordered(&phase.latency);
        match &phase.first_byte {
            Some(first) => {
                ordered(first);
                assert!(first.p50_us <= phase.latency.max_us, "{phase:?}");
            }
            None => assert!(!phase.name.contains("stream"), "{phase:?}"),
        }
    }
    assert!(
        report
            .phase("gateway")
            .unwrap()
            .gateway_cpu_us_per_request
            .is_some()
    );
    assert!(
        report
            .phase("direct")
            .unwrap()
            .gateway_cpu_us_per_request
            .is_none()
    );
    // Against direct calls: gateway max, gateway, relay, gateway stream
    // (latency and first byte), gateway messages (plain and with context
    // editing), gateway responses, and the large request against its own
    // direct reference; and gateway against relay.
    assert_eq!(report.added.len(), 10);
    let large = report
        .added
        .iter()
        .find(|a| a.phase == "gateway messages large")
        .unwrap();
    assert_eq!(large.reference, "direct large");
    let over_relay = report
        .added
        .iter()
        .find(|a| a.phase == "gateway" && a.reference == "relay")
        .unwrap();
    let relay_phase = report.phase("relay").unwrap();
    assert_eq!(
        over_relay.p50_us,
        f64::from(report.phase("gateway").unwrap().latency.p50_us)
            - f64::from(relay_phase.latency.p50_us)
    );
    assert!(relay_phase.gateway_cpu_us_per_request.is_some());
    // The goals are judged against direct calls, not against the relay.
    let direct_added = report
        .added
        .iter()
        .find(|a| a.phase == "gateway" && a.reference == "direct")
        .unwrap();
    assert!(
        report.goals[0]
            .measured
            .starts_with(&format!("{:.0} µs", direct_added.p50_us))
    );
    // Paced phases are offered the rate and stay near it (well below what
    // the loop can do); the others are not paced.
    let paced = report.phase("gateway").unwrap();
    assert_eq!(paced.offered_per_s, Some(400.0));
    assert!(paced.requests_per_s < 800.0, "{paced:?}");
    assert_eq!(report.phase("gateway max").unwrap().offered_per_s, None);
    assert_eq!(report.goals.len(), 5);
    assert!(report.goals.iter().all(|goal| goal.met.is_some()));
    let memory = report.memory.unwrap();
    assert!(memory.peak_rss_bytes > 0 && memory.hwm_bytes > 0);
    // Every gateway request reached the mock, and the ledger file exists.
    assert!(mock.requests() >= report.phases.iter().map(|m| m.requests).sum::<u64>());
    assert!(database.exists());
    // The report serializes whole.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["phases"][4]["name"], "gateway");
    assert!(json["phases"][6]["first_byte"]["p50_us"].is_u64());
    relay.abort();
}

#[tokio::test]
async fn a_gateway_that_refuses_is_an_error_not_a_figure() {
    let mock = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("g.db").display());
    let gateway = InProcessGateway::start(&mock.base_url(), MASTER, &database)
        .await
        .unwrap();
    let under_test = GatewayUnderTest {
        base_url: gateway.base_url(),
        key: "not-the-key".into(),
        pid: None,
        description: "in process".into(),
        relay: None,
    };
    let options = LoadOptions {
        clients: 2,
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        rate: None,
    };
    let error = bench::run(&mock, &under_test, &options, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("gateway max: no request succeeded"),
        "{error}"
    );
    assert!(error.contains("401"), "{error}");
}
