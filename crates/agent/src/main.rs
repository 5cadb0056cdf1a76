//! `warren-agent`: PID 1 of every sandbox. It reaps orphans, forwards termination signals to the
//! processes it started, and serves E2B's envd protocol on the listening socket the spawner passed
//! on fd 3 (the socket file lives outside the sandbox, so nothing inside can reach or replace it).
//!
//! Where no listening socket can be handed in (gVisor cannot accept on a host socket), the agent
//! dials out instead: `WARREN_AGENT_DIAL` names a host socket the daemon listens on, and the agent
//! keeps a few connections open there, serving HTTP on each as if it had accepted it. Those
//! connections are host state that a checkpoint cannot keep (a checkpoint with one open breaks
//! the sandbox), so before one the daemon removes its socket and sends `POST /warren/quiesce`:
//! the agent closes every other host connection, answers, and closes that one too. It dials again
//! once the daemon listens again (after the checkpoint, in the source or in a restored copy).

mod files;
mod fs;
mod output;
mod process;
mod server;
mod spawn;
mod users;
mod watch;

use std::os::fd::FromRawFd;
use std::sync::{Arc, RwLock};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};

/// One line to stderr, which the spawner points at the sandbox's agent log on the host. (The agent
/// logs a handful of lines in its life; a logging framework would be most of its resident size.)
fn log(level: &str, msg: &str) {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    eprintln!("{ts:.3} {level} warren-agent: {msg}");
}

/// How the daemon reaches this agent.
enum Transport {
    /// A listening socket inherited on this fd.
    Listen(i32),
    /// A host socket to dial.
    Dial(std::path::PathBuf),
}

/// Connections kept dialed and idle in dial mode: the daemon takes one per concurrent request
/// stream, and each taken one is replaced at once.
const SPARE_CONNECTIONS: usize = 4;

fn main() {
    let transport = match std::env::var_os("WARREN_AGENT_DIAL") {
        Some(path) => Transport::Dial(path.into()),
        None => Transport::Listen(std::env::var("WARREN_LISTEN_FD").ok().and_then(|s| s.parse().ok()).unwrap_or(3)),
    };
    // Keep the agent's own configuration out of every process it starts.
    for (k, _) in std::env::vars() {
        if k.starts_with("WARREN_") {
            // SAFETY: single-threaded at this point (no runtime yet).
            unsafe { std::env::remove_var(k) };
        }
    }
    // As a sandbox's init, lead its own session: a checkpoint of the sandbox (CRIU) must find
    // every session leader inside the sandbox's pid namespace. (Fails harmlessly when it already
    // leads one, as under gVisor.)
    if std::process::id() == 1 {
        let _ = nix::unistd::setsid();
    }
    // Nothing inside the sandbox may read the agent's memory or trace it, root included (the
    // kernel would otherwise allow both to processes of the agent's own uid). See `dumpable`.
    dumpable(false);
    // A current-thread runtime keeps an idle agent small; blocking file work uses its pool.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(8).build().expect("runtime");
    rt.block_on(run(transport));
}

async fn run(transport: Transport) {
    let default_user = if users::lookup("user").is_ok() { "user" } else { "root" };
    let agent = Arc::new(server::Agent {
        processes: process::Processes::default(),
        env: RwLock::new(Default::default()),
        default_user: RwLock::new(default_user.to_owned()),
        default_workdir: RwLock::new(None),
    });

    let procs = agent.processes.clone();
    tokio::spawn(async move {
        let mut chld = signal(SignalKind::child()).expect("SIGCHLD handler");
        loop {
            procs.reap();
            chld.recv().await;
        }
    });
    for kind in [SignalKind::terminate(), SignalKind::interrupt(), SignalKind::hangup()] {
        let procs = agent.processes.clone();
        tokio::spawn(async move {
            let mut s = signal(kind).expect("signal handler");
            while s.recv().await.is_some() {
                let sig = nix::sys::signal::Signal::try_from(kind.as_raw_value())
                    .unwrap_or(nix::sys::signal::Signal::SIGTERM);
                procs.forward(sig);
            }
        });
    }

    log("info", "agent ready");
    process::release_free_memory();
    let fd = match transport {
        Transport::Listen(fd) => fd,
        Transport::Dial(path) => {
            let links = Arc::new(HostLinks::default());
            for _ in 0..SPARE_CONNECTIONS {
                tokio::spawn(dial_forever(path.clone(), agent.clone(), links.clone()));
            }
            let never: std::convert::Infallible = std::future::pending().await;
            match never {}
        }
    };
    // SAFETY: fd 3 is the listening socket the spawner placed there for us.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // The spawner hands the socket over without close-on-exec; user processes must never inherit
    // it (they could accept the daemon's connections).
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)) {
        log("error", &format!("cannot mark the listening socket close-on-exec: {e}"));
        std::process::exit(1);
    }
    std_listener.set_nonblocking(true).expect("nonblocking listener");
    let listener = tokio::net::UnixListener::from_std(std_listener).expect("listener");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log("warn", &format!("accept failed: {e}"));
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| agent.clone().handle(req));
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// The agent's connections to the daemon in dial mode: how many are open (each holds a
/// [`LinkGuard`]), the tasks serving them, and a generation bumped by a quiesce so that dialers
/// drop the spare connections they hold.
#[derive(Default)]
struct HostLinks {
    open: std::sync::atomic::AtomicUsize,
    serving: std::sync::Mutex<Vec<(u64, tokio::task::AbortHandle)>>,
    next_id: std::sync::atomic::AtomicU64,
    generation: std::sync::atomic::AtomicU64,
    quiesced: tokio::sync::Notify,
}

