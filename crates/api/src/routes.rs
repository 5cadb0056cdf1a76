//! Control-plane routes. Each handler parses its input, calls one engine method, and shapes the
//! answer the way E2B clients expect.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use warren_node::egress::EgressRequest;
use warren_node::engine::SandboxRecord;
use warren_node::events::{Level, LogEntry, LogQuery};
use warren_node::keys::Caller;
use warren_node::templates::TemplateRecord;
use warren_node::{rfc3339, CreateRequest};
use warren_types::api::{
    ApiKeyInfo, LifecycleInfo, NewApiKey, NewSandbox, NewTemplate, Refresh, Sandbox, SandboxDetail, SetTimeout,
    TemplateInfo, TemplateMemorySnapshot,
};
use warren_types::pool::{PoolInfo, PoolResize, PoolSpec};
use warren_types::{SandboxState, Team, TemplateId, ENVD_VERSION};

use crate::error::ApiError;
use crate::AppState;

type S = State<Arc<AppState>>;

const MAX_BODY: usize = 1024 * 1024;

/// The control plane's OpenAPI document, served as is (and checked against the routes below).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/stats", get(stats))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/metrics", get(metrics_many))
        .route("/sandboxes/{id}/logs", get(logs_v1))
        .route("/v2/sandboxes/{id}/logs", get(logs_v2))
        .route("/sandboxes/{id}/network", axum::routing::put(network_update))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/snapshots", post(snapshot))
        .route("/snapshots", get(list_snapshots))
        .route("/metrics", get(prometheus))
        .route("/pools", get(list_pools).post(create_pool))
        .route("/pools/{name}", get(pool_info).patch(resize_pool).delete(remove_pool))
        .route("/templates", get(list_templates).post(build_template))
        .route("/templates/{id}", get(template_info_route).delete(remove_template))
        .route("/templates/{id}/build", get(build_progress))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", axum::routing::delete(revoke_key))
        .merge(crate::memory::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/openapi.yaml", get(|| async { ([(http::header::CONTENT_TYPE, "application/yaml")], OPENAPI) }))
        .merge(api)
        .fallback(|req: Request| async move {
            match e2b_cloud_service(req.uri().path()) {
                Some(what) => {
                    ApiError::new(StatusCode::NOT_IMPLEMENTED, format!("{} {}: {what}", req.method(), req.uri().path()))
                }
                None => ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no such endpoint: {} {}", req.method(), req.uri().path()),
                ),
            }
        })
        .with_state(state)
}

/// What an E2B SDK call to one of E2B's cloud services (that Warren does not offer) is told, so
/// that it fails at once with the reason rather than with a 404 the SDK reads as "not found".
fn e2b_cloud_service(path: &str) -> Option<&'static str> {
    let under = |p: &str| path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
    if under("/volumes") {
        return Some(
            "E2B volumes are not offered by Warren; keep files in the sandbox (they survive pause, fork and snapshots)",
        );
    }
    if under("/secrets") {
        return Some("E2B secrets are not offered by Warren; pass values as envs when creating the sandbox");
    }
    let mut parts = path.trim_start_matches('/').split('/');
    let build_service = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("v2" | "v3"), Some("templates"), _)
            | (Some("default-templates"), _, _)
            | (Some("templates"), Some("aliases" | "tags"), _)
            | (Some("templates"), Some(_), Some("builds" | "files" | "tags"))
    );
    build_service.then_some(
        "E2B's template build service is not offered by Warren; build one with POST /templates (see the README's tour)",
    )
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from response times.
pub fn key_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn api_key_of(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    })
}

/// Resolves the key to its caller (team, admin) for the handlers; every route below needs one.
async fn require_api_key(State(st): S, mut req: Request, next: Next) -> Response {
    let caller = api_key_of(req.headers()).map(|k| st.engine.keys.verify(k));
    match caller {
        Some(Some(c)) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Some(None) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the X-API-KEY header is not a valid key of this Warren daemon (revoked, or from another daemon)",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-API-KEY header; the key is in the daemon's data directory (api_key) and `warren` reads it for you",
        )
        .into_response(),
    }
}

