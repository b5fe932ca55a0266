#!/usr/bin/env bash
# Installs Kiln with Helm into the local cluster (which `make demo` has
# brought up, with the images loaded) and says how to reach it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/tools/common.sh"
HELM=$("$HERE/tools/helm.sh")
KUBECTL="$("$HERE/tools/kubernetes.sh")/kubectl"
KUBECONFIG=$("$HERE/cluster.sh" kubeconfig)
export KUBECONFIG
CHART="$HERE/../charts/kiln"
[[ -f "$CHART/Chart.yaml" ]] || die "no Helm chart at charts/kiln"
docker_tag=dev
log "helm upgrade --install kiln charts/kiln (namespace kiln-system, image kiln/operator:$docker_tag)"
"$HELM" upgrade --install kiln "$CHART" --namespace kiln-system --create-namespace \
  --set "image.tag=$docker_tag" --set image.pullPolicy=Never --wait --timeout 5m
"$KUBECTL" -n kiln-system get pods -o wide
cat <<MSG

Kiln runs in the local cluster.
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get nodes -L kiln.dev/pool
  $KUBECTL -n kiln-system logs deploy/kiln -f
  $KUBECTL -n kiln-system port-forward svc/kiln-metrics 8080   # then curl localhost:8080/metrics
S3 store: the Secret kiln-s3 in default and kiln-system holds the endpoint and keys.
Logs of the cluster: make cluster-logs; stop it: make cluster-down.
MSG
