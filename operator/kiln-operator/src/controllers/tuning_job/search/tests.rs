use super::*;

fn spec(extra: &str) -> TuningJobSpec {
    let text = format!(
        r#"
strategy: {{type: Random, seed: 7}}
objective: {{metricName: "validation:accuracy", type: Maximize}}
parameterRanges:
  continuous:
    - {{name: learning_rate, min: "1e-4", max: "0.5", scaling: Logarithmic}}
  integer:
    - {{name: mini_batch_size, min: 8, max: 64}}
  categorical:
    - {{name: optimizer, values: [sgd, adam]}}
limits: {{maxTrainingJobs: 6, maxParallelTrainingJobs: 2}}
trainingJobTemplate:
  spec:
    algorithm: {{name: linear-learner}}
    output: {{location: {{uri: "s3://b/out/"}}}}
    resources: {{replicas: 1}}
{extra}
"#
    );
    serde_yaml::from_str(&text).unwrap()
}

fn record(index: i32, state: &str, value: Option<f64>) -> TrialRecord {
    TrialRecord {
        index,
        name: format!("t-{index}"),
        hyperparameters: [
            ("learning_rate", "0.01"),
            ("mini_batch_size", "16"),
            ("optimizer", "adam"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        state: Some(state.into()),
        objective_value: value,
        ..TrialRecord::default()
    }
}

fn budget<'a>(spec: &'a TuningJobSpec, created: i32, running: i32, failed: i32) -> Budget<'a> {
    Budget {
        spec,
        direction: Direction::Maximize,
        created,
        failed,
        running,
        best: None,
        start: Some(Timestamp::from_second(1_000).unwrap()),
        now: Timestamp::from_second(1_100).unwrap(),
    }
}

#[test]
fn the_spec_becomes_a_space_in_range_order_and_suggestions_fit_it() {
    let spec = spec("");
    let mut search = Search::new(&spec, seed(&spec, "uid")).unwrap();
    let names: Vec<&str> = search
        .space
        .params()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["mini_batch_size", "learning_rate", "optimizer"]);
    let h = history(&search.space, &[], &[], &[], 1, &BTreeMap::new());
    let s = search.suggest(&h, 3);
    assert_eq!(s.len(), 3);
    for (i, s) in s.iter().enumerate() {
        let r = search.record(i as i32 + 1, format!("t-{}", i + 1), s, &h);
        let lr: f64 = r.hyperparameters["learning_rate"].parse().unwrap();
        let batch: i64 = r.hyperparameters["mini_batch_size"].parse().unwrap();
        assert!((1e-4..=0.5).contains(&lr), "{lr}");
        assert!((8..=64).contains(&batch), "{batch}");
        assert!(["sgd", "adam"].contains(&r.hyperparameters["optimizer"].as_str()));
        assert_eq!(r.state.as_deref(), Some(states::IN_PROGRESS));
        assert!(r.start_time.is_none());
    }
    // Same seed, same history: the same suggestions (a restarted operator).
    let mut again = Search::new(&spec, seed(&spec, "other uid")).unwrap();
    assert_eq!(again.suggest(&h, 3), s);
}

#[test]
fn the_seed_is_the_specs_or_follows_the_uid() {
    let mut spec = spec("");
    assert_eq!(seed(&spec, "a"), 7);
    spec.strategy.seed = None;
    assert_eq!(seed(&spec, "a"), seed(&spec, "a"));
    assert_ne!(seed(&spec, "a"), seed(&spec, "b"));
}

#[test]
fn bad_ranges_are_refused_with_the_range_named() {
    let mut spec = spec("");
    spec.parameter_ranges.continuous[0].min = "abc".into();
    let e = Search::new(&spec, 1).err().unwrap();
    assert!(e.contains("continuous[learning_rate].min"), "{e}");
    let mut spec = self::spec("");
    spec.parameter_ranges.categorical[0].name = "learning_rate".into();
    let e = Search::new(&spec, 1).err().unwrap();
    assert!(e.contains("learning_rate"), "{e}");
}

#[test]
fn history_keeps_one_trial_per_index_and_maps_states() {
    let spec = spec("");
    let search = Search::new(&spec, 1).unwrap();
    // Index 2's record was dropped; 4 runs with a curve.
    let records = vec![
        record(1, states::COMPLETED, Some(0.9)),
        record(3, states::FAILED, None),
        record(4, states::IN_PROGRESS, None),
        record(5, states::EARLY_STOPPED, None),
    ];
    let curves = BTreeMap::from([(4, vec![(1, 0.5), (2, 0.6)]), (5, vec![(1, 0.2)])]);
    let h = history(&search.space, &[], &[], &records, 6, &curves);
    let states: Vec<TrialState> = h.trials.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TrialState::Completed,
            TrialState::Failed,
            TrialState::Failed,
            TrialState::Pending,
            TrialState::EarlyStopped
        ]
    );
    assert_eq!(h.trials[0].values, [0.9]);
    assert_eq!(h.trials[3].intermediate, [(1, 0.5), (2, 0.6)]);
    assert_eq!(
        h.trials[4].values,
        [0.2],
        "an early-stopped trial's last value"
    );
}

