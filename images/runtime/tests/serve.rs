//! `kiln-runtime serve` end to end: real models trained on the fixtures,
//! served by the binary on a loopback port, every route and error code,
//! batching, multi-model loading and eviction, graceful shutdown.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::Job;
use common::server::{Server, csv, dataset, rows, train, wait_for};
use serde_json::{Value, json};

fn job(algorithm: &str, dataset_name: &str, split: &str) -> Job {
    Job::new(algorithm).channel_from("train", &dataset(dataset_name, split))
}

/// The iris multiclass linear learner every route test uses.
fn iris() -> &'static PathBuf {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        train(
            "iris-linear",
            job("linear-learner", "iris", "train")
                .hp("predictor_type", "multiclass_classifier")
                .hp("num_classes", 3)
                .hp("epochs", 40)
                .hp("learning_rate", 0.05),
        )
    })
}

fn iris_server(extra: &[&str]) -> Server {
    let mut args = vec!["--model", iris().to_str().unwrap(), "--model-name", "iris"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn accuracy(labels: &[i64], data: &[(f64, Vec<f64>)]) -> f64 {
    assert_eq!(labels.len(), data.len());
    let right = labels
        .iter()
        .zip(data)
        .filter(|(l, (y, _))| **l as f64 == *y)
        .count();
    right as f64 / data.len() as f64
}

fn labels_of(v: &Value, key: &str) -> Vec<i64> {
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[key].as_i64().unwrap())
        .collect()
}

#[test]
fn every_algorithm_is_served_with_the_training_predictions() {
    let test = |name: &str| rows(name, "test");
    // Trained side by side: (name, job).
    let jobs: Vec<(&str, Job)> = vec![
        (
            "diabetes-linear",
            job("linear-learner", "diabetes", "train")
                .hp("predictor_type", "regressor")
                .hp("epochs", 30),
        ),
        (
            "cancer-linear",
            job("linear-learner", "breast_cancer", "train")
                .hp("predictor_type", "binary_classifier")
                .hp("epochs", 30),
        ),
        ("iris-kmeans", job("kmeans", "iris", "train_x").hp("k", 3)),
        (
            "iris-pca",
            job("pca", "iris", "train_x").hp("num_components", 2),
        ),
        (
            "iris-knn",
            job("knn", "iris", "train")
                .hp("k", 5)
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3),
        ),
        (
            "iris-mlp",
            job("mlp", "iris", "train")
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3)
                .hp("epochs", 200)
                .hp("learning_rate", 0.01),
        ),
        (
            "digits-image",
            job("image-classifier", "digits", "train")
                .hp("num_classes", 10)
                .hp("image_shape", "1,8,8")
                .hp("epochs", 5)
                .hp("mini_batch_size", 64)
                .hp("learning_rate", 0.003),
        ),
        (
            "text",
            job("text-classifier", "text", "train")
                .hp("num_classes", 3)
                .hp("epochs", 5),
        ),
    ];
    let dirs: Vec<(String, PathBuf)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(name, j)| s.spawn(move || (name.to_string(), train(name, j))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let dir = |name: &str| dirs.iter().find(|(n, _)| n == name).unwrap().1.clone();
    // One multi-model server answers for all of them (and for iris).
    let server = Server::start(&["--multi-model"]);
    for (name, d) in dirs
        .iter()
        .chain([&("iris-linear".to_string(), iris().clone())])
    {
        server
            .post(
                "/models",
                "application/json",
                json!({"model_name": name, "url": d}).to_string().as_bytes(),
            )
            .expect(200);
    }
    let invoke = |model: &str, ct: &str, body: &[u8]| {
        server
            .post(&format!("/models/{model}/invoke"), ct, body)
            .expect(200)
            .json()
    };

    // linear-learner: the served classes are those of x @ weight + bias.
    let iris_test = test("iris");
    let v = invoke("iris-linear", "text/csv", csv(&iris_test).as_bytes());
    let labels = labels_of(&v, "predicted_label");
    let (_, tensors) = kiln_runtime::artifact::read(iris()).unwrap();
    let x: Vec<f32> = iris_test
        .iter()
        .flat_map(|(_, r)| r.iter().map(|&v| v as f32))
        .collect();
    let x = tch::Tensor::from_slice(&x).view([iris_test.len() as i64, 4]);
    let expected = (x.matmul(&tensors["weight"]) + &tensors["bias"]).argmax(1, false);
    assert_eq!(labels, Vec::<i64>::try_from(expected).unwrap());
    assert!(accuracy(&labels, &iris_test) > 0.85);
    for p in v["predictions"].as_array().unwrap() {
        let probs: f64 = p["score"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((probs - 1.0).abs() < 1e-4, "{p}");
    }

    let diabetes = test("diabetes");
    let v = invoke("diabetes-linear", "text/csv", csv(&diabetes).as_bytes());
    let scores: Vec<f64> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .collect();
    let mean: f64 = diabetes.iter().map(|r| r.0).sum::<f64>() / diabetes.len() as f64;
    let sse: f64 = scores
        .iter()
        .zip(&diabetes)
        .map(|(s, r)| (s - r.0).powi(2))
        .sum();
    let sst: f64 = diabetes.iter().map(|r| (r.0 - mean).powi(2)).sum();
    assert!(1.0 - sse / sst > 0.3, "diabetes r2 {}", 1.0 - sse / sst);

    let cancer = test("breast_cancer");
    let v = invoke("cancer-linear", "text/csv", csv(&cancer).as_bytes());
    assert!(accuracy(&labels_of(&v, "predicted_label"), &cancer) > 0.9);
    for p in v["predictions"].as_array().unwrap() {
        let (s, l) = (
            p["score"].as_f64().unwrap(),
            p["predicted_label"].as_i64().unwrap(),
        );
        assert_eq!(l, i64::from(s > 0.5), "{p}");
    }

    let v = invoke("iris-kmeans", "text/csv", csv(&iris_test).as_bytes());
    let clusters = labels_of(&v, "closest_cluster");
    assert!(clusters.iter().all(|c| (0..3).contains(c)));
    assert!(v["predictions"][0]["distance_to_cluster"].as_f64().unwrap() >= 0.0);
    // The rows of one species mostly share a cluster.
    let setosa: Vec<i64> = clusters
        .iter()
        .zip(&iris_test)
        .filter(|(_, r)| r.0 == 0.0)
        .map(|(c, _)| *c)
        .collect();
    assert!(setosa.iter().all(|c| *c == setosa[0]), "{setosa:?}");

    let v = invoke(
        "iris-pca",
        "application/json",
        json!({"instances": [[5.1, 3.5, 1.4, 0.2]]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        v["projections"][0]["projection"].as_array().unwrap().len(),
        2
    );

    let v = invoke("iris-knn", "text/csv", csv(&iris_test).as_bytes());
    assert!(accuracy(&labels_of(&v, "predicted_label"), &iris_test) > 0.85);

    let v = invoke("iris-mlp", "text/csv", csv(&iris_test).as_bytes());
    assert!(accuracy(&labels_of(&v, "predicted_label"), &iris_test) > 0.85);

    let digits = test("digits");
    let v = invoke("digits-image", "text/csv", csv(&digits).as_bytes());
    assert!(accuracy(&labels_of(&v, "predicted_label"), &digits) > 0.8);

    // text-classifier: documents, tokenized as in training.
    let text = std::fs::read_to_string(
        dataset("text", "test").join(
            std::fs::read_dir(dataset("text", "test"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap();
    let docs: Vec<(i64, &str)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(y, t)| (y.parse().unwrap(), t))
        .collect();
    let body = json!({"instances": docs.iter().map(|d| d.1).collect::<Vec<_>>()}).to_string();
    let v = invoke("text", "application/json", body.as_bytes());
    let got = labels_of(&v, "predicted_label");
    let right = got.iter().zip(&docs).filter(|(g, d)| **g == d.0).count();
    assert!(
        right as f64 / docs.len() as f64 > 0.6,
        "{right} of {}",
        docs.len()
    );
    let v2 = server
        .post(
            "/v2/models/text/infer",
            "application/json",
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [docs[0].1]}]}).to_string().as_bytes(),
        )
        .expect(200)
        .json();
    assert_eq!(v2["outputs"][0]["data"][0], got[0]);
    let _ = dir;
}

#[test]
fn sagemaker_contract_formats_and_errors() {
    let server = iris_server(&["--max-payload-bytes", "4096"]);
    server.get("/ping").expect(200);
    let row = "5.1,3.5,1.4,0.2";
    // CSV in, JSON out (the default), the custom attributes echoed.
    let r = server
        .request(
            "POST",
            "/invocations",
            &[
                ("Content-Type", "text/csv"),
                ("X-Amzn-SageMaker-Custom-Attributes", "trace=1"),
            ],
            format!("{row}\n6.7,3.0,5.2,2.3\n").as_bytes(),
        )
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("x-amzn-sagemaker-custom-attributes"),
        Some("trace=1")
    );
    let v = r.json();
    assert_eq!(v["predictions"][0]["predicted_label"], 0);
    assert_eq!(v["predictions"][1]["predicted_label"], 2);
    // Every input format gives the same answer; every Accept its format.
    let json_in = json!({"instances": [{"features": [5.1, 3.5, 1.4, 0.2]}]}).to_string();
    let lines_in = "{\"features\":[5.1,3.5,1.4,0.2]}\n";
    for (ct, body) in [
        ("text/csv", row),
        ("application/json", json_in.as_str()),
        ("application/jsonlines", lines_in),
    ] {
        for (accept, check) in [
            ("text/csv", "0,"),
            ("application/jsonlines", "{\"score\":["),
            ("application/json", "{\"predictions\":[{\"score\":["),
        ] {
            let r = server
                .request(
                    "POST",
                    "/invocations",
                    &[("Content-Type", ct), ("Accept", accept)],
                    body.as_bytes(),
                )
                .expect(200);
            assert_eq!(r.header("content-type"), Some(accept));
            assert!(
                r.text().starts_with(check),
                "{ct} -> {accept}: {}",
                r.text()
            );
        }
    }
    // 415, 406, 400 (with a message), 413, 404.
    let r = server
        .post("/invocations", "image/png", row.as_bytes())
        .expect(415);
    assert!(r.json()["error"].as_str().unwrap().contains("image/png"));
    server
        .request(
            "POST",
            "/invocations",
            &[("Content-Type", "text/csv"), ("Accept", "image/png")],
            row.as_bytes(),
        )
        .expect(406);
    let r = server
        .post("/invocations", "text/csv", b"1,2,3\n")
        .expect(400);
    assert_eq!(
        r.json()["error"],
        "line 1: 3 values, the model takes 4 features"
    );
    let r = server
        .post("/invocations", "text/csv", b"1,2,x,4\n")
        .expect(400);
    assert!(r.json()["error"].as_str().unwrap().contains("column 3"));
    server
        .post(
            "/invocations",
            "application/json",
            b"{\"instances\": [[1,2,3,4]",
        )
        .expect(400);
    server.post("/invocations", "text/csv", b"").expect(400);
    let big = format!("{row}\n").repeat(400);
    server
        .post("/invocations", "text/csv", big.as_bytes())
        .expect(413);
    server.get("/nowhere").expect(404);
    server.get("/models").expect(404);
    server
        .request(
            "POST",
            "/invocations",
            &[
                ("Content-Type", "text/csv"),
                ("X-Amzn-SageMaker-Target-Model", "other"),
            ],
            row.as_bytes(),
        )
        .expect(404);
    // Errors are counted by kind; the server still answers after them.
    server.get("/ping").expect(200);
    assert!(server.metric("kiln_serve_errors_total{kind=\"payload_too_large\"}") >= Some(1.0));
    assert!(server.metric("kiln_serve_errors_total{kind=\"bad_request\"}") >= Some(4.0));
    assert!(
        server.metric("kiln_serve_requests_total{code=\"200\",route=\"invocations\"}")
            >= Some(10.0)
    );
    assert!(server.metric("kiln_serve_model_load_seconds_count{model=\"iris\"}") == Some(1.0));
    // Structured logs: every line is JSON.
    let logs = server.log_text();
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{logs}"
    );
    assert!(logs.contains("\"model loaded\""));
}

