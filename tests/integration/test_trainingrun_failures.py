"""A storage outage while a run trains, or when it starts: the task exits 75 having written nothing, and the run
is trained again once S3 answers, instead of failing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

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


def test_a_run_applied_while_storage_is_down_waits_and_trains_once_it_answers(kubectl, api_client, namespace,
                                                                              operator, stack, s3) -> None:
    """The operator writes nothing to S3 to start a run: its first task carries spec.json (issue 12). That task
    cannot write it while S3 is down and exits 75 having written nothing; the run waits (StorageUnavailable) and
    its retry, carrying a spec the operator built again on the pinned version (nothing is read back from the lost
    task, whose Job may be gone), trains once S3 answers."""
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    dataset_ready(api_client, namespace, "iris")
    stack.stop_s3()
    try:
        apply_object(kubectl, namespace, "TrainingRun", "early", IRIS_RUN)
        waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "trainingruns", "early"),
                                                   "Succeeded")) and c["reason"] == "StorageUnavailable" and c,
                           timeout=90)
        assert "could not reach it" in waiting["message"]
        status = get_object(api_client, namespace, "trainingruns", "early")["status"]
        assert status["phase"] != "Failed" and len(local_tasks(namespace, "early")) == 1
    finally:
        stack.start_s3()
    obj = succeeded(api_client, namespace, "early", timeout=180)
    assert obj["status"]["retries"] == 1 and len(local_tasks(namespace, "early")) == 2
    assert obj["status"]["metrics"]["accuracy"] > 0.85
    prefix = f"runs/{namespace}/early/{obj['metadata']['uid']}/"
    spec = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=prefix + "spec.json")["Body"].read())
    assert spec["uid"] == obj["metadata"]["uid"] and spec["dataset"]["name"] == "iris"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=early",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert events.count("RunStarted") == 1 and {"StorageUnavailable", "TaskRetried", "RunSucceeded"} <= set(events)


def test_a_run_deleted_mid_training_takes_its_local_process_with_it(kubectl, api_client, namespace, operator) -> None:
    """As the garbage collector ends the pods of a deleted run's Job: a local task is not left training for nobody."""
    from mloop.procs import alive

    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    dataset_ready(api_client, namespace, "iris")
    apply_object(kubectl, namespace, "TrainingRun", "abandoned", {  # minutes of fitting: still running when deleted
        **IRIS_RUN, "cv": {"folds": 2}, "estimator": {"name": "MLPClassifier", "params": {
            "hidden_layer_sizes": [512, 512], "max_iter": 100000, "tol": 0.0, "n_iter_no_change": 100000}}})
    wait_for(lambda: get_object(api_client, namespace, "trainingruns", "abandoned").get("status", {}).get("phase")
             == "Running", timeout=60)
    [record] = local_tasks(namespace, "abandoned")
    pid = json.loads((Path(os.environ["MLOOP_LOCAL_DIR"]) / record).read_text())["pid"]
    try:
        assert alive(pid)
        kubectl("delete", "trainingrun", "abandoned", "-n", namespace, check=True)
        wait_for(lambda: not alive(pid), timeout=30)
    finally:
        if alive(pid):  # not minutes of a core spent on a failed test
            os.killpg(pid, signal.SIGKILL)
