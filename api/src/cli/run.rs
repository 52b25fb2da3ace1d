//! `sotp run`: open the runtime, restore components, serve the API until SIGINT/SIGTERM.

use crate::config::{self, LogFormat};
use anyhow::Context;
use clap::Args;
use sotp_runtime::Runtime;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "With no flags and no file, sotp serves http://127.0.0.1:8787 and keeps \
its data in ~/.local/share/sotp. On first start it writes the platform admin token to \
<data-dir>/admin.token (mode 0600).\n\nEnvironment overrides for any config key: \
SOTP_<SECTION>__<KEY>, e.g. SOTP_RUNTIME__LIMITS__MAX_UPLOAD=64MiB."
)]
pub struct RunArgs {
    /// TOML config file (see docs/CONFIG.md); keys not set keep their defaults.
    #[arg(long, short, env = "SOTP_CONFIG")]
    config: Option<PathBuf>,
    /// Where SOTP keeps its state, telemetry, components and caches.
    #[arg(long, env = "SOTP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the HTTP API (port 0: any free port, written to <data-dir>/sotp.addr).
    #[arg(long, env = "SOTP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "SOTP_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut cfg = config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        cfg.runtime.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        cfg.server.listen = listen;
    }
    if let Some(format) = args.log_format {
        cfg.server.log_format = format;
    }
    if args.print_config {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    let _own_traces = init_tracing(cfg.server.log_format, &cfg.server.traces)?;
    let data_dir = cfg.runtime.data_dir.clone();
    let runtime = tokio::task::spawn_blocking(move || Runtime::open(cfg.runtime))
        .await?
        .with_context(|| format!("opening data dir {}", data_dir.display()))?;
    if let Some(path) = &runtime.admin_token_file {
        tracing::info!(
            path = %path.display(),
            "first start: the platform admin token was written to {} (mode 0600)",
            path.display()
        );
    }
    tracing::info!(allocation = ?runtime.allocation(), data_dir = %data_dir.display(), "runtime open");

    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(data_dir.join("sotp.addr"), format!("{addr}\n"))?;
    tracing::info!(%addr, "serving the API on http://{addr}");

    let restoring = runtime.clone();
    let platform = cfg.platform.clone();
    tokio::spawn(async move {
        let setup = sotp_runtime::platform::PlatformSetup {
            config: platform,
            listen: addr,
            probe_wasm: crate::server::PROBE_WASM,
        };
        // Pinned before the restore, so restored probes get their egress exception.
        let pinned = setup.config.enabled && pin_platform(&restoring, &setup).await;
        restoring.restore().await;
        if pinned {
            start_platform(&restoring, setup).await;
        }
    });

    if let Some(addr) = cfg.server.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
        let addr = listener.local_addr()?;
        std::fs::write(data_dir.join("sotp.metrics-addr"), format!("{addr}\n"))?;
        tracing::info!(%addr, "serving the operator's /metrics without a token on http://{addr}");
        let app = crate::server::operator_router(runtime.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }

    let app = crate::server::router(runtime.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down");
    tokio::task::spawn_blocking(move || runtime.shutdown()).await?;
    Ok(())
}

/// The platform tenant and its probes (docs/PLATFORM.md); a failure is logged, and SOTP
/// serves on without them.
async fn pin_platform(
    runtime: &std::sync::Arc<Runtime>,
    setup: &sotp_runtime::platform::PlatformSetup,
) -> bool {
    match runtime.pin_platform(setup).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "the platform tenant could not be started; SOTP runs without watching itself");
            false
        }
    }
}

async fn start_platform(
    runtime: &std::sync::Arc<Runtime>,
    setup: sotp_runtime::platform::PlatformSetup,
) {
    match runtime.start_platform(setup).await {
        Ok(p) => tracing::info!(
            tenant = %p.tenant,
            base_url = %p.base_url,
            rum = p.rum.is_some(),
            "the platform tenant watches SOTP: GET /v1/platform/health"
        ),
        Err(e) => {
            tracing::error!(error = %e, "the platform tenant could not be started; SOTP runs without watching itself")
        }
    }
}

/// Logs to stderr; and SOTP's own spans to an OTLP endpoint when `[server.traces]` sets one
/// (the provider returned is kept alive, and flushed when dropped).
fn init_tracing(
    format: LogFormat,
    own: &config::OwnTraces,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};
    let logs = tracing_subscriber::EnvFilter::try_from_env("SOTP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // The spans SOTP traces itself with are not log lines.
    let logs = logs.add_directive(
        format!("{}=off", sotp_runtime::traces::own::TARGET)
            .parse()
            .expect("a valid directive"),
    );
    let fmt = match format {
        LogFormat::Json => fmt.json().with_filter(logs).boxed(),
        LogFormat::Human => fmt.with_filter(logs).boxed(),
    };
    let Some(endpoint) = &own.otlp_endpoint else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(None);
    };
    let ratio = own.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        anyhow::bail!("server.traces.sample_ratio {ratio} is not within 0..=1");
    }
    use opentelemetry::trace::TracerProvider as _;
    let exporter = sotp_runtime::traces::own::OtlpHttpExporter::new(endpoint, own.bearer.clone());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
        )))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("sotp")
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sotp"))
        .with_filter(
            filter::Targets::new()
                .with_target(sotp_runtime::traces::own::TARGET, tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(fmt).with(otel).init();
    crate::server::trace_requests(true);
    tracing::info!(%endpoint, ratio, "exporting SOTP's own traces over OTLP");
    Ok(Some(provider))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
