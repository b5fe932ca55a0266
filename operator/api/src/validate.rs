//! Checks the API server cannot make: parsing storage URIs and checking a
//! pipeline's graph. Pure functions, used by the controllers' validate steps.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::pipeline::PipelineSpec;

/// A parsed storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUri {
    /// `s3://bucket/key`.
    S3 { bucket: String, key: String },
    /// `gs://bucket/key`.
    Gcs { bucket: String, key: String },
    /// `az://container/key`.
    Azure { container: String, key: String },
    /// `file:///absolute/path`.
    File { path: String },
    /// `pvc://claim/path`.
    Pvc { claim: String, path: String },
}

/// Why a value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    /// A storage URI that cannot be used.
    #[error("storage URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    /// A step depends on itself through a chain of steps.
    #[error("pipeline steps form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A reference names an unknown step or parameter.
    #[error("step {step:?} refers to {target:?}, which is not a {kind} of this pipeline")]
    UnknownReference {
        step: String,
        target: String,
        kind: &'static str,
    },
    /// A parameter's default does not parse as its type.
    #[error("parameter {name:?}: default {value:?} is not a valid {type_}")]
    ParameterDefault {
        name: String,
        value: String,
        type_: String,
    },
    /// Two condition steps gate the same step.
    #[error(
        "step {step:?} is in the branches of both {first:?} and {second:?}; a step is gated by one condition step at most"
    )]
    GatedTwice {
        step: String,
        first: String,
        second: String,
    },
    /// A run's parameter value does not parse as the parameter's type.
    #[error("parameter {name:?}: {value:?} is not a valid {type_}")]
    ParameterValue {
        name: String,
        value: String,
        type_: String,
    },
    /// A run names a parameter the pipeline does not have.
    #[error("parameter {0:?} is not a parameter of the pipeline")]
    UnknownParameter(String),
    /// A parameter without a default was given no value.
    #[error("parameter {0:?} has no default and the run gives no value for it")]
    MissingParameter(String),
}

/// Whether `value` parses as a value of `type_`.
fn parses_as(type_: crate::pipeline::ParameterType, value: &str) -> bool {
    use crate::pipeline::ParameterType;
    match type_ {
        ParameterType::String => true,
        ParameterType::Integer => value.parse::<i64>().is_ok(),
        ParameterType::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
        ParameterType::Boolean => matches!(value, "true" | "false"),
    }
}

/// Every parameter's value in a run of `spec`: the run's own values, checked
/// against their types, and the defaults of the others.
pub fn run_parameters(
    spec: &PipelineSpec,
    values: &[crate::pipeline_run::ParameterValue],
) -> Result<Vec<crate::pipeline_run::ParameterValue>, ValidationError> {
    use crate::pipeline_run::ParameterValue;
    if let Some(unknown) = values
        .iter()
        .find(|v| !spec.parameters.iter().any(|p| p.name == v.name))
    {
        return Err(ValidationError::UnknownParameter(unknown.name.clone()));
    }
    spec.parameters
        .iter()
        .map(|p| {
            let value = match values.iter().find(|v| v.name == p.name) {
                Some(v) => v.value.clone(),
                None => p
                    .default
                    .clone()
                    .ok_or_else(|| ValidationError::MissingParameter(p.name.clone()))?,
            };
            if !parses_as(p.type_, &value) {
                return Err(ValidationError::ParameterValue {
                    name: p.name.clone(),
                    value,
                    type_: format!("{:?}", p.type_),
                });
            }
            Ok(ParameterValue {
                name: p.name.clone(),
                value,
            })
        })
        .collect()
}

