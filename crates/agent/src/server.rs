//! The agent's HTTP server: routes Connect RPC calls and the plain `/files`, `/health`, `/envs` and
//! `/init` endpoints. (`/metrics` of a sandbox is answered by the daemon, which sees its cgroup and
//! disk quota.)

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use warren_protocol::connect::{self, Code, Error};
use warren_protocol::filesystem as pfs;
use warren_protocol::process::{self as pp, EventResponse, ProcessEvent};

use crate::fs;
use crate::process::{Processes, StartOptions};
use crate::users::{self, User};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const MAX_UNARY_BODY: usize = 16 * 1024 * 1024;

/// Settings the daemon pushes with `POST /init` (E2B envd's shape).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InitRequest {
    pub env_vars: Option<BTreeMap<String, String>>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
}

pub struct Agent {
    pub processes: Processes,
    pub env: RwLock<BTreeMap<String, String>>,
    pub default_user: RwLock<String>,
    pub default_workdir: RwLock<Option<String>>,
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("valid response")
}

/// An empty body.
pub fn empty_body() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    full(status, "application/json", serde_json::to_vec(v).expect("serializes"))
}

fn connect_error(e: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, e)
}

/// Plain-HTTP error body (`/files` and friends), E2B's `{code, message}`.
pub fn http_error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    #[derive(Serialize)]
    struct E {
        code: u16,
        message: String,
    }
    json(status, &E { code: status.as_u16(), message: message.into() })
}

impl Agent {
    /// Who the caller runs as: `Authorization: Basic base64("<user>:")`, else the default user.
    fn user(&self, headers: &HeaderMap, query_user: Option<&str>) -> Result<User, Error> {
        let named = query_user.filter(|u| !u.is_empty()).map(str::to_owned).or_else(|| {
            let h = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
            let b64 = h.strip_prefix("Basic ")?;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
            let s = String::from_utf8(raw).ok()?;
            let name = s.split(':').next()?.to_owned();
            (!name.is_empty()).then_some(name)
        });
        let name = named.unwrap_or_else(|| self.default_user.read().unwrap().clone());
        users::lookup(&name).map_err(|e| Error::new(Code::InvalidArgument, e.to_string()))
    }

