//! `ModelPackage`: a registered model version (SageMaker Model Registry and
//! Model Cards). The operator numbers versions within a group, records
//! approval changes and checks the artifact; Endpoints and Pipelines refer to
//! packages by name or by group ("newest approved").
//!
//! Registration: the ModelPackageGroup controller gives the package the
//! group's next version number; the ModelPackage controller checks the
//! artifact (a short-lived pod runs `kiln-runtime inspect`, which reads the
//! artifact with the credentials of `inference.modelData.secretRef` and
//! reports its SHA-256) and records the digest, copies the lineage of the
//! TrainingJob that produced it and records each approval change. The
//! artifact is checked again on every spec change and, while Approved,
//! every 30 minutes: other bytes than the registered ones turn `Ready`
//! False with reason `ArtifactChanged`, and Endpoints refuse the package.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{MetricValue, StorageLocation};
use crate::training_job::BuiltinAlgorithm;

/// The spec of a ModelPackage. `groupName`, `inference` and `source` are fixed
/// once registered; approval, metrics, metadata and the model card may change.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "ModelPackage",
    plural = "modelpackages",
    shortname = "mp",
    category = "kiln",
    namespaced,
    status = "ModelPackageStatus",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupName"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".status.version"),
    printcolumn(name = "Approval", type_ = "string", json_path = ".spec.approval.status"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.groupName",
    validation = Rule::new(crate::common::unchanged_rule("spec", &["groupName", "inference", "source"])).message("a ModelPackage's groupName, inference and source cannot change: register a new version instead").field_path(".spec"),
    validation = Rule::new(metrics_fixed_once_approved()).message("spec.modelMetrics cannot change while the package is Approved: the metrics are what was approved; set approval.status to PendingManualApproval first, or register a new version").field_path(".spec.modelMetrics"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.approval.status != 'Rejected' || has(self.approval.description)").message("say why in approval.description when rejecting a model"))]
pub struct ModelPackageSpec {
    /// The ModelPackageGroup (SageMaker `ModelPackageGroupName`) in this
    /// namespace; versions are numbered within it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub group_name: String,
    /// What this version is for (SageMaker `ModelPackageDescription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// How to serve the model (SageMaker `InferenceSpecification`).
    pub inference: InferenceSpec,
    /// Where the model came from (lineage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ModelSourceLineage>,
    /// Approval (SageMaker `ModelApprovalStatus`). Endpoints deploy Approved versions only.
    #[serde(default)]
    pub approval: Approval,
    /// Evaluation results (SageMaker `ModelMetrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_metrics: Option<ModelMetrics>,
    /// Where the code came from (SageMaker `MetadataProperties`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_properties: Option<MetadataProperties>,
    /// Free-form key-values (SageMaker `CustomerMetadataProperties`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub custom_properties: BTreeMap<String, String>,
    /// The ML domain, e.g. `COMPUTER_VISION`, `NATURAL_LANGUAGE_PROCESSING`, `MACHINE_LEARNING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub domain: Option<String>,
    /// The task, e.g. `CLASSIFICATION`, `REGRESSION`, `CLUSTERING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub task: Option<String>,
    /// A sample request body (SageMaker `SamplePayloadUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_payload: Option<StorageLocation>,
    /// The model card (SageMaker Model Cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_card: Option<ModelCard>,
}

/// The CEL transition rule that keeps `spec.modelMetrics` (absent counting
/// as a value) while the stored object is Approved: approving a version
/// approves its evaluation too.
fn metrics_fixed_once_approved() -> String {
    format!(
        "!has(oldSelf.spec.approval) || !has(oldSelf.spec.approval.status) || oldSelf.spec.approval.status != 'Approved' || ({})",
        crate::common::unchanged_rule("spec", &["modelMetrics"])
    )
}

/// How a model is served.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.image) != has(self.algorithm)").message("set exactly one of inference.image and inference.algorithm"))]
pub struct InferenceSpec {
    /// The model artifact (SageMaker `ModelDataUrl`).
    pub model_data: StorageLocation,
    /// The built-in algorithm whose artifact this is; served by Kiln's runtime image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<BuiltinAlgorithm>,
    /// A serving image speaking the SageMaker inference contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// The framework, e.g. `pytorch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub framework: Option<String>,
    /// The framework's version, e.g. `2.11`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub framework_version: Option<String>,
    /// Request MIME types the model accepts (SageMaker `SupportedContentTypes`).
    #[serde(default)]
    #[schemars(extend("maxItems" = 10))]
    pub supported_content_types: Vec<String>,
    /// Response MIME types it produces (SageMaker `SupportedResponseMIMETypes`).
    #[serde(default)]
    #[schemars(extend("maxItems" = 10))]
    pub supported_response_types: Vec<String>,
    /// Environment of the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 48), transform = crate::common::env_list)]
    #[x_kube(
        validation = Rule::new(crate::common::ENV_NAMES_RULE).message(crate::common::ENV_NAMES_MESSAGE),
        validation = Rule::new(crate::common::ENV_VALUE_RULE).message(crate::common::ENV_VALUE_MESSAGE)
    )]
    pub env: crate::common::Environment,
}

