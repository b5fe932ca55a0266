//! The TuningJob controller: observe -> decide -> record -> create/stop.
//!
//! Observe: every trial is a TrainingJob `<tuning job>-<index>` the
//! TuningJob owns; its state and final objective are copied into the trial
//! records, and with median early stopping the objective's intermediate
//! values are read from the metric lines of rank 0's log.
//! Decide: the budgets and completion criteria (see [`search::Budget`]), the
//! median rule, and the strategy's next suggestions, recomputed from the
//! records (kiln-tuning keeps no state of its own).
//! Record: new trials are written to status (with `nextTrialIndex`) before
//! their TrainingJobs exist, with an update that carries the TuningJob's
//! resourceVersion: an operator that restarts, or a second one that wrote
//! first, makes this write fail instead of numbering a trial twice.
//! Create/stop: a recorded trial without a start time gets its TrainingJob;
//! trials stopped early or by the end of the search are suspended (their
//! pods end, the TrainingJob stays with its status).
//! Deleting a TuningJob deletes its trials: they carry its owner reference.

pub mod search;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kiln_api::tuning_job::{
    TrainingJobCounts, TrialRecord, TrialSummary, TuningJob, TuningJobState, TuningJobStatus,
    WarmStartType,
};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use self::search::{Budget, Finish, Search, states};
use super::Context;
use super::apply::publish;
use super::error::{Error, Result};
use super::training_job::build::TRAIN_CONTAINER;

/// The label every trial carries: its TuningJob's name.
pub const TUNING_JOB_LABEL: &str = "kiln.dev/tuning-job";
/// The label with the trial's index.
pub const TRIAL_INDEX_LABEL: &str = "kiln.dev/trial-index";
/// The field manager of the trials' `spec.suspend`.
const STOP_MANAGER: &str = "kiln-operator/tuning-job";
/// The field manager of the status, written with updates.
const STATUS_MANAGER: &str = "kiln-operator/tuning-job-status";
/// Trial records kept in status.
const MAX_RECORDS: usize = 100;
/// How often running trials are looked at for their intermediate values.
const CURVE_RECHECK: Duration = Duration::from_secs(15);
/// How much of rank 0's log is read for metric lines.
const LOG_BYTES: i64 = 4 << 20;

/// Intermediate objective values of trials, by namespace/name: a finished
/// trial's log is read once.
#[derive(Default)]
pub struct Curves(Mutex<HashMap<String, (bool, Curve)>>);

/// A trial's (epoch or step, value) points of the objective.
type Curve = Vec<(u64, f64)>;

