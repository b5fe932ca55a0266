//! The artifact check: a short-lived pod per check that runs `kiln-runtime
//! inspect` on `inference.modelData` with the credentials of its
//! `secretRef` (the operator never reads users' storage Secrets itself) and
//! reports the artifact's SHA-256 in its termination message.
//!
//! Pure functions, no client: when a check is due, the pod of a check, what
//! a pod says, and what its report means against the registered digest.
//!
//! A check is numbered; its pod is `<package>-check-<number>` and the number
//! is written to status before the pod is created, so an operator that
//! restarts finds the pod of the check under way instead of starting
//! another. A check runs for every new generation of the spec (an approval
//! or metrics change: what is approved is the registered bytes), every 30
//! minutes while the package is Approved (what Endpoints may serve), and
//! after a failed one with a backoff from 1 minute to an hour.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    ResourceRequirements, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kiln_api::model_package::{ArtifactCheck, ArtifactCheckResult, ModelPackage};
use kube::{Resource, ResourceExt};

use crate::controllers::pods::{
    MANAGED_BY, credentials, mount, restricted_container, restricted_pod,
};

/// The label with the UID of a check pod's ModelPackage (what the
/// controller lists a package's pods by).
pub const PACKAGE_UID_LABEL: &str = "kiln.dev/model-package-uid";
/// The label with a check pod's ModelPackage name (cut to 63 characters),
/// for people: `kubectl get pods -l kiln.dev/model-package=<name>`.
pub const PACKAGE_LABEL: &str = "kiln.dev/model-package";
/// The label with a check pod's number; every check pod has it.
pub const CHECK_LABEL: &str = "kiln.dev/artifact-check";
/// The check's container.
pub const CHECK_CONTAINER: &str = "inspect";
/// Where a `pvc://` artifact's claim is mounted in the check pod.
pub const ARTIFACT_MOUNT: &str = "/mnt/artifact";
/// How long a check may take, from its start, before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(600);
/// How often an Approved package's artifact is checked again.
pub const APPROVED_RECHECK: Duration = Duration::from_secs(30 * 60);
/// The wait after a first failed check; it doubles with each further one.
pub const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between failed checks.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The exit code of `kiln-runtime inspect` for "nothing at the URI".
pub const EXIT_NOT_FOUND: i32 = 3;
/// The exit code of `kiln-runtime inspect` for "no usable artifact".
pub const EXIT_INVALID: i32 = 2;

/// How the check pod reaches the artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// An object store URI, read with the Secret's credentials.
    Store(String),
    /// A PersistentVolumeClaim mounted read-only; the path in the pod.
    Claim { claim: String, path: String },
    /// Not readable from a check pod, and why.
    Unreadable(String),
}

/// How the check pod reaches `uri`.
pub fn access(uri: &str) -> Access {
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let (claim, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let sub = sub.trim_matches('/');
        let path = if sub.is_empty() {
            ARTIFACT_MOUNT.to_string()
        } else {
            format!("{ARTIFACT_MOUNT}/{sub}")
        };
        return Access::Claim {
            claim: claim.to_string(),
            path: format!("file://{path}"),
        };
    }
    if uri.starts_with("file://") {
        return Access::Unreadable(format!(
            "{uri} is a path inside the serving pods, which no other pod can read: its digest is \
             not recorded (register an s3://, gs://, az:// or pvc:// artifact to have it checked)"
        ));
    }
    Access::Store(uri.to_string())
}

/// The name of check `number`'s pod: `<package>-check-<number>`, the
/// package's name cut (with a hash of the whole) to fit.
pub fn pod_name(package: &str, number: i64) -> String {
    let base = if package.len() > 200 {
        let cut = package[..200].trim_end_matches(['-', '.']);
        format!("{cut}-{:08x}", fnv1a(package))
    } else {
        package.to_string()
    };
    format!("{base}-check-{number}")
}

