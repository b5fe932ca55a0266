//! The built-in algorithms and the hyperparameters every one of them accepts.

pub mod image;
pub mod kmeans;
mod kmeans_cpu;
pub mod knn;
pub mod linear;
pub mod mlp;
pub mod net;
pub mod pca;
mod pipeline;
mod stats;
pub mod text;

use crate::error::{Error, Result};
use crate::hyper::{Kind, Spec};
use crate::run::Context;

/// Hyperparameters of every algorithm.
pub const COMMON: &[Spec] = &[
    Spec::new(
        "seed",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "seed of every random choice",
    ),
    Spec::new(
        "checkpoint_every_steps",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "checkpoint every N steps (0: by time only)",
    ),
    Spec::new(
        "checkpoint_every_seconds",
        Kind::Float { min: 0.0, max: 1e9 },
        "600",
        "checkpoint every N seconds (0: by steps only)",
    ),
];

/// One built-in algorithm.
pub struct Algorithm {
    /// The name of `TrainingJob.spec.algorithm.name`.
    pub name: &'static str,
    /// Its own hyperparameter tables; earlier entries win over later ones
    /// of the same name (an algorithm overrides a shared default that way).
    pub tables: &'static [&'static [Spec]],
    pub train: fn(&mut Context) -> Result<()>,
}

impl Algorithm {
    /// Every hyperparameter the algorithm accepts.
    pub fn specs(&self) -> Vec<Spec> {
        let mut out: Vec<Spec> = Vec::new();
        for spec in self.tables.iter().copied().chain([COMMON]).flatten() {
            if !out.iter().any(|s| s.name == spec.name) {
                out.push(*spec);
            }
        }
        out
    }
}

/// Every built-in algorithm.
pub const ALL: &[Algorithm] = &[
    linear::ALGORITHM,
    kmeans::ALGORITHM,
    pca::ALGORITHM,
    knn::ALGORITHM,
    mlp::ALGORITHM,
    image::ALGORITHM,
    text::ALGORITHM,
];

/// The algorithm called `name`.
pub fn find(name: &str) -> Result<&'static Algorithm> {
    ALL.iter().find(|a| a.name == name).ok_or_else(|| {
        let names: Vec<_> = ALL.iter().map(|a| a.name).collect();
        Error::hyper(
            "algorithm",
            format!(
                "{name:?} is not a built-in algorithm: expected one of {}",
                names.join(", ")
            ),
        )
    })
}
