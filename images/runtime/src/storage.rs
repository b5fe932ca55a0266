//! Storage URIs: `s3://bucket/prefix` (AWS S3 or any S3-compatible store),
//! `gs://bucket/prefix` and `az://container/prefix`, through one
//! [`ObjectStore`] client. Credentials come from the environment, as the
//! stores' own tools read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`, web identity;
//! `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`, ...), and never
//! appear in messages. An `http://` endpoint (MinIO, SeaweedFS, Ceph inside
//! the cluster) is allowed as it is given.
//!
//! A URI names either one object or every object under a prefix (a
//! "folder"); hidden objects (a name starting with `.`) and folder markers
//! are skipped. Objects are streamed: [`Remote::download`] writes them to
//! disk chunk by chunk ([`CONCURRENCY`] at once), [`Remote::reader`] hands
//! one to synchronous code as a [`Read`], Parquet is read by row group with
//! range requests, and [`Remote::upload_file`] and [`Remote::writer`] send
//! files and streams of any size (a multipart upload past one part).
//!
//! The client retries each request that fails transiently (5xx, throttling,
//! a dropped connection: up to 10 times within 3 minutes, with backoff) and
//! resumes a body broken mid-download; what it gives up on is tried again
//! as a whole object, [`ATTEMPTS`] times in all ([`with_retries`]).

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A storage URI that cannot be used, with what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

type Result<T> = std::result::Result<T, StorageError>;

/// The schemes served by an object store (`file://` is a local path).
pub const SCHEMES: [&str; 3] = ["s3", "gs", "az"];

/// Objects downloaded at once by [`Remote::download`].
pub const CONCURRENCY: usize = 8;

/// Tries of one object (or one upload) when a failure is transient.
pub const ATTEMPTS: u32 = 3;

/// Bytes read from a file per chunk of an upload.
const CHUNK: usize = 1 << 20;

/// The smallest part of a multipart upload, and the size below which an
/// upload is one request.
const MIN_PART: usize = 10 << 20;

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Settings of a client beyond what the environment gives.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Encrypt the objects written with this KMS key (SSE-KMS; s3:// only).
    pub kms_key_id: Option<String>,
}

/// A failed attempt: what went wrong, and whether trying again may help.
#[derive(Debug)]
pub struct Failed {
    pub error: StorageError,
    pub transient: bool,
}

impl Failed {
    /// A failure that trying again does not fix (a local file, a bad name).
    pub fn permanent(error: StorageError) -> Failed {
        Failed {
            error,
            transient: false,
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or has failed
/// [`ATTEMPTS`] times; waits 1 s, then 4 s, between tries, saying so on
/// stderr.
pub async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Failed>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(failed) if failed.transient && tries < ATTEMPTS => {
                let wait = Duration::from_secs(4u64.pow(tries - 1));
                eprintln!(
                    "{}; trying again in {} s (attempt {} of {ATTEMPTS})",
                    failed.error,
                    wait.as_secs(),
                    tries + 1
                );
                tokio::time::sleep(wait).await;
            }
            Err(failed) => return Err(failed.error),
        }
    }
}

/// Whether a store error may go away on its own (a network or server
/// failure), as opposed to one the request itself causes.
fn transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    let text = e.to_string();
    !matches!(
        e,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    ) && !text.contains("403 Forbidden")
        && !text.contains("401 Unauthorized")
        && !text.contains("404 Not Found")
}

/// The part size of a multipart upload of about `expected` bytes: 10 MiB,
/// or larger so that the upload needs at most 9,000 parts (S3 allows 10,000).
pub fn part_size(expected: u64) -> usize {
    let needed = expected.div_ceil(9_000).next_multiple_of(1 << 20);
    usize::try_from(needed).unwrap_or(usize::MAX).max(MIN_PART)
}

