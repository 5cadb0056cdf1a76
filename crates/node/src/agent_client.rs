//! HTTP/1.1 to sandbox agents over their unix sockets, with a small pool of kept-alive connections
//! per agent (a fresh connection and handshake per request cost a measurable share of an exec).
//! Used by the engine (`/init`) and by the API's proxy.
//!
//! Agents that cannot accept connections (inside gVisor) dial in instead: for those the daemon
//! listens on the sandbox's socket and "connecting" means taking the next connection the agent
//! dialed (it keeps a few ready).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type every caller converts to.
pub type Body = BoxBody<Bytes, BoxError>;

/// Idle connections kept per agent.
const IDLE_PER_AGENT: usize = 8;

/// How long a request waits for a dialing agent to offer a connection: covers a gVisor boot or
/// restore, after which the agent dials within milliseconds.
const DIAL_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Default, Clone)]
pub struct AgentClient {
    idle: Arc<Mutex<HashMap<PathBuf, Vec<SendRequest<Body>>>>>,
    /// Listeners of agents that dial in, by socket path.
    dialing: Arc<Mutex<HashMap<PathBuf, Arc<tokio::net::UnixListener>>>>,
    /// Open connections to agents that dial in: `forget` closes them all, because a checkpoint
    /// cannot save a sandbox with a host connection open.
    open: Arc<Mutex<HashMap<PathBuf, Vec<tokio::task::AbortHandle>>>>,
}

impl AgentClient {
    /// Waits up to `wait` for a dialing agent's first connection and keeps it for the next
    /// request. A restored agent dials within milliseconds; one that has not after a few seconds
    /// never will (the caller restores it again).
    pub async fn await_dial(&self, socket: &Path, wait: std::time::Duration) -> Result<(), String> {
        let sender = self.connect_within(socket, wait).await?;
        self.idle.lock().unwrap().entry(socket.to_path_buf()).or_default().push(sender);
        Ok(())
    }

    async fn connect(&self, socket: &Path) -> Result<SendRequest<Body>, String> {
        self.connect_within(socket, DIAL_IN_WAIT).await
    }

