"""Small helpers the tests share: waiting, reading objects and their conditions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import yaml


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Return the first truthy value of predicate(), or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def get_object(api_client: Any, namespace: str, plural: str, name: str) -> dict:
    from kubernetes import client

    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "mloop.dev", "v1alpha1", namespace, plural, name
    )


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def apply_object(kubectl: Callable[..., Any], namespace: str, kind: str, name: str, spec: dict) -> None:
    manifest = {"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=True)


def k8s_events(api_client: Any, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Kubernetes events about one object."""
    from kubernetes import client

    found = client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in found.items]


@contextmanager
def operator_settings(monkeypatch: Any, **env: str) -> Iterator[None]:
    """MLOOP_* (and other) variables for an operator started inside the block; settings are cached, so the
    cache is cleared on the way in and out."""
    from mloop.config import get_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key in env:
            monkeypatch.delenv(key, raising=False)
        get_settings.cache_clear()
