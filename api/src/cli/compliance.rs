//! `sotp compliance ...`: golden-config rule files, waivers, audits and dry runs.

use super::{Client, ClientArgs, s, time};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ComplianceCmd {
    /// Upload a rule file (YAML) as its next version; the file name is the rule file's name.
    Push {
        file: PathBuf,
        /// Store it without activating it (e.g. to dry-run it first).
        #[arg(long)]
        no_activate: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rule files with their active and newest versions.
    Rules {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A rule file's text: the active version, or --version N.
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Activate a stored version of a rule file.
    Activate {
        name: String,
        version: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Go back to the version active before the current one.
    Rollback {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What a draft would change, against today's backups: which devices change status and
    /// which findings appear or go away. Nothing is stored or activated.
    DryRun {
        /// The draft (its file name is the rule file it would replace).
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What a stored, not activated version of a rule component would change (upload it
    /// with `sotp component push --no-activate` first), compared with the active rules.
    DryRunComponent {
        /// The rule component's name.
        name: String,
        /// The stored version to try.
        version: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run an audit now and show its summary (with progress on long runs).
    Audit {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A report: per device (or one --device with its findings and remediation).
    Report {
        /// An audit id; default the newest.
        #[arg(long)]
        id: Option<i64>,
        #[arg(long)]
        device: Option<String>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The trend: every audit kept with its summary.
    Audits {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Waive a rule on a device until it expires (e.g. --expires-in 30d).
    Waive {
        device: String,
        rule: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "30d")]
        expires_in: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the audit schedule, or set it: --cron "0 2 * * *" --timezone Europe/Amsterdam
    /// (six fields with seconds are allowed), --disable to stop scheduled audits.
    Schedule {
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Waivers in force.
    Waivers {
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn file_name(path: &std::path::Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .context("the rule file's path has no file name")
}

async fn send_yaml(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    text: String,
) -> anyhow::Result<Value> {
    c.send(
        c.http()
            .request(method, c.url(path))
            .header("content-type", "application/yaml")
            .body(text),
    )
    .await
}

pub async fn exec(cmd: ComplianceCmd) -> anyhow::Result<()> {
    match cmd {
        ComplianceCmd::Push {
            file,
            no_activate,
            client,
        } => {
            let c = Client::new(&client)?;
            let name = file_name(&file)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let path = format!("/compliance/rules/{name}?activate={}", !no_activate);
            let v = send_yaml(&c, reqwest::Method::PUT, &path, text).await?;
            c.print(&v, |v| {
                let what = if v["created"] == true {
                    "uploaded as version"
                } else {
                    "unchanged: it is version"
                };
                let state = if v["active"] == true {
                    "active"
                } else {
                    "not active"
                };
                println!(
                    "{} {what} {} ({} rules, {state})",
                    s(&v["file"]),
                    s(&v["version"]),
                    s(&v["rules"])
                );
            });
        }
        ComplianceCmd::Rules { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/compliance/rules").await?;
            c.print(&v, |v| {
                for f in v["files"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} active {:<4} newest {:<4} ({} versions kept)",
                        s(&f["file"]),
                        s(&f["active_version"]),
                        s(&f["latest_version"]),
                        s(&f["versions"])
                    );
                }
            });
        }
        ComplianceCmd::Show {
            name,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut url = c.url(&format!("/compliance/rules/{name}"));
            if let Some(v) = version {
                url.push_str(&format!("?version={v}"));
            }
            match c.send(c.http().get(url)).await? {
                Value::String(t) => print!("{t}"),
                other => println!("{other}"),
            }
        }
        ComplianceCmd::Activate {
            name,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    &format!("/compliance/rules/{name}/activate"),
                    json!({ "version": version }),
                )
                .await?;
            c.print(&v, |v| {
                println!("{name}: version {} is active", s(&v["active_version"]))
            });
        }
        ComplianceCmd::Rollback { name, client } => {
            let c = Client::new(&client)?;
            let v = c
                .post(&format!("/compliance/rules/{name}/rollback"), json!({}))
                .await?;
            c.print(&v, |v| {
                println!("{name}: back to version {}", s(&v["active_version"]))
            });
        }
        ComplianceCmd::DryRun { file, client } => {
            let c = Client::new(&client)?;
            let name = file_name(&file)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let v = send_yaml(
                &c,
                reqwest::Method::POST,
                &format!("/compliance/rules/{name}/dry-run"),
                text,
            )
            .await?;
            c.print(&v, print_dry_run);
        }
        ComplianceCmd::DryRunComponent {
            name,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    &format!("/compliance/components/{name}/dry-run?version={version}"),
                    json!({}),
                )
                .await?;
            c.print(&v, print_dry_run);
        }
        ComplianceCmd::Audit { client } => {
            let c = Client::new(&client)?;
            let v = run_with_progress(&c).await?;
            c.print(&v, |v| {
                let sm = &v["summary"];
                println!(
                    "audit {}: {} of {} devices compliant ({:.1} %), features {:.1} %, {} errors, {} waived",
                    s(&v["id"]),
                    s(&sm["compliant_devices"]),
                    s(&sm["devices"]),
                    sm["percent_devices"].as_f64().unwrap_or(0.0),
                    sm["percent_features"].as_f64().unwrap_or(0.0),
                    s(&sm["errors"]),
                    s(&sm["waived"])
                );
            });
        }
        ComplianceCmd::Report {
            id,
            device,
            csv,
            client,
        } => {
            let c = Client::new(&client)?;
            let id = id.map_or("latest".to_string(), |i| i.to_string());
            let mut params = Vec::new();
            if let Some(d) = &device {
                params.push(format!("device={d}"));
            }
            if csv {
                params.push("format=csv".into());
            }
            let url = format!(
                "{}?{}",
                c.url(&format!("/compliance/audits/{id}")),
                params.join("&")
            );
            let v = c.send(c.http().get(url)).await?;
            if csv {
                print!("{}", v.as_str().unwrap_or_default());
                return Ok(());
            }
            c.print(&v, |v| print_report(v, device.is_some()));
        }
        ComplianceCmd::Audits { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/compliance/audits").await?;
            c.print(&v, |v| {
                for a in v["audits"].as_array().into_iter().flatten() {
                    let sm = &a["summary"];
                    println!(
                        "{:>5} {} {:>6.1} % of {} devices compliant, {} errors ({})",
                        s(&a["id"]),
                        time(&a["started_ms"]),
                        sm["percent_devices"].as_f64().unwrap_or(0.0),
                        s(&sm["devices"]),
                        s(&sm["errors"]),
                        s(&a["trigger"])
                    );
                }
            });
        }
        ComplianceCmd::Waive {
            device,
            rule,
            reason,
            expires_in,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    "/compliance/waivers",
                    json!({ "device": device, "rule": rule, "reason": reason, "expires_in": expires_in }),
                )
                .await?;
            c.print(&v, |v| {
                println!("waiver {} until {}", s(&v["id"]), time(&v["expires_ms"]))
            });
        }
        ComplianceCmd::Schedule {
            cron,
            timezone,
            disable,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut v = c.get("/compliance/schedule").await?;
            if cron.is_some() || timezone.is_some() || disable {
                let body = json!({
                    "cron": cron.unwrap_or_else(|| s(&v["cron"])),
                    "timezone": timezone.unwrap_or_else(|| s(&v["timezone"])),
                    "enabled": !disable,
                });
                v = c.put("/compliance/schedule", body).await?;
            }
            c.print(&v, |v| {
                let next = if v["next_ms"].is_null() {
                    "never".to_string()
                } else {
                    time(&v["next_ms"])
                };
                println!(
                    "audits run at `{}` ({}){}; next: {next}",
                    s(&v["cron"]),
                    s(&v["timezone"]),
                    if v["enabled"] == true {
                        ""
                    } else {
                        ", disabled"
                    }
                );
            });
        }
        ComplianceCmd::Waivers { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/compliance/waivers").await?;
            c.print(&v, |v| {
                for w in v["waivers"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:<24} {:<24} until {}  {}",
                        s(&w["id"]),
                        s(&w["device"]),
                        s(&w["rule"]),
                        time(&w["expires_ms"]),
                        s(&w["reason"])
                    );
                }
            });
        }
    }
    Ok(())
}

/// Start an audit and follow its progress until its report is stored.
async fn run_with_progress(c: &Client) -> anyhow::Result<Value> {
    let before = c.get("/compliance/audits").await?;
    let last = before["audits"]
        .as_array()
        .and_then(|a| a.last())
        .map(|a| a["id"].clone());
    c.post("/compliance/audits", json!({})).await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "auditing {pos}/{len} devices {wide_bar} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(p) = c.get_optional("/compliance/audits/running").await? else {
            break;
        };
        bar.set_length(p["devices"].as_u64().unwrap_or(0));
        bar.set_position(p["done"].as_u64().unwrap_or(0));
    }
    bar.finish_and_clear();
    let report = c.get("/compliance/audits/latest").await?;
    if Some(&report["id"]) == last.as_ref() {
        anyhow::bail!("the audit did not store a report; see the server's log");
    }
    Ok(json!({ "id": report["id"], "sources": report["sources"], "summary": report["summary"] }))
}

fn print_dry_run(v: &Value) {
    let (a, d) = (&v["active"], &v["draft"]);
    println!(
        "compliant devices: {} now, {} with the draft (of {})",
        s(&a["compliant_devices"]),
        s(&d["compliant_devices"]),
        s(&d["devices"])
    );
    for c in v["devices_changed"].as_array().into_iter().flatten() {
        let word = |b: &Value| {
            if *b == true {
                "compliant"
            } else {
                "NOT compliant"
            }
        };
        println!(
            "  {:<24} {} -> {}",
            s(&c["device"]),
            word(&c["compliant_before"]),
            word(&c["compliant_after"])
        );
    }
    for (label, key) in [("new", "findings_new"), ("gone", "findings_gone")] {
        for f in v[key].as_array().into_iter().flatten() {
            println!(
                "  {label:<4} {:<24} {:<24} {}",
                s(&f["device"]),
                s(&f["rule"]),
                s(&f["status"])
            );
        }
    }
}

fn print_report(v: &Value, detail: bool) {
    let sm = &v["summary"];
    println!(
        "audit {} ({}): {} of {} devices compliant ({:.1} %)",
        s(&v["id"]),
        v["sources"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        s(&sm["compliant_devices"]),
        s(&sm["devices"]),
        sm["percent_devices"].as_f64().unwrap_or(0.0)
    );
    for d in v["devices"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>6.1} %  {}",
            s(&d["device"]),
            d["percent"].as_f64().unwrap_or(0.0),
            if d["compliant"] == true {
                "compliant"
            } else {
                "NOT compliant"
            }
        );
        if !detail {
            continue;
        }
        for r in d["results"].as_array().into_iter().flatten() {
            println!(
                "  {:<10} {:<28} {}",
                s(&r["status"]),
                s(&r["rule"]),
                s(&r["message"])
            );
            for l in r["missing"].as_array().into_iter().flatten() {
                println!("      + {}", s(l));
            }
            for l in r["extra"].as_array().into_iter().flatten() {
                println!("      - {}", s(l));
            }
            if r["waiver"].is_object() {
                println!(
                    "      waived until {}: {}",
                    time(&r["waiver"]["expires_ms"]),
                    s(&r["waiver"]["reason"])
                );
            }
        }
        if let Some(fix) = d["remediation"].as_array().filter(|a| !a.is_empty()) {
            println!("  remediation:");
            for l in fix {
                println!("    {}", s(l));
            }
        }
    }
}
