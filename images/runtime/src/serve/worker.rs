//! One OS thread per loaded model: it loads the artifact, owns the tensors,
//! and answers requests in dynamic batches. Handlers send plain rows over a
//! channel with a oneshot for the reply; the worker takes what is queued
//! (waiting at most `max_delay` for more, up to `max_batch` rows), runs one
//! forward pass and splits the predictions back to each request.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use prometheus::Histogram;
use tch::Device;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::model::{Model, ModelInfo, PlainModel};
use super::predictions::{Input, Predictions};

/// How requests are grouped.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most rows of one forward pass (a larger request runs alone).
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch.
    pub max_delay: Duration,
}

/// Why a request got no predictions.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerError {
    /// The model's worker stopped (unloaded while the request waited).
    Gone,
    /// The forward pass failed; the message is for the log, not the client.
    Failed(String),
}

type Reply = oneshot::Sender<Result<Predictions, WorkerError>>;

struct Job {
    input: Input,
    reply: Reply,
}

/// The handlers' side of a worker: cloneable, `Send + Sync`. The worker
/// stops once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct Worker {
    pub info: ModelInfo,
    jobs: Sender<Job>,
    /// With no batching delay, a plain-data model answered on the caller's
    /// thread (see [`PlainModel`]).
    inline: Option<Arc<PlainModel>>,
    batch_size: Histogram,
}

impl Worker {
    /// Starts the worker thread of model `name`, which loads `dir`; returns
    /// once the model is loaded (or failed to).
    pub async fn start(
        name: String,
        dir: PathBuf,
        device: Device,
        batching: Batching,
        metrics: Metrics,
    ) -> Result<Worker, String> {
        let batch_size = metrics.batch_size(&name);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread_name = format!("model-{}", name.chars().take(8).collect::<String>());
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let started = Instant::now();
                let loaded =
                    std::panic::catch_unwind(AssertUnwindSafe(|| Model::load(&dir, device)))
                        .unwrap_or_else(|_| Err("loading the model panicked".into()));
                let model = match loaded {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                metrics.model_loaded(&name, started.elapsed());
                let inline = if batching.max_delay.is_zero() {
                    model.plain()
                } else {
                    None
                };
                if ready_tx.send(Ok((model.info.clone(), inline))).is_err() {
                    return;
                }
                serve(&model, &rx, batching, &metrics, &name);
                tracing::info!(model = %name, "model worker stopped");
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        let (info, inline) = ready_rx
            .await
            .map_err(|_| "the model worker stopped while loading".to_string())??;
        Ok(Worker {
            info,
            jobs,
            inline: inline.map(Arc::new),
            batch_size,
        })
    }

    /// Predictions for `input`, from the next batch.
    pub async fn predict(&self, input: Input) -> Result<Predictions, WorkerError> {
        if let Some(plain) = &self.inline {
            self.batch_size.observe(1.0);
            let p = plain.predict(&input);
            return if p.rows == input.rows() && p.is_consistent() {
                Ok(p)
            } else {
                Err(WorkerError::Failed("inconsistent predictions".into()))
            };
        }
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { input, reply })
            .map_err(|_| WorkerError::Gone)?;
        rx.await.map_err(|_| WorkerError::Gone)?
    }
}

/// The worker loop: until every sender is gone, gather a batch and run it.
fn serve(model: &Model, rx: &Receiver<Job>, batching: Batching, metrics: &Metrics, name: &str) {
    let histogram = metrics.batch_size(name);
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut rows = first.input.rows();
        let mut batch = vec![first];
        let deadline = Instant::now() + batching.max_delay;
        while rows < batching.max_batch {
            let next = match rx.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let n = next.input.rows();
            if rows + n > batching.max_batch {
                carry = Some(next);
                break;
            }
            rows += n;
            batch.push(next);
        }
        histogram.observe(batch.len() as f64);
        run(model, batch);
    }
}

/// One forward pass over the batch's rows, its predictions split back.
fn run(model: &Model, mut batch: Vec<Job>) {
    if batch.len() == 1 {
        let job = batch.pop().expect("one job");
        let result = predict_checked(model, &job.input);
        let _ = job.reply.send(result);
        return;
    }
    let counts: Vec<usize> = batch.iter().map(|j| j.input.rows()).collect();
    let mut replies = Vec::with_capacity(batch.len());
    let mut joined: Option<Input> = None;
    for job in batch {
        replies.push(job.reply);
        match &mut joined {
            None => joined = Some(job.input),
            Some(all) => all.extend(job.input),
        }
    }
    let Some(joined) = joined else { return };
    match predict_checked(model, &joined) {
        Ok(p) => {
            let mut start = 0;
            for (reply, n) in replies.into_iter().zip(counts) {
                let _ = reply.send(Ok(p.slice(start, n)));
                start += n;
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// A forward pass that turns a libtorch panic into an error.
fn predict_checked(model: &Model, input: &Input) -> Result<Predictions, WorkerError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| model.predict(input))) {
        Ok(p) if p.rows == input.rows() && p.is_consistent() => Ok(p),
        Ok(p) => Err(WorkerError::Failed(format!(
            "the model predicted {} rows of {} values for {} rows",
            p.rows,
            p.values.len(),
            input.rows()
        ))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the forward pass panicked".into());
            Err(WorkerError::Failed(msg))
        }
    }
}
