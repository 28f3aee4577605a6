"""ModelPackage handlers: package a succeeded run as the next version of a model, then gate its stage."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from mloop.api.common import CriterionResult, set_condition
from mloop.api.dataset import ColumnSpec, DatasetStatus
from mloop.api.kinds import API_VERSION, GROUP, VERSION
from mloop.api.modelpackage import ModelPackageSpec, ModelPackageStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.trainingrun import TrainingRunSpec, TrainingRunStatus
from mloop.config import get_settings
from mloop.executors.base import Task, task_name
from mloop.executors.factory import executor_for
from mloop.handlers.common import ReconcilePass
from mloop.handlers.metrics import measured
from mloop.k8s.client import custom_objects, get_object
from mloop.reconcile import promotion
from mloop.reconcile import requirements as judge
from mloop.reconcile.outcome import Event, describe_validation_error, dump_conditions
from mloop.builders.server import build_deployment, build_service, cluster_url
from mloop.serving.local import LocalServers, ready
from mloop.training.metrics import LOWER_IS_BETTER
from mloop.storage.artifacts import AlreadyExists, StorageUnavailable, Store, operator_store
from mloop.storage.layout import task_prefix

MAX_VERSIONS = 10_000


def package_prefix(namespace: str, model: str, version: int) -> str:
    return f"packages/{namespace}/{model}/{version}/"


class Pkg(ReconcilePass):
    """One reconcile pass over one ModelPackage."""

    main = "Packaged"

    def __init__(self, body: kopf.Body, patch: kopf.Patch):
        super().__init__(body, ModelPackageStatus)


def _claim_version(store: Store, pkg: Pkg, model: str) -> int:
    """The next version of the model: a write-once claim object decides races between packages."""
    for version in range(1, MAX_VERSIONS):
        key = package_prefix(pkg.namespace, model, version) + "claim.json"
        try:
            store.put_json(key, {"package": pkg.name, "uid": pkg.uid})
            return version
        except AlreadyExists:
            if store.get_json(key).get("uid") == pkg.uid:
                return version
    raise RuntimeError(f"model {model} has no free version number")


def _requirements(pkg: Pkg, refs: list[Any]) -> list[tuple[str, RequirementSpec]] | None:
    found = []
    for ref in refs:
        obj = get_object("requirements", ref.get("namespace") or pkg.namespace, ref["name"])
        if obj is None:
            pkg.wait("WaitingForRequirement", f"Requirement {ref['name']} does not exist yet")
            return None
        found.append((ref["name"], RequirementSpec.model_validate(dict(obj["spec"]))))
    return found


@measured("ModelPackage")
def reconcile_package(body: kopf.Body, patch: kopf.Patch) -> None:
    pkg = Pkg(body, patch)
    try:
        spec = ModelPackageSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        pkg.fail("InvalidSpec", describe_validation_error(err))
        pkg.commit()
        return
    try:
        _reconcile(pkg, spec)
    except StorageUnavailable as err:
        pkg.wait("StorageUnavailable", f"{err}; retrying")
    pkg.commit()


def _reconcile(pkg: Pkg, spec: ModelPackageSpec) -> None:
    if pkg.status.phase == "Failed" and pkg.status.observed_generation == pkg.generation:
        return
    ref = spec.training_run_ref
    run_obj = get_object("trainingruns", ref.namespace or pkg.namespace, ref.name)
    if run_obj is None:
        pkg.wait("WaitingForTrainingRun", f"TrainingRun {ref.name} does not exist yet")
        return
    run = TrainingRunStatus.model_validate(dict(run_obj.get("status") or {}))
    if run.phase == "Failed":
        pkg.fail("TrainingRunFailed", f"TrainingRun {ref.name} failed: {run.failure or 'see its conditions'}")
        return
    if run.phase != "Succeeded":
        pkg.wait("WaitingForTrainingRun", f"TrainingRun {ref.name} is {run.phase or 'Pending'}")
        return
    run_spec = TrainingRunSpec.model_validate(dict(run_obj["spec"]))
    refs = [r.to_wire() for r in (spec.requirement_refs or run_spec.requirement_refs or [])]
    reqs = _requirements(pkg, refs)
    if reqs is None:
        return
    dataset_obj = get_object("datasets", run_spec.dataset_ref.namespace or pkg.namespace, run_spec.dataset_ref.name)
    dataset = DatasetStatus.model_validate(dict((dataset_obj or {}).get("status") or {}))
    store = operator_store()
    results: list[CriterionResult] = []
    for name, req in reqs:
        results += judge.evaluate(name, req, run.metrics, dataset, None, pkg.now)
    if spec.require_improvement and spec.stage == "Production":
        results.append(_improvement(pkg, spec, run, [r for _, r in reqs], reqs[0][0] if reqs else "production"))
    pkg.update["requirements"] = judge.wire(results)
    pkg.update["trainingRun"] = ref.name
    if pkg.status.phase != "Packaged":
        _package(pkg, spec, run_obj, run, reqs, results, dataset_obj, store)
    else:
        _promote(pkg, spec, results)
    if pkg.status.phase == "Packaged":
        _serve(pkg, spec, run_obj["spec"].get("executor") or get_settings().executor)


def _improvement(pkg: Pkg, spec: ModelPackageSpec, run: TrainingRunStatus, reqs: list[RequirementSpec],
                 requirement: str) -> CriterionResult:
    """Does this package beat the model's current Production package on the primary metric?"""
    task = "regression" if "r2" in (run.metrics or {}) else "classification"
    metric = judge.primary_metric(reqs, task)
    mine = (run.metrics or {}).get(metric)
    items = custom_objects().list_namespaced_custom_object(GROUP, VERSION, pkg.namespace, "modelpackages")["items"]
    holder = next((i for i in items if i["spec"].get("model") == spec.model and i["metadata"]["uid"] != pkg.uid
                   and (i.get("status") or {}).get("stage") == "Production"), None)
    criterion = f"beats-production:{metric}"
    if holder is None:
        return CriterionResult(requirement=requirement, criterion=criterion, passed=True, value=mine,
                               message="no package is in Production yet")
    their_run = get_object("trainingruns", pkg.namespace, holder["spec"]["trainingRunRef"]["name"]) or {}
    theirs = ((their_run.get("status") or {}).get("metrics") or {}).get(metric)
    if mine is None or theirs is None:
        return CriterionResult(requirement=requirement, criterion=criterion, passed=None, message="not measured")
    lower = metric in LOWER_IS_BETTER
    better = mine < theirs if lower else mine > theirs
    op = "<" if lower else ">"
    return CriterionResult(requirement=requirement, criterion=criterion, passed=better, value=round(mine, 6),
                           threshold=round(theirs, 6), operator=op,
                           message=f"{mine:.4g} {op if better else ('>=' if lower else '<=')} {theirs:.4g} of "
                                   f"{holder['metadata']['name']} in Production")


