//! The Lloyd step on the CPU in one streaming pass: for each row, the
//! distances to all centers (8 centers per vector lane group), the argmin,
//! and the row added into its cluster's sum, with threads over row ranges.
//! The blocked matmul of the generic path reads every block twice and
//! materializes the distance matrix; this reads the data once.

use tch::{Device, Kind, Tensor};

const LANES: usize = 8;
/// Rows summed in f32 before being added into the f64 totals.
const FLUSH_ROWS: usize = 2048;

/// The float32 contents of a contiguous CPU tensor, borrowed.
pub fn cpu_f32(t: &Tensor) -> Option<&[f32]> {
    if t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: the tensor is a contiguous float32 CPU tensor of `len`
    // elements; the slice borrows `t`, which keeps the storage alive, and
    // kiln never writes to a dataset tensor while a slice of it is used.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) })
}

/// Per-thread accumulators.
struct Acc {
    sums: Vec<f64>,
    counts: Vec<f64>,
    inertia: f64,
}

/// Sums `[k, d]`, counts `[k]` and inertia of rows `x` (`n x d`) against
/// `centers` (`k x d`).
pub fn assign_stats(
    x: &[f32],
    d: usize,
    centers: &[f32],
    threads: usize,
) -> (Vec<f64>, Vec<f64>, f64) {
    let k = centers.len() / d;
    let groups = k.div_ceil(LANES);
    // Centers transposed per group of 8: ct[g][j * 8 + lane].
    let mut ct = vec![0f32; groups * d * LANES];
    let mut c_sq = vec![f32::INFINITY; groups * LANES];
    for c in 0..k {
        let (g, lane) = (c / LANES, c % LANES);
        let row = &centers[c * d..(c + 1) * d];
        for (j, &v) in row.iter().enumerate() {
            ct[g * d * LANES + j * LANES + lane] = v;
        }
        c_sq[c] = row.iter().map(|v| v * v).sum();
    }
    let n = x.len() / d.max(1);
    let threads = threads.clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    let parts: Vec<Acc> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let rows = &x[(t * per).min(n) * d..((t + 1) * per).min(n) * d];
                let (ct, c_sq) = (&ct, &c_sq);
                s.spawn(move || assign_range(rows, d, k, ct, c_sq))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("k-means worker"))
            .collect()
    });
    let mut total = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
    };
    for p in parts {
        total
            .sums
            .iter_mut()
            .zip(&p.sums)
            .for_each(|(a, b)| *a += b);
        total
            .counts
            .iter_mut()
            .zip(&p.counts)
            .for_each(|(a, b)| *a += b);
        total.inertia += p.inertia;
    }
    (total.sums, total.counts, total.inertia)
}

fn assign_range(x: &[f32], d: usize, k: usize, ct: &[f32], c_sq: &[f32]) -> Acc {
    let groups = c_sq.len() / LANES;
    debug_assert_eq!(ct.len(), groups * d * LANES);
    let mut acc = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
    };
    let mut block = vec![0f32; k * d];
    let mut dist = vec![0f32; groups * LANES];
    for chunk in x.chunks(FLUSH_ROWS * d) {
        for row in chunk.chunks_exact(d) {
            for (g, cg) in ct.chunks_exact(d * LANES).enumerate() {
                // Fixed-size lanes let the compiler keep `dot` in vector registers.
                let (lanes, _) = cg.as_chunks::<LANES>();
                let mut dot = [0f32; LANES];
                for (&xj, cj) in row.iter().zip(lanes) {
                    for l in 0..LANES {
                        dot[l] += xj * cj[l];
                    }
                }
                let (dg, cs) = (
                    &mut dist[g * LANES..(g + 1) * LANES],
                    &c_sq[g * LANES..(g + 1) * LANES],
                );
                for l in 0..LANES {
                    dg[l] = cs[l] - 2.0 * dot[l];
                }
            }
            let (mut best, mut best_d) = (0, f32::INFINITY);
            for (c, &v) in dist[..k].iter().enumerate() {
                if v < best_d {
                    (best, best_d) = (c, v);
                }
            }
            let x_sq: f32 = row.iter().map(|v| v * v).sum();
            acc.inertia += f64::from((x_sq + best_d).max(0.0));
            acc.counts[best] += 1.0;
            for (s, &v) in block[best * d..(best + 1) * d].iter_mut().zip(row) {
                *s += v;
            }
        }
        for (s, b) in acc.sums.iter_mut().zip(block.iter_mut()) {
            *s += f64::from(*b);
            *b = 0.0;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_tensor_path() {
        tch::manual_seed(3);
        for (n, d, k) in [(1000, 5, 3), (5000, 13, 11), (3, 2, 2)] {
            let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
            let c = Tensor::randn([k, d], (Kind::Float, Device::Cpu));
            let (sums, counts, inertia) =
                assign_stats(cpu_f32(&x).unwrap(), d as usize, cpu_f32(&c).unwrap(), 2);
            let (ts, tc, ti) = super::super::kmeans::assign_stats_tensor(&x, &c, 512);
            let ts = Vec::<f64>::try_from(ts.view(-1)).unwrap();
            let tc = Vec::<f64>::try_from(tc).unwrap();
            assert_eq!(counts, tc);
            assert!(
                sums.iter().zip(&ts).all(|(a, b)| (a - b).abs() < 1e-3),
                "{sums:?} {ts:?}"
            );
            assert!((inertia - ti).abs() < 1e-4 * ti.max(1.0), "{inertia} {ti}");
        }
    }
}
