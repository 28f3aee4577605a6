"""TrainingRun handlers: gather (kopf indexes, the executor, S3), let reconcile/trainingrun decide, act, commit.

A run waiting for its Dataset or a Requirement keeps its timer (it is not finished), which notices the Dataset
in the index on the next tick; no watch handler on Datasets is needed for that. Finished runs have no timer,
except while their MLflow export is pending: the export is a side effect, done only after the status that
finished the run was written.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from mloop.api.common import GovernanceTags, get_condition, utcnow
from mloop.api.dataset import ColumnProfile, ColumnStatus, DatasetStatus, DatasetVersion
from mloop.api.kinds import GROUP, VERSION
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import TASK_SPEC_ENV_LIMIT, TrainResult
from mloop.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from mloop.config import get_settings
from mloop.executors.factory import executor_for
from mloop.executors.local import LocalExecutor
from mloop.handlers.common import commit, known_stale, pinned
from mloop.handlers.jobs import TASK_JOBS, job_ended, job_in_flight, seen_job, task_state
from mloop.handlers.metrics import measured
from mloop.handlers.views import TRAININGRUNS
from mloop.integrations import mlflow_export
from mloop.reconcile import trainingrun as decide
from mloop.reconcile.outcome import describe_validation_error
from mloop.reconcile.trainingrun import (CacheEntry, ExportAttempt, RecordCache, RunRef, SetLabel, SubmitTask,
                                        VersionFacts, World, WriteSpec)
from mloop.storage.artifacts import AlreadyExists, StorageUnavailable, Store, operator_store
from mloop.storage.layout import cache_entry, dataset_prefix, key_of, run_prefix
from mloop.api.param_values import parameter_error, search_error
from mloop.versions import package_versions

FINISHED = decide.FINISHED
log = logging.getLogger("mloop.trainingrun")


@kopf.index(GROUP, VERSION, "datasets")
def datasets_for_runs(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """What a run reads of its Dataset: the status it pins a version from, and the governance tags."""
    wanted = ("phase", "version", "digest", "rows", "versions", "columns", "profile")
    return {(namespace, name): {"status": copy.deepcopy({k: status[k] for k in wanted if status.get(k) is not None}),
                                "governance": copy.deepcopy(dict(spec.get("governance") or {})) or None}}


@kopf.index(GROUP, VERSION, "requirements")
def requirements_for_runs(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    return {(namespace, name): copy.deepcopy(dict(spec))}


def _first(index: kopf.Index, key: tuple[str, str]) -> Any:
    return next(iter(index.get(key, [])), None)


def _reachable(store: Store) -> bool:
    try:
        store.ping()
        return True
    except StorageUnavailable:
        return False


def _version_facts(store: Store, namespace: str, name: str, digest: str) -> VersionFacts:
    """Columns (manifest.json) and profile (profile.json) of a version that is no longer the current one."""
    prefix = dataset_prefix(namespace, name, digest)
    manifest = store.get_json_or_none(prefix + "manifest.json") or {}
    profile = store.get_json_or_none(prefix + "profile.json") or {}
    keys = ("name", "nulls", "distinct", "min", "max", "mean")
    return VersionFacts(
        columns=tuple(ColumnStatus.model_validate(c) for c in manifest.get("columns") or []),
        profile=tuple(ColumnProfile.model_validate({k: c[k] for k in keys if c.get(k) is not None})
                      for c in (profile.get("columns") or [])[:64]))


_ENVIRONMENT: list[dict[str, Any]] = []
_ENVIRONMENT_LOCK = threading.Lock()


def trainer_environment() -> dict[str, Any]:
    """training.numeric.trainer_environment(), asked of a child process once: it loads scikit-learn and scipy,
    which would stay in the operator's memory for good. A fact of this image and host, so keeping it is safe."""
    with _ENVIRONMENT_LOCK:
        if not _ENVIRONMENT:
            code = "import json; from mloop.training.numeric import trainer_environment as t; print(json.dumps(t()))"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
            _ENVIRONMENT.append(json.loads(out.stdout))
        return copy.deepcopy(_ENVIRONMENT[0])


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    """Installed versions are a fact of the image; reading package metadata costs ~30 ms, once per pass before."""
    return tuple(package_versions().items())


def _packages() -> dict[str, str]:
    return {**dict(_installed()), "image": get_settings().image}


