//! Nothing that blocks runs on the API's async workers: with the state database's write
//! lock held elsewhere (a long write, a slow disk), requests that write wait — on the
//! blocking pool — while health checks, reads and authentication go on answering.

use serde_json::json;
use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::{Api, Server, manifest};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

#[test]
fn a_locked_state_database_stalls_no_unrelated_request() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    acme.push(&manifest("ticker", "1", "100ms", ""), TICK_COUNTER);
    let db = rusqlite::Connection::open(server.data_path().join("state.sqlite")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Writes queue behind the lock: each waits up to SQLite's busy timeout (5 s) for it.
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let api = acme.clone();
            std::thread::spawn(move || {
                api.put(
                    &format!("/v1/devices/d{i}"),
                    json!({ "name": format!("d{i}"), "address": "10.0.0.1" }),
                )
                .0
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Answered long before any of those writes could give up (4 s < their 5 s).
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut request = quick.get(format!("{}{path}", server.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request
            .send()
            .unwrap_or_else(|e| panic!("GET {path} while the database is locked: {e}"))
            .status()
            .as_u16()
    };
    assert_eq!(get("/healthz", None), 200);
    assert_eq!(get("/v1/components", Some(&acme.token)), 200);
    assert_eq!(get("/v1/devices", Some(&acme.token)), 200);
    assert_eq!(get("/v1/tenant", Some(&acme.token)), 200);
    assert_eq!(get("/v1/components", Some("sotp_not_a_token")), 401);
    db.execute_batch("COMMIT").unwrap();
    for w in writers {
        let status = w.join().unwrap();
        assert!([200, 201, 500].contains(&status), "{status}");
    }
    // And the writes go through once the lock is free.
    let api: &Api = &acme;
    let (status, body) = api.put(
        "/v1/devices/after",
        json!({ "name": "after", "address": "10.0.0.2" }),
    );
    assert_eq!(status, 201, "{body}");
}
