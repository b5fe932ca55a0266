//! The Lloyd step on the CPU in one streaming pass: for each row, the
//! distances to all centers (8 centers per vector lane group), the argmin,
//! and the row added into its cluster's sum, with threads over row ranges.
//! The blocked matmul of the generic path reads every block twice and
//! materializes the distance matrix; this reads the data once.
//!
//! Kernels, picked at run time: AVX-512 (one 16-lane FMA per row and pair
//! of features for 8 centers, and the argmin of 8 rows at once), AVX2 with
//! FMA (one 8-lane FMA per row and feature), and portable Rust. On x86 the data is prefetched into L2 a
//! fixed distance ahead, so the arithmetic hides under the memory traffic.

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
    /// The nearest center of each row, in row order, when asked for.
    labels: Vec<u32>,
}

/// Sums `[k, d]`, counts `[k]` and inertia of rows `x` (`n x d`) against
/// `centers` (`k x d`).
///
/// Distances are `|x|^2 - 2 x.c + |c|^2` in float32, whose rounding is
/// relative to `|x|^2`: rows and centers must be centered (k-means passes
/// them less the training mean), or rows far from the origin compared
/// with their distances to the centers are assigned by rounding noise
/// (4% of the rows at an offset of 1e3, 80% at 1e4 in k-means' tests).
pub fn assign_stats(
    x: &[f32],
    d: usize,
    centers: &[f32],
    threads: usize,
) -> (Vec<f64>, Vec<f64>, f64) {
    let total = assign(x, d, centers, threads, false);
    (total.sums, total.counts, total.inertia)
}

/// The nearest center of each row of `x`, as [`assign_stats`] assigns it
/// (the same kernels, ties to the lower index).
pub fn nearest_centers(x: &[f32], d: usize, centers: &[f32], threads: usize) -> Vec<u32> {
    assign(x, d, centers, threads, true).labels
}

/// [`assign_stats`], with each row's nearest center when `labels`.
fn assign(x: &[f32], d: usize, centers: &[f32], threads: usize, labels: bool) -> Acc {
    let k = centers.len() / d;
    let (ct, c_sq) = transpose_centers(centers, d);
    let n = x.len() / d.max(1);
    // Runs of rows taken by whichever thread is free (results added in run
    // order, so the sums do not depend on the threads' timing): on a shared
    // host one core is often slowed for a while, and with fixed halves the
    // whole step then waits for it.
    let chunk = (n / (threads.max(1) * 16)).clamp(1024, 32 * 1024);
    let pairs = wide_pairs(&ct, d);
    let parts = par::map_chunks(n, chunk, threads, |rows| {
        assign_range(
            &x[rows.start * d..rows.end * d],
            d,
            k,
            &ct,
            &c_sq,
            &pairs,
            labels,
        )
    });
    let mut total = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
        labels: Vec::with_capacity(if labels { n } else { 0 }),
    };
    for p in parts {
        par::add_into(&mut total.sums, &p.sums);
        par::add_into(&mut total.counts, &p.counts);
        total.inertia += p.inertia;
        total.labels.extend_from_slice(&p.labels);
    }
    total
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

/// Whether this CPU runs [`assign_range_avx512`].
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The centers as [`pair_centers`] lays them out where the CPU is
/// [`wide`] (nothing otherwise): made once per step, for every run of rows.
fn wide_pairs(ct: &[f32], d: usize) -> Vec<Line> {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        return pair_centers(ct, d);
    }
    Vec::new()
}

/// The step over rows `x` with the widest kernel this CPU has; `pairs` is
/// [`wide_pairs`]; `labels`: also each row's nearest center.
fn assign_range(
    x: &[f32],
    d: usize,
    k: usize,
    ct: &[f32],
    c_sq: &[f32],
    pairs: &[Line],
    labels: bool,
) -> Acc {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { assign_range_avx512(x, d, k, lines_as_floats(pairs), c_sq, labels) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { assign_range_avx2(x, d, k, ct, c_sq, labels) };
    }
    // Every aarch64 CPU has fused multiply-add; elsewhere it may be a
    // library call.
    assign_range_any::<{ cfg!(target_arch = "aarch64") }>(x, d, k, ct, c_sq, labels)
}

/// [`assign_range_any`] compiled for 256-bit vectors with fused
/// multiply-add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn assign_range_avx2(x: &[f32], d: usize, k: usize, ct: &[f32], c_sq: &[f32], labels: bool) -> Acc {
    assign_range_with(
        x,
        d,
        k,
        labels,
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
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
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
        // SAFETY: `c_sq` holds 8 floats per group.
        let cs = unsafe { _mm256_loadu_ps(c_sq.as_ptr().add(g * LANES)) };
        for (r, a) in acc.iter().enumerate() {
            argmin8(*a, cs, g, &mut best[r]);
        }
    }
    best
}

