"""Requirement logic in tables: governance admission, criteria, verdicts; run planning and cache keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mloop.api.common import GovernanceTags
from mloop.api.dataset import ColumnStatus, DatasetStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.trainingrun import TrainingRunSpec
from mloop.reconcile.requirements import admission, evaluate, primary_metric, verdict
from mloop.reconcile.trainingrun import RunRefused, cache_key, plan_features

COLUMNS = [ColumnStatus(name="id", type="integer", role="id"), ColumnStatus(name="email", type="string", pii="direct"),
           ColumnStatus(name="age", type="integer", pii="quasi"), ColumnStatus(name="y", type="category")]
LIMITS = RequirementSpec.model_validate({"title": "t", "governance": {
    "allowedLicenses": ["CC0-1.0"], "maxClassification": "confidential", "allowedPiiLevels": ["none", "quasi"]}})


@pytest.mark.parametrize(
    "tags,features,reasons",
    [
        ({"license": "CC0-1.0", "classification": "internal"}, ["age"], []),
        ({"license": "CC0-1.0", "classification": "internal"}, ["age", "email"], ["PIIFeature"]),
        ({"license": "MIT", "classification": "internal"}, ["age"], ["LicenseNotAllowed"]),
        ({"license": "CC0-1.0", "classification": "restricted"}, ["age"], ["ClassificationTooHigh"]),
        ({"license": "CC0-1.0"}, ["age"], ["ClassificationTooHigh"]),
        ({}, ["email"], ["LicenseNotAllowed", "ClassificationTooHigh", "PIIFeature"]),
    ],
)
def test_admission(tags, features, reasons) -> None:
    refusals = admission("r", LIMITS, "ds", GovernanceTags.model_validate(tags), COLUMNS, features)
    assert [r.reason for r in refusals] == reasons


def test_pii_column_left_out_of_the_features_is_fine() -> None:
    ok = admission("r", LIMITS, "ds", GovernanceTags(license="CC0-1.0", classification="public"), COLUMNS, ["age"])
    assert ok == []


REQ = RequirementSpec.model_validate({"title": "t", "metrics": [
    {"metric": "accuracy", "min": 0.9, "primary": True}, {"metric": "accuracy", "scope": "cv", "min": 0.8},
    {"metric": "log_loss", "max": 0.5}], "serving": {"maxModelSizeMb": 1, "p95LatencyMs": 20},
    "data": {"minRows": 100, "requiredColumns": ["a"], "maxAge": "7d"}})


def test_criteria_each_with_value_threshold_and_outcome() -> None:
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    dataset = DatasetStatus.model_validate({"rows": 150, "version": "000000000001", "columns": [{"name": "a", "type": "float"}],
                                           "versions": [{"version": "000000000001", "digest": "sha256:" + "0" * 64, "rows": 150,
                                                         "createdAt": (now - timedelta(days=2)).isoformat(), "uri": "u"}]})
    results = evaluate("r", REQ, {"accuracy": 0.95, "cv_accuracy_mean": 0.75, "log_loss": 0.2, "model_size_mb": 0.3},
                       dataset, None, now)
    outcome = {r.criterion: r.passed for r in results}
    assert outcome == {"metric:accuracy": True, "metric:accuracy:cv": False, "metric:log_loss": True,
                       "data:minRows": True, "data:requiredColumns": True, "data:maxAge": True,
                       "serving:maxModelSizeMb": True, "serving:p95LatencyMs": None}
    met, why = verdict(results)
    assert not met and why == "r/metric:accuracy:cv: 0.75 < 0.8"


@pytest.mark.parametrize("criterion,reported", [
    ({"metric": "acuracy", "min": 0.9}, "accuracy, f1_macro, fit_seconds"),  # a typo
    ({"metric": "log_loss", "max": 0.5}, "accuracy, f1_macro, fit_seconds"),  # LinearSVC has no predict_proba
    ({"metric": "r2", "scope": "cv", "min": 0.5}, "accuracy, f1_macro"),  # a regression metric on a classifier
])
def test_a_metric_a_finished_run_does_not_report_fails_its_criterion(criterion, reported) -> None:
    """Not "not measured yet", which lets the gate pass: a finished run's metrics are final, so a criterion on a
    metric it lacks would never be judged and never hold a model back."""
    spec = RequirementSpec.model_validate({"title": "t", "metrics": [criterion]})
    metrics = {"accuracy": 0.95, "f1_macro": 0.94, "fit_seconds": 0.1, "cv_accuracy_mean": 0.93,
               "cv_accuracy_std": 0.01, "cv_f1_macro_mean": 0.92, "cv_f1_macro_std": 0.02}
    [result] = evaluate("r", spec, metrics)
    assert result.passed is False and result.message.endswith(f"it reports {reported}"), result.message
    assert not verdict([result])[0]
    assert evaluate("r", spec, {})[0].passed is None  # no metrics yet: the run has not finished


def test_unmeasured_serving_limits_do_not_fail() -> None:
    results = evaluate("r", RequirementSpec.model_validate({"title": "t", "serving": {"p95LatencyMs": 5}}), {})
    assert verdict(results) == (True, "0 criteria met, 1 not measured yet")


def test_primary_metric_defaults_by_task() -> None:
    assert primary_metric([REQ], "classification") == "accuracy"
    assert primary_metric([], "regression") == "r2"


RUN = TrainingRunSpec.model_validate({"datasetRef": {"name": "d"}, "target": "y", "estimator": {"name": "GaussianNB"}})


def test_default_features_leave_out_target_and_ids() -> None:
    plan = plan_features(RUN, COLUMNS, "d@1")
    assert plan.features == ["email", "age"] and plan.task == "classification"


@pytest.mark.parametrize("change,reason", [({"target": "z"}, "TargetNotFound"), ({"features": ["nope"]}, "FeatureNotFound")])
def test_plan_refusals(change, reason) -> None:
    with pytest.raises(RunRefused) as err:
        plan_features(RUN.model_copy(update=change), COLUMNS, "d@1")
    assert err.value.reason == reason


def test_cache_key_ignores_execution_details_only() -> None:
    base = cache_key(RUN, "sha256:a", {"scikit-learn": "1.9.1"})
    execution = RUN.model_copy(update={"executor": "local", "retries": 3, "cache_policy": "reuse", "experiment": "x"})
    assert cache_key(execution, "sha256:a", {"scikit-learn": "1.9.1"}) == base
    assert cache_key(RUN.model_copy(update={"target": "age"}), "sha256:a", {"scikit-learn": "1.9.1"}) != base
    assert cache_key(RUN, "sha256:b", {"scikit-learn": "1.9.1"}) != base
    assert cache_key(RUN, "sha256:a", {"scikit-learn": "1.9.2"}) != base
