//! image-classifier: a small convolutional network (3x3 convolutions, ReLU,
//! 2x2 max pooling, then two dense layers) on images given as pixel rows
//! (a CSV or Parquet row is the label then `channels x height x width`
//! pixel values in CHW order) or as PNG/JPEG files in one folder per class,
//! which the channel reader converts to such rows (data/images.rs). Trained
//! like mlp (data parallel, pipeline stages with micro-batches).

use super::Algorithm;
use super::mlp::{NET_SPECS, train_net};
use super::net::Layer;
use crate::error::{Error, Result};
use crate::hyper::{Kind, Spec};
use crate::optim;
use crate::run::Context;
use crate::sgd;

const SPECS: &[Spec] = &[
    Spec::required(
        "image_shape",
        Kind::IntList,
        "channels,height,width of each image, e.g. 1,28,28 (image files are converted and resized to it)",
    ),
    Spec::new(
        "predictor_type",
        Kind::Choice(&["classifier"]),
        "classifier",
        "always a classifier",
    ),
    Spec::new(
        "conv_channels",
        Kind::IntList,
        "16,32",
        "output channels of each 3x3 convolution block",
    ),
    Spec::new(
        "dense_units",
        Kind::Int {
            min: 1,
            max: 65_536,
        },
        "64",
        "units of the dense layer before the output",
    ),
    Spec::new(
        "batch_norm",
        Kind::Bool,
        "false",
        "batch normalization after each convolution",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "image-classifier",
    tables: &[SPECS, NET_SPECS, sgd::SPECS, optim::SPECS],
    train: |ctx| train_net(ctx, cnn_layers),
};

fn cnn_layers(ctx: &Context, inputs: i64, outputs: i64) -> Result<Vec<Layer>> {
    let shape = ctx.params.int_list("image_shape");
    let [c, h, w] = shape[..] else {
        return Err(Error::hyper(
            "image_shape",
            format!("{shape:?}: expected channels,height,width"),
        ));
    };
    if c * h * w != inputs {
        return Err(Error::data(
            "train",
            format!(
                "rows have {inputs} pixel values but image_shape {c},{h},{w} needs {}",
                c * h * w
            ),
        ));
    }
    let mut layers = vec![Layer::Reshape {
        shape: vec![c, h, w],
    }];
    let (mut ch, mut hh, mut ww) = (c, h, w);
    for out in ctx.params.int_list("conv_channels") {
        layers.push(Layer::Conv2d {
            inputs: ch,
            outputs: out,
            kernel: 3,
            padding: 1,
        });
        if ctx.params.bool("batch_norm") {
            layers.push(Layer::BatchNorm2d { channels: out });
        }
        layers.push(Layer::Relu);
        if hh >= 2 && ww >= 2 {
            layers.push(Layer::MaxPool2d { kernel: 2 });
            (hh, ww) = (hh / 2, ww / 2);
        }
        ch = out;
    }
    let dense = ctx.params.int("dense_units");
    layers.push(Layer::Flatten);
    layers.push(Layer::Linear {
        inputs: ch * hh * ww,
        outputs: dense,
    });
    layers.push(Layer::Relu);
    layers.push(Layer::Linear {
        inputs: dense,
        outputs,
    });
    Ok(layers)
}