/// 16 floats on a 64-byte boundary: a 64-byte load or store of one never
/// spans two cache lines.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

#[cfg(target_arch = "x86_64")]
fn lines_as_floats(lines: &[Line]) -> &[f32] {
    // SAFETY: a `Line` is 16 contiguous floats with no padding.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 16) }
}

#[cfg(target_arch = "x86_64")]
fn lines_as_floats_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `lines_as_floats`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

/// The centers of [`transpose_centers`] regrouped for 512-bit vectors: per
/// group of 8 centers and pair of features `(2p, 2p + 1)`, one [`Line`]
/// with lane `2i` holding center `i`'s feature `2p` and lane `2i + 1` its
/// feature `2p + 1` (0 past the last feature). One 64-bit broadcast of a
/// row's two features then multiplies against all 8 centers at once.
#[cfg(target_arch = "x86_64")]
fn pair_centers(ct: &[f32], d: usize) -> Vec<Line> {
    let pairs = d.div_ceil(2);
    let groups = ct.len() / (d * LANES);
    let mut lines = vec![Line([0.0; 16]); groups * pairs];
    let out = lines_as_floats_mut(&mut lines);
    for g in 0..groups {
        let cg = &ct[g * d * LANES..(g + 1) * d * LANES];
        let og = &mut out[g * pairs * 2 * LANES..(g + 1) * pairs * 2 * LANES];
        for j in 0..d {
            for lane in 0..LANES {
                og[(j / 2) * 2 * LANES + lane * 2 + j % 2] = cg[j * LANES + lane];
            }
        }
    }
    lines
}

/// Rows of one AVX-512 tile: 8 independent accumulators cover the latency
/// of the FMA units.
#[cfg(target_arch = "x86_64")]
const TILE512: usize = 8;

/// The step with 512-bit vectors, per tile of 8 rows: [`tile_dots`] for
/// the dot products, [`tile_nearest`] for the nearest centers of all 8 rows
/// at once, then [`add_rows512`] adds each row into its cluster's sum.
/// `|x|^2` and the distances are summed in f64 vectors, once per tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn assign_range_avx512(
    x: &[f32],
    d: usize,
    k: usize,
    pairs: &[f32],
    c_sq: &[f32],
    labels: bool,
) -> Acc {
    use std::arch::x86_64::{
        __m512, __m512d, __m512i, _mm256_castpd_ps, _mm512_add_pd, _mm512_castps_pd,
        _mm512_castps512_ps256, _mm512_cvtps_pd, _mm512_extractf64x4_pd, _mm512_maskz_compress_ps,
        _mm512_reduce_add_pd, _mm512_setzero_pd, _mm512_storeu_si512,
    };
    let np = d.div_ceil(2);
    let groups = c_sq.len() / LANES;
    assert!(k >= 1 && pairs.len() == groups * np * 16);
    let consts = group_consts(c_sq);
    let full = d / 16;
    let tail = ((1u32 << (d % 16)) - 1) as u16;
    let stride = d.div_ceil(16) * 16;
    let shape = Shape512 {
        d,
        k,
        stride,
        full,
        tail,
    };
    let add_rows = add_rows_for(full);
    // The per-cluster sums of a chunk, padded to whole aligned vectors, in
    // two copies (even and odd rows): a row never waits on the store of
    // the row just before it.
    let mut lines = vec![Line([0.0; 16]); 2 * k * (stride / 16)];
    let block = lines_as_floats_mut(&mut lines);
    let mut counts = vec![0u64; 2 * k];
    let mut sums = vec![0f64; k * d];
    let mut nearest = Vec::with_capacity(if labels { x.len() / d.max(1) } else { 0 });
    // f64 partial sums of |x|^2 and of the distances |c|^2 - 2 x.c.
    let mut inertia: [__m512d; 2] = [_mm512_setzero_pd(); 2];
    let nothing = (std::ptr::null(), 0);
    let tile = |rows: &[f32], ahead| -> (__m512, __m512i) {
        let mut best = tile_nearest(&tile_dots(rows, d, &pairs[..np * 16], ahead), &consts[0]);
        for (g, gc) in consts.iter().enumerate().skip(1) {
            let cg = &pairs[g * np * 16..][..np * 16];
            // On a tie the earlier group's (lower) index stays.
            best = keep_lower(best, tile_nearest(&tile_dots(rows, d, cg, nothing), gc));
        }
        best
    };
    let mut add = |block: &mut [f32], rows: &[f32], used: usize, best: (__m512, __m512i)| {
        let mut idx = [0u32; 16];
        // SAFETY: `idx` holds 16 elements.
        unsafe { _mm512_storeu_si512(idx.as_mut_ptr().cast(), best.1) };
        assert!(rows.len() >= used * d && block.len() == 2 * k * stride);
        // SAFETY: asserted above: `used` rows in `rows`, 2k runs of
        // `stride` floats in `block`; `counts` holds 2k counters.
        let sq = unsafe {
            add_rows(
                rows.as_ptr(),
                used,
                &idx,
                block.as_mut_ptr(),
                &mut counts,
                &shape,
            )
        };
        if labels {
            nearest.extend((0..used).map(|r| idx[TILE_LANE[r]].min(k as u32 - 1)));
        }
        let picked = (0..used).fold(0u16, |m, r| m | (1 << TILE_LANE[r]));
        let dist = _mm512_castps512_ps256(_mm512_maskz_compress_ps(picked, best.0));
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sq)));
        inertia[0] = _mm512_add_pd(inertia[0], _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
        inertia[1] = _mm512_add_pd(inertia[1], _mm512_cvtps_pd(high));
        inertia[0] = _mm512_add_pd(inertia[0], _mm512_cvtps_pd(dist));
    };
    let end = x.as_ptr_range().end;
    let mut pad = vec![0f32; TILE512 * d];
    for chunk in x.chunks(FLUSH_ROWS * d) {
        let mut tiles = chunk.chunks_exact(TILE512 * d);
        for rows in &mut tiles {
            let best = tile(rows, lines_ahead(rows, end));
            add(block, rows, TILE512, best);
        }
        // The last rows of a chunk, as a tile padded with zero rows whose
        // results are not used.
        let rest = tiles.remainder();
        if !rest.is_empty() {
            pad[..rest.len()].copy_from_slice(rest);
            pad[rest.len()..].fill(0.0);
            let best = tile(&pad, nothing);
            add(block, &pad, rest.len() / d, best);
        }
        let (even, odd) = block.split_at_mut(k * stride);
        for ((s, a), b) in sums
            .chunks_exact_mut(d)
            .zip(even.chunks_exact_mut(stride))
            .zip(odd.chunks_exact_mut(stride))
        {
            for ((s, a), b) in s.iter_mut().zip(a.iter_mut()).zip(b.iter_mut()) {
                *s += f64::from(*a) + f64::from(*b);
                (*a, *b) = (0.0, 0.0);
            }
        }
    }
    Acc {
        sums,
        counts: (0..k).map(|c| (counts[c] + counts[k + c]) as f64).collect(),
        inertia: _mm512_reduce_add_pd(_mm512_add_pd(inertia[0], inertia[1])),
        labels: nearest,
    }
}

