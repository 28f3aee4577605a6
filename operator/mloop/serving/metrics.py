"""The server's Prometheus metrics, summed over its worker processes (prometheus_client's multiprocess mode).

prometheus_client picks its storage when first imported, so nothing here imports it at module level:
the server points PROMETHEUS_MULTIPROC_DIR at a fresh folder of its own first.
"""

from __future__ import annotations

import os
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
STREAMS = ("predictions", "feedback")


class CollectionMetrics:
    """Per stream: rows buffered now, written, dropped (the one drop metric), batches; and failed writes."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        buffered = Gauge("mloop_collection_buffered", "Rows waiting for S3, as of the last flush attempt.", ["stream"], registry=None,
                         multiprocess_mode="livesum")
        written = Counter("mloop_collection_written", "Rows written to S3.", ["stream"], registry=None)
        dropped = Counter("mloop_collection_dropped", "Rows dropped because the buffer was full.", ["stream"],
                          registry=None)
        batches = Counter("mloop_collection_batches", "Parquet batches written.", ["stream"], registry=None)
        self.buffered = {s: buffered.labels(s) for s in STREAMS}
        self.written = {s: written.labels(s) for s in STREAMS}
        self.dropped = {s: dropped.labels(s) for s in STREAMS}
        self.batches = {s: batches.labels(s) for s in STREAMS}
        self.failures = Counter("mloop_collection_write_failures", "Failed batch writes (kept and retried).",
                                registry=None)


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self._requests = Counter("mloop_requests", "Requests by route and HTTP status.", ["route", "code"],
                                 registry=None)
        self._children: dict[tuple[str, int], Any] = {}
        self.predictions = Counter("mloop_predictions", "Rows predicted.", registry=None)
        self.latency = Histogram("mloop_request_seconds", "Time from request body to answer.", registry=None,
                                 buckets=LATENCY_BUCKETS)
        self.collection = CollectionMetrics()

    def observe(self, route: str, status: int, seconds: float | None = None, rows: int = 0) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self._children[(route, status)] = self._requests.labels(route, str(status))
        child.inc()
        if seconds is not None:
            self.latency.observe(seconds)
        if rows:
            self.predictions.inc(rows)


def render() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, live and dead."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return generate_latest(registry), CONTENT_TYPE_LATEST
