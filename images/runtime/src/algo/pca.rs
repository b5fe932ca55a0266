//! pca: principal components from the covariance matrix, whose sufficient
//! statistics (column sums and `X^T X`, in f64) are summed over ranks.
//! `regular` diagonalizes the full `d x d` covariance; `randomized` runs a
//! subspace iteration with `num_components + extra_components` vectors and
//! never forms it, for wide data.

use tch::{Device, Kind as TKind, Tensor};

use super::Algorithm;
use crate::artifact::ModelMeta;
use crate::error::{Error, Result};
use crate::hyper::{Kind, Spec};
use crate::par;
use crate::run::Context;

const SPECS: &[Spec] = &[
    Spec::required(
        "num_components",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "principal components to keep",
    ),
    Spec::new(
        "algorithm_mode",
        Kind::Choice(&["regular", "randomized"]),
        "regular",
        "full eigendecomposition, or randomized subspace iteration",
    ),
    Spec::new("subtract_mean", Kind::Bool, "true", "center the data first"),
    Spec::new(
        "extra_components",
        Kind::Int {
            min: 0,
            max: 10_000,
        },
        "10",
        "oversampling of the randomized mode",
    ),
    Spec::new(
        "power_iterations",
        Kind::Int { min: 0, max: 100 },
        "4",
        "subspace iterations of the randomized mode",
    ),
    Spec::new(
        "block_rows",
        Kind::Int {
            min: 256,
            max: 1 << 22,
        },
        "65536",
        "rows per block of the statistics pass",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "pca",
    tables: &[SPECS],
    train,
};

/// `sum_rows(x)` and `x^T (x w)` (or `x^T x` when `w` is `None`), in f64, in blocks.
fn pass(x: &Tensor, w: Option<&Tensor>, block: i64, device: Device) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    if let (Some(xs), Device::Cpu) = (par::cpu_f32(x), device) {
        let d = x.size()[1] as usize;
        let w = w.map(|w| (Vec::<f64>::try_from(w.contiguous().view(-1)), w.size()));
        let w = match w {
            Some((Ok(data), size)) => Some((data, size)),
            Some((Err(_), _)) => return pass_tensor(x, None, block, device),
            None => None,
        };
        let mut s = par::sum_blocks(xs, d, block as usize, |xb, _| {
            let xb = xb.to_kind(TKind::Double);
            let acc = match &w {
                Some((data, size)) => {
                    let w = Tensor::from_slice(data).view(size.as_slice());
                    xb.transpose(0, 1).matmul(&xb.matmul(&w))
                }
                None => xb.transpose(0, 1).matmul(&xb),
            };
            vec![xb.sum_dim_intlist(0, false, TKind::Double), acc]
        });
        let acc = s.pop().expect("two sums");
        return (s.pop().expect("two sums"), acc);
    }
    pass_tensor(x, w, block, device)
}

fn pass_tensor(x: &Tensor, w: Option<&Tensor>, block: i64, device: Device) -> (Tensor, Tensor) {
    let (n, d) = (x.size()[0], x.size()[1]);
    let cols = w.map_or(d, |w| w.size()[1]);
    let mut sums = Tensor::zeros([d], (TKind::Double, device));
    let mut acc = Tensor::zeros([d, cols], (TKind::Double, device));
    for start in (0..n).step_by(block as usize) {
        let xb = x
            .narrow(0, start, block.min(n - start))
            .to_device(device)
            .to_kind(TKind::Double);
        sums += xb.sum_dim_intlist(0, false, TKind::Double);
        acc += match w {
            Some(w) => xb.transpose(0, 1).matmul(&xb.matmul(w)),
            None => xb.transpose(0, 1).matmul(&xb),
        };
    }
    (sums, acc)
}

/// Each component's sign chosen so its largest-magnitude entry is positive.
fn fix_signs(components: &Tensor) -> Tensor {
    let idx = components.abs().argmax(1, true);
    let signs = components.gather(1, &idx, false).sign();
    let signs = signs.where_self(&signs.ne(0.0), &signs.ones_like());
    components * signs
}

