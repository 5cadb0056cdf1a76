//! `warren-agent`: PID 1 of every sandbox. It reaps orphans, forwards termination signals to the
//! processes it started, and serves E2B's envd protocol on the listening socket the spawner passed
//! on fd 3 (the socket file lives outside the sandbox, so nothing inside can reach or replace it).

mod files;
mod fs;
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

fn main() {
    let fd: i32 = std::env::var("WARREN_LISTEN_FD").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    // Keep the agent's own configuration out of every process it starts.
    for (k, _) in std::env::vars() {
        if k.starts_with("WARREN_") {
            // SAFETY: single-threaded at this point (no runtime yet).
            unsafe { std::env::remove_var(k) };
        }
    }
    // A current-thread runtime keeps an idle agent small; blocking file work uses its pool.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(8).build().expect("runtime");
    rt.block_on(run(fd));
}

async fn run(fd: i32) {
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
