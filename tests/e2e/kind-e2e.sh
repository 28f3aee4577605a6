#!/usr/bin/env bash
# The iris loop on a real cluster: kind, the mloop image, the dev overlay, the kubernetes executor.
# Needs Docker (a running engine) and kind; says what is missing otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v docker >/dev/null || missing+=("docker")
command -v kind >/dev/null || missing+=("kind")
if [ ${#missing[@]} -eq 0 ] && ! docker info >/dev/null 2>&1; then missing+=("a running Docker engine"); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind-e2e needs: ${missing[*]} (plus kubectl, installed by 'make .venv/.installed')" >&2
  exit 1
fi
KUBECTL=${KUBECTL:-.venv/bin/kubectl}
CLUSTER=${MLOOP_KIND_CLUSTER:-mloop-e2e}
NS=mloop-e2e
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
docker build -t mloop:dev .
kind load docker-image mloop:dev --name "$CLUSTER"
export KUBECONFIG=${KUBECONFIG:-$(mktemp)}
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"
$KUBECTL apply -k manifests/overlays/dev
$KUBECTL -n mloop-system rollout status deploy/mloop-s3 --timeout=180s
$KUBECTL -n mloop-system rollout status deploy/mloop-operator --timeout=180s
$KUBECTL create namespace "$NS" --dry-run=client -o yaml | $KUBECTL apply -f -
# Task and server pods read the S3 keys from a Secret in their own namespace.
$KUBECTL -n mloop-system get secret mloop-s3 -o json \
  | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"apiVersion":"v1","kind":"Secret","metadata":{"name":"mloop-s3"},"type":"Opaque","data":s["data"]}))' \
  | $KUBECTL -n "$NS" apply -f -
$KUBECTL -n "$NS" apply -f examples/iris/
$KUBECTL -n "$NS" wait --for=condition=Ready dataset/iris --timeout=300s
$KUBECTL -n "$NS" wait --for=condition=Succeeded trainingrun/iris-rf --timeout=600s
$KUBECTL -n "$NS" wait --for=condition=Serving modelpackage/iris-rf-1 --timeout=600s
$KUBECTL -n "$NS" port-forward svc/iris-production 18000:80 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
sleep 3
curl -fsS -XPOST localhost:18000/predict -H 'Content-Type: application/json' \
  -d '{"instances":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}'
echo
$KUBECTL -n "$NS" get mloop
echo "kind-e2e: the iris loop runs on $CLUSTER (delete it with: kind delete cluster --name $CLUSTER)"
