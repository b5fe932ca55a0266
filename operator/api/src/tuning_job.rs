//! `TuningJob`: hyperparameter search over a TrainingJob template (SageMaker
//! `CreateHyperParameterTuningJob`, Katib `Experiment`). The operator creates
//! one TrainingJob per trial and records the best one.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::list_map_by_name;
use crate::training_job::TrainingJobSpec;

/// The spec of a TuningJob. Fixed once created, except `limits`, which may grow.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "TuningJob",
    plural = "tuningjobs",
    shortname = "tuj",
    category = "kiln",
    namespaced,
    status = "TuningJobStatus",
    printcolumn(name = "Succeeded", type_ = "string", json_path = ".status.conditions[?(@.type==\"Succeeded\")].status"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy.type"),
    printcolumn(name = "Completed", type_ = "integer", json_path = ".status.trainingJobCounts.completed"),
    printcolumn(name = "Best", type_ = "number", json_path = ".status.bestTrainingJob.objectiveValue"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a TuningJob's name must be a DNS label of at most 47 characters that starts with a letter: its trials are TrainingJobs named <name>-<index>"),
    validation = Rule::new(crate::common::unchanged_rule("spec", &["strategy", "objective", "additionalObjectives", "additionalMetrics", "parameterRanges", "earlyStopping", "completionCriteria", "trainingJobTemplate", "warmStart"])).message("a TuningJob can only change its limits: create a new TuningJob (warmStart can reuse this one's trials)").field_path(".spec"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.strategy.type != 'Hyperband' || has(self.strategy.hyperband)").message("strategy.hyperband is required when strategy.type is Hyperband"),
    validation = Rule::new("!has(self.strategy.hyperband) || self.strategy.type == 'Hyperband'").message("strategy.hyperband applies to strategy.type Hyperband only"),
    validation = Rule::new("!has(self.strategy.hyperband) || !has(self.trainingJobTemplate.spec.hyperparameters) || !(self.strategy.hyperband.resourceName in self.trainingJobTemplate.spec.hyperparameters)").message("Hyperband sets strategy.hyperband.resourceName itself for every trial: remove it from trainingJobTemplate.spec.hyperparameters"),
    validation = Rule::new("!has(self.strategy.hyperband) || (self.parameterRanges.integer.all(r, r.name != self.strategy.hyperband.resourceName) && self.parameterRanges.continuous.all(r, r.name != self.strategy.hyperband.resourceName) && self.parameterRanges.categorical.all(r, r.name != self.strategy.hyperband.resourceName))").message("Hyperband's resource (strategy.hyperband.resourceName) cannot also be a tuned range: remove its range"),
    validation = Rule::new("!has(self.additionalObjectives) || self.additionalObjectives.size() == 0 || self.strategy.type in ['Bayesian', 'Random']").message("additionalObjectives (a multi-objective search) take strategy.type Bayesian (ParEGO) or Random"),
    validation = Rule::new("!has(self.additionalObjectives) || self.additionalObjectives.all(o, o.metricName != self.objective.metricName)").message("additionalObjectives must not repeat objective.metricName"),
    validation = Rule::new("self.strategy.type != 'Grid' || (self.parameterRanges.continuous.size() == 0)").message("Grid search takes integer and categorical ranges only: turn continuous ranges into categorical values"),
    validation = Rule::new("self.parameterRanges.integer.size() + self.parameterRanges.continuous.size() + self.parameterRanges.categorical.size() > 0").message("parameterRanges needs at least one range to tune"),
    validation = Rule::new("!has(self.trainingJobTemplate.spec.hyperparameters) || self.parameterRanges.integer.all(r, !(r.name in self.trainingJobTemplate.spec.hyperparameters)) && self.parameterRanges.continuous.all(r, !(r.name in self.trainingJobTemplate.spec.hyperparameters)) && self.parameterRanges.categorical.all(r, !(r.name in self.trainingJobTemplate.spec.hyperparameters))").message("a tuned hyperparameter must not also be set in trainingJobTemplate.spec.hyperparameters"),
)]
pub struct TuningJobSpec {
    /// How trials are chosen (SageMaker `Strategy`).
    pub strategy: Strategy,
    /// The metric to optimize (SageMaker `HyperParameterTuningJobObjective`).
    pub objective: Objective,
    /// Further objectives searched at once: with them the search is
    /// multi-objective (ParEGO for Bayesian, or Random) and
    /// `status.paretoFront` lists the trials no other trial beats on every
    /// objective. `objective` stays the one `bestTrainingJob` and
    /// completion criteria read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 4))]
    pub additional_objectives: Vec<Objective>,
    /// Further metrics recorded for every trial (Katib `additionalMetricNames`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20))]
    pub additional_metrics: Vec<String>,
    /// The hyperparameters searched over (SageMaker `ParameterRanges`).
    pub parameter_ranges: ParameterRanges,
    /// Budgets (SageMaker `ResourceLimits`).
    #[serde(default)]
    pub limits: TuningLimits,
    /// Stop unpromising trials early (SageMaker `TrainingJobEarlyStoppingType`,
    /// Katib median stopping).
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// Stop the whole search before `limits.maxTrainingJobs` (SageMaker `TuningJobCompletionCriteria`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_criteria: Option<CompletionCriteria>,
    /// The TrainingJob each trial runs, with static hyperparameters. Tuned
    /// hyperparameters are added per trial.
    pub training_job_template: TrainingJobTemplate,
    /// Start from the trials of earlier TuningJobs (SageMaker `WarmStartConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStart>,
}

/// The search strategy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'Hyperband' || !has(self.hyperband)").message("strategy.hyperband applies to type Hyperband only"))]
pub struct Strategy {
    /// The strategy.
    #[serde(rename = "type")]
    pub type_: StrategyType,
    /// The seed of the strategy's random choices, for reproducible searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Hyperband settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperband: Option<Hyperband>,
}

/// Search strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum StrategyType {
    /// Independent random samples of the ranges.
    Random,
    /// Every combination of integer and categorical values, in order.
    Grid,
    /// Gaussian-process Bayesian optimisation with expected improvement.
    Bayesian,
    /// Tree-structured Parzen estimators (Optuna's default sampler, Katib `tpe`).
    #[serde(rename = "TPE")]
    Tpe,
    /// Successive halving over a resource (epochs) in brackets, asynchronous (ASHA).
    Hyperband,
}

