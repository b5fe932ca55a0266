//! The `kiln-runtime` binary: `train` runs a built-in algorithm on the
//! SageMaker training contract; `serve` serves its models (SageMaker
//! inference contract and Open Inference Protocol); `describe` prints an
//! algorithm's hyperparameters; `fetch`, `push` and `sync` move channels,
//! models and checkpoints between the pod and its object store; `inspect`
//! reports a model artifact's digest for the operator's ModelPackage check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_runtime::transfer::{self, fetch, inspect, push, sync};
use kiln_runtime::{algo, run, serve};

#[derive(Parser, Debug)]
#[command(
    name = "kiln-runtime",
    version,
    about = "Kiln's runtime: built-in training algorithms and their model server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a built-in algorithm (the SageMaker container argument `train`).
    Train(TrainArgs),
    /// Serve models (the SageMaker container argument `serve`).
    Serve(ServeArgs),
    /// Print an algorithm's hyperparameters as a Markdown table.
    Describe {
        /// The algorithm, e.g. `kmeans`.
        algorithm: String,
    },
    /// Download every object under a storage URI (or the one it names) into
    /// a folder: a channel's or the checkpoints' init container.
    Fetch(FetchArgs),
    /// Upload the model folder to a storage URI as model.tar.gz (or as
    /// files): the training pod's main container.
    Push(PushArgs),
    /// Upload a folder's new and changed files every interval and once more
    /// on SIGTERM: the checkpoint sidecar.
    Sync(SyncArgs),
    /// Read a model artifact (a .tar.gz or a prefix) and report its SHA-256,
    /// size and model.json's algorithm as JSON: the ModelPackage check.
    Inspect(InspectArgs),
}

/// The termination message path of the transfer commands.
#[derive(clap::Args, Debug)]
struct TerminationArgs {
    /// Where the failure reason (and push's artifact JSON) is written; a
    /// path that cannot be written is skipped.
    #[arg(long, env = "KILN_TERMINATION_MESSAGE", default_value = transfer::TERMINATION_LOG)]
    termination_message: PathBuf,
}

#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// The storage URI: s3://bucket/prefix (or one object), gs://, az://.
    #[arg(long)]
    uri: String,
    /// The folder the objects go to, at their key paths under the prefix.
    #[arg(long)]
    to: PathBuf,
    /// Only this rank's objects, RANK/REPLICAS: object k of the sorted (or
    /// shuffled) listing goes to rank k mod REPLICAS (ShardedByS3Key).
    #[arg(long, value_name = "RANK/REPLICAS")]
    shard: Option<fetch::Shard>,
    /// Shuffle the listing with this seed before sharding (the same order
    /// on every rank).
    #[arg(long, value_name = "N")]
    shuffle_seed: Option<u64>,
    /// Unpack .tar.gz/.tgz objects into the folder and write .gz objects
    /// without the suffix.
    #[arg(long, value_enum)]
    decompress: Option<fetch::Decompress>,
    /// An empty location is not an error (restoring checkpoints of a first run).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    termination: TerminationArgs,
}

#[derive(clap::Args, Debug)]
struct PushArgs {
    /// The model folder.
    #[arg(long, default_value = "/opt/ml/model")]
    from: PathBuf,
    /// The output URI: the archive goes to <URI>/model.tar.gz, or to the
    /// URI itself when it ends in .tar.gz. Without it: nothing to push.
    #[arg(long)]
    to: Option<String>,
    /// gzip: one model.tar.gz; none: the files under the URI.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: push::Compression,
    /// Encrypt the uploaded objects with this KMS key (SSE-KMS, s3:// only).
    #[arg(long)]
    kms_key_id: Option<String>,
    /// The algorithm's metrics.json: its latest values go into the report
    /// as `finalMetrics` (a missing file adds none).
    #[arg(long)]
    metrics: Option<PathBuf>,
    #[command(flatten)]
    termination: TerminationArgs,
}

