//! SGD (with momentum) and Adam over plain tensors, with L2 weight decay and
//! an L1 proximal step. Kept here rather than using `tch::nn::Optimizer` so
//! the update is applied to all-reduced gradients and its state can be
//! checkpointed and restored exactly.

use tch::Tensor;

use crate::hyper::{Kind, Params, Spec};

/// Hyperparameters every gradient-trained algorithm shares.
pub const SPECS: &[Spec] = &[
    Spec::new(
        "optimizer",
        Kind::Choice(&["sgd", "adam"]),
        "adam",
        "update rule",
    ),
    Spec::new(
        "lr_schedule",
        Kind::Choice(&["constant", "cosine"]),
        "cosine",
        "learning rate over the run: constant, or cosine decay to 0",
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
    Spec::new(
        "momentum",
        Kind::Float {
            min: 0.0,
            max: 0.999,
        },
        "0.9",
        "SGD momentum",
    ),
    Spec::new(
        "beta_1",
        Kind::Float {
            min: 0.0,
            max: 0.9999,
        },
        "0.9",
        "Adam first-moment decay",
    ),
    Spec::new(
        "beta_2",
        Kind::Float {
            min: 0.0,
            max: 0.99999,
        },
        "0.999",
        "Adam second-moment decay",
    ),
    Spec::new(
        "l1",
        Kind::Float {
            min: 0.0,
            max: 100.0,
        },
        "0",
        "L1 penalty on weights (proximal step)",
    ),
    Spec::new(
        "wd",
        Kind::Float {
            min: 0.0,
            max: 100.0,
        },
        "0",
        "L2 penalty on weights (weight decay)",
    ),
];

/// The update rule and its state.
#[derive(Debug)]
pub struct Optimizer {
    adam: bool,
    base_lr: f64,
    cosine: bool,
    lr: f64,
    momentum: f64,
    beta1: f64,
    beta2: f64,
    l1: f64,
    wd: f64,
    steps: i64,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
}

/// One trainable tensor and whether the penalties apply to it (not to biases).
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub penalized: bool,
}

impl Optimizer {
    /// An optimizer for `params`, configured by [`SPECS`].
    pub fn new(p: &Params, params: &[Param]) -> Self {
        let zeros = || {
            params
                .iter()
                .map(|x| x.tensor.zeros_like().detach())
                .collect::<Vec<_>>()
        };
        Optimizer {
            adam: p.str("optimizer") == "adam",
            base_lr: p.float("learning_rate"),
            cosine: p.str("lr_schedule") == "cosine",
            lr: p.float("learning_rate"),
            momentum: p.float("momentum"),
            beta1: p.float("beta_1"),
            beta2: p.float("beta_2"),
            l1: p.float("l1"),
            wd: p.float("wd"),
            steps: 0,
            first: zeros(),
            second: zeros(),
        }
    }

    /// Sets the learning rate for step `step` of `total` by the schedule.
    pub fn schedule(&mut self, step: u64, total: u64) {
        self.lr = if self.cosine {
            let t = step as f64 / total.max(1) as f64;
            self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
        } else {
            self.base_lr
        };
    }

    /// One update of `params` with `grads` (already averaged over the batch).
    pub fn step(&mut self, params: &[Param], grads: &[Tensor]) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let mut w = p.tensor.shallow_clone();
            let g = if p.penalized && self.wd > 0.0 {
                g + &w * self.wd
            } else {
                g.shallow_clone()
            };
            if self.adam {
                let (m, v) = (&mut self.first[i], &mut self.second[i]);
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(&g * &g * (1.0 - self.beta2)));
                let bc1 = 1.0 - self.beta1.powi(self.steps as i32);
                let bc2 = 1.0 - self.beta2.powi(self.steps as i32);
                let update = (&*m / bc1) / ((&*v / bc2).sqrt() + 1e-8);
                let _ = w.g_sub_(&(update * self.lr));
            } else {
                let m = &mut self.first[i];
                let _ = m.g_mul_scalar_(self.momentum).g_add_(&g);
                let _ = w.g_sub_(&(&*m * self.lr));
            }
            if p.penalized && self.l1 > 0.0 {
                let t = self.lr * self.l1;
                let shrunk = w.sign() * (w.abs() - t).clamp_min(0.0);
                w.copy_(&shrunk);
            }
        }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("optim.steps".to_string(), Tensor::from_slice(&[self.steps]))];
        for (i, (m, v)) in self.first.iter().zip(&self.second).enumerate() {
            out.push((format!("optim.first.{i}"), m.shallow_clone()));
            out.push((format!("optim.second.{i}"), v.shallow_clone()));
        }
        out
    }

    /// Restores [`Optimizer::state`] from a checkpoint.
    pub fn restore(&mut self, saved: &std::collections::BTreeMap<String, Tensor>) {
        let _guard = tch::no_grad_guard();
        if let Some(s) = saved.get("optim.steps") {
            self.steps = i64::try_from(&s.view(-1).get(0)).unwrap_or(0);
        }
        for i in 0..self.first.len() {
            if let Some(m) = saved.get(&format!("optim.first.{i}")) {
                self.first[i].copy_(m);
            }
            if let Some(v) = saved.get(&format!("optim.second.{i}")) {
                self.second[i].copy_(v);
            }
        }
    }
}
