use super::*;

fn run() -> PipelineRun {
    serde_yaml::from_str(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: PipelineRun
metadata: {name: nightly-1, namespace: ns, uid: run-uid}
spec: {pipelineRef: {name: nightly}}
"#,
    )
    .unwrap()
}

fn pipeline() -> PipelineSpec {
    serde_yaml::from_str(
        r#"
parameters: [{name: lr, type: Float, default: "0.1"}]
steps:
  - name: train
    training:
      spec:
        algorithm: {name: linear-learner}
        hyperparameters: {learning_rate: "{{ parameters.lr }}"}
        output: {location: {uri: "s3://b/{{run.name}}/", secretRef: {name: s3}}}
        resources: {replicas: 1}
  - name: register
    registerModel: {groupName: iris, modelFromStep: train, approvalStatus: Approved, description: "from {{ run.name }}"}
"#,
    )
    .unwrap()
}

#[test]
fn child_names_fit_every_kind_and_stay_distinct() {
    assert_eq!(child_name("r", "train", 1), "r-train");
    assert_eq!(child_name("r", "train", 2), "r-train-2");
    let long = "a-pipeline-run-with-a-rather-long-generated-name-x7k2p";
    let a = child_name(long, "train", 1);
    let b = child_name(long, "evaluate", 1);
    assert!(
        a.len() <= MAX_CHILD_NAME && b.len() <= MAX_CHILD_NAME,
        "{a} {b}"
    );
    assert_ne!(a, b);
    assert!(!a.contains("--"), "{a}");
}

#[test]
fn a_training_child_is_resolved_owned_and_labelled() {
    let spec = pipeline();
    let params = BTreeMap::from([("lr".to_string(), serde_json::json!(0.1))]);
    let steps = BTreeMap::new();
    let run_values = BTreeMap::from([("name".to_string(), "nightly-1".to_string())]);
    let values = Values {
        parameters: &params,
        steps: &steps,
        run: &run_values,
    };
    let child = child_ref(&spec.steps[0], "nightly-1", 1);
    assert_eq!(
        (child.kind.as_str(), child.name.as_str()),
        ("TrainingJob", "nightly-1-train")
    );
    let o = child_object(&run(), &spec.steps[0], &child, &values, &spec).unwrap();
    assert_eq!(
        o["spec"]["hyperparameters"]["learning_rate"], "0.1",
        "hyperparameters stay strings"
    );
    assert_eq!(o["spec"]["output"]["location"]["uri"], "s3://b/nightly-1/");
    assert_eq!(o["metadata"]["labels"][RUN_LABEL], "nightly-1");
    assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "run-uid");
}

#[test]
fn registration_takes_the_artifact_algorithm_credentials_and_lineage_of_its_step() {
    let spec = pipeline();
    let params = BTreeMap::from([("lr".to_string(), serde_json::json!(0.1))]);
    let steps = BTreeMap::from([(
        "train".to_string(),
        BTreeMap::from([
            (
                "modelArtifactUri".to_string(),
                "s3://b/m.tar.gz".to_string(),
            ),
            ("trainingJobName".to_string(), "nightly-1-train".to_string()),
        ]),
    )]);
    let run_values = BTreeMap::from([("name".to_string(), "nightly-1".to_string())]);
    let values = Values {
        parameters: &params,
        steps: &steps,
        run: &run_values,
    };
    let child = child_ref(&spec.steps[1], "nightly-1", 1);
    let o = child_object(&run(), &spec.steps[1], &child, &values, &spec).unwrap();
    assert_eq!(o["kind"], "ModelPackage");
    let s = &o["spec"];
    assert_eq!(s["groupName"], "iris");
    assert_eq!(s["inference"]["modelData"]["uri"], "s3://b/m.tar.gz");
    assert_eq!(s["inference"]["modelData"]["secretRef"]["name"], "s3");
    assert_eq!(s["inference"]["algorithm"], "linear-learner");
    assert_eq!(s["source"]["trainingJob"], "nightly-1-train");
    assert_eq!(s["source"]["pipeline"], "nightly");
    assert_eq!(s["approval"]["status"], "Approved");
    assert_eq!(s["description"], "from nightly-1");
    assert!(
        o["metadata"].get("ownerReferences").is_none(),
        "a registered version outlives the run"
    );
    // Without the training step's outputs, registration says what is missing.
    let empty = BTreeMap::new();
    let values = Values {
        parameters: &params,
        steps: &empty,
        run: &run_values,
    };
    assert!(
        child_object(&run(), &spec.steps[1], &child, &values, &spec)
            .unwrap_err()
            .contains("has not succeeded")
    );
}

#[test]
fn conditions_see_metrics_as_numbers_and_outputs_by_name() {
    let status = PipelineRunStatus {
        steps: vec![StepStatus {
            name: "train".into(),
            state: Some(StepState::Succeeded),
            outputs: vec![
                StepOutput {
                    name: "metrics['validation:accuracy']".into(),
                    value: "0.96".into(),
                },
                StepOutput {
                    name: "modelArtifactUri".into(),
                    value: "s3://m".into(),
                },
            ],
            ..StepStatus::default()
        }],
        ..PipelineRunStatus::default()
    };
    let params = BTreeMap::from([("min".to_string(), serde_json::json!(0.9))]);
    let steps = BTreeMap::new();
    let run_values = BTreeMap::new();
    let values = Values {
        parameters: &params,
        steps: &steps,
        run: &run_values,
    };
    let vars = condition_vars(&values, &status);
    assert_eq!(
        condition::evaluate(
            "steps.train.metrics['validation:accuracy'] >= parameters.min && steps.train.state == 'Succeeded' && steps.train.modelArtifactUri == 's3://m'",
            &vars
        ),
        Ok(true)
    );
}

#[test]
fn retries_wait_longer_each_time() {
    let r: kiln_api::pipeline::RetryPolicy = serde_json::from_value(
        serde_json::json!({"maxAttempts": 4, "intervalSeconds": 5, "backoffFactor": 3}),
    )
    .unwrap();
    assert_eq!(
        [retry_wait(&r, 1), retry_wait(&r, 2), retry_wait(&r, 3)],
        [5, 15, 45]
    );
}

#[test]
fn cache_keys_follow_the_resolved_configuration() {
    let mut spec = pipeline();
    let run_values = BTreeMap::from([("name".to_string(), "nightly-1".to_string())]);
    let steps = BTreeMap::new();
    let key = |spec: &PipelineSpec, lr: f64, run: &BTreeMap<String, String>| {
        let params = BTreeMap::from([("lr".to_string(), serde_json::json!(lr))]);
        let values = Values {
            parameters: &params,
            steps: &steps,
            run,
        };
        cache_key(&spec.steps[0], &values)
    };
    assert_eq!(key(&spec, 0.1, &run_values), None, "no cache configured");
    spec.steps[0].cache = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    let a = key(&spec, 0.1, &run_values).unwrap();
    assert_eq!(a.len(), 40);
    assert_eq!(
        key(&spec, 0.1, &run_values).unwrap(),
        a,
        "the same configuration, the same key"
    );
    assert_ne!(
        key(&spec, 0.2, &run_values).unwrap(),
        a,
        "another learning rate"
    );
    // The output URI holds {{run.name}}: another run is another configuration.
    let other = BTreeMap::from([("name".to_string(), "nightly-2".to_string())]);
    assert_ne!(key(&spec, 0.1, &other).unwrap(), a);
    spec.steps[0].cache =
        Some(serde_json::from_value(serde_json::json!({"enabled": false})).unwrap());
    assert_eq!(key(&spec, 0.1, &run_values), None);
}
