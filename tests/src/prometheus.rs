//! A real Prometheus for a test (Debian's `prometheus`, 2.42 on Debian 12, started through
//! scripts/peers/prometheus with a config written here): loopback only, TSDB in a temporary
//! directory, any number of scrape jobs with per-target labels, alert rule files, and the
//! Alertmanagers it sends alerts to. Scrape and evaluation interval 1 s unless set.
//!
//! ```ignore
//! let am = Alertmanager::start(&webhook, &token);
//! let prom = Prometheus::builder()
//!     .job(Job::new("lab", Target::lab(&lab.plan)))
//!     .rules(TARGET_DOWN_RULES)
//!     .alertmanager(&am.address())
//!     .start();
//! prom.wait_targets_up("lab", 7, Duration::from_secs(30));
//! ```
//!
//! Ready ~0.1-0.2 s after start, but the first scrape only ~6 s after start (Prometheus 2.42
//! hands discovered targets to the scrape manager on a 5 s tick): wait with
//! [`Prometheus::wait_targets_up`]. Measured with the `star` lab: with [`TARGET_DOWN_RULES`]
//! (`for: 5s`) and Alertmanager's group_wait 1 s, the webhook came 7.3-8.0 s after the core's
//! links went down (4 runs), and the resolutions 11-12 s after they came back up (OSPF
//! reconverges in 6-11 s).

use crate::mosquitto::free_port;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `TargetDown` (label `severity: critical`) for every target of every job whose scrape has
/// failed for 5 s; its summary names the target's `device` label and `instance`.
pub const TARGET_DOWN_RULES: &str = r#"groups:
  - name: targets
    rules:
      - alert: TargetDown
        expr: up == 0
        for: 5s
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.device }} ({{ $labels.instance }}) does not answer scrapes"
"#;

/// One scrape target: `host:port` and the labels Prometheus attaches to its series (and so
/// to the alerts about it).
#[derive(Clone, Debug)]
pub struct Target {
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

impl Target {
    pub fn new(address: &str) -> Target {
        Target {
            address: address.into(),
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, name: &str, value: &str) -> Target {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Every node_exporter of a lab (nodes with `metrics: true`), labelled `device=<node>`;
    /// `instance` is the node's management address with port 9100.
    pub fn lab(plan: &sotp_labs::Plan) -> Vec<Target> {
        plan.metrics_targets()
            .into_iter()
            .map(|(node, address)| Target::new(&address).label("device", &node))
            .collect()
    }
}

/// A scrape job.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub metrics_path: String,
    pub bearer_token: Option<String>,
    pub targets: Vec<Target>,
}

impl Job {
    pub fn new(name: &str, targets: Vec<Target>) -> Job {
        Job {
            name: name.into(),
            metrics_path: "/metrics".into(),
            bearer_token: None,
            targets,
        }
    }

    pub fn metrics_path(mut self, path: &str) -> Job {
        self.metrics_path = path.into();
        self
    }

