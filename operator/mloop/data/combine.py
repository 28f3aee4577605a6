"""Combining a derived Dataset's parents: a union of rows, or a join on key columns.

Errors name the parent and the column, so the user knows which Dataset to fix.
"""

from __future__ import annotations

import pandas as pd

from mloop.api.dataset import JoinSpec, UnionSpec
from mloop.data.errors import DataError

Parent = tuple[str, pd.DataFrame]  # (the parent's name, its rows)


def _family(series: pd.Series) -> str:
    """What a column holds, coarsely: an integer and a float column stack; a number and a string do not."""
    kind = series.dtype.kind
    if kind in "iuf":
        return "number"
    if kind == "b":
        return "boolean"
    if kind == "M":
        return "datetime"
    values = series.dropna()
    if len(values) and values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
        return "number"
    return "text"


def union(spec: UnionSpec, parents: list[Parent]) -> pd.DataFrame:
    """Rows of every parent in order; the columns must match (or the declared ones must be in each)."""
    first_name, first = parents[0]
    columns = list(spec.columns) if spec.columns else [str(c) for c in first.columns]
    for name, frame in parents:
        have = [str(c) for c in frame.columns]
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataError("ColumnMismatch", f"union: parent {name} has no column {missing[0]!r}"
                            + ("" if spec.columns else f" (parent {first_name} has it)")
                            + "; give union.columns to take only the shared columns")
        extra = [c for c in have if c not in columns]
        if extra and not spec.columns:
            raise DataError("ColumnMismatch", f"union: parent {name} has column {extra[0]!r} that parent "
                            f"{first_name} lacks; give union.columns to take only the shared columns")
    frames = [frame[columns] for _, frame in parents]
    for column in columns:
        families = {name: _family(frame[column]) for name, frame in parents if frame[column].notna().any()}
        if len(set(families.values())) > 1:
            found = ", ".join(f"{family} in {name}" for name, family in families.items())
            raise DataError("ColumnMismatch", f"union: column {column!r} holds different types: {found}")
    return pd.concat(frames, ignore_index=True)


def join(spec: JoinSpec, left: Parent, right: Parent) -> pd.DataFrame:
    """Left rows in their order, each with the one right row of the same key (inner: only rows with one)."""
    (left_name, lf), (right_name, rf) = left, right
    keys = list(spec.on)
    for name, frame in (left, right):
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise DataError("JoinKeyMissing", f"join: key column {missing[0]!r} is not in {name} "
                            f"(columns: {', '.join(map(str, frame.columns[:20]))})")
    shared = [str(c) for c in lf.columns if c in rf.columns and c not in keys]
    if shared:
        raise DataError("ColumnMismatch", f"join: column {shared[0]!r} is in both {left_name} and {right_name}; "
                        "only the key columns may be shared (derive one side with select or drop)")
    rf = rf.dropna(subset=keys)  # a missing key matches nothing
    duplicated = rf.duplicated(subset=keys, keep=False)
    if duplicated.any():
        rows = [int(i) for i in duplicated[duplicated].index[:3]]
        value = rf.loc[rows[0], keys].tolist()
        raise DataError("JoinKeyNotUnique", f"join: key ({', '.join(keys)}) is not unique in {right_name}: "
                        f"{value if len(keys) > 1 else value[0]!r} at rows {', '.join(map(str, rows))}; "
                        "each left row may match at most one right row")
    for key in keys:
        if lf[key].notna().any() and rf[key].notna().any() and _family(lf[key]) != _family(rf[key]):
            raise DataError("ColumnMismatch", f"join: key column {key!r} holds {_family(lf[key])} in {left_name} "
                            f"but {_family(rf[key])} in {right_name}")
    joined = lf.merge(rf, on=keys, how=spec.how, sort=False, validate="many_to_one")
    return joined.reset_index(drop=True)
