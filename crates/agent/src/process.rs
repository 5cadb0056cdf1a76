//! Processes started through the protocol: spawning (pipes or a PTY, as a given user), fan-out of
//! their output to every connected stream, stdin, signals, and reaping. The agent is PID 1, so it
//! also reaps orphans: one SIGCHLD loop calls `waitpid(-1)` and hands statuses of our own processes
//! to their owners; the process table lock is held across spawn so that loop cannot see an exit
//! before the process is registered.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use warren_protocol::connect::{Code, Error};
use warren_protocol::process::{
    DataEvent, EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessSelector, PtySize, StartEvent,
};

use crate::users::User;

pub type Events = mpsc::UnboundedReceiver<ProcessEvent>;

enum Stdin {
    Pipe(std::fs::File),
    Pty,
    Closed,
}

struct Proc {
    pid: u32,
    tag: Option<String>,
    config: ProcessConfig,
    stdin: Mutex<Stdin>,
    pty: Option<Arc<OwnedFd>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ProcessEvent>>>,
}

impl Proc {
    fn publish(&self, ev: ProcessEvent) {
        self.subscribers.lock().unwrap().retain(|s| s.send(ev.clone()).is_ok());
    }
}

#[derive(Default)]
struct Table {
    procs: BTreeMap<u32, Arc<Proc>>,
    waiters: BTreeMap<u32, oneshot::Sender<WaitStatus>>,
}

#[derive(Clone, Default)]
pub struct Processes {
    table: Arc<Mutex<Table>>,
}

pub struct StartOptions {
    pub config: ProcessConfig,
    pub pty: Option<PtySize>,
    pub tag: Option<String>,
    pub stdin: bool,
    pub user: User,
    pub base_env: BTreeMap<String, String>,
    pub default_cwd: Option<String>,
}

fn err(code: Code, msg: impl Into<String>) -> Error {
    Error::new(code, msg)
}

impl Processes {
    /// Starts a process and returns its pid plus a subscription that already holds the start event.
    pub fn start(&self, opts: StartOptions) -> Result<(u32, Events), Error> {
        let StartOptions { config, pty, tag, stdin, user, base_env, default_cwd } = opts;
        if config.cmd.is_empty() {
            return Err(err(Code::InvalidArgument, "process.cmd is empty"));
        }
        if let Some(t) = &tag {
            let table = self.table.lock().unwrap();
            if table.procs.values().any(|p| p.tag.as_deref() == Some(t.as_str())) {
                return Err(err(Code::AlreadyExists, format!("a process with tag {t:?} is already running")));
            }
        }
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
        env.insert("HOME".to_owned(), user.home.clone());
        env.insert("USER".to_owned(), user.name.clone());
        env.insert("LOGNAME".to_owned(), user.name.clone());
        env.insert("SHELL".to_owned(), user.shell.clone());
        env.extend(base_env);
        env.extend(config.envs.clone());
        if pty.is_some() {
            env.entry("TERM".to_owned()).or_insert_with(|| "xterm-256color".to_owned());
        }
        let cwd = config.cwd.clone().filter(|c| !c.is_empty()).or(default_cwd).unwrap_or_else(|| user.home.clone());
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(err(Code::InvalidArgument, format!("cwd {cwd:?} does not exist or is not a directory")));
        }

