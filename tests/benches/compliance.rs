//! Compliance audit benchmark, three parts on the same generated configs (IOS-style, ~1,900
//! lines each: 180 access ports, VLANs, an ACL, OSPF, vty lines, NTP, SNMP; a few deviations
//! per device):
//!
//! 1. **YAML rules**: 50 rules (exact and regex, nested sections, intended lines from Jinja2
//!    templates, an ordered ACL) audit every device on all cores (`audit::audit`, as a
//!    tenant's audit runs them); median of 3, wall and CPU time.
//! 2. **A rule component against the same logic natively**: `policies/ntp-servers` (Rust,
//!    built for wasm32-wasip2) uploaded to a SOTP `Runtime` in a temp dir and audited through
//!    `Runtime::rule_components` — the `ActiveRule` an audit uses, its pool of instances, on
//!    all cores — against the same source file (`#[path]`-included, compiled natively against
//!    the small stand-in for the rule SDK below) as a native `RuleComponent`, over every
//!    device; instances are started before the clock runs (evaluation only, no compiling or
//!    instantiating). Alternating rounds, median of the per-round ratios. The Wasm side also
//!    pays the boundary: the config copied into the guest, the device's variables as JSON
//!    (the WIT record carries them so), the findings copied out.
//! 3. **hier_config side by side** (PyPI `hier-config`, in the venv `scripts/setup` makes):
//!    for a subset of the devices (`--hier-devices`, default 1,000: all 10,000 take hier_config
//!    about ten minutes here), the running configs and each device's intended (golden) config
//!    are written to a JSONL file and `hier_config_audit.py` builds both trees and the
//!    remediation (`WorkflowRemediation`) for every device, on all cores. SOTP does the same
//!    comparison: one rule whose `intended` is the device's whole golden config (a variable
//!    holding the text, so both sides start from the same two texts), every running line not
//!    intended being extra — a whole-config diff with remediation, like hier_config's. For
//!    context, the 50 rules' audit of the same subset is printed too: it checks less than a
//!    whole-config diff (what the rules name), which is what a rule file is for.
//!
//! `cargo bench -p sotp-tests --bench compliance [-- DEVICES] [--hier-devices N] [--no-hier]`
//! (default 10,000 devices).

// The rule component's source, compiled natively: its `use sotp_rule::...` finds the
// stand-in SDK at this crate's root.
extern crate self as sotp_rule;

#[path = "../../policies/ntp-servers/src/lib.rs"]
mod ntp_servers;

pub use rule_sdk::{Device, Finding, Rule};
pub use serde_json;

