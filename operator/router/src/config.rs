//! The configuration file: parsed and checked ([`parse`]), compiled into
//! the [`Routes`] the proxy reads, and watched for changes ([`watch`]).
//!
//! The file is a ConfigMap volume: kubelet writes a new version into a new
//! folder and swaps the `..data` symlink, so the file's modification time
//! says little. The watcher reads the whole file every poll and compares
//! the bytes with the last ones seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use axum::http::{HeaderValue, header::HOST};
use kiln_api::router::{CaptureConfig, RouterConfig};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::App;

/// Copies in flight to one shadow at most; more are dropped (and counted).
pub const SHADOW_CONCURRENCY: usize = 64;

/// Parses and checks a configuration file's contents.
pub fn parse(bytes: &[u8]) -> Result<RouterConfig, String> {
    let config: RouterConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    validate(&config)?;
    Ok(config)
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<(RouterConfig, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config, bytes))
}

/// A name used in metric labels, headers and object keys: letters, digits,
/// `-`, `_` and `.`.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a valid name (letters, digits, '-', '_', '.')"
        ))
    }
}

/// Checks what serde cannot: names, URLs, percentages, the capture target.
pub fn validate(config: &RouterConfig) -> Result<(), String> {
    check_name("endpoint", &config.endpoint)?;
    if config.request_timeout_seconds == 0 {
        return Err("requestTimeoutSeconds must be at least 1".into());
    }
    if config.variants.is_empty() {
        return Err("no variants: at least one production variant is needed".into());
    }
    let mut names = std::collections::HashSet::new();
    for v in &config.variants {
        check_name("variant", &v.name)?;
        if !names.insert(v.name.as_str()) {
            return Err(format!("variant {:?} is named twice", v.name));
        }
        Upstream::parse(&v.name, &v.url)?;
    }
    for s in &config.shadows {
        check_name("shadow", &s.name)?;
        if !names.insert(s.name.as_str()) {
            return Err(format!(
                "shadow {:?}: the name is taken by another variant or shadow",
                s.name
            ));
        }
        Upstream::parse(&s.name, &s.url)?;
        if s.sampling_percent > 100 {
            return Err(format!(
                "shadow {:?}: samplingPercent {} is over 100",
                s.name, s.sampling_percent
            ));
        }
    }
    if let Some(c) = &config.data_capture {
        if c.sampling_percent > 100 {
            return Err(format!(
                "dataCapture: samplingPercent {} is over 100",
                c.sampling_percent
            ));
        }
        if c.max_batch_records == 0 || c.flush_seconds == 0 {
            return Err("dataCapture: maxBatchRecords and flushSeconds must be at least 1".into());
        }
        crate::storage::check_destination(&c.destination)
            .map_err(|e| format!("dataCapture: {e}"))?;
    }
    Ok(())
}

/// Where one variant's (or shadow's) requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing `/` (usually empty).
    base_path: String,
    /// The `Host` header sent to it.
    pub host: HeaderValue,
    /// The response header naming it.
    pub invoked: HeaderValue,
}

