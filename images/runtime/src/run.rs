//! One training job from start to exit code: read the configuration, pick the
//! device, join the other ranks, run the algorithm, and turn any error (or
//! panic) into `output/failure` and a non-zero exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tch::Device;

use crate::algo;
use crate::artifact::{self, ModelMeta};
use crate::checkpoint::{Checkpoints, Position, RunInfo};
use crate::contract::{JobConfig, Paths};
use crate::data::{self, Dataset, ReadOptions};
use crate::dist::{Comm, DistConfig};
use crate::error::{Error, Result};
use crate::hyper::Params;
use crate::layout::RowLayout;
use crate::metrics::Metrics;

/// What the command line says.
#[derive(Debug, Clone)]
pub struct Options {
    pub algorithm: Option<String>,
    pub ml_root: PathBuf,
    pub checkpoint_dir: Option<PathBuf>,
    pub device: String,
    pub rendezvous_timeout: Duration,
}

/// Everything an algorithm needs while it trains.
pub struct Context {
    pub paths: Paths,
    pub config: JobConfig,
    pub params: Params,
    pub comm: Comm,
    pub metrics: Metrics,
    pub checkpoints: Checkpoints,
    pub device: Device,
    pub algorithm: &'static str,
    stop: Arc<AtomicBool>,
    /// Time spent reading channels, reported apart from training time.
    reading: std::cell::Cell<Duration>,
    /// The train channel's image class names, once it is read.
    classes: std::cell::RefCell<Option<Vec<String>>>,
}

impl Context {
    /// Reads a required channel: this rank's share of it.
    pub fn read(&self, channel: &str, has_label: bool) -> Result<Dataset> {
        self.read_channel(channel, has_label, false)
    }

    /// Reads a whole channel on every rank (pipeline stages across ranks
    /// each need every row).
    pub fn read_all(&self, channel: &str, has_label: bool) -> Result<Dataset> {
        self.read_channel(channel, has_label, true)
    }

    fn read_channel(&self, channel: &str, has_label: bool, all: bool) -> Result<Dataset> {
        let cfg = self
            .config
            .channels
            .get(channel)
            .cloned()
            .unwrap_or_default();
        let remote = cfg.uri.clone();
        let (rank, world) = if all || cfg.sharded_by_key() {
            (0, 1)
        } else {
            (self.comm.rank, self.comm.world)
        };
        // A local sharded folder holds this rank's share already; a remote
        // one is shared out by object.
        let object_shard = (remote.is_some() && !all && cfg.sharded_by_key())
            .then_some((self.comm.rank, self.comm.world));
        let train = channel == "train";
        let opts = ReadOptions {
            has_label,
            rank,
            world,
            content_type: cfg.content_type,
            image_shape: self
                .params
                .as_map()
                .contains_key("image_shape")
                .then(|| self.params.int_list("image_shape")),
            // Image class folders of other channels take the train
            // channel's labels (every algorithm reads train first).
            classes: if train {
                None
            } else {
                self.classes.borrow().clone()
            },
            object_shard,
        };
        let dir = self.paths.channel(channel);
        let ds = self.timed(|| match &remote {
            Some(uri) => data::read_remote(channel, uri, &dir, &opts),
            None => data::read_channel(channel, &dir, &opts),
        })?;
        if train {
            self.classes.replace(ds.classes.clone());
        }
        Ok(ds)
    }

    /// Whether `channel` is distributed `ShardedByS3Key` (each rank reads
    /// only its shard).
    pub fn sharded(&self, channel: &str) -> bool {
        self.config
            .channels
            .get(channel)
            .is_some_and(|c| c.sharded_by_key())
    }

    /// How the rows of `channel` that [`Context::read`] gave this rank (of
    /// `seen` rows read: the channel, or this rank's shard of it) sit among
    /// all ranks' rows. A collective: every rank calls it at the same point.
    pub fn layout(&mut self, channel: &str, local_rows: usize, seen: usize) -> Result<RowLayout> {
        let sharded = self.sharded(channel);
        RowLayout::agree(&mut self.comm, channel, local_rows, seen, sharded)
    }

    /// [`Context::layout`] of a dataset read by [`Context::read`].
    pub fn layout_of(&mut self, channel: &str, ds: &Dataset) -> Result<RowLayout> {
        self.layout(channel, ds.rows(), ds.global_rows)
    }

    /// Class names by label when the train channel holds image class folders.
    pub fn class_names(&self) -> Option<Vec<String>> {
        self.classes.borrow().clone()
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.reading.set(self.reading.get() + start.elapsed());
        out
    }

    /// The local folder of a channel, for algorithms that read its files
    /// themselves: a channel with a storage URI is fetched into it first
    /// (all of it when `all`, else this rank's objects if it is sharded).
    pub fn local_channel(&self, channel: &str, all: bool) -> Result<PathBuf> {
        let dir = self.paths.channel(channel);
        if let Some(cfg) = self.config.channels.get(channel)
            && let Some(uri) = &cfg.uri
        {
            let shard = (!all && cfg.sharded_by_key()).then_some((self.comm.rank, self.comm.world));
            self.timed(|| data::fetch_remote(channel, uri, &dir, shard))?;
        }
        Ok(dir)
    }

    /// Reads a whole optional channel (e.g. `validation`) on rank 0 only;
    /// `None` when it is absent or on other ranks.
    pub fn read_eval(&self, channel: &str, has_label: bool) -> Result<Option<Dataset>> {
        let dir = self.paths.channel(channel);
        let declared = self.config.channels.contains_key(channel);
        if self.comm.rank != 0 || (!declared && !dir.exists()) {
            return Ok(None);
        }
        self.read_all(channel, has_label).map(Some)
    }

