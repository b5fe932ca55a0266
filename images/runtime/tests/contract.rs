//! The training contract end to end: success leaves a model, metrics and no
//! failure file; every kind of bad input leaves a clear failure reason, a
//! non-zero exit and no panic.

mod common;

use common::{Job, blobs};

fn assert_fails(job: &Job, code: i32, want: &str) {
    let out = job.run();
    assert_eq!(out.code, code, "{out:#?}");
    let failure = out.failure.clone().unwrap_or_default();
    assert!(failure.contains(want), "failure {failure:?} lacks {want:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

fn linear() -> Job {
    Job::new("linear-learner")
        .hp("predictor_type", "multiclass_classifier")
        .hp("num_classes", 3)
        .hp("epochs", 2)
}

#[test]
fn success_writes_model_metrics_and_no_failure() {
    let job = linear()
        .channel_file("train", "a.csv", &blobs(300, 4, 3, 1))
        .channel_file("validation", "v.csv", &blobs(90, 4, 3, 2));
    let out = job.run();
    out.assert_ok();
    assert!(out.failure.is_none());
    assert!(out.metric("validation:accuracy") > 0.8, "{out:#?}");
    // Every stdout metric line is JSON with the documented fields.
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["kiln_metric"].is_string() && l["value"].is_number() && l["step"].is_u64())
    );
    assert_eq!(out.series("train:loss").len(), 2);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.root().join("model/model.json")).unwrap())
            .unwrap();
    assert_eq!(meta["format"], "kiln-model");
    assert_eq!(meta["algorithm"], "linear-learner");
    assert_eq!(meta["num_classes"], 3);
    assert_eq!(
        meta["tensors"]["weight"]["shape"],
        serde_json::json!([4, 3])
    );
    assert_eq!(meta["hyperparameters"]["optimizer"], "adam");
    assert_eq!(job.model()["weight"].size(), [4, 3]);
}

#[test]
fn bad_hyperparameters_fail_with_their_name() {
    let data = blobs(30, 2, 3, 1);
    assert_fails(
        &linear()
            .hp("epoch", 3)
            .channel_file("train", "a.csv", &data),
        2,
        "hyperparameter epoch: unknown name",
    );
    assert_fails(
        &linear()
            .hp("epochs", "ten")
            .channel_file("train", "a.csv", &data),
        2,
        "hyperparameter epochs: \"ten\" is not an integer",
    );
    assert_fails(
        &linear()
            .hp("learning_rate", "-1")
            .channel_file("train", "a.csv", &data),
        2,
        "hyperparameter learning_rate: -1 is out of range",
    );
    assert_fails(
        &Job::new("kmeans").channel_file("train", "a.csv", &data),
        2,
        "hyperparameter k: required but not set",
    );
    // The initialization picks k centers among init_sample rows.
    assert_fails(
        &Job::new("kmeans")
            .hp("k", 5)
            .hp("init_sample", 3)
            .channel_file("train", "a.csv", &data),
        2,
        "hyperparameter init_sample: init_sample 3 is below k = 5",
    );
    assert_fails(
        &Job::new("xgboost").channel_file("train", "a.csv", &data),
        2,
        "\"xgboost\" is not a built-in algorithm",
    );
    assert_fails(
        &linear()
            .hp("predictor_type", "multiclass_classifier")
            .hp("num_classes", 1)
            .channel_file("train", "a.csv", &data),
        2,
        "num_classes",
    );
}

#[test]
fn bad_data_fails_with_file_and_line() {
    let cases = [
        (
            "0,1,2\n1,x,2\n",
            "a.csv line 2: column 2 is \"x\", not a number",
        ),
        ("0,1,2\n1,nan,2\n", "line 2: column 2 is NaN"),
        ("0,1,2\n1,-inf,2\n", "line 2: column 2 is -inf"),
        ("0,1,2\n1,2\n", "line 2: 2 columns, but earlier rows have 3"),
        ("0,1,2\n7,1,2\n", "row 2: label 7 is out of range"),
        ("0,1,2\n1.5,1,2\n", "row 2: label 1.5 is out of range"),
        ("", "channel train: empty"),
    ];
    for (text, want) in cases {
        assert_fails(&linear().channel_file("train", "a.csv", text), 2, want);
    }
    assert_fails(&linear(), 2, "channel train: missing");
    let job = linear();
    std::fs::create_dir_all(job.root().join("input/data/train")).unwrap();
    assert_fails(&job, 2, "channel train: empty: no files");
    // A malformed validation channel is reported as such.
    let job = linear()
        .channel_file("train", "a.csv", &blobs(30, 2, 3, 1))
        .channel_file("validation", "v.csv", "0,1\n0,1,2\n");
    assert_fails(&job, 2, "channel validation");
}

#[test]
fn malformed_config_file_fails() {
    let job = linear().channel_file("train", "a.csv", &blobs(30, 2, 3, 1));
    let mut cmd = job.command(); // writes hyperparameters.json
    std::fs::write(
        job.root().join("input/config/inputdataconfig.json"),
        "{not json",
    )
    .unwrap();
    let out = job.outcome(cmd.output().unwrap());
    assert_eq!(out.code, 2);
    assert!(out.failure.unwrap().contains("inputdataconfig.json"));
}

