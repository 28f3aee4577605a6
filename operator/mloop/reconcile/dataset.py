"""Dataset decisions: when to ingest, how a task's result changes status, which versions expire."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mloop.api.common import Condition, iso, set_condition
from mloop.api.dataset import ColumnStatus, DatasetSpec, DatasetStatus, DatasetVersion
from mloop.api.tasks import IngestResult, ParentPin, TaskState
from mloop.reconcile.durations import parse_duration
from mloop.reconcile.governance import check_tags
from mloop.reconcile.outcome import Event, Outcome, camel_reason, dump_conditions, flipped

MAX_VERSIONS = 20
MAX_STORAGE_RETRIES = 20


def ingest_key(spec: DatasetSpec) -> str:
    """What decides the content: source, schema and rules. Governance changes need no new ingestion."""
    material = spec.model_dump(mode="json", by_alias=True, include={"source", "schema_", "validation"}, exclude_none=True)
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class IngestPlan:
    trigger: str  # part of the deterministic task name
    reason: str


def parents_label(pins: list[ParentPin]) -> str:
    """What a derived version was made from, as status.sourceVersion says it: name@version, comma-separated."""
    return ",".join(f"{p.name}@{p.digest[:12]}" for p in pins)


def untried_parents(status: DatasetStatus, parents: list[ParentPin]) -> bool:
    """Whether a derived Dataset's parents hold versions it has not tried: neither its version was made from them
    nor did its last ingestion (which may have failed) read them."""
    label = parents_label(parents)
    return bool(parents) and label != status.source_version and label != status.tried_source


def plan_ingest(spec: DatasetSpec, status: DatasetStatus, generation: int, now: datetime,
                parents: list[ParentPin] | None = None, retries: int = 0) -> IngestPlan | None:
    """Whether to start an ingestion now, and why. None: nothing to do. A derived source re-ingests when any
    parent's version differs from the ones the current version was made from."""
    if status.task:
        return None
    if status.observed_generation != generation:
        return IngestPlan(f"g{generation}r{retries}", "SpecChanged")
    # Parents already tried are tried again only after an attempt lost to a storage outage (retries > 0).
    if spec.source.derived is not None and parents and status.source_version != parents_label(parents) and (
            retries or untried_parents(status, parents)):
        key = parents[0].digest if len(parents) == 1 else hashlib.sha256(parents_label(parents).encode()).hexdigest()
        return IngestPlan(f"p{key[:12]}r{retries}", "ParentChanged")
    if spec.source.collection is not None:
        interval = parse_duration(spec.source.collection.interval)
        last = status.last_ingested_at
        if last is None or (now - last).total_seconds() >= interval:
            return IngestPlan(f"c{int(now.timestamp() // interval)}", "CollectionDue")
        return None
    if spec.refresh and spec.source.s3 is not None:
        interval = parse_duration(spec.refresh.interval)
        last = status.last_ingested_at
        if last is None or (now - last).total_seconds() >= interval:
            return IngestPlan(f"t{int(now.timestamp() // interval)}", "RefreshDue")
    return None


def _conditions(status: DatasetStatus) -> list[Condition]:
    return list(status.conditions)


def started(status: DatasetStatus, task: str, reason: str, generation: int, now: datetime,
            parents: list[ParentPin] | None = None) -> Outcome:
    before = _conditions(status)
    after = set_condition(before, "Ready", "Unknown", "Ingesting", f"ingestion {task} started ({reason})", generation, now)
    patch: dict[str, Any] = {"task": task, "conditions": dump_conditions(after)}
    if parents:
        patch["triedSource"] = parents_label(parents)
    if status.phase != "Ready":
        patch["phase"] = "Ingesting"
    return Outcome(patch)


def waiting(status: DatasetStatus, reason: str, message: str, generation: int, now: datetime) -> Outcome:
    """Something outside the Dataset is not there yet (a parent, the storage): Ready=Unknown, say what."""
    before = _conditions(status)
    after = set_condition(before, "Ready", "Unknown", reason, message, generation, now)
    events = [Event("Warning", reason, message)] if before != after and _reason(before) != reason else []
    patch: dict[str, Any] = {"conditions": dump_conditions(after)}
    if status.phase is None:
        patch["phase"] = "Pending"
    return Outcome(patch, events)


def _reason(conditions: list[Condition], type_: str = "Ready") -> str | None:
    return next((c.reason for c in conditions if c.type == type_), None)


