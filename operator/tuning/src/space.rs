//! The parameter space: continuous, integer and categorical parameters, their
//! scales, and the encoding every model works in (the unit cube, one
//! dimension per numeric parameter, one-hot dimensions per categorical one).

use std::collections::BTreeMap;

use thiserror::Error;

/// How values are spread over a numeric range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Uniform in the value.
    Linear,
    /// Uniform in log(value); needs min > 0.
    Log,
    /// Uniform in log(1 - value); needs 0 <= min < max < 1.
    ReverseLog,
}

impl Scale {
    /// The API's `Auto`: logarithmic when a positive range spans more than
    /// two orders of magnitude, else linear.
    pub fn auto(min: f64, max: f64) -> Scale {
        if min > 0.0 && max / min > 100.0 {
            Scale::Log
        } else {
            Scale::Linear
        }
    }

    fn forward(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => v.ln(),
            Scale::ReverseLog => -(1.0 - v).ln(),
        }
    }

    fn inverse(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log => t.exp(),
            Scale::ReverseLog => 1.0 - (-t).exp(),
        }
    }
}

/// What values a parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    /// A real in [min, max].
    Continuous { min: f64, max: f64, scale: Scale },
    /// An integer in [min, max], both inclusive.
    Integer { min: i64, max: i64, scale: Scale },
    /// One of a list of values.
    Categorical { values: Vec<String> },
}

/// A named parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The hyperparameter's name.
    pub name: String,
    /// Its values.
    pub domain: Domain,
}

/// A parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Of a continuous parameter.
    Float(f64),
    /// Of an integer parameter.
    Int(i64),
    /// Of a categorical parameter: the index of the value.
    Category(usize),
}

/// A point of the space: one value per parameter, in the space's order.
pub type Config = Vec<Value>;

/// Why a space or a value is invalid.
#[derive(Debug, Error, PartialEq)]
pub enum SpaceError {
    #[error("the space has no parameters")]
    Empty,
    #[error("parameter {0}: min must be below max")]
    EmptyRange(String),
    #[error("parameter {0}: logarithmic scaling needs min > 0")]
    LogNeedsPositive(String),
    #[error("parameter {0}: reverse-logarithmic scaling needs 0 <= min and max < 1")]
    ReverseLogRange(String),
    #[error("parameter {0}: no categorical values")]
    NoValues(String),
    #[error("parameter {0} appears twice")]
    Duplicate(String),
    #[error("parameter {0} is missing")]
    Missing(String),
    #[error("parameter {0}: {1:?} is not a valid value")]
    BadValue(String, String),
}

/// An ordered set of parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    params: Vec<Param>,
}

impl Param {
    /// A continuous parameter.
    pub fn continuous(name: &str, min: f64, max: f64, scale: Scale) -> Self {
        let domain = Domain::Continuous { min, max, scale };
        Self {
            name: name.into(),
            domain,
        }
    }

    /// An integer parameter.
    pub fn integer(name: &str, min: i64, max: i64, scale: Scale) -> Self {
        let domain = Domain::Integer { min, max, scale };
        Self {
            name: name.into(),
            domain,
        }
    }

    /// A categorical parameter.
    pub fn categorical(name: &str, values: &[&str]) -> Self {
        let values = values.iter().map(|v| v.to_string()).collect();
        let domain = Domain::Categorical { values };
        Self {
            name: name.into(),
            domain,
        }
    }

    /// The number of encoded dimensions.
    pub fn dims(&self) -> usize {
        match &self.domain {
            Domain::Categorical { values } => values.len(),
            _ => 1,
        }
    }

    /// The scaled bounds of a numeric parameter. An integer's bounds reach
    /// half a step past each end, so every integer owns an equal-width bin.
    fn scaled_bounds(&self) -> Option<(f64, f64, Scale)> {
        match self.domain {
            Domain::Continuous { min, max, scale } => {
                Some((scale.forward(min), scale.forward(max), scale))
            }
            Domain::Integer { min, max, scale } => Some((
                scale.forward(min as f64 - 0.5),
                scale.forward(max as f64 + 0.5),
                scale,
            )),
            Domain::Categorical { .. } => None,
        }
    }

    /// A numeric value in [0, 1]; `None` for a categorical parameter.
    pub fn to_unit(&self, value: &Value) -> Option<f64> {
        let (lo, hi, scale) = self.scaled_bounds()?;
        let v = match *value {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::Category(_) => return None,
        };
        Some(((scale.forward(v) - lo) / (hi - lo)).clamp(0.0, 1.0))
    }

    /// The numeric value at `u` in [0, 1]: integers rounded, both clamped to
    /// the range. A categorical parameter gets its first value.
    pub fn from_unit(&self, u: f64) -> Value {
        let u = u.clamp(0.0, 1.0);
        match (&self.domain, self.scaled_bounds()) {
            (Domain::Continuous { min, max, .. }, Some((lo, hi, scale))) => {
                Value::Float(scale.inverse(lo + u * (hi - lo)).clamp(*min, *max))
            }
            (Domain::Integer { min, max, .. }, Some((lo, hi, scale))) => {
                let v = scale.inverse(lo + u * (hi - lo)).round() as i64;
                Value::Int(v.clamp(*min, *max))
            }
            _ => Value::Category(0),
        }
    }

