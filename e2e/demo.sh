#!/usr/bin/env bash
# Kiln's quickstart on the local cluster (which `make demo` has brought up,
# with the images loaded): install Kiln with Helm, then train the built-in
# linear learner on iris from the S3 store, register the model, approve it,
# deploy it behind an Endpoint and ask it for predictions, printing each
# step and ending with the commands a user types next.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tools/common.sh"
HELM=$("$HERE/tools/helm.sh")
KUBECTL="$("$HERE/tools/kubernetes.sh")/kubectl"
KUBECONFIG=$("$HERE/cluster.sh" kubeconfig)
export KUBECONFIG
CHART="$HERE/../charts/kiln"
[[ -f "$CHART/Chart.yaml" ]] || die "no Helm chart at charts/kiln"
NS=${KILN_DEMO_NAMESPACE:-kiln-demo}
k() { "$KUBECTL" "$@"; }
step() { printf '\n== %s\n' "$*"; }
show_and_apply() { # prints the manifest on stdin, then kubectl applies it
  local manifest
  manifest=$(cat)
  printf '%s\n' "$manifest"
  printf '%s\n' "$manifest" | k -n "$NS" apply -f -
}

# The demo's operator watches only its namespace, so the e2e suite's own
# operators (one per test namespace) never meet it on the same cluster.
step "1. Install Kiln: helm upgrade --install kiln charts/kiln (namespace kiln-system, watching $NS)"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
"$HELM" upgrade --install kiln "$CHART" --namespace kiln-system --create-namespace \
  --set image.tag=dev --set image.pullPolicy=Never --set operator.runtimeImage=kiln/runtime:dev \
  --set operator.watchNamespace="$NS" --wait --timeout 5m
k -n kiln-system get pods -o wide

step "2. The data: iris as CSV in the S3 store (label first, no header)"
secret() { k -n default get secret kiln-s3 -o "jsonpath={.data.$1}" | base64 -d; }
k -n default get secret kiln-s3 -o json \
  | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"apiVersion":"v1","kind":"Secret","metadata":{"name":"kiln-s3"},"data":s["data"]}))' \
  | k -n "$NS" apply -f - >/dev/null
BUCKET=$(secret S3_BUCKET)
PORT=$(secret AWS_ENDPOINT_URL | sed 's/.*://')
put() { # put FILE KEY: upload to the store from this machine
  curl -fsS --aws-sigv4 aws:amz:us-east-1:s3 --user "$(secret AWS_ACCESS_KEY_ID):$(secret AWS_SECRET_ACCESS_KEY)" \
    -T "$1" "http://127.0.0.1:$PORT/$BUCKET/$2" >/dev/null
}
DATA="$HERE/manifests/data/iris"
put "$DATA/train.csv" demo/iris/train/train.csv
put "$DATA/validation.csv" demo/iris/validation/validation.csv
echo "s3://$BUCKET/demo/iris/train/train.csv ($(wc -l <"$DATA/train.csv") rows), validation ($(wc -l <"$DATA/validation.csv") rows)"

step "3. Train: kubectl apply -f trainingjob.yaml (two data-parallel ranks)"
k -n "$NS" delete trainingjob iris --ignore-not-found --wait >/dev/null
show_and_apply <<YAML
apiVersion: kiln.dev/v1alpha1
kind: TrainingJob
metadata: {name: iris}
spec:
  algorithm: {name: linear-learner}
  hyperparameters: {predictor_type: multiclass_classifier, num_classes: "3", epochs: "20", mini_batch_size: "16"}
  inputs:
    - {name: train, contentType: text/csv, source: {uri: "s3://$BUCKET/demo/iris/train/", secretRef: {name: kiln-s3}}}
    - {name: validation, contentType: text/csv, source: {uri: "s3://$BUCKET/demo/iris/validation/", secretRef: {name: kiln-s3}}}
  output: {location: {uri: "s3://$BUCKET/demo/models/", secretRef: {name: kiln-s3}}}
  resources: {replicas: 2, compute: {cpu: 250m, memory: 512Mi}}
  distribution: {strategy: DataParallel}
  stoppingCondition: {maxRuntimeSeconds: 900}
