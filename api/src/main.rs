//! `sotp`: the server (`sotp run`) and a client for its HTTP API.

mod cli;
mod config;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sotp",
    version,
    about = "Multi-tenant network telemetry: native flow decoding, WebAssembly collectors",
    long_about = "SOTP runs tenants' collectors, compliance rules and correlation policies as \
sandboxed WebAssembly components, stores what they emit, and serves it over an HTTP API.\n\n\
Start the server with `sotp run`. The other commands talk to a running server: they use \
--server (default http://127.0.0.1:8787) and a token from --token, $SOTP_TOKEN, or the \
admin token file the server wrote in its data dir.",
    after_help = "Examples:\n  \
sotp run                                   # serve on 127.0.0.1:8787 with data in ~/.local/share/sotp\n  \
sotp tenant create acme                    # prints acme's first token\n  \
export SOTP_TOKEN=sotp_...                 # act as acme\n  \
sotp component push guests/tick-counter    # manifest sotp.toml + the built .wasm\n  \
sotp query ticks --since 5m --step 30s --agg max"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server on embedded defaults, a config file, or both.
    Run(cli::run::RunArgs),
    /// Upload, inspect, activate and roll back components.
    #[command(subcommand)]
    Component(cli::component::ComponentCmd),
    /// Manage tenants (admin token).
    #[command(subcommand)]
    Tenant(cli::tenant::TenantCmd),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(cli::tenant::TokenCmd),
    /// Alerts: what Alertmanager (or anything else) pushed, by device; intakes; label mapping.
    #[command(subcommand)]
    Alerts(cli::alerts::AlertsCmd),
    /// Incidents: alert storms folded by the device topology.
    #[command(subcommand)]
    Incidents(cli::incidents::IncidentsCmd),
    /// Configuration backups: history, text, diffs.
    #[command(subcommand)]
    Backup(cli::backup::BackupCmd),
    /// Golden-config compliance: rule files, audits, reports, dry runs, waivers.
    #[command(subcommand)]
    Compliance(cli::compliance::ComplianceCmd),
    /// The device inventory: what to poll and back up, with which credentials.
    #[command(subcommand)]
    Device(cli::device::DeviceCmd),
    /// Connect the tenant to its MQTT broker and see the session.
    #[command(subcommand)]
    Mqtt(cli::mqtt::MqttCmd),
    /// Store secrets components may read (values are never shown again).
    #[command(subcommand)]
    Secret(cli::secret::SecretCmd),
    /// Query stored samples.
    Query(cli::query::QueryArgs),
    /// Flows: top talkers and applications, rates, collector status.
    #[command(subcommand)]
    Flows(cli::flows::FlowsCmd),
    /// Prometheus scrape targets: up or down, last scrape, errors.
    #[command(subcommand)]
    Scrape(cli::scrape::ScrapeCmd),
    /// SOTP watching itself: the platform tenant's probes of its sign-in page and API, and the
    /// web UI's latency as its browsers measured it.
    #[command(subcommand)]
    Platform(cli::platform::PlatformCmd),
    /// Traces: spans from browsers (the RUM script) and backends over OTLP; search, view,
    /// settings (allowed origins, sampling, forwarding).
    #[command(subcommand)]
    Traces(cli::traces::TracesCmd),
}

fn main() -> std::process::ExitCode {
    sotp_runtime::limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sotp")
        // Component calls run on these threads, host capabilities included; wasmtime
        // reserves up to 512 KiB of it for guest frames.
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run::run(args).await,
            Command::Component(cmd) => cli::component::exec(cmd).await,
            Command::Tenant(cmd) => cli::tenant::exec_tenant(cmd).await,
            Command::Token(cmd) => cli::tenant::exec_token(cmd).await,
            Command::Alerts(cmd) => cli::alerts::exec(cmd).await,
            Command::Incidents(cmd) => cli::incidents::exec(cmd).await,
            Command::Traces(cmd) => cli::traces::exec(cmd).await,
            Command::Scrape(cmd) => cli::scrape::exec(cmd).await,
            Command::Platform(cmd) => cli::platform::exec(cmd).await,
            Command::Backup(cmd) => cli::backup::exec(cmd).await,
            Command::Compliance(cmd) => cli::compliance::exec(cmd).await,
            Command::Device(cmd) => cli::device::exec(cmd).await,
            Command::Mqtt(cmd) => cli::mqtt::exec(cmd).await,
            Command::Secret(cmd) => cli::secret::exec(cmd).await,
            Command::Query(args) => cli::query::exec(args).await,
            Command::Flows(cmd) => cli::flows::exec(cmd).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
