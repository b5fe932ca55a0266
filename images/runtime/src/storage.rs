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
//! disk chunk by chunk, [`Remote::reader`] hands one to synchronous code as
//! a [`Read`], and Parquet is read by row group with range requests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// A storage URI that cannot be used, with what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

type Result<T> = std::result::Result<T, StorageError>;

/// The schemes served by an object store (`file://` is a local path).
pub const SCHEMES: [&str; 3] = ["s3", "gs", "az"];

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
        if out.is_empty() {
            return Err(StorageError(format!("{}: no objects there", self.uri)));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Writes `objects` (from [`Remote::list`]) under `dest`, each at its
    /// relative name, streaming; returns the bytes written.
    pub async fn download(&self, objects: &[Object], dest: &Path) -> Result<u64> {
        let mut total = 0;
        for object in objects {
            let target = safe_join(dest, &object.relative).ok_or_else(|| {
                StorageError(format!(
                    "{}: object {} escapes the destination folder",
                    self.uri, object.key
                ))
            })?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
            let mut file = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
            let mut stream = self.get_stream(&object.key).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(&e))?;
                file.write_all(&chunk).map_err(|e| io_err(&target, e))?;
                total += chunk.len() as u64;
            }
            file.sync_all().map_err(|e| io_err(&target, e))?;
        }
        Ok(total)
    }

    /// Uploads every file under `src` to the prefix, at its relative name.
    pub async fn upload_dir(&self, src: &Path) -> Result<u64> {
        let mut total = 0;
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
                let path = entry.map_err(|e| io_err(&dir, e))?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let relative = path.strip_prefix(src).unwrap_or(&path);
                let relative: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let key = self.key(&relative.join("/"))?;
                let data = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
                total += data.len() as u64;
                self.store
                    .put(&key, data.into())
                    .await
                    .map_err(|e| self.err(&e))?;
            }
        }
        Ok(total)
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
fn unpack(archive: &Path, dest: &Path) -> Result<()> {
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