    /// The user for `/files`: the `username` query parameter, else the Authorization header.
    pub fn user_for_files(&self, headers: &HeaderMap, query_user: Option<&str>) -> Result<User, Error> {
        self.user(headers, query_user)
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let resp = match (method, path.as_str()) {
            (Method::GET, "/health") => {
                Response::builder().status(204).body(Full::new(Bytes::new()).boxed_unsync()).unwrap()
            }
            (Method::GET, "/envs") => json(StatusCode::OK, &*self.env.read().unwrap()),
            (Method::POST, "/init") => self.init(req).await,
            (Method::GET, "/files") => crate::files::download(&self, req).await,
            (Method::POST, "/files") => crate::files::upload(&self, req).await,
            (Method::POST, p) if is_rpc_path(p) => self.rpc(req).await,
            (_, "/health" | "/envs" | "/init" | "/files") => {
                let r = http_error(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed on {path}"));
                drained(req.into_body(), r).await
            }
            _ => drained(req.into_body(), http_error(StatusCode::NOT_FOUND, format!("no such endpoint {path}"))).await,
        };
        Ok(resp)
    }

    async fn init(&self, req: Request<Incoming>) -> Response<Body> {
        let mut body = req.into_body();
        let body = match read_body(&mut body, MAX_UNARY_BODY).await {
            Ok(b) => b,
            Err(e) => return drained(body, connect_error(&e)).await,
        };
        let init: InitRequest = match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => return http_error(StatusCode::BAD_REQUEST, format!("invalid init body: {e}")),
        };
        // Check everything before changing anything: a refused init leaves the agent as it was.
        if let Some(u) = &init.default_user {
            if let Err(e) = users::lookup(u) {
                return http_error(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
        if let Some(env) = init.env_vars {
            self.env.write().unwrap().extend(env);
        }
        if let Some(u) = init.default_user {
            *self.default_user.write().unwrap() = u;
        }
        if let Some(w) = init.default_workdir {
            *self.default_workdir.write().unwrap() = Some(w);
        }
        Response::builder().status(204).body(Full::new(Bytes::new()).boxed_unsync()).unwrap()
    }

    async fn rpc(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let headers = req.headers().clone();
        let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let Some((codec, streaming)) = connect::Codec::from_content_type(&ct) else {
            let r = http_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {ct:?} is not supported: use application/(connect+)json or application/(connect+)proto"),
            );
            return drained(req.into_body(), r).await;
        };
        let user = match self.user(&headers, None) {
            Ok(u) => u,
            Err(e) => {
                let r = if streaming { stream_error(e) } else { connect_error(&e) };
                return drained(req.into_body(), r).await;
            }
        };
        let method = path.rsplit('/').next().unwrap_or_default().to_owned();
        let service = &path[1..path.len() - method.len() - 1];
        let Some((req_type, resp_type)) = warren_protocol::proto::method_types(service, &method) else {
            let e = Error::new(Code::Unimplemented, format!("unknown method {path}"));
            return drained(req.into_body(), if streaming { stream_error(e) } else { connect_error(&e) }).await;
        };
        if service == pp::SERVICE && method == "StreamInput" {
            return self.stream_input(req, codec).await;
        }
        let mut body = req.into_body();
        let raw = match read_body(&mut body, MAX_UNARY_BODY).await {
            Ok(b) => b,
            Err(e) => return drained(body, if streaming { stream_error(e) } else { connect_error(&e) }).await,
        };
        let msg = if streaming {
            let mut d = connect::Decoder::default();
            d.push(&raw);
            match d.next_frame() {
                Ok(Some(f)) => f.payload,
                Ok(None) => return stream_error(Error::new(Code::InvalidArgument, "request envelope is incomplete")),
                Err(e) => return stream_error(Error::new(Code::InvalidArgument, e.to_string())),
            }
        } else {
            raw
        };
        let msg = match codec.request_json(req_type, &msg) {
            Ok(m) => m,
            Err(e) => return if streaming { stream_error(e) } else { connect_error(&e) },
        };
        let opts = StreamOpts::from_headers(&headers, codec, resp_type);
        match (service, method.as_str(), streaming) {
            (pp::SERVICE, "Start", true) => match parse::<pp::StartRequest>(&msg) {
                Ok(r) => self.start(r, user, opts),
                Err(e) => stream_error(e),
            },
            (pp::SERVICE, "Connect", true) => match parse::<pp::ConnectRequest>(&msg) {
                Ok(r) => match self.processes.connect(&r.process) {
                    Ok(events) => event_stream(events, opts),
                    Err(e) => stream_error(e),
                },
                Err(e) => stream_error(e),
            },
            (pfs::SERVICE, "WatchDir", true) => match parse::<pfs::WatchDirRequest>(&msg) {
                Ok(r) => crate::watch::watch_dir(r, user, opts).await,
                Err(e) => stream_error(e),
            },
            (_, _, true) => stream_error(Error::new(Code::Unimplemented, format!("{path} is not a streaming method"))),
            (_, _, false) => match self.unary(service, &method, &msg, user).await {
                Ok(v) => full(StatusCode::OK, codec.content_type(false), codec.encode(resp_type, &v)),
                Err(e) => connect_error(&e),
            },
        }
    }

    fn start(&self, r: pp::StartRequest, user: User, opts: StreamOpts) -> Response<Body> {
        let Some(config) = r.process else {
            return stream_error(Error::new(Code::InvalidArgument, "process config is missing"));
        };
        let start = StartOptions {
            config,
            pty: r.pty.map(|p| p.size.unwrap_or(pp::PtySize { cols: 80, rows: 24 })),
            tag: r.tag,
            stdin: r.stdin.unwrap_or(true),
            user,
            base_env: self.env.read().unwrap().clone(),
            default_cwd: self.default_workdir.read().unwrap().clone(),
        };
        match self.processes.start(start) {
            Ok((_pid, events)) => event_stream(events, opts),
            Err(e) => stream_error(e),
        }
    }

    async fn unary(&self, service: &str, method: &str, msg: &[u8], user: User) -> Result<serde_json::Value, Error> {
        use serde_json::to_value;
        let v =
            |r: Result<serde_json::Value, serde_json::Error>| r.map_err(|e| Error::new(Code::Internal, e.to_string()));
        match (service, method) {
            (pp::SERVICE, "List") => {
                // No fields, but a body that is not a message is still the caller's mistake.
                let _: serde_json::Map<String, serde_json::Value> = parse(msg)?;
                v(to_value(pp::ListResponse { processes: self.processes.list() }))
            }
            (pp::SERVICE, "SendInput") => {
                let r: pp::SendInputRequest = parse(msg)?;
                let input = r.input.unwrap_or_default();
                self.processes.send_input(&r.process, input.stdin.as_deref(), input.pty.as_deref())?;
                Ok(serde_json::json!({}))
            }
            (pp::SERVICE, "SendSignal") => {
                let r: pp::SendSignalRequest = parse(msg)?;
                let sig = match r.signal {
                    pp::Signal::Kill => nix::sys::signal::Signal::SIGKILL,
                    pp::Signal::Term => nix::sys::signal::Signal::SIGTERM,
                    pp::Signal::Unspecified => return Err(Error::new(Code::InvalidArgument, "signal is unspecified")),
                };
                self.processes.signal(&r.process, sig)?;
                Ok(serde_json::json!({}))
            }
            (pp::SERVICE, "CloseStdin") => {
                let r: pp::CloseStdinRequest = parse(msg)?;
                self.processes.close_stdin(&r.process)?;
                Ok(serde_json::json!({}))
            }
            (pp::SERVICE, "Update") => {
                let r: pp::UpdateRequest = parse(msg)?;
                if let Some(size) = r.pty.and_then(|p| p.size) {
                    self.processes.resize(&r.process, size)?;
                }
                Ok(serde_json::json!({}))
            }
            (pfs::SERVICE, "Stat") => {
                let r: pfs::PathRequest = parse(msg)?;
                let p = fs::resolve(&r.path, &user)?;
                let e = fs::run_as(user, move || fs::stat(&p)).await?;
                v(to_value(pfs::EntryResponse { entry: Some(e) }))
            }
            (pfs::SERVICE, "MakeDir") => {
                let r: pfs::PathRequest = parse(msg)?;
                let p = fs::resolve(&r.path, &user)?;
                let e = fs::run_as(user, move || fs::make_dir(&p)).await?;
                v(to_value(pfs::EntryResponse { entry: Some(e) }))
            }
            (pfs::SERVICE, "Move") => {
                let r: pfs::MoveRequest = parse(msg)?;
                let from = fs::resolve(&r.source, &user)?;
                let to = fs::resolve(&r.destination, &user)?;
                let e = fs::run_as(user, move || fs::move_path(&from, &to)).await?;
                v(to_value(pfs::EntryResponse { entry: Some(e) }))
            }
            (pfs::SERVICE, "ListDir") => {
                let r: pfs::ListDirRequest = parse(msg)?;
                let p = fs::resolve(&r.path, &user)?;
                let depth = r.depth;
                let entries = fs::run_as(user, move || fs::list_dir(&p, depth)).await?;
                v(to_value(pfs::ListDirResponse { entries }))
            }
            (pfs::SERVICE, "Remove") => {
                let r: pfs::PathRequest = parse(msg)?;
                let p = fs::resolve(&r.path, &user)?;
                fs::run_as(user, move || fs::remove(&p)).await?;
                Ok(serde_json::json!({}))
            }
            (pfs::SERVICE, "CreateWatcher") => {
                let r: pfs::WatchDirRequest = parse(msg)?;
                let id = crate::watch::create_watcher(r, user).await?;
                v(to_value(pfs::CreateWatcherResponse { watcher_id: id }))
            }
            (pfs::SERVICE, "GetWatcherEvents") => {
                let r: pfs::WatcherIdRequest = parse(msg)?;
                let events = crate::watch::take_events(&r.watcher_id)?;
                v(to_value(pfs::GetWatcherEventsResponse { events }))
            }
            (pfs::SERVICE, "RemoveWatcher") => {
                let r: pfs::WatcherIdRequest = parse(msg)?;
                crate::watch::remove_watcher(&r.watcher_id)?;
                Ok(serde_json::json!({}))
            }
            _ => Err(Error::new(Code::Unimplemented, format!("unknown method /{service}/{method}"))),
        }
    }

    /// `StreamInput`: a client stream of `start`, then `data`/`keepalive` messages.
    async fn stream_input(&self, req: Request<Incoming>, codec: connect::Codec) -> Response<Body> {
        let mut body = req.into_body();
        let mut dec = connect::Decoder::default();
        let mut target: Option<Option<pp::ProcessSelector>> = None;
        loop {
            loop {
                let frame = match dec.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return closing_stream_error(Error::new(Code::InvalidArgument, e.to_string())),
                };
                if frame.flags & connect::FLAG_END_STREAM != 0 {
                    continue;
                }
                let json = match codec.request_json("process.StreamInputRequest", &frame.payload) {
                    Ok(j) => j,
                    Err(e) => return closing_stream_error(e),
                };
                let msg: pp::StreamInputRequest = match parse(&json) {
                    Ok(m) => m,
                    Err(e) => return closing_stream_error(e),
                };
                if let Some(start) = msg.start {
                    target = Some(start.process);
                } else if let Some(data) = msg.data {
                    let Some(sel) = &target else {
                        return closing_stream_error(Error::new(Code::InvalidArgument, "data sent before start"));
                    };
                    let input = data.input.unwrap_or_default();
                    if let Err(e) = self.processes.send_input(sel, input.stdin.as_deref(), input.pty.as_deref()) {
                        return closing_stream_error(e);
                    }
                }
            }
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        dec.push(&data);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        let mut out = codec.envelope("process.StreamInputResponse", &serde_json::json!({})).to_vec();
        out.extend_from_slice(&connect::end_envelope(None));
        full(StatusCode::OK, codec.content_type(true), out)
    }
}

/// Stream options from request headers, and how to encode the stream's messages.
#[derive(Clone, Copy)]
pub struct StreamOpts {
    pub keepalive: Option<Duration>,
    pub deadline: Option<Duration>,
    pub codec: connect::Codec,
    /// The response message type (for the protobuf codec).
    pub message: &'static str,
}

impl StreamOpts {
    fn from_headers(h: &HeaderMap, codec: connect::Codec, message: &'static str) -> StreamOpts {
        let num = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
        StreamOpts {
            // Bounded so that no header value can overflow a timer (a day between keepalives,
            // a year of deadline: more means the same as none).
            keepalive: num("keepalive-ping-interval").filter(|s| *s > 0).map(|s| Duration::from_secs(s.min(86_400))),
            deadline: num("connect-timeout-ms")
                .filter(|s| *s > 0)
                .map(|ms| Duration::from_millis(ms.min(365 * 86_400_000))),
            codec,
            message,
        }
    }
}

fn parse<T: DeserializeOwned>(msg: &[u8]) -> Result<T, Error> {
    let msg = if msg.is_empty() { &b"{}"[..] } else { msg };
    serde_json::from_slice(msg).map_err(|e| Error::new(Code::InvalidArgument, format!("invalid request message: {e}")))
}

pub async fn read_body(body: &mut Incoming, limit: usize) -> Result<Bytes, Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::new(Code::Canceled, format!("reading request body: {e}")))?;
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > limit {
                return Err(Error::new(Code::ResourceExhausted, format!("request body is larger than {limit} bytes")));
            }
            buf.extend_from_slice(&d);
        }
    }
    Ok(buf.freeze())
}

