"""Benchmark: what a CloudEvents sink costs the reconcile pass that emits to it, against a blocking POST.

    .venv/bin/python bench/notifications.py [--events 2000]

Three real loopback sinks: fast (202 at once), slow (answers after 200 ms) and dead (a closed port).
For each, the handler-side cost of `cloudevents_sink.outbox_entries` + `send` (what a reconcile pass pays) is compared
with the peer a naive operator would use: one synchronous POST per event in the handler. Also shown:
how many of a burst the background sender delivered to the fast sink, how many it dropped (its queue
holds 1000, oldest dropped first) and how long the delivery took.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from mloop.config import get_settings  # noqa: E402
from mloop.integrations import cloudevents_sink  # noqa: E402
from mloop.integrations.dispatch import DELIVERIES  # noqa: E402
from mloop.reconcile.outcome import Event  # noqa: E402


def sink(delay: float) -> tuple[ThreadingHTTPServer, list[int]]:
    received: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            received.append(1)
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_call(fn, count: int) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the drops are counted below, not logged one by one
    fast, fast_got = sink(0.0)
    peer, _ = sink(0.0)
    slow, _ = sink(0.2)
    targets = {"fast": f"http://127.0.0.1:{fast.server_port}/", "slow (200 ms)": f"http://127.0.0.1:{slow.server_port}/",
               "dead (closed port)": f"http://127.0.0.1:{closed_port()}/"}
    old = {"phase": "Ready"}
    patch = {"version": "abc123def456", "digest": "sha256:" + "ab" * 32, "rows": 150}

    def publish(i: int) -> None:
        """What a pass pays: the outbox entry at its write, then the queued send after it."""
        meta = {"namespace": "bench", "name": f"ds-{i}", "uid": f"uid-{i}"}
        for n, entry in enumerate(cloudevents_sink.outbox_entries("Dataset", old, patch,
                                                                  [Event("Normal", "VersionCut", "version cut")])):
            cloudevents_sink.send("Dataset", meta, {**old, **patch}, {"id": f"{i}x{n}", **entry})

    rows = []
    os.environ["MLOOP_CLOUDEVENTS_RETRIES"] = "0"  # a dead sink is given up at once: the queue stays short
    for label, url in targets.items():
        os.environ["MLOOP_CLOUDEVENTS_SINK"] = url
        get_settings.cache_clear()
        count = args.events if label == "fast" else min(args.events, 200)
        p50, p99 = per_call(publish, count)
        drain_start = time.perf_counter()
        drained = cloudevents_sink.dispatcher.drain(timeout=120 if label == "fast" else 0.01)
        drain = time.perf_counter() - drain_start

        dropped = DELIVERIES.labels("cloudevents", "dropped")._value.get()
        outcome = (f"{len(fast_got)} delivered, {dropped:.0f} dropped in {drain:.2f} s" if label == "fast"
                   else "queued, not awaited")
        peer_url = f"http://127.0.0.1:{peer.server_port}/" if label == "fast" else url

        def blocking(i: int) -> None:
            event = cloudevents_sink.build("Dataset", {"namespace": "b", "name": f"d{i}", "uid": "u"}, patch,
                                           "dataset.version.cut", Event("Normal", "VersionCut", "v"))
            try:
                cloudevents_sink.post(peer_url, event, timeout=5)
            except OSError:
                pass

        b50, b99 = per_call(blocking, min(count, 50 if label.startswith("slow") else count))
        rows.append((label, count, p50, p99, b50, b99, outcome))
        assert drained or label != "fast", "the fast sink's queue did not drain"
    os.environ.pop("MLOOP_CLOUDEVENTS_SINK")
    get_settings.cache_clear()

    print("\nCloudEvents sink: handler-side cost per event, mloop's queued publish vs a blocking POST in the handler")
    print(f"{'sink':<20}{'events':>8}{'publish p50':>14}{'p99':>10}{'blocking p50':>15}{'p99':>10}  background delivery")
    for label, count, p50, p99, b50, b99, drain in rows:
        print(f"{label:<20}{count:>8}{p50:>12.0f}µs{p99:>8.0f}µs{b50:>13.0f}µs{b99:>8.0f}µs  {drain}")
    fast.shutdown()
    peer.shutdown()
    slow.shutdown()


if __name__ == "__main__":
    main()