/// Bytes ahead of the rows being worked on that are requested into the
/// core's L2 cache: with the loads issued this early, the arithmetic of a
/// tile overlaps the memory traffic of later ones. Measured on 1M x 50,
/// k = 8, 2 threads, before the data sat on huge pages: the step took
/// 16-19 ms without (about the sum of compute and memory time), 11-12 ms
/// with (one pass over the data alone: 10-11 ms). Into L1 instead, or from
/// 2 to 8 KiB ahead, gained less; 16 to 128 KiB ahead are alike.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 32 << 10;

/// The cache lines `PREFETCH_BYTES` past `rows`, up to `end`: the first
/// line's address and how many there are.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lines_ahead(rows: &[f32], end: *const f32) -> (*const i8, usize) {
    let start = rows.as_ptr() as usize + PREFETCH_BYTES;
    let stop = (end as usize).min(start + std::mem::size_of_val(rows));
    (start as *const i8, stop.saturating_sub(start).div_ceil(64))
}

/// Asks for line `i` of [`lines_ahead`]'s `first`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line(first: *const i8, i: usize) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    // SAFETY: a prefetch is a hint: it never faults and changes no program
    // state; the address is inside the data.
    unsafe { _mm_prefetch::<_MM_HINT_T1>(first.wrapping_add(i * 64)) };
}

/// Asks for all the cache lines `PREFETCH_BYTES` past `rows`, up to `end`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_ahead(rows: &[f32], end: *const f32) {
    let (first, lines) = lines_ahead(rows, end);
    for i in 0..lines {
        prefetch_line(first, i);
    }
}

