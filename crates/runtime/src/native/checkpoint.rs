//! Memory snapshots of native sandboxes: CRIU saves a sandbox's whole process tree with its
//! namespaces (pid, mount, uts, ipc, net, user) to an image directory and restores it later, into
//! fresh namespaces, on the same writable layer.
//!
//! What CRIU cannot see from inside the sandbox is declared to it. The mounts the spawner brought
//! from the host (device nodes, the agent binary, the dial directory) are saved as external mounts
//! by key and mapped back to host paths on restore; the agent's log (its stderr, a host file) is
//! external too and handed to the restore as an inherited descriptor; the sandbox's veth is
//! recreated with its host end on the bridge. The agent must hold no host socket when the dump
//! starts: it dials the daemon, and the engine has it close every connection first (quiesce).
//!
//! The restore runs CRIU in the sandbox's cgroups (so every restored task is counted there from
//! its first instruction) and in a private mount namespace holding the sandbox's overlay root, so
//! nothing of a restore is ever visible in the host's mount table.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::spawn::{AGENT_PATH_IN_SANDBOX, DIAL_DIR_IN_SANDBOX, HOST_DEVICES};
use super::vfork;

/// Format version of [`ImageMeta`] (invariant: every on-disk format is versioned).
pub const IMAGE_VERSION: u32 = 1;

/// Warren's own record beside CRIU's files in an image directory.
pub const META_FILE: &str = "warren-image.json";

/// The agent's log as it was when the image was taken (the restore carries on from it).
pub const AGENT_LOG: &str = "agent.log";

