//! Condition types and reasons, as named constants.
//!
//! Every kind carries `metav1.Condition`s. A summary condition that
//! `kubectl wait --for=condition=...` can target is always present:
//! `Succeeded`/`Failed` for run-to-completion kinds (TrainingJob, TuningJob,
//! PipelineRun) and `Ready` for long-lived ones (Endpoint,
//! ModelPackage). Reasons are CamelCase words a user can act on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The resource serves or is usable (Endpoint, ModelPackage).
    pub const READY: &str = "Ready";
    /// Pods (or child jobs) exist and are making progress.
    pub const RUNNING: &str = "Running";
    /// The run finished successfully. Terminal.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The run failed and will not be retried. Terminal.
    pub const FAILED: &str = "Failed";
    /// The run is suspended by `spec.suspend`.
    pub const SUSPENDED: &str = "Suspended";
    /// The run lost capacity (a spot reclaim, a node loss) and is restarting.
    pub const INTERRUPTED: &str = "Interrupted";
    /// The spec was accepted by the operator's validation.
    pub const SPEC_VALID: &str = "SpecValid";
    /// A referenced object (ModelPackage, TrainingJob, Secret) was resolved.
    pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
    /// A ModelPackage's artifact was read and has its registered digest.
    pub const ARTIFACT_VERIFIED: &str = "ArtifactVerified";
}

/// Condition reasons.
pub mod reasons {
    /// The spec breaks a rule the operator checks; the message says what to fix.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced object does not exist or is not usable yet.
    pub const REFERENCE_NOT_FOUND: &str = "ReferenceNotFound";
    /// The Secret named in the spec is missing or lacks a key.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Children are being created.
    pub const CREATING: &str = "Creating";
    /// Pods are waiting to be scheduled or pulled.
    pub const PENDING: &str = "Pending";
    /// Pods are downloading input data.
    pub const DOWNLOADING: &str = "Downloading";
    /// Every rank is running.
    pub const TRAINING: &str = "Training";
    /// The model is being uploaded to the output location.
    pub const UPLOADING: &str = "Uploading";
    /// Every rank exited 0 and the model artifact was written.
    pub const COMPLETED: &str = "Completed";
    /// A rank exited non-zero; the message holds its failure file.
    pub const ALGORITHM_ERROR: &str = "AlgorithmError";
    /// The job used up `retryStrategy.maxAttempts`.
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// `stoppingCondition.maxRuntimeSeconds` passed.
    pub const MAX_RUNTIME_EXCEEDED: &str = "MaxRuntimeExceeded";
    /// `stoppingCondition.maxWaitSeconds` passed (spot).
    pub const MAX_WAIT_EXCEEDED: &str = "MaxWaitTimeExceeded";
    /// Pods stayed unschedulable longer than `stoppingCondition.maxPendingSeconds`.
    pub const MAX_PENDING_EXCEEDED: &str = "MaxPendingTimeExceeded";
    /// A spot node was reclaimed under a rank.
    pub const SPOT_INTERRUPTED: &str = "SpotInterrupted";
    /// The run was suspended or stopped by the user.
    pub const STOPPED: &str = "Stopped";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The serving replicas are ready and traffic is routed.
    pub const IN_SERVICE: &str = "InService";
    /// A new configuration is being rolled out.
    pub const UPDATING: &str = "Updating";
    /// A rollout breached its guard and traffic went back to the old variants.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// A tuning job reached its objective target or its no-improvement limit.
    pub const COMPLETION_CRITERIA_MET: &str = "CompletionCriteriaMet";
    /// A tuning job ran `maxTrainingJobs` trials.
    pub const MAX_TRAINING_JOBS_REACHED: &str = "MaxTrainingJobsReached";
    /// A pipeline step failed after its retries.
    pub const STEP_FAILED: &str = "StepFailed";
    /// A model package was registered with its version number.
    pub const REGISTERED: &str = "Registered";
    /// A ModelPackage names a ModelPackageGroup that does not exist.
    pub const GROUP_NOT_FOUND: &str = "GroupNotFound";
    /// A ModelPackage waits for its group to give it a version number.
    pub const AWAITING_VERSION: &str = "AwaitingVersion";
    /// A ModelPackage waits for the TrainingJob that makes its artifact.
    pub const WAITING_FOR_TRAINING_JOB: &str = "WaitingForTrainingJob";
    /// The artifact is being checked.
    pub const VERIFYING: &str = "Verifying";
    /// The artifact was read and its digest recorded or matched.
    pub const VERIFIED: &str = "Verified";
    /// The artifact's bytes differ from the ones registered; the message
    /// holds both digests.
    pub const ARTIFACT_CHANGED: &str = "ArtifactChanged";
    /// Nothing is at the artifact's URI.
    pub const ARTIFACT_NOT_FOUND: &str = "ArtifactNotFound";
    /// The artifact is no usable model (no readable `model.json`, a broken
    /// archive, another algorithm than `inference.algorithm`).
    pub const INVALID_ARTIFACT: &str = "InvalidArtifact";
    /// The artifact cannot be read from a pod (`file://`), so its digest is
    /// not recorded.
    pub const NOT_VERIFIABLE: &str = "NotVerifiable";
    /// The check of the artifact could not run or finish (the store, the
    /// network, credentials, the pod); it is tried again.
    pub const ARTIFACT_CHECK_FAILED: &str = "ArtifactCheckFailed";
    /// A package's lineage was copied from its TrainingJob.
    pub const LINEAGE_RECORDED: &str = "LineageRecorded";
    /// A ModelPackageGroup has no Approved version with an intact artifact.
    pub const NO_APPROVED_VERSION: &str = "NoApprovedVersion";
    /// A ModelPackageGroup serves an Approved version.
    pub const APPROVED_VERSION: &str = "ApprovedVersion";
    /// A TuningJob's strategy has no untried configuration left (Grid).
    pub const SEARCH_SPACE_EXHAUSTED: &str = "SearchSpaceExhausted";
    /// A TuningJob ran out of its `limits.maxRuntimeSeconds`.
    pub const MAX_RUNTIME_REACHED: &str = "MaxRuntimeReached";
    /// More of a TuningJob's trials failed than `limits.maxFailedTrainingJobs`.
    pub const TOO_MANY_FAILED_TRIALS: &str = "TooManyFailedTrials";
    /// Every trial of a TuningJob ended without an objective value.
    pub const NO_TRIAL_SUCCEEDED: &str = "NoTrialSucceeded";
    /// A trial completed without reporting the objective metric.
    pub const OBJECTIVE_METRIC_MISSING: &str = "ObjectiveMetricMissing";
    /// A TuningJob's warm-start parent does not exist.
    pub const PARENT_NOT_FOUND: &str = "ParentNotFound";
    /// A ModelPackage's `spec.approval.status` changed.
    pub const APPROVAL_CHANGED: &str = "ApprovalChanged";
}

