//! `/v1/memory/…`: the agent memory store. Every collection belongs to the caller's team (another
//! team's key never sees it), and every record call names a scope (at least a tenant).
//! The store is synchronous (redb, tantivy): calls run on the blocking pool.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::StatusCode;
use serde::Deserialize;
use warren_memory::types::{CollectionSpec, QueryRequest, Scope, UpsertRequest};
use warren_memory::{MemoryError, MemoryStore};
use warren_node::keys::Caller;

use crate::error::ApiError;
use crate::AppState;

type S = State<Arc<AppState>>;

/// Large enough for a full upsert batch of 384-d vectors with text.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/memory/collections", get(list).post(create))
        .route("/v1/memory/collections/{name}", get(info).delete(remove))
        .route("/v1/memory/collections/{name}/records", post(upsert))
        .route("/v1/memory/collections/{name}/records/{id}", get(get_record).delete(delete_record))
        .route("/v1/memory/collections/{name}/delete", post(delete_many))
        .route("/v1/memory/collections/{name}/query", post(query))
}

impl From<MemoryError> for ApiError {
    fn from(e: MemoryError) -> Self {
        let status = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else if e.is_conflict() {
            StatusCode::CONFLICT
        } else if e.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            tracing::error!(error = %e, "memory store");
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, e.to_string())
    }
}

fn store(st: &AppState) -> Result<Arc<MemoryStore>, ApiError> {
    let slot = st.memory.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "the memory store is turned off on this daemon ([memory] enabled = false)")
    })?;
    match slot.get() {
        Some(Ok(m)) => Ok(m.clone()),
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the memory store could not be opened: {e}; fix the cause and restart warren serve"),
        )),
        None => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the memory store is still opening (a start reads every record, which takes seconds for a large store); try again in a moment".into(),
            retry: true,
        }),
    }
}

/// Runs a store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {MAX_BODY} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A scope given as query parameters (for GET and DELETE of one record).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeParams {
    tenant: Option<String>,
    user: Option<String>,
    agent: Option<String>,
    app: Option<String>,
}

impl ScopeParams {
    fn scope(self) -> Option<Scope> {
        Some(Scope { tenant: self.tenant?, user: self.user, agent: self.agent, app: self.app })
    }
}

async fn list(State(st): S, Extension(c): Extension<Caller>) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let team = c.team.to_string();
    Ok(Json(blocking(move || Ok(m.list_collections(&team))).await?).into_response())
}

async fn create(State(st): S, Extension(c): Extension<Caller>, body: Body) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let spec: CollectionSpec = json_body(body).await?;
    let team = c.team.to_string();
    let info = blocking(move || m.create_collection(&team, spec)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn info(State(st): S, Extension(c): Extension<Caller>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let team = c.team.to_string();
    Ok(Json(blocking(move || m.collection_info(&team, &name)).await?).into_response())
}

async fn remove(State(st): S, Extension(c): Extension<Caller>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let team = c.team.to_string();
    blocking(move || m.delete_collection(&team, &name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upsert(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let req: UpsertRequest = json_body(body).await?;
    let team = c.team.to_string();
    let n = blocking(move || m.upsert(&team, &name, &req)).await?;
    Ok(Json(serde_json::json!({ "upserted": n })).into_response())
}

async fn get_record(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
    Query(p): Query<ScopeParams>,
) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let team = c.team.to_string();
    let scope = p.scope();
    Ok(Json(blocking(move || m.get(&team, &name, scope.as_ref(), &id)).await?).into_response())
}

async fn delete_record(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
    Query(p): Query<ScopeParams>,
) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let team = c.team.to_string();
    let scope = p.scope();
    let n =
        blocking(move || m.delete(&team, &name, scope.as_ref(), std::slice::from_ref(&id)).map(|n| (n, id))).await?;
    match n {
        (0, id) => Err(MemoryError::NotFound { id }.into()),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteMany {
    scope: Option<Scope>,
    ids: Vec<String>,
}

async fn delete_many(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let req: DeleteMany = json_body(body).await?;
    let team = c.team.to_string();
    let n = blocking(move || m.delete(&team, &name, req.scope.as_ref(), &req.ids)).await?;
    Ok(Json(serde_json::json!({ "deleted": n })).into_response())
}

async fn query(
    State(st): S,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let m = store(&st)?;
    let req: QueryRequest = json_body(body).await?;
    let team = c.team.to_string();
    Ok(Json(blocking(move || m.query(&team, &name, &req)).await?).into_response())
}
