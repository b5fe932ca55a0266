//! Observe: what the pods of the running attempt say, as one outcome. Pure
//! (pods in, outcome out), so every way a rank can end is unit-tested.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kiln_api::common::MetricValue;
use kiln_api::training_job::{ReplicaCounts, SecondaryStatus};

use super::build::{PUSH_CONTAINER, RANK_LABEL, TRAIN_CONTAINER};

/// The outcome of an attempt so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Still going: the step the slowest rank is in, and pods by phase.
    Progress {
        /// The step.
        phase: SecondaryStatus,
        /// Pods by phase.
        counts: ReplicaCounts,
        /// Every rank's training container has started.
        all_training: bool,
    },
    /// Every rank finished; rank 0 uploaded the model.
    Succeeded {
        /// The artifact's URI, from rank 0's upload report.
        model_artifact_uri: Option<String>,
        /// Its SHA-256, from the same report.
        sha256: Option<String>,
        /// The latest value of each metric, from the same report.
        final_metrics: Vec<MetricValue>,
    },
    /// A rank failed.
    Failed {
        /// What the rank said (its failure file) or what Kubernetes said.
        message: String,
        /// False when the algorithm said its input is bad (exit code 2 of a
        /// built-in): another attempt would fail the same way.
        retryable: bool,
    },
    /// A rank lost its node (spot reclaim, eviction, node loss) or vanished.
    Interrupted {
        /// What happened.
        message: String,
    },
}

/// Pod failure reasons that mean the node went away, not the code.
const LOST_NODE_REASONS: &[&str] = &[
    "Evicted",
    "NodeLost",
    "NodeShutdown",
    "Shutdown",
    "Terminated",
    "Preempting",
];

/// What the `expected` pods of an attempt say. `all_created` tells a pod not
/// created yet from one that disappeared.
pub fn observe(pods: &[Pod], expected: i32, all_created: bool, built_in: bool) -> Outcome {
    let mut counts = ReplicaCounts::default();
    let mut phase = SecondaryStatus::Completed;
    let mut all_training = true;
    let mut failure: Option<(i32, String, bool)> = None;
    let mut model_artifact_uri = None;
    let mut sha256 = None;
    let mut final_metrics = Vec::new();
    for pod in pods {
        let rank = rank_of(pod);
        let status = pod.status.clone().unwrap_or_default();
        if let Some(disruption) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        {
            return Outcome::Interrupted {
                message: format!(
                    "rank {rank} ({}) was disrupted: {} {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    disruption.reason.as_deref().unwrap_or_default(),
                    disruption.message.as_deref().unwrap_or_default()
                )
                .trim()
                .to_string(),
            };
        }
        match status.phase.as_deref() {
            Some("Succeeded") => {
                counts.succeeded += 1;
                let report = (rank == 0)
                    .then(|| {
                        terminated_message(status.container_statuses.as_deref(), PUSH_CONTAINER)
                    })
                    .flatten()
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok());
                if let Some(report) = report {
                    model_artifact_uri = report["modelArtifactUri"].as_str().map(str::to_string);
                    sha256 = report["sha256"].as_str().map(str::to_string);
                    final_metrics = report["finalMetrics"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(name, v)| {
                            Some(MetricValue {
                                name: name.clone(),
                                value: v.as_f64()?,
                            })
                        })
                        .take(40)
                        .collect();
                }
            }
            Some("Failed") => {
                counts.failed += 1;
                let reason = status.reason.clone().unwrap_or_default();
                if LOST_NODE_REASONS.contains(&reason.as_str()) {
                    return Outcome::Interrupted {
                        message: format!(
                            "rank {rank} lost its node: {reason}: {}",
                            status.message.as_deref().unwrap_or_default()
                        ),
                    };
                }
                let (message, retryable) = rank_failure(&status, built_in);
                if failure.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                    failure = Some((rank, message, retryable));
                }
            }
            Some("Running") => {
                counts.running += 1;
                phase = slowest(phase, SecondaryStatus::Uploading);
            }
            _ => {
                let step = step_of(&status);
                if step == SecondaryStatus::Training {
                    counts.running += 1;
                } else {
                    counts.pending += 1;
                    all_training = false;
                }
                phase = slowest(phase, step);
            }
        }
        if pod.metadata.deletion_timestamp.is_some()
            && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            return Outcome::Interrupted {
                message: format!(
                    "rank {rank} ({}) is being deleted",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
            };
        }
    }
    if let Some((rank, message, retryable)) = failure {
        return Outcome::Failed {
            message: format!("rank {rank}: {message}"),
            retryable,
        };
    }
    let present = pods.len() as i32;
    if present < expected {
        if all_created {
            let mut ranks: Vec<i32> = (0..expected).collect();
            ranks.retain(|r| !pods.iter().any(|p| rank_of(p) == *r));
            return Outcome::Interrupted {
                message: format!(
                    "the pods of ranks {ranks:?} disappeared (their node was removed)"
                ),
            };
        }
        counts.pending += expected - present;
        return Outcome::Progress {
            phase: SecondaryStatus::Starting,
            counts,
            all_training: false,
        };
    }
    if counts.succeeded == expected {
        return Outcome::Succeeded {
            model_artifact_uri,
            sha256,
            final_metrics,
        };
    }
    let all_training = all_training && counts.succeeded == 0;
    Outcome::Progress {
        phase,
        counts,
        all_training,
    }
}

