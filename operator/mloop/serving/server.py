"""The model server: one package (digest-checked) over OIP v2 REST (JSON and binary tensors) and a simple /predict.

    mloop serve --package s3://bucket/packages/<ns>/<model>/<version>/ --digest sha256:<manifest digest>

The parent process fetches and checks the package, then forks N workers (N from the CPU limit) and deals them the
connections it accepts on the one port (`Dealer`: the kernel's SO_REUSEPORT hashing split 8 connections unevenly);
each worker has its own model session and its own bounded collection buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from mloop import __version__
from mloop.serving import oip
from mloop.serving.collector import Collector
from mloop.serving.shadow import Shadow, ShadowMetrics, Target, parse_targets, read_targets
from mloop.serving.runtime import OnnxRuntime, RuntimeUnavailable, SklearnRuntime, choose_for_manifest
from mloop.serving.validate import BadRequest, check_columns, prepare
from mloop.storage.artifacts import DigestMismatch, Store, sha256_hex
from mloop.storage.models import UntrustedModel, check_digest, load_model

log = logging.getLogger("mloop.serve")
JSON = "application/json"


class Package:
    """A fetched package: manifest digest checked, then each file against the manifest. Only the runtime that
    serves is loaded: under ONNX the skops file waits, digest-checked, for the first row with a null."""

    def __init__(self, store: Store, uri: str, digest: str, runtime: str):
        prefix = uri.removeprefix(f"s3://{store.bucket}/")
        manifest_bytes = store.get(prefix + "manifest.json")
        if sha256_hex(manifest_bytes) != digest.removeprefix("sha256:"):
            raise DigestMismatch(f"package manifest at {uri} has sha256 {sha256_hex(manifest_bytes)[:12]}…, "
                                 f"expected {digest.removeprefix('sha256:')[:12]}…: refusing to serve it")
        self.manifest = orjson.loads(manifest_bytes)
        files = self.manifest["files"]
        self.runtime, self.runtime_reason = choose_for_manifest(runtime, self.manifest)
        self.signature = orjson.loads(store.get(prefix + "signature.json",
                                                expected_sha256=files["signature.json"]["sha256"]))
        self.skops_digest = files["model.skops"]["sha256"]
        self.skops = check_digest(store.get(prefix + "model.skops"), self.skops_digest)
        self.model = load_model(self.skops, self.skops_digest) if self.runtime == "sklearn" else None
        self.onnx = (check_digest(store.get(prefix + "model.onnx"), files["model.onnx"]["sha256"])
                     if self.runtime == "onnx" else None)
        self.name, self.version = self.manifest["model"], int(self.manifest["version"])
        self.namespace, self.package = self.manifest["namespace"], self.manifest["package"]
        self.task = self.signature["output"]["task"]
        self.classes = self.signature["output"].get("classes")
        self.names = [i["name"] for i in self.signature["inputs"]]


def build_app(pkg: Package, collector: Collector, stage: str | None, metrics: Any) -> web.Application:
    """The routes of one worker. Runtimes are built here, after the fork: an onnxruntime session is per process."""
    from mloop.serving.metrics import render

    model_name, version = pkg.name, str(pkg.version)
    signature = prepare(pkg.signature)
    runtime: SklearnRuntime | OnnxRuntime = (OnnxRuntime(pkg.onnx, pkg.task, pkg.names) if pkg.onnx is not None
                                             else SklearnRuntime(pkg.model, pkg.task, pkg.names))
    sklearn = runtime if isinstance(runtime, SklearnRuntime) else None
    loading = asyncio.Lock()
    platform = "onnxruntime" if runtime.name == "onnx" else "scikit-learn"
    label_type = "BYTES" if pkg.task == "classification" else "FP64"
    stage_name = stage or ""

    def answer(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)

    def refuse(route: str, err: BadRequest) -> web.Response:
        metrics.observe(route, err.status)
        return answer(err.body(), err.status)

    async def scikit_learn() -> SklearnRuntime:
        """The scikit-learn model, loaded (skops, off the event loop) by the first request that needs it."""
        nonlocal sklearn
        async with loading:
            if sklearn is None:
                log.info("a row with a null: loading the scikit-learn model to answer it")
                model = await asyncio.to_thread(load_model, pkg.skops, pkg.skops_digest)
                sklearn = SklearnRuntime(model, pkg.task, pkg.names)
        return sklearn

    async def predict(arrays: dict[str, Any], any_null: bool, with_proba: bool) -> tuple[list[Any], Any]:
        """Nulls go to scikit-learn: the ONNX parity check never saw one."""
        if any_null and runtime.name == "onnx":
            return (sklearn or await scikit_learn()).predict(arrays, with_proba)
        return runtime.predict(arrays, with_proba)

    def collect(request_id: str, arrays: dict[str, Any], rows: int, labels: list[Any],
                row_ids: list[str] | None = None) -> list[str]:
        """Cheap on the request path: JSON bytes appended to the collector's buffers, no object kept. `row_ids`: the
        ids a Production server gave these rows (it forwards them to its shadows)."""
        ids = row_ids or ([request_id] if rows == 1 else [f"{request_id}-{i}" for i in range(rows)])
        collector.offer_shadow(ids, arrays)
        if collector.sampled():
            now = time.time()
            if rows == 1:  # the common request: encoded later with others (Collector.record_one)
                collector.record_one(ids[0], request_id if row_ids is None else ids[0], now, arrays, labels[0])
                return ids
            dumps = orjson.dumps  # bytes, copied into the collector's column buffers at once; NaN is written as null
            columns = {n: a.tolist() for n, a in arrays.items()}
            collector.record_predictions([
                (rid, request_id if row_ids is None else rid, now, dumps({n: c[i] for n, c in columns.items()}),
                 dumps(label)) for i, (rid, label) in enumerate(zip(ids, labels))])
        return ids

    def json_body(raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("the body is not valid JSON") from None

    def check_encoding(request: web.Request) -> None:
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise BadRequest(f"Content-Encoding {encoding} is not supported; send the body uncompressed", status=415)

    def check_model(request: web.Request) -> None:
        if request.match_info.get("model") != model_name:
            raise BadRequest(f"no model {request.match_info.get('model')!r}; this server serves {model_name!r}",
                             status=404)
        asked = request.match_info.get("version")
        if asked is not None and asked != version:
            raise BadRequest(f"version {asked} is not served; {version} is", status=404)

    async def live(_: web.Request) -> web.Response:
        return answer({"live": True})

    async def ready(_: web.Request) -> web.Response:
        return answer({"ready": True})

    async def model_ready(request: web.Request) -> web.Response:
        try:
            check_model(request)
        except BadRequest as err:
            return answer(err.body(), err.status)
        return answer({"name": model_name, "ready": True})

    async def metadata(request: web.Request) -> web.Response:
        try:
            check_model(request)
        except BadRequest as err:
            return answer(err.body(), err.status)
        dtype = {"integer": "FP64", "float": "FP64", "boolean": "FP64"}
        outputs = [{"name": "predict", "datatype": label_type, "shape": [-1]}]
        if pkg.classes:
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(pkg.classes)]})
        return answer({
            "name": model_name, "versions": [version], "platform": platform,
            "inputs": [{"name": i["name"], "datatype": dtype.get(i["type"], "BYTES"), "shape": [-1, 1]}
                       for i in pkg.signature["inputs"]],
            "outputs": outputs, "parameters": {"package": pkg.package, "stage": stage_name,
                                               "classes": pkg.classes or [], "runtime": runtime.name,
                                               "runtime_reason": pkg.runtime_reason}})

    async def infer(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            check_model(request)
            check_encoding(request)
            body, tail = oip.split_body(await request.read(), request.headers.get("Inference-Header-Content-Length"))
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object with 'inputs'")
            arrays, rows, any_null = check_columns(oip.columns_from_v2(body.get("inputs"), tail, pkg.names),
                                                   signature)
            parameters = body.get("parameters") or {}
            requested = body.get("outputs") or []
            if not isinstance(parameters, dict) or not isinstance(requested, list):
                raise BadRequest("'parameters' must be an object and 'outputs' a list")
            wanted, binary = set(), set()
            for out in requested:
                if not isinstance(out, dict) or out.get("name") not in ("predict", "predict_proba"):
                    raise BadRequest(f"unknown output {out.get('name') if isinstance(out, dict) else out!r}; "
                                     "this model has 'predict' and 'predict_proba'")
                out_params = out.get("parameters") or {}
                for key, why in oip.UNSUPPORTED_PARAMETERS.items():
                    if key in out_params:
                        raise BadRequest(f"output {out['name']!r}: {why}")
                wanted.add(out["name"])
                if out_params.get("binary_data"):
                    binary.add(out["name"])
        except BadRequest as err:
            return refuse("infer", err)
        if parameters.get("binary_data_output"):
            binary = {"predict", "predict_proba"}
        request_id = str(body.get("id") or uuid.uuid4())
        labels, proba = await predict(arrays, any_null, "predict_proba" in wanted)
        ids = collect(request_id, arrays, rows, labels)
        outputs = [{"name": "predict", "shape": [rows], "datatype": label_type, "data": labels}]
        if proba is not None:
            outputs.append({"name": "predict_proba", "shape": [rows, proba.shape[1]], "datatype": "FP64",
                            "data": proba.astype("float64").round(6).ravel()})
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted]
        payload, header_length = oip.response({"model_name": model_name, "model_version": version, "id": request_id,
                                               "parameters": {"row_ids": ids}}, outputs, binary)
        metrics.observe("infer", 200, time.perf_counter() - started, rows)
        headers = {"Inference-Header-Content-Length": str(header_length)} if header_length is not None else None
        return web.Response(body=payload, headers=headers,
                            content_type="application/octet-stream" if header_length is not None else JSON)

    async def simple_predict(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            check_encoding(request)
            body = json_body(await request.read())
            if isinstance(body, dict) and isinstance(body.get("instances"), list):
                rows = body["instances"]
                if not rows or not all(isinstance(r, dict) for r in rows):
                    raise BadRequest("'instances' must be a non-empty list of {column: value} objects")
                names = list(dict.fromkeys(k for r in rows for k in r))
                columns = {n: [r.get(n) for r in rows] for n in names}
            elif isinstance(body, dict) and isinstance(body.get("inputs"), dict):
                columns = body["inputs"]
            else:
                raise BadRequest("send {'instances': [{column: value}, ...]} or {'inputs': {column: [values]}}")
            arrays, count, any_null = check_columns(columns, signature)
            row_ids = body.get("ids")
            if row_ids is not None and not (isinstance(row_ids, list) and len(row_ids) == count and all(
                    isinstance(i, str) and 0 < len(i) <= 256 for i in row_ids)):
                raise BadRequest(f"'ids' must be a list of {count} row ids (strings of 1 to 256 characters), "
                                 "one per row")
        except BadRequest as err:
            return refuse("predict", err)
        request_id = str(body.get("id") or (row_ids[0] if row_ids else uuid.uuid4()))
        labels, proba = await predict(arrays, any_null, body.get("probabilities", True) is not False)
        ids = collect(request_id, arrays, count, labels, row_ids)
        result: dict[str, Any] = {"id": request_id, "ids": ids, "predictions": labels, "model": model_name,
                                  "version": pkg.version}
        if proba is not None:
            result["probabilities"] = proba.astype("float64").round(6).tolist()
            result["classes"] = pkg.classes
        metrics.observe("predict", 200, time.perf_counter() - started, count)
        return answer(result)

    async def feedback(request: web.Request) -> web.Response:
        try:
            check_encoding(request)
            body = json_body(await request.read())
            items = body.get("feedback") if isinstance(body, dict) and "feedback" in body else [body]
            if not isinstance(items, list) or not items:
                raise BadRequest("send {'id': ..., 'label': ...} or {'feedback': [{'id': ..., 'label': ...}]}")
            now = datetime.now(timezone.utc).isoformat()
            rows = []
            for item in items:
                if not isinstance(item, dict) or not item.get("id") or "label" not in item:
                    raise BadRequest("each feedback item needs 'id' (a prediction's id) and 'label'")
                rows.append({"row_id": str(item["id"]), "label": orjson.dumps(item["label"]).decode(),
                             "received_at": now, "model": model_name})
        except BadRequest as err:
            return refuse("feedback", err)
        collector.record_feedback(rows)
        metrics.observe("feedback", 202)
        return answer({"accepted": len(rows)}, 202)

    async def server_metadata(_: web.Request) -> web.Response:
        return answer({"name": "mloop", "version": __version__, "extensions": list(oip.EXTENSIONS)})

    def unsupported(why: str) -> Any:
        async def refuse_route(_: web.Request) -> web.Response:
            return answer({"error": why}, 501)
        return refuse_route

    async def prometheus(_: web.Request) -> web.Response:
        text, content_type = render()
        return web.Response(body=text, headers={"Content-Type": content_type})

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as err:  # the router's own 404 / 405 / 413, as JSON
            return answer({"error": err.reason}, err.status)
        except Exception as err:  # a bug must not take the server down; the client gets a JSON 500
            log.exception("request failed")
            return answer({"error": f"internal error: {type(err).__name__}"}, 500)

    app = web.Application(middlewares=[errors], client_max_size=16 * 1024 * 1024)
    for path, why in oip.UNSUPPORTED_ROUTES:  # before /v2/models/{model}, which would take "stats" for a model
        app.router.add_route("*", path, unsupported(why))
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{model}/ready", model_ready)
    app.router.add_get("/v2/models/{model}/versions/{version}/ready", model_ready)
    app.router.add_get("/v2/models/{model}", metadata)
    app.router.add_get("/v2/models/{model}/versions/{version}", metadata)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_post("/v2/models/{model}/versions/{version}/infer", infer)
    app.router.add_post("/predict", simple_predict)
    app.router.add_post("/feedback", feedback)
    app.router.add_get("/metrics", prometheus)
    return app


async def run_worker(pkg: Package, args: argparse.Namespace, workers: int,
                     channel: socket.socket | None = None) -> int:
    """One worker: its own port when alone, else the connections the parent deals it over `channel`."""
    from mloop.serving.metrics import ServerMetrics

    metrics = ServerMetrics()
    store = Store.from_settings(retries=1, timeout=float(args.s3_timeout))  # a client of this process's own
    capacity = max(1, args.buffer // workers)
    # A file at most half the worker's share of the bound: the next batch fills while one is written.
    collector = Collector(store, pkg.namespace, pkg.name, pkg.version, args.sampling_rate,
                          capacity=capacity, batch_rows=max(1, min(args.batch_rows, capacity // 2)),
                          interval=args.flush_seconds, metrics=metrics.collection,
                          constants={"model": pkg.name, "version": pkg.version, "package": pkg.package,
                                     "stage": args.stage or ""})
    app = build_app(pkg, collector, args.stage, metrics)
    settle()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if channel is None:
        await web.TCPSite(runner, args.host, args.port).start()
    else:
        take_connections(runner, channel)
    collector.start()
    loop = asyncio.get_running_loop()
    shadow = collector.shadow = Shadow([], ShadowMetrics(), capacity=max(1, args.shadow_buffer // workers))
    await shadow.start()
    loop.add_signal_handler(signal.SIGHUP, lambda: shadow.retarget(shadow_targets(args)))  # before the first read
    shadow.retarget(shadow_targets(args))
    log.info("serving %s v%d (%s) with %s on http://%s:%d", pkg.name, pkg.version, pkg.package, pkg.runtime,
             args.host, args.port)
    print(f"ready on http://{args.host}:{args.port} (runtime {pkg.runtime}, pid {os.getpid()})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: flushing the collection buffer")
    await shadow.close()
    await collector.close()
    await runner.cleanup()
    return 0


def settle() -> None:
    """Tune the interpreter for serving, once what lives as long as the process (modules, the package, the app) is
    built. Together they took p99 at half load from 11-39 ms to 8.0-8.4 ms (SO_REUSEPORT workers, a busy machine):
    - gc.freeze: each full collection walked those ~85k objects again, 35-44 ms of CPU (measured); frozen before
      the fork, the workers also leave the parent's pages unwritten (shared, not copied).
    - a 1 ms GIL switch interval: while the collector's writer thread builds Parquet and signs its S3 request in
      Python, a request waits for the GIL up to the interval (5 ms by default)."""
    gc.freeze()
    sys.setswitchinterval(0.001)


def worker_count(cgroup: str = "/sys/fs/cgroup") -> int:
    """The container's CPU limit (cgroup v2 cpu.max, or v1's CFS quota), rounded up; else the usable cores."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = open(f"{cgroup}/cpu.max").read().split()[:2]
    except (OSError, ValueError):
        try:
            quota = open(f"{cgroup}/cpu/cpu.cfs_quota_us").read().strip()
            period = open(f"{cgroup}/cpu/cpu.cfs_period_us").read().strip()
        except OSError:
            return cores
    if quota in ("max", "-1"):
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


