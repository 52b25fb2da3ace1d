//! A hostile collector. Its `mode` config picks the attack run on every tick:
//!
//! - `spin`: an infinite loop (must stop at the CPU deadline),
//! - `bomb`: allocate until memory runs out (must stop at the memory limit),
//! - `panic`: panic with a recognisable message,
//! - `secrets`: read a granted and a non-granted secret, emit what happened,
//! - `escape`: read a host file and open a TCP connection, emit what happened;
//! - `publish`: publish to `out/greeting` (which it may) and `secret/x` (which it may not);
//! - `snmp`: SNMP GET sysName from the `target` device, emit `snmp_result` (1 answered,
//!   0 denied, -1 another error);
//! - `ssh`: run `show version` on the `target` device, emit `ssh_result` likewise;
//! - `series-bomb`: emit batches of 1,000 samples with label values never seen before until
//!   the host refuses one (the refusal goes to its log), then return: what was accepted is
//!   committed, and the next tick starts over with new values;
//! - `slow-snmp`: ask the `target` device (which never answers) for sysName, again and
//!   again, whatever the answer;
//! - `big-call`: hand the host one batch of ~3 MiB of labels in a single call;
//! - `leak-resources`: create 2,000 WASI pollables and never drop them;
//! - `log-flood`: write 10,000 log lines and 10,000 stdout lines;
//! - `backup`: store a configuration backup of the `target` device;
//! - `sleep`: sleep for an hour (a wait inside the host, where no epoch check runs);
//! - `scratch`: count its calls in `/scratch/counter` (emitting `scratch_counter`), then try
//!   to write `bytes` more (emitting `scratch_big_written` 1 or 0).
//!
//! It emits `attacker_alive` first in every tick, so the tests can tell a call ran.

use sotp_guest::{Collector, Config, Samples, Tick};

struct Attacker {
    mode: String,
    target: String,
    bytes: usize,
}