        let io_err = |e: io::Error| err(Code::Internal, format!("starting {}: {e}", config.cmd));
        let cloexec = |fd: &OwnedFd| {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        };
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err(e.into()));
        let pty_flag = pty.is_some();
        // (parent end kept, child end given as fd 0/1/2)
        let mut pty_master = None;
        let (mut stdin_w, mut stdout_r, mut stderr_r) = (None, None, None);
        let child_fds: [OwnedFd; 3];
        if let Some(size) = pty {
            let ws = winsize(size);
            let p = nix::pty::openpty(Some(&ws), None).map_err(|e| err(Code::Internal, format!("openpty: {e}")))?;
            cloexec(&p.master).and(cloexec(&p.slave)).map_err(|e| io_err(e.into()))?;
            let s1 = p.slave.try_clone().map_err(io_err)?;
            let s2 = p.slave.try_clone().map_err(io_err)?;
            child_fds = [p.slave, s1, s2];
            pty_master = Some(Arc::new(p.master));
        } else {
            let stdin_child = if stdin {
                let (r, w) = pipe()?;
                stdin_w = Some(w);
                r
            } else {
                std::fs::File::options().read(true).open("/dev/null").map(OwnedFd::from).map_err(io_err)?
            };
            let (or, ow) = pipe()?;
            let (er, ew) = pipe()?;
            stdout_r = Some(or);
            stderr_r = Some(er);
            child_fds = [stdin_child, ow, ew];
        }
        let env_list: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let program = crate::spawn::resolve(&config.cmd, env.get("PATH").map(String::as_str))
            .map_err(|e| err(Code::NotFound, e.to_string()))?;
        let plan = crate::spawn::Plan::new(
            &program,
            &config.cmd,
            &config.args,
            &env_list,
            &cwd,
            user.uid,
            user.gid,
            &user.groups,
            [child_fds[0].as_raw_fd(), child_fds[1].as_raw_fd(), child_fds[2].as_raw_fd()],
            pty_flag,
        )
        .map_err(|e| err(Code::InvalidArgument, format!("process config: {e}")))?;

        let (exit_tx, exit_rx) = oneshot::channel();
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let mut table = self.table.lock().unwrap();
        let pid = plan.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => err(Code::NotFound, format!("{}: command not found", config.cmd)),
            io::ErrorKind::PermissionDenied => {
                err(Code::PermissionDenied, format!("{}: permission denied", config.cmd))
            }
            _ => err(Code::Internal, format!("starting {}: {e}", config.cmd)),
        })?;
        drop(child_fds);
        table.waiters.insert(pid, exit_tx);
        let stdin_state = match (pty_flag, stdin_w) {
            (true, _) => Stdin::Pty,
            (false, Some(w)) => Stdin::Pipe(std::fs::File::from(w)),
            (false, None) => Stdin::Closed,
        };
        let _ = sub_tx.send(ProcessEvent::Start(StartEvent { pid }));
        let proc = Arc::new(Proc {
            pid,
            tag,
            config,
            stdin: Mutex::new(stdin_state),
            pty: pty_master.clone(),
            subscribers: Mutex::new(vec![sub_tx]),
        });
        table.procs.insert(pid, proc.clone());
        drop(table);

        let mut readers = Vec::new();
        if let Some(master) = pty_master {
            let fd = dup(&master).map_err(|e| err(Code::Internal, e.to_string()))?;
            readers.push(read_stream(proc.clone(), fd, DataEvent::Pty));
        } else {
            if let Some(out) = stdout_r.take() {
                readers.push(read_stream(proc.clone(), out, DataEvent::Stdout));
            }
            if let Some(e) = stderr_r.take() {
                readers.push(read_stream(proc.clone(), e, DataEvent::Stderr));
            }
        }
        let table = self.table.clone();
        tokio::spawn(async move {
            let status = exit_rx.await.ok();
            // Output still in the pipes belongs before the end event; a background grandchild may hold
            // the pipes open forever, so the wait is bounded.
            let drain = futures_util::future::join_all(readers);
            let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
            let end = end_event(status);
            proc.publish(ProcessEvent::End(end));
            proc.subscribers.lock().unwrap().clear();
            table.lock().unwrap().procs.remove(&proc.pid);
            trim_when_idle();
        });
        Ok((pid, sub_rx))
    }

    fn find(&self, sel: &Option<ProcessSelector>) -> Result<Arc<Proc>, Error> {
        let table = self.table.lock().unwrap();
        let sel = sel.as_ref().ok_or_else(|| err(Code::InvalidArgument, "process selector is missing"))?;
        let found = match (&sel.pid, &sel.tag) {
            (Some(pid), _) => table.procs.get(pid).cloned(),
            (None, Some(tag)) => table.procs.values().find(|p| p.tag.as_deref() == Some(tag.as_str())).cloned(),
            (None, None) => return Err(err(Code::InvalidArgument, "process selector needs a pid or a tag")),
        };
        found.ok_or_else(|| {
            err(
                Code::NotFound,
                format!(
                    "process {} is not running",
                    sel.pid.map(|p| p.to_string()).or(sel.tag.clone()).unwrap_or_default()
                ),
            )
        })
    }

    /// Subscribes to a running process's further events; the first event is `start`.
    pub fn connect(&self, sel: &Option<ProcessSelector>) -> Result<Events, Error> {
        let p = self.find(sel)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(ProcessEvent::Start(StartEvent { pid: p.pid }));
        p.subscribers.lock().unwrap().push(tx);
        Ok(rx)
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let table = self.table.lock().unwrap();
        table
            .procs
            .values()
            .map(|p| ProcessInfo { config: Some(p.config.clone()), pid: p.pid, tag: p.tag.clone() })
            .collect()
    }

    pub fn send_input(
        &self,
        sel: &Option<ProcessSelector>,
        stdin: Option<&[u8]>,
        pty: Option<&[u8]>,
    ) -> Result<(), Error> {
        use std::io::Write;
        let p = self.find(sel)?;
        if let Some(data) = pty {
            let master = p.pty.as_ref().ok_or_else(|| err(Code::FailedPrecondition, "process has no PTY"))?;
            return write_all_fd(master, data).map_err(|e| err(Code::Internal, format!("writing to the PTY: {e}")));
        }
        let data = stdin.unwrap_or_default();
        let mut guard = p.stdin.lock().unwrap();
        match &mut *guard {
            Stdin::Pipe(f) => {
                f.write_all(data).map_err(|e| err(Code::FailedPrecondition, format!("writing stdin: {e}")))
            }
            Stdin::Pty => {
                let master = p.pty.as_ref().expect("pty process has a master");
                write_all_fd(master, data).map_err(|e| err(Code::Internal, format!("writing to the PTY: {e}")))
            }
            Stdin::Closed => Err(err(
                Code::FailedPrecondition,
                "stdin of this process is closed (start it with stdin enabled to send input)",
            )),
        }
    }

    pub fn close_stdin(&self, sel: &Option<ProcessSelector>) -> Result<(), Error> {
        let p = self.find(sel)?;
        let mut guard = p.stdin.lock().unwrap();
        match &*guard {
            Stdin::Pty => {
                // EOF on a terminal is ^D.
                let master = p.pty.as_ref().expect("pty process has a master");
                write_all_fd(master, &[4]).map_err(|e| err(Code::Internal, e.to_string()))
            }
            _ => {
                *guard = Stdin::Closed;
                Ok(())
            }
        }
    }

    pub fn signal(&self, sel: &Option<ProcessSelector>, sig: NixSignal) -> Result<(), Error> {
        let p = self.find(sel)?;
        // The process leads its own session/group: signal the group so its children go too.
        let r = kill(Pid::from_raw(-(p.pid as i32)), sig).or_else(|_| kill(Pid::from_raw(p.pid as i32), sig));
        r.map_err(|e| err(Code::Internal, format!("signalling {}: {e}", p.pid)))
    }

    pub fn resize(&self, sel: &Option<ProcessSelector>, size: PtySize) -> Result<(), Error> {
        let p = self.find(sel)?;
        let master = p.pty.as_ref().ok_or_else(|| err(Code::FailedPrecondition, "process has no PTY to resize"))?;
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads one winsize.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(err(Code::Internal, format!("resizing the PTY: {}", io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Forwards a signal the agent received to every process it started.
    pub fn forward(&self, sig: NixSignal) {
        for pid in self.table.lock().unwrap().procs.keys() {
            let _ = kill(Pid::from_raw(-(*pid as i32)), sig);
        }
    }

    /// Reaps every exited child (ours and re-parented orphans alike).
    pub fn reap(&self) {
        loop {
            let mut table = self.table.lock().unwrap();
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        if let Some(tx) = table.waiters.remove(&(pid.as_raw() as u32)) {
                            let _ = tx.send(status);
                        }
                    }
                }
            }
            drop(table);
        }
    }
}

