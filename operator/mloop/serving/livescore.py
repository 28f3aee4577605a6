"""Live scoring: a shadowing candidate and the Production package on the same labelled live rows.

Both servers collect their predictions under the caller's row ids (the Production server forwards the request id
to the shadow); feedback labels join them by row id. Only rows that both models answered and that have a label
count, so the two values are comparable. Metrics are computed with numpy: the operator loads no scikit-learn.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mloop.storage.artifacts import Store
from mloop.storage.layout import collected_prefix, feedback_prefix

LIVE_METRICS = {"classification": ("accuracy", "balanced_accuracy", "f1_macro"), "regression": ("r2", "rmse", "mae")}


def _read(store: Store, prefix: str, columns: list[str]) -> dict[str, str]:
    """row_id -> the JSON of the other column, from every Parquet batch under the prefix; the last one wins."""
    out: dict[str, str] = {}
    for key in sorted(store.list_keys(prefix)):
        if not key.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(store.get(key)), columns=columns)
        out.update(zip(table.column(columns[0]).to_pylist(), table.column(columns[1]).to_pylist()))
    return out


def joined(store: Store, namespace: str, model: str, production_version: int,
           candidate_version: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(labels, Production's predictions, the candidate's) on the rows all three have, in row-id order."""
    labels = _read(store, feedback_prefix(namespace, model), ["row_id", "label"])
    production = _read(store, collected_prefix(namespace, model, production_version), ["row_id", "prediction"])
    candidate = _read(store, collected_prefix(namespace, model, candidate_version), ["row_id", "prediction"])
    ids = sorted(set(labels) & set(production) & set(candidate))
    return ([json.loads(labels[i]) for i in ids], [json.loads(production[i]) for i in ids],
            [json.loads(candidate[i]) for i in ids])


def metric_value(metric: str, y: list[Any], predicted: list[Any]) -> float:
    """One metric on live rows; classification labels are compared as strings (JSON may carry 1 or "1")."""
    if metric in LIVE_METRICS["regression"]:
        t, p = np.asarray(y, dtype=float), np.asarray(predicted, dtype=float)
        if metric == "rmse":
            return float(np.sqrt(np.mean((t - p) ** 2)))
        if metric == "mae":
            return float(np.mean(np.abs(t - p)))
        total = float(np.sum((t - t.mean()) ** 2))
        return float(1 - np.sum((t - p) ** 2) / total) if total else 0.0
    if metric not in LIVE_METRICS["classification"]:
        raise ValueError(f"metric {metric} is not computed on live rows; use one of "
                         f"{', '.join(LIVE_METRICS['classification'] + LIVE_METRICS['regression'])}")
    t, p = np.asarray([str(v) for v in y]), np.asarray([str(v) for v in predicted])
    if metric == "accuracy":
        return float(np.mean(t == p))
    classes = sorted(set(t.tolist()) | (set(p.tolist()) if metric == "f1_macro" else set()))
    recalls, f1s = [], []
    for c in classes:
        tp = float(np.sum((t == c) & (p == c)))
        actual, guessed = float(np.sum(t == c)), float(np.sum(p == c))
        recalls.append(tp / actual if actual else 0.0)
        f1s.append(2 * tp / (actual + guessed) if actual + guessed else 0.0)
    return float(np.mean(recalls if metric == "balanced_accuracy" else f1s)) if classes else 0.0


def score(store: Store, namespace: str, model: str, production_version: int, candidate_version: int,
          metric: str) -> tuple[int, float | None, float | None]:
    """(rows, Production's value, the candidate's value); values are None while there is no row."""
    y, production, candidate = joined(store, namespace, model, production_version, candidate_version)
    if not y:
        return 0, None, None
    return len(y), metric_value(metric, y, production), metric_value(metric, y, candidate)
