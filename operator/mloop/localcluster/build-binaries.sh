#!/usr/bin/env bash
# Builds the local control plane from Go modules, once, into
# $XDG_CACHE_HOME/mloop/bin/<versions>/ and prints that directory.
# No binary is downloaded: everything comes from the Go module proxy.
set -euo pipefail

K8S_VERSION=${MLOOP_K8S_VERSION:-v1.35.4}
ETCD_VERSION=${MLOOP_ETCD_VERSION:-v3.6.16}
VERSITYGW_VERSION=${MLOOP_VERSITYGW_VERSION:-v1.8.0}
RUNC_VERSION=${MLOOP_RUNC_VERSION:-v1.3.3}

cache=${XDG_CACHE_HOME:-$HOME/.cache}/mloop
out=$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-versitygw-$VERSITYGW_VERSION
work=$cache/build
mkdir -p "$out" "$work"
log() { echo "build-binaries: $*" >&2; }

# Staging modules are published as k8s.io/<name> v0.<minor>.<patch>.
staging_version=v0.${K8S_VERSION#v1.}

wrapper() { # dir module-path requirement...
  local dir=$1 mod=$2; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init "$mod" >/dev/null 2>&1 && for req in "$@"; do go mod edit -require="$req"; done)
}

build_kube() { # command...
  local dir=$work/kubernetes-$K8S_VERSION
  if [ ! -f "$dir/.ready" ]; then
    log "preparing kubernetes $K8S_VERSION wrapper module"
    wrapper "$dir" mloop.local/kube k8s.io/kubernetes@"$K8S_VERSION"
    local gomod
    gomod=$(cd "$dir" && go mod download -json k8s.io/kubernetes@"$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # k8s.io/kubernetes replaces each staging module with a local path; point them at the published modules.
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r m; do
      (cd "$dir" && go mod edit -replace="$m=$m@$staging_version")
    done
    touch "$dir/.ready"
  fi
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  for cmd in "$@"; do
    if [ ! -x "$out/$cmd" ]; then
      log "building $cmd $K8S_VERSION (several minutes on a cold cache)"
      (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
      mv "$out/$cmd.tmp" "$out/$cmd"
    fi
  done
}

build_etcd() {
  [ -x "$out/etcd" ] && return
  local dir=$work/etcd-$ETCD_VERSION
  log "building etcd $ETCD_VERSION"
  wrapper "$dir" mloop.local/etcd go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
}

build_versitygw() {
  [ -x "$out/versitygw" ] && return
  local dir=$work/versitygw-$VERSITYGW_VERSION
  log "building versitygw $VERSITYGW_VERSION"
  wrapper "$dir" mloop.local/versitygw github.com/versity/versitygw@"$VERSITYGW_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/versitygw.tmp" github.com/versity/versitygw/cmd/versitygw)
  mv "$out/versitygw.tmp" "$out/versitygw"
}

# runc for the test-bed node: Debian's 1.1.5 is too old for the kubelet's restricted pods, and
# seccomp needs cgo with libseccomp (Debian: libseccomp-dev, pkg-config).
build_runc() {
  [ -x "$out/runc" ] && return
  pkg-config --exists libseccomp || { log "runc needs libseccomp-dev and pkg-config"; return 1; }
  local dir=$work/runc-$RUNC_VERSION
  log "building runc $RUNC_VERSION (cgo, seccomp)"
  wrapper "$dir" mloop.local/runc github.com/opencontainers/runc@"$RUNC_VERSION"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" -o "$out/runc.tmp" github.com/opencontainers/runc)
  mv "$out/runc.tmp" "$out/runc"
}

control_plane=(kube-apiserver kube-controller-manager)
node=(kube-scheduler kubelet kube-proxy)

case "${1:-all}" in
  all) build_etcd; build_versitygw; build_kube "${control_plane[@]}" ;;
  kube) build_kube "${control_plane[@]}" ;;
  etcd) build_etcd ;;
  versitygw) build_versitygw ;;
  # The real node (mloop dev up --node): scheduler, kubelet, kube-proxy and runc, beside the rest.
  node) build_kube "${node[@]}"; build_runc ;;
  *) echo "usage: $0 [all|kube|etcd|versitygw|node]" >&2; exit 2 ;;
esac
echo "$out"
