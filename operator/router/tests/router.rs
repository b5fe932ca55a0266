//! The router over real loopback HTTP: tiny upstream servers that answer
//! with their own name, and the router started on port 0 in front of them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kiln_api::router::{
    INVOKED_VARIANT_HEADER, SAGEMAKER_TARGET_VARIANT_HEADER, TARGET_VARIANT_HEADER,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An upstream server answering every request with its name (as text/csv)
/// after `delay`, and saying what it saw in `x-seen-*` headers.
struct Upstream {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(name: &str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (name, counter) = (name.to_string(), hits.clone());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (name, counter) = (name.clone(), counter.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let seen = |h: &str| {
                    parts
                        .headers
                        .get(h)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                let (method, uri) = (parts.method.to_string(), parts.uri.to_string());
                let (host, target) = (seen("host"), seen(TARGET_VARIANT_HEADER));
                let forwarded = seen("x-forwarded-for");
                let body = body.collect().await.unwrap().to_bytes();
                tokio::time::sleep(delay).await;
                Response::builder()
                    .header("content-type", "text/csv")
                    .header("x-seen-method", method)
                    .header("x-seen-uri", uri)
                    .header("x-seen-host", host)
                    .header("x-seen-target", target)
                    .header("x-seen-forwarded-for", forwarded)
                    .header("x-seen-body", body.len().to_string())
                    .body(Body::from(name))
                    .unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            url: format!("http://{addr}"),
            hits,
        }
    }

    async fn named(name: &str) -> Upstream {
        Upstream::start(name, Duration::ZERO).await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A URL nothing listens on.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn invoked(&self) -> &str {
        self.headers
            .get(INVOKED_VARIANT_HEADER)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A running router, with its configuration file in a temporary folder.
struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Running {
    async fn start(config: &Value) -> Running {
        Running::start_with(config, |_| {}).await
    }

    async fn start_with(config: &Value, adjust: impl FnOnce(&mut kiln_router::Options)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.json");
        std::fs::write(&path, config.to_string()).unwrap();
        Running::start_at(dir, path, adjust).await
    }

    async fn start_at(
        dir: tempfile::TempDir,
        path: PathBuf,
        adjust: impl FnOnce(&mut kiln_router::Options),
    ) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let mut options = kiln_router::Options::new(&path);
        adjust(&mut options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kiln_router::serve(options, listener, admin, async {
            let _ = stopped.await;
        }));
        let running = Running {
            addr,
            admin: admin_addr,
            dir,
            config: path,
            stop: Some(stop),
            task,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        eventually("the router's health", Duration::from_secs(10), || async {
            running.admin_get("/healthz").await.status == StatusCode::OK
        })
        .await;
        running
    }

    async fn send(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{to}{path}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn call(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(self.addr, Method::POST, path, headers, "1,2,3")
            .await
    }

    async fn admin_get(&self, path: &str) -> Answer {
        self.send(self.admin, Method::GET, path, &[], Bytes::new())
            .await
    }

    async fn revision(&self) -> i64 {
        self.admin_get("/config").await.json()["revision"]
            .as_i64()
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.body
    }

    /// Stops the router (as SIGTERM does) and waits for it to end.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the router stops")
            .unwrap()
            .unwrap();
    }
}

/// Waits until `condition` holds, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a metric's line starting with `series` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn variants(list: &[(&str, &Upstream, u32)]) -> Value {
    list.iter()
        .map(|(name, u, weight)| json!({"name": name, "url": u.url, "weight": weight}))
        .collect()
}

#[tokio::test]
async fn weights_split_the_traffic() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let router = Running::start(&json!({
        "endpoint": "ep", "revision": 1, "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 9), ("b", &b, 1)]),
    }))
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..2000 {
        let answer = router.call("/invocations", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.invoked(),
            answer.body,
            "the header names who answered"
        );
        *counts.entry(answer.body).or_default() += 1;
    }
    let share = counts["a"] as f64 / 2000.0;
    assert!((0.85..=0.95).contains(&share), "{counts:?}");
    assert_eq!(counts["a"] + counts["b"], 2000);
    assert_eq!((a.hits(), b.hits()), (counts["a"], counts["b"]));
    router.stop().await;
}

#[tokio::test]
async fn the_target_variant_header_pins_a_variant() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 1), ("b", &b, 0)]),
    }))
    .await;
    for header in [TARGET_VARIANT_HEADER, SAGEMAKER_TARGET_VARIANT_HEADER] {
        for _ in 0..20 {
            let answer = router.call("/invocations", &[(header, "b")]).await;
            assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "b"));
            assert_eq!(answer.invoked(), "b");
            // The header travels on: the variant sees what the caller sent.
            if header == TARGET_VARIANT_HEADER {
                assert_eq!(answer.header("x-seen-target"), "b");
            }
        }
    }
    assert_eq!(router.call("/invocations", &[]).await.body, "a");
    let refused = router
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "c")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.header("content-type"), "application/json");
    let body = refused.json();
    assert_eq!(body["variants"], json!(["a", "b"]));
    assert!(body["error"].as_str().unwrap().contains("\"c\""), "{body}");
    assert_eq!(b.hits(), 40);
    router.stop().await;
}

