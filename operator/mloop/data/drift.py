"""Drift of each column against the previous version: PSI for numbers, total variation for categories."""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 10
EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index over deciles of the expected (previous) values."""
    if expected.size == 0 or actual.size == 0:
        return 0.0
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, BINS + 1)))
    if edges.size < 2:
        edges = np.array([expected.min() - 0.5, expected.max() + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / expected.size
    a = np.histogram(actual, edges)[0] / actual.size
    e, a = np.clip(e, EPS, None), np.clip(a, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def tvd(expected: pd.Series, actual: pd.Series) -> float:
    p = expected.astype(str).value_counts(normalize=True)
    q = actual.astype(str).value_counts(normalize=True)
    keys = p.index.union(q.index)
    return float(0.5 * np.abs(p.reindex(keys, fill_value=0) - q.reindex(keys, fill_value=0)).sum())


def drift(previous: pd.DataFrame, current: pd.DataFrame, limit: int = 64) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name in current.columns:
        if name not in previous.columns or len(out) >= limit:
            continue
        before, after = previous[name].dropna(), current[name].dropna()
        numeric = before.dtype.kind in "iuf" and after.dtype.kind in "iuf"
        if numeric:
            value = psi(before.to_numpy(dtype="float64"), after.to_numpy(dtype="float64"))
            out.append({"column": str(name), "method": "psi", "value": round(value, 6)})
        else:
            out.append({"column": str(name), "method": "tvd", "value": round(tvd(before, after), 6)})
    return out
