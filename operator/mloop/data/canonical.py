"""Canonical tables and their digests: same rows and column order -> same version, whatever the file format.

Types are normalised (every integer to int64, float to float64, text and categories to
string, datetimes to UTC microseconds), null slots are zeroed and validity is hashed
separately, and the result is hashed as one Arrow IPC stream. Parquet, CSV and JSON
readers that agree on the values therefore agree on the digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mloop.data.errors import DataError


@dataclass(frozen=True)
class Digest:
    hexdigest: str

    @property
    def full(self) -> str:
        return f"sha256:{self.hexdigest}"

    @property
    def version(self) -> str:
        return self.hexdigest[:12]


def _canonical_type(arr: pa.ChunkedArray) -> pa.DataType:
    t = arr.type
    if pa.types.is_boolean(t):
        return pa.bool_()
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_null(t):
        return pa.string()
    return pa.string()


def canonical_table(frame: pd.DataFrame) -> pa.Table:
    """A table with canonical column types and no pandas metadata."""
    if frame.columns.duplicated().any():
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataError("DuplicateColumns", f"duplicate column names: {', '.join(dupes)}")
    columns = []
    names = []
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object).where(series.notna(), None)
        try:
            arr = pa.chunked_array([pa.array(series, from_pandas=True)])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.chunked_array([pa.array(series.map(lambda v: None if pd.isna(v) else str(v)), type=pa.string())])
        target = _canonical_type(arr)
        if target == pa.timestamp("us", tz="UTC") and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
            arr = arr.cast(pa.timestamp("us")).cast(target) if arr.type.unit != "us" else arr
            arr = pc.assume_timezone(arr, "UTC")
        elif arr.type != target:
            if pa.types.is_string(target) and not pa.types.is_string(arr.type):
                arr = pc.cast(arr, pa.string(), safe=False) if not pa.types.is_null(arr.type) else pa.chunked_array(
                    [pa.nulls(len(arr), pa.string())])
            else:
                arr = arr.cast(target)
        columns.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(columns, names=names)


def _zero(t: pa.DataType) -> pa.Scalar:
    if pa.types.is_boolean(t):
        return pa.scalar(False)
    if pa.types.is_string(t):
        return pa.scalar("", pa.string())
    if pa.types.is_timestamp(t):
        return pa.scalar(0, pa.int64()).cast(t)
    return pa.scalar(0, t)


def digest_table(table: pa.Table) -> Digest:
    """sha256 over the canonical IPC stream, with validity hashed as its own boolean columns."""
    arrays, fields = [], []
    for field, column in zip(table.schema, table.columns):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if column.null_count:
            arrays.append(column.is_valid())
            fields.append(pa.field(f"{field.name}\x00valid", pa.bool_(), nullable=False))
            column = pc.fill_null(column, _zero(column.type))
        arrays.append(column)
        fields.append(pa.field(field.name, column.type, nullable=False))
    sink = _HashSink()
    normalised = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with pa.ipc.new_stream(sink, normalised.schema) as writer:
        for batch in normalised.combine_chunks().to_batches():
            writer.write_batch(batch)
    return Digest(sink.hash.hexdigest())


class _HashSink:
    """A write-only file object that hashes instead of storing."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