/// One reconcile of a TuningJob.
pub async fn reconcile(tj: Arc<TuningJob>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = tj
        .namespace()
        .ok_or(Error::Incomplete("a TuningJob without a namespace"))?;
    let name = tj.name_any();
    let api: Api<TuningJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    // Read afresh: the controller's cache may not show the status (and the
    // trial numbers) this controller wrote a moment ago.
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = current
        .uid()
        .ok_or(Error::Incomplete("a TuningJob without a UID"))?;
    let now = Timestamp::now();
    let generation = current.metadata.generation;
    let old = current.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    status.start_time.get_or_insert(Time(now));

    let mut search = match Search::new(&current.spec, search::seed(&current.spec, &uid)) {
        Ok(s) => s,
        Err(message) => {
            end(
                &mut status,
                &failed(reasons::INVALID_SPEC, message),
                generation,
                now,
            );
            return finish_reconcile(&ctx, &api, current, &old, status, &[], &[]).await;
        }
    };
    let selector = ListParams::default().labels(&format!("{TUNING_JOB_LABEL}={name}"));
    let trials: BTreeMap<String, TrainingJob> = jobs
        .list(&selector)
        .await?
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| o.uid == uid))
        .map(|j| (j.name_any(), j))
        .collect();
    let metric = current.spec.objective.metric_name.clone();
    let mut notes = Vec::new();
    let extra = search.extra_metrics();
    for record in &mut status.trials {
        observe(
            record,
            trials.get(&record.name),
            &metric,
            &extra,
            &mut notes,
        );
    }
    let terminal = matches!(
        status.state,
        Some(TuningJobState::Completed | TuningJobState::Failed | TuningJobState::Stopped)
    );
    let parents = if terminal {
        Vec::new()
    } else {
        match parents(&ctx, &namespace, &current).await? {
            Ok(p) => p,
            Err(message) => {
                end(
                    &mut status,
                    &failed(reasons::PARENT_NOT_FOUND, message),
                    generation,
                    now,
                );
                let stop = to_stop(&mut status, &trials);
                return finish_reconcile(&ctx, &api, current, &old, status, &[], &stop).await;
            }
        }
    };
    let curves = if search.stops_early() && !terminal {
        curves(&ctx, &namespace, &status.trials, &trials, &metric).await
    } else {
        BTreeMap::new()
    };

    if !terminal {
        // A completed trial without the objective: the metric's name is
        // wrong for this template, and every later trial would miss it too.
        if let Some((trial, missing, reported)) = notes.iter().find_map(|n| match n {
            Note::MissingObjective(t, missing, r) => Some((t.clone(), missing.clone(), r.clone())),
            _ => None,
        }) {
            let message = format!(
                "trial {trial} completed without reporting the objective metric {missing:?} \
                 (it reported: {}); name one of these in objective.metricName or \
                 additionalObjectives",
                if reported.is_empty() {
                    "nothing".to_string()
                } else {
                    reported.join(", ")
                }
            );
            end(
                &mut status,
                &failed(reasons::OBJECTIVE_METRIC_MISSING, message),
                generation,
                now,
            );
        }
    }
    let terminal = terminal
        || status
            .state
            .is_some_and(|s| s != TuningJobState::InProgress);
    if !terminal {
        let history = search::history(
            &search.space,
            &extra,
            &parents,
            &status.trials,
            status.next_trial_index.max(1),
            &curves,
        );
        for index in search.to_stop_early(&history) {
            if let Some(r) = status.trials.iter_mut().find(|r| r.index == index) {
                r.state = Some(states::EARLY_STOPPED.into());
                r.objective_value = curves.get(&index).and_then(|c| c.last()).map(|(_, v)| *v);
                notes.push(Note::EarlyStopped(r.name.clone()));
            }
        }
        let counts = counts(&status.trials, &trials, status.next_trial_index);
        let best = best_value(&status, &search);
        let created = status.next_trial_index.max(1) - 1;
        let budget = Budget {
            spec: &current.spec,
            direction: search.direction,
            created,
            failed: counts.non_retryable_error + counts.retryable_error,
            running: counts.in_progress,
            best,
            start: status.start_time.as_ref().map(|t| t.0),
            now,
        };
        let limits = &current.spec.limits;
        let room = (limits.max_parallel_training_jobs - counts.in_progress)
            .min(limits.max_training_jobs - created)
            .max(0) as usize;
        let mut verdict = budget.verdict(&status.trials, false);
        if verdict.is_none() && room > 0 {
            let suggestions = search.suggest(&history, room);
            if suggestions.is_empty() {
                verdict = budget.verdict(&status.trials, true);
            }
            for s in suggestions {
                let index = status.next_trial_index.max(1);
                let trial_name = format!("{name}-{index}");
                let record = search.record(index, trial_name, &s, &history);
                status.next_trial_index = index + 1;
                status.trials.push(record);
            }
        }
        if let Some(finish) = verdict {
            end(&mut status, &finish, generation, now);
        } else {
            set_running(&mut status, generation, now);
        }
    }
    let stop = to_stop(&mut status, &trials);
    trim(&mut status.trials);
    summarize(&mut status, &trials, &search, &metric);
    for n in &mut notes {
        if let Note::EarlyStopped(t) = n {
            *n = Note::Event(
                EventType::Normal,
                "TrialEarlyStopped",
                format!("trial {t} stopped by median early stopping"),
            );
        }
    }
    let events: Vec<(EventType, &'static str, String)> = notes
        .into_iter()
        .filter_map(|n| match n {
            Note::Event(t, r, m) => Some((t, r, m)),
            _ => None,
        })
        .collect();
    let action = finish_reconcile(&ctx, &api, current, &old, status, &events, &stop).await?;
    // Running trials with median stopping are looked at again for their curves.
    Ok(action)
}

