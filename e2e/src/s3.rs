//! The local cluster's S3 store as a test sees it: its credentials copied
//! into the test's namespace (as a user would make them), and objects put
//! and read from the host.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::TestNamespace;

/// The store's credentials from `default`, copied into the test's namespace
/// as a user would, and the bucket they open.
pub async fn s3_secret(ns: &TestNamespace) -> Result<S3> {
    let source: Secret = Api::namespaced(ns.client.clone(), "default")
        .get("kiln-s3")
        .await?;
    let data = source.data.clone().context("the kiln-s3 Secret is empty")?;
    let mut copy = Secret {
        data: Some(data.clone()),
        ..Default::default()
    };
    copy.metadata.name = Some("kiln-s3".into());
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&Default::default(), &copy)
        .await?;
    let get = |k: &str| {
        String::from_utf8(data.get(k).map(|b| b.0.clone()).unwrap_or_default())
            .with_context(|| format!("kiln-s3 {k}"))
    };
    let endpoint = get("AWS_ENDPOINT_URL")?;
    Ok(S3 {
        access: get("AWS_ACCESS_KEY_ID")?,
        secret: get("AWS_SECRET_ACCESS_KEY")?,
        bucket: get("S3_BUCKET")?,
        port: endpoint.rsplit(':').next().unwrap_or("8333").to_string(),
    })
}

/// The local cluster's S3 store, reached from the host.
pub struct S3 {
    access: String,
    secret: String,
    /// The bucket the credentials open.
    pub bucket: String,
    port: String,
}

impl S3 {
    fn curl(&self, key: &str, extra: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new("curl")
            .args(["-fsS", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", self.access, self.secret))
            .args(extra)
            .arg(format!(
                "http://127.0.0.1:{}/{}/{key}",
                self.port, self.bucket
            ))
            .output()?)
    }

    /// Uploads a file as the object `key`.
    pub fn put(&self, key: &str, file: &Path) -> Result<()> {
        let out = self.curl(key, &["-T", file.to_str().unwrap()])?;
        ensure!(
            out.status.success(),
            "uploading {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The object's bytes.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let out = self.curl(key, &[])?;
        ensure!(
            out.status.success(),
            "reading {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    }

    /// The keys under `prefix`, sorted (the first 1000).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // SigV4 signs the query as sent: every byte but the unreserved ones
        // percent-encoded, as the store canonicalizes it.
        let encoded: String = prefix
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let out = self.curl(&format!("?list-type=2&prefix={encoded}"), &[])?;
        ensure!(
            out.status.success(),
            "listing {prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let xml = String::from_utf8_lossy(&out.stdout);
        let mut keys: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect();
        keys.sort();
        Ok(keys)
    }
}