impl Collector for Attacker {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Attacker {
            mode: config.str_or("mode", "spin").to_string(),
            target: config.str_or("target", "/etc/passwd").to_string(),
            bytes: config.u64_or("bytes", 1 << 20) as usize,
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let mut out = Samples::new();
        out.push("attacker_alive", tick.seq as f64);
        match self.mode.as_str() {
            "spin" => {
                out.emit()?;
                let mut x: u64 = tick.seq;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "bomb" => {
                out.emit()?;
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xA5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("sensor table corrupt at tick {}", tick.seq),
            "secrets" => {
                let granted = sotp_guest::secret("granted-secret");
                let forbidden = sotp_guest::secret("forbidden-secret");
                out.push(
                    "secret_granted_len",
                    granted.map(|v| v.len() as f64).unwrap_or(-1.0),
                );
                let denied = matches!(forbidden, Err(sotp_guest::Error::Denied(_)));
                out.push("secret_forbidden_denied", if denied { 1.0 } else { 0.0 });
                if let Ok(value) = forbidden {
                    // Leak it as loudly as possible so a test would see it.
                    out.push("secret_forbidden_leaked", value.len() as f64)
                        .label("value", &value);
                }
                out.emit()
            }
            "read-secret" => {
                // The secret named by `target` in the config: its length and byte sum (so a
                // test sees a rotation without the value), or why it could not be read.
                let name = self.target.clone();
                match sotp_guest::secret(&name) {
                    Ok(v) => {
                        out.push("secret_len", v.len() as f64);
                        out.push("secret_sum", v.bytes().map(f64::from).sum());
                    }
                    Err(e) => {
                        let kind = match e {
                            sotp_guest::Error::Denied(_) => "denied",
                            sotp_guest::Error::Unavailable(_) => "unavailable",
                            sotp_guest::Error::Invalid(_) => "invalid",
                            sotp_guest::Error::Timeout(_) => "timeout",
                        };
                        sotp_guest::log::warn(&format!(
                            "reading {name}: {}",
                            sotp_guest::describe(&e)
                        ));
                        out.push("secret_error", 1.0).label("kind", kind);
                    }
                }
                out.emit()
            }
            "escape" => {
                let read = std::fs::read_to_string(&self.target);
                out.push("escape_file_read", if read.is_ok() { 1.0 } else { 0.0 });
                if let Err(e) = &read {
                    sotp_guest::log::warn(&format!("reading {}: {e}", self.target));
                }
                let listing = std::fs::read_dir("/").map(|d| d.count()).unwrap_or(0);
                out.push("escape_dir_entries", listing as f64);
                let tcp = std::net::TcpStream::connect("127.0.0.1:22");
                out.push("escape_tcp_connected", if tcp.is_ok() { 1.0 } else { 0.0 });
                if let Err(e) = &tcp {
                    sotp_guest::log::warn(&format!("connecting: {e}"));
                }
                let env_count = std::env::vars().count();
                out.push("escape_env_vars", env_count as f64);
                out.emit()
            }
            "publish" => {
                let ok = sotp_guest::mqtt::publish("out/greeting", b"hello from a guest", false);
                let refused = sotp_guest::mqtt::publish("secret/x", b"leak", false);
                out.push("publish_ok", if ok.is_ok() { 1.0 } else { 0.0 });
                let denied = matches!(refused, Err(sotp_guest::Error::Denied(_)));
                out.push("publish_denied", if denied { 1.0 } else { 0.0 });
                out.emit()
            }
            "snmp" => {
                let result =
                    sotp_guest::snmp::get(&self.target, &["1.3.6.1.2.1.1.5.0".to_string()]);
                let code = match &result {
                    Ok(_) => 1.0,
                    Err(sotp_guest::Error::Denied(_)) => 0.0,
                    Err(_) => -1.0,
                };
                if let Err(e) = &result {
                    sotp_guest::log::warn(&format!(
                        "snmp get {}: {}",
                        self.target,
                        sotp_guest::describe(e)
                    ));
                }
                out.push("snmp_result", code).label("target", &self.target);
                out.emit()
            }
            "ssh" => {
                let result =
                    sotp_guest::ssh::run(&self.target, &["show version".to_string()], 10_000);
                let code = match &result {
                    Ok(_) => 1.0,
                    Err(sotp_guest::Error::Denied(_)) => 0.0,
                    Err(_) => -1.0,
                };
                out.push("ssh_result", code).label("target", &self.target);
                out.emit()
            }
            "series-bomb" => {
                out.emit()?;
                let mut next = tick.seq * 1_000_000_000;
                loop {
                    let mut batch = Samples::new();
                    for _ in 0..1000 {
                        next += 1;
                        batch
                            .push("bomb", 1.0)
                            .label("id", &next.to_string())
                            .label("pad", "0123456789abcdef0123456789abcdef");
                    }
                    if let Err(e) = batch.emit() {
                        // Keep what was accepted (it is committed) and come back next tick.
                        sotp_guest::log::warn(&format!("emit refused: {e}"));
                        return Ok(());
                    }
                }
            }
            "slow-snmp" => {
                out.emit()?;
                let oid = ["1.3.6.1.2.1.1.5.0".to_string()];
                let mut tries = 0u64;
                loop {
                    tries += 1;
                    if let Err(e) = sotp_guest::snmp::get(&self.target, &oid)
                        && tries == 1
                    {
                        sotp_guest::log::warn(&format!("snmp: {}", sotp_guest::describe(&e)));
                    }
                }
            }
            "big-call" => {
                out.emit()?;
                let mut batch = Samples::new();
                let value = "v".repeat(1000);
                for i in 0..3000 {
                    batch
                        .push("big", i as f64)
                        .label("a", &value)
                        .label("n", &i.to_string());
                }
                batch.emit()
            }
            "leak-resources" => {
                out.emit()?;
                for _ in 0..2000 {
                    let p = wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000);
                    std::mem::forget(p);
                }
                out.push("resources_leaked", 2000.0);
                out.emit()
            }
            "log-flood" => {
                out.emit()?;
                for i in 0..10_000 {
                    sotp_guest::log::info(&format!("flood {i}"));
                    println!("stdout flood {i}");
                }
                Ok(())
            }
            "scratch" => {
                let path = "/scratch/counter";
                let count = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                let saved = std::fs::write(path, count.to_string());
                if let Err(e) = &saved {
                    sotp_guest::log::warn(&format!("writing {path}: {e}"));
                }
                out.push(
                    "scratch_counter",
                    if saved.is_ok() { count as f64 } else { -1.0 },
                );
                let big = std::fs::write("/scratch/big", vec![7u8; self.bytes]);
                if let Err(e) = &big {
                    sotp_guest::log::warn(&format!("writing {} bytes: {e}", self.bytes));
                }
                out.push("scratch_big_written", if big.is_ok() { 1.0 } else { 0.0 });
                let _ = std::fs::remove_file("/scratch/big");
                out.emit()
            }
            "sleep" => {
                out.emit()?;
                std::thread::sleep(std::time::Duration::from_secs(3600));
                out.push("slept", 1.0);
                out.emit()
            }
            "backup" => {
                sotp_guest::backups::store(&self.target, "hostname edge1\n")
                    .map_err(|e| sotp_guest::describe(&e))?;
                out.emit()
            }
            other => Err(format!("unknown mode {other}")),
        }
    }
}

sotp_guest::collector!(Attacker);
