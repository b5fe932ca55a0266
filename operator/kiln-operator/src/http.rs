//! The operator's HTTP endpoints: `/healthz` and `/readyz` on the health
//! address, `/metrics` on the metrics address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// What the probes report. Readiness means started (the API server has
/// answered once, so the client is configured and authorized) and not
/// shutting down: a later blip of the API server does not take every
/// replica out of its Service at once (the metric
/// `kiln_api_server_reachable` and the logs report it instead).
#[derive(Default)]
pub struct Health {
    started: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    /// Records whether the last API server check answered.
    pub fn set_api_server_reachable(&self, yes: bool) {
        if yes {
            self.started.store(true, Ordering::Relaxed);
        }
    }

    /// Marks the process as shutting down: readiness fails from now on.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Why the replica is not ready, or None when it is.
    fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.started.load(Ordering::Relaxed) {
            Some("the Kubernetes API server has not answered yet")
        } else {
            None
        }
    }
}

/// `/healthz` and `/readyz`.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready_reason() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        ),
    }
}

/// `/metrics`.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .with_state(metrics)
}

/// Binds `addr` and serves `router` until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_is_started_and_not_shutting_down() {
        let health = Arc::new(Health::default());
        let router = health_router(health.clone());
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("API server"), "{body}");
        health.set_api_server_reachable(true);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        // A blip of the API server after start keeps the replica ready.
        health.set_api_server_reachable(false);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        health.set_shutting_down();
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("shutting down"));
        assert_eq!(get(router, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let metrics = Metrics::new().unwrap();
        metrics.api_server_reachable.set(1);
        let (status, body) = get(metrics_router(metrics), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("kiln_operator_api_server_reachable 1"),
            "{body}"
        );
        let (status, _) = get(health_router(Arc::new(Health::default())), "/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