#[tokio::test]
async fn every_method_and_path_passes_through() {
    let a = Upstream::named("a").await;
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 1)]),
    }))
    .await;
    let ping = router
        .send(router.addr, Method::GET, "/ping", &[], Bytes::new())
        .await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(ping.header("x-seen-uri"), "/ping");
    let infer = router
        .send(
            router.addr,
            Method::PUT,
            "/v2/models/m/versions/1/infer?trace=1&x=%20",
            &[
                ("content-type", "application/json"),
                ("connection", "keep-alive"),
            ],
            r#"{"inputs":[]}"#,
        )
        .await;
    assert_eq!(infer.status, StatusCode::OK);
    assert_eq!(infer.header("x-seen-method"), "PUT");
    assert_eq!(
        infer.header("x-seen-uri"),
        "/v2/models/m/versions/1/infer?trace=1&x=%20"
    );
    assert_eq!(
        infer.header("x-seen-host"),
        a.url.trim_start_matches("http://")
    );
    assert_eq!(infer.header("x-seen-body"), "13");
    assert_eq!(infer.header("x-seen-forwarded-for"), "127.0.0.1");
    assert_eq!(infer.invoked(), "a");
    let deleted = router
        .send(router.addr, Method::DELETE, "/models/m", &[], Bytes::new())
        .await;
    assert_eq!(deleted.header("x-seen-method"), "DELETE");
    router.stop().await;
}

