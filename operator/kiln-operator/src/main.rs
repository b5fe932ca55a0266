//! `kiln-operator`: the process every Kiln controller runs in.
//!
//! Start-up order: configuration, logging, metrics and probes, the API
//! client, then leader election; the leader runs the controllers. SIGTERM or
//! SIGINT stops the controllers, releases the Lease and exits 0.

mod config;
mod controllers;
mod http;
mod leader;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::Health;
use crate::telemetry::Metrics;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(e) = telemetry::init_tracing(&config) {
        eprintln!("kiln-operator: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kiln-operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting kiln-operator"
    );
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new()?;
    let health = Arc::new(Health::default());

    let servers = tokio::spawn({
        let (metrics, health, shutdown) = (metrics.clone(), health.clone(), shutdown.clone());
        let (metrics_addr, health_addr) = (config.metrics_bind_address, config.health_bind_address);
        async move {
            tokio::try_join!(
                http::serve(
                    metrics_addr,
                    http::metrics_router(metrics),
                    shutdown.clone()
                ),
                http::serve(health_addr, http::health_router(health), shutdown.clone()),
            )
        }
    });

    tokio::spawn(forward_signals(shutdown.clone(), health.clone()));

    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot configure the Kubernetes client: {e}"))?;
    tokio::spawn(watch_api_server(
        client.clone(),
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let settings = controllers::training_job::build::Settings {
        runtime_image: config.runtime_image.clone(),
        cluster_domain: config.cluster_domain.clone(),
        spot_label: config.spot_node_label.clone(),
        spot_tolerations: config
            .spot_tolerations
            .iter()
            .map(|t| k8s_openapi::api::core::v1::Toleration {
                key: Some(t.key.clone()),
                operator: Some(if t.value.is_some() { "Equal" } else { "Exists" }.into()),
                value: t.value.clone(),
                effect: Some(t.effect.clone()),
                ..Default::default()
            })
            .collect(),
    };
    let endpoint_settings = controllers::endpoint::build::Settings {
        runtime_image: config.runtime_image.clone(),
        router_image: config.router_image.clone(),
        router_replicas: config.router_replicas,
        cluster_domain: config.cluster_domain.clone(),
    };
    let ctx = controllers::Context::new(
        client.clone(),
        metrics.clone(),
        settings,
        endpoint_settings,
        config.watch_namespace().map(str::to_string),
        config.identity(),
    );
    let result = if config.leader_elect {
        let lease = leader::LeaseConfig {
            name: config.lease_name.clone(),
            namespace: config.lease_namespace(client.default_namespace()),
            identity: config.identity(),
            duration_seconds: config.lease_duration_seconds,
        };
        leader::run_while_leader(client, lease, metrics, shutdown.clone(), |token| {
            controllers::run(ctx, token)
        })
        .await
    } else {
        tracing::warn!("leader election is off: run a single replica only");
        controllers::run(ctx, shutdown.clone()).await
    };

    // Whatever ended the run, stop serving and wait for the servers to drain.
    shutdown.cancel();
    match servers.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(e.into()),
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT; readiness fails from that moment.
async fn forward_signals(shutdown: CancellationToken, health: Arc<Health>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = shutdown.cancelled() => return,
    }
    health.set_shutting_down();
    shutdown.cancel();
}

/// Checks every 10 s that the API server answers; readiness follows it.
async fn watch_api_server(
    client: Client,
    health: Arc<Health>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut was_reachable = None;
    loop {
        let reachable = match client.apiserver_version().await {
            Ok(version) => {
                if was_reachable != Some(true) {
                    tracing::info!(version = %version.git_version, "API server reachable");
                }
                true
            }
            Err(e) => {
                if was_reachable != Some(false) {
                    tracing::warn!(error = %e, "API server unreachable");
                }
                false
            }
        };
        was_reachable = Some(reachable);
        health.set_api_server_reachable(reachable);
        metrics.api_server_reachable.set(i64::from(reachable));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
