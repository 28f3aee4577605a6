"""Benchmark: what a shadow costs the Production server's callers. Extends bench/serving.py (same package, body,
wrk pacing and servers); run it on an otherwise idle machine:

    slot --all .venv/bin/python bench/serving_shadow.py [--seconds 3] [--connections 8] [--repeat 24] [--only sink,...]
        [--priority idle|equal|both]

mloop serves with collection on (sampling 1.0 to S3) and every request also sent to a shadow (sampling 1.0, as a
user may set it). One Production server per shadow, one without and every target are started once and kept up;
they take turns under load (a fresh server per run moved requests/s by 5% and p99 by 15-40 points between two
identical servers). In each of --repeat rounds, each shadow's server runs paired with the no-shadow server's
run right before or after it (3 s runs, full load then half load, A B B A), so drift in the machine's speed hits
both runs of a pair alike: back-to-back runs of one server differ by 10-15% on this VM.
Shadows:
- a do-nothing sink that reads each POST and answers 200, next to no CPU of its own: Production's forwarding alone;
- a real mloop candidate (one worker, collection off);
- a target that accepts and never answers: the bounded queue fills, copies are dropped and counted;
- none again (A/A control): a second no-shadow server paired the same way, whose change is the method's own noise.
The sink and the candidate run on the same 2 cores as Production, where in a cluster they have pods (a node) of
their own. So each runs under SCHED_IDLE, where it only gets the CPU Production leaves idle (as on a node of its
own: what Production's callers would see), or with --priority equal/both at equal priority, taking CPU from
Production at saturation (an upper bound). The copies sent / dropped show how many got through either way.
It prints requests/s and p99 at N connections, p99 at half of the no-shadow maximum, and the CPU the Production
server (parent and workers, utime + stime) and the target spent per Production request: the cost, which a busy
machine's neighbours do not change the way they change wall-clock figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import (BODY, cpu_seconds, ensure_wrk, fit_model, median_run, pace, publish_package,  # noqa: E402
                     spread, stop, tree, wait_ready, wrk)


CONTROL = "none, again (A/A control)"
# A shadow target that reads each POST and answers 200, a thread per connection, nothing parsed but the headers:
# next to no CPU of its own, so its row is Production's forwarding alone. (An aiohttp sink that parsed the JSON put
# its own CPU on Production's 2 cores, and Production's p99 at full load rose by 12% with it.)
SINK = r"""
import socket, sys, threading
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

def serve(conn):
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            conn.sendall(OK)

server = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=1024)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