#[tokio::test]
async fn shadows_get_copies_and_never_touch_the_answer() {
    let a = Upstream::named("a").await;
    let all = Upstream::named("all").await;
    let some = Upstream::named("some").await;
    let slow = Upstream::start("slow", Duration::from_secs(10)).await;
    let down = closed_url().await;
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 5,
        "variants": variants(&[("a", &a, 1)]),
        "shadows": [
            {"name": "all", "url": all.url, "samplingPercent": 100},
            {"name": "some", "url": some.url, "samplingPercent": 30},
            {"name": "slow", "url": slow.url, "samplingPercent": 100},
            {"name": "down", "url": down, "samplingPercent": 100},
        ],
    }))
    .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let answer = router.call("/invocations", &[]).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
        assert_eq!(answer.invoked(), "a");
    }
    // The slow shadow takes 10 s per copy: the caller never waits on it.
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert_eq!(a.hits(), 100);
    eventually(
        "every copy to the 100% shadow",
        Duration::from_secs(10),
        || async { all.hits() == 100 },
    )
    .await;
    assert!((10..=55).contains(&some.hits()), "{}", some.hits());
    let m = router.metrics().await;
    let series = |shadow: &str, outcome: &str| {
        metric(
            &m,
            &format!(
                "kiln_router_shadow_requests_total{{endpoint=\"ep\",outcome=\"{outcome}\",variant=\"{shadow}\"}}"
            ),
        )
    };
    assert_eq!(series("all", "sent"), 100.0, "{m}");
    assert_eq!(series("some", "sent") as usize, some.hits());
    // At most 64 copies in flight to the slow shadow: the rest are dropped.
    assert_eq!(series("slow", "sent") + series("slow", "dropped"), 100.0);
    assert!(series("slow", "dropped") >= 36.0, "{m}");
    // Copies to the unreachable shadow fail after their connection retries;
    // those beyond its 64 in flight are dropped. Either way, counted.
    eventually("the unreachable shadow's errors", Duration::from_secs(10), || async {
        let m = router.metrics().await;
        let count = |outcome: &str| {
            metric(
                &m,
                &format!(
                    "kiln_router_shadow_requests_total{{endpoint=\"ep\",outcome=\"{outcome}\",variant=\"down\"}}"
                ),
            )
        };
        count("error") >= 1.0 && count("error") == count("sent") && count("sent") + count("dropped") == 100.0
    })
    .await;
    router.stop().await;
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The records of every file under `dir/<endpoint>/<variant>/`.
fn records(dir: &Path, endpoint: &str, variant: &str) -> Vec<Value> {
    let base = dir.join(endpoint).join(variant);
    files(&base)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(base.join(f))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// `yyyy/mm/dd/hh/mm-ss-<hex>.jsonl`.
fn well_placed(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 5
        && digits(parts[0], 4)
        && digits(parts[1], 2)
        && digits(parts[2], 2)
        && digits(parts[3], 2)
        && parts[4].ends_with(".jsonl")
        && {
            let name = parts[4].trim_end_matches(".jsonl");
            let pieces: Vec<&str> = name.split('-').collect();
            pieces.len() == 3
                && digits(pieces[0], 2)
                && digits(pieces[1], 2)
                && pieces[2].len() == 16
                && pieces[2].bytes().all(|b| b.is_ascii_hexdigit())
        }
}

#[tokio::test]
async fn data_capture_writes_records_of_variants_and_shadows() {
    let (a, s) = (Upstream::named("a").await, Upstream::named("s").await);
    let out = tempfile::tempdir().unwrap();
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 1)]),
        "shadows": [{"name": "s", "url": s.url, "samplingPercent": 100}],
        "dataCapture": {"samplingPercent": 100,
            "destination": format!("file://{}/capture", out.path().display()),
            "captureInput": true, "captureOutput": true,
            "maxBatchRecords": 5, "flushSeconds": 1},
    }))
    .await;
    for _ in 0..6 {
        let answer = router
            .send(
                router.addr,
                Method::POST,
                "/invocations",
                &[("content-type", "text/csv")],
                "1,2,3",
            )
            .await;
        assert_eq!(answer.body, "a");
    }
    let binary = router
        .send(
            router.addr,
            Method::POST,
            "/invocations",
            &[
                ("content-type", "application/octet-stream"),
                ("x-amzn-sagemaker-inference-id", "req-7"),
            ],
            vec![0u8, 1, 2, 255],
        )
        .await;
    assert_eq!(binary.body, "a");
    let dir = out.path().join("capture");
    // One file of 5 at once, the rest 1 s after their first record.
    eventually(
        "7 records of each variant",
        Duration::from_secs(15),
        || async { records(&dir, "ep", "a").len() == 7 && records(&dir, "ep", "s").len() == 7 },
    )
    .await;
    for variant in ["a", "s"] {
        let placed = files(&dir.join("ep").join(variant));
        assert!(placed.len() >= 2, "{placed:?}");
        assert!(placed.iter().all(|f| well_placed(f)), "{placed:?}");
    }
    let production = records(&dir, "ep", "a");
    let text = production
        .iter()
        .find(|r| r["captureData"]["endpointInput"]["encoding"] == "CSV")
        .unwrap();
    assert_eq!(
        text["captureData"],
        json!({
            "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                              "data": "1,2,3", "encoding": "CSV"},
            "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                               "data": "a", "encoding": "CSV"},
        })
    );
    assert_eq!(text["eventVersion"], "0");
    let meta = &text["eventMetadata"];
    assert_eq!(meta["variant"], "a");
    let id = meta["eventId"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let time = meta["inferenceTime"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    let bin = production
        .iter()
        .find(|r| r["eventMetadata"]["inferenceId"] == "req-7")
        .unwrap();
    assert_eq!(
        bin["captureData"]["endpointInput"],
        json!({"observedContentType": "application/octet-stream", "mode": "INPUT",
               "data": "AAEC/w==", "encoding": "BASE64"})
    );
    // A shadow's record holds its own answer, under the request's event id.
    let shadow = records(&dir, "ep", "s");
    assert!(
        shadow
            .iter()
            .all(|r| r["captureData"]["endpointOutput"]["data"] == "s"
                && r["eventMetadata"]["variant"] == "s")
    );
    let ids = |rs: &[Value]| {
        let mut ids: Vec<String> = rs
            .iter()
            .map(|r| r["eventMetadata"]["eventId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&production), ids(&shadow));
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "kiln_router_capture_records_total{endpoint=\"ep\",outcome=\"written\"}"
        ),
        14.0
    );
    router.stop().await;
}

#[tokio::test]
async fn capture_is_flushed_at_shutdown_and_honours_its_switches() {
    let a = Upstream::named("a").await;
    let out = tempfile::tempdir().unwrap();
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 1)]),
        "dataCapture": {"samplingPercent": 100,
            "destination": format!("file://{}", out.path().display()),
            "captureInput": false, "captureOutput": true,
            "maxBatchRecords": 1000, "flushSeconds": 3600},
    }))
    .await;
    for _ in 0..3 {
        router.call("/invocations", &[]).await;
    }
    assert!(
        files(out.path()).is_empty(),
        "nothing is due before shutdown"
    );
    router.stop().await;
    let written = records(out.path(), "ep", "a");
    assert_eq!(written.len(), 3, "{:?}", files(out.path()));
    for r in &written {
        assert!(r["captureData"].get("endpointInput").is_none(), "{r}");
        assert_eq!(r["captureData"]["endpointOutput"]["data"], "a");
    }
}

