//! The `native` backend: Linux namespaces, cgroups, an overlay root filesystem over a quota-enforcing
//! layer store, seccomp and dropped capabilities. See `spawn.rs` for the order of the set-up steps.

pub mod cgroup;
pub mod checkpoint;
pub mod criu;
mod criu_rpc;
pub mod exit_watch;
pub mod network;
pub mod seccomp;
pub mod spawn;
pub mod storage;
mod vfork;
pub mod zygote;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use warren_types::SandboxId;

use crate::{Capabilities, ExitWatch, Handle, Runtime, RuntimeError, SandboxSpec, Stats};
use spawn::{SpawnRequest, SpawnResult, DIAL_DIR_IN_SANDBOX, SPAWN_ARG};

/// The agent's socket in a sandbox's dial directory.
const AGENT_SOCKET: &str = "agent.sock";

/// Settings of the native backend, taken from the daemon's config.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub uid_base: u32,
    pub uid_count: u32,
    pub storage_size_gb: u64,
    /// The static `warren-agent` binary bind-mounted into every sandbox.
    pub agent_binary: PathBuf,
    /// The executable that acts as the spawner when given `SPAWN_ARG` (the `warren` binary).
    pub spawner_exe: PathBuf,
    /// cgroup holding this daemon's sandboxes (below each controller root).
    pub cgroup_parent: String,
    /// Sandbox networking; loopback only when `None`.
    pub network: Option<network::NetworkSettings>,
    /// A working CRIU (≥ 4), for memory snapshots; `None` when this host has none.
    pub criu: Option<PathBuf>,
    /// Restores copy memory in lazily (a `criu lazy-pages` server per restore).
    pub lazy_pages: bool,
    /// Where memory images live (`<data_dir>/images`, shared with other backends).
    pub image_root: PathBuf,
    /// Set cgroup2's `favordynmods` at start (see [`cgroup::favor_migrations`]).
    pub favor_cgroup_migrations: bool,
}

pub struct NativeRuntime {
    settings: NativeSettings,
    /// Interface index of the sandbox bridge (with networking on).
    bridge_index: Option<u32>,
    cgroups: cgroup::Layout,
    layers: std::sync::Arc<storage::LayerStore>,
    zygote: Option<zygote::Zygote>,
    /// Sandboxes whose memory a lazy restore is still copying in.
    filling: std::sync::Arc<Filling>,
    /// Restores running now (see `restore_from`: the lazy mode is for one at a time).
    restoring: std::sync::atomic::AtomicUsize,
    /// Sockets bound for agents about to start, until the daemon takes them over
    /// ([`Runtime::take_agent_listener`]): a socket that exists before the agent dials saves the
    /// agent a failed dial and a retry on every boot.
    listeners: std::sync::Mutex<std::collections::HashMap<String, std::os::unix::net::UnixListener>>,
}

/// Counts a restore in [`NativeRuntime::restoring`] while it lives.
struct Restoring<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Restoring<'a> {
    /// Registers a restore; also returns how many others were running.
    fn begin(count: &'a std::sync::atomic::AtomicUsize) -> (Restoring<'a>, usize) {
        let others = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (Restoring(count), others)
    }
}

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Lazy restores in progress, by sandbox id. A dump waits for the sandbox's to end: CRIU saves
/// the pages it finds present, and a page still to come would be saved as a hole.
#[derive(Default)]
struct Filling {
    ids: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    done: std::sync::Condvar,
}

impl Filling {
    /// How long a dump waits for a sandbox's memory to be complete.
    const PATIENCE: Duration = Duration::from_secs(120);

    fn begin(&self, id: &str, ticket: u64) {
        self.ids.lock().unwrap().insert(id.to_owned(), ticket);
    }

    fn end(&self, id: &str, ticket: u64) {
        let mut ids = self.ids.lock().unwrap();
        if ids.get(id) == Some(&ticket) {
            ids.remove(id);
        }
        self.done.notify_all();
    }

    /// Waits until no lazy restore of `id` is in progress; false when it still is after
    /// [`Filling::PATIENCE`].
    fn wait(&self, id: &str) -> bool {
        let ids = self.ids.lock().unwrap();
        let (_ids, timeout) = self.done.wait_timeout_while(ids, Self::PATIENCE, |ids| ids.contains_key(id)).unwrap();
        !timeout.timed_out()
    }
}

