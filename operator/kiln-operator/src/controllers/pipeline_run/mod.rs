//! The PipelineRun controller: start -> observe -> decide -> record -> act.
//!
//! Start: the run copies its Pipeline's spec and its typed parameter values
//! into status, so editing the Pipeline never changes a run in progress;
//! the graph is checked (unknown names, malformed references, cycles) and a
//! bad one fails the run at once with a message naming what is wrong.
//! Observe: each executing step's child (a TrainingJob, TuningJob,
//! ModelPackage or Endpoint) says whether it succeeded, and with which
//! outputs (`modelArtifactUri`, `trainingJobName`, `metrics['<name>']`...)
//! later steps read through `{{ steps.<step>.<output> }}`.
//! Decide: steps whose prerequisites succeeded start (at most
//! `maxParallelSteps` at once), the branch a condition did not take and
//! everything after a failed step are skipped; a failed step is retried by
//! its retry policy, else it fails the run and the run's running children
//! are stopped.
//! Record, then act: a step is written to status as Executing with its
//! child's name (an update carrying the run's resourceVersion) before the
//! child is created, so a restarted operator creates each child once.
//! TrainingJobs and TuningJobs are owned by the run and deleted with it; a
//! registered ModelPackage and a deployed Endpoint outlive it.

pub mod condition;
pub mod graph;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::common::ChildReference;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::endpoint::Endpoint;
use kiln_api::model_package::{ModelPackage, ModelPackageState};
use kiln_api::pipeline::{FailureKind, Pipeline, PipelineSpec, Step};
use kiln_api::pipeline_run::{
    ParameterValue, PipelineRun, PipelineRunStatus, RunState, StepOutput, StepState, StepStatus,
};
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kiln_api::tuning_job::{TuningJob, TuningJobState};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use self::template::Values;
use super::Context;
use super::apply::publish;
use super::error::{Error, Result};

/// The label every child of a run carries: the run's name.
pub const RUN_LABEL: &str = "kiln.dev/pipeline-run";
/// The label with the step's name.
pub const STEP_LABEL: &str = "kiln.dev/pipeline-step";
/// The field manager of the status (written with updates) and of applied Endpoints.
const MANAGER: &str = "kiln-operator/pipeline-run";
/// How often a run with executing steps looks at children it does not own.
const RECHECK: Duration = Duration::from_secs(10);
/// The longest child name: a TuningJob's (its trials add `-<index>`).
const MAX_CHILD_NAME: usize = 47;
/// How long a deploy step waits for its Endpoint to be Ready.
const DEPLOY_TIMEOUT_SECONDS: i64 = 1200;

