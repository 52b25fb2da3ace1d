//! A real Alertmanager for a test (Debian's `prometheus-alertmanager`, 0.25 on Debian 12,
//! started through scripts/peers/alertmanager): loopback only, clustering off, its silences
//! and notification log in a temporary directory, every alert routed to one webhook receiver
//! (`sotp`) that carries a bearer token in `http_config.authorization`.
//!
//! Timings measured on this machine: ready ~0.1-0.5 s after start; with `group_wait` and
//! `group_interval` at 1 s (the defaults here) a posted alert reaches the webhook ~1 s later.
//!
//! Alertmanager delivers every alert it receives to a matching route — including a
//! super-alert SOTP pushes back with [`Alertmanager::post_alerts`]. To keep such alerts from
//! looping into SOTP's webhook, route them to the built-in `blackhole` receiver (no
//! integrations):
//!
//! ```ignore
//! let am = Alertmanager::builder(&webhook, &token)
//!     .routes("- matchers: ['origin=\"sotp\"']\n  receiver: blackhole\n")
//!     .start();
//! ```

use crate::mosquitto::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Alertmanager {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// What [`Alertmanager::builder`] configures before [`AlertmanagerBuilder::start`].
pub struct AlertmanagerBuilder {
    webhook_url: String,
    bearer_token: String,
    group_by: Vec<String>,
    group_wait: String,
    group_interval: String,
    repeat_interval: String,
    resolve_timeout: String,
    routes: Option<String>,
    receivers: Option<String>,
    inhibit_rules: Option<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/alertmanager")
}

/// `s` as a YAML scalar (JSON strings are YAML double-quoted scalars).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Every non-empty line of `yaml` indented by `n` spaces (a fragment placed under a key).
fn indent(yaml: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl AlertmanagerBuilder {
    /// Labels alerts are grouped by into one notification (default `alertname`); `["..."]`
    /// groups by every label, i.e. one notification per alert.
    pub fn group_by(mut self, labels: &[&str]) -> Self {
        self.group_by = labels.iter().map(|s| s.to_string()).collect();
        self
    }

    /// How long a new group waits for more alerts before its first notification (default 1s).
    pub fn group_wait(mut self, d: &str) -> Self {
        self.group_wait = d.into();
        self
    }

    /// How long a group waits before notifying about changes (default 1s).
    pub fn group_interval(mut self, d: &str) -> Self {
        self.group_interval = d.into();
        self
    }

    /// How long before an unchanged, still firing group is notified again (default 1h).
    pub fn repeat_interval(mut self, d: &str) -> Self {
        self.repeat_interval = d.into();
        self
    }

    /// After how long an alert posted without `endsAt` and not re-posted is resolved
    /// (`global.resolve_timeout`, default 5m).
    pub fn resolve_timeout(mut self, d: &str) -> Self {
        self.resolve_timeout = d.into();
        self
    }

    /// Child routes under the root route: the YAML list itself, unindented, e.g.
    /// `"- matchers: ['origin=\"sotp\"']\n  receiver: blackhole\n"`.
    pub fn routes(mut self, yaml: &str) -> Self {
        self.routes = Some(yaml.into());
        self
    }

    /// More receivers beside `sotp` and `blackhole`: a YAML list, unindented.
    pub fn receivers(mut self, yaml: &str) -> Self {
        self.receivers = Some(yaml.into());
        self
    }

    /// `inhibit_rules`: a YAML list, unindented, e.g.
    /// `"- source_matchers: ['device=\"core1\"']\n  target_matchers: ['upstream=\"core1\"']\n  equal: [alertname]\n"`.
    pub fn inhibit_rules(mut self, yaml: &str) -> Self {
        self.inhibit_rules = Some(yaml.into());
        self
    }

    /// The configuration file this builder writes.
    pub fn config(&self) -> String {
        let group_by: Vec<String> = self.group_by.iter().map(|l| quoted(l)).collect();
        let mut c = format!(
            "# Written by sotp_tests::alertmanager.\n\
             global:\n  resolve_timeout: {}\n\
             route:\n  receiver: sotp\n  group_by: [{}]\n  group_wait: {}\n  group_interval: {}\n  repeat_interval: {}\n",
            self.resolve_timeout,
            group_by.join(", "),
            self.group_wait,
            self.group_interval,
            self.repeat_interval
        );
        if let Some(routes) = &self.routes {
            c.push_str("  routes:\n");
            c.push_str(&indent(routes, 4));
        }
        c.push_str(&format!(
            "receivers:\n  - name: sotp\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            quoted(&self.webhook_url)
        ));
        if !self.bearer_token.is_empty() {
            c.push_str(&format!(
                "        http_config:\n          authorization:\n            type: Bearer\n            credentials: {}\n",
                quoted(&self.bearer_token)
            ));
        }
        c.push_str("  - name: blackhole\n");
        if let Some(receivers) = &self.receivers {
            c.push_str(&indent(receivers, 2));
        }
        if let Some(rules) = &self.inhibit_rules {
            c.push_str("inhibit_rules:\n");
            c.push_str(&indent(rules, 2));
        }
        c
    }

    /// Write the config, start Alertmanager on a free loopback port, wait until it is ready.
    pub fn start(self) -> Alertmanager {
        let dir = tempfile::Builder::new()
            .prefix("sotp-alertmanager-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("alertmanager.yml"), self.config()).unwrap();
        let mut am = Alertmanager {
            port: free_port(),
            dir,
            child: None,
        };
        am.launch();
        am
    }
}

impl Alertmanager {
    /// Alertmanager whose every alert goes to `webhook_url` with `Authorization: Bearer
    /// <bearer_token>` (none if empty), grouped by alertname, group_wait/interval 1 s.
    pub fn start(webhook_url: &str, bearer_token: &str) -> Alertmanager {
        Self::builder(webhook_url, bearer_token).start()
    }

    pub fn builder(webhook_url: &str, bearer_token: &str) -> AlertmanagerBuilder {
        AlertmanagerBuilder {
            webhook_url: webhook_url.into(),
            bearer_token: bearer_token.into(),
            group_by: vec!["alertname".into()],
            group_wait: "1s".into(),
            group_interval: "1s".into(),
            repeat_interval: "1h".into(),
            resolve_timeout: "5m".into(),
            routes: None,
            receivers: None,
            inhibit_rules: None,
        }
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(script())
            .arg("run")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .env(
                "ALERTMANAGER_CONFIG",
                self.dir.path().join("alertmanager.yml"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/peers/alertmanager run");
        self.child = Some(child);
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("{}/-/ready", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "Alertmanager exited ({status}) during startup (is prometheus-alertmanager \
                     installed? scripts/setup installs it): {}\n--- config ---\n{}",
                    self.log(),
                    self.config()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready after 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`, also its `externalURL` in webhook payloads.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, for Prometheus' `alerting.alertmanagers` targets.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.yml")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base()))
            .timeout(Duration::from_secs(10))
            .send()
            .unwrap_or_else(|e| panic!("GET {path} from Alertmanager: {e}"));
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base()))
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()?;
        let status = r.status();
        let text = r.text().unwrap_or_default();
        anyhow::ensure!(status.is_success(), "POST {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /api/v2/alerts`: every alert it holds (active, silenced, inhibited), each with
    /// `labels`, `annotations`, `startsAt`, `endsAt`, `fingerprint`, `status.state`
    /// (`active`/`suppressed`), `status.silencedBy`, `status.inhibitedBy`, `receivers`.
    pub fn alerts(&self) -> Vec<Value> {
        self.alerts_matching(&[])
    }

    /// Alerts whose labels match every matcher, e.g. `["alertname=\"TargetDown\""]`.
    pub fn alerts_matching(&self, matchers: &[&str]) -> Vec<Value> {
        let query: String = matchers
            .iter()
            .map(|m| format!("filter={}", crate::harness::urlencode(m)))
            .collect::<Vec<_>>()
            .join("&");
        let v = self.get(&format!("/api/v2/alerts?{query}"));
        v.as_array().cloned().unwrap_or_default()
    }

    /// `POST /api/v2/alerts` with a JSON array of `{labels, annotations, startsAt?, endsAt?,
    /// generatorURL?}` (what Prometheus sends, and how SOTP pushes a super-alert).
    pub fn post_alerts(&self, alerts: &Value) -> anyhow::Result<()> {
        self.post("/api/v2/alerts", alerts).map(|_| ())
    }

    /// `GET /api/v2/silences`: every silence, each with `id`, `matchers`, `status.state`
    /// (`active`, `pending`, `expired`), `createdBy`, `comment`, `startsAt`, `endsAt`.
    pub fn silences(&self) -> Vec<Value> {
        self.get("/api/v2/silences")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `POST /api/v2/silences`; the new silence's id.
    pub fn post_silence(&self, silence: &Value) -> anyhow::Result<String> {
        let v = self.post("/api/v2/silences", silence)?;
        v["silenceID"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no silenceID in {v}"))
    }

    /// `GET /api/v2/status`: version, the loaded config (`config.original`), cluster
    /// (`disabled` here).
    pub fn status(&self) -> Value {
        self.get("/api/v2/status")
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stop and start again on the same port, config and storage (silences and the
    /// notification log survive; alerts are kept only in memory and are gone).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- alertmanager log ----\n{}", self.log());
        }
    }
}
