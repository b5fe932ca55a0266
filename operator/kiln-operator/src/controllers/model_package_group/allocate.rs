//! Allocate and summarize: the group controller's decisions, as pure
//! functions of the group's status and its packages.
//!
//! The scheme (see [`kiln_api::model_package_group`]): a number is taken by
//! writing the group's status with `latestVersion` raised by one and
//! `lastAllocation` naming the package, in an update that carries the
//! group's `resourceVersion` (a conflict means another write came first:
//! read again and decide again); only then is the number written into the
//! package's status. A package that already has a number keeps it, and one
//! that `lastAllocation` names gets that number again, so an operator that
//! stopped between the two writes never gives one number to two packages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kiln_api::conditions::{self, reasons, types};
use kiln_api::model_package::{ApprovalStatus, ModelPackage};
use kiln_api::model_package_group::{ModelPackageGroupStatus, VersionReference};
use kube::ResourceExt;

/// The number a package gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Allocation {
    /// The group already gave it this number (its own write was cut short).
    Reuse(i64),
    /// A new number, and the group's status that takes it.
    New(i64, Box<ModelPackageGroupStatus>),
}

/// The number the package `name` (`uid`) gets from a group whose status is
/// `status`, when the highest number any of its packages holds is
/// `highest` (a group deleted and created again starts above its old
/// packages, not at 1).
pub fn allocate(
    status: &ModelPackageGroupStatus,
    name: &str,
    uid: &str,
    highest: i64,
) -> Allocation {
    if let Some(last) = &status.last_allocation
        && last.uid.as_deref() == Some(uid)
    {
        return Allocation::Reuse(last.version);
    }
    let version = status.latest_version.max(highest) + 1;
    let next = ModelPackageGroupStatus {
        latest_version: version,
        last_allocation: Some(VersionReference {
            version,
            name: name.to_string(),
            uid: Some(uid.to_string()),
            approval_time: None,
        }),
        ..status.clone()
    };
    Allocation::New(version, Box::new(next))
}

/// The version a package holds.
pub fn version_of(package: &ModelPackage) -> Option<i64> {
    package.status.as_ref().and_then(|s| s.version)
}

/// The packages still to be numbered, as indices into `packages`, in the
/// order they get their numbers: the one the last allocation went to first
/// (so its number is not skipped), then by creation time and name.
pub fn numbering_order(packages: &[ModelPackage], status: &ModelPackageGroupStatus) -> Vec<usize> {
    let last = status
        .last_allocation
        .as_ref()
        .and_then(|l| l.uid.as_deref());
    let mut order: Vec<usize> = (0..packages.len())
        .filter(|&i| {
            let p = &packages[i];
            version_of(p).is_none() && p.metadata.deletion_timestamp.is_none() && p.uid().is_some()
        })
        .collect();
    order.sort_by_key(|&i| {
        let p = &packages[i];
        (
            p.uid().as_deref() != last,
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    order
}

/// Whether a package's artifact is intact: no check found it changed,
/// missing or unusable.
fn intact(package: &ModelPackage) -> bool {
    package.status.as_ref().is_none_or(|s| {
        conditions::find(&s.conditions, types::ARTIFACT_VERIFIED)
            .is_none_or(|c| c.status != "False")
    })
}

/// The newest Approved, numbered version with an intact artifact: what
/// Endpoints following the group serve.
pub fn latest_approved(packages: &[ModelPackage]) -> Option<VersionReference> {
    packages
        .iter()
        .filter(|p| p.spec.approval.status == ApprovalStatus::Approved && intact(p))
        .filter_map(|p| version_of(p).map(|v| (v, p)))
        .max_by_key(|(v, _)| *v)
        .map(|(version, p)| VersionReference {
            version,
            name: p.name_any(),
            uid: p.uid(),
            approval_time: p
                .status
                .as_ref()
                .and_then(|s| s.last_approval_change_time.clone()),
        })
}

/// Sets the group's summary from its packages: the newest Approved
/// version, the counts and `Ready`. The counter fields stay as they are.
pub fn summarize(
    status: &mut ModelPackageGroupStatus,
    packages: &[ModelPackage],
    generation: Option<i64>,
    now: &Time,
) {
    let numbered: Vec<&ModelPackage> = packages
        .iter()
        .filter(|p| version_of(p).is_some() && p.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |approval: ApprovalStatus| {
        numbered
            .iter()
            .filter(|p| p.spec.approval.status == approval)
            .count() as i32
    };
    status.version_count = numbered.len() as i32;
    status.approved_count = count(ApprovalStatus::Approved);
    status.pending_approval_count = count(ApprovalStatus::PendingManualApproval);
    status.observed_generation = generation;
    let live: Vec<ModelPackage> = numbered.into_iter().cloned().collect();
    status.latest_approved = latest_approved(&live);
    let ready = match &status.latest_approved {
        Some(v) => conditions::condition(
            types::READY,
            true,
            reasons::APPROVED_VERSION,
            format!(
                "version {} (ModelPackage {}) is the newest Approved version",
                v.version, v.name
            ),
            generation,
            now.clone(),
        ),
        None => conditions::condition(
            types::READY,
            false,
            reasons::NO_APPROVED_VERSION,
            "no Approved version with an intact artifact yet: set spec.approval.status to \
             Approved on one of its ModelPackages",
            generation,
            now.clone(),
        ),
    };
    conditions::set_condition(&mut status.conditions, ready);
}

#[cfg(test)]
mod tests;