#[derive(clap::Args, Debug)]
struct SyncArgs {
    /// The folder to upload.
    #[arg(long, default_value = "/opt/ml/checkpoints")]
    dir: PathBuf,
    /// The storage URI the files go under, at their relative paths.
    #[arg(long)]
    to: String,
    /// Seconds between passes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    interval_seconds: u64,
    /// Encrypt the uploaded objects with this KMS key (SSE-KMS, s3:// only).
    #[arg(long)]
    kms_key_id: Option<String>,
    #[command(flatten)]
    termination: TerminationArgs,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The artifact: s3://, gs:// or az:// (a .tar.gz object or a prefix),
    /// file:// or a path (a .tar.gz file or a folder).
    #[arg(long)]
    uri: String,
    /// kiln: model.json must be there (a built-in's model); any: a model
    /// for your own image, model.json read when present.
    #[arg(long, value_enum, default_value = "kiln")]
    format: inspect::Format,
    #[command(flatten)]
    termination: TerminationArgs,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// The built-in algorithm; else the `algorithm` hyperparameter.
    #[arg(long, env = "KILN_ALGORITHM")]
    algorithm: Option<String>,
    /// Base directory of the training contract.
    #[arg(long, env = "KILN_ML_ROOT", default_value = "/opt/ml")]
    ml_root: PathBuf,
    /// Checkpoint directory (default `<ml-root>/checkpoints`).
    #[arg(long, env = "KILN_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    device: String,
    /// Seconds to wait for the other ranks at the rendezvous.
    #[arg(long, env = "KILN_RENDEZVOUS_TIMEOUT_SECONDS", default_value_t = 600)]
    rendezvous_timeout: u64,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "KILN_SERVE_ADDRESS", default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// Port of the Open Inference Protocol's gRPC service.
    #[arg(long, env = "KILN_GRPC_PORT", default_value_t = 8081)]
    grpc_port: u16,
    /// No gRPC service.
    #[arg(long, env = "KILN_NO_GRPC")]
    no_grpc: bool,
    /// The model (single-model mode): a folder holding model.json and
    /// model.safetensors, a file:// URI, a model.tar.gz, or a storage URI
    /// (s3://, gs://, az://: a prefix or one .tar.gz object).
    #[arg(long, env = "KILN_MODEL_URI", default_value = "/opt/ml/model")]
    model: String,
    /// The model's name in the Open Inference Protocol routes.
    #[arg(long, env = "KILN_MODEL_NAME", default_value = "model")]
    model_name: String,
    /// Multi-model mode: models are loaded through the /models API.
    #[arg(long, env = "SAGEMAKER_MULTI_MODEL")]
    multi_model: bool,
    /// Folder that relative model URLs of the /models API are under.
    #[arg(long, env = "KILN_MODEL_ROOT", default_value = "/opt/ml/models")]
    model_root: PathBuf,
    /// Folder that models from storage URIs and .tar.gz archives are
    /// downloaded and unpacked to (default: <temp>/kiln-models).
    #[arg(long, env = "KILN_MODEL_CACHE")]
    model_cache: Option<PathBuf>,
    /// Most rows answered by one forward pass.
    #[arg(long, env = "KILN_MAX_BATCH_SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_batch_size: u32,
    /// Longest a request waits for others to join its batch, milliseconds
    /// (0: batch only what is already queued).
    #[arg(long, env = "KILN_MAX_BATCH_DELAY_MS", default_value_t = 0.0)]
    max_batch_delay_ms: f64,
    /// Largest request body, bytes (SageMaker's limit: 6 MB).
    #[arg(long, env = "KILN_MAX_PAYLOAD_BYTES", default_value_t = 6 * 1024 * 1024)]
    max_payload_bytes: usize,
    /// `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    device: String,
    /// Bound on the loaded models' tensors, bytes (multi-model mode; least
    /// recently used models are unloaded past it). Default: half the memory.
    #[arg(long, env = "KILN_MODEL_MEMORY_BYTES")]
    model_memory_bytes: Option<u64>,
    /// Threads answering HTTP (default: one per CPU).
    #[arg(long, env = "KILN_HTTP_THREADS")]
    http_threads: Option<usize>,
}

