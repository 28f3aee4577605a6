"""Slice metrics and behavioural tests, measured by the trainer on the fitted model and the held-out rows.

The trainer measures; reconcile/requirements.py judges against the Requirement's thresholds, so an edited
threshold is re-judged without training again. A check that cannot be measured says why (error=True), and
the judge fails its criterion with that message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from mloop.api.common import CheckMeasurement, SliceResult
from mloop.api.requirement import BehaviouralTest
from mloop.api.tasks import BehaviourCheck, SliceCheck
from mloop.training.pipeline import NUMERIC_TYPES

MAX_SLICES = 64


def _binary(fn: Callable[..., float]) -> Callable[[Any, Any, list[Any]], float]:
    def metric(y_true: Any, y_pred: Any, labels: list[Any]) -> float:
        if len(labels) != 2:
            raise ValueError("it needs a binary target")
        return float(fn(y_true, y_pred, labels[-1]))
    return metric


# Per-slice metrics. Binary ones take the last class in sorted order (1, True) as the positive class. A metric
# a slice cannot define (recall of a slice without positives) is NaN, reported empty and not judged: not 0.
CLASSIFICATION: dict[str, Callable[[Any, Any, list[Any]], float]] = {
    "accuracy": lambda t, p, _: float(metrics.accuracy_score(t, p)),
    "balanced_accuracy": lambda t, p, _: float(metrics.balanced_accuracy_score(t, p)),
    "f1_macro": lambda t, p, labels: float(metrics.f1_score(t, p, average="macro", labels=labels,
                                                            zero_division=np.nan)),
    "recall_macro": lambda t, p, labels: float(metrics.recall_score(t, p, average="macro", labels=labels,
                                                                    zero_division=np.nan)),
    "precision_macro": lambda t, p, labels: float(metrics.precision_score(t, p, average="macro", labels=labels,
                                                                          zero_division=np.nan)),
    "recall": _binary(lambda t, p, pos: metrics.recall_score(t, p, pos_label=pos, zero_division=np.nan)),
    "precision": _binary(lambda t, p, pos: metrics.precision_score(t, p, pos_label=pos, zero_division=np.nan)),
    "f1": _binary(lambda t, p, pos: metrics.f1_score(t, p, pos_label=pos, zero_division=np.nan)),
    "positive_rate": _binary(lambda t, p, pos: float(np.mean(np.asarray(p) == pos))),
}
REGRESSION: dict[str, Callable[[Any, Any, list[Any]], float]] = {
    "rmse": lambda t, p, _: float(np.sqrt(metrics.mean_squared_error(t, p))),
    "mae": lambda t, p, _: float(metrics.mean_absolute_error(t, p)),
    "r2": lambda t, p, _: float(metrics.r2_score(t, p)) if len(t) >= 2 else math.nan,
}


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _edge(value: float) -> str:
    return f"{value:g}"


def slice_labels(column: pd.Series, bins: list[float] | None) -> pd.Series:
    """Each row's slice, as column=value, column<e, column=[a, b) or column>=e; nulls are their own slice."""
    name = column.name
    if bins:
        edges = sorted(bins)
        values = pd.to_numeric(column, errors="raise").to_numpy(dtype=float)
        out = []
        for v in values:
            if math.isnan(v):
                out.append(f"{name}=null")
                continue
            i = int(np.searchsorted(edges, v, side="right"))
            out.append(f"{name}<{_edge(edges[0])}" if i == 0 else f"{name}>={_edge(edges[-1])}" if i == len(edges)
                       else f"{name}=[{_edge(edges[i - 1])}, {_edge(edges[i])})")
        return pd.Series(out, index=column.index)
    return column.map(lambda v: f"{name}=null" if v is None or (isinstance(v, float) and math.isnan(v))
                      else f"{name}={_text(v)}")


