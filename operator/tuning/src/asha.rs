//! Asynchronous successive halving (ASHA, Li et al. 2020). Rungs at
//! resources min·η^k up to max; whenever a worker is free, the best trial of
//! the highest rung that is in the top 1/η of its rung and not yet promoted
//! moves up, else a fresh configuration starts at the bottom. No rung waits
//! for another to finish.
//!
//! [`AshaStopping`] is the same rule for trials that run to the end and
//! report intermediate values: at each rung's resource, a trial outside the
//! best 1/η of those that reached it is stopped.

use crate::Strategy;
use crate::hyperband::{best_of, nodes};
use crate::random::sample_for;
use crate::rng::Purpose;
use crate::space::Space;
use crate::trial::{Direction, Origin, Suggestion, Trial, TrialState};

/// The rung resources: min·η^k below max, then max.
pub fn rungs(min_resource: u64, max_resource: u64, eta: u64) -> Vec<u64> {
    let eta = eta.max(2);
    let mut r = vec![];
    let mut at = min_resource.max(1);
    while at < max_resource {
        r.push(at);
        at = at.saturating_mul(eta);
    }
    r.push(max_resource);
    r
}

/// ASHA by promotion: each rung a new trial at a larger resource.
#[derive(Clone, Debug)]
pub struct Asha {
    space: Space,
    direction: Direction,
    seed: u64,
    eta: u64,
    rungs: Vec<u64>,
}

impl Asha {
    /// ASHA over `space` with resources in [min, max] and factor `eta`.
    pub fn new(
        space: Space,
        direction: Direction,
        seed: u64,
        min_resource: u64,
        max_resource: u64,
        eta: u64,
    ) -> Self {
        let rungs = rungs(min_resource, max_resource, eta);
        Self {
            space,
            direction,
            seed,
            eta: eta.max(2),
            rungs,
        }
    }

    /// The rung resources.
    pub fn rungs(&self) -> &[u64] {
        &self.rungs
    }
}

impl Strategy for Asha {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let (mut nodes, mut fresh) = nodes(history, self.direction, |_| 0);
        let mut out = Vec::with_capacity(n);
        'slots: for _ in 0..n {
            for rung in (0..self.rungs.len() - 1).rev() {
                let finished = nodes
                    .iter()
                    .flatten()
                    .filter(|n| n.rung == rung && n.loss.is_some())
                    .count();
                let top = best_of(&nodes, 0, rung, finished / self.eta as usize);
                if let Some(&i) = top
                    .iter()
                    .find(|i| nodes[**i].as_ref().is_some_and(|n| !n.promoted))
                {
                    let node = nodes[i].as_mut().expect("this search's trial");
                    node.promoted = true;
                    let child = crate::hyperband::Node {
                        rung: rung + 1,
                        finished: false,
                        loss: None,
                        promoted: false,
                        ..node.clone()
                    };
                    nodes.push(Some(child));
                    let config = history[i].config.clone();
                    out.push(Suggestion {
                        config,
                        resource: Some(self.rungs[rung + 1]),
                        promoted_from: Some(i),
                    });
                    continue 'slots;
                }
            }
            let config = sample_for(&self.space, self.seed, Purpose::Hyperband, fresh);
            nodes.push(Some(crate::hyperband::Node {
                group: 0,
                rung: 0,
                finished: false,
                loss: None,
                promoted: false,
            }));
            out.push(Suggestion {
                config,
                resource: Some(self.rungs[0]),
                promoted_from: None,
            });
            fresh += 1;
        }
        out
    }
}

/// ASHA by stopping: trials run with the maximum resource and report
/// intermediate values at steps counted in the same unit.
#[derive(Clone, Debug)]
pub struct AshaStopping {
    direction: Direction,
    eta: u64,
    rungs: Vec<u64>,
}

impl AshaStopping {
    /// The rule for resources in [min, max] and factor `eta`.
    pub fn new(direction: Direction, min_resource: u64, max_resource: u64, eta: u64) -> Self {
        let rungs = rungs(min_resource, max_resource, eta);
        Self {
            direction,
            eta: eta.max(2),
            rungs,
        }
    }

