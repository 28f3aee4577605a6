"""Benchmark: the iris pipeline served by mloop and by MLServer, load from wrk (C, Lua body script), 127.0.0.1 only.

    slot --all .venv/bin/python bench/serving.py [--seconds 10] [--connections 8] [--repeat 3] [--pairs 10] [--outage 60]
        [--flush-seconds 5]

One run loads one server at a time (mloop with collection on, off, and off again as an A/A control take turns run
by run, all three started), each with the same OIP v2 body (four FP64 column tensors, one row):
- mloop with collection on (sampling 1.0, to S3) and off, its runtime as packaged (ONNX when parity is exact);
- MLServer 1.7.1 + mlserver-sklearn (pandas codec) from its own virtualenv under ~/.cache/mloop/bench-mlserver;
- a do-nothing aiohttp handler that parses the same JSON, with as many workers as mloop: the HTTP ceiling.
It prints requests/s, p50 and p99 at N connections and p99 at half of mloop's maximum rate, each the median of
--repeat runs (mloop's full-load rows: of --pairs rounds; the collection overhead, in requests/s and in the server's
CPU per request, is the median of the rounds' on/off ratios, printed beside the same figure for the two identical
off servers: the noise of the method); then mloop (collection on) under that half load while S3 is frozen (SIGSTOP)
for --outage seconds, in 10-second slices: requests/s and p99 (no stall), memory (PSS of all its processes, and the largest RSS of one:
no growth), rows dropped (counted) and buffered; and how long the buffer takes to drain once S3 is back.
wrk is installed from Debian when missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mloop" / "bench-mlserver"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BODY = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1, 1], "data": [v]}
                   for c, v in zip(COLUMNS, (5.9, 3.0, 5.1, 1.8))]}
# wrk calls delay() before each request of a connection: paced connections give an open-ish fixed rate
LUA = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
local gap = %(gap_ms)s
function delay()
  if gap <= 0 then return 0 end
  local base = math.floor(gap)
  if math.random() < gap - base then return base + 1 end
  return base
end
function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT {\\"requests\\": %%d, \\"us\\": %%d, \\"p50\\": %%d, \\"p99\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    non2xx + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
CEILING = """
import os, socket, sys
import orjson
from aiohttp import web

async def infer(request):
    orjson.loads(await request.read())
    return web.Response(body=b'{"outputs":[]}', content_type="application/json")

port, workers = int(sys.argv[1]), int(sys.argv[2])
for _ in range(workers - 1):
    if os.fork() == 0:
        break
app = web.Application()
app.router.add_post("/v2/models/iris/infer", infer)
app.router.add_get("/v2/health/ready", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None)
"""


def ensure_wrk() -> str:
    if shutil.which("wrk") is None and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null",
                       shell=True, check=False)
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: install it (Debian: apt-get install wrk)")
    return shutil.which("wrk")


def ensure_mlserver() -> Path:
    exe = VENV / "bin" / "mlserver"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.1", "mlserver-sklearn==1.7.1",
                        "scikit-learn==1.9.1"], check=True)
    return exe


CONTROL = "mloop, collection off (A/A control)"


def fit_model():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    from mloop.api.trainingrun import PreprocessingSpec
    from mloop.training.estimators import make_estimator
    from mloop.training.pipeline import build_pipeline

    iris = load_iris(as_frame=True)
    x = iris.frame.iloc[:, :4]
    x.columns = COLUMNS
    y = iris.target.map(dict(enumerate(iris.target_names)))
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = build_pipeline(make_estimator("LogisticRegression", {"max_iter": 500}, 0), COLUMNS,
                           {c: "float" for c in COLUMNS}, PreprocessingSpec()).fit(x_train, y_train)
    return model, x_test


def publish_package(store, model, x_test) -> tuple[str, str, str]:
    """Write a package the way the package task lays it out; (uri, manifest digest, ONNX parity)."""
    import skops.io as sio

    from mloop.serving.parity import convert
    from mloop.storage.artifacts import sha256_hex

    prefix = "packages/bench/iris/1/"
    signature = {"model": "iris", "version": 1, "inputs": [{"name": c, "type": "float"} for c in COLUMNS],
                 "output": {"name": "species", "task": "classification", "classes": [str(c) for c in model.classes_]}}
    conversion = convert(model, COLUMNS, {c: "float" for c in COLUMNS}, "classification", x_test)
    files = {"model.skops": sio.dumps(model), "signature.json": json.dumps(signature).encode()}
    if conversion.blob is not None:
        files["model.onnx"] = conversion.blob
    recorded = {n: {"sha256": store.put(prefix + n, b, overwrite=True), "size": len(b)} for n, b in files.items()}
    manifest = json.dumps({"kind": "ModelPackage", "namespace": "bench", "model": "iris", "version": 1,
                           "package": "iris-bench", "files": recorded, "onnx": conversion.manifest_entry()}).encode()
    store.put(prefix + "manifest.json", manifest, overwrite=True)
    return store.uri(prefix), f"sha256:{sha256_hex(manifest)}", f"{conversion.parity}, {conversion.input_type}"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def wrk(exe: str, url: str, body: dict, seconds: float, connections: int, rate: float | None = None) -> dict:
    """One wrk run (one thread: the second core serves); rate paces each connection to rate/connections."""
    gap_ms = 1000.0 * connections / rate if rate else 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"body": json.dumps(body), "gap_ms": gap_ms})
    try:
        out = subprocess.run([exe, "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s",
                              "-s", script.name, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        os.unlink(script.name)
    result = json.loads(re.search(r"^RESULT (.*)$", out, re.M).group(1))
    return {"rps": result["requests"] / (result["us"] / 1e6), "p50": result["p50"] / 1000,
            "p99": result["p99"] / 1000, "errors": result["errors"]}


def pace(exe: str, url: str, body: dict, connections: int, rate: float) -> float | None:
    """The rate to ask wrk for so that it achieves `rate`: a connection's cycle is its delay plus the response time,
    so the delay is the cycle `rate` asks for less the response time, measured in a 2 s warm-up (None: no delay)."""
    cycle = 1000.0 * connections / rate
    achieved = wrk(exe, url, body, 2, connections, rate)["rps"]
    delay = cycle - (1000.0 * connections / achieved - cycle)
    return 1000.0 * connections / delay if delay > 0 else None


def memory_mb(pid: int) -> tuple[float, float]:
    """(PSS of a process and its children, the largest RSS of one of them), in MB. The workers are forks that share
    the parent's pages, which a sum of RSS would count once per process; PSS splits each shared page among them."""
    pss, rss = 0, 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    for p in pids:
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            pss += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))
            rss = max(rss, int(re.search(r"^Rss:\s+(\d+)", rollup, re.M).group(1)))
        except (OSError, AttributeError):
            pass
    return pss / 1024, rss / 1024


