//! Samples derived from spans, so page loads and web vitals chart and alert like every other
//! sample (`/v1/query?metric=rum_lcp_seconds`). Labels: `service` and `route` (the page's
//! path). What counts:
//!
//! - `rum_page_load_seconds`: a `documentLoad` span's duration (OpenTelemetry's
//!   document-load instrumentation);
//! - `rum_lcp_seconds`, `rum_inp_seconds`, `rum_ttfb_seconds`, `rum_fcp_seconds`, `rum_cls`:
//!   a `web-vital` span (SOTP's RUM script makes one per report) by its `web_vital.name`, with
//!   `web_vital.value` in milliseconds (CLS unitless), and `rating` as a label;
//! - `rum_errors`: error spans (status ERROR, or named `exception`) per batch, service and
//!   route, stamped with the batch's first one.

use super::otlp::{SpanRow, number_attribute, string_attribute};
use std::collections::BTreeMap;

/// One derived sample: metric, labels, time (ms since the epoch), value.
pub type Derived = (String, Vec<(String, String)>, i64, f64);

pub fn derive(spans: &[SpanRow]) -> Vec<Derived> {
    let mut out = Vec::new();
    let mut errors: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
    for s in spans {
        let route = s.route.clone().unwrap_or_else(|| "/".into());
        let ts_ms = s.start_ns / 1_000_000;
        let labels = |extra: Option<(&str, &str)>| {
            let mut l = vec![
                ("service".to_string(), s.service.clone()),
                ("route".to_string(), route.clone()),
            ];
            if let Some((k, v)) = extra {
                l.push((k.to_string(), v.to_string()));
            }
            l
        };
        if s.name == "documentLoad" {
            out.push((
                "rum_page_load_seconds".into(),
                labels(None),
                ts_ms,
                s.duration_ns as f64 / 1e9,
            ));
        }
        if s.name == "web-vital"
            && let (Some(name), Some(value)) = (
                string_attribute(&s.attributes, "web_vital.name"),
                number_attribute(&s.attributes, "web_vital.value"),
            )
        {
            let (metric, value) = match name {
                "LCP" => ("rum_lcp_seconds", value / 1000.0),
                "INP" => ("rum_inp_seconds", value / 1000.0),
                "TTFB" => ("rum_ttfb_seconds", value / 1000.0),
                "FCP" => ("rum_fcp_seconds", value / 1000.0),
                "CLS" => ("rum_cls", value),
                _ => continue,
            };
            let rating = string_attribute(&s.attributes, "web_vital.rating").unwrap_or("unknown");
            out.push((
                metric.into(),
                labels(Some(("rating", rating))),
                ts_ms,
                value,
            ));
        }
        if s.status == 2 || s.name == "exception" {
            let e = errors
                .entry((s.service.clone(), route.clone()))
                .or_insert((ts_ms, 0.0));
            e.0 = e.0.min(ts_ms);
            e.1 += 1.0;
        }
    }
    for ((service, route), (ts_ms, n)) in errors {
        out.push((
            "rum_errors".into(),
            vec![("service".into(), service), ("route".into(), route)],
            ts_ms,
            n,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::otlp::tests::{kv, request, span};
    use crate::traces::otlp::{DecodeLimits, Encoding, decode};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use prost::Message;

    #[test]
    fn page_loads_vitals_and_errors_become_samples() {
        let mut load = span(1, 1, None, "documentLoad");
        load.status = None;
        let mut lcp = span(1, 2, Some(1), "web-vital");
        lcp.status = None;
        lcp.attributes = vec![
            kv("url.full", "https://shop.test/cart"),
            kv("web_vital.name", "LCP"),
            kv("web_vital.rating", "good"),
            KeyValue {
                key: "web_vital.value".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(1234.0)),
                }),
                ..Default::default()
            },
        ];
        let failed = span(1, 3, Some(1), "GET /api"); // status ERROR
        let req = request("shop-web", vec![load, lcp, failed]);
        let limits = DecodeLimits {
            max_decoded: 1 << 20,
            max_spans: 10,
            max_span_bytes: 4096,
        };
        let rows = decode(&req.encode_to_vec(), Encoding::Protobuf, false, limits).unwrap();
        let derived = derive(&rows.spans);
        let find = |m: &str| {
            derived
                .iter()
                .find(|d| d.0 == m)
                .unwrap_or_else(|| panic!("{m}: {derived:?}"))
        };
        assert_eq!(find("rum_page_load_seconds").3, 0.25);
        let lcp = find("rum_lcp_seconds");
        assert_eq!(lcp.3, 1.234);
        assert!(lcp.1.contains(&("route".into(), "/cart".into())));
        assert!(lcp.1.contains(&("rating".into(), "good".into())));
        assert_eq!(find("rum_errors").3, 1.0);
    }
}
