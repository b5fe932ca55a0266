//! `ModelPackageGroup`: a model in the registry, the series of its versions
//! (SageMaker `ModelPackageGroup`). The group holds the version counter and
//! the newest Approved version; Endpoints that follow a group read it here.
//!
//! Versions are allocated without races: the operator raises
//! `status.latestVersion` by one with an update that carries the group's
//! `resourceVersion`, so two packages registered at once cannot both get the
//! same number (the second update is refused with a conflict and retried
//! against the new counter), and only then writes the number into the
//! package's own status. The same update records the allocation in
//! `status.lastAllocation` (the number and the package's UID): an operator
//! stopped between the two writes gives the package that number when it
//! tries again, instead of taking another. A number is never given to two
//! packages; one may be skipped (a gap) when another package's allocation
//! came between such a stop and the retry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The spec of a ModelPackageGroup.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kiln.dev",
    version = "v1alpha1",
    kind = "ModelPackageGroup",
    plural = "modelpackagegroups",
    shortname = "mpg",
    category = "kiln",
    namespaced,
    status = "ModelPackageGroupStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Latest", type_ = "integer", json_path = ".status.latestVersion", description = "the newest version registered"),
    printcolumn(name = "Approved", type_ = "integer", json_path = ".status.latestApproved.version", description = "the newest Approved version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a ModelPackageGroup's name must be a DNS label (at most 63 lowercase letters, digits and -): packages name it in spec.groupName"),
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct ModelPackageGroupSpec {
    /// What the model is for (SageMaker `ModelPackageGroupDescription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Versions kept: when a new version is registered, the oldest versions
    /// beyond this many that are neither Approved nor served are deleted.
    /// Unset: every version is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub version_history_limit: Option<i32>,
}

/// The observed state of a ModelPackageGroup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPackageGroupStatus {
    /// Conditions: `Ready` (the group has at least one Approved version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 16, "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version counter: the number given to the newest version (0: none yet).
    #[serde(default)]
    pub latest_version: i64,
    /// The newest Approved version whose artifact is intact, which Endpoints
    /// following the group serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_approved: Option<VersionReference>,
    /// Versions registered and not deleted.
    #[serde(default)]
    pub version_count: i32,
    /// Of these, the Approved ones.
    #[serde(default)]
    pub approved_count: i32,
    /// Of these, the ones waiting for review (`PendingManualApproval`).
    #[serde(default)]
    pub pending_approval_count: i32,
    /// The newest number handed out and the package it went to (by UID):
    /// the record that lets an allocation cut short between the group's
    /// write and the package's be completed with the same number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_allocation: Option<VersionReference>,
}

/// A version of a group and the ModelPackage that holds it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionReference {
    /// The version number, from 1.
    #[schemars(range(min = 1))]
    pub version: i64,
    /// The ModelPackage's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The ModelPackage's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    pub uid: Option<String>,
    /// When it was approved (its `status.lastApprovalChangeTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_time: Option<Time>,
}