/// The 8 dot-product accumulators of a tile of 8 rows against one group
/// of 8 centers (see [`pair_centers`]): lane `2i + f` of row r's vector
/// holds the part of `x_r . c_i` over the features of parity `f`. One
/// 64-bit broadcast of two features and one 16-lane FMA per row and pair.
///
/// The loop over pairs is written in assembly. Compiled from intrinsics it
/// kept one pointer per row and spent an add on each of the 8 broadcasts;
/// here the rows are reached from three bases and the row stride (rows 0,
/// 1, 2 and 4 from the first, 3, 5 and 7 from the fourth row, 6 from the
/// seventh), so a pair costs 22 instructions instead of 27. With
/// [`add_rows512`]'s unrolling, the step went from 8.9-9.1 ms to 7.4-7.7
/// ms on 1M x 50, k = 8, 2 threads (middle quartiles of 42 runs each).
///
/// `ahead` ([`lines_ahead`]) is prefetched one line per pair of features,
/// in among the arithmetic: issued all at once before the tile, the
/// prefetches filled the core's miss buffers and its own loads waited
/// (the step took 9.0-9.4 ms against 7.5-8.4 ms).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn tile_dots(
    rows: &[f32],
    d: usize,
    cg: &[f32],
    ahead: (*const i8, usize),
) -> [std::arch::x86_64::__m512; TILE512] {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps};
    let full = d / 2;
    assert!(rows.len() >= TILE512 * d && cg.len() >= d.div_ceil(2) * 16);
    let [
        mut a0,
        mut a1,
        mut a2,
        mut a3,
        mut a4,
        mut a5,
        mut a6,
        mut a7,
    ] = [_mm512_setzero_ps(); TILE512];
    let (first, lines) = ahead;
    // One prefetch per pair in the loop when there are enough lines ahead;
    // otherwise the loop's prefetches stay on the tile's first line (in
    // L1 already) and the lines ahead are asked for after it.
    let (pf, step, done) = if lines >= full {
        (first, 64usize, full)
    } else {
        (rows.as_ptr().cast::<i8>(), 0, 0)
    };
    if full > 0 {
        let b0 = rows.as_ptr();
        // SAFETY: for pair p < d / 2 the loop reads the 8 bytes at
        // `b0 + r * 4d + 8p` of each row r < 8 and the 64 bytes at
        // `cg + 64p`, all inside `rows` and `cg` (asserted above), and
        // writes nothing but its registers; a prefetch never faults.
        unsafe {
            let (b3, b6) = (b0.add(3 * d), b0.add(6 * d));
            std::arch::asm!(
                "2:",
                "vmovups {c}, zmmword ptr [{cp}]",
                "prefetcht1 byte ptr [{pf}]",
                "vbroadcastsd {t0}, qword ptr [{b0}]",
                "vfmadd231ps {a0}, {t0}, {c}",
                "vbroadcastsd {t1}, qword ptr [{b0} + {s}]",
                "vfmadd231ps {a1}, {t1}, {c}",
                "vbroadcastsd {t0}, qword ptr [{b0} + {s}*2]",
                "vfmadd231ps {a2}, {t0}, {c}",
                "vbroadcastsd {t1}, qword ptr [{b3}]",
                "vfmadd231ps {a3}, {t1}, {c}",
                "vbroadcastsd {t0}, qword ptr [{b0} + {s}*4]",
                "vfmadd231ps {a4}, {t0}, {c}",
                "vbroadcastsd {t1}, qword ptr [{b3} + {s}*2]",
                "vfmadd231ps {a5}, {t1}, {c}",
                "vbroadcastsd {t0}, qword ptr [{b6}]",
                "vfmadd231ps {a6}, {t0}, {c}",
                "vbroadcastsd {t1}, qword ptr [{b3} + {s}*4]",
                "vfmadd231ps {a7}, {t1}, {c}",
                "add {b0}, 8",
                "add {b3}, 8",
                "add {b6}, 8",
                "add {cp}, 64",
                "add {pf}, {step}",
                "dec {n}",
                "jnz 2b",
                b0 = inout(reg) b0 => _,
                b3 = inout(reg) b3 => _,
                b6 = inout(reg) b6 => _,
                s = in(reg) d * 4,
                cp = inout(reg) cg.as_ptr() => _,
                pf = inout(reg) pf => _,
                step = in(reg) step,
                n = inout(reg) full => _,
                c = out(zmm_reg) _,
                t0 = out(zmm_reg) _,
                t1 = out(zmm_reg) _,
                a0 = inout(zmm_reg) a0,
                a1 = inout(zmm_reg) a1,
                a2 = inout(zmm_reg) a2,
                a3 = inout(zmm_reg) a3,
                a4 = inout(zmm_reg) a4,
                a5 = inout(zmm_reg) a5,
                a6 = inout(zmm_reg) a6,
                a7 = inout(zmm_reg) a7,
                options(nostack, readonly),
            );
        }
    }
    for i in done..lines {
        prefetch_line(first, i);
    }
    let mut acc = [a0, a1, a2, a3, a4, a5, a6, a7];
    if d % 2 == 1 {
        // SAFETY: the last pair holds one feature; its odd lanes are 0.
        unsafe {
            let c = _mm512_loadu_ps(cg.as_ptr().add(full * 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = *rows.get_unchecked(r * d + d - 1);
                *a = _mm512_fmadd_ps(_mm512_set1_ps(v), c, *a);
            }
        }
    }
    acc
}

