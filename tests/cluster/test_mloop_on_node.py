"""mloop on the real node with the kubernetes executor and no pod runner: every task is a Job whose pod runs
the mloop image under containerd, and the model server is a Deployment reached through its Service."""

from __future__ import annotations

import contextlib
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
import yaml
from kopf.testing import KopfRunner
from kubernetes import client

from tests.conftest import stop_local_servers
from tests.helpers import apply_object, condition, get_object, operator_settings, wait_for
from tests.integration.test_loop import loop_traffic
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_trainingrun import IRIS_RUN, finished, succeeded

BUILD_IMAGES = Path(__file__).resolve().parents[2] / "operator" / "mloop" / "localcluster" / "build-images.sh"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="package")
def mloop_image(stack: Any) -> str:
    """The mloop image from the Dockerfile (podman, local base stand-ins; cached), imported into the node."""
    prebuilt = os.environ.get("MLOOP_IMAGE_ARCHIVE")  # `make test` builds it first, where the node can run
    if not (prebuilt or os.environ.get("MLOOP_CLUSTER_IMAGE")):
        pytest.skip("mloop on the real node needs the mloop image (root, podman and debootstrap; about 10 min to "
                    "build cold): `make test` builds it where the node can run, `make cluster-e2e` too "
                    "(or set MLOOP_CLUSTER_IMAGE=1, or MLOOP_IMAGE_ARCHIVE to an archive build-images.sh printed)")
    if prebuilt:  # an archive build-images.sh made earlier: in a shared work tree, any edit under operator/ renames it
        archive = Path(prebuilt)
    else:
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


@contextlib.contextmanager
def asking(ip: str) -> Iterator[list[int]]:
    """Ask the Service for a prediction every 50 ms while the block runs; the answers' status codes."""
    codes: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            codes.append(post(f"http://{ip}/predict", {"instances": [ROW]})[0])
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        yield codes
    finally:
        stop.set()
        asker.join(15)


def test_iris_on_the_node_to_a_served_prediction(kubectl, api_client, namespace, node_operator, s3_secret) -> None:
    """Ingest Job, grid search as an Indexed Job, fit and packaging Jobs, then the server Deployment (probes) and
    its Service, answering the host through kube-proxy."""
    apply_object(kubectl, namespace, "Dataset", "iris", {**IRIS_DS, "executor": "kubernetes"})
    apply_object(kubectl, namespace, "TrainingRun", "grid", {**IRIS_RUN, "executor": "kubernetes", "search": {
        "type": "grid", "parameters": {"C": [0.1, 1.0]}, "parallelism": 2}})
    run = succeeded(api_client, namespace, "grid", 600)
    jobs = {j.metadata.name: j for j in client.BatchV1Api(api_client).list_namespaced_job(namespace).items}
    [trials] = [j for name, j in jobs.items() if name.startswith("trials-grid-")]
    # Two indexes are listed, not a range ("0-1" starts at three).
    assert trials.spec.completion_mode == "Indexed" and trials.status.completed_indexes == "0,1"
    assert run["status"]["trials"] == 2
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {
        "model": "iris", "trainingRunRef": {"name": "grid"}, "stage": "Production",
        "serve": {"replicas": 1, "resources": {"limits": {"memory": "512Mi"}}}})
    packaged(api_client, namespace, "iris-1", timeout=300)
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))
                   and (condition(o, "Serving") or {}).get("reason") == "Available" and o, timeout=300)
    assert obj["status"]["endpoint"] == f"http://iris-production.{namespace}.svc.cluster.local"
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
    ran = {p.metadata.name.rsplit("-", 2)[0] if p.metadata.name.startswith("iris-") else p.metadata.name.split("-")[0]
           for p in pods if p.spec.node_name == "localhost"}
    assert {"ingest", "trials", "train", "package", "iris-production"} <= ran, ran
    ip = client.CoreV1Api(api_client).read_namespaced_service("iris-production", namespace).spec.cluster_ip
    code, answer = wait_for(lambda: (r := post(f"http://{ip}/predict", {"instances": [ROW]}))[0] == 200 and r, 60)
    assert answer["predictions"][0] == "setosa", answer


    # A second package takes Production: the Deployment rolls to it while requests keep coming, none failing.
    with asking(ip) as codes:
        apply_object(kubectl, namespace, "ModelPackage", "iris-2", {
            "model": "iris", "trainingRunRef": {"name": "grid"}, "stage": "Production",
            "serve": {"replicas": 1, "resources": {"limits": {"memory": "512Mi"}}}})
        second = packaged(api_client, namespace, "iris-2", timeout=300)
        apps = client.AppsV1Api(api_client)
        wait_for(lambda: (d := apps.read_namespaced_deployment("iris-production", namespace))
                 .spec.template.metadata.annotations["mloop.dev/package-digest"] == second["status"]["digest"]
                 and d.status.updated_replicas == d.status.ready_replicas == d.status.replicas == 1, timeout=300)
        time.sleep(2)  # requests after the old pod is gone
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


