//! Hyperband (Li et al. 2018): brackets of successive halving that trade the
//! number of configurations against the resource each gets. A trial at rung
//! i of a bracket runs with resource r_i; when a rung has finished, its best
//! 1/η are promoted (new trials of the same configuration, linked by
//! `promoted_from`) to rung i + 1. Brackets are filled in the paper's order
//! and start as soon as trials are free, so parallel workers stay busy.

use crate::Strategy;
use crate::random::sample_for;
use crate::rng::Purpose;
use crate::space::Space;
use crate::trial::{Direction, Origin, Suggestion, Trial, TrialState};

/// One bracket: each rung's number of trials and resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bracket {
    /// (trials, resource) per rung, from the first.
    pub rungs: Vec<(usize, u64)>,
}

/// The brackets of one Hyperband iteration for resources in
/// [min_resource, max_resource] and reduction factor `eta`, most aggressive
/// first: s_max = ⌊log_η(R)⌋ with R = max/min; bracket s starts
/// n = ⌈(s_max+1) η^s / (s+1)⌉ trials at resource R η^-s, and rung i keeps
/// ⌊n η^-i⌋ trials at R η^(i-s).
pub fn brackets(min_resource: u64, max_resource: u64, eta: u64) -> Vec<Bracket> {
    let eta = eta.max(2);
    let ratio = max_resource as f64 / min_resource.max(1) as f64;
    let mut s_max = 0u32;
    while (eta.pow(s_max + 1) as f64) <= ratio * (1.0 + 1e-12) {
        s_max += 1;
    }
    (0..=s_max)
        .rev()
        .map(|s| {
            let n = ((s_max as u64 + 1) * eta.pow(s)).div_ceil(s as u64 + 1) as usize;
            let rungs = (0..=s)
                .map(|i| {
                    let trials = n / eta.pow(i) as usize;
                    let resource = (max_resource as f64 / eta.pow(s - i) as f64).round() as u64;
                    (trials, resource.max(min_resource))
                })
                .collect();
            Bracket { rungs }
        })
        .collect()
}

/// A trial's place in a successive-halving schedule, rebuilt from history.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Which bracket instance (Hyperband) or 0 (ASHA).
    pub group: usize,
    pub rung: usize,
    pub finished: bool,
    pub loss: Option<f64>,
    pub promoted: bool,
}

/// The nodes of this search's trials (`None` for other trials), with each
/// fresh trial's group from `group_of(fresh number)`.
pub(crate) fn nodes(
    history: &[Trial],
    direction: Direction,
    mut group_of: impl FnMut(usize) -> usize,
) -> (Vec<Option<Node>>, usize) {
    let mut nodes: Vec<Option<Node>> = Vec::with_capacity(history.len());
    let mut fresh = 0;
    for t in history {
        if t.origin != Origin::ThisSearch {
            nodes.push(None);
            continue;
        }
        let place = match t
            .promoted_from
            .and_then(|p| nodes.get(p).cloned().flatten())
        {
            Some(parent) => (parent.group, parent.rung + 1),
            None => {
                fresh += 1;
                (group_of(fresh - 1), 0)
            }
        };
        if let Some(Some(parent)) = t
            .promoted_from
            .and_then(|p| nodes.get_mut(p).map(Option::as_mut))
        {
            parent.promoted = true;
        }
        let loss = t.is_observed(1).then(|| direction.loss(t.values[0]));
        nodes.push(Some(Node {
            group: place.0,
            rung: place.1,
            finished: t.state != TrialState::Pending,
            loss,
            promoted: false,
        }));
    }
    (nodes, fresh)
}

/// The indices of the `keep` best finished nodes of (group, rung), best first.
pub(crate) fn best_of(
    nodes: &[Option<Node>],
    group: usize,
    rung: usize,
    keep: usize,
) -> Vec<usize> {
    let mut members: Vec<(usize, f64)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.as_ref()
                .filter(|n| n.group == group && n.rung == rung)
                .and_then(|n| n.loss.map(|l| (i, l)))
        })
        .collect();
    members.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    members.into_iter().take(keep).map(|(i, _)| i).collect()
}

