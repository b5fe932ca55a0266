use super::*;
use kiln_api::common::SecretReference;

fn settings() -> Settings {
    Settings {
        runtime_image: "kiln/runtime:test".into(),
        router_image: "kiln/operator:test".into(),
        router_replicas: 2,
        cluster_domain: "cluster.local".into(),
    }
}

fn example() -> Endpoint {
    let path = format!(
        "{}/../api/examples/endpoint.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut ep: Endpoint = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ep.metadata.uid = Some("0a1b2c3d".into());
    ep
}

fn model(uri: &str, image: Option<&str>) -> ResolvedModel {
    ResolvedModel {
        model_uri: uri.into(),
        secret: Some(StorageLocation {
            uri: uri.into(),
            secret_ref: Some(SecretReference {
                name: "s3-credentials".into(),
            }),
        }),
        algorithm: image.is_none().then_some(BuiltinAlgorithm::LinearLearner),
        image: image.map(String::from),
        env: vec![env("OMP_NUM_THREADS", "2")],
        package: None,
    }
}

fn served(ep: &Endpoint) -> Vec<ServedVariant<'_>> {
    let mut out: Vec<ServedVariant<'_>> = ep
        .spec
        .variants
        .iter()
        .map(|v| ServedVariant {
            name: &v.name,
            shadow: false,
            replicas: v.replicas,
            resources: &v.resources,
            placement: &v.placement,
            model: model(&format!("s3://models/{}/model.tar.gz", v.name), None),
        })
        .collect();
    for s in &ep.spec.shadow_variants {
        out.push(ServedVariant {
            name: &s.name,
            shadow: true,
            replicas: s.replicas,
            resources: &s.resources,
            placement: &s.placement,
            model: model(
                "s3://models/shadow/model.tar.gz",
                Some("example.com/my-server:1"),
            ),
        });
    }
    out
}

fn container(d: &Deployment) -> &Container {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

#[test]
fn a_deployment_and_service_per_variant_and_the_router_in_front() {
    let ep = example();
    let variants = served(&ep);
    let c = children(&ep, &variants, &initial_weights(&ep), 1, &settings());
    let names: Vec<_> = c.deployments.iter().map(|d| d.name_any()).collect();
    assert_eq!(
        names,
        ["iris-champion", "iris-challenger", "iris-candidate"]
    );
    let services: Vec<_> = c.services.iter().map(|s| s.name_any()).collect();
    assert_eq!(services, names);
    assert_eq!(c.router.name_any(), "iris-router");
    assert_eq!(c.router_config.name_any(), "iris-router");
    assert_eq!(c.service.name_any(), "iris");
    for d in c.deployments.iter().chain([&c.router]) {
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Endpoint", Some(true))
        );
        // The selector is the pod labels' subset, so pods of one variant
        // never count for another.
        let spec = d.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "{}", d.name_any());
        }
        let strategy = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    }
    let roles: Vec<_> = c
        .deployments
        .iter()
        .map(|d| d.labels().get(ROLE_LABEL).cloned().unwrap())
        .collect();
    assert_eq!(roles, ["serving", "serving", "shadow"]);
    assert_eq!(c.router.spec.as_ref().unwrap().replicas, Some(2));
}

