"""Prometheus metrics of the operator: reconciles, their durations and errors per kind, tasks running."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("mloop_reconciles_total", "Reconcile passes, by kind.", ["kind"])
ERRORS = Counter("mloop_reconcile_errors_total", "Reconcile passes that raised, by kind.", ["kind"])
DURATION = Histogram("mloop_reconcile_seconds", "Time spent in one reconcile pass, by kind.", ["kind"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TASKS = Gauge("mloop_tasks_running", "Tasks (Jobs or local processes) in flight, by kind of owner.", ["kind"])
_in_flight: dict[str, set[tuple[str, str]]] = {}


def measured(kind: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Count, time and error-count a reconcile function; track whether it left a task in flight."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(body: Any, *args: Any, **kwargs: Any) -> Any:
            RECONCILES.labels(kind).inc()
            started = time.perf_counter()
            written = None
            try:
                written = fn(body, *args, **kwargs)
                return written
            except Exception:
                ERRORS.labels(kind).inc()
                raise
            finally:
                DURATION.labels(kind).observe(time.perf_counter() - started)
                key = (body["metadata"]["namespace"], body["metadata"]["name"])
                latest = written if isinstance(written, dict) else body
                task = (latest.get("status") or {}).get("task")
                flight = _in_flight.setdefault(kind, set())
                (flight.add if task else flight.discard)(key)
                TASKS.labels(kind).set(len(flight))

        return inner

    return wrap


def serve_metrics(port: int, host: str) -> None:
    if port:
        start_http_server(port, addr=host)
