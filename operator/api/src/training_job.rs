//! `TrainingJob`: one training run (SageMaker `CreateTrainingJob`, Kubeflow `TrainJob`).
//!
//! A built-in algorithm of the Kiln runtime or any container image, fed by
//! input channels, writing a model to an output location, on one or more
//! replicas (pods) with GPUs, data or model parallelism, spot capacity,
//! checkpoints, a runtime limit and retries. The operator creates one pod per
//! replica, a headless Service for rendezvous and a ConfigMap with the
//! SageMaker-contract configuration files.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{
    CapacityType, Compression, ComputeResources, Environment, MetricValue, Placement,
    StorageLocation, immutable, list_map_by_name, positive_quantity, unchanged_rule,
};

/// The spec of a TrainingJob. Everything but `suspend` and
/// `ttlSecondsAfterFinished` is fixed once the job exists (to change a job,
/// create a new one), except `resources.placement` while the job is
/// suspended and has never started, so that a queue such as Kueue can place
/// it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    plural = "trainingjobs",
    shortname = "tj",
    category = "kiln",
    namespaced,
    status = "TrainingJobStatus",
    printcolumn(name = "Succeeded", type_ = "string", json_path = ".status.conditions[?(@.type==\"Succeeded\")].status"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.secondaryStatus"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.resources.replicas"),
    printcolumn(name = "Billable", type_ = "integer", json_path = ".status.billableSeconds", description = "billable seconds"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = immutable("TrainingJob", "algorithm"),
    validation = immutable("TrainingJob", "hyperparameters"),
    validation = immutable("TrainingJob", "inputs"),
    validation = immutable("TrainingJob", "output"),
    validation = Rule::new(format!("{} || (has(oldSelf.spec.suspend) && oldSelf.spec.suspend && (!has(oldSelf.status) || !has(oldSelf.status.startTime)) && has(self.spec.resources) && has(oldSelf.spec.resources) && {})", unchanged_rule("spec", &["resources"]), unchanged_rule("spec.resources", &["replicas", "processesPerReplica", "compute", "volumeSize"]))).message("spec.resources cannot change after the TrainingJob is created, except resources.placement while the job is suspended and has never started (so a queue such as Kueue can place it): create a new TrainingJob instead").field_path(".spec.resources"),
    validation = immutable("TrainingJob", "distribution"),
    validation = immutable("TrainingJob", "capacityType"),
    validation = immutable("TrainingJob", "stoppingCondition"),
    validation = immutable("TrainingJob", "checkpoint"),
    validation = immutable("TrainingJob", "retryStrategy"),
    validation = immutable("TrainingJob", "env"),
    validation = immutable("TrainingJob", "networkIsolation"),
    validation = immutable("TrainingJob", "tensorBoardOutput"),
    validation = immutable("TrainingJob", "experiment"),
    validation = Rule::new("self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a TrainingJob's name must be a DNS label of at most 52 characters that starts with a letter: it names the job's Service, pods and labels"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.stoppingCondition.maxWaitSeconds) || self.capacityType != 'OnDemand'").message("stoppingCondition.maxWaitSeconds applies to spot training only: set capacityType: Spot or SpotWithFallback, or remove it"),
    validation = Rule::new("!has(self.stoppingCondition.maxWaitSeconds) || self.stoppingCondition.maxWaitSeconds >= self.stoppingCondition.maxRuntimeSeconds").message("stoppingCondition.maxWaitSeconds must be at least stoppingCondition.maxRuntimeSeconds"),
    validation = Rule::new("!has(self.algorithm.name) || self.distribution.strategy != 'ModelParallel' || self.algorithm.name in ['mlp', 'image-classifier']").message("distribution.strategy ModelParallel needs an algorithm that splits into pipeline stages: mlp or image-classifier (or your own image)"),
    validation = Rule::new("!has(self.distribution.modelParallel) || (self.resources.replicas * (has(self.resources.processesPerReplica) ? self.resources.processesPerReplica : (self.resources.compute.gpus > 0 ? self.resources.compute.gpus : 1))) % self.distribution.modelParallel.partitions == 0").message("distribution.modelParallel.partitions must divide the number of ranks (replicas x processes per replica)"),
    validation = Rule::new("self.distribution.strategy != 'None' || self.resources.replicas == 1 || has(self.algorithm.image)").message("a built-in algorithm on more than one replica needs distribution.strategy DataParallel or ModelParallel"),
    validation = Rule::new("self.distribution.backend != 'Nccl' || self.resources.compute.gpus > 0").message("distribution.backend Nccl needs GPUs: set resources.compute.gpus, or use Gloo or Auto"),
)]
pub struct TrainingJobSpec {
    /// What runs: a built-in algorithm or your own image (SageMaker `AlgorithmSpecification`).
    pub algorithm: AlgorithmSpec,
    /// Hyperparameters passed to the algorithm as strings, as SageMaker does
    /// (`/opt/ml/input/config/hyperparameters.json`, `SM_HP_<NAME>`). Built-in
    /// algorithms check them and fail the job with a message naming a bad one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 256 && size(self[k]) <= 2500)").message("hyperparameter names are at most 256 characters and values at most 2500"))]
    pub hyperparameters: BTreeMap<String, String>,
    /// Input channels, each mounted at `/opt/ml/input/data/<name>/` (SageMaker `InputDataConfig`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20), transform = list_map_by_name)]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.name.upperAscii().replace('-', '_').replace('.', '_') == a.name.upperAscii().replace('-', '_').replace('.', '_')).size() == 1)").message("input channel names must differ once upper-cased with - and . read as _ (they become SM_CHANNEL_<NAME> variables): rename one of them"))]
    pub inputs: Vec<Channel>,
    /// Where the model artifact goes (SageMaker `OutputDataConfig`).
    pub output: OutputSpec,
    /// Replicas and what each one gets (SageMaker `ResourceConfig`).
    #[serde(default)]
    pub resources: TrainingResources,
    /// How ranks split the work (SageMaker `distribution`, Kubeflow `numProcPerNode`).
    #[serde(default)]
    pub distribution: Distribution,
    /// Regular or spot nodes (SageMaker `EnableManagedSpotTraining`).
    #[serde(default)]
    pub capacity_type: CapacityType,
    /// Limits on how long the job may wait and run (SageMaker `StoppingCondition`).
    #[serde(default)]
    pub stopping_condition: StoppingCondition,
    /// Where checkpoints are synced so an interrupted job resumes (SageMaker `CheckpointConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Retries after a failure (SageMaker `RetryStrategy`). Spot interruptions
    /// do not count as attempts: they restart from the newest checkpoint until
    /// `stoppingCondition.maxWaitSeconds`.
    #[serde(default)]
    pub retry_strategy: RetryStrategy,
    /// Environment variables of every container (SageMaker `Environment`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 48), transform = crate::common::env_list)]
    #[x_kube(
        validation = Rule::new(crate::common::ENV_NAMES_RULE).message(crate::common::ENV_NAMES_MESSAGE),
        validation = Rule::new(crate::common::ENV_VALUE_RULE).message(crate::common::ENV_VALUE_MESSAGE)
    )]
    pub env: Environment,
    /// Deny the training pods any network traffic except rendezvous between
    /// ranks and the storage endpoints Kiln reaches for them (SageMaker
    /// `EnableNetworkIsolation`), enforced with a NetworkPolicy.
    #[serde(default)]
    pub network_isolation: bool,
    /// Where TensorBoard event files written to `/opt/ml/output/tensorboard` are
    /// synced (SageMaker `TensorBoardOutputConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_board_output: Option<StorageLocation>,
    /// The experiment and run this job belongs to (SageMaker `ExperimentConfig`),
    /// copied onto the pods as labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentConfig>,
    /// Pause the job: running pods are stopped after writing a checkpoint, and
    /// resume from it when set back to false (Kubeflow `suspend`).
    #[serde(default)]
    pub suspend: bool,
    /// Delete the TrainingJob this many seconds after it finishes. Unset: keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// The built-in algorithms of the Kiln runtime image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum BuiltinAlgorithm {
    /// Linear and logistic regression (binary and multiclass), SGD or Adam, L1/L2.
    #[serde(rename = "linear-learner")]
    LinearLearner,
    /// k-nearest neighbours, classification and regression.
    #[serde(rename = "knn")]
    Knn,
    /// Principal component analysis, full or randomized.
    #[serde(rename = "pca")]
    Pca,
    /// k-means clustering, k-means++ initialisation, Lloyd or mini-batch.
    #[serde(rename = "kmeans")]
    Kmeans,
    /// A multilayer perceptron, classifier or regressor.
    #[serde(rename = "mlp")]
    Mlp,
    /// A convolutional image classifier.
    #[serde(rename = "image-classifier")]
    ImageClassifier,
    /// A bag-of-n-grams text classifier.
    #[serde(rename = "text-classifier")]
    TextClassifier,
}

