//! The served models: one fixed model, or (multi-model mode) models loaded
//! and unloaded through the `/models` API, whose tensors together stay
//! under a memory bound by unloading the least recently used. An unloaded
//! model stays registered and is loaded again on its next request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::Device;

use super::metrics::Metrics;
use super::model::{ModelInfo, artifact_bytes, read_meta};
use super::worker::{Batching, Worker};

/// Why a model could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryError {
    NotFound(String),
    Conflict(String),
    /// The model alone is larger than the memory bound.
    TooLarge(String),
    /// The URL or the artifact is not usable.
    BadModel(String),
}

/// Where models come from and how they run.
#[derive(Clone)]
pub struct LoadConfig {
    pub device: Device,
    pub batching: Batching,
    pub metrics: Metrics,
    /// Relative model URLs are resolved under this folder.
    pub root: PathBuf,
    /// Downloaded and unpacked models go under this folder.
    pub cache: PathBuf,
    /// Bound on the loaded models' tensor bytes.
    pub memory_limit: u64,
}

/// A model folder from a URL: a local path or `file://` URI (a folder or a
/// `.tar.gz`), or a storage URI (`s3://`, `gs://`, `az://`: a prefix or one
/// `.tar.gz` object). Archives and remote models are unpacked or downloaded
/// into `cache/<key>`; the second value says whether that happened (the
/// folder is Kiln's to delete).
pub async fn resolve_url(
    root: &Path,
    cache: &Path,
    key: &str,
    url: &str,
) -> Result<(PathBuf, bool), RegistryError> {
    let local_dir = cache_dir(cache, key, url);
    if crate::storage::is_remote(url) {
        let started = std::time::Instant::now();
        let bytes = crate::storage::fetch(url, &local_dir)
            .await
            .map_err(|e| RegistryError::BadModel(e.0))?;
        tracing::info!(
            url,
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "model downloaded"
        );
        return model_folder(url, &local_dir).map(|d| (d, true));
    }
    let path = match url.split_once("://") {
        Some(("file", rest)) => PathBuf::from(rest),
        Some((scheme, _)) => {
            return Err(RegistryError::BadModel(format!(
                "{url}: {scheme}:// is not supported; use a path, file://, s3://, gs:// or az://"
            )));
        }
        None => PathBuf::from(url),
    };
    let path = if path.is_absolute() {
        path
    } else {
        root.join(path)
    };
    if path.is_file() && crate::storage::is_tarball(&path.to_string_lossy()) {
        crate::storage::unpack_into(&path, &local_dir)
            .map_err(|e| RegistryError::BadModel(format!("{url}: {e}")))?;
        return model_folder(url, &local_dir).map(|d| (d, true));
    }
    model_folder(url, &path).map(|d| (d, false))
}

/// The artifact is `model.json` + `model.safetensors`, in the folder or in
/// its `model/` subfolder (a training job's output layout).
fn model_folder(url: &str, path: &Path) -> Result<PathBuf, RegistryError> {
    if path.join("model.json").is_file() {
        Ok(path.to_path_buf())
    } else if path.join("model/model.json").is_file() {
        Ok(path.join("model"))
    } else {
        Err(RegistryError::BadModel(format!(
            "{url}: no model.json in {}",
            path.display()
        )))
    }
}

/// `cache/<name>-<hash of url>`: one folder per model name and source.
fn cache_dir(cache: &Path, name: &str, url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    url.hash(&mut h);
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache.join(format!("{safe}-{:016x}", h.finish()))
}

struct Entry {
    url: String,
    dir: PathBuf,
    /// The folder was downloaded or unpacked into the cache.
    cached: bool,
    bytes: u64,
    worker: Option<Worker>,
    last_used: u64,
}

/// The models of multi-model mode.
pub struct Registry {
    config: LoadConfig,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    clock: u64,
}

/// A registered model as `/models` lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub url: String,
    pub loaded: bool,
    pub info: Option<ModelInfo>,
}

