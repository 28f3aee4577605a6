"""Pods on the test bed's real node: the runtime enforces what the YAML says, and Services answer the host."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from typing import Any

from kubernetes import client

from mloop.localcluster.images import PAUSE_IMAGE
from mloop.localcluster.node import GATEWAY, POD_SUBNET
from tests.helpers import wait_for

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}


def _finished(job: Any) -> Any:
    """The Job once it has ended. Not any condition: the Job controller writes SuccessCriteriaMet (and
    FailureTarget) before Complete (and Failed), and a test that read in between saw no Complete."""
    ended = any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])
    return job if ended else None


def _apply(kubectl: Any, namespace: str, obj: dict) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=True)


def test_restricted_job_completes_on_the_node(kubectl: Any, api_client: Any, namespace: str, stack: Any) -> None:
    """Non-root, read-only root and no capabilities hold inside the container; the pod gets a bridge address and
    reaches the S3 server at the bridge's gateway."""
    s3 = stack.info.s3_endpoint
    script = ("echo uid=$(id -u); if touch /written 2>/dev/null; then echo root-writable; else echo root-read-only; "
              f"fi; grep CapEff /proc/self/status; wget -q -O /dev/null {s3}/ 2>&1; exit 0")
    _apply(kubectl, namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "restricted"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "securityContext": RESTRICTED_POD,
            "containers": [{"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", script], "securityContext": RESTRICTED_CONTAINER}]}}},
    })
    batch = client.BatchV1Api(api_client)
    job = wait_for(lambda: _finished(batch.read_namespaced_job("restricted", namespace)), 120)
    assert [(c.type, c.status) for c in job.status.conditions if c.type in ("Complete", "Failed")] == [("Complete", "True")]
    pod = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="job-name=restricted").items[0]
    assert pod.spec.node_name == "localhost"
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_SUBNET)
    logs = kubectl("logs", "-n", namespace, "job/restricted", check=True).stdout
    assert "uid=65534" in logs
    assert "root-read-only" in logs
    assert "CapEff:\t0000000000000000" in logs
    assert f"{GATEWAY}" in s3 and "HTTP/1.1 403" in logs  # reached S3 (no credentials: refused)


def test_pod_over_its_memory_limit_ends_oomkilled(kubectl: Any, api_client: Any, namespace: str) -> None:
    _apply(kubectl, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
        "spec": {"restartPolicy": "Never", "securityContext": RESTRICTED_POD,
                 "containers": [{"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", "tail /dev/zero"],
                                 "resources": {"limits": {"memory": "32Mi"}},
                                 "securityContext": RESTRICTED_CONTAINER}]},
    })
    core = client.CoreV1Api(api_client)
    pod = wait_for(lambda: (p := core.read_namespaced_pod("hog", namespace)).status.phase == "Failed" and p, 120)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_service_answers_the_host_through_kube_proxy(kubectl: Any, api_client: Any, namespace: str) -> None:
    """A Deployment's pod becomes ready by its probe; its ClusterIP Service answers from the host."""
    labels = {"app": "web"}
    _apply(kubectl, namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"securityContext": RESTRICTED_POD,
                     "containers": [{
                         "name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                         "command": ["sh", "-c", "mkdir -p /tmp/www && echo served-by-$(hostname) > "
                                                 "/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                         "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
                         "securityContext": RESTRICTED_CONTAINER,
                         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                     "volumes": [{"name": "tmp", "emptyDir": {}}]}}},
    })
    _apply(kubectl, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    kubectl("rollout", "status", "-n", namespace, "deploy/web", "--timeout=120s", check=True)
    ip = client.CoreV1Api(api_client).read_namespaced_service("web", namespace).spec.cluster_ip

    def get() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{ip}/index.html", timeout=2) as resp:  # noqa: S310
                return resp.read().decode()
        except OSError:
            return None  # kube-proxy writes the rules a moment after the EndpointSlice

    body = wait_for(get, 60)
    assert body.startswith("served-by-web-")

    # Another pod reaches it through the same ClusterIP: the host routes it back onto the bridge.
    _apply(kubectl, namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "client"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "securityContext": RESTRICTED_POD,
            "containers": [{"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["wget", "-q", "-O", "-", f"http://{ip}/index.html"],
                            "securityContext": RESTRICTED_CONTAINER}]}}},
    })
    batch = client.BatchV1Api(api_client)
    job = wait_for(lambda: _finished(batch.read_namespaced_job("client", namespace)), 120)
    assert [(c.type, c.status) for c in job.status.conditions if c.type in ("Complete", "Failed")] == [("Complete", "True")]
    assert kubectl("logs", "-n", namespace, "job/client", check=True).stdout.startswith("served-by-web-")