impl BuiltinAlgorithm {
    /// Every built-in algorithm.
    pub const ALL: [BuiltinAlgorithm; 7] = [
        Self::LinearLearner,
        Self::Knn,
        Self::Pca,
        Self::Kmeans,
        Self::Mlp,
        Self::ImageClassifier,
        Self::TextClassifier,
    ];

    /// The name as written in YAML and passed to `kiln-runtime train`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LinearLearner => "linear-learner",
            Self::Knn => "knn",
            Self::Pca => "pca",
            Self::Kmeans => "kmeans",
            Self::Mlp => "mlp",
            Self::ImageClassifier => "image-classifier",
            Self::TextClassifier => "text-classifier",
        }
    }

    /// Whether the algorithm can split layers into pipeline stages.
    pub fn supports_model_parallel(self) -> bool {
        matches!(self, Self::Mlp | Self::ImageClassifier)
    }
}

/// How the algorithm reads its channels (SageMaker `TrainingInputMode`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum InputMode {
    /// Channels are downloaded to `/opt/ml/input/data/<channel>/` before training starts.
    #[default]
    File,
    /// Files are fetched on first read (lazy download into the same path).
    FastFile,
    /// Records are streamed to `/opt/ml/input/data/<channel>_<epoch>` named pipes.
    Pipe,
}

