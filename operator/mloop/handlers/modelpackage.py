"""ModelPackage handlers: gather the world from kopf indexes (no LIST, no GET of referenced objects), ask
reconcile/modelpackage what to do, do it, commit the status with a resourceVersion precondition.

A package at rest has no timer. What wakes it: its own spec change, its TrainingRun finishing (run events),
a Requirement it waits for appearing, a sibling taking Production, and its Deployment changing."""

from __future__ import annotations

import copy
import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mloop.api.common import CheckMeasurement, utcnow
from mloop.api.dataset import ColumnSpec, DatasetStatus
from mloop.api.kinds import API_VERSION, GROUP, VERSION
from mloop.api.modelpackage import ModelPackageSpec, ModelPackageStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import PackagedRun, PackageResult, PackageTaskSpec, Task
from mloop.builders.server import APPLIED, build_deployment, build_service, cluster_url, server_name
from mloop.config import get_settings
from mloop.constants import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGER
from mloop.executors.factory import executor_for
from mloop.handlers.common import commit, pinned
from mloop.handlers.jobs import TASK_JOBS, job_ended, job_in_flight, task_state
from mloop.handlers.metrics import measured
from mloop.handlers.views import TRAININGRUNS
from mloop.k8s.client import api_client
from mloop.procs import alive
from mloop.reconcile import modelpackage as decide
from mloop.reconcile.outcome import describe_validation_error
from mloop.serving.local import LocalServers, ready, served_runtime
from mloop.storage.artifacts import AlreadyExists, DigestMismatch, StorageUnavailable, Store, operator_store
from mloop.storage.layout import (dataset_prefix, key_of, live_score, package_claim, package_prefix, run_prefix,
                                  task_prefix)
from mloop.api.metrics import LOWER_IS_BETTER

log = logging.getLogger("mloop.handlers.modelpackage")

MAX_VERSIONS = 10_000
APPLY = "application/apply-patch+yaml"
SERVER_LABELS = {LABEL_COMPONENT: "model-server", LABEL_MANAGED_BY: MANAGER}


# ---- indexes: filled from the watch streams before any handler runs, so reading them costs no request ----

def _reason(status: Any, type_: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == type_), None)


@kopf.index(GROUP, VERSION, "modelpackages")
def packages_by_model(body: kopf.Body, namespace: str, spec: kopf.Spec, **_: Any) -> dict:
    """Each package's body (enough to run its pass and to write its status on condition), by model."""
    meta = body["metadata"]
    trimmed = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
               "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion", "generation")},
               "spec": copy.deepcopy(dict(body.get("spec") or {})), "status": copy.deepcopy(dict(body.get("status") or {}))}
    return {(namespace, spec.get("model")): trimmed}


