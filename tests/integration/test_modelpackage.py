"""ModelPackages: packaging, signature and model card, ONNX parity, the promotion gate, tampering."""

from __future__ import annotations

import json

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

IRIS_DS = {"source": {"builtin": {"name": "iris"}}, "schema": {"columns": [
    {"name": "sepal_length", "type": "float", "min": 0, "max": 20}, {"name": "sepal_width", "type": "float"},
    {"name": "petal_length", "type": "float"}, {"name": "petal_width", "type": "float"},
    {"name": "species", "type": "category", "role": "target", "allowedValues": ["setosa", "versicolor", "virginica"]}]},
    "governance": {"license": "BSD-3-Clause", "classification": "public", "owner": "data-team"}}
REQUIREMENT = {"title": "Suggest iris species in the field", "description": "For botanists; not for other genera.",
               "metrics": [{"metric": "accuracy", "min": 0.9, "primary": True}]}


def packaged(api_client, namespace: str, name: str, timeout: float = 120) -> dict:
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", name)).get("status", {}).get(
        "phase") in ("Packaged", "Failed") and (o["status"].get("stage") or o["status"]["phase"] == "Failed") and o,
        timeout=timeout)
    assert obj["status"]["phase"] == "Packaged", json.dumps(obj["status"], indent=1)[:3000]
    return obj


def s3_text(s3, uri: str, name: str) -> str:
    key = uri.split("/", 3)[3] + name
    return s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode()


def setup_iris(kubectl, api_client, namespace: str, run: str = "iris-lr", change: dict | None = None) -> dict:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "iris-req", REQUIREMENT)
    dataset_ready(api_client, namespace, "iris")
    apply_object(kubectl, namespace, "TrainingRun", run, {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}],
                                                           **(change or {})})
    return succeeded(api_client, namespace, run)


def test_iris_package_with_signature_card_and_onnx_parity(kubectl, api_client, namespace, operator, s3) -> None:
    run = setup_iris(kubectl, api_client, namespace)
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                  "formats": ["skops", "onnx"], "stage": "Staging"})
    obj = packaged(api_client, namespace, "iris-1")
    status = obj["status"]
    assert status["version"] == 1 and status["stage"] == "Staging" and status["formats"] == ["skops", "onnx"]
    assert status["uri"] == f"s3://{s3.bucket}/packages/{namespace}/iris/1/"
    manifest_text = s3_text(s3, status["uri"], "manifest.json")
    import hashlib

    assert status["digest"] == "sha256:" + hashlib.sha256(manifest_text.encode()).hexdigest()
    manifest = json.loads(manifest_text)
    assert set(manifest["files"]) == {"model.skops", "model.onnx", "signature.json", "modelcard.md", "lineage.json",
                                      "requirements.json"}
    assert manifest["modelDigest"] == run["status"]["modelDigest"]
    signature = json.loads(s3_text(s3, status["uri"], "signature.json"))
    inputs = {i["name"]: i for i in signature["inputs"]}
    assert list(inputs) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert inputs["sepal_length"] == {"name": "sepal_length", "type": "float", "min": 0.0, "max": 20.0,
                                      "nullable": True}
    assert signature["output"] == {"name": "species", "task": "classification",
                                   "classes": ["setosa", "versicolor", "virginica"]}
    card = s3_text(s3, status["uri"], "modelcard.md")
    assert "Suggest iris species in the field" in card and "For botanists" in card
    assert f"version `{run['status']['datasetVersion']}`" in card and "license: BSD-3-Clause" in card
    assert "iris-req metric:accuracy: pass" in card and "| accuracy |" in card
    onnx = condition(obj, "OnnxAvailable")
    assert onnx["status"] == "True" and "labels agree on 100% of 38 held-out rows" in onnx["message"]
    lineage = json.loads(s3_text(s3, status["uri"], "lineage.json"))
    assert lineage["trainingRun"]["name"] == "iris-lr" and lineage["dataset"]["version"] == run["status"]["datasetVersion"]
    assert condition(obj, "Promoted")["status"] == "True"
    # At rest (packaged, stage granted, not serving) it has no timer, so kopf takes its finalizer away.
    wait_for(lambda: not get_object(api_client, namespace, "modelpackages", "iris-1")["metadata"].get("finalizers"))


