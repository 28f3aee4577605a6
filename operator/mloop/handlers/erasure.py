"""ErasureRequest handlers: gather (indexes, the keys as salted hashes), ask reconcile/erasure, act, commit.

The keys are read from the Secret or S3 object on each Pending pass, hashed with the namespace's salt and
dropped: they never reach status, events, logs or the task (which gets the hashes).
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

import kopf
from botocore.exceptions import ClientError
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mloop.api.common import Condition, iso, utcnow
from mloop.api.dataset import DatasetStatus, DatasetVersion
from mloop.api.erasure import EraseResult, EraseTaskSpec, ErasureRequestSpec, ErasureRequestStatus
from mloop.api.kinds import API_VERSION, GROUP, VERSION
from mloop.api.tasks import Task, task_name
from mloop.config import get_settings
from mloop.data.erasure import bury, parse_keys, subject_hash
from mloop.executors.factory import executor_for
from mloop.handlers.common import commit, pinned
from mloop.handlers.jobs import task_state
from mloop.handlers.requirement import start_retrain
from mloop.handlers.views import TRAININGRUNS
from mloop.k8s.client import api_client, get_object
from mloop.reconcile import erasure as decide
from mloop.reconcile.outcome import Outcome, describe_validation_error
from mloop.storage.artifacts import AlreadyExists, StorageUnavailable, missing, operator_store
from mloop.storage.layout import (dataset_prefix, erasure_audit, erasure_filters, erasure_salt, retention_audit,
                                  task_prefix)

log = logging.getLogger("mloop.handlers.erasure")


def erase_task(namespace: str, name: str, uid: str, spec: ErasureRequestSpec) -> Task:
    task = task_name("erase", name, uid)
    prefix = task_prefix(namespace, task)
    return Task(name=task, namespace=namespace, kind="erase", command=["python", "-m", "mloop.workloads.erase", prefix],
                prefix=prefix, owner={"apiVersion": API_VERSION, "kind": "ErasureRequest", "name": name, "uid": uid},
                deadline_seconds=3600, backoff_limit=0)


def _salt(namespace: str) -> str:
    """The namespace's salt: written once (a racing writer reads the winner's), so every filter shares it."""
    store = operator_store()
    found = store.get_json_or_none(erasure_salt(namespace))
    if found is None:
        try:
            store.put_json(erasure_salt(namespace), {"salt": secrets.token_hex(16)})
        except AlreadyExists:
            pass
        found = store.get_json(erasure_salt(namespace))
    return str(found["salt"])


def _keys(namespace: str, spec: ErasureRequestSpec, salt: str) -> decide.Keys:
    source = spec.keys_from
    if source.secret_key_ref is not None:
        ref = source.secret_key_ref
        try:
            secret = client.CoreV1Api(api_client()).read_namespaced_secret(ref.name, namespace)
        except ApiException as err:
            if err.status in (403, 404):
                return decide.Keys(error=("SecretNotFound", f"spec.keysFrom.secretKeyRef: Secret {ref.name} "
                                                            f"{'does not exist' if err.status == 404 else 'cannot be read'}"))
            raise
        raw = (secret.data or {}).get(ref.key)
        if raw is None:
            return decide.Keys(error=("KeyNotInSecret", f"spec.keysFrom.secretKeyRef: Secret {ref.name} has no key {ref.key}"))
        text = base64.b64decode(raw).decode("utf-8", errors="replace")
    else:
        assert source.s3 is not None
        bucket, _, key = source.s3.uri.removeprefix("s3://").partition("/")
        try:
            text = operator_store().client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace")
        except ClientError as err:
            if missing(err) or err.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return decide.Keys(error=("KeysObjectNotFound", f"spec.keysFrom.s3.uri: no object at {source.s3.uri}"))
            raise
    keys = parse_keys(text)
    if not keys:
        return decide.Keys(error=("NoKeys", "spec.keysFrom: the keys source lists no subject key (one per line)"))
    return decide.Keys(hashes=sorted({subject_hash(salt, k) for k in keys}))


def _views(namespace: str, index: kopf.Index) -> dict[str, decide.DatasetView]:
    views = {}
    for entry in index.get(namespace, []):
        status, spec = entry["status"], entry["spec"]
        source = next(iter(spec.get("source") or {}), "")
        views[entry["name"]] = decide.DatasetView(
            name=entry["name"], roles={c["name"]: c.get("role", "feature") for c in status.get("columns") or []},
            parents=decide.parents_of(namespace, spec), digest=status.get("digest"), task=status.get("task"),
            source=source, model=((spec.get("source") or {}).get("collection") or {}).get("model"))
    return views


def _models_by_dataset(namespace: str, views: Mapping[str, decide.DatasetView], runs: kopf.Index,
                       packages: kopf.Index) -> dict[str, set[str]]:
    """Dataset -> the registered models of packages built from runs trained on it (from the indexes)."""
    return {name: {p["model"] for run in runs.get((namespace, name), [])
                   for p in packages.get((namespace, run["name"]), []) if p.get("model")} for name in views}


def _commit_fresh(plural: str, namespace: str, name: str, outcome_for: Any) -> bool:
    """Write another object's status on condition of its resourceVersion, again on a conflict. False: it is gone."""
    for _ in range(5):
        body = get_object(plural, namespace, name)
        if body is None:
            return False
        if commit(body, outcome_for(body)) is not None:
            return True
    raise kopf.TemporaryError(f"{plural} {namespace}/{name} kept changing; trying again", delay=2)


