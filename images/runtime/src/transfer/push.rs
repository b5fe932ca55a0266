//! `kiln-runtime push`: the model folder to the job's output URI, as the
//! training pod's main container runs it after training. By default one
//! `model.tar.gz` (SageMaker's layout: the folder's contents at the
//! archive's root), built while it uploads, so it is never written to disk
//! or held whole in memory; with `--compression none`, the files
//! themselves under the URI. Archives are reproducible: entries sorted by
//! name, no owners or times (tar's deterministic headers, gzip time 0), so
//! the same folder always gives the same bytes and the same SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::{Failure, Outcome, count, human_bytes, remote_uri, write_termination_message};
use crate::storage::{self, Failed, Remote, StorageError};

/// How the model folder is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// One `model.tar.gz`.
    Gzip,
    /// Every file under the URI, as it is.
    None,
}

/// The settings of one push.
#[derive(Debug, Clone)]
pub struct Options {
    pub from: PathBuf,
    pub to: Option<String>,
    pub compression: Compression,
    pub kms_key_id: Option<String>,
    pub termination_message: PathBuf,
    /// The algorithm's `metrics.json`, whose latest values go into the
    /// report (a missing file adds none).
    pub metrics: Option<PathBuf>,
}

/// What was pushed: the termination message of a successful push.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// The archive's URI, or (`--compression none`) the prefix, ending in `/`.
    pub model_artifact_uri: String,
    /// Bytes uploaded: the archive's size, or the files' total.
    pub bytes: u64,
    /// SHA-256 of the archive; with `--compression none`, of the folder's
    /// manifest: a line `<sha256 of the file>  <relative path>` per file,
    /// sorted by path (what `sha256sum` prints).
    pub sha256: String,
    /// The latest value of each metric the algorithm reported (from its
    /// `metrics.json`), as many as fit in a termination message.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub final_metrics: std::collections::BTreeMap<String, f64>,
}

/// One entry of the model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its path relative to the folder, with `/`.
    pub name: String,
    pub path: PathBuf,
    pub dir: bool,
    pub size: u64,
}

/// Bytes handed to the upload at a time.
const CHUNK: usize = 1 << 20;

/// Files uploaded at once with `--compression none` (each may have parts
/// of its own in flight).
const FILES_AT_ONCE: usize = 4;

/// Runs a push; prints the artifact's JSON line and writes it as the
/// termination message.
pub fn run(options: &Options) -> Outcome {
    let Some(to) = &options.to else {
        println!(
            "push: no --to on this rank: nothing to push ({} is not uploaded)",
            options.from.display()
        );
        return Ok(());
    };
    remote_uri("push", "--to", to)?;
    let entries = entries(&options.from)?;
    let remote = Remote::open_options(
        to,
        &storage::Options {
            kms_key_id: options.kms_key_id.clone(),
        },
    )
    .map_err(|e| Failure::input(e.0))?;
    let files = entries.iter().filter(|e| !e.dir).count();
    let size: u64 = entries.iter().map(|e| e.size).sum();
    let start = Instant::now();
    let artifact = storage::block_on(async {
        match options.compression {
            Compression::Gzip => push_archive(&remote, to, entries, size).await,
            Compression::None => push_files(&remote, entries).await,
        }
    })?;
    eprintln!(
        "push: {} ({}) from {} to {}: {} bytes ({}) in {:.1} s",
        count(files, "file"),
        human_bytes(size),
        options.from.display(),
        artifact.model_artifact_uri,
        artifact.bytes,
        human_bytes(artifact.bytes),
        start.elapsed().as_secs_f64()
    );
    let mut artifact = artifact;
    if let Some(path) = &options.metrics {
        artifact.final_metrics = read_metrics(path);
    }
    let line = fitting_line(&mut artifact);
    println!("{line}");
    write_termination_message(&options.termination_message, &line);
    Ok(())
}

/// Kubernetes keeps at most 4096 bytes of a termination message.
const MAX_REPORT_BYTES: usize = 4000;

