//! `kiln-runtime inspect`: what a model artifact is, as the operator's check
//! of a ModelPackage runs it: the artifact's SHA-256, its size, and the
//! algorithm its `model.json` names, as one JSON line on stdout and in the
//! termination message, which the operator reads instead of the store.
//!
//! The artifact is streamed, never written to disk: a `.tar.gz` (or `.tgz`)
//! object is hashed while its entries go past, a prefix ("folder") object by
//! object. The digest is the one `kiln-runtime push` reports for the same
//! model:
//!
//! - one object (a `.tar.gz`, or with `--format any` any file): the SHA-256
//!   of its bytes;
//! - a prefix: the SHA-256 of its `sha256sum` manifest, a line
//!   `<hex>  <relative key>\n` per object, sorted by key (hidden names and
//!   folder markers are skipped, as every listing of Kiln's skips them).
//!
//! `model.json` is looked for at the artifact's root and in its `model/`
//! folder (a training job's output layout), where `kiln-runtime serve`
//! looks. With `--format kiln` (the default) it must be there and read as
//! a JSON object (of `format` `kiln-model` when it says); with `--format
//! any` (a model served by your own image) it is read when present.
//!
//! Exit codes: 0 with the report; 3 when nothing is at the URI; 2 when
//! something is there that is no usable artifact; 1 for anything else (the
//! store, the network, credentials), which trying again may fix.
//! `file://` URIs and plain paths (a folder or a `.tar.gz`) are read from
//! the pod's own filesystem: the operator mounts a `pvc://` artifact so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::push::manifest_digest;
use super::{Failure, Outcome, count, human_bytes, write_termination_message};
use crate::storage::{self, CONCURRENCY, Failed, Object, Remote, StorageError};

/// What the artifact must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Kiln model: `model.json` (and its tensors) at the root or in `model/`.
    Kiln,
    /// Anything (a model for your own serving image); `model.json` is read
    /// when present.
    Any,
}

/// The settings of one inspection.
#[derive(Debug, Clone)]
pub struct Options {
    pub uri: String,
    pub format: Format,
    pub termination_message: PathBuf,
}

/// How the artifact is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// One `.tar.gz` object.
    Archive,
    /// Every object under a prefix.
    Prefix,
    /// One object that is no archive.
    Object,
}

impl Layout {
    /// The layout in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Archive => "archive",
            Layout::Prefix => "prefix",
            Layout::Object => "object",
        }
    }
}

/// What was found: the termination message of a successful inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The URI inspected.
    pub uri: String,
    pub layout: Layout,
    /// The SHA-256, lowercase hex (see the module's documentation).
    pub sha256: String,
    /// Bytes read: the object's size, or the objects' total.
    pub size: u64,
    /// Objects read.
    pub objects: usize,
    /// The `algorithm` of `model.json`, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Where `model.json` was, relative to the artifact's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_json: Option<String>,
}

/// The exit code of "nothing at the URI".
pub const NOT_FOUND: u8 = 3;

/// The largest `model.json` read (the tensors are elsewhere; a bigger one is
/// no Kiln model).
const MODEL_JSON_LIMIT: u64 = 16 << 20;

/// Where `model.json` may be, in the order looked at.
const MODEL_JSON_NAMES: [&str; 2] = ["model.json", "model/model.json"];

fn not_found(message: String) -> Failure {
    Failure {
        message,
        code: NOT_FOUND,
    }
}

