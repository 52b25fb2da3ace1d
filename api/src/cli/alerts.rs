//! `sotp alerts ...`: the tenant's alerts, pushing alerts by hand, the recorded intakes and
//! the label mapping.

use super::{Client, ClientArgs, s, time};
use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// The tenant's alerts, newest change first, with the device each is about.
    List {
        /// Only `firing` or `resolved` ones.
        #[arg(long)]
        status: Option<String>,
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push alerts from a file (`-`: stdin): a JSON list as Alertmanager's API takes them, or
    /// with --webhook an Alertmanager webhook payload (e.g. one captured from a receiver).
    Push {
        file: PathBuf,
        #[arg(long)]
        webhook: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The recorded intakes, newest first.
    Intakes {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the alert settings, or set them from a JSON file
    /// (`{"device_labels": ["device", "instance"], "hold_down": "30s",
    /// "alertmanager": {"url": "http://am:9093", "silence_children": true}}`; see
    /// docs/CORRELATION.md).
    Settings {
        #[arg(long)]
        set: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: AlertsCmd) -> anyhow::Result<()> {
    match cmd {
        AlertsCmd::List {
            status,
            device,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut params = Vec::new();
            if let Some(st) = status {
                params.push(format!("status={st}"));
            }
            if let Some(d) = device {
                params.push(format!("device={d}"));
            }
            let v = c.get(&format!("/alerts?{}", params.join("&"))).await?;
            c.print(&v, |v| {
                for a in v["alerts"].as_array().into_iter().flatten() {
                    println!(
                        "{:<9} {:<16} {:<28} {} {}",
                        s(&a["status"]),
                        a["device"].as_str().unwrap_or("-"),
                        s(&a["labels"]["alertname"]),
                        time(&a["last_seen_ms"]),
                        s(&a["fingerprint"])
                    );
                }
            });
        }
        AlertsCmd::Push {
            file,
            webhook,
            client,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let c = Client::new(&client)?;
            let path = if webhook {
                "/alerts/webhook"
            } else {
                "/alerts"
            };
            let v = c.post(path, body).await?;
            c.print(&v, |v| {
                let dup = if v["duplicate"].as_bool() == Some(true) {
                    " (a duplicate: nothing changed)"
                } else {
                    ""
                };
                println!(
                    "intake {}: {} alert(s), {} new, {} updated, {} resolved, {} unmapped{dup}",
                    s(&v["intake"]),
                    s(&v["alerts"]),
                    s(&v["new"]),
                    s(&v["updated"]),
                    s(&v["resolved"]),
                    s(&v["unmapped"])
                );
            });
        }
        AlertsCmd::Intakes { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/alerts/intakes").await?;
            c.print(&v, |v| {
                for i in v["intakes"].as_array().into_iter().flatten() {
                    println!(
                        "{:>6} {} {:<12} {:>6} alert(s) {:>9} bytes{}",
                        s(&i["id"]),
                        time(&i["received_ms"]),
                        s(&i["source"]),
                        s(&i["alerts"]),
                        s(&i["bytes"]),
                        if i["duplicate"].as_bool() == Some(true) {
                            " duplicate"
                        } else {
                            ""
                        }
                    );
                }
            });
        }
        AlertsCmd::Settings { set, client } => {
            let c = Client::new(&client)?;
            let v = match set {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let body: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    c.put("/alerts/settings", body).await?
                }
                None => c.get("/alerts/settings").await?,
            };
            c.print(&v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
    }
    Ok(())
}
