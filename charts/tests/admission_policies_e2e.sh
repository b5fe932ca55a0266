#!/usr/bin/env bash
# The chart's sample ValidatingAdmissionPolicies (admissionPolicies in
# values.yaml) against a real API server:
#
#   KUBECONFIG=/path/to/admin.kubeconfig charts/tests/admission_policies_e2e.sh
#
# Renders the policies with `helm template` (release kiln-e2e, so they never
# collide with an installed release's), applies them, and sends kiln.dev
# objects with `kubectl apply --dry-run=server`, as users impersonated with
# --as/--as-group: a non-approver is refused an Approved ModelPackage (created
# or changed to Approved) and a Pipeline registering Approved versions, an
# approver is not; a disallowed ServiceAccount or toleration is refused on a
# TrainingJob, a TuningJob, an Endpoint and a Pipeline's processing step, an
# allowed one is not; a namespace the selectors leave out is not checked.
# Nothing it sends persists: two namespaces of its own (with a Role for the
# impersonated users and one ModelPackage to update), the policies and
# bindings, and the CRDs if it had to install them, are deleted on exit.
#
# Needs: a cluster of Kubernetes 1.30 or newer, an admin KUBECONFIG (it may
# impersonate), kubectl (KUBECTL, else kubectl on PATH, else the local
# cluster's build in the cache) and helm (e2e/tools/helm.sh). Prints one line
# per case and a closing count; exits 1 when any case failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source e2e/tools/common.sh

[[ -n "${KUBECONFIG:-}" && -r "${KUBECONFIG%%:*}" ]] || die "set KUBECONFIG to the admin kubeconfig of the cluster to test"
if [[ -z "${KUBECTL:-}" ]]; then
  KUBECTL=$(command -v kubectl || true)
  if [[ -z "$KUBECTL" ]]; then
    for candidate in "$KILN_CACHE"/bin/kubernetes-*/kubectl; do
      [[ -x "$candidate" ]] && KUBECTL=$candidate
    done
  fi
fi
[[ -n "${KUBECTL:-}" ]] || die "no kubectl: set KUBECTL or put kubectl on PATH"
HELM=$(e2e/tools/helm.sh)

RELEASE=kiln-e2e
SUFFIX=$(date +%s)-$$
NS=kiln-admission-e2e-$SUFFIX          # selected by every binding
OTHER=kiln-admission-e2e-other-$SUFFIX # selected by none
SELECTOR_LABEL=kiln.dev/admission-e2e
APPROVERS=kiln-e2e-approvers
USERS=kiln-e2e-users                   # every impersonated user; the Role binds it
APPROVER=(--as=alice@example.test "--as-group=$APPROVERS" "--as-group=$USERS")
MEMBER=(--as=bob@example.test "--as-group=$USERS")

WORK=$(mktemp -d)
created_crds=false
cleanup() {
  set +e
  "$KUBECTL" delete --ignore-not-found --wait=false -f "$WORK/policies.yaml" >/dev/null 2>&1
  "$KUBECTL" delete namespace --ignore-not-found --wait=false "$NS" "$OTHER" >/dev/null 2>&1
  if [[ $created_crds == true ]]; then
    "$KUBECTL" delete --ignore-not-found --wait=false -f charts/kiln/crds/ >/dev/null 2>&1
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

kubectl_() { "$KUBECTL" "$@"; }

# --- setup --------------------------------------------------------------------
cat >"$WORK/values.yaml" <<EOF
admissionPolicies:
  enabled: true
  serviceAccounts:
    - name: e2e
      namespaceSelector:
        matchLabels: {"$SELECTOR_LABEL": "true"}
      allowed: [default, trainer]
  tolerations:
    - name: e2e
      namespaceSelector:
        matchLabels: {"$SELECTOR_LABEL": "true"}
      allowedKeys: [nvidia.com/gpu]
  modelApproval:
    enabled: true
    approverGroup: $APPROVERS
    namespaceSelector:
      matchLabels: {"$SELECTOR_LABEL": "true"}
EOF
"$HELM" template "$RELEASE" charts/kiln --namespace kiln-system --kube-version 1.36.0 \
  -f "$WORK/values.yaml" --show-only templates/admission-policies.yaml >"$WORK/policies.yaml"

if ! kubectl_ get crd trainingjobs.kiln.dev modelpackages.kiln.dev >/dev/null 2>&1; then
  log "installing the kiln.dev CRDs (removed again on exit)"
  created_crds=true
  kubectl_ apply --server-side -f charts/kiln/crds/ >/dev/null
  kubectl_ wait --for=condition=Established --timeout=60s -f charts/kiln/crds/ >/dev/null
fi

for ns in "$NS" "$OTHER"; do
  kubectl_ create namespace "$ns" >/dev/null
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: kiln-e2e-writer, namespace: $ns}
rules:
  - apiGroups: [kiln.dev]
    resources: [trainingjobs, tuningjobs, endpoints, pipelines, modelpackages]
    verbs: [get, list, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: kiln-e2e-writer, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kiln-e2e-writer}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: $USERS}
