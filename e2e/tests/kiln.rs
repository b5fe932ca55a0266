//! End-to-end tests of Kiln on the local cluster: its CRDs and their CEL
//! rules, the Helm chart and the operator image, and a bring-your-own-container
//! PyTorch DDP job's building blocks.
//!
//! Ignored by default (they need the cluster): `make test-e2e` runs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kiln_e2e::namespace::pod_node;
use kiln_e2e::s3::s3_secret;
use kiln_e2e::{TestNamespace, run, wait_until};
use kube::api::{Api, ListParams};

const MINUTE: Duration = Duration::from_secs(60);
const PYTORCH: &str = "kiln/pytorch:2.11.0";
const E2E_TOOLS: &str = "kiln/e2e-tools:v1";

/// Applies every CRD of crds/ and waits until the API server serves them.
async fn apply_kiln_crds(ns: &TestNamespace) -> Result<Vec<String>> {
    let dir = ns.cluster.repo.join("crds");
    let files = yaml_files(&dir)?;
    ensure!(
        !files.is_empty(),
        "no CRDs in {}: run `make crds`",
        dir.display()
    );
    let mut names = Vec::new();
    for file in &files {
        let yaml = std::fs::read_to_string(file)?;
        for obj in ns
            .apply(&yaml)
            .await
            .with_context(|| format!("applying {}", file.display()))?
        {
            names.push(obj.metadata.name.unwrap_or_default());
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    for name in &names {
        wait_until(&format!("CRD {name} to be Established"), MINUTE, || async {
            let crd = crds.get(name).await?;
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            Ok(established.then_some(()))
        })
        .await?;
    }
    Ok(names)
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn kiln_crds_apply_and_cel_rules_refuse_bad_objects() {
    run("crds-cel", |ns| async move {
        let names = apply_kiln_crds(&ns).await?;
        ensure!(
            names.iter().any(|n| n == "trainingjobs.kiln.dev"),
            "crds/ has no trainingjobs.kiln.dev (found {names:?})"
        );
        // maxWaitSeconds without spot breaks a CEL rule of the TrainingJob spec.
        let message = ns
            .apply_refused(
                r#"
apiVersion: kiln.dev/v1alpha1
kind: TrainingJob
metadata: {name: wait-without-spot}
spec:
  algorithm: {image: kiln/e2e-tools:v1, command: ["true"]}
  output: {location: {uri: "s3://kiln/e2e/out"}}
  stoppingCondition: {maxRuntimeSeconds: 3600, maxWaitSeconds: 7200}
"#,
            )
            .await?;
        ensure!(
            message.contains("stoppingCondition.maxWaitSeconds applies to spot training only"),
            "the refusal does not carry the rule's message: {message}"
        );
        // The same object with spot on passes every rule (checked with a
        // server-side dry run, so no job is created).
        ns.apply_dry_run(
            r#"
apiVersion: kiln.dev/v1alpha1
kind: TrainingJob
metadata: {name: wait-with-spot}
spec:
  algorithm: {image: kiln/e2e-tools:v1, command: ["true"]}
  output: {location: {uri: "s3://kiln/e2e/out"}}
  capacityType: Spot
  stoppingCondition: {maxRuntimeSeconds: 3600, maxWaitSeconds: 7200}
"#,
        )
        .await
        .context("a valid TrainingJob was refused")?;
        Ok(())
    })
    .await;
}

/// The first `# expect: ...` line of a manifest: what kubectl's refusal must say.
fn expected_refusal(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .map(str::trim)
}

/// The YAML files of a folder of the repository, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Manifests the way users apply them: kubectl (a YAML 1.1 reader) against
/// the API server, with a server-side dry run so nothing is created. Every
/// example and every manifest of e2e/manifests/accepted must pass; every
/// manifest of e2e/manifests/refused must be refused with the message its
/// `# expect:` line names.
#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn manifests_apply_or_are_refused_with_their_message() {
    run("manifests", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let repo = &ns.cluster.repo;
        let scratch = std::env::temp_dir().join(format!("kiln-e2e-{}", ns.name));
        std::fs::create_dir_all(&scratch)?;
        let dry_run = |file: &Path| {
            ns.cluster.kubectl_output(&[
                "create",
                "--dry-run=server",
                "-n",
                &ns.name,
                "-f",
                file.to_str().unwrap(),
            ])
        };
        let mut problems = Vec::new();
        let mut good = yaml_files(&repo.join("operator/api/examples"))?;
        good.extend(yaml_files(&repo.join("e2e/manifests/accepted"))?);
        for file in &good {
            // The examples name the namespace `ml`; here each runs in the
            // test's own namespace. Nothing else of the text changes.
            let text = std::fs::read_to_string(file)?.replace("\n  namespace: ml\n", "\n");
            let copy = scratch.join(file.file_name().unwrap());
            std::fs::write(&copy, &text)?;
            let out = dry_run(&copy)?;
            if !out.status.success() {
                problems.push(format!(
                    "{} was refused: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let refused_files = yaml_files(&repo.join("e2e/manifests/refused"))?;
        ensure!(
            refused_files.len() >= 60,
            "e2e/manifests/refused holds {} manifests, fewer than 60",
            refused_files.len()
        );
        for file in &refused_files {
            let text = std::fs::read_to_string(file)?;
            let expect = expected_refusal(&text)
                .with_context(|| format!("{} has no `# expect:` line", file.display()))?;
            let out = dry_run(file)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                problems.push(format!("{} was accepted", file.display()));
            } else if !stderr.contains(expect) {
                problems.push(format!(
                    "{} was refused without {expect:?}: {}",
                    file.display(),
                    stderr.trim()
                ));
            }
        }
        std::fs::remove_dir_all(&scratch).ok();
        ensure!(
            problems.is_empty(),
            "{} of {} manifests went wrong:\n{}",
            problems.len(),
            good.len() + refused_files.len(),
            problems.join("\n")
        );
        Ok(())
    })
    .await;
}

/// Each case of `e2e/manifests/updates/` is an object as created
/// (`old.yaml`, optionally with a `# status:` line patched onto its status)
/// and the same object as a user then applies it (`new.yaml`, with an
/// `# expect:` line for a refusal or `# accept`). The update goes through
/// `kubectl apply --server-side --dry-run=server`, so the API server runs the
/// transition rules against the stored object and nothing changes.
#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn updates_keep_what_must_not_change() {
    run("updates", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let dir = ns.cluster.repo.join("e2e/manifests/updates");
        let mut cases: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        ensure!(
            cases.len() >= 10,
            "{} holds only {} cases",
            dir.display(),
            cases.len()
        );
        let kubectl = |args: &[&str]| ns.cluster.kubectl_output(args);
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let mut problems = Vec::new();
        for case in &cases {
            let (old, new) = (case.join("old.yaml"), case.join("new.yaml"));
            let created = kubectl(&["create", "-n", &ns.name, "-f", &path(&old)])?;
            ensure!(
                created.status.success(),
                "{}: creating it failed: {}",
                old.display(),
                String::from_utf8_lossy(&created.stderr).trim()
            );
            let old_text = std::fs::read_to_string(&old)?;
            if let Some(status) = old_text.lines().find_map(|l| l.strip_prefix("# status: ")) {
                let patch = format!("{{\"status\": {status}}}");
                let patched = kubectl(&[
                    "patch",
                    "-n",
                    &ns.name,
                    "-f",
                    &path(&old),
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ])?;
                ensure!(
                    patched.status.success(),
                    "{}: patching its status failed: {}",
                    old.display(),
                    String::from_utf8_lossy(&patched.stderr).trim()
                );
            }
            let new_text = std::fs::read_to_string(&new)?;
            let expect = expected_refusal(&new_text);
            let accept = new_text.lines().any(|l| l.trim() == "# accept");
            ensure!(
                expect.is_some() != accept,
                "{} needs exactly one of an `# expect:` and an `# accept` line",
                new.display()
            );
            let out = kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "--field-manager=kiln-e2e",
                "-n",
                &ns.name,
                "-f",
                &path(&new),
            ])?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            match (expect, out.status.success()) {
                (None, false) => {
                    problems.push(format!("{} was refused: {}", case.display(), stderr.trim()))
                }
                (Some(_), true) => problems.push(format!("{} was accepted", case.display())),
                (Some(e), false) if !stderr.contains(e) => problems.push(format!(
                    "{} was refused without {e:?}: {}",
                    case.display(),
                    stderr.trim()
                )),
                _ => {}
            }
        }
        ensure!(
            problems.is_empty(),
            "{} of {} updates went wrong:\n{}",
            problems.len(),
            cases.len(),
            problems.join("\n")
        );
        Ok(())
    })
    .await;
}