impl Registry {
    pub fn new(config: LoadConfig) -> Registry {
        Registry {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic never happens under this lock; a poisoned one is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start(&self, name: &str, dir: &Path) -> Result<Worker, RegistryError> {
        let c = &self.config;
        Worker::start(
            name.to_string(),
            dir.to_path_buf(),
            c.device,
            c.batching,
            c.metrics.clone(),
        )
        .await
        .map_err(RegistryError::BadModel)
    }

    /// Registers and loads `name` from `url` (409 if the name is taken).
    pub async fn load(&self, name: &str, url: &str) -> Result<ModelInfo, RegistryError> {
        if self.lock().entries.contains_key(name) {
            return Err(RegistryError::Conflict(format!(
                "model {name:?} is already loaded"
            )));
        }
        let (dir, cached) = resolve_url(&self.config.root, &self.config.cache, name, url).await?;
        let forget = |e| {
            if cached {
                let _ = std::fs::remove_dir_all(cache_dir(&self.config.cache, name, url));
            }
            e
        };
        let bytes = artifact_bytes(
            &read_meta(&dir)
                .map_err(RegistryError::BadModel)
                .map_err(forget)?,
        );
        if bytes > self.config.memory_limit {
            return Err(forget(RegistryError::TooLarge(format!(
                "model {name:?} needs {bytes} bytes, more than the {} bytes models may take",
                self.config.memory_limit
            ))));
        }
        let worker = self.start(name, &dir).await.map_err(forget)?;
        let info = worker.info.clone();
        let mut inner = self.lock();
        if inner.entries.contains_key(name) {
            return Err(RegistryError::Conflict(format!(
                "model {name:?} is already loaded"
            )));
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.entries.insert(
            name.to_string(),
            Entry {
                url: url.to_string(),
                dir,
                cached,
                bytes,
                worker: Some(worker),
                last_used,
            },
        );
        self.evict(&mut inner, name);
        tracing::info!(model = %name, url, bytes, "model loaded");
        Ok(info)
    }

    /// The worker of `name`, loading it again if it was evicted.
    pub async fn get(&self, name: &str) -> Result<Worker, RegistryError> {
        let dir = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            let entry = inner
                .entries
                .get_mut(name)
                .ok_or_else(|| RegistryError::NotFound(format!("no model named {name:?}")))?;
            entry.last_used = now;
            match &entry.worker {
                Some(w) => return Ok(w.clone()),
                None => entry.dir.clone(),
            }
        };
        let worker = self.start(name, &dir).await?;
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(name) else {
            return Err(RegistryError::NotFound(format!(
                "model {name:?} was unloaded"
            )));
        };
        let worker = entry.worker.get_or_insert(worker).clone();
        self.evict(&mut inner, name);
        tracing::info!(model = %name, "model loaded again");
        Ok(worker)
    }

    /// Unloads the least recently used models (never `keep`) until the
    /// loaded ones fit the memory bound.
    fn evict(&self, inner: &mut Inner, keep: &str) {
        let m = &self.config.metrics;
        loop {
            let total: u64 = inner
                .entries
                .values()
                .filter(|e| e.worker.is_some())
                .map(|e| e.bytes)
                .sum();
            m.model_bytes.set(total as i64);
            m.models_loaded.set(
                inner
                    .entries
                    .values()
                    .filter(|e| e.worker.is_some())
                    .count() as i64,
            );
            if total <= self.config.memory_limit {
                return;
            }
            let victim = inner
                .entries
                .iter_mut()
                .filter(|(n, e)| e.worker.is_some() && n.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used);
            match victim {
                Some((n, e)) => {
                    tracing::info!(model = %n, bytes = e.bytes, "unloading the least recently used model");
                    e.worker = None;
                    m.evictions.inc();
                }
                None => return,
            }
        }
    }

    /// Forgets `name` (its worker stops once its queued requests are answered).
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let entry = inner
            .entries
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(format!("no model named {name:?}")))?;
        if entry.cached {
            // The worker holds its tensors; the files are not needed again.
            let _ = std::fs::remove_dir_all(cache_dir(&self.config.cache, name, &entry.url));
        }
        self.evict(&mut inner, "");
        self.config.metrics.forget_model(name);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    /// Every registered model, by name.
    pub fn list(&self) -> Vec<Listed> {
        let inner = self.lock();
        let mut out: Vec<Listed> = inner
            .entries
            .iter()
            .map(|(n, e)| Listed {
                name: n.clone(),
                url: e.url.clone(),
                loaded: e.worker.is_some(),
                info: e.worker.as_ref().map(|w| w.info.clone()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One registered model.
    pub fn describe(&self, name: &str) -> Option<Listed> {
        self.list().into_iter().find(|l| l.name == name)
    }
}
