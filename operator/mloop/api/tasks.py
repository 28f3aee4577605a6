"""The task contract shared by the operator and the workloads: what a task is, where it stands, and the typed
spec.json it reads and result.json it writes under its prefix in the bucket.

Plain values only: neither kopf nor the Kubernetes client nor scikit-learn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mloop.api.common import CheckMeasurement
from mloop.api.trainingrun import TrainingRunSpec

Phase = Literal["Missing", "Pending", "Running", "Succeeded", "Failed"]

# Exit codes: the result says what happened, except when storage could not be reached.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_STORAGE = 75  # EX_TEMPFAIL: nothing was written; the operator retries

# spec.json's body when it travels with the task (a Job's env, a local process's env): the task writes it to S3
# once, before anything else, for the tasks and readers after it. Larger specs go through S3 only.
TASK_SPEC_ENV = "MLOOP_TASK_SPEC"
TASK_SPEC_ENV_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Task:
    """A command plus environment plus a spec object in S3, run on behalf of one owner object."""

    name: str
    namespace: str
    kind: str  # ingest, trials, train, package
    command: list[str]
    prefix: str  # the task's folder in the bucket: spec.json in, result.json out
    owner: dict[str, Any]  # apiVersion, kind, name, uid
    deadline_seconds: int = 3600
    backoff_limit: int = 0
    resources: dict[str, Any] | None = None
    completions: int | None = None  # an Indexed Job when set
    parallelism: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    spec: str | None = None  # spec.json carried with the task as JSON (TASK_SPEC_ENV), written once by the task


@dataclass(frozen=True)
class TaskState:
    phase: Phase
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def storage_lost(self) -> bool:
        """The task said it could not reach storage, so it wrote nothing: worth another try."""
        return self.phase == "Failed" and self.exit_code == EXIT_STORAGE


def task_name(kind: str, owner: str, *key: object) -> str:
    """Deterministic and at most 63 characters: the same intent always names the same task."""
    digest = hashlib.sha256(":".join(str(k) for k in key).encode()).hexdigest()[:8]
    return f"{kind}-{owner[: 63 - len(kind) - 10].rstrip('-.')}-{digest}"


class Wire(BaseModel):
    """camelCase on the wire; unknown keys kept, so an older operator can read a newer task's files."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TaskResult(Wire):
    """What every result.json says: how the task ended, and why in a CamelCase reason and a message."""

    status: Literal["Succeeded", "Failed", "Skipped"]
    reason: str = ""
    message: str = ""
    finished_at: str | None = None


# -- TrainingRun: runs/<ns>/<name>/<uid>/spec.json and result.json ------------------------------------------

class DatasetPin(Wire):
    """The one Dataset version a run reads."""

    namespace: str
    name: str
    version: str
    digest: str  # hex, without the sha256: prefix


class SliceCheck(Wire):
    """A slice criterion's grouping and metric: the trainer computes the metric on each group of held-out rows."""

    key: str
    metric: str
    column: str
    bins: list[float] | None = None


class BehaviourCheck(Wire):
    """A behavioural test as the Requirement declared it (mloop.api.requirement.BehaviouralTest on the wire)."""

    key: str
    test: dict[str, Any]
    dataset: DatasetPin | None = None  # the pinned version of a minimumFunctionality datasetRef


class Checks(Wire):
    """What the referenced Requirements ask the trainer to measure beyond the aggregate metrics."""

    slices: list[SliceCheck] = Field(default_factory=list)
    tests: list[BehaviourCheck] = Field(default_factory=list)


class TrainTaskSpec(Wire):
    """spec.json of a run, written once by the operator; the trials, the fit and the package task read it."""

    namespace: str
    name: str
    uid: str
    prefix: str
    spec: TrainingRunSpec
    task: Literal["classification", "regression"]
    target: str
    features: list[str]
    types: dict[str, str]  # column name -> Dataset column type
    dataset: DatasetPin
    checks: Checks | None = None  # pinned at launch: the requirements known when the run started


class TrialTaskResult(TaskResult):
    """trials/<index>.json: one search trial's mean CV score."""

    index: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    score: float = 0.0
    std: float = 0.0
    seconds: float = 0.0


class BestTrial(Wire):
    index: int
    params: dict[str, Any]
    score: float


class TrainResult(TaskResult):
    """result.json of the fit: metrics, where the model is, and what it was computed with."""

    task: Literal["classification", "regression"] | None = None
    features: list[str] | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    model_uri: str | None = None
    model_digest: str | None = None
    best_trial: BestTrial | None = None
    trials: int | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    numeric_environment: dict[str, Any] | None = None  # mloop.training.numeric: decides the last bits of metrics
    checks: list[CheckMeasurement] = Field(default_factory=list)  # one per Checks entry the task was given


# --- ModelPackage: the package task's spec.json and result.json ---------------------------------------------------


class PackagedRun(TrainTaskSpec):
    """What packaging needs of a succeeded run: its spec.json as the trainer read it, and what the fit produced."""

    metrics: dict[str, float] = Field(default_factory=dict)
    model_digest: str
    model_key: str


class RequirementReport(Wire):
    name: str
    spec: dict[str, Any]
    results: list[dict[str, Any]] = Field(default_factory=list)


class PackageTaskSpec(Wire):
    """spec.json of a package task: which model version to write where, from which run, judged how."""

    namespace: str
    name: str
    model: str
    version: int
    prefix: str  # the package's version folder
    formats: list[Literal["skops", "onnx"]]
    run: PackagedRun
    columns: list[dict[str, Any]] = Field(default_factory=list)  # declared schema: the signature's ranges, categories
    governance: dict[str, Any] = Field(default_factory=dict)
    requirements: list[RequirementReport] = Field(default_factory=list)
    lineage: dict[str, Any] = Field(default_factory=dict)


class PackageResult(TaskResult):
    """result.json of a package task."""

    uri: str | None = None
    digest: str | None = None
    formats: list[Literal["skops", "onnx"]] = Field(default_factory=list)
    onnx: str = ""  # why ONNX is there or not: the parity note
    onnx_parity: Literal["exact", "approximate", "failed", "unavailable"] | None = None
    signature: dict[str, Any] | None = None


# --- Dataset: the ingest task's spec.json and result.json ---------------------------------------------------------


class ParentPin(Wire):
    """The parent version a derived Dataset's task reads."""

    namespace: str
    name: str
    digest: str  # hex, without the sha256: prefix


class IngestTaskSpec(Wire):
    """spec.json of an ingest task: the Dataset's spec and what the operator knew when it started the task."""

    namespace: str
    name: str
    spec: dict[str, Any]  # the DatasetSpec on the wire
    previous: str | None = None  # hex digest of the current version: drift is measured against it
    parent: ParentPin | None = None  # a single-parent derived source (kept for tasks written by older operators)
    parents: list[ParentPin] | None = None  # every parent of a derived source, in the order the combination reads them
    previous_rows: int = 0  # rows of the current version: a collection source cuts only with enough new ones


class IngestResult(TaskResult):
    """result.json of an ingest task: the version cut (or found unchanged), or why none was."""

    version: str | None = None
    digest: str | None = None
    uri: str | None = None
    rows: int | None = None
    created: bool = False
    created_at: str | None = None
    source_version: str | None = None
    parents: list[ParentPin] | None = None  # what a derived version was made from
    columns: list[dict[str, Any]] = Field(default_factory=list)
    profile: list[dict[str, Any]] = Field(default_factory=list)
    validation: list[dict[str, Any]] | None = None
    drift: list[dict[str, Any]] | None = None
