//! Runs `kiln-runtime train` as a pod would: a temporary `/opt/ml`, config
//! files, channels, then the exit code, metrics, model and failure file.
#![allow(dead_code)]

pub mod s3;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// One training job in its own base directory.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub algorithm: String,
    pub hyper: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
}

/// What a finished job left behind.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub failure: Option<String>,
    pub metrics: BTreeMap<String, f64>,
}

impl Outcome {
    /// A metric of `metrics.json`, or a panic naming what the job printed.
    pub fn metric(&self, name: &str) -> f64 {
        *self
            .metrics
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name}: {self:#?}"))
    }

    /// The metric lines printed on stdout for `name`: (epoch, value).
    pub fn series(&self, name: &str) -> Vec<(Option<u64>, f64)> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kiln_metric"] == name)
            .map(|v| (v["epoch"].as_u64(), v["value"].as_f64().unwrap_or(f64::NAN)))
            .collect()
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "job failed: {self:#?}");
        self
    }
}

impl Job {
    pub fn new(algorithm: &str) -> Self {
        Job {
            dir: tempfile::tempdir().unwrap(),
            algorithm: algorithm.into(),
            hyper: BTreeMap::new(),
            env: vec![],
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn hp(mut self, name: &str, value: impl ToString) -> Self {
        self.hyper.insert(name.into(), value.to_string());
        self
    }

    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.into(), value.to_string()));
        self
    }

    /// Copies every file of `src` into the channel `name`.
    pub fn channel_from(self, name: &str, src: &Path) -> Self {
        let dst = self.root().join("input/data").join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
        self
    }

    /// Writes one file into the channel `name`.
    pub fn channel_file(self, name: &str, file: &str, text: &str) -> Self {
        let dst = self.root().join("input/data").join(name);
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(dst.join(file), text).unwrap();
        self
    }

    fn write_config(&self) {
        let config = self.root().join("input/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("hyperparameters.json"),
            serde_json::to_vec(&self.hyper).unwrap(),
        )
        .unwrap();
    }

    pub fn command(&self) -> Command {
        self.write_config();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-runtime"));
        cmd.args(["train", "--algorithm", &self.algorithm, "--device", "cpu"])
            .arg("--ml-root")
            .arg(self.root())
            .env_remove("WORLD_SIZE")
            .env_remove("RANK")
            .env_remove("SM_MODEL_DIR")
            // Jobs run side by side on few cores: one thread each avoids
            // OpenMP spinning against the other jobs.
            .env("OMP_NUM_THREADS", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    pub fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self) -> Outcome {
        let out = self.command().output().unwrap();
        self.outcome(out)
    }

    pub fn outcome(&self, out: Output) -> Outcome {
        let failure = std::fs::read_to_string(self.root().join("output/failure")).ok();
        let metrics = std::fs::read(self.root().join("output/metrics.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| {
                v["metrics"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, p)| (k.clone(), p["value"].as_f64().unwrap_or(f64::NAN)))
                    .collect()
            })
            .unwrap_or_default();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
            failure,
            metrics,
        }
    }

    /// The model's tensors by name.
    pub fn model(&self) -> BTreeMap<String, tch::Tensor> {
        kiln_runtime::artifact::read(&self.root().join("model"))
            .unwrap()
            .1
    }
}

/// The folder of the scikit-learn fixtures (`make fixtures` writes it).
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .expect("KILN_FIXTURES is not set: run the tests through `make test-unit`, which writes the fixtures");
    assert!(
        dir.join("baselines.json").exists(),
        "{} has no baselines.json",
        dir.display()
    );
    dir
}

/// The scikit-learn reference scores of one dataset.
pub fn baseline(dataset: &str) -> serde_json::Value {
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("baselines.json")).unwrap()).unwrap();
    b[dataset].clone()
}

/// Largest absolute difference between two models' tensors of the same names.
pub fn max_diff(a: &BTreeMap<String, tch::Tensor>, b: &BTreeMap<String, tch::Tensor>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, t)| (t - &b[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// A synthetic classification set: `rows` rows of `features` columns, label
/// = which of `classes` centers (spread along the axes) generated the row.
pub fn blobs(rows: usize, features: usize, classes: usize, seed: u64) -> String {
    let mut rng = kiln_runtime::sgd::SplitMix(seed);
    let mut out = String::new();
    for i in 0..rows {
        let c = i % classes;
        out.push_str(&c.to_string());
        for f in 0..features {
            let u = rng.next_u64() as f64 / u64::MAX as f64 - 0.5;
            let center = if f % classes == c { 2.0 } else { 0.0 };
            out.push_str(&format!(",{:.5}", center + u * 2.0));
        }
        out.push('\n');
    }
    out
}

/// A free loopback port for a server the test starts itself (a rendezvous,
/// a store), taken below the kernel's ephemeral range. A port the kernel
/// hands out for `bind(0)` would be released before the server binds it, and
/// in between a rank of another test's job can be handed the same port for
/// its ring listener; below the range only callers of this function pick
/// ports, and they take turns through a counter that starts at a
/// process-dependent offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000).max(1));
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = first + offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port as u16)).is_ok()
        {
            return port as u16;
        }
    }
    panic!("no free port between {first} and {low}")
}

