//! kmeans: k-means++ initialization (greedy, with `2 + ln k` candidates per
//! center), then Lloyd iterations or mini-batch updates. Each Lloyd step
//! assigns rows in blocks (distances as `|x|^2 - 2 x.c + |c|^2`, argmin on the
//! device) and sums per-cluster sufficient statistics (sums, counts, inertia)
//! over ranks, so N ranks compute exactly the centers of one.
//!
//! That distance shortcut in float32 rounds relative to `|x|^2`, so all the
//! arithmetic runs on the rows less their training mean (distances do not
//! change under a translation): features with a large offset (1e3 to 1e5)
//! are then assigned as exactly as features around 0, where the raw rows
//! had 4% (offset 1e3) to 80% (1e4) of them assigned by rounding noise in
//! the tests below. The saved centers are moved back by the mean. A cluster left without rows in a Lloyd step
//! takes the row farthest from its center, as scikit-learn does.

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
/// distance of rows `x` to their nearest center. Rows and centers should be
/// centered ([`center_rows`]): see the module's note on precision.
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

/// Subtracts `offset` (`[d]`) from every row of `x` (`[n, d]`), in place:
/// k-means runs on its rows less their training mean, where the float32
/// distance shortcut keeps its precision.
pub fn center_rows(x: &Tensor, offset: &Tensor) {
    let _guard = tch::no_grad_guard();
    let _ = x.shallow_clone().g_sub_(&offset.to_device(x.device()));
}

/// The nearest center of each row of `x` (`[n]`, int64), as
/// [`assign_stats`] assigns it.
pub fn nearest_centers(x: &Tensor, centers: &Tensor, block: i64) -> Tensor {
    let centers_c = centers.contiguous();
    if let (Some(xs), Some(cs)) = (par::cpu_f32(x), par::cpu_f32(&centers_c)) {
        let d = centers.size()[1] as usize;
        let labels: Vec<i64> = super::kmeans_cpu::nearest_centers(xs, d, cs, par::threads())
            .into_iter()
            .map(i64::from)
            .collect();
        return Tensor::from_slice(&labels);
    }
    nearest_centers_tensor(x, centers, block)
}

/// `|c|^2` and the transposed centers, for [`block_distances`].
fn center_terms(centers: &Tensor) -> (Tensor, Tensor) {
    (
        centers.square().sum_dim_intlist(1, false, TKind::Float),
        centers.transpose(0, 1).contiguous(),
    )
}

/// `|c|^2 - 2 x.c` (the squared distance less `|x|^2`) of rows `xb` to
/// every center, `[b, k]`.
fn block_distances(xb: &Tensor, c_sq: &Tensor, ct: &Tensor) -> Tensor {
    xb.matmul(ct).g_mul_scalar_(-2.0).g_add_(c_sq)
}

/// [`nearest_centers`] with tensor operations, for any device.
pub fn nearest_centers_tensor(x: &Tensor, centers: &Tensor, block: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let dev = centers.device();
    let (c_sq, ct) = center_terms(centers);
    let n = x.size()[0];
    let parts: Vec<Tensor> = (0..n)
        .step_by(block as usize)
        .map(|start| {
            let xb = x.narrow(0, start, block.min(n - start)).to_device(dev);
            block_distances(&xb, &c_sq, &ct).argmin(1, false)
        })
        .collect();
    if parts.is_empty() {
        return Tensor::zeros([0], (TKind::Int64, dev));
    }
    Tensor::cat(&parts, 0)
}

