"""Dataset handlers: parse, ask reconcile/dataset what to do, do it, patch status."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from mloop.api.common import set_condition, utcnow
from mloop.api.dataset import DatasetSpec, DatasetStatus
from mloop.api.kinds import API_VERSION, GROUP, VERSION
from mloop.config import get_settings
from mloop.api.tasks import IngestResult, IngestTaskSpec, ParentPin, Task, task_name
from mloop.data.erasure import load_filters, without_erased_rows
from mloop.executors.factory import executor_for
from mloop.handlers.common import commit, pinned
from mloop.handlers.erasure import expire
from mloop.handlers.jobs import TASK_JOBS, job_ended, job_in_flight, task_state
from mloop.handlers.metrics import measured
from mloop.reconcile import dataset as decide
from mloop.reconcile.outcome import Event, Outcome, describe_validation_error, dump_conditions
from mloop.storage.artifacts import StorageUnavailable, operator_store
from mloop.storage.layout import task_prefix


def ingest_task(namespace: str, name: str, uid: str, task: str, spec: DatasetSpec) -> Task:
    prefix = task_prefix(namespace, task)
    return Task(
        name=task, namespace=namespace, kind="ingest",
        command=["python", "-m", "mloop.workloads.ingest", prefix], prefix=prefix,
        owner={"apiVersion": API_VERSION, "kind": "Dataset", "name": name, "uid": uid},
        deadline_seconds=1800, backoff_limit=0,
    )


def _parents(spec: DatasetSpec, namespace: str, datasets: kopf.Index) -> tuple[list[ParentPin], str | None]:
    """The parent versions a derived Dataset reads, or ([], why one is not there yet). From the index: no API read."""
    assert spec.source.derived is not None
    pins = []
    for ref in spec.source.derived.parents():
        ns = ref.namespace or namespace
        found = next(iter(datasets.get(f"{ns}/{ref.name}", [])), None)
        if found is None:
            return [], f"parent Dataset {ns}/{ref.name} does not exist yet"
        status = DatasetStatus.model_validate(found)
        if ref.version:
            match = next((v for v in status.versions or [] if v.version == ref.version and not v.expired), None)
            if match is None:
                return [], f"parent Dataset {ref.name} has no version {ref.version}"
            digest = match.digest
        elif status.digest:
            digest = status.digest
        else:
            return [], f"parent Dataset {ref.name} has no Ready version yet"
        pins.append(ParentPin(namespace=ns, name=ref.name, digest=digest.removeprefix("sha256:")))
    return pins, None


@measured("Dataset")
def reconcile_dataset(body: Mapping[str, Any], datasets: kopf.Index,
                      indexes: Mapping[str, kopf.Index] | None = None) -> dict[str, Any] | None:
    """One pass; returns what commit() returned (None: the object moved on before this pass could write).
    `indexes`: the handler's kopf indexes, which retention needs (a parent's event passes none)."""
    meta = body["metadata"]
    namespace, name, uid, generation = meta["namespace"], meta["name"], meta["uid"], meta.get("generation", 1)
    now = utcnow()
    status = DatasetStatus.model_validate(dict(body.get("status") or {}))
    try:
        spec = DatasetSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        message = describe_validation_error(err)
        conditions = set_condition(list(status.conditions), "Ready", "False", "InvalidSpec", message, generation, now)
        events = [] if status.observed_generation == generation else [Event("Warning", "InvalidSpec", message)]
        return commit(body, Outcome({"phase": "Failed", "observedGeneration": generation,
                                     "conditions": dump_conditions(conditions)}, events))
    executor = executor_for(spec.executor)
    store = operator_store()
    try:
        if status.task:
            task = ingest_task(namespace, name, uid, status.task, spec)
            state = task_state(executor, task, (indexes or {}).get("task_jobs") or {})
            if not state.finished and state.phase != "Missing":
                return dict(body)
            raw = store.get_json_or_none(task.prefix + "result.json")
            result = IngestResult.model_validate(raw) if raw is not None else None
            storage_ok = True
            if result is None:
                try:
                    store.ping()
                except StorageUnavailable:
                    storage_ok = False
            # A parent that moved while the task ran is taken up by this write's own watch event (parent_moved).
            return commit(body, decide.fold_result(spec, status, generation, state, result, now, storage_ok))

        if (status.observed_generation != generation and status.version and spec.source.s3 is None
                and status.ingest_key == decide.ingest_key(spec)):
            return commit(body, decide.governance_only(spec, status, generation, now))

        parents: list[ParentPin] = []
        if spec.source.derived is not None:
            parents, why = _parents(spec, namespace, datasets)
            if not parents:
                return commit(body, decide.waiting(status, "WaitingForParent", why or "", generation, now))

        plan = decide.plan_ingest(spec, status, generation, now, parents, status.retries or 0)
        if plan is not None:
            if (status.retries or 0) >= decide.MAX_STORAGE_RETRIES:
                return commit(body, decide.waiting(status, "StorageUnavailable", "gave up after repeated storage outages; "
                                             "edit the Dataset to try again", generation, now))
            task = ingest_task(namespace, name, uid, task_name("ingest", name, uid, plan.trigger), spec)
            wire = without_erased_rows(spec.to_wire(), load_filters(store, namespace, name))  # no erased row copied
            task_spec = IngestTaskSpec(namespace=namespace, name=name, spec=wire,
                                       parent=parents[0] if len(parents) == 1 else None, parents=parents or None,
                                       previous=status.digest.removeprefix("sha256:") if status.digest else None,
                                       previous_rows=status.rows or 0)
            store.put_json(task.prefix + "spec.json", task_spec.to_wire(), overwrite=True)
            executor.submit(task)
            return commit(body, decide.started(status, task.name, plan.reason, generation, now, parents))

        retention = spec.governance.retention_days if spec.governance else None
        gone = decide.expired_versions(status, retention, now)
        if gone and retention:  # erasure's deletion path: tombstones, audit, never under a Production package
            return commit(body, expire(body, status, gone, retention, indexes))
        return commit(body, Outcome())
    except StorageUnavailable as err:
        return commit(body, decide.waiting(status, "StorageUnavailable", f"{err}; retrying", generation, now))


def _in_flight(spec: kopf.Spec, status: kopf.Status, namespace: str, datasets_by_name: kopf.Index,
               task_jobs: kopf.Index, **_: Any) -> bool:
    """What needs a timer: a task running, a wait on something outside (storage, a parent), a schedule (refresh,
    collection, retention), or parents holding versions a derived Dataset has not tried yet. A Dataset at rest has
    no timer, and so no finalizer. A task Job the watch shows in flight needs none: its events wake the Dataset.

    The last keeps the timer through a fold when a parent moved during the task: kopf does not start a timer again
    while the one it was asked to stop is still finishing its pass, so a task started by the fold's own event
    would be left with no timer to fold it (seen once in nine runs of two parents moving back to back)."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    source = spec.get("source") or {}
    task = status.get("task")
    waiting = ready.get("status", "Unknown") == "Unknown" and not (task and ready.get("reason") == "Ingesting")
    return bool((task and not job_in_flight(task_jobs, namespace, task)) or status.get("outbox") or waiting
                or ("s3" in source and spec.get("refresh")) or "collection" in source
                or (spec.get("governance") or {}).get("retentionDays")
                or ("derived" in source and _untried(spec, status, namespace, datasets_by_name)))


