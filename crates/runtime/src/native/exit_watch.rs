//! Waiting for a sandbox's init to exit, through a pidfd: immune to pid reuse, and it works both for
//! our own children (the daemon is a subreaper, so a sandbox's init becomes its child when the
//! spawner exits) and for processes re-attached after a daemon restart.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::Exit;

#[derive(Debug)]
pub struct ExitWatch {
    pidfd: OwnedFd,
    pid: i32,
}

impl ExitWatch {
    /// Opens a pidfd for `pid` and checks that it is still the process that started at `start_time`.
    pub fn open(pid: i32, start_time: u64) -> io::Result<ExitWatch> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening the pidfd: if the pid was recycled before the open, the start time differs.
        match super::spawn::read_start_time(pid) {
            Some(t) if t == start_time => Ok(ExitWatch { pidfd, pid }),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "process is gone or the pid was reused")),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends SIGKILL through the pidfd (never hits a recycled pid).
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo and no flags.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0)
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Whether the process has exited already (without reaping it).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Resolves when the process has exited, reaping it when it is our child.
    pub async fn wait(self) -> Exit {
        // SAFETY: we own the pidfd and hand it over; nothing else registers or closes it.
        let Ok(afd) = (unsafe { AsyncFd::register_with_interest(self.pidfd, tokio::io::Interest::READABLE) }) else {
            return Exit::Unknown;
        };
        match afd.readable().await {
            Ok(mut guard) => guard.retain_ready(),
            Err(_) => return Exit::Unknown,
        }
        reap(afd.get_ref())
    }
}

fn reap(pidfd: &OwnedFd) -> Exit {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with P_PIDFD on a valid pidfd and a valid siginfo pointer.
    let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
    if r < 0 {
        return Exit::Unknown;
    }
    // SAFETY: for CLD_* codes the kernel filled si_status.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
        _ => Exit::Unknown,
    }
}