YAML
k -n "$NS" wait --for=condition=Succeeded=True trainingjob/iris --timeout=10m \
  || { k -n "$NS" get trainingjob iris -o yaml; die "training did not succeed"; }
k -n "$NS" get trainingjob iris
MODEL=$(k -n "$NS" get trainingjob iris -o jsonpath='{.status.modelArtifactUri}')
ACCURACY=$(k -n "$NS" get trainingjob iris -o jsonpath='{.status.finalMetrics[?(@.name=="validation:accuracy")].value}')
echo "model: $MODEL"
echo "validation:accuracy: ${ACCURACY:-not reported}"

step "4. Register: a ModelPackage of the group iris-classifier, pending approval"
show_and_apply <<YAML
apiVersion: kiln.dev/v1alpha1
kind: ModelPackageGroup
metadata: {name: iris-classifier}
spec:
  description: classifies iris flowers from four measurements
---
apiVersion: kiln.dev/v1alpha1
kind: ModelPackage
metadata: {name: iris-v1}
spec:
  groupName: iris-classifier
  description: linear learner on iris
  inference:
    modelData: {uri: "$MODEL", secretRef: {name: kiln-s3}}
    algorithm: linear-learner
  source: {trainingJob: iris}
  approval: {status: PendingManualApproval}
YAML
# Numbered by its group, its artifact's SHA-256 recorded, its lineage copied.
k -n "$NS" wait --for=condition=Ready=True modelpackage/iris-v1 --timeout=3m \
  || { k -n "$NS" get modelpackage iris-v1 -o yaml; die "the model package was not registered"; }
k -n "$NS" get modelpackage iris-v1

step "5. Approve: kubectl patch modelpackage iris-v1 (approval.status Approved)"
k -n "$NS" patch modelpackage iris-v1 --type merge \
  -p '{"spec":{"approval":{"status":"Approved","approvedBy":"demo","description":"accuracy '"${ACCURACY:-n/a}"' on validation"}}}'

step "6. Deploy: an Endpoint serving the approved version behind the router"
show_and_apply <<YAML
apiVersion: kiln.dev/v1alpha1
kind: Endpoint
metadata: {name: iris}
spec:
  variants:
    - name: main
      model: {modelPackage: {name: iris-v1}}
      replicas: 1
      resources: {cpu: 100m, memory: 256Mi}
YAML
k -n "$NS" wait --for=condition=Ready=True endpoints.kiln.dev/iris --timeout=5m \
  || { k -n "$NS" get endpoints.kiln.dev iris -o yaml; die "the endpoint did not become ready"; }
k -n "$NS" get endpoints.kiln.dev iris

step "7. Predict: POST /invocations through kubectl port-forward"
LOCAL_PORT=${KILN_DEMO_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
k -n "$NS" port-forward svc/iris "$LOCAL_PORT:8080" >/dev/null 2>&1 &
FORWARD=$!
trap 'kill "$FORWARD" 2>/dev/null || true' EXIT
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:$LOCAL_PORT/ping" 2>/dev/null; do
  ((SECONDS < deadline)) || die "port-forward to svc/iris did not answer"
  kill -0 "$FORWARD" 2>/dev/null || die "kubectl port-forward exited"
  sleep 0.5
done
ROWS=$'5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n7.7,3.0,6.1,2.3'
echo "$ROWS"
echo "->"
curl -fsS -H 'Content-Type: text/csv' --data-binary "$ROWS" "http://127.0.0.1:$LOCAL_PORT/invocations"
echo

cat <<MSG

Kiln trained, registered, approved and deployed a model. Next:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get kiln -n $NS                       # every Kiln object
  $KUBECTL -n $NS describe endpoints.kiln.dev iris
  $KUBECTL -n $NS port-forward svc/iris 8080 &   # then:
  curl -H 'Content-Type: text/csv' --data-binary \$'5.1,3.5,1.4,0.2' localhost:8080/invocations
  $KUBECTL -n kiln-system logs deploy/kiln -f
Logs of the cluster: make cluster-logs; stop it: make cluster-down.
MSG
