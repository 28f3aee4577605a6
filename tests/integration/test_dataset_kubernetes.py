"""The kubernetes executor: a restricted Job per ingestion, finished by the real Job controller."""

from __future__ import annotations

import json

from kubernetes import client

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import ready


def job_of(api_client, namespace: str, name: str) -> dict:
    batch = client.BatchV1Api(api_client)
    return api_client.sanitize_for_serialization(batch.read_namespaced_job(name, namespace))


def test_ingestion_job_is_restricted_owned_and_keeps_secrets_out(kubectl, api_client, namespace, operator, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}, "executor": "kubernetes"})
    task = wait_for(lambda: get_object(api_client, namespace, "datasets", "iris").get("status", {}).get("task"))
    dataset = get_object(api_client, namespace, "datasets", "iris")
    job = job_of(api_client, namespace, task)
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "mloop.dev/v1alpha1", "kind": "Dataset", "name": "iris", "uid": dataset["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "mloop-operator" and labels["mloop.dev/dataset"] == "iris"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 1800
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["command"] == ["python", "-m", "mloop.workloads.ingest", f"tasks/{namespace}/{task}/"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOOP_S3_ENDPOINT"]["value"] == s3.endpoint
    assert env["MLOOP_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mloop-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert s3.secret_key not in json.dumps(job)
    assert s3.secret_key not in json.dumps(dataset)
    # The Job controller made the pod; it stays Pending because nothing plays the kubelet in this test.
    pods = kubectl("get", "pods", "-n", namespace, "-l", f"job-name={task}", "-o", "name").stdout.split()
    assert len(pods) == 1
    assert condition(get_object(api_client, namespace, "datasets", "iris"), "Ready")["reason"] == "Ingesting"


def test_kubernetes_executor_end_to_end(kubectl, api_client, namespace, operator, pod_runner, s3_secret) -> None:
    apply_object(kubectl, namespace, "Dataset", "via-job", {"source": {"builtin": {"name": "iris"}}, "executor": "kubernetes"})
    apply_object(kubectl, namespace, "Dataset", "via-local", {"source": {"builtin": {"name": "iris"}}, "executor": "local"})
    via_job = ready(api_client, namespace, "via-job", timeout=120)["status"]
    via_local = ready(api_client, namespace, "via-local")["status"]
    assert via_job["version"] == via_local["version"]
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert len(jobs) == 1
    conditions = {c.type: c.status for c in jobs[0].status.conditions}
    assert conditions.get("Complete") == "True" and jobs[0].status.succeeded == 1
    assert "ingest task finished: Succeeded VersionCut" in next(iter(pod_runner.outputs.values()))
