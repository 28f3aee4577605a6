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
    model: str | None = None  # a collection source's served model


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
    models: list[str] = field(default_factory=list)


@dataclass
class Keys:
    """The request's keys as salted hashes, or why they could not be read."""

    hashes: list[str] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (reason, message)


class _Draft(Draft):
    main = "Complete"


def descendants(roots: list[str], datasets: dict[str, DatasetView]) -> list[str]:
    """The roots and every Dataset derived from them (transitively), each after its parents among them."""
    found: list[str] = list(dict.fromkeys(roots))
    changed = True
    while changed:
        changed = False
        for view in sorted(datasets.values(), key=lambda v: v.name):
            if view.name not in found and any(p in found for p in view.parents):
                found.append(view.name)
                changed = True
    order: list[str] = []
    while len(order) < len(found):
        ready = [n for n in found if n not in order and all(
            p in order or p not in found or p == n for p in (datasets[n].parents if n in datasets else ()))]
        order += ready or [n for n in found if n not in order]  # a cycle (refused at admission): as found
    return order


def targets(spec: ErasureRequestSpec, datasets: dict[str, DatasetView],
            models_by_dataset: dict[str, set[str]] | None = None) -> tuple[list[EraseTarget], list[str]]:
    """The named Datasets, every Dataset derived from them (transitively, parents before children), and the
    served models trained on any of them with the Datasets collecting those models' predictions (and what derives
    from those): served rows may carry the subject column. A named or collection Dataset is recut; a derived one
    re-ingests from its recut parents."""
    order, models = descendants(list(spec.datasets), datasets), set()
    while True:
        models |= {m for n in order for m in (models_by_dataset or {}).get(n, ())}
        collecting = [v.name for v in sorted(datasets.values(), key=lambda v: v.name)
                      if v.model in models and v.name not in order]
        if not collecting:
            break
        order = descendants(order + collecting, datasets)
    chosen = [EraseTarget(name=n, parents=[p for p in datasets[n].parents if p in order],
                          recut=n in spec.datasets or datasets[n].model is not None,
                          current=(datasets[n].digest or "").removeprefix("sha256:") or None) for n in order]
    return chosen, sorted(models)


def plan(spec: ErasureRequestSpec, status: ErasureRequestStatus, datasets: dict[str, DatasetView], keys: Keys | None,
         task: str, generation: int, now: datetime, models_by_dataset: dict[str, set[str]] | None = None) -> Decision:
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
    chosen, models = targets(spec, datasets, models_by_dataset)
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
    d.actions.append(StartErase(chosen, models))
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
        collectedCleaned=[f"{m}: {n} batches rewritten without the subjects' rows"
                          for m, n in sorted(result.collected.items())][:256] or None,
    )
    d.condition("Complete", "Unknown", "Applying", result.message)
    d.event("Normal", "SubjectsErased", result.message)
    return d.decision()


def complete(status: ErasureRequestStatus, runs: list[str], packages: list[str], requirements: list[str], audit: str,
             generation: int, now: datetime, retrains: list[str] | None = None) -> Decision:
    d = _Draft(status, generation, now)
    message = (f"{status.rows_erased or 0} rows erased, {len(status.versions_tombstoned or [])} versions tombstoned, "
               f"{len(runs)} runs and {len(packages)} packages flagged"
               + (f", retrain asked of {', '.join(requirements)}" if requirements else "")
               + (f", {len(retrains)} retrain{'s' if len(retrains) > 1 else ''} started" if retrains else ""))
    d.update.update(phase="Complete", task=None, runsFlagged=runs[:256], packagesFlagged=packages[:256], audit=audit,
                    requirementsAsked=requirements[:64], retrainsStarted=(retrains or [])[:64] or None,
                    completedAt=iso(now))
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


def retrain_name(requirement: str, request_uid: str) -> str:
    """The one retraining an erasure request starts for a Requirement: named after both, so a repeat finds it."""
    return f"{requirement[:45].rstrip('-.')}-erasure-{request_uid[:8]}"


def requirement_outcome(request: str, conditions: list[Condition], packages: list[str], has_policy: bool,
                        generation: int | None, now: datetime, started: str | None = None) -> Outcome:
    """A Requirement whose Production (or serving) package was trained on erased data: the retrain its policy
    started on the cleaned data, or, without a policy, a request to retrain."""
    if any(c.type == RETRAIN_CONDITION and request in c.message for c in conditions):
        return Outcome()
    erased = f"ModelPackage {', '.join(packages)} was trained on data erased by ErasureRequest {request}"
    if started:
        message, reason = f"{erased}; its retrain policy started {started}", "RetrainStarted"
    else:
        ask = ("its retrain policy could not start a retrain; train on the cleaned version and package" if has_policy
               else "it has no retrain policy: train on the cleaned version and package")
        message, reason = f"{erased}; {ask}", "RetrainNeeded"
    after = set_condition(conditions, RETRAIN_CONDITION, "True", reason, message, generation, now)
    return Outcome({"conditions": dump_conditions(after)},
                   [Event("Normal" if started else "Warning", reason, message)])


# --- retention: the same deletion path, never under a Production package ----------------------------------------

RETENTION_CONDITION = "RetentionHeld"


def retention_split(expired: list[DatasetVersion], holds: dict[str, str]) -> tuple[list[DatasetVersion],
                                                                                   list[DatasetVersion]]:
    """Expired versions to delete now, and those a Production package still depends on (kept)."""
    return [v for v in expired if v.version not in holds], [v for v in expired if v.version in holds]


def retention_outcome(status: DatasetStatus, deleted: list[DatasetVersion], held: list[DatasetVersion],
                      holds: dict[str, str], days: int, generation: int | None, now: datetime) -> Outcome:
    """Deleted versions are marked expired (their tombstones are written); a held one is named in the condition
    RetentionHeld with the package it is kept for, until that package leaves Production."""
    patch: dict[str, Any] = {}
    events: list[Event] = []
    if deleted:
        gone = [v.version for v in deleted]
        patch["versions"] = [v.model_copy(update={"expired": True}).to_wire() if v.version in gone else v.to_wire()
                             for v in (status.versions or [])]
        patch["expired"] = list(dict.fromkeys([*(status.expired or []), *gone]))[-100:]
        events.append(Event("Normal", "VersionExpired",
                            f"deleted expired version{'s' if len(gone) > 1 else ''} {', '.join(gone)} from storage "
                            f"(retention of {days} days); a tombstone stays"))
    before = list(status.conditions)
    old = next((c for c in before if c.type == RETENTION_CONDITION), None)
    if held:
        message = "; ".join(f"version {v.version} is past the retention of {days} days but kept: {holds[v.version]}"
                            for v in held)
        after = set_condition(before, RETENTION_CONDITION, "True", "ProductionDependsOn", message, generation, now)
        if old is None or old.status != "True" or old.message != message:
            events.append(Event("Warning", RETENTION_CONDITION, message))
    elif old is not None and old.status == "True":
        after = set_condition(before, RETENTION_CONDITION, "False", "NothingHeld",
                              "no expired version is kept for a Production package", generation, now)
    else:
        after = before
    if after != before:
        patch["conditions"] = dump_conditions(after)
    return Outcome(patch, events)
