//! The controllers, one module per kind, each a pipeline of
//! validate -> build -> apply -> status steps.
//!
//! A kind's controller is registered here together with its reconcile: the
//! operator runs only controllers that exist.

pub mod apply;
pub mod backoff;
pub mod endpoint;
pub mod error;
pub mod model_package;
pub mod model_package_group;
pub mod pipeline;
pub mod pipeline_run;
pub mod pods;
pub mod training_job;
pub mod tuning_job;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kiln_api::endpoint::Endpoint;
use kiln_api::model_package::{ModelPackage, ModelPackageState};
use kiln_api::model_package_group::ModelPackageGroup;
use kiln_api::pipeline::Pipeline;
use kiln_api::pipeline_run::{PipelineRun, RunState};
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kiln_api::tuning_job::{TuningJob, TuningJobState};
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
    /// What the operator's configuration adds to serving and router pods.
    pub endpoint_settings: endpoint::build::Settings,
    /// The namespace to watch, or None for all.
    pub watch_namespace: Option<String>,
    /// Retry waits of objects whose reconcile failed.
    pub backoff: Arc<backoff::Backoff>,
    /// Intermediate objective values of tuning trials, read from their logs.
    pub curves: Arc<tuning_job::Curves>,
}

impl Context {
    /// A context whose Events name `identity` as the reporting instance.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: training_job::build::Settings,
        endpoint_settings: endpoint::build::Settings,
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
            endpoint_settings,
            watch_namespace,
            backoff: Arc::default(),
            curves: Arc::default(),
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
pub const REGISTERED: &[&str] = &[
    "TrainingJob",
    "TuningJob",
    "Pipeline",
    "PipelineRun",
    "Endpoint",
    "ModelPackage",
    "ModelPackageGroup",
];

/// Runs every registered controller until `shutdown` fires.
pub async fn run(ctx: Context, shutdown: CancellationToken) -> anyhow::Result<()> {
    let scope = ctx
        .watch_namespace
        .as_deref()
        .unwrap_or("all namespaces")
        .to_string();
    tracing::info!(controllers = ?REGISTERED, %scope, "controllers started");
    let ctx = Arc::new(ctx);
    let stop = {
        let shutdown = shutdown.clone();
        move || {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        }
    };

    let pods_of_jobs = watcher::Config::default().labels(training_job::build::JOB_LABEL);
    let jobs = Controller::new(ctx.api::<TrainingJob>(), watcher::Config::default())
        .owns(ctx.api::<Pod>(), pods_of_jobs)
        .graceful_shutdown_on(stop());
    let gauges = tokio::spawn(count_states(
        jobs.store(),
        "TrainingJob",
        &[
            "Pending",
            "InProgress",
            "Completed",
            "Failed",
            "Stopping",
            "Stopped",
        ],
        |job: &TrainingJob| match job.status.as_ref().and_then(|s| s.state) {
            None => "Pending",
            Some(TrainingJobState::InProgress) => "InProgress",
            Some(TrainingJobState::Completed) => "Completed",
            Some(TrainingJobState::Failed) => "Failed",
            Some(TrainingJobState::Stopping) => "Stopping",
            Some(TrainingJobState::Stopped) => "Stopped",
        },
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let jobs = jobs
        .run(
            |job, ctx| {
                let span = span("TrainingJob", job.as_ref());
                let key = backoff::key("TrainingJob", job.as_ref());
                let outer = ctx.clone();
                async move {
                    timed(
                        "TrainingJob",
                        &outer,
                        key,
                        training_job::reconcile(job, ctx),
                    )
                    .await
                }
                .instrument(span)
            },
            training_job::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // TuningJobs: every trial is a TrainingJob the TuningJob owns.
    let trials = watcher::Config::default().labels(tuning_job::TUNING_JOB_LABEL);
    let tuning = Controller::new(ctx.api::<TuningJob>(), watcher::Config::default())
        .owns(ctx.api::<TrainingJob>(), trials);
    let tuning_gauges = tokio::spawn(count_states(
        tuning.store(),
        "TuningJob",
        &["Pending", "InProgress", "Completed", "Failed", "Stopped"],
        |tj: &TuningJob| match tj.status.as_ref().and_then(|s| s.state) {
            None => "Pending",
            Some(TuningJobState::InProgress) => "InProgress",
            Some(TuningJobState::Completed) => "Completed",
            Some(TuningJobState::Failed) => "Failed",
            Some(TuningJobState::Stopped) => "Stopped",
        },
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let tuning = tuning
        .graceful_shutdown_on(stop())
        .run(
            |tj, ctx| {
                let span = span("TuningJob", tj.as_ref());
                let key = backoff::key("TuningJob", tj.as_ref());
                let outer = ctx.clone();
                async move { timed("TuningJob", &outer, key, tuning_job::reconcile(tj, ctx)).await }
                    .instrument(span)
            },
            tuning_job::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // PipelineRuns: the TrainingJobs and TuningJobs of their steps are
    // owned; ModelPackages and Endpoints outlive a run and are looked at on
    // the run's recheck.
    let run_children = || watcher::Config::default().labels(pipeline_run::RUN_LABEL);
    let runs = Controller::new(ctx.api::<PipelineRun>(), watcher::Config::default())
        .owns(ctx.api::<TrainingJob>(), run_children())
        .owns(ctx.api::<TuningJob>(), run_children());
    let run_gauges = tokio::spawn(count_states(
        runs.store(),
        "PipelineRun",
        &[
            "Pending",
            "Executing",
            "Stopping",
            "Stopped",
            "Failed",
            "Succeeded",
        ],
        |run: &PipelineRun| match run.status.as_ref().and_then(|s| s.state) {
            None => "Pending",
            Some(RunState::Executing) => "Executing",
            Some(RunState::Stopping) => "Stopping",
            Some(RunState::Stopped) => "Stopped",
            Some(RunState::Failed) => "Failed",
            Some(RunState::Succeeded) => "Succeeded",
        },
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let step_gauges = tokio::spawn(count_steps(
        runs.store(),
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let runs = runs
        .graceful_shutdown_on(stop())
        .run(
            |run, ctx| {
                let span = span("PipelineRun", run.as_ref());
                let key = backoff::key("PipelineRun", run.as_ref());
                let outer = ctx.clone();
                async move {
                    timed(
                        "PipelineRun",
                        &outer,
                        key,
                        pipeline_run::reconcile(run, ctx),
                    )
                    .await
                }
                .instrument(span)
            },
            pipeline_run::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // Pipelines: checked, scheduled; a run's change wakes its Pipeline.
    let pipelines = Controller::new(ctx.api::<Pipeline>(), watcher::Config::default())
        .watches(
            ctx.api::<PipelineRun>(),
            watcher::Config::default(),
            |run| pipeline::pipeline_of(&run),
        )
        .graceful_shutdown_on(stop())
        .run(
            |p, ctx| {
                let span = span("Pipeline", p.as_ref());
                let key = backoff::key("Pipeline", p.as_ref());
                let outer = ctx.clone();
                async move { timed("Pipeline", &outer, key, pipeline::reconcile(p, ctx)).await }
                    .instrument(span)
            },
            pipeline::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    let children = watcher::Config::default().labels(endpoint::build::ENDPOINT_LABEL);
    let endpoints = Controller::new(ctx.api::<Endpoint>(), watcher::Config::default())
        .owns(ctx.api::<Deployment>(), children);
    // A TrainingJob that completes, or a ModelPackage approved, wakes the
    // Endpoints of its namespace that name it.
    let store = endpoints.store();
    let endpoints = endpoints
        .watches(ctx.api::<TrainingJob>(), watcher::Config::default(), {
            let store = store.clone();
            move |job| {
                endpoint::referring(&store, &job, |m| {
                    m.training_job.as_deref() == Some(job.name_any().as_str())
                })
            }
        })
        .watches(ctx.api::<ModelPackage>(), watcher::Config::default(), {
            let store = store.clone();
            move |package| {
                let name = package.name_any();
                let group = package.spec.group_name.clone();
                endpoint::referring(&store, &package, move |m| {
                    m.model_package.as_ref().is_some_and(|r| {
                        r.name.as_deref() == Some(name.as_str())
                            || r.group.as_deref() == Some(group.as_str())
                    })
                })
            }
        })
        .graceful_shutdown_on(stop())
        .run(
            |ep, ctx| {
                let span = span("Endpoint", ep.as_ref());
                let key = backoff::key("Endpoint", ep.as_ref());
                let outer = ctx.clone();
                async move { timed("Endpoint", &outer, key, endpoint::reconcile(ep, ctx)).await }
                    .instrument(span)
            },
            endpoint::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // ModelPackages: each artifact check is a pod the package owns; a group
    // created wakes the packages that name it, and a TrainingJob finishing
    // the packages whose lineage it is.
    let check_pods = watcher::Config::default().labels(model_package::check::CHECK_LABEL);
    let packages = Controller::new(ctx.api::<ModelPackage>(), watcher::Config::default())
        .owns(ctx.api::<Pod>(), check_pods);
    let package_store = packages.store();
    let package_gauges = tokio::spawn(count_states(
        package_store.clone(),
        "ModelPackage",
        &["Pending", "Completed", "Failed"],
        |package: &ModelPackage| match package.status.as_ref().and_then(|s| s.state) {
            None | Some(ModelPackageState::Pending) => "Pending",
            Some(ModelPackageState::Completed) => "Completed",
            Some(ModelPackageState::Failed) => "Failed",
        },
        ctx.metrics.clone(),
        shutdown.clone(),
    ));
    let packages = packages
        .watches(
            ctx.api::<ModelPackageGroup>(),
            watcher::Config::default(),
            {
                let store = package_store.clone();
                move |group| model_package::in_group(&store, &group)
            },
        )
        .watches(ctx.api::<TrainingJob>(), watcher::Config::default(), {
            let store = package_store.clone();
            move |job| model_package::from_job(&store, &job)
        })
        .graceful_shutdown_on(stop())
        .run(
            |package, ctx| {
                let span = span("ModelPackage", package.as_ref());
                let key = backoff::key("ModelPackage", package.as_ref());
                let outer = ctx.clone();
                async move {
                    timed(
                        "ModelPackage",
                        &outer,
                        key,
                        model_package::reconcile(package, ctx),
                    )
                    .await
                }
                .instrument(span)
            },
            model_package::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    // ModelPackageGroups: every change of a package wakes its group, which
    // numbers new versions and keeps the newest Approved one.
    let groups = Controller::new(ctx.api::<ModelPackageGroup>(), watcher::Config::default())
        .watches(
            ctx.api::<ModelPackage>(),
            watcher::Config::default(),
            |package| model_package_group::group_of(&package),
        )
        .graceful_shutdown_on(stop())
        .run(
            |group, ctx| {
                let span = span("ModelPackageGroup", group.as_ref());
                let key = backoff::key("ModelPackageGroup", group.as_ref());
                let outer = ctx.clone();
                async move {
                    timed(
                        "ModelPackageGroup",
                        &outer,
                        key,
                        model_package_group::reconcile(group, ctx),
                    )
                    .await
                }
                .instrument(span)
            },
            model_package_group::error_policy,
            ctx.clone(),
        )
        .for_each(log_outcome);

    futures::join!(jobs, tuning, pipelines, runs, endpoints, packages, groups);
    for g in [
        gauges,
        tuning_gauges,
        run_gauges,
        step_gauges,
        package_gauges,
    ] {
        g.abort();
    }
    Ok(())
}

fn span<K: ResourceExt>(kind: &'static str, object: &K) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        kind,
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any()
    )
}

/// What a failed reconcile of any kind does next: the error is counted by
/// kind and reason and logged; a transient one retries after the object's
/// backoff, a permanent one (a refused child) is looked at again after five
/// minutes, or sooner on a change of the object.
pub fn error_policy<K: ResourceExt>(
    kind: &'static str,
    object: &K,
    error: &error::Error,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[kind, error.metric_label()])
        .inc();
    tracing::warn!(kind, name = %object.name_any(), namespace = object.namespace().unwrap_or_default(), error = %error, "reconcile failed");
    if error.is_transient() {
        Action::requeue(ctx.backoff.next(&backoff::key(kind, object)))
    } else {
        Action::requeue(Duration::from_secs(300))
    }
}

/// Runs one reconcile, timing and counting it by kind and outcome; a
/// success resets the object's retry backoff.
async fn timed<T>(
    kind: &'static str,
    ctx: &Context,
    key: String,
    reconcile: impl std::future::Future<Output = error::Result<T>>,
) -> error::Result<T> {
    let metrics = &ctx.metrics;
    let timer = metrics
        .reconcile_duration
        .with_label_values(&[kind])
        .start_timer();
    let result = reconcile.await;
    timer.observe_duration();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics.reconciles.with_label_values(&[kind, outcome]).inc();
    if result.is_ok() {
        ctx.backoff.reset(&key);
    }
    result
}

async fn log_outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "controller event");
    }
}

/// The steps of `runs` by state, every state included: the `objects`
/// gauge's `PipelineRunStep` kind.
fn step_counts(
    runs: &[std::sync::Arc<PipelineRun>],
) -> std::collections::BTreeMap<&'static str, i64> {
    use kiln_api::pipeline_run::StepState;
    let mut counts: std::collections::BTreeMap<&'static str, i64> =
        ["Pending", "Executing", "Succeeded", "Failed", "Skipped"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    for run in runs {
        for step in run.status.iter().flat_map(|s| &s.steps) {
            let state = match step.state {
                None | Some(StepState::Pending) => "Pending",
                Some(StepState::Executing) => "Executing",
                Some(StepState::Succeeded) => "Succeeded",
                Some(StepState::Failed) => "Failed",
                Some(StepState::Skipped) => "Skipped",
            };
            *counts.entry(state).or_default() += 1;
        }
    }
    counts
}

/// Keeps the `PipelineRunStep` counts of the `objects` gauge in step with
/// the PipelineRun controller's cache.
async fn count_steps(
    store: kube::runtime::reflector::Store<PipelineRun>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        for (state, n) in step_counts(&store.state()) {
            metrics
                .jobs
                .with_label_values(&["PipelineRunStep", state])
                .set(n);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// Keeps the objects-by-state gauge of `kind` in step with a controller's
/// cache: every state in `states` is reported, zero included.
async fn count_states<K>(
    store: kube::runtime::reflector::Store<K>,
    kind: &'static str,
    states: &'static [&'static str],
    state_of: impl Fn(&K) -> &'static str,
    metrics: Metrics,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        let mut counts: std::collections::BTreeMap<&str, i64> =
            states.iter().map(|s| (*s, 0)).collect();
        for object in store.state() {
            *counts.entry(state_of(&object)).or_default() += 1;
        }
        for (state, n) in counts {
            metrics.jobs.with_label_values(&[kind, state]).set(n);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_counted_by_state_over_every_run() {
        let run = |states: &[&str]| {
            let steps: Vec<serde_json::Value> = states
                .iter()
                .enumerate()
                .map(|(i, s)| serde_json::json!({"name": format!("s{i}"), "state": s}))
                .collect();
            Arc::new(
                serde_json::from_value::<PipelineRun>(serde_json::json!({
                    "apiVersion": "kiln.dev/v1alpha1", "kind": "PipelineRun",
                    "metadata": {"name": "r"}, "spec": {"pipelineRef": {"name": "p"}},
                    "status": {"steps": steps},
                }))
                .unwrap(),
            )
        };
        let counts = step_counts(&[
            run(&["Succeeded", "Executing", "Pending"]),
            run(&["Succeeded", "Skipped", "Failed"]),
        ]);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [
                ("Executing", 1),
                ("Failed", 1),
                ("Pending", 1),
                ("Skipped", 1),
                ("Succeeded", 2)
            ]
        );
        assert!(step_counts(&[]).values().all(|n| *n == 0));
    }
}