const HANDLE_VERSION: u32 = 1;

impl NativeRuntime {
    pub fn new(settings: NativeSettings) -> Result<NativeRuntime, RuntimeError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(RuntimeError::HostUnsupported {
                backend: "native",
                reason: "it needs root (namespaces, cgroups, mounts); run `sudo warren serve`".into(),
            });
        }
        if !settings.agent_binary.is_file() {
            return Err(RuntimeError::HostUnsupported {
                backend: "native",
                reason: format!(
                    "the agent binary {} does not exist; build it with `cargo build --release -p warren-agent` \
                     or set native.agent_path",
                    settings.agent_binary.display()
                ),
            });
        }
        // Sandbox inits are re-parented to us when their spawner exits, so we can reap them and
        // learn how they ended.
        // SAFETY: plain prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if settings.favor_cgroup_migrations {
            match cgroup::favor_migrations(&settings.run_dir.join("cgroup2")) {
                Ok(cgroup::Migrations::AlreadyFavoured) => debug!("cgroup migrations already favoured (favordynmods)"),
                Ok(cgroup::Migrations::Favoured) => {
                    info!("turned on cgroup2 favordynmods: sandboxes join their cgroups without an RCU wait")
                }
                Err(e) => warn!(
                    error = %e,
                    "cannot turn on cgroup2 favordynmods; each sandbox start waits for an RCU grace period \
                     (set native.favor_cgroup_migrations = false to stop trying)"
                ),
            }
        }
        let cgroups = cgroup::Layout::detect(&settings.cgroup_parent)?;
        cgroups.prepare()?;
        let layers = std::sync::Arc::new(storage::LayerStore::open(&settings.data_dir, settings.storage_size_gb)?);
        let dir = settings.run_dir.join("sandboxes");
        fs::create_dir_all(&dir).map_err(|source| RuntimeError::Prepare {
            what: "run directory",
            path: dir,
            source,
        })?;
        let bridge_index = match &settings.network {
            Some(net) => {
                network::setup_host(net)?;
                Some(network::bridge_index(net)?)
            }
            None => None,
        };
        debug!(cgroup_version = cgroups.version(), "native runtime ready");
        Ok(NativeRuntime {
            settings,
            bridge_index,
            cgroups,
            layers,
            zygote: None,
            filling: Default::default(),
            restoring: Default::default(),
            listeners: Default::default(),
        })
    }

    /// Forks the spawner zygote, which saves an exec per sandbox. Without it (or if it dies) each
    /// sandbox is spawned by exec'ing `spawner_exe`.
    ///
    /// # Safety
    /// Call while the process is single-threaded (before any async runtime starts); checked.
    pub unsafe fn start_zygote(&mut self) -> std::io::Result<i32> {
        // SAFETY: forwarded to the caller.
        let z = unsafe { zygote::Zygote::start()? };
        let pid = z.pid();
        self.zygote = Some(z);
        Ok(pid)
    }

    /// The layer store, shared with other backends (one btrfs image holds every layer).
    pub fn layer_store(&self) -> std::sync::Arc<storage::LayerStore> {
        self.layers.clone()
    }

    pub fn cgroup_version(&self) -> u8 {
        self.cgroups.version()
    }

    /// The upper layer's root becomes the sandbox's `/`: owned by the sandbox's root, mode 0755,
    /// with its `/etc/resolv.conf` and `/etc/hosts` (with networking).
    fn prepare_upper(&self, spec: &SandboxSpec, upper: &std::path::Path) -> Result<(), RuntimeError> {
        let prep = |what: &'static str, path: PathBuf| move |source| RuntimeError::Prepare { what, path, source };
        let owner = Some(self.settings.uid_base);
        chown(upper, owner, owner).map_err(prep("writable layer", upper.to_path_buf()))?;
        fs::set_permissions(upper, fs::Permissions::from_mode(0o755))
            .map_err(prep("writable layer", upper.to_path_buf()))?;
        if let (Some(net), Some(addr)) = (&self.settings.network, spec.address) {
            network::write_etc(net, upper, spec.id.as_str(), addr, self.settings.uid_base)
                .map_err(prep("/etc/resolv.conf and /etc/hosts", upper.join("etc")))?;
        }
        Ok(())
    }

    /// The sandbox's run directory with its root's mount point and its dial directory (the agent
    /// dials the daemon there, see `spawn::DIAL_DIR_IN_SANDBOX`; the engine listens on the socket
    /// once the sandbox is up). Returns the three.
    fn prepare_run_dir(&self, id: &str) -> Result<(PathBuf, PathBuf, PathBuf), RuntimeError> {
        let prep = |what: &'static str, path: PathBuf| move |source| RuntimeError::Prepare { what, path, source };
        let run = self.run_dir(id);
        let mountpoint = run.join("rootfs");
        fs::create_dir_all(&mountpoint).map_err(prep("mount point", mountpoint.clone()))?;
        let dial_dir = run.join("dial");
        fs::create_dir_all(&dial_dir).map_err(prep("dial directory", dial_dir.clone()))?;
        // The sandbox's root alone may reach the daemon's socket: another user inside connecting
        // there would be handed requests meant for the agent (commands to run as root).
        let owner = Some(self.settings.uid_base);
        chown(&dial_dir, owner, owner).map_err(prep("dial directory", dial_dir.clone()))?;
        fs::set_permissions(&dial_dir, fs::Permissions::from_mode(0o700))
            .map_err(prep("dial directory", dial_dir.clone()))?;
        let socket = dial_dir.join(AGENT_SOCKET);
        let listener = crate::bind_agent_socket(&socket).map_err(prep("agent socket", socket.clone()))?;
        self.listeners.lock().unwrap().insert(id.to_owned(), listener);
        Ok((run, mountpoint, dial_dir))
    }

    /// The sandbox's network link, when networking is on and it has an address.
    fn link(&self, spec: &SandboxSpec) -> Option<network::SandboxLink> {
        match (&self.settings.network, spec.address, self.bridge_index) {
            (Some(n), Some(address), Some(bridge_index)) => Some(network::SandboxLink {
                host_veth: network::host_veth(spec.id.as_str()),
                bridge_index,
                address,
                prefix: n.prefix,
                gateway: n.gateway(),
            }),
            _ => None,
        }
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.settings.run_dir.join("sandboxes").join(id)
    }

    fn boot(&self, spec: &SandboxSpec, project_dir: &std::path::Path) -> Result<(i32, u64, PathBuf), RuntimeError> {
        let id = spec.id.as_str();
        let prep = |what: &'static str, path: PathBuf| move |source| RuntimeError::Prepare { what, path, source };
        let upper = project_dir.join("upper");
        let work = project_dir.join("work");
        self.prepare_upper(spec, &upper)?;
        let (run, mountpoint, dial_dir) = self.prepare_run_dir(id)?;
        let socket = dial_dir.join(AGENT_SOCKET);
        let log_path = run.join("agent.log");
        let log = fs::File::create(&log_path).map_err(prep("agent log", log_path.clone()))?;

        let req = SpawnRequest {
            hostname: id.to_owned(),
            lower: spec.layers.iter().chain([&spec.template_rootfs]).cloned().collect(),
            upper,
            work,
            mountpoint,
            agent_binary: self.settings.agent_binary.clone(),
            cgroup_procs: self.cgroups.sandbox(id).procs_files(),
            uid_base: self.settings.uid_base,
            uid_count: self.settings.uid_count,
            shm_size_bytes: spec.memory_mb * 1024 * 1024 / 2,
            env: vec![
                ("WARREN_SANDBOX_ID".into(), id.to_owned()),
                ("WARREN_AGENT_DIAL".into(), format!("{DIAL_DIR_IN_SANDBOX}/{AGENT_SOCKET}")),
                ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ],
            net: self.link(spec),
            dial_dir: Some(dial_dir),
        };
        if let Some(z) = &self.zygote {
            use std::os::fd::AsFd;
            match z.spawn(&req, log.as_fd()) {
                Ok(res) => return self.boot_result(spec, res, String::new(), socket),
                Err(e) => warn!(error = %e, "the spawner zygote failed; spawning by exec"),
            }
        }
        let mut cmd = Command::new(&self.settings.spawner_exe);
        cmd.arg(SPAWN_ARG).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = cmd.spawn().map_err(|source| RuntimeError::SpawnerExec { source })?;
        let body = serde_json::to_vec(&req).expect("spawn request serializes");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let write = stdin.write_all(&body);
        drop(stdin);
        let mut out = String::new();
        let _ = child.stdout.take().expect("piped stdout").read_to_string(&mut out);
        let status = child.wait().map_err(|source| RuntimeError::SpawnerExec { source })?;
        write.map_err(|e| RuntimeError::Boot {
            id: spec.id.clone(),
            detail: format!("sending the spawn request: {e}"),
        })?;
        let res: SpawnResult = serde_json::from_str(&out).map_err(|_| RuntimeError::Boot {
            id: spec.id.clone(),
            detail: format!("the spawner exited with {status} and said {out:?}"),
        })?;
        self.boot_result(spec, res, out, socket)
    }

    fn boot_result(
        &self,
        spec: &SandboxSpec,
        res: SpawnResult,
        raw: String,
        socket: PathBuf,
    ) -> Result<(i32, u64, PathBuf), RuntimeError> {
        let boot_err = |detail: String| RuntimeError::Boot { id: spec.id.clone(), detail };
        match (res.pid, res.start_time, res.error) {
            (Some(pid), Some(start), None) => Ok((pid, start, socket)),
            (_, _, Some(e)) => Err(boot_err(e)),
            _ => Err(boot_err(format!("the spawner answered {raw:?}"))),
        }
    }
}

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            freeze: true,
            hibernate: self.settings.criu.is_some(),
            pause_to_disk: false,
            memory_snapshots: self.settings.criu.is_some(),
            filesystem_snapshots: false,
            network: self.settings.network.is_some(),
        }
    }

    fn create(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let id = spec.id.as_str();
        let cg = self.cgroups.sandbox(id);
        let t0 = Instant::now();
        let result = (|| {
            cg.create(cgroup::Limits {
                cpu_count: spec.cpu_count,
                memory_bytes: spec.memory_mb * 1024 * 1024,
                pids_max: spec.pids_max,
            })?;
            let t1 = Instant::now();
            let (dir, project) = self.layers.create(id, spec.disk_mb * 1024 * 1024)?;
            let t2 = Instant::now();
            let (pid, start_time, agent_socket) = self.boot(spec, &dir)?;
            debug!(
                cgroup_us = (t1 - t0).as_micros() as u64,
                layer_us = (t2 - t1).as_micros() as u64,
                boot_us = t2.elapsed().as_micros() as u64,
                "sandbox created"
            );
            Ok(Handle {
                version: HANDLE_VERSION,
                pid,
                start_time,
                agent_socket,
                project_id: project,
                agent_dials: true,
                backend: "native".into(),
            })
        })();
        if result.is_err() {
            let _ = self.destroy(&spec.id, None);
        }
        result
    }

    fn take_agent_listener(&self, id: &SandboxId) -> Option<std::os::unix::net::UnixListener> {
        self.listeners.lock().unwrap().remove(id.as_str())
    }

    fn stop(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        // Init's death takes its whole pid namespace with it.
        if let Some(h) = handle {
            if let Ok(w) = ExitWatch::open(h.pid, h.start_time) {
                w.kill().map_err(|source| RuntimeError::Signal { id: id.clone(), source })?;
            }
        }
        let cg = self.cgroups.sandbox(id.as_str());
        // Frozen tasks do not die until thawed; a sandbox that was never frozen has nothing to thaw.
        let _ = cg.thaw_quietly();
        Ok(())
    }

    fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        self.halt(id, handle)?;
        let image = self.settings.image_root.join(id.as_str());
        if let Err(e) = fs::remove_dir_all(&image) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(sandbox = %id, error = %e, "removing its memory image");
            }
        }
        self.layers.remove(id.as_str())
    }

    fn halt(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        if let Some(h) = handle {
            if let Ok(w) = ExitWatch::open(h.pid, h.start_time) {
                w.kill().map_err(|source| RuntimeError::Signal { id: id.clone(), source })?;
            }
        }
        // Its pid namespace dies with init, and with it the mounts and the network namespace
        // (and so the veth pair); the cgroup goes once its tasks are gone.
        let cg = self.cgroups.sandbox(id.as_str());
        cg.kill_and_remove(Duration::from_secs(10))?;
        if self.settings.network.is_some() {
            if let Err(e) = network::delete_veth(id.as_str()) {
                warn!(sandbox = %id, error = %e, "deleting its veth; the kernel removes it with its namespace");
            }
        }
        self.listeners.lock().unwrap().remove(id.as_str());
        let run = self.run_dir(id.as_str());
        if let Err(e) = fs::remove_dir_all(&run) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(sandbox = %id, error = %e, "removing run directory");
            }
        }
        Ok(())
    }

    fn set_egress(
        &self,
        _id: &SandboxId,
        handle: &Handle,
        allow: &[(std::net::Ipv4Addr, u8)],
        deny: &[(std::net::Ipv4Addr, u8)],
    ) -> Result<(), RuntimeError> {
        if self.settings.network.is_none() {
            return Err(RuntimeError::Unsupported { backend: "native", op: "apply egress rules without networking" });
        }
        network::set_egress(handle.pid, allow, deny)
    }

    fn set_cpu(&self, id: &SandboxId, cpu_count: u32) -> Result<(), RuntimeError> {
        self.cgroups.sandbox(id.as_str()).set_cpu(cpu_count)
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.cgroups.sandbox(id.as_str()).freeze()
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.cgroups.sandbox(id.as_str()).thaw()
    }

    fn stats(&self, id: &SandboxId, handle: &Handle) -> Result<Stats, RuntimeError> {
        let mut s = Stats::default();
        self.cgroups.sandbox(id.as_str()).stats(&mut s);
        s.disk_used_bytes =
            self.layers.used_by_subvolume(handle.project_id).unwrap_or_else(|| self.layers.used(id.as_str()));
        Ok(s)
    }

    fn sample(&self, id: &SandboxId, handle: &Handle, with_cache: bool) -> Result<Stats, RuntimeError> {
        let mut s = Stats::default();
        self.cgroups.sandbox(id.as_str()).sample(&mut s, with_cache);
        s.disk_used_bytes =
            self.layers.used_by_subvolume(handle.project_id).unwrap_or_else(|| self.layers.used(id.as_str()));
        Ok(s)
    }

    fn reattach(&self, _id: &SandboxId, handle: &Handle) -> Option<ExitWatch> {
        if handle.version != HANDLE_VERSION {
            return None;
        }
        ExitWatch::open(handle.pid, handle.start_time).ok()
    }

    fn watch(&self, id: &SandboxId, handle: &Handle) -> Result<ExitWatch, RuntimeError> {
        ExitWatch::open(handle.pid, handle.start_time).map_err(|e| RuntimeError::Boot {
            id: id.clone(),
            detail: format!("its init vanished right after start: {e}"),
        })
    }

    fn sweep(&self, live: &[SandboxId]) -> Vec<SandboxId> {
        let started = Instant::now();
        let is_live = |name: &str| live.iter().any(|l| l.as_str() == name);
        let mut found: Vec<String> = self.cgroups.list();
        found.extend(self.layers.list());
        if let Ok(rd) = fs::read_dir(self.settings.run_dir.join("sandboxes")) {
            found.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
        }
        found.sort();
        found.dedup();
        let mut swept = Vec::new();
        for name in found.into_iter().filter(|n| !is_live(n)) {
            let Ok(id) = SandboxId::parse(&name) else { continue };
            match self.destroy(&id, None) {
                Ok(()) => swept.push(id),
                Err(e) => warn!(sandbox = %id, error = %e, "sweeping leftovers failed"),
            }
        }
        debug!(count = swept.len(), elapsed_ms = started.elapsed().as_millis() as u64, "swept leftovers");
        swept
    }

    fn freeze_layer(&self, id: &SandboxId, layer: &str) -> Result<PathBuf, RuntimeError> {
        self.layers.freeze(id.as_str(), layer)
    }

    fn layer_path(&self, layer: &str) -> PathBuf {
        self.layers.frozen_layer(layer)
    }

    fn remove_layer(&self, layer: &str) -> Result<(), RuntimeError> {
        self.layers.remove_frozen(layer)
    }

    fn layers(&self) -> Vec<String> {
        self.layers.frozen_layers()
    }

    fn log_tail(&self, id: &SandboxId, max_bytes: u64) -> (Vec<u8>, bool) {
        crate::log_tail(&self.run_dir(id.as_str()).join("agent.log"), max_bytes)
    }

    fn checkpoint(&self, id: &SandboxId, handle: &Handle) -> Result<u64, RuntimeError> {
        let criu = self.criu()?;
        self.memory_complete(id)?;
        let image = self.settings.image_root.join(id.as_str());
        let started = Instant::now();
        let meta = checkpoint::dump(criu, handle.pid, &image, self.dump_network(handle.pid), None)
            .map_err(|detail| RuntimeError::Checkpoint { id: id.clone(), detail })?;
        let dumped_ms = started.elapsed().as_millis() as u64;
        // The agent's log goes with the image: the restored agent carries on writing it (CRIU
        // checks that the file is as long as when it was saved).
        let log = self.run_dir(id.as_str()).join("agent.log");
        if let Err(e) = fs::copy(&log, image.join(checkpoint::AGENT_LOG)) {
            // CRIU has ended the processes already, so the pause must not fail here: a sparse
            // file as long as the log stands in for it (CRIU checks only the length), and only
            // the log's text is lost.
            let len = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let placeholder = fs::File::create(image.join(checkpoint::AGENT_LOG)).and_then(|f| f.set_len(len));
            warn!(sandbox = %id, error = %e, kept_length = placeholder.is_ok(), "the agent's log could not be saved with the image");
        }
        // CRIU ended the processes; what they held (cgroup, veth, run directory) goes too. The
        // writable layer and the image stay for the restore.
        self.halt(id, None)?;
        debug!(sandbox = %id, dumped_ms, memory_bytes = meta.bytes, "sandbox saved with CRIU");
        Ok(checkpoint::dir_bytes(&image))
    }

    fn restore(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let image = self.settings.image_root.join(spec.id.as_str());
        let result = self.restore_from(spec, &image, false);
        if result.is_err() {
            // Keep the layer and the image: the wake can be tried again, or the sandbox killed.
            let _ = self.halt(&spec.id, None);
        }
        result
    }

    fn checkpoint_copy(&self, id: &SandboxId, handle: &Handle, image: &str) -> Result<u64, RuntimeError> {
        let criu = self.criu()?;
        self.memory_complete(id)?;
        let dir = self.copy_image(image);
        let freezer = self.cgroups.sandbox(id.as_str()).freezer_dir();
        let fail = |detail: String| RuntimeError::Checkpoint { id: id.clone(), detail };
        checkpoint::dump(criu, handle.pid, &dir, self.dump_network(handle.pid), Some(&freezer)).map_err(fail)?;
        let log = self.run_dir(id.as_str()).join("agent.log");
        if let Err(e) = fs::copy(&log, dir.join(checkpoint::AGENT_LOG)) {
            let _ = fs::remove_dir_all(&dir);
            return Err(fail(format!("saving its agent log: {e}")));
        }
        Ok(checkpoint::dir_bytes(&dir))
    }

    fn restore_copy(&self, spec: &SandboxSpec, image: &str) -> Result<Handle, RuntimeError> {
        let result = self.restore_from(spec, &self.copy_image(image), true);
        if result.is_err() {
            // A clone that did not start leaves nothing behind, as a failed create.
            let _ = self.destroy(&spec.id, None);
        }
        result
    }

    fn remove_image(&self, image: &str) {
        if let Err(e) = fs::remove_dir_all(self.copy_image(image)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(image, error = %e, "removing a fork's memory image");
            }
        }
    }

    fn images(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.settings.image_root) else { return Vec::new() };
        rd.flatten()
            .filter(|e| e.path().join(checkpoint::META_FILE).is_file())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("copy-")).map(str::to_owned))
            .collect()
    }
}

