//! The Lloyd step on the CPU in one streaming pass: for each row, the
//! distances to all centers (8 centers per vector lane group), the argmin,
//! and the row added into its cluster's sum, with threads over row ranges.
//! The blocked matmul of the generic path reads every block twice and
//! materializes the distance matrix; this reads the data once.

use crate::par;
use crate::sgd::SplitMix;

const LANES: usize = 8;
/// Rows whose distances are computed together: independent accumulators
/// keep the vector units busy instead of waiting on one dependency chain.
const TILE: usize = 8;
/// Rows summed in f32 before being added into the f64 totals.
const FLUSH_ROWS: usize = 2048;

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
    let (ct, c_sq) = transpose_centers(centers, d);
    let n = x.len() / d.max(1);
    let parts = par::map_ranges(n, threads, |rows| {
        assign_range(&x[rows.start * d..rows.end * d], d, k, &ct, &c_sq)
    });
    let mut total = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
    };
    for p in parts {
        par::add_into(&mut total.sums, &p.sums);
        par::add_into(&mut total.counts, &p.counts);
        total.inertia += p.inertia;
    }
    (total.sums, total.counts, total.inertia)
}

/// The `k x d` centers transposed per group of 8, `ct[g][j * 8 + lane]`,
/// and their squared norms; padding lanes get an infinite norm, so they
/// never win.
fn transpose_centers(centers: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let k = centers.len() / d;
    let groups = k.div_ceil(LANES);
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
    (ct, c_sq)
}

fn assign_range(x: &[f32], d: usize, k: usize, ct: &[f32], c_sq: &[f32]) -> Acc {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { assign_range_avx2(x, d, k, ct, c_sq) };
    }
    // Every aarch64 CPU has fused multiply-add; elsewhere it may be a
    // library call.
    assign_range_any::<{ cfg!(target_arch = "aarch64") }>(x, d, k, ct, c_sq)
}

/// [`assign_range_any`] compiled for 256-bit vectors with fused
/// multiply-add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn assign_range_avx2(x: &[f32], d: usize, k: usize, ct: &[f32], c_sq: &[f32]) -> Acc {
    assign_range_with(
        x,
        d,
        k,
        |rows: &[f32]| nearest_avx2::<TILE>(rows, d, ct, c_sq),
        |row| nearest::<1, true>(row, d, ct, c_sq),
    )
}

/// [`nearest`] with explicit 256-bit fused multiply-adds: one broadcast
/// of `x[r][j]` and one FMA per row and feature, the `R` accumulators of a
/// group of 8 centers held in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn nearest_avx2<const R: usize>(
    rows: &[f32],
    d: usize,
    ct: &[f32],
    c_sq: &[f32],
) -> [(usize, f32); R] {
    use std::arch::x86_64::{
        __m256, _CMP_EQ_OQ, _mm_cvtss_f32, _mm_min_ps, _mm_min_ss, _mm_movehl_ps, _mm_shuffle_ps,
        _mm256_castps256_ps128, _mm256_cmp_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_movemask_ps, _mm256_set1_ps, _mm256_setzero_ps,
    };
    assert!(rows.len() >= R * d && ct.len() >= c_sq.len() / LANES * d * LANES);
    let mut best = [(0usize, f32::INFINITY); R];
    for (g, cg) in ct.chunks_exact(d * LANES).enumerate() {
        let mut acc: [__m256; R] = [_mm256_setzero_ps(); R];
        for j in 0..d {
            // SAFETY: j < d, so `j * 8 + 8 <= cg.len()` and `r * d + j <
            // rows.len()` (asserted above); unaligned loads are allowed.
            unsafe {
                let c = _mm256_loadu_ps(cg.as_ptr().add(j * LANES));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(*rows.get_unchecked(r * d + j));
                    *a = _mm256_fmadd_ps(xv, c, *a);
                }
            }
        }
        // The argmin without a branch per center: `|c|^2 - 2 x.c` for the 8
        // centers (2 x.c is exact, so this rounds like the scalar path), the
        // smallest by a min-reduction, its first lane from a compare mask.
        let cs = &c_sq[g * LANES..(g + 1) * LANES];
        // SAFETY: `cs` holds 8 floats.
        let cs = unsafe { _mm256_loadu_ps(cs.as_ptr()) };
        for (r, a) in acc.iter().enumerate() {
            let dist = _mm256_fmadd_ps(_mm256_set1_ps(-2.0), *a, cs);
            let m = _mm_min_ps(_mm256_castps256_ps128(dist), _mm256_extractf128_ps(dist, 1));
            let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
            let v = _mm_cvtss_f32(m);
            if v < best[r].1 {
                let eq = _mm256_cmp_ps(dist, _mm256_set1_ps(v), _CMP_EQ_OQ);
                let lane = (_mm256_movemask_ps(eq) as u32).trailing_zeros() as usize;
                best[r] = (g * LANES + lane.min(LANES - 1), v);
            }
        }
    }
    best
}

