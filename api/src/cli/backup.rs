//! `sotp backup ...`

use super::{Client, ClientArgs, s, time};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Devices with backups and their latest change.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The revisions of a device's configuration, newest first.
    History {
        device: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A device's configuration (latest, or --at COMMIT).
    Show {
        device: String,
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a configuration collected elsewhere (a file, or `-` for stdin) as the device's
    /// newest backup, e.g. from an Oxidized or RANCID repository. The device must be in the
    /// inventory; an unchanged configuration makes no commit.
    Import {
        device: String,
        file: std::path::PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What changed (the two latest revisions, or --from/--to).
    Diff {
        device: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: BackupCmd) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::List { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/backups").await?;
            c.print(&v, |v| {
                for d in v["devices"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:>3} revision(s), latest {} {}",
                        s(&d["device"]),
                        s(&d["revisions"]),
                        time(&d["latest"]["at_ms"]),
                        &s(&d["latest"]["commit"])[..12.min(s(&d["latest"]["commit"]).len())]
                    );
                }
            });
        }
        BackupCmd::History { device, client } => {
            let c = Client::new(&client)?;
            let v = c.get(&format!("/backups/{device}")).await?;
            c.print(&v, |v| {
                for r in v["revisions"].as_array().into_iter().flatten() {
                    println!(
                        "{} {} {:<24} {}",
                        s(&r["commit"]),
                        time(&r["at_ms"]),
                        s(&r["author"]),
                        s(&r["message"])
                    );
                }
            });
        }
        BackupCmd::Show { device, at, client } => {
            let c = Client::new(&client)?;
            let mut url = c.url(&format!("/backups/{device}/text"));
            if let Some(at) = at {
                url.push_str(&format!("?at={at}"));
            }
            print!("{}", text(&c, url).await?);
        }
        BackupCmd::Import {
            device,
            file,
            client,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            let c = Client::new(&client)?;
            let url = c.url(&format!("/backups/{device}/text"));
            let v = c
                .send(
                    c.http()
                        .put(url)
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(text),
                )
                .await?;
            c.print(&v, |v| {
                let commit = s(&v["commit"]);
                let short = &commit[..12.min(commit.len())];
                if v["changed"].as_bool() == Some(true) {
                    println!("{device}: stored as {short}");
                } else {
                    println!("{device}: unchanged since {short}");
                }
            });
        }
        BackupCmd::Diff {
            device,
            from,
            to,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut params = Vec::new();
            if let Some(f) = from {
                params.push(format!("from={f}"));
            }
            if let Some(t) = to {
                params.push(format!("to={t}"));
            }
            let url = format!(
                "{}?{}",
                c.url(&format!("/backups/{device}/diff")),
                params.join("&")
            );
            print!("{}", text(&c, url).await?);
        }
    }
    Ok(())
}

async fn text(c: &Client, url: String) -> anyhow::Result<String> {
    match c.send(c.http().get(url)).await? {
        serde_json::Value::String(t) => Ok(t),
        other => Ok(other.to_string()),
    }
}
