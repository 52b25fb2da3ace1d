//! Bearer-token authentication. A tenant token acts on its own tenant only; the admin token
//! manages tenants and may act for one tenant by naming it in `X-Sotp-Tenant`.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sotp_runtime::Principal;

pub struct Caller {
    pub principal: Principal,
    /// For the admin: the tenant named in `X-Sotp-Tenant`, if any.
    acting_for: Option<String>,
}

impl Caller {
    /// The tenant this request acts on.
    pub fn tenant(&self) -> Result<&str, ApiError> {
        match (&self.principal, &self.acting_for) {
            (Principal::Tenant(t), _) => Ok(t),
            (Principal::Admin, Some(t)) => Ok(t),
            (Principal::Admin, None) => Err(ApiError::forbidden(
                "this endpoint acts on one tenant: use a tenant token, or the admin token with an X-Sotp-Tenant header",
            )),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.principal {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden("this endpoint needs the admin token")),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing `Authorization: Bearer <token>` header",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?
            .trim();
        let principal = state.runtime.authenticate(token)?;
        let acting_for = match principal {
            Principal::Admin => parts
                .headers
                .get("x-sotp-tenant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Principal::Tenant(_) => None,
        };
        if let Some(t) = &acting_for {
            state.runtime.tenant(t)?;
        }
        Ok(Caller {
            principal,
            acting_for,
        })
    }
}