/// The step over rows `x`; `FMA`: accumulate dot products with fused
/// multiply-add (one instruction where the CPU has it).
#[inline(always)]
fn assign_range_any<const FMA: bool>(
    x: &[f32],
    d: usize,
    k: usize,
    ct: &[f32],
    c_sq: &[f32],
) -> Acc {
    debug_assert_eq!(ct.len(), c_sq.len() * d);
    assign_range_with(
        x,
        d,
        k,
        |rows| nearest::<TILE, FMA>(rows, d, ct, c_sq),
        |row| nearest::<1, FMA>(row, d, ct, c_sq),
    )
}

/// The step over rows `x`, with `tile` finding the nearest centers of
/// [`TILE`] rows at once and `one` of a single row.
#[inline(always)]
fn assign_range_with(
    x: &[f32],
    d: usize,
    k: usize,
    tile: impl Fn(&[f32]) -> [(usize, f32); TILE],
    one: impl Fn(&[f32]) -> [(usize, f32); 1],
) -> Acc {
    let mut acc = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
    };
    let mut block = vec![0f32; k * d];
    for chunk in x.chunks(FLUSH_ROWS * d) {
        let mut tiles = chunk.chunks_exact(TILE * d);
        for rows in &mut tiles {
            let best = tile(rows);
            for (row, (c, dist)) in rows.chunks_exact(d).zip(best) {
                add_row(&mut acc, &mut block, row, d, c, dist);
            }
        }
        for row in tiles.remainder().chunks_exact(d) {
            let [(c, dist)] = one(row);
            add_row(&mut acc, &mut block, row, d, c, dist);
        }
        for (s, b) in acc.sums.iter_mut().zip(block.iter_mut()) {
            *s += f64::from(*b);
            *b = 0.0;
        }
    }
    acc
}

/// For each of the `R` rows of `rows`, the nearest center and
/// `|c|^2 - 2 x.c` (the squared distance less `|x|^2`).
#[inline(always)]
fn nearest<const R: usize, const FMA: bool>(
    rows: &[f32],
    d: usize,
    ct: &[f32],
    c_sq: &[f32],
) -> [(usize, f32); R] {
    let rows: [&[f32]; R] = std::array::from_fn(|r| &rows[r * d..(r + 1) * d]);
    let mut best = [(0usize, f32::INFINITY); R];
    for (g, cg) in ct.chunks_exact(d * LANES).enumerate() {
        let (lanes, _) = cg.as_chunks::<LANES>();
        let lanes = &lanes[..d];
        let mut dot = [[0f32; LANES]; R];
        for (j, cj) in lanes.iter().enumerate() {
            for r in 0..R {
                let xv = rows[r][j];
                for l in 0..LANES {
                    dot[r][l] = if FMA {
                        xv.mul_add(cj[l], dot[r][l])
                    } else {
                        dot[r][l] + xv * cj[l]
                    };
                }
            }
        }
        let cs = &c_sq[g * LANES..(g + 1) * LANES];
        for r in 0..R {
            for l in 0..LANES {
                let v = cs[l] - 2.0 * dot[r][l];
                if v < best[r].1 {
                    best[r] = (g * LANES + l, v);
                }
            }
        }
    }
    best
}

#[inline(always)]
fn add_row(acc: &mut Acc, block: &mut [f32], row: &[f32], d: usize, c: usize, dist: f32) {
    // Eight partial sums: one long dependency chain would cost more than
    // the distances.
    let (lanes, rest) = row.as_chunks::<LANES>();
    let mut part = [0f32; LANES];
    for v in lanes {
        for l in 0..LANES {
            part[l] += v[l] * v[l];
        }
    }
    let x_sq = part.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>();
    acc.inertia += f64::from((x_sq + dist).max(0.0));
    acc.counts[c] += 1.0;
    for (s, &v) in block[c * d..(c + 1) * d].iter_mut().zip(row) {
        *s += v;
    }
}

/// Squared distances of the rows of `x` to `c`, each the smaller of that
/// and `closest[i]` when given, and their sum.
fn min_sq_dist(
    x: &[f32],
    d: usize,
    c: &[f32],
    closest: Option<&[f32]>,
    threads: usize,
) -> (Vec<f32>, f64) {
    let n = x.len() / d;
    let parts = par::map_ranges(n, threads, |rows| {
        let out: Vec<f32> = x[rows.start * d..rows.end * d]
            .chunks_exact(d)
            .enumerate()
            .map(|(i, row)| {
                let v: f32 = row.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                closest.map_or(v, |cl| v.min(cl[rows.start + i]))
            })
            .collect();
        let total = out.iter().map(|&v| f64::from(v)).sum::<f64>();
        (out, total)
    });
    let total = parts.iter().map(|p| p.1).sum();
    (parts.into_iter().flat_map(|p| p.0).collect(), total)
}