/// Reads and parses a JSON body with a size limit and an error that names the problem.
async fn json_body<T: DeserializeOwned>(body: Body, empty_ok: bool) -> Result<T, ApiError> {
    let bytes = read_limited(body, MAX_BODY).await?;
    let bytes: Bytes = if bytes.is_empty() && empty_ok { Bytes::from_static(b"{}") } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Collects at most `limit` bytes. Past the limit the rest is read and dropped (up to a bound), so
/// the client, still sending, can read the 413 instead of seeing its connection reset.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    const DRAIN: usize = 64 * 1024 * 1024;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"));
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN {
                return Err(too_large());
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

fn sandbox_answer(st: &AppState, r: &SandboxRecord) -> Sandbox {
    Sandbox {
        template_id: r.template_id.to_string(),
        sandbox_id: r.id.to_string(),
        client_id: "warren".into(),
        envd_version: ENVD_VERSION.into(),
        alias: Some(r.template_id.to_string()),
        envd_access_token: Some(r.access_token.clone()),
        traffic_access_token: r.traffic_token.clone(),
        domain: Some(st.domain.clone()),
    }
}

fn detail(st: &AppState, r: &SandboxRecord) -> SandboxDetail {
    SandboxDetail {
        template_id: r.template_id.to_string(),
        sandbox_id: r.id.to_string(),
        client_id: "warren".into(),
        alias: Some(r.template_id.to_string()),
        started_at: rfc3339(r.started_at_ms),
        end_at: rfc3339(r.end_at_ms),
        envd_version: ENVD_VERSION.into(),
        cpu_count: r.cpu_count,
        memory_mb: r.memory_mb,
        disk_size_mb: r.disk_mb,
        state: r.state.e2b_name().into(),
        metadata: r.metadata.clone(),
        domain: Some(st.domain.clone()),
        warren_state: r.state,
        pause_mode: match r.state {
            SandboxState::Paused => Some("full".into()),
            SandboxState::Hibernated if r.memory_image => Some("full".into()),
            SandboxState::Hibernated => Some("filesystem".into()),
            _ => None,
        },
        runtime: r.runtime.clone(),
        lifecycle: LifecycleInfo {
            auto_resume: r.lifecycle.auto_resume,
            on_timeout: if r.lifecycle.pause_on_timeout { "pause" } else { "kill" }.into(),
            idle_timeout: r.lifecycle.idle_timeout_secs,
        },
    }
}

/// Idempotency keys of recent creates (kept an hour). Failed attempts are not remembered, so a
/// retry after a failure creates anew; concurrent requests with one key wait for the first.
/// Keys are per team: another team's key never reaches a first attempt's sandbox.
#[derive(Default)]
pub struct IdempotencyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, IdempotentCreate>>,
}

/// When a key was first seen, and the sandbox its create produced (once it has).
type IdempotentCreate = (std::time::Instant, Arc<tokio::sync::OnceCell<Sandbox>>);

const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl IdempotencyCache {
    fn cell(&self, team: &Team, key: &str) -> Arc<tokio::sync::OnceCell<Sandbox>> {
        let mut map = self.entries.lock().unwrap();
        map.retain(|_, (at, _)| at.elapsed() < IDEMPOTENCY_TTL);
        map.entry(format!("{team}/{key}")).or_insert_with(|| (std::time::Instant::now(), Default::default())).1.clone()
    }
}

async fn create(
    State(st): S,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = headers.get("idempotency-key").map(|v| v.to_str().map(str::to_owned));
    let key = match key {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 256 => Some(k),
        Some(_) => return Err(ApiError::bad_request("Idempotency-Key must be 1 to 256 visible ASCII characters")),
    };
    let Some(key) = key else {
        return create_new(&st, &c, body).await.map(|sb| (StatusCode::CREATED, Json(sb)).into_response());
    };
    let cell = st.idempotency.cell(&c.team, &key);
    let sb = cell.get_or_try_init(|| create_new(&st, &c, body)).await?;
    Ok((StatusCode::CREATED, Json(sb.clone())).into_response())
}

async fn create_new(st: &AppState, c: &Caller, body: Body) -> Result<Sandbox, ApiError> {
    let req: NewSandbox = json_body(body, false).await?;
    if req.template_id.is_empty() {
        return Err(ApiError::bad_request("templateID is required (for example \"base\")"));
    }
    let net = req.network.clone().unwrap_or_default();
    refuse_unsupported_network(&net.other)?;
    let cloud_only = [
        (!req.volume_mounts.is_empty(), "volumeMounts: E2B volumes are not offered by Warren (files in the sandbox survive pause, fork and snapshots)"),
        (req.iam.as_ref().is_some_and(|v| !v.is_null()), "iam: E2B's cloud IAM tokens are not offered by Warren"),
        (req.mcp.as_ref().is_some_and(|v| !v.is_null()), "mcp: E2B's MCP gateway is not offered by Warren"),
    ];
    if let Some((_, why)) = cloud_only.iter().find(|(asked, _)| *asked) {
        // A client error, as for unsupported network settings: unchanged, it cannot succeed.
        return Err(ApiError::bad_request(format!("{why}; leave it out")));
    }
    let rec = st
        .engine
        .create(CreateRequest {
            team: c.team.clone(),
            template_id: req.template_id,
            timeout_secs: req.timeout,
            metadata: req.metadata,
            env_vars: req.env_vars,
            cpu_count: req.cpu_count,
            memory_mb: req.memory_mb,
            disk_mb: req.disk_size_mb,
            user: req.user,
            pause_on_timeout: req.auto_pause.unwrap_or(false),
            pause_files_only: req.auto_pause_memory == Some(false),
            auto_resume: req.auto_resume.is_some_and(|a| a.enabled),
            idle_timeout_secs: req.idle_timeout,
            private_ports: net.allow_public_traffic == Some(false),
            egress: EgressRequest {
                allow_out: net.allow_out,
                deny_out: net.deny_out,
                internet: req.allow_internet_access,
            },
            runtime: req.runtime,
        })
        .await?;
    Ok(sandbox_answer(st, &rec))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
    /// By start time: `asc` (the default) or `desc`.
    order: Option<String>,
    /// RFC 3339: only sandboxes started at or after it.
    started_after: Option<String>,
    template: Option<String>,
}

async fn list(State(st): S, Extension(c): Extension<Caller>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let mut want_meta = BTreeMap::new();
    if let Some(m) = &q.metadata {
        for pair in m.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            want_meta.insert(dec(k), dec(v));
        }
    }
    let states: Option<Vec<String>> = q.state.as_ref().map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    if let Some(states) = &states {
        if let Some(bad) = states.iter().find(|s| !matches!(s.as_str(), "running" | "paused")) {
            return Err(ApiError::bad_request(format!("unknown state {bad:?}: use running and/or paused")));
        }
    }
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown order {other:?}: use asc or desc"))),
    };
    let started_after = match &q.started_after {
        None => None,
        Some(t) => Some(warren_node::parse_rfc3339_ms(t).ok_or_else(|| {
            ApiError::bad_request(format!("startedAfter {t:?} is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)"))
        })?),
    };
    let mut items: Vec<_> = st
        .engine
        .list(&c.team)
        .into_iter()
        .filter(|r| want_meta.iter().all(|(k, v)| r.metadata.get(k) == Some(v)))
        .filter(|r| states.as_ref().is_none_or(|s| s.iter().any(|x| x == r.state.e2b_name())))
        .filter(|r| q.template.as_deref().is_none_or(|t| r.template_id.as_str() == t))
        .filter(|r| started_after.is_none_or(|ms| r.started_at_ms >= ms))
        .collect();
    if descending {
        items.reverse();
    }
    let (items, next) = page(items, |r| (r.started_at_ms, r.id.as_str()), q.next_token.as_deref(), limit, descending)?;
    let body: Vec<SandboxDetail> = items.iter().map(|r| detail(&st, r)).collect();
    Ok(with_next_token(Json(body).into_response(), next))
}

