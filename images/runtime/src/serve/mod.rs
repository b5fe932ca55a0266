//! `kiln-runtime serve`: the inference server of the built-in models, on
//! the SageMaker inference contract and the Open Inference Protocol (v2
//! REST), with dynamic batching on one worker thread per model. SERVE.md
//! describes the routes, payloads and settings.
//!
//! - [`codec`], [`v2`]: request parsing and response writing (pure);
//! - [`predictions`]: rows in and predictions out, batched and split;
//! - [`model`]: a loaded artifact and its forward pass;
//! - [`worker`]: the thread that owns a model and batches its requests;
//! - [`registry`]: multi-model mode, least-recently-used unloading;
//! - [`http`]: routes, errors and status codes; [`metrics`]: Prometheus;
//! - [`grpc`]: the Open Inference Protocol's gRPC service, on its own port.

pub mod codec;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod predictions;
pub mod registry;
pub mod v2;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{App, Models};
use metrics::Metrics;
use registry::{LoadConfig, Registry, resolve_url};
use worker::{Batching, Worker};

/// Settings of the server (flags and environment of `kiln-runtime serve`).
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where the gRPC service listens; `None`: no gRPC.
    pub grpc_bind: Option<SocketAddr>,
    /// The model of single-model mode: a folder, `file://` or storage URI
    /// (a prefix or a `.tar.gz`).
    pub model: String,
    /// Its name in `/v2/models/{name}`.
    pub model_name: String,
    pub multi_model: bool,
    /// Folder that relative model URLs of `/models` are resolved under.
    pub model_root: PathBuf,
    /// Folder that remote and archived models are downloaded and unpacked to.
    pub model_cache: PathBuf,
    pub batching: Batching,
    pub payload_limit: usize,
    pub device: String,
    /// Bound on the loaded models' tensor bytes (multi-model mode).
    pub memory_limit: u64,
    /// Threads answering HTTP.
    pub http_threads: usize,
}

/// Half the machine's memory: the default bound for loaded models.
pub fn default_memory_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024 / 2)
        .unwrap_or(4 << 30)
}

/// Runs the server until SIGTERM or SIGINT, then finishes the requests in
/// flight; returns the exit code (0, or 2 for a bad configuration or model).
pub fn main(config: Config) -> i32 {
    init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return 1;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "serve failed");
            eprintln!("kiln-runtime serve: {e}");
            2
        }
    }
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

/// Loads the model(s) and builds the handlers' state.
pub async fn build(config: &Config) -> Result<Arc<App>, String> {
    crate::storage::install_crypto();
    let metrics = Metrics::new();
    let device = crate::run::pick_device(&config.device).map_err(|e| e.to_string())?;
    let models = if config.multi_model {
        Models::Multi(Registry::new(LoadConfig {
            device,
            batching: config.batching,
            metrics: metrics.clone(),
            root: config.model_root.clone(),
            cache: config.model_cache.clone(),
            memory_limit: config.memory_limit,
        }))
    } else {
        let (dir, _) = resolve_url(
            &config.model_root,
            &config.model_cache,
            &config.model_name,
            &config.model,
        )
        .await
        .map_err(|e| match e {
            registry::RegistryError::BadModel(m) => m,
            other => format!("{other:?}"),
        })?;
        let worker = Worker::start(
            config.model_name.clone(),
            dir.clone(),
            device,
            config.batching,
            metrics.clone(),
        )
        .await
        .map_err(|e| format!("loading {}: {e}", dir.display()))?;
        metrics.models_loaded.set(1);
        metrics.model_bytes.set(worker.info.bytes as i64);
        tracing::info!(
            model = %config.model_name,
            dir = %dir.display(),
            algorithm = %worker.info.algorithm,
            task = %worker.info.task,
            "model loaded"
        );
        Models::Single {
            name: config.model_name.clone(),
            worker,
        }
    };
    Ok(Arc::new(App {
        models,
        metrics,
        payload_limit: config.payload_limit,
    }))
}

async fn serve(config: Config) -> Result<(), String> {
    let app = build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let grpc_listener = match config.grpc_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} for gRPC: {e}"))?,
        ),
        None => None,
    };
    let grpc_local = match &grpc_listener {
        Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    // One signal stops both servers; each finishes its requests in flight.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc = grpc_listener.map(|l| {
        let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
        let service = grpc::service(app.clone());
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
        })
    });
    tracing::info!(
        address = %local,
        grpc_address = %grpc_local.map_or("off".to_string(), |a| a.to_string()),
        multi_model = config.multi_model,
        max_batch = config.batching.max_batch,
        max_delay_us = config.batching.max_delay.as_micros() as u64,
        "serving"
    );
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(stopped(stop_rx))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("gRPC server: {e}")),
            Err(e) => return Err(format!("gRPC server: {e}")),
        }
    }
    tracing::info!("stopped: every request in flight was answered");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("stopping: no new connections, finishing the requests in flight");
}

/// Milliseconds as a `Duration` (fractions allowed, negatives as zero).
pub fn millis(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}