/// Runs an inspection; prints the report's JSON line and writes it as the
/// termination message.
pub fn run(options: &Options) -> Outcome {
    let start = Instant::now();
    let found = if storage::is_remote(&options.uri) {
        inspect_remote(&options.uri)?
    } else {
        inspect_local(&options.uri)?
    };
    let report = finish(&options.uri, options.format, found)?;
    eprintln!(
        "inspect: {} ({}, {}) at {}: sha256 {}{} in {:.1} s",
        count(report.objects, "object"),
        report.layout.as_str(),
        human_bytes(report.size),
        report.uri,
        report.sha256,
        report
            .algorithm
            .as_ref()
            .map(|a| format!(", algorithm {a}"))
            .unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    let line = serde_json::to_string(&report).expect("the report serializes");
    println!("{line}");
    write_termination_message(&options.termination_message, &line);
    Ok(())
}

/// What reading the artifact gave, before `model.json` is judged.
#[derive(Debug, Default)]
struct Found {
    layout: Option<Layout>,
    sha256: String,
    size: u64,
    objects: usize,
    /// (relative name, contents) of the `model.json` found, root first.
    model_json: Option<(String, Vec<u8>)>,
}

/// The report of what was found, or why it is no usable artifact.
fn finish(uri: &str, format: Format, found: Found) -> Outcome<Report> {
    let layout = found.layout.unwrap_or(Layout::Object);
    let (model_json, algorithm) = match found.model_json {
        Some((name, bytes)) => {
            let algorithm = read_model_json(&bytes)
                .map_err(|why| Failure::input(format!("{uri}: {name}: {why}")))?;
            (Some(name), algorithm)
        }
        None if format == Format::Kiln => {
            return Err(Failure::input(match layout {
                Layout::Object => format!(
                    "{uri}: one object that is not a .tar.gz: a Kiln model is a model.tar.gz or \
                     a prefix holding model.json (a model for your own image: set \
                     inference.image, which checks it with --format any)"
                ),
                _ => format!(
                    "{uri}: no model.json at the artifact's root or in its model/ folder: this \
                     is no Kiln model (one from your own image: set inference.image)"
                ),
            }));
        }
        None => (None, None),
    };
    Ok(Report {
        uri: uri.to_string(),
        layout,
        sha256: found.sha256,
        size: found.size,
        objects: found.objects,
        algorithm,
        model_json,
    })
}

/// The algorithm a `model.json` names, or why it cannot be read.
pub fn read_model_json(bytes: &[u8]) -> Result<Option<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not readable as JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_string())?;
    if let Some(format) = object.get("format")
        && format.as_str() != Some("kiln-model")
    {
        return Err(format!("format {format} is not \"kiln-model\""));
    }
    Ok(object
        .get("algorithm")
        .and_then(|a| a.as_str())
        .map(str::to_string))
}

/// The name of an archive entry or a relative key without `./` in front.
fn clean_name(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.trim_start_matches('/')
}

/// The rank of `name` among the places `model.json` may be (lower first).
fn model_json_rank(name: &str) -> Option<usize> {
    let name = clean_name(name);
    MODEL_JSON_NAMES.iter().position(|n| *n == name)
}

/// Keeps `candidate` as the `model.json` found when it ranks before the
/// one found so far.
fn keep_model_json(found: &mut Option<(String, Vec<u8>)>, name: &str, bytes: Vec<u8>) {
    let rank = model_json_rank(name);
    let current = found.as_ref().and_then(|(n, _)| model_json_rank(n));
    if rank.is_some() && (current.is_none() || rank < current) {
        *found = Some((clean_name(name).to_string(), bytes));
    }
}

/// A [`Read`] that hashes and counts what goes through it and remembers
/// whether its source failed (the store), as opposed to what reads it
/// (the archive's format).
struct Hashing<R> {
    inner: R,
    digest: ring::digest::Context,
    bytes: u64,
    source_error: Option<String>,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
            source_error: None,
        }
    }

    /// Reads the rest (an archive's padding after its last entry) and
    /// returns the bytes and their SHA-256.
    fn finish(mut self) -> std::io::Result<(u64, String)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.bytes, storage::hex(self.digest.finish().as_ref())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.digest.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.source_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// Reads a `.tar.gz` from `source` to its end: its digest, its size and
/// its `model.json`. A failure of `source` is the store's (exit 1); any
/// other is the archive's (exit 2).
fn read_archive<R: Read>(uri: &str, source: R) -> Outcome<Found> {
    let mut hashing = Hashing::new(source);
    let mut model_json = None;
    let scanned = scan_archive(&mut hashing, &mut model_json);
    if let Some(e) = hashing.source_error.take() {
        return Err(Failure::other(format!("{uri}: reading it failed: {e}")));
    }
    scanned.map_err(|e| Failure::input(format!("{uri}: not a usable .tar.gz: {e}")))?;
    let (size, sha256) = hashing
        .finish()
        .map_err(|e| Failure::other(format!("{uri}: reading it failed: {e}")))?;
    Ok(Found {
        layout: Some(Layout::Archive),
        sha256,
        size,
        objects: 1,
        model_json,
    })
}