struct LinkGuard(Arc<HostLinks>);

impl LinkGuard {
    fn new(links: &Arc<HostLinks>) -> LinkGuard {
        links.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        LinkGuard(links.clone())
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sets whether the agent is dumpable. It is not, except between a quiesce and the next
/// connection to the daemon: a checkpoint (CRIU, on the native runtime) opens the agent's
/// namespaces from inside the sandbox's user namespace, which a non-dumpable agent refuses once it
/// has been restored (its memory then belongs to the host's user namespace).
fn dumpable(on: bool) {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) };
}

/// `POST /warren/quiesce` on connection `me`: closes every other connection to the daemon and
/// answers once only `me` is left; `Connection: close` makes the server close `me` right after.
async fn quiesce(links: &Arc<HostLinks>, me: u64) -> hyper::Response<server::Body> {
    use std::sync::atomic::Ordering::SeqCst;
    dumpable(true);
    links.generation.fetch_add(1, SeqCst);
    links.quiesced.notify_waiters();
    for (id, task) in links.serving.lock().unwrap().iter() {
        if *id != me {
            task.abort();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while links.open.load(SeqCst) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let status = if links.open.load(SeqCst) > 1 { 503 } else { 204 };
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONNECTION, "close")
        .body(server::empty_body())
        .expect("valid response")
}

/// A connection to the daemon that is never half-closed: the daemon sees it end only once the
/// agent has dropped it (taken it out of its event loop, then closed it). After a quiesce the
/// daemon waits for that end before the checkpoint, so the image holds no trace of the socket;
/// hyper's shutdown alone would show the end while the socket is still registered.
struct CloseOnDrop(tokio::net::UnixStream);

impl tokio::io::AsyncRead for CloseOnDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CloseOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Keeps one connection to the daemon dialed: once the daemon uses it (the first bytes arrive) or
/// it breaks, the next one is dialed while this one is served.
async fn dial_forever(path: std::path::PathBuf, agent: Arc<server::Agent>, links: Arc<HostLinks>) {
    use std::time::{Duration, Instant};
    let mut failing_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        let stream = match tokio::net::UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e) => {
                // The daemon is not listening (it is starting, restarting, or checkpointing this
                // sandbox). A wake waits on this dial, so retry every few milliseconds for a
                // minute, then slowly.
                let since = *failing_since.get_or_insert_with(Instant::now);
                let long = since.elapsed() > Duration::from_secs(60);
                if long && !warned {
                    warned = true;
                    log("warn", &format!("cannot reach the daemon at {}: {e}", path.display()));
                }
                tokio::time::sleep(Duration::from_millis(if long { 200 } else { 3 })).await;
                continue;
            }
        };
        // Connected again after a checkpoint (or a daemon restart): no longer dumpable.
        dumpable(false);
        let guard = LinkGuard::new(&links);
        failing_since = None;
        warned = false;
        let generation = links.generation.load(std::sync::atomic::Ordering::SeqCst);
        let quiesced = links.quiesced.notified();
        tokio::pin!(quiesced);
        if links.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            continue;
        }
        tokio::select! {
            r = stream.readable() => if r.is_err() { continue },
            // A quiesce: this spare goes (the daemon no longer listens; dialing fails until it
            // does again).
            _ = &mut quiesced => continue,
        }
        let id = links.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (agent, links2) = (agent.clone(), links.clone());
        let task = tokio::spawn(async move {
            let _guard = guard;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (agent, links) = (agent.clone(), links2.clone());
                async move {
                    if req.uri().path() == "/warren/quiesce" && req.method() == hyper::Method::POST {
                        return Ok::<_, std::convert::Infallible>(quiesce(&links, id).await);
                    }
                    agent.handle(req).await
                }
            });
            let io = TokioIo::new(CloseOnDrop(stream));
            let _ = http1::Builder::new().keep_alive(true).serve_connection(io, svc).await;
        });
        let mut serving = links.serving.lock().unwrap();
        serving.retain(|(_, t)| !t.is_finished());
        serving.push((id, task.abort_handle()));
    }
}