EOF
done
kubectl_ label namespace "$NS" "$SELECTOR_LABEL=true" >/dev/null
kubectl_ apply --server-side -f "$WORK/policies.yaml" >/dev/null

# --- manifests ----------------------------------------------------------------
model_package() { # NAME APPROVAL
  cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: ModelPackage
metadata: {name: $1}
spec:
  groupName: churn
  inference:
    modelData: {uri: "s3://models/churn/v1/model.tar.gz"}
    algorithm: linear-learner
  approval: {status: $2}
EOF
}

placement() { # SERVICE-ACCOUNT|- TOLERATION-KEY|-|none INDENT: a placement's body
  local pad
  pad=$(printf '%*s' "$3" '')
  [[ $1 == - ]] || printf '%sserviceAccountName: %s\n' "$pad" "$1"
  case $2 in
    -) ;;
    none) printf '%stolerations:\n%s  - {operator: Exists}\n' "$pad" "$pad" ;;
    *) printf '%stolerations:\n%s  - {key: "%s", operator: Exists, effect: NoSchedule}\n' "$pad" "$pad" "$2" ;;
  esac
}

training_job() { # SERVICE-ACCOUNT|- TOLERATION-KEY|-|none
  cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: TrainingJob
metadata: {name: e2e-train}
spec:
  algorithm: {name: linear-learner}
  output:
    location: {uri: "s3://models/e2e/"}
  resources:
    replicas: 1
    placement:
      podLabels: {team: e2e}
$(placement "$1" "$2" 6)
EOF
}

tuning_job() { # SERVICE-ACCOUNT|-
  cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: TuningJob
metadata: {name: e2e-tune}
spec:
  strategy: {type: Random}
  objective: {metricName: "validation:accuracy", type: Maximize}
  parameterRanges:
    integer:
      - {name: epochs, min: 1, max: 10}
  trainingJobTemplate:
    spec:
      algorithm: {name: linear-learner}
      output:
        location: {uri: "s3://models/e2e-tune/"}
      resources:
        placement:
          podLabels: {team: e2e}
$(placement "$1" - 10)
EOF
}

endpoint() { # SERVICE-ACCOUNT-OF-THE-SECOND-VARIANT|-
  cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: Endpoint
metadata: {name: e2e-serve}
spec:
  variants:
    - name: primary
      model:
        modelData: {uri: "s3://models/e2e/model.tar.gz"}
        algorithm: linear-learner
      placement: {serviceAccountName: trainer}
    - name: candidate
      initialWeight: 0
      model:
        modelData: {uri: "s3://models/e2e/model.tar.gz"}
        algorithm: linear-learner
      placement:
        podLabels: {team: e2e}
$(placement "$1" - 8)
EOF
}

pipeline() { # PROCESSING-SERVICE-ACCOUNT|- REGISTER-APPROVAL
  cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: Pipeline
metadata: {name: e2e-pipeline}
spec:
  steps:
    - name: prep
      processing:
        image: kiln/runtime:dev
        args: [prepare]
        placement:
          podLabels: {team: e2e}
$(placement "$1" - 10)
    - name: train
      dependsOn: [prep]
      training:
        spec:
          algorithm: {name: linear-learner}
          output:
            location: {uri: "s3://models/e2e-pipeline/"}
    - name: register
      registerModel: {groupName: churn, modelFromStep: train, approvalStatus: $2}
EOF
}

# --- cases --------------------------------------------------------------------
# Each case reads its manifest from a pipe: the counters must live in this
# shell, not in the subshell a pipeline's last command would otherwise get.
shopt -s lastpipe
passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
not_ok() {
  failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"
  [[ -s "$WORK/out" ]] && sed 's/^/      /' "$WORK/out" | head -n 20
  return 0
}

# dry_run NAMESPACE USER-ARGS... < manifest: a server-side dry run as that user.
dry_run() {
  local ns=$1; shift
  kubectl_ "$@" --namespace "$ns" apply --dry-run=server -f - >"$WORK/out" 2>&1
}

