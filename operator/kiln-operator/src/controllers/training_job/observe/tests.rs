use super::*;
use serde_json::json;

fn pod(rank: i32, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("job-a1-{rank}"), "labels": {RANK_LABEL: rank.to_string()}},
        "status": status,
    }))
    .unwrap()
}

fn init(name: &str, state: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

fn training() -> serde_json::Value {
    json!({"phase": "Pending", "initContainerStatuses": [
        init("fetch-0", json!({"terminated": {"exitCode": 0}})),
        init(TRAIN_CONTAINER, json!({"running": {}})),
    ]})
}

fn succeeded(report: Option<&str>) -> serde_json::Value {
    let mut push = init(PUSH_CONTAINER, json!({"terminated": {"exitCode": 0}}));
    if let Some(r) = report {
        push["state"]["terminated"]["message"] = r.into();
    }
    json!({"phase": "Succeeded", "containerStatuses": [push]})
}

#[test]
fn missing_pods_before_creation_are_pending_and_after_it_an_interruption() {
    let pods = [pod(0, training())];
    match observe(&pods, 2, false, true) {
        Outcome::Progress {
            phase,
            counts,
            all_training,
        } => {
            assert_eq!(phase, SecondaryStatus::Starting);
            assert_eq!((counts.running, counts.pending), (1, 1));
            assert!(!all_training);
        }
        other => panic!("{other:?}"),
    }
    match observe(&pods, 2, true, true) {
        Outcome::Interrupted { message } => assert!(message.contains("ranks [1]"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_job_is_in_the_step_of_its_slowest_rank() {
    let downloading = json!({"phase": "Pending", "initContainerStatuses": [
        init("fetch-0", json!({"running": {}})),
        init(TRAIN_CONTAINER, json!({"waiting": {"reason": "PodInitializing"}})),
    ]});
    let pods = [pod(0, training()), pod(1, downloading)];
    match observe(&pods, 2, true, true) {
        Outcome::Progress {
            phase,
            all_training,
            ..
        } => {
            assert_eq!(phase, SecondaryStatus::Downloading);
            assert!(!all_training);
        }
        other => panic!("{other:?}"),
    }
    let pods = [pod(0, training()), pod(1, training())];
    match observe(&pods, 2, true, true) {
        Outcome::Progress {
            phase,
            all_training,
            counts,
        } => {
            assert_eq!(phase, SecondaryStatus::Training);
            assert!(all_training);
            assert_eq!(counts.running, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_rank_done_is_success_with_rank_zeros_artifact() {
    let report = r#"{"modelArtifactUri": "s3://m/ml/j/output/model.tar.gz", "bytes": 10, "sha256": "ab12", "finalMetrics": {"validation:accuracy": 0.97}}"#;
    let pods = [pod(1, succeeded(None)), pod(0, succeeded(Some(report)))];
    assert_eq!(
        observe(&pods, 2, true, true),
        Outcome::Succeeded {
            model_artifact_uri: Some("s3://m/ml/j/output/model.tar.gz".into()),
            sha256: Some("ab12".into()),
            final_metrics: vec![kiln_api::common::MetricValue {
                name: "validation:accuracy".into(),
                value: 0.97,
            }],
        }
    );
    // One rank still uploading: not done yet.
    let pods = [
        pod(0, succeeded(Some(report))),
        pod(1, json!({"phase": "Running"})),
    ];
    assert!(matches!(
        observe(&pods, 2, true, true),
        Outcome::Progress {
            phase: SecondaryStatus::Uploading,
            ..
        }
    ));
}

#[test]
fn a_failed_rank_reports_its_failure_file_and_bad_input_is_not_retried() {
    let failed = |code: i32| {
        json!({"phase": "Failed", "initContainerStatuses": [
            init("fetch-0", json!({"terminated": {"exitCode": 0}})),
            init(TRAIN_CONTAINER, json!({"terminated": {"exitCode": code, "reason": "Error",
                "message": "channel train: line 3: expected 5 columns, found 4\n"}})),
        ]})
    };
    let pods = [pod(0, training()), pod(1, failed(2))];
    match observe(&pods, 2, true, true) {
        Outcome::Failed { message, retryable } => {
            assert_eq!(
                message,
                "rank 1: training exited 2: channel train: line 3: expected 5 columns, found 4"
            );
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    // Your own image's exit code 2 carries no such meaning: retried.
    assert!(matches!(
        observe(&pods, 2, true, false),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    let pods = [pod(0, training()), pod(1, failed(1))];
    assert!(matches!(
        observe(&pods, 2, true, true),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    let fetch_failed = json!({"phase": "Failed", "initContainerStatuses": [
        init("fetch-0", json!({"terminated": {"exitCode": 1, "message": "s3://datasets/x/: no objects"}})),
    ]});
    match observe(&[pod(0, fetch_failed)], 1, true, true) {
        Outcome::Failed { message, .. } => assert_eq!(
            message,
            "rank 0: fetching input (fetch-0) exited 1: s3://datasets/x/: no objects"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lost_nodes_and_disruptions_are_interruptions_not_failures() {
    let evicted = json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."});
    assert!(matches!(
        observe(&[pod(0, training()), pod(1, evicted)], 2, true, true),
        Outcome::Interrupted { .. }
    ));
    let mut disrupted = training();
    disrupted["conditions"] = json!([{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"}]);
    match observe(&[pod(0, disrupted), pod(1, training())], 2, true, true) {
        Outcome::Interrupted { message } => {
            assert!(message.contains("DeletionByTaintManager"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let mut deleting = pod(1, training());
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    assert!(matches!(
        observe(&[pod(0, training()), deleting], 2, true, true),
        Outcome::Interrupted { .. }
    ));
}