/// [`assign_stats`] with tensor operations, for any device.
pub fn assign_stats_tensor(x: &Tensor, centers: &Tensor, block: i64) -> (Tensor, Tensor, f64) {
    let _guard = tch::no_grad_guard();
    let (k, d) = (centers.size()[0], centers.size()[1]);
    let dev = centers.device();
    let sums = Tensor::zeros([k, d], (TKind::Double, dev));
    let counts = Tensor::zeros([k], (TKind::Double, dev));
    let (c_sq, ct) = center_terms(centers);
    let mut inertia = Tensor::zeros([], (TKind::Double, dev));
    let n = x.size()[0];
    for start in (0..n).step_by(block as usize) {
        let xb = x.narrow(0, start, block.min(n - start)).to_device(dev);
        let dist = block_distances(&xb, &c_sq, &ct);
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

/// Every `stride`-th global row (at most `init_sample` rows, at least
/// `k`), gathered on every rank (each global row is held by one rank, which
/// fills its place; the others add zeros), so the initialization sees the
/// same rows on any number of ranks, replicated or sharded.
fn init_sample(ctx: &mut Context, x: &Tensor, layout: &RowLayout, k: usize) -> Result<Tensor> {
    let global_rows = layout.global_rows();
    let mut stride = global_rows.div_ceil(ctx.params.usize("init_sample")).max(1);
    if global_rows.div_ceil(stride) < k {
        // Rounding left fewer than k rows (10 rows, init_sample 7: every
        // second row, 5): take every row that many apart that k fit.
        stride = (global_rows / k).max(1);
    }
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

/// The rows of `x` (this rank's) farthest from their nearest center, as
/// [`assign_stats`] assigns them: at most `m` of (squared distance in f64,
/// local row, center), farthest first, ties to the lower row. Blocked, for
/// any device.
fn farthest_rows(x: &Tensor, centers: &Tensor, m: usize, block: i64) -> Vec<(f64, usize, usize)> {
    let _guard = tch::no_grad_guard();
    let labels = nearest_centers(x, centers, block);
    let dev = centers.device();
    let n = x.size()[0];
    let mut out: Vec<(f64, usize, usize)> = Vec::new();
    for start in (0..n).step_by(block as usize) {
        let len = block.min(n - start);
        let xb = x.narrow(0, start, len).to_device(dev);
        let lb = labels.narrow(0, start, len).to_device(dev);
        let dist = (&xb - centers.index_select(0, &lb))
            .to_kind(TKind::Double)
            .square()
            .sum_dim_intlist(1, false, TKind::Double);
        let (v, i) = dist.topk((m as i64).min(len), 0, true, true);
        let l = lb.index_select(0, &i);
        let to = |t: &Tensor| t.to_device(tch::Device::Cpu);
        let (v, i, l) = (
            Vec::<f64>::try_from(to(&v)).unwrap_or_default(),
            Vec::<i64>::try_from(to(&i)).unwrap_or_default(),
            Vec::<i64>::try_from(to(&l)).unwrap_or_default(),
        );
        for ((v, i), l) in v.into_iter().zip(i).zip(l) {
            out.push((v, (start + i) as usize, l as usize));
        }
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out.truncate(m);
    }
    out
}

/// Gives each center that got no rows in this Lloyd step (`counts` 0) one
/// of the rows farthest from their centers over all ranks (farthest first,
/// ties to the lower global row), as scikit-learn does: the row leaves its
/// cluster's `sums` and `counts` and becomes the empty cluster's only row,
/// so the update puts the center on it. `sums` `[k, d]` and `counts` `[k]`
/// are the statistics summed over ranks (the same on every rank, so every
/// rank takes part or none does). Returns how many centers moved.
fn relocate_empty(
    ctx: &mut Context,
    x: &Tensor,
    layout: &RowLayout,
    centers: &Tensor,
    stats: (&mut Tensor, &mut Tensor),
    block: i64,
) -> Result<usize> {
    let (sums, counts) = stats;
    let mut c = Vec::<f64>::try_from(counts.to_kind(TKind::Double).to_device(tch::Device::Cpu))?;
    let empty: Vec<usize> = (0..c.len()).filter(|&i| c[i] == 0.0).collect();
    if empty.is_empty() {
        return Ok(0);
    }
    let (k, d) = (centers.size()[0], centers.size()[1] as usize);
    let mut offer = Vec::new();
    for (dist, j, center) in farthest_rows(x, centers, empty.len(), block) {
        let row = Vec::<f32>::try_from(x.get(j as i64).to_device(tch::Device::Cpu))?;
        offer.extend([dist, layout.global(j) as f64, center as f64]);
        offer.extend(row.into_iter().map(f64::from));
    }
    let offers = ctx.comm.gather_f64(&offer)?;
    let mut rows: Vec<&[f64]> = offers.iter().flat_map(|o| o.chunks_exact(3 + d)).collect();
    rows.sort_by(|a, b| b[0].total_cmp(&a[0]).then(a[1].total_cmp(&b[1])));
    let mut s = Vec::<f64>::try_from(
        sums.to_kind(TKind::Double)
            .to_device(tch::Device::Cpu)
            .view(-1),
    )?;
    for (&e, row) in empty.iter().zip(&rows) {
        let (from, values) = (row[2] as usize, &row[3..]);
        if c[from] > 1.0 {
            for (s, v) in s[from * d..(from + 1) * d].iter_mut().zip(values) {
                *s -= v;
            }
            c[from] -= 1.0;
        }
        s[e * d..(e + 1) * d].copy_from_slice(values);
        c[e] = 1.0;
    }
    let dev = sums.device();
    *sums = Tensor::from_slice(&s).view([k, d as i64]).to_device(dev);
    *counts = Tensor::from_slice(&c).to_device(dev);
    Ok(empty.len().min(rows.len()))
}

/// A checkpoint's tensor `name`, which must have `shape`.
fn saved(
    saved: &std::collections::BTreeMap<String, Tensor>,
    name: &str,
    shape: &[i64],
    step: u64,
    what: &str,
) -> Result<Tensor> {
    let t = saved.get(name).ok_or_else(|| {
        Error::Checkpoint(format!("the checkpoint of iteration {step} has no {name}"))
    })?;
    if t.size() != shape {
        return Err(Error::Checkpoint(format!(
            "the checkpoint of iteration {step} holds {name} of shape {:?}; this run needs {shape:?} ({what}): it was written for other data",
            t.size()
        )));
    }
    Ok(t.shallow_clone())
}

fn train(ctx: &mut Context) -> Result<()> {
    let k = ctx.params.int("k");
    let block = ctx.params.int("block_rows");
    let sample_rows = ctx.params.int("init_sample");
    if sample_rows < k {
        return Err(Error::hyper(
            "init_sample",
            format!(
                "init_sample {sample_rows} is below k = {k}: the initialization picks the k centers among init_sample rows"
            ),
        ));
    }
    let device = ctx.device;
    let train = ctx.read("train", false)?;
    let evals = [
        ("validation", ctx.read_eval("validation", false)?),
        ("test", ctx.read_eval("test", false)?),
    ];
    let layout = ctx.layout_of("train", &train)?;
    let x = train.x.to_device(device);
    drop(train);
    let d = x.size()[1];
    if (layout.global_rows() as i64) < k {
        return Err(Error::data(
            "train",
            format!("{} rows cannot make k = {k} clusters", layout.global_rows()),
        ));
    }
    let n = layout.global_rows() as f64;
    // tol is relative to the mean feature variance, as in scikit-learn.
    let (mean, std) = super::stats::column_moments(ctx, &x)?;
    let tol = ctx.params.float("tol") * std.square().mean(TKind::Double).double_value(&[]);
    let mut rng = SplitMix(ctx.seed());
    let max_iter = ctx.params.int("max_iter") as u64;
    // max_iter and tol only say when to stop, block_rows how to block the
    // work: a resume may change them.
    let free = ["max_iter", "tol", "block_rows"];
    // Every distance is taken between rows and centers less `offset`, the
    // training mean (a resumed run keeps the one it started with, so that
    // it continues bit for bit), and the saved centers get it back.
    let resumed = match ctx.resume(&layout, false, &free)? {
        Some((pos, saved_state)) => {
            let step = pos.step;
            let shape = format!("k = {k} centers of {d} features");
            let c = saved(&saved_state, "centers", &[k, d], step, &shape)?
                .to_kind(TKind::Float)
                .to_device(device);
            let v = match saved_state.get("counts") {
                Some(_) => Some(
                    saved(&saved_state, "counts", &[k], step, "one count per center")?
                        .to_device(device),
                ),
                None => None,
            };
            // A checkpoint without an offset holds centers in the rows'
            // own coordinates (written before the rows were centered).
            let offset = match saved_state.get("offset") {
                Some(_) => saved(&saved_state, "offset", &[d], step, "one per feature")?
                    .to_kind(TKind::Float),
                None => {
                    center_rows(&c, &mean);
                    mean.shallow_clone()
                }
            };
            eprintln!("kiln-runtime: resumed from the checkpoint of iteration {step}");
            Some((c, step, v, offset.to_device(device)))
        }
        None => None,
    };
    let offset = match &resumed {
        Some((.., offset)) => offset.shallow_clone(),
        None => mean.to_device(device),
    };
    center_rows(&x, &offset);
    let (mut centers, mut iter, mut counts_seen) = match resumed {
        Some((c, step, v, _)) => (c, step, v),
        None => {
            let sample = init_sample(ctx, &x, &layout, k as usize)?;
            let local = if ctx.params.str("init") == "kmeans++" {
                kmeans_pp(&sample, k, &mut rng)
            } else {
                let rows = sample.size()[0] as usize;
                let pick: Vec<i64> = permutation(rows, ctx.seed(), 0)[..k as usize]
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
            let mut s = ctx.comm.sum(&[&sums, &counts, &inertia_t])?;
            let msd = s[2].double_value(&[0]) / n;
            let (sums, rest) = s.split_at_mut(1);
            let moved = relocate_empty(
                ctx,
                &x,
                &layout,
                &centers,
                (&mut sums[0], &mut rest[0]),
                block,
            )?;
            if moved > 0 {
                eprintln!(
                    "kiln-runtime: iteration {}: {moved} empty clusters moved to the rows farthest from their centers",
                    iter + 1
                );
            }
            let (new, shift) = lloyd_update(&s[0], &s[1], &centers);
            centers = new;
            (shift, msd)
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
                    ("offset".into(), offset.shallow_clone()),
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
        let vx = v.x.to_device(device).copy();
        center_rows(&vx, &offset);
        let (_, _, vi) = assign_stats(&vx, &centers, block);
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
    let centers = &centers + &offset;
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

    /// Roughly normal values (sums of 4 uniforms in [-1, 1]).
    fn noise(len: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        (0..len)
            .map(|_| {
                (0..4)
                    .map(|_| rng.next_u64() as f64 / u64::MAX as f64 * 2.0 - 1.0)
                    .sum()
            })
            .collect()
    }

    /// Of the nearest centers `got` of the rows `x`, how many are not the
    /// nearest by exact float64 distances (from the float32 values), and
    /// how many differ from it only at an exact tie.
    fn misses(x: &[f32], c: &[f32], d: usize, got: &Tensor) -> (usize, usize) {
        let got = Vec::<i64>::try_from(got).unwrap();
        let dist = |i: usize, j: usize| -> f64 {
            (0..d)
                .map(|f| f64::from(x[i * d + f]) - f64::from(c[j * d + f]))
                .map(|v| v * v)
                .sum()
        };
        let k = c.len() / d;
        let (mut wrong, mut ties) = (0, 0);
        for (i, &g) in got.iter().enumerate() {
            let exact = (0..k)
                .min_by(|&a, &b| dist(i, a).total_cmp(&dist(i, b)))
                .unwrap();
            if g as usize != exact {
                if dist(i, g as usize) == dist(i, exact) {
                    ties += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        (wrong, ties)
    }

    #[test]
    fn rows_go_to_the_exactly_nearest_center_at_large_offsets() {
        // 6 centers about 2 apart, rows around them, all offset by up to
        // 1e5: k-means' frame (less the rows' mean) on both CPU paths
        // assigns every row as exact float64 distances do.
        let (n, d, k) = (4000, 8, 6);
        let c0 = noise(k * d, 3);
        let jitter = noise(n * d, 4);
        for offset in [0.0, 1e3, 1e4, 1e5] {
            let x: Vec<f32> = (0..n * d)
                .map(|i| (offset + c0[(i / d % k) * d + i % d] + jitter[i]) as f32)
                .collect();
            let c: Vec<f32> = c0.iter().map(|v| (offset + v) as f32).collect();
            let xt = Tensor::from_slice(&x).view([n as i64, d as i64]);
            let ct = Tensor::from_slice(&c).view([k as i64, d as i64]);
            let mean = xt.mean_dim(0, false, TKind::Double).to_kind(TKind::Float);
            let (xc, cc) = (xt.copy(), ct.copy());
            center_rows(&xc, &mean);
            center_rows(&cc, &mean);
            let cpu = misses(&x, &c, d, &nearest_centers(&xc, &cc, 512));
            let tensor = misses(&x, &c, d, &nearest_centers_tensor(&xc, &cc, 512));
            let raw = misses(&x, &c, d, &nearest_centers(&xt, &ct, 512));
            // The statistics of a step agree with those labels.
            let (_, counts, inertia) = assign_stats(&xc, &cc, 512);
            let (_, _, raw_inertia) = assign_stats(&xt, &ct, 512);
            let labels = Vec::<i64>::try_from(nearest_centers(&xc, &cc, 512)).unwrap();
            let mut want = vec![0.0; k];
            let mut exact_inertia = 0.0;
            for (i, &l) in labels.iter().enumerate() {
                want[l as usize] += 1.0;
                exact_inertia += (0..d)
                    .map(|f| f64::from(x[i * d + f]) - f64::from(c[l as usize * d + f]))
                    .map(|v| v * v)
                    .sum::<f64>();
            }
            eprintln!(
                "offset {offset:e}: rows not at the exactly nearest center (and at ties): centered cpu {cpu:?}, centered tensor {tensor:?}, raw rows {raw:?} of {n}; inertia exact {exact_inertia:.6e}, centered {inertia:.6e}, raw rows {raw_inertia:.6e}"
            );
            assert_eq!(cpu.0, 0, "offset {offset}: {cpu:?}");
            assert_eq!(tensor.0, 0, "offset {offset}: {tensor:?}");
            assert_eq!(Vec::<f64>::try_from(counts).unwrap(), want);
            assert!((inertia - exact_inertia).abs() < 1e-5 * exact_inertia);
            if offset >= 1e3 {
                // The data is hard enough to show the difference.
                assert!(raw.0 > 0, "offset {offset}: {raw:?}");
            }
        }
    }

    #[test]
    fn farthest_rows_are_the_largest_distances_to_the_assigned_center() {
        // Rows 0 to 9 on a line, centers at 0 and 4 (row 2, 2 from both,
        // goes to center 0): the farthest from their center are 9, 8 and 7
        // (5, 4 and 3 from center 1), then 2.
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let xt = Tensor::from_slice(&x).view([10, 1]);
        let ct = Tensor::from_slice(&[0.0f32, 4.0]).view([2, 1]);
        for block in [3, 256] {
            let far = farthest_rows(&xt, &ct, 3, block);
            assert_eq!(far, vec![(25.0, 9, 1), (16.0, 8, 1), (9.0, 7, 1)]);
        }
    }

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
