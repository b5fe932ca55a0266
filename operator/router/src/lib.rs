//! kiln-router: the traffic router in front of an Endpoint's serving pods.
//!
//! It reads a [`RouterConfig`] from a mounted ConfigMap file (re-read every
//! second, applied without a restart), sends each request to one production
//! variant (by weight, or the one a target-variant header names), copies a
//! sample to each shadow variant, and records sampled requests and answers
//! (data capture). Metrics, health and the applied configuration are on a
//! separate admin port. See the README for the whole behaviour.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow};
use axum::Router;
use kiln_api::router::RouterConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod admin;
pub mod capture;
pub mod choose;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod storage;

use capture::Capture;
use config::Routes;
use metrics::Metrics;

/// The largest request body accepted: SageMaker's 6 MB payload limit, with
/// a margin.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024 + 512 * 1024;

/// How long the capture writer may take to write what it holds at shutdown.
const CAPTURE_FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// What [`serve`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Request bodies over this many bytes are answered with 413.
    pub max_body_bytes: usize,
    /// How often the configuration file is read again.
    pub poll_interval: Duration,
}

impl Options {
    pub fn new(config: impl Into<PathBuf>) -> Options {
        Options {
            config: config.into(),
            max_body_bytes: MAX_BODY_BYTES,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The state the handlers share.
pub struct App {
    routes: RwLock<Arc<Routes>>,
    client: proxy::HttpClient,
    metrics: Metrics,
    capture: Capture,
    /// Shadow copies in flight.
    shadows: TaskTracker,
    max_body: usize,
}

impl App {
    /// The applied configuration (a snapshot: a request keeps the one it
    /// started with).
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a (checked) configuration.
    pub fn apply(&self, config: RouterConfig) -> Result<(), String> {
        let routes = Routes::new(config, Some(&self.routes()))?;
        log_applied(&routes);
        self.metrics.set_revision(routes.config.revision);
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
        Ok(())
    }
}

fn log_applied(routes: &Routes) {
    let c = &routes.config;
    let variants = c
        .variants
        .iter()
        .map(|v| format!("{}={}", v.name, v.weight))
        .collect::<Vec<_>>()
        .join(",");
    let shadows = c
        .shadows
        .iter()
        .map(|s| format!("{}={}%", s.name, s.sampling_percent))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        endpoint = %c.endpoint,
        revision = c.revision,
        variants = %variants,
        shadows = %shadows,
        capture = c.data_capture.as_ref().map(|d| d.destination.as_str()).unwrap_or(""),
        "configuration applied"
    );
}

/// Runs the router until `shutdown` completes: the proxy on `listener`,
/// metrics, health and configuration on `admin`. Fails at once when the
/// configuration file is missing or invalid. At shutdown it stops
/// accepting, lets requests in flight finish (for at most the request
/// timeout and 5 s), waits for shadow copies likewise, writes the capture
/// records it holds, and returns.
pub async fn serve(
    options: Options,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (config, bytes) =
        config::load(&options.config).map_err(|e| anyhow!("no valid router configuration: {e}"))?;
    let routes = Routes::new(config, None).map_err(|e| anyhow!("{e}"))?;
    let metrics = Metrics::new();
    metrics.set_revision(routes.config.revision);
    log_applied(&routes);

    let (capture, records) = capture::queue(metrics.clone(), capture::QUEUE);
    let stop_capture = CancellationToken::new();
    let writer = tokio::spawn(capture::run(records, metrics.clone(), stop_capture.clone()));

    let app = Arc::new(App {
        routes: RwLock::new(Arc::new(routes)),
        client: proxy::client(),
        metrics,
        capture,
        shadows: TaskTracker::new(),
        max_body: options.max_body_bytes,
    });

    let stop_watch = CancellationToken::new();
    let watcher = tokio::spawn(config::watch(
        app.clone(),
        options.config.clone(),
        bytes,
        options.poll_interval,
        stop_watch.clone(),
    ));

    let proxy_addr = listener.local_addr().context("the proxy listener")?;
    let admin_addr = admin.local_addr().context("the admin listener")?;
    let stop_admin = CancellationToken::new();
    let admin_server = tokio::spawn(
        axum::serve(admin, admin::router(app.clone()))
            .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
            .into_future(),
    );
    let drain = CancellationToken::new();
    let router = Router::new().fallback(proxy::proxy).with_state(app.clone());
    let mut proxy_server = tokio::spawn(
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(drain.clone().cancelled_owned())
        .into_future(),
    );
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "listening");

    let mut ended = false;
    tokio::select! {
        _ = shutdown => {}
        result = &mut proxy_server => {
            ended = true;
            tracing::error!(?result, "the proxy server ended");
        }
    }
    let grace = app.routes().timeout + Duration::from_secs(5);
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: draining requests in flight"
    );
    drain.cancel();
    if !ended
        && tokio::time::timeout(grace, &mut proxy_server)
            .await
            .is_err()
    {
        tracing::warn!("requests still in flight after the grace period; closing them");
        proxy_server.abort();
    }
    app.shadows.close();
    if tokio::time::timeout(grace, app.shadows.wait())
        .await
        .is_err()
    {
        tracing::warn!("shadow copies still in flight after the grace period; dropped");
    }
    stop_watch.cancel();
    let _ = watcher.await;
    stop_capture.cancel();
    match tokio::time::timeout(CAPTURE_FLUSH_LIMIT, writer).await {
        Ok(_) => tracing::info!("capture records written"),
        Err(_) => tracing::warn!("capture records not written within the limit; dropped"),
    }
    stop_admin.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_server).await;
    tracing::info!("stopped");
    Ok(())
}
