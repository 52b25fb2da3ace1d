//! `http-check`: one URL probed on the component's schedule, blackbox_exporter style.
//!
//! Config (`[config]` of sotp.toml):
//! - `probe` (label, default "http"), `url`, `method` (GET), `headers` (a table),
//!   `body` (text sent), `timeout_ms` (10000), `max_redirects` (0), `insecure` (false),
//!   `ca_secret` (a granted secret with PEM CA certificates);
//! - `auth_secret`: a granted secret sent as `Authorization: Bearer <value>` (never in a
//!   URL or a label);
//! - `expect_status` (list; default any 2xx), `body_regex`, `body_not_regex`,
//!   `expect_headers` (list of `{ name, regex }`), `json` (list of `{ path, equals }` or
//!   `{ path, exists = true }`; `path` is dotted, with array indexes: `items.0.state`);
//! - `slow_ms`: an answer slower than this fails the probe;
//! - `tls_expiry_warn_days` (14): a certificate expiring sooner logs a warning.
//!
//! Emits `probe_success`, `probe_duration_seconds`, `probe_http_duration_seconds{phase}`
//! (only the phases reached), `probe_http_status_code`, `probe_http_redirects`,
//! `probe_http_content_length`, `probe_ssl_earliest_cert_expiry`, labelled `probe` and
//! `target` (the URL); every failure is a telemetry log line naming the step, the reason and
//! the trace id the request carried.

use serde::Deserialize;
use sotp_guest::http::{self, Method, Request};
use sotp_guest::probe::ProbeRun;
use sotp_guest::{Collector, Config, Tick};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_probe")]
    probe: String,
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default)]
    max_redirects: u32,
    #[serde(default)]
    insecure: bool,
    ca_secret: Option<String>,
    auth_secret: Option<String>,
    #[serde(default)]
    expect_status: Vec<u16>,
    body_regex: Option<String>,
    body_not_regex: Option<String>,
    #[serde(default)]
    expect_headers: Vec<HeaderCheck>,
    #[serde(default)]
    json: Vec<JsonCheck>,
    slow_ms: Option<f64>,
    #[serde(default = "default_warn_days")]
    tls_expiry_warn_days: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderCheck {
    name: String,
    regex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCheck {
    path: String,
    equals: Option<serde_json::Value>,
    #[serde(default)]
    exists: bool,
}

fn default_probe() -> String {
    "http".into()
}
fn default_method() -> String {
    "GET".into()
}
fn default_warn_days() -> u32 {
    14
}

struct HttpCheck {
    settings: Settings,
    method: Method,
    body_regex: Option<regex_lite::Regex>,
    body_not_regex: Option<regex_lite::Regex>,
    header_regexes: Vec<(String, regex_lite::Regex)>,
}

fn compile(what: &str, pattern: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::Regex::new(pattern).map_err(|e| format!("{what} `{pattern}`: {e}"))
}

impl Collector for HttpCheck {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config.0.clone()).map_err(|e| format!("config: {e}"))?;
        let method = match settings.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => return Err(format!("config.method: `{other}` is not an HTTP method")),
        };
        let body_regex = settings
            .body_regex
            .as_deref()
            .map(|p| compile("body_regex", p))
            .transpose()?;
        let body_not_regex = settings
            .body_not_regex
            .as_deref()
            .map(|p| compile("body_not_regex", p))
            .transpose()?;
        let header_regexes = settings
            .expect_headers
            .iter()
            .map(|h| Ok((h.name.clone(), compile("expect_headers", &h.regex)?)))
            .collect::<Result<_, String>>()?;
        if let Some(c) = settings
            .json
            .iter()
            .find(|c| c.equals.is_none() && !c.exists)
        {
            return Err(format!(
                "config.json `{}`: give `equals` or `exists = true`",
                c.path
            ));
        }
        Ok(HttpCheck {
            settings,
            method,
            body_regex,
            body_not_regex,
            header_regexes,
        })
    }

    fn on_tick(&mut self, _tick: Tick) -> Result<(), String> {
        let s = &self.settings;
        let mut run = ProbeRun::new(&[("probe", &s.probe), ("target", &s.url)]);
        let request = match self.request() {
            Ok(request) => request,
            Err(reason) => {
                run.fail("request", &reason, "");
                return run.finish(false, 0.0);
            }
        };
        let (success, total_ms) = match http::send(&request) {
            Err(failure) => {
                run.failure("request", &failure);
                (false, failure.timings.total_ms)
            }
            Ok(response) => {
                run.response(&response, &[]);
                let problems = self.check(&response, &mut run);
                for p in &problems {
                    run.fail("assert", p, &response.traceparent);
                }
                (problems.is_empty(), response.timings.total_ms)
            }
        };
        run.finish(success, total_ms)
    }
}

