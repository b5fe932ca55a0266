//! The pure half of the TuningJob controller: the spec as a kiln-tuning
//! space and strategy, the trial records as the strategy's history, and the
//! search's decisions (how many trials to start, which to stop early,
//! whether the search is over). No API calls: every rule here is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kiln_api::conditions::reasons;
use kiln_api::tuning_job::{
    CompletionCriteria, EarlyStoppingType, ObjectiveType, ParetoTrial, Scaling, StrategyType,
    TrialRecord, TuningJobSpec, WarmStartType,
};
use kiln_tuning::{
    Asha, Bayesian, Direction, Grid, MedianStopping, Origin, ParEgo, Param, Random, Scale, Space,
    Strategy, Suggestion, Tpe, Trial, TrialState, WarmStartKind,
};

/// Record states (`TrialRecord.state`).
pub mod states {
    /// Its TrainingJob is being created or runs.
    pub const IN_PROGRESS: &str = "InProgress";
    /// It completed and reported the objective.
    pub const COMPLETED: &str = "Completed";
    /// It failed, or completed without the objective.
    pub const FAILED: &str = "Failed";
    /// Early stopping stopped it.
    pub const EARLY_STOPPED: &str = "EarlyStopped";
    /// The end of the search stopped it, or its TrainingJob was deleted.
    pub const STOPPED: &str = "Stopped";
}

/// Grid points per continuous parameter (the API refuses continuous ranges
/// for Grid, so this only bounds what a future spec could ask).
const GRID_RESOLUTION: usize = 5;

/// The search a TuningJob's spec describes.
pub struct Search {
    /// The tuned parameters.
    pub space: Space,
    /// Whether the objective is minimized or maximized.
    pub direction: Direction,
    /// The additional objectives (multi-objective searches), by metric name.
    pub extra: Vec<(String, Direction)>,
    strategy: Box<dyn Strategy + Send>,
    median: Option<MedianStopping>,
}

fn scale(scaling: Scaling, min: f64, max: f64) -> Scale {
    match scaling {
        Scaling::Auto => Scale::auto(min, max),
        Scaling::Linear => Scale::Linear,
        Scaling::Logarithmic => Scale::Log,
        Scaling::ReverseLogarithmic => Scale::ReverseLog,
    }
}

fn decimal(name: &str, which: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            format!("parameterRanges.continuous[{name}].{which}: {text:?} is not a finite number")
        })
}

/// The seed of a search: the spec's, else one derived from the TuningJob's
/// UID, so that a restarted operator makes the same choices.
pub fn seed(spec: &TuningJobSpec, uid: &str) -> u64 {
    match spec.strategy.seed {
        Some(s) => s as u64,
        None => uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }),
    }
}

impl Search {
    /// The search of `spec`, or a message saying what to fix.
    pub fn new(spec: &TuningJobSpec, seed: u64) -> Result<Self, String> {
        let ranges = &spec.parameter_ranges;
        let mut params = Vec::new();
        for r in &ranges.integer {
            let s = scale(r.scaling, r.min as f64, r.max as f64);
            params.push(Param::integer(&r.name, r.min, r.max, s));
        }
        for r in &ranges.continuous {
            let (min, max) = (
                decimal(&r.name, "min", &r.min)?,
                decimal(&r.name, "max", &r.max)?,
            );
            params.push(Param::continuous(
                &r.name,
                min,
                max,
                scale(r.scaling, min, max),
            ));
        }
        for r in &ranges.categorical {
            let values: Vec<&str> = r.values.iter().map(String::as_str).collect();
            params.push(Param::categorical(&r.name, &values));
        }
        let space = Space::new(params).map_err(|e| format!("parameterRanges: {e}"))?;
        let direction_of = |t: ObjectiveType| match t {
            ObjectiveType::Maximize => Direction::Maximize,
            ObjectiveType::Minimize => Direction::Minimize,
        };
        let direction = direction_of(spec.objective.type_);
        let extra: Vec<(String, Direction)> = spec
            .additional_objectives
            .iter()
            .map(|o| (o.metric_name.clone(), direction_of(o.type_)))
            .collect();
        let strategy: Box<dyn Strategy + Send> = match spec.strategy.type_ {
            StrategyType::Bayesian if !extra.is_empty() => {
                let mut directions = vec![direction];
                directions.extend(extra.iter().map(|(_, d)| *d));
                Box::new(ParEgo::new(space.clone(), directions, seed))
            }
            _ if !extra.is_empty() && spec.strategy.type_ != StrategyType::Random => {
                return Err(
                    "additionalObjectives (a multi-objective search) take strategy.type Bayesian or Random"
                        .into(),
                );
            }
            StrategyType::Random => Box::new(Random::new(space.clone(), seed)),
            StrategyType::Grid => Box::new(Grid::new(space.clone(), GRID_RESOLUTION)),
            StrategyType::Bayesian => Box::new(Bayesian::new(space.clone(), direction, seed)),
            StrategyType::Tpe => Box::new(Tpe::new(space.clone(), direction, seed)),
            StrategyType::Hyperband => {
                let hb = spec
                    .strategy
                    .hyperband
                    .as_ref()
                    .ok_or("strategy.hyperband is required when strategy.type is Hyperband")?;
                if hb.min_resource < 1 || hb.max_resource <= hb.min_resource {
                    return Err(
                        "strategy.hyperband: minResource must be at least 1 and below maxResource"
                            .into(),
                    );
                }
                Box::new(Asha::new(
                    space.clone(),
                    direction,
                    seed,
                    hb.min_resource as u64,
                    hb.max_resource as u64,
                    hb.reduction_factor.max(2) as u64,
                ))
            }
        };
        let median = (spec.early_stopping.type_ == EarlyStoppingType::Median).then(|| {
            MedianStopping::new(direction, spec.early_stopping.min_trials.max(1) as usize)
        });
        Ok(Self {
            space,
            direction,
            extra,
            strategy,
            median,
        })
    }

