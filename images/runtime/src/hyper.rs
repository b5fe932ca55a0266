//! Hyperparameters: each algorithm declares the names it knows with a type, a
//! range and a default; the strings of `hyperparameters.json` are checked
//! against that list before any data is read, so a typo fails the job at once
//! with a message naming the parameter.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The type and the allowed values of one hyperparameter.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An integer in `[min, max]`.
    Int { min: i64, max: i64 },
    /// A finite float in `[min, max]`.
    Float { min: f64, max: f64 },
    /// `true` or `false`.
    Bool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// A comma-separated list of positive integers, e.g. `64,32`.
    IntList,
}

/// One hyperparameter an algorithm accepts.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as a string; `None` makes the parameter required.
    pub default: Option<&'static str>,
    /// What it does, for `kiln-runtime describe`.
    pub doc: &'static str,
}

impl Spec {
    /// Shorthand used by the algorithms' tables.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        Spec {
            name,
            kind,
            default: Some(default),
            doc,
        }
    }

    /// A parameter without a default.
    pub const fn required(name: &'static str, kind: Kind, doc: &'static str) -> Self {
        Spec {
            name,
            kind,
            default: None,
            doc,
        }
    }

    fn describe_kind(&self) -> String {
        match self.kind {
            Kind::Int { min, max } => format!("integer in [{min}, {max}]"),
            Kind::Float { min, max } => format!("number in [{min}, {max}]"),
            Kind::Bool => "true or false".to_string(),
            Kind::Choice(words) => format!("one of {}", words.join(", ")),
            Kind::IntList => "comma-separated positive integers".to_string(),
        }
    }

    fn check(&self, value: &str) -> Result<()> {
        let bad = |why: String| Err(Error::hyper(self.name, why));
        match self.kind {
            Kind::Int { min, max } => match value.trim().parse::<i64>() {
                Ok(v) if v >= min && v <= max => Ok(()),
                Ok(v) => bad(format!(
                    "{v} is out of range: expected an {}",
                    self.describe_kind()
                )),
                Err(_) => bad(format!(
                    "{value:?} is not an integer: expected an {}",
                    self.describe_kind()
                )),
            },
            Kind::Float { min, max } => match value.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= min && v <= max => Ok(()),
                Ok(v) => bad(format!(
                    "{v} is out of range: expected a {}",
                    self.describe_kind()
                )),
                Err(_) => bad(format!(
                    "{value:?} is not a number: expected a {}",
                    self.describe_kind()
                )),
            },
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => bad(format!(
                    "{value:?} is not a boolean: expected true or false"
                )),
            },
            Kind::Choice(words) => {
                if words.contains(&value.trim()) {
                    Ok(())
                } else {
                    bad(format!(
                        "{value:?} is not allowed: expected {}",
                        self.describe_kind()
                    ))
                }
            }
            Kind::IntList => {
                let ok = !value.trim().is_empty()
                    && value
                        .split(',')
                        .all(|p| p.trim().parse::<u32>().is_ok_and(|v| v > 0));
                if ok {
                    Ok(())
                } else {
                    bad(format!("{value:?}: expected {}", self.describe_kind()))
                }
            }
        }
    }
}

/// Validated hyperparameters: every known name has a value (given or default).
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

/// Names the trainer itself consumes; allowed for every algorithm.
const RESERVED: &[&str] = &["algorithm"];

