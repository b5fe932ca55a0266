use super::*;

fn tuning_job() -> TuningJob {
    serde_yaml::from_str(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: TuningJob
metadata: {name: tune, namespace: ns, uid: u-1}
spec:
  strategy: {type: Random}
  objective: {metricName: "validation:accuracy", type: Maximize}
  parameterRanges:
    continuous: [{name: learning_rate, min: "0.001", max: "0.1"}]
  trainingJobTemplate:
    metadata: {labels: {team: a}}
    spec:
      algorithm: {name: linear-learner}
      hyperparameters: {epochs: "5"}
      output: {location: {uri: "s3://b/out/"}}
      checkpoint: {location: {uri: "s3://b/ckpt"}}
      resources: {replicas: 1}
"#,
    )
    .unwrap()
}

fn job(name: &str, index: i32, state: Option<&str>, metrics: &[(&str, f64)]) -> TrainingJob {
    let metrics: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {TUNING_JOB_LABEL: "tune", TRIAL_INDEX_LABEL: index.to_string()}},
        "spec": {"algorithm": {"name": "linear-learner"}, "output": {"location": {"uri": "s3://b/"}},
                 "resources": {"replicas": 1}},
        "status": {"state": state, "finalMetrics": metrics, "failureReason": "bad data"},
    }))
    .unwrap()
}

fn record(index: i32, state: &str) -> TrialRecord {
    TrialRecord {
        index,
        name: format!("tune-{index}"),
        state: Some(state.into()),
        ..TrialRecord::default()
    }
}

#[test]
fn a_trial_is_the_template_with_its_hyperparameters_labels_owner_and_checkpoint_prefix() {
    let tj = tuning_job();
    let mut r = record(3, states::IN_PROGRESS);
    r.hyperparameters = BTreeMap::from([("learning_rate".into(), "0.01".into())]);
    let job = trial_job(&tj, &r, None);
    assert_eq!(job.name_any(), "tune-3");
    assert_eq!(job.spec.hyperparameters["learning_rate"], "0.01");
    assert_eq!(job.spec.hyperparameters["epochs"], "5");
    assert_eq!(
        job.spec.checkpoint.unwrap().location.uri,
        "s3://b/ckpt/tune-3/"
    );
    let labels = job.metadata.labels.unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels[TUNING_JOB_LABEL], "tune");
    assert_eq!(labels[TRIAL_INDEX_LABEL], "3");
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("TuningJob", "u-1")
    );
    assert_eq!(owner.controller, Some(true));
}

#[test]
fn observing_copies_the_objective_or_says_it_is_missing() {
    let mut notes = Vec::new();
    let mut r = record(1, states::IN_PROGRESS);
    let done = job(
        "tune-1",
        1,
        Some("Completed"),
        &[("validation:accuracy", 0.93), ("train:loss", 0.2)],
    );
    observe(&mut r, Some(&done), "validation:accuracy", &[], &mut notes);
    assert_eq!(r.state.as_deref(), Some(states::COMPLETED));
    assert_eq!(r.objective_value, Some(0.93));
    assert!(r.start_time.is_some());

    let mut r = record(2, states::IN_PROGRESS);
    let done = job("tune-2", 2, Some("Completed"), &[("train:loss", 0.2)]);
    observe(&mut r, Some(&done), "validation:accuracy", &[], &mut notes);
    assert_eq!(r.state.as_deref(), Some(states::FAILED));
    assert!(
        matches!(&notes[0], Note::MissingObjective(t, missing, m) if t == "tune-2" && missing == "validation:accuracy" && m == &["train:loss"])
    );

    let mut r = record(3, states::IN_PROGRESS);
    observe(
        &mut r,
        Some(&job("tune-3", 3, Some("Failed"), &[])),
        "x",
        &[],
        &mut notes,
    );
    assert_eq!(r.state.as_deref(), Some(states::FAILED));
    assert!(matches!(&notes[1], Note::Event(_, "TrialFailed", m) if m.contains("bad data")));

    // Recorded but never created: nothing happens (the trial gets created).
    let mut r = record(4, states::IN_PROGRESS);
    observe(&mut r, None, "x", &[], &mut notes);
    assert_eq!(r.state.as_deref(), Some(states::IN_PROGRESS));
    // Created once and gone: stopped.
    r.start_time = Some(Time(Timestamp::now()));
    observe(&mut r, None, "x", &[], &mut notes);
    assert_eq!(r.state.as_deref(), Some(states::STOPPED));
}