/// Writes a file into a ConfigMap-like folder as kubelet does: a new
/// timestamped folder, then an atomic rename of the `..data` symlink.
fn kubelet_write(dir: &Path, generation: u32, config: &str) {
    let version = format!("..2024_01_01_00_00_{generation:02}.000000");
    std::fs::create_dir(dir.join(&version)).unwrap();
    std::fs::write(dir.join(&version).join("router.json"), config).unwrap();
    std::os::unix::fs::symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("router.json").exists() {
        std::os::unix::fs::symlink("..data/router.json", dir.join("router.json")).unwrap();
    }
}

#[tokio::test]
async fn a_changed_file_is_applied_and_a_bad_one_ignored() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let config = |revision: i64, wa: u32, wb: u32| {
        json!({
            "endpoint": "ep", "revision": revision, "requestTimeoutSeconds": 10,
            "variants": variants(&[("a", &a, wa), ("b", &b, wb)]),
        })
        .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    kubelet_write(dir.path(), 1, &config(1, 1, 0));
    let path = dir.path().join("router.json");
    let router = Running::start_at(dir, path, |_| {}).await;
    assert_eq!(router.revision().await, 1);
    assert_eq!(router.call("/invocations", &[]).await.body, "a");

    kubelet_write(router.dir.path(), 2, &config(2, 0, 1));
    eventually("revision 2", Duration::from_secs(10), || async {
        router.revision().await == 2
    })
    .await;
    for _ in 0..50 {
        assert_eq!(router.call("/invocations", &[]).await.body, "b");
    }
    let m = router.metrics().await;
    assert_eq!(metric(&m, "kiln_router_config_revision"), 2.0);

    // Invalid versions (bad JSON, then a bad URL) leave revision 2 serving.
    kubelet_write(router.dir.path(), 3, "{ not json");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kubelet_write(
        router.dir.path(),
        4,
        &config(4, 1, 0).replace("http://", "ftp://"),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(router.revision().await, 2);
    assert_eq!(router.admin_get("/healthz").await.status, StatusCode::OK);
    assert_eq!(router.call("/invocations", &[]).await.body, "b");

    // A plain write-and-rename is seen too.
    let tmp = router.dir.path().join("new.json");
    std::fs::write(&tmp, config(5, 1, 0)).unwrap();
    std::fs::remove_file(&router.config).unwrap();
    std::fs::rename(&tmp, &router.config).unwrap();
    eventually("revision 5", Duration::from_secs(10), || async {
        router.revision().await == 5
    })
    .await;
    assert_eq!(router.call("/invocations", &[]).await.body, "a");
    router.stop().await;
}

#[tokio::test]
async fn upstream_failures_have_their_status_codes() {
    let slow = Upstream::start("slow", Duration::from_secs(3)).await;
    let fine = Upstream::named("fine").await;
    let down = closed_url().await;
    let router = Running::start_with(
        &json!({
            "endpoint": "ep", "requestTimeoutSeconds": 1,
            "variants": [
                {"name": "down", "url": down, "weight": 0},
                {"name": "slow", "url": slow.url, "weight": 0},
                {"name": "fine", "url": fine.url, "weight": 1},
            ],
        }),
        |o| o.max_body_bytes = 1024,
    )
    .await;
    let refused = router
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "down")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert_eq!(refused.invoked(), "down");
    assert!(refused.json()["error"].as_str().unwrap().contains("down"));

    let started = Instant::now();
    let late = router
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "slow")])
        .await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(late.json()["error"].as_str().unwrap().contains("1 s"));

    let large = router
        .send(
            router.addr,
            Method::POST,
            "/invocations",
            &[],
            vec![b'x'; 4096],
        )
        .await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(large.json()["error"].as_str().unwrap().contains("1024"));
    let fits = router
        .send(
            router.addr,
            Method::POST,
            "/invocations",
            &[],
            vec![b'x'; 1024],
        )
        .await;
    assert_eq!((fits.status, fits.body.as_str()), (StatusCode::OK, "fine"));
    assert_eq!(fits.header("x-seen-body"), "1024");
    router.stop().await;

    let idle = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 1,
        "variants": [{"name": "fine", "url": fine.url, "weight": 0}],
    }))
    .await;
    let none = idle.call("/invocations", &[]).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(none.json()["variants"], json!(["fine"]));
    let pinned = idle
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "fine")])
        .await;
    assert_eq!(pinned.status, StatusCode::OK);
    idle.stop().await;
}

