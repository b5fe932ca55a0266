#!/usr/bin/env python3
"""Checks the manifests that `helm template` renders from the Kiln chart.

Reads a multi-document YAML stream on stdin and checks what must hold for
every install (the operator pod's security settings, probes, downward API,
least-privilege RBAC, selectors that match) and what the chosen profile's
values file sets. Prints one line per failed check and a closing count;
exits 1 when any check failed.

    helm template ... | check_manifests.py --profile default|full|single|integrations --namespace NS
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

from argocd_health import crd_kinds

CHART = Path(__file__).resolve().parent.parent / "kiln"
HEALTH_SCRIPTS = CHART / "argocd" / "resource_customizations" / "kiln.dev"
HEALTH_KEY = "resource.customizations.health.kiln.dev_"

# Every permission the operator's code uses today: (API group, resource, verb).
# A rule in the chart outside this set is a least-privilege regression; widen
# it together with the controller that needs the new permission.
ALLOWED_RULES = {
    ("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update", "patch")
} | {
    (group, "events", verb) for group in ("", "events.k8s.io") for verb in ("create", "patch")
} | {
    # The TrainingJob controller.
    ("kiln.dev", "trainingjobs", verb) for verb in ("get", "list", "watch", "delete")
} | {
    ("kiln.dev", "trainingjobs/status", verb) for verb in ("get", "patch")
} | {
    ("", "pods", verb) for verb in ("get", "list", "watch", "create", "patch", "delete", "deletecollection")
} | {
    ("", resource, verb) for resource in ("configmaps", "services") for verb in ("get", "create", "patch")
} | {
    # The Endpoint controller.
    ("kiln.dev", "endpoints", verb) for verb in ("get", "list", "watch")
} | {
    ("kiln.dev", "endpoints/status", verb) for verb in ("get", "patch")
} | {
    ("kiln.dev", "modelpackages", verb) for verb in ("get", "list", "watch")
} | {
    ("apps", "deployments", verb) for verb in ("get", "list", "watch", "create", "patch", "delete")
} | {
    ("", "services", verb) for verb in ("list", "delete")
} | {
    # The ModelPackage and ModelPackageGroup controllers (with modelpackages,
    # trainingjobs and pods above): package status by server-side apply,
    # group status by updates carrying its resourceVersion.
    ("kiln.dev", "modelpackages/status", "patch"),
} | {
    ("kiln.dev", "modelpackagegroups", verb) for verb in ("get", "list", "watch")
} | {
    ("kiln.dev", "modelpackagegroups/status", "update"),
} | {
    # The TuningJob controller: trials are TrainingJobs it creates and
    # suspends; rank 0's log carries the objective's intermediate values.
    ("kiln.dev", "tuningjobs", verb) for verb in ("get", "list", "watch", "create", "delete")
} | {
    ("kiln.dev", "tuningjobs/status", verb) for verb in ("get", "update")
} | {
    ("kiln.dev", "trainingjobs", verb) for verb in ("create", "patch")
} | {
    ("", "pods/log", "get"),
} | {
    # The Pipeline and PipelineRun controllers (tuningjobs create/delete
    # above): runs and their status, scheduled runs, registered versions and
    # deployed Endpoints.
    ("kiln.dev", resource, verb) for resource in ("pipelines", "pipelineruns") for verb in ("get", "list", "watch")
} | {
    ("kiln.dev", "pipelineruns/status", verb) for verb in ("get", "update")
} | {
    ("kiln.dev", "pipelines/status", "patch"),
} | {
    ("kiln.dev", "pipelineruns", verb) for verb in ("create", "patch", "delete")
} | {
    ("kiln.dev", "modelpackages", "create"),
} | {
    ("kiln.dev", "endpoints", verb) for verb in ("create", "patch")
}

NAMESPACED_KINDS = {
    "Deployment", "ServiceAccount", "Role", "RoleBinding", "Service",
    "ServiceMonitor", "PodDisruptionBudget", "ConfigMap",
}
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


class Checks:
    """Collects results so that one run reports every failure, not the first."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def that(self, condition, what):
        if condition:
            self.passed += 1
        else:
            self.failed.append(what)
        return condition

    def equal(self, actual, expected, what):
        return self.that(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


def objects_of(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(check, docs, kind):
    found = objects_of(docs, kind)
    check.equal(len(found), 1, f"number of {kind} objects")
    return found[0] if found else {}


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container, name):
    return env_of(container).get(name, {}).get("value")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_pod_security(check, pod):
    """The settings the restricted Pod Security Standard and the design ask for."""
    psc = pod.get("securityContext", {})
    check.equal(psc.get("runAsNonRoot"), True, "pod securityContext.runAsNonRoot")
    check.that(psc.get("runAsUser", 0) != 0, "pod securityContext.runAsUser is not root")
    check.equal(psc.get("seccompProfile", {}).get("type"), "RuntimeDefault", "pod seccompProfile")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        check.that(not pod.get(key), f"pod does not set {key}")
    check.that(not pod.get("volumes"), "pod has no volumes (the operator reads and writes no files)")
    for c in pod.get("containers", []):
        name = c.get("name")
        sc = c.get("securityContext", {})
        check.equal(sc.get("runAsNonRoot"), True, f"container {name} runAsNonRoot")
        check.equal(sc.get("runAsUser"), 65532, f"container {name} runAsUser")
        check.equal(sc.get("readOnlyRootFilesystem"), True, f"container {name} readOnlyRootFilesystem")
        check.equal(sc.get("allowPrivilegeEscalation"), False, f"container {name} allowPrivilegeEscalation")
        check.that(not sc.get("privileged"), f"container {name} is not privileged")
        check.equal(sc.get("capabilities", {}).get("drop"), ["ALL"], f"container {name} capabilities.drop")
        check.that(not sc.get("capabilities", {}).get("add"), f"container {name} adds no capability")
        check.equal(sc.get("seccompProfile", {}).get("type"), "RuntimeDefault", f"container {name} seccompProfile")
        for side in ("requests", "limits"):
            for res in ("cpu", "memory"):
                check.that(res in c.get("resources", {}).get(side, {}), f"container {name} resources.{side}.{res}")


def check_operator_container(check, pod, namespace):
    containers = pod.get("containers", [])
    check.equal(len(containers), 1, "number of containers in the operator pod")
    if not containers:
        return
    c = containers[0]
    env = env_of(c)
    for var, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        ref = env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        check.equal(ref, field, f"{var} from the downward API")
    check.equal(env_value(c, "KILN_LEASE_NAMESPACE"), namespace, "lease namespace is the release namespace")
    check.that(env_value(c, "KILN_LOG_FORMAT") in ("json", "text"), "KILN_LOG_FORMAT is json or text")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for var, port_name in (("KILN_METRICS_BIND_ADDRESS", "metrics"), ("KILN_HEALTH_BIND_ADDRESS", "health")):
        bind = env_value(c, var) or ""
        check.equal(bind.rsplit(":", 1)[-1], str(ports.get(port_name)), f"{var} port matches the {port_name} containerPort")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check.equal(get.get("path"), path, f"{probe} path")
        check.equal(get.get("port"), "health", f"{probe} port")


def check_rbac(check, docs, sa_name, namespace):
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d
             for d in objects_of(docs, "Role") + objects_of(docs, "ClusterRole")}
    for role in roles.values():
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                check.that("*" not in rule.get(field, []), f"{role['kind']} {role['metadata']['name']}: no '*' in {field}")
            check.that(not rule.get("nonResourceURLs"), f"{role['kind']} {role['metadata']['name']}: no nonResourceURLs")
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        check.that((group, resource, verb) in ALLOWED_RULES,
                                   f"{role['kind']} {role['metadata']['name']} grants {verb} {resource}.{group or 'core'}, which the operator does not use")
    for binding in objects_of(docs, "RoleBinding") + objects_of(docs, "ClusterRoleBinding"):
        name = binding["metadata"]["name"]
        ref = binding.get("roleRef", {})
        ns = binding["metadata"].get("namespace") if ref.get("kind") == "Role" else None
        check.that((ref.get("kind"), ref.get("name"), ns) in roles, f"{binding['kind']} {name} refers to a role the chart creates")
        check.equal(binding.get("subjects"), [{"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}],
                    f"{binding['kind']} {name} subjects")


def granted(docs, group, resource, verb):
    """The roles (kind, namespace) that grant verb on resource."""
    out = []
    for role in objects_of(docs, "Role") + objects_of(docs, "ClusterRole"):
        for rule in role.get("rules", []):
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []) and verb in rule.get("verbs", []):
                out.append((role["kind"], role["metadata"].get("namespace")))
    return out


def is_argocd_config(d):
    """The ConfigMap of Argo CD health checks: merged into Argo CD's own, it
    carries Argo CD's labels rather than the chart's."""
    return d.get("kind") == "ConfigMap" and d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/part-of") == "argocd"


def check_common(check, docs, namespace):
    for d in docs:
        meta = d.get("metadata", {})
        what = f"{d.get('kind')} {meta.get('name')}"
        if not is_argocd_config(d):
            check.equal(meta.get("labels", {}).get("app.kubernetes.io/managed-by"), "Helm", f"{what} managed-by label")
        if d.get("kind") in NAMESPACED_KINDS:
            check.that(bool(meta.get("namespace")), f"{what} has a namespace")

    deploy = one(check, docs, "Deployment")
    pod_template = deploy.get("spec", {}).get("template", {})
    pod = pod_template.get("spec", {})
    pod_labels = pod_template.get("metadata", {}).get("labels", {})
    check.that(selects(deploy.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels),
               "Deployment selector matches its pod labels")
    check_pod_security(check, pod)
    check_operator_container(check, pod, namespace)
    check_rbac(check, docs, pod.get("serviceAccountName"), namespace)

    for svc in objects_of(docs, "Service"):
        check.that(selects(svc["spec"].get("selector"), pod_labels), f"Service {svc['metadata']['name']} selects the operator pods")
        container_ports = {p["name"] for c in pod.get("containers", []) for p in c.get("ports", [])}
        for p in svc["spec"].get("ports", []):
            check.that(p.get("targetPort") in container_ports, f"Service port {p.get('name')} targets a named container port")
    for pdb in objects_of(docs, "PodDisruptionBudget"):
        check.that(selects(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels), "PodDisruptionBudget selects the operator pods")
        check.that(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), "PodDisruptionBudget sets exactly one of minAvailable, maxUnavailable")
    for sm in objects_of(docs, "ServiceMonitor"):
        services = objects_of(docs, "Service")
        check.that(any(selects(sm["spec"]["selector"].get("matchLabels"), s["metadata"]["labels"]) for s in services),
                   "ServiceMonitor selects the metrics Service")
        check.equal(sm["spec"].get("namespaceSelector", {}).get("matchNames"), [namespace], "ServiceMonitor namespaceSelector")
        service_ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        for ep in sm["spec"].get("endpoints", []):
            check.that(ep.get("port") in service_ports, "ServiceMonitor endpoint port is a Service port")
    return deploy, pod