/// A 32-bit FNV-1a hash: stable across builds, unlike std's hasher, so a
/// restarted operator names a pod as its predecessor did.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A label value made of `text`: at most 63 characters, starting and
/// ending with a letter or digit.
fn label_value(text: &str) -> String {
    let cut: String = text.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The pod of check `number` of `package`, or None when its artifact cannot
/// be read from a pod.
pub fn check_pod(package: &ModelPackage, number: i64, runtime_image: &str) -> Option<Pod> {
    let name = package.name_any();
    let data = &package.spec.inference.model_data;
    let (uri, volume) = match access(&data.uri) {
        Access::Store(uri) => (uri, None),
        Access::Claim { claim, path } => (path, Some(claim)),
        Access::Unreadable(_) => return None,
    };
    let format = if package.spec.inference.image.is_some() {
        "any"
    } else {
        "kiln"
    };
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (PACKAGE_LABEL.to_string(), label_value(&name)),
        (CHECK_LABEL.to_string(), number.to_string()),
    ]);
    if let Some(uid) = package.uid() {
        labels.insert(PACKAGE_UID_LABEL.to_string(), uid);
    }
    let container = Container {
        name: CHECK_CONTAINER.into(),
        image: Some(runtime_image.to_string()),
        args: Some(vec![
            "inspect".into(),
            "--uri".into(),
            uri,
            "--format".into(),
            format.into(),
        ]),
        env_from: credentials(data),
        volume_mounts: volume
            .as_ref()
            .map(|_| vec![mount("kiln-artifact", ARTIFACT_MOUNT, true)]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("512Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        // The report is the termination message; a crash before it is
        // written leaves the log's tail instead.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        // The artifact is streamed, never written: nothing on disk is needed.
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..restricted_container()
        }),
        ..Container::default()
    };
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, number)),
            namespace: package.namespace(),
            labels: Some(labels),
            owner_references: package.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            // It needs no Kubernetes API.
            automount_service_account_token: Some(false),
            active_deadline_seconds: Some(CHECK_TIMEOUT.as_secs() as i64),
            security_context: Some(restricted_pod()),
            volumes: volume.map(|claim| {
                vec![Volume {
                    name: "kiln-artifact".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: Some(true),
                    }),
                    ..Volume::default()
                }]
            }),
            ..PodSpec::default()
        }),
        ..Pod::default()
    })
}

/// What to do about checks now.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Start check `number`.
    Start(i64),
    /// The check under way goes on.
    Running,
    /// Nothing until then (None: until the spec changes).
    Later(Option<Duration>),
}

/// Whether a check is due for generation `generation` at `now`. `written`
/// says the artifact may just have been written (the TrainingJob that makes
/// it completed): a failed check is then tried again at once.
pub fn due(
    last: Option<&ArtifactCheck>,
    generation: Option<i64>,
    approved: bool,
    written: bool,
    now: &Time,
) -> Due {
    let Some(last) = last else {
        return Due::Start(1);
    };
    let next = Due::Start(last.number + 1);
    let Some(done) = &last.completion_time else {
        return Due::Running;
    };
    if last.generation != generation
        || (written && last.result != Some(ArtifactCheckResult::Verified))
    {
        return next;
    }
    let wait = match last.result {
        Some(ArtifactCheckResult::Verified) if approved => APPROVED_RECHECK,
        Some(ArtifactCheckResult::Verified) => return Due::Later(None),
        _ => retry_after(last.consecutive_failures),
    };
    let elapsed = Duration::from_secs((now.0.as_second() - done.0.as_second()).max(0) as u64);
    if elapsed >= wait {
        next
    } else {
        Due::Later(Some(wait - elapsed))
    }
}

/// The wait after `failures` failed checks in a row: 1 minute, doubling,
/// at most an hour.
pub fn retry_after(failures: i32) -> Duration {
    let doublings = failures.saturating_sub(1).clamp(0, 16) as u32;
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// What `kiln-runtime inspect` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes read.
    pub size: u64,
    /// The algorithm its `model.json` names.
    pub algorithm: Option<String>,
}

/// Reads the report of `kiln-runtime inspect` (its termination message).
pub fn parse_report(text: &str) -> Result<Report, String> {
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("the check's report is no JSON ({e}): {}", clip(text, 200)))?;
    let sha256 = value["sha256"]
        .as_str()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("the check's report has no SHA-256: {}", clip(text, 200)))?;
    Ok(Report {
        digest: format!("sha256:{}", sha256.to_ascii_lowercase()),
        size: value["size"].as_u64().unwrap_or(0),
        algorithm: value["algorithm"].as_str().map(str::to_string),
    })
}

