"""Benchmark: the same iris model served by mloop and by MLServer (mlserver-sklearn), same load generator.

    .venv/bin/python bench/serving.py [--requests 4000] [--concurrency 16]

MLServer 1.7.1 runs from its own virtualenv under ~/.cache/mloop/bench-mlserver (created on first use:
its pins do not mix with the project's). Both servers get the identical OIP v2 request: four FP64
column tensors of one row. mloop is measured with collection on (every request sampled and written
to S3) and off. Prints requests/s and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mloop" / "bench-mlserver"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BODY = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1, 1], "data": [v]}
                   for c, v in zip(COLUMNS, (5.9, 3.0, 5.1, 1.8))]}


def ensure_mlserver() -> Path:
    exe = VENV / "bin" / "mlserver"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.1", "mlserver-sklearn==1.7.1",
                        "scikit-learn==1.9.1"], check=True)
    return exe


def fit_model():
    from sklearn.datasets import load_iris

    from mloop.api.trainingrun import PreprocessingSpec
    from mloop.training.estimators import make_estimator
    from mloop.training.pipeline import build_pipeline

    iris = load_iris(as_frame=True)
    x = iris.frame.iloc[:, :4]
    x.columns = COLUMNS
    y = iris.target.map(dict(enumerate(iris.target_names)))
    return build_pipeline(make_estimator("LogisticRegression", {"max_iter": 500}, 0), COLUMNS,
                          {c: "float" for c in COLUMNS}, PreprocessingSpec()).fit(x, y)


def publish_package(store, model) -> tuple[str, str]:
    """Write a package the way the package task lays it out, and return (uri, manifest digest)."""
    import skops.io as sio

    from mloop.storage.artifacts import sha256_hex

    prefix = "packages/bench/iris/1/"
    signature = {"model": "iris", "version": 1, "inputs": [{"name": c, "type": "float"} for c in COLUMNS],
                 "output": {"name": "species", "task": "classification", "classes": [str(c) for c in model.classes_]}}
    files = {"model.skops": sio.dumps(model), "signature.json": json.dumps(signature).encode()}
    recorded = {n: {"sha256": store.put(prefix + n, b, overwrite=True), "size": len(b)} for n, b in files.items()}
    manifest = json.dumps({"kind": "ModelPackage", "namespace": "bench", "model": "iris", "version": 1,
                           "package": "iris-bench", "files": recorded}).encode()
    store.put(prefix + "manifest.json", manifest, overwrite=True)
    return store.uri(prefix), f"sha256:{sha256_hex(manifest)}"


async def load(url: str, requests: int, concurrency: int, body: dict) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(50):  # warm up
            async with session.post(url, json=body) as resp:
                await resp.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def wait_ready(url: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def row(name: str, seconds: float, latencies: list[float], requests: int) -> dict:
    q = statistics.quantiles(latencies, n=100)
    return {"name": name, "rps": requests / seconds, "p50": q[49] * 1000, "p99": q[98] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    import joblib

    from mloop.localcluster import LocalStack
    from mloop.localcluster.stack import free_port
    from mloop.storage.artifacts import Store
    from mloop.storage.s3 import make_client

    mlserver = ensure_mlserver()
    model = fit_model()
    results = []
    with LocalStack() as info:
        os.environ.update(info.env())
        store = Store(make_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key), info.bucket)
        uri, digest = publish_package(store, model)
        for label, rate in (("mloop, collection on", "1.0"), ("mloop, collection off", "0")):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "mloop.serving.server", "--package", uri, "--digest", digest,
                                     "--port", str(port), "--sampling-rate", rate, "--flush-seconds", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
            try:
                wait_ready(f"http://127.0.0.1:{port}/v2/health/ready")
                seconds, lat = asyncio.run(load(f"http://127.0.0.1:{port}/v2/models/iris/infer", args.requests,
                                                args.concurrency, BODY))
                results.append(row(label, seconds, lat, args.requests))
            finally:
                proc.terminate()
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
                wait_ready(f"http://127.0.0.1:{port}/v2/models/iris/ready")
                body = {**BODY, "parameters": {"content_type": "pd"}}
                seconds, lat = asyncio.run(load(f"http://127.0.0.1:{port}/v2/models/iris/infer", args.requests,
                                                args.concurrency, body))
                results.append(row("MLServer 1.7.1 + mlserver-sklearn", seconds, lat, args.requests))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    on, off, peer = results
    print(f"\nServing benchmark: iris, {args.requests} requests of one row, {args.concurrency} concurrent, "
          f"{os.cpu_count()} cores, one load generator\n")
    print("| server | requests/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} |")
    print(f"\nmloop with collection vs MLServer throughput: {on['rps'] / peer['rps']:.2f}x (target >= 1.0)")
    print(f"collection overhead on mloop throughput: {(1 - on['rps'] / off['rps']) * 100:.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
