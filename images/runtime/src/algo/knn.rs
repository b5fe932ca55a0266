//! knn: k-nearest neighbours, classification (majority vote, ties to the
//! smaller class) and regression (mean of the neighbours' labels). Training
//! keeps the rows (gathered from every rank); queries are answered in blocks
//! with distances as `|q|^2 - 2 q.x + |x|^2` and `topk` on the device.

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

/// Predictions for `queries` from the stored `points` and `labels`.
pub fn predict(
    points: &Tensor,
    labels: &Tensor,
    queries: &Tensor,
    k: i64,
    task: Task,
    block: i64,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    if let Some(pred) = predict_cpu(points, labels, queries, k, task) {
        return pred;
    }
    predict_tensor(points, labels, queries, k, task, block)
}

/// [`predict`] with tensor operations (`topk`), for any device.
fn predict_tensor(
    points: &Tensor,
    labels: &Tensor,
    queries: &Tensor,
    k: i64,
    task: Task,
    block: i64,
) -> Tensor {
    let device = points.device();
    let p_sq = points.square().sum_dim_intlist(1, false, TKind::Float);
    let pt = points.transpose(0, 1);
    let k = k.min(points.size()[0]);
    let n = queries.size()[0];
    let mut outs = Vec::new();
    for start in (0..n).step_by(block as usize) {
        let q = queries
            .narrow(0, start, block.min(n - start))
            .to_device(device);
        let dist = q.matmul(&pt).g_mul_scalar_(-2.0).g_add_(&p_sq.unsqueeze(0));
        let (_, idx) = dist.topk(k, 1, false, true);
        let neighbour = labels.index_select(0, &idx.view(-1)).view([-1, k]);
        outs.push(match task {
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
        });
    }
    Tensor::cat(&outs, 0)
}

/// Queries per block and points per tile of the CPU path: one block's
/// distances to one tile (128 x 2048 floats) stay in cache while scanned.
const QUERY_BLOCK: usize = 128;
const POINT_TILE: usize = 2048;

/// [`predict`] on the CPU without materializing more than one tile of
/// distances per thread: each thread takes a range of queries, computes
/// `q.p` for a tile of points with one matmul, and keeps the `k` smallest
/// `|p|^2 - 2 q.p` per query as it scans (ties: the earlier point). `None`
/// when the tensors are not float32 CPU tensors.
fn predict_cpu(
    points: &Tensor,
    labels: &Tensor,
    queries: &Tensor,
    k: i64,
    task: Task,
) -> Option<Tensor> {
    let queries = queries.contiguous();
    let points = points.contiguous();
    let (p, q) = (par::cpu_f32(&points)?, par::cpu_f32(&queries)?);
    if labels.device() != Device::Cpu {
        return None;
    }
    let labels = Vec::<f32>::try_from(labels.to_kind(TKind::Float).reshape([-1])).ok()?;
    let d = points.size()[1] as usize;
    let np = labels.len();
    let k = (k.max(1) as usize).min(np);
    let p_sq: Vec<f32> = p
        .chunks_exact(d)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let nq = q.len().checked_div(d).unwrap_or(0);
    let classes = task.outputs().max(2) as usize;
    let parts = par::map_ranges(nq, par::threads(), |range| {
        let _guard = tch::no_grad_guard();
        let mut out = Vec::with_capacity(range.len());
        let mut best = vec![(f32::INFINITY, 0usize); QUERY_BLOCK * k];
        let mut votes = vec![0u32; classes];
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
                            scan_tile(row, &p_sq[ps..ps + pn], ps, &mut best[qi * k..(qi + 1) * k]);
                        }
                    }
                });
                for nb in best[..qn * k].chunks_exact(k) {
                    out.push(match task {
                        Task::Regressor => {
                            nb.iter().map(|&(_, i)| labels[i]).sum::<f32>() / k as f32
                        }
                        _ => {
                            votes.fill(0);
                            for &(_, i) in nb {
                                let l = labels[i].max(0.0) as usize;
                                votes[l.min(classes - 1)] += 1;
                            }
                            // The first maximum: ties go to the smaller label.
                            let top = votes.iter().copied().max().unwrap_or(0);
                            votes.iter().position(|&v| v == top).unwrap_or(0) as f32
                        }
                    });
                }
            }
        });
        out
    });
    let pred: Vec<f32> = parts.into_iter().flatten().collect();
    Some(Tensor::from_slice(&pred))
}

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
    for channel in ["validation", "test"] {
        if let Some(v) = ctx.read_eval(channel, true)? {
            let y = task.prepare_labels(channel, v.labels(channel)?)?;
            let pred = predict(&points, &labels, &v.x, k, task, block);
            let scores = score(task, &pred, &y);
            emit_scores(&mut ctx.metrics, channel, &scores, 1, None);
        }
    }
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
            let fast = predict_cpu(&p, &labels, &q, k, task).unwrap();
            let slow = predict_tensor(&p, &labels, &q, k, task, 100);
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
}
