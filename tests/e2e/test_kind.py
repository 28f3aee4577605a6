"""Opt-in: the iris loop on a kind cluster with the real image (tests/e2e/kind-e2e.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("kind-e2e.sh")


def _engine() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("MLOOP_E2E") != "1" or not shutil.which("kind") or not _engine(),
                    reason="opt-in: set MLOOP_E2E=1 and have kind plus a running Docker engine (make kind-e2e)")
def test_iris_loop_on_kind() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert '"predictions": ["setosa"]' in result.stdout
