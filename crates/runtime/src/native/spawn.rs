//! The sandbox spawner. The daemon is multi-threaded, and forking a multi-threaded process into new
//! namespaces is unsafe, so the daemon execs itself with a hidden argument (`SPAWN_ARG`) and a JSON
//! [`SpawnRequest`] on stdin. That fresh, single-threaded process (P) then:
//!
//! 1. joins the sandbox's cgroups (so everything after inherits them),
//! 2. enters a private mount namespace and, as real root, mounts the overlay root filesystem, a
//!    minimal `/dev`, `/dev/shm`, `/tmp` and the read-only agent binary — these mounts become locked
//!    when the child enters its own user namespace, so the sandbox cannot unmount or remount them,
//!    and none of them is ever visible in the host's mount namespace (nothing to leak on a crash),
//! 3. clones the child (C) into new user, mount, pid, net, uts, ipc and cgroup namespaces, writes its
//!    uid/gid maps and OOM score, and waits for it to exec the agent (a close-on-exec pipe reports
//!    success as EOF and failure as an error message),
//! 4. prints `{"pid":…,"startTime":…}` and exits; C is re-parented to the daemon (a subreaper).
//!
//! C mounts `/proc` and `/dev/pts` (which must belong to its own namespaces), masks sensitive `/proc`
//! files, pivots into the new root, sets the hostname, brings up loopback, drops capabilities, sets
//! no_new_privs, installs the seccomp filters and execs the agent as PID 1. The agent dials the
//! daemon through the sandbox's dial directory (mounted read-only at [`DIAL_DIR_IN_SANDBOX`]).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{self, Pid};
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes the `warren` binary act as the spawner.
pub const SPAWN_ARG: &str = "__warren_spawn";

/// Device nodes every sandbox gets from the host (bind-mounted into its `/dev`).
pub const HOST_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Where the agent binary appears inside every sandbox.
pub const AGENT_PATH_IN_SANDBOX: &str = "/.warren/warren-agent";

/// Where the sandbox's dial directory (a host directory, read-only inside) appears: the daemon
/// listens on a socket there and the agent dials it. A dialing agent holds no host socket between
/// requests, so a checkpoint (CRIU) can save the sandbox once the daemon has let go.
pub const DIAL_DIR_IN_SANDBOX: &str = "/.warren/dial";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnRequest {
    pub hostname: String,
    /// Overlay lower layers, topmost first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// An empty host directory the overlay is mounted on (inside P's private namespace only).
    pub mountpoint: PathBuf,
    pub agent_binary: PathBuf,
    pub cgroup_procs: Vec<PathBuf>,
    pub uid_base: u32,
    pub uid_count: u32,
    pub shm_size_bytes: u64,
    /// Environment of the agent process.
    pub env: Vec<(String, String)>,
    /// The sandbox's network link; loopback only when absent.
    #[serde(default)]
    pub net: Option<super::network::SandboxLink>,
    /// Host directory mounted read-only at [`DIAL_DIR_IN_SANDBOX`]: the daemon listens on a
    /// socket there and the agent dials it.
    #[serde(default)]
    pub dial_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnResult {
    pub pid: Option<i32>,
    pub start_time: Option<u64>,
    pub error: Option<String>,
}

/// Capabilities kept inside the sandbox (in its own user namespace): Docker's default set without
/// `CAP_NET_RAW` (no raw or packet sockets: no spoofing on the sandbox network; `ping` is the one
/// common casualty).
pub const KEPT_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];

/// Entry point of the spawner when exec'd (`warren __warren_spawn`): request on stdin, result on
/// stdout. Never returns.
pub fn main() -> ! {
    let mut input = String::new();
    let out = match io::stdin().read_to_string(&mut input) {
        Err(e) => failure(format!("reading the spawn request: {e}")),
        Ok(_) => match serde_json::from_str::<SpawnRequest>(&input) {
            Err(e) => failure(format!("parsing the spawn request: {e}")),
            Ok(req) => run(&req),
        },
    };
    let code = if out.error.is_some() { 1 } else { 0 };
    let _ = io::stdout().write_all(serde_json::to_string(&out).unwrap_or_default().as_bytes());
    let _ = io::stdout().flush();
    std::process::exit(code)
}

fn failure(error: String) -> SpawnResult {
    SpawnResult { pid: None, start_time: None, error: Some(error) }
}

/// Boots one sandbox from a fresh single-threaded process (see the module docs). The agent's log
/// must already be on stderr.
pub fn run(req: &SpawnRequest) -> SpawnResult {
    match spawn(req) {
        Ok((pid, start_time)) => SpawnResult { pid: Some(pid), start_time: Some(start_time), error: None },
        Err(error) => failure(error),
    }
}

