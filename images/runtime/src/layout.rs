//! Where each rank's training rows sit among the rows of the whole channel,
//! so that every trainer walks the global rows of a one-rank run whatever
//! the number of ranks and however the channel was distributed:
//!
//! - a fully replicated channel is read by every rank, each keeping rows
//!   `i % world == rank` (interleaved): local row `j` is global row
//!   `j * world + rank`;
//! - a channel sharded by key (each rank's folder, or its objects of the
//!   listing, holds only its shard) is read whole by each rank: the global
//!   rows are rank 0's shard, then rank 1's, and so on, so rank `r` holds
//!   the block of global rows `start[r]..start[r + 1]`. The shards may be
//!   of any sizes; their row counts are summed over ranks once.
//!
//! A global batch is the same set of global rows on any number of ranks;
//! each rank takes the rows of it that it holds (possibly none: it then adds
//! zero gradient and zero count, but takes part in every collective), and
//! every rank runs the same number of steps per epoch.

use crate::dist::Comm;
use crate::error::{Error, Result};

/// The layout of one channel's rows over the ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLayout {
    rank: usize,
    world: usize,
    global_rows: usize,
    /// `None`: interleaved. `Some(start)`: rank `r` holds global rows
    /// `start[r]..start[r + 1]` (`world + 1` entries).
    blocks: Option<Vec<usize>>,
}

impl RowLayout {
    /// One rank holding every row.
    pub fn single(rows: usize) -> Self {
        RowLayout {
            rank: 0,
            world: 1,
            global_rows: rows,
            blocks: None,
        }
    }

    /// Rows of a replicated channel of `global_rows` rows, interleaved.
    pub fn interleaved(global_rows: usize, rank: usize, world: usize) -> Self {
        RowLayout {
            rank,
            world,
            global_rows,
            blocks: None,
        }
    }

    /// Shards of `counts[r]` rows on rank `r`, in rank order.
    pub fn blocks(counts: &[usize], rank: usize) -> Self {
        let mut start = Vec::with_capacity(counts.len() + 1);
        start.push(0);
        for c in counts {
            start.push(start.last().copied().unwrap_or(0) + c);
        }
        RowLayout {
            rank,
            world: counts.len(),
            global_rows: *start.last().expect("one entry"),
            blocks: Some(start),
        }
    }

    /// The layout of a channel read by every rank: this rank holds
    /// `local_rows` rows of a stream of `seen` rows (the whole channel when
    /// it is replicated, the rank's shard when it is `sharded`). One
    /// all-reduce of every rank's counts; every rank must call it at the
    /// same point. Ranks that read different replicated channels (a file
    /// that changed, or was still being copied) are an error naming them.
    pub fn agree(
        comm: &mut Comm,
        channel: &str,
        local_rows: usize,
        seen: usize,
        sharded: bool,
    ) -> Result<Self> {
        let (rank, world) = (comm.rank, comm.world);
        if world == 1 {
            return Ok(RowLayout::single(local_rows));
        }
        let mut mine = vec![0.0; 2 * world];
        mine[rank] = local_rows as f64;
        mine[world + rank] = seen as f64;
        let all = comm.sum_f64(&mine)?;
        let counts: Vec<usize> = all[..world].iter().map(|&c| c as usize).collect();
        if sharded {
            return Ok(RowLayout::blocks(&counts, rank));
        }
        let seen_by: Vec<usize> = all[world..].iter().map(|&c| c as usize).collect();
        let layout = RowLayout::interleaved(seen, rank, world);
        let expected: Vec<usize> = (0..world).map(|r| layout.rows_of(r)).collect();
        if seen_by.iter().any(|&s| s != seen) || counts != expected {
            let each: Vec<String> = seen_by
                .iter()
                .enumerate()
                .map(|(r, s)| format!("rank {r}: {s}"))
                .collect();
            return Err(Error::data(
                channel,
                format!(
                    "the ranks read different rows of this FullyReplicated channel ({}); every rank needs the same files",
                    each.join(", ")
                ),
            ));
        }
        Ok(layout)
    }

