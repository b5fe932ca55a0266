//! A loaded model: the artifact that `kiln-runtime train` wrote
//! (ARTIFACT.md), ready to predict. It lives on its worker thread only
//! (tensors are not `Sync`); what leaves it is a [`ModelInfo`] and plain
//! [`Predictions`].
//!
//! linear-learner, kmeans and pca predict in plain Rust on the f32 weights:
//! for the few rows of a request that is several times faster than a round
//! trip through libtorch's dispatcher (see SERVE.md). knn, mlp,
//! image-classifier and text-classifier run the training code's own
//! libtorch forward pass on the chosen device.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::codec::Expect;
use super::predictions::{Input, Predictions, Shape};
use crate::algo::knn;
use crate::algo::net::{Layer, Net};
use crate::algo::text::{Tokenizer, bag_logits};
use crate::artifact::{self, FORMAT_VERSION, ModelMeta};
use crate::eval::Task;

/// What the HTTP side knows of a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub algorithm: String,
    pub task: String,
    pub expect: Expect,
    pub shape: Shape,
    /// Values per row of the predictions.
    pub width: usize,
    /// Bytes of the model's tensors (what the memory bound counts).
    pub bytes: u64,
}

/// A model ready to predict.
pub struct Model {
    pub info: ModelInfo,
    predictor: Predictor,
}

/// The models that are plain f32 data (linear-learner, kmeans, pca).
#[derive(Clone)]
enum Plain {
    Linear {
        d: usize,
        o: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    Kmeans {
        d: usize,
        centers: Vec<f32>,
    },
    Pca {
        d: usize,
        components: Vec<f32>,
        mean: Vec<f32>,
    },
}

enum Predictor {
    Plain(Plain),
    Knn {
        /// The training rows less their mean (taken when the model loads):
        /// see [`knn::Neighbours`].
        rows: knn::Neighbours,
        k: i64,
        task: Task,
    },
    Net {
        net: Net,
        input_mean: Tensor,
        input_std: Tensor,
        label_mean: f64,
        label_std: f64,
    },
    Text {
        tokenizer: Tokenizer,
        embedding: Tensor,
        weight: Tensor,
        bias: Tensor,
    },
}

/// Bytes the tensors of an artifact take, from its `model.json` alone (so
/// the memory bound is checked before anything is loaded).
pub fn artifact_bytes(meta: &ModelMeta) -> u64 {
    meta.tensors
        .values()
        .map(|t| {
            let elems: i64 = t.shape.iter().product();
            let size = match t.dtype.as_str() {
                "Int64" | "Double" => 8,
                "Half" | "BFloat16" | "Int16" => 2,
                "Int8" | "Uint8" | "Bool" => 1,
                _ => 4,
            };
            elems.max(0) as u64 * size
        })
        .sum()
}

/// Reads and checks `model.json` of the artifact in `dir`.
pub fn read_meta(dir: &Path) -> Result<ModelMeta, String> {
    let path = dir.join("model.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta: ModelMeta = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a Kiln model: {e}", path.display()))?;
    if meta.format != "kiln-model" || meta.format_version != FORMAT_VERSION {
        return Err(format!(
            "{}: format {:?} version {} is not kiln-model version {FORMAT_VERSION}",
            path.display(),
            meta.format,
            meta.format_version
        ));
    }
    Ok(meta)
}

fn floats(t: &Tensor) -> Result<Vec<f32>, String> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]))
        .map_err(|e| e.to_string())
}

fn take(
    tensors: &mut BTreeMap<String, Tensor>,
    name: &str,
    shape: &[i64],
) -> Result<Tensor, String> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| format!("the artifact has no tensor {name:?}"))?;
    let ok =
        t.size().len() == shape.len() && t.size().iter().zip(shape).all(|(a, b)| *b < 0 || a == b);
    if !ok {
        return Err(format!(
            "tensor {name:?} has shape {:?}, expected {shape:?} (-1: any)",
            t.size()
        ));
    }
    Ok(t)
}