def check_default(check, docs, deploy, pod, namespace, app_version):
    c = (pod.get("containers") or [{}])[0]
    check.equal(deploy["spec"].get("replicas"), 2, "default replicas")
    check.equal(c.get("image"), f"kiln/operator:{app_version}", "image tag defaults to appVersion")
    check.equal(c.get("imagePullPolicy"), "IfNotPresent", "default pull policy")
    check.equal(env_value(c, "KILN_LEADER_ELECT"), "true", "leader election on by default")
    check.equal(env_value(c, "KILN_LOG_FORMAT"), "json", "default log format")
    check.equal(env_value(c, "KILN_WATCH_NAMESPACE"), "", "all namespaces watched by default")
    check.equal(granted(docs, "coordination.k8s.io", "leases", "create"), [("Role", namespace)], "lease permissions: a Role in the release namespace")
    check.equal(sorted(granted(docs, "events.k8s.io", "events", "create")), [("ClusterRole", None), ("Role", namespace)],
                "event permissions: a ClusterRole, and the Role of the Lease for its LeaderElection event")
    check.that(not objects_of(docs, "ServiceMonitor"), "no ServiceMonitor by default")
    check.that(not objects_of(docs, "ConfigMap"), "no Argo CD health checks by default")
    for kind in POLICY_KINDS:
        check.that(not objects_of(docs, kind), f"no {kind} by default")
    check.that(not objects_of(docs, "PodDisruptionBudget"), "no PodDisruptionBudget by default")
    check.equal(len(objects_of(docs, "Service")), 1, "one metrics Service")
    check.that("priorityClassName" not in pod, "no priorityClassName by default")
    spread = pod.get("topologySpreadConstraints", [])
    check.equal([(s.get("topologyKey"), s.get("whenUnsatisfiable")) for s in spread],
                [("kubernetes.io/hostname", "ScheduleAnyway")], "replicas spread over nodes as a soft preference")
    check.that(not any(d.get("kind") == "ServiceAccount" and d["metadata"]["name"] != pod.get("serviceAccountName") for d in docs),
               "the ServiceAccount created is the one the pod uses")


