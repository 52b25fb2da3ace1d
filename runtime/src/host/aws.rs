//! `sotp:telemetry/aws`: AWS API calls signed on the host (`crate::aws`), sent through the
//! `http` capability (its grants, egress checks and timings), paced by the account's shared
//! limiter and retried with backoff on throttling replies.

use super::{HostState, WitError};
use crate::aws::{self, Answer, CallError, Caller, Exchange, Keys, Transport};
use crate::host::sotp::telemetry::aws::{self as wit_aws, Request, Response};
use crate::host::sotp::telemetry::http::{self as wit_http, Header, Method};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one call sends at most (the first and its retries after throttling).
const MAX_ATTEMPTS: u32 = 5;
/// Bytes of an AWS answer kept (GetMetricData pages are far smaller).
const MAX_BODY: u32 = 8 << 20;

impl wit_aws::Host for HostState {
    fn call(&mut self, request: Request) -> Result<Response, WitError> {
        let timeout = match request.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        }
        .min(self.clock.wall_remaining());
        let deadline = Instant::now() + timeout;
        let secret = super::secrets::granted_secret(self, &request.credentials_secret)?;
        let keys =
            Keys::from_secret(&request.credentials_secret, &secret).map_err(WitError::Invalid)?;
        if request.service.is_empty() || request.region.is_empty() {
            return Err(WitError::Invalid("service and region are required".into()));
        }
        let tenant = self.env.tenant.clone();
        let sts_endpoint = request
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| aws::default_endpoint("sts", &request.region));
        let caller = Caller {
            tenant: &tenant,
            keys,
            role_arn: request.role_arn.as_deref(),
            sts_endpoint: &sts_endpoint,
            region: &request.region,
        };
        let (keys, account) =
            aws::identity(&caller, &mut HttpTransport(self), timeout).map_err(wit_error)?;
        let base = request
            .endpoint
            .clone()
            .unwrap_or_else(|| aws::default_endpoint(&request.service, &request.region));
        let url = format!("{}{}", base.trim_end_matches('/'), request.path);
        let shared = aws::shared();
        let (mut attempts, mut throttled, mut waited) = (0u32, 0u32, Duration::ZERO);
        loop {
            let wait = shared.acquire(&tenant, &account);
            if Instant::now() + wait >= deadline {
                return Err(WitError::Timeout(format!(
                    "AWS account {account}'s rate limit leaves no time for this call ({attempts} sent, {throttled} throttled)"
                )));
            }
            self.pause(wait);
            waited += wait;
            let exchange = Exchange {
                method: method_name(request.method),
                url: &url,
                headers: request
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
                body: &request.body,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = aws::send_signed(
                &keys,
                &request.service,
                &request.region,
                exchange,
                &mut HttpTransport(self),
                left,
            )
            .map_err(wit_error)?;
            attempts += 1;
            self.env.stats.aws_requests.fetch_add(1, Relaxed);
            if aws::is_throttling(answer.status, &answer.body) {
                throttled += 1;
                self.env.stats.aws_throttled.fetch_add(1, Relaxed);
                shared.throttled(&tenant, &account);
                let backoff = aws::backoff(attempts);
                if attempts < MAX_ATTEMPTS && Instant::now() + backoff < deadline {
                    self.pause(backoff);
                    waited += backoff;
                    continue;
                }
            }
            return Ok(Response {
                status: answer.status,
                headers: answer
                    .headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                body: answer.body,
                attempts,
                throttled,
                waited_ms: waited.as_millis().min(u128::from(u32::MAX)) as u32,
                account,
            });
        }
    }
}

impl HostState {
    /// Wait on the host (rate limit, backoff): wall-clock time, not the guest's CPU.
    fn pause(&mut self, wait: Duration) {
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.clock.in_host += wait;
        }
    }
}

fn wit_error(e: CallError) -> WitError {
    match e {
        CallError::Invalid(m) => WitError::Invalid(m),
        CallError::Unavailable(m) => WitError::Unavailable(m),
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
    }
}

fn wit_method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Post,
    }
}

/// Sends through the `http` capability: the endpoint must be granted like any URL.
struct HttpTransport<'a>(&'a mut HostState);

impl Transport for HttpTransport<'_> {
    fn send(&mut self, exchange: Exchange<'_>, timeout: Duration) -> Result<Answer, String> {
        let response = wit_http::Host::send(
            self.0,
            wit_http::Request {
                method: wit_method(exchange.method),
                url: exchange.url.to_string(),
                headers: exchange
                    .headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                body: exchange.body.to_vec(),
                timeout_ms: timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
                max_redirects: 0,
                max_body_bytes: MAX_BODY,
                insecure_skip_verify: false,
                ca_secret: None,
                traceparent: None,
            },
        )
        .map_err(|f| format!("{} (in {})", error_text(&f.error), f.phase))?;
        Ok(Answer {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: response.body,
        })
    }
}

fn error_text(e: &WitError) -> String {
    match e {
        WitError::Denied(m) => format!("denied: {m}"),
        WitError::Invalid(m) => format!("invalid: {m}"),
        WitError::Unavailable(m) => format!("unavailable: {m}"),
        WitError::Timeout(m) => format!("timeout: {m}"),
    }
}
