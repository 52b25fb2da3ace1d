//! `sotp component ...`

use super::{Client, ClientArgs, s, time};
use anyhow::{Context, anyhow};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum ComponentCmd {
    /// Upload a new version (and activate it, unless --no-activate).
    #[command(
        after_help = "PATH is a manifest (sotp.toml) or a directory holding one. Without \
--wasm, the component is looked for next to the manifest, then as \
target/wasm32-wasip2/release/<name>.wasm in the manifest's directory or its parents.\n\n\
Example:\n  sotp component push guests/tick-counter"
    )]
    Push {
        path: PathBuf,
        /// The component binary (.wasm).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Store the version without switching to it.
        #[arg(long)]
        no_activate: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tenant's components.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a component: state, versions, counters, last error, recent log.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch a component to one of its versions (hot swap).
    Activate {
        name: String,
        version: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Go back to the previously active version, or to --to VERSION.
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the component's log (guest log, stdout/stderr, host events).
    Logs {
        name: String,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push a message to the component's on-message export.
    Send {
        name: String,
        topic: String,
        payload: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a component and delete it with all its versions.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec(cmd: ComponentCmd) -> anyhow::Result<()> {
    match cmd {
        ComponentCmd::Push {
            path,
            wasm,
            no_activate,
            client,
        } => push(&Client::new(&client)?, &path, wasm, !no_activate).await,
        ComponentCmd::List { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/components").await?;
            c.print(&v, |v| {
                println!(
                    "{:<28} {:<10} {:>7}  {:<12} LAST ERROR",
                    "NAME", "STATE", "VERSION", "LABEL"
                );
                for comp in v["components"].as_array().into_iter().flatten() {
                    println!(
                        "{:<28} {:<10} {:>7}  {:<12} {}",
                        s(&comp["name"]),
                        s(&comp["state"]),
                        s(&comp["active_version"]),
                        s(&comp["active_label"]),
                        comp["last_error"]["message"].as_str().unwrap_or("")
                    );
                }
            });
            Ok(())
        }
        ComponentCmd::Show { name, client } => {
            let c = Client::new(&client)?;
            let v = c.get(&format!("/components/{name}?log_lines=15")).await?;
            c.print(&v, print_component);
            Ok(())
        }
        ComponentCmd::Activate {
            name,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    &format!("/components/{name}/activate"),
                    json!({ "version": version }),
                )
                .await?;
            c.print(&v, print_activation);
            Ok(())
        }
        ComponentCmd::Rollback { name, to, client } => {
            let c = Client::new(&client)?;
            let body = match to {
                Some(v) => json!({ "version": v }),
                None => json!({}),
            };
            let v = c
                .post(&format!("/components/{name}/rollback"), body)
                .await?;
            c.print(&v, print_activation);
            Ok(())
        }
        ComponentCmd::Logs {
            name,
            lines,
            follow,
            client,
        } => logs(&Client::new(&client)?, &name, lines, follow).await,
        ComponentCmd::Send {
            name,
            topic,
            payload,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .post(
                    &format!("/components/{name}/messages"),
                    json!({ "topic": topic, "payload": payload }),
                )
                .await?;
            c.print(&v, |_| println!("delivered; its output is stored"));
            Ok(())
        }
        ComponentCmd::Delete { name, client } => {
            let c = Client::new(&client)?;
            c.delete(&format!("/components/{name}")).await?;
            println!("deleted {name}");
            Ok(())
        }
    }
}

async fn push(
    c: &Client,
    path: &Path,
    wasm: Option<PathBuf>,
    activate: bool,
) -> anyhow::Result<()> {
    let manifest_path = if path.is_dir() {
        path.join("sotp.toml")
    } else {
        path.to_path_buf()
    };
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading manifest {}", manifest_path.display()))?;
    let name = manifest_name(&manifest)
        .ok_or_else(|| anyhow!("{} has no `name = \"...\"` line", manifest_path.display()))?;
    let wasm_path = match wasm {
        Some(p) => p,
        None => find_wasm(&manifest_path, &name)?,
    };
    let bytes =
        std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "uploading {} ({} KiB), compiling{}",
        wasm_path.display(),
        bytes.len() / 1024,
        if activate { ", activating" } else { "" }
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let form = reqwest::multipart::Form::new()
        .part("manifest", reqwest::multipart::Part::text(manifest))
        .part(
            "wasm",
            reqwest::multipart::Part::bytes(bytes).file_name("component.wasm"),
        );
    let result = c
        .send(
            c.http()
                .post(c.url(&format!("/components?activate={activate}")))
                .multipart(form),
        )
        .await;
    spinner.finish_and_clear();
    let v = result?;
    c.print(&v, |v| {
        println!(
            "{} version {} ({}) uploaded; compiled in {:.0} ms ({}){}",
            s(&v["component"]),
            s(&v["version"]),
            s(&v["label"]),
            v["compile_ms"].as_f64().unwrap_or(0.0),
            s(&v["compiled_from"]),
            if v["activated"].as_bool() == Some(true) {
                "; active now"
            } else {
                ""
            }
        )
    });
    Ok(())
}

fn manifest_name(manifest: &str) -> Option<String> {
    let table: toml::Table = manifest.parse().ok()?;
    table.get("name")?.as_str().map(str::to_string)
}

fn find_wasm(manifest: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let file = format!("{}.wasm", name.replace('-', "_"));
    let mut candidates = vec![dir.join(&file), dir.join(format!("{name}.wasm"))];
    if let Some(target) = std::env::var_os("SOTP_GUEST_TARGET_DIR") {
        candidates.push(
            PathBuf::from(target)
                .join("wasm32-wasip2/release")
                .join(&file),
        );
    }
    let mut up = Some(dir.as_path());
    while let Some(d) = up {
        candidates.push(d.join("target/wasm32-wasip2/release").join(&file));
        up = d.parent();
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "no {file} found near {}; build it (scripts/build-guests) or pass --wasm",
            manifest.display()
        )
    })
}

fn print_component(v: &Value) {
    println!("component   {}", s(&v["name"]));
    println!(
        "state       {}{}",
        s(&v["state"]),
        v["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!("active      {}", s(&v["active_version"]));
    let counters = &v["counters"];
    println!(
        "calls       init {}  tick {}  message {}",
        s(&counters["calls"]["init"]),
        s(&counters["calls"]["tick"]),
        s(&counters["calls"]["message"])
    );
    println!(
        "errors      {}   denied {}   traps cpu {} memory {} panic {} other {}",
        s(&counters["errors"]),
        s(&counters["denied"]),
        s(&counters["traps"]["cpu_deadline"]),
        s(&counters["traps"]["memory_limit"]),
        s(&counters["traps"]["panic"]),
        s(&counters["traps"]["other"])
    );
    println!(
        "stored      {} samples, {} log records; {} dropped",
        s(&counters["samples_stored"]),
        s(&counters["logs_stored"]),
        s(&counters["emitted_dropped"])
    );
    if let Some(e) = v["last_error"].as_object() {
        println!("last error  {} {}", time(&e["at_ms"]), s(&e["message"]));
    }
    println!("\nversions:");
    for ver in v["versions"].as_array().into_iter().flatten() {
        println!(
            "  {:>3}  {:<12} {:<9} {}  {}",
            s(&ver["version"]),
            s(&ver["label"]),
            s(&ver["status"]),
            time(&ver["uploaded_ms"]),
            ver["status_detail"].as_str().unwrap_or("")
        );
    }
    println!("\nrecent log:");
    for line in v["recent_log"].as_array().into_iter().flatten() {
        print_log_line(line);
    }
}

fn print_log_line(line: &Value) {
    println!(
        "  {} {:<5} {:<6} v{} {}",
        time(&line["at_ms"]),
        s(&line["level"]),
        s(&line["source"]),
        s(&line["version"]),
        s(&line["message"])
    );
}

fn print_activation(v: &Value) {
    println!(
        "{} now runs version {} (was {}); warm-up {:.1} ms",
        s(&v["component"]),
        s(&v["version"]),
        s(&v["previous"]),
        v["warm_ms"].as_f64().unwrap_or(0.0)
    );
}

async fn logs(c: &Client, name: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
    // Lines come oldest first; remember the newest timestamp printed and how many lines of
    // that same millisecond were printed, so following neither repeats nor skips a line.
    let mut last_ms: i64 = i64::MIN;
    let mut printed_at_last = 0usize;
    loop {
        let v = c
            .get(&format!("/components/{name}/logs?lines={lines}"))
            .await?;
        if c.json && !follow {
            c.print(&v, |_| {});
            return Ok(());
        }
        let mut same_ms_seen = 0usize;
        for line in v["lines"].as_array().into_iter().flatten() {
            let at = line["at_ms"].as_i64().unwrap_or(0);
            if at < last_ms {
                continue;
            }
            if at == last_ms {
                same_ms_seen += 1;
                if same_ms_seen <= printed_at_last {
                    continue;
                }
                printed_at_last += 1;
            } else {
                last_ms = at;
                printed_at_last = 1;
                same_ms_seen = 1;
            }
            print_log_line(line);
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
