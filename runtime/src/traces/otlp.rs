//! OTLP/HTTP trace payloads: decoded (protobuf or JSON, gzip or not) into the spans the
//! store keeps, and encoded again for forwarding. The message types are opentelemetry-proto's
//! (prost); its serde support reads the OTLP JSON encoding (hex ids, camelCase).
//!
//! Every span is checked on its own: a bad one (zero or short ids, no name, ending before it
//! starts, too large) is rejected and counted in the answer's partial success, the others
//! kept — what the OTLP specification asks of a receiver. A payload that does not decode at
//! all is refused whole.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Read;

/// How a payload is encoded (its `Content-Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let base = content_type.split(';').next().unwrap_or("").trim();
        match base {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Bounds on one payload.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Bytes after gzip decompression.
    pub max_decoded: usize,
    /// Spans in one payload.
    pub max_spans: usize,
    /// Bytes of one span, encoded.
    pub max_span_bytes: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the body is not gzip: {0}")]
    Gzip(String),
    #[error("the body is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    #[error("not an OTLP ExportTraceServiceRequest ({encoding}): {reason}")]
    Malformed {
        encoding: &'static str,
        reason: String,
    },
    #[error("{count} spans in one request: at most {max}")]
    TooManySpans { count: usize, max: usize },
}

/// One span as stored: the columns searched on, its resource (and scope), and the span
/// itself, encoded.
#[derive(Clone, Debug)]
pub struct SpanRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub start_ns: i64,
    pub duration_ns: i64,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub route: Option<String>,
    pub http_status: Option<i64>,
    /// The resource and scope the span came under, encoded as a `ResourceSpans` with one
    /// empty `ScopeSpans`: the same bytes for every span of that resource and scope.
    pub resource: Vec<u8>,
    pub body: Vec<u8>,
    /// The span's attributes, for derived metrics (web vitals).
    pub attributes: Vec<KeyValue>,
}

/// What a payload held: the spans kept, and how many were rejected and why (the first
/// reason).
#[derive(Debug, Default)]
pub struct Decoded {
    pub spans: Vec<SpanRow>,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// Decode a payload: `gzip` if `Content-Encoding: gzip`.
pub fn decode(
    body: &[u8],
    encoding: Encoding,
    gzip: bool,
    limits: DecodeLimits,
) -> Result<Decoded, DecodeError> {
    let inflated;
    let bytes = if gzip {
        inflated = gunzip(body, limits.max_decoded)?;
        &inflated[..]
    } else {
        body
    };
    if bytes.len() > limits.max_decoded {
        return Err(DecodeError::TooLarge(limits.max_decoded));
    }
    let request = match encoding {
        Encoding::Protobuf => {
            ExportTraceServiceRequest::decode(bytes).map_err(|e| DecodeError::Malformed {
                encoding: "protobuf",
                reason: e.to_string(),
            })?
        }
        Encoding::Json => {
            serde_json::from_slice::<ExportTraceServiceRequest>(bytes).map_err(|e| {
                DecodeError::Malformed {
                    encoding: "JSON",
                    reason: e.to_string(),
                }
            })?
        }
    };
    let count: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    if count > limits.max_spans {
        return Err(DecodeError::TooManySpans {
            count,
            max: limits.max_spans,
        });
    }
    Ok(flatten(request, limits.max_span_bytes))
}

fn gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge(max));
    }
    Ok(out)
}

fn flatten(request: ExportTraceServiceRequest, max_span_bytes: usize) -> Decoded {
    let mut out = Decoded::default();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, "service.name"))
            .unwrap_or("unknown_service")
            .to_string();
        for scope_spans in resource_spans.scope_spans {
            let key = ResourceSpans {
                resource: resource_spans.resource.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: scope_spans.scope.clone(),
                    spans: Vec::new(),
                    schema_url: scope_spans.schema_url.clone(),
                }],
                schema_url: resource_spans.schema_url.clone(),
            }
            .encode_to_vec();
            for span in scope_spans.spans {
                match span_row(span, &service, &key, max_span_bytes) {
                    Ok(row) => out.spans.push(row),
                    Err(reason) => {
                        out.rejected += 1;
                        out.first_rejection.get_or_insert(reason);
                    }
                }
            }
        }
    }
    out
}

