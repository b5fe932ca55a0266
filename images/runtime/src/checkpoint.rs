//! Checkpoints in `/opt/ml/checkpoints/` (synced by the operator with the
//! job's checkpoint URI). Every rank writes its own, named by rank and step:
//! `ckpt-r<rank>-<step>.safetensors` with every tensor of its training
//! state, then `ckpt-r<rank>-<step>.json` with the position in the data and
//! what the state means ([`RunInfo`]: the algorithm, its hyperparameters,
//! the number of ranks and the train channel's rows). Each file is written
//! under a `.tmp` name, fsynced and renamed into place, the JSON last, and
//! the folder is fsynced after each rename: a JSON that is there means a
//! complete checkpoint, even after the machine lost power.
//!
//! When to checkpoint is rank 0's decision (its step count and its clock),
//! carried to every rank by the all-reduce that every step already makes
//! for the stop flag ([`crate::run::Context::step_flags`]), so all ranks
//! checkpoint the same steps. A run resumes at the newest step that every
//! rank has a checkpoint of ([`Checkpoints::resume`]): a rank killed while
//! the others were writing step `s` makes them all resume at the step
//! before. A checkpoint written by a run with other settings is refused
//! with an error naming each difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::dist::Comm;
use crate::error::{Error, Result};

/// Checkpoints each rank keeps; its older ones are deleted.
const KEEP: usize = 2;

/// Hyperparameters that never change what a checkpoint's state means.
const FREE: &[&str] = &["checkpoint_every_steps", "checkpoint_every_seconds"];

/// Where training stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Position {
    /// Optimizer steps (or iterations) done.
    pub step: u64,
    /// The epoch in progress.
    pub epoch: u64,
    /// Batches of that epoch already done.
    pub batch: u64,
    /// Anything else the algorithm needs (e.g. a learning-rate schedule).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// What a checkpoint's state means: a run resumes only from checkpoints
/// written with the same.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub algorithm: String,
    /// Every hyperparameter's value (given or default).
    pub hyperparameters: BTreeMap<String, String>,
    /// Ranks of the run.
    pub world: usize,
    /// Rows of the train channel, all ranks together.
    pub rows: u64,
    /// With `ShardedByS3Key`, the rows of each rank's shard: the global
    /// rows are the shards in rank order, so a position in an epoch means
    /// other rows with other shards (or another number of ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<u64>>,
    /// Whether each rank holds its own part of the state (pipeline stages
    /// on ranks); else every rank holds the same state, and a rank may
    /// resume from another rank's checkpoint of the step (the operator
    /// uploads rank 0's and restores them on every rank).
    #[serde(default)]
    pub per_rank: bool,
}

/// The JSON of one checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    position: Position,
    rank: usize,
    run: RunInfo,
}

/// The file name stem of rank `rank`'s checkpoint of `step`.
pub fn stem(rank: usize, step: u64) -> String {
    format!("ckpt-r{rank}-{step:012}")
}

/// The rank and step of a checkpoint JSON's file name.
fn parse_json_name(name: &str) -> Option<(usize, u64)> {
    let (rank, step) = name
        .strip_prefix("ckpt-r")?
        .strip_suffix(".json")?
        .split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(rank) || !digits(step) {
        return None;
    }
    Some((rank.parse().ok()?, step.parse().ok()?))
}