#[test]
fn open_inference_protocol_routes() {
    let server = iris_server(&[]);
    server.get("/v2/health/live").expect(200);
    server.get("/v2/health/ready").expect(200);
    assert_eq!(server.get("/v2").expect(200).json()["name"], "kiln");
    let meta = server.get("/v2/models/iris").expect(200).json();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["outputs"][1]["name"], "score");
    server.get("/v2/models/iris/versions/1").expect(200);
    server.get("/v2/models/iris/versions/2").expect(404);
    server.get("/v2/models/iris/ready").expect(200);
    server.get("/v2/models/other/ready").expect(404);
    server.get("/v2/models/other").expect(404);
    let request = json!({"id": "42", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]});
    let v = server
        .post(
            "/v2/models/iris/versions/1/infer",
            "application/json",
            request.to_string().as_bytes(),
        )
        .expect(200)
        .json();
    assert_eq!(v["id"], "42");
    assert_eq!(v["model_name"], "iris");
    assert_eq!(v["outputs"][0]["name"], "predicted_label");
    assert_eq!(v["outputs"][0]["data"], json!([0, 2]));
    assert_eq!(v["outputs"][1]["shape"], json!([2, 3]));
    // Only the requested output.
    let mut only = request.clone();
    only["outputs"] = json!([{"name": "predicted_label"}]);
    let v = server
        .post(
            "/v2/models/iris/infer",
            "application/json",
            only.to_string().as_bytes(),
        )
        .expect(200)
        .json();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    // Bad tensors.
    for bad in [
        json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}),
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}),
        json!({"inputs": []}),
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
    ] {
        let r = server
            .post(
                "/v2/models/iris/infer",
                "application/json",
                bad.to_string().as_bytes(),
            )
            .expect(400);
        assert!(!r.json()["error"].as_str().unwrap().is_empty());
    }
    server
        .post("/v2/models/iris/infer", "text/csv", b"1,2,3,4")
        .expect(415);
    server
        .post(
            "/v2/models/nope/infer",
            "application/json",
            request.to_string().as_bytes(),
        )
        .expect(404);
}

