"""Transitions as Kubernetes events, as CloudEvents to a real loopback sink, and as OpenLineage run events
through the file transport."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mloop.config import get_settings
from tests.helpers import apply_object, get_object, k8s_events, wait_for
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_modelpackage import IRIS_DS, REQUIREMENT, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

STUMP = {"estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 1}}}


def lineage_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def job_events(path: Path, job_suffix: str) -> list[dict]:
    return [e for e in lineage_events(path) if e["job"]["name"].endswith(job_suffix)]


def completed(path: Path, job_suffix: str) -> dict:
    return wait_for(lambda: next((e for e in job_events(path, job_suffix) if e["eventType"] == "COMPLETE"), None),
                    timeout=30)


def test_transitions_reach_kubernetes_events_a_cloudevents_sink_and_openlineage(
        kubectl, api_client, namespace, cloudevents_sink, lineage_file, operator, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "iris-req", REQUIREMENT)
    version = dataset_ready(api_client, namespace, "iris")["status"]
    for run, change in (("stump", STUMP), ("better", {})):
        apply_object(kubectl, namespace, "TrainingRun", run, {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}],
                                                               **change})
    runs = {name: succeeded(api_client, namespace, name) for name in ("stump", "better")}
    for run in ("stump", "better"):
        apply_object(kubectl, namespace, "ModelPackage", f"{run}-1", {"model": "iris", "trainingRunRef": {"name": run},
                                                                        "stage": "Production"})
    package = packaged(api_client, namespace, "better-1")
    assert packaged(api_client, namespace, "stump-1")["status"]["stage"] == "None"

    # Kubernetes events, one per transition, on the object concerned.
    expected = {"iris": "VersionCut", "stump": "RunSucceeded", "better": "RunSucceeded",
                "stump-1": "PromotionRefused", "better-1": "PromotionGranted"}
    for name, reason in expected.items():
        wait_for(lambda: reason in [r for r, _ in k8s_events(api_client, namespace, name)], timeout=30)

    # The same transitions as CloudEvents, parsed by the CloudEvents SDK on the sink's side.
    sink = cloudevents_sink
    cut = wait_for(lambda: sink.of_type("dev.mloop.dataset.version.cut", "iris"), timeout=30)[0]
    assert cut.get_source() == f"/apis/mloop.dev/v1alpha1/namespaces/{namespace}/datasets/iris"
    assert cut.get_data()["version"] == version["version"] and cut.get_data()["rows"] == 150
    finished = wait_for(lambda: len(sink.of_type("dev.mloop.trainingrun.finished")) == 2
                        and sink.of_type("dev.mloop.trainingrun.finished"), timeout=30)
    by_run = {e.get_subject(): e.get_data() for e in finished}
    assert by_run["better"]["phase"] == "Succeeded"
    assert by_run["better"]["modelDigest"] == runs["better"]["status"]["modelDigest"]
    assert by_run["stump"]["metrics"]["accuracy"] == runs["stump"]["status"]["metrics"]["accuracy"]
    granted = wait_for(lambda: sink.of_type("dev.mloop.modelpackage.promotion.granted"), timeout=30)
    assert [(e.get_subject(), e.get_data()["stage"]) for e in granted] == [("better-1", "Production")]
    refused = wait_for(lambda: sink.of_type("dev.mloop.modelpackage.promotion.refused"), timeout=30)
    assert refused[0].get_subject() == "stump-1" and "iris-req/metric:accuracy" in refused[0].get_data()["message"]
    assert len({e.get_id() for e in sink.events}) == len(sink.events)

    # OpenLineage: builtin -> dataset version -> run -> package, each output the next one's input.
    bucket = f"s3://{s3.bucket}"
    ingest = completed(lineage_file, f"{namespace}/datasets/iris")
    assert [(d["namespace"], d["name"]) for d in ingest["inputs"]] == [("builtin://scikit-learn", "iris")]
    version_path = f"datasets/{namespace}/iris/{version['digest'].removeprefix('sha256:')}"
    [out] = ingest["outputs"]
    assert (out["namespace"], out["name"]) == (bucket, version_path)
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == [
        "sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 150

    train = completed(lineage_file, f"{namespace}/trainingruns/better")
    [read] = train["inputs"]
    assert (read["namespace"], read["name"]) == (bucket, version_path)
    quality = read["inputFacets"]["dataQualityMetrics"]
    assert quality["rowCount"] == 150
    assert {name: m["nullCount"] for name, m in quality["columnMetrics"].items()} == {
        "sepal_length": 0, "sepal_width": 0, "petal_length": 0, "petal_width": 0, "species": 0}
    assert {f["name"]: f["type"] for f in read["facets"]["schema"]["fields"]}["species"] == "category"
    [model] = train["outputs"]
    assert f"{model['namespace']}/{model['name']}" == runs["better"]["status"]["modelUri"]
    assert train["run"]["runId"] == runs["better"]["metadata"]["uid"]
    assert train["run"]["facets"]["processing_engine"]["name"] == "mloop"
    assert train["job"]["facets"]["sourceCodeLocation"]["version"] == train["run"]["facets"]["processing_engine"]["version"]
    assert train["job"]["facets"]["jobType"]["jobType"] == "TRAINING"

    pack = completed(lineage_file, f"{namespace}/modelpackages/better-1")
    assert [(d["namespace"], d["name"]) for d in pack["inputs"]] == [(model["namespace"], model["name"])]
    assert [f"{d['namespace']}/{d['name']}/" for d in pack["outputs"]] == [package["status"]["uri"]]

    # Every run that completed was started first, under the same run id.
    for suffix in ("datasets/iris", "trainingruns/better", "modelpackages/better-1"):
        states = [(e["eventType"], e["run"]["runId"]) for e in job_events(lineage_file, f"{namespace}/{suffix}")]
        assert states[0][0] == "START" and ("COMPLETE", states[0][1]) in states, states


def test_a_slow_or_failing_sink_never_holds_up_reconciliation(
        kubectl, api_client, namespace, cloudevents_sink, monkeypatch, operator) -> None:
    sink = cloudevents_sink
    sink.hold.clear()  # the sink takes every request and answers none, until the test lets it
    sink.refuse = 2  # and then refuses the first two with 503
    monkeypatch.setenv("MLOOP_CLOUDEVENTS_TIMEOUT", "120")  # read per delivery: no need to restart the operator
    get_settings.cache_clear()
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    dataset_ready(api_client, namespace, "iris")
    apply_object(kubectl, namespace, "TrainingRun", "lr", IRIS_RUN)
    succeeded(api_client, namespace, "lr")
    # The operator went on while its first delivery was still waiting on the sink.
    assert sink.held == 1 and sink.events == []
    sink.hold.set()
    wait_for(lambda: sink.of_type("dev.mloop.trainingrun.finished", "lr"), timeout=30)
    assert [e.get_type() for e in sink.events] == ["dev.mloop.dataset.version.cut", "dev.mloop.trainingrun.finished"]
    assert sink.attempts == 4  # two refused, then each event once
    assert get_object(api_client, namespace, "trainingruns", "lr")["status"]["phase"] == "Succeeded"


def test_a_cache_hit_finishes_once(kubectl, api_client, namespace, cloudevents_sink, operator) -> None:
    """The create handler and the first timer tick must not both finish a run that trains nothing."""
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    dataset_ready(api_client, namespace, "iris")
    apply_object(kubectl, namespace, "TrainingRun", "first", IRIS_RUN)
    succeeded(api_client, namespace, "first")
    for name in ("again-1", "again-2", "again-3"):
        apply_object(kubectl, namespace, "TrainingRun", name, {**IRIS_RUN, "cachePolicy": "reuse"})
    for name in ("again-1", "again-2", "again-3"):
        assert succeeded(api_client, namespace, name)["status"]["cacheSource"] == "first"
        wait_for(lambda: cloudevents_sink.of_type("dev.mloop.trainingrun.finished", name), timeout=30)
    time.sleep(3)  # several poll intervals: room for a second finish to show up, if there were one
    for name in ("again-1", "again-2", "again-3"):
        assert len(cloudevents_sink.of_type("dev.mloop.trainingrun.finished", name)) == 1
        assert [r for r, _ in k8s_events(api_client, namespace, name)].count("CacheHit") == 1
