//! `{{ ... }}` references in step bodies: finding them (for validation and
//! implicit dependencies) and replacing them with values when a step starts.
//!
//! A reference is `parameters.<name>`, `steps.<step>.<output>` (an output
//! as a step records it: `modelArtifactUri`, `trainingJobName`,
//! `tuningJobName`, `modelPackageName`, `modelPackageVersion`,
//! `endpointName`, `url`, `metrics['<metric>']`, `outputs.<name>`),
//! `run.name` or `run.startTime`. A string that is exactly one reference
//! takes the value's type (a number, a boolean); one reference among other
//! text is replaced as text.

use std::collections::BTreeMap;

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `parameters.<name>`.
    Parameter(String),
    /// `steps.<step>.<output>`, the output as the step records it.
    Step(String, String),
    /// `run.<field>`.
    Run(String),
}

/// The outputs a step can record, by prefix: an output is one of these
/// names, or starts with `metrics['` or `outputs.`.
const STEP_OUTPUTS: &[&str] = &[
    "modelArtifactUri",
    "trainingJobName",
    "tuningJobName",
    "modelPackageName",
    "modelPackageVersion",
    "endpointName",
    "url",
];

/// Parses the inside of `{{ ... }}`; a message says what is wrong.
pub fn parse(inner: &str) -> Result<Reference, String> {
    let text = inner.trim();
    if let Some(name) = text.strip_prefix("parameters.") {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{{{{ {text} }}}}: not a parameter name"));
        }
        return Ok(Reference::Parameter(name.into()));
    }
    if let Some(rest) = text.strip_prefix("steps.") {
        let Some((step, output)) = rest.split_once('.') else {
            return Err(format!("{{{{ {text} }}}}: expected steps.<step>.<output>"));
        };
        let output = normalize_output(output);
        let known = STEP_OUTPUTS.contains(&output.as_str())
            || (output.starts_with("metrics['") && output.ends_with("']") && output.len() > 11)
            || output
                .strip_prefix("outputs.")
                .is_some_and(|n| !n.is_empty());
        if !known {
            return Err(format!(
                "{{{{ {text} }}}}: a step has no output {output:?} (it has {}, metrics['<metric>'] and outputs.<name>)",
                STEP_OUTPUTS.join(", ")
            ));
        }
        return Ok(Reference::Step(step.into(), output));
    }
    if let Some(field) = text.strip_prefix("run.") {
        if matches!(field, "name" | "startTime" | "uid") {
            return Ok(Reference::Run(field.into()));
        }
        return Err(format!(
            "{{{{ {text} }}}}: a run has name, startTime and uid"
        ));
    }
    Err(format!(
        "{{{{ {text} }}}}: a reference starts with parameters., steps. or run."
    ))
}

/// `metrics["x"]` written as `metrics['x']`.
fn normalize_output(output: &str) -> String {
    match output
        .strip_prefix("metrics[\"")
        .and_then(|r| r.strip_suffix("\"]"))
    {
        Some(m) => format!("metrics['{m}']"),
        None => output.to_string(),
    }
}

/// The `{{ ... }}` spans of a string: (start, end, inside).
fn spans(s: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = s[at..].find("{{") {
        let open = at + open;
        let Some(close) = s[open + 2..].find("}}") else {
            break;
        };
        let close = open + 2 + close;
        out.push((open, close + 2, &s[open + 2..close]));
        at = close + 2;
    }
    out
}

/// Every reference of a JSON value, or the messages of the malformed ones.
pub fn references(value: &serde_json::Value, out: &mut Vec<Result<Reference, String>>) {
    match value {
        serde_json::Value::String(s) => {
            out.extend(spans(s).into_iter().map(|(_, _, inner)| parse(inner)))
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.extend(spans(k).into_iter().map(|(_, _, inner)| parse(inner)));
                references(v, out);
            }
        }
        _ => {}
    }
}

/// The values references resolve to.
pub struct Values<'a> {
    /// Parameters, typed.
    pub parameters: &'a BTreeMap<String, serde_json::Value>,
    /// Each finished step's outputs.
    pub steps: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// `run.*`.
    pub run: &'a BTreeMap<String, String>,
}