    /// Sent as `Authorization: Bearer ...` on every scrape.
    pub fn bearer_token(mut self, token: &str) -> Job {
        self.bearer_token = Some(token.into());
        self
    }
}

#[derive(Default)]
pub struct PrometheusBuilder {
    jobs: Vec<Job>,
    rules: Vec<String>,
    alertmanagers: Vec<String>,
    interval: Option<String>,
    args: Vec<String>,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl PrometheusBuilder {
    pub fn job(mut self, job: Job) -> Self {
        self.jobs.push(job);
        self
    }

    /// A rule file's content (YAML with `groups:`); may be given several times.
    pub fn rules(mut self, yaml: &str) -> Self {
        self.rules.push(yaml.into());
        self
    }

    /// `host:port` of an Alertmanager to send alerts to; may be given several times.
    pub fn alertmanager(mut self, address: &str) -> Self {
        self.alertmanagers.push(address.into());
        self
    }

    /// Scrape and evaluation interval, also the scrape timeout (default `1s`).
    pub fn interval(mut self, interval: &str) -> Self {
        self.interval = Some(interval.into());
        self
    }

    /// An extra command-line flag, e.g. `--web.enable-lifecycle`.
    pub fn arg(mut self, flag: &str) -> Self {
        self.args.push(flag.into());
        self
    }

    /// The configuration file; rule files are named `<dir>/rules-<i>.yml`.
    pub fn config(&self, dir: &Path) -> String {
        let interval = self.interval.as_deref().unwrap_or("1s");
        let mut c = format!(
            "# Written by sotp_tests::prometheus.\nglobal:\n  scrape_interval: {interval}\n  \
             scrape_timeout: {interval}\n  evaluation_interval: {interval}\n"
        );
        if !self.rules.is_empty() {
            c.push_str("rule_files:\n");
            for i in 0..self.rules.len() {
                let path = dir.join(format!("rules-{i}.yml"));
                c.push_str(&format!("  - {}\n", quoted(&path.display().to_string())));
            }
        }
        if !self.alertmanagers.is_empty() {
            let targets: Vec<String> = self.alertmanagers.iter().map(|a| quoted(a)).collect();
            c.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        c.push_str("scrape_configs:\n");
        for job in &self.jobs {
            c.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n",
                quoted(&job.name),
                quoted(&job.metrics_path)
            ));
            if let Some(token) = &job.bearer_token {
                c.push_str(&format!(
                    "    authorization:\n      credentials: {}\n",
                    quoted(token)
                ));
            }
            c.push_str("    static_configs:\n");
            for t in &job.targets {
                let labels: Vec<String> = t
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", quoted(v)))
                    .collect();
                c.push_str(&format!(
                    "      - targets: [{}]\n        labels: {{{}}}\n",
                    quoted(&t.address),
                    labels.join(", ")
                ));
            }
        }
        c
    }

    /// Write the config and rule files, start Prometheus on a free loopback port and wait
    /// until it is ready (its first scrape follows within one interval).
    pub fn start(self) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("sotp-prometheus-")
            .tempdir()
            .unwrap();
        for (i, rules) in self.rules.iter().enumerate() {
            std::fs::write(dir.path().join(format!("rules-{i}.yml")), rules).unwrap();
        }
        std::fs::write(dir.path().join("prometheus.yml"), self.config(dir.path())).unwrap();
        let mut p = Prometheus {
            port: free_port(),
            dir,
            args: self.args,
            child: None,
        };
        p.launch();
        p
    }
}

pub struct Prometheus {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/prometheus")
}

impl Prometheus {
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(script())
            .arg("run")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .env("PROMETHEUS_CONFIG", self.dir.path().join("prometheus.yml"))
            .env("PROMETHEUS_ARGS", self.args.join(" "))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/peers/prometheus run");
        self.child = Some(child);
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
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
                    "Prometheus exited ({status}) during startup (scripts/setup installs it): {}\n\
                     --- config ---\n{}",
                    self.log(),
                    self.config()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready after 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    /// The process id (scripts/peers/prometheus `exec`s Prometheus itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("prometheus is running").id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.yml")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base()))
            .query(query)
            .timeout(Duration::from_secs(10))
            .send()?;
        let status = r.status();
        let body: Value = r.json()?;
        anyhow::ensure!(
            status.is_success() && body["status"] == "success",
            "GET {path}: {status}: {body}"
        );
        Ok(body["data"].clone())
    }

    /// An instant query: `data.result`, each `{metric: {labels}, value: [ts, "v"]}`.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/query", &[("query", promql)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/alerts`: the alerts its rules hold, each with `labels`, `annotations`,
    /// `state` (`pending` or `firing`), `activeAt`, `value`.
    pub fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/alerts", &[])?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/alertmanagers`: the URLs of the active Alertmanagers.
    pub fn alertmanagers(&self) -> anyhow::Result<Vec<String>> {
        let data = self.get("/api/v1/alertmanagers", &[])?;
        Ok(data["activeAlertmanagers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["url"].as_str().map(str::to_string))
            .collect())
    }

    /// The value of `up` per target of `job`, keyed by `instance`.
    pub fn up(&self, job: &str) -> BTreeMap<String, bool> {
        self.query(&format!("up{{job={}}}", quoted(job)))
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                Some((
                    s["metric"]["instance"].as_str()?.to_string(),
                    s["value"][1].as_str()? == "1",
                ))
            })
            .collect()
    }

    /// Wait until `count` targets of `job` have been scraped successfully (`up == 1`).
    pub fn wait_targets_up(&self, job: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.up(job);
            if up.values().filter(|v| **v).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {count} targets of job {job} to be up: {up:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
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
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
    }
}
