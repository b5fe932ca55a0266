use super::*;

fn settings() -> Settings {
    Settings {
        runtime_image: "kiln/runtime:test".into(),
        cluster_domain: "cluster.local".into(),
        spot_label: ("karpenter.sh/capacity-type".into(), "spot".into()),
        spot_tolerations: vec![Toleration {
            key: Some("cloud.google.com/gke-spot".into()),
            operator: Some("Equal".into()),
            value: Some("true".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }],
    }
}

fn job(yaml: &str) -> TrainingJob {
    let mut job: TrainingJob = serde_yaml::from_str(yaml).unwrap();
    job.metadata.namespace = Some("ml".into());
    job.metadata.uid = Some("0a1b2c3d".into());
    job
}

fn example(name: &str) -> TrainingJob {
    let path = format!("{}/../api/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    job(&std::fs::read_to_string(path).unwrap())
}

fn env_of(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

fn init<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no init container {name}"))
}

#[test]
fn one_pod_per_rank_with_stable_names_hosts_and_owner() {
    let job = example("trainingjob-builtin.yaml");
    let children = children(&job, 2, &settings());
    let names: Vec<_> = children
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["iris-linear-a2-0", "iris-linear-a2-1"]);
    for (rank, pod) in children.pods.iter().enumerate() {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("algo-{}", rank + 1).as_str())
        );
        assert_eq!(spec.subdomain.as_deref(), Some("iris-linear-hosts"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("TrainingJob", "0a1b2c3d")
        );
        assert_eq!(owner.controller, Some(true));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[ATTEMPT_LABEL], "2");
        assert_eq!(labels[RANK_LABEL], rank.to_string());
        assert_eq!(
            spec.scheduling_gates.as_ref().unwrap()[0].name,
            GANG_GATE,
            "every rank starts gated"
        );
    }
    // Building twice gives the same objects: a restarted operator finds them.
    let again = super::children(&job, 2, &settings());
    assert_eq!(again.pods, children.pods);
    assert_eq!(again.config_map, children.config_map);
}

#[test]
fn service_is_headless_and_publishes_ranks_before_they_are_ready() {
    let children = children(&example("trainingjob-builtin.yaml"), 1, &settings());
    let spec = children.service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector.unwrap()[ATTEMPT_LABEL], "1");
    assert_eq!(
        children.service.metadata.name.as_deref(),
        Some("iris-linear-hosts")
    );
}

#[test]
fn config_files_follow_the_sagemaker_contract() {
    let children = children(&example("trainingjob-builtin.yaml"), 1, &settings());
    let data = children.config_map.data.unwrap();
    let hps: serde_json::Value = serde_json::from_str(&data["hyperparameters.json"]).unwrap();
    assert_eq!(hps["num_classes"], "3");
    let inputs: serde_json::Value = serde_json::from_str(&data["inputdataconfig.json"]).unwrap();
    assert_eq!(inputs["train"]["S3DistributionType"], "ShardedByS3Key");
    assert_eq!(
        inputs["validation"]["S3DistributionType"],
        "FullyReplicated"
    );
    assert_eq!(inputs["train"]["ContentType"], "text/csv");
    assert_eq!(inputs["train"]["TrainingInputMode"], "File");
    let rc: serde_json::Value = serde_json::from_str(&data["resourceconfig-algo-2.json"]).unwrap();
    assert_eq!(rc["current_host"], "algo-2");
    assert_eq!(rc["hosts"], serde_json::json!(["algo-1", "algo-2"]));
    // Each pod mounts its own resource config as resourceconfig.json.
    let pod = &children.pods[1];
    let volume = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "kiln-config")
        .unwrap();
    let items = volume.config_map.as_ref().unwrap().items.as_ref().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.key == "resourceconfig-algo-2.json" && i.path == "resourceconfig.json")
    );
}