def check_full(check, docs, deploy, pod, namespace):
    c = (pod.get("containers") or [{}])[0]
    check.equal(deploy["spec"].get("replicas"), 3, "replicas")
    check.equal(deploy["metadata"]["name"], "kiln-full", "fullnameOverride")
    check.equal(deploy["metadata"]["labels"].get("team"), "ml-platform", "commonLabels")
    check.that(c.get("image", "").endswith("@sha256:" + "0123456789abcdef" * 4), "digest pins the image")
    check.equal(c.get("imagePullPolicy"), "Always", "pull policy")
    check.equal(pod.get("imagePullSecrets"), [{"name": "registry-credentials"}], "imagePullSecrets")
    check.equal(pod.get("serviceAccountName"), "kiln-operator-sa", "serviceAccount.name")
    check.equal(pod.get("priorityClassName"), "system-cluster-critical", "priorityClassName")
    check.equal(pod.get("nodeSelector"), {"kubernetes.io/os": "linux"}, "nodeSelector")
    check.equal(len(pod.get("tolerations", [])), 1, "tolerations")
    check.that("nodeAffinity" in pod.get("affinity", {}), "affinity")
    check.equal([s.get("topologyKey") for s in pod.get("topologySpreadConstraints", [])],
                ["topology.kubernetes.io/zone"], "topologySpreadConstraints replace the default spread")
    check.equal(pod.get("terminationGracePeriodSeconds"), 45, "terminationGracePeriodSeconds")
    check.equal(deploy["spec"].get("revisionHistoryLimit"), 3, "revisionHistoryLimit")
    check.equal(deploy["spec"]["template"]["metadata"].get("annotations"), {"example.test/owner": "ml-platform"}, "podAnnotations")
    check.equal(deploy["spec"]["template"]["metadata"]["labels"].get("tier"), "control", "podLabels")
    check.equal(c.get("args"), ["--log-level=debug"], "extraArgs")
    check.equal(env_value(c, "RUST_BACKTRACE"), "1", "extraEnv")
    check.equal(env_value(c, "KILN_LOG_FORMAT"), "text", "logFormat")
    check.equal(env_value(c, "KILN_LOG_LEVEL"), "info,kiln_operator=debug", "logLevel")
    check.equal(env_value(c, "KILN_WATCH_NAMESPACE"), "ml-jobs", "watchNamespace")
    check.equal(env_value(c, "KILN_LEASE_NAME"), "kiln-full-leader", "leaseName")
    check.equal(env_value(c, "KILN_METRICS_BIND_ADDRESS"), "0.0.0.0:9090", "metrics.port")
    check.equal(env_value(c, "KILN_HEALTH_BIND_ADDRESS"), "0.0.0.0:9091", "health.port")
    check.equal(c.get("livenessProbe", {}).get("failureThreshold"), 5, "livenessProbe settings")
    check.equal(c.get("readinessProbe", {}).get("periodSeconds"), 3, "readinessProbe settings")
    check.equal(c.get("resources", {}).get("limits", {}).get("memory"), "1Gi", "resources")
    # watchNamespace set: events through a Role there, and nothing cluster-wide.
    check.that(not objects_of(docs, "ClusterRole") and not objects_of(docs, "ClusterRoleBinding"),
               "no cluster-wide role when watchNamespace is set")
    check.equal(sorted(granted(docs, "", "events", "create")), [("Role", "ml-jobs")], "event permissions: a Role in the watched namespace")
    check.equal(sorted(granted(docs, "events.k8s.io", "events", "create")), [("Role", namespace), ("Role", "ml-jobs")],
                "events.k8s.io events: in the watched namespace, and in the release namespace for the Lease's event")
    lease_roles = [r for r in objects_of(docs, "Role") if any("leases" in rule.get("resources", []) for rule in r.get("rules", []))]
    check.equal([n for r in lease_roles for rule in r["rules"] for n in rule.get("resourceNames", [])], ["kiln-full-leader"],
                "lease permissions limited to the lease by name")
    sa = one(check, docs, "ServiceAccount")
    check.equal(sa.get("metadata", {}).get("annotations"), {"iam.example.test/role": "kiln"}, "serviceAccount.annotations")
    svc = one(check, docs, "Service")
    check.equal(svc.get("spec", {}).get("ports", [{}])[0].get("port"), 9443, "metrics.service.port")
    check.equal(svc.get("metadata", {}).get("annotations"), {"prometheus.io/scrape": "true"}, "metrics.service.annotations")
    sm = one(check, docs, "ServiceMonitor")
    check.equal(sm.get("metadata", {}).get("namespace"), "monitoring", "ServiceMonitor namespace")
    check.equal(sm.get("metadata", {}).get("labels", {}).get("release"), "prometheus", "ServiceMonitor labels")
    ep = (sm.get("spec", {}).get("endpoints") or [{}])[0]
    check.equal((ep.get("interval"), ep.get("scrapeTimeout")), ("15s", "5s"), "ServiceMonitor interval and timeout")
    check.that(ep.get("relabelings") and ep.get("metricRelabelings"), "ServiceMonitor relabelings")
    pdb = one(check, docs, "PodDisruptionBudget")
    check.equal(pdb.get("spec", {}).get("maxUnavailable"), 1, "PodDisruptionBudget maxUnavailable")
    check_argocd(check, docs, "gitops", "argocd-cm-kiln")
    tenant = {"matchLabels": {"kiln.dev/tenant": "true"}}
    research = {"matchExpressions": [{"key": "team", "operator": "In", "values": ["research", "vision"]}]}
    check_policies(check, docs, "kiln-full", {
        "kiln-full-service-accounts-ml-teams": (tenant, ["default", "trainer"], POD_RESOURCES),
        "kiln-full-service-accounts-research": (research, ["researcher"], POD_RESOURCES),
        "kiln-full-tolerations-gpu-teams": (tenant, ["nvidia.com/gpu", "kiln.dev/pool"], POD_RESOURCES),
        "kiln-full-model-approval": (tenant, None, APPROVAL_RESOURCES),
    }, ("oidc:ml-approvers", f"system:serviceaccount:{namespace}:kiln-operator-sa"))


