//! Snapshots: a sandbox's disk state kept as a template. Taking one freezes the sandbox's writable
//! layer (as a fork does) and records the stack — the root template plus frozen layers, topmost
//! first — under a template id the team can create sandboxes and pools from. Sandboxes of a
//! snapshot start fresh processes from its files (filesystem mode), or, for a memory snapshot of a
//! sandbox on a runtime that saves memory (gVisor, `memory: true`), are restored from the memory
//! image taken in the same pause: a server its start command launched is already up. Snapshots live in this daemon's state store (`snapshots_v1`, versioned records) next
//! to the frozen layers they name in its layer store, not in the shared templates directory.
//! A snapshot is deleted with `DELETE /templates/{id}`, refused while sandboxes or pools use it;
//! its layers go once nothing else uses them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use warren_types::{SandboxId, Team, TemplateId};

use crate::engine::{Engine, SandboxRecord, Shape};
use crate::store::Kind;
use crate::{now_ms, random_hex, NodeError};

const SNAPSHOT_RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub version: u32,
    pub id: TemplateId,
    pub team: Team,
    /// The template at the bottom of the stack (a built root filesystem).
    pub base: TemplateId,
    /// Frozen layers over `base`, topmost first.
    pub layers: Vec<String>,
    /// The sandbox it was taken from.
    pub sandbox_id: SandboxId,
    pub created_at_ms: u64,
    /// A memory snapshot: the runtime's image of the source's processes and memory, and that
    /// runtime (sandboxes of the snapshot on it are restored from the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Engine {
    /// Loads the snapshots of the state store (at start, before sandboxes are recovered).
    pub(crate) fn load_snapshots(&self) -> Result<(), NodeError> {
        let all: Vec<SnapshotRecord> = self.store.all(Kind::Snapshot)?;
        let mut map = self.snapshots.lock().unwrap();
        for s in all.into_iter().filter(|s| s.version == SNAPSHOT_RECORD_VERSION) {
            map.insert(s.id.clone(), s);
        }
        Ok(())
    }

    pub fn snapshot(&self, id: &TemplateId) -> Option<SnapshotRecord> {
        self.snapshots.lock().unwrap().get(id).cloned()
    }

    /// Snapshots the team's sandbox `id` under `name` (a new id when absent). A name the team
    /// already uses for a snapshot gets the new state (sandboxes started from the old one keep
    /// theirs); any other template of that name is refused.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        team: &Team,
        id: &str,
        name: Option<&str>,
        memory: Option<bool>,
    ) -> Result<SnapshotRecord, NodeError> {
        let src = self.get_owned(team, id)?;
        let memory = memory == Some(true);
        if memory && !self.runtime.backend_capabilities(Some(&src.runtime)).is_some_and(|c| c.memory_snapshots) {
            return Err(NodeError::Unsupported {
                detail: format!(
                    "memory snapshots are not available on the {} runtime; snapshot the filesystem only \
                     (memory: false, the SDK's mode=\"filesystem\"), pause the sandbox to keep its memory, \
                     or use runtime \"gvisor\"",
                    src.runtime
                ),
            });
        }
        if memory && src.state != warren_types::SandboxState::Running {
            return Err(NodeError::Conflict {
                id: src.id.to_string(),
                state: "paused",
                action: "taking a memory snapshot (resume it first, or take a filesystem snapshot)",
            });
        }
        let snap_id = match name {
            Some(n) => TemplateId::parse(n)?,
            None => TemplateId::parse(&format!("snap-{}", random_hex(8)))?,
        };
        if self.templates.get(&snap_id).is_some() {
            return Err(NodeError::TemplateTaken { id: snap_id.to_string() });
        }
        if let Some(old) = self.snapshot(&snap_id) {
            if &old.team != team {
                return Err(NodeError::TemplateTaken { id: snap_id.to_string() });
            }
        }
        let base = match self.snapshot(&src.template_id) {
            Some(s) => s.base,
            None => src.template_id.clone(),
        };
        let (layer, memory_image) = self.take_checked_snapshot(&src, memory).await?;
        let mut layers = vec![layer];
        layers.extend(src.layers.iter().cloned());
        let rec = SnapshotRecord {
            version: SNAPSHOT_RECORD_VERSION,
            id: snap_id.clone(),
            team: team.clone(),
            base,
            layers,
            sandbox_id: src.id.clone(),
            created_at_ms: now_ms(),
            runtime: memory_image.as_ref().map(|_| src.runtime.clone()),
            memory_image,
        };
        let old = {
            let mut map = self.snapshots.lock().unwrap();
            if let Err(e) = self.store.put(Kind::Snapshot, snap_id.as_str(), &rec) {
                drop(map);
                self.release_layers(&rec.layers[..1]);
                if let Some(img) = &rec.memory_image {
                    self.runtime.remove_image(img);
                }
                return Err(e.into());
            }
            map.insert(snap_id.clone(), rec.clone())
        };
        if let Some(old) = old {
            self.release_layers(&old.layers);
            if let Some(img) = &old.memory_image {
                self.runtime.remove_image(img);
            }
        }
        info!(snapshot = %snap_id, sandbox = %src.id, "snapshot taken");
        Ok(rec)
    }

    /// Freezes the source's layer (and with `memory` takes its memory image), then proves a memory
    /// image by restoring it once into a throwaway sandbox: an image is kept for long and restored
    /// many times, and one that does not restore (runsc's failures, docs/runtimes.md) is better
    /// taken again now, from the still-running source, a few times, than found out at every create. Returns the layer and the image.
    async fn take_checked_snapshot(
        self: &Arc<Self>,
        src: &SandboxRecord,
        memory: bool,
    ) -> Result<(String, Option<String>), NodeError> {
        const TAKES: u32 = 3;
        let shape = Shape::of(src);
        let mut take = 1;
        loop {
            let (layer, image) = self.freeze_for_fork(&src.id, memory).await?;
            let Some(img) = image.clone() else { return Ok((layer, image)) };
            let mut layers = vec![layer.clone()];
            layers.extend(src.layers.iter().cloned());
            let err = match self.boot_from(&shape, None, &layers, Some(&img), None).await {
                Ok((trial, _watch)) => {
                    self.agents.forget(&trial.handle.as_ref().expect("booted").agent_socket);
                    self.abort_create(&trial.id, trial.handle.clone()).await;
                    return Ok((layer, image));
                }
                Err(e) => e,
            };
            self.runtime.remove_image(&img);
            self.release_layers(&[layer]);
            if take == TAKES {
                return Err(err);
            }
            warn!(sandbox = %src.id, error = %err, take, "the memory image does not restore; taking it again");
            take += 1;
        }
    }

    /// The team's snapshots, oldest first, optionally only those of one sandbox or name.
    pub fn list_snapshots(&self, team: &Team, sandbox: Option<&str>, name: Option<&str>) -> Vec<SnapshotRecord> {
        let mut v: Vec<SnapshotRecord> = self
            .snapshots
            .lock()
            .unwrap()
            .values()
            .filter(|s| &s.team == team)
            .filter(|s| sandbox.is_none_or(|id| s.sandbox_id.as_str() == id))
            .filter(|s| name.is_none_or(|n| s.id.as_str() == n))
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        v
    }

    /// Deletes the team's snapshot, refused while a sandbox or a pool uses it.
    pub(crate) fn remove_snapshot(&self, team: &Team, id: &TemplateId) -> Result<(), NodeError> {
        let Some(snap) = self.snapshot(id).filter(|s| &s.team == team) else {
            return Err(NodeError::TemplateNotFound { id: id.to_string() });
        };
        let mut users: Vec<String> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|r| &r.template_id == id)
            .map(|r| format!("sandbox {}", r.id))
            .collect();
        users.extend(self.pools_of_template(id).into_iter().map(|p| format!("pool {p}")));
        if !users.is_empty() {
            users.sort();
            return Err(NodeError::SnapshotInUse { id: id.to_string(), users: users.join(", ") });
        }
        {
            let mut map = self.snapshots.lock().unwrap();
            self.store.delete(Kind::Snapshot, id.as_str())?;
            map.remove(id);
        }
        self.release_layers(&snap.layers);
        if let Some(img) = &snap.memory_image {
            self.runtime.remove_image(img);
        }
        info!(snapshot = %id, "snapshot deleted");
        Ok(())
    }
}
