"""TrainingRun decisions: features, admission, the cache key, and how a result becomes status."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mloop.api.dataset import ColumnStatus
from mloop.api.trainingrun import TrainingRunSpec
from mloop.training.estimators import task_of

# Fields that say how and where a run executes, not what it computes: they do not change the result.
EXECUTION_ONLY = {"executor", "resources", "deadline_seconds", "retries", "experiment", "requirement_refs",
                  "cache_policy", "mlflow"}


@dataclass(frozen=True)
class Plan:
    task: str  # classification or regression
    features: list[str]
    types: dict[str, str]


class RunRefused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def plan_features(spec: TrainingRunSpec, columns: list[ColumnStatus], dataset: str) -> Plan:
    names = [c.name for c in columns]
    if spec.target not in names:
        raise RunRefused("TargetNotFound", f"target {spec.target!r} is not a column of Dataset {dataset} "
                                           f"(columns: {', '.join(names[:20])})")
    if spec.features is not None:
        missing = [f for f in spec.features if f not in names]
        if missing:
            raise RunRefused("FeatureNotFound", f"feature {missing[0]!r} is not a column of Dataset {dataset}")
        features = list(spec.features)
    else:
        features = [c.name for c in columns if c.name != spec.target and c.role not in ("id", "timestamp", "target")]
    if not features:
        raise RunRefused("NoFeatures", f"no feature columns: Dataset {dataset} has only the target, ids and timestamps")
    task = spec.task or task_of(spec.estimator.name)
    return Plan(task, features, {c.name: c.type for c in columns})


def cache_key(spec: TrainingRunSpec, dataset_digest: str, packages: dict[str, str],
              numeric: dict[str, Any] | None = None) -> str:
    """Same computation, same data, same code, same numeric environment: the same key.

    `numeric` is the environment a new run is expected to get, as the operator can know it before any
    pod runs (`numeric.trainer_environment()` of its own process); each result records the one it got."""
    material = {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude=EXECUTION_ONLY, exclude_none=True),
        "dataset": dataset_digest,
        "packages": packages,
        "numeric": numeric,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def primary_value(metrics: dict[str, float], name: str) -> str:
    value = metrics.get(name)
    return f"{name}={value:.4f}" if value is not None else name


def succeeded_status(result: dict[str, Any], primary: str) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in sorted((result.get("metrics") or {}).items())[:32]}
    status: dict[str, Any] = {
        "metrics": metrics, "modelUri": result.get("modelUri"), "modelDigest": result.get("modelDigest"),
        "primaryMetric": primary_value(metrics, primary),
    }
    if result.get("bestTrial"):
        status["bestTrial"] = result["bestTrial"]
    if result.get("trials"):
        status["trials"] = result["trials"]
    return status