#[test]
fn concurrent_requests_share_batches() {
    let server = iris_server(&["--max-batch-delay-ms", "100", "--max-batch-size", "64"]);
    let addr = server.addr;
    let replies: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    common::server::request(
                        addr,
                        "POST",
                        "/invocations",
                        &[("Content-Type", "text/csv")],
                        b"5.1,3.5,1.4,0.2\n",
                    )
                    .expect(200)
                    .json()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for v in &replies {
        assert_eq!(v["predictions"][0]["predicted_label"], 0);
    }
    let passes = server
        .metric("kiln_serve_batch_size_count{model=\"iris\"}")
        .unwrap();
    let requests = server
        .metric("kiln_serve_batch_size_sum{model=\"iris\"}")
        .unwrap();
    assert_eq!(requests, 8.0);
    assert!(
        passes < 8.0,
        "8 concurrent requests took {passes} forward passes"
    );
}

#[test]
fn multi_model_api_loads_lists_evicts_and_unloads() {
    let bytes = 4 * (4 * 3 + 3); // the iris linear model's tensors
    let limit = (bytes * 3 / 2).to_string();
    let server = Server::start_env(&["--multi-model", "--model-memory-bytes", &limit], &[]);
    server.get("/ping").expect(200);
    let iris_dir = iris().to_str().unwrap().to_string();
    let load = |name: &str, url: &str| {
        server.post(
            "/models",
            "application/json",
            json!({"model_name": name, "url": url})
                .to_string()
                .as_bytes(),
        )
    };
    load("a", &iris_dir).expect(200);
    load("a", &iris_dir).expect(409);
    load("b", &format!("file://{iris_dir}")).expect(200);
    load("c", "/nonexistent/model").expect(400);
    load("c", "s3://bucket/model").expect(400);
    server
        .post("/models", "application/json", b"{\"url\": \"x\"}")
        .expect(400);
    // Only one fits: loading b unloaded a, the least recently used.
    let list = server.get("/models").expect(200).json();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["modelName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list["models"][0]["loaded"], false);
    assert_eq!(list["models"][1]["loaded"], true);
    let page = server.get("/models?max_results=1").expect(200).json();
    assert_eq!(page["models"].as_array().unwrap().len(), 1);
    assert_eq!(page["nextPageToken"], "1");
    assert_eq!(
        server.get("/models/b").expect(200).json()["modelUrl"],
        format!("file://{iris_dir}")
    );
    server.get("/models/zzz").expect(404);
    // Invoking a loads it again (and unloads b); both answer.
    let row = b"5.1,3.5,1.4,0.2";
    for name in ["a", "b", "a"] {
        let v = server
            .post(&format!("/models/{name}/invoke"), "text/csv", row)
            .expect(200)
            .json();
        assert_eq!(v["predictions"][0]["predicted_label"], 0);
    }
    server
        .request(
            "POST",
            "/invocations",
            &[
                ("Content-Type", "text/csv"),
                ("X-Amzn-SageMaker-Target-Model", "b"),
            ],
            row,
        )
        .expect(200);
    server.post("/invocations", "text/csv", row).expect(404);
    assert!(server.metric("kiln_serve_model_evictions").unwrap() >= 3.0);
    assert_eq!(server.metric("kiln_serve_models_loaded"), Some(1.0));
    server.post("/v2/models/a/infer", "application/json",
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}).to_string().as_bytes()).expect(200);
    // Unload: gone from the list and from every route.
    server.request("DELETE", "/models/a", &[], b"").expect(200);
    server.request("DELETE", "/models/a", &[], b"").expect(404);
    server.post("/models/a/invoke", "text/csv", row).expect(404);
    server.get("/v2/models/a/ready").expect(404);
    // A model larger than the whole bound is refused with 507.
    let tiny = Server::start(&["--multi-model", "--model-memory-bytes", "10"]);
    tiny.post(
        "/models",
        "application/json",
        json!({"model_name": "a", "url": iris_dir})
            .to_string()
            .as_bytes(),
    )
    .expect(507);
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let mut server = iris_server(&["--max-batch-delay-ms", "700"]);
    let addr = server.addr;
    let pending = std::thread::spawn(move || {
        common::server::request(
            addr,
            "POST",
            "/invocations",
            &[("Content-Type", "text/csv")],
            b"5.1,3.5,1.4,0.2\n",
        )
    });
    // The request waits in its batch when the signal arrives.
    let logs = server.logs.clone();
    std::thread::sleep(std::time::Duration::from_millis(250));
    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = pending.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    wait_for(5, "the stop is logged", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("every request in flight was answered"))
    });
}