    /// The value as the text a trial's hyperparameters carry.
    pub fn format(&self, value: &Value) -> String {
        match (&self.domain, value) {
            (Domain::Categorical { values }, Value::Category(i)) => values[*i].clone(),
            (_, Value::Float(v)) => v.to_string(),
            (_, Value::Int(v)) => v.to_string(),
            (_, Value::Category(i)) => i.to_string(),
        }
    }

    /// The value of a trial's hyperparameter text.
    pub fn parse(&self, text: &str) -> Result<Value, SpaceError> {
        let bad = || SpaceError::BadValue(self.name.clone(), text.into());
        match &self.domain {
            Domain::Continuous { .. } => text.trim().parse().map(Value::Float).map_err(|_| bad()),
            Domain::Integer { .. } => text.trim().parse().map(Value::Int).map_err(|_| bad()),
            Domain::Categorical { values } => values
                .iter()
                .position(|v| v == text)
                .map(Value::Category)
                .ok_or_else(bad),
        }
    }

    fn validate(&self) -> Result<(), SpaceError> {
        let name = || self.name.clone();
        let check = |min: f64, max: f64, scale: Scale| {
            if min.is_nan() || max.is_nan() || min >= max {
                return Err(SpaceError::EmptyRange(name()));
            }
            match scale {
                Scale::Log if min <= 0.0 => Err(SpaceError::LogNeedsPositive(name())),
                Scale::ReverseLog if min < 0.0 || max >= 1.0 => {
                    Err(SpaceError::ReverseLogRange(name()))
                }
                _ => Ok(()),
            }
        };
        match &self.domain {
            Domain::Continuous { min, max, scale } => check(*min, *max, *scale),
            Domain::Integer { min, max, scale } => {
                if *scale == Scale::ReverseLog {
                    return Err(SpaceError::ReverseLogRange(name()));
                }
                check(*min as f64, *max as f64, *scale)
            }
            Domain::Categorical { values } if values.is_empty() => {
                Err(SpaceError::NoValues(name()))
            }
            Domain::Categorical { .. } => Ok(()),
        }
    }
}

impl Space {
    /// A space of these parameters, checked.
    pub fn new(params: Vec<Param>) -> Result<Self, SpaceError> {
        if params.is_empty() {
            return Err(SpaceError::Empty);
        }
        for (i, p) in params.iter().enumerate() {
            p.validate()?;
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(SpaceError::Duplicate(p.name.clone()));
            }
        }
        Ok(Self { params })
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The number of encoded dimensions.
    pub fn dims(&self) -> usize {
        self.params.iter().map(Param::dims).sum()
    }

    /// A point as a vector in the unit cube.
    pub fn encode(&self, config: &Config) -> Vec<f64> {
        let mut x = Vec::with_capacity(self.dims());
        for (p, v) in self.params.iter().zip(config) {
            match (&p.domain, v) {
                (Domain::Categorical { values }, Value::Category(c)) => {
                    x.extend((0..values.len()).map(|i| if i == *c { 1.0 } else { 0.0 }));
                }
                _ => x.push(p.to_unit(v).unwrap_or(0.0)),
            }
        }
        x
    }

    /// The point of a unit-cube vector: numeric values rounded and clamped,
    /// each categorical value the largest of its one-hot coordinates.
    pub fn decode(&self, x: &[f64]) -> Config {
        let mut at = 0;
        let mut config = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let k = p.dims();
            let part = &x[at..at + k];
            config.push(match p.domain {
                Domain::Categorical { .. } => Value::Category(argmax(part)),
                _ => p.from_unit(part[0]),
            });
            at += k;
        }
        config
    }

    /// `x` moved to the encoding of the point it decodes to.
    pub fn snap(&self, x: &[f64]) -> Vec<f64> {
        self.encode(&self.decode(x))
    }

    /// A point as the name-to-text map of a trial's hyperparameters.
    pub fn format(&self, config: &Config) -> BTreeMap<String, String> {
        let pairs = self.params.iter().zip(config);
        pairs.map(|(p, v)| (p.name.clone(), p.format(v))).collect()
    }

    /// The point of a trial's hyperparameters (other names are ignored).
    pub fn parse(&self, hyperparameters: &BTreeMap<String, String>) -> Result<Config, SpaceError> {
        self.params
            .iter()
            .map(|p| match hyperparameters.get(&p.name) {
                Some(text) => p.parse(text),
                None => Err(SpaceError::Missing(p.name.clone())),
            })
            .collect()
    }
}

