//! Bearer-token authentication and scopes. A tenant token acts on its own tenant only, and
//! only as far as its scopes allow (every handler names the scope it needs); the admin token
//! manages tenants and may act for one tenant, with every scope, by naming it in
//! `X-Sotp-Tenant`.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sotp_runtime::{Principal, Scope, Scopes};

pub struct Caller {
    pub principal: Principal,
    /// When the caller's token expires (ms since the epoch): tokens it creates expire by then.
    pub expires_ms: Option<i64>,
    /// For the admin: the tenant named in `X-Sotp-Tenant`, if any.
    acting_for: Option<String>,
}

impl Caller {
    /// The tenant this request acts on, if the token allows `scope` there.
    pub fn tenant(&self, scope: Scope) -> Result<&str, ApiError> {
        let tenant = match (&self.principal, &self.acting_for) {
            (Principal::Tenant { tenant, .. }, _) => tenant,
            (Principal::Admin, Some(t)) => t,
            (Principal::Admin, None) => {
                return Err(ApiError::forbidden(
                    "this endpoint acts on one tenant: use a tenant token, or the admin token with an X-Sotp-Tenant header",
                ));
            }
        };
        if !self.scopes().allows(scope) {
            return Err(ApiError::forbidden(format!(
                "this needs a token with the `{scope}` scope (this token has: {})",
                self.scopes().to_text()
            )));
        }
        Ok(tenant)
    }

    /// What the token allows (the platform admin: everything).
    pub fn scopes(&self) -> Scopes {
        match &self.principal {
            Principal::Admin => Scopes::all(),
            Principal::Tenant { scopes, .. } => *scopes,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.principal {
            Principal::Admin => Ok(()),
            Principal::Tenant { .. } => {
                Err(ApiError::forbidden("this endpoint needs the admin token"))
            }
        }
    }

    /// For the admin: the tenant named in `X-Sotp-Tenant`.
    pub fn acting_for(&self) -> Option<&str> {
        self.acting_for.as_deref()
    }

    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => bearer(header)?,
            None => ui_session(parts, state)?,
        };
        let token = token.as_str();
        let (principal, expires_ms) = state.runtime.authenticate(token)?;
        let acting_for = match principal {
            Principal::Admin => parts
                .headers
                .get("x-sotp-tenant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Principal::Tenant { .. } => None,
        };
        if let Some(t) = &acting_for {
            state.runtime.tenant(t)?;
        }
        Ok(Caller {
            principal,
            expires_ms,
            acting_for,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header, or of HTTP basic auth with the
/// token as the password (the user is ignored): what Prometheus clients send from a URL's
/// `user:password@` (`promtool` has no other way).
pub(super) fn bearer(header: &axum::http::HeaderValue) -> Result<String, ApiError> {
    use base64::Engine;
    let header = header.to_str().unwrap_or_default();
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header must be `Bearer <token>` (or basic auth with the token as the password)",
        )
    };
    if let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    {
        return Ok(token.trim().to_string());
    }
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or_else(refused)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| refused())?;
    let text = String::from_utf8(decoded).map_err(|_| refused())?;
    let (_, password) = text.split_once(':').ok_or_else(refused)?;
    Ok(password.to_string())
}

/// The token behind the web UI's session cookie (see `ui`). A write with the cookie must
/// say it comes from the UI (`X-Sotp-UI`), which a cross-site form cannot.
fn ui_session(parts: &Parts, state: &AppState) -> Result<String, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>` header",
        )
    };
    let id = super::ui::session_cookie(&parts.headers).ok_or_else(missing)?;
    let token = state
        .sessions
        .token(id, sotp_runtime::now_ms())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the session has ended: sign in again",
            )
        })?;
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe && !parts.headers.contains_key("x-sotp-ui") {
        return Err(ApiError::forbidden(
            "a write signed in by the UI's cookie must carry the X-Sotp-UI header",
        ));
    }
    Ok(token)
}
