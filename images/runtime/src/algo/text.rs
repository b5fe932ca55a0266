//! text-classifier: fastText-style classification. A document is a bag of
//! its words and word n-grams, each hashed into one of `buckets` embedding
//! rows; the document vector is the mean of its rows and a linear layer
//! gives the class logits. Trained by the shared mini-batch loop.
//!
//! Channel files hold one document per line: `<label>\t<text>` or
//! fastText's `__label__<label> <text>`, labels `0..num_classes-1`.

use std::io::BufRead;
use std::path::Path;

use tch::{Device, Kind as TKind, Tensor};

use super::Algorithm;
use crate::artifact::ModelMeta;
use crate::data::channel_files;
use crate::error::{Error, Result};
use crate::eval::{Task, emit_scores};
use crate::hyper::{Kind, Spec};
use crate::optim::{self, Optimizer, Param};
use crate::run::Context;
use crate::sgd::{self, GradModel, Rows};

const SPECS: &[Spec] = &[
    Spec::required(
        "num_classes",
        Kind::Int {
            min: 2,
            max: 100_000,
        },
        "classes (labels 0..num_classes-1)",
    ),
    Spec::new(
        "embedding_dim",
        Kind::Int { min: 1, max: 4096 },
        "32",
        "size of word and n-gram vectors",
    ),
    Spec::new(
        "buckets",
        Kind::Int {
            min: 16,
            max: 10_000_000,
        },
        "100000",
        "hash buckets for words and n-grams",
    ),
    Spec::new(
        "word_ngrams",
        Kind::Int { min: 1, max: 5 },
        "2",
        "longest word n-gram used",
    ),
    Spec::new(
        "max_tokens",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "256",
        "tokens kept per document (words and n-grams)",
    ),
    Spec::new(
        "learning_rate",
        Kind::Float {
            min: 1e-8,
            max: 10.0,
        },
        "0.005",
        "step size",
    ),
    Spec::new(
        "epochs",
        Kind::Int {
            min: 1,
            max: 100_000,
        },
        "5",
        "passes over the training data",
    ),
    Spec::new(
        "mini_batch_size",
        Kind::Int {
            min: 1,
            max: 1 << 24,
        },
        "32",
        "documents per global batch",
    ),
];

/// The registry entry.
pub const ALGORITHM: Algorithm = Algorithm {
    name: "text-classifier",
    tables: &[SPECS, sgd::SPECS, optim::SPECS],
    train,
};

/// How text becomes token ids; recorded in `model.json` for the server.
#[derive(Debug, Clone, Copy)]
pub struct Tokenizer {
    pub buckets: u64,
    pub ngrams: usize,
    pub max_tokens: usize,
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Tokenizer {
    /// Ids in `1..=buckets` of the words and n-grams of `text` (0 pads).
    pub fn ids(&self, text: &str) -> Vec<i64> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut ids = Vec::new();
        'outer: for n in 1..=self.ngrams {
            for gram in words.windows(n) {
                if ids.len() == self.max_tokens {
                    break 'outer;
                }
                ids.push((fnv1a(gram.join(" ").as_bytes()) % self.buckets) as i64 + 1);
            }
        }
        ids
    }
}