#[test]
fn ranks_see_the_sagemaker_and_pytorch_variables() {
    let children = children(&example("trainingjob-builtin.yaml"), 1, &settings());
    let train = init(&children.pods[1], TRAIN_CONTAINER);
    assert_eq!(env_of(train, "SM_CURRENT_HOST").as_deref(), Some("algo-2"));
    assert_eq!(
        env_of(train, "SM_HOSTS").as_deref(),
        Some(r#"["algo-1","algo-2"]"#)
    );
    assert_eq!(
        env_of(train, "SM_CHANNELS").as_deref(),
        Some(r#"["train","validation"]"#)
    );
    assert_eq!(
        env_of(train, "SM_CHANNEL_TRAIN").as_deref(),
        Some("/opt/ml/input/data/train")
    );
    assert_eq!(env_of(train, "SM_HP_NUM_CLASSES").as_deref(), Some("3"));
    assert_eq!(env_of(train, "SM_NUM_CPUS").as_deref(), Some("2"));
    assert_eq!(
        env_of(train, "MASTER_ADDR").as_deref(),
        Some("algo-1.iris-linear-hosts")
    );
    assert_eq!(env_of(train, "MASTER_PORT").as_deref(), Some("29500"));
    assert_eq!(env_of(train, "WORLD_SIZE").as_deref(), Some("2"));
    assert_eq!(env_of(train, "RANK").as_deref(), Some("1"));
    assert_eq!(env_of(train, "PET_NNODES").as_deref(), Some("2"));
    assert_eq!(env_of(train, "PET_NODE_RANK").as_deref(), Some("1"));
    assert_eq!(
        env_of(train, "KILN_ALGORITHM").as_deref(),
        Some("linear-learner")
    );
    assert_eq!(train.image.as_deref(), Some("kiln/runtime:test"));
    assert_eq!(train.args.as_deref(), Some(&["train".to_string()][..]));
    assert_eq!(
        train.termination_message_path.as_deref(),
        Some("/opt/ml/output/failure")
    );
    // The failure file's folder is a volume the (non-root) algorithm can write.
    let mounts = train.volume_mounts.as_ref().unwrap();
    let output = mounts
        .iter()
        .find(|m| m.mount_path == "/opt/ml/output")
        .unwrap();
    assert_eq!(output.name, "kiln-output");
    let dns = children.pods[1]
        .spec
        .as_ref()
        .unwrap()
        .dns_config
        .as_ref()
        .unwrap();
    assert_eq!(
        dns.searches.as_ref().unwrap()[0],
        "iris-linear-hosts.ml.svc.cluster.local"
    );
}

#[test]
fn torchrun_layout_for_your_own_image() {
    let children = children(&example("trainingjob-pytorch.yaml"), 1, &settings());
    let train = init(&children.pods[1], TRAIN_CONTAINER);
    assert_eq!(env_of(train, "PET_NPROC_PER_NODE").as_deref(), Some("4"));
    assert_eq!(env_of(train, "WORLD_SIZE").as_deref(), Some("8"));
    assert_eq!(env_of(train, "RANK").as_deref(), Some("4"));
    assert_eq!(
        train.command.as_deref(),
        Some(&["torchrun".to_string()][..])
    );
    // /opt/ml/model exists before the image's script starts.
    let model = train
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/opt/ml/model")
        .expect("a model mount");
    assert_eq!(
        (model.name.as_str(), model.sub_path.as_deref()),
        ("kiln-ml", Some("model"))
    );
    let built_in = super::children(&example("trainingjob-builtin.yaml"), 1, &settings());
    assert!(
        !init(&built_in.pods[0], TRAIN_CONTAINER)
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/opt/ml/model"),
        "the runtime makes its own"
    );
    let limits = train.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "4");
    assert_eq!(limits["memory"].0, "200Gi");
    // The user's variables come through, the Secret reference untouched.
    let key = train
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "WANDB_API_KEY")
        .unwrap();
    assert_eq!(
        key.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "wandb"
    );
    let spec = children.pods[0].spec.as_ref().unwrap();
    assert!(
        spec.tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("nvidia.com/gpu"))
    );
    assert!(
        train
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/mnt/cache")
    );
    assert!(
        train
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/dev/shm")
    );
    // A pvc:// channel is mounted read-only, not fetched.
    let inits: Vec<_> = spec
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["train"]);
    let data = train
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/opt/ml/input/data/train")
        .unwrap();
    assert_eq!(
        (data.read_only, data.sub_path.as_deref()),
        (Some(true), Some("train"))
    );
}

