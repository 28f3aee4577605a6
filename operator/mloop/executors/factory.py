"""Pick the executor for an object: its own spec.executor, else the operator's default."""

from __future__ import annotations

from functools import lru_cache
from mloop.config import get_settings
from mloop.executors.base import Executor


@lru_cache(maxsize=None)
def _local() -> Executor:
    from mloop.executors.local import LocalExecutor

    return LocalExecutor()


@lru_cache(maxsize=None)
def _kubernetes() -> Executor:
    from mloop.executors.kubernetes import KubernetesExecutor
    from mloop.k8s.client import api_client

    return KubernetesExecutor(api_client())


def executor_for(requested: str | None) -> Executor:
    return _local() if (requested or get_settings().executor) == "local" else _kubernetes()
