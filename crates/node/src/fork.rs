//! Forks: new sandboxes from the current disk state of a live one. The source's writable layer is
//! frozen into a shared read-only layer (a btrfs snapshot taken while the source is paused for a
//! moment); every clone stacks its own empty writable layer on top of it and of the source's own
//! frozen layers, so forks of forks work and clones share disk copy-on-write. On the native runtime
//! clones start fresh processes (filesystem mode); on a runtime that saves memory (gVisor) a
//! running source's processes and memory are copied in the same pause, and every clone is
//! restored from that copy (memory mode: its processes carry on from the source's state). Each clone has a new id,
//! address and tokens, the source's shape, metadata, environment, lifecycle and egress policy, and
//! `WARREN_FORKED_FROM=<source id>` in its environment so agents can tell (and reseed RNGs).
//! Frozen layers are deleted when no sandbox uses them any more.

use std::sync::Arc;

use tracing::{info, warn};
use warren_types::{SandboxId, SandboxState, Team};

use crate::engine::{CreateRequest, Engine, SandboxRecord, Shape};
use crate::events::{Level, LogEntry};
use crate::store::Op;
use crate::{now_ms, random_hex, NodeError};

/// Set in every clone's environment: the id of the sandbox it was forked from.
pub const FORKED_FROM_ENV: &str = "WARREN_FORKED_FROM";

/// A clone's lifetime when the call names none (E2B's API default).
pub const DEFAULT_FORK_TIMEOUT_SECS: u64 = 15;

