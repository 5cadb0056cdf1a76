//! Keep-alive connections to servers inside sandboxes, each driven by the request that is using
//! it. A pooled HTTP/1 client runs every connection as a task of its own and hands requests,
//! responses and body chunks to it through channels: with two tasks per request the runtime
//! wakes its other worker thread for most of them, and on this kind of host a thread wake-up
//! costs more than the proxying itself. Here the connection is polled by the request's future
//! and, once the response has started, by the response body the client reads, so one request is
//! one task from the client's socket to the sandbox's and back.
//!
//! A connection is checked in again when its response body has ended and the connection is ready
//! for another request; an idle one is not polled, so a server that closed it is noticed on the
//! next check-out (the connection reports itself done), and a request that never reached a stale
//! connection is sent again on a fresh one.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use warren_node::agent_client::{Body, BoxError};

/// Which server a connection reaches. The sandbox's id is part of it as well as its address: a
/// sandbox created on the address of one just killed must not get its predecessor's connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub sandbox: String,
    pub addr: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddrV4, std::io::Error),
    #[error("connecting to {0} took longer than {1:?}")]
    ConnectTimeout(SocketAddrV4, Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Idle connections are dropped after this long (a server's own keep-alive timeout is usually
/// longer, and a sandbox that went away leaves its connections here until then).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per server: more than any client opens at once in practice, few enough
/// that a burst does not leave thousands of sockets behind.
const MAX_IDLE_PER_KEY: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP/1 connection to a server inside a sandbox, to be polled by whoever uses it.
type Conn = Connection<TokioIo<TcpStream>, Body>;

struct Upstream {
    sender: SendRequest<Body>,
    /// `None` once it finished (closed or failed): dropping it fails whatever still waits on it.
    /// Boxed: the connection (its buffers and state) is large, and an upstream moves in and out
    /// of the pool and into the response body on every request.
    conn: Option<Pin<Box<Conn>>>,
}

impl Upstream {
    /// Drives the connection (reads, writes, keep-alive state); true while it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            if conn.as_mut().poll(cx).is_ready() {
                self.conn = None;
            }
        }
        self.conn.is_some()
    }
}

struct Idle {
    upstream: Upstream,
    since: Instant,
}

#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    sweeping: std::sync::atomic::AtomicBool,
}

impl Upstreams {
    pub fn new() -> Arc<Upstreams> {
        Arc::new(Upstreams::default())
    }

    /// Sends `req` (its URI in origin form, its Host set) to the server `key` names and returns
    /// its response, whose body drives the connection until it ends.
    pub async fn request(
        self: &Arc<Self>,
        key: Key,
        mut req: Request<Body>,
    ) -> Result<Response<DrivenBody>, UpstreamError> {
        loop {
            let (mut up, reused) = match self.check_out(&key) {
                Some(up) => (up, true),
                None => (connect(&key).await?, false),
            };
            let mut sending = std::pin::pin!(up.sender.try_send_request(req));
            let sent = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = sending.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                up.drive(cx);
                Poll::Pending
            })
            .await;
            match sent {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let mut driven = DrivenBody { body, upstream: Some(up), pool: Arc::downgrade(self), key };
                    if driven.body.is_end_stream() {
                        // The client's server never polls an empty body: hand the connection back now.
                        std::future::poll_fn(|cx| {
                            driven.check_in(cx);
                            Poll::Ready(())
                        })
                        .await;
                    }
                    return Ok(Response::from_parts(parts, driven));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had been closed under it. Again, afresh.
                    Some(back) if reused => req = back,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    fn check_out(&self, key: &Key) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let found = loop {
            let Some(mut i) = list.pop() else { break None };
            // A poll notices a close or a reset that came while it sat idle.
            if i.since.elapsed() < IDLE_TIMEOUT && i.upstream.drive(&mut cx) && i.upstream.sender.is_ready() {
                break Some(i.upstream);
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn check_in(self: &Arc<Self>, key: Key, upstream: Upstream) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_KEY {
                return;
            }
            list.push(Idle { upstream, since: Instant::now() });
        }
        if !self.sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let pool = Arc::downgrade(self);
            tokio::spawn(sweep(pool));
        }
    }

    /// Idle connections held now (all servers).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }
}

/// Drops expired idle connections now and then, so that a sandbox no one talks to again (or one
/// that was killed) does not keep its sockets here; ends with the pool.
async fn sweep(pool: Weak<Upstreams>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    }
}

async fn connect(key: &Key) -> Result<Upstream, UpstreamError> {
    let (sender, conn) = open(key).await?;
    Ok(Upstream { sender, conn: Some(Box::pin(conn)) })
}

async fn open(key: &Key) -> Result<(SendRequest<Body>, Conn), UpstreamError> {
    let to = SocketAddrV4::new(key.addr, key.port);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(to, CONNECT_TIMEOUT))?
        .map_err(|e| UpstreamError::Connect(to, e))?;
    let _ = stream.set_nodelay(true);
    Ok(Builder::new().handshake(TokioIo::new(stream)).await?)
}