def trial_count(search: Any) -> int:
    """len(training.search.candidates(search, seed)) without scikit-learn: a grid cut at `trials`, or a random
    search sampling `trials` (10) of the grid without replacement (every value is a list)."""
    grid = math.prod(len(values) for values in search.parameters.values())
    if search.type == "grid":
        return min(grid, search.trials) if search.trials else grid
    return min(grid, search.trials or 10)


def _estimator_error(spec: TrainingRunSpec) -> str | None:
    """Checked against plain data, so the operator never loads scikit-learn (the trainer checks again)."""
    return parameter_error(spec.estimator.name, spec.estimator.params) or (
        search_error(spec.estimator.name, spec.search.parameters, spec.estimator.params) if spec.search else None)


def gather(spec: TrainingRunSpec, status: TrainingRunStatus, run: RunRef, datasets: kopf.Index,
           requirements: kopf.Index, store: Store, executor: Any, jobs: kopf.Index) -> World:
    """Everything the decision needs, from indexes first; S3 and the executor only for what this step needs."""
    ref = spec.dataset_ref
    ds_namespace = ref.namespace or run.namespace
    found = _first(datasets, (ds_namespace, ref.name))
    dataset = DatasetStatus.model_validate(found["status"]) if found else None
    reqs = []
    for r in spec.requirement_refs or []:
        raw = _first(requirements, (r.namespace or run.namespace, r.name))
        reqs.append((r.name, RequirementSpec.model_validate(raw) if raw is not None else None))
    settings = get_settings()
    base = dict(run=run, dataset=dataset, requirements=tuple(reqs), executor=executor.name,
                governance=GovernanceTags.model_validate(found["governance"]) if found and found["governance"] else None,
                trial_count=trial_count(spec.search) if spec.search else 0,
                export_wanted=mlflow_export.target_for(spec.mlflow, spec.experiment, run.namespace, settings) is not None)
    def test_datasets() -> dict[str, DatasetStatus | None]:
        """A minimum-functionality test's Dataset is pinned when the spec is built."""
        refs = decide.test_dataset_refs([r for _, r in reqs if r is not None], run.namespace)
        return {f"{ns}/{name}": DatasetStatus.model_validate(hit["status"]) if hit else None
                for ns, name in refs for hit in [_first(datasets, (ns, name))]}

    if not status.task:
        base["test_datasets"] = test_datasets()

    if status.task:
        kind = decide.task_kind(status.task)
        state = task_state(executor, decide.build_task(spec, run, kind, status.task, base["trial_count"]), jobs)
        if not state.finished and state.phase != "Missing":
            return World(**base, task=state)
        result, pinned, key, storage_ok = None, None, None, True
        try:
            if kind == "train":
                raw = store.get_json_or_none(run.prefix + "result.json")
                result = TrainResult.model_validate(raw) if raw is not None else None
            if result is not None and result.status == "Succeeded":
                digest = status.dataset_digest or ""
                if dataset is not None and digest and digest != dataset.digest:
                    pinned = _version_facts(store, ds_namespace, ref.name, digest)
                # Recorded under the numeric environment the fit got; later runs look up the one they expect.
                key = decide.cache_key(spec, digest, _packages(), result.numeric_environment or trainer_environment())
            elif result is None:
                storage_ok = _reachable(store)
            if result is None and storage_ok and state.storage_lost and not store.exists(run.prefix + "spec.json"):
                # the retry carries a spec.json built again (decide._spec_again), on the version the status pinned
                digest = status.dataset_digest or ""
                if dataset is not None and digest and digest != dataset.digest:
                    pinned = _version_facts(store, ds_namespace, ref.name, digest)
                return World(**base, task=state, pinned=pinned, spec_written=False, test_datasets=test_datasets())
        except StorageUnavailable:
            result, storage_ok = None, False
        return World(**base, task=state, result=result, pinned=pinned, cache_key=key, storage_ok=storage_ok)

    storage_ok, pinned, hit = True, None, None
    version = decide.pin_version(spec, dataset)
    if isinstance(version, DatasetVersion) and dataset is not None:  # about to start: S3 is needed from here on
        try:  # no ping: these reads, or else the spec's write (see reconcile_run), tell whether S3 answers
            if version.digest != dataset.digest:
                pinned = _version_facts(store, ds_namespace, ref.name, version.digest)
            if spec.cache_policy == "reuse":
                hit = _cache_hit(store, run, decide.cache_key(spec, version.digest, _packages(), trainer_environment()))
        except StorageUnavailable:
            storage_ok = False
    return World(**base, pinned=pinned, cache_hit=hit, storage_ok=storage_ok, estimator_error=_estimator_error(spec))


