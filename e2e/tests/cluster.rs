//! End-to-end tests of the local cluster itself: pods, logs, exec, Services,
//! DNS, GPU and spot scheduling, spot reclaim and the S3 store.
//!
//! Ignored by default (they need the cluster): `make test-e2e` runs them.

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kiln_e2e::namespace::{pod_node, pod_phase};
use kiln_e2e::{TestNamespace, run, wait_until};
use kube::api::Api;

const TOOLS: &str = "kiln/e2e-tools:v1";
const MINUTE: Duration = Duration::from_secs(60);

fn pool_of<'a>(ns: &'a TestNamespace, node: &str) -> &'a str {
    ns.cluster
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.pool.as_str())
        .unwrap_or("")
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn pod_output_reaches_kubectl_logs_and_exec_works() {
    run("logs-exec", |ns| async move {
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: echo}}
spec:
  containers:
  - name: main
    image: {TOOLS}
    imagePullPolicy: Never
    command: [sh, -c, 'echo "hello from $(hostname), 6*7=$((6*7))"; exec sleep 3600']
"#
        ))
        .await?;
        ns.wait_phase("echo", "Running", 2 * MINUTE).await?;
        let logs = wait_until("the pod's output in its logs", MINUTE, || async {
            let logs = ns.logs("echo").await?;
            Ok(logs.contains("hello from echo, 6*7=42").then_some(logs))
        })
        .await?;
        ensure!(
            logs.trim() == "hello from echo, 6*7=42",
            "unexpected logs: {logs:?}"
        );
        // kubectl logs goes apiserver -> kubelet, as kubectl exec does.
        let kubectl_logs = ns.kubectl(&["logs", "echo"])?;
        ensure!(
            kubectl_logs.contains("hello from echo"),
            "kubectl logs: {kubectl_logs:?}"
        );
        let out = ns.kubectl(&[
            "exec",
            "echo",
            "--",
            "sh",
            "-c",
            "echo exec in $(hostname) $((40+2))",
        ])?;
        ensure!(
            out.trim() == "exec in echo 42",
            "kubectl exec printed {out:?}"
        );
        let failed = ns
            .cluster
            .kubectl_output(&["-n", &ns.name, "exec", "echo", "--", "sh", "-c", "exit 3"])?;
        ensure!(
            failed.status.code() == Some(3),
            "exec's exit status did not come back: {:?}",
            failed.status
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn deployment_answers_through_service_and_dns_from_another_node() {
    run("service-dns", |ns| async move {
        let ondemand = ns.cluster.pool("ondemand");
        ensure!(ondemand.len() >= 2, "the config needs two on-demand nodes for this test");
        let (server_node, client_node) = (&ondemand[0].name, &ondemand[1].name);
        ns.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {server_node}}}
      containers:
      - name: web
        image: {TOOLS}
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && echo "served by $(hostname)" > /www/index.html && exec busybox httpd -f -p 8080 -h /www']
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /index.html, port: 8080}}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
        ))
        .await?;
        let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
        wait_until("deployment web to be available", 2 * MINUTE, || async {
            let d = deployments.get("web").await?;
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok((ready == 1).then_some(()))
        })
        .await?;
        let service: Service = Api::namespaced(ns.client.clone(), &ns.name).get("web").await?;
        let cluster_ip = service.spec.and_then(|s| s.cluster_ip).context("Service has no clusterIP")?;
        let fqdn = format!("web.{}.svc.cluster.local", ns.name);
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: {client_node}}}
  containers:
  - name: curl
    image: {TOOLS}
    imagePullPolicy: Never
    command: [sh, -c, 'set -e; echo "ip: $(curl -fsS --max-time 5 --retry 10 --retry-all-errors http://{cluster_ip}/index.html)"; echo "dns: $(curl -fsS --max-time 5 --retry 10 --retry-all-errors http://{fqdn}/index.html)"; echo "short: $(curl -fsS --max-time 5 --retry 10 --retry-all-errors http://web/index.html)"']
