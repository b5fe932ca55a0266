//! The mini-batch loop shared by every gradient-trained algorithm: a seeded
//! permutation of the global rows per epoch, this rank's part of each global
//! batch, gradients summed over ranks, one optimizer step, checkpoints when
//! rank 0 says they are due, resume at the newest step every rank has a
//! checkpoint of, and a clean stop on SIGTERM.
//!
//! Because global batch `b` of epoch `e` is the same set of global rows on
//! any number of ranks (whether the channel is replicated or sharded by key,
//! see [`RowLayout`]), and gradients are sums divided by the global batch
//! size, N ranks take the same steps as one rank (up to float rounding).

use std::collections::BTreeMap;

use tch::{Device, Tensor};

use crate::checkpoint::Position;
use crate::error::{Error, Result};
use crate::hyper::{Kind, Spec};
use crate::layout::RowLayout;
use crate::optim::{Optimizer, Param};
use crate::run::Context;

/// Hyperparameters of the loop itself.
pub const SPECS: &[Spec] = &[
    Spec::new(
        "epochs",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "20",
        "passes over the training data",
    ),
    Spec::new(
        "mini_batch_size",
        Kind::Int {
            min: 1,
            max: 1 << 24,
        },
        "64",
        "rows per global batch (all ranks together)",
    ),
];

/// Batches of at most this many input numbers train single-threaded on the CPU.
const SMALL_BATCH_ELEMENTS: i64 = 1 << 18;

/// A model trained by [`fit`].
pub trait GradModel {
    /// The trainable tensors.
    fn params(&self) -> &[Param];
    /// Sum (not mean) of the per-row losses of a batch, in training mode.
    fn loss_sum(&self, x: &Tensor, y: &Tensor) -> Tensor;
}

/// The training rows of this rank, on the training device.
pub struct Rows<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    /// Where they sit among the rows of all ranks.
    pub layout: &'a RowLayout,
}

/// A SplitMix64 generator: small, seedable and identical on every rank.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The row order of one epoch.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut rng = SplitMix(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

fn param_state(params: &[Param]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|p| (format!("param.{}", p.name), p.tensor.shallow_clone()))
        .collect()
}

/// Restores parameters saved by a checkpoint.
pub fn restore_params(params: &[Param], saved: &BTreeMap<String, Tensor>) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for p in params {
        let t = saved.get(&format!("param.{}", p.name)).ok_or_else(|| {
            Error::Checkpoint(format!(
                "no tensor param.{} in the checkpoint resumed from",
                p.name
            ))
        })?;
        p.tensor.shallow_clone().copy_(t);
    }
    Ok(())
}

/// Trains `model` on `rows`. `on_epoch(ctx, epoch, step)` runs after every
/// epoch (validation metrics); it is not re-run for epochs finished before a
/// resume.
pub fn fit(
    ctx: &mut Context,
    model: &dyn GradModel,
    opt: &mut Optimizer,
    rows: &Rows<'_>,
    on_epoch: &mut dyn FnMut(&mut Context, u64, u64) -> Result<()>,
) -> Result<()> {
    let epochs = ctx.params.int("epochs") as u64;
    let params = model.params();
    let device = rows.x.device();
    let batch = ctx.params.usize("mini_batch_size");
    let n = rows.layout.global_rows();
    let batches = rows.layout.steps_per_epoch(&mut ctx.comm, batch)?;
    let (mut epoch, mut first_batch, mut step, mut epoch_loss) = (0u64, 0u64, 0u64, 0f64);
    if let Some((pos, saved)) = ctx.resume(rows.layout, false, &[])? {
        restore_params(params, &saved)?;
        opt.restore(&saved);
        (epoch, first_batch, step) = (pos.epoch, pos.batch, pos.step);
        epoch_loss = pos
            .extra
            .get("epoch_loss")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        eprintln!(
            "kiln-runtime: resumed from the checkpoint of step {step} (epoch {epoch}, batch {first_batch})"
        );
    }
    let seed = ctx.seed();
    // A step on a small batch is a chain of short operations, each of which
    // libtorch would fork over its OpenMP threads: one thread is faster.
    let cols = rows.x.size().iter().skip(1).product::<i64>().max(1);
    let _threads = (device == Device::Cpu && batch as i64 * cols <= SMALL_BATCH_ELEMENTS)
        .then(|| crate::par::TorchThreads::set(1));
    while epoch < epochs {
        let perm = permutation(n, seed, epoch);
        for b in first_batch..batches {
            let ids = &perm[b as usize * batch..((b as usize + 1) * batch).min(n)];
            // This rank's rows of the batch; none (its shard has no row in
            // it) still takes part in the all-reduces, with zeros.
            let local = rows.layout.locals(ids);
            for p in params {
                p.tensor.shallow_clone().zero_grad();
            }
            let mut loss = 0.0;
            if !local.is_empty() {
                let idx = Tensor::from_slice(&local).to_device(device);
                let l =
                    model.loss_sum(&rows.x.index_select(0, &idx), &rows.y.index_select(0, &idx));
                l.backward();
                loss = l.double_value(&[]);
            }
            let grads: Vec<Tensor> = params
                .iter()
                .map(|p| {
                    let g = p.tensor.grad();
                    if g.defined() {
                        g
                    } else {
                        p.tensor.zeros_like()
                    }
                })
                .collect();
            let grads = ctx.comm.sum(&grads.iter().collect::<Vec<_>>())?;
            let [stop, save] = ctx.step_flags(step + 1);
            let stats = ctx.comm.sum_f64(&[loss, local.len() as f64, stop, save])?;
            let scale = 1.0 / stats[1].max(1.0);
            let grads: Vec<Tensor> = grads.iter().map(|g| g * scale).collect();
            opt.schedule(step, epochs * batches);
            opt.step(params, &grads);
            if !stats[0].is_finite() {
                return Err(Error::Algorithm(format!(
                    "the training loss diverged at step {step} (epoch {epoch}): lower learning_rate"
                )));
            }
            step += 1;
            epoch_loss += stats[0];
            // Every rank sees the same sums: all checkpoint this step, or none.
            let stopping = stats[2] > 0.0;
            if stopping || stats[3] > 0.0 {
                // After the last batch the position is (epoch, batches): a
                // resume then only finishes the epoch (its metrics).
                let pos = Position {
                    step,
                    epoch,
                    batch: b + 1,
                    extra: serde_json::json!({ "epoch_loss": epoch_loss }),
                };
                let mut state = param_state(params);
                state.extend(opt.state());
                ctx.checkpoints.save(&pos, &state)?;
                if stopping {
                    return Err(Error::Terminated { step });
                }
            }
        }
        ctx.metrics
            .emit("train:loss", epoch_loss / n as f64, step, Some(epoch));
        on_epoch(ctx, epoch, step)?;
        ctx.metrics.flush().map_err(Error::io(&ctx.paths.output))?;
        epoch += 1;
        first_batch = 0;
        epoch_loss = 0.0;
    }
    Ok(())
}

/// Runs `f` over `x` in blocks of rows without gradients and concatenates
/// the outputs (evaluation of large sets in bounded memory).
pub fn predict_blocks(
    x: &Tensor,
    device: Device,
    block: i64,
    f: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let outs: Vec<Tensor> = (0..n)
        .step_by(block as usize)
        .map(|start| f(&x.narrow(0, start, block.min(n - start)).to_device(device)))
        .collect();
    Tensor::cat(&outs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_shuffle() {
        let a = permutation(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, permutation(1000, 7, 0));
        assert_ne!(a, permutation(1000, 7, 1));
        assert_ne!(a, permutation(1000, 8, 0));
    }
}
