//! `Pipeline`: a DAG of steps (SageMaker Pipelines, Argo Workflows, KFP).
//!
//! Steps create the other kinds (TrainingJob, TuningJob, ModelPackage,
//! Endpoint) or pods (processing), pass data through `{{ ... }}` references,
//! branch on conditions, are cached and retried. Each run of the DAG is an
//! execution, recorded in `status.executions` (newest first, `historyLimit`
//! kept). An execution starts when the Pipeline is created, at each `schedule`
//! tick, and whenever the annotation `kiln.dev/run` changes value.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ComputeResources, Environment, Placement, StorageLocation, list_map_by_name};
use crate::endpoint::EndpointSpec;
use crate::model_package::ApprovalStatus;
use crate::training_job::TrainingJobSpec;
use crate::tuning_job::TuningJobSpec;

/// The annotation whose change of value starts a new execution.
pub const RUN_ANNOTATION: &str = "kiln.dev/run";

/// The spec of a Pipeline. Changes apply to executions started afterwards.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    plural = "pipelines",
    shortname = "kpl",
    category = "kiln",
    namespaced,
    status = "PipelineStatus",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.lastExecution.state"
    ),
    printcolumn(
        name = "Steps",
        type_ = "integer",
        json_path = ".status.lastExecution.stepsSucceeded",
        description = "steps succeeded in the newest execution"
    ),
    printcolumn(
        name = "Executions",
        type_ = "integer",
        json_path = ".status.executionCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.steps.exists(t, t.name == d)))").message("every steps[].dependsOn entry must name a step of this pipeline"),
    validation = Rule::new("self.steps.all(s, !has(s.condition) || (s.condition.ifSteps + s.condition.elseSteps).all(d, self.steps.exists(t, t.name == d)))").message("condition.ifSteps and condition.elseSteps must name steps of this pipeline"),
)]
pub struct PipelineSpec {
    /// Parameters of an execution, referenced as `{{ parameters.<name> }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50), transform = list_map_by_name)]
    pub parameters: Vec<Parameter>,
    /// The steps. Order does not matter: `dependsOn` and references make the graph.
    #[schemars(extend("minItems" = 1, "maxItems" = 50), transform = list_map_by_name)]
    pub steps: Vec<Step>,
    /// Steps running at once in an execution (SageMaker `MaxParallelExecutionSteps`).
    #[serde(default = "default_parallel")]
    #[schemars(range(min = 1, max = 50))]
    pub max_parallel_steps: i32,
    /// Start executions on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Executions kept in status; older ones and their children are deleted.
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
}

fn default_parallel() -> i32 {
    10
}

fn default_history() -> i32 {
    10
}

/// A pipeline parameter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// The parameter's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// The parameter's type; values are checked against it when an execution starts.
    #[serde(rename = "type", default)]
    pub type_: ParameterType,
    /// The default value, written as a string (`"0.1"`, `"true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub default: Option<String>,
}

/// Parameter types.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ParameterType {
    /// Any string.
    #[default]
    String,
    /// A 64-bit integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true` or `false`.
    Boolean,
}

/// One step. Set exactly one of `processing`, `training`, `tuning`,
/// `registerModel`, `deploy`, `condition` and `fail`.
///
/// String fields of a step may hold references, replaced when the step starts:
/// `{{ parameters.<name> }}`, `{{ steps.<step>.modelArtifactUri }}`,
/// `{{ steps.<step>.metrics['<metric>'] }}`, `{{ steps.<step>.outputs.<name> }}`,
/// `{{ execution.id }}` and `{{ execution.startTime }}`. A reference to a step
/// adds an implicit dependency on it. Inside storage URIs, which admit no
/// whitespace, write references without spaces: `{{execution.id}}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.dependsOn) || !(self.name in self.dependsOn)").message("a step cannot depend on itself"))]
#[x_kube(validation = Rule::new("[has(self.processing), has(self.training), has(self.tuning), has(self.registerModel), has(self.deploy), has(self.condition), has(self.fail)].filter(x, x).size() == 1").message("a step sets exactly one of processing, training, tuning, registerModel, deploy, condition and fail"))]
pub struct Step {
    /// The step's name, unique in the pipeline.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 20), inner(length(min = 1, max = 63)))]
    pub depends_on: Option<Vec<String>>,
    /// Reuse the result of an earlier execution's identical step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Retry a failed step (SageMaker `RetryPolicies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Run a container over data (SageMaker `ProcessingStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<ProcessingStep>,
    /// Create a TrainingJob (SageMaker `TrainingStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingStep>,
    /// Create a TuningJob (SageMaker `TuningStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningStep>,
    /// Register a ModelPackage (SageMaker `RegisterModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_model: Option<RegisterModelStep>,
    /// Create or update an Endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployStep>,
    /// Branch (SageMaker `ConditionStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionStep>,
    /// Stop the execution as Failed with a message (SageMaker `FailStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailStep>,
}

/// Step caching.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// Whether a cached result may be reused.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How old a cached result may be. Unset: any age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expire_after_seconds: Option<i64>,
}

fn yes() -> bool {
    true
}

/// Step retries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: i32,
    /// Wait before the first retry.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 0, max = 86_400))]
    pub interval_seconds: i32,
    /// Each further wait is the previous one times this.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub backoff_rate: f64,
    /// Which failures are retried. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<FailureKind>,
}

fn default_interval() -> i32 {
    10
}

fn default_backoff() -> f64 {
    2.0
}

