"""Requirement handlers: kopf indexes keep the trace current, and a change of anything a Requirement traces
re-evaluates it from those indexes (a watch event, no API read, no timer). Only a data freshness criterion,
which changes with the clock alone, keeps a timer."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mloop.api.common import iso, utcnow
from mloop.api.dataset import DatasetStatus
from mloop.api.kinds import GROUP, VERSION
from mloop.api.requirement import RequirementSpec, RequirementStatus
from mloop.config import get_settings
from mloop.handlers.common import commit, pinned
from mloop.handlers.metrics import measured
from mloop.handlers.views import TRAININGRUNS
from mloop.k8s.client import custom_objects, get_object
from mloop.reconcile.outcome import Event, Outcome
from mloop.reconcile.requirement import requirement_status
from mloop.reconcile.requirements import including_version

Key = tuple[str, str]


def _refs(spec: Mapping[str, Any], namespace: str) -> list[Key]:
    return [(ref.get("namespace") or namespace, ref["name"]) for ref in spec.get("requirementRefs") or []]


@kopf.index(GROUP, VERSION, "requirements")
def requirement_bodies(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, name): copy.deepcopy(dict(body))}


@kopf.index(GROUP, VERSION, "requirements")
def requirements_by_retrain_dataset(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    """The collection Dataset a retrain policy watches, and the combined Dataset it trains on: a new version of
    either may start the retraining."""
    policy = spec.get("retrain") or {}
    refs = [r for r in (policy.get("datasetRef"), policy.get("trainingDatasetRef")) if r]
    # {}, not None: kopf keeps old entries on None
    return {(r.get("namespace") or namespace, r["name"]): (namespace, name) for r in refs}


@TRAININGRUNS.view
def runs_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase"), "metrics": dict(status.get("metrics") or {}),
             "checks": copy.deepcopy(list(status.get("checks") or [])),
             "dataset": f"{namespace}/{spec.get('datasetRef', {}).get('name')}"}
    return {key: entry for key in _refs(spec, namespace)}


@TRAININGRUNS.view
def runs_by_name(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    ref = spec.get("datasetRef") or {}
    return {(namespace, name): {"metrics": dict(status.get("metrics") or {}), "spec": copy.deepcopy(dict(spec)),
                                "checks": copy.deepcopy(list(status.get("checks") or [])),
                                "dataset": f"{namespace}/{ref.get('name')}",
                                "trainedOn": f"{ref.get('namespace') or namespace}/{ref.get('name')}",
                                "datasetDigest": status.get("datasetDigest")}}


@TRAININGRUNS.view
def requirements_by_run_dataset(namespace: str, spec: kopf.Spec, **_: Any) -> dict:
    """The Requirements whose candidates were trained on a Dataset: its new status may change their verdict."""
    ref = spec.get("datasetRef") or {}
    keys = _refs(spec, namespace)
    return {(ref.get("namespace") or namespace, ref.get("name")): tuple(keys)} if keys else {}


@kopf.index(GROUP, VERSION, "modelpackages")
def packages_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    # Packages without their own refs inherit the run's: the package status records the ones it judged.
    keys = set(_refs(spec, namespace)) | {(namespace, r["requirement"]) for r in status.get("requirements") or []}
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase"), "stage": status.get("stage"),
             "run": spec.get("trainingRunRef", {}).get("name"), "model": spec.get("model"),
             "serve": dict(spec.get("serve") or {}) or None, "promoted": _condition_message(status, "Promoted")}
    return {key: entry for key in keys}


def _condition_message(status: Mapping[str, Any], type_: str) -> str | None:
    return next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == type_), None)


@kopf.index(GROUP, VERSION, "datasets")
def datasets_by_requirement(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    entry = {"name": name, "namespace": namespace, "phase": status.get("phase")}
    return {key: entry for key in _refs(spec, namespace)}


@measured("Requirement")
def evaluate(body: Mapping[str, Any], indexes: Mapping[str, kopf.Index]) -> dict[str, Any] | None:
    """Recompute one Requirement's status from the indexes; write it only when it changed."""
    meta, raw_spec, status = body["metadata"], dict(body["spec"]), dict(body.get("status") or {})
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    runs = list(indexes["runs_by_requirement"].get(key, []))
    packages = list(indexes["packages_by_requirement"].get(key, []))
    datasets = list(indexes["datasets_by_requirement"].get(key, []))
    runs_by_name = indexes["runs_by_name"]
    run_lookup = {n: next(iter(runs_by_name.get((namespace, n), [])), {}) for n in {p.get("run") for p in packages} if n}
    wanted = {r.get("dataset") for r in runs} | {v.get("dataset") for v in run_lookup.values()}
    dataset_lookup = {}
    for ref in wanted:
        found = next(iter(indexes["datasets_by_name"].get(ref, [])), None) if ref else None
        if found is not None:
            dataset_lookup[ref] = DatasetStatus.model_validate(found)
    spec = RequirementSpec.model_validate(raw_spec)
    current = RequirementStatus.model_validate(status)
    outcome = requirement_status(name, spec, runs, packages, datasets, run_lookup, dataset_lookup,
                                 list(current.conditions), meta.get("generation", 1), utcnow())
    retrains = _retrain(name, namespace, spec, current, packages, indexes, outcome)
    if retrains is not None:
        outcome.status["retrains"] = retrains
    return commit(body, outcome)


