//! One temporary namespace per test, and the helpers tests use inside it.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch, PatchParams,
    PostParams,
};
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::cluster::Cluster;
use crate::wait::wait_until;

/// The field manager of everything the tests apply.
const FIELD_MANAGER: &str = "kiln-e2e";

/// A test's own namespace on the cluster.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    pub cluster: &'static Cluster,
}

/// Runs one e2e test in a fresh namespace. On failure it prints what explains
/// it (events, pods, pod logs) and panics; the namespace is deleted either way,
/// unless `KILN_E2E_KEEP=1`.
pub async fn run<F, Fut>(test: &str, body: F)
where
    F: FnOnce(TestNamespace) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = std::time::Instant::now();
    let ns = match TestNamespace::create(test).await {
        Ok(ns) => ns,
        Err(e) => panic!("{test}: setting up failed: {e:#}"),
    };
    let name = ns.name.clone();
    let client = ns.client.clone();
    let cluster = ns.cluster;
    let result = body(ns).await;
    let ns = TestNamespace {
        name,
        client,
        cluster,
    };
    if let Err(e) = &result {
        eprintln!("{test} FAILED after {:?}: {e:#}", started.elapsed());
        eprintln!("{}", ns.diagnostics().await);
    }
    if std::env::var("KILN_E2E_KEEP").as_deref() != Ok("1") {
        let _ = ns.delete().await;
    }
    if let Err(e) = result {
        panic!("{test}: {e:#}");
    }
    eprintln!("{test}: passed in {:?}", started.elapsed());
}

impl TestNamespace {
    /// Creates `e2e-TEST-SUFFIX`.
    pub async fn create(test: &str) -> Result<TestNamespace> {
        let cluster = Cluster::get()?;
        let client = cluster.client().await?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let slug: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("e2e-{}-{:05x}", slug.trim_matches('-'), nanos % 0xfffff);
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"kiln.dev/e2e": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        // Pods need the namespace's default ServiceAccount.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                let sa = sa.clone();
                async move { Ok(sa.get_opt("default").await?.map(|_| ())) }
            },
        )
        .await?;
        Ok(TestNamespace {
            name,
            client,
            cluster,
        })
    }

    pub async fn delete(&self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Applies every document of `yaml` with server-side apply; namespaced
    /// objects without a namespace land in this one.
    pub async fn apply(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        self.apply_with(yaml, false).await
    }

    /// Sends `yaml` through validation and admission (CEL rules included)
    /// with a server-side dry run: nothing is stored.
    pub async fn apply_dry_run(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        self.apply_with(yaml, true).await
    }

    async fn apply_with(&self, yaml: &str, dry_run: bool) -> Result<Vec<DynamicObject>> {
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
            if value.is_null() {
                continue;
            }
            applied.push(self.apply_one(value, dry_run).await?);
        }
        Ok(applied)
    }

    async fn apply_one(&self, value: serde_json::Value, dry_run: bool) -> Result<DynamicObject> {
        let obj: DynamicObject =
            serde_json::from_value(value).context("not a Kubernetes object")?;
        let types = obj
            .types
            .clone()
            .context("object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, caps) = pinned_kind(&self.client, &gvk)
            .await
            .with_context(|| format!("unknown kind {}/{}", types.api_version, types.kind))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = obj.namespace().unwrap_or_else(|| self.name.clone());
                Api::namespaced_with(self.client.clone(), &ns, &resource)
            }
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let name = obj.name_any();
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))
    }

    /// Applies `yaml` and returns the API server's refusal; fails when the
    /// server accepts it.
    pub async fn apply_refused(&self, yaml: &str) -> Result<String> {
        match self.apply(yaml).await {
            Ok(_) => bail!("the API server accepted an object it should have refused"),
            Err(e) => match e.downcast_ref::<kube::Error>() {
                Some(kube::Error::Api(status)) => Ok(status.message.clone()),
                _ => Err(e.context("applying failed, but not with an API refusal")),
            },
        }
    }

    /// Waits until pod NAME satisfies `ready`, and returns it.
    pub async fn wait_pod<F>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ready: F,
    ) -> Result<Pod>
    where
        F: Fn(&Pod) -> bool,
    {
        let pods = self.pods();
        wait_until(&format!("pod {name} {what}"), timeout, || {
            let pods = pods.clone();
            let ready = &ready;
            async move { Ok(pods.get_opt(name).await?.filter(|p| ready(p))) }
        })
        .await
    }

    /// Waits until pod NAME's phase is PHASE (Running, Succeeded, ...). A pod
    /// that fails while the test waits for another phase fails the wait.
    pub async fn wait_phase(&self, name: &str, phase: &str, timeout: Duration) -> Result<Pod> {
        let pods = self.pods();
        wait_until(&format!("pod {name} to be {phase}"), timeout, || {
            let pods = pods.clone();
            async move {
                let Some(pod) = pods.get_opt(name).await? else {
                    return Ok(None);
                };
                let current = pod_phase(&pod);
                if current == phase {
                    return Ok(Some(pod));
                }
                if current == "Failed" {
                    bail!("pod {name} failed");
                }
                Ok(None)
            }
        })
        .await
    }

    /// Waits until pod NAME has condition Ready=True.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<Pod> {
        self.wait_pod(name, "to be Ready", timeout, pod_ready).await
    }

    /// The logs of pod NAME's first (or only) container.
    pub async fn logs(&self, name: &str) -> Result<String> {
        Ok(self.pods().logs(name, &LogParams::default()).await?)
    }

    /// Runs kubectl in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }

    /// Events (oldest first), pods with their nodes and states, and every
    /// container's logs: what a failed test prints.
    pub async fn diagnostics(&self) -> String {
        let mut out = format!("---- diagnostics of namespace {} ----\n", self.name);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.name);
        match events.list(&ListParams::default()).await {
            Ok(list) => {
                let mut items = list.items;
                items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
                let _ = writeln!(out, "events:");
                for e in items {
                    let _ = writeln!(
                        out,
                        "  {} {}/{}: {} {}",
                        e.type_.unwrap_or_default(),
                        e.involved_object.kind.unwrap_or_default(),
                        e.involved_object.name.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default().trim()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "events: {e}");
            }
        }
        match self.pods().list(&ListParams::default()).await {
            Ok(list) => {
                for pod in list.items {
                    let name = pod.name_any();
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "pod {name}: phase {} on node '{node}'",
                        pod_phase(&pod)
                    );
                    let statuses = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.clone());
                    for cs in statuses.unwrap_or_default() {
                        let _ = writeln!(out, "  container {}: {:?}", cs.name, cs.state);
                        let lp = LogParams {
                            container: Some(cs.name.clone()),
                            tail_lines: Some(50),
                            ..LogParams::default()
                        };
                        match self.pods().logs(&name, &lp).await {
                            Ok(logs) => {
                                for line in logs.lines() {
                                    let _ = writeln!(out, "    | {line}");
                                }
                            }
                            Err(e) => {
                                let _ = writeln!(out, "    (no logs: {e})");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "pods: {e}");
            }
        }
        out
    }
}

/// A pod's phase, "" when it has none yet.
pub fn pod_phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node a pod is bound to, "" when none.
pub fn pod_node(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}
