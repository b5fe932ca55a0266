//! Scale tests on kwok's fake nodes (kwok.enabled in e2e/cluster.yaml, or
//! KILN_KWOK=1): the scheduler places GPU pods on hundreds of fake GPU nodes,
//! which kwok reports Running without running anything.
//!
//! Ignored by default; `make test-e2e-scale` runs them with kwok switched on.

use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::core::v1::Node;
use kiln_e2e::namespace::{pod_node, pod_phase};
use kiln_e2e::{run, wait_until};
use kube::api::{Api, ListParams};

#[tokio::test]
#[ignore = "needs the local cluster with kwok nodes: make test-e2e-scale"]
async fn gpu_pods_fill_kwok_nodes() {
    run("kwok-scale", |ns| async move {
        let nodes: Api<Node> = Api::all(ns.client.clone());
        let fake = wait_until(
            "kwok nodes to be Ready",
            Duration::from_secs(180),
            || async {
                let list = nodes
                    .list(&ListParams::default().labels("type=kwok"))
                    .await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                Ok((!list.items.is_empty() && ready == list.items.len()).then_some(ready))
            },
        )
        .await?;
        // Two 4-GPU pods per fake node (8 GPUs each), up to 200 pods.
        let pods = (fake * 2).min(200);
        let started = Instant::now();
        ns.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: gpu-fleet}}
spec:
  replicas: {pods}
  selector: {{matchLabels: {{app: gpu-fleet}}}}
  template:
    metadata: {{labels: {{app: gpu-fleet}}}}
    spec:
      nodeSelector: {{type: kwok}}
      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
      containers:
      - name: main
        image: kiln/e2e-tools:v1
        resources:
          limits: {{nvidia.com/gpu: 4}}
"#
        ))
        .await?;
        let api = ns.pods();
        wait_until(
            &format!("{pods} GPU pods Running on kwok nodes"),
            Duration::from_secs(300),
            || async {
                let list = api
                    .list(&ListParams::default().labels("app=gpu-fleet"))
                    .await?;
                let running = list
                    .items
                    .iter()
                    .filter(|p| pod_phase(p) == "Running")
                    .count();
                Ok((running == pods).then_some(()))
            },
        )
        .await?;
        let list = api
            .list(&ListParams::default().labels("app=gpu-fleet"))
            .await?;
        for p in &list.items {
            ensure!(
                pod_node(p).contains("-kwok-"),
                "a fleet pod ran on {}",
                pod_node(p)
            );
        }
        eprintln!(
            "{pods} pods Running on {fake} kwok nodes in {:?}",
            started.elapsed()
        );
        Ok(())
    })
    .await;
}