#[test]
fn remote_channels_are_fetched_and_sharded_before_training() {
    let children = children(&example("trainingjob-builtin.yaml"), 1, &settings());
    let pod = &children.pods[1];
    let names: Vec<_> = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        names,
        ["fetch-0", "fetch-1", "checkpoint-restore", "train"],
        "rank 1 has no sync sidecar"
    );
    let fetch = init(pod, "fetch-0");
    let args = fetch.args.as_ref().unwrap().join(" ");
    assert_eq!(
        args,
        "fetch --uri s3://datasets/iris/train/ --to /opt/ml/input/data/train --shard 1/2"
    );
    assert!(
        !init(pod, "fetch-1")
            .args
            .as_ref()
            .unwrap()
            .contains(&"--shard".to_string())
    );
    let secret = fetch.env_from.as_ref().unwrap()[0]
        .secret_ref
        .as_ref()
        .unwrap();
    assert_eq!(secret.name, "s3-credentials");
    let rank0 = &children.pods[0];
    let sync = init(rank0, "checkpoint-sync");
    assert_eq!(sync.restart_policy.as_deref(), Some("Always"));
    let push = &rank0.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        push.args.as_ref().unwrap().join(" "),
        "push --from /opt/ml/model --to s3://models/iris/ml/iris-linear/output/model.tar.gz --compression gzip --metrics /opt/ml/output/metrics.json"
    );
    let other_push = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        other_push.args.as_ref().unwrap().join(" "),
        "push --from /opt/ml/model"
    );
    assert!(
        other_push.env_from.is_none(),
        "only rank 0 gets the output credentials"
    );
}

#[test]
fn spot_requires_or_prefers_the_spot_label_and_tolerates_its_taints() {
    let spot = children(&example("trainingjob-builtin.yaml"), 1, &settings());
    let spec = spot.pods[0].spec.as_ref().unwrap();
    let node = spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap();
    let term = &node
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let req = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (req.key.as_str(), req.values.as_ref().unwrap()[0].as_str()),
        ("karpenter.sh/capacity-type", "spot")
    );
    assert!(
        spec.tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("cloud.google.com/gke-spot"))
    );

    let mut fallback = example("trainingjob-builtin.yaml");
    fallback.spec.capacity_type = CapacityType::SpotWithFallback;
    let c = children(&fallback, 1, &settings());
    let node = c.pods[0]
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .clone()
        .unwrap()
        .node_affinity
        .unwrap();
    assert!(
        node.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    assert_eq!(
        node.preferred_during_scheduling_ignored_during_execution
            .unwrap()[0]
            .weight,
        100
    );

    let mut on_demand = example("trainingjob-builtin.yaml");
    on_demand.spec.capacity_type = CapacityType::OnDemand;
    let c = children(&on_demand, 1, &settings());
    let spec = c.pods[0].spec.as_ref().unwrap();
    assert!(spec.affinity.is_none());
    assert!(spec.tolerations.is_none());
}

#[test]
fn user_labels_never_override_kiln_labels() {
    let mut job = example("trainingjob-builtin.yaml");
    job.spec.resources.placement.pod_labels = BTreeMap::from([
        ("team".to_string(), "vision".to_string()),
        (JOB_LABEL.to_string(), "someone-else".to_string()),
        ("kiln.dev/rank".to_string(), "7".to_string()),
    ]);
    let c = children(&job, 1, &settings());
    let labels = c.pods[1].metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "vision");
    assert_eq!(labels[JOB_LABEL], "iris-linear");
    assert_eq!(labels[RANK_LABEL], "1");
}

#[test]
fn uncompressed_output_is_a_prefix() {
    let mut job = example("trainingjob-builtin.yaml");
    job.spec.output.compression = Compression::None;
    assert_eq!(
        model_artifact_uri(&job.spec, "ml", "iris-linear"),
        "s3://models/iris/ml/iris-linear/output/model/"
    );
}

#[test]
fn whole_cpus_round_up() {
    assert_eq!(whole_cpus("500m"), Some(1));
    assert_eq!(whole_cpus("2"), Some(2));
    assert_eq!(whole_cpus("1.5"), Some(2));
    assert_eq!(whole_cpus("lots"), None);
}
