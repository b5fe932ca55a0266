#!/usr/bin/env bash
# Tests of the Kiln chart, without a cluster (`make test-chart`):
#   1. `helm lint --strict` with the default values and each values file in values/;
#   2. `helm template` of each profile, checked by check_manifests.py (security
#      settings, probes, least-privilege RBAC, selectors, every option's effect);
#   3. bad values and bad combinations, each of which must be refused with a
#      message naming the value: a case that renders counts as a failure;
#   4. the Argo CD health checks of the kiln.dev kinds, run by Lua 5.1 on their
#      test cases (argocd_health.py; the rendered ConfigMap of them is checked
#      with the full and integrations profiles).
# Prints one line per case and a closing count; exits 1 when any case failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source e2e/tools/common.sh

CHART=charts/kiln
TESTS=charts/tests
NAMESPACE=kiln-system
# helm template pretends to talk to an old Kubernetes unless told otherwise;
# the chart's kubeVersion (>=1.30) refuses that.
KUBE_VERSION=1.36.0
HELM=$(e2e/tools/helm.sh)
# PyYAML reads the rendered manifests: the first python3 on PATH if it has
# it, else Debian's python3 with Debian's python3-yaml (which a python3 from
# elsewhere, e.g. pyenv, does not see). The package has no command of its own
# for apt_ensure to look for, hence the name of one that never exists.
PY=python3
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  apt_ensure kiln-no-such-command python3-yaml
  PY=/usr/bin/python3
fi
# The Argo CD health checks run under Debian's Lua 5.1 (lua5.1 and luac5.1),
# the language version of the gopher-lua Argo CD embeds.
apt_ensure lua5.1 lua5.1
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
not_ok() {
  failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"
  [[ -s "$WORK/out" ]] && sed 's/^/      /' "$WORK/out" | head -n 40
  return 0
}

render() { # render VALUES-ARGS... > manifests
  "$HELM" template kiln "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@"
}

