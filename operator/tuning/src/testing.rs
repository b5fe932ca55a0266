//! Shared by the strategies' tests: drive a strategy over a test function.

use crate::space::Value;
use crate::{Strategy, Trial};

/// Asks `strategy` for `batch` suggestions at a time and completes each with
/// `f` until the history holds at least `budget` trials.
pub(crate) fn run(
    strategy: &mut dyn Strategy,
    f: fn(&[Value]) -> f64,
    budget: usize,
    batch: usize,
) -> Vec<Trial> {
    let mut history = Vec::new();
    while history.len() < budget {
        for s in strategy.suggest(&history, batch) {
            let v = f(&s.config);
            history.push(Trial::completed(s.config, vec![v]));
        }
    }
    history
}

/// The smallest first objective of a history.
pub(crate) fn best(history: &[Trial]) -> f64 {
    history
        .iter()
        .map(|t| t.values[0])
        .fold(f64::INFINITY, f64::min)
}
