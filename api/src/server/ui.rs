//! The web UI, served on the API's port: its assets (TypeScript in `ui/`, built by
//! `scripts/build-ui` into `ui/dist` and embedded in the binary at compile time — no CDN, no
//! files beside the binary) under `/ui/`, and its sign-in sessions under `/ui/session`.
//!
//! A session keeps the token on the server: the browser holds only a random session id in a
//! cookie that is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends it)
//! and `Secure` when the request came over TLS (a proxy's `X-Forwarded-Proto: https`). Each
//! request re-authenticates the token behind the session, so a revoked or expired token ends
//! its sessions at once and the API's isolation is exactly the token's. Writes authenticated
//! by the cookie must also carry `X-Sotp-UI` (a header a cross-site form cannot set).
//! Sessions live in memory (a restart signs everyone out), at most [`MAX_SESSIONS`], each for
//! [`SESSION_TTL`] or until its token expires.

use super::AppState;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use sotp_runtime::{Principal, now_ms};
use std::collections::HashMap;
use std::time::Duration;

/// One file of the UI, as built, and gzipped if the build made a `.gz` of it.
pub struct Asset {
    pub name: &'static str,
    pub raw: &'static [u8],
    pub gz: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The cookie holding the session id.
pub const COOKIE: &str = "sotp_session";
/// Sessions held at once (each is a token and an expiry in memory).
pub const MAX_SESSIONS: usize = 10_000;
/// How long a session lasts at most.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

struct Entry {
    token: String,
    expires_ms: i64,
}

/// The UI's sign-in sessions, by the SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Sessions {
    /// Open a session for `token` until `expires_ms`; its id, or `None` when full.
    fn open(&self, token: &str, expires_ms: i64, now_ms: i64) -> Option<String> {
        let mut map = self.map.lock();
        map.retain(|_, e| e.expires_ms > now_ms);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        map.insert(
            key(&id),
            Entry {
                token: token.to_string(),
                expires_ms,
            },
        );
        Some(id)
    }

    /// The token behind a live session.
    pub fn token(&self, id: &str, now_ms: i64) -> Option<String> {
        let map = self.map.lock();
        map.get(&key(id))
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| e.token.clone())
    }

    fn close(&self, id: &str) {
        self.map.lock().remove(&key(id));
    }

    /// Sessions held now (`sotp_ui_sessions`).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }
}

fn key(id: &str) -> [u8; 32] {
    sha2::Sha256::digest(id.as_bytes()).into()
}

/// The session id a request's cookies carry.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn cookie(id: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("a cookie of hex and ASCII")
}

fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Who a token is, as the UI shows it.
fn describe(state: &AppState, principal: &Principal, expires_ms: Option<i64>) -> Value {
    let platform = state.runtime.platform().is_some() && state.runtime.may_see_platform(principal);
    match principal {
        Principal::Admin => json!({
            "signed_in": true, "principal": "admin", "tenant": null, "scopes": ["all"],
            "expires_ms": expires_ms, "platform": platform,
        }),
        Principal::Tenant { tenant, scopes } => json!({
            "signed_in": true, "principal": "tenant", "tenant": tenant,
            "scopes": scopes.to_text().split(',').collect::<Vec<_>>(), "expires_ms": expires_ms,
            "platform": platform,
        }),
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /ui/session`: sign in with a token; answers who it is and sets the cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request("bad_request", format!("expected {{\"token\": \"…\"}}: {e}"))
    })?;
    let token = body.token.trim();
    let (principal, token_expires) = state.runtime.authenticate(token)?;
    let now = now_ms();
    let expires = token_expires.map_or(now + SESSION_TTL.as_millis() as i64, |t| {
        t.min(now + SESSION_TTL.as_millis() as i64)
    });
    let id = state.sessions.open(token, expires, now).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            format!("{MAX_SESSIONS} UI sessions are open; try again later"),
        )
    })?;
    let mut response = Json(describe(&state, &principal, Some(expires))).into_response();
    // The cookie outlives a short-lived token's session on purpose: the server then says the
    // session ended (and the UI why), rather than the browser silently forgetting it.
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&id, SESSION_TTL.as_secs() as i64, over_tls(&headers)),
    );
    Ok(response)
}

/// `GET /ui/session`: who the session is, or `{"signed_in": false}` (the UI's first
/// question, so not an error: a page that is not signed in yet shows the sign-in form), with
/// a `reason` when the browser had a session that has ended.
pub async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let Some(id) = session_cookie(&headers).filter(|id| !id.is_empty()) else {
        return Json(json!({ "signed_in": false }));
    };
    let signed_in = state
        .sessions
        .token(id, now_ms())
        .and_then(|token| state.runtime.authenticate(&token).ok());
    match signed_in {
        Some((principal, expires)) => Json(describe(&state, &principal, expires)),
        None => Json(json!({
            "signed_in": false,
            "reason": "your session has ended (its token expired or was revoked, or sotp restarted): sign in again",
        })),
    }
}

/// `DELETE /ui/session`: sign out (the session ends on the server, the cookie is cleared).
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.close(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, over_tls(&headers)));
    response
}

/// `GET /`: the UI.
pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// `GET /ui/`: the UI's page; with the platform tenant's RUM on, carrying the RUM script
/// that sends its page loads and API calls there (docs/PLATFORM.md).
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = asset_response("index.html", &headers);
    let Some(rum) = state.runtime.platform().and_then(|p| p.rum.clone()) else {
        return response;
    };
    let Some(Asset { raw, .. }) = ASSETS.iter().find(|a| a.name == "index.html") else {
        return response;
    };
    let page =
        String::from_utf8_lossy(raw).replacen("</head>", &format!("{}\n</head>", rum.script()), 1);
    response.headers_mut().remove(header::CONTENT_ENCODING);
    *response.body_mut() = axum::body::Body::from(page);
    response
}

/// `GET /ui/{file}`: one of the UI's assets.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    asset_response(&file, &headers)
}

/// `GET /rum.js`: the real-user monitoring script pages embed (see ui/rum/rum.ts); public,
/// cached for five minutes.
pub async fn rum_script(headers: HeaderMap) -> Response {
    let mut response = asset_response("rum.js", &headers);
    if response.status().is_success() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
    }
    response
}

fn asset_response(name: &str, headers: &HeaderMap) -> Response {
    let Some(Asset { raw, gz, .. }) = ASSETS.iter().find(|a| a.name == name) else {
        if ASSETS.is_empty() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The web UI was not built into this binary: run scripts/build-ui, then build sotp again.\n",
            )
                .into_response();
        }
        return ApiError::not_found(format!("no UI asset {name}")).into_response();
    };
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mut response = match gz {
        Some(gz) if gzip_ok => {
            let mut r = gz.to_vec().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => raw.to_vec().into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(name)));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    // Chunks are named by their content; the rest is revalidated.
    let cache = if name.starts_with("chunk-") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn mime(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_bounded_and_keyed_by_a_hash_of_their_id() {
        let s = Sessions::default();
        let id = s.open("tok", 2_000, 1_000).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(s.token(&id, 1_500).as_deref(), Some("tok"));
        assert_eq!(s.token(&id, 2_000), None, "expired");
        assert_eq!(s.token("not-a-session", 1_500), None);
        assert!(!s.map.lock().contains_key(&[0; 32]));
        s.close(&id);
        assert_eq!(s.token(&id, 1_500), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sotp_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        let c = cookie("abc", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
