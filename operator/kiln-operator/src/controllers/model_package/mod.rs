//! The ModelPackage controller: resolve -> check -> status.
//!
//! Resolve: the package's ModelPackageGroup must exist (as SageMaker's
//! registry requires; a missing group is `Ready` False with reason
//! `GroupNotFound`, looked at again when the group appears), and the
//! TrainingJob of `spec.source.trainingJob`, once completed, gives its
//! lineage (hyperparameters, input URIs, final metrics, artifact URI),
//! copied into status once so it outlives the job. While that job runs, the
//! artifact it will write is not checked yet.
//!
//! Check: a pod per check runs `kiln-runtime inspect` (see [`check`]); its
//! report's digest is recorded as `status.artifactDigest` on the first
//! check and compared on every later one. Approval: every change of
//! `spec.approval` is copied into status with its time and published as an
//! Event. Numbering is the group controller's
//! ([`super::model_package_group`]): this controller never writes
//! `status.version`, only reads it.

pub mod check;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::model_package::{
    ApprovalStatus, ArtifactCheck, ArtifactCheckResult, ModelPackage, ModelPackageStatus,
};
use kiln_api::model_package_group::ModelPackageGroup;
use kiln_api::training_job::TrainingJob;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};

use self::check::{Access, CHECK_LABEL, Due, Observed, PACKAGE_UID_LABEL};
use self::status::{Artifact, Facts, Lineage};
use super::Context;
use super::apply::{publish, write_status};
use super::error::{Error, Result};

/// The field manager of the status this controller writes (all of it but
/// `version`).
const STATUS_MANAGER: &str = "kiln-operator/model-package-status";
/// How often a check under way is looked at (its pod's changes also wake
/// the package), for its time limit.
const CHECK_POLL: Duration = Duration::from_secs(30);
/// How often a package whose group is missing is looked at (the group's
/// creation also wakes it).
const GROUP_RECHECK: Duration = Duration::from_secs(300);

