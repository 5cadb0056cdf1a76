//! The seam between the node engine and whatever isolates a sandbox. The engine depends only on
//! [`Runtime`]; backends (`native`, `gvisor`, later `microvm`) live behind it and know nothing
//! about HTTP. [`select::Runtimes`] puts several behind one [`Runtime`], choosing per sandbox.

pub mod gvisor;
pub mod native;
pub mod select;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use warren_types::SandboxId;

/// What a backend can do, so the engine can refuse an operation up front instead of failing late.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub freeze: bool,
    /// Saves a sandbox's processes and memory to disk and restores them (`checkpoint`/`restore`).
    pub hibernate: bool,
    /// A plain pause goes to disk with the memory (the backend has no cheap frozen state).
    pub pause_to_disk: bool,
    /// Copies of a sandbox's memory for forks, snapshots and template images
    /// (`checkpoint_copy`/`restore_copy`).
    pub memory_snapshots: bool,
    pub filesystem_snapshots: bool,
    pub network: bool,
}

/// Everything a backend needs to boot one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: SandboxId,
    /// Read-only template root filesystem (lowest layer).
    pub template_rootfs: PathBuf,
    /// Frozen layers stacked on the template, topmost first (a fork's or a snapshot's disk state).
    pub layers: Vec<PathBuf>,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub pids_max: u32,
    /// The sandbox's address when the runtime gives it a network (from the engine's allocator).
    pub address: Option<std::net::Ipv4Addr>,
    /// The backend to run it on (`None`: the default one).
    pub runtime: Option<String>,
    /// Egress rules a sandbox restored from a memory image has before any of its processes runs
    /// again (a booted one gets its rules through [`Runtime::set_egress`] before its first command).
    pub egress: Option<EgressRules>,
}

/// Destinations a sandbox may reach (`allow` beats `deny`), as `(address, prefix length)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    pub allow: Vec<(std::net::Ipv4Addr, u8)>,
    pub deny: Vec<(std::net::Ipv4Addr, u8)>,
}

/// What the engine persists about a live sandbox so that a restarted daemon can find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    /// Format version of this record (invariant: every on-disk format is versioned).
    pub version: u32,
    /// Host pid of the sandbox's init (the agent).
    pub pid: i32,
    /// Kernel start time of that pid (clock ticks since boot): tells a reused pid from ours.
    pub start_time: u64,
    /// Unix socket the agent serves the sandbox protocol on.
    pub agent_socket: PathBuf,
    /// btrfs subvolume (and qgroup) id carrying the disk quota.
    pub project_id: u32,
    /// The agent dials the daemon on `agent_socket` (the daemon listens) instead of listening.
    #[serde(default)]
    pub agent_dials: bool,
    /// The backend running the sandbox.
    #[serde(default = "native_backend")]
    pub backend: String,
}

fn native_backend() -> String {
    "native".into()
}

/// Resource usage of one sandbox at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_used_bytes: u64,
    pub memory_cache_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_limit_bytes: u64,
    /// Processes in the sandbox (thread groups, not threads), its agent included.
    pub pids: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("this host cannot run the {backend} runtime: {reason}")]
    HostUnsupported { backend: &'static str, reason: String },
    #[error("preparing {what} at {path} failed: {source}")]
    Prepare { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cgroup {path}: {op} failed: {source}")]
    Cgroup { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("disk quota on {path}: {op} failed: {source}")]
    Quota { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("starting the sandbox spawner failed: {source}")]
    SpawnerExec { source: std::io::Error },
    #[error("sandbox {id} failed to boot: {detail}")]
    Boot { id: SandboxId, detail: String },
    #[error("signalling sandbox {id} failed: {source}")]
    Signal { id: SandboxId, source: std::io::Error },
    #[error("sandbox {id} did not stop within {waited_ms} ms")]
    StopTimeout { id: SandboxId, waited_ms: u64 },
    #[error("sandbox networking: {detail}")]
    Network { detail: String },
    #[error("the {backend} runtime cannot {op}")]
    Unsupported { backend: &'static str, op: &'static str },
    #[error("checkpointing sandbox {id} failed (it keeps running): {detail}")]
    Checkpoint { id: SandboxId, detail: String },
    #[error("restoring sandbox {id} from its checkpoint failed: {detail}")]
    Restore { id: SandboxId, detail: String },
}

/// How a sandbox's init ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Not our child (re-attached after a restart): we saw it go but not its status.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(9) => write!(f, "killed by SIGKILL (out of memory, or killed from outside)"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => write!(f, "exited (status unknown)"),
        }
    }
}

