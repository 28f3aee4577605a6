"""Per-column profiles (stored whole in profile.json, summarised in status)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOP = 10


def _num(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) or math.isinf(f) else f


def profile_frame(frame: pd.DataFrame) -> dict[str, Any]:
    columns = []
    for name in frame.columns:
        series = frame[name]
        nulls = int(series.isna().sum())
        entry: dict[str, Any] = {"name": str(name), "count": int(len(series) - nulls), "nulls": nulls,
                                 "distinct": int(series.nunique(dropna=True))}
        kind = series.dtype.kind
        if kind in "iufb" or str(series.dtype) in ("Int64", "Float64", "boolean"):
            values = series.dropna().to_numpy(dtype="float64")
            if values.size:
                qs = np.quantile(values, QUANTILES)
                entry.update(min=_num(values.min()), max=_num(values.max()), mean=_num(values.mean()),
                             std=_num(values.std(ddof=1)) if values.size > 1 else 0.0,
                             quantiles={str(q): _num(v) for q, v in zip(QUANTILES, qs)})
        else:
            top = series.dropna().astype(str).value_counts().head(TOP)
            entry["top"] = [{"value": str(k), "count": int(v)} for k, v in top.items()]
        columns.append(entry)
    return {"rows": int(len(frame)), "columns": columns}


def summary(profile: dict[str, Any], limit: int = 64) -> list[dict[str, Any]]:
    """The status summary: name, nulls, distinct, min, max, mean of the first `limit` columns."""
    keys = ("name", "nulls", "distinct", "min", "max", "mean")
    return [{k: c[k] for k in keys if c.get(k) is not None} for c in profile["columns"][:limit]]