# allowed NAME NAMESPACE USER-ARGS... < manifest
allowed() {
  local name=$1; shift
  if dry_run "$@"; then ok "allowed: $name"; else not_ok "allowed: $name (it was refused)"; fi
}

# refused NAME EXPECT NAMESPACE USER-ARGS... < manifest: refused by a kiln-e2e
# policy, with a message holding EXPECT.
refused() {
  local name=$1 expect=$2; shift 2
  if dry_run "$@"; then
    not_ok "refused: $name (it was allowed)"
  elif grep -q "ValidatingAdmissionPolicy '$RELEASE-" "$WORK/out" && grep -qF -- "$expect" "$WORK/out"; then
    ok "refused: $name"
  else
    not_ok "refused: $name (refused, but not by a $RELEASE policy with a message holding '$expect')"
  fi
}

# A new policy takes effect once the API server's informer has it: wait until
# the first refusal arrives (at most a minute).
for _ in $(seq 60); do
  if ! model_package e2e-wait Approved | dry_run "$NS" "${MEMBER[@]}" \
      && grep -q "ValidatingAdmissionPolicy '$RELEASE-model-approval" "$WORK/out"; then
    break
  fi
  sleep 1
done

# Model approval.
model_package mp-approved Approved | refused "a non-approver creates an Approved ModelPackage" \
  "only members of the group $APPROVERS" "$NS" "${MEMBER[@]}"
model_package mp-approved Approved | allowed "an approver creates an Approved ModelPackage" "$NS" "${APPROVER[@]}"
model_package mp-pending PendingManualApproval | allowed "a non-approver creates a PendingManualApproval ModelPackage" \
  "$NS" "${MEMBER[@]}"
# Changing to Approved is an UPDATE: that needs a stored object, kept in the
# test's own namespace and deleted with it.
model_package mp-existing PendingManualApproval | kubectl_ --namespace "$NS" apply -f - >/dev/null
model_package mp-existing Approved | refused "a non-approver changes a ModelPackage to Approved" \
  "only members of the group $APPROVERS" "$NS" "${MEMBER[@]}"
model_package mp-existing Approved | allowed "an approver changes a ModelPackage to Approved" "$NS" "${APPROVER[@]}"
model_package mp-approved Approved | allowed "a non-approver creates an Approved ModelPackage where no binding selects the namespace" \
  "$OTHER" "${MEMBER[@]}"
pipeline - Approved | refused "a non-approver creates a Pipeline that registers Approved versions" \
  "registerModel.approvalStatus" "$NS" "${MEMBER[@]}"
pipeline - Approved | allowed "an approver creates a Pipeline that registers Approved versions" "$NS" "${APPROVER[@]}"

# ServiceAccounts.
training_job admin - | refused "a TrainingJob running as a ServiceAccount not allowed (admin)" \
  "may run as the ServiceAccounts default, trainer only" "$NS" "${MEMBER[@]}"
training_job trainer - | allowed "a TrainingJob running as an allowed ServiceAccount (trainer)" "$NS" "${MEMBER[@]}"
training_job - - | allowed "a TrainingJob naming no ServiceAccount (default, which is allowed)" "$NS" "${MEMBER[@]}"
training_job admin - | allowed "a TrainingJob running as admin where no binding selects the namespace" "$OTHER" "${MEMBER[@]}"
tuning_job admin | refused "a TuningJob whose trials run as admin" \
  "spec.trainingJobTemplate.spec.resources.placement" "$NS" "${MEMBER[@]}"
endpoint admin | refused "an Endpoint with a variant running as admin" "runs pods as admin" "$NS" "${MEMBER[@]}"
endpoint - | allowed "an Endpoint whose variants run as trainer and default" "$NS" "${MEMBER[@]}"
pipeline admin PendingManualApproval | refused "a Pipeline whose processing step runs as admin" \
  "spec.steps[].processing.placement" "$NS" "${MEMBER[@]}"
pipeline - PendingManualApproval | allowed "a Pipeline that names no ServiceAccount and registers versions pending approval" \
  "$NS" "${MEMBER[@]}"

# Tolerations.
training_job - node-role.kubernetes.io/control-plane | refused "a TrainingJob tolerating a taint key not allowed" \
  "tolerates node-role.kubernetes.io/control-plane" "$NS" "${MEMBER[@]}"
training_job - none | refused "a TrainingJob with a toleration without a key" \
  "without a key" "$NS" "${MEMBER[@]}"
training_job - nvidia.com/gpu | allowed "a TrainingJob tolerating an allowed taint key (nvidia.com/gpu)" "$NS" "${MEMBER[@]}"

printf 'admission policies e2e: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
