"""Requests checked against a package's signature on numpy arrays (no pandas); every refusal names the column."""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_ROWS = 10_000
NUMERIC = ("integer", "float", "boolean")


class BadRequest(Exception):
    def __init__(self, message: str, column: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.column, self.status = message, column, status

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"column": self.column} if self.column else {})}


def as_array(name: str, values: Any, numeric: bool) -> np.ndarray:
    """One column's values as a flat float64 array (NaN for null) or an object array of str/None."""
    if numeric and isinstance(values, list) and all(type(v) is float or type(v) is int for v in values):
        return np.array(values, dtype=np.float64)  # the common case, without numpy's type inference
    if isinstance(values, np.ndarray):
        array = values.ravel()
    elif isinstance(values, list):
        try:
            array = np.asarray(values).ravel()
        except ValueError:  # ragged nesting
            raise BadRequest(f"column {name!r}: values must be a flat or rectangular list", name) from None
    else:
        raise BadRequest(f"column {name!r}: values must be a list", name)
    kind = array.dtype.kind
    if numeric:
        if kind in "fiub":
            return array.astype(np.float64, copy=False)
        items = array.tolist() if kind == "O" else _flat(values)  # numpy turned the numbers of a mixed list to str
        for i, v in enumerate(items):
            if v is not None and (isinstance(v, (str, bytes)) or not isinstance(v, (int, float))):
                raise BadRequest(f"column {name!r} must be numeric; row {i} is {v!r}", name)
        return np.array([np.nan if v is None else float(v) for v in items], dtype=np.float64)
    if kind in "US":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()], dtype=object)
    if kind == "O":
        return np.array([None if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in array],
                        dtype=object)
    return np.array([str(v) for v in array.tolist()], dtype=object)


def _flat(values: Any) -> list[Any]:
    return [x for v in values for x in _flat(v)] if isinstance(values, (list, np.ndarray)) else [values]


def check_columns(columns: dict[str, Any], signature: dict[str, Any]) -> tuple[dict[str, np.ndarray], int, bool]:
    """{column: values} -> ({column: array} in signature order, rows, any nulls), after checking names,
    types, ranges, categories and nulls."""
    if not isinstance(columns, dict) or not columns:
        raise BadRequest("no inputs given")
    inputs = signature["inputs"]
    for c in columns:
        if c not in signature["_names"]:
            raise BadRequest(f"unknown input column {c!r}; expected {[i['name'] for i in inputs]}", c)
    arrays: dict[str, np.ndarray] = {}
    rows = -1
    any_null = False
    for spec in inputs:
        name = spec["name"]
        if name not in columns:
            raise BadRequest(f"missing input column {name!r}", name)
        numeric = spec["type"] in NUMERIC
        array = as_array(name, columns[name], numeric)
        if rows == -1:
            rows = array.size
            if rows == 0 or rows > MAX_ROWS:
                raise BadRequest(f"between 1 and {MAX_ROWS} rows per request, got {rows}")
        elif array.size != rows:
            raise BadRequest("every input column needs a list of values of the same length")
        if numeric:
            nulls = np.isnan(array)
            low, high = spec.get("min"), spec.get("max")
            if low is not None or high is not None:
                with np.errstate(invalid="ignore"):
                    out = np.flatnonzero(((array < low) if low is not None else False) |
                                         ((array > high) if high is not None else False))
                if out.size:
                    raise BadRequest(f"column {name!r} is outside [{low}, {high}] at row {out[0]}: "
                                     f"{array[out[0]].item()!r}", name)
            null_rows = np.flatnonzero(nulls) if nulls.any() else ()
        else:
            null_rows = [i for i, v in enumerate(array) if v is None]
            allowed = spec.get("_allowed")
            if allowed is not None:
                for i, v in enumerate(array):
                    if v is not None and v not in allowed:
                        raise BadRequest(f"column {name!r} has {v!r} at row {i}; allowed: {spec['allowedValues']}",
                                         name)
        if len(null_rows):
            if spec.get("nullable") is False:
                raise BadRequest(f"column {name!r} may not be null (row {int(null_rows[0])})", name)
            any_null = True
        arrays[name] = array
    return arrays, rows, any_null


def prepare(signature: dict[str, Any]) -> dict[str, Any]:
    """The signature with lookups the request path needs precomputed (names set, allowed values as sets)."""
    prepared = {**signature, "_names": {i["name"] for i in signature["inputs"]}}
    prepared["inputs"] = [{**i, **({"_allowed": frozenset(i["allowedValues"])} if i.get("allowedValues") is not None
                                   else {})} for i in signature["inputs"]]
    return prepared
