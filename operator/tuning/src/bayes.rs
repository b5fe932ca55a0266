//! Bayesian optimization: a GP surrogate of the loss over the encoded space,
//! expected improvement maximized by random candidates plus local search,
//! batches and running trials by kriging believer (each pending point is a
//! fantasy observation at the posterior mean).

use std::collections::HashSet;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::Strategy;
use crate::gp::Gp;
use crate::random::{latin_hypercube, sample};
use crate::rng::{self, Purpose};
use crate::space::{Domain, Space};
use crate::stats::{log_expected_improvement, power_transform};
use crate::trial::{Direction, Origin, Suggestion, Trial, TrialState, WarmStartKind, own_trials};

/// Tuning of the Bayesian strategy; the defaults suit up to a few hundred trials.
#[derive(Clone, Debug, PartialEq)]
pub struct BayesianSettings {
    /// Trials from a Latin hypercube before the GP takes over; `None`: the
    /// number of parameters plus one, between 5 and 10.
    pub initial_trials: Option<usize>,
    /// Uniform random candidates of the acquisition.
    pub random_candidates: usize,
    /// Candidates perturbed around the best observations.
    pub local_candidates: usize,
    /// Best candidates refined by local search.
    pub refined: usize,
}

impl Default for BayesianSettings {
    fn default() -> Self {
        Self {
            initial_trials: None,
            random_candidates: 1000,
            local_candidates: 1000,
            refined: 5,
        }
    }
}

impl BayesianSettings {
    pub(crate) fn initial_trials(&self, space: &Space) -> usize {
        self.initial_trials
            .unwrap_or((space.params().len() + 1).clamp(5, 10))
    }
}

/// GP-EI Bayesian optimization of one objective.
#[derive(Clone, Debug)]
pub struct Bayesian {
    space: Space,
    direction: Direction,
    seed: u64,
    settings: BayesianSettings,
}

impl Bayesian {
    /// Bayesian optimization of `space` with default settings.
    pub fn new(space: Space, direction: Direction, seed: u64) -> Self {
        Self::with_settings(space, direction, seed, BayesianSettings::default())
    }

    /// Bayesian optimization with these settings.
    pub fn with_settings(
        space: Space,
        direction: Direction,
        seed: u64,
        settings: BayesianSettings,
    ) -> Self {
        Self {
            space,
            direction,
            seed,
            settings,
        }
    }
}

/// Observations as encoded points and losses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Data {
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
}

impl Data {
    /// The observed trials `keep` selects, with `loss` of their values.
    pub fn from_trials(
        space: &Space,
        history: &[Trial],
        objectives: usize,
        keep: impl Fn(&Trial) -> bool,
        loss: impl Fn(&[f64]) -> f64,
    ) -> Self {
        let mut data = Self::default();
        for t in history
            .iter()
            .filter(|t| t.is_observed(objectives) && keep(t))
        {
            data.x.push(space.encode(&t.config));
            data.y.push(loss(&t.values));
        }
        data
    }
}

/// The points of this search still running: fantasies for the GP.
pub(crate) fn pending_points(space: &Space, history: &[Trial]) -> Vec<Vec<f64>> {
    let running = history
        .iter()
        .filter(|t| t.state == TrialState::Pending && t.origin == Origin::ThisSearch);
    running.map(|t| space.encode(&t.config)).collect()
}

/// A GP of standardized losses, over the prior mean of another GP when warm
/// started by transfer.
struct Surrogate {
    gp: Gp,
    prior: Option<Gp>,
    best: f64,
}

impl Surrogate {
    fn fit(dims: usize, data: &Data, transfer: &Data) -> Option<Self> {
        let prior = if transfer.y.len() >= 2 {
            Gp::fit(dims, transfer.x.concat(), power_transform(&transfer.y))
        } else {
            None
        };
        let y = power_transform(&data.y);
        let best = y.iter().copied().fold(f64::INFINITY, f64::min);
        let residual =
            |(x, y): (&Vec<f64>, &f64)| y - prior.as_ref().map_or(0.0, |p| p.predict(x).0);
        let r: Vec<f64> = data.x.iter().zip(&y).map(residual).collect();
        let gp = Gp::fit(dims, data.x.concat(), r)?;
        Some(Self { gp, prior, best })
    }

    fn predict(&self, x: &[f64]) -> (f64, f64) {
        let (m, v) = self.gp.predict(x);
        (m + self.prior.as_ref().map_or(0.0, |p| p.predict(x).0), v)
    }

    fn score(&self, x: &[f64]) -> f64 {
        let (m, v) = self.predict(x);
        log_expected_improvement(m, v.sqrt(), self.best)
    }

    /// Kriging believer: `x` observed at its posterior mean.
    fn believe(&mut self, x: &[f64]) {
        let (m, _) = self.gp.predict(x);
        if let Some(gp) = self.gp.with_observation(x, m) {
            self.gp = gp;
        }
    }
}

