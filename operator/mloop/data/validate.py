"""Schema checks and validation rules. Each failure names the column and its first offending rows."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mloop.api.dataset import ColumnSpec, ColumnStatus, SchemaSpec, ValidationRules

SHOWN_ROWS = 5
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{7,}[0-9]$")


@dataclass
class Check:
    rule: str
    column: str | None
    passed: bool
    message: str = ""


@dataclass
class Validation:
    frame: pd.DataFrame
    columns: list[ColumnStatus]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


def _rows(mask: pd.Series | np.ndarray) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i) for i in idx[:SHOWN_ROWS])
    more = f" and {len(idx) - SHOWN_ROWS} more" if len(idx) > SHOWN_ROWS else ""
    return f"rows {shown}{more}"


def _as_text(series: pd.Series) -> pd.Series:
    """Values as text without a Python call per row: strings stay, integral floats print without '.0'."""
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and (dtype != object or pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")):
        return series
    if dtype.kind == "f":
        values = series.to_numpy()
        finite = values[~np.isnan(values)]
        if finite.size == 0 or np.array_equal(finite, np.floor(finite)):
            return series.astype("Int64").astype("string")
    if dtype.kind == "b":
        return series.map({True: "true", False: "false"}).astype("string")
    return series.astype("string")


def _cast(series: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray | None]:
    """The column in its declared type, and a mask of values that could not be cast (None: none)."""
    kind = series.dtype.kind
    if spec.type in ("integer", "float"):
        if kind in "iu" or (kind == "f" and spec.type == "float"):
            return series, None
        if kind in "fb":
            numbers = series.astype("float64")
        else:
            numbers = pd.to_numeric(series, errors="coerce").astype("float64")
        values = numbers.to_numpy()
        missing = np.isnan(values)
        bad = series.notna().to_numpy() & missing
        if spec.type == "integer":
            bad |= ~missing & (np.floor(np.where(missing, 0, values)) != np.where(missing, 0, values))
            if not bad.any():
                return numbers.astype("Int64"), None
        return numbers, (bad if bad.any() else None)
    if spec.type == "boolean":
        if kind == "b":
            return series, None
        mapped = _as_text(series).str.strip().str.lower().map(
            {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
        bad = series.notna().to_numpy() & mapped.isna().to_numpy()
        return mapped.astype("boolean"), (bad if bad.any() else None)
    if spec.type == "datetime":
        if kind == "M":
            return series, None
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        bad = series.notna().to_numpy() & parsed.isna().to_numpy()
        return parsed, (bad if bad.any() else None)
    return _as_text(series), None


def _outside_range(values: pd.Series, low: float | None, high: float | None) -> np.ndarray | None:
    """Rows outside [low, high]; two reductions decide the common all-inside case without a mask."""
    array = values.to_numpy(dtype="float64", na_value=np.nan) if values.dtype.kind not in "iuf" else values.to_numpy()
    if array.size == 0:
        return None
    if array.dtype.kind == "f":
        present = array[~np.isnan(array)] if np.isnan(array).any() else array
    else:
        present = array
    if present.size == 0 or ((low is None or present.min() >= low) and (high is None or present.max() <= high)):
        return None
    with np.errstate(invalid="ignore"):
        mask = np.zeros(array.shape, bool)
        if low is not None:
            mask |= array < low
        if high is not None:
            mask |= array > high
    return mask


def infer_column(name: str, series: pd.Series) -> ColumnStatus:
    kind = series.dtype.kind
    if kind == "b":
        type_ = "boolean"
    elif kind in "iu":
        type_ = "integer"
    elif kind == "f":
        type_ = "float"
    elif kind == "M":
        type_ = "datetime"
    else:
        distinct = series.nunique(dropna=True)
        type_ = "category" if distinct <= max(20, len(series) // 20) and distinct < len(series) else "string"
    role = "id" if (name == "id" or name.endswith("_id")) and series.is_unique and type_ in ("integer", "string") else "feature"
    if type_ == "datetime":
        role = "timestamp"
    pii = "none"
    if type_ in ("string", "category"):
        sample = series.dropna().astype(str).head(200)
        if len(sample) and (sample.str.match(EMAIL).mean() > 0.5 or sample.str.match(PHONE).mean() > 0.5):
            pii = "direct"
    return ColumnStatus(name=name, type=type_, role=role, pii=pii)


def _check_column(series: pd.Series, spec: ColumnSpec | None) -> tuple[ColumnStatus, list[Check], pd.Series | None]:
    """One column's schema checks, its status, and its values cast to the declared type."""
    name = series.name
    if spec is None:
        return infer_column(str(name), series), [], None
    checks: list[Check] = []
    cast, bad = _cast(series, spec)
    if bad is not None:
        sample = series[bad].head(3).tolist()
        checks.append(Check("type", name, False, f"column {name!r} is declared {spec.type} but {_rows(bad)} hold {sample!r}"))
    else:
        checks.append(Check("type", name, True))
    if not spec.nullable:
        nulls = cast.isna()
        if bad is not None:
            nulls &= ~bad
        has_nulls = bool(nulls.any())
        checks.append(Check("nullable", name, not has_nulls,
                            f"column {name!r} is not nullable but {_rows(nulls)} are empty" if has_nulls else ""))
    if spec.allowed_values is not None:
        text = _as_text(cast)
        outside = text.notna() & ~text.isin(spec.allowed_values)
        if bad is not None:
            outside &= ~bad
        found = bool(outside.any())
        checks.append(Check("allowedValues", name, not found,
                            f"column {name!r} has values outside {sorted(spec.allowed_values)[:10]} at "
                            f"{_rows(outside)}: {text[outside].head(3).tolist()!r}" if found else ""))
    if (spec.min is not None or spec.max is not None) and bad is None:
        mask = _outside_range(pd.to_numeric(cast, errors="coerce") if cast.dtype.kind not in "iuf" else cast,
                              spec.min, spec.max)
        checks.append(Check("range", name, mask is None,
                            f"column {name!r} is outside [{spec.min}, {spec.max}] at {_rows(mask)}" if mask is not None else ""))
    status = ColumnStatus(name=spec.name, type=spec.type, role=spec.role, pii=spec.pii)
    return status, checks, (cast if bad is None and cast is not series else None)


