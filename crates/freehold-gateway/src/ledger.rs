//! The usage ledger's writer: requests hand their lines to a background
//! task, which writes them in batches (one transaction each), so a busy
//! gateway does not pay one database write per request.
//!
//! After the first line of a batch the writer waits [`GATHER`] for more
//! before it writes. While it waits, queuing a line wakes nobody: the cost
//! a request pays for its line is a push onto a queue, not a thread
//! woken (on a loaded machine each wake-up costs tens of microseconds)
//! and a transaction of its own.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::store::{Store, UsageRecord};

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
}

impl Ledger {
    /// A ledger writing to `store`, and the task doing it (it ends once
    /// every handle is dropped and the queue is written).
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_batches(store, receiver));
        (
            Self {
                sender: Some(sender),
            },
            task,
        )
    }

    /// A ledger that keeps nothing (no database).
    pub fn disabled() -> Self {
        Self { sender: None }
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

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<UsageRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
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
        let mut attempt = 0;
        while let Err(error) = store.record(&batch).await {
            attempt += 1;
            if attempt >= 3 {
                tracing::error!(%error, lines = batch.len(), "usage ledger lines lost");
                break;
            }
            tracing::warn!(%error, "writing the usage ledger; retrying");
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
        batch.clear();
    }
}
