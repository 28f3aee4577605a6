"""ErasureRequest decisions: check the request against the Datasets, fold the erase task's result, and say what
each touched Dataset, TrainingRun and ModelPackage must show.

The steps, each recorded in status before the next: Pending (checks) -> Erasing (the task) -> Applying (Datasets
recut, runs and packages flagged, audit written: each write idempotent) -> Complete. A kill anywhere resumes there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mloop.api.common import Condition, iso, set_condition
from mloop.api.dataset import DatasetStatus, DatasetVersion
from mloop.api.erasure import EraseResult, EraseTarget, ErasureRequestSpec, ErasureRequestStatus
from mloop.api.tasks import TaskState
from mloop.reconcile.outcome import Decision, Draft, Event, Outcome, camel_reason, dump_conditions

ERASED_CONDITION = "TrainedOnErasedData"
RETRAIN_CONDITION = "ProductionTrainedOnErasedData"
SOURCE_CONDITION = "SourceHoldsErasedSubjects"
MAX_VERSIONS = 20


@dataclass(frozen=True)
class DatasetView:
    """What the request needs to know of one Dataset: from the operator's index, no API read."""

    name: str
    roles: dict[str, str]  # column -> role, of the current version
    parents: tuple[str, ...] = ()  # Datasets (same namespace) it is derived from, unpinned or pinned
    digest: str | None = None
    task: str | None = None
    source: str = ""  # inline, builtin, s3, derived, collection


def parents_of(namespace: str, spec: dict[str, Any]) -> tuple[str, ...]:
    """Same-namespace parents of a derived Dataset's spec (one parent, a union or a join)."""
    derived = (spec.get("source") or {}).get("derived") or {}
    join = derived.get("join") or {}
    refs = [derived.get("datasetRef"), *((derived.get("union") or {}).get("datasets") or []), join.get("left"),
            join.get("right")]
    refs = [r for r in refs if r]
    return tuple(dict.fromkeys(r["name"] for r in refs if (r.get("namespace") or namespace) == namespace))


@dataclass(frozen=True)
class StartErase:
    targets: list[EraseTarget]


@dataclass
class Keys:
    """The request's keys as salted hashes, or why they could not be read."""

    hashes: list[str] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (reason, message)


class _Draft(Draft):
    main = "Complete"


def targets(spec: ErasureRequestSpec, datasets: dict[str, DatasetView]) -> list[EraseTarget]:
    """The named Datasets, then every Dataset derived from them (transitively), parents before children."""
    order: list[str] = list(spec.datasets)
    changed = True
    while changed:
        changed = False
        for view in sorted(datasets.values(), key=lambda v: v.name):
            if view.name not in order and any(p in order for p in view.parents):
                order.append(view.name)
                changed = True
    return [EraseTarget(name=n, parents=[p for p in datasets[n].parents if p in order],
                        recut=n in spec.datasets, current=(datasets[n].digest or "").removeprefix("sha256:") or None)
            for n in order]


def plan(spec: ErasureRequestSpec, status: ErasureRequestStatus, datasets: dict[str, DatasetView], keys: Keys | None,
         task: str, generation: int, now: datetime) -> Decision:
    """Pending: check the request; start the erase task when every check passes."""
    d = _Draft(status, generation, now)
    column = spec.subject_column
    for name in spec.datasets:
        view = datasets.get(name)
        if view is None:
            d.fail("DatasetNotFound", f"spec.datasets: Dataset {name} does not exist in this namespace")
            return d.decision()
        if not view.roles:
            d.wait("WaitingForDataset", f"Dataset {name} has no Ready version yet")
            return d.decision()
        if column not in view.roles:
            d.fail("UnknownColumn", f"spec.subjectColumn: Dataset {name} has no column {column} "
                                    f"(it has {', '.join(sorted(view.roles)[:20])})")
            return d.decision()
        if view.roles[column] != "id":
            d.fail("NotAnIdColumn", f"spec.subjectColumn: column {column} of Dataset {name} has role "
                                    f"{view.roles[column]}, not id; declare it with role: id in the Dataset's schema")
            return d.decision()
    chosen = targets(spec, datasets)
    busy = [t.name for t in chosen if datasets[t.name].task]
    if busy:
        d.wait("WaitingForIngestion", f"Dataset {busy[0]} is ingesting; erasure starts when it is done")
        return d.decision()
    if keys is None or keys.error:
        reason, message = keys.error if keys and keys.error else ("KeysUnavailable", "the subject keys were not read")
        d.fail(reason, message)
        return d.decision()
    d.update.update(phase="Erasing", task=task, subjects=len(keys.hashes), datasets=[t.name for t in chosen])
    d.condition("Complete", "Unknown", "Erasing", f"erasing {len(keys.hashes)} subjects from {len(chosen)} Datasets")
    d.condition("Ready", "Unknown", "Erasing", f"task {task} started")
    d.event("Normal", "ErasureStarted", f"erasing {len(keys.hashes)} subjects from "
                                        f"{', '.join(t.name for t in chosen)} (task {task})")
    d.actions.append(StartErase(chosen))
    return d.decision()