#[test]
fn parents_come_first_and_promotions_link_by_index() {
    let spec = spec("");
    let search = Search::new(&spec, 1).unwrap();
    let parents = vec![(
        WarmStartType::IdenticalDataAndAlgorithm,
        vec![
            record(1, states::COMPLETED, Some(0.7)),
            record(2, states::FAILED, None),
        ],
    )];
    let mut promoted = record(2, states::IN_PROGRESS, None);
    promoted.promoted_from = Some(1);
    let records = vec![record(1, states::COMPLETED, Some(0.8)), promoted];
    let h = history(&search.space, &[], &parents, &records, 3, &BTreeMap::new());
    assert_eq!(h.trials.len(), 3, "one completed parent trial, two own");
    assert_eq!(
        h.trials[0].origin,
        Origin::Parent(WarmStartKind::IdenticalDataAndAlgorithm)
    );
    assert_eq!(h.trials[2].promoted_from, Some(1));
    assert_eq!(h.index_at(1), Some(1));
    assert_eq!(h.index_at(0), None);
}

#[test]
fn budgets_end_the_search_in_order() {
    let mut spec = spec("");
    spec.limits.max_failed_training_jobs = Some(1);
    let records = vec![record(1, states::COMPLETED, Some(0.9))];
    // Too many failures wins over everything.
    let v = budget(&spec, 3, 1, 2).verdict(&records, false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (false, reasons::TOO_MANY_FAILED_TRIALS)
    );
    // Running trials keep the search going.
    assert_eq!(budget(&spec, 6, 1, 0).verdict(&records, false), None);
    // All trials ended: completed with the best, or failed with none.
    let mut b = budget(&spec, 6, 0, 0);
    b.best = Some(0.9);
    let v = b.verdict(&records, false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (true, reasons::MAX_TRAINING_JOBS_REACHED)
    );
    assert!(v.message.contains("0.9"), "{}", v.message);
    let v = budget(&spec, 6, 0, 1).verdict(&[], false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (false, reasons::NO_TRIAL_SUCCEEDED)
    );
    // Nothing left to suggest.
    let mut b = budget(&spec, 3, 0, 0);
    b.best = Some(0.9);
    assert_eq!(b.verdict(&records, false), None);
    let v = b.verdict(&records, true).unwrap();
    assert_eq!(v.reason, reasons::SEARCH_SPACE_EXHAUSTED);
    // The clock.
    spec.limits.max_runtime_seconds = Some(100);
    let mut b = budget(&spec, 3, 2, 0);
    b.best = Some(0.9);
    let v = b.verdict(&records, false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (true, reasons::MAX_RUNTIME_REACHED)
    );
    // Out of time without any objective: failed, saying both.
    let v = budget(&spec, 3, 2, 0).verdict(&[], false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (false, reasons::NO_TRIAL_SUCCEEDED)
    );
    assert!(v.message.contains("maxRuntimeSeconds"), "{}", v.message);
}

#[test]
fn completion_criteria_target_and_no_improvement() {
    let spec = spec(
        r#"completionCriteria: {targetObjectiveValue: "0.95", maxTrialsWithoutImprovement: 2}"#,
    );
    let mut b = budget(&spec, 3, 1, 0);
    b.best = Some(0.96);
    let v = b.verdict(&[], false).unwrap();
    assert_eq!(
        (v.succeeded, v.reason),
        (true, reasons::COMPLETION_CRITERIA_MET)
    );
    b.best = Some(0.9);
    let mut records = vec![
        record(1, states::COMPLETED, Some(0.8)),
        record(2, states::COMPLETED, Some(0.9)),
        record(3, states::COMPLETED, Some(0.85)),
    ];
    assert_eq!(b.verdict(&records, false), None, "one trial since the best");
    records.push(record(4, states::COMPLETED, Some(0.7)));
    let v = b.verdict(&records, false).unwrap();
    assert!(v.message.contains("2 completed trials"), "{}", v.message);
}

#[test]
fn the_best_record_follows_the_direction() {
    let records = vec![
        record(1, states::COMPLETED, Some(0.5)),
        record(2, states::COMPLETED, Some(0.9)),
        record(3, states::EARLY_STOPPED, Some(0.99)),
        record(4, states::COMPLETED, Some(0.9)),
    ];
    assert_eq!(best(&records, Direction::Maximize).unwrap().index, 2);
    assert_eq!(best(&records, Direction::Minimize).unwrap().index, 1);
    assert!(best(&[], Direction::Minimize).is_none());
}