/// Gives freed heap pages back to the kernel once no process has ended for a second. Trimming on
/// every exit would make the next exec fault the pages in again; an idle agent should hold nothing
/// it does not use.
fn trim_when_idle() {
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mine = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if GENERATION.load(std::sync::atomic::Ordering::Relaxed) == mine {
            release_free_memory();
        }
    });
}

/// Returns free heap pages to the kernel (glibc keeps them; musl's allocator already does).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn end_event(status: Option<WaitStatus>) -> EndEvent {
    match status {
        Some(WaitStatus::Exited(_, code)) => {
            EndEvent { exit_code: code, exited: true, status: format!("exit status {code}"), error: None }
        }
        Some(WaitStatus::Signaled(_, sig, _)) => {
            EndEvent { exit_code: -1, exited: false, status: format!("signal: {}", signal_name(sig)), error: None }
        }
        _ => {
            EndEvent { exit_code: -1, exited: false, status: "unknown".into(), error: Some("exit status lost".into()) }
        }
    }
}

fn signal_name(sig: NixSignal) -> &'static str {
    match sig {
        NixSignal::SIGKILL => "killed",
        NixSignal::SIGTERM => "terminated",
        NixSignal::SIGINT => "interrupt",
        NixSignal::SIGHUP => "hangup",
        NixSignal::SIGSEGV => "segmentation fault",
        NixSignal::SIGABRT => "aborted",
        other => other.as_str(),
    }
}

fn winsize(size: PtySize) -> libc::winsize {
    libc::winsize {
        ws_row: size.rows.clamp(1, u16::MAX as u32) as u16,
        ws_col: size.cols.clamp(1, u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
    fd.try_clone()
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Publishes what `fd` yields as `wrap` events of `proc`; completes at the stream's end.
fn read_stream(proc: Arc<Proc>, fd: OwnedFd, wrap: fn(Vec<u8>) -> DataEvent) -> oneshot::Receiver<()> {
    crate::output::read(fd, Box::new(move |chunk| proc.publish(ProcessEvent::Data(wrap(chunk)))))
}