#[test]
fn a_bad_model_folder_fails_at_start_with_exit_code_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-runtime"))
        .args(["serve", "--port", "0", "--model", "/nonexistent/model"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model.json"));
}

/// `rows` rows of 8 features around 3 centers (the label), all offset by
/// `offset`, as float32 values and as CSV (label first) that reads back to
/// the same values.
fn offset_rows(rows: usize, offset: f64, seed: u64) -> (Vec<(i64, Vec<f32>)>, String) {
    let mut rng = kiln_runtime::sgd::SplitMix(seed);
    let mut uniform = || rng.next_u64() as f64 / u64::MAX as f64 * 2.0 - 1.0;
    let centers: Vec<Vec<f64>> = (0..3)
        .map(|c| (0..8).map(|f| if f % 3 == c { 1.5 } else { 0.0 }).collect())
        .collect();
    let mut out = Vec::new();
    let mut text = String::new();
    for i in 0..rows {
        let label = (i % 3) as i64;
        let x: Vec<f32> = centers[label as usize]
            .iter()
            .map(|c| (offset + c + uniform() + uniform()) as f32)
            .collect();
        text.push_str(&label.to_string());
        for v in &x {
            text.push_str(&format!(",{v}"));
        }
        text.push('\n');
        out.push((label, x));
    }
    (out, text)
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) - f64::from(*y))
        .map(|v| v * v)
        .sum()
}

