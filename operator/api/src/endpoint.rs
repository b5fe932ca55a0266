//! `Endpoint`: a served model (SageMaker Model + EndpointConfig + Endpoint,
//! KServe `InferenceService`). Production variants share traffic by weight,
//! shadow variants get a copy of it; the operator creates a Deployment and a
//! Service per variant and the traffic router in front of them.
//!
//! The core API has `endpoints` too: address this kind as `kendpoint`, `kep`
//! or `endpoints.kiln.dev` (`kubectl get kep`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ComputeResources, Environment, Placement, StorageLocation, list_map_by_name};
use crate::training_job::BuiltinAlgorithm;

/// The spec of an Endpoint. Every field may change: a change rolls out with
/// `deployment.strategy`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "Endpoint",
    plural = "endpoints",
    shortname = "kep",
    shortname = "kendpoint",
    category = "kiln",
    namespaced,
    status = "EndpointStatus",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas", description = "ready serving replicas over all variants"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("an Endpoint's name must be a DNS label of at most 63 characters that starts with a letter: it names the endpoint's Service"),
    validation = Rule::new("self.spec.mode == oldSelf.spec.mode").message("an Endpoint's mode cannot change: create a new Endpoint").field_path(".spec.mode"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.variants.exists(v, v.initialWeight > 0)").message("at least one variant needs initialWeight above 0"),
    validation = Rule::new("(self.mode == 'Async') == has(self.async)").message("set async exactly when mode is Async"),
    validation = Rule::new("self.mode != 'Serverless' || self.variants.all(v, has(v.serverless))").message("every variant of a Serverless endpoint needs serverless settings"),
    validation = Rule::new("self.mode == 'Serverless' || self.variants.all(v, !has(v.serverless))").message("variant.serverless applies to mode Serverless only"),
    validation = Rule::new("self.shadowVariants.all(s, !self.variants.exists(v, v.name == s.name))").message("a shadow variant cannot share a name with a production variant"),
)]
pub struct EndpointSpec {
    /// How requests are served.
    #[serde(default)]
    pub mode: EndpointMode,
    /// Production variants: each gets `initialWeight / sum of weights` of the
    /// traffic (SageMaker `ProductionVariants`).
    #[schemars(extend("minItems" = 1, "maxItems" = 10), transform = list_map_by_name)]
    pub variants: Vec<Variant>,
    /// Variants that receive a copy of `samplingPercent` of the traffic; their
    /// answers are recorded, never returned (SageMaker `ShadowProductionVariants`).
    #[serde(default)]
    #[schemars(extend("maxItems" = 5), transform = list_map_by_name)]
    pub shadow_variants: Vec<ShadowVariant>,
    /// Record requests and responses (SageMaker `DataCaptureConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_capture: Option<DataCapture>,
    /// Asynchronous inference settings; required when `mode` is `Async` (SageMaker `AsyncInferenceConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#async: Option<AsyncConfig>,
    /// How a change of variants rolls out (SageMaker `DeploymentConfig`).
    #[serde(default)]
    pub deployment: DeploymentConfig,
    /// Dynamic batching of concurrent requests on each replica (KServe `batcher`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Requests taking longer are answered with 504.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub request_timeout_seconds: i32,
}

fn default_timeout() -> i32 {
    60
}

/// How an endpoint serves.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum EndpointMode {
    /// Always-on replicas answer synchronously.
    #[default]
    RealTime,
    /// Replicas scale with concurrency, down to zero when idle; the first request
    /// after idling waits for a cold start.
    Serverless,
    /// Requests are queued, answered into `async.output`, and polled by the client.
    Async,
}

