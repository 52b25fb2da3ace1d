//! SSH and configuration backups in Git against a real lab: OpenSSH with vtysh as the login
//! shell on FRR routers in network namespaces (needs root, like every lab test).

use serde_json::json;
use sotp_labs::lab;
use sotp_tests::guests::{ATTACKER, SSH_CONFIG_BACKUP};
use sotp_tests::harness::{Api, Server, basic_lab};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn history_len(api: &Api, device: &str) -> usize {
    let (status, body) = api.get(&format!("/v1/backups/{device}"));
    if status != 200 {
        return 0;
    }
    body["revisions"].as_array().unwrap().len()
}

fn text(api: &Api, path: &str) -> String {
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    resp.text().unwrap()
}

/// Ticks of the backup component seen so far.
fn ticks(api: &Api) -> u64 {
    api.component("ssh-config-backup")["counters"]["calls"]["tick"]
        .as_u64()
        .unwrap()
}

fn wait_ticks(api: &Api, n: u64) {
    let start = ticks(api);
    api.wait_for(
        &format!("{n} more backup runs"),
        Duration::from_secs(60),
        |api| (ticks(api) >= start + n).then_some(()),
    );
}

#[test]
fn running_configs_are_backed_up_into_git_with_history_and_diffs() {
    let lab = basic_lab(23);
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let key = std::fs::read_to_string(lab.ssh_key()).unwrap();
    for (name, value) in [
        ("lab-ssh", lab::SSH_PASSWORD),
        ("lab-key", key.as_str()),
        ("wrong", "nope"),
    ] {
        assert_eq!(
            acme.put(&format!("/v1/secrets/{name}"), json!({ "value": value }))
                .0,
            204
        );
    }
    let addr = |n: &str| lab.node(n).unwrap().management_address.to_string();
    let device = |name: &str, ssh: serde_json::Value, tags: &[&str]| json!({ "name": name, "address": addr(name), "platform": "frr", "tags": tags, "ssh": ssh });
    let devices = json!([
        device(
            "core1",
            json!({ "user": lab::SSH_USER, "password_secret": "lab-ssh" }),
            &["backup"]
        ),
        device(
            "access1",
            json!({ "user": lab::SSH_USER, "key_secret": "lab-key" }),
            &["backup"]
        ),
        device(
            "access2",
            json!({ "user": lab::SSH_USER, "password_secret": "lab-ssh" }),
            &["backup"]
        ),
        // The same router under another name, with a wrong password.
        json!({ "name": "access2-bad", "address": addr("access2"), "tags": ["backup"],
                "ssh": { "user": lab::SSH_USER, "password_secret": "wrong" } }),
    ]);
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/devices/import", acme.base))
        .bearer_auth(&acme.token)
        .header("content-type", "application/json")
        .body(devices.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());

    let manifest = "name = \"ssh-config-backup\"\nversion = \"1\"\nworld = \"collector\"\n\
        [schedule]\nevery = \"2s\"\n[limits]\ncpu_ms = 500\n[grants]\ndevices = [\"tag:backup\"]\n";
    acme.push(manifest, SSH_CONFIG_BACKUP);

    // Every lab router's FRR running config is in Git (password and key auth).
    acme.wait_for("first backups", Duration::from_secs(60), |api| {
        ["core1", "access1", "access2"]
            .iter()
            .all(|d| history_len(api, d) == 1)
            .then_some(())
    });
    let (_, list) = acme.get("/v1/backups");
    assert_eq!(list["devices"].as_array().unwrap().len(), 3, "{list}");
    let config = text(&acme, "/v1/backups/access1/text");
    assert!(
        config.contains("hostname access1") && config.contains("router ospf"),
        "{config}"
    );
    assert!(
        !config.contains("Building configuration"),
        "volatile lines are dropped"
    );

    // Unchanged configs make no commit, however often they are fetched.
    wait_ticks(&acme, 2);
    assert_eq!(history_len(&acme, "core1"), 1);
    assert_eq!(history_len(&acme, "access1"), 1);

    // A change on the router (vtysh configure) makes a second commit, and the diff shows it.
    lab.vtysh(
        "access1",
        &[
            "configure terminal",
            "interface eth1",
            "description uplink-to-core1",
        ],
    )
    .unwrap();
    acme.wait_for("the second commit", Duration::from_secs(30), |api| {
        (history_len(api, "access1") == 2).then_some(())
    });
    let diff = text(&acme, "/v1/backups/access1/diff");
    assert!(diff.contains("+ description uplink-to-core1"), "{diff}");
    let (_, history) = acme.get("/v1/backups/access1");
    let revisions = history["revisions"].as_array().unwrap();
    assert!(
        revisions[0]["author"]
            .as_str()
            .unwrap()
            .starts_with("ssh-config-backup")
    );
    let first = revisions[1]["commit"].as_str().unwrap();
    let old = text(&acme, &format!("/v1/backups/access1/text?at={first}"));
    assert!(
        !old.contains("uplink-to-core1"),
        "the text at the first revision is the old one"
    );
    assert_eq!(
        history_len(&acme, "core1"),
        1,
        "other devices are untouched"
    );

    // A wrong password is a clear error in the component's status.
    let view = acme.component("ssh-config-backup");
    let err = view["last_error"]["message"].as_str().unwrap();
    assert!(
        err.contains("access2-bad") && err.contains("authentication"),
        "{err}"
    );
    assert_eq!(history_len(&acme, "access2-bad"), 0);

    // A changed host key is refused, and says how to accept a legitimate change.
    lab.regenerate_ssh_host_key("core1").unwrap();
    let err = acme.wait_for("the host key refusal", Duration::from_secs(30), |api| {
        let v = api.component("ssh-config-backup");
        v["last_error"]["message"]
            .as_str()
            .filter(|m| m.contains("host key of core1 changed"))
            .map(str::to_string)
    });
    assert!(err.contains("forget-host-key core1"), "{err}");
    assert_eq!(acme.delete("/v1/devices/core1/ssh-host-key").0, 204);
    let before = ticks(&acme);
    acme.wait_for("core1 backed up again", Duration::from_secs(30), |api| {
        let v = api.component("ssh-config-backup");
        let ok = !v["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("core1");
        (ticks(api) > before + 1 && ok).then_some(())
    });
    assert_eq!(
        history_len(&acme, "core1"),
        1,
        "same config, new key: still no new commit"
    );
}

#[test]
fn ssh_to_a_device_outside_the_grants_is_denied() {
    let lab = basic_lab(24);
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/lab-ssh", json!({ "value": lab::SSH_PASSWORD }))
            .0,
        204
    );
    for name in ["core1", "access1"] {
        let d = json!({ "name": name, "address": lab.node(name).unwrap().management_address.to_string(),
            "ssh": { "user": lab::SSH_USER, "password_secret": "lab-ssh" } });
        assert_eq!(acme.put(&format!("/v1/devices/{name}"), d).0, 201);
    }
    let probe = |name: &str, target: &str| {
        format!(
            "name = \"{name}\"\nversion = \"1\"\nworld = \"collector\"\n[schedule]\nevery = \"500ms\"\n\
             [grants]\ndevices = [\"core1\"]\n[config]\nmode = \"ssh\"\ntarget = \"{target}\"\n"
        )
    };
    acme.push(&probe("allowed", "core1"), ATTACKER);
    acme.push(&probe("refused", "access1"), ATTACKER);
    let results = acme.wait_for("both probes", Duration::from_secs(30), |api| {
        let pts = api.points("ssh_result", "10m");
        let get = |t: &str| pts.iter().find(|(l, _, _)| l["target"] == t).map(|p| p.2);
        get("core1").zip(get("access1"))
    });
    assert_eq!(
        results,
        (1.0, 0.0),
        "granted device answered, the other was denied"
    );
    assert!(
        acme.component("refused")["counters"]["denied"]
            .as_u64()
            .unwrap()
            >= 1
    );
}
