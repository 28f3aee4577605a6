"""A storage outage while a run trains: the trainer exits 75 having written nothing, and the run is trained
again once S3 answers, instead of failing."""

from __future__ import annotations

import hashlib
import time

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_trainingrun import IRIS_RUN, succeeded
from tests.integration.test_trainingrun_admission import local_tasks

OUTAGE_SECONDS = 20


def test_a_run_that_loses_storage_while_training_is_retried_and_succeeds(kubectl, api_client, namespace, operator,
                                                                         stack, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    dataset_ready(api_client, namespace, "iris")
    # Enough trees that the fit is still running when S3 goes away: it reads its data, then cannot write.
    apply_object(kubectl, namespace, "TrainingRun", "outlived", {
        **IRIS_RUN, "estimator": {"name": "RandomForestClassifier", "params": {"n_estimators": 300}}})
    first = wait_for(lambda: get_object(api_client, namespace, "trainingruns", "outlived").get("status", {}).get("task"),
                     timeout=60)
    stack.stop_s3()
    stopped = time.monotonic()
    try:
        waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "trainingruns", "outlived"),
                                                   "Succeeded")) and c["reason"] == "StorageUnavailable" and c,
                           timeout=120)
        assert waiting["status"] == "Unknown" and "could not reach it" in waiting["message"]
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        during = get_object(api_client, namespace, "trainingruns", "outlived")["status"]
        assert during["phase"] != "Failed" and during["task"] == first  # waits for S3 rather than retrying blind
    finally:
        stack.start_s3()
    obj = succeeded(api_client, namespace, "outlived", timeout=180)
    status = obj["status"]
    assert status["retries"] == 1 and "task" not in status
    assert len(local_tasks(namespace, "outlived")) == 2  # the lost task and the one that trained
    assert status["metrics"]["accuracy"] > 0.85
    key = f"runs/{namespace}/outlived/{obj['metadata']['uid']}/model.skops"
    model = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert status["modelDigest"] == "sha256:" + hashlib.sha256(model).hexdigest()
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=outlived",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert {"RunStarted", "StorageUnavailable", "TaskRetried", "RunSucceeded"} <= set(events)
    assert events.count("RunStarted") == 1


def test_a_run_applied_while_storage_is_down_waits_and_starts_once_it_answers(kubectl, api_client, namespace,
                                                                              operator, stack, s3) -> None:
    """No ping asks S3 before a start: the spec's write is the first S3 call, and its failure is decided on as an
    outage (StorageUnavailable, nothing submitted), not raised as an error."""
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    dataset_ready(api_client, namespace, "iris")
    stack.stop_s3()
    try:
        apply_object(kubectl, namespace, "TrainingRun", "early", IRIS_RUN)
        waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "trainingruns", "early"),
                                                   "Succeeded")) and c["reason"] == "StorageUnavailable" and c,
                           timeout=60)
        assert "the run starts once it answers" in waiting["message"]
        status = get_object(api_client, namespace, "trainingruns", "early")["status"]
        assert not status.get("task") and local_tasks(namespace, "early") == []
    finally:
        stack.start_s3()
    obj = succeeded(api_client, namespace, "early", timeout=180)
    assert len(local_tasks(namespace, "early")) == 1 and obj["status"]["metrics"]["accuracy"] > 0.85
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=early",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert events.count("RunStarted") == 1 and "StorageUnavailable" in events