/// What [`Remote::upload_file`] sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub bytes: u64,
    /// SHA-256 of the bytes sent, in lowercase hex.
    pub sha256: String,
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One object being written as a stream of chunks (see [`Remote::writer`]):
/// one request when it stays under a part, else a multipart upload that is
/// completed by [`ObjectWriter::finish`] and removed by
/// [`ObjectWriter::abort`], so no partial object is ever visible.
pub struct ObjectWriter {
    writer: BufWriter,
    remote: Remote,
}

impl ObjectWriter {
    /// Appends a chunk (waits while the parts in flight are at the limit).
    pub async fn put(&mut self, chunk: Bytes) -> std::result::Result<(), Failed> {
        let remote = &self.remote;
        self.writer.put(chunk).await.map_err(|e| remote.failed(&e))
    }

    /// Completes the object.
    pub async fn finish(mut self) -> std::result::Result<(), Failed> {
        let remote = &self.remote;
        self.writer.shutdown().await.map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<object_store::Error>())
            {
                Some(store) => remote.failed(store),
                None => Failed {
                    error: StorageError(format!("{}: {e}", remote.uri)),
                    transient: true,
                },
            }
        })
    }

    /// Drops what was sent of the object (an unfinished multipart upload).
    pub async fn abort(mut self) {
        let _ = self.writer.abort().await;
    }
}

/// Whether `uri` names an object store location rather than a local path.
pub fn is_remote(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// A location in an object store: one object or a prefix.
#[derive(Clone)]
pub struct Remote {
    /// The URI as given (no credentials in it).
    pub uri: String,
    /// `scheme://bucket`.
    root: String,
    store: Arc<dyn ObjectStore>,
    /// The key or key prefix, without a trailing `/`.
    prefix: ObjectPath,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("uri", &self.uri).finish()
    }
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// Its name relative to the listed prefix (its file name when the URI
    /// named the object itself).
    pub relative: String,
    pub size: u64,
    /// Its own URI, for messages.
    pub uri: String,
}

impl Remote {
    /// Opens `uri` (`s3://`, `gs://` or `az://`) with credentials from the
    /// environment. Nothing is contacted yet.
    pub fn open(uri: &str) -> Result<Remote> {
        Self::open_with(uri, std::env::vars())
    }

