"""Collection: a bounded buffer of sampled predictions and feedback, written to S3 as Parquet batches.

The buffer never grows past its bound: when S3 is slow or down, serving goes on, events past
the bound are dropped, counted and logged, and what is already buffered is kept until it is written.
Each worker process has its own collector with its share of the bound; drops land in one metric.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import sys
import time
import uuid
from collections import deque
from itertools import islice
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mloop.serving.metrics import CollectionMetrics
from mloop.serving.shadow import Shadow
from mloop.storage.artifacts import Store
from mloop.storage.layout import collected_prefix, feedback_prefix

log = logging.getLogger("mloop.serve.collector")


class _NoPandas:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not imported by the model server's collector")


def arrow_without_pandas() -> None:
    """pyarrow imports pandas (about 60 MB) the first time it builds an array, only to ask whether the values are
    pandas objects; the collector never passes one. One Parquet write with that import refused settles pyarrow on
    "no pandas" for good; the scikit-learn fallback may still import pandas later."""
    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pq.write_table(pa.table({"s": pa.array(["x"], pa.string()), "f": pa.array([1.0])}), io.BytesIO())
    finally:
        sys.meta_path.remove(blocker)


class Buffer:
    """One stream (predictions or feedback): rows waiting for S3, bounded."""

    def __init__(self, kind: str, prefix: str, capacity: int, metrics: CollectionMetrics | None):
        self.kind, self.prefix, self.capacity, self.metrics = kind, prefix, capacity, metrics
        self.rows: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.written = 0
        self.batches = 0
        self._last_drop_log = 0.0

    def add(self, rows: list[dict[str, Any]]) -> None:
        room = self.capacity - len(self.rows)
        if room < len(rows):
            lost = len(rows) - max(room, 0)
            self.dropped += lost
            if self.metrics:
                self.metrics.dropped[self.kind].inc(lost)
            now = time.monotonic()
            if now - self._last_drop_log > 5:
                log.warning("%s buffer full (%d rows): dropped %d rows, %d in total", self.kind, self.capacity, lost,
                            self.dropped)
                self._last_drop_log = now
            rows = rows[: max(room, 0)]
        self.rows.extend(rows)

    def gauge(self) -> None:
        """Set at each flush attempt, not per request: a gauge write was a quarter of collection's cost per request."""
        if self.metrics:
            self.metrics.buffered[self.kind].set(len(self.rows))


class Collector:
    def __init__(self, store: Store | None, namespace: str, model: str, version: int, sampling_rate: float,
                 capacity: int = 50_000, batch_rows: int = 5_000, interval: float = 5.0,
                 constants: dict[str, Any] | None = None, metrics: CollectionMetrics | None = None):
        """`constants`: columns equal on every prediction row (model, version, ...), added when written."""
        arrow_without_pandas()
        self.store, self.sampling_rate, self.metrics = store, sampling_rate, metrics
        self.batch_rows, self.interval = batch_rows, interval
        self.constants = constants or {}
        self.predictions = Buffer("predictions", collected_prefix(namespace, model, version).rstrip("/"), capacity,
                                  metrics)
        self.feedback = Buffer("feedback", feedback_prefix(namespace, model).rstrip("/"), capacity, metrics)
        self.failures = 0
        self.shadow: Shadow | None = None  # candidates that also get a sampled copy of each request (serving/shadow)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def sampled(self) -> bool:
        return self.sampling_rate > 0 and (self.sampling_rate >= 1 or random.random() < self.sampling_rate)

    def record_predictions(self, rows: list[tuple[str, str, float, str, str]]) -> None:
        """Rows of (row_id, request_id, served_at, inputs JSON, prediction JSON): compact while they wait."""
        self.predictions.add(rows)
        if len(self.predictions.rows) >= self.batch_rows:
            self._wake.set()

    def offer_shadow(self, row_ids: list[str], arrays: dict[str, Any]) -> None:
        if self.shadow is not None:
            self.shadow.offer(row_ids, arrays)

    def record_feedback(self, rows: list[dict[str, Any]]) -> None:
        self.feedback.add(rows)
        if len(self.feedback.rows) >= self.batch_rows:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self, everything: bool = False) -> bool:
        """Write what is buffered; on failure keep it for the next try. True when nothing is left."""
        for buffer in (self.predictions, self.feedback):
            buffer.gauge()
            while buffer.rows:
                batch = list(islice(buffer.rows, self.batch_rows))  # deque[i] walks from an end: O(n²) here
                try:
                    await asyncio.to_thread(self._write, buffer, batch)
                except Exception as err:  # S3 down or slow: keep the rows, try again later
                    self.failures += 1
                    if self.metrics:
                        self.metrics.failures.inc()
                    log.warning("writing %d %s rows failed (%s); kept in the buffer", len(batch), buffer.kind, err)
                    return False
                for _ in batch:
                    buffer.rows.popleft()
                buffer.written += len(batch)
                buffer.batches += 1
                buffer.gauge()
                if self.metrics:
                    self.metrics.written[buffer.kind].inc(len(batch))
                    self.metrics.batches[buffer.kind].inc()
                if not everything and len(buffer.rows) < self.batch_rows:
                    break
        return not (self.predictions.rows or self.feedback.rows)

    def _write(self, buffer: Buffer, batch: list[dict[str, Any]]) -> None:
        if self.store is None:
            return
        if buffer.kind == "predictions":  # columns built at once: the GIL is held for milliseconds, not per row
            row_ids, request_ids, served, inputs, predictions = zip(*batch)
            n = len(batch)
            table = pa.table({
                "row_id": pa.array(row_ids, pa.string()), "request_id": pa.array(request_ids, pa.string()),
                "served_at": pa.array([datetime.fromtimestamp(t, timezone.utc).isoformat() for t in served]),
                **{k: pa.array([v] * n) for k, v in self.constants.items()},
                "inputs": pa.array(inputs, pa.string()), "prediction": pa.array(predictions, pa.string())})
        else:
            table = pa.Table.from_pylist(batch)
        now = datetime.now(timezone.utc)
        key = f"{buffer.prefix}/{now:%Y/%m/%d}/{now:%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.store.put(key, sink.getvalue())

    async def close(self, timeout: float = 20.0) -> None:
        """Graceful shutdown: stop the loop, then write everything that is left (within a timeout)."""
        if self._task:
            self._task.cancel()
        for buffer in (self.predictions, self.feedback):
            if buffer.dropped:
                log.warning("%s: %d rows dropped in total while the buffer was full", buffer.kind, buffer.dropped)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.flush(everything=True):
                return
            await asyncio.sleep(0.5)
        log.error("shutdown: %d prediction and %d feedback rows could not be written", len(self.predictions.rows),
                  len(self.feedback.rows))
