//! The cluster under test: started (or reused) once per test process through
//! `e2e/cluster.sh up`, which is idempotent and fast when the cluster runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A node of the cluster config, as `cluster.sh nodes` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub pool: String,
    pub ip: String,
    pub gpus: u32,
}

/// Where the cluster is and what it is made of.
#[derive(Debug)]
pub struct Cluster {
    pub repo: PathBuf,
    pub kubeconfig: PathBuf,
    pub nodes: Vec<Node>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// Serializes the tests that need the spot pool whole (scheduling onto it,
/// reclaiming it).
pub static SPOT_POOL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// The cluster, brought up on first use. `KILN_E2E_NO_UP=1` skips
    /// `cluster.sh up` and only reads the kubeconfig (for a cluster known to run).
    pub fn get() -> Result<&'static Cluster> {
        CLUSTER
            .get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the cluster could not be brought up: {e}"))
    }

    fn start() -> Result<Cluster> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("e2e/ has no parent")?
            .to_path_buf();
        let script = repo.join("e2e/cluster.sh");
        if std::env::var("KILN_E2E_NO_UP").as_deref() != Ok("1") {
            let status = Command::new(&script)
                .arg("up")
                .status()
                .context("running e2e/cluster.sh up")?;
            if !status.success() {
                bail!("e2e/cluster.sh up failed ({status})");
            }
        }
        let kubeconfig = PathBuf::from(script_output(&script, &["kubeconfig"])?.trim());
        let nodes = script_output(&script, &["nodes"])?
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() == 5).then(|| Node {
                    name: f[0].to_string(),
                    pool: f[1].to_string(),
                    ip: f[3].to_string(),
                    gpus: f[4].parse().unwrap_or(0),
                })
            })
            .collect();
        Ok(Cluster {
            repo,
            kubeconfig,
            nodes,
        })
    }

    /// A new client. Each test makes its own: a client belongs to the tokio
    /// runtime that made it, and every `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// The configured nodes of one pool.
    pub fn pool(&self, pool: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.pool == pool).collect()
    }

    /// Runs `e2e/cluster.sh ARGS...` and returns its stdout.
    pub fn script(&self, args: &[&str]) -> Result<String> {
        script_output(&self.repo.join("e2e/cluster.sh"), args)
    }

    /// Runs kubectl (the cluster's own build) as the admin; fails with its
    /// stderr when it exits non-zero.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl and returns its whole output, whatever its exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        let kubectl = kubectl_path(&self.repo)?;
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .context("running kubectl")
    }

    /// Simulates a spot reclaim of NODE: its container and its Node object go,
    /// and so do its pods. Until the returned guard is dropped, no other
    /// `cluster.sh` command (another test run's `up`, say) changes the
    /// cluster, so the node stays away until [`Reclaimed::restore`].
    pub fn reclaim(&self, node: &str) -> Result<Reclaimed<'_>> {
        let lock_path = self
            .kubeconfig
            .parent()
            .context("kubeconfig has no folder")?
            .join("lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let reclaimed = Reclaimed {
            cluster: self,
            _lock: lock,
        };
        reclaimed.script(&["reclaim", node])?;
        Ok(reclaimed)
    }
}

/// A reclaimed node, and the cluster lock held until it is back.
pub struct Reclaimed<'a> {
    cluster: &'a Cluster,
    _lock: std::fs::File,
}

impl Reclaimed<'_> {
    fn script(&self, args: &[&str]) -> Result<String> {
        let script = self.cluster.repo.join("e2e/cluster.sh");
        script_output_with(&script, args, &[("KILN_CLUSTER_LOCKED", "1")])
    }

    /// Brings every configured node back (`cluster.sh up`), then lets go of
    /// the cluster lock.
    pub fn restore(self) -> Result<()> {
        self.script(&["up"]).map(drop)
    }
}

fn script_output(script: &Path, args: &[&str]) -> Result<String> {
    script_output_with(script, args, &[])
}

/// Runs `script` with `args` and extra environment variables; its stdout, or
/// an error naming the command when it fails.
fn script_output_with(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new(script)
        .args(args)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({})",
            script.display(),
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_path(repo: &Path) -> Result<PathBuf> {
    static KUBECTL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KUBECTL
        .get_or_init(|| {
            let dir = script_output(&repo.join("e2e/tools/kubernetes.sh"), &[])
                .map_err(|e| format!("{e:#}"))?;
            Ok(PathBuf::from(dir.trim()).join("kubectl"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}
