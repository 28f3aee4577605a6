"""Requests checked against a package's signature; every refusal names the column."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

MAX_ROWS = 10_000
NUMERIC = ("integer", "float", "boolean")


class BadRequest(Exception):
    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.message, self.column = message, column

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"column": self.column} if self.column else {})}


def frame_from_columns(columns: dict[str, list[Any]], signature: dict[str, Any]) -> pd.DataFrame:
    """A DataFrame in signature order from {column: values}, after checking names, types, ranges, categories."""
    if not isinstance(columns, dict) or not columns:
        raise BadRequest("no inputs given")
    inputs = signature["inputs"]
    expected = [i["name"] for i in inputs]
    unknown = [c for c in columns if c not in expected]
    if unknown:
        raise BadRequest(f"unknown input column {unknown[0]!r}; expected {expected}", unknown[0])
    missing = [c for c in expected if c not in columns]
    if missing:
        raise BadRequest(f"missing input column {missing[0]!r}", missing[0])
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if -1 in lengths or len(lengths) != 1:
        raise BadRequest("every input column needs a list of values of the same length")
    rows = lengths.pop()
    if rows == 0 or rows > MAX_ROWS:
        raise BadRequest(f"between 1 and {MAX_ROWS} rows per request, got {rows}")
    data: dict[str, Any] = {}
    for spec in inputs:
        name, values = spec["name"], columns[spec["name"]]
        nulls = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
        if nulls and spec.get("nullable") is False:
            raise BadRequest(f"column {name!r} may not be null (row {nulls[0]})", name)
        if spec["type"] in NUMERIC:
            bad = [i for i, v in enumerate(values) if v is not None and (isinstance(v, (str, bytes, dict, list))
                                                                         or not isinstance(v, (int, float)))]
            if bad:
                raise BadRequest(f"column {name!r} must be numeric; row {bad[0]} is {values[bad[0]]!r}", name)
            array = np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
            low, high = spec.get("min"), spec.get("max")
            with np.errstate(invalid="ignore"):
                out = np.flatnonzero(((array < low) if low is not None else False) |
                                     ((array > high) if high is not None else False))
            if out.size:
                raise BadRequest(f"column {name!r} is outside [{low}, {high}] at row {out[0]}: {values[out[0]]!r}", name)
            data[name] = array
        else:
            text = [None if v is None else str(v) for v in values]
            allowed = spec.get("allowedValues")
            if allowed is not None:
                outside = [i for i, v in enumerate(text) if v is not None and v not in allowed]
                if outside:
                    raise BadRequest(f"column {name!r} has {text[outside[0]]!r} at row {outside[0]}; "
                                     f"allowed: {allowed}", name)
            data[name] = pd.Series(text, dtype=object).where(pd.notna(pd.Series(text, dtype=object)), np.nan)
    return pd.DataFrame(data)


DATATYPES = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64",
             "BOOL", "BYTES"}


def columns_from_v2(inputs: Any, signature: dict[str, Any]) -> dict[str, list[Any]]:
    """OIP v2 tensors -> {column: values}: one tensor per column, or one [rows, features] tensor in signature order."""
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    expected = [i["name"] for i in signature["inputs"]]
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        if not isinstance(tensor, dict) or "name" not in tensor or "data" not in tensor or "shape" not in tensor:
            raise BadRequest("each input tensor needs name, shape, datatype and data")
        if tensor.get("datatype") not in DATATYPES:
            raise BadRequest(f"input {tensor['name']!r}: unknown datatype {tensor.get('datatype')!r}", tensor["name"])
        data = tensor["data"]
        flat = list(np.asarray(data, dtype=object).ravel()) if isinstance(data, list) else None
        if flat is None:
            raise BadRequest(f"input {tensor['name']!r}: data must be a list", tensor["name"])
        shape = tensor["shape"]
        if not isinstance(shape, list) or int(np.prod(shape)) != len(flat):
            raise BadRequest(f"input {tensor['name']!r}: shape {shape} does not match {len(flat)} values", tensor["name"])
        flat = [v.decode() if isinstance(v, bytes) else v for v in flat]
        if tensor["name"] in expected:
            columns[tensor["name"]] = flat
        elif len(inputs) == 1 and len(shape) == 2 and shape[1] == len(expected):
            for j, name in enumerate(expected):
                columns[name] = flat[j::len(expected)]
        else:
            raise BadRequest(f"unknown input {tensor['name']!r}; expected one tensor per column {expected} "
                             f"or one [rows, {len(expected)}] tensor", tensor["name"])
    return columns
