"""Several teams, several namespaces: `python -m mloop` with MLOOP_NAMESPACES watches exactly those,
keeps each namespace's artifacts under its own S3 prefix, and resolves references in the object's own
namespace unless another one is spelled out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from kubernetes import client

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_trainingrun import IRIS_RUN, finished, succeeded

IRIS = {"source": {"builtin": {"name": "iris"}}}


def test_watched_namespaces_separate_artifacts_and_references(stack, kubectl, api_client, s3) -> None:
    core = client.CoreV1Api(api_client)
    team_a, team_b, other = (f"t-{uuid.uuid4().hex[:8]}-{suffix}" for suffix in ("a", "b", "x"))
    for ns in (team_a, team_b, other):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    env = {**os.environ, "KUBECONFIG": stack.info.kubeconfig, "MLOOP_NAMESPACES": f"{team_a}, {team_b}",
           "MLOOP_LIVENESS_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "mloop"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        apply_object(kubectl, other, "Dataset", "iris", IRIS)
        apply_object(kubectl, team_a, "Dataset", "iris", IRIS)
        apply_object(kubectl, team_b, "Dataset", "iris", {**IRIS, "source": {"builtin": {"name": "wine"}}})
        # Both teams have a Dataset "iris"; team-b's holds the wine table. A bare reference stays in team-b.
        apply_object(kubectl, team_b, "TrainingRun", "local", IRIS_RUN)
        apply_object(kubectl, team_b, "TrainingRun", "borrowed", {
            **IRIS_RUN, "datasetRef": {"name": "iris", "namespace": team_a}})
        apply_object(kubectl, team_b, "Dataset", "flowers", IRIS)

        borrowed = succeeded(api_client, team_b, "borrowed")
        status_a = get_object(api_client, team_a, "datasets", "iris")["status"]
        assert borrowed["status"]["datasetDigest"] == status_a["digest"]
        assert borrowed["status"]["modelUri"].startswith(f"s3://{s3.bucket}/runs/{team_b}/borrowed/")
        wine = wait_for(lambda: get_object(api_client, team_b, "datasets", "iris").get("status", {}).get("digest"),
                        timeout=60)
        assert wine != status_a["digest"]
        local = finished(api_client, team_b, "local")
        assert local["status"]["datasetDigest"] == wine
        refused = condition(local, "Succeeded")
        assert (refused["status"], refused["reason"]) == ("False", "TargetNotFound") and "species" in refused["message"]

        # The same content in two namespaces is two versions, each under its namespace's prefix.
        flowers = wait_for(lambda: get_object(api_client, team_b, "datasets", "flowers").get("status", {}).get("digest"),
                           timeout=60)
        assert flowers == status_a["digest"]
        digest = flowers.removeprefix("sha256:")
        for ns, name in ((team_a, "iris"), (team_b, "flowers")):
            listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"datasets/{ns}/{name}/{digest}/")
            assert {o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])} >= {"data.parquet", "manifest.json"}

        # Everything in the watched namespaces has been handled by now; the unwatched one was never touched.
        assert "status" not in get_object(api_client, other, "datasets", "iris")
        assert s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"datasets/{other}/").get("KeyCount") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        for ns in (team_a, team_b, other):
            core.delete_namespace(ns, propagation_policy="Background")
    assert proc.returncode == 0, output[-3000:]