def _package(pkg: Pkg, spec: ModelPackageSpec, run_obj: dict, run: TrainingRunStatus,
             reqs: list[tuple[str, RequirementSpec]], results: list[CriterionResult], dataset_obj: dict | None,
             store: Store) -> None:
    executor = executor_for(get_settings().executor if run_obj["spec"].get("executor") is None
                            else run_obj["spec"]["executor"])
    name = pkg.status.task or task_name("package", pkg.name, pkg.uid)
    prefix = task_prefix(pkg.namespace, name)
    task = Task(name=name, namespace=pkg.namespace, kind="package", prefix=prefix,
                command=["python", "-m", "mloop.workloads.package", prefix],
                owner={"apiVersion": API_VERSION, "kind": "ModelPackage", "name": pkg.name, "uid": pkg.uid},
                deadline_seconds=900)
    if pkg.status.task:
        state = executor.state(task)
        if not state.finished and state.phase != "Missing":
            return
        result = store.get_json_or_none(prefix + "result.json")
        if result is None:
            store.ping()
            pkg.fail("PackagingFailed", f"package task {name} failed: {state.reason} {state.message}".strip())
            return
        if result["status"] != "Succeeded":
            pkg.fail(result.get("reason", "PackagingFailed"), result.get("message", ""))
            return
        pkg.update.update(phase="Packaged", task=None, uri=result["uri"], digest=result["digest"],
                          formats=result["formats"])
        pkg.condition("Packaged", "True", "Packaged", result["message"])
        if "onnx" in (spec.formats or []):
            has_onnx = "onnx" in result["formats"]
            pkg.condition("OnnxAvailable", "True" if has_onnx else "False",
                          "ParityChecked" if has_onnx else "OnnxUnavailable", result.get("onnx", "")[:1000])
        pkg.events.append(Event("Normal", "Packaged", f"{spec.model} version {pkg.status.version}: {result['message']}"))
        pkg.status.phase = "Packaged"
        pkg.status.uri, pkg.status.digest = result["uri"], result["digest"]
        _promote(pkg, spec, results)
        return
    version = pkg.status.version or _claim_version(store, pkg, spec.model)
    run_prefix = f"runs/{pkg.namespace}/{run_obj['metadata']['name']}/{run_obj['metadata']['uid']}/"
    run_task = store.get_json(run_prefix + "spec.json")
    dataset_spec = (dataset_obj or {}).get("spec") or {}
    body = {
        "namespace": pkg.namespace, "name": pkg.name, "model": spec.model, "version": version,
        "prefix": package_prefix(pkg.namespace, spec.model, version), "formats": ["skops", *(spec.formats or [])],
        "run": {**run_task, "metrics": run.metrics or {}, "modelDigest": run.model_digest,
                "modelKey": (run.model_uri or "").split("/", 3)[3]},
        "schema": [ColumnSpec.model_validate(c).to_wire() for c in (dataset_spec.get("schema") or {}).get("columns", [])],
        "governance": dataset_spec.get("governance") or {},
        "requirements": [{"name": n, "spec": r.to_wire(),
                          "results": [x.to_wire() for x in results if x.requirement == n]} for n, r in reqs],
        "lineage": {"requirements": [n for n, _ in reqs], "trainingRun": {"name": run_obj["metadata"]["name"],
                    "uid": run_obj["metadata"]["uid"], "modelDigest": run.model_digest},
                    "dataset": run_task["dataset"], "package": {"name": pkg.name, "model": spec.model, "version": version}},
    }
    store.put_json(prefix + "spec.json", body, overwrite=True)
    executor.submit(task)
    pkg.update.update(phase="Packaging", task=name, version=version)
    pkg.condition("Packaged", "Unknown", "Packaging", f"packaging {spec.model} version {version}")
    pkg.condition("Ready", "Unknown", "Packaging", "packaging in progress")


