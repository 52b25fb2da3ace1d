//! A real Jaeger (v2, Apache-2.0; built once by scripts/setup into the deps cache, since the
//! build takes ~12 minutes) on loopback ports only: the OTLP/HTTP receiver, memory storage,
//! the query API, a health check. Stopping and starting it again on the same ports is an
//! outage its clients must ride out (memory storage: what it held is gone).

use crate::mosquitto::free_port;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Jaeger {
    /// OTLP/HTTP: `POST /v1/traces`.
    pub otlp_port: u16,
    pub query_port: u16,
    health_port: u16,
    config: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The binary scripts/setup built: `$SOTP_DEPS_DIR/bin/jaeger-<version>`.
pub fn binary() -> PathBuf {
    crate::harness::deps_binary("jaeger-")
}

impl Jaeger {
    /// Start with CORS for `origins` on the OTLP receiver (for pages sending to it directly).
    pub fn start(origins: &[&str]) -> Jaeger {
        let dir = tempfile::tempdir().unwrap();
        let (otlp_port, query_port, health_port, grpc_port) =
            (free_port(), free_port(), free_port(), free_port());
        let cors = if origins.is_empty() {
            String::new()
        } else {
            format!(
                "\n        cors:\n          allowed_origins: [{}]",
                origins
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let config = format!(
            "service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health_port}
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{grpc_port}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}{cors}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"
        );
        let path = dir.path().join("jaeger.yaml");
        std::fs::write(&path, config).unwrap();
        let mut jaeger = Jaeger {
            otlp_port,
            query_port,
            health_port,
            config: path,
            child: None,
            _dir: dir,
        };
        jaeger.resume();
        jaeger
    }

    /// Kill it (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same ports; returns once it is healthy.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "jaeger is running");
        let child = Command::new(binary())
            .arg(format!("--config=file:{}", self.config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting jaeger");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("http://127.0.0.1:{}/status", self.health_port);
        while !reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "jaeger did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The spans Jaeger holds for a trace (its v1 query API), empty if none.
    pub fn trace_spans(&self, trace_id: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/traces/{trace_id}", self.query_port);
        let Ok(response) = reqwest::blocking::get(url) else {
            return Vec::new();
        };
        let body: Value = response.json().unwrap_or(Value::Null);
        body["data"][0]["spans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("jaeger is running").id()
    }

    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.otlp_port)
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        self.stop();
    }
}
