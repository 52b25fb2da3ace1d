//! The HTTP management API (axum over hyper), versioned under `/v1`.
//!
//! Handlers are thin: they authenticate, pick the tenant, and call one `Runtime` method.
//! Isolation, validation and limits live in the runtime so no handler can forget them.

mod alerts;
mod auth;
mod backups;
mod compliance;
mod components;
mod devices;
mod error;
mod flows;
mod incidents;
mod loki;
mod mqtt;
mod ops;
mod own_traces;
mod platform;
mod prometheus;
mod query;
mod scrape;
mod secrets;
mod tenants;
mod traces;
pub mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use sotp_runtime::Runtime;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/probe_wasm.rs"));

/// Multipart framing and the manifest on top of the component's own size limit.
pub const MULTIPART_SLACK: u64 = 1024 * 1024;

/// Bodies other than uploads are small JSON documents.
const JSON_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    /// The web UI's sign-in sessions.
    pub sessions: Arc<ui::Sessions>,
}

impl AppState {
    /// Run a runtime call that blocks (SQLite, Git, fsync) on the blocking pool, never on an
    /// async worker: a slow disk or a locked database must not stall the other requests.
    pub async fn blocking<T, F>(&self, f: F) -> error::ApiResult<T>
    where
        F: FnOnce(&Arc<Runtime>) -> Result<T, sotp_runtime::RuntimeError> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self.runtime.clone();
        tokio::task::spawn_blocking(move || f(&rt))
            .await
            .map_err(|e| {
                error::ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the request's task failed: {e}"),
                )
            })?
            .map_err(Into::into)
    }
}

/// Trace API requests as part of SOTP's own traces (see `own_traces`).
pub fn trace_requests(on: bool) {
    own_traces::enable(on);
}