/// One page of `items` (sorted by `key`, descending if asked): those after `next_token`, at most
/// `limit`, and the token of the page after it when there is one (E2B's `x-next-token`). A token
/// is a position (`<ms>.<id>`), not an item, so a page still follows when the item that ended the
/// previous one is gone by now.
fn page<T>(
    mut items: Vec<T>,
    key: impl for<'a> Fn(&'a T) -> (u64, &'a str),
    next_token: Option<&str>,
    limit: usize,
    descending: bool,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    if let Some(token) = next_token {
        let at = token
            .split_once('.')
            .and_then(|(ms, id)| Some((ms.parse::<u64>().ok()?, id)))
            .filter(|(_, id)| !id.is_empty())
            .ok_or_else(|| ApiError::bad_request("nextToken is not one this server gave; start again without it"))?;
        let first =
            items.iter().position(|x| if descending { key(x) < at } else { key(x) > at }).unwrap_or(items.len());
        items.drain(..first);
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|x| {
            let (ms, id) = key(x);
            format!("{ms}.{id}")
        })
    } else {
        None
    };
    Ok((items, next))
}

fn with_next_token(mut resp: Response, next: Option<String>) -> Response {
    if let Some(v) = next.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("x-next-token", v);
    }
    resp
}

async fn info(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetail>, ApiError> {
    let rec = st.engine.get_owned(&c.team, &id)?;
    Ok(Json(detail(&st, &rec)))
}

async fn kill(State(st): S, Extension(c): Extension<Caller>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    st.engine.kill_by_name(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let req: SetTimeout = json_body(body, false).await?;
    st.engine.touch(&id);
    st.engine.set_timeout(&id, req.timeout)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct ConnectBody {
    timeout: Option<u64>,
    /// `false` (E2B's `on_resume="reboot"`): come back from the files alone, without the memory
    /// the pause kept.
    memory: Option<bool>,
}

/// Connect: 200 with the sandbox's address and token when it is running (its end time moves to at
/// least `timeout` seconds from now), 201 when it was paused and has been resumed.
async fn connect(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let before = st.engine.get_owned(&c.team, &id)?;
    let req: ConnectBody = json_body(body, true).await?;
    if req.memory == Some(false) {
        match before.state {
            // Its processes end and it boots from its files, as after a filesystem pause.
            SandboxState::Paused => {
                st.engine.pause_to_disk(&id, "reboot on connect").await?;
            }
            SandboxState::Hibernated if before.memory_image => {
                return Err(ApiError::bad_request(format!(
                    "sandbox {id} was paused with its memory saved to disk, and coming back without it is not \
                     supported yet: connect without \"memory\": false, or kill it"
                )))
            }
            _ => {}
        }
    }
    let (rec, resumed) = st.engine.resume(&id, req.timeout).await?;
    st.engine.touch(&id);
    let status = if resumed { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(sandbox_answer(&st, &rec))).into_response())
}

#[derive(Deserialize, Default)]
struct PauseBody {
    /// E2B's `false` asks for a filesystem-only pause: processes end and memory is freed. `true`
    /// saves the memory to disk on every runtime that can (on native, a plain pause freezes the
    /// sandbox in place instead).
    memory: Option<bool>,
}

/// Pause: 204, or 409 when already paused (E2B's answers).
async fn pause(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let req: PauseBody = json_body(body, true).await?;
    match req.memory {
        Some(false) => st.engine.pause_to_disk(&id, "requested").await?,
        Some(true) => st.engine.pause_with_memory(&id, "requested").await?,
        None => st.engine.pause(&id).await?,
    };
    Ok(StatusCode::NO_CONTENT)
}

/// Resume (E2B's older endpoint): 201 with the sandbox, 409 when it is not paused.
async fn resume(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let req: ConnectBody = json_body(body, true).await?;
    let (rec, resumed) = st.engine.resume(&id, req.timeout).await?;
    if !resumed {
        return Err(warren_node::NodeError::Conflict { id, state: "running", action: "resuming it" }.into());
    }
    Ok((StatusCode::CREATED, Json(sandbox_answer(&st, &rec))).into_response())
}

async fn refresh(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let req: Refresh = json_body(body, true).await?;
    st.engine.touch(&id);
    st.engine.refresh(&id, req.duration.unwrap_or(60))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RangeQuery {
    /// Unix seconds.
    start: Option<u64>,
    end: Option<u64>,
}

/// E2B's `SandboxMetric` list from the sandbox's timeline (one sample a second, an hour back).
async fn metrics(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let q: RangeQuery = query(&uri)?;
    if let (Some(a), Some(b)) = (q.start, q.end) {
        if a > b {
            return Err(ApiError::bad_request("start is after end"));
        }
    }
    Ok(Json(st.engine.timeline(&id, q.start, q.end)?).into_response())
}

#[derive(Deserialize)]
struct ManyQuery {
    sandbox_ids: Option<String>,
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the current sample of each listed sandbox that exists.
async fn metrics_many(
    State(st): S,
    Extension(c): Extension<Caller>,
    Query(q): Query<ManyQuery>,
) -> Result<Response, ApiError> {
    let ids: Vec<&str> = q.sandbox_ids.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return Err(ApiError::bad_request("sandbox_ids is required: a comma-separated list of sandbox ids"));
    }
    if ids.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 sandbox ids per call"));
    }
    let ids: Vec<&str> = ids.into_iter().filter(|id| st.engine.get_owned(&c.team, id).is_ok()).collect();
    Ok(Json(serde_json::json!({ "sandboxes": st.engine.latest_metrics(&ids) })).into_response())
}

/// Parses a query string into `T`, with an error that names the bad parameter.
fn query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
}

fn log_entry_json(e: &LogEntry) -> serde_json::Value {
    serde_json::json!({
        "timestamp": rfc3339(e.at_ms),
        "level": e.level.as_str(),
        "message": e.message,
        "fields": e.fields,
    })
}

fn log_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(1000) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > 10_000 => Err(ApiError::bad_request("limit must be at most 10000")),
        n => Ok(n),
    }
}

