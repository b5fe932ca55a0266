//! Every example manifest parses into its type without losing a field, and
//! passes the CEL rules of its CRD.

use kiln_api::{Endpoint, ModelPackage, Pipeline, PipelineRun, TrainingJob, TuningJob};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn example(name: &str) -> String {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Lists the paths present in `written` but absent or different in `typed`:
/// a field the types do not know would be dropped silently.
fn lost_fields(written: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (k, v) in w {
                match t.get(k) {
                    Some(tv) => lost_fields(v, tv, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(w), Value::Array(t)) if w.len() == t.len() => {
            for (i, (wv, tv)) in w.iter().zip(t).enumerate() {
                lost_fields(wv, tv, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(w), Value::Number(t)) if w.as_f64() == t.as_f64() => {}
        (w, t) if w == t => {}
        _ => out.push(format!("{path} ({written} became {typed})")),
    }
}

/// Parses the example, checks nothing is lost, checks a second round trip is
/// stable, and returns the typed object.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let text = example(name);
    let written: Value = serde_yaml::from_str(&text).unwrap();
    let typed: T = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let typed_value = serde_json::to_value(&typed).unwrap();
    let mut lost = vec![];
    lost_fields(&written, &typed_value, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{name}: fields lost in the round trip: {lost:?}"
    );
    let yaml = serde_yaml::to_string(&typed).unwrap();
    let again: T = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        typed_value,
        serde_json::to_value(&again).unwrap(),
        "{name}: second round trip differs"
    );
    typed
}

#[test]
fn training_job_builtin() {
    let job: TrainingJob = round_trip("trainingjob-builtin.yaml");
    job.validate_cel().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.spec.world_size(), 2);
    assert_eq!(
        job.spec.checkpoint.as_ref().unwrap().local_path,
        "/opt/ml/checkpoints"
    );
}

#[test]
fn training_job_pytorch() {
    let job: TrainingJob = round_trip("trainingjob-pytorch.yaml");
    job.validate_cel().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.spec.world_size(), 8);
}

#[test]
fn tuning_job() {
    let job: TuningJob = round_trip("tuningjob.yaml");
    job.validate_cel().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn endpoint() {
    let endpoint: Endpoint = round_trip("endpoint.yaml");
    endpoint.validate_cel().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn model_package() {
    let package: ModelPackage = round_trip("modelpackage.yaml");
    package.validate_cel().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn pipeline() {
    let pipeline: Pipeline = round_trip("pipeline.yaml");
    pipeline.validate_cel().unwrap_or_else(|e| panic!("{e}"));
    let order = kiln_api::validate::check_pipeline(&pipeline.spec).unwrap();
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("prep") < pos("train"), "train reads prep's outputs");
    assert!(pos("train") < pos("good-enough"));
    assert!(pos("good-enough") < pos("register"));
    assert!(pos("register") < pos("deploy"));
}

#[test]
fn pipeline_run() {
    let run: PipelineRun = round_trip("pipelinerun.yaml");
    run.validate_cel().unwrap_or_else(|e| panic!("{e}"));
    let pipeline: Pipeline = round_trip("pipeline.yaml");
    let values = kiln_api::validate::run_parameters(&pipeline.spec, &run.spec.parameters).unwrap();
    let names: Vec<_> = values
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("learning_rate", "0.1"),
            ("min_accuracy", "0.9"),
            ("replicas", "2")
        ]
    );
}

/// Every mapping key in a YAML document, with its path.
fn keys(value: &serde_yaml::Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap_or_default().to_string();
                let here = format!("{path}.{k}");
                out.push((here.clone(), k));
                keys(v, &here, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                keys(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// kubectl, Helm and Argo CD read YAML 1.1, where `on`, `off`, `yes` and
/// `no` are booleans: no example may use them as keys.
#[test]
fn no_example_key_is_a_yaml11_boolean() {
    let dir = format!("{}/examples", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let value: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut found = vec![];
        keys(&value, "", &mut found);
        let bad: Vec<_> = found
            .iter()
            .filter(|(_, k)| kiln_api::crd::YAML11_BOOLEANS.contains(&k.as_str()))
            .map(|(p, _)| p.clone())
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", path.display());
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} examples found in {dir}");
}

#[test]
fn model_package_group() {
    let group: kiln_api::ModelPackageGroup = round_trip("modelpackagegroup.yaml");
    group.validate_cel().unwrap_or_else(|e| panic!("{e}"));
}

/// The schema under `path` (`spec.inputs[].source`) of a CRD's schema.
fn schema_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut here = root;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        here = here.get("properties")?.get(name)?;
        if items {
            here = here.get("items")?;
        }
    }
    Some(here)
}

#[test]
fn every_field_the_sagemaker_mapping_names_exists() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SAGEMAKER.md"))
        .expect("operator/api/SAGEMAKER.md");
    let schemas: std::collections::BTreeMap<String, Value> = kiln_api::crd::all()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .clone()
                .unwrap()
                .open_api_v3_schema;
            (crd.spec.names.kind, serde_json::to_value(schema).unwrap())
        })
        .collect();
    let (mut section_kind, mut checked, mut missing) = (None::<String>, 0, Vec::new());
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section_kind = heading
                .split_whitespace()
                .next()
                .filter(|w| schemas.contains_key(*w))
                .map(str::to_string);
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(kiln) = cells.get(2).filter(|_| line.starts_with('|')) else {
            continue;
        };
        let quoted: Vec<&str> = kiln.split('`').skip(1).step_by(2).collect();
        let kind = quoted
            .iter()
            .find(|q| schemas.contains_key(**q))
            .map(|k| k.to_string())
            .or(section_kind.clone());
        for path in quoted
            .iter()
            .filter(|q| q.starts_with("spec.") || q.starts_with("status."))
        {
            let path = path.split([':', ' ']).next().unwrap();
            let kind = kind
                .as_deref()
                .unwrap_or_else(|| panic!("no kind for {path} in: {line}"));
            checked += 1;
            if schema_at(&schemas[kind], path).is_none() {
                missing.push(format!("{kind} {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "SAGEMAKER.md names fields the CRDs lack: {missing:#?}"
    );
    assert!(
        checked >= 100,
        "only {checked} Kiln paths found in SAGEMAKER.md"
    );
}
