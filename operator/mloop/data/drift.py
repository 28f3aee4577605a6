"""Drift of each column against the previous version: PSI for numbers, total variation for categories.

Both are computed from the versions' profiles (profile.json), not from their rows, so a drift check
reads two small files whatever the data size. PSI bins are the previous version's deciles snapped to the
profile sketch's fixed buckets (see data/profile.py): both sketches share the bucket grid, so the
fractions on each side of an edge are exact counts and nothing depends on how rows were batched.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from mloop.data.profile import SKETCH, sketch_of

BINS = 10
EPS = 1e-4


def psi_sketch(expected: Mapping[int, int], actual: Mapping[int, int]) -> float:
    """Population stability index over deciles of the expected (previous) sketch."""
    e_total, a_total = sum(expected.values()), sum(actual.values())
    if e_total == 0 or a_total == 0:
        return 0.0
    keys = np.array(sorted(expected), dtype=np.int64)
    cum = np.cumsum([expected[k] for k in keys.tolist()])
    # Edge i: the bucket holding the i-th decile; a bin is (edge_{i-1}, edge_i] in bucket keys.
    picks = np.searchsorted(cum, np.arange(1, BINS) / BINS * e_total, side="left")
    edges = np.unique(keys[np.minimum(picks, len(keys) - 1)])

    def hist(sketch: Mapping[int, int], total: int) -> np.ndarray:
        k = np.fromiter(sketch.keys(), np.int64, len(sketch))
        c = np.fromiter(sketch.values(), np.float64, len(sketch))
        return np.bincount(np.searchsorted(edges, k, side="left"), weights=c, minlength=len(edges) + 1) / total

    e, a = np.clip(hist(expected, e_total), EPS, None), np.clip(hist(actual, a_total), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two samples, through the same sketches the profiles store."""
    if expected.size == 0 or actual.size == 0:
        return 0.0
    return psi_sketch(sketch_of(np.asarray(expected, np.float64)), sketch_of(np.asarray(actual, np.float64)))


def tvd_counts(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    p_total, q_total = sum(expected.values()), sum(actual.values())
    if p_total == 0 or q_total == 0:
        return 0.0
    keys = set(expected) | set(actual)
    return float(0.5 * sum(abs(expected.get(k, 0) / p_total - actual.get(k, 0) / q_total) for k in keys))


def tvd(expected: pd.Series, actual: pd.Series) -> float:
    return tvd_counts(expected.astype(str).value_counts().to_dict(), actual.astype(str).value_counts().to_dict())


def same_grid(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in SKETCH)


def drift(previous: Mapping[str, Any], current: Mapping[str, Any], limit: int = 64) -> list[dict[str, object]]:
    """Per-column drift from two profiles (profile.json bodies)."""
    before = {c["name"]: c for c in previous.get("columns", [])}
    out: list[dict[str, object]] = []
    for column in current.get("columns", []):
        name = column["name"]
        old = before.get(name)
        if old is None or len(out) >= limit:
            continue
        if "sketch" in column and "sketch" in old and same_grid(column["sketch"], old["sketch"]):
            value = psi_sketch(dict(map(tuple, old["sketch"]["buckets"])), dict(map(tuple, column["sketch"]["buckets"])))
            out.append({"column": str(name), "method": "psi", "value": round(value, 6)})
        elif "counts" in column and "counts" in old:
            value = tvd_counts(dict(map(tuple, old["counts"]["values"])), dict(map(tuple, column["counts"]["values"])))
            out.append({"column": str(name), "method": "tvd", "value": round(value, 6)})
    return out
