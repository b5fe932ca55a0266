//! Resolve: what each variant's `model` names, as an artifact and the image
//! that serves it. A TrainingJob must have completed; a ModelPackage must be
//! Approved; a group resolves to its newest Approved version.
//!
//! The choices are pure functions of the objects read, unit-tested without
//! a cluster; [`resolve`] only reads them.

use kiln_api::endpoint::{ModelPackageRef, ModelSource, ResolvedModelPackage};
use kiln_api::model_package::{ApprovalStatus, ModelPackage};
use kiln_api::training_job::{TrainingJob, TrainingJobState};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::build::ResolvedModel;
use crate::controllers::error::Result;

/// Why a variant's model cannot be served (yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// The condition reason.
    pub reason: &'static str,
    /// What is missing, for the condition message.
    pub message: String,
}

fn unresolved(reason: &'static str, message: String) -> Unresolved {
    Unresolved { reason, message }
}

/// Reads what `source` refers to in `namespace` and resolves it.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    source: &ModelSource,
) -> Result<std::result::Result<ResolvedModel, Unresolved>> {
    if let Some(job) = &source.training_job {
        let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), namespace);
        let found = jobs.get_opt(job).await?;
        return Ok(from_training_job(job, found.as_ref(), source));
    }
    if let Some(reference) = &source.model_package {
        let packages: Api<ModelPackage> = Api::namespaced(client.clone(), namespace);
        if let Some(name) = &reference.name {
            let found = packages.get_opt(name).await?;
            return Ok(from_package_named(name, found.as_ref(), source));
        }
        let all = packages.list(&ListParams::default()).await?.items;
        return Ok(from_group(reference, &all, source));
    }
    Ok(from_model_data(source))
}

/// `modelData` with `algorithm` or `image`.
pub fn from_model_data(source: &ModelSource) -> std::result::Result<ResolvedModel, Unresolved> {
    let Some(data) = &source.model_data else {
        return Err(unresolved(
            "InvalidModel",
            "set one of model.modelPackage, model.trainingJob and model.modelData".into(),
        ));
    };
    Ok(ResolvedModel {
        model_uri: data.uri.clone(),
        secret: data.secret_ref.is_some().then(|| data.clone()),
        algorithm: source.algorithm,
        image: source.image.clone(),
        env: source.env.clone(),
        package: None,
    })
}

