//! A pipeline's steps as a graph: layers by longest dependency path, each
//! step with its kind, state and child, and the edges; printed as text or
//! as Graphviz DOT.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use kiln_api::pipeline::PipelineSpec;
use kiln_api::pipeline_run::{PipelineRunStatus, StepStatus};

/// One step as the graph shows it.
#[derive(Debug, PartialEq)]
pub struct Node {
    /// The step's name.
    pub name: String,
    /// `training`, `tuning`, `registerModel`, `deploy`, `condition`, `fail` or `processing`.
    pub kind: &'static str,
    /// Its layer: 1 for steps without prerequisites, else one more than the deepest prerequisite.
    pub layer: usize,
    /// Its state in the run (`-` without a run).
    pub state: String,
    /// What it made or decided: the child, the branch taken, the cache hit, the message.
    pub detail: String,
}

/// An edge: (prerequisite, step, label: `if`, `else` or empty).
pub type Edge = (String, String, String);

/// The graph's nodes (in layer, then pipeline order) and edges
/// (prerequisite, step, label), or the pipeline check's message.
pub fn build(
    spec: &PipelineSpec,
    run: Option<&PipelineRunStatus>,
) -> Result<(Vec<Node>, Vec<Edge>), String> {
    let deps = kiln_api::validate::step_dependencies(spec).map_err(|e| e.to_string())?;
    kiln_api::validate::topological_order(&deps).map_err(|e| e.to_string())?;
    let mut gates: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
    for s in &spec.steps {
        if let Some(c) = &s.condition {
            for g in &c.if_steps {
                gates.insert(g, (&s.name, true));
            }
            for g in &c.else_steps {
                gates.insert(g, (&s.name, false));
            }
        }
    }
    fn layer(
        name: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(l) = memo.get(name) {
            return *l;
        }
        let l = 1 + deps
            .get(name)
            .into_iter()
            .flatten()
            .map(|d| layer(d, deps, memo))
            .max()
            .unwrap_or(0);
        memo.insert(name.into(), l);
        l
    }
    let mut memo = BTreeMap::new();
    let status_of = |name: &str| -> Option<&StepStatus> {
        run.and_then(|r| r.steps.iter().find(|s| s.name == name))
    };
    let mut nodes: Vec<Node> = spec
        .steps
        .iter()
        .map(|s| {
            let st = status_of(&s.name);
            let state = st
                .and_then(|st| st.state)
                .map(|x| format!("{x:?}"))
                .unwrap_or_else(|| {
                    if run.is_some() {
                        "Pending".into()
                    } else {
                        "-".into()
                    }
                });
            let mut detail = Vec::new();
            if let Some(st) = st {
                if let Some(c) = &st.child {
                    detail.push(format!("{} {}", c.kind, c.name));
                }
                if let Some(r) = st.condition_result {
                    detail.push(format!("is {r}"));
                }
                if let Some(hit) = &st.cache_hit_run {
                    detail.push(format!("cached from run {hit}"));
                }
                if st.attempts > 1 {
                    detail.push(format!("{} attempts", st.attempts));
                }
                if let Some(m) = &st.message {
                    detail.push(m.chars().take(120).collect());
                }
            }
            Node {
                name: s.name.clone(),
                kind: s.kind(),
                layer: layer(&s.name, &deps, &mut memo),
                state,
                detail: detail.join("; "),
            }
        })
        .collect();
    nodes.sort_by_key(|n| n.layer);
    let mut edges = Vec::new();
    for s in &spec.steps {
        for d in deps.get(&s.name).into_iter().flatten() {
            let label = match gates.get(s.name.as_str()) {
                Some((cond, branch)) if cond == d => {
                    if *branch { "if" } else { "else" }.to_string()
                }
                _ => String::new(),
            };
            edges.push((d.clone(), s.name.clone(), label));
        }
    }
    Ok((nodes, edges))
}

