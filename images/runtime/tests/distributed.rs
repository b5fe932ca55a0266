//! Data parallelism: 2 and 3 ranks (processes joined by the TCP ring on
//! loopback) reach the model of 1 rank with the same global batch, within
//! float tolerance, whether each rank reads the whole channel or only its
//! shard of it (`ShardedByS3Key`, shards of unequal sizes). Pipeline stages
//! give the loss trajectory of the unsplit network.

mod common;

use std::time::Duration;

use common::{Job, blobs, max_diff, run_ranks, run_ranks_each, run_ranks_with_output, sharded};

fn check_ranks_agree(make: &dyn Fn() -> Job, tolerance: f64) {
    let single = run_ranks(1, make).remove(0).model();
    for world in [2, 3] {
        let jobs = run_ranks(world, make);
        let diff = max_diff(&single, &jobs[0].model());
        assert!(
            diff < tolerance,
            "{world} ranks differ from 1 rank by {diff}"
        );
        // Only rank 0 writes the model.
        assert!(!jobs[1].root().join("model/model.json").exists());
    }
}

#[test]
fn linear_learner_adam_is_rank_independent() {
    let data = blobs(301, 6, 3, 11);
    check_ranks_agree(
        &|| {
            Job::new("linear-learner")
                .hp("predictor_type", "multiclass_classifier")
                .hp("num_classes", 3)
                .hp("epochs", 3)
                .hp("mini_batch_size", 30)
                .channel_file("train", "a.csv", &data)
        },
        1e-4,
    );
}

#[test]
fn linear_learner_normal_equations_is_rank_independent() {
    let data = blobs(200, 5, 4, 3);
    check_ranks_agree(
        &|| {
            Job::new("linear-learner")
                .hp("predictor_type", "regressor")
                .hp("solver", "normal_equations")
                .channel_file("train", "a.csv", &data)
        },
        1e-4,
    );
}

#[test]
fn mlp_sgd_is_rank_independent() {
    let data = blobs(250, 8, 3, 5);
    check_ranks_agree(
        &|| {
            Job::new("mlp")
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3)
                .hp("hidden_layers", "16,8")
                .hp("optimizer", "sgd")
                .hp("learning_rate", 0.05)
                .hp("epochs", 3)
                .hp("mini_batch_size", 25)
                .channel_file("train", "a.csv", &data)
        },
        1e-4,
    );
}

#[test]
fn kmeans_lloyd_and_mini_batch_are_rank_independent() {
    let data = blobs(400, 5, 4, 7);
    for batch in ["0", "64"] {
        check_ranks_agree(
            &|| {
                Job::new("kmeans")
                    .hp("k", 4)
                    .hp("mini_batch_size", batch)
                    .hp("max_iter", 5)
                    .channel_file("train", "a.csv", &data)
            },
            1e-4,
        );
    }
}

#[test]
fn pca_and_knn_are_rank_independent() {
    let data = blobs(300, 7, 3, 9);
    for mode in ["regular", "randomized"] {
        check_ranks_agree(
            &|| {
                Job::new("pca")
                    .hp("num_components", 3)
                    .hp("algorithm_mode", mode)
                    .channel_file("train", "a.csv", &data)
            },
            1e-4,
        );
    }
    check_ranks_agree(
        &|| {
            Job::new("knn")
                .hp("k", 3)
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3)
                .channel_file("train", "a.csv", &data)
        },
        0.0 + f64::EPSILON,
    );
}