impl Engine {
    /// Forks `count` clones of the team's sandbox `id`; each succeeds or fails on its own. A paused
    /// source is forked as it is (it stays paused); the clones run for `timeout_secs` (default 15).
    pub async fn fork(
        self: &Arc<Self>,
        team: &Team,
        id: &str,
        count: u32,
        timeout_secs: Option<u64>,
        memory: Option<bool>,
    ) -> Result<Vec<Result<SandboxRecord, NodeError>>, NodeError> {
        let lim = &self.cfg.sandbox;
        if count == 0 || count > lim.max_fork_count {
            return Err(NodeError::OutOfRange {
                field: "count",
                value: count.to_string(),
                allowed: format!("1 to {} (sandbox.max_fork_count)", lim.max_fork_count),
            });
        }
        let src = self.get_owned(team, id)?;
        let timeout = timeout_secs.unwrap_or(DEFAULT_FORK_TIMEOUT_SECS);
        if timeout == 0 || timeout > lim.max_timeout_secs {
            return Err(NodeError::OutOfRange {
                field: "timeout",
                value: timeout.to_string(),
                allowed: format!("1 to {}", lim.max_timeout_secs),
            });
        }
        self.template_stack(&src.template_id)?;
        let can = self.runtime.backend_capabilities(Some(&src.runtime)).is_some_and(|c| c.memory_snapshots);
        if memory == Some(true) && !can {
            return Err(NodeError::Unsupported {
                detail: format!(
                    "runtime {} cannot copy a sandbox's memory on this host (native needs a working CRIU; the \
                     daemon's start-up log says why): fork with \"memory\": false to copy the files only",
                    src.runtime
                ),
            });
        }
        if memory == Some(true) && src.state != SandboxState::Running {
            return Err(NodeError::Conflict {
                id: src.id.to_string(),
                state: "paused",
                action: "forking it with its memory (resume it first, or fork with \"memory\": false)",
            });
        }
        let memory = src.state == SandboxState::Running && can && memory != Some(false);
        let (layer, image) = self.freeze_for_fork(&src.id, memory).await?;
        let mut layers = vec![layer.clone()];
        layers.extend(src.layers.iter().cloned());

        let shape = Shape::of(&src);
        let mut env_vars = src.env_vars.clone();
        env_vars.insert(FORKED_FROM_ENV.into(), src.id.to_string());
        let req = CreateRequest {
            team: src.team.clone(),
            template_id: src.template_id.to_string(),
            timeout_secs: Some(timeout),
            metadata: src.metadata.clone(),
            env_vars,
            cpu_count: Some(src.cpu_count),
            memory_mb: Some(src.memory_mb),
            disk_mb: Some(src.disk_mb),
            user: None,
            pause_on_timeout: src.lifecycle.pause_on_timeout,
            pause_files_only: src.lifecycle.pause_files_only,
            auto_resume: src.lifecycle.auto_resume,
            idle_timeout_secs: src.lifecycle.idle_timeout_secs,
            private_ports: src.traffic_token.is_some(),
            egress: Default::default(),
            runtime: Some(src.runtime.clone()),
        };
        let started = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..count {
            let (me, shape, layers, req, egress, image) =
                (self.clone(), shape.clone(), layers.clone(), req.clone(), src.egress.clone(), image.clone());
            set.spawn(async move {
                let r = match me.boot_from(&shape, None, &layers, image.as_deref(), egress.as_ref()).await {
                    Ok((rec, watch)) => me.start_booted(rec, watch, req, timeout, egress, "sandbox forked").await,
                    Err(e) => Err(e),
                };
                (i, r)
            });
        }
        let mut results: Vec<Option<Result<SandboxRecord, NodeError>>> = (0..count).map(|_| None).collect();
        while let Some(done) = set.join_next().await {
            if let Ok((i, r)) = done {
                results[i as usize] = Some(r);
            }
        }
        let results: Vec<Result<SandboxRecord, NodeError>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(NodeError::Agent { detail: "the clone's start was interrupted".into() })))
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        if let Some(img) = image {
            // Every clone has loaded it by now (their agents answered).
            let rt = self.runtime.clone();
            let _ = tokio::task::spawn_blocking(move || rt.remove_image(&img)).await;
        }
        if ok == 0 {
            self.release_layers(std::slice::from_ref(&layer));
        }
        let entry = LogEntry::warren(
            now_ms(),
            Level::Info,
            "sandbox forked",
            &[
                ("clones", ok.to_string()),
                ("asked", count.to_string()),
                ("layer", layer),
                ("mode", if memory { "memory" } else { "filesystem" }.into()),
            ],
        );
        if let Err(e) = self.store.write(vec![Op::Log { sandbox: src.id.as_str(), entry: &entry }]) {
            warn!(sandbox = %src.id, error = %e, "recording a fork in the log");
        }
        info!(sandbox = %src.id, clones = ok, asked = count, memory, ms = started.elapsed().as_millis() as u64, "forked");
        Ok(results)
    }

    /// Freezes the sandbox's writable layer into a new frozen layer, pausing it around the copy
    /// (a paused sandbox stays paused; serialized with pause and resume), and with `memory` (a
    /// running sandbox on a runtime that saves memory) a copy of its processes and memory taken in the same pause, so files and memory
    /// agree. Returns the layer and the memory image's name. The agent's connections are closed
    /// around the copy (a checkpoint cannot keep them); it dials in again right after.
    pub(crate) async fn freeze_for_fork(
        &self,
        id: &SandboxId,
        memory: bool,
    ) -> Result<(String, Option<String>), NodeError> {
        let lock = self.op_lock(id.as_str());
        let _held = lock.lock().await;
        let state = self.get(id.as_str())?.state;
        // Ready: an unclaimed sandbox (a template's warm-up).
        if !matches!(
            state,
            SandboxState::Running | SandboxState::Ready | SandboxState::Paused | SandboxState::Hibernated
        ) {
            return Err(NodeError::Conflict {
                id: id.to_string(),
                state: "not running",
                action: "forking or snapshotting it",
            });
        }
        let layer = format!("l{}", random_hex(8));
        let running = matches!(state, SandboxState::Running | SandboxState::Ready);
        let handle = if memory && running { self.get(id.as_str())?.handle } else { None };
        let image = handle.as_ref().map(|_| layer.clone());
        if let Some(h) = &handle {
            // A checkpoint with a connection to the agent open would break the sandbox.
            let quiet = self.agents.quiesce(&h.agent_socket).await;
            self.agents.forget(&h.agent_socket);
            if let Err(detail) = quiet {
                if let Err(e) = self.register_agent(id, h) {
                    warn!(sandbox = %id, error = %e, "listening for its agent again");
                }
                return Err(NodeError::Agent { detail });
            }
        }
        let (rt, sid, l, h, img) = (self.runtime.clone(), id.clone(), layer.clone(), handle.clone(), image.clone());
        let r = tokio::task::spawn_blocking(move || {
            if running {
                rt.freeze(&sid)?;
            }
            let frozen = rt.freeze_layer(&sid, &l).and_then(|p| match (&h, &img) {
                (Some(h), Some(img)) => rt.checkpoint_copy(&sid, h, img).map(|_| p).inspect_err(|_| {
                    let _ = rt.remove_layer(&l);
                }),
                _ => Ok(p),
            });
            if running {
                rt.thaw(&sid)?;
            }
            frozen
        })
        .await
        .map_err(|e| NodeError::Agent { detail: format!("freezing the layer: {e}") })?;
        if let Some(h) = &handle {
            if let Err(e) = self.register_agent(id, h) {
                warn!(sandbox = %id, error = %e, "listening for its agent again after the fork");
            }
        }
        r?;
        Ok((layer, image))
    }

    /// Those of `layers` that no sandbox uses.
    pub(crate) fn unused_layers(&self, layers: &[String]) -> Vec<String> {
        if layers.is_empty() {
            return Vec::new();
        }
        let mut used: std::collections::HashSet<String> =
            self.sandboxes.lock().unwrap().values().flat_map(|r| r.layers.iter().cloned()).collect();
        used.extend(self.snapshots.lock().unwrap().values().flat_map(|s| s.layers.iter().cloned()));
        used.extend(self.template_image_layers());
        layers.iter().filter(|l| !used.contains(*l)).cloned().collect()
    }

    /// Deletes those of `layers` that no sandbox uses any more.
    pub(crate) fn release_layers(&self, layers: &[String]) {
        remove_layers(self.runtime.as_ref(), &self.unused_layers(layers));
    }

    /// At start: deletes frozen layers that no recovered sandbox uses, and memory images no
    /// snapshot or template names (those of forks a crash interrupted).
    pub(crate) fn collect_layers(&self) {
        let on_disk = self.runtime.layers();
        self.release_layers(&on_disk);
        let mut named: std::collections::HashSet<String> =
            self.snapshots.lock().unwrap().values().filter_map(|s| s.memory_image.clone()).collect();
        named.extend(self.template_image_names());
        for img in self.runtime.images().into_iter().filter(|i| !named.contains(i)) {
            self.runtime.remove_image(&img);
        }
    }
}

/// Deletes frozen layers (after the sandboxes that used them are torn down).
pub(crate) fn remove_layers(rt: &dyn warren_runtime::Runtime, layers: &[String]) {
    for l in layers {
        if let Err(e) = rt.remove_layer(l) {
            warn!(layer = %l, error = %e, "removing a frozen layer nobody uses");
        }
    }
}
