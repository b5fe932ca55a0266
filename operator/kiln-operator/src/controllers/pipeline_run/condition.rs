//! Condition steps: a CEL expression (the language of Kubernetes validation
//! rules) over `parameters`, `steps` and `run`, evaluated in process.

/// Evaluates `expression` with the variables of `vars` (an object whose
/// keys become CEL variables). A parse error, an evaluation error or a
/// result that is not a boolean is a message; the interpreter never takes
/// the operator down with it.
pub fn evaluate(
    expression: &str,
    vars: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, String> {
    let run = || -> Result<bool, String> {
        let program = cel::Program::compile(expression)
            .map_err(|e| format!("the expression does not parse: {e}"))?;
        let mut context = cel::Context::default();
        for (name, value) in vars {
            context.add_variable_from_value(name.as_str(), to_cel(value));
        }
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression gave {other:?}, not true or false")),
            Err(e) => Err(format!("evaluating the expression failed: {e}")),
        }
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err("the expression could not be evaluated".into()))
}

/// A JSON value as CEL sees it: whole numbers as `int` (JSON carries no
/// distinction, and CEL's `2 == 2u` is false), other numbers as `double`.
fn to_cel(value: &serde_json::Value) -> cel::Value {
    match value {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => cel::Value::String(std::sync::Arc::new(s.clone())),
        serde_json::Value::Array(items) => items.iter().map(to_cel).collect::<Vec<_>>().into(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<std::collections::HashMap<String, cel::Value>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> serde_json::Map<String, serde_json::Value> {
        json!({
            "parameters": {"min_accuracy": 0.9, "deploy": true, "replicas": 2},
            "steps": {"train": {"state": "Succeeded", "metrics": {"validation:accuracy": 0.95},
                                 "outputs": {}, "modelArtifactUri": "s3://b/m"}},
            "run": {"name": "r"},
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn expressions_over_parameters_and_step_metrics() {
        let v = vars();
        let t = |e: &str| evaluate(e, &v);
        assert_eq!(
            t("steps.train.metrics['validation:accuracy'] >= parameters.min_accuracy"),
            Ok(true)
        );
        assert_eq!(
            t(
                "steps.train.metrics['validation:accuracy'] >= double(parameters.min_accuracy) && parameters.deploy"
            ),
            Ok(true)
        );
        assert_eq!(
            t("steps.train.metrics['validation:accuracy'] > 0.99"),
            Ok(false)
        );
        assert_eq!(
            t("parameters.replicas == 2 && steps.train.state == 'Succeeded'"),
            Ok(true)
        );
        assert_eq!(t("!(parameters.replicas in [1, 3])"), Ok(true));
        assert!(
            t("steps.train.metrics['validation:accuracy'] +")
                .unwrap_err()
                .contains("does not parse")
        );
        assert!(
            t("parameters.replicas")
                .unwrap_err()
                .contains("not true or false")
        );
        assert!(t("steps.train.metrics['nope'] > 1.0").is_err());
    }
}
