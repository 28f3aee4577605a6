"""Canonical tables and their digests: same rows and column order -> same version, whatever the file format
and however the rows were cut into batches.

Types are normalised (every integer to int64, float to float64 with NaN as null, text and categories to
string, dates and datetimes to UTC microseconds). The digest does not hash any Arrow buffer layout (that
depends on where batches were cut); it hashes, per column, three chunk-independent byte streams:

- validity: one byte per row (1 present, 0 null);
- values: fixed-width types as little-endian 8-byte values (booleans one byte) with null slots zeroed;
  strings as their UTF-8 bytes concatenated, nulls as empty;
- lengths (strings only): each value's byte length as little-endian int64.

The version digest is sha256 over the schema (names and canonical types), the row count and each column's
three sub-digests. Concatenating streams is associative, so feeding rows in batches of 1, 7 or all gives
the same digest; the in-memory path (`digest_table`) runs the same `Hasher` over one batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mloop.data.columnwise import Columnwise
from mloop.data.errors import DataError

DIGEST_FORMAT = "mloop-columns-v2"
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Digest:
    hexdigest: str

    @property
    def full(self) -> str:
        return f"sha256:{self.hexdigest}"

    @property
    def version(self) -> str:
        return self.hexdigest[:12]


def canonical_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type)
    if pa.types.is_boolean(t):
        return pa.bool_()
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return TIMESTAMP
    return pa.string()


def canonical_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """One column in its canonical type."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    target = canonical_type(t)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string()) if isinstance(arr, pa.Array) else pa.chunked_array(
            [pa.nulls(len(arr), pa.string())])
    if target == TIMESTAMP:
        if pa.types.is_date(t):
            arr = arr.cast(pa.timestamp("us"))
            t = arr.type
        if t.tz is None:
            arr = pc.assume_timezone(arr.cast(pa.timestamp("us")) if t.unit != "us" else arr, "UTC")
        elif t != TIMESTAMP:
            arr = arr.cast(TIMESTAMP)
        return arr
    if target == pa.float64():
        arr = arr.cast(pa.float64()) if t != pa.float64() else arr
        if pc.any(pc.is_nan(arr)).as_py():  # NaN is pandas' null: both paths must mean the same
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, pa.float64()), arr)
        return arr
    if target == pa.string() and not (pa.types.is_string(t)):
        return pc.cast(arr, pa.string(), safe=False)
    return arr.cast(target) if t != target else arr


def canonical_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """A batch (or table) with every column in its canonical type and no metadata."""
    names = [str(n) for n in batch.schema.names]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError("DuplicateColumns", f"duplicate column names: {', '.join(dupes)}")
    columns = [canonical_array(c) for c in batch.columns]
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(columns, names=names)
    return pa.RecordBatch.from_arrays(columns, names=names)


def frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A pandas frame as Arrow columns, object columns that Arrow cannot type as their text."""
    if frame.columns.duplicated().any():
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataError("DuplicateColumns", f"duplicate column names: {', '.join(dupes)}")
    columns, names = [], []
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object).where(series.notna(), None)
        try:
            if isinstance(series.dtype, pd.DatetimeTZDtype):  # pyarrow reads Series.values, which pandas 4 changes
                arr = pa.array(series.dt.tz_convert(None).to_numpy(), pa.timestamp(series.dt.unit, str(series.dt.tz)),
                               from_pandas=True)
            else:
                arr = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.array(series.map(lambda v: None if pd.isna(v) else str(v)), type=pa.string())
        columns.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(columns, names=names)


def canonical_table(frame: pd.DataFrame) -> pa.Table:
    """A table with canonical column types and no pandas metadata."""
    return canonical_batch(frame_to_arrow(frame))


_ONES: dict[int, bytes] = {}


def _ones(n: int) -> bytes:
    if n not in _ONES:
        if len(_ONES) > 8:
            _ONES.clear()
        _ONES[n] = b"\x01" * n
    return _ONES[n]


class _ColumnHash:
    def __init__(self, t: pa.DataType) -> None:
        self.type = t
        self.valid = hashlib.sha256()
        self.values = hashlib.sha256()
        self.lengths = hashlib.sha256() if pa.types.is_string(t) else None

    def update(self, arr: pa.Array) -> None:
        n = len(arr)
        if n == 0:
            return
        if arr.null_count:
            self.valid.update(arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8))
        else:
            self.valid.update(_ones(n))
        t = self.type
        if pa.types.is_string(t):
            if arr.null_count:
                arr = pc.fill_null(arr, "")
            offsets = np.frombuffer(arr.buffers()[1], np.int32, count=n + 1, offset=arr.offset * 4)
            data = arr.buffers()[2]
            if data is not None and offsets[-1] > offsets[0]:
                self.values.update(memoryview(data)[offsets[0]:offsets[-1]])
            self.lengths.update(np.diff(offsets).astype("<i8"))  # type: ignore[union-attr]
        elif pa.types.is_boolean(t):
            values = (pc.fill_null(arr, False) if arr.null_count else arr).to_numpy(zero_copy_only=False)
            self.values.update(values.astype(np.uint8))
        else:
            if arr.null_count:
                arr = pc.fill_null(arr, pa.scalar(0, pa.int64()).cast(t) if pa.types.is_timestamp(t) else pa.scalar(0, t))
            dtype = np.float64 if pa.types.is_floating(t) else np.int64
            self.values.update(np.frombuffer(arr.buffers()[1], dtype, count=n, offset=arr.offset * 8).view(np.uint8))

    def digests(self) -> bytes:
        return self.valid.digest() + self.values.digest() + (self.lengths.digest() if self.lengths else b"")


class Hasher:
    """The streaming version digest: feed canonical batches in order, read `digest()` at the end."""

    def __init__(self, schema: pa.Schema, threads: int | None = None) -> None:
        self.schema = schema
        self.rows = 0
        self.columns = [_ColumnHash(f.type) for f in schema]
        self._pool = Columnwise(len(self.columns), threads)

    def update(self, batch: pa.RecordBatch) -> None:
        if batch.schema.types != self.schema.types or batch.schema.names != self.schema.names:
            raise ValueError(f"batch schema {batch.schema} differs from {self.schema}")
        self.rows += batch.num_rows
        self._pool.update(self.columns, batch)

    def digest(self) -> Digest:
        self._pool.close()
        head = json.dumps({"format": DIGEST_FORMAT, "rows": self.rows,
                           "columns": [[f.name, str(f.type)] for f in self.schema]}, separators=(",", ":"))
        total = hashlib.sha256(head.encode())
        for column in self.columns:
            total.update(column.digests())
        return Digest(total.hexdigest())


def digest_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Digest:
    hasher = Hasher(schema)
    for batch in batches:
        hasher.update(batch)
    return hasher.digest()


def digest_table(table: pa.Table) -> Digest:
    """The digest of a canonical table held in memory: the streaming Hasher over its batches."""
    return digest_batches(table.schema, table.to_batches())
