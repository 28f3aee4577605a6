"""The declarative transform of a derived Dataset: filter, select/drop, sample, split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mloop.api.dataset import Transform
from mloop.data.errors import DataError
from mloop.data.expr import filter_rows


def apply_transform(frame: pd.DataFrame, transform: Transform) -> pd.DataFrame:
    if transform.filter:
        frame = filter_rows(frame, transform.filter)
    named = transform.select or transform.drop or []
    unknown = [c for c in named if c not in frame.columns]
    if unknown:
        field = "select" if transform.select else "drop"
        raise DataError("UnknownColumn", f"transform.{field}: no column {', '.join(map(repr, unknown))} in the parent")
    if transform.select:
        frame = frame[list(transform.select)]
    elif transform.drop:
        frame = frame.drop(columns=list(transform.drop))
    if transform.sample:
        s = transform.sample
        n = s.rows if s.rows is not None else int(round(len(frame) * (s.fraction or 1.0)))
        n = min(n, len(frame))
        idx = np.sort(np.random.default_rng(s.seed).choice(len(frame), size=n, replace=False))
        frame = frame.iloc[idx]
    if transform.split:
        sp = transform.split
        order = np.random.default_rng(sp.seed).permutation(len(frame))
        cut = int(round(len(frame) * sp.test_fraction))
        chosen = np.sort(order[:cut] if sp.part == "test" else order[cut:])
        frame = frame.iloc[chosen]
    return frame.reset_index(drop=True)
