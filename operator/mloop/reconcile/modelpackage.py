"""ModelPackage decisions: wait for the run and requirements, package, fold the task's result, gate the stage,
serve. Pure: the handler gathers the world into one frozen value and carries the actions out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mloop.api.common import CheckMeasurement, CriterionResult
from mloop.api.dataset import DatasetStatus
from mloop.api.modelpackage import ModelPackageSpec, ModelPackageStatus, ShadowStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.runtime import RuntimeUnavailable, choose
from mloop.api.tasks import PackageResult, RequirementReport, TaskState, task_name
from mloop.reconcile import live as live_judge
from mloop.reconcile import promotion
from mloop.reconcile import requirements as judge
from mloop.reconcile.outcome import Decision, Draft, Event, dump_conditions

SERVING_STAGES = ("Staging", "Production")
MAX_STORAGE_RETRIES = 20  # a package task that exits 75 this often in a row is failed, not retried again


@dataclass(frozen=True)
class PackageId:
    namespace: str
    name: str
    uid: str
    generation: int


@dataclass(frozen=True)
class RunView:
    """The referenced TrainingRun as the index shows it."""

    name: str
    uid: str
    phase: str | None = None
    failure: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    model_digest: str | None = None
    checks: tuple[CheckMeasurement, ...] = ()  # slice metrics and behavioural tests its trainer measured
    model_uri: str | None = None
    dataset_digest: str | None = None  # the version the run pinned: data criteria are judged on it
    requirement_refs: tuple[str, ...] = ()
    executor: str | None = None


@dataclass(frozen=True)
class SiblingView:
    """Another package of the same model, with the metrics of its run (for requireImprovement)."""

    name: str
    version: int | None
    desired: str
    granted: str | None
    eligible: bool  # packaged and no failed criterion
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ShadowTargetView:
    """A candidate whose shadow server is ready and names this package as the Production it shadows."""

    package: str
    url: str
    sampling_rate: float
    columns: tuple[str, ...] = ()  # the inputs it is sent; empty: all of them

    def to_wire(self) -> dict[str, Any]:
        return {"package": self.package, "url": self.url, "samplingRate": self.sampling_rate,
                **({"columns": list(self.columns)} if self.columns else {})}


NUMERIC_TYPES = ("integer", "float", "boolean")  # what the server sends as numbers (serving/validate)


@dataclass(frozen=True)
class ShadowFit:
    """How a candidate's signature fits the requests the Production server takes: the columns to forward, or why
    it cannot shadow."""

    columns: tuple[str, ...] = ()
    refusal: str | None = None


def shadow_fit(candidate: list[Mapping[str, Any]], production: list[Mapping[str, Any]], holder: str) -> ShadowFit:
    """A shadow gets only what Production's callers send: each of its inputs must be one of Production's, numeric
    on both sides or on neither. Production's extra columns are not forwarded (the candidate's server refuses
    unknown columns)."""
    theirs = {i["name"]: i for i in production}
    for mine in candidate:
        name, found = mine["name"], theirs.get(mine["name"])
        if found is None:
            return ShadowFit(refusal=f"input column {name!r} is not in the requests {holder} takes "
                                     f"({', '.join(theirs)}): a shadow is sent only what Production's callers send")
        if (mine["type"] in NUMERIC_TYPES) != (found["type"] in NUMERIC_TYPES):
            return ShadowFit(refusal=f"input column {name!r} is {mine['type']} here and {found['type']} in {holder}")
    return ShadowFit(columns=tuple(i["name"] for i in candidate))


@dataclass(frozen=True)
class LocalServer:
    """A local model server process for one stage, as its state file and a readiness probe show it."""

    endpoint: str
    digest: str
    alive: bool
    ready: bool = False
    runtime: tuple[str, str] | None = None  # (runtime, why) as the ready server reports it
    shadows: tuple[ShadowTargetView, ...] = ()  # the shadow targets it was last told
    version: int = 0  # of the package it serves (0: not recorded)


@dataclass(frozen=True)
class ClusterServer:
    """The Deployment of one stage on the cluster (`exists` False when there is none)."""

    name: str
    url: str
    exists: bool = False
    resource_version: str | None = None  # deleting is on condition of it: a newer package may have taken it over
    owner_uid: str | None = None
    owner_package: str | None = None  # the owning package's name: a newer version's server is never rolled back
    digest: str | None = None
    available: int = 0


@dataclass(frozen=True)
class World:
    package: PackageId
    run: RunView | None
    requirements: Mapping[str, RequirementSpec | None]  # by name; None: referenced but not there
    dataset: DatasetStatus | None  # the version the run pinned
    siblings: tuple[SiblingView, ...] = ()
    executor: str = "local"
    task: TaskState | None = None  # of status.task
    result: PackageResult | None = None  # of status.task, once it finished
    storage_ok: bool = True
    claimed_version: int | None = None
    local: Mapping[str, LocalServer] = field(default_factory=dict)  # by stage
    cluster: Mapping[str, ClusterServer] = field(default_factory=dict)  # by stage
    lower_is_better: frozenset[str] = frozenset()
    shadow_targets: tuple[ShadowTargetView, ...] = ()  # for the Production package: who shadows it
    shadow_local: LocalServer | None = None  # this package's own shadow server (local executor)
    shadow_cluster: ClusterServer | None = None  # this package's own shadow Deployment
    live: live_judge.LiveScore | None = None  # this package against Production on labelled live rows
    shadow_fit: ShadowFit | None = None  # this package's signature against Production's (None: not read this pass)


@dataclass(frozen=True)
class ClaimVersion:
    """Claim the lowest free version of the model; `taken` are versions siblings already show."""

    taken: frozenset[int]


@dataclass(frozen=True)
class WriteSpec:
    task: str
    version: int
    requirements: tuple[RequirementReport, ...]


@dataclass(frozen=True)
class SubmitTask:
    task: str


@dataclass(frozen=True)
class ArchivePackage:
    name: str
    message: str


@dataclass(frozen=True)
class EnsureLocalServer:
    stage: str
    uri: str
    digest: str
    sampling: float
    shadows: tuple[ShadowTargetView, ...] = ()
    version: int = 0  # the slot is never rolled back from a newer version (a pass on a stale index of siblings)


@dataclass(frozen=True)
class StopLocalServer:
    stage: str
    digest: str


@dataclass(frozen=True)
class ApplyServer:
    stage: str
    uri: str
    digest: str
    replicas: int
    sampling: float
    resources: Mapping[str, Any] | None
    runtime: str = "auto"  # auto, onnx or sklearn: which model file the server runs
    shadows: tuple[ShadowTargetView, ...] = ()


@dataclass(frozen=True)
class RecordLiveScore:
    """Store the live comparison (before the status that shows it)."""

    score: live_judge.LiveScore
    candidate_version: int


@dataclass(frozen=True)
class DeleteServer:
    stage: str
    resource_version: str | None




class _Pass(Draft):
    """The status patch, conditions, events and actions one decision builds."""

    main = "Packaged"


def invalid_spec(status: ModelPackageStatus, message: str, generation: int, now: datetime) -> Decision:
    p = _Pass(status, generation, now)
    p.fail("InvalidSpec", message)
    return p.decision()


def package_task(name: str, uid: str, attempt: int) -> str:
    """The package task of one attempt: the same attempt always gets the same name (submit is idempotent)."""
    return task_name("package", name, uid) if attempt == 0 else task_name("package", name, uid, attempt)


def attempt_of(task: str, name: str, uid: str) -> int:
    """Which attempt a task name is: the count lives in the name, so no status field has to carry it."""
    return next((n for n in range(MAX_STORAGE_RETRIES + 1) if package_task(name, uid, n) == task), MAX_STORAGE_RETRIES)


def in_flight(status: Mapping[str, Any]) -> bool:
    """Whether a package needs its timer: a task running, storage awaited, a local server starting or to keep
    alive."""
    reasons = {c.get("type"): c.get("reason") for c in status.get("conditions") or []}
    local_server = str(status.get("endpoint") or "").startswith("http://127.0.0.1:") or reasons.get("Serving") == "Starting"
    shadowing = (status.get("shadow") or {}).get("state") in ("Starting", "Shadowing")  # labels to score come from S3
    return bool(status.get("task")) or reasons.get("Packaged") == "StorageUnavailable" or local_server or shadowing


def decide(spec: ModelPackageSpec, status: ModelPackageStatus, world: World, now: datetime) -> Decision:
    me = world.package
    p = _Pass(status, me.generation, now)
    if status.phase == "Failed" and status.observed_generation == me.generation:
        return Decision({})
    ref, run = spec.training_run_ref, world.run
    if run is None:
        p.wait("WaitingForTrainingRun", f"TrainingRun {ref.name} does not exist yet")
        return p.decision()
    if run.phase == "Failed":
        p.fail("TrainingRunFailed", f"TrainingRun {ref.name} failed: {run.failure or 'see its conditions'}")
        return p.decision()
    if run.phase != "Succeeded":
        p.wait("WaitingForTrainingRun", f"TrainingRun {ref.name} is {run.phase or 'Pending'}")
        return p.decision()
    names = [r.name for r in spec.requirement_refs] if spec.requirement_refs else list(run.requirement_refs)
    missing = next((n for n in names if world.requirements.get(n) is None), None)
    if missing is not None:
        p.wait("WaitingForRequirement", f"Requirement {missing} does not exist yet")
        return p.decision()
    reqs = [(n, world.requirements[n]) for n in names]
    results: list[CriterionResult] = []
    for name, req in reqs:
        assert req is not None
        results += judge.evaluate(name, req, dict(run.metrics), world.dataset, None, now, checks=list(run.checks))
    if spec.require_improvement and spec.stage == "Production":
        results.append(improvement(run.metrics, [r for _, r in reqs if r is not None], reqs[0][0] if reqs else "production",
                                   world.siblings, world.lower_is_better))
    results += _live_criteria(spec, status, world, reqs, run.metrics)
    p.update["requirements"] = judge.wire(results)
    p.update["trainingRun"] = ref.name
    primary = judge.primary_of([r for _, r in reqs if r], run.metrics)
    p.update["primaryMetric"] = judge.primary_value(run.metrics, primary)
    if status.phase != "Packaged":
        if not _package(p, spec, world, reqs, results):
            return p.decision()
    _promote(p, spec, world, results)
    _serve(p, spec, world)
    _shadow(p, spec, world, reqs, run.metrics)
    return p.decision()


def _package(p: _Pass, spec: ModelPackageSpec, world: World, reqs: list[tuple[str, RequirementSpec | None]],
             results: list[CriterionResult]) -> bool:
    """Start, follow or fold the package task. True once the package is packaged (in this pass)."""
    me, status = world.package, p.status
    if status.task:
        if world.result is not None:
            return _fold(p, spec, world.result)
        state = world.task
        if state is None or (not state.finished and state.phase != "Missing"):
            return False
        if state.phase == "Missing":  # submitted but gone (an executor's record lost): the same name again
            p.actions.append(SubmitTask(status.task))
            return False
        if not world.storage_ok:
            p.wait("StorageUnavailable", "S3 is unavailable; packaging resumes when it is back")
            return False
        if state.storage_lost:
            attempt = attempt_of(status.task, me.name, me.uid) + 1
            if attempt > MAX_STORAGE_RETRIES:
                p.fail("StorageUnavailable", f"package task {status.task} could not reach S3 {attempt} times in a row; "
                                             "edit the ModelPackage to try again")
                return False
            _start(p, spec, status.version or 0, package_task(me.name, me.uid, attempt), reqs, results,
                   f"S3 was unavailable to task {status.task}: retrying as {package_task(me.name, me.uid, attempt)}")
            return False
        p.fail("PackagingFailed", f"package task {status.task} failed: {state.reason} {state.message}".strip()[:1000])
        return False
    if not world.storage_ok:
        p.wait("StorageUnavailable", "S3 is unavailable; packaging starts when it is back")
        return False
    version = status.version or world.claimed_version
    if version is None:
        taken = frozenset(s.version for s in world.siblings if s.version)
        p.actions.append(ClaimVersion(taken))
        return False
    _start(p, spec, version, package_task(me.name, me.uid, 0), reqs, results,
           f"packaging {spec.model} version {version}")
    return False


def _start(p: _Pass, spec: ModelPackageSpec, version: int, task: str, reqs: list[tuple[str, RequirementSpec | None]],
           results: list[CriterionResult], message: str) -> None:
    reports = tuple(RequirementReport(name=n, spec=r.to_wire() if r else {},
                                      results=[x.to_wire() for x in results if x.requirement == n]) for n, r in reqs)
    p.actions += [WriteSpec(task, version, reports), SubmitTask(task)]
    p.update.update(phase="Packaging", task=task, version=version)
    if p.reason_of("Packaged") != "Packaging" or p.status.task != task:
        p.event("Normal", "Packaging", message)
    p.condition("Packaged", "Unknown", "Packaging", message)
    p.condition("Ready", "Unknown", "Packaging", "packaging in progress")


def _fold(p: _Pass, spec: ModelPackageSpec, result: PackageResult) -> bool:
    if result.status != "Succeeded" or not result.uri or not result.digest:
        p.fail(result.reason or "PackagingFailed", result.message[:1000])
        return False
    p.update.update(phase="Packaged", task=None, uri=result.uri, digest=result.digest, formats=list(result.formats),
                    onnxParity=result.onnx_parity)
    p.condition("Packaged", "True", "Packaged", result.message)
    if "onnx" in (spec.formats or []):
        has_onnx = "onnx" in result.formats
        p.condition("OnnxAvailable", "True" if has_onnx else "False", "ParityChecked" if has_onnx else "OnnxUnavailable",
                    result.onnx[:1000])
    p.event("Normal", "Packaged", f"{spec.model} version {p.status.version}: {result.message}")
    p.status = p.status.model_copy(update={"phase": "Packaged", "uri": result.uri, "digest": result.digest,
                                           "formats": list(result.formats), "onnx_parity": result.onnx_parity})
    return True


def improvement(metrics: Mapping[str, float], reqs: list[RequirementSpec], requirement: str,
                siblings: tuple[SiblingView, ...], lower_is_better: frozenset[str]) -> CriterionResult:
    """Does this package beat the model's current Production package on the primary metric?"""
    metric = judge.primary_of(reqs, metrics)
    mine = metrics.get(metric)
    criterion = f"beats-production:{metric}"
    holder = next((s for s in siblings if s.granted == "Production"), None)
    if holder is None:
        return CriterionResult(requirement=requirement, criterion=criterion, passed=True, value=mine,
                               message="no package is in Production yet")
    theirs = holder.metrics.get(metric)
    if mine is None or theirs is None:
        return CriterionResult(requirement=requirement, criterion=criterion, passed=None, message="not measured")
    lower = metric in lower_is_better
    better = mine < theirs if lower else mine > theirs
    op = "<" if lower else ">"
    return CriterionResult(requirement=requirement, criterion=criterion, passed=better, value=round(mine, 6),
                           threshold=round(theirs, 6), operator=op,
                           message=f"{mine:.4g} {op if better else ('>=' if lower else '<=')} {theirs:.4g} of "
                                   f"{holder.name} in Production")