/// Per group of 8 centers, for [`tile_nearest`]: `|c|^2` of the even and
/// the odd center of each 128-bit lane (lane L: centers 2L and 2L + 1),
/// and their indices.
#[cfg(target_arch = "x86_64")]
struct GroupConsts {
    cs_even: std::arch::x86_64::__m512,
    cs_odd: std::arch::x86_64::__m512,
    i_even: std::arch::x86_64::__m512i,
    i_odd: std::arch::x86_64::__m512i,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn group_consts(c_sq: &[f32]) -> Vec<GroupConsts> {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_loadu_si512};
    c_sq.chunks_exact(LANES)
        .enumerate()
        .map(|(g, cs)| {
            let pick = |odd: usize| -> ([f32; 16], [i32; 16]) {
                (
                    std::array::from_fn(|e| cs[2 * (e / 4) + odd]),
                    std::array::from_fn(|e| (g * LANES + 2 * (e / 4) + odd) as i32),
                )
            };
            let ((ce, ie), (co, io)) = (pick(0), pick(1));
            // SAFETY: each array holds 16 elements.
            unsafe {
                GroupConsts {
                    cs_even: _mm512_loadu_ps(ce.as_ptr()),
                    cs_odd: _mm512_loadu_ps(co.as_ptr()),
                    i_even: _mm512_loadu_si512(ie.as_ptr().cast()),
                    i_odd: _mm512_loadu_si512(io.as_ptr().cast()),
                }
            }
        })
        .collect()
}

/// Lane by lane, the distance and index of `hi` where its distance is
/// strictly smaller, else of `lo`: with `lo` holding the lower indices,
/// ties go to the lower index.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn keep_lower(
    lo: (std::arch::x86_64::__m512, std::arch::x86_64::__m512i),
    hi: (std::arch::x86_64::__m512, std::arch::x86_64::__m512i),
) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::{
        _CMP_LT_OQ, _mm512_cmp_ps_mask, _mm512_mask_blend_epi32, _mm512_mask_blend_ps,
    };
    let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(hi.0, lo.0);
    (
        _mm512_mask_blend_ps(m, lo.0, hi.0),
        _mm512_mask_blend_epi32(m, lo.1, hi.1),
    )
}

/// Where row r of a tile is in [`tile_nearest`]'s result.
#[cfg(target_arch = "x86_64")]
const TILE_LANE: [usize; TILE512] = [0, 1, 2, 3, 8, 9, 10, 11];

/// The nearest center of one group for each row of a tile, from its
/// [`tile_dots`] accumulators, with no horizontal work per row: shuffles
/// transpose the accumulators (adding the two feature parities on the way)
/// so that lane L of a vector holds one center for 4 rows, then a tree of
/// three compare-and-blend steps keeps the smaller `|c|^2 - 2 x.c` and its
/// index. At each step the candidate with the lower indices is the one
/// kept on a tie, so ties go to the lowest index, as on the other paths.
/// Rows 0-3 come out in elements 0-3, rows 4-7 in elements 8-11
/// ([`TILE_LANE`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn tile_nearest(
    acc: &[std::arch::x86_64::__m512; TILE512],
    k: &GroupConsts,
) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_add_ps, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_shuffle_f32x4,
        _mm512_shuffle_i32x4, _mm512_shuffle_ps,
    };
    // Lane L of `rows2(a, b)`: [a.c(2L), a.c(2L+1), b.c(2L), b.c(2L+1)].
    let rows2 = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(a, b),
            _mm512_shuffle_ps::<0xDD>(a, b),
        )
    };
    let (p01, p23) = (rows2(acc[0], acc[1]), rows2(acc[2], acc[3]));
    let (p45, p67) = (rows2(acc[4], acc[5]), rows2(acc[6], acc[7]));
    let minus2 = _mm512_set1_ps(-2.0);
    // From lane L, element r of the dot products with the even and the odd
    // center of each lane: the nearer of the two, for 4 rows.
    let pair = |even: __m512, odd: __m512| -> (__m512, __m512i) {
        keep_lower(
            (_mm512_fmadd_ps(even, minus2, k.cs_even), k.i_even),
            (_mm512_fmadd_ps(odd, minus2, k.cs_odd), k.i_odd),
        )
    };
    let (va, ia) = pair(
        _mm512_shuffle_ps::<0x88>(p01, p23),
        _mm512_shuffle_ps::<0xDD>(p01, p23),
    );
    let (vb, ib) = pair(
        _mm512_shuffle_ps::<0x88>(p45, p67),
        _mm512_shuffle_ps::<0xDD>(p45, p67),
    );
    // Lanes ({0,1} rows 0-3, {4,5} rows 0-3, {0,1} rows 4-7, {4,5} rows
    // 4-7) against the same with {2,3} and {6,7}.
    let u = keep_lower(
        (
            _mm512_shuffle_f32x4::<0x88>(va, vb),
            _mm512_shuffle_i32x4::<0x88>(ia, ib),
        ),
        (
            _mm512_shuffle_f32x4::<0xDD>(va, vb),
            _mm512_shuffle_i32x4::<0xDD>(ia, ib),
        ),
    );
    // Centers 0-3 against 4-7.
    keep_lower(
        (
            _mm512_shuffle_f32x4::<0xA0>(u.0, u.0),
            _mm512_shuffle_i32x4::<0xA0>(u.1, u.1),
        ),
        (
            _mm512_shuffle_f32x4::<0xF5>(u.0, u.0),
            _mm512_shuffle_i32x4::<0xF5>(u.1, u.1),
        ),
    )
}