/// Documents of a channel as padded ids `[n, max_tokens]` and labels `[n]`;
/// with `world > 1` this rank keeps lines `i % world == rank`.
fn read_docs(
    channel: &str,
    dir: &Path,
    tok: &Tokenizer,
    rank: usize,
    world: usize,
) -> Result<(Tensor, Tensor, usize)> {
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut seen = 0usize;
    for file in channel_files(channel, dir)? {
        let reader = std::io::BufReader::new(std::fs::File::open(&file).map_err(Error::io(&file))?);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| {
                Error::data(channel, format!("{} line {}: {e}", file.display(), n + 1))
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let (label, text) = match line.strip_prefix("__label__") {
                Some(rest) => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
                None => line.split_once('\t').ok_or_else(|| {
                    Error::data(
                        channel,
                        format!(
                            "{} line {}: expected <label>\\t<text> or __label__<label> <text>",
                            file.display(),
                            n + 1
                        ),
                    )
                })?,
            };
            let label: i64 = label.trim().parse().map_err(|_| {
                Error::data(
                    channel,
                    format!(
                        "{} line {}: label {label:?} is not an integer",
                        file.display(),
                        n + 1
                    ),
                )
            })?;
            seen += 1;
            if (seen - 1) % world != rank {
                continue;
            }
            let mut row = tok.ids(text);
            row.resize(tok.max_tokens, 0);
            ids.extend(row);
            labels.push(label as f32);
        }
    }
    if labels.is_empty() {
        return Err(Error::data(channel, "empty: no documents"));
    }
    let n = labels.len() as i64;
    Ok((
        Tensor::from_slice(&ids).view([n, tok.max_tokens as i64]),
        Tensor::from_slice(&labels),
        seen,
    ))
}

/// Mean of token embeddings, then a linear layer.
struct BagModel {
    params: Vec<Param>,
    task: Task,
}

impl BagModel {
    fn new(buckets: i64, dim: i64, classes: i64, device: Device) -> Self {
        let embedding = (Tensor::randn([buckets + 1, dim], (TKind::Float, device))
            * (1.0 / dim as f64))
            .set_requires_grad(true);
        let weight = Tensor::zeros([dim, classes], (TKind::Float, device)).set_requires_grad(true);
        let bias = Tensor::zeros([classes], (TKind::Float, device)).set_requires_grad(true);
        let params = vec![
            Param {
                name: "embedding".into(),
                tensor: embedding,
                penalized: false,
            },
            Param {
                name: "weight".into(),
                tensor: weight,
                penalized: true,
            },
            Param {
                name: "bias".into(),
                tensor: bias,
                penalized: false,
            },
        ];
        BagModel {
            params,
            task: Task::Multiclass(classes as usize),
        }
    }

    fn forward(&self, ids: &Tensor) -> Tensor {
        bag_logits(
            &self.params[0].tensor,
            &self.params[1].tensor,
            &self.params[2].tensor,
            ids,
        )
    }
}

/// Class logits of padded token ids `[n, len]` (0 pads): the mean of the
/// documents' embedding rows `@ weight + bias`. Training and serving share it.
pub fn bag_logits(embedding: &Tensor, weight: &Tensor, bias: &Tensor, ids: &Tensor) -> Tensor {
    let (b, l) = (ids.size()[0], ids.size()[1]);
    let emb = embedding.index_select(0, &ids.view(-1)).view([b, l, -1]);
    let mask = ids.ne(0).to_kind(TKind::Float).unsqueeze(2);
    let mean = (emb * &mask).sum_dim_intlist(1, false, TKind::Float)
        / mask.sum_dim_intlist(1, false, TKind::Float).clamp_min(1.0);
    mean.matmul(weight) + bias
}

impl GradModel for BagModel {
    fn params(&self) -> &[Param] {
        &self.params
    }

    fn loss_sum(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.task.loss_sum(&self.forward(x), y)
    }
}