/// Hyperband's resource schedule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minResource < self.maxResource").message("hyperband.minResource must be below hyperband.maxResource"))]
pub struct Hyperband {
    /// The hyperparameter that carries the resource, e.g. `epochs`.
    #[schemars(length(min = 1, max = 256))]
    pub resource_name: String,
    /// The smallest resource a trial gets (SageMaker `MinResource`).
    #[schemars(range(min = 1))]
    pub min_resource: i64,
    /// The largest resource a trial gets (SageMaker `MaxResource`).
    #[schemars(range(min = 2))]
    pub max_resource: i64,
    /// The fraction kept at each rung is 1/reductionFactor.
    #[serde(default = "default_reduction_factor")]
    #[schemars(range(min = 2, max = 10))]
    pub reduction_factor: i32,
}

fn default_reduction_factor() -> i32 {
    3
}

/// The objective metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// A metric the trials report, e.g. `validation:accuracy`.
    #[schemars(length(min = 1, max = 255))]
    pub metric_name: String,
    /// Whether larger or smaller is better.
    #[serde(rename = "type")]
    pub type_: ObjectiveType,
}

/// Optimisation direction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ObjectiveType {
    /// Larger is better.
    Maximize,
    /// Smaller is better.
    Minimize,
}

/// The ranges searched, by kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterRanges {
    /// Integer hyperparameters.
    #[serde(default)]
    #[schemars(extend("maxItems" = 30), transform = list_map_by_name)]
    pub integer: Vec<IntegerRange>,
    /// Real-valued hyperparameters.
    #[serde(default)]
    #[schemars(extend("maxItems" = 30), transform = list_map_by_name)]
    pub continuous: Vec<ContinuousRange>,
    /// Hyperparameters taking one of a list of values.
    #[serde(default)]
    #[schemars(extend("maxItems" = 30), transform = list_map_by_name)]
    pub categorical: Vec<CategoricalRange>,
}

/// How values are spread over a range.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Scaling {
    /// Logarithmic when the range spans more than two orders of magnitude, else linear.
    #[default]
    Auto,
    /// Uniform in the value.
    Linear,
    /// Uniform in log(value); needs min > 0.
    Logarithmic,
    /// Uniform in log(1 - value); needs 0 <= min < max < 1 (continuous only).
    ReverseLogarithmic,
}

/// An integer range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.min < self.max").message("integer range: min must be below max"),
    validation = Rule::new("self.scaling != 'Logarithmic' || self.min > 0").message("integer range: Logarithmic scaling needs min > 0"),
    validation = Rule::new("self.scaling != 'ReverseLogarithmic'").message("integer range: ReverseLogarithmic applies to continuous ranges only"),
)]
pub struct IntegerRange {
    /// The hyperparameter's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The smallest value, inclusive.
    pub min: i64,
    /// The largest value, inclusive.
    pub max: i64,
    /// How values are spread.
    #[serde(default)]
    pub scaling: Scaling,
}

