//! The multivariate tree-structured Parzen estimator (Bergstra et al. 2011;
//! the multivariate kernels of Falkner et al. 2018): the observations are
//! split into the best γ and the rest, each side becomes a mixture of product
//! kernels, and the candidate drawn from the good side with the largest
//! density ratio good/bad wins. Bandwidths, the prior kernel and the weights
//! follow Optuna's defaults, so the two can be compared like for like.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::Strategy;
use crate::random::sample;
use crate::rng::{self, Purpose};
use crate::space::{Config, Domain, Space, Value};
use crate::stats::{normal_cdf, normal_log_pdf};
use crate::trial::{Direction, Origin, Suggestion, Trial, WarmStartKind, own_trials};

/// Tuning of TPE.
#[derive(Clone, Debug, PartialEq)]
pub struct TpeSettings {
    /// Observations before the model is used; random samples until then.
    pub startup_trials: usize,
    /// Candidates drawn from the good density for each suggestion.
    pub candidates: usize,
    /// Weight of the prior kernel (uniform-like over each range).
    pub prior_weight: f64,
    /// Weight of a transfer-learning parent's kernel relative to an own one.
    pub transfer_weight: f64,
}

impl Default for TpeSettings {
    fn default() -> Self {
        Self {
            startup_trials: 10,
            candidates: 24,
            prior_weight: 1.0,
            transfer_weight: 0.5,
        }
    }
}

/// TPE on one objective.
#[derive(Clone, Debug)]
pub struct Tpe {
    space: Space,
    direction: Direction,
    seed: u64,
    settings: TpeSettings,
}

impl Tpe {
    /// TPE with default settings.
    pub fn new(space: Space, direction: Direction, seed: u64) -> Self {
        Self::with_settings(space, direction, seed, TpeSettings::default())
    }

    /// TPE with these settings.
    pub fn with_settings(
        space: Space,
        direction: Direction,
        seed: u64,
        settings: TpeSettings,
    ) -> Self {
        Self {
            space,
            direction,
            seed,
            settings,
        }
    }
}

/// Observations as coordinates and weights.
type Weighted = Vec<(Vec<Coord>, f64)>;

/// A point as per-parameter coordinates: unit values and category indices.
#[derive(Clone, Debug, PartialEq)]
enum Coord {
    Unit(f64),
    Category(usize),
}

fn coords(space: &Space, config: &Config) -> Vec<Coord> {
    let pairs = space.params().iter().zip(config);
    pairs
        .map(|(p, v)| match v {
            Value::Category(c) => Coord::Category(*c),
            v => Coord::Unit(p.to_unit(v).unwrap_or(0.5)),
        })
        .collect()
}

/// One kernel of a mixture: a centre per numeric parameter, a distribution
/// per categorical one.
struct Kernel {
    centre: Vec<Coord>,
    categories: Vec<Vec<f64>>,
}

/// A weighted mixture of product kernels in the per-parameter coordinates.
struct Parzen {
    kernels: Vec<Kernel>,
    log_weights: Vec<f64>,
    /// The bandwidth of each parameter (numeric ones only are read).
    sigma: Vec<f64>,
}

/// Optuna's weights: equal for the 25 newest observations, a ramp down to
/// 1/n for older ones.
fn recency_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

impl Parzen {
    /// The mixture of `points` (weighted) and the prior kernel.
    fn new(space: &Space, points: &[(Vec<Coord>, f64)], prior_weight: f64) -> Self {
        let n = points.len();
        let kernels_total = n + 1;
        let params = space.params();
        // Scott-like multivariate bandwidth, clipped as Optuna's magic clip.
        let sigma0 = 0.2 * (n.max(1) as f64).powf(-1.0 / (params.len() as f64 + 4.0));
        let min_sigma = 1.0 / (100f64).min(1.0 + kernels_total as f64);
        let sigma = vec![sigma0.clamp(min_sigma, 1.0); params.len()];
        let categorical_row = |choice: Option<usize>, k: usize| {
            let mut row = vec![prior_weight / kernels_total as f64; k];
            if let Some(c) = choice {
                row[c] += 1.0;
            }
            let total: f64 = row.iter().sum();
            row.iter().map(|v| v / total).collect::<Vec<f64>>()
        };
        let kernel = |centre: Vec<Coord>| {
            let categories = params
                .iter()
                .zip(&centre)
                .map(|(p, c)| match (&p.domain, c) {
                    (Domain::Categorical { values }, Coord::Category(c)) => {
                        categorical_row(Some(*c), values.len())
                    }
                    (Domain::Categorical { values }, _) => categorical_row(None, values.len()),
                    _ => Vec::new(),
                })
                .collect();
            Kernel { centre, categories }
        };
        let mut kernels: Vec<Kernel> = points.iter().map(|(c, _)| kernel(c.clone())).collect();
        let prior_centre = params
            .iter()
            .map(|p| match p.domain {
                Domain::Categorical { .. } => Coord::Unit(-1.0),
                _ => Coord::Unit(0.5),
            })
            .collect();
        kernels.push(kernel(prior_centre));
        let mut weights: Vec<f64> = points.iter().map(|(_, w)| *w).collect();
        weights.push(prior_weight);
        let total: f64 = weights.iter().sum();
        let log_weights = weights.iter().map(|w| (w / total).ln()).collect();
        Self {
            kernels,
            log_weights,
            sigma,
        }
    }

