//! kmeans: k-means++ initialization (greedy, with `2 + ln k` candidates per
//! center), then Lloyd iterations or mini-batch updates. Each Lloyd step
//! assigns rows in blocks (distances as `|x|^2 - 2 x.c + |c|^2`, argmin on the
//! device) and sums per-cluster sufficient statistics (sums, counts, inertia)
//! over ranks, so N ranks compute exactly the centers of one.

use tch::{Kind as TKind, Tensor};

use super::Algorithm;
use crate::artifact::ModelMeta;
use crate::checkpoint::Position;
use crate::error::{Error, Result};
use crate::hyper::{Kind, Spec};
use crate::layout::RowLayout;
use crate::par;
use crate::run::Context;
use crate::sgd::{SplitMix, permutation};

const SPECS: &[Spec] = &[
    Spec::required(
        "k",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "number of clusters",
    ),
    Spec::new(
        "init",
        Kind::Choice(&["kmeans++", "random"]),
        "kmeans++",
        "how the first centers are chosen",
    ),
    Spec::new(
        "max_iter",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "300",
        "Lloyd iterations (or mini-batch epochs) at most",
    ),
    Spec::new(
        "tol",
        Kind::Float { min: 0.0, max: 1.0 },
        "0.0001",
        "stop when the centers move less than tol x the mean feature variance",
    ),
    Spec::new(
        "mini_batch_size",
        Kind::Int {
            min: 0,
            max: 1 << 24,
        },
        "0",
        "0: Lloyd on all rows; else mini-batch k-means with this global batch",
    ),
    Spec::new(
        "init_sample",
        Kind::Int {
            min: 1,
            max: 1 << 30,
        },
        "100000",
        "rows (evenly spaced over the channel) the initialization chooses from",
    ),
    Spec::new(
        "block_rows",
        Kind::Int {
            min: 256,
            max: 1 << 22,
        },
        "8192",
        "rows per distance block (memory bound of one step)",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "kmeans",
    tables: &[SPECS],
    train,
};

/// Per-cluster sums `[k, d]` (f64), counts `[k]` (f64) and the summed squared
/// distance of rows `x` to their nearest center.
pub fn assign_stats(x: &Tensor, centers: &Tensor, block: i64) -> (Tensor, Tensor, f64) {
    let centers_c = centers.contiguous();
    if let (Some(xs), Some(cs)) = (par::cpu_f32(x), par::cpu_f32(&centers_c)) {
        let (k, d) = (centers.size()[0], centers.size()[1]);
        let (sums, counts, inertia) =
            super::kmeans_cpu::assign_stats(xs, d as usize, cs, par::threads());
        return (
            Tensor::from_slice(&sums).view([k, d]),
            Tensor::from_slice(&counts),
            inertia,
        );
    }
    assign_stats_tensor(x, centers, block)
}

/// The Lloyd update from the per-cluster `sums` `[k, d]` and `counts`
/// `[k]` (f64): each center moves to the mean of its rows (a center with no
/// rows stays where it is). Returns the new centers and the summed squared
/// shift. On the CPU it is plain Rust: as tensor operations the update cost
/// 0.3 ms an iteration (1.8 ms the first time) beside an 8-10 ms step on 1M
/// rows. Both paths round alike: the mean in f64, the shift from f32
/// differences summed in f64.
pub fn lloyd_update(sums: &Tensor, counts: &Tensor, centers: &Tensor) -> (Tensor, f64) {
    let old = centers.contiguous();
    if let (Some(old), Ok(s), Ok(c)) = (
        par::cpu_f32(&old),
        Vec::<f64>::try_from(sums.to_kind(TKind::Double).view(-1)),
        Vec::<f64>::try_from(counts.to_kind(TKind::Double)),
    ) {
        let d = old.len() / c.len().max(1);
        let mut shift = 0f64;
        let new: Vec<f32> = old
            .chunks_exact(d.max(1))
            .zip(s.chunks_exact(d.max(1)))
            .zip(&c)
            .flat_map(|((o, s), &c)| {
                o.iter()
                    .zip(s)
                    .map(move |(&o, &s)| if c == 0.0 { o } else { (s / c) as f32 })
            })
            .collect();
        for (a, b) in new.iter().zip(old) {
            shift += f64::from((a - b) * (a - b));
        }
        return (
            Tensor::from_slice(&new).view(centers.size().as_slice()),
            shift,
        );
    }
    let empty = counts.eq(0.0).unsqueeze(1);
    let new = (sums / counts.clamp_min(1.0).unsqueeze(1)).to_kind(TKind::Float);
    let new = centers.where_self(&empty, &new);
    let shift = (&new - centers)
        .square()
        .sum(TKind::Double)
        .double_value(&[]);
    (new, shift)
}

/// [`assign_stats`] with tensor operations, for any device.
pub fn assign_stats_tensor(x: &Tensor, centers: &Tensor, block: i64) -> (Tensor, Tensor, f64) {
    let _guard = tch::no_grad_guard();
    let (k, d) = (centers.size()[0], centers.size()[1]);
    let dev = centers.device();
    let sums = Tensor::zeros([k, d], (TKind::Double, dev));
    let counts = Tensor::zeros([k], (TKind::Double, dev));
    let c_sq = centers.square().sum_dim_intlist(1, false, TKind::Float);
    let ct = centers.transpose(0, 1).contiguous();
    let mut inertia = Tensor::zeros([], (TKind::Double, dev));
    let n = x.size()[0];
    for start in (0..n).step_by(block as usize) {
        let xb = x.narrow(0, start, block.min(n - start)).to_device(dev);
        let dist = xb.matmul(&ct).g_mul_scalar_(-2.0).g_add_(&c_sq);
        let (best, idx) = dist.min_dim(1, false);
        let x_sq = xb.square().sum_dim_intlist(1, false, TKind::Float);
        inertia += (best + x_sq).clamp_min(0.0).sum(TKind::Double);
        let _ = sums
            .shallow_clone()
            .index_add_(0, &idx, &xb.to_kind(TKind::Double));
        let _ = counts.shallow_clone().index_add_(
            0,
            &idx,
            &Tensor::ones([idx.size()[0]], (TKind::Double, dev)),
        );
    }
    (sums, counts, inertia.double_value(&[]))
}

/// Squared distances `[n]` of rows to one center.
fn sq_dist(x: &Tensor, c: &Tensor) -> Tensor {
    (x - c.unsqueeze(0))
        .square()
        .sum_dim_intlist(1, false, TKind::Double)
}

/// Greedy k-means++ on the rows of `x` (one rank's rows).
pub fn kmeans_pp(x: &Tensor, k: i64, rng: &mut SplitMix) -> Tensor {
    let _guard = tch::no_grad_guard();
    if let Some(xs) = par::cpu_f32(x) {
        let d = x.size()[1];
        let c = super::kmeans_cpu::kmeans_pp(xs, d as usize, k as usize, rng, par::threads());
        return Tensor::from_slice(&c).view([k, d]);
    }
    let n = x.size()[0];
    let first = rng.below(n as u64) as i64;
    let mut centers = vec![x.get(first)];
    let mut closest = sq_dist(x, &centers[0]);
    let trials = 2 + (k as f64).ln().floor() as usize;
    for _ in 1..k {
        let cum = closest.cumsum(0, TKind::Double);
        let total = cum.double_value(&[n - 1]);
        let draws: Vec<f64> = (0..trials)
            .map(|_| rng.next_u64() as f64 / u64::MAX as f64 * total)
            .collect();
        let idx = Tensor::from_slice(&draws)
            .to_device(x.device())
            .searchsorted(&cum, false, false, "left", None::<Tensor>)
            .clamp_max(n - 1);
        let mut best: Option<(f64, i64, Tensor)> = None;
        for t in 0..trials as i64 {
            let cand = idx.int64_value(&[t]);
            let d = sq_dist(x, &x.get(cand)).minimum(&closest);
            let pot = d.sum(TKind::Double).double_value(&[]);
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, d));
            }
        }
        let (_, cand, d) = best.expect("at least two trials");
        centers.push(x.get(cand));
        closest = d;
    }
    Tensor::stack(&centers, 0)
}