/// The latest finite value of each metric in a `metrics.json`
/// (`{"metrics": {"name": {"value": ...}}}`); none when the file is missing
/// or unreadable (a warning, never a failed push).
pub fn read_metrics(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
        Err(e) => {
            eprintln!("push: {}: {e}: no metrics in the report", path.display());
            return Default::default();
        }
    };
    let parsed: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("push: {}: {e}: no metrics in the report", path.display());
            return Default::default();
        }
    };
    parsed["metrics"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, m)| {
            Some((name.clone(), m["value"].as_f64().filter(|v| v.is_finite())?))
        })
        .collect()
}

/// The report as one JSON line that fits a termination message: metrics
/// beyond the limit are left out (and named on stderr).
pub fn fitting_line(artifact: &mut Artifact) -> String {
    loop {
        let line = serde_json::to_string(&*artifact).expect("the artifact serializes");
        if line.len() <= MAX_REPORT_BYTES {
            return line;
        }
        match artifact.final_metrics.keys().next_back().cloned() {
            Some(last) => {
                eprintln!(
                    "push: metric {last} left out of the report (over {MAX_REPORT_BYTES} bytes)"
                );
                artifact.final_metrics.remove(&last);
            }
            None => return line,
        }
    }
}

/// The folder's entries, sorted by name (symbolic links followed); an
/// error when it holds no file.
pub fn entries(from: &Path) -> Outcome<Vec<Entry>> {
    let nothing = |why: &str| {
        Failure::input(format!(
            "the algorithm wrote nothing to {}{why}; it must save the model there (SM_MODEL_DIR) \
             before it exits",
            from.display()
        ))
    };
    if !from.is_dir() {
        return Err(nothing(" (no such folder)"));
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(from)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let at = e.path().unwrap_or(from).display().to_string();
            Failure::input(format!("{at}: {e}"))
        })?;
        let kind = entry.file_type();
        if !kind.is_dir() && !kind.is_file() {
            eprintln!(
                "push: {}: not a file or folder, left out",
                entry.path().display()
            );
            continue;
        }
        let size = if kind.is_file() {
            entry
                .metadata()
                .map_err(|e| Failure::other(format!("{}: {e}", entry.path().display())))?
                .len()
        } else {
            0
        };
        out.push(Entry {
            name: storage::relative_name(from, entry.path()),
            path: entry.path().to_path_buf(),
            dir: kind.is_dir(),
            size,
        });
    }
    if !out.iter().any(|e| !e.dir) {
        return Err(nothing(""));
    }
    Ok(out)
}

/// Where the archive goes under `--to`: the URI itself when it names a
/// `.tar.gz` (or `.tgz`), else `model.tar.gz` under it.
pub fn archive_name(to: &str) -> &'static str {
    if storage::is_tarball(to) {
        ""
    } else {
        "model.tar.gz"
    }
}

/// Writes the tar.gz of `entries` to `out` (which is returned): the
/// entries in order, at their relative names, with deterministic headers.
pub fn write_archive<W: Write>(entries: &[Entry], out: W) -> std::io::Result<W> {
    let at = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{path}: {e}"))
    };
    let gz = flate2::GzBuilder::new().write(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        if entry.dir {
            tar.append_dir(&entry.name, &entry.path)
                .map_err(at(&entry.path))?;
        } else {
            let mut file = std::fs::File::open(&entry.path).map_err(at(&entry.path))?;
            tar.append_file(&entry.name, &mut file)
                .map_err(at(&entry.path))?;
        }
    }
    tar.into_inner()?.finish()
}

/// A [`Write`] that hashes and counts what goes through it and hands it
/// on in chunks to the upload task.
struct Sink {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    digest: ring::digest::Context,
    bytes: u64,
}