fn scan_archive<R: Read>(
    source: &mut Hashing<R>,
    model_json: &mut Option<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut gz = flate2::read::GzDecoder::new(source);
    {
        let mut tar = tar::Archive::new(&mut gz);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if entry.header().entry_type().is_file() && model_json_rank(&name).is_some() {
                if entry.size() > MODEL_JSON_LIMIT {
                    return Err(std::io::Error::other(format!(
                        "{name} is over the {MODEL_JSON_LIMIT} bytes of a model.json"
                    )));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                keep_model_json(model_json, &name, bytes);
            }
        }
    }
    // The gzip trailer (its CRC and length) is checked by reading to the end.
    std::io::copy(&mut gz, &mut std::io::sink())?;
    Ok(())
}

/// An artifact in an object store.
fn inspect_remote(uri: &str) -> Outcome<Found> {
    let remote = Remote::open(uri).map_err(|e| Failure::input(e.0))?;
    let objects = storage::block_on(remote.list_objects())?;
    if objects.is_empty() {
        return Err(not_found(format!(
            "{uri}: nothing there: no object of that key and none under it as a prefix (hidden \
             names and folder markers are skipped); check the URI"
        )));
    }
    if let [object] = objects.as_slice()
        && remote.names_object(object)
    {
        if storage::is_tarball(&object.relative) {
            return read_archive(uri, remote.reader(&object.key));
        }
        let (size, sha256) = Hashing::new(remote.reader(&object.key))
            .finish()
            .map_err(|e| Failure::other(format!("{uri}: reading it failed: {e}")))?;
        return Ok(Found {
            layout: Some(Layout::Object),
            sha256,
            size,
            objects: 1,
            model_json: None,
        });
    }
    storage::block_on(read_prefix(&remote, &objects))
}