/// A real-valued range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("double(self.min) < double(self.max)").message("continuous range: min must be below max"),
    validation = Rule::new("self.scaling != 'Logarithmic' || double(self.min) > 0.0").message("continuous range: Logarithmic scaling needs min > 0"),
    validation = Rule::new("self.scaling != 'ReverseLogarithmic' || (double(self.min) >= 0.0 && double(self.max) < 1.0)").message("continuous range: ReverseLogarithmic scaling needs 0 <= min and max < 1"),
)]
pub struct ContinuousRange {
    /// The hyperparameter's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The smallest value, inclusive, as a decimal string such as `"0.001"` or
    /// `"1e-3"` (SageMaker `MinValue`, Katib `min`): no floating-point value
    /// sits in a spec, so what was written is what is read back.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))([eE][+-]?[0-9]+)?$")
    )]
    pub min: String,
    /// The largest value, inclusive (SageMaker `MaxValue`).
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))([eE][+-]?[0-9]+)?$")
    )]
    pub max: String,
    /// How values are spread.
    #[serde(default)]
    pub scaling: Scaling,
}

/// A categorical range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoricalRange {
    /// The hyperparameter's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The values to choose from, as strings.
    #[schemars(extend("minItems" = 1, "maxItems" = 30, "x-kubernetes-list-type" = "set"))]
    pub values: Vec<String>,
}

/// Budgets of a search.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxParallelTrainingJobs <= self.maxTrainingJobs").message("limits.maxParallelTrainingJobs cannot exceed limits.maxTrainingJobs"))]
pub struct TuningLimits {
    /// Trials in all (SageMaker `MaxNumberOfTrainingJobs`).
    #[serde(default = "default_max_jobs")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_training_jobs: i32,
    /// Trials running at once (SageMaker `MaxParallelTrainingJobs`).
    #[serde(default = "default_parallel")]
    #[schemars(range(min = 1, max = 100))]
    pub max_parallel_training_jobs: i32,
    /// Failed trials tolerated before the search fails (Katib `maxFailedTrialCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failed_training_jobs: Option<i32>,
    /// Wall-clock limit of the whole search (SageMaker `MaxRuntimeInSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 120, max = 15_552_000))]
    pub max_runtime_seconds: Option<i64>,
}

impl Default for TuningLimits {
    fn default() -> Self {
        Self {
            max_training_jobs: default_max_jobs(),
            max_parallel_training_jobs: default_parallel(),
            max_failed_training_jobs: None,
            max_runtime_seconds: None,
        }
    }
}

fn default_max_jobs() -> i32 {
    10
}

fn default_parallel() -> i32 {
    1
}

/// Early stopping of trials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopping {
    /// The rule applied to intermediate objective values.
    #[serde(default, rename = "type")]
    pub type_: EarlyStoppingType,
    /// Completed trials needed before any trial is stopped.
    #[serde(default = "default_min_trials")]
    #[schemars(range(min = 1, max = 100))]
    pub min_trials: i32,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            type_: EarlyStoppingType::None,
            min_trials: default_min_trials(),
        }
    }
}

fn default_min_trials() -> i32 {
    3
}

/// Early-stopping rules.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum EarlyStoppingType {
    /// Every trial runs to the end (SageMaker `Off`; spelled `None` here
    /// because YAML 1.1 reads a plain `Off` as the boolean false).
    #[default]
    None,
    /// Stop a trial whose objective at a step is worse than the median of
    /// completed trials at the same step (SageMaker `Auto`, Katib median stopping).
    Median,
}

/// When the search stops before its budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionCriteria {
    /// Stop when a trial reaches this objective value (SageMaker
    /// `TargetObjectiveMetricValue`, Katib `goal`), as a decimal string such as `"0.95"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))([eE][+-]?[0-9]+)?$")
    )]
    pub target_objective_value: Option<String>,
    /// Stop after this many trials in a row without a better objective (SageMaker `BestObjectiveNotImproving`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_trials_without_improvement: Option<i32>,
}

/// The TrainingJob a trial runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobTemplate {
    /// Labels and annotations copied to every trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The trial's spec; tuned hyperparameters are merged into `spec.hyperparameters`.
    pub spec: TrainingJobSpec,
}

