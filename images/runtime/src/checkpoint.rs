//! Checkpoints in `/opt/ml/checkpoints/` (synced by the operator with the
//! job's checkpoint URI): `ckpt-<step>.safetensors` with every tensor of the
//! training state, then `ckpt-<step>.json` with the position in the data. The
//! JSON is renamed into place last, so only complete checkpoints are seen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// Checkpoints kept; older ones are deleted.
const KEEP: usize = 2;

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

/// Writes checkpoints when due and finds the newest one.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    every_steps: u64,
    every: Option<Duration>,
    last: Instant,
}

impl Checkpoints {
    /// Checkpoints every `every_steps` steps (0: never by count) or
    /// `every_seconds` (0: never by time).
    pub fn new(dir: PathBuf, every_steps: u64, every_seconds: f64) -> Self {
        let every = (every_seconds > 0.0).then(|| Duration::from_secs_f64(every_seconds));
        Checkpoints {
            dir,
            every_steps,
            every,
            last: Instant::now(),
        }
    }

    /// Whether a checkpoint is due after `step`.
    pub fn due(&self, step: u64) -> bool {
        (self.every_steps > 0 && step.is_multiple_of(self.every_steps))
            || self.every.is_some_and(|d| self.last.elapsed() >= d)
    }

    /// Writes one checkpoint and prunes old ones.
    pub fn save(&mut self, pos: &Position, tensors: &[(String, Tensor)]) -> Result<()> {
        let err =
            |e: &dyn std::fmt::Display| Error::Checkpoint(format!("{}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(|e| err(&e))?;
        let stem = format!("ckpt-{:012}", pos.step);
        let cpu: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&cpu, self.dir.join(format!("{stem}.safetensors")))
            .map_err(|e| err(&e))?;
        let tmp = self.dir.join(format!("{stem}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(pos).expect("position serializes"))
            .map_err(|e| err(&e))?;
        std::fs::rename(&tmp, self.dir.join(format!("{stem}.json"))).map_err(|e| err(&e))?;
        self.last = Instant::now();
        for old in self.steps()?.into_iter().rev().skip(KEEP) {
            let stem = format!("ckpt-{old:012}");
            let _ = std::fs::remove_file(self.dir.join(format!("{stem}.json")));
            let _ = std::fs::remove_file(self.dir.join(format!("{stem}.safetensors")));
        }
        Ok(())
    }

    /// Steps of the complete checkpoints, oldest first.
    fn steps(&self) -> Result<Vec<u64>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(vec![]);
        };
        let mut steps: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_prefix("ckpt-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<(Position, BTreeMap<String, Tensor>)>> {
        let Some(step) = self.steps()?.pop() else {
            return Ok(None);
        };
        let stem = self.dir.join(format!("ckpt-{step:012}"));
        let err = |e: &dyn std::fmt::Display| Error::Checkpoint(format!("{}: {e}", stem.display()));
        let pos: Position = serde_json::from_slice(
            &std::fs::read(stem.with_extension("json")).map_err(|e| err(&e))?,
        )
        .map_err(|e| err(&e))?;
        let tensors = Tensor::read_safetensors(stem.with_extension("safetensors"))
            .map_err(|e| err(&e))?
            .into_iter()
            .collect();
        Ok(Some((pos, tensors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_prunes_and_finds_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut ck = Checkpoints::new(dir.path().to_path_buf(), 2, 0.0);
        assert!(ck.latest().unwrap().is_none());
        assert!(!ck.due(1) && ck.due(2));
        for step in 1..=4u64 {
            let pos = Position {
                step,
                epoch: step / 2,
                batch: step % 2,
                extra: serde_json::Value::Null,
            };
            ck.save(&pos, &[("w".into(), Tensor::from_slice(&[step as f32]))])
                .unwrap();
        }
        let (pos, tensors) = ck.latest().unwrap().unwrap();
        assert_eq!(pos.step, 4);
        assert_eq!(f32::try_from(&tensors["w"].view(-1).get(0)).unwrap(), 4.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2 * KEEP);
    }
}
