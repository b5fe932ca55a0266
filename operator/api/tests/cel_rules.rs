//! Each cross-field rule refuses what it should, with its message, evaluated
//! by the same CEL rules the API server runs (client-side here; the e2e suite
//! checks the API server itself).

use kiln_api::{Endpoint, ModelPackage, Pipeline, PipelineRun, TrainingJob, TuningJob};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn example<T: DeserializeOwned>(name: &str, edit: impl FnOnce(&mut Value)) -> T {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut value: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    serde_json::from_value(value).unwrap()
}

/// Asserts the CEL errors mention `expected`.
fn refused(result: Result<(), impl std::fmt::Display>, expected: &str) {
    match result {
        Ok(()) => panic!("accepted, but should be refused with {expected:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(expected),
                "refused with {text:?}, expected {expected:?}"
            );
        }
    }
}

#[test]
fn training_job_needs_exactly_one_of_builtin_and_image() {
    let both: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["algorithm"]["image"] = json!("my/image:1")
    });
    refused(both.validate_cel(), "set exactly one of algorithm.name");
    let neither: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["algorithm"] = json!({})
    });
    refused(neither.validate_cel(), "set exactly one of algorithm.name");
    let args_on_builtin: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["algorithm"]["args"] = json!(["train"])
    });
    refused(
        args_on_builtin.validate_cel(),
        "apply to algorithm.image only",
    );
}

#[test]
fn spot_wait_must_cover_runtime() {
    let short: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["stoppingCondition"]["maxWaitSeconds"] = json!(60)
    });
    refused(short.validate_cel(), "maxWaitSeconds must be at least");
    let no_spot: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["capacityType"] = json!("OnDemand")
    });
    refused(no_spot.validate_cel(), "applies to spot training only");
    let fallback: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["capacityType"] = json!("SpotWithFallback")
    });
    fallback.validate_cel().unwrap();
}

#[test]
fn model_parallel_partitions_divide_ranks() {
    let job: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["algorithm"]["name"] = json!("mlp");
        v["spec"]["distribution"] =
            json!({"strategy": "ModelParallel", "modelParallel": {"partitions": 3}});
    });
    refused(job.validate_cel(), "partitions must divide");
    let ok: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["algorithm"]["name"] = json!("mlp");
        v["spec"]["distribution"] = json!({"strategy": "ModelParallel", "modelParallel": {"partitions": 2, "microBatches": 4}});
    });
    ok.validate_cel().unwrap();
    let missing: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["distribution"] = json!({"strategy": "ModelParallel"})
    });
    refused(
        missing.validate_cel(),
        "set distribution.modelParallel exactly when",
    );
}

#[test]
fn builtin_on_many_replicas_needs_a_distribution() {
    let job: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["distribution"] = json!({})
    });
    refused(job.validate_cel(), "needs distribution.strategy");
}

#[test]
fn processes_per_gpu_replica_bounded_by_gpus() {
    let job: TrainingJob = example("trainingjob-pytorch.yaml", |v| {
        v["spec"]["resources"]["processesPerReplica"] = json!(8)
    });
    refused(job.validate_cel(), "cannot exceed compute.gpus");
}

#[test]
fn training_job_spec_is_immutable_except_suspend() {
    let old: TrainingJob = example("trainingjob-builtin.yaml", |_| {});
    let changed: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["hyperparameters"]["epochs"] = json!("31")
    });
    refused(
        changed.validate_cel_update(&old),
        "spec.hyperparameters cannot change after the TrainingJob is created",
    );
    let added: TrainingJob = example("trainingjob-pytorch.yaml", |_| {});
    let with_checkpoint: TrainingJob = example("trainingjob-pytorch.yaml", |v| {
        v["spec"]["checkpoint"] = json!({"location": {"uri": "s3://ckpt/x/"}});
    });
    refused(
        with_checkpoint.validate_cel_update(&added),
        "spec.checkpoint cannot change",
    );
    let suspended: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["suspend"] = json!(true)
    });
    suspended.validate_cel_update(&old).unwrap();
    let without_env: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        v["spec"]["ttlSecondsAfterFinished"] = json!(60)
    });
    without_env.validate_cel_update(&old).unwrap();
}