/// The descriptor number the agent's log is handed to a restore on.
const LOG_INHERIT_FD: i32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageMeta {
    pub version: u32,
    /// CRIU's key of the agent's log file (`file[mnt:inode]`), which the restore maps to the new
    /// log.
    pub log_key: String,
    /// Whether the sandbox had a network link (`eth0`, a veth) to recreate.
    pub network: bool,
    /// Size of the memory the processes held, as CRIU's pages images count it.
    pub bytes: u64,
    /// The address `eth0` had: sockets in the image may be bound to it, so a clone (which has its
    /// own) carries it too while it is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

impl ImageMeta {
    pub fn read(dir: &Path) -> Result<ImageMeta, String> {
        let path = dir.join(META_FILE);
        let text = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let meta: ImageMeta = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a Warren image record: {e}", path.display()))?;
        if meta.version != IMAGE_VERSION {
            return Err(format!(
                "{} has format version {}, this Warren reads version {IMAGE_VERSION}",
                path.display(),
                meta.version
            ));
        }
        if !dir.join("inventory.img").is_file() {
            return Err(format!("{} holds no CRIU inventory (the image is incomplete)", dir.display()));
        }
        Ok(meta)
    }
}

/// CRIU's external-mount options for a dump: every host mount, by its place in the sandbox.
fn dump_mounts() -> Vec<String> {
    let mut args = Vec::new();
    for d in HOST_DEVICES {
        args.push(format!("--external=mnt[/dev/{d}]:dev-{d}"));
    }
    args.push(format!("--external=mnt[{AGENT_PATH_IN_SANDBOX}]:agent"));
    args.push(format!("--external=mnt[{DIAL_DIR_IN_SANDBOX}]:dial"));
    args
}

/// The same mounts for a restore, mapped to the host paths they come from now.
fn restore_mounts(agent_binary: &Path, dial_dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for d in HOST_DEVICES {
        args.push(format!("--external=mnt[dev-{d}]:/dev/{d}"));
    }
    args.push(format!("--external=mnt[agent]:{}", agent_binary.display()));
    args.push(format!("--external=mnt[dial]:{}", dial_dir.display()));
    args
}

/// A dump's command line: what a sandbox's processes may hold.
fn common(criu: &Path, dir: &Path, log: &Path) -> Command {
    let mut cmd = Command::new(criu);
    cmd.arg("--images-dir")
        .arg(dir)
        .arg("--log-file")
        .arg(log)
        .args([
            // Connections on the sandbox's own addresses carry on (a Jupyter kernel's sockets).
            "--tcp-established",
            "--file-locks",
            // Open files whose names were deleted are linked back on restore.
            "--link-remap",
            // Warren places the sandbox in its cgroups itself (see `restore`).
            "--manage-cgroups=ignore",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The last lines of a CRIU log that say what went wrong.
fn log_excerpt(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    // Complaints CRIU makes on every run here, whatever the outcome: no raised descriptor limit
    // in a user namespace, and no iptables (the sandbox's rules are nftables, saved apart).
    let noise = |l: &str| l.contains("RLIMIT_NOFILE") || l.contains("tables-") || l.contains("tables-legacy");
    let errors: Vec<&str> =
        text.lines().filter(|l| (l.contains("Error") || l.contains("error")) && !noise(l)).collect();
    let lines = if errors.is_empty() { text.lines().rev().take(3).collect::<Vec<_>>() } else { errors };
    let mut out = lines.iter().rev().take(4).rev().copied().collect::<Vec<_>>().join(" | ");
    if out.len() > 800 {
        out.truncate(800);
    }
    out
}

/// The CRIU key of the file open on `fd` of `pid`: `file[<mount id>:<inode>]` in hex.
fn external_file_key(pid: i32, fd: i32) -> Result<String, String> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| format!("reading the agent's descriptor {fd}: {e}"))?;
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
    let mnt = field("mnt_id:").ok_or_else(|| format!("descriptor {fd} of the agent has no mount id"))?;
    let ino = match field("ino:") {
        Some(i) => i,
        None => {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                .map_err(|e| format!("reading the agent's descriptor {fd}: {e}"))?
                .ino()
        }
    };
    Ok(format!("file[{mnt:x}:{ino:x}]"))
}

/// Bytes under `dir` (an image's size on disk).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// Saves the process tree whose init is `pid` into `dir` (emptied first). With `copy_of` (the
/// sandbox's freezer cgroup, which may be frozen) the sandbox carries on afterwards as it was (a
/// copy, for forks); otherwise CRIU ends it once saved. On failure the sandbox keeps running.
///
/// The network namespace itself is not saved (`--empty-ns net`): a restore builds it afresh.
/// `address` is `eth0`'s, when the sandbox has a network.
pub fn dump(
    criu: &Path,
    pid: i32,
    dir: &Path,
    network: Option<Option<std::net::Ipv4Addr>>,
    copy_of: Option<&Path>,
) -> Result<ImageMeta, String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("emptying {}: {e}", dir.display())),
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log_key = external_file_key(pid, 2)?;
    let log = dir.join("dump.log");
    let mut cmd = common(criu, dir, &log);
    cmd.arg("dump")
        .arg("--tree")
        .arg(pid.to_string())
        // The sandbox's network is held still while it is saved (no iptables on these hosts).
        .arg("--network-lock=nftables")
        .args(["--empty-ns", "net"])
        .args(dump_mounts())
        .arg(format!("--external={log_key}"));
    if let Some(freezer) = copy_of {
        // The caller froze the sandbox so that its files and its memory are copied at one instant;
        // CRIU seizes the frozen tasks and leaves the cgroup frozen as it found it.
        cmd.arg("--leave-running").arg("--freeze-cgroup").arg(freezer);
    }
    let out = cmd.output().map_err(|e| format!("running {}: {e}", criu.display()))?;
    if !out.status.success() {
        let said = log_excerpt(&log);
        let _ = fs::remove_dir_all(dir);
        return Err(format!("criu dump exited with {}: {said}", out.status));
    }
    let meta = ImageMeta {
        version: IMAGE_VERSION,
        log_key,
        network: network.is_some(),
        bytes: pages_bytes(dir),
        address: network.flatten(),
    };
    let text = serde_json::to_vec_pretty(&meta).expect("image record serializes");
    fs::write(dir.join(META_FILE), text).map_err(|e| format!("writing {}: {e}", dir.join(META_FILE).display()))?;
    Ok(meta)
}

/// Bytes of memory pages saved in `dir` (`pages-*.img`).
fn pages_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Where and how one restore runs.
pub struct RestoreRequest<'a> {
    pub criu: &'a Path,
    pub image: &'a Path,
    /// Overlay options of the sandbox's root (`lowerdir=…,upperdir=…,workdir=…`).
    pub overlay_options: String,
    /// An empty directory the root is mounted on, inside the restore's own mount namespace.
    pub mountpoint: &'a Path,
    /// `cgroup.procs` files of the sandbox's cgroups.
    pub cgroup_procs: &'a [PathBuf],
    pub agent_binary: &'a Path,
    pub dial_dir: &'a Path,
    /// The agent's new log, opened for appending.
    pub log: &'a fs::File,
    /// Whether the sandbox gets a network link (it must match the image's).
    pub network: bool,
    /// CRIU's working directory (its log, `restore.log`): the sandbox's own, since one image may
    /// be restored many times at once.
    pub work_dir: &'a Path,
    /// Restore the memory lazily: the tasks run again at once and a [`LazyPages`] server copies
    /// their pages in behind them.
    pub lazy: bool,
}