#[tokio::test]
async fn the_admin_port_serves_metrics_health_and_config() {
    let a = Upstream::named("a").await;
    let config = json!({
        "endpoint": "ep", "revision": 7, "requestTimeoutSeconds": 10,
        "variants": variants(&[("a", &a, 1)]),
    });
    let router = Running::start(&config).await;
    for _ in 0..3 {
        router.call("/invocations", &[]).await;
    }
    router
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "x")])
        .await;
    let m = router.admin_get("/metrics").await;
    assert!(m.header("content-type").starts_with("text/plain"));
    let m = m.body;
    for (series, value) in [
        (
            "kiln_router_requests_total{code=\"2xx\",endpoint=\"ep\",variant=\"a\"}",
            3.0,
        ),
        (
            "kiln_router_requests_total{code=\"4xx\",endpoint=\"ep\",variant=\"none\"}",
            1.0,
        ),
        (
            "kiln_router_request_duration_seconds_count{endpoint=\"ep\",variant=\"a\"}",
            3.0,
        ),
        (
            "kiln_router_request_duration_seconds_bucket{endpoint=\"ep\",variant=\"a\",le=\"10\"}",
            3.0,
        ),
        (
            "kiln_router_in_flight_requests{endpoint=\"ep\",variant=\"a\"}",
            0.0,
        ),
        ("kiln_router_config_revision", 7.0),
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
        assert_eq!(metric(&m, series), value, "{series}");
    }
    assert!(m.contains("le=\"0.0005\""), "{m}");
    let health = router.admin_get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["revision"], 7);
    let applied = router.admin_get("/config").await.json();
    assert_eq!(applied, config);
    router.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let slow = Upstream::start("slow", Duration::from_millis(800)).await;
    let router = Running::start(&json!({
        "endpoint": "ep", "requestTimeoutSeconds": 10,
        "variants": variants(&[("slow", &slow, 1)]),
    }))
    .await;
    let client = router.client.clone();
    let uri = format!("http://{}/invocations", router.addr);
    let in_flight = tokio::spawn(async move {
        let response = client
            .request(
                hyper::Request::post(uri)
                    .body(Full::new(Bytes::from_static(b"x")))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    eventually(
        "the request reaching the variant",
        Duration::from_secs(5),
        || async { slow.hits() == 1 },
    )
    .await;
    let addr = router.addr;
    router.stop().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
    // And no longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_missing_or_invalid_file_fails_at_start() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("router.json");
    let e = kiln_router::serve(
        kiln_router::Options::new(&missing),
        listener,
        admin,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    std::fs::write(
        &missing,
        r#"{"endpoint":"ep","requestTimeoutSeconds":1,"variants":[]}"#,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = kiln_router::serve(
        kiln_router::Options::new(&missing),
        listener,
        admin,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no variants"), "{e}");
}

/// A replica that starts listening a moment after the request arrives (in
/// its Service, not yet in the node's forwarding rules): the refused
/// connection is tried again and the caller gets the answer, not a 502.
#[tokio::test]
async fn a_refused_connection_is_tried_again_before_a_502() {
    let url = closed_url().await;
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let router = Running::start_with(
        &json!({
            "endpoint": "ep", "requestTimeoutSeconds": 5,
            "variants": [{"name": "late", "url": url, "weight": 1}],
        }),
        |_| {},
    )
    .await;
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let app = axum::Router::new().fallback(|| async { "late" });
        axum::serve(listener, app).await.unwrap();
    });
    let answer = router.call("/invocations", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "late");
    server.abort();
    router.stop().await;
}

/// A variant that closes the connection as a request arrives (a replica
/// draining its idle keep-alive connections) gets the request once more
/// on a fresh connection; one that keeps doing so gets a 502.
#[tokio::test]
async fn a_connection_closed_before_the_answer_is_tried_once_more() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn flaky(closes: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    if n >= closes {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh")
                            .await;
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }
    let (once, once_seen) = flaky(1).await;
    let (always, _) = flaky(usize::MAX).await;
    let router = Running::start_with(
        &json!({
            "endpoint": "ep", "requestTimeoutSeconds": 5,
            "variants": [
                {"name": "once", "url": once, "weight": 1},
                {"name": "always", "url": always, "weight": 0},
            ],
        }),
        |_| {},
    )
    .await;
    let answer = router.call("/invocations", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "fresh")
    );
    assert_eq!(once_seen.load(Ordering::SeqCst), 2);
    let broken = router
        .call("/invocations", &[(TARGET_VARIANT_HEADER, "always")])
        .await;
    assert_eq!(broken.status, StatusCode::BAD_GATEWAY);
    router.stop().await;
}