fn span_row(
    span: Span,
    service: &str,
    resource: &[u8],
    max_bytes: usize,
) -> Result<SpanRow, String> {
    let nonzero = |id: &[u8], len: usize| id.len() == len && id.iter().any(|b| *b != 0);
    if !nonzero(&span.trace_id, 16) {
        return Err("a span's trace id is not 16 bytes, or is zero".into());
    }
    if !nonzero(&span.span_id, 8) {
        return Err("a span's id is not 8 bytes, or is zero".into());
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err("a span's parent id is not 8 bytes".into());
    }
    if span.name.is_empty() || span.name.len() > 1024 {
        return Err("a span's name is empty or longer than 1024 bytes".into());
    }
    if span.end_time_unix_nano < span.start_time_unix_nano || span.start_time_unix_nano == 0 {
        return Err("a span ends before it starts, or has no start time".into());
    }
    let body = span.encode_to_vec();
    if body.len() > max_bytes {
        return Err(format!("a span is larger than {max_bytes} bytes"));
    }
    let attributes = &span.attributes;
    let route = string_attribute(attributes, "http.route")
        .map(str::to_string)
        .or_else(|| {
            ["url.full", "http.url", "url.path", "http.target"]
                .iter()
                .find_map(|k| string_attribute(attributes, k))
                .map(url_path)
        });
    let http_status = ["http.response.status_code", "http.status_code"]
        .iter()
        .find_map(|k| int_attribute(attributes, k));
    Ok(SpanRow {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_id: hex::encode(&span.parent_span_id),
        service: service.to_string(),
        name: span.name.clone(),
        kind: span.kind,
        start_ns: span.start_time_unix_nano.min(i64::MAX as u64) as i64,
        duration_ns: (span.end_time_unix_nano - span.start_time_unix_nano).min(i64::MAX as u64)
            as i64,
        status: span.status.as_ref().map(|s| s.code).unwrap_or(0),
        route,
        http_status,
        resource: resource.to_vec(),
        body,
        attributes: span.attributes,
    })
}

/// The path of a URL (or the text itself if it is a path), without query or fragment.
fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, rest)| rest);
    let path = match after_scheme {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => url,
    };
    path.split(['?', '#']).next().unwrap_or("/").to_string()
}

pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

pub fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            any_value::Value::DoubleValue(d) => Some(*d as i64),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    })
}

pub fn number_attribute(attributes: &[KeyValue], key: &str) -> Option<f64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i as f64),
            any_value::Value::DoubleValue(d) => Some(*d),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    })
}

/// The protobuf answer to an export request: empty, or a partial success naming how many
/// spans were rejected and why.
pub fn protobuf_response(rejected: u64, message: Option<&str>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: message.unwrap_or_default().to_string(),
    });
    ExportTraceServiceResponse { partial_success }.encode_to_vec()
}

/// Stored spans, grouped under their resources again, as one OTLP request.
pub fn encode_request(groups: Vec<super::store::ResourceGroup>) -> Vec<u8> {
    let mut request = ExportTraceServiceRequest::default();
    for (resource, spans) in groups {
        let Ok(mut rs) = ResourceSpans::decode(&resource[..]) else {
            continue;
        };
        let spans: Vec<Span> = spans
            .iter()
            .filter_map(|b| Span::decode(&b[..]).ok())
            .collect();
        match rs.scope_spans.first_mut() {
            Some(scope) => scope.spans = spans,
            None => rs.scope_spans.push(ScopeSpans {
                spans,
                ..Default::default()
            }),
        }
        request.resource_spans.push(rs);
    }
    request.encode_to_vec()
}

/// A stored span as JSON for the trace view: its fields, attributes, events and status.
pub fn span_json(body: &[u8], resource: &[u8]) -> serde_json::Value {
    let span = Span::decode(body).unwrap_or_default();
    let resource = ResourceSpans::decode(resource).unwrap_or_default();
    let attrs = |kvs: &[KeyValue]| -> serde_json::Map<String, serde_json::Value> {
        kvs.iter()
            .map(|kv| (kv.key.clone(), any_json(kv.value.as_ref())))
            .collect()
    };
    serde_json::json!({
        "trace_id": hex::encode(&span.trace_id),
        "span_id": hex::encode(&span.span_id),
        "parent_id": hex::encode(&span.parent_span_id),
        "name": span.name,
        "kind": span.kind,
        "start_ns": span.start_time_unix_nano.to_string(),
        "end_ns": span.end_time_unix_nano.to_string(),
        "duration_ms": (span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano)) as f64 / 1e6,
        "status": {
            "code": span.status.as_ref().map(|s| s.code).unwrap_or(0),
            "message": span.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        },
        "attributes": attrs(&span.attributes),
        "events": span.events.iter().map(|e| serde_json::json!({
            "name": e.name,
            "time_ns": e.time_unix_nano.to_string(),
            "attributes": attrs(&e.attributes),
        })).collect::<Vec<_>>(),
        "resource": resource.resource.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default(),
        "scope": resource.scope_spans.first().and_then(|s| s.scope.as_ref()).map(|s| s.name.clone()),
    })
}

