//! mlp: a multilayer perceptron, classifier or regressor, trained by the
//! shared mini-batch loop (so it is data parallel across ranks) and split
//! into pipeline stages with micro-batches when `pipeline_stages > 1`. The
//! training function is shared with image-classifier, which only differs in
//! its layers.

use tch::{Device, Kind as TKind, Tensor};

use super::net::{Layer, Net};
use super::{Algorithm, stats};
use crate::artifact::ModelMeta;
use crate::error::{Error, Result};
use crate::eval::{Task, emit_scores};
use crate::hyper::{Kind, Spec};
use crate::layout::RowLayout;
use crate::optim::{self, Optimizer, Param};
use crate::run::Context;
use crate::sgd::{self, GradModel, Rows};

/// Hyperparameters of every network algorithm.
pub const NET_SPECS: &[Spec] = &[
    Spec::required(
        "predictor_type",
        Kind::Choice(&["classifier", "regressor"]),
        "what to predict",
    ),
    Spec::new(
        "num_classes",
        Kind::Int {
            min: 0,
            max: 100_000,
        },
        "0",
        "classes of a classifier (labels 0..num_classes-1); 0 with image class folders: one per folder",
    ),
    Spec::new(
        "normalize_data",
        Kind::Bool,
        "true",
        "standardize features (mean and std are saved with the model)",
    ),
    Spec::new(
        "pipeline_stages",
        Kind::Int { min: 1, max: 64 },
        "1",
        "split the layers into this many stages (on CUDA devices round-robin when present)",
    ),
    Spec::new(
        "pipeline_ranks",
        Kind::Bool,
        "false",
        "put stage i on rank i (WORLD_SIZE = pipeline_stages) instead of data parallelism",
    ),
    Spec::new(
        "micro_batches",
        Kind::Int { min: 1, max: 4096 },
        "1",
        "micro-batches per mini-batch going through the stages",
    ),
    Spec::new(
        "learning_rate",
        Kind::Float {
            min: 1e-8,
            max: 10.0,
        },
        "0.001",
        "step size",
    ),
    Spec::new(
        "wd",
        Kind::Float {
            min: 0.0,
            max: 100.0,
        },
        "0.0001",
        "L2 penalty on weights",
    ),
    Spec::new(
        "mini_batch_size",
        Kind::Int {
            min: 1,
            max: 1 << 24,
        },
        "200",
        "rows per global batch",
    ),
    Spec::new(
        "epochs",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "200",
        "passes over the training data",
    ),
];

const SPECS: &[Spec] = &[
    Spec::new(
        "hidden_layers",
        Kind::IntList,
        "100",
        "widths of the hidden layers, e.g. 64,32",
    ),
    Spec::new(
        "activation",
        Kind::Choice(&["relu", "tanh"]),
        "relu",
        "activation after each hidden layer",
    ),
    Spec::new(
        "dropout",
        Kind::Float {
            min: 0.0,
            max: 0.95,
        },
        "0",
        "dropout after each hidden layer",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "mlp",
    tables: &[SPECS, NET_SPECS, sgd::SPECS, optim::SPECS],
    train: |ctx| train_net(ctx, mlp_layers),
};

fn mlp_layers(ctx: &Context, inputs: i64, outputs: i64) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let mut width = inputs;
    for h in ctx.params.int_list("hidden_layers") {
        layers.push(Layer::Linear {
            inputs: width,
            outputs: h,
        });
        layers.push(if ctx.params.str("activation") == "tanh" {
            Layer::Tanh
        } else {
            Layer::Relu
        });
        let p = ctx.params.float("dropout");
        if p > 0.0 {
            layers.push(Layer::Dropout { p });
        }
        width = h;
    }
    layers.push(Layer::Linear {
        inputs: width,
        outputs,
    });
    Ok(layers)
}

/// A network with its task; losses summed over micro-batches.
struct NetModel {
    net: Net,
    task: Task,
    micro_batches: i64,
}

impl GradModel for NetModel {
    fn params(&self) -> &[Param] {
        self.net.params()
    }

