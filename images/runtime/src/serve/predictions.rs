//! What travels between the HTTP handlers and a model's worker: plain rows
//! in, plain predictions out (never tensors), and how a batch of requests
//! is joined and its predictions split again.

/// The rows of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `values.len() / features` rows of `features` numbers, row-major.
    Rows { values: Vec<f32>, features: usize },
    /// One document per row (text-classifier).
    Texts(Vec<String>),
}

impl Input {
    pub fn rows(&self) -> usize {
        match self {
            Input::Rows { values, features } => values.len() / (*features).max(1),
            Input::Texts(t) => t.len(),
        }
    }

    /// Appends `other`'s rows (a batch is one input); inputs of one model
    /// are always of one kind.
    pub fn extend(&mut self, other: Input) {
        match (self, other) {
            (Input::Rows { values, .. }, Input::Rows { values: more, .. }) => values.extend(more),
            (Input::Texts(t), Input::Texts(more)) => t.extend(more),
            _ => {}
        }
    }
}

/// What a model predicts per row, which decides how predictions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `score`: one number.
    Regressor,
    /// `predicted_label` and `score`, the probability of class 1.
    Binary,
    /// `predicted_label` and `score`, the probabilities of every class.
    Multiclass,
    /// `predicted_label` only (a nearest-neighbour vote).
    Label,
    /// `closest_cluster` and `distance_to_cluster` (Euclidean).
    Clustering,
    /// `projection`: the coordinates on the components.
    Projection,
}

impl Shape {
    /// Whether values of `width` per row go out as `[rows]` rather than
    /// `[rows, width]` (one number per row, not a list by nature).
    pub fn flat_values(self, width: usize) -> bool {
        width == 1 && self != Shape::Multiclass && self != Shape::Projection
    }

    pub fn has_label(self) -> bool {
        !matches!(self, Shape::Regressor | Shape::Projection)
    }

    /// Names of the per-row outputs (Open Inference Protocol tensors):
    /// the label first when there is one, then the values.
    pub fn output_names(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Shape::Regressor => (None, Some("score")),
            Shape::Binary | Shape::Multiclass => (Some("predicted_label"), Some("score")),
            Shape::Label => (Some("predicted_label"), None),
            Shape::Clustering => (Some("closest_cluster"), Some("distance_to_cluster")),
            Shape::Projection => (None, Some("projection")),
        }
    }
}

/// Predictions of `rows` rows: a label per row where the shape has one,
/// and `width` values per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub shape: Shape,
    pub rows: usize,
    pub width: usize,
    pub labels: Vec<i64>,
    pub values: Vec<f32>,
}

impl Predictions {
    /// The values of row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.width..(r + 1) * self.width]
    }

    /// Rows `start..start + len`.
    pub fn slice(&self, start: usize, len: usize) -> Predictions {
        Predictions {
            shape: self.shape,
            rows: len,
            width: self.width,
            labels: if self.shape.has_label() {
                self.labels[start..start + len].to_vec()
            } else {
                Vec::new()
            },
            values: self.values[start * self.width..(start + len) * self.width].to_vec(),
        }
    }

    /// Whether the lengths agree with `rows` and `width`.
    pub fn is_consistent(&self) -> bool {
        self.values.len() == self.rows * self.width
            && (!self.shape.has_label() || self.labels.len() == self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_join_and_split() {
        let mut a = Input::Rows {
            values: vec![1.0, 2.0],
            features: 2,
        };
        a.extend(Input::Rows {
            values: vec![3.0, 4.0, 5.0, 6.0],
            features: 2,
        });
        assert_eq!(a.rows(), 3);
        let p = Predictions {
            shape: Shape::Binary,
            rows: 3,
            width: 1,
            labels: vec![0, 1, 1],
            values: vec![0.1, 0.9, 0.8],
        };
        assert!(p.is_consistent());
        let tail = p.slice(1, 2);
        assert_eq!(tail.labels, [1, 1]);
        assert_eq!(tail.values, [0.9, 0.8]);
        assert!(tail.is_consistent());
    }
}