def _evaluate_all(keys: Iterable[Key], requirement_bodies: kopf.Index, indexes: Mapping[str, kopf.Index]) -> None:
    for key in dict.fromkeys(keys):
        for body in requirement_bodies.get(key, []):
            if evaluate(body, indexes) is None:  # the index's copy was behind: once more, fresh
                fresh = get_object("requirements", key[0], key[1])
                if fresh is not None:
                    evaluate(fresh, indexes)


INDEXES = ("packages_by_requirement", "datasets_by_requirement", "datasets_by_name")


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {**{name: kwargs[name] for name in INDEXES},
            "runs_by_requirement": runs_by_requirement.of(kwargs), "runs_by_name": runs_by_name.of(kwargs)}


def _freshness(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("data") or {}).get("maxAge"))


@kopf.on.create(GROUP, VERSION, "requirements")
@kopf.on.update(GROUP, VERSION, "requirements", field="spec")
@kopf.on.resume(GROUP, VERSION, "requirements")
@pinned
def requirement_changed(body: kopf.Body, **kwargs: Any) -> None:
    evaluate(body, _indexes(kwargs))


@kopf.timer(GROUP, VERSION, "requirements", interval=max(get_settings().poll_interval, 60.0), sharp=False,
            when=_freshness)
@pinned
def requirement_tick(body: kopf.Body, **kwargs: Any) -> None:
    """Freshness is judged against the clock: re-evaluate now and then, only where a maxAge is set."""
    evaluate(body, _indexes(kwargs))


@kopf.on.event(GROUP, VERSION, "trainingruns", when=lambda spec, **_: bool(spec.get("requirementRefs")))
def run_moved(namespace: str, spec: kopf.Spec, requirement_bodies: kopf.Index, **kwargs: Any) -> None:
    _evaluate_all(_refs(spec, namespace), requirement_bodies, _indexes(kwargs))


@kopf.on.event(GROUP, VERSION, "modelpackages")
def package_moved(namespace: str, spec: kopf.Spec, status: kopf.Status, requirement_bodies: kopf.Index,
                  **kwargs: Any) -> None:
    keys = [*_refs(spec, namespace), *((namespace, r["requirement"]) for r in status.get("requirements") or [])]
    _evaluate_all(keys, requirement_bodies, _indexes(kwargs))