/// Sizes for [`add_rows512`]: `d` features per row, `k` clusters, sums
/// `stride` floats apart, rows of `full` whole vectors plus a `tail` mask.
#[cfg(target_arch = "x86_64")]
struct Shape512 {
    d: usize,
    k: usize,
    stride: usize,
    full: usize,
    tail: u16,
}

/// [`add_rows512`]'s `F` when the number of whole vectors per row is only
/// known at run time.
#[cfg(target_arch = "x86_64")]
const ANY_WIDTH: usize = usize::MAX;

/// [`add_rows512`] for the number of whole vectors per row, `s.full`:
/// compiled for 0 to 4 (rows of up to 80 features) with the loop over them
/// unrolled, which took the step from 8.9-9.1 ms to 8.4-8.6 ms on 1M x 50,
/// k = 8, 2 threads; wider rows loop.
#[cfg(target_arch = "x86_64")]
fn add_rows_for(full: usize) -> AddRows {
    match full {
        0 => add_rows512::<0>,
        1 => add_rows512::<1>,
        2 => add_rows512::<2>,
        3 => add_rows512::<3>,
        4 => add_rows512::<4>,
        _ => add_rows512::<ANY_WIDTH>,
    }
}

#[cfg(target_arch = "x86_64")]
type AddRows = unsafe fn(
    *const f32,
    usize,
    &[u32; 16],
    *mut f32,
    &mut [u64],
    &Shape512,
) -> std::arch::x86_64::__m512;

/// Adds each of the `used` rows at `rows` into its cluster's sum
/// (`idx[TILE_LANE[r]]`; even rows into the first `k` runs of `block`, odd
/// rows into the second) and count, and returns their squares summed lane
/// by lane. `F` is `s.full`, or [`ANY_WIDTH`].
///
/// # Safety
/// `rows` holds `used` rows of `d` floats, `block` `2k` runs of `stride`
/// floats on 64-byte boundaries, and `counts` has `2k` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn add_rows512<const F: usize>(
    rows: *const f32,
    used: usize,
    idx: &[u32; 16],
    block: *mut f32,
    counts: &mut [u64],
    s: &Shape512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_setzero_ps};
    let full = if F == ANY_WIDTH { s.full } else { F };
    let mut sq = [_mm512_setzero_ps(); 2];
    let mut one = |r: usize, copy: usize| {
        // An index is below k unless every distance was NaN; the clamp
        // keeps even that inside the sums.
        let c = (idx[TILE_LANE[r]] as usize).min(s.k - 1) + copy * s.k;
        counts[c] += 1;
        // SAFETY: row r < used and run c < 2k exist (the caller's promise).
        unsafe { add_row512(block.add(c * s.stride), rows.add(r * s.d), full, s.tail) }
    };
    let mut r = 0;
    while r + 1 < used {
        sq[0] = _mm512_add_ps(sq[0], one(r, 0));
        sq[1] = _mm512_add_ps(sq[1], one(r + 1, 1));
        r += 2;
    }
    if r < used {
        sq[0] = _mm512_add_ps(sq[0], one(r, 0));
    }
    _mm512_add_ps(sq[0], sq[1])
}