/// What runs. Set exactly one of `name` (a built-in algorithm) and `image`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.name) != has(self.image)").message("set exactly one of algorithm.name (a built-in algorithm) and algorithm.image (your own container)"),
    validation = Rule::new("has(self.image) || (!has(self.command) && !has(self.args))").message("algorithm.command and algorithm.args apply to algorithm.image only"),
)]
pub struct AlgorithmSpec {
    /// A built-in algorithm, run by Kiln's runtime image (SageMaker `AlgorithmName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<BuiltinAlgorithm>,
    /// Your own training image (SageMaker `TrainingImage`). It is started with the
    /// argument `train` unless `command` or `args` say otherwise, and sees the
    /// SageMaker training contract and PyTorch's distributed environment
    /// (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `PET_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// The image's entrypoint override (SageMaker `ContainerEntrypoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 100))]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint (SageMaker `ContainerArguments`). Default: `["train"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 100))]
    pub args: Option<Vec<String>>,
    /// How channels reach the container.
    #[serde(default)]
    pub input_mode: InputMode,
    /// Metrics to collect from a custom image's logs (SageMaker `MetricDefinitions`).
    /// Built-in algorithms report their metrics themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 40), transform = list_map_by_name)]
    pub metric_definitions: Vec<MetricDefinition>,
}

/// A metric scraped from log lines with a regular expression.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricDefinition {
    /// The metric's name, e.g. `validation:accuracy`.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// A regular expression whose first capture group is the value, e.g. `val_acc=([0-9.]+)`.
    #[schemars(length(min = 1, max = 500))]
    pub regex: String,
}