    /// Whether the running trial at `index` of `history` should stop now.
    pub fn should_stop(&self, history: &[Trial], index: usize) -> bool {
        let trial = &history[index];
        let Some(&(last_step, _)) = trial.intermediate.last() else {
            return false;
        };
        if trial.state != TrialState::Pending || trial.origin != Origin::ThisSearch {
            return false;
        }
        let rungs = &self.rungs[..self.rungs.len() - 1];
        let Some(&milestone) = rungs.iter().rev().find(|r| **r <= last_step) else {
            return false;
        };
        // The value at a rung: the first one reported at or after it.
        let at_rung = |t: &Trial| {
            let first = t.intermediate.iter().find(|(s, _)| *s >= milestone);
            first.map(|(_, v)| self.direction.loss(*v))
        };
        let Some(mine) = at_rung(trial) else {
            return false;
        };
        let mut values: Vec<f64> = history
            .iter()
            .filter(|t| t.origin == Origin::ThisSearch)
            .filter_map(at_rung)
            .collect();
        values.sort_by(f64::total_cmp);
        // The 1/η quantile with linear interpolation (Ray Tune's cut-off).
        let pos = (values.len() - 1) as f64 / self.eta as f64;
        let (lo, frac) = (pos.floor() as usize, pos.fract());
        let cutoff = values[lo] + frac * (values[(lo + 1).min(values.len() - 1)] - values[lo]);
        mine > cutoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scale, Value};

    fn space() -> Space {
        Space::new(vec![Param::continuous("x", 0.0, 1.0, Scale::Linear)]).unwrap()
    }

    #[test]
    fn rungs_grow_by_eta() {
        assert_eq!(rungs(1, 81, 3), vec![1, 3, 9, 27, 81]);
        assert_eq!(rungs(2, 20, 3), vec![2, 6, 18, 20]);
    }

    #[test]
    fn promotes_the_top_third_as_soon_as_it_exists() {
        let mut asha = Asha::new(space(), Direction::Minimize, 1, 1, 9, 3);
        let mut history: Vec<Trial> = asha
            .suggest(&[], 5)
            .iter()
            .map(Trial::from_suggestion)
            .collect();
        // Nothing finished: all fresh at the bottom rung.
        assert!(
            history
                .iter()
                .all(|t| t.resource == Some(1) && t.promoted_from.is_none())
        );
        // Two finished: 2/3 rounds down to none promotable.
        for (i, v) in [(0, 0.5), (1, 0.2)] {
            history[i].state = TrialState::Completed;
            history[i].values = vec![v];
        }
        assert_eq!(asha.suggest(&history, 1)[0].promoted_from, None);
        // Three finished: the best (trial 2) goes up, the next slot is fresh.
        history[2].state = TrialState::Completed;
        history[2].values = vec![0.1];
        let s = asha.suggest(&history, 2);
        assert_eq!((s[0].promoted_from, s[0].resource), (Some(2), Some(3)));
        assert_eq!(s[0].config, history[2].config);
        assert_eq!((s[1].promoted_from, s[1].resource), (None, Some(1)));
        // Six finished: the top two of six, trial 1 next.
        history.extend(s.iter().map(Trial::from_suggestion));
        for (i, v) in [(3, 0.9), (4, 0.8), (6, 0.7)] {
            history[i].state = TrialState::Completed;
            history[i].values = vec![v];
        }
        let s = asha.suggest(&history, 1);
        assert_eq!(s[0].promoted_from, Some(1));
    }

    #[test]
    fn maximizing_promotes_the_largest() {
        let mut asha = Asha::new(space(), Direction::Maximize, 1, 1, 9, 3);
        let history: Vec<Trial> = [0.1, 0.9, 0.5]
            .iter()
            .map(|v| Trial {
                resource: Some(1),
                ..Trial::completed(vec![Value::Float(*v)], vec![*v])
            })
            .collect();
        assert_eq!(asha.suggest(&history, 1)[0].promoted_from, Some(1));
    }

    #[test]
    fn stopping_cuts_trials_outside_the_top_third_at_a_rung() {
        let rule = AshaStopping::new(Direction::Minimize, 1, 9, 3);
        let trial = |curve: &[(u64, f64)], state| Trial {
            intermediate: curve.to_vec(),
            state,
            ..Trial::pending(vec![Value::Float(0.0)])
        };
        let mut history = vec![
            trial(&[(1, 0.5), (3, 0.3), (9, 0.2)], TrialState::Completed),
            trial(&[(1, 0.6), (3, 0.4), (9, 0.3)], TrialState::Completed),
            trial(&[(1, 0.4), (3, 0.2)], TrialState::Pending),
        ];
        // At rung 3, 0.2 is the best of (0.3, 0.4, 0.2): it goes on.
        assert!(!rule.should_stop(&history, 2));
        history.push(trial(
            &[(1, 0.45), (2, 0.45), (3, 0.35)],
            TrialState::Pending,
        ));
        // 0.35 against (0.2, 0.3, 0.35, 0.4): above the 1/3 quantile 0.3.
        assert!(rule.should_stop(&history, 3));
        // Before the first rung, and for finished trials, nothing is stopped.
        history.push(trial(&[], TrialState::Pending));
        assert!(!rule.should_stop(&history, 4));
        assert!(!rule.should_stop(&history, 1));
    }
}