fn key(x: &[f64]) -> Vec<u64> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// `x` moved by a normal step of `sd` in each numeric dimension, and each
/// categorical value redrawn with probability `flip`; snapped.
fn perturb(space: &Space, x: &[f64], sd: f64, flip: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut y = x.to_vec();
    let mut at = 0;
    for p in space.params() {
        match &p.domain {
            Domain::Categorical { values } => {
                if rng.random::<f64>() < flip {
                    let c = rng.random_range(0..values.len());
                    y[at..at + values.len()]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = if i == c { 1.0 } else { 0.0 });
                }
            }
            _ => y[at] = (y[at] + sd * rng::normal(rng)).clamp(0.0, 1.0),
        }
        at += p.dims();
    }
    space.snap(&y)
}

/// The point of best expected improvement not in `taken`.
fn maximize_acquisition(
    space: &Space,
    settings: &BayesianSettings,
    model: &Surrogate,
    anchors: &[Vec<f64>],
    taken: &HashSet<Vec<u64>>,
    rng: &mut ChaCha8Rng,
) -> Option<Vec<f64>> {
    let flip = 1.0 / space.params().len() as f64;
    let mut candidates: Vec<Vec<f64>> = (0..settings.random_candidates)
        .map(|_| space.snap(&rng::uniform(rng, space.dims())))
        .collect();
    for i in 0..settings.local_candidates {
        let anchor = &anchors[i % anchors.len()];
        let sd = [0.02, 0.05, 0.15][i % 3];
        candidates.push(perturb(space, anchor, sd, flip, rng));
    }
    let mut scored: Vec<(f64, Vec<f64>)> = candidates
        .into_iter()
        .filter(|x| !taken.contains(&key(x)))
        .map(|x| (model.score(&x), x))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.dedup_by(|a, b| a.1 == b.1);
    let mut best: Option<(f64, Vec<f64>)> = None;
    for (mut score, mut x) in scored.into_iter().take(settings.refined) {
        let mut sd = 0.05;
        while sd > 1e-3 {
            let mut moved = false;
            for _ in 0..8 {
                let y = perturb(space, &x, sd, flip * 0.5, rng);
                let s = model.score(&y);
                if s > score && !taken.contains(&key(&y)) {
                    (score, x, moved) = (s, y, true);
                }
            }
            if !moved {
                sd *= 0.5;
            }
        }
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, x));
        }
    }
    best.map(|(_, x)| x)
}

/// The GP's choices for the trials numbered `indices` (a batch, by kriging
/// believer), given direct observations, running points and transfer
/// observations. `None` when the GP cannot be fitted.
pub(crate) fn gp_batch(
    space: &Space,
    settings: &BayesianSettings,
    seed: u64,
    data: &Data,
    pending: &[Vec<f64>],
    transfer: &Data,
    indices: &[usize],
) -> Option<Vec<Vec<f64>>> {
    let mut model = Surrogate::fit(space.dims(), data, transfer)?;
    let mut taken: HashSet<Vec<u64>> = data.x.iter().chain(pending).map(|x| key(x)).collect();
    for x in pending {
        model.believe(x);
    }
    let mut order: Vec<usize> = (0..data.y.len()).collect();
    order.sort_by(|a, b| data.y[*a].total_cmp(&data.y[*b]));
    let anchors: Vec<Vec<f64>> = order.iter().take(5).map(|i| data.x[*i].clone()).collect();
    let mut out = Vec::with_capacity(indices.len());
    for &index in indices {
        let mut rng = rng::stream(seed, Purpose::Acquisition, index as u64);
        let x = maximize_acquisition(space, settings, &model, &anchors, &taken, &mut rng)
            .unwrap_or_else(|| space.snap(&rng::uniform(&mut rng, space.dims())));
        taken.insert(key(&x));
        model.believe(&x);
        out.push(x);
    }
    Some(out)
}

impl Strategy for Bayesian {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let loss = |v: &[f64]| self.direction.loss(v[0]);
        let data = Data::from_trials(&self.space, history, 1, Trial::is_direct, loss);
        let transfer_only = |t: &Trial| t.origin == Origin::Parent(WarmStartKind::TransferLearning);
        let transfer = Data::from_trials(&self.space, history, 1, transfer_only, loss);
        let start = own_trials(history);
        let initial = self.settings.initial_trials(&self.space);
        let design = latin_hypercube(&self.space, initial, self.seed);
        let identical = Origin::Parent(WarmStartKind::IdenticalDataAndAlgorithm);
        let direct_parents = history
            .iter()
            .filter(|t| t.origin == identical && t.is_observed(1))
            .count();
        let mut out = vec![None; n];
        let mut model_slots = Vec::new();
        for (slot, index) in (start..start + n).enumerate() {
            if index < initial && direct_parents < initial {
                out[slot] = Some(design[index].clone());
            } else if data.y.len() < 2 {
                out[slot] = Some(sample(&self.space, self.seed, index));
            } else {
                model_slots.push((slot, index));
            }
        }
        if !model_slots.is_empty() {
            let pending = pending_points(&self.space, history);
            let indices: Vec<usize> = model_slots.iter().map(|(_, i)| *i).collect();
            let xs = gp_batch(
                &self.space,
                &self.settings,
                self.seed,
                &data,
                &pending,
                &transfer,
                &indices,
            );
            for (k, (slot, index)) in model_slots.into_iter().enumerate() {
                out[slot] = Some(match &xs {
                    Some(xs) => self.space.decode(&xs[k]),
                    None => sample(&self.space, self.seed, index),
                });
            }
        }
        out.into_iter().flatten().map(Suggestion::new).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Random;
    use crate::space::{Param, Scale, Value};
    use crate::testing::{best, run};

