"""Opt-in: the mloop image with the kubernetes executor. The operator runs in the image, the real Job
controller makes the pods, and the pod runner starts each pod's container from the image with the pod's own
restricted security context. What kind-e2e does minus the nodes; `make image-check` runs it."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import uuid

import pytest

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_trainingrun import IRIS_RUN, succeeded
from tests.podrunner import PodRunner

ENGINE = shlex.split(os.environ.get("MLOOP_E2E_ENGINE", ""))
RUN_FLAGS = shlex.split(os.environ.get("MLOOP_E2E_RUN_FLAGS", ""))
IMAGE = os.environ.get("MLOOP_E2E_IMAGE", "localhost/mloop:dev")

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not ENGINE, reason="opt-in: set MLOOP_E2E_ENGINE to a container engine command (docker, podman) that has "
                       "built MLOOP_E2E_IMAGE (make image-check does both)")]


def test_iris_through_jobs_in_the_image(stack, kubeconfig, api_client, kubectl, namespace, s3_secret, s3) -> None:
    info = stack.info
    name = f"mloop-e2e-{uuid.uuid4().hex[:6]}"
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file, \
            tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as config:
        config.write(open(kubeconfig).read())
        config.flush()
        os.chmod(config.name, 0o644)  # read by uid 10001 in the container
        env_file.write("".join(f"{k}={v}\n" for k, v in {
            "KUBECONFIG": "/kube/config", "MLOOP_S3_ENDPOINT": info.s3_endpoint, "MLOOP_BUCKET": info.bucket,
            "MLOOP_S3_ACCESS_KEY": info.s3_access_key, "MLOOP_S3_SECRET_KEY": info.s3_secret_key,
            "MLOOP_EXECUTOR": "kubernetes", "MLOOP_IMAGE": IMAGE, "MLOOP_NAMESPACES": namespace,
            "MLOOP_LIVENESS_PORT": "0", "MLOOP_POLL_INTERVAL": "1"}.items()))
        env_file.flush()
        subprocess.run([*ENGINE, "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *RUN_FLAGS,
                        "--env-file", env_file.name, "-v", f"{config.name}:/kube/config:ro", IMAGE],
                       check=True, capture_output=True)
        try:
            with PodRunner(api_client, namespace, engine=ENGINE, run_flags=RUN_FLAGS) as pods:
                apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
                version = dataset_ready(api_client, namespace, "iris", timeout=300)["status"]["version"]
                apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {**IRIS_RUN, "search": {
                    "type": "grid", "parameters": {"C": [0.5, 1.0]}, "parallelism": 2}})
                run = succeeded(api_client, namespace, "iris-lr", timeout=600)
                apply_object(kubectl, namespace, "ModelPackage", "iris-lr-1", {
                    "model": "iris", "trainingRunRef": {"name": "iris-lr"}, "stage": "Staging"})
                package = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-lr-1"))
                                   .get("status", {}).get("phase") in ("Packaged", "Failed") and o, timeout=300)
        finally:
            logs = subprocess.run([*ENGINE, "logs", name], capture_output=True, text=True).stdout[-3000:]
            subprocess.run([*ENGINE, "rm", "-f", name], capture_output=True)
    assert package["status"]["phase"] == "Packaged", (package["status"], logs)
    assert run["status"]["dataset"] == f"iris@{version}" and run["status"]["trials"] == 2
    assert condition(package, "Ready")["status"] == "True"
    # Every task ran in the image, as the pod's user, on a read-only root with nothing but /tmp writable.
    kinds = {pod.split("-")[0] for pod in pods.commands}
    assert kinds >= {"ingest", "trials", "train", "package"}, sorted(pods.commands)
    for pod, command in pods.commands.items():
        flags = " ".join(command)
        assert IMAGE in command and "--read-only" in command and "--user 10001:10001" in flags, flags
        assert "--cap-drop ALL" in flags and "--tmpfs /tmp:rw,mode=1777" in flags
        assert not any(s3.secret_key in part for part in command)  # keys reach the container by env file only