@kopf.index(GROUP, VERSION, "modelpackages")
def packages_by_run(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    ref = spec.get("trainingRunRef") or {}
    return {(ref.get("namespace") or namespace, ref.get("name")): {"name": name, "model": spec.get("model")}}


@kopf.index(GROUP, VERSION, "modelpackages")
def packages_awaiting_requirements(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    if _reason(status, "Packaged") != "WaitingForRequirement":
        return {}
    return {namespace: {"name": name, "model": spec.get("model")}}


@TRAININGRUNS.view
def trainingruns_by_name(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    ds = spec.get("datasetRef") or {}
    return {(namespace, name): {
        "uid": uid, "phase": status.get("phase"), "failure": status.get("failure"),
        "metrics": dict(status.get("metrics") or {}), "modelDigest": status.get("modelDigest"),
        "modelUri": status.get("modelUri"), "datasetDigest": status.get("datasetDigest"),
        "checks": copy.deepcopy(list(status.get("checks") or [])),
        "dataset": (ds.get("namespace") or namespace, ds.get("name")), "executor": spec.get("executor"),
        "requirementRefs": [(r.get("namespace") or namespace, r["name"]) for r in spec.get("requirementRefs") or []]}}


@kopf.index(GROUP, VERSION, "requirements")
def requirements_by_name(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    return {(namespace, name): copy.deepcopy(dict(spec))}


@kopf.index(GROUP, VERSION, "datasets")
def dataset_specs_by_name(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    """What a package's signature and card take from its Dataset: declared columns and governance tags."""
    return {(namespace, name): {"schema": copy.deepcopy(spec.get("schema") or {}),
                                "governance": copy.deepcopy(spec.get("governance") or {})}}


@kopf.index("apps", "v1", "deployments", labels=SERVER_LABELS)
def model_servers(namespace: str, name: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "ModelPackage"), {})
    template = (spec.get("template") or {}).get("metadata") or {}
    hands = sorted({f.get("manager") for f in meta.get("managedFields") or []
                    if f.get("manager") != MANAGER and "f:spec" in (f.get("fieldsV1") or {})})
    return {(namespace, name): {
        "resourceVersion": meta.get("resourceVersion"), "owner": owner.get("uid"), "package": owner.get("name"), "model": (meta.get("labels") or {}).get("mloop.dev/model"),
        "digest": (template.get("annotations") or {}).get("mloop.dev/package-digest"),
        "applied": (meta.get("annotations") or {}).get(APPLIED), "replicas": spec.get("replicas"),
        "available": status.get("availableReplicas") or 0, "editedBy": hands}}


@dataclass(frozen=True)
class Indexes:
    packages_by_model: Any
    packages_by_run: Any
    packages_awaiting_requirements: Any
    trainingruns_by_name: Any
    requirements_by_name: Any
    datasets_by_name: Any  # declared in handlers/dataset.py: each Dataset's status
    dataset_specs_by_name: Any
    model_servers: Any
    task_jobs: Any  # declared in handlers/jobs.py

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Indexes:
        indexes = {name: kwargs[name] for name in cls.__dataclass_fields__ if name != "trainingruns_by_name"}
        return cls(**indexes, trainingruns_by_name=trainingruns_by_name.of(kwargs))

    def package(self, namespace: str, model: str | None, name: str) -> dict | None:
        return next((b for b in self.packages_by_model.get((namespace, model), []) if b["metadata"]["name"] == name),
                    None)


def _one(index: Any, key: Any) -> Any:
    return next(iter(index.get(key, [])), None)


# ---- gather ----

def _gather(me: decide.PackageId, spec: ModelPackageSpec, status: ModelPackageStatus, idx: Indexes,
            store: Store) -> decide.World:
    ref = spec.training_run_ref
    run_ns = ref.namespace or me.namespace
    found = _one(idx.trainingruns_by_name, (run_ns, ref.name))
    run = None if found is None else decide.RunView(
        name=ref.name, uid=found["uid"], phase=found["phase"], failure=found["failure"], metrics=found["metrics"],
        model_digest=found["modelDigest"], model_uri=found["modelUri"], dataset_digest=found["datasetDigest"],
        checks=tuple(CheckMeasurement.model_validate(c) for c in found.get("checks") or []),
        requirement_refs=tuple(n for _, n in found["requirementRefs"]), executor=found["executor"])
    refs = ([(r.namespace or me.namespace, r.name) for r in spec.requirement_refs] if spec.requirement_refs
            else list(found["requirementRefs"]) if found else [])
    requirements = {}
    for key in refs:
        raw = _one(idx.requirements_by_name, key)
        requirements[key[1]] = None if raw is None else RequirementSpec.model_validate(raw)
    siblings = []
    for body in idx.packages_by_model.get((me.namespace, spec.model), []):
        if body["metadata"]["uid"] == me.uid:
            continue
        st, sp = body["status"], body["spec"]
        their_ref = sp.get("trainingRunRef") or {}
        their_run = _one(idx.trainingruns_by_name, (their_ref.get("namespace") or me.namespace, their_ref.get("name")))
        siblings.append(decide.SiblingView(
            name=body["metadata"]["name"], version=st.get("version"), desired=sp.get("stage", "None"),
            granted=st.get("stage"), metrics=(their_run or {}).get("metrics") or {},
            # Judged for the stage it asks for now: a spec just edited to Production still shows criteria judged
            # for its old stage (a live criterion is not judged then), and must not take Production on them.
            eligible=st.get("phase") == "Packaged" and st.get("observedGeneration") == body["metadata"].get("generation")
            and not any(r.get("passed") is False for r in st.get("requirements") or [])))
    executor = (run.executor if run else None) or get_settings().executor
    world = decide.World(package=me, run=run, requirements=requirements, dataset=None, siblings=tuple(siblings),
                         executor=executor, lower_is_better=frozenset(LOWER_IS_BETTER))
    try:
        if found is not None:
            world = replace(world, dataset=_pinned_dataset(idx, found, [r for r in requirements.values() if r], store))
        if status.task:
            world = _task_outcome(world, status.task, store, idx.task_jobs)
    except StorageUnavailable:
        world = replace(world, storage_ok=False)
    digest = status.digest or (world.result.digest if world.result else None)  # packaged in this very pass
    if digest and executor == "local":
        world = replace(world, local=_local_servers(me.namespace, spec.model, digest))
    elif digest:
        world = replace(world, cluster=_cluster_servers(me.namespace, spec.model, idx))
    if status.phase == "Packaged":
        world = _shadow_world(world, me, spec, status, idx, store)
    return world


def _pinned_dataset(idx: Indexes, run: dict, reqs: list[RequirementSpec], store: Store) -> DatasetStatus | None:
    """The dataset version the run trained on, as data criteria judge it (not the Dataset's current version)."""
    ns, name = run["dataset"]
    found = _one(idx.datasets_by_name, f"{ns}/{name}")
    if found is None:
        return None
    current = DatasetStatus.model_validate(found)
    pinned = run.get("datasetDigest")
    if not pinned or current.digest == pinned or not any(r.data for r in reqs):
        return current
    prefix = dataset_prefix(ns, name, pinned)
    manifest = store.get_json(prefix + "manifest.json")  # write-once: the pinned version never changes
    profile = store.get_json_or_none(prefix + "profile.json") or {"columns": []}
    return DatasetStatus.model_validate({
        "version": manifest["version"], "digest": manifest["digest"], "rows": manifest["rows"],
        "columns": manifest["columns"][:512],
        "profile": [{k: c[k] for k in ("name", "nulls", "distinct") if k in c} for c in profile["columns"][:64]],
        "versions": [{"version": manifest["version"], "digest": manifest["digest"], "rows": manifest["rows"],
                      "createdAt": manifest["createdAt"], "uri": store.uri(prefix)}]})


def _task(me: decide.PackageId, name: str) -> Task:
    prefix = task_prefix(me.namespace, name)
    return Task(name=name, namespace=me.namespace, kind="package", prefix=prefix,
                command=["python", "-m", "mloop.workloads.package", prefix],
                owner={"apiVersion": API_VERSION, "kind": "ModelPackage", "name": me.name, "uid": me.uid},
                deadline_seconds=900)


def _task_outcome(world: decide.World, name: str, store: Store, jobs: Any) -> decide.World:
    task = _task(world.package, name)
    state = task_state(executor_for(world.executor), task, jobs)
    if not state.finished and state.phase != "Missing":
        return replace(world, task=state)
    try:
        raw = store.get_json_or_none(task.prefix + "result.json")
        if raw is None and state.finished:
            store.ping()  # then the task may have failed for want of storage
    except StorageUnavailable:
        return replace(world, task=state, storage_ok=False)
    return replace(world, task=state, result=None if raw is None else PackageResult.model_validate(raw))


def _local_servers(namespace: str, model: str, digest: str) -> dict[str, decide.LocalServer]:
    servers, found = LocalServers(), {}
    for stage in decide.SERVING_STAGES:
        state = servers.state(namespace, model, stage)
        if state is None:
            continue
        endpoint, running = f"http://127.0.0.1:{state['port']}", alive(state["pid"])
        found[stage] = decide.LocalServer(endpoint, state["digest"], running,
                                          running and state["digest"] == digest and ready(endpoint),
                                          shadows=_targets_of(state.get("shadows") or []),
                                          version=state.get("version", 0))
        if found[stage].ready:  # what the server itself says it runs
            found[stage] = replace(found[stage], runtime=served_runtime(endpoint, model))
    return found


# ---- shadow evaluation ----

def _targets_of(wire: list[dict]) -> tuple[decide.ShadowTargetView, ...]:
    return tuple(decide.ShadowTargetView(t["package"], t["url"], float(t["samplingRate"]), tuple(t.get("columns") or ()))
                 for t in wire)


def _shadow_targets(bodies: list[dict], production: str) -> tuple[decide.ShadowTargetView, ...]:
    """Candidates whose shadow server is ready and names `production` as the package it shadows."""
    targets = []
    for body in bodies:
        sp, st = body["spec"], body["status"]
        sh = st.get("shadow") or {}
        if (sp.get("shadow") and sh.get("state") == "Shadowing" and sh.get("endpoint")
                and sh.get("production") == production and st.get("stage") != "Production"):
            targets.append(decide.ShadowTargetView(body["metadata"]["name"], sh["endpoint"],
                                                   float(sp["shadow"].get("samplingRate", 1.0)),
                                                   tuple(sh.get("columns") or ())))
    return tuple(sorted(targets, key=lambda t: t.package)[:8])


def _shadow_world(world: decide.World, me: decide.PackageId, spec: ModelPackageSpec, status: ModelPackageStatus,
                  idx: Indexes, store: Store) -> decide.World:
    """Who shadows this package (if it holds Production); its own shadow server; its live score."""
    bodies = [b for b in idx.packages_by_model.get((me.namespace, spec.model), []) if b["metadata"]["uid"] != me.uid]
    if status.stage == "Production":
        world = replace(world, shadow_targets=_shadow_targets(bodies, me.name))
    version, digest = status.version, status.digest
    if not version or not digest:
        return world
    slot = decide.shadow_slot(version)
    if world.executor == "local":
        state = LocalServers().state(me.namespace, spec.model, slot)
        if state is not None:
            endpoint, running = f"http://127.0.0.1:{state['port']}", alive(state["pid"])
            world = replace(world, shadow_local=decide.LocalServer(
                endpoint, state["digest"], running, running and state["digest"] == digest and ready(endpoint)))
    else:
        world = replace(world, shadow_cluster=_cluster_servers(me.namespace, spec.model, idx, (slot,))[slot])
    holder = next((s for s in world.siblings if s.granted == "Production" and s.version), None)
    if spec.shadow is not None and holder is not None and status.stage != "Production":
        world = _shadow_fit(world, me, spec.model, status, holder, bodies, store)
    if spec.shadow is None or holder is None or status.shadow is None or status.shadow.state != "Shadowing":
        return world
    from mloop.serving.livescore import score  # pyarrow and numpy: only a shadowing package's pass needs them

    metric = decide.live_metric([r for r in world.requirements.values() if r is not None],
                                world.run.metrics if world.run else {})
    try:
        rows, production, candidate = score(store, me.namespace, spec.model, holder.version, version, metric)
    except StorageUnavailable:
        return world
    except ValueError as err:
        log.warning("ModelPackage %s/%s: live score not computed: %s", me.namespace, me.name, err)
        return world
    record = store.uri(live_score(me.namespace, spec.model, version, holder.version))
    return replace(world, live=decide.live_judge.LiveScore(holder.name, holder.version, metric, rows, candidate,
                                                           production, record))


def _shadow_fit(world: decide.World, me: decide.PackageId, model: str, status: ModelPackageStatus,
                holder: decide.SiblingView, bodies: list[dict], store: Store) -> decide.World:
    """This package's signature against the Production package's: read once per pair (both are write-once), then
    the status keeps the verdict (the columns forwarded, or Refused)."""
    sh = status.shadow
    if sh is not None and sh.production == holder.name and sh.production_version == holder.version and (
            sh.columns is not None or sh.state == "Refused"):
        return world
    theirs = next((b for b in bodies if b["metadata"]["name"] == holder.name), None)
    if theirs is None or not theirs["status"].get("digest") or not status.digest or not status.version:
        return world
    try:
        mine = _signature_inputs(store, me.namespace, model, status.version, status.digest)
        production = _signature_inputs(store, me.namespace, model, holder.version or 0, theirs["status"]["digest"])
    except (StorageUnavailable, DigestMismatch) as err:
        log.warning("ModelPackage %s/%s: signatures not compared: %s", me.namespace, me.name, err)
        return world
    return replace(world, shadow_fit=decide.shadow_fit(mine, production, holder.name))


def _signature_inputs(store: Store, namespace: str, model: str, version: int, digest: str) -> list[dict]:
    """A package's input columns, from its signature checked against the manifest its digest names."""
    prefix = package_prefix(namespace, model, version)
    manifest = store.get(prefix + "manifest.json", expected_sha256=digest.removeprefix("sha256:"))
    files = json.loads(manifest)["files"]
    return json.loads(store.get(prefix + "signature.json", expected_sha256=files["signature.json"]["sha256"]))["inputs"]


def _record_live_score(me: decide.PackageId, model: str, action: decide.RecordLiveScore, store: Store) -> None:
    score = action.score
    store.put_json(live_score(me.namespace, model, action.candidate_version, score.production_version), {
        "model": model, "metric": score.metric, "rows": score.rows, "scoredAt": utcnow().isoformat(),
        "candidate": {"package": me.name, "version": action.candidate_version, "value": score.candidate},
        "production": {"package": score.production, "version": score.production_version,
                       "value": score.production_value}}, overwrite=True)


def _wake_shadowed(namespace: str, model: str | None, idx: Indexes) -> None:
    """A candidate's shadow server became ready or went away: the Production package's pass retargets its server."""
    bodies = list(idx.packages_by_model.get((namespace, model), []))
    for holder in bodies:
        if holder["status"].get("stage") != "Production":
            continue
        others = [b for b in bodies if b is not holder]
        wanted = [t.to_wire() for t in _shadow_targets(others, holder["metadata"]["name"])]
        if wanted != (holder["status"].get("shadowTargets") or []):
            reconcile_package(holder, kopf.Patch(), idx)


def _cluster_servers(namespace: str, model: str, idx: Indexes,
                     stages: tuple[str, ...] = decide.SERVING_STAGES) -> dict[str, decide.ClusterServer]:
    found = {}
    for stage in stages:
        name = server_name(model, stage)
        live = _one(idx.model_servers, (namespace, name))
        found[stage] = decide.ClusterServer(name, cluster_url(namespace, model, stage), exists=live is not None,
                                            resource_version=(live or {}).get("resourceVersion"),
                                            owner_uid=(live or {}).get("owner"),
                                            owner_package=(live or {}).get("package"), digest=(live or {}).get("digest"),
                                            available=(live or {}).get("available", 0))
    return found


# ---- the pass ----

@measured("ModelPackage")
def reconcile_package(body: Any, patch: Any, idx: Indexes) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):  # package_deleted stops what it ran; a pass would start its server again
        return
    me = decide.PackageId(meta["namespace"], meta["name"], meta["uid"], meta.get("generation") or 1)
    now = utcnow()
    status = ModelPackageStatus.model_validate(dict(body.get("status") or {}))
    try:
        spec = ModelPackageSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        commit(body, decide.invalid_spec(status, describe_validation_error(err), me.generation, now).outcome())
        return
    store = operator_store()
    world = _gather(me, spec, status, idx, store)
    decision = decide.decide(spec, status, world, now)
    claim = next((a for a in decision.actions if isinstance(a, decide.ClaimVersion)), None)
    if claim is not None:  # the version claimed is part of what the decision writes
        try:
            world = replace(world, claimed_version=_claim(store, me, spec.model, claim.taken))
        except StorageUnavailable:
            world = replace(world, storage_ok=False)
        decision = decide.decide(spec, status, world, now)
    try:
        for action in decision.actions:
            if isinstance(action, decide.WriteSpec):
                _write_spec(me, spec, action, world, idx, store)
            elif isinstance(action, decide.SubmitTask):
                executor_for(world.executor).submit(_task(me, action.task))
    except StorageUnavailable:
        decision = decide.decide(spec, status, replace(world, storage_ok=False), now)
    try:
        for action in decision.actions:
            if isinstance(action, decide.RecordLiveScore):
                _record_live_score(me, spec.model, action, store)
    except StorageUnavailable:  # the status keeps the last stored score
        decision = decide.decide(spec, status, replace(world, live=None), now)
    if commit(body, decision.outcome()) is None:
        return  # someone moved the package first: its next pass decides on what they wrote
    # The server first: a package archived here may run its own pass at once, and must find the Deployment taken over.
    for action in sorted(decision.actions, key=lambda a: isinstance(a, decide.ArchivePackage)):
        _act_after_commit(me, spec, action, idx, now)


def _claim(store: Store, me: decide.PackageId, model: str, taken: frozenset[int]) -> int:
    """The lowest free version of the model: a write-once claim object decides races between packages; a claim
    this package made in an earlier pass (same uid) is found again, so versions stay contiguous."""
    for version in range(1, MAX_VERSIONS):
        if version in taken:  # a sibling already shows it: claimed by someone else
            continue
        key = package_claim(me.namespace, model, version)
        try:
            store.put_json(key, {"package": me.name, "uid": me.uid})
            return version
        except AlreadyExists:
            if store.get_json(key).get("uid") == me.uid:
                return version
    raise RuntimeError(f"model {model} has no free version number")


def _write_spec(me: decide.PackageId, spec: ModelPackageSpec, action: decide.WriteSpec, world: decide.World,
                idx: Indexes, store: Store) -> None:
    run = world.run
    assert run is not None and run.model_uri and run.model_digest
    run_ns = spec.training_run_ref.namespace or me.namespace
    trained = store.get_json(run_prefix(run_ns, run.name, run.uid) + "spec.json")
    packaged_run = PackagedRun.model_validate({**trained, "metrics": dict(run.metrics), "modelDigest": run.model_digest,
                                               "modelKey": key_of(run.model_uri)})
    ds = packaged_run.dataset
    ds_spec = _one(idx.dataset_specs_by_name, (ds.namespace, ds.name)) or {}
    task = PackageTaskSpec(
        namespace=me.namespace, name=me.name, model=spec.model, version=action.version,
        prefix=package_prefix(me.namespace, spec.model, action.version),
        formats=["skops", *(["onnx"] if "onnx" in (spec.formats or []) else [])], run=packaged_run,
        columns=[ColumnSpec.model_validate(c).to_wire() for c in ds_spec.get("schema", {}).get("columns", [])],
        governance=ds_spec.get("governance") or {}, requirements=list(action.requirements),
        lineage={"requirements": [r.name for r in action.requirements],
                 "trainingRun": {"name": run.name, "uid": run.uid, "modelDigest": run.model_digest},
                 "dataset": ds.to_wire(), "package": {"name": me.name, "model": spec.model, "version": action.version}})
    store.put_json(task_prefix(me.namespace, action.task) + "spec.json", task.to_wire(), overwrite=True)


def _act_after_commit(me: decide.PackageId, spec: ModelPackageSpec, action: Any, idx: Indexes, now: Any) -> None:
    if isinstance(action, decide.ArchivePackage):
        _archive(me, spec.model, action, idx, now)
    elif isinstance(action, decide.ApplyServer):
        _apply_server(me, spec.model, action, idx)
    elif isinstance(action, decide.DeleteServer):
        _delete_server(me, server_name(spec.model, action.stage), action.resource_version)
    elif isinstance(action, decide.EnsureLocalServer):
        with _local_lock() as servers:
            servers.ensure(me.namespace, spec.model, action.stage, action.uri, action.digest, action.sampling,
                           runtime=spec.serve.runtime if spec.serve else "auto",
                           shadows=[t.to_wire() for t in action.shadows], version=action.version)
    elif isinstance(action, decide.StopLocalServer):
        with _local_lock() as servers:
            servers.stop(me.namespace, spec.model, action.stage, digest=action.digest)


def _archive(me: decide.PackageId, model: str, action: decide.ArchivePackage, idx: Indexes, now: Any) -> None:
    """Take Production from an older package now: its status, written on condition of the resourceVersion the
    index shows, with its Archived event in the same write. If it moved meanwhile, its own next event archives it
    (package_event)."""
    older = idx.package(me.namespace, model, action.name)
    if older is None:
        return
    status = ModelPackageStatus.model_validate(older["status"])
    outcome = decide.archived(status, older["metadata"].get("generation") or 1, action.message, now).outcome()
    if commit(older, outcome) is None:
        log.info("ModelPackage %s/%s moved before it could be archived; its next event settles it",
                 me.namespace, action.name)


def _apply_server(me: decide.PackageId, model: str, action: decide.ApplyServer, idx: Indexes) -> None:
    """Server-side apply of the Deployment and Service, owned by the package; skipped when the live Deployment
    already carries this manifest, its replicas and no field edited by hand."""
    owner = {"apiVersion": API_VERSION, "kind": "ModelPackage", "name": me.name, "uid": me.uid}
    deployment = build_deployment(me.namespace, model, action.stage, me.name, action.uri, action.digest,
                                  action.replicas, action.sampling, action.resources, get_settings(), owner,
                                  action.runtime, [t.to_wire() for t in action.shadows])
    service = build_service(me.namespace, model, action.stage, owner)
    name = deployment["metadata"]["name"]
    live = _one(idx.model_servers, (me.namespace, name))
    if (live and live["applied"] == deployment["metadata"]["annotations"][APPLIED] and live["owner"] == me.uid
            and live["replicas"] == action.replicas and not live["editedBy"]):
        return
    if live and live["editedBy"]:
        log.info("Deployment %s/%s was edited by %s; putting it back", me.namespace, name, ", ".join(live["editedBy"]))
    apps, core = client.AppsV1Api(api_client()), client.CoreV1Api(api_client())
    apps.patch_namespaced_deployment(name, me.namespace, deployment, field_manager=MANAGER, force=True,
                                     _content_type=APPLY)
    core.patch_namespaced_service(name, me.namespace, service, field_manager=MANAGER, force=True, _content_type=APPLY)


def _delete_server(me: decide.PackageId, name: str, resource_version: str | None) -> None:
    """Delete the package's Deployment and Service, each on condition that it is still the one this package owns:
    a newer package of the model may have applied its own over it since the index was read."""
    apps, core = client.AppsV1Api(api_client()), client.CoreV1Api(api_client())
    try:
        apps.delete_namespaced_deployment(name, me.namespace, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version)))
        service = core.read_namespaced_service(name, me.namespace)
        if any(o.uid == me.uid for o in service.metadata.owner_references or []):
            core.delete_namespaced_service(name, me.namespace, body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=service.metadata.resource_version)))
    except ApiException as err:
        if err.status not in (404, 409):
            raise