use sotp_runtime::compliance::audit::{DeviceInput, Report, audit};
use sotp_runtime::compliance::evaluate::Status;
use sotp_runtime::compliance::rules::{RuleSet, compile};
use sotp_runtime::compliance::{ComponentFinding, RuleComponent};
use sotp_runtime::inventory;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The rule SDK's API (`guests/rule-sdk`) for native code: the same types and the same
/// `Finding` helpers, without the WIT bindings.
mod rule_sdk {
    pub trait Rule: Sized + 'static {
        fn init(config: &serde_json::Value) -> Result<Self, String>;
        fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String>;
    }

    /// A rule behind a pointer (what `rule!` makes).
    pub trait DynRule: Send {
        fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String>;
    }

    impl<R: Rule + Send> DynRule for R {
        fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String> {
            Rule::evaluate(self, device, config)
        }
    }

    /// The WIT record's field the rule reads: the variables, natively rather than as JSON
    /// text.
    pub struct Device {
        pub vars: serde_json::Value,
    }

    impl Device {
        pub fn vars(&self) -> serde_json::Value {
            self.vars.clone()
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Status {
        Compliant,
        Missing,
        Extra,
        Error,
    }

    #[derive(Clone, Debug)]
    pub struct Finding {
        pub rule: String,
        pub feature: String,
        pub status: Status,
        pub lines: Vec<String>,
        pub message: String,
        pub remediation: Vec<String>,
    }

    // As in guests/rule-sdk/src/lib.rs.
    impl Finding {
        pub fn compliant(rule: &str, feature: &str) -> Finding {
            Finding {
                rule: rule.into(),
                feature: feature.into(),
                status: Status::Compliant,
                lines: Vec::new(),
                message: String::new(),
                remediation: Vec::new(),
            }
        }

        pub fn from_lines(
            rule: &str,
            feature: &str,
            missing: Vec<String>,
            extra: Vec<String>,
            remove: impl Fn(&str) -> String,
        ) -> Finding {
            let mut f = Finding::compliant(rule, feature);
            if missing.is_empty() && extra.is_empty() {
                return f;
            }
            f.remediation = extra
                .iter()
                .map(|l| remove(l))
                .chain(missing.iter().cloned())
                .collect();
            f.status = if missing.is_empty() {
                Status::Extra
            } else {
                Status::Missing
            };
            f.message = match (missing.len(), extra.len()) {
                (0, e) => format!("{e} line(s) that should not be there"),
                (m, 0) => format!("{m} line(s) missing"),
                (m, e) => format!("{m} line(s) missing, {e} that should not be there"),
            };
            f.lines = missing.into_iter().chain(extra).collect();
            f
        }

        pub fn error(rule: &str, feature: &str, message: impl Into<String>) -> Finding {
            let mut f = Finding::compliant(rule, feature);
            f.status = Status::Error;
            f.message = message.into();
            f
        }
    }
}

/// `sotp_rule::rule!(Type)`, natively: `native_rule(config)` builds the rule.
#[macro_export]
macro_rules! rule {
    ($ty:ty) => {
        pub fn native_rule(
            config: &$crate::serde_json::Value,
        ) -> Result<Box<dyn $crate::rule_sdk::DynRule>, String> {
            Ok(Box::new(<$ty as $crate::Rule>::init(config)?))
        }
    };
}

/// A native rule as an audit calls rule components: one instance per core, as the Wasm
/// component's pool has (`instance::pool_size`), each taken by one evaluation at a time.
struct NativeRule {
    name: String,
    instances: Vec<Mutex<Box<dyn rule_sdk::DynRule>>>,
}

impl RuleComponent for NativeRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn source(&self) -> String {
        format!("native:{}", self.name)
    }

    fn evaluate(
        &self,
        device: &inventory::Device,
        config: &str,
    ) -> Result<Vec<ComponentFinding>, String> {
        let device = Device {
            vars: serde_json::Value::Object(device.vars.clone()),
        };
        let mut rule = self
            .instances
            .iter()
            .find_map(|i| i.try_lock().ok())
            .unwrap_or_else(|| self.instances[0].lock().unwrap());
        let findings = rule.evaluate(&device, config)?;
        // As `ActiveRule` turns WIT findings into the audit's.
        Ok(findings
            .into_iter()
            .map(|f| ComponentFinding {
                feature: if f.feature.is_empty() {
                    f.rule.clone()
                } else {
                    f.feature
                },
                rule: f.rule,
                status: match f.status {
                    rule_sdk::Status::Compliant => Status::Compliant,
                    rule_sdk::Status::Missing => Status::Missing,
                    rule_sdk::Status::Extra => Status::Extra,
                    rule_sdk::Status::Error => Status::Error,
                },
                lines: f.lines,
                message: f.message,
                remediation: f.remediation,
            })
            .collect())
    }
}

/// ~1,900 lines: 180 interfaces of 9 lines, ACLs, routing, management. `deviate`: with a few
/// deviations per device so the audit finds something; without: the device's golden config.
fn config(i: usize, deviate: bool) -> String {
    let mut c = String::with_capacity(64 * 1024);
    c.push_str(&format!(
        "!\nversion 15.2\nservice timestamps debug datetime msec\nhostname r{i}\n!\n"
    ));
    c.push_str("username admin privilege 15 secret 9 $9$abcdefgh$ijklmnop\n!\n");
    for p in 0..180 {
        c.push_str(&format!(
            "interface GigabitEthernet0/{p}\n description port-{p}\n switchport mode access\n switchport access vlan {}\n spanning-tree portfast\n ip dhcp snooping limit rate 15\n storm-control broadcast level 1.00\n no cdp enable\n{}!\n",
            10 + p % 20,
            if deviate && i.is_multiple_of(5) && (i + p).is_multiple_of(97) {
                " shutdown\n"
            } else {
                " no shutdown\n"
            }
        ));
    }
    for v in 0..20 {
        c.push_str(&format!("vlan {}\n name users-{v}\n!\n", 10 + v));
    }
    c.push_str("ip access-list extended MGMT\n permit tcp 10.99.0.0 0.0.0.255 any eq 22\n deny ip any any log\n!\n");
    c.push_str(&format!(
        "router ospf 1\n router-id 10.255.{}.{}\n passive-interface default\n network 10.0.0.0 0.255.255.255 area 0\n!\n",
        i / 256 % 256,
        i % 256
    ));
    c.push_str("line vty 0 4\n access-class MGMT in\n transport input ssh\n");
    c.push_str(if deviate && i.is_multiple_of(10) {
        "line vty 5 15\n transport input telnet ssh\n"
    } else {
        "line vty 5 15\n transport input ssh\n"
    });
    c.push_str("!\nntp server 10.0.0.1\n");
    if deviate && i.is_multiple_of(7) {
        c.push_str("ntp server 10.9.9.9\n");
    } else {
        c.push_str("ntp server 10.0.0.2\n");
    }
    if deviate && i.is_multiple_of(13) {
        c.push_str("snmp-server community public RO\n");
    }
    c.push_str("logging host 10.0.0.50\nend\n");
    c
}

