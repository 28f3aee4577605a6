"""mloop on the real node with the kubernetes executor and no pod runner: every task is a Job whose pod runs
the mloop image under containerd, and the model server is a Deployment reached through its Service."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from tests.conftest import stop_local_servers
from tests.helpers import apply_object, condition, get_object, operator_settings, wait_for
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_trainingrun import IRIS_RUN, finished, succeeded

BUILD_IMAGES = Path(__file__).resolve().parents[2] / "operator" / "mloop" / "localcluster" / "build-images.sh"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="package")
def mloop_image(stack: Any) -> str:
    """The mloop image from the Dockerfile (podman, local base stand-ins; cached), imported into the node."""
    if not os.environ.get("MLOOP_CLUSTER_IMAGE"):
        pytest.skip("mloop on the real node needs the mloop image (about 10 min to build cold): "
                    "`make cluster-e2e` builds it and runs these (or set MLOOP_CLUSTER_IMAGE=1)")
    proc = subprocess.run(["bash", str(BUILD_IMAGES)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "build-images: needs" in proc.stderr:
        pytest.skip(f"real-node suite with mloop: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    archive = Path(proc.stdout.strip().splitlines()[-1])
    stack.import_image(archive)
    return "localhost/mloop:" + archive.stem.removeprefix("mloop-")


@pytest.fixture
def node_operator(stack: Any, namespace: str, mloop_image: str, monkeypatch: Any) -> Iterator[Any]:
    """The operator in-process, tasks and servers as pods of the mloop image on the node."""
    with operator_settings(monkeypatch, MLOOP_IMAGE=mloop_image, MLOOP_EXECUTOR="kubernetes"):
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"],
                        timeout=300) as runner:
            yield runner
    stop_local_servers(namespace)


def test_trainingrun_over_its_memory_limit_fails_oomkilled(kubectl, api_client, namespace, node_operator,
                                                           s3_secret) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}, "executor": "local"})
    apply_object(kubectl, namespace, "TrainingRun", "starved", {
        **IRIS_RUN, "executor": "kubernetes", "retries": 0, "resources": {"limits": {"memory": "48Mi"}}})
    run = finished(api_client, namespace, "starved", 300)
    assert run["status"]["phase"] == "Failed"
    assert condition(run, "Succeeded")["reason"] == "OOMKilled", json.dumps(run["status"], indent=1)
    [pod] = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"mloop.dev/trainingrun=starved").items
    assert pod.spec.node_name == "localhost"
    assert pod.status.container_statuses[0].state.terminated.reason == "OOMKilled"


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - a ClusterIP on this machine
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}  # kube-proxy writes the rules a moment after the EndpointSlice


def test_iris_on_the_node_to_a_served_prediction(kubectl, api_client, namespace, node_operator, s3_secret) -> None:
    """Ingest Job, grid search as an Indexed Job, fit and packaging Jobs, then the server Deployment (probes) and
    its Service, answering the host through kube-proxy."""
    apply_object(kubectl, namespace, "Dataset", "iris", {**IRIS_DS, "executor": "kubernetes"})
    apply_object(kubectl, namespace, "TrainingRun", "grid", {**IRIS_RUN, "executor": "kubernetes", "search": {
        "type": "grid", "parameters": {"C": [0.1, 1.0]}, "parallelism": 2}})
    run = succeeded(api_client, namespace, "grid", 600)
    jobs = {j.metadata.name: j for j in client.BatchV1Api(api_client).list_namespaced_job(namespace).items}
    [trials] = [j for name, j in jobs.items() if name.startswith("trials-grid-")]
    assert trials.spec.completion_mode == "Indexed" and trials.status.completed_indexes == "0-1"
    assert run["status"]["trials"] == 2
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {
        "model": "iris", "trainingRunRef": {"name": "grid"}, "stage": "Production",
        "serve": {"replicas": 1, "resources": {"limits": {"memory": "512Mi"}}}})
    packaged(api_client, namespace, "iris-1", timeout=300)
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))
                   and (condition(o, "Serving") or {}).get("reason") == "Ready" and o, timeout=300)
    assert obj["status"]["endpoint"] == f"http://iris-production.{namespace}.svc.cluster.local"
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
    ran = {p.metadata.name.rsplit("-", 2)[0] if p.metadata.name.startswith("iris-") else p.metadata.name.split("-")[0]
           for p in pods if p.spec.node_name == "localhost"}
    assert {"ingest", "trials", "iris"} <= ran, ran
    ip = client.CoreV1Api(api_client).read_namespaced_service("iris-production", namespace).spec.cluster_ip
    code, answer = wait_for(lambda: (r := post(f"http://{ip}/predict", {"instances": [ROW]}))[0] == 200 and r, 60)
    assert answer["predictions"][0] == "setosa", answer


    # A second package takes Production: the Deployment rolls to it while requests keep coming, none failing.
    codes: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            codes.append(post(f"http://{ip}/predict", {"instances": [ROW]})[0])
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        apply_object(kubectl, namespace, "ModelPackage", "iris-2", {
            "model": "iris", "trainingRunRef": {"name": "grid"}, "stage": "Production",
            "serve": {"replicas": 1, "resources": {"limits": {"memory": "512Mi"}}}})
        second = packaged(api_client, namespace, "iris-2", timeout=300)
        apps = client.AppsV1Api(api_client)
        wait_for(lambda: (d := apps.read_namespaced_deployment("iris-production", namespace))
                 .spec.template.metadata.annotations["mloop.dev/package-digest"] == second["status"]["digest"]
                 and d.status.updated_replicas == d.status.ready_replicas == d.status.replicas == 1, timeout=300)
        time.sleep(2)  # requests after the old pod is gone
    finally:
        stop.set()
        asker.join(15)
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}

    # Scaled by hand on a real node: the operator puts the package's replicas back.
    apps.patch_namespaced_deployment("iris-production", namespace, {"spec": {"replicas": 3}},
                                     field_manager="kubectl-edit")
    wait_for(lambda: apps.read_namespaced_deployment("iris-production", namespace).spec.replicas == 1, timeout=60)

    # Deleting the packages deletes their Deployment, Service and pods (owner references, garbage collector).
    for name in ("iris-1", "iris-2"):  # iris-1 first: it would take Production back from a deleted iris-2
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object("mloop.dev", "v1alpha1", namespace,
                                                                            "modelpackages", name)
    core = client.CoreV1Api(api_client)
    wait_for(lambda: not [d for d in apps.list_namespaced_deployment(namespace).items
                          if d.metadata.name == "iris-production"]
             and not [s for s in core.list_namespaced_service(namespace).items
                      if s.metadata.name == "iris-production"], timeout=120)
