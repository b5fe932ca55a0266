//! Data capture: sampled requests and responses recorded as JSON Lines in
//! SageMaker's capture format, batched per variant and written as one object
//! per batch under
//! `<destination>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<mm-ss>-<random>.jsonl`.
//!
//! The proxy never waits on capture: [`Capture::submit`] puts a record on a
//! bounded queue, and drops it (counted) when the queue is full. A
//! background writer ([`run`]) batches the records and writes them,
//! retrying a failed write a few times before dropping the batch (counted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kiln_api::router::CaptureConfig;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Utc;
use crate::metrics::Metrics;
use crate::storage::{self, Destination};

/// Records waiting for the writer at most; more are dropped.
pub const QUEUE: usize = 10_000;

/// Objects being written at once.
const WRITES_IN_FLIGHT: usize = 4;

/// Tries of one object's write.
const ATTEMPTS: u32 = 4;

/// How a body is recorded (SageMaker's `encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Csv,
    Json,
    Base64,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Csv => "CSV",
            Encoding::Json => "JSON",
            Encoding::Base64 => "BASE64",
        }
    }

    /// The encoding of a body of `content_type`: JSON for JSON and JSON
    /// Lines, CSV for CSV and any other `text/*`, base64 for the rest.
    pub fn of(content_type: &str) -> Encoding {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let (kind, sub) = mime.split_once('/').unwrap_or((mime.as_str(), ""));
        match (kind, sub) {
            (_, "json" | "jsonlines" | "jsonl" | "x-jsonlines" | "x-ndjson" | "ndjson") => {
                Encoding::Json
            }
            (_, sub) if sub.ends_with("+json") => Encoding::Json,
            ("text", _) => Encoding::Csv,
            (_, "csv") => Encoding::Csv,
            _ => Encoding::Base64,
        }
    }
}

