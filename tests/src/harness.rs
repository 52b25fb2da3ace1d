//! A real `sotp` server for a test: started as a child process on `127.0.0.1:0` with a
//! temporary data dir, stopped (or killed with SIGKILL) and restarted on the same data.

use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    bin: PathBuf,
    pub data_dir: tempfile::TempDir,
    child: Option<Child>,
    pub base: String,
    pub admin_token: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// The `--listen` address (port 0 unless a test needs to know it before the start).
    listen: String,
}

/// Config that lets tenants reach this host's loopback (the tests' brokers and fake devices
/// listen there; the default egress policy refuses loopback).
pub const LOOPBACK_EGRESS: &str = "[runtime.egress]\nallow = [\"127.0.0.1/32\"]\n";

fn fresh_data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sotp-test-")
        .tempdir()
        .expect("temp dir")
}

impl Server {
    /// Start `bin` (the `sotp` binary) on a fresh data dir.
    pub fn start(bin: &str) -> Server {
        Self::start_with(bin, &[])
    }

    /// Start with this TOML as the config file (written into the data dir).
    pub fn start_with_config(bin: &str, config: &str, env: &[(&str, &str)]) -> Server {
        let data_dir = fresh_data_dir();
        let path = data_dir.path().join("config.toml");
        std::fs::write(&path, config).expect("writing the config");
        let config_arg = path.to_string_lossy().into_owned();
        Self::launched(bin, data_dir, &["--config", &config_arg], env)
    }

    /// As [`Server::start_with_config`], listening on `listen` (kept across restarts): for
    /// servers that must know each other's address before they start.
    pub fn start_with_config_at(
        bin: &str,
        config: &str,
        env: &[(&str, &str)],
        listen: &str,
    ) -> Server {
        let data_dir = fresh_data_dir();
        let path = data_dir.path().join("config.toml");
        std::fs::write(&path, config).expect("writing the config");
        let config_arg = path.to_string_lossy().into_owned();
        let mut server = Self::unstarted(bin, data_dir, &["--config", &config_arg], env);
        server.listen = listen.to_string();
        server.launch();
        server
    }