    /// The metric names of the additional objectives.
    pub fn extra_metrics(&self) -> Vec<String> {
        self.extra.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The recorded trials on the Pareto front of every objective, at most
    /// 50 (empty for a single objective).
    pub fn pareto(&self, records: &[TrialRecord], objective: &str) -> Vec<ParetoTrial> {
        if self.extra.is_empty() {
            return Vec::new();
        }
        let names = self.extra_metrics();
        let done: Vec<&TrialRecord> = records
            .iter()
            .filter(|r| r.state.as_deref() == Some(states::COMPLETED))
            .collect();
        let trials: Vec<Trial> = done
            .iter()
            .filter_map(|r| trial_of(&self.space, r, None, &names))
            .collect();
        let kept: Vec<&TrialRecord> = done
            .iter()
            .filter(|r| trial_of(&self.space, r, None, &names).is_some())
            .copied()
            .collect();
        let mut directions = vec![self.direction];
        directions.extend(self.extra.iter().map(|(_, d)| *d));
        kiln_tuning::pareto::pareto_front(&trials, &directions)
            .into_iter()
            .take(50)
            .map(|i| {
                let r = kept[i];
                let mut values = r.additional_objective_values.clone();
                if let Some(v) = r.objective_value {
                    values.insert(objective.to_string(), v);
                }
                ParetoTrial {
                    name: r.name.clone(),
                    hyperparameters: r.hyperparameters.clone(),
                    objective_values: values,
                }
            })
            .collect()
    }

    /// Whether trials are stopped early by the median rule.
    pub fn stops_early(&self) -> bool {
        self.median.is_some()
    }

    /// The next `n` suggestions after `history`.
    pub fn suggest(&mut self, history: &History, n: usize) -> Vec<Suggestion> {
        if n == 0 {
            return Vec::new();
        }
        self.strategy.suggest(&history.trials, n)
    }

    /// The running trials (by index) the median rule stops now.
    pub fn to_stop_early(&self, history: &History) -> Vec<i32> {
        let Some(rule) = &self.median else {
            return Vec::new();
        };
        history
            .own
            .iter()
            .filter(|(_, at)| rule.should_stop(&history.trials, **at))
            .map(|(index, _)| *index)
            .collect()
    }

    /// A suggestion as the trial's record: tuned hyperparameters formatted,
    /// the resource (Hyperband) beside them.
    pub fn record(
        &self,
        index: i32,
        name: String,
        s: &Suggestion,
        history: &History,
    ) -> TrialRecord {
        TrialRecord {
            index,
            name,
            hyperparameters: self.space.format(&s.config),
            state: Some(states::IN_PROGRESS.into()),
            objective_value: None,
            additional_objective_values: BTreeMap::new(),
            resource: s.resource.map(|r| r as i64),
            start_time: None,
            promoted_from: s.promoted_from.and_then(|at| history.index_at(at)),
        }
    }
}

/// The strategy's history: warm-start parents' trials first, then one trial
/// per index of this search from 1, in order.
pub struct History {
    /// What the strategy reads.
    pub trials: Vec<Trial>,
    /// This search's trial indices and their positions in `trials`.
    own: BTreeMap<i32, usize>,
}

impl History {
    /// The trial index at a history position, if it is one of this search's.
    fn index_at(&self, at: usize) -> Option<i32> {
        self.own.iter().find(|(_, p)| **p == at).map(|(i, _)| *i)
    }
}

/// The trial a record describes, or `None` where its hyperparameters do not
/// fit the space (a parent searched another one).
fn trial_of(
    space: &Space,
    record: &TrialRecord,
    intermediate: Option<&Vec<(u64, f64)>>,
    extra: &[String],
) -> Option<Trial> {
    let config = space.parse(&record.hyperparameters).ok()?;
    let state = match record.state.as_deref() {
        Some(states::COMPLETED) if record.objective_value.is_some() => TrialState::Completed,
        Some(states::EARLY_STOPPED) => TrialState::EarlyStopped,
        Some(states::IN_PROGRESS) | None => TrialState::Pending,
        _ => TrialState::Failed,
    };
    let intermediate = intermediate.cloned().unwrap_or_default();
    let values = match state {
        // A multi-objective trial is observed only with every value.
        TrialState::Completed => record
            .objective_value
            .into_iter()
            .chain(
                extra
                    .iter()
                    .map_while(|m| record.additional_objective_values.get(m).copied()),
            )
            .collect(),
        TrialState::EarlyStopped => intermediate.last().map(|(_, v)| *v).into_iter().collect(),
        _ => Vec::new(),
    };
    Some(Trial {
        config,
        state,
        values,
        intermediate,
        resource: record.resource.map(|r| r.max(0) as u64),
        promoted_from: None,
        origin: Origin::ThisSearch,
    })
}

/// The history of a search: `parents` are the warm-start parents' records
/// with the type of warm start, `records` this search's (at most the newest
/// 100 of `next_index - 1`), `intermediate` the curves read from running
/// and finished trials. Indices whose record was dropped (the status keeps
/// 100) stand in as failed copies of the first configuration, so that every
/// strategy still numbers its random streams by the true trial count.
pub fn history(
    space: &Space,
    extra: &[String],
    parents: &[(WarmStartType, Vec<TrialRecord>)],
    records: &[TrialRecord],
    next_index: i32,
    intermediate: &BTreeMap<i32, Vec<(u64, f64)>>,
) -> History {
    let mut trials = Vec::new();
    for (kind, parent) in parents {
        let origin = Origin::Parent(match kind {
            WarmStartType::IdenticalDataAndAlgorithm => WarmStartKind::IdenticalDataAndAlgorithm,
            WarmStartType::TransferLearning => WarmStartKind::TransferLearning,
        });
        trials.extend(
            parent
                .iter()
                .filter_map(|r| trial_of(space, r, None, extra))
                .filter(|t| t.state == TrialState::Completed)
                .map(|t| t.with_origin(origin)),
        );
    }
    let by_index: BTreeMap<i32, &TrialRecord> = records.iter().map(|r| (r.index, r)).collect();
    let filler = records
        .iter()
        .find_map(|r| space.parse(&r.hyperparameters).ok())
        .unwrap_or_else(|| space.decode(&vec![0.0; space.dims()]));
    let mut own = BTreeMap::new();
    for index in 1..next_index.max(1) {
        let trial = by_index
            .get(&index)
            .and_then(|r| trial_of(space, r, intermediate.get(&index), extra))
            .unwrap_or_else(|| Trial {
                state: TrialState::Failed,
                ..Trial::pending(filler.clone())
            });
        own.insert(index, trials.len());
        trials.push(trial);
    }
    // Promotion links, now that every index has its position.
    for r in records {
        if let (Some(at), Some(from)) = (own.get(&r.index), r.promoted_from) {
            trials[*at].promoted_from = own.get(&from).copied();
        }
    }
    History { trials, own }
}

/// How a search ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// Completed (true) or Failed (false).
    pub succeeded: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
}