    fn branin(c: &[Value]) -> f64 {
        let (Value::Float(a), Value::Float(b)) = (&c[0], &c[1]) else {
            panic!()
        };
        let pi = std::f64::consts::PI;
        let t = b - 5.1 / (4.0 * pi * pi) * a * a + 5.0 / pi * a - 6.0;
        t * t + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * a.cos() + 10.0
    }

    fn branin_space() -> Space {
        Space::new(vec![
            Param::continuous("x1", -5.0, 10.0, Scale::Linear),
            Param::continuous("x2", 0.0, 15.0, Scale::Linear),
        ])
        .unwrap()
    }

    #[test]
    fn beats_random_on_branin() {
        const OPTIMUM: f64 = 0.397_887_357_729_738;
        let (mut bo_regrets, mut random_regrets) = (Vec::new(), Vec::new());
        for seed in 0..4 {
            let bo = run(
                &mut Bayesian::new(branin_space(), Direction::Minimize, seed),
                branin,
                30,
                1,
            );
            let rs = run(&mut Random::new(branin_space(), seed), branin, 30, 1);
            bo_regrets.push(best(&bo) - OPTIMUM);
            random_regrets.push(best(&rs) - OPTIMUM);
        }
        let bo = crate::stats::median(&bo_regrets).unwrap();
        let rs = crate::stats::median(&random_regrets).unwrap();
        assert!(
            bo < 0.05 && bo < rs / 5.0,
            "Bayesian {bo_regrets:?} vs random {random_regrets:?}"
        );
    }

    #[test]
    fn is_deterministic_and_rebuilt_from_history() {
        let mut history = run(
            &mut Bayesian::new(branin_space(), Direction::Minimize, 3),
            branin,
            8,
            2,
        );
        history.push(Trial::pending(vec![Value::Float(1.0), Value::Float(2.0)]));
        let a = Bayesian::new(branin_space(), Direction::Minimize, 3).suggest(&history, 3);
        let b = Bayesian::new(branin_space(), Direction::Minimize, 3).suggest(&history, 3);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        // A batch has distinct points.
        assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
    }

    #[test]
    fn maximizing_is_minimizing_the_negation() {
        let neg = |c: &[Value]| -branin(c);
        let max = run(
            &mut Bayesian::new(branin_space(), Direction::Maximize, 1),
            neg,
            20,
            1,
        );
        let min = run(
            &mut Bayesian::new(branin_space(), Direction::Minimize, 1),
            branin,
            20,
            1,
        );
        let configs = |h: &[Trial]| h.iter().map(|t| t.config.clone()).collect::<Vec<_>>();
        assert_eq!(configs(&max), configs(&min));
    }

    #[test]
    fn warm_start_uses_identical_parents_as_observations() {
        let parents: Vec<Trial> = run(&mut Random::new(branin_space(), 9), branin, 15, 1)
            .into_iter()
            .map(|t| t.with_origin(Origin::Parent(WarmStartKind::IdenticalDataAndAlgorithm)))
            .collect();
        // With enough parent observations the first trial is already the GP's
        // choice, not the first point of the Latin hypercube.
        let cold = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&[], 1);
        let warm = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&parents, 1);
        assert_ne!(cold, warm);
        let best_parent = best(&parents);
        let mut history = parents.clone();
        let mut strategy = Bayesian::new(branin_space(), Direction::Minimize, 2);
        for _ in 0..10 {
            for s in strategy.suggest(&history, 1) {
                history.push(Trial::completed(s.config.clone(), vec![branin(&s.config)]));
            }
        }
        // Ten GP trials from 15 random parents beat the parents clearly.
        assert!(
            best(&history) < best_parent - 0.1 || best(&history) < 0.45,
            "{} vs {best_parent}",
            best(&history)
        );
    }

    #[test]
    fn transfer_parents_shape_the_prior_only() {
        let parents: Vec<Trial> = run(&mut Random::new(branin_space(), 4), branin, 20, 1)
            .into_iter()
            .map(|t| t.with_origin(Origin::Parent(WarmStartKind::TransferLearning)))
            .collect();
        // Transfer trials do not replace the initial design...
        let cold = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&[], 1);
        let warm = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&parents, 1);
        assert_eq!(cold, warm);
        // ...but change what the GP proposes once it runs.
        let mut own = run(&mut Random::new(branin_space(), 5), branin, 6, 1);
        let plain = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&own, 1);
        own.splice(0..0, parents);
        let shaped = Bayesian::new(branin_space(), Direction::Minimize, 2).suggest(&own, 1);
        assert_ne!(plain, shaped);
    }
}