/// Every `stride`-th global row (at most `init_sample` rows), gathered on
/// every rank (each global row is held by one rank, which fills its place;
/// the others add zeros), so the initialization sees the same rows on any
/// number of ranks, replicated or sharded.
fn init_sample(ctx: &mut Context, x: &Tensor, layout: &RowLayout) -> Result<Tensor> {
    let global_rows = layout.global_rows();
    let stride = global_rows.div_ceil(ctx.params.usize("init_sample")).max(1);
    let m = global_rows.div_ceil(stride) as i64;
    let (local, at): (Vec<i64>, Vec<i64>) = (0..layout.local_rows())
        .map(|j| (j, layout.global(j)))
        .filter(|(_, g)| g % stride == 0)
        .map(|(j, g)| (j as i64, (g / stride) as i64))
        .unzip();
    let buffer = Tensor::zeros([m, x.size()[1]], (TKind::Float, x.device()));
    if !local.is_empty() {
        let dev = x.device();
        let rows = x.index_select(0, &Tensor::from_slice(&local).to_device(dev));
        let _ =
            buffer
                .shallow_clone()
                .index_copy_(0, &Tensor::from_slice(&at).to_device(dev), &rows);
    }
    Ok(ctx.comm.sum(&[&buffer])?.remove(0))
}