    /// The process id of the running `sotp`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sotp is running").id()
    }

    /// Resident memory of the running `sotp`, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/<pid>/status")
            * 1024
    }

    pub fn start_with(bin: &str, extra_args: &[&str]) -> Server {
        Self::launched(bin, fresh_data_dir(), extra_args, &[])
    }

    /// Start with extra environment variables (failpoints, config overrides).
    pub fn start_with_env(bin: &str, env: &[(&str, &str)]) -> Server {
        Self::launched(bin, fresh_data_dir(), &[], env)
    }

    fn launched(
        bin: &str,
        data_dir: tempfile::TempDir,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut server = Self::unstarted(bin, data_dir, extra_args, env);
        server.launch();
        server
    }

    fn unstarted(
        bin: &str,
        data_dir: tempfile::TempDir,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server {
            bin: PathBuf::from(bin),
            data_dir,
            child: None,
            base: String::new(),
            admin_token: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen: "127.0.0.1:0".into(),
        }
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    fn launch(&mut self) {
        let dir = self.data_dir.path();
        let _ = std::fs::remove_file(dir.join("sotp.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sotp.log"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &self.listen])
            .args(&self.extra_args)
            .env("SOTP_LOG", "info,sotp_runtime=debug")
            // The platform tenant and its probes (tests/e2e/platform.rs turns them on) would
            // add a tenant and five components to every test.
            .env("SOTP_PLATFORM__ENABLED", "false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting sotp");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("sotp.addr"))
                && text.ends_with('\n')
            {
                break text.trim().to_string();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sotp exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sotp did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.base = format!("http://{addr}");
        // Written on first start; a test may remove it afterwards (keeping `admin_token`).
        match std::fs::read_to_string(dir.join("admin.token")) {
            Ok(token) => self.admin_token = token.trim().to_string(),
            Err(e) => assert!(
                !self.admin_token.is_empty(),
                "admin.token written on first start: {e}"
            ),
        }
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
        let client = Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sotp never became ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping sotp");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_sigterm(child.id());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "sotp exited with {status}:\n{}",
                        self.log()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("sotp did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        self.launch();
    }

    /// Drop an environment variable given at start (a failpoint) for the next `restart`.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("sotp.log")).unwrap_or_default()
    }

    pub fn admin(&self) -> Api {
        Api::new(&self.base, &self.admin_token)
    }

    pub fn api(&self, token: &str) -> Api {
        Api::new(&self.base, token)
    }

    /// The operator's `/metrics` (with the admin token).
    pub fn metrics_text(&self) -> String {
        let resp = Client::new()
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .expect("GET /metrics");
        assert!(
            resp.status().is_success(),
            "GET /metrics: {}",
            resp.status()
        );
        resp.text().unwrap()
    }

    /// `/v1/flows/status`: listeners, decoder counters, stored rows, sinks.
    /// The value of the operator's `/metrics` line starting with `line_start` (a name and
    /// its labels as written, e.g. `sotp_x_total{a="b"}`), if there is one.
    pub fn metric_value(&self, line_start: &str) -> Option<f64> {
        let text = self.metrics_text();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }

    pub fn flow_status(&self) -> Value {
        let (code, body) = self.admin().get("/v1/flows/status");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Wait until exactly `rows` flows are stored (since this process started).
    pub fn wait_flows_stored(&self, rows: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.flow_status();
            if s["stored_rows"].as_u64() == Some(rows) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {rows} stored flows: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Create a tenant and return an API client holding its token.
    pub fn tenant(&self, id: &str) -> Api {
        let (status, body) = self.admin().post("/v1/tenants", json!({ "id": id }));
        assert_eq!(status, 201, "creating tenant {id}: {body}");
        let token = body["token"]["token"].as_str().unwrap().to_string();
        self.api(&token)
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- sotp log ----\n{}", self.log());
        }
    }
}

/// A client for one token.
#[derive(Clone)]
pub struct Api {
    client: Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            client: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    fn finish(resp: reqwest::Result<reqwest::blocking::Response>) -> (u16, Value) {
        let resp = resp.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send(),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        Self::finish(
            self.client
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send(),
        )
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        Self::finish(
            self.client
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send(),
        )
    }

    /// A request with a text body (YAML rule files, CSV): `method` is "PUT" or "POST".
    pub fn send_text(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        Self::finish(
            self.client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("content-type", "application/yaml")
                .body(body.to_string())
                .send(),
        )
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        Self::finish(
            self.client
                .delete(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send(),
        )
    }

    /// Upload a component (multipart) and return the response.
    pub fn upload(&self, manifest: &str, wasm: &[u8], activate: bool) -> (u16, Value) {
        let form = multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "wasm",
                multipart::Part::bytes(wasm.to_vec()).file_name("component.wasm"),
            );
        Self::finish(
            self.client
                .post(format!("{}/v1/components?activate={activate}", self.base))
                .bearer_auth(&self.token)
                .multipart(form)
                .send(),
        )
    }

    /// Upload a guest file; panics unless the server answers 201.
    pub fn push(&self, manifest: &str, wasm_path: &str) -> Value {
        let wasm = std::fs::read(wasm_path).expect("reading guest");
        let (status, body) = self.upload(manifest, &wasm, true);
        assert_eq!(status, 201, "upload failed: {body}");
        body
    }

    /// `GET /v1/query` with the given parameters.
    pub fn query(&self, params: &[(&str, &str)]) -> Value {
        let qs = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let (status, body) = self.get(&format!("/v1/query?{qs}"));
        assert_eq!(status, 200, "query {qs}: {body}");
        body
    }

    /// Raw points of `metric` over the last `since`, flattened across series:
    /// (labels, timestamp, value).
    pub fn points(&self, metric: &str, since: &str) -> Vec<(Value, i64, f64)> {
        let body = self.query(&[("metric", metric), ("since", since)]);
        let mut out = Vec::new();
        for s in body["series"].as_array().unwrap() {
            for p in s["points"].as_array().unwrap() {
                out.push((
                    s["labels"].clone(),
                    p[0].as_i64().unwrap(),
                    p[1].as_f64().unwrap(),
                ));
            }
        }
        out
    }

    /// A client for a new token of this caller's tenant with `scopes`.
    pub fn scoped(&self, name: &str, scopes: &[&str]) -> Api {
        let (status, body) = self.post("/v1/tokens", json!({ "name": name, "scopes": scopes }));
        assert_eq!(status, 201, "creating a {scopes:?} token: {body}");
        Api::new(&self.base, body["token"].as_str().unwrap())
    }

    pub fn component(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/components/{name}?log_lines=200"));
        assert_eq!(status, 200, "component {name}: {body}");
        body
    }

    /// Poll `f` until it returns `Some`, or panic after `timeout` with `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Api) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until component `name` has trapped `times` times with trap class `kind`; its view.
    pub fn wait_for_trap(&self, name: &str, kind: &str, times: u64) -> Value {
        self.wait_for(
            &format!("{name} to trap ({kind}) {times} times"),
            Duration::from_secs(90),
            |api| {
                let view = api.component(name);
                (view["counters"]["traps"][kind].as_u64().unwrap_or(0) >= times).then_some(view)
            },
        )
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A collector manifest with the given name, schedule, limits and extra TOML.
pub fn manifest(name: &str, version: &str, every: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"{version}\"\nworld = \"collector\"\n\n[schedule]\nevery = \"{every}\"\n\n{extra}\n"
    )
}

/// Bring up the `basic` lab as `id` (clearing leftovers of a killed run) and wait until it
/// is healthy. Needs root.
pub fn basic_lab(id: u8) -> sotp_labs::Lab {
    let topology = sotp_labs::Topology::load(&sotp_labs::topology_path("basic")).unwrap();
    let mut log = |m: &str| eprintln!("lab {id}: {m}");
    let lab = sotp_labs::Lab::up_fresh(&topology, id, &mut log).expect("lab up (needs root)");
    lab.check_until(Duration::from_secs(60), &mut log)
        .expect("lab healthy");
    lab
}

/// Start node_exporter in `node`, listening on its management address: its `address:9100` and pid.
pub fn start_node_exporter(lab: &sotp_labs::Lab, node: &str) -> (String, String) {
    let address = lab.node(node).unwrap().management_address.to_string();
    let dir = lab.node_dir(node);
    let pid = lab
        .exec(
            node,
            &format!(
                "setsid prometheus-node-exporter --web.listen-address={address}:9100 \
                 --collector.disable-defaults --collector.cpu --collector.meminfo --collector.loadavg \
                 > {}/node_exporter.log 2>&1 < /dev/null & echo $!",
                dir.display()
            ),
        )
        .expect("starting node_exporter in the lab host");
    (format!("{address}:9100"), pid.trim().to_string())
}

/// Run one of `ui/tests/*.mjs` (playwright-core driving Debian's chromium) with `env`;
/// panics with its output if it fails.
pub fn run_browser_script(script: &str, env: &[(&str, &str)]) {
    let ui = concat!(env!("CARGO_MANIFEST_DIR"), "/../ui");
    let out = Command::new("node")
        .arg(format!("{ui}/tests/{script}"))
        .current_dir(ui)
        .envs(env.iter().copied())
        .output()
        .expect("running node (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "the browser run ({script}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// User + system CPU time a process has used so far (`/proc/<pid>/stat`).
pub fn process_cpu(pid: u32) -> Duration {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_secs_f64((field(11) + field(12)) as f64 / tick)
}

/// A peer binary scripts/setup built into the deps cache: the first file of
/// `$SOTP_DEPS_DIR/bin` (default `~/.cache/sotp/deps/bin`) named `<prefix><version>`.
pub fn deps_binary(prefix: &str) -> PathBuf {
    let deps = std::env::var("SOTP_DEPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sotp/deps"));
    let bin = deps.join("bin");
    std::fs::read_dir(&bin)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}* in {} (scripts/setup builds it)",
                bin.display()
            )
        })
}

/// Stop a child with SIGTERM, as an operator does, waiting up to `grace` before killing it.
pub fn terminate(mut child: Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `--name VALUE` from a bench binary's arguments, or `default`.
pub fn bench_arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Serve `app` on a free loopback port from a one-worker runtime of its own (the test
/// servers that follow a peer's documented API: Vault, Azure, the throttling proxy). Keep the
/// runtime: dropping it stops the server.
pub fn serve_loopback(app: axum::Router) -> (u16, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, runtime)
}
