//! Kiln's hyperparameter search strategies, as pure logic: no cluster, no
//! async, no I/O. The TuningJob controller turns its spec into a [`Space`]
//! and a strategy, its trial records into [`Trial`]s, and asks for the next
//! trials with [`Strategy::suggest`].
//!
//! Strategies:
//! - [`Random`]: independent uniform samples in the encoded space.
//! - [`Grid`]: every combination of integer and categorical values, in order.
//! - [`Bayesian`]: a Gaussian-process surrogate ([`gp`]: Matérn 5/2, ARD
//!   length scales fitted by maximum marginal likelihood) with expected
//!   improvement, batches by kriging believer.
//! - [`Tpe`]: the multivariate tree-structured Parzen estimator.
//! - [`Hyperband`] (synchronous brackets) and [`Asha`] (asynchronous
//!   successive halving): trials at growing resources, promoted from
//!   intermediate results.
//! - [`MedianStopping`]: early stopping for the others.
//! - [`ParEgo`]: multi-objective search by random Chebyshev scalarizations
//!   over the GP; [`pareto`] has the non-dominated sort and the hypervolume.
//!
//! # Determinism and recomputation from history
//!
//! A strategy holds only its settings and its seed. Everything else is
//! recomputed from the trial history passed to each call: the random stream
//! of a trial is keyed by (seed, purpose, the trial's index in this search),
//! the GP is refitted from the observations, Hyperband's brackets and rungs
//! are rebuilt from the trials' resources and `promoted_from` links. So a
//! restarted controller that rebuilds the strategy from the trial records in
//! its status gets the same suggestions as the one that stopped, and the same
//! (seed, history, n) always gives the same suggestions.
//!
//! The history must list trials in the order they were created (warm-start
//! trials may come first); indices in [`Suggestion::promoted_from`] and
//! [`Trial::promoted_from`] are positions in that list.
//!
//! # Warm start
//!
//! Trials of earlier searches carry an [`Origin`]. With
//! [`WarmStartKind::IdenticalDataAndAlgorithm`] they count as observations
//! (the GP and TPE learn from them and Grid skips their points); with
//! [`WarmStartKind::TransferLearning`] they only shape the prior (the GP's
//! prior mean, a down-weighted share of TPE's densities; ParEGO leaves them
//! out). Random, Hyperband and ASHA ignore parents.
//!
//! # Numerics
//!
//! The GP needs a Cholesky factorization and triangular solves on at most a
//! few hundred points, and its hyperparameters a small L-BFGS: both are here
//! ([`linalg`], [`optimize`]) in about two hundred tested lines rather than
//! a general linear-algebra crate. Random streams are ChaCha8 from
//! `rand_chacha`, whose output is stable across platforms and versions.

pub mod asha;
pub mod bayes;
pub mod gp;
pub mod grid;
pub mod hyperband;
pub mod linalg;
pub mod median_stop;
pub mod multi;
pub mod optimize;
pub mod pareto;
pub mod random;
mod rng;
pub mod space;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod tpe;
mod trial;

pub use asha::{Asha, AshaStopping};
pub use bayes::{Bayesian, BayesianSettings};
pub use grid::Grid;
pub use hyperband::Hyperband;
pub use median_stop::MedianStopping;
pub use multi::ParEgo;

pub use random::Random;
pub use space::{Config, Domain, Param, Scale, Space, SpaceError, Value};
pub use tpe::{Tpe, TpeSettings};

pub use trial::{Direction, Origin, Suggestion, Trial, TrialState, WarmStartKind};

/// A search strategy: given every trial so far, the next `n` trials to run.
pub trait Strategy {
    /// Up to `n` suggestions (fewer when the strategy is exhausted, as Grid
    /// can be). Pending trials in `history` are the ones still running.
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion>;
}
