"""TrainingRun handlers: admission before any Job, then trials and the final fit through an executor."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from mloop.api.common import get_condition, iso
from mloop.api.dataset import DatasetSpec, DatasetStatus
from mloop.api.kinds import API_VERSION, GROUP, VERSION
from mloop.api.requirement import RequirementSpec
from mloop.api.trainingrun import MlflowStatus, TrainingRunSpec, TrainingRunStatus
from mloop.config import get_settings
from mloop.constants import LABEL_EXPERIMENT
from mloop.executors.base import Task, TaskState, task_name
from mloop.executors.factory import executor_for
from mloop.handlers.common import ReconcilePass
from mloop.handlers.metrics import measured
from mloop.integrations import mlflow_export
from mloop.k8s.client import get_object
from mloop.reconcile import requirements as judge
from mloop.reconcile import trainingrun as decide
from mloop.reconcile.outcome import Event, camel_reason, describe_validation_error
from mloop.storage.artifacts import AlreadyExists, StorageUnavailable, Store, operator_store
from mloop.training.estimators import ParameterError, check_search_space, make_estimator
from mloop.training.search import candidates
from mloop.workloads.train import package_versions

FINISHED = ("Succeeded", "Failed")
log = logging.getLogger("mloop.trainingrun")


def run_prefix(namespace: str, name: str, uid: str) -> str:
    return f"runs/{namespace}/{name}/{uid}/"


class Run(ReconcilePass):
    """One reconcile pass over one TrainingRun."""

    main = "Succeeded"

    def __init__(self, body: kopf.Body, patch: kopf.Patch):
        super().__init__(body, TrainingRunStatus)
        self.patch = patch
        self.prefix = run_prefix(self.namespace, self.name, self.uid)

    def fail(self, reason: str, message: str) -> None:
        super().fail(reason, message)
        self.update.update(finishedAt=iso(self.now), failure=f"{reason}: {message}"[:1024])

    def task(self, kind: str, spec: TrainingRunSpec, name: str | None = None) -> Task:
        resources = spec.resources.to_wire() if spec.resources else None
        common = dict(namespace=self.namespace, prefix=self.prefix, deadline_seconds=spec.deadline_seconds,
                      backoff_limit=spec.retries, resources=resources or None,
                      owner={"apiVersion": API_VERSION, "kind": "TrainingRun", "name": self.name, "uid": self.uid},
                      labels={LABEL_EXPERIMENT: spec.experiment} if spec.experiment else {})
        if kind == "trials":
            assert spec.search is not None
            count = len(candidates(spec.search, spec.split.seed if spec.split else 42))
            return Task(name=name or task_name("trials", self.name, self.uid), kind="trials",
                        command=["python", "-m", "mloop.workloads.train", "trial", self.prefix],
                        completions=count, parallelism=min(spec.search.parallelism, count), **common)
        return Task(name=name or task_name("train", self.name, self.uid), kind="train",
                    command=["python", "-m", "mloop.workloads.train", "fit", self.prefix], **common)


def _requirements(run: Run, spec: TrainingRunSpec) -> list[tuple[str, RequirementSpec]] | None:
    found = []
    for ref in spec.requirement_refs or []:
        obj = get_object("requirements", ref.namespace or run.namespace, ref.name)
        if obj is None:
            run.wait("WaitingForRequirement", f"Requirement {ref.name} does not exist yet")
            return None
        found.append((ref.name, RequirementSpec.model_validate(dict(obj["spec"]))))
    return found


def _finish(run: Run, spec: TrainingRunSpec, result: dict[str, Any], features: list[str] | None) -> None:
    dataset_obj = get_object("datasets", spec.dataset_ref.namespace or run.namespace, spec.dataset_ref.name)
    dataset = DatasetStatus.model_validate(dict(dataset_obj.get("status") or {})) if dataset_obj else None
    reqs = _requirements(run, spec) or []
    task_kind = spec.task or ("classification" if "accuracy" in (result.get("metrics") or {}) else "regression")
    primary = judge.primary_metric([r for _, r in reqs], task_kind)
    run.update.update(decide.succeeded_status(result, primary))
    run.update.update(phase="Succeeded", finishedAt=iso(run.now), task=None)
    results = []
    for name, req in reqs:
        results += judge.evaluate(name, req, result.get("metrics"), dataset, features, run.now)
    run.update["requirements"] = judge.wire(results)
    message = result.get("message", "trained")
    run.condition("Succeeded", "True", result.get("reason", "Trained"), message)
    run.condition("Ready", "True", "Succeeded", message)
    if reqs:
        met, why = judge.verdict(results)
        run.condition("RequirementsMet", "True" if met else "False", "CriteriaMet" if met else "CriterionFailed", why)
    run.event("Normal", "RunSucceeded", f"{run.update['primaryMetric']}; model {str(result.get('modelDigest'))[:19]}…")


@measured("TrainingRun")
def reconcile_run(body: kopf.Body, patch: kopf.Patch) -> None:
    run = Run(body, patch)
    if run.status.phase in FINISHED:
        if _export_due(run.status, run.now):
            _export(run, TrainingRunSpec.model_validate(dict(body["spec"])), operator_store())
            run.commit()
        return
    try:
        spec = TrainingRunSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        run.fail("InvalidSpec", describe_validation_error(err))
        run.commit()
        return
    store = operator_store()
    executor = executor_for(spec.executor)
    try:
        if run.status.task:
            _poll(run, spec, store, executor)
        else:
            _start(run, spec, store, executor)
    except StorageUnavailable as err:
        run.wait("StorageUnavailable", f"{err}; retrying")
    if run.update.get("phase") == "Succeeded":
        _export(run, spec, store)  # the first attempt, in the pass that finishes the run
    run.commit()


def _poll(run: Run, spec: TrainingRunSpec, store: Store, executor: Any) -> None:
    current = run.status.task or ""
    task = run.task("trials" if current.startswith("trials-") else "train", spec, name=current)
    state = executor.state(task)
    if state.phase == "Running" and run.status.phase != "Running":
        run.update["phase"] = "Running"
        run.condition("Succeeded", "Unknown", "Running", f"{task.kind} task {task.name} is running")
    if not state.finished and state.phase != "Missing":
        return
    if task.kind == "trials":
        if state.phase == "Succeeded":
            fit = run.task("train", spec)
            executor.submit(fit)
            run.update.update(task=fit.name, phase="Running")
            run.condition("Succeeded", "Unknown", "Refitting", f"{task.completions} trials done; refitting the best")
            return
        run.fail("TrialFailed", _failure_text(state, task))
        return
    result = store.get_json_or_none(task.prefix + "result.json")
    if result is not None and result.get("status") == "Succeeded":
        _finish(run, spec, result, store.get_json(task.prefix + "spec.json").get("features"))
        _remember(run, spec, store, result)
        return
    if result is not None:
        run.fail(result.get("reason", "TrainingFailed"), result.get("message", ""))
        return
    store.ping()  # raises StorageUnavailable: then the task may have failed for want of storage; keep polling
    run.fail(camel_reason(state.reason or "TaskFailed"), _failure_text(state, task))


def _failure_text(state: TaskState, task: Task) -> str:
    text = f"{task.kind} task {task.name} failed: {state.reason or state.phase}"
    if state.message:
        text += f": {state.message}"
    if state.exit_code is not None:
        text += f" (exit code {state.exit_code}{', killed: out of memory?' if state.exit_code == 137 else ''})"
    return text[:1000]


def _cache_key(run: Run, spec: TrainingRunSpec) -> str:
    settings = get_settings()
    return decide.cache_key(spec, run.status.dataset_digest or "", {**package_versions(), "image": settings.image})


def _remember(run: Run, spec: TrainingRunSpec, store: Store, result: dict[str, Any]) -> None:
    """Record a succeeded run under its cache key, for later runs with cachePolicy: reuse."""
    entry = {"run": run.name, "uid": run.uid, "result": result, "datasetDigest": run.status.dataset_digest}
    try:
        store.put_json(f"cache/{run.namespace}/{_cache_key(run, spec)}.json", entry)
    except AlreadyExists:
        pass  # an earlier identical run is already the source


def _start(run: Run, spec: TrainingRunSpec, store: Store, executor: Any) -> None:
    ref = spec.dataset_ref
    ds_ns = ref.namespace or run.namespace
    dataset_obj = get_object("datasets", ds_ns, ref.name)
    if dataset_obj is None:
        run.wait("WaitingForDataset", f"Dataset {ref.name} does not exist yet")
        return
    dataset = DatasetStatus.model_validate(dict(dataset_obj.get("status") or {}))
    if ref.version:
        pinned = next((v for v in dataset.versions or [] if v.version == ref.version and not v.expired), None)
        if pinned is None:
            run.wait("WaitingForDataset", f"Dataset {ref.name} has no version {ref.version}")
            return
        version, digest = pinned.version, pinned.digest
    elif dataset.version and dataset.digest:
        version, digest = dataset.version, dataset.digest
    else:
        run.wait("WaitingForDataset", f"Dataset {ref.name} has no Ready version yet (phase {dataset.phase or 'Pending'})")
        return
    reqs = _requirements(run, spec)
    if reqs is None:
        return
    dataset_label = f"{ref.name}@{version}"
    run.update.update(dataset=dataset_label, datasetVersion=version, datasetDigest=digest)
    run.status.dataset_digest = digest
    try:
        plan = decide.plan_features(spec, list(dataset.columns or []), dataset_label)
        seed = spec.split.seed if spec.split else 42
        make_estimator(spec.estimator.name, spec.estimator.params, seed)
        if spec.search:
            check_search_space(spec.estimator.name, spec.search.parameters, spec.estimator.params, seed)
    except decide.RunRefused as err:
        run.fail(err.reason, err.message)
        return
    except ParameterError as err:
        run.fail("InvalidParameter", str(err)[:1000])
        return
    tags = DatasetSpec.model_validate(dict(dataset_obj["spec"])).governance
    refusals = [r for name, req in reqs for r in judge.admission(name, req, ref.name, tags, list(dataset.columns or []),
                                                                 plan.features)]
    if refusals:
        message = "; ".join(r.message for r in refusals)[:1000]
        reason = refusals[0].reason
        run.update.update(phase="Failed", finishedAt=iso(run.now), failure=f"{reason}: {message}"[:1024])
        run.condition("GovernanceBlocked", "True", reason, message)
        run.condition("Succeeded", "False", "GovernanceBlocked", "refused before any Job started")
        run.condition("Ready", "False", "GovernanceBlocked", message)
        run.event("Warning", "GovernanceBlocked", message)
        return
    if reqs:
        run.condition("GovernanceBlocked", "False", "Admitted", "the data meets every referenced governance limit")
    if spec.experiment and run.labels.get(LABEL_EXPERIMENT) != spec.experiment:
        run.patch.metadata.setdefault("labels", {})[LABEL_EXPERIMENT] = spec.experiment

    if spec.cache_policy == "reuse":
        entry = store.get_json_or_none(f"cache/{run.namespace}/{_cache_key(run, spec)}.json")
        if entry and entry["uid"] != run.uid and store.exists(entry["result"]["modelUri"].split("/", 3)[3]):
            run.update.update(startedAt=iso(run.now), cacheSource=entry["run"])
            _finish(run, spec, {**entry["result"], "reason": "CacheHit",
                                "message": f"reused the result of TrainingRun {entry['run']}"}, plan.features)
            run.condition("Succeeded", "True", "CacheHit", f"reused the result of TrainingRun {entry['run']}: same "
                                                           f"spec, dataset digest and trainer versions; no Job ran")
            run.events = [Event("Normal", "CacheHit", f"reused TrainingRun {entry['run']}")]
            return

    body = {"namespace": run.namespace, "name": run.name, "uid": run.uid, "prefix": run.prefix,
            "spec": spec.to_wire(), "task": plan.task, "target": spec.target, "features": plan.features,
            "types": plan.types,
            "dataset": {"namespace": ds_ns, "name": ref.name, "version": version, "digest": digest.removeprefix("sha256:")}}
    try:
        store.put_json(run.prefix + "spec.json", body)
    except AlreadyExists:
        pass  # written by an earlier pass for this same uid: the run's inputs are immutable
    first = run.task("trials" if spec.search else "train", spec)
    executor.submit(first)
    run.update.update(task=first.name, phase="Pending", startedAt=iso(run.now))
    run.condition("Succeeded", "Unknown", "Started", f"{first.kind} task {first.name} submitted ({executor.name} executor)")
    run.condition("Ready", "Unknown", "Running", "training in progress")
    run.event("Normal", "RunStarted", f"{first.kind} task {first.name} on {dataset_label}")


def _export_due(status: TrainingRunStatus, now: datetime) -> bool:
    export = status.mlflow
    return (status.phase == "Succeeded" and export is not None and export.state == "Pending"
            and (export.retry_at is None or export.retry_at <= now))


def _export(run: Run, spec: TrainingRunSpec, store: Store) -> None:
    """One attempt at the MLflow export of a succeeded run; on failure the run stays Succeeded and Ready,
    and the MLflowExported condition says when the next attempt is due."""
    settings = get_settings()
    state = run.status.mlflow or MlflowStatus(state="Pending")
    target = mlflow_export.target_for(spec.mlflow, spec.experiment, run.namespace, settings)
    if target is None:
        if run.status.mlflow is not None:  # turned off in the operator settings before it landed
            run.update["mlflow"] = {**state.to_wire(), "state": "Disabled", "retryAt": None}
            run.condition("MLflowExported", "False", "ExportDisabled", "MLflow export was turned off before it landed")
        return
    shown = mlflow_export.shown(target.tracking_uri)
    if not mlflow_export.allowed(target, settings):
        message = (f"trackingUri {shown} is not the operator's MLflow server nor under MLOOP_MLFLOW_ALLOWED_URIS; "
                   f"not exported")
        run.update["mlflow"] = {**state.to_wire(), "state": "Failed", "trackingUri": shown,
                                "experiment": target.experiment, "retryAt": None}
        if run.reason_of("MLflowExported") != "TrackingUriNotAllowed":
            run.event("Warning", "TrackingUriNotAllowed", message)
        run.condition("MLflowExported", "False", "TrackingUriNotAllowed", message)
        return
    current = TrainingRunStatus.model_validate({**dict(run.body.get("status") or {}), **run.update})
    met = get_condition(run.conditions, "RequirementsMet")
    record = mlflow_export.RunRecord(
        namespace=run.namespace, name=run.name, uid=run.uid, estimator=spec.estimator.name,
        model_uri=current.model_uri or "", model_digest=current.model_digest or "", metrics=current.metrics or {},
        dataset=current.dataset or "", dataset_digest=current.dataset_digest or "",
        requirement_refs=[f"{r.namespace}/{r.name}" if r.namespace else r.name for r in spec.requirement_refs or []],
        requirements_met=None if met is None else met.status == "True", primary_metric=current.primary_metric or "",
        started_at=current.started_at, finished_at=current.finished_at)
    wire = {**state.to_wire(), "trackingUri": shown, "experiment": target.experiment}
    where = f"MLflow at {shown}"
    started = time.monotonic()
    try:
        done = mlflow_export.export_run(target, record, store, known_run_id=state.run_id)
    except mlflow_export.ExportBusy:
        retry = run.now + timedelta(seconds=settings.poll_interval)
        run.update["mlflow"] = {**wire, "state": "Pending", "retryAt": iso(retry)}
        run.condition("MLflowExported", "False", "ExportPending", f"{where}: waiting for another export to finish")
        return
    except mlflow_export.ExportRefused as err:
        attempts = state.attempts + 1
        run.update["mlflow"] = {**wire, "state": "Failed", "attempts": attempts, "retryAt": None}
        message = f"{where}: not exported: {str(err)[:300]}"
        run.condition("MLflowExported", "False", "ExportFailed", message)
        run.event("Warning", "ExportFailed", message)
        return
    except Exception as err:  # MLflow down, slow or answering with an error; S3 down: all worth a retry
        attempts = state.attempts + 1
        delay = mlflow_export.backoff_seconds(attempts, settings.poll_interval, settings.mlflow_retry_max_seconds)
        retry = run.now + timedelta(seconds=delay)
        run.update["mlflow"] = {**wire, "state": "Pending", "attempts": attempts, "retryAt": iso(retry)}
        message = f"{where}: {mlflow_export.short_error(err)}; attempt {attempts}, next at {iso(retry)}"
        log.warning("TrainingRun %s/%s: MLflow export pending: %s", run.namespace, run.name, str(err)[:500])
        if run.reason_of("MLflowExported") != "ExportPending":
            run.event("Warning", "ExportPending", message)
        run.condition("MLflowExported", "False", "ExportPending", message)
        return
    run.update["mlflow"] = {**wire, "state": "Exported", "attempts": state.attempts + 1, "retryAt": None,
                            "experimentId": done.experiment_id, "runId": done.run_id, "modelUri": done.model_uri,
                            "exportedAt": iso(run.now)}
    message = f"MLflow run {done.run_id} in experiment {target.experiment} at {shown}"
    log.info("TrainingRun %s/%s exported in %.1fs: %s", run.namespace, run.name, time.monotonic() - started, message)
    run.condition("MLflowExported", "True", "Exported", message)
    run.event("Normal", "Exported", f"{message}; model {done.model_uri}")


def _needs_visit(status: kopf.Status, **_: Any) -> bool:
    """Runs in progress, and succeeded runs whose MLflow export is still pending (status only: cheap)."""
    return status.get("phase") not in FINISHED or (status.get("mlflow") or {}).get("state") == "Pending"


@kopf.on.create(GROUP, VERSION, "trainingruns")
@kopf.on.resume(GROUP, VERSION, "trainingruns")
def trainingrun_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_run(body, patch)


@kopf.timer(GROUP, VERSION, "trainingruns", interval=get_settings().poll_interval, sharp=False, when=_needs_visit)
def trainingrun_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_run(body, patch)
