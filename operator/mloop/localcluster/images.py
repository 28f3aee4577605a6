"""Container images the test-bed node needs, built here without a registry.

The sandbox ("pause") image is static busybox running `sleep`, written straight as an OCI archive: no
builder and no base image, so the node starts even where podman is missing. The same image runs the
node's own smoke workloads (a restricted Job, a pod over its memory limit).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "localhost/mloop-pause:1"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _layer(busybox: Path) -> bytes:
    """bin/busybox and a link per applet, with fixed times so the digest is the same every build."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755 if d == "bin" else 0o1777, 0
            tar.addfile(info)
        _add(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(info)
    return buf.getvalue()


def busybox_archive(path: Path, name: str = PAUSE_IMAGE, busybox: Path = BUSYBOX) -> Path:
    """An OCI archive `ctr images import` loads as `name`: FROM scratch + static busybox, `sleep` by default."""
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing (Debian: apt-get install busybox-static)")
    layer = _layer(busybox)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "infinity"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", index)
        for digest, blob in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest)):
            _add(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", blob)
    return path


def import_archive(ctr_address: str, archive: Path, snapshotter: str = "native") -> None:
    """Load an OCI/docker archive into the node's containerd (the CRI namespace), unpacked for its snapshotter."""
    ctr = shutil.which("ctr") or "ctr"
    proc = subprocess.run(
        [ctr, "--address", ctr_address, "-n", "k8s.io", "images", "import", "--snapshotter", snapshotter,
         str(archive)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def tag_image(ctr_address: str, source: str, target: str) -> None:
    """A second name for an imported image (e.g. `mloop:dev`, as the dev overlay names it), without a registry."""
    ctr = shutil.which("ctr") or "ctr"
    proc = subprocess.run([ctr, "--address", ctr_address, "-n", "k8s.io", "images", "tag", "--force", source, target],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images tag {source} {target} failed: {proc.stderr.strip() or proc.stdout.strip()}")