/// Runs `world` ranks of the job `make()` builds (joined by the TCP ring on
/// loopback); returns every rank's job.
pub fn run_ranks(world: usize, make: &dyn Fn() -> Job) -> Vec<Job> {
    run_ranks_with_output(world, make).0
}

/// [`run_ranks`], with every rank's outcome.
pub fn run_ranks_with_output(world: usize, make: &dyn Fn() -> Job) -> (Vec<Job>, Vec<Outcome>) {
    let (jobs, outcomes) = launch_ranks(world, make);
    for out in &outcomes {
        out.assert_ok();
    }
    (jobs, outcomes)
}

/// Runs `world` ranks of the job `make()` builds and returns every rank's
/// job and outcome, whether the ranks succeeded or not.
pub fn launch_ranks(world: usize, make: &dyn Fn() -> Job) -> (Vec<Job>, Vec<Outcome>) {
    let port = free_port();
    let jobs: Vec<Job> = (0..world).map(|_| make()).collect();
    let children: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(rank, job)| {
            let mut cmd = job.command();
            cmd.env("WORLD_SIZE", world.to_string())
                .env("RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", "1");
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<Outcome> = jobs
        .iter()
        .zip(children)
        .map(|(job, child)| job.outcome(child.wait_with_output().unwrap()))
        .collect();
    (jobs, outcomes)
}

/// Marks `channel` of `job` as `ShardedByS3Key` in `inputdataconfig.json`:
/// the rank's folder holds only its shard.
pub fn sharded(job: Job, channel: &str) -> Job {
    let config = job.root().join("input/config");
    std::fs::create_dir_all(&config).unwrap();
    let entry = serde_json::json!({ channel: { "S3DistributionType": "ShardedByS3Key" } });
    std::fs::write(
        config.join("inputdataconfig.json"),
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    job
}

/// Starts rank `r` of `jobs.len()` ranks in `jobs[r]`'s base directory,
/// joined by the TCP ring on loopback at a fresh rendezvous port. A peer
/// that stops answering fails a rank after `KILN_COMM_TIMEOUT_SECONDS` (30
/// here) instead of the default 15 minutes.
pub fn spawn_ranks(jobs: &[Job]) -> Vec<Child> {
    let port = free_port();
    let world = jobs.len();
    jobs.iter()
        .enumerate()
        .map(|(rank, job)| {
            let mut cmd = job.command();
            cmd.env("WORLD_SIZE", world.to_string())
                .env("RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("KILN_COMM_TIMEOUT_SECONDS", "30")
                .env("OMP_NUM_THREADS", "1");
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Sends `signal` (`KILL`, `TERM`) to the process `pid`.
pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits for every rank started by [`spawn_ranks`] and returns their
/// outcomes; ranks still running after `timeout` are killed (by pid) and
/// the test fails: ranks out of step in the ring all-reduce hang.
pub fn wait_ranks(
    jobs: &[Job],
    children: Vec<Child>,
    timeout: std::time::Duration,
) -> Vec<Outcome> {
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for (rank, child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((rank, child.wait_with_output().unwrap()));
        });
    }
    drop(tx);
    let deadline = std::time::Instant::now() + timeout;
    let mut outputs: Vec<Option<Output>> = (0..jobs.len()).map(|_| None).collect();
    while outputs.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((rank, out)) => outputs[rank] = Some(out),
            Err(_) => {
                let running: Vec<usize> =
                    (0..jobs.len()).filter(|r| outputs[*r].is_none()).collect();
                for &r in &running {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pids[r].to_string()])
                        .status();
                }
                panic!(
                    "ranks {running:?} of {} still running after {timeout:?}: killed",
                    jobs.len()
                );
            }
        }
    }
    jobs.iter()
        .zip(outputs)
        .map(|(job, out)| job.outcome(out.expect("every rank ended")))
        .collect()
}

/// Runs `world` ranks, rank `r` in the job `make(r)` builds (its own
/// channel files: a shard), within `timeout`; every rank must succeed.
pub fn run_ranks_each(
    world: usize,
    make: &dyn Fn(usize) -> Job,
    timeout: std::time::Duration,
) -> (Vec<Job>, Vec<Outcome>) {
    let jobs: Vec<Job> = (0..world).map(make).collect();
    let children = spawn_ranks(&jobs);
    let outcomes = wait_ranks(&jobs, children, timeout);
    for out in &outcomes {
        out.assert_ok();
    }
    (jobs, outcomes)
}
