//! Checkpoints and resume: SIGTERM writes a checkpoint and exits 143; a
//! restart resumes from it without redoing finished epochs and ends with the
//! model of an uninterrupted run.

mod common;

use std::io::{BufRead, BufReader};

use common::{Job, blobs, max_diff};

fn job(data: &str) -> Job {
    Job::new("mlp")
        .hp("predictor_type", "classifier")
        .hp("num_classes", 4)
        .hp("hidden_layers", "64")
        .hp("epochs", 12)
        .hp("mini_batch_size", 16)
        .hp("checkpoint_every_seconds", 0)
        .channel_file("train", "a.csv", data)
        .env("OMP_NUM_THREADS", 1)
}

fn epochs(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kiln_metric"] == "train:loss")
        .filter_map(|v| v["epoch"].as_u64())
        .collect()
}

#[test]
fn sigterm_checkpoints_and_restart_resumes_to_the_same_model() {
    let data = blobs(3000, 16, 4, 21);
    let reference = job(&data);
    reference.run().assert_ok();

    let interrupted = job(&data);
    let mut child = interrupted.spawn();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = String::new();
    // Stop once two epochs are done, in the middle of the third.
    while epochs(&before).len() < 2 {
        let line = lines
            .next()
            .expect("the job ended before two epochs")
            .unwrap();
        before.push_str(&line);
        before.push('\n');
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for line in lines {
        before.push_str(&line.unwrap());
        before.push('\n');
    }
    let first = interrupted.outcome(child.wait_with_output().unwrap());
    assert_eq!(first.code, 143, "{first:#?}");
    assert!(first.failure.is_none(), "a stop is not a failure");
    let checkpoints: Vec<_> = std::fs::read_dir(interrupted.root().join("checkpoints"))
        .unwrap()
        .collect();
    assert!(!checkpoints.is_empty());
    let done = epochs(&before);
    assert!(
        done.len() < 12,
        "SIGTERM came too late to test a resume: {done:?}"
    );

    let second = interrupted.run();
    second.assert_ok();
    assert!(
        second.stderr.contains("resumed from the checkpoint"),
        "{}",
        second.stderr
    );
    let after = epochs(&second.stdout);
    assert_eq!(
        after.first().copied(),
        Some(done.last().unwrap() + 1),
        "epochs redone: {done:?} then {after:?}"
    );
    assert_eq!(after.last().copied(), Some(11));
    let diff = max_diff(&reference.model(), &interrupted.model());
    assert!(
        diff < 1e-5,
        "the resumed model differs from an uninterrupted run by {diff}"
    );
}

#[test]
fn kmeans_resumes_from_step_checkpoints() {
    let data = blobs(500, 6, 5, 4);
    let make = || {
        Job::new("kmeans")
            .hp("k", 5)
            .hp("max_iter", 6)
            .hp("tol", 0)
            .hp("checkpoint_every_steps", 3)
            .channel_file("train", "a.csv", &data)
    };
    let reference = make();
    reference.run().assert_ok();
    // A first run stopped after iteration 3 is simulated by its checkpoint:
    // run 3 iterations, keep the checkpoint, then ask for 6.
    let resumed = make().hp("max_iter", 3);
    resumed.run().assert_ok();
    let resumed = Job {
        hyper: make().hyper,
        ..resumed
    };
    let out = resumed.run();
    out.assert_ok();
    assert!(
        out.stderr
            .contains("resumed from the checkpoint of iteration 3"),
        "{}",
        out.stderr
    );
    assert!(max_diff(&reference.model(), &resumed.model()) < 1e-5);
}
