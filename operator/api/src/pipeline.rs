//! `Pipeline`: a template of ML workflow steps (SageMaker Pipelines, Argo
//! Workflows, KFP, Tekton's Pipeline); each execution of it is a
//! [`PipelineRun`](crate::PipelineRun).
//!
//! A step creates another kind (TrainingJob, TuningJob, ModelPackage,
//! Endpoint) or pods (processing), passes data on through `{{ ... }}`
//! references, branches on conditions, is cached and retried. A PipelineRun
//! starts when a user creates one and at each `schedule` tick (CronJob's
//! model: `lastScheduleTime`, `concurrencyPolicy`, `startingDeadlineSeconds`);
//! finished runs beyond the history limits are deleted with their children.
//!
//! Step bodies are templates, not typed specs: `training.spec` is a
//! TrainingJob spec, `deploy.spec` an Endpoint spec, and so on, but any string
//! or number in them may be a reference (`replicas: "{{ parameters.replicas }}"`).
//! The API server checks only their shape here; when the step starts, the
//! operator resolves the references and validates the child with a
//! server-side dry run, and a child the API server refuses fails the run with
//! the API server's own message. This keeps the Pipeline CRD small and lets a
//! pipeline use every field of the kinds it creates.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::list_map_by_name;
use crate::model_package::ApprovalStatus;

/// A step body: an object the operator templates and validates when the step
/// starts (see the module docs). The schema keeps its fields as written.
pub type StepBody = serde_json::Map<String, serde_json::Value>;

/// The OpenAPI schema of a [`StepBody`]: any object.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The spec of a Pipeline. Changes apply to runs started afterwards: a
/// PipelineRun copies the spec when it starts.
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
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule.cron"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
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
    validation = Rule::new("self.steps.all(s, !has(s.registerModel) || self.steps.exists(t, t.name == s.registerModel.modelFromStep && (has(t.training) || has(t.tuning))))").message("registerModel.modelFromStep must name a training or tuning step of this pipeline"),
)]
pub struct PipelineSpec {
    /// Parameters of a run, referenced as `{{ parameters.<name> }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50), transform = list_map_by_name)]
    pub parameters: Vec<Parameter>,
    /// The steps. Order does not matter: `dependsOn` and references make the graph.
    #[schemars(extend("minItems" = 1, "maxItems" = 50), transform = list_map_by_name)]
    pub steps: Vec<Step>,
    /// Steps running at once in a run (SageMaker `MaxParallelExecutionSteps`).
    #[serde(default = "default_parallel")]
    #[schemars(range(min = 1, max = 50))]
    pub max_parallel_steps: i32,
    /// Start runs on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Succeeded runs kept; older ones are deleted with their children.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed or stopped runs kept; older ones are deleted with their children.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
}

fn default_parallel() -> i32 {
    10
}

fn default_successful_history() -> i32 {
    10
}

fn default_failed_history() -> i32 {
    5
}

/// A pipeline parameter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.default) || self.type != 'Integer' || self.default.matches('^[-+]?[0-9]+$')").message("parameters[].default must be an integer, such as \"3\", for a parameter of type Integer").field_path(".default"),
    validation = Rule::new("!has(self.default) || self.type != 'Float' || self.default.matches('^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$')").message("parameters[].default must be a number, such as \"0.05\", for a parameter of type Float").field_path(".default"),
    validation = Rule::new("!has(self.default) || self.type != 'Boolean' || self.default in ['true', 'false']").message("parameters[].default must be \"true\" or \"false\" for a parameter of type Boolean").field_path(".default"),
)]
pub struct Parameter {
    /// The parameter's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// The parameter's type; a run's values are checked against it.
    #[serde(rename = "type", default)]
    pub type_: ParameterType,
    /// The default value, written as a string (`"0.1"`, `"true"`). Unset: a
    /// run must give a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub default: Option<String>,
    /// What the parameter means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
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
/// Strings in a step may hold references, replaced when the step starts:
/// `{{ parameters.<name> }}`, `{{ steps.<step>.modelArtifactUri }}`,
/// `{{ steps.<step>.trainingJobName }}`, `{{ steps.<step>.metrics['<metric>'] }}`,
/// `{{ steps.<step>.outputs.<name> }}`, `{{ run.name }}` and
/// `{{ run.startTime }}`. A string that is one reference and nothing else
/// takes the referenced value's type (so `replicas: "{{ parameters.replicas }}"`
/// becomes a number). A reference to a step adds an implicit dependency on it.
/// Inside storage URIs, which admit no whitespace, write references without
/// spaces: `{{run.name}}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.dependsOn) || !(self.name in self.dependsOn)").message("a step cannot depend on itself"))]
#[x_kube(validation = Rule::new("[has(self.processing), has(self.training), has(self.tuning), has(self.registerModel), has(self.deploy), has(self.condition), has(self.fail)].filter(x, x).size() == 1").message("a step sets exactly one of processing, training, tuning, registerModel, deploy, condition and fail"))]
#[x_kube(validation = Rule::new("!(has(self.fail) || has(self.condition)) || (!has(self.cache) && !has(self.retry))").message("condition and fail steps take neither cache nor retry: remove them"))]
#[x_kube(validation = Rule::new("!has(self.condition) || !(self.name in self.condition.ifSteps + self.condition.elseSteps)").message("a condition step cannot gate itself"))]
#[x_kube(validation = Rule::new("!has(self.condition) || self.condition.ifSteps.all(x, !(x in self.condition.elseSteps))").message("a step cannot be in both condition.ifSteps and condition.elseSteps"))]
pub struct Step {
    /// The step's name, unique in the pipeline.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 20, "x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 63)))]
    pub depends_on: Option<Vec<String>>,
    /// Reuse the result of an earlier run's identical step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Retry a failed step (SageMaker `RetryPolicies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Run a container over data (SageMaker `ProcessingStep`): `image`,
    /// `command`, `args`, `env`, `inputs` and `outputs` (each `{name,
    /// location: {uri, secretRef}}`; inputs are fetched to
    /// `/opt/ml/processing/input/<name>/`, outputs uploaded from
    /// `/opt/ml/processing/output/<name>/` and read by later steps as
    /// `{{ steps.<step>.outputs.<name> }}`), `replicas`, `resources`,
    /// `placement` and `maxRuntimeSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub processing: Option<StepBody>,
    /// Create a TrainingJob (SageMaker `TrainingStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingStep>,
    /// Create a TuningJob (SageMaker `TuningStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningStep>,
    /// Register a ModelPackage version (SageMaker `RegisterModel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_model: Option<RegisterModelStep>,
    /// Create or update an Endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployStep>,
    /// Branch (SageMaker `ConditionStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionStep>,
    /// Stop the run as Failed with a message (SageMaker `FailStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailStep>,
}

impl Step {
    /// Which of the step kinds it sets: `processing`, `training`, `tuning`,
    /// `registerModel`, `deploy`, `condition` or `fail`.
    pub fn kind(&self) -> &'static str {
        if self.processing.is_some() {
            "processing"
        } else if self.training.is_some() {
            "training"
        } else if self.tuning.is_some() {
            "tuning"
        } else if self.register_model.is_some() {
            "registerModel"
        } else if self.deploy.is_some() {
            "deploy"
        } else if self.condition.is_some() {
            "condition"
        } else {
            "fail"
        }
    }
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
    /// Each further wait is the previous one times this (SageMaker `BackoffRate`).
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 10))]
    pub backoff_factor: i32,
    /// Which failures are retried (SageMaker `ExceptionType`). Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 3, "x-kubernetes-list-type" = "set"))]
    pub failure_kinds: Vec<FailureKind>,
}

