//! Metrics, emitted the moment they are computed.
//!
//! Each value is one JSON line on stdout, which the operator reads from the
//! pod's log (format in images/runtime/METRICS.md):
//!
//! `{"kiln_metric":"validation:accuracy","value":0.96,"step":120,"epoch":3,"rank":0,"timestamp":1764230000.5}`
//!
//! The latest value of every metric is also kept in `output/metrics.json`,
//! rewritten (atomically) at each flush.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One emitted value.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub value: f64,
    pub step: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub timestamp: f64,
}

/// Emits metrics of one rank; only rank 0 prints and writes the file, so a
/// value appears once per job.
#[derive(Debug)]
pub struct Metrics {
    file: Option<PathBuf>,
    rank: usize,
    latest: BTreeMap<String, Point>,
}

impl Metrics {
    /// `file` is `output/metrics.json`; `None` keeps values in memory only.
    pub fn new(file: Option<PathBuf>, rank: usize) -> Self {
        Metrics {
            file,
            rank,
            latest: BTreeMap::new(),
        }
    }

    /// Emits `name` (e.g. `train:loss`) now.
    pub fn emit(&mut self, name: &str, value: f64, step: u64, epoch: Option<u64>) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let point = Point {
            value,
            step,
            epoch,
            timestamp,
        };
        if self.rank == 0 {
            let line = serde_json::json!({
                "kiln_metric": name,
                "value": if value.is_finite() { serde_json::json!(value) } else { serde_json::json!(value.to_string()) },
                "step": step,
                "epoch": epoch,
                "rank": self.rank,
                "timestamp": timestamp,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.latest.insert(name.to_string(), point);
    }

    /// The latest value of a metric.
    pub fn latest(&self, name: &str) -> Option<f64> {
        self.latest.get(name).map(|p| p.value)
    }

    /// Every latest value, for the model's metadata.
    pub fn summary(&self) -> BTreeMap<String, f64> {
        self.latest
            .iter()
            .map(|(k, p)| (k.clone(), p.value))
            .collect()
    }

    /// Rewrites `metrics.json` with the latest values.
    pub fn flush(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.rank != 0 {
            return Ok(());
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let finite: BTreeMap<_, _> = self
            .latest
            .iter()
            .filter(|(_, p)| p.value.is_finite())
            .collect();
        let tmp = file.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&serde_json::json!({ "metrics": finite }))?,
        )?;
        std::fs::rename(tmp, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_latest_and_writes_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("output/metrics.json");
        let mut m = Metrics::new(Some(file.clone()), 0);
        m.emit("train:loss", 2.0, 1, Some(0));
        m.emit("train:loss", 1.0, 2, Some(0));
        m.flush().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(json["metrics"]["train:loss"]["value"], 1.0);
        assert_eq!(json["metrics"]["train:loss"]["step"], 2);
        assert_eq!(m.latest("train:loss"), Some(1.0));
    }
}
