//! A span per API request for SOTP's own traces (`[server.traces]`): named by method and
//! route template, a child of the caller's `traceparent` when it sends one — so a probe's or
//! a browser's request to SOTP joins the caller's trace. Off (the default), requests pass
//! straight through. The OTLP intake itself is not traced: exporting SOTP's spans to its own
//! intake would otherwise trace each export.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ON: AtomicBool = AtomicBool::new(false);

/// Turn request spans on (once the OpenTelemetry layer is installed).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

pub async fn trace_request(request: Request, next: Next) -> Response {
    if !ON.load(Ordering::Relaxed) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    if route == "/v1/traces" && method == axum::http::Method::POST {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        target: sotp_runtime::traces::own::TARGET,
        "HTTP request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
