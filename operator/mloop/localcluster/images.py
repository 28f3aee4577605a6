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
    """Load an OCI/docker archive into the node's containerd (the CRI namespace), unpacked for its snapshotter.
    A code_image archive brings its base image first, only where the node lacks it."""
    if (base := _base_of(archive)) and not has_image(ctr_address, base[0]):
        import_archive(ctr_address, base[1], snapshotter)
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


# --- The mloop image: the Dockerfile's `deps` stage (podman, rebuilt only when the dependencies change) plus one
# layer of mloop's own code written here. podman with vfs storage copied the whole 1.3 GB root for the code step
# and `podman save` wrote it all again; this layer is the code alone, and its archive holds only what is new.
SITE = "usr/local/lib/python3.11/dist-packages"  # where Debian's pip installs for the system python3
BASE_NAME = "dev.mloop.base-image"
BASE_ARCHIVE = "dev.mloop.base-archive"


def _base_parts(archive: Path) -> tuple[list[dict], dict]:
    """The layer descriptors and config of the image in a docker-archive (`podman save`; uncompressed, so it saves
    and unpacks fast) or a single-image OCI archive."""
    with tarfile.open(archive) as tar:
        def read(name: str) -> bytes:
            return tar.extractfile(name).read()  # type: ignore[union-attr]

        names = set(tar.getnames())
        if "manifest.json" in names:
            [entry] = json.loads(read("manifest.json"))
            layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + Path(name).stem,
                       "size": tar.getmember(name).size} for name in entry["Layers"]]
            return layers, json.loads(read(entry["Config"]))
        [entry] = json.loads(read("index.json"))["manifests"]
        manifest = json.loads(read(f"blobs/sha256/{entry['digest'].split(':', 1)[1]}"))
        return manifest["layers"], json.loads(read(f"blobs/sha256/{manifest['config']['digest'].split(':', 1)[1]}"))


def _code_layer(target: Path) -> bytes:
    """`pip install --target` output as the image's pip would have placed it: packages in SITE, scripts in
    /usr/local/bin for /usr/bin/python3. Owned by root, mtimes kept (the .pyc files name their source's)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(target.rglob("*")):
            rel = path.relative_to(target)
            if rel.parts[0] == "bin":
                if path.is_dir():
                    continue
                lines = path.read_bytes().split(b"\n", 1)
                data = b"#!/usr/bin/python3\n" + lines[1] if lines[0].startswith(b"#!") else path.read_bytes()
                info = tarfile.TarInfo(f"usr/local/bin/{rel.name}")
                info.size, info.mode, info.mtime = len(data), 0o755, int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
                continue
            info = tar.gettarinfo(str(path), f"{SITE}/{rel.as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def code_image(base_archive: Path, base_name: str, target: Path, name: str, out: Path, note: str = "") -> Path:
    """An OCI archive of `name`: the base image's layers by reference, plus one layer made from `target`, as the
    Dockerfile's last stage does it (USER 10001, CMD python -m mloop). Its index names the base archive, which
    import_archive loads first where the node lacks it; the base's layers are not copied into this archive."""
    layers, config = _base_parts(base_archive)
    if len(layers) != len(config["rootfs"]["diff_ids"]):
        raise ValueError(f"{base_archive}: {len(layers)} layers for {len(config['rootfs']['diff_ids'])} diff_ids")
    layer = _code_layer(target)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config["config"].update(User="10001:10001", Cmd=["python", "-m", "mloop"])
    config["rootfs"]["diff_ids"].append(layer_digest)
    config.setdefault("history", []).append({"created_by": f"build-images.sh: mloop's code {note}".strip()})
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": [*layers, {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                     "digest": layer_digest, "size": len(layer)}]}
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    new_index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest_bytes), "platform": {"architecture": config.get("architecture", "amd64"),
                                                  "os": config.get("os", "linux")},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                        BASE_NAME: base_name, BASE_ARCHIVE: str(base_archive)},
    }]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(new_index).encode())
        for digest, blob in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
            _add(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", blob)
    tmp.rename(out)
    return out


def _base_of(archive: Path) -> tuple[str, Path] | None:
    """The base image a code_image archive leans on, or None for a self-contained archive."""
    try:
        with tarfile.open(archive) as tar:  # code_image writes oci-layout, then index.json: no scan of a big archive
            annotations = None
            for _ in range(2):
                member = tar.next()
                if member is not None and member.name == "index.json":
                    index = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    annotations = index["manifests"][0].get("annotations", {})
                    break
            if annotations is None:
                return None
    except (tarfile.TarError, KeyError, IndexError, ValueError):
        return None
    if BASE_NAME in annotations and BASE_ARCHIVE in annotations:
        return annotations[BASE_NAME], Path(annotations[BASE_ARCHIVE])
    return None


def has_image(ctr_address: str, name: str) -> bool:
    ctr = shutil.which("ctr") or "ctr"
    proc = subprocess.run([ctr, "--address", ctr_address, "-n", "k8s.io", "images", "ls", "-q"],
                          capture_output=True, text=True, check=False)
    return name in proc.stdout.split()


def main(argv: list[str] | None = None) -> None:
    """build-images.sh's last step:
    `python -m mloop.localcluster.images code BASE_ARCHIVE BASE_NAME TARGET NAME OUT`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 6 or args[0] != "code":
        raise SystemExit(main.__doc__)
    print(code_image(Path(args[1]), args[2], Path(args[3]), args[4], Path(args[5])))


if __name__ == "__main__":
    main()
