"""One pass over a source's record batches: validate, cast, canonicalise, digest, profile and write Parquet.

Each batch is checked and then forgotten; only accumulators stay (row counts, the first offending rows,
hash states, profile sketches), so memory is the batch size, not the data size. The Parquet output goes
to a local file one row group per batch; it is uploaded only when every check passed, so a file that
turns bad in its last batch leaves nothing in S3.

Memory: `block_bytes()` derives the reader's block size from the task's memory limit (MLOOP_MEMORY_LIMIT,
set by the Job builder from the container's limits.memory; else the cgroup or RLIMIT_AS limit).
"""

from __future__ import annotations

import os
import queue
import resource
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mloop.api.dataset import ColumnStatus, SchemaSpec, ValidationRules
from mloop.data.canonical import TIMESTAMP, Digest, Hasher, canonical_batch, canonical_type, frame_to_arrow
from mloop.data.profile import Profiler
from mloop.data.tables import TypeConflict, promote
from mloop.data.validate import Check, RuleChecker, SchemaChecker

MIB = 1 << 20
# Arrow's readers keep about 30 of their blocks read ahead (CSV parses 1 MiB blocks, tables.PARSE_BLOCK;
# Parquet and JSON read in blocks of this size), `prefetch` holds up to 3 batches, and the batch in hand
# grows about 5x as pandas, cast and canonical copies: 1/128 of the limit leaves the rest for the
# interpreter, the libraries and the Parquet writer.
LIMIT_SHARE = 128
MAX_BLOCK = DEFAULT_BLOCK = 16 * MIB  # larger blocks read no faster; unbounded, about 500 MB is read ahead
DECLARED = {"integer": pa.int64(), "float": pa.float64(), "boolean": pa.bool_(), "datetime": TIMESTAMP,
            "string": pa.string(), "category": pa.string()}


