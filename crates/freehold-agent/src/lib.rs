//! The coding agent.

pub mod checkpoint;
