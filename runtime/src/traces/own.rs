//! SOTP's own traces: its API requests, component calls and flow exports are `tracing` spans
//! of target [`TARGET`]; when the operator sets `[server.traces] otlp_endpoint`, the API
//! installs an OpenTelemetry layer for that target and this exporter sends the spans there
//! (OTLP/HTTP protobuf) — Jaeger, a Collector, or SOTP's own intake with a platform
//! tenant's `ingest` token. Off, the spans cost one disabled-callsite check each.
//!
//! The endpoint is the operator's (a config file), not a tenant's, so no egress check
//! applies. A failed export is logged at debug and dropped: SOTP never slows down or buffers
//! without bound to trace itself.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The `tracing` target of the spans SOTP exports about itself.
pub const TARGET: &str = "sotp_trace";

/// Spans of SOTP's own exported, and batches that failed (`/metrics`).
pub static EXPORTED: AtomicU64 = AtomicU64::new(0);
pub static FAILED: AtomicU64 = AtomicU64::new(0);

/// OTLP/HTTP protobuf to one URL.
#[derive(Debug)]
pub struct OtlpHttpExporter {
    url: String,
    bearer: Option<String>,
    agent: ureq::Agent,
    resource: ResourceAttributesWithSchema,
}

impl OtlpHttpExporter {
    pub fn new(url: &str, bearer: Option<String>) -> Self {
        OtlpHttpExporter {
            url: url.to_string(),
            bearer,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
            resource: ResourceAttributesWithSchema::default(),
        }
    }

    fn send(&self, batch: Vec<SpanData>) -> Result<(), String> {
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let mut post = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf");
        if let Some(token) = &self.bearer {
            post = post.header("Authorization", &format!("Bearer {token}"));
        }
        let response = post
            .send(&request.encode_to_vec()[..])
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        EXPORTED.fetch_add(n, Relaxed);
        Ok(())
    }
}

impl SpanExporter for OtlpHttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The batch processor runs this on its own thread: blocking here blocks nothing else.
        self.send(batch).map_err(|e| {
            FAILED.fetch_add(1, Relaxed);
            tracing::debug!(error = %e, url = %self.url, "exporting SOTP's own spans failed");
            OTelSdkError::InternalFailure(e)
        })
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = resource.into();
    }
}