"#
        ))
        .await?;
        let pod = ns.wait_phase("client", "Succeeded", 2 * MINUTE).await?;
        ensure!(pod_node(&pod) == *client_node, "client ran on {}", pod_node(&pod));
        let web = ns.pods().list(&Default::default()).await?;
        let web_pod = web.items.iter().find(|p| p.metadata.name.as_deref().unwrap_or("").starts_with("web-"));
        let web_pod = web_pod.context("no web pod")?;
        ensure!(pod_node(web_pod) == *server_node, "web ran on {}", pod_node(web_pod));
        let web_name = web_pod.metadata.name.clone().unwrap_or_default();
        let logs = ns.logs("client").await?;
        for prefix in ["ip", "dns", "short"] {
            let want = format!("{prefix}: served by {web_name}");
            ensure!(logs.contains(&want), "missing {want:?} in client output {logs:?}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn statefulset_pods_resolve_each_other_through_headless_service() {
    run("headless-dns", |ns| async move {
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: peers}}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {{app: peers}}
  ports: [{{port: 7000, name: peer}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: peers
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: peers}}}}
  template:
    metadata: {{labels: {{app: peers}}}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector: {{matchLabels: {{app: peers}}}}
              topologyKey: kubernetes.io/hostname
      containers:
      - name: main
        image: {TOOLS}
        imagePullPolicy: Never
        command: [sleep, "3600"]
"#
        ))
        .await?;
        let mut ips = Vec::new();
        for pod in ["db-0", "db-1"] {
            let p = ns.wait_phase(pod, "Running", 2 * MINUTE).await?;
            ips.push(p.status.and_then(|s| s.pod_ip).context("no pod IP")?);
        }
        for (from, to, to_ip) in [("db-0", "db-1", &ips[1]), ("db-1", "db-0", &ips[0])] {
            for name in [
                format!("{to}.peers"),
                format!("{to}.peers.{}.svc.cluster.local", ns.name),
            ] {
                let out = wait_until(&format!("{from} to resolve {name}"), MINUTE, || {
                    let name = name.clone();
                    let ns = &ns;
                    async move {
                        let out = ns.kubectl(&["exec", from, "--", "getent", "hosts", &name])?;
                        Ok((!out.trim().is_empty()).then_some(out))
                    }
                })
                .await?;
                let resolved = out.split_whitespace().next().unwrap_or("");
                ensure!(
                    resolved == to_ip,
                    "{from} resolved {name} to {resolved}, the pod's IP is {to_ip}"
                );
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn gpu_pod_lands_on_gpu_node_with_device_environment() {
    run("gpu", |ns| async move {
        let gpu_nodes = ns.cluster.pool("gpu");
        ensure!(!gpu_nodes.is_empty(), "the config has no gpu pool");
        let nodes: Api<Node> = Api::all(ns.client.clone());
        for n in &gpu_nodes {
            let want = n.gpus.to_string();
            wait_until(
                &format!("{} to advertise {want} nvidia.com/gpu", n.name),
                MINUTE,
                || async {
                    let node = nodes.get(&n.name).await?;
                    let cap = node.status.and_then(|s| s.allocatable).unwrap_or_default();
                    Ok(
                        (cap.get("nvidia.com/gpu").map(|q| q.0.as_str()) == Some(want.as_str()))
                            .then_some(()),
                    )
                },
            )
            .await?;
        }
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: cuda}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {TOOLS}
    imagePullPolicy: Never
    command: [sh, -c, 'echo "devices=$NVIDIA_VISIBLE_DEVICES"']
    resources:
      limits: {{nvidia.com/gpu: 1}}
"#
        ))
        .await?;
        let pod = ns.wait_phase("cuda", "Succeeded", 2 * MINUTE).await?;
        let node = pod_node(&pod);
        ensure!(
            pool_of(&ns, &node) == "gpu",
            "the GPU pod ran on {node}, not in the gpu pool"
        );
        let logs = ns.logs("cuda").await?;
        ensure!(
            logs.trim()
                .starts_with(&format!("devices=GPU-fake-{node}-")),
            "the pod did not get a device: {logs:?}"
        );
        // A pod asking for more GPUs than any node has stays Pending.
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: too-many}}
spec:
  containers:
  - name: main
    image: {TOOLS}
    imagePullPolicy: Never
    command: [sleep, "60"]
    resources:
      limits: {{nvidia.com/gpu: 64}}
"#
        ))
        .await?;
        ns.wait_pod("too-many", "to be unschedulable", MINUTE, unschedulable)
            .await?;
        Ok(())
    })
    .await;
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

const SPOT_TOLERATION: &str =
    "{key: cloud.google.com/gke-spot, operator: Equal, value: \"true\", effect: NoSchedule}";