/// One reconcile of a PipelineRun.
pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = run
        .namespace()
        .ok_or(Error::Incomplete("a PipelineRun without a namespace"))?;
    let name = run.name_any();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let old = current.status.clone().unwrap_or_default();
    let mut status = old.clone();
    if matches!(
        status.state,
        Some(RunState::Succeeded | RunState::Failed | RunState::Stopped)
    ) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let generation = current.metadata.generation;
    status.observed_generation = generation;
    let mut events: Vec<(EventType, &'static str, String)> = Vec::new();

    // Start: copy the Pipeline.
    if status.pipeline_spec.is_none() {
        let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        let pipeline_name = &current.spec.pipeline_ref.name;
        let Some(pipeline) = pipelines.get_opt(pipeline_name).await? else {
            let message = format!("Pipeline {pipeline_name} not found in namespace {namespace}");
            conditions::set_condition(
                &mut status.conditions,
                conditions::unknown(
                    types::SUCCEEDED,
                    reasons::REFERENCE_NOT_FOUND,
                    message,
                    generation,
                    Time(now),
                ),
            );
            write(&api, &current, &old, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        };
        status.start_time = Some(Time(now));
        status.pipeline_generation = pipeline.metadata.generation;
        status.pipeline_spec = Some(pipeline.spec.clone());
        let checked = graph::parameters(&pipeline.spec, &current.spec.parameters)
            .and_then(|p| graph::graph(&pipeline.spec).map(|_| p));
        match checked {
            Ok(params) => {
                status.parameters = params
                    .iter()
                    .map(|(k, v)| ParameterValue {
                        name: k.clone(),
                        value: match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        },
                    })
                    .collect();
                status.steps = pipeline
                    .spec
                    .steps
                    .iter()
                    .map(|s| StepStatus {
                        name: s.name.clone(),
                        state: Some(StepState::Pending),
                        ..StepStatus::default()
                    })
                    .collect();
                status.state = Some(RunState::Executing);
            }
            Err(message) => {
                end(
                    &mut status,
                    RunState::Failed,
                    reasons::INVALID_SPEC,
                    &message,
                    generation,
                    now,
                );
                events.push((EventType::Warning, reasons::INVALID_SPEC, message));
                write(&api, &current, &old, &status).await?;
                publish_all(&ctx, &current, &events).await;
                return Ok(Action::await_change());
            }
        }
    }
    let Some(spec) = status.pipeline_spec.clone() else {
        return Ok(Action::await_change());
    };
    let params = graph::parameters(&spec, &status.parameters).unwrap_or_default();
    let g = match graph::graph(&spec) {
        Ok(g) => g,
        Err(message) => {
            end(
                &mut status,
                RunState::Failed,
                reasons::INVALID_SPEC,
                &message,
                generation,
                now,
            );
            write(&api, &current, &old, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let run_values: BTreeMap<String, String> = [
        ("name".to_string(), name.clone()),
        ("uid".to_string(), current.uid().unwrap_or_default()),
        (
            "startTime".to_string(),
            status
                .start_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        ),
    ]
    .into();

    // Observe the executing steps.
    for i in 0..status.steps.len() {
        if status.steps[i].state != Some(StepState::Executing) {
            continue;
        }
        let Some(step) = spec.steps.iter().find(|s| s.name == status.steps[i].name) else {
            continue;
        };
        let Some(child) = status.steps[i].child.clone() else {
            continue;
        };
        let seen = observe(&ctx, &namespace, step, &child, &status.steps[i], now).await?;
        let st = &mut status.steps[i];
        match seen {
            Seen::Running { uid, message } => {
                if st.child.as_ref().is_some_and(|c| c.uid.is_none()) && uid.is_some() {
                    st.child.as_mut().expect("child").uid = uid;
                }
                if message.is_some() {
                    st.message = message;
                }
            }
            Seen::Succeeded(outputs) => {
                st.state = Some(StepState::Succeeded);
                st.completion_time = Some(Time(now));
                st.message = None;
                st.outputs = outputs
                    .into_iter()
                    .take(64)
                    .map(|(name, value)| StepOutput {
                        name,
                        value: value.chars().take(4096).collect(),
                    })
                    .collect();
                events.push((
                    EventType::Normal,
                    "StepSucceeded",
                    format!("step {} succeeded", st.name),
                ));
            }
            Seen::Failed(kind, message) => {
                let retry = step.retry.as_ref().filter(|r| {
                    st.attempts < r.max_attempts
                        && (r.failure_kinds.is_empty() || r.failure_kinds.contains(&kind))
                });
                if let Some(r) = retry {
                    let wait = retry_wait(r, st.attempts);
                    st.child = None;
                    st.completion_time = Some(Time(now));
                    st.message = Some(format!(
                        "attempt {} failed: {message}; retrying in {wait} s",
                        st.attempts
                    ));
                    events.push((
                        EventType::Warning,
                        "StepRetrying",
                        format!(
                            "step {}: {}",
                            st.name,
                            st.message.clone().unwrap_or_default()
                        ),
                    ));
                } else {
                    st.state = Some(StepState::Failed);
                    st.completion_time = Some(Time(now));
                    st.message = Some(message.chars().take(4096).collect());
                    events.push((
                        EventType::Warning,
                        "StepFailed",
                        format!("step {} failed: {message}", st.name),
                    ));
                }
            }
        }
    }

    // Stopped by the user, or a step failed: nothing new starts.
    let failed_before = status
        .steps
        .iter()
        .any(|s| s.state == Some(StepState::Failed));
    if !current.spec.stop && !failed_before {
        let next = graph::next(&g, &status.steps);
        for (skip, why) in next.skip {
            if let Some(st) = status.steps.iter_mut().find(|s| s.name == skip) {
                st.state = Some(StepState::Skipped);
                st.message = Some(format!("skipped: {why}"));
                events.push((
                    EventType::Normal,
                    "StepSkipped",
                    format!("step {skip} skipped: {why}"),
                ));
            }
        }
        let executing = status
            .steps
            .iter()
            .filter(|s| s.state == Some(StepState::Executing))
            .count();
        let room = (spec.max_parallel_steps.max(1) as usize).saturating_sub(executing);
        for ready in next.ready.into_iter().take(room) {
            let Some(step) = spec.steps.iter().find(|s| s.name == ready) else {
                continue;
            };
            let outputs = outputs_of(&status.steps);
            let values = Values {
                parameters: &params,
                steps: &outputs,
                run: &run_values,
            };
            let mut started = start(step, &values, &status, &name);
            if matches!(started, Started::Child(_))
                && let Some(key) = cache_key(step, &values)
                && let Some((run, outputs)) = cached(&ctx, &namespace, step, &key, now).await?
            {
                started = Started::Cached { run, outputs };
            }
            let st = status
                .steps
                .iter_mut()
                .find(|s| s.name == ready)
                .expect("step status");
            st.start_time.get_or_insert(Time(now));
            match started {
                Started::Child(child) => {
                    st.state = Some(StepState::Executing);
                    st.attempts = 1;
                    st.child = Some(child);
                    events.push((
                        EventType::Normal,
                        "StepStarted",
                        format!("step {ready} ({}) started", step.kind()),
                    ));
                }
                Started::Done { result } => {
                    st.state = Some(StepState::Succeeded);
                    st.condition_result = result;
                    st.completion_time = Some(Time(now));
                    let note = match result {
                        Some(r) => format!("condition {ready} is {r}"),
                        None => format!("step {ready} succeeded"),
                    };
                    events.push((EventType::Normal, "StepSucceeded", note));
                }
                Started::Failed(message) => {
                    st.state = Some(StepState::Failed);
                    st.completion_time = Some(Time(now));
                    st.message = Some(message.chars().take(4096).collect());
                    events.push((
                        EventType::Warning,
                        "StepFailed",
                        format!("step {ready} failed: {message}"),
                    ));
                }
                Started::Cached { run, outputs } => {
                    st.state = Some(StepState::Succeeded);
                    st.completion_time = Some(Time(now));
                    st.message = Some(format!(
                        "reused the result of run {run}'s identical step (cache)"
                    ));
                    st.cache_hit_run = Some(run.clone());
                    st.outputs = outputs
                        .into_iter()
                        .take(64)
                        .map(|(name, value)| StepOutput { name, value })
                        .collect();
                    events.push((
                        EventType::Normal,
                        "StepCacheHit",
                        format!("step {ready} reused the result of run {run}"),
                    ));
                }
            }
        }
        // Retries whose wait is over get their next child.
        for st in &mut status.steps {
            let Some(step) = spec.steps.iter().find(|s| s.name == st.name) else {
                continue;
            };
            let Some(r) = &step.retry else { continue };
            if st.state != Some(StepState::Executing) || st.child.is_some() {
                continue;
            }
            let since = st
                .completion_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            if now.as_second() - since >= retry_wait(r, st.attempts) {
                st.attempts += 1;
                st.completion_time = None;
                st.child = Some(child_ref(step, &name, st.attempts));
                events.push((
                    EventType::Normal,
                    "StepStarted",
                    format!("step {} attempt {} started", st.name, st.attempts),
                ));
            }
        }
    }

    // The run's state: stopped, failed (what runs is stopped, what waits is
    // skipped), done, or still executing.
    let mut to_stop: Vec<ChildReference> = Vec::new();
    let failed = status
        .steps
        .iter()
        .find(|s| s.state == Some(StepState::Failed))
        .map(|s| (s.name.clone(), s.message.clone().unwrap_or_default()));
    if current.spec.stop || failed.is_some() {
        let why = match &failed {
            Some((step, _)) if !current.spec.stop => format!("step {step} failed"),
            _ => "the run was stopped".to_string(),
        };
        for st in &mut status.steps {
            match st.state {
                Some(StepState::Executing) => {
                    to_stop.extend(st.child.clone());
                    st.state = Some(StepState::Skipped);
                    st.message = Some(format!("stopped: {why}"));
                    st.completion_time = Some(Time(now));
                }
                Some(StepState::Pending) | None => {
                    st.state = Some(StepState::Skipped);
                    st.message = Some(format!("not run: {why}"));
                }
                _ => {}
            }
        }
        match failed {
            Some((step, message)) if !current.spec.stop => {
                let m = format!("step {step} failed: {message}");
                end(
                    &mut status,
                    RunState::Failed,
                    reasons::STEP_FAILED,
                    &m,
                    generation,
                    now,
                );
            }
            _ => end(
                &mut status,
                RunState::Stopped,
                reasons::STOPPED,
                "stopped by spec.stop",
                generation,
                now,
            ),
        }
    } else if status
        .steps
        .iter()
        .all(|s| matches!(s.state, Some(StepState::Succeeded | StepState::Skipped)))
    {
        let ran = status
            .steps
            .iter()
            .filter(|s| s.state == Some(StepState::Succeeded))
            .count();
        let m = format!(
            "{ran} of {} steps succeeded, the others were skipped",
            status.steps.len()
        );
        end(
            &mut status,
            RunState::Succeeded,
            reasons::COMPLETED,
            &m,
            generation,
            now,
        );
    } else {
        let running: Vec<&str> = status
            .steps
            .iter()
            .filter(|s| s.state == Some(StepState::Executing))
            .map(|s| s.name.as_str())
            .collect();
        let m = format!("running: {}", running.join(", "));
        conditions::set_condition(
            &mut status.conditions,
            conditions::unknown(types::SUCCEEDED, "Executing", m, generation, Time(now)),
        );
    }
    status.steps_succeeded = status
        .steps
        .iter()
        .filter(|s| s.state == Some(StepState::Succeeded))
        .count() as i32;
    if status.state != old.state
        && let Some(c) = conditions::find(&status.conditions, types::SUCCEEDED)
        && status.state != Some(RunState::Executing)
    {
        let t = if status.state == Some(RunState::Succeeded) {
            EventType::Normal
        } else {
            EventType::Warning
        };
        events.push((
            t,
            if status.state == Some(RunState::Succeeded) {
                "RunSucceeded"
            } else {
                "RunFailed"
            },
            c.message.clone(),
        ));
    }

    let written = match write(&api, &current, &old, &status).await? {
        Some(w) => w,
        None => return Ok(Action::requeue(Duration::from_millis(200))),
    };
    publish_all(&ctx, &written, &events).await;

    // Act: create the recorded children that do not exist yet, stop the others.
    let outputs = outputs_of(&status.steps);
    let values = Values {
        parameters: &params,
        steps: &outputs,
        run: &run_values,
    };
    for st in &status.steps {
        if st.state != Some(StepState::Executing) {
            continue;
        }
        let (Some(child), Some(step)) = (&st.child, spec.steps.iter().find(|s| s.name == st.name))
        else {
            continue;
        };
        if child.uid.is_some() {
            continue;
        }
        if let Err(message) = create_child(&ctx, &written, step, child, &values, &spec).await? {
            // Refused: fail the step on the next pass with the API server's message.
            mark_failed(&api, &name, &st.name, &message).await?;
        }
    }
    for child in to_stop {
        stop_child(&ctx, &namespace, &child).await?;
    }
    if status.state == Some(RunState::Executing) {
        Ok(Action::requeue(RECHECK))
    } else {
        Ok(Action::await_change())
    }
}

/// The wait before the attempt after `attempts`: the interval, times the
/// backoff factor for every retry already made.
fn retry_wait(r: &kiln_api::pipeline::RetryPolicy, attempts: i32) -> i64 {
    let factor = i64::from(r.backoff_factor.max(1)).saturating_pow((attempts - 1).max(0) as u32);
    i64::from(r.interval_seconds).saturating_mul(factor)
}

/// The outputs of every finished step, for references.
fn outputs_of(steps: &[StepStatus]) -> BTreeMap<String, BTreeMap<String, String>> {
    steps
        .iter()
        .filter(|s| s.state == Some(StepState::Succeeded))
        .map(|s| {
            (
                s.name.clone(),
                s.outputs
                    .iter()
                    .map(|o| (o.name.clone(), o.value.clone()))
                    .collect(),
            )
        })
        .collect()
}

/// What starting a step did.
enum Started {
    /// A child is to be created (recorded first).
    Child(ChildReference),
    /// Done at once: a condition (with its result).
    Done { result: Option<bool> },
    /// Failed at once: a fail step, a bad reference, an unsupported step.
    Failed(String),
    /// An identical step of another run succeeded within the cache's
    /// expiry: its run and outputs.
    Cached {
        run: String,
        outputs: BTreeMap<String, String>,
    },
}

/// The label of a cached step's child: the digest of its kind and resolved
/// configuration.
pub const CACHE_LABEL: &str = "kiln.dev/cache-key";

/// The cache key of a training or tuning step with caching on: the first
/// 40 hex digits of the SHA-256 of its kind and resolved body (serde_json
/// writes object keys in order, so equal bodies give equal text).
pub fn cache_key(step: &Step, values: &Values) -> Option<String> {
    step.cache.as_ref().filter(|c| c.enabled)?;
    let body = match (&step.training, &step.tuning) {
        (Some(t), _) => ("TrainingJob", &t.spec),
        (_, Some(t)) => ("TuningJob", &t.spec),
        _ => return None,
    };
    let resolved = values
        .resolve(&serde_json::Value::Object(body.1.clone()))
        .ok()?;
    let text = format!("{}\n{}", body.0, serde_json::to_string(&resolved).ok()?);
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    Some(
        digest.as_ref()[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The run and outputs of the newest finished child with `key`, completed
/// within the step's expiry.
async fn cached(
    ctx: &Context,
    namespace: &str,
    step: &Step,
    key: &str,
    now: Timestamp,
) -> Result<Option<(String, BTreeMap<String, String>)>> {
    let expire = step.cache.as_ref().and_then(|c| c.expire_after_seconds);
    let fresh = |end: Option<&Time>| match (expire, end) {
        (None, _) => true,
        (Some(e), Some(t)) => now.as_second() - t.0.as_second() <= e,
        (Some(_), None) => false,
    };
    let selector = ListParams::default().labels(&format!("{CACHE_LABEL}={key}"));
    let run_of =
        |labels: &BTreeMap<String, String>| labels.get(RUN_LABEL).cloned().unwrap_or_default();
    if step.training.is_some() {
        let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), namespace);
        let mut hits: Vec<TrainingJob> = api
            .list(&selector)
            .await?
            .items
            .into_iter()
            .filter(|j| {
                let s = j.status.as_ref();
                s.and_then(|s| s.state) == Some(TrainingJobState::Completed)
                    && fresh(s.and_then(|s| s.end_time.as_ref()))
            })
            .collect();
        hits.sort_by_key(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.end_time.as_ref())
                .map(|t| t.0.as_second())
        });
        return Ok(hits
            .pop()
            .map(|j| (run_of(j.labels()), training_outputs(&j))));
    }
    let api: Api<TuningJob> = Api::namespaced(ctx.client.clone(), namespace);
    let mut hits: Vec<TuningJob> = api
        .list(&selector)
        .await?
        .items
        .into_iter()
        .filter(|j| {
            let s = j.status.as_ref();
            s.and_then(|s| s.state) == Some(TuningJobState::Completed)
                && fresh(s.and_then(|s| s.end_time.as_ref()))
        })
        .collect();
    hits.sort_by_key(|j| {
        j.status
            .as_ref()
            .and_then(|s| s.end_time.as_ref())
            .map(|t| t.0.as_second())
    });
    Ok(hits.pop().map(|j| (run_of(j.labels()), tuning_outputs(&j))))
}

/// A completed TrainingJob's outputs.
fn training_outputs(job: &TrainingJob) -> BTreeMap<String, String> {
    let s = job.status.clone().unwrap_or_default();
    let mut out = BTreeMap::from([("trainingJobName".to_string(), job.name_any())]);
    if let Some(uri) = s.model_artifact_uri {
        out.insert("modelArtifactUri".into(), uri);
    }
    for m in s.final_metrics {
        out.insert(format!("metrics['{}']", m.name), m.value.to_string());
    }
    out
}

/// A completed TuningJob's outputs: its best trial's.
fn tuning_outputs(tj: &TuningJob) -> BTreeMap<String, String> {
    let s = tj.status.clone().unwrap_or_default();
    let mut out = BTreeMap::from([("tuningJobName".to_string(), tj.name_any())]);
    if let Some(best) = s.best_training_job {
        out.insert("trainingJobName".into(), best.name);
        out.insert(
            format!("metrics['{}']", tj.spec.objective.metric_name),
            best.objective_value.to_string(),
        );
        if let Some(uri) = best.model_artifact_uri {
            out.insert("modelArtifactUri".into(), uri);
        }
    }
    out
}

fn start(step: &Step, values: &Values, status: &PipelineRunStatus, run: &str) -> Started {
    if let Some(c) = &step.condition {
        let vars = condition_vars(values, status);
        return match condition::evaluate(&c.expression, &vars) {
            Ok(result) => Started::Done {
                result: Some(result),
            },
            Err(e) => Started::Failed(format!("condition {:?}: {e}", c.expression)),
        };
    }
    if let Some(f) = &step.fail {
        return match values.resolve(&serde_json::Value::String(f.message.clone())) {
            Ok(serde_json::Value::String(m)) => Started::Failed(m),
            Ok(other) => Started::Failed(other.to_string()),
            Err(e) => Started::Failed(e),
        };
    }
    if step.processing.is_some() {
        return Started::Failed(
            "processing steps are not run by this version of the operator: use a training step \
             with your own image for now"
                .into(),
        );
    }
    // The body must resolve now; the child is built again from it when created.
    if let Err(e) = values.resolve(&graph::body_of(step)) {
        return Started::Failed(e);
    }
    Started::Child(child_ref(step, run, 1))
}

/// The CEL variables of a condition: `parameters`, `steps` (state,
/// metrics as numbers, outputs, and the named outputs), `run`.
fn condition_vars(
    values: &Values,
    status: &PipelineRunStatus,
) -> serde_json::Map<String, serde_json::Value> {
    let mut steps = serde_json::Map::new();
    for st in &status.steps {
        let mut metrics = serde_json::Map::new();
        let mut outputs = serde_json::Map::new();
        let mut entry = serde_json::Map::new();
        for o in &st.outputs {
            if let Some(m) = o
                .name
                .strip_prefix("metrics['")
                .and_then(|m| m.strip_suffix("']"))
            {
                if let Some(n) = o
                    .value
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    metrics.insert(m.into(), serde_json::Value::Number(n));
                }
            } else if let Some(n) = o.name.strip_prefix("outputs.") {
                outputs.insert(n.into(), o.value.clone().into());
            } else {
                entry.insert(o.name.clone(), o.value.clone().into());
            }
        }
        let state = st.state.map(|s| format!("{s:?}")).unwrap_or_default();
        entry.insert("state".into(), state.into());
        entry.insert("metrics".into(), metrics.into());
        entry.insert("outputs".into(), outputs.into());
        steps.insert(st.name.clone(), entry.into());
    }
    let mut vars = serde_json::Map::new();
    vars.insert(
        "parameters".into(),
        serde_json::to_value(values.parameters).unwrap_or_default(),
    );
    vars.insert("steps".into(), steps.into());
    vars.insert(
        "run".into(),
        serde_json::to_value(values.run).unwrap_or_default(),
    );
    vars
}

/// A child's name: `<run>-<step>` (and `-<attempt>` after the first),
/// shortened with a hash of the whole when longer than any child kind allows.
pub fn child_name(run: &str, step: &str, attempt: i32) -> String {
    let full = if attempt > 1 {
        format!("{run}-{step}-{attempt}")
    } else {
        format!("{run}-{step}")
    };
    if full.len() <= MAX_CHILD_NAME {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = &full[..MAX_CHILD_NAME - 9];
    format!("{}-{:08x}", keep.trim_end_matches('-'), hash as u32)
}

fn child_ref(step: &Step, run: &str, attempt: i32) -> ChildReference {
    let (kind, name) = if let Some(d) = &step.deploy {
        ("Endpoint", d.endpoint_name.clone())
    } else if step.tuning.is_some() {
        ("TuningJob", child_name(run, &step.name, attempt))
    } else if step.register_model.is_some() {
        ("ModelPackage", child_name(run, &step.name, attempt))
    } else {
        ("TrainingJob", child_name(run, &step.name, attempt))
    };
    ChildReference {
        api_version: "kiln.dev/v1alpha1".into(),
        kind: kind.into(),
        name,
        uid: None,
    }
}

/// The child object of a step, as JSON, resolved.
fn child_object(
    run: &PipelineRun,
    step: &Step,
    child: &ChildReference,
    values: &Values,
    spec: &PipelineSpec,
) -> std::result::Result<serde_json::Value, String> {
    let labels = serde_json::json!({RUN_LABEL: run.name_any(), STEP_LABEL: step.name});
    let owner = serde_json::json!([{
        "apiVersion": PipelineRun::api_version(&()), "kind": PipelineRun::kind(&()),
        "name": run.name_any(), "uid": run.uid().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    let mut metadata = serde_json::json!({"name": child.name, "labels": labels});
    if let Some(key) = cache_key(step, values) {
        metadata["labels"][CACHE_LABEL] = key.into();
    }
    let body = if let Some(t) = &step.training {
        metadata["ownerReferences"] = owner;
        let mut body = values.resolve(&serde_json::Value::Object(t.spec.clone()))?;
        as_strings(&mut body["hyperparameters"]);
        body
    } else if let Some(t) = &step.tuning {
        metadata["ownerReferences"] = owner;
        let mut body = values.resolve(&serde_json::Value::Object(t.spec.clone()))?;
        as_strings(&mut body["trainingJobTemplate"]["spec"]["hyperparameters"]);
        body
    } else if let Some(d) = &step.deploy {
        values.resolve(&serde_json::Value::Object(d.spec.clone()))?
    } else if let Some(r) = &step.register_model {
        register_spec(run, r, values, spec)?
    } else {
        return Err(format!("step {} creates no object", step.name));
    };
    Ok(serde_json::json!({
        "apiVersion": child.api_version, "kind": child.kind,
        "metadata": metadata, "spec": body,
    }))
}

/// Hyperparameters are strings (SageMaker's contract): a reference that
/// resolved to a number or a boolean there becomes its text.
fn as_strings(map: &mut serde_json::Value) {
    if let Some(map) = map.as_object_mut() {
        for v in map.values_mut() {
            if !v.is_string() && !v.is_null() {
                *v = serde_json::Value::String(v.to_string());
            }
        }
    }
}

/// A ModelPackage's spec for the model of `modelFromStep`: its artifact,
/// the algorithm or image and the output's credentials from the step's own
/// spec, lineage to its TrainingJob and this pipeline.
fn register_spec(
    run: &PipelineRun,
    r: &kiln_api::pipeline::RegisterModelStep,
    values: &Values,
    spec: &PipelineSpec,
) -> std::result::Result<serde_json::Value, String> {
    let from = spec
        .steps
        .iter()
        .find(|s| s.name == r.model_from_step)
        .ok_or_else(|| format!("registerModel.modelFromStep: no step {}", r.model_from_step))?;
    let outputs = values
        .steps
        .get(&from.name)
        .ok_or_else(|| format!("step {} has not succeeded", from.name))?;
    let uri = outputs
        .get("modelArtifactUri")
        .ok_or_else(|| format!("step {} reported no model artifact", from.name))?;
    let training = match (&from.training, &from.tuning) {
        (Some(t), _) => values.resolve(&serde_json::Value::Object(t.spec.clone()))?,
        (_, Some(t)) => values.resolve(&serde_json::Value::Object(t.spec.clone()))?["trainingJobTemplate"]["spec"].clone(),
        _ => return Err(format!("step {} is neither training nor tuning", from.name)),
    };
    let mut inference = serde_json::json!({"modelData": {"uri": uri}});
    if let Some(secret) = training["output"]["location"].get("secretRef") {
        inference["modelData"]["secretRef"] = secret.clone();
    }
    for k in ["name", "image"] {
        if let Some(v) = training["algorithm"].get(k) {
            inference[if k == "name" { "algorithm" } else { "image" }] = v.clone();
        }
    }
    let mut source = serde_json::json!({"pipeline": run.spec.pipeline_ref.name});
    if let Some(job) = outputs.get("trainingJobName") {
        source["trainingJob"] = job.clone().into();
    }
    let mut out = serde_json::json!({
        "groupName": r.group_name,
        "inference": inference,
        "source": source,
        "approval": {"status": r.approval_status},
    });
    if let Some(d) = &r.description {
        out["description"] = values.resolve(&d.clone().into())?;
    }
    Ok(out)
}

/// Creates (or, for an Endpoint, applies) a step's child. `Ok(Err(_))` is
/// the API server refusing it, with its message.
async fn create_child(
    ctx: &Context,
    run: &PipelineRun,
    step: &Step,
    child: &ChildReference,
    values: &Values<'_>,
    spec: &PipelineSpec,
) -> Result<std::result::Result<(), String>> {
    let object = match child_object(run, step, child, values, spec) {
        Ok(o) => o,
        Err(message) => return Ok(Err(message)),
    };
    let namespace = run.namespace().unwrap_or_default();
    let plural = match child.kind.as_str() {
        "TrainingJob" => "trainingjobs",
        "TuningJob" => "tuningjobs",
        "ModelPackage" => "modelpackages",
        _ => "endpoints",
    };
    let base = format!("/apis/kiln.dev/v1alpha1/namespaces/{namespace}/{plural}");
    // Strict field validation: a misspelled field in a step body is refused
    // with its path instead of dropped.
    let request = if child.kind == "Endpoint" {
        http::Request::patch(format!(
            "{base}/{}?fieldManager={MANAGER}&force=true&fieldValidation=Strict",
            child.name
        ))
        .header("content-type", "application/apply-patch+yaml")
    } else {
        http::Request::post(format!("{base}?fieldValidation=Strict"))
            .header("content-type", "application/json")
    };
    let request = match request.body(serde_json::to_vec(&object).unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("{} {}: {e}", child.kind, child.name))),
    };
    match ctx.client.request::<serde_json::Value>(request).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Ok(())),
        Err(e) => match Error::from_child_error(&format!("{} {}", child.kind, child.name), e) {
            Error::ChildRefused(message) => Ok(Err(message)),
            other => Err(other),
        },
    }
}

/// Records a refused child as the step's failure (read back on the next pass).
async fn mark_failed(api: &Api<PipelineRun>, run: &str, step: &str, message: &str) -> Result<()> {
    let current = api.get(run).await?;
    let mut status = current.status.clone().unwrap_or_default();
    if let Some(st) = status.steps.iter_mut().find(|s| s.name == step) {
        st.state = Some(StepState::Failed);
        st.message = Some(message.chars().take(4096).collect());
        st.completion_time = Some(Time(Timestamp::now()));
    }
    let old = current.status.clone().unwrap_or_default();
    write(api, &current, &old, &status).await?;
    Ok(())
}

/// What a step's child says.
enum Seen {
    /// Still running (its UID once it exists; a message worth showing).
    Running {
        uid: Option<String>,
        message: Option<String>,
    },
    /// Done, with its outputs.
    Succeeded(BTreeMap<String, String>),
    /// Failed, with the kind of failure and why.
    Failed(FailureKind, String),
}

async fn observe(
    ctx: &Context,
    namespace: &str,
    step: &Step,
    child: &ChildReference,
    st: &StepStatus,
    now: Timestamp,
) -> Result<Seen> {
    let gone = |uid: &Option<String>| match uid {
        Some(_) => Seen::Failed(
            FailureKind::Algorithm,
            format!("{} {} was deleted", child.kind, child.name),
        ),
        None => Seen::Running {
            uid: None,
            message: None,
        },
    };
    let same = |u: Option<String>| child.uid.is_none() || child.uid == u;
    match child.kind.as_str() {
        "TrainingJob" => {
            let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(job) = api.get_opt(&child.name).await?.filter(|j| same(j.uid())) else {
                return Ok(gone(&child.uid));
            };
            let s = job.status.clone().unwrap_or_default();
            Ok(match s.state {
                Some(TrainingJobState::Completed) => Seen::Succeeded(training_outputs(&job)),
                Some(TrainingJobState::Failed) => {
                    let reason = conditions::find(&s.conditions, types::SUCCEEDED)
                        .map(|c| c.reason.clone())
                        .unwrap_or_default();
                    let kind = match reason.as_str() {
                        reasons::MAX_RUNTIME_EXCEEDED
                        | reasons::MAX_WAIT_EXCEEDED
                        | reasons::MAX_PENDING_EXCEEDED => FailureKind::Timeout,
                        reasons::SPOT_INTERRUPTED => FailureKind::Capacity,
                        _ => FailureKind::Algorithm,
                    };
                    Seen::Failed(
                        kind,
                        format!(
                            "TrainingJob {}: {}",
                            job.name_any(),
                            s.failure_reason.unwrap_or(reason)
                        ),
                    )
                }
                Some(TrainingJobState::Stopped) => Seen::Failed(
                    FailureKind::Algorithm,
                    format!("TrainingJob {} was stopped", job.name_any()),
                ),
                _ => Seen::Running {
                    uid: job.uid(),
                    message: None,
                },
            })
        }
        "TuningJob" => {
            let api: Api<TuningJob> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(tj) = api.get_opt(&child.name).await?.filter(|j| same(j.uid())) else {
                return Ok(gone(&child.uid));
            };
            let s = tj.status.clone().unwrap_or_default();
            Ok(match s.state {
                Some(TuningJobState::Completed) => Seen::Succeeded(tuning_outputs(&tj)),
                Some(TuningJobState::Failed | TuningJobState::Stopped) => Seen::Failed(
                    FailureKind::Algorithm,
                    format!(
                        "TuningJob {}: {}",
                        tj.name_any(),
                        s.failure_reason.unwrap_or_default()
                    ),
                ),
                _ => Seen::Running {
                    uid: tj.uid(),
                    message: None,
                },
            })
        }
        "ModelPackage" => {
            let api: Api<ModelPackage> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(p) = api.get_opt(&child.name).await?.filter(|j| same(j.uid())) else {
                return Ok(gone(&child.uid));
            };
            let s = p.status.clone().unwrap_or_default();
            let ready = conditions::find(&s.conditions, types::READY);
            Ok(match (s.version, s.state) {
                (_, Some(ModelPackageState::Failed)) => Seen::Failed(
                    FailureKind::Algorithm,
                    format!(
                        "ModelPackage {}: {}",
                        p.name_any(),
                        ready.map(|c| c.message.clone()).unwrap_or_default()
                    ),
                ),
                (Some(v), _) => Seen::Succeeded(BTreeMap::from([
                    ("modelPackageName".to_string(), p.name_any()),
                    ("modelPackageVersion".to_string(), v.to_string()),
                ])),
                _ => Seen::Running {
                    uid: p.uid(),
                    message: ready.map(|c| c.message.clone()),
                },
            })
        }
        _ => {
            let api: Api<Endpoint> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(ep) = api.get_opt(&child.name).await? else {
                return Ok(Seen::Running {
                    uid: None,
                    message: None,
                });
            };
            let wait = step.deploy.as_ref().is_none_or(|d| d.wait_for_ready);
            let s = ep.status.clone().unwrap_or_default();
            let mut out = BTreeMap::from([("endpointName".to_string(), ep.name_any())]);
            if let Some(url) = &s.url {
                out.insert("url".into(), url.clone());
            }
            let ready = conditions::find(&s.conditions, types::READY);
            let current = s.observed_generation == ep.metadata.generation;
            if !wait || (current && ready.is_some_and(|c| c.status == "True")) {
                return Ok(Seen::Succeeded(out));
            }
            if current && ready.is_some_and(|c| c.status == "False" && c.reason == "Failed") {
                return Ok(Seen::Failed(
                    FailureKind::Algorithm,
                    format!(
                        "Endpoint {}: {}",
                        ep.name_any(),
                        ready.map(|c| c.message.clone()).unwrap_or_default()
                    ),
                ));
            }
            let started = st
                .start_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(now.as_second());
            if now.as_second() - started > DEPLOY_TIMEOUT_SECONDS {
                return Ok(Seen::Failed(
                    FailureKind::Timeout,
                    format!(
                        "Endpoint {} was not Ready within {DEPLOY_TIMEOUT_SECONDS} s: {}",
                        ep.name_any(),
                        ready.map(|c| c.message.clone()).unwrap_or_default()
                    ),
                ));
            }
            Ok(Seen::Running {
                uid: ep.uid(),
                message: ready.map(|c| c.message.clone()),
            })
        }
    }
}

/// Stops a running child: a TrainingJob is suspended, a TuningJob deleted
/// (with its trials); a ModelPackage or Endpoint is left as it is.
async fn stop_child(ctx: &Context, namespace: &str, child: &ChildReference) -> Result<()> {
    let result = match child.kind.as_str() {
        "TrainingJob" => {
            let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), namespace);
            let patch = serde_json::json!({"spec": {"suspend": true}});
            api.patch(&child.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        "TuningJob" => {
            let api: Api<TuningJob> = Api::namespaced(ctx.client.clone(), namespace);
            api.delete(&child.name, &Default::default())
                .await
                .map(|_| ())
        }
        _ => Ok(()),
    };
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map_err(Error::from),
    }
}

fn end(
    status: &mut PipelineRunStatus,
    state: RunState,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.state = Some(state);
    status.completion_time.get_or_insert(Time(now));
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::SUCCEEDED,
            state == RunState::Succeeded,
            reason,
            message,
            generation,
            Time(now),
        ),
    );
}

/// Writes the status with the run's resourceVersion; `None` when someone
/// wrote first (the caller looks again).
async fn write(
    api: &Api<PipelineRun>,
    current: &PipelineRun,
    old: &PipelineRunStatus,
    status: &PipelineRunStatus,
) -> Result<Option<PipelineRun>> {
    if status == old {
        return Ok(Some(current.clone()));
    }
    let mut next = current.clone();
    next.status = Some(status.clone());
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api
        .replace_status(&current.name_any(), &params, &next)
        .await
    {
        Ok(w) => Ok(Some(w)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn publish_all(
    ctx: &Context,
    run: &PipelineRun,
    events: &[(EventType, &'static str, String)],
) {
    for (t, reason, note) in events {
        publish(ctx, run, *t, reason, note).await;
    }
}

/// What a failed reconcile does next.
pub fn error_policy(run: Arc<PipelineRun>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("PipelineRun", run.as_ref(), error, &ctx)
}

#[cfg(test)]
mod tests;