def test_diabetes_package_and_versions_count_up(kubectl, api_client, namespace, operator, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "diabetes", {"source": {"builtin": {"name": "diabetes"}}})
    apply_object(kubectl, namespace, "TrainingRun", "ridge", {"datasetRef": {"name": "diabetes"}, "target": "target",
                                                               "estimator": {"name": "Ridge"}})
    succeeded(api_client, namespace, "ridge")
    for i in (1, 2, 3):
        apply_object(kubectl, namespace, "ModelPackage", f"diabetes-{i}", {"model": "diabetes",
                                                                            "trainingRunRef": {"name": "ridge"}})
    versions = sorted(packaged(api_client, namespace, f"diabetes-{i}")["status"]["version"] for i in (1, 2, 3))
    assert versions == [1, 2, 3]
    signature = json.loads(s3_text(s3, f"s3://{s3.bucket}/packages/{namespace}/diabetes/1/", "signature.json"))
    assert signature["output"] == {"name": "target", "task": "regression"} and len(signature["inputs"]) == 10


def test_no_onnx_converter_still_packages_with_skops(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "customers", {"source": {"inline": {
        "columns": ["plan", "spend", "churned"],
        "rows": [["a" if i % 2 else "b", float(i % 7), "yes" if i % 2 else "no"] for i in range(24)]}}})
    # skl2onnx has no converter for a histogram-boosted tree ensemble over a categorical column.
    apply_object(kubectl, namespace, "TrainingRun", "churn", {"datasetRef": {"name": "customers"}, "target": "churned",
        "estimator": {"name": "HistGradientBoostingClassifier"}, "split": {"testFraction": 0.25, "seed": 1}})
    succeeded(api_client, namespace, "churn")
    apply_object(kubectl, namespace, "ModelPackage", "churn-1", {"model": "churn", "trainingRunRef": {"name": "churn"},
                                                                   "formats": ["onnx"]})
    obj = packaged(api_client, namespace, "churn-1")
    assert obj["status"]["formats"] == ["skops"]
    onnx = condition(obj, "OnnxAvailable")
    assert onnx["status"] == "False" and onnx["reason"] == "OnnxUnavailable" and "no ONNX converter" in onnx["message"]


def test_promotion_refused_then_granted_after_a_better_run(kubectl, api_client, namespace, operator) -> None:
    setup_iris(kubectl, api_client, namespace, "stump", {"estimator": {"name": "DecisionTreeClassifier",
                                                                          "params": {"max_depth": 1}}})
    apply_object(kubectl, namespace, "ModelPackage", "stump-1", {"model": "iris", "trainingRunRef": {"name": "stump"},
                                                                   "stage": "Production"})
    refused = packaged(api_client, namespace, "stump-1")
    promoted = condition(refused, "Promoted")
    assert refused["status"]["stage"] == "None"
    assert promoted["status"] == "False" and promoted["reason"] == "CriterionFailed"
    assert "Production refused: iris-req/metric:accuracy is 0.6" in promoted["message"] and "< 0.9" in promoted["message"]
    apply_object(kubectl, namespace, "TrainingRun", "better", {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}]})
    succeeded(api_client, namespace, "better")
    apply_object(kubectl, namespace, "ModelPackage", "better-1", {"model": "iris", "trainingRunRef": {"name": "better"},
                                                                    "stage": "Production"})
    granted = packaged(api_client, namespace, "better-1")
    assert granted["status"]["stage"] == "Production" and granted["status"]["version"] == 2
    events = kubectl("get", "events", "-n", namespace, "-o",
                     "jsonpath={range .items[*]}{.involvedObject.name}/{.reason} {end}").stdout.split()
    assert "stump-1/PromotionRefused" in events and "better-1/PromotionGranted" in events


def test_only_one_production_package_per_model(kubectl, api_client, namespace, operator) -> None:
    setup_iris(kubectl, api_client, namespace)
    apply_object(kubectl, namespace, "ModelPackage", "first", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                 "stage": "Production"})
    assert packaged(api_client, namespace, "first")["status"]["stage"] == "Production"
    apply_object(kubectl, namespace, "ModelPackage", "second", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                  "stage": "Production"})
    assert packaged(api_client, namespace, "second")["status"]["stage"] == "Production"
    first = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "first"))["status"]["stage"]
                     == "Archived" and o)
    assert condition(first, "Promoted")["reason"] == "Superseded"
    stages = [get_object(api_client, namespace, "modelpackages", n)["status"]["stage"] for n in ("first", "second")]
    assert stages == ["Archived", "Production"]
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=first",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "Archived" in events