def fold(status: ErasureRequestStatus, state: TaskState, result: EraseResult | None, generation: int,
         now: datetime) -> Decision:
    """Erasing: the task's result becomes the lists in status, and the Applying step (or a failure)."""
    d = _Draft(status, generation, now)
    if result is None:
        d.fail(camel_reason(state.reason or "TaskFailed"),
               f"erase task failed without a result: {state.reason} {state.message}".strip()[:1000])
        return d.decision()
    if result.status != "Succeeded":
        d.fail(result.reason or "ErasureFailed", result.message[:1000])
        return d.decision()
    d.update.update(
        phase="Applying", rowsErased=result.rows_erased,
        versionsTombstoned=[f"{v.dataset}@{v.version}" for v in result.tombstoned][:256],
        datasetsRecut=[f"{n}@{v['version']}" for n, v in sorted(result.recut.items())],
        tasksErased=result.tasks[:256],
    )
    d.condition("Complete", "Unknown", "Applying", result.message)
    d.event("Normal", "SubjectsErased", result.message)
    return d.decision()


def complete(status: ErasureRequestStatus, runs: list[str], packages: list[str], requirements: list[str], audit: str,
             generation: int, now: datetime) -> Decision:
    d = _Draft(status, generation, now)
    message = (f"{status.rows_erased or 0} rows erased, {len(status.versions_tombstoned or [])} versions tombstoned, "
               f"{len(runs)} runs and {len(packages)} packages flagged"
               + (f", retrain asked of {', '.join(requirements)}" if requirements else ""))
    d.update.update(phase="Complete", task=None, runsFlagged=runs[:256], packagesFlagged=packages[:256], audit=audit,
                    requirementsAsked=requirements[:64], completedAt=iso(now))
    d.condition("Complete", "True", "Erased", message)
    d.condition("Ready", "True", "Erased", message)
    d.event("Normal", "ErasureComplete", message)
    return d.decision()


# --- what the request's result means for the objects it touched -------------------------------------------------


def dataset_outcome(request: str, status: DatasetStatus, result: EraseResult, name: str, source: str, named: bool,
                    generation: int, now: datetime) -> Outcome:
    """A Dataset's status after the erasure: its tombstoned versions say by whom, its current version is the recut
    one, and a source mloop does not own says it still holds erased subjects. Empty when already so."""
    gone = {v.version for v in result.tombstoned if v.dataset == name}
    recut = result.recut.get(name)
    versions = [v.model_copy(update={"erased_by": request}) if v.version in gone and not v.erased_by else v
                for v in (status.versions or [])]
    patch: dict[str, Any] = {}
    events: list[Event] = []
    if recut and not any(v.version == recut["version"] for v in versions):
        versions.append(DatasetVersion(version=recut["version"], digest=recut["digest"], rows=recut["rows"],
                                       created_at=recut["createdAt"], uri=recut["uri"]))
        versions = versions[-MAX_VERSIONS:]
    if versions != list(status.versions or []):
        patch["versions"] = [v.to_wire() for v in versions]
    if recut and status.version in gone:
        patch.update(version=recut["version"], digest=recut["digest"], rows=recut["rows"])
        events.append(Event("Normal", "VersionCut", f"version {recut['version']} with {recut['rows']} rows, cut "
                                                    f"without the subjects of ErasureRequest {request}"))
    conditions: list[Condition] = list(status.conditions)
    if named and source in ("inline", "builtin", "s3"):
        after = set_condition(conditions, SOURCE_CONDITION, "True", "ErasedSubjectsFiltered",
                              f"the source still holds subjects erased by ErasureRequest {request}; a standing filter "
                              f"removes them on every ingestion", status.observed_generation, now)
        if after != conditions and not any(c.type == SOURCE_CONDITION for c in conditions):
            patch["conditions"] = dump_conditions(after)
    if gone and "versions" in patch:
        events.append(Event("Warning", "VersionsErased", f"data of version{'s' if len(gone) > 1 else ''} "
                                                         f"{', '.join(sorted(gone))} deleted by ErasureRequest {request}"))
    return Outcome(patch, events)


def flag_outcome(request: str, conditions: list[Condition], what: str, generation: int | None,
                 now: datetime) -> Outcome:
    """A run or package trained on erased data: a condition naming the request (once), and a warning."""
    if any(c.type == ERASED_CONDITION and request in c.message for c in conditions):
        return Outcome()
    message = f"{what}; erased by ErasureRequest {request}"
    after = set_condition(conditions, ERASED_CONDITION, "True", "ErasedData", message, generation, now)
    return Outcome({"conditions": dump_conditions(after)}, [Event("Warning", ERASED_CONDITION, message)])


def requirement_outcome(request: str, conditions: list[Condition], packages: list[str], has_policy: bool,
                        generation: int | None, now: datetime) -> Outcome:
    """A Requirement whose Production package was trained on erased data: ask for a retrain on the cleaned data."""
    if any(c.type == RETRAIN_CONDITION and request in c.message for c in conditions):
        return Outcome()
    ask = ("its retrain policy retrains on the cleaned version when it next fires; start a TrainingRun now to "
           "replace it sooner" if has_policy else "it has no retrain policy: train on the cleaned version and package")
    message = f"Production ModelPackage {', '.join(packages)} was trained on data erased by ErasureRequest {request}; {ask}"
    after = set_condition(conditions, RETRAIN_CONDITION, "True", "RetrainNeeded", message, generation, now)
    return Outcome({"conditions": dump_conditions(after)}, [Event("Warning", "RetrainNeeded", message)])