#[derive(Deserialize)]
struct LogsV1Query {
    /// Milliseconds since the epoch.
    start: Option<u64>,
    limit: Option<usize>,
}

/// E2B's older logs answer: plain lines and structured entries, oldest first.
async fn logs_v1(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    // Ownership is checked by the engine: a log outlives its sandbox.
    let q: LogsV1Query = query(&uri)?;
    let lq = LogQuery {
        cursor_ms: q.start,
        backward: false,
        limit: log_limit(q.limit)?,
        min_level: Level::Debug,
        search: None,
    };
    let entries = st.engine.logs(&c.team, &id, &lq)?;
    let lines: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let mut line = format!("{} {}", e.level.as_str(), e.message);
            for (k, v) in &e.fields {
                line.push_str(&format!(" {k}={v}"));
            }
            serde_json::json!({ "timestamp": rfc3339(e.at_ms), "line": line })
        })
        .collect();
    let structured: Vec<_> = entries.iter().map(log_entry_json).collect();
    Ok(Json(serde_json::json!({ "logs": lines, "logEntries": structured })).into_response())
}

#[derive(Deserialize)]
struct LogsV2Query {
    /// Milliseconds since the epoch: where reading starts (forward) or ends (backward).
    cursor: Option<u64>,
    limit: Option<usize>,
    direction: Option<String>,
    level: Option<String>,
    search: Option<String>,
}