fn train(ctx: &mut Context) -> Result<()> {
    let k = ctx.params.int("k");
    let block = ctx.params.int("block_rows");
    let device = ctx.device;
    let train = ctx.read("train", false)?;
    let evals = [
        ("validation", ctx.read_eval("validation", false)?),
        ("test", ctx.read_eval("test", false)?),
    ];
    let layout = ctx.layout_of("train", &train)?;
    let x = train.x.to_device(device);
    let d = x.size()[1];
    if (layout.global_rows() as i64) < k {
        return Err(Error::data(
            "train",
            format!("{} rows cannot make k = {k} clusters", layout.global_rows()),
        ));
    }
    let n = layout.global_rows() as f64;
    // tol is relative to the mean feature variance, as in scikit-learn.
    let (_, std) = super::stats::column_moments(ctx, &x)?;
    let tol = ctx.params.float("tol") * std.square().mean(TKind::Double).double_value(&[]);
    let mut rng = SplitMix(ctx.seed());
    let max_iter = ctx.params.int("max_iter") as u64;
    // max_iter and tol only say when to stop, block_rows how to block the
    // work: a resume may change them.
    let free = ["max_iter", "tol", "block_rows"];
    let (mut centers, mut iter, mut counts_seen) = match ctx.resume(&layout, false, &free)? {
        Some((pos, saved)) => {
            let c = saved
                .get("centers")
                .ok_or_else(|| Error::Checkpoint("no centers".into()))?
                .to_device(device);
            let v = saved.get("counts").map(|t| t.to_device(device));
            eprintln!(
                "kiln-runtime: resumed from the checkpoint of iteration {}",
                pos.step
            );
            (c, pos.step, v)
        }
        None => {
            let sample = init_sample(ctx, &x, &layout)?;
            let local = if ctx.params.str("init") == "kmeans++" {
                kmeans_pp(&sample, k.min(sample.size()[0]), &mut rng)
            } else {
                let rows = sample.size()[0] as usize;
                let pick: Vec<i64> = permutation(rows, ctx.seed(), 0)[..(k as usize).min(rows)]
                    .iter()
                    .map(|&i| i as i64)
                    .collect();
                sample.index_select(0, &Tensor::from_slice(&pick).to_device(device))
            };
            (ctx.comm.broadcast(&[&local])?.remove(0), 0, None)
        }
    };
    let batch = ctx.params.usize("mini_batch_size");
    let counts_total =
        counts_seen.get_or_insert_with(|| Tensor::zeros([k], (TKind::Double, device)));
    // The CPU step runs on kiln's threads; libtorch's OpenMP workers, which
    // spin for a while after each of its parallel ops, would compete with
    // them for the same cores, so libtorch runs single-threaded meanwhile.
    let threads = (device == tch::Device::Cpu).then(|| par::TorchThreads::set(1));
    let (loop_start, first_iter) = (std::time::Instant::now(), iter);
    while iter < max_iter {
        let step_start = std::time::Instant::now();
        let (shift, msd) = if batch == 0 {
            let (sums, counts, inertia) = assign_stats(&x, &centers, block);
            let inertia_t = Tensor::from_slice(&[inertia]).to_device(device);
            let s = ctx.comm.sum(&[&sums, &counts, &inertia_t])?;
            let (new, shift) = lloyd_update(&s[0], &s[1], &centers);
            centers = new;
            (shift, s[2].double_value(&[0]) / n)
        } else {
            mini_batch_epoch(
                ctx,
                &x,
                &layout,
                &mut centers,
                counts_total,
                batch,
                iter,
                block,
            )?
        };
        iter += 1;
        let step_seconds = step_start.elapsed().as_secs_f64();
        ctx.metrics
            .emit("train:step_seconds", step_seconds, iter, Some(iter - 1));
        ctx.metrics.emit("train:msd", msd, iter, Some(iter - 1));
        let flags = ctx.comm.sum_f64(&ctx.step_flags(iter))?;
        let stop = flags[0] > 0.0;
        if stop || flags[1] > 0.0 {
            let pos = Position {
                step: iter,
                epoch: iter,
                batch: 0,
                extra: serde_json::Value::Null,
            };
            ctx.checkpoints.save(
                &pos,
                &[
                    ("centers".into(), centers.shallow_clone()),
                    ("counts".into(), counts_total.shallow_clone()),
                ],
            )?;
            if stop {
                return Err(Error::Terminated { step: iter });
            }
        }
        if batch == 0 && shift <= tol {
            break;
        }
    }
    drop(threads);
    if iter > first_iter {
        let per_iter = loop_start.elapsed().as_secs_f64() / (iter - first_iter) as f64;
        ctx.metrics
            .emit("train:iteration_seconds", per_iter, iter, None);
    }
    let (_, _, inertia) = assign_stats(&x, &centers, block);
    let inertia = ctx.comm.sum_f64(&[inertia])?[0];
    ctx.metrics.emit("train:inertia", inertia, iter, None);
    ctx.metrics.emit("train:msd", inertia / n, iter, None);
    for (channel, v) in evals.iter().filter_map(|(c, v)| v.as_ref().map(|v| (c, v))) {
        let (_, _, vi) = assign_stats(&v.x.to_device(device), &centers, block);
        ctx.metrics
            .emit(&format!("{channel}:msd"), vi / v.rows() as f64, iter, None);
        ctx.metrics
            .emit(&format!("{channel}:inertia"), vi, iter, None);
    }
    let mut meta = ModelMeta::new("kmeans", "clustering", d as usize);
    meta.model = serde_json::json!({
        "k": k,
        "prediction": "the index of the nearest row of centers (squared Euclidean distance)",
        "iterations": iter,
    });
    ctx.write_model(meta, &[("centers", &centers)])
}

