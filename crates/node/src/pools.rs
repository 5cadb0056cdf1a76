//! Warm pools: booted, unclaimed sandboxes of one shape. A create whose shape matches a pool claims
//! one of them (the caller's env vars, user, metadata and timeout are applied through the agent, so
//! nothing restarts), and a loop per pool refills it in the background toward a target that
//! follows demand. Refill boots are bounded by the pool's concurrency and never hold a lock a claim
//! needs; failing boots back off instead of hammering the host.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};
use warren_types::pool::{OnEmpty, PoolInfo, PoolResize, PoolSpec};
use warren_types::state::transition;
use warren_types::{KillReason, SandboxEvent, SandboxId, SandboxState, Team};

use crate::engine::{CreateRequest, Engine, SandboxRecord, Shape};
use crate::events::{Level, LogEntry};
use crate::store::{Kind, Op};
use crate::{now_ms, NodeError};

const POOL_RECORD_VERSION: u32 = 1;
/// How long the target must stay below the ready count before the pool shrinks.
const SHRINK_DELAY: Duration = Duration::from_secs(30);
/// Demand is measured over this window of claims.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Seconds of claims at the recent rate the pool should be able to absorb.
const RATE_COVER_SECS: f64 = 2.0;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a refill waits after a claim while the pool has a cushion.
const REFILL_DEBOUNCE: Duration = Duration::from_millis(30);

/// A pool as persisted: the resolved spec (every optional field filled in).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PoolRecord {
    version: u32,
    spec: PoolSpec,
    /// Declared in the config file (re-applied at every start) rather than through the API.
    from_config: bool,
}

/// A pool's live state, owned by the engine.
pub(crate) struct PoolState {
    spec: PoolSpec,
    shape: Shape,
    from_config: bool,
    /// Ready sandboxes, oldest first (claims take the oldest: its page cache is the warmest).
    ready: VecDeque<SandboxId>,
    creating: u32,
    claims: u64,
    empty_claims: u64,
    refill_failures: u64,
    consecutive_failures: u32,
    backoff_until: Option<(Instant, u64)>,
    last_error: Option<String>,
    recent_claims: VecDeque<Instant>,
    target: u32,
    over_target_since: Option<Instant>,
    /// Wakes the refill loop.
    wake: Arc<Notify>,
    /// Wakes claims waiting for a ready sandbox.
    available: Arc<Notify>,
    /// Changes when the pool is removed and created again under the same name, so a boot started
    /// for the old pool is not handed to the new one.
    generation: u64,
}

/// The engine's key of a pool: names are unique within a team, and teams never see each other's.
pub(crate) fn pool_key(team: &Team, name: &str) -> String {
    format!("{team}/{name}")
}

/// The name part of a pool key, as its team's users know it.
pub(crate) fn pool_name(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, name)| name)
}

/// Metric labels of a pool: its team and name.
fn pool_label(key: &str) -> crate::telemetry::PoolLabel {
    let (team, name) = key.split_once('/').unwrap_or((Team::DEFAULT, key));
    crate::telemetry::PoolLabel { team: team.to_owned(), pool: name.to_owned() }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn invalid(detail: impl Into<String>) -> NodeError {
    NodeError::InvalidPool { detail: detail.into() }
}

impl PoolState {
    fn info(&self, in_use: u32) -> PoolInfo {
        PoolInfo {
            spec: self.spec.clone(),
            ready: self.ready.len() as u32,
            creating: self.creating,
            in_use,
            target: self.target,
            claims: self.claims,
            empty_claims: self.empty_claims,
            refill_failures: self.refill_failures,
            last_error: self.last_error.clone(),
            backoff_until: self
                .backoff_until
                .filter(|(t, _)| *t > Instant::now())
                .map(|(_, wall_ms)| crate::rfc3339(wall_ms)),
        }
    }

    /// Ready sandboxes to aim for: `minReady`, raised by demand when a free fraction is set,
    /// capped by `maxSize`. Demand is the larger of the sandboxes in use and the claims the
    /// recent rate would make in a couple of seconds (a pool of short-lived sandboxes).
    fn compute_target(&mut self, in_use: u32, now: Instant) -> u32 {
        while self.recent_claims.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
            self.recent_claims.pop_front();
        }
        let max = self.spec.max_size.unwrap_or(self.spec.min_ready);
        let by_demand = match self.spec.target_free_fraction {
            Some(f) => {
                let rate = self.recent_claims.len() as f64 / RATE_WINDOW.as_secs_f64();
                let demand = (in_use as f64).max(rate * RATE_COVER_SECS);
                (demand * f / (1.0 - f)).ceil() as u32
            }
            None => 0,
        };
        self.target = self.spec.min_ready.max(by_demand).min(max);
        self.target
    }
}

