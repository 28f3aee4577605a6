"""Derived Datasets with several parents: a union and a join cut versions from every parent's pinned version,
a new version of any parent cuts a new one, and mismatches fail the Dataset naming the parent and the column."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for
from tests.integration.test_cli_runs import mloop
from tests.integration.test_dataset_failures import finished
from tests.integration.test_dataset_sources import ready
from tests.integration.test_notifications import completed

CITY_COLUMNS = ["id", "city", "temp"]


def rows_in_s3(s3, status: dict) -> pd.DataFrame:
    key = status["versions"][-1]["uri"].split("/", 3)[3] + "data.parquet"
    return pq.read_table(io.BytesIO(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())).to_pandas()


def inline(columns: list[str], rows: list[list]) -> dict:
    return {"source": {"inline": {"columns": columns, "rows": rows}}}


def watch_until(api_client, namespace: str, name: str, predicate: Callable[[dict], Any], timeout: int = 60) -> Any:
    """The first truthy predicate(dataset) as the API server's watch delivers the Dataset's changes (no polling);
    fails with the last status seen after timeout seconds."""
    from kubernetes import client, watch

    api = client.CustomObjectsApi(api_client)
    listed = api.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, "datasets",
                                               field_selector=f"metadata.name={name}")
    last = next(iter(listed["items"]), {})
    if last and (value := predicate(last)):
        return value
    stream = watch.Watch().stream(api.list_namespaced_custom_object, "mloop.dev", "v1alpha1", namespace, "datasets",
                                  field_selector=f"metadata.name={name}", timeout_seconds=timeout,
                                  resource_version=listed["metadata"]["resourceVersion"])
    for event in stream:
        last = event["object"]
        if value := predicate(last):
            return value
    raise AssertionError(f"{name} not there within {timeout}s; last status: {last.get('status')}")


def test_union_pins_every_parent_and_follows_each_of_them(kubectl, api_client, namespace, lineage_file, operator, s3,
                                                          kubeconfig) -> None:
    apply_object(kubectl, namespace, "Dataset", "north", inline(CITY_COLUMNS, [[1, "Oslo", -3.5], [2, "Bergen", 4.0]]))
    apply_object(kubectl, namespace, "Dataset", "south", inline(CITY_COLUMNS, [[3, "Lima", 19.0]]))
    # The union waits for a parent that does not exist yet, naming it.
    apply_object(kubectl, namespace, "Dataset", "cities", {"source": {"derived": {
        "union": {"datasets": [{"name": "north"}, {"name": "south"}, {"name": "east"}]},
        "transform": {"select": ["city", "temp"]}}}})
    waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "datasets", "cities"), "Ready"))
                       and "east" in c["message"] and c)
    assert waiting["reason"] == "WaitingForParent" and waiting["message"] == "parent Dataset {}/east does not exist " \
        "yet".format(namespace)
    apply_object(kubectl, namespace, "Dataset", "east", {"source": {"inline": {
        "columns": ["temp", "city", "id"], "rows": [[30.5, "Pune", 4]]}}})
    north, south, east = (ready(api_client, namespace, n)["status"] for n in ("north", "south", "east"))
    union = wait_for(lambda: (s := ready(api_client, namespace, "cities")["status"]).get("rows") == 4 and s)
    assert rows_in_s3(s3, union).to_dict("list") == {"city": ["Oslo", "Bergen", "Lima", "Pune"],
                                                     "temp": [-3.5, 4.0, 19.0, 30.5]}
    assert union["sourceVersion"] == f"north@{north['version']},south@{south['version']},east@{east['version']}"
    assert [(p["name"], p["version"]) for p in union["parents"]] == [
        ("north", north["version"]), ("south", south["version"]), ("east", east["version"])]
    # OpenLineage: the ingestion read every parent's version.
    ingest = completed(lineage_file, f"{namespace}/datasets/cities")
    assert [d["name"] for d in ingest["inputs"]] == [
        f"datasets/{namespace}/{n}/{s['digest'].removeprefix('sha256:')}"
        for n, s in (("north", north), ("south", south), ("east", east))]

    # A new version of the second parent alone cuts a new union version with its rows.
    apply_object(kubectl, namespace, "Dataset", "south", inline(CITY_COLUMNS, [[3, "Lima", 19.0], [5, "Quito", 14.0]]))
    south2 = wait_for(lambda: (s := ready(api_client, namespace, "south")["status"])["version"] != south["version"] and s)
    moved = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "cities")["status"]).get("rows") == 5
                     and not s.get("task") and s)
    assert f"south@{south2['version']}" in moved["sourceVersion"].split(",")
    assert [v["version"] for v in moved["versions"]] == [union["version"], moved["version"]]
    assert rows_in_s3(s3, moved)["city"].tolist() == ["Oslo", "Bergen", "Lima", "Quito", "Pune"]
    # `mloop lineage`: every parent version upstream of the union's version.
    upstream = mloop("lineage", f"dataset/cities@{moved['version']}", "-n", namespace,
                     kubeconfig=kubeconfig).stdout.split("downstream:")[0]
    for name, version in (("north", north["version"]), ("south", south2["version"]), ("east", east["version"])):
        assert f"<- dataset/{name}@{version}" in upstream


def test_union_takes_both_parents_that_move_back_to_back(kubectl, api_client, namespace, operator, s3) -> None:
    for name, rows in (("north", [[1, "Oslo", -3.5]]), ("south", [[3, "Lima", 19.0]]), ("east", [[4, "Pune", 30.5]])):
        apply_object(kubectl, namespace, "Dataset", name, inline(CITY_COLUMNS, rows))
    apply_object(kubectl, namespace, "Dataset", "cities", {"source": {"derived": {
        "union": {"datasets": [{"name": "north"}, {"name": "south"}, {"name": "east"}]}}}})
    first = watch_until(api_client, namespace, "cities", lambda o: (o.get("status") or {}).get("rows") == 3 and o)
    before = {p["name"]: p["version"] for p in first["status"]["parents"]}

    # The second parent's new version lands while the union is still ingesting the first's: it must get in too,
    # woken by a watch event, not by a third parent moving.
    apply_object(kubectl, namespace, "Dataset", "north", inline(CITY_COLUMNS, [[1, "Oslo", -3.5], [2, "Bergen", 4.0]]))
    apply_object(kubectl, namespace, "Dataset", "east", inline(CITY_COLUMNS, [[4, "Pune", 30.5], [6, "Dhaka", 28.0]]))

    def both_moved(obj: dict) -> dict | None:
        status = obj.get("status") or {}
        pinned = {p["name"]: p["version"] for p in status.get("parents") or []}
        return status if (not status.get("task") and pinned["north"] != before["north"]
                          and pinned["east"] != before["east"]) else None

    both = watch_until(api_client, namespace, "cities", both_moved)
    north, east = (get_object(api_client, namespace, "datasets", n)["status"] for n in ("north", "east"))
    assert [(p["name"], p["version"]) for p in both["parents"]] == [
        ("north", north["version"]), ("south", before["south"]), ("east", east["version"])]
    assert both["versions"][-1]["version"] == both["version"] and both["rows"] == 5
    assert rows_in_s3(s3, both)["city"].tolist() == ["Oslo", "Bergen", "Lima", "Pune", "Dhaka"]


def test_union_of_mismatched_columns_fails_naming_the_parent_and_the_column(kubectl, api_client, namespace,
                                                                            operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "a", inline(["size", "colour"], [[1, "red"]]))
    apply_object(kubectl, namespace, "Dataset", "b", inline(["size", "shape"], [[2, "round"]]))
    apply_object(kubectl, namespace, "Dataset", "ab", {"source": {"derived": {
        "union": {"datasets": [{"name": "a"}, {"name": "b"}]}}}})
    for name in ("a", "b"):
        ready(api_client, namespace, name)
    failed = wait_for(lambda: (o := finished(api_client, namespace, "ab"))["status"]["phase"] == "Failed" and o)
    cond = condition(failed, "Ready")
    assert cond["reason"] == "ColumnMismatch"
    assert "parent b has no column 'colour' (parent a has it)" in cond["message"]
    assert "ColumnMismatch" in [reason for reason, _ in k8s_events(api_client, namespace, "ab")]

    # Taking only the shared column mends it.
    apply_object(kubectl, namespace, "Dataset", "ab", {"source": {"derived": {
        "union": {"datasets": [{"name": "a"}, {"name": "b"}], "columns": ["size"]}}}})
    assert wait_for(lambda: (o := finished(api_client, namespace, "ab"))["status"]["phase"] == "Ready" and o)[
        "status"]["rows"] == 2


def test_join_matches_rows_on_a_key_and_refuses_a_key_that_is_not_unique(kubectl, api_client, namespace, operator,
                                                                         s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "people", inline(["id", "age"], [[1, 30], [2, 41], [3, 25]]))
    apply_object(kubectl, namespace, "Dataset", "homes", inline(["id", "city"], [[3, "Oslo"], [1, "Lima"]]))
    apply_object(kubectl, namespace, "Dataset", "inner", {"source": {"derived": {
        "join": {"left": {"name": "people"}, "right": {"name": "homes"}, "on": ["id"]}}}})
    apply_object(kubectl, namespace, "Dataset", "outer", {"source": {"derived": {
        "join": {"left": {"name": "people"}, "right": {"name": "homes"}, "on": ["id"], "how": "left"}}}})
    inner = ready(api_client, namespace, "inner")["status"]
    assert rows_in_s3(s3, inner).to_dict("list") == {"id": [1, 3], "age": [30, 25], "city": ["Lima", "Oslo"]}
    assert [p["name"] for p in inner["parents"]] == ["people", "homes"]
    outer = ready(api_client, namespace, "outer")["status"]
    assert rows_in_s3(s3, outer)["city"].fillna("-").tolist() == ["Lima", "-", "Oslo"]

    # A second home for person 1: the right side's key is no longer unique; the earlier version stays current.
    apply_object(kubectl, namespace, "Dataset", "homes", inline(["id", "city"], [[3, "Oslo"], [1, "Lima"], [1, "Pune"]]))
    failed = wait_for(lambda: (o := get_object(api_client, namespace, "datasets", "inner"))["status"].get("phase")
                      == "Failed" and not o["status"].get("task") and o, timeout=60)
    cond = condition(failed, "Ready")
    assert cond["reason"] == "JoinKeyNotUnique"
    assert "key (id) is not unique in homes: 1 at rows 1, 2" in cond["message"]
    assert failed["status"]["version"] == inner["version"]

    apply_object(kubectl, namespace, "Dataset", "no-key", {"source": {"derived": {
        "join": {"left": {"name": "people"}, "right": {"name": "homes"}, "on": ["person_id"]}}}})
    cond = condition(wait_for(lambda: (o := finished(api_client, namespace, "no-key"))["status"]["phase"] == "Failed"
                              and o), "Ready")
    assert cond["reason"] == "JoinKeyMissing" and "key column 'person_id' is not in people" in cond["message"]
