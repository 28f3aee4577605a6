"""Pick the executor for an object: its own spec.executor, else the operator's default."""

from __future__ import annotations

import threading

from mloop.config import get_settings
from mloop.executors.base import Executor

_built: dict[str, tuple[tuple[int, int], Executor]] = {}
_lock = threading.Lock()


def executor_for(requested: str | None) -> Executor:
    """One executor of each kind, built again when the settings or the API client change (settings are read
    again after a change of environment: a test's stack, `mloop dev`), so none keeps an old stack's folder."""
    from mloop.k8s.client import api_client

    settings = get_settings()
    kind = "local" if (requested or settings.executor) == "local" else "kubernetes"
    client = api_client() if kind == "kubernetes" else None
    key = (id(settings), id(client))
    with _lock:
        held = _built.get(kind)
        if held is None or held[0] != key:
            held = _built[kind] = (key, _build(client))
    return held[1]


def _build(client: object | None) -> Executor:
    """A kubernetes executor on `client`, or the local one."""
    if client is None:
        from mloop.executors.local import LocalExecutor

        return LocalExecutor()
    from mloop.executors.kubernetes import KubernetesExecutor

    return KubernetesExecutor(client)
