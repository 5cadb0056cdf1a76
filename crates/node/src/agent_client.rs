//! HTTP/1.1 over a sandbox agent's unix socket: used by the engine (`/init`) and by the API's proxy.

use std::path::Path;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Sends one request to the agent listening on `socket` and returns its response (streaming body).
pub async fn send<B>(socket: &Path, req: Request<B>) -> Result<http::Response<Incoming>, String>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.map_err(|e| format!("request: {e}"))
}

/// A JSON POST to the agent, expecting a 2xx.
pub async fn post_json(socket: &Path, path: &str, body: &serde_json::Value) -> Result<(), String> {
    let req = Request::post(format!("http://agent{path}"))
        .header(http::header::HOST, "agent")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(serde_json::to_vec(body).expect("serializes"))))
        .expect("valid request");
    let resp = send(socket, req).await?;
    if !resp.status().is_success() {
        use http_body_util::BodyExt;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(format!("{path} answered {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}