fn spot_pod(name: &str, tolerate: bool, require_spot: bool) -> String {
    let tolerations = if tolerate {
        format!("tolerations: [{SPOT_TOLERATION}]")
    } else {
        String::new()
    };
    let affinity = if require_spot {
        "affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}"
    } else {
        ""
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  {tolerations}
  {affinity}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {TOOLS}
    imagePullPolicy: Never
    command: [sleep, "3600"]
"#
    )
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn spot_pods_need_the_toleration() {
    let _spot = kiln_e2e::cluster::SPOT_POOL.lock().await;
    run("spot-scheduling", |ns| async move {
        ensure!(
            !ns.cluster.pool("spot").is_empty(),
            "the config has no spot pool"
        );
        ns.apply(&spot_pod("tolerates", true, true)).await?;
        let pod = ns.wait_phase("tolerates", "Running", 2 * MINUTE).await?;
        let node = pod_node(&pod);
        ensure!(pool_of(&ns, &node) == "spot", "the spot pod ran on {node}");

        ns.apply(&spot_pod("no-toleration", false, true)).await?;
        ns.wait_pod(
            "no-toleration",
            "to be unschedulable",
            MINUTE,
            unschedulable,
        )
        .await?;

        // Pods without the toleration spread over the cluster but never land
        // in the spot pool.
        ns.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread}}
spec:
  replicas: 6
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector: {{matchLabels: {{app: spread}}}}
      containers:
      - name: main
        image: {TOOLS}
        imagePullPolicy: Never
        command: [sleep, "3600"]
"#
        ))
        .await?;
        let pods = ns.pods();
        let placed = wait_until("the 6 spread pods to be scheduled", 2 * MINUTE, || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels("app=spread"))
                .await?;
            let nodes: Vec<String> = list
                .items
                .iter()
                .map(pod_node)
                .filter(|n| !n.is_empty())
                .collect();
            Ok((nodes.len() == 6).then_some(nodes))
        })
        .await?;
        for node in placed {
            ensure!(
                pool_of(&ns, &node) != "spot",
                "a pod without the toleration landed on spot node {node}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn spot_reclaim_ends_the_pods_on_the_node() {
    let _spot = kiln_e2e::cluster::SPOT_POOL.lock().await;
    run("spot-reclaim", |ns| async move {
        ns.apply(&spot_pod("victim", true, true)).await?;
        let pod = ns.wait_phase("victim", "Running", 2 * MINUTE).await?;
        let node = pod_node(&pod);
        ensure!(pool_of(&ns, &node) == "spot", "the spot pod ran on {node}");
        let uid = pod.metadata.uid.clone();
        let reclaimed = ns.cluster.reclaim(&node)?;
        let pods = ns.pods();
        let gone = wait_until("the reclaimed node's pod to go", 3 * MINUTE, || async {
            let p = pods.get_opt("victim").await?;
            Ok(match p {
                None => Some(()),
                Some(p) if p.metadata.uid != uid => Some(()),
                Some(p) if pod_phase(&p) == "Failed" => Some(()),
                Some(_) => None,
            })
        })
        .await;
        // Bring the node back whatever happened, so later tests have it.
        let restored = reclaimed.restore();
        gone?;
        restored.context("bringing the reclaimed node back")?;
        let nodes: Api<Node> = Api::all(ns.client.clone());
        wait_until(&format!("{node} to be back"), 3 * MINUTE, || async {
            let n = nodes.get_opt(&node).await?;
            let ready = n
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Ok(ready.then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn pod_writes_and_reads_an_object_in_s3() {
    run("s3", |ns| async move {
        // The cluster publishes the store's credentials in `default`; a job's
        // namespace gets its own copy, as a user would make it.
        let s3 = kiln_e2e::s3::s3_secret(&ns).await?;
        let key = format!("e2e/{}/hello.txt", ns.name);
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: s3}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {TOOLS}
    imagePullPolicy: Never
    envFrom: [{{secretRef: {{name: kiln-s3}}}}]
    command:
    - sh
    - -c
    - |
      set -eu
      auth="--aws-sigv4 aws:amz:$AWS_REGION:s3 --user $AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
      url="$AWS_ENDPOINT_URL/$S3_BUCKET/{key}"
      echo "written by $(hostname)" > /tmp/object
      curl -fsS $auth -T /tmp/object "$url"
      echo "read back: $(curl -fsS $auth "$url")"
"#
        ))
        .await?;
        ns.wait_phase("s3", "Succeeded", 2 * MINUTE).await?;
        let logs = ns.logs("s3").await?;
        ensure!(
            logs.contains("read back: written by s3"),
            "pod output: {logs:?}"
        );
        // The object is in the store, seen from outside the cluster too.
        let body = String::from_utf8(s3.get(&key)?)?;
        ensure!(
            body.trim() == "written by s3",
            "reading the object from the host gave {body:?}"
        );
        Ok(())
    })
    .await;
}