/// What the refill loop does next for a pool.
enum Step {
    Boot(u32),
    Release(SandboxId),
    Idle,
}

impl Engine {
    /// Fills in and checks a pool spec against the configured bounds.
    fn resolve_pool(&self, mut spec: PoolSpec) -> Result<(PoolSpec, Shape), NodeError> {
        if !valid_name(&spec.name) {
            return Err(invalid(format!(
                "name {:?}: use 1 to 63 lowercase letters, digits and '-' (not first)",
                spec.name
            )));
        }
        let team = spec.team.get_or_insert_with(Team::default).clone();
        let shape = self.shape(
            &team,
            &spec.template_id,
            spec.cpu_count,
            spec.memory_mb,
            spec.disk_mb,
            spec.runtime.as_deref(),
        )?;
        spec.cpu_count = Some(shape.cpu_count);
        spec.memory_mb = Some(shape.memory_mb);
        spec.disk_mb = Some(shape.disk_mb);
        spec.runtime = Some(shape.runtime.clone());
        let max_sandboxes = self.cfg.sandbox.max_sandboxes as u32;
        if spec.target_free_fraction.is_some() && spec.max_size.is_none() {
            return Err(invalid("maxSize is required with targetFreeFraction (it bounds the demand-driven size)"));
        }
        let max = *spec.max_size.get_or_insert(spec.min_ready);
        if spec.min_ready > max {
            return Err(invalid(format!("minReady ({}) is larger than maxSize ({max})", spec.min_ready)));
        }
        if max > max_sandboxes {
            return Err(invalid(format!("maxSize ({max}) exceeds sandbox.max_sandboxes ({max_sandboxes})")));
        }
        let conc = *spec.refill_concurrency.get_or_insert(2);
        if !(1..=64).contains(&conc) {
            return Err(invalid(format!("refillConcurrency ({conc}) must be between 1 and 64")));
        }
        if let Some(f) = spec.target_free_fraction {
            if !(f > 0.0 && f <= 0.9) {
                return Err(invalid(format!("targetFreeFraction ({f}) must be above 0 and at most 0.9")));
            }
        }
        if spec.empty_wait_ms > 60_000 {
            return Err(invalid(format!("emptyWaitMs ({}) must be at most 60000", spec.empty_wait_ms)));
        }
        if let Some(b) = spec.burst {
            let lim = &self.cfg.sandbox;
            if b.cpu_count < shape.cpu_count || b.cpu_count > lim.max_cpu_count {
                return Err(invalid(format!(
                    "burst.cpuCount ({}) must be between the pool's cpuCount ({}) and sandbox.max_cpu_count ({})",
                    b.cpu_count, shape.cpu_count, lim.max_cpu_count
                )));
            }
            if b.secs == 0 || b.secs > 3600 {
                return Err(invalid(format!("burst.secs ({}) must be between 1 and 3600", b.secs)));
            }
        }
        if let Some(idle) = spec.idle_timeout {
            if idle == 0 || idle > self.cfg.sandbox.max_timeout_secs {
                return Err(invalid(format!(
                    "idleTimeout ({idle}) must be between 1 and sandbox.max_timeout_secs ({})",
                    self.cfg.sandbox.max_timeout_secs
                )));
            }
        }
        Ok((spec, shape))
    }