/// The seccomp filters, compiled once per process (the zygote compiles them before it forks).
pub fn filters() -> Result<&'static (seccompiler::BpfProgram, seccompiler::BpfProgram), String> {
    static FILTERS: std::sync::OnceLock<Result<(seccompiler::BpfProgram, seccompiler::BpfProgram), String>> =
        std::sync::OnceLock::new();
    FILTERS
        .get_or_init(|| {
            let main = super::seccomp::allow_list().map_err(|e| format!("compiling seccomp policy: {e}"))?;
            let clone3 = super::seccomp::clone3_enosys().map_err(|e| format!("compiling seccomp policy: {e}"))?;
            Ok((main, clone3))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn spawn(req: &SpawnRequest) -> Result<(i32, u64), String> {
    let me = std::process::id().to_string();
    for procs in &req.cgroup_procs {
        ctx(fs::write(procs, &me), || format!("joining cgroup {}", procs.display()))?;
    }
    ctx(nix::sched::unshare(CloneFlags::CLONE_NEWNS), || "unshare(mount namespace)".into())?;
    ctx(mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>), || {
        "making / private".into()
    })?;
    prepare_root(req)?;

    let (sync_r, sync_w) = ctx(unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC), || "pipe".into())?;
    let (err_r, err_w) = ctx(unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC), || "pipe".into())?;
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    // SAFETY: this process is single-threaded (a fresh exec), so the child may run arbitrary code.
    // A NULL stack makes clone behave like fork: the child continues on a copy of this stack.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone, flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0)
    };
    if ret < 0 {
        return Err(format!("clone: {}", io::Error::last_os_error()));
    }
    if ret == 0 {
        drop(sync_w);
        drop(err_r);
        let err = child(req, sync_r).unwrap_err();
        let mut f = fs::File::from(err_w);
        let _ = f.write_all(err.as_bytes());
        // SAFETY: _exit is always safe; skips the parent's atexit handlers in this forked copy.
        unsafe { libc::_exit(127) };
    }
    let child_pid = ret as i32;
    drop(sync_r);
    drop(err_w);
    let setup = (|| -> Result<(), String> {
        let map = format!("0 {} {}\n", req.uid_base, req.uid_count);
        ctx(fs::write(format!("/proc/{child_pid}/uid_map"), &map), || "writing uid_map".into())?;
        ctx(fs::write(format!("/proc/{child_pid}/gid_map"), &map), || "writing gid_map".into())?;
        // The agent should survive the sandbox's own OOM kills (it sets its children back to 0).
        // Hosts that withhold CAP_SYS_RESOURCE refuse this; the agent is then merely the smallest
        // process in the cgroup and the OOM killer picks the biggest.
        let _ = fs::write(format!("/proc/{child_pid}/oom_score_adj"), "-1000");
        // Its eth0 must exist before it is released: it configures the address itself.
        if let Some(link) = &req.net {
            ctx(super::network::create_veth(link, child_pid), || format!("creating veth {}", link.host_veth))?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = nix::sys::signal::kill(Pid::from_raw(child_pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(child_pid), None);
        return Err(e);
    }
    let start_time = read_start_time(child_pid).unwrap_or(0);
    ctx(unistd::write(&sync_w, b"g"), || "releasing the sandbox".into())?;
    drop(sync_w);
    let mut msg = String::new();
    let _ = fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(child_pid), None);
        return Err(msg);
    }
    Ok((child_pid, start_time))
}

/// Reads field 22 (starttime) of /proc/<pid>/stat.
pub fn read_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn mount_at(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    ctx(mount(source, target, fstype, flags, data), || {
        format!("mounting {} on {}", source.or(fstype).unwrap_or("?"), target.display())
    })
}

/// Binds `source` on `target` read-only, nosuid and nodev (recursively, and noexec, when asked).
fn bind_read_only(source: &Path, target: &Path, recursive: bool, noexec: bool) -> Result<(), String> {
    let src = source.display().to_string();
    let bind = if recursive { MsFlags::MS_BIND | MsFlags::MS_REC } else { MsFlags::MS_BIND };
    mount_at(Some(&src), target, None, bind, None)?;
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount_at(None, target, None, flags, None)
}

fn ensure_dir(p: &Path) -> Result<(), String> {
    match fs::create_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("creating {}: {e}", p.display())),
    }
}

/// Flags of a sandbox's root mount (the restore of a checkpoint mounts it the same way).
pub const ROOT_FLAGS: MsFlags = MsFlags::MS_NODEV;

/// A directory the sandbox's root owns: kept as it is when it exists (the template's, or the
/// sandbox's own from before a checkpoint), made otherwise.
fn ensure_owned_dir(p: &Path, mode: u32, owner: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => ctx(fs::remove_file(p), || format!("removing {} to make it a directory", p.display()))?,
        Err(_) => {}
    }
    ensure_dir(p)?;
    ctx(fs::set_permissions(p, fs::Permissions::from_mode(mode)), || format!("chmod {}", p.display()))?;
    ctx(std::os::unix::fs::lchown(p, Some(owner), Some(owner)), || format!("chown {}", p.display()))
}

