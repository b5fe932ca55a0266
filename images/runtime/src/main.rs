//! The `kiln-runtime` binary: `train` runs a built-in algorithm on the
//! SageMaker training contract; `describe` prints an algorithm's
//! hyperparameters.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_runtime::{algo, run};

#[derive(Parser, Debug)]
#[command(
    name = "kiln-runtime",
    version,
    about = "Kiln's runtime: built-in training algorithms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a built-in algorithm (the SageMaker container argument `train`).
    Train(TrainArgs),
    /// Print an algorithm's hyperparameters as a Markdown table.
    Describe {
        /// The algorithm, e.g. `kmeans`.
        algorithm: String,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
