//! The `gvisor` backend: the same sandbox as `native` (template root filesystem under a
//! quota-limited writable layer, CPU/memory/pids limits, the agent as PID 1, root mapped to the
//! same unprivileged host uid range) run inside `runsc`, whose user-space kernel stands between
//! the sandbox and the host's.
//!
//! What differs, and why:
//! - The overlay is mounted on the host (runsc's gofer serves it), not inside the sandbox.
//! - The agent dials the daemon on a host socket bind-mounted into the sandbox: gVisor cannot
//!   accept on a host socket handed in, only connect out (`--host-uds=open`).
//! - No network but loopback: runsc on these hosts refuses its own network stack inside a network
//!   namespace and host networking would be no isolation (docs/runtimes.md).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::runtime as oci;
use tracing::{debug, warn};
use warren_types::SandboxId;

use crate::native::{cgroup, spawn::read_start_time, storage::LayerStore};
use crate::{Capabilities, ExitWatch, Handle, Runtime, RuntimeError, SandboxSpec, Stats};

/// Settings of the gVisor backend, taken from the daemon's config.
#[derive(Debug, Clone)]
pub struct GvisorSettings {
    pub run_dir: PathBuf,
    /// The `runsc` executable.
    pub runsc: PathBuf,
    /// runsc's platform (`systrap` or `ptrace` on hosts without hardware virtualisation).
    pub platform: String,
    pub uid_base: u32,
    pub uid_count: u32,
    pub agent_binary: PathBuf,
    /// cgroup (under each controller's root) holding this daemon's gVisor sandboxes.
    pub cgroup_parent: String,
    /// Compress memory images (smaller on disk, slower to take and to restore).
    pub compress_images: bool,
    /// runsc's debug logs go here when set (`--debug-log`, one file per call and process).
    pub debug_log: Option<PathBuf>,
    /// Memory images: sandboxes paused to disk (`<id>/`) and copies for forks and snapshots
    /// (`copy-<name>/`).
    pub image_root: PathBuf,
}

pub struct GvisorRuntime {
    settings: GvisorSettings,
    layers: Arc<LayerStore>,
    cgroups: cgroup::Layout,
}

const HANDLE_VERSION: u32 = 1;
/// Where the agent binary and the daemon's socket directory appear inside the sandbox.
const AGENT_IN_SANDBOX: &str = "/.warren/warren-agent";
const SOCKET_DIR_IN_SANDBOX: &str = "/.warren/run";
const SOCKET_NAME: &str = "agent.sock";

fn prep(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Prepare { what, path, source }
}

impl GvisorRuntime {
    /// Checks that runsc is there and runs, and shares the native backend's layer store (one
    /// btrfs image holds every writable and frozen layer, whichever runtime uses it).
    pub fn new(settings: GvisorSettings, layers: Arc<LayerStore>) -> Result<GvisorRuntime, RuntimeError> {
        let unsupported = |reason: String| RuntimeError::HostUnsupported { backend: "gvisor", reason };
        let out = Command::new(&settings.runsc).arg("--version").output().map_err(|e| {
            unsupported(format!(
                "cannot run {} ({e}); install it with scripts/deps.sh or set gvisor.runsc",
                settings.runsc.display()
            ))
        })?;
        if !out.status.success() {
            return Err(unsupported(format!("`{} --version` exited with {}", settings.runsc.display(), out.status)));
        }
        if !settings.agent_binary.is_file() {
            return Err(unsupported(format!("the agent binary {} does not exist", settings.agent_binary.display())));
        }
        let cgroups = cgroup::Layout::detect(&settings.cgroup_parent)?;
        cgroups.prepare()?;
        for dir in [settings.run_dir.join("state"), settings.run_dir.join("sandboxes")] {
            fs::create_dir_all(&dir).map_err(prep("gVisor run directory", &dir))?;
        }
        let version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned();
        debug!(%version, platform = %settings.platform, "gvisor runtime ready");
        Ok(GvisorRuntime { settings, layers, cgroups })
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.settings.run_dir.join("sandboxes").join(id)
    }