    /// Opens `uri` with the given environment (tests pass their own).
    pub fn open_with(uri: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Remote> {
        Self::open_with_options(uri, env, &Options::default())
    }

    /// Opens `uri` with credentials from the environment and `options`.
    pub fn open_options(uri: &str, options: &Options) -> Result<Remote> {
        Self::open_with_options(uri, std::env::vars(), options)
    }

    /// Opens `uri` with the given environment and `options`.
    pub fn open_with_options(
        uri: &str,
        env: impl IntoIterator<Item = (String, String)>,
        options: &Options,
    ) -> Result<Remote> {
        install_crypto();
        let url = url::Url::parse(uri)
            .map_err(|e| StorageError(format!("{uri}: not a valid URI: {e}")))?;
        let bucket = url.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(StorageError(format!(
                "{uri}: no bucket; write {}://bucket/prefix",
                url.scheme()
            )));
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let bad = |e: object_store::Error| StorageError(format!("{uri}: {}", describe(&e)));
        if options.kms_key_id.is_some() && url.scheme() != "s3" {
            return Err(StorageError(format!(
                "{uri}: a KMS key id applies to s3:// only; {}:// objects are encrypted with the \
                 bucket's or account's own key settings",
                url.scheme()
            )));
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" => {
                let mut b = configure(
                    object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket),
                    &env,
                    |b, k, v| b.with_config(k, v),
                );
                let endpoint = lookup("AWS_ENDPOINT_URL").or_else(|| lookup("AWS_ENDPOINT"));
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                if lookup("AWS_REGION").is_none() && lookup("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                if let Some(key) = &options.kms_key_id {
                    b = b.with_sse_kms_encryption(key);
                }
                Arc::new(b.build().map_err(bad)?)
            }
            "gs" => {
                let b = configure(
                    object_store::gcp::GoogleCloudStorageBuilder::new().with_bucket_name(bucket),
                    &env,
                    |b, k, v| b.with_config(k, v),
                );
                Arc::new(b.build().map_err(bad)?)
            }
            "az" => {
                let b = configure(
                    object_store::azure::MicrosoftAzureBuilder::new().with_container_name(bucket),
                    &env,
                    |b, k, v| b.with_config(k, v),
                );
                Arc::new(b.build().map_err(bad)?)
            }
            other => {
                return Err(StorageError(format!(
                    "{uri}: {other}:// is not a storage scheme; use s3://, gs://, az://, file:// or a path"
                )));
            }
        };
        let prefix = ObjectPath::from_url_path(url.path().trim_matches('/'))
            .map_err(|e| StorageError(format!("{uri}: not a valid object key: {e}")))?;
        Ok(Remote {
            uri: uri.to_string(),
            root: format!("{}://{bucket}", url.scheme()),
            store,
            prefix,
        })
    }

    /// The objects the URI names, sorted by key: every object under the
    /// prefix, or the one object of that key. An error when there are none.
    pub async fn list(&self) -> Result<Vec<Object>> {
        let out = self.list_objects().await?;
        if out.is_empty() {
            return Err(StorageError(format!("{}: no objects there", self.uri)));
        }
        Ok(out)
    }

    /// Whether `object` (from [`Remote::list`]) is the one object the URI
    /// names, rather than one under it as a prefix.
    pub fn names_object(&self, object: &Object) -> bool {
        object.key == self.prefix.as_ref()
    }

    /// Like [`Remote::list`], but none is an empty list.
    pub async fn list_objects(&self) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let base = self.prefix.as_ref();
        let mut listing = self.store.list(Some(&self.prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(&e))?;
            let key = meta.location.as_ref().to_string();
            let relative = key
                .strip_prefix(base)
                .unwrap_or(&key)
                .trim_start_matches('/')
                .to_string();
            if relative.is_empty()
                || relative.ends_with('/')
                || relative.split('/').any(|part| part.starts_with('.'))
            {
                continue;
            }
            out.push(Object {
                uri: format!("{}/{key}", self.root),
                key,
                relative,
                size: meta.size,
            });
        }
        // A folder marker (a `name/` object, as consoles make folders) is
        // listed without its slash, as an empty object `name` that is not
        // there: each empty object is asked for (they are few).
        let mut objects = Vec::with_capacity(out.len());
        for object in out {
            if object.size == 0 {
                match self
                    .store
                    .head(&ObjectPath::from(object.key.as_str()))
                    .await
                {
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(self.err(&e)),
                }
            }
            objects.push(object);
        }
        let mut out = objects;
        if out.is_empty() && !base.is_empty() {
            // Not a prefix: perhaps the URI names one object.
            match self.store.head(&self.prefix).await {
                Ok(ObjectMeta { size, .. }) => out.push(Object {
                    uri: format!("{}/{base}", self.root),
                    key: base.to_string(),
                    relative: base.rsplit('/').next().unwrap_or(base).to_string(),
                    size,
                }),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&e)),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Writes `objects` (from [`Remote::list`]) under `dest`, each at its
    /// relative name, streaming, [`CONCURRENCY`] at once; returns the bytes
    /// written.
    pub async fn download(&self, objects: &[Object], dest: &Path) -> Result<u64> {
        // The futures are made first: a stream holding this closure is not
        // Send (the compiler cannot prove it for every lifetime of the
        // reference), and the model server needs Send futures.
        let downloads: Vec<_> = objects
            .iter()
            .map(|object| self.download_into(object, dest))
            .collect();
        let mut downloads = futures::stream::iter(downloads).buffer_unordered(CONCURRENCY);
        let mut total = 0;
        while let Some(bytes) = downloads.next().await {
            total += bytes?;
        }
        Ok(total)
    }

    async fn download_into(&self, object: &Object, dest: &Path) -> Result<u64> {
        let target = self.target(dest, object)?;
        self.download_object(object, &target).await
    }

    /// Where `object` goes under `dest`: at its relative name, refused when
    /// that would leave `dest`.
    pub fn target(&self, dest: &Path, object: &Object) -> Result<PathBuf> {
        safe_join(dest, &object.relative).ok_or_else(|| {
            StorageError(format!(
                "{}: object {} escapes the destination folder",
                self.uri, object.key
            ))
        })
    }

    /// Writes one object to the file `target`, streaming, through a hidden
    /// partial file renamed into place once complete (so a present file is
    /// whole); tries again on transient failures. Returns its bytes.
    pub async fn download_object(&self, object: &Object, target: &Path) -> Result<u64> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err(parent, e))?;
        }
        let partial = partial_name(target);
        let result = with_retries(|| self.download_once(&object.key, &partial)).await;
        match result {
            Ok(bytes) => {
                tokio::fs::rename(&partial, target)
                    .await
                    .map_err(|e| io_err(target, e))?;
                Ok(bytes)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn download_once(&self, key: &str, path: &Path) -> std::result::Result<u64, Failed> {
        let local = |e| Failed::permanent(io_err(path, e));
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| self.failed(&e))?;
        let mut stream = got.into_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(&e))?;
            file.write_all(&chunk).await.map_err(local)?;
            total += chunk.len() as u64;
        }
        file.sync_all().await.map_err(local)?;
        Ok(total)
    }

    /// Uploads every file under `src` to the prefix, at its relative name,
    /// each streamed ([`Remote::upload_file`]); returns the bytes sent.
    pub async fn upload_dir(&self, src: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
            let entry = entry.map_err(|e| StorageError(format!("{}: {e}", src.display())))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = relative_name(src, entry.path());
            total += self.upload_file(entry.path(), &relative).await?.bytes;
        }
        Ok(total)
    }

    /// Uploads the file `path` to `relative` under the prefix (`""`: the
    /// key the URI names), streamed: one request below a part (10 MiB),
    /// else a multipart upload; tries again on transient failures. Returns
    /// the bytes sent and their SHA-256.
    pub async fn upload_file(&self, path: &Path, relative: &str) -> Result<Uploaded> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| io_err(path, e))?
            .len();
        with_retries(|| self.upload_once(path, relative, size)).await
    }

    async fn upload_once(
        &self,
        path: &Path,
        relative: &str,
        size: u64,
    ) -> std::result::Result<Uploaded, Failed> {
        let local = |e| Failed::permanent(io_err(path, e));
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let mut writer = self.writer(relative, size).map_err(Failed::permanent)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut bytes = 0;
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                match file.read_buf(&mut chunk).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        writer.abort().await;
                        return Err(local(e));
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            digest.update(&chunk);
            bytes += chunk.len() as u64;
            if let Err(e) = writer.put(chunk.freeze()).await {
                writer.abort().await;
                return Err(e);
            }
        }
        writer.finish().await?;
        Ok(Uploaded {
            bytes,
            sha256: hex(digest.finish().as_ref()),
        })
    }

    /// A writer of the object at `relative` under the prefix (`""`: the key
    /// the URI names), whose size is about `expected` bytes (which sets the
    /// part size; 0 when unknown).
    pub fn writer(&self, relative: &str, expected: u64) -> Result<ObjectWriter> {
        let key = self.key(relative)?;
        if key.as_ref().is_empty() {
            return Err(StorageError(format!(
                "{}: no object key; write {}/name",
                self.uri, self.root
            )));
        }
        let writer = BufWriter::with_capacity(self.store.clone(), key, part_size(expected))
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(ObjectWriter {
            writer,
            remote: self.clone(),
        })
    }

    /// The URI of the object at `relative` under the prefix (`""`: the
    /// object the URI names).
    pub fn uri_of(&self, relative: &str) -> Result<String> {
        Ok(format!("{}/{}", self.root, self.key(relative)?.as_ref()))
    }

    /// Writes one object at `relative` under the prefix.
    pub async fn put(&self, relative: &str, data: Vec<u8>) -> Result<()> {
        let key = self.key(relative)?;
        self.store
            .put(&key, data.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err(&e))
    }

    fn key(&self, relative: &str) -> Result<ObjectPath> {
        let rel = ObjectPath::parse(relative).map_err(|e| {
            StorageError(format!("{}: bad object name {relative:?}: {e}", self.uri))
        })?;
        Ok(self.prefix.clone().into_iter().chain(rel.parts()).collect())
    }

    async fn get_stream(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<Bytes>>> {
        let path = ObjectPath::from(key);
        let got = self.store.get(&path).await.map_err(|e| self.err(&e))?;
        Ok(got.into_stream())
    }

    /// One object as a blocking [`Read`], fetched chunk by chunk on the
    /// storage runtime (at most a few chunks ahead of the reader).
    pub fn reader(&self, key: &str) -> ObjectReader {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let this = self.clone();
        let key = key.to_string();
        runtime().spawn(async move {
            let mut stream = match this.get_stream(&key).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.0))).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| std::io::Error::other(this.err(&e).0));
                let failed = item.is_err();
                // A closed channel: the reader stopped early (a bad row).
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        ObjectReader {
            rx,
            chunk: Bytes::new(),
        }
    }

    /// The store and key of one object, for readers that fetch byte ranges
    /// (Parquet).
    pub fn object(&self, key: &str) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (self.store.clone(), ObjectPath::from(key))
    }

    /// The message for a store error, naming the URI.
    pub fn err(&self, e: &object_store::Error) -> StorageError {
        StorageError(format!("{}: {}", self.uri, describe(e)))
    }

    /// A store error as a failed attempt.
    fn failed(&self, e: &object_store::Error) -> Failed {
        Failed {
            error: self.err(e),
            transient: transient(e),
        }
    }
}

