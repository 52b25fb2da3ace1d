//! `sotp traces search|show|settings|set`

use super::{Client, ClientArgs, query_string, s, time};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum TracesCmd {
    /// Traces, newest first, by service, route, duration, status and time.
    #[command(after_help = "Examples:\n  \
sotp traces search --since 15m\n  \
sotp traces search --service shop-web --route /checkout --min-duration 2s\n  \
sotp traces search --status error --since 1d --limit 50")]
    Search {
        #[arg(long)]
        service: Option<String>,
        /// Traces with a span whose route (path) starts with this.
        #[arg(long)]
        route: Option<String>,
        /// Only traces at least this long, e.g. 500ms.
        #[arg(long)]
        min_duration: Option<String>,
        /// error (a span failed) or ok.
        #[arg(long)]
        status: Option<String>,
        /// How far back from now (default 1h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One trace: its spans as a tree, with durations and errors.
    Show {
        trace_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The tenant's trace settings and how forwarding goes.
    Settings {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the trace settings: origins allowed to send spans with the `rum` key, the share of
    /// browser sessions recorded, where cross-origin requests carry `traceparent`, and the
    /// OTLP backend spans are forwarded to.
    #[command(after_help = "Example:\n  \
sotp traces set --origin https://shop.example --sample-rate 0.25 \\\n    \
--propagate-to https://api.shop.example --forward http://jaeger.example:4318/v1/traces")]
    Set {
        /// An origin (scheme://host[:port]) allowed to send spans; repeat for several.
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[arg(long, default_value_t = 1.0)]
        sample_rate: f64,
        /// A backend origin cross-origin requests may send `traceparent` to; repeat.
        #[arg(long = "propagate-to")]
        propagate_to: Vec<String>,
        /// The OTLP/HTTP traces URL to forward spans to.
        #[arg(long)]
        forward: Option<String>,
        /// A secret holding a bearer token for the backend.
        #[arg(long, requires = "forward")]
        forward_bearer_secret: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: TracesCmd) -> anyhow::Result<()> {
    match cmd {
        TracesCmd::Search {
            service,
            route,
            min_duration,
            status,
            since,
            limit,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut params: Vec<(&str, String)> = Vec::new();
            let optional = [
                ("service", service),
                ("route", route),
                ("min_duration", min_duration),
                ("status", status),
                ("since", since),
                ("limit", limit.map(|l| l.to_string())),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            let v = c.get(&format!("/traces?{}", query_string(&params))).await?;
            c.print(&v, |v| {
                let traces = v["traces"].as_array().cloned().unwrap_or_default();
                if traces.is_empty() {
                    println!("no traces in the window");
                    return;
                }
                println!(
                    "{:<32}  {:<19}  {:>10}  {:>5}  {:>6}  ROOT",
                    "TRACE", "START", "DURATION", "SPANS", "ERRORS"
                );
                for t in traces {
                    println!(
                        "{:<32}  {:<19}  {:>8.1}ms  {:>5}  {:>6}  {} {}{}",
                        s(&t["trace_id"]),
                        time(&t["start_ms"]),
                        t["duration_ms"].as_f64().unwrap_or(0.0),
                        s(&t["spans"]),
                        s(&t["errors"]),
                        s(&t["service"]),
                        s(&t["name"]),
                        t["route"]
                            .as_str()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                }
            });
        }
        TracesCmd::Show { trace_id, client } => {
            let c = Client::new(&client)?;
            let v = c.get(&format!("/traces/{trace_id}")).await?;
            c.print(&v, print_tree);
        }
        TracesCmd::Settings { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/traces/settings").await?;
            c.print(&v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
        TracesCmd::Set {
            origins,
            sample_rate,
            propagate_to,
            forward,
            forward_bearer_secret,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({
                "origins": origins,
                "sample_rate": sample_rate,
                "propagate_to": propagate_to,
            });
            if let Some(url) = forward {
                body["forward"] = json!({ "url": url, "bearer_secret": forward_bearer_secret });
            }
            let v = c.put("/traces/settings", body).await?;
            c.print(&v, |_| println!("trace settings saved"));
        }
    }
    Ok(())
}

/// Spans indented under their parents, in start order.
fn print_tree(v: &Value) {
    let spans = v["spans"].as_array().cloned().unwrap_or_default();
    let ids: Vec<String> = spans.iter().map(|sp| s(&sp["span_id"])).collect();
    let start = spans
        .iter()
        .filter_map(|sp| sp["start_ns"].as_str()?.parse::<u128>().ok())
        .min()
        .unwrap_or(0);
    fn walk(spans: &[Value], ids: &[String], parent: &str, depth: usize, start: u128) {
        for sp in spans.iter().filter(|sp| {
            let p = s(&sp["parent_id"]);
            if parent.is_empty() {
                p.is_empty() || !ids.contains(&p)
            } else {
                p == parent
            }
        }) {
            let offset = sp["start_ns"]
                .as_str()
                .and_then(|t| t.parse::<u128>().ok())
                .map(|t| (t - start) as f64 / 1e6)
                .unwrap_or(0.0);
            let error = if sp["status"]["code"] == 2 {
                "  ERROR"
            } else {
                ""
            };
            println!(
                "{:>9.1}ms {:>9.1}ms  {}{} [{}]{error}",
                offset,
                sp["duration_ms"].as_f64().unwrap_or(0.0),
                "  ".repeat(depth),
                s(&sp["name"]),
                s(&sp["resource"]["service.name"]),
            );
            walk(spans, ids, &s(&sp["span_id"]), depth + 1, start);
        }
    }
    println!("{:>11} {:>11}  SPAN [SERVICE]", "AT", "DURATION");
    walk(&spans, &ids, "", 0, start);
}
