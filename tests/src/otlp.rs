//! OTLP trace payloads for tests: built as OTLP JSON (what a browser exporter sends) and
//! turned into protobuf with opentelemetry-proto (what backends' exporters send).

use prost::Message;
use serde_json::{Value, json};

/// One span to send.
#[derive(Clone, Debug)]
pub struct SpanSpec {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    pub name: String,
    pub start_ms: i64,
    pub duration_ms: f64,
    pub attributes: Vec<(String, Value)>,
    pub error: bool,
}

impl SpanSpec {
    /// A span of trace `trace` (1 → `0101...`), id `id`, under `parent` (0: a root).
    pub fn new(trace: u8, id: u8, parent: u8, name: &str, start_ms: i64, duration_ms: f64) -> Self {
        SpanSpec {
            trace_id: format!("{trace:02x}").repeat(16),
            span_id: format!("{id:02x}").repeat(8),
            parent_id: if parent == 0 {
                String::new()
            } else {
                format!("{parent:02x}").repeat(8)
            },
            name: name.into(),
            start_ms,
            duration_ms,
            attributes: Vec::new(),
            error: false,
        }
    }

    pub fn attr(mut self, key: &str, value: Value) -> Self {
        self.attributes.push((key.into(), value));
        self
    }

    pub fn failed(mut self) -> Self {
        self.error = true;
        self
    }
}

fn any_value(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

/// An `ExportTraceServiceRequest` in OTLP JSON: one resource (`service.name`), one scope.
pub fn json_request(service: &str, spans: &[SpanSpec]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let start_ns = s.start_ms as i128 * 1_000_000;
            let end_ns = start_ns + (s.duration_ms * 1e6) as i128;
            json!({
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "parentSpanId": s.parent_id,
                "name": s.name,
                "kind": 1,
                "startTimeUnixNano": start_ns.to_string(),
                "endTimeUnixNano": end_ns.to_string(),
                "attributes": s.attributes.iter().map(|(k, v)| json!({ "key": k, "value": any_value(v) })).collect::<Vec<_>>(),
                "status": if s.error { json!({ "code": 2, "message": "failed" }) } else { json!({}) },
            })
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "sotp-tests" }, "spans": spans }],
        }]
    })
}

/// The same request as protobuf.
pub fn protobuf(request: &Value) -> Vec<u8> {
    let message: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_value(request.clone()).expect("a valid OTLP JSON request");
    message.encode_to_vec()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