/// Parses the command line; a transfer command's usage error also goes to
/// its termination message, where the operator reads why a container failed.
fn parse() -> Cli {
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let args: Vec<String> = std::env::args().collect();
    let transfer = matches!(
        args.get(1).map(String::as_str),
        Some("fetch" | "push" | "sync" | "inspect")
    );
    if transfer && e.use_stderr() {
        let flag = "--termination-message";
        let path = args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--termination-message=").map(String::from))
            })
            .or_else(|| std::env::var("KILN_TERMINATION_MESSAGE").ok())
            .unwrap_or_else(|| transfer::TERMINATION_LOG.to_string());
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        transfer::write_termination_message(
            Path::new(&path),
            first.strip_prefix("error: ").unwrap_or(first),
        );
    }
    e.exit()
}

fn main() -> ExitCode {
    let cli = parse();
    match cli.command {
        Command::Fetch(args) => {
            let options = fetch::Options {
                uri: args.uri,
                to: args.to,
                shard: args.shard,
                shuffle_seed: args.shuffle_seed,
                decompress: args.decompress,
                allow_empty: args.allow_empty,
            };
            let path = args.termination.termination_message;
            ExitCode::from(transfer::report(&path, || fetch::run(&options)))
        }
        Command::Push(args) => {
            let options = push::Options {
                from: args.from,
                to: args.to,
                compression: args.compression,
                kms_key_id: args.kms_key_id,
                termination_message: args.termination.termination_message.clone(),
                metrics: args.metrics,
            };
            let path = args.termination.termination_message;
            ExitCode::from(transfer::report(&path, || push::run(&options)))
        }
        Command::Sync(args) => {
            let options = sync::Options {
                dir: args.dir,
                to: args.to,
                interval: std::time::Duration::from_secs(args.interval_seconds),
                kms_key_id: args.kms_key_id,
            };
            let path = args.termination.termination_message;
            ExitCode::from(transfer::report(&path, || sync::run(&options)))
        }
        Command::Inspect(args) => {
            let options = inspect::Options {
                uri: args.uri,
                format: args.format,
                termination_message: args.termination.termination_message.clone(),
            };
            let path = args.termination.termination_message;
            ExitCode::from(transfer::report(&path, || inspect::run(&options)))
        }
        Command::Describe { algorithm } => match algo::find(&algorithm) {
            Ok(a) => {
                println!("{}", kiln_runtime::hyper::markdown_table(&a.specs()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let config = serve::Config {
                bind: std::net::SocketAddr::new(args.address, args.port),
                grpc_bind: (!args.no_grpc)
                    .then(|| std::net::SocketAddr::new(args.address, args.grpc_port)),
                model: args.model,
                model_name: args.model_name,
                multi_model: args.multi_model,
                model_root: args.model_root,
                model_cache: args
                    .model_cache
                    .unwrap_or_else(|| std::env::temp_dir().join("kiln-models")),
                batching: serve::worker::Batching {
                    max_batch: args.max_batch_size as usize,
                    max_delay: serve::millis(args.max_batch_delay_ms),
                },
                payload_limit: args.max_payload_bytes,
                device: args.device,
                memory_limit: args
                    .model_memory_bytes
                    .unwrap_or_else(serve::default_memory_limit),
                http_threads: args
                    .http_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            };
            ExitCode::from(serve::main(config) as u8)
        }
        Command::Train(args) => {
            let options = run::Options {
                algorithm: args.algorithm,
                ml_root: args.ml_root,
                checkpoint_dir: args.checkpoint_dir,
                device: args.device,
                rendezvous_timeout: std::time::Duration::from_secs(args.rendezvous_timeout),
            };
            ExitCode::from(run::main(options) as u8)
        }
    }
}
