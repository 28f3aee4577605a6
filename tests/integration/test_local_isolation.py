"""What one operator or dev stack must not do to another: stop its model servers, race it to a broken API
client, or expose its liveness endpoint beyond loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from mloop.config import stack_local_dir
from mloop.procs import alive, free_port
from tests.helpers import apply_object, wait_for
from tests.integration.test_modelpackage import packaged, setup_iris

ROOT = Path(__file__).resolve().parents[2]


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A child's environment built from nothing, so no inherited MLOOP_* or cluster setting decides a result."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), **extra}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except OSError:
        return False


def test_dev_down_of_one_stack_leaves_another_stacks_model_server_running(
        kubectl, api_client, namespace, operator, stack, tmp_path: Path) -> None:
    from mloop.serving.local import LocalServers

    setup_iris(kubectl, api_client, namespace)
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                  "stage": "Staging"})
    package = packaged(api_client, namespace, "iris-1")["status"]
    # Two dev stacks' folders; their control planes are not needed to show whose servers `dev down` stops.
    folders = {name: tmp_path / name for name in ("a", "b")}
    for folder in folders.values():
        folder.mkdir()
        replace(stack.info, directory=str(folder), pids={}).save(folder / "state.json")
    servers = {name: LocalServers(local_dir=stack_local_dir(folder)) for name, folder in folders.items()}
    try:
        # The same namespace, model and stage in both stacks: each gets a server of its own.
        endpoints = {name: s.ensure(namespace, "iris", "Production", package["uri"], package["digest"], 0.0)[0]
                     for name, s in servers.items()}
        assert endpoints["a"] != endpoints["b"]
        for endpoint in endpoints.values():
            wait_for(lambda e=endpoint: answers(f"{e}/v2/health/ready"), timeout=60)
        pid_a = servers["a"].state(namespace, "iris", "Production")["pid"]
        # As from a shell that still holds stack b's `mloop dev env`.
        env = base_env(tmp_path, MLOOP_DEV_DIR=str(folders["a"]), MLOOP_LOCAL_DIR=str(stack_local_dir(folders["b"])))
        down = subprocess.run([sys.executable, "-m", "mloop.cli.main", "dev", "down"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert not alive(pid_a) and not answers(f"{endpoints['a']}/v2/health/live")
        assert not folders["a"].exists()
        assert answers(f"{endpoints['b']}/v2/health/ready")
        assert servers["b"].state(namespace, "iris", "Production") is not None
    finally:
        for s in servers.values():
            s.stop(namespace, "iris", "Production")


RACE = """
import json, sys, threading
from kubernetes import client
from mloop.k8s.client import api_client

count = int(sys.argv[1])
barrier, results = threading.Barrier(count), []

def use() -> None:
    barrier.wait()
    try:
        c = api_client()
        client.CoreV1Api(c).list_namespace(limit=1)
        results.append([id(c), "ok"])
    except Exception as err:
        results.append([None, repr(err)])

threads = [threading.Thread(target=use) for _ in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
"""


def test_api_client_built_by_many_threads_at_once_works_in_each(kubeconfig, tmp_path: Path) -> None:
    # A fresh process: the kubernetes package caches certificate files per process, so only the first build races.
    result = subprocess.run([sys.executable, "-c", RACE, "24"], env=base_env(tmp_path, KUBECONFIG=kubeconfig),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert [outcome for _, outcome in results] == ["ok"] * 24
    assert len({instance for instance, _ in results}) == 1


def listening(port: int) -> set[str]:
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, raw))
    return found


@pytest.mark.parametrize("host", [None, "127.0.0.2"])
def test_python_m_mloop_liveness_listens_on_loopback_unless_told(kubeconfig, namespace, tmp_path: Path,
                                                                 host: str | None) -> None:
    port = free_port()
    env = base_env(tmp_path, KUBECONFIG=kubeconfig, MLOOP_LIVENESS_PORT=str(port), MLOOP_NAMESPACES=namespace,
                   **({"MLOOP_LIVENESS_HOST": host} if host else {}))
    proc = subprocess.Popen([sys.executable, "-m", "mloop"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    expected = host or "127.0.0.1"
    try:
        wait_for(lambda: answers(f"http://{expected}:{port}/healthz") or proc.poll() is not None, timeout=60)
        assert proc.poll() is None
        assert listening(port) == {expected}
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-3000:]


def test_deployment_sets_the_liveness_host_to_the_pod_ip(kubectl) -> None:
    import yaml

    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests"), check=True).stdout) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mloop-config")["data"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOOP_LIVENESS_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    health = next(p for p in container["ports"] if p["name"] == container["livenessProbe"]["httpGet"]["port"])
    assert health["containerPort"] == int(config["MLOOP_LIVENESS_PORT"])
