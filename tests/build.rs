//! Build the guest components for wasm32-wasip2 and hand their paths to the tests as
//! constants (`sotp_tests::guests::TICK_COUNTER`, ...), in the manner of wasmtime's
//! `crates/test-programs/artifacts/build.rs`.
//!
//! The guests are their own workspace (`guests/Cargo.toml`) with their own target dir, so
//! this nested cargo never waits on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("TICK_COUNTER", "tick_counter"),
    ("ATTACKER", "attacker"),
    ("WRONG_WORLD", "wrong_world"),
    ("BENCH_GUEST", "bench_guest"),
    ("MQTT_SENSORS", "mqtt_sensors"),
    ("SNMP_INTERFACES", "snmp_interfaces"),
    ("SSH_CONFIG_BACKUP", "ssh_config_backup"),
    ("NTP_SERVERS", "ntp_servers"),
    ("EVIL_RULE", "evil_rule"),
    ("VTY_SSH_ONLY", "vty_ssh_only"),
    ("SNMP_V3_ONLY", "snmp_v3_only"),
    ("INTERFACE_DESCRIPTIONS", "interface_descriptions"),
    ("TOPOLOGY_CORRELATION", "topology_correlation"),
    ("EVIL_POLICY", "evil_policy"),
    ("HTTP_CHECK", "http_check"),
    ("LOGIN_FLOW", "login_flow"),
    ("PROMETHEUS_SCRAPE", "prometheus_scrape"),
    ("CLOUDWATCH", "cloudwatch"),
    ("AZURE_MONITOR", "azure_monitor"),
];

/// Python rule components (`policies/*-py`), built by `scripts/build-python-rules`.
const PYTHON_GUESTS: &[(&str, &str)] = &[("SNMP_V3_ONLY_PY", "snmp_v3_only_py")];

fn main() {
    // Benches and tests here link the runtime, hence libduckdb: find it at run time too.
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in [
        "wit",
        "guests/sdk",
        "guests/tick-counter",
        "guests/bench-guest",
        "guests/mqtt-sensors",
        "guests/snmp-interfaces",
        "guests/ssh-config-backup",
        "guests/http-check",
        "guests/login-flow",
        "guests/prometheus-scrape",
        "guests/cloudwatch",
        "guests/azure-monitor",
        "guests/rule-sdk",
        "guests/policy-sdk",
        "policies",
        "scripts/build-python-rules",
        "tests/guests",
        "guests/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = guest_target_dir(&root);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(root.join("guests/Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guest components failed; is the wasm32-wasip2 target installed? \
             (rustup target add wasm32-wasip2, or run scripts/setup)"
        );
    }
    let out_dir = target_dir.join("wasm32-wasip2/release");
    let mut consts = String::new();
    for (name, file) in GUESTS {
        let path = out_dir.join(format!("{file}.wasm"));
        assert!(path.exists(), "guest {} was not built", path.display());
        consts.push_str(&format!(
            "/// Path of the built `{file}` component.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let python_dir = target_dir.join("python");
    let status = Command::new("bash")
        .arg(root.join("scripts/build-python-rules"))
        .env("SOTP_PYTHON_OUT", &python_dir)
        .status()
        .expect("running scripts/build-python-rules");
    if !status.success() {
        panic!(
            "building the Python rule components failed; is componentize-py installed? \
             (scripts/setup installs it)"
        );
    }
    for (name, file) in PYTHON_GUESTS {
        let path = python_dir.join(format!("{file}.wasm"));
        assert!(path.exists(), "guest {} was not built", path.display());
        consts.push_str(&format!(
            "/// Path of the built `{file}` component (Python).\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
}

/// `$CARGO_TARGET_DIR/guests` (or `<root>/target/guests`).
fn guest_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => root.join("target/guests"),
    }
}
