"""Dataset sources end to end: the real operator, real S3, the local executor."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow.parquet as pq

from tests.helpers import apply_object, condition, get_object, wait_for


def ready(api_client, namespace: str, name: str, timeout: float = 60) -> dict:
    def check():
        obj = get_object(api_client, namespace, "datasets", name)
        return obj if (obj.get("status") or {}).get("phase") in ("Ready", "Failed") and not obj["status"].get("task") else None

    obj = wait_for(check, timeout=timeout)
    assert obj["status"]["phase"] == "Ready", json.dumps(obj["status"], indent=1)[:3000]
    return obj


def test_builtin_iris_becomes_an_immutable_version_in_s3(kubectl, api_client, namespace, operator, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {
        "source": {"builtin": {"name": "iris"}},
        "governance": {"license": "BSD-3-Clause", "classification": "public"},
    })
    obj = ready(api_client, namespace, "iris")
    status = obj["status"]
    assert status["rows"] == 150
    assert len(status["version"]) == 12 and status["digest"] == "sha256:" + status["digest"][7:]
    assert status["digest"][7:19] == status["version"]
    prefix = f"datasets/{namespace}/iris/{status['digest'][7:]}/"
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"])
    assert keys == [prefix + "data.parquet", prefix + "manifest.json", prefix + "profile.json"]
    manifest = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["digest"] == status["digest"] and manifest["rows"] == 150
    frame = pq.read_table(io.BytesIO(s3.client.get_object(Bucket=s3.bucket, Key=prefix + "data.parquet")["Body"].read())).to_pandas()
    assert list(frame.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert sorted(frame["species"].unique()) == ["setosa", "versicolor", "virginica"]
    assert {c["name"]: c["type"] for c in status["columns"]}["species"] == "category"
    assert condition(obj, "Validated")["status"] == "True"
    assert condition(obj, "GovernanceOK")["status"] == "True"
    assert status["versions"][0]["version"] == status["version"]
    profile = {p["name"]: p for p in status["profile"]}
    assert profile["sepal_length"]["min"] == 4.3 and profile["sepal_length"]["max"] == 7.9
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "VersionCut" in events
    row = kubectl("get", "datasets", "iris", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:4] == ["iris", status["version"], "150", "Ready"]


def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "label"]
    return frame


def put(s3, key: str, data: bytes) -> str:
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=data)
    return f"s3://{s3.bucket}/{key}"


def test_csv_parquet_and_jsonl_of_one_table_give_one_version(kubectl, api_client, namespace, operator, s3) -> None:
    frame = iris_frame()
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    uris = {
        "as-csv": put(s3, f"raw/{namespace}/iris.csv", frame.to_csv(index=False).encode()),
        "as-parquet": put(s3, f"raw/{namespace}/iris.parquet", parquet.getvalue()),
        "as-jsonl": put(s3, f"raw/{namespace}/iris.jsonl", frame.to_json(orient="records", lines=True).encode()),
    }
    for name, uri in uris.items():
        apply_object(kubectl, namespace, "Dataset", name, {"source": {"s3": {"uri": uri}}})
    versions = {name: ready(api_client, namespace, name)["status"]["version"] for name in uris}
    assert len(set(versions.values())) == 1, versions


def test_prefix_source_concatenates_objects_in_key_order(kubectl, api_client, namespace, operator, s3) -> None:
    frame = iris_frame()
    put(s3, f"parts/{namespace}/part-0.csv", frame.iloc[:70].to_csv(index=False).encode())
    put(s3, f"parts/{namespace}/part-1.csv", frame.iloc[70:].to_csv(index=False).encode())
    whole = put(s3, f"whole/{namespace}/iris.csv", frame.to_csv(index=False).encode())
    apply_object(kubectl, namespace, "Dataset", "parts", {"source": {"s3": {"uri": f"s3://{s3.bucket}/parts/{namespace}/"}}})
    apply_object(kubectl, namespace, "Dataset", "whole", {"source": {"s3": {"uri": whole}}})
    parts, single = ready(api_client, namespace, "parts")["status"], ready(api_client, namespace, "whole")["status"]
    assert parts["rows"] == 150
    assert parts["version"] == single["version"]
    assert "2 objects" in parts["sourceVersion"]


def test_inline_source(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "tiny", {"source": {"inline": {
        "columns": ["id", "city", "temp"], "rows": [[1, "Oslo", -3.5], [2, "Lima", 19.0], [3, "Pune", None]]}}})
    status = ready(api_client, namespace, "tiny")["status"]
    assert status["rows"] == 3
    assert {c["name"]: c["type"] for c in status["columns"]} == {"id": "integer", "city": "string", "temp": "float"}
    assert {c["name"]: c["role"] for c in status["columns"]}["id"] == "id"
    assert {p["name"]: p for p in status["profile"]}["temp"]["nulls"] == 1


def test_derived_source_filters_selects_and_pins_a_parent_version(kubectl, api_client, namespace, operator, s3) -> None:
    # The child waits for a parent that does not exist yet, then follows it.
    apply_object(kubectl, namespace, "Dataset", "setosa", {"source": {"derived": {
        "datasetRef": {"name": "flowers"},
        "transform": {"filter": "species == 'setosa' and petal_length >= 1.5", "select": ["petal_length", "species"]}}}})
    waiting = wait_for(lambda: condition(get_object(api_client, namespace, "datasets", "setosa"), "Ready"))
    assert waiting["reason"] == "WaitingForParent" and "flowers" in waiting["message"]
    apply_object(kubectl, namespace, "Dataset", "flowers", {"source": {"builtin": {"name": "iris"}}})
    parent = ready(api_client, namespace, "flowers")["status"]
    child = ready(api_client, namespace, "setosa")["status"]
    expected = iris_frame()
    expected = expected[(expected.label == 0) & (expected.petal_length >= 1.5)]
    assert child["rows"] == len(expected)
    assert [c["name"] for c in child["columns"]] == ["petal_length", "species"]
    assert child["sourceVersion"] == f"flowers@{parent['version']}"

    apply_object(kubectl, namespace, "Dataset", "test-split", {"source": {"derived": {
        "datasetRef": {"name": "flowers", "version": parent["version"]},
        "transform": {"split": {"part": "test", "testFraction": 0.2, "seed": 3}}}}})
    assert ready(api_client, namespace, "test-split")["status"]["rows"] == 30

    apply_object(kubectl, namespace, "Dataset", "bad-pin", {"source": {"derived": {
        "datasetRef": {"name": "flowers", "version": "0123456789ab"}}}})
    pinned = wait_for(lambda: condition(get_object(api_client, namespace, "datasets", "bad-pin"), "Ready"))
    assert pinned["reason"] == "WaitingForParent" and "no version 0123456789ab" in pinned["message"]