/// CRIU's name for the log of a lazy-pages server, in its working directory.
pub const LAZY_LOG: &str = "lazy-pages.log";

/// A `criu lazy-pages` server for one restore: it gives the restored tasks each page they touch
/// and copies the rest in behind them, then exits. Its files stay open (an image deleted under it
/// is still read to the end).
pub struct LazyPages {
    child: vfork::Child,
    log: PathBuf,
}

impl LazyPages {
    /// Starts the server on `work_dir`'s socket and waits until it listens.
    fn start(criu: &Path, image: &Path, work_dir: &Path) -> Result<LazyPages, String> {
        use nix::fcntl::OFlag;
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("a pipe: {e}"))?;
        let w = ready_w.as_raw_fd();
        let args: Vec<&OsStr> = vec![
            "criu".as_ref(),
            "lazy-pages".as_ref(),
            "--images-dir".as_ref(),
            image.as_os_str(),
            "--work-dir".as_ref(),
            work_dir.as_os_str(),
            "--log-file".as_ref(),
            LAZY_LOG.as_ref(),
            "--status-fd".as_ref(),
            "3".as_ref(),
        ];
        let mut before_exec = move || -> Result<(), i32> {
            // SAFETY: only async-signal-safe syscalls.
            unsafe {
                let high = libc::fcntl(w, libc::F_DUPFD, 1000);
                if high < 0 || libc::dup2(high, 3) < 0 {
                    return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
                }
                libc::close(high);
            }
            Ok(())
        };
        // SAFETY: `before_exec` makes only raw syscalls on memory prepared above.
        let child = unsafe { vfork::spawn(criu, &args, None, &mut before_exec) }
            .map_err(|e| format!("running {} lazy-pages: {e}", criu.display()))?;
        drop(ready_w);
        let mut server = LazyPages { child, log: work_dir.join(LAZY_LOG) };
        // CRIU writes one byte once it listens, and closes the pipe if it fails first.
        let mut pfd = libc::pollfd { fd: ready_r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let polled = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        let mut byte = [0u8; 1];
        let ready = polled > 0 && nix::unistd::read(ready_r.as_raw_fd(), &mut byte).unwrap_or(0) == 1;
        if !ready {
            server.kill();
            return Err(format!("criu lazy-pages did not start: {}", log_excerpt(&server.log)));
        }
        Ok(server)
    }

    /// Waits until every page is in; an error means the tasks' memory could not be completed.
    pub fn wait(mut self) -> Result<(), String> {
        match self.child.wait() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("criu lazy-pages exited with {s}: {}", log_excerpt(&self.log))),
            Err(e) => Err(format!("waiting for criu lazy-pages: {e}")),
        }
    }

    fn kill(&mut self) {
        self.child.kill();
    }
}

/// The points of a restore at which Warren acts, with the restored init's host pid.
pub enum RestoreStage {
    /// The sandbox's namespaces exist, its network namespace empty, and none of its tasks runs.
    NamespacesReady(i32),
    /// Every task is back and still stopped.
    Restored(i32),
}

/// CRIU's name for the log of a restore, in its working directory.
pub const RESTORE_LOG: &str = "restore.log";