/// One input channel.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The channel's name, e.g. `train` or `validation`: the folder under `/opt/ml/input/data/`.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub name: String,
    /// Where the channel's files are (SageMaker `S3DataSource.S3Uri`).
    pub source: StorageLocation,
    /// The MIME type of the data, e.g. `text/csv` or `application/x-parquet`.
    /// Built-in algorithms also tell CSV and Parquet by file extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub content_type: Option<String>,
    /// Compression of the files.
    #[serde(default)]
    pub compression: Compression,
    /// Whether every replica gets all files or a shard of them (SageMaker `S3DataDistributionType`).
    #[serde(default)]
    pub distribution: DataDistribution,
    /// Reads the channel in another mode than `algorithm.inputMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_mode: Option<InputMode>,
    /// Shuffle the file order with this seed before sharding (SageMaker `ShuffleConfig.Seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_seed: Option<i64>,
}

/// How a channel's files are spread over replicas.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DataDistribution {
    /// Every replica sees every file.
    #[default]
    FullyReplicated,
    /// Replica i of n sees every n-th file (SageMaker `ShardedByS3Key`).
    ShardedByKey,
}

/// Where and how the model artifact is written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// The prefix under which `<namespace>/<job name>/output/model.tar.gz` (or the
    /// uncompressed model folder) is written (SageMaker `S3OutputPath`).
    pub location: StorageLocation,
    /// Compression of the model artifact (SageMaker `CompressionType`):
    /// `Gzip` (the default, as in SageMaker) writes one `model.tar.gz`,
    /// `None` the model's files under `.../output/model/`.
    #[serde(default = "gzip")]
    pub compression: Compression,
    /// The server-side encryption key for the artifact (SageMaker `KmsKeyId`), passed
    /// to the store as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub kms_key_id: Option<String>,
}

/// How many replicas run and what each one gets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.processesPerReplica) || self.compute.gpus == 0 || self.processesPerReplica <= self.compute.gpus").message("resources.processesPerReplica cannot exceed compute.gpus on GPU replicas: each process drives one GPU"))]
pub struct TrainingResources {
    /// The number of pods (SageMaker `InstanceCount`). Each is named `algo-<i>` in
    /// the SageMaker contract.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub replicas: i32,
    /// Processes per pod (Kubeflow `numProcPerNode`, torchrun `--nproc-per-node`).
    /// Unset: one per GPU, or one on CPU-only replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub processes_per_replica: Option<i32>,
    /// CPU, memory and GPUs per replica.
    #[serde(default)]
    pub compute: ComputeResources,
    /// Size of the scratch volume at `/opt/ml` (SageMaker `VolumeSizeInGB`). Unset:
    /// the node's ephemeral storage, unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = positive_quantity)]
    pub volume_size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// Node selection (SageMaker `InstanceType` and its placement).
    #[serde(default)]
    pub placement: Placement,
}

impl Default for TrainingResources {
    fn default() -> Self {
        Self {
            replicas: 1,
            processes_per_replica: None,
            compute: ComputeResources::default(),
            volume_size: None,
            placement: Placement::default(),
        }
    }
}

fn one() -> i32 {
    1
}

fn gzip() -> Compression {
    Compression::Gzip
}

/// How ranks share the work.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.strategy == 'ModelParallel') == has(self.modelParallel)").message("set distribution.modelParallel exactly when distribution.strategy is ModelParallel"))]
pub struct Distribution {
    /// The parallelism layout.
    #[serde(default)]
    pub strategy: DistributionStrategy,
    /// The collective backend. `Auto` picks NCCL on GPUs and Gloo on CPUs.
    #[serde(default)]
    pub backend: CollectiveBackend,
    /// Pipeline (model) parallelism: layers split into stages over ranks. The
    /// remaining factor of the world size runs data parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_parallel: Option<ModelParallel>,
}

/// The parallelism layout of a job.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DistributionStrategy {
    /// A single process; more replicas are only allowed for custom images that
    /// rendezvous themselves.
    #[default]
    None,
    /// Every rank holds the whole model and a shard of the data; gradients are
    /// all-reduced each step (SageMaker `torch_distributed`).
    DataParallel,
    /// Layers split into pipeline stages across ranks (SageMaker `modelparallel`).
    ModelParallel,
}