/// The graph as text: one line per step, by layer, then the edges.
pub fn text(title: &str, nodes: &[Node], edges: &[Edge]) -> String {
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{title}\n");
    for n in nodes {
        let _ = writeln!(
            out,
            "  [{}] {:<width$}  {:<13}  {:<10}  {}",
            n.layer, n.name, n.kind, n.state, n.detail
        );
    }
    out.push_str("edges:\n");
    for (from, to, label) in edges {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        let _ = writeln!(out, "  {from} -> {to}{label}");
    }
    out
}

fn color(state: &str) -> &'static str {
    match state {
        "Succeeded" => "palegreen",
        "Failed" => "salmon",
        "Executing" => "lightskyblue",
        "Skipped" => "lightgrey",
        _ => "white",
    }
}

/// The graph as Graphviz DOT, nodes filled by state.
pub fn dot(title: &str, nodes: &[Node], edges: &[Edge]) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
        q(title)
    );
    for n in nodes {
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{} · {}\", fillcolor={}];",
            q(&n.name),
            q(&n.name),
            n.kind,
            q(&n.state),
            color(&n.state)
        );
    }
    for (from, to, label) in edges {
        if label.is_empty() {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", q(from), q(to));
        } else {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{label}\"];",
                q(from),
                q(to)
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PipelineSpec {
        serde_json::from_value(serde_json::json!({
            "steps": [
                {"name": "train", "training": {"spec": {}}},
                {"name": "check", "condition": {"expression": "steps.train.metrics['a'] > 0.5",
                                                 "ifSteps": ["register"], "elseSteps": ["reject"]}},
                {"name": "register", "registerModel": {"groupName": "g", "modelFromStep": "train"}},
                {"name": "deploy", "deploy": {"endpointName": "e",
                    "spec": {"m": "{{ steps.register.modelPackageName }}"}}},
                {"name": "reject", "fail": {"message": "no"}},
            ]
        }))
        .unwrap()
    }

    #[test]
    fn layers_states_and_branches() {
        let run: PipelineRunStatus = serde_json::from_value(serde_json::json!({
            "steps": [
                {"name": "train", "state": "Succeeded", "attempts": 1,
                 "child": {"apiVersion": "kiln.dev/v1alpha1", "kind": "TrainingJob", "name": "r-train"}},
                {"name": "check", "state": "Succeeded", "conditionResult": true},
                {"name": "register", "state": "Executing", "attempts": 1},
                {"name": "reject", "state": "Skipped", "message": "skipped: condition check was true"},
            ]
        }))
        .unwrap();
        let (nodes, edges) = build(&spec(), Some(&run)).unwrap();
        let layers: Vec<(&str, usize, &str)> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.layer, n.state.as_str()))
            .collect();
        assert_eq!(
            layers,
            [
                ("train", 1, "Succeeded"),
                ("check", 2, "Succeeded"),
                ("register", 3, "Executing"),
                ("reject", 3, "Skipped"),
                ("deploy", 4, "Pending"),
            ]
        );
        assert_eq!(nodes[0].detail, "TrainingJob r-train");
        assert_eq!(nodes[1].detail, "is true");
        assert!(edges.contains(&("check".into(), "register".into(), "if".into())));
        assert!(edges.contains(&("check".into(), "reject".into(), "else".into())));
        assert!(
            edges.contains(&("train".into(), "check".into(), String::new())),
            "from the expression"
        );
        let t = text("PIPELINE p  RUN r", &nodes, &edges);
        assert!(t.contains("[4] deploy"), "{t}");
        assert!(t.contains("check -> reject (else)"), "{t}");
        let d = dot("p", &nodes, &edges);
        assert!(d.starts_with("digraph \"p\" {"), "{d}");
        assert!(
            d.contains("\"reject\" [label=\"reject\\nfail · Skipped\", fillcolor=lightgrey];"),
            "{d}"
        );
        assert!(
            d.contains("\"check\" -> \"register\" [label=\"if\"];"),
            "{d}"
        );
    }

    #[test]
    fn a_cycle_is_named() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "steps": [
                {"name": "a", "dependsOn": ["b"], "fail": {"message": "x"}},
                {"name": "b", "dependsOn": ["a"], "fail": {"message": "y"}},
            ]
        }))
        .unwrap();
        assert!(build(&spec, None).unwrap_err().contains("cycle"));
    }
}