fn helm(repo: &Path) -> Result<String> {
    let out = Command::new(repo.join("e2e/tools/helm.sh")).output()?;
    ensure!(out.status.success(), "building helm failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The chart's sample admission policies, installed on the real API server,
/// refuse and allow what they should for impersonated users
/// (`charts/tests/admission_policies_e2e.sh`: server-side dry runs, in
/// namespaces of its own that only its bindings select).
#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn admission_policies_refuse_what_they_should() {
    run("admission", |ns| async move {
        // The CRDs exist before the script looks, so it never deletes them
        // under the tests running beside it.
        apply_kiln_crds(&ns).await?;
        let repo = &ns.cluster.repo;
        let out = Command::new(repo.join("charts/tests/admission_policies_e2e.sh"))
            .env("KUBECONFIG", &ns.cluster.kubeconfig)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "the admission policy cases failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            stdout.contains(" 0 failed")
                && stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 20,
            "fewer cases than expected ran:\n{stdout}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: make test-e2e"]
async fn helm_install_runs_the_operator_which_holds_the_lease() {
    run("helm", |ns| async move {
        let repo = &ns.cluster.repo;
        let chart = repo.join("charts/kiln");
        ensure!(
            chart.join("Chart.yaml").is_file(),
            "no chart at {}",
            chart.display()
        );
        let release = ns.name.clone();
        let out = Command::new(helm(repo)?)
            .args(["upgrade", "--install", &release])
            .arg(&chart)
            .args(["--namespace", &ns.name, "--kubeconfig"])
            .arg(&ns.cluster.kubeconfig)
            .args(["--set", "image.tag=dev", "--set", "image.pullPolicy=Never"])
            .args([
                "--set",
                &format!("operator.watchNamespace={}", ns.name),
                "--wait",
                "--timeout",
                "4m",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "helm install failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pods = ns.pods().list(&ListParams::default()).await?;
        let names: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        ensure!(!names.is_empty(), "helm installed no pods");
        for pod in &names {
            ns.wait_ready(pod, 2 * MINUTE).await?;
        }
        let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
        let holder = wait_until(
            "the operator to hold the kiln-operator Lease",
            2 * MINUTE,
            || async {
                let lease = leases.get_opt("kiln-operator").await?;
                Ok(lease
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .filter(|h| !h.is_empty()))
            },
        )
        .await?;
        ensure!(
            names.iter().any(|n| holder.contains(n.as_str())),
            "the Lease holder {holder:?} is none of the operator pods {names:?}"
        );
        // Installing the chart must not leave the release half-done on a
        // re-run: uninstall is part of the round trip.
        let out = Command::new(helm(repo)?)
            .args([
                "uninstall",
                &release,
                "--namespace",
                &ns.name,
                "--kubeconfig",
            ])
            .arg(&ns.cluster.kubeconfig)
            .output()?;
        ensure!(
            out.status.success(),
            "helm uninstall failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster and the PyTorch image: make test-e2e"]
async fn pytorch_ddp_two_ranks_all_reduce_over_headless_service() {
    run("ddp", |ns| async move {
        let pool = std::env::var("KILN_TORCH_POOL").unwrap_or_else(|_| "ondemand".into());
        ensure!(
            ns.cluster.pool(&pool).len() >= 2,
            "the {pool} pool needs two nodes for this test"
        );
        let master = format!("rank-0.ddp.{}.svc.cluster.local", ns.name);
        let mut yaml = String::from(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ddp}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: ddp}
  ports: [{name: rendezvous, port: 29500}]
"#,
        );
        for rank in 0..2 {
            yaml.push_str(&format!(
                r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: rank-{rank}
  labels: {{app: ddp}}
spec:
  hostname: rank-{rank}
  subdomain: ddp
  restartPolicy: Never
  nodeSelector: {{kiln.dev/pool: {pool}}}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {{matchLabels: {{app: ddp}}}}
        topologyKey: kubernetes.io/hostname
  containers:
  - name: torch
    image: {PYTORCH}
    imagePullPolicy: Never
    command: [python3, /opt/kiln/ddp_allreduce.py]
    env:
    - {{name: RANK, value: "{rank}"}}
    - {{name: WORLD_SIZE, value: "2"}}
    - {{name: MASTER_ADDR, value: "{master}"}}
    - {{name: MASTER_PORT, value: "29500"}}
    - {{name: OMP_NUM_THREADS, value: "1"}}
    resources:
      requests: {{cpu: 100m, memory: 256Mi}}
"#
            ));
        }
        ns.apply(&yaml).await?;
        let mut nodes = Vec::new();
        for rank in 0..2 {
            let pod = ns
                .wait_phase(&format!("rank-{rank}"), "Succeeded", 5 * MINUTE)
                .await?;
            nodes.push(pod_node(&pod));
        }
        ensure!(nodes[0] != nodes[1], "both ranks ran on {}", nodes[0]);
        for rank in 0..2 {
            let logs = ns.logs(&format!("rank-{rank}")).await?;
            ensure!(
                logs.contains(&format!("rank {rank}: all_reduce sum 3 (expected 3)")),
                "rank {rank} did not all-reduce: {logs}"
            );
        }
        Ok(())
    })
    .await;
}

/// Installs the chart into the test's namespace, watching only it, with the
/// images `make test-images` built and loaded into the nodes.
fn install_operator(ns: &TestNamespace) -> Result<()> {
    let repo = &ns.cluster.repo;
    let out = Command::new(helm(repo)?)
        .args(["upgrade", "--install", &ns.name])
        .arg(repo.join("charts/kiln"))
        .args(["--namespace", &ns.name, "--kubeconfig"])
        .arg(&ns.cluster.kubeconfig)
        .args(["--set", "image.tag=dev", "--set", "image.pullPolicy=Never"])
        .args(["--set", "operator.runtimeImage=kiln/runtime:dev"])
        .args(["--set", "operator.routerReplicas=1"])
        .args(["--set", &format!("operator.watchNamespace={}", ns.name)])
        .args(["--wait", "--timeout", "4m"])
        .output()?;
    ensure!(
        out.status.success(),
        "helm install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A TrainingJob's status as JSON, read through kubectl.
fn job_status(ns: &TestNamespace, name: &str) -> Result<serde_json::Value> {
    let text = ns.kubectl(&["get", "trainingjob", name, "-o", "json"])?;
    let job: serde_json::Value = serde_json::from_str(&text)?;
    Ok(job["status"].clone())
}

/// The status of the job's `Succeeded` condition once it is True or False.
async fn wait_finished(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    wait_until(
        &format!("TrainingJob {name} to finish"),
        timeout,
        || async {
            let status = job_status(ns, name)?;
            let done = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Succeeded" && c["status"] != "Unknown");
            Ok(done.then_some(status))
        },
    )
    .await
}

fn succeeded_condition(status: &serde_json::Value) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Succeeded")
        .cloned()
        .unwrap_or_default()
}

fn linear_learner_job(name: &str, bucket: &str, prefix: &str, replicas: i32) -> String {
    let distribution = if replicas > 1 { "DataParallel" } else { "None" };
    format!(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: {{name: linear-learner}}
  hyperparameters:
    predictor_type: multiclass_classifier
    num_classes: "3"
    epochs: "20"
    mini_batch_size: "16"
  inputs:
    - name: train
      source: {{uri: "s3://{bucket}/{prefix}/train/", secretRef: {{name: kiln-s3}}}}
      contentType: text/csv
    - name: validation
      source: {{uri: "s3://{bucket}/{prefix}/validation/", secretRef: {{name: kiln-s3}}}}
      contentType: text/csv
  output:
    location: {{uri: "s3://{bucket}/{prefix}/out/", secretRef: {{name: kiln-s3}}}}
  resources:
    replicas: {replicas}
    compute: {{cpu: 250m, memory: 512Mi}}
  distribution: {{strategy: {distribution}}}
  stoppingCondition: {{maxRuntimeSeconds: 600}}
"#
    )
}

/// `kubectl apply` of a TrainingJob trains: two data-parallel ranks fetch
/// iris from the S3 store, train the built-in linear learner, and rank 0
/// uploads model.tar.gz to the output location, whose URI lands in status.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn training_job_trains_from_s3_and_uploads_its_model() {
    run("train", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let data = ns.cluster.repo.join("e2e/manifests/data/iris");
        let prefix = format!("e2e/{}/iris", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &data.join("train.csv"))?;
        s3.put(
            &format!("{prefix}/validation/data.csv"),
            &data.join("validation.csv"),
        )?;
        install_operator(&ns)?;
        ns.apply(&linear_learner_job("iris", &s3.bucket, &prefix, 2))
            .await?;
        let status = wait_finished(&ns, "iris", 5 * MINUTE).await?;
        let succeeded = succeeded_condition(&status);
        ensure!(
            succeeded["status"] == "True",
            "the job did not succeed: {status:#}"
        );
        ensure!(status["state"] == "Completed", "state: {status:#}");
        let uri = status["modelArtifactUri"].as_str().unwrap_or_default();
        let key = format!("{prefix}/out/{}/iris/output/model.tar.gz", ns.name);
        ensure!(
            uri == format!("s3://{}/{key}", s3.bucket),
            "modelArtifactUri {uri:?}, expected the object {key}"
        );
        let artifact = s3.get(&key)?;
        ensure!(
            artifact.len() > 100 && artifact.starts_with(&[0x1f, 0x8b]),
            "the artifact is no gzip archive ({} bytes)",
            artifact.len()
        );
        // The built-in's final metrics, carried by rank 0's upload report.
        let accuracy = status["finalMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "validation:accuracy")
            .and_then(|m| m["value"].as_f64());
        ensure!(
            accuracy.is_some_and(|a| a > 0.5),
            "no sensible validation:accuracy in finalMetrics: {status:#}"
        );
        let attempts = status["attempts"].as_array().cloned().unwrap_or_default();
        ensure!(
            attempts.len() == 1 && attempts[0]["endReason"] == "Succeeded",
            "attempts: {attempts:#?}"
        );
        // One pod per rank, named by attempt and rank, hosts algo-1 and algo-2.
        for (rank, host) in [(0, "algo-1"), (1, "algo-2")] {
            let pod = ns.pods().get(&format!("iris-a1-{rank}")).await?;
            let spec = pod.spec.unwrap_or_default();
            ensure!(
                spec.hostname.as_deref() == Some(host),
                "rank {rank} host {:?}",
                spec.hostname
            );
        }
        ensure!(
            status["billableSeconds"].as_i64().unwrap_or(0)
                >= status["trainingSeconds"].as_i64().unwrap_or(0),
            "billable seconds below training seconds: {status:#}"
        );
        Ok(())
    })
    .await;
}

/// Bad data ends the job Failed with the runtime's own reason, at once: a
/// built-in's bad-input exit is not retried.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn training_job_on_bad_data_fails_with_the_runtimes_reason() {
    run("train-bad", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let dir = std::env::temp_dir().join(format!("kiln-e2e-{}", ns.name));
        std::fs::create_dir_all(&dir)?;
        let bad = dir.join("bad.csv");
        std::fs::write(
            &bad,
            "0,5.1,3.5,1.4,0.2\n1,7.0,3.2,4.7\n2,6.3,3.3,6.0,2.5\n",
        )?;
        let prefix = format!("e2e/{}/bad", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &bad)?;
        s3.put(&format!("{prefix}/validation/data.csv"), &bad)?;
        std::fs::remove_dir_all(&dir).ok();
        install_operator(&ns)?;
        let job = linear_learner_job("bad", &s3.bucket, &prefix, 1).replace(
            "  stoppingCondition:",
            "  retryStrategy: {maxAttempts: 3}\n  stoppingCondition:",
        );
        ns.apply(&job).await?;
        let status = wait_finished(&ns, "bad", 5 * MINUTE).await?;
        let succeeded = succeeded_condition(&status);
        let message = succeeded["message"].as_str().unwrap_or_default();
        ensure!(
            succeeded["status"] == "False",
            "the job did not fail: {status:#}"
        );
        ensure!(
            message.contains("channel train") && message.contains("exited 2"),
            "the failure does not carry the runtime's reason: {message:?}"
        );
        ensure!(status["state"] == "Failed", "state: {status:#}");
        let attempts = status["attempts"].as_array().map_or(0, Vec::len);
        ensure!(attempts == 1, "bad input was retried: {attempts} attempts");
        Ok(())
    })
    .await;
}

/// One request through the API server's proxy to a Service of the test's
/// namespace: (status, the invoked-variant header, body).
async fn via_service(
    ns: &TestNamespace,
    service: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String)> {
    let uri = format!(
        "/api/v1/namespaces/{}/services/http:{service}:8080/proxy{path}",
        ns.name
    );
    let mut request = http::Request::post(uri).header("content-type", "text/csv");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(body.as_bytes().to_vec())?;
    let response = ns
        .client
        .send(request.map(kube::client::Body::from))
        .await?;
    let status = response.status().as_u16();
    let variant = response
        .headers()
        .get("x-amzn-invoked-production-variant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((
        status,
        variant,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// An Endpoint's status as JSON, read through kubectl.
fn endpoint_status(ns: &TestNamespace, name: &str) -> Result<serde_json::Value> {
    let text = ns.kubectl(&["get", "endpoints.kiln.dev", name, "-o", "json"])?;
    let ep: serde_json::Value = serde_json::from_str(&text)?;
    Ok(ep["status"].clone())
}

/// Train, deploy, predict: an Endpoint applied beside the TrainingJob that
/// makes its model waits for the job, then serves it from two production
/// variants (9:1) and a shadow behind the router. The split lands within 5
/// points of 90/10 over 2000 requests, the target-variant header pins a
/// variant, the shadow answers are captured to the S3 store and never
/// returned, and a weight change reaches the router without a restart.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn endpoint_serves_a_trained_model_through_the_router() {
    run("endpoint", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let data = ns.cluster.repo.join("e2e/manifests/data/iris");
        let prefix = format!("e2e/{}/iris", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &data.join("train.csv"))?;
        s3.put(
            &format!("{prefix}/validation/data.csv"),
            &data.join("validation.csv"),
        )?;
        install_operator(&ns)?;
        let artifact = format!(
            "s3://{}/{prefix}/out/{}/iris/output/model.tar.gz",
            s3.bucket, ns.name
        );
        let endpoint = |main: i32, second: i32| {
            format!(
                r#"
apiVersion: kiln.dev/v1alpha1
kind: Endpoint
metadata: {{name: iris}}
spec:
  variants:
    - name: main
      model: {{trainingJob: iris}}
      initialWeight: {main}
      resources: {{cpu: 100m, memory: 256Mi}}
    - name: second
      model:
        modelData: {{uri: "{artifact}", secretRef: {{name: kiln-s3}}}}
        algorithm: linear-learner
      initialWeight: {second}
      resources: {{cpu: 100m, memory: 256Mi}}
  shadowVariants:
    - name: shadow
      model: {{trainingJob: iris}}
      samplingPercent: 100
      resources: {{cpu: 100m, memory: 256Mi}}
  dataCapture:
    samplingPercent: 100
    destination: {{uri: "s3://{}/{prefix}/capture", secretRef: {{name: kiln-s3}}}}
  requestTimeoutSeconds: 30
"#,
                s3.bucket
            )
        };
        // The Endpoint first: it waits for the job's model.
        ns.apply(&endpoint(9, 1)).await?;
        let waiting = wait_until(
            "the Endpoint to wait for its TrainingJob",
            MINUTE,
            || async {
                let status = endpoint_status(&ns, "iris")?;
                let resolved = status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "ReferencesResolved")
                    .cloned();
                Ok(resolved.filter(|c| c["status"] == "False"))
            },
        )
        .await?;
        ensure!(
            waiting["message"]
                .as_str()
                .is_some_and(|m| m.contains("TrainingJob iris")),
            "the Endpoint does not say what it waits for: {waiting:#}"
        );
        ns.apply(&linear_learner_job("iris", &s3.bucket, &prefix, 1))
            .await?;
        let status = wait_finished(&ns, "iris", 5 * MINUTE).await?;
        ensure!(status["state"] == "Completed", "the job failed: {status:#}");

        let status = wait_until("the Endpoint to be Ready", 5 * MINUTE, || async {
            let status = endpoint_status(&ns, "iris")?;
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            Ok((ready && status["state"] == "InService").then_some(status))
        })
        .await?;
        let variants = status["variants"].as_array().cloned().unwrap_or_default();
        ensure!(variants.len() == 3, "variants in status: {status:#}");
        for v in &variants {
            ensure!(
                v["modelUri"] == artifact.as_str() && v["readyReplicas"] == 1,
                "variant status: {v:#}"
            );
        }
        ensure!(
            status["url"] == format!("http://iris.{}.svc.cluster.local:8080", ns.name),
            "url: {status:#}"
        );

        // Predictions through the router, eight callers at a time.
        let rows = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n";
        let (code, variant, body) = via_service(&ns, "iris", "/invocations", &[], rows).await?;
        ensure!(code == 200, "prediction answered {code}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("the prediction is no JSON: {body}"))?;
        ensure!(
            answer["predictions"].as_array().map(Vec::len) == Some(2),
            "two rows, not two predictions: {body}"
        );
        ensure!(
            variant == "main" || variant == "second",
            "invoked {variant:?}"
        );
        let counts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
            String,
            usize,
        >::new()));
        let total = 2000;
        let callers = (0..8).map(|_| {
            let (ns, counts) = (&ns, counts.clone());
            async move {
                for _ in 0..total / 8 {
                    let (code, variant, body) =
                        via_service(ns, "iris", "/invocations", &[], "5.1,3.5,1.4,0.2\n").await?;
                    ensure!(code == 200, "a prediction answered {code}: {body}");
                    *counts.lock().unwrap().entry(variant).or_default() += 1;
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        futures::future::try_join_all(callers).await?;
        let counts = counts.lock().unwrap().clone();
        let main = counts.get("main").copied().unwrap_or(0);
        ensure!(
            counts.keys().all(|k| k == "main" || k == "second"),
            "answers came from {counts:?}: a shadow answered"
        );
        let share = main as f64 * 100.0 / total as f64;
        ensure!(
            (85.0..=95.0).contains(&share),
            "main took {share:.1}% of {total} requests, not 90±5 ({counts:?})"
        );
        eprintln!("endpoint: main answered {share:.1}% of {total} requests ({counts:?})");
        for header in ["X-Kiln-Target-Variant", "X-Amzn-SageMaker-Target-Variant"] {
            for _ in 0..10 {
                let (code, variant, _) =
                    via_service(&ns, "iris", "/invocations", &[(header, "second")], rows).await?;
                ensure!(
                    code == 200 && variant == "second",
                    "{header} pinned {variant:?} ({code})"
                );
            }
        }
        let (code, _, body) = via_service(
            &ns,
            "iris",
            "/invocations",
            &[("X-Kiln-Target-Variant", "nope")],
            rows,
        )
        .await?;
        ensure!(
            code == 400 && body.contains("main"),
            "an unknown variant got {code}: {body}"
        );

        // Captured: production and shadow answers, as SageMaker's JSON lines.
        let capture = format!("{prefix}/capture/iris/");
        let keys = wait_until(
            "captured shadow answers in the store",
            2 * MINUTE,
            || async {
                let keys = s3.list(&capture)?;
                let shadow = keys
                    .iter()
                    .any(|k| k.starts_with(&format!("{capture}shadow/")));
                let main = keys
                    .iter()
                    .any(|k| k.starts_with(&format!("{capture}main/")));
                Ok((shadow && main).then_some(keys))
            },
        )
        .await?;
        let shadow_key = keys
            .iter()
            .find(|k| k.starts_with(&format!("{capture}shadow/")) && k.ends_with(".jsonl"))
            .with_context(|| format!("no shadow capture file among {keys:?}"))?;
        let text = String::from_utf8(s3.get(shadow_key)?)?;
        let record: serde_json::Value =
            serde_json::from_str(text.lines().next().context("an empty capture file")?)?;
        ensure!(
            record["captureData"]["endpointOutput"]["data"]
                .as_str()
                .is_some_and(|d| d.contains("predicted_label"))
                && record["captureData"]["endpointInput"]["data"]
                    .as_str()
                    .is_some_and(|d| d.contains("5.1,3.5")),
            "the shadow's capture record: {record:#}"
        );

        // A weight change is a new router configuration, not a new router.
        let router_pods = |ns: &TestNamespace| {
            let pods = ns.pods();
            async move {
                let list = pods
                    .list(
                        &ListParams::default()
                            .labels("kiln.dev/endpoint=iris,kiln.dev/role=router"),
                    )
                    .await?;
                Ok::<_, anyhow::Error>(
                    list.items
                        .iter()
                        .filter_map(|p| p.metadata.uid.clone())
                        .collect::<Vec<_>>(),
                )
            }
        };
        let before = router_pods(&ns).await?;
        ns.apply(&endpoint(0, 1)).await?;
        wait_until("every answer to come from second", 2 * MINUTE, || async {
            for _ in 0..20 {
                let (code, variant, _) =
                    via_service(&ns, "iris", "/invocations", &[], rows).await?;
                if code != 200 || variant != "second" {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await?;
        ensure!(
            router_pods(&ns).await? == before,
            "the router was replaced for a weight change"
        );
        let revision = endpoint_status(&ns, "iris")?["revision"].as_i64().unwrap_or(0);
        ensure!(revision == 1, "a weight change made revision {revision}");

        // A new serving template rolls out under steady load with no failed
        // request: four callers keep asking until the old replica is gone.
        let old_pods: Vec<String> = ns
            .pods()
            .list(&ListParams::default().labels("kiln.dev/endpoint=iris,kiln.dev/variant=second"))
            .await?
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let failures = std::sync::Mutex::new(Vec::<String>::new());
        let sent = std::sync::atomic::AtomicUsize::new(0);
        let load = (0..4).map(|_| async {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match via_service(&ns, "iris", "/invocations", &[], rows).await {
                    Ok((200, _, _)) => {}
                    Ok((code, _, body)) => failures.lock().unwrap().push(format!("{code}: {body}")),
                    Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok::<_, anyhow::Error>(())
        });
        let rollout = async {
            let changed = endpoint(0, 1).replace(
                "      algorithm: linear-learner\n",
                "      algorithm: linear-learner\n        env: [{name: KILN_E2E_ROLLOUT, value: \"2\"}]\n",
            );
            ensure!(changed.contains("KILN_E2E_ROLLOUT"), "the rollout edit did not apply");
            ns.apply(&changed).await?;
            let result = wait_until("revision 2 to be in service with the old replica gone", 3 * MINUTE, || async {
                let status = endpoint_status(&ns, "iris")?;
                let pods = ns
                    .pods()
                    .list(&ListParams::default().labels("kiln.dev/endpoint=iris,kiln.dev/variant=second"))
                    .await?
                    .items;
                let old_gone = pods
                    .iter()
                    .all(|p| !old_pods.contains(p.metadata.name.as_ref().unwrap()));
                Ok((status["revision"] == 2 && status["state"] == "InService" && old_gone)
                    .then_some(status))
            })
            .await;
            // A little more load after the old replica is gone.
            tokio::time::sleep(Duration::from_secs(2)).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        };
        let (status, _) = futures::future::try_join(rollout, futures::future::try_join_all(load)).await?;
        let failures = failures.into_inner().unwrap();
        let sent = sent.into_inner();
        ensure!(
            failures.is_empty(),
            "{} of {sent} requests failed during the rollout: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        ensure!(sent >= 50, "only {sent} requests ran during the rollout");
        eprintln!("endpoint: rollout of revision 2 under load: {sent} requests, none failed");
        ensure!(status["previousRevision"].is_null() && status["revision"] == 2, "status: {status:#}");
        Ok(())
    })
    .await;
}

/// A ModelPackage (or ModelPackageGroup) as JSON, read through kubectl.
fn kiln_object(ns: &TestNamespace, kind: &str, name: &str) -> Result<serde_json::Value> {
    let text = ns.kubectl(&["get", &format!("{kind}.kiln.dev"), name, "-o", "json"])?;
    Ok(serde_json::from_str(&text)?)
}

/// The condition of this type in a status, or null.
fn condition_of(status: &serde_json::Value, type_: &str) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default()
}

fn model_package(name: &str, group: &str, uri: &str, job: Option<&str>) -> String {
    let source = job
        .map(|j| format!("  source: {{trainingJob: {j}}}\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: ModelPackage
metadata: {{name: {name}}}
spec:
  groupName: {group}
  inference:
    modelData: {{uri: "{uri}", secretRef: {{name: kiln-s3}}}}
    algorithm: linear-learner
  modelMetrics:
    values: [{{name: "validation:accuracy", value: 0.9}}]
{source}"#
    )
}

fn model_package_group(name: &str) -> String {
    format!(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: ModelPackageGroup
metadata: {{name: {name}}}
spec:
  description: iris in the e2e registry
"#
    )
}

/// Waits until ModelPackage NAME's Ready condition has `status` and
/// `reason`; returns the package's status.
async fn wait_package(
    ns: &TestNamespace,
    name: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    wait_until(
        &format!("ModelPackage {name} to be Ready={status} ({reason})"),
        timeout,
        || async {
            let found = kiln_object(ns, "modelpackages", name)?["status"].clone();
            let ready = condition_of(&found, "Ready");
            Ok((ready["status"] == status && ready["reason"] == reason).then_some(found))
        },
    )
    .await
}

/// The SHA-256 of bytes, as `sha256sum` prints it.
fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let file = std::env::temp_dir().join(format!("kiln-e2e-sha-{}", std::process::id()));
    std::fs::write(&file, bytes)?;
    let out = Command::new("sha256sum").arg(&file).output()?;
    std::fs::remove_file(&file).ok();
    ensure!(out.status.success(), "sha256sum failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The model registry on the cluster: a ModelPackage registered from a
/// trained job's artifact waits for its group, is numbered 1 with the
/// artifact's SHA-256 and the job's lineage, is approved with `kubectl
/// patch` (its metrics are fixed from then on) and becomes its group's
/// newest Approved version; ten packages created at once in another group
/// get versions 1 to 10; a package whose artifact is missing says so.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn model_registry_numbers_checks_approves_and_traces_versions() {
    run("registry", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let data = ns.cluster.repo.join("e2e/manifests/data/iris");
        let prefix = format!("e2e/{}/iris", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &data.join("train.csv"))?;
        s3.put(
            &format!("{prefix}/validation/data.csv"),
            &data.join("validation.csv"),
        )?;
        install_operator(&ns)?;
        ns.apply(&linear_learner_job("iris", &s3.bucket, &prefix, 1))
            .await?;
        let job = wait_finished(&ns, "iris", 5 * MINUTE).await?;
        ensure!(job["state"] == "Completed", "the job failed: {job:#}");
        let artifact = job["modelArtifactUri"]
            .as_str()
            .context("no modelArtifactUri")?
            .to_string();
        let key = artifact
            .strip_prefix(&format!("s3://{}/", s3.bucket))
            .with_context(|| format!("{artifact} is not in the test bucket"))?;
        let bytes = s3.get(key)?;
        let digest = format!("sha256:{}", sha256_hex(&bytes)?);

        // Registered before its group exists: it says so, and is numbered
        // once the group is created.
        ns.apply(&model_package("iris-v1", "iris", &artifact, Some("iris")))
            .await?;
        let waiting = wait_package(&ns, "iris-v1", "False", "GroupNotFound", 2 * MINUTE).await?;
        ensure!(
            condition_of(&waiting, "Ready")["message"]
                .as_str()
                .is_some_and(|m| m.contains("ModelPackageGroup iris does not exist")),
            "{waiting:#}"
        );
        ns.apply(&model_package_group("iris")).await?;
        let status = wait_package(&ns, "iris-v1", "True", "Registered", 3 * MINUTE).await?;
        ensure!(status["version"] == 1, "version: {status:#}");
        ensure!(status["state"] == "Completed", "state: {status:#}");
        ensure!(
            status["artifactDigest"] == digest.as_str()
                && status["artifactSizeBytes"] == bytes.len() as u64,
            "the digest of {artifact} is {digest} ({} bytes): {status:#}",
            bytes.len()
        );
        ensure!(
            status["lastArtifactCheck"]["result"] == "Verified",
            "{status:#}"
        );
        let lineage = &status["lineage"];
        ensure!(
            lineage["trainingJob"] == "iris"
                && lineage["hyperparameters"]["epochs"] == "20"
                && lineage["modelArtifactUri"] == artifact.as_str(),
            "lineage: {lineage:#}"
        );
        let inputs: Vec<String> = lineage["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["uri"].as_str().map(str::to_string))
            .collect();
        ensure!(
            inputs.contains(&format!("s3://{}/{prefix}/train/", s3.bucket)),
            "lineage inputs: {inputs:?}"
        );
        ensure!(
            lineage["finalMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == "validation:accuracy"),
            "lineage metrics: {lineage:#}"
        );
        // The check's pod is gone once its result is in status.
        wait_until("the check pod of iris-v1 to go", MINUTE, || async {
            let pods = ns
                .pods()
                .list(&ListParams::default().labels("kiln.dev/model-package=iris-v1"))
                .await?;
            Ok(pods.items.is_empty().then_some(()))
        })
        .await?;

        // Approval is an edit of the spec, as GitOps makes it.
        ns.kubectl(&[
            "patch",
            "modelpackage.kiln.dev",
            "iris-v1",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"approval":{"status":"Approved","approvedBy":"e2e@kiln.dev","description":"accurate enough"}}}"#,
        ])?;
        let approved = wait_until("iris-v1's approval in status", MINUTE, || async {
            let status = kiln_object(&ns, "modelpackages", "iris-v1")?["status"].clone();
            Ok((status["approvalStatus"] == "Approved").then_some(status))
        })
        .await?;
        ensure!(
            approved["approvedBy"] == "e2e@kiln.dev"
                && approved["approvalDescription"] == "accurate enough"
                && approved["lastApprovalChangeTime"].is_string(),
            "{approved:#}"
        );
        let group = wait_until("group iris to serve version 1", MINUTE, || async {
            let status = kiln_object(&ns, "modelpackagegroups", "iris")?["status"].clone();
            Ok((status["latestApproved"]["version"] == 1).then_some(status))
        })
        .await?;
        ensure!(
            group["latestApproved"]["name"] == "iris-v1"
                && condition_of(&group, "Ready")["status"] == "True",
            "group: {group:#}"
        );
        let events = ns.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=iris-v1",
            "-o",
            "json",
        ])?;
        let events: serde_json::Value = serde_json::from_str(&events)?;
        let approval = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["reason"] == "ApprovalChanged")
            .with_context(|| format!("no ApprovalChanged event: {events:#}"))?;
        ensure!(
            approval["message"]
                .as_str()
                .or(approval["note"].as_str())
                .is_some_and(|m| m.contains("Approved by e2e@kiln.dev")),
            "the approval event: {approval:#}"
        );
        // What was approved keeps its metrics.
        let out = ns.cluster.kubectl_output(&[
            "-n",
            &ns.name,
            "patch",
            "modelpackage.kiln.dev",
            "iris-v1",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"modelMetrics":{"values":[{"name":"validation:accuracy","value":1.0}]}}}"#,
        ])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("spec.modelMetrics cannot change while the package is Approved"),
            "changing an Approved package's metrics was not refused as it should be: {stderr}"
        );

        // An artifact that is not there: numbered, not Ready, and why.
        let missing = format!("s3://{}/{prefix}/nothing/model.tar.gz", s3.bucket);
        ns.apply(&model_package("iris-missing", "iris", &missing, None))
            .await?;
        let status =
            wait_package(&ns, "iris-missing", "False", "ArtifactNotFound", 3 * MINUTE).await?;
        let message = condition_of(&status, "Ready")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure!(
            message.contains(&missing) && message.contains("nothing there"),
            "the reason does not name the missing artifact: {status:#}"
        );
        ensure!(
            status["state"] == "Failed" && status["version"] == 2,
            "{status:#}"
        );

        // Ten packages created at once in a group of their own: 1 to 10.
        ns.apply(&model_package_group("burst")).await?;
        let manifests: Vec<String> = (1..=10)
            .map(|i| model_package(&format!("burst-{i}"), "burst", &artifact, None))
            .collect();
        futures::future::try_join_all(manifests.iter().map(|m| ns.apply(m))).await?;
        let versions = wait_until("ten burst versions", 3 * MINUTE, || async {
            let text = ns.kubectl(&[
                "get",
                "modelpackages.kiln.dev",
                "--field-selector",
                "spec.groupName=burst",
                "-o",
                "json",
            ])?;
            let list: serde_json::Value = serde_json::from_str(&text)?;
            let versions: Vec<i64> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["status"]["version"].as_i64())
                .collect();
            Ok((versions.len() == 10).then_some(versions))
        })
        .await?;
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        ensure!(
            sorted == (1..=10).collect::<Vec<i64>>(),
            "ten packages at once got versions {versions:?}"
        );
        for i in 1..=10 {
            wait_package(&ns, &format!("burst-{i}"), "True", "Registered", 5 * MINUTE).await?;
        }
        let burst = kiln_object(&ns, "modelpackagegroups", "burst")?["status"].clone();
        ensure!(
            burst["latestVersion"] == 10 && burst["versionCount"] == 10,
            "group burst: {burst:#}"
        );
        Ok(())
    })
    .await;
}

fn tuning_job(name: &str, bucket: &str, prefix: &str) -> String {
    format!(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: TuningJob
metadata: {{name: {name}}}
spec:
  strategy: {{type: Bayesian, seed: 11}}
  objective: {{metricName: "validation:loss", type: Minimize}}
  parameterRanges:
    continuous:
      - {{name: learning_rate, min: "0.001", max: "1.0", scaling: Logarithmic}}
      - {{name: wd, min: "1e-6", max: "0.01", scaling: Logarithmic}}
  limits: {{maxTrainingJobs: 8, maxParallelTrainingJobs: 2, maxFailedTrainingJobs: 2}}
  trainingJobTemplate:
    metadata: {{labels: {{team: e2e}}}}
    spec:
      algorithm: {{name: linear-learner}}
      hyperparameters:
        predictor_type: multiclass_classifier
        num_classes: "3"
        epochs: "3"
        mini_batch_size: "16"
      inputs:
        - name: train
          source: {{uri: "s3://{bucket}/{prefix}/train/", secretRef: {{name: kiln-s3}}}}
          contentType: text/csv
        - name: validation
          source: {{uri: "s3://{bucket}/{prefix}/validation/", secretRef: {{name: kiln-s3}}}}
          contentType: text/csv
      output:
        location: {{uri: "s3://{bucket}/{prefix}/out/", secretRef: {{name: kiln-s3}}}}
      resources:
        replicas: 1
        compute: {{cpu: 250m, memory: 512Mi}}
      stoppingCondition: {{maxRuntimeSeconds: 600}}
"#
    )
}

/// A TuningJob searches by running trials as TrainingJobs: eight trials of
/// the linear learner on iris, two at a time, over the learning rate and the
/// weight decay; the best trial beats the template's defaults (a TrainingJob
/// of the template alone, run beside it); the operator's pod is deleted
/// mid-search and its successor creates no extra trial; deleting the
/// TuningJob deletes its trials.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn tuning_job_runs_trials_as_training_jobs_and_finds_a_better_model() {
    run("tune", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let data = ns.cluster.repo.join("e2e/manifests/data/iris");
        let prefix = format!("e2e/{}/iris", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &data.join("train.csv"))?;
        s3.put(
            &format!("{prefix}/validation/data.csv"),
            &data.join("validation.csv"),
        )?;
        install_operator(&ns)?;
        ns.apply(&tuning_job("tune", &s3.bucket, &prefix)).await?;
        // The template's defaults, as a TrainingJob of their own.
        let baseline = linear_learner_job("baseline", &s3.bucket, &prefix, 1)
            .replace("epochs: \"20\"", "epochs: \"3\"");
        ns.apply(&baseline).await?;

        let tuning = |ns: &TestNamespace| -> Result<serde_json::Value> {
            Ok(kiln_object(ns, "tuningjob", "tune")?["status"].clone())
        };
        // Mid-search: three trials exist; the operator's pod is deleted.
        wait_until("three trials to be created", 4 * MINUTE, || async {
            let s = tuning(&ns)?;
            Ok((s["nextTrialIndex"].as_i64().unwrap_or(0) >= 4).then_some(()))
        })
        .await?;
        let selector = "app.kubernetes.io/component=operator";
        ns.kubectl(&["delete", "pod", "-l", selector, "--wait=false"])?;
        eprintln!("tune: deleted the operator's pod with 3 or more trials created");

        let status = wait_until("the TuningJob to finish", 12 * MINUTE, || async {
            let s = tuning(&ns)?;
            let done = condition_of(&s, "Succeeded")["status"] != "Unknown"
                && !condition_of(&s, "Succeeded").is_null();
            Ok(done.then_some(s))
        })
        .await?;
        ensure!(
            condition_of(&status, "Succeeded")["status"] == "True"
                && status["state"] == "Completed",
            "the search did not complete: {status:#}"
        );
        ensure!(
            condition_of(&status, "Succeeded")["reason"] == "MaxTrainingJobsReached",
            "{status:#}"
        );
        ensure!(status["nextTrialIndex"] == 9, "nextTrialIndex: {status:#}");
        let counts = &status["trainingJobCounts"];
        ensure!(
            counts["completed"] == 8 && counts["inProgress"] == 0,
            "counts: {counts:#}"
        );
        // Exactly the eight trials, named by index: none created twice.
        let listed = ns.kubectl(&[
            "get",
            "trainingjobs",
            "-l",
            "kiln.dev/tuning-job=tune",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let mut names: Vec<&str> = listed.split_whitespace().collect();
        names.sort();
        let mut expected: Vec<String> = (1..=8).map(|i| format!("tune-{i}")).collect();
        expected.sort();
        ensure!(names == expected, "trials: {names:?}");
        let trials = status["trials"].as_array().cloned().unwrap_or_default();
        ensure!(trials.len() == 8, "records: {trials:#?}");
        for t in &trials {
            ensure!(
                t["state"] == "Completed" && t["objectiveValue"].is_f64(),
                "trial: {t:#}"
            );
            let lr: f64 = t["hyperparameters"]["learning_rate"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .context("no learning_rate")?;
            ensure!((0.001..=1.0).contains(&lr), "learning_rate {lr}");
        }
        // Each trial ran with its own hyperparameters and the template's.
        let trial = kiln_object(&ns, "trainingjob", "tune-1")?;
        let hps = &trial["spec"]["hyperparameters"];
        ensure!(
            hps["epochs"] == "3" && hps["learning_rate"] == trials[0]["hyperparameters"]["learning_rate"],
            "tune-1 hyperparameters: {hps:#}"
        );
        ensure!(trial["metadata"]["labels"]["team"] == "e2e", "{trial:#}");

        let baseline = wait_finished(&ns, "baseline", 5 * MINUTE).await?;
        let default_loss = baseline["finalMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "validation:loss")
            .and_then(|m| m["value"].as_f64())
            .with_context(|| format!("baseline without validation:loss: {baseline:#}"))?;
        let best = &status["bestTrainingJob"];
        let best_loss = best["objectiveValue"].as_f64().context("no best trial")?;
        let losses: Vec<f64> = trials
            .iter()
            .filter_map(|t| t["objectiveValue"].as_f64())
            .collect();
        ensure!(
            losses.iter().all(|l| *l >= best_loss),
            "best {best_loss} is not the lowest of {losses:?}"
        );
        eprintln!(
            "tune: best trial {} loss {best_loss:.4} ({}), template defaults {default_loss:.4}; all: {losses:.4?}",
            best["name"], best["hyperparameters"]
        );
        let uri = best["modelArtifactUri"].as_str().unwrap_or_default();
        ensure!(
            uri.ends_with(&format!("/{}/output/model.tar.gz", best["name"].as_str().unwrap_or("?"))),
            "the best trial's model URI: {best:#}"
        );
        ensure!(
            best_loss < default_loss,
            "the best trial ({best_loss}) is no better than the template's defaults ({default_loss})"
        );

        // Deleting the TuningJob deletes its trials.
        ns.kubectl(&["delete", "tuningjob", "tune", "--wait=true", "--timeout=120s"])?;
        wait_until("the trials to be deleted", 2 * MINUTE, || async {
            let left = ns.kubectl(&[
                "get",
                "trainingjobs",
                "-l",
                "kiln.dev/tuning-job=tune",
                "-o",
                "name",
            ])?;
            Ok(left.trim().is_empty().then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

/// A trial script for the small e2e image: per epoch, a validation loss of
/// (x - 0.3)² + 1/(epoch + 1) as a Kiln metric line, three seconds apart,
/// then the last value in metrics.json and a model file.
const SLOW_TRIAL: &str = r#"set -eu
for e in 0 1 2 3 4 5 6 7 8 9; do
  v=$(busybox awk -v x="$SM_HP_X" -v e="$e" 'BEGIN { d = x - 0.3; printf "%.6f", d * d + 1 / (e + 1) }')
  echo "{\"kiln_metric\":\"validation:loss\",\"value\":$v,\"step\":$e,\"epoch\":$e,\"rank\":0}"
  sleep 3
done
printf '{"metrics": {"validation:loss": {"value": %s, "step": 9, "epoch": 9}}}' "$v" > /opt/ml/output/metrics.json
echo "x=$SM_HP_X" > /opt/ml/model/model.txt
"#;

/// Median early stopping: a grid over x = 0.3, 0.35, 0.9, 0.95, one trial at
/// a time, of a custom-image trial whose loss curve is worse the farther x
/// is from 0.3. The first two run to the end; the other two are worse than
/// the median of the completed trials at the same epoch and are stopped
/// while they run: recorded EarlyStopped, their TrainingJobs suspended.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn tuning_job_stops_losing_trials_early() {
    run("tune-stop", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let prefix = format!("e2e/{}", ns.name);
        install_operator(&ns)?;
        let script = serde_json::to_string(SLOW_TRIAL)?;
        let bucket = &s3.bucket;
        ns.apply(&format!(
            r#"
apiVersion: kiln.dev/v1alpha1
kind: TuningJob
metadata: {{name: stop}}
spec:
  strategy: {{type: Grid}}
  objective: {{metricName: "validation:loss", type: Minimize}}
  parameterRanges:
    categorical: [{{name: x, values: ["0.3", "0.35", "0.9", "0.95"]}}]
  limits: {{maxTrainingJobs: 4, maxParallelTrainingJobs: 1}}
  earlyStopping: {{type: Median, minTrials: 2}}
  trainingJobTemplate:
    spec:
      algorithm:
        image: {E2E_TOOLS}
        command: [sh, -c, {script}]
      output:
        location: {{uri: "s3://{bucket}/{prefix}/out/", secretRef: {{name: kiln-s3}}}}
      resources:
        replicas: 1
        compute: {{cpu: 100m, memory: 128Mi}}
"#
        ))
        .await?;
        let status = wait_until("the TuningJob to finish", 8 * MINUTE, || async {
            let s = kiln_object(&ns, "tuningjob", "stop")?["status"].clone();
            let c = condition_of(&s, "Succeeded");
            Ok((!c.is_null() && c["status"] != "Unknown").then_some(s))
        })
        .await?;
        ensure!(status["state"] == "Completed", "{status:#}");
        let trials = status["trials"].as_array().cloned().unwrap_or_default();
        let states: Vec<(String, String)> = trials
            .iter()
            .map(|t| {
                (
                    t["hyperparameters"]["x"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    t["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        eprintln!(
            "tune-stop: trials {states:?}, counts {}",
            status["trainingJobCounts"]
        );
        let expected: Vec<(String, String)> = [
            ("0.3", "Completed"),
            ("0.35", "Completed"),
            ("0.9", "EarlyStopped"),
            ("0.95", "EarlyStopped"),
        ]
        .iter()
        .map(|(x, s)| (x.to_string(), s.to_string()))
        .collect();
        ensure!(states == expected, "trials: {states:?}");
        ensure!(
            status["trainingJobCounts"]["earlyStopped"] == 2,
            "{status:#}"
        );
        ensure!(status["bestTrainingJob"]["name"] == "stop-1", "{status:#}");
        for t in ["stop-3", "stop-4"] {
            let job = kiln_object(&ns, "trainingjob", t)?;
            ensure!(
                job["spec"]["suspend"] == true
                    && job["metadata"]["annotations"]["kiln.dev/stopped-by"] == "EarlyStopped",
                "{t} was not stopped early: {job:#}"
            );
            // Stopped before its ten epochs: no model was uploaded.
            ensure!(
                job["status"]["state"] != "Completed",
                "{t} ran to the end: {job:#}"
            );
        }
        Ok(())
    })
    .await;
}

fn lifecycle_pipeline(bucket: &str, prefix: &str) -> String {
    format!(
        r#"
apiVersion: kiln.dev/v1alpha1
kind: Pipeline
metadata: {{name: lifecycle}}
spec:
  parameters:
    - {{name: min_accuracy, type: Float, default: "0.7"}}
    - {{name: epochs, type: Integer, default: "20"}}
  steps:
    - name: train
      cache: {{expireAfterSeconds: 3600}}
      training:
        spec:
          algorithm: {{name: linear-learner}}
          hyperparameters:
            predictor_type: multiclass_classifier
            num_classes: "3"
            epochs: "{{{{ parameters.epochs }}}}"
            mini_batch_size: "16"
          inputs:
            - name: train
              source: {{uri: "s3://{bucket}/{prefix}/train/", secretRef: {{name: kiln-s3}}}}
              contentType: text/csv
            - name: validation
              source: {{uri: "s3://{bucket}/{prefix}/validation/", secretRef: {{name: kiln-s3}}}}
              contentType: text/csv
          output:
            location: {{uri: "s3://{bucket}/{prefix}/runs/", secretRef: {{name: kiln-s3}}}}
          resources:
            replicas: 1
            compute: {{cpu: 250m, memory: 512Mi}}
    - name: good-enough
      condition:
        expression: "steps.train.metrics['validation:accuracy'] >= parameters.min_accuracy"
        ifSteps: [register]
        elseSteps: [reject]
    - name: register
      registerModel: {{groupName: iris, modelFromStep: train, approvalStatus: Approved}}
    - name: deploy
      deploy:
        endpointName: iris
        spec:
          variants:
            - name: main
              model: {{modelPackage: {{name: "{{{{ steps.register.modelPackageName }}}}"}}}}
              resources: {{cpu: 100m, memory: 256Mi}}
    - name: reject
      fail: {{message: "validation accuracy {{{{ steps.train.metrics['validation:accuracy'] }}}} is below {{{{ parameters.min_accuracy }}}}"}}
"#
    )
}

fn pipeline_run(name: &str, pipeline: &str, parameters: &[(&str, &str)]) -> String {
    let params: Vec<String> = parameters
        .iter()
        .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}"))
        .collect();
    format!(
        "apiVersion: kiln.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineRef: {{name: {pipeline}}}\n  parameters: [{}]\n",
        params.join(", ")
    )
}

async fn wait_run(ns: &TestNamespace, name: &str, timeout: Duration) -> Result<serde_json::Value> {
    wait_until(
        &format!("PipelineRun {name} to finish"),
        timeout,
        || async {
            let s = kiln_object(ns, "pipelinerun", name)?["status"].clone();
            let c = condition_of(&s, "Succeeded");
            Ok((!c.is_null() && c["status"] != "Unknown").then_some(s))
        },
    )
    .await
}

fn step_states(status: &serde_json::Value) -> Vec<(String, String)> {
    status["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `kubectl apply` of a Pipeline runs the lifecycle: train on iris, check
/// the validation accuracy against a parameter, register the model as an
/// Approved version of a group, deploy it behind an Endpoint and predict
/// through it. A run whose threshold is too high takes the fail branch
/// with its message and registers nothing; a pipeline whose steps form a
/// cycle fails its run at once, naming the cycle.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn pipeline_trains_checks_registers_and_deploys() {
    run("pipeline", |ns| async move {
        apply_kiln_crds(&ns).await?;
        let s3 = s3_secret(&ns).await?;
        let data = ns.cluster.repo.join("e2e/manifests/data/iris");
        let prefix = format!("e2e/{}/iris", ns.name);
        s3.put(&format!("{prefix}/train/data.csv"), &data.join("train.csv"))?;
        s3.put(
            &format!("{prefix}/validation/data.csv"),
            &data.join("validation.csv"),
        )?;
        install_operator(&ns)?;
        ns.apply(&model_package_group("iris")).await?;
        ns.apply(&lifecycle_pipeline(&s3.bucket, &prefix)).await?;
        ns.apply(
            r#"
apiVersion: kiln.dev/v1alpha1
kind: Pipeline
metadata: {name: loop}
spec:
  steps:
    - {name: a, dependsOn: [c], fail: {message: a}}
    - {name: b, dependsOn: [a], fail: {message: b}}
    - {name: c, dependsOn: [b], fail: {message: c}}
"#,
        )
        .await?;
        ns.apply(&pipeline_run("good", "lifecycle", &[])).await?;
        ns.apply(&pipeline_run(
            "strict",
            "lifecycle",
            &[("min_accuracy", "1.01")],
        ))
        .await?;
        ns.apply(&pipeline_run("cyclic", "loop", &[])).await?;

        // The Pipeline itself says it cannot run, and why.
        let ready = wait_until(
            "the cyclic Pipeline's Ready condition",
            2 * MINUTE,
            || async {
                let c = condition_of(&kiln_object(&ns, "pipeline", "loop")?["status"], "Ready");
                Ok((!c.is_null()).then_some(c))
            },
        )
        .await?;
        ensure!(
            ready["status"] == "False"
                && ready["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cycle")),
            "the cyclic Pipeline: {ready:#}"
        );
        let cyclic = wait_run(&ns, "cyclic", 2 * MINUTE).await?;
        let c = condition_of(&cyclic, "Succeeded");
        ensure!(
            c["status"] == "False"
                && c["reason"] == "InvalidSpec"
                && c["message"].as_str().is_some_and(|m| m.contains("cycle")),
            "the cyclic run: {cyclic:#}"
        );

        let strict = wait_run(&ns, "strict", 8 * MINUTE).await?;
        let c = condition_of(&strict, "Succeeded");
        ensure!(
            c["status"] == "False"
                && c["reason"] == "StepFailed"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("is below 1.01")),
            "the strict run: {strict:#}"
        );
        let states = step_states(&strict);
        eprintln!("pipeline: strict run {states:?}: {}", c["message"]);
        for (step, state) in [
            ("train", "Succeeded"),
            ("good-enough", "Succeeded"),
            ("register", "Skipped"),
            ("deploy", "Skipped"),
            ("reject", "Failed"),
        ] {
            ensure!(
                states.contains(&(step.to_string(), state.to_string())),
                "strict run step {step} is not {state}: {states:?}"
            );
        }

        let good = wait_run(&ns, "good", 10 * MINUTE).await?;
        let c = condition_of(&good, "Succeeded");
        ensure!(c["status"] == "True", "the good run: {good:#}");
        let states = step_states(&good);
        eprintln!("pipeline: good run {states:?}");
        for (step, state) in [
            ("train", "Succeeded"),
            ("good-enough", "Succeeded"),
            ("register", "Succeeded"),
            ("deploy", "Succeeded"),
            ("reject", "Skipped"),
        ] {
            ensure!(
                states.contains(&(step.to_string(), state.to_string())),
                "good run step {step} is not {state}: {states:?}"
            );
        }
        ensure!(good["stepsSucceeded"] == 4, "{good:#}");
        // The registered version: numbered in the group, Approved, traced to the run's TrainingJob.
        let package = kiln_object(&ns, "modelpackage", "good-register")?;
        ensure!(
            package["status"]["version"] == 1
                && package["spec"]["approval"]["status"] == "Approved"
                && package["spec"]["source"]["trainingJob"] == "good-train"
                && package["spec"]["source"]["pipeline"] == "lifecycle",
            "the registered package: {package:#}"
        );
        ensure!(
            package["spec"]["inference"]["modelData"]["uri"]
                .as_str()
                .is_some_and(|u| u.contains("/runs/")),
            "the package's artifact: {package:#}"
        );
        // The strict run registered nothing.
        ensure!(
            kiln_object(&ns, "modelpackage", "strict-register").is_err(),
            "the strict run registered a package"
        );
        // The Endpoint serves the registered version.
        let endpoint = endpoint_status(&ns, "iris")?;
        ensure!(
            condition_of(&endpoint, "Ready")["status"] == "True",
            "{endpoint:#}"
        );
        let (code, _, body) = via_service(
            &ns,
            "iris",
            "/invocations",
            &[],
            "5.1,3.5,1.4,0.2\n6.7,3.1,4.4,1.4\n6.3,3.3,6.0,2.5\n",
        )
        .await?;
        ensure!(code == 200, "predictions: {code} {body}");
        eprintln!("pipeline: the deployed endpoint answered {body:?}");
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("the prediction is no JSON: {body}"))?;
        ensure!(
            answer["predictions"].as_array().map(Vec::len) == Some(3),
            "three rows, not three predictions: {body}"
        );

        // A second run with the same inputs reuses the trained model: its
        // train step is a cache hit and creates no TrainingJob.
        ns.apply(&pipeline_run("again", "lifecycle", &[])).await?;
        let again = wait_run(&ns, "again", 6 * MINUTE).await?;
        ensure!(
            condition_of(&again, "Succeeded")["status"] == "True",
            "{again:#}"
        );
        let train = again["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "train")
            .cloned()
            .unwrap_or_default();
        ensure!(
            train["state"] == "Succeeded"
                && (train["cacheHitRun"] == "good" || train["cacheHitRun"] == "strict"),
            "the second run's train step: {train:#}"
        );
        ensure!(
            kiln_object(&ns, "trainingjob", "again-train").is_err(),
            "the cached step created a TrainingJob"
        );
        eprintln!(
            "pipeline: run again reused {}'s train step",
            train["cacheHitRun"]
        );

        // `kubectl kiln graph` shows the good run's steps, states and branches.
        let plugin = std::env::var("KILN_KUBECTL_KILN")
            .context("KILN_KUBECTL_KILN names the kubectl-kiln binary (make test-e2e builds it)")?;
        let out = Command::new(&plugin)
            .args(["graph", "lifecycle", "good", "-n", &ns.name, "--kubeconfig"])
            .arg(&ns.cluster.kubeconfig)
            .output()?;
        let graph = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "kubectl kiln graph failed: {graph}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("pipeline: kubectl kiln graph lifecycle good\n{graph}");
        for line in [
            "RUN good (Succeeded)",
            "[1] train",
            "TrainingJob good-train",
            "[2] good-enough",
            "is true",
            "[3] register",
            "[3] reject",
            "[4] deploy",
            "good-enough -> reject (else)",
        ] {
            ensure!(graph.contains(line), "the graph lacks {line:?}:\n{graph}");
        }
        Ok(())
    })
    .await;
}

/// A scheduled Pipeline starts a run at every tick of its cron pattern
/// (each minute here), named after the tick, within seconds of it; the
/// tick's run is never started twice; finished scheduled runs beyond
/// successfulRunsHistoryLimit are deleted.
#[tokio::test]
#[ignore = "needs the local cluster and the Kiln images: make test-e2e"]
async fn pipeline_schedule_starts_runs_on_time_and_keeps_its_history() {
    run("schedule", |ns| async move {
        apply_kiln_crds(&ns).await?;
        install_operator(&ns)?;
        ns.apply(
            r#"
apiVersion: kiln.dev/v1alpha1
kind: Pipeline
metadata: {name: tick}
spec:
  parameters: [{name: n, type: Integer, default: "1"}]
  steps:
    - name: check
      condition: {expression: "parameters.n == 1", elseSteps: [wrong]}
    - name: wrong
      fail: {message: "n is not 1"}
  schedule: {cron: "* * * * *", concurrencyPolicy: Forbid}
  successfulRunsHistoryLimit: 1
"#,
        )
        .await?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        wait_until("two scheduled runs", 4 * MINUTE, || {
            let seen = seen.clone();
            let ns = &ns;
            async move {
                let s = kiln_object(ns, "pipeline", "tick")?["status"].clone();
                let mut ticks = seen.lock().expect("ticks");
                if let Some(t) = s["lastScheduleTime"].as_str()
                    && !ticks.iter().any(|x| x == t)
                {
                    ticks.push(t.to_string());
                }
                Ok((ticks.len() >= 2).then_some(()))
            }
        })
        .await?;
        let ticks = seen.lock().expect("ticks").clone();
        eprintln!("schedule: ticks {ticks:?}");
        let runs: serde_json::Value = serde_json::from_str(&ns.kubectl(&[
            "get",
            "pipelineruns",
            "-l",
            "kiln.dev/scheduled-by=tick",
            "-o",
            "json",
        ])?)?;
        for run in runs["items"].as_array().into_iter().flatten() {
            let name = run["metadata"]["name"].as_str().unwrap_or_default();
            let tick = run["metadata"]["annotations"]["kiln.dev/scheduled-at"]
                .as_str()
                .unwrap_or_default();
            let tick_s: i64 = tick
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map(|t| t.as_second())
                .with_context(|| format!("run {name}: tick {tick:?}"))?;
            ensure!(
                name == format!("tick-{}", tick_s / 60),
                "run {name} for tick {tick}"
            );
            ensure!(tick_s % 60 == 0, "tick {tick} is not on a minute");
            let created: k8s_openapi::jiff::Timestamp = run["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .parse()?;
            let late = created.as_second() - tick_s;
            ensure!(
                (0..=30).contains(&late),
                "run {name} started {late} s after its tick"
            );
        }
        // History: one succeeded scheduled run is kept.
        wait_until("the history limit to hold", 3 * MINUTE, || async {
            let runs: serde_json::Value = serde_json::from_str(&ns.kubectl(&[
                "get",
                "pipelineruns",
                "-l",
                "kiln.dev/scheduled-by=tick",
                "-o",
                "json",
            ])?)?;
            let succeeded = runs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["status"]["state"] == "Succeeded")
                .count();
            Ok((succeeded == 1).then_some(()))
        })
        .await?;
        let pipeline = kiln_object(&ns, "pipeline", "tick")?;
        ensure!(
            condition_of(&pipeline["status"], "Ready")["status"] == "True"
                && pipeline["status"]["lastSuccessfulTime"].is_string(),
            "{pipeline:#}"
        );
        Ok(())
    })
    .await;
}