/// Greedy k-means++ (`2 + ln k` candidates per center, the one that lowers
/// the potential most is kept) on the rows of `x`; returns `k x d` centers.
pub fn kmeans_pp(x: &[f32], d: usize, k: usize, rng: &mut SplitMix, threads: usize) -> Vec<f32> {
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let first = rng.below(n as u64) as usize;
    let mut centers = row(first).to_vec();
    let (mut closest, _) = min_sq_dist(x, d, row(first), None, threads);
    let trials = 2 + (k as f64).ln().floor() as usize;
    for _ in 1..k {
        let mut cum = Vec::with_capacity(n);
        let mut running = 0f64;
        for &v in &closest {
            running += f64::from(v);
            cum.push(running);
        }
        let draws: Vec<f64> = (0..trials)
            .map(|_| rng.next_u64() as f64 / u64::MAX as f64 * running)
            .collect();
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for draw in draws {
            let cand = cum.partition_point(|&c| c < draw).min(n - 1);
            let (dist, pot) = min_sq_dist(x, d, row(cand), Some(&closest), threads);
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, dist));
            }
        }
        let (_, cand, dist) = best.expect("at least two trials");
        centers.extend_from_slice(row(cand));
        closest = dist;
    }
    centers
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    /// Reproducible normal-ish values (sum of uniforms), independent of
    /// libtorch's global generator, which parallel tests share.
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        (0..len)
            .map(|_| {
                (0..4)
                    .map(|_| rng.below(1 << 20) as f32 / (1 << 19) as f32 - 1.0)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn matches_the_tensor_path() {
        for (n, d, k, threads) in [
            (1000, 5, 3, 2),
            (5003, 13, 11, 3),
            (3, 2, 2, 2),
            (77, 50, 8, 1),
            (200, 7, 17, 2),
        ] {
            let xv = noise(n * d, n as u64);
            let cv = noise(k * d, 7);
            let x = Tensor::from_slice(&xv).view([n as i64, d as i64]);
            let c = Tensor::from_slice(&cv).view([k as i64, d as i64]);
            let (sums, counts, inertia) = assign_stats(&xv, d, &cv, threads);
            let (ts, tc, ti) = super::super::kmeans::assign_stats_tensor(&x, &c, 512);
            let ts = Vec::<f64>::try_from(ts.view(-1)).unwrap();
            let tc = Vec::<f64>::try_from(tc).unwrap();
            assert_eq!(counts, tc, "n {n} d {d} k {k}");
            assert!(
                sums.iter().zip(&ts).all(|(a, b)| (a - b).abs() < 1e-3),
                "{sums:?} {ts:?}"
            );
            assert!((inertia - ti).abs() < 1e-4 * ti.max(1.0), "{inertia} {ti}");
        }
    }

    #[test]
    fn plain_and_fused_arithmetic_agree() {
        let (n, d, k) = (999, 21, 13);
        let x = noise(n * d, 4);
        let centers = noise(k * d, 5);
        let (ct, c_sq) = transpose_centers(&centers, d);
        let plain = assign_range_any::<false>(&x, d, k, &ct, &c_sq);
        let fused = assign_range_any::<true>(&x, d, k, &ct, &c_sq);
        assert_eq!(plain.counts, fused.counts);
        assert_eq!(plain.counts.iter().sum::<f64>(), n as f64);
        assert!((plain.inertia - fused.inertia).abs() < 1e-4 * plain.inertia);
    }

    #[test]
    fn kmeans_pp_takes_one_row_from_each_blob() {
        // Four tight blobs far apart: a good seeding puts a center in each.
        let (d, per) = (3, 250);
        let blobs = [
            [0.0, 0.0, 0.0],
            [50.0, 0.0, 0.0],
            [0.0, 50.0, 0.0],
            [0.0, 0.0, 50.0],
        ];
        let jitter = noise(4 * per * d, 11);
        let x: Vec<f32> = (0..4 * per)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| blobs[i / per][j] + jitter[i * d + j] * 0.1)
            .collect();
        let centers = kmeans_pp(&x, d, 4, &mut SplitMix(5), 2);
        let mut hit: Vec<usize> = centers
            .chunks(d)
            .map(|c| {
                assert!(x.chunks(d).any(|r| r == c), "a center is a row of x");
                blobs
                    .iter()
                    .position(|b| {
                        (b[0] - c[0]).abs() + (b[1] - c[1]).abs() + (b[2] - c[2]).abs() < 5.0
                    })
                    .unwrap()
            })
            .collect();
        hit.sort();
        assert_eq!(hit, vec![0, 1, 2, 3]);
    }
}
