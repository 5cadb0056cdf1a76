//! Templates: read-only root filesystems shared by every sandbox made from them. `base` (and any
//! other Debian-package template) is built with mmdebstrap, then its ownership is shifted into the
//! sandboxes' uid range so that root inside a sandbox owns the files root owned in the image.
//! Each template's record (`template.json`, versioned) lives beside its rootfs, so a templates
//! directory is self-describing and can be shared by several daemons.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;
use tracing::{info, warn};
use warren_types::config::TemplateConfig;
use warren_types::{Team, TemplateId};

use crate::{now_ms, NodeError};

/// Packages every Debian template gets (the `base` template is exactly these).
pub const BASE_PACKAGES: &[&str] =
    &["bash", "coreutils", "python3", "python3-pip", "ca-certificates", "curl", "git", "procps", "sudo", "passwd"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Building,
    Ready,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Building => "building",
            Status::Ready => "ready",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRecord {
    pub version: u32,
    pub id: TemplateId,
    pub status: Status,
    pub packages: Vec<String>,
    pub size_bytes: u64,
    pub created_at_ms: u64,
    pub error: Option<String>,
    pub default_user: String,
    /// The owning team; `None` for public templates (such as `base`) that every team may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Team>,
    /// Made from another template's root filesystem (no build of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TemplateId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
}

/// What every sandbox of a template runs when it boots, and how to tell it is ready: a server
/// that should already answer when the caller gets the sandbox (pools boot it ahead of claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Startup {
    /// Run with `bash -l -c`, in the background, as the template's default user.
    pub start_cmd: String,
    /// Run with `bash -l -c` until it exits 0; none: do not wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
    /// How long the ready check may take before the boot fails.
    pub ready_timeout_secs: u64,
}

/// The longest chain of templates made from templates.
const MAX_TEMPLATE_DEPTH: usize = 8;

impl TemplateRecord {
    pub fn visible_to(&self, team: &Team) -> bool {
        self.team.as_ref().is_none_or(|t| t == team)
    }
}

struct Build {
    lines: Vec<String>,
    tx: broadcast::Sender<String>,
}

pub struct Templates {
    dir: PathBuf,
    cfg: TemplateConfig,
    uid_base: u32,
    records: Mutex<HashMap<TemplateId, TemplateRecord>>,
    builds: Mutex<HashMap<TemplateId, Build>>,
    /// Woken whenever a record changes (the engine then takes memory images of new templates).
    changed: tokio::sync::Notify,
    /// Builds another daemon sharing the directory was running when this one opened it: this
    /// one follows them ([`Templates::follow_builds`]).
    to_follow: Mutex<Vec<TemplateId>>,
}

/// What a finished build leaves beside its rootfs, written while it holds the build lock: a
/// daemon that gets the lock after another one built the template takes this result.
#[derive(Serialize, Deserialize)]
struct Built {
    packages: Vec<String>,
    size_bytes: u64,
}