#[test]
fn pipeline_stages_follow_the_unsplit_loss_trajectory() {
    let data = blobs(240, 10, 3, 13);
    let run = |stages: u32, micro: u32| {
        let job = Job::new("mlp")
            .hp("predictor_type", "classifier")
            .hp("num_classes", 3)
            .hp("hidden_layers", "32,16,8")
            .hp("epochs", 4)
            .hp("mini_batch_size", 40)
            .hp("pipeline_stages", stages)
            .hp("micro_batches", micro)
            .channel_file("train", "a.csv", &data)
            .env("OMP_NUM_THREADS", 1);
        let out = job.run();
        out.assert_ok();
        (out.series("train:loss"), job.model())
    };
    let (unsplit, model) = run(1, 1);
    for (stages, micro) in [(2, 2), (4, 4)] {
        let (losses, split_model) = run(stages, micro);
        assert_eq!(losses.len(), unsplit.len());
        for ((e1, a), (e2, b)) in unsplit.iter().zip(&losses) {
            assert_eq!(e1, e2);
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{stages} stages: loss {b} vs {a}"
            );
        }
        assert!(max_diff(&model, &split_model) < 1e-4);
    }
}

#[test]
fn pipeline_stages_on_ranks_follow_the_unsplit_loss_trajectory() {
    let data = blobs(200, 10, 3, 17);
    let make = |stages: usize| {
        let data = data.clone();
        move || {
            Job::new("mlp")
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3)
                .hp("hidden_layers", "32,16,8")
                .hp("epochs", 3)
                .hp("mini_batch_size", 40)
                .hp("pipeline_stages", stages)
                .hp("pipeline_ranks", "true")
                .hp("micro_batches", 3)
                .channel_file("train", "a.csv", &data)
        }
    };
    let (single, outs) = run_ranks_with_output(1, &make(1));
    let reference = outs[0].series("train:loss");
    let model = single[0].model();
    for world in [2, 3] {
        let (jobs, outs) = run_ranks_with_output(world, &make(world));
        for (rank, out) in outs.iter().enumerate() {
            let line = format!("pipeline stage {rank} of {world} on this rank");
            assert!(
                out.stderr.contains(&line),
                "rank {rank} ran no stage: {}",
                out.stderr
            );
        }
        let losses = outs[0].series("train:loss");
        assert_eq!(losses.len(), reference.len());
        for ((e1, a), (e2, b)) in reference.iter().zip(&losses) {
            assert_eq!(e1, e2);
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{world} stages on ranks: loss {b} vs {a}"
            );
        }
        let diff = max_diff(&model, &jobs[0].model());
        assert!(
            diff < 1e-4,
            "{world} stages on ranks: the model differs by {diff}"
        );
    }
}

/// The lines of `data` cut in order into shards of `percent[r]` percent of
/// the lines each (the last one takes what is left).
fn shards(data: &str, percent: &[usize]) -> Vec<String> {
    let lines: Vec<&str> = data.lines().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for (i, p) in percent.iter().enumerate() {
        let end = if i + 1 == percent.len() {
            lines.len()
        } else {
            start + lines.len() * p / 100
        };
        out.push(lines[start..end].iter().map(|l| format!("{l}\n")).collect());
        start = end;
    }
    out
}

/// 2 ranks holding 70 % and 30 % of `data` and 3 ranks holding 50 %, 30 %
/// and 20 % (each rank's folder holds only its shard; the channel is
/// `ShardedByS3Key`) reach the model of 1 rank reading all of it, within
/// `tolerance` (max abs difference over every tensor), and report the same
/// `metrics` (relative 1e-5). The global rows are rank 0's shard, then
/// rank 1's, ...: in this order, the rows of the one-rank channel. Every
/// run must end within 2 minutes; ranks out of step in the all-reduce would
/// hang (and fail after the 30 s ring timeout). Returns the largest
/// difference seen.
fn check_shards_agree(
    make: &dyn Fn() -> Job,
    file: &str,
    data: &str,
    tolerance: f64,
    metrics: &[&str],
) -> f64 {
    let single = make().channel_file("train", file, data);
    let reference = single.run();
    reference.assert_ok();
    let model = single.model();
    let mut worst = 0f64;
    for percent in [&[70, 30][..], &[50, 30, 20]] {
        let parts = shards(data, percent);
        let (jobs, outs) = run_ranks_each(
            percent.len(),
            &|rank| sharded(make().channel_file("train", file, &parts[rank]), "train"),
            Duration::from_secs(120),
        );
        let diff = max_diff(&model, &jobs[0].model());
        eprintln!("shards {percent:?}: the model differs from 1 rank by {diff:e}");
        assert!(
            diff <= tolerance,
            "shards {percent:?}: the model differs from 1 rank by {diff}"
        );
        worst = worst.max(diff);
        for name in metrics {
            let (a, b) = (reference.series(name), outs[0].series(name));
            assert!(!a.is_empty(), "no metric {name}");
            assert_eq!(a.len(), b.len(), "{name}: {a:?} vs {b:?}");
            for ((e1, x), (e2, y)) in a.iter().zip(&b) {
                assert_eq!(e1, e2);
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1e-3),
                    "shards {percent:?}: {name} {y} vs {x} of 1 rank"
                );
            }
        }
        assert!(!jobs[1].root().join("model/model.json").exists());
    }
    worst
}

