"""The model server: loads one package (digest-checked), speaks OIP v2 REST and a simple /predict.

    mloop serve --package s3://bucket/packages/<ns>/<model>/<version>/ --digest sha256:<manifest digest>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from mloop.serving.collector import Collector
from mloop.serving.validate import BadRequest, columns_from_v2, frame_from_columns
from mloop.storage.artifacts import DigestMismatch, Store, sha256_hex
from mloop.storage.models import load_model

log = logging.getLogger("mloop.serve")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Package:
    """A loaded package: manifest digest checked, then each file against the manifest."""

    def __init__(self, store: Store, uri: str, digest: str):
        prefix = uri.removeprefix(f"s3://{store.bucket}/")
        manifest_bytes = store.get(prefix + "manifest.json")
        if sha256_hex(manifest_bytes) != digest.removeprefix("sha256:"):
            raise DigestMismatch(f"package manifest at {uri} has sha256 {sha256_hex(manifest_bytes)[:12]}…, "
                                 f"expected {digest.removeprefix('sha256:')[:12]}…: refusing to serve it")
        self.manifest = json.loads(manifest_bytes)
        files = self.manifest["files"]
        self.signature = json.loads(store.get(prefix + "signature.json", expected_sha256=files["signature.json"]["sha256"]))
        self.model = load_model(store.get(prefix + "model.skops"), files["model.skops"]["sha256"])
        self.name, self.version = self.manifest["model"], int(self.manifest["version"])
        self.namespace, self.package = self.manifest["namespace"], self.manifest["package"]
        self.task = self.signature["output"]["task"]
        self.classes = self.signature["output"].get("classes")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.predictions = 0
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, route: str, status: int, seconds: float, rows: int = 0) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
        self.predictions += rows
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency[i] += 1
                break
        else:
            self.latency[-1] += 1


def build_app(pkg: Package, collector: Collector, stage: str | None) -> web.Application:
    metrics = Metrics()
    model_name = pkg.name

    def json_error(err: BadRequest, status: int = 400) -> web.Response:
        return web.json_response(err.body(), status=status)

    def predict(frame: Any, with_proba: bool) -> tuple[list[Any], list[list[float]] | None]:
        """Labels always; probabilities only when asked for, since they cost a second pass through the model."""
        labels = pkg.model.predict(frame)
        proba = None
        if with_proba and pkg.task == "classification" and hasattr(pkg.model, "predict_proba"):
            try:
                proba = pkg.model.predict_proba(frame).round(6).tolist()
            except (AttributeError, ValueError):
                proba = None
        out = [str(v) for v in labels] if pkg.task == "classification" else [float(v) for v in labels]
        return out, proba

    def collect(request_id: str, columns: dict[str, list[Any]], labels: list[Any]) -> list[str]:
        """Cheap on the request path: raw values only; the collector's writer thread encodes them."""
        ids = [request_id] if len(labels) == 1 else [f"{request_id}-{i}" for i in range(len(labels))]
        if collector.sampled():
            now = time.time()
            names = list(columns)
            collector.record_predictions([
                {"row_id": rid, "request_id": request_id, "served_at": now, "model": model_name,
                 "version": pkg.version, "package": pkg.package, "stage": stage or "",
                 "inputs": {n: columns[n][i] for n in names}, "prediction": label}
                for i, (rid, label) in enumerate(zip(ids, labels))])
        return ids

    async def read_json(request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON")

    def check_model(request: web.Request) -> None:
        if request.match_info.get("model") != model_name:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no model {request.match_info.get('model')!r}; "
                                                             f"this server serves {model_name!r}"}),
                                   content_type="application/json")
        version = request.match_info.get("version")
        if version is not None and version != str(pkg.version):
            raise web.HTTPNotFound(text=json.dumps({"error": f"version {version} is not served; {pkg.version} is"}),
                                   content_type="application/json")

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def model_ready(request: web.Request) -> web.Response:
        check_model(request)
        return web.json_response({"name": model_name, "ready": True})

    async def metadata(request: web.Request) -> web.Response:
        check_model(request)
        dtype = {"integer": "FP64", "float": "FP64", "boolean": "FP64"}
        outputs = [{"name": "predict", "datatype": "BYTES" if pkg.task == "classification" else "FP64", "shape": [-1]}]
        if pkg.classes:
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(pkg.classes)]})
        return web.json_response({
            "name": model_name, "versions": [str(pkg.version)], "platform": "scikit-learn",
            "inputs": [{"name": i["name"], "datatype": dtype.get(i["type"], "BYTES"), "shape": [-1, 1]}
                       for i in pkg.signature["inputs"]],
            "outputs": outputs, "parameters": {"package": pkg.package, "stage": stage or "",
                                               "classes": pkg.classes or []}})

    async def infer(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            check_model(request)
            body = await read_json(request)
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object with 'inputs'")
            columns = columns_from_v2(body.get("inputs"), pkg.signature)
            frame = frame_from_columns(columns, pkg.signature)
        except BadRequest as err:
            metrics.observe("infer", 400, time.perf_counter() - started)
            return json_error(err)
        request_id = str(body.get("id") or uuid.uuid4())
        wanted = {o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)}
        labels, proba = predict(frame, "predict_proba" in wanted)
        ids = collect(request_id, columns, labels)
        outputs = [{"name": "predict", "shape": [len(labels)],
                    "datatype": "BYTES" if pkg.task == "classification" else "FP64", "data": labels}]
        if proba is not None:
            outputs.append({"name": "predict_proba", "shape": [len(proba), len(proba[0])], "datatype": "FP64",
                            "data": [v for row in proba for v in row]})
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted]
        metrics.observe("infer", 200, time.perf_counter() - started, len(labels))
        return web.json_response({"model_name": model_name, "model_version": str(pkg.version), "id": request_id,
                                  "parameters": {"row_ids": ids}, "outputs": outputs})

    async def simple_predict(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await read_json(request)
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
            frame = frame_from_columns(columns, pkg.signature)
        except BadRequest as err:
            metrics.observe("predict", 400, time.perf_counter() - started)
            return json_error(err)
        request_id = str(body.get("id") or uuid.uuid4())
        labels, proba = predict(frame, body.get("probabilities", True) is not False)
        ids = collect(request_id, columns, labels)
        answer: dict[str, Any] = {"id": request_id, "ids": ids, "predictions": labels, "model": model_name,
                                  "version": pkg.version}
        if proba is not None:
            answer["probabilities"] = proba
            answer["classes"] = pkg.classes
        metrics.observe("predict", 200, time.perf_counter() - started, len(labels))
        return web.json_response(answer)

    async def feedback(request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            items = body.get("feedback") if isinstance(body, dict) and "feedback" in body else [body]
            if not isinstance(items, list) or not items:
                raise BadRequest("send {'id': ..., 'label': ...} or {'feedback': [{'id': ..., 'label': ...}]}")
            now = datetime.now(timezone.utc).isoformat()
            rows = []
            for item in items:
                if not isinstance(item, dict) or not item.get("id") or "label" not in item:
                    raise BadRequest("each feedback item needs 'id' (a prediction's id) and 'label'")
                rows.append({"row_id": str(item["id"]), "label": json.dumps(item["label"]), "received_at": now,
                             "model": model_name})
        except BadRequest as err:
            metrics.observe("feedback", 400, 0.0)
            return json_error(err)
        collector.record_feedback(rows)
        metrics.observe("feedback", 202, 0.0)
        return web.json_response({"accepted": len(rows)}, status=202)

    async def prometheus(_: web.Request) -> web.Response:
        lines = ["# TYPE mloop_requests_total counter"]
        lines += [f'mloop_requests_total{{route="{r}",code="{c}"}} {n}' for (r, c), n in sorted(metrics.requests.items())]
        lines += ["# TYPE mloop_predictions_total counter", f"mloop_predictions_total {metrics.predictions}",
                  "# TYPE mloop_request_seconds histogram"]
        cumulative = 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], metrics.latency):
            cumulative += count
            lines.append(f'mloop_request_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"mloop_request_seconds_sum {metrics.latency_sum}", f"mloop_request_seconds_count {cumulative}"]
        for buffer in (collector.predictions, collector.feedback):
            kind = buffer.kind
            lines += [f'mloop_collection_buffered{{stream="{kind}"}} {len(buffer.rows)}',
                      f'mloop_collection_written_total{{stream="{kind}"}} {buffer.written}',
                      f'mloop_collection_dropped_total{{stream="{kind}"}} {buffer.dropped}',
                      f'mloop_collection_batches_total{{stream="{kind}"}} {buffer.batches}']
        lines.append(f"mloop_collection_write_failures_total {collector.failures}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as err:
            if err.content_type == "application/json":
                raise
            return web.json_response({"error": err.reason}, status=err.status)
        except Exception as err:  # a bug must not take the server down; the client gets a JSON 500
            log.exception("request failed")
            return web.json_response({"error": f"internal error: {type(err).__name__}"}, status=500)

    app = web.Application(middlewares=[errors], client_max_size=16 * 1024 * 1024)
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


async def serve(args: argparse.Namespace) -> int:
    store = Store.from_settings(retries=1, timeout=float(args.s3_timeout))
    try:
        pkg = await asyncio.to_thread(Package, store, args.package, args.digest)
    except DigestMismatch as err:
        log.error("%s", err)
        print(f"refused: {err}", file=sys.stderr)
        return 3
    collector = Collector(store, pkg.namespace, pkg.name, pkg.version, args.sampling_rate,
                          capacity=args.buffer, batch_rows=args.batch_rows, interval=args.flush_seconds)
    app = build_app(pkg, collector, args.stage)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    collector.start()
    log.info("serving %s v%d (%s) on http://%s:%d", pkg.name, pkg.version, pkg.package, args.host, args.port)
    print(f"ready on http://{args.host}:{args.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: flushing the collection buffer")
    await collector.close()
    await runner.cleanup()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mloop serve", description="Serve one mloop model package over HTTP.")
    p.add_argument("--package", default=os.environ.get("MLOOP_PACKAGE_URI"), help="s3:// prefix of the package")
    p.add_argument("--digest", default=os.environ.get("MLOOP_PACKAGE_DIGEST"), help="sha256 of its manifest.json")
    p.add_argument("--stage", default=os.environ.get("MLOOP_STAGE"))
    p.add_argument("--host", default=os.environ.get("MLOOP_SERVE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("MLOOP_SERVE_PORT", "8000")))
    p.add_argument("--sampling-rate", type=float, default=float(os.environ.get("MLOOP_SAMPLING_RATE", "1.0")))
    p.add_argument("--buffer", type=int, default=50_000, help="rows the collection buffer holds at most")
    p.add_argument("--batch-rows", type=int, default=5_000)
    p.add_argument("--flush-seconds", type=float, default=float(os.environ.get("MLOOP_FLUSH_SECONDS", "5")))
    p.add_argument("--s3-timeout", type=float, default=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.package or not args.digest:
        print("mloop serve: --package and --digest are required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