    /// runsc with the flags every call must repeat (a restore must match the run's).
    fn runsc(&self) -> Command {
        let mut cmd = Command::new(&self.settings.runsc);
        cmd.arg(format!("--root={}", self.settings.run_dir.join("state").display()))
            .arg("--network=none")
            .arg("--host-uds=open")
            // Files written inside go straight to the sandbox's writable layer on the host (not
            // to a gVisor-private overlay): its quota, forks, snapshots and pauses to disk see
            // them as files.
            .arg("--overlay2=none")
            .arg(format!("--platform={}", self.settings.platform))
            .stdin(Stdio::null());
        if let Some(dir) = &self.settings.debug_log {
            // runsc expands %ID%, %COMMAND% and %TIMESTAMP% in the name.
            cmd.arg("--debug").arg(format!("--debug-log={}/%ID%.%COMMAND%.%TIMESTAMP%.log", dir.display()));
        }
        cmd
    }

    /// Runs a runsc subcommand to its end; its stderr becomes the error.
    fn runsc_ok(&self, id: &SandboxId, args: &[&str]) -> Result<(), RuntimeError> {
        let out = self.runsc().args(args).output().map_err(|source| RuntimeError::SpawnerExec { source })?;
        if out.status.success() {
            return Ok(());
        }
        Err(RuntimeError::Boot {
            id: id.clone(),
            detail: format!("runsc {} failed: {}", args[0], String::from_utf8_lossy(&out.stderr).trim()),
        })
    }