def tree(pid: int) -> list[int]:
    """A process and its descendants (the server's workers are its forks)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(p) for p in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process tree: its cost, whatever the neighbours do to wall-clock figures."""
    total = 0
    for p in tree(pid) if pid else []:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def spread(changes: list[float]) -> str:
    """A change in percent as the median of paired ratios [their quartiles]."""
    q = statistics.quantiles(changes, n=4) if len(changes) > 1 else changes * 3
    return f"{statistics.median(changes):+.1f}% [{q[0]:+.1f}, {q[2]:+.1f}]"


def median_run(runs: list[dict], figures: tuple[str, ...] = ("rps", "p50", "p99")) -> dict:
    """The median of each figure over repeated runs, the errors summed, and the runs' p99s for the record."""
    return {k: statistics.median(r[k] for r in runs) for k in figures} | {
        "errors": sum(r["errors"] for r in runs), "p99s": [r["p99"] for r in runs], "rpss": [r["rps"] for r in runs],
        "cpus": [r.get("cpu") for r in runs]}


DROPPED = 'mloop_collection_dropped_total{stream="predictions"}'
BUFFERED = 'mloop_collection_buffered{stream="predictions"}'
WRITTEN = 'mloop_collection_written_total{stream="predictions"}'


def paced_slice(exe: str, url: str, conns: int, rate: float | None, pid: int, endpoint: str) -> dict:
    """10 s of paced load with the server's memory sampled every second; then its drop and buffer counts."""
    result: dict = {}
    load = threading.Thread(target=lambda: result.update(wrk(exe, url, BODY, 10, conns, rate)))
    load.start()
    samples = []
    while load.is_alive():
        samples.append(memory_mb(pid))
        time.sleep(1)
    load.join()
    return {**result, "pss": max(p for p, _ in samples), "rss": max(r for _, r in samples),
            "dropped": metric(endpoint, DROPPED), "buffered": metric(endpoint, BUFFERED)}


