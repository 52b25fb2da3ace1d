//! A small web application for synthetic-monitoring tests, on a loopback port: a login form
//! with a CSRF token and a session cookie, a landing page behind it, and a JSON API — and
//! knobs a test turns to break it (a wrong status, a slow answer, a login that fails, an
//! endpoint that never answers). Every request's path and `traceparent` are recorded, so a
//! test can follow a probe's trace into the backend.
//!
//! Routes: `GET /login` (the form; sets `sid`), `POST /login` (303 to `/home` on success,
//! 401 with the form again otherwise), `GET /home` (200 "Signed in as <user>" with a signed-in
//! session, else 303 to `/login`), `GET /api/status` (JSON `{"status":"ok","version":...}`
//! with the knob's status), `GET /hang` (accepts and never answers).

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const USER: &str = "probe-user";
pub const PASSWORD: &str = "s3cret pass&word";

/// A request the app saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct Session {
    csrf: String,
    user: Option<String>,
}

/// Where the app sends its own (backend) spans, and the RUM script its page carries.
#[derive(Clone, Default)]
struct Telemetry {
    /// SOTP's base URL: the page loads `<base>/rum.js`, the backend posts to
    /// `<base>/v1/traces`.
    sotp: String,
    rum_key: String,
    ingest_token: String,
}

struct AppState {
    telemetry: Mutex<Option<Telemetry>>,
    api_status: AtomicU16,
    delay_ms: AtomicU64,
    login_broken: AtomicBool,
    sessions: Mutex<HashMap<String, Session>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct WebApp {
    pub port: u16,
    scheme: &'static str,
    state: Arc<AppState>,
    _runtime: tokio::runtime::Runtime,
}

impl WebApp {
    /// Serve on a free port of 127.0.0.1.
    pub fn start() -> WebApp {
        Self::serve(None)
    }