def test_missing_run_waits_and_failed_run_fails(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "ModelPackage", "orphan", {"model": "x", "trainingRunRef": {"name": "later"}})
    waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "modelpackages", "orphan"), "Packaged"))
                       and c)
    assert waiting["reason"] == "WaitingForTrainingRun" and "does not exist yet" in waiting["message"]
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "TrainingRun", "later", {**IRIS_RUN, "target": "no-such-column"})
    failed = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "orphan")).get("status", {}).get(
        "phase") == "Failed" and o, timeout=90)
    cond = condition(failed, "Packaged")
    assert cond["reason"] == "TrainingRunFailed" and "TargetNotFound" in cond["message"]


def test_tampered_model_is_refused(kubectl, api_client, namespace, operator, s3) -> None:
    run = setup_iris(kubectl, api_client, namespace)
    key = run["status"]["modelUri"].split("/", 3)[3]
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"not the model that was trained")
    apply_object(kubectl, namespace, "ModelPackage", "tampered", {"model": "iris", "trainingRunRef": {"name": "iris-lr"}})
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "tampered")).get("status", {}).get(
        "phase") == "Failed" and o, timeout=90)
    cond = condition(obj, "Packaged")
    assert cond["reason"] == "DigestMismatch" and "does not match the recorded" in cond["message"]
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"packages/{namespace}/iris/").get("Contents", [])
    assert not [o for o in listed if o["Key"].endswith("manifest.json")]


def start_s3(stack, s3) -> None:
    """LocalStack.start_s3 asks for the bucket right after the spawn and does not wait out botocore's connection
    error (it waits out OSError only): when the server is slow to listen, wait for it here."""
    from botocore.exceptions import EndpointConnectionError

    try:
        stack.start_s3()
    except EndpointConnectionError:
        wait_for(lambda: s3.client.head_bucket(Bucket=s3.bucket) if _listening(s3) else None, timeout=30)


def _listening(s3) -> bool:
    import socket

    host, port = s3.endpoint.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def test_s3_outage_while_packaging_is_waited_out_and_retried(kubectl, api_client, namespace, operator, stack,
                                                              s3) -> None:
    setup_iris(kubectl, api_client, namespace)
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "iris-lr"}})
    # The task starts a Python process before it reads anything: stopping S3 now leaves it without storage.
    first = wait_for(lambda: get_object(api_client, namespace, "modelpackages", "iris-1").get("status", {}).get("task"),
                     interval=0.05)
    stack.stop_s3()
    try:
        cond = wait_for(lambda: (c := condition(get_object(api_client, namespace, "modelpackages", "iris-1"), "Packaged"))
                        and c["reason"] == "StorageUnavailable" and c, timeout=90)
        assert cond["status"] == "Unknown"
        assert get_object(api_client, namespace, "modelpackages", "iris-1")["status"]["phase"] == "Packaging"
    finally:
        start_s3(stack, s3)
    obj = packaged(api_client, namespace, "iris-1")
    assert obj["status"]["version"] == 1 and obj["status"]["uri"] == f"s3://{s3.bucket}/packages/{namespace}/iris/1/"
    messages = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris-1,reason=Packaging",
                       "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}").stdout
    assert f"S3 was unavailable to task {first}: retrying as package-iris-1-" in messages
    manifest = s3.client.head_object(Bucket=s3.bucket, Key=f"packages/{namespace}/iris/1/manifest.json")
    assert manifest["ContentLength"] > 0


def test_an_edited_requirement_re_judges_the_packages_it_gates(kubectl, api_client, namespace, operator) -> None:
    """No timer re-judges a package at rest: the Requirement's edit is the event that does."""
    setup_iris(kubectl, api_client, namespace, "stump", {"estimator": {"name": "DecisionTreeClassifier",
                                                                          "params": {"max_depth": 1}}})
    apply_object(kubectl, namespace, "ModelPackage", "stump-1", {"model": "iris", "trainingRunRef": {"name": "stump"},
                                                                   "stage": "Production"})
    assert packaged(api_client, namespace, "stump-1")["status"]["stage"] == "None"
    apply_object(kubectl, namespace, "Requirement", "iris-req",
                 {**REQUIREMENT, "metrics": [{"metric": "accuracy", "min": 0.5, "primary": True}]})
    granted = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "stump-1"))["status"].get(
        "stage") == "Production" and o, timeout=60)
    assert condition(granted, "Promoted")["status"] == "True"