/// Lineage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSourceLineage {
    /// The TrainingJob in this namespace that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub training_job: Option<String>,
    /// The Pipeline that registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub pipeline: Option<String>,
    /// Any other origin, as a URI (SageMaker `SourceUri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub uri: Option<String>,
}

/// Approval state and who set it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The decision.
    #[serde(default)]
    pub status: ApprovalStatus,
    /// Why (SageMaker `ApprovalDescription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Who decided, e.g. an e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub approved_by: Option<String>,
}

/// Approval decisions.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ApprovalStatus {
    /// Waiting for review.
    #[default]
    PendingManualApproval,
    /// May be deployed.
    Approved,
    /// Must not be deployed.
    Rejected,
}

/// Evaluation reports, as documents in storage plus headline numbers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelMetrics {
    /// Headline metrics, e.g. `validation:accuracy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50))]
    pub values: Vec<MetricValue>,
    /// Model quality statistics and constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_quality: Option<MetricsReport>,
    /// Data quality statistics and constraints (the drift baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_quality: Option<MetricsReport>,
    /// Bias report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<MetricsReport>,
    /// Explainability report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explainability: Option<MetricsReport>,
}

/// A pair of report documents.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    /// The statistics document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<StorageLocation>,
    /// The constraints document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<StorageLocation>,
}

/// Source-control metadata.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataProperties {
    /// The commit the model was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub commit_id: Option<String>,
    /// The repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub repository: Option<String>,
    /// The tool or person that built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub generated_by: Option<String>,
    /// The project it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub project_id: Option<String>,
}

/// A model card.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCard {
    /// The card's review state.
    #[serde(default)]
    pub status: ModelCardStatus,
    /// What the model is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overview: Option<ModelOverview>,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended_uses: Option<IntendedUses>,
    /// How it was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_details: Option<TrainingDetails>,
    /// How it was evaluated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20))]
    pub evaluations: Vec<Evaluation>,
    /// Ethical considerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub ethical_considerations: Option<String>,
    /// Caveats and recommendations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub caveats_and_recommendations: Option<String>,
}

/// Model card states.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ModelCardStatus {
    /// Being written.
    #[default]
    Draft,
    /// Waiting for review.
    PendingReview,
    /// Reviewed and accepted.
    Approved,
    /// No longer maintained.
    Archived,
}

/// The model card's overview.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelOverview {
    /// What the model does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Who owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub owner: Option<String>,
    /// Who built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub creator: Option<String>,
    /// The problem type, e.g. `Binary Classification`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub problem_type: Option<String>,
    /// The algorithm, e.g. `linear-learner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub algorithm: Option<String>,
}

/// Intended uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntendedUses {
    /// The purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub purpose: Option<String>,
    /// Intended uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub uses: Option<String>,
    /// Factors affecting the model's efficiency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub factors_affecting_efficiency: Option<String>,
    /// The risk rating.
    #[serde(default)]
    pub risk_rating: RiskRating,
    /// Why that rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub explanation: Option<String>,
}

/// Risk ratings.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RiskRating {
    /// High risk.
    High,
    /// Medium risk.
    Medium,
    /// Low risk.
    Low,
    /// Not assessed.
    #[default]
    Unknown,
}

/// Training details for the card.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingDetails {
    /// The training objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub objective: Option<String>,
    /// Observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub observations: Option<String>,
    /// Datasets used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20))]
    pub datasets: Vec<String>,
    /// Training metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50))]
    pub metrics: Vec<MetricValue>,
    /// Hyperparameters used.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hyperparameters: BTreeMap<String, String>,
}

