//! `sotp scrape targets`

use super::{Client, ClientArgs, s, time};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ScrapeCmd {
    /// Scrape targets of the last ten minutes: up or down, last scrape, duration, samples, error.
    Targets {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: ScrapeCmd) -> anyhow::Result<()> {
    match cmd {
        ScrapeCmd::Targets { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/scrape/targets").await?;
            c.print(&v, |v| {
                let targets = v["targets"].as_array().cloned().unwrap_or_default();
                if targets.is_empty() {
                    println!("no scrape targets in the last ten minutes");
                    return;
                }
                println!(
                    "{:<4}  {:<19}  {:>8}  {:>7}  {:<16} {:<10} INSTANCE",
                    "UP", "LAST SCRAPE", "DURATION", "SAMPLES", "COMPONENT", "JOB"
                );
                for t in targets {
                    println!(
                        "{:<4}  {:<19}  {:>7.3}s  {:>7}  {:<16} {:<10} {}{}",
                        if t["up"] == true { "up" } else { "DOWN" },
                        time(&t["last_scrape_ms"]),
                        t["duration_seconds"].as_f64().unwrap_or(0.0),
                        t["samples"]
                            .as_f64()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        s(&t["component"]),
                        s(&t["job"]),
                        s(&t["instance"]),
                        t["last_error"]
                            .as_str()
                            .map(|e| format!("\n      {e}"))
                            .unwrap_or_default()
                    );
                }
            });
        }
    }
    Ok(())
}
