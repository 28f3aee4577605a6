"""The local control plane: real binaries, side-by-side stacks, clean stops, and the dev CLI."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mloop.k8s.kubectl import kubectl as run_kubectl
from mloop.localcluster import LocalStack, find_binaries
from mloop.localcluster.stack import _alive
from tests.helpers import wait_for


def test_binaries_report_pinned_versions() -> None:
    binaries = find_binaries()
    api = subprocess.run([binaries.kube_apiserver, "--version"], capture_output=True, text=True).stdout
    assert api.startswith("Kubernetes v1.35.")
    etcd = subprocess.run([binaries.etcd, "--version"], capture_output=True, text=True).stdout
    assert "etcd Version: 3.6." in etcd


def test_kubebuilder_assets_and_per_binary_variables_are_honoured(tmp_path: Path, monkeypatch) -> None:
    real = find_binaries()
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, path in (("etcd", real.etcd), ("kube-apiserver", real.kube_apiserver),
                       ("kube-controller-manager", real.kube_controller_manager), ("versitygw", real.versitygw)):
        (assets / name).symlink_to(path)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = find_binaries(build_if_missing=False)
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.etcd == assets / "etcd"
    monkeypatch.setenv("MLOOP_ETCD", str(real.etcd))
    assert find_binaries(build_if_missing=False).etcd == real.etcd


def test_second_stack_runs_beside_the_first_and_stops_without_leftovers(stack, kubectl) -> None:
    second = LocalStack()
    info = second.start()
    try:
        assert info.api_server != stack.info.api_server
        assert info.s3_endpoint != stack.info.s3_endpoint
        version = run_kubectl("version", "-o", "json", kubeconfig=info.kubeconfig, check=True).stdout
        assert '"gitVersion": "v1.35.' in version
        pids = dict(info.pids)
    finally:
        second.cleanup()
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not Path(info.directory).exists()
    assert kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_s3_server_keeps_versions_from_being_overwritten(s3) -> None:
    key = "selftest/conditional.txt"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"first"


def test_job_controller_and_garbage_collector_are_running(kubectl, namespace) -> None:
    job = """
apiVersion: batch/v1
kind: Job
metadata: {name: probe}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
"""
    kubectl("apply", "-n", namespace, "-f", "-", input=job, check=True)
    pods = wait_for(lambda: kubectl("get", "pods", "-n", namespace, "-l", "job-name=probe", "-o", "name").stdout.strip())
    assert pods.startswith("pod/probe-")
    kubectl("delete", "job", "probe", "-n", namespace, "--cascade=background", check=True)
    wait_for(lambda: kubectl("get", "pods", "-n", namespace, "-l", "job-name=probe", "-o", "name").stdout.strip() == "")


def test_dev_up_env_down(tmp_path: Path) -> None:
    env = {**os.environ, "MLOOP_DEV_DIR": str(tmp_path / "dev")}
    mloop = [sys.executable, "-m", "mloop.cli.main"]
    up = subprocess.run([*mloop, "dev", "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        printed = subprocess.run([*mloop, "dev", "env"], env=env, capture_output=True, text=True, check=True).stdout
        exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in printed.splitlines())
        assert set(exports) >= {"KUBECONFIG", "MLOOP_S3_ENDPOINT", "MLOOP_BUCKET", "MLOOP_S3_ACCESS_KEY"}
        crds = run_kubectl("get", "crd", "-o", "name", kubeconfig=exports["KUBECONFIG"], check=True).stdout
        assert "customresourcedefinition.apiextensions.k8s.io/trainingruns.mloop.dev" in crds
        state = (tmp_path / "dev" / "state.json").read_text()
    finally:
        down = subprocess.run([*mloop, "dev", "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    assert [n for n, pid in json.loads(state)["pids"].items() if _alive(pid)] == []
    assert subprocess.run([*mloop, "dev", "env"], env=env, capture_output=True, text=True).returncode == 1
