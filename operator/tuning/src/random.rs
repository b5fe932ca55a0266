//! Random search: the k-th trial is a uniform sample of the encoded space
//! drawn from stream k, so batches and restarts give the same sequence.

use rand::RngExt;

use crate::Strategy;
use crate::rng::{self, Purpose};
use crate::space::{Config, Domain, Space, Value};
use crate::trial::{Suggestion, Trial, own_trials};

/// Independent uniform samples (uniform in the scaled value of each numeric
/// parameter, uniform over each categorical one's values).
#[derive(Clone, Debug)]
pub struct Random {
    space: Space,
    seed: u64,
}

impl Random {
    /// Random search over `space`.
    pub fn new(space: Space, seed: u64) -> Self {
        Self { space, seed }
    }
}

/// The random point of trial `index`.
pub(crate) fn sample(space: &Space, seed: u64, index: usize) -> Config {
    sample_for(space, seed, Purpose::Random, index)
}

/// The random point `index` of the streams of `purpose`.
pub(crate) fn sample_for(space: &Space, seed: u64, purpose: Purpose, index: usize) -> Config {
    let mut rng = rng::stream(seed, purpose, index as u64);
    space.decode(&rng::uniform(&mut rng, space.dims()))
}

/// A Latin hypercube of `n` points: each parameter's unit range cut into `n`
/// strata, each stratum used once (categorical values in near-equal shares).
pub(crate) fn latin_hypercube(space: &Space, n: usize, seed: u64) -> Vec<Config> {
    let mut rng = rng::stream(seed, Purpose::InitialDesign, 0);
    let mut units = vec![Vec::with_capacity(space.params().len()); n];
    for _ in space.params() {
        let mut strata: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            strata.swap(i, rng.random_range(0..=i));
        }
        for (point, s) in units.iter_mut().zip(strata) {
            point.push((s as f64 + rng.random::<f64>()) / n as f64);
        }
    }
    units
        .into_iter()
        .map(|u| {
            let pairs = space.params().iter().zip(u);
            pairs
                .map(|(p, u)| match &p.domain {
                    Domain::Categorical { values } => {
                        Value::Category(((u * values.len() as f64) as usize).min(values.len() - 1))
                    }
                    _ => p.from_unit(u),
                })
                .collect()
        })
        .collect()
}

impl Strategy for Random {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let start = own_trials(history);
        (start..start + n)
            .map(|i| Suggestion::new(sample(&self.space, self.seed, i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scale};

    fn space() -> Space {
        Space::new(vec![
            Param::integer("k", 1, 4, Scale::Linear),
            Param::categorical("c", &["a", "b"]),
        ])
        .unwrap()
    }

    #[test]
    fn batches_and_restarts_give_the_same_sequence() {
        let mut a = Random::new(space(), 5);
        let all: Vec<_> = a.suggest(&[], 6);
        let mut history: Vec<Trial> = Vec::new();
        let mut one_by_one = Vec::new();
        for _ in 0..6 {
            let mut b = Random::new(space(), 5);
            let s = b.suggest(&history, 1).remove(0);
            history.push(Trial::from_suggestion(&s));
            one_by_one.push(s);
        }
        assert_eq!(all, one_by_one);
        assert_ne!(Random::new(space(), 6).suggest(&[], 6), all);
    }

    #[test]
    fn covers_every_value_roughly_uniformly() {
        let mut counts = [0usize; 8];
        for s in Random::new(space(), 1).suggest(&[], 4000) {
            let (Value::Int(k), Value::Category(c)) = (&s.config[0], &s.config[1]) else {
                panic!()
            };
            counts[(*k as usize - 1) * 2 + c] += 1;
        }
        assert!(counts.iter().all(|c| (400..600).contains(c)), "{counts:?}");
    }

    #[test]
    fn latin_hypercube_uses_every_stratum_once() {
        let space = Space::new(vec![
            Param::continuous("x", 0.0, 1.0, Scale::Linear),
            Param::categorical("c", &["a", "b"]),
        ])
        .unwrap();
        let points = latin_hypercube(&space, 10, 3);
        let mut strata: Vec<usize> = points
            .iter()
            .map(|p| match p[0] {
                Value::Float(x) => (x * 10.0) as usize,
                _ => panic!(),
            })
            .collect();
        strata.sort();
        assert_eq!(strata, (0..10).collect::<Vec<_>>());
        let b = points.iter().filter(|p| p[1] == Value::Category(1)).count();
        assert_eq!(b, 5);
        assert_eq!(points, latin_hypercube(&space, 10, 3));
    }
}