/// The model a TrainingJob produced, once it completed.
pub fn from_training_job(
    name: &str,
    job: Option<&TrainingJob>,
    source: &ModelSource,
) -> std::result::Result<ResolvedModel, Unresolved> {
    let Some(job) = job else {
        return Err(unresolved(
            kiln_api::conditions::reasons::REFERENCE_NOT_FOUND,
            format!("TrainingJob {name} not found in this namespace"),
        ));
    };
    let status = job.status.clone().unwrap_or_default();
    match status.state {
        Some(TrainingJobState::Completed) => {}
        Some(TrainingJobState::Failed | TrainingJobState::Stopped) => {
            return Err(unresolved(
                "TrainingJobNotCompleted",
                format!(
                    "TrainingJob {name} ended {:?} without a model{}",
                    status.state.unwrap_or(TrainingJobState::Failed),
                    status
                        .failure_reason
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            ));
        }
        _ => {
            return Err(unresolved(
                "WaitingForTrainingJob",
                format!("waiting for TrainingJob {name} to complete"),
            ));
        }
    }
    let Some(uri) = status.model_artifact_uri else {
        return Err(unresolved(
            "WaitingForTrainingJob",
            format!("TrainingJob {name} completed without a model artifact URI in its status"),
        ));
    };
    let output = &job.spec.output.location;
    let algorithm = source.algorithm.or(job.spec.algorithm.name);
    let image = source.image.clone().or_else(|| {
        job.spec
            .algorithm
            .name
            .is_none()
            .then(|| job.spec.algorithm.image.clone())
            .flatten()
    });
    Ok(ResolvedModel {
        model_uri: uri,
        secret: output.secret_ref.is_some().then(|| output.clone()),
        algorithm: if image.is_some() { None } else { algorithm },
        image,
        env: source.env.clone(),
        package: None,
    })
}

/// A ModelPackage named directly: it must be Approved.
pub fn from_package_named(
    name: &str,
    package: Option<&ModelPackage>,
    source: &ModelSource,
) -> std::result::Result<ResolvedModel, Unresolved> {
    let Some(package) = package else {
        return Err(unresolved(
            kiln_api::conditions::reasons::REFERENCE_NOT_FOUND,
            format!("ModelPackage {name} not found in this namespace"),
        ));
    };
    if package.spec.approval.status != ApprovalStatus::Approved {
        return Err(unresolved(
            "ModelNotApproved",
            format!(
                "ModelPackage {name} is {:?}; only an Approved version is served",
                package.spec.approval.status
            ),
        ));
    }
    if let Some(refused) = artifact_refused(package) {
        return Err(refused);
    }
    Ok(from_package(package, source))
}

/// Why a package's artifact must not be served: the registry's check found
/// it changed, gone or unusable (`ArtifactVerified` False; its message says
/// how, with both digests for a changed one). A package not checked yet
/// (Unknown) stays servable.
fn artifact_refused(package: &ModelPackage) -> Option<Unresolved> {
    use kiln_api::conditions::{find, reasons, types};
    let status = package.status.as_ref()?;
    let c = find(&status.conditions, types::ARTIFACT_VERIFIED)?;
    if c.status != "False" {
        return None;
    }
    let reason = match c.reason.as_str() {
        reasons::ARTIFACT_NOT_FOUND => reasons::ARTIFACT_NOT_FOUND,
        reasons::INVALID_ARTIFACT => reasons::INVALID_ARTIFACT,
        _ => reasons::ARTIFACT_CHANGED,
    };
    Some(unresolved(
        reason,
        format!("ModelPackage {}: {}", package.name_any(), c.message),
    ))
}

/// A group's given version, or its newest Approved one.
pub fn from_group(
    reference: &ModelPackageRef,
    packages: &[ModelPackage],
    source: &ModelSource,
) -> std::result::Result<ResolvedModel, Unresolved> {
    let group = reference.group.as_deref().unwrap_or_default();
    let members: Vec<&ModelPackage> = packages
        .iter()
        .filter(|p| p.spec.group_name == group)
        .collect();
    if members.is_empty() {
        return Err(unresolved(
            kiln_api::conditions::reasons::REFERENCE_NOT_FOUND,
            format!("ModelPackageGroup {group} has no ModelPackage in this namespace"),
        ));
    }
    let version_of = |p: &ModelPackage| p.status.as_ref().and_then(|s| s.version);
    if let Some(version) = reference.version {
        let Some(package) = members.iter().find(|p| version_of(p) == Some(version)) else {
            return Err(unresolved(
                kiln_api::conditions::reasons::REFERENCE_NOT_FOUND,
                format!("ModelPackageGroup {group} has no version {version}"),
            ));
        };
        return from_package_named(&package.name_any(), Some(package), source);
    }
    members
        .iter()
        .filter(|p| p.spec.approval.status == ApprovalStatus::Approved)
        .filter(|p| artifact_refused(p).is_none())
        .filter_map(|p| version_of(p).map(|v| (v, *p)))
        .max_by_key(|(v, _)| *v)
        .map(|(_, p)| from_package(p, source))
        .ok_or_else(|| {
            unresolved(
                "ModelNotApproved",
                format!("ModelPackageGroup {group} has no Approved, registered version yet"),
            )
        })
}

fn from_package(package: &ModelPackage, source: &ModelSource) -> ResolvedModel {
    let inference = &package.spec.inference;
    let mut env = inference.env.clone();
    // The variant's own variables come after the package's, so they win.
    env.extend(source.env.iter().cloned());
    let status = package.status.clone().unwrap_or_default();
    ResolvedModel {
        model_uri: inference.model_data.uri.clone(),
        secret: inference
            .model_data
            .secret_ref
            .is_some()
            .then(|| inference.model_data.clone()),
        algorithm: if inference.image.is_some() {
            None
        } else {
            inference.algorithm
        },
        image: inference.image.clone(),
        env,
        package: Some(ResolvedModelPackage {
            name: package.name_any(),
            group: Some(package.spec.group_name.clone()),
            version: status.version,
            artifact_digest: status.artifact_digest,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::model_package::{ModelPackageSpec, ModelPackageStatus};
    use kiln_api::training_job::{TrainingJobSpec, TrainingJobStatus};

    fn job(state: Option<TrainingJobState>, uri: Option<&str>) -> TrainingJob {
        let spec: TrainingJobSpec = serde_json::from_value(serde_json::json!({
            "algorithm": {"name": "linear-learner"},
            "inputs": [{"name": "train", "source": {"uri": "s3://b/train"}}],
            "output": {"location": {"uri": "s3://b/out", "secretRef": {"name": "s3"}}},
        }))
        .unwrap();
        let mut job = TrainingJob::new("tj", spec);
        job.status = Some(TrainingJobStatus {
            state,
            model_artifact_uri: uri.map(String::from),
            ..TrainingJobStatus::default()
        });
        job
    }

    fn package(name: &str, group: &str, approved: bool, version: Option<i64>) -> ModelPackage {
        let spec: ModelPackageSpec = serde_json::from_value(serde_json::json!({
            "groupName": group,
            "inference": {"modelData": {"uri": format!("s3://b/{name}.tar.gz")}, "algorithm": "mlp"},
            "approval": {"status": if approved { "Approved" } else { "PendingManualApproval" }},
        }))
        .unwrap();
        let mut p = ModelPackage::new(name, spec);
        p.status = Some(ModelPackageStatus {
            version,
            ..ModelPackageStatus::default()
        });
        p
    }

    #[test]
    fn a_training_job_resolves_once_completed_with_its_output_credentials() {
        let source = ModelSource::default();
        let waiting = from_training_job(
            "tj",
            Some(&job(Some(TrainingJobState::InProgress), None)),
            &source,
        );
        assert_eq!(waiting.unwrap_err().reason, "WaitingForTrainingJob");
        let missing = from_training_job("tj", None, &source).unwrap_err();
        assert!(missing.message.contains("not found"), "{missing:?}");
        let failed = from_training_job(
            "tj",
            Some(&job(Some(TrainingJobState::Failed), None)),
            &source,
        );
        assert_eq!(failed.unwrap_err().reason, "TrainingJobNotCompleted");
        let done = from_training_job(
            "tj",
            Some(&job(
                Some(TrainingJobState::Completed),
                Some("s3://b/out/ns/tj/output/model.tar.gz"),
            )),
            &source,
        )
        .unwrap();
        assert_eq!(done.model_uri, "s3://b/out/ns/tj/output/model.tar.gz");
        assert_eq!(
            done.algorithm,
            Some(kiln_api::training_job::BuiltinAlgorithm::LinearLearner)
        );
        assert_eq!(done.image, None);
        assert_eq!(done.secret.unwrap().secret_ref.unwrap().name, "s3");
    }

    #[test]
    fn a_package_must_be_approved_and_a_group_serves_its_newest_approved_version() {
        let source = ModelSource::default();
        let pending = package("m1", "g", false, Some(1));
        let refused = from_package_named("m1", Some(&pending), &source).unwrap_err();
        assert_eq!(refused.reason, "ModelNotApproved");
        let all = vec![
            package("m1", "g", true, Some(1)),
            package("m2", "g", true, Some(2)),
            package("m3", "g", false, Some(3)),
            package("other", "h", true, Some(9)),
        ];
        let group = ModelPackageRef {
            group: Some("g".into()),
            ..ModelPackageRef::default()
        };
        let newest = from_group(&group, &all, &source).unwrap();
        assert_eq!(newest.model_uri, "s3://b/m2.tar.gz");
        let p = newest.package.unwrap();
        assert_eq!((p.name.as_str(), p.version), ("m2", Some(2)));
        let pinned = ModelPackageRef {
            version: Some(1),
            ..group.clone()
        };
        assert_eq!(
            from_group(&pinned, &all, &source).unwrap().model_uri,
            "s3://b/m1.tar.gz"
        );
        let unapproved = ModelPackageRef {
            version: Some(3),
            ..group.clone()
        };
        assert_eq!(
            from_group(&unapproved, &all, &source).unwrap_err().reason,
            "ModelNotApproved"
        );
        let unnumbered = vec![package("m1", "g", true, None)];
        assert_eq!(
            from_group(&group, &unnumbered, &source).unwrap_err().reason,
            "ModelNotApproved"
        );
        // A version whose artifact changed is never served; the group falls
        // back to the newest intact one.
        let mut changed = all.clone();
        changed[1]
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(kiln_api::conditions::condition(
                kiln_api::conditions::types::ARTIFACT_VERIFIED,
                false,
                kiln_api::conditions::reasons::ARTIFACT_CHANGED,
                "registered sha256:aa, found sha256:bb",
                None,
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ),
            ));
        assert_eq!(
            from_group(&group, &changed, &source).unwrap().model_uri,
            "s3://b/m1.tar.gz"
        );
        let refused = from_package_named("m2", Some(&changed[1]), &source).unwrap_err();
        assert_eq!(refused.reason, "ArtifactChanged");
        assert!(refused.message.contains("sha256:bb"), "{}", refused.message);
        let empty = ModelPackageRef {
            group: Some("none".into()),
            ..ModelPackageRef::default()
        };
        assert!(
            from_group(&empty, &all, &source)
                .unwrap_err()
                .message
                .contains("no ModelPackage")
        );
    }
}
