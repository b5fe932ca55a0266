use super::*;
use k8s_openapi::jiff::Timestamp;
use kiln_api::model_package::{ArtifactCheck, ModelPackage};
use kiln_api::training_job::{TrainingJobSpec, TrainingJobStatus};
use serde_json::json;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

fn spec() -> ModelPackageSpec {
    let path = format!(
        "{}/../api/examples/modelpackage.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let p: ModelPackage = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    p.spec
}

const URI: &str = "s3://models/iris/ml/iris-linear/output/model.tar.gz";
const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn approval_changes_are_recorded_with_who_why_and_when() {
    let mut status = ModelPackageStatus::default();
    let pending = Approval::default();
    let first = record_approval(&mut status, &pending, &at(0)).unwrap();
    assert_eq!(first.from, None);
    assert_eq!(status.last_approval_change_time, Some(at(0)));
    assert_eq!(record_approval(&mut status, &pending, &at(5)), None);

    let approved = Approval {
        status: ApprovalStatus::Approved,
        description: Some("beats v2".into()),
        approved_by: Some("alice@example.com".into()),
    };
    let change = record_approval(&mut status, &approved, &at(10)).unwrap();
    assert_eq!(
        change,
        ApprovalChange {
            from: Some(ApprovalStatus::PendingManualApproval),
            to: ApprovalStatus::Approved
        }
    );
    assert_eq!(
        approval_note(&change, &approved),
        "PendingManualApproval -> Approved by alice@example.com: beats v2"
    );
    assert_eq!(status.approval_status, Some(ApprovalStatus::Approved));
    assert_eq!(status.approved_by.as_deref(), Some("alice@example.com"));
    assert_eq!(status.approval_description.as_deref(), Some("beats v2"));
    assert_eq!(status.last_approval_change_time, Some(at(10)));

    // A new description alone is copied; the decision's time stays.
    let reworded = Approval {
        description: Some("beats v2 by 1.3 points".into()),
        ..approved
    };
    assert_eq!(record_approval(&mut status, &reworded, &at(20)), None);
    assert_eq!(
        status.approval_description.as_deref(),
        Some("beats v2 by 1.3 points")
    );
    assert_eq!(status.last_approval_change_time, Some(at(10)));
}

fn job(state: Option<TrainingJobState>) -> TrainingJob {
    let spec: TrainingJobSpec = serde_json::from_value(json!({
        "algorithm": {"name": "linear-learner"},
        "hyperparameters": {"epochs": "20", "num_classes": "3"},
        "inputs": [
            {"name": "train", "source": {"uri": "s3://b/iris/train/"}},
            {"name": "validation", "source": {"uri": "s3://b/iris/validation/"}},
        ],
        "output": {"location": {"uri": "s3://b/out"}},
    }))
    .unwrap();
    let mut job = TrainingJob::new("iris", spec);
    job.metadata.uid = Some("u-1".into());
    job.status = Some(TrainingJobStatus {
        state,
        model_artifact_uri: Some(URI.into()),
        final_metrics: vec![kiln_api::common::MetricValue {
            name: "validation:accuracy".into(),
            value: 0.96,
        }],
        end_time: Some(at(100)),
        failure_reason: Some("channel train: bad row".into()),
        ..TrainingJobStatus::default()
    });
    job
}

#[test]
fn lineage_is_copied_once_from_a_completed_job() {
    assert_eq!(lineage(None, None, None), Lineage::None);
    assert_eq!(
        lineage(Some("iris"), None, None),
        Lineage::Missing("iris".into())
    );
    for state in [
        None,
        Some(TrainingJobState::InProgress),
        Some(TrainingJobState::Stopping),
    ] {
        let running = lineage(Some("iris"), None, Some(&job(state)));
        assert_eq!(running, Lineage::Running("iris".into()));
        assert_eq!(running.waiting(), Some("iris"));
    }
    match lineage(
        Some("iris"),
        None,
        Some(&job(Some(TrainingJobState::Failed))),
    ) {
        Lineage::Ended(name, why) => {
            assert_eq!(name, "iris");
            assert!(
                why.contains("ended Failed (channel train: bad row)"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    let Lineage::Copied(copied) = lineage(
        Some("iris"),
        None,
        Some(&job(Some(TrainingJobState::Completed))),
    ) else {
        panic!("not copied");
    };
    assert_eq!(copied.training_job, "iris");
    assert_eq!(copied.uid.as_deref(), Some("u-1"));
    assert_eq!(copied.hyperparameters["epochs"], "20");
    assert_eq!(
        copied.inputs,
        [
            LineageChannel {
                name: "train".into(),
                uri: "s3://b/iris/train/".into()
            },
            LineageChannel {
                name: "validation".into(),
                uri: "s3://b/iris/validation/".into()
            },
        ]
    );
    assert_eq!(copied.final_metrics[0].name, "validation:accuracy");
    assert_eq!(copied.model_artifact_uri.as_deref(), Some(URI));
    assert_eq!(copied.end_time, Some(at(100)));
    // Recorded once: a later job of the same name changes nothing.
    assert_eq!(
        lineage(Some("iris"), Some(&copied), Some(&job(None))),
        Lineage::Recorded("iris".into())
    );
}

fn checked(result: Option<ArtifactCheckResult>, message: &str) -> ArtifactCheck {
    ArtifactCheck {
        number: 1,
        generation: Some(1),
        start_time: at(0),
        completion_time: result.map(|_| at(5)),
        result,
        digest: None,
        message: Some(message.into()),
        consecutive_failures: 0,
    }
}

fn facts(group_exists: bool, artifact: Artifact) -> Facts {
    Facts {
        group_exists,
        lineage: Lineage::None,
        artifact,
    }
}

fn condition(status: &ModelPackageStatus, type_: &str) -> (String, String, String) {
    let c = conditions::find(&status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn ready(status: &ModelPackageStatus) -> (String, String) {
    let (s, r, _) = condition(status, types::READY);
    (s, r)
}

#[test]
fn a_package_is_ready_once_numbered_checked_and_in_its_group() {
    let spec = spec();
    let checks = || facts(true, Artifact::Checks(None));
    let mut status = ModelPackageStatus {
        last_artifact_check: Some(checked(None, "")),
        ..ModelPackageStatus::default()
    };
    summarize(
        &mut status,
        &spec,
        &facts(true, Artifact::Checks(Some("ContainerCreating".into()))),
        Some(1),
        &at(1),
    );
    assert_eq!(
        condition(&status, types::ARTIFACT_VERIFIED),
        (
            "Unknown".into(),
            reasons::VERIFYING.into(),
            "checking the artifact (its pod: ContainerCreating)".into()
        )
    );
    assert_eq!(ready(&status), ("False".into(), reasons::VERIFYING.into()));
    assert_eq!(status.state, Some(ModelPackageState::Pending));

    status.last_artifact_check = Some(checked(
        Some(ArtifactCheckResult::Verified),
        &format!("{URI} has {DIGEST}"),
    ));
    status.artifact_digest = Some(DIGEST.into());
    summarize(&mut status, &spec, &checks(), Some(1), &at(6));
    assert_eq!(condition(&status, types::ARTIFACT_VERIFIED).0, "True");
    assert_eq!(
        ready(&status),
        ("False".into(), reasons::AWAITING_VERSION.into())
    );
    assert_eq!(status.registration_time, None);

    status.version = Some(3);
    summarize(&mut status, &spec, &checks(), Some(1), &at(7));
    let (s, reason, message) = condition(&status, types::READY);
    assert_eq!((s.as_str(), reason.as_str()), ("True", reasons::REGISTERED));
    assert_eq!(
        message,
        format!("version 3 of ModelPackageGroup iris-classifier, artifact {DIGEST}")
    );
    assert_eq!(status.state, Some(ModelPackageState::Completed));
    assert_eq!(status.registration_time, Some(at(7)));
    assert_eq!(condition(&status, types::REFERENCES_RESOLVED).0, "True");

    // A re-check under way, or one that could not run, leaves it Ready.
    status.last_artifact_check = Some(checked(None, ""));
    summarize(&mut status, &spec, &checks(), Some(2), &at(100));
    assert_eq!(ready(&status).0, "True");
    status.last_artifact_check = Some(checked(Some(ArtifactCheckResult::Failed), "HTTP 503"));
    summarize(&mut status, &spec, &checks(), Some(2), &at(101));
    assert_eq!(ready(&status).0, "True");
    assert_eq!(status.registration_time, Some(at(7)), "registered once");

    // Other bytes at the URI: not Ready, both digests said.
    let changed = format!(
        "the artifact at {URI} changed after it was registered: registered {DIGEST}, now sha256:00"
    );
    status.last_artifact_check = Some(checked(Some(ArtifactCheckResult::Changed), &changed));
    summarize(&mut status, &spec, &checks(), Some(2), &at(200));
    assert_eq!(
        condition(&status, types::READY),
        (
            "False".into(),
            reasons::ARTIFACT_CHANGED.into(),
            changed.clone()
        )
    );
    assert_eq!(
        condition(&status, types::ARTIFACT_VERIFIED).1,
        reasons::ARTIFACT_CHANGED
    );
    assert_eq!(status.state, Some(ModelPackageState::Failed));
    // ... and a check that cannot run does not make it look better.
    status.last_artifact_check = Some(checked(Some(ArtifactCheckResult::Failed), "HTTP 503"));
    summarize(&mut status, &spec, &checks(), Some(2), &at(300));
    assert_eq!(
        ready(&status),
        ("False".into(), reasons::ARTIFACT_CHANGED.into())
    );
    // Put back: Ready again.
    status.last_artifact_check = Some(checked(Some(ArtifactCheckResult::Verified), "ok"));
    summarize(&mut status, &spec, &checks(), Some(2), &at(400));
    assert_eq!(ready(&status), ("True".into(), reasons::REGISTERED.into()));
}

#[test]
fn what_keeps_a_package_from_being_ready_is_named() {
    let spec = spec();
    let run = |facts: Facts, check: Option<ArtifactCheck>| {
        let mut status = ModelPackageStatus {
            version: Some(2),
            last_artifact_check: check,
            ..ModelPackageStatus::default()
        };
        summarize(&mut status, &spec, &facts, Some(1), &at(0));
        status
    };
    let missing = run(
        facts(false, Artifact::Checks(None)),
        Some(checked(Some(ArtifactCheckResult::Verified), "ok")),
    );
    let (s, reason, message) = condition(&missing, types::READY);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", reasons::GROUP_NOT_FOUND)
    );
    assert!(
        message.contains("ModelPackageGroup iris-classifier does not exist"),
        "{message}"
    );
    assert_eq!(
        condition(&missing, types::REFERENCES_RESOLVED).1,
        reasons::GROUP_NOT_FOUND
    );
    assert_eq!(missing.state, Some(ModelPackageState::Pending));

    let gone = run(
        facts(true, Artifact::Checks(None)),
        Some(checked(
            Some(ArtifactCheckResult::NotFound),
            &format!("{URI}: nothing there"),
        )),
    );
    assert_eq!(
        condition(&gone, types::READY),
        (
            "False".into(),
            reasons::ARTIFACT_NOT_FOUND.into(),
            format!("{URI}: nothing there")
        )
    );
    assert_eq!(gone.state, Some(ModelPackageState::Failed));

    let invalid = run(
        facts(true, Artifact::Checks(None)),
        Some(checked(Some(ArtifactCheckResult::Invalid), "no model.json")),
    );
    assert_eq!(
        ready(&invalid),
        ("False".into(), reasons::INVALID_ARTIFACT.into())
    );

    let cannot = run(
        facts(true, Artifact::Checks(None)),
        Some(checked(Some(ArtifactCheckResult::Failed), "access denied")),
    );
    let (s, reason, message) = condition(&cannot, types::READY);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", reasons::ARTIFACT_CHECK_FAILED)
    );
    assert!(message.starts_with("access denied"), "{message}");
    assert_eq!(cannot.state, Some(ModelPackageState::Pending));

    let waiting = run(
        Facts {
            group_exists: true,
            lineage: Lineage::Running("iris".into()),
            artifact: Artifact::WaitingForJob("iris".into()),
        },
        None,
    );
    assert_eq!(
        ready(&waiting),
        ("False".into(), reasons::WAITING_FOR_TRAINING_JOB.into())
    );
    assert_eq!(
        condition(&waiting, types::REFERENCES_RESOLVED).1,
        reasons::WAITING_FOR_TRAINING_JOB
    );

    // A path inside the serving pods: registered, not checked.
    let local = run(
        facts(
            true,
            Artifact::Unreadable("a path inside the serving pods".into()),
        ),
        None,
    );
    assert_eq!(condition(&local, types::ARTIFACT_VERIFIED).0, "Unknown");
    let (s, _, message) = condition(&local, types::READY);
    assert_eq!(s, "True");
    assert!(message.ends_with("artifact not checked"), "{message}");

    let no_job = run(
        Facts {
            group_exists: true,
            lineage: Lineage::Missing("iris".into()),
            artifact: Artifact::Checks(None),
        },
        Some(checked(Some(ArtifactCheckResult::Verified), "ok")),
    );
    let (s, reason, message) = condition(&no_job, types::REFERENCES_RESOLVED);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", reasons::REFERENCE_NOT_FOUND)
    );
    assert!(message.contains("TrainingJob iris not found"), "{message}");
    assert_eq!(
        ready(&no_job).0,
        "True",
        "lineage is not what makes a version usable"
    );
}

#[test]
fn lineage_that_wrote_another_artifact_is_pointed_out() {
    let spec = spec();
    let mut copied = lineage_of(&job(Some(TrainingJobState::Completed)));
    copied.model_artifact_uri = Some("s3://b/out/other/model.tar.gz".into());
    let mut status = ModelPackageStatus {
        lineage: Some(copied.clone()),
        ..ModelPackageStatus::default()
    };
    let facts = Facts {
        group_exists: true,
        lineage: Lineage::Copied(copied),
        artifact: Artifact::Checks(None),
    };
    summarize(&mut status, &spec, &facts, Some(1), &at(0));
    let (s, reason, message) = condition(&status, types::REFERENCES_RESOLVED);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("True", reasons::LINEAGE_RECORDED)
    );
    assert!(
        message.contains(&format!(
            "it wrote s3://b/out/other/model.tar.gz, while this package registers {URI}"
        )),
        "{message}"
    );
}