/// 50 rules: 5 kinds × 10 variants.
fn rules() -> String {
    let mut r = String::from("vars: { ntp_servers: [10.0.0.1, 10.0.0.2] }\nrules:\n");
    for k in 0..10 {
        r.push_str(&format!(
            "  - id: ntp-{k}\n    feature: time\n    intended: |\n      {{% for s in ntp_servers %}}ntp server {{{{ s }}}}\n      {{% endfor %}}\n    lines_like: '^ntp server '\n"
        ));
        r.push_str(&format!(
            "  - id: vty-{k}\n    feature: management\n    match: regex\n    section: ['line vty .*']\n    required: ['transport input ssh']\n    forbidden: ['transport input (telnet|all).*']\n"
        ));
        r.push_str(&format!(
            "  - id: port-{k}\n    feature: interfaces\n    match: regex\n    section: ['interface GigabitEthernet0/{k}[0-9]*']\n    required: ['spanning-tree portfast', 'no cdp enable']\n    forbidden: ['shutdown']\n"
        ));
        r.push_str(&format!(
            "  - id: snmp-{k}\n    feature: management\n    match: regex\n    forbidden: ['snmp-server community .*']\n"
        ));
        r.push_str(&format!(
            "  - id: acl-{k}\n    feature: management\n    section: ['ip access-list extended MGMT']\n    ordered: true\n    required: ['permit tcp 10.99.0.0 0.0.0.255 any eq 22', 'deny ip any any log']\n"
        ));
    }
    r
}

/// The whole-config diff, as one rule: the device's golden config (variable `golden`) is
/// the intended top level, and every running line it does not hold is extra.
const WHOLE_CONFIG: &str = "rules:\n  - id: whole-config\n    intended: '{{ golden }}'\n";

/// Device `i` of the inventory, with its NTP servers (the rule component's scope) and, if
/// given, its golden config.
fn device(i: usize, golden: Option<String>) -> inventory::Device {
    let mut vars = serde_json::json!({ "ntp_servers": ["10.0.0.1", "10.0.0.2"] });
    if let Some(golden) = golden {
        vars["golden"] = golden.into();
    }
    serde_json::from_value(serde_json::json!({
        "name": format!("r{i}"), "address": "192.0.2.1", "platform": "ios", "vars": vars
    }))
    .unwrap()
}

/// Devices `0..n`, each loading its config from `configs` when its turn comes (as from Git).
fn inputs(configs: &Arc<Vec<String>>, n: usize, golden: bool) -> Vec<DeviceInput> {
    (0..n)
        .map(|i| {
            let configs = configs.clone();
            DeviceInput {
                device: device(i, golden.then(|| config(i, false))),
                backup: Box::new(move || Ok((format!("c{i}"), configs[i].clone()))),
            }
        })
        .collect()
}

/// Median wall and CPU seconds of `runs` audits, and the last report.
fn timed(
    runs: usize,
    sets: &[Arc<RuleSet>],
    components: &[Arc<dyn RuleComponent>],
    inputs: &[DeviceInput],
) -> (f64, f64, Report) {
    let done = AtomicUsize::new(0);
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds());
        let report = audit(sets, components, inputs, &[], 0, &done);
        times.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c);
        last = Some(report);
    }
    (median(&mut times), median(&mut cpu), last.unwrap())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Args {
    devices: usize,
    hier_devices: usize,
    hier: bool,
}