#[test]
fn trial_hyperparameters_merge_the_template_the_tuned_and_the_resource() {
    let template = BTreeMap::from([("epochs".to_string(), "10".to_string())]);
    let mut r = record(1, states::IN_PROGRESS, None);
    r.resource = Some(3);
    let hps = trial_hyperparameters(&template, &r, Some("epochs"));
    assert_eq!(hps["epochs"], "3");
    assert_eq!(hps["optimizer"], "adam");
    assert_eq!(trial_hyperparameters(&template, &r, None)["epochs"], "10");
}

#[test]
fn median_stopping_stops_a_trial_below_the_completed_median() {
    let spec = spec("earlyStopping: {type: Median, minTrials: 2}");
    let search = Search::new(&spec, 1).unwrap();
    assert!(search.stops_early());
    let records = vec![
        record(1, states::COMPLETED, Some(0.9)),
        record(2, states::COMPLETED, Some(0.92)),
        record(3, states::IN_PROGRESS, None),
        record(4, states::IN_PROGRESS, None),
    ];
    let curves = BTreeMap::from([
        (1, vec![(1, 0.8), (2, 0.9)]),
        (2, vec![(1, 0.85), (2, 0.92)]),
        (3, vec![(1, 0.3), (2, 0.35)]),
        (4, vec![(1, 0.9), (2, 0.95)]),
    ]);
    let h = history(&search.space, &[], &[], &records, 5, &curves);
    assert_eq!(search.to_stop_early(&h), [3]);
    let without = Search::new(&self::spec(""), 1).unwrap();
    assert!(without.to_stop_early(&h).is_empty());
}

#[test]
fn hyperband_gives_resources_within_its_bounds() {
    let mut spec = spec("");
    spec.strategy.type_ = StrategyType::Hyperband;
    spec.strategy.hyperband = Some(kiln_api::tuning_job::Hyperband {
        resource_name: "epochs".into(),
        min_resource: 1,
        max_resource: 9,
        reduction_factor: 3,
    });
    let mut search = Search::new(&spec, 3).unwrap();
    let h = history(&search.space, &[], &[], &[], 1, &BTreeMap::new());
    let s = search.suggest(&h, 4);
    assert_eq!(s.len(), 4);
    assert!(
        s.iter()
            .all(|s| s.resource.is_some_and(|r| (1..=9).contains(&r))),
        "{s:?}"
    );
}

#[test]
fn two_objectives_search_by_parego_and_report_the_pareto_front() {
    let mut spec =
        spec(r#"additionalObjectives: [{metricName: "train:fit_seconds", type: Minimize}]"#);
    spec.strategy.type_ = StrategyType::Bayesian;
    let mut search = Search::new(&spec, 5).unwrap();
    assert_eq!(search.extra_metrics(), ["train:fit_seconds"]);
    let with = |index: i32, acc: f64, secs: Option<f64>| {
        let mut r = record(index, states::COMPLETED, Some(acc));
        if let Some(s) = secs {
            r.additional_objective_values
                .insert("train:fit_seconds".into(), s);
        }
        r
    };
    // Accuracy up, time down: 1 and 3 trade off, 2 is beaten by 3 on both,
    // 4 lacks the second value and is left out.
    let records = vec![
        with(1, 0.95, Some(9.0)),
        with(2, 0.80, Some(5.0)),
        with(3, 0.90, Some(2.0)),
        with(4, 0.99, None),
    ];
    let front: Vec<String> = search
        .pareto(&records, "validation:accuracy")
        .into_iter()
        .map(|p| {
            assert_eq!(p.objective_values.len(), 2);
            p.name
        })
        .collect();
    assert_eq!(front, ["t-1", "t-3"]);
    let h = history(
        &search.space,
        &search.extra_metrics(),
        &[],
        &records,
        5,
        &BTreeMap::new(),
    );
    assert_eq!(h.trials[0].values, [0.95, 9.0]);
    assert_eq!(
        h.trials[3].values,
        [0.99],
        "incomplete: not an observation of both"
    );
    assert_eq!(search.suggest(&h, 2).len(), 2);
    // Single-objective strategies cannot search two objectives.
    spec.strategy.type_ = StrategyType::Tpe;
    assert!(
        Search::new(&spec, 5)
            .err()
            .unwrap()
            .contains("Bayesian or Random")
    );
    assert!(
        Search::new(&self::spec(""), 5)
            .unwrap()
            .pareto(&records, "x")
            .is_empty()
    );
}