/// Failure kinds a retry policy can select.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum FailureKind {
    /// Capacity loss: a node or spot reclaim, an unschedulable pod.
    Capacity,
    /// The step's own code failed.
    Algorithm,
    /// A time limit passed.
    Timeout,
}

/// A processing step: a container with inputs and outputs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingStep {
    /// The image.
    #[schemars(length(min = 1, max = 255))]
    pub image: String,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: Environment,
    /// Data fetched to `/opt/ml/processing/input/<name>/` before the container starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 10), transform = list_map_by_name)]
    pub inputs: Vec<ProcessingIo>,
    /// Folders under `/opt/ml/processing/output/<name>/` uploaded after it exits 0;
    /// later steps read them as `{{ steps.<step>.outputs.<name> }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 10), transform = list_map_by_name)]
    pub outputs: Vec<ProcessingIo>,
    /// Replicas of the container.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// CPU, memory and GPUs per replica.
    #[serde(default)]
    pub resources: ComputeResources,
    /// Node selection.
    #[serde(default)]
    pub placement: Placement,
    /// Runtime limit.
    #[serde(default = "default_runtime")]
    #[schemars(range(min = 1, max = 604_800))]
    pub max_runtime_seconds: i64,
}

fn one() -> i32 {
    1
}

fn default_runtime() -> i64 {
    86_400
}

/// A processing input or output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingIo {
    /// The folder's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub name: String,
    /// Where the data comes from or goes to.
    pub location: StorageLocation,
}

/// A training step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingStep {
    /// The TrainingJob to create.
    pub spec: TrainingJobSpec,
}

/// A tuning step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningStep {
    /// The TuningJob to create.
    pub spec: TuningJobSpec,
}

/// A register-model step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterModelStep {
    /// The model group.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub group_name: String,
    /// The step (training or tuning) whose model is registered; a tuning step
    /// registers its best trial's model.
    #[schemars(length(min = 1, max = 63))]
    pub model_from_step: String,
    /// The approval status the new version starts with.
    #[serde(default)]
    pub approval_status: ApprovalStatus,
    /// The version's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// A deploy step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployStep {
    /// The Endpoint to create or update.
    #[schemars(length(min = 1, max = 63))]
    pub endpoint_name: String,
    /// Its spec. `model.trainingJob` may name a step: `{{ steps.<step>.trainingJobName }}`.
    pub spec: EndpointSpec,
    /// Wait until the Endpoint is Ready before the step succeeds.
    #[serde(default = "yes")]
    pub wait_for_ready: bool,
}

/// A condition step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionStep {
    /// A CEL expression over `parameters`, `steps` (each with `state`, `metrics`,
    /// `outputs`, `modelArtifactUri`) and `execution`, e.g.
    /// `steps.train.metrics['validation:accuracy'] >= 0.9 && parameters.deploy`.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
    /// Steps run when the expression is true; they wait for this step.
    #[serde(default)]
    #[schemars(extend("maxItems" = 20), inner(length(min = 1, max = 63)))]
    pub if_steps: Vec<String>,
    /// Steps run when it is false; the other branch is skipped.
    #[serde(default)]
    #[schemars(extend("maxItems" = 20), inner(length(min = 1, max = 63)))]
    pub else_steps: Vec<String>,
}

/// A fail step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailStep {
    /// The execution's failure message; references are resolved.
    #[schemars(length(min = 1, max = 4096))]
    pub message: String,
}

/// A schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// A cron expression with five fields, e.g. `0 3 * * *`.
    #[schemars(length(min = 9, max = 255))]
    pub cron: String,
    /// The IANA time zone the cron expression is read in.
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Pause the schedule.
    #[serde(default)]
    pub suspend: bool,
    /// What happens when a tick comes while an execution runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
}

fn utc() -> String {
    "UTC".into()
}

/// Overlapping executions.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Skip the tick.
    #[default]
    Forbid,
    /// Start another execution.
    Allow,
    /// Stop the running execution and start a new one.
    Replace,
}

/// The observed state of a Pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Executions started so far.
    #[serde(default)]
    pub execution_count: i64,
    /// The newest execution, in summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_execution: Option<ExecutionSummary>,
    /// Executions, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<Execution>,
    /// The value of the `kiln.dev/run` annotation that started the newest execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_request: Option<String>,
    /// Conditions: `SpecValid` (the graph has no cycle and references resolve), `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An execution in summary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    /// The execution's id.
    pub id: String,
    /// Its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ExecutionState>,
    /// Steps that succeeded.
    #[serde(default)]
    pub steps_succeeded: i32,
}

/// One execution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// The execution's id, unique within the pipeline.
    pub id: String,
    /// Its state (SageMaker `PipelineExecutionStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ExecutionState>,
    /// The parameter values it ran with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Each step's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
}

/// Execution states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExecutionState {
    /// Steps are running.
    Executing,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// A step failed.
    Failed,
    /// Every step that ran succeeded.
    Succeeded,
}

/// One step of an execution.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's name.
    pub name: String,
    /// Its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StepState>,
    /// Whether the result came from the cache, and from which execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_execution: Option<String>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: i32,
    /// The child object the step created, as `Kind/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

/// Step states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum StepState {
    /// Waiting for dependencies.
    Pending,
    /// Running.
    Executing,
    /// Done.
    Succeeded,
    /// Failed after its retries.
    Failed,
    /// Not run: the other branch of a condition, or the execution stopped.
    Skipped,
}
