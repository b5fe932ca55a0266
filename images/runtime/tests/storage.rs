//! Storage URIs against a real S3-compatible store (SeaweedFS on loopback):
//! channels read straight from `s3://` (CSV streamed, Parquet by range
//! requests), models served from an `s3://` prefix and from a
//! `model.tar.gz`, and the messages of bad credentials and missing data.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use common::s3::S3;
use common::server::{Server, csv, dataset, rows, train};
use common::{Job, max_diff, run_ranks};
use serde_json::json;

fn iris_job() -> Job {
    Job::new("linear-learner")
        .hp("predictor_type", "multiclass_classifier")
        .hp("num_classes", 3)
        .hp("epochs", 20)
        .hp("learning_rate", 0.05)
        .hp("mini_batch_size", 16)
}

/// Declares the job's channels in `inputdataconfig.json`.
fn channels(job: &Job, config: serde_json::Value) {
    let dir = job.root().join("input/config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inputdataconfig.json"), config.to_string()).unwrap();
}

fn with_env(mut job: Job, s3: &S3) -> Job {
    for (k, v) in s3.env() {
        job = job.env(&k, v);
    }
    job
}

/// The iris rows as one Parquet file: the label, then the four features.
fn parquet(rows: &[(f64, Vec<f64>)]) -> Vec<u8> {
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "label".into(),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.0))),
    )];
    for c in 0..rows[0].1.len() {
        columns.push((
            format!("f{c}"),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1[c]))),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut out = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(40))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