def metric(endpoint: str, name: str) -> float:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the table shows their median")
    parser.add_argument("--pairs", type=int, default=10,
                        help="rounds of collection on / off / off (A/A) runs: the overhead is the median of the rounds' "
                             "on/off ratios")
    parser.add_argument("--outage", type=float, default=60, help="seconds S3 stays frozen under half load")
    parser.add_argument("--flush-seconds", type=float, default=5,
                        help="the collector's flush interval (5: the server's default; 1 flushes smaller batches)")
    args = parser.parse_args()
    import joblib

    from mloop.localcluster import LocalStack
    from mloop.localcluster.stack import free_port
    from mloop.serving.server import worker_count
    from mloop.storage.artifacts import Store
    from mloop.storage.s3 import make_client

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    exe = ensure_wrk()
    mlserver = ensure_mlserver()
    model, x_test = fit_model()
    workers = worker_count()
    secs, conns = args.seconds, args.connections
    rows: dict[str, dict] = {}
    stack = LocalStack()
    info = stack.start()
    try:
        env = {**os.environ, **info.env()}
        store = Store(make_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key), info.bucket)
        uri, digest, parity = publish_package(store, model, x_test)

        def mloop_server(rate: str) -> tuple[subprocess.Popen, str]:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "mloop.serving.server", "--package", uri, "--digest", digest,
                                     "--port", str(port), "--sampling-rate", rate, "--flush-seconds", str(args.flush_seconds),
                                     "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=env)
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            return proc, f"http://127.0.0.1:{port}"

        def runs(url: str, body: dict, rate: float | None = None) -> dict:
            return median_run([wrk(exe, url, body, secs, conns, rate) for _ in range(args.repeat)])

        # collection on, off and off again all running, taking turns: the machine drifts (the same server's CPU per
        # request moved 212-268 us from one 10 s run to the next, with no steal time) and neighbouring runs see the
        # same machine; the median of many rounds' on/off ratios is the overhead, the off/off ratio its noise
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            for label, rate in (("mloop, collection on", "1.0"), ("mloop, collection off", "0"), (CONTROL, "0")):
                servers[label] = mloop_server(rate)
            measured: dict[str, list[dict]] = {label: [] for label in servers}
            for label, (_, endpoint) in servers.items():
                with urllib.request.urlopen(f"{endpoint}/v2/models/iris", timeout=5) as resp:
                    rows[label] = {"runtime": json.loads(resp.read())["parameters"]["runtime"]}
                wrk(exe, f"{endpoint}/v2/models/iris/infer", BODY, 2, conns)  # warm up
            for i in range(args.pairs):  # each server first, second and third in turn
                for label in list(servers)[i % 3:] + list(servers)[:i % 3]:
                    pid = servers[label][0].pid
                    before = cpu_seconds(pid)
                    run = wrk(exe, f"{servers[label][1]}/v2/models/iris/infer", BODY, secs, conns)
                    run["cpu"] = (cpu_seconds(pid) - before) / max(run["rps"] * secs, 1) * 1e6
                    measured[label].append(run)
            for label, results in measured.items():
                rows[label] = {**median_run(results), "runtime": rows[label]["runtime"]}
        finally:
            for proc, _ in servers.values():
                stop(proc)
        half = rows["mloop, collection on"]["rps"] / 2
        for label, rate in (("mloop, collection on", "1.0"), ("mloop, collection off", "0")):
            proc, endpoint = mloop_server(rate)
            try:
                paced = pace(exe, f"{endpoint}/v2/models/iris/infer", BODY, conns, half)  # also the warm-up
                rows[label]["half"] = runs(f"{endpoint}/v2/models/iris/infer", BODY, paced)
            finally:
                stop(proc)

        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", CEILING, str(port), str(workers)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(f"{url}/v2/health/ready", proc)
            rows["do-nothing aiohttp + orjson (ceiling)"] = runs(f"{url}/v2/models/iris/infer", BODY)
            paced = pace(exe, f"{url}/v2/models/iris/infer", BODY, conns, half)
            rows["do-nothing aiohttp + orjson (ceiling)"]["half"] = runs(f"{url}/v2/models/iris/infer", BODY, paced)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)

        with tempfile.TemporaryDirectory() as root:
            model_dir = Path(root) / "iris"
            model_dir.mkdir()
            joblib.dump(model, model_dir / "model.joblib")
            (model_dir / "model-settings.json").write_text(json.dumps({
                "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"}}))
            port = free_port()
            (Path(root) / "settings.json").write_text(json.dumps({
                "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
                "parallel_workers": 0, "debug": False}))
            proc = subprocess.Popen([str(mlserver), "start", root], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(f"{url}/v2/models/iris/ready", proc)
                body = {**BODY, "parameters": {"content_type": "pd"}}
                wrk(exe, f"{url}/v2/models/iris/infer", body, 2, conns)
                peer = rows["MLServer 1.7.1 + mlserver-sklearn"] = runs(f"{url}/v2/models/iris/infer", body)
                peer["runtime"] = "sklearn (pandas codec)"
                peer["half"] = runs(f"{url}/v2/models/iris/infer", body, pace(exe, f"{url}/v2/models/iris/infer", body,
                                                                              conns, half))
            finally:
                stop(proc)

        proc, endpoint = mloop_server("1.0")
        try:
            url = f"{endpoint}/v2/models/iris/infer"
            paced = pace(exe, url, BODY, conns, half)  # also the warm-up
            before = memory_mb(proc.pid)
            s3 = stack.procs["versitygw"].pid
            os.kill(s3, signal.SIGSTOP)  # frozen, not refused: every write hangs until the client's timeout
            slices: list[dict] = []
            try:
                for _ in range(max(1, math.ceil(args.outage / 10))):
                    slices.append(paced_slice(exe, url, conns, paced, proc.pid, endpoint))
            finally:
                os.kill(s3, signal.SIGCONT)
            resumed = time.monotonic()
            while metric(endpoint, BUFFERED) > 0 and time.monotonic() - resumed < 120:
                time.sleep(0.5)
            drained = time.monotonic() - resumed if metric(endpoint, BUFFERED) == 0 else None
            written = metric(endpoint, WRITTEN)
        finally:
            stop(proc)
    finally:
        stack.stop()
        stack.cleanup()

    print(f"\nServing benchmark: iris LogisticRegression pipeline, OIP v2 body of four FP64 tensors (one row); "
          f"wrk 1 thread, {conns} connections, {secs:g} s per run, median of {args.repeat} runs (mloop at full load: "
          f"{args.pairs}); {os.cpu_count()} cores "
          f"shared by wrk and the server; mloop and the ceiling with {workers} worker(s); ONNX parity {parity}; "
          f"collection flushed every {args.flush_seconds:g} s; load average before the run {load_before}\n")
    print(f"| server | runtime | requests/s | p50 ms | p99 ms | p99 ms at {half:,.0f} req/s (achieved; each run) | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        h = r.get("half", {})
        each = ", ".join(f"{p:.2f}" for p in h.get("p99s", []))
        print(f"| {name} | {r.get('runtime', '-')} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{h.get('p99', float('nan')):.2f} ({h.get('rps', 0):,.0f}; {each}) | {r['errors'] + h.get('errors', 0)} |")
    on, off = rows["mloop, collection on"], rows["mloop, collection off"]
    peer = rows["MLServer 1.7.1 + mlserver-sklearn"]
    print(f"\nmloop (collection on) vs MLServer: {on['rps'] / peer['rps']:.1f}x requests/s (target >= 10x)")
    print(f"p99 of mloop (collection on) at half load: {on['half']['p99']:.2f} ms (target <= 5 ms)")
    control = rows[CONTROL]
    print(f"\ncollection overhead, median of {len(on['rpss'])} rounds of neighbouring runs [quartiles]; the A/A line is "
          "two identical collection-off servers measured the same way: the method's noise")
    print("| pair | requests/s lost | server CPU per request (parent and workers) | each round, requests/s lost |")
    print("|---|---|---|---|")
    for name, a, b in (("on vs off (target <= 5%)", on, off), ("A/A: off vs off", control, off)):
        print(f"| {name} | {spread([(1 - x / y) * 100 for x, y in zip(a['rpss'], b['rpss'])])} | "
              f"{spread([(x / y - 1) * 100 for x, y in zip(a['cpus'], b['cpus'])])} | "
              + ", ".join(f"{(1 - x / y) * 100:.1f}%" for x, y in zip(a["rpss"], b["rpss"])) + " |")
    print(f"\nmloop (collection on, 1 row per request) with S3 frozen, paced at {half:,.0f} req/s; "
          f"before: PSS {before[0]:.0f} MB, largest RSS {before[1]:.0f} MB\n")
    print("| S3 frozen for | requests/s | p99 ms | errors | PSS MB (max) | largest RSS MB (max) | rows dropped (total) "
          "| rows buffered |")
    print("|---|---|---|---|---|---|---|---|")
    for i, sl in enumerate(slices):
        print(f"| {i * 10}-{i * 10 + 10} s | {sl['rps']:,.0f} | {sl['p99']:.2f} | {sl['errors']} | {sl['pss']:.0f} | "
              f"{sl['rss']:.0f} | {sl['dropped']:,.0f} | {sl['buffered']:,.0f} |")
    full = next((i for i, sl in enumerate(slices) if sl["dropped"]), len(slices) - 1)  # the buffer is at its bound
    print(f"\nmemory: max PSS {max(sl['pss'] for sl in slices):.0f} MB (target < 300 MB); from the slice where the "
          f"buffer reached its bound to the last: {slices[-1]['pss'] - slices[full]['pss']:+.0f} MB; buffer drained "
          + (f"{drained:.1f} s after S3 came back" if drained is not None else "NOT within 120 s of S3 coming back")
          + f"; {written:,.0f} rows written in all")


if __name__ == "__main__":
    main()
