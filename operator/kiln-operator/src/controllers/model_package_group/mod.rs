//! The ModelPackageGroup controller: number -> summarize.
//!
//! Number: every package of the group without a version gets the group's
//! next one (see [`allocate`] for why two packages registered at once never
//! share a number, and why an operator stopped half-way does not either).
//! Summarize: the newest Approved version with an intact artifact, the
//! counts, and `Ready` (the group has such a version). Every change of a
//! package of the group wakes it; packages are read afresh from the API
//! server, never from a cache that may not yet show a number just written.

pub mod allocate;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::reasons;
use kiln_api::model_package::ModelPackage;
use kiln_api::model_package_group::ModelPackageGroup;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use self::allocate::Allocation;
use super::Context;
use super::apply::publish;
use super::error::{Error, Result};

/// The field manager of the group's status (written with updates that
/// carry its resourceVersion).
const STATUS_MANAGER: &str = "kiln-operator/model-package-group";
/// The field manager of a package's `status.version`, the one field of a
/// package's status this controller writes.
const VERSION_MANAGER: &str = "kiln-operator/model-package-version";
/// Conflicting writes of the group's status tried before the reconcile
/// gives up and backs off.
const CONFLICT_RETRIES: usize = 20;

/// One reconcile of a ModelPackageGroup.
pub async fn reconcile(group: Arc<ModelPackageGroup>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = group
        .namespace()
        .ok_or(Error::Incomplete("a ModelPackageGroup without a namespace"))?;
    let name = group.name_any();
    let groups: Api<ModelPackageGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let packages: Api<ModelPackage> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(mut current) = groups.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let before = current.status.clone().unwrap_or_default();
    let mut members = members(&packages, &name).await?;

    let mut highest = members
        .iter()
        .filter_map(allocate::version_of)
        .max()
        .unwrap_or(0);
    for i in allocate::numbering_order(&members, &before) {
        let package = &members[i];
        let (package_name, uid) = (package.name_any(), package.uid().unwrap_or_default());
        let version = take_number(&groups, &mut current, &package_name, &uid, highest).await?;
        highest = highest.max(version);
        let patch = serde_json::json!({
            "apiVersion": ModelPackage::api_version(&()),
            "kind": ModelPackage::kind(&()),
            "status": {"version": version},
        });
        match packages
            .patch_status(
                &package_name,
                &PatchParams::apply(VERSION_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: its number stays unused.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        members[i].status.get_or_insert_default().version = Some(version);
        let note = format!("version {version} to ModelPackage {package_name}");
        publish(&ctx, &current, EventType::Normal, "VersionAllocated", &note).await;
    }

    let generation = current.metadata.generation;
    let now = Time(Timestamp::now());
    for _ in 0..CONFLICT_RETRIES {
        let old = current.status.clone().unwrap_or_default();
        let mut new = old.clone();
        allocate::summarize(&mut new, &members, generation, &now);
        if new == old {
            break;
        }
        let mut next = current.clone();
        next.status = Some(new);
        match groups.replace_status(&name, &post_params(), &next).await {
            Ok(written) => {
                current = written;
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => current = groups.get(&name).await?,
            Err(e) => return Err(e.into()),
        }
    }

    let after = current.status.clone().unwrap_or_default();
    let newest = |s: &kiln_api::model_package_group::ModelPackageGroupStatus| {
        s.latest_approved
            .as_ref()
            .map(|v| (v.version, v.name.clone()))
    };
    if newest(&after) != newest(&before) {
        match &after.latest_approved {
            Some(v) => {
                let note = format!(
                    "version {} (ModelPackage {}) is the newest Approved version",
                    v.version, v.name
                );
                publish(
                    &ctx,
                    &current,
                    EventType::Normal,
                    reasons::APPROVED_VERSION,
                    &note,
                )
                .await;
            }
            None => {
                let note = "no Approved version with an intact artifact is left";
                publish(
                    &ctx,
                    &current,
                    EventType::Warning,
                    reasons::NO_APPROVED_VERSION,
                    note,
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Takes the group's next number for the package (or the one it was given
/// already), with updates carrying the group's resourceVersion: on a
/// conflict the group is read again and the choice made again.
async fn take_number(
    groups: &Api<ModelPackageGroup>,
    current: &mut ModelPackageGroup,
    package: &str,
    uid: &str,
    highest: i64,
) -> Result<i64> {
    let name = current.name_any();
    for _ in 0..CONFLICT_RETRIES {
        let status = current.status.clone().unwrap_or_default();
        let (version, status) = match allocate::allocate(&status, package, uid, highest) {
            Allocation::Reuse(version) => return Ok(version),
            Allocation::New(version, status) => (version, status),
        };
        let mut next = current.clone();
        next.status = Some(*status);
        match groups.replace_status(&name, &post_params(), &next).await {
            Ok(written) => {
                *current = written;
                return Ok(version);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => *current = groups.get(&name).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(format!(
        "ModelPackageGroup {name}: {CONFLICT_RETRIES} writes of its version counter in a row met a \
         newer one"
    )))
}

/// The group's packages, read afresh: by the CRD's selectable field
/// `spec.groupName`, or (an API server that does not select by it yet, as
/// before Kubernetes 1.31) every package of the namespace, filtered here.
async fn members(packages: &Api<ModelPackage>, group: &str) -> Result<Vec<ModelPackage>> {
    let selected = ListParams::default().fields(&format!("spec.groupName={group}"));
    match packages.list(&selected).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 400 => Ok(packages
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| p.spec.group_name == group)
            .collect()),
        Err(e) => Err(e.into()),
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(STATUS_MANAGER.into()),
        ..PostParams::default()
    }
}

/// The group `package` names, in its namespace.
pub fn group_of(package: &ModelPackage) -> Option<ObjectRef<ModelPackageGroup>> {
    let namespace = package.namespace()?;
    Some(ObjectRef::new(&package.spec.group_name).within(&namespace))
}

/// What a failed reconcile does next: transient errors back off and retry.
pub fn error_policy(group: Arc<ModelPackageGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    super::error_policy("ModelPackageGroup", group.as_ref(), error, &ctx)
}
