"""Export of a succeeded TrainingRun to an MLflow tracking server: params, metrics, tags, the model.

The model is read from S3 digest-checked and allow-listed (mloop.storage.models.load_model) and logged as
an MLflow sklearn model in the skops format, with a signature built from the features and types the run
recorded in its spec.json. No data set is read.

Exports are idempotent: the MLflow run carries the Kubernetes uid as a tag, and a retry reuses the run
with that tag, skips what it already holds, and reuses a logged model that finished uploading. mlflow
is imported only when an export happens, so an operator without a tracking URI never loads it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from botocore.exceptions import ClientError

from mloop.storage.artifacts import DigestMismatch, Store, missing
from mloop.storage.layout import dataset_prefix
from mloop.storage.models import TRUSTED_TYPES, UntrustedModel, load_model

if TYPE_CHECKING:
    from mloop.api.trainingrun import MlflowSpec
    from mloop.config import Settings

log = logging.getLogger("mloop.integrations.mlflow")

UID_TAG = "mloop.k8s.uid"
DONE_TAG = "mloop.export"  # "complete" once everything is logged: a retry then has nothing to do
MODEL_NAME = "model"
# Connection refused must fail at once and a silent server within seconds: the first attempt runs inside
# the reconcile pass that marks the run Succeeded. The operator retries with its own backoff instead.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
LOCK_WAIT_SECONDS = 30.0
# Dataset column types as MLflow signature types. Numeric features are doubles even when the column holds
# integers: the pipeline imputes and scales them as floats, and a long column would refuse a missing value.
INPUT_TYPES = {"integer": "double", "float": "double", "boolean": "boolean", "datetime": "datetime",
               "string": "string", "category": "string"}
PIP_PACKAGES = ("scikit-learn", "skops", "numpy", "scipy", "pandas")
# mlflow sends these to whatever server it talks to: never to a server a run names rather than the operator.
CREDENTIAL_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                  "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_TRACKING_AUTH")

# mlflow's fluent state (the tracking URI that log_model uses) is process-global, and kopf runs the
# synchronous handlers on a thread pool: one export at a time.
_lock = threading.Lock()


class ExportRefused(Exception):
    """The run's own artifacts cannot be exported (missing, digest mismatch, untrusted types): a retry won't help."""


class ExportBusy(Exception):
    """Another export holds the lock: try again soon, without counting an attempt."""


@dataclass(frozen=True)
class Target:
    tracking_uri: str
    experiment: str
    operators: bool = True  # the operator's own tracking server, not one a run names


@dataclass(frozen=True)
class RunRecord:
    """What the operator knows of a succeeded run, from its object."""

    namespace: str
    name: str
    uid: str
    estimator: str
    model_uri: str  # s3://bucket/key of model.skops (another run's, after a cache hit)
    model_digest: str
    metrics: dict[str, float]
    dataset: str = ""  # name@version
    dataset_digest: str = ""
    requirement_refs: list[str] = field(default_factory=list)
    requirements_met: bool | None = None
    primary_metric: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Exported:
    experiment_id: str
    run_id: str
    model_uri: str


def target_for(block: MlflowSpec | None, run_experiment: str | None, namespace: str,
               settings: Settings) -> Target | None:
    """Where a run goes, or None when it is not exported: the run's block, then the operator's settings."""
    if block is not None and not block.enabled:
        return None
    uri = (block.tracking_uri if block else None) or settings.mlflow_tracking_uri
    if not uri:
        return None
    experiment = (block.experiment if block else None) or run_experiment or settings.mlflow_experiment or namespace
    uri = uri.rstrip("/")
    return Target(uri, experiment, operators=uri == settings.mlflow_tracking_uri.rstrip("/"))


def shown(uri: str) -> str:
    """The URI for status, events and logs: without any user:password@ the operator's setting may carry."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def allowed(target: Target, settings: Settings) -> bool:
    """A tracking URI a run names is a request the operator makes on its behalf: only to listed servers."""
    prefixes = [p.strip().rstrip("/") for p in settings.mlflow_allowed_uris.split(",") if p.strip()]
    uri = target.tracking_uri
    return target.operators or any(uri == p or uri.startswith(p + "/") for p in prefixes)


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Wait after the attempts-th failed attempt: base, 2·base, 4·base … at most cap."""
    if attempts < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(attempts - 1, 62))


def output_type(task: str, classes: Any = None) -> str:
    if task != "classification":
        return "double"
    kind = getattr(getattr(classes, "dtype", None), "kind", "O")
    return {"i": "long", "u": "long", "b": "boolean", "f": "double"}.get(kind, "string")


def signature_for(features: list[str], types: dict[str, str], target: str, task: str, classes: Any = None) -> Any:
    """The MLflow ModelSignature of a run's pipeline: one input column per feature, the target as output."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(INPUT_TYPES.get(types.get(f, "string"), "string"), f) for f in features])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(output_type(task, classes), target)]))


