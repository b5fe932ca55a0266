//! knn: k-nearest neighbours, classification (majority vote, ties to the
//! smaller class) and regression (mean of the neighbours' labels). Training
//! keeps the rows (gathered from every rank); queries are answered in blocks
//! with distances as `|q|^2 - 2 q.x + |x|^2` and `topk` on the device.
//!
//! That shortcut in float32 rounds relative to `|x|^2`, so [`Neighbours`]
//! holds the rows less their mean and moves each query by the same mean
//! (distances do not change under a translation): with features offset by
//! 1e3 to 1e5 the neighbours are then those of exact float64 distances, as
//! around 0. The saved model keeps the rows as they were; the mean is taken
//! again when a model is loaded to serve.

use tch::{Device, Kind as TKind, Tensor};

use super::Algorithm;
use crate::artifact::ModelMeta;
use crate::error::{Error, Result};
use crate::eval::{Task, emit_scores};
use crate::hyper::{Kind, Spec};
use crate::par;
use crate::run::Context;

const SPECS: &[Spec] = &[
    Spec::required(
        "k",
        Kind::Int {
            min: 1,
            max: 10_000,
        },
        "neighbours per query",
    ),
    Spec::required(
        "predictor_type",
        Kind::Choice(&["classifier", "regressor"]),
        "vote or average",
    ),
    Spec::new(
        "num_classes",
        Kind::Int {
            min: 0,
            max: 100_000,
        },
        "0",
        "classes of a classifier (labels 0..num_classes-1)",
    ),
    Spec::new(
        "query_block",
        Kind::Int {
            min: 1,
            max: 1 << 20,
        },
        "1024",
        "queries per distance block",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "knn",
    tables: &[SPECS],
    train,
};

/// The rows of a kNN model ready for queries: less their mean, with the
/// squared norms of the centered rows, on the model's device.
pub struct Neighbours {
    /// `[n, d]` float32, contiguous: the rows less `mean`.
    points: Tensor,
    /// `[d]` float32: the mean of the rows.
    mean: Tensor,
    /// `[n]` float32: `|p|^2` of the centered rows.
    p_sq: Tensor,
    labels: Tensor,
}

impl Neighbours {
    /// The rows `points` (`[n, d]`) and their `labels` (`[n]`), centered
    /// on the rows' mean (summed in f64).
    pub fn new(points: &Tensor, labels: &Tensor) -> Self {
        let _guard = tch::no_grad_guard();
        let points = points.to_kind(TKind::Float).contiguous();
        let (n, d) = (points.size()[0], points.size()[1]);
        let sums = match par::cpu_f32(&points) {
            Some(p) => Tensor::from_slice(&par::column_sums(p, d as usize, None, par::threads())),
            None => points
                .sum_dim_intlist(0, false, TKind::Double)
                .to_device(Device::Cpu),
        };
        let mean = (sums / n.max(1) as f64)
            .to_kind(TKind::Float)
            .to_device(points.device());
        Self::with_mean(&points, labels, mean)
    }

    /// [`Neighbours::new`] centered on `mean` instead of the rows' own.
    fn with_mean(points: &Tensor, labels: &Tensor, mean: Tensor) -> Self {
        let _guard = tch::no_grad_guard();
        let points = (points.to_kind(TKind::Float) - &mean).contiguous();
        let p_sq = points.square().sum_dim_intlist(1, false, TKind::Float);
        Neighbours {
            points,
            mean,
            p_sq,
            labels: labels.shallow_clone(),
        }
    }

    /// Rows held.
    pub fn rows(&self) -> i64 {
        self.points.size()[0]
    }

    /// `queries` less the rows' mean, on the rows' device.
    fn centered(&self, queries: &Tensor) -> Tensor {
        (queries
            .to_device(self.points.device())
            .to_kind(TKind::Float)
            - &self.mean)
            .contiguous()
    }

    /// Predictions for `queries` (`[nq, d]`): the majority label (ties: the
    /// smaller) or the mean label of the `k` nearest rows.
    pub fn predict(&self, queries: &Tensor, k: i64, task: Task, block: i64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let q = self.centered(queries);
        let k = k.clamp(1, self.rows().max(1));
        if let Some(nearest) = self.nearest_cpu(&q, k)
            && let Ok(labels) =
                Vec::<f32>::try_from(self.labels.to_kind(TKind::Float).reshape([-1]))
        {
            let classes = task.outputs().max(2) as usize;
            let mut votes = vec![0u32; classes];
            let pred: Vec<f32> = nearest
                .chunks_exact(k as usize)
                .map(|nb| match task {
                    Task::Regressor => nb.iter().map(|&i| labels[i]).sum::<f32>() / k as f32,
                    _ => {
                        votes.fill(0);
                        for &i in nb {
                            let l = labels[i].max(0.0) as usize;
                            votes[l.min(classes - 1)] += 1;
                        }
                        // The first maximum: ties go to the smaller label.
                        let top = votes.iter().copied().max().unwrap_or(0);
                        votes.iter().position(|&v| v == top).unwrap_or(0) as f32
                    }
                })
                .collect();
            return Tensor::from_slice(&pred);
        }
        self.predict_tensor(&q, k, task, block)
    }

    /// The `k` nearest rows of each query, nearest first: `[nq, k]` int64
    /// row indices.
    pub fn nearest(&self, queries: &Tensor, k: i64, block: i64) -> Tensor {
        let _guard = tch::no_grad_guard();
        let q = self.centered(queries);
        let k = k.clamp(1, self.rows().max(1));
        match self.nearest_cpu(&q, k) {
            Some(idx) => {
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                Tensor::from_slice(&idx).view([-1, k])
            }
            None => self.nearest_tensor(&q, k, block),
        }
    }

    /// [`Neighbours::nearest`] with tensor operations (`topk`), for any
    /// device; `q` is centered.
    fn nearest_tensor(&self, q: &Tensor, k: i64, block: i64) -> Tensor {
        let pt = self.points.transpose(0, 1);
        let p_sq = self.p_sq.unsqueeze(0);
        let n = q.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(block.max(1) as usize)
            .map(|start| {
                let qb = q.narrow(0, start, block.min(n - start));
                let dist = qb.matmul(&pt).g_mul_scalar_(-2.0).g_add_(&p_sq);
                dist.topk(k, 1, false, true).1
            })
            .collect();
        if parts.is_empty() {
            return Tensor::zeros([0, k], (TKind::Int64, self.points.device()));
        }
        Tensor::cat(&parts, 0)
    }

    /// [`Neighbours::predict`] with tensor operations, for any device; `q`
    /// is centered.
    fn predict_tensor(&self, q: &Tensor, k: i64, task: Task, block: i64) -> Tensor {
        let idx = self.nearest_tensor(q, k, block);
        let neighbour = self.labels.index_select(0, &idx.view(-1)).view([-1, k]);
        match task {
            Task::Regressor => neighbour
                .to_kind(TKind::Float)
                .mean_dim(1, false, TKind::Float),
            _ => {
                let classes = task.outputs().max(2);
                let votes = neighbour
                    .to_kind(TKind::Int64)
                    .one_hot(classes)
                    .sum_dim_intlist(1, false, TKind::Float);
                votes.argmax(1, false).to_kind(TKind::Float)
            }
        }
    }

    /// The `k` nearest rows of each centered query `q` on the CPU, row
    /// indices nearest first (ties: the earlier row), without materializing
    /// more than one tile of distances per thread: each thread takes a
    /// range of queries, computes `q.p` for a tile of points with one
    /// matmul, and keeps the `k` smallest `|p|^2 - 2 q.p` per query as it
    /// scans. `None` when the tensors are not float32 CPU tensors.
    fn nearest_cpu(&self, q: &Tensor, k: i64) -> Option<Vec<usize>> {
        let (p, q) = (par::cpu_f32(&self.points)?, par::cpu_f32(q)?);
        let p_sq = par::cpu_f32(&self.p_sq)?;
        let d = self.points.size()[1] as usize;
        let np = p_sq.len();
        let k = (k.max(1) as usize).min(np);
        let nq = q.len().checked_div(d).unwrap_or(0);
        let parts = par::map_ranges(nq, par::threads(), |range| {
            let _guard = tch::no_grad_guard();
            let mut out = Vec::with_capacity(range.len() * k);
            let mut best = vec![(f32::INFINITY, 0usize); QUERY_BLOCK * k];
            par::with_matrix(p, d, |pt| {
                for qs in (range.start..range.end).step_by(QUERY_BLOCK) {
                    let qn = QUERY_BLOCK.min(range.end - qs);
                    best[..qn * k].fill((f32::INFINITY, 0));
                    par::with_matrix(&q[qs * d..(qs + qn) * d], d, |qb| {
                        for ps in (0..np).step_by(POINT_TILE) {
                            let pn = POINT_TILE.min(np - ps);
                            let dots = qb.mm(&pt.narrow(0, ps as i64, pn as i64).transpose(0, 1));
                            let Some(dots) = par::cpu_f32(&dots) else {
                                continue;
                            };
                            for (qi, row) in dots.chunks_exact(pn).enumerate() {
                                scan_tile(
                                    row,
                                    &p_sq[ps..ps + pn],
                                    ps,
                                    &mut best[qi * k..(qi + 1) * k],
                                );
                            }
                        }
                    });
                    out.extend(best[..qn * k].iter().map(|&(_, i)| i));
                }
            });
            out
        });
        Some(parts.into_iter().flatten().collect())
    }
}

/// Queries per block and points per tile of the CPU path: one block's
/// distances to one tile (128 x 2048 floats) stay in cache while scanned.
const QUERY_BLOCK: usize = 128;
const POINT_TILE: usize = 2048;

/// Merges one tile's distances (`p_sq[j] - 2 dots[j]` for point `first + j`)
/// into `best`, the `k` nearest so far sorted by distance.
#[inline]
fn scan_tile(dots: &[f32], p_sq: &[f32], first: usize, best: &mut [(f32, usize)]) {
    const CHUNK: usize = 16;
    let k = best.len();
    let mut worst = best[k - 1].0;
    let (dc, dr) = dots.as_chunks::<CHUNK>();
    let (pc, pr) = p_sq.as_chunks::<CHUNK>();
    let mut consider = |j: usize, dist: f32, worst: &mut f32| {
        if dist < *worst {
            let mut at = k - 1;
            while at > 0 && best[at - 1].0 > dist {
                best[at] = best[at - 1];
                at -= 1;
            }
            best[at] = (dist, first + j);
            *worst = best[k - 1].0;
        }
    };
    for (c, (dv, pv)) in dc.iter().zip(pc).enumerate() {
        let mut dist = [0f32; CHUNK];
        let mut low = f32::INFINITY;
        for l in 0..CHUNK {
            dist[l] = pv[l] - 2.0 * dv[l];
            low = low.min(dist[l]);
        }
        // Most chunks hold no point nearer than the current k-th.
        if low < worst {
            for (l, &v) in dist.iter().enumerate() {
                consider(c * CHUNK + l, v, &mut worst);
            }
        }
    }
    let base = dc.len() * CHUNK;
    for (l, (&dv, &pv)) in dr.iter().zip(pr).enumerate() {
        consider(base + l, pv - 2.0 * dv, &mut worst);
    }
}

/// Scores of predictions (class indices or values) against labels.
pub fn score(task: Task, pred: &Tensor, y: &Tensor) -> Vec<(&'static str, f64)> {
    let y = y.to_kind(TKind::Float).to_device(pred.device());
    match task {
        Task::Regressor => {
            let sse = (pred - &y).square().sum(TKind::Double).double_value(&[]);
            let sst = (&y - y.mean(TKind::Float))
                .square()
                .sum(TKind::Double)
                .double_value(&[]);
            let n = y.size()[0].max(1) as f64;
            vec![
                ("r2", if sst > 0.0 { 1.0 - sse / sst } else { 0.0 }),
                ("mse", sse / n),
            ]
        }
        _ => vec![(
            "accuracy",
            pred.eq_tensor(&y)
                .to_kind(TKind::Double)
                .mean(TKind::Double)
                .double_value(&[]),
        )],
    }
}

/// Every rank's rows on every rank, in global row order.
fn gather(
    ctx: &mut Context,
    x: &Tensor,
    y: &Tensor,
    global_rows: usize,
) -> Result<(Tensor, Tensor)> {
    if ctx.comm.world == 1 {
        return Ok((x.shallow_clone(), y.shallow_clone()));
    }
    let (rank, world) = (ctx.comm.rank as i64, ctx.comm.world as i64);
    let d = x.size()[1];
    let gx = Tensor::zeros([global_rows as i64, d], (TKind::Float, x.device()));
    let gy = Tensor::zeros([global_rows as i64], (TKind::Float, x.device()));
    let idx = Tensor::arange(x.size()[0], (TKind::Int64, x.device())) * world + rank;
    let _ = gx.shallow_clone().index_copy_(0, &idx, x);
    let _ = gy.shallow_clone().index_copy_(0, &idx, y);
    let mut s = ctx.comm.sum(&[&gx, &gy])?;
    let gy = s.pop().expect("two tensors");
    Ok((s.pop().expect("two tensors"), gy))
}

fn train(ctx: &mut Context) -> Result<()> {
    let device: Device = ctx.device;
    let task = match ctx.params.str("predictor_type") {
        "regressor" => Task::Regressor,
        _ => Task::parse("multiclass_classifier", ctx.params.int("num_classes"))?,
    };
    let k = ctx.params.int("k");
    let block = ctx.params.int("query_block");
    let train = ctx.read("train", true)?;
    let _checked = task.prepare_labels("train", train.labels("train")?)?;
    if (train.global_rows as i64) < k {
        return Err(Error::data(
            "train",
            format!("{} rows are fewer than k = {k}", train.global_rows),
        ));
    }
    let sharded = ctx
        .config
        .channels
        .get("train")
        .is_some_and(|c| c.sharded_by_key());
    if sharded && ctx.comm.world > 1 {
        return Err(Error::data(
            "train",
            "knn needs every row: use FullyReplicated distribution",
        ));
    }
    let (points, labels) = gather(
        ctx,
        &train.x.to_device(device),
        &train.labels("train")?.to_device(device),
        train.global_rows,
    )?;
    drop(train);
    // The centered copy of the rows, made when there is something to
    // evaluate.
    let mut model: Option<Neighbours> = None;
    for channel in ["validation", "test"] {
        if let Some(v) = ctx.read_eval(channel, true)? {
            let y = task.prepare_labels(channel, v.labels(channel)?)?;
            let model = model.get_or_insert_with(|| Neighbours::new(&points, &labels));
            let pred = model.predict(&v.x, k, task, block);
            let scores = score(task, &pred, &y);
            emit_scores(&mut ctx.metrics, channel, &scores, 1, None);
        }
    }
    drop(model);
    let mut meta = ModelMeta::new("knn", task.name(), points.size()[1] as usize);
    meta.num_classes = task.classes();
    meta.model = serde_json::json!({
        "k": k,
        "distance": "euclidean",
        "prediction": match task {
            Task::Regressor => "mean label of the k nearest rows of points",
            _ => "most frequent label among the k nearest rows of points (ties: the smaller label)",
        },
    });
    ctx.write_model(meta, &[("points", &points), ("labels", &labels)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgd::SplitMix;

    fn uniform(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        (0..len)
            .map(|_| rng.below(1 << 24) as f32 / (1 << 20) as f32)
            .collect()
    }

    #[test]
    fn cpu_path_matches_topk() {
        // Sizes around the block and tile edges, k = 1, odd k, k = all points.
        for (np, nq, d, k, classes) in [
            (5000, 300, 7, 5, 4),
            (2049, 129, 3, 1, 3),
            (50, 17, 50, 50, 2),
            (3000, 64, 16, 9, 0),
        ] {
            let p = Tensor::from_slice(&uniform(np * d, 1)).view([np as i64, d as i64]);
            let q = Tensor::from_slice(&uniform(nq * d, 2)).view([nq as i64, d as i64]);
            let task = if classes == 0 {
                Task::Regressor
            } else {
                Task::parse("multiclass_classifier", classes).unwrap()
            };
            let raw = uniform(np, 3);
            let labels: Vec<f32> = raw
                .iter()
                .map(|v| {
                    if classes == 0 {
                        *v
                    } else {
                        (*v as i64 % classes) as f32
                    }
                })
                .collect();
            let labels = Tensor::from_slice(&labels);
            let model = Neighbours::new(&p, &labels);
            let fast = model.predict(&q, k, task, 100);
            let slow = model.predict_tensor(&model.centered(&q), k, task, 100);
            let (fast, slow) = (
                Vec::<f32>::try_from(fast).unwrap(),
                Vec::<f32>::try_from(slow).unwrap(),
            );
            assert_eq!(fast.len(), nq);
            // Distances tie only by accident on random data, so the
            // neighbour sets, hence the predictions, are equal.
            let differ = fast
                .iter()
                .zip(&slow)
                .filter(|(a, b)| (*a - *b).abs() > 1e-4)
                .count();
            assert_eq!(
                differ, 0,
                "np {np} nq {nq} d {d} k {k}: {differ} predictions differ"
            );
        }
    }

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

    /// Of the `[nq, k]` neighbours `got`, the queries whose neighbours are
    /// not the `k` nearest by exact float64 distances (from the float32
    /// values of `p` and `q`), and those whose neighbours differ from the
    /// exact ones only among rows at exactly equal distances.
    fn misses(p: &[f32], q: &[f32], d: usize, k: usize, got: &Tensor) -> (usize, usize) {
        let got = Vec::<i64>::try_from(got.reshape([-1])).unwrap();
        let dist = |qi: usize, pi: usize| -> f64 {
            (0..d)
                .map(|j| f64::from(q[qi * d + j]) - f64::from(p[pi * d + j]))
                .map(|v| v * v)
                .sum()
        };
        let (mut wrong, mut ties) = (0, 0);
        for qi in 0..q.len() / d {
            let mut all: Vec<(f64, usize)> =
                (0..p.len() / d).map(|pi| (dist(qi, pi), pi)).collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut exact: Vec<usize> = all[..k].iter().map(|a| a.1).collect();
            let mut mine: Vec<usize> = got[qi * k..(qi + 1) * k]
                .iter()
                .map(|&i| i as usize)
                .collect();
            exact.sort();
            mine.sort();
            if exact != mine {
                let mut a: Vec<f64> = exact.iter().map(|&i| dist(qi, i)).collect();
                let mut b: Vec<f64> = mine.iter().map(|&i| dist(qi, i)).collect();
                a.sort_by(f64::total_cmp);
                b.sort_by(f64::total_cmp);
                if a == b { ties += 1 } else { wrong += 1 }
            }
        }
        (wrong, ties)
    }

    #[test]
    fn neighbours_are_those_of_exact_distances_at_large_offsets() {
        // Features offset by up to 1e5 with a spread of about 1: on the raw
        // rows the float32 shortcut ranks neighbours by rounding noise.
        let (np, nq, d, k) = (2000, 300, 8, 5);
        for offset in [0.0, 1e3, 1e4, 1e5] {
            let p: Vec<f32> = noise(np * d, 1)
                .iter()
                .map(|v| (v + offset) as f32)
                .collect();
            let q: Vec<f32> = noise(nq * d, 2)
                .iter()
                .map(|v| (v + offset) as f32)
                .collect();
            let pt = Tensor::from_slice(&p).view([np as i64, d as i64]);
            let qt = Tensor::from_slice(&q).view([nq as i64, d as i64]);
            let labels = Tensor::zeros([np as i64], (TKind::Float, Device::Cpu));
            let model = Neighbours::new(&pt, &labels);
            let cpu = misses(&p, &q, d, k, &model.nearest(&qt, k as i64, 64));
            let tensor = misses(
                &p,
                &q,
                d,
                k,
                &model.nearest_tensor(&model.centered(&qt), k as i64, 64),
            );
            let uncentered = Neighbours::with_mean(
                &pt,
                &labels,
                Tensor::zeros([d as i64], (TKind::Float, Device::Cpu)),
            );
            let raw = misses(&p, &q, d, k, &uncentered.nearest(&qt, k as i64, 64));
            eprintln!(
                "offset {offset:e}: queries with other neighbours than exact float64 distances' (and tie swaps): centered cpu {cpu:?}, centered tensor {tensor:?}, raw rows {raw:?} of {nq}"
            );
            assert_eq!(cpu.0, 0, "offset {offset}: {cpu:?}");
            assert_eq!(tensor.0, 0, "offset {offset}: {tensor:?}");
            if offset >= 1e3 {
                // The data is hard enough to show the difference.
                assert!(raw.0 > nq / 10, "offset {offset}: {raw:?}");
            }
        }
    }
}
