//! The usage ledger's writer: requests hand their lines to a background
//! task, which writes them in batches (one transaction each), so a busy
//! gateway does not pay one database write per request.
//!
//! After the first line of a batch the writer waits `GATHER` for more
//! before it writes. While it waits, queuing a line wakes nobody: the cost
//! a request pays for its line is a push onto a queue, not a thread
//! woken (on a loaded machine each wake-up costs tens of microseconds)
//! and a transaction of its own.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{BatchId, Recorded, Store, UsageRecord};

/// The most lines written in one transaction.
const BATCH: usize = 512;

/// Lines waiting to be written before new ones are dropped.
const QUEUE: usize = 65_536;

/// How long the writer gathers lines after the first one of a batch: how
/// late a line may reach the database.
const GATHER: Duration = Duration::from_millis(50);

/// A handle to the writer.
#[derive(Debug, Clone)]
pub struct Ledger {
    sender: Option<mpsc::Sender<UsageRecord>>,
    closing: CancellationToken,
}

impl Ledger {
    /// A ledger writing to `store`, and the task doing it. The task ends
    /// once [`Ledger::close`] is called or every handle is dropped, after
    /// writing what is queued.
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let closing = CancellationToken::new();
        let task = tokio::spawn(write_batches(store, receiver, closing.clone()));
        (
            Self {
                sender: Some(sender),
                closing,
            },
            task,
        )
    }

    /// A ledger that keeps nothing (no database).
    pub fn disabled() -> Self {
        Self {
            sender: None,
            closing: CancellationToken::new(),
        }
    }

    /// Tells the writer to write the lines queued now and stop (at
    /// shutdown: handles held elsewhere, by a reload task say, would
    /// otherwise keep it waiting for more). Lines queued later are dropped
    /// and counted.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Queues a line without waiting. When the writer is `QUEUE` lines
    /// behind (the database cannot keep up), the line is dropped, logged
    /// and counted in `freehold_gateway_ledger_dropped_total`.
    pub fn try_record(&self, record: UsageRecord, metrics: &Metrics) {
        let Some(sender) = &self.sender else {
            return;
        };
        if let Err(error) = sender.try_send(record) {
            metrics.ledger_dropped.inc();
            match error {
                mpsc::error::TrySendError::Full(_) => tracing::error!(
                    "the usage ledger is {QUEUE} lines behind its database; a usage line was dropped"
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    tracing::error!(
                        "the usage ledger writer has stopped; a usage line was dropped"
                    );
                }
            }
        }
    }
}

async fn write_batches(
    store: Store,
    mut receiver: mpsc::Receiver<UsageRecord>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH) => received,
            () = closing.cancelled() => {
                // No more lines; write those already queued.
                receiver.close();
                while let Ok(line) = receiver.try_recv() {
                    batch.push(line);
                    if batch.len() == BATCH {
                        write_batch(&store, &mut batch).await;
                    }
                }
                write_batch(&store, &mut batch).await;
                return;
            }
        };
        if received == 0 {
            // Every handle is gone and the queue is empty.
            return;
        }
        if batch.len() < BATCH {
            tokio::time::sleep(GATHER).await;
            // Whatever came meanwhile, without waiting again.
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
        }
        write_batch(&store, &mut batch).await;
    }
}

/// Writes `batch` in one transaction and empties it. The batch has an id
/// ([`BatchId`]), so a try whose answer was lost and that was committed all
/// the same is not written again by the next. A failure of the database
/// rather than of the batch (busy, out of reach, a connection lost
/// mid-write, or no answer in time: [`crate::store::StoreError::is_outage`])
/// is retried for up to [`WRITE_PATIENCE`], so an outage of that length
/// loses no line (lines arriving meanwhile wait in the bounded queue); a
/// refusal of the batch itself is tried twice more, then given up, as is
/// every batch once the store is closed.
async fn write_batch(store: &Store, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    let id = BatchId::new();
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        match store.record(&id, batch).await {
            Ok(Recorded::Written) => break,
            Ok(Recorded::AlreadyWritten) => {
                tracing::info!(
                    lines = batch.len(),
                    "usage ledger lines whose write went unanswered had been written; not writing them again"
                );
                break;
            }
            Err(error) => {
                attempt += 1;
                let patient = error.is_outage() && started.elapsed() < WRITE_PATIENCE;
                if store.is_closed() || (!patient && attempt >= 3) {
                    tracing::error!(%error, lines = batch.len(), "usage ledger lines lost");
                    break;
                }
                tracing::warn!(%error, "writing the usage ledger; retrying");
                tokio::time::sleep(retry_delay(attempt)).await;
            }
        }
    }
    batch.clear();
}

/// How long a write that found the database busy or out of reach is
/// retried before its lines are given up.
pub(crate) const WRITE_PATIENCE: Duration = Duration::from_secs(60);

/// The wait before retry `attempt` (from 1): 200 ms doubling, at most 5 s.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closing_writes_what_is_queued_though_handles_remain() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
        let store = Store::open(&url).await.unwrap();
        let (ledger, writer) = Ledger::start(store.clone());
        let metrics = Metrics::default();
        for at_ms in 0..3 {
            let record = UsageRecord {
                at_ms,
                model: "m".into(),
                endpoint: "/v1/chat/completions".into(),
                status: 200,
                ..UsageRecord::default()
            };
            ledger.try_record(record, &metrics);
        }
        // A clone stays alive, as the gateway's state does at shutdown.
        let kept = ledger.clone();
        kept.close();
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer stopped when closed")
            .unwrap();
        assert_eq!(store.requests(None, 10).await.unwrap().len(), 3);
        // Later lines are refused and counted, not lost silently.
        ledger.try_record(UsageRecord::default(), &metrics);
        assert_eq!(metrics.ledger_dropped.get(), 1);
    }
}