// Tolerances: the ranks' partial sums of a batch's gradient (or a
// cluster's rows) are added in another order than one rank's single sum, a
// float32 rounding of about 1e-7 relative per step; over these few epochs
// the models measured differ by at most 1e-6, and the tolerances are 10x
// that. A lost or misplaced row, or a step out of step, moves them by 1e-2
// and more.

#[test]
fn linear_learner_on_unequal_shards_matches_one_rank() {
    let data = blobs(301, 6, 3, 11);
    check_shards_agree(
        &|| {
            Job::new("linear-learner")
                .hp("predictor_type", "multiclass_classifier")
                .hp("num_classes", 3)
                .hp("epochs", 3)
                .hp("mini_batch_size", 30)
        },
        "a.csv",
        &data,
        1e-5,
        &["train:loss"],
    );
}

#[test]
fn mlp_on_unequal_shards_matches_one_rank() {
    // Batches of 4: the 20 % shard has no row in about 40 % of the steps,
    // where its rank adds zeros and still joins the all-reduce.
    let data = blobs(250, 8, 3, 5);
    check_shards_agree(
        &|| {
            Job::new("mlp")
                .hp("predictor_type", "classifier")
                .hp("num_classes", 3)
                .hp("hidden_layers", "16,8")
                .hp("optimizer", "sgd")
                .hp("learning_rate", 0.05)
                .hp("epochs", 2)
                .hp("mini_batch_size", 4)
        },
        "a.csv",
        &data,
        1e-5,
        &["train:loss"],
    );
}

#[test]
fn kmeans_on_unequal_shards_matches_one_rank() {
    let data = blobs(400, 5, 4, 7);
    for batch in ["0", "64", "4"] {
        check_shards_agree(
            &|| {
                Job::new("kmeans")
                    .hp("k", 4)
                    .hp("mini_batch_size", batch)
                    .hp("max_iter", 5)
                    // A sample of every 3rd global row: the shards' rows
                    // fill their places in it.
                    .hp("init_sample", 134)
            },
            "a.csv",
            &data,
            1e-5,
            &["train:msd", "train:inertia"],
        );
    }
}

#[test]
fn text_classifier_on_unequal_shards_matches_one_rank() {
    let mut rng = kiln_runtime::sgd::SplitMix(3);
    let words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"];
    let mut data = String::new();
    for i in 0..200 {
        let label = i % 3;
        let text: Vec<&str> = (0..6)
            .map(|_| {
                let w = rng.below(words.len() as u64) as usize;
                if rng.below(2) == 0 {
                    words[label * 2 + w % 2]
                } else {
                    words[w]
                }
            })
            .collect();
        data.push_str(&format!("{label}\t{}\n", text.join(" ")));
    }
    check_shards_agree(
        &|| {
            Job::new("text-classifier")
                .hp("num_classes", 3)
                .hp("embedding_dim", 8)
                .hp("buckets", 512)
                .hp("max_tokens", 16)
                .hp("epochs", 2)
                .hp("mini_batch_size", 16)
                .hp("learning_rate", 0.05)
        },
        "a.txt",
        &data,
        1e-5,
        &["train:loss"],
    );
}

