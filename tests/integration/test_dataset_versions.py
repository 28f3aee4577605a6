"""Versions: unchanged data is a no-op, changed data appends a version, refresh re-reads, restarts converge."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
from kopf.testing import KopfRunner

from tests.helpers import apply_object, get_object, wait_for
from tests.integration.test_dataset_sources import iris_frame, put, ready


def _workloads(namespace: str) -> list[int]:
    """The workload processes the local executor's supervisors started for a namespace's tasks. A supervisor starts
    its workload only after it has claimed the task, so stopping a workload never holds up the operator's submit."""
    supervisors, workloads = set(), []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"mloop.executors.localrun" in cmdline and namespace.encode() in cmdline:
            supervisors.add(int(proc.name))
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in supervisors:
            workloads.append(int(proc.name))
    return workloads


def tasks_for(dataset: str, namespace: str) -> list[str]:
    """Local-executor tasks started for one Dataset (one record file per task)."""
    directory = Path(os.environ["MLOOP_LOCAL_DIR"])
    return sorted(p.name for p in directory.glob(f"{namespace}.ingest-{dataset}-*.json"))


def test_reapply_and_governance_edits_start_no_task(kubectl, api_client, namespace, operator) -> None:
    spec = {"source": {"builtin": {"name": "wine"}}, "governance": {"license": "BSD-3-Clause", "classification": "public"}}
    apply_object(kubectl, namespace, "Dataset", "wine", spec)
    first = ready(api_client, namespace, "wine")["status"]
    assert tasks_for("wine", namespace) and len(tasks_for("wine", namespace)) == 1

    apply_object(kubectl, namespace, "Dataset", "wine", spec)  # the same YAML again
    spec["governance"]["owner"] = "wine-team"  # a new generation, the same content
    apply_object(kubectl, namespace, "Dataset", "wine", spec)
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "datasets", "wine"))["status"].get(
        "observedGeneration") == o["metadata"]["generation"] and o)
    assert obj["metadata"]["generation"] == 2
    assert len(tasks_for("wine", namespace)) == 1
    assert obj["status"]["version"] == first["version"]
    assert [v["version"] for v in obj["status"]["versions"]] == [first["version"]]


def test_changed_data_appends_a_version_on_refresh(kubectl, api_client, namespace, operator, s3) -> None:
    frame = iris_frame()
    uri = put(s3, f"refresh/{namespace}/data.csv", frame.iloc[:100].to_csv(index=False).encode())
    apply_object(kubectl, namespace, "Dataset", "live", {"source": {"s3": {"uri": uri}}, "refresh": {"interval": "1s"}})
    first = ready(api_client, namespace, "live")["status"]
    assert first["rows"] == 100
    # Unchanged refreshes cut nothing new.
    wait_for(lambda: len(tasks_for("live", namespace)) >= 3, timeout=30)
    assert len(get_object(api_client, namespace, "datasets", "live")["status"]["versions"]) == 1

    put(s3, f"refresh/{namespace}/data.csv", frame.to_csv(index=False).encode())
    second = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "live")["status"])["rows"] == 150 and s)
    assert second["version"] != first["version"]
    assert [v["version"] for v in second["versions"]] == [first["version"], second["version"]]
    assert [v["rows"] for v in second["versions"]] == [100, 150]
    # Drift against the previous version: the added rows are virginica, so petal sizes shift.
    drift = {d["column"]: d for d in second["drift"]}
    assert drift["petal_length"]["method"] == "psi" and drift["petal_length"]["value"] > 0.25
    assert drift["label"]["method"] == "psi"
    first_prefix = f"datasets/{namespace}/live/{first['digest'][7:]}/manifest.json"
    assert s3.client.head_object(Bucket=s3.bucket, Key=first_prefix)  # the old version is still there


def test_operator_restart_mid_ingestion_converges_without_duplicates(kubectl, api_client, namespace, stack, s3) -> None:
    # Large enough that ingestion outlives the first operator's shutdown.
    rng = np.random.default_rng(0)
    big = pd.DataFrame(rng.normal(size=(600_000, 4)), columns=["a", "b", "c", "d"])
    uri = put(s3, f"big/{namespace}/big.csv", big.to_csv(index=False).encode())
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    with KopfRunner(args, timeout=120) as first:
        apply_object(kubectl, namespace, "Dataset", "big", {"source": {"s3": {"uri": uri}}})
        # Stop the workload the moment it exists: it spends its first half second importing, so the first operator
        # surely stops mid-ingestion however fast ingestion is (600k rows take about a second).
        held = wait_for(lambda: _workloads(namespace), timeout=60, interval=0.005)
        for pid in held:
            os.kill(pid, signal.SIGSTOP)
        task = wait_for(lambda: get_object(api_client, namespace, "datasets", "big").get("status", {}).get("task"))
    try:
        assert first.exit_code == 0
        assert get_object(api_client, namespace, "datasets", "big")["status"].get("phase") == "Ingesting"
    finally:
        for pid in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    with KopfRunner(args, timeout=120) as second:
        status = ready(api_client, namespace, "big", timeout=120)["status"]
    assert second.exit_code == 0
    assert tasks_for("big", namespace) == [f"{namespace}.{task}.json"]
    assert [v["version"] for v in status["versions"]] == [status["version"]]
    assert status["rows"] == 600_000
