//! Starting a user process with `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the agent's
//! memory until it execs, so no page tables are copied (on paravirtualised hosts a fork of even a
//! small process costs hundreds of microseconds). Because the child shares the agent's memory, it
//! only makes raw system calls on data prepared beforehand — no allocation, no locks, no libc
//! wrappers that could touch shared state.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Everything the child needs, prepared in the parent.
pub struct Plan {
    path: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// Descriptors to place on 0, 1 and 2.
    stdio: [RawFd; 3],
    /// New session; with a PTY on stdin, also make it the controlling terminal.
    pty: bool,
    /// Write end of a close-on-exec pipe for the errno of a failed set-up step.
    err_fd: RawFd,
    /// Signals whose disposition is not the default in the agent (handled or ignored).
    reset_signals: &'static [libc::c_int],
    /// Its read end, kept by the parent.
    err_read: OwnedFd,
    err_write: OwnedFd,
}

fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// Finds `cmd` in `path` (the child's PATH) the way a shell would.
pub fn resolve(cmd: &str, path: Option<&str>) -> io::Result<PathBuf> {
    if cmd.contains('/') {
        return Ok(PathBuf::from(cmd));
    }
    let path = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(cmd);
        if let Ok(md) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{cmd}: command not found")))
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &Path,
        argv0: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: &str,
        uid: u32,
        gid: u32,
        groups: &[u32],
        stdio: [RawFd; 3],
        pty: bool,
    ) -> io::Result<Plan> {
        let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let argv: Vec<CString> =
            std::iter::once(cstr(argv0)).chain(args.iter().map(cstr)).collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env.iter().map(|(k, v)| cstr(format!("{k}={v}"))).collect::<io::Result<_>>()?;
        let mut plan = Plan {
            path: cstr(path)?,
            argv_ptrs: Vec::new(),
            argv,
            envp_ptrs: Vec::new(),
            envp,
            cwd: cstr(cwd)?,
            uid,
            gid,
            groups: groups.to_vec(),
            stdio,
            pty,
            err_fd: err_write.as_raw_fd(),
            reset_signals: non_default_signals(),
            err_read,
            err_write,
        };
        plan.argv_ptrs = plan.argv.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        plan.envp_ptrs = plan.envp.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        Ok(plan)
    }

    /// Starts the process; returns its pid once it has exec'd, or the errno of the failed step.
    pub fn spawn(self) -> io::Result<u32> {
        let mut stack = vec![0u8; 64 * 1024];
        // The stack grows down on every architecture Warren supports; keep it 16-byte aligned.
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        // SAFETY: plain signal-mask calls on local sets. All signals stay blocked across the clone so
        // no handler of the agent runs in the child before it has reset them.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // SAFETY: CLONE_VFORK suspends this thread until the child execs or exits, so `self` and
        // the stack outlive every use the child makes of them; the child only makes raw syscalls.
        let pid = unsafe {
            libc::clone(
                child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &self as *const Plan as *mut libc::c_void,
            )
        };
        let clone_err = io::Error::last_os_error();
        // SAFETY: restoring the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return Err(clone_err);
        }
        let Plan { err_read, err_write, .. } = self;
        drop(err_write);
        // The child has exec'd (the pipe closed) or failed (it wrote its errno first).
        let mut errno = [0u8; 4];
        let n = nix::unistd::read(err_read.as_raw_fd(), &mut errno).unwrap_or(0);
        if n == 4 {
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        Ok(pid as u32)
    }
}

/// The agent's signals with a handler or ignored, found once (the handlers are installed at start):
/// the child resets just these instead of making 64 system calls per spawn.
fn non_default_signals() -> &'static [libc::c_int] {
    static SIGNALS: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(|| {
        (1..=64)
            .filter(|&sig| {
                // SAFETY: querying (not changing) a disposition into a zeroed struct.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
                r == 0 && old.sa_sigaction != libc::SIG_DFL
            })
            .collect()
    })
}

/// The kernel's `struct sigaction` on x86_64 (not libc's, whose mask is larger).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Plan`, alive until we exec or exit (CLONE_VFORK).
    let p = unsafe { &*(arg as *const Plan) };
    // SAFETY: only raw system calls on memory prepared by the parent.
    unsafe {
        let fail = |fd: RawFd| -> ! {
            let e = *libc::__errno_location();
            libc::write(fd, &e as *const i32 as *const libc::c_void, 4);
            libc::syscall(libc::SYS_exit, 127);
            unreachable!()
        };
        // A clean signal state: the agent's handlers (and Rust's ignored SIGPIPE) must not leak
        // into user code. The mask stays full until just before exec.
        let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for sig in p.reset_signals {
            libc::syscall(libc::SYS_rt_sigaction, *sig, &dfl as *const KernelSigaction, 0usize, 8usize);
        }
        for (i, fd) in p.stdio.iter().enumerate() {
            if libc::syscall(libc::SYS_dup2, *fd, i as libc::c_int) < 0 {
                fail(p.err_fd);
            }
        }
        if libc::syscall(libc::SYS_setsid) < 0 {
            fail(p.err_fd);
        }
        if p.pty && libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSCTTY, 0) < 0 {
            fail(p.err_fd);
        }
        // The OOM killer must prefer user code to PID 1 (raising a score needs no privilege).
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_write, fd, b"500".as_ptr(), 3usize);
            libc::syscall(libc::SYS_close, fd);
        }
        if libc::syscall(libc::SYS_chdir, p.cwd.as_ptr()) < 0 {
            fail(p.err_fd);
        }
        if libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) < 0
            || libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) < 0
        {
            fail(p.err_fd);
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty as *const libc::sigset_t, 0usize, 8usize);
        libc::syscall(libc::SYS_execve, p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        fail(p.err_fd)
    }
}
