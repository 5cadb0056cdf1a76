//! Starting CRIU without copying the daemon. `Command` with a `pre_exec` step forks: the child
//! gets a copy of the daemon's page tables, the daemon takes copy-on-write faults until the child
//! execs, and the exec tears the copy down again. On these virtual machines every page-table
//! change is dear: a perf profile of a fork of 100 clones put ≈ 12 ms of the daemon's CPU into
//! each CRIU start. Here the child shares the daemon's memory until it execs (vfork, as
//! `posix_spawn` does), so none of that happens.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// What the child runs before it execs; an errno fails the start.
pub type BeforeExec<'a> = &'a mut dyn FnMut() -> Result<(), i32>;

/// A child started by [`spawn`]; reaped by [`Child::wait`] (or on drop, after a kill).
pub struct Child {
    pid: i32,
    reaped: bool,
}

struct Context<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    before_exec: BeforeExec<'a>,
    /// Stdin and stdout are /dev/null; stderr is `stderr` (or /dev/null too).
    null: i32,
    stderr: i32,
    error_w: i32,
    mask: libc::sigset_t,
    last_signal: libc::c_int,
}

/// Tells the parent why the child could not exec, and leaves.
fn fail(error_w: i32, errno: i32) -> ! {
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(error_w, (&errno as *const i32).cast(), 4);
        libc::_exit(127)
    }
}

/// Runs in the child, on its own stack but in the daemon's memory: only raw syscalls, nothing
/// that allocates, locks or unwinds.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Context`, alive while the parent is suspended (CLONE_VFORK).
    let ctx = unsafe { &mut *(arg as *mut Context<'_>) };
    // The daemon's signal handlers are its own code and must never run here: every signal gets
    // its default action (the table is this child's copy: no CLONE_SIGHAND), then the mask the
    // caller had comes back.
    for sig in 1..=ctx.last_signal {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed sigaction is SIG_DFL with no flags.
        unsafe {
            let dfl: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }
    // SAFETY: restores the mask saved by the parent.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &ctx.mask, std::ptr::null_mut()) };
    // SAFETY: dup2 on descriptors the parent keeps open until the child has exec'd.
    if unsafe { libc::dup2(ctx.null, 0) < 0 || libc::dup2(ctx.null, 1) < 0 || libc::dup2(ctx.stderr, 2) < 0 } {
        fail(ctx.error_w, io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    if let Err(errno) = (ctx.before_exec)() {
        fail(ctx.error_w, errno);
    }
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: pointers prepared by the parent; environ is the daemon's environment.
    unsafe { libc::execve(ctx.program, ctx.argv, environ) };
    fail(ctx.error_w, io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

/// Starts `program` with `args` (argv[0] included), stdin and stdout on /dev/null and stderr on
/// `stderr` (or /dev/null), running `before_exec` in the child first.
///
/// # Safety
/// `before_exec` runs in a child that shares this process's memory: it may only make raw,
/// async-signal-safe syscalls on memory prepared beforehand, and must not panic.
pub unsafe fn spawn(
    program: &Path,
    args: &[&OsStr],
    stderr: Option<BorrowedFd<'_>>,
    before_exec: BeforeExec<'_>,
) -> io::Result<Child> {
    let c = |s: &OsStr| {
        CString::new(s.as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} holds a NUL byte")))
    };
    let program = c(program.as_os_str())?;
    let args = args.iter().map(|a| c(a)).collect::<io::Result<Vec<_>>>()?;
    let null = std::fs::File::open("/dev/null")?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let (error_r, error_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: plain sigset_t values filled by libc.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: as above; signals stay blocked in this thread until the child has exec'd.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut ctx = Context {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        before_exec,
        null: null.as_raw_fd(),
        stderr: stderr.map_or(null.as_raw_fd(), |e| e.as_raw_fd()),
        error_w: error_w.as_raw_fd(),
        mask: old,
        last_signal: libc::SIGRTMAX(),
    };
    let mut stack = vec![0u8; 256 * 1024];
    // The stack grows down from its 16-byte aligned end.
    let top = ((stack.as_mut_ptr() as usize + stack.len()) & !15) as *mut libc::c_void;
    // SAFETY: CLONE_VFORK suspends this thread until the child execs or exits, so `ctx`, `argv`
    // and `stack` outlive every use the child makes of them.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut ctx as *mut Context<'_>).cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(error_w);
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let mut child = Child { pid, reaped: false };
    let mut errno = [0u8; 4];
    // The write end closed on exec (CLOEXEC): nothing to read means the program runs.
    match nix::unistd::read(error_r.as_raw_fd(), &mut errno) {
        Ok(4) => {
            let _ = child.wait();
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok(child),
    }
}

impl Child {
    /// Waits for the child to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                self.reaped = true;
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Kills the child and reaps it (a pid not yet reaped cannot have been reused).
    pub fn kill(&mut self) {
        if !self.reaped {
            // SAFETY: signals our own child, which is not reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(a: &[&'a str]) -> Vec<&'a OsStr> {
        a.iter().map(|s| OsStr::new(*s)).collect()
    }

    #[test]
    fn runs_the_program_after_the_step_and_reports_its_status() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let w_fd = w.as_raw_fd();
        let mut step = move || {
            // SAFETY: dup2 onto stdout in the child.
            if unsafe { libc::dup2(w_fd, 1) } < 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
            }
            Ok(())
        };
        let sh = Path::new("/bin/sh");
        // SAFETY: the step makes one raw syscall.
        let mut child = unsafe { spawn(sh, &args(&["sh", "-c", "echo hi; exit 3"]), None, &mut step) }.unwrap();
        drop(w);
        let mut out = String::new();
        io::Read::read_to_string(&mut std::fs::File::from(r), &mut out).unwrap();
        assert_eq!(out, "hi\n");
        assert_eq!(child.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn a_failed_step_or_exec_is_an_error_and_leaves_no_child() {
        let mut fails = || Err(libc::EPERM);
        let sh = Path::new("/bin/sh");
        // SAFETY: the step makes no syscall at all.
        let e = unsafe { spawn(sh, &args(&["sh"]), None, &mut fails) }.err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut ok = || Ok(());
        let missing = Path::new("/nonexistent/program");
        // SAFETY: as above.
        let e = unsafe { spawn(missing, &args(&["x"]), None, &mut ok) }.err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