impl Params {
    /// Checks `raw` against `specs`: unknown names, unparsable or out-of-range
    /// values and missing required ones are errors.
    pub fn parse(specs: &[Spec], raw: &BTreeMap<String, String>) -> Result<Self> {
        for name in raw.keys() {
            if !RESERVED.contains(&name.as_str()) && !specs.iter().any(|s| s.name == name) {
                let mut known: Vec<_> = specs.iter().map(|s| s.name).collect();
                known.sort_unstable();
                return Err(Error::hyper(
                    name,
                    format!("unknown name; this algorithm accepts {}", known.join(", ")),
                ));
            }
        }
        let mut values = BTreeMap::new();
        for spec in specs {
            let value = match (raw.get(spec.name), spec.default) {
                (Some(v), _) => v.trim().to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(Error::hyper(
                        spec.name,
                        format!("required but not set: expected {}", spec.describe_kind()),
                    ));
                }
            };
            spec.check(&value)?;
            values.insert(spec.name.to_string(), value);
        }
        Ok(Params { values })
    }

    fn get(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("hyperparameter {name} is not in the algorithm's table"))
    }

    /// An integer parameter (validated, so this cannot fail).
    pub fn int(&self, name: &str) -> i64 {
        self.get(name).parse().expect("validated integer")
    }

    /// A non-negative integer parameter as `usize`.
    pub fn usize(&self, name: &str) -> usize {
        self.int(name).max(0) as usize
    }

    /// A float parameter.
    pub fn float(&self, name: &str) -> f64 {
        self.get(name).parse().expect("validated float")
    }

    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).eq_ignore_ascii_case("true")
    }

    /// A choice or free-form parameter.
    pub fn str(&self, name: &str) -> &str {
        self.get(name)
    }

    /// A list-of-integers parameter.
    pub fn int_list(&self, name: &str) -> Vec<i64> {
        self.get(name)
            .split(',')
            .map(|p| p.trim().parse().expect("validated list"))
            .collect()
    }

    /// Every value, for the model's metadata.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.values
    }
}

/// A Markdown table of `specs`, for `kiln-runtime describe` and the docs.
pub fn markdown_table(specs: &[Spec]) -> String {
    let mut out = String::from("| name | type | default | meaning |\n|---|---|---|---|\n");
    for s in specs {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            s.describe_kind(),
            s.default
                .map(|d| format!("`{d}`"))
                .unwrap_or_else(|| "required".into()),
            s.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec::new("epochs", Kind::Int { min: 1, max: 1000 }, "10", "passes"),
        Spec::new(
            "learning_rate",
            Kind::Float {
                min: 0.0,
                max: 10.0,
            },
            "0.1",
            "step",
        ),
        Spec::new(
            "optimizer",
            Kind::Choice(&["sgd", "adam"]),
            "adam",
            "update rule",
        ),
        Spec::required("k", Kind::Int { min: 1, max: 100 }, "clusters"),
        Spec::new("layers", Kind::IntList, "8,4", "widths"),
    ];

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        let p = Params::parse(SPECS, &raw(&[("k", "3"), ("epochs", " 5 ")])).unwrap();
        assert_eq!(p.int("k"), 3);
        assert_eq!(p.int("epochs"), 5);
        assert_eq!(p.float("learning_rate"), 0.1);
        assert_eq!(p.str("optimizer"), "adam");
        assert_eq!(p.int_list("layers"), vec![8, 4]);
    }

    #[test]
    fn errors_name_the_parameter_and_the_problem() {
        let cases = [
            (
                raw(&[("k", "3"), ("epoch", "5")]),
                "hyperparameter epoch: unknown name",
            ),
            (
                raw(&[("k", "three")]),
                "hyperparameter k: \"three\" is not an integer",
            ),
            (raw(&[("k", "0")]), "hyperparameter k: 0 is out of range"),
            (
                raw(&[("k", "2"), ("learning_rate", "nan")]),
                "learning_rate: NaN is out of range",
            ),
            (
                raw(&[("k", "2"), ("optimizer", "lbfgs")]),
                "\"lbfgs\" is not allowed: expected one of sgd, adam",
            ),
            (
                raw(&[("k", "2"), ("layers", "8,-1")]),
                "hyperparameter layers",
            ),
            (raw(&[]), "hyperparameter k: required but not set"),
        ];
        for (input, want) in cases {
            let err = Params::parse(SPECS, &input).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{err} does not contain {want}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }
}
