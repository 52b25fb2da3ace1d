//! `sotp flows top|rate|status`

use super::{Client, ClientArgs, query_string, s, time};
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Subcommand)]
pub enum FlowsCmd {
    /// Top talkers, applications, ports ... by bytes, packets or flows over a window.
    #[command(after_help = "Examples:\n  \
sotp flows top                                   # top 10 sources by bytes, last hour\n  \
sotp flows top --by app --since 15m             # top applications\n  \
sotp flows top --by src_addr,dst_addr --measure packets --protocol udp\n  \
sotp flows top --by dst_port --addr 10.1.0.5 --limit 20")]
    Top(TopArgs),
    /// Bytes/s and packets/s per group per time bucket.
    #[command(after_help = "Examples:\n  \
sotp flows rate --by src_addr,app --step 5m --since 1h   # bytes/s by source and application\n  \
sotp flows rate --exporter 10.0.0.1 --step 1m")]
    Rate(RateArgs),
    /// Listeners, templates and decoder counters.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct Window {
    /// How far back from now (default 1h), e.g. 15m.
    #[arg(long)]
    since: Option<String>,
    /// Start: ms since the epoch, RFC 3339, now-5m.
    #[arg(long, conflicts_with = "since")]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
    /// Group by (comma-separated): src_addr, dst_addr, app, exporter, ip_protocol, src_port,
    /// dst_port, in_if, out_if.
    #[arg(long)]
    by: Option<String>,
    /// Only flows from this exporter.
    #[arg(long)]
    exporter: Option<String>,
    /// Only flows from or to this address.
    #[arg(long)]
    addr: Option<String>,
    #[arg(long)]
    src_addr: Option<String>,
    #[arg(long)]
    dst_addr: Option<String>,
    /// Only flows from or to this port.
    #[arg(long)]
    port: Option<u16>,
    /// IP protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    protocol: Option<String>,
    /// Only this application (see docs/FLOWS.md for the table).
    #[arg(long)]
    app: Option<String>,
    /// Rows (top) or groups per bucket (rate).
    #[arg(long)]
    limit: Option<usize>,
}

impl Window {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (k, v) in [
            ("since", &self.since),
            ("start", &self.start),
            ("end", &self.end),
            ("by", &self.by),
            ("exporter", &self.exporter),
            ("addr", &self.addr),
            ("src_addr", &self.src_addr),
            ("dst_addr", &self.dst_addr),
            ("protocol", &self.protocol),
            ("app", &self.app),
        ] {
            if let Some(v) = v {
                p.push((k, v.clone()));
            }
        }
        if let Some(port) = self.port {
            p.push(("port", port.to_string()));
        }
        if let Some(limit) = self.limit {
            p.push(("limit", limit.to_string()));
        }
        p
    }
}

#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    window: Window,
    /// bytes (default), packets or flows.
    #[arg(long)]
    measure: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct RateArgs {
    #[command(flatten)]
    window: Window,
    /// Bucket width (default 5m).
    #[arg(long)]
    step: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

fn group_text(row: &Value) -> String {
    row["group"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1234567 → "1.2 M".
fn si(v: f64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if v >= scale {
            return format!("{:.1} {unit}", v / scale);
        }
    }
    format!("{v:.0}")
}

pub async fn exec(cmd: FlowsCmd) -> anyhow::Result<()> {
    match cmd {
        FlowsCmd::Top(args) => {
            let c = Client::new(&args.client)?;
            let mut params = args.window.params();
            if let Some(m) = &args.measure {
                params.push(("measure", m.clone()));
            }
            let v = c
                .get(&format!("/flows/top?{}", query_string(&params)))
                .await?;
            c.print(&v, |v| {
                let rows = v["rows"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no flows in the window");
                    return;
                }
                println!("{:>10}  {:>10}  {:>8}  GROUP", "BYTES", "PACKETS", "FLOWS");
                for r in rows {
                    let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
                    println!(
                        "{:>10}  {:>10}  {:>8}  {}",
                        si(n("bytes")),
                        si(n("packets")),
                        n("flows"),
                        group_text(&r)
                    );
                }
            });
        }
        FlowsCmd::Rate(args) => {
            let c = Client::new(&args.client)?;
            let mut params = args.window.params();
            if let Some(step) = &args.step {
                params.push(("step", step.clone()));
            }
            let v = c
                .get(&format!("/flows/rate?{}", query_string(&params)))
                .await?;
            c.print(&v, |v| {
                let rows = v["rows"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no flows in the window");
                    return;
                }
                println!(
                    "{:<20}  {:>12}  {:>10}  GROUP",
                    "BUCKET", "BYTES/S", "PACKETS/S"
                );
                for r in rows {
                    let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
                    println!(
                        "{:<20}  {:>12}  {:>10}  {}",
                        time(&r["bucket_ms"]),
                        si(n("bytes_per_second")),
                        si(n("packets_per_second")),
                        group_text(&r)
                    );
                }
            });
        }
        FlowsCmd::Status { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/flows/status").await?;
            c.print(&v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
    }
    Ok(())
}