/// Every object under a prefix, [`CONCURRENCY`] at once.
async fn read_prefix(remote: &Remote, objects: &[Object]) -> Outcome<Found> {
    if let Some(big) = objects
        .iter()
        .find(|o| model_json_rank(&o.relative).is_some() && o.size > MODEL_JSON_LIMIT)
    {
        return Err(Failure::input(format!(
            "{}: {} bytes, over the {MODEL_JSON_LIMIT} of a model.json",
            big.uri, big.size
        )));
    }
    let model_json = Arc::new(Mutex::new(None));
    let mut hashes: Vec<(String, u64, String)> = futures::stream::iter(objects)
        .map(|object| {
            let model_json = model_json.clone();
            async move {
                let keep = model_json_rank(&object.relative).is_some();
                let (size, sha256, bytes) =
                    storage::with_retries(|| hash_object(remote, object, keep)).await?;
                if let Some(bytes) = bytes {
                    keep_model_json(&mut model_json.lock().unwrap(), &object.relative, bytes);
                }
                Ok::<_, StorageError>((object.relative.clone(), size, sha256))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    hashes.sort_by(|a, b| a.0.cmp(&b.0));
    let found = Found {
        layout: Some(Layout::Prefix),
        sha256: manifest_digest(hashes.iter().map(|(n, _, h)| (n.as_str(), h.as_str()))),
        size: hashes.iter().map(|(_, s, _)| s).sum(),
        objects: hashes.len(),
        model_json: model_json.lock().unwrap().take(),
    };
    Ok(found)
}

/// One object's size and SHA-256, streamed; its bytes too when `keep`.
async fn hash_object(
    remote: &Remote,
    object: &Object,
    keep: bool,
) -> Result<(u64, String, Option<Vec<u8>>), Failed> {
    let (store, path) = remote.object(&object.key);
    let failed = |e: object_store::Error| Failed {
        transient: !matches!(e, object_store::Error::NotFound { .. }),
        error: remote.err(&e),
    };
    let mut stream = store.get(&path).await.map_err(failed)?.into_stream();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0;
    let mut bytes = keep.then(Vec::new);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        digest.update(&chunk);
        size += chunk.len() as u64;
        if let Some(bytes) = &mut bytes {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok((size, storage::hex(digest.finish().as_ref()), bytes))
}

/// An artifact on the pod's own filesystem: `file:///path` or a path.
fn inspect_local(uri: &str) -> Outcome<Found> {
    let path = match uri.split_once("://") {
        Some(("file", rest)) => PathBuf::from(rest),
        Some((scheme, _)) => {
            return Err(Failure::input(format!(
                "{uri}: {scheme}:// is not read here; use s3://, gs://, az://, file:// or a path \
                 (the operator mounts a pvc:// artifact and passes its file:// path)"
            )));
        }
        None => PathBuf::from(uri),
    };
    let io = |p: &Path, e: std::io::Error| Failure::other(format!("{}: {e}", p.display()));
    if !path.exists() {
        return Err(not_found(format!(
            "{uri}: nothing there: no such file or folder"
        )));
    }
    if path.is_file() {
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        if storage::is_tarball(&path.to_string_lossy()) {
            return read_archive(uri, std::io::BufReader::new(file));
        }
        let (size, sha256) = Hashing::new(file).finish().map_err(|e| io(&path, e))?;
        return Ok(Found {
            layout: Some(Layout::Object),
            sha256,
            size,
            objects: 1,
            model_json: None,
        });
    }
    let mut hashes = Vec::new();
    let mut model_json = None;
    for entry in walkdir::WalkDir::new(&path)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| Failure::other(format!("{uri}: {e}")))?;
        let relative = storage::relative_name(&path, entry.path());
        if !entry.file_type().is_file() || relative.split('/').any(|p| p.starts_with('.')) {
            continue;
        }
        let file = std::fs::File::open(entry.path()).map_err(|e| io(entry.path(), e))?;
        let (size, sha256) = if model_json_rank(&relative).is_some() {
            let mut bytes = Vec::new();
            file.take(MODEL_JSON_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| io(entry.path(), e))?;
            if bytes.len() as u64 > MODEL_JSON_LIMIT {
                return Err(Failure::input(format!(
                    "{}: over the {MODEL_JSON_LIMIT} bytes of a model.json",
                    entry.path().display()
                )));
            }
            let sha256 = storage::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
            let size = bytes.len() as u64;
            keep_model_json(&mut model_json, &relative, bytes);
            (size, sha256)
        } else {
            Hashing::new(file)
                .finish()
                .map_err(|e| io(entry.path(), e))?
        };
        hashes.push((relative, size, sha256));
    }
    if hashes.is_empty() {
        return Err(not_found(format!(
            "{uri}: nothing there: the folder holds no file"
        )));
    }
    hashes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Found {
        layout: Some(Layout::Prefix),
        sha256: manifest_digest(hashes.iter().map(|(n, _, h)| (n.as_str(), h.as_str()))),
        size: hashes.iter().map(|(_, s, _)| s).sum(),
        objects: hashes.len(),
        model_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_json_is_read_at_the_root_first_then_in_model() {
        assert_eq!(model_json_rank("model.json"), Some(0));
        assert_eq!(model_json_rank("./model.json"), Some(0));
        assert_eq!(model_json_rank("model/model.json"), Some(1));
        assert_eq!(model_json_rank("./model/model.json"), Some(1));
        assert_eq!(model_json_rank("code/model.json"), None);
        assert_eq!(model_json_rank("model.json.bak"), None);
        let mut found = None;
        keep_model_json(&mut found, "model/model.json", b"b".to_vec());
        keep_model_json(&mut found, "./model.json", b"a".to_vec());
        keep_model_json(&mut found, "model/model.json", b"c".to_vec());
        assert_eq!(found, Some(("model.json".into(), b"a".to_vec())));
    }

    #[test]
    fn model_json_names_its_algorithm_or_says_why_not() {
        assert_eq!(
            read_model_json(br#"{"format": "kiln-model", "algorithm": "kmeans"}"#),
            Ok(Some("kmeans".into()))
        );
        assert_eq!(read_model_json(br#"{"framework": "onnx"}"#), Ok(None));
        assert!(
            read_model_json(b"{nope")
                .unwrap_err()
                .contains("not readable as JSON")
        );
        assert_eq!(read_model_json(b"[1]").unwrap_err(), "not a JSON object");
        assert!(
            read_model_json(br#"{"format": "onnx"}"#)
                .unwrap_err()
                .contains("is not \"kiln-model\"")
        );
    }

    #[test]
    fn a_kiln_model_needs_model_json_and_any_format_does_not() {
        let found = || Found {
            layout: Some(Layout::Prefix),
            sha256: "ab".into(),
            size: 3,
            objects: 1,
            model_json: None,
        };
        let e = finish("s3://b/m/", Format::Kiln, found()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("no model.json"), "{}", e.message);
        let any = finish("s3://b/m/", Format::Any, found()).unwrap();
        assert_eq!((any.algorithm, any.model_json), (None, None));
        let bad = Found {
            model_json: Some(("model.json".into(), b"{".to_vec())),
            ..found()
        };
        let e = finish("s3://b/m/", Format::Any, bad).unwrap_err();
        assert!(
            e.message.contains("s3://b/m/: model.json: not readable"),
            "{}",
            e.message
        );
    }
}
