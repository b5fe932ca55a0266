//! Harness for Kiln's end-to-end tests against the local Kubernetes that
//! `e2e/cluster.sh` brings up (real kubelets in Docker containers).
//!
//! A test calls [`run`] with a name and an async body; the body gets a
//! [`TestNamespace`]: a fresh namespace, a client, and helpers to apply YAML,
//! wait for conditions with a timeout, read logs, run kubectl and simulate a
//! spot reclaim. When the body fails, the namespace's events, pods and pod
//! logs are printed before the test panics; the namespace is deleted either
//! way.
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` never needs a
//! cluster; `make test-e2e` runs them with `--ignored`.

pub mod cluster;
pub mod namespace;
pub mod s3;
pub mod wait;

pub use cluster::{Cluster, Node};
pub use namespace::{TestNamespace, run};
pub use wait::wait_until;
