//! Checkpoints and resume: SIGTERM writes a checkpoint and exits 143; a
//! restart resumes from it without redoing finished epochs and ends with the
//! model of an uninterrupted run. With 2 ranks, rank 0 decides when every
//! rank checkpoints, a job killed at any point resumes on every rank at the
//! newest step all of them have, and a checkpoint written with other
//! settings is refused.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{Job, Outcome, blobs, kill, max_diff, sharded, spawn_ranks, wait_ranks};

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

/// A k-means checkpoint whose centers do not fit this run (the channel has
/// a column more, with as many rows: the settings the checkpoint records
/// all match) is refused with both shapes, instead of resuming on them.
#[test]
fn kmeans_refuses_checkpoint_centers_of_another_shape() {
    let three: String = blobs(200, 2, 3, 8);
    let four: String = blobs(200, 3, 3, 8);
    let make = |data: &str| {
        Job::new("kmeans")
            .hp("k", 3)
            .hp("max_iter", 2)
            .hp("tol", 0)
            .hp("checkpoint_every_steps", 1)
            .channel_file("train", "a.csv", data)
    };
    let first = make(&three);
    first.run().assert_ok();
    let second = Job {
        hyper: make(&four).hp("max_iter", 4).hyper,
        ..first
    };
    std::fs::write(second.root().join("input/data/train/a.csv"), &four).unwrap();
    let out = second.run();
    assert_eq!(out.code, 1, "{out:#?}");
    let failure = out.failure.unwrap_or_default();
    assert!(
        failure.contains("the checkpoint of iteration 2 holds centers of shape [3, 3]; this run needs [3, 4] (k = 3 centers of 4 features)"),
        "{failure}"
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// The steps of rank `rank`'s checkpoints in `job`'s folder, oldest first.
fn checkpoint_steps(job: &Job, rank: usize) -> Vec<u64> {
    let prefix = format!("ckpt-r{rank}-");
    let mut steps: Vec<u64> = std::fs::read_dir(job.root().join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().to_string();
                name.strip_prefix(&prefix)?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    steps.sort_unstable();
    steps
}

/// The step a rank said it resumed from.
fn resumed_step(out: &Outcome) -> Option<u64> {
    let rest = out
        .stderr
        .split("resumed from the checkpoint of step ")
        .nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Starts the ranks of `jobs`; once rank 0 has reported the train loss of
/// epoch `epoch`, calls `stop` with the ranks' pids. Returns every rank's
/// outcome (rank 0's with the stdout read meanwhile) and the epochs rank 0
/// finished.
fn run_until(jobs: &[Job], epoch: u64, stop: &dyn Fn(&[u32])) -> (Vec<Outcome>, Vec<u64>) {
    let mut children = spawn_ranks(jobs);
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let stdout = children[0].stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            let _ = tx.send(line);
        }
        text
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if epochs(&line).contains(&epoch) => {
                stop(&pids);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                for &pid in &pids {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                panic!("rank 0 never reported epoch {epoch}: {e}");
            }
        }
    }
    let mut outs = wait_ranks(jobs, children, Duration::from_secs(120));
    outs[0].stdout = reader.join().unwrap();
    let done = epochs(&outs[0].stdout);
    (outs, done)
}

fn ranks_job(data: &str) -> Job {
    Job::new("mlp")
        .hp("predictor_type", "classifier")
        .hp("num_classes", 4)
        .hp("hidden_layers", "64")
        .hp("epochs", 12)
        .hp("mini_batch_size", 16)
        // Rank 0's clock decides: the steps checkpointed differ from run to
        // run, and every rank must still checkpoint the same ones.
        .hp("checkpoint_every_seconds", 0.05)
        .channel_file("train", "a.csv", data)
}

#[test]
fn two_ranks_killed_at_three_points_resume_to_the_uninterrupted_model() {
    let data = blobs(3000, 16, 4, 21);
    let reference: Vec<Job> = (0..2).map(|_| ranks_job(&data)).collect();
    let children = spawn_ranks(&reference);
    for out in wait_ranks(&reference, children, Duration::from_secs(300)) {
        out.assert_ok();
    }
    let jobs: Vec<Job> = (0..2).map(|_| ranks_job(&data)).collect();

    // 1. Both ranks killed (SIGKILL: no last checkpoint) after epoch 2.
    let (outs, done) = run_until(&jobs, 2, &|pids| {
        for &pid in pids {
            kill(pid, "KILL");
        }
    });
    assert!(outs.iter().all(|o| o.code == -1), "{outs:#?}");
    assert!(done.len() < 12, "killed too late: {done:?}");
    let (s0, s1) = (checkpoint_steps(&jobs[0], 0), checkpoint_steps(&jobs[1], 1));
    eprintln!("killed after epoch 2: rank 0 has steps {s0:?}, rank 1 {s1:?}");
    assert!(!s0.is_empty() && !s1.is_empty());
    assert!(
        checkpoint_steps(&jobs[0], 1).is_empty(),
        "rank 0 wrote as rank 1"
    );

    // 2. Resumed; rank 1 alone killed after epoch 5: rank 0 fails on the
    // broken ring. Then rank 1's newest checkpoint is lost, as if it was
    // killed while writing it: both must resume at the step before.
    let newest_common = |a: &[u64], b: &[u64]| a.iter().rev().find(|s| b.contains(s)).copied();
    let expected = newest_common(&s0, &s1);
    let (outs, done) = run_until(&jobs, 5, &|pids| kill(pids[1], "KILL"));
    for out in &outs {
        assert_eq!(resumed_step(out), expected, "{}", out.stderr);
    }
    assert_eq!(outs[1].code, -1);
    assert_ne!(outs[0].code, 0, "{:#?}", outs[0]);
    assert!(done.len() < 12 && done[0] >= 2, "{done:?}");
    let (s0, mut s1) = (checkpoint_steps(&jobs[0], 0), checkpoint_steps(&jobs[1], 1));
    eprintln!("rank 1 killed after epoch 5: rank 0 has steps {s0:?}, rank 1 {s1:?}");
    let lost = s1.pop().unwrap();
    let ckpt = jobs[1].root().join("checkpoints");
    std::fs::remove_file(ckpt.join(format!("ckpt-r1-{lost:012}.json"))).unwrap();
    let expected = newest_common(&s0, &s1);
    assert!(expected.is_some_and(|e| e < lost), "{s0:?} {s1:?}");

    // 3. Resumed; SIGTERM on rank 0 after epoch 8: both ranks stop at the
    // same step, each writing its checkpoint of it.
    let (outs, done) = run_until(&jobs, 8, &|pids| kill(pids[0], "TERM"));
    for out in &outs {
        assert_eq!(resumed_step(out), expected, "{}", out.stderr);
        assert_eq!(out.code, 143, "{out:#?}");
    }
    assert!(done.len() < 12, "{done:?}");
    let (s0, s1) = (checkpoint_steps(&jobs[0], 0), checkpoint_steps(&jobs[1], 1));
    eprintln!("SIGTERM after epoch 8: rank 0 has steps {s0:?}, rank 1 {s1:?}");
    assert_eq!(s0.last(), s1.last());
    assert!(!s0.contains(&lost) || s1.contains(&lost), "{s0:?} {s1:?}");

    // 4. Resumed to the end: the model of the uninterrupted run, bit for
    // bit (the ring sums in a fixed order and the state is saved exactly).
    let children = spawn_ranks(&jobs);
    let outs = wait_ranks(&jobs, children, Duration::from_secs(300));
    for out in &outs {
        out.assert_ok();
        assert_eq!(resumed_step(out), s0.last().copied(), "{}", out.stderr);
    }
    let diff = max_diff(&reference[0].model(), &jobs[0].model());
    assert_eq!(diff, 0.0, "the resumed model differs by {diff}");
}

#[test]
fn checkpoints_of_other_settings_are_refused_naming_the_difference() {
    let data = blobs(300, 6, 3, 2);
    let lines: Vec<&str> = data.lines().collect();
    let shard = |rank: usize, world: usize| {
        let per = lines.len().div_ceil(world);
        lines.chunks(per).nth(rank).unwrap().join("\n") + "\n"
    };
    let make = |rank: usize, world: usize, lr: f64| {
        sharded(
            Job::new("linear-learner")
                .hp("predictor_type", "multiclass_classifier")
                .hp("num_classes", 3)
                .hp("epochs", 2)
                .hp("mini_batch_size", 10)
                .hp("learning_rate", lr)
                .hp("checkpoint_every_steps", 5)
                .channel_file("train", "a.csv", &shard(rank, world)),
            "train",
        )
    };
    let mut jobs: Vec<Job> = (0..2).map(|r| make(r, 2, 0.01)).collect();
    let children = spawn_ranks(&jobs);
    for out in wait_ranks(&jobs, children, Duration::from_secs(120)) {
        out.assert_ok();
    }
    assert_eq!(checkpoint_steps(&jobs[1], 1), [55, 60]);

    // Another learning rate: every rank refuses (exit 2), naming it.
    for job in &mut jobs {
        job.hyper.insert("learning_rate".into(), "0.05".into());
    }
    let children = spawn_ranks(&jobs);
    for out in wait_ranks(&jobs, children, Duration::from_secs(120)) {
        assert_eq!(out.code, 2, "{out:#?}");
        let failure = out.failure.unwrap();
        assert!(
            failure.contains("learning_rate 0.01 (this run: 0.05)") && failure.contains("ckpt-r"),
            "{failure}"
        );
    }

    // Three ranks on shards of the same rows: positions in an epoch mean
    // other rows. The ranks with checkpoints refuse them, the third says so.
    for job in &mut jobs {
        job.hyper.insert("learning_rate".into(), "0.01".into());
    }
    jobs.push(make(2, 3, 0.01));
    for (rank, job) in jobs.iter().enumerate() {
        std::fs::write(job.root().join("input/data/train/a.csv"), shard(rank, 3)).unwrap();
    }
    let children = spawn_ranks(&jobs);
    let outs = wait_ranks(&jobs, children, Duration::from_secs(120));
    for out in &outs[..2] {
        assert_eq!(out.code, 2, "{out:#?}");
        let failure = out.failure.clone().unwrap();
        assert!(failure.contains("WORLD_SIZE 2 (this run: 3)"), "{failure}");
    }
    assert_ne!(outs[2].code, 0);
    assert!(
        outs[2]
            .failure
            .as_ref()
            .is_some_and(|f| f.contains("refused its checkpoints")),
        "{:#?}",
        outs[2]
    );
}

#[test]
fn pipeline_stages_on_ranks_resume_each_its_own_stage() {
    // Each rank checkpoints its own stage; SIGTERM on rank 1 stops both at
    // one step, and the resumed pair ends with the uninterrupted model.
    let data = blobs(1500, 10, 3, 8);
    let make = || {
        Job::new("mlp")
            .hp("predictor_type", "classifier")
            .hp("num_classes", 3)
            .hp("hidden_layers", "32,16")
            .hp("epochs", 6)
            .hp("mini_batch_size", 16)
            .hp("pipeline_stages", 2)
            .hp("pipeline_ranks", "true")
            .hp("micro_batches", 2)
            .hp("checkpoint_every_seconds", 0.05)
            .channel_file("train", "a.csv", &data)
    };
    let reference: Vec<Job> = (0..2).map(|_| make()).collect();
    let children = spawn_ranks(&reference);
    for out in wait_ranks(&reference, children, Duration::from_secs(300)) {
        out.assert_ok();
    }
    let jobs: Vec<Job> = (0..2).map(|_| make()).collect();
    let (outs, done) = run_until(&jobs, 1, &|pids| kill(pids[1], "TERM"));
    assert!(outs.iter().all(|o| o.code == 143), "{outs:#?}");
    assert!(done.len() < 6, "{done:?}");
    let (s0, s1) = (checkpoint_steps(&jobs[0], 0), checkpoint_steps(&jobs[1], 1));
    assert_eq!(s0.last(), s1.last(), "{s0:?} {s1:?}");
    let children = spawn_ranks(&jobs);
    for out in wait_ranks(&jobs, children, Duration::from_secs(300)) {
        out.assert_ok();
        assert_eq!(resumed_step(&out), s0.last().copied(), "{}", out.stderr);
    }
    let diff = max_diff(&reference[0].model(), &jobs[0].model());
    assert_eq!(diff, 0.0, "the resumed pipeline differs by {diff}");
}