def short_error(err: BaseException, limit: int = 200) -> str:
    """One line about why MLflow could not be reached, not the stack of urllib3 wrappers."""
    text = str(err)
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "unknown host"), ("Temporary failure in name resolution",
                                                                          "unknown host")):
        if needle in text:
            return said
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return f"{type(err).__name__}: {line}"[:limit]


def export_run(target: Target, record: RunRecord, store: Store, known_run_id: str | None = None) -> Exported:
    """Log the run to MLflow, or finish an earlier partial export of it. Raises on any failure."""
    if not target.operators and any(os.environ.get(name) for name in CREDENTIAL_ENV):
        raise ExportRefused("the operator holds MLflow credentials, which go only to its own tracking server "
                            "(MLOOP_MLFLOW_TRACKING_URI), not to one a run names")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not _lock.acquire(timeout=LOCK_WAIT_SECONDS):
        raise ExportBusy("another MLflow export is in progress")
    try:
        return _export(target, record, store, known_run_id)
    finally:
        _lock.release()


def _read(store: Store, key: str) -> bytes:
    try:
        return store.get(key)
    except ClientError as err:
        if missing(err):
            raise ExportRefused(f"{store.uri(key)} is gone") from err
        raise


def _export(target: Target, record: RunRecord, store: Store, known_run_id: str | None) -> Exported:
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(target.tracking_uri)
    experiment_id = _experiment(client, target.experiment)
    run = _find_run(client, experiment_id, record.uid, known_run_id)
    if run is None:
        run = client.create_run(experiment_id, run_name=record.name, tags=_tags(record),
                                start_time=_millis(record.started_at))
        log.info("MLflow run %s created for TrainingRun %s/%s", run.info.run_id, record.namespace, record.name)
    run_id = run.info.run_id
    if run.data.tags.get(DONE_TAG) == "complete" and run.data.tags.get("mloop.model.uri"):
        return Exported(experiment_id, run_id, run.data.tags["mloop.model.uri"])

    key = record.model_uri.split("/", 3)[3]
    source = key.rsplit("/", 1)[0] + "/"  # the run that trained the model: its spec.json and metrics.json
    spec = json.loads(_read(store, source + "spec.json"))
    trained = json.loads(_read(store, source + "metrics.json"))
    features, types, target_column, task = spec["features"], spec["types"], spec["target"], spec["task"]

    _log_batch(client, run, record, trained.get("params") or {})
    _log_dataset(client, run, store, spec, features, types)

    model_uri = _existing_model(client, run)
    if model_uri is None:
        try:
            model = load_model(_read(store, key), record.model_digest)
        except (DigestMismatch, UntrustedModel) as err:
            raise ExportRefused(str(err)) from err
        model_uri = _log_model(target, run_id, model, signature_for(features, types, target_column, task,
                                                                    getattr(model, "classes_", None)),
                               trained.get("packages") or {})
    client.set_tag(run_id, "mloop.model.uri", model_uri)
    client.set_tag(run_id, DONE_TAG, "complete")
    client.set_terminated(run_id, "FINISHED", end_time=_millis(record.finished_at))
    return Exported(experiment_id, run_id, model_uri)


def _millis(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


def _experiment(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, tags={"mloop.managed": "true"})
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)  # created meanwhile by someone else
    if found.lifecycle_stage != "active":
        raise RuntimeError(f"MLflow experiment {name!r} is deleted: restore it or name another")
    return found.experiment_id


