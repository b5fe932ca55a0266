//! Multi-objective search by ParEGO (Knowles 2006): each trial scalarizes
//! the normalized objectives with its own random weights (the augmented
//! Chebyshev function) and runs one step of GP expected improvement on
//! that; over many trials the weights sweep the Pareto front.

use rand::RngExt;

use crate::Strategy;
use crate::bayes::{BayesianSettings, Data, gp_batch, pending_points};
use crate::random::{latin_hypercube, sample};
use crate::rng::{self, Purpose};
use crate::space::Space;
use crate::trial::{Direction, Origin, Suggestion, Trial, WarmStartKind, own_trials};

/// The weight of the sum term of the augmented Chebyshev scalarization.
const RHO: f64 = 0.05;

/// ParEGO over two or more objectives.
#[derive(Clone, Debug)]
pub struct ParEgo {
    space: Space,
    directions: Vec<Direction>,
    seed: u64,
    settings: BayesianSettings,
}

impl ParEgo {
    /// ParEGO over `space` for objectives in these directions.
    pub fn new(space: Space, directions: Vec<Direction>, seed: u64) -> Self {
        Self {
            space,
            directions,
            seed,
            settings: BayesianSettings::default(),
        }
    }

    /// The weights of trial `index`: uniform on the simplex.
    fn weights(&self, index: usize) -> Vec<f64> {
        let mut rng = rng::stream(self.seed, Purpose::Scalarization, index as u64);
        let e: Vec<f64> = self
            .directions
            .iter()
            .map(|_| -(1.0 - rng.random::<f64>()).ln())
            .collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }
}

/// max_i w_i f_i + ρ Σ w_i f_i of objectives normalized to [0, 1].
fn chebyshev(losses: &[f64], weights: &[f64]) -> f64 {
    let terms = losses.iter().zip(weights).map(|(f, w)| f * w);
    terms.clone().fold(f64::NEG_INFINITY, f64::max) + RHO * terms.sum::<f64>()
}

impl Strategy for ParEgo {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let m = self.directions.len();
        let identical = Origin::Parent(WarmStartKind::IdenticalDataAndAlgorithm);
        let observed: Vec<&Trial> = history
            .iter()
            .filter(|t| t.is_direct() && t.is_observed(m))
            .collect();
        let losses: Vec<Vec<f64>> = observed
            .iter()
            .map(|t| {
                self.directions
                    .iter()
                    .zip(&t.values)
                    .map(|(d, v)| d.loss(*v))
                    .collect()
            })
            .collect();
        let (lo, hi): (Vec<f64>, Vec<f64>) = (0..m)
            .map(|k| {
                let col = losses.iter().map(|l| l[k]);
                (
                    col.clone().fold(f64::INFINITY, f64::min),
                    col.fold(f64::NEG_INFINITY, f64::max),
                )
            })
            .unzip();
        let normalized: Vec<Vec<f64>> = losses
            .iter()
            .map(|l| {
                (0..m)
                    .map(|k| (l[k] - lo[k]) / (hi[k] - lo[k]).max(1e-12))
                    .collect()
            })
            .collect();
        let x: Vec<Vec<f64>> = observed
            .iter()
            .map(|t| self.space.encode(&t.config))
            .collect();
        let start = own_trials(history);
        let initial = self.settings.initial_trials(&self.space);
        let design = latin_hypercube(&self.space, initial, self.seed);
        let parents = history
            .iter()
            .filter(|t| t.origin == identical && t.is_observed(m))
            .count();
        let mut pending = pending_points(&self.space, history);
        let mut out = Vec::with_capacity(n);
        for index in start..start + n {
            let config = if let Some(point) = design.get(index).filter(|_| parents < initial) {
                point.clone()
            } else if observed.len() < 2 {
                sample(&self.space, self.seed, index)
            } else {
                let w = self.weights(index);
                let data = Data {
                    x: x.clone(),
                    y: normalized.iter().map(|l| chebyshev(l, &w)).collect(),
                };
                let batch = gp_batch(
                    &self.space,
                    &self.settings,
                    self.seed,
                    &data,
                    &pending,
                    &Data::default(),
                    &[index],
                );
                match batch {
                    Some(mut xs) => self.space.decode(&xs.remove(0)),
                    None => sample(&self.space, self.seed, index),
                }
            };
            pending.push(self.space.encode(&config));
            out.push(Suggestion::new(config));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Random;
    use crate::pareto::{hypervolume, pareto_front};
    use crate::space::{Param, Scale, Value};

    /// ZDT1 in three dimensions.
    fn zdt1(c: &[Value]) -> Vec<f64> {
        let x: Vec<f64> = c
            .iter()
            .map(|v| {
                if let Value::Float(x) = v {
                    *x
                } else {
                    panic!()
                }
            })
            .collect();
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
    }

    fn space() -> Space {
        Space::new(
            (0..3)
                .map(|i| Param::continuous(&format!("x{i}"), 0.0, 1.0, Scale::Linear))
                .collect(),
        )
        .unwrap()
    }

    fn front_volume(strategy: &mut dyn Strategy, budget: usize) -> f64 {
        let mut history = Vec::new();
        while history.len() < budget {
            for s in strategy.suggest(&history, 2) {
                let v = zdt1(&s.config);
                history.push(Trial::completed(s.config, v));
            }
        }
        let d = [Direction::Minimize, Direction::Minimize];
        let front: Vec<Vec<f64>> = pareto_front(&history, &d)
            .iter()
            .map(|i| history[*i].values.clone())
            .collect();
        hypervolume(&front, &[1.1, 1.1])
    }

    #[test]
    fn covers_more_of_the_front_than_random() {
        let d = vec![Direction::Minimize, Direction::Minimize];
        let (mut parego, mut random) = (Vec::new(), Vec::new());
        for seed in 0..3 {
            parego.push(front_volume(&mut ParEgo::new(space(), d.clone(), seed), 30));
            random.push(front_volume(&mut Random::new(space(), seed), 30));
        }
        let (p, r) = (
            crate::stats::median(&parego).unwrap(),
            crate::stats::median(&random).unwrap(),
        );
        assert!(p > r, "ParEGO {parego:?} vs random {random:?}");
    }

    #[test]
    fn weights_are_on_the_simplex_and_differ_per_trial() {
        let p = ParEgo::new(space(), vec![Direction::Minimize; 3], 1);
        let (a, b) = (p.weights(0), p.weights(1));
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12 && a.iter().all(|w| *w > 0.0));
        assert_ne!(a, b);
        assert_eq!(chebyshev(&[0.5, 1.0], &[0.5, 0.5]), 0.5 + RHO * 0.75);
    }
}
