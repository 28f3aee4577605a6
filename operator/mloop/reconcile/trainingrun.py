"""TrainingRun decisions: from the run's spec and status and a gathered view of the world, the new status, the
events and the actions. Pure: the handler gathers (indexes, executor, S3) and carries the actions out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mloop.api.common import GovernanceTags, iso
from mloop.api.dataset import ColumnProfile, ColumnStatus, DatasetStatus, DatasetVersion
from mloop.api.kinds import API_VERSION
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import Checks, DatasetPin, Task, TaskState, TrainResult, TrainTaskSpec, task_name
from mloop.api.trainingrun import CLASSIFIERS, TrainingRunSpec, TrainingRunStatus
from mloop.constants import LABEL_EXPERIMENT
from mloop.reconcile import requirements as judge
from mloop.reconcile.outcome import Decision, Draft, camel_reason

# Fields that say how and where a run executes, not what it computes: they do not change the result.
EXECUTION_ONLY = {"executor", "resources", "deadline_seconds", "retries", "experiment", "requirement_refs",
                  "cache_policy", "mlflow"}
FINISHED = ("Succeeded", "Failed")
# Tasks lost to storage outages (exit code 75) before the run gives up: each is retried under a new name.
MAX_STORAGE_RETRIES = 10


@dataclass(frozen=True)
class Plan:
    task: str  # classification or regression
    features: list[str]
    types: dict[str, str]


class RunRefused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def task_of(spec: TrainingRunSpec) -> str:
    return spec.task or ("classification" if spec.estimator.name in CLASSIFIERS else "regression")


def plan_features(spec: TrainingRunSpec, columns: list[ColumnStatus], dataset: str) -> Plan:
    names = [c.name for c in columns]
    if spec.target not in names:
        raise RunRefused("TargetNotFound", f"target {spec.target!r} is not a column of Dataset {dataset} "
                                           f"(columns: {', '.join(names[:20])})")
    if spec.features is not None:
        missing = [f for f in spec.features if f not in names]
        if missing:
            raise RunRefused("FeatureNotFound", f"feature {missing[0]!r} is not a column of Dataset {dataset}")
        features = list(spec.features)
    else:
        features = [c.name for c in columns if c.name != spec.target and c.role not in ("id", "timestamp", "target")]
    if not features:
        raise RunRefused("NoFeatures", f"no feature columns: Dataset {dataset} has only the target, ids and timestamps")
    return Plan(task_of(spec), features, {c.name: c.type for c in columns})


def cache_key(spec: TrainingRunSpec, dataset_digest: str, packages: dict[str, str],
              numeric: dict[str, Any] | None = None) -> str:
    """Same computation, same data, same code, same numeric environment: the same key.

    `numeric`: to record a success, the environment its fit recorded; to look one up, the environment a new
    run is expected to get, which the operator knows before any pod runs only from its own process
    (`numeric.trainer_environment()`). A hit thus reuses only a result computed in that environment."""
    material = {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude=EXECUTION_ONLY, exclude_none=True),
        "dataset": dataset_digest,
        "packages": packages,
        "numeric": numeric,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def succeeded_status(result: TrainResult, primary: str) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in sorted(result.metrics.items())[:32]}
    status: dict[str, Any] = {
        "metrics": metrics, "modelUri": result.model_uri, "modelDigest": result.model_digest,
        "primaryMetric": judge.primary_value(metrics, primary),
    }
    if result.best_trial:
        status["bestTrial"] = result.best_trial.to_wire()
    if result.trials:
        status["trials"] = result.trials
    return status


# -- the world a pass decides on ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRef:
    namespace: str
    name: str
    uid: str
    prefix: str  # the run's folder in the bucket (storage.layout.run_prefix)
    generation: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionFacts:
    """Columns and profile of a pinned version that is no longer the Dataset's current one (its manifest)."""

    columns: tuple[ColumnStatus, ...]
    profile: tuple[ColumnProfile, ...]


@dataclass(frozen=True)
class CacheEntry:
    """An earlier succeeded run with the same cache key, its model still in storage."""

    run: str
    uid: str
    result: TrainResult


