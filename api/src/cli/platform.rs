//! `sotp platform health`

use super::{Client, ClientArgs, s, time};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PlatformCmd {
    /// SOTP watching itself: its built-in probes of the sign-in page and API, and the web UI's
    /// latency as browsers measured it (the platform admin token, or a platform tenant token).
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: PlatformCmd) -> anyhow::Result<()> {
    match cmd {
        PlatformCmd::Health { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/platform/health").await?;
            c.print(&v, |v| {
                println!(
                    "probes of {} (tenant {})",
                    s(&v["base_url"]),
                    s(&v["tenant"])
                );
                let probes = v["probes"].as_array().cloned().unwrap_or_default();
                if probes.is_empty() {
                    println!("  no probe has run yet");
                }
                println!(
                    "{:<4}  {:<19}  {:>6}  {:>9}  {:>13}  PROBE",
                    "UP", "LAST RUN", "STATUS", "DURATION", "SUCCESS (1h)"
                );
                for p in probes {
                    let runs = p["runs"].as_u64().unwrap_or(0);
                    let ok = p["successes"].as_u64().unwrap_or(0);
                    println!(
                        "{:<4}  {:<19}  {:>6}  {:>8.1}ms  {:>13}  {}{}",
                        if p["up"] == true { "up" } else { "DOWN" },
                        time(&p["last_run_ms"]),
                        p["status_code"]
                            .as_u64()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        p["duration_seconds"].as_f64().unwrap_or(0.0) * 1e3,
                        format!("{ok}/{runs}"),
                        s(&p["probe"]),
                        p["last_error"]
                            .as_str()
                            .map(|e| format!("\n      {e}"))
                            .unwrap_or_default()
                    );
                }
                let latency = |name: &str, l: &serde_json::Value| {
                    let ms = |k: &str| {
                        l[k].as_f64()
                            .map(|v| format!("{v:.0} ms"))
                            .unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "{name:<11} {:>6}  p50 {:>8}  p95 {:>8}",
                        l["count"].as_u64().unwrap_or(0),
                        ms("p50_ms"),
                        ms("p95_ms")
                    );
                };
                if v["rum"] == true {
                    println!("\nthe web UI, from its browsers' spans (last hour):");
                    latency("page loads", &v["ui_page_loads"]);
                    latency("API calls", &v["ui_api_calls"]);
                } else {
                    println!("\nthe web UI's RUM is off ([platform] rum = false)");
                }
            });
        }
    }
    Ok(())
}
