//! Median early stopping (Golovin et al. 2017, Katib's median stop): a
//! running trial whose best value so far is worse than the median of the
//! completed trials' running averages up to the same step is stopped.

use crate::stats::median;
use crate::trial::{Direction, Origin, Trial, TrialState};

/// The median stopping rule.
#[derive(Clone, Debug)]
pub struct MedianStopping {
    direction: Direction,
    /// Completed trials with intermediate values needed before any stop.
    pub min_trials: usize,
    /// Steps a trial runs before it can be stopped.
    pub min_step: u64,
}

impl MedianStopping {
    /// The rule after `min_trials` completed trials.
    pub fn new(direction: Direction, min_trials: usize) -> Self {
        Self {
            direction,
            min_trials: min_trials.max(1),
            min_step: 0,
        }
    }

    /// Whether the running trial at `index` of `history` should stop now.
    pub fn should_stop(&self, history: &[Trial], index: usize) -> bool {
        let trial = &history[index];
        if trial.state != TrialState::Pending {
            return false;
        }
        let Some(&(step, _)) = trial.intermediate.last() else {
            return false;
        };
        if step < self.min_step {
            return false;
        }
        let loss = |v: &f64| self.direction.loss(*v);
        let averages: Vec<f64> = history
            .iter()
            .filter(|t| t.state == TrialState::Completed && t.origin == Origin::ThisSearch)
            .filter_map(|t| {
                let upto: Vec<f64> = t
                    .intermediate
                    .iter()
                    .filter(|(s, _)| *s <= step)
                    .map(|(_, v)| loss(v))
                    .collect();
                (!upto.is_empty()).then(|| upto.iter().sum::<f64>() / upto.len() as f64)
            })
            .collect();
        if averages.len() < self.min_trials {
            return false;
        }
        let best = trial
            .intermediate
            .iter()
            .map(|(_, v)| loss(v))
            .fold(f64::INFINITY, f64::min);
        median(&averages).is_some_and(|m| best > m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Value;

    fn trial(curve: &[f64], state: TrialState) -> Trial {
        let intermediate = curve
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, *v))
            .collect();
        Trial {
            intermediate,
            state,
            ..Trial::pending(vec![Value::Float(0.0)])
        }
    }

    #[test]
    fn stops_a_trial_worse_than_the_median_of_running_averages() {
        let rule = MedianStopping::new(Direction::Minimize, 3);
        let mut history = vec![
            trial(&[1.0, 0.8, 0.6, 0.4], TrialState::Completed), // averages up to step 2: 0.9
            trial(&[0.8, 0.6, 0.5, 0.4], TrialState::Completed), // 0.7
            trial(&[2.0, 1.5, 1.0, 0.5], TrialState::Completed), // 1.75
            trial(&[1.0, 0.95], TrialState::Pending),            // best 0.95 > median 0.9
            trial(&[1.0, 0.85], TrialState::Pending),            // best 0.85 < 0.9
        ];
        assert!(rule.should_stop(&history, 3));
        assert!(!rule.should_stop(&history, 4));
        // Completed trials are never stopped; too few completed trials stop nothing.
        assert!(!rule.should_stop(&history, 0));
        history[2].state = TrialState::Failed;
        assert!(!rule.should_stop(&history, 3));
    }

    #[test]
    fn respects_the_direction_and_min_step() {
        let mut rule = MedianStopping::new(Direction::Maximize, 1);
        let history = vec![
            trial(&[0.5, 0.7], TrialState::Completed),
            trial(&[0.4, 0.5], TrialState::Pending),
        ];
        // Maximizing: 0.5 is below the median average 0.6.
        assert!(rule.should_stop(&history, 1));
        rule.min_step = 3;
        assert!(!rule.should_stop(&history, 1));
    }
}