def check_single(check, docs, deploy, pod):
    c = (pod.get("containers") or [{}])[0]
    check.equal(deploy["spec"].get("replicas"), 1, "replicas")
    check.equal(env_value(c, "KILN_LEADER_ELECT"), "false", "leader election off")
    for kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Service"):
        check.that(not objects_of(docs, kind), f"no {kind}")
    check.equal(pod.get("serviceAccountName"), "existing-sa", "existing ServiceAccount used")
    check.that("topologySpreadConstraints" not in pod, "no spread for one replica")
    pdb = one(check, docs, "PodDisruptionBudget")
    check.equal(pdb.get("spec", {}).get("minAvailable"), "50%", "PodDisruptionBudget percentage")


def check_argocd(check, docs, namespace, name):
    """The ConfigMap holds exactly one health check per kiln.dev kind (the
    kinds of the chart's CRDs), each the text of its health.lua."""
    found = [d for d in objects_of(docs, "ConfigMap") if d["metadata"]["name"] == name]
    check.equal(len(found), 1, f"one ConfigMap {name} of Argo CD health checks")
    if not found:
        return
    cm = found[0]
    check.equal(cm["metadata"].get("namespace"), namespace, "Argo CD ConfigMap namespace")
    check.equal(cm["metadata"].get("labels"), {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "argocd"},
                "Argo CD ConfigMap labels: Argo CD's own, so that a merge patch changes none")
    check.equal(cm["metadata"].get("annotations", {}).get("helm.sh/resource-policy"), "keep",
                "Argo CD ConfigMap survives helm uninstall")
    data = cm.get("data") or {}
    kinds = crd_kinds(CHART)
    check.that(bool(kinds), "the chart's CRDs name kiln.dev kinds")
    check.equal(sorted(data), sorted(HEALTH_KEY + k for k in kinds), "Argo CD ConfigMap keys: one per kiln.dev kind")
    for key, script in data.items():
        path = HEALTH_SCRIPTS / key.removeprefix(HEALTH_KEY) / "health.lua"
        check.that(path.is_file() and script == path.read_text(), f"Argo CD ConfigMap {key} is {path} as it is")


