//! The controllers, one module per kind, each a pipeline of
//! validate -> build -> apply -> status steps.
//!
//! A kind's controller is registered here together with its reconcile: the
//! operator runs only controllers that exist.

pub mod error;
pub mod training_job;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry::Metrics;

/// What every reconcile gets.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    /// What the operator's configuration adds to training pods.
    pub settings: training_job::build::Settings,
    /// The namespace to watch, or None for all.
    pub watch_namespace: Option<String>,
}

impl Context {
    /// A context whose Events name `identity` as the reporting instance.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: training_job::build::Settings,
        watch_namespace: Option<String>,
        identity: String,
    ) -> Self {
        let reporter = Reporter {
            controller: "kiln-operator".into(),
            instance: Some(identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            watch_namespace,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// The names of the registered controllers, for the start-up log.
pub const REGISTERED: &[&str] = &["TrainingJob"];

/// Runs every registered controller until `shutdown` fires.
pub async fn run(ctx: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scope = ctx
        .watch_namespace
        .as_deref()
        .unwrap_or("all namespaces")
        .to_string();
    tracing::info!(controllers = ?REGISTERED, %scope, "controllers started");
    let ctx = Arc::new(ctx);
    let pods_of_jobs = watcher::Config::default().labels(training_job::build::JOB_LABEL);
    let controller = Controller::new(ctx.api::<TrainingJob>(), watcher::Config::default())
        .owns(ctx.api::<Pod>(), pods_of_jobs)
        .graceful_shutdown_on({
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        });
    let store = controller.store();
    let gauges = tokio::spawn(count_jobs(store, ctx.metrics.clone(), shutdown.clone()));
    controller
        .run(
            |job, ctx| {
                let metrics = ctx.metrics.clone();
                let span = tracing::info_span!(
                    "reconcile",
                    kind = "TrainingJob",
                    namespace = job.namespace().unwrap_or_default(),
                    name = job.name_any()
                );
                async move {
                    let timer = metrics
                        .reconcile_duration
                        .with_label_values(&["TrainingJob"])
                        .start_timer();
                    let result = training_job::reconcile(job, ctx).await;
                    timer.observe_duration();
                    let outcome = if result.is_ok() { "ok" } else { "error" };
                    metrics
                        .reconciles
                        .with_label_values(&["TrainingJob", outcome])
                        .inc();
                    result
                }
                .instrument(span)
            },
            training_job::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    gauges.abort();
    Ok(())
}

/// Keeps the jobs-by-state gauge in step with the controller's cache.
async fn count_jobs(
    store: kube::runtime::reflector::Store<TrainingJob>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let mut counts = std::collections::BTreeMap::<&str, i64>::new();
        for state in [
            "Pending",
            "InProgress",
            "Completed",
            "Failed",
            "Stopping",
            "Stopped",
        ] {
            counts.insert(state, 0);
        }
        for job in store.state() {
            let state = match job.status.as_ref().and_then(|s| s.state) {
                None => "Pending",
                Some(TrainingJobState::InProgress) => "InProgress",
                Some(TrainingJobState::Completed) => "Completed",
                Some(TrainingJobState::Failed) => "Failed",
                Some(TrainingJobState::Stopping) => "Stopping",
                Some(TrainingJobState::Stopped) => "Stopped",
            };
            *counts.entry(state).or_default() += 1;
        }
        for (state, n) in counts {
            metrics
                .jobs
                .with_label_values(&["TrainingJob", state])
                .set(n);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
