//! Moving data between a training pod and its object store, as the operator
//! lays the pod out: `fetch` (an init container per remote channel, and one
//! that restores checkpoints), `push` (the main container, after training:
//! the model folder to the output URI as `model.tar.gz`) and `sync` (the
//! checkpoint sidecar); and `inspect`, which reads a model artifact for the
//! operator's check of a ModelPackage. Every store call goes through
//! [`crate::storage`].
//!
//! Each command ends in one of three ways: success (exit 0); a failure
//! whose fix is in the job's spec, such as a wrong URI, no data or an empty
//! model folder (exit 2); or any other failure, such as the store or the
//! network (exit 1). `inspect` tells one more: nothing at the URI (exit 3).
//! A failure's message says what to fix, goes to stderr and to the
//! termination message file, and never holds credentials.

pub mod fetch;
pub mod inspect;
pub mod push;
pub mod sync;

use std::path::Path;

use crate::storage::{self, StorageError};

/// Where Kubernetes reads a container's termination message by default.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The most of a termination message Kubernetes keeps.
const TERMINATION_LIMIT: usize = 4096;

/// A command that failed: the message and the exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// 2: fix the job's spec (URI, data, model folder); 1: anything else.
    pub code: u8,
}

impl Failure {
    /// A failure the job's spec must fix (exit code 2).
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    /// Any other failure (exit code 1).
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure::other(e.0)
    }
}

/// The result of a command.
pub type Outcome<T = ()> = std::result::Result<T, Failure>;

/// Writes `text` as the termination message at `path` (at most the 4 KiB
/// Kubernetes keeps); a path that cannot be written is skipped silently,
/// as outside a pod `/dev/termination-log` usually cannot be.
pub fn write_termination_message(path: &Path, text: &str) {
    let _ = std::fs::write(path, clip(text, TERMINATION_LIMIT - 1) + "\n");
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn clip(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Checks that `uri` (given as `--flag`) is an object-store URI: `file://`
/// and `pvc://` locations are mounted into the pod by the operator, so
/// nothing is copied for them.
pub fn remote_uri(command: &str, flag: &str, uri: &str) -> Outcome {
    if storage::is_remote(uri) {
        return Ok(());
    }
    let scheme = uri.split_once("://").map(|(s, _)| s);
    Err(Failure::input(match scheme {
        Some(s @ ("file" | "pvc")) => format!(
            "{flag} {uri}: {s}:// locations are mounted into the pod by the operator, not copied; \
             `kiln-runtime {command}` takes s3://, gs:// or az:// URIs"
        ),
        _ => format!(
            "{flag} {uri}: not a storage URI; write s3://bucket/prefix, gs://bucket/prefix or \
             az://container/prefix"
        ),
    }))
}

/// Runs `command`, and on failure prints its message and writes it as the
/// termination message; an internal panic is reported the same way. Returns
/// the exit code.
pub fn report(termination_message: &Path, command: impl FnOnce() -> Outcome) -> u8 {
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown");
            Err(Failure::other(format!("internal error: {what}")))
        });
    match outcome {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{}", failure.message);
            write_termination_message(termination_message, &failure.message);
            failure.code
        }
    }
}

/// `1 object`, `2 objects`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Bytes for people: `12.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_unknown_uris_are_refused_with_the_fix() {
        assert!(remote_uri("fetch", "--uri", "s3://b/p").is_ok());
        assert!(remote_uri("fetch", "--uri", "gs://b").is_ok());
        let e = remote_uri("fetch", "--uri", "pvc://claim/data").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .contains("pvc:// locations are mounted into the pod by the operator"),
            "{}",
            e.message
        );
        let e = remote_uri("push", "--to", "file:///opt/out").unwrap_err();
        assert!(
            e.message.contains("`kiln-runtime push` takes s3://"),
            "{}",
            e.message
        );
        let e = remote_uri("fetch", "--uri", "/data/train").unwrap_err();
        assert!(e.message.contains("not a storage URI"), "{}", e.message);
    }

    #[test]
    fn termination_messages_are_clipped_and_unwritable_paths_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msg");
        write_termination_message(&path, &"é".repeat(3000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= TERMINATION_LIMIT, "{}", text.len());
        assert!(text.ends_with("é\n"));
        write_termination_message(&dir.path().join("no/such/dir/msg"), "x");
    }

    #[test]
    fn report_writes_failures_and_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msg");
        assert_eq!(report(&path, || Ok(())), 0);
        assert!(!path.exists());
        assert_eq!(report(&path, || Err(Failure::input("fix the URI"))), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fix the URI\n");
        assert_eq!(report(&path, || panic!("boom")), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "internal error: boom\n"
        );
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 << 20), "10.0 MiB");
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
    }
}