@kopf.on.event(GROUP, VERSION, "datasets")
def dataset_moved(namespace: str, name: str, spec: kopf.Spec, requirement_bodies: kopf.Index,
                  requirements_by_retrain_dataset: kopf.Index, **kwargs: Any) -> None:
    here = (namespace, name)
    keys = [*_refs(spec, namespace), *requirements_by_retrain_dataset.get(here, []),
            *(key for keys in requirements_by_run_dataset.of(kwargs).get(here) for key in keys)]
    _evaluate_all(keys, requirement_bodies, _indexes(kwargs))


def _retrain(name: str, namespace: str, spec: RequirementSpec, current: RequirementStatus, packages: list[dict],
             indexes: Mapping[str, kopf.Index], outcome: Outcome) -> list[dict] | None:
    """The retrain policy: on a new collection version with enough new rows (or drift), run and package again.

    The run and package get deterministic names from the count of earlier retrainings in status, so a pass that
    repeats the step (a crash, a stale body) finds them created (409) and the status write settles it once."""
    records = [r.to_wire() for r in current.retrains or []]
    by_package = {p["name"]: p for p in packages}
    for record in records:  # follow what became of earlier retrainings
        pkg = by_package.get(record.get("package") or "")
        if pkg and pkg.get("phase") == "Packaged":
            outcome_text = (f"promoted to {pkg['stage']}" if pkg.get("stage") in ("Staging", "Production")
                            else f"not promoted: {pkg.get('promoted') or 'see the package'}")[:256]
            if record.get("outcome") != outcome_text:
                record["outcome"] = outcome_text
    unchanged = None if records == [r.to_wire() for r in current.retrains or []] else records
    policy = spec.retrain
    if policy is None or not policy.enabled:
        return unchanged
    ds_namespace = policy.dataset_ref.namespace or namespace
    found = next(iter(indexes["datasets_by_name"].get(f"{ds_namespace}/{policy.dataset_ref.name}", [])), None)
    ds = DatasetStatus.model_validate(found) if found else None
    if ds is None or not ds.version or (records and records[-1]["datasetVersion"] == ds.version):
        return unchanged
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
        trained = next(iter(indexes["runs_by_name"].get((namespace, production.get("run") or ""), [])), {})
        column, psi = _drift_against_production(namespace, ds_namespace, policy.dataset_ref.name, ds.digest, trained)
        if psi > trigger.drift_threshold:
            reason = f"drift PSI {psi:.3f} on {column} > {trigger.drift_threshold} against the production model's data"
    if reason is None:
        return unchanged
    model = production["model"] if production else None
    template_ns = policy.template_run_ref.namespace or namespace
    template = next(iter(indexes["runs_by_name"].get((template_ns, policy.template_run_ref.name), [])), None)
    if template is None or model is None:
        return unchanged  # nothing to copy, or no model to compete with yet: the next event looks again
    train_ref, train_version = policy.dataset_ref, ds.version
    if policy.training_dataset_ref is not None:
        train_ref = policy.training_dataset_ref
        train_ns = train_ref.namespace or namespace
        found = next(iter(indexes["datasets_by_name"].get(f"{train_ns}/{train_ref.name}", [])), None)
        train_version = including_version(DatasetStatus.model_validate(found) if found else None, ds_namespace,
                                          policy.dataset_ref.name, ds.digest or "")
        if train_version is None:
            return unchanged  # the combined Dataset has not cut the version with these rows yet: its event comes
    train_ns = train_ref.namespace or namespace
    count = len(records) + 1
    run_name = f"{name}-retrain-{count}"[:63]
    start_retrain(namespace, name, run_name, template["spec"],
                  {"name": train_ref.name, "version": train_version,
                   **({"namespace": train_ns} if train_ns != namespace else {})},
                  model, policy.promote_to, production.get("serve") if production else None,
                  shadow=spec.live is not None)
    trained_on = f"{train_ref.name}@{train_version}"
    records.append({"run": run_name, "datasetVersion": ds.version, "trainedOn": trained_on, "reason": reason[:256],
                    "package": run_name, "outcome": "pending", "createdAt": iso(utcnow())})
    includes = "" if train_ref is policy.dataset_ref else f" (includes {policy.dataset_ref.name}@{ds.version})"
    outcome.events.append(Event("Normal", "RetrainTriggered", f"{run_name} on {trained_on}{includes}: {reason}"))
    return records[-50:]