/// One evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The evaluation's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Datasets evaluated on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20))]
    pub datasets: Vec<String>,
    /// Results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50))]
    pub metrics: Vec<MetricValue>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub notes: Option<String>,
}

/// The observed state of a ModelPackage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPackageStatus {
    /// The version within the group, from 1 (SageMaker `ModelPackageVersion`),
    /// allocated from the ModelPackageGroup's counter. Written by the group's
    /// controller only, once; it never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The SHA-256 of the artifact at `inference.modelData.uri` when the
    /// version was registered (`sha256:<hex>`); a changed artifact fails
    /// `Ready` instead of silently serving other weights. For a `.tar.gz`
    /// (or any single object) the digest of its bytes; for a prefix the
    /// digest of its `sha256sum` manifest (a line `<hex>  <relative key>` per
    /// object, sorted by key), which is what `kiln-runtime push` reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub artifact_digest: Option<String>,
    /// The artifact's size in bytes when it was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_size_bytes: Option<i64>,
    /// The latest check of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_artifact_check: Option<ArtifactCheck>,
    /// The summary state (SageMaker `ModelPackageStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ModelPackageState>,
    /// When the version was registered: numbered and its artifact checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_time: Option<Time>,
    /// The approval decision as last recorded from `spec.approval.status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_status: Option<ApprovalStatus>,
    /// Who made it, copied from `spec.approval.approvedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub approved_by: Option<String>,
    /// Why, copied from `spec.approval.description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub approval_description: Option<String>,
    /// When the approval status last changed (an Event records each change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_approval_change_time: Option<Time>,
    /// What the TrainingJob named in `spec.source.trainingJob` was when the
    /// version was registered: copied once, so it outlives the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<TrainingLineage>,
    /// Conditions: `Ready` (numbered, artifact checked and unchanged, group
    /// present), with `ArtifactVerified` and `ReferencesResolved` (the group
    /// and the source TrainingJob) beside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One check of the artifact: a pod `<package>-check-<number>` running
/// `kiln-runtime inspect`. Written to status before the pod is created, so
/// an operator that restarts finds the pod of a check under way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactCheck {
    /// The check's number, from 1.
    #[schemars(range(min = 1))]
    pub number: i64,
    /// The generation of the spec it was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it started.
    pub start_time: Time,
    /// When it finished; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// What it found; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ArtifactCheckResult>,
    /// The digest it computed (`sha256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub digest: Option<String>,
    /// What it said, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// Checks that failed in a row, this one included (0 once one passes):
    /// the next waits 1 minute after the first failure, doubling up to an hour.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub consecutive_failures: i32,
}

/// What a check of the artifact found.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ArtifactCheckResult {
    /// The artifact is there, readable, and has the registered digest.
    Verified,
    /// The artifact's bytes differ from the registered ones.
    Changed,
    /// Nothing is at the URI.
    NotFound,
    /// Something is there, but not a usable model (no readable `model.json`,
    /// a broken archive, another algorithm than `inference.algorithm`).
    Invalid,
    /// The check itself failed (the store, the network, credentials, the
    /// pod); tried again in a minute.
    Failed,
}

/// The TrainingJob a version came from, as it was when the version was registered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingLineage {
    /// The TrainingJob's name.
    #[schemars(length(min = 1, max = 253))]
    pub training_job: String,
    /// Its UID: a job deleted and created again under the same name is another run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    pub uid: Option<String>,
    /// Its hyperparameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100))]
    pub hyperparameters: BTreeMap<String, String>,
    /// Its input channels and where their data was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20))]
    pub inputs: Vec<LineageChannel>,
    /// The last value of each metric it reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50))]
    pub final_metrics: Vec<MetricValue>,
    /// Where it wrote its model; when this differs from
    /// `inference.modelData.uri`, the `ReferencesResolved` condition says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub model_artifact_uri: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

/// An input channel of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineageChannel {
    /// The channel's name, e.g. `train`.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Its data's URI.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
}

/// The summary state of a ModelPackage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ModelPackageState {
    /// Being registered: the artifact is checked and a version number assigned.
    Pending,
    /// Registered.
    Completed,
    /// Registration failed, or the artifact later changed or vanished; the
    /// `Ready` condition says why.
    Failed,
}