impl StorageUri {
    /// Parses a storage URI, refusing what no store could serve.
    pub fn parse(uri: &str) -> Result<Self, ValidationError> {
        let fail = |reason: &str| ValidationError::Uri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| fail("expected scheme://..."))?;
        if rest.chars().any(char::is_whitespace) {
            return Err(fail("contains whitespace"));
        }
        let bucket_and_key = |what: &str| -> Result<(String, String), ValidationError> {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail(&format!("missing {what} name")));
            }
            Ok((bucket.to_string(), key.trim_start_matches('/').to_string()))
        };
        match scheme {
            "s3" => {
                let (bucket, key) = bucket_and_key("bucket")?;
                if bucket.len() < 3
                    || bucket.len() > 63
                    || !bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                {
                    return Err(fail(
                        "bucket names are 3-63 lowercase letters, digits, '-' or '.'",
                    ));
                }
                Ok(Self::S3 { bucket, key })
            }
            "gs" => bucket_and_key("bucket").map(|(bucket, key)| Self::Gcs { bucket, key }),
            "az" => {
                bucket_and_key("container").map(|(container, key)| Self::Azure { container, key })
            }
            "file" => {
                if !rest.starts_with('/') {
                    return Err(fail(
                        "file:// URIs take an absolute path: file:///data/train",
                    ));
                }
                if rest.split('/').any(|part| part == "..") {
                    return Err(fail("'..' is not allowed in paths"));
                }
                Ok(Self::File {
                    path: rest.to_string(),
                })
            }
            "pvc" => {
                let (claim, path) = bucket_and_key("claim")?;
                if path.split('/').any(|part| part == "..") {
                    return Err(fail("'..' is not allowed in paths"));
                }
                Ok(Self::Pvc { claim, path })
            }
            other => Err(fail(&format!(
                "unsupported scheme {other:?}; use s3, gs, az, file or pvc"
            ))),
        }
    }
}

/// The `{{ steps.<name>... }}` references in a string.
pub fn step_references(text: &str) -> BTreeSet<String> {
    references(text, "steps.")
}

/// The `{{ parameters.<name> }}` references in a string.
pub fn parameter_references(text: &str) -> BTreeSet<String> {
    references(text, "parameters.")
}

fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let expr = after[..end].trim();
        if let Some(path) = expr.strip_prefix(prefix) {
            let name: String = path
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        rest = &after[end + 2..];
    }
    found
}

/// The steps a condition step's CEL expression reads: `steps.<name>` or
/// `steps['<name>']` (a name with a dash cannot be a CEL identifier).
pub fn expression_steps(expression: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expression;
    while let Some(at) = rest.find("steps") {
        let before_ok = !rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let after = &rest[at + 5..];
        if before_ok {
            let name: Option<String> = if let Some(a) = after.strip_prefix('.') {
                Some(
                    a.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect(),
                )
            } else if let Some(a) = after
                .strip_prefix("['")
                .or_else(|| after.strip_prefix("[\""))
            {
                a.find(['\'', '"']).map(|end| a[..end].to_string())
            } else {
                None
            };
            if let Some(n) = name.filter(|n| !n.is_empty()) {
                out.insert(n);
            }
        }
        rest = after;
    }
    out
}

/// The dependencies of each step: `dependsOn`, the steps its strings refer to
/// (and a condition's expression reads), and the condition step that gates it.
pub fn step_dependencies(
    spec: &PipelineSpec,
) -> Result<BTreeMap<String, BTreeSet<String>>, ValidationError> {
    let names: BTreeSet<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    let parameters: BTreeSet<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for step in &spec.steps {
        let text = serde_json::to_string(step).unwrap_or_default();
        let mut mine: BTreeSet<String> = step.depends_on.iter().flatten().cloned().collect();
        mine.extend(step_references(&text));
        if let Some(register) = &step.register_model {
            mine.insert(register.model_from_step.clone());
        }
        if let Some(condition) = &step.condition {
            mine.extend(expression_steps(&condition.expression));
        }
        for target in &mine {
            if !names.contains(target.as_str()) || *target == step.name {
                return Err(ValidationError::UnknownReference {
                    step: step.name.clone(),
                    target: target.clone(),
                    kind: "step",
                });
            }
        }
        for parameter in parameter_references(&text) {
            if !parameters.contains(parameter.as_str()) {
                return Err(ValidationError::UnknownReference {
                    step: step.name.clone(),
                    target: parameter,
                    kind: "parameter",
                });
            }
        }
        deps.entry(step.name.clone()).or_default().extend(mine);
        if let Some(condition) = &step.condition {
            for gated in condition.if_steps.iter().chain(&condition.else_steps) {
                deps.entry(gated.clone())
                    .or_default()
                    .insert(step.name.clone());
            }
        }
    }
    Ok(deps)
}