/// Answers `resp` once what is left of the request's body has been read and dropped, so the
/// connection stays usable for the next request and the caller gets this answer rather than a
/// broken pipe (an unread body makes the server close the connection, and a client still writing
/// it, or with its next request queued there, sees that fail instead). A body that never ends keeps
/// only its own connection busy.
pub async fn drained(mut body: Incoming, resp: Response<Body>) -> Response<Body> {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return closing(resp);
        }
    }
    resp
}

/// An end-stream error for a client stream given up before its body ended.
fn closing_stream_error(e: Error) -> Response<Body> {
    closing(stream_error(e))
}

/// `resp` with `Connection: close`: for answers sent before the request's body was read.
pub fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}

/// Whether a path has the shape of a Connect call, `/<package>.<Service>/<Method>`: such paths
/// answer Connect's `unimplemented` when unknown, as a Connect client expects.
fn is_rpc_path(p: &str) -> bool {
    let mut parts = p.strip_prefix('/').unwrap_or("").split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(s), Some(m), None) if s.contains('.') && !m.is_empty())
}

/// A streaming response that carries only an end-stream error.
pub fn stream_error(e: Error) -> Response<Body> {
    full(StatusCode::OK, "application/connect+json", connect::end_envelope(Some(e)))
}

/// A streaming response fed by a channel of envelopes.
pub fn channel_stream(rx: mpsc::Receiver<Bytes>, codec: connect::Codec) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, codec.content_type(true))
        .body(StreamBody::new(stream.boxed()).boxed_unsync())
        .expect("valid response")
}

