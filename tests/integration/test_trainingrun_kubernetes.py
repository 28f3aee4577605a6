"""TrainingRuns through the kubernetes executor: restricted Jobs, the real Job controller, and restarts;
and the same run in two numeric environments (a pod and the operator's host, or two BLAS kernels)."""

from __future__ import annotations

import math
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from mloop.training.numeric import METRIC_ATOL, METRIC_RTOL, OVERRIDES
from tests.helpers import apply_object, get_object, k8s_events, wait_for
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_trainingrun import IRIS_RUN, run_json, succeeded
from tests.integration.test_trainingrun_admission import local_tasks


def jobs(api_client, namespace: str) -> list:
    return client.BatchV1Api(api_client).list_namespaced_job(namespace).items


def assert_metrics_close(first: dict, second: dict) -> None:
    """Equal within the tolerance docs/kinds/trainingrun.md states across numeric environments; timing aside."""
    a, b = ({k: v for k, v in run["status"]["metrics"].items() if k != "fit_seconds"} for run in (first, second))
    assert a.keys() == b.keys()
    apart = {k: (a[k], b[k]) for k in a if not math.isclose(a[k], b[k], rel_tol=METRIC_RTOL, abs_tol=METRIC_ATOL)}
    assert not apart, apart


def blas_cores(environment: dict) -> set[str]:
    return {lib["architecture"] for lib in environment["libraries"] if lib["internal_api"] == "openblas"}


def test_kubernetes_run_matches_the_local_run(kubectl, api_client, namespace, operator, pod_runner, s3_secret,
                                              s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}, "executor": "local"})
    dataset_ready(api_client, namespace, "iris")
    spec = {**IRIS_RUN, "retries": 1, "deadlineSeconds": 300,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}}
    apply_object(kubectl, namespace, "TrainingRun", "on-job", {**spec, "executor": "kubernetes"})
    apply_object(kubectl, namespace, "TrainingRun", "on-local", {**spec, "executor": "local"})
    on_job, on_local = succeeded(api_client, namespace, "on-job", 180), succeeded(api_client, namespace, "on-local")
    # The pod gets only its own environment, the local task this process's: kernels may differ (issue 12).
    assert_metrics_close(on_job, on_local)
    for run in (on_job, on_local):
        recorded = run_json(s3, run, "result.json")["numericEnvironment"]
        assert blas_cores(recorded) and {lib["num_threads"] for lib in recorded["libraries"]} == {1}
    [job] = [j for j in jobs(api_client, namespace) if j.metadata.name.startswith("train-on-job-")]
    assert job.metadata.owner_references[0].uid == on_job["metadata"]["uid"]
    assert job.spec.backoff_limit == 1 and job.spec.active_deadline_seconds == 300
    container = job.spec.template.spec.containers[0]
    assert container.resources.limits == {"memory": "1Gi"} and container.resources.requests["cpu"] == "500m"
    assert container.security_context.run_as_non_root and container.security_context.read_only_root_filesystem
    assert container.command[-2:] == ["fit", f"runs/{namespace}/on-job/{on_job['metadata']['uid']}/"]
    assert job.metadata.labels["mloop.dev/experiment"] == "iris"
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)


def test_search_runs_as_an_indexed_job(kubectl, api_client, namespace, operator, pod_runner, s3_secret) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "TrainingRun", "grid", {**IRIS_RUN, "executor": "kubernetes", "search": {
        "type": "grid", "parameters": {"C": [0.1, 1.0, 10.0]}, "parallelism": 2}})
    obj = succeeded(api_client, namespace, "grid", 240)
    assert obj["status"]["trials"] == 3 and obj["status"]["bestTrial"]["params"]["C"] in (0.1, 1.0, 10.0)
    [trials] = [j for j in jobs(api_client, namespace) if j.metadata.name.startswith("trials-grid-")]
    assert trials.spec.completion_mode == "Indexed"
    assert (trials.spec.completions, trials.spec.parallelism) == (3, 2)
    assert trials.status.completed_indexes == "0-2" and trials.status.succeeded == 3
    indexes = sorted(cmd for name, cmd in pod_runner.commands.items() if name.startswith("trials-grid-"))
    assert len(indexes) == 3


def started_then_stopped(kubectl: Any, api_client: Any, namespace: str, name: str, args: list[str]) -> str:
    """A kubernetes TrainingRun on the iris Dataset, started by an operator that then stops cleanly: its task."""
    with KopfRunner(args, timeout=120) as first:
        apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}, "executor": "local"})
        dataset_ready(api_client, namespace, "iris")
        apply_object(kubectl, namespace, "TrainingRun", name, {**IRIS_RUN, "executor": "kubernetes"})
        task = wait_for(lambda: get_object(api_client, namespace, "trainingruns", name).get("status", {}).get("task"))
    assert first.exit_code == 0
    return task