/// A connection of its own for a request that asks to switch protocols (a WebSocket): it is not
/// pooled, and its task lives as long as the upgraded stream.
pub async fn upgrade_request(key: &Key, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
    let (mut sender, conn) = open(key).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

/// A response body that drives its connection while it is read and checks the connection in
/// when it ends. Dropped before its end, it drops the connection (the rest of the response would
/// still be on the wire).
pub struct DrivenBody {
    body: Incoming,
    upstream: Option<Upstream>,
    pool: Weak<Upstreams>,
    key: Key,
}

impl DrivenBody {
    fn check_in(&mut self, cx: &mut Context<'_>) {
        let Some(mut up) = self.upstream.take() else { return };
        // One more turn lets the connection finish the exchange and say whether it can take the
        // next request (not after `Connection: close`, nor while a request body is still going).
        if up.drive(cx) && up.sender.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.check_in(self.key.clone(), up);
            }
        }
    }
}

impl hyper::body::Body for DrivenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(up) = this.upstream.as_mut() {
            up.drive(cx);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.check_in(cx);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.check_in(cx);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upstream = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What a scripted server does with one request: its raw answer, and whether to close the
    /// connection after writing it.
    type Script = fn(&str, usize) -> (Vec<u8>, bool);

    /// A server on loopback that answers every request by `script` (given the request head and
    /// the length of its body) and counts the connections it accepted.
    async fn server(script: Script) -> (Key, Arc<AtomicUsize>) {
        let (key, accepted, _) = server_hanging_up(script).await;
        (key, accepted)
    }

    /// Told to (`notify_one`), a connection waiting for its next request is closed by the server,
    /// which then says so.
    struct HangUp {
        now: tokio::sync::Notify,
        done: tokio::sync::Notify,
    }

    async fn server_hanging_up(script: Script) -> (Key, Arc<AtomicUsize>, Arc<HangUp>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let hang_up = Arc::new(HangUp { now: Default::default(), done: Default::default() });
        let hang = hang_up.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let hang = hang.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            tokio::select! {
                                r = s.read(&mut chunk) => match r {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                },
                                _ = hang.now.notified(), if buf.is_empty() => {
                                    drop(s);
                                    hang.done.notify_one();
                                    return;
                                }
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 65536];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        let (answer, close) = script(&head, len);
                        if s.write_all(&answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (Key { sandbox: "itest".into(), addr: Ipv4Addr::LOCALHOST, port }, accepted, hang_up)
    }

    fn get(path: &str) -> Request<Body> {
        post(path, Vec::new())
    }

    fn post(path: &str, body: Vec<u8>) -> Request<Body> {
        let method = if body.is_empty() { http::Method::GET } else { http::Method::POST };
        Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "backend")
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
            .unwrap()
    }

    async fn text(pool: &Arc<Upstreams>, key: &Key, req: Request<Body>) -> Result<(u16, String), BoxError> {
        let resp = pool.request(key.clone(), req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn ok(body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    #[tokio::test]
    async fn one_connection_carries_request_after_request() {
        let (key, accepted) = server(|head, len| (ok(&format!("{} {len}", head.lines().next().unwrap())), false)).await;
        let pool = Upstreams::new();
        for i in 0..5 {
            let (status, body) = text(&pool, &key, get(&format!("/n{i}"))).await.unwrap();
            assert_eq!((status, body), (200, format!("get /n{i} http/1.1 0")));
        }
        let (_, body) = text(&pool, &key, post("/up", vec![7u8; 300_000])).await.unwrap();
        assert_eq!(body, "post /up http/1.1 300000", "a request body is streamed to the server whole");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn empty_answers_hand_their_connection_back_too() {
        let (key, accepted) = server(|_, _| (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false)).await;
        let pool = Upstreams::new();
        for _ in 0..3 {
            assert_eq!(text(&pool, &key, get("/")).await.unwrap(), (204, String::new()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        // Closed after each answer without saying so, as a server whose keep-alive timed out.
        let (key, accepted) = server(|_, _| (ok("once"), true)).await;
        let pool = Upstreams::new();
        for _ in 0..3 {
            assert_eq!(text(&pool, &key, get("/")).await.unwrap(), (200, "once".into()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        let (key, accepted) =
            server(|_, _| (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(), true))
                .await;
        for _ in 0..2 {
            assert_eq!(text(&pool, &key, get("/")).await.unwrap(), (200, "ok".into()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 0, "a closed connection is never kept");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_handed_out() {
        let (key, accepted, hang_up) = server_hanging_up(|_, _| (ok("hi"), false)).await;
        let pool = Upstreams::new();
        assert_eq!(text(&pool, &key, get("/")).await.unwrap(), (200, "hi".into()));
        assert_eq!(pool.idle_count(), 1);
        hang_up.now.notify_one();
        hang_up.done.notified().await;
        assert_eq!(text(&pool, &key, get("/")).await.unwrap(), (200, "hi".into()));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error_not_a_short_body() {
        let (key, _) = server(|_, _| (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(), true)).await;
        let pool = Upstreams::new();
        assert!(text(&pool, &key, get("/")).await.is_err());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_body_left_unread_takes_its_connection_with_it() {
        let (key, accepted) = server(|_, _| (ok(&"x".repeat(1 << 20)), false)).await;
        let pool = Upstreams::new();
        let resp = pool.request(key.clone(), get("/")).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(pool.idle_count(), 0, "the rest of the answer is still on that connection");
        let (_, whole) = text(&pool, &key, get("/")).await.unwrap();
        assert_eq!(whole.len(), 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let key = Key { sandbox: "itest".into(), addr: Ipv4Addr::LOCALHOST, port };
        let e = Upstreams::new().request(key, get("/")).await.err().unwrap();
        assert!(matches!(e, UpstreamError::Connect(..)), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
