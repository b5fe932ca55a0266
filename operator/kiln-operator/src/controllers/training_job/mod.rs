//! The TrainingJob controller: validate -> build -> apply -> status.
//!
//! Crash safety: an attempt is written to status before its pods are
//! created, and pods are named by attempt and rank, so an operator that
//! restarts anywhere finds the pods it made instead of creating twins. The
//! restart budget (attempts, interruptions) lives in the TrainingJob's
//! status, never on a child that can be deleted.

pub mod build;
pub mod observe;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::training_job::{
    Attempt, AttemptEnd, SecondaryStatus, StatusTransition, TrainingJob, TrainingJobState,
    TrainingJobStatus,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use self::build::{ATTEMPT_LABEL, GANG_GATE, JOB_LABEL};
use self::observe::Outcome;
use super::Context;
use super::error::{Error, Result};

/// The field manager of the children this controller applies.
const CHILD_MANAGER: &str = "kiln-operator/training-job";
/// The field manager of the status this controller writes.
const STATUS_MANAGER: &str = "kiln-operator/training-job-status";
/// How often a running job is looked at when nothing happens, for its time limits.
const RUNNING_RECHECK: Duration = Duration::from_secs(30);
/// Attempts and transitions kept in status.
const MAX_ATTEMPTS_KEPT: usize = 20;
const MAX_TRANSITIONS_KEPT: usize = 50;

/// One reconcile of a TrainingJob.
pub async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = job
        .namespace()
        .ok_or(Error::Incomplete("a TrainingJob without a namespace"))?;
    let name = job.name_any();
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Time(Timestamp::now());
    let generation = job.metadata.generation;
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;

