//! The Endpoint controller: resolve -> build -> apply -> status.
//!
//! Every variant's model is resolved first (a completed TrainingJob, an
//! Approved ModelPackage, the newest Approved version of a group, or an
//! artifact URI); while one cannot be, nothing already serving is touched
//! and `ReferencesResolved` says what is missing. Then the variants'
//! Deployments and Services, the router's ConfigMap, Deployment and Service
//! are applied, variants no longer in the spec are deleted, and status
//! reports each variant's replicas, model and weight.
//!
//! A change of the serving pod templates raises `status.revision`; the
//! Deployments roll it out one surged replica at a time, each old replica
//! serving until its successor answers `/ping`.

pub mod build;
pub mod resolve;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::endpoint::{Endpoint, EndpointState, EndpointStatus, HostingMode, VariantStatus};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use self::build::{ENDPOINT_LABEL, ROLE_LABEL, ROUTER_CONFIG_ANNOTATION, ServedVariant};
use super::Context;
use super::apply::{apply, publish, write_status};
use super::error::{Error, Result};

/// The field manager of the children this controller applies.
const CHILD_MANAGER: &str = "kiln-operator/endpoint";
/// The field manager of the status this controller writes.
const STATUS_MANAGER: &str = "kiln-operator/endpoint-status";
/// How often an endpoint that is not ready yet is looked at.
const NOT_READY_RECHECK: Duration = Duration::from_secs(5);
/// How often a model reference that does not resolve yet is looked at
/// (changes of TrainingJobs and ModelPackages also trigger a reconcile).
const UNRESOLVED_RECHECK: Duration = Duration::from_secs(30);
/// How often a serving endpoint is looked at when nothing happens.
const SERVING_RECHECK: Duration = Duration::from_secs(120);

