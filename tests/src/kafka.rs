//! Real Kafka for a test (scripts/peers/kafka: Kafka 4.4.0 from Maven, KRaft mode, Java 17,
//! loopback only): one node, or a cluster of three (replication factor 3, min ISR 2) whose
//! nodes can be SIGKILLed and started again on their data.

use crate::mosquitto::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/kafka")
}

struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    data: PathBuf,
    child: Option<Child>,
    /// The log's length when this run started: its start line comes after.
    log_from: usize,
}

pub struct Kafka {
    nodes: Vec<Node>,
    cluster_id: String,
    voters: Option<String>,
    _dir: tempfile::TempDir,
}

impl Kafka {
    /// One node (replication factor 1).
    pub fn single() -> Kafka {
        Self::start(1)
    }

    /// Three nodes, every one a broker and a controller.
    pub fn cluster() -> Kafka {
        Self::start(3)
    }

    fn start(n: u32) -> Kafka {
        let dir = tempfile::Builder::new()
            .prefix("sotp-kafka-")
            .tempdir()
            .unwrap();
        let out = Command::new(script()).arg("cluster-id").output().unwrap();
        assert!(out.status.success(), "scripts/peers/kafka cluster-id");
        let cluster_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                port: free_port(),
                controller_port: free_port(),
                data: dir.path().join(format!("node{id}")),
                child: None,
                log_from: 0,
            })
            .collect();
        let voters = (n > 1).then(|| {
            nodes
                .iter()
                .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut kafka = Kafka {
            nodes,
            cluster_id,
            voters,
            _dir: dir,
        };
        for i in 0..kafka.nodes.len() {
            kafka.spawn(i);
        }
        for i in 0..kafka.nodes.len() {
            kafka.wait_started(i);
        }
        kafka
    }

    /// `host:port,...` of every broker (for `bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.data).unwrap();
        node.log_from =
            std::fs::metadata(node.data.join("kafka.stdout")).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data.join("kafka.stdout"))
            .unwrap();
        let mut cmd = Command::new(script());
        cmd.arg("run")
            .arg(&node.data)
            .args([
                node.id.to_string(),
                node.port.to_string(),
                node.controller_port.to_string(),
                self.cluster_id.clone(),
            ])
            .args(self.voters.iter())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        node.child = Some(cmd.spawn().expect("scripts/peers/kafka run"));
    }

    fn wait_started(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let node = &mut self.nodes[i];
            let log = std::fs::read(node.data.join("kafka.stdout")).unwrap_or_default();
            let started = String::from_utf8_lossy(log.get(node.log_from..).unwrap_or_default())
                .contains("Kafka Server started");
            if started && TcpStream::connect(("127.0.0.1", node.port)).is_ok() {
                return;
            }
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                let id = node.id;
                panic!("Kafka node {id} exited ({status}): {}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "Kafka node {} not started after 90 s: {}",
                self.nodes[i].id,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL node `i` (0-based): no clean shutdown.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill_tree(&mut child);
        }
    }

    /// Start node `i` again on its data and wait until it serves.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_started(i);
    }

    /// Bytes of `topic`'s log segments on node `i`'s disk (compressed record batches as
    /// Kafka keeps them, one replica).
    pub fn topic_bytes(&self, i: usize, topic: &str) -> u64 {
        let dirs = std::fs::read_dir(self.nodes[i].data.join("log"))
            .into_iter()
            .flatten();
        dirs.filter_map(Result::ok)
            .filter(|d| {
                let name = d.file_name().to_string_lossy().into_owned();
                name.strip_prefix(topic)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
            .filter_map(Result::ok)
            .filter(|f| f.path().extension().is_some_and(|e| e == "log"))
            .map(|f| f.metadata().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].data.join("kafka.stdout")).unwrap_or_default()
    }
}

/// The script `exec`s java, so the child is the JVM itself.
fn kill_tree(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                kill_tree(&mut child);
            }
        }
    }
}