/// Orders the steps so every step comes after its dependencies, or names a cycle.
pub fn topological_order(
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, ValidationError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ValidationError> {
        match marks.get(node) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let from = stack.iter().position(|s| s == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.to_string());
                return Err(ValidationError::Cycle(cycle));
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Visiting);
        stack.push(node.to_string());
        for dep in deps.get(node).into_iter().flatten() {
            visit(dep, deps, marks, stack, order)?;
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        order.push(node.to_string());
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut order = Vec::new();
    for node in deps.keys() {
        visit(node, deps, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Checks a pipeline: references resolve, the graph is acyclic, parameter
/// defaults parse. Returns the steps in an order that respects dependencies.
pub fn check_pipeline(spec: &PipelineSpec) -> Result<Vec<String>, ValidationError> {
    let mut gate: BTreeMap<&str, &str> = BTreeMap::new();
    for step in &spec.steps {
        let Some(condition) = &step.condition else {
            continue;
        };
        for gated in condition.if_steps.iter().chain(&condition.else_steps) {
            if let Some(first) = gate.insert(gated, &step.name)
                && first != step.name
            {
                return Err(ValidationError::GatedTwice {
                    step: gated.clone(),
                    first: first.to_string(),
                    second: step.name.clone(),
                });
            }
        }
    }
    for p in &spec.parameters {
        let Some(value) = &p.default else { continue };
        if !parses_as(p.type_, value) {
            return Err(ValidationError::ParameterDefault {
                name: p.name.clone(),
                value: value.clone(),
                type_: format!("{:?}", p.type_),
            });
        }
    }
    topological_order(&step_dependencies(spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{FailStep, Parameter, ParameterType, Step};

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            StorageUri::parse("s3://models/iris/out/").unwrap(),
            StorageUri::S3 {
                bucket: "models".into(),
                key: "iris/out/".into()
            }
        );
        assert_eq!(
            StorageUri::parse("s3://models").unwrap(),
            StorageUri::S3 {
                bucket: "models".into(),
                key: String::new()
            }
        );
        assert_eq!(
            StorageUri::parse("gs://b/k").unwrap(),
            StorageUri::Gcs {
                bucket: "b".into(),
                key: "k".into()
            }
        );
        assert_eq!(
            StorageUri::parse("az://c/k").unwrap(),
            StorageUri::Azure {
                container: "c".into(),
                key: "k".into()
            }
        );
        assert_eq!(
            StorageUri::parse("file:///data/x").unwrap(),
            StorageUri::File {
                path: "/data/x".into()
            }
        );
        assert_eq!(
            StorageUri::parse("pvc://imagenet/train").unwrap(),
            StorageUri::Pvc {
                claim: "imagenet".into(),
                path: "train".into()
            }
        );
    }

    #[test]
    fn refuses_unusable_uris_with_a_reason() {
        for (uri, reason) in [
            ("http://x/y", "unsupported scheme"),
            ("s3:/bucket", "expected scheme"),
            ("s3://Bad_Bucket/k", "bucket names"),
            ("s3:///key", "missing bucket"),
            ("file://relative/path", "absolute path"),
            ("pvc://claim/../etc", "'..'"),
            ("s3://bucket/a b", "whitespace"),
        ] {
            let err = StorageUri::parse(uri).unwrap_err().to_string();
            assert!(err.contains(reason), "{uri}: {err}");
        }
    }

    #[test]
    fn finds_references() {
        let text = "s3://m/{{ steps.train.modelArtifactUri }}/{{parameters.lr}}/{{ execution.id }}/{{ steps.eval-2.outputs.report }}";
        assert_eq!(
            step_references(text).into_iter().collect::<Vec<_>>(),
            vec!["eval-2", "train"]
        );
        assert_eq!(
            parameter_references(text).into_iter().collect::<Vec<_>>(),
            vec!["lr"]
        );
        assert!(step_references("{{ steps.unclosed").is_empty());
        assert_eq!(
            expression_steps(
                "steps.train.metrics['a'] >= 0.9 && steps['eval-2'].outputs.x == 'y' || mysteps.z"
            )
            .into_iter()
            .collect::<Vec<_>>(),
            vec!["eval-2", "train"]
        );
        assert!(expression_steps("parameters.deploy").is_empty());
    }

    fn fail_step(name: &str, message: &str, depends_on: &[&str]) -> Step {
        Step {
            name: name.into(),
            depends_on: (!depends_on.is_empty())
                .then(|| depends_on.iter().map(|s| s.to_string()).collect()),
            cache: None,
            retry: None,
            processing: None,
            training: None,
            tuning: None,
            register_model: None,
            deploy: None,
            condition: None,
            fail: Some(FailStep {
                message: message.into(),
            }),
        }
    }

    fn spec(steps: Vec<Step>, parameters: Vec<Parameter>) -> PipelineSpec {
        PipelineSpec {
            parameters,
            steps,
            max_parallel_steps: 10,
            schedule: None,
            successful_runs_history_limit: 10,
            failed_runs_history_limit: 5,
        }
    }

    #[test]
    fn orders_steps_after_explicit_and_implicit_dependencies() {
        let s = spec(
            vec![
                fail_step("c", "{{ steps.b.outputs.x }}", &[]),
                fail_step("b", "x", &["a"]),
                fail_step("a", "x", &[]),
            ],
            vec![],
        );
        assert_eq!(check_pipeline(&s).unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn names_the_cycle() {
        let s = spec(
            vec![
                fail_step("a", "{{ steps.c.outputs.x }}", &[]),
                fail_step("b", "x", &["a"]),
                fail_step("c", "x", &["b"]),
            ],
            vec![],
        );
        let err = check_pipeline(&s).unwrap_err();
        assert!(
            matches!(&err, ValidationError::Cycle(path) if path.len() == 4),
            "{err}"
        );
        assert!(
            err.to_string().contains("a -> c -> b -> a") || err.to_string().contains("-> a"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_references_and_bad_defaults() {
        let unknown_step = spec(
            vec![fail_step("a", "{{ steps.ghost.outputs.x }}", &[])],
            vec![],
        );
        assert!(
            check_pipeline(&unknown_step)
                .unwrap_err()
                .to_string()
                .contains("\"ghost\"")
        );
        let unknown_param = spec(vec![fail_step("a", "{{ parameters.lr }}", &[])], vec![]);
        assert!(
            check_pipeline(&unknown_param)
                .unwrap_err()
                .to_string()
                .contains("not a parameter")
        );
        let bad_default = spec(
            vec![fail_step("a", "x", &[])],
            vec![Parameter {
                name: "n".into(),
                type_: ParameterType::Integer,
                default: Some("1.5".into()),
                description: None,
            }],
        );
        assert!(
            check_pipeline(&bad_default)
                .unwrap_err()
                .to_string()
                .contains("not a valid Integer")
        );
        let self_dependency = spec(vec![fail_step("a", "x", &["a"])], vec![]);
        assert!(check_pipeline(&self_dependency).is_err());
    }

    fn parameter(name: &str, type_: ParameterType, default: Option<&str>) -> Parameter {
        Parameter {
            name: name.into(),
            type_,
            default: default.map(Into::into),
            description: None,
        }
    }

    fn value(name: &str, value: &str) -> crate::pipeline_run::ParameterValue {
        crate::pipeline_run::ParameterValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn run_parameters_take_values_then_defaults_and_check_types() {
        let s = spec(
            vec![fail_step(
                "a",
                "{{ parameters.lr }} {{ parameters.n }}",
                &[],
            )],
            vec![
                parameter("lr", ParameterType::Float, Some("0.1")),
                parameter("n", ParameterType::Integer, None),
            ],
        );
        let resolved = run_parameters(&s, &[value("n", "3")]).unwrap();
        assert_eq!(resolved, vec![value("lr", "0.1"), value("n", "3")]);
        let err = run_parameters(&s, &[]).unwrap_err().to_string();
        assert!(err.contains("\"n\" has no default"), "{err}");
        let err = run_parameters(&s, &[value("n", "three")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"three\" is not a valid Integer"), "{err}");
        let err = run_parameters(&s, &[value("n", "3"), value("epochs", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"epochs\" is not a parameter"), "{err}");
    }

    #[test]
    fn a_step_is_gated_by_one_condition_at_most() {
        let condition = |name: &str, if_steps: &[&str]| Step {
            condition: Some(crate::pipeline::ConditionStep {
                expression: "true".into(),
                if_steps: if_steps.iter().map(|s| s.to_string()).collect(),
                else_steps: vec![],
            }),
            fail: None,
            ..fail_step(name, "x", &[])
        };
        let s = spec(
            vec![
                condition("c1", &["x"]),
                condition("c2", &["x"]),
                fail_step("x", "x", &[]),
            ],
            vec![],
        );
        let err = check_pipeline(&s).unwrap_err().to_string();
        assert!(err.contains("both \"c1\" and \"c2\""), "{err}");
    }
}