/// One reconcile of an Endpoint.
pub async fn reconcile(endpoint: Arc<Endpoint>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = endpoint
        .namespace()
        .ok_or(Error::Incomplete("an Endpoint without a namespace"))?;
    let name = endpoint.name_any();
    let endpoints: Api<Endpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let settings = &ctx.endpoint_settings;
    let now = Time(Timestamp::now());
    let generation = endpoint.metadata.generation;
    let old = endpoint.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    status.url = Some(build::service_url(&name, &namespace, settings));

    if let Some(message) = unsupported(&endpoint) {
        set(
            &mut status,
            types::READY,
            false,
            reasons::INVALID_SPEC,
            &message,
            generation,
            &now,
        );
        status.state = Some(EndpointState::Failed);
        status.failure_reason = Some(message.clone());
        write_status(&endpoints, &name, &old, &status, STATUS_MANAGER).await?;
        publish(
            &ctx,
            endpoint.as_ref(),
            EventType::Warning,
            reasons::INVALID_SPEC,
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }

    // Resolve every variant's model before touching anything.
    let mut served = Vec::new();
    let mut missing = Vec::new();
    let spec = &endpoint.spec;
    let wanted = spec
        .variants
        .iter()
        .map(|v| {
            (
                &v.name,
                false,
                v.replicas,
                &v.resources,
                &v.placement,
                &v.model,
            )
        })
        .chain(spec.shadow_variants.iter().map(|s| {
            (
                &s.name,
                true,
                s.replicas,
                &s.resources,
                &s.placement,
                &s.model,
            )
        }));
    for (variant, shadow, replicas, resources, placement, source) in wanted {
        match resolve::resolve(&ctx.client, &namespace, source).await? {
            Ok(model) => served.push(ServedVariant {
                name: variant,
                shadow,
                replicas,
                resources,
                placement,
                model,
            }),
            Err(u) => missing.push((variant.clone(), u)),
        }
    }
    if let Some((_, first)) = missing.first() {
        let message = missing
            .iter()
            .map(|(variant, u)| format!("variant {variant}: {}", u.message))
            .collect::<Vec<_>>()
            .join("; ");
        set(
            &mut status,
            types::REFERENCES_RESOLVED,
            false,
            first.reason,
            &message,
            generation,
            &now,
        );
        if status.revision == 0 {
            status.state = Some(EndpointState::Creating);
            set(
                &mut status,
                types::READY,
                false,
                first.reason,
                &message,
                generation,
                &now,
            );
        }
        write_status(&endpoints, &name, &old, &status, STATUS_MANAGER).await?;
        return Ok(Action::requeue(UNRESOLVED_RECHECK));
    }
    set(
        &mut status,
        types::REFERENCES_RESOLVED,
        true,
        "Resolved",
        "",
        generation,
        &now,
    );

    // A new serving template is a new revision; the hash is kept in status
    // beside the revision, so both change in one write.
    let weights = build::initial_weights(&endpoint);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut children = build::children(&endpoint, &served, &weights, status.revision, settings);
    if status.serving_template_hash.as_deref() != Some(children.template_hash.as_str()) {
        if status.revision > 0 {
            status.previous_revision = Some(status.revision);
        }
        status.revision += 1;
        status.serving_template_hash = Some(children.template_hash.clone());
        children = build::children(&endpoint, &served, &weights, status.revision, settings);
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let (applied, router_deployment) =
        match apply_children(&deployments, &services, &config_maps, &children).await {
            Ok(applied) => applied,
            Err(Error::ChildRefused(message)) => {
                set(
                    &mut status,
                    types::READY,
                    false,
                    "ChildRefused",
                    &message,
                    generation,
                    &now,
                );
                status.state = Some(EndpointState::Failed);
                status.failure_reason = Some(message.clone());
                write_status(&endpoints, &name, &old, &status, STATUS_MANAGER).await?;
                publish(
                    &ctx,
                    endpoint.as_ref(),
                    EventType::Warning,
                    "ChildRefused",
                    &message,
                )
                .await;
                // What refused it (a quota, a policy, an object of the same
                // name) may go away without a change of the Endpoint.
                return Ok(Action::requeue(UNRESOLVED_RECHECK));
            }
            Err(e) => return Err(e),
        };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    refresh_router_config(&pods, &name, &children.router_config_hash).await?;
    remove_stale(&deployments, &services, &name, &served).await?;

    // Status: each variant's replicas from its Deployment, the serving
    // pods' failures, the summary.
    let serving_pods = pods
        .list(
            &ListParams::default().labels(&format!("{ENDPOINT_LABEL}={name},{ROLE_LABEL}!=router")),
        )
        .await?
        .items;
    let mut variant_status = Vec::new();
    let mut all_rolled_out = true;
    let mut production_ready = true;
    let mut ready_total = 0;
    for v in &served {
        let child = build::child_name(&name, v.name);
        let d = applied.get(&child);
        let rollout = d.map(rollout_of).unwrap_or_default();
        all_rolled_out &= rollout.done;
        if !v.shadow {
            ready_total += rollout.ready;
            if weights.get(v.name).copied().unwrap_or(0) > 0 && v.replicas > 0 && rollout.ready == 0
            {
                production_ready = false;
            }
        }
        let weight = f64::from(weights.get(v.name).copied().unwrap_or(0));
        variant_status.push(VariantStatus {
            name: v.name.to_string(),
            current_weight: if v.shadow { 0.0 } else { weight },
            desired_weight: if v.shadow { 0.0 } else { weight },
            current_replicas: rollout.replicas,
            desired_replicas: v.replicas,
            ready_replicas: rollout.ready,
            image: Some(v.model.serving_image(settings)),
            model_uri: Some(v.model.model_uri.clone()),
            model_package: v.model.package.clone(),
        });
    }
    let router_rollout = rollout_of(&router_deployment);
    all_rolled_out &= router_rollout.done;
    status.variants = variant_status;
    status.ready_replicas = Some(ready_total);
    let failures = serving_failures(&serving_pods);
    let ready = production_ready && router_rollout.ready > 0;
    if ready {
        let message = format!("{ready_total} serving replicas ready behind the router");
        set(
            &mut status,
            types::READY,
            true,
            reasons::IN_SERVICE,
            &message,
            generation,
            &now,
        );
        status.failure_reason = None;
    } else if let Some((reason, message)) = failures.first() {
        set(
            &mut status,
            types::READY,
            false,
            reason,
            message,
            generation,
            &now,
        );
    } else {
        let message = if router_rollout.ready == 0 {
            "waiting for the router".to_string()
        } else {
            "waiting for a ready replica of every production variant".to_string()
        };
        set(
            &mut status,
            types::READY,
            false,
            reasons::CREATING,
            &message,
            generation,
            &now,
        );
    }
    let was = old.state;
    status.state = Some(if ready && all_rolled_out {
        EndpointState::InService
    } else if status.last_deployed_time.is_none() {
        match failures.first() {
            Some((_, message)) => {
                status.failure_reason = Some(message.clone());
                EndpointState::Failed
            }
            None => EndpointState::Creating,
        }
    } else {
        EndpointState::Updating
    });
    if status.state == Some(EndpointState::InService)
        && (was != Some(EndpointState::InService) || old.revision != status.revision)
    {
        status.last_deployed_time = Some(now.clone());
        status.previous_revision = None;
        status.rollout_step = None;
        status.rollout_step_start_time = None;
    }
    write_status(&endpoints, &name, &old, &status, STATUS_MANAGER).await?;
    if status.state != was {
        let (type_, note) = match status.state {
            Some(EndpointState::InService) => (
                EventType::Normal,
                format!(
                    "revision {} serves at {}",
                    status.revision,
                    status.url.as_deref().unwrap_or_default()
                ),
            ),
            Some(EndpointState::Failed) => (
                EventType::Warning,
                status.failure_reason.clone().unwrap_or_default(),
            ),
            Some(EndpointState::Updating) => (
                EventType::Normal,
                format!("rolling out revision {}", status.revision),
            ),
            _ => (
                EventType::Normal,
                "creating the serving replicas and the router".into(),
            ),
        };
        let reason = format!("{:?}", status.state.unwrap_or(EndpointState::Creating));
        publish(&ctx, endpoint.as_ref(), type_, &reason, &note).await;
    }
    Ok(Action::requeue(
        if status.state == Some(EndpointState::InService) {
            SERVING_RECHECK
        } else {
            NOT_READY_RECHECK
        },
    ))
}

/// Applies every child: Services first (a router never starts without its
/// upstreams' names), then the variants, the router's configuration and the
/// router. Returns the applied variant Deployments by name and the router's.
async fn apply_children(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    config_maps: &Api<ConfigMap>,
    children: &build::Children,
) -> Result<(BTreeMap<String, Deployment>, Deployment)> {
    for service in children.services.iter().chain([&children.service]) {
        apply(services, service, CHILD_MANAGER).await?;
    }
    let mut applied = BTreeMap::new();
    for deployment in &children.deployments {
        let d = apply(deployments, deployment, CHILD_MANAGER).await?;
        applied.insert(d.name_any(), d);
    }
    apply(config_maps, &children.router_config, CHILD_MANAGER).await?;
    let router = apply(deployments, &children.router, CHILD_MANAGER).await?;
    Ok((applied, router))
}

/// Settings the controller cannot serve yet, as the condition's message.
fn unsupported(endpoint: &Endpoint) -> Option<String> {
    let spec = &endpoint.spec;
    let multi = spec
        .variants
        .iter()
        .map(|v| (&v.name, &v.model))
        .chain(spec.shadow_variants.iter().map(|s| (&s.name, &s.model)))
        .find(|(_, m)| m.hosting == HostingMode::MultiModel);
    if let Some((variant, _)) = multi {
        return Some(format!(
            "variant {variant}: model.hosting MultiModel is not served by Endpoints yet; use SingleModel"
        ));
    }
    if spec.mode != kiln_api::endpoint::EndpointMode::RealTime {
        return Some(format!(
            "mode {:?} is not served yet; only RealTime endpoints are",
            spec.mode
        ));
    }
    None
}

/// A Deployment's progress.
#[derive(Debug, Default, Clone, Copy)]
struct Rollout {
    replicas: i32,
    ready: i32,
    done: bool,
}

fn rollout_of(d: &Deployment) -> Rollout {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = s.updated_replicas.unwrap_or(0);
    let ready = s.ready_replicas.unwrap_or(0);
    let replicas = s.replicas.unwrap_or(0);
    Rollout {
        replicas,
        ready,
        done: observed && updated >= wanted && replicas == updated && ready >= wanted,
    }
}

/// Why serving pods do not start, as (reason, message), newest evidence
/// first: a model that cannot be loaded, an image that cannot be pulled, a
/// crashing container.
fn serving_failures(pods: &[Pod]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for pod in pods {
        let variant = pod
            .labels()
            .get(build::VARIANT_LABEL)
            .cloned()
            .unwrap_or_default();
        let statuses = pod.status.as_ref().map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        });
        for c in statuses.unwrap_or_default() {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let reason = waiting
                .and_then(|w| w.reason.as_deref())
                .unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            ) {
                out.push((
                    "ImagePullFailed",
                    format!(
                        "variant {variant}: pod {}: {reason}: {}",
                        pod.name_any(),
                        waiting.and_then(|w| w.message.clone()).unwrap_or_default()
                    ),
                ));
            } else if let Some(t) = last.filter(|t| t.exit_code != 0) {
                let why = t
                    .message
                    .as_deref()
                    .map(|m| m.trim().lines().last().unwrap_or_default().to_string())
                    .unwrap_or_default();
                let reason = if t.exit_code == 2 {
                    "ModelLoadFailed"
                } else {
                    "ServingContainerFailed"
                };
                out.push((
                    reason,
                    format!(
                        "variant {variant}: container {} of pod {} exited {}{}",
                        c.name,
                        pod.name_any(),
                        t.exit_code,
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    ),
                ));
            }
        }
    }
    out
}

