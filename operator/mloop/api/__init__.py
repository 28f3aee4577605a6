"""API types of mloop.dev/v1alpha1: pydantic models that are the single source of the CRDs.

This package imports neither kopf nor the Kubernetes client.
"""

from mloop.api.common import Condition, ObjectRef, VersionedRef
from mloop.api.dataset import Dataset, DatasetSpec, DatasetStatus
from mloop.api.kinds import GROUP, KINDS, VERSION, KindInfo, kind_by_name
from mloop.api.modelpackage import ModelPackage, ModelPackageSpec, ModelPackageStatus
from mloop.api.requirement import Requirement, RequirementSpec, RequirementStatus
from mloop.api.trainingrun import TrainingRun, TrainingRunSpec, TrainingRunStatus

__all__ = [
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "Dataset",
    "DatasetSpec",
    "DatasetStatus",
    "KindInfo",
    "ModelPackage",
    "ModelPackageSpec",
    "ModelPackageStatus",
    "ObjectRef",
    "Requirement",
    "RequirementSpec",
    "RequirementStatus",
    "TrainingRun",
    "TrainingRunSpec",
    "TrainingRunStatus",
    "VersionedRef",
    "kind_by_name",
]