@dataclass(frozen=True)
class World:
    run: RunRef
    dataset: DatasetStatus | None = None  # None: no such Dataset in a watched namespace
    governance: GovernanceTags | None = None
    requirements: tuple[tuple[str, RequirementSpec | None], ...] = ()  # in spec order; None: does not exist
    pinned: VersionFacts | None = None  # set when the pinned version is not the Dataset's current one
    spec_error: str | None = None  # the spec did not parse
    estimator_error: str | None = None  # a parameter or search value the estimator refuses
    trial_count: int = 0
    executor: str = "local"
    task: TaskState | None = None  # the task in status.task
    result: TrainResult | None = None  # its result.json, once it finished
    storage_ok: bool = True
    cache_hit: CacheEntry | None = None
    cache_key: str | None = None  # the key a success is recorded under
    export_wanted: bool = False  # an MLflow target applies to this run
    test_datasets: Mapping[str, DatasetStatus | None] = field(default_factory=dict)  # by ns/name: tests' Datasets
    spec_written: bool = True  # False: a task lost to storage wrote no spec.json; its retry carries one again


# -- what a pass decided ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WriteSpec:
    key: str
    body: TrainTaskSpec


@dataclass(frozen=True)
class SubmitTask:
    task: Task


@dataclass(frozen=True)
class RecordCache:
    key: str  # the cache key (storage.layout.cache_entry makes it an object key)
    entry: dict[str, Any]


@dataclass(frozen=True)
class SetLabel:
    key: str
    value: str




class _Draft(Draft):
    """The status, conditions, events and actions of one decision as it is built."""

    main = "Succeeded"

    def fail(self, reason: str, message: str) -> None:
        super().fail(reason, message)
        self.update.update(finishedAt=iso(self.now), failure=f"{reason}: {message}"[:1024])


# -- the decisions -----------------------------------------------------------------------------------------------

def decide(spec: TrainingRunSpec | None, status: TrainingRunStatus, world: World, now: datetime) -> Decision:
    """One pass: refuse a bad spec, start, follow the task in flight, retry it, or finish."""
    draft = _Draft(status, world.run.generation, now)
    if status.phase in FINISHED:
        return Decision({})
    if spec is None:
        draft.fail("InvalidSpec", world.spec_error or "the spec does not parse")
    elif status.task:
        _follow(draft, spec, status, world)
    else:
        _start(draft, spec, status, world)
    return draft.decision()


def pin_version(spec: TrainingRunSpec, dataset: DatasetStatus | None) -> DatasetVersion | str:
    """The version a run that starts now reads, or why there is none yet."""
    ref = spec.dataset_ref
    if dataset is None:
        return f"Dataset {ref.name} does not exist yet"
    if ref.version:
        pinned = next((v for v in dataset.versions or [] if v.version == ref.version and not v.expired), None)
        return pinned if pinned is not None else f"Dataset {ref.name} has no version {ref.version}"
    current = next((v for v in dataset.versions or [] if v.digest == dataset.digest), None)
    if current is None:
        return f"Dataset {ref.name} has no Ready version yet (phase {dataset.phase or 'Pending'})"
    return current


def pinned_view(dataset: DatasetStatus, version: DatasetVersion, facts: VersionFacts | None) -> DatasetStatus:
    """The Dataset as it was at the version a run pinned: its rows, age, columns and profile, not the current's."""
    columns, profile = dataset.columns, dataset.profile
    if version.digest != dataset.digest:
        columns, profile = (list(facts.columns), list(facts.profile)) if facts else ([], [])
    return DatasetStatus(phase="Ready", version=version.version, digest=version.digest, rows=version.rows,
                         versions=[version], columns=columns, profile=profile)


def build_task(spec: TrainingRunSpec, run: RunRef, kind: str, name: str, trial_count: int = 0) -> Task:
    resources = spec.resources.to_wire() if spec.resources else None
    common: dict[str, Any] = dict(
        namespace=run.namespace, prefix=run.prefix, deadline_seconds=spec.deadline_seconds,
        backoff_limit=spec.retries, resources=resources or None,
        owner={"apiVersion": API_VERSION, "kind": "TrainingRun", "name": run.name, "uid": run.uid},
        labels={LABEL_EXPERIMENT: spec.experiment} if spec.experiment else {})
    if kind == "trials":
        assert spec.search is not None
        return Task(name=name, kind="trials", command=["python", "-m", "mloop.workloads.train", "trial", run.prefix],
                    completions=trial_count, parallelism=min(spec.search.parallelism, max(trial_count, 1)), **common)
    return Task(name=name, kind="train", command=["python", "-m", "mloop.workloads.train", "fit", run.prefix], **common)


