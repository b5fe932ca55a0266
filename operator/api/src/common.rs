//! Building blocks shared by several kinds: storage locations, secrets,
//! scheduling, metrics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL-free pattern every storage URI must match; the schemes Kiln reads and writes.
pub const STORAGE_URI_PATTERN: &str = r"^(s3|gs|az|file|pvc)://[^\s]+$";

/// Where data lives: an object-store prefix or a path on a volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageLocation {
    /// The location as a URI: `s3://bucket/prefix` (AWS S3 or any S3-compatible
    /// store), `gs://bucket/prefix`, `az://container/prefix`, `file:///path` (a path
    /// inside the pod) or `pvc://claim-name/path` (a PersistentVolumeClaim in the
    /// same namespace, mounted by Kiln).
    #[schemars(
        length(min = 6, max = 1024),
        regex(pattern = r"^(s3|gs|az|file|pvc)://[^\s]+$")
    )]
    pub uri: String,
    /// The Secret, in the resource's namespace, holding the credentials for `uri`.
    /// For s3:// it holds `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, and
    /// optionally `AWS_ENDPOINT_URL` (for MinIO, SeaweedFS, Ceph) and `AWS_REGION`.
    /// Credentials are passed to pods as environment variables from the Secret and
    /// never copied into logs, events or status. Unset: the pod's own identity
    /// (workload identity, node role) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to another Kiln object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A child object a Kiln object created and owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildReference {
    /// Its API version, e.g. `kiln.dev/v1alpha1`.
    #[schemars(length(min = 1, max = 317))]
    pub api_version: String,
    /// Its kind, e.g. `TrainingJob`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Its name, in the owner's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its UID: a child deleted and created again under the same name is a
    /// different object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    pub uid: Option<String>,
}

/// Compression of stored data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// gzip-compressed (`.gz` files; a model artifact as `model.tar.gz`).
    Gzip,
}

/// Where pods run and what they may use besides CPU, memory and GPUs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels every pod must match (the equivalent of SageMaker's instance
    /// type), e.g. `node.kubernetes.io/instance-type: g5.xlarge`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations added to every pod, beside the ones Kiln adds itself for GPU
    /// and spot nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 32))]
    pub tolerations: Vec<Toleration>,
    /// The PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// The ServiceAccount the pods run as. Unset: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// Node and pod (anti-)affinity of every pod, beside `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    /// Secrets for pulling the pods' images from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub image_pull_secrets: Vec<SecretReference>,
    /// Labels added to every pod (a cost center, a mesh opt-in); Kiln's own
    /// `kiln.dev/` labels win over these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations added to every pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub pod_annotations: BTreeMap<String, String>,
    /// The size of `/dev/shm` (a memory-backed volume): PyTorch's data loader
    /// workers pass batches through it. Unset: the container runtime's 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Quantity>,
    /// Seconds a pod gets between SIGTERM and SIGKILL: enough to write a
    /// checkpoint or drain requests. Unset: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// CPU, memory and GPU of one replica.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// CPU requested by each replica, e.g. `"4"` or `"500m"`. Unset: the
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory requested by each replica, also its limit, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// `nvidia.com/gpu` devices of each replica. Pods asking for GPUs tolerate
    /// the `nvidia.com/gpu` taint.
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
}

/// A metric and its value, as reported by a training run or attached to a model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// The metric's name, e.g. `validation:accuracy` or `train:loss`.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// The value.
    pub value: f64,
}

/// Environment variables as a name-to-value map.
pub type Environment = BTreeMap<String, String>;

/// The CEL rule every environment map carries: names a shell and a process
/// can use.
pub const ENV_NAMES_RULE: &str = "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))";

/// The message of [`ENV_NAMES_RULE`].
pub const ENV_NAMES_MESSAGE: &str = "environment variable names must start with a letter or _ and hold only letters, digits and _ (such as MY_VAR)";

/// How a list of named items merges under server-side apply and how the API
/// server enforces unique names: `x-kubernetes-list-type: map` keyed by `name`.
pub(crate) fn list_map_by_name(schema: &mut schemars::Schema) {
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
}

/// A CEL transition rule saying that each of `fields` under `parent` keeps
/// its value, counting "absent" as a value (so a field may be neither added
/// nor removed). Optional fields are absent rather than null in Kubernetes
/// objects, and comparing a missing field is an evaluation error, so each
/// comparison is guarded by `has()`.
pub(crate) fn unchanged_rule(parent: &str, fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| {
            format!(
                "(has(self.{parent}.{f}) ? (has(oldSelf.{parent}.{f}) && self.{parent}.{f} == oldSelf.{parent}.{f}) : !has(oldSelf.{parent}.{f}))"
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}