    /// The bundle runsc starts `spec` from, with `cpus` as its CPU quota.
    fn write_bundle(&self, spec: &SandboxSpec, dir: &Path, cpus: u32) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        let bad =
            |e: oci_spec::OciSpecError| RuntimeError::Boot { id: spec.id.clone(), detail: format!("OCI spec: {e}") };
        let caps: std::collections::HashSet<oci::Capability> = crate::native::spawn::KEPT_CAPS
            .iter()
            .map(|c| serde_json::from_value(serde_json::Value::String(c.to_string())).expect("a Linux capability"))
            .collect();
        // The same set as native sandboxes; none inheritable or ambient (the agent's children
        // gain nothing by exec).
        let capabilities = oci::LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(oci::Capabilities::new())
            .ambient(oci::Capabilities::new())
            .build()
            .map_err(bad)?;
        let process = oci::ProcessBuilder::default()
            .terminal(false)
            .user(oci::UserBuilder::default().uid(0u32).gid(0u32).build().map_err(bad)?)
            .args(vec![AGENT_IN_SANDBOX.to_owned()])
            .env(vec![
                format!("WARREN_SANDBOX_ID={id}"),
                format!("WARREN_AGENT_DIAL={SOCKET_DIR_IN_SANDBOX}/{SOCKET_NAME}"),
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ])
            .cwd("/")
            .no_new_privileges(true)
            .capabilities(capabilities)
            .rlimits(vec![oci::PosixRlimitBuilder::default()
                .typ(oci::PosixRlimitType::RlimitNofile)
                .soft(1024u64 * 1024)
                .hard(1024u64 * 1024)
                .build()
                .map_err(bad)?])
            .build()
            .map_err(bad)?;
        let mount = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
            oci::MountBuilder::default()
                .destination(dest)
                .typ(typ)
                .source(src)
                .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
        };
        let tmp_size = format!("size={}k", spec.memory_mb * 1024 / 2);
        let mounts = vec![
            mount("/proc", "proc", "proc", &[]).map_err(bad)?,
            mount("/dev/shm", "tmpfs", "shm", &["nosuid", "nodev", "noexec", "mode=1777"]).map_err(bad)?,
            mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777", &tmp_size]).map_err(bad)?,
            mount(AGENT_IN_SANDBOX, "bind", &self.settings.agent_binary.display().to_string(), &["bind", "ro"])
                .map_err(bad)?,
            mount(SOCKET_DIR_IN_SANDBOX, "bind", &dir.join("uds").display().to_string(), &["bind", "ro"])
                .map_err(bad)?,
        ];
        let ns = |t: oci::LinuxNamespaceType| oci::LinuxNamespaceBuilder::default().typ(t).build();
        let map =
            |c: u32, h: u32, n: u32| oci::LinuxIdMappingBuilder::default().container_id(c).host_id(h).size(n).build();
        let period = 100_000u64;
        let resources = oci::LinuxResourcesBuilder::default()
            .memory(
                oci::LinuxMemoryBuilder::default()
                    .limit((spec.memory_mb * 1024 * 1024) as i64)
                    .swap((spec.memory_mb * 1024 * 1024) as i64)
                    .build()
                    .map_err(bad)?,
            )
            .cpu(
                oci::LinuxCpuBuilder::default()
                    .quota(cpus as i64 * period as i64)
                    .period(period)
                    .build()
                    .map_err(bad)?,
            )
            .pids(oci::LinuxPidsBuilder::default().limit(spec.pids_max as i64).build().map_err(bad)?)
            .build()
            .map_err(bad)?;
        let linux = oci::LinuxBuilder::default()
            .namespaces(vec![
                ns(oci::LinuxNamespaceType::Pid).map_err(bad)?,
                ns(oci::LinuxNamespaceType::Ipc).map_err(bad)?,
                ns(oci::LinuxNamespaceType::Uts).map_err(bad)?,
                ns(oci::LinuxNamespaceType::Mount).map_err(bad)?,
                ns(oci::LinuxNamespaceType::Network).map_err(bad)?,
                ns(oci::LinuxNamespaceType::User).map_err(bad)?,
            ])
            .uid_mappings(vec![map(0, self.settings.uid_base, self.settings.uid_count).map_err(bad)?])
            .gid_mappings(vec![map(0, self.settings.uid_base, self.settings.uid_count).map_err(bad)?])
            .resources(resources)
            .cgroups_path(PathBuf::from(format!("/{}/{id}", self.settings.cgroup_parent)))
            .build()
            .map_err(bad)?;
        let root = oci::RootBuilder::default().path(dir.join("rootfs")).readonly(false).build().map_err(bad)?;
        let config = oci::SpecBuilder::default()
            .version("1.0.2")
            .hostname(id)
            .process(process)
            .root(root)
            .mounts(mounts)
            .linux(linux)
            .build()
            .map_err(bad)?;
        let bundle = dir.join("bundle");
        fs::create_dir_all(&bundle).map_err(prep("bundle", &bundle))?;
        let body = serde_json::to_vec_pretty(&config).expect("OCI spec serializes");
        fs::write(bundle.join("config.json"), body).map_err(prep("bundle", &bundle))
    }

    /// Where the image `name` lives (a sandbox id, or `copy-<name>` for forks and snapshots):
    /// outside the quota-limited layers (a large memory never fails on the disk quota) and
    /// outside the layer store, on the data directory's own filesystem (the layer store may sit
    /// on a loop file, whose double page cache and writeback slowed pauses). An image an older
    /// Warren kept in the layer store is found there while it is only there.
    fn image_path(&self, name: &str) -> PathBuf {
        let path = self.settings.image_root.join(name);
        let legacy = self.legacy_image_root().join(name);
        if !path.exists() && legacy.exists() {
            legacy
        } else {
            path
        }
    }

    fn legacy_image_root(&self) -> PathBuf {
        self.layers.root().join(".checkpoints")
    }

    /// Names under both image roots.
    fn image_names(&self) -> Vec<(String, PathBuf)> {
        let mut names = Vec::new();
        for root in [self.settings.image_root.clone(), self.legacy_image_root()] {
            if let Ok(rd) = fs::read_dir(&root) {
                names.extend(rd.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())));
            }
        }
        names
    }

    /// Removes `name` from both image roots.
    fn remove_image_dir(&self, name: &str) -> std::io::Result<()> {
        let mut result = Ok(());
        for root in [self.settings.image_root.clone(), self.legacy_image_root()] {
            if let Err(e) = fs::remove_dir_all(root.join(name)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Runs `runsc checkpoint` into `image` (emptied first); returns the image's size. The agent
    /// must hold no host connection (the engine quiesces it): runsc cannot save one, and a failed
    /// save leaves the sandbox broken.
    fn checkpoint_into(&self, id: &SandboxId, image: &Path, leave_running: bool) -> Result<u64, RuntimeError> {
        let _ = fs::remove_dir_all(image);
        fs::create_dir_all(image).map_err(prep("checkpoint image", image))?;
        let failed = |detail: String| {
            let _ = fs::remove_dir_all(image);
            RuntimeError::Checkpoint { id: id.clone(), detail }
        };
        let mut cmd = self.runsc();
        cmd.arg("checkpoint").arg(format!("--image-path={}", image.display()));
        // Untouched-but-committed pages are skipped either way; compression costs about as much
        // time on restore as reading the pages does (a wake waits for both).
        cmd.arg("--exclude-committed-zero-pages");
        if !self.settings.compress_images {
            cmd.arg("--compression=none");
        }
        if leave_running {
            cmd.arg("--leave-running");
        }
        let out = cmd.arg(id.as_str()).output().map_err(|source| RuntimeError::SpawnerExec { source })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no reason given").to_owned();
            return Err(failed(format!("runsc checkpoint exited with {}: {first}", out.status)));
        }
        Ok(fs::read_dir(image)
            .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0))
    }

    /// Where the image `name` of a fork lives.
    fn copy_dir(&self, name: &str) -> PathBuf {
        self.image_path(&format!("copy-{name}"))
    }

    /// Prepares the layer and the host-side overlay, then starts runsc (`run`, or `restore` from
    /// `image`). Returns the sandbox process's pid.
    fn boot(&self, spec: &SandboxSpec, layer_dir: &Path, image: Option<&Path>) -> Result<i32, RuntimeError> {
        let id = spec.id.as_str();
        let uid = self.settings.uid_base;
        let upper = layer_dir.join("upper");
        chown(&upper, Some(uid), Some(uid)).map_err(prep("writable layer", &upper))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(prep("writable layer", &upper))?;
        // Mount points of the agent and its socket, made here so runsc need not create them
        // (they then belong to the sandbox's root like the rest of its files).
        let warren = upper.join(".warren");
        fs::create_dir_all(warren.join("run")).map_err(prep("agent mount point", &warren))?;
        if !warren.join("warren-agent").exists() {
            fs::File::create(warren.join("warren-agent")).map_err(prep("agent mount point", &warren))?;
        }
        for p in [warren.clone(), warren.join("run"), warren.join("warren-agent")] {
            chown(&p, Some(uid), Some(uid)).map_err(prep("agent mount point", &p))?;
        }

        let dir = self.sandbox_dir(id);
        let rootfs = dir.join("rootfs");
        let uds = dir.join("uds");
        for d in [&rootfs, &uds] {
            fs::create_dir_all(d).map_err(prep("sandbox directory", d))?;
        }
        let lower: Vec<String> =
            spec.layers.iter().chain([&spec.template_rootfs]).map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            layer_dir.join("work").display()
        );
        if !is_mountpoint(&rootfs) {
            nix::mount::mount(
                Some("overlay"),
                &rootfs,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(|e| prep("overlay root filesystem", &rootfs)(std::io::Error::from(e)))?;
        }
        // A restore is the runtime's work, not the sandbox's: loading its memory runs on every
        // CPU (runsc's page loaders are parallel, and go on after `runsc restore` returns), and
        // the sandbox's own quota made a wake of 256 MiB 1.3x slower than runsc restoring it
        // unconfined. The engine lowers the quota to the sandbox's once its agent answers.
        let cpus = match image {
            Some(_) => spec.cpu_count.max(host_cpus()),
            None => spec.cpu_count,
        };
        self.write_bundle(spec, &dir, cpus)?;

        let log_path = dir.join("agent.log");
        let log =
            fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(prep("agent log", &log_path))?;
        let pid_file = dir.join("pid");
        let _ = fs::remove_file(&pid_file);
        // runsc hands its stdio to the agent (its log); the sandbox keeps them open, so runsc's
        // own complaints land there too and are read back from there.
        let start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.runsc();
        match image {
            None => cmd.arg("run"),
            Some(img) => cmd.arg("restore").arg(format!("--image-path={}", img.display())),
        };
        let status = cmd
            .arg(format!("--bundle={}", dir.join("bundle").display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg("--detach")
            .arg(id)
            .stdout(log.try_clone().map_err(prep("agent log", &log_path))?)
            .stderr(log)
            .status()
            .map_err(|source| RuntimeError::SpawnerExec { source })?;
        if !status.success() {
            let text = fs::read(&log_path).unwrap_or_default();
            let said = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
            let detail = format!("runsc exited with {status}: {}", said.trim());
            return Err(match image {
                None => RuntimeError::Boot { id: spec.id.clone(), detail },
                Some(_) => RuntimeError::Restore { id: spec.id.clone(), detail },
            });
        }
        let pid = fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).ok_or_else(|| {
            RuntimeError::Boot { id: spec.id.clone(), detail: format!("runsc wrote no pid to {}", pid_file.display()) }
        })?;
        Ok(pid)
    }

    fn start(&self, spec: &SandboxSpec, image: Option<&Path>) -> Result<Handle, RuntimeError> {
        let id = spec.id.as_str();
        let t0 = Instant::now();
        let (dir, project) = self.layers.create(id, spec.disk_mb * 1024 * 1024)?;
        let t1 = Instant::now();
        let pid = self.boot(spec, &dir, image);
        reap_orphans();
        let pid = pid?;
        let start_time = read_start_time(pid).ok_or_else(|| RuntimeError::Boot {
            id: spec.id.clone(),
            detail: format!("the sandbox process {pid} exited right after start"),
        })?;
        debug!(
            layer_us = (t1 - t0).as_micros() as u64,
            boot_us = t1.elapsed().as_micros() as u64,
            "gvisor sandbox created"
        );
        Ok(Handle {
            version: HANDLE_VERSION,
            pid,
            start_time,
            agent_socket: self.sandbox_dir(id).join("uds").join(SOCKET_NAME),
            project_id: project,
            agent_dials: true,
            backend: "gvisor".into(),
        })
    }

    /// Ends the sandbox's processes and frees what runsc and the cgroups hold. The layer and any
    /// image stay. With `keep_rootfs` (a pause to disk) the overlay root stays mounted and the
    /// agent's log stays: a wake restores onto the same mount, and the pause does not wait for
    /// the unmount, which flushes the layer store (the freshly written image included) to disk.
    fn teardown(&self, id: &SandboxId, handle: Option<&Handle>, keep_rootfs: bool) -> Result<(), RuntimeError> {
        self.stop(id, handle)?;
        // runsc waits for the sandbox process to disappear, which a zombie never does.
        if let Some(h) = handle {
            wait_gone(h.pid, h.start_time, Duration::from_secs(5));
        }
        // A sandbox frozen for a checkpoint: its other processes (gofer, stubs) die only once
        // thawed, and `runsc delete` waits seconds for them. The sandbox process is gone, so
        // nothing of the sandbox runs again.
        let _ = self.cgroups.sandbox(id.as_str()).thaw_quietly();
        let dir = self.sandbox_dir(id.as_str());
        if self.settings.run_dir.join("state").join(id.as_str()).exists() || dir.exists() {
            // Forgets the container (and its cgroups); fails harmlessly when runsc never knew it.
            let out = output_reaping(self.runsc().args(["delete", "--force", id.as_str()]));
            if let Ok(o) = out {
                if !o.status.success() {
                    debug!(sandbox = %id, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "runsc delete");
                }
            }
        }
        self.cgroups.sandbox(id.as_str()).kill_and_remove(Duration::from_secs(10))?;
        let rootfs = dir.join("rootfs");
        if keep_rootfs {
            // Never a recursive delete here: the sandbox's files are below the mounted root.
            for name in ["bundle", "uds", "pid"] {
                let p = dir.join(name);
                let gone = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                if let Err(e) = gone {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        warn!(sandbox = %id, error = %e, path = %p.display(), "removing a gVisor sandbox file");
                    }
                }
            }
            reap_orphans();
            return Ok(());
        }
        if is_mountpoint(&rootfs) {
            nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| prep("overlay root filesystem", &rootfs)(std::io::Error::from(e)))?;
        }
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(sandbox = %id, error = %e, "removing the gVisor sandbox directory");
            }
        }
        reap_orphans();
        Ok(())
    }
}