/// `p` as a symbolic link to `to`, whatever was there (a template's `/dev/ptmx` is a device node,
/// which opens nothing on a `nodev` root).
fn ensure_symlink(p: &Path, to: &str, owner: u32) -> Result<(), String> {
    if fs::read_link(p).is_ok_and(|t| t == Path::new(to)) {
        return Ok(());
    }
    let removed = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    };
    ctx(removed, || format!("removing {}", p.display()))?;
    ctx(symlink(to, p), || format!("linking {}", p.display()))?;
    ctx(std::os::unix::fs::lchown(p, Some(owner), Some(owner)), || format!("chown {}", p.display()))
}

fn ensure_file(p: &Path) -> Result<(), String> {
    if p.exists() {
        return Ok(());
    }
    ctx(fs::File::create(p), || format!("creating {}", p.display())).map(drop)
}

/// Mount options of a sandbox's overlay root (`lower` topmost first).
pub fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower = lower.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display())
}

/// Mounts done by real root in P's private namespace.
///
/// `/dev` and `/tmp` are the root file system's own directories, not tmpfs mounts: a checkpoint
/// (CRIU) saves a tmpfs by running `tar` over it and a restore by running `tar` again, for every
/// sandbox of a fork; a directory of the writable layer is simply there, and copied by the layer's
/// snapshot. The root is `nodev`, so device nodes a template may hold under `/dev` open nothing;
/// the devices a sandbox has are the host's, bound on their names (in `child`).
fn prepare_root(req: &SpawnRequest) -> Result<(), String> {
    let root = &req.mountpoint;
    let opts = overlay_options(&req.lower, &req.upper, &req.work);
    mount_at(Some("overlay"), root, Some("overlay"), ROOT_FLAGS, Some(&opts))?;
    let owner = req.uid_base;

    let dev = root.join("dev");
    ensure_owned_dir(&dev, 0o755, owner)?;
    // Mount points only: the sandbox's own namespace mounts the devices and /dev/shm on them (see
    // `child`).
    for name in HOST_DEVICES {
        ensure_file(&dev.join(name))?;
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ensure_symlink(&dev.join(link), to, owner)?;
    }
    ensure_owned_dir(&dev.join("pts"), 0o755, owner)?;
    ensure_owned_dir(&dev.join("shm"), 0o1777, owner)?;
    ensure_owned_dir(&root.join("tmp"), 0o1777, owner)?;

    let agent = root.join(AGENT_PATH_IN_SANDBOX.trim_start_matches('/'));
    ensure_dir(agent.parent().expect("agent path has a parent"))?;
    ensure_file(&agent)?;
    bind_read_only(&req.agent_binary, &agent, false, false)?;
    if let Some(dial) = &req.dial_dir {
        let target = root.join(DIAL_DIR_IN_SANDBOX.trim_start_matches('/'));
        ensure_dir(&target)?;
        // Connecting to a socket needs no write access to its file system: read-only keeps the
        // sandbox from putting anything there.
        bind_read_only(dial, &target, false, true)?;
    }
    ensure_dir(&root.join("proc"))?;
    Ok(())
}