def _cache_hit(store: Store, run: RunRef, key: str) -> CacheEntry | None:
    entry = store.get_json_or_none(cache_entry(run.namespace, key))
    if not entry or entry["uid"] == run.uid:
        return None
    result = TrainResult.model_validate(entry["result"])
    if not result.model_uri or not store.exists(key_of(result.model_uri)):
        return None  # its model is gone: train again
    return CacheEntry(run=entry["run"], uid=entry["uid"], result=result)


def act_before(decision: decide.Decision, namespace: str, store: Store, executor: Any) -> None:
    """Idempotent steps, before the status that records them: the write-once spec, carried by the first task
    (its Job is as write-once as an S3 object, and the operator spends no S3 write per run), and deterministically
    named tasks."""
    carried = None
    for write in decision.of(WriteSpec):
        wire = json.dumps(write.body.to_wire(), separators=(",", ":"), sort_keys=True)
        if len(wire) <= TASK_SPEC_ENV_LIMIT:
            carried = wire
            continue
        try:
            store.put_json(write.key, write.body.to_wire())
        except AlreadyExists:
            pass  # written by an earlier pass for this same uid: the run's inputs are immutable
    for submit in decision.of(SubmitTask):
        executor.submit(replace(submit.task, spec=carried) if carried else submit.task)
    for record in decision.of(RecordCache):
        # Before the status that finishes the run: once that is written no pass comes back to record it, and the
        # entry (this run's own result, keyed by what it computed) is the same whichever pass writes it.
        try:
            store.put_json(cache_entry(namespace, record.key), record.entry)
        except AlreadyExists:
            pass  # an earlier identical run is already the source


@measured("TrainingRun")
def reconcile_run(body: kopf.Body, patch: kopf.Patch, datasets: kopf.Index, requirements: kopf.Index,
                  jobs: kopf.Index) -> None:
    meta = body["metadata"]
    if known_stale(body):
        return  # the watch brings the newer body, and a pass on it
    status = TrainingRunStatus.model_validate(dict(body.get("status") or {}))
    now = utcnow()
    if status.phase in FINISHED:
        if _export_due(status, now):
            attempt = export_attempt(body, TrainingRunSpec.model_validate(dict(body["spec"])), status, operator_store())
            commit(body, decide.fold_export(status, meta.get("generation", 1), attempt, now).outcome(), _needs_visit)
        else:
            commit(body, decide.Decision({}).outcome(), _needs_visit)  # sends what the outbox still owes
        return
    run = RunRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                 prefix=run_prefix(meta["namespace"], meta["name"], meta["uid"]), generation=meta.get("generation", 1),
                 labels=dict(meta.get("labels") or {}))
    try:
        spec = TrainingRunSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        refused = decide.decide(None, status, World(run=run, spec_error=describe_validation_error(err)), now)
        commit(body, refused.outcome(), _needs_visit)
        return
    store, executor = operator_store(), executor_for(spec.executor)
    world = gather(spec, status, run, datasets, requirements, store, executor, jobs)
    decision = decide.decide(spec, status, world, now)
    try:
        act_before(decision, run.namespace, store, executor)
    except StorageUnavailable:
        if not decision.of(WriteSpec):
            raise
        # The spec is written first, so nothing was submitted: S3 is down, which no ping asked before.
        decision = decide.decide(spec, status, replace(world, storage_ok=False), now)
    for label in decision.of(SetLabel):
        patch.metadata.setdefault("labels", {})[label.key] = label.value
    commit(body, decision.outcome(), _needs_visit)


def _export_due(status: TrainingRunStatus, now: datetime) -> bool:
    export = status.mlflow
    return (status.phase == "Succeeded" and export is not None and export.state == "Pending"
            and (export.retry_at is None or export.retry_at <= now))