def _promote(p: _Pass, spec: ModelPackageSpec, world: World, results: list[CriterionResult]) -> None:
    version = p.status.version or 0
    siblings = [promotion.Sibling(s.name, s.version, s.desired, s.granted, s.eligible)
                for s in world.siblings if s.version]
    decision = promotion.decide(spec.stage, version, results, siblings, p.status.stage)
    before = p.status.stage
    p.update["stage"] = decision.stage
    refused_before = p.reason_of("Promoted") == "CriterionFailed"
    p.condition("Promoted", decision.promoted, decision.reason, decision.message)
    p.condition("Ready", "True", "Packaged", f"version {version}, stage {decision.stage}")
    if decision.stage != before:
        if decision.promoted == "True":
            p.event("Normal", "PromotionGranted", f"{decision.stage}: {decision.message}")
        elif decision.reason == "CriterionFailed":
            p.event("Warning", "PromotionRefused", decision.message)
        elif decision.stage == "Archived":
            p.event("Normal", "Archived", decision.message)
    elif decision.reason == "CriterionFailed" and not refused_before:
        p.event("Warning", "PromotionRefused", decision.message)
    for name in decision.archive:
        p.actions.append(ArchivePackage(name, f"superseded by {world.package.name} (version {version}) in Production"))


def archived(status: ModelPackageStatus, generation: int, message: str, now: datetime) -> Decision:
    """What an older package's status becomes when a newer one takes Production from it: nothing if it no longer
    holds Production (it archived itself on seeing the newer one first), so the transition is announced once."""
    if status.stage != "Production":
        return Decision({})
    p = _Pass(status, generation, now)
    p.condition("Promoted", "False", "Superseded", message)
    return Decision({"stage": "Archived", "conditions": dump_conditions(p.conditions)}, (Event("Normal", "Archived", message),))


