//! `sotp incidents ...`: what correlation folded alerts into.

use super::{Client, ClientArgs, s, time};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum IncidentsCmd {
    /// Incidents, newest first (--status open|resolved).
    List {
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One incident: root cause, suppressed children with the reason, timeline.
    Show {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Acknowledge an incident.
    Ack {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resolve an incident by hand.
    Resolve {
        id: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: IncidentsCmd) -> anyhow::Result<()> {
    match cmd {
        IncidentsCmd::List { status, client } => {
            let c = Client::new(&client)?;
            let path = match status {
                Some(st) => format!("/incidents?status={st}"),
                None => "/incidents".to_string(),
            };
            let v = c.get(&path).await?;
            c.print(&v, |v| {
                for i in v["incidents"].as_array().into_iter().flatten() {
                    println!(
                        "{:>5} {:<9} {} {}{}",
                        s(&i["id"]),
                        s(&i["status"]),
                        time(&i["opened_ms"]),
                        s(&i["title"]),
                        if i["acknowledged"].as_bool() == Some(true) {
                            " (acknowledged)"
                        } else {
                            ""
                        }
                    );
                }
            });
        }
        IncidentsCmd::Show { id, client } => {
            let c = Client::new(&client)?;
            let v = c.get(&format!("/incidents/{id}")).await?;
            c.print(&v, print_incident);
        }
        IncidentsCmd::Ack { id, client } => {
            let c = Client::new(&client)?;
            let v = c
                .post(&format!("/incidents/{id}/acknowledge"), json!({}))
                .await?;
            c.print(&v, print_incident);
        }
        IncidentsCmd::Resolve { id, client } => {
            let c = Client::new(&client)?;
            let v = c
                .post(&format!("/incidents/{id}/resolve"), json!({}))
                .await?;
            c.print(&v, print_incident);
        }
    }
    Ok(())
}

fn print_incident(v: &Value) {
    println!(
        "incident {}: {} [{}]",
        s(&v["id"]),
        s(&v["title"]),
        s(&v["status"])
    );
    println!(
        "root cause: {}   policy: {}",
        s(&v["root"]),
        s(&v["policy"])
    );
    for a in v["alerts"].as_array().into_iter().flatten() {
        println!(
            "  {:<5} {:<16} {}{}",
            s(&a["role"]),
            a["device"].as_str().unwrap_or("-"),
            s(&a["reason"]),
            if a["resolved_ms"].is_null() {
                ""
            } else {
                " (resolved)"
            }
        );
    }
    println!("timeline:");
    for e in v["timeline"].as_array().into_iter().flatten() {
        println!(
            "  {} {:<14} {}",
            time(&e["at_ms"]),
            s(&e["kind"]),
            s(&e["detail"])
        );
    }
}