DEV_OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "dev"
OPERATOR_SA = "system:serviceaccount:mloop-system:mloop-operator"
# The test bed has no cluster DNS: the overlay's S3 Service gets a fixed ClusterIP, which the settings then name,
# and the operator's pods resolve kubernetes.default.svc (the `kubernetes` Service's first address) from /etc/hosts.
S3_IP = "10.0.0.70"


@pytest.fixture
def in_cluster_operator(stack: Any, kubectl: Any, api_client: Any, namespace: str, mloop_image: str) -> Iterator[None]:
    """`kubectl apply -k manifests/overlays/dev` as a user would, watching the test's namespace: two operator
    replicas (leader election) and the overlay's own S3 server, all pods of the mloop image on the node."""
    stack.tag_image(mloop_image, "mloop:dev")  # the overlay's name for it: pods never pull
    docs = list(yaml.safe_load_all(kubectl("kustomize", str(DEV_OVERLAY), check=True).stdout))
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "mloop-config":
            doc["data"].update(MLOOP_S3_ENDPOINT=f"http://{S3_IP}:7070", MLOOP_NAMESPACES=namespace)
        if doc["kind"] == "Service" and doc["metadata"]["name"] == "mloop-s3":
            doc["spec"]["clusterIP"] = S3_IP
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "mloop-operator":  # kopf's in-cluster login
            doc["spec"]["template"]["spec"]["hostAliases"] = [
                {"ip": "10.0.0.1", "hostnames": ["kubernetes.default.svc"]}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=True)
    # Task pods and model servers in the team's namespace take the S3 keys from a Secret there.
    kubectl("create", "secret", "generic", "mloop-s3", "-n", namespace, "--from-literal=AWS_ACCESS_KEY_ID=mloop-dev",
            "--from-literal=AWS_SECRET_ACCESS_KEY=mloop-dev-not-a-secret", check=True)
    apps = client.AppsV1Api(api_client)
    try:
        wait_for(lambda: all((d := apps.read_namespaced_deployment(name, "mloop-system")).status.available_replicas
                             == d.spec.replicas for name in ("mloop-operator", "mloop-s3")), timeout=300, interval=1)
        yield
    finally:  # the operator's pods end while the node still runs (a pod left terminating leaves a shim behind)
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found",
                input=yaml.safe_dump_all(d for d in docs if d["kind"] != "CustomResourceDefinition"))
        wait_for(lambda: not client.CoreV1Api(api_client).list_namespaced_pod("mloop-system").items, timeout=120)


def can_i(kubectl: Any, *args: str) -> bool:
    """The API server's own answer (SubjectAccessReview) for the operator's ServiceAccount."""
    return kubectl("auth", "can-i", *args, f"--as={OPERATOR_SA}").stdout.strip() == "yes"


def leader(api_client: Any) -> str:
    """The leading operator's identity: its pod's name and a random suffix, new in every process."""
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("mloop-operator", "mloop-system")
    return lease.spec.holder_identity or ""


def operator_container(api_client: Any, pod: str) -> Any:
    [status] = [c for c in client.CoreV1Api(api_client).read_namespaced_pod(pod, "mloop-system").status
                .container_statuses if c.name == "operator"]
    return status


def sigkill(stack: Any, container_id: str) -> None:
    """A crash, not a shutdown: SIGKILL to the container's process through the node's containerd. The process
    releases nothing (its Lease stays held until it goes stale), and the kubelet restarts the container."""
    from mloop.localcluster.node import NodePaths

    sock = NodePaths(stack.dir / "node").sock
    subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "task", "kill", "--signal", "SIGKILL",
                    container_id.split("://", 1)[1]], check=True, capture_output=True, text=True)


@pytest.fixture
def long_scenario() -> None:
    if not os.environ.get("MLOOP_CLUSTER_E2E"):
        pytest.skip("the operator in the cluster through feedback, retraining and a crash mid-rollout takes about "
                    "3.5 min more (two operator replicas, the overlay's S3 server): `make cluster-e2e` runs it (or set "
                    "MLOOP_CLUSTER_E2E=1)")