def _runtime(requested: str, status: ModelPackageStatus) -> tuple[tuple[str, str] | None, str | None]:
    """((runtime, why), None) by the rule the server applies to its manifest, or (None, why none can serve)."""
    try:
        return choose(requested, "onnx" in (status.formats or []), status.onnx_parity), None
    except RuntimeUnavailable as err:
        return None, str(err)


def _serving(p: _Pass, runtime: tuple[str, str] | None) -> None:
    """status.serving, with an event when the runtime that serves changes."""
    if runtime is None:
        p.update["serving"] = None
        return
    name, why = runtime
    p.update["serving"] = {"runtime": name, "reason": why[:1024]}
    if p.status.serving is None or p.status.serving.runtime != name:
        p.event("Normal", "ServingRuntime", f"version {p.status.version} is served by {name}: {why}"[:1000])


def _superseded(p: _Pass, message: str) -> None:
    """A newer package took this stage's server before the index showed it the stage (its status is written first):
    rolling back would serve an older version until the newer one's pass rolled it again. Nothing is started."""
    p.condition("Serving", "False", "Superseded", message)
    p.update["serving"] = None


def _unpublish(p: _Pass, endpoint: str, reason: str, message: str) -> None:
    """A server this package leaves is announced by the pass whose write takes its endpoint out of the status; later
    passes that still see it (a local server flushes for seconds before it exits, an index lags a delete) stop it
    again, silently. A branch that serves another stage publishes that endpoint instead."""
    if p.status.endpoint == endpoint:
        p.event("Normal", reason, message)
        p.update["endpoint"] = None


