#!/usr/bin/env bash
# Builds the mloop image (operator, tasks, model server) from the Dockerfile where no container registry is
# reachable, and prints the path of an OCI archive the node's containerd imports (images.import_archive):
#  - podman builds the Dockerfile's `deps` stage, only when its inputs change; the code layer on top is written
#    by images.py from a `pip install --no-deps` on the host, in seconds (podman's vfs copied 1.3 GB for it).
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

# What the image is made of, named without asking podman (each podman call reads its 20 GB vfs store).
base_image=localhost/mloop-python:3.11-$SUITE
bindir=$(bash operator/mloop/localcluster/build-binaries.sh all)
vgw_version=$(basename "$bindir" | sed 's/.*versitygw-//')
vgw_image=localhost/mloop-versitygw:$vgw_version
deps=$(sha256sum pyproject.toml | cut -c1-12)
wheels_image=localhost/mloop-wheels:$deps
wheels=$cache/wheels-$deps
# The Dockerfile's `deps` stage (system packages, every dependency, versitygw): rebuilt only when its inputs change.
deps_key=$(cat Dockerfile pyproject.toml <(echo "$base_image $vgw_image $wheels_image") | sha256sum | cut -c1-12)
deps_image=localhost/mloop-deps:$deps_key
deps_archive=$cache/mloop-deps-$deps_key.tar

preflight() {
  for cmd in podman debootstrap; do
    command -v $cmd >/dev/null || { log "needs $cmd (Debian: apt-get install podman debootstrap; or make node-deps)"; exit 1; }
  done
  [ "$(id -u)" = 0 ] || { log "needs root (debootstrap, and podman's vfs storage under $cache)"; exit 1; }
}

build_deps() {
  local pod=(podman --cgroup-manager cgroupfs --storage-driver vfs --root "$cache/podman/root"
             --runroot "$cache/podman/run" --events-backend none)
  # 1. The base: Debian's python3 (3.11 on bookworm) standing in for python:3.11-slim-bookworm.
  local base_tar=$cache/python-3.11-$SUITE.tar
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
  if ! "${pod[@]}" image exists "$base_image"; then
    log "importing the base image"
    "${pod[@]}" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' "$base_tar" "$base_image" >/dev/null
  fi
  # 2. versitygw from the test bed's build, as a FROM-scratch image the Dockerfile copies it from.
  if ! "${pod[@]}" image exists "$vgw_image"; then
    local ctx; ctx=$(mktemp -d)
    cp "$bindir/versitygw" "$ctx/versitygw"
    printf 'FROM scratch\nCOPY versitygw /out/versitygw\n' > "$ctx/Containerfile"
    "${pod[@]}" build --pull=never -q -t "$vgw_image" "$ctx" >/dev/null
    rm -rf "$ctx"
  fi
  # 3. The wheels (below) as an image holding /wheels, for the offline pip of the deps stage.
  if ! "${pod[@]}" image exists "$wheels_image"; then
    printf 'FROM scratch\nCOPY wheels /wheels\n' > "$wheels/Containerfile"
    "${pod[@]}" build --pull=never -q -t "$wheels_image" -f "$wheels/Containerfile" "$wheels" >/dev/null
  fi
  # 4. The deps stage, saved once as a docker-archive (1.3 GB, uncompressed: an oci-archive gzips it, 7 times
  #    slower to save) that the node imports once per node.
  log "building $deps_image (the Dockerfile's deps stage)"
  "${pod[@]}" build --pull=never --network host --target deps --build-arg "PYTHON_IMAGE=$base_image" \
    --build-arg "VERSITYGW_IMAGE=$vgw_image" --build-arg "WHEELS_IMAGE=$wheels_image" --build-arg PIP_NO_INDEX=1 \
    -t "$deps_image" . >&2
  "${pod[@]}" save --format docker-archive -o "$deps_archive.tmp" "$deps_image" >&2
  mv "$deps_archive.tmp" "$deps_archive"
  # Images of the old layout (the code built by podman: a 1.3 GB vfs copy each) are no longer made.
  "${pod[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/mloop:' | xargs -r "${pod[@]}" rmi >&2 || true
}

# Wheels of every dependency, fetched by the host's pip (the build itself has no route to PyPI's certificates
# here, and needs none); keyed by pyproject.toml. They also hold the setuptools the code's build uses offline.
[ -f "$deps_archive" ] || preflight
pip=${PIP:-.venv/bin/pip}
if [ ! -f "$wheels/.ready" ]; then
  log "fetching wheels for pyproject.toml ($deps) with the host's pip"
  rm -rf "$wheels"; mkdir -p "$wheels/wheels"
  "$pip" wheel --quiet --wheel-dir "$wheels/wheels" . >&2
  "$pip" download --quiet --only-binary :all: --dest "$wheels/wheels" "setuptools>=77" wheel >&2
  rm -f "$wheels"/wheels/mloop-*.whl
  touch "$wheels/.ready"
fi
[ -f "$deps_archive" ] || build_deps

# 5. mloop's code as one layer on the deps image, named by a hash of what goes into it: the host's pip installs
#    it (no dependencies, offline) into a folder, and images.py writes the layer and an archive of only the new
#    blobs (a few MB); its index names the deps archive, which the node imports first where it lacks it.
tag=$(cat Dockerfile pyproject.toml README.md <(find operator -name '*.py' -o -name '*.sh' -o -name '*.json' \
      -o -name '*.yaml' | grep -v __pycache__ | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
image=localhost/mloop:$tag
archive=$cache/mloop-$tag.tar
if [ ! -f "$archive" ]; then
  log "building $image on $deps_image"
  work=$(mktemp -d)
  mkdir "$work/src"
  tar --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md operator | tar -C "$work/src" -xf -
  "$pip" install --quiet --no-deps --no-index --find-links "$wheels/wheels" --target "$work/site" "$work/src" >&2
  ${PYTHON:-.venv/bin/python} -m mloop.localcluster.images code "$deps_archive" "$deps_image" "$work/site" \
    "$image" "$archive" >/dev/null
  rm -rf "$work"
fi
# Archives not used for a day go (a deps archive is 1.3 GB).
find "$cache" -maxdepth 1 -name 'mloop-*.tar' -mmin +1440 ! -path "$deps_archive" ! -path "$archive" -delete
echo "$archive"
