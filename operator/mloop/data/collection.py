"""A model's collection as a table, streamed: the served predictions joined with the labels that came back, one
row per labelled prediction, in the order they were served (served_at, then row_id).

The collector writes many small Parquet files (one per flush), so no file is large; the whole collection may be.
Memory stays bounded in three steps, each holding a bounded part:

1. scatter: every prediction and feedback file, read one at a time as they are listed, is split by a hash of its
   row ids into `partitions` files on local disk, so a row id's predictions and labels all meet in one partition;
2. join: each partition alone keeps the first prediction of each row id and its last label (in listing order,
   as before), joins them and is written back sorted by (served_at, row_id);
3. merge: the sorted partitions are merged a slice of each at a time into batches in served order.

Memory is one partition while joining (the partition count comes from the listed bytes, see `partition_count`)
and one slice per partition while merging; local disk holds about the collection twice. Inputs and labels are
parsed from their JSON per batch, with the signature of the newest package among the joined rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from mloop.data.canonical import TIMESTAMP
from mloop.data.errors import DataError
from mloop.data.tables import TypeConflict, _force, promote

PREDICTION = pa.schema([("row_id", pa.string()), ("served_at", pa.string()), ("version", pa.int64()),
                        ("package", pa.string()), ("inputs", pa.string()), ("seq", pa.int64())])
FEEDBACK = pa.schema([("row_id", pa.string()), ("label", pa.string()), ("seq", pa.int64())])
JOINED = pa.schema([("row_id", pa.string()), ("served_at", TIMESTAMP), ("version", pa.int64()),
                    ("package", pa.string()), ("inputs", pa.string()), ("label", pa.string())])
MAX_PARTITIONS = 256  # two open files each while scattering
EXPANSION = 8  # a partition in memory while it is joined, per byte of zstd Parquet listed (JSON text, sort copies)


def partition_count(listed_bytes: int, budget: int) -> int:
    """Partitions so that one, joined in memory, stays near `budget` bytes."""
    return max(1, min(MAX_PARTITIONS, math.ceil(listed_bytes * EXPANSION / max(1, budget))))


def _partition_of(row_ids: pa.Array, partitions: int) -> np.ndarray:
    if partitions == 1:
        return np.zeros(len(row_ids), np.int64)
    hashes = pd.util.hash_array(np.asarray(row_ids.to_numpy(zero_copy_only=False), dtype=object))
    return (hashes % np.uint64(partitions)).astype(np.int64)


def _column(table: pa.Table, name: str, type_: pa.DataType, default: Any = None) -> pa.Array:
    if name not in table.column_names:
        return pa.array([default] * table.num_rows, type_)
    return table.column(name).combine_chunks().cast(type_)


class _Scatter:
    """One kind of row (predictions or feedback) scattered to partition files, in arrival order."""

    def __init__(self, scratch: str, kind: str, schema: pa.Schema, partitions: int) -> None:
        self.paths = [os.path.join(scratch, f"{kind}-{p}.arrow") for p in range(partitions)]
        self.schema, self.partitions = schema, partitions
        self.writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        seq = pa.array(np.arange(self.rows, self.rows + table.num_rows, dtype=np.int64))
        self.rows += table.num_rows
        table = pa.Table.from_arrays([*table.columns, seq], schema=self.schema)
        part = _partition_of(table.column("row_id").combine_chunks(), self.partitions)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
        ordered = table.take(pa.array(order))
        for p in np.flatnonzero(np.diff(bounds)):
            if p not in self.writers:
                self.writers[p] = pa.ipc.new_stream(self.paths[p], self.schema)
            self.writers[p].write_table(ordered.slice(bounds[p], bounds[p + 1] - bounds[p]))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def read(self, p: int) -> pa.Table | None:
        if p not in self.writers:
            return None
        with pa.OSFile(self.paths[p]) as source:
            table = pa.ipc.open_stream(source).read_all()
        os.unlink(self.paths[p])
        return table


def _first_of_each(table: pa.Table, seq_order: str) -> pa.Table:
    """One row per row_id: the lowest seq ('ascending') or the highest ('descending')."""
    table = table.take(pc.sort_indices(table, [("row_id", "ascending"), ("seq", seq_order)]))
    ids = table.column("row_id").combine_chunks()
    first = np.ones(len(ids), bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return table.filter(pa.array(first))


@dataclass
class Joined:
    """The sorted partitions of a joined collection and what the source label and signature need."""

    runs: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    version: int | None = None
    packages: set[str] = field(default_factory=set)

    def batches(self, rows: int) -> Iterator[pa.Table]:
        """The joined rows in served order, about `rows` at a time: a slice of each sorted partition is held,
        and the rows up to the smallest last key among the slices are sorted and given out."""
        per_run = max(1, rows // max(1, len(self.runs)))
        readers = [_slices(path, per_run) for path in self.runs]
        held: list[pa.Table | None] = [next(r, None) for r in readers]
        while True:
            live = [i for i, t in enumerate(held) if t is not None]
            if not live:
                return
            bound = min(_key(held[i], held[i].num_rows - 1) for i in live)  # type: ignore[union-attr]
            out = []
            for i in live:
                table = held[i]
                n = _rows_upto(table, bound)  # type: ignore[arg-type]
                out.append(table.slice(0, n))  # type: ignore[union-attr]
                rest = table.slice(n)  # type: ignore[union-attr]
                held[i] = rest if rest.num_rows else next(readers[i], None)
            merged = pa.concat_tables(out)
            yield merged.take(pc.sort_indices(merged, [("served_at", "ascending"), ("row_id", "ascending")]))


def _slices(path: str, rows: int) -> Iterator[pa.Table]:
    # read, not memory-mapped: a map of every partition would count whole against an address-space limit
    with pa.OSFile(path) as source:
        for batch in _file_batches(source):
            for start in range(0, batch.num_rows, rows):
                yield pa.Table.from_batches([batch.slice(start, rows)])


def _file_batches(source: Any) -> Iterator[pa.RecordBatch]:
    reader = pa.ipc.open_file(source)
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _key(table: pa.Table, i: int) -> tuple[int, str]:
    return table.column("served_at")[i].value, table.column("row_id")[i].as_py()


def _rows_upto(table: pa.Table, bound: tuple[int, str]) -> int:
    """How many leading rows of a sorted slice have a key at most `bound`."""
    served = table.column("served_at").combine_chunks().cast(pa.int64()).to_numpy()
    low, high = np.searchsorted(served, bound[0], "left"), np.searchsorted(served, bound[0], "right")
    ids = table.column("row_id").slice(low, high - low).to_pylist()
    return int(low + sum(1 for rid in ids if rid <= bound[1]))


def join(predictions: Iterable[pa.Table], feedback: Iterable[pa.Table], stage: str | None, partitions: int,
         scratch: str, rows_per_batch: int) -> Joined:
    """Scatter, then join each partition alone (first prediction of a row id, its last label) and keep it sorted
    by (served_at, row_id) on local disk."""
    served = _Scatter(scratch, "predictions", PREDICTION, partitions)
    labels = _Scatter(scratch, "feedback", FEEDBACK, partitions)
    try:
        for table in predictions:
            stages = _column(table, "stage", pa.string(), "")
            keep = pc.invert(pc.starts_with(stages, "shadow-"))  # a shadow's predictions were never served
            if stage:
                keep = pc.and_(keep, pc.equal(stages, stage))
            table = table.filter(keep)
            served.add(pa.table([_column(table, "row_id", pa.string()), _column(table, "served_at", pa.string()),
                                 _column(table, "version", pa.int64()), _column(table, "package", pa.string()),
                                 _column(table, "inputs", pa.string())], names=PREDICTION.names[:-1]))
        for table in feedback:
            labels.add(pa.table([_column(table, "row_id", pa.string()), _column(table, "label", pa.string())],
                                names=FEEDBACK.names[:-1]))
    finally:
        served.close()
        labels.close()
    joined = Joined()
    for p in range(partitions):
        left, right = served.read(p), labels.read(p)
        if left is None or right is None:
            continue
        rows = _first_of_each(left, "ascending").drop_columns(["seq"]).join(
            _first_of_each(right, "descending").drop_columns(["seq"]), "row_id", join_type="inner")
        if rows.num_rows == 0:
            continue
        try:
            when = rows.column("served_at").cast(TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataError("UnreadableFile", f"collected predictions: served_at: {str(err)[:200]}") from err
        rows = rows.set_column(rows.schema.get_field_index("served_at"), "served_at", when).select(JOINED.names)
        rows = rows.take(pc.sort_indices(rows, [("served_at", "ascending"), ("row_id", "ascending")])).cast(JOINED)
        path = os.path.join(scratch, f"joined-{p}.arrow")
        with pa.ipc.new_file(path, JOINED) as writer:  # small chunks: the merge holds one of every partition
            writer.write_table(rows, max_chunksize=max(64, rows_per_batch // partitions))
        joined.runs.append(path)
        joined.rows += rows.num_rows
        joined.bytes += rows.nbytes
        newest = pc.max(rows.column("version")).as_py()
        joined.version = newest if joined.version is None else max(joined.version, newest)
        joined.packages |= set(pc.unique(rows.column("package")).to_pylist())
    return joined


def _parse_json_lines(texts: pa.ChunkedArray | pa.Array, prefix: str = "", suffix: str = "") -> pa.Table:
    """Each text (one JSON value, wrapped by prefix/suffix into an object) parsed as one row, types inferred."""
    lines = pc.binary_join_element_wise(prefix, texts, suffix + "\n", "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, np.int32)[lines.offset:lines.offset + len(lines) + 1]
    body = data[int(bounds[0]):int(bounds[-1])] if data is not None and len(lines) else pa.py_buffer(b"")
    return pajson.read_json(pa.BufferReader(body), read_options=pajson.ReadOptions(
        use_threads=False, block_size=max(1 << 20, body.size + 1)))


def shaped(tables: Iterable[pa.Table], inputs: list[str], target: str,
           forced: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    """The joined rows as the Dataset's columns: row_id, served_at, each signature input, the target."""
    seen: dict[str, pa.DataType] = {}
    for table in tables:
        n = table.num_rows
        if n == 0:
            continue
        try:
            parsed = _parse_json_lines(table.column("inputs"))
            label = _parse_json_lines(table.column("label"), '{"v":', "}")
        except pa.ArrowInvalid as err:  # a value that is not JSON, or a column both number and text
            raise DataError("UnreadableFile", f"collected predictions between {table.column('row_id')[0]} and "
                                              f"{table.column('row_id')[n - 1]}: {str(err)[:300]}") from err
        if parsed.num_rows != n or label.num_rows != n:
            raise DataError("UnreadableFile", "collected predictions: an inputs or label value is not one JSON value")
        columns = [table.column("row_id").combine_chunks(), table.column("served_at").combine_chunks()]
        for name in inputs:
            columns.append(parsed.column(name).combine_chunks() if name in parsed.column_names
                           else pa.nulls(n))
        columns.append(label.column("v").combine_chunks() if "v" in label.column_names else pa.nulls(n))
        names = ["row_id", "served_at", *inputs, target]
        for c, name in zip(columns, names):
            if name in forced:
                continue
            # JSON types are inferred per batch: a type that differs from an earlier batch's (an all-null one
            # included) is read again from the start with the wider one, so the table does not depend on where
            # batches were cut
            first = seen.setdefault(name, c.type)
            if first != c.type and not pa.types.is_null(c.type):
                raise TypeConflict(name, promote(first, c.type), f"{first} in an earlier batch, then {c.type}")
        yield _force(pa.RecordBatch.from_arrays(columns, names=names), forced)