def _newer_owner(world: World, server: ClusterServer, version: int | None) -> SiblingView | None:
    """The sibling that owns this stage's Deployment, when its version is newer than this package's."""
    if not server.exists or server.owner_uid in (None, world.package.uid):
        return None
    owner = next((s for s in world.siblings if s.name == server.owner_package), None)
    return owner if owner is not None and (owner.version or 0) > (version or 0) else None


def _serve(p: _Pass, spec: ModelPackageSpec, world: World) -> None:
    """Run the server of the granted stage (local process or Deployment); stop or delete what the package left."""
    stage = p.update.get("stage", p.status.stage)
    uri, digest, version = p.status.uri or "", p.status.digest or "", p.status.version
    serve = spec.serve
    wanted = stage if serve is not None and serve.enabled and stage in SERVING_STAGES and digest else None
    before = p.reason_of("Serving")
    runtime, unavailable = _runtime(serve.runtime, p.status) if wanted and serve is not None else (None, None)
    if unavailable:  # the server would refuse to start: none is started, and the condition says why
        wanted = None
    targets = world.shadow_targets if wanted == "Production" else ()
    told = [t.to_wire() for t in targets] or None
    if told != ([t.to_wire() for t in p.status.shadow_targets] if p.status.shadow_targets else None):
        p.event("Normal", "ShadowTargets", f"the {wanted} server sends sampled requests to "
                f"{', '.join(t.package for t in targets)}" if targets else "no shadow targets")
    p.update["shadowTargets"] = told
    if world.executor == "local":
        for st, server in world.local.items():
            if st != wanted and server.digest == digest and server.alive:
                p.actions.append(StopLocalServer(st, digest))
                _unpublish(p, server.endpoint, "ServerStopped", f"{st} server for {spec.model} stopped")
        if wanted and serve is not None:
            server = world.local.get(wanted)
            if server is not None and server.alive and server.version > (version or 0):
                _superseded(p, f"the {wanted} server serves version {server.version}")
                return
            if server is None or not server.alive or server.digest != digest:
                # Started after the status write, so a pass on a stale body never starts one; the timer (Starting)
                # comes back for the endpoint (a new server's port is chosen when it starts; a stage keeps its port).
                what = "started" if server is None else "rolled" if server.alive else "restarted"
                p.actions.append(EnsureLocalServer(wanted, uri, digest, serve.sampling_rate, targets, version or 0))
                p.event("Normal", f"Server{what.capitalize()}", f"{wanted} server for {spec.model} {what} "
                                                               f"(version {version})")
                if server is not None:
                    p.update["endpoint"] = server.endpoint
                p.condition("Serving", "Unknown", "Starting", f"starting the {wanted} server for version {version}")
                p.update["serving"] = None
                return
            if server.shadows != targets:  # the running server re-reads its targets (no restart)
                p.actions.append(EnsureLocalServer(wanted, uri, digest, serve.sampling_rate, targets, version or 0))
            p.update["endpoint"] = server.endpoint
            _serving(p, server.runtime if server.ready else None)
            if server.ready:
                p.condition("Serving", "True", "Ready", f"{wanted} endpoint {server.endpoint} is ready")
            else:
                p.condition("Serving", "Unknown", "Starting", f"waiting for {server.endpoint} to become ready")
            return
    else:
        for st, server in world.cluster.items():
            if st != wanted and server.exists and server.owner_uid == world.package.uid:
                p.actions.append(DeleteServer(st, server.resource_version))
                _unpublish(p, server.url, "ServerDeleted", f"{st} Deployment and Service for {spec.model} deleted")
        if wanted and serve is not None:
            server = world.cluster[wanted]
            newer = _newer_owner(world, server, version)
            if newer is not None:
                _superseded(p, f"Deployment {server.name} serves version {newer.version} of {newer.name}")
                return
            resources = serve.resources.to_wire() if serve.resources else None
            p.actions.append(ApplyServer(wanted, uri, digest, serve.replicas, serve.sampling_rate, resources or None,
                                         serve.runtime, targets))
            name = server.name
            if not server.exists:
                p.event("Normal", "ServerStarted", f"Deployment {name} created for version {version}")
            elif server.digest != digest:
                p.event("Normal", "ServerRolled", f"Deployment {name} rolls to version {version}")
            if not (server.exists and server.digest == digest and server.owner_uid == world.package.uid):
                # The endpoint is published once the Deployment is this package's (its event brings the next pass).
                p.condition("Serving", "Unknown", "Rolling", f"Deployment {name} is being applied for version {version}")
                return
            p.update["endpoint"] = server.url
            _serving(p, runtime)
            if server.available:
                p.condition("Serving", "True", "Available", f"Deployment {name}: {server.available} replica(s) available")
            else:
                p.condition("Serving", "Unknown", "Rolling", f"Deployment {name} has no available replica yet")
            return
    p.update["endpoint"] = None
    p.update["serving"] = None
    if unavailable:
        if before != "RuntimeUnavailable":
            p.event("Warning", "RuntimeUnavailable", unavailable)
        p.condition("Serving", "False", "RuntimeUnavailable", unavailable)
    elif before not in (None, "NotServing"):
        p.condition("Serving", "False", "NotServing",
                    f"stage {stage}; serving needs spec.serve and Staging or Production")



