//! `PipelineRun`: one execution of a [`Pipeline`](crate::Pipeline)
//! (SageMaker `PipelineExecution`, Tekton's PipelineRun, an Argo Workflow).
//!
//! A user creates one with parameter values (`kubectl create -f`, or
//! `generateName` for a fresh name each time); the schedule of a Pipeline
//! creates them too. The run copies the Pipeline's spec into its status when
//! it starts, so editing the Pipeline never changes a run in progress, and a
//! restarted operator finds everything it needs in the run: the spec it ran,
//! each step's state and attempts, the children it created by UID, and the
//! outputs later steps read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ChildReference, LocalObjectReference, list_map_by_name};
use crate::pipeline::PipelineSpec;

/// The spec of a PipelineRun. Only `stop` changes after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "PipelineRun",
    plural = "pipelineruns",
    shortname = "kplr",
    category = "kiln",
    namespaced,
    status = "PipelineRunStatus",
    printcolumn(
        name = "Pipeline",
        type_ = "string",
        json_path = ".spec.pipelineRef.name"
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason"
    ),
    printcolumn(
        name = "Steps",
        type_ = "integer",
        json_path = ".status.stepsSucceeded",
        description = "steps succeeded"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("self.spec.pipelineRef == oldSelf.spec.pipelineRef").message("spec.pipelineRef cannot change: create a new PipelineRun").field_path(".spec.pipelineRef"),
    validation = Rule::new(crate::common::unchanged_rule("spec", &["parameters"])).message("spec.parameters cannot change: create a new PipelineRun").field_path(".spec.parameters"),
    validation = Rule::new("!oldSelf.spec.stop || self.spec.stop").message("a stopped PipelineRun cannot be resumed: create a new PipelineRun").field_path(".spec.stop"),
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    /// The Pipeline to run, in this namespace.
    pub pipeline_ref: LocalObjectReference,
    /// Values of the Pipeline's parameters; a parameter left out takes its
    /// default. Each value is checked against the parameter's type when the
    /// run starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50), transform = list_map_by_name)]
    pub parameters: Vec<ParameterValue>,
    /// Stop the run (SageMaker `StopPipelineExecution`): running children are
    /// stopped, steps not started are skipped, and the run ends `Stopped`.
    #[serde(default)]
    pub stop: bool,
}

/// A parameter's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterValue {
    /// The parameter's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// The value, as a string (`"0.1"`, `"true"`).
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// The observed state of a PipelineRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    /// Conditions. `Succeeded` is the summary `kubectl wait
    /// --for=condition=Succeeded` targets: Unknown while the run is in
    /// progress, then True, or False with the reason (`StepFailed`,
    /// `Stopped`, `InvalidSpec`, `ReferenceNotFound`) and what happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The run's state, derived from its conditions (SageMaker
    /// `PipelineExecutionStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The Pipeline's generation the run copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_generation: Option<i64>,
    /// The Pipeline's spec as the run copied it when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<PipelineSpec>,
    /// Every parameter's value in this run, defaults included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50), transform = list_map_by_name)]
    pub parameters: Vec<ParameterValue>,
    /// Steps that succeeded.
    #[serde(default)]
    pub steps_succeeded: i32,
    /// Each step's state, in the order the steps started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50), transform = list_map_by_name)]
    pub steps: Vec<StepStatus>,
}

/// Run states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunState {
    /// Steps are running.
    Executing,
    /// Being stopped.
    Stopping,
    /// Stopped by `spec.stop`.
    Stopped,
    /// A step failed after its retries, or the run could not start.
    Failed,
    /// Every step that ran succeeded.
    Succeeded,
}

/// One step of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StepState>,
    /// Attempts made (retries included).
    #[serde(default)]
    pub attempts: i32,
    /// The run whose identical step's result was reused, when the cache hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_run: Option<String>,
    /// The object the step's current attempt created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildReference>,
    /// What later steps read: `modelArtifactUri`, `trainingJobName`,
    /// `modelPackageName`, `metrics['<metric>']`, `outputs.<name>`, each
    /// resolved to a string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 64), transform = list_map_by_name)]
    pub outputs: Vec<StepOutput>,
    /// For a condition step, the branch taken: `true` runs `ifSteps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_result: Option<bool>,
    /// Why the step failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// A resolved output of a step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepOutput {
    /// The reference's path after `steps.<step>.`, e.g. `modelArtifactUri`
    /// or `metrics['validation:accuracy']`.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Its value.
    #[schemars(length(max = 4096))]
    pub value: String,
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
    /// Not run: the other branch of a condition, or the run stopped.
    Skipped,
}
