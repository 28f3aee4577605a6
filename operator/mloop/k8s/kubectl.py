"""Run kubectl the way a user would: the one installed beside this Python first, then PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def kubectl_path() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found: install the project (`make .venv`) or put kubectl on PATH")
    return found


def kubectl(*args: str, kubeconfig: str | None = None, input: str | None = None, check: bool = False,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run([kubectl_path(), *args], input=input, capture_output=True, text=True, env=env,
                          check=check, timeout=timeout)
