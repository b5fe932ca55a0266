//! The pure half of the PipelineRun controller: parameters typed, the
//! steps' dependency graph (explicit `dependsOn`, references, condition
//! branches, `registerModel.modelFromStep`) checked for unknown names and
//! cycles, and what to do next given each step's state.

use std::collections::{BTreeMap, BTreeSet};

use kiln_api::pipeline::{ParameterType, PipelineSpec, Step};
use kiln_api::pipeline_run::{ParameterValue, StepState, StepStatus};

use super::template::{self, Reference};

/// The kind of a step, for messages and children.
pub fn kind_of(step: &Step) -> &'static str {
    if step.processing.is_some() {
        "processing"
    } else if step.training.is_some() {
        "training"
    } else if step.tuning.is_some() {
        "tuning"
    } else if step.register_model.is_some() {
        "registerModel"
    } else if step.deploy.is_some() {
        "deploy"
    } else if step.condition.is_some() {
        "condition"
    } else {
        "fail"
    }
}

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

/// The run's parameter values, typed: the run's, else the defaults.
pub fn parameters(
    spec: &PipelineSpec,
    given: &[ParameterValue],
) -> Result<BTreeMap<String, serde_json::Value>, String> {
    for g in given {
        if !spec.parameters.iter().any(|p| p.name == g.name) {
            let known: Vec<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "spec.parameters: {} is not a parameter of the pipeline (it has: {})",
                g.name,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    let mut out = BTreeMap::new();
    for p in &spec.parameters {
        let text = given
            .iter()
            .find(|g| g.name == p.name)
            .map(|g| g.value.clone())
            .or_else(|| p.default.clone())
            .ok_or_else(|| {
                format!(
                    "parameter {} has no default: set it in the PipelineRun's spec.parameters",
                    p.name
                )
            })?;
        let bad = |what: &str| format!("parameter {}: {text:?} is not {what}", p.name);
        let value = match p.type_ {
            ParameterType::String => serde_json::Value::String(text.clone()),
            ParameterType::Integer => text
                .trim()
                .parse::<i64>()
                .map(serde_json::Value::from)
                .map_err(|_| bad("an integer"))?,
            ParameterType::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
                .ok_or_else(|| bad("a finite number"))?,
            ParameterType::Boolean => match text.trim() {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
        };
        out.insert(p.name.clone(), value);
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

/// The graph of `spec`, or a message naming the unknown names, the
/// duplicate, the malformed reference or the cycle.
pub fn graph(spec: &PipelineSpec) -> Result<Graph, String> {
    let names: BTreeSet<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    if names.len() != spec.steps.len() {
        let mut seen = BTreeSet::new();
        let dup = spec
            .steps
            .iter()
            .find(|s| !seen.insert(s.name.as_str()))
            .map(|s| s.name.clone())
            .unwrap_or_default();
        return Err(format!("two steps are named {dup}"));
    }
    let params: BTreeSet<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
    let mut g = Graph {
        order: spec.steps.iter().map(|s| s.name.clone()).collect(),
        ..Graph::default()
    };
    for step in &spec.steps {
        let mut deps: BTreeSet<String> = step
            .depends_on
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut refs = Vec::new();
        template::references(&body_of(step), &mut refs);
        for r in refs {
            match r.map_err(|e| format!("step {}: {e}", step.name))? {
                Reference::Parameter(p) if !params.contains(p.as_str()) => {
                    return Err(format!(
                        "step {}: {{{{ parameters.{p} }}}} names no parameter of the pipeline",
                        step.name
                    ));
                }
                Reference::Step(s, _) => {
                    deps.insert(s);
                }
                _ => {}
            }
        }
        if let Some(c) = &step.condition {
            deps.extend(template::steps_in_expression(&c.expression));
        }
        if let Some(r) = &step.register_model {
            deps.insert(r.model_from_step.clone());
        }
        for d in &deps {
            if !names.contains(d.as_str()) {
                return Err(format!(
                    "step {} depends on {d}, which is not a step of the pipeline",
                    step.name
                ));
            }
            if d == &step.name {
                return Err(format!("step {} depends on itself", step.name));
            }
        }
        g.deps.insert(step.name.clone(), deps);
    }
    for step in &spec.steps {
        let Some(c) = &step.condition else { continue };
        for (list, branch) in [(&c.if_steps, true), (&c.else_steps, false)] {
            for s in list {
                if !names.contains(s.as_str()) {
                    return Err(format!(
                        "condition {}: {s} is not a step of the pipeline",
                        step.name
                    ));
                }
                if let Some((other, _)) = g.gates.get(s)
                    && other != &step.name
                {
                    return Err(format!(
                        "step {s} is gated by two conditions, {other} and {}",
                        step.name
                    ));
                }
                g.gates.insert(s.clone(), (step.name.clone(), branch));
                g.deps
                    .entry(s.clone())
                    .or_default()
                    .insert(step.name.clone());
            }
        }
    }
    if let Some(cycle) = find_cycle(&g) {
        return Err(format!("the steps form a cycle: {}", cycle.join(" -> ")));
    }
    Ok(g)
}

/// A cycle of the graph, first step repeated at the end, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    // 0 unvisited, 1 on the stack, 2 done.
    fn visit(
        g: &Graph,
        at: &str,
        marks: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(at.into(), 1);
        stack.push(at.into());
        for d in g.deps.get(at).into_iter().flatten() {
            match marks.get(d).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[from..].to_vec();
                    cycle.push(d.clone());
                    cycle.reverse();
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(g, d, marks, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        marks.insert(at.into(), 2);
        None
    }
    let mut marks = BTreeMap::new();
    for s in &g.order {
        if marks.get(s).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(g, s, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
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