/// One epoch of mini-batch k-means: per-center learning rates 1/count.
/// Returns (0, mean squared distance of the epoch's batches).
#[allow(clippy::too_many_arguments)]
fn mini_batch_epoch(
    ctx: &mut Context,
    x: &Tensor,
    layout: &RowLayout,
    centers: &mut Tensor,
    counts_total: &mut Tensor,
    batch: usize,
    epoch: u64,
    block: i64,
) -> Result<(f64, f64)> {
    let n = layout.global_rows();
    let perm = permutation(n, ctx.seed(), epoch);
    let (k, d) = (centers.size()[0], centers.size()[1]);
    let dev = x.device();
    let mut total = 0.0;
    for ids in perm.chunks(batch) {
        let local = layout.locals(ids);
        // A rank none of whose rows is in the batch adds zeros.
        let (sums, counts, inertia) = if local.is_empty() {
            (
                Tensor::zeros([k, d], (TKind::Double, dev)),
                Tensor::zeros([k], (TKind::Double, dev)),
                0.0,
            )
        } else {
            let xb = x.index_select(0, &Tensor::from_slice(&local).to_device(dev));
            assign_stats(&xb, centers, block)
        };
        let inertia_t = Tensor::from_slice(&[inertia]).to_device(dev);
        let s = ctx.comm.sum(&[&sums, &counts, &inertia_t])?;
        *counts_total += &s[1];
        let rate = (&s[1] / counts_total.clamp_min(1.0)).unsqueeze(1);
        let mean = &s[0] / s[1].clamp_min(1.0).unsqueeze(1);
        let moved = centers.to_kind(TKind::Double) * (rate.ones_like() - &rate) + mean * &rate;
        *centers = moved.to_kind(TKind::Float);
        total += s[2].double_value(&[0]);
    }
    Ok((0.0, total / n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lloyd_update_moves_centers_to_means_and_keeps_empty_ones() {
        // 3 centers in 2-d; the middle one got no rows.
        let centers = Tensor::from_slice(&[1.0f32, 2.0, 5.0, 5.0, -1.0, 0.5]).view([3, 2]);
        let sums = Tensor::from_slice(&[4.0f64, 6.0, 0.0, 0.0, -3.0, 3.0]).view([3, 2]);
        let counts = Tensor::from_slice(&[2.0f64, 0.0, 3.0]);
        let (new, shift) = lloyd_update(&sums, &counts, &centers);
        let got = Vec::<f32>::try_from(new.view(-1)).unwrap();
        assert_eq!(got, vec![2.0, 3.0, 5.0, 5.0, -1.0, 1.0]);
        // (1 + 1) + 0 + (0 + 0.25)
        assert_eq!(shift, 2.25);
        // The tensor path (taken off the CPU fast path here by f64
        // centers) gives the same.
        let (tnew, tshift) = lloyd_update(&sums, &counts, &centers.to_kind(TKind::Double));
        assert_eq!(
            Vec::<f64>::try_from(tnew.view(-1)).unwrap(),
            vec![2.0, 3.0, 5.0, 5.0, -1.0, 1.0]
        );
        assert_eq!(tshift, shift);
    }
}
