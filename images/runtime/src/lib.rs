//! kiln-runtime: the code inside Kiln's pods. `train` runs a built-in
//! algorithm on the SageMaker training contract (see [`contract`]): it reads
//! channels ([`data`]), trains on CPU or CUDA with libtorch, all-reduces
//! between ranks ([`dist`]), checkpoints ([`checkpoint`]), reports metrics
//! ([`metrics`]) and writes a model artifact ([`artifact`]). `serve`
//! ([`serve`]) answers predictions from those artifacts over HTTP. `fetch`,
//! `push` and `sync` ([`transfer`]) move channels, models and checkpoints
//! between the pod and its object store.

pub mod algo;
pub mod artifact;
pub mod checkpoint;
pub mod contract;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod hyper;
pub mod layout;
pub mod metrics;
pub mod optim;
pub mod par;
pub mod run;
pub mod serve;
pub mod sgd;
pub mod storage;
pub mod transfer;

pub use error::{Error, Result};