/// Whether `name` is the JSON of a checkpoint of an older kiln-runtime,
/// named by step only (`ckpt-<step>.json`).
fn is_legacy_json(name: &str) -> bool {
    name.strip_prefix("ckpt-")
        .and_then(|r| r.strip_suffix(".json"))
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Two hyperparameter values that say the same (`0.01` and `1e-2`,
/// `True` and `true`).
fn same_value(a: &str, b: &str) -> bool {
    a == b
        || a.eq_ignore_ascii_case(b)
        || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Each difference between a checkpoint's run (`was`) and this one (`now`)
/// that changes what the state means, as `what: was (this run: now)`.
/// Hyperparameters named in `free` (and [`FREE`]) may differ.
pub fn differences(was: &RunInfo, now: &RunInfo, free: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: String, a: String, b: String| {
        out.push(format!("{what} {a} (this run: {b})"));
    };
    if was.algorithm != now.algorithm {
        differ(
            "algorithm".into(),
            was.algorithm.clone(),
            now.algorithm.clone(),
        );
    }
    let names: std::collections::BTreeSet<&String> = was
        .hyperparameters
        .keys()
        .chain(now.hyperparameters.keys())
        .collect();
    for name in names {
        if FREE.contains(&name.as_str()) || free.contains(&name.as_str()) {
            continue;
        }
        let (a, b) = (was.hyperparameters.get(name), now.hyperparameters.get(name));
        if !matches!((a, b), (Some(a), Some(b)) if same_value(a, b)) {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
            differ(name.clone(), show(a), show(b));
        }
    }
    let layout_matters =
        was.per_rank || now.per_rank || was.shards.is_some() || now.shards.is_some();
    if layout_matters && was.world != now.world {
        differ(
            "WORLD_SIZE".into(),
            was.world.to_string(),
            now.world.to_string(),
        );
    }
    match (&was.shards, &now.shards) {
        (Some(a), Some(b)) if a != b && was.world == now.world => {
            differ("rows of each rank's train shard".into(), list(a), list(b))
        }
        (Some(_), None) | (None, Some(_)) => {
            let kind = |s: &Option<Vec<u64>>| {
                if s.is_some() {
                    "ShardedByS3Key".to_string()
                } else {
                    "FullyReplicated".to_string()
                }
            };
            differ(
                "S3DistributionType of train".into(),
                kind(&was.shards),
                kind(&now.shards),
            );
        }
        _ if was.shards.is_none() && was.rows != now.rows => differ(
            "rows of the train channel".into(),
            was.rows.to_string(),
            now.rows.to_string(),
        ),
        _ => {}
    }
    out
}

/// Writes a file through `write` under a temporary name (`<name>.tmp`,
/// which the sync sidecar skips), fsyncs it, renames it to `path` and fsyncs
/// the folder.
fn write_durably(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    write(&tmp)?;
    let err = |e: std::io::Error| Error::Checkpoint(format!("{}: {e}", tmp.display()));
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    sync_dir(path.parent().expect("a folder"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", dir.display())))
}

/// Writes checkpoints when due and resumes from them.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    every_steps: u64,
    every: Option<Duration>,
    last: Instant,
    rank: usize,
    /// What this run's checkpoints mean; set by [`Checkpoints::resume`].
    run: RunInfo,
}

impl Checkpoints {
    /// Checkpoints every `every_steps` steps (0: never by count) or
    /// `every_seconds` (0: never by time), as rank 0 until
    /// [`Checkpoints::resume`] says otherwise.
    pub fn new(dir: PathBuf, every_steps: u64, every_seconds: f64) -> Self {
        let every = (every_seconds > 0.0).then(|| Duration::from_secs_f64(every_seconds));
        Checkpoints {
            dir,
            every_steps,
            every,
            last: Instant::now(),
            rank: 0,
            run: RunInfo::default(),
        }
    }

    /// Whether a checkpoint is due after `step` by this rank's count and
    /// clock (only rank 0's answer counts: see
    /// [`crate::run::Context::step_flags`]).
    pub fn due(&self, step: u64) -> bool {
        (self.every_steps > 0 && step.is_multiple_of(self.every_steps))
            || self.every.is_some_and(|d| self.last.elapsed() >= d)
    }

    fn path(&self, rank: usize, step: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", stem(rank, step)))
    }

    /// Writes this rank's checkpoint of `pos` (durably, see the module
    /// documentation) and deletes its checkpoints older than the newest
    /// [`KEEP`].
    pub fn save(&mut self, pos: &Position, tensors: &[(String, Tensor)]) -> Result<()> {
        let err =
            |e: &dyn std::fmt::Display| Error::Checkpoint(format!("{}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(|e| err(&e))?;
        let cpu: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu)))
            .collect();
        write_durably(&self.path(self.rank, pos.step, "safetensors"), |tmp| {
            Tensor::write_safetensors(&cpu, tmp).map_err(|e| err(&e))
        })?;
        let record = Record {
            position: pos.clone(),
            rank: self.rank,
            run: self.run.clone(),
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        write_durably(&self.path(self.rank, pos.step, "json"), |tmp| {
            std::fs::write(tmp, &json).map_err(|e| err(&e))
        })?;
        self.last = Instant::now();
        let mine: Vec<u64> = self.mine();
        for &old in mine.iter().rev().skip(KEEP) {
            self.remove(old);
        }
        Ok(())
    }

    fn remove(&self, step: u64) {
        let _ = std::fs::remove_file(self.path(self.rank, step, "json"));
        let _ = std::fs::remove_file(self.path(self.rank, step, "safetensors"));
    }

    /// Complete checkpoints in the folder as (rank, step), and the number of
    /// older kiln-runtime checkpoints (named without a rank).
    fn scan(&self) -> (Vec<(usize, u64)>, usize) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (vec![], 0);
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        let legacy = names.iter().filter(|n| is_legacy_json(n)).count();
        let mut found: Vec<(usize, u64)> =
            names.iter().filter_map(|n| parse_json_name(n)).collect();
        found.sort_unstable();
        (found, legacy)
    }

    /// This rank's own checkpoint steps, oldest first.
    fn mine(&self) -> Vec<u64> {
        let mut steps: Vec<u64> = self
            .scan()
            .0
            .into_iter()
            .filter(|(r, _)| *r == self.rank)
            .map(|(_, s)| s)
            .collect();
        steps.sort_unstable();
        steps
    }

    fn read_record(&self, rank: usize, step: u64) -> Result<Record> {
        let path = self.path(rank, step, "json");
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
    }

    /// The steps this rank can resume from, newest first, each with the
    /// rank whose file it would read (its own; with a state every rank
    /// shares, another rank's when it has none of its own), every one
    /// checked to mean what this run's state means.
    fn candidates(&self, free: &[&str]) -> Result<Vec<(u64, usize)>> {
        let mut from: BTreeMap<u64, usize> = BTreeMap::new();
        for (rank, step) in self.scan().0 {
            if rank != self.rank && self.run.per_rank {
                continue;
            }
            let pick = from.entry(step).or_insert(rank);
            if rank == self.rank || (*pick != self.rank && rank < *pick) {
                *pick = rank;
            }
        }
        let mut out = Vec::new();
        for (&step, &rank) in from.iter().rev() {
            let record = self.read_record(rank, step)?;
            let diffs = differences(&record.run, &self.run, free);
            if !diffs.is_empty() {
                return Err(Error::Config {
                    path: self.path(rank, step, "json"),
                    reason: format!(
                        "this checkpoint was written by a run with other settings: {}; resume with the settings it was written with, or remove the checkpoints to start over",
                        diffs.join(", ")
                    ),
                });
            }
            if record.position.step != step {
                return Err(Error::Checkpoint(format!(
                    "{}: holds step {}",
                    self.path(rank, step, "json").display(),
                    record.position.step
                )));
            }
            out.push((step, rank));
        }
        Ok(out)
    }

    /// Agrees with the other ranks on the step to resume from (the newest
    /// step every rank has a checkpoint of) and loads this rank's state of
    /// it; `None` when there is no such step. `run` says what this run's
    /// state means (it goes into every checkpoint written from now on);
    /// hyperparameters named in `free` may differ from the checkpoint's.
    /// This rank's checkpoints newer than the agreed step (which not every
    /// rank has) are deleted. A collective: every rank calls it at the same
    /// point, and every rank fails when one refuses its checkpoints.
    pub fn resume(
        &mut self,
        comm: &mut Comm,
        run: RunInfo,
        free: &[&str],
    ) -> Result<Option<(Position, BTreeMap<String, Tensor>)>> {
        self.rank = comm.rank;
        self.run = run;
        let (_, legacy) = self.scan();
        if legacy > 0 {
            eprintln!(
                "kiln-runtime: ignoring {legacy} checkpoints in {} named without a rank (written by an older kiln-runtime)",
                self.dir.display()
            );
        }
        // Files this rank was writing when it stopped.
        let unfinished = format!("ckpt-r{}-", self.rank);
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(&unfinished) && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let local = self.candidates(free);
        let offer: Vec<f64> = match &local {
            Ok(c) => std::iter::once(0.0)
                .chain(c.iter().map(|(s, _)| *s as f64))
                .collect(),
            Err(_) => vec![1.0],
        };
        let offers = comm.gather_f64(&offer)?;
        let candidates = local?;
        let refused: Vec<String> = (0..offers.len())
            .filter(|&r| offers[r][0] != 0.0)
            .map(|r| r.to_string())
            .collect();
        if !refused.is_empty() {
            return Err(Error::Checkpoint(format!(
                "rank {} refused its checkpoints (its output/failure says why)",
                refused.join(", ")
            )));
        }
        let everyone = |step: u64| offers.iter().all(|o| o[1..].contains(&(step as f64)));
        let agreed = candidates.iter().find(|(s, _)| everyone(*s)).copied();
        let newer: Vec<u64> = self
            .mine()
            .into_iter()
            .filter(|&s| agreed.is_none_or(|(a, _)| s > a))
            .collect();
        for &s in &newer {
            self.remove(s);
        }
        let Some((step, from)) = agreed else {
            if offers.iter().any(|o| o.len() > 1) {
                let each: Vec<String> = offers
                    .iter()
                    .enumerate()
                    .map(|(r, o)| {
                        let steps: Vec<u64> = o[1..].iter().map(|&s| s as u64).collect();
                        format!("rank {r}: [{}]", list(&steps))
                    })
                    .collect();
                eprintln!(
                    "kiln-runtime: no checkpoint step that every rank has ({}): starting from the beginning",
                    each.join(", ")
                );
            }
            return Ok(None);
        };
        if !newer.is_empty() {
            eprintln!(
                "kiln-runtime: removed this rank's checkpoints of steps {} (not every rank has them)",
                list(&newer)
            );
        }
        let loaded = self.read_record(from, step).and_then(|record| {
            let path = self.path(from, step, "safetensors");
            let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?
                .into_iter()
                .collect();
            Ok((record.position, tensors))
        });
        let failed = comm.sum_f64(&[f64::from(u8::from(loaded.is_err()))])?[0];
        let loaded = loaded?;
        if failed > 0.0 {
            return Err(Error::Checkpoint(format!(
                "another rank could not read its checkpoint of step {step} (its output/failure says why)"
            )));
        }
        Ok(Some(loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(world: usize) -> RunInfo {
        RunInfo {
            algorithm: "mlp".into(),
            hyperparameters: [("learning_rate", "0.01"), ("epochs", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            world,
            rows: 100,
            shards: None,
            per_rank: false,
        }
    }

    fn save(ck: &mut Checkpoints, step: u64) {
        let pos = Position {
            step,
            epoch: step / 2,
            batch: step % 2,
            extra: serde_json::Value::Null,
        };
        ck.save(&pos, &[("w".into(), Tensor::from_slice(&[step as f32]))])
            .unwrap();
    }

    fn value(tensors: &BTreeMap<String, Tensor>) -> f32 {
        f32::try_from(&tensors["w"].view(-1).get(0)).unwrap()
    }

    #[test]
    fn saves_prunes_and_resumes_from_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut ck = Checkpoints::new(dir.path().to_path_buf(), 2, 0.0);
        let mut comm = Comm::single();
        assert!(ck.resume(&mut comm, run(1), &[]).unwrap().is_none());
        assert!(!ck.due(1) && ck.due(2));
        for step in 1..=4u64 {
            save(&mut ck, step);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ckpt-r0-000000000003.json",
                "ckpt-r0-000000000003.safetensors",
                "ckpt-r0-000000000004.json",
                "ckpt-r0-000000000004.safetensors",
            ]
        );
        let mut again = Checkpoints::new(dir.path().to_path_buf(), 2, 0.0);
        let (pos, tensors) = again.resume(&mut comm, run(1), &[]).unwrap().unwrap();
        assert_eq!((pos.step, pos.epoch, pos.batch), (4, 2, 0));
        assert_eq!(value(&tensors), 4.0);
        // Numbers written otherwise, and free names, are the same settings.
        let mut same = run(1);
        same.hyperparameters
            .insert("learning_rate".into(), "1e-2".into());
        same.hyperparameters
            .insert("checkpoint_every_steps".into(), "7".into());
        assert!(again.resume(&mut comm, same, &[]).unwrap().is_some());
    }

    #[test]
    fn other_settings_are_refused_naming_each_difference() {
        let dir = tempfile::tempdir().unwrap();
        let mut ck = Checkpoints::new(dir.path().to_path_buf(), 1, 0.0);
        let mut comm = Comm::single();
        ck.resume(&mut comm, run(1), &[]).unwrap();
        save(&mut ck, 5);
        let mut other = run(1);
        other
            .hyperparameters
            .insert("learning_rate".into(), "0.1".into());
        other.hyperparameters.insert("epochs".into(), "4".into());
        let err = ck.resume(&mut comm, other, &[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("ckpt-r0-000000000005.json"), "{msg}");
        assert!(msg.contains("epochs 3 (this run: 4)"), "{msg}");
        assert!(msg.contains("learning_rate 0.01 (this run: 0.1)"), "{msg}");
        // epochs may differ where the algorithm says so.
        let mut longer = run(1);
        longer.hyperparameters.insert("epochs".into(), "4".into());
        assert!(ck.resume(&mut comm, longer, &["epochs"]).unwrap().is_some());

        // The number of ranks matters with shards or per-rank state only.
        let sharded = |world: usize, shards: Vec<u64>| RunInfo {
            world,
            shards: Some(shards),
            ..run(world)
        };
        assert!(differences(&run(2), &run(3), &[]).is_empty());
        assert_eq!(
            differences(
                &sharded(2, vec![70, 30]),
                &sharded(3, vec![50, 30, 20]),
                &[]
            ),
            ["WORLD_SIZE 2 (this run: 3)"]
        );
        assert_eq!(
            differences(&sharded(2, vec![70, 30]), &sharded(2, vec![60, 40]), &[]),
            ["rows of each rank's train shard 70, 30 (this run: 60, 40)"]
        );
        assert_eq!(
            differences(&run(2), &sharded(2, vec![60, 40]), &[]),
            ["S3DistributionType of train FullyReplicated (this run: ShardedByS3Key)"]
        );
        let stages = |world| RunInfo {
            per_rank: true,
            ..run(world)
        };
        assert_eq!(
            differences(&stages(2), &stages(3), &[]),
            ["WORLD_SIZE 2 (this run: 3)"]
        );
        let fewer = RunInfo { rows: 90, ..run(2) };
        assert_eq!(
            differences(&run(2), &fewer, &[]),
            ["rows of the train channel 100 (this run: 90)"]
        );
    }

    #[test]
    fn ranks_resume_at_the_newest_step_they_all_have() {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        // Rank 0 wrote steps 2, 4, 6; rank 1 was killed while writing 6;
        // rank 2 lost its folder but holds a copy of rank 0's (the operator
        // restores rank 0's uploads on every rank).
        for (rank, steps) in [(0, &[2u64, 4, 6][..]), (1, &[2, 4])] {
            let mut ck = Checkpoints::new(dirs[rank].path().to_path_buf(), 1, 0.0);
            ck.rank = rank;
            ck.run = run(3);
            for &s in steps {
                save(&mut ck, s);
            }
        }
        std::fs::write(
            dirs[1].path().join("ckpt-r1-000000000006.safetensors.tmp"),
            b"half",
        )
        .unwrap();
        for entry in std::fs::read_dir(dirs[0].path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dirs[2].path().join(entry.file_name())).unwrap();
        }
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        let out = crate::dist::tests::on_ranks(3, 29617, |comm| {
            let mut ck = Checkpoints::new(paths[comm.rank].clone(), 1, 0.0);
            let (pos, tensors) = ck.resume(comm, run(3), &[]).unwrap().unwrap();
            (pos.step, value(&tensors), ck.mine())
        });
        assert_eq!(out[0], (4, 4.0, vec![4]), "rank 0 drops its step 6");
        assert_eq!(out[1], (4, 4.0, vec![2, 4]));
        assert_eq!(out[2], (4, 4.0, vec![]), "rank 2 reads rank 0's");
        assert!(dirs[2].path().join("ckpt-r0-000000000006.json").exists());
        assert!(
            !dirs[1]
                .path()
                .join("ckpt-r1-000000000006.safetensors.tmp")
                .exists()
        );

        // Stages on ranks: each rank holds its own stage, so rank 2 cannot
        // use rank 0's; with no step every rank has, all start over (and
        // drop their own checkpoints, which could never be matched).
        let stages = RunInfo {
            per_rank: true,
            ..run(3)
        };
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        for (rank, dir) in dirs.iter().enumerate().take(2) {
            let mut ck = Checkpoints::new(dir.path().to_path_buf(), 1, 0.0);
            (ck.rank, ck.run) = (rank, stages.clone());
            save(&mut ck, 2);
            save(&mut ck, 4);
        }
        for entry in std::fs::read_dir(dirs[0].path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dirs[2].path().join(entry.file_name())).unwrap();
        }
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        let out = crate::dist::tests::on_ranks(3, 29618, |comm| {
            let mut ck = Checkpoints::new(paths[comm.rank].clone(), 1, 0.0);
            let resumed = ck.resume(comm, stages.clone(), &[]).unwrap();
            (resumed.is_none(), ck.mine())
        });
        assert_eq!(out, [(true, vec![]), (true, vec![]), (true, vec![])]);
    }
}