/// The collective communication backend.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum CollectiveBackend {
    /// NCCL on GPU replicas, Gloo on CPU replicas.
    #[default]
    Auto,
    /// Gloo (TCP; CPU and GPU tensors).
    Gloo,
    /// NCCL (GPU only).
    Nccl,
}

/// Pipeline-parallel settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelParallel {
    /// The number of pipeline stages the model is split into (SageMaker `partitions`).
    #[schemars(range(min = 1, max = 64))]
    pub partitions: i32,
    /// Micro-batches each batch is split into (SageMaker `microbatches`).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub micro_batches: i32,
    /// The order in which stages run forward and backward passes.
    #[serde(default)]
    pub schedule: PipelineSchedule,
}

/// The pipeline-parallel schedule.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PipelineSchedule {
    /// All forward passes, then all backward passes (GPipe).
    #[default]
    GPipe,
    /// One forward, one backward, interleaved (PipeDream-flush), less activation memory.
    OneForwardOneBackward,
}

/// Time limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoppingCondition {
    /// Training time allowed across all attempts, after which ranks get SIGTERM,
    /// may write a checkpoint, and the job fails with `MaxRuntimeExceeded`
    /// (SageMaker `MaxRuntimeInSeconds`).
    #[serde(default = "default_max_runtime")]
    #[schemars(range(min = 1, max = 2_419_200))]
    pub max_runtime_seconds: i64,
    /// Spot only: total time allowed including waiting for capacity and restarts
    /// after reclaims (SageMaker `MaxWaitTimeInSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_838_400))]
    pub max_wait_seconds: Option<i64>,
    /// Fail with `MaxPendingTimeExceeded` when pods stay unschedulable this long
    /// (SageMaker `MaxPendingTimeInSeconds`). Unset: wait indefinitely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 2_419_200))]
    pub max_pending_seconds: Option<i64>,
}

impl Default for StoppingCondition {
    fn default() -> Self {
        Self {
            max_runtime_seconds: default_max_runtime(),
            max_wait_seconds: None,
            max_pending_seconds: None,
        }
    }
}

fn default_max_runtime() -> i64 {
    86_400
}

/// Checkpoint sync.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Where checkpoints are kept between attempts (SageMaker `CheckpointConfig.S3Uri`).
    pub location: StorageLocation,
    /// The folder in the container that is synced (SageMaker `LocalPath`).
    #[serde(default = "default_checkpoint_path")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/"))]
    pub local_path: String,
    /// Built-in algorithms write a checkpoint at least this often. Unset: the
    /// algorithm's own `checkpoint_interval` hyperparameters decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86_400))]
    pub interval_seconds: Option<i64>,
}

fn default_checkpoint_path() -> String {
    "/opt/ml/checkpoints".into()
}

/// Retries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    /// Attempts in all, the first included (SageMaker `MaximumRetryAttempts`).
    /// A failure caused by bad input (the algorithm's failure file says so) is not retried.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 30))]
    pub max_attempts: i32,
}

impl Default for RetryStrategy {
    fn default() -> Self {
        Self { max_attempts: 1 }
    }
}

/// Experiment tracking association.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentConfig {
    /// The experiment's name.
    #[schemars(length(min = 1, max = 63))]
    pub experiment_name: String,
    /// The run's name within the experiment. Unset: the TrainingJob's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub run_name: Option<String>,
}