@contextmanager
def _local_lock() -> Iterator[LocalServers]:
    """Local servers are processes on this host: two passes must not start or stop the same one at once."""
    servers = LocalServers()
    with open(servers.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield servers
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---- what runs a pass ----

@kopf.on.create(GROUP, VERSION, "modelpackages")
@kopf.on.update(GROUP, VERSION, "modelpackages", field="spec")
@kopf.on.resume(GROUP, VERSION, "modelpackages")
@pinned
def package_changed(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    reconcile_package(body, patch, Indexes.of(kwargs))


@kopf.index(GROUP, VERSION, "modelpackages")
async def packages_by_task(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """Packages with a packaging task, by its name: what that task's Job events wake. Async: pure dict work."""
    entry = {"name": name, "model": spec.get("model")}
    # {}, not None: kopf keeps old entries on None
    return {(namespace, status["task"]): entry} if status.get("task") else {}


def _ticks(namespace: str, status: kopf.Status, task_jobs: kopf.Index, **_: Any) -> bool:
    """In flight (decide.in_flight), but a packaging Job the watch shows in flight is left to its events."""
    if status.get("task") and job_in_flight(task_jobs, namespace, status["task"]):
        return decide.in_flight({**status, "task": None})
    return decide.in_flight(status)


@kopf.timer(GROUP, VERSION, "modelpackages", interval=get_settings().poll_interval, sharp=False, when=_ticks)
@pinned
def package_tick(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    reconcile_package(body, patch, Indexes.of(kwargs))


@kopf.on.event(GROUP, VERSION, "trainingruns", when=lambda status, **_: status.get("phase") in ("Succeeded", "Failed"))
def run_event(namespace: str, name: str, status: kopf.Status, **kwargs: Any) -> None:
    """A run that finished wakes the packages waiting on it."""
    if status.get("phase") not in ("Succeeded", "Failed"):
        return
    idx = Indexes.of(kwargs)
    for ref in idx.packages_by_run.get((namespace, name), []):
        body = idx.package(namespace, ref["model"], ref["name"])
        if body is not None and body["status"].get("phase") in (None, "Pending"):
            reconcile_package(body, kopf.Patch(), idx)


def _package_job_news(type: str, namespace: str, name: str, packages_by_task: kopf.Index, task_jobs: kopf.Index,
                      **_: Any) -> bool:
    return bool(packages_by_task.get((namespace, name))) and job_ended(type, task_jobs, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={**TASK_JOBS, "mloop.dev/modelpackage": kopf.PRESENT},
               when=_package_job_news)
def package_job_changed(namespace: str, name: str, packages_by_task: kopf.Index, **kwargs: Any) -> None:
    """A packaging Job finished or went away: its package's pass folds it (no timer reads the Job)."""
    idx = Indexes.of(kwargs)
    for ref in packages_by_task.get((namespace, name), []):
        body = idx.package(namespace, ref["model"], ref["name"])
        if body is not None and body["status"].get("task") == name:
            reconcile_package(body, kopf.Patch(), idx)


@kopf.on.event(GROUP, VERSION, "requirements")
def requirement_event(namespace: str, **kwargs: Any) -> None:
    """A Requirement that appears wakes the packages waiting for one in its namespace."""
    idx = Indexes.of(kwargs)
    for ref in idx.packages_awaiting_requirements.get(namespace, []):
        body = idx.package(namespace, ref["model"], ref["name"])
        if body is not None:
            reconcile_package(body, kopf.Patch(), idx)


@kopf.on.update(GROUP, VERSION, "requirements", field="spec")
def requirement_edited(namespace: str, name: str, packages_by_requirement: kopf.Index, **kwargs: Any) -> None:
    """An edited Requirement re-judges the packages it gates (a spec change only, not its status writes)."""
    idx = Indexes.of(kwargs)
    for ref in packages_by_requirement.get((namespace, name), []):
        body = idx.package(namespace, ref.get("model"), ref["name"])
        if body is not None:
            reconcile_package(body, kopf.Patch(), idx)


@kopf.on.event(GROUP, VERSION, "modelpackages")
@pinned
def package_event(type: str, body: kopf.Body, namespace: str, spec: kopf.Spec, status: kopf.Status,
                  **kwargs: Any) -> None:
    """A packaged package's own write brings one more pass on the fresh body: a pass woken by another object
    (its Deployment, a sibling) on an index body that was already behind lost its write and left its step here.
    Production changed hands: with two holders (the newer package's direct archive lost a race with another
    write), the older ones' passes give it up; with none left, the packages it was taken from may have it back."""
    idx = Indexes.of(kwargs)
    if status.get("phase") == "Packaged" and type != "DELETED":  # a deleted one still wakes its siblings below
        reconcile_package(body, kopf.Patch(), idx)
    if spec.get("shadow") or status.get("shadow"):
        _wake_shadowed(namespace, spec.get("model"), idx)
    bodies = list(idx.packages_by_model.get((namespace, spec.get("model")), []))
    holders = [b for b in bodies if b["status"].get("stage") == "Production"]
    if len(holders) > 1:
        newest = max(holders, key=lambda b: b["status"].get("version") or 0)
        woken = [b for b in holders if b is not newest]
    elif not holders:
        woken = [b for b in bodies if b["spec"].get("stage") == "Production"
                 and _reason(b["status"], "Promoted") == "Superseded"]
    else:
        return
    for body in woken:
        reconcile_package(body, kopf.Patch(), idx)


@kopf.on.event("apps", "v1", "deployments", labels=SERVER_LABELS)
def model_server_event(namespace: str, meta: kopf.Meta, labels: kopf.Labels, **kwargs: Any) -> None:
    """A package's Deployment changed (rolled out, edited by hand, deleted): its package's pass puts it right
    and reports availability."""
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "ModelPackage"), None)
    if owner is None:
        return
    idx = Indexes.of(kwargs)
    body = idx.package(namespace, labels.get("mloop.dev/model"), owner["name"])
    if body is not None and body["metadata"]["uid"] == owner["uid"]:
        reconcile_package(body, kopf.Patch(), idx)


@kopf.on.delete(GROUP, VERSION, "modelpackages", optional=True)
def package_deleted(spec: kopf.Spec, status: kopf.Status, namespace: str, **_: Any) -> None:
    """Best effort without a finalizer: a local server of this package stops with it (cluster servers are owned
    by the package and go with it)."""
    if get_settings().executor == "local" and status.get("digest"):
        with _local_lock() as servers:
            for stage in decide.SERVING_STAGES:
                servers.stop(namespace, spec.get("model", ""), stage, digest=status.get("digest"))
            if status.get("version"):
                servers.stop(namespace, spec.get("model", ""), decide.shadow_slot(status["version"]),
                             digest=status.get("digest"))
