"""Requirements judged against candidates: governance admission before training, criteria after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mloop.api.common import CLASSIFICATION_ORDER, CriterionResult, GovernanceTags
from mloop.api.dataset import ColumnStatus, DatasetStatus
from mloop.api.requirement import RequirementSpec
from mloop.reconcile.durations import parse_duration


@dataclass(frozen=True)
class Refusal:
    reason: str  # LicenseNotAllowed, ClassificationTooHigh, PIIFeature
    message: str


def admission(requirement: str, spec: RequirementSpec, dataset: str, tags: GovernanceTags | None,
              columns: list[ColumnStatus], features: list[str]) -> list[Refusal]:
    """Why the data may not be used for this run, if it may not. Columns left out of the features do not count."""
    limits = spec.governance
    if limits is None:
        return []
    tags = tags or GovernanceTags()
    refusals = []
    if limits.allowed_licenses and tags.license not in limits.allowed_licenses:
        refusals.append(Refusal("LicenseNotAllowed",
                                f"licence {tags.license or '(none declared)'} of Dataset {dataset} is not allowed by "
                                f"Requirement {requirement} (allowed: {', '.join(limits.allowed_licenses)})"))
    if limits.max_classification:
        level = tags.classification
        if level is None or CLASSIFICATION_ORDER.index(level) > CLASSIFICATION_ORDER.index(limits.max_classification):
            refusals.append(Refusal("ClassificationTooHigh",
                                    f"Dataset {dataset} is classified {level or '(undeclared)'}; Requirement "
                                    f"{requirement} allows at most {limits.max_classification}"))
    if limits.allowed_pii_levels is not None:
        pii = {c.name: c.pii for c in columns}
        for feature in features:
            if pii.get(feature, "none") not in limits.allowed_pii_levels:
                refusals.append(Refusal("PIIFeature",
                                        f"feature column {feature!r} holds {pii[feature]} PII; Requirement "
                                        f"{requirement} allows {', '.join(limits.allowed_pii_levels)}: leave it out "
                                        f"of spec.features"))
    return refusals


def _bound(requirement: str, criterion: str, value: float | None, low: float | None, high: float | None,
           unit: str = "") -> list[CriterionResult]:
    out = []
    for threshold, op, ok in ((low, ">=", lambda v, t: v >= t), (high, "<=", lambda v, t: v <= t)):
        if threshold is None:
            continue
        if value is None:
            out.append(CriterionResult(requirement=requirement, criterion=criterion, passed=None, threshold=threshold,
                                       operator=op, message="not measured yet"))
            continue
        passed = ok(value, threshold)
        out.append(CriterionResult(requirement=requirement, criterion=criterion, passed=passed, value=round(value, 6),
                                   threshold=threshold, operator=op,
                                   message=f"{value:.4g}{unit} {op if passed else ('<' if op == '>=' else '>')} "
                                           f"{threshold:g}{unit}"))
    return out


def evaluate(requirement: str, spec: RequirementSpec, metrics: dict[str, float] | None,
             dataset: DatasetStatus | None = None, features: list[str] | None = None,
             now: datetime | None = None, measured: dict[str, float] | None = None) -> list[CriterionResult]:
    """Every criterion of one Requirement against one candidate: pass, fail, or not measured yet (None)."""
    metrics = metrics or {}
    results: list[CriterionResult] = []
    for criterion in spec.metrics or []:
        key = criterion.metric if criterion.scope == "heldout" else f"cv_{criterion.metric}_mean"
        label = f"metric:{criterion.metric}" + (":cv" if criterion.scope == "cv" else "")
        results += _bound(requirement, label, metrics.get(key), criterion.min, criterion.max)
    data = spec.data
    if data is not None and dataset is not None:
        if data.min_rows is not None:
            results += _bound(requirement, "data:minRows", float(dataset.rows or 0), float(data.min_rows), None)
        if data.required_columns:
            present = {c.name for c in dataset.columns or []}
            missing = [c for c in data.required_columns if c not in present]
            results.append(CriterionResult(requirement=requirement, criterion="data:requiredColumns",
                                           passed=not missing, operator="in",
                                           message=f"missing {', '.join(missing)}" if missing else "all present"))
        if data.max_null_fraction is not None and dataset.rows:
            used = set(features or [])
            fractions = [p.nulls / dataset.rows for p in dataset.profile or [] if not used or p.name in used]
            results += _bound(requirement, "data:maxNullFraction", max(fractions, default=0.0), None,
                              data.max_null_fraction)
        if data.max_age is not None and now is not None and dataset.versions:
            current = next((v for v in dataset.versions if v.version == dataset.version), dataset.versions[-1])
            age = (now - current.created_at).total_seconds()
            results += _bound(requirement, "data:maxAge", age / 86400, None, parse_duration(data.max_age) / 86400, "d")
    serving = spec.serving
    if serving is not None:
        measured = measured or {}
        if serving.max_model_size_mb is not None:
            results += _bound(requirement, "serving:maxModelSizeMb", metrics.get("model_size_mb"), None,
                              serving.max_model_size_mb, "MB")
        if serving.p95_latency_ms is not None:
            results += _bound(requirement, "serving:p95LatencyMs", measured.get("p95_latency_ms"), None,
                              serving.p95_latency_ms, "ms")
    return results


def verdict(results: list[CriterionResult]) -> tuple[bool, str]:
    """Met when nothing failed; unmeasured criteria (serving) count once measured."""
    failed = [r for r in results if r.passed is False]
    if failed:
        first = failed[0]
        return False, f"{first.requirement}/{first.criterion}: {first.message}" + (
            f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
    return True, f"{sum(1 for r in results if r.passed)} criteria met" + (
        f", {sum(1 for r in results if r.passed is None)} not measured yet" if any(r.passed is None for r in results) else "")


def primary_metric(specs: list[RequirementSpec], task: str) -> str:
    for spec in specs:
        for criterion in spec.metrics or []:
            if criterion.primary:
                return criterion.metric
    return "accuracy" if task == "classification" else "r2"


def wire(results: list[CriterionResult]) -> list[dict[str, Any]]:
    return [r.to_wire() for r in results][:64]
