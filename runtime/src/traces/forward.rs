//! Forwarding a tenant's spans to its OTLP backend (OTLP/HTTP protobuf, `POST` to the URL
//! given, e.g. Jaeger's `http://jaeger:4318/v1/traces`).
//!
//! The store is the buffer: each tenant has a cursor (the last `seq` its backend
//! acknowledged with a 2xx), and a pass sends what lies after it, in arrival order, a batch
//! at a time, moving the cursor only after each answer. A backend that is down is retried
//! with backoff (1 s doubling to 60 s) and gets everything stored meanwhile when it returns
//! — as far as retention and the span budget kept it (spans pruned before being forwarded
//! are counted, never silently lost). The URL is the tenant's, so the call goes through the
//! operator's egress policy (`crate::outbound`).

use super::Traces;
use crate::egress::EgressPolicy;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Batches one pass sends at most before letting others run.
const MAX_BATCHES_PER_PASS: usize = 50;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where a tenant's spans go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTarget {
    /// The OTLP/HTTP traces URL, e.g. `http://jaeger.example:4318/v1/traces`.
    pub url: String,
    /// A tenant secret holding a bearer token to send, if the backend wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_secret: Option<String>,
}

impl ForwardTarget {
    pub fn check(&self) -> Result<(), String> {
        crate::outbound::target(&self.url)
            .map(|_| ())
            .map_err(|e| format!("forward.url: {e}"))
    }
}

/// How forwarding goes for one tenant (`GET /v1/traces/settings` shows it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForwardStatus {
    pub forwarded_spans: u64,
    /// Spans stored and not yet acknowledged by the backend.
    pub behind: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub failures: u64,
}

#[derive(Default)]
struct ForwardState {
    status: ForwardStatus,
    running: bool,
    next_try: Option<Instant>,
    backoff: Duration,
}

#[derive(Default)]
pub struct ForwardStates(parking_lot::Mutex<HashMap<String, ForwardState>>);

impl ForwardStates {
    /// Claim the tenant's next pass if one is due and none is running.
    pub fn claim(&self, tenant: &str, now: Instant) -> bool {
        let mut states = self.0.lock();
        let s = states.entry(tenant.to_string()).or_default();
        if s.running || s.next_try.is_some_and(|t| t > now) {
            return false;
        }
        s.running = true;
        true
    }

    fn finish(&self, tenant: &str, result: &Result<u64, String>, now_ms: i64) {
        let mut states = self.0.lock();
        let s = states.entry(tenant.to_string()).or_default();
        s.running = false;
        match result {
            Ok(n) => {
                s.status.forwarded_spans += n;
                s.status.last_error = None;
                if *n > 0 {
                    s.status.last_ok_ms = Some(now_ms);
                }
                s.backoff = Duration::ZERO;
                s.next_try = None;
            }
            Err(e) => {
                s.status.last_error = Some(e.clone());
                s.status.failures += 1;
                s.backoff = (s.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                s.next_try = Some(Instant::now() + s.backoff);
            }
        }
    }

    pub fn status(&self, tenant: &str) -> ForwardStatus {
        self.0
            .lock()
            .get(tenant)
            .map(|s| s.status.clone())
            .unwrap_or_default()
    }

    pub fn forget(&self, tenant: &str) {
        self.0.lock().remove(tenant);
    }
}

impl Traces {
    /// One forwarding pass of `tenant` (claimed with `forwarding.claim`): send what lies
    /// after its cursor until caught up, a failure, or the pass's batch limit.
    pub fn forward(
        &self,
        tenant: &str,
        target: &ForwardTarget,
        bearer: Option<&str>,
        egress: &EgressPolicy,
    ) -> Result<u64, String> {
        let result = self.forward_batches(tenant, target, bearer, egress);
        if result.is_err() {
            self.counters.forward_failures.fetch_add(1, Relaxed);
        }
        self.forwarding.finish(tenant, &result, crate::now_ms());
        result
    }

    fn forward_batches(
        &self,
        tenant: &str,
        target: &ForwardTarget,
        bearer: Option<&str>,
        egress: &EgressPolicy,
    ) -> Result<u64, String> {
        let store_err = |e: super::store::StoreError| e.to_string();
        let mut cursor = self.store.cursor(tenant).map_err(store_err)?.unwrap_or(0);
        let mut sent = 0;
        for _ in 0..MAX_BATCHES_PER_PASS {
            let (last, groups) = self
                .store
                .since(tenant, cursor, self.config.forward_batch)
                .map_err(store_err)?;
            let spans: u64 = groups.iter().map(|(_, s)| s.len() as u64).sum();
            if spans == 0 {
                break;
            }
            let body = super::otlp::encode_request(groups);
            crate::outbound::call(
                "POST",
                &target.url,
                "",
                bearer,
                egress,
                Some((&body, "application/x-protobuf")),
            )?;
            self.store.set_cursor(tenant, last).map_err(store_err)?;
            self.counters.spans_forwarded.fetch_add(spans, Relaxed);
            cursor = last;
            sent += spans;
            if (spans as usize) < self.config.forward_batch {
                break;
            }
        }
        Ok(sent)
    }

    /// The tenant's forwarding status, with how far behind it is.
    pub fn forward_status(&self, tenant: &str) -> ForwardStatus {
        let mut status = self.forwarding.status(tenant);
        let cursor = self.store.cursor(tenant).ok().flatten().unwrap_or(0);
        status.behind = self.store.count_after(tenant, cursor).unwrap_or(0);
        status
    }
}
