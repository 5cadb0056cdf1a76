//! JSON shapes of the HTTP control plane. Field names follow E2B's OpenAPI (camelCase, `templateID`,
//! `sandboxID`) so that E2B clients parse them unchanged; Warren's extensions use the same style.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /sandboxes` and `POST /v2/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until the sandbox ends.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Pause instead of kill when the timeout passes.
    #[serde(default)]
    pub auto_pause: Option<bool>,
    /// With `autoPause`: `false` makes the timeout's pause keep the files only (E2B's
    /// filesystem mode); the default keeps the memory too.
    #[serde(default)]
    pub auto_pause_memory: Option<bool>,
    #[serde(default)]
    pub auto_resume: Option<AutoResume>,
    /// Warren extension: pause after this many seconds without traffic and with no process but
    /// the agent.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default, rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Warren extension: CPU count (defaults from config).
    #[serde(default)]
    pub cpu_count: Option<u32>,
    /// Warren extension: memory limit in MiB.
    #[serde(default, rename = "memoryMB")]
    pub memory_mb: Option<u64>,
    /// Warren extension: writable-layer quota in MiB.
    #[serde(default, rename = "diskSizeMB")]
    pub disk_size_mb: Option<u64>,
    /// Warren extension: the user commands run as when a call names none.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub network: Option<SandboxNetwork>,
    /// Warren extension: the runtime backend (`native`, `gvisor`; the daemon's default when absent).
    #[serde(default)]
    pub runtime: Option<String>,
    /// E2B cloud features Warren does not offer (volume mounts, IAM tokens, the MCP gateway):
    /// read so that a create asking for them is refused rather than quietly done without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<serde_json::Value>,
}

/// E2B's `SandboxNetworkConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetwork {
    /// `false`: traffic to the sandbox's ports needs its `trafficAccessToken`.
    #[serde(default)]
    pub allow_public_traffic: Option<bool>,
    #[serde(default)]
    pub allow_out: Vec<String>,
    #[serde(default)]
    pub deny_out: Vec<String>,
    /// Fields this Warren does not implement (`dnsServers`, `egressProxy`, `rules`, …): refused
    /// when set rather than ignored.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `autoResume` of a create request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutoResume {
    pub enabled: bool,
}

/// `lifecycle` of a sandbox's details (E2B's shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleInfo {
    pub auto_resume: bool,
    /// `kill` or `pause`.
    pub on_timeout: String,
    /// Warren extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
}

/// The answer to create and connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `GET /sandboxes/{id}` and the items of `GET /sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub end_at: String,
    pub envd_version: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// `running` or `paused` (E2B's names).
    pub state: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Warren extension: the exact lifecycle state (`creating`, `ready`, `running`, …).
    pub warren_state: crate::SandboxState,
    /// What the latest pause of a paused sandbox kept: `full` (memory and files) or `filesystem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<String>,
    /// Warren extension: the runtime backend it runs on (`native`, `gvisor`).
    pub runtime: String,
    pub lifecycle: LifecycleInfo,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetTimeout {
    /// Seconds from now.
    pub timeout: u64,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Refresh {
    #[serde(default)]
    pub duration: Option<u64>,
}

/// E2B's error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

/// `GET /templates` items (Warren's shape; E2B's template API is a build service we do not mirror).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateInfo {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// `building`, `ready` or `failed`.
    pub status: String,
    pub size_bytes: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Default user processes run as.
    pub default_user: String,
    /// The team that owns it; absent for public templates (such as `base`), which every team uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
    /// Memory images taken after the start command became ready, per runtime that saves memory:
    /// sandboxes of the template on that runtime start from one with the server running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_snapshots: Vec<TemplateMemorySnapshot>,
}

/// A template's memory image on one runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMemorySnapshot {
    pub runtime: String,
    /// `ready` or `failed` (its sandboxes then run the start command at boot).
    pub status: String,
    /// How long boot, start command, ready check and checkpoint took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /templates` (Warren's own): build a template from Debian packages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTemplate {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Extra Debian packages on top of the base set.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Usable by every team (only an admin key may build one); otherwise the caller's team's own.
    #[serde(default)]
    pub public: bool,
    /// Make it from this template's root filesystem instead of building one (ready at once).
    #[serde(default)]
    pub from: Option<String>,
    /// Run in the background in every sandbox of the template when it boots (`bash -l -c`).
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Run until it exits 0 before the sandbox is handed out (`bash -l -c`), e.g.
    /// `curl -sf localhost:8080`.
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// Seconds the ready check may take (default 60).
    #[serde(default)]
    pub ready_timeout: Option<u64>,
}

/// `POST /keys` (Warren's own, admin keys only): a new API key for a team.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApiKey {
    pub team: String,
    /// A label for people (who or what uses the key).
    #[serde(default)]
    pub name: String,
    /// May manage keys and public templates, and read host-wide metrics.
    #[serde(default)]
    pub admin: bool,
}

/// An API key as listed; `key` (the secret) only in the answer that created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub id: String,
    pub team: String,
    pub name: String,
    pub admin: bool,
    pub created_at: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A line of a template build's progress stream (`GET /templates/{id}/build`, NDJSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildProgress {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}
