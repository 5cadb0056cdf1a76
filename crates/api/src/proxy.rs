//! Sandbox traffic. A request is for a sandbox when it carries `E2b-Sandbox-Id` (+ `E2b-Sandbox-Port`)
//! or its Host is `{port}-{id}.{domain}`; it is then authenticated with the sandbox's access token
//! (`X-Access-Token`) or the API key and streamed to the agent's unix socket, both ways.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use warren_types::AGENT_PORT;

use crate::error::ApiError;
use crate::routes::{api_key_of, key_matches};
use crate::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub sandbox: String,
    pub port: u16,
}

/// Whether a request is sandbox traffic, and for which sandbox and port.
pub fn target<B>(req: &Request<B>, domain: &str) -> Option<Target> {
    let h = req.headers();
    if let Some(id) = h.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let port =
            h.get("e2b-sandbox-port").and_then(|v| v.to_str().ok()).and_then(|p| p.parse().ok()).unwrap_or(AGENT_PORT);
        // Older E2B SDKs (2.8 among them) send these headers on control-plane calls too (connect,
        // pause): E2B's cloud routes those by host, Warren's one port by path. The agent serves
        // none of these paths.
        if !(port == AGENT_PORT && is_control_plane_path(req.uri().path())) {
            return Some(Target { sandbox: id.to_owned(), port });
        }
    }
    let host = h.get(http::header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host())?;
    parse_host(host, domain)
}

/// Paths only the control plane serves (the agent's are `/health`, `/metrics`, `/files`, `/envs`,
/// `/init` and Connect calls).
fn is_control_plane_path(path: &str) -> bool {
    const PREFIXES: &[&str] = &["/sandboxes", "/v1/", "/v2/", "/templates", "/snapshots", "/pools", "/keys"];
    path == "/openapi.yaml"
        || PREFIXES.iter().any(|p| {
            path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
        })
}

/// `{port}-{id}.{domain}` (the domain may carry a port; `localhost` with any port is accepted too).
pub fn parse_host(host: &str, domain: &str) -> Option<Target> {
    let (label, rest) = host.split_once('.')?;
    let rest_no_port = rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest);
    let domain_no_port = domain.rsplit_once(':').map(|(h, _)| h).unwrap_or(domain);
    if rest != domain && rest_no_port != domain_no_port {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    if id.is_empty() {
        return None;
    }
    Some(Target { sandbox: id.to_owned(), port })
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];
const STRIPPED: &[&str] = &["x-api-key", "x-access-token", "e2b-sandbox-id", "e2b-sandbox-port"];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || STRIPPED.contains(&name) {
            continue;
        }
        to.append(HeaderName::from(k), v.clone());
    }
}

pub async fn forward(state: Arc<AppState>, target: Target, req: Request<Incoming>) -> Response {
    match forward_inner(&state, &target, req).await {
        Ok(r) => r,
        Err(e) => {
            // The request's body may be left unread, and the server then closes the connection:
            // say so, so the client does not send its next request down it.
            let mut r = e.into_response();
            r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            r
        }
    }
}

async fn forward_inner(state: &AppState, target: &Target, req: Request<Incoming>) -> Result<Response, ApiError> {
    // Authenticate first (whatever the sandbox's state): nothing wakes for a stranger.
    let creds = state.engine.traffic_credentials(&target.sandbox)?;
    let (sandbox_state, auto_resume) = (creds.state, creds.auto_resume);
    if target.port != AGENT_PORT {
        return forward_port(state, target, req, &creds).await;
    }
    let headers = req.headers();
    let token = &creds.access_token;
    let by_token = headers.get("x-access-token").and_then(|v| v.to_str().ok()).is_some_and(|t| key_matches(t, token));
    let by_key = team_key(state, headers, &creds.team);
    let by_signature = !by_token && !by_key && signed_file_url(req.method(), req.uri(), token)?;
    if !by_token && !by_key && !by_signature {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "sandbox {} needs its access token (X-Access-Token, from the create answer) or the API key (X-API-KEY)",
                target.sandbox
            ),
        ));
    }
    if req.uri().path() == "/init" || req.uri().path().starts_with("/warren/") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is reserved for the Warren daemon", req.uri().path()),
        ));
    }
    let asleep = matches!(sandbox_state, warren_types::SandboxState::Paused | warren_types::SandboxState::Hibernated);
    if asleep && auto_resume {
        state.engine.resume_for_traffic(&target.sandbox).await?;
    }
    let (socket, _) = state.engine.agent_socket(&target.sandbox)?;
    // Counts as activity for the idle policy until the response body ends.
    let guard = state.engine.begin_traffic(&target.sandbox);
    // The agent sees neither its cgroup nor its disk quota; the daemon answers for it.
    if req.uri().path() == "/metrics" && req.method() == http::Method::GET {
        return Ok(axum::Json(state.engine.metrics(&target.sandbox)?).into_response());
    }
    let path_q = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(req.method().clone()).uri(format!("http://agent{path_q}"));
    copy_headers(req.headers(), out.headers_mut().expect("builder is valid"));
    out.headers_mut().expect("builder is valid").insert(http::header::HOST, http::HeaderValue::from_static("agent"));
    use http_body_util::BodyExt;
    let body = req.into_body().map_err(|e| Box::new(e) as warren_node::agent_client::BoxError).boxed();
    let out = out.body(body).map_err(|e| ApiError::bad_request(format!("cannot forward request: {e}")))?;
    let resp = state.engine.agents.send(&socket, out).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("sandbox {} did not answer: {e}", target.sandbox))
    })?;
    Ok(relay(resp, guard))
}

