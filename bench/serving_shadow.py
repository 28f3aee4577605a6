"""Benchmark: what a shadow costs the Production server's callers. Extends bench/serving.py (same package, body,
wrk pacing and servers); run it on an otherwise idle machine:

    slot --all .venv/bin/python bench/serving_shadow.py [--seconds 8] [--connections 8] [--repeat 3]

mloop serves with collection on (sampling 1.0 to S3), once without a shadow and once sending every request to a
shadow as well, the two alternating --repeat times so drift in the shared machine's load hits both alike. Shadows:
- a do-nothing aiohttp sink: the cost of forwarding alone;
- a real mloop candidate (one worker, collection off) on the same cores: in a cluster it has pods of its own,
  here it takes CPU from the Production server, so this row is an upper bound;
- a target that accepts and never answers: the bounded queue fills, copies are dropped and counted.
It prints requests/s and p99 at N connections, p99 at half of the no-shadow maximum, and the shadow counters.
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
from serving import BODY, CEILING, ensure_wrk, fit_model, pace, publish_package, stop, wait_ready, wrk  # noqa: E402


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


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")} | {
        "errors": sum(r["errors"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="Production server workers; 0: as mloop serve picks")
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
    stack = LocalStack()
    info = stack.start()
    rows: dict[str, dict] = {}
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
            targets = {"do-nothing sink": f"http://127.0.0.1:{sink_port}", "mloop candidate (same cores)": candidate_url,
                       "hanging target": hanging.url}
            for label, url in targets.items():
                shadows = json.dumps([{"package": "candidate", "url": url, "samplingRate": 1.0}])
                runs: dict[str, list[dict]] = {"full": [], "half": [], "base_full": [], "base_half": []}
                counts: dict[str, float] = {}
                for _ in range(args.repeat):
                    for prefix, extra in (("base_", ()), ("", ("--shadows", shadows))):
                        proc, endpoint = server("1.0", *extra)
                        try:
                            wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, 2, conns)
                            runs[prefix + "full"].append(wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, secs, conns))
                            url = f"{endpoint}/v2/models/iris/infer"
                            runs[prefix + "half"].append(wrk(exe, url, BODY, secs, conns, pace(exe, url, BODY, conns, half)))
                            if extra:
                                counts = shadow_counts(endpoint)
                        finally:
                            stop(proc)
                rows[label] = {k: median(v) for k, v in runs.items()} | {"counts": counts}
        finally:
            stop(candidate)
            os.killpg(sink.pid, 15)
            sink.wait(timeout=30)
            hanging.close()
    finally:
        stack.stop()
        stack.cleanup()

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nShadow traffic: iris pipeline, OIP v2 body (one row); mloop with collection on, {workers} worker(s); every "
          f"request also sent to the shadow. wrk 1 thread, {conns} connections, {secs:g} s per run, medians of "
          f"{args.repeat} alternating runs with and without; {os.cpu_count()} cores; load average {load_before} "
          f"before, {load_after} after\n")
    print(f"| shadow | requests/s with (without) | change | p99 ms with (without) | p99 ms at {half:,.0f} req/s with "
          f"(without) | shadow copies sent / failed / dropped (last run) | copies per POST | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        f, bf, h, bh, c = r["full"], r["base_full"], r["half"], r["base_half"], r["counts"]
        print(f"| {label} | {f['rps']:,.0f} ({bf['rps']:,.0f}) | {(f['rps'] / bf['rps'] - 1) * 100:+.1f}% | "
              f"{f['p99']:.2f} ({bf['p99']:.2f}) | {h['p99']:.2f} ({bh['p99']:.2f}) | "
              f"{c.get('sent', 0):,.0f} / {c.get('failed', 0):,.0f} / {c.get('dropped', 0):,.0f} | "
              f"{(c.get('sent', 0) + c.get('failed', 0)) / max(c.get('posts', 0), 1):.1f} | {f['errors'] + h['errors']} |")
    print("\nTarget: requests/s and p99 within 5% of no shadow.")


if __name__ == "__main__":
    main()
