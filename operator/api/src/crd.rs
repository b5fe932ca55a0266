//! The CustomResourceDefinitions generated from the types, and their YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{
    Endpoint, ModelPackage, ModelPackageGroup, Pipeline, PipelineRun, TrainingJob, TuningJob,
};

/// Every Kiln CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        TrainingJob::crd(),
        TuningJob::crd(),
        Endpoint::crd(),
        Pipeline::crd(),
        PipelineRun::crd(),
        ModelPackage::crd(),
        ModelPackageGroup::crd(),
    ]
}

/// Words a YAML 1.1 reader (kubectl, Helm, Argo CD) takes for booleans: a
/// field or enum value spelled so would not survive `kubectl apply`.
pub const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

/// The most a CRD may weigh: client-side `kubectl apply` and Argo CD keep
/// the whole object in an annotation, and all annotations together must
/// stay under 256 KiB.
pub const MAX_CRD_BYTES: usize = 262_144;

/// Calls `visit(path, name, node)` for every property of a schema, at any
/// depth (through `items` and `additionalProperties`), after the schema itself
/// (whose name is `None`).
pub fn visit_schema(
    schema: &serde_json::Value,
    path: &str,
    name: Option<&str>,
    visit: &mut dyn FnMut(&str, Option<&str>, &serde_json::Value),
) {
    use serde_json::Value;
    visit(path, name, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            visit_schema(prop, &format!("{path}.{name}"), Some(name), visit);
        }
    }
    if let Some(items) = schema.get("items") {
        visit_schema(items, &format!("{path}[]"), None, visit);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        visit_schema(extra, &format!("{path}{{}}"), None, visit);
    }
}

/// The field names and enum values of a schema that a YAML 1.1 reader
/// would read as booleans, with their paths.
pub fn yaml11_boolean_words(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    visit_schema(schema, path, None, &mut |here, name, node| {
        if name.is_some_and(|n| YAML11_BOOLEANS.contains(&n)) {
            out.push(format!("field {here}"));
        }
        let values = node.get("enum").and_then(serde_json::Value::as_array);
        for v in values
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
        {
            if YAML11_BOOLEANS.contains(&v) {
                out.push(format!("enum value {v:?} of {here}"));
            }
        }
    });
}

/// The file name a CRD is written to: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD as the YAML document committed under `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated from operator/api by `make crds`. Do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Walks a schema and reports every property without a description.
    fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
        visit_schema(schema, path, None, &mut |here, name, node| {
            if let Some(name) = name
                && node.get("description").is_none()
                && !matches!(name, "apiVersion" | "kind" | "metadata")
            {
                out.push(here.to_string());
            }
        });
    }

    #[test]
    fn every_field_has_a_description() {
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut missing = vec![];
            undescribed(&schema["openAPIV3Schema"], "", &mut missing);
            assert!(
                missing.is_empty(),
                "{}: fields without description: {missing:?}",
                crd.spec.names.kind
            );
        }
    }

    #[test]
    fn every_kind_has_status_category_and_short_names() {
        for crd in all() {
            let names = &crd.spec.names;
            assert_eq!(
                names.categories.as_deref(),
                Some(&["kiln".to_string()][..]),
                "{}",
                names.kind
            );
            assert!(
                !names.short_names.as_deref().unwrap_or_default().is_empty(),
                "{}",
                names.kind
            );
            let version = &crd.spec.versions[0];
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            let columns: Vec<_> = version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert!(columns.contains(&"Age"), "{}: {columns:?}", names.kind);
            assert!(crd.spec.scope == "Namespaced");
        }
    }

    #[test]
    fn endpoint_short_names_do_not_collide_with_core_endpoints() {
        let crd = Endpoint::crd();
        let short = crd.spec.names.short_names.unwrap();
        assert!(
            !short.iter().any(|s| s == "ep" || s == "endpoints"),
            "{short:?}"
        );
    }

    #[test]
    fn yaml_carries_the_generated_header() {
        let yaml = to_yaml(&TrainingJob::crd()).unwrap();
        assert!(yaml.starts_with("# Generated"));
        assert!(yaml.contains("x-kubernetes-validations"));
    }

    #[test]
    fn no_field_or_enum_value_is_a_yaml11_boolean() {
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut found = vec![];
            yaml11_boolean_words(&schema["openAPIV3Schema"], "", &mut found);
            assert!(
                found.is_empty(),
                "{}: YAML 1.1 readers take these for booleans: {found:?}",
                crd.spec.names.kind
            );
        }
    }

    #[test]
    fn the_checker_finds_yaml11_booleans() {
        let schema = serde_json::json!({
            "properties": {
                "retry": {"properties": {"on": {"type": "array"}}},
                "mode": {"enum": ["Fast", "off"]},
            }
        });
        let mut found = vec![];
        yaml11_boolean_words(&schema, "", &mut found);
        assert_eq!(
            found,
            vec!["enum value \"off\" of .mode", "field .retry.on"]
        );
    }

    #[test]
    fn every_crd_fits_an_annotation() {
        for crd in all() {
            let yaml = to_yaml(&crd).unwrap();
            let json = serde_json::to_string(&crd).unwrap();
            println!(
                "{}: {} bytes of YAML, {} of JSON",
                crd.metadata.name.as_deref().unwrap_or_default(),
                yaml.len(),
                json.len()
            );
            assert!(
                yaml.len() < MAX_CRD_BYTES && json.len() < MAX_CRD_BYTES,
                "{}: {} bytes of YAML, over the {MAX_CRD_BYTES} bytes kubectl apply and Argo CD can keep",
                crd.spec.names.kind,
                yaml.len()
            );
        }
    }
}
