"""Feeding a batch's columns to per-column accumulators, in threads when the batch is big enough."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Sequence

import pyarrow as pa


class _Accumulator(Protocol):
    def update(self, arr: Any) -> None: ...


class Columnwise:
    """hashlib, numpy and Arrow release the GIL in their heavy parts, so columns can be worked on in parallel."""

    def __init__(self, columns: int, threads: int | None = None) -> None:
        workers = min(columns, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def update(self, accumulators: Sequence[_Accumulator], batch: pa.RecordBatch) -> None:
        pairs = list(zip(accumulators, batch.columns))
        if self._pool is not None and batch.num_rows >= 4096:
            list(self._pool.map(lambda p: p[0].update(p[1]), pairs))
        else:
            for column, arr in pairs:
                column.update(arr)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
