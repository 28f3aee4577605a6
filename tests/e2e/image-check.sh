#!/usr/bin/env bash
# Build the one image and run the iris loop with the operator *inside* it, restricted as in a pod
# (uid 10001, read-only root, all capabilities dropped, no privilege escalation), against the local
# control plane of `mloop dev up`: first with the local executor (tasks and the model server run in the
# operator's container), then tests/e2e/test_image.py with the kubernetes executor (every Job's pod runs
# from the image with the pod's own security context).
# Needs a container engine (docker, or podman) that can build and run; says what is missing otherwise.
#   ENGINE=podman ENGINE_FLAGS="--runtime runc" RUN_FLAGS="--ulimit nofile=20000:20000" make image-check
# Where no registry is reachable, tag local stand-ins of the base images (python:3.11-slim-bookworm,
# golang:1.26-bookworm) and pass BUILD_FLAGS=--pull=never.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE=${ENGINE:-$(command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)}
if ! command -v "$ENGINE" >/dev/null; then
  echo "image-check needs a container engine: docker with a running engine, or podman" >&2
  exit 1
fi
read -r -a engine <<< "$ENGINE ${ENGINE_FLAGS:-}"
read -r -a extra <<< "${RUN_FLAGS:-}"
IMAGE=${MLOOP_IMAGE_TAG:-localhost/mloop:dev}
NS=image-check
NAME=mloop-image-check
BIN=.venv/bin

"${engine[@]}" build ${BUILD_FLAGS:-} -t "$IMAGE" .
restricted=(--network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges "${extra[@]}")

# What the image holds, as the restricted user: every entry point imports, the root is read-only.
"${engine[@]}" run --rm "${restricted[@]}" "$IMAGE" sh -ec '
  test "$(id -u)" = 10001
  python -c "import mloop.handlers, mloop.serving.server, mloop.workloads.ingest, mloop.workloads.train, mloop.workloads.package"
  mloop --help >/dev/null; kubectl-mloop --help >/dev/null; dot -V 2>/dev/null; versitygw --version >/dev/null
  if touch /app/written 2>/dev/null; then echo "the root filesystem is writable" >&2; exit 1; fi'

$BIN/mloop dev up
eval "$($BIN/mloop dev env)"
kubeconfig=$(mktemp)
cp "$KUBECONFIG" "$kubeconfig" && chmod 644 "$kubeconfig"
cleanup() {
  status=$?
  [ "$status" -eq 0 ] || "${engine[@]}" logs "$NAME" 2>&1 | tail -40 || true
  "${engine[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  $BIN/kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -f "$kubeconfig"
  $BIN/mloop dev down >/dev/null 2>&1 || true
  return "$status"
}
trap cleanup EXIT
"${engine[@]}" run -d --name "$NAME" "${restricted[@]}" -v "$kubeconfig:/kube/config:ro" \
  -e KUBECONFIG=/kube/config -e MLOOP_S3_ENDPOINT -e MLOOP_BUCKET -e MLOOP_S3_ACCESS_KEY -e MLOOP_S3_SECRET_KEY \
  -e MLOOP_EXECUTOR=local -e MLOOP_LOCAL_DIR=/tmp/local -e MLOOP_LIVENESS_PORT=0 "$IMAGE" >/dev/null
$BIN/kubectl create namespace "$NS" --dry-run=client -o yaml | $BIN/kubectl apply -f -
$BIN/kubectl -n "$NS" apply -f examples/iris/requirement.yaml -f examples/iris/dataset.yaml \
  -f examples/iris/trainingrun.yaml -f examples/iris/modelpackage.yaml
$BIN/kubectl -n "$NS" wait --for=condition=Ready dataset/iris --timeout=300s
$BIN/kubectl -n "$NS" wait --for=condition=Succeeded trainingrun/iris-rf --timeout=600s
$BIN/kubectl -n "$NS" wait --for=condition=Serving modelpackage/iris-rf-1 --timeout=300s
endpoint=$($BIN/kubectl -n "$NS" get modelpackage iris-rf-1 -o jsonpath='{.status.endpoint}')
curl -fsS -XPOST "$endpoint/predict" -H 'Content-Type: application/json' \
  -d '{"instances":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}'
echo
$BIN/kubectl -n "$NS" get mloop
"${engine[@]}" rm -f "$NAME" >/dev/null
MLOOP_E2E_ENGINE="${engine[*]}" MLOOP_E2E_RUN_FLAGS="${RUN_FLAGS:-}" MLOOP_E2E_IMAGE="$IMAGE" \
  $BIN/python -m pytest tests/e2e/test_image.py -q -p no:cacheprovider
echo "image-check: $IMAGE ran the iris loop as uid 10001 with a read-only root and no capabilities," \
  "with the local and the kubernetes executor"
