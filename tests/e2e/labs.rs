//! The labs themselves: up, healthy, usable, side by side, and gone without a trace.
//! Needs root (network namespaces); CI runs as root.

use sotp_labs::{Lab, Topology, lab};
use std::time::Duration;

fn basic() -> Topology {
    Topology::load(&sotp_labs::topology_path("basic")).unwrap()
}

fn up(id: u8) -> Lab {
    let mut log = |m: &str| eprintln!("lab {id}: {m}");
    let lab = Lab::up_fresh(&basic(), id, &mut log)
        .expect("lab up (needs root and scripts/setup's packages)");
    lab.check_until(Duration::from_secs(60), &mut log)
        .expect("lab healthy");
    lab
}

#[test]
fn two_labs_side_by_side_then_nothing_left() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| up(11));
        let b = s.spawn(|| up(12));
        (a.join().unwrap(), b.join().unwrap())
    });
    // Same topology, different addresses and namespaces; both answer.
    let (ca, cb) = (a.node("core1").unwrap(), b.node("core1").unwrap());
    assert_ne!(ca.management_address, cb.management_address);
    assert!(a.check().iter().all(|c| c.ok));
    assert!(b.check().iter().all(|c| c.ok));

    // A router's CLI over the lab's exec, and its hostname is its own.
    let conf = a.vtysh("access1", &["show running-config"]).unwrap();
    assert!(conf.contains("hostname access1"), "{conf}");
    assert_eq!(b.exec("access2", "hostname").unwrap().trim(), "access2");

    // A link taken down inside a router is seen by OSPF on the core.
    a.exec("access1", "ip link set eth1 down").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let nb = a.vtysh("core1", &["show ip ospf neighbor"]).unwrap();
        if !nb.contains(&a.node("access1").unwrap().management_address.to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "OSPF never noticed: {nb}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let (plan_a, dir_a) = (a.plan.clone(), a.dir.clone());
    let (plan_b, dir_b) = (b.plan.clone(), b.dir.clone());
    a.down().unwrap();
    assert!(lab::leftovers(&plan_a, &dir_a).is_empty());
    // Lab b is untouched by a's teardown.
    assert!(b.check().iter().all(|c| c.ok), "{:?}", b.check());
    drop(b); // Drop tears down too.
    assert_eq!(lab::leftovers(&plan_b, &dir_b), Vec::<String>::new());
}

#[test]
fn a_taken_id_is_refused() {
    let a = up(13);
    let mut log = |_: &str| {};
    let err = Lab::up(&basic(), 13, &mut log)
        .err()
        .expect("the id is in use");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(
        a.check().iter().all(|c| c.ok),
        "the running lab survived the refused one"
    );
}