/// Whether the request carries an API key of the sandbox's team (another team's key is worth no
/// more than no key).
fn team_key(state: &AppState, headers: &HeaderMap, team: &warren_types::Team) -> bool {
    api_key_of(headers).and_then(|k| state.engine.keys.verify(k)).is_some_and(|c| &c.team == team)
}

/// Traffic to a server inside the sandbox (`{port}-{id}.{domain}` or `E2b-Sandbox-Port`): public
/// unless the sandbox was created with `allowPublicTraffic: false`, then it needs the sandbox's
/// `e2b-traffic-access-token` (or the API key). WebSocket and other upgrades are spliced through.
async fn forward_port(
    state: &AppState,
    target: &Target,
    mut req: Request<Incoming>,
    creds: &warren_node::lifecycle::TrafficCredentials,
) -> Result<Response, ApiError> {
    if let Some(expected) = &creds.traffic_token {
        let h = req.headers();
        let ok =
            h.get("e2b-traffic-access-token").and_then(|v| v.to_str().ok()).is_some_and(|t| key_matches(t, expected))
                || team_key(state, h, &creds.team);
        if !ok {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "sandbox {} does not allow public traffic: send its trafficAccessToken in e2b-traffic-access-token",
                    target.sandbox
                ),
            ));
        }
    }
    if creds.state != warren_types::SandboxState::Running {
        let asleep = matches!(creds.state, warren_types::SandboxState::Paused | warren_types::SandboxState::Hibernated);
        if asleep && creds.auto_resume {
            state.engine.resume_for_traffic(&target.sandbox).await?;
        }
        // Only a running sandbox is reached (a paused one answers 409 like the agent port).
        state.engine.agent_socket(&target.sandbox)?;
    }
    let addr = creds.address.ok_or_else(|| {
        ApiError::from(warren_node::NodeError::Conflict {
            id: target.sandbox.clone(),
            state: "without a network (loopback only)",
            action: "reaching its ports",
        })
    })?;
    let guard = state.engine.begin_traffic(&target.sandbox);
    let path_q = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let upgrade = req.headers().get(http::header::UPGRADE).cloned();
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let mut out = Request::builder().method(req.method().clone()).uri(path_q);
    {
        let h = out.headers_mut().expect("builder is valid");
        copy_headers(req.headers(), h);
        if !h.contains_key(http::header::HOST) {
            // An HTTP/2 client names the host in the URI only; the server sees the address.
            let host = http::HeaderValue::from_str(&format!("{addr}:{}", target.port)).expect("an address is a value");
            h.insert(http::header::HOST, host);
        }
        if let Some(u) = &upgrade {
            h.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            h.insert(http::header::UPGRADE, u.clone());
        }
    }
    use http_body_util::BodyExt;
    let body = req.into_body().map_err(|e| Box::new(e) as warren_node::agent_client::BoxError).boxed();
    let out = out.body(body).map_err(|e| ApiError::bad_request(format!("cannot forward request: {e}")))?;
    let key = crate::upstream::Key { sandbox: target.sandbox.clone(), addr, port: target.port };
    let unanswered = |e: crate::upstream::UpstreamError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("nothing answered on port {} of sandbox {}: {e}", target.port, target.sandbox),
        )
    };
    if let Some(client_side) = client_side {
        let mut resp = crate::upstream::upgrade_request(&key, out).await.map_err(unanswered)?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(relay(resp, guard));
        }
        let backend_side = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        tokio::spawn(async move {
            let _busy = guard;
            if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
        });
        let mut r = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in &parts.headers {
            r = r.header(k, v);
        }
        return Ok(r.body(Body::empty()).expect("valid response"));
    }
    let resp = state.ports.request(key, out).await.map_err(unanswered)?;
    Ok(relay(resp, guard))
}

/// The server's response as the client gets it: hop-by-hop headers dropped, and the sandbox
/// counted busy until its body has been read.
fn relay<B>(resp: http::Response<B>, guard: Option<warren_node::lifecycle::ActivityGuard>) -> Response
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let mut r = Response::builder().status(parts.status);
    copy_headers(&parts.headers, r.headers_mut().expect("builder is valid"));
    let body = body.map_frame(move |f| {
        let _busy = &guard;
        f
    });
    r.body(Body::new(body)).expect("valid response")
}

