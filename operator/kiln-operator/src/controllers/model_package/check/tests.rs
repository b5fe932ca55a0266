use super::*;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

/// The example package, edited, with the namespace and UID the API server gives.
fn package(edit: impl FnOnce(&mut serde_json::Value)) -> ModelPackage {
    let path = format!(
        "{}/../api/examples/modelpackage.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["metadata"]["uid"] = "0b7a7e8e-1f5c-4a59-9d3c-3f8a0e1d2c4b".into();
    edit(&mut v);
    serde_json::from_value(v).unwrap()
}

#[test]
fn object_stores_are_read_with_credentials_claims_mounted_and_pod_paths_not_at_all() {
    assert_eq!(
        access("s3://models/iris/model.tar.gz"),
        Access::Store("s3://models/iris/model.tar.gz".into())
    );
    assert_eq!(
        access("pvc://models/iris/v3/model.tar.gz"),
        Access::Claim {
            claim: "models".into(),
            path: "file:///mnt/artifact/iris/v3/model.tar.gz".into()
        }
    );
    assert_eq!(
        access("pvc://models"),
        Access::Claim {
            claim: "models".into(),
            path: "file:///mnt/artifact".into()
        }
    );
    match access("file:///opt/ml/model") {
        Access::Unreadable(why) => assert!(why.contains("inside the serving pods"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pod_names_are_per_check_and_fit_any_package_name() {
    assert_eq!(pod_name("iris-v3", 2), "iris-v3-check-2");
    let long_a = format!("{}a", "m".repeat(252));
    let long_b = format!("{}b", "m".repeat(252));
    let (a, b) = (pod_name(&long_a, 7), pod_name(&long_b, 7));
    assert!(a.len() <= 253, "{}", a.len());
    assert_ne!(a, b);
    assert_eq!(
        a,
        pod_name(&long_a, 7),
        "the same package gets the same name"
    );
    assert!(a.ends_with("-check-7"));
    assert_eq!(
        label_value(&format!("{}.x", "a".repeat(62))),
        "a".repeat(62)
    );
}

#[test]
fn the_check_pod_runs_inspect_locked_down_with_the_package_credentials() {
    let p = package(|_| {});
    let pod = check_pod(&p, 3, "kiln/runtime:dev").unwrap();
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some("iris-classifier-v3-check-3")
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("ml"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[CHECK_LABEL], "3");
    assert_eq!(labels[PACKAGE_LABEL], "iris-classifier-v3");
    assert_eq!(
        labels[PACKAGE_UID_LABEL],
        "0b7a7e8e-1f5c-4a59-9d3c-3f8a0e1d2c4b"
    );
    let owner = &pod.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ModelPackage", Some(true))
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let security = spec.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("kiln/runtime:dev"));
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "inspect",
            "--uri",
            "s3://models/iris/ml/iris-linear/output/model.tar.gz",
            "--format",
            "kiln"
        ]
    );
    let from = c.env_from.clone().unwrap();
    assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "s3-credentials");
    assert!(c.env.is_none(), "no secret value is copied into the pod");
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    assert!(spec.volumes.is_none());

    // Your own image's model need not be a Kiln model.
    let byoc = package(|v| {
        v["spec"]["inference"]["image"] = "my/server:1".into();
        v["spec"]["inference"]
            .as_object_mut()
            .unwrap()
            .remove("algorithm");
    });
    let args = check_pod(&byoc, 1, "r").unwrap().spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[4], "any");

    // A claim is mounted read-only and read as a path.
    let claim = package(|v| {
        v["spec"]["inference"]["modelData"] = json!({"uri": "pvc://models/iris/model.tar.gz"});
    });
    let spec = check_pod(&claim, 1, "r").unwrap().spec.unwrap();
    let c = &spec.containers[0];
    assert_eq!(
        c.args.clone().unwrap()[2],
        "file:///mnt/artifact/iris/model.tar.gz"
    );
    assert!(c.env_from.is_none());
    let mount = &c.volume_mounts.clone().unwrap()[0];
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        (ARTIFACT_MOUNT, Some(true))
    );
    let volume = &spec.volumes.unwrap()[0];
    let pvc = volume.persistent_volume_claim.clone().unwrap();
    assert_eq!(
        (pvc.claim_name.as_str(), pvc.read_only),
        ("models", Some(true))
    );

    let local = package(|v| {
        v["spec"]["inference"]["modelData"] = json!({"uri": "file:///opt/ml/model"});
    });
    assert!(check_pod(&local, 1, "r").is_none());
}

