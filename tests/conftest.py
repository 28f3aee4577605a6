"""Shared fixtures: a real local control plane and S3 server for the whole session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Read when mloop.handlers is imported (kopf timers take their interval then): fast polls for tests.
os.environ.setdefault("MLOOP_POLL_INTERVAL", "0.5")
os.environ.setdefault("MLOOP_EXECUTOR", "local")


@dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    client: Any


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown to pytest without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (`make test`), each worker has a stack of its own. A module's tests go to one worker, so
    its module fixtures are built once, and the real-node tests (tests/cluster) all to one, as a machine holds one
    node (`make test` runs them before, on their own). Not xdist_group marks: pytest 9.2 drops the nodeid suffix
    --dist loadgroup relies on (pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/cluster" if module.startswith("tests/cluster/") else module

    return ByModule(config, log)


@pytest.fixture(scope="session")
def stack() -> Iterator[Any]:
    """etcd + kube-apiserver + kube-controller-manager + versitygw, with the CRDs installed."""
    from mloop.k8s.crds import install_crds
    from mloop.localcluster import LocalStack

    local = LocalStack()
    info = local.start()
    with stack_env(local):
        install_crds(info.kubeconfig)
        yield local


@contextlib.contextmanager
def stack_env(local: Any) -> Iterator[None]:
    """The started stack's settings in this process's environment; afterwards the stack is stopped and the
    environment is as it was."""
    from mloop.config import get_settings

    env = {**local.info.env(), "MLOOP_LOCAL_DIR": str(local.dir / "local-tasks")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        stop_local_servers("")
        local.cleanup()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def stop_local_servers(namespace: str) -> None:
    """Model servers the operator started as local processes outlive it by design; a test's die with it."""
    from mloop.serving.local import LocalServers

    servers = LocalServers()
    for path in servers.dir.glob(f"{namespace}.*.json" if namespace else "*.json"):
        ns, model, stage = path.name.removesuffix(".json").split(".", 2)
        servers.stop(ns, model, stage)


# Package scope: tests/cluster overrides `stack` with a real node for its package only.
@pytest.fixture(scope="package")
def kubeconfig(stack: Any) -> str:
    return stack.info.kubeconfig


@pytest.fixture(scope="package")
def api_client(kubeconfig: str) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="package")
def kubectl(kubeconfig: str):
    """Run kubectl as a user would; returns the CompletedProcess."""
    from mloop.k8s.kubectl import kubectl as run

    def _run(*args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run(*args, kubeconfig=kubeconfig, input=input, check=check)

    return _run


@pytest.fixture
def namespace(api_client: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="package")
def s3(stack: Any) -> S3:
    from mloop.storage.s3 import make_client

    info = stack.info
    return S3(info.s3_endpoint, info.s3_access_key, info.s3_secret_key, info.bucket,
              make_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key))


@pytest.fixture
def operator(stack: Any, namespace: str) -> Iterator[Any]:
    """The operator in-process (kopf's KopfRunner), watching the test's namespace, local executor."""
    from kopf.testing import KopfRunner

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"], timeout=180) as runner:
        yield runner
    stop_local_servers(namespace)
    assert runner.exception is None, runner.output[-3000:]
    assert runner.exit_code == 0, runner.output[-3000:]


@pytest.fixture
def cloudevents_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real HTTP sink the operator sends CloudEvents to; list it before `operator`, which reads settings."""
    from tests.helpers import operator_settings
    from tests.sinks import Sink

    with Sink() as sink, operator_settings(monkeypatch, MLOOP_CLOUDEVENTS_SINK=sink.url):
        yield sink


@pytest.fixture
def lineage_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """OpenLineage events through the file transport, one JSON object per line; list it before `operator`."""
    from tests.helpers import operator_settings

    path = tmp_path / "openlineage.jsonl"
    with operator_settings(monkeypatch, MLOOP_OPENLINEAGE_TRANSPORT="file", MLOOP_OPENLINEAGE_FILE=str(path)):
        yield path


@pytest.fixture
def pod_runner(api_client: Any, namespace: str) -> Iterator[Any]:
    """Plays the kubelet for the test's namespace: runs each pod's command locally, records its phase."""
    from tests.podrunner import PodRunner

    with PodRunner(api_client, namespace) as runner:
        yield runner


@pytest.fixture
def s3_secret(kubectl: Any, namespace: str, s3: S3) -> str:
    """The Secret task pods take their S3 keys from, as an administrator would create it."""
    kubectl("create", "secret", "generic", "mloop-s3", "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
            check=True)
    return "mloop-s3"
