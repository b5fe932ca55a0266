//! Build: an Endpoint's spec, with every variant's model resolved, to the
//! children that serve it, with no API client.
//!
//! Every variant (production or shadow) is a Deployment of serving pods and
//! a ClusterIP Service, both named `<endpoint>-<variant>`. In front of them
//! runs the traffic router: a Deployment `<endpoint>-router` reading its
//! configuration from the ConfigMap `<endpoint>-router`, behind the Service
//! named like the endpoint, whose address is the endpoint's URL. A weight
//! change rewrites only the ConfigMap, which the router applies without a
//! restart; a model or resource change rolls the variant's Deployment with
//! no replica down before its successor answers `/ping`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec, SleepAction, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kiln_api::common::{ComputeResources, Placement, StorageLocation};
use kiln_api::endpoint::{Endpoint, ResolvedModelPackage};
use kiln_api::router::{self, CaptureConfig, RoutedVariant, RouterConfig, ShadowRoute};
use kiln_api::training_job::BuiltinAlgorithm;
use kube::{Resource, ResourceExt};

use crate::controllers::pods::{
    MANAGED_BY, compute_requirements, credentials, env, gpu_toleration, image_pull_secrets, mount,
    restricted_container, restricted_pod, to_pod_volume, user_labels,
};

/// What the operator's configuration adds to serving and router pods.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `kiln-runtime` image: serves the built-ins, fetches models.
    pub runtime_image: String,
    /// The image holding `kiln-router`.
    pub router_image: String,
    /// Router replicas of every endpoint.
    pub router_replicas: i32,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
}

/// The label naming a child's Endpoint.
pub const ENDPOINT_LABEL: &str = "kiln.dev/endpoint";
/// The label naming a serving pod's variant.
pub const VARIANT_LABEL: &str = "kiln.dev/variant";
/// The label saying what a pod does: `serving`, `shadow` or `router`.
pub const ROLE_LABEL: &str = "kiln.dev/role";
/// The annotation on the router ConfigMap with the hash of the serving pod
/// templates: a new hash is a new revision.
pub const TEMPLATE_HASH_ANNOTATION: &str = "kiln.dev/serving-template-hash";
/// The annotation on the router ConfigMap with the revision it belongs to.
pub const REVISION_ANNOTATION: &str = "kiln.dev/revision";
/// The annotation set on router pods with the configuration's hash: a
/// changed pod makes the kubelet refresh the mounted ConfigMap at once
/// instead of at its next periodic sync.
pub const ROUTER_CONFIG_ANNOTATION: &str = "kiln.dev/router-config-hash";
/// The serving container's name.
pub const SERVE_CONTAINER: &str = "serve";
/// The router container's name.
pub const ROUTER_CONTAINER: &str = "router";
/// The serving port (the SageMaker contract).
pub const SERVE_PORT: i32 = 8080;
/// The Open Inference Protocol's gRPC port of Kiln's runtime.
pub const GRPC_PORT: i32 = 8081;
/// Seconds a stopping pod keeps answering while it leaves the Service's
/// endpoints everywhere (kube-proxy and the router's pooled connections).
pub const DRAIN_SECONDS: i64 = 5;

const MODEL_DIR: &str = "/opt/ml/model";
const MODEL_CACHE: &str = "/opt/ml/model-cache";
const ROUTER_CONFIG_DIR: &str = "/etc/kiln/router";

/// A variant's model, resolved from its source.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// The artifact: a `model.tar.gz` object or a prefix.
    pub model_uri: String,
    /// Credentials for the artifact's store.
    pub secret: Option<StorageLocation>,
    /// The built-in algorithm served by Kiln's runtime, or None for `image`.
    pub algorithm: Option<BuiltinAlgorithm>,
    /// A custom serving image (SageMaker's inference contract).
    pub image: Option<String>,
    /// Environment of the serving container (the source's, then the variant's).
    pub env: Vec<EnvVar>,
    /// The registered version served, when the source was a ModelPackage.
    pub package: Option<ResolvedModelPackage>,
}

impl ResolvedModel {
    /// The image the serving container runs.
    pub fn serving_image(&self, settings: &Settings) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| settings.runtime_image.clone())
    }
}

/// One variant to serve, production or shadow.
#[derive(Debug, Clone)]
pub struct ServedVariant<'a> {
    /// The variant's name.
    pub name: &'a str,
    /// Whether it is a shadow (its answers are never returned).
    pub shadow: bool,
    /// Replicas wanted.
    pub replicas: i32,
    /// Resources of a replica.
    pub resources: &'a ComputeResources,
    /// Node selection.
    pub placement: &'a Placement,
    /// Its model.
    pub model: ResolvedModel,
}

