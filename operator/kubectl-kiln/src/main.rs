//! `kubectl kiln`: Kiln's kubectl plugin. Install the binary as
//! `kubectl-kiln` on the PATH; kubectl finds it.
//!
//! `kubectl kiln graph PIPELINE [RUN] [--dot]` prints a pipeline run's step
//! graph: each step by layer with its kind, state and child, then the edges
//! (condition branches labelled). Without RUN it shows the newest run of the
//! pipeline, or the pipeline alone when it has none.

mod graph;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kiln_api::pipeline::Pipeline;
use kiln_api::pipeline_run::PipelineRun;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

#[derive(Parser)]
#[command(name = "kubectl kiln", about = "Kiln's kubectl plugin")]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A pipeline run's step graph, in the terminal or as Graphviz DOT.
    Graph {
        /// The Pipeline.
        pipeline: String,
        /// The PipelineRun (default: the pipeline's newest).
        run: Option<String>,
        /// Print Graphviz DOT (`| dot -Tsvg > run.svg`).
        #[arg(long)]
        dot: bool,
    },
}

async fn client(cli: &Cli) -> Result<(Client, String)> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let (client, namespace) = client(&cli).await?;
    match &cli.command {
        Command::Graph { pipeline, run, dot } => {
            let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &namespace);
            let runs: Api<PipelineRun> = Api::namespaced(client, &namespace);
            let p = pipelines
                .get_opt(pipeline)
                .await?
                .with_context(|| format!("no Pipeline {pipeline} in namespace {namespace}"))?;
            let run =
                match run {
                    Some(name) => Some(runs.get_opt(name).await?.with_context(|| {
                        format!("no PipelineRun {name} in namespace {namespace}")
                    })?),
                    None => runs
                        .list(&ListParams::default())
                        .await?
                        .items
                        .into_iter()
                        .filter(|r| r.spec.pipeline_ref.name == *pipeline)
                        .max_by_key(|r| {
                            r.metadata
                                .creation_timestamp
                                .as_ref()
                                .map(|t| t.0.as_second())
                        }),
                };
            if let Some(r) = &run
                && r.spec.pipeline_ref.name != *pipeline
            {
                bail!(
                    "PipelineRun {} runs Pipeline {}, not {pipeline}",
                    r.name_any(),
                    r.spec.pipeline_ref.name
                );
            }
            let status = run.as_ref().and_then(|r| r.status.clone());
            // A run shows the spec it copied when it started.
            let spec = status
                .as_ref()
                .and_then(|s| s.pipeline_spec.clone())
                .unwrap_or_else(|| p.spec.clone());
            let (nodes, edges) =
                graph::build(&spec, status.as_ref()).map_err(anyhow::Error::msg)?;
            let title = match (&run, &status) {
                (Some(r), Some(s)) => format!(
                    "PIPELINE {pipeline}  RUN {} ({})",
                    r.name_any(),
                    s.state
                        .map(|x| format!("{x:?}"))
                        .unwrap_or_else(|| "Pending".into())
                ),
                (Some(r), None) => format!("PIPELINE {pipeline}  RUN {} (Pending)", r.name_any()),
                _ => format!("PIPELINE {pipeline}  (no run yet)"),
            };
            let out = if *dot {
                graph::dot(&title, &nodes, &edges)
            } else {
                graph::text(&title, &nodes, &edges)
            };
            print!("{out}");
        }
    }
    Ok(())
}