fn event_stream(mut events: crate::process::Events, opts: StreamOpts) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = opts.deadline.map(|d| tokio::time::Instant::now() + d);
        let mut ka = opts.keepalive.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        loop {
            let sleep_until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match ka.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        let end = matches!(ev, ProcessEvent::End(_));
                        if tx.send(opts.codec.envelope(opts.message, &EventResponse { event: ev })).await.is_err() {
                            return;
                        }
                        if end {
                            let _ = tx.send(connect::end_envelope(None)).await;
                            return;
                        }
                    }
                    None => {
                        let _ = tx.send(connect::end_envelope(None)).await;
                        return;
                    }
                },
                _ = tick => {
                    let ka = EventResponse { event: ProcessEvent::Keepalive(pp::Empty {}) };
                    if tx.send(opts.codec.envelope(opts.message, &ka)).await.is_err() {
                        return;
                    }
                }
                // The caller's deadline ends the stream, never the process.
                _ = sleep_until => {
                    let e = Error::new(Code::DeadlineExceeded, "the stream's deadline passed; the process keeps running");
                    let _ = tx.send(connect::end_envelope(Some(e))).await;
                    return;
                }
            }
        }
    });
    channel_stream(rx, opts.codec)
}

#[cfg(test)]
mod tests {
    use super::is_rpc_path;

    #[test]
    fn connect_shaped_paths_are_told_apart_from_other_endpoints() {
        for p in ["/process.Process/Start", "/nosuch.Service/Method", "/a.b.C/D"] {
            assert!(is_rpc_path(p), "{p}");
        }
        for p in ["/files", "/health", "/process.Process/", "/process.Process/Start/x", "/Process/Start", "/", ""] {
            assert!(!is_rpc_path(p), "{p}");
        }
    }
}
