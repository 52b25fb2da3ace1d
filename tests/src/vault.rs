//! A small server following Vault's documented HTTP API for what SOTP uses — KV v2 reads
//! (`GET /v1/<mount>/data/<path>`, versions), token auth (`X-Vault-Token` or `Authorization:
//! Bearer`), AppRole login and `renew-self` — with Vault's status codes (403 for a bad token,
//! 404 for a missing secret, 503 while sealed). No Vault server can be installed here
//! (HashiCorp Vault is BUSL; OpenBao's module is refused by the Go proxy), so tests speak to
//! this; it counts the reads, so a test can see a cache.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const ROOT_TOKEN: &str = "s.root-token-for-tests";
pub const ROLE_ID: &str = "role-1234";
pub const SECRET_ID: &str = "secret-id-5678";

#[derive(Default)]
struct Inner {
    /// path -> versions (1-based: index + 1)
    kv: Mutex<HashMap<String, Vec<BTreeMap<String, String>>>>,
    tokens: Mutex<HashSet<String>>,
    sealed: AtomicBool,
    reads: AtomicU64,
    logins: AtomicU64,
}

pub struct Vault {
    pub port: u16,
    inner: Arc<Inner>,
    _runtime: tokio::runtime::Runtime,
}

impl Vault {
    pub fn start() -> Vault {
        let inner = Arc::new(Inner::default());
        inner.tokens.lock().unwrap().insert(ROOT_TOKEN.into());
        let app = axum::Router::new()
            .route("/v1/auth/approle/login", post(login))
            .route("/v1/auth/token/renew-self", post(renew))
            .route("/v1/{mount}/data/{*path}", get(read))
            .with_state(inner.clone());
        let (port, runtime) = crate::harness::serve_loopback(app);
        Vault {
            port,
            inner,
            _runtime: runtime,
        }
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Write a new version of `path` (mount `secret`).
    pub fn put(&self, path: &str, data: &[(&str, &str)]) {
        let map = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.inner
            .kv
            .lock()
            .unwrap()
            .entry(path.into())
            .or_default()
            .push(map);
    }

    pub fn seal(&self, sealed: bool) {
        self.inner.sealed.store(sealed, Ordering::SeqCst);
    }

    /// Revoke every token but the root one (AppRole logins must be made again).
    pub fn revoke_logins(&self) {
        let mut tokens = self.inner.tokens.lock().unwrap();
        tokens.retain(|t| t == ROOT_TOKEN);
    }

    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::SeqCst)
    }

    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::SeqCst)
    }
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "errors": [message] }))).into_response()
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-vault-token")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_string())
}

async fn read(
    State(v): State<Arc<Inner>>,
    Path((mount, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if v.sealed.load(Ordering::SeqCst) {
        return errors(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed");
    }
    let known = token(&headers).is_some_and(|t| v.tokens.lock().unwrap().contains(&t));
    if !known {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    v.reads.fetch_add(1, Ordering::SeqCst);
    if mount != "secret" {
        return errors(StatusCode::NOT_FOUND, "no handler for route");
    }
    let kv = v.kv.lock().unwrap();
    let Some(versions) = kv.get(&path) else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "errors": [] }))).into_response();
    };
    let data = versions.last().cloned().unwrap_or_default();
    axum::Json(json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_duration": 0,
        "renewable": false,
        "data": {
            "data": data,
            "metadata": { "version": versions.len(), "destroyed": false, "deletion_time": "" },
        },
    }))
    .into_response()
}

fn issue(v: &Inner) -> Value {
    let t = format!("s.login-{}", v.logins.fetch_add(1, Ordering::SeqCst) + 1);
    v.tokens.lock().unwrap().insert(t.clone());
    json!({ "auth": { "client_token": t, "lease_duration": 3600, "renewable": true } })
}

async fn login(State(v): State<Arc<Inner>>, axum::Json(body): axum::Json<Value>) -> Response {
    if v.sealed.load(Ordering::SeqCst) {
        return errors(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed");
    }
    if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
        return errors(StatusCode::BAD_REQUEST, "invalid role or secret ID");
    }
    axum::Json(issue(&v)).into_response()
}

async fn renew(State(v): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    match token(&headers) {
        Some(t) if v.tokens.lock().unwrap().contains(&t) => axum::Json(
            json!({ "auth": { "client_token": t, "lease_duration": 3600, "renewable": true } }),
        )
        .into_response(),
        _ => errors(StatusCode::FORBIDDEN, "permission denied"),
    }
}
