//! A real Mosquitto broker for a test: its own config, port and persistence directory on
//! loopback, started and stopped (SIGTERM or SIGKILL) by the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// For a TLS broker: the CA that signed its certificate (PEM), and client arguments
    /// (`--cafile`, `-u`, `-P`) for mosquitto_pub/sub.
    pub ca_pem: Option<String>,
    client_args: Vec<String>,
}

impl Mosquitto {
    /// Start `mosquitto` (from Debian's package; scripts/setup installs it) on a free port,
    /// saving its state to disk every second (so a restart keeps sessions and queues).
    pub fn start() -> Mosquitto {
        Self::start_with(true)
    }

    /// Without on-disk persistence: sessions and queues live in memory only (benchmarks,
    /// where a database save every second would distort the broker's cost).
    pub fn start_in_memory() -> Mosquitto {
        Self::start_with(false)
    }

    fn start_with(persistent: bool) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("sotp-mosquitto-")
            .tempdir()
            .unwrap();
        let port = free_port();
        // Started as root, mosquitto drops to user `mosquitto`, which cannot write this
        // directory; stay root then (it is our own throwaway broker on loopback).
        let user = if is_root() { "user root\n" } else { "" };
        let conf = format!(
            "{user}listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence {persistent}\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             max_inflight_messages 200\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
            ca_pem: None,
            client_args: Vec::new(),
        };
        broker.launch();
        broker
    }

    /// A broker that speaks only TLS (a certificate for 127.0.0.1 signed by a fresh CA) and
    /// admits only `user` with `password`.
    pub fn start_secure(user: &str, password: &str) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("sotp-mosquitto-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sotp test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(d.join("passwd"))
            .args([user, password])
            .status()
            .expect("mosquitto_passwd");
        assert!(status.success());
        let port = free_port();
        let user_line = if is_root() { "user root\n" } else { "" };
        let conf = format!(
            "{user_line}listener {port} 127.0.0.1\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             allow_anonymous false\npassword_file {d}/passwd\n\
             log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            d = d.display()
        );
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        let client_args = vec![
            "--cafile".to_string(),
            d.join("ca.pem").display().to_string(),
            "-u".to_string(),
            user.to_string(),
            "-P".to_string(),
            password.to_string(),
        ];
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
            ca_pem: Some(ca_pem),
            client_args,
        };
        broker.launch();
        broker
    }

    /// Receive `count` messages on `filter` with mosquitto_sub (in a thread); the handle
    /// yields their payloads.
    pub fn subscribe_lines(&self, filter: &str, count: usize) -> std::thread::JoinHandle<String> {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-q",
            "1",
            "-t",
            filter,
        ])
        .args(["-C", &count.to_string(), "-W", "30"])
        .args(&self.client_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("mosquitto_sub");
        std::thread::spawn(move || {
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    }

    /// The broker's process id (for reading its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn binary() -> PathBuf {
        for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
            if Path::new(p).exists() {
                return PathBuf::from(p);
            }
        }
        panic!("mosquitto is not installed; run scripts/setup (Debian package `mosquitto`)");
    }

    fn launch(&mut self) {
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: mosquitto saves its persistence database and exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn start_again(&mut self) {
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Publish with `mosquitto_pub -l`: one QoS 1 message per line of `lines`.
    pub fn publish_lines(&self, topic: &str, lines: &str) {
        publish_with(self.port, topic, lines, &self.client_args);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A QoS 1 publisher (rumqttc) that keeps its session across broker restarts and resends
/// what the broker has not acknowledged. Runs on its own thread.
pub struct Publisher {
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Publish `count` messages to `topic` at `rate` per second; message `i` (from 1) is
    /// `{"value": i, "ts": base_ms + i, "device": "pub"}`.
    pub fn start(
        port: u16,
        client_id: &str,
        topic: &str,
        count: u64,
        rate: u64,
        base_ms: i64,
    ) -> Publisher {
        use std::sync::atomic::Ordering::Relaxed;
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (a, s) = (acked.clone(), sent.clone());
        let (client_id, topic) = (client_id.to_string(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
                options
                    .set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(5))
                    .set_inflight(100);
                let (client, mut eventloop) =
                    rumqttc::AsyncClient::new(options, (count as usize).max(10));
                let producer = tokio::spawn(async move {
                    let period = Duration::from_secs_f64(1.0 / rate as f64);
                    let start = tokio::time::Instant::now();
                    for i in 1..=count {
                        tokio::time::sleep_until(start + period * (i as u32)).await;
                        let payload = format!(
                            "{{\"value\": {i}, \"ts\": {}, \"device\": \"pub\"}}",
                            base_ms + i as i64
                        );
                        client
                            .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
                            .await
                            .unwrap();
                        s.fetch_add(1, Relaxed);
                    }
                    client
                });
                let mut client = None;
                let mut producer = Some(producer);
                let mut quiet_since: Option<tokio::time::Instant> = None;
                loop {
                    if let Some(p) = producer.as_ref()
                        && p.is_finished()
                    {
                        client = Some(producer.take().unwrap().await.unwrap());
                    }
                    // Done when everything was handed over and nothing awaits a PUBACK for a
                    // while (the request channel is drained by then).
                    let idle = producer.is_none()
                        && eventloop.state.inflight() == 0
                        && eventloop.pending.is_empty();
                    match (idle, quiet_since) {
                        (true, None) => quiet_since = Some(tokio::time::Instant::now()),
                        (true, Some(t)) if t.elapsed() > Duration::from_secs(1) => {
                            if let Some(c) = client.take() {
                                let _ = c.disconnect().await;
                            }
                            return;
                        }
                        (false, _) => quiet_since = None,
                        _ => {}
                    }
                    match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => {
                            a.fetch_add(1, Relaxed);
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        });
        Publisher {
            acked,
            sent,
            thread: Some(thread),
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until every message was acknowledged by the broker.
    pub fn finish(mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while !self.thread.as_ref().unwrap().is_finished() {
            assert!(
                Instant::now() < deadline,
                "publisher: {} of its messages acknowledged",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.thread.take().unwrap().join().unwrap();
        self.acked()
    }
}

/// `mosquitto_pub -l` against a broker on `port` (usable from other threads).
pub fn publish_lines_to(port: u16, topic: &str, lines: &str) {
    publish_with(port, topic, lines, &[]);
}

fn publish_with(port: u16, topic: &str, lines: &str, extra: &[String]) {
    use std::io::Write;
    let port = port.to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l", "-t", topic])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
