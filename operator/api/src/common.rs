//! Building blocks shared by several kinds: storage locations, secrets,
//! scheduling, metrics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, ConfigMapVolumeSource, EmptyDirVolumeSource, EnvVar, NFSVolumeSource,
    PersistentVolumeClaimVolumeSource, SecretVolumeSource, Toleration, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))").message("every volumeMounts[].name must name one of placement.volumes"))]
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
    #[schemars(transform = positive_quantity)]
    pub shm_size: Option<Quantity>,
    /// Seconds a pod gets between SIGTERM and SIGKILL: enough to write a
    /// checkpoint or drain requests. Unset: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Volumes added to every pod: a PersistentVolumeClaim with a dataset or a
    /// cache, a ConfigMap, a Secret, an emptyDir, NFS or a CSI driver (FSx,
    /// EFS, a bucket mounted by FUSE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16), transform = list_map_by_name)]
    pub volumes: Vec<Volume>,
    /// Where `volumes` are mounted in every container Kiln runs in the pods.
    /// `/opt/ml` and `/dev/shm` themselves belong to Kiln; a folder below
    /// `/opt/ml/input/data/` may be mounted (a channel read from a volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"]))]
    #[x_kube(validation = Rule::new("self.all(m, !(m.mountPath in ['/opt/ml', '/opt/ml/', '/opt/ml/model', '/opt/ml/output', '/opt/ml/input', '/opt/ml/input/config', '/dev/shm']))").message("volumeMounts: /opt/ml, /opt/ml/model, /opt/ml/output, /opt/ml/input, /opt/ml/input/config and /dev/shm are Kiln's own mounts: mount elsewhere, such as below /opt/ml/input/data/ or /mnt"))]
    pub volume_mounts: Vec<VolumeMount>,
}

/// A volume of the pods. Set exactly one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.persistentVolumeClaim), has(self.configMap), has(self.secret), has(self.emptyDir), has(self.nfs), has(self.csi)].filter(x, x).size() == 1").message("a volume sets exactly one of persistentVolumeClaim, configMap, secret, emptyDir, nfs and csi"))]
pub struct Volume {
    /// The volume's name, which `volumeMounts` refer to. Names starting with
    /// `kiln-` belong to Kiln's own volumes.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('kiln-')").message("volume names starting with kiln- are Kiln's own: choose another name"))]
    pub name: String,
    /// A PersistentVolumeClaim in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A ConfigMap's keys as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret's keys as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// A scratch folder that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// An NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NFSVolumeSource>,
    /// An inline volume of a CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<CSIVolumeSource>,
}

/// Which nodes a job's pods run on: regular capacity, spot capacity, or spot
/// first with regular nodes as a fallback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CapacityType {
    /// Regular (on-demand) nodes only.
    #[default]
    OnDemand,
    /// Spot nodes only: pods tolerate the spot pool's taint and require its
    /// label (by default `karpenter.sh/capacity-type: spot`; the operator's
    /// configuration names a cluster's spot labels and taints). A reclaimed
    /// node restarts the job from its newest checkpoint (SageMaker
    /// `EnableManagedSpotTraining`).
    Spot,
    /// Spot nodes preferred, regular nodes when no spot capacity is free:
    /// pods tolerate the spot taint and prefer, rather than require, its label.
    SpotWithFallback,
}

impl CapacityType {
    /// Whether pods may land on spot nodes (and so be reclaimed).
    pub fn uses_spot(self) -> bool {
        !matches!(self, Self::OnDemand)
    }
}

/// The pattern of a positive Kubernetes quantity (`500m`, `4`, `16Gi`,
/// `1.5e3`), checked by the API server's schema validation (no CEL cost). A
/// zero or negative amount, or a word that is no quantity, is refused.
pub const POSITIVE_QUANTITY_PATTERN: &str = r"^\+?(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|(0*\.[0-9]*[1-9][0-9]*))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$";

/// A schema transform for quantity fields that must be positive: the string
/// form matches [`POSITIVE_QUANTITY_PATTERN`], the integer form is at least 1.
pub(crate) fn positive_quantity(schema: &mut schemars::Schema) {
    schema.insert("pattern".into(), POSITIVE_QUANTITY_PATTERN.into());
    schema.insert("minimum".into(), 1.into());
}

/// CPU, memory and GPU of one replica.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// CPU requested by each replica, e.g. `"4"` or `"500m"`. Unset: the
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = positive_quantity)]
    pub cpu: Option<Quantity>,
    /// Memory requested by each replica, also its limit, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = positive_quantity)]
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

/// Environment variables: Kubernetes `EnvVar`s, so a value can come from a
/// Secret (`valueFrom.secretKeyRef`), a ConfigMap or the pod's own fields and
/// secrets never sit in the resource itself. A list keyed by `name`.
pub type Environment = Vec<EnvVar>;

/// The CEL rule every environment list carries: names a shell and a process
/// can use.
pub const ENV_NAMES_RULE: &str = "self.all(e, e.name.matches('^[A-Za-z_][A-Za-z0-9_]*$'))";

/// The CEL rule every environment list carries beside [`ENV_NAMES_RULE`]:
/// a variable has a value or a source, not both.
pub const ENV_VALUE_RULE: &str = "self.all(e, !(has(e.value) && has(e.valueFrom)))";

/// The message of [`ENV_VALUE_RULE`].
pub const ENV_VALUE_MESSAGE: &str =
    "an environment variable sets value or valueFrom, not both: keep one";

/// The message of [`ENV_NAMES_RULE`].
pub const ENV_NAMES_MESSAGE: &str = "environment variable names must start with a letter or _ and hold only letters, digits and _ (such as MY_VAR)";

/// The schema of every environment list: a list keyed by `name` (see
/// [`list_map_by_name`]), whose names are bounded so that the CEL rules over
/// them stay within the API server's cost budget.
pub(crate) fn env_list(schema: &mut schemars::Schema) {
    list_map_by_name(schema);
    if let Some(name) = schema
        .get_mut("items")
        .and_then(|i| i.get_mut("properties"))
        .and_then(|p| p.get_mut("name"))
        .and_then(|n| n.as_object_mut())
    {
        name.insert("maxLength".into(), 256.into());
    }
}

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

/// The CEL rule, at the root of a kind, that keeps `spec.<field>` as it was
/// (absent counting as a value), with a message naming the field.
pub(crate) fn immutable(kind: &str, field: &str) -> kube::core::Rule {
    kube::core::Rule::new(unchanged_rule("spec", &[field]))
        .message(kube::core::Message::Message(format!(
            "spec.{field} cannot change after the {kind} is created: create a new {kind} instead"
        )))
        .field_path(format!(".spec.{field}"))
}
