"""Schema checks and validation rules. Each failure names the column and its first offending rows."""

from __future__ import annotations

import re
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


def _cast(series: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """The column in its declared type, and a mask of values that could not be cast."""
    present = series.notna().to_numpy()
    if spec.type in ("integer", "float"):
        if series.dtype.kind in "iuf":
            numbers = series.astype("float64")
        else:
            numbers = pd.to_numeric(series, errors="coerce").astype("float64")
        bad = present & numbers.isna().to_numpy()
        if spec.type == "integer":
            finite = numbers.notna().to_numpy()
            bad |= finite & (np.mod(numbers.fillna(0).to_numpy(), 1) != 0)
            return (numbers if bad.any() else numbers.astype("Int64")), bad
        return numbers, bad
    if spec.type == "boolean":
        if series.dtype == bool:
            return series, np.zeros(len(series), bool)
        lowered = series.map(lambda v: str(v).strip().lower() if pd.notna(v) else None)
        mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        mapped = lowered.map(mapping)
        bad = present & mapped.isna().to_numpy()
        return mapped.astype("boolean"), bad
    if spec.type == "datetime":
        parsed = pd.to_datetime(series, errors="coerce", utc=True)
        return parsed, present & parsed.isna().to_numpy()
    as_text = series.map(lambda v: None if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)))
    return as_text.astype(object), np.zeros(len(series), bool)


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
    pii = "none"
    if type_ in ("string", "category"):
        sample = series.dropna().astype(str).head(200)
        if len(sample) and (sample.str.match(EMAIL).mean() > 0.5 or sample.str.match(PHONE).mean() > 0.5):
            pii = "direct"
    return ColumnStatus(name=name, type=type_, role=role, pii=pii)


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
    out = frame.copy()
    statuses: list[ColumnStatus] = []
    for name in frame.columns:
        spec = declared.get(name)
        if spec is None:
            statuses.append(infer_column(str(name), frame[name]))
            continue
        cast, bad = _cast(frame[name], spec)
        if bad.any():
            sample = frame[name][bad].head(3).tolist()
            checks.append(Check("type", name, False, f"column {name!r} is declared {spec.type} but {_rows(bad)} "
                                                    f"hold {sample!r}"))
        else:
            checks.append(Check("type", name, True))
            out[name] = cast
        nulls = cast.isna().to_numpy() & ~bad
        if not spec.nullable:
            checks.append(Check("nullable", name, not nulls.any(),
                                f"column {name!r} is not nullable but {_rows(nulls)} are empty" if nulls.any() else ""))
        if spec.allowed_values is not None:
            allowed = set(spec.allowed_values)
            text = cast.map(lambda v: None if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)))
            outside = (text.notna() & ~text.isin(allowed)).to_numpy() & ~bad
            checks.append(Check("allowedValues", name, not outside.any(),
                                f"column {name!r} has values outside {sorted(allowed)[:10]} at {_rows(outside)}: "
                                f"{text[outside].head(3).tolist()!r}" if outside.any() else ""))
        if (spec.min is not None or spec.max is not None) and not bad.any():
            values = pd.to_numeric(cast, errors="coerce")
            low = values < spec.min if spec.min is not None else pd.Series(False, index=values.index)
            high = values > spec.max if spec.max is not None else pd.Series(False, index=values.index)
            outside = (low | high).fillna(False).to_numpy()
            checks.append(Check("range", name, not outside.any(),
                                f"column {name!r} is outside [{spec.min}, {spec.max}] at {_rows(outside)}"
                                if outside.any() else ""))
        statuses.append(ColumnStatus(name=spec.name, type=spec.type, role=spec.role, pii=spec.pii))
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
        dup = frame[name].duplicated(keep="first").to_numpy()
        validation.checks.append(Check("unique", name, not dup.any(),
                                       f"column {name!r} repeats values at {_rows(dup)}" if dup.any() else ""))
    return validation
