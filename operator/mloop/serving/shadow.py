"""Shadow traffic: a Production server also sends sampled requests to candidate packages, off the request path.

The operator names the targets durably: a JSON file beside a local server (re-read on SIGHUP, so no restart and
no polling) or the Deployment's MLOOP_SHADOWS (a new value rolls the pods). Each worker keeps one bounded queue
per target: the request path only appends a copy's ids and values to the batch that is filling; a full queue drops
the copy and counts it. Sender tasks post each batch to the target's /predict with the caller's row ids, so the
candidate's collection records its predictions under the same row ids as Production's. A slow or dead target costs
its senders a timeout, never the caller.
A target whose signature takes fewer inputs is sent only its own columns (the operator compared the signatures).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("mloop.serve.shadow")
OUTCOMES = ("sent", "failed", "dropped")
MAX_BATCH_ROWS = 1000  # rows in one forwarded POST (a server takes up to 10,000)
DROPS_PUBLISHED_WITHIN = 0.5  # seconds: the metric's lag behind a drop, whatever the gatherer is waiting on
HEADERS = {"Content-Type": "application/json", "X-Mloop-Shadow": "1"}


@dataclass(frozen=True)
class Target:
    """A candidate package's server that receives a sampled copy of the requests."""

    package: str
    url: str
    sampling_rate: float = 1.0
    columns: tuple[str, ...] = ()  # the inputs its signature takes (all in ours); empty: every column


def parse_targets(raw: str | bytes | None) -> list[Target]:
    """Targets from their JSON list: [{"package": ..., "url": ..., "samplingRate": ...}]."""
    if not raw:
        return []
    return [Target(str(t["package"]), str(t["url"]).rstrip("/"), float(t.get("samplingRate", 1.0)),
                   tuple(str(c) for c in t.get("columns") or ())) for t in orjson.loads(raw)]


def dump_targets(targets: list[dict[str, Any]]) -> str:
    return orjson.dumps(targets).decode()