    /// Serve HTTPS with this certificate chain and key (PEM) on a free port of 127.0.0.1.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> WebApp {
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .expect("a private key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> WebApp {
        let tls_on = tls.is_some();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(AppState {
            telemetry: Mutex::new(None),
            api_status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            login_broken: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/login", get(login_page).post(login_submit))
            .route("/home", get(home))
            .route("/api/status", get(api_status))
            .route("/hang", get(hang))
            .route("/shop", get(shop))
            .route("/metrics/{kind}", get(exposition))
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        match tls {
            None => {
                runtime.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            Some(acceptor) => {
                runtime.spawn(serve_tls(listener, acceptor, app));
            }
        }
        WebApp {
            port,
            scheme: if tls_on { "https" } else { "http" },
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// The status `/api/status` answers with.
    pub fn set_api_status(&self, status: u16) {
        self.state.api_status.store(status, Ordering::SeqCst);
    }

    /// A delay before every answer.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Refuse every login (as if the user store were down).
    pub fn break_login(&self, broken: bool) {
        self.state.login_broken.store(broken, Ordering::SeqCst);
    }

    /// Serve `/shop` with SOTP's RUM script (key `rum_key`), and send the backend's own
    /// span of every sampled request carrying a `traceparent` to SOTP with `ingest_token`.
    pub fn instrument(&self, sotp: &str, rum_key: &str, ingest_token: &str) {
        *self.state.telemetry.lock().unwrap() = Some(Telemetry {
            sotp: sotp.trim_end_matches('/').to_string(),
            rum_key: rum_key.to_string(),
            ingest_token: ingest_token.to_string(),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn arrive(state: &AppState, method: &str, path: &str, headers: &HeaderMap) {
    state.seen.lock().unwrap().push(Seen {
        method: method.into(),
        path: path.into(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("sid="))
        .map(String::from)
        .next()
}

fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

fn form_page(csrf: &str, message: &str) -> String {
    format!(
        "<!doctype html><html><head><title>Sign in</title></head><body>\
         <p>{message}</p>\
         <form method=\"post\" action=\"/login\">\
         <input type=\"text\" name=\"username\">\
         <input type=\"password\" name=\"password\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <button>Sign in</button></form></body></html>"
    )
}

async fn login_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    arrive(&state, "GET", "/login", &headers).await;
    let sid = session_id(&headers)
        .filter(|s| state.sessions.lock().unwrap().contains_key(s))
        .unwrap_or_else(random_hex);
    let csrf = random_hex();
    state.sessions.lock().unwrap().insert(
        sid.clone(),
        Session {
            csrf: csrf.clone(),
            user: None,
        },
    );
    (
        [(
            header::SET_COOKIE,
            format!("sid={sid}; Path=/; HttpOnly; SameSite=Lax"),
        )],
        axum::response::Html(form_page(&csrf, "Please sign in")),
    )
        .into_response()
}

async fn login_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    arrive(&state, "POST", "/login", &headers).await;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let mut sessions = state.sessions.lock().unwrap();
    let session = session_id(&headers).and_then(|sid| sessions.get_mut(&sid));
    let Some(session) = session else {
        return (StatusCode::FORBIDDEN, "no session: load the form first").into_response();
    };
    if session.csrf.is_empty() || field("csrf_token") != session.csrf {
        return (StatusCode::FORBIDDEN, "CSRF token mismatch").into_response();
    }
    let ok = field("username") == USER
        && field("password") == PASSWORD
        && !state.login_broken.load(Ordering::SeqCst);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(form_page(&session.csrf, "Sign-in failed")),
        )
            .into_response();
    }
    session.user = Some(USER.into());
    session.csrf.clear();
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/home")]).into_response()
}

async fn home(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    arrive(&state, "GET", "/home", &headers).await;
    let user =
        session_id(&headers).and_then(|sid| state.sessions.lock().unwrap().get(&sid)?.user.clone());
    match user {
        Some(user) => axum::response::Html(format!(
            "<!doctype html><html><body><h1>Dashboard</h1><p>Signed in as {user}</p></body></html>"
        ))
        .into_response(),
        None => (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response(),
    }
}

async fn api_status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = std::time::SystemTime::now();
    arrive(&state, "GET", "/api/status", &headers).await;
    export_server_span(&state, &headers, "GET /api/status", "/api/status", started);
    let status = StatusCode::from_u16(state.api_status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if status.is_success() {
        r#"{"status":"ok","version":"1.4.2","checks":[{"name":"db","state":"up"}]}"#
    } else {
        r#"{"status":"degraded","version":"1.4.2","checks":[{"name":"db","state":"down"}]}"#
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn hang(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    arrive(&state, "GET", "/hang", &headers).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK.into_response()
}

/// Accept TLS connections and serve `app` on each (HTTP/1.1).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return; // a client that refused our certificate
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A shop page with the RUM script: on load it calls the API (same origin: `traceparent`
/// goes along) and shows the answer; `#buy` is something to click.
async fn shop(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    arrive(&state, "GET", "/shop", &headers).await;
    let Some(t) = state.telemetry.lock().unwrap().clone() else {
        return (StatusCode::NOT_FOUND, "not instrumented").into_response();
    };
    axum::response::Html(format!(
        "<!doctype html><html><head><title>Shop</title>\
         <script src=\"{sotp}/rum.js\" data-key=\"{key}\" data-service=\"shop-web\"></script>\
         </head><body><h1>Checkout</h1><p id=\"status\">loading</p>\
         <button id=\"buy\">Buy</button>\
         <script>\
         setTimeout(function () {{\
           fetch('/api/status').then(function (r) {{ return r.json(); }}).then(function (j) {{\
             var s = document.getElementById('status'); s.textContent = j.status; s.dataset.done = '1';\
           }});\
         }}, 300);\
         </script></body></html>",
        sotp = t.sotp,
        key = t.rum_key,
    ))
    .into_response()
}

/// The backend's span of a request that carries a sampled `traceparent`: a child of the
/// caller's span, sent to SOTP over OTLP (JSON) in the background.
fn export_server_span(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    route: &str,
    started: std::time::SystemTime,
) {
    let Some(t) = state.telemetry.lock().unwrap().clone() else {
        return;
    };
    let Some(parent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let parts: Vec<&str> = parent.split('-').collect();
    if parts.len() != 4 || parts[3] != "01" {
        return; // not sampled: the session's spans are dropped everywhere
    }
    let start_ns = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let end_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "shop-api" } }] },
            "scopeSpans": [{ "scope": { "name": "webapp" }, "spans": [{
                "traceId": parts[1],
                "spanId": &random_hex()[..16],
                "parentSpanId": parts[2],
                "name": name,
                "kind": 2,
                "startTimeUnixNano": start_ns.to_string(),
                "endTimeUnixNano": end_ns.max(start_ns + 1).to_string(),
                "attributes": [{ "key": "http.route", "value": { "stringValue": route } }],
            }]}],
        }]
    });
    tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("{}/v1/traces", t.sotp))
            .bearer_auth(&t.ingest_token)
            .json(&body)
            .send()
            .await;
    });
}

/// Expositions for scrape tests: `good` (two samples), `bad` (line 2 malformed), `huge`
/// (2 MiB of samples), `windows` (windows_exporter v0.27.2's families: see
/// tests/data/windows_exporter/README.md).
async fn exposition(axum::extract::Path(kind): axum::extract::Path<String>) -> Response {
    let body = match kind.as_str() {
        "good" => "# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 42\napp_up 1\n".to_string(),
        "bad" => "app_ok 1\napp_broken{code=200} 1\n".to_string(),
        "windows" => include_str!("../data/windows_exporter/v0.27.2.prom").to_string(),
        "huge" => (0..40_000).map(|i| format!("app_series_{i}{{a=\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}} {i}\n")).collect(),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
