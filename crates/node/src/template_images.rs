//! Templates' memory images. A template with a start command is booted once on every runtime
//! that saves memory (gVisor) as soon as it is ready: the start command runs, the ready check
//! passes, and the sandbox's writable layer is frozen and its processes and memory saved in one
//! pause (exactly as a memory snapshot is taken). Every later sandbox and pool member of that
//! template on that runtime is restored from the image, so its server is already up and no start
//! command runs. The image is taken again when the template's start command changes, and goes
//! with the template. Records live in this daemon's state store (`template_images_v1`), beside
//! the layer store that holds their layers, not in the (shareable) templates directory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use warren_types::TemplateId;

use crate::engine::Engine;
use crate::store::Kind;
use crate::templates::{Startup, Status};
use crate::{now_ms, NodeError};

const TEMPLATE_IMAGE_RECORD_VERSION: u32 = 1;

/// Further checkpoint attempts of a warm-up sandbox after a failed one.
const WARM_UP_CHECKPOINT_RETRIES: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateImageRecord {
    pub version: u32,
    pub template: TemplateId,
    pub runtime: String,
    /// The start command it was taken with: a template whose command changed is taken again.
    pub startup: Startup,
    /// The frozen writable layer of the warmed-up sandbox (files its start command wrote).
    pub layers: Vec<String>,
    pub memory_image: String,
    pub created_at_ms: u64,
    /// How long the warm-up took (boot, start command, ready check, checkpoint).
    pub took_ms: u64,
}

/// What the engine knows of templates' memory images.
#[derive(Default)]
pub(crate) struct TemplateImages {
    pub(crate) ready: HashMap<(TemplateId, String), TemplateImageRecord>,
    /// Warm-ups that failed, with the start command they failed with (not retried until it
    /// changes or the daemon restarts).
    pub(crate) failed: HashMap<(TemplateId, String), (Startup, String)>,
    /// Asked for on a runtime other than the default (a sandbox of it was booted there).
    pub(crate) wanted: HashSet<(TemplateId, String)>,
    /// Warm-ups under way.
    pub(crate) running: HashSet<(TemplateId, String)>,
}

fn key(template: &TemplateId, runtime: &str) -> String {
    format!("{template}@{runtime}")
}

/// Where a template's memory image stands on one runtime, for the template's API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    Ready { runtime: String, took_ms: u64 },
    Failed { runtime: String, error: String },
}

impl Engine {
    /// Loads the records of the state store (at start, before layers are collected); those of
    /// templates that are gone are dropped with their layers and images.
    pub(crate) fn load_template_images(&self) -> Result<(), NodeError> {
        let all: Vec<TemplateImageRecord> = self.store.all(Kind::TemplateImage)?;
        let mut stale = Vec::new();
        {
            let mut imgs = self.template_images.lock().unwrap();
            for r in all.into_iter().filter(|r| r.version == TEMPLATE_IMAGE_RECORD_VERSION) {
                if self.templates.get(&r.template).is_some_and(|t| t.status == Status::Ready) {
                    imgs.ready.insert((r.template.clone(), r.runtime.clone()), r);
                } else {
                    stale.push(r);
                }
            }
        }
        for r in stale {
            self.store.delete(Kind::TemplateImage, &key(&r.template, &r.runtime))?;
            self.runtime.remove_image(&r.memory_image);
        }
        Ok(())
    }

    /// The memory image sandboxes of `template` on `runtime` start from: one taken with the
    /// template's current start command.
    pub(crate) fn template_image(&self, template: &TemplateId, runtime: &str) -> Option<TemplateImageRecord> {
        let startup = self.templates.startup(template)?;
        let imgs = self.template_images.lock().unwrap();
        imgs.ready.get(&(template.clone(), runtime.to_owned())).filter(|r| r.startup == startup).cloned()
    }

    /// The state of the template's memory images, one per runtime that has one or failed one.
    pub fn template_image_states(&self, template: &TemplateId) -> Vec<ImageState> {
        let Some(startup) = self.templates.startup(template) else { return Vec::new() };
        let imgs = self.template_images.lock().unwrap();
        let mut out: Vec<ImageState> = imgs
            .ready
            .values()
            .filter(|r| &r.template == template && r.startup == startup)
            .map(|r| ImageState::Ready { runtime: r.runtime.clone(), took_ms: r.took_ms })
            .collect();
        out.extend(
            imgs.failed
                .iter()
                .filter(|((t, _), (s, _))| t == template && *s == startup)
                .map(|((_, rt), (_, e))| ImageState::Failed { runtime: rt.clone(), error: e.clone() }),
        );
        out
    }