pub fn router(runtime: Arc<Runtime>) -> Router {
    let alert_body = runtime.max_alert_body();
    let trace_body = runtime.traces().config.max_body_bytes.0 as usize;
    let state = AppState {
        runtime,
        sessions: Default::default(),
    };
    let v1 = Router::new()
        .route("/tenants", post(tenants::create).get(tenants::list))
        .route("/tenants/{id}", get(tenants::show).delete(tenants::delete))
        .route("/tenant", get(tenants::own))
        .route(
            "/tokens",
            post(tenants::create_token).get(tenants::list_tokens),
        )
        .route("/tokens/{id}", axum::routing::delete(tenants::revoke_token))
        .route(
            "/components",
            post(components::upload)
                .layer(DefaultBodyLimit::disable())
                .get(components::list),
        )
        .route(
            "/components/{name}",
            get(components::show).delete(components::delete),
        )
        .route("/components/{name}/versions", get(components::versions))
        .route("/components/{name}/activate", post(components::activate))
        .route("/components/{name}/rollback", post(components::rollback))
        .route("/components/{name}/logs", get(components::logs))
        .route("/components/{name}/messages", post(components::message))
        .route("/mqtt", get(mqtt::get).put(mqtt::put).delete(mqtt::delete))
        .route(
            "/alerts",
            get(alerts::list)
                .post(alerts::post)
                .layer(DefaultBodyLimit::max(alert_body)),
        )
        .route(
            "/alerts/webhook",
            post(alerts::webhook).layer(DefaultBodyLimit::max(alert_body)),
        )
        .route("/alerts/intakes", get(alerts::intakes))
        .route("/alerts/outputs", get(alerts::outputs))
        .route(
            "/alerts/settings",
            get(alerts::get_settings).put(alerts::put_settings),
        )
        .route("/incidents", get(incidents::list))
        .route("/incidents/replay", post(incidents::replay))
        .route("/incidents/{id}", get(incidents::show))
        .route("/incidents/{id}/acknowledge", post(incidents::acknowledge))
        .route("/incidents/{id}/resolve", post(incidents::resolve))
        .route("/backups", get(backups::list))
        .route(
            "/backups/settings",
            get(backups::get_settings).put(backups::put_settings),
        )
        .route("/backups/{name}", get(backups::history))
        .route(
            "/backups/{name}/text",
            get(backups::text)
                .put(backups::import)
                .layer(DefaultBodyLimit::max(
                    sotp_runtime::backups::MAX_CONFIG_BYTES + 4096,
                )),
        )
        .route("/backups/{name}/diff", get(backups::diff))
        .route("/compliance/rules", get(compliance::files))
        .route(
            "/compliance/rules/{file}",
            get(compliance::get_file)
                .put(compliance::put_file)
                .delete(compliance::delete_file),
        )
        .route(
            "/compliance/rules/{file}/versions",
            get(compliance::versions),
        )
        .route(
            "/compliance/rules/{file}/activate",
            post(compliance::activate),
        )
        .route(
            "/compliance/rules/{file}/rollback",
            post(compliance::rollback),
        )
        .route(
            "/compliance/rules/{file}/dry-run",
            post(compliance::dry_run),
        )
        .route(
            "/compliance/rules/{file}/preview",
            post(compliance::preview),
        )
        .route(
            "/compliance/components/{name}/dry-run",
            post(compliance::dry_run_component),
        )
        .route(
            "/compliance/waivers",
            get(compliance::waivers).post(compliance::add_waiver),
        )
        .route(
            "/compliance/waivers/{id}",
            axum::routing::delete(compliance::delete_waiver),
        )
        .route(
            "/compliance/audits",
            get(compliance::audits).post(compliance::run_audit),
        )
        .route("/compliance/audits/running", get(compliance::running))
        .route(
            "/compliance/schedule",
            get(compliance::get_schedule).put(compliance::put_schedule),
        )
        .route("/compliance/audits/{id}", get(compliance::report))
        .route("/devices", get(devices::list))
        .route("/devices/import", post(devices::import))
        .route(
            "/devices/{name}",
            get(devices::show).put(devices::put).delete(devices::delete),
        )
        .route(
            "/devices/{name}/interfaces",
            get(devices::interfaces).put(devices::put_interfaces),
        )
        .route(
            "/devices/{name}/ssh-host-key",
            axum::routing::delete(devices::forget_host_key),
        )
        .route("/secrets", get(secrets::list))
        .route(
            "/secret-providers",
            get(secrets::get_providers).put(secrets::put_providers),
        )
        .route("/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route("/flows/top", get(flows::top))
        .route("/flows/rate", get(flows::rate))
        .route("/flows/status", get(flows::status))
        .route(
            "/traces",
            get(traces::search)
                .post(traces::ingest)
                .options(traces::preflight)
                .layer(DefaultBodyLimit::max(trace_body)),
        )
        .route(
            "/traces/settings",
            get(traces::get_settings).put(traces::put_settings),
        )
        .route(
            "/traces/rum-config",
            get(traces::rum_config).options(traces::preflight),
        )
        .route("/traces/{id}", get(traces::show))
        .route("/scrape/targets", get(scrape::targets))
        .route("/platform/health", get(platform::health))
        .route("/query", get(query::query))
        .route("/logs", get(query::logs))
        .route("/metrics", get(ops::tenant_metrics))
        .route("/openapi.json", get(ops::openapi))
        .route_layer(axum::middleware::from_fn(own_traces::trace_request));
    Router::new()
        .route("/", get(ui::root))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route(
            "/ui/session",
            post(ui::sign_in).get(ui::whoami).delete(ui::sign_out),
        )
        .route("/ui/{file}", get(ui::asset))
        .route("/rum.js", get(ui::rum_script))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .nest("/v1", v1)
        .nest("/api/v1", prometheus::router(&state))
        .nest("/loki/api/v1", loki::router(&state))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found(format!(
        "no such endpoint: {}; see /v1/openapi.json",
        uri.path()
    ))
}

/// The operator's metrics listener (`server.metrics_listen`): `/metrics` without a token, for
/// a Prometheus on a network only the operator reaches.
pub fn operator_router(runtime: Arc<Runtime>) -> Router {
    Router::new()
        .route("/metrics", get(ops::operator_metrics))
        .fallback(not_found)
        .with_state(AppState {
            runtime,
            sessions: Default::default(),
        })
}

fn panic_response(
    _: Box<dyn std::any::Any + Send + 'static>,
) -> axum::http::Response<axum::body::Body> {
    tracing::error!("a request handler panicked");
    use axum::response::IntoResponse;
    error::ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed inside sotp; see its log",
    )
    .into_response()
}
