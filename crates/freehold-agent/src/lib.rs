//! The coding agent: the loop that asks a model, runs the tools it calls
//! and feeds the results back until the task is done.
//!
//! Main types:
//! - [`Agent`]: one session — the conversation, its JSONL transcript
//!   ([`session`]), the context budget and compaction ([`budget`]),
//!   permissions ([`permissions`]), project memory files ([`memory`]) and
//!   git checkpoints ([`checkpoint`]). [`Agent::run`] runs one task.
//! - [`Frontend`]: what drives it. The agent never prints: it emits
//!   [`freehold_protocol::AgentEvent`]s and asks the front end for
//!   permission; the terminal, the headless printer and tests implement it.
//!
//! What this crate must not do: print to the terminal, read the keyboard,
//! or know which wire protocol or engine serves the model (it calls a
//! [`freehold_llm::router::Router`]).
//!
//! ```no_run
//! # async fn demo(router: std::sync::Arc<freehold_llm::router::Router>) -> Result<(), freehold_agent::AgentError> {
//! use freehold_agent::{Agent, AgentOptions, Collect, SessionStore};
//! use tokio_util::sync::CancellationToken;
//!
//! let store = SessionStore::new("/tmp/sessions");
//! let options = AgentOptions::new("local:qwen2.5-coder-0.5b", "/path/to/project");
//! let mut agent = Agent::start(router, options, &store)?;
//! let mut frontend = Collect::default();
//! let summary = agent.run("What does main.rs do?", &mut frontend, CancellationToken::new()).await;
//! println!("{}", summary.result);
//! # Ok(()) }
//! ```

mod agent;
pub mod budget;
pub mod checkpoint;
mod clock;
mod error;
mod frontend;
pub mod memory;
pub mod permissions;
pub mod prompt;
pub mod session;

pub use agent::{Agent, AgentOptions, Totals};
pub use error::AgentError;
pub use frontend::{Approval, ApprovalRequest, Collect, Frontend, headless_denial};
pub use permissions::{PermissionMode, Permissions, Rule};
pub use session::{SessionStore, data_dir};