    if matches!(
        status.state,
        Some(TrainingJobState::Completed | TrainingJobState::Failed)
    ) {
        return finished(&job, &jobs, &status, &now).await;
    }
    if let Err(message) = validate::validate(&job.spec) {
        fail(
            &mut status,
            reasons::INVALID_SPEC,
            &message,
            generation,
            &now,
        );
        write_status(&jobs, &name, &old, &status).await?;
        publish(
            &ctx,
            &job,
            EventType::Warning,
            reasons::INVALID_SPEC,
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }

    let current = status
        .attempts
        .last()
        .filter(|a| a.end_time.is_none())
        .cloned();
    if job.spec.suspend {
        if let Some(attempt) = current {
            delete_attempt(&pods, &name, attempt.index).await?;
            end_attempt(&mut status, AttemptEnd::Stopped, "suspended", &now);
            publish(
                &ctx,
                &job,
                EventType::Normal,
                reasons::SUSPENDED,
                "the job's pods were stopped; it resumes from its newest checkpoint",
            )
            .await;
        }
        status.state = Some(TrainingJobState::Stopped);
        transition(
            &mut status,
            SecondaryStatus::Stopped,
            "spec.suspend is true",
            &now,
        );
        let msg = "spec.suspend is true";
        conditions::set_condition(
            &mut status.conditions,
            conditions::condition(
                types::SUSPENDED,
                true,
                reasons::SUSPENDED,
                msg,
                generation,
                now.clone(),
            ),
        );
        conditions::set_condition(
            &mut status.conditions,
            conditions::condition(
                types::RUNNING,
                false,
                reasons::SUSPENDED,
                msg,
                generation,
                now.clone(),
            ),
        );
        conditions::set_condition(
            &mut status.conditions,
            conditions::unknown(
                types::SUCCEEDED,
                reasons::SUSPENDED,
                msg,
                generation,
                now.clone(),
            ),
        );
        write_status(&jobs, &name, &old, &status).await?;
        return Ok(Action::await_change());
    }
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::SUSPENDED,
            false,
            "Resumed",
            "",
            generation,
            now.clone(),
        ),
    );

    // Time limits over all attempts.
    account_time(&mut status, job.spec.resources.replicas, &now);
    if let Some(limit) = exceeded_limit(&job, &status, &now) {
        if let Some(attempt) = &current {
            delete_attempt(&pods, &name, attempt.index).await?;
            end_attempt(&mut status, AttemptEnd::TimedOut, &limit.1, &now);
        }
        transition(&mut status, limit.2, &limit.1, &now);
        fail(&mut status, limit.0, &limit.1, generation, &now);
        write_status(&jobs, &name, &old, &status).await?;
        publish(&ctx, &job, EventType::Warning, limit.0, &limit.1).await;
        return Ok(Action::await_change());
    }

    let Some(attempt) = current else {
        // A new attempt goes into status before any of its pods exists.
        let index = status.attempts.last().map_or(1, |a| a.index + 1);
        status.attempts.push(Attempt {
            index,
            pod_name_prefix: build::pod_name_prefix(&name, index),
            ..Attempt::default()
        });
        if status.attempts.len() > MAX_ATTEMPTS_KEPT {
            status.attempts.remove(0);
        }
        status.attempt = Some(index);
        status.state = Some(TrainingJobState::InProgress);
        transition(
            &mut status,
            SecondaryStatus::Starting,
            &format!("attempt {index}"),
            &now,
        );
        set_running(
            &mut status,
            false,
            reasons::CREATING,
            &format!("creating the pods of attempt {index}"),
            generation,
            &now,
        );
        write_status(&jobs, &name, &old, &status).await?;
        publish(
            &ctx,
            &job,
            EventType::Normal,
            "AttemptStarted",
            &format!(
                "attempt {index}: creating {} pods",
                job.spec.resources.replicas
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::ZERO));
    };

    let children = build::children(&job, attempt.index, &ctx.settings);
    apply(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace),
        &children.config_map,
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(ctx.client.clone(), &namespace),
        &children.service,
    )
    .await?;

    let selector = format!("{JOB_LABEL}={name},{ATTEMPT_LABEL}={}", attempt.index);
    let mut existing = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let all_created = attempt.start_time.is_some();
    if !all_created {
        for pod in &children.pods {
            let pod_name = pod.name_any();
            if existing.iter().any(|p| p.name_any() == pod_name) {
                continue;
            }
            match pods.create(&PostParams::default(), pod).await {
                Ok(created) => {
                    ctx.metrics
                        .pods_created
                        .with_label_values(&["TrainingJob"])
                        .inc();
                    existing.push(created);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => match Error::from_child_error(&format!("pod {pod_name}"), e) {
                    Error::ChildRefused(message) => {
                        delete_attempt(&pods, &name, attempt.index).await?;
                        end_attempt(&mut status, AttemptEnd::Failed, &message, &now);
                        fail(&mut status, "PodRefused", &message, generation, &now);
                        write_status(&jobs, &name, &old, &status).await?;
                        publish(&ctx, &job, EventType::Warning, "PodRefused", &message).await;
                        return Ok(Action::await_change());
                    }
                    other => return Err(other),
                },
            }
        }
        // Every rank exists: lift the gates together, so no rank holds a
        // node while another one is still missing.
        for pod in &existing {
            let gated = pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduling_gates.as_ref())
                .is_some_and(|g| g.iter().any(|g| g.name == GANG_GATE));
            if gated {
                let patch = serde_json::json!([{"op": "remove", "path": "/spec/schedulingGates"}]);
                pods.patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Json::<()>(serde_json::from_value(patch).expect("a valid JSON patch")),
                )
                .await?;
            }
        }
        if let Some(a) = status.attempts.last_mut() {
            a.start_time = Some(now.clone());
        }
        status.start_time.get_or_insert_with(|| now.clone());
        write_status(&jobs, &name, &old, &status).await?;
        return Ok(Action::requeue(RUNNING_RECHECK));
    }

    let outcome = observe::observe(
        &existing,
        job.spec.resources.replicas,
        all_created,
        job.spec.algorithm.name.is_some(),
    );
    match outcome {
        Outcome::Progress {
            phase,
            counts,
            all_training,
        } => {
            status.replicas = Some(counts.clone());
            transition(&mut status, phase, "", &now);
            let (reason, message) = if all_training {
                (
                    reasons::TRAINING,
                    format!("{} ranks training", counts.running),
                )
            } else {
                (
                    reasons::PENDING,
                    format!(
                        "{} of {} ranks pending",
                        counts.pending, job.spec.resources.replicas
                    ),
                )
            };
            set_running(
                &mut status,
                all_training,
                reason,
                &message,
                generation,
                &now,
            );
            conditions::set_condition(
                &mut status.conditions,
                conditions::unknown(types::SUCCEEDED, reason, message, generation, now.clone()),
            );
            write_status(&jobs, &name, &old, &status).await?;
            Ok(Action::requeue(RUNNING_RECHECK))
        }
        Outcome::Succeeded {
            model_artifact_uri,
            final_metrics,
            ..
        } => {
            status.final_metrics = final_metrics;
            end_attempt(
                &mut status,
                AttemptEnd::Succeeded,
                "every rank exited 0",
                &now,
            );
            status.model_artifact_uri = model_artifact_uri
                .or_else(|| Some(build::model_artifact_uri(&job.spec, &namespace, &name)));
            status.state = Some(TrainingJobState::Completed);
            status.end_time = Some(now.clone());
            transition(&mut status, SecondaryStatus::Completed, "", &now);
            let message = format!(
                "the model is at {}",
                status.model_artifact_uri.as_deref().unwrap_or_default()
            );
            set_running(
                &mut status,
                false,
                reasons::COMPLETED,
                &message,
                generation,
                &now,
            );
            conditions::set_condition(
                &mut status.conditions,
                conditions::condition(
                    types::SUCCEEDED,
                    true,
                    reasons::COMPLETED,
                    &message,
                    generation,
                    now.clone(),
                ),
            );
            write_status(&jobs, &name, &old, &status).await?;
            publish(&ctx, &job, EventType::Normal, reasons::COMPLETED, &message).await;
            Ok(ttl_action(&job))
        }
        Outcome::Failed { message, retryable } => {
            delete_running_pods(&pods, &existing).await?;
            end_attempt(&mut status, AttemptEnd::Failed, &message, &now);
            let failed_attempts = status
                .attempts
                .iter()
                .filter(|a| a.end_reason == Some(AttemptEnd::Failed))
                .count() as i32;
            let left = job.spec.retry_strategy.max_attempts - failed_attempts;
            if retryable && left > 0 {
                publish(
                    &ctx,
                    &job,
                    EventType::Warning,
                    reasons::ALGORITHM_ERROR,
                    &format!("{message}; retrying ({left} attempts left)"),
                )
                .await;
                write_status(&jobs, &name, &old, &status).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            let reason = if retryable && job.spec.retry_strategy.max_attempts > 1 {
                reasons::RETRIES_EXHAUSTED
            } else {
                reasons::ALGORITHM_ERROR
            };
            status.failure_reason = Some(message.clone());
            transition(&mut status, SecondaryStatus::Failed, &message, &now);
            fail(&mut status, reason, &message, generation, &now);
            write_status(&jobs, &name, &old, &status).await?;
            publish(&ctx, &job, EventType::Warning, reason, &message).await;
            Ok(ttl_action(&job))
        }
        Outcome::Interrupted { message } => {
            delete_attempt(&pods, &name, attempt.index).await?;
            end_attempt(&mut status, AttemptEnd::Interrupted, &message, &now);
            status.spot_interruptions = Some(status.spot_interruptions.unwrap_or(0) + 1);
            transition(&mut status, SecondaryStatus::Interrupted, &message, &now);
            conditions::set_condition(
                &mut status.conditions,
                conditions::condition(
                    types::INTERRUPTED,
                    true,
                    reasons::SPOT_INTERRUPTED,
                    &message,
                    generation,
                    now.clone(),
                ),
            );
            write_status(&jobs, &name, &old, &status).await?;
            publish(
                &ctx,
                &job,
                EventType::Warning,
                reasons::SPOT_INTERRUPTED,
                &format!("{message}; restarting every rank from the newest checkpoint"),
            )
            .await;
            Ok(Action::requeue(Duration::ZERO))
        }
    }
}