def _apply(body: Mapping[str, Any], spec: ErasureRequestSpec, status: ErasureRequestStatus, result: EraseResult,
           runs_by_dataset: kopf.Index, packages_by_run: kopf.Index
           ) -> tuple[list[str], list[str], list[str], str, list[str]]:
    """Applying: every write is idempotent (conditional, or write-once), so a second pass after a kill is harmless."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    now = utcnow()
    touched = set(status.datasets or [])
    for dataset in sorted(touched):
        def outcome_for(ds: Mapping[str, Any], dataset: str = dataset) -> Outcome:
            source = next(iter(ds["spec"].get("source") or {}), "")
            return decide.dataset_outcome(name, DatasetStatus.model_validate(dict(ds.get("status") or {})), result,
                                          dataset, source, dataset in spec.datasets, ds["metadata"].get("generation", 1),
                                          now)
        _commit_fresh("datasets", namespace, dataset, outcome_for)

    erased = {(v.dataset, v.version) for v in result.tombstoned}
    runs = sorted({run["name"] for dataset in touched for run in runs_by_dataset.get((namespace, dataset), [])
                   if (dataset, run["version"]) in erased})
    for run in runs:
        def flag_run(obj: Mapping[str, Any]) -> Outcome:
            st = dict(obj.get("status") or {})
            conditions = [Condition.model_validate(c) for c in st.get("conditions") or []]
            return decide.flag_outcome(name, conditions, f"trained on erased version {st.get('dataset')}",
                                       obj["metadata"].get("generation"), now)
        _commit_fresh("trainingruns", namespace, run, flag_run)
    packages = sorted({p["name"] for run in runs for p in packages_by_run.get((namespace, run), [])})
    for package in packages:
        def flag_package(obj: Mapping[str, Any]) -> Outcome:
            conditions = [Condition.model_validate(c) for c in (obj.get("status") or {}).get("conditions") or []]
            run = obj["spec"]["trainingRunRef"]["name"]
            return decide.flag_outcome(name, conditions, f"built from TrainingRun {run}, trained on erased data",
                                       obj["metadata"].get("generation"), now)
        _commit_fresh("modelpackages", namespace, package, flag_package)

    production: dict[str, list[dict[str, Any]]] = {}  # requirement -> its live packages trained on erased data
    for package in packages:
        obj = get_object("modelpackages", namespace, package) or {}
        pkg_status = obj.get("status") or {}
        serving = any(c.get("type") == "Serving" and c.get("status") == "True" for c in pkg_status.get("conditions") or [])
        if pkg_status.get("stage") == "Production" or serving:
            for ref in obj["spec"].get("requirementRefs") or []:
                if (ref.get("namespace") or namespace) == namespace:
                    production.setdefault(ref["name"], []).append(obj)
    retrains: list[str] = []
    for requirement, held in sorted(production.items()):
        req = get_object("requirements", namespace, requirement)
        if req is None:
            continue
        policy = dict(req["spec"].get("retrain") or {})
        started = None
        if policy and policy.get("enabled", True):
            started, waiting = _start_retrain(namespace, name, uid, requirement, policy, held[0], result)
            if waiting:
                raise _Waiting(waiting)
            if started:
                retrains.append(f"{requirement}: {started}")

        def ask_retrain(obj: Mapping[str, Any], held: list[dict[str, Any]] = held, started: str | None = started,
                        policy: dict[str, Any] = policy) -> Outcome:
            conditions = [Condition.model_validate(c) for c in (obj.get("status") or {}).get("conditions") or []]
            return decide.requirement_outcome(name, conditions, [p["metadata"]["name"] for p in held], bool(policy),
                                              obj["metadata"].get("generation"), now, started)
        _commit_fresh("requirements", namespace, requirement, ask_retrain)

    store = operator_store()
    key = erasure_audit(namespace, name, uid)
    record = {"kind": "ErasureAudit", "request": {"namespace": namespace, "name": name, "uid": uid},
              "reason": spec.reason, "subjectColumn": spec.subject_column, "subjects": status.subjects,
              "keysFrom": spec.keys_from.to_wire(), "datasets": sorted(touched),
              "rowsErased": result.rows_erased, "versionsTombstoned": [v.to_wire() for v in result.tombstoned],
              "datasetsRecut": result.recut, "tasksErased": result.tasks, "runsFlagged": runs,
              "packagesFlagged": packages, "requirementsAsked": sorted(production), "retrainsStarted": retrains,
              "completedAt": now.isoformat()}
    try:
        store.put_json(key, record)
    except AlreadyExists:  # an earlier pass wrote it
        pass
    return runs, packages, sorted(production), store.uri(key), retrains


class _Waiting(Exception):
    """Applying cannot finish yet (a cleaned version is still being cut): the timer's next pass goes on."""


