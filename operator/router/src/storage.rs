//! The data capture destination: `s3://bucket/prefix` (AWS S3 or any
//! S3-compatible store), `gs://bucket/prefix`, `az://container/prefix`, or
//! `file:///path` (a local folder). Credentials come from the environment as
//! the stores' own tools read them (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`,
//! `AWS_REGION`, web identity; `GOOGLE_SERVICE_ACCOUNT`;
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...), as kiln-runtime's storage does. An
//! `http://` endpoint (MinIO, SeaweedFS, Ceph inside the cluster) is allowed
//! as given, and S3 requests use path-style addressing unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says otherwise.

use std::sync::{Arc, OnceLock};

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

/// An opened destination: the store and the key prefix inside it.
#[derive(Clone)]
pub struct Destination {
    pub store: Arc<dyn ObjectStore>,
    /// Without leading or trailing `/`; empty for a bucket's root.
    pub prefix: String,
}

impl Destination {
    /// The store path of `key` (relative to the prefix).
    pub fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }
}

/// Checks a destination URI without opening it.
pub fn check_destination(uri: &str) -> Result<url::Url, String> {
    let url =
        url::Url::parse(uri).map_err(|e| format!("destination {uri:?} is not a valid URI: {e}"))?;
    match url.scheme() {
        "s3" | "gs" | "az" => {
            if url.host_str().unwrap_or_default().is_empty() {
                return Err(format!(
                    "destination {uri:?} has no bucket; write {}://bucket/prefix",
                    url.scheme()
                ));
            }
        }
        "file" => {
            url.to_file_path()
                .map_err(|_| format!("destination {uri:?} is not a local path"))?;
        }
        other => {
            return Err(format!(
                "destination {uri:?}: {other}:// is not a storage scheme; use s3://, gs://, az:// or file://"
            ));
        }
    }
    Ok(url)
}

/// Makes ring the process's TLS provider (once; HTTPS stores need one).
pub fn install_crypto() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builder settings from environment variables whose names the builder
/// knows (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
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

/// Opens `uri` with the given environment. Nothing is contacted yet, except
/// that a `file://` folder is created.
pub fn open_with(
    uri: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Destination, String> {
    install_crypto();
    let url = check_destination(uri)?;
    let env: Vec<(String, String)> = env.into_iter().collect();
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let bad = |e: object_store::Error| format!("destination {uri}: {e}");
    let bucket = url.host_str().unwrap_or_default();
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" => {
            let mut b = configure(
                object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket),
                &env,
                |b, k, v| b.with_config(k, v),
            );
            if let Some(endpoint) = lookup("AWS_ENDPOINT_URL").or_else(|| lookup("AWS_ENDPOINT")) {
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            if lookup("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
                b = b.with_virtual_hosted_style_request(false);
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
        _ => {
            let dir = url
                .to_file_path()
                .map_err(|_| format!("destination {uri:?} is not a local path"))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("destination {uri}: cannot create {}: {e}", dir.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(bad)?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: String::new(),
            });
        }
    };
    Ok(Destination {
        store,
        prefix: url.path().trim_matches('/').to_string(),
    })
}

/// Opens `uri` with credentials from the process's environment.
pub fn open(uri: &str) -> Result<Destination, String> {
    open_with(uri, std::env::vars())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_schemes_and_buckets() {
        assert!(check_destination("s3://bucket/p").is_ok());
        assert!(check_destination("gs://bucket").is_ok());
        assert!(check_destination("file:///tmp/capture").is_ok());
        assert!(
            check_destination("s3:///p")
                .unwrap_err()
                .contains("no bucket")
        );
        assert!(
            check_destination("http://x/p")
                .unwrap_err()
                .contains("storage scheme")
        );
        assert!(check_destination("bucket/p").is_err());
    }

    #[test]
    fn opens_s3_compatible_stores_offline() {
        let env = [
            ("AWS_ENDPOINT_URL", "http://minio.kiln-system:9000"),
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let d = open_with("s3://bucket/some/prefix/", env).unwrap();
        assert_eq!(d.prefix, "some/prefix");
        assert_eq!(d.path("ep/a/x.jsonl").as_ref(), "some/prefix/ep/a/x.jsonl");
        let root = open_with("s3://bucket", Vec::new()).unwrap();
        assert_eq!(root.path("ep/a/x.jsonl").as_ref(), "ep/a/x.jsonl");
    }
}