/// E2B's signed `/files` URLs: `signature = "v1_" + base64(sha256("{path}:{read|write}:{user}:{token}[:{exp}]"))`
/// without padding, with an optional `signature_expiration` (Unix seconds) that must not have passed.
/// Returns whether the request carries a valid one; an expired one is an error that says so.
fn signed_file_url(method: &http::Method, uri: &http::Uri, token: &str) -> Result<bool, ApiError> {
    if uri.path() != "/files" {
        return Ok(false);
    }
    let op = match *method {
        http::Method::GET => "read",
        http::Method::POST => "write",
        _ => return Ok(false),
    };
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect();
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(signature) = get("signature") else { return Ok(false) };
    let path = get("path").unwrap_or("");
    let user = get("username").unwrap_or("");
    let expiration = get("signature_expiration");
    let raw = match expiration {
        Some(exp) => format!("{path}:{op}:{user}:{token}:{exp}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    use base64::Engine;
    use sha2::Digest;
    let expected = format!("v1_{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(raw)));
    if !key_matches(signature, &expected) {
        return Ok(false);
    }
    if let Some(exp) = expiration {
        let exp: u64 = exp.parse().map_err(|_| ApiError::bad_request("signature_expiration must be Unix seconds"))?;
        if exp < warren_node::now_ms() / 1000 {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "this signed URL has expired; ask for a new one"));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routing() {
        let t = parse_host("49983-iabc.localhost:3049", "localhost:3049").unwrap();
        assert_eq!(t, Target { sandbox: "iabc".into(), port: 49983 });
        assert_eq!(parse_host("8080-iabc.localhost", "localhost:3049").unwrap().port, 8080);
        assert!(parse_host("localhost:3049", "localhost:3049").is_none());
        assert!(parse_host("x-iabc.localhost", "localhost:3049").is_none());
        assert!(parse_host("8080-iabc.example.com", "localhost:3049").is_none());
        assert!(parse_host("8080-.localhost", "localhost:3049").is_none());
    }

    #[test]
    fn signed_urls_match_the_sdk_formula() {
        // sha256("/a.txt:read::tok") in base64 without padding, as the E2B SDK computes it.
        use base64::Engine;
        use sha2::Digest;
        let sig = format!(
            "v1_{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest("/a.txt:read::tok"))
        );
        let uri: http::Uri =
            format!("/files?path=%2Fa.txt&signature={}", sig.replace('+', "%2B").replace('/', "%2F")).parse().unwrap();
        assert!(signed_file_url(&http::Method::GET, &uri, "tok").unwrap());
        assert!(!signed_file_url(&http::Method::POST, &uri, "tok").unwrap(), "a read signature does not allow writes");
        assert!(!signed_file_url(&http::Method::GET, &uri, "other").unwrap());
        let expired: http::Uri = "/files?path=%2Fa.txt&signature=x&signature_expiration=1".parse().unwrap();
        assert!(!signed_file_url(&http::Method::GET, &expired, "tok").unwrap());
    }

    #[test]
    fn headers_win_over_host() {
        let req = Request::get("/x")
            .header("e2b-sandbox-id", "iabc")
            .header("e2b-sandbox-port", "49983")
            .header("host", "127.0.0.1:3049")
            .body(())
            .unwrap();
        assert_eq!(target(&req, "localhost:3049"), Some(Target { sandbox: "iabc".into(), port: 49983 }));
        let plain = Request::get("/x").header("host", "127.0.0.1:3049").body(()).unwrap();
        assert_eq!(target(&plain, "localhost:3049"), None);
        // Older SDKs send the sandbox headers with control-plane calls.
        for path in ["/sandboxes/iabc/connect", "/v2/sandboxes", "/sandboxes", "/templates/base"] {
            let req = Request::post(path)
                .header("e2b-sandbox-id", "iabc")
                .header("e2b-sandbox-port", "49983")
                .body(())
                .unwrap();
            assert_eq!(target(&req, "localhost:3049"), None, "{path}");
        }
        for path in ["/health", "/metrics", "/files", "/process.Process/Start", "/sandboxesque"] {
            let req = Request::post(path).header("e2b-sandbox-id", "iabc").body(()).unwrap();
            assert!(target(&req, "localhost:3049").is_some(), "{path}");
        }
        // A server of the sandbox's own may have any path.
        let req = Request::get("/sandboxes")
            .header("e2b-sandbox-id", "iabc")
            .header("e2b-sandbox-port", "8080")
            .body(())
            .unwrap();
        assert_eq!(target(&req, "localhost:3049"), Some(Target { sandbox: "iabc".into(), port: 8080 }));
    }
}
