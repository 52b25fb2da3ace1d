//! The front door's part of traces: the tenant checked, its settings read, the blocking work
//! (SQLite) on the blocking pool, derived RUM samples committed like a component's (under
//! the tenant's series quota), and the forwarding passes started by the once-a-second pass.

use super::Runtime;
use crate::error::RuntimeError;
use crate::telemetry::{Batch, Samples};
use crate::traces::{IngestOutcome, TraceError, TraceQuery, TraceSettings, TraceSummary};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Where trace settings live in the state database.
const SETTINGS: &str = "traces";
/// The `component` label derived RUM samples carry.
const RUM_COMPONENT: &str = "rum";

impl From<TraceError> for RuntimeError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Store(s) => RuntimeError::Internal(s.to_string()),
            TraceError::Origin(_) => RuntimeError::Forbidden(e.to_string()),
            TraceError::RateLimited { retry_after_s, .. } => RuntimeError::RateLimited {
                message: e.to_string(),
                retry_after_s,
            },
            TraceError::BodyTooLarge(_)
            | TraceError::Decode(
                crate::traces::otlp::DecodeError::TooLarge(_)
                | crate::traces::otlp::DecodeError::TooManySpans { .. },
            ) => RuntimeError::TooLarge(e.to_string()),
            other => RuntimeError::Invalid(other.to_string()),
        }
    }
}

impl Runtime {
    pub fn traces(&self) -> &crate::traces::Traces {
        &self.traces
    }

    /// Store one OTLP export request of `tenant` and commit what it derives.
    pub async fn ingest_spans(
        self: &Arc<Self>,
        tenant: &str,
        body: Vec<u8>,
        content_type: String,
        gzip: bool,
    ) -> Result<IngestOutcome, RuntimeError> {
        let t = tenant.to_string();
        let (outcome, spans) = self
            .blocking(move |rt| {
                rt.tenant(&t)?;
                Ok(rt
                    .traces
                    .ingest(&t, &body, &content_type, gzip, crate::now_ms())?)
            })
            .await?;
        let derived = crate::traces::vitals::derive(&spans);
        if !derived.is_empty() {
            self.commit_derived(tenant, derived).await;
        }
        Ok(outcome)
    }

    /// Derived samples under the tenant's series quota (the store's writer refuses points
    /// of new series beyond it, and counts them); the spans stay stored either way.
    async fn commit_derived(&self, tenant: &str, derived: Vec<crate::traces::vitals::Derived>) {
        let Ok(budget) = self.budget(tenant) else {
            return;
        };
        let hasher = self.telemetry.hasher();
        let mut samples = Samples::default();
        for (metric, labels, ts_ms, value) in derived {
            samples.push(hasher.key(tenant, metric, labels), ts_ms, value);
        }
        let batch = Batch {
            tenant: tenant.to_string(),
            component: RUM_COMPONENT.to_string(),
            samples,
            max_series: budget.limits().max_series,
            ..Default::default()
        };
        match self.telemetry.commit(batch).await {
            Ok(report) if report.refused > 0 => {
                budget.counters.series_refused.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%tenant, error = %e, "derived RUM samples not stored"),
        }
    }

    /// Refuse a page of `origin` the tenant did not allow (the request is counted).
    pub fn check_span_origin(&self, tenant: &str, origin: &str) -> Result<(), RuntimeError> {
        if self.trace_settings(tenant)?.allows_origin(origin) {
            return Ok(());
        }
        self.traces.count_refusal(true);
        Err(TraceError::Origin(origin.to_string()).into())
    }

    pub fn trace_settings(&self, tenant: &str) -> Result<TraceSettings, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self
            .state
            .setting(tenant, SETTINGS)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| TraceSettings {
                sample_rate: 1.0,
                ..Default::default()
            }))
    }

    pub fn set_trace_settings(
        &self,
        tenant: &str,
        settings: &TraceSettings,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        settings.check().map_err(RuntimeError::Invalid)?;
        let text = serde_json::to_string(settings).unwrap_or_default();
        self.state.put_setting(tenant, SETTINGS, &text)?;
        Ok(())
    }

    pub async fn search_traces(
        self: &Arc<Self>,
        tenant: &str,
        query: TraceQuery,
    ) -> Result<Vec<TraceSummary>, RuntimeError> {
        let t = tenant.to_string();
        self.blocking(move |rt| {
            rt.tenant(&t)?;
            Ok(rt.traces.search(&t, &query)?)
        })
        .await
    }

    pub async fn trace(
        self: &Arc<Self>,
        tenant: &str,
        trace_id: &str,
    ) -> Result<Vec<serde_json::Value>, RuntimeError> {
        let (t, id) = (tenant.to_string(), trace_id.to_string());
        let spans = self
            .blocking(move |rt| {
                rt.tenant(&t)?;
                Ok(rt.traces.trace(&t, &id)?)
            })
            .await?;
        if spans.is_empty() {
            return Err(RuntimeError::NotFound(format!("no trace {trace_id}")));
        }
        Ok(spans)
    }

    /// Start the forwarding passes that are due (once a second, from the schedule's pass):
    /// each on the blocking pool, one at a time per tenant; and prune for retention when due.
    pub(super) fn start_due_forwards(self: &Arc<Self>) {
        if let Err(e) = self.traces.sweep_if_due(crate::now_ms()) {
            tracing::warn!(error = %e, "pruning spans for retention failed; retrying later");
        }
        let Ok(all) = self.state.settings(SETTINGS) else {
            return;
        };
        let now = std::time::Instant::now();
        for (tenant, text) in all {
            let Ok(settings) = serde_json::from_str::<TraceSettings>(&text) else {
                continue;
            };
            let Some(target) = settings.forward else {
                continue;
            };
            if !self.traces.forwarding.claim(&tenant, now) {
                continue;
            }
            let rt = self.clone();
            tokio::task::spawn_blocking(move || {
                let egress = crate::egress::EgressPolicy::new(rt.config.egress.clone());
                let bearer = target
                    .bearer_secret
                    .as_deref()
                    .and_then(|name| rt.state.secret(&tenant, name).ok().flatten());
                if let Err(e) = rt
                    .traces
                    .forward(&tenant, &target, bearer.as_deref(), &egress)
                {
                    tracing::debug!(%tenant, error = %e, "forwarding spans failed; will retry");
                }
            });
        }
    }
}
