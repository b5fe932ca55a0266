//! The `kiln.dev/v1alpha1` API: the custom resources Kiln's operator reconciles
//! and the runtime reads, as Rust types from which the CRDs are generated.
//!
//! Every kind lives in its own module. Shared building blocks (storage
//! locations, scheduling, metrics) are in [`common`]; condition types and
//! reasons are named constants in [`conditions`]; pure validation that the
//! API server cannot express in CEL (URI parsing, pipeline graphs) is in
//! [`validate`].
//!
//! This crate depends on neither kube-runtime nor tokio, so the runtime image
//! can share it with the operator.

// kube's `#[kube(printcolumn(..), printcolumn(..))]` repeats keys such as
// `type_ = "integer"` across columns by design.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod conditions;
pub mod crd;
pub mod endpoint;
pub mod model_package;
pub mod model_package_group;
pub mod pipeline;
pub mod pipeline_run;
pub mod router;
pub mod training_job;
pub mod tuning_job;
pub mod validate;

pub use endpoint::{Endpoint, EndpointSpec, EndpointStatus};
pub use model_package::{ModelPackage, ModelPackageSpec, ModelPackageStatus};
pub use model_package_group::{ModelPackageGroup, ModelPackageGroupSpec, ModelPackageGroupStatus};
pub use pipeline::{Pipeline, PipelineSpec, PipelineStatus};
pub use pipeline_run::{PipelineRun, PipelineRunSpec, PipelineRunStatus};
pub use training_job::{TrainingJob, TrainingJobSpec, TrainingJobStatus};
pub use tuning_job::{TuningJob, TuningJobSpec, TuningJobStatus};

/// The API group of every Kiln resource.
pub const GROUP: &str = "kiln.dev";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";
/// The category every Kiln kind belongs to: `kubectl get kiln` lists them all.
pub const CATEGORY: &str = "kiln";
