//! `kiln-router`: see the crate's README.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_api::router::{ADMIN_PORT, HTTP_PORT};
use kiln_router::{MAX_BODY_BYTES, Options};
use tokio::net::TcpListener;

/// The traffic router in front of an Endpoint's serving pods.
#[derive(Parser, Debug)]
#[command(name = "kiln-router", version, about)]
struct Cli {
    /// The configuration file (the ConfigMap's router.json), re-read every second.
    #[arg(
        long,
        env = "KILN_ROUTER_CONFIG",
        default_value = "/etc/kiln/router/router.json"
    )]
    config: PathBuf,
    /// The port requests are answered on.
    #[arg(long, env = "KILN_ROUTER_HTTP_PORT", default_value_t = HTTP_PORT)]
    port: u16,
    /// The port of /metrics, /healthz and /config.
    #[arg(long, env = "KILN_ROUTER_ADMIN_PORT", default_value_t = ADMIN_PORT)]
    admin_port: u16,
    /// The address both ports listen on.
    #[arg(long, env = "KILN_ROUTER_ADDRESS", default_value = "0.0.0.0")]
    address: IpAddr,
    /// Request bodies over this many bytes are answered with 413.
    #[arg(long, env = "KILN_ROUTER_MAX_BODY_BYTES", default_value_t = MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bind = |port: u16| async move {
        let addr = SocketAddr::new(cli.address, port);
        TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let listener = bind(cli.port).await?;
    let admin = bind(cli.admin_port).await?;
    let mut options = Options::new(&cli.config);
    options.max_body_bytes = cli.max_body_bytes;
    kiln_router::serve(options, listener, admin, stop_signal()).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln-router: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "kiln-router failed");
            eprintln!("kiln-router: {e:#}");
            ExitCode::from(1)
        }
    }
}