/// The observed state of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// The summary state (SageMaker `TrainingJobStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TrainingJobState>,
    /// The current step (SageMaker `SecondaryStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_status: Option<SecondaryStatus>,
    /// The steps so far with their times, newest last, at most 50 (SageMaker
    /// `SecondaryStatusTransitions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 50, "x-kubernetes-list-type" = "atomic"))]
    pub secondary_status_transitions: Vec<StatusTransition>,
    /// Conditions. `Succeeded` is the summary `kubectl wait
    /// --for=condition=Succeeded` targets: Unknown while the job runs, then
    /// True, or False with the reason. Beside it: `Running`, `Suspended`,
    /// `Interrupted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Every attempt, oldest first, at most the newest 20: what a restarted
    /// operator needs to go on (which pods belong to the running attempt) and
    /// what a user needs to see why earlier ones ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 20, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub attempts: Vec<Attempt>,
    /// When the newest checkpoint was uploaded; an interrupted job resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<Time>,
    /// Why the job failed, from the failing rank's `/opt/ml/output/failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Where the model artifact was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_artifact_uri: Option<String>,
    /// The last value of each metric the job reported (SageMaker `FinalMetricDataList`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 40), transform = list_map_by_name)]
    pub final_metrics: Vec<MetricValue>,
    /// Replicas by pod phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaCounts>,
    /// The attempt now running or last run, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// How many times spot nodes were reclaimed under the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_interruptions: Option<i32>,
    /// When the first pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Seconds ranks spent training, over all attempts (SageMaker `TrainingTimeInSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_seconds: Option<i64>,
    /// Replica-seconds of node time used (SageMaker `BillableTimeInSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_seconds: Option<i64>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One attempt of a TrainingJob: its pods are `<job>-a<index>-<rank>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The attempt's number, from 1.
    #[schemars(range(min = 1))]
    pub index: i32,
    /// The prefix of its pods' names; the rank follows it.
    #[schemars(length(min = 1, max = 63))]
    pub pod_name_prefix: String,
    /// When its pods were created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<AttemptEnd>,
    /// What happened, such as the failing rank's failure file or the node reclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
}

/// Why an attempt ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AttemptEnd {
    /// Every rank exited 0.
    Succeeded,
    /// A rank failed; counts against `retryStrategy.maxAttempts`.
    Failed,
    /// A spot node was reclaimed (or a node lost) under a rank; does not count.
    Interrupted,
    /// The user suspended or stopped the job.
    Stopped,
    /// A time limit passed.
    TimedOut,
}

/// The summary state of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TrainingJobState {
    /// Pods are being created or scheduled, or the job runs.
    InProgress,
    /// Every rank succeeded and the model was written.
    Completed,
    /// The job failed; `failureReason` says why.
    Failed,
    /// The job is being stopped or suspended.
    Stopping,
    /// The job was stopped or is suspended.
    Stopped,
}

/// The step a TrainingJob is in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SecondaryStatus {
    /// Pods are being created and scheduled.
    Starting,
    /// Channels are being fetched.
    Downloading,
    /// The algorithm runs.
    Training,
    /// The model is being uploaded.
    Uploading,
    /// A spot reclaim or node loss interrupted the job; it restarts.
    Interrupted,
    /// The runtime limit passed.
    MaxRuntimeExceeded,
    /// The spot wait limit passed.
    MaxWaitTimeExceeded,
    /// The user stopped or suspended the job.
    Stopped,
    /// Done.
    Completed,
    /// Failed.
    Failed,
}

/// One step of a job's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusTransition {
    /// The step.
    pub status: SecondaryStatus,
    /// When it began.
    pub start_time: Time,
    /// When it ended; unset while current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Pods of a job by phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    /// Pods not yet running.
    #[serde(default)]
    pub pending: i32,
    /// Pods running.
    #[serde(default)]
    pub running: i32,
    /// Pods that exited 0.
    #[serde(default)]
    pub succeeded: i32,
    /// Pods that failed.
    #[serde(default)]
    pub failed: i32,
}

impl TrainingJobSpec {
    /// Processes per replica, with the default applied: one per GPU, else one.
    pub fn processes_per_replica(&self) -> i32 {
        self.resources
            .processes_per_replica
            .unwrap_or(self.resources.compute.gpus.max(1))
    }

    /// The number of ranks: replicas times processes per replica.
    pub fn world_size(&self) -> i32 {
        self.resources.replicas * self.processes_per_replica()
    }
}
