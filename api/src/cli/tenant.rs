//! `sotp tenant ...` and `sotp token ...`

use super::{Client, ClientArgs, s, time};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant and print its first token.
    Create {
        /// Lowercase letters, digits and `-`.
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Quota: number of components.
        #[arg(long)]
        max_components: Option<u32>,
        /// Quota: total memory of active components, e.g. 512MiB.
        #[arg(long)]
        max_memory: Option<String>,
        /// Quota: distinct series (metric + label set).
        #[arg(long)]
        max_series: Option<u64>,
        /// Quota: live component instances.
        #[arg(long)]
        max_instances: Option<u32>,
        /// Quota: the tenant's calls running at once.
        #[arg(long)]
        max_concurrent_calls: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a tenant's quotas and what it uses of them: your own tenant, or (admin) ID.
    Show {
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a tenant and everything it owns: tokens, components, secrets, devices,
    /// telemetry, backups, flows and files. A tenant created again with its id starts empty.
    Delete {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token: for --tenant (admin), for your own tenant, or an admin token.
    ///
    /// Scopes: read (see everything of the tenant), deploy (components), inventory (devices,
    /// backup settings), secrets (secrets, and deploying components granted secrets or
    /// devices), admin (all of them, tokens and the MQTT broker), ingest (push alerts and
    /// spans only, not even read: for an Alertmanager webhook or a backend's OTLP exporter),
    /// rum (spans only, from the tenant's allowed origins: the key a web page's RUM script
    /// carries). Without --scope the new token gets the creating token's scopes.
    #[command(
        after_help = "Examples:\n  sotp token create --name grafana --scope read --expires-in 90d\n  sotp token create --name ci --scope deploy --scope secrets\n  sotp token create --name alertmanager --scope ingest\n  sotp token create --name shop-rum --scope rum"
    )]
    Create {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value = "cli")]
        name: String,
        /// A scope to give (repeat for several): read, deploy, inventory, secrets, admin, ingest
        /// (alert and span intake only), rum (spans from allowed origins only: browser-safe).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Stop accepting the token after this long, e.g. 12h or 90d.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens (never their values).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn exec_tenant(cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Create {
            id,
            name,
            max_components,
            max_memory,
            max_series,
            max_instances,
            max_concurrent_calls,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "id": id });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(n) = max_components {
                body["max_components"] = json!(n);
            }
            if let Some(m) = max_memory {
                body["max_memory"] = json!(m);
            }
            for (key, value) in [
                ("max_series", max_series),
                ("max_instances", max_instances.map(u64::from)),
                ("max_concurrent_calls", max_concurrent_calls.map(u64::from)),
            ] {
                if let Some(v) = value {
                    body[key] = json!(v);
                }
            }
            let v = c.post("/tenants", body).await?;
            c.print(&v, |v| {
                println!("tenant {} created", s(&v["tenant"]["id"]));
                println!("token (shown once): {}", s(&v["token"]["token"]));
            });
        }
        TenantCmd::Show { id, client } => {
            let c = Client::new(&client)?;
            let path = match id {
                Some(id) => format!("/tenants/{id}"),
                None => "/tenant".to_string(),
            };
            let v = c.get(&path).await?;
            c.print(&v, |v| {
                let u = &v["usage"];
                let l = &u["limits"];
                println!("tenant {} ({})", s(&v["id"]), s(&v["name"]));
                println!("  series           {:>10} of {}", s(&u["series"]), s(&l["max_series"]));
                println!(
                    "  live instances   {:>10} of {}",
                    s(&u["live_instances"]),
                    s(&l["max_instances"])
                );
                println!(
                    "  running calls    {:>10} of {} ({} waiting)",
                    s(&u["running_calls"]),
                    s(&l["max_concurrent_calls"]),
                    s(&u["waiting_calls"])
                );
                println!("  components quota {:>10}", s(&v["max_components"]));
                println!("  memory quota     {:>10}", s(&v["max_memory_bytes"]));
                println!(
                    "  refused: {} emit batches (series quota), {} instances; {} calls waited for a slot",
                    s(&u["series_refused"]),
                    s(&u["instances_refused"]),
                    s(&u["calls_waited"])
                );
            });
        }
        TenantCmd::List { client } => {
            let c = Client::new(&client)?;
            let v = c.get("/tenants").await?;
            c.print(&v, |v| {
                println!(
                    "{:<24} {:<24} {:>10} {:>12}  CREATED",
                    "ID", "NAME", "MAX COMP", "MAX MEMORY"
                );
                for t in v["tenants"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<24} {:>10} {:>12}  {}",
                        s(&t["id"]),
                        s(&t["name"]),
                        s(&t["max_components"]),
                        s(&t["max_memory_bytes"]),
                        time(&t["created_ms"])
                    );
                }
            });
        }
        TenantCmd::Delete { id, client } => {
            Client::new(&client)?
                .delete(&format!("/tenants/{id}"))
                .await?;
            println!("deleted tenant {id}");
        }
    }
    Ok(())
}

pub async fn exec_token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            tenant,
            name,
            scopes,
            expires_in,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "tenant": tenant, "name": name });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            let v = c.post("/tokens", body).await?;
            c.print(&v, |v| println!("{} (id {})", s(&v["token"]), s(&v["id"])));
        }
        TokenCmd::List { tenant, client } => {
            let c = Client::new(&client)?;
            let path = match tenant {
                Some(t) => format!("/tokens?tenant={t}"),
                None => "/tokens".into(),
            };
            let v = c.get(&path).await?;
            c.print(&v, |v| {
                println!(
                    "{:<18} {:<8} {:<16} {:<16} {:<28} {:<20} EXPIRES",
                    "ID", "ROLE", "TENANT", "NAME", "SCOPES", "CREATED"
                );
                for t in v["tokens"].as_array().into_iter().flatten() {
                    let scopes: Vec<String> = t["scopes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    let expires = if t["expires_ms"].is_null() {
                        "never".to_string()
                    } else {
                        time(&t["expires_ms"])
                    };
                    println!(
                        "{:<18} {:<8} {:<16} {:<16} {:<28} {:<20} {}",
                        s(&t["id"]),
                        s(&t["role"]),
                        s(&t["tenant"]),
                        s(&t["name"]),
                        scopes.join(","),
                        time(&t["created_ms"]),
                        expires
                    );
                }
            });
        }
        TokenCmd::Revoke { id, tenant, client } => {
            let c = Client::new(&client)?;
            let path = match tenant {
                Some(t) => format!("/tokens/{id}?tenant={t}"),
                None => format!("/tokens/{id}"),
            };
            c.delete(&path).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