impl Model {
    /// Loads the artifact in `dir` onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Model, String> {
        let meta = read_meta(dir)?;
        let (_, mut tensors) = artifact::read(dir).map_err(|e| e.to_string())?;
        let d = meta.feature_dim as i64;
        let classes = meta.num_classes.unwrap_or(0);
        let task = match meta.task.as_str() {
            "regressor" | "binary_classifier" | "multiclass_classifier" => {
                Some(Task::parse(&meta.task, classes as i64).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let supervised = |task: Option<Task>| match task {
            Some(Task::Regressor) => (Shape::Regressor, 1),
            Some(Task::Binary) => (Shape::Binary, 1),
            Some(Task::Multiclass(c)) => (Shape::Multiclass, c),
            None => (Shape::Regressor, 1),
        };
        let mut expect = Expect::Features(meta.feature_dim);
        let (predictor, shape, width) = match meta.algorithm.as_str() {
            "linear-learner" => {
                let t = task.ok_or("linear-learner with an unknown task")?;
                let o = t.outputs();
                let weight = floats(&take(&mut tensors, "weight", &[d, o])?)?;
                let bias = floats(&take(&mut tensors, "bias", &[o])?)?;
                let (shape, width) = supervised(task);
                let (d, o) = (d as usize, o as usize);
                (
                    Predictor::Plain(Plain::Linear { d, o, weight, bias }),
                    shape,
                    width,
                )
            }
            "kmeans" => {
                let centers = floats(&take(&mut tensors, "centers", &[-1, d])?)?;
                if centers.is_empty() {
                    return Err("kmeans without centers".into());
                }
                let d = d as usize;
                (
                    Predictor::Plain(Plain::Kmeans { d, centers }),
                    Shape::Clustering,
                    1,
                )
            }
            "pca" => {
                let components = take(&mut tensors, "components", &[-1, d])?;
                let c = components.size()[0] as usize;
                let components = floats(&components)?;
                let mean = floats(&take(&mut tensors, "mean", &[d])?)?;
                let d = d as usize;
                let p = Predictor::Plain(Plain::Pca {
                    d,
                    components,
                    mean,
                });
                (p, Shape::Projection, c)
            }
            "knn" => {
                let t = task.ok_or("knn with an unknown task")?;
                let points = take(&mut tensors, "points", &[-1, d])?;
                let labels = take(&mut tensors, "labels", &[points.size()[0]])?;
                let k = meta.model["k"].as_i64().ok_or("knn without model.k")?;
                let (shape, width) = match t {
                    Task::Regressor => (Shape::Regressor, 1),
                    _ => (Shape::Label, 0),
                };
                let p = Predictor::Knn {
                    rows: knn::Neighbours::new(
                        &points.to_kind(Kind::Float).to_device(device),
                        &labels.to_device(device),
                    ),
                    k,
                    task: t,
                };
                (p, shape, width)
            }
            "mlp" | "image-classifier" => {
                let layers: Vec<Layer> = Vec::deserialize(&meta.model["layers"])
                    .map_err(|e| format!("model.layers: {e}"))?;
                let net = Net::new(layers, 1, &[device]);
                let _guard = tch::no_grad_guard();
                for (name, dst) in net
                    .params()
                    .iter()
                    .map(|p| (&p.name, &p.tensor))
                    .chain(net.buffers().iter().map(|(n, t)| (n, t)))
                {
                    let src = take(&mut tensors, name, &dst.size())?;
                    dst.shallow_clone()
                        .f_copy_(&src)
                        .map_err(|e| format!("tensor {name}: {e}"))?;
                }
                let input_mean = take(&mut tensors, "input_mean", &[d])?.to_device(device);
                let input_std = take(&mut tensors, "input_std", &[d])?.to_device(device);
                let number = |key: &str| meta.model[key].as_f64().unwrap_or(0.0);
                let (label_mean, label_std) = (number("label_mean"), number("label_std"));
                let (shape, width) = supervised(task);
                let p = Predictor::Net {
                    net,
                    input_mean,
                    input_std,
                    label_mean,
                    label_std,
                };
                (p, shape, width)
            }
            "text-classifier" => {
                let tok = &meta.model["tokenizer"];
                let field = |key: &str| {
                    tok[key]
                        .as_u64()
                        .filter(|&v| v > 0)
                        .ok_or_else(|| format!("model.tokenizer.{key} is missing"))
                };
                let tokenizer = Tokenizer {
                    buckets: field("buckets")?,
                    ngrams: field("word_ngrams")? as usize,
                    max_tokens: field("max_tokens")? as usize,
                };
                let rows = tokenizer.buckets as i64 + 1;
                let embedding = take(&mut tensors, "embedding", &[rows, -1])?;
                let dim = embedding.size()[1];
                let weight = take(&mut tensors, "weight", &[dim, classes as i64])?;
                let bias = take(&mut tensors, "bias", &[classes as i64])?;
                expect = Expect::Text;
                let p = Predictor::Text {
                    tokenizer,
                    embedding: embedding.to_device(device),
                    weight: weight.to_device(device),
                    bias: bias.to_device(device),
                };
                (p, Shape::Multiclass, classes)
            }
            other => return Err(format!("algorithm {other:?} cannot be served")),
        };
        let info = ModelInfo {
            algorithm: meta.algorithm.clone(),
            task: meta.task.clone(),
            expect,
            shape,
            width,
            bytes: artifact_bytes(&meta),
        };
        Ok(Model { info, predictor })
    }

    /// A copy that the HTTP threads may run, for plain-data models.
    pub fn plain(&self) -> Option<PlainModel> {
        match &self.predictor {
            Predictor::Plain(p) => Some(PlainModel {
                info: self.info.clone(),
                plain: p.clone(),
            }),
            _ => None,
        }
    }

    /// Predictions for every row of `input` (of the kind [`ModelInfo::expect`] says).
    pub fn predict(&self, input: &Input) -> Predictions {
        let rows = input.rows();
        let mut out = empty(&self.info, rows);
        let _guard = tch::no_grad_guard();
        match (&self.predictor, input) {
            (Predictor::Plain(p), Input::Rows { values, .. }) => p.predict_into(&mut out, values),
            (
                Predictor::Knn {
                    rows: model,
                    k,
                    task,
                },
                Input::Rows { values, features },
            ) => {
                let q = Tensor::from_slice(values).view([rows as i64, *features as i64]);
                let pred = floats(&model.predict(&q, *k, *task, 1024)).unwrap_or_default();
                match task {
                    Task::Regressor => out.values = pred,
                    _ => out.labels = pred.iter().map(|&l| l as i64).collect(),
                }
            }
            (
                Predictor::Net {
                    net,
                    input_mean,
                    input_std,
                    label_mean,
                    label_std,
                },
                Input::Rows { values, features },
            ) => {
                let x = Tensor::from_slice(values)
                    .view([rows as i64, *features as i64])
                    .to_device(input_mean.device());
                let y = net.forward(&((x - input_mean) / input_std), false);
                self.finish_logits(&mut out, y, *label_mean, *label_std);
            }
            (
                Predictor::Text {
                    tokenizer,
                    embedding,
                    weight,
                    bias,
                },
                Input::Texts(texts),
            ) => {
                let docs: Vec<Vec<i64>> = texts.iter().map(|t| tokenizer.ids(t)).collect();
                let len = docs.iter().map(Vec::len).max().unwrap_or(0).max(1);
                let mut ids = vec![0i64; rows * len];
                for (row, doc) in ids.chunks_exact_mut(len).zip(&docs) {
                    row[..doc.len()].copy_from_slice(doc);
                }
                let ids = Tensor::from_slice(&ids)
                    .view([rows as i64, len as i64])
                    .to_device(embedding.device());
                let logits = bag_logits(embedding, weight, bias, &ids);
                self.finish_logits(&mut out, logits, 0.0, 1.0);
            }
            // The handlers parse by `info.expect`: other pairs cannot occur.
            _ => {
                out.rows = 0;
            }
        }
        out
    }

    /// Labels and probabilities (classifier) or scaled values (regressor)
    /// of a network's outputs.
    fn finish_logits(&self, out: &mut Predictions, y: Tensor, mean: f64, std: f64) {
        let y = y.to_device(Device::Cpu).to_kind(Kind::Float);
        match self.info.shape {
            Shape::Multiclass => {
                out.labels = Vec::<i64>::try_from(y.argmax(1, false)).unwrap_or_default();
                out.values = floats(&y.softmax(1, Kind::Float)).unwrap_or_default();
            }
            _ => out.values = floats(&(y.reshape([-1]) * std + mean)).unwrap_or_default(),
        }
    }
}

impl Plain {
    /// Appends the predictions of rows `values` to `out`.
    fn predict_into(&self, out: &mut Predictions, values: &[f32]) {
        match self {
            Plain::Linear { d, o, weight, bias } => {
                let mut logits = vec![0f32; *o];
                for x in values.chunks_exact(*d) {
                    logits.copy_from_slice(bias);
                    for (xi, w) in x.iter().zip(weight.chunks_exact(*o)) {
                        for (l, wj) in logits.iter_mut().zip(w) {
                            *l += xi * wj;
                        }
                    }
                    push_supervised(out, &logits);
                }
            }
            Plain::Kmeans { d, centers } => {
                for x in values.chunks_exact(*d) {
                    let (best, dist) = centers
                        .chunks_exact(*d)
                        .map(|c| x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum::<f32>())
                        .enumerate()
                        .fold(
                            (0, f32::INFINITY),
                            |acc, (i, s)| if s < acc.1 { (i, s) } else { acc },
                        );
                    out.labels.push(best as i64);
                    out.values.push(dist.sqrt());
                }
            }
            Plain::Pca {
                d,
                components,
                mean,
            } => {
                for x in values.chunks_exact(*d) {
                    for c in components.chunks_exact(*d) {
                        let dot = x.iter().zip(mean).zip(c).map(|((xi, m), ci)| (xi - m) * ci);
                        out.values.push(dot.sum());
                    }
                }
            }
        }
    }
}

/// A plain-data model that any thread may run: with no batching delay
/// the HTTP threads answer these models themselves, since batching their
/// per-row arithmetic gains nothing and the two thread hand-offs cost more
/// than the prediction (SERVE.md).
#[derive(Clone)]
pub struct PlainModel {
    pub info: ModelInfo,
    plain: Plain,
}

impl PlainModel {
    /// Predictions for every row of `input`.
    pub fn predict(&self, input: &Input) -> Predictions {
        let mut out = empty(&self.info, input.rows());
        if let Input::Rows { values, .. } = input {
            self.plain.predict_into(&mut out, values);
        } else {
            out.rows = 0;
        }
        out
    }
}

fn empty(info: &ModelInfo, rows: usize) -> Predictions {
    let (shape, width) = (info.shape, info.width);
    Predictions {
        shape,
        rows,
        width,
        labels: Vec::with_capacity(if shape.has_label() { rows } else { 0 }),
        values: Vec::with_capacity(rows * width),
    }
}

/// Appends one row of linear outputs by task: the value (regressor), class
/// and sigmoid (binary), or argmax and softmax (multiclass).
fn push_supervised(out: &mut Predictions, logits: &[f32]) {
    match out.shape {
        Shape::Binary => {
            let p = 1.0 / (1.0 + (-logits[0]).exp());
            out.labels.push(i64::from(logits[0] > 0.0));
            out.values.push(p);
        }
        Shape::Multiclass => {
            let (best, max) =
                logits
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                    );
            let start = out.values.len();
            out.values.extend(logits.iter().map(|&l| (l - max).exp()));
            let sum: f32 = out.values[start..].iter().sum();
            out.values[start..].iter_mut().for_each(|v| *v /= sum);
            out.labels.push(best as i64);
        }
        _ => out.values.push(logits[0]),
    }
}