impl HttpCheck {
    fn request(&self) -> Result<Request, String> {
        let s = &self.settings;
        let mut request = Request::get(&s.url)
            .timeout_ms(s.timeout_ms)
            .redirects(s.max_redirects);
        request.method = self.method;
        request.body = s.body.clone().into_bytes();
        request.insecure_skip_verify = s.insecure;
        request.ca_secret = s.ca_secret.clone();
        for (name, value) in &s.headers {
            request = request.header(name, value);
        }
        if let Some(secret) = &s.auth_secret {
            let token = sotp_guest::secret(secret)
                .map_err(|e| format!("auth_secret: {}", sotp_guest::describe(&e)))?;
            request = request.header("Authorization", &format!("Bearer {}", token.trim()));
        }
        Ok(request)
    }

    /// Every assertion that does not hold, described.
    fn check(&self, r: &http::Response, run: &mut ProbeRun) -> Vec<String> {
        let s = &self.settings;
        let mut problems = Vec::new();
        let status_ok = if s.expect_status.is_empty() {
            (200..300).contains(&r.status)
        } else {
            s.expect_status.contains(&r.status)
        };
        if !status_ok {
            problems.push(format!("status {} (expected {:?})", r.status, expected(s)));
        }
        if r.truncated && (self.body_regex.is_some() || !s.json.is_empty()) {
            problems
                .push("the body is longer than the host's limit: assertions need it whole".into());
        }
        let text = r.text();
        if let Some(re) = &self.body_regex
            && !re.is_match(&text)
        {
            problems.push(format!("the body does not match `{}`", re.as_str()));
        }
        if let Some(re) = &self.body_not_regex
            && re.is_match(&text)
        {
            problems.push(format!("the body matches `{}`", re.as_str()));
        }
        for (name, re) in &self.header_regexes {
            match r.header(name) {
                Some(v) if re.is_match(v) => {}
                Some(v) => problems.push(format!(
                    "header {name}: `{v}` does not match `{}`",
                    re.as_str()
                )),
                None => problems.push(format!("no {name} header")),
            }
        }
        if !s.json.is_empty() {
            match serde_json::from_slice::<serde_json::Value>(&r.body) {
                Err(e) => problems.push(format!("the body is not JSON: {e}")),
                Ok(doc) => {
                    for check in &s.json {
                        if let Some(p) = json_problem(&doc, check) {
                            problems.push(p);
                        }
                    }
                }
            }
        }
        if let Some(slow) = s.slow_ms
            && r.timings.total_ms > slow
        {
            problems.push(format!(
                "answered in {:.0} ms (slower than slow_ms = {slow})",
                r.timings.total_ms
            ));
        }
        if let Some(cert) = &r.certificate {
            let days_left = (cert.not_after_ms - now_ms()) as f64 / 86_400_000.0;
            if days_left < f64::from(s.tls_expiry_warn_days) {
                run.warn(
                    "tls",
                    &format!(
                        "the certificate of {} expires in {days_left:.1} days (warning: {} days)",
                        cert.subject, s.tls_expiry_warn_days
                    ),
                    &r.traceparent,
                );
            }
        }
        problems
    }
}

fn expected(s: &Settings) -> String {
    if s.expect_status.is_empty() {
        "2xx".into()
    } else {
        format!("{:?}", s.expect_status)
    }
}

fn json_problem(doc: &serde_json::Value, check: &JsonCheck) -> Option<String> {
    let mut at = doc;
    for key in check.path.split('.') {
        let next = match at {
            serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            other => other.get(key),
        };
        match next {
            Some(v) => at = v,
            None => return Some(format!("JSON field `{}` is missing", check.path)),
        }
    }
    match &check.equals {
        Some(want) if want != at => Some(format!(
            "JSON field `{}` is {at} (expected {want})",
            check.path
        )),
        _ => None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

sotp_guest::collector!(HttpCheck);
