//! Status: what the package's spec, its group, the TrainingJob it came from
//! and its artifact checks say, as the recorded approval and lineage, the
//! `ArtifactVerified`, `ReferencesResolved` and `Ready` conditions and the
//! summary state. Pure functions, no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::model_package::{
    Approval, ApprovalStatus, ArtifactCheckResult, LineageChannel, ModelPackageSpec,
    ModelPackageState, ModelPackageStatus, TrainingLineage,
};
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kube::ResourceExt;

/// An approval decision that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalChange {
    /// The decision recorded before (None: none yet).
    pub from: Option<ApprovalStatus>,
    pub to: ApprovalStatus,
}

/// Copies `spec.approval` into status: the decision, who and why. The
/// change time moves only when the decision changes; the change is returned
/// for an Event.
pub fn record_approval(
    status: &mut ModelPackageStatus,
    approval: &Approval,
    now: &Time,
) -> Option<ApprovalChange> {
    status.approved_by = approval.approved_by.clone();
    status.approval_description = approval.description.clone();
    if status.approval_status == Some(approval.status) {
        return None;
    }
    let change = ApprovalChange {
        from: status.approval_status,
        to: approval.status,
    };
    status.approval_status = Some(approval.status);
    status.last_approval_change_time = Some(now.clone());
    Some(change)
}

/// The Event note of an approval change.
pub fn approval_note(change: &ApprovalChange, approval: &Approval) -> String {
    let mut note = match change.from {
        Some(from) => format!("{from:?} -> {:?}", change.to),
        None => format!("{:?}", change.to),
    };
    if let Some(by) = &approval.approved_by {
        note.push_str(&format!(" by {by}"));
    }
    if let Some(why) = &approval.description {
        note.push_str(&format!(": {why}"));
    }
    note
}

/// What the TrainingJob of `spec.source.trainingJob` says about lineage.
#[derive(Debug, Clone, PartialEq)]
pub enum Lineage {
    /// The package names no TrainingJob.
    None,
    /// Recorded earlier, from this job.
    Recorded(String),
    /// Copied now.
    Copied(TrainingLineage),
    /// No such TrainingJob in the namespace.
    Missing(String),
    /// The job has not finished.
    Running(String),
    /// The job ended without a model: its name and why.
    Ended(String, String),
}

impl Lineage {
    /// Whether the artifact check waits for the job (it writes the artifact).
    pub fn waiting(&self) -> Option<&str> {
        match self {
            Lineage::Running(job) => Some(job),
            _ => None,
        }
    }
}

