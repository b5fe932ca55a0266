//! The controllers, one module per kind, each a pipeline of
//! validate -> build -> apply -> status steps.
//!
//! A kind's controller is registered here together with its reconcile: the
//! operator runs only controllers that exist. None is registered yet; the
//! leader holds the Lease and waits for shutdown.

use tokio_util::sync::CancellationToken;

/// What every controller gets. Controllers add the API client and their
/// metrics here as they arrive.
#[derive(Clone)]
pub struct Context {
    /// The namespace to watch, or None for all.
    pub watch_namespace: Option<String>,
}

/// The names of the registered controllers, for the start-up log.
pub const REGISTERED: &[&str] = &[];

/// Runs every registered controller until `shutdown` fires.
pub async fn run(ctx: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scope = ctx.watch_namespace.as_deref().unwrap_or("all namespaces");
    tracing::info!(controllers = ?REGISTERED, %scope, "controllers started");
    shutdown.cancelled().await;
    Ok(())
}