    /// Loads the pools of the store and of the config file (config wins). Called once at start,
    /// before sandboxes are recovered.
    pub(crate) fn load_pools(&self) -> Result<(), NodeError> {
        let spec_key = |s: &PoolSpec| pool_key(s.team.as_ref().unwrap_or(&Team::default()), &s.name);
        let configured: Vec<String> = self.cfg.pools.iter().map(spec_key).collect();
        let stored: Vec<(String, PoolRecord)> = self.store.all_keyed(Kind::Pool)?;
        let mut specs: HashMap<String, (PoolSpec, bool)> = HashMap::new();
        for (stored_key, rec) in stored.into_iter().filter(|(_, r)| r.version == POOL_RECORD_VERSION) {
            let key = spec_key(&rec.spec);
            // Records from before pools had teams are keyed by name alone: re-keyed below.
            if stored_key != key {
                self.store.delete(Kind::Pool, &stored_key)?;
            }
            // A pool declared only by an earlier config file goes with it.
            if rec.from_config && !configured.contains(&key) {
                self.store.delete(Kind::Pool, &key)?;
                continue;
            }
            specs.insert(key, (rec.spec, rec.from_config));
        }
        for p in &self.cfg.pools {
            specs.insert(spec_key(p), (p.clone(), true));
        }
        for (key, (spec, from_config)) in specs {
            match self.resolve_pool(spec) {
                Ok((spec, shape)) => {
                    if self.pools.lock().unwrap().values().any(|p| p.shape == shape) {
                        warn!(pool = %key, "another pool of the team has the same shape; this one is ignored");
                        continue;
                    }
                    let rec = PoolRecord { version: POOL_RECORD_VERSION, spec: spec.clone(), from_config };
                    self.store.put(Kind::Pool, &key, &rec)?;
                    self.pools.lock().unwrap().insert(key, new_state(spec, shape, from_config));
                }
                Err(e) => warn!(pool = %key, error = %e, "pool ignored"),
            }
        }
        Ok(())
    }

    /// Puts a recovered ready sandbox back into its pool; `false` when the pool is gone or has
    /// another shape now (the caller kills it).
    pub(crate) fn adopt_ready(&self, rec: &SandboxRecord) -> bool {
        let Some(name) = &rec.pool else { return false };
        let mut pools = self.pools.lock().unwrap();
        let Some(p) = pools.get_mut(name) else { return false };
        let same = p.shape.team == rec.team
            && p.shape.template_id == rec.template_id
            && p.shape.cpu_count == rec.cpu_count
            && p.shape.memory_mb == rec.memory_mb
            && p.shape.disk_mb == rec.disk_mb;
        if same {
            p.ready.push_back(rec.id.clone());
        }
        same
    }

    /// Starts every pool's refill loop (after recovery).
    pub(crate) fn start_pools(self: &Arc<Self>) {
        let names: Vec<(String, u64)> =
            self.pools.lock().unwrap().iter().map(|(n, p)| (n.clone(), p.generation)).collect();
        for (name, generation) in names {
            self.spawn_pool_loop(name, generation);
        }
    }

    pub fn create_pool(self: &Arc<Self>, spec: PoolSpec) -> Result<PoolInfo, NodeError> {
        let (spec, shape) = self.resolve_pool(spec)?;
        // Fail now on an unknown template; one still building is fine (the pool fills once it is ready).
        if self.templates.get(&shape.template_id).is_none() && self.snapshot(&shape.template_id).is_none() {
            return Err(NodeError::TemplateNotFound { id: shape.template_id.to_string() });
        }
        let name = spec.name.clone();
        let key = pool_key(&shape.team, &name);
        let generation = {
            let mut pools = self.pools.lock().unwrap();
            if pools.contains_key(&key) {
                return Err(NodeError::PoolConflict {
                    detail: format!("pool {name} already exists; resize it or remove it first"),
                });
            }
            if let Some(other) = pools.values().find(|p| p.shape == shape) {
                return Err(NodeError::PoolConflict {
                    detail: format!("pool {} already serves this shape (template, CPU, memory, disk)", other.spec.name),
                });
            }
            let rec = PoolRecord { version: POOL_RECORD_VERSION, spec: spec.clone(), from_config: false };
            self.store.put(Kind::Pool, &key, &rec)?;
            let st = new_state(spec, shape.clone(), false);
            let g = st.generation;
            pools.insert(key.clone(), st);
            g
        };
        info!(pool = %key, "pool created");
        self.spawn_pool_loop(key, generation);
        self.pool_info(&shape.team, &name)
    }