/// What observing the trials found, for Events and decisions.
enum Note {
    /// A trial completed without the objective metric; what it reported.
    MissingObjective(String, String, Vec<String>),
    /// The median rule stopped the trial.
    EarlyStopped(String),
    /// An Event to publish.
    Event(EventType, &'static str, String),
}

/// Copies a trial's TrainingJob state into its record.
fn observe(
    record: &mut TrialRecord,
    job: Option<&TrainingJob>,
    metric: &str,
    extra: &[String],
    notes: &mut Vec<Note>,
) {
    let state = record.state.as_deref().unwrap_or(states::IN_PROGRESS);
    let Some(job) = job else {
        if state == states::IN_PROGRESS && record.start_time.is_some() {
            // Created once, gone now: deleted by someone else.
            record.state = Some(states::STOPPED.into());
            notes.push(Note::Event(
                EventType::Warning,
                "TrialDeleted",
                format!("trial {} was deleted before it finished", record.name),
            ));
        }
        return;
    };
    if record.start_time.is_none() {
        record.start_time = job.metadata.creation_timestamp.clone();
    }
    if state != states::IN_PROGRESS {
        return;
    }
    let status = job.status.clone().unwrap_or_default();
    match status.state {
        Some(TrainingJobState::Completed) => {
            let value_of = |name: &str| {
                status
                    .final_metrics
                    .iter()
                    .find(|m| m.name == name)
                    .map(|m| m.value)
                    .filter(|v| v.is_finite())
            };
            let extras: Option<BTreeMap<String, f64>> = extra
                .iter()
                .map(|m| value_of(m).map(|v| (m.clone(), v)))
                .collect();
            match (value_of(metric), extras) {
                (Some(v), Some(extras)) => {
                    record.state = Some(states::COMPLETED.into());
                    record.objective_value = Some(v);
                    record.additional_objective_values = extras;
                }
                _ => {
                    record.state = Some(states::FAILED.into());
                    let reported = status
                        .final_metrics
                        .iter()
                        .map(|m| m.name.clone())
                        .collect();
                    let missing = std::iter::once(metric)
                        .chain(extra.iter().map(String::as_str))
                        .find(|m| {
                            !status
                                .final_metrics
                                .iter()
                                .any(|x| x.name == *m && x.value.is_finite())
                        })
                        .unwrap_or(metric)
                        .to_string();
                    notes.push(Note::MissingObjective(
                        record.name.clone(),
                        missing,
                        reported,
                    ));
                }
            }
        }
        Some(TrainingJobState::Failed) => {
            record.state = Some(states::FAILED.into());
            let why = status.failure_reason.unwrap_or_default();
            notes.push(Note::Event(
                EventType::Warning,
                "TrialFailed",
                format!("trial {} failed: {why}", record.name),
            ));
        }
        // Stopped by someone else (suspended): it counts as stopped.
        Some(TrainingJobState::Stopped) if job.spec.suspend => {
            record.state = Some(states::STOPPED.into());
        }
        _ => {}
    }
}

/// The trials to stop: once the search ended, every trial still in
/// progress is recorded as Stopped; then every trial recorded as stopped
/// (early or by the end) whose TrainingJob still runs. Recomputed on each
/// reconcile, so a stop that did not reach the API server is made again.
fn to_stop(status: &mut TuningJobStatus, trials: &BTreeMap<String, TrainingJob>) -> Vec<String> {
    let ended = status
        .state
        .is_some_and(|s| s != TuningJobState::InProgress);
    for r in &mut status.trials {
        if ended && r.state.as_deref() == Some(states::IN_PROGRESS) {
            r.state = Some(states::STOPPED.into());
        }
    }
    status
        .trials
        .iter()
        .filter(|r| {
            matches!(
                r.state.as_deref(),
                Some(states::STOPPED | states::EARLY_STOPPED)
            )
        })
        .filter_map(|r| trials.get(&r.name))
        .filter(|job| {
            !job.spec.suspend
                && !matches!(
                    job.status.as_ref().and_then(|s| s.state),
                    Some(TrainingJobState::Completed | TrainingJobState::Failed)
                )
        })
        .map(|job| job.name_any())
        .collect()
}

/// Counts over every trial: the records, and for trials whose record was
/// dropped (beyond the newest 100), their TrainingJobs.
fn counts(
    records: &[TrialRecord],
    trials: &BTreeMap<String, TrainingJob>,
    next_index: i32,
) -> TrainingJobCounts {
    let mut c = TrainingJobCounts::default();
    let recorded: std::collections::BTreeSet<i32> = records.iter().map(|r| r.index).collect();
    let mut add = |state: &str| match state {
        states::COMPLETED => c.completed += 1,
        states::FAILED => c.non_retryable_error += 1,
        states::EARLY_STOPPED => c.early_stopped += 1,
        states::STOPPED => c.stopped += 1,
        _ => c.in_progress += 1,
    };
    for r in records {
        add(r.state.as_deref().unwrap_or(states::IN_PROGRESS));
    }
    for job in trials.values() {
        let index = job
            .labels()
            .get(TRIAL_INDEX_LABEL)
            .and_then(|i| i.parse::<i32>().ok());
        if !index.is_some_and(|i| !recorded.contains(&i) && i < next_index) {
            continue;
        }
        let state = job.status.as_ref().and_then(|s| s.state);
        add(match state {
            Some(TrainingJobState::Completed) => states::COMPLETED,
            Some(TrainingJobState::Failed) => states::FAILED,
            Some(TrainingJobState::Stopped) => match job.annotations().get(STOPPED_BY) {
                Some(s) if s == states::EARLY_STOPPED => states::EARLY_STOPPED,
                _ => states::STOPPED,
            },
            _ => states::IN_PROGRESS,
        });
    }
    c
}

/// The annotation a trial's TrainingJob gets when this controller stops it:
/// why (`EarlyStopped` or `Stopped`).
const STOPPED_BY: &str = "kiln.dev/stopped-by";

/// The best objective over every trial: the records' and the kept best.
fn best_value(status: &TuningJobStatus, search: &Search) -> Option<f64> {
    let recorded = search::best(&status.trials, search.direction).and_then(|r| r.objective_value);
    let kept = status.best_training_job.as_ref().map(|b| b.objective_value);
    match (recorded, kept) {
        (Some(a), Some(b)) => Some(if search.direction.loss(a) <= search.direction.loss(b) {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    }
}

/// Keeps the newest [`MAX_RECORDS`] records, dropping finished ones first.
fn trim(records: &mut Vec<TrialRecord>) {
    records.sort_by_key(|r| r.index);
    while records.len() > MAX_RECORDS {
        let oldest_finished = records
            .iter()
            .position(|r| r.state.as_deref() != Some(states::IN_PROGRESS))
            .unwrap_or(0);
        records.remove(oldest_finished);
    }
}

/// Counts and the best trial.
fn summarize(
    status: &mut TuningJobStatus,
    trials: &BTreeMap<String, TrainingJob>,
    search: &Search,
    objective: &str,
) {
    status.pareto_front = search.pareto(&status.trials, objective);
    status.training_job_counts = counts(&status.trials, trials, status.next_trial_index);
    if let Some(best) = search::best(&status.trials, search.direction) {
        let value = best.objective_value.unwrap_or(f64::NAN);
        let better = status.best_training_job.as_ref().is_none_or(|b| {
            b.name == best.name
                || search.direction.loss(value) < search.direction.loss(b.objective_value)
        });
        if better {
            let uri = trials
                .get(&best.name)
                .and_then(|j| j.status.as_ref())
                .and_then(|s| s.model_artifact_uri.clone());
            let kept = status
                .best_training_job
                .as_ref()
                .filter(|b| b.name == best.name)
                .and_then(|b| b.model_artifact_uri.clone());
            status.best_training_job = Some(TrialSummary {
                name: best.name.clone(),
                hyperparameters: best.hyperparameters.clone(),
                objective_value: value,
                model_artifact_uri: uri.or(kept),
            });
        }
    }
}

fn failed(reason: &'static str, message: String) -> Finish {
    Finish {
        succeeded: false,
        reason,
        message,
    }
}

/// Ends the search: state, conditions, end time.
fn end(status: &mut TuningJobStatus, finish: &Finish, generation: Option<i64>, now: Timestamp) {
    let now = Time(now);
    status.state = Some(if finish.succeeded {
        TuningJobState::Completed
    } else {
        TuningJobState::Failed
    });
    status.end_time.get_or_insert(now.clone());
    status.failure_reason = (!finish.succeeded).then(|| finish.message.clone());
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::SUCCEEDED,
            finish.succeeded,
            finish.reason,
            finish.message.clone(),
            generation,
            now.clone(),
        ),
    );
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::RUNNING,
            false,
            finish.reason,
            "the search ended",
            generation,
            now,
        ),
    );
}