/// kNN and k-means models trained on features offset by 1e3 to 1e5 answer
/// as exact float64 distances between the float32 values do, as they do
/// around 0: kNN's float32 distance shortcut runs on rows and queries less
/// the training mean (taken again when the model is loaded), k-means'
/// training on rows less their mean. Queries whose k-th and (k+1)-th
/// nearest rows are at exactly equal distances may take either, and are
/// counted apart.
#[test]
fn models_of_offset_features_answer_by_exact_distances() {
    use kiln_runtime::serve::model::Model;
    use kiln_runtime::serve::predictions::Input;
    let k = 5;
    for offset in [0.0, 1e3, 1e4, 1e5] {
        let (train_rows, train_csv) = offset_rows(1500, offset, 1);
        let (queries, _) = offset_rows(300, offset, 2);
        let input = Input::Rows {
            values: queries.iter().flat_map(|(_, x)| x.clone()).collect(),
            features: 8,
        };

        let knn = Job::new("knn")
            .hp("k", k)
            .hp("predictor_type", "classifier")
            .hp("num_classes", 3)
            .channel_file("train", "a.csv", &train_csv);
        knn.run().assert_ok();
        let saved = knn.model();
        let points = Vec::<f32>::try_from(saved["points"].reshape([-1])).unwrap();
        let labels = Vec::<f32>::try_from(&saved["labels"]).unwrap();
        let served = Model::load(&knn.root().join("model"), tch::Device::Cpu).unwrap();
        let got = served.predict(&input).labels;
        let (mut wrong, mut ties) = (0, 0);
        for (qi, (_, q)) in queries.iter().enumerate() {
            let mut all: Vec<(f64, usize)> = points
                .chunks_exact(8)
                .enumerate()
                .map(|(i, p)| (sq_dist(q, p), i))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if all[k - 1].0 == all[k].0 {
                ties += 1;
                continue;
            }
            let mut votes = [0; 3];
            for &(_, i) in &all[..k] {
                votes[labels[i] as usize] += 1;
            }
            let top = *votes.iter().max().unwrap();
            let want = votes.iter().position(|&v| v == top).unwrap() as i64;
            if got[qi] != want {
                wrong += 1;
            }
        }
        eprintln!(
            "offset {offset:e}: knn predictions unlike exact distances': {wrong} of {} ({ties} queries at exact ties left out)",
            queries.len()
        );
        assert_eq!(wrong, 0, "offset {offset}");
        assert!(ties < queries.len() / 10, "offset {offset}: {ties} ties");

        let kmeans = Job::new("kmeans")
            .hp("k", 3)
            .hp("max_iter", 20)
            .channel_file("train", "a.csv", &train_csv);
        let out = kmeans.run();
        out.assert_ok();
        let centers = Vec::<f32>::try_from(kmeans.model()["centers"].reshape([-1])).unwrap();
        // k-means reads the label column as a feature too.
        let with_label = |label: i64, x: &[f32]| -> Vec<f32> {
            std::iter::once(label as f32)
                .chain(x.iter().copied())
                .collect()
        };
        let input = Input::Rows {
            values: queries
                .iter()
                .flat_map(|(l, x)| with_label(*l, x))
                .collect(),
            features: 9,
        };
        let served = Model::load(&kmeans.root().join("model"), tch::Device::Cpu).unwrap();
        let got = served.predict(&input).labels;
        let nearest = |x: &[f32]| {
            (0..3)
                .map(|c| (sq_dist(x, &centers[c * 9..(c + 1) * 9]), c))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap()
        };
        let wrong = queries
            .iter()
            .zip(&got)
            .filter(|((l, x), g)| nearest(&with_label(*l, x)).1 as i64 != **g)
            .count();
        let exact: f64 = train_rows
            .iter()
            .map(|(l, x)| nearest(&with_label(*l, x)).0)
            .sum();
        let inertia = out.metric("train:inertia");
        eprintln!(
            "offset {offset:e}: kmeans train:inertia {inertia:.6e}, exact {exact:.6e}; {wrong} served clusters unlike exact distances'"
        );
        assert_eq!(wrong, 0, "offset {offset}");
        assert!(
            (inertia - exact).abs() < 1e-4 * exact,
            "offset {offset}: train:inertia {inertia}, exact {exact}"
        );
    }
}
