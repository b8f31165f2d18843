//! The coding agent.