/// Makes every router pod refresh its mounted configuration now: the
/// kubelet re-reads a pod's ConfigMap volumes when the pod changes.
async fn refresh_router_config(pods: &Api<Pod>, endpoint: &str, hash: &str) -> Result<()> {
    let selector = format!("{ENDPOINT_LABEL}={endpoint},{ROLE_LABEL}=router");
    for pod in pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        if pod
            .annotations()
            .get(ROUTER_CONFIG_ANNOTATION)
            .map(String::as_str)
            == Some(hash)
        {
            continue;
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {ROUTER_CONFIG_ANNOTATION: hash}}});
        match pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes the Deployments and Services of variants no longer in the spec.
async fn remove_stale(
    deployments: &Api<Deployment>,
    services: &Api<Service>,
    endpoint: &str,
    served: &[ServedVariant<'_>],
) -> Result<()> {
    let wanted: Vec<String> = served
        .iter()
        .map(|v| build::child_name(endpoint, v.name))
        .collect();
    let selector = format!("{ENDPOINT_LABEL}={endpoint},{ROLE_LABEL}!=router");
    let lp = ListParams::default().labels(&selector);
    for d in deployments.list_metadata(&lp).await?.items {
        let n = d.name_any();
        if !wanted.contains(&n) {
            match deployments.delete(&n, &DeleteParams::background()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for s in services.list_metadata(&lp).await?.items {
        let n = s.name_any();
        if !wanted.contains(&n) {
            match services.delete(&n, &DeleteParams::background()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn set(
    status: &mut EndpointStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(type_, value, reason, message, generation, now.clone()),
    );
}

/// The Endpoints in `object`'s namespace whose variants' models satisfy `names`.
pub fn referring<K: ResourceExt>(
    store: &kube::runtime::reflector::Store<Endpoint>,
    object: &K,
    names: impl Fn(&kiln_api::endpoint::ModelSource) -> bool,
) -> Vec<kube::runtime::reflector::ObjectRef<Endpoint>> {
    let namespace = object.namespace();
    store
        .state()
        .iter()
        .filter(|e| e.namespace() == namespace)
        .filter(|e| {
            e.spec.variants.iter().any(|v| names(&v.model))
                || e.spec.shadow_variants.iter().any(|s| names(&s.model))
        })
        .map(|e| kube::runtime::reflector::ObjectRef::from_obj(e.as_ref()))
        .collect()
}

/// What a failed reconcile does next: transient errors back off and retry;
/// a refused child waits for a spec change, re-checked every five minutes.
pub fn error_policy(endpoint: Arc<Endpoint>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("Endpoint", endpoint.as_ref(), error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(variant: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("iris-{variant}-abc"), "labels": {build::VARIANT_LABEL: variant}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_model_that_cannot_load_and_an_image_that_cannot_be_pulled_are_named() {
        let pods = [
            pod(
                "main",
                serde_json::json!({"containerStatuses": [{
                    "name": "serve", "image": "kiln/runtime:dev", "imageID": "", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 2, "message": "loading\nno model.json under s3://m/x"}},
                }]}),
            ),
            pod(
                "second",
                serde_json::json!({"containerStatuses": [{
                    "name": "serve", "image": "nope", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                }]}),
            ),
            pod(
                "fine",
                serde_json::json!({"containerStatuses": [{
                    "name": "serve", "image": "kiln/runtime:dev", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {}},
                }]}),
            ),
        ];
        let failures = serving_failures(&pods);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert_eq!(failures[0].0, "ModelLoadFailed");
        assert!(
            failures[0].1.contains("variant main")
                && failures[0]
                    .1
                    .ends_with("exited 2: no model.json under s3://m/x"),
            "{}",
            failures[0].1
        );
        assert_eq!(failures[1].0, "ImagePullFailed");
        assert!(failures[1].1.contains("variant second") && failures[1].1.contains("not found"));
    }

    #[test]
    fn a_rollout_is_done_when_every_wanted_replica_is_updated_and_ready() {
        let deployment = |generation: i64,
                          observed: i64,
                          replicas: i32,
                          updated: i32,
                          ready: i32|
         -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "d", "generation": generation},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready},
            }))
            .unwrap()
        };
        assert!(rollout_of(&deployment(3, 3, 2, 2, 2)).done);
        // The controller has not seen the new template yet.
        assert!(!rollout_of(&deployment(4, 3, 2, 2, 2)).done);
        // A surged replica of the old template is still there.
        assert!(!rollout_of(&deployment(3, 3, 3, 2, 3)).done);
        // Updated but not ready.
        let r = rollout_of(&deployment(3, 3, 2, 2, 1));
        assert!(!r.done);
        assert_eq!((r.replicas, r.ready), (2, 1));
    }
}