def _find_run(client: Any, experiment_id: str, uid: str, known_run_id: str | None) -> Any:
    """The MLflow run of an earlier attempt: the id remembered in status, else the one tagged with the uid."""
    from mlflow.exceptions import MlflowException

    if known_run_id:
        try:
            run = client.get_run(known_run_id)
            if run.info.lifecycle_stage == "active" and run.data.tags.get(UID_TAG) == uid:
                return run
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
    found = client.search_runs([experiment_id], filter_string=f"tags.`{UID_TAG}` = '{uid}'",
                               order_by=["attributes.start_time ASC"], max_results=5)
    return found[0] if found else None


def _tags(record: RunRecord) -> dict[str, str]:
    tags = {UID_TAG: record.uid, "mloop.k8s.namespace": record.namespace, "mloop.k8s.name": record.name,
            "mloop.k8s.kind": "TrainingRun", "mloop.dataset": record.dataset,
            "mloop.dataset.digest": record.dataset_digest, "mloop.model.s3": record.model_uri,
            "mloop.model.digest": record.model_digest, "mloop.estimator": record.estimator,
            "mloop.requirements": ",".join(record.requirement_refs), "mloop.primaryMetric": record.primary_metric}
    if record.requirements_met is not None:
        tags["mloop.requirementsMet"] = str(record.requirements_met).lower()
    return {k: v[:5000] for k, v in tags.items() if v}


def _log_batch(client: Any, run: Any, record: RunRecord, params: dict[str, Any]) -> None:
    """Params, metrics and tags the run does not hold yet (a param, once logged, cannot change)."""
    from mlflow.entities import Metric, Param, RunTag

    wanted = {"estimator": record.estimator, **{k: str(v)[:6000] for k, v in params.items()}}
    held_params, held_metrics = run.data.params, run.data.metrics
    stamp = _millis(record.finished_at) or 0
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in sorted(record.metrics.items()) if k not in held_metrics],
        params=[Param(k, v) for k, v in sorted(wanted.items()) if k not in held_params],
        tags=[RunTag(k, v) for k, v in _tags(record).items()],
    )


def _log_dataset(client: Any, run: Any, store: Store, spec: dict[str, Any], features: list[str],
                 types: dict[str, str]) -> None:
    """The dataset version as an MLflow dataset input: its S3 prefix, name, version and the feature schema."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import ColSpec, Schema
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    ds = spec["dataset"]
    if any(i.dataset.digest == ds["version"] for i in (run.inputs.dataset_inputs if run.inputs else [])):
        return
    source = resolve_dataset_source(store.uri(dataset_prefix(ds["namespace"], ds["name"], ds["digest"])))
    schema = Schema([ColSpec(INPUT_TYPES.get(types.get(f, "string"), "string"), f) for f in features])
    dataset = MetaDataset(source=source, name=ds["name"], digest=ds["version"], schema=schema)
    client.log_inputs(run.info.run_id, datasets=[
        DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])])


def _existing_model(client: Any, run: Any) -> str | None:
    """A model an earlier attempt logged to this run and finished uploading."""
    from mlflow.entities import LoggedModelStatus

    for output in (run.outputs.model_outputs if run.outputs else []):
        model = client.get_logged_model(output.model_id)
        if model.status == LoggedModelStatus.READY and model.name == MODEL_NAME:
            return f"models:/{model.model_id}"
    return None


def _log_model(target: Target, run_id: str, model: Any, signature: Any, packages: dict[str, str]) -> str:
    import mlflow.sklearn
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    # The trainer's own versions, so that mlflow does not load the model in a subprocess to infer them.
    requirements = [f"{name}=={packages[name]}" for name in PIP_PACKAGES if packages.get(name)]
    requirements = requirements or mlflow.sklearn.get_default_pip_requirements(include_skops=True)
    with _use_tracking_uri(target.tracking_uri):
        info = mlflow.sklearn.log_model(
            model, name=MODEL_NAME, run_id=run_id, signature=signature, serialization_format="skops",
            skops_trusted_types=list(TRUSTED_TYPES), pip_requirements=requirements)
    return f"models:/{info.model_id}"
