//! Build: a TrainingJob's spec to the children one attempt needs, with no
//! API client, so every choice here is unit-tested without a cluster.
//!
//! Every rank is a pod named `<job>-a<attempt>-<rank>` with the host name
//! `algo-<rank+1>` under a headless Service `<job>-hosts`, so the
//! SageMaker hosts resolve and PyTorch's rendezvous finds `algo-1`. The
//! steps of a pod run in order as init containers: one `kiln-runtime fetch`
//! per remote channel, the checkpoint download, the checkpoint-sync sidecar
//! (rank 0, running beside training), and the training container itself,
//! whose exit code and `/opt/ml/output/failure` (its termination message)
//! decide the rank. The one regular container, `kiln-runtime push`, uploads
//! `/opt/ml/model` from rank 0 and reports the artifact's URI in its
//! termination message, so status needs no log scraping.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource,
    KeyToPath, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, Pod, PodDNSConfig, PodSchedulingGate, PodSpec,
    PreferredSchedulingTerm, ResourceRequirements, Service, ServicePort, ServiceSpec, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kiln_api::common::{CapacityType, Compression};
use kiln_api::training_job::{DataDistribution, TrainingJob, TrainingJobSpec};
use kube::{Resource, ResourceExt};

use crate::controllers::pods::{
    compute_requirements, credentials, env, gpu_toleration, image_pull_secrets, mount,
    restricted_container, restricted_pod, to_pod_volume, user_labels,
};

/// What the operator's configuration adds to every training pod.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `kiln-runtime` image: built-ins, fetch, push, sync.
    pub runtime_image: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The node label of spot capacity.
    pub spot_label: (String, String),
    /// Spot taints to tolerate.
    pub spot_tolerations: Vec<Toleration>,
}

/// The label naming a pod's TrainingJob.
pub const JOB_LABEL: &str = "kiln.dev/training-job";
/// The label with a pod's attempt number.
pub const ATTEMPT_LABEL: &str = "kiln.dev/attempt";
/// The label with a pod's rank (0-based pod index).
pub const RANK_LABEL: &str = "kiln.dev/rank";
/// The scheduling gate every pod is created with; lifted when every rank of
/// the attempt exists, so no rank holds a node while others are missing.
pub const GANG_GATE: &str = "kiln.dev/all-ranks-created";
/// The port of PyTorch's rendezvous on `algo-1`.
pub const MASTER_PORT: i32 = 29500;
/// The training container's name.
pub const TRAIN_CONTAINER: &str = "train";
/// The upload container's name.
pub const PUSH_CONTAINER: &str = "push";

const ML: &str = "/opt/ml";
const CONFIG_DIR: &str = "/opt/ml/input/config";
const DATA_DIR: &str = "/opt/ml/input/data";
const MODEL_DIR: &str = "/opt/ml/model";
const FAILURE_FILE: &str = "/opt/ml/output/failure";

/// The children of one attempt.
#[derive(Debug, Clone)]
pub struct Children {
    /// Hyperparameters, input and resource configuration (shared by attempts).
    pub config_map: ConfigMap,
    /// The headless Service that gives ranks their DNS names.
    pub service: Service,
    /// One pod per rank, rank 0 first.
    pub pods: Vec<Pod>,
}

/// The headless Service's name, `<job>-hosts`: the pods' subdomain, so
/// `algo-N.<job>-hosts` resolves. Not the job's own name, which an
/// Endpoint of the same name uses for its Service.
pub fn service_name(job: &str) -> String {
    format!("{job}-hosts")
}

/// The ConfigMap's name.
pub fn config_map_name(job: &str) -> String {
    format!("{job}-config")
}

/// The prefix of an attempt's pod names; the rank follows it.
pub fn pod_name_prefix(job: &str, attempt: i32) -> String {
    format!("{job}-a{attempt}-")
}

/// The SageMaker host name of a rank.
pub fn host(rank: i32) -> String {
    format!("algo-{}", rank + 1)
}

/// Where the model artifact of a job goes: `<location>/<namespace>/<job>/output/model.tar.gz`,
/// or the `model/` prefix beside it when uncompressed.
pub fn model_artifact_uri(spec: &TrainingJobSpec, namespace: &str, job: &str) -> String {
    let base = spec.output.location.uri.trim_end_matches('/');
    match spec.output.compression {
        Compression::Gzip => format!("{base}/{namespace}/{job}/output/model.tar.gz"),
        Compression::None => format!("{base}/{namespace}/{job}/output/model/"),
    }
}

