//! The model artifact the server loads: `model/model.safetensors` (the
//! weights) and `model/model.json` (what they mean). Format in
//! images/runtime/ARTIFACT.md.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// The version of the layout below; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Shape and type of one stored tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorInfo {
    pub shape: Vec<i64>,
    pub dtype: String,
}

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Always `kiln-model`.
    pub format: String,
    pub format_version: u32,
    /// The built-in algorithm, e.g. `linear-learner`.
    pub algorithm: String,
    /// `regressor`, `binary_classifier`, `multiclass_classifier`, `clustering`,
    /// `dimensionality_reduction`.
    pub task: String,
    /// Input columns per record (after the label is removed).
    pub feature_dim: usize,
    /// Classes of a classifier; labels are `0..num_classes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Class names by label, when the classes came from image folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// Every hyperparameter, defaults included.
    pub hyperparameters: BTreeMap<String, String>,
    /// Algorithm-specific description of how to use the tensors.
    pub model: serde_json::Value,
    /// The tensors of `model.safetensors`.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Latest value of every metric of the run.
    pub metrics: BTreeMap<String, f64>,
}

/// Writes `model.safetensors` then `model.json` (last, so a present
/// `model.json` means a complete artifact). Tensors are stored on the CPU.
pub fn write(dir: &Path, mut meta: ModelMeta, tensors: &[(&str, &Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                t.detach().to_device(Device::Cpu).contiguous(),
            )
        })
        .collect();
    meta.format = "kiln-model".into();
    meta.format_version = FORMAT_VERSION;
    meta.tensors = cpu
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                TensorInfo {
                    shape: t.size(),
                    dtype: format!("{:?}", t.kind()),
                },
            )
        })
        .collect();
    Tensor::write_safetensors(&cpu, dir.join("model.safetensors"))?;
    let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
    std::fs::write(dir.join("model.json"), json).map_err(Error::io(dir.join("model.json")))
}

/// Reads an artifact back: the metadata and the tensors by name.
pub fn read(dir: &Path) -> Result<(ModelMeta, BTreeMap<String, Tensor>)> {
    let path = dir.join("model.json");
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    let meta: ModelMeta = serde_json::from_slice(&bytes).map_err(|e| Error::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tensors = Tensor::read_safetensors(dir.join("model.safetensors"))?
        .into_iter()
        .collect();
    Ok((meta, tensors))
}

impl ModelMeta {
    /// Metadata to be completed by [`write`].
    pub fn new(algorithm: &str, task: &str, feature_dim: usize) -> Self {
        ModelMeta {
            format: String::new(),
            format_version: FORMAT_VERSION,
            algorithm: algorithm.into(),
            task: task.into(),
            feature_dim,
            num_classes: None,
            class_names: None,
            hyperparameters: BTreeMap::new(),
            model: serde_json::Value::Null,
            tensors: BTreeMap::new(),
            metrics: BTreeMap::new(),
        }
    }
}