/// `GET /v2/sandboxes/{id}/logs`: structured entries, filtered by lowest level and text.
async fn logs_v2(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    uri: http::Uri,
) -> Result<Response, ApiError> {
    // Ownership is checked by the engine: a log outlives its sandbox.
    let q: LogsV2Query = query(&uri)?;
    let backward = match q.direction.as_deref() {
        None | Some("forward") => false,
        Some("backward") => true,
        Some(other) => return Err(ApiError::bad_request(format!("direction {other:?}: use forward or backward"))),
    };
    let min_level = match q.level.as_deref() {
        None => Level::Debug,
        Some(l) => Level::parse(l)
            .ok_or_else(|| ApiError::bad_request(format!("level {l:?}: use debug, info, warn or error")))?,
    };
    let lq = LogQuery {
        cursor_ms: q.cursor,
        backward,
        limit: log_limit(q.limit)?,
        min_level,
        search: q.search.filter(|s| !s.is_empty()),
    };
    let entries = st.engine.logs(&c.team, &id, &lq)?;
    Ok(Json(serde_json::json!({ "logs": entries.iter().map(log_entry_json).collect::<Vec<_>>() })).into_response())
}

/// Network settings this Warren does not implement (`dnsServers`, `egressProxy`, `rules`, …) are
/// refused with a 400 when set, never ignored.
fn refuse_unsupported_network(other: &BTreeMap<String, serde_json::Value>) -> Result<(), ApiError> {
    let set: Vec<&str> = other
        .iter()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, _)| k.as_str())
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    // A client error, not a 501: the request asks for something this server will not do, and
    // sending it again unchanged cannot succeed.
    Err(ApiError::bad_request(format!(
        "network.{} is not supported by this Warren version (allowPublicTraffic, allowOut, denyOut and \
             allow_internet_access are); leave it out",
        set.join(", network.")
    )))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NetworkUpdate {
    #[serde(default)]
    allow_out: Vec<String>,
    #[serde(default)]
    deny_out: Vec<String>,
    #[serde(default, rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// `PUT /sandboxes/{id}/network`: replaces the egress policy (omitted fields are cleared), live.
async fn network_update(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    let req: NetworkUpdate = json_body(body, false).await?;
    refuse_unsupported_network(&req.other)?;
    st.engine.touch(&id);
    st.engine
        .update_network(
            &id,
            EgressRequest { allow_out: req.allow_out, deny_out: req.deny_out, internet: req.allow_internet_access },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct ForkBody {
    timeout: Option<u64>,
    count: Option<u32>,
    /// A Warren extension: `false` forks the files only (clones start fresh processes, faster).
    memory: Option<bool>,
}

/// `POST /sandboxes/{id}/fork`: 201 with one entry per clone, `{sandbox}` or `{error}`, as E2B
/// answers (the source keeps running; see `warren_node::fork`).
async fn fork(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ForkBody = json_body(body, true).await?;
    st.engine.touch(&id);
    let results = st.engine.fork(&c.team, &id, req.count.unwrap_or(1), req.timeout, req.memory).await?;
    let out: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(rec) => serde_json::json!({ "sandbox": sandbox_answer(&st, &rec) }),
            Err(e) => {
                let e = ApiError::from(e);
                serde_json::json!({ "error": { "code": e.status.as_u16(), "message": e.message } })
            }
        })
        .collect();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize, Default)]