def apply_schema(frame: pd.DataFrame, schema: SchemaSpec | None) -> Validation:
    """Cast to the declared schema (or infer one) and record each schema check."""
    if schema is None:
        return Validation(frame, [infer_column(str(c), frame[c]) for c in frame.columns])
    checks: list[Check] = []
    declared = {c.name: c for c in schema.columns}
    missing = [n for n in declared if n not in frame.columns]
    if missing:
        checks.append(Check("columns", missing[0], False, f"declared columns missing from the data: {', '.join(missing)}"))
    extra = [str(c) for c in frame.columns if c not in declared]
    if extra and not schema.allow_extra_columns:
        checks.append(Check("columns", extra[0], False,
                            f"columns not in spec.schema: {', '.join(extra)} (set allowExtraColumns to keep them)"))
    # Columns are checked in parallel: numpy and Arrow release the GIL in the heavy parts.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda name: _check_column(frame[name], declared.get(name)), frame.columns))
    out = frame.copy(deep=False)  # copy-on-write: replacing a column never touches the caller's frame
    statuses: list[ColumnStatus] = []
    for name, (status, column_checks, cast) in zip(frame.columns, results):
        statuses.append(status)
        checks += column_checks
        if cast is not None:
            out[name] = cast
    return Validation(out, statuses, checks)


def apply_rules(validation: Validation, rules: ValidationRules | None) -> Validation:
    frame = validation.frame
    rows = len(frame)
    if rows == 0:
        validation.checks.append(Check("minRows", None, False, "the table has no rows"))
        return validation
    if rules is None:
        return validation
    if rules.min_rows is not None:
        ok = rows >= rules.min_rows
        validation.checks.append(Check("minRows", None, ok, "" if ok else f"{rows} rows, at least {rules.min_rows} required"))
    if rules.max_null_fraction is not None:
        fractions = frame.isna().mean()
        for name, fraction in fractions.items():
            ok = bool(fraction <= rules.max_null_fraction)
            mask = frame[name].isna()
            validation.checks.append(Check("maxNullFraction", str(name), ok, "" if ok else
                                           f"column {name!r} is {fraction:.1%} null (limit {rules.max_null_fraction:.1%}): "
                                           f"{_rows(mask)}"))
    for name in rules.unique or []:
        if name not in frame.columns:
            validation.checks.append(Check("unique", name, False, f"unique column {name!r} is not in the data"))
            continue
        column = frame[name]
        # Id columns usually ascend: one pass proves uniqueness without hashing.
        if column.is_monotonic_increasing and column.notna().all():
            values = column.to_numpy()
            if values.size < 2 or bool((values[1:] != values[:-1]).all()):
                validation.checks.append(Check("unique", name, True))
                continue
        dup = column.duplicated(keep="first").to_numpy()
        validation.checks.append(Check("unique", name, not dup.any(),
                                       f"column {name!r} repeats values at {_rows(dup)}" if dup.any() else ""))
    return validation
