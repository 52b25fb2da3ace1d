//! AWS access for cloud collectors and the Secrets Manager provider: SigV4 signing
//! (`sign`), STS (`sts`: AssumeRole, GetCallerIdentity), and one rate limiter per AWS
//! account (`limiter`).
//!
//! In: a request a component (through the `aws` capability) or a secret provider wants sent,
//! with the name of the secret holding its access key. Out: the request signed with the
//! right credentials, sent no faster than the account's limiter allows, retried with backoff
//! while AWS answers that it is throttling — and, shared by every caller of one tenant, the
//! account's limiter, its assumed-role credentials and its account id.
//!
//! Why a host module and not SigV4 in the guest: the keys stay out of guests (a guest gets
//! the answers, never the secret access key), the per-account limiter must be shared by all
//! of a tenant's components (Telegraf's per-plugin limiter is how users hit throttling,
//! telegraf#1197), and one signer (AWS's own `aws-sigv4` crate, checked against AWS's
//! published test vectors) serves both components and the Secrets Manager provider.

pub mod limiter;
pub mod sign;
pub mod sts;

use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// An access key, as a secret holds it (JSON).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys in a secret's value; the error names the secret and what is wrong, never
    /// the value.
    pub fn from_secret(name: &str, value: &str) -> Result<Keys, String> {
        let keys: Keys = serde_json::from_str(value).map_err(|e| {
            format!(
                "secret `{name}` is not an AWS access key: expected JSON with access_key_id and secret_access_key ({})",
                e.classify_name()
            )
        })?;
        if keys.access_key_id.trim().is_empty() || keys.secret_access_key.trim().is_empty() {
            return Err(format!(
                "secret `{name}`: access_key_id and secret_access_key must not be empty"
            ));
        }
        Ok(keys)
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "missing or unknown fields",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

/// `https://<service>.<region>.amazonaws.com`.
pub fn default_endpoint(service: &str, region: &str) -> String {
    format!("https://{service}.{region}.amazonaws.com")
}

/// Whether an answer says "slow down": the error codes AWS's SDKs retry as throttling.
pub fn is_throttling(status: u16, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    if !matches!(status, 400 | 503) {
        return false;
    }
    let head = &body[..body.len().min(2048)];
    let text = String::from_utf8_lossy(head);
    [
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottled",
        "ProvisionedThroughputExceeded",
    ]
    .iter()
    .any(|code| text.contains(code))
}

/// How long to wait before retry `attempt` (1-based) after a throttling reply: exponential
/// with full jitter, as AWS's SDKs do (base 200 ms, at most 5 s).
pub fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(200)
        .saturating_mul(1 << attempt.min(5))
        .min(Duration::from_secs(5));
    let jitter: f64 = rand::random();
    cap.mul_f64(0.5 + jitter / 2.0)
}

/// Temporary credentials from AssumeRole, and until when they may be used.
#[derive(Clone)]
struct Assumed {
    keys: Keys,
    until: SystemTime,
}

/// What one tenant's callers share, per AWS account.
#[derive(Default)]
pub struct Shared {
    limiters: Mutex<HashMap<(String, String), limiter::Limiter>>,
    assumed: Mutex<HashMap<(String, String, String), Assumed>>,
    accounts: Mutex<HashMap<(String, String), String>>,
}

/// Entries each map keeps at most (all tenants); beyond, the oldest is not worth tracking:
/// the map is cleared (limiters restart at their full rate, credentials are fetched again).
const MAX_ENTRIES: usize = 10_000;

/// The process's shared AWS state (limiters are per account, whoever calls).
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(Shared::default)
}

impl Shared {
    /// How long to wait before sending one request to `account` for `tenant` (the token is
    /// taken: send after the wait).
    pub fn acquire(&self, tenant: &str, account: &str) -> Duration {
        let mut limiters = self.limiters.lock();
        if limiters.len() >= MAX_ENTRIES {
            limiters.clear();
        }
        limiters
            .entry((tenant.to_string(), account.to_string()))
            .or_default()
            .acquire(std::time::Instant::now())
    }

