//! Row-parallel CPU work on kiln-runtime's own threads.
//!
//! libtorch parallelizes each operation with OpenMP: every op forks, and its
//! workers spin at a barrier when it ends. For a chain of small operations
//! (a mini-batch step, a block of distances) on a few cores that fork and
//! spin costs more than the arithmetic, and a busy neighbour on the same
//! cores makes it far worse. The kernels here split the rows over plain
//! threads instead, each running libtorch single-threaded (or no libtorch at
//! all), and combine the per-thread results once.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

/// Threads of the row-parallel kernels: libtorch's intra-op thread count
/// when first asked (it honours `OMP_NUM_THREADS`), at least 1.
pub fn threads() -> usize {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = tch::get_num_threads().max(1) as usize;
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

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
    // kiln never writes to a tensor while a slice of it is in use.
    Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) })
}

/// A float32 `[rows, cols]` tensor over `data` without a copy, for the
/// duration of `f`. `f` must not keep the tensor (or a view of it) past its
/// return.
pub fn with_matrix<T>(data: &[f32], cols: usize, f: impl FnOnce(&Tensor) -> T) -> T {
    let rows = data.len().checked_div(cols).unwrap_or(0);
    // SAFETY: the tensor reads `rows x cols` floats of `data`, which outlives
    // the call; the tensor is dropped before `data`'s borrow ends, and
    // nothing writes through it.
    let t = unsafe {
        Tensor::from_blob(
            data.as_ptr() as *const u8,
            &[rows as i64, cols as i64],
            &[cols as i64, 1],
            Kind::Float,
            Device::Cpu,
        )
    };
    f(&t)
}

/// Asks Linux to back the storage of a CPU tensor of at least 4 MiB with
/// transparent huge pages, for tensors about to be filled (pages not yet
/// touched): one TLB entry then covers 2 MiB instead of 4 KiB, and a pass
/// over a 1M x 50 float32 dataset with 2 threads took 6.1 ms instead of
/// 9.6 ms here. Where THP is off this does nothing; numpy does the same
/// for its large arrays. A hint: failures are ignored.
pub fn advise_huge_pages(t: &Tensor) {
    const HUGE: usize = 2 << 20;
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return;
    }
    let bytes = t.numel() * t.kind().elt_size_in_bytes();
    if bytes < 2 * HUGE {
        return;
    }
    let start = (t.data_ptr() as usize).next_multiple_of(HUGE);
    let end = (t.data_ptr() as usize + bytes) / HUGE * HUGE;
    #[cfg(target_os = "linux")]
    if end > start {
        // SAFETY: [start, end) lies inside the tensor's allocation, which
        // `t` keeps alive; MADV_HUGEPAGE changes how pages are backed, not
        // their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// `0..n` cut into at most `parts` contiguous ranges of nearly equal length.
pub fn ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let per = n.div_ceil(parts);
    (0..parts)
        .map(|p| (p * per).min(n)..((p + 1) * per).min(n))
        .filter(|r| !r.is_empty() || n == 0)
        .collect()
}

