//! Traces: real users' browsers (the RUM script) and the tenant's backends send spans over
//! OTLP/HTTP; SOTP keeps them, answers trace searches, derives page-load and web-vitals
//! samples from them, and forwards them to the tenant's OTLP backend (Jaeger, an
//! OpenTelemetry Collector).
//!
//! In: OTLP/HTTP export requests (protobuf or JSON, gzip or not) with the tenant already
//! authenticated (a `rum` key or a token with `ingest`) and its origin checked against the
//! tenant's allow-list. Out: spans in `traces.sqlite` (`store`), searches and trace views,
//! the spans to forward from the tenant's cursor (`forward`), the derived samples
//! (`vitals`) for the runtime to commit.
//!
//! What a tenant (or a page on the Internet carrying its key) can make SOTP hold is bounded
//! here: request body and decompressed size, spans per request and per span, spans per
//! second per tenant (a token bucket: 429 with `Retry-After`), spans kept per tenant and how
//! long. Every refusal is counted by reason.

pub mod forward;
pub mod otlp;
pub mod own;
pub mod store;
pub mod vitals;

use crate::units::{ByteSize, HumanDuration};
use otlp::{DecodeError, DecodeLimits, Encoding};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
pub use store::{TraceQuery, TraceStore, TraceSummary};

/// `[runtime.traces]`: what one tenant's spans may cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// One request's body as sent (compressed or not).
    pub max_body_bytes: ByteSize,
    /// One request's body once decompressed.
    pub max_decoded_bytes: ByteSize,
    /// Spans in one request.
    pub max_spans_per_request: usize,
    /// One span, encoded (attributes and events included).
    pub max_span_bytes: ByteSize,
    /// Spans a tenant may send per second, sustained...
    pub spans_per_second: u32,
    /// ... and at once.
    pub spans_burst: u32,
    /// Spans kept per tenant; the oldest go first.
    pub max_spans: u64,
    /// How long spans are kept.
    pub retention: HumanDuration,
    /// Spans per forwarded OTLP request.
    pub forward_batch: usize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            max_body_bytes: ByteSize::mib(4),
            max_decoded_bytes: ByteSize::mib(32),
            max_spans_per_request: 10_000,
            max_span_bytes: ByteSize::kib(64),
            spans_per_second: 5_000,
            spans_burst: 20_000,
            max_spans: 1_000_000,
            retention: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            forward_batch: 1_000,
        }
    }
}

/// A tenant's trace settings (`PUT /v1/traces/settings`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// Origins whose pages may send spans with the tenant's `rum` key
    /// (`https://shop.example`); a request from any other origin is refused.
    #[serde(default)]
    pub origins: Vec<String>,
    /// The share of browser sessions the RUM script records (0..=1, default 1); decided
    /// once per session and carried in `traceparent`'s sampled flag to the backends.
    #[serde(default = "full_sampling")]
    pub sample_rate: f64,
    /// Backends the RUM script may send `traceparent` to on cross-origin requests (origins;
    /// same-origin requests always carry it).
    #[serde(default)]
    pub propagate_to: Vec<String>,
    /// Where spans are forwarded, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<forward::ForwardTarget>,
}

fn full_sampling() -> f64 {
    1.0
}

impl TraceSettings {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "sample_rate {} is not within 0..=1",
                self.sample_rate
            ));
        }
        for o in self.origins.iter().chain(&self.propagate_to) {
            if !valid_origin(o) {
                return Err(format!(
                    "`{o}` is not an origin (scheme://host[:port], no path), or `*`"
                ));
            }
        }
        if let Some(f) = &self.forward {
            f.check()?;
        }
        Ok(())
    }

    /// Whether a page of `origin` may send spans.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
}

