//! The node engine: creates, tracks, times out and kills sandboxes. Every state change goes through
//! [`warren_types::state::transition`] and is written to the store before the caller hears of it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, instrument, warn};
use warren_runtime::{Handle, Runtime, SandboxSpec};
use warren_types::config::Config;
use warren_types::state::transition;
use warren_types::{KillReason, SandboxEvent, SandboxId, SandboxState, Team, TemplateId};

use crate::fork::FORKED_FROM_ENV;

use crate::events::{Level, LogEntry, LogQuery};
use crate::store::{Kind, Op, Store};
use crate::templates::Templates;
use crate::{now_ms, random_hex, NodeError};

const RECORD_VERSION: u32 = 1;

/// How much of the agent's own log is read (served live, copied into the store at kill).
const AGENT_LOG_TAIL: u64 = 64 * 1024;

fn kill_reason_text(r: &KillReason) -> (String, Level) {
    match r {
        KillReason::Requested => ("killed on request".into(), Level::Info),
        KillReason::Timeout => ("killed: its timeout passed".into(), Level::Info),
        KillReason::Exited { detail } => (format!("killed: its init process ended ({detail})"), Level::Error),
        KillReason::CreateFailed { detail } => (format!("killed: setting it up failed ({detail})"), Level::Error),
        KillReason::LostOnRestart => ("killed: its processes were gone after a daemon restart".into(), Level::Warn),
        KillReason::PoolRelease { detail } => (format!("released from its pool: {detail}"), Level::Info),
    }
}

/// A sandbox as the engine persists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    pub version: u32,
    pub id: SandboxId,
    /// Its owner: only keys of this team see or touch it.
    #[serde(default)]
    pub team: Team,
    pub template_id: TemplateId,
    pub state: SandboxState,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub started_at_ms: u64,
    pub end_at_ms: u64,
    pub access_token: String,
    pub handle: Option<Handle>,
    /// The pool it was booted for (or whose shape it was created cold for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Until when (Unix ms) its CPU quota is raised by its pool's burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_until_ms: Option<u64>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Its address on the sandbox network (none when the runtime gives it loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// Set when its ports are not public: requests to them must carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_token: Option<String>,
    /// Its egress policy, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::Egress>,
    /// Frozen layers under its writable layer, topmost first (it is a fork, or made from a
    /// snapshot); each stays on disk while a sandbox or a snapshot uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// The runtime backend it runs on (`native`, `gvisor`).
    #[serde(default = "native_runtime")]
    pub runtime: String,
    /// Paused with its memory saved to disk (a wake restores its processes rather than booting).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory_image: bool,
}

/// Restores of one sandbox from a memory image before its create (or wake) fails. runsc now and
/// then fails a restore, or restores a sandbox whose processes die at once (its checkpoint keeps
/// stale epoll interests of closed pipes: docs/runtimes.md; the agent no longer has any, a
/// sandbox's own processes may); later tries wait longer (see [`restore_backoff`]).
const RESTORE_ATTEMPTS: u32 = 6;

/// The pause before a restore after `tried` failed ones: none before the first, then 250 ms
/// doubling (7.75 s over all six).
fn restore_backoff(tried: u32) -> Duration {
    if tried == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(250 << (tried - 1).min(4))
    }
}

/// Sleeps for `d` unless it is zero: tokio's timer fires a zero-length sleep on its next
/// millisecond tick, which every first try (every create) would wait for.
pub(crate) async fn sleep_unless_zero(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// How long a sandbox restored from a memory image has to dial in before it is restored again.
const RESTORED_DIAL_WAIT: Duration = Duration::from_secs(5);

fn native_runtime() -> String {
    "native".into()
}

/// What happens to a sandbox when its time is up or nobody uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Pause instead of kill when the end time passes (E2B's `autoPause`).
    #[serde(default)]
    pub pause_on_timeout: bool,
    /// That pause keeps the files only (E2B's `autoPauseMemory: false`, a filesystem pause): the
    /// processes end and the paused sandbox costs no memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_files_only: bool,
    /// Traffic through the proxy resumes the sandbox when it is paused (E2B's `autoResume`).
    #[serde(default)]
    pub auto_resume: bool,
    /// Pause after this many seconds without traffic and with no process but the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// The sandbox's timeout length: the end time an automatic resume sets.
    #[serde(default)]
    pub timeout_secs: u64,
}

/// What a sandbox is made of; pools are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Part of the shape so that a team's creates claim only from its own pools.
    pub team: Team,
    pub template_id: TemplateId,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The runtime backend (resolved: never the empty default).
    pub runtime: String,
}

impl Shape {
    /// The shape a sandbox runs in: what a fork or a snapshot of it starts again.
    pub fn of(rec: &SandboxRecord) -> Shape {
        Shape {
            team: rec.team.clone(),
            template_id: rec.template_id.clone(),
            cpu_count: rec.cpu_count,
            memory_mb: rec.memory_mb,
            disk_mb: rec.disk_mb,
            runtime: rec.runtime.clone(),
        }
    }
}

/// What a caller may ask for at create time (already parsed from the API's JSON).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The caller's team: owns the sandbox, and only its templates (and public ones) can be used.
    pub team: Team,
    pub template_id: String,
    pub timeout_secs: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    /// The user commands run as when a call names none (the template's default otherwise).
    pub user: Option<String>,
    pub pause_on_timeout: bool,
    /// The timeout's pause keeps the files only (see [`Lifecycle::pause_files_only`]).
    pub pause_files_only: bool,
    pub auto_resume: bool,
    pub idle_timeout_secs: Option<u64>,
    /// Ports reachable only with the sandbox's traffic token.
    pub private_ports: bool,
    pub egress: crate::egress::EgressRequest,
    /// The runtime backend (the daemon's default when absent).
    pub runtime: Option<String>,
}

pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) store: Arc<Store>,
    pub templates: Arc<Templates>,
    pub keys: crate::keys::ApiKeys,
    /// Connections to agents (shared with the API's proxy).
    pub agents: crate::agent_client::AgentClient,
    /// Last CPU sample per sandbox (instant, cumulative CPU ns), for usage percentages.
    cpu_samples: Mutex<HashMap<SandboxId, (std::time::Instant, u64)>>,
    pub(crate) sandboxes: Mutex<HashMap<SandboxId, SandboxRecord>>,
    pub(crate) pools: Mutex<HashMap<String, crate::pools::PoolState>>,
    pub(crate) snapshots: Mutex<HashMap<TemplateId, crate::snapshots::SnapshotRecord>>,
    pub(crate) template_images: Mutex<crate::template_images::TemplateImages>,
    /// Per template: held by its warm-up, and by its removal (which waits for it).
    pub(crate) warm_locks: Mutex<HashMap<TemplateId, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the template warmer (a template's image was asked for, or a warm-up ended).
    pub(crate) warm_wake: Arc<tokio::sync::Notify>,
    /// Serializes pause and resume per sandbox (so concurrent wakes merge into one).
    op_locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// When each sandbox last saw traffic, and how many requests are in flight to it.
    pub(crate) activity: Mutex<HashMap<SandboxId, crate::lifecycle::Activity>>,
    pub(crate) telemetry: crate::telemetry::Telemetry,
    pub(crate) timelines: Mutex<HashMap<SandboxId, crate::timeline::Timeline>>,
    boot_permits: tokio::sync::Semaphore,
    /// `None` when sandboxes have no network.
    addresses: Option<Mutex<crate::addresses::AddressPool>>,
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    min: T,
    max: T,
) -> Result<T, NodeError> {
    if v < min || v > max {
        return Err(NodeError::OutOfRange { field, value: v.to_string(), allowed: format!("{min} to {max}") });
    }
    Ok(v)
}

