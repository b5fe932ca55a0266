//! A real S3-compatible store for tests: SeaweedFS's `weed server` (built
//! once per version by e2e/tools/seaweedfs.sh before the tests start, and
//! named by `KILN_WEED`) on loopback ports, with one identity, one bucket,
//! and the `AWS_*` environment that reaches it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running store; stopped when dropped.
pub struct S3 {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// The `weed` binary, which `make test-unit` builds (e2e/tools/seaweedfs.sh,
/// cached by version) before the tests start and names in `KILN_WEED`.
fn weed() -> String {
    let path = std::env::var("KILN_WEED").expect(
        "KILN_WEED is not set: run the tests through `make test-unit`, which builds SeaweedFS \
         (or set KILN_WEED=$(e2e/tools/seaweedfs.sh))",
    );
    assert!(
        Path::new(&path).is_file(),
        "KILN_WEED={path} is not a file: rebuild it with e2e/tools/seaweedfs.sh"
    );
    path
}

/// `n` distinct free loopback ports (see [`super::free_port`]).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| super::free_port()).collect()
}

impl S3 {
    /// Starts the store and creates the bucket `kiln-test`.
    pub fn start() -> S3 {
        let weed = weed();
        let dir = tempfile::tempdir().unwrap();
        let access_key = "kilntest".to_string();
        let secret_key = "kiln-test-secret-0123456789".to_string();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{
                "name": "kiln",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
            .to_string(),
        )
        .unwrap();
        let p = free_ports(8);
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(&weed)
            .arg("server")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=8"])
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg("-filer")
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg("-s3")
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-s3.config={}", config.display()))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let s3 = S3 {
            child,
            endpoint: format!("http://127.0.0.1:{}", p[6]),
            bucket: "kiln-test".into(),
            access_key,
            secret_key,
            _dir: dir,
        };
        s3.create_bucket();
        s3
    }

    /// The environment a pod gets from the store's Secret.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// `s3://<bucket>/<key>`.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A client of `uri` with this store's credentials.
    pub fn remote(&self, uri: &str) -> kiln_runtime::storage::Remote {
        kiln_runtime::storage::install_crypto();
        kiln_runtime::storage::Remote::open_with(uri, self.env()).unwrap()
    }

    /// Writes one object.
    pub fn put(&self, key: &str, data: Vec<u8>) {
        kiln_runtime::storage::block_on(self.remote(&self.uri("")).put(key, data)).unwrap();
    }

    /// Uploads a folder under `prefix`.
    pub fn put_dir(&self, prefix: &str, dir: &Path) {
        kiln_runtime::storage::block_on(self.remote(&self.uri(prefix)).upload_dir(dir)).unwrap();
    }

    /// Creates the bucket (a signed PUT by curl), retrying while the store
    /// starts.
    fn create_bucket(&self) {
        let start = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-fsS", "-X", "PUT", "-o", "/dev/null"])
                .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args([
                    "--user",
                    &format!("{}:{}", self.access_key, self.secret_key),
                ])
                .arg(format!("{}/{}/", self.endpoint, self.bucket))
                .output()
                .expect("curl is needed to create the test bucket");
            if out.status.success() {
                return;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let log =
                    std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default();
                panic!(
                    "SeaweedFS did not create the bucket: {}\n{log}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