    /// This rank's part of the two flags every step's all-reduce carries,
    /// after `done` steps: SIGTERM arrived on this rank, and (rank 0 only,
    /// by its step count and its clock) a checkpoint is due. Summed over
    /// ranks, a positive value is the same decision on every rank: stop
    /// after writing a checkpoint, or write one now.
    pub fn step_flags(&self, done: u64) -> [f64; 2] {
        let due = self.comm.rank == 0 && self.checkpoints.due(done);
        [
            f64::from(u8::from(self.stop_signalled())),
            f64::from(u8::from(due)),
        ]
    }

    /// Resumes from the newest checkpoint step every rank has (a
    /// collective, see [`Checkpoints::resume`]), refusing one written with
    /// other hyperparameters (but those in `free`), for other train rows
    /// (`rows`), or, where that changes the meaning (shards, or `per_rank`
    /// state: each rank its own part), by another number of ranks.
    pub fn resume(
        &mut self,
        rows: &RowLayout,
        per_rank: bool,
        free: &[&str],
    ) -> Result<Option<(Position, std::collections::BTreeMap<String, tch::Tensor>)>> {
        let run = RunInfo {
            algorithm: self.algorithm.to_string(),
            hyperparameters: self.params.as_map().clone(),
            world: self.comm.world,
            rows: rows.global_rows() as u64,
            shards: rows
                .shard_rows()
                .map(|s| s.into_iter().map(|r| r as u64).collect()),
            per_rank,
        };
        self.checkpoints.resume(&mut self.comm, run, free)
    }

    /// Whether SIGTERM arrived on this rank (no communication).
    pub fn stop_signalled(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Writes the model artifact (rank 0 only), with hyperparameters and metrics.
    pub fn write_model(&self, mut meta: ModelMeta, tensors: &[(&str, &tch::Tensor)]) -> Result<()> {
        if self.comm.rank != 0 {
            return Ok(());
        }
        meta.hyperparameters = self.params.as_map().clone();
        if meta.class_names.is_none() {
            meta.class_names = self.class_names();
        }
        meta.metrics = self.metrics.summary();
        artifact::write(&self.paths.model, meta, tensors)
    }

    /// The seed hyperparameter.
    pub fn seed(&self) -> u64 {
        self.params.int("seed") as u64
    }
}

pub(crate) fn pick_device(name: &str) -> Result<Device> {
    let bad = |why: &str| Error::Config {
        path: "--device".into(),
        reason: format!("{name:?}: {why}"),
    };
    Ok(match name {
        "auto" => match std::env::var("LOCAL_RANK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(local) if tch::Cuda::is_available() => {
                Device::Cuda(local % tch::Cuda::device_count() as usize)
            }
            _ => Device::cuda_if_available(),
        },
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) if (i as i64) < tch::Cuda::device_count() => Device::Cuda(i),
            _ => return Err(bad("expected auto, cpu, or an available cuda[:N]")),
        },
    })
}

fn train(options: &Options, paths: Paths, stop: Arc<AtomicBool>) -> Result<()> {
    let config = JobConfig::load(&paths)?;
    let name = options
        .algorithm
        .clone()
        .or_else(|| config.hyperparameters.get("algorithm").cloned())
        .ok_or_else(|| {
            Error::hyper(
                "algorithm",
                "not set: pass --algorithm or the algorithm hyperparameter",
            )
        })?;
    let algorithm = algo::find(&name)?;
    let params = Params::parse(&algorithm.specs(), &config.hyperparameters)?;
    let device = pick_device(&options.device)?;
    let dist = DistConfig::from_env(&config.resources)?;
    let comm = Comm::connect(&dist, options.rendezvous_timeout)?;
    let checkpoints = Checkpoints::new(
        paths.checkpoints.clone(),
        params.int("checkpoint_every_steps") as u64,
        params.float("checkpoint_every_seconds"),
    );
    eprintln!(
        "kiln-runtime train: {} on {device:?}, rank {} of {}",
        algorithm.name, dist.rank, dist.world
    );
    let metrics = Metrics::new(Some(paths.output.join("metrics.json")), comm.rank);
    let mut ctx = Context {
        paths,
        config,
        params,
        comm,
        metrics,
        checkpoints,
        device,
        algorithm: algorithm.name,
        stop,
        reading: Default::default(),
        classes: Default::default(),
    };
    let start = Instant::now();
    (algorithm.train)(&mut ctx)?;
    // Wall time of the run without reading the channels (for benchmarks).
    let reading = ctx.reading.get().as_secs_f64();
    ctx.metrics.emit("train:read_seconds", reading, 0, None);
    ctx.metrics.emit(
        "train:fit_seconds",
        start.elapsed().as_secs_f64() - reading,
        0,
        None,
    );
    ctx.metrics
        .flush()
        .map_err(Error::io(ctx.paths.output.join("metrics.json")))
}

/// Runs a training job and returns the process exit code.
pub fn main(options: Options) -> i32 {
    let paths = Paths::new(&options.ml_root, options.checkpoint_dir.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("kiln-runtime: cannot watch signal {signal}: {e}");
        }
    }
    // Quiet default panic output: the failure file gets the message instead.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&options, paths.clone(), stop)
    }));
    let (code, reason) = match outcome {
        Ok(Ok(())) => return 0,
        Ok(Err(e @ Error::Terminated { .. })) => {
            eprintln!("kiln-runtime: {e}");
            return e.exit_code();
        }
        Ok(Err(e)) => (e.exit_code(), e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            (1, format!("internal error: {msg}"))
        }
    };
    eprintln!("kiln-runtime: {reason}");
    if let Err(e) = paths.write_failure(&reason) {
        eprintln!(
            "kiln-runtime: cannot write {}: {e}",
            paths.output.join("failure").display()
        );
    }
    code
}