def read_targets(path: str | Path | None) -> list[Target]:
    """The targets file a local server was started with; a missing or unreadable file means none."""
    if not path:
        return []
    try:
        return parse_targets(Path(path).read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("shadow targets in %s not read (%s): shadowing nothing", path, err)
        return []


class ShadowMetrics:
    """Per target: requests sent, failed (error, 4xx/5xx or timeout) and dropped (queue full); queued now."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self._requests = Counter("mloop_shadow_requests", "Shadow requests by target and outcome.",
                                 ["target", "outcome"], registry=None)
        self._queued = Gauge("mloop_shadow_queued", "Shadow requests waiting to be sent.", ["target"],
                             registry=None, multiprocess_mode="livesum")
        self._posts = Counter("mloop_shadow_posts", "Batches posted to each target (requests per post: "
                              "mloop_shadow_requests_total over this).", ["target"], registry=None)

    def count(self, target: str, outcome: str, n: int = 1) -> None:
        self._requests.labels(target, outcome).inc(n)

    def posted(self, target: str) -> None:
        self._posts.labels(target).inc()

    def queued(self, target: str, n: int) -> None:
        self._queued.labels(target).set(n)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Batch:
    """The copies one POST carries, kept as its body's lists: each offer appends its row ids and the values of the
    forwarded columns, so the POST only serializes them. Concatenating hundreds of small arrays at send time was
    one pause of 0.3-1 ms in the worker's event loop per POST, which its callers saw at p99."""

    __slots__ = ("requests", "ids", "columns")

    def __init__(self, names: list[str]):
        self.requests = 0
        self.ids: list[str] = []
        self.columns: dict[str, list[Any]] = {n: [] for n in names}

    def add(self, row_ids: list[str], arrays: dict[str, Any]) -> None:
        self.requests += 1
        if len(row_ids) == 1:  # the common request: a scalar per column
            self.ids.append(row_ids[0])
            for name, values in self.columns.items():
                values.append(arrays[name].item(0))
        else:
            self.ids += row_ids
            for name, values in self.columns.items():
                values += arrays[name].tolist()


class _Lane:
    """One target's bounded queue of batches, the task that sends them and the POSTs in flight."""

    def __init__(self, target: Target, capacity: int):
        self.target, self.capacity = target, capacity
        self.batches: deque[_Batch] = deque()  # the last one is still filling unless `sealed`
        self.sealed = True
        self.queued = 0  # requests in `batches`
        self.wake = asyncio.Event()
        self.full: asyncio.Future[None] | None = None  # while the gatherer lingers: done once a batch waits
        self.dropped = 0  # counted here on the request path, added to the metric by a timer
        self.publishing = False  # that timer is set
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures = 0  # POSTs failed in a row
        self.paused = False  # after a failure: copies are dropped (counted) and nothing is posted until it ends
        self.open = asyncio.Event()
        self.open.set()

    def names(self, arrays: dict[str, Any]) -> list[str]:
        """The columns sent: the target's (those we have), else every one."""
        columns = self.target.columns
        return [n for n in columns if n in arrays] if columns else list(arrays)

    def seal(self) -> None:
        """The filling batch is complete: the gatherer need not linger (nor drop) longer."""
        self.sealed = True
        if self.full is not None and not self.full.done():
            self.full.set_result(None)

    def take(self) -> _Batch:
        """The oldest batch, sealed if it was still filling."""
        batch = self.batches.popleft()
        if not self.batches:
            self.sealed = True
        self.queued -= batch.requests
        return batch


class Shadow:
    """The shadow sender of one worker process.

    Forwarding costs the worker's CPU per POST far more than per row (an aiohttp client request is a few hundred
    microseconds), so copies wait up to `linger` for a batch to gather, every time: a copy may wait, the caller
    never does. One gatherer per target takes what waits once a POST slot is free (at most `concurrency` POSTs in
    flight), so a slow target makes the batches larger, not the POSTs more frequent."""

    def __init__(self, targets: list[Target], metrics: ShadowMetrics | None = None, capacity: int = 1000,
                 concurrency: int = 2, timeout: float = 2.0, batch: int = 500, linger: float = 0.05,
                 pause: float = 1.0, max_pause: float = 30.0):
        self.metrics, self.capacity, self.concurrency, self.timeout = metrics, capacity, concurrency, timeout
        self.batch, self.linger, self.pause, self.max_pause = batch, linger, pause, max_pause
        self.lanes: dict[str, _Lane] = {}
        self._session: Any = None
        self._pending = targets

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.concurrency * 8), json_serialize=None)
        self.retarget(self._pending)

    def retarget(self, targets: list[Target]) -> None:
        """Send to these targets from now on: lanes of targets no longer named are stopped with what they hold."""
        wanted = {t.package: t for t in targets}
        for name in list(self.lanes):
            lane = self.lanes[name]
            if wanted.get(name) != lane.target:
                for task in lane.tasks:
                    task.cancel()
                self._count_dropped(lane)
                del self.lanes[name]
                if self.metrics:
                    self.metrics.queued(name, 0)
        for name, target in wanted.items():
            if name not in self.lanes:
                lane = self.lanes[name] = _Lane(target, self.capacity)
                self._track(lane, self._gather(lane))
        if targets:
            log.info("shadowing to %s", ", ".join(f"{t.package} ({t.url}, {t.sampling_rate:g})" for t in targets))

    def offer(self, row_ids: list[str], arrays: dict[str, Any]) -> None:
        """On the request path: a sampling draw and the values appended to a batch per target, nothing that waits.
        A batch holds up to `batch` requests and MAX_BATCH_ROWS rows (one larger request goes alone)."""
        for lane in self.lanes.values():
            rate = lane.target.sampling_rate
            if rate <= 0 or (rate < 1 and random.random() >= rate):
                continue
            if lane.paused or lane.queued >= lane.capacity:
                lane.dropped += 1
                if not lane.publishing:  # one timer per burst of drops, not one metric update per drop
                    lane.publishing = True
                    asyncio.get_running_loop().call_later(DROPS_PUBLISHED_WITHIN, self._publish_dropped, lane)
                continue
            batch = None if lane.sealed else lane.batches[-1]
            if batch is not None and len(batch.ids) + len(row_ids) > MAX_BATCH_ROWS:
                batch = None
                lane.seal()
            if batch is None:
                batch = _Batch(lane.names(arrays))
                lane.batches.append(batch)
                lane.sealed = False
            batch.add(row_ids, arrays)
            lane.queued += 1
            if batch.requests >= self.batch:
                lane.seal()
            if not lane.wake.is_set():  # the gatherer is idle: one wake-up per batch, not one per request
                lane.wake.set()

    def _track(self, lane: _Lane, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)
        return task

    def _count_dropped(self, lane: _Lane) -> None:
        if lane.dropped and self.metrics:
            self.metrics.count(lane.target.package, "dropped", lane.dropped)
        lane.dropped = 0

    def _publish_dropped(self, lane: _Lane) -> None:
        # A timer, not the gatherer: the gatherer may wait a POST timeout on a hung target, or a 30 s pause.
        lane.publishing = False
        self._count_dropped(lane)

    async def _gather(self, lane: _Lane) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            if not lane.batches:
                lane.wake.clear()
                await lane.wake.wait()
            if len(lane.batches) == 1 and not lane.sealed:  # let a batch gather
                loop = asyncio.get_running_loop()
                lane.full = loop.create_future()
                timer = loop.call_later(self.linger, _done, lane.full)
                try:
                    await lane.full
                finally:
                    timer.cancel()
                    lane.full = None
            await slots.acquire()
            await lane.open.wait()
            if not lane.batches:  # retargeted or emptied meanwhile
                slots.release()
                continue
            batch = lane.take()
            if self.metrics:
                self.metrics.queued(lane.target.package, lane.queued)
            self._track(lane, self._post(lane, batch)).add_done_callback(lambda _: slots.release())

    async def _post(self, lane: _Lane, batch: _Batch) -> None:
        # The caller's row ids go along, so the candidate records each row under the id Production gave it.
        body = orjson.dumps({"ids": batch.ids, "probabilities": False, "inputs": batch.columns})
        outcome = "failed"
        try:
            async with self._session.post(f"{lane.target.url}/predict", data=body, headers=HEADERS) as resp:
                await resp.read()
                outcome = "sent" if resp.status < 300 else "failed"
        except asyncio.CancelledError:
            raise
        except Exception:  # refused, reset, timed out: the target's problem, counted, never the caller's
            pass
        if self.metrics:
            self.metrics.count(lane.target.package, outcome, batch.requests)
            self.metrics.posted(lane.target.package)
        if outcome == "sent":
            lane.failures = 0
        elif not lane.paused:
            self._pause(lane)

    def _pause(self, lane: _Lane) -> None:
        """A failing target gets nothing for a while (1 s, doubling up to 30 s while it keeps failing): building
        POSTs that time out or are refused cost the Production worker CPU and pauses, for copies that are lost."""
        lane.failures += 1
        seconds = min(self.pause * 2 ** (lane.failures - 1), self.max_pause)
        lane.paused = True
        lane.open.clear()
        if lane.failures == 1 or seconds == self.max_pause:
            log.warning("shadow target %s failed %d time(s) in a row: copies dropped for %.0f s",
                        lane.target.package, lane.failures, seconds)

        def resume() -> None:
            lane.paused = False
            lane.open.set()

        asyncio.get_running_loop().call_later(seconds, resume)

    async def close(self) -> None:
        self.retarget([])
        if self._session is not None:
            await self._session.close()