/// `data` as recorded: text when the content type is textual and the bytes
/// are UTF-8, else base64.
pub fn encode(content_type: &str, data: &[u8]) -> (Encoding, String) {
    match Encoding::of(content_type) {
        Encoding::Base64 => (Encoding::Base64, base64(data)),
        text => match std::str::from_utf8(data) {
            Ok(s) => (text, s.to_string()),
            Err(_) => (Encoding::Base64, base64(data)),
        },
    }
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One recorded body.
#[derive(Debug, Clone)]
pub struct Body<'a> {
    pub content_type: &'a str,
    pub data: &'a [u8],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    capture_data: CaptureData,
    event_metadata: EventMetadata<'a>,
    event_version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CaptureData {
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_input: Option<Recorded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_output: Option<Recorded>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Recorded {
    observed_content_type: String,
    mode: &'static str,
    data: String,
    encoding: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventMetadata<'a> {
    event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_id: Option<&'a str>,
    inference_time: String,
    variant: &'a str,
}

fn recorded(mode: &'static str, body: &Body<'_>) -> Recorded {
    let (encoding, data) = encode(body.content_type, body.data);
    Recorded {
        observed_content_type: body.content_type.to_string(),
        mode,
        data,
        encoding: encoding.as_str(),
    }
}

/// What one record says, before it is a line.
pub struct Event<'a> {
    pub event_id: &'a str,
    pub inference_id: Option<&'a str>,
    pub at: SystemTime,
    pub variant: &'a str,
    /// `None` when input is not captured.
    pub input: Option<Body<'a>>,
    /// `None` when output is not captured.
    pub output: Option<Body<'a>>,
}

/// One JSON line of SageMaker's capture format (without the newline).
pub fn line(event: &Event<'_>) -> String {
    let line = Line {
        capture_data: CaptureData {
            endpoint_input: event.input.as_ref().map(|b| recorded("INPUT", b)),
            endpoint_output: event.output.as_ref().map(|b| recorded("OUTPUT", b)),
        },
        event_metadata: EventMetadata {
            event_id: event.event_id,
            inference_id: event.inference_id,
            inference_time: Utc::of(event.at).rfc3339(),
            variant: event.variant,
        },
        event_version: "0",
    };
    serde_json::to_string(&line).expect("a capture record serializes")
}

/// The key of a batch's object, relative to the destination's prefix:
/// `<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<mm-ss>-<random>.jsonl`, at
/// the time of the batch's first record.
pub fn object_key(endpoint: &str, variant: &str, at: SystemTime, random: &str) -> String {
    let t = Utc::of(at);
    format!(
        "{endpoint}/{variant}/{:04}/{:02}/{:02}/{:02}/{:02}-{:02}-{random}.jsonl",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// One record on its way to the writer.
pub struct Record {
    pub config: Arc<CaptureConfig>,
    pub endpoint: String,
    pub variant: String,
    pub at: SystemTime,
    pub line: String,
}

/// The proxy's end of the queue.
#[derive(Clone)]
pub struct Capture {
    tx: mpsc::Sender<Record>,
    metrics: Metrics,
}

impl Capture {
    /// Queues a record, or drops it (counted) when the queue is full.
    pub fn submit(&self, record: Record) {
        if let Err(e) = self.tx.try_send(record) {
            let record = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            self.metrics.capture(&record.endpoint, "dropped", 1);
        }
    }
}

/// A queue and its receiving end, for [`run`].
pub fn queue(metrics: Metrics, capacity: usize) -> (Capture, mpsc::Receiver<Record>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Capture { tx, metrics }, rx)
}

/// Records of one (destination, endpoint, variant) not yet written.
struct Batch {
    config: Arc<CaptureConfig>,
    endpoint: String,
    variant: String,
    first: SystemTime,
    deadline: Instant,
    lines: Vec<String>,
}

type Key = (String, String, String);

/// The writer: receives records until `stop`, then writes what is queued and
/// batched and returns once every write has ended.
pub async fn run(mut rx: mpsc::Receiver<Record>, metrics: Metrics, stop: CancellationToken) {
    let mut stores: HashMap<String, Destination> = HashMap::new();
    let mut batches: HashMap<Key, Batch> = HashMap::new();
    let mut writes = JoinSet::new();
    let mut stopping = false;
    loop {
        let next = batches.values().map(|b| b.deadline).min();
        tokio::select! {
            record = rx.recv() => match record {
                Some(record) => {
                    let key = (
                        record.config.destination.clone(),
                        record.endpoint.clone(),
                        record.variant.clone(),
                    );
                    let batch = batches.entry(key.clone()).or_insert_with(|| Batch {
                        deadline: Instant::now()
                            + Duration::from_secs(u64::from(record.config.flush_seconds.max(1))),
                        config: record.config.clone(),
                        endpoint: record.endpoint.clone(),
                        variant: record.variant.clone(),
                        first: record.at,
                        lines: Vec::new(),
                    });
                    batch.lines.push(record.line);
                    if batch.lines.len() >= batch.config.max_batch_records.max(1) as usize {
                        let batch = batches.remove(&key).expect("the batch just filled");
                        write(batch, &mut stores, &metrics, &mut writes).await;
                    }
                }
                None => break,
            },
            _ = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<Key> = batches
                    .iter()
                    .filter(|(_, b)| b.deadline <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    if let Some(batch) = batches.remove(&key) {
                        write(batch, &mut stores, &metrics, &mut writes).await;
                    }
                }
            }
            Some(_) = writes.join_next(), if !writes.is_empty() => {}
            _ = stop.cancelled(), if !stopping => {
                // Take no more; what is queued still arrives, then `None`.
                stopping = true;
                rx.close();
            }
        }
    }
    for (_, batch) in batches.drain() {
        write(batch, &mut stores, &metrics, &mut writes).await;
    }
    while writes.join_next().await.is_some() {}
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts writing `batch` as one object (waiting while too many writes are
/// in flight).
async fn write(
    batch: Batch,
    stores: &mut HashMap<String, Destination>,
    metrics: &Metrics,
    writes: &mut JoinSet<()>,
) {
    let n = batch.lines.len() as u64;
    let destination = &batch.config.destination;
    let dest = match stores.get(destination) {
        Some(d) => d.clone(),
        None => match storage::open(destination) {
            Ok(d) => {
                stores.insert(destination.clone(), d.clone());
                d
            }
            Err(e) => {
                tracing::error!(error = %e, records = n, "capture records dropped");
                metrics.capture(&batch.endpoint, "failed", n);
                return;
            }
        },
    };
    while writes.len() >= WRITES_IN_FLIGHT {
        writes.join_next().await;
    }
    let key = object_key(
        &batch.endpoint,
        &batch.variant,
        batch.first,
        &crate::choose::random_suffix(),
    );
    let path = dest.path(&key);
    let mut body = String::with_capacity(batch.lines.iter().map(|l| l.len() + 1).sum());
    for l in &batch.lines {
        body.push_str(l);
        body.push('\n');
    }
    let body = Bytes::from(body);
    let metrics = metrics.clone();
    let endpoint = batch.endpoint;
    let uri = format!("{}/{key}", destination.trim_end_matches('/'));
    writes.spawn(async move {
        let mut wait = Duration::from_millis(250);
        for attempt in 1..=ATTEMPTS {
            match dest
                .store
                .put(&path, PutPayload::from_bytes(body.clone()))
                .await
            {
                Ok(_) => {
                    tracing::debug!(object = %uri, records = n, "capture written");
                    metrics.capture(&endpoint, "written", n);
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(object = %uri, error = %e, attempt,
                        "capture write failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                Err(e) => {
                    tracing::error!(object = %uri, error = %e, records = n,
                        "capture write failed; records dropped");
                    metrics.capture(&endpoint, "failed", n);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn content_types_choose_the_encoding() {
        for (ct, e) in [
            ("text/csv", Encoding::Csv),
            ("text/csv; charset=utf-8", Encoding::Csv),
            ("TEXT/CSV", Encoding::Csv),
            ("text/plain", Encoding::Csv),
            ("application/csv", Encoding::Csv),
            ("application/json", Encoding::Json),
            ("application/json; charset=utf-8", Encoding::Json),
            ("application/jsonlines", Encoding::Json),
            ("application/x-ndjson", Encoding::Json),
            ("application/vnd.api+json", Encoding::Json),
            ("application/octet-stream", Encoding::Base64),
            ("image/png", Encoding::Base64),
            ("application/x-npy", Encoding::Base64),
            ("", Encoding::Base64),
        ] {
            assert_eq!(Encoding::of(ct), e, "{ct}");
        }
        assert_eq!(
            encode("text/csv", b"1,2\n"),
            (Encoding::Csv, "1,2\n".into())
        );
        // Text that is not UTF-8 is kept as base64.
        assert_eq!(
            encode("text/csv", &[0xff, 0xfe]),
            (Encoding::Base64, "//4=".into())
        );
        assert_eq!(
            encode("image/png", b"\x89PNG"),
            (Encoding::Base64, "iVBORw==".into())
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn keys_follow_the_hour_layout() {
        let at = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(
            object_key("ep", "a", at, "0123456789abcdef"),
            "ep/a/2024/02/29/23/59-59-0123456789abcdef.jsonl"
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_704_070_984);
        assert_eq!(
            object_key("ep", "shadow-1", at, "x"),
            "ep/shadow-1/2024/01/01/01/03-04-x.jsonl"
        );
    }

    #[test]
    fn lines_use_sagemakers_capture_format() {
        let at = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        let text = line(&Event {
            event_id: "abc",
            inference_id: None,
            at,
            variant: "a",
            input: Some(Body {
                content_type: "text/csv",
                data: b"1,2,3",
            }),
            output: Some(Body {
                content_type: "application/octet-stream",
                data: b"\x00\x01",
            }),
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "captureData": {
                    "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                      "data": "1,2,3", "encoding": "CSV"},
                    "endpointOutput": {"observedContentType": "application/octet-stream",
                                       "mode": "OUTPUT", "data": "AAE=", "encoding": "BASE64"}
                },
                "eventMetadata": {"eventId": "abc", "inferenceTime": "2024-02-29T23:59:59Z",
                                  "variant": "a"},
                "eventVersion": "0"
            })
        );
        let only_output = line(&Event {
            event_id: "abc",
            inference_id: Some("req-1"),
            at,
            variant: "a",
            input: None,
            output: Some(Body {
                content_type: "application/json",
                data: br#"{"y":1}"#,
            }),
        });
        let v: serde_json::Value = serde_json::from_str(&only_output).unwrap();
        assert!(v["captureData"].get("endpointInput").is_none());
        assert_eq!(v["captureData"]["endpointOutput"]["encoding"], "JSON");
        assert_eq!(v["eventMetadata"]["inferenceId"], "req-1");
    }

    #[tokio::test]
    async fn batches_by_count_and_flushes_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(CaptureConfig {
            sampling_percent: 100,
            destination: format!("file://{}/out", dir.path().display()),
            capture_input: true,
            capture_output: true,
            max_batch_records: 3,
            flush_seconds: 3600,
        });
        let metrics = Metrics::new();
        let (capture, rx) = queue(metrics.clone(), 100);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(run(rx, metrics.clone(), stop.clone()));
        for i in 0..4 {
            capture.submit(Record {
                config: config.clone(),
                endpoint: "ep".into(),
                variant: "a".into(),
                at: SystemTime::now(),
                line: format!("{{\"n\":{i}}}"),
            });
        }
        stop.cancel();
        writer.await.unwrap();
        let files: Vec<_> = walk(&dir.path().join("out/ep/a"));
        assert_eq!(files.len(), 2, "{files:?}");
        let mut counts: Vec<usize> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .collect();
        counts.sort();
        assert_eq!(counts, [1, 3]);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                r#"kiln_router_capture_records_total{endpoint="ep",outcome="written"} 4"#
            ),
            "{text}"
        );
        // After the writer ended, records are dropped and counted.
        capture.submit(Record {
            config,
            endpoint: "ep".into(),
            variant: "a".into(),
            at: SystemTime::now(),
            line: "{}".into(),
        });
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                r#"kiln_router_capture_records_total{endpoint="ep",outcome="dropped"} 1"#
            )
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
