//! Pipeline parallelism across ranks: rank `s` holds stage `s` of the
//! network. For each mini-batch, the micro-batches' activations flow down
//! the ring (rank s -> s+1) and, after the last stage has computed every
//! micro-batch's loss, their gradients flow back up in reverse order (GPipe's
//! schedule); each rank then steps its own stage's parameters. Every rank
//! reads the whole channel (stage 0 needs the features, the last stage the
//! labels) and walks the same batches as a one-rank run, so the loss
//! trajectory is the unsplit network's.

use tch::{Kind, Tensor};

use super::net::Net;
use crate::checkpoint::Position;
use crate::error::{Error, Result};
use crate::eval::Task;
use crate::layout::RowLayout;
use crate::optim::{Optimizer, Param};
use crate::run::Context;
use crate::sgd::{permutation, restore_params};

/// Copies every stage's parameters to every rank (each rank contributes its
/// own stage, zeros for the others), so any rank can run the whole network.
pub fn gather(ctx: &mut Context, net: &Net) -> Result<()> {
    let rank = ctx.comm.rank;
    let parts: Vec<Tensor> = net
        .params()
        .iter()
        .zip(net.param_stages())
        .map(|(p, &s)| {
            if s == rank {
                p.tensor.detach()
            } else {
                p.tensor.zeros_like()
            }
        })
        .collect();
    let full = ctx.comm.sum(&parts.iter().collect::<Vec<_>>())?;
    tch::no_grad(|| {
        for (p, t) in net.params().iter().zip(&full) {
            p.tensor.shallow_clone().copy_(t);
        }
    });
    Ok(())
}

/// Trains `net`, whose stage `rank` this rank runs, on all rows `x`, `y`.
pub fn fit(
    ctx: &mut Context,
    net: &Net,
    task: Task,
    x: &Tensor,
    y: &Tensor,
    on_epoch: &mut dyn FnMut(&mut Context, u64, u64) -> Result<()>,
) -> Result<()> {
    let (stage, last) = (ctx.comm.rank, ctx.comm.world - 1);
    if net.stages() != ctx.comm.world {
        return Err(Error::hyper(
            "pipeline_stages",
            format!(
                "the network has {} stages for {} ranks: with pipeline_ranks they must be equal",
                net.stages(),
                ctx.comm.world
            ),
        ));
    }
    let params: Vec<Param> = net
        .params()
        .iter()
        .zip(net.param_stages())
        .filter(|(_, s)| **s == stage)
        .map(|(p, _)| Param {
            name: p.name.clone(),
            tensor: p.tensor.shallow_clone(),
            penalized: p.penalized,
        })
        .collect();
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    eprintln!(
        "kiln-runtime: pipeline stage {stage} of {} on this rank: {}",
        ctx.comm.world,
        names.join(" ")
    );
    let mut opt = Optimizer::new(&ctx.params, &params);
    let epochs = ctx.params.int("epochs") as u64;
    let batch = ctx.params.usize("mini_batch_size");
    let micro = ctx.params.int("micro_batches");
    let n = x.size()[0] as usize;
    let batches = n.div_ceil(batch) as u64;
    let (mut epoch, mut first_batch, mut step, mut epoch_loss) = (0u64, 0u64, 0u64, 0f64);
    // Each rank's checkpoint holds its own stage.
    if let Some((pos, saved)) = ctx.resume(&RowLayout::single(n), true, &[])? {
        restore_params(&params, &saved)?;
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
    while epoch < epochs {
        let perm = permutation(n, seed, epoch);
        for b in first_batch..batches {
            let ids: Vec<i64> = perm[b as usize * batch..((b as usize + 1) * batch).min(n)]
                .iter()
                .map(|&i| i as i64)
                .collect();
            let idx = Tensor::from_slice(&ids).to_device(x.device());
            for p in &params {
                p.tensor.shallow_clone().zero_grad();
            }
            let rows = ids.len() as i64;
            let parts = micro.clamp(1, rows);
            let size = (rows + parts - 1) / parts;
            let (mut inputs, mut outputs, mut loss) = (Vec::new(), Vec::new(), 0.0);
            for start in (0..rows).step_by(size as usize) {
                let part = idx.narrow(0, start, size.min(rows - start));
                let input = if stage == 0 {
                    x.index_select(0, &part)
                } else {
                    ctx.comm.recv(true)?.set_requires_grad(true)
                };
                let out = net.forward_stage(stage, &input, true);
                if stage == last {
                    let out = if task.outputs() == 1 {
                        out.view(-1)
                    } else {
                        out
                    };
                    let l = task.loss_sum(&out, &y.index_select(0, &part).to_device(out.device()));
                    loss += l.double_value(&[]);
                    outputs.push(l);
                } else {
                    ctx.comm.send(true, &out)?;
                    outputs.push(out);
                }
                inputs.push(input);
            }
            for (input, out) in inputs.iter().zip(&outputs).rev() {
                if stage == last {
                    out.backward();
                } else {
                    let g = ctx.comm.recv(false)?.to_device(out.device());
                    (out * g).sum(Kind::Float).backward();
                }
                if stage > 0 {
                    ctx.comm.send(false, &input.grad())?;
                }
            }
            let grads: Vec<Tensor> = params
                .iter()
                .map(|p| {
                    let g = p.tensor.grad();
                    if g.defined() {
                        g / rows as f64
                    } else {
                        p.tensor.zeros_like()
                    }
                })
                .collect();
            let [stop, save] = ctx.step_flags(step + 1);
            let stats = ctx.comm.sum_f64(&[loss, stop, save])?;
            opt.schedule(step, epochs * batches);
            opt.step(&params, &grads);
            if !stats[0].is_finite() {
                return Err(Error::Algorithm(format!(
                    "the training loss diverged at step {step}: lower learning_rate"
                )));
            }
            step += 1;
            epoch_loss += stats[0];
            let stopping = stats[1] > 0.0;
            if stopping || stats[2] > 0.0 {
                let pos = Position {
                    step,
                    epoch,
                    batch: b + 1,
                    extra: serde_json::json!({ "epoch_loss": epoch_loss }),
                };
                let mut state: Vec<(String, Tensor)> = params
                    .iter()
                    .map(|p| (format!("param.{}", p.name), p.tensor.shallow_clone()))
                    .collect();
                state.extend(opt.state());
                ctx.checkpoints.save(&pos, &state)?;
                if stopping {
                    return Err(Error::Terminated { step });
                }
            }
        }
        ctx.metrics
            .emit("train:loss", epoch_loss / n as f64, step, Some(epoch));
        gather(ctx, net)?;
        on_epoch(ctx, epoch, step)?;
        ctx.metrics.flush().map_err(Error::io(&ctx.paths.output))?;
        epoch += 1;
        first_batch = 0;
        epoch_loss = 0.0;
    }
    gather(ctx, net)
}