def task_kind(task: str) -> str:
    return "trials" if task.startswith("trials-") else "train"


def failure_text(state: TaskState, kind: str, task: str) -> str:
    text = f"{kind} task {task} failed: {state.reason or state.phase}"
    if state.message:
        text += f": {state.message}"
    if state.exit_code is not None:
        text += f" (exit code {state.exit_code}{', killed: out of memory?' if state.exit_code == 137 else ''})"
    return text[:1000]


def _start(draft: _Draft, spec: TrainingRunSpec, status: TrainingRunStatus, world: World) -> None:
    run, ref = world.run, spec.dataset_ref
    version = pin_version(spec, world.dataset)
    if isinstance(version, str):
        draft.wait("WaitingForDataset", version)
        return
    assert world.dataset is not None
    missing = [name for name, req in world.requirements if req is None]
    if missing:
        draft.wait("WaitingForRequirement", f"Requirement {missing[0]} does not exist yet")
        return
    if version.digest != world.dataset.digest and world.pinned is None and not world.storage_ok:
        draft.wait("StorageUnavailable", f"S3 is unavailable: cannot read the schema of {ref.name}@{version.version}; "
                                         f"retrying")
        return
    label = f"{ref.name}@{version.version}"
    view = pinned_view(world.dataset, version, world.pinned)
    draft.update.update(dataset=label, datasetVersion=version.version, datasetDigest=version.digest)
    try:
        plan = plan_features(spec, list(view.columns or []), label)
    except RunRefused as err:
        draft.fail(err.reason, err.message)
        return
    if world.estimator_error:
        draft.fail("InvalidParameter", world.estimator_error[:1000])
        return
    requirements = [(name, req) for name, req in world.requirements if req is not None]
    refusals = [r for name, req in requirements
                for r in judge.admission(name, req, ref.name, world.governance, list(view.columns or []), plan.features)]
    if refusals:
        message = "; ".join(r.message for r in refusals)[:1000]
        draft.update.update(phase="Failed", finishedAt=iso(draft.now), failure=f"{refusals[0].reason}: {message}"[:1024])
        draft.condition("GovernanceBlocked", "True", refusals[0].reason, message)
        draft.condition("Succeeded", "False", "GovernanceBlocked", "refused before any Job started")
        draft.condition("Ready", "False", "GovernanceBlocked", message)
        draft.event("Warning", "GovernanceBlocked", message)
        return
    if requirements:
        draft.condition("GovernanceBlocked", "False", "Admitted", "the data meets every referenced governance limit")
    if spec.experiment and run.labels.get(LABEL_EXPERIMENT) != spec.experiment:
        draft.actions.append(SetLabel(LABEL_EXPERIMENT, spec.experiment))
    if not world.storage_ok:
        draft.wait("StorageUnavailable", "S3 is unavailable: the run starts once it answers")
        return
    started_at = iso(status.started_at or draft.now)  # a start decided twice on one status is the same start

    checks = plan_checks(requirements, run.namespace, world.test_datasets)
    if isinstance(checks, str):
        draft.wait("WaitingForDataset", checks)
        return
    hit = world.cache_hit if spec.cache_policy == "reuse" else None
    if hit is not None and not _covers(hit.result, checks):
        hit = None  # computed without a check this run's requirements ask for: train again
    if hit is not None and hit.uid != run.uid:
        draft.update.update(startedAt=started_at, cacheSource=hit.run)
        message = f"reused the result of TrainingRun {hit.run}"
        reused = hit.result.model_copy(update={"reason": "CacheHit", "message": message})
        _finish(draft, spec, world, reused, plan.features, view, announce=False)  # CacheHit is its one terminal event
        draft.condition("Succeeded", "True", "CacheHit", f"{message}: same spec, dataset digest and trainer "
                                                         f"versions; no Job ran")
        draft.event("Normal", "CacheHit", f"reused TrainingRun {hit.run}")
        return

    draft.actions.append(_write_spec(spec, run, plan, version, checks))
    kind = "trials" if spec.search else "train"
    first = build_task(spec, run, kind, task_name(kind, run.name, run.uid), world.trial_count)
    draft.actions.append(SubmitTask(first))
    draft.update.update(task=first.name, phase="Pending", startedAt=started_at)
    draft.condition("Succeeded", "Unknown", "Started", f"{kind} task {first.name} submitted ({world.executor} executor)")
    draft.condition("Ready", "Unknown", "Running", "training in progress")
    draft.event("Normal", "RunStarted", f"{kind} task {first.name} on {label}")


