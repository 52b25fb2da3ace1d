//! A real QuestDB server for a test (scripts/peers/questdb, Java 17, loopback only): started,
//! stopped with SIGTERM and restarted on the same data directory, queried over HTTP `/exec`.

use crate::mosquitto::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct QuestDb {
    pub http_port: u16,
    ilp_port: u16,
    pg_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/questdb")
}

impl QuestDb {
    /// Start a server with its data in `data` and wait until it answers `/ping`.
    pub fn start(data: &Path) -> QuestDb {
        let jar = Command::new(script()).arg("jar").output().unwrap();
        assert!(
            jar.status.success(),
            "the QuestDB jar is missing: run scripts/setup (or scripts/peers/questdb fetch)"
        );
        let mut q = QuestDb {
            http_port: free_port(),
            ilp_port: free_port(),
            pg_port: free_port(),
            data: data.to_path_buf(),
            child: None,
        };
        q.spawn();
        q
    }

    /// The questdb-rs configuration string for SOTP's sink.
    pub fn conf(&self) -> String {
        format!("http::addr=127.0.0.1:{};", self.http_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.data.join("questdb.stdout")).unwrap();
        let child = Command::new(script())
            .arg("run")
            .arg(&self.data)
            .args([
                self.http_port.to_string(),
                self.ilp_port.to_string(),
                self.pg_port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/peers/questdb run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let client = reqwest::blocking::Client::new();
        loop {
            let url = format!("http://127.0.0.1:{}/ping", self.http_port);
            if let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send()
                && r.status().as_u16() == 204
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("QuestDB exited ({status}) during startup: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "QuestDB not ready after 90 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM and wait for the server to exit (it flushes and closes its tables).
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
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Run SQL over `/exec`; the JSON answer (`columns`, `dataset`, `count`).
    pub fn exec(&self, sql: &str) -> anyhow::Result<Value> {
        let r = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/exec", self.http_port))
            .query(&[("query", sql)])
            .timeout(Duration::from_secs(30))
            .send()?;
        let status = r.status();
        let body: Value = r.json()?;
        anyhow::ensure!(status.is_success(), "{sql}: HTTP {status}: {body}");
        Ok(body)
    }

    /// The single row of a query as numbers (e.g. `SELECT count(), sum(bytes) FROM t`).
    pub fn row(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        let body = self.exec(sql)?;
        let row = body["dataset"]
            .get(0)
            .and_then(|r| r.as_array())
            .ok_or_else(|| anyhow::anyhow!("{sql}: no rows: {body}"))?;
        Ok(row.clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("questdb.stdout")).unwrap_or_default()
    }
}

impl Drop for QuestDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
