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