    /// Rows of the whole channel, all ranks together.
    pub fn global_rows(&self) -> usize {
        self.global_rows
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Rows of each rank's shard, when the channel is sharded by key.
    pub fn shard_rows(&self) -> Option<Vec<usize>> {
        self.blocks
            .as_ref()
            .map(|s| s.windows(2).map(|w| w[1] - w[0]).collect())
    }

    /// Rows held by rank `r`.
    fn rows_of(&self, r: usize) -> usize {
        match &self.blocks {
            Some(s) => s[r + 1] - s[r],
            None => (self.global_rows + self.world - 1 - r) / self.world,
        }
    }

    /// Rows held by this rank.
    pub fn local_rows(&self) -> usize {
        self.rows_of(self.rank)
    }

    /// The global row of local row `j`.
    pub fn global(&self, j: usize) -> usize {
        match &self.blocks {
            Some(s) => s[self.rank] + j,
            None => j * self.world + self.rank,
        }
    }

    /// The local row of global row `g`, when this rank holds it.
    pub fn local(&self, g: usize) -> Option<usize> {
        match &self.blocks {
            Some(s) => (s[self.rank]..s[self.rank + 1])
                .contains(&g)
                .then(|| g - s[self.rank]),
            None => (g % self.world == self.rank).then_some(g / self.world),
        }
    }

    /// This rank's local rows of the global rows `ids`, in their order.
    pub fn locals(&self, ids: &[u32]) -> Vec<i64> {
        ids.iter()
            .filter_map(|&g| self.local(g as usize))
            .map(|j| j as i64)
            .collect()
    }

    /// Global batches of `batch` rows per epoch, checked to be the same on
    /// every rank (one all-reduce): ranks that would run different numbers
    /// of steps would fall out of step in the all-reduce that follows.
    pub fn steps_per_epoch(&self, comm: &mut Comm, batch: usize) -> Result<u64> {
        let steps = self.global_rows.div_ceil(batch.max(1)) as u64;
        if comm.world == 1 {
            return Ok(steps);
        }
        let mut mine = vec![0.0; comm.world];
        mine[comm.rank] = steps as f64;
        let all = comm.sum_f64(&mine)?;
        if all.iter().any(|&s| s != steps as f64) {
            let each: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(r, s)| format!("rank {r}: {s}"))
                .collect();
            return Err(Error::Distributed(format!(
                "the ranks disagree on the steps of an epoch ({}): every rank needs the same hyperparameters",
                each.join(", ")
            )));
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_and_blocks_cover_every_global_row_once() {
        for layouts in [
            (0..3)
                .map(|r| RowLayout::interleaved(10, r, 3))
                .collect::<Vec<_>>(),
            (0..3)
                .map(|r| RowLayout::blocks(&[5, 3, 2], r))
                .collect::<Vec<_>>(),
        ] {
            let mut owner = [None; 10];
            for l in &layouts {
                assert_eq!(l.global_rows(), 10);
                for j in 0..l.local_rows() {
                    let g = l.global(j);
                    assert_eq!(l.local(g), Some(j));
                    assert!(owner[g].is_none(), "row {g} held twice");
                    owner[g] = Some(l.rank());
                }
            }
            assert!(owner.iter().all(Option::is_some));
        }
        let l = RowLayout::blocks(&[5, 3, 2], 1);
        assert_eq!(l.locals(&[9, 5, 0, 7, 6]), vec![0, 2, 1]);
        assert_eq!(l.shard_rows(), Some(vec![5, 3, 2]));
        assert_eq!(RowLayout::interleaved(10, 1, 3).locals(&[4, 3, 1]), [1, 0]);
    }

    #[test]
    fn agree_sums_shards_and_checks_replicated_counts() {
        let out = crate::dist::tests::on_ranks(3, 29616, |comm| {
            let sharded = RowLayout::agree(comm, "train", [7, 0, 3][comm.rank], 99, true);
            let steps = sharded.as_ref().unwrap().steps_per_epoch(comm, 4).unwrap();
            let fine = RowLayout::agree(comm, "train", [4, 3, 3][comm.rank], 10, false);
            let bad = RowLayout::agree(comm, "train", 4, [10, 10, 11][comm.rank], false);
            (
                sharded.unwrap(),
                steps,
                fine.unwrap(),
                bad.unwrap_err().to_string(),
            )
        });
        for (rank, (sharded, steps, fine, bad)) in out.into_iter().enumerate() {
            assert_eq!(sharded, RowLayout::blocks(&[7, 0, 3], rank));
            assert_eq!(steps, 3);
            assert_eq!(fine, RowLayout::interleaved(10, rank, 3));
            assert!(bad.contains("rank 2: 11"), "{bad}");
        }
    }
}