#[test]
fn counts_cover_records_and_the_trials_whose_record_was_dropped() {
    let records = vec![
        record(2, states::COMPLETED),
        record(3, states::IN_PROGRESS),
        record(4, states::EARLY_STOPPED),
    ];
    let trials: BTreeMap<String, TrainingJob> = [
        job("tune-1", 1, Some("Failed"), &[]),
        job("tune-2", 2, Some("Completed"), &[]),
    ]
    .into_iter()
    .map(|j| (j.name_any(), j))
    .collect();
    let c = counts(&records, &trials, 5);
    assert_eq!(
        (
            c.completed,
            c.in_progress,
            c.early_stopped,
            c.non_retryable_error
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn the_end_stops_every_running_trial_and_stops_are_made_again_until_they_hold() {
    let mut status = TuningJobStatus {
        state: Some(TuningJobState::Completed),
        trials: vec![
            record(1, states::COMPLETED),
            record(2, states::IN_PROGRESS),
            record(3, states::EARLY_STOPPED),
        ],
        ..TuningJobStatus::default()
    };
    let mut suspended = job("tune-3", 3, Some("Stopped"), &[]);
    suspended.spec.suspend = true;
    let trials: BTreeMap<String, TrainingJob> = [
        job("tune-1", 1, Some("Completed"), &[]),
        job("tune-2", 2, Some("InProgress"), &[]),
        suspended,
    ]
    .into_iter()
    .map(|j| (j.name_any(), j))
    .collect();
    assert_eq!(to_stop(&mut status, &trials), ["tune-2"]);
    assert_eq!(status.trials[1].state.as_deref(), Some(states::STOPPED));
}

#[test]
fn curves_are_read_from_metric_lines() {
    let log = r#"starting
{"kiln_metric":"validation:accuracy","value":0.5,"step":10,"epoch":1,"rank":0}
{"kiln_metric":"train:loss","value":0.9,"step":10,"epoch":1,"rank":0}
{"kiln_metric":"validation:accuracy","value":"NaN","step":15,"epoch":2,"rank":0}
{"kiln_metric":"validation:accuracy","value":0.7,"step":20,"epoch":3,"rank":0}
{"kiln_metric":"validation:accuracy","value":0.8,"step":30}
"#;
    assert_eq!(
        parse_curve(log, "validation:accuracy"),
        [(1, 0.5), (3, 0.7)],
        "by epoch; the end-of-run value without one is left out"
    );
    assert!(parse_curve(log, "nope").is_empty());
    let steps = r#"{"kiln_metric":"train:msd","value":2.0,"step":5,"epoch":null}
{"kiln_metric":"train:msd","value":1.0,"step":9,"epoch":null}"#;
    assert_eq!(parse_curve(steps, "train:msd"), [(5, 2.0), (9, 1.0)]);
}

#[test]
fn only_the_newest_records_are_kept_finished_ones_dropped_first() {
    let mut records: Vec<TrialRecord> = (1..=MAX_RECORDS as i32 + 2)
        .map(|i| record(i, states::COMPLETED))
        .collect();
    records[0].state = Some(states::IN_PROGRESS.into());
    trim(&mut records);
    assert_eq!(records.len(), MAX_RECORDS);
    assert_eq!(records[0].index, 1, "a running trial stays");
    assert_eq!(records[1].index, 4);
}