fn any_json(value: Option<&AnyValue>) -> serde_json::Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        None => serde_json::Value::Null,
        Some(V::StringValue(s)) => s.clone().into(),
        Some(V::BoolValue(b)) => (*b).into(),
        Some(V::IntValue(i)) => (*i).into(),
        Some(V::DoubleValue(d)) => (*d).into(),
        Some(V::BytesValue(b)) => hex::encode(b).into(),
        Some(V::ArrayValue(a)) => a.values.iter().map(|v| any_json(Some(v))).collect(),
        Some(V::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|kv| (kv.key.clone(), any_json(kv.value.as_ref())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Some(_) => serde_json::Value::Null,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;

    pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    pub(crate) fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![kv("url.full", "http://shop.test/cart/42?x=1")],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    const LIMITS: DecodeLimits = DecodeLimits {
        max_decoded: 1 << 20,
        max_spans: 100,
        max_span_bytes: 4096,
    };

    #[test]
    fn protobuf_and_json_decode_to_the_same_rows() {
        let req = request(
            "shop",
            vec![span(1, 1, None, "GET /cart"), span(1, 2, Some(1), "db")],
        );
        let pb = decode(&req.encode_to_vec(), Encoding::Protobuf, false, LIMITS).unwrap();
        let json = serde_json::to_vec(&req).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.contains("resourceSpans"),
            "OTLP JSON is camelCase: {text}"
        );
        assert!(
            text.contains("01010101010101010101010101010101"),
            "hex ids: {text}"
        );
        let js = decode(&json, Encoding::Json, false, LIMITS).unwrap();
        assert_eq!(pb.spans.len(), 2);
        for (a, b) in pb.spans.iter().zip(&js.spans) {
            assert_eq!(a.body, b.body);
            assert_eq!(a.trace_id, b.trace_id);
        }
        let root = &pb.spans[0];
        assert_eq!(root.service, "shop");
        assert_eq!(root.route.as_deref(), Some("/cart/42"));
        assert_eq!(root.duration_ns, 250_000_000);
        assert_eq!(root.status, 2);
        assert_eq!(pb.spans[1].parent_id, "0101010101010101");
    }

    #[test]
    fn bad_spans_are_rejected_one_by_one_and_bad_payloads_whole() {
        let mut zero = span(0, 1, None, "zero trace");
        zero.trace_id = vec![0; 16];
        let mut backwards = span(3, 1, None, "backwards");
        backwards.end_time_unix_nano = 1;
        let req = request("shop", vec![span(1, 1, None, "ok"), zero, backwards]);
        let d = decode(&req.encode_to_vec(), Encoding::Protobuf, false, LIMITS).unwrap();
        assert_eq!((d.spans.len(), d.rejected), (1, 2));
        assert!(d.first_rejection.unwrap().contains("trace id"));

        let err = decode(b"\xff\xff\xff", Encoding::Protobuf, false, LIMITS).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
        let err = decode(b"{\"resourceSpans\": 7}", Encoding::Json, false, LIMITS).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
        let err = decode(b"not gzip", Encoding::Json, true, LIMITS).unwrap_err();
        assert!(matches!(err, DecodeError::Gzip(_)), "{err}");
        let many = request(
            "shop",
            (0..101).map(|i| span(1, i + 1, None, "s")).collect(),
        );
        let err = decode(&many.encode_to_vec(), Encoding::Protobuf, false, LIMITS).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooManySpans {
                count: 101,
                max: 100
            }
        );
        // A gzip bomb stops at the limit.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![b' '; 2 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let err = decode(&bomb, Encoding::Json, true, LIMITS).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge(1 << 20));
    }

    #[test]
    fn stored_spans_encode_back_under_their_resource() {
        let req = request(
            "shop",
            vec![span(1, 1, None, "a"), span(1, 2, Some(1), "b")],
        );
        let d = decode(&req.encode_to_vec(), Encoding::Protobuf, false, LIMITS).unwrap();
        let bodies = d.spans.iter().map(|s| s.body.clone()).collect();
        let again = encode_request(vec![(d.spans[0].resource.clone(), bodies)]);
        let back = ExportTraceServiceRequest::decode(&again[..]).unwrap();
        assert_eq!(back, req);
        let view = span_json(&d.spans[0].body, &d.spans[0].resource);
        assert_eq!(view["resource"]["service.name"], "shop");
        assert_eq!(view["status"]["code"], 2);
        assert_eq!(view["duration_ms"], 250.0);
    }
}