def _start_retrain(namespace: str, request: str, uid: str, requirement: str, policy: Mapping[str, Any],
                   package: Mapping[str, Any], result: EraseResult) -> tuple[str | None, str | None]:
    """The Requirement's retrain policy applied to the cleaned data: its template run on the version, without the
    subjects, of the Dataset the live package was trained on; packaged for the policy's stage. Returns (what was
    started, or None when it cannot be; what it still waits for)."""
    run = get_object("trainingruns", namespace, package["spec"]["trainingRunRef"]["name"]) or {}
    dataset = str((run.get("status") or {}).get("dataset") or "").rpartition("@")[0]
    template_ref = policy.get("templateRunRef") or {}
    template = get_object("trainingruns", template_ref.get("namespace") or namespace, template_ref.get("name", ""))
    if not dataset or template is None:
        return None, None
    ds = get_object("datasets", namespace, dataset)
    if ds is None:
        return None, None
    ds_status = ds.get("status") or {}
    version = ds_status.get("version")
    erased = {v.version for v in result.tombstoned if v.dataset == dataset}
    if ds_status.get("phase") == "Failed" and not ds_status.get("task"):
        return None, None  # no cleaned version will come by itself: the Requirement is asked instead
    if not version or version in erased or ds_status.get("task"):
        return None, f"Dataset {dataset} is cutting its version without the subjects; the retrain starts on it"
    run_name = decide.retrain_name(requirement, uid)
    retrain_of = {"mloop.dev/erasure": request}
    # The model was trained on the subjects: its replacement needs to meet the criteria, not beat it.
    start_retrain(namespace, requirement, run_name, template["spec"], {"name": dataset, "version": version},
                  package["spec"]["model"], policy.get("promoteTo", "Production"), package["spec"].get("serve"),
                  retrain_of, require_improvement=False)
    return f"{run_name} on {dataset}@{version}", None


