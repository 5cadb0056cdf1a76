//! Warren's shared vocabulary. Everything here is plain data (serde), so that the daemon, the CLI, the
//! benchmark and the tests agree on names and shapes without depending on each other.

pub mod api;
pub mod config;
pub mod ids;
pub mod pool;
pub mod state;

pub use ids::{InvalidId, SandboxId, Team, TemplateId};
pub use state::{IllegalTransition, KillReason, SandboxEvent, SandboxState};

/// The envd protocol version the agent reports. The E2B SDKs switch features on by this number
/// (0.3.0 stdin, 0.4.0 default user, 0.5.2 CloseStdin, 0.5.7 octet-stream upload, 0.6.2 metadata).
pub const ENVD_VERSION: &str = "0.6.4";

/// The port number E2B clients address the in-sandbox protocol server by.
pub const AGENT_PORT: u16 = 49983;

/// The TCP port `warren serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 3049;