    /// Layers that templates' memory images hold.
    pub(crate) fn template_image_layers(&self) -> Vec<String> {
        self.template_images.lock().unwrap().ready.values().flat_map(|r| r.layers.iter().cloned()).collect()
    }

    /// Memory images that templates hold.
    pub(crate) fn template_image_names(&self) -> Vec<String> {
        self.template_images.lock().unwrap().ready.values().map(|r| r.memory_image.clone()).collect()
    }

    /// Runs for the daemon's life: whenever templates change or a sandbox of a template without
    /// its image is booted on a runtime that saves memory, takes the images that are missing or
    /// out of date. Templates get theirs on the daemon's default runtime as soon as they are
    /// ready, and on another runtime once it is first asked for (no image nobody starts from).
    pub(crate) fn start_template_warmer(self: &Arc<Self>) {
        if !self.cfg.gvisor.template_memory_snapshots || self.memory_runtimes().is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        let templates = self.templates.clone();
        let wake = self.warm_wake.clone();
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(e) => e.warm_templates(),
                    None => return,
                }
                tokio::select! {
                    _ = templates.changed() => {}
                    _ = wake.notified() => {}
                }
            }
        });
    }

    fn memory_runtimes(&self) -> Vec<String> {
        self.runtime
            .backends()
            .into_iter()
            .filter(|b| self.runtime.backend_capabilities(Some(b)).is_some_and(|c| c.memory_snapshots))
            .map(str::to_owned)
            .collect()
    }

    /// Notes that a sandbox of `template` on `runtime` booted without a memory image: the warmer
    /// takes one when the template has a start command and the runtime saves memory.
    pub(crate) fn want_template_image(&self, template: &TemplateId, runtime: &str) {
        if !self.cfg.gvisor.template_memory_snapshots
            || self.templates.startup(template).is_none()
            || !self.runtime.backend_capabilities(Some(runtime)).is_some_and(|c| c.memory_snapshots)
        {
            return;
        }
        if self.template_images.lock().unwrap().wanted.insert((template.clone(), runtime.to_owned())) {
            self.warm_wake.notify_one();
        }
    }

    /// The lock a template's warm-up holds, and its removal takes.
    fn warm_lock(&self, template: &TemplateId) -> Arc<tokio::sync::Mutex<()>> {
        self.warm_locks.lock().unwrap().entry(template.clone()).or_default().clone()
    }

    /// Starts the warm-ups that are due (each in its own task; boots are bounded as usual).
    fn warm_templates(self: &Arc<Self>) {
        let default = self.runtime.name();
        let memory_runtimes = self.memory_runtimes();
        let ready: Vec<(TemplateId, Startup)> = self
            .templates
            .list()
            .into_iter()
            .filter(|t| t.status == Status::Ready)
            .filter_map(|t| self.templates.startup(&t.id).map(|s| (t.id, s)))
            .collect();
        for (template, startup) in ready {
            for runtime in &memory_runtimes {
                let k = (template.clone(), runtime.clone());
                {
                    let mut imgs = self.template_images.lock().unwrap();
                    let due = (runtime == default || imgs.wanted.contains(&k))
                        && !imgs.ready.get(&k).is_some_and(|r| r.startup == startup)
                        && !imgs.failed.get(&k).is_some_and(|(s, _)| *s == startup)
                        && !imgs.running.contains(&k);
                    if !due {
                        continue;
                    }
                    imgs.running.insert(k.clone());
                }
                let (me, lock, startup) = (self.clone(), self.warm_lock(&template), startup.clone());
                tokio::spawn(async move {
                    let held = lock.lock_owned().await;
                    // Removed or changed meanwhile: the next pass sees what is current.
                    if me.templates.startup(&k.0).as_ref() == Some(&startup) {
                        let t0 = std::time::Instant::now();
                        match me.warm_template(&k.0, &k.1).await {
                            Ok((layer, image)) => me.keep_template_image(TemplateImageRecord {
                                version: TEMPLATE_IMAGE_RECORD_VERSION,
                                template: k.0.clone(),
                                runtime: k.1.clone(),
                                startup,
                                layers: vec![layer],
                                memory_image: image,
                                created_at_ms: now_ms(),
                                took_ms: t0.elapsed().as_millis() as u64,
                            }),
                            Err(e) => {
                                warn!(template = %k.0, runtime = %k.1, error = %e,
                                      "taking the template's memory image failed; its sandboxes run the start command at boot");
                                me.template_images.lock().unwrap().failed.insert(k.clone(), (startup, e.to_string()));
                            }
                        }
                    }
                    drop(held);
                    me.template_images.lock().unwrap().running.remove(&k);
                    me.warm_wake.notify_one();
                });
            }
        }
    }

    /// Stores a new image (replacing an older one of the same template and runtime), unless the
    /// template changed meanwhile.
    fn keep_template_image(&self, rec: TemplateImageRecord) {
        let k = (rec.template.clone(), rec.runtime.clone());
        let current = self.templates.startup(&rec.template).as_ref() == Some(&rec.startup);
        let old = if current {
            match self.store.put(Kind::TemplateImage, &key(&rec.template, &rec.runtime), &rec) {
                Ok(()) => {
                    info!(template = %rec.template, runtime = %rec.runtime, ms = rec.took_ms, "template memory image taken");
                    let mut imgs = self.template_images.lock().unwrap();
                    imgs.failed.remove(&k);
                    Ok(imgs.ready.insert(k, rec))
                }
                Err(e) => {
                    warn!(template = %rec.template, error = %e, "recording the template's memory image");
                    Err(rec)
                }
            }
        } else {
            Err(rec)
        };
        let drop_it = match old {
            Ok(Some(old)) => Some(old),
            Ok(None) => None,
            Err(unused) => Some(unused),
        };
        if let Some(r) = drop_it {
            self.release_layers(&r.layers);
            self.runtime.remove_image(&r.memory_image);
        }
    }

    /// Boots a sandbox of `template` on `runtime` (its start command runs and its ready check
    /// passes), freezes its layer and saves its memory, then tears it down. The frozen layer and
    /// the image's name.
    async fn warm_template(
        self: &Arc<Self>,
        template: &TemplateId,
        runtime: &str,
    ) -> Result<(String, String), NodeError> {
        let rec =
            self.templates.get(template).ok_or_else(|| NodeError::TemplateNotFound { id: template.to_string() })?;
        let team = rec.team.unwrap_or_default();
        let shape = self.shape(&team, template.as_str(), None, None, None, Some(runtime))?;
        info!(template = %template, runtime, "taking the template's memory image");
        let (sb, _watch) = self.boot_from(&shape, None, &[], None, None).await?;
        // Booted: the freeze below goes by the engine's record of it.
        self.sandboxes.lock().unwrap().insert(sb.id.clone(), sb.clone());
        // runsc's checkpoint fails now and then on a sandbox whose network stack is mid-change
        // (a nil dereference while encoding, seen right after a ready check's connection
        // closed); the sandbox keeps running, so give it a moment and try again.
        let mut frozen = self.freeze_for_fork(&sb.id, true).await;
        for _ in 0..WARM_UP_CHECKPOINT_RETRIES {
            match &frozen {
                Err(NodeError::Runtime(e)) => {
                    warn!(template = %template, error = %e, "the warm-up's checkpoint failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    frozen = self.freeze_for_fork(&sb.id, true).await;
                }
                _ => break,
            }
        }
        if let Some(h) = &sb.handle {
            self.agents.forget(&h.agent_socket);
        }
        self.abort_create(&sb.id, sb.handle.clone()).await;
        match frozen? {
            (layer, Some(image)) => Ok((layer, image)),
            (layer, None) => {
                self.release_layers(std::slice::from_ref(&layer));
                Err(NodeError::Unsupported { detail: format!("the {runtime} runtime saved no memory image") })
            }
        }
    }

    /// Waits (briefly) for a warm-up of the template to end, so that it can be removed; the
    /// guard keeps new warm-ups of it out until the removal is done.
    pub(crate) async fn stop_template_warm_up(
        &self,
        template: &TemplateId,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, NodeError> {
        let lock = self.warm_lock(template);
        tokio::time::timeout(std::time::Duration::from_secs(15), lock.lock_owned())
            .await
            .map_err(|_| NodeError::TemplateWarming { id: template.to_string() })
    }

    /// Drops the template's memory images (it was removed; the caller holds its warm-up lock).
    pub(crate) fn drop_template_images(&self, template: &TemplateId) -> Result<(), NodeError> {
        let gone: Vec<TemplateImageRecord> = {
            let mut imgs = self.template_images.lock().unwrap();
            imgs.failed.retain(|(t, _), _| t != template);
            imgs.wanted.retain(|(t, _)| t != template);
            let keys: Vec<_> = imgs.ready.keys().filter(|(t, _)| t == template).cloned().collect();
            keys.into_iter().filter_map(|k| imgs.ready.remove(&k)).collect()
        };
        for r in gone {
            self.store.delete(Kind::TemplateImage, &key(&r.template, &r.runtime))?;
            self.release_layers(&r.layers);
            self.runtime.remove_image(&r.memory_image);
        }
        self.warm_locks.lock().unwrap().remove(template);
        Ok(())
    }
}
