//! Column statistics summed over ranks: feature normalization.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::run::Context;

/// Mean and standard deviation of the columns of `x` over all ranks'
/// rows; a constant column gets a standard deviation of 1.
pub fn column_moments(ctx: &mut Context, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
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