#[test]
fn built_ins_are_served_by_the_runtime_from_the_store_and_your_image_gets_opt_ml_model() {
    let ep = example();
    let variants = served(&ep);
    let c = children(&ep, &variants, &initial_weights(&ep), 1, &settings());
    let champion = container(&c.deployments[0]);
    assert_eq!(champion.image.as_deref(), Some("kiln/runtime:test"));
    let args = champion.args.clone().unwrap();
    assert_eq!(
        &args[..3],
        ["serve", "--model", "s3://models/champion/model.tar.gz"]
    );
    // The endpoint's batching reaches every replica.
    let at = args.iter().position(|a| a == "--max-batch-size").unwrap();
    assert_eq!(args[at + 1], "32");
    let at = args
        .iter()
        .position(|a| a == "--max-batch-delay-ms")
        .unwrap();
    assert_eq!(args[at + 1], "2");
    assert_eq!(
        champion.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "s3-credentials"
    );
    let resources = champion.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    let probe = champion
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (probe.path.as_deref(), &probe.port),
        (Some("/ping"), &IntOrString::Int(8080))
    );
    // Download (600) and start-up (600) allowances over a 2 s period.
    assert_eq!(
        champion.startup_probe.as_ref().unwrap().failure_threshold,
        Some(600)
    );
    assert_eq!(
        champion
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .sleep
            .as_ref()
            .unwrap()
            .seconds,
        DRAIN_SECONDS
    );
    let pod = c.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    // Drain, the request timeout (10 s) and a margin.
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(DRAIN_SECONDS + 10 + 5)
    );

    let shadow = &c.deployments[2];
    let pod = shadow
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let fetch = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(fetch.image.as_deref(), Some("kiln/runtime:test"));
    assert_eq!(
        fetch.args.clone().unwrap(),
        [
            "fetch",
            "--uri",
            "s3://models/shadow/model.tar.gz",
            "--to",
            "/opt/ml/model",
            "--decompress",
            "gzip"
        ]
    );
    let server = container(shadow);
    assert_eq!(server.image.as_deref(), Some("example.com/my-server:1"));
    assert_eq!(server.args.clone().unwrap(), ["serve"]);
    assert!(
        server.env_from.is_none(),
        "your image gets no storage credentials"
    );
    let m = server.volume_mounts.as_ref().unwrap();
    assert!(
        m.iter()
            .any(|m| m.mount_path == "/opt/ml/model" && m.read_only == Some(true))
    );
    // Your image's user is its own: no forced non-root.
    assert!(pod.security_context.is_none());
    let env = server.env.as_ref().unwrap();
    assert_eq!(
        env.last().unwrap().name,
        "OMP_NUM_THREADS",
        "the user's variables come last"
    );
}

#[test]
fn the_router_config_names_each_variants_service_weight_shadow_and_capture() {
    let ep = example();
    let variants = served(&ep);
    let c = children(&ep, &variants, &initial_weights(&ep), 7, &settings());
    let json = &c.router_config.data.as_ref().unwrap()[router::CONFIG_KEY];
    let config: RouterConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config.endpoint, "iris");
    assert_eq!(config.revision, 7);
    assert_eq!(config.request_timeout_seconds, 10);
    let routes: Vec<_> = config
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.url.as_str(), v.weight))
        .collect();
    assert_eq!(
        routes,
        [
            (
                "champion",
                "http://iris-champion.ml.svc.cluster.local:8080",
                9
            ),
            (
                "challenger",
                "http://iris-challenger.ml.svc.cluster.local:8080",
                1
            ),
        ]
    );
    assert_eq!(config.shadows.len(), 1);
    assert_eq!(config.shadows[0].sampling_percent, 50);
    assert_eq!(
        config.shadows[0].url,
        "http://iris-candidate.ml.svc.cluster.local:8080"
    );
    let capture = config.data_capture.unwrap();
    assert_eq!(
        (capture.sampling_percent, capture.destination.as_str()),
        (20, "s3://capture/iris/")
    );
    // The router reads the capture store's credentials from its environment.
    let router = container(&c.router);
    assert_eq!(
        router.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "s3-credentials"
    );
    assert_eq!(router.image.as_deref(), Some("kiln/operator:test"));
    assert_eq!(
        router.args.clone().unwrap(),
        ["--config", "/etc/kiln/router/router.json"]
    );
}

#[test]
fn weights_change_the_config_but_not_the_serving_templates() {
    let ep = example();
    let variants = served(&ep);
    let a = children(&ep, &variants, &initial_weights(&ep), 1, &settings());
    let mut weights = initial_weights(&ep);
    weights.insert("challenger".into(), 0);
    let b = children(&ep, &variants, &weights, 1, &settings());
    assert_eq!(a.template_hash, b.template_hash);
    assert_ne!(a.router_config_hash, b.router_config_hash);
    // A new model is a new serving template.
    let mut other = served(&ep);
    other[0].model.model_uri = "s3://models/champion/v2/model.tar.gz".into();
    let c = children(&ep, &other, &initial_weights(&ep), 1, &settings());
    assert_ne!(a.template_hash, c.template_hash);
    // The router's pod template carries no config hash: a weight change
    // never restarts the router.
    assert_eq!(
        serde_json::to_string(&a.router.spec.as_ref().unwrap().template).unwrap(),
        serde_json::to_string(&b.router.spec.as_ref().unwrap().template).unwrap()
    );
}

#[test]
fn long_names_are_shortened_to_a_service_name_with_a_stable_hash() {
    let long = "e".repeat(60);
    let a = child_name(&long, "champion");
    let b = child_name(&long, "challenger");
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b);
    assert_eq!(a, child_name(&long, "champion"), "stable");
    assert!(!a.contains("--"));
    assert_eq!(child_name("iris", "champion"), "iris-champion");
}
