use super::*;

fn spec(steps: &str) -> PipelineSpec {
    serde_yaml::from_str(&format!(
        r#"
parameters:
  - {{name: min_accuracy, type: Float, default: "0.9"}}
  - {{name: replicas, type: Integer, default: "1"}}
  - {{name: deploy, type: Boolean, default: "true"}}
  - {{name: team, type: String}}
steps:
{steps}
"#
    ))
    .unwrap()
}

const LIFECYCLE: &str = r#"
  - name: train
    training: {spec: {resources: {replicas: "{{ parameters.replicas }}"}}}
  - name: check
    condition:
      expression: "steps.train.metrics['validation:accuracy'] >= parameters.min_accuracy"
      ifSteps: [register]
      elseSteps: [reject]
  - name: register
    registerModel: {groupName: g, modelFromStep: train}
  - name: deploy
    deploy:
      endpointName: e
      spec: {variants: [{name: a, model: {modelPackage: {name: "{{ steps.register.modelPackageName }}"}}}]}
  - name: reject
    fail: {message: "below {{ parameters.min_accuracy }}"}
"#;

fn status(name: &str, state: StepState, result: Option<bool>) -> StepStatus {
    StepStatus {
        name: name.into(),
        state: Some(state),
        condition_result: result,
        ..StepStatus::default()
    }
}

#[test]
fn parameters_take_the_runs_values_then_defaults_and_are_typed() {
    let spec = spec(LIFECYCLE);
    let given = vec![
        ParameterValue {
            name: "replicas".into(),
            value: "3".into(),
        },
        ParameterValue {
            name: "team".into(),
            value: "ml".into(),
        },
    ];
    let p = parameters(&spec, &given).unwrap();
    assert_eq!(p["replicas"], 3);
    assert_eq!(p["min_accuracy"], 0.9);
    assert_eq!(p["deploy"], true);
    assert_eq!(p["team"], "ml");
    let e = parameters(&spec, &given[..1]).unwrap_err();
    assert!(e.contains("\"team\" has no default"), "{e}");
    let bad = vec![
        ParameterValue {
            name: "replicas".into(),
            value: "two".into(),
        },
        given[1].clone(),
    ];
    assert!(
        parameters(&spec, &bad)
            .unwrap_err()
            .contains("is not a valid Integer")
    );
    let unknown = vec![ParameterValue {
        name: "lr".into(),
        value: "1".into(),
    }];
    assert!(
        parameters(&spec, &unknown)
            .unwrap_err()
            .contains("\"lr\" is not a parameter")
    );
}

#[test]
fn dependencies_come_from_references_conditions_and_registration() {
    let g = graph(&spec(LIFECYCLE)).unwrap();
    let deps = |s: &str| g.deps[s].iter().cloned().collect::<Vec<_>>();
    assert!(deps("train").is_empty());
    assert_eq!(deps("check"), ["train"]);
    assert_eq!(deps("register"), ["check", "train"]);
    assert_eq!(deps("deploy"), ["register"]);
    assert_eq!(deps("reject"), ["check"]);
    assert_eq!(g.gates["register"], ("check".to_string(), true));
    assert_eq!(g.gates["reject"], ("check".to_string(), false));
}

#[test]
fn unknown_names_bad_references_and_cycles_are_named() {
    let e = graph(&spec(
        r#"
  - {name: a, fail: {message: "{{ steps.b.url }}"}}
  - {name: b, fail: {message: "{{ steps.c.url }}"}}
  - {name: c, dependsOn: [a], fail: {message: x}}
"#,
    ))
    .unwrap_err();
    assert!(e.contains("cycle: "), "{e}");
    let e = graph(&spec(
        r#"  - {name: a, fail: {message: "{{ steps.zz.url }}"}}"#,
    ))
    .unwrap_err();
    assert!(e.contains("\"zz\", which is not a step"), "{e}");
    let e = graph(&spec(
        r#"  - {name: a, fail: {message: "{{ parameters.nope }}"}}"#,
    ))
    .unwrap_err();
    assert!(e.contains("\"nope\", which is not a parameter"), "{e}");
    let e = graph(&spec(
        r#"  - {name: a, fail: {message: "{{ steps.a.bogus }}"}}"#,
    ))
    .unwrap_err();
    assert!(e.contains("no output"), "{e}");
    let e = graph(&spec(
        "  - {name: a, fail: {message: x}}\n  - {name: a, fail: {message: y}}",
    ))
    .unwrap_err();
    assert!(e.contains("two steps are named a"), "{e}");
}

#[test]
fn the_next_steps_follow_states_and_the_branch_taken() {
    let g = graph(&spec(LIFECYCLE)).unwrap();
    assert_eq!(next(&g, &[]).ready, ["train"]);
    let mut steps = vec![status("train", StepState::Executing, None)];
    assert_eq!(next(&g, &steps), Next::default());
    steps[0].state = Some(StepState::Succeeded);
    assert_eq!(next(&g, &steps).ready, ["check"]);
    steps.push(status("check", StepState::Succeeded, Some(true)));
    let n = next(&g, &steps);
    assert_eq!(n.ready, ["register"]);
    assert_eq!(
        n.skip,
        [("reject".to_string(), "condition check was true".to_string())]
    );
    // The other branch: register skipped, and deploy after it.
    steps[1].condition_result = Some(false);
    let n = next(&g, &steps);
    assert_eq!(n.ready, ["reject"]);
    let skipped: Vec<&str> = n.skip.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(skipped, ["register", "deploy"]);
    // A failed step skips what depends on it.
    let failed = vec![status("train", StepState::Failed, None)];
    let n = next(&g, &failed);
    assert!(n.ready.is_empty());
    assert_eq!(n.skip.len(), 4, "{:?}", n.skip);
}