fn finish(succeeded: bool, reason: &'static str, message: String) -> Option<Finish> {
    Some(Finish {
        succeeded,
        reason,
        message,
    })
}

/// The best completed record by the objective (the lowest index on ties).
pub fn best(records: &[TrialRecord], direction: Direction) -> Option<&TrialRecord> {
    records
        .iter()
        .filter(|r| r.state.as_deref() == Some(states::COMPLETED))
        .filter(|r| r.objective_value.is_some_and(f64::is_finite))
        .min_by(|a, b| {
            let loss = |r: &TrialRecord| direction.loss(r.objective_value.unwrap_or(f64::NAN));
            loss(a).total_cmp(&loss(b)).then(a.index.cmp(&b.index))
        })
}

/// What the budgets and completion criteria say, given the records after
/// this reconcile's observations: `None` while the search goes on.
/// `exhausted` says the strategy has nothing left to suggest.
pub struct Budget<'a> {
    /// The spec.
    pub spec: &'a TuningJobSpec,
    /// The objective's direction.
    pub direction: Direction,
    /// Trials created so far (next index - 1).
    pub created: i32,
    /// Failed trials, all of them (records and older ones).
    pub failed: i32,
    /// Trials still running.
    pub running: i32,
    /// The best objective so far, over every trial.
    pub best: Option<f64>,
    /// When the search started.
    pub start: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
}