/// What a finished job still needs: deletion after its TTL.
async fn finished(
    job: &TrainingJob,
    jobs: &Api<TrainingJob>,
    status: &TrainingJobStatus,
    now: &Time,
) -> Result<Action> {
    let (Some(ttl), Some(end)) = (
        job.spec.ttl_seconds_after_finished,
        status.end_time.as_ref(),
    ) else {
        return Ok(Action::await_change());
    };
    let left = end.0.as_second() + ttl - now.0.as_second();
    if left <= 0 {
        jobs.delete(&job.name_any(), &DeleteParams::background())
            .await?;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(Duration::from_secs(left as u64)))
}

fn ttl_action(job: &TrainingJob) -> Action {
    match job.spec.ttl_seconds_after_finished {
        Some(ttl) => Action::requeue(Duration::from_secs(ttl.max(0) as u64)),
        None => Action::await_change(),
    }
}

/// The first time limit the job passed: (reason, message, step).
fn exceeded_limit(
    job: &TrainingJob,
    status: &TrainingJobStatus,
    now: &Time,
) -> Option<(&'static str, String, SecondaryStatus)> {
    let limits = &job.spec.stopping_condition;
    let trained = status.training_seconds.unwrap_or(0);
    if trained > limits.max_runtime_seconds {
        return Some((
            reasons::MAX_RUNTIME_EXCEEDED,
            format!(
                "the job ran {trained} s, over stoppingCondition.maxRuntimeSeconds ({} s)",
                limits.max_runtime_seconds
            ),
            SecondaryStatus::MaxRuntimeExceeded,
        ));
    }
    let created = job.metadata.creation_timestamp.as_ref()?;
    let waited = now.0.as_second() - created.0.as_second();
    if let Some(max_wait) = limits.max_wait_seconds.filter(|w| waited > *w) {
        return Some((
            reasons::MAX_WAIT_EXCEEDED,
            format!(
                "the job has waited and run {waited} s, over stoppingCondition.maxWaitSeconds ({max_wait} s)"
            ),
            SecondaryStatus::MaxWaitTimeExceeded,
        ));
    }
    let pending = status
        .attempts
        .last()
        .filter(|a| a.end_time.is_none())
        .and_then(|a| a.start_time.as_ref())
        .map(|s| now.0.as_second() - s.0.as_second());
    let training = conditions::is_true(&status.conditions, types::RUNNING);
    if let (Some(max_pending), Some(pending)) = (limits.max_pending_seconds, pending)
        && !training
        && pending > max_pending
    {
        return Some((
            reasons::MAX_PENDING_EXCEEDED,
            format!(
                "ranks stayed pending {pending} s, over stoppingCondition.maxPendingSeconds ({max_pending} s)"
            ),
            SecondaryStatus::Failed,
        ));
    }
    None
}

