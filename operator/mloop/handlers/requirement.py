"""Requirement handlers: kopf indexes keep the trace current; a timer re-evaluates from them (no API reads)."""

from __future__ import annotations

from typing import Any

import kopf

from mloop.api.common import utcnow
from mloop.api.dataset import DatasetStatus
from mloop.api.kinds import GROUP, VERSION
from mloop.api.requirement import RequirementSpec, RequirementStatus
from mloop.config import get_settings
from mloop.handlers.common import apply_outcome
from mloop.reconcile.requirement import requirement_status


def _refs(spec: kopf.Spec, namespace: str) -> list[tuple[str, str]]:
    return [(ref.get("namespace") or namespace, ref["name"]) for ref in spec.get("requirementRefs") or []]


@kopf.index(GROUP, VERSION, "trainingruns")
def runs_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase"), "metrics": dict(status.get("metrics") or {}),
             "dataset": f"{namespace}/{spec.get('datasetRef', {}).get('name')}"}
    return {key: entry for key in _refs(spec, namespace)}


@kopf.index(GROUP, VERSION, "trainingruns")
def runs_by_name(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    return {(namespace, name): {"metrics": dict(status.get("metrics") or {}),
                                "dataset": f"{namespace}/{spec.get('datasetRef', {}).get('name')}"}}


@kopf.index(GROUP, VERSION, "modelpackages")
def packages_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    # Packages without their own refs inherit the run's: the package status records the ones it judged.
    keys = set(_refs(spec, namespace)) | {(namespace, r["requirement"]) for r in status.get("requirements") or []}
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase"), "stage": status.get("stage"),
             "run": spec.get("trainingRunRef", {}).get("name")}
    return {key: entry for key in keys}


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase")}
    return {key: entry for key in _refs(spec, namespace)}


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_name(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict:
    return {f"{namespace}/{name}": dict(status)}


@kopf.timer(GROUP, VERSION, "requirements", interval=get_settings().poll_interval, sharp=False)
def requirement_tick(body: kopf.Body, patch: kopf.Patch, spec: kopf.Spec, status: kopf.Status, namespace: str,
                     name: str, meta: kopf.Meta, runs_by_requirement: kopf.Index, runs_by_name: kopf.Index,
                     packages_by_requirement: kopf.Index, datasets_by_requirement: kopf.Index,
                     datasets_by_name: kopf.Index, **_: Any) -> None:
    key = (namespace, name)
    runs = list(runs_by_requirement.get(key, []))
    packages = list(packages_by_requirement.get(key, []))
    datasets = list(datasets_by_requirement.get(key, []))
    run_lookup = {n: next(iter(runs_by_name.get((namespace, n), [])), {}) for n in {p.get("run") for p in packages} if n}
    wanted = {r.get("dataset") for r in runs} | {v.get("dataset") for v in run_lookup.values()}
    dataset_lookup = {}
    for ref in wanted:
        found = next(iter(datasets_by_name.get(ref, [])), None) if ref else None
        if found is not None:
            dataset_lookup[ref] = DatasetStatus.model_validate(found)
    current = RequirementStatus.model_validate(dict(status))
    outcome = requirement_status(name, RequirementSpec.model_validate(dict(spec)), runs, packages, datasets, run_lookup,
                                 dataset_lookup, list(current.conditions), meta.get("generation", 1), utcnow())
    comparable = {k: v for k, v in outcome.status.items() if k != "conditions"}
    unchanged = all(status.get(k) == v for k, v in comparable.items() if v is not None) and not outcome.events
    if unchanged and all(status.get(k) is None for k, v in comparable.items() if v is None):
        return
    apply_outcome(outcome, patch, body)