def test_operator_restart_mid_run_creates_no_second_job(kubectl, api_client, namespace, stack, pod_runner, s3_secret) -> None:
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    task = started_then_stopped(kubectl, api_client, namespace, "resilient", args)
    with KopfRunner(args, timeout=120) as second:
        obj = succeeded(api_client, namespace, "resilient", 180)
    assert second.exit_code == 0
    names = [j.metadata.name for j in jobs(api_client, namespace)]
    assert names == [task]
    assert obj["status"]["metrics"]["accuracy"] > 0.85


@contextmanager
def timer_silenced() -> Iterator[None]:
    """The TrainingRun timer made to come only after an hour, so what folds a run can only be the jobs watch."""
    from mloop.handlers.trainingrun import trainingrun_tick

    spawning = kopf.get_default_registry()._spawning
    saved = list(spawning._handlers)
    spawning._handlers = [replace(h, interval=3600.0, initial_delay=3600.0) if h.fn is trainingrun_tick else h
                          for h in saved]
    try:
        yield
    finally:
        spawning._handlers = saved


def test_a_job_finished_while_the_operator_was_down_is_folded_by_the_watch(kubectl, api_client, namespace, stack,
                                                                          pod_runner, s3_secret) -> None:
    """The Job finishes with no operator running; the next operator, whose timer would come only after an hour, sees
    the finished Job in its initial listing and folds the run once (issue 12: nothing polls a Job)."""
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    task = started_then_stopped(kubectl, api_client, namespace, "unwatched", args)
    batch = client.BatchV1Api(api_client)
    wait_for(lambda: any(c.type == "Complete" and c.status == "True"
                         for c in batch.read_namespaced_job(task, namespace).status.conditions or []), 120)
    assert get_object(api_client, namespace, "trainingruns", "unwatched")["status"]["phase"] in ("Pending", "Running")
    with timer_silenced(), KopfRunner(args, timeout=120) as second:
        obj = succeeded(api_client, namespace, "unwatched", 60)
        wait_for(lambda: not obj_outbox(api_client, namespace, "unwatched"))
    assert second.exit_code == 0
    assert obj["status"]["metrics"]["accuracy"] > 0.85
    assert [j.metadata.name for j in jobs(api_client, namespace)] == [task]
    reasons = [reason for reason, _ in k8s_events(api_client, namespace, "unwatched")]
    assert reasons.count("RunStarted") == 1 and reasons.count("RunSucceeded") == 1, reasons


def obj_outbox(api_client, namespace: str, name: str) -> list:
    return get_object(api_client, namespace, "trainingruns", name).get("status", {}).get("outbox") or []


def test_local_restart_mid_run_starts_no_second_process(kubectl, api_client, namespace, stack) -> None:
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    with KopfRunner(args, timeout=120):
        apply_object(kubectl, namespace, "Dataset", "digits", {"source": {"builtin": {"name": "digits"}}})
        dataset_ready(api_client, namespace, "digits")
        apply_object(kubectl, namespace, "TrainingRun", "steady", {"datasetRef": {"name": "digits"}, "target": "digit",
                     "estimator": {"name": "RandomForestClassifier", "params": {"n_estimators": 150}}})
        wait_for(lambda: get_object(api_client, namespace, "trainingruns", "steady").get("status", {}).get("task"))
    assert get_object(api_client, namespace, "trainingruns", "steady")["status"]["phase"] in ("Pending", "Running")
    with KopfRunner(args, timeout=120):
        succeeded(api_client, namespace, "steady", 180)
    assert len(local_tasks(namespace, "steady")) == 1


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS core type names are per architecture")
def test_a_host_forcing_a_blas_kernel_records_it_and_stays_within_tolerance(kubectl, api_client, namespace, stack, s3,
                                                                           monkeypatch) -> None:
    """Some hosts set OPENBLAS_CORETYPE; local tasks inherit the operator's environment, so their kernel follows it."""
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    local = {**IRIS_RUN, "executor": "local"}
    with KopfRunner(args, timeout=120):
        apply_object(kubectl, namespace, "Dataset", "iris",
                     {"source": {"builtin": {"name": "iris"}}, "executor": "local"})
        dataset_ready(api_client, namespace, "iris")
        apply_object(kubectl, namespace, "TrainingRun", "detected", local)
        detected = succeeded(api_client, namespace, "detected")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")  # SSE3: runs on any x86-64, and no recent CPU detects it
    with KopfRunner(args, timeout=120):
        apply_object(kubectl, namespace, "TrainingRun", "forced", local)
        forced = succeeded(api_client, namespace, "forced")
    detected_env = run_json(s3, detected, "metrics.json")["numericEnvironment"]
    forced_env = run_json(s3, forced, "metrics.json")["numericEnvironment"]
    assert detected_env["overrides"] == {} and forced_env["overrides"] == {"OPENBLAS_CORETYPE": "Prescott"}
    assert blas_cores(forced_env) and blas_cores(forced_env).isdisjoint(blas_cores(detected_env))
    assert run_json(s3, forced, "result.json")["numericEnvironment"] == forced_env
    assert_metrics_close(forced, detected)