/// Runs `f` on [`ranges`]`(n, threads)`, one thread each, and returns the
/// results in range order. Each thread runs libtorch single-threaded, so `f`
/// may call tensor operations on its rows.
pub fn map_ranges<T, F>(n: usize, threads: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(Range<usize>) -> T + Sync,
{
    if n == 0 {
        let _single = TorchThreads::set(1);
        return vec![f(0..0)];
    }
    // `ranges`' cut: runs of n / threads, one per thread.
    map_chunks(n, n.div_ceil(threads.clamp(1, n)), threads, f)
}

/// Runs `f` on `0..n` cut into runs of `chunk` (the last shorter), on
/// `threads` threads that each take the next run not yet taken, and
/// returns the results in run order, so that what they add up to does not
/// depend on which thread ran what. Unlike [`map_ranges`]'s fixed halves,
/// a thread slowed down (a busy neighbour on its core, a host that takes
/// the core away for a while) leaves more of the work to the others
/// instead of making every other thread wait for it at the end.
pub fn map_chunks<T, F>(n: usize, chunk: usize, threads: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(Range<usize>) -> T + Sync,
{
    let chunk = chunk.max(1);
    let runs = n.div_ceil(chunk);
    let run = |i: usize| i * chunk..((i + 1) * chunk).min(n);
    let workers = threads.clamp(1, runs.max(1));
    if workers == 1 {
        let _single = TorchThreads::set(1);
        return (0..runs).map(|i| f(run(i))).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (f, next, run) = (&f, &next, &run);
                s.spawn(move || {
                    tch::set_num_threads(1);
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= runs {
                            return out;
                        }
                        out.push((i, f(run(i))));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, v)| v).collect()
}

/// libtorch's intra-op thread count set for as long as the guard lives.
pub struct TorchThreads(i32);

impl TorchThreads {
    /// Sets `n` threads; dropping the guard restores the count before.
    pub fn set(n: i32) -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(n.max(1));
        TorchThreads(before)
    }
}

impl Drop for TorchThreads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// The element-wise sums, over blocks of at most `block` rows of the
/// row-major float32 matrix `x` (`d` columns), of the tensors `f` returns for
/// each block (given as a `[rows, d]` tensor and its row range), computed on
/// kiln's threads with single-threaded libtorch.
pub fn sum_blocks<F>(x: &[f32], d: usize, block: usize, f: F) -> Vec<Tensor>
where
    F: Fn(&Tensor, Range<usize>) -> Vec<Tensor> + Sync,
{
    let n = x.len().checked_div(d).unwrap_or(0);
    let parts = map_ranges(n, threads(), |range| {
        let _guard = tch::no_grad_guard();
        let mut acc: Option<Vec<Tensor>> = None;
        for start in (range.start..range.end).step_by(block.max(1)) {
            let rows = start..(start + block.max(1)).min(range.end);
            let out = with_matrix(&x[rows.start * d..rows.end * d], d, |xb| {
                f(xb, rows.clone())
            });
            acc = Some(add_tensors(acc, out));
        }
        acc
    });
    let mut total: Option<Vec<Tensor>> = None;
    for part in parts.into_iter().flatten() {
        total = Some(add_tensors(total, part));
    }
    total.unwrap_or_else(|| with_matrix(&[], d.max(1), |empty| f(empty, 0..0)))
}

/// `b`, plus `a` tensor by tensor when there is one.
fn add_tensors(a: Option<Vec<Tensor>>, b: Vec<Tensor>) -> Vec<Tensor> {
    match a {
        None => b,
        Some(a) => a.iter().zip(&b).map(|(a, b)| a + b).collect(),
    }
}

/// Adds `b` into `a` element by element.
pub fn add_into(a: &mut [f64], b: &[f64]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

/// Per-column sums over rows, and per-column sums of squared deviations
/// from `mean` when it is given, of the row-major `n x d` slice `x`, in f64
/// (rows are added in f32 in short runs first, which vectorizes).
pub fn column_sums(x: &[f32], d: usize, mean: Option<&[f64]>, threads: usize) -> Vec<f64> {
    const RUN: usize = 256;
    let n = x.len().checked_div(d).unwrap_or(0);
    let mean32: Option<Vec<f32>> = mean.map(|m| m.iter().map(|&v| v as f32).collect());
    let parts = map_ranges(n, threads, |rows| {
        let mut total = vec![0f64; d];
        let mut run = vec![0f32; d];
        for chunk in x[rows.start * d..rows.end * d].chunks(RUN * d) {
            run.iter_mut().for_each(|v| *v = 0.0);
            for row in chunk.chunks_exact(d) {
                match &mean32 {
                    None => run.iter_mut().zip(row).for_each(|(s, v)| *s += v),
                    Some(m) => run
                        .iter_mut()
                        .zip(row.iter().zip(m))
                        .for_each(|(s, (v, m))| *s += (v - m) * (v - m)),
                }
            }
            total
                .iter_mut()
                .zip(&run)
                .for_each(|(t, r)| *t += f64::from(*r));
        }
        total
    });
    let mut sums = vec![0f64; d];
    for p in &parts {
        add_into(&mut sums, p);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field of the mapping of this process that holds `at`, from
    /// `/proc/self/smaps` (`AnonHugePages`, `VmFlags`, ...).
    #[cfg(target_os = "linux")]
    fn smaps_field_at(at: usize, field: &str) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
            } else if inside
                && let Some(value) = line.strip_prefix(field).and_then(|l| l.strip_prefix(':'))
            {
                return Some(value.trim().to_string());
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_tensors_are_advised_onto_huge_pages_where_the_kernel_offers_them() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if mode.is_empty() || mode.contains("[never]") {
            eprintln!("transparent huge pages are off here: nothing to check");
            return;
        }
        let mut t = Tensor::empty([16 << 20], (Kind::Float, Device::Cpu));
        advise_huge_pages(&t);
        let _ = t.fill_(1.0);
        // madvise splits the mapping: the advised part holds the middle. The
        // advice is what this code controls (the `hg` flag); how much the
        // kernel then backs with huge pages depends on how fragmented memory
        // is, so it is reported, not asserted.
        let middle = t.data_ptr() as usize + (32 << 20);
        let flags = smaps_field_at(middle, "VmFlags").expect("the tensor's mapping");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "the tensor's mapping is not advised MADV_HUGEPAGE: VmFlags {flags}"
        );
        let huge = smaps_field_at(middle, "AnonHugePages").unwrap_or_default();
        eprintln!("the advised 64 MiB tensor has {huge} on huge pages");
    }

    #[test]
    fn chunks_cover_every_row_once_in_order() {
        for (n, chunk, threads) in [(10, 3, 2), (3, 8, 4), (1, 1, 1), (1000, 7, 3), (0, 4, 2)] {
            let runs = map_chunks(n, chunk, threads, |r| r);
            assert!(runs.iter().all(|r| r.len() <= chunk && !r.is_empty()));
            let covered: Vec<usize> = runs.into_iter().flatten().collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} {chunk} {threads}");
        }
    }

    #[test]
    fn ranges_cover_every_row_once() {
        for (n, parts) in [(10, 3), (3, 8), (1, 1), (1000, 7), (0, 4)] {
            let r = ranges(n, parts);
            assert_eq!(map_ranges(n, parts, |r| r), r, "{n} {parts}");
            assert!(r.len() <= parts.max(1));
            let covered: Vec<usize> = r.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} {parts}");
        }
    }

    #[test]
    fn column_sums_match_f64_arithmetic() {
        let (n, d) = (1003, 3);
        let x: Vec<f32> = (0..n * d).map(|i| ((i * 37) % 101) as f32 * 0.5).collect();
        let mut mean = vec![0f64; d];
        for row in x.chunks(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v);
            }
        }
        assert_eq!(column_sums(&x, d, None, 3), mean);
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut dev = vec![0f64; d];
        for row in x.chunks(d) {
            for ((s, v), m) in dev.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(*v) - m).powi(2);
            }
        }
        let got = column_sums(&x, d, Some(&mean), 2);
        for (g, e) in got.iter().zip(&dev) {
            assert!((g - e).abs() < 1e-4 * e, "{g} {e}");
        }
    }
}