/// A production variant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (self.autoscaling.minReplicas <= self.replicas && self.replicas <= self.autoscaling.maxReplicas)").message("variant.replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("self.name != 'router'").message("a variant cannot be named router: <endpoint>-router is the name of the endpoint's traffic router").field_path(".name"))]
pub struct Variant {
    /// The variant's name (SageMaker `VariantName`), used in metrics and in the
    /// `X-Kiln-Target-Variant` header that pins a request to it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What the variant serves.
    pub model: ModelSource,
    /// Serving replicas (SageMaker `InitialInstanceCount`). With autoscaling, the start value.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// The share of traffic, relative to the other variants' weights (SageMaker
    /// `InitialVariantWeight`), as an integer: weights 9 and 1 send 90% and 10%.
    #[serde(default = "weight_one")]
    #[schemars(range(min = 0, max = 1000))]
    pub initial_weight: i32,
    /// CPU, memory and GPUs per replica (SageMaker `InstanceType`).
    #[serde(default)]
    pub resources: ComputeResources,
    /// Node selection.
    #[serde(default)]
    pub placement: Placement,
    /// Serverless settings (SageMaker `ServerlessConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serverless: Option<ServerlessConfig>,
    /// Scaling on load (SageMaker Application Auto Scaling, KServe `minReplicas`/`maxReplicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// How the router picks a replica (SageMaker `RoutingConfig`).
    #[serde(default)]
    pub routing_strategy: RoutingStrategy,
    /// Time allowed to download the model (SageMaker `ModelDataDownloadTimeoutInSeconds`).
    #[serde(default = "default_download_timeout")]
    #[schemars(range(min = 60, max = 3600))]
    pub model_download_timeout_seconds: i32,
    /// Time allowed from container start to a passing `/ping` (SageMaker
    /// `ContainerStartupHealthCheckTimeoutInSeconds`).
    #[serde(default = "default_download_timeout")]
    #[schemars(range(min = 60, max = 3600))]
    pub startup_health_check_timeout_seconds: i32,
}

fn one() -> i32 {
    1
}

fn weight_one() -> i32 {
    1
}

fn default_download_timeout() -> i32 {
    600
}

/// What a variant serves. Set exactly one of `modelPackage`, `trainingJob` and `modelDataUri`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.modelPackage), has(self.trainingJob), has(self.modelData)].filter(x, x).size() == 1").message("set exactly one of model.modelPackage, model.trainingJob and model.modelData"),
    validation = Rule::new("!has(self.modelData) || has(self.image) || has(self.algorithm)").message("model.modelData needs model.image or model.algorithm to say what serves it"),
    validation = Rule::new("!(has(self.image) && has(self.algorithm))").message("set at most one of model.image and model.algorithm"),
)]
pub struct ModelSource {
    /// A registered model: a ModelPackage by name, or the newest approved version of a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_package: Option<ModelPackageRef>,
    /// The model a TrainingJob in this namespace produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub training_job: Option<String>,
    /// A model artifact in storage (SageMaker `ModelDataUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_data: Option<StorageLocation>,
    /// The built-in algorithm whose artifact `modelData` holds; served by Kiln's runtime image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<BuiltinAlgorithm>,
    /// Your own serving image speaking the SageMaker inference contract (port
    /// 8080, `/ping`, `/invocations`), started with the argument `serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// Environment variables of the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 48), transform = crate::common::env_list)]
    #[x_kube(
        validation = Rule::new(crate::common::ENV_NAMES_RULE).message(crate::common::ENV_NAMES_MESSAGE),
        validation = Rule::new(crate::common::ENV_VALUE_RULE).message(crate::common::ENV_VALUE_MESSAGE)
    )]
    pub env: Environment,
    /// One model per replica, or many models loaded on demand (SageMaker `Mode`).
    #[serde(default)]
    pub hosting: HostingMode,
}

/// A reference to a registered model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.group)").message("set exactly one of modelPackage.name and modelPackage.group"))]
#[x_kube(validation = Rule::new("!has(self.version) || has(self.group)").message("modelPackage.version needs modelPackage.group"))]
pub struct ModelPackageRef {
    /// A ModelPackage by name; it must be Approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// A ModelPackageGroup: the variant serves `version`, or, without it,
    /// follows the group's newest Approved version (a new approval rolls out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub group: Option<String>,
    /// A version of `group`; it must be Approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
}

/// Single- or multi-model hosting.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum HostingMode {
    /// One model per replica.
    #[default]
    SingleModel,
    /// The SageMaker multi-model `/models` API: `modelData` is a prefix of model
    /// artifacts, loaded on first use and evicted least-recently-used.
    MultiModel,
}

