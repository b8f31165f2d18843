//! Busy polling (`[gateway] busy_poll_us`): a single-threaded runtime that
//! keeps polling its sockets for a moment after each request starts or
//! ends, instead of putting its thread to sleep.
//!
//! Why: on a virtual machine whose idle vCPUs halt at once (Firecracker
//! guests, `haltpoll.guest_halt_poll_ns=0`), every time the gateway's
//! thread sleeps, the next packet first has to wake the vCPU. A proxied
//! request waits for that twice, once for the client's request and once
//! for the upstream's answer, and on such machines that costs tens of
//! microseconds each time (measured in docs/benchmarks.md). Polling while
//! traffic flows keeps the vCPU awake.
//!
//! The price is CPU time: a runtime that polls uses its whole core for the
//! window after each request start and end, so under steady traffic a core
//! per runtime. It never polls while idle, and it stops polling `window`
//! after the last start or end, so a slow upstream (a model generating for
//! seconds) is waited for asleep, as without busy polling.
//!
//! It works with single-threaded runtimes only (`runtime = "per-core"`):
//! a poller can keep only the thread it runs on awake, and in a
//! work-stealing runtime requests are not bound to that thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use tokio::sync::Notify;

/// One runtime's poller: requests served through [`BusyPoll::track`] mark
/// the runtime busy, and [`BusyPoll::run`], spawned on the same runtime,
/// polls for I/O until it has been `window` since the last of them.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// What `last_activity` counts from.
    origin: Instant,
    /// Nanoseconds from `origin` to the last request start or end.
    last_activity: AtomicU64,
    /// Wakes a sleeping poller when a request starts.
    activity: Notify,
}

impl BusyPoll {
    /// A poller that keeps polling for `window` after each request start
    /// and end.
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            origin: Instant::now(),
            last_activity: AtomicU64::new(0),
            activity: Notify::new(),
        })
    }

    /// `app` with each request marking this poller's runtime busy when it
    /// starts and when its response is ready.
    pub fn track(self: &Arc<Self>, app: Router) -> Router {
        let poller = Arc::clone(self);
        app.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let poller = Arc::clone(&poller);
                async move {
                    poller.mark_active();
                    let response = next.run(request).await;
                    // The poller may have gone to sleep while a slow
                    // upstream answered: the answer still has to go out.
                    poller.mark_active();
                    response
                }
            },
        ))
    }

    /// Polls the runtime's I/O without sleeping while it is busy, and
    /// sleeps until the next request when it is not. Runs until dropped;
    /// spawn it on the runtime whose requests [`BusyPoll::track`] sees.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.activity.notified().await;
            while self.since_last_activity() < self.window {
                // A current-thread runtime whose only runnable task has
                // yielded polls its sockets and timers without waiting,
                // runs what became ready, and comes back here. tokio does
                // not promise this in `yield_now`'s documentation; the test
                // below checks that the locked version does it.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Restarts the window and wakes the poller if it sleeps.
    fn mark_active(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.store(nanos, Ordering::Relaxed);
        // At most one wake-up is stored: a poller that is already polling
        // finds it after its window, checks once and sleeps again.
        self.activity.notify_one();
    }

    fn since_last_activity(&self) -> Duration {
        let last = Duration::from_nanos(self.last_activity.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How much CPU time this thread has used (Linux's schedstat).
    fn thread_cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let nanos = stat.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_nanos(nanos)
    }

    async fn one_request(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// The poller keeps the thread on its CPU for the window after a
    /// request starts and after its answer is ready, and lets it sleep
    /// before the first request and after the window.
    #[cfg(target_os = "linux")]
    #[test]
    fn polls_for_the_window_after_a_request_and_sleeps_otherwise() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let window = Duration::from_millis(500);
            let poller = BusyPoll::new(window);
            let slow = || async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                "slow"
            };
            let app = poller.track(
                Router::new()
                    .route("/", get(|| async { "polled" }))
                    .route("/slow", get(slow)),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            tokio::spawn(Arc::clone(&poller).run());
            // The CPU time this thread uses over the next `time`.
            let used_during = async |time: Duration| {
                let before = thread_cpu_time();
                tokio::time::sleep(time).await;
                thread_cpu_time().saturating_sub(before)
            };

            // Idle: the poller sleeps, so the thread uses (almost) no CPU.
            let idle = used_during(Duration::from_millis(300)).await;
            assert!(idle < Duration::from_millis(20), "idle: {idle:?}");

            // A request: the thread polls through the window after it. A
            // fifth of the window is enough: other tests share the CPUs.
            let answer = one_request(address, "/").await;
            assert!(answer.ends_with("polled"), "{answer}");
            let busy = used_during(window).await;
            assert!(busy > window / 5, "polling after a request: {busy:?}");

            // Past the window it sleeps again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = used_during(Duration::from_millis(300)).await;
            assert!(
                after < Duration::from_millis(20),
                "after the window: {after:?}"
            );

            // An answer slower than the window: the poller, asleep by then,
            // polls again once the answer is ready.
            let answer = one_request(address, "/slow").await;
            assert!(answer.ends_with("slow"), "{answer}");
            let busy = used_during(window).await;
            assert!(busy > window / 5, "polling after a slow answer: {busy:?}");
        });
    }
}