struct SnapshotBody {
    name: Option<String>,
    memory: Option<bool>,
}

fn snapshot_info(rec: &warren_node::snapshots::SnapshotRecord) -> serde_json::Value {
    serde_json::json!({ "snapshotID": rec.id.as_str(), "names": [rec.id.as_str()], "memory": rec.memory_image.is_some() })
}

/// `POST /sandboxes/{id}/snapshots {name?, memory?}`: 201 `{snapshotID, names}`; create sandboxes
/// (or pools) from it with `templateID = snapshotID`.
async fn snapshot(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: SnapshotBody = json_body(body, true).await?;
    st.engine.touch(&id);
    let name = req.name.as_deref().filter(|n| !n.is_empty());
    let rec = st.engine.create_snapshot(&c.team, &id, name, req.memory).await?;
    Ok((StatusCode::CREATED, Json(snapshot_info(&rec))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SnapshotsQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

/// `GET /snapshots`: the team's snapshots, oldest first, paged like the sandbox list.
async fn list_snapshots(State(st): S, Extension(c): Extension<Caller>, uri: http::Uri) -> Result<Response, ApiError> {
    let q: SnapshotsQuery = query(&uri)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let items = st.engine.list_snapshots(&c.team, q.sandbox_id.as_deref(), q.name.as_deref());
    let (items, next) = page(items, |s| (s.created_at_ms, s.id.as_str()), q.next_token.as_deref(), limit, false)?;
    let body: Vec<serde_json::Value> = items.iter().map(snapshot_info).collect();
    Ok(with_next_token(Json(body).into_response(), next))
}

async fn stats(State(st): S, Extension(c): Extension<Caller>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.engine.get_owned(&c.team, &id)?;
    Ok(Json(st.engine.stats(&id)?).into_response())
}

/// Prometheus scrape target (an admin key as `Authorization: Bearer`): host-wide figures.
async fn prometheus(State(st): S, Extension(c): Extension<Caller>) -> Result<Response, ApiError> {
    admin_only(&c, "reading host-wide metrics")?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        st.engine.prometheus(),
    )
        .into_response())
}

fn admin_only(c: &Caller, what: &str) -> Result<(), ApiError> {
    if c.admin {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{what} needs an admin key (such as the daemon's data-directory api_key); this key is team {}'s",
            c.team
        ),
    ))
}

async fn list_pools(State(st): S, Extension(c): Extension<Caller>) -> Json<Vec<PoolInfo>> {
    Json(st.engine.list_pools(&c.team))
}

