//! linear-learner: linear regression, logistic regression (binary) and
//! softmax regression (multiclass), trained by mini-batch SGD or Adam with
//! L1/L2 penalties, or for regression in closed form from the normal
//! equations (sufficient statistics summed over ranks).
//!
//! Features (and a regressor's label) are standardized for training; the
//! saved weights are folded back so the artifact works on raw features:
//! `output = x @ weight + bias`.

use tch::{Device, Kind as TKind, Tensor};

use super::{Algorithm, stats};
use crate::artifact::ModelMeta;
use crate::error::{Error, Result};
use crate::eval::{Task, emit_scores};
use crate::hyper::{Kind, Spec};
use crate::optim::{self, Optimizer, Param};
use crate::par;
use crate::run::Context;
use crate::sgd::{self, GradModel, Rows};

const SPECS: &[Spec] = &[
    Spec::required(
        "predictor_type",
        Kind::Choice(&["regressor", "binary_classifier", "multiclass_classifier"]),
        "what to predict",
    ),
    Spec::new(
        "num_classes",
        Kind::Int {
            min: 0,
            max: 100_000,
        },
        "0",
        "classes of a multiclass classifier (labels 0..num_classes-1)",
    ),
    Spec::new(
        "solver",
        Kind::Choice(&["sgd", "normal_equations"]),
        "sgd",
        "mini-batch optimization, or the closed form (regressor only)",
    ),
    Spec::new(
        "normalize_data",
        Kind::Bool,
        "true",
        "standardize features while training",
    ),
    Spec::new(
        "normalize_label",
        Kind::Bool,
        "true",
        "standardize a regressor's label while training",
    ),
    Spec::new(
        "learning_rate",
        Kind::Float {
            min: 1e-8,
            max: 10.0,
        },
        "0.01",
        "step size",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "linear-learner",
    tables: &[SPECS, sgd::SPECS, optim::SPECS],
    train,
};

/// `x @ weight + bias` on standardized inputs.
pub struct Linear {
    params: Vec<Param>,
    task: Task,
}

impl Linear {
    /// Zero-initialized weights `[features, outputs]` and bias `[outputs]`.
    pub fn new(features: i64, task: Task, device: Device) -> Self {
        let outputs = task.outputs();
        let weight =
            Tensor::zeros([features, outputs], (TKind::Float, device)).set_requires_grad(true);
        let bias = Tensor::zeros([outputs], (TKind::Float, device)).set_requires_grad(true);
        Linear {
            params: vec![
                Param {
                    name: "weight".into(),
                    tensor: weight,
                    penalized: true,
                },
                Param {
                    name: "bias".into(),
                    tensor: bias,
                    penalized: false,
                },
            ],
            task,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let out = x.matmul(&self.params[0].tensor) + &self.params[1].tensor;
        if self.task.outputs() == 1 {
            out.view(-1)
        } else {
            out
        }
    }
}

impl GradModel for Linear {
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn loss_sum(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.task.loss_sum(&self.forward(x), y)
    }
}

/// How raw inputs were standardized: `(x - x_mean) / x_std`, and the label
/// as `(y - y_mean) / y_std`.
struct Scaling {
    x_mean: Tensor,
    x_std: Tensor,
    y_mean: f64,
    y_std: f64,
}

impl Scaling {
    /// Weights and bias that apply to raw features and give raw outputs.
    fn fold(&self, weight: &Tensor, bias: &Tensor) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let w = weight / self.x_std.unsqueeze(1);
        let b = bias - self.x_mean.unsqueeze(0).matmul(&w).view(-1);
        (&w * self.y_std, &b * self.y_std + self.y_mean)
    }
}

fn train(ctx: &mut Context) -> Result<()> {
    let task = Task::parse(
        ctx.params.str("predictor_type"),
        ctx.params.int("num_classes"),
    )?;
    let train = ctx.read("train", true)?;
    let y_raw = task.prepare_labels("train", train.labels("train")?)?;
    let validation = ctx.read_eval("validation", true)?;
    let test = ctx.read_eval("test", true)?;
    let device = ctx.device;
    let features = train.cols() as i64;
    let closed_form = ctx.params.str("solver") == "normal_equations";
    if closed_form && task != Task::Regressor {
        return Err(Error::hyper(
            "solver",
            "normal_equations applies to predictor_type regressor only",
        ));
    }
    let (weight, bias) = if closed_form {
        normal_equations(ctx, &train.x.to_device(device), &y_raw.to_device(device))?
    } else {
        let mut x = train.x.to_device(device);
        let mut scaling = Scaling {
            x_mean: Tensor::zeros([features], (TKind::Float, device)),
            x_std: Tensor::ones([features], (TKind::Float, device)),
            y_mean: 0.0,
            y_std: 1.0,
        };
        if ctx.params.bool("normalize_data") {
            (scaling.x_mean, scaling.x_std) = stats::column_moments(ctx, &x)?;
            x = (&x - &scaling.x_mean) / &scaling.x_std;
        }
        let mut y = y_raw.to_device(device);
        if task == Task::Regressor && ctx.params.bool("normalize_label") {
            let (m, s) = stats::column_moments(ctx, &y.unsqueeze(1))?;
            (scaling.y_mean, scaling.y_std) = (m.double_value(&[0]), s.double_value(&[0]));
            y = (&y - scaling.y_mean) / scaling.y_std;
        }
        let layout = ctx.layout_of("train", &train)?;
        let model = Linear::new(features, task, device);
        let mut opt = Optimizer::new(&ctx.params, model.params());
        let rows = Rows {
            x: &x,
            y: &y,
            layout: &layout,
        };
        let mut on_epoch = |ctx: &mut Context, epoch: u64, step: u64| -> Result<()> {
            if let Some(v) = &validation {
                let (w, b) = scaling.fold(&model.params[0].tensor, &model.params[1].tensor);
                let scores = score(task, &w, &b, &v.x, v.labels("validation")?, device)?;
                emit_scores(&mut ctx.metrics, "validation", &scores, step, Some(epoch));
            }
            Ok(())
        };
        sgd::fit(ctx, &model, &mut opt, &rows, &mut on_epoch)?;
        scaling.fold(&model.params[0].tensor, &model.params[1].tensor)
    };
    let scores = score(task, &weight, &bias, &train.x, &y_raw, device)?;
    let step = ctx.params.int("epochs") as u64;
    emit_scores(
        &mut ctx.metrics,
        "train",
        &scores[..scores.len() - 1],
        step,
        None,
    );
    if let Some(t) = &test {
        let scores = score(task, &weight, &bias, &t.x, t.labels("test")?, device)?;
        emit_scores(&mut ctx.metrics, "test", &scores, step, None);
    }
    let mut meta = ModelMeta::new("linear-learner", task.name(), features as usize);
    meta.num_classes = task.classes();
    meta.model = serde_json::json!({
        "output": "x @ weight + bias",
        "prediction": match task {
            Task::Regressor => "the output",
            Task::Binary => "class 1 when the output > 0; probability sigmoid(output)",
            Task::Multiclass(_) => "argmax of the outputs; probabilities softmax(outputs)",
        },
    });
    ctx.write_model(meta, &[("weight", &weight), ("bias", &bias)])
}

fn score(
    task: Task,
    w: &Tensor,
    b: &Tensor,
    x: &Tensor,
    y: &Tensor,
    device: Device,
) -> Result<Vec<(&'static str, f64)>> {
    let y = task.prepare_labels("validation", y)?.to_device(device);
    let out = sgd::predict_blocks(x, device, 65536, |xb| {
        let o = xb.matmul(w) + b;
        if task.outputs() == 1 { o.view(-1) } else { o }
    });
    Ok(task.score(&out, &y))
}

/// Ridge/OLS from `[X 1]^T [X 1]` and `[X 1]^T y`, summed over ranks in f64.
fn normal_equations(ctx: &mut Context, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let d = x.size()[1];
    // `[X 1]^T [X 1]` and `[X 1]^T y` of one block of rows.
    let block_stats = |xb: &Tensor, yb: &Tensor| {
        let len = xb.size()[0];
        let xb = Tensor::cat(
            &[
                xb.to_kind(TKind::Double),
                Tensor::ones([len, 1], (TKind::Double, xb.device())),
            ],
            1,
        );
        let xt = xb.transpose(0, 1);
        vec![xt.matmul(&xb), xt.matmul(&yb.to_kind(TKind::Double))]
    };
    let y32 = y.to_kind(TKind::Float).contiguous();
    let (gram, xty) = if let (Some(xs), Some(ys)) = (par::cpu_f32(x), par::cpu_f32(&y32)) {
        let mut s = par::sum_blocks(xs, d as usize, 16384, |xb, rows| {
            block_stats(xb, &Tensor::from_slice(&ys[rows]))
        });
        let xty = s.pop().expect("two sums");
        (s.pop().expect("two sums"), xty)
    } else {
        let mut gram = Tensor::zeros([d + 1, d + 1], (TKind::Double, x.device()));
        let mut xty = Tensor::zeros([d + 1], (TKind::Double, x.device()));
        let n = x.size()[0];
        for start in (0..n).step_by(65536) {
            let len = 65536.min(n - start);
            let s = block_stats(&x.narrow(0, start, len), &y.narrow(0, start, len));
            gram += &s[0];
            xty += &s[1];
        }
        (gram, xty)
    };
    let summed = ctx.comm.sum(&[&gram, &xty])?;
    let rows = summed[0].double_value(&[d, d]);
    // L2 on the weights, not the bias, scaled like the SGD objective's mean loss.
    let ridge = Tensor::ones([d + 1], (TKind::Double, x.device())).narrow(0, 0, d + 1);
    let _ = ridge.narrow(0, d, 1).fill_(0.0);
    let a = &summed[0] + (ridge * (ctx.params.float("wd") * rows)).diag(0);
    let rhs = summed[1].unsqueeze(1);
    let driver = if a.device() == tch::Device::Cpu {
        "gelsd"
    } else {
        "gels"
    };
    // A singular system (collinear features) falls back to least squares.
    let solution = Tensor::f_linalg_solve(&a, &rhs, true)
        .or_else(|_| a.f_linalg_lstsq(&rhs, None::<f64>, driver).map(|r| r.0))
        .map_err(|e| Error::Algorithm(format!("normal equations: {e}")))?;
    let w = solution.narrow(0, 0, d).to_kind(TKind::Float);
    let b = solution.narrow(0, d, 1).view(-1).to_kind(TKind::Float);
    Ok((w, b))
}