/// Applies every environment variable that names a setting of the store
/// (`AWS_ACCESS_KEY_ID`, `GOOGLE_SERVICE_ACCOUNT`, ...) to its builder.
fn configure<B, K: std::str::FromStr>(
    builder: B,
    env: &[(String, String)],
    with_config: impl Fn(B, K, &String) -> B,
) -> B {
    env.iter()
        .fold(builder, |b, (k, v)| match k.to_ascii_lowercase().parse() {
            Ok(key) => with_config(b, key, v),
            Err(_) => b,
        })
}

/// What a user can act on in a store error (it never holds credentials):
/// the store's own error code and message rather than its XML body.
fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let len = text[start..].find(close)?;
        Some(text[start..start + len].to_string())
    };
    let status = between("status code: ", ":");
    let summary = match (
        between("<Code>", "</Code>"),
        between("<Message>", "</Message>"),
    ) {
        (Some(code), Some(message)) => format!(
            "{}{code}: {message}",
            status.map(|s| format!("HTTP {s}, ")).unwrap_or_default()
        ),
        _ => text.clone(),
    };
    let denied = matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || text.contains("403 Forbidden")
        || text.contains("401 Unauthorized");
    match e {
        object_store::Error::NotFound { path, .. } => format!("no object {path}"),
        _ if denied => format!(
            "access denied ({summary}); check the credentials in the environment (for s3://: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
        ),
        _ => summary,
    }
}