def fold_result(spec: DatasetSpec, status: DatasetStatus, generation: int, state: TaskState,
                result: IngestResult | None, now: datetime, storage_ok: bool) -> Outcome:
    """A finished task's result, folded into status: a new version, or a failure that names its cause."""
    before = _conditions(status)
    patch: dict[str, Any] = {"task": None}
    events: list[Event] = []
    conditions = before

    if result is None:
        # No result: the task could not reach storage, or died before writing anything.
        if not storage_ok or state.exit_code == 75:
            conditions = set_condition(conditions, "Ready", "Unknown", "StorageUnavailable",
                                       "S3 was unavailable during ingestion; retrying", generation, now)
            if _reason(before) != "StorageUnavailable":
                events.append(Event("Warning", "StorageUnavailable", "S3 was unavailable during ingestion; retrying"))
            patch["conditions"] = dump_conditions(conditions)
            patch["retries"] = (status.retries or 0) + 1
            return Outcome(patch, events)
        message = f"ingestion task failed: {state.reason} {state.message}".strip()[:1000]
        conditions = set_condition(conditions, "Ready", "False", camel_reason(state.reason or "TaskFailed"), message,
                                   generation, now)
        patch.update(phase="Failed", observedGeneration=generation, conditions=dump_conditions(conditions), retries=0)
        events.append(Event("Warning", "IngestionFailed", message))
        return Outcome(patch, events)

    if result.status == "Skipped":
        # A collection source without enough new labelled rows: nothing to cut yet, nothing wrong.
        has_version = bool(status.version)
        conditions = set_condition(conditions, "Ready", "True" if has_version else "Unknown", result.reason,
                                   result.message, generation, now)
        patch.update(observedGeneration=generation, conditions=dump_conditions(conditions), retries=0,
                     phase=status.phase if has_version else "Pending", lastIngestedAt=iso(now))
        return Outcome(patch, events)
    if result.validation is not None:
        patch["validation"] = result.validation[:128]
    if result.status != "Succeeded" or not (result.version and result.digest and result.uri and result.created_at):
        reason, message = result.reason or "IngestionFailed", result.message[:1000]
        if reason in ("ValidationFailed", "EmptyTable"):
            conditions = set_condition(conditions, "Validated", "False", reason, message, generation, now)
        conditions = set_condition(conditions, "Ready", "False", reason, message, generation, now)
        patch.update(phase="Failed", observedGeneration=generation, conditions=dump_conditions(conditions), retries=0,
                     lastIngestedAt=iso(now))
        if flipped(before, conditions, "Ready") or _reason(before) != reason:
            events.append(Event("Warning", reason, message))
        return Outcome(patch, events)

    version = DatasetVersion(version=result.version, digest=result.digest, rows=result.rows or 0,
                             created_at=result.created_at, uri=result.uri)
    versions = [v for v in (status.versions or []) if v.version != version.version]
    is_new = not any(v.version == version.version for v in (status.versions or []))
    versions = (versions + [version])[-MAX_VERSIONS:] if is_new else (status.versions or [])
    columns = [ColumnStatus.model_validate(c) for c in result.columns]
    ok, g_reason, g_message = check_tags(spec.governance, columns)
    conditions = set_condition(conditions, "Validated", "True", "RulesPassed",
                               f"{len(result.validation or [])} checks passed", generation, now)
    conditions = set_condition(conditions, "GovernanceOK", "True" if ok else "False", g_reason, g_message, generation, now)
    message = f"version {version.version} with {version.rows} rows" + ("" if result.created else " (content unchanged)")
    conditions = set_condition(conditions, "Ready", "True", "VersionCut" if is_new else "Unchanged", message,
                               generation, now)
    patch.update(
        phase="Ready", observedGeneration=generation, version=version.version, digest=version.digest,
        rows=version.rows, sourceVersion=result.source_version, columns=result.columns[:512],
        parents=[{"name": p.name, "namespace": p.namespace, "version": p.digest[:12], "digest": f"sha256:{p.digest}"}
                 for p in result.parents] if result.parents else None,
        profile=result.profile[:64], versions=[v.to_wire() for v in versions],
        conditions=dump_conditions(conditions), retries=0, ingestKey=ingest_key(spec),
        lastIngestedAt=iso(now),
    )
    if is_new:
        patch["drift"] = (result.drift or [])[:64]
        events.append(Event("Normal", "VersionCut", f"{message}; digest {version.digest[:19]}…"))
    if flipped(before, conditions, "GovernanceOK") and not ok:
        events.append(Event("Warning", g_reason, g_message))
    return Outcome(patch, events)


def governance_only(spec: DatasetSpec, status: DatasetStatus, generation: int, now: datetime) -> Outcome:
    """The spec changed but not its content: recheck the tags, keep the version."""
    columns = list(status.columns or [])
    ok, reason, message = check_tags(spec.governance, columns)
    before = _conditions(status)
    after = set_condition(before, "GovernanceOK", "True" if ok else "False", reason, message, generation, now)
    events = [Event("Warning", reason, message)] if flipped(before, after, "GovernanceOK") and not ok else []
    return Outcome({"observedGeneration": generation, "conditions": dump_conditions(after)}, events)


def expired_versions(status: DatasetStatus, retention_days: int | None, now: datetime) -> list[DatasetVersion]:
    """Versions older than the retention, never the current one (runs may still pin it). Those a Production package
    depends on are kept by handlers/erasure.expire (the same deletion path as erasure)."""
    if not retention_days:
        return []
    cutoff = now - timedelta(days=retention_days)
    return [v for v in (status.versions or [])
            if not v.expired and v.version != status.version and v.created_at < cutoff]