impl Upstream {
    /// Parses a variant's base URL (`http://host[:port][/path]`).
    pub fn parse(name: &str, url: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("variant {name:?}: url {url:?} {why}");
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(&format!("is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "has scheme {other}://; the router speaks http:// to its variants"
                )));
            }
            None => return Err(bad("has no scheme; write http://host:port")),
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("has a query; only a base URL (and path) is allowed"));
        }
        Ok(Upstream {
            name: name.to_string(),
            scheme: Scheme::HTTP,
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?,
            invoked: HeaderValue::from_str(name).map_err(|e| bad(&e.to_string()))?,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The URI of a request for `path_and_query` (as the caller sent it).
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, String> {
        let pq = path_and_query.map(PathAndQuery::as_str).unwrap_or("/");
        let pq = if self.base_path.is_empty() {
            pq.to_string()
        } else {
            format!("{}{pq}", self.base_path)
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| e.to_string())
    }

    pub fn set_host(&self, headers: &mut axum::http::HeaderMap) {
        headers.insert(HOST, self.host.clone());
    }
}

/// A shadow variant with its limit of copies in flight.
pub struct Shadow {
    pub upstream: Upstream,
    pub sampling_percent: u32,
    pub slots: Arc<Semaphore>,
}

/// The applied configuration, compiled for the proxy.
pub struct Routes {
    pub config: Arc<RouterConfig>,
    /// In the order of `config.variants`.
    pub variants: Vec<Upstream>,
    pub shadows: Vec<Shadow>,
    pub capture: Option<Arc<CaptureConfig>>,
    pub timeout: Duration,
}

impl Routes {
    /// Compiles `config`; a shadow kept from `previous` keeps its copies in
    /// flight (its semaphore).
    pub fn new(config: RouterConfig, previous: Option<&Routes>) -> Result<Routes, String> {
        let variants = config
            .variants
            .iter()
            .map(|v| Upstream::parse(&v.name, &v.url))
            .collect::<Result<Vec<_>, _>>()?;
        let shadows = config
            .shadows
            .iter()
            .map(|s| {
                let slots = previous
                    .and_then(|p| p.shadows.iter().find(|old| old.upstream.name == s.name))
                    .map(|old| old.slots.clone())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(SHADOW_CONCURRENCY)));
                Ok(Shadow {
                    upstream: Upstream::parse(&s.name, &s.url)?,
                    sampling_percent: s.sampling_percent,
                    slots,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Routes {
            capture: config.data_capture.clone().map(Arc::new),
            timeout: Duration::from_secs(u64::from(config.request_timeout_seconds.max(1))),
            variants,
            shadows,
            config: Arc::new(config),
        })
    }
}

/// Polls `path` every `interval` until `stop`, applying each changed valid
/// version; `last` is the contents applied at start.
pub async fn watch(
    app: Arc<App>,
    path: PathBuf,
    mut last: Vec<u8>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut unreadable = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => {
                unreadable = false;
                bytes
            }
            Err(e) => {
                // Between kubelet's swaps the file can be missing for a moment.
                if !unreadable {
                    tracing::warn!(path = %path.display(), error = %e,
                        "cannot read the configuration; keeping the applied one");
                }
                unreadable = true;
                continue;
            }
        };
        if bytes == last {
            continue;
        }
        match parse(&bytes) {
            Ok(config) => {
                if let Err(e) = app.apply(config) {
                    tracing::warn!(path = %path.display(), error = %e,
                        "configuration not applied; keeping the applied one");
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "invalid configuration ignored; keeping the applied one");
            }
        }
        // An invalid version is reported once, not at every poll.
        last = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"endpoint":"ep","revision":3,"requestTimeoutSeconds":60,
        "variants":[{"name":"a","url":"http://ep-a.ns.svc:8080","weight":9},
                    {"name":"b","url":"http://10.0.0.1:8080/base/","weight":1}],
        "shadows":[{"name":"s","url":"http://ep-s:8080","samplingPercent":50}],
        "dataCapture":{"samplingPercent":5,"destination":"s3://bucket/prefix",
                       "captureInput":true,"captureOutput":true}}"#;

    #[test]
    fn parses_a_good_file() {
        let config = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(config.revision, 3);
        let routes = Routes::new(config, None).unwrap();
        let pq: PathAndQuery = "/invocations?x=1".parse().unwrap();
        assert_eq!(
            routes.variants[0].uri(Some(&pq)).unwrap().to_string(),
            "http://ep-a.ns.svc:8080/invocations?x=1"
        );
        assert_eq!(
            routes.variants[1].uri(Some(&pq)).unwrap().to_string(),
            "http://10.0.0.1:8080/base/invocations?x=1"
        );
        assert_eq!(routes.variants[0].host, "ep-a.ns.svc:8080");
        assert_eq!(routes.timeout, Duration::from_secs(60));
    }

    #[test]
    fn keeps_a_shadows_slots_across_versions() {
        let first = Routes::new(parse(GOOD.as_bytes()).unwrap(), None).unwrap();
        let _held = first.shadows[0].slots.clone().try_acquire_owned().unwrap();
        let second = Routes::new(parse(GOOD.as_bytes()).unwrap(), Some(&first)).unwrap();
        assert_eq!(
            second.shadows[0].slots.available_permits(),
            SHADOW_CONCURRENCY - 1
        );
    }

    #[test]
    fn refuses_bad_files() {
        let with = |from: &str, to: &str| {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            parse(text.as_bytes()).unwrap_err()
        };
        assert!(parse(b"{").is_err());
        assert!(with(r#""endpoint":"ep""#, r#""endpoint":"a/b""#).contains("endpoint"));
        assert!(
            with(
                "\"requestTimeoutSeconds\":60",
                "\"requestTimeoutSeconds\":0"
            )
            .contains("at least 1")
        );
        assert!(with("http://ep-a.ns.svc:8080", "https://ep-a:443").contains("https://"));
        assert!(with("http://ep-a.ns.svc:8080", "ep-a:8080").contains("url"));
        assert!(with(r#""name":"b""#, r#""name":"a""#).contains("twice"));
        assert!(with(r#""name":"s""#, r#""name":"a""#).contains("taken"));
        assert!(with("\"samplingPercent\":50", "\"samplingPercent\":101").contains("over 100"));
        assert!(with("s3://bucket/prefix", "ftp://bucket/prefix").contains("dataCapture"));
        assert!(with("s3://bucket/prefix", "s3:///prefix").contains("bucket"));
        assert!(
            with(
                r#""variants":[{"name":"a","url":"http://ep-a.ns.svc:8080","weight":9},
                    {"name":"b","url":"http://10.0.0.1:8080/base/","weight":1}]"#,
                r#""variants":[]"#
            )
            .contains("no variants")
        );
    }
}
