"""Dataset decisions in tables: when to ingest, how results fold into status, what expires."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mloop.api.dataset import DatasetSpec, DatasetStatus
from mloop.api.tasks import IngestResult, ParentPin
from mloop.executors.base import TaskState, task_name
from mloop.reconcile.dataset import (expired_versions, fold_result, ingest_key, plan_ingest, started,
                                    untried_parents)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
S3_REFRESH = DatasetSpec.model_validate({"source": {"s3": {"uri": "s3://bucket/k.csv"}}, "refresh": {"interval": "10m"}})
BUILTIN = DatasetSpec.model_validate({"source": {"builtin": {"name": "iris"}}})
DIGEST = "sha256:" + "ab" * 32


def status(**kw) -> DatasetStatus:
    return DatasetStatus.model_validate(kw)


@pytest.mark.parametrize(
    "spec,st,generation,expected",
    [
        (BUILTIN, status(), 1, "SpecChanged"),
        (BUILTIN, status(observedGeneration=1), 1, None),
        (BUILTIN, status(observedGeneration=1), 2, "SpecChanged"),
        (BUILTIN, status(observedGeneration=1, task="ingest-x"), 2, None),
        (S3_REFRESH, status(observedGeneration=1, lastIngestedAt=NOW - timedelta(minutes=5)), 1, None),
        (S3_REFRESH, status(observedGeneration=1, lastIngestedAt=NOW - timedelta(minutes=11)), 1, "RefreshDue"),
        (S3_REFRESH, status(observedGeneration=1), 1, "RefreshDue"),
    ],
)
def test_plan_ingest(spec, st, generation, expected) -> None:
    plan = plan_ingest(spec, st, generation, NOW)
    assert (plan.reason if plan else None) == expected


UNION = DatasetSpec.model_validate({"source": {"derived": {"union": {"datasets": [{"name": "a"}, {"name": "b"}]}}}})


def test_a_union_reingests_when_any_parent_moves_and_names_the_task_after_every_parent() -> None:
    pins = [ParentPin(namespace="ns", name="a", digest="1" * 64), ParentPin(namespace="ns", name="b", digest="2" * 64)]
    made = status(observedGeneration=1, sourceVersion=f"a@{'1' * 12},b@{'2' * 12}")
    assert plan_ingest(UNION, made, 1, NOW, pins) is None
    moved = [pins[0], pins[1].model_copy(update={"digest": "3" * 64})]
    plan = plan_ingest(UNION, made, 1, NOW, moved)
    assert plan is not None and plan.reason == "ParentChanged"
    assert plan.trigger != plan_ingest(UNION, made, 1, NOW, [moved[0].model_copy(update={"digest": "4" * 64}),
                                                             pins[1]]).trigger


def test_a_derived_dataset_tries_each_set_of_parent_versions_once_unless_storage_lost_the_attempt() -> None:
    pins = [ParentPin(namespace="ns", name="a", digest="1" * 64), ParentPin(namespace="ns", name="b", digest="3" * 64)]
    label = f"a@{'1' * 12},b@{'3' * 12}"
    start = started(status(observedGeneration=1, phase="Ready"), "ingest-u", "ParentChanged", 1, NOW, pins)
    assert start.status["triedSource"] == label
    # That ingestion failed (a column mismatch, say): the same parents are not tried again, new ones are.
    failed = status(observedGeneration=1, phase="Failed", sourceVersion=f"a@{'1' * 12},b@{'2' * 12}", triedSource=label)
    assert not untried_parents(failed, pins) and plan_ingest(UNION, failed, 1, NOW, pins) is None
    moved = [pins[0], pins[1].model_copy(update={"digest": "4" * 64})]
    assert untried_parents(failed, moved) and plan_ingest(UNION, failed, 1, NOW, moved).reason == "ParentChanged"
    # An attempt lost to a storage outage gave no answer: it is tried again, under a new task name.
    retry = plan_ingest(UNION, failed.model_copy(update={"retries": 1}), 1, NOW, pins, retries=1)
    assert retry is not None and retry.reason == "ParentChanged"
    # Before triedSource existed (an upgraded operator), the version's own parents decide, as they did.
    assert plan_ingest(UNION, status(observedGeneration=1, sourceVersion=label), 1, NOW, moved) is not None


def test_retries_and_refresh_ticks_give_new_task_names_but_the_same_intent_the_same_name() -> None:
    first = plan_ingest(BUILTIN, status(), 1, NOW, retries=0)
    again = plan_ingest(BUILTIN, status(), 1, NOW + timedelta(seconds=5), retries=0)
    retry = plan_ingest(BUILTIN, status(), 1, NOW, retries=1)
    assert task_name("ingest", "iris", "uid", first.trigger) == task_name("ingest", "iris", "uid", again.trigger)
    assert task_name("ingest", "iris", "uid", first.trigger) != task_name("ingest", "iris", "uid", retry.trigger)
    assert len(task_name("ingest", "x" * 80, "uid", "g1r0")) <= 63


def test_governance_edits_keep_the_ingest_key() -> None:
    tagged = DatasetSpec.model_validate({"source": {"builtin": {"name": "iris"}}, "governance": {"owner": "me"}})
    assert ingest_key(tagged) == ingest_key(BUILTIN)
    assert ingest_key(S3_REFRESH) != ingest_key(BUILTIN)


def result(version: str = "abababababab", created: bool = True) -> IngestResult:
    """result.json as the ingest task writes it, read back through the typed contract."""
    return IngestResult.model_validate({
        "status": "Succeeded", "version": version, "digest": DIGEST, "rows": 10, "createdAt": "2026-06-01T00:00:00Z",
        "uri": "s3://b/p/", "created": created, "columns": [{"name": "x", "type": "integer"}], "validation": []})


def test_a_new_version_is_appended_with_an_event() -> None:
    out = fold_result(BUILTIN, status(task="t"), 1, TaskState("Succeeded"), result(), NOW, True)
    assert out.status["phase"] == "Ready" and out.status["task"] is None
    assert [v["version"] for v in out.status["versions"]] == ["abababababab"]
    assert [e.reason for e in out.events] == ["VersionCut", "LicenseMissing"]


def test_unchanged_content_appends_nothing_and_posts_no_version_event() -> None:
    first = fold_result(BUILTIN, status(task="t"), 1, TaskState("Succeeded"), result(), NOW, True)
    st = DatasetStatus.model_validate({**first.status, "task": "t2"})
    again = fold_result(BUILTIN, st, 1, TaskState("Succeeded"), result(created=False), NOW, True)
    assert len(again.status["versions"]) == 1
    assert "VersionCut" not in [e.reason for e in again.events]


def test_history_is_bounded_to_twenty_versions() -> None:
    st = status(versions=[{"version": f"{i:012x}", "digest": DIGEST, "rows": 1, "createdAt": NOW.isoformat(),
                           "uri": "s3://b/p/"} for i in range(20)], task="t")
    out = fold_result(BUILTIN, st, 1, TaskState("Succeeded"), result("ffffffffffff"), NOW, True)
    assert len(out.status["versions"]) == 20 and out.status["versions"][-1]["version"] == "ffffffffffff"
    assert out.status["versions"][0]["version"] == f"{1:012x}"


@pytest.mark.parametrize(
    "state,storage_ok,reason,phase",
    [
        (TaskState("Failed", "Error", exit_code=75), True, "StorageUnavailable", None),
        (TaskState("Failed", "ProcessLost"), False, "StorageUnavailable", None),
        (TaskState("Failed", "DeadlineExceeded", "too slow", exit_code=137), True, "DeadlineExceeded", "Failed"),
    ],
)
def test_failures_without_a_result(state, storage_ok, reason, phase) -> None:
    out = fold_result(BUILTIN, status(task="t", retries=2), 1, state, None, NOW, storage_ok)
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == reason and out.status.get("phase") == phase
    if reason == "StorageUnavailable":
        assert out.status["retries"] == 3 and "observedGeneration" not in out.status


def test_expiry_spares_the_current_version() -> None:
    old = NOW - timedelta(days=10)
    st = status(version="000000000001", versions=[
        {"version": "000000000000", "digest": DIGEST, "rows": 1, "createdAt": old.isoformat(), "uri": "u"},
        {"version": "000000000001", "digest": DIGEST, "rows": 1, "createdAt": old.isoformat(), "uri": "u"}])
    assert [v.version for v in expired_versions(st, 7, NOW)] == ["000000000000"]
    assert expired_versions(st, 30, NOW) == [] and expired_versions(st, None, NOW) == []