fn train(ctx: &mut Context) -> Result<()> {
    let device = ctx.device;
    let train = ctx.read("train", false)?;
    let evals = [
        ("validation", ctx.read_eval("validation", false)?),
        ("test", ctx.read_eval("test", false)?),
    ];
    let block = ctx.params.int("block_rows");
    let d = train.cols() as i64;
    let k = ctx.params.int("num_components");
    if k > d {
        return Err(Error::hyper(
            "num_components",
            format!("{k} is more than the {d} feature columns"),
        ));
    }
    let n = ctx.comm.sum_f64(&[train.rows() as f64])?[0];
    if n < 2.0 {
        return Err(Error::data("train", "pca needs at least 2 rows"));
    }
    let center = ctx.params.bool("subtract_mean");
    let randomized = ctx.params.str("algorithm_mode") == "randomized";
    // Covariance operator: C w = (X^T X w - n m (m^T w)) / (n - 1).
    let (mean, eigvals, vectors, total_var) = if !randomized {
        let (sums, gram) = pass(&train.x, None, block, device);
        let s = ctx.comm.sum(&[&sums, &gram])?;
        let mean = if center {
            &s[0] / n
        } else {
            Tensor::zeros([d], (TKind::Double, device))
        };
        let cov = (&s[1] - mean.outer(&mean) * n) / (n - 1.0);
        let total = cov.trace().double_value(&[]);
        let (vals, vecs) = cov.linalg_eigh("L");
        let top = Tensor::arange_start_step(d - 1, d - 1 - k, -1, (TKind::Int64, device));
        (
            mean,
            vals.index_select(0, &top),
            vecs.index_select(1, &top),
            total,
        )
    } else {
        let x = train.x.to_device(device).to_kind(TKind::Double);
        let local = [
            x.sum_dim_intlist(0, false, TKind::Double),
            x.square().sum(TKind::Double),
        ];
        drop(x);
        let s = ctx.comm.sum(&[&local[0], &local[1]])?;
        let mean = if center {
            &s[0] / n
        } else {
            Tensor::zeros([d], (TKind::Double, device))
        };
        // The total variance is the trace of C: sum of squared deviations / (n - 1).
        let total = (s[1].double_value(&[])
            - n * mean.square().sum(TKind::Double).double_value(&[]))
            / (n - 1.0);
        let apply = |ctx: &mut Context, w: &Tensor| -> Result<Tensor> {
            let (_, xtxw) = pass(&train.x, Some(w), block, device);
            let s = ctx.comm.sum(&[&xtxw])?.remove(0);
            Ok((s - mean.outer(&mean.matmul(w)) * n) / (n - 1.0))
        };
        let l = (k + ctx.params.int("extra_components")).min(d);
        tch::manual_seed(ctx.seed() as i64);
        let omega = Tensor::randn([d, l], (TKind::Double, device));
        let mut q = Tensor::linalg_qr(&apply(ctx, &omega)?, "reduced").0;
        for _ in 0..ctx.params.int("power_iterations") {
            q = Tensor::linalg_qr(&apply(ctx, &q)?, "reduced").0;
        }
        let small = q.transpose(0, 1).matmul(&apply(ctx, &q)?);
        let small = (&small + small.transpose(0, 1)) / 2.0;
        let (vals, vecs) = small.linalg_eigh("L");
        let top = Tensor::arange_start_step(l - 1, l - 1 - k, -1, (TKind::Int64, device));
        (
            mean,
            vals.index_select(0, &top),
            q.matmul(&vecs.index_select(1, &top)),
            total,
        )
    };
    let components = fix_signs(&vectors.transpose(0, 1)).to_kind(TKind::Float);
    let mean = mean.to_kind(TKind::Float);
    let variance = eigvals.clamp_min(0.0).to_kind(TKind::Float);
    let ratio = &variance / total_var.max(f64::MIN_POSITIVE);
    let ratio_sum = ratio.sum(TKind::Double).double_value(&[]);
    ctx.metrics
        .emit("train:explained_variance_ratio", ratio_sum, 1, None);
    for (channel, v) in evals.iter().filter_map(|(c, v)| v.as_ref().map(|v| (c, v))) {
        let err = reconstruction_mse(&v.x.to_device(device), &mean, &components);
        ctx.metrics
            .emit(&format!("{channel}:reconstruction_mse"), err, 1, None);
    }
    let err = reconstruction_mse(&train.x.to_device(device), &mean, &components);
    ctx.metrics.emit("train:reconstruction_mse", err, 1, None);
    let mut meta = ModelMeta::new("pca", "dimensionality_reduction", d as usize);
    meta.model = serde_json::json!({
        "num_components": k,
        "projection": "(x - mean) @ components^T",
    });
    ctx.write_model(
        meta,
        &[
            ("components", &components),
            ("mean", &mean),
            ("explained_variance", &variance),
            ("explained_variance_ratio", &ratio),
        ],
    )
}

/// Mean squared error per value of projecting rows onto the components and back.
pub fn reconstruction_mse(x: &Tensor, mean: &Tensor, components: &Tensor) -> f64 {
    let _guard = tch::no_grad_guard();
    let (mean_c, comp_c) = (mean.contiguous(), components.contiguous());
    if let (Some(xs), Some(m), Some(c)) = (
        par::cpu_f32(x),
        par::cpu_f32(&mean_c),
        par::cpu_f32(&comp_c),
    ) {
        let d = x.size()[1] as usize;
        let s = par::sum_blocks(xs, d, 16384, |xb, _| {
            let mean = Tensor::from_slice(m);
            let comp = Tensor::from_slice(c).view([-1, d as i64]);
            let centered = xb - mean;
            let back = centered.matmul(&comp.transpose(0, 1)).matmul(&comp);
            vec![(centered - back).square().sum(TKind::Double)]
        });
        let values = (x.numel() as f64).max(1.0);
        return s[0].double_value(&[]) / values;
    }
    let c = x - mean;
    let back = c.matmul(&components.transpose(0, 1)).matmul(components);
    (c - back).square().mean(TKind::Double).double_value(&[])
}