/// Builds a condition for `generation` with the current time.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// A condition whose status is `Unknown`: a summary condition while the
/// outcome is still open (`Succeeded` while a job runs).
pub fn unknown(
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        status: "Unknown".to_string(),
        ..condition(type_, false, reason, message, generation, now)
    }
}

/// Inserts or replaces the condition of the same type. The transition time
/// moves only when the status flips, as Kubernetes conventions require.
/// Returns true when anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let transition = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            *old = Condition {
                last_transition_time: transition,
                ..new
            };
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Looks up a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type exists with status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn set_condition_keeps_transition_time_while_status_holds() {
        let mut conditions = vec![];
        let first = condition(
            types::RUNNING,
            true,
            reasons::TRAINING,
            "2/2 ranks",
            Some(1),
            at(10),
        );
        assert!(set_condition(&mut conditions, first));
        let same_status = condition(
            types::RUNNING,
            true,
            reasons::TRAINING,
            "epoch 3",
            Some(1),
            at(20),
        );
        assert!(set_condition(&mut conditions, same_status));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "epoch 3");
    }

    #[test]
    fn set_condition_moves_transition_time_on_flip() {
        let mut conditions = vec![condition(
            types::RUNNING,
            true,
            reasons::TRAINING,
            "",
            Some(1),
            at(10),
        )];
        let flipped = condition(
            types::RUNNING,
            false,
            reasons::COMPLETED,
            "",
            Some(1),
            at(30),
        );
        assert!(set_condition(&mut conditions, flipped));
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert!(!is_true(&conditions, types::RUNNING));
    }

    #[test]
    fn set_condition_reports_no_change_for_identical_condition() {
        let c = condition(
            types::READY,
            true,
            reasons::IN_SERVICE,
            "ok",
            Some(2),
            at(5),
        );
        let mut conditions = vec![c.clone()];
        let again = Condition {
            last_transition_time: at(99),
            ..c
        };
        assert!(!set_condition(&mut conditions, again));
        assert_eq!(conditions[0].last_transition_time, at(5));
    }
}