fn clip(text: &str, limit: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// What a check pod says.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Not done; what it waits for, when Kubernetes says.
    Running(Option<String>),
    /// Done with a report.
    Reported(Report),
    /// Done without one: the result and why.
    Failed(ArtifactCheckResult, String),
}

/// What the check pod says at `now`, for a check started at `started`.
pub fn observe(pod: &Pod, started: &Time, now: &Time) -> Observed {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CHECK_CONTAINER);
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match status.phase.as_deref() {
        Some("Succeeded") => {
            let message = terminated
                .and_then(|t| t.message.clone())
                .unwrap_or_default();
            return match parse_report(&message) {
                Ok(report) => Observed::Reported(report),
                Err(why) => Observed::Failed(ArtifactCheckResult::Failed, why),
            };
        }
        Some("Failed") => {
            let (code, message) = match terminated {
                Some(t) => (t.exit_code, t.message.clone().unwrap_or_default()),
                None => (
                    -1,
                    format!(
                        "{} {}",
                        status.reason.as_deref().unwrap_or_default(),
                        status.message.as_deref().unwrap_or_default()
                    ),
                ),
            };
            let message = clip(&message, 2000);
            let result = match code {
                EXIT_NOT_FOUND => ArtifactCheckResult::NotFound,
                EXIT_INVALID => ArtifactCheckResult::Invalid,
                _ => ArtifactCheckResult::Failed,
            };
            let message = if message.is_empty() {
                format!("the check pod {} failed (exit code {code})", pod.name_any())
            } else {
                message
            };
            return Observed::Failed(result, message);
        }
        _ => {}
    }
    let waiting = container.and_then(waiting_reason);
    if let Some((reason, message)) = &waiting
        && reason == "CreateContainerConfigError"
    {
        // A missing Secret (or key): the pod cannot start until it exists.
        return Observed::Failed(
            ArtifactCheckResult::Failed,
            format!("the check pod cannot start: {message}"),
        );
    }
    let elapsed = now.0.as_second() - started.0.as_second();
    let what = waiting.map(|(reason, message)| {
        format!("{reason}: {message}")
            .trim_end_matches([':', ' '])
            .to_string()
    });
    if elapsed > CHECK_TIMEOUT.as_secs() as i64 {
        return Observed::Failed(
            ArtifactCheckResult::Failed,
            format!(
                "the check did not finish within {} minutes{}",
                CHECK_TIMEOUT.as_secs() / 60,
                what.as_ref()
                    .map(|w| format!(" (its pod: {w})"))
                    .unwrap_or_default()
            ),
        );
    }
    Observed::Running(what)
}

fn waiting_reason(container: &ContainerStatus) -> Option<(String, String)> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    Some((
        waiting.reason.clone().unwrap_or_default(),
        waiting.message.clone().unwrap_or_default(),
    ))
}

/// What a report means for a package registered with `registered` (None:
/// not yet) serving `algorithm`: the result, and the message.
pub fn judge(
    uri: &str,
    report: &Report,
    registered: Option<&str>,
    algorithm: Option<&str>,
) -> (ArtifactCheckResult, String) {
    if let (Some(wanted), Some(found)) = (algorithm, report.algorithm.as_deref())
        && wanted != found
    {
        return (
            ArtifactCheckResult::Invalid,
            format!(
                "{uri}: its model.json is a {found} model, but inference.algorithm is {wanted}: \
                 it would be served as the wrong model"
            ),
        );
    }
    match registered {
        Some(digest) if digest != report.digest => (
            ArtifactCheckResult::Changed,
            format!(
                "the artifact at {uri} changed after it was registered: registered {digest}, now \
                 {}; register the new bytes as a new version, or put the registered ones back",
                report.digest
            ),
        ),
        _ => (
            ArtifactCheckResult::Verified,
            format!("{uri} has {}", report.digest),
        ),
    }
}

#[cfg(test)]
mod tests;
