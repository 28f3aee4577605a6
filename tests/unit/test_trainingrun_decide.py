"""TrainingRun decisions in tables: every transition of decide() and every reason a run fails or waits."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mloop.api.common import GovernanceTags, iso
from mloop.api.dataset import DatasetStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import EXIT_STORAGE, TaskState, TrainResult, task_name
from mloop.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from mloop.reconcile.trainingrun import (
    MAX_STORAGE_RETRIES,
    CacheEntry,
    ExportAttempt,
    RecordCache,
    RunRef,
    SetLabel,
    SubmitTask,
    VersionFacts,
    World,
    WriteSpec,
    decide,
    fold_export,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
OLD, CURRENT = "sha256:" + "b" * 64, "sha256:" + "a" * 64
COLUMNS = [{"name": "id", "type": "integer", "role": "id"}, {"name": "x1", "type": "float"},
           {"name": "x2", "type": "float"}, {"name": "email", "type": "string", "pii": "direct"},
           {"name": "y", "type": "category"}]
DATASET = DatasetStatus.model_validate({
    "phase": "Ready", "version": "a" * 12, "digest": CURRENT, "rows": 100, "columns": COLUMNS,
    "profile": [{"name": c["name"], "nulls": 0, "distinct": 3} for c in COLUMNS],
    "versions": [{"version": "b" * 12, "digest": OLD, "rows": 50, "createdAt": "2026-05-01T00:00:00Z", "uri": "s3://m/o/"},
                 {"version": "a" * 12, "digest": CURRENT, "rows": 100, "createdAt": "2026-05-30T00:00:00Z",
                  "uri": "s3://m/c/"}]})
RUN = RunRef(namespace="ns", name="run", uid="u-1", prefix="runs/ns/run/u-1/")
BASE = {"datasetRef": {"name": "d"}, "target": "y", "features": ["x1", "x2"], "estimator": {"name": "LogisticRegression"}}
SEARCH = {"search": {"type": "grid", "parameters": {"C": [0.1, 1.0, 10.0]}}}
TAGS = GovernanceTags(license="CC-BY-4.0", classification="restricted")
GOOD = RequirementSpec.model_validate({"title": "good", "metrics": [{"metric": "accuracy", "min": 0.9, "primary": True}],
                                      "data": {"minRows": 80}})
LICENCE = RequirementSpec.model_validate({"title": "l", "governance": {"allowedLicenses": ["CC0-1.0"]}})
CLASSIFIED = RequirementSpec.model_validate({"title": "c", "governance": {"maxClassification": "internal"}})
NO_PII = RequirementSpec.model_validate({"title": "p", "governance": {"allowedPiiLevels": ["none"]}})
TRAINED = TrainResult(status="Succeeded", reason="Trained", message="held-out accuracy 0.9500", task="classification",
                      features=["x1", "x2"], metrics={"accuracy": 0.95, "f1_macro": 0.94},
                      model_uri="s3://m/runs/ns/run/u-1/model.skops", model_digest="sha256:" + "c" * 64)
TRAIN_TASK, TRIALS_TASK = task_name("train", "run", "u-1"), task_name("trials", "run", "u-1")
IN_FLIGHT = {"phase": "Running", "task": TRAIN_TASK, "startedAt": "2026-06-01T11:00:00Z", "datasetDigest": CURRENT,
             "dataset": "d@" + "a" * 12}


def spec(**change: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({**BASE, **change})


def world(**change: Any) -> World:
    return replace(World(run=RUN, dataset=DATASET, governance=TAGS), **change)


def failed(code: int, reason: str = "Error", message: str = "") -> TaskState:
    return TaskState("Failed", reason, message, code)


def cond(decision, type_: str) -> tuple[str, str] | None:
    found = next((c for c in decision.status.get("conditions", []) if c["type"] == type_), None)
    return (found["status"], found["reason"]) if found else None


def submitted(decision) -> list[str]:
    return [a.task.name for a in decision.of(SubmitTask)]


CASES = [
    # id, spec, status, world, phase, Succeeded condition, submitted tasks, event reasons
    ("no-dataset", spec(), {}, world(dataset=None), "Pending", ("Unknown", "WaitingForDataset"), [],
     ["WaitingForDataset"]),
    ("no-such-version", spec(datasetRef={"name": "d", "version": "c" * 12}), {}, world(), "Pending",
     ("Unknown", "WaitingForDataset"), [], ["WaitingForDataset"]),
    ("dataset-not-ready", spec(), {}, world(dataset=DatasetStatus(phase="Ingesting")), "Pending",
     ("Unknown", "WaitingForDataset"), [], ["WaitingForDataset"]),
    ("no-requirement", spec(requirementRefs=[{"name": "good"}]), {}, world(requirements=(("good", None),)), "Pending",
     ("Unknown", "WaitingForRequirement"), [], ["WaitingForRequirement"]),
    ("target-not-found", spec(target="colour"), {}, world(), "Failed", ("False", "TargetNotFound"), [],
     ["TargetNotFound"]),
    ("feature-not-found", spec(features=["x1", "x9"]), {}, world(), "Failed", ("False", "FeatureNotFound"), [],
     ["FeatureNotFound"]),
    ("no-features", spec(features=None),  {}, world(dataset=DATASET.model_copy(update={"columns": [
        DATASET.columns[0], DATASET.columns[-1]]})), "Failed", ("False", "NoFeatures"), [], ["NoFeatures"]),
    ("invalid-parameter", spec(), {}, world(estimator_error="LogisticRegression has no parameter 'x'"), "Failed",
     ("False", "InvalidParameter"), [], ["InvalidParameter"]),
    ("licence", spec(requirementRefs=[{"name": "l"}]), {}, world(requirements=(("l", LICENCE),)), "Failed",
     ("False", "GovernanceBlocked"), [], ["GovernanceBlocked"]),
    ("classification", spec(requirementRefs=[{"name": "c"}]), {}, world(requirements=(("c", CLASSIFIED),)), "Failed",
     ("False", "GovernanceBlocked"), [], ["GovernanceBlocked"]),
    ("pii-feature", spec(features=["x1", "email"], requirementRefs=[{"name": "p"}]), {},
     world(requirements=(("p", NO_PII),)), "Failed", ("False", "GovernanceBlocked"), [], ["GovernanceBlocked"]),
    ("pii-not-used", spec(requirementRefs=[{"name": "p"}]), {}, world(requirements=(("p", NO_PII),)), "Pending",
     ("Unknown", "Started"), [TRAIN_TASK], ["RunStarted"]),
    ("start-train", spec(), {}, world(), "Pending", ("Unknown", "Started"), [TRAIN_TASK], ["RunStarted"]),
    ("start-trials", spec(**SEARCH), {}, world(trial_count=3), "Pending", ("Unknown", "Started"), [TRIALS_TASK],
     ["RunStarted"]),
    ("storage-down-at-start", spec(), {}, world(storage_ok=False), "Pending", ("Unknown", "StorageUnavailable"), [],
     ["StorageUnavailable"]),
    ("cache-hit", spec(cachePolicy="reuse"), {}, world(cache_hit=CacheEntry("first", "u-0", TRAINED)), "Succeeded",
     ("True", "CacheHit"), [], ["CacheHit"]),
    ("cache-hit-ignored-without-reuse", spec(), {}, world(cache_hit=CacheEntry("first", "u-0", TRAINED)), "Pending",
     ("Unknown", "Started"), [TRAIN_TASK], ["RunStarted"]),
    ("pending", spec(), {**IN_FLIGHT, "phase": "Pending"}, world(task=TaskState("Pending")), "Pending", None, [], []),
    ("running", spec(), {**IN_FLIGHT, "phase": "Pending"}, world(task=TaskState("Running")), "Running",
     ("Unknown", "Running"), [], []),
    ("trials-succeeded-refit", spec(**SEARCH), {**IN_FLIGHT, "task": TRIALS_TASK},
     world(task=TaskState("Succeeded"), trial_count=3), "Running", ("Unknown", "Refitting"), [TRAIN_TASK], []),
    ("trials-failed", spec(**SEARCH), {**IN_FLIGHT, "task": TRIALS_TASK}, world(task=failed(1), trial_count=3),
     "Failed", ("False", "TrialFailed"), [], ["TrialFailed"]),
    ("trials-lost-storage", spec(**SEARCH), {**IN_FLIGHT, "task": TRIALS_TASK},
     world(task=failed(EXIT_STORAGE), trial_count=3), "Running", ("Unknown", "Retrying"),
     [task_name("trials", "run", "u-1", "retry1")], ["TaskRetried"]),
    ("train-succeeded", spec(), IN_FLIGHT, world(task=TaskState("Succeeded", exit_code=0), result=TRAINED,
                                                 cache_key="k"), "Succeeded", ("True", "Trained"), [], ["RunSucceeded"]),
    ("result-failed", spec(), IN_FLIGHT, world(task=failed(0), result=TrainResult(
        status="Failed", reason="FitFailed", message="ValueError: bad")), "Failed", ("False", "FitFailed"), [],
     ["FitFailed"]),
    ("crashed-without-result", spec(), IN_FLIGHT, world(task=failed(137, "OOMKilled", "the pod ran out of memory")),
     "Failed", ("False", "OOMKilled"), [], ["OOMKilled"]),
    ("lost-storage-retry", spec(), IN_FLIGHT, world(task=failed(EXIT_STORAGE)), "Running", ("Unknown", "Retrying"),
     [task_name("train", "run", "u-1", "retry1")], ["TaskRetried"]),
    ("lost-storage-still-down", spec(), IN_FLIGHT, world(task=failed(EXIT_STORAGE), storage_ok=False), "Running",
     ("Unknown", "StorageUnavailable"), [], ["StorageUnavailable"]),
    ("lost-storage-too-often", spec(), {**IN_FLIGHT, "retries": MAX_STORAGE_RETRIES}, world(task=failed(EXIT_STORAGE)),
     "Failed", ("False", "StorageUnavailable"), [], ["StorageUnavailable"]),
    ("no-result-storage-down", spec(), IN_FLIGHT, world(task=failed(1), storage_ok=False), "Running",
     ("Unknown", "StorageUnavailable"), [], ["StorageUnavailable"]),
    ("task-missing", spec(), IN_FLIGHT, world(task=TaskState("Missing")), "Failed", ("False", "TaskFailed"), [],
     ["TaskFailed"]),
    ("invalid-spec", None, {}, world(spec_error="spec.target: Field required"), "Failed", ("False", "InvalidSpec"), [],
     ["InvalidSpec"]),
]


@pytest.mark.parametrize("spec_,raw,world_,phase,succeeded,tasks,events", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_decide(spec_, raw, world_, phase, succeeded, tasks, events) -> None:
    status = TrainingRunStatus.model_validate(raw)
    decision = decide(spec_, status, world_, NOW)
    assert decision.status.get("phase", status.phase) == phase
    assert cond(decision, "Succeeded") == succeeded
    assert submitted(decision) == tasks
    assert [e.reason for e in decision.events] == events
    if phase == "Failed":
        assert decision.status["failure"] and decision.status["finishedAt"] == "2026-06-01T12:00:00Z"
    if decision.of(WriteSpec):
        assert status.task is None and submitted(decision)  # spec.json only with the first task


def test_governance_refusals_name_the_limit_and_start_nothing() -> None:
    for ref, req, reason, words in (("l", LICENCE, "LicenseNotAllowed", "licence CC-BY-4.0 of Dataset d"),
                                    ("c", CLASSIFIED, "ClassificationTooHigh", "classified restricted"),
                                    ("p", NO_PII, "PIIFeature", "feature column 'email' holds direct PII")):
        decision = decide(spec(features=["x1", "email"], requirementRefs=[{"name": ref}]), TrainingRunStatus(),
                          world(requirements=((ref, req),)), NOW)
        blocked = next(c for c in decision.status["conditions"] if c["type"] == "GovernanceBlocked")
        assert (blocked["status"], blocked["reason"]) == ("True", reason) and words in blocked["message"]
        assert not decision.actions


def test_admitted_run_says_so_and_gets_its_experiment_label() -> None:
    decision = decide(spec(requirementRefs=[{"name": "p"}], experiment="iris"), TrainingRunStatus(),
                      world(requirements=(("p", NO_PII),)), NOW)
    assert cond(decision, "GovernanceBlocked") == ("False", "Admitted")
    assert decision.of(SetLabel) == [SetLabel("mloop.dev/experiment", "iris")]
    [task] = decision.of(SubmitTask)
    assert task.task.labels == {"mloop.dev/experiment": "iris"}


def test_start_writes_the_typed_task_spec_with_the_pinned_version() -> None:
    decision = decide(spec(datasetRef={"name": "d", "version": "b" * 12}), TrainingRunStatus(), world(
        pinned=VersionFacts(columns=tuple(DATASET.columns or []), profile=())), NOW)
    [write] = decision.of(WriteSpec)
    assert write.key == "runs/ns/run/u-1/spec.json"
    wire = write.body.to_wire()
    assert wire["dataset"] == {"namespace": "ns", "name": "d", "version": "b" * 12, "digest": "b" * 64}
    assert (wire["task"], wire["target"], wire["features"], wire["types"]["x1"]) == ("classification", "y",
                                                                                     ["x1", "x2"], "float")
    assert wire["spec"]["estimator"]["name"] == "LogisticRegression"
    assert decision.status["datasetDigest"] == OLD and decision.status["dataset"] == "d@" + "b" * 12


def test_trials_task_fans_out_one_index_per_candidate() -> None:
    decision = decide(spec(**SEARCH), TrainingRunStatus(), world(trial_count=3), NOW)
    [task] = [a.task for a in decision.of(SubmitTask)]
    assert (task.kind, task.completions, task.parallelism) == ("trials", 3, 2)
    assert task.command[-2:] == ["trial", "runs/ns/run/u-1/"]


def test_deciding_twice_on_one_status_starts_the_same_task_and_keeps_started_at() -> None:
    first = decide(spec(), TrainingRunStatus(), world(), NOW)
    again = decide(spec(), TrainingRunStatus(), world(), NOW + timedelta(seconds=5))
    assert submitted(first) == submitted(again) == [TRAIN_TASK]
    assert first.status["startedAt"] == "2026-06-01T12:00:00Z"
    earlier = TrainingRunStatus.model_validate({"startedAt": "2026-06-01T11:00:00Z"})
    assert decide(spec(), earlier, world(), NOW).status["startedAt"] == "2026-06-01T11:00:00Z"


def test_retries_get_new_deterministic_names() -> None:
    lost = world(task=failed(EXIT_STORAGE))
    once = decide(spec(), TrainingRunStatus.model_validate(IN_FLIGHT), lost, NOW)
    same = decide(spec(), TrainingRunStatus.model_validate(IN_FLIGHT), lost, NOW)
    assert submitted(once) == submitted(same) and once.status["retries"] == 1
    twice = decide(spec(), TrainingRunStatus.model_validate({**IN_FLIGHT, **once.status}), lost, NOW)
    assert twice.status["retries"] == 2 and submitted(twice) != submitted(once)
    assert twice.status["task"] == submitted(twice)[0] == task_name("train", "run", "u-1", "retry2")


def test_a_retry_carries_the_spec_again_when_the_lost_task_never_wrote_it() -> None:
    """The lost task's Job (which carried the spec) may be gone: the retry's spec is built again on the pinned version."""
    status = TrainingRunStatus.model_validate(IN_FLIGHT)
    written = decide(spec(), status, world(task=failed(EXIT_STORAGE)), NOW)
    assert not written.of(WriteSpec) and submitted(written) == [task_name("train", "run", "u-1", "retry1")]
    again = decide(spec(), status, world(task=failed(EXIT_STORAGE), spec_written=False), NOW)
    (write,) = again.of(WriteSpec)
    assert write.key == RUN.prefix + "spec.json" and submitted(again) == submitted(written)
    assert write.body.dataset.digest == CURRENT.removeprefix("sha256:") and write.body.features == ["x1", "x2"]
    assert write.body == decide(spec(), TrainingRunStatus(), world(), NOW).of(WriteSpec)[0].body  # as at the start
    # pinned to an older version than the Dataset's current: that version's columns, not the current's
    old = {**IN_FLIGHT, "datasetDigest": OLD, "dataset": "d@" + "b" * 12}
    facts = VersionFacts(columns=tuple(DATASET.columns[1:]), profile=())
    older = decide(spec(), TrainingRunStatus.model_validate(old),
                   world(task=failed(EXIT_STORAGE), spec_written=False, pinned=facts), NOW)
    assert older.of(WriteSpec)[0].body.dataset.version == "b" * 12
    # the pinned version is gone (retention): nothing to train on, said so
    gone = DATASET.model_copy(update={"versions": [v for v in DATASET.versions if v.digest != OLD]})
    lost = decide(spec(), TrainingRunStatus.model_validate(old),
                  world(task=failed(EXIT_STORAGE), spec_written=False, dataset=gone), NOW)
    assert lost.status["phase"] == "Failed" and cond(lost, "Succeeded") == ("False", "DatasetVersionGone")
    assert not submitted(lost)


def test_crash_without_result_names_exit_code_and_memory() -> None:
    decision = decide(spec(), TrainingRunStatus.model_validate(IN_FLIGHT),
                      world(task=failed(137, "OOMKilled", "the pod ran out of memory")), NOW)
    assert decision.status["failure"].startswith("OOMKilled: train task " + TRAIN_TASK)
    assert "(exit code 137, killed: out of memory?)" in decision.status["failure"]


def test_success_records_metrics_requirements_and_the_cache_entry() -> None:
    decision = decide(spec(requirementRefs=[{"name": "good"}]), TrainingRunStatus.model_validate(IN_FLIGHT),
                      world(task=TaskState("Succeeded", exit_code=0), result=TRAINED, requirements=(("good", GOOD),),
                            cache_key="k"), NOW)
    st = decision.status
    assert st["metrics"] == {"accuracy": 0.95, "f1_macro": 0.94} and st["primaryMetric"] == "accuracy=0.9500"
    assert st["modelDigest"] == TRAINED.model_digest and st["task"] is None
    assert cond(decision, "RequirementsMet") == ("True", "CriteriaMet")
    assert {r["criterion"]: r["passed"] for r in st["requirements"]} == {"metric:accuracy": True, "data:minRows": True}
    [record] = decision.of(RecordCache)
    assert record.key == "k" and record.entry["uid"] == "u-1" and record.entry["result"]["modelUri"] == TRAINED.model_uri
    assert "mlflow" not in st


def test_data_criteria_are_judged_on_the_pinned_version_not_the_current_one() -> None:
    pinned = {**IN_FLIGHT, "datasetDigest": OLD}  # 50 rows then; the Dataset has 100 now
    decision = decide(spec(requirementRefs=[{"name": "good"}]), TrainingRunStatus.model_validate(pinned),
                      world(task=TaskState("Succeeded"), result=TRAINED, requirements=(("good", GOOD),),
                            pinned=VersionFacts(columns=tuple(DATASET.columns or []), profile=())), NOW)
    rows = next(r for r in decision.status["requirements"] if r["criterion"] == "data:minRows")
    assert (rows["value"], rows["passed"]) == (50, False)
    assert cond(decision, "RequirementsMet") == ("False", "CriterionFailed")


def test_cache_hit_posts_one_terminal_event_and_records_nothing() -> None:
    decision = decide(spec(cachePolicy="reuse", requirementRefs=[{"name": "good"}]), TrainingRunStatus(),
                      world(cache_hit=CacheEntry("first", "u-0", TRAINED), requirements=(("good", GOOD),)), NOW)
    assert [e.reason for e in decision.events] == ["CacheHit"]  # one terminal event per run
    assert decision.status["cacheSource"] == "first" and decision.status["metrics"]["accuracy"] == 0.95
    assert cond(decision, "GovernanceBlocked") == ("False", "Admitted")
    assert cond(decision, "RequirementsMet") == ("True", "CriteriaMet")
    assert not decision.of(SubmitTask) and not decision.of(RecordCache) and not decision.of(WriteSpec)


def test_a_wanted_export_is_left_pending_for_a_later_pass() -> None:
    decision = decide(spec(), TrainingRunStatus.model_validate(IN_FLIGHT),
                      world(task=TaskState("Succeeded"), result=TRAINED, export_wanted=True), NOW)
    assert decision.status["phase"] == "Succeeded" and decision.status["mlflow"] == {"state": "Pending"}


def test_waiting_twice_posts_one_event_and_finished_runs_are_left_alone() -> None:
    first = decide(spec(), TrainingRunStatus(), world(dataset=None), NOW)
    again = decide(spec(), TrainingRunStatus.model_validate(first.status), world(dataset=None), NOW)
    assert [e.reason for e in first.events] == ["WaitingForDataset"] and again.events == ()
    done = TrainingRunStatus.model_validate({"phase": "Succeeded"})
    assert decide(spec(), done, world(task=failed(EXIT_STORAGE)), NOW).status == {}


SUCCEEDED = {"phase": "Succeeded", "mlflow": {"state": "Pending", "attempts": 1}}
SHOWN = {"tracking_uri": "http://mlflow:5000", "experiment": "iris"}


@pytest.mark.parametrize("raw,attempt,state,attempts,condition,events", [
    (SUCCEEDED, ExportAttempt("Exported", **SHOWN, experiment_id="1", run_id="r1", model_uri="models:/m-1"),
     "Exported", 2, ("True", "Exported"), ["Exported"]),
    (SUCCEEDED, ExportAttempt("Unreachable", **SHOWN, error="connection refused", retry_in=4.0), "Pending", 2,
     ("False", "ExportPending"), ["ExportPending"]),
    ({**SUCCEEDED, "conditions": [{"type": "MLflowExported", "status": "False", "reason": "ExportPending",
                                   "lastTransitionTime": "2026-06-01T11:00:00Z"}]},
     ExportAttempt("Unreachable", **SHOWN, error="connection refused", retry_in=4.0), "Pending", 2,
     ("False", "ExportPending"), []),
    (SUCCEEDED, ExportAttempt("Busy", **SHOWN, retry_in=2.0), "Pending", 1, ("False", "ExportPending"), []),
    (SUCCEEDED, ExportAttempt("Refused", **SHOWN, error="digest mismatch"), "Failed", 2, ("False", "ExportFailed"),
     ["ExportFailed"]),
    (SUCCEEDED, ExportAttempt("NotAllowed", **SHOWN), "Failed", 1, ("False", "TrackingUriNotAllowed"),
     ["TrackingUriNotAllowed"]),
    (SUCCEEDED, ExportAttempt("Disabled"), "Disabled", 1, ("False", "ExportDisabled"), []),
], ids=["exported", "unreachable", "still-unreachable", "busy", "refused", "not-allowed", "disabled"])
def test_fold_export(raw, attempt, state, attempts, condition, events) -> None:
    decision = fold_export(TrainingRunStatus.model_validate(raw), 1, attempt, NOW)
    export = decision.status["mlflow"]
    assert (export["state"], export.get("attempts", 0)) == (state, attempts)
    assert cond(decision, "MLflowExported") == condition and [e.reason for e in decision.events] == events
    assert "phase" not in decision.status  # the run stays Succeeded whatever the export does
    if state == "Pending":
        assert export["retryAt"] == iso(NOW + timedelta(seconds=attempt.retry_in))


def test_export_of_a_run_that_never_wanted_one_changes_nothing() -> None:
    decision = fold_export(TrainingRunStatus.model_validate({"phase": "Succeeded"}), 1, ExportAttempt("Disabled"), NOW)
    assert "mlflow" not in decision.status and not decision.events
