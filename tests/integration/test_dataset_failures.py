"""Bad input fails the Dataset with a condition that names the cause; nothing earlier is harmed."""

from __future__ import annotations

import io

import pytest

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import iris_frame, put, ready

ROWS = [[1, "a", 1.5], [2, "b", None], [2, "c", 99.0], [4, "zz", 3.0]]
COLUMNS = ["id", "code", "score"]


def finished(api_client, namespace: str, name: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (o := get_object(api_client, namespace, "datasets", name)).get("status", {}).get("phase")
                    in ("Ready", "Failed") and not o["status"].get("task") and o, timeout=timeout)


def inline(schema: list[dict] | None = None, validation: dict | None = None, rows=ROWS) -> dict:
    spec: dict = {"source": {"inline": {"columns": COLUMNS, "rows": rows}}}
    if schema:
        spec["schema"] = {"columns": schema}
    if validation:
        spec["validation"] = validation
    return spec


CASES = [
    ("min-rows", inline(validation={"minRows": 10}), "ValidationFailed", "minRows", None, "4 rows, at least 10"),
    ("null-fraction", inline(validation={"maxNullFraction": 0.1}), "ValidationFailed", "maxNullFraction", "score",
     "column 'score' is 25.0% null"),
    ("unique-id", inline(validation={"unique": ["id"]}), "ValidationFailed", "unique", "id",
     "column 'id' repeats values at rows 2"),
    ("range", inline(schema=[{"name": "id", "type": "integer"}, {"name": "code", "type": "string"},
                             {"name": "score", "type": "float", "min": 0, "max": 10}]),
     "ValidationFailed", "range", "score", "column 'score' is outside [0.0, 10.0] at rows 2"),
    ("allowed-values", inline(schema=[{"name": "id", "type": "integer"},
                                      {"name": "code", "type": "category", "allowedValues": ["a", "b", "c"]},
                                      {"name": "score", "type": "float"}]),
     "ValidationFailed", "allowedValues", "code", "at rows 3: ['zz']"),
    ("type-mismatch", inline(schema=[{"name": "id", "type": "integer"}, {"name": "code", "type": "integer"},
                                     {"name": "score", "type": "float"}]),
     "ValidationFailed", "type", "code", "column 'code' is declared integer but rows 0, 1, 2, 3 hold ['a', 'b', 'c']"),
    ("not-nullable", inline(schema=[{"name": "id", "type": "integer"}, {"name": "code", "type": "string"},
                                    {"name": "score", "type": "float", "nullable": False}]),
     "ValidationFailed", "nullable", "score", "column 'score' is not nullable but rows 1 are empty"),
    ("missing-column", inline(schema=[{"name": "id", "type": "integer"}, {"name": "code", "type": "string"},
                                      {"name": "score", "type": "float"}, {"name": "label", "type": "string"}]),
     "ValidationFailed", "columns", "label", "declared columns missing from the data: label"),
]


@pytest.mark.parametrize("name,spec,reason,rule,column,words", CASES, ids=[c[0] for c in CASES])
def test_validation_failure_names_rule_column_and_rows(kubectl, api_client, namespace, operator,
                                                       name, spec, reason, rule, column, words) -> None:
    apply_object(kubectl, namespace, "Dataset", name, spec)
    obj = finished(api_client, namespace, name)
    assert obj["status"]["phase"] == "Failed"
    ready_cond, validated = condition(obj, "Ready"), condition(obj, "Validated")
    assert ready_cond["status"] == "False" and ready_cond["reason"] == reason
    assert validated["status"] == "False" and words in validated["message"]
    failed = [r for r in obj["status"]["validation"] if not r["passed"]]
    assert failed[0]["rule"] == rule and failed[0].get("column") == column
    assert "version" not in obj["status"]


def csv_bytes() -> bytes:
    return iris_frame().to_csv(index=False).encode()


@pytest.mark.parametrize(
    "name,body,key,reason,words",
    [
        ("missing-object", None, "nothing-here.csv", "MissingObject", "nothing-here.csv does not exist"),
        ("unreadable", b"\x00\x01 this is not parquet", "broken.parquet", "UnreadableFile", "cannot read as parquet"),
        ("wrong-delimiter", csv_bytes().replace(b",", b";"), "semicolons.csv", "WrongDelimiter", "delimiter"),
        ("empty", b"", "empty.csv", "EmptyTable", "the file is empty"),
        ("header-only", b"a,b,c\n", "header.csv", "EmptyTable", "the table has no rows"),
    ],
)
def test_bad_source_fails_with_its_cause(kubectl, api_client, namespace, operator, s3, name, body, key, reason, words) -> None:
    uri = f"s3://{s3.bucket}/bad/{namespace}/{key}"
    if body is not None:
        put(s3, f"bad/{namespace}/{key}", body)
    apply_object(kubectl, namespace, "Dataset", name, {"source": {"s3": {"uri": uri}}})
    obj = finished(api_client, namespace, name)
    cond = condition(obj, "Ready")
    assert obj["status"]["phase"] == "Failed"
    assert (cond["status"], cond["reason"]) == ("False", reason), cond
    assert words in cond["message"]
    events = kubectl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert reason in events


def test_a_bad_update_keeps_the_earlier_version_intact(kubectl, api_client, namespace, operator, s3) -> None:
    uri = put(s3, f"keep/{namespace}/good.csv", csv_bytes())
    apply_object(kubectl, namespace, "Dataset", "keep", {"source": {"s3": {"uri": uri}}})
    good = ready(api_client, namespace, "keep")["status"]
    apply_object(kubectl, namespace, "Dataset", "keep", {"source": {"s3": {"uri": uri}}, "validation": {"minRows": 1000}})
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "datasets", "keep"))["status"]["phase"] == "Failed" and o)
    assert condition(obj, "Ready")["reason"] == "ValidationFailed"
    assert obj["status"]["version"] == good["version"]
    assert obj["status"]["versions"] == good["versions"]
    prefix = f"datasets/{namespace}/keep/{good['digest'][7:]}/"
    data = s3.client.get_object(Bucket=s3.bucket, Key=prefix + "data.parquet")["Body"].read()
    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(data)).num_rows == 150


def test_s3_outage_retries_and_recovers_by_itself(kubectl, api_client, namespace, operator, stack, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "before", {"source": {"builtin": {"name": "iris"}}})
    before = ready(api_client, namespace, "before")["status"]
    stack.stop_s3()
    try:
        apply_object(kubectl, namespace, "Dataset", "during", {"source": {"builtin": {"name": "wine"}}})
        cond = wait_for(lambda: (c := condition(get_object(api_client, namespace, "datasets", "during"), "Ready"))
                        and c["reason"] == "StorageUnavailable" and c, timeout=90)
        assert cond["status"] == "Unknown" and "retrying" in cond["message"]
        assert get_object(api_client, namespace, "datasets", "before")["status"]["phase"] == "Ready"
    finally:
        stack.start_s3()
    during = ready(api_client, namespace, "during", timeout=120)["status"]
    assert during["rows"] == 178
    prefix = f"datasets/{namespace}/before/{before['digest'][7:]}/manifest.json"
    assert s3.client.head_object(Bucket=s3.bucket, Key=prefix)["ContentLength"] > 0
    assert kubectl("get", "--raw", "/readyz").stdout == "ok"