def _siblings(pkg: Pkg, model: str) -> list[promotion.Sibling]:
    items = custom_objects().list_namespaced_custom_object(GROUP, VERSION, pkg.namespace, "modelpackages")["items"]
    out = []
    for item in items:
        if item["metadata"]["uid"] == pkg.uid or item["spec"].get("model") != model:
            continue
        status = item.get("status") or {}
        if not status.get("version"):
            continue
        eligible = status.get("phase") == "Packaged" and not any(
            r.get("passed") is False for r in status.get("requirements") or [])
        out.append(promotion.Sibling(item["metadata"]["name"], status["version"], item["spec"].get("stage", "None"),
                                     status.get("stage"), eligible))
    return out


def _promote(pkg: Pkg, spec: ModelPackageSpec, results: list[CriterionResult]) -> None:
    version = pkg.status.version or 0
    decision = promotion.decide(spec.stage, version, results, _siblings(pkg, spec.model), pkg.status.stage)
    before = pkg.status.stage
    pkg.update["stage"] = decision.stage
    pkg.condition("Promoted", decision.promoted, decision.reason, decision.message)
    pkg.condition("Ready", "True", "Packaged", f"version {version}, stage {decision.stage}")
    if decision.stage != before:
        if decision.promoted == "True":
            pkg.events.append(Event("Normal", "PromotionGranted", f"{decision.stage}: {decision.message}"))
        elif decision.reason == "CriterionFailed":
            pkg.events.append(Event("Warning", "PromotionRefused", decision.message))
        elif decision.stage == "Archived":
            pkg.events.append(Event("Normal", "Archived", decision.message))
    elif decision.reason == "CriterionFailed" and pkg.reason_of("Promoted") != "CriterionFailed":
        pkg.events.append(Event("Warning", "PromotionRefused", decision.message))
    for name in decision.archive:
        _archive(pkg, name, f"superseded by {pkg.name} (version {version}) in Production")


def _archive(pkg: Pkg, name: str, message: str) -> None:
    """Take Production from an older package now, in its status and with an event on it."""
    api = custom_objects()
    obj = api.get_namespaced_custom_object(GROUP, VERSION, pkg.namespace, "modelpackages", name)
    status = ModelPackageStatus.model_validate(obj.get("status") or {})
    conditions = set_condition(list(status.conditions), "Promoted", "False", "Superseded", message,
                               obj["metadata"].get("generation"), pkg.now)
    api.patch_namespaced_custom_object_status(GROUP, VERSION, pkg.namespace, "modelpackages", name, {
        "status": {"stage": "Archived", "conditions": dump_conditions(conditions)}})
    kopf.info(obj, reason="Archived", message=message)


SERVING_STAGES = ("Staging", "Production")