    /// AWS answered `account` with a throttling reply: slow down for everyone.
    pub fn throttled(&self, tenant: &str, account: &str) {
        if let Some(l) = self
            .limiters
            .lock()
            .get_mut(&(tenant.to_string(), account.to_string()))
        {
            l.throttled(std::time::Instant::now());
        }
    }

    /// Every (tenant, account) limiter's current rate (requests per second), for `/metrics`.
    pub fn rates(&self) -> Vec<(String, String, f64)> {
        let mut rates: Vec<_> = self
            .limiters
            .lock()
            .iter()
            .map(|((t, a), l)| (t.clone(), a.clone(), l.rate()))
            .collect();
        rates.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        rates
    }

    fn assumed(&self, tenant: &str, key_id: &str, role: &str) -> Option<Keys> {
        let key = (tenant.to_string(), key_id.to_string(), role.to_string());
        let assumed = self.assumed.lock();
        let a = assumed.get(&key)?;
        // Renewed five minutes before they expire, so no request is signed with keys that
        // lapse on the way.
        (a.until > SystemTime::now() + Duration::from_secs(300)).then(|| a.keys.clone())
    }

    fn keep_assumed(&self, tenant: &str, key_id: &str, role: &str, keys: Keys, until: SystemTime) {
        let mut assumed = self.assumed.lock();
        if assumed.len() >= MAX_ENTRIES {
            assumed.clear();
        }
        assumed.insert(
            (tenant.to_string(), key_id.to_string(), role.to_string()),
            Assumed { keys, until },
        );
    }

    fn account(&self, tenant: &str, key_id: &str) -> Option<String> {
        self.accounts
            .lock()
            .get(&(tenant.to_string(), key_id.to_string()))
            .cloned()
    }

    fn keep_account(&self, tenant: &str, key_id: &str, account: &str) {
        let mut accounts = self.accounts.lock();
        if accounts.len() >= MAX_ENTRIES {
            accounts.clear();
        }
        accounts.insert(
            (tenant.to_string(), key_id.to_string()),
            account.to_string(),
        );
    }

    /// Forget a tenant's limiters and credentials (it is deleted).
    pub fn forget(&self, tenant: &str) {
        self.limiters.lock().retain(|(t, _), _| t != tenant);
        self.assumed.lock().retain(|(t, _, _), _| t != tenant);
        self.accounts.lock().retain(|(t, _), _| t != tenant);
    }
}

/// One HTTP exchange, as the caller can make it (the `http` capability for components, the
/// outbound client for secret providers).
pub struct Exchange<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// An answer of any status.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends one exchange; `Err` is no answer at all (refused, unreachable, timed out).
pub trait Transport {
    fn send(&mut self, exchange: Exchange<'_>, timeout: Duration) -> Result<Answer, String>;
}

/// Who is calling: the tenant, the keys, the role to assume, STS's endpoint and region.
pub struct Caller<'a> {
    pub tenant: &'a str,
    pub keys: Keys,
    pub role_arn: Option<&'a str>,
    pub sts_endpoint: &'a str,
    pub region: &'a str,
}

/// The keys to sign with (the role's temporary ones when a role is assumed) and the account
/// they act in.
pub fn identity(
    caller: &Caller<'_>,
    transport: &mut dyn Transport,
    timeout: Duration,
) -> Result<(Keys, String), CallError> {
    let shared = shared();
    match caller.role_arn {
        Some(role) => {
            let account = sts::role_account(role).map_err(CallError::Invalid)?;
            if let Some(keys) = shared.assumed(caller.tenant, &caller.keys.access_key_id, role) {
                return Ok((keys, account));
            }
            let (keys, until) = sts::assume_role(caller, role, transport, timeout)?;
            shared.keep_assumed(
                caller.tenant,
                &caller.keys.access_key_id,
                role,
                keys.clone(),
                until,
            );
            Ok((keys, account))
        }
        None => {
            if let Some(account) = shared.account(caller.tenant, &caller.keys.access_key_id) {
                return Ok((caller.keys.clone(), account));
            }
            let account = sts::caller_account(caller, transport, timeout)?;
            shared.keep_account(caller.tenant, &caller.keys.access_key_id, &account);
            Ok((caller.keys.clone(), account))
        }
    }
}