def _write_spec(spec: TrainingRunSpec, run: RunRef, plan: Plan, version: DatasetVersion,
                checks: Checks | None) -> WriteSpec:
    ref = spec.dataset_ref
    return WriteSpec(run.prefix + "spec.json", TrainTaskSpec(
        namespace=run.namespace, name=run.name, uid=run.uid, prefix=run.prefix, spec=spec, task=plan.task,
        target=spec.target, features=plan.features, types=plan.types,
        dataset=DatasetPin(namespace=ref.namespace or run.namespace, name=ref.name, version=version.version,
                           digest=version.digest.removeprefix("sha256:")), checks=checks))


def _spec_again(draft: _Draft, spec: TrainingRunSpec, status: TrainingRunStatus, world: World) -> WriteSpec | None:
    """spec.json for a retry whose lost task never wrote it (its Job, which carried it, may be gone too): built as
    at the start, on the version the status pinned. No task read the lost one, so this one defines the run's inputs.
    None, with the status saying why, when it cannot be built."""
    ref = spec.dataset_ref
    version = next((v for v in (world.dataset.versions or []) if v.digest == status.dataset_digest and not v.expired),
                   None) if world.dataset else None
    if world.dataset is None or version is None:
        draft.fail("DatasetVersionGone", f"no task wrote the run's spec before storage was lost, and "
                                         f"{status.dataset or ref.name} is gone: create a new run")
        return None
    label = f"{ref.name}@{version.version}"
    try:
        plan = plan_features(spec, list(pinned_view(world.dataset, version, world.pinned).columns or []), label)
    except RunRefused as err:
        draft.fail(err.reason, err.message)
        return None
    checks = plan_checks([(n, r) for n, r in world.requirements if r is not None], world.run.namespace,
                         world.test_datasets)
    if isinstance(checks, str):
        draft.wait("WaitingForDataset", checks)
        return None
    return _write_spec(spec, world.run, plan, version, checks)


def plan_checks(requirements: list[tuple[str, RequirementSpec]], namespace: str,
                datasets: Mapping[str, DatasetStatus | None]) -> Checks | None | str:
    """The slice criteria and behavioural tests the trainer must measure, each Dataset of a minimum-functionality
    test pinned to its current version (written into spec.json, so the pin outlives this pass); or what is awaited."""
    slices, tests = judge.checks_for(requirements)
    if not slices and not tests:
        return None
    pinned = []
    for check in tests:
        ref = (check.test.get("minimumFunctionality") or {}).get("datasetRef")
        if ref:
            ns = ref.get("namespace") or namespace
            found = datasets.get(f"{ns}/{ref['name']}")
            if found is None or not found.digest or not found.version:
                return f"Dataset {ref['name']} of behavioural test {check.test.get('name')} has no version yet"
            check = check.model_copy(update={"dataset": DatasetPin(namespace=ns, name=ref["name"], version=found.version,
                                                                   digest=found.digest.removeprefix("sha256:"))})
        pinned.append(check)
    return Checks(slices=slices, tests=pinned)


def test_dataset_refs(requirements: list[RequirementSpec], namespace: str) -> list[tuple[str, str]]:
    """(namespace, name) of every Dataset a minimum-functionality test reads: the handler looks them up."""
    return [(t.minimum_functionality.dataset_ref.namespace or namespace, t.minimum_functionality.dataset_ref.name)
            for spec in requirements for t in spec.tests or []
            if t.minimum_functionality is not None and t.minimum_functionality.dataset_ref is not None]


def _covers(result: TrainResult, checks: Checks | None) -> bool:
    if checks is None:
        return True
    have = {m.key for m in result.checks}
    return all(c.key in have for c in [*checks.slices, *checks.tests])