    async fn connect_within(&self, socket: &Path, wait: std::time::Duration) -> Result<SendRequest<Body>, String> {
        let listener = self.dialing.lock().unwrap().get(socket).cloned();
        let dialed = listener.is_some();
        let stream = match listener {
            Some(l) => match tokio::time::timeout(wait, l.accept()).await {
                Ok(Ok((s, _))) => s,
                Ok(Err(e)) => return Err(format!("accepting the agent's connection on {}: {e}", socket.display())),
                Err(_) => {
                    return Err(format!("the agent did not dial {} within {} s", socket.display(), wait.as_secs()))
                }
            },
            None => tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("connecting to {}: {e}", socket.display()))?,
        };
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        if dialed {
            let mut open = self.open.lock().unwrap();
            let list = open.entry(socket.to_path_buf()).or_default();
            list.retain(|t| !t.is_finished());
            list.push(task.abort_handle());
        }
        Ok(sender)
    }

    fn take_idle(&self, socket: &Path) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(socket)?;
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Sends one request to the agent listening on `socket`; the response body streams.
    pub async fn send(&self, socket: &Path, req: Request<Body>) -> Result<http::Response<Incoming>, String> {
        let mut sender = match self.take_idle(socket) {
            Some(s) => s,
            None => self.connect(socket).await?,
        };
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        // The connection is free again once this response's body has been read; park it then.
        let pool = self.idle.clone();
        let key = socket.to_path_buf();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.lock().unwrap();
                // Only for agents still known (`forget` removes killed sandboxes' entries).
                if let Some(list) = idle.get_mut(&key) {
                    if list.len() < IDLE_PER_AGENT {
                        list.push(sender);
                    }
                }
            }
        });
        Ok(resp)
    }

    /// Starts pooling connections to an agent.
    pub fn register(&self, socket: &Path) {
        self.idle.lock().unwrap().entry(socket.to_path_buf()).or_default();
    }

    /// Starts listening for an agent that dials in on `socket`: on `bound` when the runtime bound
    /// it before starting the agent, else on a socket made here (replacing a stale socket file; a
    /// listener already open is kept). The socket is connectable by anyone who can reach the
    /// file: the runtime keeps its directory private to the sandbox.
    pub fn register_dialing(
        &self,
        socket: &Path,
        bound: Option<std::os::unix::net::UnixListener>,
    ) -> Result<(), String> {
        let mut dialing = self.dialing.lock().unwrap();
        if bound.is_some() || !dialing.contains_key(socket) {
            let l = match bound {
                Some(l) => l,
                None => warren_runtime::bind_agent_socket(socket)
                    .map_err(|e| format!("listening on {}: {e}", socket.display()))?,
            };
            l.set_nonblocking(true).map_err(|e| format!("listening on {}: {e}", socket.display()))?;
            let l =
                tokio::net::UnixListener::from_std(l).map_err(|e| format!("listening on {}: {e}", socket.display()))?;
            dialing.insert(socket.to_path_buf(), Arc::new(l));
        }
        drop(dialing);
        self.register(socket);
        Ok(())
    }

    /// Before a checkpoint of a sandbox whose agent dials in: stops listening for it, and has it
    /// close every connection to the daemon (`POST /warren/quiesce`, carried by one of the
    /// connections it had dialed, which it closes last). When this returns Ok the agent holds no
    /// host connection and cannot make one until `register_dialing` listens again.
    pub async fn quiesce(&self, socket: &Path) -> Result<(), String> {
        let Some(listener) = self.dialing.lock().unwrap().remove(socket) else {
            return Err(format!("the agent on {} does not dial in", socket.display()));
        };
        let accepted = tokio::time::timeout(DIAL_IN_WAIT, listener.accept()).await;
        // With the socket gone nothing new connects, and the spares still queued are reset.
        drop(listener);
        let _ = std::fs::remove_file(socket);
        self.idle.lock().unwrap().remove(socket);
        for t in self.open.lock().unwrap().remove(socket).unwrap_or_default() {
            t.abort();
        }
        let stream = match accepted {
            Ok(Ok((s, _))) => s,
            Ok(Err(e)) => return Err(format!("accepting the agent's connection: {e}")),
            Err(_) => {
                return Err(format!("the agent did not dial {} within {} s", socket.display(), DIAL_IN_WAIT.as_secs()))
            }
        };
        // Spoken by hand rather than through hyper: the answer is not the end of it. The agent
        // closes this connection once it has let go of everything, and only that close (read
        // here as the end of the stream) says it holds no host connection a checkpoint could
        // catch half-released.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        stream
            .write_all(
                b"POST /warren/quiesce HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await
            .map_err(|e| format!("asking the agent to let go: {e}"))?;
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), (&mut stream).take(64 * 1024).read_to_end(&mut answer))
            .await
            .map_err(|_| "the agent kept its last connection open".to_owned())?
            .map_err(|e| format!("reading the agent's answer: {e}"))?;
        let status = answer.split(|&b| b == b' ').nth(1).and_then(|c| std::str::from_utf8(c).ok()).unwrap_or("");
        if status != "204" {
            let first = String::from_utf8_lossy(answer.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
            return Err(format!("the agent could not close its connections ({first:?})"));
        }
        Ok(())
    }

    /// Drops every pooled connection to an agent (its sandbox is gone), and stops listening for
    /// it if it dials in: the connections it had dialed break, which a checkpoint needs.
    pub fn forget(&self, socket: &Path) {
        self.idle.lock().unwrap().remove(socket);
        if self.dialing.lock().unwrap().remove(socket).is_some() {
            let _ = std::fs::remove_file(socket);
        }
        for t in self.open.lock().unwrap().remove(socket).unwrap_or_default() {
            t.abort();
        }
    }

    /// `GET /health` on the agent: Ok once it answered with a 2xx.
    pub async fn health(&self, socket: &Path) -> Result<(), String> {
        let req = Request::get("http://agent/health")
            .header(http::header::HOST, "agent")
            .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
            .expect("valid request");
        let resp = self.send(socket, req).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if !status.is_success() {
            return Err(format!("/health answered {status}"));
        }
        Ok(())
    }

    /// A JSON POST to the agent, expecting a 2xx. `Err(Ok(msg))` is the agent refusing the request
    /// (a 4xx: the caller's input); `Err(Err(msg))` is the agent failing or not answering.
    pub async fn post_json(
        &self,
        socket: &Path,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), Result<String, String>> {
        let bytes = Bytes::from(serde_json::to_vec(body).expect("serializes"));
        let req = Request::post(format!("http://agent{path}"))
            .header(http::header::HOST, "agent")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes).map_err(|e| match e {}).boxed())
            .expect("valid request");
        let resp = self.send(socket, req).await.map_err(Err)?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if status.is_client_error() {
            return Err(Ok(String::from_utf8_lossy(&body).trim().to_owned()));
        }
        if !status.is_success() {
            return Err(Err(format!("{path} answered {status}: {}", String::from_utf8_lossy(&body))));
        }
        Ok(())
    }

    /// Runs a command to completion through the agent's `process.Process/Start` stream (JSON
    /// codec), discarding its output. Used to warm a pool's ready sandbox: the first command in a
    /// fresh sandbox pays for cold overlay lookups and a fresh agent connection, so a ready
    /// sandbox pays them before anyone waits.
    /// Runs a command in the sandbox to its end (output dropped). Returns its exit code.
    pub async fn run_quietly(&self, socket: &Path, cmd: &str, args: &[&str]) -> Result<i32, String> {
        self.run(socket, serde_json::json!({"process": {"cmd": cmd, "args": args}})).await
    }

    /// Runs a `process.Process/Start` request (its JSON form) to the end; returns the exit code
    /// (-1 when the stream ended without one).
    pub async fn run(&self, socket: &Path, start: serde_json::Value) -> Result<i32, String> {
        let msg = serde_json::to_vec(&start).expect("serializes");
        let mut frame = Vec::with_capacity(5 + msg.len());
        frame.push(0u8);
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        let req = Request::post("http://agent/process.Process/Start")
            .header(http::header::HOST, "agent")
            .header(http::header::CONTENT_TYPE, "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(http_body_util::Full::new(Bytes::from(frame)).map_err(|e| match e {}).boxed())
            .expect("valid request");
        let resp = self.send(socket, req).await?;
        let status = resp.status();
        // The stream ends when the process does.
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("process.Process/Start answered {status}"));
        }
        // Connect envelopes: flags, big-endian length, JSON. The `end` event carries the code
        // (proto3 JSON leaves a zero out).
        let mut rest = &body[..];
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let Some(msg) = rest.get(5..5 + len) else { break };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(msg) {
                if let Some(end) = v.pointer("/event/end") {
                    return Ok(end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0) as i32);
                }
                if let Some(e) = v.get("error") {
                    return Err(format!("the agent refused the command: {e}"));
                }
            }
            rest = &rest[5 + len..];
        }
        Ok(-1)
    }
}
