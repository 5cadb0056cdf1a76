//! Sandbox lifecycle policies beyond the end time: pause on timeout, resume on traffic, and pause
//! when idle (no traffic for a while and no process but the agent).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use warren_types::{SandboxId, SandboxState};

use crate::engine::{CreateRequest, Engine, Lifecycle};
use crate::NodeError;

/// Traffic bookkeeping of one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    pub last: Instant,
    pub inflight: u32,
}

/// Marks a request to a sandbox as in flight; dropping it (when the response body ends) records
/// the moment as the sandbox's last activity.
pub struct ActivityGuard {
    engine: Weak<Engine>,
    id: SandboxId,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(e) = self.engine.upgrade() {
            if let Some(a) = e.activity.lock().unwrap().get_mut(&self.id) {
                a.inflight = a.inflight.saturating_sub(1);
                a.last = Instant::now();
            }
        }
    }
}

impl CreateRequest {
    /// The lifecycle a sandbox gets from this request (a pool's idle policy fills a gap).
    pub(crate) fn lifecycle(&self, timeout_secs: u64, pool_idle: Option<u64>) -> Lifecycle {
        Lifecycle {
            pause_on_timeout: self.pause_on_timeout,
            pause_files_only: self.pause_on_timeout && self.pause_files_only,
            auto_resume: self.auto_resume,
            idle_timeout_secs: self.idle_timeout_secs.or(pool_idle),
            timeout_secs,
        }
    }
}

/// What the proxy checks a request to a sandbox against.
pub struct TrafficCredentials {
    pub access_token: String,
    /// Keys of this team may reach the sandbox without its token.
    pub team: warren_types::Team,
    pub state: SandboxState,
    pub auto_resume: bool,
    /// Required on requests to its ports when they are not public.
    pub traffic_token: Option<String>,
    pub address: Option<std::net::Ipv4Addr>,
}

impl Engine {
    /// Records traffic to a live sandbox; the guard keeps it counted as busy until dropped.
    pub fn begin_traffic(self: &Arc<Self>, id: &str) -> Option<ActivityGuard> {
        let sid = SandboxId::parse(id).ok()?;
        if !self.sandboxes.lock().unwrap().contains_key(&sid) {
            return None;
        }
        let mut map = self.activity.lock().unwrap();
        let a = map.entry(sid.clone()).or_insert(Activity { last: Instant::now(), inflight: 0 });
        a.inflight += 1;
        a.last = Instant::now();
        Some(ActivityGuard { engine: Arc::downgrade(self), id: sid })
    }

    /// Notes a control-plane call about a sandbox (it counts as use for the idle policy).
    pub fn touch(&self, id: &str) {
        let Ok(sid) = SandboxId::parse(id) else { return };
        if !self.sandboxes.lock().unwrap().contains_key(&sid) {
            return;
        }
        self.activity.lock().unwrap().entry(sid).or_insert(Activity { last: Instant::now(), inflight: 0 }).last =
            Instant::now();
    }

    /// The access token of a sandbox in any live state, and whether traffic may resume it: the
    /// proxy authenticates a request before anything wakes.
    /// Read once per proxied request under one lock, copying only what the proxy needs.
    pub fn traffic_credentials(&self, id: &str) -> Result<TrafficCredentials, NodeError> {
        let sid = SandboxId::parse(id).map_err(|_| NodeError::SandboxNotFound { id: id.to_owned() })?;
        let map = self.sandboxes.lock().unwrap();
        let rec = map.get(&sid).ok_or_else(|| NodeError::SandboxNotFound { id: id.to_owned() })?;
        Ok(TrafficCredentials {
            access_token: rec.access_token.clone(),
            team: rec.team.clone(),
            state: rec.state,
            auto_resume: rec.lifecycle.auto_resume,
            traffic_token: rec.traffic_token.clone(),
            address: rec.address,
        })
    }

    /// Resumes a paused sandbox because traffic arrived for it; concurrent calls merge.
    pub async fn resume_for_traffic(self: &Arc<Self>, id: &str) -> Result<(), NodeError> {
        let rec = self.get(id)?;
        let secs = Some(rec.lifecycle.timeout_secs).filter(|s| *s > 0);
        self.resume_because(id, secs, "traffic").await.map(|_| ())
    }

    /// Pauses running sandboxes whose idle policy says so: no traffic for the configured time,
    /// nothing in flight, and no process left but the agent.
    pub(crate) async fn pause_idle(self: &Arc<Self>) {
        let now = Instant::now();
        let candidates: Vec<(SandboxId, u64)> = {
            let map = self.sandboxes.lock().unwrap();
            let mut act = self.activity.lock().unwrap();
            map.values()
                .filter(|r| r.state == SandboxState::Running)
                .filter_map(|r| {
                    let idle = r.lifecycle.idle_timeout_secs?;
                    // A sandbox nobody has talked to yet counts from now (e.g. after a restart).
                    let a = act.entry(r.id.clone()).or_insert(Activity { last: now, inflight: 0 });
                    (a.inflight == 0 && now.duration_since(a.last) >= Duration::from_secs(idle))
                        .then(|| (r.id.clone(), idle))
                })
                .collect()
        };
        for (id, idle) in candidates {
            let Ok(rec) = self.get(id.as_str()) else { continue };
            let Some(h) = rec.handle.as_ref() else { continue };
            let busy = match self.runtime.stats(&id, h) {
                Ok(s) => s.pids > 1,
                Err(_) => continue,
            };
            if busy {
                // Processes still run: look again after another idle period.
                if let Some(a) = self.activity.lock().unwrap().get_mut(&id) {
                    a.last = Instant::now();
                }
                continue;
            }
            match self.pause_because(id.as_str(), "idle").await {
                Ok(_) => info!(sandbox = %id, idle_secs = idle, "paused an idle sandbox"),
                Err(e) => warn!(sandbox = %id, error = %e, "pausing an idle sandbox"),
            }
        }
    }
}