def shadow_counts(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts = {"sent": 0.0, "failed": 0.0, "dropped": 0.0, "posts": 0.0}
    for line in text.splitlines():
        if line.startswith("mloop_shadow_requests_total{"):
            for outcome in counts:
                if f'outcome="{outcome}"' in line:
                    counts[outcome] += float(line.split()[-1])
        elif line.startswith("mloop_shadow_posts_total{"):
            counts["posts"] += float(line.split()[-1])
    return counts


def set_idle(pid: int | None, idle: bool) -> None:
    """SCHED_IDLE: the target gets only the CPU Production leaves idle, as on a node of its own."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    for p in tree(pid) if pid else []:
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                os.sched_setscheduler(int(task.name), policy, os.sched_param(0))
            except OSError:
                pass


def interval(changes: list[float], draws: int = 4000) -> str:
    """A 95% bootstrap interval of the median change: how far the median itself may be off, where the quartiles say
    how far one pair is."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(changes, k=len(changes))) for _ in range(draws))
    return f"({medians[int(draws * 0.025)]:+.1f}, {medians[int(draws * 0.975) - 1]:+.1f})"


def median(runs: list[dict]) -> dict:
    return median_run(runs, ("rps", "p50", "p99", "cpu", "target_cpu"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=24, help="rounds: in each, every shadow's server takes a turn "
                                                              "paired with the no-shadow server's turn next to it")
    parser.add_argument("--workers", type=int, default=0, help="Production server workers; 0: as mloop serve picks")
    parser.add_argument("--raw", help="also write every run's figures to this JSON file")
    parser.add_argument("--only", default="", help="comma-separated shadows to run (sink, candidate, hanging, control); "
                                                   "default all")
    parser.add_argument("--priority", choices=("both", "idle", "equal"), default="idle",
                        help="the sink's and the candidate's scheduling: SCHED_IDLE (default), equal, or both rows")
    args = parser.parse_args()
    unknown = set(filter(None, args.only.split(","))) - {"sink", "candidate", "hanging", "control"}
    if unknown:
        parser.error(f"--only: no shadow named {', '.join(sorted(unknown))}")
    from mloop.localcluster import LocalStack
    from mloop.localcluster.hanging import HangingServer
    from mloop.localcluster.stack import free_port
    from mloop.serving.server import worker_count
    from mloop.storage.artifacts import Store
    from mloop.storage.s3 import make_client

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    exe = ensure_wrk()
    model, x_test = fit_model()
    workers = args.workers or worker_count()
    secs, conns = args.seconds, args.connections
    only = set(filter(None, args.only.split(",")))
    priorities = {"both": (True, False), "idle": (True,), "equal": (False,)}[args.priority]
    stack = LocalStack()
    info = stack.start()
    started: list[subprocess.Popen] = []  # every process this bench started, stopped at the end
    hanging = HangingServer()
    runs: dict[str, dict[str, list[dict]]] = {}
    pairs: dict[str, list[tuple[dict, dict, dict, dict]]] = {}  # (none full, none half, shadow full, shadow half)
    counts: dict[str, dict[str, float]] = {}
    try:
        env = {**os.environ, **info.env()}
        store = Store(make_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key), info.bucket)
        uri, digest, _ = publish_package(store, model, x_test)

        def spawn(*command: str) -> tuple[int, str]:
            """Start a server on a free port (appended to `command`) and wait until it is ready: (pid, its URL)."""
            port = free_port()
            proc = subprocess.Popen([sys.executable, *command, str(port)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)
            started.append(proc)
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            return proc.pid, f"http://127.0.0.1:{port}"

        def server(rate: str, *extra: str) -> tuple[int, str]:
            return spawn("-m", "mloop.serving.server", "--package", uri, "--digest", digest, "--sampling-rate", rate,
                         "--flush-seconds", "1", "--workers", str(workers), *extra, "--port")

        def sink() -> tuple[int, str]:
            return spawn("-c", SINK)

        # Every target and every Production server is started once and kept up; they take turns under load.
        # (key "label|priority", target pid, target url); each target process is its own, so its scheduling is set once
        configs: list[tuple[str, int | None, str]] = []
        for label, make, name in (("do-nothing sink", sink, "sink"),
                                  ("mloop candidate", lambda: server("0", "--workers", "1"), "candidate")):
            if not only or name in only:
                for idle in priorities:
                    pid, url = make()
                    set_idle(pid, idle)
                    priority = "SCHED_IDLE" if idle else "equal"
                    configs.append((f"{label}|{priority}", pid, url))
        if not only or "hanging" in only:  # a thread of this process: it burns no CPU
            configs.append(("hanging target|", None, hanging.url))
        if not only or "control" in only:  # no shadow either: paired the same way, its change is the noise
            configs.append((f"{CONTROL}|", None, ""))
        production: dict[str, tuple[int, str]] = {"none": server("1.0")}
        for key, _, target_url in configs:
            extra = ("--shadows", json.dumps([{"package": "candidate", "url": target_url, "samplingRate": 1.0}])
                     ) if target_url else ()
            production[key] = server("1.0", *extra)
        for _, endpoint in production.values():
            wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, 2, conns)  # warm up
        none_url = f"{production['none'][1]}/v2/models/iris/infer"
        half = wrk(exe, none_url, BODY, secs, conns)["rps"] / 2
        rate = pace(exe, none_url, BODY, conns, half)

        def run(key: str, target: int | None, load: str, paced: float | None) -> None:
            """One wrk run of one Production server, with the CPU it and its target spent per Production request."""
            pid, endpoint = production[key]
            before = cpu_seconds(pid), cpu_seconds(target)
            result = wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, secs, conns, paced)
            requests = max(result["rps"] * secs, 1)
            runs.setdefault(key, {"full": [], "half": []})[load].append(
                result | {"cpu": (cpu_seconds(pid) - before[0]) / requests * 1000,
                          "target_cpu": (cpu_seconds(target) - before[1]) / requests * 1000})

        # The machine's speed drifts from one run to the next (back-to-back runs of one server differ by 10-15%), so
        # each shadow's run is paired with the no-shadow server's run right before or after it, at full load and then
        # at half load, in the order A B B A (which goes first alternates by round); a change is the median of the
        # pairs' ratios. Short runs and many rounds keep the two runs of a pair close in time.
        for r in range(args.repeat):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for k, (key, target, _) in enumerate(order):
                turns = [("none", None), (key, target)]
                if (r + k) % 2:
                    turns.reverse()
                for load, paced in (("full", None), ("half", rate)):
                    for turn in turns:
                        run(*turn, load, paced)
                    turns.reverse()
                pairs.setdefault(key, []).append((runs["none"]["full"][-1], runs["none"]["half"][-1],
                                                  runs[key]["full"][-1], runs[key]["half"][-1]))
        for key, _, target_url in configs:
            if target_url:
                counts[key] = shadow_counts(production[key][1])
    finally:
        for proc in started:
            stop(proc)
        hanging.close()
        stack.stop()
        stack.cleanup()

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if args.raw:
        Path(args.raw).write_text(json.dumps({"half": half, "runs": runs, "counts": counts, "pairs": pairs}))
    print(f"\nShadow traffic: iris pipeline, OIP v2 body (one row); mloop with collection on, {workers} worker(s); "
          f"every request also sent to the shadow. wrk 1 thread, {conns} connections, {secs:g} s per run. Every "
          f"Production server is started once and kept up; in each of {args.repeat} rounds each shadow's server runs "
          f"paired with the no-shadow server's run right before or after it, at full and then at half load (A B B A, "
          f"which goes first alternates); a change is the median of the pairs' ratios [its quartiles]; "
          f"{os.cpu_count()} cores; load average {load_before} before, {load_after} after. The target runs on the "
          f"same cores: under SCHED_IDLE it gets only the CPU Production leaves idle (as on a node of its own); at "
          f"equal priority it competes (an upper bound on the cost).\n")
    base_runs = runs.pop("none")
    base = {k: median(v) for k, v in base_runs.items()}
    bf, bh = base["full"], base["half"]
    print(f"| shadow | target priority | requests/s | change | p99 ms at {conns} conns | change | p99 ms at "
          f"{half:,.0f} req/s | change | Production CPU ms/request (full, half) | change (full) | target CPU ms per "
          f"Production request | copies sent / failed / dropped | copies per POST | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base_rps = [r["rps"] for r in base_runs["full"]]
    print(f"| none | | {bf['rps']:,.0f} ({min(base_rps):,.0f}-{max(base_rps):,.0f}) | | {bf['p99']:.2f} | | "
          f"{bh['p99']:.2f} | | {bf['cpu']:.3f}, {bh['cpu']:.3f} | | | | | {bf['errors'] + bh['errors']} |")

    def change(key: str, figure: str, full: bool) -> str:
        changes = [(s[figure] / n[figure] - 1) * 100 for n_full, n_half, s_full, s_half in pairs[key]
                   for n, s in [((n_full, s_full) if full else (n_half, s_half))]]
        return f"{spread(changes)} {interval(changes)}"

    for key, r in runs.items():
        label, priority = key.split("|")
        f, h = median(r["full"]), median(r["half"])
        c = counts.get(key, {})
        target_cpu = f"{f['target_cpu']:.3f}, {h['target_cpu']:.3f}" if priority else ""
        lo, hi = min(x["rps"] for x in r["full"]), max(x["rps"] for x in r["full"])
        print(f"| {label} | {priority} | {f['rps']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {change(key, 'rps', True)} | "
              f"{f['p99']:.2f} | {change(key, 'p99', True)} | {h['p99']:.2f} | {change(key, 'p99', False)} | "
              f"{f['cpu']:.3f}, {h['cpu']:.3f} | {change(key, 'cpu', True)} | {target_cpu} | "
              f"{c.get('sent', 0):,.0f} / {c.get('failed', 0):,.0f} / {c.get('dropped', 0):,.0f} | "
              f"{(c.get('sent', 0) + c.get('failed', 0)) / max(c.get('posts', 0), 1):.1f} | "
              f"{f['errors'] + h['errors']} |")
    print(f"\nTarget: requests/s and p99 within 5% of no shadow. A change reads: median [quartiles of the pairs] "
          f"(95% bootstrap interval of the median). The quartiles are one pair's noise; the '{CONTROL}' row (a "
          f"second no-shadow server, paired the same way) measures the method's own noise.")


if __name__ == "__main__":
    main()
