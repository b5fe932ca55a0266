//! The pure half of the PipelineRun controller: parameters typed, the
//! steps' dependency graph (explicit `dependsOn`, references, condition
//! branches, `registerModel.modelFromStep`) checked for unknown names and
//! cycles, and what to do next given each step's state.

use std::collections::{BTreeMap, BTreeSet};

use kiln_api::pipeline::{ParameterType, PipelineSpec, Step};
use kiln_api::pipeline_run::{ParameterValue, StepState, StepStatus};

use kiln_api::validate;

use super::template;

/// The templated body of a step, as JSON: what its references are read from.
pub fn body_of(step: &Step) -> serde_json::Value {
    let mut v = serde_json::to_value(step).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        for k in ["name", "dependsOn", "cache", "retry"] {
            map.remove(k);
        }
        // A condition's expression is CEL, not a template.
        if let Some(c) = map.get_mut("condition").and_then(|c| c.as_object_mut()) {
            c.remove("expression");
        }
    }
    v
}

/// The run's parameter values, typed: the run's, else the defaults
/// (merged and checked by [`kiln_api::validate::run_parameters`]).
pub fn parameters(
    spec: &PipelineSpec,
    given: &[ParameterValue],
) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let values = validate::run_parameters(spec, given).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for v in values {
        let type_ = spec
            .parameters
            .iter()
            .find(|p| p.name == v.name)
            .map(|p| p.type_)
            .unwrap_or_default();
        let text = v.value.trim();
        let typed = match type_ {
            ParameterType::String => Some(serde_json::Value::String(v.value.clone())),
            ParameterType::Integer => text.parse::<i64>().ok().map(serde_json::Value::from),
            ParameterType::Float => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number),
            ParameterType::Boolean => text.parse::<bool>().ok().map(serde_json::Value::Bool),
        };
        let typed = typed
            .ok_or_else(|| format!("parameter {}: {:?} is not a {type_:?}", v.name, v.value))?;
        out.insert(v.name, typed);
    }
    Ok(out)
}

/// The steps' dependencies and condition gates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Each step's prerequisites.
    pub deps: BTreeMap<String, BTreeSet<String>>,
    /// Steps a condition gates: step -> (condition step, the branch it runs on).
    pub gates: BTreeMap<String, (String, bool)>,
    /// The steps in the pipeline's order.
    pub order: Vec<String>,
}

/// The graph of `spec`, or a message naming the duplicate, the unknown
/// name, the malformed reference, the doubly gated step or the cycle: the
/// API crate's pipeline check, and every reference parsed here.
pub fn graph(spec: &PipelineSpec) -> Result<Graph, String> {
    let mut seen = BTreeSet::new();
    if let Some(dup) = spec.steps.iter().find(|s| !seen.insert(s.name.as_str())) {
        return Err(format!("two steps are named {}", dup.name));
    }
    for step in &spec.steps {
        let mut refs = Vec::new();
        template::references(&body_of(step), &mut refs);
        for r in refs {
            r.map_err(|e| format!("step {}: {e}", step.name))?;
        }
    }
    validate::check_pipeline(spec).map_err(|e| e.to_string())?;
    let mut g = Graph {
        deps: validate::step_dependencies(spec).map_err(|e| e.to_string())?,
        order: spec.steps.iter().map(|s| s.name.clone()).collect(),
        ..Graph::default()
    };
    for s in &g.order {
        g.deps.entry(s.clone()).or_default();
    }
    for step in &spec.steps {
        let Some(c) = &step.condition else { continue };
        for (list, branch) in [(&c.if_steps, true), (&c.else_steps, false)] {
            for s in list {
                g.gates.insert(s.clone(), (step.name.clone(), branch));
            }
        }
    }
    Ok(g)
}

/// What to do with the steps that have not started.
#[derive(Debug, Default, PartialEq)]
pub struct Next {
    /// Steps whose prerequisites all succeeded, in the pipeline's order.
    pub ready: Vec<String>,
    /// Steps that will never run, with why.
    pub skip: Vec<(String, String)>,
}

/// The next steps, from the states so far.
pub fn next(g: &Graph, steps: &[StepStatus]) -> Next {
    let state = |name: &str| steps.iter().find(|s| s.name == name).and_then(|s| s.state);
    let result = |name: &str| {
        steps
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.condition_result)
    };
    let mut out = Next::default();
    // Skips propagate: iterate until nothing changes.
    let mut skipped: BTreeSet<String> = g
        .order
        .iter()
        .filter(|s| matches!(state(s), Some(StepState::Skipped | StepState::Failed)))
        .cloned()
        .collect();
    loop {
        let mut changed = false;
        for s in &g.order {
            if state(s).is_some_and(|st| st != StepState::Pending) || skipped.contains(s) {
                continue;
            }
            let why = if let Some((cond, branch)) = g.gates.get(s)
                && let Some(taken) = result(cond)
                && taken != *branch
            {
                Some(format!("condition {cond} was {taken}"))
            } else {
                g.deps[s]
                    .iter()
                    .find(|d| skipped.contains(*d))
                    .map(|d| format!("step {d} did not succeed"))
            };
            if let Some(why) = why {
                skipped.insert(s.clone());
                out.skip.push((s.clone(), why));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for s in &g.order {
        if state(s).is_some_and(|st| st != StepState::Pending) || skipped.contains(s) {
            continue;
        }
        if g.deps[s]
            .iter()
            .all(|d| state(d) == Some(StepState::Succeeded))
        {
            out.ready.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
