//! Supervised tasks: checking labels and scoring predictions.

use tch::{Kind, Reduction, Tensor};

use crate::error::{Error, Result};

/// What a supervised model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Regressor,
    Binary,
    Multiclass(usize),
}

impl Task {
    /// From `predictor_type` and `num_classes`.
    pub fn parse(predictor_type: &str, num_classes: i64) -> Result<Task> {
        match predictor_type {
            "regressor" => Ok(Task::Regressor),
            "binary_classifier" => Ok(Task::Binary),
            "multiclass_classifier" | "classifier" if num_classes >= 2 => {
                Ok(Task::Multiclass(num_classes as usize))
            }
            "multiclass_classifier" | "classifier" => Err(Error::hyper(
                "num_classes",
                format!("{predictor_type} needs num_classes of at least 2, got {num_classes}"),
            )),
            other => Err(Error::hyper(
                "predictor_type",
                format!("{other:?} is not supported"),
            )),
        }
    }

    /// The task's name in `model.json`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Regressor => "regressor",
            Task::Binary => "binary_classifier",
            Task::Multiclass(_) => "multiclass_classifier",
        }
    }

    /// Outputs per row of a model for this task.
    pub fn outputs(self) -> i64 {
        match self {
            Task::Multiclass(c) => c as i64,
            _ => 1,
        }
    }

    /// Number of classes, if a classifier.
    pub fn classes(self) -> Option<usize> {
        match self {
            Task::Regressor => None,
            Task::Binary => Some(2),
            Task::Multiclass(c) => Some(c),
        }
    }

    /// Checks the labels of `channel` (class labels must be integers in
    /// range) and returns them in the kind the losses want.
    pub fn prepare_labels(self, channel: &str, y: &Tensor) -> Result<Tensor> {
        let Some(classes) = self.classes() else {
            return Ok(y.shallow_clone());
        };
        let bad = y
            .ne_tensor(&y.round())
            .logical_or(&y.lt(0.0))
            .logical_or(&y.ge(classes as f64));
        if bad.any().int64_value(&[]) != 0 {
            let row = bad.to_kind(Kind::Int64).argmax(0, false).int64_value(&[]);
            let value = y.double_value(&[row]);
            return Err(Error::data(
                channel,
                format!(
                    "row {}: label {value} is out of range: a {} takes integer labels 0..{}",
                    row + 1,
                    self.name(),
                    classes - 1
                ),
            ));
        }
        Ok(if self == Task::Binary {
            y.shallow_clone()
        } else {
            y.to_kind(Kind::Int64)
        })
    }

    /// Sum of per-row losses of raw outputs (`[n]` or `[n, classes]`).
    pub fn loss_sum(self, out: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Task::Regressor => out.view(-1).mse_loss(y, Reduction::Sum),
            Task::Binary => out.view(-1).binary_cross_entropy_with_logits::<Tensor>(
                y,
                None,
                None,
                Reduction::Sum,
            ),
            Task::Multiclass(_) => {
                out.cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0)
            }
        }
    }

    /// The quality metrics of outputs against labels: `(name, value)`, the
    /// first being the task's headline metric.
    pub fn score(self, out: &Tensor, y: &Tensor) -> Vec<(&'static str, f64)> {
        let _guard = tch::no_grad_guard();
        let n = y.size()[0].max(1) as f64;
        let loss = self.loss_sum(out, y).double_value(&[]) / n;
        match self {
            Task::Regressor => {
                let pred = out.view(-1).to_kind(Kind::Double);
                let y = y.to_kind(Kind::Double);
                let sse = (&pred - &y).square().sum(Kind::Double).double_value(&[]);
                let sst = (&y - y.mean(Kind::Double))
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[]);
                let mae = (&pred - &y).abs().mean(Kind::Double).double_value(&[]);
                let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
                vec![
                    ("r2", r2),
                    ("mse", sse / n),
                    ("rmse", (sse / n).sqrt()),
                    ("mae", mae),
                    ("loss", loss),
                ]
            }
            Task::Binary => {
                let pred = out.view(-1).gt(0.0).to_kind(Kind::Float);
                let acc = pred
                    .eq_tensor(y)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[]);
                vec![("accuracy", acc), ("loss", loss)]
            }
            Task::Multiclass(_) => {
                let pred = out.argmax(1, false);
                let acc = pred
                    .eq_tensor(y)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[]);
                vec![("accuracy", acc), ("loss", loss)]
            }
        }
    }
}

/// Emits `<channel>:<metric>` for every score of `out` against `y`.
pub fn emit_scores(
    metrics: &mut crate::metrics::Metrics,
    channel: &str,
    scores: &[(&'static str, f64)],
    step: u64,
    epoch: Option<u64>,
) {
    for (name, value) in scores {
        metrics.emit(&format!("{channel}:{name}"), *value, step, epoch);
    }
}
