//! The OTLP/HTTP traces intake end to end: spans from a browser-safe `rum` key (JSON, from an
//! allowed origin) and from a backend's `ingest` token (protobuf, gzip) stored per tenant,
//! found by search and shown as a trace, web vitals turned into samples; every kind of bad
//! input refused with a reason, counted, and nothing of it stored.

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sotp_tests::harness::{Api, Server};
use sotp_tests::otlp::{SpanSpec, gzip, json_request, now_ms, protobuf};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const SHOP: &str = "http://shop.test:8080";

/// Small budgets, so the refusals are cheap to provoke.
const CONFIG: &str = "[runtime.traces]\nmax_body_bytes = \"64KiB\"\nmax_spans_per_request = 200\nspans_per_second = 1\nspans_burst = 300\n";

struct Sent {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn send(
    server: &Server,
    token: Option<&str>,
    origin: Option<&str>,
    content_type: &str,
    gzipped: bool,
    body: Vec<u8>,
) -> Sent {
    let mut req = Client::new()
        .post(format!("{}/v1/traces", server.base))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    if gzipped {
        req = req.header("Content-Encoding", "gzip");
    }
    let response = req.send().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Sent {
        status,
        headers,
        body,
    }
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn stored_spans(api: &Api) -> u64 {
    let (status, body) = api.get("/v1/traces?since=2h&limit=1000");
    assert_eq!(status, 200, "{body}");
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["spans"].as_u64().unwrap())
        .sum()
}

fn metric(server: &Server, line_start: &str) -> f64 {
    let text = server.metrics_text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// Tenant acme with a `rum` key and a backend's `ingest` token, and these trace settings.
fn shop(server: &Server, settings: Value) -> (Api, Api, Api) {
    let acme = server.tenant("acme");
    let rum = acme.scoped("shop-rum", &["rum"]);
    let backend = acme.scoped("shop-api", &["ingest"]);
    let (status, body) = acme.put("/v1/traces/settings", settings);
    assert_eq!(status, 200, "{body}");
    (acme, rum, backend)
}

#[test]
fn spans_are_stored_per_tenant_searched_and_bad_input_refused() {
    let server = Server::start_with_config(BIN, CONFIG, &[]);
    let (acme, rum, backend) = shop(&server, json!({ "origins": [SHOP], "sample_rate": 0.5 }));

    // A page load from the browser (JSON, the rum key, the shop's origin) ...
    let t0 = now_ms() - 5_000;
    let page = [
        SpanSpec::new(1, 1, 0, "documentLoad", t0, 850.0)
            .attr("http.url", json!(format!("{SHOP}/checkout?step=2"))),
        SpanSpec::new(1, 2, 1, "HTTP GET", t0 + 400, 300.0)
            .attr("http.url", json!(format!("{SHOP}/api/cart")))
            .attr("http.status_code", json!(200)),
        SpanSpec::new(1, 3, 1, "web-vital", t0 + 900, 0.0)
            .attr("http.url", json!(format!("{SHOP}/checkout")))
            .attr("web_vital.name", json!("LCP"))
            .attr("web_vital.value", json!(1234.5))
            .attr("web_vital.rating", json!("good")),
    ];
    let request = json_request("shop-web", &page);
    let sent = send(
        &server,
        Some(&rum.token),
        Some(SHOP),
        "application/json",
        false,
        json_body(&request),
    );
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body["accepted"], 3, "{}", sent.body);
    assert_eq!(
        sent.headers["access-control-allow-origin"], SHOP,
        "the page may read the answer"
    );
    // ... retried: nothing stored twice.
    let sent = send(
        &server,
        Some(&rum.token),
        Some(SHOP),
        "application/json",
        false,
        json_body(&request),
    );
    assert_eq!(
        (
            sent.body["accepted"].as_u64(),
            sent.body["duplicates"].as_u64()
        ),
        (Some(0), Some(3))
    );
    // ... and the backend's span of the same trace (protobuf, gzip, the ingest token).
    let api_span = [SpanSpec::new(1, 4, 2, "GET /api/cart", t0 + 450, 200.0)
        .attr("http.route", json!("/api/cart"))
        .failed()];
    let sent = send(
        &server,
        Some(&backend.token),
        None,
        "application/x-protobuf",
        true,
        gzip(&protobuf(&json_request("shop-api", &api_span))),
    );
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.headers["content-type"], "application/x-protobuf");

