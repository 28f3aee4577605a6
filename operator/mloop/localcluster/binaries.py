"""Find the control-plane binaries, building them from Go modules when they are missing."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "versitygw")
# Per-binary overrides, e.g. TEST_ASSET_KUBE_APISERVER as in controller-runtime's envtest.
ENV_OVERRIDES = {
    "etcd": ("MLOOP_ETCD", "TEST_ASSET_ETCD"),
    "kube-apiserver": ("MLOOP_KUBE_APISERVER", "TEST_ASSET_KUBE_APISERVER"),
    "kube-controller-manager": ("MLOOP_KUBE_CONTROLLER_MANAGER", "TEST_ASSET_KUBE_CONTROLLER_MANAGER"),
    "versitygw": ("MLOOP_VERSITYGW",),
}


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    versitygw: Path


class BinariesMissing(RuntimeError):
    pass


def _lookup(name: str, build_dir: Path | None) -> Path | None:
    for var in ENV_OVERRIDES[name]:
        if value := os.environ.get(var):
            return Path(value)
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidate = Path(assets) / name
        if candidate.is_file():
            return candidate
    if build_dir is not None and (build_dir / name).is_file():
        return build_dir / name
    return None


def build(quiet: bool = False) -> Path:
    """Run the build script (a no-op when everything is cached) and return the binaries' directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BinariesMissing(f"building the control plane failed (exit {proc.returncode}); run {BUILD_SCRIPT} to see why")
    return Path(proc.stdout.strip().splitlines()[-1])


def find_binaries(build_if_missing: bool = True) -> Binaries:
    """Environment overrides first, then KUBEBUILDER_ASSETS, then the build cache (building it if allowed)."""
    found = {name: _lookup(name, None) for name in NAMES}
    if any(path is None for path in found.values()):
        if not build_if_missing:
            missing = ", ".join(n for n, p in found.items() if p is None)
            raise BinariesMissing(f"missing control-plane binaries: {missing}; run {BUILD_SCRIPT}")
        build_dir = build()
        found = {name: _lookup(name, build_dir) for name in NAMES}
    for name, path in found.items():
        if path is None or not os.access(path, os.X_OK):
            raise BinariesMissing(f"{name} not found or not executable at {path}")
    return Binaries(
        etcd=found["etcd"],  # type: ignore[arg-type]
        kube_apiserver=found["kube-apiserver"],  # type: ignore[arg-type]
        kube_controller_manager=found["kube-controller-manager"],  # type: ignore[arg-type]
        versitygw=found["versitygw"],  # type: ignore[arg-type]
    )