def _drift_against_production(namespace: str, ds_namespace: str, dataset: str, digest: str,
                              trained: Mapping[str, Any]) -> tuple[str, float]:
    """Largest PSI of a shared numeric column: the collection version against the production model's training data.

    Computed from the two versions' profile sketches (two small files, whatever the data size), and kept in the
    bucket per pair since versions are immutable. A version profiled before sketches existed gives no PSI."""
    from mloop.data.drift import drift
    from mloop.storage.artifacts import AlreadyExists, operator_store
    from mloop.storage.layout import dataset_prefix, drift_entry

    trained_digest, trained_on = trained.get("datasetDigest"), trained.get("trainedOn") or ""
    if not trained_digest or "/" not in trained_on:
        return "", 0.0
    trained_ns, trained_name = trained_on.split("/", 1)
    before_hex, after_hex = trained_digest.removeprefix("sha256:"), digest.removeprefix("sha256:")
    store = operator_store()
    key = drift_entry(namespace, before_hex, after_hex)
    cached = store.get_json_or_none(key)
    if cached is not None:
        return cached["column"], float(cached["psi"])
    before = store.get_json(dataset_prefix(trained_ns, trained_name, before_hex) + "profile.json")
    after = store.get_json(dataset_prefix(ds_namespace, dataset, after_hex) + "profile.json")
    scores = [(str(d["column"]), float(d["value"])) for d in drift(before, after, limit=10**6) if d["method"] == "psi"]
    column, value = max(scores, key=lambda kv: kv[1], default=("", 0.0))
    try:
        store.put_json(key, {"column": column, "psi": value})
    except AlreadyExists:
        pass  # another pass computed the same pair
    return column, value


def start_retrain(namespace: str, requirement: str, run_name: str, template_spec: Mapping[str, Any],
                  dataset_ref: dict[str, Any], model: str, promote_to: str, serve: Mapping[str, Any] | None,
                  labels: Mapping[str, str] | None = None, require_improvement: bool = True,
                  shadow: bool = False) -> None:
    """A retraining: the template run's spec on the given data, and a package of it asking for promote_to. Both by
    deterministic name, so a pass that repeats the step finds them (409). The feedback loop and an erasure
    request (handlers/erasure) start retrainings this one way."""
    run_spec = {**template_spec, "datasetRef": dataset_ref}
    run_labels = {"mloop.dev/retrain-of": requirement, **(labels or {}),
                  **({"mloop.dev/experiment": run_spec["experiment"]} if run_spec.get("experiment") else {})}
    _create("trainingruns", namespace, "TrainingRun", run_name, run_spec, run_labels)
    package_spec = {"model": model, "trainingRunRef": {"name": run_name}, "stage": promote_to,
                    "requirementRefs": [{"name": requirement}], "requireImprovement": require_improvement}
    if serve:
        package_spec["serve"] = dict(serve)
    if shadow:  # the Requirement's live criterion: it must beat Production on traffic it shadowed first
        package_spec["shadow"] = {"samplingRate": 1.0}
    _create("modelpackages", namespace, "ModelPackage", run_name, package_spec,
            {"mloop.dev/retrain-of": requirement, **(labels or {})})


def _create(plural: str, namespace: str, kind: str, name: str, spec: dict, labels: dict) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
    try:
        custom_objects().create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    except ApiException as err:
        if err.status != 409:  # 409: created by an earlier pass whose status write did not land
            raise
