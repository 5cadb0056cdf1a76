//! The daemon's one typed configuration. Every field has a default that works on a fresh host, so
//! `warren serve` needs no file; a TOML file (`--config`) may override any part of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where templates, sandbox layers, the state store and the API key live.
    pub data_dir: PathBuf,
    /// Where agent sockets live (tmpfs on most hosts; rebuilt on restart).
    pub run_dir: PathBuf,
    /// The one HTTP listener: control plane and sandbox traffic.
    pub listen: SocketAddr,
    /// Domain reported to E2B clients (`{port}-{id}.{domain}`); defaults to `localhost:<port>`.
    pub domain: Option<String>,
    pub sandbox: SandboxLimits,
    /// The runtime sandboxes run on when a create or a pool names none: `native` or `gvisor`.
    pub default_runtime: String,
    pub native: NativeConfig,
    pub gvisor: GvisorConfig,
    pub templates: TemplateConfig,
    pub network: NetworkConfig,
    /// Warm pools created (or updated) at every start: `[[pools]]` tables.
    pub pools: Vec<crate::pool::PoolSpec>,
    pub memory: MemoryConfig,
}

/// The agent memory store served under `/v1/memory` (kept in `<data_dir>/memory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    pub enabled: bool,
    /// Deleted and expired records are purged this long after.
    pub purge_after_secs: u64,
    /// The largest text one record may hold.
    pub max_text_bytes: usize,
    /// The most records one upsert may carry.
    pub max_records_per_upsert: usize,
    /// Embedding models collections may name (`embeddingModel`), one directory each
    /// (`scripts/models.sh` installs all-MiniLM-L6-v2 here).
    pub models_dir: Option<std::path::PathBuf>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            purge_after_secs: 24 * 3600,
            max_text_bytes: 64 * 1024,
            max_records_per_upsert: 10_000,
            models_dir: Some("/opt/warren/models".into()),
        }
    }
}

/// Sandbox networking (native runtime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Give sandboxes a network (`false`: loopback only).
    pub enabled: bool,
    /// The bridge sandboxes hang off (≤ 15 characters); also names this daemon's nftables table.
    pub bridge: String,
    /// The sandboxes' subnet, as `a.b.c.d/len`; the first address is the gateway.
    pub cidr: String,
    /// Name servers for sandboxes (default: the host's, unless they are loopback addresses).
    pub dns: Option<Vec<String>>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig { enabled: true, bridge: "warren0".into(), cidr: "10.88.0.0/16".into(), dns: None }
    }
}

impl NetworkConfig {
    /// The subnet's base address and prefix length, checked.
    pub fn subnet(&self) -> Result<(std::net::Ipv4Addr, u8), String> {
        let (a, l) =
            self.cidr.split_once('/').ok_or_else(|| format!("network.cidr {:?} is not a.b.c.d/len", self.cidr))?;
        let addr: std::net::Ipv4Addr = a.parse().map_err(|_| format!("network.cidr {:?}: bad address", self.cidr))?;
        let len: u8 = l.parse().map_err(|_| format!("network.cidr {:?}: bad prefix length", self.cidr))?;
        if !(8..=28).contains(&len) {
            return Err(format!("network.cidr {:?}: use a prefix length from 8 to 28", self.cidr));
        }
        let mask = u32::MAX << (32 - len);
        if u32::from(addr) & !mask != 0 {
            return Err(format!("network.cidr {:?}: the address has host bits set", self.cidr));
        }
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self.bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("network.bridge {:?}: use 1 to 15 letters, digits, '-' or '_'", self.bridge));
        }
        Ok((addr, len))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/warren"),
            run_dir: PathBuf::from("/run/warren"),
            listen: SocketAddr::from(([127, 0, 0, 1], crate::DEFAULT_PORT)),
            domain: None,
            sandbox: SandboxLimits::default(),
            default_runtime: "native".into(),
            native: NativeConfig::default(),
            gvisor: GvisorConfig::default(),
            templates: TemplateConfig::default(),
            network: NetworkConfig::default(),
            pools: Vec::new(),
            memory: MemoryConfig::default(),
        }
    }
}

impl Config {
    /// The domain E2B clients are told, derived from the listener when not configured.
    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| format!("localhost:{}", self.listen.port()))
    }
}

