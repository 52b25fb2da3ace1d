//! `sotp device ...`

use super::{Client, ClientArgs, s};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// List devices.
    List {
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one device (credentials appear as secret names only).
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or replace devices from a file: YAML/JSON list, or CSV (by the .csv extension).
    #[command(
        after_help = "CSV columns: name,address,platform,site,role,tags,parents,snmp_version,\
snmp_community_secret,snmp_user,snmp_auth_protocol,snmp_auth_secret,snmp_priv_protocol,snmp_priv_secret,\
ssh_user,ssh_password_secret,ssh_key_secret (tags and parents `;`-separated)."
    )]
    Import {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a device.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget a device's pinned SSH host key, after you checked the change is legitimate.
    ForgetHostKey {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::List { tag, client } => {
            let c = Client::new(&client)?;
            let path = match tag {
                Some(t) => format!("/devices?tag={t}"),
                None => "/devices".into(),
            };
            let v = c.get(&path).await?;
            c.print(&v, |v| {
                println!(
                    "{:<20} {:<18} {:<14} {:<10} {:<10} TAGS",
                    "NAME", "ADDRESS", "PLATFORM", "SITE", "ROLE"
                );
                for d in v["devices"].as_array().into_iter().flatten() {
                    let tags: Vec<String> =
                        d["tags"].as_array().into_iter().flatten().map(s).collect();
                    println!(
                        "{:<20} {:<18} {:<14} {:<10} {:<10} {}",
                        s(&d["name"]),
                        s(&d["address"]),
                        s(&d["platform"]),
                        s(&d["site"]),
                        s(&d["role"]),
                        tags.join(",")
                    );
                }
            });
        }
        DeviceCmd::Show { name, client } => {
            let c = Client::new(&client)?;
            let v = c.get(&format!("/devices/{name}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DeviceCmd::Import { file, client } => {
            let c = Client::new(&client)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let csv = file.extension().is_some_and(|e| e == "csv");
            let req = c
                .http()
                .post(c.url("/devices/import"))
                .header(
                    "content-type",
                    if csv { "text/csv" } else { "application/yaml" },
                )
                .body(text);
            let v = c.send(req).await?;
            c.print(&v, |v| {
                println!("{} created, {} updated", s(&v["created"]), s(&v["updated"]))
            });
        }
        DeviceCmd::Delete { name, client } => {
            Client::new(&client)?
                .delete(&format!("/devices/{name}"))
                .await?;
            println!("deleted {name}");
        }
        DeviceCmd::ForgetHostKey { name, client } => {
            Client::new(&client)?
                .delete(&format!("/devices/{name}/ssh-host-key"))
                .await?;
            println!("the next SSH connection to {name} pins its key anew");
        }
    }
    Ok(())
}