/// The ranks' pod layout: how many pods, and processes in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Pods.
    pub replicas: i32,
    /// Processes per pod (torchrun's `--nproc-per-node`); built-ins run one.
    pub processes_per_replica: i32,
}

impl Layout {
    /// The layout of a spec: built-in algorithms run one process per pod
    /// (it drives the pod's GPUs itself); your own image gets
    /// `processesPerReplica`, by default one per GPU.
    pub fn of(spec: &TrainingJobSpec) -> Self {
        let processes_per_replica = if spec.algorithm.name.is_some() {
            1
        } else {
            spec.processes_per_replica()
        };
        Self {
            replicas: spec.resources.replicas,
            processes_per_replica,
        }
    }

    /// Processes in all.
    pub fn world_size(self) -> i32 {
        self.replicas * self.processes_per_replica
    }
}

/// The children of attempt `attempt` (from 1) of `job`.
pub fn children(job: &TrainingJob, attempt: i32, settings: &Settings) -> Children {
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let owner = job
        .controller_owner_ref(&())
        .into_iter()
        .collect::<Vec<_>>();
    let spec = &job.spec;
    let layout = Layout::of(spec);
    let meta = |child_name: String, labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(child_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels),
        owner_references: Some(owner.clone()),
        ..ObjectMeta::default()
    };
    let job_labels = BTreeMap::from([
        (JOB_LABEL.to_string(), name.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kiln".to_string(),
        ),
    ]);

    let mut data = BTreeMap::new();
    data.insert(
        "hyperparameters.json".to_string(),
        serde_json::to_string_pretty(&spec.hyperparameters).unwrap_or_default(),
    );
    data.insert("inputdataconfig.json".to_string(), input_data_config(spec));
    for rank in 0..layout.replicas {
        data.insert(
            format!("resourceconfig-{}.json", host(rank)),
            resource_config(layout, rank),
        );
    }
    let config_map = ConfigMap {
        metadata: meta(config_map_name(&name), job_labels.clone()),
        data: Some(data),
        ..ConfigMap::default()
    };

    let service = Service {
        metadata: meta(service_name(&name), job_labels.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Ranks are never Ready (training runs in an init container), and
            // each must resolve the others from the moment it has an address.
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([
                (JOB_LABEL.to_string(), name.clone()),
                (ATTEMPT_LABEL.to_string(), attempt.to_string()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: MASTER_PORT,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let pods = (0..layout.replicas)
        .map(|rank| {
            let mut labels = user_labels(&spec.resources.placement);
            if let Some(exp) = &spec.experiment {
                labels.insert("kiln.dev/experiment".into(), exp.experiment_name.clone());
                labels.insert(
                    "kiln.dev/run".into(),
                    exp.run_name.clone().unwrap_or_else(|| name.clone()),
                );
            }
            labels.extend(job_labels.clone());
            labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
            labels.insert(RANK_LABEL.into(), rank.to_string());
            let mut metadata = meta(format!("{}{rank}", pod_name_prefix(&name, attempt)), labels);
            let annotations = spec.resources.placement.pod_annotations.clone();
            metadata.annotations = (!annotations.is_empty()).then_some(annotations);
            Pod {
                metadata,
                spec: Some(pod_spec(job, &name, &namespace, rank, layout, settings)),
                ..Pod::default()
            }
        })
        .collect();

    Children {
        config_map,
        service,
        pods,
    }
}

/// SageMaker's `inputdataconfig.json`.
fn input_data_config(spec: &TrainingJobSpec) -> String {
    let channels: serde_json::Map<String, serde_json::Value> = spec
        .inputs
        .iter()
        .map(|c| {
            let mut v = serde_json::json!({
                "TrainingInputMode": format!("{:?}", c.input_mode.unwrap_or(spec.algorithm.input_mode)),
                "S3DistributionType": match c.distribution {
                    DataDistribution::FullyReplicated => "FullyReplicated",
                    DataDistribution::ShardedByKey => "ShardedByS3Key",
                },
                "RecordWrapperType": "None",
                "CompressionType": format!("{:?}", c.compression),
            });
            if let Some(ct) = &c.content_type {
                v["ContentType"] = ct.clone().into();
            }
            (c.name.clone(), v)
        })
        .collect();
    serde_json::to_string_pretty(&channels).unwrap_or_default()
}

/// SageMaker's `resourceconfig.json` of one rank.
fn resource_config(layout: Layout, rank: i32) -> String {
    let hosts: Vec<String> = (0..layout.replicas).map(host).collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "current_host": host(rank),
        "hosts": hosts,
        "network_interface_name": "eth0",
        "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "hosts": hosts}],
    }))
    .unwrap_or_default()
}

/// `pvc://claim/sub/path` as (claim, sub path).
fn pvc_parts(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pvc://")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// The environment variable suffix of a name: upper case, `-` and `.` as `_`.
fn env_suffix(name: &str) -> String {
    name.to_uppercase().replace(['-', '.'], "_")
}

/// Small, fixed requests for the fetch, push and sync steps: they stream
/// data and hold little in memory.
fn step_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("1Gi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn pod_spec(
    job: &TrainingJob,
    name: &str,
    namespace: &str,
    rank: i32,
    layout: Layout,
    settings: &Settings,
) -> PodSpec {
    let spec = &job.spec;
    let placement = &spec.resources.placement;
    let gpus = spec.resources.compute.gpus;

    let mut volumes = vec![
        Volume {
            name: "kiln-ml".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: spec.resources.volume_size.clone(),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "kiln-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name),
                items: Some(vec![
                    key_to_path("hyperparameters.json", "hyperparameters.json"),
                    key_to_path("inputdataconfig.json", "inputdataconfig.json"),
                    key_to_path(
                        &format!("resourceconfig-{}.json", host(rank)),
                        "resourceconfig.json",
                    ),
                ]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    // /opt/ml/output is a volume of its own: the training container's
    // termination message is /opt/ml/output/failure, and the container
    // runtime creates the folder of that file as root, so without a volume
    // there the algorithm (not root) could not write beside it.
    volumes.push(Volume {
        name: "kiln-output".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let mut mounts = vec![
        mount("kiln-ml", ML, false),
        mount("kiln-config", CONFIG_DIR, true),
        mount("kiln-output", "/opt/ml/output", false),
    ];
    if let Some(size) = &placement.shm_size {
        volumes.push(Volume {
            name: "kiln-shm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(size.clone()),
            }),
            ..Volume::default()
        });
        mounts.push(mount("kiln-shm", "/dev/shm", false));
    }
    if let Some(ckpt) = &spec.checkpoint {
        volumes.push(Volume {
            name: "kiln-checkpoints".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        mounts.push(mount("kiln-checkpoints", &ckpt.local_path, false));
    }
    let mut channel_env = Vec::new();
    let mut init_containers = Vec::new();
    for (i, channel) in spec.inputs.iter().enumerate() {
        let dir = format!("{DATA_DIR}/{}", channel.name);
        let uri = &channel.source.uri;
        if let Some((claim, sub_path)) = pvc_parts(uri) {
            let volume = format!("kiln-data-{i}");
            volumes.push(Volume {
                name: volume.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                sub_path: (!sub_path.is_empty()).then(|| sub_path.to_string()),
                ..mount(&volume, &dir, true)
            });
            channel_env.push(env(
                &format!("SM_CHANNEL_{}", env_suffix(&channel.name)),
                dir,
            ));
        } else if let Some(path) = uri.strip_prefix("file://") {
            channel_env.push(env(
                &format!("SM_CHANNEL_{}", env_suffix(&channel.name)),
                path,
            ));
        } else {
            let mut args = vec![
                "fetch".into(),
                "--uri".into(),
                uri.clone(),
                "--to".into(),
                dir.clone(),
            ];
            if channel.distribution == DataDistribution::ShardedByKey {
                args.extend(["--shard".into(), format!("{rank}/{}", layout.replicas)]);
            }
            if let Some(seed) = channel.shuffle_seed {
                args.extend(["--shuffle-seed".into(), seed.to_string()]);
            }
            if channel.compression == Compression::Gzip {
                args.extend(["--decompress".into(), "gzip".into()]);
            }
            init_containers.push(step(
                &format!("fetch-{i}"),
                settings,
                args,
                credentials(&channel.source),
                vec![mount("kiln-ml", ML, false)],
            ));
            channel_env.push(env(
                &format!("SM_CHANNEL_{}", env_suffix(&channel.name)),
                dir,
            ));
        }
    }
    if let Some(ckpt) = &spec.checkpoint {
        let ckpt_mounts = vec![mount("kiln-checkpoints", &ckpt.local_path, false)];
        init_containers.push(step(
            "checkpoint-restore",
            settings,
            vec![
                "fetch".into(),
                "--uri".into(),
                ckpt.location.uri.clone(),
                "--to".into(),
                ckpt.local_path.clone(),
                "--allow-empty".into(),
            ],
            credentials(&ckpt.location),
            ckpt_mounts.clone(),
        ));
        if rank == 0 {
            let mut args = vec![
                "sync".into(),
                "--dir".into(),
                ckpt.local_path.clone(),
                "--to".into(),
                ckpt.location.uri.clone(),
            ];
            if let Some(interval) = ckpt.interval_seconds {
                args.extend(["--interval-seconds".into(), interval.min(30).to_string()]);
            }
            let mut sidecar = step(
                "checkpoint-sync",
                settings,
                args,
                credentials(&ckpt.location),
                ckpt_mounts,
            );
            sidecar.restart_policy = Some("Always".into());
            init_containers.push(sidecar);
        }
    }

    let hosts: Vec<String> = (0..layout.replicas).map(host).collect();
    let subdomain = service_name(name);
    let service_host = |h: &str| format!("{h}.{subdomain}");
    let master = service_host(&host(0));
    let channels: Vec<&str> = spec.inputs.iter().map(|c| c.name.as_str()).collect();
    let mut train_env = vec![
        env("SM_MODEL_DIR", MODEL_DIR),
        env("SM_OUTPUT_DIR", "/opt/ml/output"),
        env("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"),
        env("SM_INPUT_DIR", "/opt/ml/input"),
        env("SM_INPUT_CONFIG_DIR", CONFIG_DIR),
        env(
            "SM_CHANNELS",
            serde_json::to_string(&channels).unwrap_or_default(),
        ),
        env(
            "SM_HPS",
            serde_json::to_string(&spec.hyperparameters).unwrap_or_default(),
        ),
        env("SM_CURRENT_HOST", host(rank)),
        env(
            "SM_HOSTS",
            serde_json::to_string(&hosts).unwrap_or_default(),
        ),
        env("SM_NUM_GPUS", gpus.to_string()),
        env("MASTER_ADDR", master.clone()),
        env("MASTER_PORT", MASTER_PORT.to_string()),
        env("PET_MASTER_ADDR", master),
        env("PET_MASTER_PORT", MASTER_PORT.to_string()),
        env("PET_NNODES", layout.replicas.to_string()),
        env("PET_NODE_RANK", rank.to_string()),
        env(
            "PET_NPROC_PER_NODE",
            layout.processes_per_replica.to_string(),
        ),
        env("WORLD_SIZE", layout.world_size().to_string()),
        env("RANK", (rank * layout.processes_per_replica).to_string()),
        env("LOCAL_RANK", "0"),
    ];
    if let Some(cpus) = spec
        .resources
        .compute
        .cpu
        .as_ref()
        .and_then(|q| whole_cpus(&q.0))
    {
        train_env.push(env("SM_NUM_CPUS", cpus.to_string()));
    }
    for (k, v) in &spec.hyperparameters {
        train_env.push(env(&format!("SM_HP_{}", env_suffix(k)), v.clone()));
    }
    train_env.extend(channel_env);
    if let Some(ckpt) = &spec.checkpoint {
        train_env.push(env("KILN_CHECKPOINT_DIR", ckpt.local_path.clone()));
    }
    // The user's variables come last, so they win over Kiln's.
    train_env.extend(spec.env.iter().cloned());

    let mut train_mounts = mounts.clone();
    if spec.algorithm.name.is_none() {
        // The training contract promises a custom image an existing
        // /opt/ml/model (SageMaker creates it; scripts write into it without
        // a mkdir): a subPath of the /opt/ml volume, which the kubelet
        // creates before the container starts. Kiln's runtime creates its
        // own as the non-root user it runs as.
        train_mounts.push(VolumeMount {
            sub_path: Some("model".into()),
            ..mount("kiln-ml", MODEL_DIR, false)
        });
    }
    train_mounts.extend(placement.volume_mounts.iter().cloned());
    let (image, command, args) = match (&spec.algorithm.name, &spec.algorithm.image) {
        (Some(algorithm), _) => {
            train_env.push(env("KILN_ALGORITHM", algorithm.as_str()));
            (
                settings.runtime_image.clone(),
                None,
                Some(vec!["train".to_string()]),
            )
        }
        (None, image) => (
            image.clone().unwrap_or_default(),
            spec.algorithm.command.clone(),
            Some(
                spec.algorithm
                    .args
                    .clone()
                    .unwrap_or_else(|| vec!["train".into()]),
            ),
        ),
    };
    init_containers.push(Container {
        name: TRAIN_CONTAINER.into(),
        image: Some(image),
        command,
        args,
        env: Some(train_env),
        resources: Some(compute_requirements(&spec.resources.compute)),
        volume_mounts: Some(train_mounts),
        termination_message_path: Some(FAILURE_FILE.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    });

    let push_args = if rank == 0 {
        let mut args = vec![
            "push".into(),
            "--from".into(),
            MODEL_DIR.into(),
            "--to".into(),
            model_artifact_uri(spec, namespace, name),
            "--compression".into(),
            match spec.output.compression {
                Compression::Gzip => "gzip".into(),
                Compression::None => "none".into(),
            },
        ];
        if let Some(key) = &spec.output.kms_key_id {
            args.extend(["--kms-key-id".into(), key.clone()]);
        }
        // The built-ins' latest metric values ride along in the report.
        args.extend(["--metrics".into(), "/opt/ml/output/metrics.json".into()]);
        args
    } else {
        vec!["push".into(), "--from".into(), MODEL_DIR.into()]
    };
    let mut push_mounts = vec![mount("kiln-ml", ML, false)];
    if rank == 0 {
        push_mounts.push(mount("kiln-output", "/opt/ml/output", true));
    }
    let push = step(
        PUSH_CONTAINER,
        settings,
        push_args,
        if rank == 0 {
            credentials(&spec.output.location)
        } else {
            None
        },
        push_mounts,
    );

    let mut tolerations = placement.tolerations.clone();
    let mut affinity = placement.affinity.clone();
    if spec.capacity_type.uses_spot() {
        tolerations.extend(settings.spot_tolerations.iter().cloned());
        tolerations.push(Toleration {
            key: Some(settings.spot_label.0.clone()),
            operator: Some("Equal".into()),
            value: Some(settings.spot_label.1.clone()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
        let requirement = NodeSelectorRequirement {
            key: settings.spot_label.0.clone(),
            operator: "In".into(),
            values: Some(vec![settings.spot_label.1.clone()]),
        };
        let node = affinity
            .get_or_insert_with(Affinity::default)
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        if spec.capacity_type == CapacityType::Spot {
            let required = node
                .required_during_scheduling_ignored_during_execution
                .get_or_insert_with(Default::default);
            if required.node_selector_terms.is_empty() {
                required
                    .node_selector_terms
                    .push(NodeSelectorTerm::default());
            }
            // Terms are ORed: the spot requirement goes into each of them.
            for term in &mut required.node_selector_terms {
                term.match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(requirement.clone());
            }
        } else {
            node.preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .push(PreferredSchedulingTerm {
                    weight: 100,
                    preference: NodeSelectorTerm {
                        match_expressions: Some(vec![requirement]),
                        ..NodeSelectorTerm::default()
                    },
                });
        }
    }
    if gpus > 0 {
        tolerations.push(gpu_toleration());
    }
    volumes.extend(placement.volumes.iter().map(to_pod_volume));
    let built_in = spec.algorithm.name.is_some();

    PodSpec {
        restart_policy: Some("Never".into()),
        hostname: Some(host(rank)),
        subdomain: Some(service_name(name)),
        dns_config: Some(PodDNSConfig {
            searches: Some(vec![format!(
                "{}.{namespace}.svc.{}",
                service_name(name),
                settings.cluster_domain
            )]),
            ..PodDNSConfig::default()
        }),
        enable_service_links: Some(false),
        automount_service_account_token: Some(placement.service_account_name.is_some()),
        service_account_name: placement.service_account_name.clone(),
        priority_class_name: placement.priority_class_name.clone(),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        affinity,
        image_pull_secrets: image_pull_secrets(placement),
        termination_grace_period_seconds: placement.termination_grace_period_seconds,
        scheduling_gates: Some(vec![PodSchedulingGate {
            name: GANG_GATE.into(),
        }]),
        security_context: built_in.then(restricted_pod),
        volumes: Some(volumes),
        init_containers: Some(init_containers),
        containers: vec![push],
        ..PodSpec::default()
    }
}

fn key_to_path(key: &str, path: &str) -> KeyToPath {
    KeyToPath {
        key: key.into(),
        path: path.into(),
        ..KeyToPath::default()
    }
}

/// A `kiln-runtime` step (fetch, push, sync).
fn step(
    name: &str,
    settings: &Settings,
    args: Vec<String>,
    env_from: Option<Vec<EnvFromSource>>,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(settings.runtime_image.clone()),
        args: Some(args),
        env_from,
        resources: Some(step_resources()),
        volume_mounts: Some(volume_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

/// Whole CPUs of a quantity, rounded up (`500m` is 1, `4` is 4).
fn whole_cpus(q: &str) -> Option<i64> {
    if let Some(milli) = q.strip_suffix('m') {
        return milli.parse::<i64>().ok().map(|m| (m + 999) / 1000);
    }
    q.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(|v| v.ceil() as i64)
}

#[cfg(test)]
mod tests;
