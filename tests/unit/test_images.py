"""The mloop image's code layer, written without podman on top of a saved deps image (build-images.sh's last step).
The real image is built and run on the test-bed node by tests/cluster; this checks the archive's content anywhere."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from mloop.localcluster import images


def docker_archive(path: Path) -> Path:
    """What `podman save --format docker-archive` writes, with one layer."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"base\n"))
    digest = hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/bin"], "WorkingDir": "/app"},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{digest}.tar", layer.getvalue()), (config_name, config),
                           ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["localhost/deps:1"],
                                                          "Layers": [f"{digest}.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_code_image_adds_one_layer_and_leaves_the_base_layers_to_the_base_archive(tmp_path: Path) -> None:
    base = docker_archive(tmp_path / "deps.tar")
    target = tmp_path / "site"  # what `pip install --target` leaves
    (target / "mloop").mkdir(parents=True)
    (target / "mloop" / "__init__.py").write_text("VERSION = 1\n")
    (target / "bin").mkdir()
    (target / "bin" / "mloop").write_text("#!/work/main/.venv/bin/python3.11\nimport sys\n")

    out = images.code_image(base, "localhost/deps:1", target, "localhost/mloop:abc", tmp_path / "mloop.tar")

    with tarfile.open(out) as tar:
        index = json.loads(tar.extractfile("index.json").read())
        [entry] = index["manifests"]
        blob = lambda d: tar.extractfile(f"blobs/sha256/{d.split(':')[1]}").read()  # noqa: E731
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        blobs = [n for n in tar.getnames() if n.startswith("blobs/")]
        with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][-1]["digest"]))) as layer:
            files = {m.name: m for m in layer.getmembers()}
            script = layer.extractfile("usr/local/bin/mloop").read()
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/mloop:abc"
    assert images._base_of(out) == ("localhost/deps:1", base)
    # The base's layer is referenced, not copied: only the code layer, config and manifest travel.
    assert len(manifest["layers"]) == 2 and len(blobs) == 3
    assert config["config"]["User"] == "10001:10001" and config["config"]["Cmd"] == ["python", "-m", "mloop"]
    assert config["config"]["WorkingDir"] == "/app" and len(config["rootfs"]["diff_ids"]) == 2
    assert f"{images.SITE}/mloop/__init__.py" in files and files[f"{images.SITE}/mloop/__init__.py"].uid == 0
    assert script.startswith(b"#!/usr/bin/python3\n") and files["usr/local/bin/mloop"].mode == 0o755
    assert images._base_of(base) is None  # a self-contained archive imports alone
