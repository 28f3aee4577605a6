"""Benchmark: what a shadow costs the Production server's callers. Extends bench/serving.py (same package, body,
wrk pacing and servers); run it on an otherwise idle machine:

    slot --all .venv/bin/python bench/serving_shadow.py [--seconds 8] [--connections 8] [--repeat 3] [--only sink,...]

mloop serves with collection on (sampling 1.0 to S3) and every request also sent to a shadow (sampling 1.0, as a
user may set it). Each shadow run is paired with a no-shadow run next to it (--repeat pairs per shadow), so drift in
the machine's speed hits both runs of a pair alike.
Shadows:
- a do-nothing aiohttp sink: the cost of forwarding alone;
- a real mloop candidate (one worker, collection off);
- a target that accepts and never answers: the bounded queue fills, copies are dropped and counted;
- none again (A/A control): a no-shadow run paired with a no-shadow run, whose change is the method's own noise.
The sink and the candidate run on the same 2 cores as Production, where in a cluster they have pods (a node) of
their own. So each is measured twice: under SCHED_IDLE, it only gets the CPU Production leaves idle (as on a node of
its own: what Production's callers would see), and at equal priority, taking CPU from Production at saturation (an
upper bound). The copies sent / dropped show how many got through either way.
It prints requests/s and p99 at N connections, p99 at half of the no-shadow maximum, and the CPU the Production
server (parent and workers, utime + stime) and the target spent per Production request: the cost, which a busy
machine's neighbours do not change the way they change wall-clock figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import (BODY, CEILING, cpu_seconds, ensure_wrk, fit_model, pace, publish_package, spread,  # noqa: E402
                     stop, tree, wait_ready, wrk)


CONTROL = "none, again (A/A control)"


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


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu", "target_cpu")} | {
        "errors": sum(r["errors"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="pairs (no shadow, shadow) per shadow")
    parser.add_argument("--workers", type=int, default=0, help="Production server workers; 0: as mloop serve picks")
    parser.add_argument("--raw", help="also write every run's figures to this JSON file")
    parser.add_argument("--only", default="", help="comma-separated shadows to run (sink, candidate, hanging, control); "
                                                   "default all")
    parser.add_argument("--priority", choices=("both", "idle", "equal"), default="both",
                        help="the sink's and the candidate's scheduling: SCHED_IDLE, equal, or both rows")
    args = parser.parse_args()
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
    stack = LocalStack()
    info = stack.start()
    runs: dict[str, dict[str, list[dict]]] = {}
    pairs: dict[str, list[tuple[dict, dict, dict, dict]]] = {}  # (none full, none half, shadow full, shadow half)
    proc: subprocess.Popen | None = None
    counts: dict[str, dict[str, float]] = {}
    try:
        env = {**os.environ, **info.env()}
        store = Store(make_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key), info.bucket)
        uri, digest, _ = publish_package(store, model, x_test)

        def server(rate: str, *extra: str) -> tuple[subprocess.Popen, str]:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "mloop.serving.server", "--package", uri, "--digest", digest,
                                     "--port", str(port), "--sampling-rate", rate, "--flush-seconds", "1",
                                     "--workers", str(workers), *extra], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            return proc, f"http://127.0.0.1:{port}"

        def measured(url: str, target: int | None, rate: float | None = None) -> dict:
            """One wrk run with the CPU the Production server and the target spent, per Production request."""
            before = cpu_seconds(proc.pid), cpu_seconds(target)
            result = wrk(exe, url, BODY, secs, conns, rate)
            requests = max(result["rps"] * secs, 1)
            return result | {"cpu": (cpu_seconds(proc.pid) - before[0]) / requests * 1000,
                             "target_cpu": (cpu_seconds(target) - before[1]) / requests * 1000}

        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", CEILING.replace("/v2/models/iris/infer", "/predict"),
                                 str(sink_port), "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        candidate, candidate_url = server("0", "--workers", "1")
        hanging = HangingServer()
        try:
            wait_ready(f"http://127.0.0.1:{sink_port}/v2/health/ready", sink)
            proc, endpoint = server("1.0")
            try:
                wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, 2, conns)
                half = wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, secs, conns)["rps"] / 2
            finally:
                stop(proc)
            # (label, url, target process, SCHED_IDLE); the hanging target is a thread of this process, it burns no CPU
            configs = [("none", "", None, False)]
            if not only or "sink" in only:
                configs += [("do-nothing sink", f"http://127.0.0.1:{sink_port}", sink.pid, True),
                            ("do-nothing sink", f"http://127.0.0.1:{sink_port}", sink.pid, False)]
            if not only or "candidate" in only:
                configs += [("mloop candidate", candidate_url, candidate.pid, True),
                            ("mloop candidate", candidate_url, candidate.pid, False)]
            configs = [c for c in configs if c[2] is None or args.priority == "both" or c[3] == (args.priority == "idle")]
            if not only or "hanging" in only:
                configs += [("hanging target", hanging.url, None, False)]
            if not only or "control" in only:  # no shadow either: paired the same way, its change is the noise
                configs += [(CONTROL, "", None, False)]
            def one(label: str, target_url: str, target: int | None, idle: bool) -> None:
                """A fresh Production server with this shadow: a full-load run and a run at half load."""
                nonlocal proc
                key = f"{label}|{idle}"
                extra: tuple[str, ...] = ()
                if target_url:
                    extra = ("--shadows", json.dumps([{"package": "candidate", "url": target_url,
                                                       "samplingRate": 1.0}]))
                set_idle(target, idle)
                proc, endpoint = server("1.0", *extra)
                try:
                    url = f"{endpoint}/v2/models/iris/infer"
                    wrk(exe, url, BODY, 2, conns)
                    bucket = runs.setdefault(key, {"full": [], "half": []})
                    bucket["full"].append(measured(url, target))
                    bucket["half"].append(measured(url, target, pace(exe, url, BODY, conns, half)))
                    if target_url:
                        counts[key] = shadow_counts(endpoint)
                finally:
                    stop(proc)

            # Each shadow run is paired with a no-shadow run next to it (which goes first alternates): the machine
            # drifts from one run to the next (the same server's CPU per request moved 212-268 us), a pair sees one
            # machine, and the change is the median of the pairs' ratios.
            for r in range(args.repeat):
                shadows = configs[1:]
                shadows = shadows[r % len(shadows):] + shadows[:r % len(shadows)]
                for k, config in enumerate(shadows):
                    for cfg in ((configs[0], config) if (r + k) % 2 == 0 else (config, configs[0])):
                        one(*cfg)
                    pairs.setdefault(f"{config[0]}|{config[3]}", []).append(
                        (runs["none|False"]["full"][-1], runs["none|False"]["half"][-1],
                         runs[f"{config[0]}|{config[3]}"]["full"][-1], runs[f"{config[0]}|{config[3]}"]["half"][-1]))
        finally:
            stop(candidate)
            os.killpg(sink.pid, 15)
            sink.wait(timeout=30)
            hanging.close()
    finally:
        stack.stop()
        stack.cleanup()

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if args.raw:
        Path(args.raw).write_text(json.dumps({"half": half, "runs": runs, "counts": counts, "pairs": pairs}))
    print(f"\nShadow traffic: iris pipeline, OIP v2 body (one row); mloop with collection on, {workers} worker(s); "
          f"every request also sent to the shadow. wrk 1 thread, {conns} connections, {secs:g} s per run; each "
          f"shadow run paired with a no-shadow run next to it, {args.repeat} pairs per shadow (a fresh server per "
          f"run); a change is the median of the pairs' ratios [its quartiles]; {os.cpu_count()} cores; load average "
          f"{load_before} before, {load_after} after. The target runs on the same cores: under SCHED_IDLE it gets "
          f"only the CPU Production leaves idle (as on a node of its own); at equal priority it competes (an upper "
          f"bound on the cost).\n")
    base_runs = runs.pop("none|False")
    base = {k: median(v) for k, v in base_runs.items()}
    bf, bh = base["full"], base["half"]
    print(f"| shadow | target priority | requests/s | change | p99 ms at {conns} conns | change | p99 ms at "
          f"{half:,.0f} req/s | change | Production CPU ms/request (full, half) | target CPU ms per Production "
          f"request | copies sent / failed / dropped (last run) | copies per POST | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base_rps = [r["rps"] for r in base_runs["full"]]
    print(f"| none | | {bf['rps']:,.0f} ({min(base_rps):,.0f}-{max(base_rps):,.0f}) | | {bf['p99']:.2f} | | "
          f"{bh['p99']:.2f} | | {bf['cpu']:.3f}, {bh['cpu']:.3f} "
          f"| | | | {bf['errors'] + bh['errors']} |")

    def change(key: str, figure: str, full: bool) -> str:
        return spread([(s[figure] / n[figure] - 1) * 100 for n_full, n_half, s_full, s_half in pairs[key]
                       for n, s in [((n_full, s_full) if full else (n_half, s_half))]])

    for key, r in runs.items():
        label, idle = key.split("|")
        f, h = median(r["full"]), median(r["half"])
        c = counts.get(key, {})
        untargeted = label in ("hanging target", CONTROL)  # no process of its own to schedule or to charge
        priority = "" if untargeted else ("SCHED_IDLE" if idle == "True" else "equal")
        target_cpu = "" if untargeted else f"{f['target_cpu']:.3f}, {h['target_cpu']:.3f}"
        lo, hi = min(x["rps"] for x in r["full"]), max(x["rps"] for x in r["full"])
        print(f"| {label} | {priority} | {f['rps']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {change(key, 'rps', True)} | "
              f"{f['p99']:.2f} | {change(key, 'p99', True)} | {h['p99']:.2f} | {change(key, 'p99', False)} | "
              f"{f['cpu']:.3f}, {h['cpu']:.3f} | {target_cpu} | "
              f"{c.get('sent', 0):,.0f} / {c.get('failed', 0):,.0f} / {c.get('dropped', 0):,.0f} | "
              f"{(c.get('sent', 0) + c.get('failed', 0)) / max(c.get('posts', 0), 1):.1f} | "
              f"{f['errors'] + h['errors']} |")
    print(f"\nTarget: requests/s and p99 within 5% of no shadow. The quartiles of a change are its noise; the "
          f"'{CONTROL}' row (no shadow against no shadow, paired the same way) measures the method's own noise.")

if __name__ == "__main__":
    main()
