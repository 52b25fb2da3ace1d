//! `sotp mqtt ...`

use super::{Client, ClientArgs, s};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum MqttCmd {
    /// Point the tenant at its MQTT broker (QoS 1, persistent session).
    #[command(
        after_help = "Example:\n  sotp mqtt set --host 127.0.0.1 --port 1883\n  \
sotp secret set broker-password && sotp mqtt set --host mqtt.lan --username sotp --password-secret broker-password --tls"
    )]
    Set {
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 1883)]
        port: u16,
        #[arg(long)]
        username: Option<String>,
        /// Name of the secret holding the password (see `sotp secret set`).
        #[arg(long)]
        password_secret: Option<String>,
        /// Use TLS (system roots, or --tls-ca).
        #[arg(long)]
        tls: bool,
        /// PEM file of the CA to trust.
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the broker settings and the session's state and counters.
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Disconnect and forget the broker.
    Clear {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: MqttCmd) -> anyhow::Result<()> {
    match cmd {
        MqttCmd::Set {
            host,
            port,
            username,
            password_secret,
            tls,
            tls_ca,
            client,
        } => {
            let c = Client::new(&client)?;
            let ca = match tls_ca {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                ),
                None => None,
            };
            let body = json!({
                "host": host, "port": port, "username": username,
                "password_secret": password_secret, "tls": tls || ca.is_some(), "tls_ca_pem": ca,
            });
            let v = c.put("/mqtt", body).await?;
            c.print(&v, print_status);
        }
        MqttCmd::Show { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/mqtt").await?;
            c.print(&v, print_status);
        }
        MqttCmd::Clear { client } => {
            Client::new(&client)?.delete("/mqtt").await?;
            println!("MQTT broker cleared");
        }
    }
    Ok(())
}

fn print_status(v: &serde_json::Value) {
    println!(
        "broker        {} (client id {})",
        s(&v["broker"]),
        s(&v["client_id"])
    );
    println!(
        "connected     {}   connects {}",
        s(&v["connected"]),
        s(&v["connects"])
    );
    println!(
        "messages      received {}  acknowledged {}  unrouted {}  duplicates skipped {}",
        s(&v["received"]),
        s(&v["acknowledged"]),
        s(&v["unrouted"]),
        s(&v["duplicates_skipped"])
    );
    let subs: Vec<String> = v["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!(
        "subscriptions {}",
        if subs.is_empty() {
            "-".into()
        } else {
            subs.join(", ")
        }
    );
    if let Some(e) = v["last_error"].as_str() {
        println!("last error    {e}");
    }
}