def _wire(shadow: ShadowStatus) -> dict[str, Any]:
    """Every field, nulls included: status is written as a merge patch, and a null removes what is gone."""
    return shadow.model_dump(mode="json", by_alias=True)


def shadow_slot(version: int) -> str:
    """The server name of a package's shadow: one per package version, beside the stages' servers."""
    return f"shadow-{version}"


def live_metric(reqs: list[RequirementSpec], metrics: Mapping[str, float]) -> str:
    """The metric shadows are scored on: the first live criterion's, else the primary metric."""
    live = next((r.live for r in reqs if r.live is not None), None)
    if live is not None and live.metric:
        return live.metric
    return judge.primary_of(reqs, metrics)


def _production(world: World) -> SiblingView | None:
    return next((s for s in world.siblings if s.granted == "Production"), None)


def _last_score(status: ModelPackageStatus, world: World) -> live_judge.LiveScore | None:
    """This pass's score, else the last one the status shows (kept once shadowing stops)."""
    if world.live is not None:
        return world.live
    sh = status.shadow
    if sh is None or not sh.production or not sh.production_version or not sh.metric:
        return None
    return live_judge.LiveScore(sh.production, sh.production_version, sh.metric, sh.rows, sh.candidate_value,
                                sh.production_value, sh.record)