/// Synchronous Hyperband with random configurations.
#[derive(Clone, Debug)]
pub struct Hyperband {
    space: Space,
    direction: Direction,
    seed: u64,
    brackets: Vec<Bracket>,
}

impl Hyperband {
    /// Hyperband over `space` with resources in [min, max] and factor `eta`.
    pub fn new(
        space: Space,
        direction: Direction,
        seed: u64,
        min_resource: u64,
        max_resource: u64,
        eta: u64,
    ) -> Self {
        let brackets = brackets(min_resource, max_resource, eta);
        Self {
            space,
            direction,
            seed,
            brackets,
        }
    }

    /// The brackets of one iteration.
    pub fn brackets(&self) -> &[Bracket] {
        &self.brackets
    }

    /// The group (iteration × bracket) of the `fresh`-th new configuration.
    fn group_of(&self, fresh: usize) -> usize {
        let per_iteration: usize = self.brackets.iter().map(|b| b.rungs[0].0).sum();
        let (iteration, mut at) = (fresh / per_iteration, fresh % per_iteration);
        for (b, bracket) in self.brackets.iter().enumerate() {
            if at < bracket.rungs[0].0 {
                return iteration * self.brackets.len() + b;
            }
            at -= bracket.rungs[0].0;
        }
        unreachable!("fresh index within one iteration")
    }

    /// The next promotion of a finished rung: (trial, resource).
    fn promotion(&self, nodes: &[Option<Node>]) -> Option<(usize, u64)> {
        let mut groups: Vec<usize> = nodes.iter().flatten().map(|n| n.group).collect();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            let bracket = &self.brackets[group % self.brackets.len()];
            let mut target = bracket.rungs[0].0;
            for rung in 0..bracket.rungs.len() - 1 {
                let members: Vec<&Node> = nodes
                    .iter()
                    .flatten()
                    .filter(|n| n.group == group && n.rung == rung)
                    .collect();
                if members.len() < target || members.iter().any(|n| !n.finished) {
                    break;
                }
                let valid = members.iter().filter(|n| n.loss.is_some()).count();
                target = bracket.rungs[rung + 1].0.min(valid);
                let next = nodes
                    .iter()
                    .flatten()
                    .filter(|n| n.group == group && n.rung == rung + 1)
                    .count();
                if next < target {
                    let best = best_of(nodes, group, rung, target);
                    if let Some(&i) = best
                        .iter()
                        .find(|i| nodes[**i].as_ref().is_some_and(|n| !n.promoted))
                    {
                        return Some((i, bracket.rungs[rung + 1].1));
                    }
                }
            }
        }
        None
    }
}

