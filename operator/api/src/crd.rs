//! The CustomResourceDefinitions generated from the types, and their YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Endpoint, ModelPackage, Pipeline, TrainingJob, TuningJob};

/// Every Kiln CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        TrainingJob::crd(),
        TuningJob::crd(),
        Endpoint::crd(),
        Pipeline::crd(),
        ModelPackage::crd(),
    ]
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
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop.get("description").is_none()
                    && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    out.push(here.clone());
                }
                undescribed(prop, &here, out);
            }
        }
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), out);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            undescribed(extra, &format!("{path}{{}}"), out);
        }
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
}
