"""OpenLineage run events for ingestion, training and packaging, built from status transitions.

Datasets are named the way the object store holds them: namespace `s3://<bucket>`, name the object path of
the version (a Dataset version's prefix, a run's model file, a package's prefix), so the output of one job
is literally the input of the next and any OpenLineage backend can join the chain.
Events are built and sent on the integration's own thread: a lineage backend never slows reconciliation.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_metrics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
    source_code_location_job,
)

from mloop.api.kinds import kind_by_name
from mloop.config import Settings, get_settings
from mloop.integrations.dispatch import Dispatcher
from mloop.k8s.client import get_object
from mloop.storage.artifacts import operator_store
from mloop.storage.layout import collected_prefix, dataset_prefix, task_prefix

VERSION = package_version("mloop")
PRODUCER = f"https://mloop.dev/operator/v{VERSION}"
BUILTIN_NAMESPACE = "builtin://scikit-learn"
JOB_TYPES = {"Dataset": "INGESTION", "TrainingRun": "TRAINING", "ModelPackage": "PACKAGING"}
DONE = {"Dataset": ("Ready",), "TrainingRun": ("Succeeded",), "ModelPackage": ("Packaged",)}
# A collection source that has not gathered enough labelled rows yet ends its task without a version, and
# without anything wrong: the ingestion completed.
QUIET_REASONS = ("NotEnoughRows",)

dispatcher = Dispatcher("openlineage")


@functools.lru_cache(maxsize=4)
def _client(transport: str, url: str, path: str, api_key: str) -> OpenLineageClient:
    config: dict[str, Any] = {"type": transport}
    if transport == "http":
        config["url"] = url
        if api_key:
            config["auth"] = {"type": "api_key", "apiKey": api_key}
    elif transport == "file":
        config.update(log_file_path=path, append=True)
    return OpenLineageClient(config={"transport": config})


def client(settings: Settings) -> OpenLineageClient:
    key = settings.openlineage_api_key.get_secret_value() if settings.openlineage_api_key else ""
    return _client(settings.openlineage_transport, settings.openlineage_url, settings.openlineage_file, key)


def s3_path(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b/ -> ("s3://bucket", "a/b")"""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"s3://{bucket}", key.rstrip("/")


def version_dataset(bucket: str, namespace: str, name: str, digest: str) -> tuple[str, str]:
    return f"s3://{bucket}", dataset_prefix(namespace, name, digest.removeprefix("sha256:")).rstrip("/")


def schema_facet(columns: list[dict[str, Any]]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=c["name"], type=c.get("type")) for c in columns],
        producer=PRODUCER)


def _terminal(kind: str, old: dict[str, Any], patch: dict[str, Any]) -> RunState | None:
    """COMPLETE or FAIL when this pass ended the kind's work; None otherwise."""
    if kind == "Dataset":
        if not old.get("task") or "task" not in patch or patch["task"] is not None:
            return None
        ready = next((c for c in patch.get("conditions") or [] if c["type"] == "Ready"), {})
        ok = ready.get("status") == "True" or ready.get("reason") in QUIET_REASONS
        return RunState.COMPLETE if ok else RunState.FAIL
    phase = patch.get("phase")
    if phase is None or phase == old.get("phase") or phase not in (*DONE[kind], "Failed"):
        return None
    return RunState.COMPLETE if phase in DONE[kind] else RunState.FAIL


def _run_id(kind: str, uid: str, task: str | None) -> str:
    """A TrainingRun is one run (trials, then the fit); a Dataset or package run is one task."""
    if kind == "TrainingRun" or not task:
        return uid
    return str(uuid.uuid5(uuid.UUID(uid), task))


def outbox_entries(kind: str, old: dict[str, Any], patch: dict[str, Any]) -> list[dict[str, Any]]:
    """The lineage event a transition owes (START of a task, or COMPLETE/FAIL of the kind's work), if any."""
    if kind not in JOB_TYPES or not get_settings().openlineage_transport:
        return []
    if patch.get("task") and not old.get("task"):
        return [{"lineage": RunState.START.value, "task": patch["task"]}]
    state = _terminal(kind, old, patch)
    if state is None:
        return []
    return [{"lineage": state.value, **({"task": old["task"]} if old.get("task") else {})}]


def send(kind: str, meta: dict[str, Any], spec: dict[str, Any], status: dict[str, Any], entry: dict[str, Any]) -> None:
    """Queue one owed lineage event; it is built on the sender's thread."""
    settings = get_settings()
    if not settings.openlineage_transport:
        return
    state, task = RunState(entry["lineage"]), entry.get("task")
    now = datetime.now(timezone.utc).isoformat()
    event_client = client(settings)
    label = f"{state.value} {kind} {meta['namespace']}/{meta['name']}"

    def deliver() -> None:
        event_client.emit(build(kind, meta, spec, status, state, task, now, settings))

    dispatcher.submit(label, deliver, attempts=3)  # the HTTP transport retries on its own as well


