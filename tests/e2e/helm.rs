//! The Helm chart (deploy/helm/sotp) checked without a cluster: `helm lint`, then `helm
//! template` with the defaults and with inlets as a DaemonSet, every object decoded strictly
//! into the Kubernetes API's Go types by deploy/helm/validate (unknown or mistyped fields
//! fail), and the sotp.toml each role gets read by `sotp run --print-config` (unknown keys
//! fail there). A wrong `inlet.kind` fails the render with the chart's own message.

use sotp_tests::harness::deps_binary;
use std::path::Path;
use std::process::{Command, Stdio};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(deps_binary("helm-"))
        .args(args)
        .output()
        .expect("running helm (scripts/setup installs it)")
}

/// deploy/helm/validate, built by Go (its modules from the Go proxy, once).
fn validator(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("k8s-validate");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(format!("{ROOT}/deploy/helm/validate"))
        .output()
        .expect("running go build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Render with `sets`, validate every object, and return (the validator's report, the
/// directory holding the ConfigMaps' files).
fn render(validate: &Path, sets: &[&str]) -> (String, tempfile::TempDir) {
    let chart = format!("{ROOT}/deploy/helm/sotp");
    let mut args = vec!["template", "flows", chart.as_str()];
    for s in sets {
        args.extend(["--set", s]);
    }
    let rendered = helm(&args);
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let configs = tempfile::tempdir().unwrap();
    let mut check = Command::new(validate)
        .arg("-configmaps")
        .arg(configs.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(&rendered.stdout)
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    (report, configs)
}

fn sotp_reads(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sotp"))
        .args(["run", "--print-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_chart_renders_valid_kubernetes_objects_and_configs_sotp_reads() {
    let lint = helm(&["lint", &format!("{ROOT}/deploy/helm/sotp")]);
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let tools = tempfile::tempdir().unwrap();
    let validate = validator(tools.path());

    let (report, configs) = render(&validate, &["exporters.10\\.0\\.0\\.0/8=acme"]);
    for kind in [
        "apps/v1/Deployment flows-sotp-inlet",
        "v1/Service flows-sotp-inlet",
        "apps/v1/StatefulSet flows-sotp-store",
        "v1/Service flows-sotp-store",
        "policy/v1/PodDisruptionBudget flows-sotp-store",
        "v1/ConfigMap flows-sotp",
    ] {
        assert!(
            report.contains(&format!("ok {kind}")),
            "{kind} missing:\n{report}"
        );
    }
    let inlet = sotp_reads(&configs.path().join("inlet.toml"));
    assert!(inlet.contains("role = \"inlet\""), "{inlet}");
    assert!(inlet.contains("\"10.0.0.0/8\" = \"acme\""), "{inlet}");
    let store = sotp_reads(&configs.path().join("store.toml"));
    assert!(
        store.contains("role = \"store\"") && store.contains("group = \"sotp-store\""),
        "{store}"
    );

    // Stores that ask each other: every store's address, the token from a Secret.
    let (report, configs) = render(&validate, &["store.peerTokenSecret=sotp-peer"]);
    assert!(
        report.contains("ok apps/v1/StatefulSet flows-sotp-store"),
        "{report}"
    );
    let store = sotp_reads(&configs.path().join("store.toml"));
    for i in 0..2 {
        let peer = format!("http://flows-sotp-store-{i}.flows-sotp-store:8787");
        assert!(store.contains(&peer), "{peer} in {store}");
    }

    // Inlets as a DaemonSet: no Service, the listeners on the nodes' ports.
    let (report, _) = render(&validate, &["inlet.kind=DaemonSet"]);
    assert!(
        report.contains("ok apps/v1/DaemonSet flows-sotp-inlet"),
        "{report}"
    );
    assert!(!report.contains("v1/Service flows-sotp-inlet"), "{report}");

    let wrong = helm(&[
        "template",
        "flows",
        &format!("{ROOT}/deploy/helm/sotp"),
        "--set",
        "inlet.kind=Job",
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("inlet.kind must be Deployment or DaemonSet")
    );
}