def reconcile_erasure(body: Mapping[str, Any], datasets: kopf.Index, runs: kopf.Index, packages: kopf.Index,
                      jobs: kopf.Index | None = None) -> None:
    meta = body["metadata"]
    namespace, name, uid, generation = meta["namespace"], meta["name"], meta["uid"], meta.get("generation", 1)
    now = utcnow()
    status = ErasureRequestStatus.model_validate(dict(body.get("status") or {}))
    if status.phase in ("Complete", "Failed"):
        commit(body, Outcome())  # only the outbox, if anything is owed
        return
    try:
        spec = ErasureRequestSpec.model_validate(dict(body["spec"]))
    except ValidationError as err:
        d = decide._Draft(status, generation, now)
        d.fail("InvalidSpec", describe_validation_error(err))
        commit(body, d.decision().outcome())
        return
    task = erase_task(namespace, name, uid, spec)
    executor = executor_for(spec.executor)
    store = operator_store()
    try:
        if status.phase == "Erasing" and status.task:
            state = task_state(executor, task, jobs or {})  # a Job from the watch (handlers/jobs.py): no GET
            if not state.finished and state.phase != "Missing":
                return
            raw = store.get_json_or_none(task.prefix + "result.json")
            if raw is None and state.phase == "Missing":
                executor.submit(task)  # submitted before a kill, never claimed: the same task again
                return
            result = EraseResult.model_validate(raw) if raw is not None else None
            commit(body, decide.fold(status, state, result, generation, now).outcome())
            return
        if status.phase == "Applying":
            result = EraseResult.model_validate(store.get_json(task.prefix + "result.json"))
            try:
                flagged_runs, flagged_packages, asked, audit, retrains = _apply(body, spec, status, result, runs,
                                                                                 packages)
            except _Waiting as waiting:
                d = decide._Draft(status, generation, now)
                d.wait("WaitingForCleanedVersion", str(waiting))
                commit(body, d.decision().outcome())
                return
            commit(body, decide.complete(status, flagged_runs, flagged_packages, asked, audit, generation, now,
                                         retrains).outcome())
            return

        views = _views(namespace, datasets)
        salt = _salt(namespace)
        keys = _keys(namespace, spec, salt)
        decision = decide.plan(spec, status, views, keys, task.name, generation, now,
                               _models_by_dataset(namespace, views, runs, packages))
        for start in decision.of(decide.StartErase):
            for target in start.targets:  # the standing filter first: an ingestion from now on drops the subjects
                key = erasure_filters(namespace, target.name) + f"{uid}.json"
                try:
                    store.put_json(key, {"request": f"{namespace}/{name}", "uid": uid, "column": spec.subject_column,
                                         "salt": salt, "hashes": keys.hashes})
                except AlreadyExists:
                    pass
            store.put_json(task.prefix + "spec.json", EraseTaskSpec(
                namespace=namespace, name=name, uid=uid, column=spec.subject_column, salt=salt, hashes=keys.hashes,
                targets=start.targets, models=start.models).to_wire(), overwrite=True)
            executor.submit(task)
        commit(body, decision.outcome())
    except StorageUnavailable as err:
        d = decide._Draft(status, generation, now)
        d.wait("StorageUnavailable", f"{err}; retrying")
        commit(body, d.decision().outcome())


# --- retention: deletes through the erasure path, never what a Production package depends on ------------------

_VERSION_LABEL = re.compile(r"^([a-z0-9][-a-z0-9.]*)@([0-9a-f]{12})$")


_PARENTS: dict[tuple[str, str, str], list[tuple[str, str]]] = {}  # manifests are write-once: read each once


def _version_parents(namespace: str, dataset: str, version: str) -> list[tuple[str, str]]:
    """The parent versions a derived version was cut from, as its manifest names them (name@version)."""
    if (namespace, dataset, version) in _PARENTS:
        return _PARENTS[(namespace, dataset, version)]
    store = operator_store()
    prefix = dataset_prefix(namespace, dataset, "").rstrip("/") + "/"
    for key in store.list_keys(prefix):
        if key.startswith(prefix + version) and key.endswith("/manifest.json"):
            source = str(store.get_json(key).get("source", ""))
            found = [(m[1], m[2]) for part in source.split(",") if (m := _VERSION_LABEL.match(part.strip()))]
            if len(_PARENTS) > 10_000:
                _PARENTS.clear()
            _PARENTS[(namespace, dataset, version)] = found
            return found
    return []


def retention_holds(namespace: str, dataset: str, indexes: Mapping[str, kopf.Index]) -> dict[str, str]:
    """Versions of `dataset` a Production package depends on: its run pinned the version, or a version of a
    Dataset derived from it that was cut from the version (through every generation). Version -> why."""
    views = _views(namespace, indexes["erasure_datasets"])
    family = decide.descendants([dataset], views)
    holds: dict[str, str] = {}
    for name in family:
        for run in erasure_runs.of(indexes).get((namespace, name)):
            for package in indexes["erasure_packages"].get((namespace, run["name"]), []):
                if package.get("stage") != "Production":
                    continue
                why = (f"Production ModelPackage {package['name']} depends on it (TrainingRun {run['name']} "
                       f"trained on {name}@{run['version']})")
                todo, seen = [(name, run["version"])], set()
                while todo:
                    at = todo.pop()
                    if at in seen:
                        continue
                    seen.add(at)
                    if at[0] == dataset:
                        holds.setdefault(at[1], why)
                    else:
                        todo += [p for p in _version_parents(namespace, *at) if p[0] in family]
    return holds


