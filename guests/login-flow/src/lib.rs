//! `login-flow`: a login probed as a user does it, on the component's schedule.
//!
//! Steps, each timed and reported: `login-page` (GET the form; 200 expected), `csrf`
//! (extract the anti-forgery token from the form's hidden input), `submit` (POST the
//! credentials and the token, following redirects; the session cookie the host keeps for the
//! run goes along), `landing` (the page reached must match `expect_landing`, and its URL
//! contain `expect_path` when given).
//!
//! Config: `probe` (label, default "login"), `login_url`, `submit_url` (default:
//! `login_url`), `username_secret` and `password_secret` (tenant secrets the manifest
//! grants: the credentials never appear in URLs, labels or logs), `username_field`
//! ("username"), `password_field` ("password"), `csrf_field` ("csrf_token"; "" when the form
//! has none), `extra_fields` (a table added to the form), `expect_landing` (a regex),
//! `expect_path`, `timeout_ms` (10000 per request), `max_redirects` (5), `insecure`,
//! `ca_secret`.
//!
//! Emits `probe_success` and `probe_duration_seconds` for the whole flow, and per step
//! (`step` label) `probe_step_success`, `probe_http_status_code` and
//! `probe_http_duration_seconds{phase}`. All requests of a run carry one trace id, which
//! every failure's log line names.

use serde::Deserialize;
use sotp_guest::http::{self, Request, Response};
use sotp_guest::probe::ProbeRun;
use sotp_guest::{Collector, Config, Tick};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_probe")]
    probe: String,
    login_url: String,
    submit_url: Option<String>,
    username_secret: String,
    password_secret: String,
    #[serde(default = "default_username_field")]
    username_field: String,
    #[serde(default = "default_password_field")]
    password_field: String,
    #[serde(default = "default_csrf_field")]
    csrf_field: String,
    #[serde(default)]
    extra_fields: std::collections::BTreeMap<String, String>,
    expect_landing: String,
    expect_path: Option<String>,
    #[serde(default)]
    timeout_ms: u32,
    #[serde(default = "default_redirects")]
    max_redirects: u32,
    #[serde(default)]
    insecure: bool,
    ca_secret: Option<String>,
}

fn default_probe() -> String {
    "login".into()
}
fn default_username_field() -> String {
    "username".into()
}
fn default_password_field() -> String {
    "password".into()
}
fn default_csrf_field() -> String {
    "csrf_token".into()
}
fn default_redirects() -> u32 {
    5
}

struct LoginFlow {
    settings: Settings,
    landing: regex_lite::Regex,
}

/// A step that did not hold: which one, and why.
struct StepFailed {
    step: &'static str,
    reason: String,
}

impl Collector for LoginFlow {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config.0.clone()).map_err(|e| format!("config: {e}"))?;
        let landing = regex_lite::Regex::new(&settings.expect_landing)
            .map_err(|e| format!("config.expect_landing: {e}"))?;
        Ok(LoginFlow { settings, landing })
    }

    fn on_tick(&mut self, _tick: Tick) -> Result<(), String> {
        let s = &self.settings;
        let mut run = ProbeRun::new(&[("probe", &s.probe), ("target", &s.login_url)]);
        let mut trace = None;
        let mut total_ms = 0.0;
        let outcome = self.flow(&mut run, &mut trace, &mut total_ms);
        if let Err(failed) = &outcome {
            run.fail(failed.step, &failed.reason, trace.as_deref().unwrap_or(""));
        }
        run.finish(outcome.is_ok(), total_ms)
    }
}