/// Training and billable seconds over every attempt, the running one up to now.
fn account_time(status: &mut TrainingJobStatus, replicas: i32, now: &Time) {
    let seconds: i64 = status
        .attempts
        .iter()
        .filter_map(|a| {
            let start = a.start_time.as_ref()?;
            let end = a.end_time.as_ref().unwrap_or(now);
            Some((end.0.as_second() - start.0.as_second()).max(0))
        })
        .sum();
    status.training_seconds = Some(seconds);
    status.billable_seconds = Some(seconds * i64::from(replicas));
}

fn end_attempt(status: &mut TrainingJobStatus, why: AttemptEnd, message: &str, now: &Time) {
    if let Some(a) = status.attempts.last_mut().filter(|a| a.end_time.is_none()) {
        a.end_time = Some(now.clone());
        a.end_reason = Some(why);
        a.message = Some(message.chars().take(4096).collect());
    }
}

fn fail(
    status: &mut TrainingJobStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    status.state = Some(TrainingJobState::Failed);
    status.failure_reason = Some(message.to_string());
    status.end_time = Some(now.clone());
    set_running(status, false, reason, message, generation, now);
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::SUCCEEDED,
            false,
            reason,
            message,
            generation,
            now.clone(),
        ),
    );
}

fn set_running(
    status: &mut TrainingJobStatus,
    running: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            types::RUNNING,
            running,
            reason,
            message,
            generation,
            now.clone(),
        ),
    );
    if running {
        conditions::set_condition(
            &mut status.conditions,
            conditions::condition(
                types::INTERRUPTED,
                false,
                reasons::TRAINING,
                "",
                generation,
                now.clone(),
            ),
        );
    }
}

/// Records a new step, closing the previous one.
fn transition(status: &mut TrainingJobStatus, step: SecondaryStatus, message: &str, now: &Time) {
    if status.secondary_status == Some(step) {
        return;
    }
    if let Some(last) = status.secondary_status_transitions.last_mut() {
        last.end_time.get_or_insert_with(|| now.clone());
    }
    status.secondary_status = Some(step);
    status.secondary_status_transitions.push(StatusTransition {
        status: step,
        start_time: now.clone(),
        end_time: None,
        message: (!message.is_empty()).then(|| message.to_string()),
    });
    if status.secondary_status_transitions.len() > MAX_TRANSITIONS_KEPT {
        status.secondary_status_transitions.remove(0);
    }
}

/// Writes status with server-side apply when it changed.
async fn write_status(
    jobs: &Api<TrainingJob>,
    name: &str,
    old: &TrainingJobStatus,
    new: &TrainingJobStatus,
) -> Result<()> {
    super::apply::write_status(jobs, name, old, new, STATUS_MANAGER).await
}

/// Server-side apply of a child under this controller's field manager.
async fn apply<K>(api: &Api<K>, child: &K) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    super::apply::apply(api, child, CHILD_MANAGER)
        .await
        .map(drop)
}

/// Deletes every pod of an attempt (each gets its grace period to checkpoint).
async fn delete_attempt(pods: &Api<Pod>, job: &str, attempt: i32) -> Result<()> {
    let selector = format!("{JOB_LABEL}={job},{ATTEMPT_LABEL}={attempt}");
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&selector),
    )
    .await?;
    Ok(())
}

/// Stops the ranks still running after one failed; finished pods stay for their logs.
async fn delete_running_pods(pods: &Api<Pod>, existing: &[Pod]) -> Result<()> {
    for pod in existing {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, Some("Succeeded" | "Failed")) {
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, job: &TrainingJob, type_: EventType, reason: &str, note: &str) {
    super::apply::publish(ctx, job, type_, reason, note).await
}

/// What a failed reconcile does next: transient errors back off and retry;
/// a refused child is reported on the object.
pub fn error_policy(job: Arc<TrainingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("TrainingJob", job.as_ref(), error, &ctx)
}