#[test]
fn placement_changes_only_while_suspended_and_never_started() {
    let suspend = |v: &mut Value| v["spec"]["suspend"] = json!(true);
    let place = |v: &mut Value| {
        v["spec"]["resources"]["placement"]["nodeSelector"] =
            json!({"cloud.example.com/pool": "a100"});
        v["spec"]["resources"]["placement"]["tolerations"] =
            json!([{"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}]);
    };
    let queued: TrainingJob = example("trainingjob-builtin.yaml", suspend);
    let placed: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        suspend(v);
        place(v)
    });
    placed.validate_cel_update(&queued).unwrap();
    let running: TrainingJob = example("trainingjob-builtin.yaml", |_| {});
    let moved: TrainingJob = example("trainingjob-builtin.yaml", place);
    refused(
        moved.validate_cel_update(&running),
        "except resources.placement while the job is suspended and has never started",
    );
    let started: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        suspend(v);
        v["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
    });
    refused(
        placed.validate_cel_update(&started),
        "spec.resources cannot change",
    );
    let grown: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        suspend(v);
        v["spec"]["resources"]["replicas"] = json!(8)
    });
    refused(
        grown.validate_cel_update(&queued),
        "spec.resources cannot change",
    );
}

#[test]
fn channel_names_differ_as_environment_variables() {
    let clash: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        let first = v["spec"]["inputs"][0].clone();
        let mut second = first.clone();
        second["name"] = json!(first["name"].as_str().unwrap().to_uppercase());
        v["spec"]["inputs"] = json!([first, second]);
    });
    refused(clash.validate_cel(), "must differ once upper-cased");
    let dotted: TrainingJob = example("trainingjob-builtin.yaml", |v| {
        let first = v["spec"]["inputs"][0].clone();
        let mut a = first.clone();
        a["name"] = json!("train-a");
        let mut b = first;
        b["name"] = json!("train.a");
        v["spec"]["inputs"] = json!([a, b]);
    });
    refused(dotted.validate_cel(), "must differ once upper-cased");
}

#[test]
fn volumes_and_mounts() {
    let two_sources: TrainingJob = example("trainingjob-pytorch.yaml", |v| {
        v["spec"]["resources"]["placement"]["volumes"][0]["emptyDir"] = json!({})
    });
    refused(two_sources.validate_cel(), "sets exactly one of");
    let reserved: TrainingJob = example("trainingjob-pytorch.yaml", |v| {
        v["spec"]["resources"]["placement"]["volumeMounts"][0]["mountPath"] = json!("/opt/ml/model")
    });
    refused(reserved.validate_cel(), "are Kiln's own mounts");
    let kiln_name: TrainingJob = example("trainingjob-pytorch.yaml", |v| {
        v["spec"]["resources"]["placement"]["volumes"][0]["name"] = json!("kiln-cache")
    });
    refused(
        kiln_name.validate_cel(),
        "are Kiln's own: choose another name",
    );
}

#[test]
fn tuning_job_rules() {
    let parallel: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["limits"]["maxParallelTrainingJobs"] = json!(31)
    });
    refused(
        parallel.validate_cel(),
        "cannot exceed limits.maxTrainingJobs",
    );
    let range: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["parameterRanges"]["integer"][0]["min"] = json!(300)
    });
    refused(range.validate_cel(), "min must be below max");
    let log: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["parameterRanges"]["continuous"][0]["min"] = json!("0")
    });
    refused(log.validate_cel(), "Logarithmic scaling needs min > 0");
    let clash: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["trainingJobTemplate"]["spec"]["hyperparameters"]["optimizer"] = json!("adam");
    });
    refused(clash.validate_cel(), "must not also be set");
    let no_static: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["trainingJobTemplate"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("hyperparameters");
    });
    no_static.validate_cel().unwrap();
    let hyperband: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["strategy"]["type"] = json!("Hyperband")
    });
    refused(hyperband.validate_cel(), "strategy.hyperband is required");
    let tuned_resource: TuningJob = example(
        "tuningjob.yaml",
        |v| v["spec"]["strategy"] = json!({"type": "Hyperband", "hyperband": {"resourceName": "learning_rate", "minResource": 1, "maxResource": 27}}),
    );
    refused(
        tuned_resource.validate_cel(),
        "cannot also be a tuned range",
    );
    let settings_elsewhere: TuningJob =
        example(
            "tuningjob.yaml",
            |v| {
                v["spec"]["strategy"]["hyperband"] =
                    json!({"resourceName": "epochs", "minResource": 1, "maxResource": 27})
            },
        );
    refused(
        settings_elsewhere.validate_cel(),
        "applies to strategy.type Hyperband only",
    );
    let grid: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["strategy"]["type"] = json!("Grid")
    });
    refused(
        grid.validate_cel(),
        "Grid search takes integer and categorical ranges only",
    );
    let old: TuningJob = example("tuningjob.yaml", |_| {});
    let grown: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["limits"]["maxTrainingJobs"] = json!(60)
    });
    grown.validate_cel_update(&old).unwrap();
    let new_objective: TuningJob = example("tuningjob.yaml", |v| {
        v["spec"]["objective"]["type"] = json!("Minimize")
    });
    refused(
        new_objective.validate_cel_update(&old),
        "can only change its limits",
    );
}