def _follow(draft: _Draft, spec: TrainingRunSpec, status: TrainingRunStatus, world: World) -> None:
    """The task in flight: wait for it, refit after the trials, retry it after a storage outage, or finish."""
    current = status.task or ""
    kind, state = task_kind(current), world.task or TaskState("Missing")
    if state.phase == "Running" and status.phase != "Running":
        draft.update["phase"] = "Running"
        draft.condition("Succeeded", "Unknown", "Running", f"{kind} task {current} is running")
    if not state.finished and state.phase != "Missing":
        return
    if kind == "trials":
        if state.phase == "Succeeded":
            fit = build_task(spec, world.run, "train", task_name("train", world.run.name, world.run.uid))
            draft.actions.append(SubmitTask(fit))
            draft.update.update(task=fit.name, phase="Running")
            draft.condition("Succeeded", "Unknown", "Refitting", f"{world.trial_count} trials done; refitting the best")
        elif state.storage_lost:
            _retry(draft, spec, status, world, kind)
        else:
            draft.fail("TrialFailed", failure_text(state, kind, current))
        return
    result = world.result
    if result is not None and result.status == "Succeeded":
        view = None
        version = next((v for v in (world.dataset.versions or []) if v.digest == status.dataset_digest), None) \
            if world.dataset else None
        if version is not None and world.dataset is not None:
            view = pinned_view(world.dataset, version, world.pinned)
        _finish(draft, spec, world, result, result.features, view)
        if world.cache_key:
            draft.actions.append(RecordCache(world.cache_key, {
                "run": world.run.name, "uid": world.run.uid, "result": result.to_wire(),
                "datasetDigest": status.dataset_digest}))
    elif result is not None:
        draft.fail(result.reason or "TrainingFailed", result.message)
    elif state.storage_lost:
        _retry(draft, spec, status, world, kind)
    elif not world.storage_ok:
        draft.wait("StorageUnavailable", f"S3 is unavailable: task {current} ended without a readable result; "
                                         f"retrying")
    else:
        draft.fail(camel_reason(state.reason or "TaskFailed"), failure_text(state, kind, current))


def _retry(draft: _Draft, spec: TrainingRunSpec, status: TrainingRunStatus, world: World, kind: str) -> None:
    """The task could not reach storage (exit code 75) and wrote nothing: run it again once storage answers."""
    current = status.task or ""
    if not world.storage_ok:
        draft.wait("StorageUnavailable", f"S3 is unavailable: {kind} task {current} could not reach it; it runs "
                                         f"again once S3 answers")
        return
    attempt = (status.retries or 0) + 1
    if attempt > MAX_STORAGE_RETRIES:
        draft.fail("StorageUnavailable", f"{MAX_STORAGE_RETRIES} tasks lost to storage outages (exit code 75); "
                                         f"create a new run to try again")
        return
    if not world.spec_written:
        write = _spec_again(draft, spec, status, world)
        if write is None:
            return
        draft.actions.append(write)
    again = build_task(spec, world.run, kind, task_name(kind, world.run.name, world.run.uid, f"retry{attempt}"),
                       world.trial_count)
    draft.actions.append(SubmitTask(again))
    message = f"{kind} task {current} could not reach storage (exit code 75); running it again as {again.name}"
    draft.update.update(task=again.name, retries=attempt)
    draft.condition("Succeeded", "Unknown", "Retrying", message)
    draft.condition("Ready", "Unknown", "Running", "training in progress")
    draft.event("Warning", "TaskRetried", message)


def _finish(draft: _Draft, spec: TrainingRunSpec, world: World, result: TrainResult, features: list[str] | None,
            view: DatasetStatus | None, announce: bool = True) -> None:
    requirements = [(name, req) for name, req in world.requirements if req is not None]
    kind = result.task or spec.task or ("classification" if "accuracy" in result.metrics else "regression")
    primary = judge.primary_metric([req for _, req in requirements], kind)
    draft.update.update(succeeded_status(result, primary))
    draft.update.update(phase="Succeeded", finishedAt=iso(draft.now), task=None)
    results = []
    for name, req in requirements:
        results += judge.evaluate(name, req, result.metrics, view, features, draft.now, checks=result.checks)
    if result.checks:
        draft.update["checks"] = [m.to_wire() for m in result.checks][:64]
    draft.update["requirements"] = judge.wire(results)
    message = result.message or "trained"
    draft.condition("Succeeded", "True", result.reason or "Trained", message)
    draft.condition("Ready", "True", "Succeeded", message)
    if requirements:
        met, why = judge.verdict(results)
        draft.condition("RequirementsMet", "True" if met else "False", "CriteriaMet" if met else "CriterionFailed", why)
    if world.export_wanted:
        draft.update["mlflow"] = {"state": "Pending"}  # exported by a later pass, once this status is written
    if announce:
        draft.event("Normal", "RunSucceeded", f"{draft.update['primaryMetric']}; model {str(result.model_digest)[:19]}…")