#[test]
fn describe_lists_hyperparameters() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-runtime"))
        .args(["describe", "kmeans"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("| `k` |") && text.contains("| `mini_batch_size` |"),
        "{text}"
    );
}

#[test]
fn text_channels_accept_both_formats_and_reject_bad_labels() {
    let text = "0\tgood fine nice\n__label__1 bad awful poor\n0\tnice good\n__label__1 awful bad\n";
    let job = Job::new("text-classifier")
        .hp("num_classes", 2)
        .hp("epochs", 2)
        .channel_file("train", "a.txt", text);
    job.run().assert_ok();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.root().join("model/model.json")).unwrap())
            .unwrap();
    assert_eq!(meta["model"]["tokenizer"]["buckets"], 100000);
    let bad = Job::new("text-classifier")
        .hp("num_classes", 2)
        .channel_file("train", "a.txt", "0\tok\nx\tno\n");
    assert_fails(&bad, 2, "a.txt line 2: label \"x\" is not an integer");
    let bad = Job::new("text-classifier")
        .hp("num_classes", 2)
        .channel_file("train", "a.txt", "0\tok\n5\tno\n");
    assert_fails(&bad, 2, "row 2: label 5 is out of range");
    let bad = Job::new("text-classifier")
        .hp("num_classes", 2)
        .channel_file("train", "a.txt", "no tab here\n");
    assert_fails(&bad, 2, "line 1: expected <label>");
}

/// A grey `side`x`side` PNG of one brightness in `channel/class/name`.
fn png(job: &Job, channel: &str, class: &str, name: &str, side: u32, value: u8) {
    let dir = job.root().join("input/data").join(channel).join(class);
    std::fs::create_dir_all(&dir).unwrap();
    image::GrayImage::from_pixel(side, side, image::Luma([value]))
        .save(dir.join(name))
        .unwrap();
}

fn images_job() -> Job {
    let job = Job::new("image-classifier")
        .hp("image_shape", "1,4,4")
        .hp("epochs", 20)
        .hp("mini_batch_size", 8);
    for i in 0..12u8 {
        // Dark and bright images, of several sizes (resized to 4x4).
        let side = 3 + u32::from(i % 3);
        png(&job, "train", "dark", &format!("{i}.png"), side, i * 5);
        png(
            &job,
            "train",
            "bright",
            &format!("{i}.png"),
            side,
            200 + i * 4,
        );
    }
    job
}

#[test]
fn image_files_train_with_class_names_in_the_model() {
    let job = images_job();
    png(&job, "validation", "bright", "v.png", 8, 220);
    png(&job, "validation", "dark", "v.png", 8, 20);
    let config = job.root().join("input/config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("inputdataconfig.json"),
        r#"{"train": {"ContentType": "application/x-image"}, "validation": {"ContentType": "image/png"}}"#,
    )
    .unwrap();
    let out = job.run();
    out.assert_ok();
    assert_eq!(out.metric("validation:accuracy"), 1.0, "{out:#?}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.root().join("model/model.json")).unwrap())
            .unwrap();
    assert_eq!(meta["class_names"], serde_json::json!(["bright", "dark"]));
    assert_eq!(meta["num_classes"], 2);
    assert_eq!(meta["feature_dim"], 16);
}

#[test]
fn bad_image_channels_fail_clearly() {
    let job = images_job();
    std::fs::write(job.root().join("input/data/train/dark/broken.jpg"), "nope").unwrap();
    assert_fails(&job, 2, "broken.jpg: not a decodable PNG or JPEG image");
    let job = images_job();
    png(&job, "validation", "grey", "v.png", 4, 100);
    assert_fails(
        &job,
        2,
        "channel validation: class folder \"grey\" is not a class of the train channel (bright, dark)",
    );
    let job = images_job();
    std::fs::create_dir_all(job.root().join("input/data/train/empty")).unwrap();
    assert_fails(&job, 2, "class folder \"empty\" is empty");
    let job = images_job();
    png(&job, "train", ".", "loose.png", 4, 0);
    assert_fails(&job, 2, "mixes loose files");
    let job = images_job().hp("num_classes", 1);
    assert_fails(
        &job,
        2,
        "hyperparameter num_classes: 1, but the train channel has 2 class folders (bright, dark)",
    );
}

/// k-means on 10 rows with init_sample 7 takes every second row (5) by its
/// spacing rule, fewer than k = 6: it takes rows closer together instead of
/// making fewer centers than k.
#[test]
fn kmeans_samples_at_least_k_rows() {
    let data: String = (0..10).map(|i| format!("{i},{}\n", i * i)).collect();
    for init in ["kmeans++", "random"] {
        let job = Job::new("kmeans")
            .hp("k", 6)
            .hp("init", init)
            .hp("init_sample", 7)
            .channel_file("train", "a.csv", &data);
        job.run().assert_ok();
        assert_eq!(job.model()["centers"].size(), [6, 2], "init {init}");
    }
}
