#!/usr/bin/env bash
# Builds the mloop image (operator, tasks, model server) from the Dockerfile with podman where no
# container registry is reachable, and prints the path of a docker-archive the node's containerd imports.
#  - The Python base image is a local stand-in made with debootstrap from Debian's mirror (the one apt uses).
#  - versitygw comes from the test bed's own build (build-binaries.sh), put in a FROM-scratch image.
#  - podman runs with vfs storage and cgroupfs under $cache/podman (no systemd, no overlay mounts), and
#    builds with the host's network (no podman bridge, no NAT): only pip and apt reach out, as on the host.
# Everything expensive is cached under ~/.cache/mloop/images; the image is named by a hash of its inputs,
# so a changed source tree builds a new one and an unchanged one is not rebuilt.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../../.."
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mloop/images
MIRROR=${MLOOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one build at a time: a second caller waits, then finds the archive cached
log() { echo "build-images: $*" >&2; }
for cmd in podman debootstrap; do
  command -v $cmd >/dev/null || { log "needs $cmd (Debian: apt-get install podman debootstrap; or make node-deps)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, and podman's vfs storage under $cache)"; exit 1; }
pod=(podman --cgroup-manager cgroupfs --storage-driver vfs --root "$cache/podman/root" --runroot "$cache/podman/run"
     --events-backend none)

# 1. The base: Debian's python3 (3.11 on bookworm) standing in for python:3.11-slim-bookworm.
base_tar=$cache/python-3.11-$SUITE.tar
if [ ! -f "$base_tar" ]; then
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'for m in proc sys dev/pts dev; do umount "$rootfs/$m" 2>/dev/null || true; done; rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE with python3 (a few minutes, once)"
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates "$SUITE" "$rootfs" "$MIRROR" >&2
  # Like the python image: `python` on PATH, pip may install into the system interpreter.
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar --numeric-owner -C "$rootfs" -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
fi
base_image=localhost/mloop-python:3.11-$SUITE
if ! "${pod[@]}" image exists "$base_image"; then
  log "importing the base image"
  "${pod[@]}" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$base_tar" "$base_image" >/dev/null
fi

# 2. versitygw from the test bed's build, as a FROM-scratch image the Dockerfile copies it from.
bindir=$(bash operator/mloop/localcluster/build-binaries.sh all)
vgw_version=$(basename "$bindir" | sed 's/.*versitygw-//')
vgw_image=localhost/mloop-versitygw:$vgw_version
if ! "${pod[@]}" image exists "$vgw_image"; then
  ctx=$(mktemp -d)
  cp "$bindir/versitygw" "$ctx/versitygw"
  printf 'FROM scratch\nCOPY versitygw /out/versitygw\n' > "$ctx/Containerfile"
  "${pod[@]}" build --pull=never -q -t "$vgw_image" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# 3. Wheels of every dependency, fetched by the host's pip (the build itself has no route to PyPI's
#    certificates here, and needs none): an image holding /wheels, keyed by pyproject.toml.
deps=$(sha256sum pyproject.toml | cut -c1-12)
wheels_image=localhost/mloop-wheels:$deps
if ! "${pod[@]}" image exists "$wheels_image"; then
  ctx=$cache/wheels-$deps
  if [ ! -f "$ctx/.ready" ]; then
    log "fetching wheels for pyproject.toml ($deps) with the host's pip"
    rm -rf "$ctx"; mkdir -p "$ctx/wheels"
    pip=${PIP:-.venv/bin/pip}
    "$pip" wheel --quiet --wheel-dir "$ctx/wheels" . >&2
    "$pip" download --quiet --only-binary :all: --dest "$ctx/wheels" "setuptools>=77" wheel >&2
    rm -f "$ctx"/wheels/mloop-*.whl
    touch "$ctx/.ready"
  fi
  printf 'FROM scratch\nCOPY wheels /wheels\n' > "$ctx/Containerfile"
  "${pod[@]}" build --pull=never -q -t "$wheels_image" -f "$ctx/Containerfile" "$ctx" >/dev/null
fi

# 4. The mloop image, named by a hash of what goes into it.
tag=$(cat Dockerfile pyproject.toml README.md <(find operator -name '*.py' -o -name '*.sh' -o -name '*.json' \
      -o -name '*.yaml' | grep -v __pycache__ | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
image=localhost/mloop:$tag
archive=$cache/mloop-$tag.tar
if [ ! -f "$archive" ]; then
  log "building $image"
  "${pod[@]}" build --pull=never --network host --build-arg "PYTHON_IMAGE=$base_image" \
    --build-arg "VERSITYGW_IMAGE=$vgw_image" --build-arg "WHEELS_IMAGE=$wheels_image" --build-arg PIP_NO_INDEX=1 \
    --build-arg "MLOOP_SOURCE=$tag" -t "$image" . >&2
  "${pod[@]}" save --format docker-archive -o "$archive.tmp" "$image" >&2
  mv "$archive.tmp" "$archive"
fi
echo "$archive"