def export_attempt(body: kopf.Body, spec: TrainingRunSpec, status: TrainingRunStatus, store: Store) -> ExportAttempt:
    """One attempt at the MLflow export of a succeeded run, whose status says what to export."""
    meta, settings = body["metadata"], get_settings()
    target = mlflow_export.target_for(spec.mlflow, spec.experiment, meta["namespace"], settings)
    if target is None:
        return ExportAttempt("Disabled")
    seen = ExportAttempt("", tracking_uri=mlflow_export.shown(target.tracking_uri), experiment=target.experiment)
    if not mlflow_export.allowed(target, settings):
        return replace(seen, outcome="NotAllowed")
    met = get_condition(list(status.conditions), "RequirementsMet")
    record = mlflow_export.RunRecord(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], estimator=spec.estimator.name,
        model_uri=status.model_uri or "", model_digest=status.model_digest or "", metrics=status.metrics or {},
        dataset=status.dataset or "", dataset_digest=status.dataset_digest or "",
        requirement_refs=[f"{r.namespace}/{r.name}" if r.namespace else r.name for r in spec.requirement_refs or []],
        requirements_met=None if met is None else met.status == "True", primary_metric=status.primary_metric or "",
        started_at=status.started_at, finished_at=status.finished_at)
    known = status.mlflow.run_id if status.mlflow else None
    attempts = (status.mlflow.attempts if status.mlflow else 0) + 1
    started = time.monotonic()
    try:
        done = mlflow_export.export_run(target, record, store, known_run_id=known)
    except mlflow_export.ExportBusy:
        return replace(seen, outcome="Busy", retry_in=settings.poll_interval)
    except mlflow_export.ExportRefused as err:
        return replace(seen, outcome="Refused", error=str(err))
    except Exception as err:  # MLflow down, slow or answering with an error; S3 down: all worth a retry
        log.warning("TrainingRun %s/%s: MLflow export pending: %s", meta["namespace"], meta["name"], str(err)[:500])
        delay = mlflow_export.backoff_seconds(attempts, settings.poll_interval, settings.mlflow_retry_max_seconds)
        return replace(seen, outcome="Unreachable", error=mlflow_export.short_error(err), retry_in=delay)
    log.info("TrainingRun %s/%s exported in %.1fs: MLflow run %s", meta["namespace"], meta["name"],
             time.monotonic() - started, done.run_id)
    return replace(seen, outcome="Exported", experiment_id=done.experiment_id, run_id=done.run_id,
                   model_uri=done.model_uri)


def _needs_visit(status: kopf.Status, **_: Any) -> bool:
    """Runs in progress (waiting ones too), and succeeded runs whose MLflow export is still pending (status only)."""
    return status.get("phase") not in FINISHED or (status.get("mlflow") or {}).get("state") == "Pending"


@TRAININGRUNS.view
def runs_in_flight(uid: str, status: kopf.Status, **_: Any) -> dict | None:
    """The runs the timer visits. A DELETED event drops the entry before kopf matches the timer again, which stops
    it: no finalizer is needed for that (see _without_finalizer)."""
    return {uid: True} if _needs_visit(status) else None


@TRAININGRUNS.view
def runs_by_task(body: kopf.Body, namespace: str, status: kopf.Status, **_: Any) -> dict | None:
    """Each run with a task in flight, by its task's name: what a Job event wakes. Enough of the body for a pass
    and its conditional status write; at most one entry per run in flight."""
    if not status.get("task") or status.get("phase") in FINISHED:
        return None
    meta = body["metadata"]
    trimmed = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
               "metadata": {k: copy.deepcopy(meta.get(k)) for k in
                            ("name", "namespace", "uid", "resourceVersion", "generation", "labels")},
               "spec": copy.deepcopy(dict(body.get("spec") or {})), "status": copy.deepcopy(dict(status))}
    return {(namespace, status["task"]): trimmed}


def _on_its_job(namespace: str, status: kopf.Status, task_jobs: kopf.Index) -> bool:
    """A run whose task is a Job the watch shows in flight: the Job's events wake it, no timer visits it."""
    return status.get("phase") not in FINISHED and job_in_flight(task_jobs, namespace, status.get("task"))


def _timer_visits(uid: str, namespace: str, status: kopf.Status, task_jobs: kopf.Index, **kwargs: Any) -> bool:
    """In flight and still indexed, and not following a Job in flight. The timer still comes for a run whose Job
    the watch does not show (just created, or gone), a run waiting for a Dataset or for S3, a local process."""
    return (_needs_visit(status) and uid in runs_in_flight.of(kwargs)
            and not _on_its_job(namespace, status, task_jobs))


def _without_finalizer(fn: Any) -> Any:
    """kopf gives every object a timer watches its finalizer, only to stop the timer on deletion, and has no
    option against it. _timer_visits stops it instead, so the registered timer is made not to require one: a run
    in flight then deletes while the operator is down, and a fan-out spends no PATCH per run on it (nor a 409 for
    the first status write, which raced that PATCH)."""
    spawning = kopf.get_default_registry()._spawning
    spawning._handlers = [replace(h, requires_finalizer=False) if getattr(h, "fn", None) is fn else h
                          for h in spawning._handlers]
    return fn