/// The index of the largest element (the first on ties).
pub(crate) fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::new(vec![
            Param::continuous("lr", 1e-5, 1e-1, Scale::Log),
            Param::continuous("momentum", 0.0, 0.999, Scale::ReverseLog),
            Param::integer("layers", 1, 8, Scale::Linear),
            Param::integer("batch", 16, 1024, Scale::Log),
            Param::categorical("optimizer", &["sgd", "adam", "rmsprop"]),
            Param::continuous("dropout", 0.0, 0.5, Scale::Linear),
        ])
        .unwrap()
    }

    #[test]
    fn encoding_round_trips() {
        let s = space();
        assert_eq!(s.dims(), 8);
        let config = vec![
            Value::Float(3e-4),
            Value::Float(0.9),
            Value::Int(5),
            Value::Int(128),
            Value::Category(2),
            Value::Float(0.25),
        ];
        let x = s.encode(&config);
        assert!(x.iter().all(|u| (0.0..=1.0).contains(u)));
        let back = s.decode(&x);
        for (a, b) in config.iter().zip(&back) {
            match (a, b) {
                (Value::Float(a), Value::Float(b)) => assert!((a - b).abs() < 1e-12 * a.max(1.0)),
                _ => assert_eq!(a, b),
            }
        }
        let text = s.format(&back);
        assert_eq!(text["optimizer"], "rmsprop");
        assert_eq!(s.parse(&text).unwrap(), back);
    }

    #[test]
    fn log_scale_spreads_by_orders_of_magnitude() {
        let p = Param::continuous("lr", 1e-5, 1e-1, Scale::Log);
        assert!((p.to_unit(&Value::Float(1e-3)).unwrap() - 0.5).abs() < 1e-12);
        let Value::Float(mid) = p.from_unit(0.25) else {
            panic!()
        };
        assert!((mid - 1e-4).abs() < 1e-16);
        let r = Param::continuous("m", 0.0, 0.999, Scale::ReverseLog);
        // 1 - v spans 1 .. 1e-3: 0.9 and 0.99 sit a third and two thirds in.
        assert!((r.to_unit(&Value::Float(0.9)).unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.to_unit(&Value::Float(0.99)).unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(Scale::auto(1e-4, 1.0), Scale::Log);
        assert_eq!(Scale::auto(1.0, 50.0), Scale::Linear);
        assert_eq!(Scale::auto(-1.0, 1000.0), Scale::Linear);
    }

    #[test]
    fn integers_round_into_equal_bins() {
        let p = Param::integer("layers", 1, 4, Scale::Linear);
        let values: Vec<_> = [0.0, 0.24, 0.26, 0.49, 0.51, 0.74, 0.76, 1.0]
            .iter()
            .map(|u| p.from_unit(*u))
            .collect();
        let ints: Vec<i64> = [1, 1, 2, 2, 3, 3, 4, 4].into();
        assert_eq!(values, ints.into_iter().map(Value::Int).collect::<Vec<_>>());
        let log = Param::integer("batch", 1, 1000, Scale::Log);
        assert_eq!(log.from_unit(0.0), Value::Int(1));
        assert_eq!(log.from_unit(1.0), Value::Int(1000));
        // Uniform u puts about half the mass below sqrt(1000) or so.
        let Value::Int(mid) = log.from_unit(0.5) else {
            panic!()
        };
        assert!((20..=40).contains(&mid), "{mid}");
    }

    #[test]
    fn categorical_decodes_to_largest_coordinate() {
        let s = Space::new(vec![Param::categorical("c", &["a", "b", "c"])]).unwrap();
        assert_eq!(s.decode(&[0.1, 0.7, 0.3]), vec![Value::Category(1)]);
        assert_eq!(s.snap(&[0.1, 0.2, 0.3]), vec![0.0, 0.0, 1.0]);
        let bad = [("c".to_string(), "d".to_string())].into();
        assert!(matches!(s.parse(&bad), Err(SpaceError::BadValue(..))));
    }

    #[test]
    fn invalid_spaces_are_refused() {
        let err = |p| Space::new(vec![p]).unwrap_err();
        assert_eq!(
            err(Param::continuous("a", 1.0, 1.0, Scale::Linear)),
            SpaceError::EmptyRange("a".into())
        );
        assert_eq!(
            err(Param::continuous("a", 0.0, 1.0, Scale::Log)),
            SpaceError::LogNeedsPositive("a".into())
        );
        assert_eq!(
            err(Param::continuous("a", 0.0, 1.0, Scale::ReverseLog)),
            SpaceError::ReverseLogRange("a".into())
        );
        assert_eq!(
            err(Param::categorical("a", &[])),
            SpaceError::NoValues("a".into())
        );
        let dup = vec![
            Param::integer("a", 0, 1, Scale::Linear),
            Param::integer("a", 0, 2, Scale::Linear),
        ];
        assert_eq!(
            Space::new(dup).unwrap_err(),
            SpaceError::Duplicate("a".into())
        );
        assert_eq!(Space::new(vec![]).unwrap_err(), SpaceError::Empty);
    }
}
