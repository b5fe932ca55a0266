//! The SageMaker training contract: where the configuration, the channels, the
//! model, the checkpoints and the failure reason live, and how the
//! configuration files are read. Everything hangs off one base directory
//! (`/opt/ml` in a pod) so tests can run a whole job in a temporary folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The directories of one training run.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The base directory, `/opt/ml` in a pod.
    pub root: PathBuf,
    /// Where the model artifact goes (`SM_MODEL_DIR` overrides `<root>/model`).
    pub model: PathBuf,
    /// Checkpoints, synced by the operator with the job's checkpoint URI.
    pub checkpoints: PathBuf,
    /// `failure`, `metrics.json` and other outputs (`<root>/output`).
    pub output: PathBuf,
}

impl Paths {
    /// Paths under `root`; `SM_MODEL_DIR` moves the model directory as SageMaker does.
    pub fn new(root: impl Into<PathBuf>, checkpoints: Option<PathBuf>) -> Self {
        let root = root.into();
        let model = std::env::var_os("SM_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("model"));
        Paths {
            model,
            checkpoints: checkpoints.unwrap_or_else(|| root.join("checkpoints")),
            output: root.join("output"),
            root,
        }
    }

    /// `<root>/input/config/<name>`.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.root.join("input/config").join(name)
    }

    /// The folder of a channel: `SM_CHANNEL_<NAME>` or `<root>/input/data/<name>`.
    pub fn channel(&self, name: &str) -> PathBuf {
        let var = format!(
            "SM_CHANNEL_{}",
            name.to_uppercase().replace(['-', '.'], "_")
        );
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("input/data").join(name))
    }

    /// Writes the failure reason where the operator reads it.
    pub fn write_failure(&self, reason: &str) -> std::io::Result<()> {
        fs::create_dir_all(&self.output)?;
        fs::write(self.output.join("failure"), format!("{reason}\n"))
    }
}

/// One entry of `inputdataconfig.json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChannelConfig {
    /// MIME type, e.g. `text/csv`, `text/csv;label_size=1`, `application/x-parquet`.
    #[serde(rename = "ContentType", default)]
    pub content_type: Option<String>,
    /// `FullyReplicated` (every rank sees every file) or `ShardedByS3Key`.
    #[serde(rename = "S3DistributionType", default)]
    pub distribution: Option<String>,
    /// Kiln's extension: a storage URI (`s3://`, `gs://`, `az://`) that the
    /// channel is read from directly, instead of its folder.
    #[serde(rename = "Uri", default)]
    pub uri: Option<String>,
}

impl ChannelConfig {
    /// Whether this rank's folder already holds only its shard.
    pub fn sharded_by_key(&self) -> bool {
        self.distribution.as_deref() == Some("ShardedByS3Key")
    }
}

/// `resourceconfig.json`: the hosts of the job, named `algo-1..algo-N`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResourceConfig {
    #[serde(default)]
    pub current_host: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// The parsed configuration files.
#[derive(Debug, Clone, Default)]
pub struct JobConfig {
    /// Hyperparameters as strings, as SageMaker passes them.
    pub hyperparameters: BTreeMap<String, String>,
    /// Channels by name; empty when `inputdataconfig.json` is absent.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Hosts of the job.
    pub resources: ResourceConfig,
}

impl JobConfig {
    /// Reads `input/config/*.json`. Missing files mean "nothing set"; a file
    /// that is present but malformed is an error.
    pub fn load(paths: &Paths) -> Result<Self> {
        let hyper_path = paths.config_file("hyperparameters.json");
        let mut hyperparameters = BTreeMap::new();
        if let Some(value) = read_json::<serde_json::Value>(&hyper_path)? {
            let serde_json::Value::Object(map) = value else {
                return Err(config_err(
                    &hyper_path,
                    "expected a JSON object of name: value",
                ));
            };
            for (name, value) in map {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(config_err(
                            &hyper_path,
                            &format!("hyperparameter {name}: expected a string, got {other}"),
                        ));
                    }
                };
                hyperparameters.insert(name, text);
            }
        }
        let channels = read_json(&paths.config_file("inputdataconfig.json"))?.unwrap_or_default();
        let resources = read_json(&paths.config_file("resourceconfig.json"))?.unwrap_or_default();
        Ok(JobConfig {
            hyperparameters,
            channels,
            resources,
        })
    }
}

fn config_err(path: &Path, reason: &str) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| config_err(path, &e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_config_files_and_stringifies_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), None);
        fs::create_dir_all(dir.path().join("input/config")).unwrap();
        fs::write(
            paths.config_file("hyperparameters.json"),
            r#"{"k": 3, "init": "random"}"#,
        )
        .unwrap();
        fs::write(
            paths.config_file("inputdataconfig.json"),
            r#"{"train": {"ContentType": "text/csv", "S3DistributionType": "ShardedByS3Key"}}"#,
        )
        .unwrap();
        let config = JobConfig::load(&paths).unwrap();
        assert_eq!(config.hyperparameters["k"], "3");
        assert_eq!(config.hyperparameters["init"], "random");
        assert!(config.channels["train"].sharded_by_key());
    }

    #[test]
    fn malformed_config_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), None);
        fs::create_dir_all(dir.path().join("input/config")).unwrap();
        fs::write(paths.config_file("hyperparameters.json"), "[1,2]").unwrap();
        let err = JobConfig::load(&paths).unwrap_err().to_string();
        assert!(err.contains("hyperparameters.json"), "{err}");
        assert_eq!(JobConfig::load(&paths).unwrap_err().exit_code(), 2);
    }
}