class Dealer:
    """The parent accepts and deals each connection to the workers in turn (as Node's cluster module does).

    With SO_REUSEPORT the kernel hashes each connection to a worker: 8 keep-alive connections over 2 workers split
    1/7 or 2/6 in 8 of 20 tries (measured), and the queue of the busier worker was the latency tail.
    A connection costs the parent one accept and one sendmsg, once; its requests go straight to its worker."""

    def __init__(self, host: str, port: int, workers: int):
        self.listener = socket.create_server((host, port), backlog=1024)
        self.channels: list[socket.socket | None] = [None] * workers

    def channel(self, slot: int) -> socket.socket:
        """A fresh channel for the worker in `slot` (a new one replaces a dead one); the worker's end."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)  # a stuck worker (its queue full) is skipped, not waited for
        old, self.channels[slot] = self.channels[slot], ours
        if old is not None:
            old.close()
        return theirs

    def start(self) -> None:
        threading.Thread(target=self._deal, name="dealer", daemon=True).start()

    def _deal(self) -> None:
        turn = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: stopping
                return
            with conn:
                for _ in self.channels:  # a worker being replaced is skipped
                    channel, turn = self.channels[turn], (turn + 1) % len(self.channels)
                    try:
                        socket.send_fds(channel, [b"c"], [conn.fileno()])  # type: ignore[arg-type]
                        break
                    except (OSError, AttributeError):
                        continue

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.listener.close()


def take_connections(runner: web.AppRunner, channel: socket.socket) -> None:
    """Serve the connections the parent deals this worker."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    handing: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks

    def receive() -> None:
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(channel, 1, 16)
            except BlockingIOError:
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(runner.server, conn))  # type: ignore[arg-type]
                handing.add(task)
                task.add_done_callback(handing.discard)

    loop.add_reader(channel.fileno(), receive)