def policies_by_name(docs):
    return {d["metadata"]["name"]: d for d in objects_of(docs, "ValidatingAdmissionPolicy")}


def cel_list(policy, variable):
    """The value of a variable that holds a list literal (rendered as JSON)."""
    for v in policy.get("spec", {}).get("variables", []):
        if v.get("name") == variable:
            try:
                return json.loads(v["expression"])
            except ValueError:
                return f"not a list literal: {v['expression']}"
    return None


def expressions(policy):
    spec = policy.get("spec", {})
    out = [c["expression"] for c in spec.get("matchConditions", [])]
    out += [v["expression"] for v in spec.get("variables", [])]
    for v in spec.get("validations", []):
        out += [v.get("expression", ""), v.get("messageExpression", "")]
    return out


def check_policies(check, docs, fullname, expected, approval):
    """The ValidatingAdmissionPolicies and bindings: `expected` maps each
    policy name to (namespaceSelector, the allowed list it must hold, the
    resources it matches); `approval` is (approver group, operator user)."""
    policies = policies_by_name(docs)
    bindings = {d["metadata"]["name"]: d for d in objects_of(docs, "ValidatingAdmissionPolicyBinding")}
    check.equal(sorted(policies), sorted(expected), "ValidatingAdmissionPolicy names")
    check.equal(sorted(bindings), sorted(expected), "ValidatingAdmissionPolicyBinding names")
    for name, (selector, allowed, resources) in expected.items():
        policy, binding = policies.get(name, {}), bindings.get(name, {})
        spec, bspec = policy.get("spec", {}), binding.get("spec", {})
        for d in (policy, binding):
            check.equal(d.get("apiVersion"), "admissionregistration.k8s.io/v1", f"{d.get('kind')} {name} apiVersion")
        check.equal(spec.get("failurePolicy"), "Fail", f"policy {name} failurePolicy")
        check.that("paramKind" not in spec, f"policy {name} takes no params")
        rules = spec.get("matchConstraints", {}).get("resourceRules", [])
        check.equal([(r.get("apiGroups"), r.get("apiVersions"), sorted(r.get("operations", [])), sorted(r.get("resources", []))) for r in rules],
                    [(["kiln.dev"], ["v1alpha1"], ["CREATE", "UPDATE"], sorted(resources))], f"policy {name} resources")
        check.that(any("object.spec != oldObject.spec" in c.get("expression", "") for c in spec.get("matchConditions", [])),
                   f"policy {name} checks creates and spec changes only")
        validations = spec.get("validations", [])
        check.that(bool(validations) and all(v.get("expression") and v.get("messageExpression") for v in validations),
                   f"policy {name}: every validation has an expression and a messageExpression")
        check.that(all("has(" in e for e in expressions(policy) if "object.spec." in e),
                   f"policy {name}: expressions that read fields guard them with has()")
        if allowed is not None:
            check.equal(cel_list(policy, "allowed"), allowed, f"policy {name}: the allowed list")
        check.equal(bspec.get("policyName"), name, f"binding {name} policyName")
        check.equal(bspec.get("validationActions"), ["Deny"], f"binding {name} validationActions")
        check.equal(bspec.get("matchResources", {}).get("namespaceSelector"), selector, f"binding {name} namespaceSelector")
    group, operator = approval
    text = "\n".join(expressions(policies.get(f"{fullname}-model-approval", {})))
    check.that(f"{json.dumps(group)} in request.userInfo.groups" in text, f"model approval: members of {group} approve")
    check.that(f"request.userInfo.username == {json.dumps(operator)}" in text, f"model approval: the operator ({operator}) registers")
    check.that("object.spec.approval.status == 'Approved'" in text and "s.registerModel.approvalStatus == 'Approved'" in text,
               "model approval: ModelPackage spec.approval.status and Pipeline registerModel.approvalStatus")