def measure_slices(task: str, check: SliceCheck, column: pd.Series | None, y_test: pd.Series, predicted: np.ndarray,
                   labels: list[Any]) -> CheckMeasurement:
    table = CLASSIFICATION if task == "classification" else REGRESSION
    fn = table.get(check.metric)
    if fn is None:
        return CheckMeasurement(key=check.key, error=True,
                                message=f"metric {check.metric} cannot be computed per slice of a {task} run; "
                                        f"use one of {', '.join(table)}")
    if column is None:
        return CheckMeasurement(key=check.key, error=True,
                                message=f"slicing column {check.column!r} is not a column of the training data")
    try:
        groups = slice_labels(column, check.bins)
    except (ValueError, TypeError):
        return CheckMeasurement(key=check.key, error=True,
                                message=f"bins need a numeric column; {check.column!r} is not numeric")
    if groups.nunique() > MAX_SLICES:
        return CheckMeasurement(key=check.key, error=True,
                                message=f"{check.column!r} has {groups.nunique()} distinct values in the held-out "
                                        f"rows; give bins or slice by a column with at most {MAX_SLICES}")
    truth, guess = y_test.to_numpy(), np.asarray(predicted)
    slices = []
    try:
        for name in sorted(groups.unique()):
            mask = (groups == name).to_numpy()
            value = fn(truth[mask], guess[mask], labels)
            slices.append(SliceResult(slice=name[:160], rows=int(mask.sum()),
                                      value=None if math.isnan(value) else round(value, 6)))
    except ValueError as err:
        return CheckMeasurement(key=check.key, error=True, message=f"metric {check.metric}: {err}"[:512])
    return CheckMeasurement(key=check.key, rows=int(len(truth)), slices=slices)


def _swapped(column: pd.Series) -> pd.Series | str:
    """Each value replaced by the next distinct value (cyclic, in sorted order); nulls stay missing."""
    present = column.dropna()
    distinct = sorted(present.unique(), key=lambda v: (str(type(v)), v))
    if len(distinct) < 2:
        return f"{column.name!r} has fewer than 2 distinct values in the held-out rows: nothing to swap"
    following = {v: distinct[(i + 1) % len(distinct)] for i, v in enumerate(distinct)}
    return column.map(lambda v: following.get(v, v))


def _changed(task: str, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    if task == "regression":
        return ~np.isclose(before.astype(float), after.astype(float), rtol=1e-6, atol=1e-9)
    return before != after


def invariance(task: str, check: BehaviourCheck, test: BehaviouralTest, model: Any, x_test: pd.DataFrame,
               types: dict[str, str]) -> CheckMeasurement:
    spec = test.invariance
    assert spec is not None
    column = spec.column
    if column not in x_test.columns:
        return CheckMeasurement(key=check.key, value=0.0, rows=len(x_test),
                                message=f"{column!r} is not a feature: the model cannot see it")
    changed_x = x_test.copy()
    if spec.change == "swap":
        swapped = _swapped(x_test[column])
        if isinstance(swapped, str):
            return CheckMeasurement(key=check.key, error=True, message=swapped)
        changed_x[column] = swapped
    else:
        value = spec.value
        if types.get(column) in NUMERIC_TYPES:
            value = np.nan if value is None else float(value)
        changed_x[column] = np.nan if value is None else value
    before, after = np.asarray(model.predict(x_test)), np.asarray(model.predict(changed_x))
    changed = _changed(task, before, after)
    detail = ""
    if changed.any():
        i = int(np.argmax(changed))
        detail = (f"held-out row {int(x_test.index[i])}: {column}={_text(x_test[column].iloc[i])} -> "
                  f"{_text(changed_x[column].iloc[i])} changed the prediction {_text(before[i])} -> {_text(after[i])}")
    return CheckMeasurement(key=check.key, value=round(float(changed.mean()), 6), rows=len(x_test), message=detail[:512])


def _scores(task: str, model: Any, x: pd.DataFrame, label: str | None) -> np.ndarray | str:
    if task == "regression":
        return np.asarray(model.predict(x), dtype=float)
    classes = [str(c) for c in model.classes_]
    target = label if label is not None else classes[-1]
    if target not in classes:
        return f"label {target!r} is not a class of the model ({', '.join(classes[:10])})"
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(x))[:, classes.index(target)]
    if hasattr(model, "decision_function") and len(classes) == 2:
        score = np.asarray(model.decision_function(x), dtype=float)
        return score if classes.index(target) == 1 else -score
    return "the model gives no score (no predict_proba or decision_function)"


