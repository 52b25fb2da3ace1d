//! `sotp:telemetry/scrape`: a Prometheus scrape — the request made by the `http` capability
//! (its grant, egress and timing rules), the exposition parsed on the host
//! (`exposition.rs`) and handed back as samples in one batch.

use super::exposition;
use super::http::no_timings;
use super::{HostState, WitError};
use crate::host::sotp::telemetry::http::{self as wit_http, Header, Method, Request};
use crate::host::sotp::telemetry::scrape::{self, Failure, Request as ScrapeRequest, Scraped};
use crate::host::sotp::telemetry::types::{Label, Sample};
use std::time::Instant;

const DEFAULT_MAX_SAMPLES: u32 = 100_000;
const MAX_BYTES: u32 = 8 << 20;
/// What Prometheus asks for: OpenMetrics first, the text format as a fallback.
const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl scrape::Host for HostState {
    fn scrape(&mut self, request: ScrapeRequest) -> Result<Scraped, Failure> {
        let max_bytes = match request.max_bytes {
            0 => MAX_BYTES,
            n => n.min(MAX_BYTES),
        };
        let max_samples = match request.max_samples {
            0 => DEFAULT_MAX_SAMPLES,
            n => n,
        } as usize;
        let mut headers = vec![Header {
            name: "Accept".into(),
            value: ACCEPT.into(),
        }];
        if let Some(name) = &request.bearer_secret {
            let token = super::secrets::granted_secret(self, name).map_err(|error| Failure {
                error,
                phase: "grant".into(),
                timings: no_timings(),
            })?;
            headers.push(Header {
                name: "Authorization".into(),
                value: format!("Bearer {}", token.trim()),
            });
        }
        let response = wit_http::Host::send(
            self,
            Request {
                method: Method::Get,
                url: request.url.clone(),
                headers,
                body: Vec::new(),
                timeout_ms: request.timeout_ms,
                max_redirects: 3,
                max_body_bytes: max_bytes,
                insecure_skip_verify: request.insecure_skip_verify,
                ca_secret: request.ca_secret.clone(),
                traceparent: None,
            },
        )
        .map_err(|f| Failure {
            error: f.error,
            phase: f.phase,
            timings: f.timings,
        })?;
        let failed = |phase: &str, why: String| Failure {
            error: WitError::Invalid(why),
            phase: phase.into(),
            timings: response.timings,
        };
        if response.status != 200 {
            return Err(failed(
                "status",
                format!("{} answered HTTP {}", request.url, response.status),
            ));
        }
        if response.truncated {
            return Err(failed(
                "size",
                format!("the exposition is larger than {max_bytes} bytes"),
            ));
        }
        let openmetrics = header(&response, "content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"));
        let text = String::from_utf8_lossy(&response.body);
        let started = Instant::now();
        let parsed = exposition::parse(&text, openmetrics, max_samples);
        self.clock.in_host += started.elapsed();
        let samples = parsed.map_err(|e| failed("parse", format!("{}: {e}", request.url)))?;
        Ok(Scraped {
            bytes: response.body.len() as u64,
            timings: response.timings,
            samples: samples
                .into_iter()
                .map(|s| Sample {
                    metric: s.name,
                    labels: s
                        .labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    value: s.value,
                    timestamp_ms: s.timestamp_ms,
                })
                .collect(),
        })
    }
}

/// The first header of that name (case-insensitive).
fn header<'a>(response: &'a wit_http::Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}
