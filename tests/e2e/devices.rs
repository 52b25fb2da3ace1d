//! The inventory and the SNMP capability against a real lab: net-snmp agents on FRR routers
//! in network namespaces (needs root, like every lab test).

use serde_json::{Value, json};
use sotp_labs::{Lab, lab};
use sotp_tests::guests::{ATTACKER, SNMP_INTERFACES};
use sotp_tests::harness::{Api, Server, basic_lab};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn secrets(api: &Api) {
    for (name, value) in [
        ("lab-community", lab::COMMUNITY),
        ("lab-v3-auth", lab::V3_AUTH),
        ("lab-v3-priv", lab::V3_PRIV),
        ("wrong-priv", "not-the-key"),
    ] {
        assert_eq!(
            api.put(&format!("/v1/secrets/{name}"), json!({ "value": value }))
                .0,
            204
        );
    }
}

/// core1 and access2 over v2c, access1 over v3 authPriv; `stranger` is not tagged `snmp`.
fn import(api: &Api, lab: &Lab) {
    let addr = |n: &str| lab.node(n).unwrap().management_address.to_string();
    let csv = format!(
        "name,address,platform,site,role,tags,parents,snmp_version,snmp_community_secret,snmp_user,snmp_auth_protocol,snmp_auth_secret,snmp_priv_protocol,snmp_priv_secret\n\
         core1,{},cisco-iosxe,lab,core,snmp;lab,,2c,lab-community,,,,,\n\
         access1,{},frr,lab,access,snmp;lab,core1,3,,{},sha,lab-v3-auth,aes,lab-v3-priv\n\
         access2,{},frr,lab,access,snmp;lab,core1,2c,lab-community,,,,,\n\
         stranger,{},frr,lab,access,lab,core1,2c,lab-community,,,,,\n",
        addr("core1"),
        addr("access1"),
        lab::V3_USER,
        addr("access2"),
        addr("access2"),
    );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/devices/import", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());
}

fn oper_status(api: &Api, device: &str, ifname: &str) -> Option<f64> {
    let body = api.query(&[
        ("metric", "if_oper_status"),
        ("match", &format!("device={device}")),
        ("match", &format!("ifname={ifname}")),
        ("since", "10m"),
    ]);
    body["series"][0]["points"]
        .as_array()?
        .last()
        .map(|p| p[1].as_f64().unwrap())
}

#[test]
fn snmp_interfaces_polls_the_lab_and_sees_a_link_go_down() {
    let lab = basic_lab(21);
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    secrets(&acme);
    import(&acme, &lab);

    // Inventory: credentials are secret names, never values; parents are checked.
    let (_, core) = acme.get("/v1/devices/core1");
    assert_eq!(core["snmp"]["community_secret"], "lab-community");
    assert!(!core.to_string().contains(lab::COMMUNITY));
    let (status, body) = acme.put(
        "/v1/devices/orphan",
        json!({ "name": "orphan", "address": "10.0.0.9", "parents": ["nowhere"] }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nowhere"));
    let (status, _) = acme.delete("/v1/devices/core1");
    assert_eq!(status, 409, "core1 has dependents");

    let manifest = "name = \"snmp-interfaces\"\nversion = \"1\"\nworld = \"collector\"\n\
        [schedule]\nevery = \"2s\"\n[limits]\ncpu_ms = 500\n[grants]\ndevices = [\"tag:snmp\"]\n";
    acme.push(manifest, SNMP_INTERFACES);

    // Real interfaces of every granted router, over v2c and v3.
    acme.wait_for(
        "interfaces of all three routers",
        Duration::from_secs(60),
        |api| {
            let ok = ["core1", "access1", "access2"]
                .iter()
                .all(|d| oper_status(api, d, "eth1") == Some(1.0));
            ok.then_some(())
        },
    );
    assert_eq!(oper_status(&acme, "core1", "eth2"), Some(1.0));
    let (_, ifs) = acme.get("/v1/devices/core1/interfaces");
    let names: Vec<&str> = ifs["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for n in ["lo", "eth0", "eth1", "eth2"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(
        acme.points("if_in_octets_total", "10m")
            .iter()
            .any(|(l, _, v)| l["device"] == "access1" && *v > 0.0)
    );
    assert!(
        oper_status(&acme, "stranger", "eth1").is_none(),
        "a device outside the grants is not polled"
    );

    // A link taken down inside a router: ifOperStatus down within two poll intervals.
    let interval = Duration::from_secs(2);
    lab.exec("access2", "ip link set eth3 down").unwrap();
    let down_at = Instant::now();
    acme.wait_for("access2 eth3 down", Duration::from_secs(30), |api| {
        (oper_status(api, "access2", "eth3") == Some(2.0)).then_some(())
    });
    let took = down_at.elapsed();
    assert!(
        took <= interval * 2 + Duration::from_millis(500),
        "seen after {took:?}"
    );

    let view = acme.component("snmp-interfaces");
    assert_eq!(view["counters"]["denied"], 0);
    assert_eq!(view["counters"]["traps"]["cpu_deadline"], 0);
}

#[test]
fn snmp_refusals_and_bad_credentials_are_clear() {
    let lab = basic_lab(22);
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    secrets(&acme);
    import(&acme, &lab);

    // A device outside the grants: `denied`, counted.
    let probe = "name = \"probe\"\nversion = \"1\"\nworld = \"collector\"\n[schedule]\nevery = \"500ms\"\n\
        [grants]\ndevices = [\"core1\"]\n[config]\nmode = \"snmp\"\ntarget = \"access2\"\n";
    acme.push(probe, ATTACKER);
    let result = acme.wait_for("the probe's answer", Duration::from_secs(30), |api| {
        api.points("snmp_result", "10m").first().map(|p| p.2)
    });
    assert_eq!(result, 0.0, "denied");
    let view = acme.component("probe");
    assert!(view["counters"]["denied"].as_u64().unwrap() >= 1);
    assert!(
        view.to_string().contains("not covered by grants.devices"),
        "{view}"
    );

    // Wrong SNMPv3 privacy key: the component's status says what failed, and the other
    // devices are still polled.
    let mut access1: Value = acme.get("/v1/devices/access1").1;
    access1["snmp"]["priv_secret"] = json!("wrong-priv");
    assert_eq!(acme.put("/v1/devices/access1", access1).0, 200);
    let manifest = "name = \"snmp-interfaces\"\nversion = \"1\"\nworld = \"collector\"\n\
        [schedule]\nevery = \"1s\"\n[limits]\ncpu_ms = 500\n[grants]\ndevices = [\"tag:snmp\"]\n";
    acme.push(manifest, SNMP_INTERFACES);
    let err = acme.wait_for("an error about access1", Duration::from_secs(60), |api| {
        let v = api.component("snmp-interfaces");
        v["last_error"]["message"]
            .as_str()
            .filter(|m| m.contains("access1"))
            .map(str::to_string)
    });
    assert!(
        err.contains("authentication")
            || err.contains("decrypt")
            || err.contains("timeout")
            || err.contains("SNMP"),
        "{err}"
    );
    acme.wait_for("core1 still polled", Duration::from_secs(30), |api| {
        (oper_status(api, "core1", "eth1") == Some(1.0)).then_some(())
    });
    let up = acme.points("snmp_up", "10m");
    assert!(
        up.iter()
            .any(|(l, _, v)| l["device"] == "access1" && *v == 0.0),
        "access1 reported down"
    );
}
