//! `sotp secret ...`

use super::{Client, ClientArgs, s, time};
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::io::Read;

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Set a secret; the value is read from --value or, safer, from standard input.
    Set {
        name: String,
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List secret names.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: SecretCmd) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Set {
            name,
            value,
            client,
        } => {
            let value = match value {
                Some(v) => v,
                None => {
                    let mut v = String::new();
                    std::io::stdin()
                        .read_to_string(&mut v)
                        .context("reading the secret from standard input")?;
                    v.trim_end_matches('\n').to_string()
                }
            };
            Client::new(&client)?
                .put(&format!("/secrets/{name}"), json!({ "value": value }))
                .await?;
            println!("secret {name} stored");
        }
        SecretCmd::List { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/secrets").await?;
            c.print(&v, |v| {
                for sec in v["secrets"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} updated {}",
                        s(&sec["name"]),
                        time(&sec["updated_ms"])
                    );
                }
            });
        }
        SecretCmd::Delete { name, client } => {
            Client::new(&client)?
                .delete(&format!("/secrets/{name}"))
                .await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}