fn check(
    number: i64,
    generation: i64,
    done: Option<(i64, ArtifactCheckResult, i32)>,
) -> ArtifactCheck {
    ArtifactCheck {
        number,
        generation: Some(generation),
        start_time: at(0),
        completion_time: done.map(|(t, _, _)| at(t)),
        result: done.map(|(_, r, _)| r),
        digest: None,
        message: None,
        consecutive_failures: done.map_or(0, |(_, _, f)| f),
    }
}

#[test]
fn checks_run_per_generation_while_approved_and_after_failures_with_backoff() {
    use ArtifactCheckResult::*;
    assert_eq!(due(None, Some(1), false, false, &at(0)), Due::Start(1));
    let running = check(4, 1, None);
    assert_eq!(
        due(Some(&running), Some(2), true, false, &at(9999)),
        Due::Running
    );
    // A new generation (an approval, new metrics): checked again at once.
    let verified = check(4, 1, Some((10, Verified, 0)));
    assert_eq!(
        due(Some(&verified), Some(2), false, false, &at(11)),
        Due::Start(5)
    );
    // Not approved: nothing until the spec changes.
    assert_eq!(
        due(Some(&verified), Some(1), false, false, &at(99_999)),
        Due::Later(None)
    );
    // Approved: every 30 minutes.
    assert_eq!(
        due(Some(&verified), Some(1), true, false, &at(10 + 600)),
        Due::Later(Some(Duration::from_secs(1200)))
    );
    assert_eq!(
        due(Some(&verified), Some(1), true, false, &at(10 + 1800)),
        Due::Start(5)
    );
    // Failed: 1 minute, doubling per failure in a row, at most an hour.
    let failed = check(2, 1, Some((0, Failed, 1)));
    assert_eq!(
        due(Some(&failed), Some(1), false, false, &at(20)),
        Due::Later(Some(Duration::from_secs(40)))
    );
    assert_eq!(
        due(Some(&failed), Some(1), false, false, &at(60)),
        Due::Start(3)
    );
    let missing = check(2, 1, Some((0, NotFound, 3)));
    assert_eq!(
        due(Some(&missing), Some(1), true, false, &at(0)),
        Due::Later(Some(Duration::from_secs(240)))
    );
    // The job that writes the artifact completed: a failed check goes again.
    assert_eq!(
        due(Some(&missing), Some(1), true, true, &at(0)),
        Due::Start(3)
    );
    assert_eq!(
        due(Some(&verified), Some(1), false, true, &at(11)),
        Due::Later(None)
    );
    assert_eq!(retry_after(0), Duration::from_secs(60));
    assert_eq!(retry_after(1), Duration::from_secs(60));
    assert_eq!(retry_after(2), Duration::from_secs(120));
    assert_eq!(retry_after(7), Duration::from_secs(3600));
    assert_eq!(retry_after(i32::MAX), Duration::from_secs(3600));
}

const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn the_report_is_read_and_checked() {
    let report = parse_report(&format!(
        r#"{{"uri":"s3://b/m.tar.gz","layout":"Archive","sha256":"{}","size":1234,"objects":1,"algorithm":"kmeans"}}"#,
        HEX.to_uppercase()
    ))
    .unwrap();
    assert_eq!(
        report,
        Report {
            digest: format!("sha256:{HEX}"),
            size: 1234,
            algorithm: Some("kmeans".into())
        }
    );
    let without = parse_report(&format!(r#"{{"sha256":"{HEX}","size":1}}"#)).unwrap();
    assert_eq!(without.algorithm, None);
    assert!(
        parse_report("s3://b: nothing there")
            .unwrap_err()
            .contains("no JSON")
    );
    assert!(
        parse_report(r#"{"sha256":"abc"}"#)
            .unwrap_err()
            .contains("no SHA-256")
    );
    assert!(
        parse_report(r#"{"size":3}"#)
            .unwrap_err()
            .contains("no SHA-256")
    );
}

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "m-check-1"}, "status": status})).unwrap()
}

fn container(state: serde_json::Value) -> serde_json::Value {
    json!([{"name": CHECK_CONTAINER, "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": state}])
}

