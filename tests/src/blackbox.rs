//! A real blackbox_exporter (Debian's `prometheus-blackbox-exporter`, 0.23) on a loopback
//! port, for comparing SOTP's probes with it on the same targets. Its config has one module,
//! `http_2xx` (any 2xx is up, redirects followed, IPv4), written to a temporary directory.

use crate::mosquitto::free_port;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "prometheus-blackbox-exporter";

const CONFIG: &str = "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
";

pub struct Blackbox {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Blackbox {
    pub fn start() -> Blackbox {
        Self::start_with("")
    }

    /// With more modules: YAML entries indented as under `modules:` (two spaces).
    pub fn start_with(modules: &str) -> Blackbox {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("blackbox.yml");
        std::fs::write(&config, format!("{CONFIG}{modules}")).unwrap();
        let port = free_port();
        let child = Command::new(BINARY)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--config.file={}", config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BINARY} (scripts/setup installs it): {e}"));
        let bb = Blackbox {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("http://127.0.0.1:{port}/-/healthy"))
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "blackbox_exporter did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        bb
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Probe `target` with `module`: every unlabelled metric, plus
    /// `probe_http_duration_seconds{phase=...}` as `probe_http_duration_seconds:<phase>`.
    pub fn probe(&self, target: &str, module: &str) -> BTreeMap<String, f64> {
        let url = format!(
            "http://127.0.0.1:{}/probe?module={module}&target={}",
            self.port,
            crate::harness::urlencode(target)
        );
        let text = reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(30))
            .send()
            .and_then(|r| r.text())
            .expect("blackbox_exporter /probe");
        parse(&text)
    }
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, labels)) => match labels.split_once("phase=\"") {
                Some((_, rest)) => format!("{name}:{}", rest.split('"').next().unwrap_or("")),
                None => continue,
            },
        };
        out.insert(key, value);
    }
    out
}

impl Drop for Blackbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