fn train(ctx: &mut Context) -> Result<()> {
    let classes = ctx.params.int("num_classes");
    let task = Task::Multiclass(classes as usize);
    let tok = Tokenizer {
        buckets: ctx.params.int("buckets") as u64,
        ngrams: ctx.params.usize("word_ngrams"),
        max_tokens: ctx.params.usize("max_tokens"),
    };
    let device = ctx.device;
    let train_dir = ctx.local_channel("train", false)?;
    // A sharded channel's folder holds this rank's documents only.
    let (rank, world) = if ctx.sharded("train") {
        (0, 1)
    } else {
        (ctx.comm.rank, ctx.comm.world)
    };
    let (x, y, seen) = read_docs("train", &train_dir, &tok, rank, world)?;
    let layout = ctx.layout("train", y.size()[0] as usize, seen)?;
    let y = task.prepare_labels("train", &y)?;
    let mut evals = Vec::new();
    for channel in ["validation", "test"] {
        let declared = ctx.config.channels.contains_key(channel);
        if ctx.comm.rank == 0 && (declared || ctx.paths.channel(channel).exists()) {
            let dir = ctx.local_channel(channel, true)?;
            let (vx, vy, _) = read_docs(channel, &dir, &tok, 0, 1)?;
            evals.push((channel, vx, task.prepare_labels(channel, &vy)?));
        }
    }
    tch::manual_seed(ctx.seed() as i64);
    let model = BagModel::new(
        tok.buckets as i64,
        ctx.params.int("embedding_dim"),
        classes,
        device,
    );
    let tensors: Vec<&Tensor> = model.params.iter().map(|p| &p.tensor).collect();
    let start = ctx.comm.broadcast(&tensors)?;
    tch::no_grad(|| {
        for (p, s) in model.params.iter().zip(&start) {
            p.tensor.shallow_clone().copy_(s);
        }
    });
    let mut opt = Optimizer::new(&ctx.params, &model.params);
    let (x, y) = (x.to_device(device), y.to_device(device));
    let rows = Rows {
        x: &x,
        y: &y,
        layout: &layout,
    };
    let score = |ctx: &mut Context,
                 channel: &str,
                 vx: &Tensor,
                 vy: &Tensor,
                 step: u64,
                 epoch: Option<u64>| {
        let out = sgd::predict_blocks(vx, device, 4096, |b| model.forward(b));
        emit_scores(
            &mut ctx.metrics,
            channel,
            &task.score(&out, &vy.to_device(device)),
            step,
            epoch,
        );
    };
    let mut on_epoch = |ctx: &mut Context, epoch: u64, step: u64| -> Result<()> {
        for (channel, vx, vy) in evals.iter().filter(|e| e.0 == "validation") {
            score(ctx, channel, vx, vy, step, Some(epoch));
        }
        Ok(())
    };
    sgd::fit(ctx, &model, &mut opt, &rows, &mut on_epoch)?;
    let step = ctx.params.int("epochs") as u64;
    for (channel, vx, vy) in evals.iter().filter(|e| e.0 == "test") {
        score(ctx, channel, vx, vy, step, None);
    }
    let mut meta = ModelMeta::new("text-classifier", task.name(), 0);
    meta.num_classes = Some(classes as usize);
    meta.model = serde_json::json!({
        "tokenizer": {
            "lowercase": true,
            "split": "on every character that is not alphanumeric (Unicode), empty pieces dropped",
            "tokens": "all words, then all word n-grams for n = 2..word_ngrams (words joined by one space), in order, at most max_tokens",
            "id": "FNV-1a 64-bit hash of the token's UTF-8 bytes, modulo buckets, plus 1 (0 is padding)",
            "buckets": tok.buckets,
            "word_ngrams": tok.ngrams,
            "max_tokens": tok.max_tokens,
        },
        "output": "mean of embedding[id] over the document's ids, then @ weight + bias: class logits",
    });
    let named: Vec<(&str, &Tensor)> = model
        .params
        .iter()
        .map(|p| (p.name.as_str(), &p.tensor))
        .collect();
    ctx.write_model(meta, &named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_then_ngrams_hashed_and_capped() {
        let tok = Tokenizer {
            buckets: 1000,
            ngrams: 2,
            max_tokens: 5,
        };
        let ids = tok.ids("Hello, world! hello");
        assert_eq!(ids.len(), 5);
        assert_eq!(ids[0], ids[2], "case-folded words hash alike");
        assert_eq!(ids[0], (fnv1a(b"hello") % 1000) as i64 + 1);
        assert_eq!(ids[3], (fnv1a(b"hello world") % 1000) as i64 + 1);
        assert!(ids.iter().all(|&i| (1..=1000).contains(&i)));
        assert!(
            Tokenizer {
                max_tokens: 100,
                ..tok
            }
            .ids("a b c")
            .len()
                == 5
        );
    }
}
