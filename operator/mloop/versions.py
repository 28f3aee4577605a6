"""Versions of the code a fit runs: recorded by the trainer, and part of the operator's cache key."""

from __future__ import annotations

import platform
from importlib.metadata import version as package_version

PACKAGES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "skops", "mloop")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = package_version(name)
        except Exception:  # a package not installed has no version to record
            continue
    return found