fn io_err(path: &Path, e: std::io::Error) -> StorageError {
    StorageError(format!("{}: {e}", path.display()))
}

/// The hidden name a download is written to before it is complete:
/// `.<name>.partial` beside `target` (hidden, so no reader of the folder
/// takes it for data).
pub fn partial_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.partial"))
}

/// `path` relative to `base` with `/` separators (an object name).
pub fn relative_name(base: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// `dest/relative`, or `None` when `relative` would leave `dest`.
fn safe_join(dest: &Path, relative: &str) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => out.push(p),
        }
    }
    (out != dest).then_some(out)
}

/// A blocking reader over one object's chunks.
pub struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            // Called from the trainer's threads, never from the runtime.
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0), // the object ended
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The runtime that storage requests of synchronous code (the trainer) run
/// on: two threads, started on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        install_crypto();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-storage")
            .enable_all()
            .build()
            .expect("cannot start the storage runtime")
    })
}

/// Runs a storage future from synchronous code.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    runtime().block_on(f)
}

/// Makes ring the process's TLS provider (once; HTTPS stores need one).
pub fn install_crypto() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Fetches a storage URI (a prefix or one object) into `dest`, which is
/// replaced; a `.tar.gz` / `.tgz` object is unpacked there instead.
pub async fn fetch(uri: &str, dest: &Path) -> Result<u64> {
    install_crypto();
    let remote = Remote::open(uri)?;
    let objects = remote.list().await?;
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
    let bytes = if objects.len() == 1 && is_tarball(&objects[0].relative) {
        let archive = partial.join(".archive");
        let bytes = remote.download(&objects[..1], &archive).await?;
        let file = archive.join(&objects[0].relative);
        unpack(&file, &partial)?;
        let _ = std::fs::remove_dir_all(&archive);
        bytes
    } else {
        remote.download(&objects, &partial).await?
    };
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&partial, dest).map_err(|e| io_err(dest, e))?;
    Ok(bytes)
}

