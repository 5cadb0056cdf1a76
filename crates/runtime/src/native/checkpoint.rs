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

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::spawn::{AGENT_PATH_IN_SANDBOX, DIAL_DIR_IN_SANDBOX, HOST_DEVICES};

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

/// Options both directions share: what a sandbox's processes may hold.
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
pub fn dump(criu: &Path, pid: i32, dir: &Path, network: bool, copy_of: Option<&Path>) -> Result<ImageMeta, String> {
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
    let meta = ImageMeta { version: IMAGE_VERSION, log_key, network, bytes: pages_bytes(dir) };
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
    /// The veth CRIU moves into the sandbox as its `eth0` (with a network): the peer of a pair
    /// the caller made, still in the host's namespace.
    pub veth: Option<String>,
    /// Where CRIU writes the restored init's host pid, and its log.
    pub pidfile: &'a Path,
    pub criu_log: &'a Path,
    /// CRIU's working directory (its statistics): the sandbox's own, since one image may be
    /// restored many times at once.
    pub work_dir: &'a Path,
}

/// Restores the image; returns the host pid of the restored init (re-parented to this process,
/// a subreaper, once CRIU exits).
pub fn restore(req: &RestoreRequest<'_>) -> Result<i32, String> {
    let meta = ImageMeta::read(req.image)?;
    if meta.network != req.veth.is_some() {
        return Err(if meta.network {
            "the image has a network link but the sandbox would have none (networking is off now)".into()
        } else {
            "the image has no network link but networking is on now".into()
        });
    }
    let _ = fs::remove_file(req.pidfile);
    let mut cmd = common(req.criu, req.image, req.criu_log);
    cmd.arg("restore")
        .arg("--work-dir")
        .arg(req.work_dir)
        .arg("--restore-detached")
        .arg("--root")
        .arg(req.mountpoint)
        .arg("--pidfile")
        .arg(req.pidfile)
        .args(restore_mounts(req.agent_binary, req.dial_dir))
        .arg(format!("--inherit-fd=fd[{LOG_INHERIT_FD}]:{}", meta.log_key));
    if let Some(peer) = &req.veth {
        cmd.arg(format!("--external=netdev[eth0]:{peer}"));
    }

    // Everything the child touches is prepared here: between fork and exec only raw syscalls run.
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let overlay = c("overlay")?;
    let target = c(&req.mountpoint.display().to_string())?;
    let options = c(&req.overlay_options)?;
    let root = c("/")?;
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
    // SAFETY: only async-signal-safe syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
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
            if libc::mount(overlay.as_ptr(), target.as_ptr(), overlay.as_ptr(), 0, options.as_ptr().cast()) != 0 {
                return fail();
            }
            if log_fd == LOG_INHERIT_FD {
                if libc::fcntl(log_fd, libc::F_SETFD, 0) != 0 {
                    return fail();
                }
            } else if libc::dup2(log_fd, LOG_INHERIT_FD) < 0 {
                return fail();
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|e| format!("running {}: {e}", req.criu.display()))?;
    drop(procs);
    if !out.status.success() {
        let said = log_excerpt(req.criu_log);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = if said.is_empty() { stderr.trim().to_owned() } else { said };
        return Err(format!("criu restore exited with {}: {said}", out.status));
    }
    let text = fs::read_to_string(req.pidfile).map_err(|e| format!("reading {}: {e}", req.pidfile.display()))?;
    text.trim().parse().map_err(|_| format!("{} holds {text:?}, not a pid", req.pidfile.display()))
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
        let meta = ImageMeta { version: IMAGE_VERSION, log_key: "file[1b:2a]".into(), network: true, bytes: 4096 };
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