/// Restores the image; returns the host pid of the restored init (re-parented to this process,
/// a subreaper, once CRIU exits). `at` runs at each [`RestoreStage`]; its error fails the restore.
///
/// The network namespace is made empty rather than replayed from the image: `at` builds it
/// (creating `eth0` right inside it, addresses, routes, egress rules), which costs a few
/// milliseconds where CRIU's replay (a veth moved in, `ip` runs, sysctls) cost ≈ 50.
///
/// With `req.lazy` the [`LazyPages`] server that fills the memory in comes back with the pid: the
/// caller waits for it, and must end the sandbox if it fails.
pub fn restore(
    req: &RestoreRequest<'_>,
    mut at: impl FnMut(RestoreStage) -> Result<(), String>,
) -> Result<(i32, Option<LazyPages>), String> {
    use super::criu_rpc as rpc;
    let meta = ImageMeta::read(req.image)?;
    if meta.network != req.network {
        return Err(if meta.network {
            "the image has a network link but the sandbox would have none (networking is off now)".into()
        } else {
            "the image has no network link but networking is on now".into()
        });
    }
    // CRIU opens both through this process's /proc/<pid>/fd.
    let open_dir = |p: &Path| fs::File::open(p).map_err(|e| format!("opening {}: {e}", p.display()));
    let (images_dir, work_dir) = (open_dir(req.image)?, open_dir(req.work_dir)?);
    let opts = rpc::Opts {
        images_dir_fd: images_dir.as_raw_fd(),
        images_dir: None,
        work_dir_fd: Some(work_dir.as_raw_fd()),
        log_file: Some(RESTORE_LOG.into()),
        log_level: Some(2),
        root: Some(req.mountpoint.display().to_string()),
        tcp_established: Some(true),
        file_locks: Some(true),
        link_remap: Some(true),
        manage_cgroups_mode: Some(rpc::CG_MODE_IGNORE),
        notify_scripts: Some(true),
        external: restore_mounts(req.agent_binary, req.dial_dir)
            .into_iter()
            .map(|a| a.trim_start_matches("--external=").to_owned())
            .collect(),
        inherit_fd: vec![rpc::InheritFd { key: meta.log_key.clone(), fd: LOG_INHERIT_FD }],
        empty_ns: req.network.then_some(libc::CLONE_NEWNET as u32),
        // No packet reaches the sandbox before its host-side veth is attached, after the restore.
        network_lock: Some(rpc::NETWORK_LOCK_SKIP),
        lazy_pages: req.lazy.then_some(true),
    };
    let (ours, theirs) = rpc::socket_pair().map_err(|e| format!("a socket pair for CRIU: {e}"))?;

    // Everything the child touches is prepared here: between fork and exec only raw syscalls run.
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let overlay = c("overlay")?;
    let target = c(&req.mountpoint.display().to_string())?;
    let options = c(&req.overlay_options)?;
    let root = c("/")?;
    let root_flags = super::spawn::ROOT_FLAGS.bits();
    let procs: Vec<OwnedFd> = req
        .cgroup_procs
        .iter()
        .map(|p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(OwnedFd::from)
                .map_err(|e| format!("opening {}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let proc_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let log_fd = req.log.as_raw_fd();
    let rpc_fd = theirs.as_raw_fd();
    let rpc_fd_arg = RPC_FD.to_string();
    let (stderr_r, stderr_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("a pipe for CRIU: {e}"))?;
    let mut before_exec = move || -> Result<(), i32> {
        let fail = || Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
        // SAFETY: only async-signal-safe syscalls on memory prepared before the spawn.
        unsafe {
            for fd in &proc_fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail();
                }
            }
            // Its own cgroup namespace rooted at the sandbox's cgroup, as a fresh sandbox has.
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) != 0 {
                return fail();
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if libc::mount(overlay.as_ptr(), target.as_ptr(), overlay.as_ptr(), root_flags, options.as_ptr().cast())
                != 0
            {
                return fail();
            }
            // Both descriptors go to their fixed numbers by way of high ones, so that neither
            // overwrites the other on the way.
            let (log_high, rpc_high) =
                (libc::fcntl(log_fd, libc::F_DUPFD, 1000), libc::fcntl(rpc_fd, libc::F_DUPFD, 1000));
            if log_high < 0 || rpc_high < 0 {
                return fail();
            }
            if libc::dup2(log_high, LOG_INHERIT_FD) < 0 || libc::dup2(rpc_high, RPC_FD) < 0 {
                return fail();
            }
            libc::close(log_high);
            libc::close(rpc_high);
        }
        Ok(())
    };
    let t0 = std::time::Instant::now();
    // Started last, so that nothing above can leave it waiting for a restore that never comes.
    let mut lazy = if req.lazy { Some(LazyPages::start(req.criu, req.image, req.work_dir)?) } else { None };
    let lazy_ms = t0.elapsed().as_millis() as u64;
    let args: [&OsStr; 3] = ["criu".as_ref(), "swrk".as_ref(), rpc_fd_arg.as_ref()];
    // SAFETY: `before_exec` makes only raw syscalls on memory prepared above.
    let mut child = match unsafe { vfork::spawn(req.criu, &args, Some(stderr_w.as_fd()), &mut before_exec) } {
        Ok(child) => child,
        Err(e) => {
            if let Some(l) = lazy.as_mut() {
                l.kill();
            }
            return Err(format!("running {}: {e}", req.criu.display()));
        }
    };
    drop((theirs, procs, stderr_w));
    let outcome = converse(&ours, &opts, &mut at);
    drop(ours);
    // What CRIU says before its log is open (a bad request) goes to its stderr.
    let mut stderr = Vec::new();
    let _ = std::io::Read::read_to_end(&mut fs::File::from(stderr_r), &mut stderr);
    let status = child.wait().map_err(|e| format!("waiting for {}: {e}", req.criu.display()))?;
    drop((images_dir, work_dir));
    let said = || {
        let log = log_excerpt(&req.work_dir.join(RESTORE_LOG));
        if log.is_empty() {
            String::from_utf8_lossy(&stderr).trim().chars().take(800).collect()
        } else {
            log
        }
    };
    tracing::debug!(lazy_ms, criu_ms = t0.elapsed().as_millis() as u64 - lazy_ms, "criu restore");
    let failed = match outcome {
        Ok(pid) if status.success() => return Ok((pid, lazy)),
        Ok(_) => format!("criu exited with {status} after restoring: {}", said()),
        Err(why) => format!("criu restore failed: {why}: {}", said()),
    };
    if let Some(l) = lazy.as_mut() {
        l.kill();
    }
    Err(failed)
}

/// The descriptor number CRIU's RPC socket is handed to `criu swrk` on.
const RPC_FD: i32 = 4;

/// One restore request over CRIU's RPC socket: answers its notifications until its result.
fn converse(
    sock: &OwnedFd,
    opts: &super::criu_rpc::Opts,
    at: &mut impl FnMut(RestoreStage) -> Result<(), String>,
) -> Result<i32, String> {
    use super::criu_rpc as rpc;
    let io = |e: std::io::Error| format!("talking to CRIU: {e}");
    rpc::send(sock, &rpc::Req { r#type: rpc::ReqType::Restore as i32, opts: Some(opts.clone()), notify_success: None })
        .map_err(io)?;
    loop {
        let Some(resp) = rpc::recv(sock).map_err(io)? else {
            return Err("CRIU ended without an answer".into());
        };
        match rpc::ReqType::try_from(resp.r#type) {
            Ok(rpc::ReqType::Notify) => {
                let n = resp.notify.unwrap_or_default();
                let done = match (n.script.as_deref(), n.pid) {
                    (Some("setup-namespaces"), Some(pid)) => at(RestoreStage::NamespacesReady(pid)),
                    (Some("post-restore"), Some(pid)) => at(RestoreStage::Restored(pid)),
                    _ => Ok(()),
                };
                let ok = done.is_ok();
                rpc::send(
                    sock,
                    &rpc::Req { r#type: rpc::ReqType::Notify as i32, opts: None, notify_success: Some(ok) },
                )
                .map_err(io)?;
                if let Err(why) = done {
                    // CRIU now fails the restore and kills what it restored; its last answer is
                    // read so that it exits.
                    while let Ok(Some(_)) = rpc::recv(sock) {}
                    return Err(why);
                }
            }
            Ok(rpc::ReqType::Restore) if resp.success => {
                return resp.restore.map(|r| r.pid).ok_or_else(|| "CRIU answered without a pid".to_owned());
            }
            _ => {
                let errno =
                    resp.cr_errno.filter(|e| *e != 0).map(|e| format!(" ({})", std::io::Error::from_raw_os_error(e)));
                return Err(format!(
                    "{}{}",
                    resp.cr_errmsg.unwrap_or_else(|| "it reported a failure".into()),
                    errno.unwrap_or_default()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_records_are_versioned_and_need_an_inventory() {
        let dir = std::env::temp_dir().join(format!("warren-image-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(ImageMeta::read(&dir).unwrap_err().contains("reading"));
        let meta = ImageMeta {
            version: IMAGE_VERSION,
            log_key: "file[1b:2a]".into(),
            network: true,
            bytes: 4096,
            address: Some(std::net::Ipv4Addr::new(10, 88, 0, 2)),
        };
        fs::write(dir.join(META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert!(ImageMeta::read(&dir).unwrap_err().contains("inventory"));
        fs::write(dir.join("inventory.img"), b"x").unwrap();
        assert_eq!(ImageMeta::read(&dir).unwrap(), meta);
        let newer = ImageMeta { version: IMAGE_VERSION + 1, ..meta };
        fs::write(dir.join(META_FILE), serde_json::to_vec(&newer).unwrap()).unwrap();
        assert!(ImageMeta::read(&dir).unwrap_err().contains("format version"));
        fs::write(dir.join(META_FILE), b"{not json").unwrap();
        assert!(ImageMeta::read(&dir).unwrap_err().contains("not a Warren image record"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn host_mounts_map_back_by_key() {
        let dump = dump_mounts();
        let restore = restore_mounts(Path::new("/opt/agent"), Path::new("/run/x/dial"));
        assert_eq!(dump.len(), restore.len());
        assert!(dump.contains(&"--external=mnt[/.warren/dial]:dial".to_owned()));
        assert!(restore.contains(&"--external=mnt[dial]:/run/x/dial".to_owned()));
        assert!(restore.contains(&"--external=mnt[agent]:/opt/agent".to_owned()));
        assert!(restore.contains(&"--external=mnt[dev-null]:/dev/null".to_owned()));
    }
}