def _serve(pkg: Pkg, spec: ModelPackageSpec, executor: str) -> None:
    """Run the server for the granted stage (local process or Deployment); stop it when the package leaves."""
    stage = pkg.update.get("stage", pkg.status.stage)
    wanted = bool(spec.serve and spec.serve.enabled and stage in SERVING_STAGES and pkg.status.digest)
    before = pkg.reason_of("Serving")
    if executor == "local":
        servers = LocalServers()
        if wanted:
            assert spec.serve is not None and stage is not None
            endpoint, what = servers.ensure(pkg.namespace, spec.model, stage, pkg.status.uri or "", pkg.status.digest or "",
                                            spec.serve.sampling_rate)
            pkg.update["endpoint"] = endpoint
            if what != "running":
                pkg.events.append(Event("Normal", f"Server{what.capitalize()}", f"{stage} server for {spec.model} "
                                        f"{what} at {endpoint} (version {pkg.status.version})"))
            if ready(endpoint):
                pkg.condition("Serving", "True", "Ready", f"{stage} endpoint {endpoint} is ready")
            else:
                pkg.condition("Serving", "Unknown", "Starting", f"waiting for {endpoint} to become ready")
            return
        for st in SERVING_STAGES:
            if servers.stop(pkg.namespace, spec.model, st, digest=pkg.status.digest):
                pkg.events.append(Event("Normal", "ServerStopped", f"{st} server for {spec.model} stopped"))
    elif wanted:
        assert spec.serve is not None and stage is not None
        _apply_server(pkg, spec, stage)
        return
    pkg.update["endpoint"] = None
    if before not in (None, "NotServing"):
        pkg.condition("Serving", "False", "NotServing", f"stage {stage}; serving needs spec.serve and Staging or Production")


def _apply_server(pkg: Pkg, spec: ModelPackageSpec, stage: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from mloop.k8s.client import api_client

    assert spec.serve is not None
    settings = get_settings()
    resources = spec.serve.resources.to_wire() if spec.serve.resources else None
    deployment = build_deployment(pkg.namespace, spec.model, stage, pkg.name, pkg.status.uri or "",
                                  pkg.status.digest or "", spec.serve.replicas, spec.serve.sampling_rate, resources or None,
                                  settings)
    service = build_service(pkg.namespace, spec.model, stage)
    apps, core = client.AppsV1Api(api_client()), client.CoreV1Api(api_client())
    name = deployment["metadata"]["name"]
    try:
        current = apps.read_namespaced_deployment(name, pkg.namespace)
        annotations = current.spec.template.metadata.annotations or {}
        if annotations.get("mloop.dev/package-digest") != pkg.status.digest:
            apps.replace_namespaced_deployment(name, pkg.namespace, {**deployment, "metadata": {
                **deployment["metadata"], "resourceVersion": current.metadata.resource_version}})
            pkg.events.append(Event("Normal", "ServerRolled", f"Deployment {name} rolls to version {pkg.status.version}"))
        available = current.status.available_replicas or 0
    except ApiException as err:
        if err.status != 404:
            raise
        apps.create_namespaced_deployment(pkg.namespace, deployment)
        pkg.events.append(Event("Normal", "ServerStarted", f"Deployment {name} created for version {pkg.status.version}"))
        available = 0
    try:
        core.create_namespaced_service(pkg.namespace, service)
    except ApiException as err:
        if err.status != 409:
            raise
    pkg.update["endpoint"] = cluster_url(pkg.namespace, spec.model, stage)
    if available:
        pkg.condition("Serving", "True", "Available", f"Deployment {name}: {available} replica(s) available")
    else:
        pkg.condition("Serving", "Unknown", "Rolling", f"Deployment {name} has no available replica yet")


@kopf.on.delete(GROUP, VERSION, "modelpackages", optional=True)
def package_deleted(spec: kopf.Spec, status: kopf.Status, namespace: str, **_: Any) -> None:
    """Best effort without a finalizer: a local server of this package stops with it."""
    if get_settings().executor == "local" and status.get("digest"):
        for stage in SERVING_STAGES:
            LocalServers().stop(namespace, spec.get("model", ""), stage, digest=status.get("digest"))


def _active(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") != "Failed"


@kopf.on.create(GROUP, VERSION, "modelpackages")
@kopf.on.update(GROUP, VERSION, "modelpackages", field="spec")
@kopf.on.resume(GROUP, VERSION, "modelpackages")
def package_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_package(body, patch)


@kopf.timer(GROUP, VERSION, "modelpackages", interval=get_settings().poll_interval, sharp=False, when=_active)
def package_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_package(body, patch)
