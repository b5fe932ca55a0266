//! Data parallelism: 2 and 3 ranks (processes joined by the TCP ring on
//! loopback) reach the model of 1 rank with the same global batch, within
//! float tolerance. Pipeline stages give the loss trajectory of the unsplit
//! network.

mod common;

use common::{Job, blobs, max_diff, run_ranks, run_ranks_with_output};

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