impl Sink {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Sink {
        Sink {
            tx,
            buf: Vec::with_capacity(CHUNK),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the rest; returns the bytes and their SHA-256.
    fn finish(mut self) -> std::io::Result<(u64, String)> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok((self.bytes, storage::hex(self.digest.finish().as_ref())))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.digest.update(data);
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn push_archive(
    remote: &Remote,
    to: &str,
    entries: Vec<Entry>,
    size: u64,
) -> Outcome<Artifact> {
    let name = archive_name(to);
    let entries = Arc::new(entries);
    let (bytes, sha256) =
        storage::with_retries(|| archive_once(remote, name, entries.clone(), size)).await?;
    Ok(Artifact {
        model_artifact_uri: remote.uri_of(name)?,
        bytes,
        sha256,
        final_metrics: Default::default(),
    })
}

/// Builds the archive on a blocking thread while this task uploads it.
async fn archive_once(
    remote: &Remote,
    name: &str,
    entries: Arc<Vec<Entry>>,
    size: u64,
) -> Result<(u64, String), Failed> {
    // gzip at level 1 shrinks model weights little, so size is a bound.
    let mut writer = remote.writer(name, size).map_err(Failed::permanent)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let producer =
        tokio::task::spawn_blocking(move || write_archive(&entries, Sink::new(tx))?.finish());
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.put(chunk).await {
            upload_error = Some(e);
            break;
        }
    }
    drop(rx); // a producer still sending stops at its next chunk
    let produced = producer.await;
    if let Some(e) = upload_error {
        writer.abort().await;
        return Err(e);
    }
    match produced {
        Ok(Ok(done)) => {
            writer.finish().await?;
            Ok(done)
        }
        Ok(Err(e)) => {
            writer.abort().await;
            Err(Failed::permanent(StorageError(format!(
                "archiving the model folder: {e}"
            ))))
        }
        Err(e) => {
            writer.abort().await;
            Err(Failed::permanent(StorageError(format!(
                "archiving the model folder: {e}"
            ))))
        }
    }
}

async fn push_files(remote: &Remote, entries: Vec<Entry>) -> Outcome<Artifact> {
    let mut uploaded: Vec<(String, storage::Uploaded)> =
        futures::stream::iter(entries.iter().filter(|e| !e.dir))
            .map(|entry| async move {
                let up = remote.upload_file(&entry.path, &entry.name).await?;
                Ok::<_, StorageError>((entry.name.clone(), up))
            })
            .buffer_unordered(FILES_AT_ONCE)
            .try_collect()
            .await?;
    uploaded.sort_by(|a, b| a.0.cmp(&b.0));
    let mut base = remote.uri_of("")?;
    if !base.ends_with('/') {
        base.push('/');
    }
    Ok(Artifact {
        model_artifact_uri: base,
        bytes: uploaded.iter().map(|(_, up)| up.bytes).sum(),
        sha256: manifest_digest(
            uploaded
                .iter()
                .map(|(n, up)| (n.as_str(), up.sha256.as_str())),
        ),
        final_metrics: Default::default(),
    })
}

/// SHA-256 of `sha256sum`-style lines `<hex>  <name>`, in the given order.
pub fn manifest_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, sha256) in files {
        digest.update(format!("{sha256}  {name}\n").as_bytes());
    }
    storage::hex(digest.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.json"),
            b"{\"format\":\"kiln-model\"}",
        )
        .unwrap();
        std::fs::write(dir.path().join("model.safetensors"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir_all(dir.path().join("code/lib")).unwrap();
        std::fs::write(dir.path().join("code/lib/inference.py"), b"print(1)\n").unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        dir
    }

    fn sha256(data: &[u8]) -> String {
        storage::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
    }

    #[test]
    fn the_archive_holds_the_folder_contents_at_its_root() {
        let dir = model_folder();
        let entries = entries(dir.path()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "code",
                "code/lib",
                "code/lib/inference.py",
                "empty",
                "model.json",
                "model.safetensors"
            ]
        );
        let archive = write_archive(&entries, Vec::new()).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
        let mut got = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            got.push((name, entry.header().entry_type().is_dir(), data.len()));
        }
        assert_eq!(
            got,
            [
                ("code".to_string(), true, 0),
                ("code/lib".to_string(), true, 0),
                ("code/lib/inference.py".to_string(), false, 9),
                ("empty".to_string(), true, 0),
                ("model.json".to_string(), false, 23),
                ("model.safetensors".to_string(), false, 100_000),
            ]
        );
    }

    #[test]
    fn the_same_folder_gives_the_same_archive_and_the_sink_hashes_it() {
        let dir = model_folder();
        let entries = entries(dir.path()).unwrap();
        let a = write_archive(&entries, Vec::new()).unwrap();
        // Another time and other modification times: the same bytes.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("model.json"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let b = write_archive(&entries, Vec::new()).unwrap();
        assert_eq!(sha256(&a), sha256(&b));

        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (bytes, digest) = write_archive(&entries, Sink::new(tx))
            .unwrap()
            .finish()
            .unwrap();
        let mut sent = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            sent.extend_from_slice(&chunk);
        }
        assert_eq!(sent, a);
        assert_eq!(bytes, a.len() as u64);
        assert_eq!(digest, sha256(&a));
    }

    #[test]
    fn an_empty_or_missing_model_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("only/folders")).unwrap();
        let e = entries(dir.path()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.starts_with(&format!(
                "the algorithm wrote nothing to {}",
                dir.path().display()
            )),
            "{}",
            e.message
        );
        let e = entries(&dir.path().join("absent")).unwrap_err();
        assert!(e.message.contains("(no such folder)"), "{}", e.message);
    }

    #[test]
    fn archive_names_and_manifest_digests() {
        assert_eq!(archive_name("s3://b/jobs/x/output"), "model.tar.gz");
        assert_eq!(archive_name("s3://b/jobs/x/output/"), "model.tar.gz");
        assert_eq!(archive_name("s3://b/jobs/x/model.tar.gz"), "");
        // What `sha256sum` prints for the files, hashed.
        let manifest = format!("{}  a.txt\n{}  d/b.bin\n", sha256(b"a"), sha256(b"b"));
        let (a, b) = (sha256(b"a"), sha256(b"b"));
        assert_eq!(
            manifest_digest([("a.txt", a.as_str()), ("d/b.bin", b.as_str())].into_iter()),
            sha256(manifest.as_bytes())
        );
    }

    #[test]
    fn the_termination_message_has_the_three_fields() {
        let artifact = Artifact {
            model_artifact_uri: "s3://b/x/model.tar.gz".into(),
            bytes: 12,
            sha256: "ab".into(),
            final_metrics: Default::default(),
        };
        assert_eq!(
            serde_json::to_string(&artifact).unwrap(),
            r#"{"modelArtifactUri":"s3://b/x/model.tar.gz","bytes":12,"sha256":"ab"}"#
        );
    }

    #[test]
    fn final_metrics_come_from_metrics_json_and_fit_a_termination_message() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.json");
        assert!(
            read_metrics(&file).is_empty(),
            "a missing file adds nothing"
        );
        std::fs::write(&file, "not json").unwrap();
        assert!(read_metrics(&file).is_empty(), "a broken file adds nothing");
        std::fs::write(
            &file,
            r#"{"metrics": {"validation:accuracy": {"value": 0.97, "step": 40}, "train:loss": {"value": 0.05}, "bad": {"value": "NaN"}}}"#,
        )
        .unwrap();
        let metrics = read_metrics(&file);
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics["validation:accuracy"], 0.97);
        let mut artifact = Artifact {
            model_artifact_uri: "s3://b/x/model.tar.gz".into(),
            bytes: 12,
            sha256: "ab".into(),
            final_metrics: metrics,
        };
        let line = fitting_line(&mut artifact);
        let back: Artifact = serde_json::from_str(&line).unwrap();
        assert_eq!(back.final_metrics["train:loss"], 0.05);
        // Far more metrics than fit: the line stays under the limit.
        artifact.final_metrics = (0..500)
            .map(|i| (format!("test:metric_{i:03}"), i as f64))
            .collect();
        let line = fitting_line(&mut artifact);
        assert!(line.len() <= MAX_REPORT_BYTES, "{} bytes", line.len());
        assert!(artifact.final_metrics.len() > 50 && artifact.final_metrics.len() < 500);
        assert!(artifact.final_metrics.contains_key("test:metric_000"));
    }
}