def expire(body: Mapping[str, Any], status: DatasetStatus, expired: list[DatasetVersion], days: int,
           indexes: Mapping[str, kopf.Index] | None) -> Outcome:
    """Retention: each expired version no Production package depends on is tombstoned like an erased one (the
    tombstone, then the data, then a write-once audit record); the others are named in RetentionHeld."""
    if indexes is None:
        return Outcome()  # a pass on a parent's event: the Dataset's own timer comes with the indexes
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    now = utcnow()
    holds = retention_holds(namespace, name, indexes)
    deleted, held = decide.retention_split(expired, holds)
    store = operator_store()
    for version in deleted:
        digest = version.digest.removeprefix("sha256:")
        prefix = dataset_prefix(namespace, name, digest)
        record = {"namespace": namespace, "dataset": name, "version": version.version, "digest": version.digest,
                  "rows": version.rows, "createdAt": iso(version.created_at), "retentionDays": days}
        bury(store, prefix, [k[len(prefix):] for k in store.list_keys(prefix)],
             {"kind": "DatasetVersionTombstone", **record, "reason": f"retention: older than {days} days",
              "erasedAt": iso(now)})
        try:
            store.put_json(retention_audit(namespace, name, digest), {"kind": "RetentionAudit", **record,
                                                                      "deletedAt": iso(now)})
        except AlreadyExists:  # an earlier pass, killed before its status write
            pass
        log.info("Dataset %s/%s: version %s deleted by retention (%d days), tombstone left", namespace, name,
                 version.version, days)
    return decide.retention_outcome(status, deleted, held, holds, days, meta.get("generation"), now)


def _in_flight(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in ("Complete", "Failed") or bool(status.get("outbox"))


@kopf.index(GROUP, VERSION, "datasets")
def erasure_datasets(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """Datasets by namespace with what an erasure needs: columns and roles, parents, current digest, task."""
    source = {kind: (dict(value) if kind in ("derived", "collection") else {})
              for kind, value in (spec.get("source") or {}).items()}
    return {namespace: {"name": name, "spec": {"source": source},
                        "status": {k: status.get(k) for k in ("columns", "digest", "task")}}}


@TRAININGRUNS.view
def erasure_runs(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict | None:
    """Runs by the Dataset they pinned: the runs an erased version flags."""
    pinned = status.get("dataset")
    if not pinned or "@" not in pinned:
        return None
    dataset, _, version = pinned.rpartition("@")
    return {(namespace, dataset): {"name": name, "version": version}}


@kopf.index(GROUP, VERSION, "modelpackages")
def erasure_packages(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """Packages by the run they were built from, with the stage granted: what an erasure flags, what retention keeps."""
    run = (spec.get("trainingRunRef") or {}).get("name")
    entry = {"name": name, "model": spec.get("model"), "stage": status.get("stage")}
    return {(namespace, run): entry} if run else {}  # {}, not None: kopf keeps old entries on None


@kopf.on.create(GROUP, VERSION, "erasurerequests")
@kopf.on.resume(GROUP, VERSION, "erasurerequests")
@pinned
def erasure_created(body: kopf.Body, erasure_datasets: kopf.Index, erasure_packages: kopf.Index,
                    task_jobs: kopf.Index, **kwargs: Any) -> None:
    reconcile_erasure(dict(body), erasure_datasets, erasure_runs.of(kwargs), erasure_packages, task_jobs)


@kopf.timer(GROUP, VERSION, "erasurerequests", interval=get_settings().poll_interval, sharp=False, when=_in_flight)
@pinned
def erasure_tick(body: kopf.Body, erasure_datasets: kopf.Index, erasure_packages: kopf.Index,
                 task_jobs: kopf.Index, **kwargs: Any) -> None:
    reconcile_erasure(dict(body), erasure_datasets, erasure_runs.of(kwargs), erasure_packages, task_jobs)