impl Engine {
    /// Opens the store and templates, recovers the sandboxes of a previous run and starts the clock.
    pub async fn start(cfg: Config, runtime: Arc<dyn Runtime>) -> Result<Arc<Engine>, NodeError> {
        let store = Arc::new(Store::open(&cfg.data_dir.join("state.redb"))?);
        let cfg_boots = cfg.sandbox.max_concurrent_boots;
        let addresses = if cfg.network.enabled && runtime.capabilities().network {
            let (subnet, prefix) = cfg.network.subnet().map_err(|detail| NodeError::InvalidConfig { detail })?;
            Some(Mutex::new(crate::addresses::AddressPool::new(subnet, prefix)))
        } else {
            None
        };
        let templates = Arc::new(Templates::open(&cfg.data_dir, cfg.templates.clone(), cfg.native.uid_base)?);
        templates.follow_builds();
        let keys = crate::keys::ApiKeys::open(&cfg.data_dir, store.clone())?;
        let engine = Arc::new(Engine {
            cfg,
            runtime,
            store,
            templates,
            keys,
            agents: Default::default(),
            cpu_samples: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
            template_images: Default::default(),
            warm_locks: Mutex::new(HashMap::new()),
            warm_wake: Default::default(),
            op_locks: Mutex::new(HashMap::new()),
            activity: Mutex::new(HashMap::new()),
            telemetry: Default::default(),
            timelines: Mutex::new(HashMap::new()),
            boot_permits: tokio::sync::Semaphore::new(cfg_boots.max(1)),
            addresses,
        });
        engine.load_snapshots()?;
        engine.load_template_images()?;
        engine.load_pools()?;
        engine.recover().await?;
        engine.collect_layers();
        engine.start_pools();
        engine.start_template_warmer();
        engine.start_sampler();
        let clock = Arc::downgrade(&engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_prune: Option<std::time::Instant> = None;
            loop {
                tick.tick().await;
                let Some(e) = clock.upgrade() else { return };
                e.expire().await;
                e.pause_idle().await;
                if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
                    last_prune = Some(std::time::Instant::now());
                    e.prune_logs().await;
                }
            }
        });
        Ok(engine)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Re-attaches sandboxes whose init still runs; cleans up and forgets the rest; sweeps leftovers.
    async fn recover(self: &Arc<Self>) -> Result<(), NodeError> {
        let (records, unreadable) = self.store.all_readable::<SandboxRecord>(Kind::Sandbox)?;
        let records: Vec<SandboxRecord> = records.into_iter().map(|(_, r)| r).collect();
        // A sandbox whose record cannot be read is left alone, leftovers and all.
        let mut live: Vec<SandboxId> = unreadable.iter().filter_map(|k| SandboxId::parse(k).ok()).collect();
        // Ready sandboxes of pools that are gone or changed shape.
        let mut stale = Vec::new();
        for mut rec in records {
            // Records from before pools were scoped to teams name their pool without its team.
            if let Some(p) = rec.pool.as_mut().filter(|p| !p.contains('/')) {
                *p = crate::pools::pool_key(&rec.team, p);
            }
            // Paused to disk: no process to find; its layer and address wait for the wake.
            if rec.state == SandboxState::Hibernated && rec.version == RECORD_VERSION {
                info!(sandbox = %rec.id, "paused to disk; kept");
                live.push(rec.id.clone());
                if let (Some(pool), Some(a)) = (&self.addresses, rec.address) {
                    pool.lock().unwrap().claim(a);
                }
                self.sandboxes.lock().unwrap().insert(rec.id.clone(), rec);
                continue;
            }
            let alive = matches!(rec.state, SandboxState::Ready | SandboxState::Running | SandboxState::Paused)
                && rec.version == RECORD_VERSION;
            let watch = match (&rec.handle, alive) {
                (Some(h), true) => self.runtime.reattach(&rec.id, h),
                _ => None,
            };
            match watch {
                Some(w) => {
                    info!(sandbox = %rec.id, "re-attached after restart");
                    if let Some(h) = &rec.handle {
                        if let Err(e) = self.register_agent(&rec.id, h) {
                            warn!(sandbox = %rec.id, error = %e, "cannot listen for its agent");
                        }
                    }
                    live.push(rec.id.clone());
                    if let (Some(pool), Some(a)) = (&self.addresses, rec.address) {
                        pool.lock().unwrap().claim(a);
                    }
                    self.sandboxes.lock().unwrap().insert(rec.id.clone(), rec.clone());
                    self.watch_exit(rec.id.clone(), w);
                    if rec.state == SandboxState::Ready && !self.adopt_ready(&rec) {
                        stale.push(rec.id.clone());
                    }
                    self.schedule_burst_end(&rec);
                }
                None => {
                    info!(sandbox = %rec.id, "gone after restart; cleaning up");
                    let rt = self.runtime.clone();
                    let (id, h) = (rec.id.clone(), rec.handle.clone());
                    let tail = self.agent_log_entries(&rec.id);
                    let _ = tokio::task::spawn_blocking(move || rt.destroy(&id, h.as_ref())).await;
                    let (msg, level) = kill_reason_text(&KillReason::LostOnRestart);
                    let entry = LogEntry::warren(now_ms(), level, msg, &[("reason", "lost_on_restart".into())]);
                    let mut ops = vec![Op::Delete { kind: Kind::Sandbox, key: rec.id.as_str() }];
                    ops.extend(tail.iter().map(|e| Op::Log { sandbox: rec.id.as_str(), entry: e }));
                    ops.push(Op::Log { sandbox: rec.id.as_str(), entry: &entry });
                    self.store.write(ops)?;
                }
            }
        }
        for id in stale {
            let detail = "its pool was removed or changed while the daemon was down".to_owned();
            if let Err(e) = self.kill(&id, KillReason::PoolRelease { detail }).await {
                warn!(sandbox = %id, error = %e, "releasing a stale pool sandbox");
            }
        }
        let rt = self.runtime.clone();
        let swept = tokio::task::spawn_blocking(move || rt.sweep(&live)).await.unwrap_or_default();
        if !swept.is_empty() {
            info!(count = swept.len(), "removed leftovers of unknown sandboxes");
        }
        Ok(())
    }

    pub(crate) fn watch_exit(self: &Arc<Self>, id: SandboxId, w: warren_runtime::ExitWatch) {
        let me = Arc::downgrade(self);
        let pid = w.pid();
        tokio::spawn(async move {
            let exit = w.wait().await;
            if let Some(e) = me.upgrade() {
                // Only the init it was started for counts: a sandbox paused to disk (and perhaps
                // woken with a new init since) let this one go on purpose.
                let live = e.sandboxes.lock().unwrap().get(&id).is_some_and(|r| {
                    r.state != SandboxState::Creating && r.handle.as_ref().is_some_and(|h| h.pid == pid)
                });
                if live {
                    warn!(sandbox = %id, %exit, "sandbox init exited");
                    let _ = e.kill(&id, KillReason::Exited { detail: exit.to_string() }).await;
                }
            }
        });
    }

    /// Checks a shape against the configured bounds, filling in defaults.
    /// A template the team may not use is reported as missing, like one that does not exist.
    pub fn shape(
        &self,
        team: &Team,
        template: &str,
        cpu_count: Option<u32>,
        memory_mb: Option<u64>,
        disk_mb: Option<u64>,
        runtime: Option<&str>,
    ) -> Result<Shape, NodeError> {
        let lim = &self.cfg.sandbox;
        let template_id = TemplateId::parse(template)?;
        let hidden = self.templates.get(&template_id).is_some_and(|t| !t.visible_to(team))
            || self.snapshot(&template_id).is_some_and(|s| &s.team != team);
        if hidden {
            return Err(NodeError::TemplateNotFound { id: template_id.to_string() });
        }
        Ok(Shape {
            team: team.clone(),
            template_id,
            cpu_count: check_range("cpuCount", cpu_count.unwrap_or(lim.default_cpu_count), 1, lim.max_cpu_count)?,
            memory_mb: check_range("memoryMB", memory_mb.unwrap_or(lim.default_memory_mb), 64, lim.max_memory_mb)?,
            disk_mb: check_range("diskSizeMB", disk_mb.unwrap_or(lim.default_disk_mb), 16, lim.max_disk_mb)?,
            runtime: self.resolve_runtime(runtime)?,
        })
    }

    /// The backend a sandbox asking for `name` runs on, checked against those this daemon has.
    pub fn resolve_runtime(&self, name: Option<&str>) -> Result<String, NodeError> {
        match name {
            None => Ok(self.runtime.name().to_owned()),
            Some(n) if self.runtime.backend_capabilities(Some(n)).is_some() => Ok(n.to_owned()),
            Some(n) => Err(NodeError::OutOfRange {
                field: "runtime",
                value: n.to_owned(),
                allowed: format!(
                    "one of {} (other runtimes are not available on this daemon; its start-up log says why)",
                    self.runtime.backends().join(", ")
                ),
            }),
        }
    }

    /// Whether sandboxes of this backend get an address on the sandbox network.
    pub(crate) fn networked(&self, runtime: &str) -> bool {
        self.addresses.is_some() && self.runtime.backend_capabilities(Some(runtime)).is_some_and(|c| c.network)
    }

    /// Starts talking to a sandbox's agent (listening for it, when it dials in).
    pub(crate) fn register_agent(&self, id: &SandboxId, h: &Handle) -> Result<(), NodeError> {
        if h.agent_dials {
            let bound = self.runtime.take_agent_listener(id);
            self.agents.register_dialing(&h.agent_socket, bound).map_err(|detail| NodeError::Agent { detail })
        } else {
            self.agents.register(&h.agent_socket);
            Ok(())
        }
    }

    /// Creates a sandbox: claimed from the pool of its shape when there is one, cold otherwise.
    #[instrument(skip_all, fields(template = %req.template_id))]
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<SandboxRecord, NodeError> {
        let lim = &self.cfg.sandbox;
        let shape =
            self.shape(&req.team, &req.template_id, req.cpu_count, req.memory_mb, req.disk_mb, req.runtime.as_deref())?;
        let timeout =
            check_range("timeout", req.timeout_secs.unwrap_or(lim.default_timeout_secs), 1, lim.max_timeout_secs)?;
        for (k, v) in &req.env_vars {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(NodeError::OutOfRange {
                    field: "envVars",
                    value: k.clone(),
                    allowed: "names without '=' or NUL".into(),
                });
            }
        }
        if let Some(u) = &req.user {
            if u.is_empty() || u.len() > 64 || u.contains(['\0', ':', '/']) {
                return Err(NodeError::OutOfRange { field: "user", value: u.clone(), allowed: "a user name".into() });
            }
        }
        if let Some(idle) = req.idle_timeout_secs {
            check_range("idleTimeout", idle, 1, lim.max_timeout_secs)?;
        }
        let egress = req.egress.resolve()?;
        if egress.is_some() && self.addresses.is_some() && !self.networked(&shape.runtime) {
            return Err(NodeError::Unsupported {
                detail: format!(
                    "the {} runtime gives sandboxes no network on this host, so egress rules cannot apply; \
                     leave network.allowOut/denyOut out, or use runtime \"native\"",
                    shape.runtime
                ),
            });
        }
        if egress.is_some() && !self.networked(&shape.runtime) {
            return Err(NodeError::Conflict {
                id: String::new(),
                state: "configured without networking",
                action: "applying egress rules",
            });
        }
        let pool = self.pool_for(&shape);
        if let Some(name) = &pool {
            if let Some(rec) = self.claim_from_pool(name, &req, timeout, egress.as_ref()).await? {
                return Ok(rec);
            }
        }
        self.template_stack(&shape.template_id)?;
        let t_cold = std::time::Instant::now();
        let (rec, watch) = self.boot(&shape, pool, &[], egress.as_ref()).await?;
        let rec = self.start_booted(rec, watch, req, timeout, egress, "sandbox created").await?;
        self.telemetry.cold_create_seconds.observe(t_cold.elapsed().as_secs_f64());
        Ok(rec)
    }

    /// Hands a booted sandbox to its caller: settings through the agent, egress rules, lifecycle,
    /// and the record persisted as `Running` with a creation log entry. On failure nothing is left.
    pub(crate) async fn start_booted(
        self: &Arc<Self>,
        mut rec: SandboxRecord,
        watch: warren_runtime::ExitWatch,
        req: CreateRequest,
        timeout: u64,
        egress: Option<crate::egress::Egress>,
        message: &str,
    ) -> Result<SandboxRecord, NodeError> {
        let socket = rec.handle.as_ref().expect("booted").agent_socket.clone();
        if let Err(e) = self.init_agent(&socket, &req).await {
            self.agents.forget(&socket);
            self.abort_create(&rec.id, rec.handle.clone()).await;
            return Err(e);
        }
        if let Some(e) = &egress {
            let h = rec.handle.clone().expect("booted");
            if let Err(err) = self.set_egress_on(&rec.id, h, Some(e)).await {
                self.agents.forget(&socket);
                self.abort_create(&rec.id, rec.handle.clone()).await;
                return Err(err);
            }
        }
        rec.egress = egress;
        let now = now_ms();
        rec.state = transition(rec.state, &SandboxEvent::Claimed)?;
        let pool_idle = rec.pool.as_deref().and_then(|p| self.pool_idle_timeout(p));
        rec.lifecycle = req.lifecycle(timeout, pool_idle);
        rec.traffic_token = req.private_ports.then(|| random_hex(16));
        rec.metadata = req.metadata;
        rec.env_vars = req.env_vars;
        rec.started_at_ms = now;
        rec.end_at_ms = now + timeout * 1000;

        let mut fields = vec![
            ("team", rec.team.to_string()),
            ("template", rec.template_id.to_string()),
            ("cpuCount", rec.cpu_count.to_string()),
            ("memoryMB", rec.memory_mb.to_string()),
            ("diskSizeMB", rec.disk_mb.to_string()),
            ("timeout", timeout.to_string()),
        ];
        if let Some(src) = rec.env_vars.get(FORKED_FROM_ENV) {
            fields.push(("forkedFrom", src.clone()));
        }
        let created = LogEntry::warren(now, Level::Info, message, &fields);
        let written = self.store.write(vec![
            Op::put(Kind::Sandbox, rec.id.as_str(), &rec),
            Op::Log { sandbox: rec.id.as_str(), entry: &created },
        ]);
        if let Err(e) = written {
            self.agents.forget(&socket);
            self.abort_create(&rec.id, rec.handle.clone()).await;
            return Err(e.into());
        }
        self.sandboxes.lock().unwrap().insert(rec.id.clone(), rec.clone());
        self.watch_exit(rec.id.clone(), watch);
        info!(sandbox = %rec.id, "sandbox running");
        Ok(rec)
    }

    /// Hands the caller's settings to a booted sandbox's agent.
    pub(crate) async fn init_agent(&self, socket: &std::path::Path, req: &CreateRequest) -> Result<(), NodeError> {
        let mut init = serde_json::json!({ "envVars": req.env_vars });
        if let Some(u) = &req.user {
            init["defaultUser"] = serde_json::json!(u);
        }
        match self.agents.post_json(socket, "/init", &init).await {
            Ok(()) => Ok(()),
            Err(Ok(detail)) => Err(NodeError::Rejected { detail }),
            Err(Err(detail)) => Err(NodeError::Agent { detail }),
        }
    }

    /// Boots a sandbox of `shape` up to a running agent (state `Ready`, not yet persisted). On
    /// failure nothing is left behind.
    pub(crate) async fn boot(
        self: &Arc<Self>,
        shape: &Shape,
        pool: Option<String>,
        layers: &[String],
        egress: Option<&crate::egress::Egress>,
    ) -> Result<(SandboxRecord, warren_runtime::ExitWatch), NodeError> {
        if !layers.is_empty() {
            return self.boot_from(shape, pool, layers, None, egress).await;
        }
        // A memory snapshot's sandboxes on its runtime start from its memory image.
        let image = self
            .snapshot(&shape.template_id)
            .filter(|s| s.runtime.as_deref() == Some(shape.runtime.as_str()))
            .and_then(|s| s.memory_image);
        if image.is_some() {
            return self.boot_from(shape, pool, layers, image.as_deref(), egress).await;
        }
        // So do a template's, once its start command has run and its image was taken.
        let Some(img) = self.template_image(&shape.template_id, &shape.runtime) else {
            self.want_template_image(&shape.template_id, &shape.runtime);
            return self.boot_from(shape, pool, layers, None, egress).await;
        };
        match self.boot_from(shape, pool.clone(), &img.layers, Some(&img.memory_image), egress).await {
            Ok(booted) => Ok(booted),
            // A damaged image costs the speed-up, not the sandbox: boot it the slow way.
            Err(e @ NodeError::Runtime(_)) => {
                warn!(template = %shape.template_id, runtime = %shape.runtime, error = %e,
                      "restoring from the template's memory image failed; booting it cold");
                self.boot_from(shape, pool, layers, None, egress).await
            }
            Err(e) => Err(e),
        }
    }

    /// [`Engine::boot`], or with `image` a start from another sandbox's memory image (a fork in
    /// memory mode): its processes carry on, so the template's start command is not run again.
    pub(crate) async fn boot_from(
        self: &Arc<Self>,
        shape: &Shape,
        pool: Option<String>,
        layers: &[String],
        image: Option<&str>,
        egress: Option<&crate::egress::Egress>,
    ) -> Result<(SandboxRecord, warren_runtime::ExitWatch), NodeError> {
        let lim = &self.cfg.sandbox;
        // An explicit stack (a fork's) replaces the template's own layers (a snapshot's).
        let (rootfs, template_layers) = self.template_stack(&shape.template_id)?;
        let layers = if layers.is_empty() { &template_layers[..] } else { layers };
        self.check_host_room()?;
        let mut rnd = [0u8; 16];
        getrandom::getrandom(&mut rnd).expect("random source");
        let id = SandboxId::from_random(rnd);
        let now = now_ms();
        let mut rec = SandboxRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            team: shape.team.clone(),
            template_id: shape.template_id.clone(),
            state: SandboxState::Creating,
            cpu_count: shape.cpu_count,
            memory_mb: shape.memory_mb,
            disk_mb: shape.disk_mb,
            metadata: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            started_at_ms: now,
            end_at_ms: now,
            access_token: random_hex(16),
            handle: None,
            pool,
            burst_until_ms: None,
            lifecycle: Lifecycle::default(),
            address: None,
            traffic_token: None,
            egress: None,
            layers: layers.to_vec(),
            runtime: shape.runtime.clone(),
            memory_image: false,
        };
        {
            let mut map = self.sandboxes.lock().unwrap();
            if map.len() >= lim.max_sandboxes {
                return Err(NodeError::Capacity { max: lim.max_sandboxes });
            }
            map.insert(id.clone(), rec.clone());
        }
        // Bounded boots: the rest of a storm waits here (without holding anything a claim needs).
        let permit = self.boot_permits.acquire().await.expect("never closed");
        // The record is first written once the sandbox runs: a crash before that leaves only
        // leftovers that the next start's sweep removes, and nobody was told of the sandbox.
        let mut spec = SandboxSpec {
            id: id.clone(),
            template_rootfs: rootfs,
            layers: layers.iter().map(|l| self.runtime.layer_path(l)).collect(),
            cpu_count: shape.cpu_count,
            memory_mb: shape.memory_mb,
            disk_mb: shape.disk_mb,
            pids_max: lim.pids_max,
            address: None,
            runtime: Some(shape.runtime.clone()),
            egress: egress.map(crate::egress::Egress::rules),
        };
        if let Some(pool) = self.addresses.as_ref().filter(|_| self.networked(&shape.runtime)) {
            let Some(a) = pool.lock().unwrap().allocate() else {
                self.sandboxes.lock().unwrap().remove(&id);
                return Err(NodeError::AddressesExhausted { cidr: self.cfg.network.cidr.clone() });
            };
            spec.address = Some(a);
            rec.address = Some(a);
            if let Some(r) = self.sandboxes.lock().unwrap().get_mut(&id) {
                r.address = Some(a);
            }
        }
        // A sandbox restored from an image whose agent does not dial in (runsc leaves one
        // stuck now and then) is restored again, a few times.
        let total = if image.is_some() { RESTORE_ATTEMPTS } else { 1 };
        let mut attempts = total;
        let (handle, watch) = loop {
            attempts -= 1;
            sleep_unless_zero(restore_backoff(total - 1 - attempts)).await;
            let booted = match image {
                None => self.create_on_runtime(spec.clone()).await,
                Some(img) => {
                    let (rt, img, spec) = (self.runtime.clone(), img.to_owned(), spec.clone());
                    tokio::task::spawn_blocking(move || {
                        let h = rt.restore_copy(&spec, &img)?;
                        let w = rt.watch(&spec.id, &h);
                        Ok((h, w))
                    })
                    .await
                    .expect("runtime task")
                }
            };
            let (handle, watch) = match booted {
                Ok((h, Ok(w))) => (h, w),
                Ok((h, Err(e))) => {
                    self.abort_create(&id, Some(h)).await;
                    return Err(e.into());
                }
                Err(e) if image.is_some() && attempts > 0 => {
                    // The restore cleaned up after itself; runsc fails one now and then.
                    warn!(sandbox = %id, error = %e, "restoring the sandbox failed; restoring it again");
                    continue;
                }
                Err(e) => {
                    self.abort_create(&id, None).await;
                    return Err(e.into());
                }
            };
            if let Err(e) = self.register_agent(&id, &handle) {
                self.abort_create(&id, Some(handle)).await;
                return Err(e);
            }
            if image.is_none() || !handle.agent_dials {
                break (handle, watch);
            }
            match self.await_restored_agent(&id, spec.cpu_count, &handle, &watch).await {
                Ok(()) => break (handle, watch),
                Err(detail) => {
                    let said = self.agent_log_excerpt(&id);
                    warn!(sandbox = %id, %detail, agent_log = %said, attempts_left = attempts,
                        "the restored sandbox's agent did not dial in");
                    self.agents.forget(&handle.agent_socket);
                    let (rt, sid) = (self.runtime.clone(), id.clone());
                    let _ = tokio::task::spawn_blocking(move || rt.destroy(&sid, Some(&handle))).await;
                    if attempts == 0 {
                        self.abort_create(&id, None).await;
                        return Err(NodeError::Agent { detail });
                    }
                }
            }
        };
        drop(permit);
        let socket = handle.agent_socket.clone();
        rec.handle = Some(handle);
        rec.state = transition(rec.state, &SandboxEvent::Booted)?;
        if image.is_some() {
            return Ok((rec, watch));
        }
        if let Err(e) = self.run_startup(&rec).await {
            self.agents.forget(&socket);
            self.abort_create(&id, rec.handle.clone()).await;
            return Err(e);
        }
        Ok((rec, watch))
    }

    /// Builds the sandbox on the runtime (a blocking call) and opens its exit watch: the handle on
    /// success, with the watch or why there is none.
    async fn create_on_runtime(
        &self,
        spec: SandboxSpec,
    ) -> Result<(Handle, Result<warren_runtime::ExitWatch, warren_runtime::RuntimeError>), warren_runtime::RuntimeError>
    {
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || {
            let h = rt.create(&spec)?;
            let w = rt.watch(&spec.id, &h);
            Ok((h, w))
        })
        .await
        .expect("runtime task")
    }

    /// Launches the template's start command in the background and waits for its ready check,
    /// so the sandbox is handed out (or put in its pool) with its server already up.
    async fn run_startup(&self, rec: &SandboxRecord) -> Result<(), NodeError> {
        let template = self.snapshot(&rec.template_id).map(|s| s.base).unwrap_or_else(|| rec.template_id.clone());
        let Some(st) = self.templates.startup(&template) else { return Ok(()) };
        let socket = rec.handle.as_ref().expect("booted").agent_socket.clone();
        let fail = |detail: String| NodeError::Startup { template: template.to_string(), detail };
        // The commands travel as environment variables: no quoting of user text into a script.
        let start = serde_json::json!({"process": {
            "cmd": "/bin/bash",
            "args": ["-c", "setsid nohup bash -l -c 'eval \"$WARREN_START_CMD\"' >>/tmp/warren-start.log 2>&1 </dev/null &"],
            "envs": {"WARREN_START_CMD": st.start_cmd},
        }});
        match self.agents.run(&socket, start).await {
            Ok(0) => {}
            Ok(code) => return Err(fail(format!("launching the start command exited with {code}"))),
            Err(e) => return Err(fail(format!("launching the start command: {e}"))),
        }
        let Some(ready) = st.ready_cmd else { return Ok(()) };
        let check = serde_json::json!({"process": {
            "cmd": "/bin/bash",
            "args": ["-l", "-c", "eval \"$WARREN_READY_CMD\""],
            "envs": {"WARREN_READY_CMD": ready},
        }});
        let deadline = std::time::Instant::now() + Duration::from_secs(st.ready_timeout_secs);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            match self.agents.run(&socket, check.clone()).await {
                Ok(0) => return Ok(()),
                Ok(code) => last = Some(code),
                Err(e) => return Err(fail(format!("running the ready check: {e}"))),
            }
            // A poll interval: the check itself is a process start and takes milliseconds.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(fail(format!(
            "the ready check did not pass within {} s (last exit code {}); the start command's output is in \
             /tmp/warren-start.log inside its sandboxes",
            st.ready_timeout_secs,
            last.map_or("none".into(), |c| c.to_string())
        )))
    }

    pub(crate) async fn abort_create(&self, id: &SandboxId, handle: Option<Handle>) {
        let rt = self.runtime.clone();
        let i = id.clone();
        let _ = tokio::task::spawn_blocking(move || rt.destroy(&i, handle.as_ref())).await;
        if let Some(rec) = self.sandboxes.lock().unwrap().remove(id) {
            self.release_address(&rec);
        }
    }

    fn release_address(&self, rec: &SandboxRecord) {
        if let (Some(pool), Some(a)) = (&self.addresses, rec.address) {
            pool.lock().unwrap().release(a);
        }
    }

    pub fn get(&self, id: &str) -> Result<SandboxRecord, NodeError> {
        let sid = SandboxId::parse(id).map_err(|_| NodeError::SandboxNotFound { id: id.to_owned() })?;
        self.sandboxes
            .lock()
            .unwrap()
            .get(&sid)
            .cloned()
            .ok_or_else(|| NodeError::SandboxNotFound { id: id.to_owned() })
    }

    /// The sandbox if it belongs to `team`: another team's sandbox is reported as missing, exactly
    /// like one that does not exist, so its id reveals nothing.
    pub fn get_owned(&self, team: &Team, id: &str) -> Result<SandboxRecord, NodeError> {
        let rec = self.get(id)?;
        if &rec.team != team {
            return Err(NodeError::SandboxNotFound { id: id.to_owned() });
        }
        Ok(rec)
    }

    /// The team's claimed sandboxes, oldest first.
    pub fn list(&self, team: &Team) -> Vec<SandboxRecord> {
        let mut v: Vec<_> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.state.is_claimed() && &r.team == team)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.started_at_ms.cmp(&b.started_at_ms).then(a.id.cmp(&b.id)));
        v
    }

    /// Where to reach a running sandbox's agent. Called for every proxied request, so it reads the
    /// record in place instead of cloning it.
    pub fn agent_socket(&self, id: &str) -> Result<(PathBuf, String), NodeError> {
        let not_found = || NodeError::SandboxNotFound { id: id.to_owned() };
        let sid = SandboxId::parse(id).map_err(|_| not_found())?;
        let map = self.sandboxes.lock().unwrap();
        let rec = map.get(&sid).ok_or_else(not_found)?;
        match (rec.state, &rec.handle) {
            (SandboxState::Running | SandboxState::Ready, Some(h)) => {
                Ok((h.agent_socket.clone(), rec.access_token.clone()))
            }
            (SandboxState::Creating, _) => {
                Err(NodeError::Conflict { id: id.into(), state: "still being created", action: "talking to it" })
            }
            (SandboxState::Paused | SandboxState::Hibernated, _) => Err(NodeError::Conflict {
                id: id.into(),
                state: "paused",
                action: "talking to it before it is resumed",
            }),
            _ => Err(NodeError::SandboxNotFound { id: id.into() }),
        }
    }

    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn kill(&self, id: &SandboxId, reason: KillReason) -> Result<(), NodeError> {
        let rec = {
            let mut map = self.sandboxes.lock().unwrap();
            let Some(rec) = map.get(id) else { return Err(NodeError::SandboxNotFound { id: id.to_string() }) };
            if rec.state == SandboxState::Creating {
                return Err(NodeError::Conflict {
                    id: id.to_string(),
                    state: "still being created",
                    action: "killing it",
                });
            }
            transition(rec.state, &SandboxEvent::Kill(reason.clone()))?;
            map.remove(id).expect("present")
        };
        self.forget_ready(&rec);
        self.release_address(&rec);
        self.op_locks.lock().unwrap().remove(id);
        self.activity.lock().unwrap().remove(id);
        self.timelines.lock().unwrap().remove(id);
        if let Some(h) = &rec.handle {
            self.agents.forget(&h.agent_socket);
        }
        self.cpu_samples.lock().unwrap().remove(id);
        // Every process gets SIGKILL now; unmounting, the cgroup and the layer go in the background,
        // so the caller does not wait for the kernel to tear the sandbox down. (A daemon that dies
        // meanwhile leaves leftovers that the next start sweeps.)
        let stopped = self.runtime.stop(id, rec.handle.as_ref());
        // The agent's log goes with the sandbox's run directory: keep its tail in the store.
        let tail = self.agent_log_entries(id);
        // Killed is terminal and E2B lists only live sandboxes: the record goes; its log stays for
        // the retention period.
        let (msg, level) = kill_reason_text(&reason);
        let mut fields = vec![("reason", reason.code().to_owned())];
        if let Err(e) = &stopped {
            fields.push(("stopError", e.to_string()));
        }
        let killed = LogEntry::warren(now_ms(), level, msg, &fields);
        self.telemetry.kills.get_or_create(&crate::telemetry::ReasonLabel { reason: reason.code().into() }).inc();
        let mut ops = vec![Op::Delete { kind: Kind::Sandbox, key: id.as_str() }];
        ops.extend(tail.iter().map(|e| Op::Log { sandbox: id.as_str(), entry: e }));
        ops.push(Op::Log { sandbox: id.as_str(), entry: &killed });
        let written = self.store.write(ops);
        let rt = self.runtime.clone();
        let (i, h) = (id.clone(), rec.handle.clone());
        let unused = self.unused_layers(&rec.layers);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = rt.destroy(&i, h.as_ref()) {
                warn!(sandbox = %i, error = %e, "tearing down a killed sandbox; the next start sweeps what is left");
            }
            crate::fork::remove_layers(rt.as_ref(), &unused);
        });
        info!(?reason, "sandbox killed");
        written?;
        stopped.map_err(NodeError::from)
    }

    pub async fn kill_by_name(&self, id: &str) -> Result<(), NodeError> {
        let sid = SandboxId::parse(id).map_err(|_| NodeError::SandboxNotFound { id: id.to_owned() })?;
        self.kill(&sid, KillReason::Requested).await
    }

    /// Sets the end time to `secs` from now (may shorten it).
    pub fn set_timeout(&self, id: &str, secs: u64) -> Result<SandboxRecord, NodeError> {
        let secs = check_range("timeout", secs, 0, self.cfg.sandbox.max_timeout_secs)?;
        let end = now_ms() + secs * 1000;
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            format!("timeout set: ends in {secs} s"),
            &[("endAt", crate::rfc3339(end))],
        );
        self.update(id, Some(entry), |r| r.end_at_ms = end)
    }

    /// Extends the end time to at least `secs` from now.
    pub fn refresh(&self, id: &str, secs: u64) -> Result<SandboxRecord, NodeError> {
        let secs = check_range("duration", secs, 0, self.cfg.sandbox.max_timeout_secs)?;
        // Not logged: clients refresh as a keep-alive, and the log would fill with them.
        self.update(id, None, |r| r.end_at_ms = r.end_at_ms.max(now_ms() + secs * 1000))
    }

    /// Changes a live record, persisting it (with `log`, in the same transaction) before the
    /// in-memory copy changes.
    pub(crate) fn update(
        &self,
        id: &str,
        log: Option<LogEntry>,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<SandboxRecord, NodeError> {
        let sid = SandboxId::parse(id).map_err(|_| NodeError::SandboxNotFound { id: id.to_owned() })?;
        let mut map = self.sandboxes.lock().unwrap();
        let rec = map.get_mut(&sid).ok_or_else(|| NodeError::SandboxNotFound { id: id.to_owned() })?;
        let mut next = rec.clone();
        f(&mut next);
        let mut ops = vec![Op::put(Kind::Sandbox, id, &next)];
        if let Some(e) = &log {
            ops.push(Op::Log { sandbox: id, entry: e });
        }
        self.store.write(ops)?;
        *rec = next.clone();
        Ok(next)
    }

    /// Freezes every process of a running sandbox (memory, files and sockets stay). Returns
    /// `Conflict` when it is already paused.
    pub async fn pause(&self, id: &str) -> Result<SandboxRecord, NodeError> {
        self.pause_because(id, "requested").await
    }

    /// Pauses with the memory saved to disk (`memory: true`): every process stops where it is, its
    /// memory is written out and freed, and a resume restores them. A runtime that keeps memory
    /// only in place (native without CRIU) refuses with what to do instead.
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn pause_with_memory(&self, id: &str, reason: &str) -> Result<SandboxRecord, NodeError> {
        self.pause_as(id, reason, true).await
    }

    /// Pauses to disk (E2B's filesystem mode, `memory: false`): every process ends and its memory
    /// is freed; the writable layer, address, tokens and settings stay, and a resume boots the
    /// sandbox again on the same files (the template's start command runs again). A sandbox paused
    /// with its memory can be moved to disk this way too.
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn pause_to_disk(&self, id: &str, reason: &str) -> Result<SandboxRecord, NodeError> {
        let lock = self.op_lock(id);
        let _serial = lock.lock().await;
        let rec = self.get(id)?;
        if rec.state == SandboxState::Hibernated {
            return Err(NodeError::Conflict { id: id.into(), state: "already paused", action: "pausing it" });
        }
        let frozen = match rec.state {
            SandboxState::Running => transition(rec.state, &SandboxEvent::Pause)?,
            other => other,
        };
        let next = transition(frozen, &SandboxEvent::Hibernate)?;
        let rt = self.runtime.clone();
        let sid = rec.id.clone();
        if rec.state == SandboxState::Running {
            // Frozen first: the files stop changing before the processes go.
            let rt = rt.clone();
            let sid = sid.clone();
            tokio::task::spawn_blocking(move || rt.freeze(&sid)).await.expect("runtime task")?;
        }
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            "sandbox paused",
            &[("reason", reason.to_owned()), ("mode", "filesystem".into())],
        );
        // Marked before its init goes, so the exit is not taken for a crash.
        let handle = rec.handle.clone();
        let updated = self.update(id, Some(entry), |r| {
            r.state = next;
            r.handle = None;
        })?;
        if let Some(h) = &handle {
            self.agents.forget(&h.agent_socket);
        }
        self.timelines.lock().unwrap().remove(&rec.id);
        tokio::task::spawn_blocking(move || rt.halt(&sid, handle.as_ref())).await.expect("runtime task")?;
        info!("sandbox paused to disk");
        Ok(updated)
    }

    /// Boots a sandbox paused to disk again: same id, address, files, tokens and settings.
    async fn wake(self: &Arc<Self>, rec: &SandboxRecord) -> Result<SandboxRecord, NodeError> {
        let (rootfs, template_layers) = self.template_stack(&rec.template_id)?;
        let layers = if rec.layers.is_empty() { template_layers } else { rec.layers.clone() };
        self.check_host_room()?;
        let spec = SandboxSpec {
            id: rec.id.clone(),
            template_rootfs: rootfs,
            layers: layers.iter().map(|l| self.runtime.layer_path(l)).collect(),
            cpu_count: rec.cpu_count,
            memory_mb: rec.memory_mb,
            disk_mb: rec.disk_mb,
            pids_max: self.cfg.sandbox.pids_max,
            address: rec.address,
            runtime: Some(rec.runtime.clone()),
            egress: rec.egress.as_ref().map(crate::egress::Egress::rules),
        };
        let t0 = std::time::Instant::now();
        let halt = |h: Option<warren_runtime::Handle>| {
            let (rt, id) = (self.runtime.clone(), rec.id.clone());
            tokio::task::spawn_blocking(move || rt.halt(&id, h.as_ref()))
        };
        // A restore whose agent does not dial in (runsc leaves one stuck now and then) is halted
        // and restored again from the same image, a few times.
        let total = if rec.memory_image { RESTORE_ATTEMPTS } else { 1 };
        let mut attempts = total;
        let (handle, watch) = loop {
            attempts -= 1;
            sleep_unless_zero(restore_backoff(total - 1 - attempts)).await;
            let permit = self.boot_permits.acquire().await.expect("never closed");
            let booted = if rec.memory_image {
                let (rt, spec) = (self.runtime.clone(), spec.clone());
                tokio::task::spawn_blocking(move || {
                    let h = rt.restore(&spec)?;
                    let w = rt.watch(&spec.id, &h);
                    Ok((h, w))
                })
                .await
                .expect("runtime task")
            } else {
                self.create_on_runtime(spec.clone()).await
            };
            drop(permit);
            let (handle, watch) = match booted {
                Ok((h, Ok(w))) => (h, w),
                Ok((h, Err(e))) => {
                    let _ = halt(Some(h)).await;
                    return Err(e.into());
                }
                Err(e) => {
                    let _ = halt(None).await;
                    if rec.memory_image && attempts > 0 {
                        // The image stays for another try; runsc fails a restore now and then.
                        warn!(sandbox = %rec.id, error = %e, "restoring the sandbox failed; restoring it again");
                        continue;
                    }
                    return Err(e.into());
                }
            };
            if let Err(e) = self.register_agent(&rec.id, &handle) {
                let _ = halt(Some(handle)).await;
                return Err(e);
            }
            if !rec.memory_image || !handle.agent_dials {
                break (handle, watch);
            }
            match self.await_restored_agent(&rec.id, rec.cpu_count, &handle, &watch).await {
                Ok(()) => break (handle, watch),
                Err(detail) => {
                    let said = self.agent_log_excerpt(&rec.id);
                    warn!(sandbox = %rec.id, %detail, agent_log = %said, attempts_left = attempts,
                        "the woken sandbox's agent did not dial in");
                    self.agents.forget(&handle.agent_socket);
                    let _ = halt(Some(handle)).await;
                    if attempts == 0 {
                        return Err(NodeError::Agent { detail });
                    }
                }
            }
        };
        let booted_ms = t0.elapsed().as_millis() as u64;
        let mut woken = rec.clone();
        woken.handle = Some(handle.clone());
        let req = CreateRequest { env_vars: rec.env_vars.clone(), ..Default::default() };
        let started = async {
            // A restored agent kept its settings (they are in its memory), and its dial-in showed
            // it alive: only a booted one is told them again.
            if !rec.memory_image {
                self.init_agent(&handle.agent_socket, &req).await?;
            }
            // A restored sandbox had its rules before its processes ran again (`SandboxSpec::egress`).
            if let Some(e) = rec.egress.as_ref().filter(|_| !rec.memory_image) {
                self.set_egress_on(&rec.id, handle.clone(), Some(e)).await?;
            }
            // Restored processes carry on; only a booted sandbox starts its server again.
            if rec.memory_image {
                return Ok(());
            }
            self.run_startup(&woken).await
        };
        if let Err(e) = started.await {
            self.agents.forget(&handle.agent_socket);
            // What the agent said is the best clue to a failed wake: keep it in the sandbox's log
            // (the halt removes the file it is in).
            let tail = self.agent_log_entries(&rec.id);
            let failed = LogEntry::warren(now_ms(), Level::Warn, "wake failed", &[("error", e.to_string())]);
            let mut ops: Vec<Op> = tail.iter().map(|l| Op::Log { sandbox: rec.id.as_str(), entry: l }).collect();
            ops.push(Op::Log { sandbox: rec.id.as_str(), entry: &failed });
            if let Err(err) = self.store.write(ops) {
                warn!(sandbox = %rec.id, error = %err, "recording a failed wake in the log");
            }
            let _ = halt(Some(handle)).await;
            return Err(e);
        }
        // The record takes the new init before the watch can see anything of it.
        let kept = match self.sandboxes.lock().unwrap().get_mut(&rec.id) {
            Some(r) => {
                r.handle = Some(handle.clone());
                true
            }
            None => false,
        };
        if !kept {
            // Killed while it was waking: what the wake built goes too.
            self.agents.forget(&handle.agent_socket);
            let (rt, id) = (self.runtime.clone(), rec.id.clone());
            let _ = tokio::task::spawn_blocking(move || rt.destroy(&id, Some(&handle))).await;
            return Err(NodeError::SandboxNotFound { id: rec.id.to_string() });
        }
        self.watch_exit(rec.id.clone(), watch);
        debug!(booted_ms, ready_ms = t0.elapsed().as_millis() as u64, memory = rec.memory_image, "woken");
        Ok(woken)
    }

    /// [`Engine::pause`], logging why (`requested`, `timeout`, `idle`).
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn pause_because(&self, id: &str, reason: &str) -> Result<SandboxRecord, NodeError> {
        self.pause_as(id, reason, false).await
    }

    /// A pause: in place, or with the memory saved to disk when `to_disk` is asked or the runtime
    /// has no cheap frozen state.
    async fn pause_as(&self, id: &str, reason: &str, to_disk: bool) -> Result<SandboxRecord, NodeError> {
        let lock = self.op_lock(id);
        let _serial = lock.lock().await;
        let t0 = std::time::Instant::now();
        let rec = self.get(id)?;
        if matches!(rec.state, SandboxState::Paused | SandboxState::Hibernated) {
            return Err(NodeError::Conflict { id: id.into(), state: "already paused", action: "pausing it" });
        }
        let caps = self.runtime.backend_capabilities(Some(&rec.runtime));
        if to_disk && !caps.is_some_and(|c| c.hibernate) {
            return Err(NodeError::Unsupported {
                detail: format!(
                    "runtime {} cannot save a sandbox's memory to disk on this host (no working CRIU; the \
                     daemon's start-up log says why): pause without \"memory\" to freeze it in place, or create \
                     it with runtime \"gvisor\"",
                    rec.runtime
                ),
            });
        }
        if to_disk || caps.is_some_and(|c| c.pause_to_disk) {
            return self.checkpoint_locked(rec, reason, t0).await;
        }
        let next = transition(rec.state, &SandboxEvent::Pause)?;
        let rt = self.runtime.clone();
        let sid = rec.id.clone();
        tokio::task::spawn_blocking(move || rt.freeze(&sid)).await.expect("runtime task")?;
        let entry = LogEntry::warren(now_ms(), Level::Info, "sandbox paused", &[("reason", reason.to_owned())]);
        let r = self.update(id, Some(entry), |r| r.state = next);
        if r.is_err() {
            // Gone meanwhile (killed) or not persisted: do not leave it frozen behind our back.
            let rt = self.runtime.clone();
            let sid = rec.id.clone();
            let _ = tokio::task::spawn_blocking(move || rt.thaw(&sid)).await;
        }
        if r.is_ok() {
            self.telemetry.pause_seconds.observe(t0.elapsed().as_secs_f64());
        }
        info!("sandbox paused");
        r
    }

    /// Pauses a sandbox whose runtime saves memory: its processes and memory go to disk and its
    /// memory is freed; a resume restores them where they were. (The caller holds its op lock.)
    async fn checkpoint_locked(
        &self,
        rec: SandboxRecord,
        reason: &str,
        t0: std::time::Instant,
    ) -> Result<SandboxRecord, NodeError> {
        let next = transition(transition(rec.state, &SandboxEvent::Pause)?, &SandboxEvent::Hibernate)?;
        let Some(handle) = rec.handle.clone() else {
            return Err(NodeError::Conflict { id: rec.id.to_string(), state: "not booted", action: "pausing it" });
        };
        let id = rec.id.to_string();
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            "sandbox paused",
            &[("reason", reason.to_owned()), ("mode", "memory".into())],
        );
        // Marked before its sandbox process goes, so the exit is not taken for a crash.
        let updated = self.update(&id, Some(entry), |r| {
            r.state = next;
            r.handle = None;
            r.memory_image = true;
        })?;
        // Every connection to the agent closes: a checkpoint with one open would break the sandbox.
        let quiet = self.agents.quiesce(&handle.agent_socket).await;
        self.agents.forget(&handle.agent_socket);
        let checkpointed = match quiet {
            Ok(()) => {
                let (rt, sid, h) = (self.runtime.clone(), rec.id.clone(), handle.clone());
                tokio::task::spawn_blocking(move || rt.checkpoint(&sid, &h)).await.expect("runtime task")
            }
            Err(detail) => Err(warren_runtime::RuntimeError::Checkpoint { id: rec.id.clone(), detail }),
        };
        match checkpointed {
            Ok(bytes) => {
                self.timelines.lock().unwrap().remove(&rec.id);
                self.telemetry.pause_seconds.observe(t0.elapsed().as_secs_f64());
                info!(
                    image_bytes = bytes,
                    elapsed_ms = t0.elapsed().as_millis() as u64,
                    "sandbox paused with its memory"
                );
                Ok(updated)
            }
            Err(e) => {
                // It keeps running: put it back as it was.
                let _ = self.update(&id, None, |r| {
                    r.state = rec.state;
                    r.handle = Some(handle.clone());
                    r.memory_image = false;
                });
                if let Err(err) = self.register_agent(&rec.id, &handle) {
                    warn!(error = %err, "listening for its agent again");
                }
                // What the sandbox holds can stop a checkpoint (409: it keeps running, and trying
                // again as it is will fail again); a full disk is the host's trouble.
                Err(match e {
                    warren_runtime::RuntimeError::Checkpoint { ref detail, .. }
                        if !detail.to_ascii_lowercase().contains("no space left on device") =>
                    {
                        NodeError::NotSaved { detail: e.to_string() }
                    }
                    other => other.into(),
                })
            }
        }
    }

    /// Thaws a paused sandbox; its end time becomes `timeout_secs` from now. Returns whether it
    /// was paused (`false`: it was already running and only the end time moved).
    pub async fn resume(
        self: &Arc<Self>,
        id: &str,
        timeout_secs: Option<u64>,
    ) -> Result<(SandboxRecord, bool), NodeError> {
        self.resume_because(id, timeout_secs, "requested").await
    }

    /// [`Engine::resume`], logging why. Concurrent resumes of one sandbox merge: the first thaws
    /// it, the others find it running.
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn resume_because(
        self: &Arc<Self>,
        id: &str,
        timeout_secs: Option<u64>,
        reason: &str,
    ) -> Result<(SandboxRecord, bool), NodeError> {
        let lock = self.op_lock(id);
        let _serial = lock.lock().await;
        let t0 = std::time::Instant::now();
        let rec = self.get(id)?;
        let max = self.cfg.sandbox.max_timeout_secs;
        if rec.state == SandboxState::Hibernated {
            let next = transition(rec.state, &SandboxEvent::Wake)?;
            let woken = self.wake(&rec).await?;
            let secs = timeout_secs.unwrap_or(self.cfg.sandbox.default_timeout_secs).min(max);
            let entry = LogEntry::warren(
                now_ms(),
                Level::Info,
                "sandbox resumed",
                &[
                    ("timeout", secs.to_string()),
                    ("reason", reason.to_owned()),
                    ("mode", if rec.memory_image { "memory" } else { "filesystem" }.into()),
                ],
            );
            let rec = self.update(id, Some(entry), |r| {
                r.state = next;
                r.handle = woken.handle.clone();
                r.end_at_ms = now_ms() + secs * 1000;
                r.memory_image = false;
            })?;
            self.telemetry.resume_seconds.observe(t0.elapsed().as_secs_f64());
            info!(elapsed_ms = t0.elapsed().as_millis() as u64, "sandbox woken from disk");
            return Ok((rec, true));
        }
        if rec.state != SandboxState::Paused {
            let rec = match timeout_secs {
                Some(t) => self.refresh(id, t.min(max))?,
                None => rec,
            };
            return Ok((rec, false));
        }
        let next = transition(rec.state, &SandboxEvent::Resume)?;
        let rt = self.runtime.clone();
        let sid = rec.id.clone();
        tokio::task::spawn_blocking(move || rt.thaw(&sid)).await.expect("runtime task")?;
        let secs = timeout_secs.unwrap_or(self.cfg.sandbox.default_timeout_secs).min(max);
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            "sandbox resumed",
            &[("timeout", secs.to_string()), ("reason", reason.to_owned())],
        );
        let rec = self.update(id, Some(entry), |r| {
            r.state = next;
            r.end_at_ms = now_ms() + secs * 1000;
        })?;
        self.telemetry.resume_seconds.observe(t0.elapsed().as_secs_f64());
        info!("sandbox resumed");
        Ok((rec, true))
    }

    /// Refuses a new sandbox while the host is short of memory or disk (the reserves are config).
    fn check_host_room(&self) -> Result<(), NodeError> {
        let lim = &self.cfg.sandbox;
        if let Some(avail) = crate::host::mem_available_mb() {
            if avail < lim.min_free_memory_mb {
                return Err(NodeError::HostFull {
                    resource: "memory",
                    available_mb: avail,
                    reserve_mb: lim.min_free_memory_mb,
                    setting: "sandbox.min_free_memory_mb",
                });
            }
        }
        if let Some(free) = crate::host::disk_free_mb(&self.cfg.data_dir) {
            if free < lim.min_free_disk_mb {
                return Err(NodeError::HostFull {
                    resource: "disk",
                    available_mb: free,
                    reserve_mb: lim.min_free_disk_mb,
                    setting: "sandbox.min_free_disk_mb",
                });
            }
        }
        Ok(())
    }

    pub(crate) fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(sid) = SandboxId::parse(id) else { return Arc::default() };
        // Only live sandboxes get a lock (and an entry that kill removes): no growth from bad ids.
        if !self.sandboxes.lock().unwrap().contains_key(&sid) {
            return Arc::default();
        }
        self.op_locks.lock().unwrap().entry(sid).or_default().clone()
    }

    async fn expire(&self) {
        let now = now_ms();
        let due: Vec<(SandboxId, bool, bool)> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            // A paused sandbox's clock is stopped: it is kept until resumed or killed.
            .filter(|r| r.state == SandboxState::Running && r.end_at_ms <= now)
            .map(|r| (r.id.clone(), r.lifecycle.pause_on_timeout, r.lifecycle.pause_files_only))
            .collect();
        for (id, pause, files_only) in due {
            if pause {
                let mut files_only_pause = None;
                if files_only {
                    match self.pause_to_disk(id.as_str(), "timeout").await {
                        Ok(r) => files_only_pause = Some(r),
                        Err(e) => {
                            warn!(sandbox = %id, error = %e, "a files-only pause failed; pausing with the memory")
                        }
                    }
                }
                let paused = match files_only_pause {
                    Some(r) => Ok(r),
                    None => self.pause_because(id.as_str(), "timeout").await,
                };
                match paused {
                    Ok(_) => continue,
                    Err(e) => warn!(sandbox = %id, error = %e, "pausing an expired sandbox failed; killing it"),
                }
            }
            if let Err(e) = self.kill(&id, KillReason::Timeout).await {
                warn!(sandbox = %id, error = %e, "killing an expired sandbox");
            }
        }
    }

    /// Number of live sandboxes using a template.
    /// What a sandbox of template `id` is made of: the root filesystem at the bottom and frozen
    /// layers over it (a snapshot's), or why it cannot be used.
    pub(crate) fn template_stack(&self, id: &TemplateId) -> Result<(PathBuf, Vec<String>), NodeError> {
        match self.snapshot(id) {
            Some(s) => {
                // A layer removed or damaged behind Warren's back: refuse clearly, boot nothing.
                if let Some(l) = s.layers.iter().find(|l| !self.runtime.layer_path(l).is_dir()) {
                    return Err(NodeError::SnapshotDamaged { id: id.to_string(), layer: l.clone() });
                }
                Ok((self.templates.ready_rootfs(&s.base)?, s.layers))
            }
            None => Ok((self.templates.ready_rootfs(id)?, Vec::new())),
        }
    }

    pub fn template_users(&self, id: &TemplateId) -> usize {
        self.sandboxes.lock().unwrap().values().filter(|r| &r.template_id == id).count()
    }

    /// Removes a template of the caller's team; public ones need an admin key.
    pub async fn remove_template(&self, caller: &crate::keys::Caller, id: &str) -> Result<(), NodeError> {
        let tid = TemplateId::parse(id)?;
        if self.snapshot(&tid).is_some() {
            return self.remove_snapshot(&caller.team, &tid);
        }
        match self.templates.get(&tid) {
            Some(t) if t.visible_to(&caller.team) => {
                if t.team.is_none() && !caller.admin {
                    return Err(NodeError::Forbidden {
                        detail: format!("template {id} is public: only an admin key may remove it"),
                    });
                }
            }
            _ => return Err(NodeError::TemplateNotFound { id: id.into() }),
        }
        // A warm-up of the template holds a sandbox of it: wait for it to end.
        let _no_warm_up = self.stop_template_warm_up(&tid).await?;
        // Sandboxes, pools and snapshots stacked on it all need it.
        let count = self.template_users(&tid)
            + self.templates.derived_from(&tid).len()
            + self.pools_of_template(&tid).len()
            + self.snapshots.lock().unwrap().values().filter(|s| s.base == tid).count();
        if count > 0 {
            return Err(NodeError::TemplateInUse { id: id.into(), count });
        }
        self.templates.remove(&tid).await?;
        self.drop_template_images(&tid)
    }

    /// The sandbox's resource use in envd's `/metrics` shape. CPU % is over the time since the
    /// previous call (or since start on the first), across the sandbox's CPU quota.
    pub fn metrics(&self, id: &str) -> Result<serde_json::Value, NodeError> {
        let rec = self.get(id)?;
        let s = self.stats(id)?;
        let now = std::time::Instant::now();
        let since_start_ns = now_ms().saturating_sub(rec.started_at_ms) * 1_000_000;
        let (prev_t, prev_cpu) = self
            .cpu_samples
            .lock()
            .unwrap()
            .insert(rec.id.clone(), (now, s.cpu_usage_ns))
            .map(|(t, c)| (now.duration_since(t).as_nanos() as u64, c))
            .unwrap_or((since_start_ns, 0));
        let pct = if prev_t == 0 {
            0.0
        } else {
            (s.cpu_usage_ns.saturating_sub(prev_cpu)) as f64 / (prev_t as f64 * f64::from(rec.cpu_count)) * 100.0
        };
        Ok(serde_json::json!({
            "ts": now_ms() / 1000,
            "cpu_count": rec.cpu_count,
            "cpu_used_pct": (pct.min(100.0) * 100.0).round() / 100.0,
            "mem_total": s.memory_limit_bytes,
            "mem_used": s.memory_used_bytes,
            "mem_cache": s.memory_cache_bytes,
            "disk_used": s.disk_used_bytes,
            "disk_total": s.disk_limit_bytes,
        }))
    }

    /// Waits for a sandbox restored from a memory image to dial in and answer a first request;
    /// fails as soon as the sandbox exits (its agent crashed on restore), or after
    /// [`RESTORED_DIAL_WAIT`]. Then lowers its CPU quota to its own `cpu_count`: the runtime
    /// restores on every CPU (docs/runtimes.md), and the restore is done once the agent answers.
    async fn await_restored_agent(
        &self,
        id: &SandboxId,
        cpu_count: u32,
        handle: &Handle,
        watch: &warren_runtime::ExitWatch,
    ) -> Result<(), String> {
        self.await_restored_answer(handle, watch).await?;
        self.runtime.set_cpu(id, cpu_count).map_err(|e| format!("setting its CPU quota: {e}"))
    }

    async fn await_restored_answer(&self, handle: &Handle, watch: &warren_runtime::ExitWatch) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + RESTORED_DIAL_WAIT;
        loop {
            let slice = Duration::from_millis(50).min(deadline - tokio::time::Instant::now());
            match self.agents.await_dial(&handle.agent_socket, slice).await {
                Ok(()) => {
                    // The crash comes within the agent's first few event-loop turns after the
                    // restore, sometimes after it dialed: a request shows it past them.
                    let answered = tokio::time::timeout(
                        deadline - tokio::time::Instant::now(),
                        self.agents.health(&handle.agent_socket),
                    )
                    .await
                    .unwrap_or_else(|_| Err("no answer".into()));
                    return match answered {
                        Ok(()) if !watch.has_exited() => Ok(()),
                        Ok(()) => Err("the restored sandbox exited right after it dialed in".into()),
                        Err(e) => Err(format!("the restored agent failed its first request: {e}")),
                    };
                }
                Err(_) if watch.has_exited() => return Err("the restored sandbox exited at once".into()),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("the restored agent did not dial in within {} s", RESTORED_DIAL_WAIT.as_secs()))
                }
                Err(_) => {}
            }
        }
    }

    /// The last lines of a sandbox's agent log (runsc's complaints land there too), for a
    /// warning about a sandbox that is about to be torn down.
    fn agent_log_excerpt(&self, id: &SandboxId) -> String {
        let (tail, _) = self.runtime.log_tail(id, 2048);
        String::from_utf8_lossy(&tail).trim().replace('\n', " | ")
    }

    /// The agent's own log lines (a live sandbox's), parsed.
    fn agent_log_entries(&self, id: &SandboxId) -> Vec<LogEntry> {
        let (tail, cut) = self.runtime.log_tail(id, AGENT_LOG_TAIL);
        crate::events::parse_agent_log(&tail, cut, now_ms())
    }

    /// The sandbox's log: lifecycle events and, while it lives, its agent's lines. Readable for
    /// `sandbox.log_retention_secs` after the sandbox ends.
    /// The sandbox's log, for its team only. It outlives the sandbox: a gone sandbox's team is read
    /// from the daemon's own first entry that names one (logs from before teams are `default`'s).
    pub fn logs(&self, team: &Team, id: &str, q: &LogQuery) -> Result<Vec<LogEntry>, NodeError> {
        let not_found = || NodeError::SandboxNotFound { id: id.to_owned() };
        let sid = SandboxId::parse(id).map_err(|_| not_found())?;
        let record = self.sandboxes.lock().unwrap().get(&sid).map(|r| (r.state, r.team.clone()));
        let live = record.as_ref().is_some_and(|(state, _)| *state != SandboxState::Creating);
        let owner = match record {
            Some((_, t)) => t,
            None => {
                if !self.store.has_log(sid.as_str())? {
                    return Err(not_found());
                }
                let named = |e: &LogEntry| {
                    e.fields.get("source").is_some_and(|s| s == "warren") && e.fields.contains_key("team")
                };
                let first = self.store.read_log(sid.as_str(), 0, false, 1, named)?;
                first.first().and_then(|e| Team::parse(&e.fields["team"]).ok()).unwrap_or_default()
            }
        };
        if &owner != team {
            return Err(not_found());
        }
        let cursor = q.cursor_ms.unwrap_or(if q.backward { u64::MAX / 1000 } else { 0 });
        let mut out = self.store.read_log(sid.as_str(), cursor, q.backward, q.limit, |e| q.keeps(e))?;
        if live {
            let in_window = |e: &LogEntry| if q.backward { e.at_ms <= cursor } else { e.at_ms >= cursor };
            out.extend(self.agent_log_entries(&sid).into_iter().filter(|e| in_window(e) && q.keeps(e)));
            if q.backward {
                out.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
            } else {
                out.sort_by_key(|e| e.at_ms);
            }
            out.truncate(q.limit);
        }
        Ok(out)
    }

    async fn prune_logs(&self) {
        let before = now_ms().saturating_sub(self.cfg.sandbox.log_retention_secs.saturating_mul(1000));
        let live: std::collections::HashSet<String> =
            self.sandboxes.lock().unwrap().keys().map(|k| k.to_string()).collect();
        let store = self.store.clone();
        let pruned =
            tokio::task::spawn_blocking(move || store.prune_logs(before, &|id| live.contains(id))).await.expect("task");
        match pruned {
            Ok(0) => {}
            Ok(n) => info!(count = n, "removed the logs of sandboxes that ended before the retention period"),
            Err(e) => warn!(error = %e, "pruning sandbox logs"),
        }
    }

    /// The Prometheus text exposition of the daemon's metrics, gauges read now.
    pub fn prometheus(&self) -> String {
        use crate::telemetry::{PoolLabel, StateLabel};
        let t = &self.telemetry;
        let mut by_state: HashMap<&'static str, i64> =
            ["creating", "ready", "running", "paused"].iter().map(|s| (*s, 0)).collect();
        for r in self.sandboxes.lock().unwrap().values() {
            let name = match r.state {
                SandboxState::Creating => "creating",
                SandboxState::Ready => "ready",
                SandboxState::Running => "running",
                SandboxState::Paused => "paused",
                SandboxState::Hibernated => "hibernated",
                SandboxState::Killed => continue,
            };
            *by_state.entry(name).or_insert(0) += 1;
        }
        t.sandboxes.clear();
        for (state, n) in by_state {
            t.sandboxes.get_or_create(&StateLabel { state: state.into() }).set(n);
        }
        for f in [&t.pool_ready, &t.pool_creating, &t.pool_in_use, &t.pool_target] {
            f.clear();
        }
        for p in self.all_pools() {
            let team = p.spec.team.clone().unwrap_or_default();
            let l = PoolLabel { team: team.to_string(), pool: p.spec.name.clone() };
            t.pool_ready.get_or_create(&l).set(i64::from(p.ready));
            t.pool_creating.get_or_create(&l).set(i64::from(p.creating));
            t.pool_in_use.get_or_create(&l).set(i64::from(p.in_use));
            t.pool_target.get_or_create(&l).set(i64::from(p.target));
        }
        t.encode()
    }

    pub fn stats(&self, id: &str) -> Result<warren_runtime::Stats, NodeError> {
        let rec = self.get(id)?;
        let h = rec.handle.ok_or_else(|| NodeError::Conflict {
            id: id.into(),
            state: "paused to disk",
            action: "reading its live counters",
        })?;
        let mut s = self.runtime.stats(&rec.id, &h)?;
        s.disk_limit_bytes = rec.disk_mb * 1024 * 1024;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn restore_retries_back_off() {
        let waits: Vec<u64> =
            (0..super::RESTORE_ATTEMPTS).map(|tried| super::restore_backoff(tried).as_millis() as u64).collect();
        assert_eq!(waits, [0, 250, 500, 1000, 2000, 4000], "and no wait before a first (or only) boot");
    }
}
