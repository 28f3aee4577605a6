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