    /// The sigma of kernel `k` in numeric parameter `p` (the prior is wide).
    fn sigma(&self, k: usize, p: usize) -> f64 {
        if k + 1 == self.kernels.len() {
            1.0
        } else {
            self.sigma[p]
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<Coord> {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut k = self.kernels.len() - 1;
        for (i, lw) in self.log_weights.iter().enumerate() {
            acc += lw.exp();
            if u < acc {
                k = i;
                break;
            }
        }
        let kernel = &self.kernels[k];
        (0..kernel.centre.len())
            .map(|p| match &kernel.centre[p] {
                _ if !kernel.categories[p].is_empty() => {
                    let probs = &kernel.categories[p];
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    let mut c = probs.len() - 1;
                    for (i, q) in probs.iter().enumerate() {
                        acc += q;
                        if u < acc {
                            c = i;
                            break;
                        }
                    }
                    Coord::Category(c)
                }
                Coord::Unit(mu) => {
                    let s = self.sigma(k, p);
                    let mut x = mu + s * rng::normal(rng);
                    for _ in 0..100 {
                        if (0.0..=1.0).contains(&x) {
                            break;
                        }
                        x = mu + s * rng::normal(rng);
                    }
                    Coord::Unit(x.clamp(0.0, 1.0))
                }
                Coord::Category(_) => Coord::Category(0),
            })
            .collect()
    }

    fn log_density(&self, x: &[Coord]) -> f64 {
        let terms: Vec<f64> = self
            .kernels
            .iter()
            .enumerate()
            .map(|(k, kernel)| {
                let mut lp = self.log_weights[k];
                for (p, coord) in x.iter().enumerate() {
                    lp += match (coord, &kernel.centre[p]) {
                        (Coord::Category(c), _) => kernel.categories[p][*c].ln(),
                        (Coord::Unit(v), Coord::Unit(mu)) => {
                            let s = self.sigma(k, p);
                            let mass = normal_cdf((1.0 - mu) / s) - normal_cdf(-mu / s);
                            normal_log_pdf((v - mu) / s) - s.ln() - mass.max(1e-300).ln()
                        }
                        (Coord::Unit(_), Coord::Category(_)) => 0.0,
                    };
                }
                lp
            })
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
    }
}

fn to_config(space: &Space, x: &[Coord]) -> Config {
    let pairs = space.params().iter().zip(x);
    pairs
        .map(|(p, c)| match c {
            Coord::Unit(u) => p.from_unit(*u),
            Coord::Category(c) => Value::Category(*c),
        })
        .collect()
}

/// The split point: Optuna's γ(n) = min(⌈n/10⌉, 25).
fn good_count(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Observations (in history order) split into good and bad, weighted.
fn split(points: Vec<(Vec<Coord>, f64)>, scale: f64) -> (Weighted, Weighted) {
    let n = points.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| points[*a].1.total_cmp(&points[*b].1));
    let mut good_set = vec![false; n];
    for i in order.into_iter().take(good_count(n)) {
        good_set[i] = true;
    }
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (i, (c, _)) in points.into_iter().enumerate() {
        if good_set[i] {
            good.push(c)
        } else {
            bad.push(c)
        }
    }
    let weigh = |v: Vec<Vec<Coord>>| {
        let w = recency_weights(v.len());
        v.into_iter().zip(w).map(|(c, w)| (c, w * scale)).collect()
    };
    (weigh(good), weigh(bad))
}

impl Strategy for Tpe {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let observed = |keep: &dyn Fn(&Trial) -> bool| -> Vec<(Vec<Coord>, f64)> {
            history
                .iter()
                .filter(|t| t.is_observed(1) && keep(t))
                .map(|t| {
                    (
                        coords(&self.space, &t.config),
                        self.direction.loss(t.values[0]),
                    )
                })
                .collect()
        };
        let direct = observed(&Trial::is_direct);
        let transfer = observed(&|t| t.origin == Origin::Parent(WarmStartKind::TransferLearning));
        let start = own_trials(history);
        if direct.len() < self.settings.startup_trials {
            return (start..start + n)
                .map(|i| Suggestion::new(sample(&self.space, self.seed, i)))
                .collect();
        }
        let (mut good, mut bad) = split(direct, 1.0);
        let (tg, tb) = split(transfer, self.settings.transfer_weight);
        good.extend(tg);
        bad.extend(tb);
        let l = Parzen::new(&self.space, &good, self.settings.prior_weight);
        let g = Parzen::new(&self.space, &bad, self.settings.prior_weight);
        (start..start + n)
            .map(|index| {
                let mut rng = rng::stream(self.seed, Purpose::Tpe, index as u64);
                let mut best: Option<(f64, Config)> = None;
                for _ in 0..self.settings.candidates {
                    let config = to_config(&self.space, &l.sample(&mut rng));
                    let x = coords(&self.space, &config);
                    let score = l.log_density(&x) - g.log_density(&x);
                    if best.as_ref().is_none_or(|(b, _)| score > *b) {
                        best = Some((score, config));
                    }
                }
                Suggestion::new(
                    best.map(|(_, c)| c)
                        .unwrap_or_else(|| sample(&self.space, self.seed, index)),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Random;
    use crate::space::{Param, Scale};
    use crate::testing;

    fn space() -> Space {
        Space::new(vec![
            Param::continuous("x", -5.0, 5.0, Scale::Linear),
            Param::integer("k", 0, 20, Scale::Linear),
            Param::categorical("c", &["a", "b", "c", "d"]),
        ])
        .unwrap()
    }

    fn f(c: &[Value]) -> f64 {
        let (Value::Float(x), Value::Int(k), Value::Category(c)) = (&c[0], &c[1], &c[2]) else {
            panic!()
        };
        (x - 1.0).powi(2) + ((*k - 13) as f64 / 4.0).powi(2) + if *c == 2 { 0.0 } else { 2.0 }
    }

    fn run(strategy: &mut dyn Strategy, budget: usize) -> f64 {
        testing::best(&testing::run(strategy, f, budget, 1))
    }

    #[test]
    fn split_and_weights_follow_optuna() {
        assert_eq!(
            (
                good_count(1),
                good_count(10),
                good_count(11),
                good_count(1000)
            ),
            (1, 1, 2, 25)
        );
        assert_eq!(recency_weights(3), vec![1.0; 3]);
        let w = recency_weights(30);
        assert!(
            (w[0] - 1.0 / 30.0).abs() < 1e-12 && w[4] == 1.0 && w[5..].iter().all(|v| *v == 1.0)
        );
    }

    #[test]
    fn density_integrates_to_one() {
        let s = Space::new(vec![Param::continuous("x", 0.0, 1.0, Scale::Linear)]).unwrap();
        let points = vec![
            (vec![Coord::Unit(0.1)], 1.0),
            (vec![Coord::Unit(0.95)], 1.0),
        ];
        let p = Parzen::new(&s, &points, 1.0);
        let n = 20000;
        let integral: f64 = (0..n)
            .map(|i| {
                p.log_density(&[Coord::Unit((i as f64 + 0.5) / n as f64)])
                    .exp()
            })
            .sum::<f64>()
            / n as f64;
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
    }

    #[test]
    fn beats_random_on_a_mixed_space() {
        let mut tpe = Vec::new();
        let mut random = Vec::new();
        for seed in 0..5 {
            tpe.push(run(&mut Tpe::new(space(), Direction::Minimize, seed), 60));
            random.push(run(&mut Random::new(space(), seed), 60));
        }
        let (t, r) = (
            crate::stats::median(&tpe).unwrap(),
            crate::stats::median(&random).unwrap(),
        );
        assert!(t < r, "TPE {tpe:?} vs random {random:?}");
    }

    #[test]
    fn transfer_parents_move_the_first_model_suggestion() {
        let mut own = Vec::new();
        for s in Random::new(space(), 1).suggest(&[], 10) {
            let v = f(&s.config);
            own.push(Trial::completed(s.config, vec![v]));
        }
        let plain = Tpe::new(space(), Direction::Minimize, 1).suggest(&own, 1);
        let mut history: Vec<Trial> = Random::new(space(), 2)
            .suggest(&[], 30)
            .into_iter()
            .map(|s| {
                let v = f(&s.config);
                Trial::completed(s.config, vec![v])
                    .with_origin(Origin::Parent(WarmStartKind::TransferLearning))
            })
            .collect();
        history.extend(own);
        let shaped = Tpe::new(space(), Direction::Minimize, 1).suggest(&history, 1);
        assert_ne!(plain, shaped);
    }
}