    fn loss_sum(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let rows = x.size()[0];
        let parts = self.micro_batches.min(rows).max(1);
        let size = (rows + parts - 1) / parts;
        let mut total: Option<Tensor> = None;
        for start in (0..rows).step_by(size as usize) {
            let len = size.min(rows - start);
            let out = self.net.forward(&x.narrow(0, start, len), true);
            let yb = y.narrow(0, start, len).to_device(out.device());
            let out = if self.task.outputs() == 1 {
                out.view(-1)
            } else {
                out
            };
            let l = self.task.loss_sum(&out, &yb).to_device(x.device());
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        total.expect("a non-empty batch")
    }
}

impl NetModel {
    fn predict(&self, x: &Tensor) -> Tensor {
        let out = sgd::predict_blocks(x, self.net.input_device(), 4096, |xb| {
            self.net.forward(xb, false)
        });
        if self.task.outputs() == 1 {
            out.view(-1)
        } else {
            out
        }
    }
}

/// `num_classes`, or with image class folders and `num_classes` 0, their
/// number; fewer than the folders is an error.
fn num_classes(given: i64, folders: Option<&[String]>) -> Result<i64> {
    match folders {
        Some(names) if given == 0 => Ok(names.len() as i64),
        Some(names) if given < names.len() as i64 => Err(Error::hyper(
            "num_classes",
            format!(
                "{given}, but the train channel has {} class folders ({})",
                names.len(),
                names.join(", ")
            ),
        )),
        _ => Ok(given),
    }
}

/// Trains a network whose layers `build(ctx, inputs, outputs)` returns.
pub fn train_net(
    ctx: &mut Context,
    build: fn(&Context, i64, i64) -> Result<Vec<Layer>>,
) -> Result<()> {
    let device = ctx.device;
    // Stages on ranks: every rank reads every row; else ranks share the rows.
    let across = ctx.params.bool("pipeline_ranks") && ctx.comm.world > 1;
    let train = if across {
        ctx.read_all("train", true)?
    } else {
        ctx.read("train", true)?
    };
    let task = match ctx.params.str("predictor_type") {
        "regressor" => Task::Regressor,
        _ => Task::parse(
            "multiclass_classifier",
            num_classes(ctx.params.int("num_classes"), train.classes.as_deref())?,
        )?,
    };
    let y = task.prepare_labels("train", train.labels("train")?)?;
    let validation = ctx.read_eval("validation", true)?;
    let test = ctx.read_eval("test", true)?;
    let features = train.cols() as i64;
    let layout = if across {
        RowLayout::single(train.rows())
    } else {
        ctx.layout_of("train", &train)?
    };
    let mut x = train.x.to_device(device);
    let (mut mean, mut std) = (
        Tensor::zeros([features], (TKind::Float, device)),
        Tensor::ones([features], (TKind::Float, device)),
    );
    if ctx.params.bool("normalize_data") {
        (mean, std) = stats::column_moments(ctx, &x)?;
        x = (&x - &mean) / &std;
    }
    let (mut y_mean, mut y_std) = (0.0, 1.0);
    let mut y = y.to_device(device);
    if task == Task::Regressor {
        let (m, s) = stats::column_moments(ctx, &y.unsqueeze(1))?;
        (y_mean, y_std) = (m.double_value(&[0]), s.double_value(&[0]));
        y = (&y - y_mean) / y_std;
    }
    let layers = build(ctx, features, task.outputs())?;
    let devices: Vec<Device> = match device {
        Device::Cuda(_) => (0..tch::Cuda::device_count() as usize)
            .map(Device::Cuda)
            .collect(),
        other => vec![other],
    };
    tch::manual_seed(ctx.seed() as i64);
    let net = Net::new(layers, ctx.params.usize("pipeline_stages"), &devices);
    // Every rank starts from rank 0's weights.
    let tensors: Vec<&Tensor> = net.params().iter().map(|p| &p.tensor).collect();
    let start = ctx.comm.broadcast(&tensors)?;
    tch::no_grad(|| {
        for (p, s) in net.params().iter().zip(&start) {
            p.tensor.shallow_clone().copy_(s);
        }
    });
    let model = NetModel {
        net,
        task,
        micro_batches: ctx.params.int("micro_batches"),
    };
    let mut opt = Optimizer::new(&ctx.params, model.params());
    let rows = Rows {
        x: &x,
        y: &y,
        layout: &layout,
    };
    let normalize = |x: &Tensor| (x.to_device(device) - &mean) / &std;
    let unscale = |out: Tensor| {
        if task == Task::Regressor {
            out * y_std + y_mean
        } else {
            out
        }
    };
    let mut on_epoch = |ctx: &mut Context, epoch: u64, step: u64| -> Result<()> {
        if let Some(v) = &validation {
            let vy = task.prepare_labels("validation", v.labels("validation")?)?;
            let out = unscale(model.predict(&normalize(&v.x))).to_device(device);
            emit_scores(
                &mut ctx.metrics,
                "validation",
                &task.score(&out, &vy.to_device(device)),
                step,
                Some(epoch),
            );
        }
        Ok(())
    };
    if across {
        super::pipeline::fit(ctx, &model.net, task, &x, &y, &mut on_epoch)?;
    } else {
        sgd::fit(ctx, &model, &mut opt, &rows, &mut on_epoch)?;
    }
    let step = ctx.params.int("epochs") as u64;
    if let Some(t) = &test {
        let ty = task.prepare_labels("test", t.labels("test")?)?;
        let out = unscale(model.predict(&normalize(&t.x))).to_device(device);
        emit_scores(
            &mut ctx.metrics,
            "test",
            &task.score(&out, &ty.to_device(device)),
            step,
            None,
        );
    }
    let mut meta = ModelMeta::new(ctx.algorithm, task.name(), features as usize);
    meta.num_classes = task.classes();
    meta.model = serde_json::json!({
        "layers": model.net.layers,
        "input": "(x - input_mean) / input_std, then the layers in order; parameters l<i>.weight and l<i>.bias",
        "output": match task {
            Task::Regressor => "output * label_std + label_mean",
            _ => "logits: argmax is the class, softmax the probabilities",
        },
        "label_mean": y_mean,
        "label_std": y_std,
    });
    let mut tensors: Vec<(&str, &Tensor)> = vec![("input_mean", &mean), ("input_std", &std)];
    tensors.extend(model.params().iter().map(|p| (p.name.as_str(), &p.tensor)));
    tensors.extend(model.net.buffers().iter().map(|(n, t)| (n.as_str(), t)));
    if model.params().is_empty() {
        return Err(Error::Algorithm("the network has no parameters".into()));
    }
    ctx.write_model(meta, &tensors)
}