/// Defaults applied at create time and the bounds a request may not exceed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    pub default_cpu_count: u32,
    pub default_memory_mb: u64,
    pub default_disk_mb: u64,
    pub default_timeout_secs: u64,
    pub max_cpu_count: u32,
    pub max_memory_mb: u64,
    pub max_disk_mb: u64,
    pub max_timeout_secs: u64,
    /// Process limit per sandbox (fork bombs stop here).
    pub pids_max: u32,
    /// Upper bound on live sandboxes on this node.
    pub max_sandboxes: usize,
    /// New sandboxes are refused while the host has less memory available than this.
    pub min_free_memory_mb: u64,
    /// New sandboxes are refused while the data directory's filesystem has less space than this.
    pub min_free_disk_mb: u64,
    /// Sandboxes booted at once (creates beyond wait their turn, so a storm cannot fork-bomb the host).
    pub max_concurrent_boots: usize,
    /// How long a sandbox's log stays readable after it ends.
    pub log_retention_secs: u64,
    /// How often each sandbox's CPU, memory and disk are sampled for its timeline (0: never).
    pub sample_interval_ms: u64,
    /// How much history a sandbox's timeline keeps.
    pub timeline_secs: u64,
    /// Clones one fork call may ask for.
    pub max_fork_count: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            default_cpu_count: 1,
            default_memory_mb: 512,
            default_disk_mb: 1024,
            default_timeout_secs: 300,
            max_cpu_count: 16,
            max_memory_mb: 16 * 1024,
            max_disk_mb: 64 * 1024,
            max_timeout_secs: 24 * 3600,
            pids_max: 1024,
            max_sandboxes: 4096,
            min_free_memory_mb: 512,
            min_free_disk_mb: 2048,
            max_concurrent_boots: 8,
            log_retention_secs: 24 * 3600,
            sample_interval_ms: 1000,
            timeline_secs: 3600,
            max_fork_count: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NativeConfig {
    /// Host uid (and gid) that root inside every sandbox maps to; the sandbox gets `uid_count` ids from here.
    pub uid_base: u32,
    pub uid_count: u32,
    /// Size of the sparse btrfs image that holds every writable layer (one subvolume + qgroup each).
    pub storage_size_gb: u64,
    /// The `warren-agent` binary; by default the one next to the `warren` executable.
    pub agent_path: Option<PathBuf>,
    /// Name of the cgroup (under each controller's root) that holds this daemon's sandboxes.
    pub cgroup_parent: String,
    /// CRIU ≥ 4 (`scripts/criu.sh` builds it here), for memory snapshots of native sandboxes.
    pub criu: PathBuf,
    /// Restore memory lazily: a woken or forked sandbox runs again as soon as its tasks are back,
    /// and its pages are copied in behind it (on first touch, or in the background) by a
    /// `criu lazy-pages` server. Needs userfaultfd and the CRIU of `scripts/criu.sh`.
    pub lazy_restore: bool,
    /// Turn on the host's cgroup2 `favordynmods` flag at start (a remount that keeps the other
    /// options): a sandbox's init then joins its cgroup in microseconds instead of waiting for an
    /// RCU grace period (≈ 5 ms per create here), for slightly dearer fork and exit host-wide.
    pub favor_cgroup_migrations: bool,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            uid_base: 1_000_000,
            uid_count: 65_536,
            storage_size_gb: 256,
            agent_path: None,
            cgroup_parent: "warren".into(),
            criu: PathBuf::from("/opt/warren/criu/sbin/criu"),
            lazy_restore: true,
            favor_cgroup_migrations: true,
        }
    }
}

/// The gVisor runtime (`runsc`). It shares the native runtime's layer store, uid range and
/// agent binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GvisorConfig {
    /// Offer the runtime when `runsc` works on this host (a warning says why when it does not).
    pub enabled: bool,
    /// The `runsc` executable (looked up on `PATH` when relative).
    pub runsc: PathBuf,
    /// runsc's platform: `systrap` (fastest without hardware virtualisation) or `ptrace`.
    pub platform: String,
    /// Boot every template that has a start command once on gVisor, wait for its ready check and
    /// keep the sandbox's memory image: its gVisor sandboxes then start with the server running.
    pub template_memory_snapshots: bool,
    /// Compress memory images: smaller on disk for compressible memory, but a wake (and a pause)
    /// spends about as long in compression as in moving the pages.
    pub compress_images: bool,
    /// A directory for runsc's own debug logs (`--debug-log`; large, one set per runsc call):
    /// for diagnosing runsc itself. Off by default.
    pub debug_log: Option<PathBuf>,
}

impl Default for GvisorConfig {
    fn default() -> Self {
        GvisorConfig {
            enabled: true,
            runsc: PathBuf::from("runsc"),
            platform: "systrap".into(),
            template_memory_snapshots: true,
            compress_images: false,
            debug_log: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// Where template root filesystems live (default: `<data_dir>/templates`). Several daemons may
    /// share one, e.g. test daemons sharing a built `base`.
    pub dir: Option<PathBuf>,
    /// Debian mirror used by mmdebstrap.
    pub mirror: String,
    pub suite: String,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig { dir: None, mirror: "http://deb.debian.org/debian".into(), suite: "bookworm".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.domain(), "localhost:3049");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<Config>(r#"{"lisen":"1.2.3.4:1"}"#).is_err());
    }
}