def build(kind: str, meta: dict[str, Any], spec: dict[str, Any], status: dict[str, Any], state: RunState,
          task: str | None, when: str, settings: Settings) -> RunEvent:
    namespace, name = meta["namespace"], meta["name"]
    inputs: list[InputDataset] = []
    outputs: list[OutputDataset] = []
    if kind == "Dataset":
        inputs = _source_inputs(settings.bucket, namespace, spec, task)
        if state == RunState.COMPLETE and status.get("digest"):
            ns, path = version_dataset(settings.bucket, namespace, name, status["digest"])
            outputs = [OutputDataset(ns, path, facets={"schema": schema_facet(status.get("columns") or [])},
                                     outputFacets={"outputStatistics": output_statistics_output_dataset.
                                                   OutputStatisticsOutputDatasetFacet(rowCount=status.get("rows"),
                                                                                      producer=PRODUCER)})]
    elif kind == "TrainingRun":
        inputs = _run_inputs(settings.bucket, namespace, spec, status)
        if state == RunState.COMPLETE and status.get("modelUri"):
            outputs = [OutputDataset(*s3_path(status["modelUri"]))]
    elif kind == "ModelPackage":
        ref = spec.get("trainingRunRef") or {}
        run = get_object("trainingruns", ref.get("namespace") or namespace, ref.get("name", ""))
        model_uri = ((run or {}).get("status") or {}).get("modelUri")
        inputs = [InputDataset(*s3_path(model_uri))] if model_uri else []
        if state == RunState.COMPLETE and status.get("uri"):
            outputs = [OutputDataset(*s3_path(status["uri"]))]
    return RunEvent(
        eventType=state, eventTime=when, producer=PRODUCER,
        run=Run(runId=_run_id(kind, meta["uid"], task), facets={
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=VERSION, name="mloop", openlineageAdapterVersion=package_version("openlineage-python"),
                producer=PRODUCER)}),
        job=Job(namespace=settings.openlineage_namespace, name=f"{namespace}/{kind_by_name(kind).plural}/{name}", facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="MLOOP",
                                                    jobType=JOB_TYPES[kind], producer=PRODUCER),
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="image", url=settings.image, version=VERSION, producer=PRODUCER)}),
        inputs=inputs, outputs=outputs)


def _source_inputs(bucket: str, namespace: str, spec: dict[str, Any], task: str | None) -> list[InputDataset]:
    source = spec.get("source") or {}
    if "builtin" in source:
        return [InputDataset(BUILTIN_NAMESPACE, source["builtin"]["name"])]
    if "s3" in source:
        return [InputDataset(*s3_path(source["s3"]["uri"]))]
    if "collection" in source:
        return [InputDataset(f"s3://{bucket}", collected_prefix(namespace, source["collection"]["model"]).rstrip("/"))]
    if "derived" in source and task:
        # The parent versions this very task read are in its spec, not in the parents' (moving) status.
        read = operator_store().get_json_or_none(task_prefix(namespace, task) + "spec.json") or {}
        parents = read.get("parents") or [p for p in (read.get("parent"),) if p]
        return [InputDataset(*version_dataset(bucket, p["namespace"], p["name"], p["digest"])) for p in parents]
    return []  # inline rows live in the resource itself


def _run_inputs(bucket: str, namespace: str, spec: dict[str, Any], status: dict[str, Any]) -> list[InputDataset]:
    digest = status.get("datasetDigest")
    if not digest:
        return []
    ref = spec.get("datasetRef") or {}
    ds_ns = ref.get("namespace") or namespace
    ns, path = version_dataset(bucket, ds_ns, ref.get("name", ""), digest)
    dataset = get_object("datasets", ds_ns, ref.get("name", ""))
    ds_status = (dataset or {}).get("status") or {}
    version = next((v for v in ds_status.get("versions") or [] if v.get("digest") == digest), None)
    facets: dict[str, Any] = {}
    input_facets: dict[str, Any] = {}
    if ds_status.get("digest") == digest:  # columns and profile describe the current version only
        facets["schema"] = schema_facet(ds_status.get("columns") or [])
        input_facets["dataQualityMetrics"] = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            rowCount=ds_status.get("rows"), producer=PRODUCER, columnMetrics={
                p["name"]: data_quality_metrics_input_dataset.ColumnMetrics(nullCount=p.get("nulls"),
                                                                            distinctCount=p.get("distinct"))
                for p in ds_status.get("profile") or []})
    elif version:
        input_facets["dataQualityMetrics"] = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            rowCount=version.get("rows"), columnMetrics={}, producer=PRODUCER)
    return [InputDataset(ns, path, facets=facets, inputFacets=input_facets)]
