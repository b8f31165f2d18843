//! Placeholder until the checkpoint branch lands.
#![allow(missing_docs, unreachable_pub, dead_code)]
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("checkpoints unavailable")]
pub struct CheckpointError;
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub id: String,
}
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub checkpoint: Checkpoint,
    pub restored: Vec<String>,
    pub deleted: Vec<String>,
}
#[derive(Debug)]
pub struct Checkpoints;
impl Checkpoints {
    pub fn open(_root: &Path, _shadow: &Path) -> Result<Self, CheckpointError> {
        Err(CheckpointError)
    }
    pub fn snapshot(&self, _session: &str, _label: &str) -> Result<Checkpoint, CheckpointError> {
        Err(CheckpointError)
    }
    pub fn restore_last(&self) -> Result<RestoreReport, CheckpointError> {
        Err(CheckpointError)
    }
}
