//! The engine's errors. The API maps each variant to one HTTP status and stable code.

use warren_types::{IllegalTransition, InvalidId};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("sandbox {id} does not exist (it may have been killed or timed out)")]
    SandboxNotFound { id: String },
    #[error("template {id} does not exist; build it with `warren template build {id}` or list them with `warren template list`")]
    TemplateNotFound { id: String },
    #[error("template {id} is not ready yet (status: {status}); follow it with `warren template build {id}`")]
    TemplateNotReady { id: String, status: String },
    #[error("template {id} is in use by {count} sandbox(es), pool(s) or snapshot(s); remove them first")]
    TemplateInUse { id: String, count: usize },
    #[error("{field} = {value} is out of range: {allowed}")]
    OutOfRange { field: &'static str, value: String, allowed: String },
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error("sandbox {id} is {state}: {action} is not possible")]
    Conflict { id: String, state: &'static str, action: &'static str },
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("this node already runs its maximum of {max} sandboxes; kill some or raise sandbox.max_sandboxes")]
    Capacity { max: usize },
    #[error("the host is short of {resource}: {available_mb} MiB free, and Warren keeps {reserve_mb} MiB free ({setting}); kill or pause sandboxes, or lower {setting}")]
    HostFull { resource: &'static str, available_mb: u64, reserve_mb: u64, setting: &'static str },
    #[error("the sandbox runtime failed: {0}")]
    Runtime(#[from] warren_runtime::RuntimeError),
    #[error("the state store failed: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the sandbox's agent did not answer: {detail}")]
    Agent { detail: String },
    #[error("building template {id} failed: {detail}")]
    Build { id: String, detail: String },
    #[error("the sandbox network {cidr} is full (all its addresses, or the bridge's limit of 1023 sandboxes, are in use); kill sandboxes, widen network.cidr, or set network.enabled = false for denser loopback-only sandboxes")]
    AddressesExhausted { cidr: String },
    #[error("invalid configuration: {detail}")]
    InvalidConfig { detail: String },
    #[error("the sandbox refused the request: {detail}")]
    Rejected { detail: String },
    #[error("pool {name} does not exist; list pools with `warren pool list`")]
    PoolNotFound { name: String },
    #[error("{detail}")]
    PoolConflict { detail: String },
    #[error("invalid pool: {detail}")]
    InvalidPool { detail: String },
    #[error("pool {name} has no ready sandbox (waited {waited_ms} ms) and is set to fail fast; retry shortly or raise its minReady")]
    PoolEmpty { name: String, waited_ms: u64 },
    #[error("API key {id} does not exist; list keys with `warren key list`")]
    KeyNotFound { id: String },
    #[error("{detail}")]
    Forbidden { detail: String },
    #[error("{detail}")]
    Unsupported { detail: String },
    /// A checkpoint the sandbox's own state prevented (a resource CRIU or runsc cannot save); the
    /// sandbox keeps running.
    #[error("{detail}")]
    NotSaved { detail: String },
    #[error("template {template}'s start command failed: {detail}")]
    Startup { template: String, detail: String },
    #[error("snapshot {id} is damaged: its layer {layer} is missing from the layer store; delete the snapshot (DELETE /templates/{id}) and take it again")]
    SnapshotDamaged { id: String, layer: String },
    #[error("snapshot {id} is in use by {users}; kill those sandboxes and remove those pools first")]
    SnapshotInUse { id: String, users: String },
    #[error("template {id}'s memory image is being taken (its start command and ready check are running); retry once GET /templates/{id} lists it under memorySnapshots")]
    TemplateWarming { id: String },
    #[error("template id {id} is taken; choose another id")]
    TemplateTaken { id: String },
}
