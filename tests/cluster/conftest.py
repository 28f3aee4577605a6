"""The real-node suite: the same stack as the rest of the tests, plus containerd, kubelet, kube-proxy and a
scheduler (mloop.localcluster.node). Needs root, Debian's packages and the node binaries (`make node-binaries`);
skips with what is missing otherwise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import stack_env


@pytest.fixture(scope="package")
def stack() -> Iterator[Any]:
    """Overrides the session stack of tests/conftest.py for this package only (the client fixtures are package-
    scoped, so later packages get the plain stack back): the same, with a real node."""
    from mloop.k8s.crds import install_crds
    from mloop.localcluster import LocalStack
    from mloop.localcluster.node import NodeUnavailable

    local = LocalStack(node=True)
    try:
        info = local.start()
    except NodeUnavailable as exc:
        local.cleanup()
        pytest.skip(f"real-node suite: {exc}")
    with stack_env(local):
        try:
            install_crds(info.kubeconfig)
        except Exception as exc:
            raise RuntimeError(getattr(exc, "stderr", "")) from exc
        yield local


@pytest.fixture
def namespace(api_client: Any) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (real pods need one), deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException:
            time.sleep(0.2)
    yield name
    core.delete_namespace(name, propagation_policy="Background")
