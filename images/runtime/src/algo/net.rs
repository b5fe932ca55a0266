//! Neural networks of the mlp and image-classifier algorithms: a network is
//! a list of layers, split into pipeline stages. Each stage lives in its own
//! `VarStore` on its own device; micro-batches go through the stages in
//! order and their losses are summed, so the gradients of a split network
//! equal those of the unsplit one (the schedule of GPipe).
//!
//! Parameters are named by layer index (`l3.weight`), whatever the split,
//! so checkpoints and artifacts do not depend on it.

use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::optim::Param;

/// One layer; serialized into `model.json` so a server can rebuild the net.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    Linear {
        inputs: i64,
        outputs: i64,
    },
    Conv2d {
        inputs: i64,
        outputs: i64,
        kernel: i64,
        padding: i64,
    },
    BatchNorm2d {
        channels: i64,
    },
    MaxPool2d {
        kernel: i64,
    },
    Relu,
    Tanh,
    Dropout {
        p: f64,
    },
    Reshape {
        shape: Vec<i64>,
    },
    Flatten,
}

impl Layer {
    fn has_params(&self) -> bool {
        matches!(
            self,
            Layer::Linear { .. } | Layer::Conv2d { .. } | Layer::BatchNorm2d { .. }
        )
    }
}

/// A layer list built into stages.
pub struct Net {
    pub layers: Vec<Layer>,
    stores: Vec<nn::VarStore>,
    stages: Vec<nn::SequentialT>,
    params: Vec<Param>,
    /// The stage of each parameter.
    param_stage: Vec<usize>,
    buffers: Vec<(String, Tensor)>,
}

/// Splits `layers` into `stages` contiguous runs with about equal numbers of
/// layers that have parameters; returns each run's first index.
pub fn split_points(layers: &[Layer], stages: usize) -> Vec<usize> {
    let weighted: Vec<usize> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.has_params())
        .map(|(i, _)| i)
        .collect();
    let stages = stages.clamp(1, weighted.len().max(1));
    let mut starts = vec![0];
    for s in 1..stages {
        starts.push(weighted[s * weighted.len() / stages]);
    }
    starts
}

impl Net {
    /// Builds `layers` (initialized on the CPU from the global seed, so every
    /// split and every rank starts equal) into `stages` stages on `devices`.
    pub fn new(layers: Vec<Layer>, stages: usize, devices: &[Device]) -> Net {
        let starts = split_points(&layers, stages);
        let mut stores = Vec::new();
        let mut seqs = Vec::new();
        for (s, &start) in starts.iter().enumerate() {
            let end = starts.get(s + 1).copied().unwrap_or(layers.len());
            let vs = nn::VarStore::new(Device::Cpu);
            let root = vs.root();
            let mut seq = nn::seq_t();
            for (i, layer) in layers.iter().enumerate().take(end).skip(start) {
                let p = &root / format!("l{i}");
                seq = match layer.clone() {
                    Layer::Linear { inputs, outputs } => {
                        seq.add(nn::linear(p, inputs, outputs, Default::default()))
                    }
                    Layer::Conv2d {
                        inputs,
                        outputs,
                        kernel,
                        padding,
                    } => seq.add(nn::conv2d(
                        p,
                        inputs,
                        outputs,
                        kernel,
                        nn::ConvConfig {
                            padding,
                            ..Default::default()
                        },
                    )),
                    Layer::BatchNorm2d { channels } => {
                        seq.add(nn::batch_norm2d(p, channels, Default::default()))
                    }
                    Layer::MaxPool2d { kernel } => {
                        seq.add_fn(move |x| x.max_pool2d_default(kernel))
                    }
                    Layer::Relu => seq.add_fn(|x| x.relu()),
                    Layer::Tanh => seq.add_fn(|x| x.tanh()),
                    Layer::Dropout { p } => seq.add_fn_t(move |x, train| x.dropout(p, train)),
                    Layer::Reshape { shape } => seq.add_fn(move |x| {
                        let mut full = vec![x.size()[0]];
                        full.extend(&shape);
                        x.reshape(full.as_slice())
                    }),
                    Layer::Flatten => seq.add_fn(|x| x.flatten(1, -1)),
                };
            }
            stores.push(vs);
            seqs.push(seq);
        }
        for (s, vs) in stores.iter_mut().enumerate() {
            vs.set_device(devices[s % devices.len()]);
        }
        let mut params = Vec::new();
        let mut param_stage = Vec::new();
        let mut buffers = Vec::new();
        for (stage, vs) in stores.iter().enumerate() {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, tensor) in vars {
                if tensor.requires_grad() {
                    let penalized = name.ends_with("weight") && !is_norm(&layers, &name);
                    params.push(Param {
                        name,
                        tensor,
                        penalized,
                    });
                    param_stage.push(stage);
                } else {
                    buffers.push((name, tensor));
                }
            }
        }
        Net {
            layers,
            stores,
            stages: seqs,
            params,
            param_stage,
            buffers,
        }
    }

    /// Trainable tensors, sorted by name.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Running statistics of batch norms (saved, not trained).
    pub fn buffers(&self) -> &[(String, Tensor)] {
        &self.buffers
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    /// The output of all stages, moving activations between stage devices.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (stage, vs) in self.stages.iter().zip(&self.stores) {
            h = stage.forward_t(&h.to_device(vs.device()), train);
        }
        h
    }

    /// The output of stage `s` alone (pipeline across ranks).
    pub fn forward_stage(&self, s: usize, x: &Tensor, train: bool) -> Tensor {
        self.stages[s].forward_t(&x.to_device(self.stores[s].device()), train)
    }

    /// The stage each of [`Net::params`] belongs to.
    pub fn param_stages(&self) -> &[usize] {
        &self.param_stage
    }

    /// The device of the first stage (inputs) and of the last (outputs).
    pub fn input_device(&self) -> Device {
        self.stores[0].device()
    }

    /// The device of the last stage.
    pub fn output_device(&self) -> Device {
        self.stores[self.stores.len() - 1].device()
    }
}

fn is_norm(layers: &[Layer], name: &str) -> bool {
    name.strip_prefix('l')
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| matches!(layers.get(i), Some(Layer::BatchNorm2d { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_balances_weighted_layers_and_keeps_names() {
        let layers = vec![
            Layer::Linear {
                inputs: 4,
                outputs: 8,
            },
            Layer::Relu,
            Layer::Linear {
                inputs: 8,
                outputs: 8,
            },
            Layer::Relu,
            Layer::Linear {
                inputs: 8,
                outputs: 3,
            },
        ];
        assert_eq!(split_points(&layers, 1), [0]);
        assert_eq!(split_points(&layers, 3), [0, 2, 4]);
        assert_eq!(split_points(&layers, 9), [0, 2, 4]);
        let one = Net::new(layers.clone(), 1, &[Device::Cpu]);
        let three = Net::new(layers, 3, &[Device::Cpu]);
        // Tests share libtorch's global generator, so copy rather than reseed.
        tch::no_grad(|| {
            for (a, b) in one.params().iter().zip(three.params()) {
                b.tensor.shallow_clone().copy_(&a.tensor);
            }
        });
        assert_eq!(three.stages(), 3);
        let names = |n: &Net| {
            n.params()
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&one), names(&three));
        let x = Tensor::randn([5, 4], (tch::Kind::Float, Device::Cpu));
        let diff = (one.forward(&x, false) - three.forward(&x, false))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }
}