#[test]
fn endpoint_rules() {
    let no_traffic: Endpoint = example("endpoint.yaml", |v| {
        v["spec"]["variants"][0]["initialWeight"] = json!(0);
        v["spec"]["variants"][1]["initialWeight"] = json!(0);
    });
    refused(
        no_traffic.validate_cel(),
        "at least one variant needs initialWeight",
    );
    let two_sources: Endpoint = example("endpoint.yaml", |v| {
        v["spec"]["variants"][1]["model"]["modelPackage"] = json!({"name": "x"})
    });
    refused(
        two_sources.validate_cel(),
        "set exactly one of model.modelPackage",
    );
    let async_without_config: Endpoint =
        example("endpoint.yaml", |v| v["spec"]["mode"] = json!("Async"));
    refused(
        async_without_config.validate_cel(),
        "set async exactly when mode is Async",
    );
    let scaling: Endpoint = example("endpoint.yaml", |v| {
        v["spec"]["variants"][0]["autoscaling"]["minReplicas"] = json!(20)
    });
    refused(scaling.validate_cel(), "minReplicas cannot exceed");
    let shadow_name: Endpoint = example("endpoint.yaml", |v| {
        v["spec"]["shadowVariants"][0]["name"] = json!("champion")
    });
    refused(shadow_name.validate_cel(), "cannot share a name");
    let canary: Endpoint = example("endpoint.yaml", |v| {
        v["spec"]["deployment"] = json!({"strategy": "Canary"})
    });
    refused(canary.validate_cel(), "set deployment.canary exactly when");
    let old: Endpoint = example("endpoint.yaml", |_| {});
    let serverless: Endpoint =
        example("endpoint.yaml", |v| v["spec"]["mode"] = json!("Serverless"));
    refused(serverless.validate_cel_update(&old), "mode cannot change");
}

#[test]
fn model_package_rules() {
    let rejected: ModelPackage = example("modelpackage.yaml", |v| {
        v["spec"]["approval"] = json!({"status": "Rejected"})
    });
    refused(rejected.validate_cel(), "say why in approval.description");
    let old: ModelPackage = example("modelpackage.yaml", |_| {});
    let regrouped: ModelPackage = example("modelpackage.yaml", |v| {
        v["spec"]["groupName"] = json!("other")
    });
    refused(
        regrouped.validate_cel_update(&old),
        "register a new version instead",
    );
    let approval_change: ModelPackage = example("modelpackage.yaml", |v| {
        v["spec"]["approval"] = json!({"status": "Rejected", "description": "drift"});
    });
    approval_change.validate_cel_update(&old).unwrap();
    // What was approved includes its evaluation: the metrics stay while the
    // stored package is Approved, and may change once it is not.
    let new_metrics = |v: &mut Value| {
        v["spec"]["modelMetrics"]["values"][0]["value"] = json!(0.99);
    };
    let rewritten: ModelPackage = example("modelpackage.yaml", new_metrics);
    refused(
        rewritten.validate_cel_update(&old),
        "spec.modelMetrics cannot change while the package is Approved",
    );
    let dropped: ModelPackage = example("modelpackage.yaml", |v| {
        v["spec"].as_object_mut().unwrap().remove("modelMetrics");
    });
    refused(
        dropped.validate_cel_update(&old),
        "spec.modelMetrics cannot change while the package is Approved",
    );
    let pending = |v: &mut Value| {
        v["spec"]["approval"] = json!({"status": "PendingManualApproval"});
    };
    let pending_old: ModelPackage = example("modelpackage.yaml", pending);
    let pending_new: ModelPackage = example("modelpackage.yaml", |v| {
        pending(v);
        new_metrics(v);
    });
    pending_new.validate_cel_update(&pending_old).unwrap();
    // Approving together with the final numbers is one update.
    let approved_with_metrics: ModelPackage = example("modelpackage.yaml", new_metrics);
    approved_with_metrics
        .validate_cel_update(&pending_old)
        .unwrap();
}

