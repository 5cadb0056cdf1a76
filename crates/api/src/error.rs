//! One table from engine errors to HTTP statuses, E2B's `{code, message}` body, and the
//! `Should-Retry` header that stops E2B SDKs from retrying what cannot succeed.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use warren_node::NodeError;
use warren_types::api::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry: false }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let status = match &e {
            NodeError::SandboxNotFound { .. }
            | NodeError::TemplateNotFound { .. }
            | NodeError::PoolNotFound { .. }
            | NodeError::KeyNotFound { .. } => StatusCode::NOT_FOUND,
            NodeError::OutOfRange { .. }
            | NodeError::InvalidId(_)
            | NodeError::InvalidPool { .. }
            | NodeError::Unsupported { .. }
            | NodeError::Rejected { .. } => StatusCode::BAD_REQUEST,
            NodeError::Forbidden { .. } => StatusCode::FORBIDDEN,
            NodeError::TemplateNotReady { .. }
            | NodeError::TemplateInUse { .. }
            | NodeError::TemplateWarming { .. }
            | NodeError::Conflict { .. }
            | NodeError::PoolConflict { .. }
            | NodeError::TemplateTaken { .. }
            | NodeError::SnapshotInUse { .. }
            | NodeError::SnapshotDamaged { .. }
            | NodeError::NotSaved { .. }
            | NodeError::Startup { .. }
            | NodeError::Illegal(_) => StatusCode::CONFLICT,
            NodeError::Capacity { .. } | NodeError::HostFull { .. } | NodeError::AddressesExhausted { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Empty for now: a retry a moment later is likely to find a refilled pool.
            NodeError::PoolEmpty { .. } => {
                return ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: e.to_string(), retry: true }
            }
            NodeError::Runtime(_)
            | NodeError::Store(_)
            | NodeError::Agent { .. }
            | NodeError::Build { .. }
            | NodeError::InvalidConfig { .. } => {
                tracing::error!(error = %e, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError { status, message: e.to_string(), retry: false }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.status.as_u16(), message: self.message };
        let mut r = (self.status, axum::Json(body)).into_response();
        let h = r.headers_mut();
        if self.retry {
            h.insert("should-retry", http::HeaderValue::from_static("true"));
            h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        } else {
            h.insert("should-retry", http::HeaderValue::from_static("false"));
        }
        r
    }
}
