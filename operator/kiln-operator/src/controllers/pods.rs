//! Pod pieces every controller's build step shares: environment variables,
//! storage credentials, mounts, resources, placement and the locked-down
//! security settings of Kiln's own containers. Pure functions, no client.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kiln_api::common::{ComputeResources, Placement, StorageLocation};

/// The label every child carries: `app.kubernetes.io/managed-by=kiln`.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kiln");

/// A plain environment variable.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The credentials of a location, as the Secret's keys in the environment.
pub fn credentials(location: &StorageLocation) -> Option<Vec<EnvFromSource>> {
    location.secret_ref.as_ref().map(|s| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: s.name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]
    })
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// Requests and limits of a replica: CPU requested, memory requested and
/// limited, GPUs requested and limited.
pub fn compute_requirements(compute: &ComputeResources) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &compute.cpu {
        requests.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &compute.memory {
        requests.insert("memory".to_string(), memory.clone());
        limits.insert("memory".to_string(), memory.clone());
    }
    if compute.gpus > 0 {
        let q = Quantity(compute.gpus.to_string());
        requests.insert("nvidia.com/gpu".to_string(), q.clone());
        limits.insert("nvidia.com/gpu".to_string(), q);
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// The toleration of the `nvidia.com/gpu` taint GPU nodes carry.
pub fn gpu_toleration() -> Toleration {
    Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    }
}

/// A user's volume as a pod volume.
pub fn to_pod_volume(v: &kiln_api::common::Volume) -> Volume {
    Volume {
        name: v.name.clone(),
        persistent_volume_claim: v.persistent_volume_claim.clone(),
        config_map: v.config_map.clone(),
        secret: v.secret.clone(),
        empty_dir: v.empty_dir.clone(),
        nfs: v.nfs.clone(),
        csi: v.csi.clone(),
        ..Volume::default()
    }
}

/// The placement's image pull secrets as the pod spec lists them.
pub fn image_pull_secrets(placement: &Placement) -> Option<Vec<LocalObjectReference>> {
    (!placement.image_pull_secrets.is_empty()).then(|| {
        placement
            .image_pull_secrets
            .iter()
            .map(|s| LocalObjectReference {
                name: s.name.clone(),
            })
            .collect()
    })
}

/// The placement's pod labels, without any in Kiln's own `kiln.dev/` prefix
/// (those select children and cannot be overridden).
pub fn user_labels(placement: &Placement) -> BTreeMap<String, String> {
    placement
        .pod_labels
        .iter()
        .filter(|(k, _)| !k.starts_with("kiln.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The pod security context of pods running only Kiln's images: non-root,
/// the runtime's default seccomp profile (PodSecurity `restricted`).
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The security context of Kiln's own containers: non-root, no privilege
/// escalation, every capability dropped.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