def directional(task: str, check: BehaviourCheck, test: BehaviouralTest, model: Any, x_test: pd.DataFrame,
                types: dict[str, str]) -> CheckMeasurement:
    spec = test.directional
    assert spec is not None
    column = spec.column
    if column not in x_test.columns or types.get(column) not in NUMERIC_TYPES:
        return CheckMeasurement(key=check.key, error=True, message=f"{column!r} is not a numeric feature of the run")
    values = pd.to_numeric(x_test[column]).astype(float)
    delta = spec.delta if spec.delta is not None else float(values.std(ddof=0)) or 1.0
    raised = x_test.copy()
    raised[column] = values + delta
    before, after = _scores(task, model, x_test, spec.label), _scores(task, model, raised, spec.label)
    if isinstance(before, str) or isinstance(after, str):
        return CheckMeasurement(key=check.key, error=True, message=str(before if isinstance(before, str) else after))
    tolerance = 1e-9 * max(1.0, float(np.abs(before).max(initial=0.0)))
    wrong = after < before - tolerance if spec.direction == "increasing" else after > before + tolerance
    detail = ""
    if wrong.any():
        i = int(np.argmax(wrong))
        detail = (f"held-out row {int(x_test.index[i])}: {column} {values.iloc[i]:.4g} -> {values.iloc[i] + delta:.4g} "
                  f"moved the score {before[i]:.4g} -> {after[i]:.4g}")
    return CheckMeasurement(key=check.key, value=round(float(wrong.mean()), 6), rows=len(x_test), message=detail[:512])


def minimum_functionality(task: str, check: BehaviourCheck, model: Any, rows: pd.DataFrame, features: list[str],
                          target: str, types: dict[str, str]) -> CheckMeasurement:
    if task != "classification":
        return CheckMeasurement(key=check.key, error=True, message="minimum functionality needs a classification run")
    if target not in rows.columns:
        return CheckMeasurement(key=check.key, error=True, message=f"the rows have no target column {target!r}")
    unknown = [c for c in rows.columns if c not in features and c != target]
    if unknown and check.dataset is None:
        return CheckMeasurement(key=check.key, error=True, message=f"column {unknown[0]!r} is not a feature of the run")
    x = pd.DataFrame({f: rows[f] if f in rows.columns else np.nan for f in features}, index=rows.index)
    for column in features:
        if types.get(column) in NUMERIC_TYPES:
            x[column] = pd.to_numeric(x[column], errors="coerce").astype(float)
        else:
            x[column] = x[column].astype(object).where(x[column].notna(), np.nan)
    expected = [_text(v) for v in rows[target]]
    predicted = [_text(v) for v in model.predict(x)]
    right = np.array([e == p for e, p in zip(expected, predicted)])
    detail = ""
    if not right.all():
        i = int(np.argmin(right))
        detail = f"row {i}: predicted {predicted[i]}, expected {expected[i]} ({int((~right).sum())} wrong)"
    return CheckMeasurement(key=check.key, value=round(float(right.mean()), 6), rows=len(rows), message=detail[:512])


def behaviour(task: str, check: BehaviourCheck, model: Any, x_test: pd.DataFrame, types: dict[str, str],
              features: list[str], target: str, table: pd.DataFrame | None) -> CheckMeasurement:
    """One behavioural test; `table` holds a minimum-functionality test's rows (inline or its pinned Dataset)."""
    test = BehaviouralTest.model_validate(check.test)
    try:
        if test.invariance is not None:
            return invariance(task, check, test, model, x_test, types)
        if test.directional is not None:
            return directional(task, check, test, model, x_test, types)
        assert table is not None
        return minimum_functionality(task, check, model, table, features, target, types)
    except (ValueError, TypeError) as err:  # e.g. a neutral value the pipeline cannot encode
        return CheckMeasurement(key=check.key, error=True,
                                message=f"test {test.name}: {type(err).__name__}: {err}"[:512])