/// Runs in C, the sandbox's init-to-be. Only returns on error.
fn child(req: &SpawnRequest, sync_r: OwnedFd) -> Result<std::convert::Infallible, String> {
    let mut b = [0u8; 1];
    let n = ctx(unistd::read(sync_r.as_raw_fd(), &mut b), || "waiting for the id maps".into())?;
    if n != 1 {
        return Err("the spawner went away before releasing the sandbox".into());
    }
    drop(sync_r);
    ctx(unistd::setgroups(&[]), || "setgroups".into())?;
    ctx(unistd::setresgid(0.into(), 0.into(), 0.into()), || "setresgid".into())?;
    ctx(unistd::setresuid(0.into(), 0.into(), 0.into()), || "setresuid".into())?;

    let root = &req.mountpoint;
    // Mounts inherited from P are locked in this namespace, and pivot_root refuses a locked new root;
    // a recursive bind made here is ours (its children stay locked, which is what we want).
    let root_s = root.display().to_string();
    mount_at(Some(&root_s), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    // The devices are bound here, in the sandbox's namespace, as a restore (CRIU) binds them too:
    // a fresh sandbox and a restored one have the same mounts. Without CAP_SYS_ADMIN the sandbox
    // cannot unmount them either way.
    for name in HOST_DEVICES {
        let source = format!("/dev/{name}");
        mount_at(Some(&source), &root.join("dev").join(name), None, MsFlags::MS_BIND, None)?;
    }
    mount_at(
        Some("tmpfs"),
        &root.join("dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("mode=1777,size={}", req.shm_size_bytes.max(1 << 20))),
    )?;
    mount_at(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_at(
        Some("devpts"),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    // Hide kernel interfaces that leak host state or reach the hardware.
    let null = root.join("dev/null");
    let null_s = null.display().to_string();
    for p in ["kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms", "latency_stats"] {
        let target = root.join("proc").join(p);
        if target.exists() {
            mount_at(Some(&null_s), &target, None, MsFlags::MS_BIND, None)?;
        }
    }
    for p in ["acpi", "scsi"] {
        let target = root.join("proc").join(p);
        if target.is_dir() {
            mount_at(Some("tmpfs"), &target, Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0"))?;
        }
    }
    for p in ["bus", "fs", "irq", "sys"] {
        let target = root.join("proc").join(p);
        if target.is_dir() {
            bind_read_only(&target, &target, true, true)?;
        }
    }

    ctx(unistd::chdir(root), || "chdir to the new root".into())?;
    ctx(nix::unistd::pivot_root(".", "."), || "pivot_root".into())?;
    ctx(umount2(".", MntFlags::MNT_DETACH), || "detaching the old root".into())?;
    ctx(unistd::chdir("/"), || "chdir /".into())?;

    ctx(unistd::sethostname(&req.hostname), || "sethostname".into())?;
    loopback_up()?;
    if let Some(link) = &req.net {
        eth0_up(link)?;
    }

    drop_capabilities()?;
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", io::Error::last_os_error()));
    }
    let (main, clone3) = filters()?;
    ctx(seccompiler::apply_filter(main), || "installing seccomp filter".into())?;
    ctx(seccompiler::apply_filter(clone3), || "installing seccomp filter".into())?;

    // stdin/stdout point at the daemon's pipes; the agent needs neither (stderr is its log file).
    let devnull = ctx(fs::OpenOptions::new().read(true).write(true).open("/dev/null"), || "open /dev/null".into())?;
    ctx(unistd::dup2(devnull.as_raw_fd(), 0), || "dup2".into())?;
    ctx(unistd::dup2(devnull.as_raw_fd(), 1), || "dup2".into())?;
    drop(devnull);

    let path = CString::new(AGENT_PATH_IN_SANDBOX).expect("no NUL");
    let argv = [CString::new("warren-agent").expect("no NUL")];
    let envp: Vec<CString> = req.env.iter().filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()).collect();
    let e = unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(format!("exec {AGENT_PATH_IN_SANDBOX}: {e}"))
}

fn drop_capabilities() -> Result<(), String> {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = KEPT_CAPS.iter().copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            ctx(caps::drop(None, CapSet::Bounding, cap), || format!("dropping {cap} from the bounding set"))?;
        }
    }
    ctx(caps::clear(None, CapSet::Ambient), || "clearing ambient capabilities".into())?;
    ctx(caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new()), || {
        "clearing inheritable capabilities".into()
    })?;
    ctx(caps::set(None, CapSet::Effective, &keep), || "setting effective capabilities".into())?;
    ctx(caps::set(None, CapSet::Permitted, &keep), || "setting permitted capabilities".into())?;
    let _ = Capability::CAP_CHOWN;
    Ok(())
}

pub(super) fn sockaddr_in(a: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it by sa_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Address, netmask, up, and a default route via the gateway for `eth0`, from inside the
/// sandbox's namespaces (it still holds CAP_NET_ADMIN there; it drops it right after).
pub(super) fn eth0_up(link: &super::network::SandboxLink) -> Result<(), String> {
    // SAFETY: a plain datagram socket used only for the ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket for eth0: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket().
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"eth0\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    let mask = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(link.prefix)).unwrap_or(0));
    let fail = |what: &str| format!("{what} of eth0: {}", io::Error::last_os_error());
    // SAFETY: each ioctl reads or writes the one ifreq (or rtentry) passed to it.
    unsafe {
        ifr.ifr_ifru.ifru_addr = sockaddr_in(link.address);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &ifr) < 0 {
            return Err(fail("setting the address"));
        }
        ifr.ifr_ifru.ifru_netmask = sockaddr_in(mask);
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &ifr) < 0 {
            return Err(fail("setting the netmask"));
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(fail("reading the flags"));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(fail("bringing up"));
        }
        let mut rt: libc::rtentry = std::mem::zeroed();
        rt.rt_dst = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(link.gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) < 0 {
            return Err(fail("adding the default route"));
        }
    }
    Ok(())
}

pub(super) fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain datagram socket used only for the SIOC[GS]IFFLAGS ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket for loopback: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket().
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(format!("reading loopback flags: {}", io::Error::last_os_error()));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(format!("bringing loopback up: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}