/// Serverless capacity of a variant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provisionedConcurrency <= self.maxConcurrency").message("serverless.provisionedConcurrency cannot exceed serverless.maxConcurrency"))]
pub struct ServerlessConfig {
    /// Memory of each replica (SageMaker `MemorySizeInMB`), e.g. `2Gi`.
    #[schemars(transform = crate::common::positive_quantity)]
    pub memory: k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    /// Concurrent requests in all, over the replicas (SageMaker `MaxConcurrency`).
    #[schemars(range(min = 1, max = 200))]
    pub max_concurrency: i32,
    /// Requests kept warm: this many concurrent requests never wait for a cold
    /// start (SageMaker `ProvisionedConcurrency`). 0 scales to zero.
    #[serde(default)]
    #[schemars(range(min = 0, max = 200))]
    pub provisioned_concurrency: i32,
    /// Idle time after which replicas scale to zero.
    #[serde(default = "default_idle")]
    #[schemars(range(min = 30, max = 86_400))]
    pub scale_to_zero_after_seconds: i32,
}

fn default_idle() -> i32 {
    300
}

/// Autoscaling of a variant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas cannot exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// The fewest replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// What is kept at its target per replica (KServe `scaleMetric`).
    #[serde(default)]
    pub metric: ScaleMetric,
    /// The target value per replica: invocations per minute, or in-flight requests (KServe `scaleTarget`).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub target: i32,
    /// Wait after a scale-out before scaling in (SageMaker `ScaleInCooldown`).
    #[serde(default = "default_scale_in")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_in_cooldown_seconds: i32,
    /// Wait after a scale-out before scaling out again (SageMaker `ScaleOutCooldown`).
    #[serde(default = "default_scale_out")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_out_cooldown_seconds: i32,
}

fn default_scale_in() -> i32 {
    300
}

fn default_scale_out() -> i32 {
    60
}

/// Load signals for autoscaling.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ScaleMetric {
    /// Invocations per replica per minute (SageMaker `SageMakerVariantInvocationsPerInstance`).
    #[default]
    InvocationsPerReplica,
    /// Requests in flight per replica (KServe `concurrency`).
    Concurrency,
}

/// Replica choice.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RoutingStrategy {
    /// The replica with the fewest requests in flight.
    #[default]
    LeastOutstandingRequests,
    /// A random replica.
    Random,
}

/// A shadow variant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.name != 'router'").message("a shadow variant cannot be named router: <endpoint>-router is the name of the endpoint's traffic router").field_path(".name"))]
pub struct ShadowVariant {
    /// The shadow's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What the shadow serves.
    pub model: ModelSource,
    /// Serving replicas.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// The share of production requests copied to the shadow, in percent.
    #[serde(default = "default_shadow_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub sampling_percent: i32,
    /// CPU, memory and GPUs per replica.
    #[serde(default)]
    pub resources: ComputeResources,
    /// Node selection.
    #[serde(default)]
    pub placement: Placement,
}

fn default_shadow_percent() -> i32 {
    100
}

/// Data capture.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.captureInput || self.captureOutput").message("dataCapture needs captureInput or captureOutput"))]
pub struct DataCapture {
    /// Capture on or off (SageMaker `EnableCapture`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The share of requests captured, in percent (SageMaker `InitialSamplingPercentage`).
    #[schemars(range(min = 0, max = 100))]
    pub sampling_percent: i32,
    /// Where JSON Lines capture files go (SageMaker `DestinationS3Uri`).
    pub destination: StorageLocation,
    /// Record request bodies.
    #[serde(default = "yes")]
    pub capture_input: bool,
    /// Record response bodies.
    #[serde(default = "yes")]
    pub capture_output: bool,
}

fn yes() -> bool {
    true
}

/// Asynchronous inference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncConfig {
    /// Requests a replica works on at once (SageMaker `MaxConcurrentInvocationsPerInstance`).
    #[serde(default = "default_async_concurrency")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_invocations_per_replica: i32,
    /// Where responses are written (SageMaker `S3OutputPath`).
    pub output: StorageLocation,
    /// Where failures are written (SageMaker `S3FailurePath`). Unset: beside the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StorageLocation>,
}

fn default_async_concurrency() -> i32 {
    4
}

