//! The CLI's HTTP client: the daemon's URL and API key, JSON calls, and streaming sandbox calls.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use warren_types::api::ErrorBody;

pub struct Client {
    /// `host:port` of the daemon.
    pub authority: String,
    pub api_key: String,
}

/// Where the daemon keeps its admin API key.
pub fn api_key_path(data_dir: &Path) -> PathBuf {
    warren_node::keys::bootstrap_key_path(data_dir)
}

impl Client {
    pub fn new(url: &str, api_key: Option<String>, data_dir: &Path) -> Result<Client> {
        let authority = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        if url.starts_with("https://") {
            bail!("https URLs are not supported by the warren CLI; use http://host:port");
        }
        let api_key = match api_key {
            Some(k) => k,
            None => {
                let p = api_key_path(data_dir);
                std::fs::read_to_string(&p).map(|s| s.trim().to_owned()).with_context(|| {
                    format!("reading the API key from {} (run as root, or set WARREN_API_KEY)", p.display())
                })?
            }
        };
        Ok(Client { authority, api_key })
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<http::Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await.with_context(|| {
            format!("connecting to the Warren daemon at {} (is `warren serve` running?)", self.authority)
        })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender.send_request(req).await?)
    }

    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.authority, path))
            .header(http::header::HOST, &self.authority)
            .header("x-api-key", &self.api_key)
    }

    /// A control-plane call with a JSON body; errors carry the daemon's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut b = self.request(method, path);
        let body = match body {
            Some(v) => {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let resp = self.send(b.body(Full::new(body))?).await?;
        let status = resp.status();
        Ok((status, body_or_error(resp).await?))
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let (_, bytes) = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {path}"))
    }

    /// A request to a sandbox's agent through the daemon's proxy.
    pub fn sandbox_request(&self, sandbox: &str, method: Method, path: &str) -> http::request::Builder {
        self.request(method, path)
            .header("e2b-sandbox-id", sandbox)
            .header("e2b-sandbox-port", warren_types::AGENT_PORT.to_string())
    }
}

/// The body of a successful answer, or an error carrying the daemon's or agent's message.
pub async fn body_or_error(resp: http::Response<Incoming>) -> Result<Bytes> {
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(error_of(status, &bytes));
    }
    Ok(bytes)
}

/// Passes a successful (possibly streaming) response through; any other becomes an error.
pub async fn success(resp: http::Response<Incoming>) -> Result<http::Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Err(error_of(status, &bytes))
}

fn error_of(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    anyhow!("{msg} (HTTP {status})")
}
