//! Warm pools as users declare them (API body, CLI flags, `[[pools]]` in the config file) and as
//! the daemon reports them.

use serde::{Deserialize, Serialize};

/// What a claim does when its pool has no ready sandbox (after waiting `emptyWaitMs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// Create the sandbox cold, as if there were no pool.
    #[default]
    Cold,
    /// Answer 503 with `Retry-After`, so the caller can retry or go elsewhere.
    Fail,
}

/// A higher CPU quota for a sandbox's first seconds after it is claimed (start-up work: imports,
/// compilers, package managers), then its steady quota.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Burst {
    pub cpu_count: u32,
    pub secs: u64,
}

/// A pool: ready, unclaimed sandboxes of one shape (template, CPU, memory, disk, runtime). A create
/// request of that shape claims one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// 1 to 63 lowercase letters, digits and '-'; unique within its team.
    pub name: String,
    /// The team whose creates claim from it: the caller's own through the API, `default` when a
    /// config file leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<crate::Team>,
    #[serde(rename = "templateID", alias = "template")]
    pub template_id: String,
    /// Defaults from `[sandbox]` when absent.
    #[serde(default)]
    pub cpu_count: Option<u32>,
    #[serde(default, rename = "memoryMB", alias = "memory_mb")]
    pub memory_mb: Option<u64>,
    #[serde(default, rename = "diskSizeMB", alias = "disk_mb")]
    pub disk_mb: Option<u64>,
    /// The runtime backend; the daemon's own when absent.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Ready sandboxes kept at least.
    #[serde(default, alias = "min_ready")]
    pub min_ready: u32,
    /// Ready sandboxes kept at most; `minReady` when absent.
    #[serde(default, alias = "max_size")]
    pub max_size: Option<u32>,
    /// Sandboxes booted at once while refilling.
    #[serde(default, alias = "refill_concurrency")]
    pub refill_concurrency: Option<u32>,
    /// Demand-driven size: keep this fraction of the pool (ready + in use) ready, between
    /// `minReady` and `maxSize`.
    #[serde(default, alias = "target_free_fraction")]
    pub target_free_fraction: Option<f64>,
    /// How long a claim waits for a ready sandbox when the pool is empty.
    #[serde(default, alias = "empty_wait_ms")]
    pub empty_wait_ms: u64,
    /// What a claim does when the wait is over.
    #[serde(default, alias = "on_empty")]
    pub on_empty: OnEmpty,
    #[serde(default)]
    pub burst: Option<Burst>,
    /// Claimed sandboxes pause after this many seconds without traffic and with no process but
    /// the agent (unless the create request sets its own).
    #[serde(default, alias = "idle_timeout")]
    pub idle_timeout: Option<u64>,
}

/// `PATCH /pools/{name}` (`warren pool resize`): the sizing fields; the shape cannot change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolResize {
    #[serde(default)]
    pub min_ready: Option<u32>,
    #[serde(default)]
    pub max_size: Option<u32>,
    #[serde(default)]
    pub refill_concurrency: Option<u32>,
    /// A negative number clears it.
    #[serde(default)]
    pub target_free_fraction: Option<f64>,
    #[serde(default)]
    pub empty_wait_ms: Option<u64>,
    #[serde(default)]
    pub on_empty: Option<OnEmpty>,
}

/// `GET /pools` items and `GET /pools/{name}`: the resolved spec and what the pool is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    #[serde(flatten)]
    pub spec: PoolSpec,
    /// Booted and waiting to be claimed.
    pub ready: u32,
    /// Being booted now.
    pub creating: u32,
    /// Claimed from this pool (or created cold for its shape) and still alive.
    pub in_use: u32,
    /// Ready sandboxes the pool is steering toward.
    pub target: u32,
    pub claims: u64,
    /// Claims that found the pool empty.
    pub empty_claims: u64,
    /// Refill boots that failed.
    pub refill_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Refilling is paused after failures until this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<String>,
}