/// An Event to publish once status is written.
type Note = (EventType, &'static str, String);

/// One reconcile of a ModelPackage.
pub async fn reconcile(package: Arc<ModelPackage>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = package
        .namespace()
        .ok_or(Error::Incomplete("a ModelPackage without a namespace"))?;
    let name = package.name_any();
    let packages: Api<ModelPackage> = Api::namespaced(ctx.client.clone(), &namespace);
    // Read afresh: a check's state is written to status in the middle of a
    // reconcile, and a cache a moment behind would start it again.
    let Some(package) = packages.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let uid = package
        .uid()
        .ok_or(Error::Incomplete("a ModelPackage without a UID"))?;
    let spec = &package.spec;
    let now = Time(Timestamp::now());
    let generation = package.metadata.generation;
    let old = package.status.clone().unwrap_or_default();
    let mut written = old.clone();
    let mut status = old.clone();
    status.observed_generation = generation;
    let mut notes: Vec<Note> = Vec::new();

    let group_exists = Api::<ModelPackageGroup>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&spec.group_name)
        .await?
        .is_some();
    if let Some(change) = status::record_approval(&mut status, &spec.approval, &now)
        && !(change.from.is_none() && change.to == ApprovalStatus::PendingManualApproval)
    {
        let note = status::approval_note(&change, &spec.approval);
        notes.push((EventType::Normal, reasons::APPROVAL_CHANGED, note));
    }

    let job_name = spec.source.as_ref().and_then(|s| s.training_job.as_deref());
    let job = match job_name {
        Some(job) if status.lineage.is_none() => {
            Api::<TrainingJob>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(job)
                .await?
        }
        _ => None,
    };
    let lineage = status::lineage(job_name, status.lineage.as_ref(), job.as_ref());
    if let Lineage::Copied(copied) = &lineage {
        status.lineage = Some(copied.clone());
        notes.push((
            EventType::Normal,
            reasons::LINEAGE_RECORDED,
            format!(
                "from TrainingJob {}: {} hyperparameters, {} input channels, {} final metrics",
                copied.training_job,
                copied.hyperparameters.len(),
                copied.inputs.len(),
                copied.final_metrics.len()
            ),
        ));
    }

    let mut wake = None;
    let artifact = match check::access(&spec.inference.model_data.uri) {
        Access::Unreadable(why) => Artifact::Unreadable(why),
        _ if lineage.waiting().is_some() => {
            Artifact::WaitingForJob(lineage.waiting().unwrap_or_default().to_string())
        }
        _ => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let step = Checker {
                ctx: &ctx,
                package: &package,
                packages: &packages,
                pods: &pods,
                uid: &uid,
                now: &now,
                lineage_copied: matches!(lineage, Lineage::Copied(_)),
            };
            let (waiting, next) = step.drive(&mut status, &mut written, &mut notes).await?;
            wake = next;
            Artifact::Checks(waiting)
        }
    };

    let was_ready = conditions::find(&old.conditions, types::READY).cloned();
    let facts = Facts {
        group_exists,
        lineage,
        artifact,
    };
    status::summarize(&mut status, spec, &facts, generation, &now);
    write(&packages, &name, &written, &status).await?;

    let ready = conditions::find(&status.conditions, types::READY).cloned();
    let flipped = |reason: &str| {
        ready.as_ref().is_some_and(|r| r.reason == reason)
            && was_ready.as_ref().is_none_or(|w| w.reason != reason)
    };
    if flipped(reasons::REGISTERED) {
        let message = ready
            .as_ref()
            .map(|r| r.message.clone())
            .unwrap_or_default();
        notes.push((EventType::Normal, reasons::REGISTERED, message));
    }
    if flipped(reasons::GROUP_NOT_FOUND) {
        let message = ready
            .as_ref()
            .map(|r| r.message.clone())
            .unwrap_or_default();
        notes.push((EventType::Warning, reasons::GROUP_NOT_FOUND, message));
    }
    for (type_, reason, note) in notes {
        publish(&ctx, &package, type_, reason, &note).await;
    }

    let wait = [wake, (!group_exists).then_some(GROUP_RECHECK)]
        .into_iter()
        .flatten()
        .min();
    Ok(match wait {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// What driving a package's checks needs.
struct Checker<'a> {
    ctx: &'a Context,
    package: &'a ModelPackage,
    packages: &'a Api<ModelPackage>,
    pods: &'a Api<Pod>,
    uid: &'a str,
    now: &'a Time,
    /// The TrainingJob that writes the artifact just completed.
    lineage_copied: bool,
}

impl Checker<'_> {
    /// Starts a check that is due, follows the one under way, or records
    /// how it ended; removes the pods of finished checks. Returns what a
    /// check under way waits for and when to look again.
    async fn drive(
        &self,
        status: &mut ModelPackageStatus,
        written: &mut ModelPackageStatus,
        notes: &mut Vec<Note>,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let package = self.package;
        let name = package.name_any();
        let running = status
            .last_artifact_check
            .as_ref()
            .filter(|c| c.completion_time.is_none())
            .map(|c| c.number.to_string());
        let selector = format!("{PACKAGE_UID_LABEL}={}", self.uid);
        let existing = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        // A finished check's pod goes once its result is in status.
        for pod in &existing {
            let number = pod.labels().get(CHECK_LABEL).cloned();
            if number != running {
                match self
                    .pods
                    .delete(&pod.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let approved = package.spec.approval.status == ApprovalStatus::Approved;
        let generation = package.metadata.generation;
        let number = match check::due(
            status.last_artifact_check.as_ref(),
            generation,
            approved,
            self.lineage_copied,
            self.now,
        ) {
            Due::Later(wait) => return Ok((None, wait)),
            Due::Start(number) => {
                let failures = status
                    .last_artifact_check
                    .as_ref()
                    .map_or(0, |c| c.consecutive_failures);
                status.last_artifact_check = Some(ArtifactCheck {
                    number,
                    generation,
                    start_time: self.now.clone(),
                    completion_time: None,
                    result: None,
                    digest: None,
                    message: None,
                    consecutive_failures: failures,
                });
                // The check is in status before its pod exists.
                write(self.packages, &name, written, status).await?;
                *written = status.clone();
                return self.create(status, number, notes).await;
            }
            Due::Running => status.last_artifact_check.as_ref().map_or(1, |c| c.number),
        };
        let pod_name = check::pod_name(&name, number);
        let Some(pod) = existing.iter().find(|p| p.name_any() == pod_name) else {
            // Started, but its pod is not there (the operator stopped in
            // between, or someone deleted it): made again under its name.
            return self.create(status, number, notes).await;
        };
        let started = status
            .last_artifact_check
            .as_ref()
            .map(|c| c.start_time.clone())
            .unwrap_or_else(|| self.now.clone());
        let mut recorded = false;
        let (result, digest, message) = match check::observe(pod, &started, self.now) {
            Observed::Running(waiting) => return Ok((waiting, Some(CHECK_POLL))),
            Observed::Failed(result, message) => (result, None, message),
            Observed::Reported(report) => {
                let inference = &package.spec.inference;
                let (result, message) = check::judge(
                    &inference.model_data.uri,
                    &report,
                    status.artifact_digest.as_deref(),
                    inference.algorithm.map(|a| a.as_str()),
                );
                if result == ArtifactCheckResult::Verified && status.artifact_digest.is_none() {
                    recorded = true;
                    status.artifact_digest = Some(report.digest.clone());
                    status.artifact_size_bytes = i64::try_from(report.size).ok();
                    notes.push((
                        EventType::Normal,
                        reasons::VERIFIED,
                        format!(
                            "recorded {} ({} bytes) of {}",
                            report.digest, report.size, inference.model_data.uri
                        ),
                    ));
                }
                (result, Some(report.digest), message)
            }
        };
        let before = status
            .last_artifact_check
            .as_ref()
            .map_or(0, |c| c.consecutive_failures);
        if result != ArtifactCheckResult::Verified {
            notes.push((EventType::Warning, result_reason(result), message.clone()));
        } else if before > 0 && !recorded {
            // Intact again after failed checks.
            notes.push((EventType::Normal, reasons::VERIFIED, message.clone()));
        }
        let wait = finish(status, result, digest, message, self.now);
        Ok((None, wait))
    }

    /// Creates check `number`'s pod; a pod the API server refuses ends the
    /// check as failed.
    async fn create(
        &self,
        status: &mut ModelPackageStatus,
        number: i64,
        notes: &mut Vec<Note>,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let Some(pod) = check::check_pod(self.package, number, &self.ctx.settings.runtime_image)
        else {
            return Ok((None, None));
        };
        let pod_name = pod.name_any();
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.ctx
                    .metrics
                    .pods_created
                    .with_label_values(&["ModelPackage"])
                    .inc();
                Ok((None, Some(CHECK_POLL)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok((None, Some(CHECK_POLL))),
            Err(e) => match Error::from_child_error(&format!("pod {pod_name}"), e) {
                Error::ChildRefused(message) => {
                    let result = ArtifactCheckResult::Failed;
                    notes.push((EventType::Warning, result_reason(result), message.clone()));
                    Ok((None, finish(status, result, None, message, self.now)))
                }
                other => Err(other),
            },
        }
    }
}

/// Records how the check under way ended; returns the wait before the next.
fn finish(
    status: &mut ModelPackageStatus,
    result: ArtifactCheckResult,
    digest: Option<String>,
    message: String,
    now: &Time,
) -> Option<Duration> {
    let check = status.last_artifact_check.as_mut()?;
    check.completion_time = Some(now.clone());
    check.result = Some(result);
    check.digest = digest;
    check.message = Some(message.chars().take(4096).collect());
    check.consecutive_failures = if result == ArtifactCheckResult::Verified {
        0
    } else {
        check.consecutive_failures + 1
    };
    // Looked at again right away, to remove the pod once this is written.
    Some(Duration::from_secs(1))
}

/// The condition and Event reason of a check's result.
pub fn result_reason(result: ArtifactCheckResult) -> &'static str {
    match result {
        ArtifactCheckResult::Verified => reasons::VERIFIED,
        ArtifactCheckResult::Changed => reasons::ARTIFACT_CHANGED,
        ArtifactCheckResult::NotFound => reasons::ARTIFACT_NOT_FOUND,
        ArtifactCheckResult::Invalid => reasons::INVALID_ARTIFACT,
        ArtifactCheckResult::Failed => reasons::ARTIFACT_CHECK_FAILED,
    }
}

/// Writes status with server-side apply when it changed, without
/// `version`: that field is the group controller's, so this manager never
/// owns (and never removes) it.
async fn write(
    packages: &Api<ModelPackage>,
    name: &str,
    old: &ModelPackageStatus,
    new: &ModelPackageStatus,
) -> Result<()> {
    let without_version = |s: &ModelPackageStatus| ModelPackageStatus {
        version: None,
        ..s.clone()
    };
    write_status(
        packages,
        name,
        &without_version(old),
        &without_version(new),
        STATUS_MANAGER,
    )
    .await
}

/// The packages in `group`'s namespace that name it: a group created (or
/// deleted) wakes them.
pub fn in_group(
    store: &Store<ModelPackage>,
    group: &ModelPackageGroup,
) -> Vec<ObjectRef<ModelPackage>> {
    let (namespace, name) = (group.namespace(), group.name_any());
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace && p.spec.group_name == name)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The packages in `job`'s namespace whose lineage it is and is not
/// recorded yet: the job finishing wakes them.
pub fn from_job(store: &Store<ModelPackage>, job: &TrainingJob) -> Vec<ObjectRef<ModelPackage>> {
    let (namespace, name) = (job.namespace(), job.name_any());
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace)
        .filter(|p| {
            p.spec
                .source
                .as_ref()
                .and_then(|s| s.training_job.as_deref())
                == Some(name.as_str())
        })
        .filter(|p| p.status.as_ref().is_none_or(|s| s.lineage.is_none()))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// What a failed reconcile does next: transient errors back off and retry.
pub fn error_policy(package: Arc<ModelPackage>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("ModelPackage", package.as_ref(), error, &ctx)
}