/// Why a call did not get an answer worth returning.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request or its credentials are wrong (AWS refused them, or they cannot be used).
    #[error("{0}")]
    Invalid(String),
    /// AWS or the network could not be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

/// AWS's error code and message in an answer (query XML or JSON), for errors.
pub fn error_summary(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    if let Ok(doc) = roxmltree::Document::parse(&text) {
        let find = |tag: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text())
                .map(str::to_string)
        };
        if let Some(code) = find("Code") {
            return match find("Message") {
                Some(m) => format!("{code}: {m}"),
                None => code,
            };
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        let code = json
            .get("__type")
            .or_else(|| json.get("code"))
            .and_then(|v| v.as_str())
            .map(|c| c.rsplit('#').next().unwrap_or(c).to_string());
        let message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(|v| v.as_str());
        if let Some(code) = code {
            return match message {
                Some(m) => format!("{code}: {m}"),
                None => code,
            };
        }
    }
    text.trim().chars().take(200).collect()
}

/// Sign `exchange` as `keys` (adding `host`) and send it.
pub fn send_signed(
    keys: &Keys,
    service: &str,
    region: &str,
    mut exchange: Exchange<'_>,
    transport: &mut dyn Transport,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let parsed = url::Url::parse(exchange.url)
        .map_err(|e| CallError::Invalid(format!("`{}` is not a URL: {e}", exchange.url)))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => {
            return Err(CallError::Invalid(format!(
                "`{}` has no host",
                exchange.url
            )));
        }
    };
    exchange.headers.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("authorization")
    });
    exchange.headers.push(("host".into(), host));
    let signed = sign::signature_headers(
        keys,
        service,
        region,
        &sign::Unsigned {
            method: exchange.method,
            url: exchange.url,
            headers: &exchange.headers,
            body: exchange.body,
        },
        SystemTime::now(),
    )
    .map_err(CallError::Invalid)?;
    exchange.headers.extend(signed);
    transport
        .send(exchange, timeout)
        .map_err(CallError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_replies_are_recognised() {
        let xml = br#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"#;
        assert!(is_throttling(400, xml));
        assert!(is_throttling(
            400,
            br#"{"__type":"com.amazonaws#ThrottlingException","message":"Rate exceeded"}"#
        ));
        assert!(is_throttling(429, b""));
        assert!(!is_throttling(
            400,
            br#"{"__type":"InvalidParameterValue"}"#
        ));
        assert!(!is_throttling(200, b"Throttling"));
        assert_eq!(error_summary(xml), "Throttling: Rate exceeded");
        assert_eq!(
            error_summary(br#"{"__type":"com.amazonaws#InvalidClientTokenId","message":"bad"}"#),
            "InvalidClientTokenId: bad"
        );
    }

    #[test]
    fn keys_errors_never_show_the_value() {
        let e = Keys::from_secret("aws", "AKIA-not-json-SECRET").unwrap_err();
        assert!(!e.contains("SECRET") && e.contains("`aws`"), "{e}");
        let keys = Keys::from_secret(
            "aws",
            r#"{"access_key_id":"AKID","secret_access_key":"SECRETVALUE"}"#,
        )
        .unwrap();
        assert!(!format!("{keys:?}").contains("SECRETVALUE"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(400));
        assert!(backoff(1) >= Duration::from_millis(200));
        assert!(backoff(20) <= Duration::from_secs(5));
    }
}