/// A backend. Calls block (they do file and process work); the engine runs them off its async threads.
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// What the backend `name` can do (`None`: the default one), or `None` when there is no such
    /// backend here.
    fn backend_capabilities(&self, name: Option<&str>) -> Option<Capabilities> {
        match name {
            None => Some(self.capabilities()),
            Some(n) if n == self.name() => Some(self.capabilities()),
            Some(_) => None,
        }
    }
    /// Names of the backends available (the default first).
    fn backends(&self) -> Vec<&'static str> {
        vec![self.name()]
    }
    /// Builds the sandbox and starts its agent; returns once the agent's socket accepts connections.
    fn create(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError>;
    /// Sends the sandbox's processes their death (init first; a frozen sandbox is thawed so they
    /// can die) without waiting for them or freeing anything: `destroy` does that afterwards.
    fn stop(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError>;
    /// Kills every process and frees every resource of the sandbox. Idempotent.
    fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError>;
    /// Kills every process and frees what they held (memory, cgroup, network links) but keeps the
    /// writable layer, so `create` with the same id later starts from the same files (a
    /// filesystem-mode pause). Idempotent.
    fn halt(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError>;
    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError>;
    /// Replaces a live sandbox's egress policy: destinations in `allow` are always reachable,
    /// those in `deny` are refused; both empty removes the policy. (Its own replies and loopback
    /// traffic are never affected.)
    fn set_egress(
        &self,
        id: &SandboxId,
        handle: &Handle,
        allow: &[(std::net::Ipv4Addr, u8)],
        deny: &[(std::net::Ipv4Addr, u8)],
    ) -> Result<(), RuntimeError>;
    /// Changes a live sandbox's CPU quota (in CPUs).
    fn set_cpu(&self, id: &SandboxId, cpu_count: u32) -> Result<(), RuntimeError>;
    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError>;
    fn stats(&self, id: &SandboxId, handle: &Handle) -> Result<Stats, RuntimeError>;
    /// The figures of a timeline sample only (CPU time, memory used, disk used, and memory cached
    /// when `with_cache`, the costly one): read every second for every sandbox, so it skips what
    /// [`Runtime::stats`] adds (limits, pids).
    fn sample(&self, id: &SandboxId, handle: &Handle, with_cache: bool) -> Result<Stats, RuntimeError>;
    /// Finds the sandbox's init again after a daemon restart; `None` when it is gone.
    fn reattach(&self, id: &SandboxId, handle: &Handle) -> Option<ExitWatch>;
    /// Watches a freshly created sandbox's init.
    fn watch(&self, id: &SandboxId, handle: &Handle) -> Result<ExitWatch, RuntimeError>;
    /// Removes leftovers (cgroups, layers, sockets) of sandboxes not in `live`.
    fn sweep(&self, live: &[SandboxId]) -> Vec<SandboxId>;
    /// Freezes a copy of the sandbox's writable layer as the read-only layer `layer`, for forks and
    /// snapshots (the sandbox keeps writing its own). Callers pause the sandbox around it so the
    /// copy is consistent. Returns the directory to stack as a lower layer.
    fn freeze_layer(&self, id: &SandboxId, layer: &str) -> Result<PathBuf, RuntimeError>;
    /// Where a frozen layer's files are.
    fn layer_path(&self, layer: &str) -> PathBuf;
    /// Deletes a frozen layer no sandbox or template uses any more. Idempotent.
    fn remove_layer(&self, layer: &str) -> Result<(), RuntimeError>;
    /// Frozen layers on disk (for garbage collection at start).
    fn layers(&self) -> Vec<String>;
    /// The last `max_bytes` of the sandbox agent's own log, and whether older bytes were cut off.
    /// Written from inside the sandbox: callers treat it as untrusted text.
    fn log_tail(&self, id: &SandboxId, max_bytes: u64) -> (Vec<u8>, bool);
    /// Saves a running sandbox's processes and memory to disk and stops it, freeing its memory;
    /// its writable layer and the image stay until `destroy`. On failure the sandbox keeps
    /// running. The caller closes every connection to the agent first (they cannot be saved).
    /// Returns the image's size in bytes.
    fn checkpoint(&self, id: &SandboxId, handle: &Handle) -> Result<u64, RuntimeError> {
        let _ = (id, handle);
        Err(RuntimeError::Unsupported { backend: self.name(), op: "save a sandbox's memory" })
    }
    /// Starts a checkpointed sandbox again from its image: its processes carry on where they were.
    fn restore(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let _ = spec;
        Err(RuntimeError::Unsupported { backend: self.name(), op: "restore a sandbox's memory" })
    }
    /// Saves a copy of a frozen sandbox's processes and memory as the image `image` (for forks);
    /// the sandbox stays as it was. The caller closes every connection to the agent first.
    fn checkpoint_copy(&self, id: &SandboxId, handle: &Handle, image: &str) -> Result<u64, RuntimeError> {
        let _ = (id, handle, image);
        Err(RuntimeError::Unsupported { backend: self.name(), op: "copy a sandbox's memory" })
    }
    /// Starts a new sandbox (`spec`: its own id and layers) from the image `image` of another.
    fn restore_copy(&self, spec: &SandboxSpec, image: &str) -> Result<Handle, RuntimeError> {
        let _ = (spec, image);
        Err(RuntimeError::Unsupported { backend: self.name(), op: "start a sandbox from another's memory" })
    }
    /// The socket the agent of a sandbox just booted or restored dials, when the runtime bound it
    /// before starting the agent (so that the agent's first dial connects). The daemon listens on
    /// it from then on; each boot's is handed out once.
    fn take_agent_listener(&self, id: &SandboxId) -> Option<std::os::unix::net::UnixListener> {
        let _ = id;
        None
    }
    /// Deletes the image `image`. Idempotent.
    fn remove_image(&self, image: &str) {
        let _ = image;
    }
    /// Names of the memory images on disk made by `checkpoint_copy` (for garbage collection at
    /// start).
    fn images(&self) -> Vec<String> {
        Vec::new()
    }
}

pub use native::exit_watch::ExitWatch;

/// Binds the socket a sandbox's agent dials (replacing a stale socket file). Anyone who can reach
/// the file may connect: the sandbox's side connects as its own unprivileged, mapped root, and the
/// runtime keeps the socket's directory private to that root.
pub fn bind_agent_socket(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The last `max_bytes` of a log file, and whether older bytes were cut off.
pub(crate) fn log_tail(path: &std::path::Path, max_bytes: u64) -> (Vec<u8>, bool) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return (Vec::new(), false) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), false);
    }
    let mut buf = Vec::new();
    let _ = f.take(max_bytes).read_to_end(&mut buf);
    (buf, start > 0)
}