fn args() -> Args {
    let mut args = Args {
        devices: 10_000,
        hier_devices: 1_000,
        hier: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hier-devices" => {
                args.hier_devices = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--hier-devices N");
            }
            "--no-hier" => args.hier = false,
            _ => {
                if let Ok(n) = a.parse() {
                    args.devices = n;
                }
            }
        }
    }
    args.hier_devices = args.hier_devices.min(args.devices);
    args
}

fn main() {
    let args = args();
    let devices = args.devices;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    // Configs are made once; an audit loads each when its turn comes (as from Git).
    let configs: Arc<Vec<String>> = Arc::new((0..devices).map(|i| config(i, true)).collect());
    let lines: usize = configs.iter().map(|c| c.lines().count()).sum();
    let all = inputs(&configs, devices, false);
    println!(
        "generated {devices} configs, {:.0} lines each, in {:.1} s; {threads} threads",
        lines as f64 / devices as f64,
        t.elapsed().as_secs_f64()
    );

    // 1. The YAML rules.
    let set = Arc::new(compile("bench.yaml", 1, &rules()).unwrap());
    let (wall, cpu, report) = timed(3, std::slice::from_ref(&set), &[], &all);
    println!(
        "\n1. YAML rules: {} rules x {devices} devices, full audit: median {wall:.2} s of 3 ({:.1} µs per device and rule), CPU {cpu:.2} s; {} of {} devices compliant; report digest {:016x}",
        set.rules.len(),
        wall * 1e6 / (devices * set.rules.len()) as f64,
        report.summary.compliant_devices,
        report.summary.devices,
        digest(&report)
    );
    drop(report);

    // 2. The rule component, Wasm and native.
    rule_component(&all);

    // 3. hier_config.
    if args.hier {
        hier_config(&configs, &all[..args.hier_devices], &set);
    }
}

/// Part 2: `policies/ntp-servers` as a Wasm rule component in a real `Runtime`, and the same
/// source natively, over every device.
fn rule_component(inputs: &[DeviceInput]) {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/ntp-servers/sotp.toml"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = tokio.block_on(async {
        let runtime = sotp_runtime::Runtime::open(sotp_runtime::RuntimeConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        runtime.restore().await;
        runtime
            .create_tenant("bench", sotp_runtime::TenantSpec::default())
            .unwrap();
        let wasm = std::fs::read(sotp_tests::guests::NTP_SERVERS).unwrap();
        runtime
            .upload("bench", &manifest, &wasm, true, sotp_runtime::Scopes::all())
            .await
            .unwrap();
        runtime
    });
    let wasm = runtime.rule_components("bench");
    assert_eq!(wasm.len(), 1, "the ntp-servers component is active");
    let config: toml::Value = toml::from_str(&manifest).unwrap();
    let config = serde_json::to_value(&config["config"]).unwrap();
    let pool = sotp_runtime::instance::pool_size(sotp_runtime::manifest::World::ComplianceRule);
    let native: Vec<Arc<dyn RuleComponent>> = vec![Arc::new(NativeRule {
        name: "ntp-servers".into(),
        instances: (0..pool)
            .map(|_| Mutex::new(ntp_servers::native_rule(&config).unwrap()))
            .collect(),
    })];
    // Start the pool's instances (and warm both sides) before the clock runs.
    let warm = &inputs[..inputs.len().min(200)];
    timed(1, &[], &wasm, warm);
    timed(1, &[], &native, warm);
    let (mut w, mut n, mut wc, mut nc, mut ratios) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut wasm_report, mut native_report) = (None, None);
    for _ in 0..5 {
        let (wall_n, cpu_n, report_n) = timed(1, &[], &native, inputs);
        let (wall_w, cpu_w, report_w) = timed(1, &[], &wasm, inputs);
        ratios.push(wall_w / wall_n);
        w.push(wall_w);
        n.push(wall_n);
        wc.push(cpu_w);
        nc.push(cpu_n);
        (wasm_report, native_report) = (Some(report_w), Some(report_n));
    }
    let (wasm_report, native_report) = (wasm_report.unwrap(), native_report.unwrap());
    let same = same_findings(&wasm_report, &native_report);
    let (w, n) = (median(&mut w), median(&mut n));
    let (wc, nc) = (median(&mut wc), median(&mut nc));
    let devices = inputs.len();
    println!(
        "\n2. Rule component `ntp-servers` over {devices} devices, {pool} instances: Wasm {w:.3} s ({:.1} µs per device, CPU {wc:.2} s), native {n:.3} s ({:.1} µs per device, CPU {nc:.2} s)",
        w * 1e6 / devices as f64,
        n * 1e6 / devices as f64,
    );
    println!(
        "   Wasm / native: {:.2}x wall (median of 5 alternating rounds), {:.2}x CPU; same findings on every device: {same}; {} of {devices} devices compliant",
        median(&mut ratios),
        wc / nc,
        wasm_report.summary.compliant_devices
    );
    runtime.shutdown();
    drop(tokio);
}