impl LoginFlow {
    fn flow(
        &self,
        run: &mut ProbeRun,
        trace: &mut Option<String>,
        total_ms: &mut f64,
    ) -> Result<(), StepFailed> {
        let s = &self.settings;
        let page = self.step(
            "login-page",
            self.request(Request::get(&s.login_url)),
            run,
            trace,
            total_ms,
        )?;
        if page.status != 200 {
            return Err(failed(
                "login-page",
                format!("status {} (expected 200)", page.status),
            ));
        }
        let token = if s.csrf_field.is_empty() {
            None
        } else {
            match hidden_input(&page.text(), &s.csrf_field) {
                Some(t) => {
                    run.sample("probe_step_success", 1.0, &[("step", "csrf")]);
                    Some(t)
                }
                None => {
                    run.sample("probe_step_success", 0.0, &[("step", "csrf")]);
                    return Err(failed(
                        "csrf",
                        format!("no hidden input `{}` in the login page", s.csrf_field),
                    ));
                }
            }
        };
        let secret = |name: &str| {
            sotp_guest::secret(name).map_err(|e| {
                failed(
                    "submit",
                    format!("secret `{name}`: {}", sotp_guest::describe(&e)),
                )
            })
        };
        let (user, password) = (secret(&s.username_secret)?, secret(&s.password_secret)?);
        let mut fields: Vec<(&str, &str)> = vec![
            (s.username_field.as_str(), user.trim_end_matches('\n')),
            (s.password_field.as_str(), password.trim_end_matches('\n')),
        ];
        if let Some(token) = &token {
            fields.push((s.csrf_field.as_str(), token.as_str()));
        }
        for (k, v) in &s.extra_fields {
            fields.push((k.as_str(), v.as_str()));
        }
        let submit_url = s.submit_url.as_deref().unwrap_or(&s.login_url);
        let submit = Request::post_form(submit_url, &fields).redirects(s.max_redirects);
        let landing = self.step("submit", self.request(submit), run, trace, total_ms)?;
        let landed = landing.status == 200
            && self.landing.is_match(&landing.text())
            && s.expect_path
                .as_ref()
                .is_none_or(|p| landing.url.contains(p.as_str()));
        run.sample(
            "probe_step_success",
            if landed { 1.0 } else { 0.0 },
            &[("step", "landing")],
        );
        if !landed {
            return Err(failed(
                "landing",
                format!(
                    "reached {} with status {}: {}",
                    landing.url,
                    landing.status,
                    if self.landing.is_match(&landing.text()) {
                        "not the expected page".to_string()
                    } else {
                        format!("the page does not match `{}`", s.expect_landing)
                    }
                ),
            ));
        }
        Ok(())
    }

    /// The settings every request of the flow shares.
    fn request(&self, request: Request) -> Request {
        let s = &self.settings;
        let mut request = request.timeout_ms(s.timeout_ms);
        request.insecure_skip_verify = s.insecure;
        request.ca_secret = s.ca_secret.clone();
        request
    }

    /// Send one step's request under the run's trace, recording what it measured.
    fn step(
        &self,
        step: &'static str,
        request: Request,
        run: &mut ProbeRun,
        trace: &mut Option<String>,
        total_ms: &mut f64,
    ) -> Result<Response, StepFailed> {
        let request = request.traceparent(trace.clone());
        match http::send(&request) {
            Ok(response) => {
                trace.get_or_insert_with(|| response.traceparent.clone());
                *total_ms += response.timings.total_ms;
                run.response(&response, &[("step", step)]);
                run.sample("probe_step_success", 1.0, &[("step", step)]);
                Ok(response)
            }
            Err(failure) => {
                trace.get_or_insert_with(|| failure.traceparent.clone());
                *total_ms += failure.timings.total_ms;
                run.timings(&failure.timings, &[("step", step)]);
                run.sample("probe_step_success", 0.0, &[("step", step)]);
                Err(failed(
                    step,
                    format!(
                        "{} (in {})",
                        sotp_guest::describe(&failure.error),
                        failure.phase
                    ),
                ))
            }
        }
    }
}

fn failed(step: &'static str, reason: String) -> StepFailed {
    StepFailed { step, reason }
}

/// The value of `<input ... name="NAME" ... value="...">` (attributes in any order, either
/// quote), HTML entities for quotes and ampersands decoded.
fn hidden_input(html: &str, name: &str) -> Option<String> {
    let tags = regex_lite::Regex::new(r"(?is)<input\b[^>]*>").ok()?;
    let attr = regex_lite::Regex::new(r#"(?is)\b([a-z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')"#).ok()?;
    for tag in tags.find_iter(html) {
        let mut found_name = false;
        let mut value = None;
        for a in attr.captures_iter(tag.as_str()) {
            let key = a.get(1)?.as_str().to_ascii_lowercase();
            let v = a.get(2).or(a.get(3)).map(|m| m.as_str()).unwrap_or("");
            match key.as_str() {
                "name" if v == name => found_name = true,
                "value" => value = Some(v.to_string()),
                _ => {}
            }
        }
        if found_name {
            return value.map(|v| {
                v.replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&")
            });
        }
    }
    None
}

sotp_guest::collector!(LoginFlow);

#[cfg(test)]
mod tests {
    use super::hidden_input;

    #[test]
    fn finds_the_token_whatever_the_attribute_order() {
        let html = r#"<form method="post"><input type="text" name="username">
            <input value='a&amp;b' type="hidden" name="csrf_token"></form>"#;
        assert_eq!(hidden_input(html, "csrf_token").as_deref(), Some("a&b"));
        assert_eq!(hidden_input(html, "nope"), None);
        let html = r#"<INPUT TYPE=hidden NAME="csrf_token" VALUE="x1">"#;
        assert_eq!(hidden_input(html, "csrf_token").as_deref(), Some("x1"));
    }
}
