"""Requirement handlers: kopf indexes keep the trace current; a timer re-evaluates from them (no API reads)."""

from __future__ import annotations

from typing import Any

import kopf

from mloop.api.common import iso, utcnow
from mloop.api.dataset import DatasetStatus
from mloop.api.kinds import GROUP, VERSION
from mloop.api.requirement import RequirementSpec, RequirementStatus
from mloop.config import get_settings
from mloop.handlers.common import commit
from mloop.handlers.metrics import measured
from mloop.k8s.client import get_object
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
             "run": spec.get("trainingRunRef", {}).get("name"), "model": spec.get("model"),
             "serve": dict(spec.get("serve") or {}) or None, "promoted": _condition_message(status, "Promoted")}
    return {key: entry for key in keys}


def _condition_message(status: kopf.Status, type_: str) -> str | None:
    return next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == type_), None)


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase")}
    return {key: entry for key in _refs(spec, namespace)}


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_name(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict:
    return {f"{namespace}/{name}": dict(status)}


@kopf.timer(GROUP, VERSION, "requirements", interval=get_settings().poll_interval, sharp=False)
@measured("Requirement")
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
    retrains = _retrain(name, namespace, RequirementSpec.model_validate(dict(spec)), current, packages,
                        datasets_by_name, outcome)
    if retrains is not None:
        outcome.status["retrains"] = retrains
    comparable = {k: v for k, v in outcome.status.items() if k != "conditions"}
    unchanged = all(status.get(k) == v for k, v in comparable.items() if v is not None) and not outcome.events
    if unchanged and all(status.get(k) is None for k, v in comparable.items() if v is None):
        return
    commit(body, outcome)


def _retrain(name: str, namespace: str, spec: RequirementSpec, current: RequirementStatus, packages: list[dict],
             datasets_by_name: kopf.Index, outcome: Any) -> list[dict] | None:
    """The retrain policy: on a new collection version with enough new rows (or drift), run and package again."""
    from mloop.reconcile.outcome import Event

    records = [r.to_wire() for r in current.retrains or []]
    by_package = {p["name"]: p for p in packages}
    for record in records:  # follow what became of earlier retrainings
        pkg = by_package.get(record.get("package") or "")
        if pkg and pkg.get("phase") == "Packaged":
            outcome_text = (f"promoted to {pkg['stage']}" if pkg.get("stage") in ("Staging", "Production")
                            else f"not promoted: {pkg.get('promoted') or 'see the package'}")[:256]
            if record.get("outcome") != outcome_text:
                record["outcome"] = outcome_text
    policy = spec.retrain
    if policy is None or not policy.enabled:
        return records if records != [r.to_wire() for r in current.retrains or []] else None
    ds_namespace = policy.dataset_ref.namespace or namespace
    found = next(iter(datasets_by_name.get(f"{ds_namespace}/{policy.dataset_ref.name}", [])), None)
    ds = DatasetStatus.model_validate(found) if found else None
    if ds is None or not ds.version or (records and records[-1]["datasetVersion"] == ds.version):
        return records if records != [r.to_wire() for r in current.retrains or []] else None
    rows_then = 0
    if records:
        rows_then = next((v.rows for v in ds.versions or [] if v.version == records[-1]["datasetVersion"]), 0)
    new_rows = (ds.rows or 0) - rows_then
    trigger = policy.trigger
    production = next((p for p in packages if p.get("stage") == "Production"), None)
    reason = None
    if trigger.min_new_rows is not None and new_rows >= trigger.min_new_rows:
        reason = f"{new_rows} new labelled rows (>= {trigger.min_new_rows})"
    elif trigger.drift_threshold is not None and production is not None and ds.digest:
        column, psi = _drift_against_production(namespace, ds_namespace, policy.dataset_ref.name, ds.digest,
                                                 production)
        if psi > trigger.drift_threshold:
            reason = f"drift PSI {psi:.3f} on {column} > {trigger.drift_threshold} against the production model's data"
    if reason is None:
        return None
    model = production["model"] if production else None
    template = get_object("trainingruns", policy.template_run_ref.namespace or namespace, policy.template_run_ref.name)
    if template is None or model is None:
        return None  # nothing to copy, or no model to compete with yet: look again on the next tick
    count = len(records) + 1
    run_name = f"{name}-retrain-{count}"[:63]
    run_spec = {**template["spec"], "datasetRef": {"name": policy.dataset_ref.name, "version": ds.version,
                                                   **({"namespace": ds_namespace} if ds_namespace != namespace else {})}}
    labels = {"mloop.dev/retrain-of": name, **({"mloop.dev/experiment": run_spec["experiment"]}
                                              if run_spec.get("experiment") else {})}
    _create("trainingruns", namespace, "TrainingRun", run_name, run_spec, labels)
    package_spec = {"model": model, "trainingRunRef": {"name": run_name}, "stage": policy.promote_to,
                    "requirementRefs": [{"name": name}], "requireImprovement": True}
    if production and production.get("serve"):
        package_spec["serve"] = production["serve"]
    _create("modelpackages", namespace, "ModelPackage", run_name, package_spec, {"mloop.dev/retrain-of": name})
    records.append({"run": run_name, "datasetVersion": ds.version, "reason": reason[:256], "package": run_name,
                    "outcome": "pending", "createdAt": iso(utcnow())})
    outcome.events.append(Event("Normal", "RetrainTriggered", f"{run_name} on {policy.dataset_ref.name}@{ds.version}: "
                                                              f"{reason}"))
    return records[-50:]


def _drift_against_production(namespace: str, ds_namespace: str, dataset: str, digest: str,
                              production: dict) -> tuple[str, float]:
    """Largest PSI of a shared numeric column: the collection version against the production model's training data."""
    from mloop.data.drift import psi
    from mloop.data.tables import read_version
    from mloop.storage.artifacts import operator_store
    from mloop.storage.layout import dataset_prefix

    run = get_object("trainingruns", namespace, production.get("run") or "") or {}
    status = run.get("status") or {}
    trained_ref = (run.get("spec") or {}).get("datasetRef", {})
    trained_on, trained_ns = trained_ref.get("name"), trained_ref.get("namespace") or namespace
    if not status.get("datasetDigest") or not trained_on:
        return "", 0.0
    store = operator_store()

    before = read_version(store, dataset_prefix(trained_ns, trained_on, status["datasetDigest"].removeprefix("sha256:")))
    after = read_version(store, dataset_prefix(ds_namespace, dataset, digest.removeprefix("sha256:")))
    scores = {c: psi(before[c].dropna().to_numpy(dtype="float64"), after[c].dropna().to_numpy(dtype="float64"))
              for c in before.columns if c in after.columns and before[c].dtype.kind in "iuf" and after[c].dtype.kind in "iuf"}
    return max(scores.items(), key=lambda kv: kv[1], default=("", 0.0))


def _create(plural: str, namespace: str, kind: str, name: str, spec: dict, labels: dict) -> None:
    from kubernetes.client.exceptions import ApiException

    from mloop.k8s.client import custom_objects

    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
    try:
        custom_objects().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    except ApiException as err:
        if err.status != 409:  # 409: created on an earlier tick whose status patch was lost
            raise