/// Whether two reports found the same on every device (their sources aside).
fn same_findings(a: &Report, b: &Report) -> bool {
    a.devices.len() == b.devices.len()
        && a.devices.iter().zip(&b.devices).all(|(x, y)| {
            x.device == y.device
                && x.compliant == y.compliant
                && x.remediation == y.remediation
                && x.results.len() == y.results.len()
                && x.results.iter().zip(&y.results).all(|(r, s)| {
                    (
                        &r.rule, &r.feature, r.status, &r.missing, &r.extra, &r.message,
                    ) == (
                        &s.rule, &s.feature, s.status, &s.missing, &s.extra, &s.message,
                    )
                })
        })
}

/// Part 3: hier_config's whole-config diff and remediation against SOTP's, on the devices of
/// `plain` (the first ones).
fn hier_config(configs: &Arc<Vec<String>>, plain: &[DeviceInput], rules: &Arc<RuleSet>) {
    let n = plain.len();
    let deps = std::env::var_os("SOTP_DEPS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/sotp/deps")
        });
    let python = deps.join("python-venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/hier_config_audit.py");
    println!("\n3. hier_config side by side, the first {n} devices:");

    // SOTP: the same comparison, and the 50 rules for context.
    let whole = Arc::new(compile("whole.yaml", 1, WHOLE_CONFIG).unwrap());
    let subset = inputs(configs, n, true);
    let (wall, cpu, report) = timed(3, std::slice::from_ref(&whole), &[], &subset);
    let sotp_lines: usize = report.devices.iter().map(|d| d.remediation.len()).sum();
    let sotp_changed = report.devices.iter().filter(|d| !d.compliant).count();
    println!(
        "   SOTP, whole-config diff (1 rule, intended = the golden config): median {wall:.3} s of 3 ({:.0} µs per device), CPU {cpu:.2} s; {sotp_changed} devices to change, {sotp_lines} remediation lines",
        wall * 1e6 / n as f64
    );
    let (rules_wall, _, _) = timed(3, std::slice::from_ref(rules), &[], plain);
    println!(
        "   SOTP, the {} YAML rules of part 1 on the same devices: median {rules_wall:.3} s of 3",
        rules.rules.len()
    );
    drop(subset);

    if !python.exists() {
        println!(
            "   hier_config: not run: {} is missing. scripts/setup installs it (a venv with hier-config 3.7.1); then run this bench again.",
            python.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("configs.jsonl");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
        for (i, running) in configs.iter().take(n).enumerate() {
            let line = serde_json::json!({
                "name": format!("r{i}"), "running": running, "golden": config(i, false)
            });
            writeln!(out, "{line}").unwrap();
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(&jsonl)
        .arg(threads.to_string())
        .output()
        .expect("running hier_config_audit.py");
    if !output.status.success() {
        println!(
            "   hier_config: the script failed (is hier-config installed in {}? scripts/setup installs it):\n{}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let seconds = result["seconds"].as_f64().unwrap();
    println!(
        "   hier_config {} (WorkflowRemediation, {} processes): {seconds:.1} s ({:.0} µs per device); {} devices to change, {} remediation lines",
        result["hier_config"].as_str().unwrap_or("?"),
        result["jobs"],
        seconds * 1e6 / n as f64,
        result["devices_with_changes"],
        result["remediation_lines"]
    );
    println!(
        "   hier_config / SOTP: {:.0}x the whole-config diff, {:.0}x the 50-rule audit (wall, both on all cores)",
        seconds / wall,
        seconds / rules_wall
    );
}

/// A hash of the whole report (every result, line and remediation): equal digests from two
/// builds mean they found the same things.
fn digest(report: &Report) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(report).unwrap().hash(&mut h);
    h.finish()
}

/// CPU time (user + system) of this process so far: what the work cost, whatever else the
/// machine runs at the time.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