/// Reaps runsc's exited helper processes. runsc's sandbox, gofer and setup processes outlive the
/// `runsc` command that started them, so they are re-parented to the daemon (a subreaper for its
/// native sandboxes) and would stay zombies. Only runsc's own process names are reaped: the
/// daemon's other children (commands it waits for, native sandbox inits with their exit status)
/// are left alone.
pub fn reap_orphans() {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return };
    for task in tasks.flatten() {
        let Ok(children) = fs::read_to_string(task.path().join("children")) else { continue };
        for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let zombie = stat[close + 1..].trim_start().starts_with('Z');
            if zombie && (comm == "exe" || comm.starts_with("runsc-")) {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
    }
}

/// Runs `cmd` to completion, reaping runsc's exited helpers meanwhile: runsc waits for the
/// processes it kills (a gofer) to disappear, and those re-parented to the daemon stay zombies,
/// holding it up for seconds, until the daemon reaps them.
fn output_reaping(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    loop {
        reap_orphans();
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (up to `limit`) until the process is gone, reaping it if it is ours.
fn wait_gone(pid: i32, start_time: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        reap_orphans();
        if read_start_time(pid) != Some(start_time) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(p), p.parent().map(fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

impl Runtime for GvisorRuntime {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            freeze: true,
            hibernate: true,
            pause_to_disk: true,
            memory_snapshots: true,
            filesystem_snapshots: false,
            network: false,
        }
    }

    fn create(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let result = self.start(spec, None);
        if result.is_err() {
            let _ = self.destroy(&spec.id, None);
        }
        result
    }

    fn checkpoint(&self, id: &SandboxId, handle: &Handle) -> Result<u64, RuntimeError> {
        let t0 = Instant::now();
        // Frozen first and saved with `--leave-running`: a checkpoint that fails (a full disk)
        // then leaves the sandbox as it was, to be thawed, where a plain one would end it.
        self.freeze(id)?;
        // A new image goes to the image root, never beside an older one in the layer store.
        let _ = self.remove_image_dir(id.as_str());
        let taken = self.checkpoint_into(id, &self.settings.image_root.join(id.as_str()), true);
        let bytes = match taken {
            Ok(b) => b,
            Err(e) => {
                if let Err(t) = self.thaw(id) {
                    warn!(sandbox = %id, error = %t, "thawing after a failed checkpoint");
                }
                return Err(e);
            }
        };
        let t1 = Instant::now();
        // Saved: the (still frozen) sandbox goes; its layer, root mount and image stay.
        self.teardown(id, Some(handle), true)?;
        debug!(
            sandbox = %id,
            checkpoint_ms = (t1 - t0).as_millis() as u64,
            teardown_ms = t1.elapsed().as_millis() as u64,
            "gvisor sandbox checkpointed"
        );
        Ok(bytes)
    }

    fn checkpoint_copy(&self, id: &SandboxId, _handle: &Handle, image: &str) -> Result<u64, RuntimeError> {
        let _ = self.remove_image_dir(&format!("copy-{image}"));
        self.checkpoint_into(id, &self.settings.image_root.join(format!("copy-{image}")), true)
    }

    fn restore_copy(&self, spec: &SandboxSpec, image: &str) -> Result<Handle, RuntimeError> {
        let image = self.copy_dir(image);
        if !image.join("checkpoint.img").is_file() {
            return Err(RuntimeError::Restore {
                id: spec.id.clone(),
                detail: format!("the memory image {} is missing", image.display()),
            });
        }
        let result = self.start(spec, Some(&image));
        if result.is_err() {
            let _ = self.destroy(&spec.id, None);
        }
        result
    }

    fn remove_image(&self, image: &str) {
        if let Err(e) = self.remove_image_dir(&format!("copy-{image}")) {
            warn!(image, error = %e, "removing a fork's memory image");
        }
    }

    fn images(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.image_names().into_iter().filter_map(|(n, _)| n.strip_prefix("copy-").map(str::to_owned)).collect();
        names.sort();
        names.dedup();
        names
    }

    fn restore(&self, spec: &SandboxSpec) -> Result<Handle, RuntimeError> {
        let image = self.image_path(spec.id.as_str());
        if !image.join("checkpoint.img").is_file() {
            return Err(RuntimeError::Restore {
                id: spec.id.clone(),
                detail: format!("its memory image {} is missing", image.display()),
            });
        }
        let result = self.start(spec, Some(&image));
        if result.is_err() {
            // Keep the layer and the image: the wake can be tried again, or the sandbox killed.
            let _ = self.halt(&spec.id, None);
        }
        result
    }

    fn stop(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        // The sandbox process is the whole sandbox: its death ends every process inside.
        if let Some(h) = handle {
            if let Ok(w) = ExitWatch::open(h.pid, h.start_time) {
                w.kill().map_err(|source| RuntimeError::Signal { id: id.clone(), source })?;
            }
        }
        Ok(())
    }

    fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        self.halt(id, handle)?;
        if let Err(e) = self.remove_image_dir(id.as_str()) {
            warn!(sandbox = %id, error = %e, "removing its checkpoint image");
        }
        self.layers.remove(id.as_str())
    }

    fn halt(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), RuntimeError> {
        self.teardown(id, handle, false)
    }

    fn freeze(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.runsc_ok(id, &["pause", id.as_str()])
    }

    fn thaw(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.runsc_ok(id, &["resume", id.as_str()])
    }

    fn set_egress(
        &self,
        _id: &SandboxId,
        _handle: &Handle,
        _allow: &[(std::net::Ipv4Addr, u8)],
        _deny: &[(std::net::Ipv4Addr, u8)],
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported { backend: "gvisor", op: "apply egress rules (its sandboxes have no network)" })
    }

    fn set_cpu(&self, id: &SandboxId, cpu_count: u32) -> Result<(), RuntimeError> {
        self.cgroups.sandbox(id.as_str()).set_cpu(cpu_count)
    }

    fn stats(&self, id: &SandboxId, handle: &Handle) -> Result<Stats, RuntimeError> {
        let mut s = Stats::default();
        self.cgroups.sandbox(id.as_str()).stats(&mut s);
        // The cgroup's tasks are gVisor's own (sentry, gofer); the processes inside are the
        // sandbox's kernel's to tell.
        let out = self.runsc().args(["ps", "--format=json", id.as_str()]).output();
        s.pids = match out {
            Ok(o) if o.status.success() => {
                serde_json::from_slice::<Vec<i64>>(&o.stdout).map(|p| p.len() as u64).unwrap_or(0)
            }
            _ => 0,
        };
        // A `sync` inside gVisor does not reach the host's disk, so the quota group may not have
        // counted recent writes yet; the files' allocated blocks have.
        let counted = self.layers.used_by_subvolume(handle.project_id).unwrap_or(0);
        s.disk_used_bytes = counted.max(self.layers.used(id.as_str()));
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
            detail: format!("its sandbox process vanished right after start: {e}"),
        })
    }

    fn sweep(&self, live: &[SandboxId]) -> Vec<SandboxId> {
        let is_live = |name: &str| live.iter().any(|l| l.as_str() == name);
        let mut found: Vec<String> = self.cgroups.list();
        for d in [self.settings.run_dir.join("sandboxes"), self.settings.run_dir.join("state")] {
            if let Ok(rd) = fs::read_dir(d) {
                found.extend(
                    rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        found.sort();
        found.dedup();
        let mut swept = Vec::new();
        for name in found.into_iter().filter(|n| !is_live(n)) {
            let Ok(id) = SandboxId::parse(&name) else { continue };
            match self.halt(&id, None) {
                Ok(()) => swept.push(id),
                Err(e) => warn!(sandbox = %id, error = %e, "sweeping gVisor leftovers failed"),
            }
        }
        // Memory images of sandboxes gone (copies made for forks and snapshots are the
        // engine's to collect: it knows which snapshots name them).
        for (name, path) in self.image_names() {
            if !name.starts_with("copy-") && !is_live(&name) {
                let _ = fs::remove_dir_all(path);
            }
        }
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
        crate::log_tail(&self.sandbox_dir(id.as_str()).join("agent.log"), max_bytes)
    }
}
/// CPUs this host offers.
fn host_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}