/// Whether a file name is a gzipped tar archive.
pub fn is_tarball(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Unpacks a `.tar.gz` into `dest`, which is replaced once it is complete.
pub fn unpack_into(archive: &Path, dest: &Path) -> Result<()> {
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
    unpack(archive, &partial)?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&partial, dest).map_err(|e| io_err(dest, e))
}

/// Unpacks a `.tar.gz` into `dest` (entries that would leave it are refused).
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| io_err(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.set_overwrite(true);
    tar.unpack(dest)
        .map_err(|e| StorageError(format!("{}: not a usable .tar.gz: {e}", archive.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_schemes() {
        assert!(is_remote("s3://b/p"));
        assert!(is_remote("gs://b"));
        assert!(is_remote("az://c/p"));
        assert!(!is_remote("file:///x"));
        assert!(!is_remote("/opt/ml/model"));
        assert!(!is_remote("pvc://claim/x"));
    }

    #[test]
    fn open_needs_a_bucket_and_a_known_scheme() {
        let env = || vec![("AWS_ACCESS_KEY_ID".to_string(), "k".to_string())];
        let e = Remote::open_with("s3:///key", env()).unwrap_err();
        assert!(e.0.contains("no bucket"), "{e}");
        let e = Remote::open_with("ftp://b/key", env()).unwrap_err();
        assert!(e.0.contains("ftp:// is not a storage scheme"), "{e}");
        let e = Remote::open_with("s3://bucket/a/b/", env()).unwrap_err();
        assert!(e.0.contains("Missing SecretAccessKey"), "{e}");
        let mut env = env();
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "s".into()));
        let r = Remote::open_with("s3://bucket/a/b/", env).unwrap();
        assert_eq!(r.prefix.as_ref(), "a/b");
        assert_eq!(r.key("c/d.csv").unwrap().as_ref(), "a/b/c/d.csv");
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let d = Path::new("/tmp/d");
        assert_eq!(
            safe_join(d, "a/b.csv"),
            Some(PathBuf::from("/tmp/d/a/b.csv"))
        );
        assert_eq!(safe_join(d, "../x"), None);
        assert_eq!(safe_join(d, "a/../../x"), None);
        assert_eq!(safe_join(d, ""), None);
    }

    #[test]
    fn tarballs_by_name() {
        assert!(is_tarball("model.tar.gz"));
        assert!(is_tarball("m.tgz"));
        assert!(!is_tarball("model.json"));
    }
}