/// Operator-wide counters (`/metrics`: `sotp_traces_*`).
#[derive(Default)]
pub struct TracesCounters {
    pub requests: AtomicU64,
    pub spans_accepted: AtomicU64,
    pub spans_duplicate: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub refused_malformed: AtomicU64,
    pub refused_too_large: AtomicU64,
    pub refused_rate: AtomicU64,
    pub refused_origin: AtomicU64,
    pub refused_key: AtomicU64,
    pub spans_pruned: AtomicU64,
    pub spans_forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("`{0}` is not an OTLP content type: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("over the tenant's span rate ({rate}/s): retry after {retry_after_s} s")]
    RateLimited { rate: u32, retry_after_s: u64 },
    #[error("origin `{0}` may not send spans for this tenant (its traces.origins)")]
    Origin(String),
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What an accepted request did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Why the first rejected span was (OTLP's partial-success message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<String>,
}

/// How often every tenant's spans are pruned for retention.
const SWEEP_EVERY_MS: i64 = 10 * 60_000;

/// A token bucket of spans.
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Traces {
    pub store: TraceStore,
    pub config: TracesConfig,
    pub counters: TracesCounters,
    buckets: parking_lot::Mutex<HashMap<String, Bucket>>,
    /// Spans stored per tenant since the last prune (pruning is not needed on every write).
    since_prune: parking_lot::Mutex<HashMap<String, u64>>,
    /// When every tenant was last pruned for retention (ms since the epoch).
    last_sweep_ms: std::sync::atomic::AtomicI64,
    pub(crate) forwarding: forward::ForwardStates,
}

impl Traces {
    pub fn open(path: &std::path::Path, config: TracesConfig) -> Result<Traces, TraceError> {
        Ok(Traces {
            store: TraceStore::open(path)?,
            config,
            counters: TracesCounters::default(),
            buckets: parking_lot::Mutex::new(HashMap::new()),
            since_prune: parking_lot::Mutex::new(HashMap::new()),
            last_sweep_ms: std::sync::atomic::AtomicI64::new(0),
            forwarding: forward::ForwardStates::default(),
        })
    }

    /// Decode, check and store one export request of `tenant`: the outcome, and the spans
    /// that were new (for derived samples).
    pub fn ingest(
        &self,
        tenant: &str,
        body: &[u8],
        content_type: &str,
        gzip: bool,
        now_ms: i64,
    ) -> Result<(IngestOutcome, Vec<otlp::SpanRow>), TraceError> {
        self.counters.requests.fetch_add(1, Relaxed);
        let refused = |counter: &AtomicU64, e: TraceError| {
            counter.fetch_add(1, Relaxed);
            Err(e)
        };
        if body.len() as u64 > self.config.max_body_bytes.0 {
            return refused(
                &self.counters.refused_too_large,
                TraceError::BodyTooLarge(self.config.max_body_bytes.0),
            );
        }
        let Some(encoding) = Encoding::from_content_type(content_type) else {
            return refused(
                &self.counters.refused_malformed,
                TraceError::ContentType(content_type.to_string()),
            );
        };
        let limits = DecodeLimits {
            max_decoded: self.config.max_decoded_bytes.0 as usize,
            max_spans: self.config.max_spans_per_request,
            max_span_bytes: self.config.max_span_bytes.0 as usize,
        };
        let decoded = match otlp::decode(body, encoding, gzip, limits) {
            Ok(d) => d,
            Err(e @ (DecodeError::TooLarge(_) | DecodeError::TooManySpans { .. })) => {
                return refused(&self.counters.refused_too_large, e.into());
            }
            Err(e) => return refused(&self.counters.refused_malformed, e.into()),
        };
        if let Err(e) = self.take_tokens(tenant, decoded.spans.len() as u64) {
            return refused(&self.counters.refused_rate, e);
        }
        let stored = self.store.insert(tenant, &decoded.spans, now_ms)?;
        let added = stored.iter().filter(|new| **new).count() as u64;
        let outcome = IngestOutcome {
            accepted: added,
            duplicates: decoded.spans.len() as u64 - added,
            rejected: decoded.rejected,
            rejection: decoded.first_rejection,
        };
        // Only what is new goes on (a retried request derives nothing twice).
        let new_spans = decoded
            .spans
            .into_iter()
            .zip(stored)
            .filter_map(|(span, new)| new.then_some(span))
            .collect();
        self.counters
            .spans_accepted
            .fetch_add(outcome.accepted, Relaxed);
        self.counters
            .spans_duplicate
            .fetch_add(outcome.duplicates, Relaxed);
        self.counters
            .spans_rejected
            .fetch_add(outcome.rejected, Relaxed);
        self.prune_if_due(tenant, added, now_ms)?;
        Ok((outcome, new_spans))
    }

    /// Count a request refused before it reached `ingest` (bad key, foreign origin).
    pub fn count_refusal(&self, origin: bool) {
        self.counters.requests.fetch_add(1, Relaxed);
        let counter = if origin {
            &self.counters.refused_origin
        } else {
            &self.counters.refused_key
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Count a request refused for its size before it reached `ingest`.
    pub fn count_too_large(&self) {
        self.counters.requests.fetch_add(1, Relaxed);
        self.counters.refused_too_large.fetch_add(1, Relaxed);
    }

    fn take_tokens(&self, tenant: &str, spans: u64) -> Result<(), TraceError> {
        let rate = f64::from(self.config.spans_per_second.max(1));
        let burst = f64::from(self.config.spans_burst.max(1)).max(rate);
        let mut buckets = self.buckets.lock();
        let now = Instant::now();
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        let wanted = spans as f64;
        if wanted <= bucket.tokens {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted.min(burst) - bucket.tokens;
        Err(TraceError::RateLimited {
            rate: self.config.spans_per_second,
            retry_after_s: (missing / rate).ceil().max(1.0) as u64,
        })
    }

    /// Prune the tenant's spans once it has stored a tenth of its budget since the last time.
    fn prune_if_due(&self, tenant: &str, added: u64, now_ms: i64) -> Result<(), TraceError> {
        let due = {
            let mut since = self.since_prune.lock();
            let n = since.entry(tenant.to_string()).or_default();
            *n += added;
            let due = *n >= (self.config.max_spans / 10).max(1);
            if due {
                *n = 0;
            }
            due
        };
        if due {
            self.prune(tenant, now_ms)?;
        }
        Ok(())
    }

    /// Drop what is past retention or beyond the tenant's span budget.
    pub fn prune(&self, tenant: &str, now_ms: i64) -> Result<u64, TraceError> {
        let retention_ns = self.config.retention.0.as_nanos().min(i64::MAX as u128) as i64;
        let before_ns = now_ms
            .saturating_mul(1_000_000)
            .saturating_sub(retention_ns);
        let removed = self.store.prune(tenant, before_ns, self.config.max_spans)?;
        self.counters.spans_pruned.fetch_add(removed, Relaxed);
        Ok(removed)
    }

    /// Every ten minutes, prune every tenant for retention (a tenant that sends little never
    /// reaches the count that prunes on write); the spans removed.
    pub fn sweep_if_due(&self, now_ms: i64) -> Result<u64, TraceError> {
        let last = self.last_sweep_ms.load(Relaxed);
        if now_ms - last < SWEEP_EVERY_MS
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        let mut removed = 0;
        for tenant in self.store.tenants()? {
            removed += self.prune(&tenant, now_ms)?;
        }
        Ok(removed)
    }

    pub fn search(&self, tenant: &str, q: &TraceQuery) -> Result<Vec<TraceSummary>, TraceError> {
        Ok(self.store.search(tenant, q)?)
    }

    /// A trace's spans as JSON, in start order (empty if the tenant has no such trace).
    pub fn trace(
        &self,
        tenant: &str,
        trace_id: &str,
    ) -> Result<Vec<serde_json::Value>, TraceError> {
        let id = trace_id.to_ascii_lowercase();
        Ok(self
            .store
            .trace(tenant, &id)?
            .iter()
            .map(|(resource, body)| otlp::span_json(body, resource))
            .collect())
    }

    pub fn purge(&self, tenant: &str) -> Result<(), TraceError> {
        self.store.purge(tenant)?;
        self.buckets.lock().remove(tenant);
        self.since_prune.lock().remove(tenant);
        self.forwarding.forget(tenant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn traces(config: TracesConfig) -> (tempfile::TempDir, Traces) {
        let dir = tempfile::tempdir().unwrap();
        let t = Traces::open(&dir.path().join("traces.sqlite"), config).unwrap();
        (dir, t)
    }

    fn body(trace: u8, spans: u8) -> Vec<u8> {
        let spans = (1..=spans)
            .map(|i| otlp::tests::span(trace, i, (i > 1).then_some(1), &format!("s{i}")))
            .collect();
        otlp::tests::request("shop", spans).encode_to_vec()
    }

    const PB: &str = "application/x-protobuf";

    #[test]
    fn spans_are_stored_once_per_tenant_and_found_by_search() {
        let (_d, t) = traces(TracesConfig::default());
        let (out, _) = t.ingest("acme", &body(1, 3), PB, false, 0).unwrap();
        assert_eq!((out.accepted, out.duplicates), (3, 0));
        // A retried request stores nothing twice.
        let (out, _) = t.ingest("acme", &body(1, 3), PB, false, 0).unwrap();
        assert_eq!((out.accepted, out.duplicates), (0, 3));
        t.ingest("globex", &body(2, 1), PB, false, 0).unwrap();
        let q = TraceQuery {
            from_ns: 0,
            to_ns: i64::MAX,
            limit: 10,
            ..Default::default()
        };
        let found = t.search("acme", &q).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].spans, 3);
        assert_eq!(found[0].name, "s1");
        assert_eq!(found[0].errors, 3);
        assert_eq!(found[0].route.as_deref(), Some("/cart/42"));
        let id = found[0].trace_id.clone();
        assert_eq!(t.trace("acme", &id).unwrap().len(), 3);
        assert!(
            t.trace("globex", &id).unwrap().is_empty(),
            "another tenant's trace"
        );
        let q = TraceQuery {
            error: Some(false),
            ..q
        };
        assert!(t.search("acme", &q).unwrap().is_empty());
    }

    #[test]
    fn rate_budget_and_retention_hold() {
        let (_d, t) = traces(TracesConfig {
            spans_per_second: 1,
            spans_burst: 4,
            max_spans: 10,
            ..Default::default()
        });
        t.ingest("acme", &body(1, 4), PB, false, 0).unwrap();
        let err = t.ingest("acme", &body(2, 2), PB, false, 0).unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::RateLimited {
                    retry_after_s: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(t.counters.refused_rate.load(Relaxed), 1);
        // Another tenant has its own bucket.
        t.ingest("globex", &body(2, 2), PB, false, 0).unwrap();
        // Retention: spans of 2023 are long past 7 days; the sweep finds every tenant.
        let removed = t.sweep_if_due(1_800_000_000_000).unwrap();
        assert_eq!(removed, 6, "acme's 4 and globex's 2");
        assert_eq!(
            t.sweep_if_due(1_800_000_000_001).unwrap(),
            0,
            "not due again yet"
        );
        let err = t.ingest("acme", b"{}", "text/plain", false, 0).unwrap_err();
        assert!(matches!(err, TraceError::ContentType(_)), "{err}");
    }

    #[test]
    fn settings_are_checked() {
        let ok = TraceSettings {
            origins: vec![
                "https://shop.example".into(),
                "http://127.0.0.1:8080".into(),
            ],
            sample_rate: 0.5,
            ..Default::default()
        };
        assert!(ok.check().is_ok());
        assert!(ok.allows_origin("https://shop.example"));
        assert!(!ok.allows_origin("https://evil.example"));
        let bad = TraceSettings {
            origins: vec!["https://shop.example/path".into()],
            ..ok.clone()
        };
        assert!(bad.check().is_err());
        let bad = TraceSettings {
            sample_rate: 1.5,
            ..ok
        };
        assert!(bad.check().is_err());
    }
}