impl Values<'_> {
    fn lookup(&self, r: &Reference) -> Result<serde_json::Value, String> {
        match r {
            Reference::Parameter(p) => self
                .parameters
                .get(p)
                .cloned()
                .ok_or_else(|| format!("parameters.{p} is not a parameter of the pipeline")),
            Reference::Run(f) => self
                .run
                .get(f)
                .map(|v| serde_json::Value::String(v.clone()))
                .ok_or_else(|| format!("run.{f} is not set")),
            Reference::Step(step, output) => {
                let outputs = self
                    .steps
                    .get(step)
                    .ok_or_else(|| format!("steps.{step} has not run"))?;
                let value = outputs.get(output).ok_or_else(|| {
                    let has: Vec<&str> = outputs.keys().map(String::as_str).collect();
                    format!(
                        "steps.{step}.{output} is not an output of step {step} (it has: {})",
                        if has.is_empty() {
                            "none".into()
                        } else {
                            has.join(", ")
                        }
                    )
                })?;
                if output.starts_with("metrics[")
                    && let Some(n) = value
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                {
                    return Ok(serde_json::Value::Number(n));
                }
                Ok(serde_json::Value::String(value.clone()))
            }
        }
    }

    /// `value` with every reference replaced.
    pub fn resolve(&self, value: &serde_json::Value) -> Result<serde_json::Value, String> {
        Ok(match value {
            serde_json::Value::String(s) => self.resolve_str(s)?,
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    let key = match self.resolve_str(k)? {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, self.resolve(v)?);
                }
                serde_json::Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn resolve_str(&self, s: &str) -> Result<serde_json::Value, String> {
        let found = spans(s);
        if found.is_empty() {
            return Ok(serde_json::Value::String(s.into()));
        }
        if let [(0, end, inner)] = found.as_slice()
            && *end == s.len()
        {
            return self.lookup(&parse(inner)?);
        }
        let mut out = String::new();
        let mut at = 0;
        for (start, end, inner) in found {
            out.push_str(&s[at..start]);
            match self.lookup(&parse(inner)?)? {
                serde_json::Value::String(v) => out.push_str(&v),
                other => out.push_str(&other.to_string()),
            }
            at = end;
        }
        out.push_str(&s[at..]);
        Ok(serde_json::Value::String(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            parse(" parameters.lr ").unwrap(),
            Reference::Parameter("lr".into())
        );
        assert_eq!(
            parse("steps.train.metrics[\"validation:accuracy\"]").unwrap(),
            Reference::Step("train".into(), "metrics['validation:accuracy']".into())
        );
        assert_eq!(
            parse("steps.prep.outputs.train").unwrap(),
            Reference::Step("prep".into(), "outputs.train".into())
        );
        assert_eq!(parse("run.name").unwrap(), Reference::Run("name".into()));
        assert!(
            parse("steps.train.modelUri")
                .unwrap_err()
                .contains("no output")
        );
        assert!(parse("params.x").unwrap_err().contains("starts with"));
        let mut found = Vec::new();
        references(
            &json!({"a": ["{{ parameters.x }}-{{steps.s.url}}"], "b": 3, "{{run.name}}": "y"}),
            &mut found,
        );
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn a_whole_reference_keeps_its_type_and_embedded_ones_become_text() {
        let parameters = BTreeMap::from([
            ("replicas".to_string(), json!(2)),
            ("lr".to_string(), json!(0.1)),
        ]);
        let steps = BTreeMap::from([(
            "train".to_string(),
            BTreeMap::from([
                (
                    "modelArtifactUri".to_string(),
                    "s3://b/m.tar.gz".to_string(),
                ),
                (
                    "metrics['validation:accuracy']".to_string(),
                    "0.97".to_string(),
                ),
            ]),
        )]);
        let run = BTreeMap::from([("name".to_string(), "r1".to_string())]);
        let v = Values {
            parameters: &parameters,
            steps: &steps,
            run: &run,
        };
        let out = v
            .resolve(&json!({
                "replicas": "{{ parameters.replicas }}",
                "lr": "{{parameters.lr}}",
                "uri": "{{ steps.train.modelArtifactUri }}",
                "acc": "{{ steps.train.metrics['validation:accuracy'] }}",
                "path": "s3://b/{{run.name}}/x-{{ parameters.replicas }}/",
                "plain": 4,
            }))
            .unwrap();
        assert_eq!(
            out,
            json!({"replicas": 2, "lr": 0.1, "uri": "s3://b/m.tar.gz", "acc": 0.97,
                   "path": "s3://b/r1/x-2/", "plain": 4})
        );
        let e = v.resolve(&json!("{{ steps.train.url }}")).unwrap_err();
        assert!(
            e.contains("it has: metrics['validation:accuracy'], modelArtifactUri"),
            "{e}"
        );
        assert!(
            v.resolve(&json!("{{ steps.other.url }}"))
                .unwrap_err()
                .contains("has not run")
        );
        assert!(v.resolve(&json!("{{ parameters.nope }}")).is_err());
    }
}
