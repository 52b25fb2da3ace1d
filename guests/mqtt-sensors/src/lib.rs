//! The IoT collector: MQTT sensor messages in, samples out — one file and a manifest.
//!
//! Each route of the config subscribes to a topic filter and maps matching messages to
//! samples. Topic levels named in `pattern` (`home/{room}/{quantity}`) become labels; the
//! metric name is a template over those labels (`sensor_{quantity}`). A payload is a plain
//! number (`21.5`) or a JSON object whose `value_field` holds the number; `fields` lists more
//! numeric JSON fields, each emitted as `<metric>_<field>`; `device_field` and `time_field`
//! name the JSON fields for the `device` label and the timestamp (ms since the epoch; absent:
//! the host's time). Bad payloads are errors the host counts and logs — never traps.
//!
//! ```toml
//! [config]
//! marker = "v1"                      # optional label on every sample
//! [[config.routes]]
//! filter = "home/+/+"
//! pattern = "home/{room}/{quantity}"
//! metric = "sensor_{quantity}"
//! value_field = "value"
//! fields = ["battery"]
//! device_field = "device"
//! time_field = "ts"
//! ```

use serde_json::Value;
use sotp_guest::{Collector, Config, Samples};

struct Route {
    filter: String,
    pattern: Vec<String>,
    metric: String,
    value_field: String,
    fields: Vec<String>,
    device_field: Option<String>,
    time_field: Option<String>,
}

struct Sensors {
    routes: Vec<Route>,
    marker: Option<String>,
}

impl Collector for Sensors {
    fn init(config: &Config) -> Result<Self, String> {
        let routes = config
            .get("routes")
            .and_then(Value::as_array)
            .ok_or("config.routes: a list of routes is required")?
            .iter()
            .enumerate()
            .map(|(i, r)| parse_route(r).map_err(|e| format!("config.routes[{i}].{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        for route in &routes {
            sotp_guest::mqtt::subscribe(&route.filter).map_err(|e| {
                format!(
                    "subscribing to {}: {}",
                    route.filter,
                    sotp_guest::describe(&e)
                )
            })?;
        }
        Ok(Sensors {
            routes,
            marker: config
                .get("marker")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let route = self
            .routes
            .iter()
            .find(|r| sotp_guest::topic_matches(&r.filter, topic))
            .ok_or_else(|| format!("no route for topic {topic}"))?;
        let labels = topic_labels(&route.pattern, topic)?;
        let metric = fill(&route.metric, &labels);
        let text =
            std::str::from_utf8(payload).map_err(|_| format!("{topic}: payload is not UTF-8"))?;
        let mut out = Samples::new();
        let mut push = |name: &str, value: f64, device: Option<&str>, ts: Option<i64>| {
            let s = out.push(name, value);
            for (k, v) in &labels {
                s.label(k, v);
            }
            if let Some(d) = device {
                s.label("device", d);
            }
            if let Some(m) = &self.marker {
                s.label("marker", m);
            }
            if let Some(ts) = ts {
                s.at(ts);
            }
        };
        if let Ok(number) = text.trim().parse::<f64>() {
            push(&metric, number, None, None);
        } else {
            let json: Value = serde_json::from_str(text)
                .map_err(|e| format!("{topic}: payload is neither a number nor JSON: {e}"))?;
            let value = number_field(&json, &route.value_field).ok_or_else(|| {
                format!("{topic}: no numeric `{}` in the payload", route.value_field)
            })?;
            let device = route
                .device_field
                .as_deref()
                .and_then(|f| json.get(f))
                .and_then(Value::as_str);
            let ts = route
                .time_field
                .as_deref()
                .and_then(|f| json.get(f))
                .and_then(Value::as_i64);
            push(&metric, value, device, ts);
            for field in &route.fields {
                if let Some(v) = number_field(&json, field) {
                    push(&format!("{metric}_{field}"), v, device, ts);
                }
            }
        }
        out.emit()
    }
}

fn parse_route(r: &Value) -> Result<Route, String> {
    let text = |key: &str| r.get(key).and_then(Value::as_str).map(str::to_string);
    let filter = text("filter").ok_or("filter: required")?;
    let pattern = text("pattern").unwrap_or_else(|| filter.clone());
    Ok(Route {
        pattern: pattern.split('/').map(str::to_string).collect(),
        metric: text("metric").ok_or("metric: required")?,
        value_field: text("value_field").unwrap_or_else(|| "value".into()),
        fields: r
            .get("fields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        device_field: text("device_field"),
        time_field: text("time_field"),
        filter,
    })
}

/// `home/{room}/{quantity}` against `home/kitchen/temperature` → room, quantity.
fn topic_labels(pattern: &[String], topic: &str) -> Result<Vec<(String, String)>, String> {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.len() < pattern.len() {
        return Err(format!("topic {topic} is shorter than the route's pattern"));
    }
    Ok(pattern
        .iter()
        .zip(&levels)
        .filter_map(|(p, level)| {
            p.strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .map(|name| (name.to_string(), level.to_string()))
        })
        .collect())
}

fn fill(template: &str, labels: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in labels {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn number_field(json: &Value, field: &str) -> Option<f64> {
    match json.get(field)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

sotp_guest::collector!(Sensors);
