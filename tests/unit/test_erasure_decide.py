"""ErasureRequest decisions in tables, and the salted-hash filter on real frames."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from mloop.api.dataset import DatasetStatus
from mloop.api.erasure import EraseResult, ErasureRequestSpec, ErasureRequestStatus
from mloop.api.tasks import TaskState
from mloop.data.erasure import drop_erased, parse_keys, subject_hash, text_holds, token, without_erased_rows
from mloop.reconcile import erasure as decide

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
SPEC = ErasureRequestSpec.model_validate({"datasets": ["people"], "subjectColumn": "pid",
                                          "keysFrom": {"secretKeyRef": {"key": "k"}}})
ROLES = {"pid": "id", "age": "feature", "label": "target"}
KEYS = decide.Keys(hashes=["a" * 64])


def view(name: str, roles=ROLES, parents=(), task=None) -> decide.DatasetView:
    return decide.DatasetView(name=name, roles=dict(roles), parents=tuple(parents), digest="sha256:" + "1" * 64, task=task)


def planned(datasets, keys=KEYS):
    return decide.plan(SPEC, ErasureRequestStatus(), {d.name: d for d in datasets}, keys, "erase-x", 1, NOW)


@pytest.mark.parametrize("datasets,keys,phase,reason", [
    ([], KEYS, "Failed", "DatasetNotFound"),
    ([view("people", roles={})], KEYS, "Pending", "WaitingForDataset"),
    ([view("people", roles={"age": "feature"})], KEYS, "Failed", "UnknownColumn"),
    ([view("people", roles={"pid": "feature"})], KEYS, "Failed", "NotAnIdColumn"),
    ([view("people", task="ingest-people-1")], KEYS, "Pending", "WaitingForIngestion"),
    ([view("people"), view("adults", parents=["people"], task="ingest-adults-1")], KEYS, "Pending", "WaitingForIngestion"),
    ([view("people")], decide.Keys(error=("SecretNotFound", "spec.keysFrom.secretKeyRef: no")), "Failed", "SecretNotFound"),
    ([view("people")], KEYS, "Erasing", "Erasing"),
])
def test_plan_checks_the_request_first(datasets, keys, phase, reason) -> None:
    decision = planned(datasets, keys)
    assert decision.status["phase"] == phase
    assert next(c for c in decision.status["conditions"] if c["type"] == "Complete")["reason"] == reason
    assert bool(decision.of(decide.StartErase)) is (phase == "Erasing")


def test_derived_datasets_follow_their_parents_transitively() -> None:
    datasets = [view("grand", parents=["child"]), view("people"), view("child", parents=["people"]), view("other")]
    (start,) = planned(datasets).of(decide.StartErase)
    assert [(t.name, t.parents, t.recut) for t in start.targets] == [
        ("people", [], True), ("child", ["people"], False), ("grand", ["child"], False)]


def test_union_and_join_parents_are_read_from_the_spec() -> None:
    spec = {"source": {"derived": {"union": {"datasets": [{"name": "a"}, {"name": "b", "namespace": "elsewhere"}]}}}}
    assert decide.parents_of("ns", spec) == ("a",)
    spec = {"source": {"derived": {"join": {"left": {"name": "l"}, "right": {"name": "r"}, "on": ["id"]}}}}
    assert decide.parents_of("ns", spec) == ("l", "r")


def result(**kw) -> EraseResult:
    return EraseResult.model_validate({"status": "Succeeded", "reason": "Erased", "message": "2 rows erased",
                                       "rowsErased": 2, **kw})


def test_fold_moves_to_applying_or_fails() -> None:
    status = ErasureRequestStatus(phase="Erasing", task="erase-x")
    done = TaskState("Succeeded", exit_code=0)
    applying = decide.fold(status, done, result(tombstoned=[{"dataset": "people", "version": "a" * 12, "digest": "d",
                                                             "rows": 5, "erasedRows": 2}]), 1, NOW)
    assert applying.status["phase"] == "Applying" and applying.status["versionsTombstoned"] == ["people@" + "a" * 12]
    remain = decide.fold(status, done, result(status="Failed", reason="SubjectsRemain", message="1 object"), 1, NOW)
    assert remain.status["phase"] == "Failed" and remain.events[0].reason == "SubjectsRemain"
    crashed = decide.fold(status, TaskState("Failed", "Error", "boom", 1), None, 1, NOW)
    assert crashed.status["phase"] == "Failed"


def test_dataset_outcome_recuts_once_and_names_the_request() -> None:
    old = {"version": "a" * 12, "digest": "sha256:" + "a" * 64, "rows": 5, "createdAt": "2026-11-27T00:00:00Z",
           "uri": "s3://b/x/"}
    status = DatasetStatus.model_validate({"version": old["version"], "digest": old["digest"], "rows": 5,
                                           "versions": [old], "observedGeneration": 1})
    new = {"version": "b" * 12, "digest": "sha256:" + "b" * 64, "rows": 3, "createdAt": "2026-11-28T00:00:00Z",
           "uri": "s3://b/y/"}
    res = result(tombstoned=[{"dataset": "people", "version": old["version"], "digest": old["digest"], "rows": 5,
                              "erasedRows": 2}], recut={"people": new})
    first = decide.dataset_outcome("dsr", status, res, "people", "inline", True, 1, NOW)
    assert first.status["version"] == new["version"] and first.status["rows"] == 3
    assert [v.get("erasedBy") for v in first.status["versions"]] == ["dsr", None]
    assert {e.reason for e in first.events} == {"VersionCut", "VersionsErased"}
    assert any(c["type"] == "SourceHoldsErasedSubjects" for c in first.status["conditions"])
    again = decide.dataset_outcome("dsr", DatasetStatus.model_validate({**status.to_wire(), **first.status}), res,
                                   "people", "inline", True, 1, NOW)
    assert again.status == {} and again.events == []  # a second pass after a kill changes nothing


def test_flag_outcome_once_per_request() -> None:
    first = decide.flag_outcome("dsr", [], "trained on people@x", 1, NOW)
    assert first.status["conditions"][0]["type"] == "TrainedOnErasedData"
    conditions = [decide.Condition.model_validate(c) for c in first.status["conditions"]]
    assert decide.flag_outcome("dsr", conditions, "trained on people@x", 1, NOW).status == {}


def test_filter_matches_keys_as_text_and_integral_numbers() -> None:
    salt = "00" * 16
    keys = parse_keys(" 1001\n\ncust-7 \n1001\n")
    assert keys == ["1001", "cust-7"]
    hashes = [subject_hash(salt, k) for k in keys]
    frame = pd.DataFrame({"pid": [1001.0, 1002.0, None], "x": [1, 2, 3]})
    kept, dropped = drop_erased(frame, [{"column": "pid", "salt": salt, "hashes": hashes}])
    assert dropped == 1 and kept["pid"].tolist()[0] == 1002.0
    untouched, none = drop_erased(frame, [{"column": "other", "salt": salt, "hashes": hashes}])
    assert none == 0 and len(untouched) == 3
    assert text_holds(b'{"rows": [["cust-7", 3]]}', salt, set(hashes), "pid")
    assert text_holds(b"2026 INFO bad row cust-7: missing", salt, set(hashes), "pid")
    assert not text_holds(b'{"rows": [["cust-70", 3]]}', salt, set(hashes), "pid")
    assert token(True) == "true" and token(float("nan")) is None


@pytest.mark.parametrize("record,holds", [
    # The profile of the rows left after erasing 1001: statistics that equal the key are no row of it.
    ({"rows": 1001, "columns": [{"name": "pid", "count": 1001, "min": 1000.0, "max": 1002.0,
                                 "quantiles": {"0.5": 1001.0}, "sketch": {"buckets": [[1001, 2]]}}]}, False),
    ({"columns": [{"name": "pid", "min": 1001.0, "max": 1002.0}]}, True),  # a profile or summary entry of the column
    ({"source": {"inline": {"columns": ["x", "pid"], "rows": [[1, 1001], [2, 1002]]}}}, True),  # an inline table
    ({"source": {"inline": {"columns": ["pid", "x"], "rows": [[1000, 1001]]}}}, False),  # 1001 is an x
    ({"tests": [{"rows": [{"pid": 1001, "x": 1}]}]}, True),  # rows as objects
    ({"pid": [1000, 1001]}, True),  # a column as a list
    ({"message": "row 3: pid 1001 is not a number"}, True),  # text: every word
    ({"top": [{"value": "1001", "count": 3}]}, True),  # a string, wherever it is
])
def test_a_numeric_key_is_found_where_a_record_keeps_the_subject_column_and_in_text(record, holds) -> None:
    """Numbers in a JSON record count only as values of the subject column: a profile's median or a count that
    happens to equal an erased id failed the erasure (SubjectsRemain) and buried task records that held no row."""
    salt = "00" * 16
    assert text_holds(json.dumps(record).encode(), salt, {subject_hash(salt, "1001")}, "pid") is holds


@pytest.mark.parametrize("has_policy,started,reason,words", [
    (True, "req-erasure-1234abcd on people@0123456789ab", "RetrainStarted", "its retrain policy started req-erasure"),
    (True, None, "RetrainNeeded", "could not start a retrain"),
    (False, None, "RetrainNeeded", "it has no retrain policy")])
def test_a_production_package_on_erased_data_retrains_or_asks_its_requirement(has_policy, started, reason,
                                                                              words) -> None:
    asked = decide.requirement_outcome("dsr", [], ["buyers-1"], has_policy, 1, NOW, started)
    (cond,) = asked.status["conditions"]
    assert cond["type"] == "ProductionTrainedOnErasedData" and "buyers-1" in cond["message"] and words in cond["message"]
    assert cond["reason"] == reason and asked.events[0].reason == reason
    again = decide.requirement_outcome("dsr", [decide.Condition.model_validate(cond)], ["buyers-1"], has_policy, 1, NOW,
                                       started)
    assert again.status == {}


def test_one_retrain_name_per_request_and_requirement() -> None:
    name = decide.retrain_name("r" * 63, "0123456789abcdef")
    assert name == "r" * 45 + "-erasure-01234567" and len(name) <= 63
    assert decide.retrain_name("buyers", "0123456789abcdef") == decide.retrain_name("buyers", "0123456789abcdef")


def test_collection_datasets_of_models_trained_on_erased_data_are_targets() -> None:
    collected = decide.DatasetView(name="served", roles={"pid": "feature"}, source="collection", model="buyers")
    combined = view("all", parents=["people", "served"])
    unrelated = decide.DatasetView(name="other-served", roles={}, source="collection", model="other")
    found, models = decide.targets(SPEC, {d.name: d for d in (view("people"), collected, combined, unrelated)},
                                   {"people": {"buyers"}})
    assert [(t.name, t.recut) for t in found] == [("people", True), ("served", True), ("all", False)]
    assert models == ["buyers"]
    assert decide.targets(SPEC, {"people": view("people"), "served": collected})[1] == []


def test_collected_predictions_match_by_the_served_row() -> None:
    from mloop.data.erasure import collected_matching

    salt = "00" * 16
    frame = pd.DataFrame({"row_id": ["a", "b", "c"],
                          "inputs": ['{"pid": 1001, "x": 1.0}', '{"pid": 1002, "x": 2.0}', '{"x": 3.0}']})
    hashes = {subject_hash(salt, "1001")}
    assert collected_matching(frame, "pid", salt, hashes).tolist() == [True, False, False]
    assert not collected_matching(frame, "other", salt, hashes).any()
    assert not collected_matching(pd.DataFrame({"pid": [1001]}), "pid", salt, hashes).any()


def _version(v: str, days_old: int) -> decide.DatasetVersion:
    from datetime import timedelta

    return decide.DatasetVersion(version=v, digest="sha256:" + v + "0" * 52, rows=3,
                                 created_at=NOW - timedelta(days=days_old), uri=f"s3://b/{v}/")


def test_retention_deletes_what_no_production_package_needs_and_names_what_it_keeps() -> None:
    old, pinned, current = _version("a" * 12, 9), _version("b" * 12, 8), _version("c" * 12, 0)
    status = DatasetStatus(version=current.version, versions=[old, pinned, current])
    holds = {pinned.version: "Production ModelPackage m-1 depends on it (TrainingRun r trained on d@bbbbbbbbbbbb)"}
    deleted, held = decide.retention_split([old, pinned], holds)
    assert (deleted, held) == ([old], [pinned])
    outcome = decide.retention_outcome(status, deleted, held, holds, 7, 1, NOW)
    assert [v.get("expired", False) for v in outcome.status["versions"]] == [True, False, False]
    assert outcome.status["expired"] == [old.version]
    (cond,) = outcome.status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("RetentionHeld", "True", "ProductionDependsOn")
    assert f"version {pinned.version} is past the retention of 7 days but kept: Production ModelPackage m-1" in cond[
        "message"]
    assert [e.reason for e in outcome.events] == ["VersionExpired", "RetentionHeld"]
    # Held again on the next pass: nothing to write, no second event.
    later = DatasetStatus(version=current.version, versions=[old, pinned, current],
                          conditions=[decide.Condition.model_validate(cond)])
    assert decide.retention_outcome(later, [], [pinned], holds, 7, 1, NOW) == decide.Outcome()
    # The package left Production: the version goes and the condition says nothing is held.
    released = decide.retention_outcome(later, [pinned], [], {}, 7, 1, NOW)
    assert released.status["conditions"][0]["status"] == "False" and released.status["expired"] == [pinned.version]


def test_an_ingest_task_spec_copies_no_erased_inline_row() -> None:
    salt = "00" * 16
    filters = [{"column": "pid", "salt": salt, "hashes": [subject_hash(salt, "p-7")]}]
    spec = {"source": {"inline": {"columns": ["pid", "x"], "rows": [["p-7", 1], ["p-8", 2], [None, 3]]}}}
    assert without_erased_rows(spec, filters)["source"]["inline"]["rows"] == [["p-8", 2], [None, 3]]
    assert spec["source"]["inline"]["rows"][0] == ["p-7", 1]  # the user's spec itself is not edited
    assert without_erased_rows(spec, []) is spec
