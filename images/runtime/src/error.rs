//! The one error type of the trainer. Every variant's message is written to
//! `/opt/ml/output/failure` as it is, so each says what was wrong and where.

use std::path::PathBuf;

/// What went wrong during a training run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyperparameter that is unknown, of the wrong type or out of range.
    #[error("hyperparameter {name}: {reason}")]
    Hyperparameter { name: String, reason: String },
    /// A configuration file under `input/config/` that cannot be used.
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// Bad input data: the message names the channel, file and line or row.
    #[error("channel {channel}: {reason}")]
    Data { channel: String, reason: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The rendezvous or a ring all-reduce between ranks failed.
    #[error("distributed training: {0}")]
    Distributed(String),
    /// A checkpoint that cannot be written or read back.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The run was stopped by SIGTERM after writing a checkpoint.
    #[error("stopped by SIGTERM after writing a checkpoint at step {step}")]
    Terminated { step: u64 },
    /// The algorithm cannot go on (e.g. a diverged loss).
    #[error("{0}")]
    Algorithm(String),
}

/// Result with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error: 2 for bad input (config,
    /// hyperparameters, data), 143 for SIGTERM, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Hyperparameter { .. } | Error::Config { .. } | Error::Data { .. } => 2,
            Error::Terminated { .. } => 143,
            _ => 1,
        }
    }

    /// Shorthand for a data error.
    pub fn data(channel: &str, reason: impl Into<String>) -> Self {
        Error::Data {
            channel: channel.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for a hyperparameter error.
    pub fn hyper(name: &str, reason: impl Into<String>) -> Self {
        Error::Hyperparameter {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
