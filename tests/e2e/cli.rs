//! The `sotp` command line against a running server: the README's tour, as a test.

use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::Server;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn sotp(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SOTP_SERVER", &server.base)
        .env("SOTP_TOKEN", token)
        .output()
        .expect("running sotp")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "sotp failed: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn the_tour_works_from_the_command_line() {
    let server = Server::start(BIN);
    let created = ok(sotp(
        &server,
        &server.admin_token,
        &["tenant", "create", "acme"],
    ));
    let token = created
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once): "))
        .expect("the tenant's token is printed")
        .trim()
        .to_string();
    assert!(ok(sotp(&server, &server.admin_token, &["tenant", "list"])).contains("acme"));

    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guests/tick-counter/sotp.toml"
    );
    let pushed = ok(sotp(
        &server,
        &token,
        &["component", "push", manifest, "--wasm", TICK_COUNTER],
    ));
    assert!(
        pushed.contains("tick-counter version 1 (1.0.0) uploaded"),
        "{pushed}"
    );
    assert!(pushed.contains("active now"), "{pushed}");
    assert!(ok(sotp(&server, &token, &["component", "list"])).contains("running"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let queried = loop {
        let out = ok(sotp(&server, &token, &["query", "ticks", "--since", "5m"]));
        if out.contains("ticks{component=tick-counter, marker=v1}") {
            break out;
        }
        assert!(Instant::now() < deadline, "no ticks through the CLI: {out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(queried.lines().count() >= 2, "{queried}");

    let shown = ok(sotp(
        &server,
        &token,
        &["component", "show", "tick-counter"],
    ));
    assert!(shown.contains("state       running"), "{shown}");
    let logs = ok(sotp(
        &server,
        &token,
        &["component", "logs", "tick-counter"],
    ));
    assert!(logs.contains("activated version 1"), "{logs}");

    let json = ok(sotp(&server, &token, &["component", "list", "--json"]));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed["components"][0]["name"], "tick-counter");

    // Mistakes are explained, with a non-zero exit.
    let failed = sotp(&server, &token, &["component", "rollback", "tick-counter"]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("no earlier active version"), "{err}");
    let failed = sotp(&server, "sotp_bogus", &["component", "list"]);
    assert!(String::from_utf8_lossy(&failed.stderr).contains("unauthorized"));

    // A read-only token for dashboards: it reads, it cannot deploy.
    let made = ok(sotp(
        &server,
        &token,
        &[
            "token",
            "create",
            "--name",
            "grafana",
            "--scope",
            "read",
            "--expires-in",
            "90d",
        ],
    ));
    let reader = made.split_whitespace().next().unwrap().to_string();
    assert!(ok(sotp(&server, &reader, &["component", "list"])).contains("tick-counter"));
    let refused = sotp(
        &server,
        &reader,
        &["component", "push", manifest, "--wasm", TICK_COUNTER],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("`deploy` scope"), "{err}");
    let listed = ok(sotp(&server, &token, &["token", "list"]));
    assert!(
        listed.contains("grafana") && listed.contains("read"),
        "{listed}"
    );
    // The tenant's quotas and usage.
    let usage = ok(sotp(&server, &token, &["tenant", "show"]));
    assert!(
        usage.contains("tenant acme") && usage.contains("of 100000"),
        "{usage}"
    );
}

#[test]
fn help_teaches() {
    let out = ok(Command::new(BIN).arg("--help").output().unwrap());
    assert!(out.contains("Examples:"), "{out}");
    for cmd in ["run", "component", "tenant", "query"] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    let push = ok(Command::new(BIN)
        .args(["component", "push", "--help"])
        .output()
        .unwrap());
    assert!(push.contains("sotp.toml"), "{push}");
    let run = ok(Command::new(BIN)
        .args(["run", "--print-config"])
        .env_remove("SOTP_CONFIG")
        .output()
        .unwrap());
    assert!(run.contains("listen = \"127.0.0.1:8787\""), "{run}");
}

#[test]
fn sotp_run_with_no_config_serves_healthz() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("SOTP_DATA_DIR")
        .env_remove("SOTP_LISTEN")
        .env_remove("SOTP_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok(r) = reqwest::blocking::get("http://127.0.0.1:8787/healthz") {
            break r.text().unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("sotp run exited with {status}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz on the default address"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("ok"), "{body}");
    let token = home.path().join(".local/share/sotp/admin.token");
    let mode = std::fs::metadata(&token)
        .expect("admin token in the default data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token file is private");
}

#[test]
fn compliance_from_the_command_line() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let token = acme.token.clone();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("base.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - id: hostname\n    intended: 'hostname {{ name }}'\n    lines_like: '^hostname '\n",
    )
    .unwrap();
    let out = ok(sotp(
        &server,
        &token,
        &["compliance", "push", rules.to_str().unwrap()],
    ));
    assert!(
        out.contains("base.yaml uploaded as version 1") && out.contains("active"),
        "{out}"
    );
    let devices = dir.path().join("devices.yaml");
    std::fs::write(
        &devices,
        "- {name: r1, address: 192.0.2.1, platform: frr}\n",
    )
    .unwrap();
    ok(sotp(
        &server,
        &token,
        &["device", "import", devices.to_str().unwrap()],
    ));
    let out = ok(sotp(&server, &token, &["compliance", "audit"]));
    assert!(out.contains("audit 1: 0 of 1 devices compliant"), "{out}");
    let out = ok(sotp(
        &server,
        &token,
        &["compliance", "report", "--device", "r1"],
    ));
    assert!(out.contains("error") && out.contains("no backup"), "{out}");
    // A bad rule file: the error points at the line and key, and the exit status says so.
    std::fs::write(&rules, "rules:\n  - id: x\n    requird: [y]\n").unwrap();
    let out = sotp(
        &server,
        &token,
        &["compliance", "push", rules.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("base.yaml:3:") && err.contains("requird"),
        "{err}"
    );
    let out = ok(sotp(&server, &token, &["compliance", "rules"]));
    assert!(
        out.contains("base.yaml") && out.contains("active 1"),
        "{out}"
    );
}