/// Adds the row at `row` (`16 * full` floats, then the lanes of `tail`)
/// into the sums at `dst` and returns its squares, lane by lane.
///
/// # Safety
/// `row` holds the row's floats and `dst` is 64-byte aligned with room
/// for `full` vectors, plus one if `tail` is not 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn add_row512(
    dst: *mut f32,
    row: *const f32,
    full: usize,
    tail: u16,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps,
        _mm512_setzero_ps, _mm512_store_ps,
    };
    // SAFETY: the caller's promise; masked-off lanes are not read.
    unsafe {
        let mut sq = _mm512_setzero_ps();
        for v in 0..full {
            let xv = _mm512_loadu_ps(row.add(v * 16));
            let at = dst.add(v * 16);
            _mm512_store_ps(at, _mm512_add_ps(_mm512_load_ps(at), xv));
            sq = _mm512_fmadd_ps(xv, xv, sq);
        }
        if tail != 0 {
            let xv = _mm512_maskz_loadu_ps(tail, row.add(full * 16));
            let at = dst.add(full * 16);
            _mm512_store_ps(at, _mm512_add_ps(_mm512_load_ps(at), xv));
            sq = _mm512_fmadd_ps(xv, xv, sq);
        }
        sq
    }
}

/// Folds 8 dot products `x.c` of one group into `best`: `|c|^2 - 2 x.c`
/// for the 8 centers (2 x.c is exact, so this rounds like the scalar
/// path), the smallest by a min-reduction, its first lane from a compare
/// mask; no branch per center.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn argmin8(
    dots: std::arch::x86_64::__m256,
    cs: std::arch::x86_64::__m256,
    g: usize,
    best: &mut (usize, f32),
) {
    use std::arch::x86_64::{
        _CMP_EQ_OQ, _mm_cvtss_f32, _mm_min_ps, _mm_min_ss, _mm_movehl_ps, _mm_shuffle_ps,
        _mm256_castps256_ps128, _mm256_cmp_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_movemask_ps, _mm256_set1_ps,
    };
    let dist = _mm256_fmadd_ps(_mm256_set1_ps(-2.0), dots, cs);
    let m = _mm_min_ps(_mm256_castps256_ps128(dist), _mm256_extractf128_ps(dist, 1));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    let v = _mm_cvtss_f32(m);
    if v < best.1 {
        let eq = _mm256_cmp_ps(dist, _mm256_set1_ps(v), _CMP_EQ_OQ);
        let lane = (_mm256_movemask_ps(eq) as u32).trailing_zeros() as usize;
        *best = (g * LANES + lane.min(LANES - 1), v);
    }
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
    labels: bool,
) -> Acc {
    debug_assert_eq!(ct.len(), c_sq.len() * d);
    assign_range_with(
        x,
        d,
        k,
        labels,
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
    labels: bool,
    tile: impl Fn(&[f32]) -> [(usize, f32); TILE],
    one: impl Fn(&[f32]) -> [(usize, f32); 1],
) -> Acc {
    let mut acc = Acc {
        sums: vec![0.0; k * d],
        counts: vec![0.0; k],
        inertia: 0.0,
        labels: Vec::with_capacity(if labels { x.len() / d.max(1) } else { 0 }),
    };
    let mut block = vec![0f32; k * d];
    #[cfg(target_arch = "x86_64")]
    let end = x.as_ptr_range().end;
    for chunk in x.chunks(FLUSH_ROWS * d) {
        let mut tiles = chunk.chunks_exact(TILE * d);
        for rows in &mut tiles {
            #[cfg(target_arch = "x86_64")]
            prefetch_ahead(rows, end);
            let best = tile(rows);
            if labels {
                acc.labels.extend(best.iter().map(|&(c, _)| c as u32));
            }
            for (row, (c, dist)) in rows.chunks_exact(d).zip(best) {
                add_row(&mut acc, &mut block, row, d, c, dist);
            }
        }
        for row in tiles.remainder().chunks_exact(d) {
            let [(c, dist)] = one(row);
            if labels {
                acc.labels.push(c as u32);
            }
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
    fn nearest_centers_are_the_rows_of_the_step_in_order() {
        // Runs of rows over 3 threads, a partial last tile: the labels come
        // back in row order and count what the step counts.
        let (n, d, k) = (5 * 1024 + 13, 7, 11);
        let x = noise(n * d, 41);
        let centers = noise(k * d, 42);
        let labels = nearest_centers(&x, d, &centers, 3);
        let (_, counts, _) = assign_stats(&x, d, &centers, 3);
        let mut from_labels = vec![0.0; k];
        for &l in &labels {
            from_labels[l as usize] += 1.0;
        }
        assert_eq!(labels.len(), n);
        assert_eq!(from_labels, counts);
        // Each row alone gets the label it got among the others.
        for i in (0..n).step_by(97) {
            let one = nearest_centers(&x[i * d..(i + 1) * d], d, &centers, 1);
            assert_eq!(one, [labels[i]], "row {i}");
        }
    }

    #[test]
    fn threads_taking_runs_as_they_come_give_identical_sums() {
        // 21 runs of 1024 rows over 3 threads: which thread takes which run
        // varies from call to call, the sums must not.
        let (n, d, k) = (21 * 1024 - 5, 9, 6);
        let x = noise(n * d, 31);
        let centers = noise(k * d, 32);
        let first = assign_stats(&x, d, &centers, 3);
        for _ in 0..4 {
            let again = assign_stats(&x, d, &centers, 3);
            assert!(again.0 == first.0 && again.1 == first.1 && again.2 == first.2);
        }
    }

    #[test]
    fn plain_and_fused_arithmetic_agree() {
        let (n, d, k) = (999, 21, 13);
        let x = noise(n * d, 4);
        let centers = noise(k * d, 5);
        let (ct, c_sq) = transpose_centers(&centers, d);
        let plain = assign_range_any::<false>(&x, d, k, &ct, &c_sq, true);
        let fused = assign_range_any::<true>(&x, d, k, &ct, &c_sq, true);
        assert_eq!(plain.counts, fused.counts);
        assert_eq!(plain.labels, fused.labels);
        assert_eq!(plain.labels.len(), n);
        let mut counts = vec![0.0; k];
        for &l in &plain.labels {
            counts[l as usize] += 1.0;
        }
        assert_eq!(counts, plain.counts);
        assert_eq!(plain.counts.iter().sum::<f64>(), n as f64);
        assert!((plain.inertia - fused.inertia).abs() < 1e-4 * plain.inertia);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_and_narrow_vectors_agree() {
        let has = |f: &str| match f {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        };
        if !has("avx512f") || !has("avx2") {
            eprintln!("this CPU has no AVX-512: nothing to compare");
            return;
        }
        // Rows of 0 to 6 whole vectors, with and without a partial one.
        for (d, k) in [
            (1, 3),
            (2, 8),
            (3, 13),
            (16, 8),
            (17, 9),
            (50, 8),
            (33, 16),
            (90, 8),
            (96, 5),
        ] {
            let n = 1003;
            let x = noise(n * d, d as u64);
            let centers = noise(k * d, 100 + k as u64);
            let (ct, c_sq) = transpose_centers(&centers, d);
            let pairs = pair_centers(&ct, d);
            // SAFETY: both feature sets were detected above.
            let (narrow, wide) = unsafe {
                (
                    assign_range_avx2(&x, d, k, &ct, &c_sq, true),
                    assign_range_avx512(&x, d, k, lines_as_floats(&pairs), &c_sq, true),
                )
            };
            assert_eq!(narrow.counts, wide.counts, "d {d} k {k}");
            assert_eq!(narrow.labels, wide.labels, "d {d} k {k}");
            assert_eq!(wide.labels.len(), n, "d {d} k {k}");
            assert!(
                narrow
                    .sums
                    .iter()
                    .zip(&wide.sums)
                    .all(|(a, b)| (a - b).abs() < 1e-3),
                "d {d} k {k}"
            );
            let rel = (narrow.inertia - wide.inertia).abs() / narrow.inertia;
            assert!(
                rel < 1e-5,
                "d {d} k {k}: {} {}",
                narrow.inertia,
                wide.inertia
            );
        }
    }

    #[test]
    fn ties_go_to_the_lowest_index_on_every_path() {
        // Center 5 repeats center 1, 9 repeats 3 and 12 repeats 6: no row
        // may be counted for a repeat, on any path (9 and 12 sit in the
        // second group of 8, so the merge between groups is covered too).
        let (n, d, k) = (501, 6, 13);
        let x = noise(n * d, 21);
        let mut centers = noise(k * d, 22);
        for (copy, of) in [(5, 1), (9, 3), (12, 6)] {
            let src = centers[of * d..(of + 1) * d].to_vec();
            centers[copy * d..(copy + 1) * d].copy_from_slice(&src);
        }
        let (ct, c_sq) = transpose_centers(&centers, d);
        let plain = assign_range_any::<false>(&x, d, k, &ct, &c_sq, false);
        for (copy, of) in [(5, 1), (9, 3), (12, 6)] {
            assert_eq!(plain.counts[copy], 0.0, "center {copy}");
            assert!(plain.counts[of] > 0.0, "center {of}");
        }
        // The widest kernel this CPU has.
        let dispatched = assign_range(&x, d, k, &ct, &c_sq, &wide_pairs(&ct, d), false);
        assert_eq!(dispatched.counts, plain.counts);
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
