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
    /// Replay the recorded alerts of a window through a stored, not activated version of a
    /// correlation policy (upload it with `sotp component push --no-activate`) and through
    /// the active one, and show how their decisions differ.
    Replay {
        /// The correlation policy component.
        component: String,
        /// Its stored version to try.
        version: u32,
        /// The window: the last so long.
        #[arg(long, default_value = "1h")]
        since: String,
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
        IncidentsCmd::Replay {
            component,
            version,
            since,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    &format!(
                        "/incidents/replay?component={component}&version={version}&since={since}"
                    ),
                    json!({}),
                )
                .await?;
            c.print(&v, print_replay);
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

fn print_replay(v: &Value) {
    println!("{} intake(s) replayed", s(&v["intakes"]));
    for side in ["active", "draft"] {
        let p = &v[side];
        println!(
            "{side} ({}): {} incident(s), {} suppressed, {} passed",
            s(&p["policy"]),
            p["incidents"].as_array().map_or(0, Vec::len),
            s(&p["suppressed"]),
            s(&p["passed"])
        );
        for i in p["incidents"].as_array().into_iter().flatten() {
            println!("  {} [{}]", s(&i["title"]), s(&i["status"]));
        }
    }
    let changed = v["alerts_changed"].as_array().map_or(0, Vec::len);
    println!("{changed} alert(s) decided differently:");
    for a in v["alerts_changed"].as_array().into_iter().flatten() {
        let show = |d: &Value| {
            format!(
                "{}{}",
                d["decision"].as_str().unwrap_or("-"),
                d["root"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        };
        println!(
            "  {:<16} {} -> {}",
            a["device"].as_str().unwrap_or("-"),
            show(&a["active"]),
            show(&a["draft"])
        );
    }
}