@pytest.mark.timeout(1500)
def test_operator_in_cluster_runs_the_loop_and_survives_a_crash_mid_rollout(
        long_scenario, stack, kubectl, api_client, namespace, in_cluster_operator) -> None:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    # Least privilege, asked of the API server: no Secrets but the erasure keys' name, no Nodes.
    assert not can_i(kubectl, "get", "secrets", "-n", namespace)
    assert not can_i(kubectl, "list", "secrets", "--all-namespaces")
    assert not can_i(kubectl, "get", "secrets/mloop-s3", "-n", "mloop-system")
    assert can_i(kubectl, "get", "secrets/mloop-erasure-keys", "-n", namespace)
    assert not can_i(kubectl, "delete", "nodes")
    assert not can_i(kubectl, "get", "nodes")
    assert can_i(kubectl, "create", "jobs", "-n", namespace)  # and the loop below proves what it has is enough
    operators = core.list_namespaced_pod("mloop-system", label_selector="app.kubernetes.io/component=operator").items
    assert len(operators) == 2 and {p.spec.node_name for p in operators} == {"localhost"}
    assert all(p.spec.service_account_name == "mloop-operator" for p in operators)

    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "species", {
        "title": "Suggest the species", "metrics": [{"metric": "accuracy", "min": 0.6, "primary": True}],
        "retrain": {"templateRunRef": {"name": "stump"}, "datasetRef": {"name": "feedback"},
                    "trigger": {"minNewRows": 40}, "promoteTo": "Production"}})
    # A deliberately weak first model: one split tells setosa from the rest.
    apply_object(kubectl, namespace, "TrainingRun", "stump", {**IRIS_RUN, "requirementRefs": [{"name": "species"}],
                 "estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 1}}})
    first_run = succeeded(api_client, namespace, "stump", 600)
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {
        "model": "iris", "trainingRunRef": {"name": "stump"}, "stage": "Production",
        "serve": {"samplingRate": 1.0, "resources": {"limits": {"memory": "512Mi"}}}})
    packaged(api_client, namespace, "iris-1", timeout=300)
    wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))
             and (condition(o, "Serving") or {}).get("reason") == "Available", timeout=300)
    ip = core.read_namespaced_service("iris-production", namespace).spec.cluster_ip
    apply_object(kubectl, namespace, "Dataset", "feedback", {"source": {"collection": {
        "model": "iris", "stage": "Production", "minNewRows": 40, "interval": "1s"}}})

    # Predictions through kube-proxy, then the true labels for them.
    instances, truth = loop_traffic()
    code, answer = wait_for(lambda: (r := post(f"http://{ip}/predict", {"instances": instances}))[0] == 200 and r, 60)
    code, _ = post(f"http://{ip}/feedback", {"feedback": [{"id": i, "label": t} for i, t in zip(answer["ids"], truth)]})
    assert code == 202

    # The retrained package is promoted; the moment its Deployment starts rolling, the leading operator's process
    # is SIGKILLed. The kubelet restarts its container, a new process (the standby or the restarted one) takes
    # the Lease once it is stale; requests keep being answered.
    with asking(ip) as codes:
        wait_for(lambda: apps.read_namespaced_deployment("iris-production", namespace).spec.template.metadata
                 .annotations["mloop.dev/package"] == "species-retrain-1", timeout=900, interval=0.5)
        first_leader = leader(api_client)
        killed_pod = first_leader.rsplit("_", 1)[0]
        before = operator_container(api_client, killed_pod)
        sigkill(stack, before.container_id)
        promoted = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "species-retrain-1"))
                            .get("status", {}).get("stage") == "Production"
                            and (condition(o, "Serving") or {}).get("reason") == "Available" and o, timeout=300)
        wait_for(lambda: (d := apps.read_namespaced_deployment("iris-production", namespace)).status.updated_replicas
                 == d.status.ready_replicas == d.status.replicas == 1, timeout=300)
        time.sleep(2)  # requests after the old pod is gone
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    wait_for(lambda: leader(api_client) not in (first_leader, ""), timeout=60)
    after = wait_for(lambda: (c := operator_container(api_client, killed_pod)).restart_count > before.restart_count
                     and c.ready and c, timeout=120)
    assert after.last_state.terminated.exit_code == 137, after.last_state  # killed by the signal, not exited
    assert killed_pod in {p.metadata.name for p in core.list_namespaced_pod("mloop-system").items}  # not replaced

    run = succeeded(api_client, namespace, "species-retrain-1", 60)
    assert run["status"]["metrics"]["accuracy"] > first_run["status"]["metrics"]["accuracy"]
    assert promoted["status"]["version"] == 2
    wait_for(lambda: get_object(api_client, namespace, "modelpackages", "iris-1")["status"]["stage"] == "Archived",
             timeout=120)
    code, answer = post(f"http://{ip}/predict", {"instances": [instances[-1]]})
    assert code == 200 and answer["version"] == 2
    # Once per transition, across the restart: one retraining, one run and package for it, one rollout.
    status = get_object(api_client, namespace, "requirements", "species")["status"]
    assert [r["run"] for r in status["retrains"]] == ["species-retrain-1"]
    custom = client.CustomObjectsApi(api_client)
    runs = custom.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, "trainingruns")["items"]
    packages = custom.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, "modelpackages")["items"]
    assert sorted(o["metadata"]["name"] for o in runs) == ["species-retrain-1", "stump"]
    assert sorted(o["metadata"]["name"] for o in packages) == ["iris-1", "species-retrain-1"]
    sets = apps.list_namespaced_replica_set(namespace, label_selector="app.kubernetes.io/instance=iris-production")
    assert len(sets.items) == 2, [s.metadata.annotations for s in sets.items]
    triggered = [e for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=species").items
                 if e.reason == "RetrainTriggered"]
    assert len(triggered) == 1 and (triggered[0].count or 1) == 1, triggered