#[test]
fn pipeline_rules() {
    let unknown: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][4]["dependsOn"] = json!(["nope"])
    });
    refused(unknown.validate_cel(), "must name a step of this pipeline");
    let itself: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][4]["dependsOn"] = json!(["deploy"])
    });
    refused(itself.validate_cel(), "cannot depend on itself");
    let two_kinds: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][5]["registerModel"] = json!({"groupName": "g", "modelFromStep": "train"})
    });
    refused(two_kinds.validate_cel(), "a step sets exactly one of");
    let branch: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][2]["condition"]["elseSteps"] = json!(["ghost"])
    });
    refused(branch.validate_cel(), "must name steps of this pipeline");
    let both_branches: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][2]["condition"]["elseSteps"] = json!(["reject", "deploy"])
    });
    refused(
        both_branches.validate_cel(),
        "cannot be in both condition.ifSteps and condition.elseSteps",
    );
    let retried_fail: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][5]["retry"] = json!({"maxAttempts": 2})
    });
    refused(
        retried_fail.validate_cel(),
        "condition and fail steps take neither cache nor retry",
    );
    let register_from_condition: Pipeline = example("pipeline.yaml", |v| {
        v["spec"]["steps"][3]["registerModel"]["modelFromStep"] = json!("good-enough")
    });
    refused(
        register_from_condition.validate_cel(),
        "must name a training or tuning step",
    );
    for (type_, default, message) in [
        ("Integer", "2.5", "must be an integer"),
        ("Float", "fast", "must be a number"),
        ("Boolean", "yes", "must be \"true\" or \"false\""),
    ] {
        let wrong: Pipeline = example("pipeline.yaml", |v| {
            v["spec"]["parameters"][2] = json!({"name": "p", "type": type_, "default": default})
        });
        refused(wrong.validate_cel(), message);
    }
    for cron in [
        "every day",
        "0 3 * *",
        "0 3 * * * *",
        "@sometimes",
        "0 3 * * ?x",
    ] {
        let wrong: Pipeline = example("pipeline.yaml", |v| {
            v["spec"]["schedule"]["cron"] = json!(cron)
        });
        refused(
            wrong.validate_cel(),
            "schedule.cron must be five cron fields",
        );
    }
    for cron in ["*/15 * * * *", "0 3 * * MON-FRI", "0 0 1,15 * *", "@daily"] {
        let good: Pipeline = example("pipeline.yaml", |v| {
            v["spec"]["schedule"]["cron"] = json!(cron)
        });
        good.validate_cel()
            .unwrap_or_else(|e| panic!("{cron:?} refused: {e}"));
    }
}

#[test]
fn pipeline_run_keeps_its_pipeline_and_parameters() {
    let old: PipelineRun = example("pipelinerun.yaml", |_| {});
    let stopped: PipelineRun = example("pipelinerun.yaml", |v| v["spec"]["stop"] = json!(true));
    stopped.validate_cel_update(&old).unwrap();
    refused(old.validate_cel_update(&stopped), "cannot be resumed");
    let other_pipeline: PipelineRun = example("pipelinerun.yaml", |v| {
        v["spec"]["pipelineRef"]["name"] = json!("other")
    });
    refused(
        other_pipeline.validate_cel_update(&old),
        "spec.pipelineRef cannot change",
    );
    let other_values: PipelineRun = example("pipelinerun.yaml", |v| {
        v["spec"]["parameters"][0]["value"] = json!("0.2")
    });
    refused(
        other_values.validate_cel_update(&old),
        "spec.parameters cannot change",
    );
}