def _die_with(parent: int) -> None:
    """A worker whose supervisor was SIGKILLed gets no more connections but would live on: end with it (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def supervise(pkg: Package, args: argparse.Namespace, workers: int) -> int:
    """Fork the workers and deal them connections; restart one that dies; on SIGTERM pass it on and wait for every
    flush."""
    from prometheus_client import multiprocess

    children: dict[int, int] = {}  # pid: slot
    stopping = False
    dealer = Dealer(args.host, args.port, workers)

    def spawn(slot: int) -> None:
        channel = dealer.channel(slot)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _die_with(parent)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            dealer.listener.close()
            code = 1
            try:
                code = asyncio.run(run_worker(pkg, args, workers, channel))
            except BaseException:
                log.exception("worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        channel.close()
        children[pid] = slot

    def forward(signum: int, _: Any) -> None:
        nonlocal stopping
        if not stopping:
            dealer.close()
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(workers):
        spawn(slot)
    dealer.start()
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid)
        multiprocess.mark_process_dead(pid)
        if not stopping:
            failures += 1
            log.error("worker %d exited (status %d); starting another", pid, os.waitstatus_to_exitcode(status))
            if failures > 10 * workers:
                log.error("workers keep failing: giving up")
                forward(signal.SIGTERM, None)
                return 1
            time.sleep(0.5)
            spawn(slot)
    return 0


def shadow_targets(args: argparse.Namespace) -> list[Target]:
    """A local server's targets file, else the Deployment's MLOOP_SHADOWS."""
    return read_targets(args.shadow_file) if args.shadow_file else parse_targets(args.shadows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mloop serve", description="Serve one mloop model package over HTTP.")
    p.add_argument("--package", default=os.environ.get("MLOOP_PACKAGE_URI"), help="s3:// prefix of the package")
    p.add_argument("--digest", default=os.environ.get("MLOOP_PACKAGE_DIGEST"), help="sha256 of its manifest.json")
    p.add_argument("--stage", default=os.environ.get("MLOOP_STAGE"))
    p.add_argument("--host", default=os.environ.get("MLOOP_SERVE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("MLOOP_SERVE_PORT", "8000")))
    p.add_argument("--runtime", choices=["auto", "onnx", "sklearn"], default=os.environ.get("MLOOP_SERVE_RUNTIME",
                                                                                           "auto"),
                   help="auto: ONNX when its parity check passed exactly, else scikit-learn")
    p.add_argument("--workers", type=int, default=int(os.environ.get("MLOOP_SERVE_WORKERS", "0")),
                   help="worker processes sharing the port; 0: the CPU limit, or the cores")
    p.add_argument("--sampling-rate", type=float, default=float(os.environ.get("MLOOP_SAMPLING_RATE", "1.0")))
    p.add_argument("--buffer", type=int, default=50_000, help="rows all workers' collection buffers hold at most")
    p.add_argument("--batch-rows", type=int, default=20_000,
                   help="rows per collection file, at most half a worker's share of --buffer (a file and a PUT per "
                        "batch cost the same whatever its rows: 5,000-row batches cost twice the CPU per request)")
    p.add_argument("--flush-seconds", type=float, default=float(os.environ.get("MLOOP_FLUSH_SECONDS", "5")))
    p.add_argument("--s3-timeout", type=float, default=5.0)
    p.add_argument("--shadow-file", default=os.environ.get("MLOOP_SHADOW_FILE"),
                   help="JSON list of shadow targets, re-read on SIGHUP (local servers)")
    p.add_argument("--shadows", default=os.environ.get("MLOOP_SHADOWS"),
                   help="JSON list of shadow targets (Deployments: a new value rolls the pods)")
    p.add_argument("--shadow-buffer", type=int, default=1000, help="shadow requests all workers hold at most per target")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # "re-read the shadow targets": each worker's loop takes it over
    if not args.package or not args.digest:
        print("mloop serve: --package and --digest are required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    if "prometheus_client" in sys.modules:
        print("mloop serve: prometheus_client was imported before the server chose its metrics folder",
              file=sys.stderr)
        return 2
    try:
        pkg = Package(Store.from_settings(retries=1, timeout=float(args.s3_timeout)), args.package, args.digest,
                      args.runtime)
    except (DigestMismatch, UntrustedModel, RuntimeUnavailable) as err:
        log.error("%s", err)
        print(f"refused: {err}", file=sys.stderr)
        return 3
    workers = args.workers or worker_count()
    metrics_dir = tempfile.mkdtemp(prefix="mloop-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # chosen here, never inherited: counts start at zero
    log.info("%s v%d: runtime %s (%s), %d worker(s)", pkg.name, pkg.version, pkg.runtime, pkg.runtime_reason, workers)
    settle()
    try:
        if workers == 1:
            return asyncio.run(run_worker(pkg, args, 1))
        return supervise(pkg, args, workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