    pub fn resize_pool(&self, team: &Team, name: &str, r: PoolResize) -> Result<PoolInfo, NodeError> {
        let key = pool_key(team, name);
        let current = self.pools.lock().unwrap().get(&key).map(|p| p.spec.clone());
        let mut spec = current.ok_or_else(|| NodeError::PoolNotFound { name: name.into() })?;
        if let Some(v) = r.min_ready {
            spec.min_ready = v;
        }
        if let Some(v) = r.max_size {
            spec.max_size = Some(v);
        }
        if let Some(v) = r.refill_concurrency {
            spec.refill_concurrency = Some(v);
        }
        match r.target_free_fraction {
            Some(f) if f < 0.0 => spec.target_free_fraction = None,
            Some(f) => spec.target_free_fraction = Some(f),
            None => {}
        }
        if let Some(v) = r.empty_wait_ms {
            spec.empty_wait_ms = v;
        }
        if let Some(v) = r.on_empty {
            spec.on_empty = v;
        }
        let (spec, _) = self.resolve_pool(spec)?;
        {
            let mut pools = self.pools.lock().unwrap();
            let p = pools.get_mut(&key).ok_or_else(|| NodeError::PoolNotFound { name: name.into() })?;
            let rec = PoolRecord { version: POOL_RECORD_VERSION, spec: spec.clone(), from_config: p.from_config };
            self.store.put(Kind::Pool, &key, &rec)?;
            p.spec = spec;
            // A resize is an explicit decision: shrink without the usual delay.
            p.over_target_since = Some(Instant::now() - SHRINK_DELAY);
            p.wake.notify_one();
        }
        self.pool_info(team, name)
    }

    /// Removes a pool and kills its ready sandboxes; claimed ones are not touched.
    pub async fn remove_pool(&self, team: &Team, name: &str) -> Result<(), NodeError> {
        let key = pool_key(team, name);
        let st = {
            let mut pools = self.pools.lock().unwrap();
            if !pools.contains_key(&key) {
                return Err(NodeError::PoolNotFound { name: name.into() });
            }
            self.store.delete(Kind::Pool, &key)?;
            pools.remove(&key).expect("present")
        };
        // The loop sees the pool gone and ends; claims waiting on it fall back.
        st.wake.notify_one();
        st.available.notify_waiters();
        for id in st.ready {
            let _ = self.kill(&id, KillReason::PoolRelease { detail: format!("pool {name} was removed") }).await;
        }
        info!(pool = %key, "pool removed");
        Ok(())
    }