def _started_unseen(status: kopf.Status, namespace: str, task_jobs: kopf.Index) -> bool:
    """Its Job runs but the run says Pending: the Job's event came before the run's task was written (no pass took
    it then), so the run's own event takes it now."""
    seen = seen_job(task_jobs, namespace, status.get("task") or "") if status.get("task") else None
    return status.get("phase") == "Pending" and seen is not None and seen.phase == "Running"


def _left_to_the_watch(type: str, body: kopf.Body, namespace: str, status: kopf.Status, task_jobs: kopf.Index,
                       **_: Any) -> bool:
    """Not a run the timer visits (two handlers passing on one body would race to each step), nor a deleted one.
    A filter, so that a run in flight costs its watch events no handler thread."""
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        return False
    return not _needs_visit(status) or _started_unseen(status, namespace, task_jobs)


@kopf.on.event(GROUP, VERSION, "trainingruns", when=_left_to_the_watch)
@pinned
def trainingrun_changed(body: kopf.Body, patch: kopf.Patch, datasets_for_runs: kopf.Index,
                        requirements_for_runs: kopf.Index, task_jobs: kopf.Index, **_: Any) -> None:
    """A run no timer visits: on every change, and once at start-up (kopf's initial listing) to send what its
    outbox still owes. A watch handler, not on.create/on.resume: kopf then writes no progress or diffbase
    annotations, whose PATCHes doubled the writes per run and moved the resourceVersion under our status write."""
    reconcile_run(body, patch, datasets_for_runs, requirements_for_runs, task_jobs)


def _deleted_mid_task(type: str, status: kopf.Status, **_: Any) -> bool:
    return type == "DELETED" and bool(status.get("task")) and status.get("phase") not in FINISHED


@kopf.on.event(GROUP, VERSION, "trainingruns", when=_deleted_mid_task)
def trainingrun_deleted(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> None:
    """A run deleted while its task runs as a local process: the process ends with it, as the garbage collector
    ends the pods of a run's Job. With the operator stopped at the deletion, the process runs to its end."""
    executor = executor_for(spec.get("executor"))
    if isinstance(executor, LocalExecutor) and executor.stop(namespace, status["task"]):
        log.info("TrainingRun %s/%s deleted: its local task %s stopped", namespace, name, status["task"])


def _news_for_its_run(type: str, namespace: str, name: str, task_jobs: kopf.Index, **kwargs: Any) -> bool:
    """A Job's change its run has not taken: it started while the run says Pending, it finished, or it is gone."""
    run = next(iter(runs_by_task.of(kwargs).get((namespace, name))), None)
    if run is None:
        return False
    if job_ended(type, task_jobs, namespace, name):
        return True
    seen = seen_job(task_jobs, namespace, name)
    return seen is not None and seen.phase == "Running" and run["status"].get("phase") == "Pending"


@kopf.on.event("batch", "v1", "jobs", labels={**TASK_JOBS, "mloop.dev/trainingrun": kopf.PRESENT},
               when=_news_for_its_run)
def run_job_changed(namespace: str, name: str, datasets_for_runs: kopf.Index, requirements_for_runs: kopf.Index,
                    task_jobs: kopf.Index, **kwargs: Any) -> None:
    """A run's Job moved: the run's pass follows it, on the run as last watched (its write is conditional on that
    resourceVersion, so a second sight of the same change, or a pass racing the timer, changes nothing twice)."""
    for run in runs_by_task.of(kwargs).get((namespace, name)):
        reconcile_run(kopf.Body(copy.deepcopy(run)), kopf.Patch(), datasets_for_runs, requirements_for_runs,
                      task_jobs)


@_without_finalizer
@kopf.timer(GROUP, VERSION, "trainingruns", interval=get_settings().poll_interval, sharp=False, when=_timer_visits)
@pinned
def trainingrun_tick(body: kopf.Body, patch: kopf.Patch, namespace: str, status: kopf.Status,
                     datasets_for_runs: kopf.Index, requirements_for_runs: kopf.Index, task_jobs: kopf.Index,
                     **_: Any) -> None:
    if _on_its_job(namespace, status, task_jobs):
        return  # the watch showed the Job after the timer started: its events wake the run from here on
    reconcile_run(body, patch, datasets_for_runs, requirements_for_runs, task_jobs)