impl Budget<'_> {
    /// Whether the search is over, and how.
    pub fn verdict(&self, records: &[TrialRecord], exhausted: bool) -> Option<Finish> {
        let limits = &self.spec.limits;
        if let Some(max) = limits.max_failed_training_jobs
            && self.failed > max
        {
            return finish(
                false,
                reasons::TOO_MANY_FAILED_TRIALS,
                format!(
                    "{} trials failed, more than limits.maxFailedTrainingJobs ({max}); the \
                     trials' TrainingJobs say why",
                    self.failed
                ),
            );
        }
        if let Some(criteria) = &self.spec.completion_criteria
            && let Some(message) = criteria_met(criteria, self.direction, self.best, records)
        {
            return finish(true, reasons::COMPLETION_CRITERIA_MET, message);
        }
        if let (Some(max), Some(start)) = (limits.max_runtime_seconds, self.start)
            && self.now.as_second() - start.as_second() >= max
        {
            return self.ended(
                reasons::MAX_RUNTIME_REACHED,
                format!("the search ran limits.maxRuntimeSeconds ({max} s)"),
            );
        }
        if self.running > 0 {
            return None;
        }
        if self.created >= limits.max_training_jobs {
            return self.ended(
                reasons::MAX_TRAINING_JOBS_REACHED,
                format!(
                    "all {} trials (limits.maxTrainingJobs) ended",
                    limits.max_training_jobs
                ),
            );
        }
        if exhausted {
            return self.ended(
                reasons::SEARCH_SPACE_EXHAUSTED,
                format!(
                    "the strategy has no untried configuration left after {} trials",
                    self.created
                ),
            );
        }
        None
    }

    /// The end by budget: Completed with the best trial, or Failed when no
    /// trial produced an objective value.
    fn ended(&self, reason: &'static str, message: String) -> Option<Finish> {
        match self.best {
            Some(best) => finish(true, reason, format!("{message}; best objective {best}")),
            None if self.created == 0 => finish(false, reason, message),
            None => finish(
                false,
                reasons::NO_TRIAL_SUCCEEDED,
                format!(
                    "{message}, and none of the {} trials reported the objective ({} failed)",
                    self.created, self.failed
                ),
            ),
        }
    }
}

fn criteria_met(
    criteria: &CompletionCriteria,
    direction: Direction,
    best: Option<f64>,
    records: &[TrialRecord],
) -> Option<String> {
    if let (Some(target), Some(best)) = (&criteria.target_objective_value, best)
        && let Ok(target) = target.trim().parse::<f64>()
    {
        let reached = match direction {
            Direction::Maximize => best >= target,
            Direction::Minimize => best <= target,
        };
        if reached {
            return Some(format!(
                "a trial reached the objective {best}, at or beyond completionCriteria.targetObjectiveValue ({target})"
            ));
        }
    }
    if let Some(limit) = criteria.max_trials_without_improvement {
        // Completed trials in the order they were created: how many came
        // after the best one.
        let mut done: Vec<&TrialRecord> = records
            .iter()
            .filter(|r| r.state.as_deref() == Some(states::COMPLETED))
            .filter(|r| r.objective_value.is_some())
            .collect();
        done.sort_by_key(|r| r.index);
        let best_at = best_index(&done, direction)?;
        let since = (done.len() - 1 - best_at) as i32;
        if since >= limit {
            return Some(format!(
                "{since} completed trials in a row brought no better objective \
                 (completionCriteria.maxTrialsWithoutImprovement: {limit})"
            ));
        }
    }
    None
}

fn best_index(done: &[&TrialRecord], direction: Direction) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, r) in done.iter().enumerate() {
        let loss = direction.loss(r.objective_value?);
        if best.is_none_or(|(_, b)| loss < b) {
            best = Some((i, loss));
        }
    }
    best.map(|(i, _)| i)
}

/// A trial's hyperparameters: the template's, the tuned ones and the
/// resource (which win over the template's, though the API refuses such
/// overlaps).
pub fn trial_hyperparameters(
    template: &BTreeMap<String, String>,
    record: &TrialRecord,
    resource_name: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = template.clone();
    out.extend(record.hyperparameters.clone());
    if let (Some(name), Some(resource)) = (resource_name, record.resource) {
        out.insert(name.to_string(), resource.to_string());
    }
    out
}

#[cfg(test)]
mod tests;
