"""Requirements judged against candidates: governance admission before training, criteria after."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mloop.api.common import CLASSIFICATION_ORDER, CheckMeasurement, CriterionResult, GovernanceTags
from mloop.api.dataset import ColumnStatus, DatasetStatus
from mloop.api.metrics import LOWER_IS_BETTER
from mloop.api.requirement import BehaviouralTest, MetricCriterion, RequirementSpec
from mloop.api.tasks import BehaviourCheck, SliceCheck
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


def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def slice_key(criterion: MetricCriterion) -> str:
    """Names what the trainer measures for a slice criterion; thresholds and minRows are judged, not measured."""
    assert criterion.slice is not None
    bins = sorted(criterion.slice.bins) if criterion.slice.bins else None
    return "slice-" + _digest({"metric": criterion.metric, "column": criterion.slice.column, "bins": bins})


# The thresholds of each test kind: judged here, so they are not part of what the trainer was asked to measure.
_THRESHOLDS = {"invariance": {"max_changed_fraction"}, "directional": {"max_violation_fraction"},
               "minimum_functionality": {"min_accuracy"}}


def behaviour_key(test: BehaviouralTest) -> str:
    body = test.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=_THRESHOLDS)  # type: ignore[arg-type]
    return f"test-{test.name}-{_digest(body)}"


def checks_for(requirements: list[tuple[str, RequirementSpec]]) -> tuple[list[SliceCheck], list[BehaviourCheck]]:
    """What the referenced Requirements ask the trainer to measure, once each (minimum-functionality Datasets not
    yet pinned)."""
    slices: dict[str, SliceCheck] = {}
    tests: dict[str, BehaviourCheck] = {}
    for _, spec in requirements:
        for criterion in spec.metrics or []:
            if criterion.slice is not None:
                key = slice_key(criterion)
                slices.setdefault(key, SliceCheck(key=key, metric=criterion.metric, column=criterion.slice.column,
                                                  bins=sorted(criterion.slice.bins) if criterion.slice.bins else None))
        for test in spec.tests or []:
            key = behaviour_key(test)
            tests.setdefault(key, BehaviourCheck(key=key, test=test.to_wire()))
    return list(slices.values()), list(tests.values())


def _not_measured(requirement: str, criterion: str, found: CheckMeasurement | None) -> CriterionResult:
    message = found.message if found is not None else (
        "not measured: the training task was not given this check (added or changed after the run started, or the "
        "Requirement is not in the run's requirementRefs); train again")
    return CriterionResult(requirement=requirement, criterion=criterion[:128], passed=False, message=message[:512])


def _slice_results(requirement: str, criterion: MetricCriterion, found: CheckMeasurement | None,
                   lower_is_better: bool) -> list[CriterionResult]:
    """min/max on every slice with enough rows (one result per bound, naming the worst slice), and the gap."""
    assert criterion.slice is not None
    label = f"slice:{criterion.metric}:{criterion.slice.column}"
    if found is None or found.error:
        return [_not_measured(requirement, label, found)]
    every = list(found.slices or [])
    judged = [s for s in every if s.rows >= criterion.slice.min_rows and s.value is not None]
    small = len(every) - len(judged)
    note = f" ({len(judged)} of {len(every)} slices judged" + (
        f"; {small} under {criterion.slice.min_rows} rows or undefined)" if small else ")")
    if not judged:
        return [CriterionResult(requirement=requirement, criterion=label[:128], passed=False, slices=every,
                                message=f"no slice of {criterion.slice.column} has {criterion.slice.min_rows} "
                                        f"held-out rows with a defined {criterion.metric}")]
    out = []
    for threshold, op in ((criterion.min, ">="), (criterion.max, "<=")):
        if threshold is None:
            continue
        worst = (min if op == ">=" else max)(judged, key=lambda s: (s.value, s.slice))
        assert worst.value is not None
        passed = worst.value >= threshold if op == ">=" else worst.value <= threshold
        marked = [s.model_copy(update={"passed": None if s not in judged else
                                       (s.value >= threshold if op == ">=" else s.value <= threshold)})
                  for s in every]
        failing = sum(1 for s in marked if s.passed is False)
        out.append(CriterionResult(
            requirement=requirement, criterion=label[:128], passed=passed, value=worst.value, threshold=threshold,
            operator=op, worst=worst.slice, slices=marked[:64],
            message=(f"worst slice {worst.slice}: {worst.value:.4g} {op if passed else ('<' if op == '>=' else '>')} "
                     f"{threshold:g}" + (f"; {failing} slices fail" if failing > 1 else "") + note)[:512]))
    if criterion.slice.max_gap is not None:
        best = (min if lower_is_better else max)(judged, key=lambda s: (s.value, s.slice))
        worst = (max if lower_is_better else min)(judged, key=lambda s: (s.value, s.slice))
        assert best.value is not None and worst.value is not None
        gap = round(abs(best.value - worst.value), 6)
        passed = gap <= criterion.slice.max_gap
        out.append(CriterionResult(
            requirement=requirement, criterion=f"slice-gap:{criterion.metric}:{criterion.slice.column}"[:128],
            passed=passed, value=gap, threshold=criterion.slice.max_gap, operator="<=", worst=worst.slice,
            slices=every[:64],
            message=(f"gap {gap:.4g} {'<=' if passed else '>'} {criterion.slice.max_gap:g} between {best.slice} "
                     f"({best.value:.4g}) and {worst.slice} ({worst.value:.4g})" + note)[:512]))
    return out


def _test_result(requirement: str, test: BehaviouralTest, found: CheckMeasurement | None) -> CriterionResult:
    label = f"test:{test.name}"
    if found is None or found.error or found.value is None:
        return _not_measured(requirement, label, found)
    value, rows = found.value, found.rows or 0
    if test.invariance is not None:
        limit, op = test.invariance.max_changed_fraction, "<="
        what = f"{value:.2%} of {rows} predictions changed with only {test.invariance.column} changed " \
               f"({test.invariance.change})"
    elif test.directional is not None:
        limit, op = test.directional.max_violation_fraction, "<="
        way = "lowered" if test.directional.direction == "increasing" else "raised"
        what = f"raising {test.directional.column} {way} the score on {value:.2%} of {rows} rows"
    else:
        assert test.minimum_functionality is not None
        limit, op = test.minimum_functionality.min_accuracy, ">="
        what = f"{value:.2%} of {rows} rows predicted right"
    passed = value <= limit if op == "<=" else value >= limit
    shown = op if passed else (">" if op == "<=" else "<")
    detail = f"; {found.message}" if found.message and not passed else ""
    return CriterionResult(requirement=requirement, criterion=label, passed=passed, value=value, threshold=limit,
                           operator=op, message=f"{what} ({shown} {limit:g}){detail}"[:512])


def evaluate(requirement: str, spec: RequirementSpec, metrics: dict[str, float] | None,
             dataset: DatasetStatus | None = None, features: list[str] | None = None,
             now: datetime | None = None, measured: dict[str, float] | None = None,
             checks: list[CheckMeasurement] | None = None) -> list[CriterionResult]:
    """Every criterion of one Requirement against one candidate: pass, fail, or not measured yet (None).
    `checks`: what the trainer measured for slice criteria and behavioural tests (the run's status.checks)."""
    metrics = metrics or {}
    found = {c.key: c for c in checks or []}
    results: list[CriterionResult] = []
    for criterion in spec.metrics or []:
        if criterion.slice is not None:
            results += _slice_results(requirement, criterion, found.get(slice_key(criterion)),
                                      criterion.metric in LOWER_IS_BETTER)
            continue
        cv = criterion.scope == "cv"
        key = f"cv_{criterion.metric}_mean" if cv else criterion.metric
        label = f"metric:{criterion.metric}" + (":cv" if cv else "")
        if key in metrics or not metrics:
            results += _bound(requirement, label, metrics.get(key), criterion.min, criterion.max)
            continue
        # A finished run's metrics are final: "not measured yet" would never hold a model back.
        reported = sorted(k[3:-5] for k in metrics if k.startswith("cv_") and k.endswith("_mean")) if cv else \
            sorted(k for k in metrics if not k.startswith("cv_"))
        message = (f"the run reports no {'cross-validated ' if cv else ''}{criterion.metric}; it reports "
                   f"{', '.join(reported) or 'none'}")
        results += [CriterionResult(requirement=requirement, criterion=label, passed=False, threshold=threshold,
                                    operator=op, message=message[:512])
                    for threshold, op in ((criterion.min, ">="), (criterion.max, "<=")) if threshold is not None]
    for test in spec.tests or []:
        results.append(_test_result(requirement, test, found.get(behaviour_key(test))))
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


def primary_of(specs: list[RequirementSpec], metrics: Mapping[str, float]) -> str:
    """The primary metric for a trained model, its task told by its metrics (a regressor reports r2)."""
    return primary_metric(specs, "regression" if "r2" in metrics else "classification")


def primary_value(metrics: Mapping[str, float], name: str) -> str:
    """The primary metric as `kubectl get` shows it: name=value."""
    value = metrics.get(name)
    return f"{name}={value:.4f}" if value is not None else name


def wire(results: list[CriterionResult]) -> list[dict[str, Any]]:
    return [r.to_wire() for r in results][:64]


def including_version(combined: DatasetStatus | None, namespace: str, name: str, digest: str) -> str | None:
    """The combined Dataset's current version if it was made from this version of the named parent, else None.

    A retrain on a union of the original and the collected data must pin the union's version that holds the new
    collected rows; the union cuts after the collection does, so until then there is none."""
    if combined is None or not combined.version or combined.phase != "Ready":
        return None
    made_from = {(p.namespace, p.name, p.digest) for p in combined.parents or []}
    return combined.version if (namespace, name, digest) in made_from else None