impl Strategy for Hyperband {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let (mut nodes, mut fresh) = nodes(history, self.direction, |f| self.group_of(f));
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some((parent, resource)) = self.promotion(&nodes) {
                let node = nodes[parent]
                    .as_mut()
                    .expect("promoted trials are this search's");
                node.promoted = true;
                let child = Node {
                    rung: node.rung + 1,
                    finished: false,
                    loss: None,
                    promoted: false,
                    ..node.clone()
                };
                nodes.push(Some(child));
                out.push(Suggestion {
                    config: history[parent].config.clone(),
                    resource: Some(resource),
                    promoted_from: Some(parent),
                });
                continue;
            }
            let group = self.group_of(fresh);
            let resource = self.brackets[group % self.brackets.len()].rungs[0].1;
            nodes.push(Some(Node {
                group,
                rung: 0,
                finished: false,
                loss: None,
                promoted: false,
            }));
            let config = sample_for(&self.space, self.seed, Purpose::Hyperband, fresh);
            out.push(Suggestion {
                config,
                resource: Some(resource),
                promoted_from: None,
            });
            fresh += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scale, Value};

    #[test]
    fn brackets_match_the_paper() {
        // Table 1 of Li et al. (R = 81, η = 3).
        let b = brackets(1, 81, 3);
        let trials: Vec<Vec<usize>> = b
            .iter()
            .map(|b| b.rungs.iter().map(|r| r.0).collect())
            .collect();
        let resources: Vec<Vec<u64>> = b
            .iter()
            .map(|b| b.rungs.iter().map(|r| r.1).collect())
            .collect();
        assert_eq!(
            trials,
            vec![
                vec![81, 27, 9, 3, 1],
                vec![34, 11, 3, 1],
                vec![15, 5, 1],
                vec![8, 2],
                vec![5]
            ]
        );
        assert_eq!(
            resources,
            vec![
                vec![1, 3, 9, 27, 81],
                vec![3, 9, 27, 81],
                vec![9, 27, 81],
                vec![27, 81],
                vec![81]
            ]
        );
        // Resources in epochs from 2 to 18 with η = 3: two brackets.
        let small = brackets(2, 18, 3);
        assert_eq!(small[0].rungs, vec![(9, 2), (3, 6), (1, 18)]);
        assert_eq!(small[1].rungs, vec![(5, 6), (1, 18)]);
        assert_eq!(small[2].rungs, vec![(3, 18)]);
    }

    fn space() -> Space {
        Space::new(vec![Param::continuous("x", 0.0, 1.0, Scale::Linear)]).unwrap()
    }

    /// Runs a search where a configuration's loss is |x - 0.3|, noisier at
    /// small resources.
    fn finish(history: &mut [Trial]) {
        for t in history
            .iter_mut()
            .filter(|t| t.state == TrialState::Pending)
        {
            let Value::Float(x) = t.config[0] else {
                panic!()
            };
            let r = t.resource.unwrap() as f64;
            t.values = vec![(x - 0.3).abs() + 1.0 / r];
            t.state = TrialState::Completed;
        }
    }

    #[test]
    fn promotes_the_best_of_each_finished_rung() {
        let mut hb = Hyperband::new(space(), Direction::Minimize, 1, 1, 9, 3);
        // Brackets for R = 9: (9 @1, 3 @3, 1 @9), (5 @3, 1 @9), (3 @9).
        assert_eq!(hb.brackets()[0].rungs, vec![(9, 1), (3, 3), (1, 9)]);
        let mut history: Vec<Trial> = hb
            .suggest(&[], 9)
            .iter()
            .map(Trial::from_suggestion)
            .collect();
        assert!(
            history
                .iter()
                .all(|t| t.resource == Some(1) && t.promoted_from.is_none())
        );
        // While the first rung runs, free workers start the next bracket.
        let next = hb.suggest(&history, 1);
        assert_eq!((next[0].resource, next[0].promoted_from), (Some(3), None));
        finish(&mut history);
        let promoted = hb.suggest(&history, 4);
        let mut best: Vec<usize> = (0..9).collect();
        best.sort_by(|a, b| history[*a].values[0].total_cmp(&history[*b].values[0]));
        let from: Vec<usize> = promoted[..3]
            .iter()
            .map(|s| s.promoted_from.unwrap())
            .collect();
        assert_eq!(from, best[..3].to_vec());
        assert!(promoted[..3].iter().all(|s| s.resource == Some(3)));
        assert!(
            promoted[..3]
                .iter()
                .all(|s| s.config == history[s.promoted_from.unwrap()].config)
        );
        // The fourth slot is a fresh trial of the second bracket.
        assert_eq!(
            (promoted[3].resource, promoted[3].promoted_from),
            (Some(3), None)
        );
    }

    #[test]
    fn rebuilds_from_history_and_finishes_brackets() {
        let mut hb = Hyperband::new(space(), Direction::Minimize, 4, 1, 9, 3);
        let mut history = Vec::new();
        for _ in 0..12 {
            let s = Hyperband::new(space(), Direction::Minimize, 4, 1, 9, 3).suggest(&history, 2);
            assert_eq!(s, hb.suggest(&history, 2));
            history.extend(s.iter().map(Trial::from_suggestion));
            finish(&mut history);
        }
        // The first bracket ran 9 + 3 + 1 trials; its last is at resource 9.
        let top = history
            .iter()
            .filter(|t| t.resource == Some(9) && t.promoted_from.is_some())
            .count();
        assert!(top >= 1);
    }
}