# --- 1. lint -----------------------------------------------------------------
for values in "" "$TESTS"/values/*.yaml; do
  name="helm lint --strict${values:+ -f $values}"
  if "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
      ${values:+-f "$values"} >"$WORK/out" 2>&1; then ok "$name"; else not_ok "$name"; fi
done

# --- 2. rendered manifests ---------------------------------------------------
for profile in default full single integrations; do
  # The default install is rendered with the CRDs, as `helm install` applies them.
  args=(--include-crds) check_args=(--crds)
  [[ $profile == default ]] || { args=(-f "$TESTS/values/$profile.yaml"); check_args=(); }
  name="helm template ($profile values) passes check_manifests.py"
  if render "${args[@]}" >"$WORK/$profile.yaml" 2>"$WORK/out" \
      && "$PY" "$TESTS/check_manifests.py" --profile "$profile" --namespace "$NAMESPACE" \
           --app-version "$APP_VERSION" "${check_args[@]}" <"$WORK/$profile.yaml" >"$WORK/out" 2>&1; then
    ok "$name"; tail -n 1 "$WORK/out"
  else
    not_ok "$name"
  fi
done

# The Argo CD health check of every kiln.dev kind, run on its test cases by
# a real Lua 5.1 in Argo CD's sandbox (argocd_health.py).
name="Argo CD health checks pass their health_test.yaml cases under lua5.1"
if "$PY" "$TESTS/argocd_health.py" --chart "$CHART" >"$WORK/out" 2>&1; then
  ok "$name"; tail -n 1 "$WORK/out"
else
  grep -v '^ok' "$WORK/out" >"$WORK/out.failed" || true; mv "$WORK/out.failed" "$WORK/out"
  not_ok "$name"
fi

# The default image tag (appVersion) is the one images/build.sh gives the
# operator image: the workspace version.
name="appVersion ($APP_VERSION) is the workspace version"
WORKSPACE_VERSION=$(awk '/^\[/ { p = ($0 == "[workspace.package]") } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
if [[ "$APP_VERSION" == "$WORKSPACE_VERSION" ]]; then ok "$name"; else echo "Cargo.toml: $WORKSPACE_VERSION" >"$WORK/out"; not_ok "$name"; fi

# The chart installs on the Kubernetes versions it claims and no older one.
name="kubeVersion: Kubernetes 1.29 is refused"
if "$HELM" template kiln "$CHART" --kube-version 1.29.0 >/dev/null 2>"$WORK/out" ; then
  not_ok "$name (it rendered)"
elif grep -q 'kubeVersion' "$WORK/out"; then ok "$name"; else not_ok "$name (other error)"; fi

# The checker itself must notice a weakened pod: each case renders, and
# check_manifests.py has to fail on it.
caught() {
  local name="check_manifests.py catches: $*"
  if ! render "$@" >"$WORK/weak.yaml" 2>"$WORK/out"; then
    not_ok "$name: it did not render"
  elif "$PY" "$TESTS/check_manifests.py" --profile default --namespace "$NAMESPACE" \
      --app-version "$APP_VERSION" <"$WORK/weak.yaml" >"$WORK/out" 2>&1; then
    not_ok "$name: it passed"
  else
    ok "$name"
  fi
}
caught --set securityContext.readOnlyRootFilesystem=false
caught --set securityContext.allowPrivilegeEscalation=true
caught --set podSecurityContext.runAsUser=0
caught --set 'securityContext.capabilities.drop=null'
caught --set resources.limits=null
# ... and a wrong Argo CD ConfigMap or admission policy in the full profile.
caught_full() {
  local name="check_manifests.py --profile full catches: $*"
  if ! render -f "$TESTS/values/full.yaml" "$@" >"$WORK/weak.yaml" 2>"$WORK/out"; then
    not_ok "$name: it did not render"
  elif "$PY" "$TESTS/check_manifests.py" --profile full --namespace "$NAMESPACE" \
      --app-version "$APP_VERSION" <"$WORK/weak.yaml" >"$WORK/out" 2>&1; then
    not_ok "$name: it passed"
  else
    ok "$name"
  fi
}
caught_full --set argocd.healthChecks.enabled=false
caught_full --set argocd.namespace=argocd
caught_full --set admissionPolicies.modelApproval.approverGroup=system:authenticated
caught_full --set 'admissionPolicies.serviceAccounts[0].allowed={default,trainer,admin}'
caught_full --set-json 'admissionPolicies.tolerations[0].namespaceSelector={}'
caught_full --set admissionPolicies.modelApproval.enabled=false

# --- 3. values that must be refused ------------------------------------------
# Each case: the --set arguments, then a text the error must contain (the path
# of the bad value, or the template's own message).
refused() {
  local expect=$1; shift
  local name="refused: $* (message mentions '$expect')"
  if render "$@" >/dev/null 2>"$WORK/out"; then
    not_ok "$name: it rendered"
  elif grep -qF -- "$expect" "$WORK/out"; then
    ok "$name"
  else
    not_ok "$name: wrong message"
  fi
}
refused "/replicaCount"                      --set replicaCount=-1
refused "/replicaCount"                      --set replicaCount=two
refused "/operator/logFormat"                --set operator.logFormat=xml
refused "/operator/logLevel"                 --set-string operator.logLevel=
refused "/operator/watchNamespace"           --set operator.watchNamespace=Not_A_Namespace
refused "/operator/leaderElection/leaseName" --set operator.leaderElection.leaseName=Bad_Name
refused "/image/pullPolicy"                  --set image.pullPolicy=Sometimes
refused "/image/digest"                      --set image.digest=sha256:abc
refused "/image/tag"                         --set "image.tag=bad tag"
refused "/metrics/port"                      --set metrics.port=70000
refused "/health/port"                       --set health.port=0
refused "/metrics/service/type"              --set metrics.service.type=ExternalName
refused "/metrics/serviceMonitor/interval"   --set metrics.serviceMonitor.interval=soon
refused "/podDisruptionBudget/minAvailable"  --set podDisruptionBudget.minAvailable=lots
refused "/livenessProbe/periodSeconds"       --set livenessProbe.periodSeconds=0
refused "/resources/limits/memory"           --set resources.limits.memory=lots
refused "/topologySpread/maxSkew"            --set topologySpread.maxSkew=0
refused "/terminationGracePeriodSeconds"     --set terminationGracePeriodSeconds=-5
refused "additional properties 'replicas'"   --set replicas=2
refused "additional properties 'logFormat'"  --set logFormat=json
refused "additional properties 'lease'"     --set operator.leaderElection.lease=x
refused "operator.leaderElection.enabled is false" \
  --set replicaCount=2 --set operator.leaderElection.enabled=false
refused "serviceAccount.name must name an existing ServiceAccount" \
  --set serviceAccount.create=false
refused "metrics.serviceMonitor.enabled needs metrics.service.enabled" \
  --set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false
refused "they must differ"                   --set health.port=8080
refused "set either minAvailable or maxUnavailable" \
  --set podDisruptionBudget.enabled=true --set podDisruptionBudget.maxUnavailable=1
refused "needs minAvailable or maxUnavailable" \
  --set podDisruptionBudget.enabled=true --set podDisruptionBudget.minAvailable=null

refused "/argocd/namespace"                 --set argocd.namespace=Argo_CD
refused "/argocd/configMapName"             --set-string argocd.configMapName=
refused "additional properties 'enable'"    --set argocd.healthChecks.enable=true
refused "/admissionPolicies/enabled"        --set admissionPolicies.enabled=yes-please
refused "/admissionPolicies/modelApproval/approverGroup" --set-string admissionPolicies.modelApproval.approverGroup=
refused "/admissionPolicies/modelApproval/approverGroup" --set "admissionPolicies.modelApproval.approverGroup=ml approvers"
refused "/admissionPolicies/serviceAccounts/0/name" \
  --set-json 'admissionPolicies.serviceAccounts=[{"name":"ML_Teams","namespaceSelector":{},"allowed":["default"]}]'
refused "/admissionPolicies/serviceAccounts/0/allowed/0" \
  --set-json 'admissionPolicies.serviceAccounts=[{"name":"ml","namespaceSelector":{},"allowed":["Not A Name"]}]'
refused "/admissionPolicies/serviceAccounts/0" \
  --set-json 'admissionPolicies.serviceAccounts=[{"name":"ml","namespaceSelector":{}}]'
refused "/admissionPolicies/tolerations/0/allowedKeys/0" \
  --set-json 'admissionPolicies.tolerations=[{"name":"gpu","namespaceSelector":{},"allowedKeys":["bad key"]}]'
refused "/admissionPolicies/tolerations/0/namespaceSelector/matchExpressions/0/operator" \
  --set-json 'admissionPolicies.tolerations=[{"name":"gpu","namespaceSelector":{"matchExpressions":[{"key":"team","operator":"Is"}]},"allowedKeys":[]}]'
refused "admissionPolicies.serviceAccounts: two entries are named ml" --set admissionPolicies.enabled=true \
  --set-json 'admissionPolicies.serviceAccounts=[{"name":"ml","namespaceSelector":{},"allowed":["a"]},{"name":"ml","namespaceSelector":{},"allowed":["b"]}]'

printf 'test-chart: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