/// What the source job `name` (read as `job`) gives, when `recorded` is
/// what status already holds.
pub fn lineage(
    name: Option<&str>,
    recorded: Option<&TrainingLineage>,
    job: Option<&TrainingJob>,
) -> Lineage {
    let Some(name) = name else {
        return Lineage::None;
    };
    if let Some(recorded) = recorded {
        return Lineage::Recorded(recorded.training_job.clone());
    }
    let Some(job) = job else {
        return Lineage::Missing(name.to_string());
    };
    let status = job.status.clone().unwrap_or_default();
    match status.state {
        Some(TrainingJobState::Completed) => Lineage::Copied(lineage_of(job)),
        Some(state @ (TrainingJobState::Failed | TrainingJobState::Stopped)) => Lineage::Ended(
            name.to_string(),
            format!(
                "TrainingJob {name} ended {state:?}{}: its lineage is not recorded",
                status
                    .failure_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
        _ => Lineage::Running(name.to_string()),
    }
}

/// A completed TrainingJob's hyperparameters, input URIs, final metrics and
/// artifact, as the package's lineage.
pub fn lineage_of(job: &TrainingJob) -> TrainingLineage {
    let status = job.status.clone().unwrap_or_default();
    TrainingLineage {
        training_job: job.name_any(),
        uid: job.uid(),
        hyperparameters: job.spec.hyperparameters.clone(),
        inputs: job
            .spec
            .inputs
            .iter()
            .map(|c| LineageChannel {
                name: c.name.clone(),
                uri: c.source.uri.clone(),
            })
            .collect(),
        final_metrics: status.final_metrics,
        model_artifact_uri: status.model_artifact_uri,
        end_time: status.end_time,
    }
}

/// What the artifact check stands at.
#[derive(Debug, Clone, PartialEq)]
pub enum Artifact {
    /// The artifact cannot be read from a pod (`file://`), and why.
    Unreadable(String),
    /// Waiting for the TrainingJob that writes it.
    WaitingForJob(String),
    /// Checked (or being checked): see `status.lastArtifactCheck`. What a
    /// check under way waits for, when its pod says.
    Checks(Option<String>),
}

/// What the reconcile found besides the package itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The ModelPackageGroup exists.
    pub group_exists: bool,
    pub lineage: Lineage,
    pub artifact: Artifact,
}

/// Sets the conditions, state and registration time from `facts` and the
/// status's own checks and version.
pub fn summarize(
    status: &mut ModelPackageStatus,
    spec: &ModelPackageSpec,
    facts: &Facts,
    generation: Option<i64>,
    now: &Time,
) {
    let group = &spec.group_name;
    let set = |status: &mut ModelPackageStatus,
               type_: &str,
               value: Option<bool>,
               reason: &str,
               message: String| {
        let c = match value {
            Some(v) => conditions::condition(type_, v, reason, message, generation, now.clone()),
            None => conditions::unknown(type_, reason, message, generation, now.clone()),
        };
        conditions::set_condition(&mut status.conditions, c);
    };

    // ReferencesResolved: the group, and the job the lineage comes from.
    let (resolved, reason, message) = if !facts.group_exists {
        (false, reasons::GROUP_NOT_FOUND, group_missing(group))
    } else {
        match &facts.lineage {
            Lineage::None => (true, "Resolved", format!("ModelPackageGroup {group} found")),
            Lineage::Recorded(job)
            | Lineage::Copied(TrainingLineage {
                training_job: job, ..
            }) => {
                let mut message = format!("lineage recorded from TrainingJob {job}");
                let wrote = status
                    .lineage
                    .as_ref()
                    .and_then(|l| l.model_artifact_uri.as_deref());
                if let Some(wrote) = wrote.filter(|w| *w != spec.inference.model_data.uri) {
                    message.push_str(&format!(
                        "; note that it wrote {wrote}, while this package registers {}",
                        spec.inference.model_data.uri
                    ));
                }
                (true, reasons::LINEAGE_RECORDED, message)
            }
            Lineage::Missing(job) => (
                false,
                reasons::REFERENCE_NOT_FOUND,
                format!(
                    "TrainingJob {job} not found in this namespace: its lineage is not recorded"
                ),
            ),
            Lineage::Running(job) => (
                false,
                reasons::WAITING_FOR_TRAINING_JOB,
                format!("waiting for TrainingJob {job} to complete"),
            ),
            Lineage::Ended(_, message) => (false, "TrainingJobNotCompleted", message.clone()),
        }
    };
    set(
        status,
        types::REFERENCES_RESOLVED,
        Some(resolved),
        reason,
        message,
    );

    // ArtifactVerified, from the newest finished check; a check under way
    // leaves a settled condition as it is, and a check that could not run
    // does not overturn what an earlier one found.
    let current = conditions::find(&status.conditions, types::ARTIFACT_VERIFIED)
        .filter(|c| c.status != "Unknown")
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()));
    let check = status.last_artifact_check.clone();
    let verified: Option<(Option<bool>, String, String)> = match &facts.artifact {
        Artifact::Unreadable(why) => Some((None, reasons::NOT_VERIFIABLE.into(), why.clone())),
        Artifact::WaitingForJob(job) => Some((
            None,
            reasons::WAITING_FOR_TRAINING_JOB.into(),
            format!("waiting for TrainingJob {job} to complete before checking its artifact"),
        )),
        Artifact::Checks(waiting) => {
            let checking = || {
                Some((
                    None,
                    reasons::VERIFYING.to_string(),
                    match waiting {
                        Some(w) => format!("checking the artifact (its pod: {w})"),
                        None => "checking the artifact".to_string(),
                    },
                ))
            };
            match check.as_ref().and_then(|c| c.result.map(|r| (r, c))) {
                None if current.is_some() => None,
                None => checking(),
                Some((result, c)) => {
                    let message = c.message.clone().unwrap_or_default();
                    match result {
                        ArtifactCheckResult::Verified => {
                            Some((Some(true), reasons::VERIFIED.into(), message))
                        }
                        ArtifactCheckResult::Changed => {
                            Some((Some(false), reasons::ARTIFACT_CHANGED.into(), message))
                        }
                        ArtifactCheckResult::NotFound => {
                            Some((Some(false), reasons::ARTIFACT_NOT_FOUND.into(), message))
                        }
                        ArtifactCheckResult::Invalid => {
                            Some((Some(false), reasons::INVALID_ARTIFACT.into(), message))
                        }
                        ArtifactCheckResult::Failed if current.is_some() => None,
                        ArtifactCheckResult::Failed => Some((
                            Some(false),
                            reasons::ARTIFACT_CHECK_FAILED.into(),
                            format!("{message} (tried again shortly)"),
                        )),
                    }
                }
            }
        }
    };
    if let Some((value, reason, message)) = verified {
        set(status, types::ARTIFACT_VERIFIED, value, &reason, message);
    }
    let artifact = conditions::find(&status.conditions, types::ARTIFACT_VERIFIED)
        .cloned()
        .expect("set above or before");

    // Ready: registered, its artifact intact, its group there.
    let (ready, reason, message) = if !facts.group_exists {
        (
            false,
            reasons::GROUP_NOT_FOUND.to_string(),
            group_missing(group),
        )
    } else if artifact.status == "False"
        || (artifact.status == "Unknown" && artifact.reason != reasons::NOT_VERIFIABLE)
    {
        (false, artifact.reason.clone(), artifact.message.clone())
    } else if let Some(version) = status.version {
        let digest = status
            .artifact_digest
            .as_ref()
            .map(|d| format!(", artifact {d}"))
            .unwrap_or_else(|| ", artifact not checked".into());
        (
            true,
            reasons::REGISTERED.to_string(),
            format!("version {version} of ModelPackageGroup {group}{digest}"),
        )
    } else {
        (
            false,
            reasons::AWAITING_VERSION.to_string(),
            format!("waiting for ModelPackageGroup {group} to number this version"),
        )
    };
    set(status, types::READY, Some(ready), &reason, message);
    status.state = Some(if ready {
        ModelPackageState::Completed
    } else if [
        reasons::ARTIFACT_CHANGED,
        reasons::ARTIFACT_NOT_FOUND,
        reasons::INVALID_ARTIFACT,
    ]
    .contains(&reason.as_str())
    {
        ModelPackageState::Failed
    } else {
        ModelPackageState::Pending
    });
    if ready && status.registration_time.is_none() {
        status.registration_time = Some(now.clone());
    }
}

fn group_missing(group: &str) -> String {
    format!(
        "ModelPackageGroup {group} does not exist in this namespace: create it, and this \
         package is numbered in it"
    )
}

#[cfg(test)]
mod tests;