fn rank_of(pod: &Pod) -> i32 {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(RANK_LABEL))
        .and_then(|r| r.parse().ok())
        .unwrap_or(-1)
}

/// The earlier of two steps: the job is where its slowest rank is.
fn slowest(a: SecondaryStatus, b: SecondaryStatus) -> SecondaryStatus {
    let order = |s: SecondaryStatus| match s {
        SecondaryStatus::Starting => 0,
        SecondaryStatus::Downloading => 1,
        SecondaryStatus::Training => 2,
        SecondaryStatus::Uploading => 3,
        _ => 4,
    };
    if order(a) <= order(b) { a } else { b }
}

/// The step of a pod that is not finished, from its init containers: the
/// fetches, then training; after them, the upload.
fn step_of(status: &k8s_openapi::api::core::v1::PodStatus) -> SecondaryStatus {
    let inits = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let running = |c: &ContainerStatus| c.state.as_ref().is_some_and(|s| s.running.is_some());
    let done = |c: &ContainerStatus| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    };
    if inits
        .iter()
        .any(|c| c.name == TRAIN_CONTAINER && running(c))
    {
        return SecondaryStatus::Training;
    }
    if inits.iter().any(|c| c.name == TRAIN_CONTAINER && done(c)) {
        return SecondaryStatus::Uploading;
    }
    if inits.iter().any(|c| {
        (c.name.starts_with("fetch-") || c.name == "checkpoint-restore") && (running(c) || done(c))
    }) {
        return SecondaryStatus::Downloading;
    }
    SecondaryStatus::Starting
}

fn terminated_message(statuses: Option<&[ContainerStatus]>, name: &str) -> Option<String> {
    statuses?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

/// Why a failed pod failed: the first container that exited non-zero, with
/// its termination message (the training container's is `/opt/ml/output/failure`).
fn rank_failure(status: &k8s_openapi::api::core::v1::PodStatus, built_in: bool) -> (String, bool) {
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in all {
        let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        if t.exit_code == 0 {
            continue;
        }
        let said = t
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty());
        let what = match c.name.as_str() {
            TRAIN_CONTAINER => "training".to_string(),
            PUSH_CONTAINER => "uploading the model".to_string(),
            "checkpoint-restore" => "restoring the checkpoint".to_string(),
            other if other.starts_with("fetch-") => format!("fetching input ({other})"),
            other => other.to_string(),
        };
        let detail = said
            .map(str::to_string)
            .unwrap_or_else(|| t.reason.clone().unwrap_or_else(|| "no message".into()));
        let bad_input = built_in && c.name == TRAIN_CONTAINER && t.exit_code == 2;
        return (
            format!("{what} exited {}: {detail}", t.exit_code),
            !bad_input,
        );
    }
    let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
    let message = status.message.clone().unwrap_or_default();
    (format!("{reason} {message}").trim().to_string(), true)
}

#[cfg(test)]
mod tests;
