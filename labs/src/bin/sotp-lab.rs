//! `sotp-lab`: bring a network lab up, check it, run commands in its nodes, tear it down.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sotp_labs::{Lab, Topology, lab};
use std::path::PathBuf;
use std::time::Duration;

const STATE_DIR: &str = "/run/sotp-labs";

#[derive(Parser)]
#[command(
    name = "sotp-lab",
    about = "Network labs of Linux namespaces running FRR, net-snmp, OpenSSH, softflowd, Mosquitto and node_exporter",
    long_about = "Network labs for SOTP's end-to-end tests: each node is a network namespace running \
real daemons; the root namespace is the management station. Needs root.\n\n\
A lab's addresses derive from its id: lab N owns 10.(76+N).0.0/16, its namespaces are sl<N>-<node>, \
so labs with different ids run side by side.",
    after_help = "Examples:\n  sotp-lab up basic --id 1            # labs/topologies/basic.yaml as lab basic-1\n  \
sotp-lab check basic-1\n  sotp-lab exec basic-1 core1 -- vtysh -c 'show ip ospf neighbor'\n  \
sotp-lab down basic-1"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring a topology up (a name from labs/topologies/ or a path to a YAML file).
    Up {
        topology: String,
        #[arg(long, default_value_t = 1)]
        id: u8,
        /// Return without waiting for the checks to pass.
        #[arg(long)]
        no_wait: bool,
    },
    /// Check a running lab (SSH, SNMP, OSPF adjacencies, broker, node_exporters).
    Check { lab: String },
    /// Run a command inside a node (its namespace, hostname and config mounts).
    Exec {
        lab: String,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a running lab's nodes and addresses.
    Show { lab: String },
    /// List running labs.
    List,
    /// Tear a lab down, leaving nothing behind.
    Down { lab: String },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn state_path(lab: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{lab}.json"))
}

fn load(lab: &str) -> anyhow::Result<Lab> {
    let text = std::fs::read_to_string(state_path(lab))
        .with_context(|| format!("no running lab `{lab}` (see `sotp-lab list`)"))?;
    Ok(serde_json::from_str(&text)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up {
            topology,
            id,
            no_wait,
        } => {
            let path = if topology.ends_with(".yaml") || topology.contains('/') {
                PathBuf::from(&topology)
            } else {
                sotp_labs::topology_path(&topology)
            };
            let topo = Topology::load(&path)?;
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(100));
            let mut progress = |m: &str| spinner.set_message(m.to_string());
            let lab = Lab::up(&topo, id, &mut progress)?;
            std::fs::create_dir_all(STATE_DIR)?;
            std::fs::write(
                state_path(&lab.plan.lab),
                serde_json::to_string_pretty(&lab)?,
            )?;
            if !no_wait {
                lab.check_until(Duration::from_secs(60), &mut progress)?;
            }
            spinner.finish_and_clear();
            println!(
                "lab {} is up{}",
                lab.plan.lab,
                if no_wait { "" } else { " and healthy" }
            );
            print_nodes(&lab);
            // The lab outlives this command; `sotp-lab down` removes it.
            std::mem::forget(lab);
            Ok(())
        }
        Cmd::Check { lab } => {
            let lab = load(&lab)?;
            let checks = lab.check();
            std::mem::forget(lab);
            let mut bad = 0;
            for c in &checks {
                println!(
                    "{:<3} {:<10} {:<36} {}",
                    if c.ok { "ok" } else { "BAD" },
                    c.node,
                    c.what,
                    c.detail
                );
                bad += usize::from(!c.ok);
            }
            if bad > 0 {
                bail!("{bad} check(s) failed");
            }
            Ok(())
        }
        Cmd::Exec { lab, node, command } => {
            let l = load(&lab)?;
            let quoted: Vec<String> = command
                .iter()
                .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                .collect();
            let out = l.exec(&node, &quoted.join(" "));
            std::mem::forget(l);
            print!("{}", out?);
            Ok(())
        }
        Cmd::Show { lab } => {
            let l = load(&lab)?;
            print_nodes(&l);
            std::mem::forget(l);
            Ok(())
        }
        Cmd::List => {
            for entry in std::fs::read_dir(STATE_DIR).into_iter().flatten().flatten() {
                if let Some(name) = entry.file_name().to_string_lossy().strip_suffix(".json") {
                    println!("{name}");
                }
            }
            Ok(())
        }
        Cmd::Down { lab } => {
            let l = load(&lab)?;
            let _ = std::fs::remove_file(state_path(&lab));
            l.down()?;
            println!("lab {lab} is down; nothing left behind");
            Ok(())
        }
    }
}

fn print_nodes(lab: &Lab) {
    println!(
        "management station: {} on {}",
        lab.plan.station, lab.plan.station_link
    );
    for n in &lab.plan.nodes {
        println!(
            "  {:<10} {:<12} {:<15} netns {}{}",
            n.node.name,
            format!("{:?}", n.node.kind),
            n.management_address,
            n.netns,
            n.metrics_target()
                .map(|t| format!(", metrics http://{t}/metrics"))
                .unwrap_or_default()
        );
    }
    println!(
        "routers: SNMP v2c community `{}`, v3 user `{}` (SHA `{}`, AES `{}`); SSH `{}` / `{}` or key {}",
        lab::COMMUNITY,
        lab::V3_USER,
        lab::V3_AUTH,
        lab::V3_PRIV,
        lab::SSH_USER,
        lab::SSH_PASSWORD,
        lab.ssh_key().display()
    );
}
