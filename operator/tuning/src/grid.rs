//! Grid search: every combination of the parameters' values, the last
//! parameter varying fastest, skipping points the history already has.

use std::collections::HashSet;

use crate::Strategy;
use crate::space::{Config, Domain, Space, Value};
use crate::trial::{Origin, Suggestion, Trial, WarmStartKind};

/// Every combination of integer and categorical values (continuous ranges
/// get `resolution` evenly spaced points on their scale).
#[derive(Clone, Debug)]
pub struct Grid {
    space: Space,
    axes: Vec<Vec<Value>>,
}

impl Grid {
    /// The grid of `space`; `resolution` points per continuous parameter.
    pub fn new(space: Space, resolution: usize) -> Self {
        let resolution = resolution.max(1);
        let axes = space
            .params()
            .iter()
            .map(|p| match &p.domain {
                Domain::Integer { min, max, .. } => (*min..=*max).map(Value::Int).collect(),
                Domain::Categorical { values } => (0..values.len()).map(Value::Category).collect(),
                Domain::Continuous { .. } if resolution == 1 => vec![p.from_unit(0.5)],
                Domain::Continuous { .. } => (0..resolution)
                    .map(|i| p.from_unit(i as f64 / (resolution - 1) as f64))
                    .collect(),
            })
            .collect();
        Self { space, axes }
    }

    /// The number of grid points (saturating).
    pub fn len(&self) -> u128 {
        self.axes
            .iter()
            .fold(1u128, |n, a| n.saturating_mul(a.len() as u128))
    }

    /// Whether the grid is empty (it never is: every axis has a value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The grid point at `index`, in enumeration order.
    pub fn point(&self, mut index: u128) -> Config {
        let mut config = vec![Value::Int(0); self.axes.len()];
        for (slot, axis) in config.iter_mut().zip(&self.axes).rev() {
            let n = axis.len() as u128;
            *slot = axis[(index % n) as usize].clone();
            index /= n;
        }
        config
    }

    /// The space searched.
    pub fn space(&self) -> &Space {
        &self.space
    }
}

/// A hashable key of a point (floats by their bits).
fn key(config: &Config) -> Vec<u64> {
    config
        .iter()
        .map(|v| match v {
            Value::Float(f) => f.to_bits(),
            Value::Int(i) => *i as u64,
            Value::Category(c) => *c as u64,
        })
        .collect()
}

impl Strategy for Grid {
    fn suggest(&mut self, history: &[Trial], n: usize) -> Vec<Suggestion> {
        let seen: HashSet<Vec<u64>> = history
            .iter()
            .filter(|t| t.origin != Origin::Parent(WarmStartKind::TransferLearning))
            .map(|t| key(&t.config))
            .collect();
        let mut out = Vec::with_capacity(n);
        let mut index = 0u128;
        while out.len() < n && index < self.len() {
            let point = self.point(index);
            if !seen.contains(&key(&point)) {
                out.push(Suggestion::new(point));
            }
            index += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scale};

    fn grid() -> Grid {
        let space = Space::new(vec![
            Param::integer("k", 1, 3, Scale::Linear),
            Param::categorical("c", &["a", "b"]),
        ])
        .unwrap();
        Grid::new(space, 3)
    }

    #[test]
    fn enumerates_in_order_then_runs_out() {
        let mut g = grid();
        assert_eq!(g.len(), 6);
        let mut history = Vec::new();
        let mut seen = Vec::new();
        loop {
            let s = g.suggest(&history, 4);
            if s.is_empty() {
                break;
            }
            for s in s {
                history.push(Trial::from_suggestion(&s));
                seen.push(g.space().format(&s.config));
            }
        }
        let order: Vec<String> = seen
            .iter()
            .map(|m| format!("{}{}", m["k"], m["c"]))
            .collect();
        assert_eq!(order, ["1a", "1b", "2a", "2b", "3a", "3b"]);
    }

    #[test]
    fn skips_points_of_identical_parents_only() {
        let mut g = grid();
        let parent = |c, kind| {
            Trial::completed(vec![Value::Int(1), Value::Category(c)], vec![1.0])
                .with_origin(Origin::Parent(kind))
        };
        let history = [
            parent(0, WarmStartKind::IdenticalDataAndAlgorithm),
            parent(1, WarmStartKind::TransferLearning),
        ];
        let s = g.suggest(&history, 10);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].config, vec![Value::Int(1), Value::Category(1)]);
    }

    #[test]
    fn continuous_axes_span_the_range() {
        let space = Space::new(vec![Param::continuous("x", 1e-3, 1e-1, Scale::Log)]).unwrap();
        let g = Grid::new(space, 3);
        let xs: Vec<f64> = (0..3)
            .map(|i| match g.point(i)[0] {
                Value::Float(x) => x,
                _ => panic!(),
            })
            .collect();
        assert!(
            (xs[0] - 1e-3).abs() < 1e-15
                && (xs[1] - 1e-2).abs() < 1e-12
                && (xs[2] - 1e-1).abs() < 1e-12
        );
    }
}