impl NativeRuntime {
    fn criu(&self) -> Result<&std::path::Path, RuntimeError> {
        self.settings.criu.as_deref().ok_or(RuntimeError::Unsupported {
            backend: "native",
            op: "save a sandbox's memory without a working CRIU (see the daemon's start-up log)",
        })
    }

    /// Waits until a lazy restore of `id` has all its memory in (a dump must not see holes).
    fn memory_complete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        if self.filling.wait(id.as_str()) {
            return Ok(());
        }
        Err(RuntimeError::Checkpoint {
            id: id.clone(),
            detail: format!(
                "its memory is still being restored after {} s; try again later",
                Filling::PATIENCE.as_secs()
            ),
        })
    }

    /// What a dump records of the sandbox's network: whether it has one, and `eth0`'s address.
    fn dump_network(&self, pid: i32) -> Option<Option<std::net::Ipv4Addr>> {
        self.settings.network.as_ref()?;
        Some(network::in_namespaces_of(pid, &["net"], || Ok(network::eth0_address())).ok().flatten())
    }

    /// Where the memory image `image` of a fork or snapshot lives.
    fn copy_image(&self, image: &str) -> PathBuf {
        self.settings.image_root.join(format!("copy-{image}"))
    }

    /// Starts the sandbox `spec` from the CRIU image `image`, on its writable layer. A `copy` is
    /// another sandbox's image (a fork's clone): the clone gets its own address, hostname and
    /// `/etc/hosts` before its network is connected.
    fn restore_from(&self, spec: &SandboxSpec, image: &std::path::Path, copy: bool) -> Result<Handle, RuntimeError> {
        let criu = self.criu()?;
        let id = spec.id.as_str();
        let fail = |detail: String| RuntimeError::Restore { id: spec.id.clone(), detail };
        let prep = |what: &'static str, path: PathBuf| move |source| RuntimeError::Prepare { what, path, source };
        let started = Instant::now();
        // A lazy restore answers sooner but costs more CPU in all (a second CRIU process, every
        // page copied twice): worth it for a wake, whose first answer is waited for, not for a
        // fork of many clones or a pool's refill, where the CPU is what all of them wait for.
        let (_restoring, others) = Restoring::begin(&self.restoring);
        let lazily = self.settings.lazy_pages && others == 0;
        let cg = self.cgroups.sandbox(id);
        cg.create(cgroup::Limits {
            cpu_count: spec.cpu_count,
            memory_bytes: spec.memory_mb * 1024 * 1024,
            pids_max: spec.pids_max,
        })?;
        let (dir, project) = self.layers.create(id, spec.disk_mb * 1024 * 1024)?;
        let link = self.link(spec);
        if copy {
            // A clone's own layer is empty: its root and its name and address files, as a boot's.
            self.prepare_upper(spec, &dir.join("upper"))?;
        }
        let (run, mountpoint, dial_dir) = self.prepare_run_dir(id)?;
        let log_path = run.join("agent.log");
        fs::copy(image.join(checkpoint::AGENT_LOG), &log_path)
            .map_err(|e| fail(format!("its image holds no agent log ({e}); the image is incomplete")))?;
        let log = fs::OpenOptions::new().append(true).open(&log_path).map_err(prep("agent log", log_path.clone()))?;
        // CRIU reopens the inherited log from inside the restored sandbox, as its root.
        chown(&log_path, Some(self.settings.uid_base), Some(self.settings.uid_base))
            .map_err(prep("agent log", log_path.clone()))?;
        let lower: Vec<PathBuf> = spec.layers.iter().chain([&spec.template_rootfs]).cloned().collect();
        let prepared_ms = started.elapsed().as_millis() as u64;
        let image_address = checkpoint::ImageMeta::read(image).ok().and_then(|m| m.address);
        let egress = spec.egress.clone().filter(|e| !e.allow.is_empty() || !e.deny.is_empty());
        // A leftover of an earlier try would hold the names.
        let _ = network::delete_veth(id);
        let work_dir = run.clone();
        let restored = checkpoint::restore(
            &checkpoint::RestoreRequest {
                criu,
                image,
                overlay_options: spawn::overlay_options(&lower, &dir.join("upper"), &dir.join("work")),
                mountpoint: &mountpoint,
                cgroup_procs: &cg.procs_files(),
                agent_binary: &self.settings.agent_binary,
                dial_dir: &dial_dir,
                log: &log,
                network: link.is_some(),
                work_dir: &work_dir,
                lazy: lazily,
            },
            |stage| match stage {
                checkpoint::RestoreStage::NamespacesReady(pid) => {
                    let Some(l) = &link else { return Ok(()) };
                    network::create_detached_veth(id, pid).map_err(|e| format!("creating its veth pair: {e}"))?;
                    // A clone's sockets may be bound to its source's address: it has that one
                    // too until its tasks are back.
                    let alias = image_address.filter(|a| *a != l.address);
                    network::in_namespaces_of(pid, &["net"], || {
                        spawn::loopback_up()?;
                        spawn::eth0_up(l)?;
                        if let Some(a) = alias {
                            network::add_source_alias(a, l.prefix)?;
                        }
                        match &egress {
                            Some(e) => network::apply_egress_here(&e.allow, &e.deny),
                            None => Ok(()),
                        }
                    })
                }
                checkpoint::RestoreStage::Restored(pid) => {
                    let alias = link.as_ref().and_then(|l| image_address.filter(|a| *a != l.address));
                    if copy || alias.is_some() {
                        // A clone woke up with its source's name (the source's id).
                        network::in_namespaces_of(pid, &["net", "uts"], || {
                            if alias.is_some() {
                                network::remove_source_alias()?;
                            }
                            nix::unistd::sethostname(id).map_err(|e| format!("setting its hostname: {e}"))
                        })?;
                    }
                    match &link {
                        Some(l) => network::attach_veth(id, l.bridge_index)
                            .map_err(|e| format!("putting its veth on the bridge: {e}")),
                        None => Ok(()),
                    }
                }
            },
        );
        let (pid, lazy) = match restored {
            Ok(restored) => restored,
            Err(detail) => {
                if !copy {
                    // A failed wake's log stays with the image (the run directory goes).
                    let _ = fs::copy(run.join(checkpoint::RESTORE_LOG), image.join(checkpoint::RESTORE_LOG));
                }
                return Err(fail(detail));
            }
        };
        let start_time = spawn::read_start_time(pid).ok_or_else(|| fail(format!("its init {pid} vanished at once")))?;
        if let Some(lazy) = lazy {
            // Memory that cannot be completed must not be seen: the kernel would hand the tasks
            // zero-filled pages where theirs are missing. Such a sandbox is ended.
            let init = ExitWatch::open(pid, start_time).map_err(|e| fail(format!("watching its init {pid}: {e}")))?;
            let sandbox = spec.id.clone();
            let filling = self.filling.clone();
            let ticket = start_time ^ (u64::from(pid.unsigned_abs()) << 40);
            filling.begin(id, ticket);
            let spawned = std::thread::Builder::new().name("lazy-pages".into()).spawn({
                let filling = filling.clone();
                move || {
                    if let Err(why) = lazy.wait() {
                        if !init.has_exited() {
                            tracing::error!(%sandbox, %why, "the restored sandbox's memory could not be completed; ending it");
                            let _ = init.kill();
                        }
                    }
                    filling.end(sandbox.as_str(), ticket);
                }
            });
            if let Err(e) = spawned {
                filling.end(id, ticket);
                return Err(fail(format!("a thread for its lazy pages: {e}")));
            }
        }
        debug!(sandbox = %id, copy, lazily, prepared_ms, elapsed_ms = started.elapsed().as_millis() as u64, "sandbox restored with CRIU");
        Ok(Handle {
            version: HANDLE_VERSION,
            pid,
            start_time,
            agent_socket: dial_dir.join(AGENT_SOCKET),
            project_id: project,
            agent_dials: true,
            backend: "native".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_knows_how_many_others_run_beside_it() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let (first, alone) = Restoring::begin(&count);
        let (second, beside) = Restoring::begin(&count);
        assert_eq!((alone, beside), (0, 1));
        drop(first);
        drop(second);
        assert_eq!(Restoring::begin(&count).1, 0, "ended restores are not counted");
    }

    #[test]
    fn a_dump_waits_for_the_lazy_restore_of_its_sandbox_only() {
        let filling = std::sync::Arc::new(Filling::default());
        assert!(filling.wait("a"), "nothing in progress: no wait");
        filling.begin("a", 1);
        filling.begin("b", 2);
        let f = filling.clone();
        let ender = std::thread::spawn(move || f.end("a", 1));
        assert!(filling.wait("a"));
        ender.join().unwrap();
        // An older restore's end does not end a newer one of the same sandbox.
        filling.begin("b", 3);
        filling.end("b", 2);
        assert!(filling.ids.lock().unwrap().contains_key("b"));
        filling.end("b", 3);
        assert!(filling.wait("b"));
    }
}
