//! The spawner zygote. Exec'ing the daemon's binary for every sandbox costs a few milliseconds of
//! exec and dynamic start-up; instead, while the daemon is still single-threaded, it forks one
//! helper process that stays single-threaded and forks a fresh spawner (P in `spawn.rs`) per
//! request. Requests arrive over a SOCK_SEQPACKET socket with two descriptors: the agent's log
//! file and the write end of a pipe for the result.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

use super::spawn::{self, SpawnRequest, SpawnResult};

const MAX_REQUEST: usize = 256 * 1024;

pub struct Zygote {
    sock: Mutex<OwnedFd>,
    pid: i32,
}

impl Zygote {
    /// Forks the zygote.
    ///
    /// # Safety
    /// The calling process must be single-threaded: the child continues running Rust code after
    /// `fork`. This is checked (`/proc/self/task`) and refused otherwise.
    pub unsafe fn start() -> io::Result<Zygote> {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 {
            return Err(io::Error::other(format!(
                "the zygote must be forked while single-threaded ({threads} threads)"
            )));
        }
        // Compile the seccomp filters once here; every spawner forked later inherits them.
        spawn::filters().map_err(io::Error::other)?;
        let (parent, child) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(io::Error::from)?;
        // SAFETY: single-threaded (checked above), so the child may keep running ordinary code.
        match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
            nix::unistd::ForkResult::Child => {
                drop(parent);
                // SAFETY: plain prctl; the zygote must not outlive the daemon.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                close_inherited(child.as_raw_fd());
                serve(child)
            }
            nix::unistd::ForkResult::Parent { child: pid } => {
                drop(child);
                Ok(Zygote { sock: Mutex::new(parent), pid: pid.as_raw() })
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Boots a sandbox through the zygote. `log` becomes the agent's stderr.
    pub fn spawn(&self, req: &SpawnRequest, log: BorrowedFd<'_>) -> io::Result<SpawnResult> {
        let body = serde_json::to_vec(req).map_err(io::Error::other)?;
        if body.len() > MAX_REQUEST {
            return Err(io::Error::other("spawn request too large"));
        }
        let (reply_r, reply_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        {
            let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
            let fds = [log.as_raw_fd(), reply_w.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&body)], &cmsg, MsgFlags::empty(), None)
                .map_err(io::Error::from)?;
        }
        drop(reply_w);
        let mut out = String::new();
        std::fs::File::from(reply_r).read_to_string(&mut out)?;
        serde_json::from_str(&out)
            .map_err(|_| io::Error::other(format!("the zygote's spawner answered {out:?}; see the agent log")))
    }
}

/// Closes every descriptor the daemon had open except stdio and `keep`: the zygote and the
/// spawners it forks must not hold the daemon's files — above all its data-directory lock, which
/// would otherwise outlive a killed daemon until the zygote noticed and block the next start.
fn close_inherited(keep: RawFd) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: closing descriptors this single-threaded child will never use; the one that read
        // /proc/self/fd is already closed, so EBADF at worst.
        unsafe { libc::close(fd) };
    }
}

/// Makes `fd` available as `target` across exec. dup2 clears close-on-exec on the copy, but does
/// nothing at all when the two are already the same descriptor, so that case clears it by hand.
fn keep_as(fd: RawFd, target: RawFd) -> bool {
    if fd == target {
        // SAFETY: fcntl on a descriptor this process owns.
        return unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == 0;
    }
    nix::unistd::dup2(fd, target).is_ok()
}

/// The zygote's loop. Never returns; exits when the daemon closes its end.
fn serve(sock: OwnedFd) -> ! {
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        // Reap spawners that finished since the last request.
        while let Ok(status) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let received = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC);
        let (len, fds) = match received {
            Ok(msg) if msg.bytes == 0 => std::process::exit(0),
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(r) = c {
                            // SAFETY: the kernel just installed these descriptors for us.
                            fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        let [log, reply]: [OwnedFd; 2] = match fds.try_into() {
            Ok(f) => f,
            Err(_) => continue,
        };
        // SAFETY: the zygote is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let result = match serde_json::from_slice::<SpawnRequest>(&buf[..len]) {
                    Err(e) => {
                        SpawnResult { pid: None, start_time: None, error: Some(format!("bad spawn request: {e}")) }
                    }
                    Ok(req) => {
                        let ok = keep_as(log.as_raw_fd(), 2);
                        if ok {
                            spawn::run(&req)
                        } else {
                            SpawnResult { pid: None, start_time: None, error: Some("dup2 failed".into()) }
                        }
                    }
                };
                let mut f = std::fs::File::from(reply);
                let _ =
                    std::io::Write::write_all(&mut f, serde_json::to_string(&result).unwrap_or_default().as_bytes());
                // SAFETY: leave without running the daemon's atexit handlers in this copy.
                unsafe { libc::_exit(0) };
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => {}
            Err(e) => {
                let r = SpawnResult { pid: None, start_time: None, error: Some(format!("fork: {e}")) };
                let mut f = std::fs::File::from(reply);
                let _ = std::io::Write::write_all(&mut f, serde_json::to_string(&r).unwrap_or_default().as_bytes());
            }
        }
        drop(log);
    }
}