fn default_interval() -> i32 {
    10
}

fn default_backoff() -> i32 {
    2
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

/// A training step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingStep {
    /// The spec of the TrainingJob to create, with references.
    #[schemars(schema_with = "any_object")]
    pub spec: StepBody,
}

/// A tuning step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningStep {
    /// The spec of the TuningJob to create, with references.
    #[schemars(schema_with = "any_object")]
    pub spec: StepBody,
}

/// A register-model step: a new version of a ModelPackageGroup.
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
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub endpoint_name: String,
    /// Its spec, with references: `{{ steps.<step>.modelArtifactUri }}` or a
    /// registered version's `{{ steps.<step>.modelPackageName }}`.
    #[schemars(schema_with = "any_object")]
    pub spec: StepBody,
    /// Wait until the Endpoint is Ready before the step succeeds.
    #[serde(default = "yes")]
    pub wait_for_ready: bool,
}

/// A condition step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionStep {
    /// A CEL expression over `parameters`, `steps` (each with `state`, `metrics`,
    /// `outputs`, `modelArtifactUri`) and `run`, e.g.
    /// `steps.train.metrics['validation:accuracy'] >= 0.9 && parameters.deploy`.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
    /// Steps run when the expression is true; they wait for this step.
    #[serde(default)]
    #[schemars(extend("maxItems" = 20, "x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 63)))]
    pub if_steps: Vec<String>,
    /// Steps run when it is false; the other branch is skipped.
    #[serde(default)]
    #[schemars(extend("maxItems" = 20, "x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 63)))]
    pub else_steps: Vec<String>,
}

/// A fail step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailStep {
    /// The run's failure message; references are resolved.
    #[schemars(length(min = 1, max = 4096))]
    pub message: String,
}

/// A cron field: numbers, names (`MON`, `JAN`), `*`, ranges, steps and lists.
const CRON_FIELD: &str =
    "([*]|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,([*]|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*";

/// A schedule: runs are created CronJob-style.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(format!("self.cron.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{f} +{f} +{f} +{f} +{f})$')", f = CRON_FIELD)).message("schedule.cron must be five cron fields (minute hour day-of-month month day-of-week), such as \"0 3 * * *\", or @daily, @hourly, @weekly, @monthly, @yearly").field_path(".cron"),
)]
pub struct Schedule {
    /// A cron expression with five fields, e.g. `0 3 * * *`, or `@daily`.
    #[schemars(length(min = 1, max = 255))]
    pub cron: String,
    /// The IANA time zone the cron expression is read in, e.g. `Europe/Berlin`.
    #[serde(default = "utc")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^(UTC|Local|[A-Za-z]+(/[A-Za-z0-9_+-]+){0,2}|Etc/GMT[+-][0-9]{1,2})$")
    )]
    pub time_zone: String,
    /// Pause the schedule; runs in progress go on.
    #[serde(default)]
    pub suspend: bool,
    /// What happens when a tick comes while a run of this pipeline runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A tick missed by more than this (the operator was down) is skipped.
    /// Unset: a missed tick starts a run late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub starting_deadline_seconds: Option<i64>,
}

fn utc() -> String {
    "UTC".into()
}

/// Overlapping runs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Skip the tick.
    #[default]
    Forbid,
    /// Start another run.
    Allow,
    /// Stop the running run and start a new one.
    Replace,
}

/// The observed state of a Pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Conditions: `Ready` (the graph has no cycle and every reference
    /// resolves; False with reason `InvalidSpec` and what to fix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last tick at which the schedule created a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the newest run that succeeded ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// The runs of this pipeline still in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 100, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub active: Vec<crate::common::ChildReference>,
}
