"""A background sender per sink, so a slow or dead sink never holds up reconciliation.

Each sink gets one daemon thread and a bounded queue: deliveries keep their order, a failing delivery
is retried with exponential backoff, and when the queue is full the oldest waiting delivery is dropped
(and counted) rather than blocking the handler that produced a new one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from prometheus_client import Counter

log = logging.getLogger("mloop.integrations")

DELIVERIES = Counter("mloop_notifications_total", "Deliveries to integration sinks, by sink and outcome "
                     "(delivered, failed after retries, dropped because the queue was full).", ["sink", "outcome"])


@dataclass
class Delivery:
    label: str
    send: Callable[[], None]
    attempts: int


class Dispatcher:
    def __init__(self, sink: str, capacity: int = 1000, first_backoff: float = 0.5, max_backoff: float = 30.0):
        self.sink, self.first_backoff, self.max_backoff = sink, first_backoff, max_backoff
        self.queue: queue.Queue[Delivery] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, label: str, send: Callable[[], None], attempts: int) -> None:
        """Queue one delivery; never blocks."""
        delivery = Delivery(label, send, max(1, attempts))
        while True:
            try:
                self.queue.put_nowait(delivery)
                break
            except queue.Full:
                try:
                    dropped = self.queue.get_nowait()
                    self.queue.task_done()
                    DELIVERIES.labels(self.sink, "dropped").inc()
                    log.warning("%s: queue full, dropped %s", self.sink, dropped.label)
                except queue.Empty:
                    pass
        self._ensure_thread()

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued so far was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"mloop-{self.sink}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            delivery = self.queue.get()
            try:
                self._deliver(delivery)
            finally:
                self.queue.task_done()

    def _deliver(self, delivery: Delivery) -> None:
        delay = self.first_backoff
        for attempt in range(1, delivery.attempts + 1):
            try:
                delivery.send()
                DELIVERIES.labels(self.sink, "delivered").inc()
                return
            except Exception as err:  # any failure of a sink is retried, then logged; never raised
                if attempt == delivery.attempts:
                    DELIVERIES.labels(self.sink, "failed").inc()
                    log.warning("%s: giving up on %s after %d attempts: %s", self.sink, delivery.label, attempt, err)
                    return
                log.info("%s: %s failed (attempt %d): %s; retrying in %.1fs", self.sink, delivery.label, attempt,
                         err, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