    // Search and view.
    let (_, found) = acme.get("/v1/traces?service=shop-web&since=1h");
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    let t = &traces[0];
    assert_eq!(t["trace_id"], "01".repeat(16));
    assert_eq!(
        (t["spans"].as_u64(), t["errors"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(t["name"], "documentLoad");
    assert_eq!(t["route"], "/checkout");
    assert_eq!(t["services"], json!(["shop-web", "shop-api"]));
    for (query, hits) in [
        ("route=/checkout", 1),
        ("route=/nowhere", 0),
        ("status=error", 1),
        ("status=ok", 0),
        ("min_duration=800ms", 1),
        ("min_duration=2s", 0),
        ("service=shop-api", 1),
        ("service=other", 0),
    ] {
        let (status, body) = acme.get(&format!("/v1/traces?since=1h&{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(
            body["traces"].as_array().unwrap().len(),
            hits,
            "{query}: {body}"
        );
    }
    let (status, trace) = acme.get(&format!("/v1/traces/{}", "01".repeat(16)));
    assert_eq!(status, 200, "{trace}");
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let backend_span = spans.iter().find(|s| s["name"] == "GET /api/cart").unwrap();
    assert_eq!(
        backend_span["parent_id"],
        "02".repeat(8),
        "under the page's fetch span"
    );
    assert_eq!(backend_span["resource"]["service.name"], "shop-api");
    assert_eq!(backend_span["status"]["code"], 2);

    // Web vitals and page loads are samples like any other.
    let lcp = acme.points("rum_lcp_seconds", "1h");
    assert_eq!(lcp.len(), 1, "{lcp:?}");
    assert_eq!(lcp[0].2, 1.2345);
    assert_eq!(lcp[0].0["route"], "/checkout");
    let load = acme.points("rum_page_load_seconds", "1h");
    assert_eq!(load[0].2, 0.85);
    assert_eq!(acme.points("rum_errors", "1h")[0].2, 1.0);

    // The CORS preflight answers; it grants nothing by itself.
    let pre = Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/traces", server.base),
        )
        .header("Origin", "https://anywhere.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );

    // Bad input: a 4xx with a reason, counted, nothing stored.
    let before = stored_spans(&acme);
    assert_eq!(before, 4);
    let one = json_body(&json_request(
        "shop-web",
        &[SpanSpec::new(9, 1, 0, "x", t0, 1.0)],
    ));
    let bad: Vec<(&str, Sent, u16, &str)> = vec![
        (
            "no key",
            send(
                &server,
                None,
                Some(SHOP),
                "application/json",
                false,
                one.clone(),
            ),
            401,
            "token",
        ),
        (
            "wrong key",
            send(
                &server,
                Some("sotp_nope"),
                Some(SHOP),
                "application/json",
                false,
                one.clone(),
            ),
            401,
            "token",
        ),
        (
            "a read token",
            send(
                &server,
                Some(&acme.scoped("viewer", &["read"]).token),
                None,
                "application/json",
                false,
                one.clone(),
            ),
            403,
            "rum",
        ),
        (
            "foreign origin",
            send(
                &server,
                Some(&rum.token),
                Some("https://evil.example"),
                "application/json",
                false,
                one.clone(),
            ),
            403,
            "origin",
        ),
        (
            "malformed protobuf",
            send(
                &server,
                Some(&rum.token),
                None,
                "application/x-protobuf",
                false,
                b"\xff\xff\xff\x01".to_vec(),
            ),
            400,
            "protobuf",
        ),
        (
            "malformed JSON",
            send(
                &server,
                Some(&rum.token),
                None,
                "application/json",
                false,
                b"{\"resourceSpans\": 7}".to_vec(),
            ),
            400,
            "JSON",
        ),
        (
            "not gzip",
            send(
                &server,
                Some(&rum.token),
                None,
                "application/json",
                true,
                one.clone(),
            ),
            400,
            "gzip",
        ),
        (
            "wrong content type",
            send(
                &server,
                Some(&rum.token),
                None,
                "text/plain",
                false,
                one.clone(),
            ),
            400,
            "content type",
        ),
        (
            "oversized body",
            send(
                &server,
                Some(&rum.token),
                None,
                "application/json",
                false,
                vec![b' '; 70_000],
            ),
            413,
            "",
        ),
        (
            "too many spans",
            send(
                &server,
                Some(&rum.token),
                None,
                "application/json",
                false,
                json_body(&json_request(
                    "shop-web",
                    &(1..=201)
                        .map(|i| SpanSpec::new(7, (i % 250) as u8 + 1, 0, "s", t0, 1.0))
                        .collect::<Vec<_>>(),
                )),
            ),
            413,
            "at most 200",
        ),
    ];
    for (what, sent, status, reason) in &bad {
        assert_eq!(sent.status, *status, "{what}: {}", sent.body);
        let detail = sent.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{what}: {detail}");
    }
    // Over the rate: 300 spans of burst are gone after these 200 + 199.
    let batch = |trace: u8| {
        json_body(&json_request(
            "shop-web",
            &(1..=199)
                .map(|i| SpanSpec::new(trace, i, 0, "s", t0, 1.0))
                .collect::<Vec<_>>(),
        ))
    };
    let first = send(
        &server,
        Some(&backend.token),
        None,
        "application/json",
        false,
        batch(20),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let limited = send(
        &server,
        Some(&backend.token),
        None,
        "application/json",
        false,
        batch(21),
    );
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(
        stored_spans(&acme),
        before + 199,
        "nothing of a refused request was stored"
    );
    for (reason, at_least) in [
        ("key", 2.0),
        ("origin", 1.0),
        ("malformed", 4.0),
        ("too_large", 2.0),
        ("rate", 1.0),
    ] {
        let n = metric(
            &server,
            &format!("sotp_traces_requests_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= at_least, "{reason}: {n}");
    }
    assert_eq!(
        metric(&server, "sotp_traces_spans_total{outcome=\"duplicate\"}"),
        3.0
    );

    // Another tenant sees none of it, and its key cannot write into acme.
    let globex = server.tenant("globex");
    let (_, none) = globex.get("/v1/traces?since=1h");
    assert_eq!(none["traces"], json!([]));
    assert_eq!(
        globex.get(&format!("/v1/traces/{}", "01".repeat(16))).0,
        404
    );
    assert!(globex.points("rum_lcp_seconds", "1h").is_empty());
    let globex_rum = globex.scoped("rum", &["rum"]);
    let sent = send(
        &server,
        Some(&globex_rum.token),
        Some(SHOP),
        "application/json",
        false,
        one,
    );
    assert_eq!(
        sent.status, 403,
        "globex did not allow the shop's origin: {}",
        sent.body
    );
    // A rum key reads nothing.
    assert_eq!(rum.get("/v1/traces").0, 403);
    assert_eq!(rum.get("/v1/traces/settings").0, 403);
}

/// Wait (polling) until `f` gives `Some`, or panic after `secs` naming `what`.
fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn spans_reach_a_real_jaeger_and_nothing_is_lost_while_it_is_down() {
    let mut jaeger = sotp_tests::jaeger::Jaeger::start(&[]);
    let server = Server::start_with_config(BIN, sotp_tests::harness::LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    let backend = acme.scoped("shop-api", &["ingest"]);
    let (status, body) = acme.put(
        "/v1/traces/settings",
        json!({ "forward": { "url": jaeger.otlp_url() } }),
    );
    assert_eq!(status, 200, "{body}");
    let post = |trace: u8, spans: u8| {
        let t0 = now_ms();
        let spans: Vec<SpanSpec> = (1..=spans)
            .map(|i| {
                SpanSpec::new(
                    trace,
                    i,
                    if i == 1 { 0 } else { 1 },
                    &format!("op{i}"),
                    t0,
                    5.0,
                )
            })
            .collect();
        let sent = send(
            &server,
            Some(&backend.token),
            None,
            "application/x-protobuf",
            false,
            protobuf(&json_request("shop-api", &spans)),
        );
        assert_eq!(sent.status, 200);
    };
    let id = |trace: u8| format!("{trace:02x}").repeat(16);

    post(1, 3);
    let spans = wait("trace 1 in Jaeger", 20, || {
        let s = jaeger.trace_spans(&id(1));
        (s.len() == 3).then_some(s)
    });
    assert!(spans.iter().any(|s| s["operationName"] == "op2"));

    // Jaeger goes away: SOTP keeps the spans and says it is behind.
    jaeger.stop();
    post(2, 4);
    post(3, 2);
    let status = wait("a failed forward", 20, || {
        let (_, s) = acme.get("/v1/traces/settings");
        (s["forwarding"]["last_error"].is_string() && s["forwarding"]["behind"] == 6).then_some(s)
    });
    assert!(
        status["forwarding"]["failures"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // Back: everything sent meanwhile arrives, once.
    jaeger.resume();
    wait("traces 2 and 3 in Jaeger", 90, || {
        (jaeger.trace_spans(&id(2)).len() == 4 && jaeger.trace_spans(&id(3)).len() == 2)
            .then_some(())
    });
    let (_, s) = acme.get("/v1/traces/settings");
    assert_eq!(s["forwarding"]["behind"], 0, "{s}");
    assert!(s["forwarding"]["last_error"].is_null(), "{s}");
    assert_eq!(
        metric(&server, "sotp_traces_spans_forwarded_total"),
        9.0,
        "each span forwarded once"
    );
}

/// Run ui/tests/rum.mjs on `url`.
fn browse(url: &str) {
    sotp_tests::harness::run_browser_script("rum.mjs", &[("PAGE_URL", url), ("HOLD_MS", "2500")]);
}

#[test]
fn a_real_browser_sends_its_page_load_fetches_and_vitals_joined_to_the_backends_span() {
    let app = sotp_tests::webapp::WebApp::start();
    let origin = format!("http://127.0.0.1:{}", app.port);
    let jaeger = sotp_tests::jaeger::Jaeger::start(&[]);
    let server = Server::start_with_config(BIN, sotp_tests::harness::LOOPBACK_EGRESS, &[]);
    let (acme, rum, backend) = shop(
        &server,
        json!({ "origins": [origin], "forward": { "url": jaeger.otlp_url() } }),
    );
    app.instrument(&server.base, &rum.token, &backend.token);

    browse(&app.url("/shop"));

    // The page load, and the page's API call joined to the backend's span in one trace.
    let traces = wait("the browser's traces", 30, || {
        let (_, found) = acme.get("/v1/traces?since=10m&limit=50");
        let traces = found["traces"].as_array().cloned().unwrap_or_default();
        let joined = traces
            .iter()
            .any(|t| t["services"] == json!(["shop-web", "shop-api"]));
        let load = traces.iter().any(|t| t["name"] == "documentLoad");
        (joined && load).then_some(traces)
    });
    let joined = traces
        .iter()
        .find(|t| t["services"] == json!(["shop-web", "shop-api"]))
        .unwrap();
    let id = joined["trace_id"].as_str().unwrap();
    let (_, trace) = acme.get(&format!("/v1/traces/{id}"));
    let spans = trace["spans"].as_array().unwrap();
    let fetch = spans
        .iter()
        .find(|s| s["resource"]["service.name"] == "shop-web")
        .unwrap();
    let server_span = spans
        .iter()
        .find(|s| s["resource"]["service.name"] == "shop-api")
        .unwrap();
    assert_eq!(server_span["parent_id"], fetch["span_id"], "{trace}");
    assert!(
        fetch["attributes"]["http.url"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/api/status")
            || fetch["attributes"]["url.full"]
                .as_str()
                .unwrap_or_default()
                .ends_with("/api/status"),
        "{fetch}"
    );
    assert_eq!(
        fetch["resource"]["session.id"].as_str().map(str::len),
        Some(32)
    );
    let load = traces.iter().find(|t| t["name"] == "documentLoad").unwrap();
    assert_eq!(load["route"], "/shop");

    // Web vitals and the page load, as samples.
    wait("web vitals", 20, || {
        [
            "rum_page_load_seconds",
            "rum_ttfb_seconds",
            "rum_fcp_seconds",
            "rum_lcp_seconds",
        ]
        .iter()
        .all(|m| !acme.points(m, "10m").is_empty())
        .then_some(())
    });
    let ttfb = acme.points("rum_ttfb_seconds", "10m");
    assert_eq!(ttfb[0].0["route"], "/shop");
    assert!(ttfb[0].2 > 0.0 && ttfb[0].2 < 10.0, "{ttfb:?}");

    // And the same trace in Jaeger, forwarded.
    let in_jaeger = wait("the joined trace in Jaeger", 30, || {
        let s = jaeger.trace_spans(id);
        (s.len() == spans.len()).then_some(s)
    });
    assert!(
        in_jaeger
            .iter()
            .any(|s| s["operationName"] == "GET /api/status")
    );
}

#[test]
fn an_unsampled_session_is_dropped_in_the_browser_and_at_the_backend() {
    let app = sotp_tests::webapp::WebApp::start();
    let origin = format!("http://127.0.0.1:{}", app.port);
    let server = Server::start(BIN);
    let (acme, rum, backend) = shop(&server, json!({ "origins": [origin], "sample_rate": 0.0 }));
    app.instrument(&server.base, &rum.token, &backend.token);

    browse(&app.url("/shop"));

    // The API call still carried a traceparent, marked not sampled, so the backend dropped
    // its span too.
    let seen = app.seen();
    let call = seen
        .iter()
        .find(|s| s.path == "/api/status")
        .expect("the page called the API");
    let tp = call.traceparent.as_deref().expect("a traceparent");
    assert!(tp.ends_with("-00"), "{tp}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (_, found) = acme.get("/v1/traces?since=10m");
    assert_eq!(found["traces"], json!([]), "{found}");
    assert!(acme.points("rum_ttfb_seconds", "10m").is_empty());
}

#[test]
fn sotp_traces_its_own_requests_and_component_calls_over_otlp() {
    let jaeger = sotp_tests::jaeger::Jaeger::start(&[]);
    let config = format!(
        "[server.traces]\notlp_endpoint = \"{}\"\n",
        jaeger.otlp_url()
    );
    let server = Server::start_with_config(BIN, &config, &[]);
    let acme = server.tenant("acme");
    acme.push(
        &sotp_tests::harness::manifest("ticker", "1", "200ms", ""),
        sotp_tests::guests::TICK_COUNTER,
    );
    // A request that carries a caller's trace: SOTP's span joins it.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let status = Client::new()
        .get(format!("{}/v1/components", server.base))
        .bearer_auth(&acme.token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let spans = wait("SOTP's request span in Jaeger", 30, || {
        let s = jaeger.trace_spans(trace);
        (!s.is_empty()).then_some(s)
    });
    let request = &spans[0];
    assert_eq!(request["operationName"], "GET /v1/components", "{request}");
    assert_eq!(request["references"][0]["spanID"], parent, "{request}");
    // Component calls are traced too.
    wait("component call spans in Jaeger", 30, || {
        let url = format!(
            "http://127.0.0.1:{}/api/services/sotp/operations",
            jaeger.query_port
        );
        let ops: Value = reqwest::blocking::get(url).ok()?.json().ok()?;
        ops["data"]
            .as_array()?
            .iter()
            .any(|o| o == "ticker tick")
            .then_some(())
    });
    assert!(metric(&server, "sotp_traces_own_spans_exported_total") > 0.0);
}