POD_RESOURCES = ["trainingjobs", "tuningjobs", "endpoints", "pipelines"]
APPROVAL_RESOURCES = ["modelpackages", "pipelines"]


def check_integrations(check, docs, namespace):
    """The Argo CD health checks and the admission policies at their defaults."""
    check_argocd(check, docs, "argocd", "argocd-cm")
    check_policies(check, docs, "kiln", {"kiln-model-approval": ({}, None, APPROVAL_RESOURCES)},
                   ("kiln-approvers", f"system:serviceaccount:{namespace}:kiln"))


KILN_KINDS = {"TrainingJob", "TuningJob", "Endpoint", "Pipeline", "PipelineRun", "ModelPackage", "ModelPackageGroup"}


JSON_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


def typed_values(schema, path=""):
    """Yields (path, type, value) for every enum value and default in a schema.

    The API server reads YAML 1.1, where a plain Off, On, Yes or No is a
    boolean; PyYAML reads it the same way, so a string enum value or default
    written unquoted shows up here as a bool of the wrong type."""
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    for value in schema.get("enum", []):
        yield f"{path}.enum", kind, value
    if "default" in schema:
        yield f"{path}.default", kind, schema["default"]
    for name, sub in schema.get("properties", {}).items():
        yield from typed_values(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        yield from typed_values(schema.get(key), f"{path}[{key}]")


def check_crds(check, docs):
    """The chart ships the CRD of every Kiln kind (rendered with --include-crds)."""
    crds = objects_of(docs, "CustomResourceDefinition")
    check.equal({c["spec"]["names"]["kind"] for c in crds}, KILN_KINDS, "the chart's CRDs are the Kiln kinds")
    for crd in crds:
        spec, name = crd["spec"], crd["metadata"]["name"]
        check.equal(crd.get("apiVersion"), "apiextensions.k8s.io/v1", f"CRD {name} apiVersion")
        check.equal(spec.get("group"), "kiln.dev", f"CRD {name} group")
        check.equal(spec.get("scope"), "Namespaced", f"CRD {name} scope")
        check.that("kiln" in spec["names"].get("categories", []), f"CRD {name} is in the kiln category")
        versions = {v["name"]: v for v in spec.get("versions", [])}
        check.that("v1alpha1" in versions, f"CRD {name} serves v1alpha1")
        v = versions.get("v1alpha1", {})
        check.that(v.get("served") and v.get("storage"), f"CRD {name} v1alpha1 is served and stored")
        check.that("status" in v.get("subresources", {}), f"CRD {name} has the status subresource")
        schema = v.get("schema", {}).get("openAPIV3Schema", {})
        mistyped = [(p, t, val) for p, t, val in typed_values(schema)
                    if t in JSON_TYPES and val is not None and not isinstance(val, JSON_TYPES[t])]
        check.that(not mistyped, f"CRD {name}: enum values and defaults match their type as the API server "
                   f"reads them (quote YAML 1.1 booleans such as Off): {mistyped[:3]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("default", "full", "single", "integrations"), required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--app-version", default="0.1.0")
    parser.add_argument("--crds", action="store_true", help="the input holds the CRDs too (--include-crds)")
    args = parser.parse_args()

    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    check = Checks()
    if args.crds:
        check_crds(check, docs)
        docs = [d for d in docs if d.get("kind") != "CustomResourceDefinition"]
    deploy, pod = check_common(check, docs, args.namespace)
    if args.profile == "default":
        check_default(check, docs, deploy, pod, args.namespace, args.app_version)
    elif args.profile == "full":
        check_full(check, docs, deploy, pod, args.namespace)
    elif args.profile == "integrations":
        check_integrations(check, docs, args.namespace)
    else:
        check_single(check, docs, deploy, pod)

    for failure in check.failed:
        print(f"  FAIL {args.profile}: {failure}")
    print(f"  {args.profile}: {check.passed} checks passed, {len(check.failed)} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