/// How variant changes roll out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.strategy == 'Canary') == has(self.canary)").message("set deployment.canary exactly when deployment.strategy is Canary"),
    validation = Rule::new("(self.strategy == 'Linear') == has(self.linear)").message("set deployment.linear exactly when deployment.strategy is Linear"),
)]
pub struct DeploymentConfig {
    /// How traffic moves to the new variants (SageMaker `BlueGreenUpdatePolicy`).
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// Canary settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<TrafficStep>,
    /// Linear settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<TrafficStep>,
    /// Roll back when the new fleet breaches these limits during the rollout
    /// (SageMaker `AutoRollbackConfiguration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
}

/// Rollout strategies.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeploymentStrategy {
    /// Replace replicas gradually, as a Deployment rolling update does.
    #[default]
    Rolling,
    /// Start the new fleet, then move all traffic at once (blue/green).
    AllAtOnce,
    /// Move `canary.percent` first, wait, then the rest.
    Canary,
    /// Move `linear.percent` every `linear.waitSeconds`.
    Linear,
}

/// One traffic shift.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStep {
    /// Percent of traffic moved per step.
    #[schemars(range(min = 1, max = 99))]
    pub percent: i32,
    /// Wait between steps while the rollback guards watch.
    #[schemars(range(min = 0, max = 3600))]
    pub wait_seconds: i32,
}

/// Guards that roll a deployment back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoRollback {
    /// Roll back when the new fleet's 5xx rate exceeds this percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_error_percent: Option<i32>,
    /// Roll back when the new fleet's p99 latency exceeds this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_p99_latency_milliseconds: Option<i64>,
}

/// Dynamic batching.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// The largest batch handed to the model.
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: i32,
    /// The longest a request waits for others to join its batch.
    #[schemars(range(min = 0, max = 10_000))]
    pub max_latency_milliseconds: i32,
}

/// The observed state of an Endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The summary state (SageMaker `EndpointStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EndpointState>,
    /// The in-cluster URL of the router, e.g. `http://my-endpoint.ns.svc:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ready serving replicas over all variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Each variant's state (SageMaker `ProductionVariantSummary`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20), transform = crate::common::list_map_by_name)]
    pub variants: Vec<VariantStatus>,
    /// Conditions: `Ready` (the summary `kubectl wait --for=condition=Ready`
    /// targets), `ReferencesResolved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The revision being served or rolled out: raised by one for each spec
    /// change that needs new serving pods, and named in their labels.
    #[serde(default)]
    pub revision: i64,
    /// The hash of the serving pod templates of `revision`: a spec change
    /// that changes it raises `revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub serving_template_hash: Option<String>,
    /// The revision the rollout started from, which a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<i64>,
    /// The rollout's step (canary: 1 is the canary share, 2 all traffic;
    /// linear: one per increment); unset when no rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_step: Option<i32>,
    /// When the current rollout step started: its wait and its guards count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_step_start_time: Option<Time>,
    /// Why the endpoint failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When the current configuration was fully rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deployed_time: Option<Time>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The summary state of an Endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum EndpointState {
    /// Replicas are starting for the first time.
    Creating,
    /// A new configuration is rolling out; the old one still serves.
    Updating,
    /// A rollout breached a guard; traffic goes back to the old variants.
    RollingBack,
    /// Serving.
    InService,
    /// Cannot serve; `failureReason` says why.
    Failed,
}

/// The state of one variant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// The variant's name.
    pub name: String,
    /// The weight traffic is routed with now.
    #[serde(default)]
    pub current_weight: f64,
    /// The weight the rollout is heading to.
    #[serde(default)]
    pub desired_weight: f64,
    /// Replicas now.
    #[serde(default)]
    pub current_replicas: i32,
    /// Replicas wanted.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Ready replicas.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The serving image in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The model artifact in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uri: Option<String>,
    /// The registered version the variant's `model.modelPackage` resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_package: Option<ResolvedModelPackage>,
}

/// The ModelPackage a variant serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModelPackage {
    /// The ModelPackage's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub group: Option<String>,
    /// Its version in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Its artifact digest at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub artifact_digest: Option<String>,
}