/// Every child of an Endpoint.
#[derive(Debug, Clone)]
pub struct Children {
    /// One Deployment per variant, production variants first.
    pub deployments: Vec<Deployment>,
    /// One Service per variant, in the same order.
    pub services: Vec<Service>,
    /// The router's configuration.
    pub router_config: ConfigMap,
    /// The router's Deployment.
    pub router: Deployment,
    /// The endpoint's Service (the router's).
    pub service: Service,
    /// The router configuration's content hash.
    pub router_config_hash: String,
    /// The hash of every serving pod template: a change is a new revision.
    pub template_hash: String,
}

/// The name of a child `<endpoint>-<suffix>`, shortened with a hash to fit
/// the 63 characters of a Service name.
pub fn child_name(endpoint: &str, suffix: &str) -> String {
    let full = format!("{endpoint}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) as u32);
    let keep = 63 - hash.len() - 1;
    let mut short: String = full.chars().take(keep).collect();
    while short.ends_with('-') {
        short.pop();
    }
    format!("{short}-{hash}")
}

/// The router's Deployment and ConfigMap name.
pub fn router_name(endpoint: &str) -> String {
    child_name(endpoint, "router")
}

/// The in-cluster URL of a Service.
pub fn service_url(service: &str, namespace: &str, settings: &Settings) -> String {
    format!(
        "http://{service}.{namespace}.svc.{}:{SERVE_PORT}",
        settings.cluster_domain
    )
}

/// FNV-1a, 64 bits: a stable hash for names and change detection (not
/// security), the same on every build and platform.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The children of `endpoint` serving `variants` with `weights` (the
/// production variants' current traffic weights, by name) at `revision`.
pub fn children(
    endpoint: &Endpoint,
    variants: &[ServedVariant<'_>],
    weights: &BTreeMap<String, u32>,
    revision: i64,
    settings: &Settings,
) -> Children {
    let name = endpoint.name_any();
    let namespace = endpoint.namespace().unwrap_or_default();
    let owner: Vec<_> = endpoint.controller_owner_ref(&()).into_iter().collect();
    let meta = |child: String, labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(child),
        namespace: Some(namespace.clone()),
        labels: Some(labels),
        owner_references: Some(owner.clone()),
        ..ObjectMeta::default()
    };
    let base_labels = BTreeMap::from([
        (ENDPOINT_LABEL.to_string(), name.clone()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]);

    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut templates = Vec::new();
    for variant in variants {
        let child = child_name(&name, variant.name);
        let mut selector = base_labels.clone();
        selector.insert(VARIANT_LABEL.into(), variant.name.to_string());
        selector.insert(
            ROLE_LABEL.into(),
            if variant.shadow { "shadow" } else { "serving" }.into(),
        );
        let template = serving_template(endpoint, variant, &selector, settings);
        templates.push(serde_json::to_string(&template).unwrap_or_default());
        deployments.push(Deployment {
            metadata: meta(child.clone(), selector.clone()),
            spec: Some(DeploymentSpec {
                replicas: Some(variant.replicas),
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                },
                strategy: Some(no_downtime_rollout()),
                template,
                revision_history_limit: Some(3),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        });
        services.push(Service {
            metadata: meta(child, selector.clone()),
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(vec![
                    service_port("http", SERVE_PORT),
                    service_port("grpc", GRPC_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
    }
    let template_hash = format!("{:016x}", fnv1a(templates.join("\n").as_bytes()));

    let config = router_config(endpoint, variants, weights, revision, settings);
    let config_json = serde_json::to_string_pretty(&config).unwrap_or_default();
    let router_config_hash = format!("{:016x}", fnv1a(config_json.as_bytes()));
    let router = router_name(&name);
    let mut router_labels = base_labels.clone();
    router_labels.insert(ROLE_LABEL.into(), "router".into());
    let mut config_meta = meta(router.clone(), router_labels.clone());
    config_meta.annotations = Some(BTreeMap::from([
        (TEMPLATE_HASH_ANNOTATION.to_string(), template_hash.clone()),
        (REVISION_ANNOTATION.to_string(), revision.to_string()),
    ]));
    let router_config = ConfigMap {
        metadata: config_meta,
        data: Some(BTreeMap::from([(
            router::CONFIG_KEY.to_string(),
            config_json,
        )])),
        ..ConfigMap::default()
    };
    let capture_env = endpoint
        .spec
        .data_capture
        .as_ref()
        .filter(|c| c.enabled)
        .and_then(|c| credentials(&c.destination));
    let router_deployment = Deployment {
        metadata: meta(router.clone(), router_labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.router_replicas),
            selector: LabelSelector {
                match_labels: Some(router_labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(no_downtime_rollout()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(router_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod()),
                    termination_grace_period_seconds: Some(
                        DRAIN_SECONDS + i64::from(endpoint.spec.request_timeout_seconds) + 5,
                    ),
                    volumes: Some(vec![Volume {
                        name: "router-config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: router.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    containers: vec![Container {
                        name: ROUTER_CONTAINER.into(),
                        image: Some(settings.router_image.clone()),
                        command: Some(vec!["/usr/local/bin/kiln-router".into()]),
                        args: Some(vec![
                            "--config".into(),
                            format!("{ROUTER_CONFIG_DIR}/{}", router::CONFIG_KEY),
                        ]),
                        env_from: capture_env,
                        ports: Some(vec![
                            container_port("http", i32::from(router::HTTP_PORT)),
                            container_port("admin", i32::from(router::ADMIN_PORT)),
                        ]),
                        readiness_probe: Some(http_probe(
                            "/healthz",
                            i32::from(router::ADMIN_PORT),
                            2,
                            2,
                        )),
                        lifecycle: Some(drain()),
                        resources: Some(compute_requirements(&ComputeResources {
                            cpu: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                                "100m".into(),
                            )),
                            memory: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                                "256Mi".into(),
                            )),
                            gpus: 0,
                        })),
                        volume_mounts: Some(vec![mount("router-config", ROUTER_CONFIG_DIR, true)]),
                        security_context: Some(restricted_container()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            revision_history_limit: Some(3),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(name.clone(), router_labels.clone()),
        spec: Some(ServiceSpec {
            selector: Some(router_labels),
            ports: Some(vec![
                service_port("http", i32::from(router::HTTP_PORT)),
                service_port("admin", i32::from(router::ADMIN_PORT)),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Children {
        deployments,
        services,
        router_config,
        router: router_deployment,
        service,
        router_config_hash,
        template_hash,
    }
}

/// The router's configuration for these variants and weights.
pub fn router_config(
    endpoint: &Endpoint,
    variants: &[ServedVariant<'_>],
    weights: &BTreeMap<String, u32>,
    revision: i64,
    settings: &Settings,
) -> RouterConfig {
    let name = endpoint.name_any();
    let namespace = endpoint.namespace().unwrap_or_default();
    let url = |variant: &str| service_url(&child_name(&name, variant), &namespace, settings);
    let spec = &endpoint.spec;
    RouterConfig {
        endpoint: name.clone(),
        revision,
        request_timeout_seconds: spec.request_timeout_seconds.max(1) as u32,
        variants: variants
            .iter()
            .filter(|v| !v.shadow)
            .map(|v| RoutedVariant {
                name: v.name.to_string(),
                url: url(v.name),
                weight: weights.get(v.name).copied().unwrap_or(0),
            })
            .collect(),
        shadows: spec
            .shadow_variants
            .iter()
            .filter(|s| variants.iter().any(|v| v.shadow && v.name == s.name))
            .map(|s| ShadowRoute {
                name: s.name.clone(),
                url: url(&s.name),
                sampling_percent: s.sampling_percent.clamp(1, 100) as u32,
            })
            .collect(),
        data_capture: spec
            .data_capture
            .as_ref()
            .filter(|c| c.enabled)
            .map(|c| CaptureConfig {
                sampling_percent: c.sampling_percent.clamp(0, 100) as u32,
                destination: c.destination.uri.clone(),
                capture_input: c.capture_input,
                capture_output: c.capture_output,
                max_batch_records: 1000,
                flush_seconds: 10,
            }),
    }
}

/// The production weights the spec asks for.
pub fn initial_weights(endpoint: &Endpoint) -> BTreeMap<String, u32> {
    endpoint
        .spec
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.initial_weight.max(0) as u32))
        .collect()
}

fn serving_template(
    endpoint: &Endpoint,
    variant: &ServedVariant<'_>,
    selector: &BTreeMap<String, String>,
    settings: &Settings,
) -> PodTemplateSpec {
    let spec = &endpoint.spec;
    let model = &variant.model;
    let placement = variant.placement;
    let mut labels = user_labels(placement);
    labels.extend(selector.clone());
    let annotations = placement.pod_annotations.clone();

    let mut volumes = vec![Volume {
        name: "kiln-model".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    volumes.extend(placement.volumes.iter().map(to_pod_volume));
    let mut mounts = Vec::new();
    let mut init_containers = Vec::new();
    let mut container_env = vec![
        env("SAGEMAKER_BIND_TO_PORT", SERVE_PORT.to_string()),
        env("SM_MODEL_DIR", MODEL_DIR),
        env("KILN_ENDPOINT", endpoint.name_any()),
        env("KILN_VARIANT", variant.name),
    ];
    let built_in = model.image.is_none();
    let (image, args) = if built_in {
        // Kiln's runtime downloads and unpacks the artifact itself, streamed
        // into the model cache, with the credentials in its environment.
        mounts.push(mount("kiln-model", MODEL_CACHE, false));
        let mut args = vec![
            "serve".to_string(),
            "--model".into(),
            model.model_uri.clone(),
            "--model-cache".into(),
            MODEL_CACHE.into(),
            "--port".into(),
            SERVE_PORT.to_string(),
        ];
        if let Some(batching) = &spec.batching {
            args.extend([
                "--max-batch-size".into(),
                batching.max_batch_size.to_string(),
                "--max-batch-delay-ms".into(),
                batching.max_latency_milliseconds.to_string(),
            ]);
        }
        if let Some(algorithm) = model.algorithm {
            container_env.push(env("KILN_ALGORITHM", algorithm.as_str()));
        }
        (settings.runtime_image.clone(), args)
    } else {
        // Your own image gets SageMaker's layout: the artifact unpacked
        // into /opt/ml/model before it starts.
        init_containers.push(Container {
            name: "fetch-model".into(),
            image: Some(settings.runtime_image.clone()),
            args: Some(vec![
                "fetch".into(),
                "--uri".into(),
                model.model_uri.clone(),
                "--to".into(),
                MODEL_DIR.into(),
                "--decompress".into(),
                "gzip".into(),
            ]),
            env_from: model.secret.as_ref().and_then(credentials),
            volume_mounts: Some(vec![mount("kiln-model", MODEL_DIR, false)]),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(restricted_container()),
            ..Container::default()
        });
        mounts.push(mount("kiln-model", MODEL_DIR, true));
        (model.serving_image(settings), vec!["serve".to_string()])
    };
    mounts.extend(placement.volume_mounts.iter().cloned());
    // The user's variables come last, so they win over Kiln's.
    container_env.extend(model.env.iter().cloned());

    let mut tolerations = placement.tolerations.clone();
    if variant.resources.gpus > 0 {
        tolerations.push(gpu_toleration());
    }
    // The startup probe allows the download and the start-up check their
    // time; readiness then takes a replica out of rotation within seconds.
    let startup_budget = variant_startup_budget(endpoint, variant.name);
    let container = Container {
        name: SERVE_CONTAINER.into(),
        image: Some(image),
        args: Some(args),
        env: Some(container_env),
        env_from: if built_in {
            model.secret.as_ref().and_then(credentials)
        } else {
            None
        },
        ports: Some(vec![
            container_port("http", SERVE_PORT),
            container_port("grpc", GRPC_PORT),
        ]),
        startup_probe: Some(Probe {
            failure_threshold: Some((startup_budget / 2).max(1)),
            ..http_probe("/ping", SERVE_PORT, 2, 1)
        }),
        readiness_probe: Some(http_probe("/ping", SERVE_PORT, 2, 2)),
        liveness_probe: Some(Probe {
            timeout_seconds: Some(5),
            ..http_probe("/ping", SERVE_PORT, 10, 6)
        }),
        lifecycle: Some(drain()),
        resources: Some(compute_requirements(variant.resources)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: built_in.then(restricted_container),
        ..Container::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            enable_service_links: Some(false),
            automount_service_account_token: Some(placement.service_account_name.is_some()),
            service_account_name: placement.service_account_name.clone(),
            priority_class_name: placement.priority_class_name.clone(),
            node_selector: (!placement.node_selector.is_empty())
                .then(|| placement.node_selector.clone()),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            affinity: placement.affinity.clone(),
            image_pull_secrets: image_pull_secrets(placement),
            termination_grace_period_seconds: Some(
                placement
                    .termination_grace_period_seconds
                    .unwrap_or(DRAIN_SECONDS + i64::from(spec.request_timeout_seconds) + 5),
            ),
            security_context: built_in.then(restricted_pod),
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// Seconds from a serving container's start to its first passing `/ping`:
/// the variant's download and start-up allowances (shadows get the defaults).
fn variant_startup_budget(endpoint: &Endpoint, variant: &str) -> i32 {
    endpoint
        .spec
        .variants
        .iter()
        .find(|v| v.name == variant)
        .map_or(1200, |v| {
            v.model_download_timeout_seconds + v.startup_health_check_timeout_seconds
        })
}

/// A surge of one and none unavailable: every old replica serves until its
/// successor answers.
fn no_downtime_rollout() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// A stopping container keeps answering for [`DRAIN_SECONDS`] before its
/// SIGTERM, while it leaves every endpoint list.
fn drain() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: DRAIN_SECONDS,
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests;
