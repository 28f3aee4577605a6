"""The kinds: names, short names and printer columns, in one table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mloop.api.dataset import DatasetSpec, DatasetStatus
from mloop.api.erasure import ErasureRequestSpec, ErasureRequestStatus
from mloop.api.modelpackage import ModelPackageSpec, ModelPackageStatus
from mloop.api.requirement import RequirementSpec, RequirementStatus
from mloop.api.trainingrun import TrainingRunSpec, TrainingRunStatus

GROUP = "mloop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mloop"


def _column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short: str
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, Any]] = field(default_factory=list)
    # Extra short names; `ds` alone loses to the built-in DaemonSet short name in kubectl.
    aliases: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="Requirement",
        plural="requirements",
        short="req",
        description="A product owner's acceptance criteria and loop policy; gates promotion criterion by criterion.",
        spec=RequirementSpec,
        status=RequirementStatus,
        columns=[
            _column("Title", ".spec.title", priority=1),
            _column("Phase", ".status.phase"),
            _column("Satisfied", '.status.conditions[?(@.type=="Satisfied")].status'),
            _column("Candidate", ".status.candidate.subject"),
            _column("Production", ".status.production.subject"),
            AGE,
        ],
    ),
    KindInfo(
        kind="Dataset",
        plural="datasets",
        short="ds",
        aliases=("dset",),
        description="A named, versioned table: immutable content-addressed snapshots with schema, profile and governance.",
        spec=DatasetSpec,
        status=DatasetStatus,
        columns=[
            _column("Version", ".status.version"),
            _column("Rows", ".status.rows", "integer"),
            _column("Phase", ".status.phase"),
            _column("Validated", '.status.conditions[?(@.type=="Validated")].status', priority=1),
            _column("Governance", '.status.conditions[?(@.type=="GovernanceOK")].status', priority=1),
            AGE,
        ],
    ),
    KindInfo(
        kind="TrainingRun",
        plural="trainingruns",
        short="tr",
        description="One immutable scikit-learn training execution on a pinned dataset version.",
        spec=TrainingRunSpec,
        status=TrainingRunStatus,
        columns=[
            _column("Phase", ".status.phase"),
            _column("Dataset", ".status.dataset"),
            _column("Metric", ".status.primaryMetric"),
            _column("Estimator", ".spec.estimator.name", priority=1),
            _column("Experiment", ".spec.experiment", priority=1),
            AGE,
        ],
    ),
    KindInfo(
        kind="ModelPackage",
        plural="modelpackages",
        short="mp",
        description="One versioned, packaged model of a registered model, with a promotion gate and optional serving.",
        spec=ModelPackageSpec,
        status=ModelPackageStatus,
        columns=[
            _column("Model", ".spec.model"),
            _column("Version", ".status.version", "integer"),
            _column("Stage", ".status.stage"),
            _column("Metric", ".status.primaryMetric"),
            _column("Phase", ".status.phase"),
            _column("Runtime", ".status.serving.runtime", priority=1),
            _column("Endpoint", ".status.endpoint", priority=1),
            AGE,
        ],
    ),
    KindInfo(
        kind="ErasureRequest",
        plural="erasurerequests",
        short="erasure",
        description="Erase a data subject's rows from Datasets and those derived from them; flag runs and packages.",
        spec=ErasureRequestSpec,
        status=ErasureRequestStatus,
        columns=[
            _column("Phase", ".status.phase"),
            _column("Column", ".spec.subjectColumn"),
            _column("Rows", ".status.rowsErased", "integer"),
            _column("Complete", '.status.conditions[?(@.type=="Complete")].status'),
            _column("Reason", ".spec.reason", priority=1),
            AGE,
        ],
    ),
)


def kind_by_name(name: str) -> KindInfo:
    """Look a kind up by kind, plural, singular or short name."""
    key = name.lower()
    for info in KINDS:
        if key in (info.kind.lower(), info.plural, info.short, *info.aliases):
            return info
    raise KeyError(f"unknown mloop kind {name!r}")
