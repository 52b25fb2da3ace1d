//! A real Loki-push receiver: VictoriaLogs (Apache-2.0; `go install`ed by scripts/setup into
//! the deps cache), on a loopback port, its data in a temporary directory that survives a
//! stop and a start (an outage). Grafana Loki itself is AGPL: not used. Retention is a
//! century, since the test captures carry 2023 timestamps.

use crate::mosquitto::free_port;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct VictoriaLogs {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    crate::harness::deps_binary("victoria-logs-")
}

impl VictoriaLogs {
    pub fn start() -> VictoriaLogs {
        let mut vl = VictoriaLogs {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        vl.resume();
        vl
    }

    /// The Loki push URL.
    pub fn push_url(&self) -> String {
        format!("http://127.0.0.1:{}/insert/loki/api/v1/push", self.port)
    }

    /// Stop it the way an operator does (SIGTERM): it flushes what it acknowledged to disk
    /// first (killed, it loses the last second of what it had acknowledged).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::harness::terminate(child, Duration::from_secs(20));
        }
    }

    /// Start (again, on the same port and data); returns once it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(binary())
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting victoria-logs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("http://127.0.0.1:{}/health", self.port);
        while !reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "victoria-logs did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rows of a LogsQL query (one JSON object per line of the answer).
    pub fn query(&self, logsql: &str) -> Vec<Value> {
        let Ok(response) = reqwest::blocking::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/select/logsql/query",
                self.port
            ))
            .form(&[("query", logsql)])
            .send()
        else {
            return Vec::new();
        };
        let text = response.text().unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `count()` of a LogsQL filter.
    pub fn count(&self, filter: &str) -> u64 {
        self.query(&format!("{filter} | stats count() rows"))
            .first()
            .and_then(|r| r["rows"].as_str()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for VictoriaLogs {
    fn drop(&mut self) {
        self.stop();
    }
}
