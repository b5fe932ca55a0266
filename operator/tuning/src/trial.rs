//! Trials (the history a strategy reads) and suggestions (what it returns).

use crate::space::Config;

/// Whether smaller or larger objective values are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Direction {
    /// The value as a loss: smaller is better either way.
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }
}

/// Where a trial ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// In this search.
    ThisSearch,
    /// In an earlier search this one warm-starts from.
    Parent(WarmStartKind),
}

/// What a parent search shares with this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmStartKind {
    /// Same data and algorithm: parent trials count as observations.
    IdenticalDataAndAlgorithm,
    /// Different data or algorithm: parent trials only shape the prior.
    TransferLearning,
}

/// The state of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialState {
    /// Created and not finished: no final value yet.
    Pending,
    /// Finished with its final objective values.
    Completed,
    /// Stopped by early stopping; `values` may hold its last values.
    EarlyStopped,
    /// Failed: no values.
    Failed,
}

/// One trial of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// The hyperparameters, in the order of the space's parameters.
    pub config: Config,
    /// Its state.
    pub state: TrialState,
    /// The final objective values, one per objective (empty until finished).
    pub values: Vec<f64>,
    /// Intermediate values of the first objective as (step, value), in step order.
    pub intermediate: Vec<(u64, f64)>,
    /// The resource (e.g. epochs) Hyperband or ASHA gave the trial.
    pub resource: Option<u64>,
    /// The trial this one continues at a larger resource (Hyperband, ASHA).
    pub promoted_from: Option<usize>,
    /// Where it ran.
    pub origin: Origin,
}

impl Trial {
    /// A completed trial of this search.
    pub fn completed(config: Config, values: Vec<f64>) -> Self {
        Self {
            config,
            state: TrialState::Completed,
            values,
            intermediate: Vec::new(),
            resource: None,
            promoted_from: None,
            origin: Origin::ThisSearch,
        }
    }

    /// A running trial of this search.
    pub fn pending(config: Config) -> Self {
        Self {
            state: TrialState::Pending,
            ..Self::completed(config, Vec::new())
        }
    }

    /// A trial created from a suggestion, still running.
    pub fn from_suggestion(suggestion: &Suggestion) -> Self {
        Self {
            resource: suggestion.resource,
            promoted_from: suggestion.promoted_from,
            ..Self::pending(suggestion.config.clone())
        }
    }

    /// The same trial with another origin.
    pub fn with_origin(self, origin: Origin) -> Self {
        Self { origin, ..self }
    }

    /// Whether the trial has final values a model can learn from.
    pub fn is_observed(&self, objectives: usize) -> bool {
        matches!(self.state, TrialState::Completed | TrialState::EarlyStopped)
            && self.values.len() >= objectives
            && self.values[..objectives].iter().all(|v| v.is_finite())
    }

    /// Whether this trial counts as an observation of the current search
    /// (its own trials and identical warm-start parents).
    pub fn is_direct(&self) -> bool {
        matches!(
            self.origin,
            Origin::ThisSearch | Origin::Parent(WarmStartKind::IdenticalDataAndAlgorithm)
        )
    }
}

/// A trial to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// The hyperparameters, in the order of the space's parameters.
    pub config: Config,
    /// The resource to give the trial (Hyperband, ASHA), else `None`.
    pub resource: Option<u64>,
    /// The history index of the trial this one promotes (Hyperband, ASHA).
    pub promoted_from: Option<usize>,
}

impl Suggestion {
    /// A fresh configuration with no resource.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            resource: None,
            promoted_from: None,
        }
    }
}

/// The number of this search's own trials: the index the next one gets in
/// the random streams.
pub(crate) fn own_trials(history: &[Trial]) -> usize {
    history
        .iter()
        .filter(|t| t.origin == Origin::ThisSearch)
        .count()
}
