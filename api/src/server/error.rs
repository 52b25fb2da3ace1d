//! API errors: every failure is a JSON body `{error, detail}` with a stable `error` code and
//! a sentence for humans; user mistakes are 4xx, never 5xx.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sotp_runtime::RuntimeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large", detail)
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match &e {
            RuntimeError::Manifest(_)
            | RuntimeError::Compile(_)
            | RuntimeError::Invalid(_)
            | RuntimeError::RuleFile(_) => StatusCode::BAD_REQUEST,
            RuntimeError::WrongWorld(_) | RuntimeError::InitFailed { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::Conflict(_) => StatusCode::CONFLICT,
            RuntimeError::Quota(_) | RuntimeError::Forbidden(_) => StatusCode::FORBIDDEN,
            RuntimeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RuntimeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RuntimeError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "internal error");
        }
        let extra = match &e {
            RuntimeError::InitFailed { version, .. } => {
                Some(serde_json::json!({ "version": version }))
            }
            RuntimeError::Manifest(m) => Some(serde_json::json!({ "key": m.key })),
            RuntimeError::RateLimited { retry_after_s, .. } => {
                Some(serde_json::json!({ "retry_after_s": retry_after_s }))
            }
            RuntimeError::RuleFile(r) => Some(serde_json::json!({
                "file": r.file, "line": r.line, "column": r.column, "key": r.key, "reason": r.reason,
            })),
            _ => None,
        };
        ApiError {
            status,
            code: e.code(),
            detail: e.to_string(),
            extra,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "detail": self.detail });
        if let (Some(extra), Some(map)) = (self.extra, body.as_object_mut())
            && let Some(extra) = extra.as_object()
        {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        let retry_after = body.get("retry_after_s").and_then(|v| v.as_u64());
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = retry_after
            && let Ok(value) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