fn set_running(status: &mut TuningJobStatus, generation: Option<i64>, now: Timestamp) {
    let now = Time(now);
    status.state = Some(TuningJobState::InProgress);
    let c = &status.training_job_counts;
    let message = format!(
        "{} trials created, {} running",
        status.next_trial_index.max(1) - 1,
        c.in_progress
    );
    conditions::set_condition(
        &mut status.conditions,
        conditions::unknown(
            types::SUCCEEDED,
            reasons::TRAINING,
            message.clone(),
            generation,
            now.clone(),
        ),
    );
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::RUNNING,
            true,
            reasons::TRAINING,
            message,
            generation,
            now,
        ),
    );
}

/// Writes the status (with the TuningJob's resourceVersion), then creates
/// the recorded trials that have no TrainingJob yet and stops `stop`.
async fn finish_reconcile(
    ctx: &Context,
    api: &Api<TuningJob>,
    current: TuningJob,
    old: &TuningJobStatus,
    status: TuningJobStatus,
    events: &[(EventType, &'static str, String)],
    stop: &[String],
) -> Result<Action> {
    let name = current.name_any();
    let namespace = current.namespace().unwrap_or_default();
    let ended = status.state != old.state && status.state != Some(TuningJobState::InProgress);
    let new_best = status.best_training_job.as_ref().map(|b| b.name.clone())
        != old.best_training_job.as_ref().map(|b| b.name.clone());
    let written = if &status != old {
        let mut next = current.clone();
        next.status = Some(status.clone());
        let params = PostParams {
            field_manager: Some(STATUS_MANAGER.into()),
            ..PostParams::default()
        };
        match api.replace_status(&name, &params, &next).await {
            Ok(w) => w,
            // Someone wrote first: look again at what they wrote.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        current
    };
    for (type_, reason, note) in events {
        publish(ctx, &written, *type_, reason, note).await;
    }
    if new_best && let Some(best) = &status.best_training_job {
        let note = format!(
            "trial {} is the best so far: objective {}",
            best.name, best.objective_value
        );
        publish(ctx, &written, EventType::Normal, "NewBestTrial", &note).await;
    }
    if ended {
        let (type_, note) = match status.state {
            Some(TuningJobState::Completed) => (
                EventType::Normal,
                conditions::find(&status.conditions, types::SUCCEEDED)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            ),
            _ => (
                EventType::Warning,
                status.failure_reason.clone().unwrap_or_default(),
            ),
        };
        let reason = conditions::find(&status.conditions, types::SUCCEEDED)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        publish(ctx, &written, type_, &reason, &note).await;
    }

    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let resource_name = written
        .spec
        .strategy
        .hyperband
        .as_ref()
        .map(|h| h.resource_name.clone());
    let terminal = status.state != Some(TuningJobState::InProgress);
    for record in status
        .trials
        .iter()
        .filter(|r| r.start_time.is_none() && r.state.as_deref() == Some(states::IN_PROGRESS))
    {
        if terminal {
            break;
        }
        let job = trial_job(&written, record, resource_name.as_deref());
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {
                let note = format!(
                    "trial {} with {}",
                    record.name,
                    describe(
                        &record.hyperparameters,
                        record.resource,
                        resource_name.as_deref()
                    )
                );
                publish(ctx, &written, EventType::Normal, "TrialCreated", &note).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::from_child_error(
                    &format!("TrainingJob {}", record.name),
                    e,
                ));
            }
        }
    }
    for trial in stop {
        let why = status
            .trials
            .iter()
            .find(|r| &r.name == trial)
            .and_then(|r| r.state.clone())
            .unwrap_or_else(|| states::STOPPED.into());
        let patch = serde_json::json!({
            "apiVersion": TrainingJob::api_version(&()),
            "kind": TrainingJob::kind(&()),
            "metadata": {"annotations": {STOPPED_BY: why}},
            "spec": {"suspend": true},
        });
        match jobs
            .patch(
                trial,
                &PatchParams::apply(STOP_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if terminal {
        return Ok(Action::await_change());
    }
    // Trials wake the TuningJob when they change; median stopping reads
    // curves of running trials, and maxRuntimeSeconds is a clock.
    let mut wait = Duration::from_secs(300);
    if written.spec.early_stopping.type_ != kiln_api::tuning_job::EarlyStoppingType::None {
        wait = wait.min(CURVE_RECHECK);
    }
    if let (Some(max), Some(start)) = (written.spec.limits.max_runtime_seconds, &status.start_time)
    {
        let left = (start.0.as_second() + max - Timestamp::now().as_second()).max(1) as u64;
        wait = wait.min(Duration::from_secs(left));
    }
    Ok(Action::requeue(wait))
}

fn describe(
    hps: &BTreeMap<String, String>,
    resource: Option<i64>,
    resource_name: Option<&str>,
) -> String {
    let mut parts: Vec<String> = hps.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let (Some(r), Some(n)) = (resource, resource_name) {
        parts.push(format!("{n}={r}"));
    }
    parts.join(", ")
}

/// A trial's TrainingJob: the template with the trial's hyperparameters,
/// its own checkpoint prefix, the TuningJob's labels and owner reference.
pub fn trial_job(tj: &TuningJob, record: &TrialRecord, resource_name: Option<&str>) -> TrainingJob {
    let template = &tj.spec.training_job_template;
    let mut spec = template.spec.clone();
    spec.hyperparameters =
        search::trial_hyperparameters(&spec.hyperparameters, record, resource_name);
    if let Some(ckpt) = &mut spec.checkpoint {
        let base = ckpt.location.uri.trim_end_matches('/');
        ckpt.location.uri = format!("{base}/{}/", record.name);
    }
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(TUNING_JOB_LABEL.into(), tj.name_any());
    labels.insert(TRIAL_INDEX_LABEL.into(), record.index.to_string());
    let owner = OwnerReference {
        api_version: TuningJob::api_version(&()).into(),
        kind: TuningJob::kind(&()).into(),
        name: tj.name_any(),
        uid: tj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    TrainingJob {
        metadata: ObjectMeta {
            name: Some(record.name.clone()),
            namespace: tj.namespace(),
            labels: Some(labels),
            annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The warm-start parents' records, or a message naming a missing parent.
async fn parents(
    ctx: &Context,
    namespace: &str,
    tj: &TuningJob,
) -> Result<Result<Vec<(WarmStartType, Vec<TrialRecord>)>, String>> {
    let Some(warm) = &tj.spec.warm_start else {
        return Ok(Ok(Vec::new()));
    };
    let api: Api<TuningJob> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Vec::new();
    for parent in &warm.parents {
        match api.get_opt(&parent.name).await? {
            Some(p) => out.push((warm.type_, p.status.unwrap_or_default().trials)),
            None => {
                return Ok(Err(format!(
                    "warmStart.parents: TuningJob {} not found in namespace {namespace}",
                    parent.name
                )));
            }
        }
    }
    Ok(Ok(out))
}

/// The objective's intermediate values of every trial with a TrainingJob,
/// by trial index, from the metric lines of rank 0's training log. A
/// finished trial's log is read once; a log that cannot be read (the pod
/// is gone, not started) counts as no values yet.
async fn curves(
    ctx: &Context,
    namespace: &str,
    records: &[TrialRecord],
    trials: &BTreeMap<String, TrainingJob>,
    metric: &str,
) -> BTreeMap<i32, Vec<(u64, f64)>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = BTreeMap::new();
    for record in records {
        let Some(job) = trials.get(&record.name) else {
            continue;
        };
        let key = format!("{namespace}/{}", record.name);
        let finished = record.state.as_deref() != Some(states::IN_PROGRESS);
        if let Some((done, curve)) = ctx.curves.0.lock().expect("curves lock").get(&key)
            && *done
        {
            out.insert(record.index, curve.clone());
            continue;
        }
        let Some(attempt) = job.status.as_ref().and_then(|s| s.attempts.last()) else {
            continue;
        };
        let pod = format!("{}0", attempt.pod_name_prefix);
        let params = LogParams {
            container: Some(TRAIN_CONTAINER.into()),
            limit_bytes: Some(LOG_BYTES),
            ..LogParams::default()
        };
        let Ok(log) = pods.logs(&pod, &params).await else {
            continue;
        };
        let curve = parse_curve(&log, metric);
        ctx.curves
            .0
            .lock()
            .expect("curves lock")
            .insert(key, (finished, curve.clone()));
        out.insert(record.index, curve);
    }
    out
}

/// The points of `metric` in a log of Kiln metric lines (images/runtime/
/// METRICS.md): by epoch where the lines carry one (an end-of-run value
/// without an epoch is then left out, its step being on another scale),
/// else by step.
pub fn parse_curve(log: &str, metric: &str) -> Vec<(u64, f64)> {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("\"kiln_metric\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v["kiln_metric"] == metric)
        .collect();
    let by_epoch = lines.iter().any(|v| v["epoch"].is_u64());
    let mut curve: Vec<(u64, f64)> = lines
        .iter()
        .filter_map(|v| {
            let at = if by_epoch {
                v["epoch"].as_u64()?
            } else {
                v["step"].as_u64()?
            };
            let value = v["value"].as_f64().filter(|x| x.is_finite())?;
            Some((at, value))
        })
        .collect();
    curve.sort_by_key(|(at, _)| *at);
    curve.dedup_by_key(|(at, _)| *at);
    curve
}

/// What a failed reconcile does next.
pub fn error_policy(tj: Arc<TuningJob>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("TuningJob", tj.as_ref(), error, &ctx)
}

#[cfg(test)]
mod tests;