#[test]
fn channels_are_read_straight_from_s3() {
    let s3 = S3::start();
    let train_rows = rows("iris", "train");
    let text = std::fs::read_to_string(dataset("iris", "train").join("data.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let half = lines.len() / 2;
    s3.put(
        "iris/csv/part-0.csv",
        (lines[..half].join("\n") + "\n").into_bytes(),
    );
    s3.put(
        "iris/csv/part-1.csv",
        (lines[half..].join("\n") + "\n").into_bytes(),
    );
    s3.put("iris/csv/.hidden", b"not,data\n".to_vec());
    s3.put("iris/parquet/data.parquet", parquet(&train_rows));
    let test_csv = std::fs::read(dataset("iris", "test").join("data.csv")).unwrap();
    s3.put("iris/test.csv", test_csv);

    let local = iris_job()
        .channel_from("train", &dataset("iris", "train"))
        .channel_from("validation", &dataset("iris", "test"));
    let local_out = local.run();
    local_out.assert_ok();

    let from_csv = with_env(iris_job(), &s3);
    channels(
        &from_csv,
        json!({
            "train": {"ContentType": "text/csv", "Uri": s3.uri("iris/csv/")},
            "validation": {"Uri": s3.uri("iris/test.csv")},
        }),
    );
    let csv_out = from_csv.run();
    csv_out.assert_ok();

    let from_parquet = with_env(iris_job(), &s3);
    channels(
        &from_parquet,
        json!({
            "train": {"ContentType": "application/x-parquet", "Uri": s3.uri("iris/parquet")},
            "validation": {"Uri": s3.uri("iris/test.csv")},
        }),
    );
    let parquet_out = from_parquet.run();
    parquet_out.assert_ok();

    // Same rows in the same order: the same model and metrics as the local run.
    for (name, job, out) in [
        ("csv", &from_csv, &csv_out),
        ("parquet", &from_parquet, &parquet_out),
    ] {
        let diff = max_diff(&local.model(), &job.model());
        assert!(diff < 1e-5, "{name}: weights differ by {diff}");
        let acc = out.metric("validation:accuracy");
        assert_eq!(acc, local_out.metric("validation:accuracy"), "{name}");
        assert!(acc > 0.85, "{name}: validation accuracy {acc}");
        // Nothing was copied into the channel folders.
        assert!(!job.root().join("input/data/train").exists(), "{name}");
    }
}

#[test]
fn bad_credentials_and_missing_data_fail_with_a_reason() {
    let s3 = S3::start();
    s3.put("iris/data.csv", b"0,1,2\n1,2,3\n".to_vec());

    let wrong_key = iris_job()
        .env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_REGION", "us-east-1");
    channels(&wrong_key, json!({"train": {"Uri": s3.uri("iris/")}}));
    let out = wrong_key.run();
    assert_eq!(out.code, 2, "{out:#?}");
    let failure = out.failure.clone().unwrap();
    assert!(failure.contains("channel train"), "{failure}");
    assert!(failure.contains("access denied"), "{failure}");
    assert!(!failure.contains("not-the-secret"), "{failure}");

    let missing = with_env(iris_job(), &s3);
    channels(&missing, json!({"train": {"Uri": s3.uri("nothing/here/")}}));
    let out = missing.run();
    assert_eq!(out.code, 2, "{out:#?}");
    let failure = out.failure.unwrap();
    assert!(
        failure.contains("s3://kiln-test/nothing/here/: no objects there"),
        "{failure}"
    );

    let malformed = with_env(iris_job(), &s3);
    s3.put("bad/data.csv", b"0,1,2\n1,x,3\n".to_vec());
    channels(&malformed, json!({"train": {"Uri": s3.uri("bad")}}));
    let out = malformed.run();
    assert_eq!(out.code, 2, "{out:#?}");
    let failure = out.failure.unwrap();
    assert!(
        failure.contains("s3://kiln-test/bad/data.csv line 2: column 2 is \"x\", not a number"),
        "{failure}"
    );
}

#[test]
fn sharded_channels_split_objects_between_ranks() {
    // Four objects; with ShardedByS3Key rank r of 2 reads objects r and
    // r + 2. PCA's statistics are sums over rows, so 2 ranks reading half
    // the objects each reach the components of 1 rank reading them all.
    let s3 = S3::start();
    let text = std::fs::read_to_string(dataset("wine", "train_x").join("data.csv")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let per = lines.len().div_ceil(4);
    for (i, part) in lines.chunks(per).enumerate() {
        s3.put(
            &format!("wine/part-{i}.csv"),
            (part.join("\n") + "\n").into_bytes(),
        );
    }
    let job = |sharded: bool| {
        let job = with_env(
            Job::new("pca")
                .hp("num_components", 3)
                .hp("algorithm_mode", "regular"),
            &s3,
        );
        let distribution = if sharded {
            "ShardedByS3Key"
        } else {
            "FullyReplicated"
        };
        channels(
            &job,
            json!({"train": {"Uri": s3.uri("wine/"), "S3DistributionType": distribution}}),
        );
        job
    };
    let single = run_ranks(1, &|| job(false)).remove(0);
    let sharded = run_ranks(2, &|| job(true));
    let diff = max_diff(&single.model(), &sharded[0].model());
    assert!(diff < 1e-4, "2 sharded ranks differ from 1 rank by {diff}");
    let replicated = run_ranks(2, &|| job(false));
    let diff = max_diff(&single.model(), &replicated[0].model());
    assert!(
        diff < 1e-4,
        "2 replicated ranks differ from 1 rank by {diff}"
    );

    // More ranks than objects: the rank without one says so.
    s3.put("one/data.csv", lines.join("\n").into_bytes());
    let (_, outcomes) = common::launch_ranks(2, &|| {
        let job = with_env(Job::new("pca").hp("num_components", 2), &s3);
        channels(
            &job,
            json!({"train": {"Uri": s3.uri("one/"), "S3DistributionType": "ShardedByS3Key"}}),
        );
        job
    });
    assert_eq!(outcomes[1].code, 2, "{outcomes:#?}");
    let failure = outcomes[1].failure.clone().unwrap();
    assert!(
        failure.contains("leaves rank 1 of 2 no object"),
        "{failure}"
    );
    assert_ne!(outcomes[0].code, 0, "rank 0 finished alone: {outcomes:#?}");
}

/// A `model.tar.gz` of a model folder, as SageMaker jobs write them.
fn tarball(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for f in ["model.json", "model.safetensors"] {
        tar.append_path_with_name(dir.join(f), f).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn models_are_served_from_s3_prefixes_and_tarballs() {
    let s3 = S3::start();
    let model = train(
        "storage-iris",
        iris_job().channel_from("train", &dataset("iris", "train")),
    );
    s3.put_dir("models/iris", &model);
    s3.put("models/iris.tar.gz", tarball(&model));
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let env: Vec<(String, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = csv(&rows("iris", "test"));

    let local = Server::start(&["--model", model.to_str().unwrap()]);
    let expected = local
        .post("/invocations", "text/csv", body.as_bytes())
        .expect(200)
        .json();

    for uri in [s3.uri("models/iris/"), s3.uri("models/iris.tar.gz")] {
        let server = Server::start_env(&["--model", &uri, "--model-cache", cache_arg], &env);
        let got = server
            .post("/invocations", "text/csv", body.as_bytes())
            .expect(200)
            .json();
        assert_eq!(got, expected, "{uri}");
        assert!(server.log_text().contains("model downloaded"), "{uri}");
    }

    // Multi-model mode: load from s3://, invoke, unload (the download goes).
    let server = Server::start_env(&["--multi-model", "--model-cache", cache_arg], &env);
    server
        .post(
            "/models",
            "application/json",
            json!({"model_name": "tgz", "url": s3.uri("models/iris.tar.gz")})
                .to_string()
                .as_bytes(),
        )
        .expect(200);
    let got = server
        .post("/models/tgz/invoke", "text/csv", body.as_bytes())
        .expect(200)
        .json();
    assert_eq!(got, expected);
    let cached = |name: &str| {
        std::fs::read_dir(cache.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-"))
            })
    };
    assert!(cached("tgz"));
    server
        .request("DELETE", "/models/tgz", &[], b"")
        .expect(200);
    assert!(!cached("tgz"), "the unloaded model's download was kept");
    let reply = server.post(
        "/models",
        "application/json",
        json!({"model_name": "gone", "url": s3.uri("models/none/")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("s3://kiln-test/models/none/: no objects there"),
        "{}",
        reply.text()
    );

    // Single-model mode: a model that cannot be fetched stops the server
    // at start with exit code 2 and the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-runtime"))
        .args([
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--device",
            "cpu",
        ])
        .args([
            "--model",
            &s3.uri("models/none/"),
            "--model-cache",
            cache_arg,
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no objects there"), "{stderr}");
}