# Integers and booleans keep their type in pandas even with nulls (else they turn float or object in the
# batches that have a null and not in the others, and what is inferred would depend on the batching).
_NULLABLE_INTS = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.int16(): pd.Int64Dtype(),
                  pa.int8(): pd.Int64Dtype(), pa.uint8(): pd.Int64Dtype(), pa.uint16(): pd.Int64Dtype(),
                  pa.uint32(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def memory_limit() -> int | None:
    """Bytes this process may use: the Job's limit, else the cgroup's, else RLIMIT_AS; None if unbounded."""
    value = os.environ.get("MLOOP_MEMORY_LIMIT", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 50:
            return int(text)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return soft if soft != resource.RLIM_INFINITY else None


def block_bytes(limit: int | None = None) -> int:
    limit = memory_limit() if limit is None else limit
    if limit is None:
        return DEFAULT_BLOCK
    return max(MIB, min(MAX_BLOCK, limit // LIMIT_SHARE))


def declared_types(schema: SchemaSpec | None) -> dict[str, str]:
    """The declared type of each declared column, for the readers (text stays text, dates only if declared)."""
    return {c.name: c.type for c in schema.columns} if schema else {}


def target_schema(source: pa.Schema, schema: SchemaSpec | None) -> pa.Schema:
    """The version's column types, fixed by the source's schema and the declared types, never by a batch."""
    declared = {c.name: c.type for c in schema.columns} if schema else {}
    return pa.schema([pa.field(str(f.name), DECLARED[declared[f.name]] if f.name in declared
                               else canonical_type(f.type)) for f in source])


@dataclass
class Pass:
    rows: int
    columns: list[ColumnStatus]
    checks: list[Check]
    digest: Digest | None
    profile: dict[str, Any] | None
    erased: int

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


def _conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """The batch in the version's types; a value that does not fit means the source changed type part-way."""
    if batch.schema.types == target.types:
        return batch
    columns = []
    for arr, field in zip(batch.columns, target):
        try:
            columns.append(arr if arr.type == field.type else arr.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise TypeConflict(field.name, promote(field.type, arr.type), str(err)[:200]) from err
    return pa.RecordBatch.from_arrays(columns, schema=target)


def _canonical(batch: pa.RecordBatch, cast: pd.DataFrame, cast_names: set[str], dropped_any: bool) -> pa.RecordBatch:
    """The canonical batch: columns the checks cast come from pandas, the rest straight from the reader's
    Arrow arrays (no round trip through pandas for text)."""
    if dropped_any:
        columns = frame_to_arrow(cast).columns
    else:
        redo = frame_to_arrow(cast[[n for n in cast.columns if n in cast_names]]) if cast_names else None
        columns = [redo.column(str(n)) if n in cast_names else batch.column(i)  # type: ignore[union-attr]
                   for i, n in enumerate(cast.columns)]
    table = canonical_batch(pa.Table.from_arrays(columns, names=[str(n) for n in cast.columns])).combine_chunks()
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_arrays(
        [pa.array([], f.type) for f in table.schema], schema=table.schema)


_DONE = object()


def prefetch(batches: Iterable[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """The batches, read by a thread `depth` ahead: Arrow's readers parse only when asked and release the GIL
    while they do, so parsing the next batch overlaps checking this one (measured: no overlap otherwise).
    An error in the reader is raised here; stopping early stops the reader."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        iterator = iter(batches)
        try:
            for batch in iterator:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as err:  # raised again in the consumer's thread
            put(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=read, name="mloop-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def run(batches: Iterable[pa.RecordBatch], schema: SchemaSpec | None, rules: ValidationRules | None, out: str,
        drop: Callable[[pd.DataFrame], tuple[pd.DataFrame, int]] | None = None) -> Pass:
    """Validate and write the batches to the Parquet file `out`; digest and profile only if every check passed."""
    checker, table_rules = SchemaChecker(schema), RuleChecker(rules)
    target: pa.Schema | None = None
    hasher: Hasher | None = None
    profiler: Profiler | None = None
    writer: pq.ParquetWriter | None = None
    offset = erased = 0
    background = ThreadPoolExecutor(max_workers=1)
    pending: Future | None = None
    try:
        for batch in prefetch(batches):
            if target is None:
                target = target_schema(batch.schema, schema)
            frame = batch.to_pandas(types_mapper=_NULLABLE_INTS.get)
            if drop is not None:
                frame, dropped = drop(frame)
                erased += dropped
            cast = checker.feed(frame, offset)
            table_rules.feed(cast, offset)
            offset += len(frame)
            if checker.failing or len(frame) == 0:
                continue  # this version will not be cut: keep checking, stop producing
            canon = _conform(_canonical(batch, cast, checker.cast_names, dropped_any=len(frame) != batch.num_rows),
                             target)
            if writer is None:
                hasher, profiler = Hasher(target), Profiler(target)
                # dictionaries only for text: on floats and ids they cost a hash per value and rarely pay
                writer = pq.ParquetWriter(out, target, compression="zstd",
                                          use_dictionary=[f.name for f in target if pa.types.is_string(f.type)])
            if pending is not None:
                pending.result()
            # the Parquet encoder releases the GIL: it writes this batch while the next one is hashed
            pending = background.submit(writer.write_batch, canon, row_group_size=canon.num_rows)
            hasher.update(canon)
            profiler.update(canon)
        if pending is not None:
            pending.result()
    finally:
        background.shutdown()
        if writer is not None:
            writer.close()

    statuses, checks = checker.finish()
    checks += table_rules.finish()
    ok = all(c.passed for c in checks) and hasher is not None and profiler is not None
    if ok and offset != hasher.rows:  # type: ignore[union-attr]
        raise AssertionError("rows checked and rows written differ")
    return Pass(rows=offset, columns=statuses, checks=checks, digest=hasher.digest() if ok else None,  # type: ignore[union-attr]
                profile=profiler.result() if ok else None, erased=erased)  # type: ignore[union-attr]


def frame_batches(frame: pd.DataFrame, rows: int) -> Iterator[pa.RecordBatch]:
    """An in-memory frame as the same kind of batches a file gives (the in-memory path of `run`)."""
    table = frame_to_arrow(frame)
    if table.num_rows == 0:
        yield from table.to_batches() or [pa.RecordBatch.from_arrays([pa.array([], f.type) for f in table.schema],
                                                                      schema=table.schema)]
        return
    yield from table.to_batches(max_chunksize=max(1, rows))