    fn in_use(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for r in self.sandboxes.lock().unwrap().values() {
            if let (Some(p), SandboxState::Running | SandboxState::Paused | SandboxState::Hibernated) =
                (&r.pool, r.state)
            {
                *counts.entry(p.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn pool_info(&self, team: &Team, name: &str) -> Result<PoolInfo, NodeError> {
        let key = pool_key(team, name);
        let in_use = self.in_use();
        let pools = self.pools.lock().unwrap();
        let p = pools.get(&key).ok_or_else(|| NodeError::PoolNotFound { name: name.into() })?;
        Ok(p.info(in_use.get(&key).copied().unwrap_or(0)))
    }

    /// The team's pools, by name.
    pub fn list_pools(&self, team: &Team) -> Vec<PoolInfo> {
        self.pools_where(|t| t == team)
    }

    /// Every team's pools (host-wide telemetry).
    pub(crate) fn all_pools(&self) -> Vec<PoolInfo> {
        self.pools_where(|_| true)
    }

    fn pools_where(&self, keep: impl Fn(&Team) -> bool) -> Vec<PoolInfo> {
        let in_use = self.in_use();
        let pools = self.pools.lock().unwrap();
        let mut v: Vec<PoolInfo> = pools
            .iter()
            .filter(|(_, p)| keep(&p.shape.team))
            .map(|(n, p)| p.info(in_use.get(n).copied().unwrap_or(0)))
            .collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v
    }

    /// Whether the pool holds enough ready sandboxes that its refill can wait a moment.
    fn pool_has_cushion(&self, name: &str) -> bool {
        self.pools.lock().unwrap().get(name).is_some_and(|p| {
            let ready = p.ready.len() as u32;
            ready >= 2 && ready * 4 >= p.target
        })
    }

    /// The idle policy a pool gives the sandboxes claimed from it.
    pub(crate) fn pool_idle_timeout(&self, name: &str) -> Option<u64> {
        self.pools.lock().unwrap().get(name).and_then(|p| p.spec.idle_timeout)
    }

    /// Pools (team/name) whose sandboxes are made from template `id`.
    pub(crate) fn pools_of_template(&self, id: &warren_types::TemplateId) -> Vec<String> {
        self.pools.lock().unwrap().iter().filter(|(_, p)| &p.shape.template_id == id).map(|(k, _)| k.clone()).collect()
    }

    /// The pool serving `shape`, if any.
    pub(crate) fn pool_for(&self, shape: &Shape) -> Option<String> {
        self.pools.lock().unwrap().iter().find(|(_, p)| &p.shape == shape).map(|(n, _)| n.clone())
    }

    /// Claims a ready sandbox of the pool, waiting up to its `emptyWaitMs` for one. `None` means
    /// "create it cold" (the pool is empty and set to, or it was removed meanwhile).
    pub(crate) async fn claim_from_pool(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        timeout_secs: u64,
        egress: Option<&crate::egress::Egress>,
    ) -> Result<Option<SandboxRecord>, NodeError> {
        let started = Instant::now();
        let mut counted_empty = false;
        let label = pool_label(name);
        loop {
            let (next, available, wait, on_empty) = {
                let mut pools = self.pools.lock().unwrap();
                let Some(p) = pools.get_mut(name) else { return Ok(None) };
                let next = p.ready.pop_front();
                if next.is_some() {
                    p.claims += 1;
                    p.recent_claims.push_back(Instant::now());
                } else if !counted_empty {
                    counted_empty = true;
                    p.empty_claims += 1;
                    self.telemetry.pool_empty_claims.get_or_create(&label).inc();
                }
                // Either way the pool may want to grow.
                p.wake.notify_one();
                (next, p.available.clone(), Duration::from_millis(p.spec.empty_wait_ms), p.spec.on_empty)
            };
            if let Some(id) = next {
                let t0 = Instant::now();
                match self.claim(&id, name, req, timeout_secs, egress).await {
                    Ok(rec) => {
                        self.telemetry.claim_seconds.observe(t0.elapsed().as_secs_f64());
                        self.telemetry.pool_claims.get_or_create(&label).inc();
                        return Ok(Some(rec));
                    }
                    Err(NodeError::Rejected { detail }) => {
                        // The caller's settings are wrong, not the sandbox: give it back.
                        self.return_to_pool(name, id);
                        return Err(NodeError::Rejected { detail });
                    }
                    Err(e) => {
                        warn!(pool = %name, sandbox = %id, error = %e, "claim failed; trying the next ready sandbox");
                        let detail = format!("claim failed: {e}");
                        let _ = self.kill(&id, KillReason::PoolRelease { detail }).await;
                        continue;
                    }
                }
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return match on_empty {
                    OnEmpty::Cold => Ok(None),
                    OnEmpty::Fail => {
                        Err(NodeError::PoolEmpty { name: name.into(), waited_ms: started.elapsed().as_millis() as u64 })
                    }
                };
            }
            let _ = tokio::time::timeout(left, available.notified()).await;
        }
    }

    /// Gives back a sandbox whose claim was refused before it was touched (the claim is undone).
    fn return_to_pool(&self, name: &str, id: SandboxId) {
        if let Some(p) = self.pools.lock().unwrap().get_mut(name) {
            p.claims = p.claims.saturating_sub(1);
            p.recent_claims.pop_back();
            p.ready.push_front(id);
            p.available.notify_one();
        }
    }

    /// Hands a ready sandbox to a caller: its settings go to the agent, then the record (now
    /// running, with the caller's metadata and end time) is persisted with a log line.
    async fn claim(
        self: &Arc<Self>,
        id: &SandboxId,
        pool: &str,
        req: &CreateRequest,
        timeout_secs: u64,
        egress: Option<&crate::egress::Egress>,
    ) -> Result<SandboxRecord, NodeError> {
        let (socket, state, handle) = {
            let map = self.sandboxes.lock().unwrap();
            let rec = map.get(id).ok_or_else(|| NodeError::SandboxNotFound { id: id.to_string() })?;
            (rec.handle.as_ref().map(|h| h.agent_socket.clone()), rec.state, rec.handle.clone())
        };
        let next = transition(state, &SandboxEvent::Claimed)?;
        let socket = socket.ok_or_else(|| NodeError::SandboxNotFound { id: id.to_string() })?;
        self.init_agent(&socket, req).await?;
        if let (Some(e), Some(h)) = (egress, handle) {
            self.set_egress_on(id, h, Some(e)).await?;
        }
        let now = now_ms();
        let entry = LogEntry::warren(
            now,
            Level::Info,
            format!("sandbox claimed from pool {}", pool_name(pool)),
            &[("pool", pool_name(pool).to_owned()), ("timeout", timeout_secs.to_string())],
        );
        let burst = self.pools.lock().unwrap().get(pool).and_then(|p| p.spec.burst);
        let pool_idle = self.pool_idle_timeout(pool);
        if let Some(b) = burst {
            if let Err(e) = self.runtime.set_cpu(id, b.cpu_count) {
                warn!(sandbox = %id, error = %e, "raising the CPU quota for the burst");
            }
        }
        let rec = self.update(id.as_str(), Some(entry), |r| {
            r.state = next;
            r.metadata = req.metadata.clone();
            r.env_vars = req.env_vars.clone();
            r.started_at_ms = now;
            r.end_at_ms = now + timeout_secs * 1000;
            r.burst_until_ms = burst.map(|b| now + b.secs * 1000);
            r.lifecycle = req.lifecycle(timeout_secs, pool_idle);
            r.traffic_token = req.private_ports.then(|| crate::random_hex(16));
            r.egress = egress.cloned();
        })?;
        if rec.burst_until_ms.is_some() {
            self.schedule_burst_end(&rec);
        }
        Ok(rec)
    }

    /// Lowers the sandbox to its steady CPU quota when its burst is over (now, if it already is).
    pub(crate) fn schedule_burst_end(self: &Arc<Self>, rec: &SandboxRecord) {
        let Some(until) = rec.burst_until_ms else { return };
        let me = Arc::downgrade(self);
        let id = rec.id.clone();
        tokio::spawn(async move {
            crate::engine::sleep_unless_zero(Duration::from_millis(until.saturating_sub(now_ms()))).await;
            let Some(e) = me.upgrade() else { return };
            let Ok(rec) = e.get(id.as_str()) else { return };
            if rec.burst_until_ms != Some(until) {
                return;
            }
            if let Err(err) = e.runtime.set_cpu(&id, rec.cpu_count) {
                warn!(sandbox = %id, error = %err, "lowering the CPU quota after the burst");
                return;
            }
            let entry = LogEntry::warren(
                now_ms(),
                Level::Info,
                format!("burst over: CPU quota back to {}", rec.cpu_count),
                &[("cpuCount", rec.cpu_count.to_string())],
            );
            let _ = e.update(id.as_str(), Some(entry), |r| r.burst_until_ms = None);
        });
    }

    fn spawn_pool_loop(self: &Arc<Self>, name: String, generation: u64) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(e) = me.upgrade() else { return };
                let Some((step, wake)) = e.plan(&name, generation) else { return };
                match step {
                    Step::Boot(n) => {
                        for _ in 0..n {
                            let e = e.clone();
                            let name = name.clone();
                            tokio::spawn(async move { e.refill_one(&name, generation).await });
                        }
                    }
                    Step::Release(id) => {
                        let detail = format!("pool {name} shrank");
                        if let Err(err) = e.kill(&id, KillReason::PoolRelease { detail }).await {
                            warn!(pool = %name, sandbox = %id, error = %err, "releasing a ready sandbox");
                        }
                        // Shrink one at a time, a second apart.
                        drop(e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Step::Idle => {}
                }
                drop(e);
                if tokio::time::timeout(Duration::from_secs(1), wake.notified()).await.is_ok() {
                    // Woken by a claim: while the pool still has a cushion, refill a moment later,
                    // so the boot does not compete with the claimer's first command for the CPU.
                    let cushion = me.upgrade().is_some_and(|e| e.pool_has_cushion(&name));
                    if cushion {
                        tokio::time::sleep(REFILL_DEBOUNCE).await;
                    }
                }
            }
        });
    }

    /// Decides the pool's next step; `None` when the pool is gone (the loop ends).
    fn plan(&self, name: &str, generation: u64) -> Option<(Step, Arc<Notify>)> {
        let in_use = self.in_use().get(name).copied().unwrap_or(0);
        let total = self.sandboxes.lock().unwrap().len();
        let mut pools = self.pools.lock().unwrap();
        let p = pools.get_mut(name).filter(|p| p.generation == generation)?;
        let now = Instant::now();
        let target = p.compute_target(in_use, now);
        let ready = p.ready.len() as u32;
        let max = p.spec.max_size.unwrap_or(p.spec.min_ready);
        let step = if ready > target {
            let since = *p.over_target_since.get_or_insert(now);
            // Above maxSize (a resize) or over target for long enough: let one go.
            if ready > max || now.duration_since(since) >= SHRINK_DELAY {
                p.ready.pop_back().map(Step::Release).unwrap_or(Step::Idle)
            } else {
                Step::Idle
            }
        } else {
            p.over_target_since = None;
            let backing_off = p.backoff_until.is_some_and(|(t, _)| t > now);
            let want = target.saturating_sub(ready + p.creating);
            let room = p.spec.refill_concurrency.unwrap_or(2).saturating_sub(p.creating);
            let capacity = (self.cfg.sandbox.max_sandboxes.saturating_sub(total)) as u32;
            let n = want.min(room).min(capacity);
            if backing_off || n == 0 {
                Step::Idle
            } else {
                p.creating += n;
                Step::Boot(n)
            }
        };
        Some((step, p.wake.clone()))
    }

    /// Boots one sandbox for the pool and adds it to the ready set.
    async fn refill_one(self: &Arc<Self>, name: &str, generation: u64) {
        let shape = {
            let pools = self.pools.lock().unwrap();
            match pools.get(name).filter(|p| p.generation == generation) {
                Some(p) => p.shape.clone(),
                None => return,
            }
        };
        let result = self.boot_for_pool(&shape, name).await;
        let mut orphan = None;
        {
            let mut pools = self.pools.lock().unwrap();
            match pools.get_mut(name).filter(|p| p.generation == generation) {
                Some(p) => {
                    p.creating = p.creating.saturating_sub(1);
                    match result {
                        Ok(id) => {
                            p.ready.push_back(id);
                            p.consecutive_failures = 0;
                            p.backoff_until = None;
                            p.available.notify_one();
                        }
                        Err(e) => {
                            p.refill_failures += 1;
                            let l = pool_label(name);
                            self.telemetry.pool_refill_failures.get_or_create(&l).inc();
                            p.consecutive_failures += 1;
                            let backoff = Duration::from_millis(500)
                                .saturating_mul(1 << p.consecutive_failures.min(7))
                                .min(MAX_BACKOFF);
                            p.backoff_until = Some((Instant::now() + backoff, now_ms() + backoff.as_millis() as u64));
                            warn!(pool = %name, error = %e, backoff_ms = backoff.as_millis() as u64, "refill failed");
                            p.last_error = Some(e.to_string());
                        }
                    }
                    p.wake.notify_one();
                }
                None => orphan = result.ok(),
            }
        }
        if let Some(id) = orphan {
            let detail = format!("pool {name} was removed while it booted");
            let _ = self.kill(&id, KillReason::PoolRelease { detail }).await;
        }
    }

    /// Boots and persists a ready sandbox for a pool.
    async fn boot_for_pool(self: &Arc<Self>, shape: &Shape, pool: &str) -> Result<SandboxId, NodeError> {
        let (rec, watch) = self.boot(shape, Some(pool.to_owned()), &[], None).await?;
        let socket = rec.handle.as_ref().expect("booted").agent_socket.clone();
        if let Err(e) = self.agents.run_quietly(&socket, "/bin/bash", &["-l", "-c", "true"]).await {
            // Not fatal: a template without bash still serves its purpose.
            tracing::debug!(pool = %pool, error = %e, "warming a ready sandbox");
        }
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            format!("sandbox booted for pool {}", pool_name(pool)),
            &[("team", rec.team.to_string())],
        );
        let written = self.store.write(vec![
            Op::put(Kind::Sandbox, rec.id.as_str(), &rec),
            Op::Log { sandbox: rec.id.as_str(), entry: &entry },
        ]);
        if let Err(e) = written {
            if let Some(h) = &rec.handle {
                self.agents.forget(&h.agent_socket);
            }
            self.abort_create(&rec.id, rec.handle.clone()).await;
            return Err(e.into());
        }
        self.sandboxes.lock().unwrap().insert(rec.id.clone(), rec.clone());
        self.watch_exit(rec.id.clone(), watch);
        Ok(rec.id)
    }

    /// Drops a ready sandbox from its pool's ready set (it is being killed).
    pub(crate) fn forget_ready(&self, rec: &SandboxRecord) {
        let (SandboxState::Ready, Some(name)) = (rec.state, &rec.pool) else { return };
        if let Some(p) = self.pools.lock().unwrap().get_mut(name) {
            p.ready.retain(|i| i != &rec.id);
            p.wake.notify_one();
        }
    }
}

fn new_state(spec: PoolSpec, shape: Shape, from_config: bool) -> PoolState {
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    PoolState {
        spec,
        shape,
        from_config,
        ready: VecDeque::new(),
        creating: 0,
        claims: 0,
        empty_claims: 0,
        refill_failures: 0,
        consecutive_failures: 0,
        backoff_until: None,
        last_error: None,
        recent_claims: VecDeque::new(),
        target: 0,
        over_target_since: None,
        wake: Arc::new(Notify::new()),
        available: Arc::new(Notify::new()),
        generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_types::TemplateId;

    fn state(min: u32, max: u32, f: Option<f64>) -> PoolState {
        let spec = PoolSpec {
            name: "p".into(),
            team: Some(Team::default()),
            template_id: "base".into(),
            cpu_count: Some(1),
            memory_mb: Some(512),
            disk_mb: Some(1024),
            runtime: Some("native".into()),
            min_ready: min,
            max_size: Some(max),
            refill_concurrency: Some(2),
            target_free_fraction: f,
            empty_wait_ms: 0,
            on_empty: OnEmpty::Cold,
            burst: None,
            idle_timeout: None,
        };
        let shape = Shape {
            team: Team::default(),
            template_id: TemplateId::parse("base").unwrap(),
            cpu_count: 1,
            memory_mb: 512,
            disk_mb: 1024,
            runtime: "native".into(),
        };
        new_state(spec, shape, false)
    }

    #[test]
    fn fixed_pools_aim_at_min_ready() {
        let mut p = state(3, 10, None);
        assert_eq!(p.compute_target(50, Instant::now()), 3);
    }

    #[test]
    fn demand_raises_the_target_within_bounds() {
        let now = Instant::now();
        let mut p = state(2, 10, Some(0.5));
        // Half free: as many ready as in use.
        assert_eq!(p.compute_target(4, now), 4);
        assert_eq!(p.compute_target(0, now), 2);
        assert_eq!(p.compute_target(40, now), 10);
        // 20 claims in the window = 2/s; two seconds of them = 4 ready at 50 % free.
        p.recent_claims.extend(std::iter::repeat_n(now, 20));
        assert_eq!(p.compute_target(0, now), 4);
        // Old claims age out of the window.
        assert_eq!(p.compute_target(0, now + RATE_WINDOW + Duration::from_secs(1)), 2);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("py-small") && valid_name("a1"));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("Big") && !valid_name("a/b"));
    }
}