fn ended(phase: &str, code: i32, message: &str) -> Pod {
    pod(json!({"phase": phase, "containerStatuses": container(json!(
        {"terminated": {"exitCode": code, "message": message}}))}))
}

#[test]
fn the_pod_says_what_the_check_found_or_why_it_could_not_run() {
    let (start, now) = (at(0), at(30));
    let report = format!(r#"{{"sha256":"{HEX}","size":10}}"#);
    match observe(&ended("Succeeded", 0, &report), &start, &now) {
        Observed::Reported(r) => assert_eq!(r.digest, format!("sha256:{HEX}")),
        other => panic!("{other:?}"),
    }
    let no_report = observe(&ended("Succeeded", 0, ""), &start, &now);
    assert!(
        matches!(no_report, Observed::Failed(ArtifactCheckResult::Failed, _)),
        "{no_report:?}"
    );
    let cases = [
        (3, ArtifactCheckResult::NotFound, "s3://b/x: nothing there"),
        (2, ArtifactCheckResult::Invalid, "s3://b/x: no model.json"),
        (1, ArtifactCheckResult::Failed, "s3://b/x: access denied"),
    ];
    for (code, result, message) in cases {
        assert_eq!(
            observe(&ended("Failed", code, message), &start, &now),
            Observed::Failed(result, message.into())
        );
    }
    let silent = observe(&ended("Failed", 137, ""), &start, &now);
    match silent {
        Observed::Failed(ArtifactCheckResult::Failed, m) => {
            assert!(m.contains("exit code 137"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let deadline = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded",
        "message": "Pod was active on the node longer than the specified deadline"}));
    match observe(&deadline, &start, &now) {
        Observed::Failed(ArtifactCheckResult::Failed, m) => {
            assert!(m.contains("DeadlineExceeded"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // A missing Secret: it cannot start, which no wait fixes.
    let no_secret = pod(
        json!({"phase": "Pending", "containerStatuses": container(json!(
        {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"s3\" not found"}}))}),
    );
    match observe(&no_secret, &start, &now) {
        Observed::Failed(ArtifactCheckResult::Failed, m) => {
            assert_eq!(m, "the check pod cannot start: secret \"s3\" not found")
        }
        other => panic!("{other:?}"),
    }
    // Pulling: it waits, up to the check's time limit.
    let pulling = pod(
        json!({"phase": "Pending", "containerStatuses": container(json!(
        {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}))}),
    );
    assert_eq!(
        observe(&pulling, &start, &now),
        Observed::Running(Some("ImagePullBackOff: Back-off pulling image".into()))
    );
    match observe(&pulling, &start, &at(601)) {
        Observed::Failed(ArtifactCheckResult::Failed, m) => assert_eq!(
            m,
            "the check did not finish within 10 minutes (its pod: ImagePullBackOff: Back-off pulling image)"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        observe(&pod(json!({"phase": "Pending"})), &start, &now),
        Observed::Running(None)
    );
}

#[test]
fn a_report_verifies_the_registered_digest_or_says_both() {
    let uri = "s3://b/m.tar.gz";
    let report = Report {
        digest: format!("sha256:{HEX}"),
        size: 10,
        algorithm: Some("linear-learner".into()),
    };
    let (first, _) = judge(uri, &report, None, Some("linear-learner"));
    assert_eq!(first, ArtifactCheckResult::Verified);
    let (same, _) = judge(uri, &report, Some(&report.digest), Some("linear-learner"));
    assert_eq!(same, ArtifactCheckResult::Verified);
    let old = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let (changed, message) = judge(uri, &report, Some(old), None);
    assert_eq!(changed, ArtifactCheckResult::Changed);
    assert!(
        message.contains(&format!("registered {old}, now sha256:{HEX}")),
        "{message}"
    );
    let (wrong, message) = judge(uri, &report, None, Some("kmeans"));
    assert_eq!(wrong, ArtifactCheckResult::Invalid);
    assert!(
        message.contains("is a linear-learner model, but inference.algorithm is kmeans"),
        "{message}"
    );
    // model.json without an algorithm: the package's own says what it is.
    let plain = Report {
        algorithm: None,
        ..report
    };
    assert_eq!(
        judge(uri, &plain, None, Some("kmeans")).0,
        ArtifactCheckResult::Verified
    );
}