# -- the MLflow export of a succeeded run ----------------------------------------------------------------------

@dataclass(frozen=True)
class ExportAttempt:
    """How one export attempt (or the check before it) ended, as the handler observed it."""

    outcome: str  # Disabled, NotAllowed, Busy, Refused, Unreachable, Exported
    tracking_uri: str = ""  # as shown: without credentials
    experiment: str = ""
    error: str = ""
    experiment_id: str = ""
    run_id: str = ""
    model_uri: str = ""
    retry_in: float = 0.0  # seconds until the next attempt (Busy, Unreachable)


def fold_export(status: TrainingRunStatus, generation: int, attempt: ExportAttempt, now: datetime) -> Decision:
    """The status an export attempt leaves; the run stays Succeeded and Ready whatever it is."""
    draft = _Draft(status, generation, now)
    state = status.mlflow.to_wire() if status.mlflow else {"state": "Pending"}
    wire = {**state, "trackingUri": attempt.tracking_uri, "experiment": attempt.experiment}
    attempts = (status.mlflow.attempts if status.mlflow else 0) + 1
    where = f"MLflow at {attempt.tracking_uri}"
    if attempt.outcome == "Disabled":
        if status.mlflow is not None:  # turned off in the operator settings before it landed
            draft.update["mlflow"] = {**state, "state": "Disabled", "retryAt": None}
            draft.condition("MLflowExported", "False", "ExportDisabled", "MLflow export was turned off before it landed")
    elif attempt.outcome == "NotAllowed":
        message = (f"trackingUri {attempt.tracking_uri} is not the operator's MLflow server nor under "
                   f"MLOOP_MLFLOW_ALLOWED_URIS; not exported")
        draft.update["mlflow"] = {**wire, "state": "Failed", "retryAt": None}
        if draft.reason_of("MLflowExported") != "TrackingUriNotAllowed":
            draft.event("Warning", "TrackingUriNotAllowed", message)
        draft.condition("MLflowExported", "False", "TrackingUriNotAllowed", message)
    elif attempt.outcome == "Busy":  # not an attempt of this run's: not counted
        draft.update["mlflow"] = {**wire, "state": "Pending", "retryAt": iso(now + timedelta(seconds=attempt.retry_in))}
        draft.condition("MLflowExported", "False", "ExportPending", f"{where}: waiting for another export to finish")
    elif attempt.outcome == "Refused":
        message = f"{where}: not exported: {attempt.error[:300]}"
        draft.update["mlflow"] = {**wire, "state": "Failed", "attempts": attempts, "retryAt": None}
        draft.condition("MLflowExported", "False", "ExportFailed", message)
        draft.event("Warning", "ExportFailed", message)
    elif attempt.outcome == "Unreachable":
        retry = iso(now + timedelta(seconds=attempt.retry_in))
        message = f"{where}: {attempt.error}; attempt {attempts}, next at {retry}"
        draft.update["mlflow"] = {**wire, "state": "Pending", "attempts": attempts, "retryAt": retry}
        if draft.reason_of("MLflowExported") != "ExportPending":
            draft.event("Warning", "ExportPending", message)
        draft.condition("MLflowExported", "False", "ExportPending", message)
    else:
        draft.update["mlflow"] = {**wire, "state": "Exported", "attempts": attempts, "retryAt": None,
                                  "experimentId": attempt.experiment_id, "runId": attempt.run_id,
                                  "modelUri": attempt.model_uri, "exportedAt": iso(now)}
        message = f"MLflow run {attempt.run_id} in experiment {attempt.experiment} at {attempt.tracking_uri}"
        draft.condition("MLflowExported", "True", "Exported", message)
        draft.event("Normal", "Exported", f"{message}; model {attempt.model_uri}")
    return draft.decision()