def _untried(spec: kopf.Spec, status: kopf.Status, namespace: str, datasets: kopf.Index) -> bool:
    try:
        parsed = DatasetSpec.model_validate(dict(spec))
        parents, _ = _parents(parsed, namespace, datasets)
        return decide.untried_parents(DatasetStatus.model_validate(dict(status)), parents)
    except ValidationError:
        return False  # its own pass reports the spec


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_name(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict:
    return {f"{namespace}/{name}": dict(status)}


@kopf.index(GROUP, VERSION, "datasets")
def derived_by_parent(namespace: str, body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict:
    """Derived Datasets by each parent they follow (not pinned), with their whole body: any parent's new version
    wakes them."""
    derived = (spec.get("source") or {}).get("derived") or {}
    refs = ([derived["datasetRef"]] if derived.get("datasetRef") else
            list((derived.get("union") or {}).get("datasets") or [])
            + [r for r in ((derived.get("join") or {}).get(side) for side in ("left", "right")) if r])
    keys = {(ref.get("namespace") or namespace, ref["name"]) for ref in refs if not ref.get("version")}
    return {key: copy.deepcopy(dict(body)) for key in keys}  # {}, not None: kopf keeps old entries on None


@kopf.index(GROUP, VERSION, "datasets")
async def datasets_by_task(namespace: str, body: kopf.Body, status: kopf.Status, **_: Any) -> dict:
    """Datasets with an ingest task, by its name, with their whole body: what that task's Job events wake."""
    # {}, not None: kopf keeps old entries on None
    return {(namespace, status["task"]): copy.deepcopy(dict(body))} if status.get("task") else {}


def _dataset_job_news(type: str, namespace: str, name: str, datasets_by_task: kopf.Index, task_jobs: kopf.Index,
                      **_: Any) -> bool:
    return bool(datasets_by_task.get((namespace, name))) and job_ended(type, task_jobs, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={**TASK_JOBS, "mloop.dev/dataset": kopf.PRESENT}, when=_dataset_job_news)
def dataset_job_changed(namespace: str, name: str, datasets_by_task: kopf.Index, datasets_by_name: kopf.Index,
                        **kwargs: Any) -> None:
    """An ingest Job finished or went away: the Dataset's pass folds it (no timer reads the Job)."""
    for body in datasets_by_task.get((namespace, name), []):
        reconcile_dataset(copy.deepcopy(body), datasets_by_name, {**kwargs, "datasets_by_task": datasets_by_task})


@kopf.on.create(GROUP, VERSION, "datasets")
@kopf.on.update(GROUP, VERSION, "datasets", field="spec")
@kopf.on.resume(GROUP, VERSION, "datasets")
@pinned
def dataset_changed(body: kopf.Body, datasets_by_name: kopf.Index, **kwargs: Any) -> None:
    reconcile_dataset(body, datasets_by_name, kwargs)


@kopf.timer(GROUP, VERSION, "datasets", interval=get_settings().poll_interval, sharp=False, when=_in_flight)
@pinned
def dataset_tick(body: kopf.Body, datasets_by_name: kopf.Index, **kwargs: Any) -> None:
    reconcile_dataset(body, datasets_by_name, kwargs)


@kopf.on.event(GROUP, VERSION, "datasets")
@pinned
def parent_moved(type: str, body: kopf.Body, namespace: str, name: str, status: kopf.Status,
                 derived_by_parent: kopf.Index, datasets_by_name: kopf.Index, **_: Any) -> None:
    """Derived Datasets take up their parents' new versions from watch events, never a poll: on a parent's event
    each child looks, and on its own event (its fold, any write) a child looks again.

    kopf updates an object's index entries before running its handlers, so between the two nothing is missed. A
    child pass that loses its write to a newer one (a fold, the outbox drain) leaves the step to that write's own
    event: it is handled later, with the parent's new version already in the index."""
    if type == "DELETED":
        return
    follow_parents(body, datasets_by_name, own_event=True)
    if status.get("digest"):
        for child in derived_by_parent.get((namespace, name), []):
            follow_parents(child, datasets_by_name, own_event=False)


def follow_parents(body: Mapping[str, Any], datasets: kopf.Index, own_event: bool) -> None:
    """Reconcile a derived Dataset with no task in flight whose parents (in the index) hold versions it has not
    tried. A spec it has not answered yet is dataset_changed's on its own event; a parent's event starts it too
    (its parent may have just appeared)."""
    meta, raw = body["metadata"], dict(body.get("status") or {})
    if not ((body.get("spec") or {}).get("source") or {}).get("derived") or raw.get("task"):
        return
    status = DatasetStatus.model_validate(raw)
    answered = status.observed_generation == meta.get("generation", 1)
    if own_event and not answered:
        return
    try:
        spec = DatasetSpec.model_validate(dict(body["spec"]))
    except ValidationError:
        return  # its own pass reports the spec
    parents, _ = _parents(spec, meta["namespace"], datasets)
    if parents and (not answered or decide.untried_parents(status, parents)):
        reconcile_dataset(body, datasets)
