//! The HTTP surface. One listener serves both the control plane (E2B's REST shapes plus Warren's
//! own resources) and sandbox traffic, told apart by the E2B routing headers or the Host name
//! (invariant 1: nothing here knows about namespaces; the engine is reached through its methods).

pub mod error;
pub mod memory;
pub mod proxy;
pub mod routes;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use tracing::{debug, info};
use warren_node::Engine;

/// Shared state of every handler.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub domain: String,
    /// Creates by `Idempotency-Key`: a retried create gets the sandbox of the first attempt.
    pub idempotency: routes::IdempotencyCache,
    /// Keep-alive connections to servers inside sandboxes (ports other than the agent's).
    pub ports: Arc<upstream::Upstreams>,
    /// The agent memory store (`None` when turned off in the config).
    pub memory: Option<MemorySlot>,
}

/// The memory store as the daemon opens it: in the background, because a start reads every
/// record and a large store would otherwise hold up the sandbox API. Empty while opening; the
/// reason when opening failed.
pub type MemorySlot = Arc<std::sync::OnceLock<Result<Arc<warren_memory::MemoryStore>, String>>>;

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let router = routes::router(state.clone());
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, "listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let state = state.clone();
                async move {
                    if let Some(target) = proxy::target(&req, &state.domain) {
                        return Ok::<_, std::convert::Infallible>(proxy::forward(state, target, req).await);
                    }
                    let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                    Ok(resp.unwrap_or_else(|never| match never {}))
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .writev(false)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