/// Labels and annotations for generated objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Warm start from earlier searches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmStart {
    /// TuningJobs in this namespace whose trials seed this search.
    #[schemars(extend("minItems" = 1, "maxItems" = 5), transform = list_map_by_name)]
    pub parents: Vec<crate::common::LocalObjectReference>,
    /// What the parents share with this search.
    #[serde(rename = "type")]
    pub type_: WarmStartType,
}

/// Warm-start types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WarmStartType {
    /// Same data and algorithm: parent trials count as observations.
    IdenticalDataAndAlgorithm,
    /// Different data or algorithm: parent trials only shape the prior.
    TransferLearning,
}

/// The observed state of a TuningJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningJobStatus {
    /// The summary state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TuningJobState>,
    /// Conditions. `Succeeded` is the summary `kubectl wait
    /// --for=condition=Succeeded` targets: Unknown while trials run, then
    /// True, or False with the reason. Beside it: `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Trials by outcome (SageMaker `TrainingJobStatusCounters`).
    #[serde(default)]
    pub training_job_counts: TrainingJobCounts,
    /// The index the next trial gets (its TrainingJob is `<tuning job>-<index>`,
    /// from 1): a restarted operator never creates a trial twice.
    #[serde(default)]
    pub next_trial_index: i32,
    /// The newest trials, at most 100, with their suggestion and outcome: the
    /// history a restarted strategy resumes from (older trials are counted in
    /// `trainingJobCounts` and their TrainingJobs keep their own results).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 100, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub trials: Vec<TrialRecord>,
    /// The best trial so far (SageMaker `BestTrainingJob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_training_job: Option<TrialSummary>,
    /// With `additionalObjectives`: the recorded trials on the Pareto front
    /// (no other trial is at least as good on every objective and better on
    /// one), at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50))]
    pub pareto_front: Vec<ParetoTrial>,
    /// When the search started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the search ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Why the search failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The summary state of a TuningJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TuningJobState {
    /// Trials are running.
    InProgress,
    /// The search ended by budget or completion criteria.
    Completed,
    /// Too many trials failed, or the spec is invalid.
    Failed,
    /// The search was stopped.
    Stopped,
}

/// Trials by outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobCounts {
    /// Trials that completed.
    #[serde(default)]
    pub completed: i32,
    /// Trials running.
    #[serde(default)]
    pub in_progress: i32,
    /// Trials that failed with an error worth retrying (infrastructure).
    #[serde(default)]
    pub retryable_error: i32,
    /// Trials that failed for good (bad input, algorithm error).
    #[serde(default)]
    pub non_retryable_error: i32,
    /// Trials stopped by early stopping.
    #[serde(default)]
    pub early_stopped: i32,
    /// Trials stopped by the user or the end of the search.
    #[serde(default)]
    pub stopped: i32,
}

/// A trial's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialSummary {
    /// The TrainingJob's name.
    pub name: String,
    /// The tuned hyperparameters of the trial.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    /// The final objective value.
    pub objective_value: f64,
    /// Where the trial's model artifact was written (its TrainingJob's
    /// `modelArtifactUri`), for a ModelPackage or an Endpoint to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_artifact_uri: Option<String>,
}

/// A trial on the Pareto front.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParetoTrial {
    /// The TrainingJob's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The tuned hyperparameters of the trial.
    #[serde(default)]
    pub hyperparameters: BTreeMap<String, String>,
    /// Its value of every objective, by metric name.
    #[serde(default)]
    pub objective_values: BTreeMap<String, f64>,
}

/// One trial as the tuning job records it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialRecord {
    /// The trial's index, from 1.
    #[schemars(range(min = 1))]
    pub index: i32,
    /// Its TrainingJob's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The hyperparameters the strategy suggested.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hyperparameters: BTreeMap<String, String>,
    /// Its state: `InProgress`, `Completed`, `Failed` (the TrainingJob
    /// failed, or completed without reporting the objective metric),
    /// `EarlyStopped` (early stopping), `Stopped` (the end of the search, or
    /// its TrainingJob was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub state: Option<String>,
    /// When its TrainingJob was created; unset until then. A trial recorded
    /// without one has its TrainingJob created by the next reconcile, so an
    /// operator that stops between recording a trial and creating it neither
    /// loses nor duplicates the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// The trial whose configuration this one continues at a larger
    /// resource (Hyperband's promotions), by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub promoted_from: Option<i32>,
    /// The objective's final value, once reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_value: Option<f64>,
    /// The additional objectives' final values, by metric name
    /// (multi-objective searches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 4))]
    pub additional_objective_values: BTreeMap<String, f64>,
    /// The budget it ran to (epochs for Hyperband and ASHA), when the strategy allocates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<i64>,
}
