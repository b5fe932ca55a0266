//! Column statistics summed over ranks: feature normalization.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::par;
use crate::run::Context;

/// Mean and standard deviation of the columns of `x` over all ranks'
/// rows; a constant column gets a standard deviation of 1.
pub fn column_moments(ctx: &mut Context, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    if let Some(xs) = par::cpu_f32(x) {
        return column_moments_cpu(ctx, xs, x.size()[1] as usize);
    }
    let xd = x.to_kind(Kind::Double);
    let n = Tensor::from_slice(&[x.size()[0] as f64]).to_device(x.device());
    let sums = ctx
        .comm
        .sum(&[&xd.sum_dim_intlist(0, false, Kind::Double), &n])?;
    let count = sums[1].double_value(&[0]).max(1.0);
    let mean = &sums[0] / count;
    let centered = (&xd - &mean)
        .square()
        .sum_dim_intlist(0, false, Kind::Double);
    let var = &ctx.comm.sum(&[&centered])?[0] / count;
    let std = var.sqrt();
    let std = std.where_self(&std.gt(1e-12), &std.ones_like());
    Ok((mean.to_kind(Kind::Float), std.to_kind(Kind::Float)))
}

/// [`column_moments`] of a float32 CPU tensor in one pass for the mean and
/// one for the deviations, on kiln's threads, with no copy of the rows.
fn column_moments_cpu(ctx: &mut Context, x: &[f32], d: usize) -> Result<(Tensor, Tensor)> {
    let threads = par::threads();
    let mut local = par::column_sums(x, d, None, threads);
    local.push(x.len().checked_div(d).unwrap_or(0) as f64);
    let sums = ctx.comm.sum_f64(&local)?;
    let count = sums[d].max(1.0);
    let mean: Vec<f64> = sums[..d].iter().map(|s| s / count).collect();
    let dev = ctx
        .comm
        .sum_f64(&par::column_sums(x, d, Some(&mean), threads))?;
    let std: Vec<f32> = dev
        .iter()
        .map(|s| (s / count).sqrt())
        .map(|s| if s > 1e-12 { s as f32 } else { 1.0 })
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    Ok((Tensor::from_slice(&mean), Tensor::from_slice(&std)))
}