/// Ranks that disagree on what they sum (here k, so the k-means centers
/// rank 0 broadcasts are 3 x 6 floats on rank 0 and 4 x 6 on rank 1: k-means
/// reads the label column as a feature too) stop
/// at that collective, well inside the ring's 30 s timeout, each naming
/// what the other sent and what it expected itself.
#[test]
fn ranks_out_of_step_fail_at_once_naming_both_sides() {
    let data = blobs(200, 5, 4, 17);
    let jobs: Vec<Job> = [3, 4]
        .iter()
        .map(|&k| {
            Job::new("kmeans")
                .hp("k", k)
                .hp("max_iter", 5)
                .channel_file("train", "a.csv", &data)
        })
        .collect();
    let start = std::time::Instant::now();
    let children = common::spawn_ranks(&jobs);
    let outcomes = common::wait_ranks(&jobs, children, Duration::from_secs(120));
    let seconds = start.elapsed().as_secs_f64();
    assert!(seconds < 20.0, "the ranks took {seconds} s to fail");
    let (mine, theirs) = (["18", "24"], ["24", "18"]);
    for (rank, out) in outcomes.iter().enumerate() {
        assert_eq!(out.code, 1, "rank {rank}: {out:#?}");
        let failure = out.failure.as_deref().unwrap_or_default();
        let other = 1 - rank;
        for want in [
            format!("rank {other} sent broadcast #"),
            format!(" of {} f32, rank {rank} expected broadcast #", theirs[rank]),
            format!(" of {} f32", mine[rank]),
        ] {
            assert!(
                failure.contains(&want),
                "rank {rank}: {want:?} in {failure}"
            );
        }
    }
}

/// A k-means center left without rows takes the row farthest from its
/// center, on any number of ranks. 97 rows at (0, 0) and one at each of
/// (10, 0), (0, 10), (10, 10): random initialization takes some of the 97
/// twice, and ties go to the lower center, so the copies get no rows.
/// Relocated, the 4 centers end on the 4 points (inertia 0); left where
/// they were, a point would stay with another's center.
#[test]
fn kmeans_moves_empty_clusters_to_the_farthest_rows() {
    let mut data = "0,0\n".repeat(97);
    data.push_str("10,0\n0,10\n10,10\n");
    let make = || {
        Job::new("kmeans")
            .hp("k", 4)
            .hp("init", "random")
            .hp("max_iter", 10)
            .channel_file("train", "a.csv", &data)
    };
    let mut models = Vec::new();
    for world in [1, 2] {
        let (jobs, outs) = run_ranks_with_output(world, &make);
        assert!(
            outs[0]
                .stderr
                .contains("empty clusters moved to the rows farthest from their centers"),
            "{world} ranks: {}",
            outs[0].stderr
        );
        // 0 up to float32 rounding; a point left with another's center
        // would add at least 50.
        let inertia = outs[0].metric("train:inertia");
        assert!(inertia < 1e-4, "{world} ranks: inertia {inertia}");
        let model = jobs[0].model();
        let centers: Vec<Vec<f32>> = Vec::<f32>::try_from(model["centers"].reshape([-1]))
            .unwrap()
            .chunks(2)
            .map(<[f32]>::to_vec)
            .collect();
        // Rounded to whole numbers, the centers are the 4 points.
        let mut rounded: Vec<[i32; 2]> = centers
            .iter()
            .map(|c| {
                assert!(
                    c.iter().all(|v| (v - v.round()).abs() < 1e-4),
                    "{centers:?}"
                );
                [c[0].round() as i32, c[1].round() as i32]
            })
            .collect();
        rounded.sort();
        assert_eq!(
            rounded,
            [[0, 0], [0, 10], [10, 0], [10, 10]],
            "{world} ranks: {centers:?}"
        );
        models.push(model);
    }
    let diff = max_diff(&models[0], &models[1]);
    assert!(diff < 1e-5, "1 and 2 ranks differ by {diff}");
}
