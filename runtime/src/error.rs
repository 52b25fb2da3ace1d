//! The runtime's error type. Each variant knows its stable machine-readable code, which the
//! API turns into an HTTP status and `{error, detail}` body.

use crate::engine::CompileError;
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Compile(#[from] CompileError),
    #[error("{0}")]
    WrongWorld(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Quota(String),
    #[error("version {version} was not activated: {reason}")]
    InitFailed { version: u32, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_s: u64 },
    #[error("invalid rule file: {0}")]
    RuleFile(#[from] crate::compliance::RuleFileError),
}

impl RuntimeError {
    /// A stable code for clients: `invalid_manifest`, `not_wasm`, `wrong_world`, ...
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Manifest(_) => "invalid_manifest",
            RuntimeError::Compile(CompileError::NotWasm) => "not_wasm",
            RuntimeError::Compile(CompileError::CoreModule) => "not_a_component",
            RuntimeError::Compile(CompileError::Invalid(_)) => "invalid_component",
            RuntimeError::Compile(CompileError::Cache(_)) => "internal",
            RuntimeError::WrongWorld(_) => "wrong_world",
            RuntimeError::NotFound(_) => "not_found",
            RuntimeError::Conflict(_) => "conflict",
            RuntimeError::Quota(_) => "quota_exceeded",
            RuntimeError::InitFailed { .. } => "init_failed",
            RuntimeError::Invalid(_) => "invalid_request",
            RuntimeError::Unauthorized(_) => "unauthorized",
            RuntimeError::Forbidden(_) => "forbidden",
            RuntimeError::Internal(_) => "internal",
            RuntimeError::TooLarge(_) => "too_large",
            RuntimeError::RateLimited { .. } => "rate_limited",
            RuntimeError::RuleFile(_) => "invalid_rule_file",
        }
    }
}

impl From<crate::state::StateError> for RuntimeError {
    fn from(e: crate::state::StateError) -> Self {
        RuntimeError::Internal(e.to_string())
    }
}

impl From<crate::telemetry::QueryError> for RuntimeError {
    fn from(e: crate::telemetry::QueryError) -> Self {
        match e {
            crate::telemetry::QueryError::Invalid(m) => RuntimeError::Invalid(m),
            crate::telemetry::QueryError::Store(m) => RuntimeError::Internal(m),
        }
    }
}

impl From<crate::compliance::ComplianceError> for RuntimeError {
    fn from(e: crate::compliance::ComplianceError) -> Self {
        use crate::compliance::{ComplianceError as C, StoreError as S};
        match e {
            C::RuleFile(e) => RuntimeError::RuleFile(e),
            C::Invalid(m) => RuntimeError::Invalid(m),
            C::Busy(m) => RuntimeError::Conflict(m),
            C::Store(S::Quota(m)) => RuntimeError::Quota(m),
            C::Store(S::NotFound(m)) => RuntimeError::NotFound(m),
            C::Store(S::State(e)) => RuntimeError::Internal(e.to_string()),
        }
    }
}

impl From<crate::correlation::CorrelationError> for RuntimeError {
    fn from(e: crate::correlation::CorrelationError) -> Self {
        use crate::correlation::CorrelationError as C;
        match e {
            C::Intake(e) => RuntimeError::Invalid(e.to_string()),
            C::Invalid(m) => RuntimeError::Invalid(m),
            C::Store(e) => RuntimeError::Internal(e.to_string()),
        }
    }
}