def _live_criteria(spec: ModelPackageSpec, status: ModelPackageStatus, world: World,
                   reqs: list[tuple[str, RequirementSpec | None]], metrics: Mapping[str, float]) -> list[CriterionResult]:
    holder = _production(world)
    metric = live_metric([r for _, r in reqs if r is not None], metrics)
    score = _last_score(status, world)
    if score is not None and score.metric != metric:
        score = None
    return [live_judge.criterion(name, req.live, metric, spec.stage, status.stage == "Production",
                                 holder.name if holder else None, score, metric in world.lower_is_better)
            for name, req in reqs if req is not None and req.live is not None]


def _shadow(p: _Pass, spec: ModelPackageSpec, world: World, reqs: list[tuple[str, RequirementSpec | None]],
            metrics: Mapping[str, float]) -> None:
    """A candidate with spec.shadow gets a server of its own while another package holds Production; the
    Production package's pass (woken by this status) points its server at it once it is ready. A candidate whose
    signature needs an input Production's requests lack is refused (the Shadowing condition says which)."""
    granted = p.update.get("stage", p.status.stage)
    version, uri, digest = p.status.version or 0, p.status.uri or "", p.status.digest or ""
    holder = _production(world)
    before = p.status.shadow
    slot = shadow_slot(version)
    local, cluster = world.shadow_local, world.shadow_cluster

    def stop_server() -> None:
        if local is not None and local.alive and local.digest == digest:
            p.actions.append(StopLocalServer(slot, digest))
        if cluster is not None and cluster.exists and cluster.owner_uid == world.package.uid:
            p.actions.append(DeleteServer(slot, cluster.resource_version))

    if spec.shadow is None or not digest or granted == "Production" or holder is None or not holder.version:
        stop_server()
        if before is not None and before.state != "Stopped":
            why = ("spec.shadow removed" if spec.shadow is None else "this package holds Production"
                   if granted == "Production" else "no package is in Production")
            last: dict[str, Any] = {}
            score = world.live
            if score is not None and score.production == before.production:  # the score that won it Production
                last = {"rows": score.rows, "candidate_value": score.candidate,
                        "production_value": score.production_value, "record": score.record}
                if (before.rows, before.candidate_value, before.production_value) != (
                        score.rows, score.candidate, score.production_value):
                    p.actions.append(RecordLiveScore(score, version))
            p.update["shadow"] = _wire(before.model_copy(update={"state": "Stopped", "endpoint": None, **last}))
            p.event("Normal", "ShadowStopped", f"shadow server for version {version} stopped: {why}")
            p.condition("Shadowing", "False", "Stopped", f"shadow server stopped: {why}")
        return
    metric = live_metric([r for _, r in reqs if r is not None], metrics)
    same_holder = before is not None and before.production == holder.name and before.production_version == holder.version
    fit = world.shadow_fit
    if fit is None and same_holder and before is not None and before.state == "Refused":
        stop_server()
        return  # judged on these two signatures already (they are write-once)
    if fit is not None and fit.refusal:
        stop_server()
        message = f"cannot shadow {holder.name} (version {holder.version}): {fit.refusal}"[:1000]
        if not (same_holder and before is not None and before.state == "Refused"):
            p.event("Warning", "ShadowRefused", message)
        p.update["shadow"] = _wire(ShadowStatus.model_validate({
            "state": "Refused", "production": holder.name, "productionVersion": holder.version, "metric": metric}))
        p.condition("Shadowing", "False", "SignatureMismatch", message)
        return
    columns = list(fit.columns) if fit is not None else (before.columns if same_holder and before is not None else None)
    if columns is None:  # signatures not compared yet (the package was packaged in this pass, or S3 is away)
        stop_server()
        start = {"state": "Starting", "endpoint": None, "production": holder.name,
                 "productionVersion": holder.version, "metric": metric}
        p.update["shadow"] = _wire(before.model_copy(update={**start, "production_version": holder.version})
                                   if same_holder and before is not None else ShadowStatus.model_validate(start))
        p.condition("Shadowing", "Unknown", "Starting", f"comparing this package's signature with {holder.name}'s")
        return
    endpoint = None
    if world.executor == "local":
        if local is None or not local.alive or local.digest != digest:
            p.actions.append(EnsureLocalServer(slot, uri, digest, 1.0))
        elif local.ready:
            endpoint = local.endpoint
    else:
        serve = spec.serve
        resources = serve.resources.to_wire() if serve is not None and serve.resources else None
        p.actions.append(ApplyServer(slot, uri, digest, 1, 1.0, resources or None,
                                     serve.runtime if serve is not None else "auto"))
        if (cluster is not None and cluster.exists and cluster.digest == digest
                and cluster.owner_uid == world.package.uid and cluster.available):
            endpoint = cluster.url
    shadow: dict[str, Any] = {"state": "Shadowing" if endpoint else "Starting", "endpoint": endpoint,
                              "production": holder.name, "productionVersion": holder.version, "metric": metric,
                              "columns": columns}
    score = world.live if world.live is not None and world.live.production == holder.name else None
    kept = before if before is not None and before.production == holder.name and before.metric == metric else None
    if score is not None:
        shadow.update(rows=score.rows, candidateValue=score.candidate, productionValue=score.production_value,
                      record=score.record)
        if kept is None or (kept.rows, kept.candidate_value, kept.production_value) != (
                score.rows, score.candidate, score.production_value):
            p.actions.append(RecordLiveScore(score, version))
    elif kept is not None:
        shadow.update(rows=kept.rows, candidateValue=kept.candidate_value, productionValue=kept.production_value,
                      record=kept.record)
    p.update["shadow"] = _wire(ShadowStatus.model_validate(shadow))
    sent = f"{spec.shadow.sampling_rate:.0%} of {holder.name}'s requests" + (
        f" (columns {', '.join(columns)})" if columns else "")
    if endpoint:
        p.condition("Shadowing", "True", "Shadowing", f"shadow server {endpoint} receives {sent}"[:1000])
        if before is None or before.endpoint != endpoint:
            p.event("Normal", "ShadowStarted", f"shadow server {endpoint} for version {version} receives {sent}"[:1000])
    else:
        p.condition("Shadowing", "Unknown", "Starting", f"starting the shadow server for version {version}")