/// Several daemons may share a templates directory (`templates.dir`). A build holds this lock
/// on its template's directory from its first step until its record is saved, so two builds of
/// one template never share a staging directory.
fn lock_build(root: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(root)?;
    let f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(root.join(".build.lock"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(f)
}

/// Whether another process holds `root`'s build lock right now.
fn build_locked_elsewhere(root: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(root.join(".build.lock")) else { return false };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
}

/// A subscription to a build's progress: lines so far, then live lines until the build ends.
pub struct Progress {
    pub backlog: Vec<String>,
    pub live: Option<broadcast::Receiver<String>>,
}

impl Templates {
    pub fn open(data_dir: &Path, cfg: TemplateConfig, uid_base: u32) -> Result<Templates, NodeError> {
        let dir = cfg.dir.clone().unwrap_or_else(|| data_dir.join("templates"));
        let io = |e: std::io::Error| NodeError::Build { id: "-".into(), detail: format!("{}: {e}", dir.display()) };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let me = Templates {
            dir: dir.clone(),
            cfg,
            uid_base,
            records: Mutex::new(HashMap::new()),
            builds: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            to_follow: Mutex::new(Vec::new()),
        };
        for entry in std::fs::read_dir(&dir).map_err(io)?.flatten() {
            let meta = entry.path().join("template.json");
            let Ok(text) = std::fs::read(&meta) else { continue };
            let mut r: TemplateRecord = match serde_json::from_slice(&text) {
                Ok(r) => r,
                Err(e) => {
                    warn!(path = %meta.display(), error = %e, "ignoring an unreadable template record");
                    continue;
                }
            };
            if r.status == Status::Building {
                if r.from.is_none() && build_locked_elsewhere(&entry.path()) {
                    // Another daemon sharing the directory is building it: wait for its result.
                    me.to_follow.lock().unwrap().push(r.id.clone());
                } else if let Some(size) = Self::built(&entry.path(), &r.packages) {
                    // Built, but the builder stopped before saving its record.
                    r.status = Status::Ready;
                    r.size_bytes = size;
                    me.save(&r)?;
                } else {
                    // A build interrupted by a restart cannot resume; mark it failed so it can be
                    // rebuilt.
                    r.status = Status::Failed;
                    r.error = Some("the daemon stopped during the build; build it again".into());
                    me.save(&r)?;
                }
            }
            me.records.lock().unwrap().insert(r.id.clone(), r);
        }
        Ok(me)
    }

    pub fn rootfs(&self, id: &TemplateId) -> PathBuf {
        self.dir.join(id.as_str()).join("rootfs")
    }

    pub fn get(&self, id: &TemplateId) -> Option<TemplateRecord> {
        self.records.lock().unwrap().get(id).cloned()
    }

    pub fn list(&self) -> Vec<TemplateRecord> {
        let mut v: Vec<_> = self.records.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The rootfs of a ready template (a derived one's comes from what it is made from), or why
    /// it cannot be used.
    pub fn ready_rootfs(&self, id: &TemplateId) -> Result<PathBuf, NodeError> {
        let mut cur = id.clone();
        for _ in 0..MAX_TEMPLATE_DEPTH {
            match self.get(&cur) {
                None => return Err(NodeError::TemplateNotFound { id: cur.to_string() }),
                Some(r) if r.status != Status::Ready => {
                    return Err(NodeError::TemplateNotReady { id: cur.to_string(), status: r.status.as_str().into() })
                }
                Some(TemplateRecord { from: Some(f), .. }) => cur = f,
                Some(_) => return Ok(self.rootfs(&cur)),
            }
        }
        Err(NodeError::TemplateNotFound { id: id.to_string() })
    }

    /// The start command of a template: its own, or the nearest one of what it is made from.
    pub fn startup(&self, id: &TemplateId) -> Option<Startup> {
        let mut cur = id.clone();
        for _ in 0..MAX_TEMPLATE_DEPTH {
            let r = self.get(&cur)?;
            if r.startup.is_some() {
                return r.startup;
            }
            cur = r.from?;
        }
        None
    }

    /// Makes template `id` from `from`'s root filesystem with a start command (no build: ready at
    /// once). An id held by another owner, or by a built template, is refused; a derived one of
    /// the same owner is updated.
    pub fn derive(
        &self,
        id: TemplateId,
        from: TemplateId,
        startup: Option<Startup>,
        owner: Option<Team>,
    ) -> Result<TemplateRecord, NodeError> {
        if id == from {
            return Err(NodeError::OutOfRange {
                field: "from",
                value: from.to_string(),
                allowed: "another template".into(),
            });
        }
        if let Some(r) = self.get(&id) {
            if r.team != owner || r.from.is_none() {
                return Err(NodeError::TemplateTaken { id: id.to_string() });
            }
        }
        // Checks the chain now: the base must exist, be usable by the owner and be short enough.
        let base = self.get(&from).ok_or_else(|| NodeError::TemplateNotFound { id: from.to_string() })?;
        let usable = match &owner {
            Some(t) => base.visible_to(t),
            // A public template stands on public ones only.
            None => base.team.is_none(),
        };
        if !usable {
            return Err(NodeError::TemplateNotFound { id: from.to_string() });
        }
        let mut depth = 1;
        let mut cur = base.from.clone();
        while let Some(c) = cur {
            depth += 1;
            if depth >= MAX_TEMPLATE_DEPTH || c == id {
                return Err(NodeError::OutOfRange {
                    field: "from",
                    value: from.to_string(),
                    allowed: format!("a chain of at most {MAX_TEMPLATE_DEPTH} templates without loops"),
                });
            }
            cur = self.get(&c).and_then(|r| r.from);
        }
        let rec = TemplateRecord {
            version: 1,
            id,
            status: Status::Ready,
            packages: base.packages.clone(),
            size_bytes: 0,
            created_at_ms: now_ms(),
            error: None,
            default_user: base.default_user.clone(),
            team: owner,
            from: Some(from),
            startup,
        };
        self.save(&rec)?;
        Ok(rec)
    }

    /// Templates made from `id`.
    pub fn derived_from(&self, id: &TemplateId) -> Vec<TemplateId> {
        self.records.lock().unwrap().values().filter(|r| r.from.as_ref() == Some(id)).map(|r| r.id.clone()).collect()
    }

    pub fn progress(&self, id: &TemplateId) -> Progress {
        let builds = self.builds.lock().unwrap();
        match builds.get(id) {
            Some(b) => Progress { backlog: b.lines.clone(), live: Some(b.tx.subscribe()) },
            None => Progress { backlog: vec![], live: None },
        }
    }

    /// Writes the record beside the rootfs (write-then-rename, so a crash leaves the old or the new).
    fn save(&self, r: &TemplateRecord) -> Result<(), NodeError> {
        let dir = self.dir.join(r.id.as_str());
        let err =
            |e: std::io::Error| NodeError::Build { id: r.id.to_string(), detail: format!("saving its record: {e}") };
        std::fs::create_dir_all(&dir).map_err(err)?;
        // Per process: daemons sharing the directory may save one record at the same moment.
        let tmp = dir.join(format!("template.json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(r).expect("serializes")).map_err(err)?;
        std::fs::rename(&tmp, dir.join("template.json")).map_err(err)?;
        self.records.lock().unwrap().insert(r.id.clone(), r.clone());
        self.changed.notify_one();
        Ok(())
    }

    /// Follows the builds another daemon was running when this one opened the directory: each
    /// waits for that build's lock and takes its result (or builds, if that daemon stopped).
    pub fn follow_builds(self: &Arc<Self>) {
        let ids = std::mem::take(&mut *self.to_follow.lock().unwrap());
        for id in ids {
            let Some(r) = self.get(&id) else { continue };
            let extra = r.packages.iter().filter(|p| !BASE_PACKAGES.contains(&p.as_str())).cloned().collect();
            info!(template = %id, "another daemon sharing the templates directory is building it; waiting for it");
            if let Err(e) = self.build(id.clone(), extra, r.team.clone(), r.startup.clone()) {
                warn!(template = %id, error = %e, "following another daemon's build");
            }
        }
    }

    /// The size of the template built in `root` for exactly `packages`, if a build finished there.
    fn built(root: &Path, packages: &[String]) -> Option<u64> {
        let b: Built = serde_json::from_slice(&std::fs::read(root.join("built.json")).ok()?).ok()?;
        (b.packages == packages && root.join("rootfs").is_dir()).then_some(b.size_bytes)
    }

    /// Resolves when a template record changed since the last call returned (or ever, the first time).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Starts building `id` for `owner` (`None`: public) unless it is ready or already building.
    /// Returns at once. An id held by another owner is refused, never rebuilt or taken over.
    pub fn build(
        self: &Arc<Self>,
        id: TemplateId,
        extra: Vec<String>,
        owner: Option<Team>,
        startup: Option<Startup>,
    ) -> Result<TemplateRecord, NodeError> {
        for p in &extra {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.:=~".contains(&b)) {
                return Err(NodeError::OutOfRange {
                    field: "packages",
                    value: p.clone(),
                    allowed: "Debian package names ([a-z0-9+-.], optionally =version)".into(),
                });
            }
        }
        {
            let builds = self.builds.lock().unwrap();
            if let Some(r) = self.get(&id) {
                if r.team != owner {
                    return Err(NodeError::TemplateTaken { id: id.to_string() });
                }
                if r.status == Status::Ready || builds.contains_key(&id) {
                    return Ok(r);
                }
            }
        }
        let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
        packages.extend(extra);
        let rec = TemplateRecord {
            version: 1,
            id: id.clone(),
            status: Status::Building,
            packages: packages.clone(),
            size_bytes: 0,
            created_at_ms: now_ms(),
            error: None,
            default_user: "user".into(),
            team: owner,
            from: None,
            startup,
        };
        self.save(&rec)?;
        let (tx, _) = broadcast::channel(1024);
        self.builds.lock().unwrap().insert(id.clone(), Build { lines: vec![], tx });
        let me = self.clone();
        let saved = rec.clone();
        tokio::spawn(async move {
            let root = me.dir.join(id.as_str());
            let lock = tokio::task::spawn_blocking(move || lock_build(&root))
                .await
                .map_err(|e| e.to_string())
                .and_then(|l| l.map_err(|e| format!("locking the template's directory: {e}")));
            let result = match &lock {
                Err(e) => Err(e.clone()),
                Ok(_) => match Self::built(&me.dir.join(id.as_str()), &packages) {
                    Some(size) => {
                        me.line(&id, "built by another daemon sharing the templates directory".into());
                        Ok(size)
                    }
                    None => me.run_build(&id, &packages).await,
                },
            };
            let mut rec = me.get(&id).unwrap_or(saved);
            match result {
                Ok(size) => {
                    rec.status = Status::Ready;
                    rec.size_bytes = size;
                    me.line(&id, "template ready".into());
                    info!(template = %id, size, "template built");
                }
                Err(e) => {
                    rec.status = Status::Failed;
                    rec.error = Some(e.clone());
                    me.line(&id, format!("build failed: {e}"));
                    warn!(template = %id, error = %e, "template build failed");
                }
            }
            if let Err(e) = me.save(&rec) {
                warn!(template = %id, error = %e, "saving template record");
            }
            drop(lock);
            me.builds.lock().unwrap().remove(&id);
        });
        Ok(self.get(&rec.id).expect("just saved"))
    }

    fn line(&self, id: &TemplateId, line: String) {
        if let Some(b) = self.builds.lock().unwrap().get_mut(id) {
            let _ = b.tx.send(line.clone());
            b.lines.push(line);
        }
    }

    async fn run_build(&self, id: &TemplateId, packages: &[String]) -> Result<u64, String> {
        let root = self.dir.join(id.as_str());
        let staging = root.join("rootfs.staging");
        let final_dir = root.join("rootfs");
        let _ = tokio::fs::remove_file(root.join("built.json")).await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let _ = tokio::fs::remove_dir_all(&final_dir).await;
        tokio::fs::create_dir_all(&root).await.map_err(|e| format!("{}: {e}", root.display()))?;
        self.line(id, format!("mmdebstrap {} with {}", self.cfg.suite, packages.join(",")));
        let mut child = tokio::process::Command::new("mmdebstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg("--customize-hook=chroot \"$1\" useradd --create-home --shell /bin/bash --uid 1000 user")
            .arg("--customize-hook=echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > \"$1/etc/sudoers.d/user\"")
            .arg("--customize-hook=rm -rf \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*")
            .arg(&self.cfg.suite)
            .arg(&staging)
            .arg(&self.cfg.mirror)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting mmdebstrap (install it with apt-get install mmdebstrap): {e}"))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let mut out = BufReader::new(out).lines();
        let mut err = BufReader::new(err).lines();
        let mut tail = Vec::new();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            tokio::select! {
                l = out.next_line(), if !out_done => match l { Ok(Some(l)) => self.line(id, l), _ => out_done = true },
                l = err.next_line(), if !err_done => match l {
                    Ok(Some(l)) => {
                        tail.push(l.clone());
                        if tail.len() > 20 { tail.remove(0); }
                        self.line(id, l)
                    }
                    _ => err_done = true,
                },
            }
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("mmdebstrap exited with {status}: {}", tail.join(" | ")));
        }
        self.line(id, format!("shifting ownership into the sandbox uid range (+{})", self.uid_base));
        let base = self.uid_base;
        let st = staging.clone();
        let size = tokio::task::spawn_blocking(move || shift_ownership(&st, base))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("shifting ownership: {e}"))?;
        tokio::fs::rename(&staging, &final_dir).await.map_err(|e| format!("finishing the rootfs: {e}"))?;
        let built = serde_json::to_vec(&Built { packages: packages.to_vec(), size_bytes: size }).expect("serializes");
        tokio::fs::write(root.join("built.json"), built).await.map_err(|e| format!("recording the build: {e}"))?;
        Ok(size)
    }

    /// Removes a template; the caller has checked no sandbox uses it.
    pub async fn remove(&self, id: &TemplateId) -> Result<(), NodeError> {
        if self.get(id).is_none() {
            return Err(NodeError::TemplateNotFound { id: id.to_string() });
        }
        if self.builds.lock().unwrap().contains_key(id) {
            return Err(NodeError::TemplateNotReady { id: id.to_string(), status: "building".into() });
        }
        let dir = self.dir.join(id.as_str());
        tokio::fs::remove_dir_all(&dir)
            .await
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| NodeError::Build { id: id.to_string(), detail: format!("removing {}: {e}", dir.display()) })?;
        self.records.lock().unwrap().remove(id);
        Ok(())
    }
}

/// Adds `base` to the owner and group of every file below `root` (idempotent: ids already at or
/// above `base` are left alone) and returns the tree's size in bytes.
fn shift_ownership(root: &Path, base: u32) -> std::io::Result<u64> {
    let mut size = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        size += md.blocks() * 512;
        if md.uid() < base || md.gid() < base {
            let uid = if md.uid() < base { md.uid() + base } else { md.uid() };
            let gid = if md.gid() < base { md.gid() + base } else { md.gid() };
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
            // chown clears set-id bits; put them back.
            if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(size)
}