async fn create_pool(State(st): S, Extension(c): Extension<Caller>, body: Body) -> Result<Response, ApiError> {
    let mut spec: PoolSpec = json_body(body, false).await?;
    match &spec.team {
        Some(t) if t != &c.team => {
            return Err(ApiError::bad_request(format!(
                "team {t:?} is not this key's team ({}): a pool belongs to the team of the key that creates it; leave team out",
                c.team
            )))
        }
        _ => spec.team = Some(c.team.clone()),
    }
    let info = st.engine.create_pool(spec)?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn pool_info(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<PoolInfo>, ApiError> {
    Ok(Json(st.engine.pool_info(&c.team, &name)?))
}

async fn resize_pool(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<PoolInfo>, ApiError> {
    let r: PoolResize = json_body(body, false).await?;
    Ok(Json(st.engine.resize_pool(&c.team, &name, r)?))
}

async fn remove_pool(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.engine.remove_pool(&c.team, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn template_info(engine: &warren_node::Engine, rec: &TemplateRecord) -> TemplateInfo {
    use warren_node::template_images::ImageState;
    let mut memory_snapshots: Vec<TemplateMemorySnapshot> = engine
        .template_image_states(&rec.id)
        .into_iter()
        .map(|s| match s {
            ImageState::Ready { runtime, took_ms } => {
                TemplateMemorySnapshot { runtime, status: "ready".into(), took_ms: Some(took_ms), error: None }
            }
            ImageState::Failed { runtime, error } => {
                TemplateMemorySnapshot { runtime, status: "failed".into(), took_ms: None, error: Some(error) }
            }
        })
        .collect();
    memory_snapshots.sort_by(|a, b| a.runtime.cmp(&b.runtime));
    TemplateInfo {
        memory_snapshots,
        template_id: rec.id.to_string(),
        status: rec.status.as_str().into(),
        size_bytes: rec.size_bytes,
        created_at: rfc3339(rec.created_at_ms),
        error: rec.error.clone(),
        default_user: rec.default_user.clone(),
        team: rec.team.as_ref().map(|t| t.to_string()),
        from: rec.from.as_ref().map(|t| t.to_string()),
        start_cmd: rec.startup.as_ref().map(|s| s.start_cmd.clone()),
        ready_cmd: rec.startup.as_ref().and_then(|s| s.ready_cmd.clone()),
    }
}

async fn list_templates(State(st): S, Extension(c): Extension<Caller>) -> Json<Vec<TemplateInfo>> {
    Json(
        st.engine
            .templates
            .list()
            .iter()
            .filter(|t| t.visible_to(&c.team))
            .map(|t| template_info(&st.engine, t))
            .collect(),
    )
}

/// A template the caller's team may use; another team's is reported as missing.
fn visible_template(st: &AppState, c: &Caller, id: &str) -> Result<TemplateRecord, ApiError> {
    let tid = TemplateId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match st.engine.templates.get(&tid) {
        Some(rec) if rec.visible_to(&c.team) => Ok(rec),
        _ => Err(warren_node::NodeError::TemplateNotFound { id: id.into() }.into()),
    }
}

async fn template_info_route(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TemplateInfo>, ApiError> {
    Ok(Json(template_info(&st.engine, &visible_template(&st, &c, &id)?)))
}

async fn build_template(State(st): S, Extension(c): Extension<Caller>, body: Body) -> Result<Response, ApiError> {
    let req: NewTemplate = json_body(body, false).await?;
    let tid = TemplateId::parse(&req.template_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.public {
        admin_only(&c, "building a public template")?;
    }
    let owner = (!req.public).then(|| c.team.clone());
    let startup = match (req.start_cmd, req.ready_cmd) {
        (None, None) => None,
        (None, Some(_)) => return Err(ApiError::bad_request("readyCmd needs a startCmd (what would become ready?)")),
        (Some(start), ready) => {
            let too_long = |s: &str| s.is_empty() || s.len() > 16 * 1024 || s.contains('\0');
            if too_long(&start) || ready.as_deref().is_some_and(too_long) {
                return Err(ApiError::bad_request("startCmd and readyCmd must be 1 to 16384 bytes without NUL"));
            }
            let secs = req.ready_timeout.unwrap_or(60);
            if secs == 0 || secs > 3600 {
                return Err(ApiError::bad_request("readyTimeout must be between 1 and 3600 seconds"));
            }
            Some(warren_node::templates::Startup { start_cmd: start, ready_cmd: ready, ready_timeout_secs: secs })
        }
    };
    let rec = match req.from {
        Some(from) => {
            if !req.packages.is_empty() {
                return Err(ApiError::bad_request(
                    "packages need a build of their own: leave from out (or build a template with them and derive from it)",
                ));
            }
            let from = TemplateId::parse(&from).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let rec = st.engine.templates.derive(tid, from, startup, owner)?;
            return Ok((StatusCode::CREATED, Json(template_info(&st.engine, &rec))).into_response());
        }
        None => st.engine.templates.build(tid, req.packages, owner, startup)?,
    };
    Ok((StatusCode::ACCEPTED, Json(template_info(&st.engine, &rec))).into_response())
}

async fn remove_template(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.engine.remove_template(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(State(st): S, Extension(c): Extension<Caller>) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    admin_only(&c, "listing API keys")?;
    Ok(Json(st.engine.keys.list()))
}

async fn create_key(State(st): S, Extension(c): Extension<Caller>, body: Body) -> Result<Response, ApiError> {
    admin_only(&c, "creating API keys")?;
    let req: NewApiKey = json_body(body, false).await?;
    let info = st.engine.keys.create(&req.team, &req.name, req.admin)?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn revoke_key(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin_only(&c, "revoking API keys")?;
    st.engine.keys.revoke(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// NDJSON stream of a build's output lines, then its final status.
async fn build_progress(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    visible_template(&st, &c, &id)?;
    let tid = TemplateId::parse(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let progress = st.engine.templates.progress(&tid);
    let line = |status: &str, l: Option<String>| {
        let mut s = serde_json::to_string(&warren_types::api::BuildProgress { status: status.into(), line: l })
            .expect("serializes");
        s.push('\n');
        Bytes::from(s)
    };
    let backlog: Vec<Bytes> = progress.backlog.into_iter().map(|l| line("building", Some(l))).collect();
    let live = progress.live;
    let st2 = st.clone();
    let tail = futures_util::stream::unfold((live, false), move |(live, done)| {
        let st = st2.clone();
        let tid = tid.clone();
        async move {
            if done {
                return None;
            }
            if let Some(mut rx) = live {
                loop {
                    match rx.recv().await {
                        Ok(l) => return Some((line("building", Some(l)), (Some(rx), false))),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
            }
            let rec = st.engine.templates.get(&tid);
            let status = rec.as_ref().map(|r| r.status.as_str()).unwrap_or("failed");
            let err = rec.and_then(|r| r.error);
            Some((line(status, err), (None, true)))
        }
    });
    let stream = futures_util::stream::iter(backlog).chain(tail).map(Ok::<_, Infallible>);
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn e2b_cloud_services_are_named_and_warren_routes_are_not() {
        for p in [
            "/volumes",
            "/volumes/v1",
            "/secrets/s",
            "/v3/templates",
            "/v2/templates/t/builds/b",
            "/templates/t/builds/b/status",
            "/templates/t/files/abc",
            "/templates/aliases/x",
            "/templates/tags",
            "/default-templates",
        ] {
            assert!(super::e2b_cloud_service(p).is_some(), "{p}");
        }
        for p in ["/templates", "/templates/base", "/templates/base/build", "/volumesx", "/sandboxes", "/nothing"] {
            assert!(super::e2b_cloud_service(p).is_none(), "{p}");
        }
    }

    /// Every route of the router is described in the OpenAPI document (and nothing more).
    #[test]
    fn openapi_describes_every_route() {
        let src = [include_str!("routes.rs"), include_str!("memory.rs")].concat();
        let routes: std::collections::BTreeSet<String> = src
            .split(".route(\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().replace("{id}", "{}").replace("{name}", "{}"))
            .collect();
        let spec: std::collections::BTreeSet<String> = super::OPENAPI
            .lines()
            .filter(|l| l.starts_with("  /") && l.ends_with(':'))
            .map(|l| {
                let p = l.trim().trim_end_matches(':');
                // Path parameters go by their spec names; the router's are positional.
                let mut out = String::new();
                let mut depth = 0;
                for ch in p.chars() {
                    match ch {
                        '{' => {
                            depth += 1;
                            out.push_str("{}");
                        }
                        '}' => depth -= 1,
                        c if depth == 0 => out.push(c),
                        _ => {}
                    }
                }
                out
            })
            .collect();
        assert_eq!(routes, spec, "routes.rs and openapi.yaml disagree");
    }
}
